//! Which documents the pipeline takes: the one list of content types, shared by the ingestion
//! API (which refuses others with 415) and the chunking stage (which parses them), and how a
//! type is told when the caller does not say it (file extension, then the bytes' signature).

pub const TEXT: &str = "text/plain";
pub const MARKDOWN: &str = "text/markdown";
pub const HTML: &str = "text/html";
pub const PDF: &str = "application/pdf";
pub const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// Content types the pipeline accepts; extend it when the chunking stage gets a parser.
pub const SUPPORTED_CONTENT_TYPES: &[&str] = &[TEXT, MARKDOWN, HTML, PDF, DOCX];

/// Declared types that say nothing about the content: the bytes decide.
const GENERIC_TYPES: &[&str] = &["application/octet-stream", "binary/octet-stream", "application/unknown"];

/// The media type without parameters, lower-cased (`Text/HTML; charset=utf-8` → `text/html`).
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether a declared type is missing or generic, so that the type must be found otherwise.
pub fn is_generic(content_type: Option<&str>) -> bool {
    content_type.map(media_type).is_none_or(|media| media.is_empty() || GENERIC_TYPES.contains(&media.as_str()))
}

/// The type a file name suggests (`guide.md` → `text/markdown`).
pub fn from_file_name(name: &str) -> Option<&'static str> {
    let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "txt" | "text" => TEXT,
        "md" | "markdown" => MARKDOWN,
        "html" | "htm" | "xhtml" => HTML,
        "pdf" => PDF,
        "docx" => DOCX,
        _ => return None,
    })
}

/// The type the bytes show by their signature: PDF and DOCX by their magic numbers, HTML by its
/// opening tag. `None` when nothing is recognised (plain text has no signature).
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"%PDF-") {
        return Some(PDF);
    }
    // A DOCX is a ZIP whose entries live under `word/`; the names sit in the local headers
    // near the start, so the first 64 KiB tell.
    if bytes.starts_with(b"PK\x03\x04") {
        let head = &bytes[..bytes.len().min(64 * 1024)];
        return head.windows(5).any(|w| w == b"word/").then_some(DOCX);
    }
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let head: Vec<u8> = text[start..text.len().min(start + 64)].to_ascii_lowercase();
    if head.starts_with(b"<!doctype html") || head.starts_with(b"<html") {
        return Some(HTML);
    }
    None
}

/// The type to parse a document with: the declared type unless it is missing or generic, else
/// the file name's, else the bytes' signature, else plain text when the bytes are UTF-8.
/// `None` when nothing fits (binary of an unknown kind).
pub fn resolve(declared: Option<&str>, file_name: Option<&str>, bytes: &[u8]) -> Option<String> {
    if !is_generic(declared) {
        return declared.map(media_type);
    }
    if let Some(found) = file_name.and_then(from_file_name).or_else(|| sniff(bytes)) {
        return Some(found.to_owned());
    }
    std::str::from_utf8(bytes).is_ok().then(|| TEXT.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_case_are_dropped() {
        assert_eq!(media_type(" Text/HTML; charset=utf-8"), "text/html");
        assert_eq!(media_type("text/plain"), "text/plain");
    }

    #[test]
    fn signatures_are_recognised() {
        assert_eq!(sniff(b"%PDF-1.7\n..."), Some(PDF));
        assert_eq!(sniff(b"PK\x03\x04....[Content_Types].xml....word/document.xml"), Some(DOCX));
        assert_eq!(sniff(b"PK\x03\x04 some other zip"), None);
        assert_eq!(sniff(b"\xEF\xBB\xBF  \n<!DOCTYPE html><html>"), Some(HTML));
        assert_eq!(sniff(b"<HTML lang=en>"), Some(HTML));
        assert_eq!(sniff(b"# A heading"), None);
    }

    #[test]
    fn declared_types_win_unless_generic() {
        assert_eq!(resolve(Some("text/markdown; charset=utf-8"), Some("a.pdf"), b"%PDF-"), Some(MARKDOWN.into()));
        assert_eq!(resolve(Some("application/octet-stream"), None, b"%PDF-1.4"), Some(PDF.into()));
        assert_eq!(resolve(None, Some("Guide.MD"), b"plain words"), Some(MARKDOWN.into()));
        assert_eq!(resolve(None, None, b"plain words"), Some(TEXT.into()));
        assert_eq!(resolve(None, None, &[0xff, 0x00, 0x12]), None);
    }
}
