-- Keyword search and the filters of hybrid search (issue 14).

-- The text-search configuration for a chunk's language: the metadata stage writes an ISO 639-1
-- code (or "und") into chunk metadata `language`; anything without a PostgreSQL stemmer is
-- `simple` (lower-cased words, no stemming, no stop words).
CREATE OR REPLACE FUNCTION millrace_text_search_config(language text) RETURNS regconfig
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (CASE lower(language)
        WHEN 'ar' THEN 'arabic' WHEN 'ca' THEN 'catalan' WHEN 'da' THEN 'danish' WHEN 'de' THEN 'german'
        WHEN 'el' THEN 'greek' WHEN 'en' THEN 'english' WHEN 'es' THEN 'spanish' WHEN 'eu' THEN 'basque'
        WHEN 'fi' THEN 'finnish' WHEN 'fr' THEN 'french' WHEN 'ga' THEN 'irish' WHEN 'hi' THEN 'hindi'
        WHEN 'hu' THEN 'hungarian' WHEN 'hy' THEN 'armenian' WHEN 'id' THEN 'indonesian' WHEN 'it' THEN 'italian'
        WHEN 'lt' THEN 'lithuanian' WHEN 'ne' THEN 'nepali' WHEN 'nl' THEN 'dutch' WHEN 'no' THEN 'norwegian'
        WHEN 'nb' THEN 'norwegian' WHEN 'pt' THEN 'portuguese' WHEN 'ro' THEN 'romanian' WHEN 'ru' THEN 'russian'
        WHEN 'sr' THEN 'serbian' WHEN 'sv' THEN 'swedish' WHEN 'ta' THEN 'tamil' WHEN 'tr' THEN 'turkish'
        WHEN 'yi' THEN 'yiddish'
        ELSE 'simple' END)::regconfig
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
