//! The crawler: a second stream worker of the chunking service, on the crawl stream
//! (`Keys::crawl_stream`, consumer group `crawler`). Each entry is one page of a run's crawl:
//!
//! 1. the run's state decides whether to go on (a cancelled run's pages only leave `pending`);
//! 2. robots.txt of the page's origin, fetched once per run and cached in Redis
//!    ([`Keys::run_robots`], `MILLRACE_CRAWL_ROBOTS_TTL_SECS`), must allow it for
//!    `MILLRACE_CRAWL_USER_AGENT`; the start page also reads the sitemaps (robots.txt's
//!    `Sitemap:` lines, else `/sitemap.xml`), whose pages join the frontier at depth 0;
//! 3. the page is fetched through the SSRF guard ([`Fetcher`]), every request (redirect hops,
//!    robots.txt and sitemaps included) first admitted by the host's requests-per-minute
//!    limiter (`MILLRACE_CRAWL_HOST_RPM`), shared by every replica through Redis;
//! 4. a page of a type millrace parses, whose canonical URL is itself, becomes a job with the
//!    fetched bytes ([`JobStore::create_page_job`]: at most `max_pages`, once per page); its
//!    links in scope join the frontier at depth + 1 (up to `max_depth`);
//! 5. [`JobStore::page_done`] adds the links, records a page not taken (`page_skipped`, with
//!    the reason) and takes the page out of `pending`, once.
//!
//! Skip reasons start with a short code: `robots`, `max_pages`, `status`, `too_large`,
//! `timeout`, `too_many_redirects`, `refused`, `content_type`, `canonical`, `duplicate`,
//! `out_of_scope`, `invalid_url`, and `error` for an entry given up on (a network error, a
//! 429 or a 5xx retried through `MILLRACE_MAX_DELIVERIES`).

mod html;
mod robots;
mod sitemap;
pub mod url;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace_common::sync::lock;
use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_fetch::{FetchError, FetchOptions, Fetched, Fetcher, RequestGate, Url, loggable};
use millrace_pipeline::content::{self, media_type};
use millrace_pipeline::{
    CrawlEntry, CrawlSpec, JobOptions, JobStore, Keys, NewJob, PageDone, PageJob, PageOutcome, RunStatus,
};
use millrace_resilience::{LimiterConfig, PerKeyLimiters, Quota, RateLimiter};
use millrace_streams::{Handler, HandlerError, Message, WorkerConfig};
use redis::AsyncCommands as _;
use sha2::Digest as _;
use tokio::time::Instant;
use tracing::{info, warn};

pub use self::robots::Robots;
use self::url::{Scope, normalise, origin};

/// Sitemaps read for one crawl at most (a sitemap index and the sitemaps it names).
const MAX_SITEMAPS: usize = 10;
/// How long a request may wait for its host's rate limit before the entry is tried again.
const MAX_LIMIT_WAIT: Duration = Duration::from_secs(300);
/// Robots rules and scopes kept in memory per replica at most.
const MAX_CACHED: usize = 1_000;

/// The crawler's settings (`MILLRACE_CRAWL_*`).
#[derive(Debug, Clone)]
pub struct CrawlConfig {
    /// The crawl stream's worker (`MILLRACE_CRAWL_CONCURRENCY` pages at once per replica; the
    /// other knobs are the stage's).
    pub worker: WorkerConfig,
    /// Sent as `User-Agent` and matched against robots.txt groups (`MILLRACE_CRAWL_USER_AGENT`).
    pub user_agent: String,
    /// Requests per minute to one host (scheme, host and port), by all replicas together
    /// (`MILLRACE_CRAWL_HOST_RPM`).
    pub host_rpm: u64,
    /// The limiter's window and margin (`MILLRACE_CRAWL_LIMIT_WINDOW_MS`, default 60000;
    /// `MILLRACE_CRAWL_LIMIT_MARGIN_MS`, default 500) and the replicas sharing it while Redis is
    /// away (`MILLRACE_CRAWL_REPLICAS`).
    pub limiter: LimiterConfig,
    /// How long a run's robots.txt is cached (`MILLRACE_CRAWL_ROBOTS_TTL_SECS`).
    pub robots_ttl: Duration,
    /// Where the per-host limiters' logs are: `{prefix}:limits:crawl:{origin}`.
    pub key_prefix: String,
}

