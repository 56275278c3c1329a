//! Name resolution behind a trait, and the resolver handed to reqwest that applies the address
//! rules to every address it returns. Checking a URL before fetching it is not enough: the name
//! could resolve to a public address at the check and to 127.0.0.1 at the connection (DNS
//! rebinding), so the rules must hold on the very addresses the client connects to. A resolver
//! that answers from a table ([`StaticResolver`]) lets tests map names to internal addresses
//! without any DNS traffic.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::guard::AddressPolicy;

/// The future of one lookup.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a host name into addresses.
pub trait Resolver: Send + Sync {
    fn lookup<'a>(&'a self, name: &'a str) -> Lookup<'a>;
}

/// The operating system's resolver (`getaddrinfo`, on tokio's blocking pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup<'a>(&'a self, name: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name, 0)).await?;
            Ok(addrs.map(|addr| addr.ip()).collect())
        })
    }
}

/// A resolver answering from a table, for tests: no DNS query leaves the process. A name
/// given several answers returns them in turn (the last one from then on), which is how a
/// test plays DNS rebinding. Unknown names do not resolve.
#[derive(Debug, Default)]
pub struct StaticResolver {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    answers: HashMap<String, Vec<Vec<IpAddr>>>,
    lookups: HashMap<String, usize>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next answer for `name`.
    pub fn with(self, name: &str, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        self.table().answers.entry(normalise(name)).or_default().push(addresses.into_iter().collect());
        self
    }

    /// How many times `name` was looked up.
    pub fn lookups(&self, name: &str) -> usize {
        self.table().lookups.get(&normalise(name)).copied().unwrap_or(0)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Resolver for StaticResolver {
    fn lookup<'a>(&'a self, name: &'a str) -> Lookup<'a> {
        let name = normalise(name);
        let answer = {
            let mut table = self.table();
            let count = table.lookups.entry(name.clone()).or_insert(0);
            let turn = *count;
            *count += 1;
            table.answers.get(&name).and_then(|answers| answers.get(turn).or(answers.last())).cloned()
        };
        Box::pin(async move {
            answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name} does not resolve")))
        })
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// reqwest's resolver: looks the name up, then refuses the connection if any address breaks
/// the rules, before a socket is opened. (reqwest does not call a resolver for a URL whose host
/// is an address; the fetcher checks those itself before each request.)
pub(crate) struct GuardedResolver {
    pub(crate) resolver: Arc<dyn Resolver>,
    pub(crate) policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.resolver.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let allowed_host = policy.allows_name(&host);
            policy.check_name_for(&host, allowed_host)?;
            let addresses = resolver.lookup(&host).await?;
            if addresses.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")).into());
            }
            // Refuse if any address is refused rather than drop it: a name that mixes public
            // and internal answers is being used to probe.
            for ip in &addresses {
                if let Err(refusal) = policy.check_resolved_for(&host, *ip, allowed_host) {
                    tracing::warn!(host = %host, address = %ip, reason = %refusal, "connection refused by the address rules");
                    return Err(refusal.into());
                }
            }
            let addrs: Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_answers_come_in_turn_and_are_counted() {
        let a: IpAddr = "93.184.216.34".parse().unwrap();
        let b: IpAddr = "10.0.0.9".parse().unwrap();
        let resolver = StaticResolver::new().with("Rebind.Example.com", [a]).with("rebind.example.com.", [b]);
        assert_eq!(resolver.lookup("rebind.example.com").await.unwrap(), vec![a]);
        assert_eq!(resolver.lookup("rebind.example.com").await.unwrap(), vec![b]);
        assert_eq!(resolver.lookup("rebind.example.com").await.unwrap(), vec![b]);
        assert_eq!(resolver.lookups("rebind.example.com"), 3);
        let err = resolver.lookup("nowhere.example").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(resolver.lookups("nowhere.example"), 1);
    }

    #[tokio::test]
    async fn the_guarded_resolver_refuses_internal_answers_before_connecting() {
        let resolver = StaticResolver::new()
            .with("mixed.example.com", ["93.184.216.34".parse().unwrap(), "10.1.2.3".parse().unwrap()])
            .with("public.example.com", ["93.184.216.34".parse().unwrap()]);
        let guarded = GuardedResolver { resolver: Arc::new(resolver), policy: Arc::new(AddressPolicy::new(false)) };
        let err = guarded.resolve("mixed.example.com".parse().unwrap()).await.err().unwrap();
        assert_eq!(err.to_string(), "mixed.example.com resolves to 10.1.2.3, a private address");
        let err = guarded.resolve("metadata.google.internal".parse().unwrap()).await.err().unwrap();
        assert_eq!(err.to_string(), "metadata.google.internal is a cloud metadata address");
        let addrs: Vec<SocketAddr> = guarded.resolve("public.example.com".parse().unwrap()).await.unwrap().collect();
        assert_eq!(addrs, vec!["93.184.216.34:0".parse().unwrap()]);
    }
}
