//! A website for crawl tests, served on a free port of 127.0.0.1 by its own thread and
//! runtime (so sync and async tests alike can use it, and a busy test runtime does not slow
//! it). Deterministic: the same options give the same pages and links, so tests can assert
//! exact sets ([`TestSite::html_pages`]). It counts every request it answers, with its time,
//! path and `User-Agent` ([`TestSite::requests`]), for politeness checks.
//!
//! Layout (S sections of P pages, by default 12 × 20 = 240 pages):
//!
//! - `/` links to every `/section/{s}`, to `/private/1` and `/private/2` (disallowed by
//!   robots.txt), `/loop/a` (a redirect loop), `/slow` (answers after `slow`), `/missing/1`
//!   (404), `/big` (`big_bytes` of HTML), `/logo.png` (an image), `/dup` (canonical:
//!   `/section/0/page/0`), `/alias` (canonical: `/canonical-target`, linked from nowhere else),
//!   `/moved` (301 to `/moved-here`) and `https://elsewhere.example/` (off the host);
//! - `/section/{s}` links to its pages `/section/{s}/page/{p}` and back home;
//! - `/section/{s}/page/{p}` links home, to its section, to the next page of its section (with
//!   a `#fragment`), and page 0 of each section also to `/missing/{s}` (404);
//! - `/robots.txt` disallows `/private/` for every agent and names the sitemap;
//! - `/sitemap.xml` lists `/`, `/sitemap-only/0..3` (linked from nowhere) and `/private/3`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tokio::sync::oneshot;

/// The shape of a [`TestSite`].
#[derive(Debug, Clone)]
pub struct SiteOptions {
    pub sections: usize,
    pub pages_per_section: usize,
    /// How long `/slow` takes to answer.
    pub slow: Duration,
    /// Size of `/big`.
    pub big_bytes: usize,
}

impl Default for SiteOptions {
    fn default() -> Self {
        Self { sections: 12, pages_per_section: 20, slow: Duration::from_secs(3), big_bytes: 2 * 1024 * 1024 }
    }
}

/// One request the site answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRequest {
    /// Since the site started.
    pub at: Duration,
    pub path: String,
    pub user_agent: String,
}

struct Shared {
    options: SiteOptions,
    origin: String,
    started: Instant,
    requests: Mutex<Vec<SiteRequest>>,
}

/// A running test site; stopped on drop.
pub struct TestSite {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TestSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSite").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl TestSite {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(SiteOptions::default())
    }

    pub fn start_with(options: SiteOptions) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            origin: format!("http://{addr}"),
            started: Instant::now(),
            requests: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let router = router(shared.clone());
        let thread = std::thread::Builder::new().name("test-site".into()).spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        })?;
        Ok(Self { addr, shared, stop: Some(stop), thread: Some(thread) })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.shared.origin)
    }

    /// `127.0.0.1:PORT`, as `MILLRACE_FETCH_ALLOW_HOSTS` names it.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub fn options(&self) -> &SiteOptions {
        &self.shared.options
    }

    /// Every HTML page a crawl of the whole site (from `/`, sitemap read, with `max_depth` ≥
    /// 2) should take: home, sections, their pages, the sitemap-only pages, `/canonical-target`
    /// and `/moved-here`. Paths.
    pub fn html_pages(&self) -> Vec<String> {
        let options = &self.shared.options;
        let mut pages = vec!["/".to_owned(), "/canonical-target".to_owned(), "/moved-here".to_owned()];
        for s in 0..options.sections {
            pages.push(format!("/section/{s}"));
            for p in 0..options.pages_per_section {
                pages.push(format!("/section/{s}/page/{p}"));
            }
        }
        pages.extend((0..3).map(|k| format!("/sitemap-only/{k}")));
        pages
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<SiteRequest> {
        self.shared.requests.lock().map(|requests| requests.clone()).unwrap_or_default()
    }

    /// Requests for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.requests().iter().filter(|request| request.path == path).count()
    }

    /// The most requests answered within any `window` (a sliding window over the request times).
    pub fn max_in_window(&self, window: Duration) -> usize {
        let times: Vec<Duration> = self.requests().iter().map(|request| request.at).collect();
        if window.is_zero() {
            return 0;
        }
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while start < end && times[end].saturating_sub(times[start]) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }
}

