//! A store on its own database of a PostgreSQL shared by the tests running at the same time.

use std::sync::Arc;

pub use millrace_storage::store::DocumentVersion;
use millrace_storage::store::{ChunkRow, PgStore, SearchFilter, SearchHit, SearchRequest, StoreConfig, StoreError};
use millrace_testkit::Postgres;
use serde_json::{Value, json};

/// Small vectors keep the tests fast; the code paths are the same as for 384.
pub const DIM: usize = 8;

pub struct TestStore {
    pub store: PgStore,
    pub config: StoreConfig,
    pub pg: Arc<Postgres>,
}

impl TestStore {
    pub async fn new() -> Self {
        let pg = Postgres::shared().expect("start PostgreSQL (run scripts/setup.sh first)");
        let url = pg.create_unique_database("store").unwrap();
        let config = StoreConfig { database_url: url, dimensions: DIM, pool_size: 4, ..StoreConfig::default() };
        let store = PgStore::connect(&config).await.unwrap();
        Self { store, config, pg }
    }

    /// Runs a query returning one bigint, outside the store.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let (client, conn) = tokio_postgres::connect(&self.config.database_url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Runs a query returning text rows (e.g. EXPLAIN), outside the store.
    pub async fn text_rows(&self, sql: &str) -> Vec<String> {
        let (client, conn) = tokio_postgres::connect(&self.config.database_url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.query(sql, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
    }

    /// Runs statements outside the store.
    pub async fn exec(&self, sql: &str) {
        let db = self.config.database_url.rsplit('/').next().unwrap().to_owned();
        self.pg.execute(&db, sql).unwrap();
    }

    pub async fn chunk_count(&self, document_id: &str, version: i64) -> i64 {
        self.scalar(&format!("SELECT count(*) FROM chunks WHERE document_id = '{document_id}' AND version = {version}"))
            .await
    }
}

/// A unit vector along axis `axis`, nudged by `nudge` along the next axis.
pub fn axis(axis: usize, nudge: f32) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[axis % DIM] = 1.0;
    v[(axis + 1) % DIM] = nudge;
    v
}

pub fn chunk(tenant: &str, doc: &str, version: i64, index: i32, embedding: Vec<f32>) -> ChunkRow {
    ChunkRow {
        tenant_id: tenant.to_owned(),
        collection: "default".to_owned(),
        document_id: doc.to_owned(),
        version,
        chunk_index: index,
        text: format!("{doc} v{version} chunk {index}"),
        content_hash: format!("hash-{doc}-{version}-{index}"),
        metadata: json!({ "chunk": index }),
        embedding,
        generation: 0,
    }
}

/// `count` chunks of one version, each along its own axis.
pub fn chunks(tenant: &str, doc: &str, version: i64, count: i32) -> Vec<ChunkRow> {
    (0..count).map(|i| chunk(tenant, doc, version, i, axis(i as usize, 0.1))).collect()
}

pub fn version(tenant: &str, doc: &str, version: i64, chunk_count: i32, metadata: Value) -> DocumentVersion {
    DocumentVersion {
        tenant_id: tenant.to_owned(),
        collection: "default".to_owned(),
        document_id: doc.to_owned(),
        version,
        content_hash: format!("doc-hash-{doc}-{version}"),
        chunk_count,
        metadata,
        source: format!("upload://{doc}"),
        content_type: "text/plain".to_owned(),
        fingerprint: format!("fp-{doc}-{version}"),
    }
}

/// The nearest `top_k` chunks, one hit per chunk (vector mode, as search was before issue 14).
pub async fn vsearch(
    store: &PgStore,
    tenant: &str,
    vector: &[f32],
    top_k: usize,
    filter: &SearchFilter,
) -> Result<Vec<SearchHit>, StoreError> {
    store.search(tenant, &SearchRequest::nearest(vector.to_vec(), top_k, filter.clone())).await
}
