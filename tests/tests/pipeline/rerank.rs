//! The LLM reranker of search (issue 14) through the whole stack: the fused results ordered by
//! the gateway's chat model (the fake upstream's, whose schema-shaped answers are deterministic
//! for a prompt), in one chat request per search; off unless asked; and its failures answered
//! as errors that name it, never as the fused order.

use std::time::Duration;

use millrace_e2e::{Stack, StackOptions};
use millrace_proto::v1::{SearchGroupBy, SearchRequest};
use serde_json::{Value, json};

use crate::cli::{millrace, stderr};

const JOBS: Duration = Duration::from_secs(120);

/// A stack whose only chat requests are the reranker's: metadata is extractive.
fn options(upstream_flags: &[&str]) -> StackOptions {
    StackOptions::default().upstream(upstream_flags).service_env("metadata", "MILLRACE_METADATA_PROVIDER", "extractive")
}

/// Chat completions the fake upstream has been asked for so far.
async fn chat_requests(stack: &Stack) -> u64 {
    stack.fake_stats().await["by_endpoint"]["chat_completions"]["requests"].as_u64().unwrap_or(0)
}

fn results(answer: &Value) -> &Vec<Value> {
    answer["results"].as_array().unwrap_or_else(|| panic!("no results array: {answer}"))
}

/// A result's identity: its document and chunk.
fn key(hit: &Value) -> (String, u64) {
    (hit["document_id"].as_str().unwrap().to_owned(), hit["chunk_index"].as_u64().unwrap())
}

async fn ingest_corpus(stack: &Stack) {
    let pages = [
        ("weir", "The weir holds back the river so the mill race fills; its sluice gates open at dawn."),
        ("wheel", "An undershot water wheel turns when the mill race runs fast beneath its paddles."),
        ("grain", "Millstones grind the grain to flour; the miller dresses the stones each spring."),
        ("eels", "Eel traps were set in the tail race below the mill, where the river water rejoins its bed."),
        ("ledger", "The mill's ledger records each sack of flour, the river's level and the miller's wages."),
        ("bridge", "A stone bridge crosses the river above the weir, built when the mill was rebuilt."),
    ];
    let mut jobs = Vec::new();
    for (id, text) in pages {
        jobs.push(stack.ingest(id, text).await);
    }
    stack.wait_for_jobs_completed(&jobs, JOBS).await;
}

