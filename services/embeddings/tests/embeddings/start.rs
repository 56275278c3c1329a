//! The service starts only with its model.

use millrace_embeddings::{Embedder, LocalConfig, Provider};

/// The service builds its embedder through `Embedder::new`; the error it stops with must be
/// the clear one, not a silent fallback to hashing.
#[test]
fn the_service_refuses_to_start_without_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::Local(LocalConfig {
        model_dir: dir.path().join("nothing-here"),
        max_batch: 32,
        max_wait: std::time::Duration::from_millis(5),
    });
    let err = match Embedder::new(&provider, 384, &Default::default(), &Default::default()) {
        Ok(embedder) => panic!("started with {}", embedder.name()),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("MILLRACE_EMBEDDING_MODEL_DIR") && err.contains("make setup"), "{err}");
}
