//! The entries of the stage streams, typed: what each carries, under which field names, read
//! and written here only. The chunking stream's entries are [`EntryRef`]s (a job); the
//! metadata, embeddings and storage streams' are [`BatchRef`]s (one batch of a job). Each may
//! also carry a `traceparent` (read by the stream worker, not here).
//!
//! Rust writes chunking entries (`JobStore::create`); the Lua scripts write the others with the
//! same names, which the script tests check by decoding what each script wrote.
//!
//! Two streams outside the stages have their own entries: the history stream's
//! [`HistoryEntry`] (what the durable history in PostgreSQL must record) and the crawl stream's
//! [`CrawlEntry`] (a page for a crawl to fetch).
//!
//! Every entry also carries the job's tenant and collection, copied from the job's record by
//! whoever writes the entry (never from a caller of a stage): a stage acts on the record's tenant
//! and refuses an entry whose tenant is not its job's ([`EntryRef::foreign`]).

use std::collections::HashMap;

use crate::Job;

/// The job an entry is for.
pub const JOB_ID: &str = "job_id";
/// The batch of a metadata, embeddings or storage entry (0-based).
pub const BATCH: &str = "batch";
/// The job's retry generation when the entry was written.
pub const GENERATION: &str = "gen";
/// The tenant of the entry's job (from its record).
pub const TENANT: &str = "tenant";
/// The collection of the entry's job's document (from its record).
pub const COLLECTION: &str = "collection";
/// The W3C trace context of whoever added the entry.
pub const TRACEPARENT: &str = millrace_common::telemetry::context::TRACEPARENT_FIELD;

/// What a chunking entry points at: a job, and the job's attempt the entry was written for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef {
    pub job_id: String,
    /// The job's retry generation when the entry was written (`gen`; entries written before
    /// generations existed have none and count as 0). An entry older than its job's generation
    /// is stale: the retry that started the new generation put back every step it needs.
    pub generation: u64,
    /// The job's tenant; empty in entries written before entries carried it.
    pub tenant: String,
    /// The job's collection; empty in entries written before entries carried it.
    pub collection: String,
}

/// One batch of one job, as carried in a metadata, embeddings or storage entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRef {
    pub job_id: String,
    pub batch: u32,
    pub generation: u64,
    pub tenant: String,
    pub collection: String,
}

impl EntryRef {
    /// Reads `job_id` and `gen` from a stream entry's fields (any stage's entry names a job).
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, String> {
        let job_id = job_id(fields).ok_or("entry has no job_id")?.to_owned();
        let generation = match fields.get(GENERATION) {
            None => 0,
            Some(text) => text.parse().map_err(|_| "entry has a bad generation")?,
        };
        let text = |name: &str| fields.get(name).cloned().unwrap_or_default();
        Ok(Self { job_id, generation, tenant: text(TENANT), collection: text(COLLECTION) })
    }

    /// The entry's fields, in the order they are written.
    pub fn to_fields(&self, traceparent: Option<&str>) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (JOB_ID, self.job_id.clone()),
            (GENERATION, self.generation.to_string()),
            (TENANT, self.tenant.clone()),
            (COLLECTION, self.collection.clone()),
        ];
        fields.extend(traceparent.map(|value| (TRACEPARENT, value.to_owned())));
        fields
    }

    /// Whether the entry belongs to an attempt of `job` that a dead-letter retry replaced.
    pub fn is_stale(&self, job: &Job) -> bool {
        self.generation < job.generation
    }

    /// Whether the entry names another tenant than its job's record: never written so by
    /// millrace (every writer copies the record's), so someone wrote the stream by hand, and
    /// the stage refuses the entry rather than act for either tenant.
    pub fn foreign(&self, job: &Job) -> bool {
        foreign(&self.tenant, job)
    }
}

fn foreign(tenant: &str, job: &Job) -> bool {
    !tenant.is_empty() && tenant != job.tenant_id
}

