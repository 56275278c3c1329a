//! The key decides the tenant and the collections: another tenant's job (or one of a collection
//! the key may not use) is answered exactly as a missing one, over HTTP and gRPC, for reads,
//! events, lists and cancels; submitting to a collection the key may not use is 403; and each
//! tenant has its own bound on queued jobs (429 with `Retry-After`, naming the limit).

use millrace_proto::v1::{CancelJobRequest, GetJobRequest, ListJobsRequest, SubmitRequest, WatchJobRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, client_with_key, spawn_app_with_keys};

/// A key of `tenant` with `scopes`, limited to `collections` when given; its secret.
async fn key(app: &TestApp, tenant: &str, scopes: &[&str], collections: Option<&[&str]>) -> String {
    let mut body = json!({ "tenant": tenant, "name": "tenants test", "scopes": scopes });
    if let Some(collections) = collections {
        body["collections"] = json!(collections);
    }
    let response = app.post_json("/v1/keys", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned()
}

/// What a call answered: status and body.
async fn call(app: &TestApp, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, String) {
    let mut request = client_with_key(Some(key)).request(method, app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn ingest(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    let (status, text) = call(app, key, reqwest::Method::POST, "/v1/ingest", Some(body)).await;
    (status, serde_json::from_str(&text).unwrap())
}

/// A job id that was never given out.
const MISSING: &str = "0190ffff-0000-7000-8000-000000000000";

/// The body a missing job's id gets, with `job_id` in place of the missing id.
async fn missing_body(app: &TestApp, key: &str, path: &str, job_id: &str) -> String {
    let (status, body) = call(app, key, reqwest::Method::GET, &path.replace("{id}", MISSING), None).await;
    assert_eq!(status, 404);
    body.replace(MISSING, job_id)
}

#[tokio::test]
async fn another_tenants_job_is_a_missing_job_over_http() {
    let app = spawn_app_with_keys(&[]).await;
    let acme = key(&app, "acme", &["ingest", "read"], None).await;
    let globex = key(&app, "globex", &["ingest", "read"], None).await;
    let (status, accepted) = ingest(&app, &acme, json!({ "content": "acme's secret plan" })).await;
    assert_eq!(status, 202);
    let job_id = accepted["job_id"].as_str().unwrap();

    // The owner sees it, with its tenant and collection.
    let (status, body) = call(&app, &acme, reqwest::Method::GET, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(status, 200);
    let job: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((job["tenant_id"].as_str(), job["collection"].as_str()), (Some("acme"), Some("default")));

    // Another tenant gets exactly what a missing id gets, for the job and its events.
    for path in ["/v1/jobs/{id}", "/v1/jobs/{id}/events"] {
        let (status, body) = call(&app, &globex, reqwest::Method::GET, &path.replace("{id}", job_id), None).await;
        assert_eq!((status, body), (404, missing_body(&app, &globex, path, job_id).await), "{path}");
    }
    // Cancelling it is the same 404 and changes nothing.
    let (status, body) = call(&app, &globex, reqwest::Method::DELETE, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!((status, body), (404, missing_body(&app, &globex, "/v1/jobs/{id}", job_id).await));
    assert_eq!(app.job(job_id).await["status"], "queued");

    // Lists hold only the tenant's own jobs; an admin lists its own tenant unless it names one.
    let list = |key: String, query: &'static str| {
        let app = &app;
        async move {
            let (status, body) = call(app, &key, reqwest::Method::GET, &format!("/v1/jobs{query}"), None).await;
            assert_eq!(status, 200, "{body}");
            let listed: Value = serde_json::from_str(&body).unwrap();
            listed["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|job| job["job_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(acme.clone(), "").await, [job_id]);
    assert!(list(globex.clone(), "").await.is_empty());
    assert!(list(crate::helpers::ADMIN_KEY.to_owned(), "").await.is_empty());
    assert_eq!(list(crate::helpers::ADMIN_KEY.to_owned(), "?tenant=acme").await, [job_id]);
    let (status, _) = call(&app, &globex, reqwest::Method::GET, "/v1/jobs?tenant=acme", None).await;
    assert_eq!(status, 403, "only an admin names another tenant");

    // The owner may cancel it; an admin may cancel any tenant's.
    let (status, _) = call(&app, &acme, reqwest::Method::DELETE, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(status, 200);
    let (_, other) = ingest(&app, &globex, json!({ "content": "globex's plan" })).await;
    let other_id = other["job_id"].as_str().unwrap();
    let (status, body) =
        call(&app, crate::helpers::ADMIN_KEY, reqwest::Method::DELETE, &format!("/v1/jobs/{other_id}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "cancelled");

    // Both cancels are in the audit log, under the tenant they touched.
    let audit: Value = app.get("/v1/audit?action=job.cancelled").await.json().await.unwrap();
    let events = audit["events"].as_array().unwrap();
    let tenants: Vec<&str> = events.iter().map(|event| event["tenant"].as_str().unwrap()).collect();
    assert_eq!(tenants, ["globex", "acme"]);
}

#[tokio::test]
async fn another_tenants_job_is_a_missing_job_over_grpc() {
    let app = spawn_app_with_keys(&[]).await;
    let acme = key(&app, "acme", &["ingest", "read"], None).await;
    let globex = key(&app, "globex", &["ingest", "read"], None).await;
    let mut as_acme = millrace_proto::v1::ingestion_client::IngestionClient::new(app.grpc_channel(Some(&acme)).await);
    let mut as_globex =
        millrace_proto::v1::ingestion_client::IngestionClient::new(app.grpc_channel(Some(&globex)).await);
    let submitted = as_acme
        .submit(SubmitRequest { content: b"acme over grpc".to_vec(), collection: "plans".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let job = as_acme.get_job(GetJobRequest { job_id: submitted.job_id.clone() }).await.unwrap().into_inner();
    assert_eq!((job.tenant_id.as_str(), job.collection.as_str()), ("acme", "plans"));

    let missing = MISSING;
    let status_of = |result: Result<tonic::Response<millrace_proto::v1::Job>, tonic::Status>, id: &str| {
        let status = result.unwrap_err();
        (status.code(), status.message().replace(id, "<id>"))
    };
    let foreign =
        status_of(as_globex.get_job(GetJobRequest { job_id: submitted.job_id.clone() }).await, &submitted.job_id);
    let absent = status_of(as_globex.get_job(GetJobRequest { job_id: missing.into() }).await, missing);
    assert_eq!(foreign, absent);
    assert_eq!(foreign.0, tonic::Code::NotFound);
    let cancel =
        status_of(as_globex.cancel_job(CancelJobRequest { job_id: submitted.job_id.clone() }).await, &submitted.job_id);
    assert_eq!(cancel, absent);
    let watch = as_globex
        .watch_job(WatchJobRequest { job_id: submitted.job_id.clone(), after_event_id: String::new() })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!((watch.code(), watch.message().replace(&submitted.job_id, "<id>")), absent);
    let listed = as_globex.list_jobs(ListJobsRequest::default()).await.unwrap().into_inner();
    assert!(listed.jobs.is_empty());
    let listed = as_acme.list_jobs(ListJobsRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.jobs.iter().map(|job| job.job_id.as_str()).collect::<Vec<_>>(), [submitted.job_id.as_str()]);
    let refused =
        as_globex.list_jobs(ListJobsRequest { tenant: "acme".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(app.job(&submitted.job_id).await["status"], "queued", "nothing changed");
}

#[tokio::test]
async fn a_key_limited_to_collections_neither_writes_nor_reads_others() {
    let app = spawn_app_with_keys(&[]).await;
    let hr = key(&app, "acme", &["ingest", "read"], Some(&["hr"])).await;
    let all = key(&app, "acme", &["ingest", "read"], None).await;

    // A limited key must see that the document is not another collection's before it writes; with
    // storage away (these tests run without it) it is told to come back (503), not let through.
    let (status, body) = ingest(&app, &hr, json!({ "content": "payroll", "collection": "hr" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    // A document whose last submitted version is another collection's is refused before storage is asked.
    let (status, _) = ingest(&app, &all, json!({ "document_id": "plan", "content": "v1", "collection": "eng" })).await;
    assert_eq!(status, 202);
    let (status, body) = ingest(&app, &hr, json!({ "document_id": "plan", "content": "v2", "collection": "hr" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("permission_denied")), "{body}");
    let (status, body) = ingest(&app, &hr, json!({ "content": "roadmap", "collection": "eng" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("permission_denied")));
    let (status, _) = ingest(&app, &hr, json!({ "content": "no collection means default" })).await;
    assert_eq!(status, 403);
    let (status, body) = ingest(&app, &hr, json!({ "content": "x", "collection": "no spaces" })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_argument")));

    // A job of another collection of the same tenant is a missing job to the limited key.
    let (_, eng) = ingest(&app, &all, json!({ "content": "roadmap", "collection": "eng" })).await;
    let (status, _) = ingest(&app, &all, json!({ "content": "payroll", "collection": "hr" })).await;
    assert_eq!(status, 202);
    let eng_id = eng["job_id"].as_str().unwrap();
    let (status, body) = call(&app, &hr, reqwest::Method::GET, &format!("/v1/jobs/{eng_id}"), None).await;
    assert_eq!((status, body), (404, missing_body(&app, &hr, "/v1/jobs/{id}", eng_id).await));
    let (status, body) = call(&app, &hr, reqwest::Method::GET, "/v1/jobs", None).await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert!(listed["jobs"].as_array().unwrap().iter().all(|job| job["collection"] == "hr"), "{listed}");
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);

    // A batch item is refused on its own.
    let batch =
        json!({ "documents": [{ "content": "a", "collection": "hr" }, { "content": "b", "collection": "eng" }] });
    let (status, body) = call(&app, &hr, reqwest::Method::POST, "/v1/ingest/batch", Some(batch)).await;
    assert_eq!(status, 202);
    let jobs = serde_json::from_str::<Value>(&body).unwrap()["jobs"].clone();
    assert_eq!(jobs[0]["error"]["code"], "unavailable", "storage is away: {jobs}");
    assert_eq!(jobs[1]["error"]["code"], "permission_denied");
}

#[tokio::test]
async fn each_tenant_has_its_own_bound_on_queued_jobs() {
    let app = spawn_app_with_keys(&[("MAX_QUEUED_JOBS_PER_TENANT", "2")]).await;
    let acme = key(&app, "acme", &["ingest"], None).await;
    let globex = key(&app, "globex", &["ingest"], None).await;
    for n in 0..2 {
        assert_eq!(ingest(&app, &acme, json!({ "content": format!("doc {n}") })).await.0, 202);
    }
    let response = client_with_key(Some(&acme))
        .post(app.url("/v1/ingest"))
        .json(&json!({ "content": "one too many" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("MILLRACE_MAX_QUEUED_JOBS_PER_TENANT=2"), "{body}");
    // Another tenant is not held back.
    assert_eq!(ingest(&app, &globex, json!({ "content": "globex doc" })).await.0, 202);
    // An admin sees each tenant's share in the stats.
    let stats: Value = app.get("/v1/stats").await.json().await.unwrap();
    assert_eq!(stats["tenants"]["max_queued_jobs"], 2);
    assert_eq!(
        stats["tenants"]["queued"],
        json!([{ "tenant": "acme", "queued_jobs": 2 }, { "tenant": "globex", "queued_jobs": 1 }])
    );
}
