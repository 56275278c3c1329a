use base64::Engine as _;
use millrace_fake_openai::Config;
use serde_json::{Value, json};

use crate::helpers::{error_body, spawn, spawn_default};

fn vectors(body: &Value) -> Vec<Vec<f32>> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        })
        .collect()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[tokio::test]
async fn vectors_have_the_configured_dimension_unit_norm_and_are_deterministic() {
    let fake = spawn(Config { embedding_dim: 64, ..Config::default() }).await;
    let body = json!({"model": "fake-embed", "input": ["first text", "second text", "first text"]});
    let response = fake.post("/v1/embeddings", &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "fake-embed");
    let vs = vectors(&answer);
    assert_eq!(vs.len(), 3);
    for v in &vs {
        assert_eq!(v.len(), 64);
        assert!((norm(v) - 1.0).abs() < 1e-4);
    }
    assert_eq!(vs[0], vs[2]);
    assert_ne!(vs[0], vs[1]);
    // 10 + 11 + 10 chars: ceil(chars / 4) each.
    assert_eq!(answer["usage"]["prompt_tokens"], 3 + 3 + 3);
    assert_eq!(answer["usage"]["total_tokens"], 9);

    // Same vector from a second fake, a single-string input, and the library function.
    let other = spawn(Config { embedding_dim: 64, seed: Some(99), ..Config::default() }).await;
    let single: Value =
        other.post("/v1/embeddings", &json!({"model": "m", "input": "first text"})).await.json().await.unwrap();
    assert_eq!(vectors(&single)[0], vs[0]);
    assert_eq!(millrace_fake_openai::embedding("first text", 64), vs[0]);
}

#[tokio::test]
async fn dimensions_and_base64_encoding_are_honoured() {
    let fake = spawn_default().await;
    let answer: Value = fake
        .post("/v1/embeddings", &json!({"model": "m", "input": "abc", "dimensions": 8}))
        .await
        .json()
        .await
        .unwrap();
    let floats = vectors(&answer).remove(0);
    assert_eq!(floats.len(), 8);

    let answer: Value = fake
        .post("/v1/embeddings", &json!({"model": "m", "input": "abc", "dimensions": 8, "encoding_format": "base64"}))
        .await
        .json()
        .await
        .unwrap();
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(answer["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let decoded: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(decoded, floats);
}

#[tokio::test]
async fn bad_inputs_get_400s() {
    let fake = spawn_default().await;
    let cases = [
        (json!({"input": "x"}), "model"),
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": []}), "input"),
        (json!({"model": "m", "input": ["ok", ""]}), "input[1]"),
        (json!({"model": "m", "input": [{"text": "x"}]}), "input[0]"),
        (json!({"model": "m", "input": "x", "encoding_format": "hex"}), "encoding_format"),
        (json!({"model": "m", "input": "x", "dimensions": 0}), "dimensions"),
    ];
    for (body, param) in cases {
        let error = error_body(fake.post("/v1/embeddings", &body).await, 400).await;
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], param, "{body}");
    }
}
