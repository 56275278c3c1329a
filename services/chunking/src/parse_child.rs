//! Runs each parse and split (all the CPU work on an untrusted document) in a child process
//! with hard limits, so that a document that loops, eats memory or crashes the parser costs
//! its own job and nothing else, and a parse past its time is really stopped.
//!
//! The child is the chunking binary itself, started with [`PARSE_CHILD_ARG`] (or the program
//! `MILLRACE_PARSE_CHILD` names). It limits itself with `setrlimit` before reading anything:
//! address space (`MILLRACE_PARSE_MEMORY_BYTES`), CPU seconds (from
//! `MILLRACE_PARSE_TIMEOUT_MS`, a backstop: the parent kills it at the timeout) and no core
//! files. It reads one JSON line of settings then the document's bytes on stdin, loads the
//! sizer, parses and splits, and writes the chunks (a prost `ChunkBatch`, only `chunks` and
//! `document_title` set) on stdout, or the reason the document was refused. Exit codes say
//! which: [`EXIT_OK`], [`EXIT_REFUSED`] (the document's fault: the job fails), [`EXIT_SETUP`]
//! (the child could not start its work: worth retrying). Anything else is a crash, told apart
//! by its signal and the last words on stderr; every crash fails its job at once with a
//! reason, since the same document would crash the next try too.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use millrace_proto::{Chunk, ChunkBatch};
use millrace_streams::HandlerError;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tracing::warn;

use crate::parse::{ParseError, ParseLimits, parse_document};
use crate::split::{ChunkSizes, SizeUnit, Sizer, split_document};

/// The hidden first argument that makes the chunking binary a parse child.
pub const PARSE_CHILD_ARG: &str = "--parse-child";
pub const EXIT_OK: i32 = 0;
pub const EXIT_REFUSED: i32 = 3;
pub const EXIT_SETUP: i32 = 4;
/// The last bytes of the child's stderr kept to explain a crash.
const STDERR_TAIL: usize = 4096;

/// What the parent tells the child, as one JSON line before the document.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    content_type: String,
    max_input_bytes: usize,
    max_text_bytes: usize,
    max_unzipped_bytes: u64,
    min: usize,
    max: usize,
    overlap: usize,
    unit: String,
    model_dir: PathBuf,
}

/// How the parent starts parse children.
#[derive(Debug, Clone)]
pub struct ParseChild {
    /// The program run as the child: the chunking binary (`MILLRACE_PARSE_CHILD`).
    pub program: PathBuf,
    /// The child's address-space limit (`MILLRACE_PARSE_MEMORY_BYTES`).
    pub memory_bytes: u64,
    /// Wall-clock time limit of one parse + split (`MILLRACE_PARSE_TIMEOUT_MS`).
    pub timeout: Duration,
    pub limits: ParseLimits,
    pub unit: SizeUnit,
    /// Where the child loads the model's tokenizer from (`MILLRACE_EMBEDDING_MODEL_DIR`).
    pub model_dir: PathBuf,
}

/// A parsed and split document, as the child sent it back.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildOutput {
    pub title: Option<String>,
    /// In order; `index` and `content_hash` set, the batch fields left to the caller.
    pub chunks: Vec<Chunk>,
}

impl ParseChild {
    /// CPU seconds the child may use: the time limit rounded up, plus one, so that the parent's
    /// kill at the timeout normally comes first.
    fn cpu_seconds(&self) -> u64 {
        self.timeout.as_secs() + u64::from(self.timeout.subsec_nanos() > 0) + 1
    }

