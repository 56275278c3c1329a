use std::path::PathBuf;
use std::sync::OnceLock;

use millrace_common::Settings;
use millrace_common::config::embedding_model_dir;
use millrace_encoder::SentenceEncoder;

/// The model folder the service would use, resolved as it resolves it. These tests need the
/// real model (`make setup` installs it).
pub fn model_dir() -> PathBuf {
    embedding_model_dir(&Settings::load().unwrap()).unwrap()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The model alone, without the batcher: what each text gets in a pass of its own.
pub fn model() -> &'static SentenceEncoder {
    static MODEL: OnceLock<SentenceEncoder> = OnceLock::new();
    MODEL.get_or_init(|| SentenceEncoder::load(&model_dir(), 384).unwrap())
}
