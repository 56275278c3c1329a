//! A private redis-server on a free port, with its working directory in a tempdir; optionally
//! speaking TLS only ([`RedisServer::start_tls`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::process::{ChildProcess, ensure_running, find_program};
use crate::tls::ServerTls;
use crate::{Signal, free_port};

const START_TIMEOUT: Duration = Duration::from_secs(15);
const PORT_ATTEMPTS: usize = 4;

/// The server handed out by [`RedisServer::shared`].
static SHARED: Mutex<Option<Arc<RedisServer>>> = Mutex::new(None);

/// A redis-server child process, stopped on Drop (SIGTERM, then SIGKILL after 2 s).
///
/// The binary is `$MILLRACE_REDIS_SERVER` if set, else `redis-server` from PATH.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` for a TLS server.
    pub url: String,
    process: ChildProcess,
    dir: TempDir,
    tls: bool,
}

impl RedisServer {
    /// Starts redis-server with no persistence (`--save "" --appendonly no`).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_args(&[])
    }

    /// Starts redis-server with extra command-line arguments after the defaults, e.g.
    /// `&["--appendonly", "yes"]` (later arguments override earlier ones).
    pub fn start_with_args(args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(args, None)
    }

    /// Starts redis-server speaking TLS only (no cleartext port) with `tls`'s certificate;
    /// with `require_client_cert`, clients need a certificate signed by its CA
    /// (`--tls-auth-clients yes`). Its URL is `rediss://127.0.0.1:PORT`. Debian's redis-server
    /// is built with TLS.
    pub fn start_tls(tls: &ServerTls, args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn(args, Some(tls))
    }

    fn spawn(args: &[&str], tls: Option<&ServerTls>) -> anyhow::Result<Self> {
        let binary = std::env::var("MILLRACE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let binary = find_program(&binary)
            .with_context(|| format!("{binary} not found: run scripts/setup.sh (or set MILLRACE_REDIS_SERVER)"))?;
        let dir = tempfile::Builder::new().prefix("millrace-redis-").tempdir()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let dir_arg = dir.path().to_string_lossy().into_owned();
            let mut argv: Vec<String> = match tls {
                None => vec!["--port".into(), port.to_string()],
                Some(tls) => vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    tls.cert.to_string_lossy().into_owned(),
                    "--tls-key-file".into(),
                    tls.key.to_string_lossy().into_owned(),
                    "--tls-ca-cert-file".into(),
                    tls.ca.to_string_lossy().into_owned(),
                    "--tls-auth-clients".into(),
                    (if tls.require_client_cert { "yes" } else { "no" }).into(),
                ],
            };
            argv.extend([
                "--bind".into(),
                "127.0.0.1".into(),
                "--dir".into(),
                dir_arg,
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--daemonize".into(),
                "no".into(),
            ]);
            argv.extend(args.iter().map(|a| (*a).to_owned()));
            let mut process = ChildProcess::builder(&binary)
                .name(format!("redis-{port}"))
                .args(&argv)
                .log_dir(dir.path())
                .graceful_stop(Signal::SIGTERM, Duration::from_secs(2))
                .cleanup_on_orphan(dir.path())
                .spawn()?;
            match wait_ready(&mut process, port, tls.is_some()) {
                Ok(()) => {
                    let scheme = if tls.is_some() { "rediss" } else { "redis" };
                    let url = format!("{scheme}://127.0.0.1:{port}");
                    return Ok(Self { port, url, process, dir, tls: tls.is_some() });
                }
                // Most likely the port was taken between free_port() and bind: try another.
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// One default server for all the tests of this process: started by the first caller, stopped (and
    /// its directory removed) by its watchdog when the test process exits, since a `static` is never
    /// dropped. Tests sharing it must use their own key prefixes.
    pub fn shared() -> anyhow::Result<Arc<Self>> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(redis) = shared.as_ref() {
            return Ok(Arc::clone(redis));
        }
        let redis = Arc::new(Self::start()?);
        *shared = Some(Arc::clone(&redis));
        Ok(redis)
    }

    /// The server's working directory (RDB/AOF files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL (a crash; with `--appendonly yes` the data survives a restart).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill()
    }

    /// Kills the server if it runs and starts it again on the same port and directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.restart()?;
        wait_ready(&mut self.process, self.port, self.tls)
    }

    /// The underlying process (pid, logs, signals).
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }
}

/// Until the server answers PING; a TLS server until it accepts connections (it loads no data,
/// so it serves as soon as it listens).
fn wait_ready(process: &mut ChildProcess, port: u16, tls: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        ensure_running(process)?;
        let ready = if tls { listens(port) } else { ping(port).unwrap_or(false) };
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "redis-server on port {port} did not answer PING within {START_TIMEOUT:?}:\n{}",
                process.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn listens(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Whether the server answers PING with PONG (not LOADING or an error).
fn ping(port: u16) -> anyhow::Result<bool> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(buf[..n].starts_with(b"+PONG"))
}
