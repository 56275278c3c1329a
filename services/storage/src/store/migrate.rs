//! Numbered SQL migrations, embedded in the binary, applied once each and recorded in
//! `millrace_migrations`. Replicas starting together serialise on an advisory lock, held on a
//! connection of its own so that it is released even if migrating fails half-way.

use millrace_common::postgres::Database;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::{StoreConfig, StoreError};

/// Key of the session advisory lock taken while migrating ("millrace" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d69_6c6c_7261_6365;

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Append only: a released migration is never edited, a change is a new file.
const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../../migrations/0001_init.sql") },
    Migration { version: 2, name: "fingerprint", sql: include_str!("../../migrations/0002_fingerprint.sql") },
    Migration { version: 3, name: "fences", sql: include_str!("../../migrations/0003_fences.sql") },
    Migration { version: 4, name: "collections", sql: include_str!("../../migrations/0004_collections.sql") },
    Migration { version: 5, name: "full_text", sql: include_str!("../../migrations/0005_full_text.sql") },
    Migration { version: 6, name: "document_list", sql: include_str!("../../migrations/0006_document_list.sql") },
    Migration { version: 7, name: "one_parse", sql: include_str!("../../migrations/0007_one_parse.sql") },
];

/// What migrating learned about the database.
pub(crate) struct SchemaInfo {
    /// pgvector 0.8 and later can keep scanning the HNSW index until enough rows pass the filters.
    pub iterative_scan: bool,
}

pub(crate) async fn migrate(config: &StoreConfig) -> Result<SchemaInfo, StoreError> {
    config.validate()?;
    let database = Database::new("MILLRACE_DATABASE_URL", &config.database_url, &config.database_tls)
        .map_err(|err| StoreError::Config(err.to_string()))?;
    let (client, conn_task) = database.connect().await?;
    let result = migrate_locked(&client, config).await;
    // Closing the session releases the advisory lock whatever happened.
    drop(client);
    let _ = conn_task.await;
    result
}

async fn migrate_locked(client: &Client, config: &StoreConfig) -> Result<SchemaInfo, StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE EXTENSION IF NOT EXISTS vector;
             CREATE TABLE IF NOT EXISTS millrace_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await?;
    let applied: Vec<i32> =
        client.query("SELECT version FROM millrace_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let sql = render(migration.sql, config);
        client.batch_execute("BEGIN").await?;
        let step = async {
            client.batch_execute(&sql).await?;
            client
                .execute(
                    "INSERT INTO millrace_migrations (version, name) VALUES ($1, $2)",
                    &[&migration.version, &migration.name],
                )
                .await?;
            client.batch_execute("COMMIT").await
        };
        if let Err(e) = step.await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e.into());
        }
        info!(version = migration.version, name = migration.name, "applied migration");
    }
    check_schema(client, config).await
}

fn render(sql: &str, config: &StoreConfig) -> String {
    sql.replace("{{dimensions}}", &config.dimensions.to_string())
        .replace("{{hnsw_m}}", &config.hnsw_m.to_string())
        .replace("{{hnsw_ef_construction}}", &config.hnsw_ef_construction.to_string())
}

async fn check_schema(client: &Client, config: &StoreConfig) -> Result<SchemaInfo, StoreError> {
    // For `vector(n)` the type modifier is n.
    let row = client
        .query_opt(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'",
            &[],
        )
        .await?
        .ok_or_else(|| StoreError::Schema("table chunks has no embedding column".to_owned()))?;
    let typmod: i32 = row.get(0);
    if usize::try_from(typmod).ok() != Some(config.dimensions) {
        return Err(StoreError::Schema(format!(
            "the database stores {typmod}-dimensional embeddings but MILLRACE_EMBEDDING_DIM is {}; \
             use the same dimension, or a new database (changing it needs every document re-embedded)",
            config.dimensions
        )));
    }

    let options: Option<Vec<String>> = client
        .query_opt("SELECT reloptions FROM pg_class WHERE relname = 'chunks_embedding_hnsw'", &[])
        .await?
        .and_then(|r| r.get(0));
    let wanted = [format!("m={}", config.hnsw_m), format!("ef_construction={}", config.hnsw_ef_construction)];
    if let Some(options) = options
        && !wanted.iter().all(|w| options.contains(w))
    {
        warn!(
            index = ?options,
            hnsw_m = config.hnsw_m,
            hnsw_ef_construction = config.hnsw_ef_construction,
            "the HNSW index was built with other parameters; they apply only when it is rebuilt"
        );
    }

    let version: Option<String> =
        client.query_opt("SELECT extversion FROM pg_extension WHERE extname = 'vector'", &[]).await?.map(|r| r.get(0));
    let iterative_scan = version.as_deref().is_some_and(|v| {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (0, 8)
    });
    Ok(SchemaInfo { iterative_scan })
}
