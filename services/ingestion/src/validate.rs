//! Turns what a caller sent (over HTTP or gRPC) into a document the pipeline can take, or into
//! the one error that tells the caller what to fix. Pure functions, so every rule is unit-tested
//! without Redis.

use base64::Engine as _;
use millrace_auth::DEFAULT_COLLECTION;
use millrace_common::{ApiError, ErrorCode};
use millrace_fetch::FetchError;
use millrace_pipeline::JobOptions;
use millrace_pipeline::content::{self, media_type};
use millrace_proto::v1 as proto;
use sha2::{Digest, Sha256};

/// Content types the pipeline can parse: the one list, in `millrace_pipeline::content`, to
/// extend when a parser is added.
pub use millrace_pipeline::content::SUPPORTED_CONTENT_TYPES;

pub const DEFAULT_CONTENT_TYPE: &str = "text/plain";

/// Longest accepted `document_id`, in characters.
pub const MAX_DOCUMENT_ID_CHARS: usize = 256;

/// Longest accepted `source`, in characters.
pub const MAX_SOURCE_CHARS: usize = 2048;

/// Longest accepted `url`, in characters (what browsers and servers commonly accept).
pub const MAX_URL_CHARS: usize = 2048;

/// Largest accepted `chunk_size` option, in the chunking stage's unit: beyond it a chunk is
/// larger than what embedding models take in one piece.
pub const MAX_CHUNK_SIZE: u32 = 8192;

/// Largest accepted caller metadata, serialised; it is copied into every chunk.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Longest accepted search query, in characters.
pub const MAX_QUERY_CHARS: usize = 8192;

pub const DEFAULT_TOP_K: u32 = 10;
pub const MAX_TOP_K: u32 = 100;

/// Most fused results one search may ask the reranker to order (`rerank_candidates`); a
/// `top_k` above it still has all its results reranked.
pub const MAX_RERANK_CANDIDATES: u32 = 50;

pub const DEFAULT_LIST_LIMIT: usize = 50;
pub const MAX_LIST_LIMIT: usize = 1000;

/// How the document arrives.
#[derive(Debug, Clone)]
pub enum Payload {
    /// `content`: text, already UTF-8.
    Text(String),
    /// `content_base64`: bytes, encoded.
    Base64(String),
    /// Raw bytes (gRPC, a multipart file).
    Bytes(Vec<u8>),
    /// `url`: fetched later by the chunking stage.
    Url(String),
}

/// Chunking options as received, before validation. `prefix` is how the caller names them
/// (`options.` in JSON, nothing for gRPC fields), so that an error names the field it sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOptions {
    pub chunk_size: Option<i64>,
    pub chunk_overlap: Option<i64>,
    pub prefix: &'static str,
}

/// A submission as received, before validation.
#[derive(Debug, Clone)]
pub struct Submission {
    pub document_id: Option<String>,
    pub payload: Payload,
    /// As declared; missing or generic (`application/octet-stream`) means "find out".
    pub content_type: Option<String>,
    /// The uploaded file's name (multipart), a hint for the content type.
    pub file_name: Option<String>,
    pub source: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub options: RawOptions,
    /// Missing or empty: `default`.
    pub collection: Option<String>,
}

impl Submission {
    /// Picks the payload from the three JSON fields, of which exactly one must be present.
    pub fn payload_from_fields(
        content: Option<String>,
        content_base64: Option<String>,
        url: Option<String>,
    ) -> Result<Payload, ApiError> {
        match (content, content_base64, url) {
            (Some(text), None, None) => Ok(Payload::Text(text)),
            (None, Some(encoded), None) => Ok(Payload::Base64(encoded)),
            (None, None, Some(url)) => Ok(Payload::Url(url)),
            (None, None, None) => Err(ApiError::invalid("one of `content`, `content_base64` or `url` is required")),
            _ => Err(ApiError::invalid(
                "`content`, `content_base64` and `url` are mutually exclusive: send only one of them",
            )),
        }
    }
}

/// A submission that passed every check (but the URL's address check, which needs a lookup
/// and is done by the caller).
#[derive(Debug, Clone)]
pub struct ValidDocument {
    pub document_id: String,
    /// Empty for a URL submission.
    pub content: Vec<u8>,
    /// Normalised: lower case, without parameters. For a URL submission, as declared (possibly
    /// empty or generic): the chunking stage resolves it from the response.
    pub content_type: String,
    pub source: String,
    /// Always a JSON object.
    pub metadata: serde_json::Value,
    /// Hex SHA-256 of `content`; empty for a URL submission.
    pub content_hash: String,
    /// Normalised (as the URL parser writes it).
    pub url: Option<String>,
    pub options: JobOptions,
    pub collection: String,
}

/// Checks a submission. `max_bytes` bounds the decoded content.
pub fn validate_submission(submission: Submission, max_bytes: usize) -> Result<ValidDocument, ApiError> {
    let declared = declared_content_type(submission.content_type.as_deref())?;
    let (content, content_type, url) = match submission.payload {
        Payload::Url(text) => {
            let url = validate_url(&text)?;
            // Not checked against what the server sends: the response decides when the
            // declaration is missing or generic.
            let content_type = submission.content_type.as_deref().map(media_type).unwrap_or_default();
            (Vec::new(), declared.unwrap_or(content_type), Some(url))
        }
        Payload::Text(text) => (text.into_bytes(), declared.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()), None),
        Payload::Base64(encoded) => {
            let content = decode_base64(encoded, max_bytes)?;
            let content_type = resolve_content_type(declared, submission.file_name.as_deref(), &content)?;
            (content, content_type, None)
        }
        Payload::Bytes(content) => {
            let content_type = resolve_content_type(declared, submission.file_name.as_deref(), &content)?;
            (content, content_type, None)
        }
    };
    if content.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    if url.is_none() {
        check_content(&content, &content_type)?;
    }
    let content_hash = if url.is_some() { String::new() } else { hex::encode(Sha256::digest(&content)) };
    let document_id = match (submission.document_id, &url) {
        (Some(id), _) => {
            validate_document_id(&id)?;
            id
        }
        (None, Some(url)) => derived_document_id_of_url(url)?,
        (None, None) => derived_document_id(&content_hash),
    };
    // A URL is where the document came from unless the caller says otherwise.
    let source = match (submission.source.filter(|s| !s.is_empty()), &url) {
        (Some(source), _) => source,
        (None, Some(url)) => url.clone(),
        (None, None) => String::new(),
    };
    if source.chars().count() > MAX_SOURCE_CHARS {
        return Err(ApiError::invalid(format!("`source` is longer than {MAX_SOURCE_CHARS} characters")));
    }
    let metadata = validate_metadata(submission.metadata, "metadata")?;
    let options = validate_options(&submission.options)?;
    let collection = match submission.collection.filter(|c| !c.is_empty()) {
        None => DEFAULT_COLLECTION.to_owned(),
        Some(collection) => validate_collection(collection, "collection")?,
    };
    Ok(ValidDocument { document_id, content, content_type, source, metadata, content_hash, url, options, collection })
}

/// Longest collection name.
pub const MAX_COLLECTION_CHARS: usize = 64;

