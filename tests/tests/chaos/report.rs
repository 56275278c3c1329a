//! The run written as Markdown: it replaces the generated section of `docs/reliability.md`
//! (between the markers), leaving the hand-written introduction above it alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::Run;
use crate::client::Step;
use crate::faults::Kind;

pub const BEGIN: &str = "<!-- chaos:begin (written by `make chaos`; edits below are overwritten) -->";
pub const END: &str = "<!-- chaos:end -->";

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn secs(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    format!("{cpus} CPUs (nproc), {model}, {:.1} GiB RAM", ram_kib as f64 / 1024.0 / 1024.0)
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn render(run: &Run) -> String {
    let s = &run.settings;
    let mut out = String::new();
    let _ = writeln!(out, "## Last run\n");
    let _ = writeln!(
        out,
        "`CHAOS_DOCS={} CHAOS_SECONDS={} CHAOS_SEED={} CHAOS_FAULT_GAP_MS={} CHAOS_VISIBILITY_TIMEOUT_MS={} make chaos`, {}, on {}.\n",
        s.docs,
        s.seconds,
        s.seed,
        s.fault_gap_ms,
        s.visibility_timeout_ms,
        now_utc(),
        machine()
    );
    let verdict = if run.drained && run.verdicts.iter().all(|v| v.passed()) { "**passed**" } else { "**failed**" };
    let _ = writeln!(
        out,
        "Result: {verdict}. Submission phase {:.0} s (faults from 15% of it to its end), drain {:.0} s{}.\n",
        run.submit_secs,
        run.drain_secs,
        if run.drained { "" } else { " (**did not drain** before `CHAOS_DRAIN_SECS`)" }
    );
    let _ = writeln!(
        out,
        "Stack: two processes of each of the six services; Redis with AOF (`appendfsync everysec`); \
         PostgreSQL as the harness runs it (`fsync=off`); metadata through the llm-gateway to the fake \
         upstream ({}±{} ms); embeddings from the **hashing provider** (`MILLRACE_EMBEDDINGS_PROVIDER=hashing`, \
         to keep the CPU for the pipeline); visibility timeout {} ms, reclaim every 300 ms, at most {} deliveries.\n",
        crate::UPSTREAM_LATENCY.0,
        crate::UPSTREAM_LATENCY.1,
        s.visibility_timeout_ms,
        crate::MAX_DELIVERIES
    );

    // The load.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut plans: BTreeMap<String, usize> = BTreeMap::new();
    let (mut accepted_202, mut accepted_200, mut not_accepted, mut refused) = (0, 0, 0, 0);
    let (mut cancels, mut deletes) = (0, 0);
    for record in &run.records {
        *kinds.entry(record.kind.clone()).or_default() += 1;
        if let Some(plan) = record.plan {
            *plans.entry(format!("{plan:?}")).or_default() += 1;
        }
        for step in &record.steps {
            match step {
                Step::Submitted { status: 202, .. } => accepted_202 += 1,
                Step::Submitted { .. } => accepted_200 += 1,
                Step::NotAccepted { last: Some(_), .. } => refused += 1,
                Step::NotAccepted { .. } => not_accepted += 1,
                Step::Cancel { effective: true, .. } => cancels += 1,
                Step::Cancel { .. } => {}
                Step::Delete { .. } => deletes += 1,
            }
        }
    }
    let hostile = run.records.iter().filter(|r| r.hostile).count();
    let _ = writeln!(out, "### Load\n");
    let _ = writeln!(
        out,
        "{} documents ({} hostile): {}. Plans: {}. Submissions accepted: {} with 202, {} with 200 \
         (unchanged); {} refused with a 4xx (not promised; see the hostile documents below); {} never \
         accepted before the client gave up; {} requests sent again after no answer, a 5xx or a 429. \
         {} cancels took effect; {} deletes.\n",
        run.records.len(),
        hostile,
        kinds.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "),
        plans.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "),
        accepted_202,
        accepted_200,
        refused,
        not_accepted,
        run.retries,
        cancels,
        deletes
    );

    // What became of the hostile documents.
    let _ = writeln!(out, "Hostile documents:\n\n| document | kind | outcome |\n|---|---|---|");
    for record in run.records.iter().filter(|r| r.hostile) {
        let outcome = match record.steps.first() {
            Some(Step::Submitted { job_id, .. }) => match run.jobs.get(job_id) {
                Some(job) if job.status == "failed" => {
                    let message: String = job.error_message.chars().take(160).collect();
                    format!("failed at {}: {}", job.error_stage, message.replace('|', "/"))
                }
                Some(job) => format!("{} ({} chunks)", job.status, job.total),
                None => "job unknown".to_owned(),
            },
            Some(Step::NotAccepted { last: Some(status), .. }) => format!("refused at submission ({status})"),
            _ => "never accepted".to_owned(),
        };
        let _ = writeln!(out, "| {} | {} | {outcome} |", record.document_id, record.kind);
    }
    let _ = writeln!(out);

    // Faults.
    let _ = writeln!(out, "### Faults injected\n");
    let _ = writeln!(out, "| fault | count | time down or degraded (total) |\n|---|---:|---:|");
    let mut by_kind: BTreeMap<Kind, (usize, u64)> = BTreeMap::new();
    for fault in &run.faults {
        let entry = by_kind.entry(fault.kind).or_default();
        entry.0 += 1;
        entry.1 += fault.end_ms.saturating_sub(fault.start_ms);
    }
    for (kind, (count, ms)) in &by_kind {
        let _ = writeln!(out, "| {} | {count} | {} |", kind.describe(), secs(*ms));
    }
    let _ = writeln!(out, "| **all** | **{}** | |\n", run.faults.len());

    // Latency.
    let mut calm = Vec::new();
    let mut hit = Vec::new();
    for record in run.records.iter().filter(|r| !r.hostile) {
        for step in &record.steps {
            let Step::Submitted { job_id, status: 202, .. } = step else { continue };
            if run.jobs.get(job_id).is_none_or(|j| j.status != "completed") {
                continue;
            }
            let Some(&(created, finished)) = run.times.get(job_id) else { continue };
            let overlaps = run.faults.iter().any(|f| created < f.end_ms && finished > f.start_ms);
            let latency = finished.saturating_sub(created);
            if overlaps { hit.push(latency) } else { calm.push(latency) }
        }
    }
    calm.sort_unstable();
    hit.sort_unstable();
    let _ = writeln!(out, "### Job latency (submit → finished)\n");
    let _ = writeln!(
        out,
        "Completed jobs of ordinary documents accepted with 202, from the job record's `created_ms` to \
         `finished_ms`; a job counts as \"with faults\" when its lifetime overlapped any fault's \
         window (from injection until the part was back), else \"without\" (the fault-free first 15% \
         of the run and the gaps between faults).\n"
    );
    let _ = writeln!(out, "| jobs | count | p50 | p99 | max |\n|---|---:|---:|---:|---:|");
    for (name, values) in [("without faults", &calm), ("with faults", &hit)] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            values.len(),
            secs(percentile(values, 0.5)),
            secs(percentile(values, 0.99)),
            secs(values.last().copied().unwrap_or(0))
        );
    }
    let _ = writeln!(out);

    // Reclaim.
    let mut reclaimed: Vec<u64> = run.reclaims.iter().filter_map(|r| r.millis).collect();
    reclaimed.sort_unstable();
    let lost = run.reclaims.iter().filter(|r| r.millis.is_none()).count();
    let replicas: std::collections::BTreeSet<&str> = run.reclaims.iter().map(|r| r.replica.as_str()).collect();
    let _ = writeln!(out, "### Reclaiming an orphaned entry\n");
    let _ = writeln!(
        out,
        "A stage replica was SIGKILLed while it held entries and kept down until another replica had \
         finished them: time from the kill until the entry left the group's pending list. \
         `MILLRACE_VISIBILITY_TIMEOUT_MS` is {} and reclaim runs every 300 ms, so the floor is about \
         the timeout minus the entry's idle time at the kill (heartbeats keep it fresh) plus one reclaim \
         interval plus the handler's own time.\n",
        s.visibility_timeout_ms
    );
    if reclaimed.is_empty() && lost == 0 {
        let _ = writeln!(out, "No killed replica held an entry at the moment of a kill in this run.\n");
    } else {
        let _ = writeln!(
            out,
            "{} entries measured (replicas {}): min {}, p50 {}, p99 {}, max {}; {} not finished within 5× the timeout + 30 s.\n",
            reclaimed.len(),
            replicas.into_iter().collect::<Vec<_>>().join(", "),
            secs(reclaimed.first().copied().unwrap_or(0)),
            secs(percentile(&reclaimed, 0.5)),
            secs(percentile(&reclaimed, 0.99)),
            secs(reclaimed.last().copied().unwrap_or(0)),
            lost
        );
    }

    // Invariants.
    let _ = writeln!(out, "### Invariants\n");
    let _ = writeln!(out, "| invariant | result | checked | violations | note |\n|---|---|---:|---:|---|");
    for v in &run.verdicts {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            v.name,
            if v.passed() { "pass" } else { "**FAIL**" },
            v.checked,
            v.violations.len(),
            v.note
        );
    }
    let _ = writeln!(out);
    for v in &run.verdicts {
        let _ = writeln!(out, "- **{}**: {}.", v.name, v.rule);
        for violation in v.violations.iter().take(12) {
            let _ = writeln!(out, "  - {}", violation.replace('|', "/"));
        }
        if v.violations.len() > 12 {
            let _ = writeln!(out, "  - … and {} more", v.violations.len() - 12);
        }
    }
    out
}

/// Replaces the generated section of `path` (or appends one, or creates the file).
pub fn write(path: &Path, generated: &str) -> std::io::Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{BEGIN}\n\n{generated}\n{END}\n");
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if end > begin => {
            format!("{}{section}{}", &existing[..begin], existing[end + END.len()..].trim_start_matches('\n'))
        }
        _ if existing.is_empty() => format!("# Reliability\n\n{section}"),
        _ => format!("{}\n{section}", existing.trim_end()),
    };
    std::fs::write(path, text)
}
