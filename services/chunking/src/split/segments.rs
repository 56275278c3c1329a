//! Keeps the splitter linear: `text-splitter` does work proportional to the rest of the text
//! for every chunk it emits when that rest has no boundary it looks for (it scans for the next
//! sentence, and walks every remaining line break), so one long text costs O(n²). Measured on
//! a debug build: 200 KB with no sentence end took 17 s, 4 MB would take hours; 200 KB of
//! short lines took 3× as long as 100 KB. A 1 GB line would never finish, and a timed-out
//! parse thread keeps running.
//!
//! So the text is handed over in segments: about 64 KiB, cut at the strongest boundary in the
//! segment's second half (a Markdown top-level block end, a blank line, a line break), where
//! the splitter would end a chunk anyway. A stretch of 32 KiB with no line break at all is
//! unusual (minified code, base64, a run of words without punctuation), and there segments are
//! 8 KiB, cut at a sentence end, a space, or any character. The cost: the last chunk of a
//! segment may be smaller than it could have been, and carries no overlap into the next.

use std::ops::Range;

use pulldown_cmark::{Event, Options, Parser};

/// Size of a segment in ordinary text.
pub(crate) const SEGMENT_BYTES: usize = 64 * 1024;
/// Size of a segment in a stretch without line breaks.
pub(crate) const RUN_SEGMENT_BYTES: usize = 8 * 1024;

/// Byte ranges that tile `text`, in order.
pub(crate) fn segments(text: &str, markdown: bool) -> Vec<Range<usize>> {
    if text.len() <= SEGMENT_BYTES {
        #[allow(clippy::single_range_in_vec_init, reason = "one segment: the whole text")]
        return vec![0..text.len()];
    }
    let block_ends = if markdown { top_level_block_ends(text) } else { Vec::new() };
    let mut segments = Vec::with_capacity(text.len() / (SEGMENT_BYTES / 2) + 1);
    let mut start = 0;
    while text.len() - start > SEGMENT_BYTES {
        let cut = best_cut(text, start, SEGMENT_BYTES, &block_ends)
            .filter(|(_, strength)| *strength >= Strength::Line)
            .or_else(|| best_cut(text, start, RUN_SEGMENT_BYTES, &block_ends))
            .map_or_else(|| floor_boundary(text, start + RUN_SEGMENT_BYTES), |(cut, _)| cut);
        segments.push(start..cut);
        start = cut;
    }
    segments.push(start..text.len());
    segments
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Strength {
    Space,
    Sentence,
    Line,
    Paragraph,
    Block,
}

/// The strongest cut in the second half of a segment of `size` bytes from `start`.
fn best_cut(text: &str, start: usize, size: usize, block_ends: &[usize]) -> Option<(usize, Strength)> {
    let lo = floor_boundary(text, start + size / 2);
    let hi = floor_boundary(text, start + size);
    if lo <= start || hi <= lo {
        return None;
    }
    let last_block_end = block_ends.partition_point(|&end| end <= hi).checked_sub(1).map(|i| block_ends[i]);
    if let Some(end) = last_block_end.filter(|&end| end > lo) {
        return Some((end, Strength::Block));
    }
    let window = &text[lo..hi];
    if let Some(i) = window.rfind("\n\n") {
        return Some((lo + i + 2, Strength::Paragraph));
    }
    if let Some(i) = window.rfind('\n') {
        return Some((lo + i + 1, Strength::Line));
    }
    if let Some(i) = window.rfind(['.', '!', '?', '。', '！', '？']) {
        let after = lo + i + window[i..].chars().next().map_or(1, char::len_utf8);
        return Some((after, Strength::Sentence));
    }
    window.rfind(char::is_whitespace).map(|i| {
        let after = lo + i + window[i..].chars().next().map_or(1, char::len_utf8);
        (after, Strength::Space)
    })
}

/// The largest char boundary at or below `at` (and at most the text's length).
fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Where each top-level Markdown block ends (paragraphs, headings, lists, code blocks…): cuts
/// there never split a code block or a list.
fn top_level_block_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut depth = 0usize;
    for (event, range) in Parser::new_ext(text, Options::all()).into_offset_iter() {
        match event {
            Event::Start(_) => depth += 1,
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    ends.push(range.end);
                }
            }
            _ if depth == 0 => ends.push(range.end),
            _ => {}
        }
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_tiling(text: &str, segments: &[Range<usize>]) {
        assert_eq!(segments.first().map(|s| s.start), Some(0));
        assert_eq!(segments.last().map(|s| s.end), Some(text.len()));
        for pair in segments.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        for segment in segments {
            assert!(text.get(segment.clone()).is_some(), "{segment:?} is not on char boundaries");
            assert!(segment.len() <= SEGMENT_BYTES && !segment.is_empty(), "{segment:?}");
        }
    }

    #[test]
    fn short_texts_are_one_segment() {
        assert_eq!(segments("hello", false), std::iter::once(0..5).collect::<Vec<_>>());
    }

    #[test]
    fn paragraphs_are_cut_at_blank_lines() {
        let text = "A paragraph of words. ".repeat(20).to_owned() + "\n\n";
        let text = text.repeat(400);
        let segments = segments(&text, false);
        check_tiling(&text, &segments);
        assert!(segments.len() > 1);
        for segment in &segments[..segments.len() - 1] {
            assert!(text[..segment.end].ends_with("\n\n"));
            assert!(segment.len() > SEGMENT_BYTES / 2);
        }
    }

    #[test]
    fn markdown_code_blocks_are_not_cut() {
        let block = format!("```\n{}```\n\n", "code line\n\nmore code\n".repeat(200));
        let text = block.repeat(40);
        let segments = segments(&text, true);
        check_tiling(&text, &segments);
        for segment in &segments[..segments.len() - 1] {
            let (before, after) = text.split_at(segment.end);
            assert!(before.trim_end().ends_with("```"), "cut inside a code block at {}", segment.end);
            assert!(after.trim_start().starts_with("```\ncode line"), "cut inside a code block at {}", segment.end);
        }
    }

    #[test]
    fn runs_without_line_breaks_get_small_segments() {
        let text = "é".repeat(100_000);
        let segments = segments(&text, false);
        check_tiling(&text, &segments);
        assert!(segments[..segments.len() - 1].iter().all(|s| s.len() <= RUN_SEGMENT_BYTES));
        let words = "word ".repeat(40_000);
        let segments = super::segments(&words, true);
        check_tiling(&words, &segments);
        assert!(segments[..segments.len() - 1].iter().all(|s| words[..s.end].ends_with(' ')));
    }
}
