//! The documents of a chaos run: ordinary ones in five formats, generated from the seed so that
//! each document and each revision differs (a revision changes one paragraph, so re-ingests
//! reuse the rest), some built on the files in `examples/`; and the hostile ones, generated
//! here at run time (a PDF whose content stream inflates to hundreds of MiB, a DOCX zip bomb,
//! a 10 MB single-line text, invalid UTF-8 labelled text/plain, deeply nested HTML), plus the
//! broken fixtures of the chunking tests and, when present, the corpus in
//! `tests/fixtures/hostile/`.

use std::path::{Path, PathBuf};

use crate::rng::Rng;

pub const PDF: &str = "application/pdf";
pub const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

#[derive(Debug, Clone)]
pub struct Document {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    /// Which format (or which hostile kind), for the report.
    pub kind: String,
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const WORDS: &[&str] = &[
    "water",
    "wheel",
    "race",
    "sluice",
    "gate",
    "weir",
    "pond",
    "miller",
    "stone",
    "grain",
    "flour",
    "shaft",
    "gear",
    "cog",
    "spur",
    "axle",
    "bearing",
    "bucket",
    "paddle",
    "overshot",
    "undershot",
    "breastshot",
    "tailrace",
    "headrace",
    "dam",
    "stream",
    "river",
    "flow",
    "head",
    "fall",
    "power",
    "turbine",
    "runner",
    "vane",
    "blade",
    "channel",
    "culvert",
    "leat",
    "flume",
    "mill",
    "hopper",
    "sack",
    "hoist",
    "kiln",
    "malt",
    "oat",
    "barley",
    "wheat",
    "rye",
    "bran",
    "sieve",
    "dresser",
    "governor",
    "belt",
    "pulley",
    "lantern",
    "pinion",
    "crown",
    "wallower",
    "bridge",
    "tree",
    "tentering",
    "runner",
    "bedstone",
    "furrow",
    "land",
    "dress",
    "pick",
    "thrift",
    "stave",
    "rim",
    "arm",
    "hub",
    "oak",
    "elm",
    "iron",
    "cast",
    "wrought",
    "rivet",
    "bolt",
    "frame",
    "floor",
    "loft",
    "bin",
    "chute",
    "spout",
    "shoe",
    "damsel",
    "tun",
    "vat",
    "tide",
    "ebb",
    "flood",
    "estuary",
    "marsh",
    "meadow",
    "valley",
    "village",
    "parish",
    "manor",
    "lord",
    "tenant",
    "toll",
    "custom",
    "ledger",
    "season",
    "winter",
    "summer",
    "drought",
    "spate",
    "ice",
    "repair",
    "wright",
    "carpenter",
    "mason",
    "smith",
    "apprentice",
];

fn sentence(rng: &mut Rng) -> String {
    let n = rng.range(7, 15) as usize;
    let mut words: Vec<&str> = (0..n).map(|_| *rng.pick(WORDS)).collect();
    let first = words[0];
    let mut capital = first[..1].to_uppercase();
    capital.push_str(&first[1..]);
    words[0] = "";
    format!("{capital}{}.", words.join(" "))
}

fn paragraph(seed: &Rng, doc: u64, index: u64, revision: u64) -> String {
    let mut rng = seed.fork(doc.wrapping_mul(1_000_003) ^ (index << 20) ^ (revision << 40));
    let sentences = rng.range(3, 7);
    let mut text: Vec<String> = (0..sentences).map(|_| sentence(&mut rng)).collect();
    // Words only this document and paragraph have, so a search can point at them.
    text.push(format!("Marker doc{doc}p{index}r{revision} closes this paragraph."));
    text.join(" ")
}

/// The paragraphs of revision `revision` of ordinary document `doc`: revision r changes
/// paragraph r mod n and keeps the others. A long document (25 to 70 paragraphs, a few dozen
/// chunks) stays in flight long enough for a cancel or a delete to meet it there.
fn paragraphs(seed: &Rng, doc: u64, revision: u64, long: bool) -> (String, Vec<String>) {
    let mut shape = seed.fork(doc.wrapping_mul(7_919));
    let n = if long { shape.range(25, 70) } else { shape.range(1, 8) };
    let changed = if revision == 0 { None } else { Some(revision % n) };
    let paragraphs = (0..n).map(|i| paragraph(seed, doc, i, if changed == Some(i) { revision } else { 0 })).collect();
    (format!("Mill record {doc}"), paragraphs)
}

/// Ordinary document `doc` at `revision`; its format is fixed by the document number.
pub fn ordinary(seed: &Rng, doc: u64, revision: u64, long: bool) -> Document {
    let (title, paragraphs) = paragraphs(seed, doc, revision, long);
    let (bytes, content_type, kind) = match doc % 6 {
        0 => (paragraphs.join("\n\n").into_bytes(), "text/plain", "text"),
        1 => (markdown(&title, &paragraphs).into_bytes(), "text/markdown", "markdown"),
        2 => (html(&title, &paragraphs).into_bytes(), "text/html", "html"),
        3 => (pdf(&title, &paragraphs), PDF, "pdf"),
        4 => (docx(&title, &paragraphs), DOCX, "docx"),
        _ => return from_example(doc, &paragraphs),
    };
    Document { bytes, content_type, kind: kind.to_owned() }
}

/// One of the files in `examples/` with this document's paragraphs added, or (every 7th) a
/// bundled PDF or DOCX as it is.
fn from_example(doc: u64, paragraphs: &[String]) -> Document {
    let whole: [(&str, &str, &'static str); 3] = [
        ("examples/tide-mills.pdf", "pdf", PDF),
        ("services/chunking/tests/fixtures/multipage.pdf", "pdf", PDF),
        ("services/chunking/tests/fixtures/headings.docx", "docx", DOCX),
    ];
    if doc.is_multiple_of(7) {
        let (path, kind, content_type) = whole[(doc / 7 % 3) as usize];
        if let Ok(bytes) = std::fs::read(workspace().join(path)) {
            return Document { bytes, content_type, kind: format!("example {kind}") };
        }
    }
    let texts: [(&str, &'static str); 6] = [
        ("millraces.md", "text/markdown"),
        ("water-wheels.md", "text/markdown"),
        ("mill-safety-and-maintenance.md", "text/markdown"),
        ("grist-mill.html", "text/html"),
        ("turbines.txt", "text/plain"),
        ("small-hydro-today.txt", "text/plain"),
    ];
    let (file, content_type) = texts[(doc % 6) as usize];
    let original = std::fs::read_to_string(workspace().join("examples").join(file)).unwrap_or_default();
    let added = paragraphs.join("\n\n");
    let text = if content_type == "text/html" {
        let added = paragraphs.iter().map(|p| format!("<p>{p}</p>")).collect::<String>();
        match original.rfind("</body>") {
            Some(at) => format!("{}{added}{}", &original[..at], &original[at..]),
            None => format!("{original}{added}"),
        }
    } else {
        format!("{original}\n\n{added}\n")
    };
    Document {
        bytes: text.into_bytes(),
        content_type,
        kind: format!("example {}", content_type.trim_start_matches("text/")),
    }
}

fn markdown(title: &str, paragraphs: &[String]) -> String {
    let mut text = format!("# {title}\n\n");
    for (i, p) in paragraphs.iter().enumerate() {
        text.push_str(&format!("## Section {i}\n\n{p}\n\n"));
        if i % 3 == 2 {
            text.push_str("- first item of a list\n- second item of a list\n\n");
        }
    }
    text
}

fn html(title: &str, paragraphs: &[String]) -> String {
    let body: String =
        paragraphs.iter().enumerate().map(|(i, p)| format!("<h2>Section {i}</h2><p>{p}</p>\n")).collect();
    format!(
        "<!doctype html><html><head><title>{title}</title><style>p {{ color: teal }}</style></head>\
         <body><nav><a href=\"/\">Home</a> <a href=\"/mills\">Mills</a></nav><main><h1>{title}</h1>\n{body}</main>\
         <footer>Footer of the mill site</footer><script>var x = 1;</script></body></html>"
    )
}

/// Lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn pdf_escape(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii)
        .flat_map(|c| match c {
            '\\' | '(' | ')' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// A PDF of Helvetica text, about 45 lines a page.
pub fn pdf(title: &str, paragraphs: &[String]) -> Vec<u8> {
    let mut lines = vec![title.to_owned(), String::new()];
    for p in paragraphs {
        lines.extend(wrap(p, 85));
        lines.push(String::new());
    }
    let pages: Vec<Vec<u8>> = lines
        .chunks(45)
        .map(|page| {
            let mut content = String::from("BT /F1 11 Tf 14 TL 60 750 Td\n");
            for line in page {
                content.push_str(&format!("({}) Tj T*\n", pdf_escape(line)));
            }
            content.push_str("ET\n");
            content.into_bytes()
        })
        .collect();
    pdf_with_contents(&pages.iter().map(|c| (c.clone(), "")).collect::<Vec<_>>())
}

/// A PDF whose pages have these content streams (with extra stream dictionary entries, such as
/// a filter), correct cross-reference table included.
fn pdf_with_contents(pages: &[(Vec<u8>, &str)]) -> Vec<u8> {
    let mut objects: Vec<Vec<u8>> = Vec::new();
    let kids: Vec<String> = (0..pages.len()).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    objects.push(format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), pages.len()).into_bytes());
    objects.push(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec());
    for (i, (content, extra)) in pages.iter().enumerate() {
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R \
                 /Resources << /Font << /F1 3 0 R >> >> >>",
                5 + 2 * i
            )
            .into_bytes(),
        );
        let mut stream = format!("<< /Length {} {extra} >>\nstream\n", content.len()).into_bytes();
        stream.extend_from_slice(content);
        stream.extend_from_slice(b"\nendstream");
        objects.push(stream);
    }
    millrace_testkit::pdf_from_objects(&objects)
}

const W_NS: &str = "xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"";

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn docx(title: &str, paragraphs: &[String]) -> Vec<u8> {
    let p = |style: Option<&str>, text: &str| {
        let style = style.map(|s| format!("<w:pPr><w:pStyle w:val=\"{s}\"/></w:pPr>")).unwrap_or_default();
        format!("<w:p>{style}<w:r><w:t xml:space=\"preserve\">{}</w:t></w:r></w:p>", xml_escape(text))
    };
    let mut body = p(Some("Heading1"), title);
    for (i, text) in paragraphs.iter().enumerate() {
        body.push_str(&p(Some("Heading2"), &format!("Section {i}")));
        body.push_str(&p(None, text));
    }
    let document =
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><w:document {W_NS}><w:body>{body}</w:body></w:document>");
    let mut zip = ZipWriter::default();
    zip.stored("[Content_Types].xml", CONTENT_TYPES.as_bytes());
    zip.stored("word/document.xml", document.as_bytes());
    zip.finish()
}

const CONTENT_TYPES: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
<Default Extension=\"xml\" ContentType=\"application/xml\"/>\
<Override PartName=\"/word/document.xml\" \
ContentType=\"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml\"/></Types>";

/// A ZIP archive written by hand: stored entries, and deflated ones whose compressed bytes the
/// caller made (the zip bomb's, which no ZIP library would write from a 300 MiB buffer quickly
/// in a debug build).
#[derive(Default)]
struct ZipWriter {
    out: Vec<u8>,
    central: Vec<u8>,
    entries: u16,
}

impl ZipWriter {
    fn stored(&mut self, name: &str, data: &[u8]) {
        let mut crc = crc32fast::Hasher::new();
        crc.update(data);
        self.entry(name, 0, crc.finalize(), data, data.len() as u32);
    }

