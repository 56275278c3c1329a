//! The rules that keep a caller-supplied URL from reaching what it must not (SSRF): the
//! service's own host, the private network, cloud metadata endpoints. They are applied to the
//! URL's host as written, to every address a name resolves to when a URL is checked, and again
//! to every address resolved at connect time (see `resolver`), so that a name re-pointed between
//! the check and the connection (DNS rebinding) is still refused.
//!
//! Written by hand because `std`'s `IpAddr::is_global` is unstable and the crates that offer it
//! do not know the cloud metadata endpoints or the IPv6 forms that embed an IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

use crate::error::FetchError;

/// Names of cloud metadata services (GCP, AWS). They are refused by name, before any lookup,
/// and even when private addresses are allowed: their answers carry credentials.
const METADATA_NAMES: &[&str] =
    &["metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"];

/// Addresses of cloud metadata services: AWS, GCP, Azure IMDS and OpenStack (169.254.169.254),
/// AWS ECS task metadata (169.254.170.2), EKS pod identity (169.254.170.23), Alibaba Cloud
/// (100.100.100.200), Oracle Cloud (192.0.0.192), Azure WireServer (168.63.129.16).
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
    Ipv4Addr::new(168, 63, 129, 16),
];

/// AWS IMDS and EKS pod identity over IPv6.
const METADATA_V6: &[Ipv6Addr] =
    &[Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)];

/// A URL or address that the rules do not allow; the text says which rule
/// ("127.0.0.1 is a loopback address").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    pub reason: String,
}

impl From<Refusal> for FetchError {
    fn from(refusal: Refusal) -> Self {
        FetchError::Refused { reason: refusal.reason }
    }
}

/// How an address is classed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    /// Reachable on the public internet.
    Public,
    /// Internal (loopback, private, link-local…): allowed only when private addresses are.
    Internal(String),
    /// Never a fetch destination (metadata, unspecified, multicast, broadcast, reserved).
    Forbidden(String),
}

/// Which addresses a fetch may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow_private: bool,
    exempt: Vec<IpAddr>,
    /// `host:port` pairs (as [`crate::FetchConfig::allow_hosts`] keeps them) whose URLs may
    /// reach internal addresses.
    allow_hosts: Vec<String>,
}

