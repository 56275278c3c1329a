//! Quotas and outages across real processes: replicas sharing one upstream quota through the
//! gateways' Redis limiter, and an upstream outage ridden out by the breakers without a single
//! dead letter.

use std::time::Duration;

use millrace_e2e::{Stack, StackOptions, long_text};
use serde_json::json;

/// The fake's requests to one endpoint, as (started_ms, status), oldest first.
async fn upstream_log(stack: &Stack, endpoint: &str) -> Vec<(u64, u64)> {
    let mut log: Vec<(u64, u64)> = stack
        .fake_requests()
        .await
        .iter()
        .filter(|r| r["endpoint"] == endpoint)
        .map(|r| (r["started_ms"].as_u64().unwrap(), r["status"].as_u64().unwrap_or(0)))
        .collect();
    log.sort_unstable();
    log
}

async fn submit_all(stack: &Stack, documents: usize, paragraphs: usize) -> Vec<String> {
    let mut jobs = Vec::new();
    for i in 0..documents {
        let body = json!({
            "document_id": format!("quota-{i}"),
            "content": long_text(&format!("subject {i}"), paragraphs),
            "content_type": "text/plain",
            "options": {"chunk_size": 120, "chunk_overlap": 0},
        });
        let (status, body, _) = stack.post("/v1/ingest", &body).await;
        assert_eq!(status, 202, "{body}");
        jobs.push(body["job_id"].as_str().unwrap().to_owned());
    }
    jobs
}

async fn dead_letters(stack: &Stack) -> u64 {
    let mut redis = stack.redis().await;
    let mut total = 0;
    for stage in ["chunking", "metadata", "embeddings", "storage"] {
        let key = format!("{}:dlq:{stage}", stack.key_prefix);
        total += redis::cmd("XLEN").arg(key).query_async::<u64>(&mut redis).await.unwrap();
    }
    total
}

/// Three metadata replicas behind two gateway replicas, one upstream quota of 60 requests a
/// minute: the gateways share it through Redis, so the upstream never answers 429 and the
/// first minute carries (nearly) the whole quota.
#[tokio::test]
async fn replicas_share_one_quota_to_the_last_request_without_a_429() {
    const RPM: u64 = 60;
    let stack = Stack::start(
        StackOptions::default()
            .upstream(&["--rpm", "60", "--latency-ms", "20"])
            .env("MILLRACE_LLM_RPM", RPM)
            .env("MILLRACE_LLM_MAX_RETRIES", 2)
            .env("MILLRACE_METADATA_CHUNKS_PER_REQUEST", 1)
            // Only chat counts against the quota here: vectors come from the hashing embedder.
            .env("MILLRACE_EMBEDDINGS_PROVIDER", "hashing")
            .env("MILLRACE_VISIBILITY_TIMEOUT_MS", 10_000)
            .replicas("llm-gateway", 2)
            .replicas("metadata", 3),
    )
    .await
    .unwrap();

    // About 75 chunks, so the work outlasts the first minute's quota.
    let jobs = submit_all(&stack, 5, 15).await;
    for job in &jobs {
        let job = stack.wait_for_job(job, Duration::from_secs(180)).await.unwrap();
        assert_eq!(job["status"], "completed", "{job}\n{}", stack.logs());
    }

    let chats = upstream_log(&stack, "chat_completions").await;
    let limited = chats.iter().filter(|(_, status)| *status == 429).count();
    assert_eq!(limited, 0, "the upstream answered 429 {limited} times: {chats:?}");
    assert!(chats.len() as u64 > RPM, "too little work to fill a minute: {} calls", chats.len());
    let first = chats[0].0;
    let in_first_minute = chats.iter().filter(|(at, _)| *at < first + 60_000).count() as u64;
    assert!(in_first_minute * 100 >= RPM * 95, "only {in_first_minute} of {RPM} requests in the first minute");
    assert_eq!(dead_letters(&stack).await, 0);
}

