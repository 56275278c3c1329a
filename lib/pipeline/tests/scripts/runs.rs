//! A run's counts and its history: every job is recorded in the history stream when it is
//! created and when it finishes, and a run is done exactly once, when nothing is left to submit
//! and none of its jobs is unfinished.

use millrace_pipeline::{CrawlEntry, CrawlSpec, HistoryEntry, JobStatus, JobStore, NewJob, NewRun, RunStatus};

use super::{entries, new_job, store};

async fn history(store: &JobStore) -> Vec<HistoryEntry> {
    let entries = entries(store, &store.keys().history_stream()).await;
    entries.iter().map(|fields| HistoryEntry::from_fields(fields).unwrap()).collect()
}

fn in_run(run_id: &str, document_id: &str) -> NewJob {
    NewJob { run_id: Some(run_id.into()), ..new_job(document_id, document_id) }
}

#[tokio::test]
async fn an_item_run_is_done_once_when_every_item_is_submitted_and_finished() {
    let store = store();
    let run = NewRun { run_id: "r1".into(), tenant: "t".into(), collection: "default".into(), items: 2, crawl: None };
    store.create_run(&run).await.unwrap();
    let first = store.create(in_run("r1", "a")).await.unwrap();
    assert_eq!(store.run_progress("r1", -1).await.unwrap(), Some(false));
    // The first job finishes while the second item is still to submit: not done.
    assert!(store.finish(&first.job_id, JobStatus::Completed, None).await.unwrap());
    let state = store.run_state("r1").await.unwrap().unwrap();
    assert_eq!((state.status, state.pending, state.open), (RunStatus::Running, 1, 0));
    let second = store.create(in_run("r1", "b")).await.unwrap();
    assert_eq!(store.run_progress("r1", -1).await.unwrap(), Some(false));
    assert!(store.finish(&second.job_id, JobStatus::Failed, Some(("chunking", "boom"))).await.unwrap());
    let state = store.run_state("r1").await.unwrap().unwrap();
    assert_eq!((state.status, state.pending, state.open), (RunStatus::Done, 0, 0));
    assert!(state.finished_ms.is_some());
    // Nothing settles it twice.
    assert_eq!(store.run_progress("r1", 0).await.unwrap(), Some(false));
    let job = store.get(&second.job_id).await.unwrap().unwrap();
    assert_eq!((job.run_id.as_deref(), job.attempts), (Some("r1"), 1));

    let (t, r) = ("t".to_owned(), "r1".to_owned());
    assert_eq!(
        history(&store).await,
        [
            HistoryEntry::JobQueued { job_id: first.job_id.clone(), tenant: t.clone(), run_id: r.clone() },
            HistoryEntry::JobFinished { job_id: first.job_id, tenant: t.clone(), run_id: r.clone() },
            HistoryEntry::JobQueued { job_id: second.job_id.clone(), tenant: t.clone(), run_id: r.clone() },
            HistoryEntry::JobFinished { job_id: second.job_id, tenant: t.clone(), run_id: r.clone() },
            HistoryEntry::RunDone { run_id: r, tenant: t },
        ]
    );
    assert_eq!(store.run_progress("unknown", -1).await.unwrap(), None);
}

#[tokio::test]
async fn a_crawl_starts_with_its_start_page_pending_and_a_cancelled_run_is_never_done() {
    let store = store();
    let spec: CrawlSpec = serde_json::from_value(serde_json::json!({"url": "http://site.example/"})).unwrap();
    let run = NewRun { run_id: "c1".into(), tenant: "t".into(), collection: "web".into(), items: 0, crawl: Some(spec) };
    store.create_run(&run).await.unwrap();
    let seed = CrawlEntry::from_fields(&entries(&store, &store.keys().crawl_stream()).await[0]).unwrap();
    assert_eq!((seed.url.as_str(), seed.depth, seed.collection.as_str()), ("http://site.example/", 0, "web"));
    let state = store.run_state("c1").await.unwrap().unwrap();
    assert_eq!((state.pending, state.crawl.unwrap().max_pages), (1, 100));

    // The start page finds two links (+2), becomes a job, and is done (−1).
    store.run_progress("c1", 2).await.unwrap();
    let page = store.create(in_run("c1", "page")).await.unwrap();
    store.run_progress("c1", -1).await.unwrap();
    assert!(store.cancel_run("c1").await.unwrap());
    assert!(!store.cancel_run("c1").await.unwrap(), "already cancelled");
    store.run_progress("c1", -2).await.unwrap();
    store.finish(&page.job_id, JobStatus::Completed, None).await.unwrap();
    let state = store.run_state("c1").await.unwrap().unwrap();
    assert_eq!((state.status, state.pending, state.open), (RunStatus::Cancelled, 0, 0));
    assert!(!history(&store).await.iter().any(|entry| matches!(entry, HistoryEntry::RunDone { .. })));
}

