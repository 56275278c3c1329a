//! The ingestion service's HTTP API, as the command line uses it: JSON calls, document
//! uploads, and a job's events stream. Every failure is one [`Failure`] saying which kind.

use std::fmt;
use std::path::Path;

use serde_json::Value;

/// Why a command could not do its work; printed as one line.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or local input (a missing path): exit status 2.
    Usage(String),
    /// No answer from the API: exit status 2.
    Unreachable(String),
    /// The API answered with an error: exit status 1.
    Server { status: u16, message: String },
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Server { .. } => 1,
            Self::Usage(_) | Self::Unreachable(_) => 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(message) | Self::Unreachable(message) => f.write_str(message),
            Self::Server { status, message } => write!(f, "the server answered {status}: {message}"),
        }
    }
}

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// An API at `base` called with `key` (as `Authorization: Bearer`), if any.
    pub fn new(base: &str, key: Option<String>) -> Result<Self, Failure> {
        let base = base.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base).map_err(|err| Failure::Usage(format!("--url {base:?} is not a URL: {err}")))?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| Failure::Usage("the API key holds characters a header cannot carry".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .map_err(|err| Failure::Usage(format!("cannot build an HTTP client: {err}")))?;
        Ok(Self { base, http })
    }

    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// A text answer as it is (a CSV report).
    pub async fn get_text(&self, path: &str) -> Result<String, Failure> {
        let response = self.check(self.http.get(self.url(path)).send().await).await?;
        response.text().await.map_err(|err| unreachable(&self.base, &err))
    }

    pub async fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Uploads a file as a document; the server finds its type from the name and the bytes.
    pub async fn upload(&self, file: &Path, document_id: &str) -> Result<Value, Failure> {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|err| Failure::Usage(format!("cannot read {}: {err}", file.display())))?;
        let name = file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name(name))
            .text("document_id", document_id.to_owned())
            .text("source", file.display().to_string());
        self.send(self.http.post(self.url("/v1/ingest")).multipart(form)).await
    }

    /// Uploads a file as document `document_id` with `source` (and into `collection`, if
    /// given), as `millrace sync` does.
    pub async fn upload_as(
        &self,
        file: &Path,
        document_id: &str,
        source: &str,
        collection: Option<&str>,
    ) -> Result<Value, Failure> {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|err| Failure::Usage(format!("cannot read {}: {err}", file.display())))?;
        let name = file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let mut form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name(name))
            .text("document_id", document_id.to_owned())
            .text("source", source.to_owned());
        if let Some(collection) = collection {
            form = form.text("collection", collection.to_owned());
        }
        self.send(self.http.post(self.url("/v1/ingest")).multipart(form)).await
    }

    /// A job's events, from its start, until the server closes the stream after the last.
    pub async fn events(&self, job_id: &str) -> Result<Events, Failure> {
        let response = self.http.get(self.url(&format!("/v1/jobs/{job_id}/events"))).send().await;
        let response = self.check(response).await?;
        Ok(Events { response, buffer: String::new(), base: self.base.clone() })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = self.check(request.send().await).await?;
        let text = response.text().await.map_err(|err| unreachable(&self.base, &err))?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|err| Failure::Server {
            status: 200,
            message: format!("an answer that is not JSON ({err}): {}", text.chars().take(200).collect::<String>()),
        })
    }

    async fn check(&self, response: reqwest::Result<reqwest::Response>) -> Result<reqwest::Response, Failure> {
        let response = response.map_err(|err| unreachable(&self.base, &err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|body| body["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        Err(Failure::Server { status: status.as_u16(), message })
    }
}

/// The cause at the bottom of a transport error ("Connection refused"), which says the most.
fn unreachable(base: &str, err: &reqwest::Error) -> Failure {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Failure::Unreachable(format!("cannot reach the millrace API at {base}: {cause}"))
}

/// A Server-Sent Events stream of a job.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
    base: String,
}

impl Events {
    /// The next event's type and data; None when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<(String, Value)>, Failure> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| block.lines().find_map(|line| line.strip_prefix(name).map(str::trim_start));
                // Comment lines (keep-alives) carry neither.
                if let (Some(kind), Some(data)) = (field("event:"), field("data:")) {
                    let data = serde_json::from_str(data).unwrap_or(Value::Null);
                    return Ok(Some((kind.to_owned(), data)));
                }
                continue;
            }
            match self.response.chunk().await.map_err(|err| unreachable(&self.base, &err))? {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }
}
