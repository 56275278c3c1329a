//! Hybrid search through the whole stack (issue 14): each mode, exact sentences and
//! identifiers found first, grouping by document, every filter (inside the index scans, so a
//! filtered search still fills `top_k`), highlights, the gRPC API and the command line.

use std::collections::BTreeSet;
use std::time::Duration;

use millrace_e2e::{Stack, StackOptions, highlighted, long_text};
use millrace_proto::v1::{SearchFilter, SearchGroupBy, SearchMode, SearchRequest};
use serde_json::{Value, json};

use crate::cli::{millrace, stderr};

const JOBS: Duration = Duration::from_secs(120);

fn results(answer: &Value) -> &Vec<Value> {
    answer["results"].as_array().unwrap_or_else(|| panic!("no results array: {answer}"))
}

fn ids(answer: &Value) -> Vec<&str> {
    results(answer).iter().map(|hit| hit["document_id"].as_str().unwrap()).collect()
}

fn id_set(answer: &Value) -> BTreeSet<&str> {
    ids(answer).into_iter().collect()
}

/// The shape every result has, whatever the mode: ranks 1..n in order, scores best first,
/// per-retriever scores that match the mode.
fn assert_well_formed(answer: &Value, mode: &str, group_by: &str) {
    assert_eq!(answer["mode"], mode, "{answer}");
    assert_eq!(answer["group_by"], group_by, "{answer}");
    let hits = results(answer);
    for (i, hit) in hits.iter().enumerate() {
        assert_eq!(hit["rank"].as_u64(), Some(i as u64 + 1), "{hit}");
        let (vector, keyword) = (&hit["scores"]["vector"], &hit["scores"]["keyword"]);
        match mode {
            "vector" => assert!(vector.is_f64() && keyword.is_null() && hit["ranks"]["keyword"].is_null(), "{hit}"),
            "keyword" => assert!(keyword.is_f64() && vector.is_null() && hit["ranks"]["vector"].is_null(), "{hit}"),
            _ => assert!(vector.is_f64() || keyword.is_f64(), "{hit}"),
        }
        for retriever in ["vector", "keyword"] {
            assert_eq!(hit["scores"][retriever].is_null(), hit["ranks"][retriever].is_null(), "{hit}");
        }
        assert!(hit["highlights"].is_array(), "{hit}");
        assert_eq!(hit.get("chunks").is_some(), group_by == "document", "{hit}");
    }
    let scores: Vec<f64> = hits.iter().map(|hit| hit["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "scores not best first: {scores:?}");
}

#[tokio::test]
async fn each_mode_finds_exact_text_first_groups_by_document_and_highlights_the_terms() {
    let mut stack =
        Stack::start(StackOptions::default().service_env("chunking", "MILLRACE_CHUNK_SIZE", 65)).await.unwrap();
    let jobs = vec![
        stack.ingest("guide", &long_text("lighthouse", 12)).await,
        // A short page about the same things, that vectors alone like for any lighthouse query.
        stack
            .ingest(
                "intro",
                "An introduction to the lighthouse. Every paragraph of the guide mentions the lighthouse, \
                 its marker words and its records.",
            )
            .await,
        stack
            .ingest(
                "errors",
                "Borrow checker errors. E0499 means a value was borrowed as mutable more than once at a time: \
                 the second mutable borrow of the lighthouse log is refused. Call or_insert on the entry instead.",
            )
            .await,
        stack.ingest("harbour", &long_text("harbour", 3)).await,
    ];
    stack.wait_for_jobs_completed(&jobs, JOBS).await;

    // Every mode answers in its own shape.
    for mode in ["hybrid", "vector", "keyword"] {
        for group_by in ["document", "chunk"] {
            let answer = stack
                .search_body(
                    &json!({"query": "lighthouse marker records", "top_k": 3, "mode": mode, "group_by": group_by}),
                )
                .await;
            assert_well_formed(&answer, mode, group_by);
            assert!(!results(&answer).is_empty(), "{mode} {group_by}: {answer}");
        }
    }
    // No mode named: hybrid, grouped by document.
    let answer = stack.search_body(&json!({"query": "lighthouse"})).await;
    assert_well_formed(&answer, "hybrid", "document");

    // An exact sentence of one chunk, and an identifier, find their document first.
    let sentence = "Each sentence in paragraph 7 mentions the lighthouse and the marker word item7.";
    for mode in ["hybrid", "keyword"] {
        let answer = stack.search_body(&json!({"query": sentence, "top_k": 3, "mode": mode})).await;
        let first = &results(&answer)[0];
        assert_eq!(first["document_id"], "guide", "{mode}: {answer}");
        assert!(first["text"].as_str().unwrap().contains("item7"), "{mode}: the chunk of the sentence: {answer}");
        if mode == "hybrid" {
            assert!(first["scores"]["keyword"].is_f64() && first["scores"]["vector"].is_f64(), "{first}");
        }
        for identifier in ["E0499", "or_insert"] {
            let answer = stack.search_body(&json!({"query": identifier, "top_k": 3, "mode": mode})).await;
            assert_eq!(ids(&answer).first(), Some(&"errors"), "{mode} {identifier}: {answer}");
        }
    }
    // A keyword search for a word nothing contains finds nothing (and is no error).
    let answer = stack.search_body(&json!({"query": "xylophone", "mode": "keyword"})).await;
    assert!(results(&answer).is_empty(), "{answer}");

    // Hybrid scores are reciprocal rank fusion of the two rankings, with the weights given.
    for (weights, vector_weight, keyword_weight) in
        [(json!(null), 1.0, 1.0), (json!({"vector": 2.0, "keyword": 0.5}), 2.0, 0.5)]
    {
        let answer = stack
            .search_body(&json!({"query": "lighthouse records", "top_k": 10, "group_by": "chunk", "weights": weights}))
            .await;
        for hit in results(&answer) {
            let part = |name: &str, weight: f64| hit["ranks"][name].as_f64().map_or(0.0, |rank| weight / (60.0 + rank));
            let expected = part("vector", vector_weight) + part("keyword", keyword_weight);
            let score = hit["score"].as_f64().unwrap();
            assert!((score - expected).abs() < 1e-4, "score {score}, expected {expected}: {hit}");
        }
    }

    // Grouped by document, top_k counts documents, each once, with its other matching chunks.
    let answer = stack.search_body(&json!({"query": "lighthouse marker item3", "top_k": 3})).await;
    let found = ids(&answer);
    assert_eq!(found.len(), 3, "{answer}");
    assert_eq!(id_set(&answer).len(), 3, "each document once: {answer}");
    let guide = results(&answer).iter().find(|hit| hit["document_id"] == "guide").expect("the guide is found");
    let others = guide["chunks"].as_array().unwrap();
    assert!(!others.is_empty(), "the guide's other matching chunks: {guide}");
    let mut indexes: BTreeSet<u64> = others.iter().map(|c| c["chunk_index"].as_u64().unwrap()).collect();
    assert_eq!(indexes.len(), others.len(), "no chunk twice: {guide}");
    assert!(indexes.insert(guide["chunk_index"].as_u64().unwrap()), "the best chunk is not among the others");
    let other_scores: Vec<f64> = others.iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert!(other_scores.windows(2).all(|w| w[0] >= w[1]), "best first: {other_scores:?}");
    assert!(other_scores[0] <= guide["score"].as_f64().unwrap(), "the hit is the best chunk: {guide}");
    // Grouped by chunk, one document may fill several places.
    let answer = stack.search_body(&json!({"query": "lighthouse marker item3", "top_k": 6, "group_by": "chunk"})).await;
    assert_eq!(results(&answer).len(), 6, "{answer}");
    assert!(ids(&answer).iter().filter(|id| **id == "guide").count() >= 2, "{answer}");

    // Highlights point at the query's words in the text, every occurrence.
    let answer = stack.search_body(&json!({"query": "E0499 lighthouse", "mode": "keyword", "group_by": "chunk"})).await;
    let errors = results(&answer).iter().find(|hit| hit["document_id"] == "errors").expect("found");
    let parts = highlighted(errors["text"].as_str().unwrap(), &errors["highlights"]);
    assert_eq!(parts.iter().filter(|p| p.as_str() == "E0499").count(), 1, "{parts:?} in {errors}");
    assert_eq!(parts.iter().filter(|p| p.to_lowercase() == "lighthouse").count(), 1, "{parts:?}");
    for hit in results(&answer) {
        let text = hit["text"].as_str().unwrap();
        let parts = highlighted(text, &hit["highlights"]);
        let occurrences = text.to_lowercase().matches("lighthouse").count() + text.matches("E0499").count();
        assert!(parts.len() >= occurrences, "every occurrence: {parts:?} in {text:?}");
        for part in &parts {
            let lower = part.to_lowercase();
            assert!(lower.starts_with("lighthous") || lower == "e0499", "{part:?} is not a query term: {hit}");
        }
    }
    // Highlights are code point offsets, not bytes: a text with multi-byte characters first.
    let job = stack.ingest("accents", "The café by the lighthouse serves crème brûlée to the lighthouse keeper.").await;
    stack.wait_for_jobs_completed(&[job], JOBS).await;
    let answer = stack
        .search_body(&json!({"query": "lighthouse", "mode": "keyword", "filter": {"document_id": "accents"}}))
        .await;
    let hit = &results(&answer)[0];
    assert_eq!(highlighted(hit["text"].as_str().unwrap(), &hit["highlights"]), ["lighthouse", "lighthouse"], "{hit}");

    // The gRPC API takes and returns the same.
    let mut grpc = stack.ingestion_grpc().await;
    let response = grpc
        .search(SearchRequest {
            query: "lighthouse".into(),
            top_k: 2,
            mode: SearchMode::Keyword as i32,
            group_by: SearchGroupBy::Chunk as i32,
            filter: Some(SearchFilter { document_ids: vec!["errors".into(), "intro".into()], ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let found: BTreeSet<&str> = response.results.iter().map(|hit| hit.document_id.as_str()).collect();
    assert_eq!(found, ["errors", "intro"].into(), "{response:?}");
    for (hit, rank) in response.results.iter().zip(1..) {
        assert_eq!((hit.rank, hit.keyword_rank), (rank, Some(rank)), "{hit:?}");
        assert!(hit.keyword_score.is_some() && hit.vector_score.is_none() && hit.vector_rank.is_none(), "{hit:?}");
        assert!(!hit.highlights.is_empty() && hit.other_chunks.is_empty(), "{hit:?}");
    }
    let grouped = grpc
        .search(SearchRequest { query: "lighthouse marker item3".into(), top_k: 3, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grouped.results.len(), 3);
    let guide = grouped.results.iter().find(|hit| hit.document_id == "guide").expect("the guide");
    assert!(!guide.other_chunks.is_empty() && guide.vector_score.is_some(), "{guide:?}");

    // Keyword mode never calls the embeddings service: it works with that service gone, while
    // the modes that need the query's vector say which service is missing.
    stack.service("embeddings").process.kill().unwrap();
    let answer = stack.search_body(&json!({"query": "E0499", "mode": "keyword"})).await;
    assert_eq!(ids(&answer), ["errors"], "{answer}");
    for mode in ["hybrid", "vector"] {
        let (status, body, _) = stack.post("/v1/search", &json!({"query": "E0499", "mode": mode})).await;
        assert_eq!(status, 503, "{mode}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("embeddings service"), "{body}");
    }
}

#[tokio::test]
async fn every_filter_holds_in_every_mode() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let text = |name: &str| format!("Filter corpus page {name}: the millrace weir, its sluice and the tailrace.");
    let doc = |id: &str, extra: Value| {
        let mut body = json!({"document_id": id, "content": text(id), "content_type": "text/plain"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    // Created before `t1`: a, b. Created after it: c, d; a is updated after it.
    let first = vec![
        stack
            .ingest_json(&doc(
                "a",
                json!({"metadata": {"team": "harbour", "year": 2024}, "source": "https://docs.example.com/guide/a"}),
            ))
            .await,
        stack
            .ingest_json(&doc(
                "b",
                json!({"metadata": {"team": "mill", "tags": ["faq", "water"]}, "content_type": "text/markdown",
                       "source": "https://docs.example.com/blog/b"}),
            ))
            .await,
    ];
    stack.wait_for_jobs_completed(&first, JOBS).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t1 = now_rfc3339(&stack).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = vec![
        stack
            .ingest_json(&doc(
                "c",
                json!({"metadata": {"team": "harbour"}, "collection": "archive", "source": "https://docs.example.com/guide/c"}),
            ))
            .await,
        stack.ingest_json(&doc("d", json!({"content_type": "text/markdown", "source": "file:///srv/d.md"}))).await,
        // A new version of a: created stays, updated moves.
        stack
            .ingest_json(&json!({"document_id": "a", "content": format!("{} Revised.", text("a")),
                                "metadata": {"team": "harbour", "year": 2024}, "source": "https://docs.example.com/guide/a"}))
            .await,
    ];
    stack.wait_for_jobs_completed(&second, JOBS).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t2 = now_rfc3339(&stack).await;

    let all: BTreeSet<&str> = ["a", "b", "c", "d"].into();
    let cases: Vec<(Value, Value, &[&str])> = vec![
        (json!({}), json!(null), &["a", "b", "c", "d"]),
        (json!({"document_id": "b"}), json!(null), &["b"]),
        (json!({"document_ids": ["a", "d", "missing"]}), json!(null), &["a", "d"]),
        (json!({"content_types": ["text/markdown"]}), json!(null), &["b", "d"]),
        (json!({"content_types": ["text/plain", "text/markdown"]}), json!(null), &["a", "b", "c", "d"]),
        (json!({"source_prefix": "https://docs.example.com/guide/"}), json!(null), &["a", "c"]),
        (json!({"source_prefix": "https://docs.example.com/"}), json!(null), &["a", "b", "c"]),
        (json!({"metadata": {"team": "harbour"}}), json!(null), &["a", "c"]),
        (json!({"metadata": {"team": "harbour", "year": 2024}}), json!(null), &["a"]),
        (json!({"metadata": {"tags": ["faq"]}}), json!(null), &["b"]),
        (json!({"metadata": {"year": "2024"}}), json!(null), &[]),
        (json!({"created_before": t1}), json!(null), &["a", "b"]),
        (json!({"created_after": t1}), json!(null), &["c", "d"]),
        (json!({"updated_after": t1}), json!(null), &["a", "c", "d"]),
        (json!({"updated_before": t1}), json!(null), &["b"]),
        (json!({"created_after": t1, "created_before": t2}), json!(null), &["c", "d"]),
        (json!({"updated_after": t2}), json!(null), &[]),
        (json!({}), json!(["archive"]), &["c"]),
        (json!({}), json!(["default"]), &["a", "b", "d"]),
        (json!({"metadata": {"team": "harbour"}, "content_types": ["text/plain"]}), json!(["default"]), &["a"]),
    ];
    for (filter, collections, expected) in &cases {
        let expected: BTreeSet<&str> = expected.iter().copied().collect();
        assert!(expected.is_subset(&all));
        for mode in ["hybrid", "vector", "keyword"] {
            for group_by in ["document", "chunk"] {
                let body = json!({"query": "millrace weir sluice tailrace", "top_k": 10, "mode": mode,
                                  "group_by": group_by, "filter": filter, "collections": collections});
                let answer = stack.search_body(&body).await;
                assert_eq!(id_set(&answer), expected, "{body} -> {answer}");
                assert_eq!(ids(&answer).len(), expected.len(), "one chunk each: {answer}");
            }
        }
    }

    // Malformed filters are refused with the usual error body.
    for (body, status) in [
        (json!({"query": "q", "mode": "semantic"}), 422),
        (json!({"query": "q", "group_by": "page"}), 422),
        (json!({"query": "q", "filter": {"created_after": "yesterday"}}), 422),
        (json!({"query": "q", "filter": {"content_types": ["text/x-unknown"]}}), 422),
        (json!({"query": "q", "weights": {"vector": -1}}), 422),
        (json!({"query": "q", "filter": {"colour": "red"}}), 400),
        (json!({"query": "q", "weights": [1, 2]}), 400),
    ] {
        let (got, answer, _) = stack.post("/v1/search", &body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }

    // The command line builds the same request from its flags.
    let output = millrace(
        &stack.api(),
        &[
            "search",
            "millrace weir",
            "--mode",
            "keyword",
            "--group-by",
            "chunk",
            "--collection",
            "default",
            "--collection",
            "archive",
            "--filter",
            "team=harbour",
            "--filter",
            "year=2024",
            "--filter",
            &format!("updated_after={t1}"),
            "--json",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((answer["mode"].as_str(), answer["group_by"].as_str()), (Some("keyword"), Some("chunk")));
    assert_eq!(ids(&answer), ["a"], "{answer}");
    let output = millrace(&stack.api(), &["search", "millrace weir", "--filter", "content_type=text/markdown"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().filter(|line| !line.starts_with("    ")).collect();
    assert_eq!(lines.len(), 2, "b and d: {text}");
    assert!(lines[0].starts_with(" 1. ") && lines[0].contains("vector") && lines[0].contains("keyword"), "{text}");
    let output = millrace(&stack.api(), &["search", "q", "--filter", "no-equals-sign"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = millrace(&stack.api(), &["search", "q", "--filter", "created_after=yesterday"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("filter.created_after"), "{}", stderr(&output));
}

/// Many close matches in one collection, a few far ones in another: the small collection's
/// matches lie far beyond the first candidates an HNSW scan would give, and a search limited to
/// it must still return `top_k` of them (the filter is part of the scan, not applied after).
#[tokio::test]
async fn a_filtered_search_fills_top_k_from_beyond_the_first_candidates() {
    let stack = Stack::start(StackOptions::default().service_env("chunking", "MILLRACE_CHUNK_SIZE", 65).service_env(
        "chunking",
        "MILLRACE_BATCH_SIZE",
        64,
    ))
    .await
    .unwrap();
    let mut jobs = Vec::new();
    for i in 0..4 {
        let body = json!({"document_id": format!("big-{i}"), "content": long_text(&format!("lighthouse keeper {i}"), 60),
                          "collection": "big"});
        jobs.push(stack.ingest_json(&body).await);
    }
    for i in 0..6 {
        let content = format!(
            "Small note {i} on orchards: apples, pears, plums, cherries, quinces, bees, hives, honey, wax, \
             blossom, pruning, grafting and the harvest, tended by a keeper of bees."
        );
        jobs.push(
            stack
                .ingest_json(&json!({"document_id": format!("small-{i}"), "content": content, "collection": "small"}))
                .await,
        );
    }
    stack.wait_for_jobs_completed(&jobs, JOBS).await;
    let (_, stats) = stack.get("/v1/documents/big-0").await;
    assert!(stats["chunk_count"].as_u64().unwrap() >= 40, "many chunks in the big collection: {stats}");

    let query = "lighthouse keeper records";
    // Unfiltered, the big collection's chunks are the nearest: the small one's lie beyond them.
    let answer = stack.search_body(&json!({"query": query, "top_k": 100, "mode": "vector", "group_by": "chunk"})).await;
    assert!(ids(&answer).iter().all(|id| id.starts_with("big-")), "{answer}");
    for mode in ["hybrid", "vector", "keyword"] {
        for (filter, collections) in [
            (json!({}), json!(["small"])),
            (json!({"document_ids": ["small-0", "small-1", "small-2", "small-3", "small-4", "small-5"]}), json!(null)),
        ] {
            for group_by in ["document", "chunk"] {
                let body = json!({"query": query, "top_k": 5, "mode": mode, "group_by": group_by,
                                  "collections": collections, "filter": filter});
                let answer = stack.search_body(&body).await;
                assert_eq!(results(&answer).len(), 5, "{body} -> {answer}");
                assert!(ids(&answer).iter().all(|id| id.starts_with("small-")), "{answer}");
            }
        }
    }
}

/// PostgreSQL's clock, which stamps the documents' versions, as RFC 3339.
async fn now_rfc3339(stack: &Stack) -> String {
    let row = stack
        .postgres()
        .await
        .query_one(r#"SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#, &[])
        .await
        .unwrap();
    row.get(0)
}
