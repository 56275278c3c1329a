//! Parses in a child process (the real parse path of the service): results come back whole,
//! and a child past its time or its memory is stopped, failing only its own job with a reason.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use millrace_chunking::parse_child::{ChildOutput, ParseChild};
use millrace_chunking::{ChunkSizes, ParseLimits, SizeUnit, default_model_dir};
use millrace_streams::HandlerError;

pub const CHAR_SIZES: ChunkSizes = ChunkSizes { min: 750, max: 1000, overlap: 100 };

/// The built service binary as the child, sizing in characters (no model needed).
pub fn child(timeout: Duration, memory_bytes: u64, limits: ParseLimits) -> ParseChild {
    ParseChild {
        program: PathBuf::from(env!("CARGO_BIN_EXE_millrace-chunking")),
        memory_bytes,
        timeout,
        limits,
        unit: SizeUnit::Chars,
        model_dir: default_model_dir(),
    }
}

/// Processes this test process has started and not yet reaped.
pub fn live_children() -> Vec<String> {
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let listed = std::fs::read_to_string(task.unwrap().path().join("children")).unwrap_or_default();
        children.extend(listed.split_whitespace().map(str::to_owned));
    }
    children
}

pub fn fatal_reason(result: Result<ChildOutput, HandlerError>) -> String {
    match result {
        Err(HandlerError::Fatal(reason)) => reason,
        Err(other) => panic!("expected a fatal error, got {other:?}"),
        Ok(output) => panic!("expected a fatal error, got {} chunks", output.chunks.len()),
    }
}

#[tokio::test]
async fn a_document_is_parsed_and_split_in_a_child() {
    let child = child(Duration::from_secs(30), 1 << 30, ParseLimits::default());
    let text = format!("# Locks\n\n{}", "A lock raises boats. ".repeat(200));
    let output = child.run("text/markdown", text.into_bytes(), CHAR_SIZES).await.unwrap();
    assert_eq!(output.title.as_deref(), Some("Locks"));
    assert!(output.chunks.len() > 1, "{:?}", output.chunks.len());
    for (i, chunk) in output.chunks.iter().enumerate() {
        assert_eq!(chunk.index as usize, i);
        assert_eq!(chunk.heading_path, ["Locks"]);
        assert_eq!(chunk.content_hash.len(), 64);
    }
    let refused = child.run("text/plain", vec![0xff, 0xfe, b'a'], CHAR_SIZES).await;
    assert!(fatal_reason(refused).starts_with("the document is not valid UTF-8"));
}

#[tokio::test]
async fn a_child_past_its_time_is_killed_and_reaped_at_once() {
    let timeout = Duration::from_millis(300);
    let child = child(timeout, 1 << 30, ParseLimits::default());
    // Takes seconds to split (more in a debug build): far past the limit.
    let line = "word".repeat(5_000_000).into_bytes();
    let started = Instant::now();
    let reason = fatal_reason(child.run("text/plain", line, CHAR_SIZES).await);
    assert_eq!(reason, "the parser was killed after 300ms (MILLRACE_PARSE_TIMEOUT_MS)");
    assert!(started.elapsed() < timeout + Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(live_children(), Vec::<String>::new(), "the killed child is still there");
}

#[tokio::test]
async fn a_child_past_its_memory_limit_fails_its_job_with_the_reason() {
    // No decompression cap, so the DOCX bomb (64 MiB of XML) meets the memory limit instead.
    let limits = ParseLimits { max_unzipped_bytes: u64::MAX, ..ParseLimits::default() };
    let memory = 96 << 20;
    let child = child(Duration::from_secs(60), memory, limits);
    let bomb = crate::helpers::hostile("docx_zip_bomb.docx");
    let reason = fatal_reason(child.run(millrace_pipeline::content::DOCX, bomb, CHAR_SIZES).await);
    assert_eq!(reason, format!("the parser exceeded its memory limit (MILLRACE_PARSE_MEMORY_BYTES={memory})"));
    assert_eq!(live_children(), Vec::<String>::new());
}
