#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Chunking throughput, single-threaded: parse + split of a Markdown and an HTML document
//! (about 1 MB each, built from the test fixtures), sized in the embedding model's tokens with
//! the default sizes. Reported in bytes of input per second; the chunks each input makes are
//! printed first, to turn that into chunks per second.
//!
//! Then the cost of running a parse in a child process (`parse_child`) on a small document:
//! in process with the tokenizer already loaded (the old way), in a child sizing in
//! characters (spawn and pipes only), in a child sizing in model tokens (spawn plus loading
//! the tokenizer, as the service does).
//!
//! `cargo bench -p millrace-chunking --bench chunking` (needs the model: `make setup`, or
//! MILLRACE_EMBEDDING_MODEL_DIR).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use millrace_chunking::parse_child::ParseChild;
use millrace_chunking::{ChunkSizes, ParseLimits, SizeUnit, Sizer, default_model_dir, parse_document, split_document};
use millrace_pipeline::content::{HTML, MARKDOWN};

const TARGET_BYTES: usize = 1 << 20;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn markdown_input() -> String {
    let guide = fixture("guide.md");
    guide.repeat(TARGET_BYTES / guide.len() + 1)
}

/// The article page with its article body repeated, navigation and scripts around it once.
fn html_input() -> String {
    let page = fixture("article.html");
    let (start, end) = (page.find("<article>").unwrap() + "<article>".len(), page.find("</article>").unwrap());
    let body = &page[start..end];
    format!("{}{}{}", &page[..start], body.repeat(TARGET_BYTES / body.len() + 1), &page[end..])
}

fn model_dir() -> PathBuf {
    std::env::var_os("MILLRACE_EMBEDDING_MODEL_DIR").map(PathBuf::from).unwrap_or_else(default_model_dir)
}

fn sizer() -> Sizer {
    Sizer::load(SizeUnit::Model, &model_dir()).unwrap_or_else(|err| panic!("{err}: run `make setup` first"))
}

fn chunking(c: &mut Criterion) {
    let sizer = sizer();
    let max = SizeUnit::Model.default_size();
    let sizes = ChunkSizes { min: ChunkSizes::default_min(max), max, overlap: ChunkSizes::default_overlap(max) };
    let limits = ParseLimits::default();
    let mut group = c.benchmark_group("parse_and_split_model_tokens");
    group.sample_size(10).measurement_time(Duration::from_secs(30)).warm_up_time(Duration::from_secs(3));
    for (name, content_type, input) in [("markdown", MARKDOWN, markdown_input()), ("html", HTML, html_input())] {
        // Chunks per input, to turn bytes/s into chunks/s (HTML markup makes no chunks).
        let chunks = split_document(&parse_document(content_type, input.as_bytes(), &limits).unwrap(), &sizer, sizes)
            .unwrap()
            .len();
        eprintln!("{name}: {} bytes of input make {chunks} chunks", input.len());
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let doc = parse_document(content_type, input.as_bytes(), &limits).unwrap();
                split_document(&doc, &sizer, sizes).unwrap()
            })
        });
    }
    group.finish();
}

/// A small document (the guide, 2 KB) parsed and split in process and in a child.
fn parse_child(c: &mut Criterion) {
    let input = fixture("guide.md").into_bytes();
    let sizer = sizer();
    let max = SizeUnit::Model.default_size();
    let sizes = ChunkSizes { min: ChunkSizes::default_min(max), max, overlap: ChunkSizes::default_overlap(max) };
    let limits = ParseLimits::default();
    let child = |unit| ParseChild {
        program: PathBuf::from(env!("CARGO_BIN_EXE_millrace-chunking")),
        memory_bytes: 1 << 30,
        timeout: Duration::from_secs(30),
        limits,
        unit,
        model_dir: model_dir(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("parse_small_document");
    group.sample_size(30).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(2));
    group.bench_function("in_process", |b| {
        b.iter(|| split_document(&parse_document(MARKDOWN, &input, &limits).unwrap(), &sizer, sizes).unwrap())
    });
    let chars = child(SizeUnit::Chars);
    let char_sizes = ChunkSizes { min: 750, max: 1000, overlap: 100 };
    group.bench_function("child_chars", |b| {
        b.iter(|| runtime.block_on(chars.run(MARKDOWN, input.clone(), char_sizes)).unwrap())
    });
    let model = child(SizeUnit::Model);
    group.bench_function("child_model_tokens", |b| {
        b.iter(|| runtime.block_on(model.run(MARKDOWN, input.clone(), sizes)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, chunking, parse_child);
criterion_main!(benches);
