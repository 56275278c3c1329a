//! `millrace dlq list [STAGE]` and `millrace dlq retry [STAGE] [--id ID…]`: the entries the
//! stages gave up on, and retrying them (`GET /v1/dlq`, `POST /v1/dlq/{stage}/retry`).

use serde_json::{Value, json};

use crate::api::{Api, Failure};

/// The stages, in pipeline order; clap refuses any other name (exit status 2).
pub const STAGES: [&str; 4] = ["chunking", "metadata", "embeddings", "storage"];

/// Longest error shown in a table row (the JSON output has all of it).
const ERROR_WIDTH: usize = 80;

/// The server's answer for `stage` (or every stage).
pub async fn list(api: &Api, stage: Option<&str>, limit: u32) -> Result<Value, Failure> {
    let stage = stage.map(|s| format!("&stage={s}")).unwrap_or_default();
    api.get(&format!("/v1/dlq?limit={limit}{stage}")).await
}

pub fn print_list(answer: &Value) {
    let stages = answer["stages"].as_array().cloned().unwrap_or_default();
    let mut rows = vec![["STAGE", "ID", "JOB", "BATCH", "TRIES", "JOB NOW", "AT", "ERROR"].map(str::to_owned).to_vec()];
    let mut shown = 0;
    for stage in &stages {
        for entry in stage["entries"].as_array().into_iter().flatten() {
            shown += 1;
            rows.push(vec![
                text(&entry["stage"]).to_owned(),
                text(&entry["id"]).to_owned(),
                text(&entry["job_id"]).to_owned(),
                entry["batch"].as_u64().map_or("-".to_owned(), |b| b.to_string()),
                entry["deliveries"].to_string(),
                entry["job_status"].as_str().unwrap_or("expired").to_owned(),
                text(&entry["dead_lettered_at"]).to_owned(),
                clip(text(&entry["error"])),
            ]);
        }
    }
    if shown > 0 {
        print_table(&rows);
    }
    let counts: Vec<String> = stages.iter().map(|s| format!("{} {}", text(&s["stage"]), s["count"])).collect();
    let total = answer["total"].as_u64().unwrap_or(0);
    let more = if (shown as u64) < total { format!(" (newest {shown} shown)") } else { String::new() };
    println!("{total} dead letters{more}: {}", counts.join(", "));
}

/// Retries the entries named by `ids` of `stage`, or all of `stage`'s, or (with no stage) all of
/// every stage's. Returns the merged report and whether nothing was refused.
pub async fn retry(api: &Api, stage: Option<&str>, ids: &[String]) -> Result<(Value, bool), Failure> {
    let body = if ids.is_empty() { json!({}) } else { json!({ "ids": ids }) };
    let stages: Vec<&str> = match stage {
        Some(stage) => vec![stage],
        None if ids.is_empty() => STAGES.to_vec(),
        None => return Err(Failure::Usage("--id needs a STAGE: entry ids are per stage".into())),
    };
    let mut merged = json!({ "retried": [], "refused": [], "superseded": [] });
    for stage in stages {
        let report = api.post(&format!("/v1/dlq/{stage}/retry"), &body).await?;
        for list in ["retried", "refused", "superseded"] {
            if let (Some(into), Some(from)) = (merged[list].as_array_mut(), report[list].as_array()) {
                into.extend(from.iter().cloned());
            }
        }
    }
    let refused = merged["refused"].as_array().map_or(0, Vec::len);
    Ok((merged, refused == 0))
}

pub fn print_retry(report: &Value) {
    let list = |name: &str| report[name].as_array().cloned().unwrap_or_default();
    let (retried, refused, superseded) = (list("retried"), list("refused"), list("superseded"));
    let mut rows = vec![["", "STAGE", "ID", "JOB", "BATCH", ""].map(str::to_owned).to_vec()];
    for entry in &retried {
        let requeued: Vec<String> = entry["requeued"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(stage, count)| format!("{stage} {count}"))
            .collect();
        let requeued = if requeued.is_empty() { String::new() } else { format!("; requeued {}", requeued.join(", ")) };
        rows.push(row("retried", entry, format!("job now {}{requeued}", text(&entry["job_status"]))));
    }
    for entry in &refused {
        rows.push(row("refused", entry, text(&entry["reason"]).to_owned()));
    }
    for entry in &superseded {
        rows.push(row("superseded", entry, "its job was retried".to_owned()));
    }
    if rows.len() > 1 {
        print_table(&rows);
    }
    println!("{} retried, {} refused, {} superseded", retried.len(), refused.len(), superseded.len());
}

fn row(outcome: &str, entry: &Value, note: String) -> Vec<String> {
    vec![
        outcome.to_owned(),
        text(&entry["stage"]).to_owned(),
        text(&entry["id"]).to_owned(),
        entry["job_id"].as_str().unwrap_or("-").to_owned(),
        entry["batch"].as_u64().map_or("-".to_owned(), |b| b.to_string()),
        note,
    ]
}

/// Columns padded to their widest cell (the last one left as it is).
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(
                |(c, cell)| {
                    if c + 1 == row.len() { cell.clone() } else { format!("{cell:<width$}", width = widths[c]) }
                },
            )
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

fn clip(error: &str) -> String {
    let line = error.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= ERROR_WIDTH {
        line
    } else {
        format!("{}…", line.chars().take(ERROR_WIDTH - 1).collect::<String>())
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn long_errors_are_clipped_to_one_line() {
        assert_eq!(clip("a\n  b"), "a b");
        let long = "x".repeat(200);
        assert_eq!(clip(&long).chars().count(), 80);
        assert!(clip(&long).ends_with('…'));
    }
}
