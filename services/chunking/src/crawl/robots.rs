//! robots.txt (RFC 9309): the group for our user agent (its product token, else `*`), and
//! whether a path may be fetched under it: the longest matching `allow`/`disallow` pattern
//! wins, `allow` on a tie; `*` matches any run of characters and a final `$` anchors the end.
//! `Sitemap:` lines are collected whatever the group.
//!
//! Written here (about a hundred lines) rather than taken from `texting_robots`, which would
//! bring in old major versions of bstr, nom and thiserror for the same rules.

/// Bytes of a robots.txt read at most (RFC 9309 asks for at least 500 KiB).
pub const MAX_ROBOTS_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Robots {
    /// (pattern, allow), of the group that applies to us.
    rules: Vec<(String, bool)>,
    /// Everything is disallowed (robots.txt could not be fetched: a 5xx or no answer).
    disallow_all: bool,
    pub sitemaps: Vec<String>,
}

impl Robots {
    /// No robots.txt (a 4xx): everything is allowed.
    pub fn allow_all() -> Self {
        Self { rules: Vec::new(), disallow_all: false, sitemaps: Vec::new() }
    }

    /// robots.txt unreachable (a 5xx, a network error): nothing may be fetched.
    pub fn disallow_all() -> Self {
        Self { rules: Vec::new(), disallow_all: true, sitemaps: Vec::new() }
    }

    /// The rules of `text` for `user_agent` (a `User-Agent` header value: its product token,
    /// the name before any `/`, is matched case-insensitively against the groups' names).
    pub fn parse(text: &str, user_agent: &str) -> Self {
        let token: String = user_agent
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect::<String>()
            .to_ascii_lowercase();
        let mut sitemaps = Vec::new();
        // Rules of the groups naming us, and of the `*` groups.
        let (mut ours, mut any) = (Vec::new(), Vec::new());
        let mut named_us = false;
        // The current group's agents are still being read (no rule since the last agent line).
        let mut in_agents = false;
        let (mut group_is_ours, mut group_is_any) = (false, false);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let Some((key, value)) = line.split_once(':') else { continue };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            match key.as_str() {
                "user-agent" => {
                    if !in_agents {
                        (group_is_ours, group_is_any) = (false, false);
                        in_agents = true;
                    }
                    let agent = value.to_ascii_lowercase();
                    if agent == "*" {
                        group_is_any = true;
                    } else if !token.is_empty() && agent == token {
                        group_is_ours = true;
                        named_us = true;
                    }
                }
                "allow" | "disallow" => {
                    in_agents = false;
                    // An empty disallow allows everything: no rule.
                    if value.is_empty() {
                        continue;
                    }
                    let rule = (value.to_owned(), key == "allow");
                    if group_is_ours {
                        ours.push(rule.clone());
                    }
                    if group_is_any {
                        any.push(rule);
                    }
                }
                "sitemap" => {
                    if !value.is_empty() {
                        sitemaps.push(value.to_owned());
                    }
                }
                _ => in_agents = false,
            }
        }
        Self { rules: if named_us { ours } else { any }, disallow_all: false, sitemaps }
    }

    /// Whether `path` (path and query, as in the URL) may be fetched.
    pub fn allows(&self, path: &str) -> bool {
        if path == "/robots.txt" {
            return true;
        }
        if self.disallow_all {
            return false;
        }
        let mut best: Option<(usize, bool)> = None;
        for (pattern, allow) in &self.rules {
            if matches(pattern, path) {
                let length = pattern.len();
                best = match best {
                    Some((best_length, best_allow))
                        if best_length > length || (best_length == length && (best_allow || !allow)) =>
                    {
                        Some((best_length, best_allow))
                    }
                    _ => Some((length, *allow)),
                };
            }
        }
        best.is_none_or(|(_, allow)| allow)
    }
}

/// Whether `pattern` (with `*` and a final `$`) matches the start of `path`.
fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, anchored) = match pattern.strip_suffix('$') {
        Some(stripped) => (stripped, true),
        None => (pattern, false),
    };
    let parts: Vec<&str> = pattern.split('*').collect();
    let Some(first) = parts.first() else { return true };
    if !path.starts_with(first) {
        return false;
    }
    let mut at = first.len();
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate().skip(1) {
        if i == last && anchored {
            // The last piece must end the path, after `at`.
            return path.len() >= at + part.len() && path.ends_with(part);
        }
        match path[at..].find(part) {
            Some(found) => at += found + part.len(),
            None => return false,
        }
    }
    !anchored || at == path.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "MillraceBot/1.0 (+https://millrace.example/bot)";

    #[test]
    fn our_group_wins_over_the_star_group() {
        let text = "User-agent: *\nDisallow: /\n\nUser-agent: millracebot\nUser-agent: other\nDisallow: /private/\nAllow: /private/open\n# comment\nSitemap: http://s.example/sitemap.xml\n";
        let robots = Robots::parse(text, AGENT);
        assert!(robots.allows("/"));
        assert!(robots.allows("/docs/a"));
        assert!(!robots.allows("/private/x"));
        assert!(robots.allows("/private/open/x"));
        assert_eq!(robots.sitemaps, ["http://s.example/sitemap.xml"]);
        let other = Robots::parse(text, "SomeoneElse/2.0");
        assert!(!other.allows("/docs/a"));
        assert!(other.allows("/robots.txt"));
    }

    #[test]
    fn the_longest_match_wins_and_allow_wins_ties() {
        let robots = Robots::parse(
            "User-agent: *\nDisallow: /a\nAllow: /a/b\nDisallow: /a/b/c\nAllow: /x\nDisallow: /x\nDisallow:\n",
            AGENT,
        );
        assert!(!robots.allows("/a"));
        assert!(robots.allows("/a/b"));
        assert!(!robots.allows("/a/b/c/d"));
        assert!(robots.allows("/x"), "allow wins a tie");
        assert!(robots.allows("/elsewhere"));
    }

    #[test]
    fn wildcards_and_anchors() {
        let robots =
            Robots::parse("user-agent: *\ndisallow: /*.pdf$\ndisallow: /search*q=\ndisallow: /exact$\n", AGENT);
        assert!(!robots.allows("/docs/a.pdf"));
        assert!(robots.allows("/docs/a.pdf?x=1"));
        assert!(robots.allows("/docs/a.pdfx"));
        assert!(!robots.allows("/search?q=1"));
        assert!(!robots.allows("/search/more?a=1&q=2"));
        assert!(robots.allows("/search?a=1"));
        assert!(!robots.allows("/exact"));
        assert!(robots.allows("/exact/more"));
        assert!(matches("/", "/anything"));
        assert!(matches("/a*", "/a"));
        assert!(!matches("/a*b$", "/ab/c"));
        assert!(matches("/a*b$", "/a/c/b"));
    }

    #[test]
    fn no_group_for_anyone_allows_everything_and_unreachable_disallows_all() {
        assert!(Robots::parse("User-agent: someone\nDisallow: /\n", AGENT).allows("/a"));
        assert!(Robots::parse("", AGENT).allows("/a"));
        assert!(Robots::parse("garbage\n\0\u{feff}", AGENT).allows("/a"));
        assert!(Robots::allow_all().allows("/a"));
        assert!(!Robots::disallow_all().allows("/a"));
    }
}
