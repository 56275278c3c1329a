//! Cuts text into chunks with the `text-splitter` crate: sizes in characters, with overlap,
//! along the largest semantic unit that fits (paragraphs, sentences, words), and along
//! Markdown structure for Markdown. (Token-based sizes come with the content issue.)

use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};

#[derive(Debug, Clone)]
pub struct SplitConfig {
    /// Largest chunk, in characters.
    pub chunk_size: usize,
    /// Characters shared by consecutive chunks.
    pub chunk_overlap: usize,
}

/// One chunk and where it sits in the text, in character offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    pub text: String,
    pub char_start: usize,
    pub char_end: usize,
}

pub fn split_text(text: &str, markdown: bool, config: &SplitConfig) -> Result<Vec<TextChunk>, String> {
    let chunk_config = ChunkConfig::new(config.chunk_size)
        .with_overlap(config.chunk_overlap)
        .map_err(|err| format!("invalid chunk configuration: {err}"))?;
    let pieces: Vec<(usize, &str)> = if markdown {
        MarkdownSplitter::new(chunk_config).chunk_indices(text).collect()
    } else {
        TextSplitter::new(chunk_config).chunk_indices(text).collect()
    };
    // Byte offsets → character offsets, walking the text once (chunks come in order).
    let mut chunks = Vec::with_capacity(pieces.len());
    let mut byte_pos = 0;
    let mut char_pos = 0;
    for (byte_start, piece) in pieces {
        if byte_start >= byte_pos {
            char_pos += text[byte_pos..byte_start].chars().count();
        } else {
            char_pos -= text[byte_start..byte_pos].chars().count();
        }
        byte_pos = byte_start;
        let char_len = piece.chars().count();
        chunks.push(TextChunk { text: piece.to_owned(), char_start: char_pos, char_end: char_pos + char_len });
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(size: usize, overlap: usize) -> SplitConfig {
        SplitConfig { chunk_size: size, chunk_overlap: overlap }
    }

    #[test]
    fn long_text_is_cut_into_bounded_chunks() {
        let text = "One sentence here. ".repeat(200);
        let chunks = split_text(&text, false, &config(200, 20)).unwrap();
        assert!(chunks.len() > 10);
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 200));
    }

    #[test]
    fn markdown_splits_at_headings() {
        let text = format!("# A\n\n{}\n\n# B\n\n{}", "alpha ".repeat(30), "beta ".repeat(30));
        let chunks = split_text(&text, true, &config(200, 0)).unwrap();
        assert!(chunks.iter().any(|c| c.text.starts_with("# B")), "{chunks:?}");
    }

    proptest! {
        /// Offsets always point at the chunk's own text, whatever the input (multi-byte included).
        #[test]
        fn offsets_locate_each_chunk(text in "[a-zé日 .\n]{0,600}", size in 20usize..120, overlap in 0usize..10) {
            let chars: Vec<char> = text.chars().collect();
            for chunk in split_text(&text, false, &config(size, overlap)).unwrap() {
                let located: String = chars[chunk.char_start..chunk.char_end].iter().collect();
                prop_assert_eq!(located, chunk.text.clone());
                prop_assert!(chunk.text.chars().count() <= size);
            }
        }
    }
}
