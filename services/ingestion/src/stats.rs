//! The operator's view of the whole pipeline: `millrace.v1.Admin/Stats` of every service,
//! gathered concurrently. This service's own stats are read directly (the same code its
//! `Admin` service runs); a service that does not answer in time is shown unreachable instead
//! of failing the whole view.

use std::time::Duration;

use millrace_common::ApiError;
use millrace_pipeline::{Keys, Stage};
use millrace_proto::v1::admin_client::AdminClient;
use millrace_proto::v1::{StatsRequest, StatsResponse};
use serde::Serialize;
use tonic::transport::Channel;

use crate::SERVICE;

/// How long one service may take to answer before it is shown unreachable.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// This service's `millrace.v1.Admin/Stats`: it runs no worker, and reports the chunking queue
/// it feeds.
pub async fn own_stats(pool: &deadpool_redis::Pool, keys: &Keys) -> Result<StatsResponse, ApiError> {
    millrace_pipeline::runtime::stage_stats(pool, keys, SERVICE, Stage::Chunking, 0, 0).await
}

/// The whole pipeline, in the order ingestion, chunking, metadata, embeddings, storage,
/// llm-gateway.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStats {
    pub services: Vec<ServiceStats>,
}

/// One service: its stats when it answered, or why it did not.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStats {
    pub service: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub stats: Option<Snapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub concurrency: Concurrency,
    pub queues: Vec<Queue>,
    pub breakers: Vec<Breaker>,
    /// The service's own limits document (the gateway's `/v1/limits`, a stage's breaker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Concurrency {
    pub limit: u32,
    pub in_use: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Queue {
    pub stream: String,
    pub group: String,
    pub length: u64,
    pub lag: u64,
    pub pending: u64,
    pub dead_letters: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Breaker {
    pub name: String,
    pub state: String,
}

impl ServiceStats {
    fn new(service: &str, result: Result<StatsResponse, String>) -> Self {
        match result {
            Ok(stats) => Self {
                service: service.to_owned(),
                reachable: true,
                error: None,
                stats: Some(Snapshot {
                    concurrency: Concurrency { limit: stats.concurrency_limit, in_use: stats.concurrency_in_use },
                    queues: stats
                        .queues
                        .into_iter()
                        .map(|q| Queue {
                            stream: q.stream,
                            group: q.group,
                            length: q.length,
                            lag: q.lag,
                            pending: q.pending,
                            dead_letters: q.dead_letters,
                        })
                        .collect(),
                    breakers: stats.breakers.into_iter().map(|b| Breaker { name: b.name, state: b.state }).collect(),
                    limits: serde_json::from_str(&stats.limits_json).ok(),
                }),
            },
            Err(error) => Self { service: service.to_owned(), reachable: false, error: Some(error), stats: None },
        }
    }
}

/// Lazily connected channels to the other services (storage and embeddings share the ones
/// search and documents use).
#[derive(Clone)]
pub struct PeerChannels {
    pub chunking: Channel,
    pub metadata: Channel,
    pub embeddings: Channel,
    pub storage: Channel,
    pub llm_gateway: Channel,
}

/// One service to ask: its name, the variable that points at it (named in errors) and its
/// client.
#[derive(Clone)]
struct Peer {
    service: &'static str,
    variable: &'static str,
    client: AdminClient<Channel>,
}

impl Peer {
    fn new(service: &'static str, variable: &'static str, channel: Channel) -> Self {
        Self { service, variable, client: AdminClient::new(channel) }
    }

    async fn stats(&self, timeout: Duration) -> ServiceStats {
        let mut request = tonic::Request::new(StatsRequest {});
        request.set_timeout(timeout);
        let mut client = self.client.clone();
        let no_answer = || format!("no answer within {} ms", timeout.as_millis());
        // Our timer and the gRPC deadline expire together; whichever fires first, it is the same "no answer".
        let result = match tokio::time::timeout(timeout, client.stats(request)).await {
            Err(_) => Err(no_answer()),
            Ok(Err(status)) if matches!(status.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded) => {
                Err(no_answer())
            }
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Ok(Ok(response)) => {
                let stats = response.into_inner();
                if stats.service.is_empty() || stats.service == self.service {
                    Ok(stats)
                } else {
                    Err(format!(
                        "the service at MILLRACE_{} is {:?}, not {:?}",
                        self.variable, stats.service, self.service
                    ))
                }
            }
        };
        if let Err(error) = &result {
            tracing::debug!(service = self.service, error = %error, "no stats");
        }
        ServiceStats::new(self.service, result)
    }
}

/// The Admin clients of every other service, and this one's own stats: what `GET /v1/stats`
/// and the budget guard ask. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    pool: deadpool_redis::Pool,
    keys: Keys,
    chunking: Peer,
    metadata: Peer,
    embeddings: Peer,
    storage: Peer,
    llm_gateway: Peer,
    timeout: Duration,
}

