//! The door as an axum middleware. Put it on a router with `route_layer`, so that it runs for
//! matched routes only and knows the route's template (`MatchedPath`); unknown paths keep their
//! 404.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use http::header::AUTHORIZATION;

use super::Door;

/// The middleware: `router.route_layer(axum::middleware::from_fn_with_state(door, require_key))`.
pub async fn require_key(State(door): State<Door>, mut request: Request, next: Next) -> Response {
    let path = match request.extensions().get::<MatchedPath>() {
        Some(matched) => matched.as_str().to_owned(),
        None => request.uri().path().to_owned(),
    };
    let authorization = request.headers().get(AUTHORIZATION).map(|value| value.to_str().unwrap_or(""));
    match door.admit(request.method(), &path, authorization).await {
        Ok(caller) => {
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}
