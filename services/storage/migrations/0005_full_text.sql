-- Keyword search and the filters of hybrid search (issue 14).

-- The text-search configuration for a chunk's language: the metadata stage writes an ISO 639-1
-- code (or "und") into chunk metadata `language`; anything without a PostgreSQL stemmer is
-- `simple` (lower-cased words, no stemming, no stop words).
CREATE OR REPLACE FUNCTION millrace_text_search_config(language text) RETURNS regconfig
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- regconfig constants, not a cast of the CASE's text: that would look the name up per row.
    SELECT CASE lower(language)
        WHEN 'ar' THEN 'arabic'::regconfig
        WHEN 'ca' THEN 'catalan'::regconfig
        WHEN 'da' THEN 'danish'::regconfig
        WHEN 'de' THEN 'german'::regconfig
        WHEN 'el' THEN 'greek'::regconfig
        WHEN 'en' THEN 'english'::regconfig
        WHEN 'es' THEN 'spanish'::regconfig
        WHEN 'eu' THEN 'basque'::regconfig
        WHEN 'fi' THEN 'finnish'::regconfig
        WHEN 'fr' THEN 'french'::regconfig
        WHEN 'ga' THEN 'irish'::regconfig
        WHEN 'hi' THEN 'hindi'::regconfig
        WHEN 'hu' THEN 'hungarian'::regconfig
        WHEN 'hy' THEN 'armenian'::regconfig
        WHEN 'id' THEN 'indonesian'::regconfig
        WHEN 'it' THEN 'italian'::regconfig
        WHEN 'lt' THEN 'lithuanian'::regconfig
        WHEN 'nb' THEN 'norwegian'::regconfig
        WHEN 'ne' THEN 'nepali'::regconfig
        WHEN 'nl' THEN 'dutch'::regconfig
        WHEN 'no' THEN 'norwegian'::regconfig
        WHEN 'pt' THEN 'portuguese'::regconfig
        WHEN 'ro' THEN 'romanian'::regconfig
        WHEN 'ru' THEN 'russian'::regconfig
        WHEN 'sr' THEN 'serbian'::regconfig
        WHEN 'sv' THEN 'swedish'::regconfig
        WHEN 'ta' THEN 'tamil'::regconfig
        WHEN 'tr' THEN 'turkish'::regconfig
        WHEN 'yi' THEN 'yiddish'::regconfig
        ELSE 'simple'::regconfig END
$$;

-- What keyword search matches: the chunk's words stemmed in its own language, plus every word as
-- written (the `simple` lexemes), so that identifiers, error codes and stop words inside exact
-- phrases (`or_insert`, `E0499`, `cargo yank`) match exactly whatever the language.
CREATE OR REPLACE FUNCTION millrace_search_text(language text, body text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector(millrace_text_search_config(language), body) || to_tsvector('simple'::regconfig, body)
$$;

-- A search query of unknown language: any of its English-stemmed content words (stop words
-- dropped), or all its words as written (websearch syntax: "quoted phrases", -excluded, or).
-- ts_rank_cd ranks chunks with more of the words, closer together, first; a chunk holding the
-- exact phrase matches both branches.
CREATE OR REPLACE FUNCTION millrace_search_query(query text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN any_word IS NULL THEN all_words WHEN numnode(all_words) = 0 THEN any_word
                ELSE any_word || all_words END
    FROM (SELECT (SELECT string_agg('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''', ' | ')
                  FROM unnest(to_tsvector('english'::regconfig, query)))::tsquery AS any_word,
                 websearch_to_tsquery('simple'::regconfig, query) AS all_words) AS parts
$$;

-- The precise half of the query: all its English-stemmed content words, or all its words as
-- written. Few chunks match it, and those rank first; search takes its matches before the broad
-- query's (which a common word can make match most chunks).
CREATE OR REPLACE FUNCTION millrace_search_query_all(query text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT websearch_to_tsquery('english'::regconfig, query) || websearch_to_tsquery('simple'::regconfig, query)
$$;

-- The broad half that search scans: any of the English-stemmed content words except `common`
-- ones (those in a large share of all chunks, from the column's statistics), which would make
-- the GIN scan visit most of the table and say little about relevance; NULL if none is left.
CREATE OR REPLACE FUNCTION millrace_search_query_any(query text, common text[]) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT string_agg('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery
    FROM unnest(to_tsvector('english'::regconfig, query))
    WHERE lexeme <> ALL (common)
$$;

-- Computed by PostgreSQL on insert (the staging table of upsert_chunks, made with LIKE, leaves it
-- out). Adding a stored generated column rewrites the table under an exclusive lock: every
-- existing chunk gets its tsvector here, which on a large table takes a while (minutes per
-- million chunks); a large production table would rather add a plain column and backfill it
-- in batches.
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS search_text tsvector
    GENERATED ALWAYS AS (millrace_search_text(metadata ->> 'language', text)) STORED;
CREATE INDEX IF NOT EXISTS chunks_search_text_gin ON chunks USING gin (search_text);

-- When the document's first version was made visible; kept across versions (backfilled from
-- updated_at, the best we know for existing documents).
ALTER TABLE documents ADD COLUMN IF NOT EXISTS created_at timestamptz;
UPDATE documents SET created_at = updated_at WHERE created_at IS NULL;
ALTER TABLE documents ALTER COLUMN created_at SET DEFAULT now(), ALTER COLUMN created_at SET NOT NULL;
