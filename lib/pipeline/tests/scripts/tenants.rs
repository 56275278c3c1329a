//! The tenant travels with the job: its record, every entry the scripts write (copied from the
//! record, whatever the caller of a script says), its tenant's job index and its tenant's backlog,
//! which create, `FINISH` and a reopening retry keep exactly.

use std::collections::HashMap;

use millrace_pipeline::{BatchRef, EntryRef, JobStatus, NewJob, Stage};
use redis::AsyncCommands;

use super::{STARTED_MS, batch, chunk, entry, halves, new_job, one_chunk, store};

fn of_tenant(tenant: &str, document_id: &str, content: &str) -> NewJob {
    NewJob { tenant_id: tenant.into(), collection: format!("{tenant}-docs"), ..new_job(document_id, content) }
}

#[tokio::test]
async fn each_tenant_lists_only_its_own_jobs() {
    let store = store();
    let a1 = store.create(of_tenant("a", "doc", "one")).await.unwrap();
    let b1 = store.create(of_tenant("b", "doc", "two")).await.unwrap();
    let a2 = store.create(of_tenant("a", "other", "three")).await.unwrap();
    let ids = |jobs: Vec<millrace_pipeline::Job>| jobs.into_iter().map(|job| job.job_id).collect::<Vec<_>>();
    assert_eq!(ids(store.list("a", None, 10).await.unwrap()), [a2.job_id.clone(), a1.job_id.clone()]);
    assert_eq!(ids(store.list("b", None, 10).await.unwrap()), [b1.job_id]);
    assert!(store.list("c", None, 10).await.unwrap().is_empty());
    // The same document id in two tenants is two documents, each with its own versions.
    assert_eq!((a1.version, b1.version), (1, 1));
    let job = store.get(&a2.job_id).await.unwrap().unwrap();
    assert_eq!((job.tenant_id.as_str(), job.collection.as_str()), ("a", "a-docs"));
}

#[tokio::test]
async fn the_tenant_backlog_counts_unfinished_jobs_once_each() {
    let store = store();
    let first = store.create(of_tenant("a", "d1", "x")).await.unwrap();
    let second = store.create(of_tenant("a", "d2", "y")).await.unwrap();
    store.create(of_tenant("b", "d1", "z")).await.unwrap();
    let backlog = |tenant: &'static str| {
        let store = store.clone();
        async move { store.backlog(tenant).await.unwrap().tenant_jobs }
    };
    assert_eq!((backlog("a").await, backlog("b").await, backlog("c").await), (2, 1, 0));
    assert!(store.finish(&first.job_id, JobStatus::Completed, None).await.unwrap());
    assert!(!store.finish(&first.job_id, JobStatus::Failed, None).await.unwrap());
    assert_eq!(backlog("a").await, 1, "a repeated finish takes nothing more out");
    store.cancel(&second.job_id).await.unwrap();
    assert_eq!((backlog("a").await, backlog("b").await), (0, 1));
    assert_eq!(store.tenant_backlogs().await.unwrap(), [("b".to_owned(), 1)]);

    // A job recorded before the per-tenant counts began (no `in_backlog` flag) takes nothing out.
    let legacy = store.create(of_tenant("a", "d3", "legacy")).await.unwrap();
    let mut conn = store.pool().get().await.unwrap();
    let _: () = conn.hdel(store.keys().job(&legacy.job_id), "in_backlog").await.unwrap();
    let _: () = conn.hincr(store.keys().tenant_backlog(), "a", -1).await.unwrap();
    assert!(store.finish(&legacy.job_id, JobStatus::Completed, None).await.unwrap());
    assert_eq!(backlog("a").await, 0);
}

#[tokio::test]
async fn a_reopened_job_counts_in_its_tenants_backlog_again() {
    let store = store();
    let job = store.create(of_tenant("a", "doc", "fails once")).await.unwrap();
    let job_entry = EntryRef { tenant: "a".into(), collection: "a-docs".into(), ..entry(&job.job_id, 0) };
    assert!(store.fail(&job_entry, Stage::Chunking, "it broke").await.unwrap());
    assert_eq!(store.backlog("a").await.unwrap().tenant_jobs, 0);
    let mut conn = store.pool().get().await.unwrap();
    let mut fields = vec![
        ("source_stream", store.keys().stream(Stage::Chunking)),
        ("source_id", "1-0".to_owned()),
        ("deliveries", "5".to_owned()),
        ("error", "it broke".to_owned()),
    ];
    fields.extend(job_entry.to_fields(None));
    let id: String = conn.xadd(store.keys().dead_letters(Stage::Chunking), "*", &fields).await.unwrap();
    let listed = store.dead_letters(Stage::Chunking, 10).await.unwrap();
    assert_eq!(listed.entries[0].tenant_id, "a", "a dead letter shows its job's tenant");
    store.retry_dead_letters(Stage::Chunking, Some(&[id])).await.unwrap();
    assert_eq!(store.backlog("a").await.unwrap().tenant_jobs, 1);
    assert!(store.finish(&job.job_id, JobStatus::Completed, None).await.unwrap());
    assert_eq!(store.backlog("a").await.unwrap().tenant_jobs, 0);
}

/// The scripts copy the tenant and collection from the job's record into every entry they add;
/// the entry a stage hands them (which names its own) does not decide.
#[tokio::test]
async fn entries_carry_the_records_tenant_whatever_the_caller_says() {
    let store = store();
    let job = store.create(of_tenant("a", "doc", "two batches")).await.unwrap();
    let mut conn = store.pool().get().await.unwrap();
    let chunking: redis::streams::StreamRangeReply =
        conn.xrange_all(store.keys().stream(Stage::Chunking)).await.unwrap();
    let created = decode(&chunking.ids[0]);
    assert_eq!(EntryRef::from_fields(&created).unwrap().tenant, "a");
    assert_eq!(EntryRef::from_fields(&created).unwrap().collection, "a-docs");

    // The chunking stage's entry claims another tenant: the batch entries still name the record's.
    chunk(&store, &job.job_id, 1).await;
    halves(&store, &BatchRef { tenant: "intruder".into(), ..batch(&job.job_id, 0, 0) }).await;
    for stage in [Stage::Metadata, Stage::Embeddings, Stage::Storage] {
        let written: redis::streams::StreamRangeReply = conn.xrange_all(store.keys().stream(stage)).await.unwrap();
        let entry = BatchRef::from_fields(&decode(&written.ids[0])).unwrap();
        assert_eq!((entry.tenant.as_str(), entry.collection.as_str()), ("a", "a-docs"), "{stage:?}");
    }
    let job = store.get(&job.job_id).await.unwrap().unwrap();
    assert!(BatchRef { tenant: "intruder".into(), ..batch(&job.job_id, 0, 0) }.foreign(&job));
    assert!(!store.record_stored(&batch(&job.job_id, 0, 0), STARTED_MS, one_chunk()).await.unwrap().stale);
}

fn decode(entry: &redis::streams::StreamId) -> HashMap<String, String> {
    entry.map.iter().map(|(name, value)| (name.clone(), redis::from_redis_value_ref(value).unwrap())).collect()
}
