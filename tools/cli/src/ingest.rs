//! `millrace ingest PATH|URL…`: submits every file (directories recursively, chosen with
//! `--include`/`--exclude` globs) and URL, and with `--wait` follows each job's events with a
//! progress bar, then prints a summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt as _;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::api::{Api, Failure};

/// One thing to ingest.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    File(PathBuf),
    Url(String),
}

impl Input {
    fn name(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Url(url) => url.clone(),
        }
    }
}

/// Which files under a directory are taken: `--include` and `--exclude` globs, matched against
/// the file's path relative to the directory given (`/`-separated). A glob without `/` matches
/// the name at any depth (`*.md`, `node_modules`), as in `.gitignore` or ripgrep's `-g`; one with
/// `/` matches the whole relative path (`drafts/**`; `*` stops at `/`, `**` does not). A file
/// is taken if it matches an include (or none is given) and no exclude; a directory an exclude
/// matches is not walked. Files named on the command line are always taken.
#[derive(Debug, Clone)]
pub struct Selection {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Selection {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, Failure> {
        let include = if include.is_empty() { None } else { Some(glob_set("--include", include)?) };
        Ok(Self { include, exclude: glob_set("--exclude", exclude)? })
    }

    /// Every file, as without globs.
    #[cfg(test)]
    fn all() -> Self {
        Self { include: None, exclude: GlobSet::empty() }
    }

    fn takes(&self, relative: &Path) -> bool {
        self.include.as_ref().is_none_or(|include| include.is_match(relative)) && !self.exclude.is_match(relative)
    }

    fn prunes(&self, relative: &Path) -> bool {
        self.exclude.is_match(relative)
    }
}

fn glob_set(flag: &str, patterns: &[String]) -> Result<GlobSet, Failure> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let anchored =
            if pattern.contains('/') { pattern.trim_start_matches('/').to_owned() } else { format!("**/{pattern}") };
        let glob = GlobBuilder::new(&anchored)
            .literal_separator(true)
            .build()
            .map_err(|err| Failure::Usage(format!("{flag} {pattern:?} is not a glob: {}", err.kind())))?;
        set.add(glob);
    }
    set.build().map_err(|err| Failure::Usage(format!("{flag}: {err}")))
}

/// Files and URLs named on the command line; a directory stands for every file under it that
/// `selection` takes (hidden ones skipped), in name order. A path that does not exist is refused
/// before anything is sent.
pub fn inputs(args: &[String], selection: &Selection) -> Result<Vec<Input>, Failure> {
    let mut inputs = Vec::new();
    for arg in args {
        if arg.starts_with("http://") || arg.starts_with("https://") {
            inputs.push(Input::Url(arg.clone()));
            continue;
        }
        let path = Path::new(arg);
        let metadata =
            std::fs::metadata(path).map_err(|err| Failure::Usage(format!("cannot read {arg}: {}", describe(&err))))?;
        if metadata.is_dir() {
            inputs.extend(files_under(path, selection)?.into_iter().map(Input::File));
        } else {
            inputs.push(Input::File(path.to_path_buf()));
        }
    }
    if inputs.is_empty() {
        return Err(Failure::Usage(
            "nothing to ingest: the directories given hold no files (that the globs take)".into(),
        ));
    }
    Ok(inputs)
}

