#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The ingestion service's API, over HTTP and gRPC, against a real redis-server.

mod batch;
mod console;
mod dlq;
mod documents;
mod grpc;
mod helpers;
mod ingest;
mod jobs;
mod keys;
mod multipart;
mod ops;
mod options;
mod runs;
mod scopes;
mod search;
mod stats;
mod tenants;
mod url;
mod watch;
mod webhooks;
