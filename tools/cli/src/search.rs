//! `millrace search`: the request built from the command line's flags (`--filter key=value`
//! among them), and the results printed for a person, with each retriever's score and rank (and
//! the reranker's relevance when reranked).

use serde_json::{Map, Value, json};

use crate::api::Failure;

pub const MODES: [&str; 3] = ["hybrid", "vector", "keyword"];
pub const GROUP_BY: [&str; 2] = ["document", "chunk"];

/// `--filter` keys that are conditions of their own rather than metadata equalities.
const DOCUMENT_ID: &str = "document_id";
const CONTENT_TYPE: &str = "content_type";
const TIME_KEYS: [&str; 4] = ["created_after", "created_before", "updated_after", "updated_before"];
const SOURCE_PREFIX: &str = "source_prefix";

/// What `millrace search` was asked.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub query: &'a str,
    pub top_k: u32,
    pub mode: Option<&'a str>,
    pub group_by: Option<&'a str>,
    pub collections: &'a [String],
    pub filters: &'a [String],
    pub vector_weight: Option<f64>,
    pub keyword_weight: Option<f64>,
    /// None: the server's default.
    pub rerank: Option<bool>,
    pub rerank_candidates: Option<u32>,
}

/// The body of `POST /v1/search`. The server checks the values; only the `key=value` form of a
/// filter is checked here.
pub fn body(request: &Request<'_>) -> Result<Value, Failure> {
    let mut body = json!({ "query": request.query, "top_k": request.top_k });
    if let Some(mode) = request.mode {
        body["mode"] = json!(mode);
    }
    if let Some(group_by) = request.group_by {
        body["group_by"] = json!(group_by);
    }
    if !request.collections.is_empty() {
        body["collections"] = json!(request.collections);
    }
    let mut weights = Map::new();
    if let Some(w) = request.vector_weight {
        weights.insert("vector".into(), json!(w));
    }
    if let Some(w) = request.keyword_weight {
        weights.insert("keyword".into(), json!(w));
    }
    if !weights.is_empty() {
        body["weights"] = Value::Object(weights);
    }
    let filter = filter(request.filters)?;
    if !filter.is_empty() {
        body["filter"] = Value::Object(filter);
    }
    if let Some(rerank) = request.rerank {
        body["rerank"] = json!(rerank);
    }
    if let Some(candidates) = request.rerank_candidates {
        body["rerank_candidates"] = json!(candidates);
    }
    Ok(body)
}

/// `--filter key=value`s as the API's `filter` object: `document_id` and `content_type`
/// (repeatable: any of them), `source_prefix`, the four time bounds, and any other key (or
/// `metadata.KEY`, for a key that has one of those names) a metadata equality whose value is
/// JSON when it parses as JSON (`year=2024` is a number, `draft=true` a boolean, `year="2024"`
/// a string), else the text itself.
fn filter(filters: &[String]) -> Result<Map<String, Value>, Failure> {
    let mut filter = Map::new();
    let mut metadata = Map::new();
    let mut document_ids = Vec::new();
    let mut content_types = Vec::new();
    for item in filters {
        let (key, value) = item
            .split_once('=')
            .filter(|(key, _)| !key.is_empty())
            .ok_or_else(|| Failure::Usage(format!("--filter {item:?} is not of the form key=value")))?;
        match key {
            DOCUMENT_ID => document_ids.push(json!(value)),
            CONTENT_TYPE => content_types.push(json!(value)),
            SOURCE_PREFIX => {
                filter.insert(key.to_owned(), json!(value));
            }
            time if TIME_KEYS.contains(&time) => {
                filter.insert(key.to_owned(), json!(value));
            }
            _ => {
                let key = key.strip_prefix("metadata.").unwrap_or(key);
                if key.is_empty() {
                    return Err(Failure::Usage(format!("--filter {item:?} names no metadata key")));
                }
                let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
                metadata.insert(key.to_owned(), value);
            }
        }
    }
    if !document_ids.is_empty() {
        filter.insert("document_ids".into(), Value::Array(document_ids));
    }
    if !content_types.is_empty() {
        filter.insert("content_types".into(), Value::Array(content_types));
    }
    if !metadata.is_empty() {
        filter.insert("metadata".into(), Value::Object(metadata));
    }
    Ok(filter)
}

