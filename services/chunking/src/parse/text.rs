//! Plain text and Markdown: the bytes are the text, once we know they are UTF-8 and not a
//! binary file sent with a text type (which would otherwise be indexed as garbage).

use millrace_pipeline::content;

use super::{ParseError, ParsedDocument, outline};

/// How much of the text is sampled for control characters.
const SAMPLE_CHARS: usize = 64 * 1024;

pub(super) fn plain(bytes: &[u8]) -> Result<ParsedDocument, ParseError> {
    let text = decode(bytes)?;
    Ok(ParsedDocument { text: text.to_owned(), markdown: false, page_starts: Vec::new(), title: None })
}

pub(super) fn markdown(bytes: &[u8]) -> Result<ParsedDocument, ParseError> {
    let text = decode(bytes)?;
    let title = outline::title(text);
    Ok(ParsedDocument { text: text.to_owned(), markdown: true, page_starts: Vec::new(), title })
}

/// The bytes as text: UTF-8 without a byte-order mark, refused if they look binary.
pub(super) fn decode(bytes: &[u8]) -> Result<&str, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match content::sniff(bytes) {
        Some(content::PDF) => return Err(ParseError::Binary("it is a PDF")),
        Some(content::DOCX) => return Err(ParseError::Binary("it is a DOCX")),
        _ => {}
    }
    // NUL never occurs in text and almost always in binary formats: the clearest sign.
    if bytes.contains(&0) {
        return Err(ParseError::Binary("it contains NUL bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|err| ParseError::InvalidUtf8(err.to_string()))?;
    let mut sampled = 0usize;
    let mut control = 0usize;
    for c in text.chars().take(SAMPLE_CHARS) {
        sampled += 1;
        if c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c') {
            control += 1;
        }
    }
    if control * 4 > sampled {
        return Err(ParseError::Binary("most of it is control characters"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_passes_through_without_its_byte_order_mark() {
        let doc = plain("\u{feff}héllo\r\nworld".as_bytes()).unwrap();
        assert_eq!(doc.text, "héllo\r\nworld");
        assert!(!doc.markdown && doc.title.is_none() && doc.page_starts.is_empty());
    }

    #[test]
    fn markdown_is_marked_and_titled() {
        let doc = markdown(b"Intro line\n\n# The Title\n\nBody").unwrap();
        assert!(doc.markdown);
        assert_eq!(doc.title.as_deref(), Some("The Title"));
    }

    #[test]
    fn binary_sent_as_text_is_refused_with_a_reason() {
        assert_eq!(plain(b"GIF89a\x00\x00binary"), Err(ParseError::Binary("it contains NUL bytes")));
        assert_eq!(plain(b"%PDF-1.7\n%\xe2\xe3"), Err(ParseError::Binary("it is a PDF")));
        let controls: Vec<u8> = (1u8..9).cycle().take(200).collect();
        assert_eq!(plain(&controls), Err(ParseError::Binary("most of it is control characters")));
        assert!(matches!(plain(&[0xff, 0xfe, 0x41]), Err(ParseError::InvalidUtf8(_))));
    }
}
