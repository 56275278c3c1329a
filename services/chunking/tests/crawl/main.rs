#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The crawler at the service level: the chunking binary against a real Redis and the test
//! site of `millrace_testkit::site`, with the site's host and port on the fetch allowlist.
//! A run is created with `JobStore::create_run`, as the runs API does; the tests read what the
//! crawler made (jobs, `page_skipped` history entries, the run's counts), finish the jobs the
//! way the other stages would, and check that the run settles `done`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use millrace_common::telemetry::context;
use millrace_pipeline::{
    CrawlEntry, CrawlScope, CrawlSpec, HistoryEntry, JobStatus, JobStore, Keys, NewRun, RunState, RunStatus,
};
use millrace_testkit::{ChildProcess, RedisServer, SiteOptions, TestSite, free_port};

const PREFIX: &str = "crawltest";
const AGENT: &str = "MillraceTestBot/1.0 (+https://millrace.example/bot)";

struct Crawl {
    redis: RedisServer,
    site: TestSite,
    service: ChildProcess,
    /// More chunking services (the benchmark's replicas).
    more: Vec<ChildProcess>,
    store: JobStore,
}

/// Redis, the site and the chunking service, with `env` on top of the defaults.
fn start(options: SiteOptions, env: &[(&str, String)]) -> Crawl {
    start_replicas(options, env, 1)
}

