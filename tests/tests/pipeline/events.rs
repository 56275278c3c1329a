//! Live progress: a job's events as Server-Sent Events and over gRPC (WatchJob), written by
//! the stages' own scripts.

use std::time::Duration;

use millrace_e2e::{Stack, StackOptions, long_text};
use millrace_proto::v1::WatchJobRequest;
use serde_json::{Value, json};

/// One SSE event: its id, type and JSON data.
#[derive(Debug)]
struct SseEvent {
    id: String,
    kind: String,
    data: Value,
}

/// Reads `GET path` as an event stream until the server closes it (panics after 60 s).
async fn read_events(stack: &Stack, path: &str, last_event_id: Option<&str>) -> Vec<SseEvent> {
    let mut request = stack.http.get(format!("{}{path}", stack.api()));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("the event stream did not close");
    text.split("\n\n")
        .filter_map(|block| {
            let field =
                |name: &str| block.lines().find_map(|line| line.strip_prefix(name).map(|v| v.trim_start().to_owned()));
            Some(SseEvent {
                id: field("id:")?,
                kind: field("event:")?,
                data: serde_json::from_str(&field("data:")?).unwrap(),
            })
        })
        .collect()
}

#[tokio::test]
async fn a_jobs_events_arrive_in_order_and_the_stream_closes_after_the_last() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let body = json!({
        "document_id": "events",
        "content": long_text("events", 60),
        "content_type": "text/plain",
        "options": {"chunk_size": 60, "chunk_overlap": 0},
    });
    let (status, accepted, _) = stack.post("/v1/ingest", &body).await;
    assert_eq!(status, 202, "{accepted}");
    let job_id = accepted["job_id"].as_str().unwrap();

    // Subscribing while the job runs: the stream replays from the start and follows it live.
    let events = read_events(&stack, &format!("/v1/jobs/{job_id}/events"), None).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"queued"), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&"chunked"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    assert!(events.iter().all(|e| e.data["job_id"] == job_id && e.data["type"] == e.kind.as_str()));
    let ids: Vec<(u64, u64)> = events
        .iter()
        .map(|e| {
            let (ms, seq) = e.id.split_once('-').unwrap();
            (ms.parse().unwrap(), seq.parse().unwrap())
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order: {ids:?}");

    let chunked = &events[1].data;
    let batches = chunked["batches"].as_u64().unwrap();
    assert!(batches >= 2, "want several batches: {chunked}");
    let position = |stage: &str, batch: u64| {
        events.iter().position(|e| e.kind == "batch" && e.data["stage"] == stage && e.data["batch"] == batch)
    };
    let mut stored_chunks = 0;
    for batch in 0..batches {
        let stored = position("storage", batch).unwrap_or_else(|| panic!("batch {batch} never stored: {kinds:?}"));
        for half in ["metadata", "embeddings"] {
            let done = position(half, batch).unwrap_or_else(|| panic!("no {half} event for batch {batch}"));
            assert!(done < stored, "batch {batch}: {half} after storage");
        }
        stored_chunks += events[stored].data["chunks"].as_u64().unwrap();
    }
    assert_eq!(events.iter().filter(|e| e.kind == "batch").count() as u64, 3 * batches, "each step once: {kinds:?}");

    // Each stage's result says when its worker took the work up (`started_ms`): not before the
    // step before it finished (that step wrote the entry the worker read), not after its own
    // result. Workers and Redis share this machine's clock.
    let time = |event: &SseEvent| -> u64 { event.id.split_once('-').unwrap().0.parse().unwrap() };
    let started = |event: &SseEvent| -> u64 {
        event.data["started_ms"].as_u64().unwrap_or_else(|| panic!("no started_ms as a number: {}", event.data))
    };
    let check = |what: &str, event: &SseEvent, ready: u64| {
        let (started, finished) = (started(event), time(event));
        assert!(
            ready <= started && started <= finished,
            "{what}: ready at {ready}, started at {started}, finished at {finished}"
        );
    };
    check("chunking", &events[1], time(&events[0]));
    for batch in 0..batches {
        let halves = ["metadata", "embeddings"].map(|half| &events[position(half, batch).unwrap()]);
        for half in halves {
            check(&format!("batch {batch} {}", half.data["stage"]), half, time(&events[1]));
        }
        let ready = halves.iter().map(|&half| time(half)).max().unwrap();
        check(&format!("batch {batch} storage"), &events[position("storage", batch).unwrap()], ready);
    }
    assert_eq!(stored_chunks, chunked["chunks"].as_u64().unwrap());
    let job = stack.job(job_id).await;
    assert_eq!(job["chunks"]["stored"].as_u64().unwrap(), stored_chunks, "{job}");

    // Resuming after an event gives exactly the ones after it.
    let resumed = read_events(&stack, &format!("/v1/jobs/{job_id}/events"), Some(&events[1].id)).await;
    let resumed_ids: Vec<&str> = resumed.iter().map(|e| e.id.as_str()).collect();
    let expected: Vec<&str> = events[2..].iter().map(|e| e.id.as_str()).collect();
    assert_eq!(resumed_ids, expected);

    let (status, body) = stack.get("/v1/jobs/no-such-job/events").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");

    // The same events over gRPC (WatchJob), ending with the stream.
    let mut client = stack.ingestion_grpc().await;
    let request = WatchJobRequest { job_id: job_id.to_owned(), after_event_id: String::new() };
    let mut watched = client.watch_job(request).await.unwrap().into_inner();
    let mut over_grpc = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), watched.message()).await.unwrap().unwrap() {
        over_grpc.push((event.id, event.r#type, event.chunks, event.started_ms));
    }
    let over_sse: Vec<(String, String, u64, u64)> = events
        .iter()
        .map(|e| {
            let number = |name: &str| e.data[name].as_u64().unwrap_or(0);
            (e.id.clone(), e.kind.clone(), number("chunks"), number("started_ms"))
        })
        .collect();
    assert_eq!(over_grpc, over_sse);
    let unknown = WatchJobRequest { job_id: "no-such-job".into(), after_event_id: String::new() };
    assert_eq!(client.watch_job(unknown).await.unwrap_err().code(), tonic::Code::NotFound);
}
