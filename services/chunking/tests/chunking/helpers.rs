//! Fixtures and the real tokenizer, found the way the service finds them.

use std::path::PathBuf;
use std::sync::OnceLock;

use millrace_chunking::{ParseLimits, ParsedDocument, SizeUnit, Sizer, default_model_dir, parse_document};

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("cannot read fixture {}: {err}", path.display()))
}

/// A file of the hostile corpus, `tests/fixtures/hostile/` at the repository root.
pub fn hostile(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hostile").join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("cannot read hostile fixture {}: {err}", path.display()))
}

/// Runs `f` and returns how much this process's peak resident memory grew meanwhile, in bytes.
/// Meaningful under nextest, which runs each test in a process of its own.
pub fn peak_memory_growth_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let peak = || {
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .map(|usage| u64::try_from(usage.max_rss()).unwrap_or(0) * 1024)
            .unwrap()
    };
    let before = peak();
    let result = f();
    (result, peak() - before)
}

pub fn parse(content_type: &str, name: &str) -> ParsedDocument {
    parse_document(content_type, &fixture(name), &ParseLimits::default())
        .unwrap_or_else(|err| panic!("{name} did not parse: {err}"))
}

pub fn parse_err(content_type: &str, bytes: &[u8]) -> String {
    match parse_document(content_type, bytes, &ParseLimits::default()) {
        Ok(doc) => panic!("expected an error, parsed {} bytes of text: {:?}", doc.text.len(), doc.text),
        Err(err) => err.to_string(),
    }
}

/// The embedding model's tokenizer, loaded once. Fails loudly when the model is missing:
/// these tests are about that exact tokenizer, so skipping would hide a broken setup.
pub fn model_sizer() -> &'static Sizer {
    static SIZER: OnceLock<Sizer> = OnceLock::new();
    SIZER.get_or_init(|| {
        let dir = std::env::var_os("MILLRACE_EMBEDDING_MODEL_DIR")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(default_model_dir);
        Sizer::load(SizeUnit::Model, &dir).unwrap_or_else(|err| {
            panic!(
                "the token sizing tests need the embedding model in {}: {err}. Run `make setup`, \
                 or set MILLRACE_EMBEDDING_MODEL_DIR to a folder holding all-MiniLM-L6-v2's tokenizer.json",
                dir.display()
            )
        })
    })
}
