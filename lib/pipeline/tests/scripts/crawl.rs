//! The crawler's steps on the job store: a page's job made once (its marker in the job's
//! transaction, under `max_pages` even when pages are taken at once), and a page done once
//! (new links counted before they are queued, a skipped page recorded, the run settled).

use std::collections::BTreeSet;

use millrace_pipeline::{
    CrawlEntry, CrawlSpec, HistoryEntry, JobStatus, JobStore, NewJob, NewRun, PageDone, PageJob, PageOutcome, RunStatus,
};
use redis::AsyncCommands;

use super::{entries, new_job, store};

async fn crawl_run(store: &JobStore, run_id: &str, max_pages: u32) {
    let crawl: CrawlSpec =
        serde_json::from_value(serde_json::json!({"url": "http://s.example/", "max_pages": max_pages})).unwrap();
    let run =
        NewRun { run_id: run_id.into(), tenant: "t".into(), collection: "web".into(), items: 0, crawl: Some(crawl) };
    store.create_run(&run).await.unwrap();
}

fn page(run_id: &str, url: &str) -> NewJob {
    NewJob { run_id: Some(run_id.into()), http_status: Some(200), ..new_job(url, url) }
}

fn entry(run_id: &str, url: &str, depth: u32) -> CrawlEntry {
    CrawlEntry { run_id: run_id.into(), tenant: "t".into(), collection: "web".into(), url: url.into(), depth }
}

async fn crawl_entries(store: &JobStore) -> Vec<(String, String)> {
    let entries = entries(store, &store.keys().crawl_stream()).await;
    entries
        .iter()
        .map(|fields| {
            let entry = CrawlEntry::from_fields(fields).unwrap();
            (entry.url, entry.depth.to_string())
        })
        .collect()
}

#[tokio::test]
async fn a_page_gets_one_job_and_the_run_never_more_than_max_pages() {
    let store = store();
    crawl_run(&store, "c1", 3).await;
    let PageJob::Created(job) = store.create_page_job("c1", "http://s.example/a", 3, page("c1", "a")).await.unwrap()
    else {
        panic!("a new page makes a job");
    };
    assert_eq!((job.run_id.as_deref(), job.http_status), (Some("c1"), Some(200)));
    // A redelivery finds the job.
    match store.create_page_job("c1", "http://s.example/a", 3, page("c1", "a")).await.unwrap() {
        PageJob::Existing(id) => assert_eq!(id, job.job_id),
        other => panic!("{other:?}"),
    }
    // Twenty pages taken at once: two more fit, no more.
    let takes = (0..20).map(|i| {
        let store = store.clone();
        async move {
            store
                .create_page_job("c1", &format!("http://s.example/p{i}"), 3, page("c1", &format!("p{i}")))
                .await
                .unwrap()
        }
    });
    let results = futures::future::join_all(takes).await;
    let created = results.iter().filter(|r| matches!(r, PageJob::Created(_))).count();
    let full = results.iter().filter(|r| matches!(r, PageJob::Full)).count();
    assert_eq!((created, full), (2, 18));
    let state = store.run_state("c1").await.unwrap().unwrap();
    assert_eq!((state.pages, state.open), (3, 3));
}