/// The upstream answers only 500s for 20 s, then recovers: the breakers open, the stages stop
/// pulling, calls to the upstream during the outage stay few (probes), nothing is
/// dead-lettered, and every job completes after recovery.
#[tokio::test]
async fn an_upstream_outage_is_ridden_out_by_the_breakers() {
    let mut stack = Stack::start(
        StackOptions::default()
            .upstream(&["--latency-ms", "5"])
            .env("MILLRACE_METADATA_CHUNKS_PER_REQUEST", 1)
            .env("MILLRACE_LLM_BREAKER_CONSECUTIVE_FAILURES", 3)
            .env("MILLRACE_LLM_BREAKER_OPEN_MS", 2_000)
            .env("MILLRACE_LLM_BREAKER_MAX_OPEN_MS", 8_000)
            .env("MILLRACE_GATEWAY_BREAKER_CONSECUTIVE_FAILURES", 3)
            .env("MILLRACE_GATEWAY_BREAKER_OPEN_MS", 2_000)
            .env("MILLRACE_GATEWAY_BREAKER_MAX_OPEN_MS", 8_000),
    )
    .await
    .unwrap();
    let fake = &mut stack.fake.as_mut().unwrap().0;
    fake.set_env("FAKE_OPENAI_ERROR_RATE", "1");
    fake.restart().unwrap();
    let port = stack.fake.as_ref().unwrap().1;
    wait_for_fake(&stack, port).await;

    let outage_started = now_ms();
    let jobs = submit_all(&stack, 3, 6).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during: Vec<(u64, u64)> = upstream_log(&stack, "chat_completions")
        .await
        .into_iter()
        .chain(upstream_log(&stack, "embeddings").await)
        .collect();
    assert!(during.iter().all(|(_, status)| *status == 500), "{during:?}");

    let fake = &mut stack.fake.as_mut().unwrap().0;
    fake.set_env("FAKE_OPENAI_ERROR_RATE", "0");
    fake.restart().unwrap();
    wait_for_fake(&stack, port).await;
    for job in &jobs {
        let job = stack.wait_for_job(job, Duration::from_secs(60)).await.unwrap();
        assert_eq!(job["status"], "completed", "{job}\n{}", stack.logs());
    }

    // Without breakers the stages would call as fast as deliveries allow (hundreds of calls);
    // with them, a few failures open each breaker and then only probes go out.
    let seconds = (now_ms() - outage_started) / 1000;
    assert!(during.len() <= 40, "{} upstream calls in the 20 s outage: {during:?}", during.len());
    assert_eq!(dead_letters(&stack).await, 0, "after {seconds} s\n{}", stack.logs());
    let (status, limits) = stack.get("/v1/limits").await;
    assert_eq!(status, 200, "{limits}");
    let gateway = &limits["services"]["llm-gateway"];
    assert_eq!(gateway["upstreams"][0]["breaker"]["state"], "closed", "{limits}");
}

async fn wait_for_fake(stack: &Stack, port: u16) {
    for _ in 0..100 {
        if stack.http.get(format!("http://127.0.0.1:{port}/stats")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the fake upstream did not come back");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Once the day's LLM budget is spent, the ingestion API refuses new jobs that would call the
/// LLM with 429 naming the budget, instead of queueing work the gateway would refuse; a
/// resubmission of a stored document needs no LLM call and is still accepted.
#[tokio::test]
async fn a_spent_budget_refuses_new_jobs_at_the_front_door() {
    let stack = Stack::start(
        StackOptions::default()
            .upstream(&[])
            // A model of the built-in price table, and a budget the first job's call overspends.
            .env("MILLRACE_LLM_CHAT_MODEL", "gpt-4o-mini")
            .env("MILLRACE_MAX_DAILY_COST_USD", "0.000001")
            .env("MILLRACE_EMBEDDINGS_PROVIDER", "hashing"),
    )
    .await
    .unwrap();
    let document = |id: &str| json!({"document_id": id, "content": long_text(id, 2), "content_type": "text/plain"});

    let (status, accepted, _) = stack.post("/v1/ingest", &document("paid")).await;
    assert_eq!(status, 202, "{accepted}");
    let job = stack.wait_for_job(accepted["job_id"].as_str().unwrap(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}\n{}", stack.logs());
    assert!(job["llm"]["cost_usd"].as_f64().unwrap() > 0.000001, "{job}");
    assert!(job["llm"]["prompt_tokens"].as_u64().unwrap() > 0, "{job}");

    // The front door trusts its last look for a second.
    let mut refused = None;
    for _ in 0..50 {
        let (status, body, headers) = stack.post("/v1/ingest", &document("unpaid")).await;
        if status == 429 {
            refused = Some((body, headers));
            break;
        }
        assert_eq!(status, 202, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (body, headers) = refused.expect("a new job was still accepted 5 s after the budget was spent");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("MILLRACE_MAX_DAILY_COST_USD") && message.contains("metadata"), "{message}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    // Retried dead letters would only fail again on the spent budget: refused the same way.
    let (status, body, headers) = stack.post("/v1/dlq/metadata/retry", &json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("MILLRACE_MAX_DAILY_COST_USD"), "{body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");

    let (status, same, _) = stack.post("/v1/ingest", &document("paid")).await;
    assert_eq!(status, 200, "an identical resubmission needs no LLM: {same}");
    let (status, batch, _) =
        stack.post("/v1/ingest/batch", &json!({"documents": [document("paid"), document("unpaid-2")]})).await;
    assert_eq!(status, 202, "{batch}");
    assert!(batch["jobs"][0]["job_id"].is_string(), "{batch}");
    assert_eq!(batch["jobs"][1]["error"]["code"], "rate_limited", "{batch}");

    let (_, limits) = stack.get("/v1/limits").await;
    assert_eq!(limits["services"]["llm-gateway"]["budget"]["exhausted"], true, "{limits}");
}