/// Most collections one search names.
pub const MAX_SEARCH_COLLECTIONS: usize = 100;

/// A collection name: 1 to 64 of `A-Z a-z 0-9 . _ -`, as a tenant's (`millrace_auth::is_valid_name`:
/// both go into Redis keys and log lines, so nothing that needs quoting).
pub fn validate_collection(name: String, field: &str) -> Result<String, ApiError> {
    if millrace_auth::is_valid_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::invalid(format!(
            "`{field}` {name:?} is not a collection name: 1 to {MAX_COLLECTION_CHARS} of A-Z, a-z, 0-9, '.', '_' or '-'"
        )))
    }
}

fn decode_base64(encoded: String, max_bytes: usize) -> Result<Vec<u8>, ApiError> {
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
        .map_err(|err| ApiError::invalid(format!("`content_base64` is not valid base64: {err}")))
}

/// Text must be UTF-8 and not blank; other types must not be empty.
fn check_content(content: &[u8], content_type: &str) -> Result<(), ApiError> {
    if is_text(content_type) {
        let text = std::str::from_utf8(content).map_err(|err| {
            ApiError::invalid(format!("content declared as {content_type} is not valid UTF-8: {err}"))
        })?;
        if text.trim().is_empty() {
            return Err(ApiError::invalid("content is empty or only whitespace"));
        }
    } else if content.is_empty() {
        return Err(ApiError::invalid("content is empty"));
    }
    Ok(())
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

/// The id of a document submitted by URL without one: the URL itself, so fetching the same URL
/// again makes a new version of the same document. Its content is not known at submit time,
/// so there is no hash to derive from.
pub fn derived_document_id_of_url(url: &str) -> Result<String, ApiError> {
    if url.chars().count() > MAX_DOCUMENT_ID_CHARS {
        return Err(ApiError::invalid(format!(
            "`url` is longer than {MAX_DOCUMENT_ID_CHARS} characters, too long to be the document's id: give a `document_id`"
        )));
    }
    Ok(url.to_owned())
}

/// Parses a submitted URL (http or https, no credentials, bounded length) and returns it
/// normalised. Whether its host may be fetched needs a lookup: the caller checks that.
pub fn validate_url(text: &str) -> Result<String, ApiError> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(ApiError::invalid(format!("`url` is longer than {MAX_URL_CHARS} characters")));
    }
    match millrace_fetch::parse_url(text) {
        Ok(url) => Ok(url.to_string()),
        Err(FetchError::Refused { reason }) => Err(ApiError::invalid(format!("`url` is refused: {reason}"))),
        Err(err) => Err(ApiError::invalid(format!("`url` is {err}"))),
    }
}

/// The declared content type: `None` when it is missing or generic (the bytes decide),
/// normalised when supported, 415 otherwise.
pub fn declared_content_type(declared: Option<&str>) -> Result<Option<String>, ApiError> {
    if content::is_generic(declared) {
        return Ok(None);
    }
    normalise_content_type(declared).map(Some)
}

/// The type of a document whose declared type is `declared` (already checked): that, else the
/// file name's, else the bytes' signature, else plain text for UTF-8; 415 when nothing fits.
pub fn resolve_content_type(
    declared: Option<String>,
    file_name: Option<&str>,
    bytes: &[u8],
) -> Result<String, ApiError> {
    if let Some(declared) = declared {
        return Ok(declared);
    }
    let resolved = content::resolve(None, file_name, bytes).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "cannot tell the content type: declare `content_type` as one of {}",
                SUPPORTED_CONTENT_TYPES.join(", ")
            ),
        )
    })?;
    normalise_content_type(Some(&resolved))
}

/// The content type of a multipart file: the form's `content_type` field when given, else the
/// part's own type when it is a supported one. Clients set the part's type by guesswork
/// (often `application/octet-stream`), so an unsupported one is a hint to ignore, not an error.
pub fn multipart_content_type(field: Option<String>, part: Option<&str>) -> Option<String> {
    field.or_else(|| {
        part.filter(|part| !content::is_generic(Some(part))).and_then(|part| normalise_content_type(Some(part)).ok())
    })
}

/// Chunking options from a JSON value (`options`): an object with integer `chunk_size` and
/// `chunk_overlap`; absent or null is none.
pub fn options_from_value(value: Option<serde_json::Value>) -> Result<RawOptions, ApiError> {
    let prefix = "options.";
    let mut options = RawOptions { prefix, ..RawOptions::default() };
    let map = match value {
        None | Some(serde_json::Value::Null) => return Ok(options),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => return Err(ApiError::invalid("`options` must be a JSON object")),
    };
    for (key, value) in map {
        let slot = match key.as_str() {
            "chunk_size" => &mut options.chunk_size,
            "chunk_overlap" => &mut options.chunk_overlap,
            _ => {
                return Err(ApiError::invalid(format!(
                    "`{prefix}{key}` is not a known option; the options are chunk_size and chunk_overlap"
                )));
            }
        };
        *slot = match value {
            serde_json::Value::Null => None,
            value => Some(
                value
                    .as_i64()
                    .ok_or_else(|| ApiError::invalid(format!("`{prefix}{key}` must be an integer, not {value}")))?,
            ),
        };
    }
    Ok(options)
}

/// Chunking options from the text of a JSON object (a multipart `options` field).
pub fn options_from_json(text: &str) -> Result<RawOptions, ApiError> {
    if text.trim().is_empty() {
        return Ok(RawOptions { prefix: "options.", ..RawOptions::default() });
    }
    let value = serde_json::from_str(text).map_err(|err| ApiError::invalid(format!("`options` is not JSON: {err}")))?;
    options_from_value(Some(value))
}

/// An integer sent as text (a multipart field).
pub fn integer_field(text: &str, field: &str) -> Result<i64, ApiError> {
    text.trim().parse().map_err(|_| ApiError::invalid(format!("`{field}` must be an integer, not {text:?}")))
}

/// Sizes are positive and at most [`MAX_CHUNK_SIZE`]; the overlap is smaller than the size.
/// An overlap given alone is checked against the bound only: the size it applies to is the
/// chunking stage's configured one.
pub fn validate_options(raw: &RawOptions) -> Result<JobOptions, ApiError> {
    let prefix = raw.prefix;
    let chunk_size = raw
        .chunk_size
        .map(|size| match u32::try_from(size) {
            Ok(size @ 1..=MAX_CHUNK_SIZE) => Ok(size),
            _ => Err(ApiError::invalid(format!(
                "`{prefix}chunk_size` must be between 1 and {MAX_CHUNK_SIZE}, not {size}"
            ))),
        })
        .transpose()?;
    let chunk_overlap = raw
        .chunk_overlap
        .map(|overlap| match u32::try_from(overlap) {
            Ok(overlap) if overlap < MAX_CHUNK_SIZE => Ok(overlap),
            _ => Err(ApiError::invalid(format!(
                "`{prefix}chunk_overlap` must be between 0 and {}, not {overlap}",
                MAX_CHUNK_SIZE - 1
            ))),
        })
        .transpose()?;
    if let (Some(size), Some(overlap)) = (chunk_size, chunk_overlap)
        && overlap >= size
    {
        return Err(ApiError::invalid(format!(
            "`{prefix}chunk_overlap` ({overlap}) must be smaller than `{prefix}chunk_size` ({size})"
        )));
    }
    Ok(JobOptions { chunk_size, chunk_overlap })
}

