-- Listing a tenant's documents by id, a page at a time (`ListDocuments`): the order is byte
-- order (COLLATE "C") so that a cursor means the same whatever the database's collation, and
-- this index serves that order and the cursor's range, as the primary key (in the database's
-- collation) cannot.
CREATE INDEX IF NOT EXISTS documents_by_id_bytes ON documents (tenant_id, document_id COLLATE "C");
