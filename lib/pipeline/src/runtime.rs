//! How a stage service runs: its stream worker, its HTTP and gRPC ports, and an orderly
//! shutdown (stop pulling, drain in-flight work under a deadline, then close the ports).

use std::time::Duration;

use axum::Router;
use millrace_common::server::{AdminService, Listeners, Readiness, ops_router, serve};
use millrace_common::{ApiError, ServiceConfig, Settings};
use millrace_proto::{QueueStats, StatsResponse};
use millrace_streams::{Handler, StreamWorker, WorkerConfig, queue_stats};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{Keys, Stage};

/// Everything a stage service is made of.
pub struct StageService<H> {
    pub stage: Stage,
    pub config: ServiceConfig,
    pub worker: WorkerConfig,
    pub listeners: Listeners,
    pub client: redis::Client,
    pub pool: deadpool_redis::Pool,
    pub handler: H,
    /// The service's own HTTP routes (merged with health, readiness and metrics).
    pub router: Router,
    /// The service's own gRPC services (Admin, health and reflection are added).
    pub grpc: Routes,
    pub readiness: Readiness,
}

/// The stream-worker settings of a stage, read from `MILLRACE_*` variables.
pub fn worker_config(
    settings: &Settings,
    config: &ServiceConfig,
    stage: Stage,
    default_concurrency: usize,
) -> Result<WorkerConfig, millrace_common::ConfigError> {
    let keys = Keys::new(config.key_prefix.clone());
    WorkerConfig::from_settings(
        settings,
        keys.stream(stage),
        stage.name().to_owned(),
        keys.dead_letters(stage),
        config.consumer_name.clone(),
        config.shutdown_deadline,
        default_concurrency,
    )
}

impl<H: Handler> StageService<H> {
    /// Runs until `shutdown` is cancelled and in-flight work has drained.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let service: &'static str = self.stage.name();
        let worker = StreamWorker::new(self.worker.clone(), self.client, self.pool.clone(), self.handler);
        let handle = worker.handle();
        let pool = self.pool.clone();
        let worker_config = self.worker.clone();
        let admin = AdminService::new(move || {
            let pool = pool.clone();
            let handle = handle.clone();
            let worker_config = worker_config.clone();
            async move {
                let mut conn = pool.get().await?;
                let queue = queue_stats(
                    &mut conn,
                    &worker_config.stream,
                    &worker_config.group,
                    &worker_config.dead_letter_stream,
                )
                .await
                .map_err(ApiError::from)?;
                Ok(StatsResponse {
                    service: service.to_owned(),
                    concurrency_limit: handle.limit() as u32,
                    concurrency_in_use: handle.in_use() as u32,
                    queues: vec![QueueStats {
                        stream: queue.stream,
                        group: queue.group,
                        length: queue.length,
                        lag: queue.lag,
                        pending: queue.pending,
                        dead_letters: queue.dead_letters,
                    }],
                    breakers: Vec::new(),
                })
            }
        });
        let router = self.router.merge(ops_router(service, self.readiness));
        let grpc = self.grpc.add_service(admin);
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(service, self.listeners, router, grpc, shutdown.clone(), stop.clone()));

        let worked = worker.run(shutdown.clone()).await;
        // The ports stay open while draining so health checks and metrics keep answering.
        stop.cancel();
        let served = tokio::time::timeout(Duration::from_secs(5), server).await;
        worked.map_err(std::io::Error::other)?;
        match served {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => Ok(()),
        }
    }
}