/// `text/Markdown; charset=utf-8` → `text/markdown`; 415 if not supported.
pub fn normalise_content_type(declared: Option<&str>) -> Result<String, ApiError> {
    let declared = declared.map(str::trim).filter(|d| !d.is_empty()).unwrap_or(DEFAULT_CONTENT_TYPE);
    let essence = media_type(declared);
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

/// Which retrievers a search uses (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// Keyword and vector rankings fused by reciprocal rank fusion.
    #[default]
    Hybrid,
    /// Nearest embeddings only (cosine similarity).
    Vector,
    /// PostgreSQL full text only: the query is never embedded.
    Keyword,
}

impl SearchMode {
    pub const NAMES: [&'static str; 3] = ["hybrid", "vector", "keyword"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hybrid => "hybrid",
            Self::Vector => "vector",
            Self::Keyword => "keyword",
        }
    }

    /// `mode` as a JSON caller names it; absent is hybrid.
    pub fn from_name(name: Option<&str>) -> Result<Self, ApiError> {
        match name {
            None | Some("hybrid") => Ok(Self::Hybrid),
            Some("vector") => Ok(Self::Vector),
            Some("keyword") => Ok(Self::Keyword),
            Some(other) => {
                Err(ApiError::invalid(format!("`mode` must be one of {}, not {other:?}", Self::NAMES.join(", "))))
            }
        }
    }

    /// `mode` as a gRPC caller sends it; unspecified (0) is hybrid.
    pub fn from_proto(value: i32) -> Result<Self, ApiError> {
        match proto::SearchMode::try_from(value) {
            Ok(proto::SearchMode::Unspecified | proto::SearchMode::Hybrid) => Ok(Self::Hybrid),
            Ok(proto::SearchMode::Vector) => Ok(Self::Vector),
            Ok(proto::SearchMode::Keyword) => Ok(Self::Keyword),
            Err(_) => Err(ApiError::invalid(format!("`mode` {value} is not a SearchMode"))),
        }
    }

    pub fn to_proto(self) -> proto::SearchMode {
        match self {
            Self::Hybrid => proto::SearchMode::Hybrid,
            Self::Vector => proto::SearchMode::Vector,
            Self::Keyword => proto::SearchMode::Keyword,
        }
    }

    /// Whether the query needs an embedding (a call to the embeddings service).
    pub fn embeds_query(self) -> bool {
        self != Self::Keyword
    }
}

/// What one search result is (`group_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchGroupBy {
    /// A document's best chunk, with its other matching chunks; `top_k` counts documents.
    #[default]
    Document,
    /// One chunk; `top_k` counts chunks.
    Chunk,
}

impl SearchGroupBy {
    pub const NAMES: [&'static str; 2] = ["document", "chunk"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Document => "document",
            Self::Chunk => "chunk",
        }
    }

    /// `group_by` as a JSON caller names it; absent is document.
    pub fn from_name(name: Option<&str>) -> Result<Self, ApiError> {
        match name {
            None | Some("document") => Ok(Self::Document),
            Some("chunk") => Ok(Self::Chunk),
            Some(other) => {
                Err(ApiError::invalid(format!("`group_by` must be one of {}, not {other:?}", Self::NAMES.join(", "))))
            }
        }
    }

    /// `group_by` as a gRPC caller sends it; unspecified (0) is document.
    pub fn from_proto(value: i32) -> Result<Self, ApiError> {
        match proto::SearchGroupBy::try_from(value) {
            Ok(proto::SearchGroupBy::Unspecified | proto::SearchGroupBy::Document) => Ok(Self::Document),
            Ok(proto::SearchGroupBy::Chunk) => Ok(Self::Chunk),
            Err(_) => Err(ApiError::invalid(format!("`group_by` {value} is not a SearchGroupBy"))),
        }
    }

    pub fn to_proto(self) -> proto::SearchGroupBy {
        match self {
            Self::Document => proto::SearchGroupBy::Document,
            Self::Chunk => proto::SearchGroupBy::Chunk,
        }
    }
}

/// A retriever's weight in the fusion when the caller gives none.
pub const DEFAULT_SEARCH_WEIGHT: f32 = 1.0;

/// Largest accepted fusion weight: only the ratio of the two matters, and a bound keeps every
/// score finite.
pub const MAX_SEARCH_WEIGHT: f64 = 1_000_000.0;

/// Most document ids one search filter names (repeats included): with ids of up to 256
/// characters, the request stays far below the search body limit even JSON-escaped.
pub const MAX_FILTER_DOCUMENT_IDS: usize = 100;

/// Most content types one search filter names (repeats included).
pub const MAX_FILTER_CONTENT_TYPES: usize = 100;

/// A search filter as received. Times are Unix milliseconds: the HTTP API parses its RFC 3339
/// strings first ([`unix_ms_from_rfc3339`]).
#[derive(Debug, Clone, Default)]
pub struct SearchFilterQuery {
    /// One document (older clients); the same as a one-element `document_ids`.
    pub document_id: Option<String>,
    pub document_ids: Vec<String>,
    pub content_types: Vec<String>,
    /// Empty means none.
    pub source_prefix: Option<String>,
    pub created_after_ms: Option<i64>,
    pub created_before_ms: Option<i64>,
    pub updated_after_ms: Option<i64>,
    pub updated_before_ms: Option<i64>,
    pub metadata: Option<serde_json::Value>,
}

/// A search request as received.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub query: String,
    pub top_k: Option<i64>,
    pub mode: SearchMode,
    pub group_by: SearchGroupBy,
    pub vector_weight: Option<f64>,
    pub keyword_weight: Option<f64>,
    pub filter: SearchFilterQuery,
    /// None or empty: every collection the key may use.
    pub collections: Option<Vec<String>>,
    /// None: the server's default (`MILLRACE_SEARCH_RERANK`).
    pub rerank: Option<bool>,
    /// None: the server's default (`MILLRACE_RERANK_CANDIDATES`).
    pub rerank_candidates: Option<i64>,
}

/// Filter conditions that passed every check; storage applies them inside its index scans.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidFilter {
    /// `document_id` and `document_ids` together, without repeats; empty: any document.
    pub document_ids: Vec<String>,
    /// Supported content types, without repeats; empty: any.
    pub content_types: Vec<String>,
    pub source_prefix: Option<String>,
    pub created_after_ms: Option<i64>,
    pub created_before_ms: Option<i64>,
    pub updated_after_ms: Option<i64>,
    pub updated_before_ms: Option<i64>,
    /// An object the chunk's metadata must contain, or `{}`.
    pub metadata: serde_json::Value,
}