    fn entry(&mut self, name: &str, method: u16, crc: u32, data: &[u8], uncompressed: u32) {
        let offset = self.out.len() as u32;
        let header = |signature: u32, central: bool| {
            let mut h = Vec::new();
            h.extend_from_slice(&signature.to_le_bytes());
            if central {
                h.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&method.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // time
            h.extend_from_slice(&0x21u16.to_le_bytes()); // date: 1980-01-01
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&uncompressed.to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                h.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
                h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        self.out.extend_from_slice(&header(0x0403_4b50, false));
        self.out.extend_from_slice(data);
        self.central.extend_from_slice(&header(0x0201_4b50, true));
        self.entries += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        let offset = self.out.len() as u32;
        let size = self.central.len() as u32;
        self.out.extend_from_slice(&self.central);
        self.out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        self.out.extend_from_slice(&[0; 4]);
        self.out.extend_from_slice(&self.entries.to_le_bytes());
        self.out.extend_from_slice(&self.entries.to_le_bytes());
        self.out.extend_from_slice(&size.to_le_bytes());
        self.out.extend_from_slice(&offset.to_le_bytes());
        self.out.extend_from_slice(&0u16.to_le_bytes());
        self.out
    }
}

/// Raw deflate of `prefix`, `count` copies of `chunk`, then `suffix`, with its CRC-32 and
/// Adler-32. Each piece ends with a full flush, which resets the compressor, so one compressed
/// copy of `chunk` stands for all of them: a few hundred MiB cost one MiB of compression.
fn deflate_repeated(prefix: &[u8], chunk: &[u8], count: usize, suffix: &[u8]) -> (Vec<u8>, u32, u32, u64) {
    use flate2::{Compress, Compression, FlushCompress};
    let mut compress = Compress::new(Compression::default(), false);
    let mut piece = |input: &[u8], flush: FlushCompress| {
        let mut out = Vec::with_capacity(input.len() / 100 + 1024);
        let mut consumed = 0;
        loop {
            out.reserve(64 * 1024);
            let before_in = compress.total_in();
            compress.compress_vec(&input[consumed..], &mut out, flush).unwrap();
            consumed += (compress.total_in() - before_in) as usize;
            // Done when all input is in and the flush left room to spare in the buffer.
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        out
    };
    let head = piece(prefix, FlushCompress::Full);
    let first = piece(chunk, FlushCompress::Full);
    let second = piece(chunk, FlushCompress::Full);
    assert_eq!(first, second, "a full flush should make each copy compress the same");
    let tail = piece(suffix, FlushCompress::Finish);
    let mut raw = head;
    for _ in 0..count {
        raw.extend_from_slice(&first);
    }
    raw.extend_from_slice(&tail);

    let mut crc = crc32fast::Hasher::new();
    let mut adler = Adler32::default();
    crc.update(prefix);
    adler.update(prefix);
    for _ in 0..count {
        crc.update(chunk);
        adler.update(chunk);
    }
    crc.update(suffix);
    adler.update(suffix);
    let total = (prefix.len() + count * chunk.len() + suffix.len()) as u64;
    (raw, crc.finalize(), adler.value(), total)
}

#[derive(Debug)]
struct Adler32 {
    a: u32,
    b: u32,
}

impl Default for Adler32 {
    fn default() -> Self {
        Self { a: 1, b: 0 }
    }
}

impl Adler32 {
    fn update(&mut self, data: &[u8]) {
        const MOD: u32 = 65_521;
        // 5552 bytes is the most that can be summed before the u32 sums could overflow.
        for block in data.chunks(5552) {
            for &byte in block {
                self.a += u32::from(byte);
                self.b += self.a;
            }
            self.a %= MOD;
            self.b %= MOD;
        }
    }

    fn value(&self) -> u32 {
        (self.b << 16) | self.a
    }
}

/// The hostile documents, each with a name (its document id is `hostile-<name>`).
pub fn hostile(big_text_bytes: usize, bomb_mib: usize) -> Vec<(String, Document)> {
    let mut docs = Vec::new();
    let mib = vec![b' '; 1 << 20];

    // A PDF whose one content stream inflates to `bomb_mib` MiB.
    let (raw, _, adler, _) = deflate_repeated(b"BT /F1 12 Tf 72 720 Td (A PDF bomb) Tj ET\n", &mib, bomb_mib, b"\n");
    let mut zlib = vec![0x78, 0x9C];
    zlib.extend_from_slice(&raw);
    zlib.extend_from_slice(&adler.to_be_bytes());
    let bytes = pdf_with_contents(&[(zlib, "/Filter /FlateDecode")]);
    docs.push(("pdf-bomb".to_owned(), Document { bytes, content_type: PDF, kind: "hostile pdf-bomb".into() }));

    // A DOCX whose word/document.xml inflates to `bomb_mib` MiB of one paragraph's text.
    let letters = vec![b'a'; 1 << 20];
    let prefix = format!("<?xml version=\"1.0\"?><w:document {W_NS}><w:body><w:p><w:r><w:t>");
    let (raw, crc, _, total) =
        deflate_repeated(prefix.as_bytes(), &letters, bomb_mib, b"</w:t></w:r></w:p></w:body></w:document>");
    let mut zip = ZipWriter::default();
    zip.stored("[Content_Types].xml", CONTENT_TYPES.as_bytes());
    zip.entry("word/document.xml", 8, crc, &raw, u32::try_from(total).unwrap_or(u32::MAX));
    docs.push((
        "docx-bomb".to_owned(),
        Document { bytes: zip.finish(), content_type: DOCX, kind: "hostile docx-bomb".into() },
    ));

    // 10 MB on one line with no whitespace at all.
    let mut rng = Rng::new(42);
    let line: Vec<u8> = (0..big_text_bytes).map(|_| b'a' + rng.below(26) as u8).collect();
    docs.push((
        "one-line".to_owned(),
        Document { bytes: line, content_type: "text/plain", kind: "hostile one-line".into() },
    ));

    // Invalid UTF-8 labelled text/plain.
    let mut bytes = b"This starts as text about a mill race, then ".to_vec();
    for i in 0..2_000u32 {
        bytes.extend_from_slice(&[0xC3, 0x28, 0xFF, 0xFE, 0x80, (i % 251) as u8, 0xED, 0xA0, 0x80]);
    }
    docs.push((
        "invalid-utf8".to_owned(),
        Document { bytes, content_type: "text/plain", kind: "hostile invalid-utf8".into() },
    ));

    // HTML nested 100,000 elements deep.
    let depth = 100_000;
    let html =
        format!("<html><body>{}deep inside the mill{}</body></html>", "<div>".repeat(depth), "</div>".repeat(depth));
    docs.push((
        "nested-html".to_owned(),
        Document { bytes: html.into_bytes(), content_type: "text/html", kind: "hostile nested-html".into() },
    ));

    // The chunking tests' broken files: each should fail its own job with the reason.
    for file in ["encrypted.pdf", "image_only.pdf", "truncated.pdf", "invalid.docx"] {
        if let Ok(bytes) = std::fs::read(workspace().join("services/chunking/tests/fixtures").join(file)) {
            let content_type = if file.ends_with(".pdf") { PDF } else { DOCX };
            docs.push((file.replace('.', "-"), Document { bytes, content_type, kind: format!("hostile {file}") }));
        }
    }
    docs.extend(hostile_corpus(&workspace().join("tests/fixtures/hostile")));
    docs
}

/// The files of the hostile corpus another change adds (`tests/fixtures/hostile/`), when it is
/// there; the type comes from the extension, and files of other extensions are left out.
fn hostile_corpus(dir: &Path) -> Vec<(String, Document)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let content_type = match path.extension()?.to_str()? {
                "pdf" => PDF,
                "docx" => DOCX,
                "txt" => "text/plain",
                "md" => "text/markdown",
                "html" | "htm" => "text/html",
                _ => return None,
            };
            let bytes = std::fs::read(&path).ok()?;
            let id: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
            Some((format!("corpus-{id}"), Document { bytes, content_type, kind: format!("hostile corpus {name}") }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_repeated_deflate_inflates_to_what_it_stands_for() {
        let chunk = vec![b'x'; 1000];
        let (raw, crc, adler, total) = deflate_repeated(b"head", &chunk, 50, b"tail");
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&raw[..]).read_to_end(&mut inflated).unwrap();
        assert_eq!(inflated.len() as u64, total);
        assert!(inflated.starts_with(b"headxxx") && inflated.ends_with(b"xxxtail"));
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&inflated);
        assert_eq!(hasher.finalize(), crc);
        let mut zlib = vec![0x78, 0x9C];
        zlib.extend_from_slice(&raw);
        zlib.extend_from_slice(&adler.to_be_bytes());
        let mut again = Vec::new();
        flate2::read::ZlibDecoder::new(&zlib[..]).read_to_end(&mut again).unwrap();
        assert_eq!(again, inflated);
    }

    #[test]
    fn the_generated_docx_files_are_zip_archives_with_their_document() {
        let seed = Rng::new(3);
        let docx = ordinary(&seed, 4, 0, false);
        assert_eq!(docx.content_type, DOCX);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(docx.bytes)).unwrap();
        let mut xml = String::new();
        archive.by_name("word/document.xml").unwrap().read_to_string(&mut xml).unwrap();
        assert!(xml.contains("Marker doc4p0r0"), "{xml}");

        let hostile = hostile(1000, 2);
        let (_, bomb) = hostile.iter().find(|(name, _)| name == "docx-bomb").unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bomb.bytes.clone())).unwrap();
        let mut inflated = Vec::new();
        archive.by_name("word/document.xml").unwrap().read_to_end(&mut inflated).unwrap();
        assert!(inflated.len() > 2 << 20 && inflated.ends_with(b"</w:document>"));
    }

    #[test]
    fn a_revision_changes_one_paragraph_and_keeps_the_rest() {
        let seed = Rng::new(9);
        let (_, first) = paragraphs(&seed, 12, 0, false);
        let (_, second) = paragraphs(&seed, 12, 1, false);
        assert_eq!(first.len(), second.len());
        let differing = first.iter().zip(&second).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1, "{first:?}\n{second:?}");
        assert_ne!(paragraphs(&seed, 13, 0, false).1, first, "documents differ");
    }
}
