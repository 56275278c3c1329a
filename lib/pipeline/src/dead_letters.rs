//! The dead-letter streams as an operator sees them: what failed for good, where and why, and
//! retrying it once the cause is fixed.
//!
//! A stage's worker copies an entry it gives up on to `{prefix}:dlq:{stage}` (with
//! `source_stream`, `source_id`, `deliveries`, `error` and the entry's own fields) after marking
//! its job failed. Putting the entry back on its stream would do nothing: every stage skips the
//! entries of a finished job, and meanwhile the job's other entries were skipped and storage
//! discarded what the version had stored. So a retry is of the job, in one script
//! (`RETRY_JOB`): reopen it and put back every step it still lacks, and take all its dead
//! letters out, or refuse with a reason and change nothing.

use std::collections::{BTreeMap, HashMap};

use millrace_common::telemetry::context;
use millrace_common::time::rfc3339_from_millis;
use redis::streams::{StreamId, StreamRangeReply};
use serde::Serialize;

use crate::scripts::RETRY_JOB;
use crate::{JobStatus, JobStore, JobStoreError, Stage};

/// Entries read from a dead-letter stream per command.
const PAGE: usize = 500;

/// One dead-lettered entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream; retry names it.
    pub id: String,
    pub stage: &'static str,
    pub job_id: String,
    /// The batch, for the stages that work per batch (all but chunking).
    pub batch: Option<u32>,
    /// Deliveries it had when it was given up on (1 for a fatal error).
    pub deliveries: u64,
    pub error: String,
    /// When it was dead-lettered (from its id).
    pub dead_lettered_at: String,
    /// Its id on the stage's stream.
    pub source_id: String,
    /// Its job's status now; None when the job's record is gone (expired).
    pub job_status: Option<JobStatus>,
    /// Its job's tenant: the entry's, else its job record's; empty when neither says (an entry
    /// written before entries carried the tenant, whose job's record expired).
    pub tenant_id: String,
}

impl DeadLetter {
    fn from_entry(stage: Stage, entry: &StreamId) -> Self {
        let fields: HashMap<String, String> = entry
            .map
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), redis::from_redis_value_ref::<String>(value).ok()?)))
            .collect();
        // The fields the stream worker adds when it dead-letters an entry, beside the entry's own.
        let text = |name: &str| fields.get(name).cloned().unwrap_or_default();
        let millis = entry.id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()).unwrap_or(0);
        Self {
            id: entry.id.clone(),
            stage: stage.name(),
            job_id: crate::entry::job_id(&fields).unwrap_or_default().to_owned(),
            batch: crate::entry::batch(&fields),
            deliveries: text("deliveries").parse().unwrap_or(0),
            error: text("error"),
            dead_lettered_at: rfc3339_from_millis(millis),
            source_id: text("source_id"),
            job_status: None,
            tenant_id: text(crate::entry::TENANT),
        }
    }
}

/// A stage's dead letters: how many there are, and the newest ones.
#[derive(Debug, Clone, Serialize)]
pub struct StageDeadLetters {
    pub stage: &'static str,
    pub count: u64,
    pub entries: Vec<DeadLetter>,
}

/// An entry retried: its job reopened (or, for a job that was still running, the entry put
/// back on its stream).
#[derive(Debug, Clone, Serialize)]
pub struct Retried {
    pub id: String,
    pub stage: &'static str,
    pub job_id: String,
    pub batch: Option<u32>,
    /// The job's status after the retry: queued (back to chunking) or running.
    pub job_status: JobStatus,
    /// Entries added to each stage's stream (stages with none left out).
    pub requeued: BTreeMap<&'static str, u32>,
    /// The job's tenant (from its record).
    pub tenant_id: String,
}

/// An entry not retried, and why; it stays where it was.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub id: String,
    pub stage: &'static str,
    pub job_id: Option<String>,
    pub batch: Option<u32>,
    pub reason: String,
}

