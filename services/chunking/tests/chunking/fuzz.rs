//! Random and mutated bytes into every parser: each call returns Ok or a parse error, never
//! panics (a panic in a third-party parser must come back as an error), and returns quickly.

use std::time::{Duration, Instant};

use millrace_chunking::{ChunkSizes, ParseError, ParseLimits, Sizer, parse_document, split_document};
use millrace_pipeline::content::{DOCX, HTML, MARKDOWN, PDF, TEXT};
use proptest::prelude::*;

use crate::helpers::fixture;

const TYPES: [&str; 6] = [TEXT, MARKDOWN, HTML, PDF, DOCX, "application/octet-stream"];
/// Generous for a debug build on a busy machine; a quadratic or looping parser blows it.
const BOUND: Duration = Duration::from_secs(10);

fn check(content_type: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let result = parse_document(content_type, bytes, &ParseLimits::default());
    if let Err(ParseError::Crashed(format, message)) = &result {
        return Err(TestCaseError::fail(format!("the {format} parser panicked: {message}")));
    }
    if let Ok(doc) = &result {
        let sizes = ChunkSizes { min: 150, max: 200, overlap: 20 };
        prop_assert!(split_document(doc, &Sizer::chars(), sizes).is_ok());
    }
    prop_assert!(started.elapsed() < BOUND, "{} took {:?}", content_type, started.elapsed());
    Ok(())
}

/// Bytes of `base` with a few bytes overwritten, a run deleted, and possibly cut short.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    (prop::collection::vec((0..len, any::<u8>()), 1..8), 0..len, 0usize..64, prop::option::of(0..len)).prop_map(
        move |(writes, cut_at, cut_len, truncate)| {
            let mut bytes = base.clone();
            for (at, byte) in writes {
                bytes[at] = byte;
            }
            let end = (cut_at + cut_len).min(bytes.len());
            bytes.drain(cut_at..end);
            if let Some(at) = truncate.filter(|at| *at < bytes.len()) {
                bytes.truncate(at);
            }
            bytes
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_crash_a_parser(bytes in prop::collection::vec(any::<u8>(), 0..4096), which in 0..TYPES.len()) {
        check(TYPES[which], &bytes)?;
    }

    #[test]
    fn random_text_never_crashes_a_parser(text in "[<>/a-z =\"'!#*\\-\n&;]{0,2000}", which in 0..TYPES.len()) {
        check(TYPES[which], text.as_bytes())?;
    }

    #[test]
    fn mutated_pdfs_never_crash(bytes in mutated(fixture("multipage.pdf"))) {
        check(PDF, &bytes)?;
    }

    #[test]
    fn mutated_docx_files_never_crash(bytes in mutated(fixture("headings.docx"))) {
        check(DOCX, &bytes)?;
    }

    #[test]
    fn mutated_html_never_crashes(bytes in mutated(fixture("article.html"))) {
        check(HTML, &bytes)?;
    }

    #[test]
    fn mutated_markdown_never_crashes(bytes in mutated(fixture("guide.md"))) {
        check(MARKDOWN, &bytes)?;
    }
}

/// A one-page PDF whose content stream is `data` under `/Filter [filters]`, with a `/Length`
/// that may lie.
fn pdf_with_stream(filters: &[&str], data: &[u8], length_delta: i64) -> Vec<u8> {
    let filter = filters.iter().map(|f| format!("/{f}")).collect::<Vec<_>>().join(" ");
    let length = (data.len() as i64 + length_delta).max(0);
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_vec(),
        [
            format!("<< /Filter [{filter}] /Length {length} >>\nstream\n").into_bytes(),
            data.to_vec(),
            b"\nendstream".to_vec(),
        ]
        .concat(),
    ];
    millrace_testkit::pdf_from_objects(&objects)
}

/// Zlib of `data`, so that random chains hold real compressed streams, not only noise.
fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

const FILTERS: [&str; 5] = ["FlateDecode", "LZWDecode", "ASCII85Decode", "ASCIIHexDecode", "DCTDecode"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn large_random_bytes_never_crash_a_parser(bytes in prop::collection::vec(any::<u8>(), 0..262_144), which in 0..TYPES.len()) {
        check(TYPES[which], &bytes)?;
    }

    #[test]
    fn large_random_markup_never_crashes(text in "[<>/a-z =\"'!#*\\-\n&;()\\[\\]`|]{0,32768}", which in 0..TYPES.len()) {
        check(TYPES[which], text.as_bytes())?;
    }

    #[test]
    fn large_deep_random_html_never_crashes(tags in prop::collection::vec(("[a-z]{1,6}", any::<bool>(), "[a-z ]{0,20}"), 0..4_000)) {
        let html: String = tags
            .iter()
            .map(|(tag, open, text)| if *open { format!("<{tag}>{text}") } else { format!("</{tag}>{text}") })
            .collect();
        check(HTML, html.as_bytes())?;
    }

    #[test]
    fn pdfs_with_random_filter_chains_never_crash(
        chain in prop::collection::vec(0..FILTERS.len(), 0..4),
        body in prop::collection::vec(any::<u8>(), 0..65_536),
        compress in any::<bool>(),
        length_delta in -8i64..8,
    ) {
        let filters: Vec<&str> = chain.iter().map(|&i| FILTERS[i]).collect();
        let data = if compress { zlib(&body) } else { body };
        check(PDF, &pdf_with_stream(&filters, &data, length_delta))?;
    }
}

#[test]
fn pathological_nesting_is_handled_without_overflowing_the_stack() {
    // Run on a thread with the blocking pool's stack size, as in the service. Deep HTML also
    // used to be quadratic in html5ever (minutes); it must be refused fast.
    let started = Instant::now();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let deep_html = "<div>".repeat(100_000);
            assert!(parse_document(HTML, deep_html.as_bytes(), &ParseLimits::default()).is_err());
            let quotes = format!("{}deep", "> ".repeat(10_000));
            let doc = parse_document(MARKDOWN, quotes.as_bytes(), &ParseLimits::default()).unwrap();
            split_document(&doc, &Sizer::chars(), ChunkSizes { min: 100, max: 200, overlap: 0 }).unwrap();
            let lists = format!("{}deep", "- ".repeat(10_000));
            let doc = parse_document(MARKDOWN, lists.as_bytes(), &ParseLimits::default()).unwrap();
            split_document(&doc, &Sizer::chars(), ChunkSizes { min: 100, max: 200, overlap: 0 }).unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}
