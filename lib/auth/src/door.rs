//! What every request passes before it reaches a handler: its key is authenticated and the
//! scope its route needs is checked, in one place per service (a table of routes, [`Rules`]),
//! so that no handler can forget to. The same door stands in front of HTTP ([`http`], an axum
//! middleware) and gRPC ([`grpc`], a tower layer around a tonic service); both put the
//! [`Caller`] into the request's extensions.

pub mod grpc;
pub mod http;

use ::http::Method;
use millrace_common::ApiError;

use crate::{Authenticator, Caller, Scope};

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key (health, metrics, the API's own description).
    Public,
    /// A key that holds this scope.
    Needs(Scope),
}

/// The access a route needs, by method and path: the route's template for HTTP
/// (`/v1/jobs/{id}`), `/package.Service/Method` for gRPC. A service answers [`Access::Needs`]
/// `admin` for anything it does not know, so a route added without a rule is closed, not open.
pub type Rules = fn(&Method, &str) -> Access;

/// The authenticator and a service's rules. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Door {
    authenticator: Authenticator,
    rules: Rules,
}

impl Door {
    pub fn new(authenticator: Authenticator, rules: Rules) -> Self {
        Self { authenticator, rules }
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The caller of a request to `path`, or None for a public route; 401 or 403 (or 503 when
    /// the key store is down) otherwise.
    pub async fn admit(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Option<Caller>, ApiError> {
        match (self.rules)(method, path) {
            Access::Public => Ok(None),
            Access::Needs(scope) => {
                let caller = self.authenticator.authenticate(authorization).await?;
                caller.require(scope)?;
                Ok(Some(caller))
            }
        }
    }
}
