//! The web console's files at `/ui/`: served without a key, with a policy that lets only this
//! origin's scripts run, and the trace link pattern the pages read.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{client_with_key, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_console_is_served_without_a_key() {
    let app = spawn_app().await;
    let anonymous = client_with_key(None);
    for (path, content_type, marker) in [
        ("/ui/", "text/html", "<script src=\"app.js\""),
        ("/ui/app.js", "text/javascript", "sessionStorage"),
        ("/ui/app.css", "text/css", "@media"),
    ] {
        let response = anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(content_type), "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(response.text().await.unwrap().contains(marker), "{path}");
    }
    // `/ui` goes to `/ui/`, so that the assets' relative paths resolve.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = no_redirects.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(response.headers()["location"], "/ui/");
    // Without a trace UI the pages show the trace id with no link.
    let config: Value = anonymous.get(app.url("/ui/config.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["trace_url"], Value::Null);
}

#[tokio::test]
async fn the_console_reads_the_trace_link_pattern() {
    let pattern = "https://jaeger.example/trace/{trace_id}";
    let app = spawn_app_with(&[("TRACE_URL", pattern)]).await;
    let config: Value =
        client_with_key(None).get(app.url("/ui/config.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["trace_url"], pattern);
    // Only the listed files are served: anything else under /ui/ is no route.
    let response = client_with_key(None).get(app.url("/ui/secret")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
