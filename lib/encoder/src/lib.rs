//! Text to vectors on the CPU, with no upstream.
//!
//! [`SentenceEncoder`] loads a BERT-family sentence-transformers model from a folder and encodes
//! a batch of texts to unit vectors in one forward pass: `bert` holds the encoder (packed texts,
//! no padding), `attention` and `kernels` its SIMD steps. [`hashing`] holds the deterministic,
//! model-free embedders. Batching concurrent callers into one pass is the embeddings service's
//! business, not this crate's.

pub mod hashing;

#[cfg(feature = "model")]
mod attention;
#[cfg(feature = "model")]
mod bert;
#[cfg(feature = "model")]
mod kernels;
#[cfg(feature = "model")]
mod model;

#[cfg(feature = "model")]
pub use model::{MODEL_DIR_VARIABLE, ModelError, SentenceEncoder};
