//! `millrace-otlp-sink`: an OTLP/gRPC endpoint that counts the spans it receives and serves the
//! count at `GET /spans` on its HTTP address, for the tracing benchmark (a collector whose own
//! cost stays out of the measurement).

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use clap::Parser;
use millrace_otlp_sink::OtlpReceiver;

#[derive(Parser, Debug)]
#[command(name = "millrace-otlp-sink", about = "Counts the spans sent to it over OTLP/gRPC")]
struct Args {
    /// Where OTLP/gRPC is received (OTEL_EXPORTER_OTLP_ENDPOINT=http://this).
    #[arg(long, default_value = "127.0.0.1:4317")]
    grpc_addr: SocketAddr,
    /// Where `GET /spans` answers `{"spans": N}`.
    #[arg(long, default_value = "127.0.0.1:4318")]
    http_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let receiver = std::sync::Arc::new(OtlpReceiver::bind(args.grpc_addr, false).await?);
    let counted = receiver.clone();
    let app = Router::new()
        .route("/spans", get(move || std::future::ready(axum::Json(serde_json::json!({"spans": counted.count()})))));
    let listener = tokio::net::TcpListener::bind(args.http_addr).await?;
    eprintln!("millrace-otlp-sink: OTLP/gRPC on {}, span count on http://{}/spans", receiver.addr, args.http_addr);
    tokio::select! {
        served = axum::serve(listener, app) => served?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
