//! Turns what a caller sent (over HTTP or gRPC) into a document the pipeline can take, or into
//! the one error that tells the caller what to fix. Pure functions, so every rule is unit-tested
//! without Redis.

use base64::Engine as _;
use millrace_common::{ApiError, ErrorCode};
use sha2::{Digest, Sha256};

/// Content types the pipeline can parse: the one list, in `millrace_pipeline::content`, to
/// extend when a parser is added (PDF and DOCX come with the content issue).
pub use millrace_pipeline::content::SUPPORTED_CONTENT_TYPES;

pub const DEFAULT_CONTENT_TYPE: &str = "text/plain";

/// Longest accepted `document_id`, in characters.
pub const MAX_DOCUMENT_ID_CHARS: usize = 256;

/// Longest accepted `source`, in characters.
pub const MAX_SOURCE_CHARS: usize = 2048;

/// Largest accepted caller metadata, serialised; it is copied into every chunk.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Longest accepted search query, in characters.
pub const MAX_QUERY_CHARS: usize = 8192;

pub const DEFAULT_TOP_K: u32 = 10;
pub const MAX_TOP_K: u32 = 100;

pub const DEFAULT_LIST_LIMIT: usize = 50;
pub const MAX_LIST_LIMIT: usize = 1000;

/// How the document's bytes arrived.
#[derive(Debug, Clone)]
pub enum Payload {
    /// `content`: text, already UTF-8.
    Text(String),
    /// `content_base64`: bytes, encoded.
    Base64(String),
    /// Raw bytes (gRPC).
    Bytes(Vec<u8>),
}

/// A submission as received, before validation.
#[derive(Debug, Clone)]
pub struct Submission {
    pub document_id: Option<String>,
    pub payload: Payload,
    pub content_type: Option<String>,
    pub source: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

impl Submission {
    /// Picks the payload from the two JSON fields, of which exactly one must be present.
    pub fn payload_from_fields(content: Option<String>, content_base64: Option<String>) -> Result<Payload, ApiError> {
        match (content, content_base64) {
            (Some(text), None) => Ok(Payload::Text(text)),
            (None, Some(encoded)) => Ok(Payload::Base64(encoded)),
            (None, None) => Err(ApiError::invalid("one of `content` or `content_base64` is required")),
            (Some(_), Some(_)) => {
                Err(ApiError::invalid("`content` and `content_base64` are mutually exclusive: send only one"))
            }
        }
    }
}

/// A submission that passed every check.
#[derive(Debug, Clone)]
pub struct ValidDocument {
    pub document_id: String,
    pub content: Vec<u8>,
    /// Normalised: lower case, without parameters.
    pub content_type: String,
    pub source: String,
    /// Always a JSON object.
    pub metadata: serde_json::Value,
    /// Hex SHA-256 of `content`.
    pub content_hash: String,
}

/// Checks a submission. `max_bytes` bounds the decoded content.
pub fn validate_submission(submission: Submission, max_bytes: usize) -> Result<ValidDocument, ApiError> {
    let content_type = normalise_content_type(submission.content_type.as_deref())?;
    let content = match submission.payload {
        Payload::Text(text) => text.into_bytes(),
        Payload::Base64(encoded) => {
            // Line-wrapped (MIME-style) base64 is common: whitespace is not data.
            let compact: String = if encoded.bytes().any(|b| b.is_ascii_whitespace()) {
                encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect()
            } else {
                encoded
            };
            // Decoded size is at most 3/4 of the encoded size: refuse before decoding a huge value.
            if compact.len() / 4 * 3 > max_bytes.saturating_add(3) {
                return Err(too_large(max_bytes));
            }
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|err| ApiError::invalid(format!("`content_base64` is not valid base64: {err}")))?
        }
        Payload::Bytes(bytes) => bytes,
    };
    if content.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    if is_text(&content_type) {
        let text = std::str::from_utf8(&content).map_err(|err| {
            ApiError::invalid(format!("content declared as {content_type} is not valid UTF-8: {err}"))
        })?;
        if text.trim().is_empty() {
            return Err(ApiError::invalid("content is empty or only whitespace"));
        }
    } else if content.is_empty() {
        return Err(ApiError::invalid("content is empty"));
    }
    let content_hash = hex::encode(Sha256::digest(&content));
    let document_id = match submission.document_id {
        Some(id) => {
            validate_document_id(&id)?;
            id
        }
        None => derived_document_id(&content_hash),
    };
    let source = submission.source.unwrap_or_default();
    if source.chars().count() > MAX_SOURCE_CHARS {
        return Err(ApiError::invalid(format!("`source` is longer than {MAX_SOURCE_CHARS} characters")));
    }
    let metadata = validate_metadata(submission.metadata, "metadata")?;
    Ok(ValidDocument { document_id, content, content_type, source, metadata, content_hash })
}

fn too_large(max_bytes: usize) -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, format!("content is larger than {max_bytes} bytes"))
}

