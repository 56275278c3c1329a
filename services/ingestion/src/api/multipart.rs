//! The multipart form of `POST /v1/ingest`: a `file` field with the document, as browsers and
//! `curl -F file=@guide.pdf` send it, and the JSON form's other fields as text fields. The file
//! is read chunk by chunk under the document size limit, so an oversized upload is refused
//! (413) without being held in memory.

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;
use millrace_common::{ApiError, ErrorCode};

use crate::validate::{self, Payload, RawOptions, Submission};

/// The form's text fields, in the order the documentation lists them.
const TEXT_FIELDS: &[&str] =
    &["document_id", "content_type", "source", "metadata", "options", "chunk_size", "chunk_overlap", "collection"];

/// Largest text field: room for the largest metadata object, with its escaping.
const MAX_TEXT_FIELD_BYTES: usize = 2 * validate::MAX_METADATA_BYTES;

#[derive(Default)]
struct Form {
    file: Option<File>,
    text: Vec<(String, String)>,
}

struct File {
    bytes: Vec<u8>,
    name: Option<String>,
    content_type: Option<String>,
}

impl Form {
    fn take(&mut self, name: &str) -> Option<String> {
        let index = self.text.iter().position(|(field, _)| field == name)?;
        Some(self.text.swap_remove(index).1)
    }
}

/// Reads the whole form into a submission; `max_bytes` bounds the file.
pub(crate) async fn read_form(mut multipart: Multipart, max_bytes: usize) -> Result<Submission, ApiError> {
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().map(str::to_owned).ok_or_else(|| ApiError::invalid("a form field has no name"))?;
        match name.as_str() {
            "file" => {
                if form.file.is_some() {
                    return Err(ApiError::invalid("`file` is given twice; send one document per request"));
                }
                form.file = Some(read_file(field, max_bytes).await?);
            }
            text if TEXT_FIELDS.contains(&text) => {
                if form.text.iter().any(|(seen, _)| seen == text) {
                    return Err(ApiError::invalid(format!("`{text}` is given twice")));
                }
                let value = read_text(field, &name).await?;
                form.text.push((name, value));
            }
            "content" | "content_base64" | "url" => {
                return Err(ApiError::invalid(format!(
                    "`{name}` is not a field of the multipart form: send the document as `file`, or use the JSON form"
                )));
            }
            _ => {
                return Err(ApiError::invalid(format!(
                    "unknown field `{name}`; the multipart form takes file, {}",
                    TEXT_FIELDS.join(", ")
                )));
            }
        }
    }
    let file = form.file.take().ok_or_else(|| ApiError::invalid("the multipart form needs a `file` field"))?;
    into_submission(form, file)
}

fn into_submission(mut form: Form, file: File) -> Result<Submission, ApiError> {
    let metadata = form.take("metadata").map(|text| validate::metadata_from_json(&text, "metadata")).transpose()?;
    let chunk_size = form.take("chunk_size").map(|text| validate::integer_field(&text, "chunk_size")).transpose()?;
    let chunk_overlap =
        form.take("chunk_overlap").map(|text| validate::integer_field(&text, "chunk_overlap")).transpose()?;
    // An empty `options` field is one left blank (an HTML form sends those), not a second way
    // of giving the options.
    let options = match form.take("options").filter(|text| !text.trim().is_empty()) {
        Some(_) if chunk_size.is_some() || chunk_overlap.is_some() => {
            return Err(ApiError::invalid(
                "send either `options` or the `chunk_size` and `chunk_overlap` fields, not both",
            ));
        }
        Some(text) => validate::options_from_json(&text)?,
        None => RawOptions { chunk_size, chunk_overlap, prefix: "" },
    };
    let declared = form.take("content_type").filter(|text| !text.trim().is_empty());
    Ok(Submission {
        document_id: form.take("document_id"),
        content_type: validate::multipart_content_type(declared, file.content_type.as_deref()),
        file_name: file.name,
        payload: Payload::Bytes(file.bytes),
        source: form.take("source"),
        metadata,
        options,
        collection: form.take("collection"),
    })
}

async fn read_file(mut field: Field<'_>, max_bytes: usize) -> Result<File, ApiError> {
    let name = field.file_name().map(str::to_owned);
    let content_type = field.content_type().map(str::to_owned);
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > max_bytes {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("`file` is larger than {max_bytes} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(File { bytes, name, content_type })
}

async fn read_text(mut field: Field<'_>, name: &str) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
            return Err(ApiError::invalid(format!("`{name}` is larger than {MAX_TEXT_FIELD_BYTES} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::invalid(format!("`{name}` is not UTF-8 text")))
}

/// Past the body limit is 413, like the JSON form; anything else is a malformed body.
fn multipart_error(err: MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "request body is larger than this endpoint accepts")
    } else {
        ApiError::bad_request(format!("cannot read the multipart form: {}", err.body_text()))
    }
}