impl ValidFilter {
    /// Whether a time range is empty (`after` at or past `before`): valid, and no document can
    /// match, so there is nothing to ask storage (which refuses such a range).
    /// Likewise metadata holding a NUL character, which PostgreSQL's jsonb cannot store.
    pub fn matches_nothing(&self) -> bool {
        let empty = |after: Option<i64>, before: Option<i64>| after.zip(before).is_some_and(|(a, b)| a >= b);
        empty(self.created_after_ms, self.created_before_ms)
            || empty(self.updated_after_ms, self.updated_before_ms)
            || holds_nul(&self.metadata)
    }

    pub fn to_proto(&self) -> proto::SearchFilter {
        let metadata_json = match &self.metadata {
            serde_json::Value::Object(map) if map.is_empty() => String::new(),
            other => other.to_string(),
        };
        proto::SearchFilter {
            // Always sent as `document_ids`, so storage has one list to read.
            document_id: None,
            metadata_json,
            document_ids: self.document_ids.clone(),
            content_types: self.content_types.clone(),
            source_prefix: self.source_prefix.clone(),
            created_after_unix_ms: self.created_after_ms,
            created_before_unix_ms: self.created_before_ms,
            updated_after_unix_ms: self.updated_after_ms,
            updated_before_unix_ms: self.updated_before_ms,
        }
    }
}

fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}

/// A search request that passed every check.
#[derive(Debug, Clone)]
pub struct ValidSearch {
    pub query: String,
    pub top_k: u32,
    pub mode: SearchMode,
    pub group_by: SearchGroupBy,
    pub vector_weight: f32,
    pub keyword_weight: f32,
    pub filter: ValidFilter,
    /// The collections named (valid names, no repeats); empty: every one the key may use.
    pub collections: Vec<String>,
    /// Whether to rerank; None: the server's default.
    pub rerank: Option<bool>,
    /// From 1 to [`MAX_RERANK_CANDIDATES`]; None: the server's default. Checked whether or not
    /// the search is reranked, so a value is valid or not whatever the server's default.
    pub rerank_candidates: Option<u32>,
}

pub fn validate_search(search: SearchQuery) -> Result<ValidSearch, ApiError> {
    if search.query.trim().is_empty() {
        return Err(ApiError::invalid("`query` must not be empty"));
    }
    if search.query.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::invalid(format!("`query` is longer than {MAX_QUERY_CHARS} characters")));
    }
    // PostgreSQL text cannot hold NUL, and the keyword retriever searches with the query's text.
    if search.query.contains('\0') {
        return Err(ApiError::invalid("`query` must not contain NUL characters"));
    }
    let top_k = match search.top_k {
        None => DEFAULT_TOP_K,
        Some(k) if (1..=i64::from(MAX_TOP_K)).contains(&k) => k as u32,
        Some(k) => return Err(ApiError::invalid(format!("`top_k` must be between 1 and {MAX_TOP_K}, not {k}"))),
    };
    let vector_weight = search_weight(search.vector_weight, "weights.vector")?;
    let keyword_weight = search_weight(search.keyword_weight, "weights.keyword")?;
    let rerank_candidates = match search.rerank_candidates {
        None => None,
        Some(n) if (1..=i64::from(MAX_RERANK_CANDIDATES)).contains(&n) => Some(n as u32),
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "`rerank_candidates` must be between 1 and {MAX_RERANK_CANDIDATES}, not {n}"
            )));
        }
    };
    let filter = validate_filter(search.filter)?;
    let named = search.collections.unwrap_or_default();
    if named.len() > MAX_SEARCH_COLLECTIONS {
        return Err(ApiError::invalid(format!(
            "`collections` names {} collections; at most {MAX_SEARCH_COLLECTIONS} are accepted",
            named.len()
        )));
    }
    let mut collections: Vec<String> = Vec::with_capacity(named.len());
    for (i, name) in named.into_iter().enumerate() {
        let name = validate_collection(name, &format!("collections[{i}]"))?;
        if !collections.contains(&name) {
            collections.push(name);
        }
    }
    Ok(ValidSearch {
        query: search.query,
        top_k,
        mode: search.mode,
        group_by: search.group_by,
        vector_weight,
        keyword_weight,
        filter,
        collections,
        rerank: search.rerank,
        rerank_candidates,
    })
}

/// A fusion weight: finite, from 0 (the retriever's ranking counts for nothing) to
/// [`MAX_SEARCH_WEIGHT`]; absent is [`DEFAULT_SEARCH_WEIGHT`].
fn search_weight(weight: Option<f64>, field: &str) -> Result<f32, ApiError> {
    match weight {
        None => Ok(DEFAULT_SEARCH_WEIGHT),
        // The sign bit too: `-1e-400` reads as -0.0, and it is below 0 all the same.
        Some(w) if w.is_finite() && w.is_sign_positive() && w <= MAX_SEARCH_WEIGHT => Ok(w as f32),
        Some(w) => Err(ApiError::invalid(format!("`{field}` must be a number from 0 to {MAX_SEARCH_WEIGHT}, not {w}"))),
    }
}

fn validate_filter(filter: SearchFilterQuery) -> Result<ValidFilter, ApiError> {
    // Counted as sent, repeats included, as the schema's `maxItems` counts them.
    if filter.document_ids.len() > MAX_FILTER_DOCUMENT_IDS {
        return Err(ApiError::invalid(format!(
            "`filter.document_ids` names {} documents; at most {MAX_FILTER_DOCUMENT_IDS} are accepted",
            filter.document_ids.len()
        )));
    }
    if filter.content_types.len() > MAX_FILTER_CONTENT_TYPES {
        return Err(ApiError::invalid(format!(
            "`filter.content_types` names {} types; at most {MAX_FILTER_CONTENT_TYPES} are accepted",
            filter.content_types.len()
        )));
    }
    let named = filter.document_id.into_iter().map(|id| (id, "filter.document_id".to_owned()));
    let listed = filter.document_ids.into_iter().enumerate().map(|(i, id)| (id, format!("filter.document_ids[{i}]")));
    let mut document_ids: Vec<String> = Vec::new();
    for (id, field) in named.chain(listed) {
        validate_document_id(&id).map_err(|err| ApiError::invalid(format!("`{field}`: {}", err.message)))?;
        if !document_ids.contains(&id) {
            document_ids.push(id);
        }
    }
    let mut content_types: Vec<String> = Vec::new();
    for (i, content_type) in filter.content_types.into_iter().enumerate() {
        // Exactly as stored: a filter that silently matched nothing would look like no results.
        if !SUPPORTED_CONTENT_TYPES.contains(&content_type.as_str()) {
            return Err(ApiError::invalid(format!(
                "`filter.content_types[{i}]` {content_type:?} is not a stored content type; use one of {}",
                SUPPORTED_CONTENT_TYPES.join(", ")
            )));
        }
        if !content_types.contains(&content_type) {
            content_types.push(content_type);
        }
    }
    let source_prefix = filter.source_prefix.filter(|prefix| !prefix.is_empty());
    if source_prefix.as_ref().is_some_and(|prefix| prefix.chars().count() > MAX_SOURCE_CHARS) {
        return Err(ApiError::invalid(format!("`filter.source_prefix` is longer than {MAX_SOURCE_CHARS} characters")));
    }
    if source_prefix.as_ref().is_some_and(|prefix| prefix.contains('\0')) {
        return Err(ApiError::invalid("`filter.source_prefix` must not contain NUL characters"));
    }
    let metadata = validate_metadata(filter.metadata, "filter.metadata")?;
    // An empty range (after >= before) is valid and matches nothing, as in SQL.
    Ok(ValidFilter {
        document_ids,
        content_types,
        source_prefix,
        created_after_ms: filter.created_after_ms,
        created_before_ms: filter.created_before_ms,
        updated_after_ms: filter.updated_after_ms,
        updated_before_ms: filter.updated_before_ms,
        metadata,
    })
}