/// The files under directory `path` that `selection` takes, hidden ones skipped, in name order.
pub fn files_under(path: &Path, selection: &Selection) -> Result<Vec<PathBuf>, Failure> {
    let relative = |entry: &walkdir::DirEntry| entry.path().strip_prefix(path).unwrap_or(entry.path()).to_owned();
    let walk = walkdir::WalkDir::new(path).sort_by_file_name().into_iter().filter_entry(|entry| {
        entry.depth() == 0
            || !(entry.file_name().to_string_lossy().starts_with('.')
                || entry.file_type().is_dir() && selection.prunes(&relative(entry)))
    });
    let mut files = Vec::new();
    for entry in walk {
        let entry = entry.map_err(|err| Failure::Usage(format!("cannot read {}: {err}", path.display())))?;
        if entry.file_type().is_file() && selection.takes(&relative(&entry)) {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

fn describe(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => err.to_string(),
    }
}

/// How one input ended.
struct Outcome {
    input: String,
    job: Option<Value>,
    error: Option<String>,
}

/// Ingests every input, `concurrency` at a time; returns the report and whether all succeeded.
pub async fn run(api: &Api, inputs: Vec<Input>, wait: bool, concurrency: usize, quiet: bool) -> (Value, bool) {
    let started = Instant::now();
    let bars = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let overall = bars.add(ProgressBar::new(inputs.len() as u64));
    overall.set_style(style("{prefix:>12} [{bar:30}] {pos}/{len} documents {elapsed}"));
    overall.set_prefix("ingest");
    let outcomes: Vec<Outcome> = futures::stream::iter(inputs)
        .map(|input| {
            let (api, bars, overall) = (api.clone(), bars.clone(), overall.clone());
            async move {
                let outcome = one(&api, &input, wait, &bars).await;
                overall.inc(1);
                outcome
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    overall.finish_and_clear();
    report(&outcomes, wait, started.elapsed().as_secs_f64())
}

async fn one(api: &Api, input: &Input, wait: bool, bars: &MultiProgress) -> Outcome {
    let name = input.name();
    let accepted = match input {
        Input::File(path) => api.upload(path, &document_id(path)).await,
        Input::Url(url) => api.post("/v1/ingest", &json!({ "url": url })).await,
    };
    let job_id = match accepted {
        Ok(answer) => answer["job_id"].as_str().unwrap_or_default().to_owned(),
        Err(err) => return Outcome { input: name, job: None, error: Some(err.to_string()) },
    };
    if !wait {
        return Outcome { input: name, job: Some(json!({ "job_id": job_id, "status": "queued" })), error: None };
    }
    let bar = bars.add(ProgressBar::new(0));
    bar.set_style(style("{prefix:>12} [{bar:30}] {pos}/{len} chunks {msg}"));
    bar.set_prefix(short(&name));
    let followed = follow(api, &job_id, &bar).await;
    bar.finish_and_clear();
    if let Err(err) = followed {
        return Outcome { input: name, job: None, error: Some(err.to_string()) };
    }
    match api.get(&format!("/v1/jobs/{job_id}")).await {
        Ok(job) => {
            let error = (job["status"] != "completed").then(|| match &job["error"] {
                Value::Null => format!("job {}", job["status"].as_str().unwrap_or("?")),
                error => format!(
                    "{} stage: {}",
                    error["stage"].as_str().unwrap_or("?"),
                    error["message"].as_str().unwrap_or("?")
                ),
            });
            Outcome { input: name, job: Some(job), error }
        }
        Err(err) => Outcome { input: name, job: None, error: Some(err.to_string()) },
    }
}

/// Moves the bar with the job's events until its last.
async fn follow(api: &Api, job_id: &str, bar: &ProgressBar) -> Result<(), Failure> {
    let mut events = api.events(job_id).await?;
    while let Some((kind, data)) = events.next().await? {
        match kind.as_str() {
            "chunked" => bar.set_length(data["chunks"].as_u64().unwrap_or(0)),
            "batch" if data["stage"] == "storage" => bar.inc(data["chunks"].as_u64().unwrap_or(0)),
            "batch" => bar.set_message(format!("{} batch {}", data["stage"].as_str().unwrap_or(""), data["batch"])),
            _ => bar.set_message(kind),
        }
    }
    Ok(())
}

/// A file's document id: its path as given, with `/` separators, so that ingesting the same
/// tree again makes new versions of the same documents.
fn document_id(path: &Path) -> String {
    path.components()
        .filter(|part| !matches!(part, std::path::Component::CurDir))
        .map(|part| part.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn short(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= 24 {
        name.to_owned()
    } else {
        format!("…{}", chars[chars.len() - 23..].iter().collect::<String>())
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

fn report(outcomes: &[Outcome], waited: bool, seconds: f64) -> (Value, bool) {
    let number =
        |job: &Option<Value>, pointer: &str| job.as_ref().and_then(|j| j.pointer(pointer)).and_then(Value::as_f64);
    // `+ 0.0`: an empty float sum is -0.0, which would print as "$-0.0000".
    let sum = |pointer: &str| outcomes.iter().filter_map(|o| number(&o.job, pointer)).sum::<f64>() + 0.0;
    let documents: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            json!({
                "input": o.input,
                "job_id": o.job.as_ref().map(|j| j["job_id"].clone()),
                "status": o.job.as_ref().map_or(json!("refused"), |j| j["status"].clone()),
                "chunks": number(&o.job, "/chunks/stored"),
                "error": o.error,
                "trace_id": o.job.as_ref().and_then(|j| j.get("trace_id").cloned()),
            })
        })
        .collect();
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let report = json!({
        "documents": documents,
        "totals": {
            "documents": outcomes.len(),
            "succeeded": outcomes.len() - failed,
            "failed": failed,
            "waited": waited,
            "chunks": sum("/chunks/stored") as u64,
            "reused": sum("/chunks/reused") as u64,
            "prompt_tokens": sum("/llm/prompt_tokens") as u64,
            "completion_tokens": sum("/llm/completion_tokens") as u64,
            "cost_usd": sum("/llm/cost_usd"),
            "seconds": (seconds * 10.0).round() / 10.0,
        },
    });
    (report, failed == 0)
}

/// The report for a person: one line per failure, then the totals.
pub fn print_human(report: &Value) {
    for document in report["documents"].as_array().into_iter().flatten() {
        if let Some(error) = document["error"].as_str() {
            println!("failed  {}: {error}", document["input"].as_str().unwrap_or("?"));
        } else if !report["totals"]["waited"].as_bool().unwrap_or(false) {
            println!(
                "queued  {}  job {}",
                document["input"].as_str().unwrap_or("?"),
                document["job_id"].as_str().unwrap_or("?")
            );
        }
    }
    let totals = &report["totals"];
    println!(
        "{} documents: {} succeeded, {} failed; {} chunks stored ({} reused); {} + {} LLM tokens, ${:.4}; {:.1} s",
        totals["documents"],
        totals["succeeded"],
        totals["failed"],
        totals["chunks"],
        totals["reused"],
        totals["prompt_tokens"],
        totals["completion_tokens"],
        totals["cost_usd"].as_f64().unwrap_or(0.0),
        totals["seconds"].as_f64().unwrap_or(0.0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_walked_in_order_without_hidden_files_and_missing_paths_refused() {
        let dir = std::env::temp_dir().join(format!("millrace-cli-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        for file in ["b.md", "a.txt", "sub/c.html", ".hidden", ".git/config"] {
            std::fs::write(dir.join(file), "x").unwrap();
        }
        let found = inputs(&[dir.display().to_string(), "https://example.org/x".into()], &Selection::all()).unwrap();
        let names: Vec<String> = found.iter().map(Input::name).collect();
        let root = dir.display().to_string();
        assert_eq!(
            names,
            vec![
                format!("{root}/a.txt"),
                format!("{root}/b.md"),
                format!("{root}/sub/c.html"),
                "https://example.org/x".into()
            ]
        );
        let missing = inputs(&[dir.join("nope").display().to_string()], &Selection::all()).unwrap_err();
        assert!(matches!(&missing, Failure::Usage(m) if m.contains("no such file or directory")), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The files under `dir` that `--include`/`--exclude` take, relative to `dir`.
    fn selected(dir: &Path, extra: &[&str], include: &[&str], exclude: &[&str]) -> Result<Vec<String>, Failure> {
        let strings = |globs: &[&str]| globs.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>();
        let selection = Selection::new(&strings(include), &strings(exclude))?;
        let mut args = vec![dir.display().to_string()];
        args.extend(extra.iter().map(|file| dir.join(file).display().to_string()));
        let found = inputs(&args, &selection)?;
        Ok(found
            .iter()
            .map(|input| match input {
                Input::File(path) => path.strip_prefix(dir).unwrap().display().to_string(),
                Input::Url(url) => url.clone(),
            })
            .collect())
    }

    #[test]
    fn globs_select_files_under_directories_by_their_relative_path() {
        let dir = std::env::temp_dir().join(format!("millrace-cli-globs-{}", std::process::id()));
        for sub in ["drafts/old", "guide/drafts", "node_modules/pkg", "notes"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let files =
            ["a.md", "b.txt", "drafts/d.md", "drafts/old/e.md", "guide/drafts/f.md", "guide/g.md", "notes/n.txt"];
        for file in files.iter().chain(&["node_modules/pkg/readme.md"]) {
            std::fs::write(dir.join(file), "x").unwrap();
        }
        let mut all: Vec<String> = files.iter().map(|f| (*f).to_owned()).collect();
        all.insert(6, "node_modules/pkg/readme.md".into());
        assert_eq!(selected(&dir, &[], &[], &[]).unwrap(), all, "no globs: every file");

        // A glob without `/` matches the name at any depth.
        assert_eq!(
            selected(&dir, &[], &["*.md"], &["node_modules"]).unwrap(),
            ["a.md", "drafts/d.md", "drafts/old/e.md", "guide/drafts/f.md", "guide/g.md"]
        );
        // One with `/` matches the path from the directory given: only the top `drafts`.
        assert_eq!(
            selected(&dir, &[], &["*.md"], &["drafts/**", "node_modules"]).unwrap(),
            ["a.md", "guide/drafts/f.md", "guide/g.md"]
        );
        // `*` stops at `/`; `**` does not.
        assert_eq!(selected(&dir, &[], &["drafts/*"], &[]).unwrap(), ["drafts/d.md"]);
        assert_eq!(selected(&dir, &[], &["drafts/**"], &[]).unwrap(), ["drafts/d.md", "drafts/old/e.md"]);
        // Several includes add up; an exclude of a directory's name skips it wherever it is.
        assert_eq!(selected(&dir, &[], &["*.txt", "guide/*.md"], &["notes"]).unwrap(), ["b.txt", "guide/g.md"]);
        // A file named on the command line is taken whatever the globs say.
        assert_eq!(
            selected(&dir, &["drafts/d.md", "b.txt"], &["*.md"], &["drafts/**", "node_modules"]).unwrap(),
            ["a.md", "guide/drafts/f.md", "guide/g.md", "drafts/d.md", "b.txt"]
        );
        // Globs that leave nothing, and a pattern that is not a glob, are refused as usage errors.
        let none = selected(&dir, &[], &["*.pdf"], &[]).unwrap_err();
        assert!(matches!(&none, Failure::Usage(m) if m.starts_with("nothing to ingest")), "{none}");
        let bad = selected(&dir, &[], &["a[b"], &[]).unwrap_err();
        assert!(matches!(&bad, Failure::Usage(m) if m.starts_with("--include \"a[b\" is not a glob")), "{bad}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn document_ids_are_the_paths_as_given() {
        assert_eq!(document_id(Path::new("./examples/guide.md")), "examples/guide.md");
        assert_eq!(document_id(Path::new("notes.txt")), "notes.txt");
    }
}
