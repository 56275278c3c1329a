//! Cuts a parsed document into chunks with the `text-splitter` crate: sizes in the configured
//! unit (the embedding model's tokens by default, see [`sizer`]) as a range with overlap, along
//! the largest semantic unit that fits (Markdown structure when the document has it, else
//! paragraphs, sentences, words). Each chunk keeps where it came from: its character offsets in
//! the parsed text, the headings above it (one pulldown-cmark pass, see [`Outline`]) and the
//! pages it spans. Long texts go to the splitter in segments so that it stays linear (see
//! [`segments`]).

mod segments;
mod sizer;

use text_splitter::{ChunkCharIndex, ChunkConfig, MarkdownSplitter, TextSplitter};

pub use sizer::{CappedSizer, MAX_CHARS_PER_TOKEN, SizeUnit, Sizer, SizerError};

use crate::parse::ParsedDocument;
use crate::parse::outline::Outline;

/// Why a document could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The chunk sizes asked for (configuration or a job's options) do not fit together.
    #[error("invalid chunk options: {0}")]
    Options(String),
    #[error("the tokenizer failed on the text: {0}")]
    Tokenizer(String),
}

/// Chunk sizes in the sizer's unit: chunks are filled to at least `min` where the text's
/// structure allows and never beyond `max`; consecutive chunks share up to `overlap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    pub min: usize,
    pub max: usize,
    pub overlap: usize,
}

impl ChunkSizes {
    /// Three quarters of the largest size: enough room for the splitter to end a chunk at a
    /// paragraph or section rather than fill it with half a sentence.
    pub fn default_min(max: usize) -> usize {
        (max * 3 / 4).max(1)
    }

    /// A tenth of the largest size.
    pub fn default_overlap(max: usize) -> usize {
        max / 10
    }

    /// These sizes with a job's `options.chunk_size` / `options.chunk_overlap` applied. A new
    /// size scales the minimum and the default overlap with it; an overlap at least as large
    /// as the minimum raises the minimum (the splitter needs overlap < minimum), so any
    /// overlap below the size is accepted. `limit` is the most the embedding model reads.
    pub fn with_options(
        self,
        chunk_size: Option<u32>,
        chunk_overlap: Option<u32>,
        limit: Option<usize>,
    ) -> Result<Self, SplitError> {
        if chunk_size.is_none() && chunk_overlap.is_none() {
            return Ok(self);
        }
        let fail = |message: String| Err(SplitError::Options(message));
        let max = chunk_size.map_or(self.max, |size| size as usize);
        if max == 0 {
            return fail("options.chunk_size must be greater than zero".into());
        }
        if let Some(limit) = limit.filter(|limit| max > *limit) {
            return fail(format!(
                "options.chunk_size {max} is more than the embedding model reads ({limit} tokens per chunk)"
            ));
        }
        let scale = |value: usize| value.saturating_mul(max) / self.max.max(1);
        let (min, default_overlap) =
            if chunk_size.is_some() { (scale(self.min).max(1), scale(self.overlap)) } else { (self.min, self.overlap) };
        let overlap = chunk_overlap.map_or(default_overlap, |overlap| overlap as usize);
        if overlap >= max {
            return fail(format!("options.chunk_overlap {overlap} must be smaller than the chunk size {max}"));
        }
        Ok(Self { min: min.max(overlap + 1).min(max), max, overlap })
    }

    fn check(&self) -> Result<(), SplitError> {
        if self.min == 0 || self.min > self.max || self.overlap >= self.min {
            return Err(SplitError::Options(format!(
                "sizes must satisfy overlap < min <= max and min > 0, got min {}, max {}, overlap {}",
                self.min, self.max, self.overlap
            )));
        }
        Ok(())
    }
}

