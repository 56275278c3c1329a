//! PDF: the text of each page with pdf-extract (on lopdf), and where each page starts, so
//! chunks carry page numbers a reader can follow.
//!
//! Untrusted PDFs go wrong in three ways a caller can fix, each with its own reason: encrypted
//! (we have no password), scanned or image-only (no text to extract: needs OCR first), corrupt.
//! pdf-extract panics on many odd files; its panics are caught per page. Three things a panic
//! hook cannot catch are checked before extraction: a page tree whose `Parent` links loop and
//! form XObjects that draw themselves (both recurse until the stack overflows, which aborts the
//! process), and compressed streams that inflate to gigabytes (memory).
//!
//! The inflated size is measured before lopdf loads the file for real, because lopdf inflates
//! every object stream (`/Type /ObjStm`, where PDF 1.5 packs small objects) while it loads. A
//! first load keeps object streams packed (a load filter renames their type), then every
//! stream's whole filter chain (Flate, LZW, ASCII85: the ones lopdf decodes) is decoded with a
//! cap, counting the total, and only a document within `MILLRACE_MAX_UNZIPPED_BYTES` is loaded
//! again and read. Not covered: the streams of an encrypted PDF (lopdf decrypts and unpacks
//! them in one step) and a cross-reference stream (inflated while the file's index is read);
//! for those the parse child's memory limit is the bound.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pdf_extract::content::Content;
use pdf_extract::{Dictionary, Document, LoadOptions, Object, ObjectId, PlainTextOutput, Stream, output_doc_page};

use super::{ParseError, ParseLimits, ParsedDocument, panic_message};

/// Deepest page tree (`Parent` links) and deepest nesting of form XObjects accepted.
const MAX_NESTING: usize = 64;

pub(super) fn parse(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument, ParseError> {
    check_inflated_size(bytes, limits.max_unzipped_bytes)?;
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
    guarded(|| check_structure(&doc, &pages))
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

fn check_structure(doc: &Document, pages: &std::collections::BTreeMap<u32, ObjectId>) -> Result<(), ParseError> {
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

/// Type given to object streams in the measuring load, so that lopdf does not unpack them.
const PACKED_OBJECT_STREAM: &[u8] = b"MillraceMeasuredObjStm";

/// Decodes every stream of the file into nothing, counting, and refuses the document when the
/// total passes `limit`. Loads the file with object streams kept packed; a file lopdf cannot
/// load is left for the real load to describe.
fn check_inflated_size(bytes: &[u8], limit: u64) -> Result<(), ParseError> {
    let options = LoadOptions { filter: Some(keep_object_streams_packed), ..LoadOptions::default() };
    let Ok(Ok(doc)) = catch_unwind(|| Document::load_mem_with_options(bytes, options)) else { return Ok(()) };
    let mut total: u64 = 0;
    for object in doc.objects.values() {
        let Object::Stream(stream) = object else { continue };
        total = total.saturating_add(decoded_size(stream, limit.saturating_sub(total)));
        if total > limit {
            tracing::debug!(limit, "PDF streams inflate past the cap");
            return Err(ParseError::DecompressionBomb { format: "PDF", limit });
        }
    }
    Ok(())
}

/// lopdf's load filter: it runs on each object before lopdf would unpack an object stream.
/// lopdf goes on with the object as changed in place (the returned copy is only used for
/// objects unpacked from object streams, of which there are none here).
fn keep_object_streams_packed(id: ObjectId, object: &mut Object) -> Option<(ObjectId, Object)> {
    if let Object::Stream(stream) = object
        && stream.dict.has_type(b"ObjStm")
    {
        stream.dict.set("Type", Object::Name(PACKED_OBJECT_STREAM.to_vec()));
    }
    Some((id, object.clone()))
}

/// How many bytes lopdf's `decompressed_content` would produce for `stream`, counting every
/// stage of its filter chain (lopdf holds each whole), stopping once past `budget`.
fn decoded_size(stream: &Stream, budget: u64) -> u64 {
    // lopdf reads only a name or an array of names; anything else is left uncompressed.
    let Ok(filters) = stream.filters() else { return 0 };
    let early_change = stream
        .dict
        .get(b"DecodeParms")
        .and_then(Object::as_dict)
        .and_then(|params| params.get(b"EarlyChange"))
        .and_then(Object::as_i64)
        .map_or(true, |value| value != 0);
    let mut data: Cow<'_, [u8]> = Cow::Borrowed(&stream.content);
    let mut counted: u64 = 0;
    for filter in filters {
        let cap = budget.saturating_sub(counted);
        let decoded = match filter {
            b"FlateDecode" => inflate(&data, cap),
            b"LZWDecode" => lzw(&data, early_change, cap),
            // Never longer than its input (five characters make four bytes, `z` excepted: five
            // times, so decoding it whole is bounded by the document's size).
            b"ASCII85Decode" => ascii85(&data),
            // lopdf refuses other filters (DCT, JPX, ...: images it leaves encoded).
            _ => break,
        };
        counted = counted.saturating_add(decoded.len() as u64);
        if counted > budget {
            break;
        }
        data = Cow::Owned(decoded);
    }
    counted
}

/// Inflates at most `cap + 1` bytes as lopdf would: zlib, or raw deflate after the two header
/// bytes when zlib yields nothing. A stream that breaks counts what came out before the break.
fn inflate(input: &[u8], cap: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if input.is_empty() {
        return out;
    }
    let zlib = flate2::read::ZlibDecoder::new(input).take(cap.saturating_add(1)).read_to_end(&mut out);
    if zlib.is_err() && out.is_empty() && input.len() > 2 {
        let _ = flate2::read::DeflateDecoder::new(&input[2..]).take(cap.saturating_add(1)).read_to_end(&mut out);
    }
    out
}

/// Decodes PDF LZW (9 to 12 bit codes, most significant bit first) as lopdf does with weezl,
/// up to `cap + 1` bytes.
fn lzw(input: &[u8], early_change: bool, cap: u64) -> Vec<u8> {
    use weezl::{BitOrder, LzwStatus, decode::Decoder};
    let mut decoder =
        if early_change { Decoder::with_tiff_size_switch(BitOrder::Msb, 8) } else { Decoder::new(BitOrder::Msb, 8) };
    let cap = usize::try_from(cap.saturating_add(1)).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut buffer = vec![0; 64 << 10];
    let mut input = input;
    while out.len() < cap {
        let result = decoder.decode_bytes(input, &mut buffer);
        input = input.get(result.consumed_in..).unwrap_or_default();
        out.extend_from_slice(buffer.get(..result.consumed_out).unwrap_or_default());
        match result.status {
            Ok(LzwStatus::Ok) if result.consumed_in > 0 || result.consumed_out > 0 => {}
            _ => break,
        }
    }
    out.truncate(cap);
    out
}

/// ASCII85 through lopdf's own decoder.
fn ascii85(input: &[u8]) -> Vec<u8> {
    let mut dict = Dictionary::new();
    dict.set("Filter", Object::Name(b"ASCII85Decode".to_vec()));
    Stream::new(dict, input.to_vec()).decompressed_content().unwrap_or_default()
}

/// The `/Title` of the document information dictionary, if it says something.
fn info_title(doc: &Document) -> Option<String> {
    let info = doc.trailer.get_deref(b"Info", doc).and_then(Object::as_dict).ok()?;
    let title = info.get_deref(b"Title", doc).ok()?;
    let title = pdf_extract::decode_text_string(title).ok()?;
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}
