//! Every parser on a real file of its format, and the bad files each must refuse with its
//! own reason. The PDF and DOCX fixtures come from `tests/fixtures/make_fixtures.py`.

use millrace_chunking::{ChunkSizes, ParseLimits, Sizer, parse_document, split_document};
use millrace_pipeline::content::{DOCX, HTML, MARKDOWN, PDF};

use crate::helpers::{fixture, parse, parse_err};

#[test]
fn markdown_keeps_its_structure_and_title() {
    let doc = parse(MARKDOWN, "guide.md");
    assert!(doc.markdown);
    assert_eq!(doc.title.as_deref(), Some("The Millrace Guide"));
    let chunks = split_document(&doc, &Sizer::chars(), ChunkSizes { min: 150, max: 300, overlap: 0 }).unwrap();
    let tail = chunks.iter().find(|c| c.text.contains("spent water")).unwrap();
    assert_eq!(tail.heading_path, ["The Millrace Guide", "Chapter 1: Water", "What is a tail race?"]);
    let stones = chunks.iter().find(|c| c.text.contains("runner stone")).unwrap();
    assert_eq!(stones.heading_path, ["The Millrace Guide", "Chapter 3: The stones"]);
    assert!(chunks.iter().all(|c| c.page_start == 0 && c.page_end == 0));
}

#[test]
fn html_keeps_the_article_as_markdown_and_drops_the_furniture() {
    let doc = parse(HTML, "article.html");
    assert!(doc.markdown);
    assert_eq!(doc.title.as_deref(), Some("Roving Bridges | Canal Notes"));
    assert!(doc.text.starts_with("# Roving bridges"), "{}", doc.text);
    assert!(doc.text.contains("\n## How the crossing works\n"), "{}", doc.text);
    assert!(doc.text.contains("- No unhitching\n- No snagged ropes"), "{}", doc.text);
    assert!(doc.text.contains("```\nramp → span → ramp (under the arch)\n```"), "{}", doc.text);
    // Link words stay, addresses go.
    assert!(doc.text.contains("The roving bridge solves this"), "{}", doc.text);
    assert!(!doc.text.contains("example.org"), "{}", doc.text);
    for furniture in [
        "HomeBanner",
        "NavLink",
        "SidebarPopularPosts",
        "FooterCopyright",
        "trackingCodeSecret",
        "inline script secret",
        "nav-secret",
        "NoscriptFallbackText",
        "SubscribeButtonText",
    ] {
        assert!(!doc.text.contains(furniture), "{furniture:?} leaked into {}", doc.text);
    }
    let chunks = split_document(&doc, &Sizer::chars(), ChunkSizes { min: 60, max: 120, overlap: 0 }).unwrap();
    let ramp = chunks.iter().find(|c| c.text.contains("spiral ramp")).unwrap();
    assert_eq!(ramp.heading_path, ["Roving bridges", "Where to see one"], "{chunks:#?}");
}

#[test]
fn pdf_text_comes_page_by_page_with_page_numbers() {
    let doc = parse(PDF, "multipage.pdf");
    assert!(!doc.markdown);
    assert_eq!(doc.title.as_deref(), Some("Waterways Handbook"));
    assert_eq!(doc.page_starts.len(), 3);
    assert_eq!(doc.page_starts[0], 0);
    for (page, marker) in ["P1X", "P2X", "P3X"].iter().enumerate() {
        let at = doc.text.find(marker).unwrap_or_else(|| panic!("{marker} missing from {:?}", doc.text));
        let starts = &doc.page_starts;
        assert!(starts[page] <= at && starts.get(page + 1).is_none_or(|next| at < *next), "{marker} on the wrong page");
    }
    let chunks = split_document(&doc, &Sizer::chars(), ChunkSizes { min: 80, max: 120, overlap: 0 }).unwrap();
    let on = |needle: &str| {
        let chunk = chunks.iter().find(|c| c.text.contains(needle)).unwrap();
        (chunk.page_start, chunk.page_end)
    };
    assert_eq!(on("keeper closes"), (1, 1));
    assert_eq!(on("water wheel"), (2, 2));
    assert_eq!(on("roving bridge"), (3, 3));
    // A chunk big enough to cross a page break says so.
    let wide = split_document(&doc, &Sizer::chars(), ChunkSizes { min: 5000, max: 5000, overlap: 0 }).unwrap();
    assert_eq!((wide[0].page_start, wide[0].page_end), (1, 3));
}

