//! The client side of a chaos run: each document follows a plan (submit; maybe a changed or an
//! identical resubmission, a delete, a cancel, a submission after the delete), its steps in
//! order, against whichever ingestion replica answers. A submission that got no answer, a 5xx
//! or a 429 was never promised and is sent again (to the next replica); only a 202 or 200
//! makes a job the pipeline owes an outcome for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::corpus::Document;
use crate::rng::Rng;
use crate::unix_ms;

/// The ingestion API behind several replicas; a request goes to the next one that answers.
pub struct Api {
    http: reqwest::Client,
    bases: Vec<String>,
    next: AtomicUsize,
    /// Requests sent again after no answer, a 5xx or a 429.
    pub retries: AtomicU64,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Api {
    pub fn new(bases: Vec<String>) -> Self {
        let http = millrace_e2e::with_key(reqwest::Client::builder(), millrace_e2e::ADMIN_KEY)
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        Self { http, bases, next: AtomicUsize::new(0), retries: AtomicU64::new(0) }
    }

    /// Sends until an answer that is not 5xx or 429 comes, or `give_up` passes (then `None`).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        give_up: Instant,
    ) -> Option<Reply> {
        let mut attempt = 0u32;
        loop {
            let base = &self.bases[self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len()];
            let mut request = self.http.request(method.clone(), format!("{base}{path}"));
            if let Some(body) = body {
                request = request.json(body);
            }
            let mut wait = Duration::from_millis(200 * u64::from(attempt.min(10)) + 100);
            if let Ok(response) = request.send().await {
                let status = response.status().as_u16();
                if let Some(secs) = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    wait = Duration::from_secs(secs.clamp(1, 5));
                }
                if status < 500 && status != 429 {
                    let text = response.text().await.unwrap_or_default();
                    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    return Some(Reply { status, body });
                }
            }
            if Instant::now() + wait > give_up {
                return None;
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// A job's status, or `None` while no replica answers it.
    pub async fn job_status(&self, job_id: &str) -> Option<Value> {
        let give_up = Instant::now() + Duration::from_secs(30);
        self.send(reqwest::Method::GET, &format!("/v1/jobs/{job_id}"), None, give_up)
            .await
            .filter(|reply| reply.status == 200)
            .map(|reply| reply.body)
    }
}

/// What a document's plan does after its first submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Once,
    /// A changed version some seconds later (possibly while the first is still running).
    Changed,
    /// The same bytes again once the first finished: the "unchanged" path.
    Identical,
    /// Deleted a few seconds after submission (possibly mid-flight).
    Delete,
    /// Deleted, then submitted again: the new submission must be what is visible.
    DeleteThenSubmit,
    /// Its job cancelled a moment after submission.
    Cancel,
}

impl Plan {
    /// Whether the plan's document is a long one, so that what follows its submission (a new
    /// version, a delete, a cancel) tends to meet its job still in flight.
    pub fn long(self) -> bool {
        matches!(self, Self::Changed | Self::Delete | Self::DeleteThenSubmit | Self::Cancel)
    }

    pub fn draw(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..60 => Self::Once,
            60..72 => Self::Changed,
            72..80 => Self::Identical,
            80..88 => Self::Delete,
            88..93 => Self::DeleteThenSubmit,
            _ => Self::Cancel,
        }
    }
}

/// One step the client took for a document, in the order it took them.
#[derive(Debug, Clone)]
pub enum Step {
    /// Accepted (202, or 200 for an unchanged document).
    Submitted { job_id: String, status: u16, revision: u64, at_ms: u64 },
    /// No replica accepted it before the run's deadline: not promised.
    NotAccepted { revision: u64, last: Option<u16> },
    /// `DELETE /v1/jobs/{id}` answered with the job now `cancelled` (effective) or already final.
    Cancel { job_id: String, effective: bool, status_after: String },
    /// `DELETE /v1/documents/{id}` (204, or 404 when no version was stored yet).
    Delete { status: Option<u16>, at_ms: u64 },
}

#[derive(Debug, Clone)]
pub struct DocumentRecord {
    pub document_id: String,
    pub hostile: bool,
    pub kind: String,
    pub plan: Option<Plan>,
    pub steps: Vec<Step>,
}