impl Peers {
    pub fn new(pool: deadpool_redis::Pool, keys: Keys, peers: PeerChannels) -> Self {
        Self {
            pool,
            keys,
            chunking: Peer::new("chunking", "CHUNKING_URL", peers.chunking),
            metadata: Peer::new("metadata", "METADATA_URL", peers.metadata),
            embeddings: Peer::new("embeddings", "EMBEDDINGS_URL", peers.embeddings),
            storage: Peer::new("storage", "STORAGE_URL", peers.storage),
            llm_gateway: Peer::new("llm-gateway", "LLM_GATEWAY_URL", peers.llm_gateway),
            timeout: STATS_TIMEOUT,
        }
    }

    /// Asks every service at once; takes at most about one timeout.
    pub async fn collect(&self) -> PipelineStats {
        let own = async {
            let result = match tokio::time::timeout(self.timeout, own_stats(&self.pool, &self.keys)).await {
                Err(_) => Err(format!("no answer from Redis within {} ms", self.timeout.as_millis())),
                Ok(Err(err)) => Err(err.message),
                Ok(Ok(stats)) => Ok(stats),
            };
            ServiceStats::new(SERVICE, result)
        };
        let (ingestion, chunking, metadata, embeddings, storage, llm_gateway) = tokio::join!(
            own,
            self.chunking.stats(self.timeout),
            self.metadata.stats(self.timeout),
            self.embeddings.stats(self.timeout),
            self.storage.stats(self.timeout),
            self.llm_gateway.stats(self.timeout),
        );
        PipelineStats { services: vec![ingestion, chunking, metadata, embeddings, storage, llm_gateway] }
    }

    /// One other service's stats (`llm-gateway`, `metadata`, ...), with its own timeout.
    pub async fn service_stats(&self, service: &str, timeout: Duration) -> ServiceStats {
        let peer = [&self.chunking, &self.metadata, &self.embeddings, &self.storage, &self.llm_gateway]
            .into_iter()
            .find(|peer| peer.service == service);
        match peer {
            Some(peer) => peer.stats(timeout).await,
            None => ServiceStats::new(service, Err(format!("{service} is not a service of the pipeline"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use millrace_proto::v1::BreakerStats;

    use super::*;

    #[test]
    fn reachable_services_show_their_stats_and_others_only_why_not() {
        let answered = ServiceStats::new(
            "llm-gateway",
            Ok(StatsResponse {
                service: "llm-gateway".into(),
                concurrency_limit: 8,
                concurrency_in_use: 3,
                queues: Vec::new(),
                breakers: vec![BreakerStats { name: "chat".into(), state: "open".into() }],
                limits_json: String::new(),
            }),
        );
        assert_eq!(
            serde_json::to_value(&answered).unwrap(),
            serde_json::json!({
                "service": "llm-gateway",
                "reachable": true,
                "concurrency": {"limit": 8, "in_use": 3},
                "queues": [],
                "breakers": [{"name": "chat", "state": "open"}],
            })
        );
        let silent = ServiceStats::new("metadata", Err("no answer within 2000 ms".into()));
        assert_eq!(
            serde_json::to_value(&silent).unwrap(),
            serde_json::json!({"service": "metadata", "reachable": false, "error": "no answer within 2000 ms"})
        );
    }
}
