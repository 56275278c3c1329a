-- Collections: every document belongs to one (a new version may move it to another), and its
-- chunks carry it too, so that search filters on it inside the HNSW index scan, as on the
-- tenant, rather than after it.
ALTER TABLE documents ADD COLUMN IF NOT EXISTS collection text NOT NULL DEFAULT 'default';
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS collection text NOT NULL DEFAULT 'default';
