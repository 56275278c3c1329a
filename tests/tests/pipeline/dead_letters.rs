use std::time::Duration;

use millrace_e2e::{Stack, StackOptions, long_text};
use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use serde_json::{Value, json};

use crate::cli::{millrace, stderr};

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

/// A storage fault (a trigger that refuses batch 1's rows with a retryable error) dead-letters
/// that batch after exactly MAX_DELIVERIES (3) deliveries and fails the job, and storage
/// discards what the version had stored. `GET /v1/dlq` lists the entry with its error. Once the
/// fault is removed, `millrace dlq retry storage` reopens the job and stores every batch again:
/// the job completes with every chunk stored exactly once. An entry of a cancelled job in the
/// same stage is refused with its reason (exit status 1) and stays.
#[tokio::test]
async fn a_dead_letter_is_listed_then_retried_once_the_fault_is_gone_and_the_job_completes_whole() {
    let stack = Stack::start(
        StackOptions::default()
            .service_env("chunking", "MILLRACE_CHUNK_SIZE", 45)
            .service_env("chunking", "MILLRACE_BATCH_SIZE", 2)
            // The storage stream keeps its entries, so the test can read what the retry put back.
            .service_env("storage", "MILLRACE_TRIM_INTERVAL_MS", 3_600_000),
    )
    .await
    .unwrap();
    let postgres = stack.postgres().await;
    postgres
        .batch_execute(
            "CREATE FUNCTION e2e_fault() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'the disk is on fire (test fault)' USING ERRCODE = '53100'; END $$;
             CREATE TRIGGER e2e_fault BEFORE INSERT ON chunks FOR EACH ROW
             WHEN (NEW.document_id = 'dlq-cancelled' OR NEW.document_id = 'dlq-doc' AND NEW.chunk_index IN (2, 3))
             EXECUTE FUNCTION e2e_fault();",
        )
        .await
        .unwrap();

    let job_id = stack.ingest("dlq-doc", &long_text("sluice", 12)).await;
    let job = stack.wait_for_job(&job_id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["stage"], "storage", "{job}");
    let total = job["chunks"]["total"].as_u64().unwrap();
    assert!(job["batches_total"].as_u64().unwrap() > 2, "{job}");
    let failed_trace = job["trace_id"].as_str().unwrap().to_owned();
    // Storage took back what the failed version had stored (batch 0 and any after batch 1).
    let discarded = async {
        while !stack.stored_chunks("dlq-doc").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), discarded).await.expect("the failed version's chunks stay");

    let (status, list) = stack.get("/v1/dlq?stage=storage").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1, "{list}");
    let entry = &list["stages"][0]["entries"][0];
    assert_eq!(entry["job_id"], job_id.as_str(), "{list}");
    assert_eq!((entry["batch"].as_u64(), entry["deliveries"].as_u64()), (Some(1), Some(3)), "{list}");
    assert!(entry["error"].as_str().unwrap().contains("the disk is on fire (test fault)"), "{list}");
    assert_eq!(entry["job_status"], "failed");

    // A job of the same stage that was cancelled; its entry was dead-lettered as it was being
    // cancelled (written here as the worker writes it: that race cannot be staged from outside).
    let cancelled = stack.ingest("dlq-cancelled", "A document whose storage the fault refuses.").await;
    let (status, body) = stack.delete(&format!("/v1/jobs/{cancelled}")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")), "{body}");
    let mut redis = stack.redis().await;
    let cancelled_entry: String = redis
        .xadd(
            format!("{}:dlq:storage", stack.key_prefix),
            "*",
            &[
                ("source_stream", format!("{}:stream:storage", stack.key_prefix)),
                ("source_id", "1-0".to_owned()),
                ("deliveries", "3".to_owned()),
                ("error", "the disk is on fire (test fault)".to_owned()),
                ("job_id", cancelled.clone()),
                ("batch", "0".to_owned()),
            ],
        )
        .await
        .unwrap();

    // The human listing shows both.
    let listed = millrace(&stack.api(), &["dlq", "list", "storage"]).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&job_id) && text.contains(&cancelled) && text.contains("cancelled"), "{text}");
    assert!(text.trim_end().ends_with("2 dead letters: storage 2"), "{text}");

    postgres.batch_execute("DROP TRIGGER e2e_fault ON chunks").await.unwrap();
    let retry = millrace(&stack.api(), &["dlq", "retry", "storage", "--json"]).await;
    assert_eq!(retry.status.code(), Some(1), "one entry is refused: {}", stderr(&retry));
    let report: Value = serde_json::from_slice(&retry.stdout).unwrap();
    assert_eq!(report["retried"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["retried"][0]["job_id"], job_id.as_str(), "{report}");
    assert_eq!(report["retried"][0]["job_status"], "running", "{report}");
    assert_eq!(report["retried"][0]["requeued"], json!({"storage": job["batches_total"]}), "{report}");
    assert_eq!(report["refused"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["refused"][0]["id"], cancelled_entry.as_str());
    assert_eq!(
        report["refused"][0]["reason"],
        format!("job {cancelled} was cancelled; submit the document again to process it")
    );

    let job = stack.wait_for_job(&job_id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["error"], Value::Null, "{job}");
    // The reopened job's work is traced under the retry request: the job names that trace, and
    // every storage entry the retry put back carries it.
    let retry_trace = job["trace_id"].as_str().unwrap();
    assert!(retry_trace.len() == 32 && retry_trace != failed_trace, "{job}");
    let entries: StreamRangeReply = redis.xrange_all(format!("{}:stream:storage", stack.key_prefix)).await.unwrap();
    let requeued = entries
        .ids
        .iter()
        .filter(|entry| entry.get::<String>("job_id").as_deref() == Some(job_id.as_str()))
        .filter(|entry| entry.get::<String>("traceparent").is_some_and(|tp| tp.contains(retry_trace)))
        .count();
    assert_eq!(
        Some(requeued as u64),
        job["batches_total"].as_u64(),
        "one re-stored entry per batch, in the retry's trace"
    );
    assert_eq!(job["chunks"]["stored"].as_u64(), Some(total), "each batch counted once: {job}");
    assert_eq!(job["batches_stored"], job["batches_total"], "{job}");
    let rows = stack.stored_chunks("dlq-doc").await;
    let expected: Vec<(i64, i32)> = (0..total as i32).map(|index| (1, index)).collect();
    assert_eq!(rows, expected, "every chunk once, none missing");
    let document = stack.get("/v1/documents/dlq-doc").await.1;
    assert_eq!((document["version"].as_u64(), document["chunk_count"].as_u64()), (Some(1), Some(total)));

    // What is left: the refused entry only.
    let (_, list) = stack.get("/v1/dlq").await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["stages"][3]["entries"][0]["id"], cancelled_entry.as_str(), "{list}");
}
