//! Hybrid search: the keyword retriever, fusion, grouping, filters and highlights.

use millrace_storage::store::{ChunkRow, GroupBy, SearchFilter, SearchHit, SearchMode, SearchRequest, StoreError};
use serde_json::{Value, json};

use crate::helpers::{DocumentVersion, TestStore, axis, version};

fn text_chunk(tenant: &str, doc: &str, index: i32, text: &str, embedding: Vec<f32>, language: &str) -> ChunkRow {
    ChunkRow {
        tenant_id: tenant.to_owned(),
        collection: "default".to_owned(),
        document_id: doc.to_owned(),
        version: 1,
        chunk_index: index,
        text: text.to_owned(),
        content_hash: format!("hash-{doc}-{index}"),
        metadata: json!({ "chunk": index, "language": language }),
        embedding,
        generation: 0,
    }
}

/// Stores and commits version 1 of a document made of `chunks`.
async fn put(t: &TestStore, doc: DocumentVersion, chunks: Vec<ChunkRow>) {
    let chunks: Vec<ChunkRow> =
        chunks.into_iter().map(|c| ChunkRow { collection: doc.collection.clone(), ..c }).collect();
    t.store.upsert_chunks(&chunks).await.unwrap();
    t.store.commit_version(&DocumentVersion { chunk_count: chunks.len() as i32, ..doc }).await.unwrap();
}

fn request(mode: SearchMode, query: &str, vector: Vec<f32>, top_k: usize, group_by: GroupBy) -> SearchRequest {
    SearchRequest { query: query.to_owned(), vector, top_k, mode, group_by, ..SearchRequest::default() }
}

fn ids(hits: &[SearchHit]) -> Vec<(&str, i32)> {
    hits.iter().map(|h| (h.document_id.as_str(), h.chunk_index)).collect()
}

fn docs(hits: &[SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.document_id.as_str()).collect()
}

/// Near the query vector: short, generic pages. Far from it: the one page that holds the
/// identifier, the error code and the sentence asked for.
async fn library(t: &TestStore) {
    let near = [
        ("intro", "An introduction to maps and collections in the standard library."),
        ("overview", "Overview: how collections store values and grow when needed."),
        ("guide", "A guide to choosing a collection for your data."),
    ];
    for (i, (doc, text)) in near.iter().enumerate() {
        put(
            t,
            version("t1", doc, 1, 1, json!({})),
            vec![text_chunk("t1", doc, 0, text, axis(0, 0.1 * i as f32), "en")],
        )
        .await;
    }
    put(
        t,
        version("t1", "entry", 1, 2, json!({})),
        vec![
            text_chunk(
                "t1",
                "entry",
                0,
                "Counting words: call map.entry(word).or_insert(0) and add one to the count it returns.",
                axis(3, 0.0),
                "en",
            ),
            text_chunk(
                "t1",
                "entry",
                1,
                "error E0499 means the value was borrowed as mutable more than once at a time.",
                axis(4, 0.0),
                "en",
            ),
        ],
    )
    .await;
    // Another tenant holds the same words, nearer the query: never seen by t1.
    put(
        t,
        version("t2", "secret", 1, 1, json!({})),
        vec![text_chunk("t2", "secret", 0, "or_insert E0499 borrowed mutable counting words", axis(0, 0.0), "en")],
    )
    .await;
}