impl Drop for TestSite {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Site = State<Arc<Shared>>;

fn record(site: &Shared, uri: &Uri, headers: &HeaderMap) {
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let request = SiteRequest { at: site.started.elapsed(), path: uri.path().to_owned(), user_agent };
    if let Ok(mut requests) = site.requests.lock() {
        requests.push(request);
    }
}

fn html(title: &str, head: &str, links: &[String]) -> Response {
    let body: String = links.iter().map(|href| format!("<li><a href=\"{href}\">{href}</a></li>\n")).collect();
    let page = format!(
        "<!doctype html><html><head><title>{title}</title>{head}</head><body><main><h1>{title}</h1>\
         <p>This is the page {title} of the test site, with some text to index.</p><ul>\n{body}</ul></main></body></html>"
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/robots.txt", get(robots))
        .route("/sitemap.xml", get(sitemap))
        .route("/section/{s}", get(section))
        .route("/section/{s}/page/{p}", get(page))
        .route("/sitemap-only/{k}", get(sitemap_only))
        .route("/private/{k}", get(private))
        .route("/loop/{step}", get(redirect_loop))
        .route("/slow", get(slow))
        .route("/big", get(big))
        .route("/logo.png", get(logo))
        .route("/dup", get(dup))
        .route("/alias", get(alias))
        .route("/canonical-target", get(canonical_target))
        .route("/moved", get(moved))
        .route("/moved-here", get(moved_here))
        .fallback(not_found)
        .with_state(shared)
}

async fn home(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    let mut links: Vec<String> = (0..site.options.sections).map(|s| format!("/section/{s}")).collect();
    links.extend(
        [
            "/private/1",
            "/private/2",
            "/loop/a",
            "/slow",
            "/missing/1",
            "/big",
            "/logo.png",
            "/dup",
            "/alias",
            "/moved",
            "https://elsewhere.example/",
            "mailto:someone@example.com",
        ]
        .map(str::to_owned),
    );
    // The same page spelled otherwise: normalisation makes them one.
    links.push(format!("{}/section/0#top", site.origin.replace("http://", "HTTP://")));
    html("Home", "", &links)
}

async fn robots(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    let text = format!("User-agent: *\nDisallow: /private/\n\nSitemap: {}/sitemap.xml\n", site.origin);
    ([(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

async fn sitemap(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    let mut urls = vec![format!("{}/", site.origin), format!("{}/private/3", site.origin)];
    urls.extend((0..3).map(|k| format!("{}/sitemap-only/{k}", site.origin)));
    let body: String = urls.iter().map(|url| format!("  <url><loc>{url}</loc></url>\n")).collect();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n{body}</urlset>\n"
    );
    ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

async fn section(State(site): Site, uri: Uri, headers: HeaderMap, Path(s): Path<usize>) -> Response {
    record(&site, &uri, &headers);
    if s >= site.options.sections {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut links: Vec<String> =
        (0..site.options.pages_per_section).map(|p| format!("/section/{s}/page/{p}")).collect();
    links.push("/".to_owned());
    html(&format!("Section {s}"), "", &links)
}

async fn page(State(site): Site, uri: Uri, headers: HeaderMap, Path((s, p)): Path<(usize, usize)>) -> Response {
    record(&site, &uri, &headers);
    let options = &site.options;
    if s >= options.sections || p >= options.pages_per_section {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut links = vec!["/".to_owned(), format!("/section/{s}")];
    links.push(format!("/section/{s}/page/{}#next", (p + 1) % options.pages_per_section));
    if p == 0 {
        links.push(format!("/missing/{s}"));
    }
    html(&format!("Page {s}.{p}"), "", &links)
}

async fn sitemap_only(State(site): Site, uri: Uri, headers: HeaderMap, Path(k): Path<usize>) -> Response {
    record(&site, &uri, &headers);
    html(&format!("Sitemap only {k}"), "", &[])
}

async fn private(State(site): Site, uri: Uri, headers: HeaderMap, Path(k): Path<usize>) -> Response {
    record(&site, &uri, &headers);
    html(&format!("Private {k}"), "", &[])
}

async fn redirect_loop(State(site): Site, uri: Uri, headers: HeaderMap, Path(step): Path<String>) -> Response {
    record(&site, &uri, &headers);
    let next = if step == "a" { "/loop/b" } else { "/loop/a" };
    Redirect::temporary(next).into_response()
}

async fn slow(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    tokio::time::sleep(site.options.slow).await;
    html("Slow", "", &[])
}

async fn big(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    let filler = "<p>big big big big big big big big big big big big big big big big big big big big</p>\n";
    let body = filler.repeat(site.options.big_bytes / filler.len() + 1);
    ([(header::CONTENT_TYPE, "text/html")], format!("<html><body>{body}</body></html>")).into_response()
}

async fn logo(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89".to_vec();
    png.extend_from_slice(&[0u8; 64]);
    ([(header::CONTENT_TYPE, "image/png")], png).into_response()
}

async fn dup(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    html("Duplicate", "<link rel=\"canonical\" href=\"/section/0/page/0\">", &[])
}

async fn alias(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    let head = format!("<link rel=\"canonical\" href=\"{}/canonical-target\">", site.origin);
    html("Alias", &head, &[])
}

async fn canonical_target(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    html("Canonical target", "<link rel=\"canonical\" href=\"/canonical-target\">", &[])
}

async fn moved(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    Redirect::permanent("/moved-here").into_response()
}

async fn moved_here(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    html("Moved here", "", &[])
}

async fn not_found(State(site): Site, uri: Uri, headers: HeaderMap) -> Response {
    record(&site, &uri, &headers);
    (StatusCode::NOT_FOUND, "not found").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_site_serves_its_pages_and_counts_requests() {
        let site =
            TestSite::start_with(SiteOptions { slow: Duration::from_millis(10), ..SiteOptions::default() }).unwrap();
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let get = async |path: &str| {
            let response = client.get(site.url(path)).header("User-Agent", "TestBot/1").send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap_or_default())
        };
        let (status, home) = get("/").await;
        assert_eq!(status, 200);
        assert!(home.contains("href=\"/section/11\"") && home.contains("href=\"/private/1\""));
        assert_eq!(get("/section/3/page/19").await.0, 200);
        assert_eq!(get("/section/3/page/20").await.0, 404);
        assert_eq!(get("/missing/1").await.0, 404);
        assert_eq!(get("/loop/a").await.0, 307);
        assert_eq!(get("/moved").await.0, 308);
        assert!(get("/robots.txt").await.1.contains("Disallow: /private/"));
        assert!(get("/sitemap.xml").await.1.contains(&format!("{}/sitemap-only/2", site.origin())));
        assert!(get("/big").await.1.len() > 2 * 1024 * 1024);
        assert_eq!(site.html_pages().len(), 3 + 12 + 240 + 3);
        assert_eq!(site.hits("/"), 1);
        assert_eq!(site.requests().len(), 9);
        assert!(site.requests().iter().all(|r| r.user_agent == "TestBot/1"));
        assert_eq!(site.max_in_window(Duration::from_secs(60)), 9);
        assert_eq!(site.max_in_window(Duration::ZERO), 0);
    }
}
