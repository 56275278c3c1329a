use std::time::Duration;

use millrace_e2e::{Stack, StackOptions};
use redis::AsyncCommands;
use redis::streams::StreamRangeReply;

/// Every chat call is refused for quota (the upstream's one request a minute is spent, and the
/// gateway does not wait a minute for it), so each metadata delivery fails with a retryable
/// error: after exactly MAX_DELIVERIES (3) deliveries the entry is dead-lettered and the job
/// fails with the stage. (An upstream that is down instead makes work wait without using
/// deliveries: see `limits::an_upstream_outage_is_ridden_out_by_the_breakers`.)
#[tokio::test]
async fn an_entry_that_always_fails_is_dead_lettered_after_exactly_n_deliveries() {
    let stack = Stack::start(
        StackOptions::default()
            .upstream(&["--rpm", "1", "--embedding-dim", "384"])
            .env("MILLRACE_LLM_TIMEOUT_MS", 3_000)
            // Embeddings stay local so that only the metadata half fails.
            .service_env("embeddings", "MILLRACE_EMBEDDINGS_PROVIDER", "hashing")
            .service_env("chunking", "MILLRACE_BATCH_SIZE", 100),
    )
    .await
    .unwrap();
    let spend = serde_json::json!({"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]});
    let port = stack.fake.as_ref().unwrap().1;
    let spent =
        stack.http.post(format!("http://127.0.0.1:{port}/v1/chat/completions")).json(&spend).send().await.unwrap();
    assert_eq!(spent.status(), 200);

    let job_id = stack.ingest("poison-doc", "One short paragraph that the metadata stage will never manage.").await;
    let job = stack.wait_for_job(&job_id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["stage"], "metadata", "{job}");
    assert!(job["error"]["message"].as_str().unwrap().contains("3 deliveries"), "{job}");

    let mut redis = stack.redis().await;
    let dead: StreamRangeReply = redis.xrange_all(format!("{}:dlq:metadata", stack.key_prefix)).await.unwrap();
    assert_eq!(dead.ids.len(), 1, "{dead:?}");
    let entry = &dead.ids[0];
    assert_eq!(entry.get::<String>("job_id").as_deref(), Some(job_id.as_str()));
    assert_eq!(entry.get::<u64>("deliveries"), Some(3));
    // The upstream answered the first delivery's call with 429 and Retry-After; the gateway held
    // the next deliveries' calls back itself instead of calling again before the minute was up.
    let stats = stack.fake_stats().await;
    assert_eq!(stats["by_endpoint"]["chat_completions"]["requests"], 2, "{stats}");
    assert_eq!(stats["rate_limited"], 1, "{stats}");
    // Nothing of the failed job is visible.
    assert!(stack.stored_chunks("poison-doc").await.is_empty());
    let pending: redis::streams::StreamPendingReply =
        redis.xpending(format!("{}:stream:metadata", stack.key_prefix), "metadata").await.unwrap();
    assert_eq!(pending.count(), 0, "the dead-lettered entry is acknowledged");
}
