#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The chunking crate's parsers and splitter on real files, generated documents and random
//! bytes, and token sizing with the real embedding tokenizer. No Redis needed.

mod child;
mod fuzz;
mod helpers;
mod hostile;
mod parsers;
mod properties;
mod tokens;
