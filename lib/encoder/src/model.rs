//! A sentence-embedding model on the CPU: any BERT-family sentence-transformers model in
//! Hugging Face layout (all-MiniLM-L6-v2 by default), run with candle. Truncation at the model's
//! `max_seq_length`, mean pooling over real tokens and L2 normalisation reproduce what
//! sentence-transformers computes, so the vectors match the PyTorch reference.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config as BertConfig;
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert;

/// The variable that names the model folder, quoted in every loading error.
pub const MODEL_DIR_VARIABLE: &str = "MILLRACE_EMBEDDING_MODEL_DIR";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "no embedding model in {dir}: {file} is missing (set {MODEL_DIR_VARIABLE} to a model folder, or run `make setup` to fetch all-MiniLM-L6-v2)"
    )]
    Missing { dir: PathBuf, file: &'static str },
    #[error(
        "the embedding model in {dir} cannot be loaded: {file}: {reason} ({MODEL_DIR_VARIABLE}; run `make setup` to fetch a fresh copy)"
    )]
    Broken { dir: PathBuf, file: &'static str, reason: String },
    #[error(
        "the embedding model in {dir} makes {model}-dimensional vectors but MILLRACE_EMBEDDING_DIM is {configured}; set MILLRACE_EMBEDDING_DIM={model} (and a storage table of that dimension) or choose another model with {MODEL_DIR_VARIABLE}"
    )]
    Dimensions { dir: PathBuf, model: usize, configured: usize },
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("model: {0}")]
    Compute(#[from] candle_core::Error),
}

/// `sentence_bert_config.json`: only the sequence limit matters here.
#[derive(serde::Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

pub struct SentenceEncoder {
    name: String,
    encoder: bert::Encoder,
    tokenizer: Tokenizer,
    dimensions: usize,
    max_seq_length: usize,
    device: Device,
}

impl SentenceEncoder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`, and refuses a
    /// model whose hidden size is not `expected_dimensions`.
    pub fn load(dir: &Path, expected_dimensions: usize) -> Result<Self, ModelError> {
        let read = |file: &'static str| -> Result<Vec<u8>, ModelError> {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(ModelError::Missing { dir: dir.to_owned(), file });
            }
            std::fs::read(&path).map_err(|err| ModelError::Broken {
                dir: dir.to_owned(),
                file,
                reason: err.to_string(),
            })
        };
        let broken = |file: &'static str, reason: String| ModelError::Broken { dir: dir.to_owned(), file, reason };

        let config: BertConfig =
            serde_json::from_slice(&read("config.json")?).map_err(|err| broken("config.json", err.to_string()))?;
        if config.hidden_size != expected_dimensions {
            return Err(ModelError::Dimensions {
                dir: dir.to_owned(),
                model: config.hidden_size,
                configured: expected_dimensions,
            });
        }
        // sentence-transformers truncates at its own limit (256 for MiniLM), shorter than the
        // 512 positions the model has; matching it is what makes the vectors match.
        let sentence_limit = match std::fs::read(dir.join("sentence_bert_config.json")) {
            Ok(bytes) => {
                serde_json::from_slice::<SentenceBertConfig>(&bytes)
                    .map_err(|err| broken("sentence_bert_config.json", err.to_string()))?
                    .max_seq_length
            }
            Err(_) => None,
        };
        let max_seq_length =
            sentence_limit.unwrap_or(config.max_position_embeddings).min(config.max_position_embeddings).max(2);

        let mut tokenizer =
            Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|err| broken("tokenizer.json", err.to_string()))?;
        // tokenizer.json of sentence-transformers models often carries fixed padding and a
        // truncation of its own (128 for MiniLM); the encoder packs texts and needs no padding.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_seq_length, ..TruncationParams::default() }))
            .map_err(|err| broken("tokenizer.json", err.to_string()))?;

        let device = Device::Cpu;
        // Buffered, not memory-mapped: mapping is `unsafe` in candle and the workspace forbids it;
        // the copy costs ~90 MB once at start.
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|err| broken("model.safetensors", err.to_string()))?;
        let encoder = bert::Encoder::load(vb, &config).map_err(|err| broken("model.safetensors", err.to_string()))?;

        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "local".to_owned());
        Ok(Self { name, encoder, tokenizer, dimensions: config.hidden_size, max_seq_length, device })
    }

    /// The model name recorded with every vector: the folder's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// One unit vector per text, in order, from one forward pass.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|err| ModelError::Tokenize(err.to_string()))?;
        let packed = bert::Packed::new(encodings.iter().map(|e| e.get_ids()));
        let hidden = self.encoder.forward(&packed, &self.device)?;
        Ok(bert::mean_pool_normalize(&hidden, &packed.spans)?)
    }
}