#[tokio::test]
async fn a_page_is_done_once_with_its_new_links_and_the_run_settles() {
    let store = store();
    crawl_run(&store, "c2", 100).await;
    let start = entry("c2", "http://s.example/", 0);
    store.mark_seen("c2", &["http://s.example/"]).await.unwrap();
    let PageJob::Created(home) =
        store.create_page_job("c2", "http://s.example/", 100, page("c2", "home")).await.unwrap()
    else {
        panic!()
    };
    let links = vec![
        ("http://s.example/a".to_owned(), 1),
        ("http://s.example/b".to_owned(), 1),
        ("http://s.example/".to_owned(), 1),
    ];
    let outcome = PageOutcome { skipped: None, http_status: Some(200), links: links.clone() };
    assert_eq!(store.page_done(&start, &outcome).await.unwrap(), PageDone::Counted(false));
    // Redelivered: nothing counted or queued again.
    assert_eq!(store.page_done(&start, &outcome).await.unwrap(), PageDone::AlreadyDone);
    assert!(store.page_is_done("c2", "http://s.example/").await.unwrap());
    let state = store.run_state("c2").await.unwrap().unwrap();
    assert_eq!((state.pending, state.open), (2, 1), "two new pages pending, the home page's job open");
    let queued: BTreeSet<(String, String)> = crawl_entries(&store).await.into_iter().collect();
    assert!(queued.contains(&("http://s.example/a".into(), "1".into())));
    assert!(queued.contains(&("http://s.example/b".into(), "1".into())));
    assert_eq!(queued.len(), 3, "the start page's entry and the two new links: {queued:?}");

    // /a links back to /b (seen): nothing new; /b is skipped with a 404.
    let a = PageOutcome { skipped: None, http_status: Some(200), links: vec![("http://s.example/b".into(), 2)] };
    assert_eq!(store.page_done(&entry("c2", "http://s.example/a", 1), &a).await.unwrap(), PageDone::Counted(false));
    let b = PageOutcome {
        skipped: Some("status: the server answered HTTP 404".into()),
        http_status: Some(404),
        links: vec![],
    };
    assert_eq!(store.page_done(&entry("c2", "http://s.example/b", 1), &b).await.unwrap(), PageDone::Counted(false));
    assert_eq!(store.page_done(&entry("c2", "http://s.example/b", 1), &b).await.unwrap(), PageDone::AlreadyDone);
    let state = store.run_state("c2").await.unwrap().unwrap();
    assert_eq!((state.status, state.pending, state.open), (RunStatus::Running, 0, 1));
    // The last job finishes: done.
    assert!(store.finish(&home.job_id, JobStatus::Completed, None).await.unwrap());
    assert_eq!(store.run_state("c2").await.unwrap().unwrap().status, RunStatus::Done);

    let entries = entries(&store, &store.keys().history_stream()).await;
    let history: Vec<HistoryEntry> = entries.iter().map(|fields| HistoryEntry::from_fields(fields).unwrap()).collect();
    let skipped: Vec<&HistoryEntry> =
        history.iter().filter(|e| matches!(e, HistoryEntry::PageSkipped { .. })).collect();
    assert_eq!(
        skipped,
        [&HistoryEntry::PageSkipped {
            run_id: "c2".into(),
            tenant: "t".into(),
            url: "http://s.example/b".into(),
            reason: "status: the server answered HTTP 404".into(),
            http_status: Some(404),
            depth: 1,
        }]
    );
    assert_eq!(history.iter().filter(|e| matches!(e, HistoryEntry::RunDone { .. })).count(), 1);
    // A run that is gone counts nothing.
    assert_eq!(store.page_done(&entry("gone", "http://s.example/", 0), &a).await.unwrap(), PageDone::UnknownRun);
}

#[tokio::test]
async fn a_cancelled_run_takes_no_new_links() {
    let store = store();
    crawl_run(&store, "c3", 100).await;
    assert!(store.cancel_run("c3").await.unwrap());
    let outcome = PageOutcome { skipped: None, http_status: None, links: vec![("http://s.example/x".into(), 1)] };
    assert_eq!(
        store.page_done(&entry("c3", "http://s.example/", 0), &outcome).await.unwrap(),
        PageDone::Counted(false)
    );
    let state = store.run_state("c3").await.unwrap().unwrap();
    assert_eq!((state.status, state.pending), (RunStatus::Cancelled, 0));
    assert_eq!(crawl_entries(&store).await.len(), 1, "only the start page's entry");
}

#[tokio::test]
async fn a_url_jobs_http_status_goes_on_its_record_only_if_it_exists() {
    let store = store();
    let job = store.create(new_job("doc", "text")).await.unwrap();
    store.set_http_status(&job.job_id, 203).await.unwrap();
    assert_eq!(store.get(&job.job_id).await.unwrap().unwrap().http_status, Some(203));
    store.set_http_status("no-such-job", 404).await.unwrap();
    let mut conn = store.pool().get().await.unwrap();
    let exists: bool = conn.exists(store.keys().job("no-such-job")).await.unwrap();
    assert!(!exists, "no stub record for a job that is gone");
}
