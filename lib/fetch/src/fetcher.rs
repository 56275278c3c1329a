//! Fetching one document: GET with redirects followed by hand so that every hop is checked
//! against the URL rules (reqwest's own redirect policy would follow a redirect to
//! 169.254.169.254 without asking), the body read under a size cap, the whole fetch under a time
//! limit, and each request under its host's concurrency limit.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Instant;

use millrace_common::Settings;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, LOCATION, USER_AGENT};

use crate::check::UrlGuard;
use crate::config::FetchConfig;
use crate::error::FetchError;
use crate::guard::{AddressPolicy, Refusal};
use crate::limiter::HostLimiter;
use crate::resolver::GuardedResolver;

/// A fetched document.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// The response's `Content-Type` header as sent (parameters included), if any.
    pub content_type: Option<String>,
    /// Where the document was found, after redirects.
    pub final_url: Url,
    /// The last segment of the final URL's path, percent-decoded (`guide.pdf`), if any: a hint
    /// for the content type when the server sends none or a generic one.
    pub file_name: Option<String>,
    /// Redirects followed.
    pub redirects: u32,
    /// The final response's HTTP status (a 2xx).
    pub status: u16,
}

/// Fetches documents under the rules of a [`FetchConfig`]; cheap to clone (one HTTP client
/// and one per-host limiter shared by the clones).
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    config: FetchConfig,
    guard: UrlGuard,
    client: reqwest::Client,
    limiter: HostLimiter,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Fetcher {
    /// Reads `MILLRACE_FETCH_*` and builds a fetcher with the system resolver. A service that
    /// validates its config before binding should rather keep a [`FetchConfig`] from
    /// [`FetchConfig::from_settings`] in its config and call [`Fetcher::new`].
    pub fn from_settings(settings: &Settings) -> Result<Self, FetchError> {
        let config = FetchConfig::from_settings(settings).map_err(|err| FetchError::Setup(err.to_string()))?;
        Self::new(config)
    }

    /// A fetcher with the system resolver and the rules of `config` (`allow_private` and the
    /// `allow_hosts` allowlist).
    pub fn new(config: FetchConfig) -> Result<Self, FetchError> {
        let guard = UrlGuard::from_config(&config);
        Self::with_guard(config, guard)
    }

    /// A fetcher whose rules and resolver are `guard`'s (its policy replaces
    /// `config.allow_private`): tests use a [`crate::StaticResolver`] and exempt addresses.
    pub fn with_guard(config: FetchConfig, guard: UrlGuard) -> Result<Self, FetchError> {
        let resolver = GuardedResolver { resolver: guard.resolver(), policy: guard.shared_policy() };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(resolver))
            // A proxy would resolve and connect on our behalf, out of the guard's sight.
            .no_proxy()
            .connect_timeout(config.timeout)
            .user_agent(concat!("millrace-fetch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| FetchError::Setup(format!("cannot build the HTTP client: {err}")))?;
        let limiter = HostLimiter::new(config.per_host_concurrency);
        Ok(Self { inner: Arc::new(Inner { config, guard, client, limiter }) })
    }

    pub fn config(&self) -> &FetchConfig {
        &self.inner.config
    }

    pub fn guard(&self) -> &UrlGuard {
        &self.inner.guard
    }

    fn policy(&self) -> &AddressPolicy {
        self.inner.guard.policy()
    }

    /// Checks a URL without fetching it (see [`UrlGuard::check`]).
    pub async fn check(&self, url: &str) -> Result<Url, FetchError> {
        self.inner.guard.check(url).await
    }

    /// Fetches `url` under every limit. The addresses a name resolves to are checked when the
    /// connection is made, so a check done earlier (at submit) cannot be outwitted by DNS.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        self.fetch_as(url, None).await
    }

    /// [`Fetcher::fetch`] sending `user_agent` as `User-Agent` (the crawler's, which robots.txt
    /// rules are matched against) instead of the fetcher's own.
    pub async fn fetch_as(&self, url: &str, user_agent: Option<&str>) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        let limit = self.inner.config.timeout;
        let result = match tokio::time::timeout(limit, self.follow(url, user_agent)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout { limit }),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        metrics::histogram!(crate::FETCH_DURATION).record(started.elapsed().as_secs_f64());
        match &result {
            Ok(fetched) => {
                metrics::counter!(crate::FETCHES, "outcome" => "ok").increment(1);
                metrics::counter!(crate::FETCHED_BYTES).increment(fetched.bytes.len() as u64);
                tracing::info!(
                    url = %loggable(fetched.final_url.as_str()),
                    bytes = fetched.bytes.len(),
                    redirects = fetched.redirects,
                    content_type = fetched.content_type.as_deref().unwrap_or(""),
                    elapsed_ms,
                    "fetched document"
                );
            }
            Err(err) => {
                metrics::counter!(crate::FETCHES, "outcome" => err.kind()).increment(1);
                tracing::info!(url = %loggable(url), error = %err, kind = err.kind(), elapsed_ms, "fetch failed");
            }
        }
        result
    }

    async fn follow(&self, url: &str, user_agent: Option<&str>) -> Result<Fetched, FetchError> {
        let (mut current, _) = self.policy().check_url(url)?;
        let mut redirects = 0u32;
        loop {
            let hop = self.get(&current, user_agent).await.map_err(|err| after_redirects(err, redirects, &current))?;
            match hop {
                Hop::Done { bytes, content_type, status } => {
                    return Ok(Fetched {
                        bytes,
                        content_type,
                        status,
                        file_name: file_name(&current),
                        final_url: current,
                        redirects,
                    });
                }
                Hop::Redirect(location) => {
                    if redirects >= self.inner.config.max_redirects {
                        return Err(FetchError::TooManyRedirects { limit: self.inner.config.max_redirects });
                    }
                    let next = current.join(&location).map_err(|err| FetchError::InvalidUrl {
                        reason: format!(
                            "redirect from {} to {:?}: {err}",
                            loggable(current.as_str()),
                            loggable(&location)
                        ),
                    })?;
                    // Literal addresses, schemes and names are checked here; reqwest calls no
                    // resolver for a literal address.
                    let (next, _) = self.policy().check_url(next.as_str()).map_err(|err| match err {
                        FetchError::Refused { reason } => FetchError::Refused {
                            reason: format!(
                                "redirect from {} to {}: {reason}",
                                loggable(current.as_str()),
                                loggable(next.as_str())
                            ),
                        },
                        other => other,
                    })?;
                    tracing::debug!(from = %loggable(current.as_str()), to = %loggable(next.as_str()), "following redirect");
                    redirects += 1;
                    current = next;
                }
            }
        }
    }

    /// POSTs `body` with `headers` to `url` under the same rules as a fetch (the URL checked as
    /// written, its addresses at connect time, the host's concurrency limit and the time
    /// limit) and returns the answer's status. No redirect is followed: a 3xx is the answer.
    /// The answer's body is not read. Webhooks are sent with it.
    pub async fn post(&self, url: &str, headers: reqwest::header::HeaderMap, body: Vec<u8>) -> Result<u16, FetchError> {
        let (url, _) = self.policy().check_url(url)?;
        let limit = self.inner.config.timeout;
        let send = async {
            let _permit = self.inner.limiter.acquire(url.host_str().unwrap_or_default()).await?;
            let response = self.inner.client.post(url.clone()).headers(headers).body(body).send().await;
            response.map(|response| response.status().as_u16()).map_err(request_error)
        };
        match tokio::time::timeout(limit, send).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout { limit }),
        }
    }

    /// One request, under its host's limit (held until the body is read).
    async fn get(&self, url: &Url, user_agent: Option<&str>) -> Result<Hop, FetchError> {
        let _permit = self.inner.limiter.acquire(url.host_str().unwrap_or_default()).await?;
        let mut request = self.inner.client.get(url.clone());
        if let Some(agent) = user_agent {
            request = request.header(USER_AGENT, agent);
        }
        let mut response = request.send().await.map_err(request_error)?;
        let status = response.status();
        if status.is_redirection()
            && let Some(location) = response.headers().get(LOCATION)
        {
            let location = location.to_str().map_err(|_| FetchError::InvalidUrl {
                reason: format!("the redirect from {} has a Location that is not text", loggable(url.as_str())),
            })?;
            return Ok(Hop::Redirect(location.to_owned()));
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let max = self.inner.config.max_bytes;
        if response.content_length().is_some_and(|length| length > max as u64) {
            return Err(FetchError::TooLarge { limit: max });
        }
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let mut bytes = Vec::with_capacity(response.content_length().map_or(0, |length| length as usize));
        // Read chunk by chunk and stop past the cap: the sender may lie about, or not send, its length.
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if bytes.len() + chunk.len() > max {
                return Err(FetchError::TooLarge { limit: max });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Hop::Done { bytes, content_type, status: status.as_u16() })
    }
}

