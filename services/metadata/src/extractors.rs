//! The metadata extractors: one file per backend, chosen by configuration. Whatever the backend,
//! chunks identical to one of the document's visible version (incremental re-ingest) keep the
//! metadata stored for them when the same kind of extractor made it: no model call for those.

pub mod extractive;
mod llm;

use llm::GroupResult;

use millrace_common::HandlerError;
use millrace_common::tls::GrpcTls;
use millrace_pipeline::runtime::GATEWAY_BREAKER;
use millrace_proto::{Chunk, ChunkBatch};
use millrace_resilience::{BreakerConfig, CircuitBreaker};
use serde_json::Value;
use tonic::transport::Channel;

use crate::Provider;

/// The metadata of one batch.
#[derive(Debug, Clone, Default)]
pub struct Extraction {
    /// One object per chunk, in chunk order.
    pub metadata: Vec<Value>,
    /// Per chunk: whether stored metadata was reused.
    pub reused: Vec<bool>,
    /// Chunks whose LLM metadata failed (they carry extractive metadata and `llm_error`).
    pub failed: u32,
}

pub enum Extractor {
    Extractive,
    Llm { llm: Box<llm::LlmExtractor>, chunks_per_request: usize },
}

impl Extractor {
    /// `breaker` guards the calls to the gateway, if the extractor makes any.
    pub fn new(provider: &Provider, breaker: &BreakerConfig, tls: &GrpcTls) -> anyhow::Result<Self> {
        Ok(match provider {
            Provider::Extractive => Self::Extractive,
            Provider::Llm { gateway_url, model, chunks_per_request } => {
                let channel = millrace_common::grpc_client::lazy_channel("LLM_GATEWAY_URL", gateway_url, None, tls)?;
                let breaker = CircuitBreaker::new(GATEWAY_BREAKER, breaker.clone());
                Self::Llm {
                    llm: Box::new(llm::LlmExtractor::new(channel, model.clone(), breaker)),
                    chunks_per_request: *chunks_per_request,
                }
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Extractive => "extractive",
            Self::Llm { .. } => "llm",
        }
    }

    /// The gateway channel to check for readiness, if this extractor uses one.
    pub fn readiness(&self) -> Option<GatewayCheck> {
        match self {
            Self::Extractive => None,
            Self::Llm { llm, .. } => Some(GatewayCheck(llm.channel())),
        }
    }

    /// The breaker toward the gateway, if this extractor calls it: the stage stops pulling
    /// while it is open.
    pub fn breaker(&self) -> Option<CircuitBreaker> {
        match self {
            Self::Extractive => None,
            Self::Llm { llm, .. } => Some(llm.breaker()),
        }
    }

    /// The stored metadata of an identical chunk, if this extractor would have made the same kind.
    fn reusable(&self, chunk: &Chunk) -> Option<Value> {
        let stored = chunk.stored.as_ref()?;
        let value: Value = serde_json::from_str(&stored.metadata_json).ok().filter(Value::is_object)?;
        let accepted = match self {
            Self::Extractive => value["extractor"] == "extractive" && value.get("llm_error").is_none(),
            Self::Llm { llm, .. } => llm.accepts(&value),
        };
        accepted.then_some(value)
    }

    /// One metadata object per chunk, in chunk order.
    pub async fn extract(&self, batch: &ChunkBatch) -> Result<Extraction, HandlerError> {
        let mut metadata: Vec<Option<Value>> = batch.chunks.iter().map(|chunk| self.reusable(chunk)).collect();
        let reused: Vec<bool> = metadata.iter().map(Option::is_some).collect();
        let todo: Vec<usize> = (0..batch.chunks.len()).filter(|&i| !reused[i]).collect();
        let mut failed = 0;
        match self {
            Self::Extractive => {
                for &i in &todo {
                    metadata[i] = Some(extractive::extract(&batch.chunks[i].text));
                }
            }
            Self::Llm { llm, chunks_per_request } => {
                let groups: Vec<&[usize]> = todo.chunks((*chunks_per_request).max(1)).collect();
                let requests = groups.iter().map(|indices| {
                    let group = llm::Group {
                        document_id: &batch.document_id,
                        document_title: &batch.document_title,
                        job_id: &batch.job_id,
                        chunks: indices.iter().map(|&i| &batch.chunks[i]).collect(),
                    };
                    async move { llm.extract(&group).await }
                });
                // Every request runs to its end even when another fails: cancelling one would
                // waste its answer, and while the gateway's breaker is half-open it would
                // cancel the very probe that could close it.
                let results: Vec<GroupResult> =
                    futures::future::join_all(requests).await.into_iter().collect::<Result<_, _>>()?;
                for (indices, result) in groups.iter().zip(results) {
                    if result.failed {
                        failed += indices.len() as u32;
                    }
                    for (&i, value) in indices.iter().zip(result.metadata) {
                        metadata[i] = Some(value);
                    }
                }
            }
        }
        let metadata: Vec<Value> = metadata.into_iter().map(Option::unwrap_or_default).collect();
        Ok(Extraction { metadata, reused, failed })
    }
}

#[derive(Clone)]
pub struct GatewayCheck(Channel);

impl GatewayCheck {
    pub async fn check(self) -> Result<(), String> {
        millrace_common::grpc_client::check_health(self.0).await
    }
}

#[cfg(test)]
mod tests {
    use millrace_proto::StoredChunk;
    use serde_json::json;

    use super::*;

    fn chunk(text: &str, stored: Option<Value>) -> Chunk {
        Chunk {
            text: text.into(),
            stored: stored.map(|m| StoredChunk { metadata_json: m.to_string(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn stored_metadata_of_the_same_extractor_is_reused_and_the_rest_extracted() {
        let batch = ChunkBatch {
            chunks: vec![
                chunk("Water turns the wheel.", Some(json!({"extractor": "extractive", "title": "kept"}))),
                chunk("Grain becomes flour.", None),
                chunk("A failed LLM answer.", Some(json!({"extractor": "extractive", "llm_error": "bad"}))),
                chunk("From another model.", Some(json!({"extractor": "llm", "model": "x"}))),
            ],
            ..Default::default()
        };
        let extraction = Extractor::Extractive.extract(&batch).await.unwrap();
        assert_eq!(extraction.reused, [true, false, false, false]);
        assert_eq!(extraction.metadata[0]["title"], "kept");
        assert_eq!(extraction.metadata[1]["summary"], "Grain becomes flour.");
        assert!(extraction.metadata[2].get("llm_error").is_none());
        assert_eq!(extraction.failed, 0);
    }
}
