//! The door as a tower layer around one tonic service: the service keeps its name (so it is
//! added to `Routes` as before), and a refused call is answered with the gRPC status of the
//! error (UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE with `retry-after`) without reaching
//! the service. Methods read the caller with `request.extensions().get::<Caller>()`.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::header::AUTHORIZATION;
use tonic::server::NamedService;
use tower::{Layer, Service};

use super::Door;

#[derive(Clone, Debug)]
pub struct DoorLayer {
    door: Door,
}

impl DoorLayer {
    pub fn new(door: Door) -> Self {
        Self { door }
    }
}

impl<S> Layer<S> for DoorLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded { door: self.door.clone(), inner }
    }
}

/// A tonic service behind the door.
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    door: Door,
    inner: S,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Guarded<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call; the fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let door = self.door.clone();
        Box::pin(async move {
            let authorization = request.headers().get(AUTHORIZATION).map(|value| value.to_str().unwrap_or(""));
            match door.admit(request.method(), request.uri().path(), authorization).await {
                Ok(caller) => {
                    if let Some(caller) = caller {
                        request.extensions_mut().insert(caller);
                    }
                    inner.call(request).await
                }
                Err(err) => Ok(tonic::Status::from(err).into_http()),
            }
        })
    }
}