enum Hop {
    Done { bytes: Vec<u8>, content_type: Option<String>, status: u16 },
    Redirect(String),
}

/// A refusal after redirects says where the chain led.
fn after_redirects(err: FetchError, redirects: u32, url: &Url) -> FetchError {
    match err {
        FetchError::Refused { reason } if redirects > 0 => FetchError::Refused {
            reason: format!("after {redirects} redirect(s), at {}: {reason}", loggable(url.as_str())),
        },
        other => other,
    }
}

/// The resolver's refusal travels inside reqwest's and hyper's errors: find it, else describe
/// the whole chain (reqwest's own message is only "error sending request").
fn request_error(err: reqwest::Error) -> FetchError {
    // The URL may carry a token (a presigned link): the caller knows which URL it fetched.
    let err = err.without_url();
    let mut messages = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return FetchError::Refused { reason: refusal.reason.clone() };
        }
        messages.push(cause.to_string());
        source = cause.source();
    }
    if err.is_timeout() {
        return FetchError::Network(format!("timed out: {}", messages.join(": ")));
    }
    FetchError::Network(messages.join(": "))
}

/// A URL as logs and error messages show it: without its query and fragment, which often
/// carry tokens (presigned links), and without credentials.
pub fn loggable(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            let hidden = parsed.query().is_some() || parsed.fragment().is_some();
            parsed.set_query(None);
            parsed.set_fragment(None);
            // These only fail for URLs that cannot have credentials, which is fine.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            if hidden { format!("{parsed}?\u{2026}") } else { parsed.to_string() }
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
    }
}

