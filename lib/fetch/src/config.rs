//! The fetcher's settings (`MILLRACE_FETCH_*`), shared by every service that checks or fetches
//! URLs so that the ingestion API and the chunking stage apply the same rules.

use std::time::Duration;

use millrace_common::{ConfigError, Settings};

/// Default size limit when neither `MILLRACE_FETCH_MAX_BYTES` nor `MILLRACE_MAX_DOCUMENT_BYTES`
/// is set: a submitted document's default limit, so a fetched one is bounded alike.
pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;

/// Largest accepted `MILLRACE_FETCH_MAX_BYTES`: the body is held in memory, and documents are
/// bounded by the largest Redis string elsewhere.
const MAX_BYTES_CEILING: usize = 512 * 1024 * 1024;

/// Most redirects one may allow; browsers stop at about 20.
const MAX_REDIRECTS_CEILING: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// Largest body (`MILLRACE_FETCH_MAX_BYTES`; default `MILLRACE_MAX_DOCUMENT_BYTES`, 10 MiB).
    pub max_bytes: usize,
    /// Time limit of a whole fetch, redirects and body included (`MILLRACE_FETCH_TIMEOUT_MS`).
    pub timeout: Duration,
    /// Redirects followed before giving up (`MILLRACE_FETCH_MAX_REDIRECTS`; 0 follows none).
    pub max_redirects: u32,
    /// Requests to one host at once, from this process (`MILLRACE_FETCH_PER_HOST_CONCURRENCY`).
    pub per_host_concurrency: usize,
    /// Whether loopback, private, CGNAT, link-local and unique-local addresses may be fetched
    /// (`MILLRACE_FETCH_ALLOW_PRIVATE`): for tests and internal deployments.
    pub allow_private: bool,
    /// `host:port` pairs exempt from the private-address rule (`MILLRACE_FETCH_ALLOW_HOSTS`,
    /// comma-separated, e.g. `127.0.0.1:8080,site.test:443`): a test's local server or one
    /// internal site, while every other internal address stays refused. Metadata addresses are
    /// never exempt. Kept as the URL parser writes them (lowercase, IPv6 in brackets).
    pub allow_hosts: Vec<String>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            timeout: Duration::from_secs(30),
            max_redirects: 5,
            per_host_concurrency: 4,
            allow_private: false,
            allow_hosts: Vec::new(),
        }
    }
}

impl FetchConfig {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let document_bytes: usize = settings.positive("MAX_DOCUMENT_BYTES", defaults.max_bytes)?;
        let max_bytes: usize = settings.positive("FETCH_MAX_BYTES", document_bytes)?;
        if max_bytes > MAX_BYTES_CEILING {
            return Err(ConfigError::new("FETCH_MAX_BYTES", format!("must be at most {MAX_BYTES_CEILING}")));
        }
        let timeout = settings.duration_ms("FETCH_TIMEOUT_MS", defaults.timeout.as_millis() as u64)?;
        if timeout.is_zero() {
            return Err(ConfigError::new("FETCH_TIMEOUT_MS", "must be greater than zero"));
        }
        let max_redirects: u32 = settings.get_or("FETCH_MAX_REDIRECTS", defaults.max_redirects)?;
        if max_redirects > MAX_REDIRECTS_CEILING {
            return Err(ConfigError::new("FETCH_MAX_REDIRECTS", format!("must be at most {MAX_REDIRECTS_CEILING}")));
        }
        let per_host_concurrency: usize =
            settings.positive("FETCH_PER_HOST_CONCURRENCY", defaults.per_host_concurrency)?;
        let allow_private: bool = settings.get_or("FETCH_ALLOW_PRIVATE", defaults.allow_private)?;
        let allow_hosts = match settings.get_or("FETCH_ALLOW_HOSTS", String::new())?.trim() {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(|entry| normalise_host_port(entry).map_err(|reason| ConfigError::new("FETCH_ALLOW_HOSTS", reason)))
                .collect::<Result<_, _>>()?,
        };
        Ok(Self { max_bytes, timeout, max_redirects, per_host_concurrency, allow_private, allow_hosts })
    }
}