/// A dead letter not named by the request whose job was retried by it: removed, because the
/// retry put back its work too.
#[derive(Debug, Clone, Serialize)]
pub struct Superseded {
    pub id: String,
    pub stage: &'static str,
    pub job_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryReport {
    pub stage: &'static str,
    pub retried: Vec<Retried>,
    pub refused: Vec<Refused>,
    pub superseded: Vec<Superseded>,
}

impl DeadLetter {
    pub fn to_proto(&self) -> millrace_proto::DeadLetter {
        millrace_proto::DeadLetter {
            id: self.id.clone(),
            stage: self.stage.to_owned(),
            job_id: self.job_id.clone(),
            batch: self.batch,
            deliveries: self.deliveries,
            error: self.error.clone(),
            dead_lettered_at: self.dead_lettered_at.clone(),
            source_id: self.source_id.clone(),
            job_status: self.job_status.map_or(millrace_proto::JobStatus::Unspecified, JobStatus::to_proto) as i32,
            tenant_id: self.tenant_id.clone(),
        }
    }
}

impl StageDeadLetters {
    pub fn to_proto(&self) -> millrace_proto::StageDeadLetters {
        millrace_proto::StageDeadLetters {
            stage: self.stage.to_owned(),
            count: self.count,
            entries: self.entries.iter().map(DeadLetter::to_proto).collect(),
        }
    }
}

impl RetryReport {
    pub fn to_proto(&self) -> millrace_proto::RetryDeadLettersResponse {
        millrace_proto::RetryDeadLettersResponse {
            stage: self.stage.to_owned(),
            retried: self
                .retried
                .iter()
                .map(|r| millrace_proto::RetriedDeadLetter {
                    id: r.id.clone(),
                    stage: r.stage.to_owned(),
                    job_id: r.job_id.clone(),
                    batch: r.batch,
                    job_status: r.job_status.to_proto() as i32,
                    requeued: r.requeued.iter().map(|(stage, n)| ((*stage).to_owned(), *n)).collect(),
                })
                .collect(),
            refused: self
                .refused
                .iter()
                .map(|r| millrace_proto::RefusedDeadLetter {
                    id: r.id.clone(),
                    stage: r.stage.to_owned(),
                    job_id: r.job_id.clone().unwrap_or_default(),
                    batch: r.batch,
                    reason: r.reason.clone(),
                })
                .collect(),
            superseded: self
                .superseded
                .iter()
                .map(|s| millrace_proto::SupersededDeadLetter {
                    id: s.id.clone(),
                    stage: s.stage.to_owned(),
                    job_id: s.job_id.clone(),
                })
                .collect(),
        }
    }
}

/// What `RETRY_JOB` answered for one entry.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The failed job was reopened; entries added per stage (in `Stage::ALL` order).
    Reopened { status: JobStatus, requeued: [u32; 4] },
    /// The job was not failed: this entry alone went back on its stream.
    Requeued { status: JobStatus },
    /// The entry is no longer in the dead-letter stream.
    Missing,
    /// The job's `batches_total` was not what the call assumed.
    Stale,
    /// Nothing changed, for this reason (the same for every entry of the job).
    Refused(String),
}

impl JobStore {
    /// The newest `limit` dead letters of `stage`, newest first, with their jobs' status, and
    /// how many the stage holds.
    pub async fn dead_letters(&self, stage: Stage, limit: usize) -> Result<StageDeadLetters, JobStoreError> {
        let key = self.keys().dead_letters(stage);
        let mut conn = self.pool().get().await?;
        let (count, newest): (u64, StreamRangeReply) = redis::pipe()
            .cmd("XLEN")
            .arg(&key)
            .cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        let mut entries: Vec<DeadLetter> =
            newest.ids.iter().map(|entry| DeadLetter::from_entry(stage, entry)).collect();
        if !entries.is_empty() {
            let mut pipe = redis::pipe();
            for entry in &entries {
                pipe.cmd("HMGET").arg(self.keys().job(&entry.job_id)).arg("status").arg("tenant_id");
            }
            let records: Vec<(Option<String>, Option<String>)> = pipe.query_async(&mut conn).await?;
            for (entry, (status, tenant_id)) in entries.iter_mut().zip(records) {
                entry.job_status = status.as_deref().and_then(JobStatus::parse);
                if entry.tenant_id.is_empty() {
                    entry.tenant_id = tenant_id.unwrap_or_default();
                }
            }
        }
        Ok(StageDeadLetters { stage: stage.name(), count, entries })
    }