/// An RFC 3339 time (`2026-12-07T10:00:00Z`, `2026-12-07T11:00:00.5+01:00`) as Unix
/// milliseconds, any finer fraction dropped (rounded down, as the stored times are read).
pub fn unix_ms_from_rfc3339(text: &str, field: &str) -> Result<i64, ApiError> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|err| {
        ApiError::invalid(format!(
            "`{field}` must be an RFC 3339 time such as 2026-01-31T09:30:00Z, not {text:?}: {err}"
        ))
    })?;
    // RFC 3339 years are 0000 to 9999: always within i64 milliseconds.
    Ok(i64::try_from(time.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX))
}

/// `limit` of a job listing: default 50, 1 to 1000.
pub fn list_limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(l) if l >= 1 && l <= MAX_LIST_LIMIT as i64 => Ok(l as usize),
        Some(l) => Err(ApiError::invalid(format!("`limit` must be between 1 and {MAX_LIST_LIMIT}, not {l}"))),
    }
}

/// The `limit` query parameter of a listing, given as text (empty means absent).
pub fn list_limit_param(text: Option<&str>) -> Result<usize, ApiError> {
    let limit = match text.filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(
            text.parse::<i64>().map_err(|_| ApiError::invalid(format!("`limit` must be an integer, not {text:?}")))?,
        ),
    };
    list_limit(limit)
}

/// Most items one run takes.
pub const MAX_RUN_ITEMS: usize = 100_000;
/// Longest run name.
pub const MAX_RUN_NAME_CHARS: usize = 200;
/// Most pages one crawl may take, and its deepest link depth.
pub const MAX_CRAWL_PAGES: u32 = 100_000;
pub const MAX_CRAWL_DEPTH: u32 = 100;
/// Most include or exclude patterns of a crawl, and the longest.
pub const MAX_CRAWL_PATTERNS: usize = 50;
pub const MAX_CRAWL_PATTERN_CHARS: usize = 1000;

/// A run as `POST /v1/runs` takes it: a list of items or a crawl (not both).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub name: Option<String>,
    pub collection: Option<String>,
    pub items: Option<Vec<serde_json::Value>>,
    pub crawl: Option<serde_json::Value>,
    pub webhook: Option<serde_json::Value>,
}

/// A run's request after the pure checks.
#[derive(Debug, Clone)]
pub struct ValidRun {
    pub name: String,
    pub collection: String,
    pub items: Vec<serde_json::Value>,
    pub crawl: Option<millrace_pipeline::CrawlSpec>,
    pub webhook: Option<crate::history::hooks::Spec>,
}

/// The pure checks of a run (422 with what is wrong): one of `items` (1 to
/// [`MAX_RUN_ITEMS`] objects; each is checked when it is submitted, and refused then if it is
/// not valid) or `crawl` (its URL, bounds and patterns); a webhook's shape.
pub fn validate_run(request: RunRequest) -> Result<ValidRun, ApiError> {
    let name = request.name.unwrap_or_default();
    if name.chars().count() > MAX_RUN_NAME_CHARS {
        return Err(ApiError::invalid(format!("`name` is longer than {MAX_RUN_NAME_CHARS} characters")));
    }
    if name.contains('\0') {
        return Err(ApiError::invalid("`name` must not contain NUL"));
    }
    let collection = validate_collection(
        request.collection.filter(|c| !c.is_empty()).unwrap_or_else(|| millrace_auth::DEFAULT_COLLECTION.to_owned()),
        "collection",
    )?;
    let (items, crawl) = match (request.items, request.crawl) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give either `items` or `crawl`, not both")),
        (None, None) => return Err(ApiError::invalid("`items` or `crawl` is required")),
        (Some(items), None) => (validate_run_items(items)?, None),
        (None, Some(crawl)) => (Vec::new(), Some(validate_crawl(crawl)?)),
    };
    let webhook = request
        .webhook
        .map(|value| {
            serde_json::from_value::<crate::history::hooks::Spec>(value)
                .map_err(|err| ApiError::invalid(format!("`webhook` is not valid: {err}")))
        })
        .transpose()?;
    Ok(ValidRun { name, collection, items, crawl, webhook })
}

fn validate_run_items(items: Vec<serde_json::Value>) -> Result<Vec<serde_json::Value>, ApiError> {
    if items.is_empty() {
        return Err(ApiError::invalid("`items` must not be empty"));
    }
    if items.len() > MAX_RUN_ITEMS {
        return Err(ApiError::invalid(format!(
            "`items` has {} items; a run takes at most {MAX_RUN_ITEMS}",
            items.len()
        )));
    }
    if let Some(index) = items.iter().position(|item| !item.is_object()) {
        return Err(ApiError::invalid(format!("items[{index}] must be an object, as `POST /v1/ingest` takes")));
    }
    if let Some(index) = items.iter().position(holds_nul) {
        return Err(ApiError::invalid(format!("items[{index}] holds a NUL character")));
    }
    Ok(items)
}

/// A crawl's spec: its shape (`CrawlSpec`, no unknown field), an http(s) start URL, its bounds
/// and its patterns. Whether the start URL's host may be fetched is checked by the caller.
pub fn validate_crawl(value: serde_json::Value) -> Result<millrace_pipeline::CrawlSpec, ApiError> {
    let mut spec: millrace_pipeline::CrawlSpec =
        serde_json::from_value(value).map_err(|err| ApiError::invalid(format!("`crawl` is not valid: {err}")))?;
    spec.url = validate_url(&spec.url).map_err(|err| ApiError::invalid(err.message.replace("`url`", "`crawl.url`")))?;
    if spec.max_pages == 0 || spec.max_pages > MAX_CRAWL_PAGES {
        return Err(ApiError::invalid(format!("`crawl.max_pages` must be between 1 and {MAX_CRAWL_PAGES}")));
    }
    if spec.max_depth > MAX_CRAWL_DEPTH {
        return Err(ApiError::invalid(format!("`crawl.max_depth` must be at most {MAX_CRAWL_DEPTH}")));
    }
    for (field, patterns) in [("include", &spec.include), ("exclude", &spec.exclude)] {
        if patterns.len() > MAX_CRAWL_PATTERNS {
            return Err(ApiError::invalid(format!("`crawl.{field}` has more than {MAX_CRAWL_PATTERNS} patterns")));
        }
        if patterns.iter().any(|p| p.is_empty() || p.chars().count() > MAX_CRAWL_PATTERN_CHARS || p.contains('\0')) {
            return Err(ApiError::invalid(format!(
                "`crawl.{field}` patterns must have 1 to {MAX_CRAWL_PATTERN_CHARS} characters"
            )));
        }
    }
    Ok(spec)
}

