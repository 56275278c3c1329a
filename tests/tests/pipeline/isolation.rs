//! Tenants cannot see, change or detect one another. Three tenants, each with three keys (one
//! used over HTTP, one over gRPC, one limited to the collection `c1`), created through
//! `POST /v1/keys` with the admin key, ingest, search, list, watch, delete and cancel at random
//! (seeded: `ISOLATION_SEED` replays a run; the seed is printed). Every answer is checked as it
//! comes: another tenant's job or document answers exactly what a random missing id answers,
//! every search hit is the caller's tenant's (its text names the tenant) and of a collection the
//! key may use, and every list holds only the caller's own ids. At the end, with every job
//! finished: no job was cancelled but by its own tenant, and every document a tenant submitted
//! last (and did not delete) is there, in that tenant only; no chunk row is another tenant's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use millrace_e2e::{Authed, Bearer, Stack, StackOptions, with_key};
use millrace_proto::v1::ingestion_client::IngestionClient;
use millrace_proto::v1::{
    CancelJobRequest, DeleteDocumentRequest, GetJobRequest, ListJobsRequest, SearchRequest, SubmitRequest,
    WatchJobRequest,
};
use reqwest::Method;
use serde_json::{Value, json};

const TENANTS: usize = 3;
const STEPS: usize = 160;
/// Document ids each tenant draws from: the same ids in every tenant, on purpose.
const SHARED_IDS: u64 = 6;
/// A job id and a document id that were never given out.
const MISSING_JOB: &str = "0190ffff-0000-7000-8000-000000000000";
const MISSING_DOC: &str = "never-submitted-anywhere";

/// A small seeded generator (SplitMix64): the run is replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

/// How a key reaches the API.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    Http,
    Grpc,
}

struct Key {
    tenant: usize,
    via: Via,
    /// `Some(["c1"])` for the limited key.
    collections: Option<Vec<String>>,
    http: reqwest::Client,
    grpc: IngestionClient<Authed>,
}

impl Key {
    fn may_use(&self, collection: &str) -> bool {
        self.collections.as_ref().is_none_or(|allowed| allowed.iter().any(|c| c == collection))
    }
}

/// A job as the test submitted it.
#[derive(Clone, Debug)]
struct Submitted {
    job_id: String,
    tenant: usize,
    document_id: String,
    collection: String,
}

/// What the test did, to check the end state against.
#[derive(Default)]
struct Model {
    jobs: Vec<Submitted>,
    /// Jobs their own tenant cancelled (or tried to: a finished one stays as it was).
    cancelled_by_owner: BTreeSet<String>,
    /// Per (tenant, document): the last thing its tenant did to it, `Some(job)` an ingest, `None`
    /// a delete.
    last: BTreeMap<(usize, String), Option<String>>,
    /// (tenant, document) pairs their tenant deleted at some point.
    deleted: BTreeSet<(usize, String)>,
}

fn marker(tenant: usize) -> String {
    format!("tenant{tenant}marker")
}

/// A call's answer, whatever the transport: status (HTTP code, or the gRPC code's name) and body
/// (JSON text, or the gRPC message), with `id` replaced by `<id>` so answers about two ids compare.
fn normalised(status: String, body: &str, id: &str) -> (String, String) {
    (status, body.replace(id, "<id>"))
}

