//! `millrace sync DIR`: mirrors a folder into millrace. Every file of a type millrace parses
//! becomes the document `PREFIX + its path relative to DIR`; files that are new or whose bytes
//! changed are ingested, unchanged ones are skipped (their SHA-256 equals the listing's
//! `content_hash`), and documents under the prefix whose file is gone are deleted. The prefix is
//! the mirror's namespace: nothing outside it is touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{Api, Failure};
use crate::ingest::Selection;

/// Extensions of the types millrace parses (`millrace_pipeline::content::from_file_name`).
const PARSED_EXTENSIONS: &[&str] = &["txt", "text", "md", "markdown", "html", "htm", "xhtml", "pdf", "docx"];

/// Documents per listing page.
const PAGE: u32 = 1000;

pub struct Options {
    pub dir: PathBuf,
    /// Document ids are this plus the path relative to DIR; None: DIR's name and `/`.
    pub prefix: Option<String>,
    pub collection: Option<String>,
    pub selection: Selection,
    pub dry_run: bool,
    pub wait: bool,
    pub concurrency: usize,
}

/// A file to mirror: its document id, path and SHA-256.
#[derive(Debug, Clone, PartialEq)]
struct Local {
    path: PathBuf,
    hash: String,
}

/// A stored document under the prefix, as the listing shows it.
#[derive(Debug, Clone, PartialEq)]
struct Remote {
    hash: String,
    collection: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Add,
    Change,
    Unchanged,
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Add => "added",
            Self::Change => "changed",
            Self::Unchanged => "unchanged",
            Self::Delete => "deleted",
        }
    }
}

/// The prefix the documents are kept under: the one given, else DIR's own name and `/`.
pub fn prefix(dir: &Path, given: Option<String>) -> Result<String, Failure> {
    if let Some(prefix) = given {
        return Ok(prefix);
    }
    let absolute =
        std::fs::canonicalize(dir).map_err(|err| Failure::Usage(format!("cannot read {}: {err}", dir.display())))?;
    match absolute.file_name() {
        Some(name) => Ok(format!("{}/", name.to_string_lossy())),
        None => {
            Err(Failure::Usage(format!("{} has no name to keep its documents under: give --prefix", dir.display())))
        }
    }
}

/// Every file under `dir` that the selection takes and millrace parses (hidden ones skipped),
/// by document id.
fn walk(dir: &Path, prefix: &str, selection: &Selection) -> Result<BTreeMap<String, Local>, Failure> {
    let metadata =
        std::fs::metadata(dir).map_err(|err| Failure::Usage(format!("cannot read {}: {err}", dir.display())))?;
    if !metadata.is_dir() {
        return Err(Failure::Usage(format!("{} is not a directory", dir.display())));
    }
    let mut files = BTreeMap::new();
    for path in crate::ingest::files_under(dir, selection)? {
        let relative = path.strip_prefix(dir).unwrap_or(&path);
        let parsed = relative
            .extension()
            .map(|extension| extension.to_string_lossy().to_ascii_lowercase())
            .is_some_and(|extension| PARSED_EXTENSIONS.contains(&extension.as_str()));
        if !parsed {
            continue;
        }
        let id = format!("{prefix}{}", slash_path(relative));
        let bytes =
            std::fs::read(&path).map_err(|err| Failure::Usage(format!("cannot read {}: {err}", path.display())))?;
        files.insert(id, Local { hash: hex::encode(Sha256::digest(&bytes)), path });
    }
    Ok(files)
}

