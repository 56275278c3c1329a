//! Fetching a document over HTTP(S) from a URL a caller gave, without letting that URL reach
//! what it must not (SSRF): the service's own host, the private network, cloud metadata. Shared
//! by the ingestion API (which checks a URL at submit, [`UrlGuard::check`]) and the chunking
//! stage (which fetches it when the job runs, [`Fetcher::fetch`]).
//!
//! The rules ([`AddressPolicy`]) hold three times: on the URL as written, on the addresses its
//! name resolves to when it is checked, and on the addresses resolved when the connection is
//! made (a resolver given to reqwest), so DNS rebinding does not get past them. Redirects are
//! followed by hand and each hop is checked the same way.
//!
//! ```no_run
//! # async fn example(settings: &millrace_common::Settings) -> Result<(), millrace_fetch::FetchError> {
//! let fetcher = millrace_fetch::Fetcher::from_settings(settings)?;
//! fetcher.check("https://example.com/guide.pdf").await?;
//! let fetched = fetcher.fetch("https://example.com/guide.pdf").await?;
//! println!("{} bytes of {:?} from {}", fetched.bytes.len(), fetched.content_type, fetched.final_url);
//! # Ok(())
//! # }
//! ```

mod check;
mod config;
mod error;
mod fetcher;
mod guard;
mod limiter;
mod resolver;

pub use check::UrlGuard;
pub use config::{DEFAULT_MAX_BYTES, FetchConfig};
pub use error::FetchError;
pub use fetcher::{FetchOptions, Fetched, Fetcher, RequestGate, loggable};
pub use guard::{AddressPolicy, Refusal, parse_url};
pub use reqwest::Url;
pub use resolver::{Lookup, Resolver, StaticResolver, SystemResolver};

millrace_common::declare_metrics! {
    /// Fetches, by `outcome` (`ok` or the error's kind).
    FETCHES: counter("millrace_fetch_requests_total", "Documents fetched by URL, by outcome (ok, or why not: refused, timeout, too_large, status, network, ...).");
    FETCHED_BYTES: counter("millrace_fetch_bytes_total", "Bytes of documents fetched by URL.");
    FETCH_DURATION: histogram("millrace_fetch_duration_seconds", "Time one fetch by URL took, redirects included, in seconds.");
}
