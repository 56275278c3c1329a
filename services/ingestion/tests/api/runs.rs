//! Runs through the API, against real Redis and PostgreSQL: the ingestion service's own
//! history worker and feeder run; the test plays the pipeline's stages by finishing jobs with
//! the same `JobStore` calls they make.

use std::time::Duration;

use millrace_pipeline::{JobStatus, JobStore, Keys};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PREFIX, TestApp, assert_error, client_with_key, spawn_app_with_keys};

fn store(app: &TestApp) -> JobStore {
    let pool = millrace_common::redis_conn::pool(&app.redis.url, 4).unwrap();
    JobStore::new(pool, Keys::new(PREFIX), Duration::from_secs(3600))
}

async fn create_run(app: &TestApp, body: &Value) -> String {
    let response = app.post_json("/v1/runs", body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    let run_id = body["run_id"].as_str().unwrap().to_owned();
    assert_eq!(body["status_url"], format!("/v1/runs/{run_id}"));
    run_id
}

/// Polls `GET path` until `done` holds of its JSON body (10 s at most).
async fn wait_for(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let response = app.get(path).await;
        if response.status() == StatusCode::OK {
            last = response.json().await.unwrap();
            if done(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never got there; last {last}");
}

async fn items(app: &TestApp, run_id: &str, query: &str) -> Value {
    let response = app.get(&format!("/v1/runs/{run_id}/items?{query}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_run_request_is_checked_before_anything_is_recorded() {
    let app = spawn_app_with_keys(&[]).await;
    let cases = [
        (json!({"name": "x"}), "`items` or `crawl` is required"),
        (json!({"items": [{"content": "a"}], "crawl": {"url": "https://docs.example.com/"}}), "not both"),
        (json!({"items": []}), "must not be empty"),
        (json!({"items": [{"content": "a"}, 3]}), "items[1]"),
        (json!({"crawl": {"url": "https://docs.example.com/", "depth": 2}}), "`crawl` is not valid"),
        (json!({"crawl": {"url": "ftp://docs.example.com/"}}), "crawl.url"),
        (json!({"crawl": {"url": "https://docs.example.com/", "max_pages": 0}}), "max_pages"),
        (json!({"crawl": {"url": "http://intranet.example.com/"}}), "refused"),
        (json!({"items": [{"content": "a"}], "collection": "a b"}), "collection"),
        (json!({"items": [{"content": "a"}], "webhook": {"url": "https://docs.example.com/h"}}), "webhook"),
        (
            json!({"items": [{"content": "a"}], "webhook": {"url": "http://intranet.example.com/h", "secret": "s"}}),
            "`webhook.url` is refused",
        ),
        (
            json!({"items": [{"content": "a"}], "webhook": {"url": "https://docs.example.com/h", "secret": "s", "events": ["job.started"]}}),
            "webhook",
        ),
    ];
    for (body, expected) in cases {
        let (code, message) =
            assert_error(app.post_json("/v1/runs", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(code, "invalid_argument", "{body}");
        assert!(message.contains(expected), "{body}: {message}");
    }
    let (_, message) =
        assert_error(app.post_json("/v1/runs", &json!({"items": [], "extra": 1})).await, StatusCode::BAD_REQUEST).await;
    assert!(message.contains("extra"), "{message}");
    let listed: Value = app.get("/v1/runs").await.json().await.unwrap();
    assert_eq!(listed["runs"], json!([]));
    assert_error(app.get("/v1/runs/run_unknown").await, StatusCode::NOT_FOUND).await;
    assert_error(app.get("/v1/runs?cursor=%25%25").await, StatusCode::UNPROCESSABLE_ENTITY).await;
}

#[tokio::test]
async fn a_crawl_run_starts_with_its_start_page_on_the_crawl_stream() {
    let app = spawn_app_with_keys(&[]).await;
    let run_id = create_run(
        &app,
        &json!({"name": "docs", "collection": "web", "crawl": {"url": "https://docs.example.com/start", "max_pages": 5}}),
    )
    .await;
    let run: Value = app.get(&format!("/v1/runs/{run_id}")).await.json().await.unwrap();
    assert_eq!((run["kind"].as_str(), run["status"].as_str()), (Some("crawl"), Some("running")));
    assert_eq!(run["crawl"]["max_pages"], 5);
    assert_eq!(run["crawl"]["max_depth"], 3);
    assert_eq!((run["name"].as_str(), run["collection"].as_str()), (Some("docs"), Some("web")));
    let state = store(&app).run_state(&run_id).await.unwrap().unwrap();
    assert_eq!((state.pending, state.open, state.collection.as_str()), (1, 0, "web"));
    let mut conn = app.redis().await;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{PREFIX}:stream:crawl"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(reply.ids.len(), 1);
    assert_eq!(reply.ids[0].get::<String>("run_id").as_deref(), Some(run_id.as_str()));
    assert_eq!(reply.ids[0].get::<String>("url").as_deref(), Some("https://docs.example.com/start"));
}

#[tokio::test]
async fn items_are_fed_refused_reported_paged_and_the_run_finishes() {
    let app = spawn_app_with_keys(&[]).await;
    let run_id = create_run(
        &app,
        &json!({"name": "list", "items": [
            {"content": "one", "document_id": "d1"},
            {"content": "two, \"quoted\"", "document_id": "d2"},
            {"url": "http://intranet.example.com/secret"},
            {"content": "three", "document_id": "d3", "content_type": "application/x-nonsense"},
            {"content": "four", "document_id": "d4"},
        ]}),
    )
    .await;
    let path = format!("/v1/runs/{run_id}");
    let run = wait_for(&app, &path, |run| run["counts"]["pending"] == 0).await;
    assert_eq!(run["items"], 5);
    assert_eq!(run["counts"]["refused"], 2, "{run}");
    assert_eq!(run["counts"]["in_progress"], 3, "{run}");
    assert!(run["failures"].as_array().unwrap().iter().any(|f| f["reason"].as_str().unwrap().contains("refused")));

    // Pages of two, in order, each with a cursor to the next.
    let first = items(&app, &run_id, "limit=2").await;
    let ids: Vec<&str> =
        first["items"].as_array().unwrap().iter().map(|i| i["document_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["d1", "d2"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = items(&app, &run_id, &format!("limit=2&cursor={cursor}")).await;
    assert_eq!(second["items"][0]["url"], "http://intranet.example.com/secret");
    assert_eq!(second["items"][0]["status"], "refused");
    let third = items(&app, &run_id, &format!("limit=2&cursor={}", second["next_cursor"].as_str().unwrap())).await;
    assert_eq!(third["items"].as_array().unwrap().len(), 1);
    assert_eq!(third["next_cursor"], Value::Null);
    let refused = items(&app, &run_id, "status=refused").await;
    assert_eq!(refused["items"].as_array().unwrap().len(), 2);
    assert_error(app.get(&format!("/v1/runs/{run_id}/items?status=lost")).await, StatusCode::UNPROCESSABLE_ENTITY)
        .await;

    // The stages finish the jobs: one completes, the others fail; the run is then done.
    let queued = items(&app, &run_id, "status=queued").await;
    let jobs: Vec<String> =
        queued["items"].as_array().unwrap().iter().map(|i| i["job_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(jobs.len(), 3);
    let store = store(&app);
    assert!(store.finish(&jobs[0], JobStatus::Completed, None).await.unwrap());
    assert!(store.finish(&jobs[1], JobStatus::Failed, Some(("chunking", "could not parse, really"))).await.unwrap());
    assert!(store.finish(&jobs[2], JobStatus::Failed, Some(("chunking", "could not parse, really"))).await.unwrap());
    let run = wait_for(&app, &path, |run| run["status"] == "done" && run["finished_at"].is_string()).await;
    assert_eq!((run["counts"]["completed"].as_i64(), run["counts"]["failed"].as_i64()), (Some(1), Some(2)), "{run}");
    assert_eq!(run["progress"], 1.0);
    let failure = run["failures"].as_array().unwrap().iter().find(|f| f["count"] == 2).unwrap();
    assert_eq!(failure["reason"], "could not parse, really");

    // The report: a header and one row per item, RFC 4180 quoted.
    let response = app.get(&format!("/v1/runs/{run_id}/report.csv")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let report = response.text().await.unwrap();
    let rows: Vec<&str> = report.split("\r\n").filter(|row| !row.is_empty()).collect();
    assert_eq!(rows[0], "url,document_id,status,http_status,chunks,tokens,cost_usd,attempts,last_attempt_at,error");
    assert_eq!(rows.len(), 6, "{report}");
    assert!(rows[1].starts_with(",d1,completed,,0,0,0.000000,1,"), "{}", rows[1]);
    assert!(rows[2].starts_with(",d2,failed,"), "{}", rows[2]);
    assert!(rows[2].ends_with(",\"could not parse, really\""), "{}", rows[2]);
    assert!(rows[3].starts_with("http://intranet.example.com/secret,,refused,,0,0,0.000000,0,,"), "{}", rows[3]);

    // retry-failed: the two failed items become new jobs (attempt 2), the run reopens.
    let response = app.post_json(&format!("/v1/runs/{run_id}/retry-failed"), &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let retried: Value = response.json().await.unwrap();
    assert_eq!(retried["retried"], 2);
    let run = wait_for(&app, &path, |run| run["counts"]["pending"] == 0 && run["status"] == "running").await;
    assert_eq!(run["counts"]["in_progress"], 2, "{run}");
    let again = items(&app, &run_id, "status=queued").await;
    let new_jobs: Vec<String> =
        again["items"].as_array().unwrap().iter().map(|i| i["job_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(new_jobs.len(), 2);
    assert!(new_jobs.iter().all(|job| !jobs.contains(job)));
    assert!(again["items"].as_array().unwrap().iter().all(|i| i["attempts"] == 2), "{again}");
    for job in &new_jobs {
        assert!(store.finish(job, JobStatus::Completed, None).await.unwrap());
    }
    let run = wait_for(&app, &path, |run| run["status"] == "done" && run["counts"]["completed"] == 3).await;
    assert_eq!(run["counts"]["failed"], 0, "{run}");

    // The durable rows outlive Redis.
    let mut conn = app.redis().await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    let run = wait_for(&app, &path, |run| run["status"] == "done").await;
    assert_eq!(run["counts"]["completed"], 3);
    let report = app.get(&format!("/v1/runs/{run_id}/report.csv")).await.text().await.unwrap();
    assert!(report.contains(",d2,completed,,0,0,0.000000,2,"), "{report}");
    let listed: Value = app.get("/v1/runs").await.json().await.unwrap();
    assert_eq!(listed["runs"][0]["run_id"], run_id.as_str());
}

#[tokio::test]
async fn cancelling_a_run_cancels_its_jobs_and_unsubmitted_items() {
    // A queue of two: the rest of the run waits for room, unsubmitted.
    let app = spawn_app_with_keys(&[("MAX_QUEUED_JOBS", "2")]).await;
    let list: Vec<Value> =
        (0..6).map(|i| json!({"content": format!("item {i}"), "document_id": format!("c{i}")})).collect();
    let run_id = create_run(&app, &json!({"items": list})).await;
    let path = format!("/v1/runs/{run_id}");
    let run = wait_for(&app, &path, |run| run["counts"]["in_progress"] == 2).await;
    assert_eq!(run["counts"]["pending"], 4, "the queue bound holds the rest back: {run}");
    let response = app.delete(&path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "cancelled");
    let run = wait_for(&app, &path, |run| run["counts"]["cancelled"] == 6).await;
    assert_eq!(run["counts"]["pending"], 0, "{run}");
    let state = store(&app).run_state(&run_id).await.unwrap().unwrap();
    assert_eq!(state.status, millrace_pipeline::RunStatus::Cancelled);
    let (_, message) =
        assert_error(app.post_json(&format!("/v1/runs/{run_id}/retry-failed"), &json!({})).await, StatusCode::CONFLICT)
            .await;
    assert!(message.contains("cancelled"));
}

#[tokio::test]
async fn a_large_run_is_fed_as_the_queue_makes_room() {
    let app = spawn_app_with_keys(&[("MAX_QUEUED_JOBS", "5")]).await;
    let list: Vec<Value> =
        (0..12).map(|i| json!({"content": format!("item {i}"), "document_id": format!("q{i}")})).collect();
    let run_id = create_run(&app, &json!({"items": list})).await;
    let path = format!("/v1/runs/{run_id}");
    let store = store(&app);
    let mut finished = 0;
    while finished < 12 {
        let queued = wait_for(&app, &format!("/v1/runs/{run_id}/items?status=queued"), |page| {
            !page["items"].as_array().unwrap().is_empty()
        })
        .await;
        for item in queued["items"].as_array().unwrap() {
            if store.finish(item["job_id"].as_str().unwrap(), JobStatus::Completed, None).await.unwrap() {
                finished += 1;
            }
        }
    }
    let run = wait_for(&app, &path, |run| run["status"] == "done" && run["counts"]["completed"] == 12).await;
    assert_eq!(run["counts"]["refused"], 0, "nothing is lost to admission: {run}");
}

#[tokio::test]
async fn runs_belong_to_their_tenant() {
    let app = spawn_app_with_keys(&[]).await;
    let (_, acme) = app.create_key("acme", &["ingest", "read"]).await;
    let (_, globex) = app.create_key("globex", &["ingest", "read"]).await;
    let (_, reader) = app.create_key("acme", &["read"]).await;
    let acme_client = client_with_key(Some(&acme));
    let response =
        acme_client.post(app.url("/v1/runs")).json(&json!({"items": [{"content": "a"}]})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let run_id = response.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_owned();
    let globex_client = client_with_key(Some(&globex));
    for path in
        [format!("/v1/runs/{run_id}"), format!("/v1/runs/{run_id}/items"), format!("/v1/runs/{run_id}/report.csv")]
    {
        let response = globex_client.get(app.url(&path)).send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND).await;
        assert_eq!(acme_client.get(app.url(&path)).send().await.unwrap().status(), StatusCode::OK);
    }
    let response = globex_client.delete(app.url(&format!("/v1/runs/{run_id}"))).send().await.unwrap();
    assert_error(response, StatusCode::NOT_FOUND).await;
    let listed: Value = globex_client.get(app.url("/v1/runs")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["runs"], json!([]));
    let listed: Value = acme_client.get(app.url("/v1/runs")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["runs"][0]["run_id"], run_id.as_str());
    // An admin names the tenant; a reader may look but not create.
    let listed: Value = app.get("/v1/runs?tenant=acme").await.json().await.unwrap();
    assert_eq!(listed["runs"][0]["run_id"], run_id.as_str());
    let reader_client = client_with_key(Some(&reader));
    let response =
        reader_client.post(app.url("/v1/runs")).json(&json!({"items": [{"content": "a"}]})).send().await.unwrap();
    assert_error(response, StatusCode::FORBIDDEN).await;
    assert_eq!(
        reader_client.get(app.url(&format!("/v1/runs/{run_id}"))).send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn runs_are_listed_newest_first_with_a_cursor() {
    let app = spawn_app_with_keys(&[]).await;
    let mut created = Vec::new();
    for i in 0..3 {
        created
            .push(create_run(&app, &json!({"name": format!("r{i}"), "items": [{"content": format!("x{i}")}]})).await);
    }
    let first: Value = app.get("/v1/runs?limit=2").await.json().await.unwrap();
    let names: Vec<&str> = first["runs"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["r2", "r1"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app.get(&format!("/v1/runs?limit=2&cursor={cursor}")).await.json().await.unwrap();
    assert_eq!(second["runs"][0]["run_id"], created[0].as_str());
    assert_eq!(second["next_cursor"], Value::Null);
    // Any well-formed cursor is a position, even one with a NUL that PostgreSQL text refuses.
    let odd = app.get("/v1/runs?cursor=92c175d30041").await;
    assert_eq!(odd.status(), StatusCode::OK);
}

#[tokio::test]
async fn jobs_are_listed_from_the_history_by_cursor_and_filters() {
    let app = spawn_app_with_keys(&[]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let collection = if i % 2 == 0 { "even" } else { "odd" };
        let response =
            app.post_json("/v1/ingest", &json!({"content": format!("doc {i}"), "collection": collection})).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        ids.push(response.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let store = store(&app);
    assert!(store.finish(&ids[0], JobStatus::Completed, None).await.unwrap());
    // Until the history has every job, later pages would miss some: wait for it. (A cursor
    // past every id, "zz" in hex, reads the history alone.)
    wait_for(&app, "/v1/jobs?limit=10&cursor=7a7a", |page| page["jobs"].as_array().unwrap().len() == 5).await;
    wait_for(&app, "/v1/jobs?limit=10&cursor=7a7a&status=completed", |page| {
        page["jobs"].as_array().unwrap().len() == 1
    })
    .await;
    let mut listed = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page: Value = app.get(&format!("/v1/jobs?limit=2&cursor={cursor}")).await.json().await.unwrap();
        pages += 1;
        listed.extend(page["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(listed, ids, "every job once, newest first");
    assert_eq!(pages, 3);
    let even: Value = app.get("/v1/jobs?collection=even").await.json().await.unwrap();
    assert_eq!(even["jobs"].as_array().unwrap().len(), 3);
    let first: Value = app.get(&format!("/v1/jobs/{}", ids[0])).await.json().await.unwrap();
    assert_eq!(first["attempts"], 1);
    assert!(first["last_attempt_at"].is_string());
    let future: Value = app.get("/v1/jobs?created_after=2999-01-01T00:00:00Z").await.json().await.unwrap();
    assert_eq!(future["jobs"], json!([]));
    let past: Value = app.get("/v1/jobs?created_before=2000-01-01T00:00:00Z").await.json().await.unwrap();
    assert_eq!(past["jobs"], json!([]));
    // An offset RFC 3339 allows and PostgreSQL does not (beyond ±15:59) still bounds the list.
    let far: Value =
        app.get("/v1/jobs?created_after=0063-09-04T18:30:15.6-17:11&cursor=7a7a").await.json().await.unwrap();
    assert_eq!(far["jobs"].as_array().unwrap().len(), 5, "{far}");
    let nul: Value = app.get("/v1/jobs?run_id=%00run").await.json().await.unwrap();
    assert_eq!(nul["jobs"], json!([]));
    let none: Value = app.get("/v1/jobs?run_id=run_none").await.json().await.unwrap();
    assert_eq!(none["jobs"], json!([]));
    for query in ["created_after=yesterday", "cursor=%21%21", "collection=a%20b"] {
        assert_error(app.get(&format!("/v1/jobs?{query}")).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    // Once Redis has forgotten them, the history still lists them, as last recorded.
    let mut conn = app.redis().await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    let all: Value = app.get("/v1/jobs?limit=10").await.json().await.unwrap();
    let after: Vec<&str> = all["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    assert_eq!(after, ids);
    assert_eq!(all["jobs"][0]["status"], "completed");
    let completed: Value = app.get("/v1/jobs?status=completed").await.json().await.unwrap();
    assert_eq!(completed["jobs"].as_array().unwrap().len(), 1);
}