impl CrawlConfig {
    pub fn from_settings(settings: &Settings, service: &ServiceConfig) -> Result<Self, ConfigError> {
        let keys = Keys::new(service.key_prefix.clone());
        let mut worker = WorkerConfig::from_settings(
            settings,
            keys.crawl_stream(),
            "crawler".to_owned(),
            format!("{}:dlq:crawl", service.key_prefix),
            service.consumer_name.clone(),
            service.shutdown_deadline,
            4,
        )?;
        worker.concurrency = settings.positive("CRAWL_CONCURRENCY", 4)?;
        let user_agent: String =
            settings.get_or("CRAWL_USER_AGENT", concat!("MillraceBot/", env!("CARGO_PKG_VERSION")).to_owned())?;
        if user_agent.trim().is_empty() || !user_agent.is_ascii() || user_agent.chars().any(|c| c.is_ascii_control()) {
            return Err(ConfigError::new("CRAWL_USER_AGENT", "must be printable ASCII text"));
        }
        Ok(Self {
            worker,
            user_agent,
            host_rpm: settings.positive("CRAWL_HOST_RPM", 60u64)?,
            limiter: LimiterConfig::from_settings(settings, "CRAWL_")?,
            robots_ttl: Duration::from_secs(settings.positive("CRAWL_ROBOTS_TTL_SECS", 3600u64)?),
            key_prefix: service.key_prefix.clone(),
        })
    }
}

/// Handles the crawl stream's entries.
pub struct CrawlHandler {
    store: JobStore,
    fetcher: Fetcher,
    config: CrawlConfig,
    limiters: PerKeyLimiters,
    redis: redis::aio::ConnectionManager,
    robots: Mutex<HashMap<String, Arc<Robots>>>,
    scopes: Mutex<HashMap<String, Arc<Scope>>>,
}

/// Why a page is not taken: a code (for metrics and the reason's start) and what happened.
struct Skip {
    code: &'static str,
    detail: String,
    http_status: Option<u16>,
}

impl Skip {
    fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), http_status: None }
    }
}

/// What became of one page.
enum Page {
    Taken { http_status: u16, links: Vec<(String, u32)> },
    Skipped { skip: Skip, links: Vec<(String, u32)> },
}

impl CrawlHandler {
    pub fn new(store: JobStore, fetcher: Fetcher, config: CrawlConfig, redis: redis::aio::ConnectionManager) -> Self {
        let prefix = format!("{}:limits:crawl", config.key_prefix);
        let (limiter_config, limiter_redis) = (config.limiter.clone(), redis.clone());
        let limiters = PerKeyLimiters::new(move |origin, quota| {
            RateLimiter::shared(
                format!("crawl:{origin}"),
                quota,
                limiter_config.clone(),
                limiter_redis.clone(),
                format!("{prefix}:limits:{origin}"),
            )
        });
        Self {
            store,
            fetcher,
            config,
            limiters,
            redis,
            robots: Mutex::new(HashMap::new()),
            scopes: Mutex::new(HashMap::new()),
        }
    }

    async fn page_done(&self, entry: &CrawlEntry, outcome: PageOutcome) -> Result<(), HandlerError> {
        match self.store.page_done(entry, &outcome).await? {
            PageDone::Counted(finished) => {
                if finished {
                    info!(run_id = %entry.run_id, "crawl run done");
                }
            }
            PageDone::AlreadyDone => info!(run_id = %entry.run_id, url = %loggable(&entry.url), "page already done"),
            PageDone::UnknownRun => warn!(run_id = %entry.run_id, "run is gone (expired?); page dropped"),
        }
        Ok(())
    }

