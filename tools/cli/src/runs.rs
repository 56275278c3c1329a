//! `millrace crawl`, `millrace runs` and `millrace run`: runs of many documents, a crawl's
//! progress bar, and a run's summary and CSV report.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::api::{Api, Failure};
use crate::text;

/// How often a waited run is asked for its progress.
const POLL: Duration = Duration::from_millis(500);

/// What `millrace crawl` asks for.
#[derive(Debug, Clone)]
pub struct Crawl {
    pub url: String,
    pub max_pages: u32,
    pub max_depth: Option<u32>,
    pub scope: Option<String>,
    pub collection: Option<String>,
    pub name: Option<String>,
}

/// Starts a crawl; with `wait`, follows it to its end with a progress bar. Answers the run's
/// summary (or the acceptance) and whether it ended without failed items.
pub async fn crawl(api: &Api, crawl: &Crawl, wait: bool, quiet: bool) -> Result<(Value, bool), Failure> {
    let mut spec = json!({ "url": crawl.url, "max_pages": crawl.max_pages });
    if let Some(depth) = crawl.max_depth {
        spec["max_depth"] = json!(depth);
    }
    if let Some(scope) = &crawl.scope {
        spec["scope"] = json!(scope);
    }
    let mut body =
        json!({ "name": crawl.name.clone().unwrap_or_else(|| format!("crawl of {}", crawl.url)), "crawl": spec });
    if let Some(collection) = &crawl.collection {
        body["collection"] = json!(collection);
    }
    let accepted = api.post("/v1/runs", &body).await?;
    if !wait {
        return Ok((accepted, true));
    }
    let run_id = text(&accepted["run_id"]).to_owned();
    let summary = follow(api, &run_id, quiet).await?;
    let clean = summary["counts"]["failed"].as_u64() == Some(0);
    Ok((summary, clean))
}

/// Polls a run until it is over, drawing its progress (items finished of those known).
pub async fn follow(api: &Api, run_id: &str, quiet: bool) -> Result<Value, Failure> {
    let bar = ProgressBar::with_draw_target(
        Some(0),
        if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
    );
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} pages {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("run");
    loop {
        let run = api.get(&format!("/v1/runs/{run_id}")).await?;
        let counts = &run["counts"];
        let count = |name: &str| counts[name].as_u64().unwrap_or(0);
        let finished = count("completed") + count("failed") + count("cancelled") + count("skipped") + count("refused");
        let total = run["items"].as_u64().unwrap_or(0);
        bar.set_length(total.max(finished));
        bar.set_position(finished);
        bar.set_message(format!("({} failed, {} skipped)", count("failed"), count("skipped")));
        if text(&run["status"]) != "running" {
            bar.finish();
            return Ok(run);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `millrace runs`: the tenant's runs, newest first.
pub async fn list(api: &Api, limit: u32, json: bool) -> Result<(), Failure> {
    let answer = api.get(&format!("/v1/runs?limit={limit}")).await?;
    if json {
        crate::print_json(&answer);
        return Ok(());
    }
    for run in answer["runs"].as_array().into_iter().flatten() {
        println!(
            "{}  {:<9} {:<5} {:>6} items  {}  {}",
            text(&run["run_id"]),
            text(&run["status"]),
            text(&run["kind"]),
            run["items"],
            text(&run["created_at"]),
            text(&run["name"])
        );
    }
    Ok(())
}

/// `millrace run ID [--report FILE]`: the run's summary, and its CSV report saved.
pub async fn show(api: &Api, run_id: &str, report: Option<PathBuf>, json: bool) -> Result<(), Failure> {
    let run = api.get(&format!("/v1/runs/{run_id}")).await?;
    if let Some(path) = &report {
        let csv = api.get_text(&format!("/v1/runs/{run_id}/report.csv")).await?;
        std::fs::write(path, csv).map_err(|err| Failure::Usage(format!("cannot write {}: {err}", path.display())))?;
    }
    if json {
        crate::print_json(&run);
    } else {
        print_summary(&run);
        if let Some(path) = report {
            println!("report     {}", path.display());
        }
    }
    Ok(())
}

pub fn print_summary(run: &Value) {
    println!("run        {} ({})", text(&run["run_id"]), text(&run["name"]));
    println!(
        "status     {} ({} items, {:.0}% done)",
        text(&run["status"]),
        run["items"],
        run["progress"].as_f64().unwrap_or(0.0) * 100.0
    );
    let counts = &run["counts"];
    println!(
        "items      {} completed, {} failed, {} in progress, {} pending, {} skipped, {} refused, {} cancelled",
        counts["completed"],
        counts["failed"],
        counts["in_progress"],
        counts["pending"],
        counts["skipped"],
        counts["refused"],
        counts["cancelled"]
    );
    println!("llm        {} tokens, ${:.4}", run["tokens"], run["cost_usd"].as_f64().unwrap_or(0.0));
    for failure in run["failures"].as_array().into_iter().flatten().take(10) {
        println!("failed     {} x {}", failure["count"], text(&failure["reason"]));
    }
    for skipped in run["skipped"].as_array().into_iter().flatten().take(10) {
        println!("skipped    {} x {}", skipped["count"], text(&skipped["reason"]));
    }
    println!("started    {}", text(&run["created_at"]));
    if let Some(finished) = run["finished_at"].as_str() {
        println!("finished   {finished}");
    }
}
