//! Virtual keys on the OpenAI-compatible API: who may call it (an `llm`-scoped key, answered in
//! OpenAI's error shape otherwise), and each key's own RPM, TPM and daily budget on the shared
//! Redis limiter, with real PostgreSQL keys, real Redis and the fake upstream.

use std::time::{Duration, Instant};

use millrace_auth::{NewKey, Scope};
use serde_json::{Value, json};

use crate::helpers::{TestGateway, client_with, gateway_for, llm_key, spawn_fake};

fn chat_body(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
}

async fn chat_with(gateway: &TestGateway, key: &str, body: &Value) -> reqwest::Response {
    let url = format!("http://{}/v1/chat/completions", gateway.http_addr);
    client_with(key).post(url).json(body).send().await.unwrap()
}

/// The `error` object of an OpenAI error answer with this status.
async fn openai_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string(), "{body}");
    body["error"].clone()
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response.headers().get("retry-after").map(|value| value.to_str().unwrap().parse().unwrap())
}

#[tokio::test]
async fn the_api_needs_a_key_with_the_llm_scope() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    let url = |path: &str| format!("http://{}{path}", gateway.http_addr);

    // No key, a malformed header, an unknown key: OpenAI's 401, which the SDKs raise as
    // AuthenticationError.
    let none = reqwest::Client::new().get(url("/v1/models")).send().await.unwrap();
    assert_eq!(openai_error(none, 401).await["code"], "invalid_api_key");
    let basic =
        reqwest::Client::new().get(url("/v1/models")).header("authorization", "Basic abc").send().await.unwrap();
    openai_error(basic, 401).await;
    let unknown = chat_with(&gateway, "mr_unknown-key", &chat_body("hi")).await;
    let error = openai_error(unknown, 401).await;
    assert!(!error["message"].as_str().unwrap().contains("mr_unknown-key"), "the secret is not echoed: {error}");

    // The admin key holds every scope but llm, and is told so; a read key is refused too.
    let admin = chat_with(&gateway, &gateway.admin_key, &chat_body("hi")).await;
    let error = openai_error(admin, 403).await;
    assert_eq!(error["type"], "permission_error");
    assert!(error["message"].as_str().unwrap().contains("admin holds every scope but 'llm'"), "{error}");
    let reader = gateway.key(NewKey { scopes: vec![Scope::Read, Scope::Search], ..llm_key(None, None, None) }).await;
    let error = openai_error(chat_with(&gateway, &reader, &chat_body("hi")).await, 403).await;
    assert!(error["message"].as_str().unwrap().contains("'llm'"), "{error}");
    assert_eq!(fake.stats().requests, 0, "no refused call reached the upstream");

    // The llm key is served, on every route of the API.
    let answer = chat_with(&gateway, &gateway.llm_key, &chat_body("hi")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(gateway.api_get("/v1/models").await.status(), 200);
    let embed = gateway.http().post(url("/v1/embeddings")).json(&json!({"input": "x"})).send().await.unwrap();
    assert_eq!(embed.status(), 200);

    // /v1/limits is the operators' page: admin only, in millrace's error shape.
    assert_eq!(gateway.get("/v1/limits").await.status(), 200);
    let as_llm = gateway.http().get(url("/v1/limits")).send().await.unwrap();
    assert_eq!(as_llm.status(), 403);
    let body: Value = as_llm.json().await.unwrap();
    assert_eq!(body["error"]["code"], "permission_denied", "{body}");
    let anonymous = reqwest::Client::new().get(url("/v1/limits")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // Health and unknown paths need no key.
    assert_eq!(reqwest::get(url("/healthz")).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(url("/v1/nope")).await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_a_second() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    let (id, secret) = gateway.llm_key_with(None, None, None).await;
    assert_eq!(chat_with(&gateway, &secret, &chat_body("hi")).await.status(), 200, "checked once: now cached");
    let revoked_at = Instant::now();
    gateway.store.revoke(&id).await.unwrap().unwrap();
    loop {
        let status = chat_with(&gateway, &secret, &chat_body("hi")).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_millis(1500),
            "still served {:?} after revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("revocation seen after {:?}", revoked_at.elapsed());
}

#[tokio::test]
async fn a_keys_rpm_limits_it_and_no_other_key() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    let (_, limited) = gateway.llm_key_with(Some(2), None, None).await;
    let (_, other) = gateway.llm_key_with(None, None, None).await;
    for i in 0..2 {
        assert_eq!(chat_with(&gateway, &limited, &chat_body(&format!("call {i}"))).await.status(), 200);
    }
    let refused = chat_with(&gateway, &limited, &chat_body("one too many")).await;
    let wait = retry_after(&refused).expect("a Retry-After");
    assert!((1..=61).contains(&wait), "the window frees a slot within a minute: {wait}");
    let error = openai_error(refused, 429).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"].as_str().unwrap().contains("requests per minute"), "{error}");
    // The other key is not limited by the first one's use.
    for i in 0..5 {
        assert_eq!(chat_with(&gateway, &other, &chat_body(&format!("other {i}"))).await.status(), 200);
    }
    assert_eq!(fake.stats().requests, 7, "the refused call never reached the upstream");
    let metrics = gateway.metrics().await;
    assert!(metrics.contains(r#"millrace_llm_gateway_key_refusals_total{limit="requests"} 1"#), "{metrics}");
}

#[tokio::test]
async fn a_keys_limits_are_shared_by_every_replica() {
    let fake = spawn_fake(Default::default()).await;
    let first = gateway_for(&fake, &[]).await;
    // A second replica: the same Redis prefix and key store.
    let second =
        gateway_for(&fake, &[("KEY_PREFIX", first.key_prefix.as_str()), ("DATABASE_URL", first.database_url.as_str())])
            .await;
    let (_, key) = first.llm_key_with(Some(3), None, None).await;
    for gateway in [&first, &second, &first] {
        assert_eq!(chat_with(gateway, &key, &chat_body("shared")).await.status(), 200);
    }
    openai_error(chat_with(&second, &key, &chat_body("fourth")).await, 429).await;
}

#[tokio::test]
async fn a_keys_tpm_counts_the_estimate_then_the_usage() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    let (_, key) = gateway.llm_key_with(None, Some(600), None).await;

    // More than the key may ever use at once: refused for good (no Retry-After, no retry).
    let huge = json!({"model": "gpt-4o-mini", "max_tokens": 700, "messages": [{"role": "user", "content": "hi"}]});
    let refused = chat_with(&gateway, &key, &huge).await;
    assert_eq!(retry_after(&refused), None);
    assert_eq!(refused.headers()["x-should-retry"], "false");
    openai_error(refused, 429).await;

    // 400 completion tokens reserved (the estimate); the fake's answer uses far fewer, and the
    // reservation is corrected to them: a second such call then fits the 600.
    let big = json!({"model": "gpt-4o-mini", "max_tokens": 400, "messages": [{"role": "user", "content": "hi"}]});
    let answer: Value = chat_with(&gateway, &key, &big).await.json().await.unwrap();
    let used = answer["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used < 150, "the fake answers briefly: {answer}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let response = chat_with(&gateway, &key, &big).await;
        if response.status() == 200 {
            break;
        }
        // Settling runs after the answer has gone back: wait for it, not for the window.
        assert_eq!(response.status(), 429);
        assert!(Instant::now() < deadline, "the estimate was never replaced by the usage");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At least 2 × `used` are spent: a call whose estimate fits the 600 alone, but not beside
    // them, waits for the window (the prompt "hi" is estimated at 8 tokens).
    let max_tokens = 593 - 2 * used;
    let almost =
        json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]});
    let third = chat_with(&gateway, &key, &almost).await;
    let wait = retry_after(&third).expect("tokens free up within the window");
    assert!((1..=61).contains(&wait), "{wait}");
    openai_error(third, 429).await;
}

#[tokio::test]
async fn a_keys_daily_budget_stops_it_until_midnight_utc() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    // gpt-4o-mini is priced: one call costs a few millionths of a dollar, past this budget.
    let (id, budgeted) = gateway.llm_key_with(None, None, Some(0.000_001)).await;
    let (_, other) = gateway.llm_key_with(None, None, Some(10.0)).await;
    assert_eq!(chat_with(&gateway, &budgeted, &chat_body("spend")).await.status(), 200);
    // The spend is written after the answer: the next call sees it within moments.
    let deadline = Instant::now() + Duration::from_secs(3);
    let refused = loop {
        let response = chat_with(&gateway, &budgeted, &chat_body("more")).await;
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 200);
        assert!(Instant::now() < deadline, "the key's spend never reached its budget");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wait = retry_after(&refused).unwrap();
    assert!(wait <= 24 * 3600, "until the next UTC day: {wait}");
    assert_eq!(refused.headers()["x-should-retry"], "false");
    let error = openai_error(refused, 429).await;
    assert_eq!(error["code"], "insufficient_quota");
    assert!(error["message"].as_str().unwrap().contains(&id), "{error}");
    // Another key, with a budget of its own, is not stopped.
    assert_eq!(chat_with(&gateway, &other, &chat_body("mine")).await.status(), 200);
}