/// `Site.Test:8080` → `site.test:8080`, `[::1]:80` → `[::1]:80`: the host as the URL parser
/// writes it (so it compares equal to a fetched URL's host) and an explicit port.
pub(crate) fn normalise_host_port(entry: &str) -> Result<String, String> {
    let (host, port) = entry
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && (!host.contains(':') || host.ends_with(']')))
        .ok_or_else(|| format!("{entry:?} is not host:port (an IPv6 address goes in brackets: [::1]:8080)"))?;
    let port: u16 = port.parse().map_err(|_| format!("{entry:?} has no valid port"))?;
    let url = reqwest::Url::parse(&format!("http://{host}:{port}/"))
        .map_err(|err| format!("{entry:?} is not a valid host: {err}"))?;
    if url.path() != "/" || url.username() != "" || url.query().is_some() {
        return Err(format!("{entry:?} is not host:port"));
    }
    let host = url.host_str().filter(|host| !host.is_empty()).ok_or_else(|| format!("{entry:?} has no host"))?;
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = FetchConfig::from_settings(&Settings::default()).unwrap();
        assert_eq!(config, FetchConfig::default());
        assert_eq!(config.max_bytes, 10_485_760);
        assert_eq!(config.timeout, Duration::from_millis(30_000));
        assert_eq!(config.max_redirects, 5);
        assert_eq!(config.per_host_concurrency, 4);
        assert!(!config.allow_private);
        assert!(config.allow_hosts.is_empty());
    }

    #[test]
    fn allowed_hosts_are_normalised_host_port_pairs() {
        let config = FetchConfig::from_settings(&Settings::from_pairs([(
            "FETCH_ALLOW_HOSTS",
            " 127.0.0.1:8080, Site.Test:80 ,[::1]:9000,,2130706433:81",
        )]))
        .unwrap();
        assert_eq!(config.allow_hosts, ["127.0.0.1:8080", "site.test:80", "[::1]:9000", "127.0.0.1:81"]);
        for bad in
            ["127.0.0.1", "127.0.0.1:", "127.0.0.1:http", ":80", "::1:80", "a b:80", "h:70000", "h/p:80", "u@h:80"]
        {
            let err = FetchConfig::from_settings(&Settings::from_pairs([("FETCH_ALLOW_HOSTS", bad)])).unwrap_err();
            assert_eq!(err.variable, "MILLRACE_FETCH_ALLOW_HOSTS", "{bad}");
        }
    }

    #[test]
    fn the_size_limit_follows_the_document_limit_unless_set() {
        let config = FetchConfig::from_settings(&Settings::from_pairs([("MAX_DOCUMENT_BYTES", "1000")])).unwrap();
        assert_eq!(config.max_bytes, 1000);
        let config = FetchConfig::from_settings(&Settings::from_pairs([
            ("MAX_DOCUMENT_BYTES", "1000"),
            ("FETCH_MAX_BYTES", "2000"),
            ("FETCH_ALLOW_PRIVATE", "true"),
            ("FETCH_MAX_REDIRECTS", "0"),
        ]))
        .unwrap();
        assert_eq!((config.max_bytes, config.allow_private, config.max_redirects), (2000, true, 0));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("MILLRACE_FETCH_MAX_BYTES", "0"),
            ("MILLRACE_FETCH_MAX_BYTES", "1000000000"),
            ("MILLRACE_FETCH_TIMEOUT_MS", "0"),
            ("MILLRACE_FETCH_TIMEOUT_MS", "soon"),
            ("MILLRACE_FETCH_MAX_REDIRECTS", "21"),
            ("MILLRACE_FETCH_MAX_REDIRECTS", "-1"),
            ("MILLRACE_FETCH_PER_HOST_CONCURRENCY", "0"),
            ("MILLRACE_FETCH_ALLOW_PRIVATE", "yes please"),
        ] {
            let err = FetchConfig::from_settings(&Settings::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{value}");
        }
    }
}