    /// Parses and splits `bytes` in a child process. Errors are the job's: `Fatal` with the
    /// reason for anything the document caused, `Retry` when no child could be started.
    pub async fn run(
        &self,
        content_type: &str,
        bytes: Vec<u8>,
        sizes: ChunkSizes,
    ) -> Result<ChildOutput, HandlerError> {
        let request = Request {
            content_type: content_type.to_owned(),
            max_input_bytes: self.limits.max_input_bytes,
            max_text_bytes: self.limits.max_text_bytes,
            max_unzipped_bytes: self.limits.max_unzipped_bytes,
            min: sizes.min,
            max: sizes.max,
            overlap: sizes.overlap,
            unit: self.unit.as_str().to_owned(),
            model_dir: self.model_dir.clone(),
        };
        let mut header = serde_json::to_vec(&request).map_err(|err| HandlerError::Retry(err.to_string()))?;
        header.push(b'\n');

        let mut child = Command::new(&self.program)
            .arg(PARSE_CHILD_ARG)
            .arg(self.memory_bytes.to_string())
            .arg(self.cpu_seconds().to_string())
            // One thread each: the parent already runs MILLRACE_MAX_CONCURRENT_PARSES children,
            // and every extra thread reserves address space under the child's limit.
            .env("RAYON_NUM_THREADS", "1")
            .env("TOKENIZERS_PARALLELISM", "false")
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                HandlerError::Retry(format!(
                    "cannot start the parse child {} (MILLRACE_PARSE_CHILD): {err}",
                    self.program.display()
                ))
            })?;
        let started = Instant::now();
        let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(HandlerError::Retry("the parse child has no pipes".into()));
        };
        // Writing, reading and waiting run together: a child that dies early closes its stdin
        // (the write fails, which says nothing the exit status does not say better).
        let write = async move {
            let _ = stdin.write_all(&header).await;
            let _ = stdin.write_all(&bytes).await;
            drop(stdin);
        };
        let read_out = async move {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out).await;
            out
        };
        let read_err = async move {
            let mut err = Vec::new();
            let _ = stderr.read_to_end(&mut err).await;
            let tail = err.len().saturating_sub(STDERR_TAIL);
            String::from_utf8_lossy(&err[tail..]).into_owned()
        };
        let finished = async { tokio::join!(write, read_out, read_err, child.wait()) };
        let (out, err, status) = match tokio::time::timeout(self.timeout, finished).await {
            Ok(((), out, err, Ok(status))) => (out, err, status),
            Ok((_, _, _, Err(err))) => {
                return Err(HandlerError::Retry(format!("cannot wait for the parse child: {err}")));
            }
            Err(_) => {
                // kill() waits for the child, so its slot is free when this returns.
                if let Err(err) = child.kill().await {
                    warn!(error = %err, "cannot kill a parse child past its time limit");
                }
                return Err(HandlerError::Fatal(format!(
                    "the parser was killed after {:?} (MILLRACE_PARSE_TIMEOUT_MS)",
                    self.timeout
                )));
            }
        };
        match status.code() {
            Some(EXIT_OK) => decode(&out),
            Some(EXIT_REFUSED) => Err(HandlerError::Fatal(String::from_utf8_lossy(&out).into_owned())),
            Some(EXIT_SETUP) => Err(HandlerError::Retry(String::from_utf8_lossy(&out).into_owned())),
            _ => Err(HandlerError::Fatal(self.crash_reason(status, &err, started.elapsed()))),
        }
    }

    /// Why a child ended without an answer, from its exit status and the end of its stderr.
    fn crash_reason(&self, status: ExitStatus, stderr: &str, elapsed: Duration) -> String {
        let last_words = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("").trim();
        warn!(%status, elapsed_ms = elapsed.as_millis() as u64, last_words, "parse child crashed");
        if stderr.contains("memory allocation of") || stderr.contains("out of memory") {
            return memory_limit_reason(self.memory_bytes);
        }
        if stderr.contains("has overflowed its stack") {
            return "the parser overflowed its stack (the document is nested too deeply)".into();
        }
        match status.signal() {
            Some(nix_signal) if nix_signal == nix::sys::signal::Signal::SIGXCPU as i32 => {
                format!("the parser used more than {} s of CPU (MILLRACE_PARSE_TIMEOUT_MS)", self.cpu_seconds())
            }
            Some(signal) => {
                let name = nix::sys::signal::Signal::try_from(signal).map_or("unknown", |s| s.as_str());
                format!("the parser crashed on the document (signal {signal}, {name})")
            }
            None => format!("the parser crashed on the document ({status}): {last_words}"),
        }
    }
}

/// The reason a job fails with when its parse needed more memory than the child may have,
/// whether the child aborted or a parser noticed the failed allocation.
fn memory_limit_reason(memory_bytes: u64) -> String {
    format!("the parser exceeded its memory limit (MILLRACE_PARSE_MEMORY_BYTES={memory_bytes})")
}

fn decode(out: &[u8]) -> Result<ChildOutput, HandlerError> {
    let batch = ChunkBatch::decode(out)
        .map_err(|err| HandlerError::Fatal(format!("the parser's answer cannot be read: {err}")))?;
    let title = Some(batch.document_title).filter(|title| !title.is_empty());
    Ok(ChildOutput { title, chunks: batch.chunks })
}

/// Why the child did not produce chunks.
enum Failure {
    /// The document's fault; the message is the job's failure reason.
    Refused(String),
    /// The child could not do its work (bad request, tokenizer missing).
    Setup(String),
}

/// The child's whole life: limits, request, parse, split, answer, exit. Never returns.
pub fn child_main(args: &[String]) -> ! {
    let (code, answer) = match child(args) {
        Ok(answer) => (EXIT_OK, answer),
        Err(Failure::Refused(reason)) => (EXIT_REFUSED, reason.into_bytes()),
        Err(Failure::Setup(reason)) => (EXIT_SETUP, reason.into_bytes()),
    };
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_all(&answer).and_then(|()| stdout.flush());
    std::process::exit(if written.is_ok() { code } else { EXIT_SETUP })
}

