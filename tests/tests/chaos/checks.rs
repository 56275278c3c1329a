//! The invariants checked once the pipeline has drained, from what the client did (its steps
//! per document), the jobs' records, PostgreSQL read directly and the dead-letter API.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::client::{Api, DocumentRecord, Step};

/// One invariant's verdict, with counts and the first few offenders.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: &'static str,
    pub rule: &'static str,
    pub checked: usize,
    pub violations: Vec<String>,
    pub note: String,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// A job as its record shows it at the end.
#[derive(Debug, Clone)]
pub struct JobView {
    pub status: String,
    pub version: u64,
    pub total: u64,
    pub error_stage: String,
    pub error_message: String,
    pub document_id: String,
}

impl JobView {
    pub fn from_json(job: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Self {
            status: text(&job["status"]),
            version: job["version"].as_u64().unwrap_or(0),
            total: job["chunks"]["total"].as_u64().unwrap_or(0),
            error_stage: text(&job["error"]["stage"]),
            error_message: text(&job["error"]["message"]),
            document_id: text(&job["document_id"]),
        }
    }
}

/// The stored state: `documents` rows and chunk rows per (document, version).
#[derive(Debug, Default)]
pub struct Stored {
    /// document → (version, chunk_count)
    pub documents: BTreeMap<String, (i64, i32)>,
    /// document → version → rows
    pub rows: BTreeMap<String, BTreeMap<i64, i64>>,
    /// (document, version, chunk_index) stored more than once
    pub duplicates: Vec<(String, i64, i32, i64)>,
}

impl Stored {
    pub async fn read(client: &tokio_postgres::Client) -> Self {
        let mut stored = Self::default();
        for row in client.query("SELECT document_id, version, chunk_count FROM documents", &[]).await.unwrap() {
            stored.documents.insert(row.get(0), (row.get(1), row.get(2)));
        }
        for row in client
            .query("SELECT document_id, version, count(*) FROM chunks GROUP BY document_id, version", &[])
            .await
            .unwrap()
        {
            stored.rows.entry(row.get(0)).or_default().insert(row.get(1), row.get(2));
        }
        for row in client
            .query(
                "SELECT document_id, version, chunk_index, count(*) FROM chunks
                 GROUP BY tenant_id, document_id, version, chunk_index HAVING count(*) > 1",
                &[],
            )
            .await
            .unwrap()
        {
            stored.duplicates.push((row.get(0), row.get(1), row.get(2), row.get(3)));
        }
        stored
    }

    fn rows_of(&self, document: &str, version: i64) -> i64 {
        self.rows.get(document).and_then(|v| v.get(&version)).copied().unwrap_or(0)
    }
}

/// What the client expects to be visible for a document: the job id and view of the last of
/// its submissions since its last delete whose job completed ("last submission wins"; a later
/// one that was cancelled leaves the earlier one visible). `None`: nothing may be visible.
pub fn expected_job<'j>(record: &DocumentRecord, jobs: &'j BTreeMap<String, JobView>) -> Option<(String, &'j JobView)> {
    let since = record.steps.iter().rposition(|s| matches!(s, Step::Delete { .. })).map_or(0, |i| i + 1);
    record.steps[since..].iter().rev().find_map(|step| match step {
        Step::Submitted { job_id, .. } => {
            jobs.get(job_id).filter(|job| job.status == "completed").map(|job| (job_id.clone(), job))
        }
        _ => None,
    })
}

pub struct Inputs<'a> {
    pub records: &'a [DocumentRecord],
    pub jobs: &'a BTreeMap<String, JobView>,
    pub stored: &'a Stored,
    /// Dead letters: (stage, entry id, job id, the job's document if known).
    pub dead_letters: &'a [(String, String, String, String)],
    pub dlq_total: u64,
    /// Search hits checked, and those that were not a current version's chunk.
    pub search_hits: usize,
    pub stale_hits: Vec<String>,
}

