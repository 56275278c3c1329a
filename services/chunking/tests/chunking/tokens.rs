//! Chunk sizes in the embedding model's own tokens, checked with the real all-MiniLM-L6-v2
//! tokenizer: the defaults keep every chunk, with the [CLS] and [SEP] the model adds, inside
//! its 256-token window. These tests fail (not skip) when the model is missing.

use std::time::{Duration, Instant};

use millrace_chunking::{ChunkSizes, Config, MAX_CHARS_PER_TOKEN, ParsedDocument, split_document};
use millrace_common::Settings;
use millrace_pipeline::content::{HTML, MARKDOWN};
use proptest::prelude::*;
use text_splitter::TryChunkSizer;

use crate::helpers::{model_sizer, parse};
use crate::properties::check_cover;

/// The model's window: what the embeddings stage can feed it, special tokens included.
const MODEL_WINDOW: usize = 256;

fn model_tokenizer() -> tokenizers::Tokenizer {
    let dir = std::env::var_os("MILLRACE_EMBEDDING_MODEL_DIR")
        .filter(|dir| !dir.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(millrace_chunking::default_model_dir);
    model_sizer(); // fails with the setup hint first if the model is missing
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    tokenizer.with_truncation(None).unwrap();
    tokenizer.with_padding(None);
    tokenizer
}

fn default_sizes() -> ChunkSizes {
    let dir = millrace_chunking::default_model_dir();
    let dir = std::env::var("MILLRACE_EMBEDDING_MODEL_DIR").unwrap_or_else(|_| dir.display().to_string());
    Config::from_settings(&Settings::from_pairs([("EMBEDDING_MODEL_DIR", dir)])).unwrap().sizes
}

#[test]
fn the_model_limit_is_its_window_less_the_special_tokens() {
    assert_eq!(model_sizer().model_limit(), Some(MODEL_WINDOW - 2));
    assert_eq!(default_sizes(), ChunkSizes { min: 187, max: 250, overlap: 25 });
}

#[test]
fn sizes_are_not_truncated_by_the_tokenizer_file() {
    // tokenizer.json truncates at 128 tokens; the sizer must see the whole text.
    let text = "An apple a day keeps the doctor away. ".repeat(100);
    assert_eq!(model_sizer().measure(&text).unwrap(), 900);
}

#[test]
fn default_chunks_fit_the_model_window_with_its_special_tokens() {
    let tokenizer = model_tokenizer();
    let sizes = default_sizes();
    let long_markdown = format!("{}\n\n", String::from_utf8(crate::helpers::fixture("guide.md")).unwrap()).repeat(8);
    let docs = [
        parse(MARKDOWN, "guide.md"),
        parse(HTML, "article.html"),
        ParsedDocument { text: long_markdown, markdown: true, page_starts: Vec::new(), title: None },
    ];
    for doc in &docs {
        let chunks = split_document(doc, model_sizer(), sizes).unwrap();
        check_cover(&doc.text, &chunks, model_sizer(), sizes).unwrap();
        for chunk in &chunks {
            let with_specials = tokenizer.encode(chunk.text.as_str(), true).unwrap().len();
            assert!(with_specials <= MODEL_WINDOW, "{with_specials} tokens: {:?}", chunk.text);
        }
    }
    // The long document is cut into several chunks that use the room they have.
    let chunks = split_document(&docs[2], model_sizer(), sizes).unwrap();
    assert!(chunks.len() > 8, "{} chunks", chunks.len());
    let biggest = chunks.iter().map(|c| model_sizer().measure(&c.text).unwrap()).max().unwrap();
    assert!(biggest > sizes.min, "largest chunk only {biggest} tokens");
}

#[test]
fn a_huge_line_without_spaces_is_cut_by_characters_quickly() {
    // WordPiece reads any word over 100 characters as one [UNK]: a 256 KB "word" is 1 token.
    // The character cap must still cut it, and in time linear in its length (a debug build
    // takes about 20 s; unsegmented, text-splitter would take many minutes).
    let text = "abcdefghij".repeat(25_600);
    let doc = ParsedDocument { text, markdown: false, page_starts: Vec::new(), title: None };
    let sizes = default_sizes();
    let started = Instant::now();
    let chunks = split_document(&doc, model_sizer(), sizes).unwrap();
    let elapsed = started.elapsed();
    assert!(chunks.iter().all(|c| c.text.chars().count() <= sizes.max * MAX_CHARS_PER_TOKEN));
    assert!(chunks.len() >= 256_000 / (sizes.max * MAX_CHARS_PER_TOKEN));
    assert!(elapsed < Duration::from_secs(90), "{elapsed:?} for 256 KB");
}

#[test]
fn control_characters_the_tokenizer_deletes_join_words_in_the_word_sums() {
    // BERT's normalizer deletes U+000B, U+000C and U+0085 before splitting on whitespace, so
    // "aaa\u{b}AA" is one word to the tokenizer although Rust calls U+000B whitespace.
    let sizer = model_sizer();
    for text in ["aaaaaaaaaaaa\u{b}AA", "form\u{c}feed", "next\u{85}line", "tab\tand\nnewline\r"] {
        let summed = sizer.chunk_sizer(usize::MAX / 2).try_size(text).unwrap();
        assert_eq!(summed, sizer.measure(text).unwrap(), "{text:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// The splitter's sizer adds up cached word counts; that must be exactly what the
    /// tokenizer says of the whole text, whatever the text.
    #[test]
    fn word_sums_equal_whole_text_token_counts(
        parts in prop::collection::vec(
            "([a-zA-Z]{1,12}|[0-9]{1,8}|[éÉüßñÅ]{1,4}|[日本語中文한국어]{1,4}|[.,;:!?()\\[\\]{}'\"«»—-]{1,3}|\\[MASK\\]|\\[CLS\\]|[\u{0}-\u{1f}\u{200b}\u{fffd}]|https://[a-z]{2,8}\\.org/[a-z?=&]{0,12}|[a-z]{95,110})([ \t\n\u{a0}\u{3000}]{0,2})",
            0..200,
        ),
    ) {
        let text = parts.concat();
        let sizer = model_sizer();
        prop_assert!(sizer.counts_by_word());
        let summed = sizer.chunk_sizer(usize::MAX / 2).try_size(&text).unwrap();
        let whole = sizer.measure(&text).unwrap().max(text.chars().count().div_ceil(MAX_CHARS_PER_TOKEN));
        prop_assert_eq!(summed, whole, "{:?}", text);
    }

    #[test]
    fn token_sized_chunks_cover_the_text_and_stay_under_the_size(
        parts in prop::collection::vec(
            "([a-z]{1,10}|[A-Z][a-z]{1,8}|[0-9]{1,6}|https://[a-z]{3,10}\\.org/[a-z/]{0,20}|[éü日本]{1,3}|[a-z]{101,140})([ ,.;]|\\. |\n|\n\n)",
            1..400,
        ),
        max in 20usize..120,
    ) {
        let text = parts.concat();
        let sizes = ChunkSizes { min: max * 3 / 4, max, overlap: max / 10 };
        let doc = ParsedDocument { text: text.clone(), markdown: false, page_starts: Vec::new(), title: None };
        let chunks = split_document(&doc, model_sizer(), sizes).unwrap();
        check_cover(&text, &chunks, model_sizer(), sizes)?;
        for chunk in &chunks {
            prop_assert!(chunk.text.chars().count() <= max * MAX_CHARS_PER_TOKEN);
        }
    }
}
