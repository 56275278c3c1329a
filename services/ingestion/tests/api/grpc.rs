//! `millrace.v1.Ingestion` and `millrace.v1.Admin` over gRPC: the same rules as HTTP.

use millrace_proto::v1::admin_client::AdminClient;
use millrace_proto::v1::ingestion_client::IngestionClient;
use millrace_proto::v1::{
    CancelJobRequest, DeleteDocumentRequest, GetJobRequest, JobStatus, ListJobsRequest, SearchFilter, SearchMode,
    SearchRequest, StatsRequest, SubmitRequest,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::{ADMIN_KEY, Authed, TestApp, spawn_app, spawn_app_with};

async fn client(app: &TestApp) -> IngestionClient<Authed> {
    app.ingestion_grpc().await
}

fn submit(content: &[u8]) -> SubmitRequest {
    SubmitRequest {
        document_id: Some("grpc-doc".into()),
        content: content.to_vec(),
        content_type: "text/plain".into(),
        source: "grpc".into(),
        metadata_json: r#"{"via":"grpc"}"#.into(),
        ..SubmitRequest::default()
    }
}

#[tokio::test]
async fn submit_get_list_and_cancel() {
    let app = spawn_app().await;
    let mut client = client(&app).await;
    let accepted = client.submit(submit(b"hello over grpc")).await.unwrap().into_inner();
    assert_eq!(accepted.document_id, "grpc-doc");
    assert_eq!(accepted.status(), JobStatus::Queued);
    assert_eq!(app.chunking_entries().await, vec![accepted.job_id.clone()]);

    let job = client.get_job(GetJobRequest { job_id: accepted.job_id.clone() }).await.unwrap().into_inner();
    assert_eq!(job.status(), JobStatus::Queued);
    assert_eq!(job.source, "grpc");

    let listed = client
        .list_jobs(ListJobsRequest { status: JobStatus::Queued as i32, limit: 0, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(listed.into_inner().jobs.len(), 1);

    let cancelled = client.cancel_job(CancelJobRequest { job_id: accepted.job_id.clone() }).await.unwrap();
    assert_eq!(cancelled.into_inner().status(), JobStatus::Cancelled);
    let listed = client
        .list_jobs(ListJobsRequest { status: JobStatus::Queued as i32, limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert!(listed.into_inner().jobs.is_empty());
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    result.unwrap_err().code()
}

#[tokio::test]
async fn bad_input_maps_to_grpc_codes() {
    let app = spawn_app_with(&[("MAX_DOCUMENT_BYTES", "100")]).await;
    let mut client = client(&app).await;

    assert_eq!(code(client.submit(submit(b"")).await), Code::InvalidArgument);
    assert_eq!(code(client.submit(submit(&[0xff, 0xfe])).await), Code::InvalidArgument);
    assert_eq!(
        code(client.submit(SubmitRequest { content_type: "image/png".into(), ..submit(b"x") }).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(client.submit(SubmitRequest { metadata_json: "[1]".into(), ..submit(b"x") }).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(client.submit(SubmitRequest { document_id: Some(String::new()), ..submit(b"x") }).await),
        Code::InvalidArgument
    );
    assert_eq!(code(client.submit(submit(&[b'a'; 101])).await), Code::OutOfRange);
    assert_eq!(code(client.get_job(GetJobRequest { job_id: "missing".into() }).await), Code::NotFound);
    assert_eq!(code(client.cancel_job(CancelJobRequest { job_id: "missing".into() }).await), Code::NotFound);
    assert_eq!(
        code(client.list_jobs(ListJobsRequest { status: 99, limit: 0, ..Default::default() }).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(client.list_jobs(ListJobsRequest { status: 0, limit: 1001, ..Default::default() }).await),
        Code::InvalidArgument
    );
    let search = |query: &str, top_k| SearchRequest { query: query.into(), top_k, ..Default::default() };
    assert_eq!(code(client.search(search("", 0)).await), Code::InvalidArgument);
    assert_eq!(code(client.search(search("q", 101)).await), Code::InvalidArgument);
    // Valid, but embeddings and storage are not running.
    assert_eq!(code(client.search(search("q", 0)).await), Code::Unavailable);
    let bad = [
        SearchRequest { mode: 9, ..search("q", 0) },
        SearchRequest { group_by: -1, ..search("q", 0) },
        SearchRequest { vector_weight: Some(f32::NAN), ..search("q", 0) },
        SearchRequest { keyword_weight: Some(-1.0), ..search("q", 0) },
        SearchRequest {
            filter: Some(SearchFilter { content_types: vec!["text/x-unknown".into()], ..Default::default() }),
            ..search("q", 0)
        },
        SearchRequest {
            filter: Some(SearchFilter { document_id: Some(String::new()), ..Default::default() }),
            ..search("q", 0)
        },
    ];
    for request in bad {
        assert_eq!(code(client.search(request.clone()).await), Code::InvalidArgument, "{request:?}");
    }
    // Keyword mode goes to storage without embedding the query.
    let keyword = SearchRequest { mode: SearchMode::Keyword as i32, ..search("q", 0) };
    let status = client.search(keyword).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().starts_with("storage service"), "{}", status.message());
    let delete = DeleteDocumentRequest { tenant_id: "default".into(), document_id: "d".into(), through_version: 0 };
    assert_eq!(code(client.delete_document(delete).await), Code::Unavailable);
    assert!(app.chunking_entries().await.is_empty());
}

#[tokio::test]
async fn admin_stats_report_the_chunking_queue() {
    let app = spawn_app().await;
    app.ingest("one").await;
    app.ingest("two").await;
    let mut admin = AdminClient::new(app.grpc_channel(Some(ADMIN_KEY)).await);
    let stats = admin.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.service, "ingestion");
    assert_eq!((stats.concurrency_limit, stats.concurrency_in_use), (0, 0));
    assert_eq!(stats.queues.len(), 1);
    let queue = &stats.queues[0];
    assert_eq!(queue.stream, "itest:stream:chunking");
    assert_eq!(queue.group, "chunking");
    assert_eq!((queue.length, queue.lag, queue.pending, queue.dead_letters), (2, 2, 0, 0));
}

#[tokio::test]
async fn grpc_health_is_serving() {
    let app = spawn_app().await;
    let channel = Channel::from_shared(format!("http://{}", app.grpc_addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let response =
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(response.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
}

#[tokio::test]
async fn urls_and_options_follow_the_http_rules() {
    let app = spawn_app().await;
    let mut client = client(&app).await;
    let by_url = |url: &str| SubmitRequest { content: Vec::new(), url: url.into(), ..submit(b"") };

    let status = client.submit(by_url("http://169.254.169.254/latest/meta-data/")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("169.254.169.254 is a cloud metadata address"), "{}", status.message());
    let status = client.submit(by_url("https://intranet.example.com/a.pdf")).await.unwrap_err();
    assert!(status.message().contains("resolves to 10.0.0.5, a private address"), "{}", status.message());
    let both = SubmitRequest { url: "https://docs.example.com/a.md".into(), ..submit(b"inline") };
    assert_eq!(code(client.submit(both).await), Code::InvalidArgument);
    for (size, overlap) in [(Some(0), None), (Some(9000), None), (Some(100), Some(100)), (None, Some(8192))] {
        let request = SubmitRequest { chunk_size: size, chunk_overlap: overlap, ..submit(b"text") };
        let status = client.submit(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{size:?} {overlap:?}");
        assert!(status.message().contains("chunk_"), "{}", status.message());
    }
    assert!(app.chunking_entries().await.is_empty());

    let request =
        SubmitRequest { chunk_size: Some(256), chunk_overlap: Some(32), ..by_url("https://docs.example.com/a.md") };
    let accepted = client.submit(request).await.unwrap().into_inner();
    let job = app.job(&accepted.job_id).await;
    assert_eq!(job["url"], "https://docs.example.com/a.md");
    assert_eq!(job["document_id"], "grpc-doc");
    assert_eq!(job["options"], serde_json::json!({"chunk_size": 256, "chunk_overlap": 32}));
    assert_eq!(job["content_bytes"], 0);
}
