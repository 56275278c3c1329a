//! The hostile corpus (`tests/fixtures/hostile/` at the repository root, written by
//! `scripts/make_hostile_fixtures.py`): decompression bombs must be refused as bombs before
//! anything is inflated past the cap.

use millrace_chunking::{ParseError, ParseLimits, parse_document};
use millrace_pipeline::content::PDF;

use crate::helpers::{hostile, peak_memory_growth_during};

/// The cap the hostile tests run with: the bombs inflate to 64 MiB.
pub const UNZIPPED_CAP: u64 = 8 << 20;

#[test]
fn pdf_bombs_are_refused_before_anything_inflates_past_the_cap() {
    let limits = ParseLimits { max_unzipped_bytes: UNZIPPED_CAP, ..ParseLimits::default() };
    let mut wrong = Vec::new();
    for name in ["pdf_objstm_bomb.pdf", "pdf_ascii85_flate_bomb.pdf", "pdf_lzw_bomb.pdf"] {
        let bytes = hostile(name);
        let (result, growth) = peak_memory_growth_during(|| parse_document(PDF, &bytes, &limits));
        if result != Err(ParseError::DecompressionBomb { format: "PDF", limit: UNZIPPED_CAP }) {
            wrong.push(format!("{name}: {:?}", result.map(|doc| doc.text.len())));
        }
        // The check may hold up to the cap, never the bomb (64 MiB).
        if growth > 3 * UNZIPPED_CAP {
            wrong.push(format!("{name}: peak memory grew by {growth} bytes"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