fn child(args: &[String]) -> Result<Vec<u8>, Failure> {
    let number = |at: usize| -> Result<u64, Failure> {
        args.get(at)
            .and_then(|arg| arg.parse().ok())
            .ok_or_else(|| Failure::Setup(format!("usage: {PARSE_CHILD_ARG} MEMORY_BYTES CPU_SECONDS")))
    };
    let memory_bytes = number(0)?;
    limit_self(memory_bytes, number(1)?).map_err(|err| Failure::Setup(format!("setrlimit failed: {err}")))?;

    let mut input = Vec::new();
    std::io::stdin().lock().read_to_end(&mut input).map_err(|err| match err.kind() {
        // The document itself does not fit in the child's memory: retrying will not help.
        std::io::ErrorKind::OutOfMemory => Failure::Refused(memory_limit_reason(memory_bytes)),
        _ => Failure::Setup(format!("cannot read stdin: {err}")),
    })?;
    let newline = input.iter().position(|&b| b == b'\n').ok_or_else(|| Failure::Setup("no request line".into()))?;
    let request: Request =
        serde_json::from_slice(&input[..newline]).map_err(|err| Failure::Setup(format!("bad request line: {err}")))?;
    let bytes = &input[newline + 1..];

    let unit: SizeUnit = request.unit.parse().map_err(Failure::Setup)?;
    let sizer = Sizer::load(unit, &request.model_dir).map_err(|err| Failure::Setup(err.to_string()))?;
    let limits = ParseLimits {
        max_input_bytes: request.max_input_bytes,
        max_text_bytes: request.max_text_bytes,
        max_unzipped_bytes: request.max_unzipped_bytes,
    };
    let sizes = ChunkSizes { min: request.min, max: request.max, overlap: request.overlap };
    let doc = parse_document(&request.content_type, bytes, &limits).map_err(|err| match err {
        ParseError::OutOfMemory => Failure::Refused(memory_limit_reason(memory_bytes)),
        other => Failure::Refused(other.to_string()),
    })?;
    let chunks = split_document(&doc, &sizer, sizes).map_err(|err| Failure::Refused(err.to_string()))?;
    let batch = ChunkBatch {
        document_title: doc.title.unwrap_or_default(),
        chunks: chunks
            .into_iter()
            .enumerate()
            .map(|(index, chunk)| Chunk {
                index: index as u32,
                content_hash: hex::encode(Sha256::digest(chunk.text.as_bytes())),
                char_start: chunk.char_start as u32,
                char_end: chunk.char_end as u32,
                heading_path: chunk.heading_path,
                page_start: chunk.page_start,
                page_end: chunk.page_end,
                text: chunk.text,
                stored: None,
            })
            .collect(),
        ..ChunkBatch::default()
    };
    Ok(batch.encode_to_vec())
}

/// Address space, CPU seconds (soft; the hard limit a second later kills), no core files.
fn limit_self(memory_bytes: u64, cpu_seconds: u64) -> nix::Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    setrlimit(Resource::RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)?;
    setrlimit(Resource::RLIMIT_AS, memory_bytes, memory_bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn child() -> ParseChild {
        ParseChild {
            program: PathBuf::from("millrace-chunking"),
            memory_bytes: 1 << 30,
            timeout: Duration::from_millis(2500),
            limits: ParseLimits::default(),
            unit: SizeUnit::Chars,
            model_dir: PathBuf::new(),
        }
    }

    /// The wait status of a process killed by `signal`.
    fn killed(signal: nix::sys::signal::Signal) -> ExitStatus {
        ExitStatus::from_raw(signal as i32)
    }

    #[test]
    fn crashes_are_told_apart_by_signal_and_last_words() {
        use nix::sys::signal::Signal::{SIGABRT, SIGKILL, SIGSEGV, SIGXCPU};
        let child = child();
        let second = Duration::from_secs(1);
        let oom = "memory allocation of 1073741824 bytes failed\n";
        assert_eq!(
            child.crash_reason(killed(SIGABRT), oom, second),
            "the parser exceeded its memory limit (MILLRACE_PARSE_MEMORY_BYTES=1073741824)"
        );
        let overflow = "\nthread 'main' has overflowed its stack\nfatal runtime error: stack overflow\n";
        assert_eq!(
            child.crash_reason(killed(SIGABRT), overflow, second),
            "the parser overflowed its stack (the document is nested too deeply)"
        );
        assert_eq!(
            child.crash_reason(killed(SIGXCPU), "", second),
            "the parser used more than 4 s of CPU (MILLRACE_PARSE_TIMEOUT_MS)"
        );
        assert_eq!(
            child.crash_reason(killed(SIGKILL), "", second),
            "the parser crashed on the document (signal 9, SIGKILL)"
        );
        assert_eq!(
            child.crash_reason(killed(SIGSEGV), "", second),
            "the parser crashed on the document (signal 11, SIGSEGV)"
        );
        assert_eq!(
            child.crash_reason(ExitStatus::from_raw(101 << 8), "\npanicked at somewhere\n\n", second),
            "the parser crashed on the document (exit status: 101): panicked at somewhere"
        );
    }
}