impl BatchRef {
    /// Reads `job_id`, `batch` and `gen` from a stream entry's fields.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, String> {
        let EntryRef { job_id, generation, tenant, collection } = EntryRef::from_fields(fields)?;
        let batch =
            fields.get(BATCH).ok_or("entry has no batch")?.parse().map_err(|_| "entry has a bad batch number")?;
        Ok(Self { job_id, batch, generation, tenant, collection })
    }

    /// The entry's fields, in the order they are written.
    pub fn to_fields(&self, traceparent: Option<&str>) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (JOB_ID, self.job_id.clone()),
            (BATCH, self.batch.to_string()),
            (GENERATION, self.generation.to_string()),
            (TENANT, self.tenant.clone()),
            (COLLECTION, self.collection.clone()),
        ];
        fields.extend(traceparent.map(|value| (TRACEPARENT, value.to_owned())));
        fields
    }

    pub fn is_stale(&self, job: &Job) -> bool {
        self.generation < job.generation
    }

    /// See [`EntryRef::foreign`].
    pub fn foreign(&self, job: &Job) -> bool {
        foreign(&self.tenant, job)
    }

    /// The job-level part of the entry (what `fail` and the chunking helpers take).
    pub fn entry(&self) -> EntryRef {
        EntryRef {
            job_id: self.job_id.clone(),
            generation: self.generation,
            tenant: self.tenant.clone(),
            collection: self.collection.clone(),
        }
    }
}

/// The kind of a history entry (`kind`).
pub const KIND: &str = "kind";
/// The run a history or crawl entry is for (empty in a history entry of a job of no run).
pub const RUN_ID: &str = "run_id";
/// The page a crawl entry or a `page_skipped` history entry names.
pub const URL: &str = "url";
/// Links followed from the crawl's start page to reach the page (0 for the start page).
pub const DEPTH: &str = "depth";
/// Why a page was skipped.
pub const REASON: &str = "reason";
/// The HTTP status of a skipped page's fetch, when there was an answer.
pub const HTTP_STATUS: &str = "http_status";

/// One entry of the history stream (`Keys::history_stream`): what the durable history must
/// record. At-least-once: the reader's writes are idempotent (a job's row is upserted from its
/// record, which is read when the entry is handled, so entries only say what to look at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryEntry {
    /// A job was created, or reopened by a retry (`kind` = `job_queued`).
    JobQueued { job_id: String, tenant: String, run_id: String },
    /// A job reached a final status (`job_finished`; written by `FINISH`, and by the creation
    /// of a job that completed at once because its document was unchanged).
    JobFinished { job_id: String, tenant: String, run_id: String },
    /// A crawl did not take a page, and why (`page_skipped`): disallowed by robots.txt, out of
    /// scope, excluded, a content type millrace does not parse, too large, a fetch error...
    PageSkipped { run_id: String, tenant: String, url: String, reason: String, http_status: Option<u16>, depth: u32 },
    /// A run has nothing left to do: no item or page still to submit, no job unfinished
    /// (`run_done`; written once per run by the script that saw both counts reach zero).
    RunDone { run_id: String, tenant: String },
}

