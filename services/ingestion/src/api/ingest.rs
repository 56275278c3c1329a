//! `POST /v1/ingest` (a JSON document or a multipart upload) and `POST /v1/ingest/batch`.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use millrace_auth::Caller;
use millrace_common::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{JsonBody, multipart};
use crate::core::{self, Core};
use crate::validate::{self, Submission};

/// Most documents in one batch request.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// The JSON form of one document.
#[derive(Debug, Deserialize)]
pub(crate) struct IngestRequest {
    document_id: Option<String>,
    content: Option<String>,
    content_base64: Option<String>,
    url: Option<String>,
    content_type: Option<String>,
    source: Option<String>,
    metadata: Option<Value>,
    options: Option<Value>,
    collection: Option<String>,
}

impl IngestRequest {
    pub(crate) fn into_submission(self) -> Result<Submission, ApiError> {
        Ok(Submission {
            payload: Submission::payload_from_fields(self.content, self.content_base64, self.url)?,
            document_id: self.document_id,
            content_type: self.content_type,
            file_name: None,
            source: self.source,
            metadata: self.metadata,
            options: validate::options_from_value(self.options)?,
            collection: self.collection,
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct BatchRequest {
    documents: Option<Vec<Value>>,
}

pub(crate) async fn ingest(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let submission = read_submission(&core, request).await.inspect_err(core::count_rejection)?;
    let accepted = core.submit(&caller, submission).await?;
    // 200 when the document was already stored exactly so and the job completed at once.
    let status = if accepted.status.is_terminal() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(accepted)).into_response())
}

/// A multipart upload when the body says so, else the JSON form (whatever the content type, as
/// before multipart was accepted).
async fn read_submission(core: &Core, request: Request) -> Result<Submission, ApiError> {
    if is_multipart(request.headers()) {
        let form = Multipart::from_request(request, &())
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        multipart::read_form(form, core.config().max_document_bytes).await
    } else {
        let JsonBody(request) = JsonBody::<IngestRequest>::from_request(request, &()).await?;
        request.into_submission()
    }
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| millrace_pipeline::content::media_type(value) == "multipart/form-data")
}

pub(crate) async fn batch(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    body: Result<JsonBody<BatchRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let documents = body
        .and_then(|JsonBody(request)| {
            let documents = request.documents.ok_or_else(|| ApiError::invalid("`documents` is required"))?;
            if documents.is_empty() {
                return Err(ApiError::invalid("`documents` must not be empty"));
            }
            if documents.len() > MAX_BATCH_ITEMS {
                return Err(ApiError::invalid(format!(
                    "`documents` has {} items; at most {MAX_BATCH_ITEMS} are accepted per request",
                    documents.len()
                )));
            }
            Ok(documents)
        })
        .inspect_err(core::count_rejection)?;
    let items = documents
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            serde_json::from_value::<IngestRequest>(value)
                .map_err(|err| ApiError::bad_request(format!("documents[{index}] has the wrong shape: {err}")))
                .and_then(IngestRequest::into_submission)
        })
        .collect();
    let results = core.submit_batch(&caller, items).await?;
    let jobs: Vec<Value> = results
        .into_iter()
        .enumerate()
        .map(|(index, result)| match result {
            Ok(accepted) => json!({
                "index": index,
                "job_id": accepted.job_id,
                "document_id": accepted.document_id,
                "status": accepted.status,
                "status_url": accepted.status_url,
            }),
            Err(err) => json!({"index": index, "error": {"code": err.code, "message": err.message}}),
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "jobs": jobs }))).into_response())
}