pub struct Submitter {
    pub api: Arc<Api>,
    /// Past this, requests are given up (the run's submission phase plus a margin).
    pub give_up: Instant,
}

impl Submitter {
    async fn submit(&self, document_id: &str, document: &Document, revision: u64) -> Step {
        let body = json!({
            "document_id": document_id,
            "content_base64": base64::engine::general_purpose::STANDARD.encode(&document.bytes),
            "content_type": document.content_type,
        });
        match self.api.send(reqwest::Method::POST, "/v1/ingest", Some(&body), self.give_up).await {
            Some(reply) if matches!(reply.status, 200 | 202) => Step::Submitted {
                job_id: reply.body["job_id"].as_str().unwrap_or_default().to_owned(),
                status: reply.status,
                revision,
                at_ms: unix_ms(),
            },
            Some(reply) => {
                eprintln!("chaos: submission of {document_id} refused with {}: {}", reply.status, reply.body);
                Step::NotAccepted { revision, last: Some(reply.status) }
            }
            None => Step::NotAccepted { revision, last: None },
        }
    }

    async fn delete(&self, document_id: &str) -> Step {
        let reply =
            self.api.send(reqwest::Method::DELETE, &format!("/v1/documents/{document_id}"), None, self.give_up).await;
        Step::Delete { status: reply.map(|r| r.status), at_ms: unix_ms() }
    }

    async fn cancel(&self, job_id: &str) -> Option<Step> {
        let reply = self.api.send(reqwest::Method::DELETE, &format!("/v1/jobs/{job_id}"), None, self.give_up).await?;
        let status_after = reply.body["status"].as_str().unwrap_or_default().to_owned();
        (reply.status == 200).then(|| Step::Cancel {
            job_id: job_id.to_owned(),
            effective: status_after == "cancelled",
            status_after,
        })
    }

    /// Polls a job until it is final (or the give-up time passes).
    async fn wait_final(&self, job_id: &str) {
        while Instant::now() < self.give_up {
            if let Some(job) = self.api.job_status(job_id).await
                && matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs one ordinary document's plan.
    pub async fn run_plan(
        &self,
        rng: &mut Rng,
        document_id: String,
        plan: Plan,
        make: impl Fn(u64) -> Document,
    ) -> DocumentRecord {
        let first = make(0);
        let kind = first.kind.clone();
        let mut steps = vec![self.submit(&document_id, &first, 0).await];
        let first_job = match &steps[0] {
            Step::Submitted { job_id, .. } => Some(job_id.clone()),
            _ => None,
        };
        if let Some(job_id) = first_job {
            match plan {
                Plan::Once => {}
                Plan::Changed => {
                    tokio::time::sleep(Duration::from_millis(rng.range(0, 1_500))).await;
                    steps.push(self.submit(&document_id, &make(1), 1).await);
                }
                Plan::Identical => {
                    self.wait_final(&job_id).await;
                    steps.push(self.submit(&document_id, &first, 0).await);
                }
                Plan::Delete | Plan::DeleteThenSubmit => {
                    tokio::time::sleep(Duration::from_millis(rng.range(0, 1_000))).await;
                    steps.push(self.delete(&document_id).await);
                    if plan == Plan::DeleteThenSubmit {
                        tokio::time::sleep(Duration::from_millis(rng.range(0, 3_000))).await;
                        steps.push(self.submit(&document_id, &make(2), 2).await);
                    }
                }
                Plan::Cancel => {
                    tokio::time::sleep(Duration::from_millis(rng.range(0, 400))).await;
                    if let Some(step) = self.cancel(&job_id).await {
                        steps.push(step);
                    }
                }
            }
        }
        DocumentRecord { document_id, hostile: false, kind, plan: Some(plan), steps }
    }

    pub async fn run_hostile(&self, document_id: String, document: Document) -> DocumentRecord {
        let step = self.submit(&document_id, &document, 0).await;
        DocumentRecord { document_id, hostile: true, kind: document.kind, plan: None, steps: vec![step] }
    }
}
