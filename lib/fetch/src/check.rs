//! Checking a URL before it is accepted (at submit time): the URL rules, then the addresses its
//! name resolves to now. The fetch itself checks again at connect time, so this check is about
//! answering the caller early and clearly, not the last line of defence.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::config::FetchConfig;
use crate::error::FetchError;
use crate::guard::{AddressPolicy, Host};
use crate::resolver::{Resolver, SystemResolver};

/// How long a check waits for a lookup; a slow name is treated like one that does not resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The URL rules with a resolver: what a service needs to check URLs without fetching them.
#[derive(Clone)]
pub struct UrlGuard {
    policy: Arc<AddressPolicy>,
    resolver: Arc<dyn Resolver>,
}

impl std::fmt::Debug for UrlGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlGuard").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl UrlGuard {
    pub fn new(policy: AddressPolicy, resolver: Arc<dyn Resolver>) -> Self {
        Self { policy: Arc::new(policy), resolver }
    }

    /// The rules of `config`, with the system resolver.
    pub fn from_config(config: &FetchConfig) -> Self {
        Self::new(AddressPolicy::from_config(config), Arc::new(SystemResolver))
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    pub(crate) fn shared_policy(&self) -> Arc<AddressPolicy> {
        self.policy.clone()
    }

    pub(crate) fn resolver(&self) -> Arc<dyn Resolver> {
        self.resolver.clone()
    }

    /// Checks a URL: syntax, http(s), no credentials, the host as written, and every address
    /// the name resolves to now. A name that does not resolve (or not within 5 s) passes: the
    /// fetch will fail with a network error then, or be refused if it resolves to a refused
    /// address by then. Returns the parsed URL.
    pub async fn check(&self, url: &str) -> Result<Url, FetchError> {
        let (url, host) = self.policy.check_url(url)?;
        let allowed_host = self.policy.allows_host_of(&url);
        if let Host::Name(name) = host {
            match tokio::time::timeout(LOOKUP_TIMEOUT, self.resolver.lookup(&name)).await {
                Ok(Ok(addresses)) => {
                    for ip in addresses {
                        self.policy.check_resolved_for(&name, ip, allowed_host)?;
                    }
                }
                Ok(Err(err)) => {
                    tracing::debug!(host = %name, error = %err, "name does not resolve; accepted unchecked")
                }
                Err(_) => tracing::debug!(host = %name, "lookup timed out; accepted unchecked"),
            }
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::resolver::StaticResolver;

    fn guard(resolver: StaticResolver) -> (UrlGuard, Arc<StaticResolver>) {
        let resolver = Arc::new(resolver);
        (UrlGuard::new(AddressPolicy::new(false), resolver.clone()), resolver)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused() {
        let (guard, _) = guard(
            StaticResolver::new()
                .with("intranet.example.com", [ip("10.0.0.5")])
                .with("loop.example.com", [ip("127.0.0.1")])
                .with("cgnat.example.com", [ip("100.64.1.1")])
                .with("meta.example.com", [ip("169.254.169.254")])
                .with("v6meta.example.com", [ip("fd00:ec2::254")])
                .with("ula.example.com", [ip("fd01::1")])
                .with("mapped.example.com", [ip("::ffff:192.168.1.1")])
                .with("mixed.example.com", [ip("93.184.216.34"), ip("172.16.0.1")]),
        );
        for (url, reason) in [
            ("https://intranet.example.com/a", "intranet.example.com resolves to 10.0.0.5, a private address"),
            ("http://loop.example.com:8080/", "loop.example.com resolves to 127.0.0.1, a loopback address"),
            ("https://cgnat.example.com/", "cgnat.example.com resolves to 100.64.1.1, a shared (CGNAT) address"),
            ("https://meta.example.com/", "meta.example.com resolves to 169.254.169.254, a cloud metadata address"),
            ("https://v6meta.example.com/", "v6meta.example.com resolves to fd00:ec2::254, a cloud metadata address"),
            ("https://ula.example.com/", "ula.example.com resolves to fd01::1, a unique-local address"),
            (
                "https://mapped.example.com/",
                "mapped.example.com resolves to ::ffff:192.168.1.1, an IPv4-mapped form of 192.168.1.1, a private address",
            ),
            ("https://mixed.example.com/", "mixed.example.com resolves to 172.16.0.1, a private address"),
        ] {
            assert_eq!(guard.check(url).await, Err(FetchError::Refused { reason: reason.into() }), "{url}");
        }
    }

    #[tokio::test]
    async fn public_names_and_addresses_pass_without_connecting() {
        let (guard, resolver) = guard(
            StaticResolver::new()
                .with("docs.example.com", [ip("93.184.216.34"), ip("2606:2800:220:1:248:1893:25c8:1946")]),
        );
        let url = guard.check("https://docs.example.com/guide.pdf?x=1").await.unwrap();
        assert_eq!(url.as_str(), "https://docs.example.com/guide.pdf?x=1");
        assert_eq!(resolver.lookups("docs.example.com"), 1);
        guard.check("https://8.8.8.8/a").await.unwrap();
        guard.check("http://[2606:4700:4700::1111]:8443/a").await.unwrap();
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_passes() {
        let (guard, resolver) = guard(StaticResolver::new());
        guard.check("https://nowhere.example.com/a").await.unwrap();
        assert_eq!(resolver.lookups("nowhere.example.com"), 1);
    }

    #[tokio::test]
    async fn metadata_names_are_refused_without_a_lookup() {
        let (guard, resolver) = guard(StaticResolver::new().with("metadata.google.internal", [ip("93.184.216.34")]));
        let err = guard.check("http://metadata.google.internal/computeMetadata/v1/").await.unwrap_err();
        assert_eq!(err, FetchError::Refused { reason: "metadata.google.internal is a cloud metadata address".into() });
        assert_eq!(resolver.lookups("metadata.google.internal"), 0);
    }

    #[tokio::test]
    async fn an_allowlisted_name_may_resolve_to_an_internal_address_on_its_port_only() {
        let resolver = Arc::new(
            StaticResolver::new()
                .with("site.test", [ip("10.0.0.5")])
                .with("other.test", [ip("10.0.0.5")])
                .with("meta.test", [ip("169.254.169.254")]),
        );
        let policy = AddressPolicy::new(false).allow_hosts(["site.test:8080".to_owned(), "meta.test:80".to_owned()]);
        let guard = UrlGuard::new(policy, resolver);
        guard.check("http://site.test:8080/a").await.unwrap();
        assert!(guard.check("http://site.test:8081/a").await.is_err());
        assert!(guard.check("http://other.test:8080/a").await.is_err());
        assert_eq!(
            guard.check("http://meta.test/").await.unwrap_err(),
            FetchError::Refused { reason: "meta.test resolves to 169.254.169.254, a cloud metadata address".into() }
        );
    }

    #[tokio::test]
    async fn allow_private_lets_internal_names_through() {
        let resolver = Arc::new(StaticResolver::new().with("intranet.example.com", [ip("10.0.0.5")]));
        let guard = UrlGuard::new(AddressPolicy::new(true), resolver);
        guard.check("https://intranet.example.com/a").await.unwrap();
        guard.check("http://127.0.0.1:9/a").await.unwrap();
        assert!(guard.check("http://169.254.169.254/").await.is_err());
    }
}
