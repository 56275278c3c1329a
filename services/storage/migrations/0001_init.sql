-- Documents and their chunks. {{dimensions}}, {{hnsw_m}} and {{hnsw_ef_construction}} come from
-- the storage configuration (validated numbers) when the migration first runs.

-- One row per document: the version that search shows.
CREATE TABLE IF NOT EXISTS documents (
    tenant_id     text        NOT NULL,
    document_id   text        NOT NULL,
    version       bigint      NOT NULL,
    content_hash  text        NOT NULL,
    chunk_count   integer     NOT NULL,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    source        text        NOT NULL DEFAULT '',
    content_type  text        NOT NULL DEFAULT '',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, document_id)
);

-- Chunks of every version being written or visible; a commit deletes the other versions' chunks.
CREATE TABLE IF NOT EXISTS chunks (
    tenant_id     text    NOT NULL,
    document_id   text    NOT NULL,
    version       bigint  NOT NULL,
    chunk_index   integer NOT NULL,
    text          text    NOT NULL,
    content_hash  text    NOT NULL,
    metadata      jsonb   NOT NULL DEFAULT '{}'::jsonb,
    embedding     vector({{dimensions}}) NOT NULL,
    PRIMARY KEY (tenant_id, document_id, version, chunk_index)
);

CREATE INDEX IF NOT EXISTS chunks_embedding_hnsw ON chunks
    USING hnsw (embedding vector_cosine_ops)
    WITH (m = {{hnsw_m}}, ef_construction = {{hnsw_ef_construction}});