async fn http_call(key: &Key, stack: &Stack, method: Method, path: &str, body: Option<Value>) -> (u16, String) {
    let mut request = key.http.request(method, format!("{}{path}", stack.api()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // An event stream does not end while its job runs: only its status is read.
    if status == 200 && response.headers().get("content-type").is_some_and(|t| t == "text/event-stream") {
        return (status, String::new());
    }
    (status, response.text().await.unwrap())
}

/// What asking `key` about job `job_id` answers, in one of the ways a job can be asked about.
async fn ask_job(key: &mut Key, stack: &Stack, job_id: &str, how: u64) -> (String, String) {
    match (key.via, how % 3) {
        (Via::Http, 0) => {
            let (status, body) = http_call(key, stack, Method::GET, &format!("/v1/jobs/{job_id}"), None).await;
            normalised(status.to_string(), &body, job_id)
        }
        (Via::Http, 1) => {
            let (status, body) = http_call(key, stack, Method::GET, &format!("/v1/jobs/{job_id}/events"), None).await;
            normalised(status.to_string(), &body, job_id)
        }
        (Via::Http, _) => {
            let (status, body) = http_call(key, stack, Method::DELETE, &format!("/v1/jobs/{job_id}"), None).await;
            normalised(status.to_string(), &body, job_id)
        }
        (Via::Grpc, 0) => match key.grpc.get_job(GetJobRequest { job_id: job_id.to_owned() }).await {
            Ok(_) => ("OK".to_owned(), String::new()),
            Err(status) => normalised(format!("{:?}", status.code()), status.message(), job_id),
        },
        (Via::Grpc, 1) => {
            let request = WatchJobRequest { job_id: job_id.to_owned(), after_event_id: String::new() };
            match key.grpc.watch_job(request).await {
                Ok(_) => ("OK".to_owned(), String::new()),
                Err(status) => normalised(format!("{:?}", status.code()), status.message(), job_id),
            }
        }
        (Via::Grpc, _) => match key.grpc.cancel_job(CancelJobRequest { job_id: job_id.to_owned() }).await {
            Ok(_) => ("OK".to_owned(), String::new()),
            Err(status) => normalised(format!("{:?}", status.code()), status.message(), job_id),
        },
    }
}

async fn create_key(stack: &Stack, tenant: usize, via: Via, collections: Option<Vec<String>>) -> Key {
    let mut body = json!({
        "tenant": format!("tenant-{tenant}"),
        "name": format!("isolation {via:?}"),
        "scopes": ["ingest", "read", "search", "delete"],
    });
    if let Some(collections) = &collections {
        body["collections"] = json!(collections);
    }
    let (status, created, _) = stack.post("/v1/keys", &body).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["key"].as_str().unwrap().to_owned();
    let http = with_key(reqwest::Client::builder(), &secret).timeout(Duration::from_secs(30)).build().unwrap();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", stack.services["ingestion"].grpc_port))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let grpc = IngestionClient::new(Authed::new(channel, Bearer::new(&secret)));
    Key { tenant, via, collections, http, grpc }
}

#[tokio::test]
async fn no_tenant_sees_changes_or_detects_another_tenants_work() {
    let seed = std::env::var("ISOLATION_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_000
    });
    eprintln!("isolation: seed {seed} (ISOLATION_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let stack = Stack::start(StackOptions::default()).await.unwrap();

    let mut keys = Vec::new();
    for tenant in 0..TENANTS {
        keys.push(create_key(&stack, tenant, Via::Http, None).await);
        keys.push(create_key(&stack, tenant, Via::Grpc, None).await);
        let via = if rng.below(2) == 0 { Via::Http } else { Via::Grpc };
        keys.push(create_key(&stack, tenant, via, Some(vec!["c1".to_owned()])).await);
    }
    let mut model = Model::default();
    // What the run checked, so that it cannot pass without checking anything.
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();

    for step in 0..STEPS {
        let k = rng.below(keys.len() as u64) as usize;
        let tenant = keys[k].tenant;
        let via = keys[k].via;
        let context = |what: &str| format!("seed {seed}, step {step}, key {k} (tenant {tenant}, {via:?}): {what}");
        match rng.below(8) {
            // Ingest (twice as likely as the rest): a shared id, or the limited key's own ids.
            0 | 1 => {
                let limited = keys[k].collections.is_some();
                let (document_id, collection) = if limited {
                    (format!("limited-{}", rng.below(3)), "c1".to_owned())
                } else {
                    (format!("doc-{}", rng.below(SHARED_IDS)), ["default", "c2"][rng.below(2) as usize].to_owned())
                };
                let content = format!(
                    "{} owns {document_id} in {collection}. Revision {step} of a note about rivers, mills and water.",
                    marker(tenant)
                );
                let job_id = match keys[k].via {
                    Via::Http => {
                        let body = json!({ "document_id": document_id, "content": content, "collection": collection });
                        let (status, text) = http_call(&keys[k], &stack, Method::POST, "/v1/ingest", Some(body)).await;
                        assert!(
                            status == 202 || status == 200,
                            "{}",
                            context(&format!("ingest answered {status}: {text}"))
                        );
                        serde_json::from_str::<Value>(&text).unwrap()["job_id"].as_str().unwrap().to_owned()
                    }
                    Via::Grpc => {
                        let request = SubmitRequest {
                            document_id: Some(document_id.clone()),
                            content: content.into_bytes(),
                            content_type: "text/plain".into(),
                            collection: collection.clone(),
                            ..Default::default()
                        };
                        let accepted = keys[k].grpc.submit(request).await;
                        accepted
                            .unwrap_or_else(|status| panic!("{}", context(&format!("{status:?}"))))
                            .into_inner()
                            .job_id
                    }
                };
                model.last.insert((tenant, document_id.clone()), Some(job_id.clone()));
                model.jobs.push(Submitted { job_id, tenant, document_id, collection });
            }
            // Ask about a job: read it, watch it or cancel it. Another tenant's (or a collection
            // the key may not use) answers what a missing one does, and changes nothing.
            2 | 3 => {
                let Some(job) = rng.pick(&model.jobs).cloned() else { continue };
                let how = rng.below(3);
                let answer = ask_job(&mut keys[k], &stack, &job.job_id, how).await;
                let visible = job.tenant == tenant && keys[k].may_use(&job.collection);
                if visible {
                    assert!(
                        answer.0 == "200" || answer.0 == "OK" || answer.0 == "409" || answer.0 == "FailedPrecondition",
                        "{}",
                        context(&format!("own job {}: {answer:?}", job.job_id))
                    );
                    if how == 2 {
                        model.cancelled_by_owner.insert(job.job_id.clone());
                    }
                } else {
                    *checked.entry("foreign or hidden jobs asked about").or_default() += 1;
                    let missing = ask_job(&mut keys[k], &stack, MISSING_JOB, how).await;
                    assert_eq!(
                        answer,
                        missing,
                        "{}",
                        context(&format!("foreign job {} of tenant {}", job.job_id, job.tenant))
                    );
                }
            }
            // List: only the tenant's own jobs, of collections the key may use.
            4 => {
                let listed: Vec<(String, String)> = match keys[k].via {
                    Via::Http => {
                        let (status, text) =
                            http_call(&keys[k], &stack, Method::GET, "/v1/jobs?limit=1000", None).await;
                        assert_eq!(status, 200, "{}", context(&text));
                        serde_json::from_str::<Value>(&text).unwrap()["jobs"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|job| {
                                (
                                    job["job_id"].as_str().unwrap().to_owned(),
                                    job["collection"].as_str().unwrap().to_owned(),
                                )
                            })
                            .collect()
                    }
                    Via::Grpc => {
                        let request = ListJobsRequest { limit: 1000, ..Default::default() };
                        let listed = keys[k].grpc.list_jobs(request).await.unwrap().into_inner();
                        listed.jobs.into_iter().map(|job| (job.job_id, job.collection)).collect()
                    }
                };
                let own: BTreeSet<&str> = model
                    .jobs
                    .iter()
                    .filter(|job| job.tenant == tenant && keys[k].may_use(&job.collection))
                    .map(|job| job.job_id.as_str())
                    .collect();
                for (job_id, collection) in &listed {
                    assert!(own.contains(job_id.as_str()), "{}", context(&format!("listed {job_id}, not its own")));
                    assert!(keys[k].may_use(collection), "{}", context(&format!("listed {job_id} of {collection}")));
                }
                assert_eq!(listed.len(), own.len(), "{}", context("the list misses own jobs"));
            }
            // Search, naming collections or not: every hit is the tenant's, of a usable collection.
            5 => {
                let query = format!("{} rivers mills {}", marker(rng.below(TENANTS as u64) as usize), marker(tenant));
                let named: Vec<String> = match rng.below(3) {
                    0 => vec![],
                    1 => vec!["c1".into()],
                    _ => vec!["default".into(), "c2".into()],
                };
                let allowed = named.iter().all(|c| keys[k].may_use(c));
                let hits: Result<Vec<(String, String)>, String> = match keys[k].via {
                    Via::Http => {
                        let body = json!({ "query": query, "top_k": 20, "collections": named });
                        let (status, text) = http_call(&keys[k], &stack, Method::POST, "/v1/search", Some(body)).await;
                        if status == 200 {
                            Ok(serde_json::from_str::<Value>(&text).unwrap()["results"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|hit| {
                                    (
                                        hit["text"].as_str().unwrap().to_owned(),
                                        hit["collection"].as_str().unwrap().to_owned(),
                                    )
                                })
                                .collect())
                        } else {
                            Err(status.to_string())
                        }
                    }
                    Via::Grpc => {
                        let request =
                            SearchRequest { query, top_k: 20, collections: named.clone(), ..Default::default() };
                        match keys[k].grpc.search(request).await {
                            Ok(found) => Ok(found
                                .into_inner()
                                .results
                                .into_iter()
                                .map(|hit| (hit.text, hit.collection))
                                .collect()),
                            Err(status) => Err(format!("{:?}", status.code())),
                        }
                    }
                };
                match (allowed, hits) {
                    (true, Ok(hits)) => {
                        *checked.entry("search hits").or_default() += hits.len();
                        for (text, collection) in hits {
                            assert!(
                                text.contains(&marker(tenant)),
                                "{}",
                                context(&format!("hit of another tenant: {text}"))
                            );
                            for other in (0..TENANTS).filter(|t| *t != tenant) {
                                assert!(
                                    !text.contains(&marker(other)),
                                    "{}",
                                    context(&format!("hit names tenant {other}: {text}"))
                                );
                            }
                            assert!(keys[k].may_use(&collection), "{}", context(&format!("hit of {collection}")));
                            assert!(
                                named.is_empty() || named.contains(&collection),
                                "{}",
                                context(&format!("hit of {collection}, not named"))
                            );
                        }
                    }
                    (false, Err(code)) => assert!(code == "403" || code == "PermissionDenied", "{}", context(&code)),
                    (allowed, answer) => panic!("{}", context(&format!("allowed {allowed}, answered {answer:?}"))),
                }
            }
            // Read a document by id: one only another tenant holds is a missing one.
            6 => {
                let document_id = format!("doc-{}", rng.below(SHARED_IDS));
                let (status, body) =
                    http_call(&keys[k], &stack, Method::GET, &format!("/v1/documents/{document_id}"), None).await;
                if status == 200 {
                    let document: Value = serde_json::from_str(&body).unwrap();
                    let owned = model.jobs.iter().any(|job| job.tenant == tenant && job.document_id == document_id);
                    assert!(owned, "{}", context(&format!("read {document_id}, which it never submitted: {body}")));
                    assert!(keys[k].may_use(document["collection"].as_str().unwrap()), "{}", context(&body));
                } else {
                    if model.jobs.iter().any(|job| job.tenant != tenant && job.document_id == document_id) {
                        *checked.entry("documents read that another tenant holds").or_default() += 1;
                    }
                    let (missing_status, missing) =
                        http_call(&keys[k], &stack, Method::GET, &format!("/v1/documents/{MISSING_DOC}"), None).await;
                    assert_eq!(
                        normalised(status.to_string(), &body, &document_id),
                        normalised(missing_status.to_string(), &missing, MISSING_DOC),
                        "{}",
                        context(&document_id)
                    );
                }
            }
            // Delete one of the tenant's document ids (another tenant's of the same id must stay).
            _ => {
                if keys[k].collections.is_some() {
                    continue;
                }
                let document_id = format!("doc-{}", rng.below(SHARED_IDS));
                let status = match keys[k].via {
                    Via::Http => {
                        http_call(&keys[k], &stack, Method::DELETE, &format!("/v1/documents/{document_id}"), None)
                            .await
                            .0
                    }
                    Via::Grpc => {
                        let request = DeleteDocumentRequest { document_id: document_id.clone(), ..Default::default() };
                        match keys[k].grpc.delete_document(request).await {
                            Ok(_) => 204,
                            Err(status) if status.code() == tonic::Code::NotFound => 404,
                            Err(status) => panic!("{}", context(&format!("{status:?}"))),
                        }
                    }
                };
                assert!(status == 204 || status == 404, "{}", context(&format!("delete answered {status}")));
                let submitted = model.jobs.iter().any(|job| job.tenant == tenant && job.document_id == document_id);
                if status == 204 {
                    assert!(submitted, "{}", context(&format!("deleted {document_id}, which it never submitted")));
                }
                model.last.insert((tenant, document_id.clone()), None);
                model.deleted.insert((tenant, document_id));
                *checked.entry("deletes").or_default() += 1;
            }
        }
    }

    eprintln!("isolation: {} jobs submitted; checked {checked:?}", model.jobs.len());
    for what in ["foreign or hidden jobs asked about", "search hits", "documents read that another tenant holds"] {
        assert!(checked.get(what).copied().unwrap_or(0) > 0, "seed {seed}: the run checked no {what}");
    }

    // The end state, once every job has finished.
    let mut finished: BTreeMap<String, Value> = BTreeMap::new();
    for job in &model.jobs {
        let done = stack.wait_for_job(&job.job_id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(done["tenant_id"].as_str(), Some(format!("tenant-{}", job.tenant).as_str()), "seed {seed}");
        finished.insert(job.job_id.clone(), done);
    }
    for job in &model.jobs {
        let status = finished[&job.job_id]["status"].as_str().unwrap().to_owned();
        assert_ne!(status, "failed", "seed {seed}: job {} failed: {}", job.job_id, finished[&job.job_id]);
        if status == "cancelled" {
            let by_owner = model.cancelled_by_owner.contains(&job.job_id)
                || model.deleted.contains(&(job.tenant, job.document_id.clone()));
            assert!(
                by_owner,
                "seed {seed}: job {} of tenant {} was cancelled, not by its tenant",
                job.job_id, job.tenant
            );
        }
    }
    // Each tenant's last word on each document holds, in that tenant only.
    for ((tenant, document_id), last) in &model.last {
        let owner = keys.iter().find(|key| key.tenant == *tenant && key.collections.is_none()).unwrap();
        let (status, body) = http_call(owner, &stack, Method::GET, &format!("/v1/documents/{document_id}"), None).await;
        match last {
            None => assert_eq!(status, 404, "seed {seed}: tenant {tenant} deleted {document_id}, yet: {body}"),
            Some(job_id) if finished[job_id]["status"] == "completed" => {
                assert_eq!(status, 200, "seed {seed}: tenant {tenant}'s {document_id} is gone: {body}");
                let document: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(
                    document["version"], finished[job_id]["version"],
                    "seed {seed}: {document_id} of tenant {tenant}"
                );
            }
            Some(_) => {}
        }
    }
    // In storage, every chunk row's text names the tenant it is filed under.
    let client = stack.postgres().await;
    for row in client.query("SELECT tenant_id, text FROM chunks", &[]).await.unwrap() {
        let (tenant_id, text): (String, String) = (row.get(0), row.get(1));
        let tenant: usize = tenant_id.trim_start_matches("tenant-").parse().unwrap();
        assert!(text.contains(&marker(tenant)), "seed {seed}: a chunk of {tenant_id} reads {text:?}");
    }
}