/// A relative path with `/` separators, whatever the platform.
fn slash_path(relative: &Path) -> String {
    relative.components().map(|part| part.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Every document under `prefix` (in any collection: ids are the tenant's), page by page.
async fn listing(api: &Api, prefix: &str) -> Result<BTreeMap<String, Remote>, Failure> {
    let mut documents = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/documents?limit={PAGE}&document_id_prefix={}", encode(prefix));
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", encode(cursor)));
        }
        let page = api.get(&path).await?;
        for document in page["documents"].as_array().into_iter().flatten() {
            let id = document["document_id"].as_str().unwrap_or_default().to_owned();
            documents.insert(
                id,
                Remote {
                    hash: document["content_hash"].as_str().unwrap_or_default().to_owned(),
                    collection: document["collection"].as_str().unwrap_or_default().to_owned(),
                },
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => return Ok(documents),
        }
    }
}

/// What to do with each document id, in id order.
fn plan(
    local: &BTreeMap<String, Local>,
    remote: &BTreeMap<String, Remote>,
    collection: Option<&str>,
) -> Vec<(String, Action)> {
    let mut actions: Vec<(String, Action)> = local
        .iter()
        .map(|(id, file)| {
            let action = match remote.get(id) {
                None => Action::Add,
                // Moving a document to another collection is a change too.
                Some(stored) if stored.hash == file.hash && collection.is_none_or(|c| c == stored.collection) => {
                    Action::Unchanged
                }
                Some(_) => Action::Change,
            };
            (id.clone(), action)
        })
        .collect();
    actions.extend(remote.keys().filter(|id| !local.contains_key(*id)).map(|id| (id.clone(), Action::Delete)));
    actions.sort_by(|a, b| a.0.cmp(&b.0));
    actions
}

/// Mirrors the folder; returns the report and whether everything went through.
pub async fn run(api: &Api, options: Options) -> Result<(Value, bool), Failure> {
    let prefix = prefix(&options.dir, options.prefix.clone())?;
    let local = walk(&options.dir, &prefix, &options.selection)?;
    let remote = listing(api, &prefix).await?;
    let actions = plan(&local, &remote, options.collection.as_deref());
    let outcomes: Vec<Value> = futures::stream::iter(actions)
        .map(|(id, action)| {
            let file = local.get(&id).cloned();
            let options = &options;
            async move { apply(api, &id, action, file.as_ref(), options).await }
        })
        .buffered(options.concurrency.max(1))
        .collect()
        .await;
    let count = |action: Action| outcomes.iter().filter(|o| o["action"] == action.as_str()).count();
    let failed = outcomes.iter().filter(|o| !o["error"].is_null()).count();
    let report = json!({
        "prefix": prefix,
        "dry_run": options.dry_run,
        "waited": options.wait && !options.dry_run,
        "documents": outcomes,
        "totals": {
            "added": count(Action::Add),
            "changed": count(Action::Change),
            "unchanged": count(Action::Unchanged),
            "deleted": count(Action::Delete),
            "failed": failed,
        },
    });
    Ok((report, failed == 0))
}

async fn apply(api: &Api, id: &str, action: Action, file: Option<&Local>, options: &Options) -> Value {
    let mut outcome =
        json!({ "document_id": id, "action": action.as_str(), "job_id": null, "status": null, "error": null });
    if options.dry_run || action == Action::Unchanged {
        return outcome;
    }
    let result = match (action, file) {
        (Action::Delete, _) => api.delete(&format!("/v1/documents/{}", encode(id))).await.map(|_| None),
        (_, Some(file)) => submit(api, id, file, options).await.map(Some),
        (_, None) => Ok(None),
    };
    match result {
        Ok(Some(job)) => {
            outcome["job_id"] = job["job_id"].clone();
            outcome["status"] = job["status"].clone();
            if options.wait && job["status"] != "completed" {
                outcome["error"] = json!(match job["error"]["message"].as_str() {
                    Some(message) => format!("job {}: {message}", job["status"].as_str().unwrap_or("?")),
                    None => format!("job {}", job["status"].as_str().unwrap_or("?")),
                });
            }
        }
        Ok(None) => {}
        Err(err) => outcome["error"] = json!(err.to_string()),
    }
    outcome
}

/// Uploads the file as document `id` (its source the same path); with `--wait`, follows the job
/// to its end and returns its record.
async fn submit(api: &Api, id: &str, file: &Local, options: &Options) -> Result<Value, Failure> {
    let accepted = api.upload_as(&file.path, id, id, options.collection.as_deref()).await?;
    let job_id = accepted["job_id"].as_str().unwrap_or_default().to_owned();
    if !options.wait || accepted["status"] == "completed" {
        return Ok(json!({ "job_id": job_id, "status": accepted["status"].clone() }));
    }
    let mut events = api.events(&job_id).await?;
    while events.next().await?.is_some() {}
    api.get(&format!("/v1/jobs/{job_id}")).await
}

/// Percent-encodes everything but RFC 3986's unreserved characters: a document id in a path
/// segment (`/` included) or a query value.
pub(crate) fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The report for a person: one line per document that moved, then the totals.
pub fn print_human(report: &Value) {
    let dry = report["dry_run"].as_bool().unwrap_or(false);
    for document in report["documents"].as_array().into_iter().flatten() {
        let id = document["document_id"].as_str().unwrap_or("?");
        let action = document["action"].as_str().unwrap_or("?");
        if let Some(error) = document["error"].as_str() {
            println!("failed     {id} ({action}): {error}");
        } else if action != "unchanged" {
            let verb = if dry { format!("would be {action}") } else { action.to_owned() };
            println!("{verb:<10} {id}");
        }
    }
    let totals = &report["totals"];
    println!(
        "{}{}: {} added, {} changed, {} unchanged, {} deleted, {} failed",
        if dry { "dry run, " } else { "" },
        report["prefix"].as_str().unwrap_or(""),
        totals["added"],
        totals["changed"],
        totals["unchanged"],
        totals["deleted"],
        totals["failed"],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(hash: &str) -> Local {
        Local { path: PathBuf::from("x"), hash: hash.into() }
    }

    fn remote(hash: &str, collection: &str) -> Remote {
        Remote { hash: hash.into(), collection: collection.into() }
    }

    #[test]
    fn the_plan_adds_changes_skips_and_deletes() {
        let local = BTreeMap::from([
            ("p/new.md".to_owned(), local("h1")),
            ("p/same.md".to_owned(), local("h2")),
            ("p/edited.md".to_owned(), local("h3")),
        ]);
        let remote = BTreeMap::from([
            ("p/same.md".to_owned(), remote("h2", "default")),
            ("p/edited.md".to_owned(), remote("old", "default")),
            ("p/gone.md".to_owned(), remote("h4", "default")),
        ]);
        assert_eq!(
            plan(&local, &remote, None),
            [
                ("p/edited.md".to_owned(), Action::Change),
                ("p/gone.md".to_owned(), Action::Delete),
                ("p/new.md".to_owned(), Action::Add),
                ("p/same.md".to_owned(), Action::Unchanged),
            ]
        );
        // Into another collection, the same bytes are a change.
        assert_eq!(plan(&local, &remote, Some("eng"))[3], ("p/same.md".to_owned(), Action::Change));
        assert_eq!(plan(&local, &remote, Some("default"))[3], ("p/same.md".to_owned(), Action::Unchanged));
    }

    #[test]
    fn only_parsed_types_are_taken_and_ids_are_prefixed_relative_paths() {
        let dir = std::env::temp_dir().join(format!("millrace-sync-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for file in ["a.md", "b.TXT", "sub/c.html", "image.png", "archive.zip", ".hidden.md", "sub/d.pdf"] {
            std::fs::write(dir.join(file), file).unwrap();
        }
        let files = walk(&dir, "docs/", &Selection::new(&[], &[]).unwrap()).unwrap();
        let ids: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(ids, ["docs/a.md", "docs/b.TXT", "docs/sub/c.html", "docs/sub/d.pdf"]);
        assert_eq!(files["docs/a.md"].hash, hex::encode(Sha256::digest(b"a.md")));
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(prefix(&dir, None).unwrap(), format!("{name}/"));
        assert_eq!(prefix(&dir, Some(String::new())).unwrap(), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ids_are_percent_encoded() {
        assert_eq!(encode("docs/a b.md"), "docs%2Fa%20b.md");
        assert_eq!(encode("é~_-."), "%C3%A9~_-.");
    }
}
