//! A cache of embeddings in Redis keyed by (model, content hash), with a TTL, shared by every
//! replica: a text that recurs across documents (boilerplate, repeated sections, resubmitted
//! files) is embedded once per TTL. A vector is stored as little-endian f32 bytes (1.5 KiB at
//! 384 dimensions), so the TTL bounds the memory it takes.

use std::time::Duration;

use millrace_common::{ConfigError, Settings};
use millrace_pipeline::Keys;

#[derive(Clone)]
pub struct EmbeddingCache {
    pool: deadpool_redis::Pool,
    keys: Keys,
    /// Zero disables the cache.
    ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("embedding cache: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("embedding cache: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
}

impl EmbeddingCache {
    /// `MILLRACE_EMBEDDING_CACHE_TTL_SECS` (default one day; 0 turns the cache off).
    pub fn ttl_from_settings(settings: &Settings) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(settings.get_or("EMBEDDING_CACHE_TTL_SECS", 86_400u64)?))
    }

    pub fn new(pool: deadpool_redis::Pool, keys: Keys, ttl: Duration) -> Self {
        Self { pool, keys, ttl }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The cached vector of each hash, if any (and of the expected dimension).
    pub async fn get_many(
        &self,
        model: &str,
        content_hashes: &[&str],
        dimensions: usize,
    ) -> Result<Vec<Option<Vec<f32>>>, CacheError> {
        if !self.enabled() || content_hashes.is_empty() {
            return Ok(vec![None; content_hashes.len()]);
        }
        let keys: Vec<String> = content_hashes.iter().map(|h| self.keys.embedding_cache(model, h)).collect();
        let mut conn = self.pool.get().await?;
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(values.into_iter().map(|bytes| bytes.and_then(|b| decode(&b, dimensions))).collect())
    }

    /// Caches vectors of texts by their content hashes.
    pub async fn put_many(&self, model: &str, entries: &[(&str, &[f32])]) -> Result<(), CacheError> {
        if !self.enabled() || entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (hash, vector) in entries {
            let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
            pipe.set_ex(self.keys.embedding_cache(model, hash), bytes, self.ttl.as_secs().max(1)).ignore();
        }
        let mut conn = self.pool.get().await?;
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }
}

fn decode(bytes: &[u8], dimensions: usize) -> Option<Vec<f32>> {
    if bytes.len() != dimensions * 4 {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_and_wrong_sizes_are_misses() {
        let vector = [0.5f32, -1.25, 3.0];
        let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode(&bytes, 3).unwrap(), vector);
        assert_eq!(decode(&bytes, 4), None);
    }
}
