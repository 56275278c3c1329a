//! Tracing across the services: one job is one trace, with spans from all six services and
//! the time each entry waited in each queue, exported over OTLP to the test's own receiver; a
//! collector that is down costs spans, never the job.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use millrace_e2e::{SERVICES, Stack, StackOptions, long_text};
use millrace_otlp_sink::{OtlpReceiver, ReceivedSpan};
use millrace_testkit::{free_port, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
/// The caller's own trace, sent with the submission: the job must continue it.
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;
const KIND_CONSUMER: i32 = 5;

async fn traced_stack(endpoint: &str) -> Stack {
    Stack::start(
        StackOptions::default()
            .upstream(&[])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            // Export every 100 ms instead of every 5 s, so the test does not wait on batching.
            .env("OTEL_BSP_SCHEDULE_DELAY", 100)
            // The log level must not thin out the trace: storage logs warnings only.
            .service_env("storage", "RUST_LOG", "warn"),
    )
    .await
    .unwrap()
}

/// Submits a document as a caller with its own trace and waits for the job to complete.
async fn ingest_traced(stack: &Stack, document_id: &str) -> Value {
    let body =
        json!({"document_id": document_id, "content": long_text("the traced mill", 8), "content_type": "text/plain"});
    let response = stack
        .http
        .post(format!("{}/v1/ingest", stack.api()))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let accepted: Value = response.json().await.unwrap();
    let job = stack.wait_for_job(accepted["job_id"].as_str().unwrap(), WAIT).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    job
}

/// Spans whose parent is neither the caller's span nor a span of the trace.
fn orphans(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    spans.iter().filter(|s| s.parent_span_id != CLIENT_SPAN && !ids.contains(s.parent_span_id.as_str())).collect()
}

/// The trace as an indented tree (children by start time), for failure messages and the README.
fn tree(spans: &[ReceivedSpan]) -> String {
    fn walk(spans: &[ReceivedSpan], parent: &str, depth: usize, out: &mut String) {
        let mut children: Vec<_> = spans.iter().filter(|s| s.parent_span_id == parent).collect();
        children.sort_by_key(|s| s.start_unix_nano);
        for span in children {
            let ms = span.end_unix_nano.saturating_sub(span.start_unix_nano) as f64 / 1e6;
            out.push_str(&format!("{:indent$}{} [{}] {ms:.1} ms\n", "", span.name, span.service, indent = depth * 2));
            walk(spans, &span.span_id, depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(spans, CLIENT_SPAN, 0, &mut out);
    out
}

fn services(spans: &[ReceivedSpan]) -> HashSet<&str> {
    spans.iter().map(|s| s.service.as_str()).collect()
}

#[tokio::test]
async fn one_job_is_one_trace_across_all_six_services_with_its_queue_waits() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let stack = traced_stack(&receiver.endpoint()).await;
    let job = ingest_traced(&stack, "traced").await;
    assert_eq!(job["trace_id"], CLIENT_TRACE, "the job continues the caller's trace: {job}");

    // Spans come in batches from six processes: wait until the trace is whole (every service
    // has sent spans and every span's parent has arrived).
    let batches = job["batches_total"].as_u64().unwrap() as usize;
    let whole = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let spans = receiver.trace(CLIENT_TRACE);
        let stored = spans.iter().filter(|s| s.name == "process e2e:stream:storage").count();
        std::future::ready(services(&spans).len() == SERVICES.len() && orphans(&spans).is_empty() && stored >= batches)
    })
    .await;
    let spans = receiver.trace(CLIENT_TRACE);
    let summary = tree(&spans);
    eprintln!("{summary}");
    assert!(whole.is_ok(), "trace never became whole; orphans {:?}\n{}", orphans(&spans), summary);
    // Spans are recorded under `millrace-<service>`, every service of the stack.
    let expected: HashSet<String> = SERVICES.iter().map(|name| format!("millrace-{name}")).collect();
    assert_eq!(services(&spans), expected.iter().map(String::as_str).collect(), "{}", summary);

    let named = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    // The submission is the root, a child of the caller's span.
    let roots: Vec<_> = spans.iter().filter(|s| s.parent_span_id == CLIENT_SPAN).collect();
    assert_eq!(roots.len(), 1, "{}", summary);
    let root = roots[0];
    assert_eq!(
        (root.service.as_str(), root.name.as_str(), root.kind),
        ("millrace-ingestion", "POST /v1/ingest", KIND_SERVER)
    );
    assert_eq!(root.attributes["http.response.status_code"], "202");
    assert_eq!(root.attributes["http.route"], "/v1/ingest");

    // Each stage processed its entries, and each entry's wait in its queue is a span that
    // starts when the entry was added and ends when a worker took it.
    for (stage, service, entries) in [
        ("chunking", "millrace-chunking", 1),
        ("metadata", "millrace-metadata", batches),
        ("embeddings", "millrace-embeddings", batches),
        ("storage", "millrace-storage", batches),
    ] {
        let stream = format!("e2e:stream:{stage}");
        let processed = named(&format!("process {stream}"));
        assert_eq!(processed.len(), entries, "{stage}: {}", summary);
        assert!(processed.iter().all(|s| s.service == service && s.kind == KIND_CONSUMER));
        assert!(processed.iter().all(|s| s.attributes["messaging.destination.name"] == stream));
        assert!(processed.iter().all(|s| s.attributes["millrace.job.id"] == job["job_id"].as_str().unwrap()));
        let waits = named(&format!("wait {stream}"));
        assert_eq!(waits.len(), entries, "{stage} waits: {}", summary);
        for wait in waits {
            assert!(wait.end_unix_nano >= wait.start_unix_nano);
            assert!(wait.attributes.contains_key("millrace.queue.wait_ms"));
        }
    }

    // GenAI spans on the gateway, with the models and the tokens the upstream reported.
    let chats: Vec<_> =
        spans.iter().filter(|s| s.attributes.get("gen_ai.operation.name").is_some_and(|o| o == "chat")).collect();
    assert!(!chats.is_empty(), "no chat span: {}", summary);
    for chat in &chats {
        assert_eq!(
            (chat.service.as_str(), chat.kind, chat.name.as_str()),
            ("millrace-llm-gateway", KIND_CLIENT, "chat fake-chat")
        );
        assert!(chat.attributes["gen_ai.usage.input_tokens"].parse::<u64>().unwrap() > 0);
        assert!(chat.attributes["gen_ai.usage.output_tokens"].parse::<u64>().unwrap() > 0);
    }
    assert!(named("embeddings fake-embed").iter().all(|s| s.attributes["gen_ai.usage.input_tokens"] != "0"));
    assert!(!named("embeddings fake-embed").is_empty());
    // The gateway's gRPC server spans continue the stages' spans.
    assert!(!named("millrace.v1.LlmGateway/Chat").is_empty(), "{}", summary);
    // Database spans on storage.
    let inserts = named("INSERT chunks");
    assert_eq!(inserts.len(), batches);
    assert!(inserts.iter().all(|s| s.service == "millrace-storage" && s.attributes["db.system.name"] == "postgresql"));

    // Log lines written inside a span carry its trace id.
    let chunking_logs = stack.services["chunking"].process.logs();
    let line = chunking_logs.lines().find(|l| l.contains("chunked document")).expect("no 'chunked document' log line");
    let line: HashMap<String, Value> = serde_json::from_str(line).unwrap();
    assert_eq!(line["trace_id"], CLIENT_TRACE);
    assert!(spans.iter().any(|s| Value::String(s.span_id.clone()) == line["span_id"]), "{line:?}");
}

#[tokio::test]
async fn a_collector_that_is_down_costs_spans_not_jobs() {
    // Nothing listens on this port: every export fails.
    let stack = traced_stack(&format!("http://127.0.0.1:{}", free_port())).await;
    let job = ingest_traced(&stack, "untraced").await;
    assert_eq!(job["trace_id"], CLIENT_TRACE);
    assert_eq!(job["chunks"]["stored"], job["chunks"]["total"]);

    // Each service says so once, however many batches of spans it failed to send (a batch goes
    // every 100 ms here).
    const REPORT: &str = "cannot export spans";
    let reported = |name: &str| stack.services[name].process.logs().matches(REPORT).count();
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        std::future::ready(["ingestion", "storage"].iter().all(|name| reported(name) > 0))
    })
    .await
    .unwrap_or_else(|_| panic!("no export failure reported:\n{}", stack.logs()));
    for _ in 0..10 {
        // Each request makes a span, so the ingestion service keeps failing to export.
        stack.job(job["job_id"].as_str().unwrap()).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!((reported("ingestion"), reported("storage")), (1, 1), "{}", stack.logs());
}
