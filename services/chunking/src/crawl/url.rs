//! URLs as a crawl compares them: one spelling per page, so that a page linked as
//! `HTTP://Site:80/a?b=2&a=1#top` and as `http://site/a?a=1&b=2` is fetched once; and the
//! crawl's scope (`host` or `prefix`, `include`/`exclude` regexes over path and query).

use millrace_fetch::Url;
use millrace_pipeline::{CrawlScope, CrawlSpec};
use regex::Regex;

/// `text` (relative to `base` if given) in its normal form: http(s) only, fragment dropped,
/// query parameters sorted (empty query dropped), default port removed, scheme and host
/// lowercased (the last two by the URL parser). `None` for what is not an http(s) URL with a
/// host, or carries credentials.
pub fn normalise(text: &str, base: Option<&Url>) -> Option<Url> {
    let text = text.trim();
    let mut url = match base {
        Some(base) => base.join(text).ok()?,
        None => Url::parse(text).ok()?,
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    url.set_fragment(None);
    let sorted = url.query().map(|query| {
        let mut pairs: Vec<&str> = query.split('&').filter(|pair| !pair.is_empty()).collect();
        pairs.sort_unstable();
        pairs.join("&")
    });
    match sorted {
        Some(query) if !query.is_empty() => url.set_query(Some(&query)),
        _ => url.set_query(None),
    }
    Some(url)
}

/// The document id of a crawled page: its normal URL (as a URL submitted to the ingestion API
/// without an id), or a hash of it when it is longer than a document id may be.
pub fn document_id(url: &Url) -> String {
    let text = url.as_str();
    if text.chars().count() <= 256 {
        return text.to_owned();
    }
    use sha2::Digest as _;
    format!("url:sha256:{}", hex::encode(sha2::Sha256::digest(text.as_bytes())))
}

/// Which URLs a crawl may take.
#[derive(Debug, Clone)]
pub struct Scope {
    start: Url,
    scope: CrawlScope,
    /// The start page's directory (its path up to the last `/`), for `prefix`.
    prefix: String,
    include: Vec<Regex>,
    exclude: Vec<Regex>,
}

impl Scope {
    /// The scope of a crawl; an error names the spec's field that is wrong.
    pub fn new(spec: &CrawlSpec) -> Result<Self, String> {
        let start = normalise(&spec.url, None).ok_or_else(|| format!("url: {:?} is not an http(s) URL", spec.url))?;
        let compile = |field: &str, patterns: &[String]| {
            patterns
                .iter()
                .map(|pattern| Regex::new(pattern).map_err(|err| format!("{field}: {pattern:?}: {err}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let path = start.path();
        let prefix = path[..path.rfind('/').map_or(0, |i| i + 1)].to_owned();
        Ok(Self {
            scope: spec.scope,
            prefix,
            include: compile("include", &spec.include)?,
            exclude: compile("exclude", &spec.exclude)?,
            start,
        })
    }

    pub fn start(&self) -> &Url {
        &self.start
    }

    /// Whether `url` (normalised) is on the start page's origin and, for `prefix`, under its
    /// directory. The filters are not applied (see [`Scope::admits`]).
    pub fn contains(&self, url: &Url) -> bool {
        let same_origin = url.scheme() == self.start.scheme()
            && url.host_str() == self.start.host_str()
            && url.port_or_known_default() == self.start.port_or_known_default();
        same_origin && (self.scope == CrawlScope::Host || url.path().starts_with(&self.prefix))
    }

    /// Whether a link to `url` joins the frontier: in scope, matching an `include` pattern if
    /// any is given, and no `exclude` pattern (patterns see the path and query).
    pub fn admits(&self, url: &Url) -> bool {
        if !self.contains(url) {
            return false;
        }
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        (self.include.is_empty() || self.include.iter().any(|re| re.is_match(&target)))
            && !self.exclude.iter().any(|re| re.is_match(&target))
    }
}

/// `http://host:port` of a URL, the unit of robots.txt and of politeness.
pub fn origin(url: &Url) -> String {
    format!("{}://{}:{}", url.scheme(), url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> Option<String> {
        normalise(text, None).map(String::from)
    }

    #[test]
    fn urls_have_one_spelling() {
        assert_eq!(
            norm("HTTP://Site.Example:80/a/b?z=1&a=2&m=#frag").as_deref(),
            Some("http://site.example/a/b?a=2&m=&z=1")
        );
        assert_eq!(norm("https://site.example:443").as_deref(), Some("https://site.example/"));
        assert_eq!(norm("https://site.example:8443/x?").as_deref(), Some("https://site.example:8443/x"));
        assert_eq!(norm("http://site.example/x?&&").as_deref(), Some("http://site.example/x"));
        assert_eq!(norm("http://site.example/a/./b/../c").as_deref(), Some("http://site.example/a/c"));
        assert_eq!(norm("http://site.example/x?b=1&a=2"), norm("http://site.example/x?a=2&b=1#y"));
        assert_eq!(norm("mailto:a@b.example"), None);
        assert_eq!(norm("javascript:alert(1)"), None);
        assert_eq!(norm("ftp://site.example/a"), None);
        assert_eq!(norm("http://user:pw@site.example/a"), None);
        let base = Url::parse("http://site.example/docs/page.html").unwrap();
        assert_eq!(
            normalise("other.html#x", Some(&base)).map(String::from).as_deref(),
            Some("http://site.example/docs/other.html")
        );
        assert_eq!(normalise("/top", Some(&base)).map(String::from).as_deref(), Some("http://site.example/top"));
        assert_eq!(
            normalise("#only-a-fragment", Some(&base)).map(String::from).as_deref(),
            Some("http://site.example/docs/page.html")
        );
    }

    #[test]
    fn document_ids_are_urls_unless_too_long() {
        let url = Url::parse("http://site.example/a").unwrap();
        assert_eq!(document_id(&url), "http://site.example/a");
        let long = Url::parse(&format!("http://site.example/{}", "a".repeat(300))).unwrap();
        assert!(document_id(&long).starts_with("url:sha256:"));
        assert_eq!(document_id(&long).len(), "url:sha256:".len() + 64);
    }

    fn spec(url: &str, scope: CrawlScope, include: &[&str], exclude: &[&str]) -> CrawlSpec {
        CrawlSpec {
            url: url.into(),
            max_pages: 10,
            max_depth: 2,
            scope,
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            sitemap: true,
        }
    }

    #[test]
    fn scopes_are_the_origin_or_the_directory() {
        let url = |text: &str| Url::parse(text).unwrap();
        let host = Scope::new(&spec("http://site.example:8080/docs/index.html", CrawlScope::Host, &[], &[])).unwrap();
        assert!(host.contains(&url("http://site.example:8080/blog/x")));
        assert!(!host.contains(&url("https://site.example:8080/docs/x")), "another scheme");
        assert!(!host.contains(&url("http://site.example:8081/docs/x")), "another port");
        assert!(!host.contains(&url("http://other.example:8080/docs/x")), "another host");
        let prefix = Scope::new(&spec("http://site.example/docs/index.html", CrawlScope::Prefix, &[], &[])).unwrap();
        assert!(prefix.contains(&url("http://site.example/docs/a/b")));
        assert!(prefix.contains(&url("http://site.example/docs/")));
        assert!(!prefix.contains(&url("http://site.example/docs")));
        assert!(!prefix.contains(&url("http://site.example/blog/a")));
    }

    #[test]
    fn include_and_exclude_see_the_path_and_query() {
        let url = |text: &str| Url::parse(text).unwrap();
        let scope = Scope::new(&spec(
            "http://s.example/",
            CrawlScope::Host,
            &["^/docs/", "page=\\d+"],
            &["\\.pdf$", "^/docs/private"],
        ))
        .unwrap();
        assert!(scope.admits(&url("http://s.example/docs/a")));
        assert!(scope.admits(&url("http://s.example/list?page=2")));
        assert!(!scope.admits(&url("http://s.example/blog/a")));
        assert!(!scope.admits(&url("http://s.example/docs/a.pdf")));
        assert!(!scope.admits(&url("http://s.example/docs/private/x")));
        assert!(!scope.admits(&url("http://other.example/docs/a")));
        let err = Scope::new(&spec("http://s.example/", CrawlScope::Host, &["("], &[])).unwrap_err();
        assert!(err.starts_with("include: \"(\""), "{err}");
        assert!(Scope::new(&spec("not a url", CrawlScope::Host, &[], &[])).is_err());
    }

    #[test]
    fn origins_name_scheme_host_and_port() {
        assert_eq!(origin(&Url::parse("http://a.example/x").unwrap()), "http://a.example:80");
        assert_eq!(origin(&Url::parse("https://A.example:8443/").unwrap()), "https://a.example:8443");
    }
}