impl AddressPolicy {
    /// `allow_private` lets loopback, private, shared (CGNAT), link-local and unique-local
    /// addresses through (tests, internal deployments). Metadata, unspecified, multicast,
    /// broadcast and reserved addresses stay refused whatever it says.
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private, exempt: Vec::new(), allow_hosts: Vec::new() }
    }

    /// The rules of a config: `allow_private` and the allowlist of `host:port` pairs.
    pub fn from_config(config: &crate::FetchConfig) -> Self {
        Self::new(config.allow_private).allow_hosts(config.allow_hosts.iter().cloned())
    }

    /// Exempts URLs on these `host:port` pairs (normalised as `MILLRACE_FETCH_ALLOW_HOSTS`
    /// is) from the private-address rule: `127.0.0.1:8080` lets a test's server be fetched
    /// while 127.0.0.1 on any other port, and every other internal address, stays refused.
    /// Metadata, unspecified, multicast and reserved addresses stay refused even there.
    pub fn allow_hosts(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        self.allow_hosts.extend(hosts);
        self
    }

    /// Whether `url`'s host and port (the scheme's default if none) are on the allowlist.
    pub fn allows_host_of(&self, url: &Url) -> bool {
        match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => {
                let wanted = format!("{host}:{port}");
                self.allow_hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(&wanted))
            }
            _ => false,
        }
    }

    /// Whether some allowlisted pair has this name as its host (whatever the port). The
    /// connect-time resolver sees only the name; the port was checked on the URL before the
    /// request ([`AddressPolicy::check_url`] runs on every hop), so this is enough there.
    pub(crate) fn allows_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.allow_hosts
            .iter()
            .filter_map(|allowed| allowed.rsplit_once(':').map(|(host, _)| host))
            .any(|host| host.eq_ignore_ascii_case(name))
    }

    /// Allows one address whatever the rules, e.g. the test server on 127.0.0.1 while every
    /// other internal address stays refused. Not for production use: prefer `allow_private`.
    pub fn exempt(mut self, address: IpAddr) -> Self {
        self.exempt.push(address);
        self
    }

    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Checks one address: "10.0.0.1 is a private address".
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.refusal(ip, false).map_or(Ok(()), |class| Err(Refusal { reason: format!("{ip} is {class}") }))
    }

    /// Checks an address a name resolved to: "intranet.example resolves to 10.0.0.1, a private
    /// address".
    pub fn check_resolved(&self, name: &str, ip: IpAddr) -> Result<(), Refusal> {
        self.check_resolved_for(name, ip, false)
    }

    /// [`AddressPolicy::check_resolved`], with internal addresses allowed when `allowed_host`
    /// (the name is on the allowlist).
    pub(crate) fn check_resolved_for(&self, name: &str, ip: IpAddr, allowed_host: bool) -> Result<(), Refusal> {
        self.refusal(ip, allowed_host)
            .map_or(Ok(()), |class| Err(Refusal { reason: format!("{name} resolves to {ip}, {class}") }))
    }

    /// Checks a host name before it is resolved: metadata names are refused always, `localhost`
    /// (and `*.localhost`, which resolvers answer locally) unless private addresses are allowed.
    pub fn check_name(&self, name: &str) -> Result<(), Refusal> {
        self.check_name_for(name, false)
    }

    pub(crate) fn check_name_for(&self, name: &str, allowed_host: bool) -> Result<(), Refusal> {
        let normalised = name.trim_end_matches('.').to_ascii_lowercase();
        if METADATA_NAMES.contains(&normalised.as_str()) {
            return Err(Refusal { reason: format!("{name} is a cloud metadata address") });
        }
        if !self.allow_private && !allowed_host && (normalised == "localhost" || normalised.ends_with(".localhost")) {
            return Err(Refusal { reason: format!("{name} is a loopback address") });
        }
        Ok(())
    }

    /// Why `ip` is refused, as "a private address"; `None` when it is allowed.
    fn refusal(&self, ip: IpAddr, allowed_host: bool) -> Option<String> {
        if self.exempt.contains(&ip) {
            return None;
        }
        match classify(ip) {
            Class::Public => None,
            Class::Internal(_) if self.allow_private || allowed_host => None,
            Class::Internal(class) | Class::Forbidden(class) => Some(class),
        }
    }
}

/// Parses a URL and applies the rules that need no lookup: http or https only, no credentials,
/// a host. Policy-free, so it can be used to validate input before anything else.
pub fn parse_url(text: &str) -> Result<Url, FetchError> {
    let url = Url::parse(text.trim()).map_err(|err| FetchError::InvalidUrl { reason: err.to_string() })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::refused(format!("the scheme {:?} is not allowed: only http and https", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::refused("credentials in the URL are not allowed"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(FetchError::InvalidUrl { reason: "the URL has no host".to_owned() });
    }
    Ok(url)
}

/// The host of a URL: an address written in the URL, or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    Ip(IpAddr),
    Name(String),
}

/// The URL parser has already turned every IPv4 spelling (`2130706433`, `0x7f.1`) into dotted
/// form and bracketed IPv6, so parsing the host text is enough to tell an address from a name.
pub(crate) fn host_of(url: &Url) -> Option<Host> {
    let host = url.host_str()?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(|ip| Host::Ip(IpAddr::V6(ip)));
    }
    Some(match host.parse::<Ipv4Addr>() {
        Ok(ip) => Host::Ip(IpAddr::V4(ip)),
        Err(_) => Host::Name(host.to_owned()),
    })
}

