//! How big a chunk is: in tokens of the embedding model's own tokenizer (so no chunk is
//! silently truncated by the model), in OpenAI's `cl100k_base` tokens, or in characters.
//!
//! The tokenizer is loaded once at start (a missing model stops the service there, not at the
//! first document) and shared behind an `Arc` by every parse.
//!
//! [`CappedSizer`] is the sizer handed to `text-splitter`. Besides counting tokens it caps a
//! chunk at [`MAX_CHARS_PER_TOKEN`] characters per token: a WordPiece tokenizer turns any
//! "word" longer than 100 characters into one `[UNK]`, so without the cap a multi-megabyte line
//! with no spaces (base64, minified code) would be one "small" chunk. A candidate already too
//! long by its length is answered without tokenizing it.
//!
//! The splitter sizes many candidates per chunk (about eight times the text in all), and a
//! Hugging Face tokenizer manages about 1 MB/s here, so tokenizing every candidate made
//! chunking run at 0.2 MB/s. When the tokenizer is word-local (BERT's normalizer and
//! pre-tokenizer: no token spans whitespace, and what happens to a word does not depend on its
//! neighbours), a text's token count is exactly the sum of its whitespace-separated words'
//! counts, so each distinct word is tokenized once per document and cached. Other tokenizers
//! (byte-level BPE, SentencePiece, where a leading space changes the tokens) are run whole.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use text_splitter::TryChunkSizer;
use tiktoken_rs::CoreBPE;
use tokenizers::Tokenizer;

use super::SplitError;

/// The most characters a chunk may have per unit of size when sizes are in tokens. English
/// prose runs at about 4–5 characters per token, long URLs and identifiers at 6–8.
pub const MAX_CHARS_PER_TOKEN: usize = 10;

/// The unit chunk sizes are given in (`MILLRACE_CHUNK_TOKENIZER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeUnit {
    /// Tokens of the embedding model's tokenizer (`tokenizer.json` in the model folder).
    Model,
    /// Tokens of tiktoken's `cl100k_base`.
    Cl100kBase,
    /// Unicode scalar values.
    Chars,
}

impl SizeUnit {
    /// The largest chunk by default. For the model, under all-MiniLM-L6-v2's 256-token window
    /// less its two special tokens, with a little room; `cl100k_base` counts differently from
    /// the model, so it keeps more room; 1000 characters are about 250 English tokens.
    pub fn default_size(self) -> usize {
        match self {
            Self::Model => 250,
            Self::Cl100kBase => 200,
            Self::Chars => 1000,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Cl100kBase => "cl100k_base",
            Self::Chars => "chars",
        }
    }
}

impl FromStr for SizeUnit {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "model" => Ok(Self::Model),
            "cl100k_base" => Ok(Self::Cl100kBase),
            "chars" | "characters" => Ok(Self::Chars),
            other => Err(format!("{other:?} is not one of model, cl100k_base, chars")),
        }
    }
}

impl fmt::Display for SizeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a sizer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SizerError {
    #[error("cannot load the embedding model's tokenizer {}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    #[error("cannot load the cl100k_base tokenizer: {0}")]
    Tiktoken(String),
}

/// Measures text in one [`SizeUnit`]; cheap to clone (the tokenizer is shared).
#[derive(Clone)]
pub struct Sizer {
    measure: Measure,
    model_limit: Option<usize>,
}

#[derive(Clone)]
enum Measure {
    /// The model's tokenizer, and whether it is word-local (see the module docs).
    Model(Arc<Tokenizer>, bool),
    Cl100k(Arc<CoreBPE>),
    Chars,
}

impl fmt::Debug for Sizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sizer").field("unit", &self.unit()).field("model_limit", &self.model_limit).finish()
    }
}

impl Sizer {
    /// Loads the sizer for `unit`; `model_dir` is only read for [`SizeUnit::Model`].
    pub fn load(unit: SizeUnit, model_dir: &Path) -> Result<Self, SizerError> {
        match unit {
            SizeUnit::Model => Self::load_model(model_dir),
            SizeUnit::Cl100kBase => {
                let bpe = tiktoken_rs::cl100k_base().map_err(|err| SizerError::Tiktoken(err.to_string()))?;
                Ok(Self { measure: Measure::Cl100k(Arc::new(bpe)), model_limit: None })
            }
            SizeUnit::Chars => Ok(Self::chars()),
        }
    }