pub fn check(inputs: &Inputs<'_>) -> Vec<Verdict> {
    let Inputs { records, jobs, stored, .. } = inputs;
    let hostile: BTreeSet<&str> = records.iter().filter(|r| r.hostile).map(|r| r.document_id.as_str()).collect();
    let mut verdicts = Vec::new();

    // 1. Every promised job ended, and ended in a way it may.
    let mut v = Verdict {
        name: "every accepted job ended as it may",
        rule: "completed; failed with an error stage and reason (hostile documents only); cancelled only if the suite cancelled it or deleted its document after submitting it (with a message saying so)",
        checked: 0,
        violations: Vec::new(),
        note: String::new(),
    };
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for record in records.iter() {
        for (i, step) in record.steps.iter().enumerate() {
            let Step::Submitted { job_id, .. } = step else { continue };
            v.checked += 1;
            let Some(job) = jobs.get(job_id) else {
                v.violations.push(format!("{}: job {job_id} is unknown (lost)", record.document_id));
                *by_status.entry("lost".into()).or_default() += 1;
                continue;
            };
            *by_status.entry(job.status.clone()).or_default() += 1;
            let later = &record.steps[i + 1..];
            let cancelled_by_suite =
                later.iter().any(|s| matches!(s, Step::Cancel { job_id: id, effective: true, .. } if id == job_id));
            let deleted_after = later.iter().any(|s| matches!(s, Step::Delete { .. }));
            let problem = match job.status.as_str() {
                "completed" if cancelled_by_suite => {
                    Some("completed although the suite's cancel said cancelled".to_owned())
                }
                "completed" => None,
                "failed" if !record.hostile => {
                    Some(format!("an ordinary document failed at {}: {}", job.error_stage, job.error_message))
                }
                "failed" if job.error_stage.is_empty() || job.error_message.is_empty() => {
                    Some("failed without an error stage and reason".to_owned())
                }
                "failed" => None,
                "cancelled" if cancelled_by_suite => None,
                "cancelled" if deleted_after && job.error_message.to_lowercase().contains("delet") => None,
                "cancelled" if deleted_after => {
                    Some(format!("cancelled by the delete without a message saying so ({:?})", job.error_message))
                }
                "cancelled" => {
                    Some("cancelled, but the suite neither cancelled it nor deleted its document".to_owned())
                }
                other => Some(format!("still {other} after the drain")),
            };
            if let Some(problem) = problem {
                v.violations.push(format!("{} job {job_id}: {problem}", record.document_id));
            }
        }
    }
    v.note = by_status.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", ");
    verdicts.push(v);

    // 2. The current version holds exactly its job's chunks.
    let mut v = Verdict {
        name: "the current version holds its job's chunks",
        rule: "for each document whose visible job completed: chunk rows of that version = the job's chunks.total, and documents.chunk_count = those rows",
        checked: 0,
        violations: Vec::new(),
        note: String::new(),
    };
    for record in records.iter() {
        let Some((job_id, job)) = expected_job(record, jobs) else { continue };
        let Some(&(version, chunk_count)) = stored.documents.get(&record.document_id) else { continue };
        if version as u64 != job.version {
            continue; // reported under "last submission wins"
        }
        v.checked += 1;
        let rows = stored.rows_of(&record.document_id, version);
        if rows as u64 != job.total || i64::from(chunk_count) != rows {
            v.violations.push(format!(
                "{} v{version} (job {job_id}): {rows} rows, job total {}, documents.chunk_count {chunk_count}",
                record.document_id, job.total
            ));
        }
    }
    verdicts.push(v);

    // 3. Nothing stored twice.
    let mut v = Verdict {
        name: "no chunk stored twice",
        rule: "no (document, version, chunk_index) twice in chunks; documents.chunk_count = rows of the current version for every document",
        checked: stored.documents.len(),
        violations: stored
            .duplicates
            .iter()
            .map(|(d, ver, i, n)| format!("{d} v{ver} chunk {i} stored {n} times"))
            .collect(),
        note: String::new(),
    };
    for (document, &(version, chunk_count)) in &stored.documents {
        let rows = stored.rows_of(document, version);
        if i64::from(chunk_count) != rows {
            v.violations.push(format!("{document} v{version}: documents.chunk_count {chunk_count}, {rows} rows"));
        }
    }
    verdicts.push(v);

    // 4. No chunk of a version that is not current.
    let mut v = Verdict {
        name: "no chunk of a non-current version",
        rule: "every chunk row belongs to its document's documents.version; every search hit is a chunk of a current version",
        checked: stored.rows.values().map(BTreeMap::len).sum::<usize>() + inputs.search_hits,
        violations: Vec::new(),
        note: format!("{} search hits checked", inputs.search_hits),
    };
    for (document, versions) in &stored.rows {
        let current = stored.documents.get(document).map(|(version, _)| *version);
        for (version, rows) in versions {
            if Some(*version) != current {
                let current = current.map_or("no documents row".to_owned(), |c| format!("current v{c}"));
                v.violations.push(format!("{document} v{version}: {rows} rows, {current}"));
            }
        }
    }
    v.violations.extend(inputs.stale_hits.iter().cloned());
    verdicts.push(v);

    // 5. Deleted documents stay deleted.
    let mut v = Verdict {
        name: "deleted documents stay deleted",
        rule: "a document deleted after its submissions (and not submitted again, or whose later submissions did not complete) has no documents row and no chunks",
        checked: 0,
        violations: Vec::new(),
        note: String::new(),
    };
    let mut delete_404 = 0;
    for record in records.iter() {
        if !record.steps.iter().any(|s| matches!(s, Step::Delete { .. })) {
            continue;
        }
        delete_404 += record.steps.iter().filter(|s| matches!(s, Step::Delete { status: Some(404), .. })).count();
        if expected_job(record, jobs).is_some() {
            continue;
        }
        v.checked += 1;
        let row = stored.documents.get(&record.document_id);
        let chunks: i64 = stored.rows.get(&record.document_id).map_or(0, |v| v.values().sum());
        if row.is_some() || chunks > 0 {
            let visible = row.map_or("no row".to_owned(), |(version, _)| format!("v{version} visible"));
            let jobs_of: Vec<String> = record
                .steps
                .iter()
                .map(|s| match s {
                    Step::Submitted { job_id, .. } => {
                        let job = jobs.get(job_id);
                        format!("submit v{}→{}", job.map_or(0, |j| j.version), job.map_or("?", |j| j.status.as_str()))
                    }
                    Step::Delete { status, .. } => {
                        format!("delete→{}", status.map_or("none".into(), |s| s.to_string()))
                    }
                    Step::Cancel { status_after, .. } => format!("cancel→{status_after}"),
                    Step::NotAccepted { .. } => "not accepted".to_owned(),
                })
                .collect();
            v.violations.push(format!(
                "{}: {visible}, {chunks} chunk rows after the delete [{}]",
                record.document_id,
                jobs_of.join(", ")
            ));
        }
    }
    v.note = format!("{delete_404} of the deletes answered 404 (no version stored yet); the delete still counts");
    verdicts.push(v);

    // 6. Last submission wins.
    let mut v = Verdict {
        name: "last submission wins",
        rule: "the visible version is that of the last submission (since the last delete) whose job completed; a document none of whose submissions completed has nothing visible",
        checked: 0,
        violations: Vec::new(),
        note: String::new(),
    };
    for record in records.iter() {
        let expected = expected_job(record, jobs);
        let deleted = record.steps.iter().any(|s| matches!(s, Step::Delete { .. }));
        let visible = stored.documents.get(&record.document_id).map(|(version, _)| *version as u64);
        match (expected, visible) {
            (Some((job_id, job)), visible) => {
                v.checked += 1;
                if visible != Some(job.version) {
                    v.violations.push(format!(
                        "{}: expected v{} (job {job_id}), visible {}",
                        record.document_id,
                        job.version,
                        visible.map_or("none".to_owned(), |v| format!("v{v}"))
                    ));
                }
            }
            (None, _) if deleted => {} // checked above
            (None, visible) => {
                v.checked += 1;
                if let Some(version) = visible {
                    v.violations
                        .push(format!("{}: no submission completed, yet v{version} is visible", record.document_id));
                }
            }
        }
    }
    verdicts.push(v);

    // 7. Dead letters are hostile documents' only.
    let mut v = Verdict {
        name: "the dead-letter queue holds only hostile documents",
        rule: "every entry of GET /v1/dlq belongs to a job of a hostile document",
        checked: inputs.dead_letters.len(),
        violations: Vec::new(),
        note: format!("{} dead letters", inputs.dlq_total),
    };
    for (stage, id, job_id, document) in inputs.dead_letters {
        if !hostile.contains(document.as_str()) {
            let job = jobs.get(job_id);
            let why = job.map_or(String::new(), |j| format!(": {}", j.error_message));
            v.violations.push(format!("{stage} {id}: job {job_id} of {document:?}{why}"));
        }
    }
    if inputs.dlq_total as usize != inputs.dead_letters.len() {
        v.violations.push(format!(
            "GET /v1/dlq says {} dead letters but listed {}",
            inputs.dlq_total,
            inputs.dead_letters.len()
        ));
    }
    verdicts.push(v);
    verdicts
}

/// Every dead letter `GET /v1/dlq` lists: (stage, entry id, job id), and its total.
pub async fn dead_letters(api: &Api) -> (Vec<(String, String, String)>, u64) {
    let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let reply = api.send(reqwest::Method::GET, "/v1/dlq?limit=1000", None, give_up).await;
    let Some(reply) = reply.filter(|r| r.status == 200) else { return (Vec::new(), 0) };
    let mut entries = Vec::new();
    for stage in reply.body["stages"].as_array().cloned().unwrap_or_default() {
        let name = stage["stage"].as_str().unwrap_or_default().to_owned();
        for entry in stage["entries"].as_array().cloned().unwrap_or_default() {
            entries.push((
                name.clone(),
                entry["id"].as_str().unwrap_or_default().to_owned(),
                entry["job_id"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    (entries, reply.body["total"].as_u64().unwrap_or(0))
}
