//! `POST /v1/embeddings`: deterministic, unit-length vectors in which texts that share words
//! point in similar directions ([`word_vectors`]), so that search over fake embeddings still
//! ranks sensibly.

use millrace_encoder::hashing::word_vectors;
use millrace_openai::{ApiError, EmbeddingUsage, EmbeddingsRequest, EmbeddingsResponse, EncodedEmbedding};
use serde_json::Value;

use crate::config::MAX_EMBEDDING_DIM;
use crate::{Answer, Body, Config, Usage, approx_tokens};

/// OpenAI's limits on one embeddings request.
const MAX_INPUTS: usize = 2048;
const MAX_INPUT_TOKENS: u64 = 8192;

/// One input: its text, and its token count (exact when the client sent token ids).
struct Input {
    text: String,
    tokens: u64,
}

pub(crate) fn answer(config: &Config, body: &[u8]) -> Result<Answer, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(ApiError::unparsable_json)?;
    let request: EmbeddingsRequest<Value> = serde_json::from_value(value)
        .map_err(|err| ApiError::invalid("", "invalid_type", format!("Invalid request body: {err}")))?;
    let model = request.model.filter(|m| !m.is_empty()).ok_or_else(|| ApiError::missing("model"))?;
    let inputs = inputs(request.input)?;
    let dim = match request.dimensions {
        None => config.embedding_dim,
        Some(d) if (1..=MAX_EMBEDDING_DIM as u64).contains(&d) => d as usize,
        Some(d) => {
            return Err(ApiError::invalid(
                "dimensions",
                "invalid_value",
                format!("Invalid 'dimensions': {d}. Expected a value between 1 and {MAX_EMBEDDING_DIM}."),
            ));
        }
    };
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                "invalid_value",
                format!("Invalid 'encoding_format': {other:?}. Expected 'float' or 'base64'."),
            ));
        }
    };

    let prompt_tokens = inputs.iter().map(|input| input.tokens).sum();
    let vectors = inputs.iter().map(|input| EncodedEmbedding::new(word_vectors(&input.text, dim), base64));
    let usage = EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens, ..EmbeddingUsage::default() };
    let response = EmbeddingsResponse::new(model.clone(), vectors, usage);
    let body = serde_json::to_vec(&response).map_err(|err| ApiError::invalid("", "internal", err.to_string()))?;
    let count = inputs.len() as u64;
    Ok(Answer { body: Body::Json(body), model, usage: Usage { prompt_tokens, completion_tokens: 0 }, inputs: count })
}

fn inputs(input: Option<Value>) -> Result<Vec<Input>, ApiError> {
    let inputs = match input {
        None | Some(Value::Null) => return Err(ApiError::missing("input")),
        Some(Value::String(text)) => vec![text_input("input", text)?],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid(
                "input",
                "empty_array",
                "Invalid 'input': empty array. Expected an array with minimum length 1.",
            ));
        }
        // An array of numbers is one input given as token ids.
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => vec![token_input("input", &items)?],
        Some(Value::Array(items)) => {
            if items.len() > MAX_INPUTS {
                return Err(ApiError::invalid(
                    "input",
                    "array_above_max_length",
                    format!(
                        "Invalid 'input': array too long. Expected at most {MAX_INPUTS} items, got {}.",
                        items.len()
                    ),
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let param = format!("input[{i}]");
                    match item {
                        Value::String(text) => text_input(&param, text),
                        Value::Array(ids) => token_input(&param, &ids),
                        _ => Err(invalid_input(&param)),
                    }
                })
                .collect::<Result<_, _>>()?
        }
        Some(_) => return Err(invalid_input("input")),
    };
    for (i, input) in inputs.iter().enumerate() {
        if input.tokens > MAX_INPUT_TOKENS {
            return Err(ApiError::invalid(
                format!("input[{i}]"),
                "context_length_exceeded",
                format!(
                    "This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you requested {} tokens.",
                    input.tokens
                ),
            ));
        }
    }
    Ok(inputs)
}

fn invalid_input(param: &str) -> ApiError {
    ApiError::invalid(param, "invalid_type", format!("Invalid '{param}': expected a string or an array of token ids."))
}

fn text_input(param: &str, text: String) -> Result<Input, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid(
            param,
            "invalid_value",
            format!("Invalid '{param}': empty string. Expected a non-empty string."),
        ));
    }
    let tokens = approx_tokens(&text);
    Ok(Input { text, tokens })
}

fn token_input(param: &str, ids: &[Value]) -> Result<Input, ApiError> {
    if ids.is_empty() || !ids.iter().all(Value::is_u64) {
        return Err(invalid_input(param));
    }
    let text = ids.iter().map(Value::to_string).collect::<Vec<_>>().join(" ");
    Ok(Input { text, tokens: ids.len() as u64 })
}