/// The id of a document submitted without one: `sha256:` and the full hex digest of its
/// content, so submitting the same bytes again makes a new version of the same document
/// rather than a duplicate, and two different documents never share an id.
pub fn derived_document_id(content_hash: &str) -> String {
    format!("sha256:{content_hash}")
}

/// `text/Markdown; charset=utf-8` → `text/markdown`; 415 if not supported.
pub fn normalise_content_type(declared: Option<&str>) -> Result<String, ApiError> {
    let declared = declared.map(str::trim).filter(|d| !d.is_empty()).unwrap_or(DEFAULT_CONTENT_TYPE);
    let essence = millrace_pipeline::content::media_type(declared);
    if SUPPORTED_CONTENT_TYPES.contains(&essence.as_str()) {
        Ok(essence)
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("content_type {declared:?} is not supported; use one of {}", SUPPORTED_CONTENT_TYPES.join(", ")),
        ))
    }
}

/// Text types must be UTF-8; other types are bytes.
pub fn is_text(content_type: &str) -> bool {
    content_type.starts_with("text/")
}

pub fn validate_document_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::invalid("`document_id` must not be empty"));
    }
    if id.chars().count() > MAX_DOCUMENT_ID_CHARS {
        return Err(ApiError::invalid(format!("`document_id` is longer than {MAX_DOCUMENT_ID_CHARS} characters")));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::invalid("`document_id` must not contain control characters"));
    }
    Ok(())
}

/// Absent or null → `{}`; otherwise it must be an object of bounded size.
pub fn validate_metadata(metadata: Option<serde_json::Value>, field: &str) -> Result<serde_json::Value, ApiError> {
    match metadata {
        None | Some(serde_json::Value::Null) => Ok(serde_json::json!({})),
        Some(value @ serde_json::Value::Object(_)) => {
            if value.to_string().len() > MAX_METADATA_BYTES {
                return Err(ApiError::invalid(format!("`{field}` is larger than {MAX_METADATA_BYTES} bytes")));
            }
            Ok(value)
        }
        Some(_) => Err(ApiError::invalid(format!("`{field}` must be a JSON object"))),
    }
}

/// A metadata object sent over gRPC as JSON text; empty means none.
pub fn metadata_from_json(text: &str, field: &str) -> Result<serde_json::Value, ApiError> {
    if text.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    let value = serde_json::from_str(text).map_err(|err| ApiError::invalid(format!("`{field}` is not JSON: {err}")))?;
    validate_metadata(Some(value), field)
}

/// A search request as received.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub query: String,
    pub top_k: Option<i64>,
    pub document_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// A search request that passed every check.
#[derive(Debug, Clone)]
pub struct ValidSearch {
    pub query: String,
    pub top_k: u32,
    pub document_id: Option<String>,
    /// An object of equalities, or `{}`.
    pub metadata: serde_json::Value,
}

pub fn validate_search(search: SearchQuery) -> Result<ValidSearch, ApiError> {
    if search.query.trim().is_empty() {
        return Err(ApiError::invalid("`query` must not be empty"));
    }
    if search.query.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::invalid(format!("`query` is longer than {MAX_QUERY_CHARS} characters")));
    }
    let top_k = match search.top_k {
        None => DEFAULT_TOP_K,
        Some(k) if (1..=i64::from(MAX_TOP_K)).contains(&k) => k as u32,
        Some(k) => return Err(ApiError::invalid(format!("`top_k` must be between 1 and {MAX_TOP_K}, not {k}"))),
    };
    if let Some(id) = &search.document_id {
        validate_document_id(id).map_err(|err| ApiError::invalid(format!("filter: {}", err.message)))?;
    }
    let metadata = validate_metadata(search.metadata, "filter.metadata")?;
    Ok(ValidSearch { query: search.query, top_k, document_id: search.document_id, metadata })
}

/// `limit` of a job listing: default 50, 1 to 1000.
pub fn list_limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(l) if l >= 1 && l <= MAX_LIST_LIMIT as i64 => Ok(l as usize),
        Some(l) => Err(ApiError::invalid(format!("`limit` must be between 1 and {MAX_LIST_LIMIT}, not {l}"))),
    }
}