/// The last non-empty segment of the path, percent-decoded.
fn file_name(url: &Url) -> Option<String> {
    let segment = url.path_segments()?.rev().find(|segment| !segment.is_empty())?;
    let decoded = percent_decode(segment);
    // An encoded slash must not smuggle a path into what is only a name.
    let name = decoded.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// `%20` → space; invalid escapes are kept as written, invalid UTF-8 replaced. Hand-written
/// to spare a dependency for six lines.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_keep_no_tokens() {
        assert_eq!(
            loggable("https://bucket.example.com/doc.pdf?X-Amz-Signature=abc#p2"),
            "https://bucket.example.com/doc.pdf?\u{2026}"
        );
        assert_eq!(loggable("https://u:p@example.com/a"), "https://example.com/a");
        assert_eq!(loggable("https://example.com/a"), "https://example.com/a");
        assert_eq!(loggable("/relative?token=1"), "/relative");
    }

    #[test]
    fn file_names_come_from_the_last_path_segment() {
        let name = |url: &str| file_name(&Url::parse(url).unwrap());
        assert_eq!(name("https://example.com/docs/Guide%20One.pdf?x=1#top"), Some("Guide One.pdf".into()));
        assert_eq!(name("https://example.com/docs/readme.md/"), Some("readme.md".into()));
        assert_eq!(name("https://example.com/"), None);
        assert_eq!(name("https://example.com/a/..%2F..%2Fetc%2Fpasswd"), Some("passwd".into()));
        assert_eq!(name("https://example.com/caf%C3%A9.txt"), Some("café.txt".into()));
        assert_eq!(name("https://example.com/100%25%zz.txt"), Some("100%%zz.txt".into()));
    }
}
