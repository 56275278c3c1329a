//! TLS on every connection, each against a real server speaking it: redis-server with
//! `--tls-port`, PostgreSQL with `ssl=on`, and the services' own gRPC server, with
//! certificates made here (rcgen).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod grpc;
mod postgres;
mod redis;

use std::path::Path;

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