/// A listing's `cursor` (opaque: what an earlier page gave as `next_cursor`).
pub fn cursor_param(text: Option<&str>) -> Result<Option<String>, ApiError> {
    match text.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) => crate::history::store::decode_cursor(text)
            .map(Some)
            .ok_or_else(|| ApiError::invalid("`cursor` is not a cursor this API gave")),
    }
}

/// An item listing's `status`.
pub const ITEM_STATUSES: [&str; 9] =
    ["pending", "submitted", "queued", "running", "completed", "failed", "cancelled", "skipped", "refused"];

pub fn item_status_param(text: Option<&str>) -> Result<Option<String>, ApiError> {
    match text.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) if ITEM_STATUSES.contains(&text) => Ok(Some(text.to_owned())),
        Some(text) => {
            Err(ApiError::invalid(format!("unknown item status {text:?}; use one of {}", ITEM_STATUSES.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(content: &str) -> Submission {
        Submission {
            document_id: None,
            payload: Payload::Text(content.to_owned()),
            content_type: None,
            file_name: None,
            source: None,
            metadata: None,
            options: RawOptions::default(),
            collection: None,
        }
    }

    fn bytes(content: &[u8], content_type: Option<&str>, file_name: Option<&str>) -> Submission {
        Submission {
            payload: Payload::Bytes(content.to_vec()),
            content_type: content_type.map(str::to_owned),
            file_name: file_name.map(str::to_owned),
            ..text("")
        }
    }

    fn url(url: &str) -> Submission {
        Submission { payload: Payload::Url(url.to_owned()), ..text("") }
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
        assert_eq!(normalise_content_type(Some("application/pdf")).unwrap(), "application/pdf");
        assert_eq!(normalise_content_type(Some("image/png")).unwrap_err().code, ErrorCode::UnsupportedMediaType);
    }

    #[test]
    fn payload_needs_exactly_one_field() {
        let neither = Submission::payload_from_fields(None, None, None).unwrap_err();
        assert!(neither.message.contains("`content`") && neither.message.contains("`content_base64`"));
        assert!(neither.message.contains("`url`"));
        let both = Submission::payload_from_fields(Some("a".into()), Some("YQ==".into()), None).unwrap_err();
        assert_eq!(both.code, ErrorCode::InvalidArgument);
        let both = Submission::payload_from_fields(Some("a".into()), None, Some("https://x.test/".into())).unwrap_err();
        assert!(both.message.contains("mutually exclusive"));
        let both = Submission::payload_from_fields(None, Some("YQ==".into()), Some("https://x.test/".into()));
        assert!(both.is_err());
        assert!(matches!(
            Submission::payload_from_fields(None, None, Some("https://x.test/".into())),
            Ok(Payload::Url(_))
        ));
    }

    #[test]
    fn generic_or_missing_types_are_resolved_from_name_and_bytes() {
        let resolved = |content: &[u8], declared: Option<&str>, name: Option<&str>| {
            validate_submission(bytes(content, declared, name), 1000).map(|doc| doc.content_type)
        };
        assert_eq!(resolved(b"%PDF-1.7 ...", Some("application/octet-stream"), None).unwrap(), "application/pdf");
        assert_eq!(resolved(b"%PDF-1.7 ...", None, None).unwrap(), "application/pdf");
        assert_eq!(resolved(b"# Title", Some(""), Some("guide.md")).unwrap(), "text/markdown");
        assert_eq!(resolved(b"<!doctype html><p>x", None, None).unwrap(), "text/html");
        assert_eq!(resolved(b"just words", None, None).unwrap(), "text/plain");
        // A declared type wins over the name and the bytes.
        assert_eq!(resolved(b"%PDF-1.7", Some("text/plain"), Some("a.pdf")).unwrap(), "text/plain");
        let err = resolved(&[0x00, 0xff, 0x13, 0x37], Some("application/octet-stream"), Some("blob.bin")).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedMediaType);
        assert!(err.message.contains("content_type"), "{}", err.message);
        assert_eq!(resolved(b"x", Some("image/png"), None).unwrap_err().code, ErrorCode::UnsupportedMediaType);
        // base64 declared as generic is sniffed too.
        let mut sub = text("");
        sub.payload = Payload::Base64(base64::engine::general_purpose::STANDARD.encode("%PDF-1.4 body"));
        sub.content_type = Some("application/octet-stream".into());
        assert_eq!(validate_submission(sub, 1000).unwrap().content_type, "application/pdf");
    }

    #[test]
    fn multipart_part_types_are_hints() {
        assert_eq!(multipart_content_type(Some("text/html".into()), Some("text/plain")), Some("text/html".into()));
        assert_eq!(multipart_content_type(None, Some("Text/Markdown; charset=utf-8")), Some("text/markdown".into()));
        assert_eq!(multipart_content_type(None, Some("application/octet-stream")), None);
        assert_eq!(multipart_content_type(None, Some("text/csv")), None);
        assert_eq!(multipart_content_type(None, None), None);
    }

    #[test]
    fn url_submissions_carry_the_url_and_no_content() {
        let doc = validate_submission(url(" https://Docs.Example.com/a/guide.pdf "), 100).unwrap();
        assert_eq!(doc.url.as_deref(), Some("https://docs.example.com/a/guide.pdf"));
        assert_eq!(doc.document_id, "https://docs.example.com/a/guide.pdf");
        assert_eq!(doc.source, "https://docs.example.com/a/guide.pdf");
        assert!(doc.content.is_empty());
        assert_eq!(doc.content_hash, "");
        assert_eq!(doc.content_type, "");

        let mut sub = url("https://docs.example.com/x");
        sub.content_type = Some("Application/Octet-Stream".into());
        sub.document_id = Some("doc-1".into());
        sub.source = Some("crawler".into());
        let doc = validate_submission(sub.clone(), 100).unwrap();
        assert_eq!(
            (doc.content_type.as_str(), doc.document_id.as_str(), doc.source.as_str()),
            ("application/octet-stream", "doc-1", "crawler")
        );
        sub.content_type = Some("text/markdown; charset=utf-8".into());
        assert_eq!(validate_submission(sub.clone(), 100).unwrap().content_type, "text/markdown");
        sub.content_type = Some("image/png".into());
        assert_eq!(code(validate_submission(sub, 100)), ErrorCode::UnsupportedMediaType);
    }

    #[test]
    fn bad_urls_are_422_with_the_reason() {
        for (text, expected) in [
            ("not a url", "not a valid URL"),
            ("ftp://example.com/a", "\"ftp\" is not allowed"),
            ("https://user:pw@example.com/a", "credentials"),
            ("file:///etc/passwd", "\"file\" is not allowed"),
        ] {
            let err = validate_submission(url(text), 100).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{text}");
            assert!(err.message.starts_with("`url` is") && err.message.contains(expected), "{text}: {}", err.message);
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(validate_submission(url(&long), 100).unwrap_err().message.contains("longer than 2048"));
        let id_sized = format!("https://example.com/{}", "a".repeat(300));
        let err = validate_submission(url(&id_sized), 100).unwrap_err();
        assert!(err.message.contains("document_id"), "{}", err.message);
        let mut sub = url(&id_sized);
        sub.document_id = Some("long-url".into());
        assert!(validate_submission(sub, 100).is_ok());
    }

    fn options(chunk_size: Option<i64>, chunk_overlap: Option<i64>) -> Result<JobOptions, ApiError> {
        validate_options(&RawOptions { chunk_size, chunk_overlap, prefix: "options." })
    }

    #[test]
    fn options_are_bounded_and_name_their_field() {
        assert_eq!(options(None, None).unwrap(), JobOptions::default());
        assert_eq!(
            options(Some(500), Some(50)).unwrap(),
            JobOptions { chunk_size: Some(500), chunk_overlap: Some(50) }
        );
        assert_eq!(options(Some(8192), Some(0)).unwrap().chunk_size, Some(8192));
        assert_eq!(options(None, Some(100)).unwrap().chunk_overlap, Some(100));
        for (size, overlap, field) in [
            (Some(0), None, "`options.chunk_size`"),
            (Some(-5), None, "`options.chunk_size`"),
            (Some(8193), None, "`options.chunk_size`"),
            (Some(i64::MAX), None, "`options.chunk_size`"),
            (None, Some(-1), "`options.chunk_overlap`"),
            (None, Some(8192), "`options.chunk_overlap`"),
            (Some(100), Some(100), "`options.chunk_overlap` (100) must be smaller than `options.chunk_size` (100)"),
            (Some(100), Some(200), "must be smaller than"),
        ] {
            let err = options(size, overlap).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert!(err.message.contains(field), "{size:?} {overlap:?}: {}", err.message);
        }
        let err = validate_options(&RawOptions { chunk_size: Some(0), chunk_overlap: None, prefix: "" }).unwrap_err();
        assert!(err.message.starts_with("`chunk_size`"), "{}", err.message);
    }

    #[test]
    fn options_are_read_from_json() {
        let raw = options_from_value(Some(serde_json::json!({"chunk_size": 300, "chunk_overlap": null}))).unwrap();
        assert_eq!((raw.chunk_size, raw.chunk_overlap, raw.prefix), (Some(300), None, "options."));
        assert_eq!(options_from_value(None).unwrap().chunk_size, None);
        let message = |value| options_from_value(Some(value)).unwrap_err().message;
        assert!(message(serde_json::json!([1])).contains("`options` must be a JSON object"));
        assert!(message(serde_json::json!({"chunk_sise": 3})).contains("`options.chunk_sise`"));
        assert!(message(serde_json::json!({"chunk_size": "300"})).contains("`options.chunk_size` must be an integer"));
        assert!(message(serde_json::json!({"chunk_size": 1.5})).contains("`options.chunk_size`"));
        assert_eq!(options_from_json("{\"chunk_overlap\": 7}").unwrap().chunk_overlap, Some(7));
        assert!(options_from_json("{").unwrap_err().message.contains("`options` is not JSON"));
        assert_eq!(integer_field(" 42 ", "chunk_size").unwrap(), 42);
        assert!(integer_field("4x", "chunk_size").unwrap_err().message.contains("`chunk_size`"));
    }

    #[test]
    fn options_travel_with_the_document() {
        let mut sub = text("hello");
        sub.options = RawOptions { chunk_size: Some(200), chunk_overlap: Some(20), prefix: "" };
        assert_eq!(validate_submission(sub.clone(), 100).unwrap().options.chunk_size, Some(200));
        sub.options.chunk_overlap = Some(300);
        assert_eq!(code(validate_submission(sub, 100)), ErrorCode::InvalidArgument);
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
        // Undeclared, the bytes are not text: their type cannot be told.
        assert_eq!(code(validate_submission(sub.clone(), 100)), ErrorCode::UnsupportedMediaType);
        sub.content_type = Some("text/plain".into());
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
    fn a_document_goes_to_its_collection_or_the_default_one() {
        assert_eq!(validate_submission(text("x"), 100).unwrap().collection, "default");
        let named = |name: &str| validate_submission(Submission { collection: Some(name.into()), ..text("x") }, 100);
        assert_eq!(named("").unwrap().collection, "default");
        assert_eq!(named("hr.2024_q1-x").unwrap().collection, "hr.2024_q1-x");
        assert_eq!(named(&"c".repeat(64)).unwrap().collection, "c".repeat(64));
        for bad in ["a b", "a/b", "ü", "a:b", &"c".repeat(65)] {
            assert_eq!(code(named(bad)), ErrorCode::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn a_search_names_valid_collections_once() {
        let search = |collections: Vec<&str>| {
            validate_search(SearchQuery {
                query: "q".into(),
                collections: Some(collections.into_iter().map(str::to_owned).collect()),
                ..Default::default()
            })
        };
        assert_eq!(search(vec!["a", "b", "a"]).unwrap().collections, ["a", "b"]);
        assert!(search(vec![]).unwrap().collections.is_empty());
        let err = search(vec!["a", "no way"]).unwrap_err();
        assert!(err.message.contains("collections[1]"), "{}", err.message);
        assert!(search(vec!["x"; 101]).is_err());
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
        let err = validate_search(SearchQuery { query: "E0499\0".into(), ..Default::default() }).unwrap_err();
        assert!(err.message.contains("NUL"), "{}", err.message);
    }

    #[test]
    fn rerank_candidates_are_from_1_to_50_whether_or_not_the_search_is_reranked() {
        let candidates = |rerank, n| {
            validate_search(SearchQuery { query: "q".into(), rerank, rerank_candidates: n, ..Default::default() })
        };
        let valid = candidates(Some(true), Some(50)).unwrap();
        assert_eq!((valid.rerank, valid.rerank_candidates), (Some(true), Some(50)));
        assert_eq!(candidates(None, None).unwrap().rerank_candidates, None);
        assert_eq!(candidates(Some(false), Some(1)).unwrap().rerank_candidates, Some(1));
        for (rerank, n) in [(Some(true), 0), (Some(true), 51), (None, -1), (Some(false), 1000)] {
            let err = candidates(rerank, Some(n)).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert!(err.message.contains("`rerank_candidates` must be between 1 and 50"), "{}", err.message);
        }
    }

    fn search_with(filter: SearchFilterQuery) -> Result<ValidSearch, ApiError> {
        validate_search(SearchQuery { query: "q".into(), filter, ..Default::default() })
    }

    #[test]
    fn modes_and_grouping_have_defaults_and_refuse_unknown_values() {
        assert_eq!(SearchMode::from_name(None).unwrap(), SearchMode::Hybrid);
        for name in SearchMode::NAMES {
            assert_eq!(SearchMode::from_name(Some(name)).unwrap().as_str(), name);
        }
        let err = SearchMode::from_name(Some("semantic")).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("hybrid, vector, keyword"), "{}", err.message);
        assert_eq!(SearchGroupBy::from_name(None).unwrap(), SearchGroupBy::Document);
        assert_eq!(SearchGroupBy::from_name(Some("chunk")).unwrap(), SearchGroupBy::Chunk);
        assert!(SearchGroupBy::from_name(Some("Document")).is_err());
        // gRPC: unspecified is the default, an unknown number is refused.
        assert_eq!(SearchMode::from_proto(0).unwrap(), SearchMode::Hybrid);
        assert_eq!(SearchMode::from_proto(3).unwrap(), SearchMode::Keyword);
        assert_eq!(SearchMode::from_proto(9).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(SearchGroupBy::from_proto(0).unwrap(), SearchGroupBy::Document);
        assert_eq!(SearchGroupBy::from_proto(2).unwrap(), SearchGroupBy::Chunk);
        assert!(SearchGroupBy::from_proto(-1).is_err());
        for mode in [SearchMode::Hybrid, SearchMode::Vector, SearchMode::Keyword] {
            assert_eq!(SearchMode::from_proto(mode.to_proto() as i32).unwrap(), mode);
        }
        assert!(!SearchMode::Keyword.embeds_query());
        assert!(SearchMode::Hybrid.embeds_query() && SearchMode::Vector.embeds_query());
    }

    #[test]
    fn weights_are_finite_and_not_negative() {
        let weights = |vector, keyword| {
            validate_search(SearchQuery {
                query: "q".into(),
                vector_weight: vector,
                keyword_weight: keyword,
                ..Default::default()
            })
        };
        let search = weights(None, None).unwrap();
        assert_eq!((search.vector_weight, search.keyword_weight), (1.0, 1.0));
        let search = weights(Some(0.0), Some(2.5)).unwrap();
        assert_eq!((search.vector_weight, search.keyword_weight), (0.0, 2.5));
        let below_zero: f64 = "-1e-400".parse().unwrap();
        for bad in [-0.5, f64::NAN, f64::INFINITY, 1e7, below_zero] {
            let err = weights(Some(bad), None).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad}");
            assert!(err.message.contains("weights.vector"), "{}", err.message);
            assert!(weights(None, Some(bad)).unwrap_err().message.contains("weights.keyword"));
        }
    }

    #[test]
    fn filters_are_checked_and_normalised() {
        let filter = search_with(SearchFilterQuery {
            document_id: Some("a".into()),
            document_ids: vec!["b".into(), "a".into()],
            content_types: vec!["text/markdown".into(), "text/markdown".into()],
            source_prefix: Some(String::new()),
            created_after_ms: Some(5),
            created_before_ms: Some(3),
            metadata: Some(serde_json::json!({"team": "x"})),
            ..Default::default()
        })
        .unwrap()
        .filter;
        assert_eq!(filter.document_ids, ["a", "b"]);
        assert_eq!(filter.content_types, ["text/markdown"]);
        assert_eq!(filter.source_prefix, None, "an empty prefix is none");
        // An empty range is allowed: it matches nothing.
        assert_eq!((filter.created_after_ms, filter.created_before_ms), (Some(5), Some(3)));
        assert!(filter.matches_nothing());
        let range = |after, before| {
            search_with(SearchFilterQuery { updated_after_ms: after, updated_before_ms: before, ..Default::default() })
                .unwrap()
                .filter
                .matches_nothing()
        };
        assert!(range(Some(7), Some(7)), "`before` is exclusive");
        assert!(!range(Some(6), Some(7)));
        assert!(!range(Some(7), None) && !range(None, Some(7)));
        let metadata = |metadata| {
            search_with(SearchFilterQuery { metadata: Some(metadata), ..Default::default() })
                .unwrap()
                .filter
                .matches_nothing()
        };
        assert!(!metadata(serde_json::json!({"team": "docs", "tags": ["a"]})));
        assert!(metadata(serde_json::json!({"team": "do\u{0}cs"})));
        assert!(metadata(serde_json::json!({"a\u{0}": 1})));
        assert!(metadata(serde_json::json!({"tags": [{"x": "\u{0}"}]})));
        let proto = filter.to_proto();
        assert_eq!(proto.document_id, None, "one list for storage");
        assert_eq!(proto.document_ids, ["a", "b"]);
        assert_eq!(proto.metadata_json, r#"{"team":"x"}"#);
        assert_eq!(search_with(SearchFilterQuery::default()).unwrap().filter.to_proto().metadata_json, "");

        let refused = |filter: SearchFilterQuery, field: &str| {
            let err = search_with(filter).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert!(err.message.contains(field), "{field}: {}", err.message);
        };
        refused(SearchFilterQuery { document_id: Some(String::new()), ..Default::default() }, "filter.document_id");
        refused(
            SearchFilterQuery { document_ids: vec!["ok".into(), "a\nb".into()], ..Default::default() },
            "filter.document_ids[1]",
        );
        refused(
            SearchFilterQuery { document_ids: (0..101).map(|i| i.to_string()).collect(), ..Default::default() },
            "at most 100 ",
        );
        refused(SearchFilterQuery { document_ids: vec!["same".into(); 101], ..Default::default() }, "at most 100 ");
        refused(
            SearchFilterQuery { content_types: vec!["text/plain".into(); 101], ..Default::default() },
            "at most 100",
        );
        refused(
            SearchFilterQuery { content_types: vec!["Text/Markdown".into()], ..Default::default() },
            "filter.content_types[0]",
        );
        refused(
            SearchFilterQuery { source_prefix: Some("s".repeat(2049)), ..Default::default() },
            "filter.source_prefix",
        );
        refused(SearchFilterQuery { metadata: Some(serde_json::json!("x")), ..Default::default() }, "filter.metadata");
        refused(SearchFilterQuery { source_prefix: Some("a\0".into()), ..Default::default() }, "filter.source_prefix");
    }

    #[test]
    fn rfc3339_times_become_unix_milliseconds() {
        assert_eq!(unix_ms_from_rfc3339("1970-01-01T00:00:00Z", "t").unwrap(), 0);
        assert_eq!(unix_ms_from_rfc3339("2026-12-07T01:00:00.250+01:00", "t").unwrap(), 1_796_601_600_250);
        // Finer fractions are dropped, before 1970 too.
        assert_eq!(unix_ms_from_rfc3339("1970-01-01T00:00:00.0019Z", "t").unwrap(), 1);
        assert_eq!(unix_ms_from_rfc3339("1969-12-31T23:59:59.9999Z", "t").unwrap(), -1);
        // The extremes RFC 3339 allows (what schemathesis generates) parse.
        assert!(unix_ms_from_rfc3339("0001-01-01T00:00:00+23:59", "t").is_ok());
        assert!(unix_ms_from_rfc3339("9999-12-31T23:59:59.999999-23:59", "t").is_ok());
        for bad in ["", "yesterday", "2026-12-07", "2026-12-07 10:00:00", "2026-13-01T00:00:00Z", "1796601600000"] {
            let err = unix_ms_from_rfc3339(bad, "filter.created_after").unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad:?}");
            assert!(err.message.contains("filter.created_after"), "{}", err.message);
        }
    }

    #[test]
    fn list_limit_rules() {
        assert_eq!(list_limit(None).unwrap(), 50);
        assert_eq!(list_limit(Some(1000)).unwrap(), 1000);
        assert!(list_limit(Some(0)).is_err());
        assert!(list_limit(Some(1001)).is_err());
    }
}
