//! The door of the gateway's HTTP API: every call needs `Authorization: Bearer <key>`, looked up
//! by the same [`Authenticator`] as ingestion's (keys hashed in PostgreSQL, checks cached for at
//! most `MILLRACE_KEY_CACHE_MS`). The OpenAI-compatible routes need the `llm` scope and answer
//! refusals in OpenAI's error shape, so that SDKs raise their `AuthenticationError` and
//! `PermissionDeniedError`; `/v1/limits` (the operators' page) needs `admin`, in millrace's
//! shape. The [`Caller`] goes into the request's extensions for the handlers.
//!
//! The bootstrap admin key is accepted as a key, but `admin` does not grant `llm` (spending the
//! upstream's key is granted on its own): the 403 says so.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use millrace_auth::{Authenticator, Caller, Scope};
use millrace_common::{ApiError, ErrorCode};

use super::OpenAiError;

/// For the OpenAI-compatible routes: an `llm` key, or OpenAI's 401/403.
pub async fn require_llm_key(State(authenticator): State<Authenticator>, request: Request, next: Next) -> Response {
    admit(authenticator, request, next, Scope::Llm, |err| openai_error(err).into_response()).await
}

/// For `/v1/limits`: an `admin` key, or millrace's 401/403.
pub async fn require_admin_key(State(authenticator): State<Authenticator>, request: Request, next: Next) -> Response {
    admit(authenticator, request, next, Scope::Admin, IntoResponse::into_response).await
}

async fn admit(
    authenticator: Authenticator,
    mut request: Request,
    next: Next,
    needed: Scope,
    refuse: fn(ApiError) -> Response,
) -> Response {
    // A header that is not text is as good as none (the authenticator says it is malformed).
    let authorization = request.headers().get(AUTHORIZATION).map(|value| value.to_str().unwrap_or(""));
    let caller = match authenticator.authenticate(authorization).await {
        Ok(caller) => caller,
        Err(err) => return refuse(err),
    };
    if let Err(err) = require(&caller, needed) {
        tracing::debug!(key_id = %caller.key_id, scope = %needed, "refused: scope missing");
        return refuse(err);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// 403 unless `caller` holds `needed`; for `llm`, the admin key is told why it is not enough.
fn require(caller: &Caller, needed: Scope) -> Result<(), ApiError> {
    if caller.has(needed) {
        return Ok(());
    }
    if needed == Scope::Llm && caller.is_admin() {
        return Err(ApiError::permission_denied(
            "this is an admin key, and admin holds every scope but 'llm': spending the LLM upstream is granted on its \
             own. Use a key with the 'llm' scope (create one with POST /v1/keys on ingestion, scopes [\"llm\"])",
        ));
    }
    caller.require(needed)
}

/// The authenticator's refusal (401, 403, or 503 while the key store is down) in OpenAI's shape.
fn openai_error(err: ApiError) -> OpenAiError {
    let retry_after = err.retry_after_secs.map(std::time::Duration::from_secs);
    let error = match err.code {
        ErrorCode::Unauthenticated => millrace_openai::ApiError::unauthorized(err.message),
        ErrorCode::PermissionDenied => {
            millrace_openai::ApiError::new(StatusCode::FORBIDDEN, "permission_error", err.message)
                .with_code("insufficient_permissions")
        }
        ErrorCode::Unavailable => {
            millrace_openai::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", err.message)
                .with_code("key_store_unavailable")
        }
        other => millrace_openai::ApiError::new(other.http_status(), "server_error", err.message),
    };
    OpenAiError { error, retry_after, retryable: err.code.is_retryable() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scopes: Vec<Scope>) -> Caller {
        Caller { key_id: "key_1".into(), scopes, ..Caller::bootstrap_admin() }
    }

    #[test]
    fn llm_needs_its_own_scope_and_the_admin_is_told_so() {
        assert!(require(&caller(vec![Scope::Llm]), Scope::Llm).is_ok());
        let err = require(&Caller::bootstrap_admin(), Scope::Llm).err().map(|err| (err.code, err.message));
        let (code, message) = err.unwrap_or_else(|| (ErrorCode::Internal, String::new()));
        assert_eq!(code, ErrorCode::PermissionDenied);
        assert!(message.contains("admin holds every scope but 'llm'"), "{message}");
        let reader = require(&caller(vec![Scope::Read]), Scope::Llm).err().map(|err| err.message);
        assert_eq!(reader.as_deref(), Some("this key lacks the 'llm' scope"));
        assert!(require(&caller(vec![Scope::Llm]), Scope::Admin).is_err(), "llm does not open the operators' page");
    }

    #[test]
    fn refusals_take_openais_shape() {
        let unauthorized = openai_error(ApiError::unauthenticated("unknown key"));
        assert_eq!((unauthorized.status.as_u16(), unauthorized.code), (401, Some("invalid_api_key")));
        let forbidden = openai_error(ApiError::permission_denied("no"));
        assert_eq!((forbidden.status.as_u16(), forbidden.kind), (403, "permission_error"));
        let down = openai_error(ApiError::unavailable("key store down").with_retry_after(2));
        assert_eq!((down.status.as_u16(), down.retry_after), (503, Some(std::time::Duration::from_secs(2))));
    }
}