    /// Retries dead letters of `stage`: those named by `ids`, or all of them (oldest first).
    /// Each job is retried once however many of its entries are named; see [`RETRY_JOB`] for
    /// what a retry does and refuses. An id that is not in the stage's dead-letter stream is
    /// refused.
    pub async fn retry_dead_letters(&self, stage: Stage, ids: Option<&[String]>) -> Result<RetryReport, JobStoreError> {
        let mut all: Vec<DeadLetter> = Vec::new();
        for each in Stage::ALL {
            all.extend(self.read_dead_letters(each).await?);
        }
        let mut report =
            RetryReport { stage: stage.name(), retried: Vec::new(), refused: Vec::new(), superseded: Vec::new() };
        let of_stage = |entry: &&DeadLetter| entry.stage == stage.name();
        let selected: Vec<DeadLetter> = match ids {
            None => all.iter().filter(of_stage).cloned().collect(),
            Some(ids) => {
                let mut selected: Vec<DeadLetter> = Vec::new();
                for id in ids {
                    if selected.iter().any(|entry| &entry.id == id) {
                        continue;
                    }
                    match all.iter().filter(of_stage).find(|entry| &entry.id == id) {
                        Some(entry) => selected.push(entry.clone()),
                        None => report.refused.push(Refused {
                            id: id.clone(),
                            stage: stage.name(),
                            job_id: None,
                            batch: None,
                            reason: format!("no entry {id} in the dead-letter stream of the {stage} stage"),
                        }),
                    }
                }
                selected
            }
        };

        // Entries by job, in the order of each job's first entry.
        let mut jobs: Vec<(String, Vec<DeadLetter>)> = Vec::new();
        for entry in selected {
            if entry.job_id.is_empty() {
                report.refused.push(refused(&entry, "the entry names no job".to_owned()));
                continue;
            }
            match jobs.iter_mut().find(|(job_id, _)| *job_id == entry.job_id) {
                Some((_, entries)) => entries.push(entry),
                None => jobs.push((entry.job_id.clone(), vec![entry])),
            }
        }
        let mut by_job: HashMap<&str, Vec<&DeadLetter>> = HashMap::new();
        for entry in &all {
            by_job.entry(entry.job_id.as_str()).or_default().push(entry);
        }

        for (job_id, mut entries) in jobs {
            let dead = by_job.get(job_id.as_str()).cloned().unwrap_or_default();
            while !entries.is_empty() {
                let entry = entries.remove(0);
                let (outcome, tenant_id) = self.retry_entry(&entry, &dead).await?;
                let retried = |entry: &DeadLetter, status, requeued| Retried {
                    tenant_id: if tenant_id.is_empty() { entry.tenant_id.clone() } else { tenant_id.clone() },
                    ..retried(entry, status, requeued)
                };
                match outcome {
                    Outcome::Missing => report.refused.push(refused(
                        &entry,
                        "the entry is no longer in the dead-letter stream (retried meanwhile?)".to_owned(),
                    )),
                    Outcome::Requeued { status } => {
                        tracing::info!(job_id, stage = entry.stage, id = %entry.id, "dead letter put back on its stream");
                        let requeued = BTreeMap::from([(entry.stage, 1)]);
                        report.retried.push(retried(&entry, status, requeued));
                    }
                    Outcome::Reopened { status, requeued } => {
                        tracing::info!(job_id, stage = entry.stage, id = %entry.id, ?requeued, "failed job reopened from its dead letter");
                        let requeued: BTreeMap<&'static str, u32> = Stage::ALL
                            .iter()
                            .zip(requeued)
                            .filter(|(_, n)| *n > 0)
                            .map(|(s, n)| (s.name(), n))
                            .collect();
                        // Ids are per stream: an entry is its stage and id.
                        let named = |d: &DeadLetter| {
                            std::iter::once(&entry).chain(&entries).any(|e| e.stage == d.stage && e.id == d.id)
                        };
                        report.superseded.extend(dead.iter().filter(|d| !named(d)).map(|d| Superseded {
                            id: d.id.clone(),
                            stage: d.stage,
                            job_id: d.job_id.clone(),
                        }));
                        report.retried.push(retried(&entry, status, requeued.clone()));
                        report.retried.extend(entries.drain(..).map(|e| retried(&e, status, BTreeMap::new())));
                    }
                    Outcome::Stale => report
                        .refused
                        .push(refused(&entry, "the job changed while it was being retried; try again".to_owned())),
                    Outcome::Refused(reason) => {
                        report.refused.push(refused(&entry, reason.clone()));
                        report.refused.extend(entries.drain(..).map(|e| refused(&e, reason.clone())));
                    }
                }
            }
        }
        Ok(report)
    }

