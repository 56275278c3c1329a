//! `POST /v1/embeddings`: OpenAI's request and answer shapes around [`Gateway::embed`];
//! `encoding_format: "base64"` as [`EncodedEmbedding`] encodes it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use millrace_openai::{ApiError, EmbeddingUsage, EmbeddingsResponse, EncodedEmbedding};
use serde_json::Value;

use millrace_auth::Caller;

use super::{NO_JOB, OpenAiError, field, finish, json_object, kind, virtual_key};
use crate::core::Gateway;
use crate::upstream::EmbeddingAnswer;

const METHOD: &str = "openai_embeddings";

pub(super) async fn create(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = virtual_key(&caller);
    let request = match parse(body) {
        Ok(request) => request,
        Err(err) => return OpenAiError::from(err).into_response(),
    };
    match finish(METHOD, &key.id, gateway.embed(request.model, request.inputs, NO_JOB, Some(&key)).await) {
        Ok(answer) => axum::Json(list(answer, request.encoding)).into_response(),
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

#[derive(Debug)]
struct EmbedRequest {
    model: String,
    inputs: Vec<String>,
    encoding: Encoding,
}

fn parse(body: Result<Bytes, BytesRejection>) -> Result<EmbedRequest, ApiError> {
    let mut object = json_object(body)?;
    // Empty or absent: the gateway's default embedding model.
    let model = field::<String>(&mut object, "model", "a string")?.unwrap_or_default();
    let inputs = inputs(object.remove("input"))?;
    let encoding = match field::<String>(&mut object, "encoding_format", "a string")?.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                "invalid_value",
                format!("Invalid 'encoding_format': '{other}'. Expected 'float' or 'base64'."),
            ));
        }
    };
    if !matches!(object.get("dimensions"), None | Some(Value::Null)) {
        // The vector length is the upstream model's; a shortened one would not be comparable
        // with the vectors already stored.
        return Err(ApiError::unsupported("dimensions", "dimensions is not supported by this gateway."));
    }
    Ok(EmbedRequest { model, inputs, encoding })
}

fn inputs(raw: Option<Value>) -> Result<Vec<String>, ApiError> {
    let items = match raw {
        None | Some(Value::Null) => return Err(ApiError::missing("input")),
        Some(Value::String(text)) => vec![Value::String(text)],
        Some(Value::Array(items)) => items,
        Some(other) => return Err(ApiError::invalid_type("input", "a string or an array of strings", kind(&other))),
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "input",
            "empty_array",
            "Invalid 'input': empty array. Expected an array with minimum length 1.",
        ));
    }
    if items.iter().any(|item| item.is_number() || item.is_array()) {
        return Err(ApiError::unsupported(
            "input",
            "Invalid 'input': token arrays are not supported by this gateway (its upstreams may use other tokenizers); send the text.",
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(text) if text.is_empty() => Err(ApiError::invalid(
                format!("input[{i}]"),
                "invalid_value",
                format!("Invalid 'input[{i}]': empty string. Expected a non-empty string."),
            )),
            Value::String(text) => Ok(text),
            other => Err(ApiError::invalid_type(&format!("input[{i}]"), "a string", kind(&other))),
        })
        .collect()
}

/// OpenAI's answer: a `list` of `embedding` objects.
fn list(answer: EmbeddingAnswer, encoding: Encoding) -> EmbeddingsResponse<EncodedEmbedding> {
    let usage = EmbeddingUsage {
        prompt_tokens: answer.usage.prompt_tokens.into(),
        total_tokens: answer.usage.total_tokens.into(),
        ..EmbeddingUsage::default()
    };
    let vectors = answer.vectors.into_iter().map(|vector| EncodedEmbedding::new(vector, encoding == Encoding::Base64));
    EmbeddingsResponse::new(answer.model, vectors, usage)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use serde_json::json;

    use super::*;
    use crate::upstream::Usage;

    fn parse_json(body: Value) -> Result<EmbedRequest, ApiError> {
        parse(Ok(Bytes::from(body.to_string())))
    }

    #[test]
    fn strings_and_lists_of_strings_are_inputs() {
        let request = parse_json(json!({"model": "e", "input": "one"})).unwrap();
        assert_eq!(
            (request.model.as_str(), request.inputs, request.encoding),
            ("e", vec!["one".to_owned()], Encoding::Float)
        );
        let request = parse_json(json!({"input": ["a", "b"], "encoding_format": "base64", "user": "x"})).unwrap();
        assert_eq!((request.model.as_str(), request.inputs.len(), request.encoding), ("", 2, Encoding::Base64));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!({"model": "e"}), "input"),
            (json!({"input": []}), "input"),
            (json!({"input": [1, 2, 3]}), "input"),
            (json!({"input": [[1, 2], [3]]}), "input"),
            (json!({"input": {"text": "x"}}), "input"),
            (json!({"input": ["ok", ""]}), "input[1]"),
            (json!({"input": ["ok", {"text": "x"}]}), "input[1]"),
            (json!({"input": "x", "encoding_format": "hex"}), "encoding_format"),
            (json!({"input": "x", "dimensions": 256}), "dimensions"),
        ];
        for (body, param) in cases {
            let err = parse_json(body.clone()).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.param.as_deref(), Some(param), "{body}");
            assert!(err.message.contains(param), "{body}: {}", err.message);
        }
    }

    #[test]
    fn base64_holds_little_endian_f32s() {
        let vector = vec![1.0f32, -0.5, 0.123_456_79, f32::MIN_POSITIVE];
        let answer = EmbeddingAnswer { model: "e".into(), vectors: vec![vector.clone()], usage: Usage::default() };
        let body = serde_json::to_value(list(answer, Encoding::Base64)).unwrap();
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(body["data"][0]["embedding"].as_str().unwrap()).unwrap();
        let decoded: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(decoded, vector);
        assert_eq!(EncodedEmbedding::new(vec![1.0], true), EncodedEmbedding::Base64("AACAPw==".into()));
    }
}