/// One chunk and where it sits in the parsed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    pub text: String,
    /// Character (Unicode scalar value) offsets into [`ParsedDocument::text`], end exclusive.
    pub char_start: usize,
    pub char_end: usize,
    /// Byte offsets into the same text, end exclusive.
    pub byte_start: usize,
    pub byte_end: usize,
    /// Headings above the chunk's start, outermost first (empty without Markdown structure).
    pub heading_path: Vec<String>,
    /// 1-based pages the chunk spans; 0 when the document has no pages.
    pub page_start: u32,
    pub page_end: u32,
}

/// Splits `doc` into chunks of `sizes`, measured by `sizer`, in text order.
pub fn split_document(doc: &ParsedDocument, sizer: &Sizer, sizes: ChunkSizes) -> Result<Vec<TextChunk>, SplitError> {
    sizes.check()?;
    let config = ChunkConfig::new(sizes.min..=sizes.max)
        .with_sizer(sizer.chunk_sizer(sizes.max))
        .with_overlap(sizes.overlap)
        .map_err(|err| SplitError::Options(err.to_string()))?;
    let text = doc.text.as_str();
    let splitter = Splitter::new(config, doc.markdown);
    // Segment by segment (see `segments`), offsets moved back into the whole text.
    let mut pieces = Vec::new();
    let mut segment_chars = 0;
    for segment in segments::segments(text, doc.markdown) {
        let part = &text[segment.clone()];
        for piece in splitter.chunks(part)? {
            pieces.push(ChunkCharIndex {
                chunk: piece.chunk,
                byte_offset: piece.byte_offset + segment.start,
                char_offset: piece.char_offset + segment_chars,
            });
        }
        segment_chars += part.chars().count();
    }
    let outline = if doc.markdown { Outline::of(text) } else { Outline::default() };
    Ok(pieces
        .into_iter()
        .map(|piece| {
            let byte_end = piece.byte_offset + piece.chunk.len();
            let (page_start, page_end) = pages(&doc.page_starts, piece.byte_offset, byte_end);
            TextChunk {
                text: piece.chunk.to_owned(),
                char_start: piece.char_offset,
                char_end: piece.char_offset + piece.chunk.chars().count(),
                byte_start: piece.byte_offset,
                byte_end,
                heading_path: outline.path_at(piece.byte_offset).to_vec(),
                page_start,
                page_end,
            }
        })
        .collect())
}

/// The splitter for the document's kind, built once and run on every segment.
enum Splitter<'a> {
    Markdown(MarkdownSplitter<CappedSizer<'a>>),
    Text(TextSplitter<CappedSizer<'a>>),
}

impl<'a> Splitter<'a> {
    fn new(config: ChunkConfig<CappedSizer<'a>>, markdown: bool) -> Self {
        if markdown { Self::Markdown(MarkdownSplitter::new(config)) } else { Self::Text(TextSplitter::new(config)) }
    }

    fn chunks<'t>(&self, text: &'t str) -> Result<Vec<ChunkCharIndex<'t>>, SplitError> {
        match self {
            Self::Markdown(splitter) => splitter.try_chunk_char_indices(text).collect(),
            Self::Text(splitter) => splitter.try_chunk_char_indices(text).collect(),
        }
    }
}

