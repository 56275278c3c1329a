use millrace_proto::v1::LlmEmbedRequest;

use crate::helpers::{gateway_for, spawn_fake};

#[tokio::test]
async fn embed_returns_one_unit_vector_per_input_in_order() {
    let fake = spawn_fake(millrace_fake_openai::Config { embedding_dim: 96, ..Default::default() }).await;
    let mut gateway = gateway_for(&fake, &[]).await;
    let inputs = vec!["first chunk".to_owned(), "second chunk".to_owned(), "first chunk".to_owned()];
    let request = LlmEmbedRequest { model: "fake-embed".into(), inputs: inputs.clone(), job_id: "job-2".into() };
    let answer = gateway.client.embed(request).await.unwrap().into_inner();

    assert_eq!(answer.model, "fake-embed");
    assert_eq!(answer.vectors.len(), 3);
    for (vector, input) in answer.vectors.iter().zip(&inputs) {
        assert_eq!(vector.values.len(), 96);
        let norm: f32 = vector.values.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_eq!(vector.values, millrace_fake_openai::embedding(input, 96));
    }
    assert_eq!(answer.vectors[0], answer.vectors[2]);
    assert_ne!(answer.vectors[0], answer.vectors[1]);
    assert_eq!(answer.usage.unwrap().prompt_tokens, 3 + 3 + 3);
}

#[tokio::test]
async fn no_inputs_means_no_vectors_and_no_upstream_call() {
    let fake = spawn_fake(Default::default()).await;
    let mut gateway = gateway_for(&fake, &[]).await;
    let answer = gateway.client.embed(LlmEmbedRequest::default()).await.unwrap().into_inner();
    assert!(answer.vectors.is_empty());
    assert_eq!(answer.model, millrace_llm_gateway::DEFAULT_EMBED_MODEL);
    assert_eq!(fake.stats().requests, 0);

    let request = LlmEmbedRequest { inputs: vec!["x".into(), String::new()], ..Default::default() };
    let status = gateway.client.embed(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("inputs[1]"));
}