    /// The run's scope, compiled once per replica.
    fn scope(&self, run_id: &str, spec: &CrawlSpec) -> Result<Arc<Scope>, String> {
        let mut scopes = lock(&self.scopes);
        if let Some(scope) = scopes.get(run_id) {
            return Ok(scope.clone());
        }
        let scope = Arc::new(Scope::new(spec)?);
        if scopes.len() >= MAX_CACHED {
            scopes.clear();
        }
        scopes.insert(run_id.to_owned(), scope.clone());
        Ok(scope)
    }

    async fn fetch(&self, url: &Url, kind: &'static str) -> Result<Fetched, FetchError> {
        metrics::counter!(crate::metrics::CRAWL_REQUESTS, "kind" => kind).increment(1);
        let options = FetchOptions { user_agent: Some(&self.config.user_agent), gate: Some(self) };
        self.fetcher.fetch_with(url.as_str(), &options).await
    }

    /// robots.txt of `url`'s origin for this run: from memory, else Redis, else fetched (once
    /// per run and origin; the cache expires after `robots_ttl`).
    async fn robots(&self, run_id: &str, url: &Url) -> Result<Arc<Robots>, HandlerError> {
        let key = self.store.keys().run_robots(run_id, &origin(url));
        if let Some(robots) = lock(&self.robots).get(&key).cloned() {
            metrics::counter!(crate::metrics::CRAWL_ROBOTS, "source" => "memory").increment(1);
            return Ok(robots);
        }
        let mut redis = self.redis.clone();
        let cached: Option<String> =
            redis.get(&key).await.map_err(|err| HandlerError::Retry(format!("reading robots.txt cache: {err}")))?;
        let stored = match cached {
            Some(stored) => {
                metrics::counter!(crate::metrics::CRAWL_ROBOTS, "source" => "redis").increment(1);
                stored
            }
            None => {
                metrics::counter!(crate::metrics::CRAWL_ROBOTS, "source" => "fetched").increment(1);
                let mut robots_url = url.clone();
                robots_url.set_path("/robots.txt");
                robots_url.set_query(None);
                let stored = match self.fetch(&robots_url, "robots").await {
                    Ok(fetched) => {
                        let end = fetched.bytes.len().min(robots::MAX_ROBOTS_BYTES);
                        format!("txt:{}", String::from_utf8_lossy(&fetched.bytes[..end]))
                    }
                    // No robots.txt, or one too large to read: no rules (RFC 9309, 2.3.1.3).
                    Err(FetchError::Status(400..=499) | FetchError::TooLarge { .. }) => "allow".to_owned(),
                    // Unreachable: assume everything is disallowed (RFC 9309, 2.3.1.4).
                    Err(err) => {
                        info!(url = %loggable(robots_url.as_str()), error = %err, "robots.txt unreachable: nothing allowed");
                        "disallow".to_owned()
                    }
                };
                let ttl = self.config.robots_ttl.as_secs().max(1);
                let _: () = redis
                    .set_ex(&key, &stored, ttl)
                    .await
                    .map_err(|err| HandlerError::Retry(format!("caching robots.txt: {err}")))?;
                stored
            }
        };
        let robots = Arc::new(match stored.as_str() {
            "allow" => Robots::allow_all(),
            "disallow" => Robots::disallow_all(),
            text => Robots::parse(text.strip_prefix("txt:").unwrap_or(text), &self.config.user_agent),
        });
        let mut cache = lock(&self.robots);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, robots.clone());
        Ok(robots)
    }

    /// The pages of the start page's sitemaps (robots.txt's, else `/sitemap.xml`) that the
    /// crawl admits, at depth 0, at most `max_pages` of them. Sitemaps off the start page's
    /// origin, or disallowed, are not read; one that cannot be fetched is passed over.
    async fn sitemap_links(&self, robots: &Robots, scope: &Scope, max_pages: u32) -> Vec<(String, u32)> {
        let start = scope.start();
        let mut queue: Vec<Url> = robots.sitemaps.iter().filter_map(|text| normalise(text, Some(start))).collect();
        if queue.is_empty()
            && let Some(default) = normalise("/sitemap.xml", Some(start))
        {
            queue.push(default);
        }
        let same_origin = |url: &Url| origin(url) == origin(start);
        let mut links = Vec::new();
        let mut read = 0;
        while let Some(sitemap_url) = queue.pop() {
            if read >= MAX_SITEMAPS || links.len() >= max_pages as usize {
                break;
            }
            if !same_origin(&sitemap_url) || !robots.allows(&path_and_query(&sitemap_url)) {
                continue;
            }
            read += 1;
            let fetched = match self.fetch(&sitemap_url, "sitemap").await {
                Ok(fetched) => fetched,
                Err(err) => {
                    info!(url = %loggable(sitemap_url.as_str()), error = %err, "sitemap not read");
                    continue;
                }
            };
            let parsed = sitemap::parse(&fetched.bytes);
            queue.extend(parsed.sitemaps.iter().filter_map(|text| normalise(text, Some(&sitemap_url))));
            for page in parsed.urls.iter().filter_map(|text| normalise(text, Some(&sitemap_url))) {
                if links.len() >= max_pages as usize {
                    break;
                }
                if scope.admits(&page) {
                    links.push((String::from(page), 0));
                }
            }
        }
        links
    }

    /// Crawls one page of a running crawl: what became of it.
    async fn crawl(&self, entry: &CrawlEntry, spec: &CrawlSpec, pages: u64) -> Result<Page, HandlerError> {
        let scope = match self.scope(&entry.run_id, spec) {
            Ok(scope) => scope,
            Err(err) => return Ok(skipped(Skip::new("invalid_url", err))),
        };
        let Some(url) = normalise(&entry.url, None) else {
            return Ok(skipped(Skip::new("invalid_url", format!("{:?} is not an http(s) URL", entry.url))));
        };
        let seed = entry.depth == 0 && entry.url == spec.url;
        if seed {
            self.store.mark_seen(&entry.run_id, &[url.as_str()]).await?;
        }
        if !scope.contains(&url) {
            return Ok(skipped(Skip::new("out_of_scope", "not on the crawl's host or under its prefix")));
        }
        // The SSRF rules first: a page that may not be fetched costs no robots.txt request.
        if let Err(err) = self.fetcher.check(url.as_str()).await {
            return Ok(skipped(Skip::new(err.kind(), err.to_string())));
        }
        let robots = self.robots(&entry.run_id, &url).await?;
        let mut links = Vec::new();
        if seed && spec.sitemap {
            links = self.sitemap_links(&robots, &scope, spec.max_pages).await;
        }
        if pages >= u64::from(spec.max_pages) {
            return Ok(Page::Skipped { skip: Skip::new("max_pages", "the crawl has taken max_pages pages"), links });
        }
        if !robots.allows(&path_and_query(&url)) {
            let skip = Skip::new("robots", format!("robots.txt disallows it for {}", self.config.user_agent));
            return Ok(Page::Skipped { skip, links });
        }
        let fetched = match self.fetch(&url, "page").await {
            Ok(fetched) => fetched,
            Err(err @ (FetchError::Network(_) | FetchError::Status(429 | 500..=599))) => {
                // Worth another try (up to the delivery limit; then give_up records the page).
                return Err(HandlerError::Retry(format!("fetching {}: {err}", loggable(url.as_str()))));
            }
            Err(err) => {
                let http_status = match err {
                    FetchError::Status(code) => Some(code),
                    _ => None,
                };
                let skip = Skip { code: err.kind(), detail: err.to_string(), http_status };
                return Ok(Page::Skipped { skip, links });
            }
        };
        let status = fetched.status;
        let with_status = |code, detail: String| Skip { code, detail, http_status: Some(status) };
        let page_url = normalise(fetched.final_url.as_str(), None).unwrap_or_else(|| url.clone());
        if page_url != url && !scope.contains(&page_url) {
            let skip =
                with_status("out_of_scope", format!("redirected out of scope to {}", loggable(page_url.as_str())));
            return Ok(Page::Skipped { skip, links });
        }
        let Some(content_type) = page_type(&fetched) else {
            let served = fetched.content_type.as_deref().unwrap_or("none");
            return Ok(Page::Skipped {
                skip: with_status("content_type", format!("not a type millrace parses: {served}")),
                links,
            });
        };
        if content_type == content::HTML {
            let text = String::from_utf8_lossy(&fetched.bytes).into_owned();
            let found = tokio::task::spawn_blocking(move || html::links(&text))
                .await
                .map_err(|err| HandlerError::Retry(format!("reading links: {err}")))?;
            let base =
                found.base.as_deref().and_then(|base| normalise(base, Some(&page_url))).unwrap_or(page_url.clone());
            if let Some(canonical) = found.canonical.as_deref().and_then(|c| normalise(c, Some(&page_url)))
                && canonical != page_url
            {
                // The canonical page is crawled instead (at this page's depth), if it may be.
                if scope.admits(&canonical) {
                    links.push((String::from(canonical.clone()), entry.depth));
                }
                let skip = with_status("canonical", format!("its canonical URL is {}", loggable(canonical.as_str())));
                return Ok(Page::Skipped { skip, links });
            }
            if !found.nofollow && entry.depth < spec.max_depth {
                let mut seen = std::collections::HashSet::new();
                for link in found.links.iter().filter_map(|href| normalise(href, Some(&base))) {
                    if scope.admits(&link) && seen.insert(link.clone()) {
                        links.push((String::from(link), entry.depth + 1));
                    }
                }
            }
        }
        let bytes = fetched.bytes;
        let content_hash = hex::encode(sha2::Sha256::digest(&bytes));
        let metadata = serde_json::json!({ "url": page_url.as_str() });
        let options = JobOptions::default();
        let fingerprint =
            millrace_pipeline::fingerprint(&content_hash, &content_type, &metadata, page_url.as_str(), &options);
        let new = NewJob {
            tenant_id: entry.tenant.clone(),
            collection: entry.collection.clone(),
            document_id: url::document_id(&page_url),
            content_type,
            source: page_url.to_string(),
            metadata,
            content: bytes,
            content_hash,
            url: None,
            options,
            fingerprint,
            run_id: Some(entry.run_id.clone()),
            http_status: Some(status),
        };
        match self.store.create_page_job(&entry.run_id, page_url.as_str(), u64::from(spec.max_pages), new).await? {
            PageJob::Created(job) => {
                info!(run_id = %entry.run_id, job_id = %job.job_id, url = %loggable(page_url.as_str()), links = links.len(), "crawled page");
                Ok(Page::Taken { http_status: status, links })
            }
            // This entry's own page, made by an earlier delivery.
            PageJob::Existing(_) if page_url == url => Ok(Page::Taken { http_status: status, links }),
            PageJob::Existing(job_id) => Ok(Page::Skipped {
                skip: with_status(
                    "duplicate",
                    format!("redirects to {}, taken as job {job_id}", loggable(page_url.as_str())),
                ),
                links: Vec::new(),
            }),
            PageJob::Full => Ok(skipped(with_status("max_pages", "the crawl has taken max_pages pages".to_owned()))),
        }
    }
}

