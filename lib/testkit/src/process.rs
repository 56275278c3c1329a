//! Child processes for tests: output captured in a log file, stopped on Drop, restartable with
//! the same command line, and stopped by a watchdog even when the test process itself dies.
//!
//! The watchdog is a tiny `sh` blocked on reading a pipe whose only writer is the test process:
//! when the test process exits for any reason (including SIGKILL or abort, when no Drop runs),
//! the pipe closes and the watchdog stops the child. Without it a crashed test run leaves
//! servers behind, and `PR_SET_PDEATHSIG` would need unsafe code, which the workspace forbids.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How often a wait polls the child.
const POLL: Duration = Duration::from_millis(20);

/// Builds a [`ChildProcess`].
#[derive(Debug, Clone)]
pub struct ChildProcessBuilder {
    name: Option<String>,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    graceful_stop: Option<(Signal, Duration)>,
    cleanup_on_orphan: Option<PathBuf>,
}

impl ChildProcessBuilder {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            name: None,
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            current_dir: None,
            log_dir: None,
            graceful_stop: None,
            cleanup_on_orphan: None,
        }
    }

    /// A label for the log file name and for messages (default: the program's file name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable added to the inherited environment.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn envs<I, K, V>(mut self, envs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.envs.extend(envs.into_iter().map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())));
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Where the log file goes (default: a fresh temporary directory, removed on Drop).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// On Drop (and from the watchdog), send `signal` first and wait up to `grace` before SIGKILL.
    /// Without it, Drop sends SIGKILL at once.
    pub fn graceful_stop(mut self, signal: Signal, grace: Duration) -> Self {
        self.graceful_stop = Some((signal, grace));
        self
    }

    /// If the test process dies without dropping this child (or the child lives in a `static`,
    /// which is never dropped), the watchdog removes `path` after stopping the child.
    pub fn cleanup_on_orphan(mut self, path: impl Into<PathBuf>) -> Self {
        self.cleanup_on_orphan = Some(path.into());
        self
    }

    /// Spawns the process.
    pub fn spawn(self) -> anyhow::Result<ChildProcess> {
        let name = match &self.name {
            Some(n) => n.clone(),
            None => self.program.file_name().map_or_else(|| "process".to_owned(), |n| n.to_string_lossy().into_owned()),
        };
        let (log_dir, tmp) = match &self.log_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("creating log dir {}", dir.display()))?;
                (dir.clone(), None)
            }
            None => {
                let tmp = tempfile::Builder::new().prefix("millrace-logs-").tempdir()?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let log_path = log_dir.join(format!("{name}.log"));
        let mut process =
            ChildProcess { name, spec: self, log_path, _log_dir: tmp, child: None, watchdog: None, spawns: 0 };
        process.spawn_now()?;
        Ok(process)
    }
}

/// A child process that is killed on Drop. See the module docs for the watchdog.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    spec: ChildProcessBuilder,
    log_path: PathBuf,
    _log_dir: Option<TempDir>,
    child: Option<Child>,
    watchdog: Option<Child>,
    spawns: u32,
}

impl ChildProcess {
    pub fn builder(program: impl Into<PathBuf>) -> ChildProcessBuilder {
        ChildProcessBuilder::new(program)
    }

    /// Spawns `program` with `args` and extra environment variables, logging to a temporary directory.
    pub fn spawn<A, S, E, K, V>(program: impl Into<PathBuf>, args: A, envs: E) -> anyhow::Result<Self>
    where
        A: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        ChildProcessBuilder::new(program).args(args).envs(envs).spawn()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file holding the process's stdout and stderr, across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process wrote so far (across restarts).
    pub fn logs(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The pid while the process runs (or has exited but was not reaped yet).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times the process was spawned (1 after `spawn`, +1 per `restart`).
    pub fn spawn_count(&self) -> u32 {
        self.spawns
    }

    /// Sets an environment variable for the next `restart`.
    pub fn set_env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) {
        let key = key.as_ref().to_owned();
        self.spec.envs.retain(|(k, _)| *k != key);
        self.spec.envs.push((key, value.as_ref().to_owned()));
    }

