use std::time::Duration;

use millrace_e2e::{Stack, StackOptions};
use redis::AsyncCommands;
use redis::streams::StreamRangeReply;

/// Every chat call fails (the upstream answers 500), so each metadata delivery fails: after
/// exactly MAX_DELIVERIES (3) deliveries the entry is dead-lettered and the job fails with the stage.
#[tokio::test]
async fn an_entry_that_always_fails_is_dead_lettered_after_exactly_n_deliveries() {
    let stack = Stack::start(
        StackOptions::default()
            .upstream(&["--error-rate", "1.0", "--embedding-dim", "384"])
            // Embeddings stay local so that only the metadata half fails.
            .service_env("embeddings", "MILLRACE_EMBEDDINGS_PROVIDER", "hashing")
            .service_env("chunking", "MILLRACE_BATCH_SIZE", 100),
    )
    .await
    .unwrap();
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
    // One chat call per delivery: the handler ran exactly three times.
    let stats = stack.fake_stats().await;
    assert_eq!(stats["by_endpoint"]["chat_completions"]["requests"], 3, "{stats}");
    // Nothing of the failed job is visible.
    assert!(stack.stored_chunks("poison-doc").await.is_empty());
    let pending: redis::streams::StreamPendingReply =
        redis.xpending(format!("{}:stream:metadata", stack.key_prefix), "metadata").await.unwrap();
    assert_eq!(pending.count(), 0, "the dead-lettered entry is acknowledged");
}