impl HistoryEntry {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JobQueued { .. } => "job_queued",
            Self::JobFinished { .. } => "job_finished",
            Self::PageSkipped { .. } => "page_skipped",
            Self::RunDone { .. } => "run_done",
        }
    }

    pub fn tenant(&self) -> &str {
        match self {
            Self::JobQueued { tenant, .. }
            | Self::JobFinished { tenant, .. }
            | Self::PageSkipped { tenant, .. }
            | Self::RunDone { tenant, .. } => tenant,
        }
    }

    /// The entry's fields, in the order they are written (the Lua scripts write the same).
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![(KIND, self.kind().to_owned())];
        match self {
            Self::JobQueued { job_id, tenant, run_id } | Self::JobFinished { job_id, tenant, run_id } => {
                fields.extend([(JOB_ID, job_id.clone()), (TENANT, tenant.clone()), (RUN_ID, run_id.clone())]);
            }
            Self::PageSkipped { run_id, tenant, url, reason, http_status, depth } => {
                fields.extend([
                    (RUN_ID, run_id.clone()),
                    (TENANT, tenant.clone()),
                    (URL, url.clone()),
                    (REASON, reason.clone()),
                    (DEPTH, depth.to_string()),
                ]);
                fields.extend(http_status.map(|status| (HTTP_STATUS, status.to_string())));
            }
            Self::RunDone { run_id, tenant } => fields.extend([(RUN_ID, run_id.clone()), (TENANT, tenant.clone())]),
        }
        fields
    }

    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, String> {
        let text = |name: &str| fields.get(name).cloned().unwrap_or_default();
        let required = |name: &str| {
            fields.get(name).filter(|v| !v.is_empty()).cloned().ok_or(format!("history entry has no {name}"))
        };
        let kind = fields.get(KIND).ok_or("history entry has no kind")?;
        Ok(match kind.as_str() {
            "job_queued" => Self::JobQueued { job_id: required(JOB_ID)?, tenant: text(TENANT), run_id: text(RUN_ID) },
            "job_finished" => {
                Self::JobFinished { job_id: required(JOB_ID)?, tenant: text(TENANT), run_id: text(RUN_ID) }
            }
            "page_skipped" => Self::PageSkipped {
                run_id: required(RUN_ID)?,
                tenant: text(TENANT),
                url: required(URL)?,
                reason: text(REASON),
                http_status: fields.get(HTTP_STATUS).and_then(|v| v.parse().ok()),
                depth: fields.get(DEPTH).and_then(|v| v.parse().ok()).unwrap_or(0),
            },
            "run_done" => Self::RunDone { run_id: required(RUN_ID)?, tenant: text(TENANT) },
            other => return Err(format!("history entry of unknown kind {other:?}")),
        })
    }
}

/// One page for a crawl to fetch (an entry of `Keys::crawl_stream`), with the run's tenant and
/// collection copied from the run's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawlEntry {
    pub run_id: String,
    pub tenant: String,
    pub collection: String,
    /// Normalised (see the crawler); already counted in the run's `pending`.
    pub url: String,
    pub depth: u32,
}

impl CrawlEntry {
    pub fn to_fields(&self, traceparent: Option<&str>) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (RUN_ID, self.run_id.clone()),
            (TENANT, self.tenant.clone()),
            (COLLECTION, self.collection.clone()),
            (URL, self.url.clone()),
            (DEPTH, self.depth.to_string()),
        ];
        fields.extend(traceparent.map(|value| (TRACEPARENT, value.to_owned())));
        fields
    }

    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, String> {
        let required = |name: &str| {
            fields.get(name).filter(|v| !v.is_empty()).cloned().ok_or(format!("crawl entry has no {name}"))
        };
        Ok(Self {
            run_id: required(RUN_ID)?,
            tenant: required(TENANT)?,
            collection: required(COLLECTION)?,
            url: required(URL)?,
            depth: fields.get(DEPTH).map_or(Ok(0), |v| v.parse().map_err(|_| "crawl entry has a bad depth"))?,
        })
    }
}

/// The job an entry names, whatever else it holds or lacks: enough to act on the job of an
/// entry that is given up on or dead-lettered because it is malformed.
pub fn job_id(fields: &HashMap<String, String>) -> Option<&str> {
    fields.get(JOB_ID).map(String::as_str)
}