#[test]
fn a_pdf_with_only_an_owner_password_is_read() {
    let doc = parse(PDF, "owner_password_only.pdf");
    assert!(doc.text.contains("roving bridge"), "{}", doc.text);
}

#[test]
fn bad_pdfs_fail_each_with_its_own_reason() {
    assert_eq!(parse_err(PDF, &fixture("encrypted.pdf")), "the PDF is encrypted");
    assert_eq!(parse_err(PDF, &fixture("image_only.pdf")), "the PDF has no extractable text (scanned or image-only?)");
    let truncated = parse_err(PDF, &fixture("truncated.pdf"));
    assert!(truncated.starts_with("the PDF is corrupt: "), "{truncated}");
    let garbage = parse_err(PDF, b"%PDF-1.7\nthis is not a PDF at all");
    assert!(garbage.starts_with("the PDF is corrupt: "), "{garbage}");
}

#[test]
fn docx_headings_lists_and_tables_become_markdown() {
    let doc = parse(DOCX, "headings.docx");
    assert!(doc.markdown);
    assert_eq!(doc.title.as_deref(), Some("Keeping a Canal"));
    let expected = [
        "# Keeping a Canal",
        "A short guide for volunteers, written for the millrace tests.",
        "# Before the season",
        "Walk the whole length and note what needs doing.",
        "## Tools to bring",
        "- a windlass for the paddles\n- gloves and a grabber\n- a notebook",
        "## Checking the gates",
        "\\#1 rule: never open both gates of a lock at once.",
        "Gate | Condition\nUpper | Leaking at the mitre",
        "# After the season",
        "Write up the notebook and send it to the canal trust.",
    ]
    .join("\n\n");
    assert_eq!(doc.text, expected);
    let chunks = split_document(&doc, &Sizer::chars(), ChunkSizes { min: 40, max: 80, overlap: 0 }).unwrap();
    let grabber = chunks.iter().find(|c| c.text.contains("grabber")).unwrap();
    assert_eq!(grabber.heading_path, ["Before the season", "Tools to bring"]);
    let rule = chunks.iter().find(|c| c.text.contains("never open both")).unwrap();
    assert_eq!(rule.heading_path, ["Before the season", "Checking the gates"]);
}

#[test]
fn bad_docx_files_fail_with_a_clear_reason() {
    assert_eq!(
        parse_err(DOCX, &fixture("invalid.docx")),
        "the DOCX is invalid: it has no word/document.xml (not a Word document?)"
    );
    let not_zip = parse_err(DOCX, b"just some text pretending");
    assert!(not_zip.starts_with("the DOCX is invalid: it is not a ZIP archive"), "{not_zip}");
}

#[test]
fn a_docx_zip_bomb_is_stopped_at_the_decompression_limit() {
    use std::io::Write;
    // 8 MiB of one repeated paragraph deflates to a few KiB.
    let paragraph = "<w:p><w:r><w:t>bomb</w:t></w:r></w:p>";
    let xml = format!("<w:document><w:body>{}</w:body></w:document>", paragraph.repeat((8 << 20) / paragraph.len()));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("word/document.xml", options).unwrap();
    zip.write_all(xml.as_bytes()).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    assert!(bytes.len() < 200_000, "{} bytes compressed", bytes.len());
    let limits = ParseLimits { max_unzipped_bytes: 1 << 20, ..ParseLimits::default() };
    let err = parse_document(DOCX, &bytes, &limits).unwrap_err().to_string();
    assert!(err.contains("decompresses to more than 1048576 bytes"), "{err}");
    // Within the limit, the same file parses.
    let doc = parse_document(DOCX, &bytes, &ParseLimits::default()).unwrap();
    assert!(doc.text.starts_with("bomb\n\nbomb"));
}

#[test]
fn binary_sent_as_text_is_refused() {
    let err = parse_err("text/plain", &fixture("multipage.pdf"));
    assert!(err.starts_with("the document looks binary"), "{err}");
    let err = parse_err(MARKDOWN, &fixture("headings.docx"));
    assert!(err.starts_with("the document looks binary"), "{err}");
}

#[test]
fn a_generic_type_is_settled_by_the_bytes() {
    let doc = parse_document("application/octet-stream", &fixture("multipage.pdf"), &ParseLimits::default()).unwrap();
    assert_eq!(doc.page_starts.len(), 3);
    let doc = parse_document("application/octet-stream", &fixture("headings.docx"), &ParseLimits::default()).unwrap();
    assert!(doc.text.starts_with("# Keeping a Canal"));
}
