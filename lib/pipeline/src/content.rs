//! Which documents the pipeline takes: the one list of content types, shared by the ingestion
//! API (which refuses others with 415) and the chunking stage (which parses them).

/// Content types the pipeline accepts; extend it when the chunking stage gets a parser.
pub const SUPPORTED_CONTENT_TYPES: &[&str] = &["text/plain", "text/markdown", "text/html"];

/// The media type without parameters, lower-cased (`Text/HTML; charset=utf-8` → `text/html`).
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_case_are_dropped() {
        assert_eq!(media_type(" Text/HTML; charset=utf-8"), "text/html");
        assert_eq!(media_type("text/plain"), "text/plain");
    }
}