/// The 1-based first and last page of the byte range `start..end`, given where pages start.
fn pages(page_starts: &[usize], start: usize, end: usize) -> (u32, u32) {
    if page_starts.is_empty() {
        return (0, 0);
    }
    let first = page_starts.partition_point(|&page| page <= start).max(1);
    let last = page_starts.partition_point(|&page| page < end).max(first);
    (first as u32, last as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, markdown: bool) -> ParsedDocument {
        ParsedDocument { text: text.to_owned(), markdown, page_starts: Vec::new(), title: None }
    }

    fn sizes(max: usize, overlap: usize) -> ChunkSizes {
        ChunkSizes { min: max, max, overlap }
    }

    #[test]
    fn long_text_is_cut_into_bounded_chunks() {
        let text = "One sentence here. ".repeat(200);
        let chunks = split_document(&doc(&text, false), &Sizer::chars(), sizes(200, 20)).unwrap();
        assert!(chunks.len() > 10);
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 200));
    }

    #[test]
    fn markdown_splits_at_headings_and_records_the_path() {
        let text = format!("# A\n\n{}\n\n## B\n\n{}", "alpha ".repeat(30), "beta ".repeat(30));
        let chunks = split_document(&doc(&text, true), &Sizer::chars(), sizes(200, 0)).unwrap();
        let b = chunks.iter().find(|c| c.text.starts_with("## B")).unwrap();
        assert_eq!(b.heading_path, ["A", "B"]);
        assert_eq!(chunks[0].heading_path, ["A"]);
    }

    #[test]
    fn chunks_know_their_pages() {
        let page = |word: &str| format!("{} ", word.repeat(20));
        let text = format!("{}\n\n{}\n\n{}", page("one "), page("two "), page("three "));
        let second = text.find("two").unwrap();
        let third = text.find("three").unwrap();
        let document = ParsedDocument { page_starts: vec![0, second, third], ..doc(&text, false) };
        let chunks = split_document(&document, &Sizer::chars(), sizes(60, 0)).unwrap();
        let at = |word: &str| chunks.iter().find(|c| c.text.contains(word)).map(|c| (c.page_start, c.page_end));
        assert_eq!(at("one"), Some((1, 1)));
        assert_eq!(at("three"), Some((3, 3)));
        assert_eq!(pages(&[0, 10, 20], 5, 15), (1, 2));
        assert_eq!(pages(&[0, 10, 20], 10, 20), (2, 2));
        assert_eq!(pages(&[], 10, 20), (0, 0));
    }

    #[test]
    fn job_options_override_and_are_checked() {
        let base = ChunkSizes { min: 200, max: 250, overlap: 25 };
        assert_eq!(base.with_options(None, None, Some(254)), Ok(base));
        assert_eq!(base.with_options(Some(100), None, Some(254)), Ok(ChunkSizes { min: 80, max: 100, overlap: 10 }));
        assert_eq!(base.with_options(Some(100), Some(90), None), Ok(ChunkSizes { min: 91, max: 100, overlap: 90 }));
        assert_eq!(base.with_options(None, Some(0), None), Ok(ChunkSizes { min: 200, max: 250, overlap: 0 }));
        let reason = |result: Result<ChunkSizes, SplitError>| result.unwrap_err().to_string();
        assert!(reason(base.with_options(Some(100), Some(100), None)).contains("chunk_overlap 100"));
        assert!(reason(base.with_options(Some(0), None, None)).contains("greater than zero"));
        assert!(reason(base.with_options(Some(300), None, Some(254))).contains("254 tokens"));
    }

    #[test]
    fn a_long_line_without_spaces_is_cut_in_linear_time() {
        // 1 MB with no whitespace. Unsegmented, text-splitter rescans the rest of the text for
        // every chunk: about 9 minutes on a debug build. Segmented: a few seconds.
        let text = "x".repeat(1 << 20);
        let started = std::time::Instant::now();
        let chunks = split_document(&doc(&text, false), &Sizer::chars(), sizes(1000, 100)).unwrap();
        assert!(chunks.iter().all(|c| c.text.len() <= 1000));
        assert!(chunks.len() >= 1049);
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}", started.elapsed());
    }

    #[test]
    fn offsets_stay_right_across_segments() {
        let text = "Ünïcödé wörds hère. ".repeat(20_000);
        let chunks = split_document(&doc(&text, false), &Sizer::chars(), sizes(500, 50)).unwrap();
        let chars: Vec<char> = text.chars().collect();
        for chunk in &chunks {
            assert_eq!(&text[chunk.byte_start..chunk.byte_end], chunk.text);
            assert_eq!(chars[chunk.char_start..chunk.char_end].iter().collect::<String>(), chunk.text);
        }
        assert_eq!(chunks.last().map(|c| c.char_end), Some(chars.len() - 1));
    }
}
