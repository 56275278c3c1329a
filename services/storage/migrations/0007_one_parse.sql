-- One parse per English chunk instead of two (issue 14: the full-text column's ingest cost).
--
-- Migration 5 made each chunk's search_text from two parses of its text: its language's stemmer
-- (stop words dropped) and the `simple` words as written (so that stop words inside identifiers
-- and phrases, `or_insert`, still match). Parsing is about half of what the column costs at insert.
-- For English, one parse with the English stemmer keeping its stop words holds what a query needs
-- from both: every word's stem at its own position, stop words included (a stop word's stem is
-- nearly always the word itself). Only the unstemmed surface forms are gone, and queries match
-- stems anyway. Other stemmed languages keep both parses: a query's language is unknown (its
-- words are stemmed as English), so their words as written are what it matches exactly. `simple`
-- chunks (no stemmer) parse once, not twice into the same words.

CREATE TEXT SEARCH DICTIONARY millrace_english_stem (TEMPLATE = snowball, Language = english);
CREATE TEXT SEARCH CONFIGURATION millrace_english (COPY = english);
ALTER TEXT SEARCH CONFIGURATION millrace_english ALTER MAPPING REPLACE english_stem WITH millrace_english_stem;

-- The column depends on the function: drop it (and its index) first, re-add it after. Adding a
-- stored generated column rewrites the table and rebuilds its indexes, HNSW included (minutes
-- per million chunks, as migration 5).
ALTER TABLE chunks DROP COLUMN search_text;

CREATE OR REPLACE FUNCTION millrace_search_text(language text, body text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- One expression (no FROM) so that PostgreSQL inlines it into the column's expression.
    SELECT CASE millrace_text_search_config(language)
        WHEN 'english'::regconfig THEN to_tsvector('millrace_english'::regconfig, body)
        WHEN 'simple'::regconfig THEN to_tsvector('simple'::regconfig, body)
        ELSE to_tsvector(millrace_text_search_config(language), body) || to_tsvector('simple'::regconfig, body) END
$$;

ALTER TABLE chunks ADD COLUMN search_text tsvector
    GENERATED ALWAYS AS (millrace_search_text(metadata ->> 'language', text)) STORED;
CREATE INDEX chunks_search_text_gin ON chunks USING gin (search_text);