    pub fn chars() -> Self {
        Self { measure: Measure::Chars, model_limit: None }
    }

    /// The model's tokenizer from `<model_dir>/tokenizer.json`, with the tokens the model reads
    /// per chunk taken from `sentence_bert_config.json` when the folder has one.
    fn load_model(model_dir: &Path) -> Result<Self, SizerError> {
        let path = model_dir.join("tokenizer.json");
        let fail = |message: String| SizerError::Model { path: path.clone(), message };
        if !path.is_file() {
            return Err(fail("the file does not exist".into()));
        }
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|err| fail(err.to_string()))?;
        // The file carries the model's inference settings (all-MiniLM-L6-v2's truncates at
        // 128 and pads to 128): either would make every measured size wrong.
        tokenizer.with_truncation(None).map_err(|err| fail(err.to_string()))?;
        tokenizer.with_padding(None);
        let special = tokenizer.get_post_processor().map(|p| tokenizers::PostProcessor::added_tokens(p, false));
        let model_limit = read_max_seq_length(model_dir).map(|max| max.saturating_sub(special.unwrap_or(0)));
        let word_local = is_word_local(&tokenizer);
        Ok(Self { measure: Measure::Model(Arc::new(tokenizer), word_local), model_limit })
    }

    pub fn unit(&self) -> SizeUnit {
        match self.measure {
            Measure::Model(..) => SizeUnit::Model,
            Measure::Cl100k(_) => SizeUnit::Cl100kBase,
            Measure::Chars => SizeUnit::Chars,
        }
    }

    /// The most tokens the embedding model reads per chunk (its window less the special tokens
    /// it adds), when sizes are in its tokens and its folder says; larger chunks would be cut.
    pub fn model_limit(&self) -> Option<usize> {
        self.model_limit
    }

    /// Whether token counts are summed from cached word counts (a word-local tokenizer).
    pub fn counts_by_word(&self) -> bool {
        matches!(self.measure, Measure::Model(_, true))
    }

    /// The exact size of `text` in this unit, without the character cap.
    pub fn measure(&self, text: &str) -> Result<usize, SplitError> {
        match &self.measure {
            Measure::Model(tokenizer, _) => count_tokens(tokenizer, text),
            Measure::Cl100k(bpe) => Ok(bpe.encode_ordinary(text).len()),
            Measure::Chars => Ok(text.chars().count()),
        }
    }

    /// The most characters a chunk of `max` units may have.
    pub fn max_chars(&self, max: usize) -> usize {
        match self.measure {
            Measure::Chars => max,
            _ => max.saturating_mul(MAX_CHARS_PER_TOKEN),
        }
    }

    /// The sizer `text-splitter` calls for chunks of at most `max` units, with the character
    /// cap and, for a word-local tokenizer, a cache of word counts (one per document).
    pub fn chunk_sizer(&self, max: usize) -> CappedSizer<'_> {
        CappedSizer { sizer: self, max, words: RefCell::new(HashMap::new()) }
    }
}

fn count_tokens(tokenizer: &Tokenizer, text: &str) -> Result<usize, SplitError> {
    tokenizer
        .encode_fast(text, false)
        .map(|encoding| encoding.len())
        .map_err(|err| SplitError::Tokenizer(err.to_string()))
}

/// Whether no token can span whitespace and a word's tokens do not depend on its neighbours:
/// BERT-style normalization (character by character) and whitespace-splitting pre-tokenizers.
fn is_word_local(tokenizer: &Tokenizer) -> bool {
    use tokenizers::{NormalizerWrapper as N, PreTokenizerWrapper as P};
    let normalizer = matches!(
        tokenizer.get_normalizer(),
        None | Some(N::BertNormalizer(_) | N::Lowercase(_) | N::NFD(_) | N::NFC(_) | N::StripAccents(_))
    );
    let pre_tokenizer = matches!(
        tokenizer.get_pre_tokenizer(),
        Some(P::BertPreTokenizer(_) | P::Whitespace(_) | P::WhitespaceSplit(_))
    );
    normalizer && pre_tokenizer
}