/// Seconds a rejected caller should wait: the jobs over the bound divided by the recent
/// completion rate, within 1 to 300 s; 30 s when nothing finished recently.
pub fn retry_after_secs(active: u64, max_queued: u64, finished_last_minute: u64) -> u64 {
    if finished_last_minute == 0 {
        return 30;
    }
    let excess = active.saturating_sub(max_queued).saturating_add(1);
    // excess / (finished / 60 s), rounded up.
    let secs = (excess.saturating_mul(60)).div_ceil(finished_last_minute);
    secs.clamp(1, 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(content: &str) -> Submission {
        Submission {
            document_id: None,
            payload: Payload::Text(content.to_owned()),
            content_type: None,
            source: None,
            metadata: None,
        }
    }

    fn code(result: Result<ValidDocument, ApiError>) -> ErrorCode {
        result.unwrap_err().code
    }

    #[test]
    fn text_defaults_to_plain_and_derives_its_id_from_the_hash() {
        let doc = validate_submission(text("hello"), 100).unwrap();
        assert_eq!(doc.content_type, "text/plain");
        assert_eq!(doc.content_hash, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(doc.document_id, format!("sha256:{}", doc.content_hash));
        assert_eq!(doc.metadata, serde_json::json!({}));
    }

    #[test]
    fn content_type_ignores_case_and_parameters() {
        assert_eq!(normalise_content_type(Some("Text/Markdown; charset=UTF-8")).unwrap(), "text/markdown");
        assert_eq!(normalise_content_type(Some("")).unwrap(), "text/plain");
        assert_eq!(normalise_content_type(Some("application/pdf")).unwrap_err().code, ErrorCode::UnsupportedMediaType);
    }

    #[test]
    fn payload_needs_exactly_one_field() {
        let neither = Submission::payload_from_fields(None, None).unwrap_err();
        assert!(neither.message.contains("content") && neither.message.contains("content_base64"));
        let both = Submission::payload_from_fields(Some("a".into()), Some("YQ==".into())).unwrap_err();
        assert_eq!(both.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn base64_is_decoded_and_checked() {
        let mut sub = text("");
        sub.payload = Payload::Base64(base64::engine::general_purpose::STANDARD.encode("héllo"));
        assert_eq!(validate_submission(sub.clone(), 100).unwrap().content, "héllo".as_bytes());
        sub.payload = Payload::Base64("aMOp\nbGxv\n".into());
        assert_eq!(validate_submission(sub.clone(), 100).unwrap().content, "héllo".as_bytes(), "wrapped base64");
        sub.payload = Payload::Base64("not base64!".into());
        assert_eq!(code(validate_submission(sub.clone(), 100)), ErrorCode::InvalidArgument);
        sub.payload = Payload::Base64(base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, 0x00]));
        let err = validate_submission(sub, 100).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("UTF-8"));
    }

    #[test]
    fn size_is_bounded_after_decoding() {
        assert!(validate_submission(text(&"a".repeat(100)), 100).is_ok());
        assert_eq!(code(validate_submission(text(&"a".repeat(101)), 100)), ErrorCode::PayloadTooLarge);
        let mut sub = text("");
        sub.payload = Payload::Base64(base64::engine::general_purpose::STANDARD.encode("a".repeat(1000)));
        assert_eq!(code(validate_submission(sub, 100)), ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn blank_content_is_rejected() {
        assert_eq!(code(validate_submission(text(" \n\t "), 100)), ErrorCode::InvalidArgument);
    }

    #[test]
    fn document_id_rules() {
        assert!(validate_document_id("a/b c:ü").is_ok());
        assert!(validate_document_id("").is_err());
        assert!(validate_document_id(&"x".repeat(257)).is_err());
        assert!(validate_document_id(&"ü".repeat(256)).is_ok());
        assert!(validate_document_id("a\nb").is_err());
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert_eq!(
            validate_metadata(Some(serde_json::json!([1])), "metadata").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(validate_metadata(Some(serde_json::Value::Null), "metadata").unwrap(), serde_json::json!({}));
        assert_eq!(metadata_from_json("", "m").unwrap(), serde_json::json!({}));
        assert!(metadata_from_json("{\"a\":1}", "m").is_ok());
        assert!(metadata_from_json("{", "m").is_err());
        assert!(metadata_from_json("3", "m").is_err());
    }

    #[test]
    fn search_rules() {
        let ok = |top_k| validate_search(SearchQuery { query: "q".into(), top_k, ..Default::default() });
        assert_eq!(ok(None).unwrap().top_k, 10);
        assert_eq!(ok(Some(100)).unwrap().top_k, 100);
        assert!(ok(Some(0)).is_err());
        assert!(ok(Some(101)).is_err());
        assert!(ok(Some(-1)).is_err());
        assert!(validate_search(SearchQuery { query: "  ".into(), ..Default::default() }).is_err());
        assert!(validate_search(SearchQuery { query: "a".repeat(8193), ..Default::default() }).is_err());
    }

    #[test]
    fn list_limit_rules() {
        assert_eq!(list_limit(None).unwrap(), 50);
        assert_eq!(list_limit(Some(1000)).unwrap(), 1000);
        assert!(list_limit(Some(0)).is_err());
        assert!(list_limit(Some(1001)).is_err());
    }

    #[test]
    fn retry_after_follows_throughput() {
        assert_eq!(retry_after_secs(10, 10, 0), 30);
        // 1 job over the bound, 60 finished per minute: 1 s.
        assert_eq!(retry_after_secs(10, 10, 60), 1);
        // 11 jobs to wait for at 6 per minute: 110 s.
        assert_eq!(retry_after_secs(20, 10, 6), 110);
        assert_eq!(retry_after_secs(10_000, 10, 1), 300);
    }
}
