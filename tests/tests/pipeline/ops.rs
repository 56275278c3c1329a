use std::net::TcpListener;
use std::time::Duration;

use millrace_e2e::{SERVICES, Stack, StackOptions, long_text};
use millrace_testkit::{ChildProcess, cargo_bin};

/// Runs a service binary with extra variables until it exits (or 20 s pass); returns its exit
/// code and what it printed.
fn run_to_exit(service: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = ChildProcess::builder(cargo_bin(&format!("millrace-{service}")).unwrap())
        .name(service)
        .envs(env.iter().copied())
        .env("MILLRACE_DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("MILLRACE_REDIS_URL", "redis://127.0.0.1:1")
        .spawn()
        .unwrap();
    let status = child.wait_timeout(Duration::from_secs(20)).unwrap();
    let status = status.unwrap_or_else(|| panic!("{service} did not exit on a bad configuration"));
    (status.code(), child.logs())
}

/// A bad value stops every service before it binds a port (the port is held here, so binding
/// would fail differently), with status 2 and a message naming the variable.
#[test]
fn a_bad_setting_stops_each_service_before_it_binds_and_names_the_variable() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = held.local_addr().unwrap().to_string();
    for service in SERVICES {
        let (code, stderr) = run_to_exit(
            service,
            &[("MILLRACE_HTTP_ADDR", address.as_str()), ("MILLRACE_SHUTDOWN_DEADLINE_MS", "soon")],
        );
        assert_eq!(code, Some(2), "{service}: {stderr}");
        assert!(stderr.contains("MILLRACE_SHUTDOWN_DEADLINE_MS"), "{service}: {stderr}");
    }
    for service in ["chunking", "metadata", "embeddings", "storage"] {
        let (code, stderr) = run_to_exit(service, &[("MILLRACE_MAX_DELIVERIES", "0")]);
        assert_eq!(code, Some(2), "{service}: {stderr}");
        assert!(stderr.contains("MILLRACE_MAX_DELIVERIES: must be greater than zero"), "{service}: {stderr}");
    }
    // A collector address that is not a URL is a bad setting too (one that is down is not).
    for service in SERVICES {
        let (code, stderr) = run_to_exit(service, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1")]);
        assert_eq!(code, Some(2), "{service}: {stderr}");
        assert!(stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{service}: {stderr}");
    }
}

/// Every service reports ready once its dependencies answer, and SIGTERM in the middle of a
/// job drains: the stage exits cleanly, and the job completes once it is back.
#[tokio::test]
async fn services_are_ready_and_a_sigterm_mid_job_drains_cleanly() {
    let mut stack = Stack::start(
        StackOptions::default()
            .upstream(&["--latency-ms", "150", "--embedding-dim", "384"])
            .service_env("chunking", "MILLRACE_CHUNK_SIZE", 45)
            .service_env("chunking", "MILLRACE_BATCH_SIZE", 2),
    )
    .await
    .unwrap();
    for name in SERVICES {
        let port = stack.services[name].http_port;
        millrace_testkit::wait_for_http(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(30))
            .await
            .unwrap_or_else(|err| panic!("{name} not ready: {err}\n{}", stack.logs()));
        let metrics_port = stack.services[name].metrics_port;
        let metrics = stack.http.get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200, "{name} /metrics");
    }

    // The operator's view: every service answers its Admin stats, each stage with its queue.
    let (status, stats) = stack.get("/v1/stats").await;
    assert_eq!(status, 200, "{stats}");
    let services = stats["services"].as_array().unwrap();
    assert_eq!(services.len(), SERVICES.len(), "{stats}");
    for entry in services {
        assert_eq!(entry["reachable"], true, "{entry}");
    }
    for stage in ["chunking", "metadata", "embeddings", "storage"] {
        let entry = services.iter().find(|s| s["service"] == stage).unwrap();
        assert_eq!(entry["queues"][0]["group"], stage, "{entry}");
        assert!(entry["concurrency"]["limit"].as_u64().unwrap() > 0, "{entry}");
    }

    let job_id = stack.ingest("drain-doc", &long_text("millpond", 20)).await;
    stack.wait_until_progress(&job_id, 1).await;
    let status = stack.service("metadata").process.terminate(Duration::from_secs(10)).unwrap();
    let status = status.expect("metadata did not exit within 10 s of SIGTERM");
    assert!(status.success(), "metadata exited with {status}: {}", stack.logs());
    assert!(stack.service("metadata").process.logs().contains("shutdown signal received"));

    stack.service("metadata").process.restart().unwrap();
    let job = stack.wait_for_job(&job_id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    let total = job["chunks"]["total"].as_u64().unwrap();
    let indexes: Vec<i32> = stack.stored_chunks("drain-doc").await.iter().map(|(_, i)| *i).collect();
    assert_eq!(indexes, (0..total as i32).collect::<Vec<_>>());

    // The stages' work shows in their metrics, durations as histograms.
    let port = stack.services["storage"].http_port;
    let metrics =
        stack.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"millrace_stage_messages_total{stage="storage",outcome="ok"}"#), "{metrics}");
    assert!(metrics.contains(r#"millrace_stage_handler_duration_seconds_bucket{stage="storage""#), "{metrics}");
}