/// The batch an entry names, if it names one that can be read.
pub fn batch(fields: &HashMap<String, String>) -> Option<u32> {
    fields.get(BATCH).and_then(|text| text.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(fields: Vec<(&'static str, String)>) -> HashMap<String, String> {
        fields.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
    }

    #[test]
    fn entries_read_back_what_they_write() {
        let entry = EntryRef { job_id: "j".into(), generation: 2, tenant: "acme".into(), collection: "hr".into() };
        assert_eq!(EntryRef::from_fields(&decoded(entry.to_fields(None))), Ok(entry.clone()));
        let fields = decoded(entry.to_fields(Some("00-trace")));
        assert_eq!(fields.get(TRACEPARENT).map(String::as_str), Some("00-trace"));
        let batch = BatchRef {
            job_id: "j".into(),
            batch: 7,
            generation: 1,
            tenant: "acme".into(),
            collection: "default".into(),
        };
        assert_eq!(BatchRef::from_fields(&decoded(batch.to_fields(None))), Ok(batch));
    }

    #[test]
    fn an_entry_without_a_generation_is_of_the_first_attempt() {
        let fields = HashMap::from([(JOB_ID.to_owned(), "j".to_owned()), (BATCH.to_owned(), "3".to_owned())]);
        assert_eq!(
            BatchRef::from_fields(&fields),
            Ok(BatchRef {
                job_id: "j".into(),
                batch: 3,
                generation: 0,
                tenant: String::new(),
                collection: String::new()
            })
        );
    }

    #[test]
    fn an_entry_naming_another_tenant_than_its_job_is_foreign() {
        let job = Job::from_hash(&HashMap::from([
            ("job_id".to_owned(), "j".to_owned()),
            ("status".to_owned(), "running".to_owned()),
            ("tenant_id".to_owned(), "acme".to_owned()),
        ]))
        .unwrap();
        let entry = |tenant: &str| EntryRef {
            job_id: "j".into(),
            generation: 0,
            tenant: tenant.into(),
            collection: String::new(),
        };
        assert!(!entry("acme").foreign(&job));
        assert!(!entry("").foreign(&job), "an entry written before entries carried the tenant");
        assert!(entry("globex").foreign(&job));
    }

    #[test]
    fn history_and_crawl_entries_read_back_what_they_write() {
        let entries = [
            HistoryEntry::JobQueued { job_id: "j".into(), tenant: "acme".into(), run_id: String::new() },
            HistoryEntry::JobFinished { job_id: "j".into(), tenant: "acme".into(), run_id: "r".into() },
            HistoryEntry::PageSkipped {
                run_id: "r".into(),
                tenant: "acme".into(),
                url: "http://a.example/x".into(),
                reason: "robots.txt".into(),
                http_status: Some(404),
                depth: 2,
            },
            HistoryEntry::RunDone { run_id: "r".into(), tenant: "acme".into() },
        ];
        for entry in entries {
            assert_eq!(HistoryEntry::from_fields(&decoded(entry.to_fields())), Ok(entry.clone()));
        }
        let crawl = CrawlEntry {
            run_id: "r".into(),
            tenant: "acme".into(),
            collection: "web".into(),
            url: "http://a.example/".into(),
            depth: 1,
        };
        assert_eq!(CrawlEntry::from_fields(&decoded(crawl.to_fields(Some("00-t")))), Ok(crawl));
        let unknown = HashMap::from([(KIND.to_owned(), "job_exploded".to_owned())]);
        assert_eq!(
            HistoryEntry::from_fields(&unknown),
            Err("history entry of unknown kind \"job_exploded\"".to_owned())
        );
    }

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        let no_job = HashMap::from([(BATCH.to_owned(), "1".to_owned())]);
        assert_eq!(EntryRef::from_fields(&no_job), Err("entry has no job_id".to_owned()));
        let no_batch = HashMap::from([(JOB_ID.to_owned(), "j".to_owned())]);
        assert_eq!(BatchRef::from_fields(&no_batch), Err("entry has no batch".to_owned()));
        let bad_gen = HashMap::from([(JOB_ID.to_owned(), "j".to_owned()), (GENERATION.to_owned(), "x".to_owned())]);
        assert_eq!(EntryRef::from_fields(&bad_gen), Err("entry has a bad generation".to_owned()));
        assert_eq!((job_id(&bad_gen), batch(&no_job)), (Some("j"), Some(1)));
    }
}