fn start_replicas(options: SiteOptions, env: &[(&str, String)], replicas: usize) -> Crawl {
    let redis = RedisServer::start().unwrap();
    let site = TestSite::start_with(options).unwrap();
    let mut vars: BTreeMap<String, String> = [
        ("MILLRACE_REDIS_URL", redis.url.clone()),
        ("MILLRACE_HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
        ("MILLRACE_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
        ("MILLRACE_KEY_PREFIX", PREFIX.to_owned()),
        ("MILLRACE_CHUNK_TOKENIZER", "chars".to_owned()),
        ("MILLRACE_STORAGE_URL", format!("http://127.0.0.1:{}", free_port())),
        ("MILLRACE_FETCH_ALLOW_HOSTS", site.host_port()),
        ("MILLRACE_FETCH_TIMEOUT_MS", "1000".to_owned()),
        ("MILLRACE_FETCH_MAX_BYTES", "1048576".to_owned()),
        ("MILLRACE_FETCH_MAX_REDIRECTS", "3".to_owned()),
        ("MILLRACE_CRAWL_USER_AGENT", AGENT.to_owned()),
        ("MILLRACE_CRAWL_HOST_RPM", "100000".to_owned()),
        ("MILLRACE_CRAWL_CONCURRENCY", "4".to_owned()),
        ("MILLRACE_VISIBILITY_TIMEOUT_MS", "3000".to_owned()),
        ("MILLRACE_RECLAIM_INTERVAL_MS", "500".to_owned()),
        ("MILLRACE_BLOCK_MS", "200".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let spawn = |n: usize| {
        let mut vars = vars.clone();
        if n > 0 {
            vars.insert("MILLRACE_HTTP_ADDR".into(), format!("127.0.0.1:{}", free_port()));
            vars.insert("MILLRACE_GRPC_ADDR".into(), format!("127.0.0.1:{}", free_port()));
            vars.insert("MILLRACE_CONSUMER_NAME".into(), format!("chunking-{n}"));
        }
        ChildProcess::spawn(env!("CARGO_BIN_EXE_millrace-chunking"), std::iter::empty::<&str>(), vars).unwrap()
    };
    let service = spawn(0);
    let more = (1..replicas).map(spawn).collect();
    let pool = millrace_common::redis_conn::pool(redis.url.as_str(), 4).unwrap();
    let store = JobStore::new(pool, Keys::new(PREFIX), Duration::from_secs(3600));
    Crawl { redis, site, service, more, store }
}

fn spec(site: &TestSite, max_pages: u32, max_depth: u32) -> CrawlSpec {
    CrawlSpec {
        url: site.url("/"),
        max_pages,
        max_depth,
        scope: CrawlScope::Host,
        include: Vec::new(),
        exclude: Vec::new(),
        sitemap: true,
    }
}

impl Crawl {
    async fn create_run(&self, run_id: &str, spec: CrawlSpec) {
        let run = NewRun {
            run_id: run_id.to_owned(),
            tenant: "acme".into(),
            collection: "web".into(),
            items: 0,
            crawl: Some(spec),
        };
        self.store.create_run(&run).await.unwrap();
    }

    async fn state(&self, run_id: &str) -> RunState {
        self.store.run_state(run_id).await.unwrap().unwrap()
    }

    /// Waits until the crawler has no page of the run left (`pending` 0).
    async fn crawled(&self, run_id: &str, limit: Duration) -> RunState {
        let started = Instant::now();
        loop {
            let state = self.state(run_id).await;
            if state.pending == 0 {
                return state;
            }
            assert!(
                started.elapsed() < limit,
                "the crawl is not done after {limit:?}: {state:?}\n{}",
                self.service.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn history(&self) -> Vec<HistoryEntry> {
        let mut conn = self.redis_conn().await;
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(Keys::new(PREFIX).history_stream())
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        entries
            .ids
            .iter()
            .map(|entry| {
                let fields = entry
                    .map
                    .iter()
                    .map(|(k, v)| (k.clone(), redis::from_redis_value::<String>(v.clone()).unwrap()))
                    .collect();
                HistoryEntry::from_fields(&fields).unwrap()
            })
            .collect()
    }

    async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// The run's jobs: source path → (job id, http status); every page at most once.
    async fn jobs(&self, run_id: &str) -> BTreeMap<String, (String, Option<u16>)> {
        let mut jobs = BTreeMap::new();
        for entry in self.history().await {
            if let HistoryEntry::JobQueued { job_id, run_id: of, .. } = entry
                && of == run_id
            {
                let job = self.store.get(&job_id).await.unwrap().unwrap();
                assert_eq!(job.run_id.as_deref(), Some(run_id));
                let path = self.path(&job.source);
                let previous = jobs.insert(path.clone(), (job_id, job.http_status));
                assert!(previous.is_none(), "two jobs for {path}");
            }
        }
        jobs
    }

    /// Pages skipped: path → reason.
    async fn skipped(&self, run_id: &str) -> BTreeMap<String, (String, Option<u16>)> {
        let mut skipped = BTreeMap::new();
        for entry in self.history().await {
            if let HistoryEntry::PageSkipped { url, reason, http_status, run_id: of, .. } = entry
                && of == run_id
            {
                let path = self.path(&url);
                let previous = skipped.insert(path.clone(), (reason, http_status));
                assert!(previous.is_none(), "{path} skipped twice");
            }
        }
        skipped
    }

    fn path(&self, url: &str) -> String {
        let path = url.strip_prefix(self.site.origin()).unwrap_or(url);
        if path.is_empty() { "/".to_owned() } else { path.to_owned() }
    }

    /// Finishes every job of the run (as the last stage would) and waits for the run to be done.
    async fn finish_all(&self, run_id: &str, jobs: &BTreeMap<String, (String, Option<u16>)>) {
        for (job_id, _) in jobs.values() {
            self.store.finish(job_id, JobStatus::Completed, None).await.unwrap();
        }
        let started = Instant::now();
        loop {
            let state = self.state(run_id).await;
            if state.status == RunStatus::Done {
                assert_eq!((state.pending, state.open), (0, 0));
                assert!(state.finished_ms.is_some());
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the run did not settle: {state:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn code(reason: &str) -> &str {
    reason.split(':').next().unwrap_or_default()
}

/// What the whole site's crawl skips, and why (reason codes and HTTP statuses).
fn expected_skips(site: &TestSite, deep: bool) -> BTreeMap<String, (&'static str, Option<u16>)> {
    let mut expected: BTreeMap<String, (&'static str, Option<u16>)> = [
        ("/private/1", ("robots", None)),
        ("/private/2", ("robots", None)),
        ("/private/3", ("robots", None)),
        ("/loop/a", ("too_many_redirects", None)),
        ("/slow", ("timeout", None)),
        ("/missing/1", ("status", Some(404))),
        ("/big", ("too_large", None)),
        ("/logo.png", ("content_type", Some(200))),
        ("/dup", ("canonical", Some(200))),
        ("/alias", ("canonical", Some(200))),
    ]
    .into_iter()
    .map(|(path, reason)| (path.to_owned(), reason))
    .collect();
    if deep {
        for s in 0..site.options().sections {
            expected.insert(format!("/missing/{s}"), ("status", Some(404)));
        }
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_site_crawl_takes_every_page_once_skips_the_rest_with_reasons_and_stays_polite() {
    // 40 requests per 2 s window (+ 100 ms margin) on the site's host.
    let window = Duration::from_millis(2000);
    let rpm = 40;
    let crawl = start(
        SiteOptions::default(),
        &[
            ("MILLRACE_CRAWL_HOST_RPM", rpm.to_string()),
            ("MILLRACE_CRAWL_LIMIT_WINDOW_MS", window.as_millis().to_string()),
            ("MILLRACE_CRAWL_LIMIT_MARGIN_MS", "100".to_owned()),
        ],
    );
    let started = Instant::now();
    crawl.create_run("whole", spec(&crawl.site, 10_000, 3)).await;
    let state = crawl.crawled("whole", Duration::from_secs(120)).await;
    let elapsed = started.elapsed();

    let jobs = crawl.jobs("whole").await;
    let taken: BTreeSet<String> = jobs.keys().cloned().collect();
    let expected: BTreeSet<String> = crawl.site.html_pages().into_iter().collect();
    assert_eq!(taken, expected, "the pages taken");
    assert_eq!(state.pages, expected.len() as u64, "the run's pages count");
    assert!(jobs.values().all(|(_, status)| *status == Some(200)), "every job carries its fetch's status");
    let job = crawl.store.get(&jobs["/section/3/page/7"].0).await.unwrap().unwrap();
    assert_eq!(job.document_id, crawl.site.url("/section/3/page/7"));
    assert_eq!(job.content_type, "text/html");
    assert_eq!((job.tenant_id.as_str(), job.collection.as_str()), ("acme", "web"));
    assert!(job.url.is_empty(), "the crawler fetched it: chunking does not fetch it again");
    assert!(crawl.store.content(&job.job_id).await.unwrap().unwrap().starts_with(b"<!doctype html>"));

    let skipped = crawl.skipped("whole").await;
    let reasons: BTreeMap<String, (&str, Option<u16>)> =
        skipped.iter().map(|(path, (reason, status))| (path.clone(), (code(reason), *status))).collect();
    assert_eq!(reasons, expected_skips(&crawl.site, true), "the pages skipped: {skipped:#?}");
    assert!(skipped["/alias"].0.contains("/canonical-target"), "{}", skipped["/alias"].0);

    // Never fetched: the disallowed section, the other host. robots.txt once for the run.
    for path in ["/private/1", "/private/2", "/private/3"] {
        assert_eq!(crawl.site.hits(path), 0, "{path}");
    }
    assert_eq!(crawl.site.hits("/robots.txt"), 1);
    assert_eq!(crawl.site.hits("/sitemap.xml"), 1);
    // Every page fetched once (the loop and /moved are redirect hops, the rest one request each).
    for path in crawl.site.html_pages().iter().filter(|p| *p != "/moved-here") {
        assert_eq!(crawl.site.hits(path), 1, "{path}");
    }
    let requests = crawl.site.requests();
    assert!(requests.iter().all(|r| r.user_agent == AGENT), "the crawler's user agent on every request");

    // Politeness: never more than the limit in any window, and close to it overall.
    let busiest = crawl.site.max_in_window(window);
    assert!(busiest <= rpm, "{busiest} requests within {window:?}, limit {rpm}");
    let windows = requests.len().div_ceil(rpm) - 1;
    assert!(elapsed >= window * windows as u32, "{} requests in {elapsed:?}", requests.len());
    assert!(busiest >= rpm * 9 / 10, "the limit is used: {busiest} of {rpm}");

    assert_eq!(crawl.state("whole").await.status, RunStatus::Running, "jobs still open");
    crawl.finish_all("whole", &jobs).await;
    let done = crawl
        .history()
        .await
        .into_iter()
        .filter(|e| matches!(e, HistoryEntry::RunDone { run_id, .. } if run_id == "whole"))
        .count();
    assert_eq!(done, 1, "run_done recorded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_page_limits_scope_and_filters_bound_the_crawl() {
    let crawl = start(SiteOptions { slow: Duration::from_millis(1), ..SiteOptions::default() }, &[]);

    // max_depth 1: home, sections and the links of home; the sitemap's pages at depth 0.
    crawl.create_run("shallow", spec(&crawl.site, 10_000, 1)).await;
    crawl.crawled("shallow", Duration::from_secs(60)).await;
    let taken: BTreeSet<String> = crawl.jobs("shallow").await.into_keys().collect();
    let mut expected: BTreeSet<String> = ["/", "/canonical-target", "/moved-here", "/slow", "/section/0/page/0"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    expected.extend((0..12).map(|s| format!("/section/{s}")));
    expected.extend((0..3).map(|k| format!("/sitemap-only/{k}")));
    // The slow page is fast enough here; /dup's canonical page comes at /dup's depth.
    assert_eq!(taken, expected);
    let skipped: BTreeSet<String> = crawl.skipped("shallow").await.into_keys().collect();
    let mut expected_skipped: BTreeSet<String> = expected_skips(&crawl.site, false).into_keys().collect();
    expected_skipped.remove("/slow");
    assert_eq!(skipped, expected_skipped);

    // max_pages 25: exactly 25 jobs, every one a page of the site; the rest skipped as such
    // or never queued.
    crawl.create_run("limited", spec(&crawl.site, 25, 3)).await;
    let state = crawl.crawled("limited", Duration::from_secs(60)).await;
    let jobs = crawl.jobs("limited").await;
    assert_eq!(jobs.len(), 25);
    assert_eq!(state.pages, 25);
    let mut pages: BTreeSet<String> = crawl.site.html_pages().into_iter().collect();
    pages.insert("/slow".to_owned());
    assert!(jobs.keys().all(|path| pages.contains(path)), "{jobs:?}");
    assert!(crawl.skipped("limited").await.values().any(|(reason, _)| code(reason) == "max_pages"));
    crawl.finish_all("limited", &jobs).await;

    // Prefix scope, an include and an exclude pattern, no sitemap.
    let mut section = spec(&crawl.site, 10_000, 3);
    section.url = crawl.site.url("/section/2");
    section.scope = CrawlScope::Prefix;
    section.sitemap = false;
    section.include = vec!["^/section/2/page/1".into()];
    section.exclude = vec!["^/section/2/page/1[5-9]".into()];
    crawl.create_run("prefix", section).await;
    crawl.crawled("prefix", Duration::from_secs(60)).await;
    let taken: BTreeSet<String> = crawl.jobs("prefix").await.into_keys().collect();
    let mut expected: BTreeSet<String> = ["/section/2".to_owned()].into();
    expected.extend(["1", "10", "11", "12", "13", "14"].map(|p| format!("/section/2/page/{p}")));
    assert_eq!(taken, expected);
    assert!(crawl.skipped("prefix").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_crawler_makes_no_second_job_and_a_redelivered_page_counts_once() {
    let mut crawl = start(
        SiteOptions { sections: 4, pages_per_section: 15, slow: Duration::from_millis(1), ..SiteOptions::default() },
        &[("MILLRACE_CRAWL_HOST_RPM", "20".to_owned()), ("MILLRACE_CRAWL_LIMIT_WINDOW_MS", "2000".to_owned())],
    );
    crawl.create_run("killed", spec(&crawl.site, 10_000, 3)).await;
    // Kill it mid-crawl, twice, with entries in flight; the restarted service reclaims them.
    for _ in 0..2 {
        let started = Instant::now();
        while crawl.store.run_state("killed").await.unwrap().unwrap().pages < 15
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        crawl.service.kill().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        crawl.service.restart().unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let state = crawl.crawled("killed", Duration::from_secs(120)).await;
    let jobs = crawl.jobs("killed").await; // asserts one job per page
    let mut expected: BTreeSet<String> = crawl.site.html_pages().into_iter().collect();
    expected.insert("/slow".to_owned());
    assert_eq!(jobs.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(state.pages, expected.len() as u64);
    assert_eq!(state.open, expected.len() as i64, "each job counted open once");
    crawl.skipped("killed").await; // asserts each skipped page recorded once

    // Entries added again for pages already done change nothing.
    let mut conn = crawl.redis_conn().await;
    for path in ["/", "/section/1", "/section/1/page/3", "/private/1"] {
        let entry = CrawlEntry {
            run_id: "killed".into(),
            tenant: "acme".into(),
            collection: "web".into(),
            url: crawl.site.url(path),
            depth: 1,
        };
        let mut add = redis::cmd("XADD");
        add.arg(Keys::new(PREFIX).crawl_stream()).arg("*");
        for (name, value) in entry.to_fields(context::traceparent().as_deref()) {
            add.arg(name).arg(value);
        }
        let _: String = add.query_async(&mut conn).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = crawl.state("killed").await;
    assert_eq!((after.pending, after.pages), (0, state.pages));
    assert_eq!(crawl.jobs("killed").await.len(), jobs.len());
    crawl.finish_all("killed", &jobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_crawl_takes_no_more_pages_and_without_the_allowlist_nothing_is_fetched() {
    let crawl = start(
        SiteOptions::default(),
        &[("MILLRACE_CRAWL_HOST_RPM", "60".to_owned()), ("MILLRACE_CRAWL_LIMIT_WINDOW_MS", "6000".to_owned())],
    );
    crawl.create_run("cancelled", spec(&crawl.site, 10_000, 3)).await;
    let started = Instant::now();
    while crawl.state("cancelled").await.pages < 5 {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(crawl.store.cancel_run("cancelled").await.unwrap());
    let state = crawl.crawled("cancelled", Duration::from_secs(60)).await;
    assert_eq!(state.status, RunStatus::Cancelled);
    assert!(state.pages < 30, "{}", state.pages);
    let requests = crawl.site.requests().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(crawl.site.requests().len(), requests, "nothing fetched after the crawl drained");

    // Another site whose port is not on the allowlist: the start page is refused by the SSRF
    // guard, and the run ends with it skipped.
    let other = TestSite::start().unwrap();
    crawl.create_run("refused", spec(&other, 10, 3)).await;
    crawl.crawled("refused", Duration::from_secs(30)).await;
    let skipped = crawl.skipped("refused").await;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    let (reason, _) = skipped.values().next().unwrap();
    assert!(reason.starts_with("refused"), "{reason}");
    assert_eq!(other.requests().len(), 0);
    assert_eq!(crawl.state("refused").await.status, RunStatus::Done);
}

/// The crawl benchmark (`BENCH=crawl make bench`, through scripts/bench_crawl.py): a large site
/// crawled at a per-host limit by `CRAWL_BENCH_REPLICAS` chunking services; prints one line
/// `CRAWL_BENCH {json}` with what the site counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark of several minutes: scripts/bench_crawl.py runs it"]
async fn crawl_bench() {
    let number = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (sections, per_section) = (number("CRAWL_BENCH_SECTIONS", 50), number("CRAWL_BENCH_PAGES_PER_SECTION", 100));
    let (rpm, replicas) = (number("CRAWL_BENCH_RPM", 1200), number("CRAWL_BENCH_REPLICAS", 2));
    let window_ms = number("CRAWL_BENCH_WINDOW_MS", 60_000);
    let options = SiteOptions {
        sections,
        pages_per_section: per_section,
        slow: Duration::from_millis(100),
        ..SiteOptions::default()
    };
    let crawl = start_replicas(
        options,
        &[
            ("MILLRACE_CRAWL_HOST_RPM", rpm.to_string()),
            ("MILLRACE_CRAWL_LIMIT_WINDOW_MS", window_ms.to_string()),
            ("MILLRACE_CRAWL_CONCURRENCY", "8".to_owned()),
            ("MILLRACE_CRAWL_REPLICAS", replicas.to_string()),
            // The chunking stage parses the pages taken meanwhile: one at a time per replica.
            ("MILLRACE_CONCURRENCY", "1".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ],
        replicas,
    );
    let started = Instant::now();
    crawl.create_run("bench", spec(&crawl.site, 1_000_000, 3)).await;
    let state = crawl.crawled("bench", Duration::from_secs(3600)).await;
    let elapsed = started.elapsed();
    let requests = crawl.site.requests();
    let window = Duration::from_millis(window_ms as u64);
    let first = requests.first().map(|r| r.at).unwrap_or_default();
    let last = requests.last().map(|r| r.at).unwrap_or_default();
    // Requests in each whole fixed window from the first request.
    let whole = ((last - first).as_millis() / window.as_millis()) as usize;
    let per_window: Vec<usize> = (0..whole)
        .map(|k| {
            let (from, to) = (first + window * k as u32, first + window * (k as u32 + 1));
            requests.iter().filter(|r| r.at >= from && r.at < to).count()
        })
        .collect();
    let report = serde_json::json!({
        "html_pages": crawl.site.html_pages().len() + 1,
        "pages_taken": state.pages,
        "requests": requests.len(),
        "elapsed_s": elapsed.as_secs_f64(),
        "crawl_span_s": (last - first).as_secs_f64(),
        "rpm": rpm,
        "window_ms": window_ms,
        "replicas": replicas,
        "max_in_any_window": crawl.site.max_in_window(window),
        "per_whole_window": per_window,
        "pages_per_s": state.pages as f64 / elapsed.as_secs_f64(),
    });
    println!("CRAWL_BENCH {report}");
    assert!(crawl.site.max_in_window(window) <= rpm);
    // Every HTML page, and /slow (100 ms here, under the fetch time limit).
    assert_eq!(state.pages as usize, crawl.site.html_pages().len() + 1);
    drop(crawl.more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_job_records_the_http_status_of_its_fetch() {
    let crawl = start(SiteOptions::default(), &[]);
    let submit = |path: &str| {
        let url = crawl.site.url(path);
        millrace_pipeline::NewJob {
            tenant_id: "acme".into(),
            collection: "web".into(),
            document_id: url.clone(),
            content_type: String::new(),
            source: url.clone(),
            metadata: serde_json::json!({}),
            content: Vec::new(),
            content_hash: String::new(),
            url: Some(url),
            options: Default::default(),
            fingerprint: String::new(),
            run_id: None,
            http_status: None,
        }
    };
    let found = crawl.store.create(submit("/section/1")).await.unwrap();
    let missing = crawl.store.create(submit("/missing/7")).await.unwrap();
    let started = Instant::now();
    loop {
        let found = crawl.store.get(&found.job_id).await.unwrap().unwrap();
        let missing = crawl.store.get(&missing.job_id).await.unwrap().unwrap();
        if found.http_status.is_some() && missing.status == JobStatus::Failed {
            assert_eq!(found.http_status, Some(200));
            assert_eq!(missing.http_status, Some(404));
            assert!(missing.error.as_ref().is_some_and(|e| e.message.contains("404")), "{:?}", missing.error);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{found:?}\n{missing:?}\n{}", crawl.service.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
