//! Where a job's document comes from: the bytes stored at submission, or — for a document
//! submitted by URL — a fetch made now, under the same address rules the ingestion service
//! checked (they are applied again at connect time, so a name that changed its answer since
//! is refused too).

use millrace_fetch::{FetchError, Fetcher, loggable};
use millrace_pipeline::content::{self, media_type};
use millrace_pipeline::runtime::finished_without_payload;
use millrace_pipeline::{Job, JobStore};
use millrace_streams::HandlerError;
use tracing::info;

/// A document's bytes and the content type to parse them as.
pub struct Document {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

/// `None` when the job finished while its document was being loaded: nothing to do.
pub async fn load(store: &JobStore, fetcher: &Fetcher, job: &Job) -> Result<Option<Document>, HandlerError> {
    if job.url.is_empty() {
        let Some(bytes) = store.content(&job.job_id).await? else {
            // Cancelled meanwhile (a cancel drops the document at once): nothing to do.
            finished_without_payload(store, &job.job_id, "the document's content (expired?)").await?;
            return Ok(None);
        };
        // A generic declared type is settled by the source's file name, then the bytes.
        let content_type = content::resolve(Some(&job.content_type), Some(&job.source), &bytes)
            .unwrap_or_else(|| job.content_type.clone());
        return Ok(Some(Document { bytes, content_type }));
    }
    let fetched = match fetcher.fetch(&job.url).await {
        Ok(fetched) => fetched,
        Err(err) => {
            // The status the server answered goes on the job's record (its report row).
            if let FetchError::Status(status) = err {
                store.set_http_status(&job.job_id, status).await?;
            }
            return Err(fetch_error(&job.url, err));
        }
    };
    store.set_http_status(&job.job_id, fetched.status).await?;
    // The type the caller declared wins; else the server's, if it names one we parse; else
    // the file name and the bytes decide.
    let declared = Some(job.content_type.as_str()).filter(|t| !content::is_generic(Some(t)));
    let served =
        fetched.content_type.as_deref().filter(|t| content::SUPPORTED_CONTENT_TYPES.contains(&media_type(t).as_str()));
    let content_type =
        content::resolve(declared.or(served), fetched.file_name.as_deref(), &fetched.bytes).ok_or_else(|| {
            HandlerError::Fatal(format!(
                "{} answered {} bytes of an unsupported kind (content type {:?})",
                loggable(&job.url),
                fetched.bytes.len(),
                fetched.content_type.as_deref().unwrap_or("none")
            ))
        })?;
    info!(job_id = %job.job_id, url = %loggable(&job.url), bytes = fetched.bytes.len(), content_type, redirects = fetched.redirects, "fetched document");
    Ok(Some(Document { bytes: fetched.bytes, content_type }))
}

/// Network trouble is tried again (up to the stage's delivery limit); a refusal, a size over
/// the cap or a 404 fails the job at once, with the reason.
fn fetch_error(url: &str, err: FetchError) -> HandlerError {
    let message = format!("fetching {}: {err}", loggable(url));
    if err.is_retryable() { HandlerError::Retry(message) } else { HandlerError::Fatal(message) }
}
