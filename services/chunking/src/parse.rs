//! Turns a document's bytes into text, by content type. Plain text and Markdown pass through;
//! HTML keeps its readable text and drops scripts, styles and navigation.
//! (Richer parsers — PDF, DOCX, structure-aware HTML — come with the content issue.)

use millrace_pipeline::content::media_type;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("unsupported content type {0:?}")]
    Unsupported(String),
    #[error("document is not valid UTF-8: {0}")]
    InvalidUtf8(String),
}

pub fn parse_document(content_type: &str, bytes: &[u8]) -> Result<String, ParseError> {
    let media = media_type(content_type);
    let text = || std::str::from_utf8(bytes).map_err(|err| ParseError::InvalidUtf8(err.to_string()));
    match media.as_str() {
        "text/plain" | "text/markdown" => Ok(text()?.to_owned()),
        "text/html" => Ok(html_to_text(text()?)),
        _ => Err(ParseError::Unsupported(media)),
    }
}

/// Elements whose content is not part of the document's text.
const SKIPPED: &[&str] = &["script", "style", "nav", "header", "footer", "noscript", "template", "svg", "head"];
/// Elements that end a line of text.
const BLOCKS: &[&str] =
    &["p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "pre", "blockquote"];

fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut skip_until: Option<String> = None;
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        if skip_until.is_none() {
            out.push_str(&decode_entities(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = &after[..close];
        rest = &after[close + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match &skip_until {
            Some(skipped) if closing && *skipped == name => skip_until = None,
            Some(_) => {}
            None if !closing && SKIPPED.contains(&name.as_str()) && !tag.ends_with('/') => skip_until = Some(name),
            None if BLOCKS.contains(&name.as_str()) => out.push('\n'),
            None => {}
        }
    }
    if skip_until.is_none() {
        out.push_str(&decode_entities(rest));
    }
    // Collapse runs of blank lines and trailing spaces left by markup.
    let mut text = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines().map(str::trim) {
        if line.is_empty() {
            blank += 1;
            if blank == 1 && !text.is_empty() {
                text.push('\n');
            }
        } else {
            blank = 0;
            text.push_str(line);
            text.push('\n');
        }
    }
    text.trim().to_owned()
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_keeps_text_and_drops_scripts_styles_and_navigation() {
        let html = "<html><head><title>T</title><style>p{}</style></head><body><nav>Home | About</nav>\
                    <h1>Ownership</h1><p>Rust&apos;s rules &amp; you.</p><script>alert(1)</script><p>Second.</p></body></html>";
        let text = parse_document("text/html; charset=utf-8", html.as_bytes()).unwrap();
        assert_eq!(text, "Ownership\n\nRust's rules & you.\n\nSecond.");
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        assert!(matches!(parse_document("text/plain", &[0xff, 0xfe]), Err(ParseError::InvalidUtf8(_))));
    }

    #[test]
    fn unknown_types_are_refused() {
        assert_eq!(parse_document("application/pdf", b"%PDF"), Err(ParseError::Unsupported("application/pdf".into())));
    }
}
