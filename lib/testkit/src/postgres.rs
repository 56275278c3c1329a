//! A private PostgreSQL with pgvector: initdb into a tempdir, postgres on a free port. A
//! [`PostgresBuilder`] starts other variants: with TLS (`ssl=on`), from another binary
//! directory (the bundled build has no OpenSSL: [`Postgres::tls_bin_dir`] has).
//!
//! PostgreSQL refuses to run as root. As root, initdb and postgres run inside a user namespace
//! where they are uid 1000 (`unshare --user --map-user=1000`), which needs no chown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

use crate::process::{ChildProcess, ensure_running, find_program};
use crate::tls::ServerTls;
use crate::{Signal, free_port, millrace_home};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 3;

/// The server handed out by [`Postgres::shared`].
static SHARED: Mutex<Option<Arc<Postgres>>> = Mutex::new(None);
static DATABASE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A PostgreSQL server with the `vector` extension created in `postgres` and `template1` (so
/// every database made by [`Postgres::create_database`] has it). On Drop: fast shutdown (SIGINT),
/// then SIGKILL after 5 s, then the data directory is removed.
#[derive(Debug)]
pub struct Postgres {
    pub port: u16,
    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication).
    pub url: String,
    process: ChildProcess,
    data_dir: PathBuf,
    dir: TempDir,
}

impl Postgres {
    /// The directory holding `initdb` and `postgres`: `$MILLRACE_PG_BIN` if set, else
    /// `${MILLRACE_HOME:-$HOME/.cache/millrace}/pgserver/bin`.
    pub fn bin_dir() -> anyhow::Result<PathBuf> {
        let dir = match std::env::var_os("MILLRACE_PG_BIN").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => millrace_home().join("pgserver").join("bin"),
        };
        if !dir.join("postgres").is_file() || !dir.join("initdb").is_file() {
            bail!(
                "PostgreSQL+pgvector not found in {}: run scripts/setup.sh (or set MILLRACE_PG_BIN to a bin directory \
                 holding initdb and postgres)",
                dir.display()
            );
        }
        Ok(dir)
    }

    /// initdb + postgres (fsync off) on a free port, waits until it accepts connections and creates
    /// the `vector` extension.
    pub fn start() -> anyhow::Result<Self> {
        Self::builder().start()
    }

    /// A server other than [`Postgres::start`]'s.
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder { bin_dir: None, tls: None }
    }

    /// Whether the PostgreSQL in `bin` can speak TLS: its `postgres` links OpenSSL's libssl.
    /// The bundled build (`pgserver`) does not.
    pub fn supports_tls(bin: &Path) -> bool {
        std::fs::read(bin.join("postgres")).is_ok_and(|binary| binary.windows(9).any(|w| w == b"libssl.so"))
    }

    /// A binary directory whose PostgreSQL speaks TLS and has pgvector: `$MILLRACE_PG_TLS_BIN` if
    /// set, else `${MILLRACE_HOME:-$HOME/.cache/millrace}/pg-tls/bin`, which scripts/setup.sh
    /// installs (PostgreSQL 18 built with OpenSSL, given the bundled pgvector).
    pub fn tls_bin_dir() -> anyhow::Result<PathBuf> {
        let dir = match std::env::var_os("MILLRACE_PG_TLS_BIN").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => millrace_home().join("pg-tls").join("bin"),
        };
        if !dir.join("initdb").is_file() || !Self::supports_tls(&dir) {
            bail!(
                "no PostgreSQL with TLS in {}: run scripts/setup.sh (or set MILLRACE_PG_TLS_BIN to the bin directory of \
                 a PostgreSQL built with OpenSSL and with pgvector)",
                dir.display()
            );
        }
        Ok(dir)
    }

    /// One server for all the tests of this process: started by the first caller, stopped (and its
    /// data removed) by its watchdog when the test process exits, since a `static` is never dropped.
    /// Saves a server start per test. Give each test its own database with
    /// [`Postgres::create_unique_database`].
    pub fn shared() -> anyhow::Result<Arc<Self>> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pg) = shared.as_ref() {
            return Ok(Arc::clone(pg));
        }
        let pg = Arc::new(Self::start()?);
        *shared = Some(Arc::clone(&pg));
        Ok(pg)
    }

    /// The URL of database `name` on this server.
    pub fn url_for(&self, database: &str) -> String {
        url(self.port, database)
    }

    /// Creates database `name` (letters, digits and `_`; it gets the `vector` extension from
    /// template1) and returns its URL. Lets tests share one server with isolated databases.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > 63 {
            bail!("invalid database name {name:?}: use 1 to 63 letters, digits or underscores");
        }
        self.execute("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url_for(name))
    }

    /// Creates a database named `<prefix>_<pid>_<counter>` and returns its URL.
    pub fn create_unique_database(&self, prefix: &str) -> anyhow::Result<String> {
        let n = DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix: String = prefix.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect();
        self.create_database(&format!("{prefix}_{}_{n}", std::process::id()))
    }

    /// Runs SQL statements (simple query protocol) in `database`.
    pub fn execute(&self, database: &str, sql: &str) -> anyhow::Result<()> {
        let url = self.url_for(database);
        block_on(async move {
            let client = connect(&url).await?;
            client.batch_execute(sql).await.with_context(|| format!("executing {sql:?} in {database}"))
        })?
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// SIGKILL the postmaster (a crash).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill()
    }

    /// Stops the server if it runs (fast shutdown; call [`Postgres::kill`] first for a crash) and starts
    /// it again on the same port and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop_with(Signal::SIGINT, Duration::from_secs(5))?;
        self.process.restart()?;
        wait_ready(&mut self.process, &self.url)
    }

    /// The underlying process (pid, logs, signals).
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// The temporary directory holding the data directory and logs.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// How to start a [`Postgres`] other than the default one.
#[derive(Debug, Clone)]
pub struct PostgresBuilder {
    bin_dir: Option<PathBuf>,
    tls: Option<ServerTls>,
}

