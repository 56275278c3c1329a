//! Observability across real processes: every service's counters add up to the figures of the
//! jobs that ran, and the Grafana dashboard and Prometheus alerts in deploy/ are well formed and
//! use only metrics that a running stack exports.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use millrace_e2e::prometheus::Scrape;
use millrace_e2e::{SERVICES, Stack, StackOptions, long_text};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;
use serde_json::{Value, json};

const STAGES: [&str; 4] = ["chunking", "metadata", "embeddings", "storage"];

async fn scrape_all(stack: &Stack) -> BTreeMap<&'static str, Scrape> {
    let mut scrapes = BTreeMap::new();
    for name in SERVICES {
        scrapes.insert(name, stack.scrape(name).await);
    }
    scrapes
}

/// Runs `check` on fresh scrapes until it finds nothing wrong, or fails with what it found last.
/// Counters move a moment after the job record (a handler counts after its script returned) and
/// sampled gauges every `MILLRACE_METRICS_INTERVAL_MS`.
async fn eventually(stack: &Stack, check: impl Fn(&BTreeMap<&'static str, Scrape>) -> Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let problems = check(&scrape_all(stack).await);
        if problems.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("metrics do not add up:\n{}\n{}", problems.join("\n"), stack.logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Compares `actual` with `expected` and notes a mismatch under `what`.
fn expect(problems: &mut Vec<String>, what: &str, actual: f64, expected: f64) {
    if (actual - expected).abs() > 1e-9 {
        problems.push(format!("{what}: metrics say {actual}, the jobs say {expected}"));
    }
}

#[tokio::test]
async fn every_services_counters_add_up_to_the_figures_of_the_jobs() {
    let stack = Stack::start(
        StackOptions::default()
            .upstream(&["--embedding-dim", "384"])
            .env("MILLRACE_METRICS_INTERVAL_MS", 200)
            .service_env("chunking", "MILLRACE_CHUNK_SIZE", 65)
            .service_env("chunking", "MILLRACE_BATCH_SIZE", 3),
    )
    .await
    .unwrap();

    // Two documents; then a new version of the first with one paragraph changed (the others'
    // chunks are reused), an identical resubmission of the second (completed at once), and a
    // document whose text vanishes in parsing (failed at chunking, dead-lettered).
    let first = stack.ingest("alpha", &long_text("windmill", 8)).await;
    let second = stack.ingest("beta", &long_text("sluice", 5)).await;
    for job in [&first, &second] {
        let job = stack.wait_for_job(job, Duration::from_secs(120)).await.unwrap();
        assert_eq!(job["status"], "completed", "{job}");
    }
    let changed = long_text("windmill", 8).replace("Paragraph 5 about windmill", "Paragraph 5, rewritten, on windmill");
    let third = stack.ingest("alpha", &changed).await;
    let (status, body, _) = stack
        .post(
            "/v1/ingest",
            &json!({"document_id": "beta", "content": long_text("sluice", 5), "content_type": "text/plain"}),
        )
        .await;
    assert_eq!(status, 200, "an identical resubmission completes at once: {body}");
    let unchanged = body["job_id"].as_str().unwrap().to_owned();
    let (status, body, _) = stack
        .post(
            "/v1/ingest",
            &json!({"document_id": "empty", "content": "<script>only()</script>", "content_type": "text/html"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let broken = body["job_id"].as_str().unwrap().to_owned();

    let mut jobs = Vec::new();
    for id in [&first, &second, &third, &unchanged, &broken] {
        jobs.push(stack.wait_for_job(id, Duration::from_secs(120)).await.unwrap());
    }
    let statuses: Vec<&str> = jobs.iter().map(|j| j["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["completed", "completed", "completed", "completed", "failed"], "{jobs:?}");
    assert!(jobs[2]["chunks"]["reused"].as_u64().unwrap() > 0, "the new version reuses chunks: {}", jobs[2]);

    // The figures of the jobs that went through the stages (not the instant one, not the failed one).
    let staged = &jobs[..3];
    let sum = |path: &[&str]| -> f64 {
        staged.iter().map(|job| path.iter().fold(job, |value, key| &value[*key]).as_u64().unwrap() as f64).sum()
    };
    let chunks_total = sum(&["chunks", "total"]);
    let batches_total = sum(&["batches_total"]);
    assert!(batches_total > 3.0, "several batches per document: {jobs:?}");
    // The gateway counts tokens when an answer arrives and charges the job just after it has
    // gone back: wait until the charges have landed on the job records.
    let mut llm_tokens = 0.0;
    for _ in 0..50 {
        let mut charged = 0.0;
        for id in [&first, &second, &third] {
            let job = stack.job(id).await;
            charged +=
                job["llm"]["prompt_tokens"].as_f64().unwrap() + job["llm"]["completion_tokens"].as_f64().unwrap();
        }
        llm_tokens = charged;
        if charged == stack.scrape("llm-gateway").await.value("millrace_llm_gateway_tokens_total", &[]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(llm_tokens > 0.0, "the jobs were charged tokens: {jobs:?}");
    let fake = stack.fake_stats().await;
    let fake_requests = |endpoint: &str| fake["by_endpoint"][endpoint]["requests"].as_f64().unwrap_or(0.0);

    eventually(&stack, |m| {
        let mut p = Vec::new();
        let (chunking, metadata, embeddings, storage) =
            (&m["chunking"], &m["metadata"], &m["embeddings"], &m["storage"]);
        // chunking
        expect(&mut p, "chunking documents", chunking.value("millrace_chunking_documents_total", &[]), 3.0);
        expect(&mut p, "chunking chunks", chunking.value("millrace_chunking_chunks_total", &[]), chunks_total);
        expect(&mut p, "chunking batches", chunking.value("millrace_chunking_batches_total", &[]), batches_total);
        expect(
            &mut p,
            "chunking unchanged chunks",
            chunking.value("millrace_chunking_chunks_unchanged_total", &[]),
            sum(&["chunks", "reused"]),
        );
        // metadata and embeddings: every outcome together is the job's count of the half
        expect(
            &mut p,
            "metadata chunks",
            metadata.value("millrace_metadata_chunks_total", &[]),
            sum(&["chunks", "metadata_done"]),
        );
        expect(
            &mut p,
            "metadata failed chunks",
            metadata.value("millrace_metadata_chunks_total", &[("outcome", "failed")]),
            sum(&["chunks", "metadata_failed"]),
        );
        expect(
            &mut p,
            "metadata reused chunks",
            metadata.value("millrace_metadata_chunks_total", &[("outcome", "reused")]),
            sum(&["chunks", "reused"]),
        );
        expect(&mut p, "metadata batches", metadata.value("millrace_metadata_batches_total", &[]), batches_total);
        expect(
            &mut p,
            "embeddings chunks",
            embeddings.value("millrace_embeddings_chunks_total", &[]),
            sum(&["chunks", "embedded"]),
        );
        expect(
            &mut p,
            "embeddings reused chunks",
            embeddings.value("millrace_embeddings_chunks_total", &[("outcome", "reused")]),
            sum(&["chunks", "reused"]),
        );
        expect(&mut p, "embeddings batches", embeddings.value("millrace_embeddings_batches_total", &[]), batches_total);
        // storage
        expect(
            &mut p,
            "storage chunks",
            storage.value("millrace_storage_chunks_total", &[]),
            sum(&["chunks", "stored"]),
        );
        expect(
            &mut p,
            "storage batches",
            storage.value("millrace_storage_batches_total", &[]),
            sum(&["batches_stored"]),
        );
        expect(&mut p, "storage documents", storage.value("millrace_storage_documents_committed_total", &[]), 3.0);
        // the stage workers: one entry per job for chunking, per batch for the others
        let entries = |scrape: &Scrape, stage: &str, outcome: &str| {
            scrape.value("millrace_stage_messages_total", &[("stage", stage), ("outcome", outcome)])
        };
        expect(&mut p, "chunking entries ok", entries(chunking, "chunking", "ok"), 3.0);
        expect(&mut p, "chunking entries dead-lettered", entries(chunking, "chunking", "dead_letter"), 1.0);
        expect(&mut p, "chunking dead letters", chunking.value("millrace_stage_dead_letters_total", &[]), 1.0);
        expect(
            &mut p,
            "chunking dead-letter stream",
            chunking.value("millrace_stage_dead_letter_stream_length", &[]),
            1.0,
        );
        for (stage, scrape) in [("metadata", metadata), ("embeddings", embeddings), ("storage", storage)] {
            expect(&mut p, &format!("{stage} entries ok"), entries(scrape, stage, "ok"), batches_total);
            expect(
                &mut p,
                &format!("{stage} dead letters"),
                scrape.value("millrace_stage_dead_letters_total", &[]),
                0.0,
            );
        }
        for (stage, scrape) in
            [("chunking", chunking), ("metadata", metadata), ("embeddings", embeddings), ("storage", storage)]
        {
            for gauge in ["millrace_stage_stream_lag", "millrace_stage_stream_pending", "millrace_stage_permits_in_use"]
            {
                expect(&mut p, &format!("{stage} {gauge}"), scrape.value(gauge, &[("stage", stage)]), 0.0);
            }
            if scrape.value("millrace_stage_permits_available", &[("stage", stage)]) < 1.0 {
                p.push(format!("{stage}: no permits available on an idle worker"));
            }
        }
        // ingestion: submissions, and jobs by status over the whole deployment
        let ingestion = &m["ingestion"];
        expect(&mut p, "jobs submitted", ingestion.value("millrace_ingestion_jobs_submitted_total", &[]), 4.0);
        expect(&mut p, "jobs unchanged", ingestion.value("millrace_ingestion_jobs_unchanged_total", &[]), 1.0);
        for (status, count) in [("completed", 4.0), ("failed", 1.0), ("cancelled", 0.0)] {
            expect(
                &mut p,
                &format!("jobs {status}"),
                ingestion.value("millrace_ingestion_jobs_finished_total", &[("status", status)]),
                count,
            );
        }
        for status in ["queued", "running"] {
            expect(
                &mut p,
                &format!("jobs {status}"),
                ingestion.value("millrace_ingestion_jobs_active", &[("status", status)]),
                0.0,
            );
        }
        // the gateway: what it counted is what the jobs were charged and what the upstream saw
        let gateway = &m["llm-gateway"];
        expect(&mut p, "LLM tokens", gateway.value("millrace_llm_gateway_tokens_total", &[]), llm_tokens);
        expect(
            &mut p,
            "upstream chat requests",
            gateway.value("millrace_llm_gateway_upstream_requests_total", &[("endpoint", "chat"), ("status", "200")]),
            fake_requests("chat_completions"),
        );
        expect(
            &mut p,
            "upstream embeddings requests",
            gateway.value(
                "millrace_llm_gateway_upstream_requests_total",
                &[("endpoint", "embeddings"), ("status", "200")],
            ),
            fake_requests("embeddings"),
        );
        p
    })
    .await;
}

/// The repository's deploy/ folder.
fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("deploy").join(path)
}

fn dashboard() -> Value {
    let path = deploy("grafana/millrace-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}

/// Every panel of the dashboard, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("the dashboard has panels") {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// The dashboard's queries, each with where it comes from.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            panel["targets"].as_array().into_iter().flatten().map(move |target| {
                (
                    format!("panel {:?} target {}", panel["title"], target["refId"]),
                    target["expr"].as_str().unwrap_or("").to_owned(),
                )
            })
        })
        .collect()
}

/// A Prometheus rule file, as strictly as Prometheus reads it (unknown fields are errors).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn alert_rules() -> RuleFile {
    let path = deploy("prometheus/alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_norway::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not a Prometheus rule file: {err}", path.display()))
}

fn alert_queries(rules: &RuleFile) -> Vec<(String, String)> {
    rules.groups.iter().flat_map(|g| g.rules.iter().map(|r| (format!("alert {}", r.alert), r.expr.clone()))).collect()
}

/// A Prometheus duration: one or more `<number><unit>` (`90s`, `1h30m`).
fn is_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h", "d", "w", "y"].into_iter().find(|u| rest.starts_with(u)) else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// The selectors of a PromQL query: metric names with the label names they match on.
#[derive(Default)]
struct Selectors(Vec<(String, Vec<String>)>);

impl ExprVisitor for Selectors {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(selector) => selector,
            Expr::MatrixSelector(matrix) => &matrix.vs,
            _ => return Ok(true),
        };
        let name = selector.name.clone().ok_or_else(|| format!("a selector without a metric name: {expr}"))?;
        let labels = selector.matchers.matchers.iter().map(|m| m.name.clone()).collect();
        self.0.push((name, labels));
        Ok(true)
    }
}

/// Parses a query (Grafana's variables replaced by what they stand for) and returns its selectors.
fn selectors(query: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let query = query.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h");
    let expr = parser::parse(&query)?;
    let mut selectors = Selectors::default();
    walk_expr(&mut selectors, &expr)?;
    Ok(selectors.0)
}

#[test]
fn the_dashboard_and_the_alert_rules_are_well_formed() {
    let dashboard = dashboard();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string(), "title and uid");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30), "a current Grafana schema");
    let variables = dashboard["templating"]["list"].as_array().expect("templating variables");
    assert!(
        variables.iter().any(|v| v["type"] == "datasource" && v["name"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus data source variable named datasource: {variables:?}"
    );
    let uses_variable = |datasource: &Value| {
        datasource["type"] == "prometheus"
            && matches!(datasource["uid"].as_str(), Some("${datasource}" | "$datasource"))
    };
    let mut ids = HashSet::new();
    let mut data_panels = 0;
    for panel in panels(&dashboard) {
        let title = &panel["title"];
        let id = panel["id"].as_u64().unwrap_or_else(|| panic!("panel {title} has no id"));
        assert!(ids.insert(id), "panel id {id} ({title}) is used twice");
        assert!(panel["gridPos"]["w"].as_u64().is_some_and(|w| (1..=24).contains(&w)), "panel {title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        data_panels += 1;
        assert!(title.as_str().is_some_and(|t| !t.is_empty()), "a data panel without a title: {panel}");
        assert!(
            uses_variable(&panel["datasource"]),
            "panel {title}: datasource is not the variable: {}",
            panel["datasource"]
        );
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("panel {title} has no targets"));
        let mut ref_ids = HashSet::new();
        for target in targets {
            assert!(ref_ids.insert(target["refId"].as_str().unwrap_or("")), "panel {title}: refIds must be unique");
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "panel {title}: a target without expr"
            );
            assert!(uses_variable(&target["datasource"]), "panel {title}: a target's datasource is not the variable");
        }
    }
    assert!(data_panels >= 20, "only {data_panels} panels");

    let rules = alert_rules();
    assert!(!rules.groups.is_empty(), "no rule group");
    let mut names = HashSet::new();
    for group in &rules.groups {
        assert!(!group.name.is_empty() && !group.rules.is_empty(), "group {:?}", group.name);
        assert!(group.interval.as_deref().is_none_or(is_duration), "group {}: interval", group.name);
        for rule in &group.rules {
            assert!(names.insert(rule.alert.clone()), "alert {} is defined twice", rule.alert);
            assert!(is_duration(&rule.for_), "alert {}: `for: {}` is not a duration", rule.alert, rule.for_);
            let severity = rule.labels.get("severity").map(String::as_str);
            assert!(
                matches!(severity, Some("critical" | "warning" | "info")),
                "alert {}: labels.severity is {severity:?}",
                rule.alert
            );
            assert!(
                rule.annotations.get("summary").is_some_and(|s| !s.trim().is_empty()),
                "alert {}: summary",
                rule.alert
            );
        }
    }
    assert!(
        is_duration("1h30m") && is_duration("500ms") && !is_duration("5") && !is_duration("m5") && !is_duration("")
    );

    // Every query is PromQL that names its metrics (no `{__name__=~…}` a rename would slip past).
    for (source, query) in dashboard_queries(&dashboard).into_iter().chain(alert_queries(&rules)) {
        let found = selectors(&query).unwrap_or_else(|err| panic!("{source}: {err}\n{query}"));
        assert!(!found.is_empty(), "{source} selects no metric: {query}");
        for (name, _) in found {
            assert!(name.starts_with("millrace_"), "{source}: {name} is not a millrace metric");
        }
    }
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_use_only_metrics_a_running_stack_exports() {
    let stack = Stack::start(
        StackOptions::default()
            .upstream(&["--embedding-dim", "384"])
            // A quota (so the gateway runs a limiter) and a budget (so it reports one).
            .env("MILLRACE_LLM_RPM", 100_000)
            .env("MILLRACE_MAX_DAILY_COST_USD", 100)
            .env("MILLRACE_METRICS_INTERVAL_MS", 200),
    )
    .await
    .unwrap();
    let job = stack.ingest("observed", &long_text("millpond", 3)).await;
    let job = stack.wait_for_job(&job, Duration::from_secs(120)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    // One refused submission, so the refusals counter has a series as it would in production.
    let (status, _, _) = stack.post("/v1/ingest", &json!({"content_type": "text/plain"})).await;
    assert_eq!(status, 422);
    tokio::time::sleep(Duration::from_millis(500)).await; // a sample of every gauge

    let scrapes = scrape_all(&stack).await;
    for (service, scrape) in &scrapes {
        for (name, family) in &scrape.families {
            assert!(name.starts_with("millrace_"), "{service} exports {name}, not named millrace_*");
            assert!(family.help.as_deref().is_some_and(|h| !h.is_empty()), "{service}: {name} has no HELP line");
            let unit_ok = match family.kind.as_str() {
                "counter" => name.ends_with("_total"),
                "histogram" => name.ends_with("_seconds") || name.ends_with("_texts"),
                _ => !name.ends_with("_count") && !name.ends_with("_sum") && !name.ends_with("_bucket"),
            };
            assert!(unit_ok, "{service}: {name} ({}) breaks the naming convention", family.kind);
        }
    }
    // Every stage reports its stream, and every stage's own counters exist from the start.
    for stage in STAGES {
        let scrape = &scrapes[stage];
        for gauge in ["millrace_stage_stream_length", "millrace_stage_stream_lag", "millrace_stage_stream_pending"] {
            assert!(scrape.has(gauge, &[("stage", stage)]), "{stage} does not report {gauge}");
        }
        assert!(scrape.has(&format!("millrace_{stage}_chunks_total"), &[]), "{stage} has no chunks counter");
    }

    // Breakers report from the moment they exist, not from their first change.
    for (service, breaker) in
        [("metadata", "llm-gateway"), ("embeddings", "llm-gateway"), ("llm-gateway", "upstream:default")]
    {
        let scrape = &scrapes[service];
        assert!(
            scrape.has("millrace_breaker_state", &[("breaker", breaker)]),
            "{service} does not report breaker {breaker}"
        );
        assert!(
            scrape.has("millrace_breaker_transitions_total", &[("breaker", breaker), ("to", "open")]),
            "{service} has no transitions counter for breaker {breaker}"
        );
    }

    let dashboard = dashboard();
    let rules = alert_rules();
    let mut missing = BTreeSet::new();
    for (source, query) in dashboard_queries(&dashboard).into_iter().chain(alert_queries(&rules)) {
        for (name, labels) in selectors(&query).unwrap_or_else(|err| panic!("{source}: {err}")) {
            let exported_by: Vec<&Scrape> = scrapes.values().filter(|s| s.exports(&name)).collect();
            if exported_by.is_empty() {
                missing.insert(format!("{name} (in {source})"));
                continue;
            }
            // The labels a query matches on exist on the metric (a histogram's on its family).
            for label in labels.iter().filter(|l| !["job", "instance", "__name__"].contains(&l.as_str())) {
                let carried = exported_by
                    .iter()
                    .any(|scrape| scrape.samples.iter().any(|s| s.name == name && s.labels.contains_key(label)));
                if !carried {
                    missing.insert(format!("label {label} of {name} (in {source})"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queries name what no service exports:\n{}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
}