#[tokio::test]
async fn an_identifier_is_found_first_by_keyword_and_hybrid_where_vectors_rank_it_lower() {
    let t = TestStore::new().await;
    library(&t).await;
    let query = axis(0, 0.0);

    let vector =
        t.store.search("t1", &request(SearchMode::Vector, "or_insert", query.clone(), 5, GroupBy::Chunk)).await;
    let vector = vector.unwrap();
    assert_eq!(docs(&vector)[..3], ["intro", "overview", "guide"]);
    assert!(vector.iter().all(|h| h.keyword_score.is_none() && h.keyword_rank.is_none()));
    assert!(vector.windows(2).all(|w| w[0].score >= w[1].score));
    assert_eq!(vector.iter().map(|h| h.rank).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(vector[0].vector_rank, Some(1));
    assert_eq!(vector[0].vector_score, Some(vector[0].score));

    for (mode, query_text, expected) in [
        (SearchMode::Keyword, "or_insert", ("entry", 0)),
        (SearchMode::Hybrid, "or_insert", ("entry", 0)),
        (SearchMode::Keyword, "E0499", ("entry", 1)),
        (SearchMode::Hybrid, "E0499", ("entry", 1)),
        (SearchMode::Hybrid, "e0499", ("entry", 1)),
        (SearchMode::Hybrid, "add one to the count it returns", ("entry", 0)),
        (SearchMode::Hybrid, "borrowed as mutable more than once", ("entry", 1)),
    ] {
        let hits = t.store.search("t1", &request(mode, query_text, query.clone(), 5, GroupBy::Chunk)).await.unwrap();
        assert_eq!(ids(&hits)[0], expected, "{mode:?} {query_text:?}: {hits:#?}");
        assert!(hits.iter().all(|h| h.document_id != "secret"), "another tenant's chunk");
        let first = &hits[0];
        assert_eq!((first.rank, first.keyword_rank), (1, Some(1)));
        assert!(first.keyword_score.unwrap() > 0.0);
        if mode == SearchMode::Hybrid {
            // Found by both retrievers: the vector one ranks it below the three near pages.
            assert!(first.vector_rank.unwrap() > 3, "{first:?}");
            let rrf = 1.0 / (60.0 + f64::from(first.vector_rank.unwrap())) + 1.0 / 61.0;
            assert!((f64::from(first.score) - rrf).abs() < 1e-6, "{} vs {rrf}", first.score);
            assert_eq!(hits.len(), 5, "hybrid fills top_k from the vector ranking");
        } else {
            assert_eq!(first.score, first.keyword_score.unwrap());
            assert!(first.vector_score.is_none());
            assert!(hits.iter().all(|h| h.document_id == "entry"), "keyword mode finds only matching chunks");
        }
    }

    // Weights: the vector retriever alone decides when the keyword one weighs nothing.
    let weighted = SearchRequest {
        keyword_weight: 0.0,
        ..request(SearchMode::Hybrid, "or_insert", query.clone(), 3, GroupBy::Chunk)
    };
    let hits = t.store.search("t1", &weighted).await.unwrap();
    assert_eq!(docs(&hits), ["intro", "overview", "guide"]);

    // Nothing matches: keyword mode finds nothing, hybrid falls back on the vector ranking.
    let none = request(SearchMode::Keyword, "zeppelin", query.clone(), 5, GroupBy::Chunk);
    assert!(t.store.search("t1", &none).await.unwrap().is_empty());
    let hits = t.store.search("t1", &request(SearchMode::Hybrid, "zeppelin", query, 5, GroupBy::Chunk)).await.unwrap();
    assert_eq!(docs(&hits)[..3], ["intro", "overview", "guide"]);

    // The other tenant sees only its own chunk.
    let theirs = request(SearchMode::Keyword, "counting words", vec![], 5, GroupBy::Document);
    assert_eq!(docs(&t.store.search("t2", &theirs).await.unwrap()), ["secret"]);
    assert!(t.store.search("t3", &theirs).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_chunk_language_chooses_the_stemmer_and_words_also_match_as_written() {
    let t = TestStore::new().await;
    put(
        &t,
        version("t1", "de", 1, 1, json!({})),
        vec![text_chunk("t1", "de", 0, "Die Häuser am Fluss sind sehr alt.", axis(1, 0.0), "de")],
    )
    .await;
    put(
        &t,
        version("t1", "en", 1, 1, json!({})),
        vec![text_chunk("t1", "en", 0, "The running dogs were barking loudly.", axis(2, 0.0), "en")],
    )
    .await;
    put(
        &t,
        version("t1", "und", 1, 1, json!({})),
        vec![text_chunk("t1", "und", 0, "cargo yank --vers 1.0.1 removes a release", axis(3, 0.0), "xx")],
    )
    .await;
    let keyword = |q: &str| request(SearchMode::Keyword, q, vec![], 5, GroupBy::Document);
    // German stemming: "Haus" finds "Häuser".
    assert_eq!(docs(&t.store.search("t1", &keyword("Haus")).await.unwrap()), ["de"]);
    // English stemming: "bark" finds "barking".
    assert_eq!(docs(&t.store.search("t1", &keyword("bark")).await.unwrap()), ["en"]);
    // Words as written, stop words included, whatever the language.
    assert_eq!(docs(&t.store.search("t1", &keyword("sind")).await.unwrap()), ["de"]);
    assert_eq!(docs(&t.store.search("t1", &keyword("cargo yank")).await.unwrap()), ["und"]);
    assert_eq!(docs(&t.store.search("t1", &keyword("\"were barking\"")).await.unwrap()), ["en"]);
}

#[tokio::test]
async fn grouping_by_document_counts_documents_and_lists_their_other_chunks() {
    let t = TestStore::new().await;
    // "long" has four chunks nearer the query than any other document's.
    let long: Vec<ChunkRow> = (0..4)
        .map(|i| text_chunk("t1", "long", i, &format!("long part {i} about widgets"), axis(0, 0.1 * i as f32), "en"))
        .collect();
    put(&t, version("t1", "long", 1, 4, json!({})), long).await;
    for (i, doc) in ["b", "c", "d"].iter().enumerate() {
        put(
            &t,
            version("t1", doc, 1, 1, json!({})),
            vec![text_chunk("t1", doc, 0, &format!("{doc} about widgets"), axis(0, 0.5 + 0.2 * i as f32), "en")],
        )
        .await;
    }
    for mode in [SearchMode::Vector, SearchMode::Hybrid, SearchMode::Keyword] {
        let search = request(mode, "long widgets", axis(0, 0.0), 3, GroupBy::Document);
        let hits = t.store.search("t1", &search).await.unwrap();
        assert_eq!(hits.len(), 3, "{mode:?}: top_k counts documents");
        let mut seen = docs(&hits);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 3, "{mode:?}: one hit per document");
        assert_eq!(hits.iter().map(|h| h.rank).collect::<Vec<_>>(), [1, 2, 3]);
        let long = hits.iter().find(|h| h.document_id == "long").unwrap();
        assert_eq!(long.other_chunks.len(), 3, "{mode:?}: {long:?}");
        assert!(long.other_chunks.iter().all(|c| c.chunk_index != long.chunk_index));
        assert!(long.other_chunks.iter().all(|c| c.score <= long.score));
        assert!(long.other_chunks.windows(2).all(|w| w[0].score >= w[1].score), "best first");
        if mode == SearchMode::Vector {
            assert_eq!(docs(&hits), ["long", "b", "c"]);
            assert_eq!(long.chunk_index, 0);
            assert_eq!(long.other_chunks.iter().map(|c| c.chunk_index).collect::<Vec<_>>(), [1, 2, 3]);
            assert!(long.other_chunks.iter().all(|c| c.vector_score.is_some() && c.keyword_score.is_none()));
        }
        if mode == SearchMode::Hybrid {
            assert!(long.other_chunks.iter().all(|c| c.vector_score.is_some() && c.keyword_score.is_some()));
        }
    }
    // By chunk: today's behaviour, the long document fills the top.
    let hits =
        t.store.search("t1", &request(SearchMode::Vector, "widgets", axis(0, 0.0), 3, GroupBy::Chunk)).await.unwrap();
    assert_eq!(ids(&hits), [("long", 0), ("long", 1), ("long", 2)]);
    assert!(hits.iter().all(|h| h.other_chunks.is_empty()));
}

#[tokio::test]
async fn every_filter_holds_in_every_mode() {
    let t = TestStore::new().await;
    // Four documents, each different in every filtered field; every chunk mentions "filters".
    let specs = [
        ("a", "default", "text/markdown", "https://docs.example.com/guide/a", json!({ "team": "red" })),
        ("b", "default", "text/plain", "https://docs.example.com/api/b", json!({ "team": "blue" })),
        ("c", "hr", "application/pdf", "s3://bucket/c", json!({ "team": "red", "year": 2024 })),
        ("d", "legal", "text/markdown", "https://docs.example.com/guide/d", json!({ "team": "blue" })),
    ];
    for (i, (doc, collection, content_type, source, metadata)) in specs.iter().enumerate() {
        let doc_version = DocumentVersion {
            collection: (*collection).to_owned(),
            content_type: (*content_type).to_owned(),
            source: (*source).to_owned(),
            ..version("t1", doc, 1, 2, metadata.clone())
        };
        let chunks = (0..2)
            .map(|c| {
                let mut row =
                    text_chunk("t1", doc, c, &format!("{doc} {c} explains filters"), axis(i, 0.1 * c as f32), "en");
                row.metadata["section"] = json!(if c == 0 { "intro" } else { "body" });
                row
            })
            .collect();
        put(&t, doc_version, chunks).await;
    }
    // Created: a 2021, b 2022, c 2023, d 2024; updated a year later each.
    t.exec(
        "UPDATE documents SET created_at = make_timestamptz(2020 + ascii(document_id) - 96, 1, 1, 0, 0, 0, 'UTC'),
                              updated_at = make_timestamptz(2021 + ascii(document_id) - 96, 1, 1, 0, 0, 0, 'UTC')",
    )
    .await;
    let ms = |year: i32| {
        let days =
            (1970..year).map(|y| if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 { 366 } else { 365 }).sum::<i64>();
        days * 86_400_000
    };
    let cases: Vec<(SearchFilter, Vec<&str>, &str)> = vec![
        (SearchFilter::default(), vec!["a", "b", "c", "d"], "none"),
        (SearchFilter { document_id: Some("b".into()), ..Default::default() }, vec!["b"], "document_id"),
        (
            SearchFilter { document_ids: vec!["a".into(), "d".into()], ..Default::default() },
            vec!["a", "d"],
            "document_ids",
        ),
        (
            SearchFilter { content_types: vec!["text/markdown".into()], ..Default::default() },
            vec!["a", "d"],
            "content_types",
        ),
        (
            SearchFilter { content_types: vec!["application/pdf".into(), "text/plain".into()], ..Default::default() },
            vec!["b", "c"],
            "content_types (two)",
        ),
        (
            SearchFilter { source_prefix: Some("https://docs.example.com/guide/".into()), ..Default::default() },
            vec!["a", "d"],
            "source_prefix",
        ),
        // LIKE wildcards in a prefix are literal.
        (
            SearchFilter { source_prefix: Some("https://docs.example.com/%".into()), ..Default::default() },
            vec![],
            "source_prefix %",
        ),
        (
            SearchFilter { created_after_unix_ms: Some(ms(2023)), ..Default::default() },
            vec!["c", "d"],
            "created_after inclusive",
        ),
        (
            SearchFilter { created_before_unix_ms: Some(ms(2022)), ..Default::default() },
            vec!["a"],
            "created_before exclusive",
        ),
        (
            SearchFilter {
                created_after_unix_ms: Some(ms(2022)),
                created_before_unix_ms: Some(ms(2024)),
                ..Default::default()
            },
            vec!["b", "c"],
            "created range",
        ),
        (SearchFilter { updated_after_unix_ms: Some(ms(2024) + 1), ..Default::default() }, vec!["d"], "updated_after"),
        (SearchFilter { updated_before_unix_ms: Some(ms(2023)), ..Default::default() }, vec!["a"], "updated_before"),
        (SearchFilter { metadata: Some(json!({ "team": "red" })), ..Default::default() }, vec!["a", "c"], "metadata"),
        (
            SearchFilter { metadata: Some(json!({ "team": "red", "section": "body" })), ..Default::default() },
            vec!["a", "c"],
            "metadata across document and chunk",
        ),
        (SearchFilter { metadata: Some(json!({ "year": 2024 })), ..Default::default() }, vec!["c"], "metadata number"),
        (
            SearchFilter { collections: vec!["hr".into(), "legal".into()], ..Default::default() },
            vec!["c", "d"],
            "collections",
        ),
        (
            SearchFilter {
                collections: vec!["default".into()],
                content_types: vec!["text/markdown".into()],
                metadata: Some(json!({ "team": "red" })),
                ..Default::default()
            },
            vec!["a"],
            "combined",
        ),
    ];
    for (filter, expected, name) in &cases {
        for mode in [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid] {
            for group_by in [GroupBy::Document, GroupBy::Chunk] {
                let search =
                    SearchRequest { filter: filter.clone(), ..request(mode, "filters", axis(0, 0.0), 10, group_by) };
                let hits = t.store.search("t1", &search).await.unwrap();
                let mut found = docs(&hits);
                found.sort_unstable();
                found.dedup();
                assert_eq!(&found, expected, "{name}, {mode:?}, {group_by:?}");
                if let Some(Value::Object(wanted)) = &filter.metadata
                    && wanted.contains_key("section")
                {
                    assert!(hits.iter().all(|h| h.chunk_index == 1 && h.other_chunks.is_empty()), "{name}: {hits:?}");
                }
            }
        }
    }
}

/// The filter's matches lie beyond the first HNSW candidates: many non-matching chunks are nearer
/// the query than the few matching ones, and ef_search is small. The iterative index scan (vector)
/// and the filtered GIN scan (keyword) still find top_k.
#[tokio::test]
async fn a_filtered_search_finds_matches_beyond_the_first_hnsw_candidates() {
    let t = TestStore::new().await;
    let crowd: Vec<ChunkRow> = (0..400)
        .map(|i| text_chunk("t1", "crowd", i, "a crowd of rust notes", axis(0, i as f32 / 1000.0), "en"))
        .collect();
    put(&t, version("t1", "crowd", 1, 400, json!({})), crowd).await;
    for i in 0..6 {
        let doc = format!("wanted-{i}");
        let doc_version =
            DocumentVersion { content_type: "text/markdown".to_owned(), ..version("t1", &doc, 1, 1, json!({})) };
        let chunk = text_chunk("t1", &doc, 0, "rust notes in markdown", axis(0, 0.8 + i as f32 / 10.0), "en");
        put(&t, doc_version, vec![chunk]).await;
    }
    let db = t.config.database_url.rsplit('/').next().unwrap().to_owned();
    t.exec(&format!("ALTER DATABASE \"{db}\" SET enable_sort = off; ANALYZE")).await;
    let plan = t
        .text_rows(
            "EXPLAIN SELECT c.document_id FROM chunks c
             JOIN documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id AND d.version = c.version
             WHERE c.tenant_id = 't1' AND d.content_type = ANY('{text/markdown}')
             ORDER BY c.embedding <=> '[1,0,0,0,0,0,0,0]' LIMIT 5",
        )
        .await
        .join("\n");
    assert!(plan.contains("chunks_embedding_hnsw"), "the test needs the HNSW path:\n{plan}");

    let config = millrace_storage::store::StoreConfig { hnsw_ef_search: 10, ..t.config.clone() };
    let store = millrace_storage::store::PgStore::connect(&config).await.unwrap();
    let markdown = SearchFilter { content_types: vec!["text/markdown".to_owned()], ..SearchFilter::default() };
    for mode in [SearchMode::Vector, SearchMode::Hybrid, SearchMode::Keyword] {
        for group_by in [GroupBy::Chunk, GroupBy::Document] {
            let search =
                SearchRequest { filter: markdown.clone(), ..request(mode, "rust notes", axis(0, 0.0), 5, group_by) };
            let hits = store.search("t1", &search).await.unwrap();
            assert_eq!(hits.len(), 5, "{mode:?} {group_by:?}: {hits:?}");
            assert!(hits.iter().all(|h| h.document_id.starts_with("wanted-")));
            if mode == SearchMode::Vector {
                assert_eq!(docs(&hits), ["wanted-0", "wanted-1", "wanted-2", "wanted-3", "wanted-4"]);
            }
        }
    }
    // A filter so selective that the iterative scan stops (hnsw.max_scan_tuples) before it
    // finds them all: the exact plan answers instead.
    t.exec(&format!("ALTER DATABASE \"{db}\" SET hnsw.max_scan_tuples = 50")).await;
    let store = millrace_storage::store::PgStore::connect(&config).await.unwrap();
    for mode in [SearchMode::Vector, SearchMode::Hybrid] {
        let search =
            SearchRequest { filter: markdown.clone(), ..request(mode, "rust notes", axis(0, 0.0), 5, GroupBy::Chunk) };
        let hits = store.search("t1", &search).await.unwrap();
        assert_eq!(hits.len(), 5, "{mode:?} beyond max_scan_tuples: {hits:?}");
    }

    // Unfiltered, grouped by document: the crowd's 400 chunks fill the first candidate pools
    // (100, then 400), a deeper one finds the other documents.
    let hits = store.search("t1", &request(SearchMode::Vector, "", axis(0, 0.0), 4, GroupBy::Document)).await.unwrap();
    assert_eq!(docs(&hits), ["crowd", "wanted-0", "wanted-1", "wanted-2"]);
    assert_eq!(hits[0].other_chunks.len(), 399);
}

#[tokio::test]
async fn highlights_are_code_point_offsets_of_the_matched_terms() {
    let t = TestStore::new().await;
    let text = "Größe der Straße — 日本語 🙂 ändert nichts: or_insert behebt E0499 nicht; Straßen bleiben.";
    put(&t, version("t1", "umlaut", 1, 1, json!({})), vec![text_chunk("t1", "umlaut", 0, text, axis(0, 0.0), "de")])
        .await;
    let english = "The dogs were running; a dog runs.";
    put(&t, version("t1", "dogs", 1, 1, json!({})), vec![text_chunk("t1", "dogs", 0, english, axis(1, 0.0), "en")])
        .await;
    let chars: Vec<char> = text.chars().collect();
    let spans = |hit: &SearchHit| -> Vec<String> {
        let chars: Vec<char> = hit.text.chars().collect();
        hit.highlights.iter().map(|h| chars[h.start as usize..h.end as usize].iter().collect()).collect()
    };

    let hits = t
        .store
        .search("t1", &request(SearchMode::Keyword, "straße E0499 or_insert", vec![], 5, GroupBy::Document))
        .await
        .unwrap();
    assert_eq!(docs(&hits), ["umlaut"]);
    // Code point offsets, not bytes or UTF-16 units.
    // (The query is stemmed in English only: the German "Straßen" is not one of its words.)
    assert_eq!(spans(&hits[0]), ["Straße", "or", "insert", "E0499"], "{:?}", hits[0].highlights);
    let first = hits[0].highlights[0];
    assert_eq!((first.start, first.end), (10, 16));
    assert_eq!(chars[10..16].iter().collect::<String>(), "Straße");
    assert!(hits[0].highlights.windows(2).all(|w| w[0].end <= w[1].start));

    // Stems: "run" highlights "running" and "runs"; hybrid and vector hits are highlighted too.
    for mode in [SearchMode::Keyword, SearchMode::Hybrid, SearchMode::Vector] {
        let hits = t.store.search("t1", &request(mode, "run dog", axis(1, 0.0), 1, GroupBy::Document)).await.unwrap();
        assert_eq!(docs(&hits), ["dogs"], "{mode:?}");
        assert_eq!(spans(&hits[0]), ["dogs", "running", "dog", "runs"], "{mode:?}");
    }
    // A vector search without a query text has no highlights.
    let hits = t.store.search("t1", &request(SearchMode::Vector, "", axis(1, 0.0), 1, GroupBy::Chunk)).await.unwrap();
    assert!(hits[0].highlights.is_empty());
}

#[tokio::test]
async fn created_at_is_kept_across_versions_and_filters_on_the_first_one() {
    let t = TestStore::new().await;
    put(&t, version("t1", "doc", 1, 1, json!({})), vec![text_chunk("t1", "doc", 0, "first words", axis(0, 0.0), "en")])
        .await;
    t.exec("UPDATE documents SET created_at = '2020-01-01Z', updated_at = '2020-01-01Z'").await;
    let mut second = text_chunk("t1", "doc", 0, "second words", axis(0, 0.0), "en");
    second.version = 2;
    t.store.upsert_chunks(&[second]).await.unwrap();
    t.store.commit_version(&version("t1", "doc", 2, 1, json!({}))).await.unwrap();
    assert_eq!(t.scalar("SELECT extract(year FROM created_at)::bigint FROM documents").await, 2020);
    assert!(t.scalar("SELECT extract(year FROM updated_at)::bigint FROM documents").await > 2020);
    let since_2021 = SearchFilter { created_after_unix_ms: Some(1_609_459_200_000), ..SearchFilter::default() };
    let search =
        SearchRequest { filter: since_2021, ..request(SearchMode::Keyword, "words", vec![], 5, GroupBy::Chunk) };
    assert!(t.store.search("t1", &search).await.unwrap().is_empty());
    let hits = t.store.search("t1", &request(SearchMode::Keyword, "second", vec![], 5, GroupBy::Chunk)).await.unwrap();
    assert_eq!(ids(&hits), [("doc", 0)]);
    assert!(
        t.store
            .search("t1", &request(SearchMode::Keyword, "first", vec![], 5, GroupBy::Chunk))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Migrations 5 and 7 on a database that already holds chunks and documents: they get their
/// tsvector and created_at.
#[tokio::test]
async fn the_migration_backfills_existing_rows() {
    let t = TestStore::new().await;
    t.exec(
        "ALTER TABLE chunks DROP COLUMN search_text; DROP TEXT SEARCH CONFIGURATION millrace_english;
         DROP TEXT SEARCH DICTIONARY millrace_english_stem; ALTER TABLE documents DROP COLUMN created_at;
         DELETE FROM millrace_migrations WHERE version IN (5, 7)",
    )
    .await;
    let old = "An older chunk about lifetimes.";
    put(&t, version("t1", "old", 1, 1, json!({})), vec![text_chunk("t1", "old", 0, old, axis(0, 0.0), "en")]).await;
    t.store.migrate().await.unwrap();
    let hits =
        t.store.search("t1", &request(SearchMode::Keyword, "lifetime", vec![], 5, GroupBy::Chunk)).await.unwrap();
    assert_eq!(ids(&hits), [("old", 0)]);
    assert_eq!(t.scalar("SELECT count(*) FROM documents WHERE created_at = updated_at").await, 1);
}

/// Each chunk's `search_text` by language: English parses once (every word's stem, stop words
/// kept), other stemmers keep their words as written too, and `simple` words appear once.
#[tokio::test]
async fn english_chunks_parse_once_and_other_stemmed_languages_keep_their_words_as_written() {
    let t = TestStore::new().await;
    let chunks = [
        ("en", "The running dogs were barking at or_insert.", "en"),
        ("de", "Die Häuser sind alt.", "de"),
        ("und", "cargo yank E0499", "xx"),
    ];
    for (i, (doc, text, language)) in chunks.into_iter().enumerate() {
        put(&t, version("t1", doc, 1, 1, json!({})), vec![text_chunk("t1", doc, 0, text, axis(i, 0.0), language)])
            .await;
    }
    let stored = t.text_rows("SELECT document_id || ' ' || search_text::text FROM chunks ORDER BY document_id").await;
    assert_eq!(
        stored,
        [
            "de 'alt':4,8 'die':5 'haus':2 'häuser':6 'sind':7",
            "en 'at':6 'bark':5 'dog':3 'insert':8 'or':7 'run':2 'the':1 'were':4",
            "und 'cargo':1 'e0499':3 'yank':2",
        ]
    );
}

/// Migration 7 on chunks written under migration 5 (two parses for every chunk): their
/// `search_text` is computed again, and keyword search finds them as before.
#[tokio::test]
async fn migration_7_computes_existing_chunks_search_text_again() {
    let t = TestStore::new().await;
    t.exec(
        "ALTER TABLE chunks DROP COLUMN search_text; DROP TEXT SEARCH CONFIGURATION millrace_english;
         DROP TEXT SEARCH DICTIONARY millrace_english_stem; DELETE FROM millrace_migrations WHERE version = 7",
    )
    .await;
    t.exec(include_str!("../../migrations/0005_full_text.sql")).await;
    let text = "The running dogs were barking.";
    put(&t, version("t1", "old", 1, 1, json!({})), vec![text_chunk("t1", "old", 0, text, axis(0, 0.0), "en")]).await;
    let search_text = || t.text_rows("SELECT search_text::text FROM chunks WHERE document_id = 'old'");
    assert!(search_text().await[0].contains("'running'"), "migration 5 keeps the words as written");
    t.store.migrate().await.unwrap();
    assert_eq!(search_text().await, ["'bark':5 'dog':3 'run':2 'the':1 'were':4"]);
    for query in ["barks", "\"were barking\""] {
        let hits = t.store.search("t1", &request(SearchMode::Keyword, query, vec![], 5, GroupBy::Chunk)).await.unwrap();
        assert_eq!(ids(&hits), [("old", 0)], "{query}");
    }
}

#[tokio::test]
async fn invalid_searches_are_permanent_invalid_input() {
    let t = TestStore::new().await;
    let bad = [
        request(SearchMode::Keyword, "  ", vec![], 5, GroupBy::Chunk),
        request(SearchMode::Hybrid, "", axis(0, 0.0), 5, GroupBy::Chunk),
        request(SearchMode::Hybrid, "words", vec![], 5, GroupBy::Chunk),
        request(SearchMode::Vector, "words", vec![], 5, GroupBy::Chunk),
        request(SearchMode::Vector, "", vec![1.0, f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 5, GroupBy::Chunk),
        request(SearchMode::Keyword, "words", vec![], 1001, GroupBy::Chunk),
        SearchRequest { vector_weight: -1.0, ..request(SearchMode::Hybrid, "w", axis(0, 0.0), 5, GroupBy::Chunk) },
        SearchRequest { keyword_weight: f32::NAN, ..request(SearchMode::Hybrid, "w", axis(0, 0.0), 5, GroupBy::Chunk) },
        SearchRequest {
            filter: SearchFilter {
                created_after_unix_ms: Some(10),
                created_before_unix_ms: Some(10),
                ..Default::default()
            },
            ..request(SearchMode::Keyword, "w", vec![], 5, GroupBy::Chunk)
        },
        SearchRequest {
            filter: SearchFilter {
                updated_after_unix_ms: Some(20),
                updated_before_unix_ms: Some(10),
                ..Default::default()
            },
            ..request(SearchMode::Keyword, "w", vec![], 5, GroupBy::Chunk)
        },
        SearchRequest {
            filter: SearchFilter { metadata: Some(json!("x")), ..Default::default() },
            ..request(SearchMode::Keyword, "w", vec![], 5, GroupBy::Chunk)
        },
    ];
    for search in bad {
        let err = t.store.search("t1", &search).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)) && !err.is_retryable(), "{search:?}: {err:?}");
    }
    let err = t.store.search("t1", &request(SearchMode::Vector, "", vec![1.0], 5, GroupBy::Chunk)).await.unwrap_err();
    assert!(matches!(err, StoreError::DimensionMismatch { .. }));
    let err = t.store.search("", &request(SearchMode::Keyword, "w", vec![], 5, GroupBy::Chunk)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)));
    // A keyword search needs no vector, a vector search no text; top_k 0 finds nothing.
    assert!(t.store.search("t1", &request(SearchMode::Keyword, "w", vec![], 5, GroupBy::Chunk)).await.is_ok());
    assert!(
        t.store
            .search("t1", &request(SearchMode::Vector, "", axis(0, 0.0), 0, GroupBy::Chunk))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Ranking is bounded to a cap of matches per half of the query; the precise half (all the
/// words) is taken on its own, so an exact sentence is found even when a common word of it
/// matches far more chunks than the cap, all stored before it.
#[tokio::test]
async fn an_exact_sentence_is_found_among_more_common_word_matches_than_are_ranked() {
    let t = TestStore::new().await;
    let crowd: Vec<ChunkRow> = (0..1200)
        .map(|i| text_chunk("t1", "crowd", i, &format!("python notes number {i}, order of things"), axis(0, 0.0), "en"))
        .collect();
    put(&t, version("t1", "crowd", 1, 1200, json!({})), crowd).await;
    let sentence = "Python dictionaries keep insertion order since version 3.7.";
    put(&t, version("t1", "dict", 1, 1, json!({})), vec![text_chunk("t1", "dict", 0, sentence, axis(5, 0.0), "en")])
        .await;
    for group_by in [GroupBy::Chunk, GroupBy::Document] {
        let search = request(SearchMode::Keyword, "python dictionaries keep insertion order", vec![], 1, group_by);
        let hits = t.store.search("t1", &search).await.unwrap();
        assert_eq!(ids(&hits), [("dict", 0)], "{group_by:?}");
    }
}

/// Once ANALYZE has seen that a word is in most chunks, the broad query's scan leaves it out
/// (it would visit most of the table): the rare word of a query still decides, and a query of
/// common words alone still finds chunks holding all of them.
#[tokio::test]
async fn common_words_are_left_out_of_the_broad_scan_but_still_match() {
    let t = TestStore::new().await;
    let crowd: Vec<ChunkRow> = (0..300)
        .map(|i| text_chunk("t1", "crowd", i, &format!("common filler words, line {i}"), axis(0, 0.0), "en"))
        .collect();
    put(&t, version("t1", "crowd", 1, 300, json!({})), crowd).await;
    let rare = "a zeppelin among common filler words";
    put(&t, version("t1", "rare", 1, 1, json!({})), vec![text_chunk("t1", "rare", 0, rare, axis(1, 0.0), "en")]).await;
    let only_zeppelin = "zeppelin alone";
    put(&t, version("t1", "z", 1, 1, json!({})), vec![text_chunk("t1", "z", 0, only_zeppelin, axis(2, 0.0), "en")])
        .await;
    t.exec("ANALYZE chunks").await;
    let common = t
        .text_rows(
            "SELECT e FROM pg_stats, unnest(most_common_elems::text::text[], most_common_elem_freqs) AS x(e, f)
             WHERE tablename = 'chunks' AND attname = 'search_text' AND e IS NOT NULL AND f > 0.5",
        )
        .await;
    assert!(common.contains(&"filler".to_owned()), "{common:?}");
    // A new store reads the statistics at once.
    let store = millrace_storage::store::PgStore::connect(&t.config).await.unwrap();
    let hits =
        store.search("t1", &request(SearchMode::Keyword, "zeppelin filler", vec![], 5, GroupBy::Chunk)).await.unwrap();
    assert_eq!(ids(&hits)[..2], [("rare", 0), ("z", 0)], "all words first, then the rare one: {hits:?}");
    assert_eq!(hits.len(), 2, "the common word alone is not scanned for");
    let hits =
        store.search("t1", &request(SearchMode::Keyword, "common filler", vec![], 5, GroupBy::Chunk)).await.unwrap();
    assert_eq!(hits.len(), 5, "common words together still match (the precise half)");
}
