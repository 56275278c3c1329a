//! `GET /v1/stats`: ingestion's own stats, and every other service's, or why it is missing.

use std::net::SocketAddr;

use millrace_common::server::{AdminService, Listeners, serve};
use millrace_proto::v1::{BreakerStats, QueueStats, StatsResponse};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::helpers::{PREFIX, spawn_app, spawn_app_with};

const ORDER: [&str; 6] = ["ingestion", "chunking", "metadata", "embeddings", "storage", "llm-gateway"];

async fn stats(app: &crate::helpers::TestApp) -> Vec<Value> {
    let response = app.get("/v1/stats").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let services = body["services"].as_array().unwrap_or_else(|| panic!("no services in {body}")).clone();
    let names: Vec<&str> = services.iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(names, ORDER, "{body}");
    services
}

#[tokio::test]
async fn stats_show_ingestion_and_the_unreachable_services() {
    let app = spawn_app().await;
    app.ingest("one").await;
    app.ingest("two").await;

    let services = stats(&app).await;
    assert_eq!(
        services[0],
        json!({
            "service": "ingestion",
            "reachable": true,
            "concurrency": {"limit": 0, "in_use": 0},
            "queues": [{
                "stream": format!("{PREFIX}:stream:chunking"),
                "group": "chunking",
                "length": 2,
                "lag": 2,
                "pending": 0,
                "dead_letters": 0,
            }],
            "breakers": [],
        })
    );
    for service in &services[1..] {
        assert_eq!(service["reachable"], false, "{service}");
        assert!(!service["error"].as_str().unwrap().is_empty(), "{service}");
        assert_eq!(service.as_object().unwrap().len(), 3, "only service, reachable and error: {service}");
    }
}

/// A stand-in for a service: its `millrace.v1.Admin` answers `stats`.
async fn fake_admin(stats: StatsResponse) -> (SocketAddr, CancellationToken) {
    let listeners = Listeners {
        http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        limits: millrace_common::ServerLimits::DEFAULT,
        grpc_tls: None,
    };
    let addr = listeners.grpc_addr().unwrap();
    let admin = AdminService::new(move || {
        let stats = stats.clone();
        async move { Ok(stats) }
    });
    let stop = CancellationToken::new();
    let grpc = tonic::service::Routes::new(admin);
    tokio::spawn(serve("fake", listeners, axum::Router::new(), grpc, stop.clone(), stop.clone()));
    (addr, stop)
}

#[tokio::test]
async fn stats_show_answering_services_and_time_out_silent_ones() {
    let (chunking, stop) = fake_admin(StatsResponse {
        service: "chunking".into(),
        concurrency_limit: 16,
        concurrency_in_use: 3,
        queues: vec![QueueStats {
            stream: "itest:stream:metadata".into(),
            group: "metadata".into(),
            length: 7,
            lag: 4,
            pending: 3,
            dead_letters: 1,
        }],
        breakers: vec![BreakerStats { name: "llm".into(), state: "half_open".into() }],
        limits_json: String::new(),
    })
    .await;
    // Accepts connections (the kernel does) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let chunking_url = format!("http://{chunking}");
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let app = spawn_app_with(&[
        ("CHUNKING_URL", chunking_url.as_str()),
        ("METADATA_URL", silent_url.as_str()),
        // Pointed at the wrong service by mistake.
        ("LLM_GATEWAY_URL", chunking_url.as_str()),
    ])
    .await;

    let services = stats(&app).await;

    assert_eq!(services[0]["reachable"], true);
    assert_eq!(
        services[1],
        json!({
            "service": "chunking",
            "reachable": true,
            "concurrency": {"limit": 16, "in_use": 3},
            "queues": [{
                "stream": "itest:stream:metadata",
                "group": "metadata",
                "length": 7,
                "lag": 4,
                "pending": 3,
                "dead_letters": 1,
            }],
            "breakers": [{"name": "llm", "state": "half_open"}],
        })
    );
    assert_eq!(services[2]["reachable"], false);
    assert_eq!(services[2]["error"], "no answer within 2000 ms");
    for service in &services[3..5] {
        assert_eq!(service["reachable"], false, "{service}");
    }
    assert_eq!(services[5]["reachable"], false);
    let error = services[5]["error"].as_str().unwrap();
    assert!(error.contains("MILLRACE_LLM_GATEWAY_URL") && error.contains("\"chunking\""), "{error}");
    stop.cancel();
}