    /// Whether the process is still running; reaps it if it exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) => {
                self.forget_child();
                false
            }
            None => false,
        }
    }

    /// Sends a signal to the process (no-op if it is not running).
    pub fn signal(&mut self, sig: Signal) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        if let Some(pid) = self.pid() {
            send(pid, sig)?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else { return Ok(None) };
            if let Some(status) = child.try_wait()? {
                self.forget_child();
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILL, then reap. Simulates a crash.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // An error means the process already exited; reaping below settles it either way.
            let _ = child.kill();
            child.wait().with_context(|| format!("reaping {}", self.name))?;
        }
        self.stop_watchdog();
        Ok(())
    }

    /// SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit status if it stopped on its own.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        self.stop_with(Signal::SIGTERM, timeout)
    }

    /// Sends `sig`, waits up to `timeout`, then SIGKILL. Returns the exit status if it stopped on its own.
    pub fn stop_with(&mut self, sig: Signal, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        self.signal(sig)?;
        let status = self.wait_timeout(timeout)?;
        self.kill()?;
        Ok(status)
    }

    /// Kills the process if it runs, then spawns it again with the same program, arguments and
    /// environment (plus any `set_env`), appending to the same log file.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn_now()
    }

    fn spawn_now(&mut self) -> anyhow::Result<()> {
        self.spawns += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        writeln!(
            log,
            "=== millrace-testkit: spawn #{} of {}: {} {}",
            self.spawns,
            self.name,
            self.spec.program.display(),
            self.spec.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        )?;
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .envs(self.spec.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if let Some(dir) = &self.spec.current_dir {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().with_context(|| format!("spawning {} ({})", self.name, self.spec.program.display()))?;
        let pid = child.id();
        self.child = Some(child);
        self.watchdog = spawn_watchdog(pid, self.spec.graceful_stop, self.spec.cleanup_on_orphan.as_deref()).ok();
        Ok(())
    }

    fn forget_child(&mut self) {
        self.child = None;
        self.stop_watchdog();
    }

    fn stop_watchdog(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            // SIGKILL, so that it does not act on a pid that may be reused.
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Shown by the test harness next to the failure; the log file goes away with its tempdir.
            eprintln!("--- last lines of {} ({}) ---\n{}", self.name, self.log_path.display(), self.log_tail(60));
        }
        if let Some((sig, grace)) = self.spec.graceful_stop {
            let _ = self.stop_with(sig, grace);
        } else {
            let _ = self.kill();
        }
    }
}

pub(crate) fn send(pid: u32, sig: Signal) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).context("pid out of range")?;
    signal::kill(Pid::from_raw(raw), sig).with_context(|| format!("sending {sig} to {pid}"))?;
    Ok(())
}

fn spawn_watchdog(pid: u32, graceful: Option<(Signal, Duration)>, cleanup: Option<&Path>) -> anyhow::Result<Child> {
    let (sig, grace) = graceful.unwrap_or((Signal::SIGKILL, Duration::ZERO));
    let sig_name = sig.as_str().trim_start_matches("SIG");
    let tenths = grace.as_millis().div_ceil(100).to_string();
    // $1 pid, $2 signal, $3 grace in tenths of a second, $4 a path to remove afterwards (or "").
    // Once the test process is gone its children are zombies until reaped, and `kill -0` still
    // succeeds on a zombie: liveness is read from /proc instead.
    let script = r#"alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*[ZX]' "/proc/$1/status" 2>/dev/null; }
read _ignored; kill -s "$2" "$1" 2>/dev/null; i=0
while [ "$i" -lt "$3" ] && alive "$1"; do sleep 0.1; i=$((i + 1)); done
alive "$1" && kill -s KILL "$1" 2>/dev/null
if [ -n "$4" ]; then sleep 0.1; rm -rf -- "$4"; fi"#;
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("millrace-watchdog")
        .arg(pid.to_string())
        .arg(sig_name)
        .arg(tenths)
        .arg(cleanup.map(|p| p.as_os_str().to_owned()).unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(child)
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else { return String::new() };
    // Enough for `lines` lines of ordinary log output without reading a huge file whole.
    let window = 256 * lines as u64;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(window)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Finds `name` on PATH, or returns it unchanged if it contains a slash.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
}

/// Fails if the process exited (with its log tail), for loops waiting for readiness.
pub(crate) fn ensure_running(process: &mut ChildProcess) -> anyhow::Result<()> {
    if !process.is_running() {
        bail!("{} exited during startup:\n{}", process.name(), process.log_tail(30));
    }
    Ok(())
}
