-- The fingerprint of what produced a document's visible version (content hash, content type,
-- caller metadata, source, per-request options): an identical resubmission completes at once.
ALTER TABLE documents ADD COLUMN IF NOT EXISTS fingerprint text NOT NULL DEFAULT '';
