//! The local sentence encoder (`millrace_encoder`) behind a [`Batcher`], so concurrent callers
//! share forward passes.

use std::path::Path;

use millrace_encoder::SentenceEncoder;

use super::batcher::{BatchConfig, BatchModel, Batcher};
use millrace_common::HandlerError;

impl BatchModel for SentenceEncoder {
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        self.embed(texts).map_err(|err| err.to_string())
    }
}

/// The local model behind a [`Batcher`], so concurrent callers share forward passes.
pub struct LocalEmbedder {
    batcher: Batcher,
    name: String,
    dimensions: usize,
}

impl LocalEmbedder {
    pub fn start(dir: &Path, dimensions: usize, batching: BatchConfig) -> anyhow::Result<Self> {
        let model = SentenceEncoder::load(dir, dimensions)?;
        let name = model.name().to_owned();
        let dimensions = model.dimensions();
        tracing::info!(model = %name, dir = %dir.display(), max_seq_length = model.max_seq_length(), "local embedding model loaded");
        let batcher =
            Batcher::start(model, batching).map_err(|err| anyhow::anyhow!("cannot start the model thread: {err}"))?;
        Ok(Self { batcher, name, dimensions })
    }

    pub fn model(&self) -> String {
        self.name.clone()
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub fn passes(&self) -> u64 {
        self.batcher.passes()
    }

    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, HandlerError> {
        self.batcher.embed(texts).await
    }
}
