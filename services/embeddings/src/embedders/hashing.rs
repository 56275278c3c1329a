//! A deterministic local embedder: feature hashing of words and adjacent word pairs into a
//! fixed number of dimensions, with a hashed sign to keep collisions unbiased, L2-normalised.
//! Texts that share words get similar vectors, so lexical search works without a model; it is
//! labelled `hashing-<dim>` wherever its vectors are stored. (FNV-1a is written here because
//! it is five lines and must never change between releases, unlike std's hasher.)

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

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_unit_length_and_deterministic() {
        let embedder = HashingEmbedder::new(384);
        let a = embedder.embed("Ownership is Rust's most unique feature");
        assert_eq!(a.len(), 384);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(a, embedder.embed("Ownership is Rust's most unique feature"));
    }

    #[test]
    fn shared_words_mean_closer_vectors() {
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
}
