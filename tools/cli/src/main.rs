//! `millrace`: the command line of the ingestion service's API. Every command takes `--url`
//! (default `MILLRACE_URL`, then http://127.0.0.1:8060), `--api-key` (default `MILLRACE_API_KEY`,
//! then the local stack's `.millrace/admin.key`) and `--json` (machine-readable output).
//! A failure prints one line and exits 1 when the server refused, 2 for bad input or an
//! unreachable server; `ingest` exits 1 when any document failed, `dlq retry` when any entry
//! was refused.

mod api;
mod dlq;
mod ingest;
mod key;
mod keys;
mod runs;
mod search;
mod sync;

use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::api::{Api, Failure};

#[derive(Parser, Debug)]
#[command(
    name = "millrace",
    version,
    about = "Ingest documents into millrace, follow jobs, search, retry dead letters"
)]
struct Cli {
    /// The ingestion service's HTTP address.
    #[arg(long, global = true, env = "MILLRACE_URL", default_value = "http://127.0.0.1:8060")]
    url: String,
    /// The API key to send (`Authorization: Bearer`); else MILLRACE_API_KEY, else the local
    /// stack's .millrace/admin.key.
    #[arg(long, global = true, env = "MILLRACE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ingest files, directories (recursively) and http(s) URLs.
    Ingest {
        #[arg(required = true, value_name = "PATH|URL")]
        inputs: Vec<String>,
        /// Under directories, only files whose path relative to the directory given matches
        /// (repeatable). A glob without `/` matches the file name at any depth: `*.md`.
        #[arg(long, value_name = "GLOB")]
        include: Vec<String>,
        /// Under directories, skip files (and directories) that match (repeatable):
        /// `drafts/**`, `node_modules`. Files named on the command line are always taken.
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// Wait for every job to end, with progress bars and a summary.
        #[arg(long)]
        wait: bool,
        /// Documents submitted and followed at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Mirror a folder into millrace: ingest new and changed files (of the types millrace
    /// parses), skip unchanged ones, delete the documents whose files are gone. Documents are
    /// `PREFIX` + the file's path relative to DIR; nothing outside the prefix is touched.
    Sync {
        dir: std::path::PathBuf,
        /// The documents' id prefix (default: DIR's name and `/`, e.g. `notes/`).
        #[arg(long)]
        prefix: Option<String>,
        /// The collection the documents go into (default: the server's).
        #[arg(long)]
        collection: Option<String>,
        /// Only files whose path relative to DIR matches (repeatable), as for `ingest`.
        #[arg(long, value_name = "GLOB")]
        include: Vec<String>,
        /// Skip files (and directories) that match (repeatable), as for `ingest`.
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// Say what would be added, changed and deleted, and do nothing.
        #[arg(long)]
        dry_run: bool,
        /// Wait for every job to end.
        #[arg(long)]
        wait: bool,
        /// Documents submitted (or deleted) at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// List recent jobs.
    Jobs {
        /// queued, running, completed, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Crawl a site as one run: its pages are fetched, ingested and reported on.
    Crawl {
        url: String,
        /// Pages taken at most.
        #[arg(long, default_value_t = 100)]
        max_pages: u32,
        /// Links followed at most from the start page (the server's default: 3).
        #[arg(long)]
        max_depth: Option<u32>,
        /// host (the start page's host) or prefix (under the start page's directory).
        #[arg(long, value_parser = PossibleValuesParser::new(["host", "prefix"]))]
        scope: Option<String>,
        #[arg(long)]
        collection: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// Follow the run to its end with a progress bar, then show its summary.
        #[arg(long)]
        wait: bool,
    },
    /// List the runs of the key's tenant, newest first.
    Runs {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a run's summary; with --report, save its CSV report.
    Run {
        id: String,
        /// Where to write the report (one row per item).
        #[arg(long, value_name = "FILE")]
        report: Option<std::path::PathBuf>,
    },
    /// Show a document's chunks (its visible version), in order, with their metadata.
    Chunks { document_id: String },
    /// Show one job; with --follow, its events until it ends.
    Job {
        id: String,
        #[arg(long)]
        follow: bool,
    },
    /// Search the stored documents: hybrid (keyword and vector rankings fused), vector or
    /// keyword; one result per document unless --group-by chunk.
    Search {
        query: String,
        /// Results wanted (documents, or chunks with --group-by chunk).
        #[arg(long, default_value_t = 5)]
        top_k: u32,
        /// hybrid (the server's default), vector (embeddings only) or keyword (full text only).
        #[arg(long, value_parser = PossibleValuesParser::new(search::MODES))]
        mode: Option<String>,
        /// document (the server's default: one result per document, with its other matching
        /// chunks) or chunk.
        #[arg(long, value_parser = PossibleValuesParser::new(search::GROUP_BY))]
        group_by: Option<String>,
        /// Search only this collection (repeatable); none: every collection the key may use.
        #[arg(long = "collection", value_name = "NAME")]
        collections: Vec<String>,
        /// A condition (repeatable; all must hold). `document_id=ID` and `content_type=TYPE`
        /// (repeatable: any of them), `source_prefix=PREFIX`, `created_after=`,
        /// `created_before=`, `updated_after=`, `updated_before=` (RFC 3339 times,
        /// 2026-01-31T09:30:00Z). Any other key is a metadata equality, its value JSON when it
        /// parses (`year=2024` a number, `draft=true` a boolean, `code="0042"` a string), else
        /// text (`team=docs`); `metadata.KEY=VALUE` for a key named like one above.
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
        /// Hybrid mode: the vector ranking's weight in the fusion (default 1).
        #[arg(long)]
        vector_weight: Option<f64>,
        /// Hybrid mode: the keyword ranking's weight in the fusion (default 1).
        #[arg(long)]
        keyword_weight: Option<f64>,
        /// Reorder the results with the LLM reranker (through the llm-gateway); by default the
        /// server's setting (MILLRACE_SEARCH_RERANK, off unless set).
        #[arg(long, conflicts_with = "no_rerank")]
        rerank: bool,
        /// Do not rerank, whatever the server's default.
        #[arg(long)]
        no_rerank: bool,
        /// How many fused results the reranker orders, 1 to 50 (at least --top-k are; default
        /// the server's MILLRACE_RERANK_CANDIDATES, 20).
        #[arg(long, value_name = "N")]
        rerank_candidates: Option<u32>,
    },
    /// Every service's limits: quotas, use, breakers, budget.
    Limits,
    /// Delete a document and its chunks.
    Delete { document_id: String },
    /// The entries the stages gave up on (dead letters), and retrying them.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// API keys: create (the secret is shown once), list, revoke. Needs an admin key.
    Keys {
        #[command(subcommand)]
        action: keys::KeysAction,
    },
}

#[derive(Subcommand, Debug)]
enum DlqAction {
    /// Dead letters per stage, newest first, with their error and their job's status now.
    List {
        /// Only this stage.
        #[arg(value_parser = PossibleValuesParser::new(dlq::STAGES))]
        stage: Option<String>,
        /// Entries shown per stage.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Retry dead letters once their cause is fixed: their failed jobs are reopened and go on
    /// where they stopped. Without --id, every entry of the stage (of every stage without STAGE).
    Retry {
        #[arg(value_parser = PossibleValuesParser::new(dlq::STAGES))]
        stage: Option<String>,
        /// An entry of the stage's dead letters, as `dlq list` shows it (repeatable).
        #[arg(long = "id", value_name = "ID", requires = "stage")]
        ids: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("millrace: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    // clap has already taken MILLRACE_API_KEY into `api_key` when the flag is absent.
    let api = Api::new(&cli.url, key::resolve(cli.api_key)?)?;
    let json = cli.json;
    match cli.command {
        Command::Ingest { inputs, include, exclude, wait, concurrency } => {
            let selection = ingest::Selection::new(&include, &exclude)?;
            let inputs = ingest::inputs(&inputs, &selection)?;
            let (report, all_succeeded) = ingest::run(&api, inputs, wait, concurrency, json).await;
            if json {
                print_json(&report);
            } else {
                ingest::print_human(&report);
            }
            return Ok(if all_succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Sync { dir, prefix, collection, include, exclude, dry_run, wait, concurrency } => {
            let selection = ingest::Selection::new(&include, &exclude)?;
            let options = sync::Options { dir, prefix, collection, selection, dry_run, wait, concurrency };
            let (report, all_succeeded) = sync::run(&api, options).await?;
            if json {
                print_json(&report);
            } else {
                sync::print_human(&report);
            }
            return Ok(if all_succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Jobs { status, limit } => {
            let status = status.map(|s| format!("&status={s}")).unwrap_or_default();
            let answer = api.get(&format!("/v1/jobs?limit={limit}{status}")).await?;
            if json {
                print_json(&answer);
            } else {
                for job in answer["jobs"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<9} {:>3}%  {}",
                        text(&job["job_id"]),
                        text(&job["status"]),
                        job["progress"],
                        text(&job["document_id"])
                    );
                }
            }
        }
        Command::Crawl { url, max_pages, max_depth, scope, collection, name, wait } => {
            let crawl = runs::Crawl { url, max_pages, max_depth, scope, collection, name };
            let (answer, clean) = runs::crawl(&api, &crawl, wait, json).await?;
            if json {
                print_json(&answer);
            } else if wait {
                runs::print_summary(&answer);
            } else {
                println!("run {} started: {}", text(&answer["run_id"]), text(&answer["status_url"]));
            }
            return Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Runs { limit } => runs::list(&api, limit, json).await?,
        Command::Run { id, report } => runs::show(&api, &id, report, json).await?,
        Command::Chunks { document_id } => {
            let list = chunks(&api, &document_id).await?;
            if json {
                print_json(&list);
            } else {
                println!("{} (version {}, collection {})", document_id, list["version"], text(&list["collection"]));
                for chunk in list["chunks"].as_array().into_iter().flatten() {
                    println!("\n--- chunk {}  {}", chunk["chunk_index"], chunk["metadata"]);
                    println!("{}", text(&chunk["text"]));
                }
            }
        }
        Command::Job { id, follow } => {
            if follow {
                let mut events = api.events(&id).await?;
                while let Some((kind, data)) = events.next().await? {
                    if json {
                        print_json(&data);
                    } else {
                        println!("{kind:<10} {}", describe_event(&data));
                    }
                }
            }
            let job = api.get(&format!("/v1/jobs/{id}")).await?;
            if json {
                print_json(&job);
            } else {
                print_job(&job);
            }
        }
        Command::Search {
            query,
            top_k,
            mode,
            group_by,
            collections,
            filters,
            vector_weight,
            keyword_weight,
            rerank,
            no_rerank,
            rerank_candidates,
        } => {
            let body = search::body(&search::Request {
                query: &query,
                top_k,
                mode: mode.as_deref(),
                group_by: group_by.as_deref(),
                collections: &collections,
                filters: &filters,
                vector_weight,
                keyword_weight,
                rerank: (rerank || no_rerank).then_some(rerank),
                rerank_candidates,
            })?;
            let answer = api.post("/v1/search", &body).await?;
            if json {
                print_json(&answer);
            } else {
                search::print_human(&answer);
            }
        }
        Command::Limits => {
            let answer = api.get("/v1/limits").await?;
            print_json(&answer);
        }
        Command::Dlq { action: DlqAction::List { stage, limit } } => {
            let answer = dlq::list(&api, stage.as_deref(), limit).await?;
            if json {
                print_json(&answer);
            } else {
                dlq::print_list(&answer);
            }
        }
        Command::Dlq { action: DlqAction::Retry { stage, ids } } => {
            let (report, none_refused) = dlq::retry(&api, stage.as_deref(), &ids).await?;
            if json {
                print_json(&report);
            } else {
                dlq::print_retry(&report);
            }
            return Ok(if none_refused { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Keys { action } => keys::run(&api, action, json).await?,
        Command::Delete { document_id } => {
            api.delete(&format!("/v1/documents/{document_id}")).await?;
            if json {
                print_json(&json!({ "document_id": document_id, "deleted": true }));
            } else {
                println!("deleted {document_id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every page of a document's chunks as one answer (`next_cursor` null).
async fn chunks(api: &Api, document_id: &str) -> Result<Value, Failure> {
    let path = format!("/v1/documents/{}/chunks?limit=500", sync::encode(document_id));
    let mut list = api.get(&path).await?;
    while let Some(cursor) = list["next_cursor"].as_str().map(str::to_owned) {
        let page = api.get(&format!("{path}&cursor={}", sync::encode(&cursor))).await?;
        if let (Some(all), Some(more)) = (list["chunks"].as_array_mut(), page["chunks"].as_array()) {
            all.extend(more.iter().cloned());
        }
        list["next_cursor"] = page["next_cursor"].clone();
    }
    Ok(list)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn print_job(job: &Value) {
    println!("job       {}", text(&job["job_id"]));
    println!("document  {} (version {})", text(&job["document_id"]), job["version"]);
    println!("status    {} {}%", text(&job["status"]), job["progress"]);
    let chunks = &job["chunks"];
    println!(
        "chunks    {} total, {} stored, {} reused, {} metadata failed",
        chunks["total"], chunks["stored"], chunks["reused"], chunks["metadata_failed"]
    );
    if let Some(eta) = job["eta_seconds"].as_u64() {
        println!("eta       {eta} s");
    }
    if !job["error"].is_null() {
        println!("error     {} stage: {}", text(&job["error"]["stage"]), text(&job["error"]["message"]));
    }
}

fn describe_event(event: &Value) -> String {
    match text(&event["type"]) {
        "chunked" => format!("{} chunks in {} batches", event["chunks"], event["batches"]),
        "batch" => format!("{} batch {}: {} chunks", text(&event["stage"]), event["batch"], event["chunks"]),
        "failed" => format!("{} stage: {}", text(&event["stage"]), text(&event["error"])),
        "retried" => {
            format!("from its {} stage dead letter (had failed: {})", text(&event["stage"]), text(&event["error"]))
        }
        _ => String::new(),
    }
}
