use millrace_fake_openai::{Config, FakeOpenAi, Stats};
use serde_json::{Value, json};

pub struct TestFake {
    pub fake: FakeOpenAi,
    pub client: reqwest::Client,
}

/// A fake on a free port of 127.0.0.1 with `config`'s behaviour.
pub async fn spawn(config: Config) -> TestFake {
    let config = Config { addr: "127.0.0.1:0".parse().unwrap(), ..config };
    let fake = millrace_fake_openai::spawn(config).await.unwrap();
    TestFake { fake, client: reqwest::Client::new() }
}

pub async fn spawn_default() -> TestFake {
    spawn(Config { seed: Some(7), ..Config::default() }).await
}

impl TestFake {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.fake.addr())
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn stats(&self) -> Stats {
        self.get("/stats").await.json().await.unwrap()
    }
}

pub fn chat_body(text: &str) -> Value {
    json!({"model": "fake-chat", "messages": [{"role": "user", "content": text}]})
}

/// Asserts an OpenAI-style error body and returns its `error` object.
pub async fn error_body(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.unwrap();
    let error = body["error"].clone();
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("code").is_some() && error.get("param").is_some(), "{body}");
    error
}
