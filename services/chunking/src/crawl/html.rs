//! The links of an HTML page and its `rel=canonical`, read by html5ever's tokenizer alone (no
//! tree): one linear pass, so a hostile page cannot make it slow the way deep nesting makes
//! the tree builder slow (see `parse::html`). Script and style contents are skipped as raw
//! text, so links written inside them are not followed.

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};

/// Links read from one page at most.
pub const MAX_LINKS: usize = 5_000;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PageLinks {
    /// `href`s of `<a>` and `<area>`, as written, in order (`rel=nofollow` ones left out).
    pub links: Vec<String>,
    /// `<link rel=canonical href>`, as written.
    pub canonical: Option<String>,
    /// `<base href>`, as written: what relative links are relative to.
    pub base: Option<String>,
    /// `<meta name=robots content=nofollow>`: the page asks that its links not be followed.
    pub nofollow: bool,
}

#[derive(Default)]
struct Sink {
    found: RefCell<PageLinks>,
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let Token::TagToken(tag) = token else { return TokenSinkResult::Continue };
        if tag.kind != TagKind::StartTag {
            return TokenSinkResult::Continue;
        }
        let attr = |name: &str| tag.attrs.iter().find(|a| a.name.local.as_ref() == name).map(|a| a.value.to_string());
        let has_word = |value: Option<String>, word: &str| {
            value.is_some_and(|v| v.split_ascii_whitespace().any(|w| w.eq_ignore_ascii_case(word)))
        };
        let mut found = self.found.borrow_mut();
        match tag.name.as_ref() {
            "a" | "area" => {
                if let Some(href) = attr("href")
                    && !has_word(attr("rel"), "nofollow")
                    && found.links.len() < MAX_LINKS
                {
                    found.links.push(href);
                }
            }
            "link" if has_word(attr("rel"), "canonical") && found.canonical.is_none() => {
                found.canonical = attr("href");
            }
            "base" if found.base.is_none() => found.base = attr("href"),
            "meta" if attr("name").is_some_and(|n| n.eq_ignore_ascii_case("robots")) => {
                let content = attr("content").unwrap_or_default();
                if content.split(',').any(|w| matches!(w.trim().to_ascii_lowercase().as_str(), "nofollow" | "none")) {
                    found.nofollow = true;
                }
            }
            "script" => return TokenSinkResult::RawData(RawKind::ScriptData),
            "style" | "xmp" | "iframe" | "noembed" | "noframes" => return TokenSinkResult::RawData(RawKind::Rawtext),
            "textarea" | "title" => return TokenSinkResult::RawData(RawKind::Rcdata),
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

/// The links of `html` (decoded text).
pub fn links(html: &str) -> PageLinks {
    let tokenizer = Tokenizer::new(Sink::default(), TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.found.take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_canonical_and_base_are_read() {
        let html = r#"<!doctype html><html><head><title>a <a href="/not-a-link"></title>
<base href="/docs/"><link rel="Canonical" href="http://s.example/canonical">
<script>document.write('<a href="/in-script">')</script><style>a{}</style></head>
<body><a href="one.html">1</a><A HREF='/two?b=1&amp;a=2'>2</A><a>no href</a>
<a href="/ads" rel="sponsored nofollow">ad</a><map><area href="/area"></map>
<textarea><a href="/in-textarea"></textarea></body></html>"#;
        let found = links(html);
        assert_eq!(found.links, ["one.html", "/two?b=1&a=2", "/area"]);
        assert_eq!(found.canonical.as_deref(), Some("http://s.example/canonical"));
        assert_eq!(found.base.as_deref(), Some("/docs/"));
        assert!(!found.nofollow);
    }

    #[test]
    fn meta_robots_nofollow_is_seen() {
        assert!(links(r#"<meta name="ROBOTS" content="noindex, nofollow"><a href="/x">"#).nofollow);
        assert!(links(r#"<meta name="robots" content="none">"#).nofollow);
        assert!(!links(r#"<meta name="description" content="nofollow">"#).nofollow);
    }

    #[test]
    fn deep_or_broken_markup_is_read_in_one_pass() {
        let deep = format!("{}<a href=\"/deep\">{}", "<div>".repeat(50_000), "</div>".repeat(10));
        let started = std::time::Instant::now();
        assert_eq!(links(&deep).links, ["/deep"]);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(links("<a href=\"/x").links, Vec::<String>::new());
        assert_eq!(links("").links, Vec::<String>::new());
    }
}