    /// Every entry of a stage's dead-letter stream, oldest first.
    async fn read_dead_letters(&self, stage: Stage) -> Result<Vec<DeadLetter>, JobStoreError> {
        let key = self.keys().dead_letters(stage);
        let mut conn = self.pool().get().await?;
        let mut entries = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&key)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await?;
            let full = page.ids.len() == PAGE;
            if let Some(last) = page.ids.last() {
                start = format!("({}", last.id);
            }
            entries.extend(page.ids.iter().map(|entry| DeadLetter::from_entry(stage, entry)));
            if !full {
                return Ok(entries);
            }
        }
    }

    /// Runs `RETRY_JOB` for one entry (reading the job's batch count again once if it changed
    /// in between), removing `dead` (all the job's dead letters) if the job is reopened. Also
    /// answers the job's tenant, from its record (empty when the record is gone).
    async fn retry_entry(&self, entry: &DeadLetter, dead: &[&DeadLetter]) -> Result<(Outcome, String), JobStoreError> {
        let mut conn = self.pool().get().await?;
        let job_id = entry.job_id.as_str();
        let keys = self.keys();
        let (batches, tenant_id, run_id): (Option<u32>, Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(keys.job(job_id))
            .arg("batches_total")
            .arg("tenant_id")
            .arg("run_id")
            .query_async(&mut conn)
            .await?;
        let (mut batches, tenant_id) = (batches.unwrap_or(0), tenant_id.unwrap_or_default());
        let run_key = keys.run(run_id.as_deref().unwrap_or_default());
        for _ in 0..2 {
            let mut invocation = RETRY_JOB.prepare_invoke();
            invocation
                .key(keys.job(job_id))
                .key(keys.join(job_id))
                .key(keys.job_events(job_id))
                .key(keys.active_jobs())
                .key(keys.finished_jobs())
                .key(keys.content(job_id));
            for stage in Stage::ALL {
                invocation.key(keys.stream(stage));
            }
            for stage in Stage::ALL {
                invocation.key(keys.dead_letters(stage));
            }
            invocation
                .key(keys.job_status_counts())
                .key(keys.tenant_backlog())
                .key(keys.history_stream())
                .key(&run_key);
            for batch in 0..batches {
                invocation
                    .key(keys.batch(job_id, batch))
                    .key(keys.metadata_result(job_id, batch))
                    .key(keys.embeddings_result(job_id, batch));
            }
            invocation
                .arg(job_id)
                .arg(self.retention().as_secs().max(1))
                .arg(stage_number(entry.stage))
                .arg(&entry.id)
                .arg(batches)
                .arg(context::traceparent().unwrap_or_default());
            for each in dead {
                invocation.arg(stage_number(each.stage)).arg(&each.id);
            }
            let answer: Vec<String> = invocation.invoke_async(&mut conn).await?;
            let outcome = outcome(&answer, job_id);
            match (outcome, answer.get(1).and_then(|n| n.parse::<u32>().ok())) {
                (Outcome::Stale, Some(total)) => batches = total,
                (outcome, _) => return Ok((outcome, tenant_id)),
            }
        }
        Ok((Outcome::Stale, tenant_id))
    }
}

