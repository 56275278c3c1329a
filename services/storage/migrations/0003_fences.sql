-- What keeps a stale writer from undoing a newer decision (ARCHITECTURE "Delivery invariants").

-- The retry generation of the job attempt that wrote a chunk. Discarding a failed attempt deletes
-- only rows of its own generation or older, so a discard that arrives late never deletes a batch
-- that a dead-letter retry stored again.
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 0;

-- Deleted documents: no version up to `deleted_through` (the last version submitted before the
-- delete) is stored or made visible again, so a job still running at the delete cannot bring the
-- document back. Versions submitted after the delete are not affected.
CREATE TABLE IF NOT EXISTS document_tombstones (
    tenant_id        text        NOT NULL,
    document_id      text        NOT NULL,
    deleted_through  bigint      NOT NULL,
    deleted_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, document_id)
);
