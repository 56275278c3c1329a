//! `millrace-fake-openai`: prints `listening on http://ADDR` as its first stdout line, then
//! serves until SIGTERM or Ctrl-C.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser as _};
use millrace_fake_openai::Config;
use tokio::sync::Notify;
use tracing_subscriber::EnvFilter;

/// Requests may be hanging on purpose (--timeout-rate); shutdown does not wait out --hang-ms.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(err) = config.validate() {
        Config::command().error(clap::error::ErrorKind::ValueValidation, err).exit();
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let listener =
        tokio::net::TcpListener::bind(config.addr).await.with_context(|| format!("cannot bind {}", config.addr))?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;

    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let server = millrace_fake_openai::serve(listener, config, async move { stopped.notified().await });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("fake-openai failed"),
        () = signal() => {}
    }
    stop.notify_one();
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result.context("fake-openai failed"),
        Err(_) => Ok(()),
    }
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
