//! The web console at `/ui/`: a small single-page app whose files are compiled into the binary,
//! so that a deployment serves it with nothing beside the executable and no CDN. The pages hold
//! no data: every call they make to the API carries the signed-in key, so the door decides what
//! a page may show exactly as it does for curl. Hence these routes are public (`auth::rules`).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::json;

/// The assets, by the name they are served under.
const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// Scripts, styles and calls from this origin only, no inline script, no framing: the page
/// handles a secret (the key in `sessionStorage`), so nothing foreign may run beside it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// What the pages need to know of this deployment; nothing secret.
#[derive(Debug, Clone, Default)]
pub struct ConsoleConfig {
    /// The trace UI's address of a job's trace, with `{trace_id}` in it (`MILLRACE_TRACE_URL`).
    pub trace_url: Option<String>,
}

/// `/ui` (redirected to `/ui/`), `/ui/` and its assets. `/ui/config.json` tells the pages the
/// trace link pattern.
pub fn router(config: ConsoleConfig) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/ui/config.json", get(config_json))
        .with_state(config)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (headers(content_type), body).into_response()
}

async fn config_json(State(config): State<ConsoleConfig>) -> Response {
    (headers("application/json"), json!({ "trace_url": config.trace_url }).to_string()).into_response()
}

fn headers(content_type: &'static str) -> [(HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        // The assets change with the binary: a browser asks again rather than run an old page
        // against a new API.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}