/// One block per result: its rank, score, where it is, the reranker's relevance, each
/// retriever's score and rank, its other matching chunks, and the start of its text.
pub fn print_human(answer: &Value) {
    let results = answer["results"].as_array().map(Vec::as_slice).unwrap_or_default();
    if results.is_empty() {
        println!("no results");
        return;
    }
    for hit in results {
        println!("{}", headline(hit));
        let snippet: String = hit["text"].as_str().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
        println!("    {}", snippet.chars().take(160).collect::<String>());
    }
}

fn headline(hit: &Value) -> String {
    let retriever = |name: &str| {
        let score = hit["scores"][name].as_f64()?;
        let rank = hit["ranks"][name].as_u64().map(|rank| format!(" #{rank}")).unwrap_or_default();
        Some(format!("{name} {score:.3}{rank}"))
    };
    let found: Vec<String> = ["vector", "keyword"].into_iter().filter_map(retriever).collect();
    let mut line = format!(
        "{:>2}. {:.4}  {}#{}",
        hit["rank"].as_u64().unwrap_or(0),
        hit["score"].as_f64().unwrap_or(0.0),
        hit["document_id"].as_str().unwrap_or(""),
        hit["chunk_index"],
    );
    if let Some(collection) = hit["collection"].as_str().filter(|c| !c.is_empty()) {
        line.push_str(&format!(" [{collection}]"));
    }
    if let Some(relevance) = hit["scores"]["rerank"].as_f64() {
        line.push_str(&format!("  relevance {relevance}/10"));
    }
    if !found.is_empty() {
        line.push_str(&format!("  ({})", found.join(", ")));
    }
    let others = hit["chunks"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !others.is_empty() {
        let listed: Vec<String> = others.iter().map(|chunk| format!("#{}", chunk["chunk_index"])).collect();
        line.push_str(&format!("  +{} more: {}", others.len(), listed.join(" ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_make_the_request_body() {
        let collections = strings(&["eng", "hr"]);
        let filters = strings(&[
            "team=docs",
            "year=2024",
            "draft=false",
            "code=\"0042\"",
            "document_id=a",
            "document_id=b",
            "content_type=text/markdown",
            "source_prefix=https://docs.example.com/a=b",
            "created_after=2026-01-01T00:00:00Z",
            "metadata.document_id=x",
        ]);
        let request = Request {
            query: "q",
            top_k: 3,
            mode: Some("keyword"),
            group_by: Some("chunk"),
            collections: &collections,
            filters: &filters,
            vector_weight: None,
            keyword_weight: Some(2.0),
            rerank: Some(true),
            rerank_candidates: Some(30),
        };
        assert_eq!(
            body(&request).unwrap(),
            json!({
                "query": "q", "top_k": 3, "mode": "keyword", "group_by": "chunk",
                "collections": ["eng", "hr"],
                "weights": {"keyword": 2.0},
                "filter": {
                    "document_ids": ["a", "b"],
                    "content_types": ["text/markdown"],
                    "source_prefix": "https://docs.example.com/a=b",
                    "created_after": "2026-01-01T00:00:00Z",
                    "metadata": {"team": "docs", "year": 2024, "draft": false, "code": "0042", "document_id": "x"},
                },
                "rerank": true, "rerank_candidates": 30,
            })
        );
        let plain = Request { query: "q", top_k: 5, ..Default::default() };
        assert_eq!(body(&plain).unwrap(), json!({"query": "q", "top_k": 5}));
    }

    #[test]
    fn a_filter_must_be_key_equals_value() {
        for bad in ["team", "=docs", "metadata.=x"] {
            let filters = strings(&[bad]);
            let request = Request { query: "q", top_k: 5, filters: &filters, ..Default::default() };
            assert!(matches!(body(&request), Err(Failure::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn a_result_shows_each_retriever() {
        let hit = json!({
            "rank": 1, "score": 0.0325, "document_id": "guide.md", "chunk_index": 2, "collection": "default",
            "scores": {"vector": 0.81234, "keyword": null}, "ranks": {"vector": 1, "keyword": null},
            "chunks": [{"chunk_index": 5}, {"chunk_index": 0}],
        });
        assert_eq!(headline(&hit), " 1. 0.0325  guide.md#2 [default]  (vector 0.812 #1)  +2 more: #5 #0");
        let reranked = json!({
            "rank": 2, "score": 0.5, "document_id": "a", "chunk_index": 0,
            "scores": {"vector": null, "keyword": 0.25, "rerank": 7.0}, "ranks": {"vector": null, "keyword": 4},
        });
        assert_eq!(headline(&reranked), " 2. 0.5000  a#0  relevance 7/10  (keyword 0.250 #4)");
    }
}
