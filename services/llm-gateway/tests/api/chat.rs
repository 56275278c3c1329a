use millrace_llm_gateway::DEFAULT_CHAT_MODEL;
use serde_json::{Value, json};

use crate::helpers::{chat_request, gateway_for, spawn_fake};

#[tokio::test]
async fn chat_with_a_json_schema_returns_conforming_json() {
    let fake = spawn_fake(Default::default()).await;
    let mut gateway = gateway_for(&fake, &[]).await;
    let schema = json!({
        "type": "json_schema",
        "json_schema": {"name": "chunk_metadata", "strict": true, "schema": {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
                "word_count": {"type": "integer", "minimum": 0},
                "technical": {"type": "boolean"}
            },
            "required": ["title", "keywords", "word_count", "technical"],
            "additionalProperties": false
        }}
    });
    let mut request = chat_request("Circuit breakers protect slow upstream services");
    request.response_format_json = schema.to_string();
    request.temperature = Some(0.0);
    request.max_tokens = Some(500);
    request.job_id = "job-1".into();

    let answer = gateway.client.chat(request).await.unwrap().into_inner();
    assert_eq!(answer.model, DEFAULT_CHAT_MODEL);
    assert_eq!(answer.finish_reason, "stop");
    let content: Value = serde_json::from_str(&answer.content).unwrap();
    assert_eq!(content["title"], "Circuit Breakers Protect Slow Upstream Services");
    assert!(content["keywords"].as_array().unwrap().iter().all(Value::is_string));
    assert_eq!(content["word_count"], 6);
    assert!(content["technical"].is_boolean());
    let usage = answer.usage.unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);

    let stats = fake.stats();
    assert_eq!(stats.by_endpoint["chat_completions"].served, 1);
    assert_eq!(stats.prompt_tokens, u64::from(usage.prompt_tokens));
}

#[tokio::test]
async fn a_named_model_and_plain_text_pass_through() {
    let fake = spawn_fake(Default::default()).await;
    let mut gateway = gateway_for(&fake, &[("LLM_CHAT_MODEL", "configured-default")]).await;
    let answer = gateway.client.chat(chat_request("hello there")).await.unwrap().into_inner();
    assert_eq!(answer.model, "configured-default");
    assert!(answer.content.contains("hello there"));

    let mut request = chat_request("hello there");
    request.model = "asked-for".into();
    assert_eq!(gateway.client.chat(request).await.unwrap().into_inner().model, "asked-for");
}

#[tokio::test]
async fn the_api_key_is_sent_as_a_bearer_token() {
    let fake = spawn_fake(millrace_fake_openai::Config { api_key: Some("sk-test".into()), ..Default::default() }).await;
    let mut with_key = gateway_for(&fake, &[("LLM_API_KEY", "sk-test")]).await;
    with_key.client.chat(chat_request("hi")).await.unwrap();

    let mut without = gateway_for(&fake, &[]).await;
    let status = without.client.chat(chat_request("hi")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("401"), "{}", status.message());
}