fn stage_number(name: &str) -> usize {
    Stage::ALL.iter().position(|stage| stage.name() == name).map_or(0, |i| i + 1)
}

/// Reads `RETRY_JOB`'s answer.
fn outcome(answer: &[String], job_id: &str) -> Outcome {
    let word = |i: usize| answer.get(i).map(String::as_str).unwrap_or_default();
    let resubmit = "submit the document again to process it";
    match word(0) {
        "retried" => {
            let mut requeued = [0; 4];
            for (i, count) in requeued.iter_mut().enumerate() {
                *count = word(2 + i).parse().unwrap_or(0);
            }
            Outcome::Reopened { status: JobStatus::parse(word(1)).unwrap_or(JobStatus::Running), requeued }
        }
        "requeued" => Outcome::Requeued { status: JobStatus::parse(word(1)).unwrap_or(JobStatus::Running) },
        "missing" => Outcome::Missing,
        "stale" => Outcome::Stale,
        "empty" => Outcome::Refused("the entry has no fields of its own to put back on its stream".to_owned()),
        "expired" => Outcome::Refused(format!(
            "job {job_id} no longer exists (its record expired after the retention period); {resubmit}"
        )),
        "cancelled" => Outcome::Refused(format!("job {job_id} was cancelled; {resubmit}")),
        "completed" => Outcome::Refused(format!("job {job_id} has completed since; there is nothing to retry")),
        "content" => {
            Outcome::Refused(format!("the document of job {job_id} is no longer stored (expired); {resubmit}"))
        }
        "batch" => {
            Outcome::Refused(format!("batch {} of job {job_id} is no longer stored (expired); {resubmit}", word(1)))
        }
        "result" => Outcome::Refused(format!(
            "the {} result of batch {} of job {job_id} is no longer stored (expired); {resubmit}",
            word(2),
            word(1)
        )),
        other => Outcome::Refused(format!("unexpected answer {other:?} from the retry script")),
    }
}

fn refused(entry: &DeadLetter, reason: String) -> Refused {
    Refused {
        id: entry.id.clone(),
        stage: entry.stage,
        job_id: (!entry.job_id.is_empty()).then(|| entry.job_id.clone()),
        batch: entry.batch,
        reason,
    }
}

fn retried(entry: &DeadLetter, job_status: JobStatus, requeued: BTreeMap<&'static str, u32>) -> Retried {
    Retried {
        id: entry.id.clone(),
        stage: entry.stage,
        job_id: entry.job_id.clone(),
        batch: entry.batch,
        job_status,
        requeued,
        tenant_id: entry.tenant_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_answers_become_outcomes() {
        let answer = |words: &[&str]| outcome(&words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>(), "j1");
        assert_eq!(
            answer(&["retried", "running", "0", "1", "0", "3"]),
            Outcome::Reopened { status: JobStatus::Running, requeued: [0, 1, 0, 3] }
        );
        assert_eq!(answer(&["requeued", "queued"]), Outcome::Requeued { status: JobStatus::Queued });
        assert_eq!(answer(&["missing"]), Outcome::Missing);
        assert_eq!(answer(&["stale", "4"]), Outcome::Stale);
        let Outcome::Refused(reason) = answer(&["cancelled"]) else { panic!("not refused") };
        assert_eq!(reason, "job j1 was cancelled; submit the document again to process it");
        let Outcome::Refused(reason) = answer(&["result", "2", "metadata"]) else { panic!("not refused") };
        assert!(reason.starts_with("the metadata result of batch 2 of job j1 is no longer stored"), "{reason}");
    }

    #[test]
    fn stages_are_numbered_as_the_script_expects() {
        assert_eq!(stage_number("chunking"), 1);
        assert_eq!(stage_number("storage"), 4);
        assert_eq!(Stage::parse("embeddings"), Some(Stage::Embeddings));
        assert_eq!(Stage::parse("dlq"), None);
    }
}
