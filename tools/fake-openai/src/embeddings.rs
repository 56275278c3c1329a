//! `POST /v1/embeddings`: deterministic, unit-length vectors in which texts that share words
//! point in similar directions, so that search over fake embeddings still ranks sensibly.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::MAX_EMBEDDING_DIM;
use crate::error::OpenAiError;
use crate::{Answer, Body, Config, Usage, approx_tokens, hash64, words};

/// OpenAI's limits on one embeddings request.
const MAX_INPUTS: usize = 2048;
const MAX_INPUT_TOKENS: u64 = 8192;

/// The fake's embedding of `text`: the sum of a pseudo-random vector per lower-cased word (bag
/// of words, so shared words mean similar vectors) and one for the whole text (so that the same
/// words in another order still give another vector), L2-normalised.
///
/// The pseudo-random numbers come from SplitMix64 seeded with SHA-256, written out here rather
/// than taken from `rand`, whose generators may change their output between versions: vectors
/// stored by one build must stay comparable with queries embedded by the next.
pub fn embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut sum = vec![0.0f64; dim];
    let mut count = 0usize;
    for word in words(text) {
        count += 1;
        add_random(&mut sum, hash64(&["word", &word.to_lowercase()]), 1.0);
    }
    add_random(&mut sum, hash64(&["text", text]), 0.5 * (count.max(1) as f64).sqrt());
    let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        sum.iter().map(|x| (x / norm) as f32).collect()
    } else {
        let mut unit = vec![0.0; dim];
        if let Some(first) = unit.first_mut() {
            *first = 1.0;
        }
        unit
    }
}

/// Adds `weight` times a vector of uniform values in [-1, 1) drawn from `seed`.
fn add_random(sum: &mut [f64], mut seed: u64, weight: f64) {
    for x in sum.iter_mut() {
        *x += weight * uniform(splitmix64(&mut seed));
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

#[derive(Deserialize)]
struct Request {
    model: Option<String>,
    input: Option<Value>,
    encoding_format: Option<String>,
    dimensions: Option<u64>,
}

#[derive(Serialize)]
struct Response<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Encoded,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Encoded {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// One input: its text, and its token count (exact when the client sent token ids).
struct Input {
    text: String,
    tokens: u64,
}

pub(crate) fn answer(config: &Config, body: &[u8]) -> Result<Answer, OpenAiError> {
    let value: Value = serde_json::from_slice(body).map_err(OpenAiError::unparsable_body)?;
    let request: Request = serde_json::from_value(value)
        .map_err(|err| OpenAiError::invalid("", "invalid_type", format!("Invalid request body: {err}")))?;
    let model = request.model.filter(|m| !m.is_empty()).ok_or_else(|| OpenAiError::missing("model"))?;
    let inputs = inputs(request.input)?;
    let dim = match request.dimensions {
        None => config.embedding_dim,
        Some(d) if (1..=MAX_EMBEDDING_DIM as u64).contains(&d) => d as usize,
        Some(d) => {
            return Err(OpenAiError::invalid(
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
            return Err(OpenAiError::invalid(
                "encoding_format",
                "invalid_value",
                format!("Invalid 'encoding_format': {other:?}. Expected 'float' or 'base64'."),
            ));
        }
    };

    let prompt_tokens = inputs.iter().map(|input| input.tokens).sum();
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding(&input.text, dim);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Encoded::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Encoded::Float(vector)
            };
            Item { object: "embedding", index, embedding }
        })
        .collect();
    let response = Response {
        object: "list",
        data,
        model: &model,
        usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens },
    };
    let body = serde_json::to_vec(&response).map_err(|err| OpenAiError::invalid("", "internal", err.to_string()))?;
    let count = inputs.len() as u64;
    Ok(Answer { body: Body::Json(body), model, usage: Usage { prompt_tokens, completion_tokens: 0 }, inputs: count })
}

fn inputs(input: Option<Value>) -> Result<Vec<Input>, OpenAiError> {
    let inputs = match input {
        None | Some(Value::Null) => return Err(OpenAiError::missing("input")),
        Some(Value::String(text)) => vec![text_input("input", text)?],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(OpenAiError::invalid(
                "input",
                "empty_array",
                "Invalid 'input': empty array. Expected an array with minimum length 1.",
            ));
        }
        // An array of numbers is one input given as token ids.
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => vec![token_input("input", &items)?],
        Some(Value::Array(items)) => {
            if items.len() > MAX_INPUTS {
                return Err(OpenAiError::invalid(
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
            return Err(OpenAiError::invalid(
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

fn invalid_input(param: &str) -> OpenAiError {
    OpenAiError::invalid(
        param,
        "invalid_type",
        format!("Invalid '{param}': expected a string or an array of token ids."),
    )
}

fn text_input(param: &str, text: String) -> Result<Input, OpenAiError> {
    if text.is_empty() {
        return Err(OpenAiError::invalid(
            param,
            "invalid_value",
            format!("Invalid '{param}': empty string. Expected a non-empty string."),
        ));
    }
    let tokens = approx_tokens(&text);
    Ok(Input { text, tokens })
}

fn token_input(param: &str, ids: &[Value]) -> Result<Input, OpenAiError> {
    if ids.is_empty() || !ids.iter().all(Value::is_u64) {
        return Err(invalid_input(param));
    }
    let text = ids.iter().map(Value::to_string).collect::<Vec<_>>().join(" ");
    Ok(Input { text, tokens: ids.len() as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_unit_length_and_deterministic() {
        for text in ["", "a", "The quick brown fox", "ünïcødé text ✓"] {
            let v = embedding(text, 384);
            assert_eq!(v.len(), 384);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{text:?}: {norm}");
            assert_eq!(v, embedding(text, 384));
        }
    }

    #[test]
    fn shared_words_mean_closer_vectors() {
        let query = embedding("rust async runtime", 384);
        let related = embedding("the tokio async runtime for Rust programs", 384);
        let unrelated = embedding("a recipe for lemon cake with fresh berries", 384);
        assert!(cosine(&query, &related) > cosine(&query, &unrelated) + 0.2);
    }

    #[test]
    fn word_order_still_changes_the_vector() {
        assert_ne!(embedding("dog bites man", 64), embedding("man bites dog", 64));
    }

    #[test]
    fn the_generator_output_is_pinned() {
        // Guards the promise that vectors do not change between builds (SplitMix64's reference output).
        let mut state = 0u64;
        assert_eq!(splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
    }
}