#[tokio::test]
async fn a_dead_letter_retry_reopens_the_job_in_its_run_and_in_the_history() {
    let store = store();
    let run = NewRun { run_id: "r9".into(), tenant: "t".into(), collection: "default".into(), items: 1, crawl: None };
    store.create_run(&run).await.unwrap();
    let job = store.create(in_run("r9", "a")).await.unwrap();
    assert_eq!(store.run_progress("r9", -1).await.unwrap(), Some(false));
    let job_entry = super::entry(&job.job_id, 0);
    assert!(store.fail(&job_entry, millrace_pipeline::Stage::Chunking, "it broke").await.unwrap());
    let state = store.run_state("r9").await.unwrap().unwrap();
    assert_eq!((state.status, state.open), (RunStatus::Done, 0));
    let before = store.get(&job.job_id).await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let mut conn = store.pool().get().await.unwrap();
    let mut add = redis::cmd("XADD");
    add.arg(store.keys().dead_letters(millrace_pipeline::Stage::Chunking)).arg("*");
    for (name, value) in job_entry.to_fields(None) {
        add.arg(name).arg(value);
    }
    let id: String = add.arg("source_stream").arg("chunking").query_async(&mut conn).await.unwrap();
    let report =
        store.retry_dead_letters(millrace_pipeline::Stage::Chunking, Some(std::slice::from_ref(&id))).await.unwrap();
    assert_eq!(report.retried.len(), 1, "{report:?}");

    let after = store.get(&job.job_id).await.unwrap().unwrap();
    assert_eq!((after.status, after.attempts), (JobStatus::Queued, 2));
    assert!(
        after.last_attempt_at > before.last_attempt_at,
        "{} then {}",
        before.last_attempt_at,
        after.last_attempt_at
    );
    assert_eq!(store.run_state("r9").await.unwrap().unwrap().open, 1);
    let queued: Vec<HistoryEntry> = history(&store)
        .await
        .into_iter()
        .filter(|entry| matches!(entry, HistoryEntry::JobQueued { job_id, .. } if *job_id == job.job_id))
        .collect();
    assert_eq!(queued.len(), 2, "created, then reopened");
    assert_eq!(
        queued[1],
        HistoryEntry::JobQueued { job_id: job.job_id.clone(), tenant: "t".into(), run_id: "r9".into() }
    );

    // A job of no run is recorded too, and touches no run.
    let lone = store.create(new_job("lone", "lone")).await.unwrap();
    let lone_entry = super::entry(&lone.job_id, 0);
    assert!(store.fail(&lone_entry, millrace_pipeline::Stage::Chunking, "it broke").await.unwrap());
    let mut add = redis::cmd("XADD");
    add.arg(store.keys().dead_letters(millrace_pipeline::Stage::Chunking)).arg("*");
    for (name, value) in lone_entry.to_fields(None) {
        add.arg(name).arg(value);
    }
    let id: String = add.arg("source_stream").arg("chunking").query_async(&mut conn).await.unwrap();
    let report =
        store.retry_dead_letters(millrace_pipeline::Stage::Chunking, Some(std::slice::from_ref(&id))).await.unwrap();
    assert_eq!(report.retried.len(), 1, "{report:?}");
    let last = history(&store).await.pop().unwrap();
    assert_eq!(
        last,
        HistoryEntry::JobQueued { job_id: lone.job_id, tenant: new_job("x", "x").tenant_id, run_id: String::new() }
    );
}

#[tokio::test]
async fn get_many_reads_jobs_in_the_order_asked_with_none_for_the_missing() {
    let store = store();
    let a = store.create(new_job("many-a", "a")).await.unwrap();
    let b = store.create(new_job("many-b", "b")).await.unwrap();
    let asked = [b.job_id.clone(), "no-such-job".to_owned(), a.job_id.clone()];
    let got = store.get_many(&asked).await.unwrap();
    let ids: Vec<Option<&str>> = got.iter().map(|job| job.as_ref().map(|job| job.job_id.as_str())).collect();
    assert_eq!(ids, [Some(b.job_id.as_str()), None, Some(a.job_id.as_str())]);
    assert!(store.get_many(&[]).await.unwrap().is_empty());
    // The few fields a page of items shows, alike.
    store.finish(&a.job_id, JobStatus::Completed, None).await.unwrap();
    let live = store.live_many(&asked).await.unwrap();
    let statuses: Vec<Option<JobStatus>> = live.iter().map(|job| job.as_ref().map(|job| job.status)).collect();
    assert_eq!(statuses, [Some(JobStatus::Queued), None, Some(JobStatus::Completed)]);
    let b_live = live[0].as_ref().unwrap();
    assert_eq!((b_live.attempts, b_live.last_attempt_at.as_str()), (b.attempts, b.last_attempt_at.as_str()));
}
