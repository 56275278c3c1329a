//! Deterministic text embeddings without a model, for tests, benchmarks and the fake upstream:
//! texts that share words get similar vectors, so search over them still ranks sensibly.
//!
//! Two schemes, kept apart because vectors stored by one build must stay comparable with
//! queries embedded by the next: [`HashingEmbedder`] (the embeddings service's `hashing`
//! provider, labelled `hashing-<dim>`) and [`word_vectors`] (what the fake upstream answers).
//! Both hash with functions written out here (FNV-1a, SHA-256 seeding SplitMix64) rather than
//! std's or `rand`'s, whose output may change between versions.

use sha2::{Digest, Sha256};

/// Feature hashing of words and adjacent word pairs into a fixed number of dimensions, with a
/// hashed sign to keep collisions unbiased, L2-normalised.
pub struct HashingEmbedder {
    dimensions: usize,
}

fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash ^= u64::from(b' ');
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for byte in part.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

impl HashingEmbedder {
    pub fn new(dimensions: usize) -> Self {
        Self { dimensions: dimensions.max(1) }
    }

    pub fn model(&self) -> String {
        format!("hashing-{}", self.dimensions)
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub fn embed(&self, text: &str) -> Vec<f32> {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        let mut vector = vec![0f32; self.dimensions];
        let mut add = |parts: &[&str], weight: f32| {
            let hash = fnv1a(parts);
            let index = (hash % self.dimensions as u64) as usize;
            let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
            vector[index] += sign * weight;
        };
        for word in &words {
            add(&[word], 1.0);
        }
        for pair in words.windows(2) {
            add(pair, 0.5);
        }
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|v| *v /= norm);
        }
        vector
    }
}

/// The fake upstream's embedding of `text`: the sum of a pseudo-random vector per lower-cased word (bag
/// of words, so shared words mean similar vectors) and one for the whole text (so that the same
/// words in another order still give another vector), L2-normalised.
///
/// The pseudo-random numbers come from SplitMix64 seeded with SHA-256, written out here rather
/// than taken from `rand`, whose generators may change their output between versions: vectors
/// stored by one build must stay comparable with queries embedded by the next.
pub fn word_vectors(text: &str, dim: usize) -> Vec<f32> {
    let mut sum = vec![0.0f64; dim];
    let mut count = 0usize;
    for word in words(text) {
        count += 1;
        add_random(&mut sum, hash64(&["word", &word.to_lowercase()]), 1.0);
    }
    add_random(&mut sum, hash64(&["text", text]), 0.5 * (count.max(1) as f64).sqrt());
    let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        sum.iter().map(|x| (x / norm) as f32).collect()
    } else {
        let mut unit = vec![0.0; dim];
        if let Some(first) = unit.first_mut() {
            *first = 1.0;
        }
        unit
    }
}

/// Adds `weight` times a vector of uniform values in [-1, 1) drawn from `seed`.
fn add_random(sum: &mut [f64], mut seed: u64, weight: f64) {
    for x in sum.iter_mut() {
        *x += weight * uniform(splitmix64(&mut seed));
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// Words of a text: runs of letters and digits.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty())
}

/// A stable 64-bit hash of some strings (SHA-256, so it never changes between builds).
pub fn hash64(parts: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn hashed_vectors_are_unit_length_and_deterministic() {
        let embedder = HashingEmbedder::new(384);
        let a = embedder.embed("Ownership is Rust's most unique feature");
        assert_eq!(a.len(), 384);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(a, embedder.embed("Ownership is Rust's most unique feature"));
    }

    #[test]
    fn shared_words_mean_closer_hashed_vectors() {
        let embedder = HashingEmbedder::new(384);
        let query = embedder.embed("what is ownership in rust");
        let near = embedder.embed("Ownership in Rust is a set of rules");
        let far = embedder.embed("Photosynthesis converts light into chemical energy");
        assert!(cosine(&query, &near) > cosine(&query, &far) + 0.2);
    }

    #[test]
    fn empty_text_is_the_zero_vector() {
        assert!(HashingEmbedder::new(8).embed("  ").iter().all(|v| *v == 0.0));
    }

    #[test]
    fn fnv1a_is_stable() {
        // Known FNV-1a 64 value of "a"; vectors stored by older releases depend on it.
        assert_eq!(fnv1a(&["a"]), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn word_vectors_are_unit_length_and_deterministic() {
        for text in ["", "a", "The quick brown fox", "ünïcødé text ✓"] {
            let v = word_vectors(text, 384);
            assert_eq!(v.len(), 384);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{text:?}: {norm}");
            assert_eq!(v, word_vectors(text, 384));
        }
    }

    #[test]
    fn shared_words_mean_closer_word_vectors() {
        let query = word_vectors("rust async runtime", 384);
        let related = word_vectors("the tokio async runtime for Rust programs", 384);
        let unrelated = word_vectors("a recipe for lemon cake with fresh berries", 384);
        assert!(cosine(&query, &related) > cosine(&query, &unrelated) + 0.2);
    }

    #[test]
    fn word_order_still_changes_the_vector() {
        assert_ne!(word_vectors("dog bites man", 64), word_vectors("man bites dog", 64));
    }

    #[test]
    fn the_generator_output_is_pinned() {
        // Guards the promise that vectors do not change between builds (SplitMix64's reference output).
        let mut state = 0u64;
        assert_eq!(splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
    }
}
