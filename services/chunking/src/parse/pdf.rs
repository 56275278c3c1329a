//! PDF: the text of each page with pdf-extract (on lopdf), and where each page starts, so
//! chunks carry page numbers a reader can follow.
//!
//! Untrusted PDFs go wrong in three ways a caller can fix, each with its own reason: encrypted
//! (we have no password), scanned or image-only (no text to extract: needs OCR first), corrupt.
//! pdf-extract panics on many odd files; its panics are caught per page. Three things a panic
//! hook cannot catch are checked before extraction: a page tree whose `Parent` links loop and
//! form XObjects that draw themselves (both recurse until the stack overflows, which aborts the
//! process), and compressed streams that inflate to gigabytes (memory).

use std::collections::HashSet;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pdf_extract::content::Content;
use pdf_extract::{Dictionary, Document, Object, ObjectId, PlainTextOutput, Stream, output_doc_page};

use super::{ParseError, ParseLimits, ParsedDocument, panic_message};

/// Deepest page tree (`Parent` links) and deepest nesting of form XObjects accepted.
const MAX_NESTING: usize = 64;

pub(super) fn parse(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument, ParseError> {
    let doc = catch_unwind(|| Document::load_mem(bytes))
        .map_err(|panic| ParseError::PdfCorrupt(format!("the reader failed on it: {}", panic_message(panic.as_ref()))))?
        .map_err(|err| match err {
            pdf_extract::Error::Decryption(_) | pdf_extract::Error::InvalidPassword => ParseError::PdfEncrypted,
            other => ParseError::PdfCorrupt(other.to_string()),
        })?;
    // lopdf opens a PDF encrypted with an empty user password (permissions only) by itself;
    // one it could not open keeps its encryption dictionary and no decryption state.
    if doc.is_encrypted() && doc.encryption_state.is_none() {
        return Err(ParseError::PdfEncrypted);
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(ParseError::PdfCorrupt("it has no pages".into()));
    }
    guarded(|| check_structure(&doc, &pages, limits))
        .unwrap_or_else(|panic| Err(ParseError::PdfCorrupt(format!("the reader failed on it: {panic}"))))?;

    let mut text = String::new();
    let mut page_starts = Vec::with_capacity(pages.len());
    let mut first_failure = None;
    for &number in pages.keys() {
        let mut page = String::new();
        let extracted = guarded(|| output_doc_page(&doc, &mut PlainTextOutput::new(&mut page), number));
        let failure = match extracted {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(format!("page {number}: {err}")),
            Err(panic) => Some(format!("page {number}: the reader failed on it: {panic}")),
        };
        if let Some(failure) = failure {
            tracing::debug!(page = number, %failure, "PDF page not extracted");
            first_failure.get_or_insert(failure);
        }
        let page = page.trim();
        if !page.is_empty() && !text.is_empty() {
            text.push_str("\n\n");
        }
        page_starts.push(text.len());
        text.push_str(page);
        if text.len() > limits.max_text_bytes {
            return Err(ParseError::TextTooLarge { limit: limits.max_text_bytes });
        }
    }
    if text.trim().is_empty() {
        // Pages that failed say more than "no text" about why nothing came out.
        return Err(first_failure.map_or(ParseError::PdfNoText, ParseError::PdfCorrupt));
    }
    Ok(ParsedDocument { text, markdown: false, page_starts, title: info_title(&doc) })
}

/// Runs `f`, turning a panic into its message.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| panic_message(panic.as_ref()))
}

fn check_structure(
    doc: &Document,
    pages: &std::collections::BTreeMap<u32, ObjectId>,
    limits: &ParseLimits,
) -> Result<(), ParseError> {
    check_inflated_size(doc, limits.max_unzipped_bytes)?;
    let mut done = HashSet::new();
    for &page_id in pages.values() {
        let resources = page_resources(doc, page_id)?;
        let Some(resources) = resources else { continue };
        for xobject in xobject_refs(doc, resources) {
            check_form(doc, xobject, resources, &mut Vec::new(), &mut done)?;
        }
    }
    Ok(())
}