fn skipped(skip: Skip) -> Page {
    Page::Skipped { skip, links: Vec::new() }
}

/// The path and query of a URL, as robots.txt rules see it.
fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// The type to parse a fetched page as, if millrace parses it: the served type if it is one,
/// else (a generic or missing type) what the file name or the bytes say. A page served as
/// another specific type (`image/png`) is not taken whatever its bytes look like.
fn page_type(fetched: &Fetched) -> Option<String> {
    let served = fetched.content_type.as_deref();
    if let Some(served) = served.filter(|t| !content::is_generic(Some(t))) {
        let media = media_type(served);
        return content::SUPPORTED_CONTENT_TYPES.contains(&media.as_str()).then_some(media);
    }
    content::resolve(None, fetched.file_name.as_deref(), &fetched.bytes)
}

/// Each request waits for its host's rate limit.
impl RequestGate for CrawlHandler {
    fn admit<'a>(&'a self, url: &'a Url) -> Pin<Box<dyn Future<Output = Result<(), FetchError>> + Send + 'a>> {
        Box::pin(async move {
            let quota = Quota { rpm: Some(self.config.host_rpm), tpm: None };
            let limiter = self.limiters.get(&origin(url), quota);
            let started = Instant::now();
            let admitted = limiter.acquire(0, Instant::now() + MAX_LIMIT_WAIT).await;
            metrics::histogram!(crate::metrics::CRAWL_LIMIT_WAIT).record(started.elapsed().as_secs_f64());
            admitted.map(drop).map_err(|limited| FetchError::Network(limited.to_string()))
        })
    }
}

