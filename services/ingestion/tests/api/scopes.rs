//! The scope matrix: every HTTP route and gRPC method, called with no key, an unknown key, a
//! revoked key, a key of each single scope and the bootstrap admin key, gets 401, 403 or an
//! answer that is not about authentication. What each route needs is written here, apart from
//! the service's own table (`millrace_ingestion::auth`), so that a change to either shows.

use millrace_proto::v1::admin_client::AdminClient;
use millrace_proto::v1::ingestion_client::IngestionClient;
use millrace_proto::v1::{
    CancelJobRequest, DeleteDocumentRequest, GetJobRequest, ListDeadLettersRequest, ListDocumentChunksRequest,
    ListDocumentsRequest, ListJobsRequest, RetryDeadLettersRequest, SearchRequest, StatsRequest, SubmitRequest,
    WatchJobRequest,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{ADMIN_KEY, Authed, TestApp, client_with_key, spawn_app_with_keys};

/// The scope a route needs, or None for a public route.
type Needs = Option<&'static str>;

/// Every HTTP route: method, path, body, and the scope it needs.
fn http_routes() -> Vec<(Method, &'static str, Option<Value>, Needs)> {
    vec![
        (Method::POST, "/v1/ingest", Some(json!({"content": "matrix"})), Some("ingest")),
        (Method::POST, "/v1/ingest/batch", Some(json!({"documents": [{"content": "matrix"}]})), Some("ingest")),
        (Method::DELETE, "/v1/jobs/no-such-job", None, Some("ingest")),
        (Method::GET, "/v1/jobs", None, Some("read")),
        (Method::GET, "/v1/jobs/no-such-job", None, Some("read")),
        (Method::GET, "/v1/jobs/no-such-job/events", None, Some("read")),
        (Method::GET, "/v1/documents/no-such-doc", None, Some("read")),
        (Method::GET, "/v1/documents/no-such-doc/chunks", None, Some("read")),
        (Method::GET, "/v1/documents", None, Some("read")),
        (Method::GET, "/v1/runs/no-such-run/webhooks", None, Some("read")),
        (Method::POST, "/v1/search", Some(json!({"query": "matrix"})), Some("search")),
        (Method::DELETE, "/v1/documents/no-such-doc", None, Some("delete")),
        (Method::GET, "/v1/stats", None, Some("admin")),
        (Method::GET, "/v1/limits", None, Some("admin")),
        (Method::GET, "/v1/dlq", None, Some("admin")),
        (Method::POST, "/v1/dlq/metadata/retry", None, Some("admin")),
        (
            Method::POST,
            "/v1/keys",
            Some(json!({"tenant": "m", "name": "made by the matrix", "scopes": ["read"]})),
            Some("admin"),
        ),
        (Method::GET, "/v1/keys", None, Some("admin")),
        (Method::DELETE, "/v1/keys/key_no_such_key", None, Some("admin")),
        (Method::GET, "/v1/audit", None, Some("admin")),
        (Method::POST, "/v1/runs", Some(json!({"items": [{"content": "matrix"}]})), Some("ingest")),
        (Method::GET, "/v1/runs", None, Some("read")),
        (Method::GET, "/v1/runs/run_none", None, Some("read")),
        (Method::DELETE, "/v1/runs/run_none", None, Some("ingest")),
        (Method::GET, "/v1/runs/run_none/items", None, Some("read")),
        (Method::GET, "/v1/runs/run_none/report.csv", None, Some("read")),
        (Method::POST, "/v1/runs/run_none/retry-failed", None, Some("ingest")),
        (Method::GET, "/openapi.json", None, None),
        (Method::GET, "/ui/", None, None),
        (Method::GET, "/ui/app.js", None, None),
        (Method::GET, "/ui/config.json", None, None),
        (Method::GET, "/healthz", None, None),
        (Method::GET, "/readyz", None, None),
        (Method::GET, "/metrics", None, None),
    ]
}

/// Every gRPC method and the scope it needs (health and reflection are public).
const GRPC_METHODS: [(&str, Needs); 14] = [
    ("Ingestion/Submit", Some("ingest")),
    ("Ingestion/CancelJob", Some("ingest")),
    ("Ingestion/GetJob", Some("read")),
    ("Ingestion/ListJobs", Some("read")),
    ("Ingestion/WatchJob", Some("read")),
    ("Ingestion/Search", Some("search")),
    ("Ingestion/DeleteDocument", Some("delete")),
    ("Ingestion/ListDocuments", Some("read")),
    ("Ingestion/ListChunks", Some("read")),
    ("Ingestion/ListDeadLetters", Some("admin")),
    ("Ingestion/RetryDeadLetters", Some("admin")),
    ("Admin/Stats", Some("admin")),
    ("Health/Check", None),
    ("Reflection/Info", None),
];

/// Who calls.
#[derive(Debug, Clone)]
enum Who {
    NoKey,
    Unknown,
    Revoked(String),
    /// A key with one scope.
    Scoped(&'static str, String),
    BootstrapAdmin,
}

impl Who {
    fn key(&self) -> Option<&str> {
        match self {
            Who::NoKey => None,
            Who::Unknown => Some("mr_this-key-was-never-made-0000000000000000000"),
            Who::Revoked(key) | Who::Scoped(_, key) => Some(key),
            Who::BootstrapAdmin => Some(ADMIN_KEY),
        }
    }

    fn holds(&self, scope: &str) -> bool {
        match self {
            Who::Scoped(held, _) => *held == scope || (*held == "admin" && scope != "llm"),
            Who::BootstrapAdmin => scope != "llm",
            _ => false,
        }
    }
}

/// What a call must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Unauthenticated,
    PermissionDenied,
    /// Anything but 401 and 403 (a 2xx, or a 4xx/5xx about the request itself).
    Through,
}

fn expect(needs: Needs, who: &Who) -> Expect {
    match (needs, who) {
        (None, _) => Expect::Through,
        (Some(_), Who::NoKey | Who::Unknown | Who::Revoked(_)) => Expect::Unauthenticated,
        (Some(scope), who) if who.holds(scope) => Expect::Through,
        (Some(_), _) => Expect::PermissionDenied,
    }
}

async fn callers(app: &TestApp) -> Vec<Who> {
    let (revoked_id, revoked) = app.create_key("matrix", &["admin"]).await;
    // Revoked before its first use, so no replica has it cached as valid.
    assert_eq!(app.delete(&format!("/v1/keys/{revoked_id}")).await.status(), StatusCode::OK);
    let mut callers = vec![Who::NoKey, Who::Unknown, Who::Revoked(revoked), Who::BootstrapAdmin];
    for scope in ["ingest", "read", "search", "delete", "admin", "llm"] {
        let (_, key) = app.create_key("matrix", &[scope]).await;
        callers.push(Who::Scoped(scope, key));
    }
    callers
}

#[tokio::test]
async fn every_http_route_by_every_kind_of_caller() {
    let app = spawn_app_with_keys(&[]).await;
    let mut failures = Vec::new();
    let mut calls = 0;
    for who in callers(&app).await {
        let client = client_with_key(who.key());
        for (method, path, body, needs) in http_routes() {
            let mut request = client.request(method.clone(), app.url(path));
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.expect("request sent");
            let status = response.status();
            let got = match status {
                StatusCode::UNAUTHORIZED => Expect::Unauthenticated,
                StatusCode::FORBIDDEN => Expect::PermissionDenied,
                _ => Expect::Through,
            };
            if matches!(got, Expect::Unauthenticated | Expect::PermissionDenied) {
                let body: Value = response.json().await.expect("a JSON error");
                let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
                let want = if got == Expect::Unauthenticated { "unauthenticated" } else { "permission_denied" };
                assert_eq!(code, want, "{method} {path}: {body}");
            }
            calls += 1;
            let want = expect(needs, &who);
            if got != want {
                failures.push(format!("{method} {path} by {who:?}: {status}, want {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {calls} calls:\n{}", failures.len(), failures.join("\n"));
}

async fn grpc_call(channel: Authed, method: &str) -> Code {
    let code = |result: Result<(), tonic::Status>| result.err().map_or(Code::Ok, |status| status.code());
    let mut ingestion = IngestionClient::new(channel.clone());
    match method {
        "Ingestion/Submit" => {
            code(ingestion.submit(SubmitRequest { content: b"matrix".to_vec(), ..Default::default() }).await.map(drop))
        }
        "Ingestion/CancelJob" => {
            code(ingestion.cancel_job(CancelJobRequest { job_id: "no-such-job".into() }).await.map(drop))
        }
        "Ingestion/GetJob" => code(ingestion.get_job(GetJobRequest { job_id: "no-such-job".into() }).await.map(drop)),
        "Ingestion/ListJobs" => code(ingestion.list_jobs(ListJobsRequest::default()).await.map(drop)),
        "Ingestion/WatchJob" => code(
            ingestion
                .watch_job(WatchJobRequest { job_id: "no-such-job".into(), after_event_id: String::new() })
                .await
                .map(drop),
        ),
        "Ingestion/Search" => {
            code(ingestion.search(SearchRequest { query: "matrix".into(), ..Default::default() }).await.map(drop))
        }
        "Ingestion/DeleteDocument" => code(
            ingestion
                .delete_document(DeleteDocumentRequest { document_id: "no-such-doc".into(), ..Default::default() })
                .await
                .map(drop),
        ),
        "Ingestion/ListDocuments" => code(ingestion.list_documents(ListDocumentsRequest::default()).await.map(drop)),
        "Ingestion/ListChunks" => code(
            ingestion
                .list_chunks(ListDocumentChunksRequest { document_id: "no-such-doc".into(), ..Default::default() })
                .await
                .map(drop),
        ),
        "Ingestion/ListDeadLetters" => {
            code(ingestion.list_dead_letters(ListDeadLettersRequest::default()).await.map(drop))
        }
        "Ingestion/RetryDeadLetters" => code(
            ingestion
                .retry_dead_letters(RetryDeadLettersRequest { stage: "metadata".into(), ids: Vec::new() })
                .await
                .map(drop),
        ),
        "Admin/Stats" => code(AdminClient::new(channel).stats(StatsRequest::default()).await.map(drop)),
        "Health/Check" => code(
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                .await
                .map(drop),
        ),
        "Reflection/Info" => {
            // A reflection stream that lists the services: public, like health.
            use tonic_reflection::pb::v1::ServerReflectionRequest;
            use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut client = ServerReflectionClient::new(channel);
            match client.server_reflection_info(futures::stream::iter([request])).await {
                Ok(mut stream) => code(stream.get_mut().message().await.map(drop)),
                Err(status) => status.code(),
            }
        }
        other => panic!("no call for {other}"),
    }
}

#[tokio::test]
async fn every_grpc_method_by_every_kind_of_caller() {
    let app = spawn_app_with_keys(&[]).await;
    let mut failures = Vec::new();
    let mut calls = 0;
    for who in callers(&app).await {
        let channel = app.grpc_channel(who.key()).await;
        for (method, needs) in GRPC_METHODS {
            let code = grpc_call(channel.clone(), method).await;
            let got = match code {
                Code::Unauthenticated => Expect::Unauthenticated,
                Code::PermissionDenied => Expect::PermissionDenied,
                _ => Expect::Through,
            };
            calls += 1;
            let want = expect(needs, &who);
            if got != want {
                failures.push(format!("{method} by {who:?}: {code:?}, want {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {calls} calls:\n{}", failures.len(), failures.join("\n"));
}