impl PostgresBuilder {
    /// The directory holding `initdb` and `postgres` (default: [`Postgres::bin_dir`]).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// `ssl=on` with this certificate and key; with `require_client_cert`, a TLS connection
    /// must present a certificate signed by its CA.
    pub fn tls(mut self, tls: &ServerTls) -> Self {
        self.tls = Some(tls.clone());
        self
    }

    pub fn start(self) -> anyhow::Result<Postgres> {
        let bin = match self.bin_dir {
            Some(dir) => dir,
            None => Postgres::bin_dir()?,
        };
        let dir = tempfile::Builder::new().prefix("millrace-pg-").tempdir()?;
        let data_dir = dir.path().join("data");
        initdb(&bin, &data_dir, dir.path())?;
        let mut extra = Vec::new();
        if let Some(tls) = &self.tls {
            std::fs::write(data_dir.join("pg_hba.conf"), hba(tls.require_client_cert))?;
            for (name, path) in [("ssl_cert_file", &tls.cert), ("ssl_key_file", &tls.key), ("ssl_ca_file", &tls.ca)] {
                extra.push("-c".to_owned());
                extra.push(format!("{name}={}", path.display()));
            }
            extra.extend(["-c".to_owned(), "ssl=on".to_owned()]);
        }

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut process = spawn_postgres(&bin, &data_dir, dir.path(), port, &extra)?;
            let url = url(port, "postgres");
            match wait_ready(&mut process, &url) {
                Ok(()) => {
                    let pg = Postgres { port, url, process, data_dir, dir };
                    pg.execute("postgres", "CREATE EXTENSION IF NOT EXISTS vector")?;
                    pg.execute("template1", "CREATE EXTENSION IF NOT EXISTS vector")?;
                    return Ok(pg);
                }
                // Most likely the port was taken between free_port() and bind: try another.
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("postgres did not start")))
    }
}

/// Authentication of a TLS server: a TLS connection needs a client certificate signed by the
/// CA if required (the first matching line decides, so it cannot fall through); cleartext is
/// still let in for the harness' own connections (readiness, `execute`). Tests tell TLS
/// sessions by `pg_stat_ssl`.
fn hba(require_client_cert: bool) -> String {
    let method = if require_client_cert { "trust clientcert=verify-ca" } else { "trust" };
    format!("hostssl all all 127.0.0.1/32 {method}\nhost all all 127.0.0.1/32 trust\n")
}

fn url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The program and leading arguments that run a server binary as a non-root user.
fn as_pg_user(binary: &Path) -> anyhow::Result<(PathBuf, Vec<String>)> {
    if is_root() {
        let unshare = find_program("unshare").context("running PostgreSQL as root needs `unshare` (util-linux)")?;
        let args = vec![
            "--user".to_owned(),
            "--map-user=1000".to_owned(),
            "--map-group=1000".to_owned(),
            binary.to_string_lossy().into_owned(),
        ];
        Ok((unshare, args))
    } else {
        Ok((binary.to_path_buf(), Vec::new()))
    }
}

fn initdb(bin: &Path, data_dir: &Path, log_dir: &Path) -> anyhow::Result<()> {
    let (program, mut args) = as_pg_user(&bin.join("initdb"))?;
    args.extend(
        ["-D", &data_dir.to_string_lossy(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
            .map(str::to_owned),
    );
    let log_path = log_dir.join("initdb.log");
    let log = std::fs::File::create(&log_path)?;
    let status = Command::new(&program)
        .args(&args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    if !status.success() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        bail!("initdb failed ({status}):\n{log}");
    }
    Ok(())
}

fn spawn_postgres(
    bin: &Path,
    data_dir: &Path,
    log_dir: &Path,
    port: u16,
    extra: &[String],
) -> anyhow::Result<ChildProcess> {
    let (program, mut args) = as_pg_user(&bin.join("postgres"))?;
    args.extend(
        [
            "-D",
            &data_dir.to_string_lossy(),
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            // TCP only: a tempdir path can exceed the Unix socket path limit.
            "-c",
            "unix_socket_directories=",
            "-c",
            "fsync=off",
        ]
        .map(str::to_owned),
    );
    args.extend(extra.iter().cloned());
    // `unshare` execs postgres, so the child's pid is the postmaster's.
    ChildProcess::builder(program)
        .name(format!("postgres-{port}"))
        .args(args)
        .env("LC_ALL", "C")
        .log_dir(log_dir)
        .graceful_stop(Signal::SIGINT, Duration::from_secs(5))
        // The whole tempdir: data directory and logs.
        .cleanup_on_orphan(log_dir)
        .spawn()
}

fn wait_ready(process: &mut ChildProcess, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        ensure_running(process)?;
        let attempt = block_on(async {
            let client = connect(url).await?;
            client.simple_query("SELECT 1").await?;
            anyhow::Ok(())
        })?;
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!("postgres not ready within {START_TIMEOUT:?} ({e}):\n{}", process.log_tail(20))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(2));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Runs a future to completion on a fresh single-threaded runtime in a scoped thread, so that the
/// blocking API works both in plain `#[test]`s and inside a tokio runtime.
fn block_on<F>(future: F) -> anyhow::Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            anyhow::Ok(rt.block_on(future))
        })
        .join()
        .map_err(|_| anyhow!("postgres helper thread panicked"))?
    })
}
