//! Turns a document's bytes into text worth searching, by content type: plain text and
//! Markdown as they are, HTML as Markdown of its main content (no navigation, scripts or
//! styles), PDF as text page by page, DOCX as Markdown of its paragraphs, headings, lists and
//! tables. One file per format; this module picks the parser and enforces the limits.
//!
//! Every input is untrusted. Each parser fails with a reason a caller can act on (encrypted,
//! scanned, corrupt, not UTF-8, a zip bomb…), sizes are capped before and after extraction,
//! and a panic inside a third-party parser becomes an error instead of killing the worker.

mod docx;
mod html;
pub(crate) mod outline;
mod pdf;
mod text;

use std::panic::{AssertUnwindSafe, catch_unwind};

use millrace_pipeline::content;

/// A document as text, ready for the splitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDocument {
    pub text: String,
    /// The text carries Markdown structure (headings, lists, code) the splitter should follow.
    pub markdown: bool,
    /// Byte offset in `text` where each page begins, in order; empty if the format has no pages.
    pub page_starts: Vec<usize>,
    /// The document's title, from its markup or first heading.
    pub title: Option<String>,
}

/// Size limits on one parse; each names the variable that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest document accepted (`MILLRACE_MAX_PARSE_BYTES`).
    pub max_input_bytes: usize,
    /// Largest extracted text (`MILLRACE_MAX_TEXT_BYTES`).
    pub max_text_bytes: usize,
    /// Most bytes decompressed from a DOCX's entries or a PDF's streams
    /// (`MILLRACE_MAX_UNZIPPED_BYTES`): the guard against zip bombs.
    pub max_unzipped_bytes: u64,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self { max_input_bytes: 64 << 20, max_text_bytes: 32 << 20, max_unzipped_bytes: 256 << 20 }
    }
}

/// Why a document could not be parsed. The message is the job's failure reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unsupported content type {0:?}")]
    Unsupported(String),
    #[error("the content type is generic and the bytes are not a format millrace reads")]
    Unrecognised,
    #[error("the document is {size} bytes, more than the {limit} MILLRACE_MAX_PARSE_BYTES allows")]
    TooLarge { size: usize, limit: usize },
    #[error("the extracted text is more than the {limit} bytes MILLRACE_MAX_TEXT_BYTES allows")]
    TextTooLarge { limit: usize },
    #[error("the {format} decompresses to more than {limit} bytes (MILLRACE_MAX_UNZIPPED_BYTES); a zip bomb?")]
    DecompressionBomb { format: &'static str, limit: u64 },
    #[error("the document is not valid UTF-8: {0}")]
    InvalidUtf8(String),
    #[error("the document looks binary, not text ({0}); send it with its real content type")]
    Binary(&'static str),
    #[error("the HTML is nested more than {0} elements deep")]
    HtmlTooDeep(usize),
    #[error("the PDF is encrypted")]
    PdfEncrypted,
    #[error("the PDF has no extractable text (scanned or image-only?)")]
    PdfNoText,
    #[error("the PDF is corrupt: {0}")]
    PdfCorrupt(String),
    #[error("the DOCX is invalid: {0}")]
    DocxInvalid(String),
    /// An allocation the parser could recover from failed (the parse child's address-space
    /// limit); the child reports it as the memory limit.
    #[error("the parser ran out of memory")]
    OutOfMemory,
    #[error("the {0} parser crashed: {1}")]
    Crashed(&'static str, String),
}

/// Parses `bytes` as `content_type` (as the ingestion service normalised it). A generic type
/// (`application/octet-stream`) is resolved from the bytes' signature.
pub fn parse_document(content_type: &str, bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument, ParseError> {
    if bytes.len() > limits.max_input_bytes {
        return Err(ParseError::TooLarge { size: bytes.len(), limit: limits.max_input_bytes });
    }
    let media = content::resolve(Some(content_type), None, bytes).ok_or(ParseError::Unrecognised)?;
    let parser: fn(&[u8], &ParseLimits) -> Result<ParsedDocument, ParseError> = match media.as_str() {
        content::TEXT => |bytes, _| text::plain(bytes),
        content::MARKDOWN => |bytes, _| text::markdown(bytes),
        content::HTML => |bytes, _| html::parse(bytes),
        content::PDF => pdf::parse,
        content::DOCX => docx::parse,
        _ => return Err(ParseError::Unsupported(media)),
    };
    // The PDF parser catches its library's panics itself (and calls them corruption); this is
    // the net for the others, so that no input can take the worker down with it.
    let doc = catch_unwind(AssertUnwindSafe(|| parser(bytes, limits)))
        .map_err(|panic| ParseError::Crashed(format_name(&media), panic_message(panic.as_ref())))??;
    if doc.text.len() > limits.max_text_bytes {
        return Err(ParseError::TextTooLarge { limit: limits.max_text_bytes });
    }
    Ok(doc)
}

fn format_name(media: &str) -> &'static str {
    match media {
        content::MARKDOWN => "Markdown",
        content::HTML => "HTML",
        content::PDF => "PDF",
        content::DOCX => "DOCX",
        _ => "text",
    }
}

/// The message a panic carried (`panic!` payloads are `&str` or `String`).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_pick_their_parser_and_generic_types_are_sniffed() {
        let limits = ParseLimits::default();
        let doc = parse_document("text/markdown; charset=utf-8", b"# Hi\n\nthere", &limits).unwrap();
        assert!(doc.markdown);
        let doc = parse_document("application/octet-stream", b"<!doctype html><h1>Hi</h1>", &limits).unwrap();
        assert_eq!(doc.text, "# Hi");
        let doc = parse_document("application/octet-stream", b"just words", &limits).unwrap();
        assert!(!doc.markdown);
        assert_eq!(
            parse_document("application/octet-stream", &[0xff, 0x00, 0x12], &limits),
            Err(ParseError::Unrecognised)
        );
        assert_eq!(parse_document("image/png", b"x", &limits), Err(ParseError::Unsupported("image/png".into())));
    }

    #[test]
    fn size_limits_apply_to_input_and_to_extracted_text() {
        let limits = ParseLimits { max_input_bytes: 10, ..ParseLimits::default() };
        assert_eq!(
            parse_document("text/plain", b"eleven byte", &limits),
            Err(ParseError::TooLarge { size: 11, limit: 10 })
        );
        let limits = ParseLimits { max_text_bytes: 4, ..ParseLimits::default() };
        assert_eq!(
            parse_document("text/html", b"<p>hello there</p>", &limits),
            Err(ParseError::TextTooLarge { limit: 4 })
        );
    }
}
