//! Properties of the splitter on generated documents: the chunks cover the text in order,
//! overlap by no more than asked, never exceed the size, and carry the right heading path.

use millrace_chunking::{ChunkSizes, ParsedDocument, Sizer, TextChunk, split_document};
use proptest::prelude::*;

fn document(text: &str, markdown: bool) -> ParsedDocument {
    ParsedDocument { text: text.to_owned(), markdown, page_starts: Vec::new(), title: None }
}

/// Checks what every split must satisfy, for any sizer.
pub fn check_cover(text: &str, chunks: &[TextChunk], sizer: &Sizer, sizes: ChunkSizes) -> Result<(), TestCaseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut covered_to = 0; // byte offset up to which the text is covered or whitespace
    let mut previous: Option<&TextChunk> = None;
    for chunk in chunks {
        // The offsets locate the chunk's own text, in bytes and in characters.
        prop_assert_eq!(&text[chunk.byte_start..chunk.byte_end], chunk.text.as_str());
        let located: String = chars[chunk.char_start..chunk.char_end].iter().collect();
        prop_assert_eq!(&located, &chunk.text);
        prop_assert!(!chunk.text.trim().is_empty(), "empty chunk {:?}", chunk);
        // Never above the size, in the configured unit.
        let size = sizer.measure(&chunk.text).unwrap();
        prop_assert!(size <= sizes.max, "chunk of {} > {}: {:?}", size, sizes.max, chunk.text);
        if let Some(previous) = previous {
            // In order, each chunk moving forward.
            prop_assert!(chunk.byte_start > previous.byte_start && chunk.byte_end > previous.byte_end);
            if chunk.byte_start < previous.byte_end {
                // Overlapping: by at most the configured overlap.
                let shared = text[chunk.byte_start..previous.byte_end].trim();
                let shared_size = sizer.measure(shared).unwrap();
                prop_assert!(
                    shared_size <= sizes.overlap,
                    "overlap of {} > {}: {:?}",
                    shared_size,
                    sizes.overlap,
                    shared
                );
            }
        }
        // Nothing but whitespace is skipped between chunks.
        if chunk.byte_start > covered_to {
            let gap = &text[covered_to..chunk.byte_start];
            prop_assert!(gap.trim().is_empty(), "text skipped: {:?}", gap);
        }
        covered_to = covered_to.max(chunk.byte_end);
        previous = Some(chunk);
    }
    prop_assert!(text[covered_to..].trim().is_empty(), "tail skipped: {:?}", &text[covered_to..]);
    Ok(())
}

/// Words, some long, some multi-byte, joined by spaces, sentence ends and newlines.
fn prose() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        4 => "[a-z]{1,8}",
        1 => "[A-Z][a-z]{2,12}",
        1 => "[éüß日本語ñ]{1,4}",
        1 => "[a-z0-9]{15,40}",
    ];
    let separator = prop_oneof![6 => Just(" "), 1 => Just(". "), 1 => Just("\n"), 1 => Just("\n\n"), 1 => Just(",  ")];
    prop::collection::vec((word, separator), 0..300)
        .prop_map(|parts| parts.into_iter().map(|(word, sep)| format!("{word}{sep}")).collect::<String>())
}

fn sizes() -> impl Strategy<Value = ChunkSizes> {
    (10usize..200).prop_flat_map(|max| {
        (1..=max).prop_flat_map(move |min| (0..min).prop_map(move |overlap| ChunkSizes { min, max, overlap }))
    })
}

/// A Markdown document of sections with random levels; returns the text and, for each
/// heading, its byte offset and the path down to it.
fn markdown_document() -> impl Strategy<Value = (String, Vec<(usize, Vec<String>)>)> {
    let section = (1usize..=4, "[A-Z][a-z]{2,8}( [a-z]{2,8}){0,2}", prop::collection::vec("[a-z]{1,9}", 0..60));
    prop::collection::vec(section, 1..12).prop_map(|sections| {
        let mut text = String::from("Preface words before any heading.\n\n");
        let mut stack: Vec<(usize, String)> = Vec::new();
        let mut headings = Vec::new();
        for (level, title, words) in sections {
            while stack.last().is_some_and(|(open, _)| *open >= level) {
                stack.pop();
            }
            stack.push((level, title.clone()));
            headings.push((text.len(), stack.iter().map(|(_, t)| t.clone()).collect()));
            text.push_str(&format!("{} {title}\n\n", "#".repeat(level)));
            if !words.is_empty() {
                text.push_str(&words.join(" "));
                text.push_str("\n\n");
            }
        }
        (text, headings)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn plain_text_chunks_cover_the_text_in_order(text in prose(), sizes in sizes()) {
        let sizer = Sizer::chars();
        let chunks = split_document(&document(&text, false), &sizer, sizes).unwrap();
        check_cover(&text, &chunks, &sizer, sizes)?;
    }

    #[test]
    fn markdown_chunks_cover_the_text_in_order(text in prose(), (md, _) in markdown_document(), sizes in sizes()) {
        let text = format!("{md}\n\n- item one\n- {text}\n\n```\ncode {text}\n```\n");
        let sizer = Sizer::chars();
        let chunks = split_document(&document(&text, true), &sizer, sizes).unwrap();
        check_cover(&text, &chunks, &sizer, sizes)?;
    }

    #[test]
    fn heading_paths_match_the_generated_outline((text, headings) in markdown_document(), max in 20usize..160) {
        let sizes = ChunkSizes { min: max / 2 + 1, max, overlap: 0 };
        let chunks = split_document(&document(&text, true), &Sizer::chars(), sizes).unwrap();
        prop_assert!(!chunks.is_empty());
        for chunk in &chunks {
            let expected: &[String] = headings
                .iter()
                .rev()
                .find(|(offset, _)| *offset <= chunk.byte_start)
                .map_or(&[], |(_, path)| path.as_slice());
            prop_assert_eq!(&chunk.heading_path, expected, "chunk {:?}", chunk.text);
        }
    }
}