impl Handler for CrawlHandler {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let entry = CrawlEntry::from_fields(&message.fields).map_err(HandlerError::Fatal)?;
        if self.store.page_is_done(&entry.run_id, &entry.url).await? {
            info!(run_id = %entry.run_id, url = %loggable(&entry.url), "page already done; skipping");
            return Ok(());
        }
        let Some(state) = self.store.run_state(&entry.run_id).await? else {
            warn!(run_id = %entry.run_id, "run is gone (expired?); page dropped");
            return Ok(());
        };
        let Some(spec) = state.crawl.as_ref().filter(|_| state.status == RunStatus::Running) else {
            // Cancelled (or not a crawl): the page only leaves `pending`.
            return self.page_done(&entry, PageOutcome::default()).await;
        };
        let outcome = match self.crawl(&entry, spec, state.pages).await? {
            Page::Taken { http_status, links } => {
                metrics::counter!(crate::metrics::CRAWL_PAGES, "outcome" => "taken").increment(1);
                PageOutcome { skipped: None, http_status: Some(http_status), links }
            }
            Page::Skipped { skip, links } => {
                metrics::counter!(crate::metrics::CRAWL_PAGES, "outcome" => "skipped").increment(1);
                metrics::counter!(crate::metrics::CRAWL_SKIPPED, "reason" => skip.code).increment(1);
                info!(run_id = %entry.run_id, url = %loggable(&entry.url), reason = skip.code, detail = %skip.detail, "page skipped");
                PageOutcome {
                    skipped: Some(format!("{}: {}", skip.code, skip.detail)),
                    http_status: skip.http_status,
                    links,
                }
            }
        };
        self.page_done(&entry, outcome).await
    }

    /// An entry given up on (its fetch kept failing, or it is malformed) is recorded as a
    /// skipped page, so its run still settles.
    async fn give_up(&self, message: &Message, reason: &str) {
        let Ok(entry) = CrawlEntry::from_fields(&message.fields) else {
            warn!(reason, "malformed crawl entry dropped");
            return;
        };
        metrics::counter!(crate::metrics::CRAWL_SKIPPED, "reason" => "error").increment(1);
        let outcome = PageOutcome { skipped: Some(format!("error: {reason}")), http_status: None, links: Vec::new() };
        if let Err(err) = self.store.page_done(&entry, &outcome).await {
            warn!(run_id = %entry.run_id, error = %err, "cannot record a page given up on");
        }
    }
}
