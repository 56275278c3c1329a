//! Throughput of the local embedding model as the service runs it (tokenizer, batcher, forward
//! pass, pooling), driven by `scripts/bench_embeddings.py`, which times PyTorch in alternating
//! rounds on the same sentences. The model is loaded once; each `run N` line on stdin embeds
//! the N-th corpus (from 0) in requests of `--batch` texts and answers with one JSON line.
//!
//! usage: bench_local --corpus FILE [--corpus FILE…] [--model-dir DIR] [--batch 32]
//!        (FILE: a JSON array of strings; then write `run N` or `quit` lines to stdin)

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use millrace_embeddings::{BatchConfig, DEFAULT_MODEL, LocalEmbedder};

// The same allocator as the service (see main.rs), so the figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut corpora: Vec<Vec<String>> = Vec::new();
    let mut model_dir: Option<PathBuf> = None;
    let mut batch = 32usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--corpus" => corpora.push(serde_json::from_slice(&std::fs::read(value()?)?)?),
            "--model-dir" => model_dir = Some(value()?.into()),
            "--batch" => batch = value()?.parse()?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    if corpora.is_empty() {
        bail!("--corpus is required");
    }
    let model_dir = match model_dir {
        Some(dir) => dir,
        None => {
            let home = std::env::var_os("MILLRACE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/millrace"));
            home.join("models").join(DEFAULT_MODEL)
        }
    };
    // No wait: requests come one after the other here, each already a full batch.
    let embedder = LocalEmbedder::start(&model_dir, 384, BatchConfig { max_batch: batch, max_wait: Duration::ZERO })?;

    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match words.next().unwrap_or("quit") {
            "run" => {
                let index: usize = words.next().unwrap_or("0").parse()?;
                let texts = corpora.get(index).with_context(|| format!("no corpus {index}"))?;
                let passes = embedder.passes();
                let started = Instant::now();
                let mut checksum = 0f64;
                for request in texts.chunks(batch) {
                    let vectors = embedder.embed(request).await?;
                    checksum += vectors.iter().map(|v| f64::from(v[0])).sum::<f64>();
                }
                let seconds = started.elapsed().as_secs_f64();
                let report = serde_json::json!({
                    "sentences": texts.len(),
                    "seconds": seconds,
                    "passes": embedder.passes() - passes,
                    "checksum": checksum,
                });
                writeln!(stdout, "{report}")?;
                stdout.flush()?;
            }
            "quit" => break,
            other => bail!("unknown command {other:?}"),
        }
    }
    Ok(())
}