/// The page's resources, inherited through `Parent` links as pdf-extract looks them up;
/// refuses a chain that loops or is absurdly deep (pdf-extract would recurse forever).
fn page_resources(doc: &Document, page_id: ObjectId) -> Result<Option<&Dictionary>, ParseError> {
    let mut seen = HashSet::new();
    let mut node = doc.get_dictionary(page_id).ok();
    let mut resources = None;
    while let Some(dict) = node {
        if resources.is_none() {
            resources = dict.get_deref(b"Resources", doc).and_then(Object::as_dict).ok();
        }
        let Ok(parent) = dict.get(b"Parent").and_then(Object::as_reference) else { break };
        if !seen.insert(parent) || seen.len() > MAX_NESTING {
            return Err(ParseError::PdfCorrupt("its page tree loops".into()));
        }
        node = doc.get_dictionary(parent).ok();
    }
    Ok(resources)
}

/// Follows the form XObjects a form draws (`/Name Do` in its content), refusing cycles and
/// deep nesting. `resources` is what the form inherits when it has none of its own.
fn check_form(
    doc: &Document,
    id: ObjectId,
    inherited: &Dictionary,
    path: &mut Vec<ObjectId>,
    done: &mut HashSet<(ObjectId, usize)>,
) -> Result<(), ParseError> {
    // Identity of the resources dictionary in use: the same form can resolve names differently.
    let key = (id, inherited as *const Dictionary as usize);
    if done.contains(&key) {
        return Ok(());
    }
    if path.contains(&id) || path.len() >= MAX_NESTING {
        return Err(ParseError::PdfCorrupt("its drawings (form XObjects) refer to themselves".into()));
    }
    let Ok(stream) = doc.get_object(id).and_then(Object::as_stream) else { return Ok(()) };
    if stream.dict.get(b"Subtype").and_then(Object::as_name).ok() != Some(b"Form".as_slice()) {
        return Ok(());
    }
    let resources = stream.dict.get_deref(b"Resources", doc).and_then(Object::as_dict).unwrap_or(inherited);
    path.push(id);
    for name in drawn_names(stream) {
        let child = resources
            .get_deref(b"XObject", doc)
            .and_then(Object::as_dict)
            .and_then(|xobjects| xobjects.get(&name))
            .and_then(Object::as_reference);
        if let Ok(child) = child {
            check_form(doc, child, resources, path, done)?;
        }
    }
    path.pop();
    done.insert(key);
    Ok(())
}

/// Names of the XObjects a content stream draws.
fn drawn_names(stream: &Stream) -> Vec<Vec<u8>> {
    let content = stream.decompressed_content().unwrap_or_else(|_| stream.content.clone());
    let Ok(content) = Content::decode(&content) else { return Vec::new() };
    content
        .operations
        .into_iter()
        .filter(|op| op.operator == "Do")
        .filter_map(|op| op.operands.first().and_then(|name| name.as_name().ok()).map(<[u8]>::to_vec))
        .collect()
}

fn xobject_refs(doc: &Document, resources: &Dictionary) -> Vec<ObjectId> {
    resources
        .get_deref(b"XObject", doc)
        .and_then(Object::as_dict)
        .map(|xobjects| xobjects.iter().filter_map(|(_, obj)| obj.as_reference().ok()).collect())
        .unwrap_or_default()
}

/// Inflates every Flate-compressed stream into nothing, counting, and refuses the document
/// when the total passes `limit`: lopdf would inflate each stream whole into memory.
fn check_inflated_size(doc: &Document, limit: u64) -> Result<(), ParseError> {
    let mut total: u64 = 0;
    for object in doc.objects.values() {
        let Object::Stream(stream) = object else { continue };
        let flate = match stream.dict.get(b"Filter") {
            Ok(Object::Name(name)) => name == b"FlateDecode",
            Ok(Object::Array(filters)) => filters.iter().any(|f| f.as_name().ok() == Some(b"FlateDecode".as_slice())),
            _ => false,
        };
        if !flate {
            continue;
        }
        let remaining = limit.saturating_sub(total);
        let mut decoder = flate2::read::ZlibDecoder::new(stream.content.as_slice()).take(remaining.saturating_add(1));
        // A broken stream counts what inflated before the break; lopdf copes with the rest.
        total += std::io::copy(&mut decoder, &mut std::io::sink()).unwrap_or(0);
        if total > limit {
            return Err(ParseError::DecompressionBomb { format: "PDF", limit });
        }
    }
    Ok(())
}

/// The `/Title` of the document information dictionary, if it says something.
fn info_title(doc: &Document) -> Option<String> {
    let info = doc.trailer.get_deref(b"Info", doc).and_then(Object::as_dict).ok()?;
    let title = info.get_deref(b"Title", doc).ok()?;
    let title = pdf_extract::decode_text_string(title).ok()?;
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}
