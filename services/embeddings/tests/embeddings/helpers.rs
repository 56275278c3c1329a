use std::path::PathBuf;
use std::sync::OnceLock;

use millrace_embeddings::{DEFAULT_MODEL, LocalModel};

/// The model folder the service would use: `MILLRACE_EMBEDDING_MODEL_DIR`, else the one
/// `make setup` installs. These tests need the real model, so its absence is a failure.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("MILLRACE_EMBEDDING_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("MILLRACE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/millrace")))
            .expect("neither MILLRACE_HOME nor HOME is set");
        home.join("models").join(DEFAULT_MODEL)
    });
    assert!(
        dir.join("model.safetensors").is_file(),
        "no embedding model in {}: run `make setup` (or set MILLRACE_EMBEDDING_MODEL_DIR to a model folder)",
        dir.display()
    );
    dir
}

/// One loaded model per test process.
pub fn model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| LocalModel::load(&model_dir(), 384).unwrap())
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
