//! Dynamic batching with the real model: concurrent callers share forward passes and get the
//! vectors they would get alone.

use std::sync::Arc;
use std::time::Duration;

use millrace_embeddings::{BatchConfig, LocalEmbedder};

use crate::helpers::{cosine, model, model_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_merged_into_fewer_passes() {
    let embedder = Arc::new(
        LocalEmbedder::start(&model_dir(), 384, BatchConfig { max_batch: 32, max_wait: Duration::from_millis(200) })
            .unwrap(),
    );
    let texts: Vec<String> =
        (0..12).map(|i| format!("Request number {i} asks about water mills {}", "and wheels ".repeat(i))).collect();
    let calls: Vec<_> = texts
        .iter()
        .cloned()
        .map(|text| {
            let embedder = embedder.clone();
            tokio::spawn(async move { embedder.embed(&[text]).await })
        })
        .collect();
    let mut merged = Vec::new();
    for call in calls {
        merged.push(tokio::time::timeout(Duration::from_secs(60), call).await.unwrap().unwrap().unwrap().remove(0));
    }
    let passes = embedder.passes();
    assert!(passes < 12 / 2, "12 concurrent requests took {passes} passes");

    // Same vectors as each text alone.
    for (text, vector) in texts.iter().zip(&merged) {
        let alone = model().embed(std::slice::from_ref(text)).unwrap().remove(0);
        let similarity = cosine(&alone, vector);
        assert!(similarity >= 0.9999, "cosine {similarity} for {text:?}");
    }
}

#[tokio::test]
async fn a_request_larger_than_max_batch_spans_several_passes_in_order() {
    let embedder =
        LocalEmbedder::start(&model_dir(), 384, BatchConfig { max_batch: 4, max_wait: Duration::from_millis(1) })
            .unwrap();
    let texts: Vec<String> = (0..10).map(|i| format!("sentence {i} about turbine number {i}")).collect();
    let vectors = embedder.embed(&texts).await.unwrap();
    assert_eq!(embedder.passes(), 3);
    assert_eq!(embedder.model(), "all-MiniLM-L6-v2");
    let alone = model().embed(&texts[7..8]).unwrap().remove(0);
    assert!(cosine(&alone, &vectors[7]) >= 0.9999);
}
