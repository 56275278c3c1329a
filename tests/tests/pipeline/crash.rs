use std::time::Duration;

use millrace_e2e::{Stack, StackOptions, long_text};

/// The metadata service is killed with SIGKILL in the middle of a multi-batch job and started
/// again: its pending entries are finished (by itself on restart, or by reclaim), and every
/// chunk is stored exactly once.
#[tokio::test]
async fn a_killed_metadata_service_loses_nothing_and_stores_nothing_twice() {
    let mut stack = Stack::start(
        StackOptions::default()
            .upstream(&["--latency-ms", "150", "--embedding-dim", "384"])
            .service_env("chunking", "MILLRACE_CHUNK_SIZE", 45)
            .service_env("chunking", "MILLRACE_BATCH_SIZE", 2)
            .service_env("metadata", "MILLRACE_CONCURRENCY", 2),
    )
    .await
    .unwrap();
    let job_id = stack.ingest("crash-doc", &long_text("windmill", 30)).await;

    // Wait until metadata is part-way through the job, then kill it.
    let mut job = stack.job(&job_id).await;
    for _ in 0..300 {
        job = stack.job(&job_id).await;
        let done = job["chunks"]["metadata_done"].as_u64().unwrap();
        let total = job["chunks"]["total"].as_u64().unwrap();
        if done > 0 && done + 8 < total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = job["chunks"]["metadata_done"].as_u64().unwrap();
    let total = job["chunks"]["total"].as_u64().unwrap();
    assert!(before > 0 && before < total, "metadata was not mid-job when killed: {job}");
    stack.service("metadata").process.kill().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.service("metadata").process.restart().unwrap();
    stack.wait_healthy("metadata").await.unwrap();

    let job = stack.wait_for_job(&job_id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["chunks"]["stored"].as_u64().unwrap(), total, "{job}");
    assert_eq!(job["chunks"]["metadata_done"].as_u64().unwrap(), total, "{job}");
    let rows = stack.stored_chunks("crash-doc").await;
    let indexes: Vec<i32> = rows.iter().map(|(_, index)| *index).collect();
    assert_eq!(indexes, (0..total as i32).collect::<Vec<_>>(), "every chunk once, none missing");
}

/// Every service is killed with SIGKILL mid-job and restarted: the job still completes whole.
#[tokio::test]
async fn every_service_killed_and_restarted_mid_job_still_completes_the_job() {
    let mut stack = Stack::start(
        StackOptions::default()
            .upstream(&["--latency-ms", "100", "--embedding-dim", "384"])
            .service_env("chunking", "MILLRACE_CHUNK_SIZE", 45)
            .service_env("chunking", "MILLRACE_BATCH_SIZE", 2),
    )
    .await
    .unwrap();
    let job_id = stack.ingest("restart-doc", &long_text("aqueduct", 24)).await;
    stack.wait_until_progress(&job_id, 1).await;
    for name in millrace_e2e::SERVICES {
        stack.service(name).process.kill().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in millrace_e2e::SERVICES {
        stack.service(name).process.restart().unwrap();
    }
    for name in millrace_e2e::SERVICES {
        stack.wait_healthy(name).await.unwrap();
    }
    let job = stack.wait_for_job(&job_id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    let total = job["chunks"]["total"].as_u64().unwrap();
    let indexes: Vec<i32> = stack.stored_chunks("restart-doc").await.iter().map(|(_, i)| *i).collect();
    assert_eq!(indexes, (0..total as i32).collect::<Vec<_>>());
}

/// Redis itself (AOF on, as in production) is killed with SIGKILL mid-job and restarted: job
/// state and queued work come back from the append-only file, the services reconnect, and the
/// job completes whole.
#[tokio::test]
async fn a_redis_restart_mid_job_loses_nothing() {
    let mut stack = Stack::start(
        StackOptions::default()
            .durable_redis()
            .upstream(&["--latency-ms", "100", "--embedding-dim", "384"])
            .service_env("chunking", "MILLRACE_CHUNK_SIZE", 45)
            .service_env("chunking", "MILLRACE_BATCH_SIZE", 2),
    )
    .await
    .unwrap();
    let job_id = stack.ingest("redis-restart-doc", &long_text("weir", 24)).await;
    stack.wait_until_progress(&job_id, 1).await;
    stack.redis.kill().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.redis.restart().unwrap();

    let job = stack.wait_for_job(&job_id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    let total = job["chunks"]["total"].as_u64().unwrap();
    assert_eq!(job["chunks"]["stored"].as_u64().unwrap(), total, "{job}");
    let indexes: Vec<i32> = stack.stored_chunks("redis-restart-doc").await.iter().map(|(_, i)| *i).collect();
    assert_eq!(indexes, (0..total as i32).collect::<Vec<_>>());
}