#[tokio::test]
async fn a_reranked_search_is_ordered_by_the_models_relevance_in_one_chat_request() {
    let stack = Stack::start(options(&[])).await.unwrap();
    ingest_corpus(&stack).await;
    let query = "how does the river water reach the mill";
    let before = chat_requests(&stack).await;

    // Off by default: the fused order, no chat request, no rerank score.
    let fused = stack.search_body(&json!({"query": query, "top_k": 10, "group_by": "chunk"})).await;
    assert_eq!(fused["reranked"], false, "{fused}");
    assert_eq!(results(&fused).len(), 6, "every page: {fused}");
    assert!(results(&fused).iter().all(|hit| hit["scores"].get("rerank").is_none()), "{fused}");
    assert_eq!(chat_requests(&stack).await, before, "no chat request without rerank");

    // Reranked: the same results, each with the model's relevance, in non-increasing order of
    // it, ties in fused order; the retrievers' scores and ranks kept; one chat request.
    let body = json!({"query": query, "top_k": 10, "group_by": "chunk", "rerank": true});
    let reranked = stack.search_body(&body).await;
    assert_eq!(chat_requests(&stack).await, before + 1, "one chat request for the search");
    assert_eq!(reranked["reranked"], true, "{reranked}");
    let hits = results(&reranked);
    let relevance: Vec<f64> = hits
        .iter()
        .map(|hit| hit["scores"]["rerank"].as_f64().unwrap_or_else(|| panic!("no rerank score: {hit}")))
        .collect();
    assert!(relevance.iter().all(|r| (0.0..=10.0).contains(r)), "{relevance:?}");
    assert!(relevance.windows(2).all(|w| w[0] >= w[1]), "not by relevance: {relevance:?}");
    let fused_order: Vec<(String, u64)> = results(&fused).iter().map(key).collect();
    let position = |hit: &Value| fused_order.iter().position(|k| *k == key(hit)).unwrap();
    let mut expected: Vec<&Value> = results(&fused).iter().collect();
    expected.sort_by(|a, b| {
        let relevance_of = |hit: &Value| relevance[hits.iter().position(|h| key(h) == key(hit)).unwrap()];
        relevance_of(b).total_cmp(&relevance_of(a)).then(position(a).cmp(&position(b)))
    });
    let got: Vec<(String, u64)> = hits.iter().map(key).collect();
    assert_eq!(got, expected.iter().map(|hit| key(hit)).collect::<Vec<_>>(), "ties keep the fused order");
    assert_ne!(got, fused_order, "the fake's scores reorder these six pages: {reranked}");
    for (hit, rank) in hits.iter().zip(1..) {
        assert_eq!(hit["rank"], rank, "{hit}");
        let in_fused = &results(&fused)[position(hit)];
        assert_eq!((&hit["ranks"], &hit["score"]), (&in_fused["ranks"], &in_fused["score"]), "{hit}");
        assert_eq!(hit["scores"]["vector"], in_fused["scores"]["vector"], "{hit}");
    }
    // The same prompt, the same answer: the fake is deterministic, as a model at temperature 0
    // nearly is.
    assert_eq!(stack.search_body(&body).await["results"], reranked["results"]);

    // top_k smaller than the candidates: the model orders them all, the best top_k are kept.
    let top = stack.search_body(&json!({"query": query, "top_k": 2, "group_by": "chunk", "rerank": true})).await;
    assert_eq!(
        results(&top).iter().map(key).collect::<Vec<_>>(),
        got[..2].to_vec(),
        "the two most relevant of the 20 candidates: {top}"
    );
    // Fewer candidates than results found: only the fused top 3 are ordered, and top_k of them
    // kept; at least top_k are candidates whatever rerank_candidates says.
    let three = stack
        .search_body(&json!({"query": query, "top_k": 3, "group_by": "chunk", "rerank": true, "rerank_candidates": 1}))
        .await;
    let fused_three = stack.search_body(&json!({"query": query, "top_k": 3, "group_by": "chunk"})).await;
    let mut found: Vec<(String, u64)> = results(&three).iter().map(key).collect();
    let mut fused_top: Vec<(String, u64)> = results(&fused_three).iter().map(key).collect();
    found.sort();
    fused_top.sort();
    assert_eq!(found, fused_top, "the fused top 3, reordered: {three}");

    // gRPC: the same fields.
    let mut grpc = stack.ingestion_grpc().await;
    let response = grpc
        .search(SearchRequest {
            query: query.into(),
            top_k: 10,
            group_by: SearchGroupBy::Chunk as i32,
            rerank: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.reranked);
    let grpc_relevance: Vec<f64> =
        response.results.iter().map(|hit| f64::from(hit.rerank_score.expect("a rerank score"))).collect();
    assert_eq!(grpc_relevance, relevance);
    let plain = grpc.search(SearchRequest { query: query.into(), ..Default::default() }).await.unwrap().into_inner();
    assert!(!plain.reranked && plain.results.iter().all(|hit| hit.rerank_score.is_none()), "{plain:?}");

    // The command line asks with --rerank and shows each result's relevance.
    let output = millrace(&stack.api(), &["search", query, "--rerank", "--group-by", "chunk", "--json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["reranked"], true, "{answer}");
    let output = millrace(&stack.api(), &["search", query, "--rerank", "--top-k", "2"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.lines().next().is_some_and(|line| line.contains("relevance ")), "{text}");

    let metrics = stack.scrape("ingestion").await;
    let calls = metrics.value("millrace_ingestion_rerank_duration_seconds_count", &[("outcome", "ok")]);
    let searches = chat_requests(&stack).await - before;
    assert_eq!(calls, searches as f64, "one timed call per reranked search");
}

#[tokio::test]
async fn the_rerankers_failures_are_errors_that_name_it() {
    // Every chat answer of this fake is cut off half-way: JSON no schema accepts.
    let stack = Stack::start(options(&["--malformed-json-rate", "1"])).await.unwrap();
    ingest_corpus(&stack).await;
    let query = "the mill race";

    // Out of range, refused before any call.
    let before = chat_requests(&stack).await;
    for candidates in [json!(0), json!(51), json!(2.5)] {
        let body = json!({"query": query, "rerank": true, "rerank_candidates": candidates});
        let (status, answer, _) = stack.post("/v1/search", &body).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], "invalid_argument", "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("rerank_candidates"), "{answer}");
    }
    let (status, answer, _) = stack.post("/v1/search", &json!({"query": query, "rerank": "yes"})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(chat_requests(&stack).await, before);

    // An answer that cannot be used is a 502, not the fused order. The gateway answered, so the
    // breaker toward it stays closed however many there are.
    for _ in 0..6 {
        let (status, answer, _) = stack.post("/v1/search", &json!({"query": query, "rerank": true})).await;
        assert_eq!(status, 502, "{answer}");
        assert_eq!(answer["error"]["code"], "bad_gateway", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("reranker: the model's answer is unusable"), "{message}");
    }
    assert_eq!(chat_requests(&stack).await, before + 6);
    // Without reranking, the same search answers.
    let (status, answer, _) = stack.post("/v1/search", &json!({"query": query})).await;
    assert_eq!((status, &answer["reranked"]), (200, &json!(false)), "{answer}");

    // The upstream failing: 503 naming the reranker and the gateway; after a run of them the
    // breaker opens and answers at once, with Retry-After. Keyword searches, whose query is not
    // embedded (through the same failing upstream).
    let fake_port = stack.fake.as_ref().unwrap().1;
    let control = |body: Value| async move {
        let url = format!("http://127.0.0.1:{fake_port}/control");
        let response = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "POST /control {body}");
    };
    control(json!({"error_rate": 1.0})).await;
    let (status, answer, _) =
        stack.post("/v1/search", &json!({"query": query, "mode": "keyword", "rerank": true})).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("reranker: llm-gateway service"), "{message}");
    let mut opened = None;
    for _ in 0..10 {
        let (status, answer, headers) =
            stack.post("/v1/search", &json!({"query": query, "mode": "keyword", "rerank": true})).await;
        assert_eq!(status, 503, "{answer}");
        if answer["error"]["message"].as_str().unwrap().contains("circuit breaker llm-gateway is open") {
            opened = Some(headers);
            break;
        }
    }
    let headers = opened.expect("the breaker toward the gateway opens after a run of failures");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    control(json!({"error_rate": 0.0})).await;

    let metrics = stack.scrape("ingestion").await;
    assert!(metrics.value("millrace_ingestion_rerank_duration_seconds_count", &[("outcome", "error")]) >= 8.0);
    assert_eq!(metrics.value("millrace_ingestion_rerank_duration_seconds_count", &[("outcome", "ok")]), 0.0);
}
