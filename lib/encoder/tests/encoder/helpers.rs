use std::path::PathBuf;
use std::sync::OnceLock;

use millrace_common::config::default_model_dir;
use millrace_encoder::SentenceEncoder;

/// The model folder the embeddings service would use: `MILLRACE_EMBEDDING_MODEL_DIR`, else the
/// one `make setup` installs. These tests need the real model, so its absence is a failure.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("MILLRACE_EMBEDDING_MODEL_DIR").map_or_else(default_model_dir, PathBuf::from);
    assert!(
        dir.join("model.safetensors").is_file(),
        "no embedding model in {}: run `make setup` (or set MILLRACE_EMBEDDING_MODEL_DIR to a model folder)",
        dir.display()
    );
    dir
}

/// One loaded model per test process.
pub fn model() -> &'static SentenceEncoder {
    static MODEL: OnceLock<SentenceEncoder> = OnceLock::new();
    MODEL.get_or_init(|| SentenceEncoder::load(&model_dir(), 384).unwrap())
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
