use serde_json::{Value, json};

use crate::helpers::{chat_body, error_body, spawn_default};

fn metadata_schema() -> Value {
    json!({
        "type": "json_schema",
        "json_schema": {"name": "chunk_metadata", "strict": true, "schema": {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "summary": {"type": "string"},
                "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 5},
                "category": {"type": "string", "enum": ["technical", "legal", "other"]},
                "word_count": {"type": "integer", "minimum": 0},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "has_code": {"type": "boolean"}
            },
            "required": ["title", "summary", "keywords", "category", "word_count", "confidence", "has_code"],
            "additionalProperties": false
        }}
    })
}

async fn completion(fake: &crate::helpers::TestFake, body: &Value) -> Value {
    let response = fake.post("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn json_schema_content_parses_and_has_the_required_properties() {
    let fake = spawn_default().await;
    let mut body = chat_body("Consumer groups share a stream between replicas of a stage");
    body["response_format"] = metadata_schema();
    let answer = completion(&fake, &body).await;

    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "fake-chat");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(answer["created"].is_u64());
    let choice = &answer["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");

    let content: Value = serde_json::from_str(choice["message"]["content"].as_str().unwrap()).unwrap();
    let object = content.as_object().unwrap();
    assert_eq!(object.len(), 7, "{content}");
    assert_eq!(content["title"], "Consumer Groups Share A Stream Between Replicas Of");
    assert!(content["summary"].as_str().unwrap().starts_with("Consumer groups share"));
    let keywords = content["keywords"].as_array().unwrap();
    assert!((1..=5).contains(&keywords.len()));
    assert!(keywords.iter().all(Value::is_string));
    assert!(["technical", "legal", "other"].contains(&content["category"].as_str().unwrap()));
    assert_eq!(content["word_count"].as_u64(), Some(10));
    assert!((0.0..=1.0).contains(&content["confidence"].as_f64().unwrap()));
    assert!(content["has_code"].is_boolean());

    let usage = &answer["usage"];
    let (prompt, completion) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
    assert!(prompt > 0 && completion > 0);
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));
}

#[tokio::test]
async fn answers_are_deterministic_and_follow_the_input() {
    let fake = spawn_default().await;
    let content = |answer: Value| answer["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let mut first = chat_body("alpha beta gamma");
    first["response_format"] = metadata_schema();
    let mut second = chat_body("delta epsilon");
    second["response_format"] = metadata_schema();
    let a = content(completion(&fake, &first).await);
    assert_eq!(a, content(completion(&fake, &first).await));
    assert_ne!(a, content(completion(&fake, &second).await));

    let plain = content(completion(&fake, &chat_body("tell me about rivers")).await);
    assert!(plain.contains("tell me about rivers"), "{plain}");
}

#[tokio::test]
async fn json_object_mode_returns_an_object_and_needs_the_word_json() {
    let fake = spawn_default().await;
    let mut body = chat_body("Describe this as JSON: mill ponds");
    body["response_format"] = json!({"type": "json_object"});
    let answer = completion(&fake, &body).await;
    let content: Value = serde_json::from_str(answer["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(content.is_object());

    let mut body = chat_body("mill ponds");
    body["response_format"] = json!({"type": "json_object"});
    let error = error_body(fake.post("/v1/chat/completions", &body).await, 400).await;
    assert_eq!(error["param"], "messages");
}

#[tokio::test]
async fn max_tokens_cuts_the_answer_with_finish_reason_length() {
    let fake = spawn_default().await;
    let mut body = chat_body("a fairly long question about the many stages of a document pipeline");
    body["max_tokens"] = json!(3);
    let answer = completion(&fake, &body).await;
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn missing_or_invalid_fields_get_openai_style_400s() {
    let fake = spawn_default().await;
    let cases = [
        (json!({"messages": [{"role": "user", "content": "x"}]}), "model", "missing_required_parameter"),
        (json!({"model": "m"}), "messages", "missing_required_parameter"),
        (json!({"model": "m", "messages": []}), "messages", "empty_array"),
        (json!({"model": "m", "messages": [{"content": "x"}]}), "messages[0].role", "missing_required_parameter"),
        (json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}), "messages[0].role", "invalid_value"),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}),
            "temperature",
            "invalid_value",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}),
            "stream_options",
            "invalid_value",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
            "response_format.json_schema.name",
            "missing_required_parameter",
        ),
    ];
    for (body, param, code) in cases {
        let error = error_body(fake.post("/v1/chat/completions", &body).await, 400).await;
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert_eq!(error["param"], param, "{body}");
        assert_eq!(error["code"], code, "{body}");
    }

    let response = fake.client.post(fake.url("/v1/chat/completions")).body("{not json").send().await.unwrap();
    let error = error_body(response, 400).await;
    assert_eq!(error["code"], "invalid_json");
    assert_eq!(fake.stats().await.invalid, 9);
}

#[tokio::test]
async fn an_api_key_is_required_when_configured() {
    let fake =
        crate::helpers::spawn(millrace_fake_openai::Config { api_key: Some("sk-test".into()), ..Default::default() })
            .await;
    let error = error_body(fake.post("/v1/chat/completions", &chat_body("hi")).await, 401).await;
    assert_eq!(error["code"], "invalid_api_key");
    let response = fake
        .client
        .post(fake.url("/v1/chat/completions"))
        .bearer_auth("sk-test")
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn models_lists_the_defaults_and_every_model_asked_about() {
    let fake = spawn_default().await;
    let mut body = chat_body("hello");
    body["model"] = json!("gpt-4o-mini");
    completion(&fake, &body).await;
    let list: Value = fake.get("/v1/models").await.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    for id in ["fake-chat", "fake-embed", "gpt-4o-mini"] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    let one: Value = fake.get("/v1/models/anything").await.json().await.unwrap();
    assert_eq!(one["id"], "anything");

    let error = error_body(fake.get("/v1/nope").await, 404).await;
    assert!(error["message"].as_str().unwrap().contains("/v1/nope"));
}