impl AddressPolicy {
    /// [`parse_url`] and the rules on the host as written (an address, or a name's rules); the
    /// addresses a name resolves to are checked by the caller (at check time) and by the
    /// resolver (at connect time).
    pub(crate) fn check_url(&self, text: &str) -> Result<(Url, Host), FetchError> {
        let url = parse_url(text)?;
        let host = host_of(&url).ok_or_else(|| FetchError::InvalidUrl { reason: "the URL has no host".to_owned() })?;
        let allowed_host = self.allows_host_of(&url);
        match &host {
            Host::Ip(ip) => {
                if let Some(class) = self.refusal(*ip, allowed_host) {
                    return Err(Refusal { reason: format!("{ip} is {class}") }.into());
                }
            }
            Host::Name(name) => self.check_name_for(name, allowed_host)?,
        }
        Ok((url, host))
    }
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn internal(what: &str) -> Class {
    Class::Internal(what.to_owned())
}

fn forbidden(what: &str) -> Class {
    Class::Forbidden(what.to_owned())
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    if METADATA_V4.contains(&ip) {
        return forbidden("a cloud metadata address");
    }
    if ip.is_unspecified() {
        return forbidden("an unspecified address");
    }
    if ip.is_broadcast() {
        return forbidden("a broadcast address");
    }
    if ip.is_multicast() {
        return forbidden("a multicast address");
    }
    match (a, b, c) {
        (0, _, _) => forbidden("a \"this network\" address (0.0.0.0/8)"),
        (240..=255, _, _) => forbidden("a reserved address (240.0.0.0/4)"),
        (127, _, _) => internal("a loopback address"),
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => internal("a private address"),
        (100, 64..=127, _) => internal("a shared (CGNAT) address"),
        (169, 254, _) => internal("a link-local address"),
        (192, 0, 0) => internal("an IETF protocol assignment address (192.0.0.0/24)"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => internal("a documentation address"),
        (198, 18..=19, _) => internal("a benchmarking address (198.18.0.0/15)"),
        _ => Class::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    if METADATA_V6.contains(&ip) {
        return forbidden("a cloud metadata address");
    }
    if ip.is_unspecified() {
        return forbidden("an unspecified address");
    }
    if ip.is_loopback() {
        return internal("a loopback address");
    }
    // Forms that carry an IPv4 address are judged by it: a dual-stack socket, a NAT64 gateway
    // or a 6to4 relay would deliver to that address.
    if let Some((v4, form)) = embedded_v4(ip) {
        return match classify_v4(v4) {
            Class::Public => Class::Public,
            Class::Internal(class) => Class::Internal(format!("{form} of {v4}, {class}")),
            Class::Forbidden(class) => Class::Forbidden(format!("{form} of {v4}, {class}")),
        };
    }
    let s = ip.segments();
    match s[0] {
        0xff00..=0xffff => forbidden("a multicast address"),
        0xfe80..=0xfebf => internal("a link-local address"),
        0xfec0..=0xfeff => internal("a site-local address"),
        0xfc00..=0xfdff => internal("a unique-local address"),
        // Teredo hides its addresses (obfuscated); nothing legitimate is fetched through it.
        0x2001 if s[1] == 0 => forbidden("a Teredo tunnel address"),
        0x2001 if s[1] == 0x0db8 => internal("a documentation address"),
        0x0064 if s[1] == 0xff9b && s[2] == 1 => internal("a local-use NAT64 address"),
        0x0100 if s[1..4] == [0, 0, 0] => forbidden("a discard-only address"),
        // Everything outside 2000::/3 is unassigned or special.
        0x2000..=0x3fff => Class::Public,
        _ => forbidden("a reserved address (outside 2000::/3)"),
    }
}

/// The IPv4 address inside an IPv6 form that delivers to it, and the form's name.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some((v4, "an IPv4-mapped form"));
    }
    // ::a.b.c.d (deprecated "IPv4-compatible"); `::` and `::1` are handled before.
    if s[..6] == [0; 6] {
        return Some((v4(s[6], s[7]), "an IPv4-compatible form"));
    }
    // 64:ff9b::/96, the well-known NAT64 prefix.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some((v4(s[6], s[7]), "a NAT64 form"));
    }
    // 2002:AABB:CCDD::/48, 6to4.
    if s[0] == 0x2002 {
        return Some((v4(s[1], s[2]), "a 6to4 form"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(policy: &AddressPolicy, ip: &str) -> Option<String> {
        policy.check_ip(ip.parse().unwrap()).err().map(|r| r.reason)
    }

    #[test]
    fn internal_v4_ranges_are_refused_with_their_reason() {
        let policy = AddressPolicy::new(false);
        for (ip, class) in [
            ("127.0.0.1", "a loopback address"),
            ("127.255.0.9", "a loopback address"),
            ("10.0.0.1", "a private address"),
            ("10.255.255.255", "a private address"),
            ("172.16.0.1", "a private address"),
            ("172.31.255.254", "a private address"),
            ("192.168.1.1", "a private address"),
            ("100.64.0.1", "a shared (CGNAT) address"),
            ("100.127.255.254", "a shared (CGNAT) address"),
            ("169.254.1.1", "a link-local address"),
            ("169.254.169.254", "a cloud metadata address"),
            ("169.254.170.2", "a cloud metadata address"),
            ("100.100.100.200", "a cloud metadata address"),
            ("168.63.129.16", "a cloud metadata address"),
            ("0.0.0.0", "an unspecified address"),
            ("0.1.2.3", "a \"this network\" address (0.0.0.0/8)"),
            ("224.0.0.1", "a multicast address"),
            ("239.255.255.250", "a multicast address"),
            ("255.255.255.255", "a broadcast address"),
            ("240.0.0.1", "a reserved address (240.0.0.0/4)"),
            ("192.0.2.10", "a documentation address"),
            ("198.18.0.1", "a benchmarking address (198.18.0.0/15)"),
        ] {
            assert_eq!(reason(&policy, ip), Some(format!("{ip} is {class}")), "{ip}");
        }
    }

    #[test]
    fn neighbours_of_the_ranges_are_public() {
        let policy = AddressPolicy::new(false);
        for ip in
            ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.15.255.255", "172.32.0.0", "100.63.255.255", "100.128.0.0"]
        {
            assert_eq!(reason(&policy, ip), None, "{ip}");
        }
        for ip in ["2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001::200e"] {
            assert_eq!(reason(&policy, ip), None, "{ip}");
        }
    }

    #[test]
    fn internal_v6_ranges_are_refused_with_their_reason() {
        let policy = AddressPolicy::new(false);
        for (ip, class) in [
            ("::1", "a loopback address"),
            ("::", "an unspecified address"),
            ("fe80::1", "a link-local address"),
            ("febf::1", "a link-local address"),
            ("fc00::1", "a unique-local address"),
            ("fd12:3456::1", "a unique-local address"),
            ("fd00:ec2::254", "a cloud metadata address"),
            ("ff02::1", "a multicast address"),
            ("fec0::1", "a site-local address"),
            ("2001::1", "a Teredo tunnel address"),
            ("2001:db8::1", "a documentation address"),
            ("100::1", "a discard-only address"),
        ] {
            assert_eq!(reason(&policy, ip), Some(format!("{ip} is {class}")), "{ip}");
        }
    }

    #[test]
    fn v6_forms_of_v4_addresses_are_judged_by_the_v4_address() {
        let policy = AddressPolicy::new(false);
        for (ip, form, v4, class) in [
            ("::ffff:127.0.0.1", "an IPv4-mapped form", "127.0.0.1", "a loopback address"),
            ("::ffff:10.1.2.3", "an IPv4-mapped form", "10.1.2.3", "a private address"),
            ("::ffff:169.254.169.254", "an IPv4-mapped form", "169.254.169.254", "a cloud metadata address"),
            ("::ffff:a9fe:a9fe", "an IPv4-mapped form", "169.254.169.254", "a cloud metadata address"),
            ("::ffff:100.64.0.1", "an IPv4-mapped form", "100.64.0.1", "a shared (CGNAT) address"),
            ("::ffff:0.0.0.0", "an IPv4-mapped form", "0.0.0.0", "an unspecified address"),
            ("::127.0.0.1", "an IPv4-compatible form", "127.0.0.1", "a loopback address"),
            ("::192.168.0.1", "an IPv4-compatible form", "192.168.0.1", "a private address"),
            ("64:ff9b::10.0.0.1", "a NAT64 form", "10.0.0.1", "a private address"),
            ("2002:7f00:1::", "a 6to4 form", "127.0.0.1", "a loopback address"),
            ("2002:a9fe:a9fe::1", "a 6to4 form", "169.254.169.254", "a cloud metadata address"),
        ] {
            let parsed: Ipv6Addr = ip.parse().unwrap();
            assert_eq!(reason(&policy, ip), Some(format!("{parsed} is {form} of {v4}, {class}")), "{ip}");
        }
        assert_eq!(reason(&policy, "::ffff:8.8.8.8"), None);
        assert_eq!(reason(&policy, "64:ff9b::8.8.8.8"), None);
    }

    #[test]
    fn allow_private_lets_internal_addresses_through_but_not_forbidden_ones() {
        let policy = AddressPolicy::new(true);
        for ip in ["127.0.0.1", "10.0.0.1", "192.168.0.1", "100.64.0.1", "169.254.1.1", "::1", "fd12::1", "fe80::1"] {
            assert_eq!(reason(&policy, ip), None, "{ip}");
        }
        for ip in ["169.254.169.254", "fd00:ec2::254", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1"] {
            assert!(reason(&policy, ip).is_some(), "{ip}");
        }
        assert!(policy.check_name("metadata.google.internal").is_err());
        assert!(policy.check_name("localhost").is_ok());
    }

    #[test]
    fn an_exempt_address_passes_and_its_neighbours_do_not() {
        let policy = AddressPolicy::new(false).exempt("127.0.0.1".parse().unwrap());
        assert_eq!(reason(&policy, "127.0.0.1"), None);
        assert!(reason(&policy, "127.0.0.2").is_some());
    }

    #[test]
    fn allowlisted_host_port_pairs_pass_and_nothing_else() {
        let policy = AddressPolicy::new(false).allow_hosts([
            "127.0.0.1:8080".to_owned(),
            "site.test:80".to_owned(),
            "[::1]:9000".to_owned(),
            "169.254.169.254:80".to_owned(),
            "metadata.google.internal:80".to_owned(),
        ]);
        let check = |text: &str| policy.check_url(text).map(|_| ()).map_err(|err| err.to_string());
        assert_eq!(check("http://127.0.0.1:8080/a?b=1"), Ok(()));
        assert_eq!(check("https://127.0.0.1:8080/"), Ok(()), "the scheme does not matter, host and port do");
        assert_eq!(check("http://2130706433:8080/"), Ok(()), "any spelling of the address");
        assert_eq!(check("http://127.0.0.1:8081/"), Err("refused: 127.0.0.1 is a loopback address".into()));
        assert_eq!(check("http://127.0.0.1/"), Err("refused: 127.0.0.1 is a loopback address".into()));
        assert_eq!(check("http://127.0.0.2:8080/"), Err("refused: 127.0.0.2 is a loopback address".into()));
        assert_eq!(check("http://[::1]:9000/"), Ok(()));
        assert!(check("http://[::1]:8080/").is_err());
        assert_eq!(check("http://SITE.test/x"), Ok(()), "port 80 is http's default");
        assert!(policy.allows_host_of(&Url::parse("http://site.test/x").unwrap()));
        assert!(!policy.allows_host_of(&Url::parse("https://site.test/x").unwrap()), "https defaults to 443");
        // Metadata stays refused even when listed.
        assert_eq!(
            check("http://169.254.169.254/"),
            Err("refused: 169.254.169.254 is a cloud metadata address".into())
        );
        assert!(check("http://metadata.google.internal/").is_err());
        // Names: the connect-time resolver knows only the name, the URL check has the port.
        assert!(policy.allows_name("site.test") && policy.allows_name("Site.Test."));
        assert!(!policy.allows_name("other.test"));
        assert!(policy.check_resolved_for("site.test", "10.0.0.1".parse().unwrap(), true).is_ok());
        assert!(policy.check_resolved_for("site.test", "169.254.169.254".parse().unwrap(), true).is_err());
        assert!(policy.check_resolved_for("site.test", "10.0.0.1".parse().unwrap(), false).is_err());
        let localhost = AddressPolicy::new(false).allow_hosts(["localhost:3000".to_owned()]);
        assert!(localhost.check_url("http://localhost:3000/").is_ok());
        assert!(localhost.check_url("http://localhost:3001/").is_err());
    }

    #[test]
    fn names_are_checked_before_lookup() {
        let policy = AddressPolicy::new(false);
        for name in
            ["metadata.google.internal", "METADATA.google.internal.", "metadata.goog", "metadata", "instance-data"]
        {
            assert_eq!(
                policy.check_name(name).unwrap_err().reason,
                format!("{name} is a cloud metadata address"),
                "{name}"
            );
        }
        assert_eq!(policy.check_name("localhost").unwrap_err().reason, "localhost is a loopback address");
        assert!(policy.check_name("app.localhost").is_err());
        assert!(policy.check_name("docs.example.com").is_ok());
        assert!(policy.check_name("metadata.example.com").is_ok());
    }

    #[test]
    fn urls_need_http_a_host_and_no_credentials() {
        assert!(parse_url("https://example.com/a.pdf").is_ok());
        assert!(matches!(parse_url("not a url"), Err(FetchError::InvalidUrl { .. })));
        let refused = |text: &str| match parse_url(text) {
            Err(FetchError::Refused { reason }) => reason,
            other => panic!("{text}: {other:?}"),
        };
        assert!(refused("ftp://example.com/a").contains("\"ftp\""));
        assert!(refused("file:///etc/passwd").contains("\"file\""));
        assert!(refused("gopher://example.com/").contains("only http and https"));
        assert!(refused("https://user:secret@example.com/").contains("credentials"));
        assert!(refused("https://user@example.com/").contains("credentials"));
    }

    #[test]
    fn literal_hosts_are_checked_in_every_spelling() {
        let policy = AddressPolicy::new(false);
        let refused = |text: &str| match policy.check_url(text) {
            Err(FetchError::Refused { reason }) => reason,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(refused("http://127.0.0.1:8080/x"), "127.0.0.1 is a loopback address");
        // Decimal, hexadecimal and short forms all mean 127.0.0.1.
        assert_eq!(refused("http://2130706433/"), "127.0.0.1 is a loopback address");
        assert_eq!(refused("http://0x7f.1/"), "127.0.0.1 is a loopback address");
        assert_eq!(refused("http://127.1/"), "127.0.0.1 is a loopback address");
        assert_eq!(refused("http://[::1]/"), "::1 is a loopback address");
        assert_eq!(refused("http://[::ffff:169.254.169.254]/"), {
            "::ffff:169.254.169.254 is an IPv4-mapped form of 169.254.169.254, a cloud metadata address"
        });
        assert_eq!(refused("http://169.254.169.254/latest/meta-data/"), "169.254.169.254 is a cloud metadata address");
        assert_eq!(refused("http://metadata.google.internal/computeMetadata/v1/"), {
            "metadata.google.internal is a cloud metadata address"
        });
        let (url, host) = policy.check_url("https://93.184.216.34/doc.pdf").unwrap();
        assert_eq!(host, Host::Ip("93.184.216.34".parse().unwrap()));
        assert_eq!(url.as_str(), "https://93.184.216.34/doc.pdf");
        let (_, host) = policy.check_url("https://Docs.Example.com/doc.pdf").unwrap();
        assert_eq!(host, Host::Name("docs.example.com".into()));
    }
}
