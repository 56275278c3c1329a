-- The keyword retriever's strongest match (issue 14): the query's words in the order written,
-- stemmed in English or as written (the two halves of millrace_search_text), as a phrase. A
-- chunk holding a copied sentence or an error message matches it; one holding the same words
-- scattered does not.
CREATE OR REPLACE FUNCTION millrace_search_query_phrase(query text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT phraseto_tsquery('english'::regconfig, query) || phraseto_tsquery('simple'::regconfig, query)
$$;
