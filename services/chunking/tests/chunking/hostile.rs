//! The hostile corpus (`tests/fixtures/hostile/` at the repository root, written by
//! `scripts/make_hostile_fixtures.py`, plus two inputs too big to commit, made here): each
//! fails its own job with a clear reason through the real parse path, and decompression bombs
//! are refused before anything is inflated past the cap.

use std::time::{Duration, Instant};

use millrace_chunking::{ParseError, ParseLimits, parse_document};
use millrace_pipeline::content::{DOCX, HTML, PDF, TEXT};

use crate::child::{CHAR_SIZES, child, fatal_reason, live_children};
use crate::helpers::{hostile, peak_memory_growth_during};

/// The cap the hostile tests run with: the bombs inflate to 64 MiB.
pub const UNZIPPED_CAP: u64 = 8 << 20;

#[test]
fn pdf_bombs_are_refused_before_anything_inflates_past_the_cap() {
    let limits = ParseLimits { max_unzipped_bytes: UNZIPPED_CAP, ..ParseLimits::default() };
    let mut wrong = Vec::new();
    for name in ["pdf_objstm_bomb.pdf", "pdf_ascii85_flate_bomb.pdf", "pdf_lzw_bomb.pdf"] {
        let bytes = hostile(name);
        let (result, growth) = peak_memory_growth_during(|| parse_document(PDF, &bytes, &limits));
        if result != Err(ParseError::DecompressionBomb { format: "PDF", limit: UNZIPPED_CAP }) {
            wrong.push(format!("{name}: {:?}", result.map(|doc| doc.text.len())));
        }
        // The check may hold up to the cap, never the bomb (64 MiB).
        if growth > 3 * UNZIPPED_CAP {
            wrong.push(format!("{name}: peak memory grew by {growth} bytes"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Every hostile document, through the service's real parse path (a child process): each
/// fails its own job with a clear reason, and the parent goes on.
#[tokio::test]
async fn every_hostile_document_fails_its_own_job_with_a_reason() {
    let limits = ParseLimits { max_unzipped_bytes: UNZIPPED_CAP, ..ParseLimits::default() };
    let child = child(Duration::from_secs(60), 1 << 30, limits);
    let bomb = |format: &str| {
        format!(
            "the {format} decompresses to more than {UNZIPPED_CAP} bytes (MILLRACE_MAX_UNZIPPED_BYTES); a zip bomb?"
        )
    };
    let deep_html = "<div>".repeat(100_000).into_bytes();
    let cases = [
        ("pdf_objstm_bomb.pdf", PDF, hostile("pdf_objstm_bomb.pdf"), bomb("PDF")),
        ("pdf_ascii85_flate_bomb.pdf", PDF, hostile("pdf_ascii85_flate_bomb.pdf"), bomb("PDF")),
        ("pdf_lzw_bomb.pdf", PDF, hostile("pdf_lzw_bomb.pdf"), bomb("PDF")),
        ("docx_zip_bomb.docx", DOCX, hostile("docx_zip_bomb.docx"), bomb("DOCX")),
        ("docx_lying_sizes.docx", DOCX, hostile("docx_lying_sizes.docx"), bomb("DOCX")),
        (
            "docx_lying_entry_count.docx",
            DOCX,
            hostile("docx_lying_entry_count.docx"),
            "the DOCX is invalid: it is not a ZIP archive (invalid Zip archive: Could not find EOCD)".into(),
        ),
        (
            "invalid_utf8.txt",
            TEXT,
            hostile("invalid_utf8.txt"),
            "the document is not valid UTF-8: invalid utf-8 sequence of 1 bytes from index 3".into(),
        ),
        ("100,000 nested divs", HTML, deep_html, "the HTML is nested more than 512 elements deep".into()),
    ];
    let mut wrong = Vec::new();
    for (name, content_type, bytes, expected) in cases {
        let started = Instant::now();
        let reason = fatal_reason(child.run(content_type, bytes, CHAR_SIZES).await);
        eprintln!("{name}: {reason:?} in {:?}", started.elapsed());
        if reason != expected {
            wrong.push(format!("{name}: {reason:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // The parent is unharmed: the next document parses.
    let output = child.run(TEXT, b"a small document after the hostile ones".to_vec(), CHAR_SIZES).await.unwrap();
    assert_eq!(output.chunks.len(), 1);
    assert_eq!(live_children(), Vec::<String>::new());
}

/// A 10 MB line with no whitespace (base64, minified code) is chunked within the limits, in
/// the child. Its own test: in a debug build on a loaded machine it takes a minute or more.
#[tokio::test]
async fn a_ten_megabyte_line_is_chunked_within_the_limits() {
    let child = child(Duration::from_secs(170), 1 << 30, ParseLimits::default());
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let line: Vec<u8> = (0..10_000_000usize).map(|i| alphabet[i * 7 % 64]).collect();
    let started = Instant::now();
    let output = child.run(TEXT, line, CHAR_SIZES).await.unwrap();
    eprintln!("10 MB line: {} chunks in {:?}", output.chunks.len(), started.elapsed());
    assert!(output.chunks.iter().all(|chunk| chunk.text.chars().count() <= CHAR_SIZES.max));
    assert_eq!(output.chunks.last().map(|chunk| chunk.char_end), Some(10_000_000));
    assert_eq!(live_children(), Vec::<String>::new());
}