fn read_max_seq_length(model_dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(model_dir.join("sentence_bert_config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("max_seq_length")?.as_u64().map(|n| n as usize)
}

/// Whitespace that ends a word for a word-local tokenizer. BERT's normalizer deletes control
/// characters before splitting, so a vertical tab, form feed or U+0085 between two letters
/// joins them into one word; splitting there would count two. Splitting on fewer characters
/// than the tokenizer does is always exact, so these are simply not separators.
fn is_word_separator(c: char) -> bool {
    c.is_whitespace() && (!c.is_control() || matches!(c, '\t' | '\n' | '\r'))
}

/// Words longer than this are tokenized each time rather than cached: they are rare, and
/// caching every prefix of a long run would hold a lot of memory.
const MAX_CACHED_WORD_BYTES: usize = 64;

/// The sizer `text-splitter` calls, for chunks of at most `max` units (see the module docs).
pub struct CappedSizer<'a> {
    sizer: &'a Sizer,
    max: usize,
    words: RefCell<HashMap<String, usize>>,
}

impl CappedSizer<'_> {
    fn tokens(&self, text: &str) -> Result<usize, SplitError> {
        let Measure::Model(tokenizer, true) = &self.sizer.measure else {
            return self.sizer.measure(text);
        };
        let mut words = self.words.borrow_mut();
        let mut total = 0;
        for word in text.split(is_word_separator).filter(|word| !word.is_empty()) {
            total += match words.get(word) {
                Some(count) => *count,
                None => {
                    let count = count_tokens(tokenizer, word)?;
                    if word.len() <= MAX_CACHED_WORD_BYTES {
                        words.insert(word.to_owned(), count);
                    }
                    count
                }
            };
        }
        Ok(total)
    }
}

impl TryChunkSizer for CappedSizer<'_> {
    type Error = SplitError;

    fn try_size(&self, chunk: &str) -> Result<usize, SplitError> {
        let per_unit = self.sizer.max_chars(1);
        // A character is at most 4 bytes, so this is a lower bound of the capped size that
        // costs nothing to compute; when it is already too big, counting cannot help.
        let floor = chunk.len().div_ceil(4).div_ceil(per_unit);
        if floor > self.max {
            return Ok(floor);
        }
        // Counting characters is much cheaper than tokenizing: settle "too long" with it.
        let by_chars = chunk.chars().count().div_ceil(per_unit);
        if by_chars > self.max || matches!(self.sizer.measure, Measure::Chars) {
            return Ok(by_chars);
        }
        Ok(self.tokens(chunk)?.max(by_chars))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_from_their_names() {
        assert_eq!("model".parse::<SizeUnit>(), Ok(SizeUnit::Model));
        assert_eq!("CL100K_BASE".parse::<SizeUnit>(), Ok(SizeUnit::Cl100kBase));
        assert_eq!("chars".parse::<SizeUnit>(), Ok(SizeUnit::Chars));
        assert!("words".parse::<SizeUnit>().is_err());
    }

    #[test]
    fn a_missing_tokenizer_names_the_file() {
        let err = Sizer::load(SizeUnit::Model, Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tokenizer.json"), "{err}");
    }

    #[test]
    fn cl100k_counts_tokens_not_characters() {
        let sizer = Sizer::load(SizeUnit::Cl100kBase, Path::new("/unused")).unwrap();
        assert_eq!(sizer.measure("hello world").unwrap(), 2);
    }

    #[test]
    fn long_unbroken_runs_are_capped_by_characters() {
        let sizer = Sizer::chars();
        let bounded = sizer.chunk_sizer(10);
        assert_eq!(bounded.try_size("abcdefghij").unwrap(), 10);
        // 400 bytes: at least 100 characters, answered without counting.
        assert!(bounded.try_size(&"x".repeat(400)).unwrap() > 10);
    }
}
