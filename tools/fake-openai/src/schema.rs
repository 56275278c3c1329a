//! Builds a deterministic JSON value that validates against a JSON Schema — the subset OpenAI's
//! structured outputs accept: objects, arrays, strings, numbers, integers, booleans, null,
//! enum, const, anyOf/oneOf/allOf and local `$ref`s — with strings taken from the prompt, so
//! that the answer changes with the input as a model's would.
//!
//! Not honoured: `pattern` (no general way to satisfy a regex) and `not`.

use std::cell::Cell;

use serde_json::{Map, Number, Value};

use millrace_encoder::hashing::hash64;

/// A hard stop for schemas that recurse with no way out.
const MAX_DEPTH: usize = 32;
/// Past this depth or node count, generate as little as the schema allows (no optional
/// properties, minItems items, the `null` branch of an anyOf), so recursive schemas end.
const LEAN_DEPTH: usize = 8;
const LEAN_NODES: usize = 1000;
/// Items per array when the schema does not force a count.
const PREFERRED_ITEMS: u64 = 3;

const STOPWORDS: &[&str] = &[
    "about", "after", "also", "been", "from", "have", "into", "just", "more", "much", "only", "over", "some", "such",
    "than", "that", "their", "them", "then", "there", "these", "they", "this", "very", "were", "what", "when", "where",
    "which", "while", "will", "with", "would", "your",
];

/// A value for `schema`, built from `words` (the words of the prompt, never empty).
pub fn generate(schema: &Value, words: &[String]) -> Value {
    let fallback = ["untitled".to_owned()];
    let words = if words.is_empty() { &fallback[..] } else { words };
    let generator =
        Generator { root: schema, words, salient: salient(words), seed: words.join(" "), nodes: Cell::new(0) };
    generator.value(schema, "", 0, 0)
}

/// Words worth using as keywords: long, not stopwords, each once, in order of appearance.
fn salient(words: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in words {
        let lower = word.to_lowercase();
        if lower.chars().count() >= 4 && !STOPWORDS.contains(&lower.as_str()) && !out.contains(&lower) {
            out.push(lower);
        }
    }
    if out.is_empty() {
        for word in words {
            let lower = word.to_lowercase();
            if !out.contains(&lower) {
                out.push(lower);
            }
        }
    }
    out
}

struct Generator<'a> {
    root: &'a Value,
    words: &'a [String],
    salient: Vec<String>,
    seed: String,
    nodes: Cell<usize>,
}

impl Generator<'_> {
    fn lean(&self, depth: usize) -> bool {
        depth > LEAN_DEPTH || self.nodes.get() > LEAN_NODES
    }

    /// A deterministic number that depends on the prompt, the property and the item index.
    fn hash(&self, name: &str, index: usize) -> u64 {
        hash64(&[&self.seed, name, &index.to_string()])
    }

    fn word(&self, i: usize) -> &str {
        self.words.get(i % self.words.len()).map_or("untitled", String::as_str)
    }

    fn words_from(&self, start: usize, count: usize) -> Vec<&str> {
        let count = count.min(self.words.len()).max(1);
        (0..count).map(|i| self.word(start + i)).collect()
    }

    fn value(&self, schema: &Value, name: &str, index: usize, depth: usize) -> Value {
        self.nodes.set(self.nodes.get() + 1);
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        let Some(map) = schema.as_object() else {
            // `true` (or anything that is not an object) accepts every value.
            return self.string(&Map::new(), name, index);
        };
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            return match reference.strip_prefix('#').and_then(|pointer| self.root.pointer(pointer)) {
                Some(target) => self.value(target, name, index, depth + 1),
                None => self.string(map, name, index),
            };
        }
        if let Some(constant) = map.get("const") {
            return constant.clone();
        }
        if let Some(Value::Array(options)) = map.get("enum")
            && !options.is_empty()
        {
            // Consecutive items take consecutive options, so arrays of enums stay unique.
            let pick = (self.hash(name, 0) as usize).wrapping_add(index) % options.len();
            return options.get(pick).cloned().unwrap_or(Value::Null);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(variants)) = map.get(key) {
                let chosen = if self.lean(depth) {
                    variants.iter().find(|v| is_null_schema(v)).or_else(|| variants.first())
                } else {
                    variants.iter().find(|v| !is_null_schema(v)).or_else(|| variants.first())
                };
                if let Some(variant) = chosen {
                    return self.value(variant, name, index, depth + 1);
                }
            }
        }
        if let Some(Value::Array(parts)) = map.get("allOf") {
            return self.value(&Value::Object(merge_all_of(map, parts)), name, index, depth + 1);
        }
        match type_of(map) {
            "object" => self.object(map, depth),
            "array" => self.array(map, name, depth),
            "integer" => self.integer(map, name, index),
            "number" => self.number(map, name, index),
            "boolean" => Value::Bool(self.hash(name, index).is_multiple_of(2)),
            "null" => Value::Null,
            _ => self.string(map, name, index),
        }
    }

    fn object(&self, map: &Map<String, Value>, depth: usize) -> Value {
        let required: Vec<&str> = match map.get("required") {
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let lean = self.lean(depth);
        let mut out = Map::new();
        if let Some(Value::Object(properties)) = map.get("properties") {
            for (key, schema) in properties {
                if lean && !required.contains(&key.as_str()) {
                    continue;
                }
                out.insert(key.clone(), self.value(schema, key, 0, depth + 1));
            }
        }
        for key in required {
            if !out.contains_key(key) {
                out.insert(key.to_owned(), self.string(&Map::new(), key, 0));
            }
        }
        Value::Object(out)
    }

    fn array(&self, map: &Map<String, Value>, name: &str, depth: usize) -> Value {
        let min = map.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        let max = map.get("maxItems").and_then(Value::as_u64).unwrap_or(u64::MAX);
        let preferred = if self.lean(depth) { 0 } else { PREFERRED_ITEMS };
        let mut out = Vec::new();
        // Tuples: `prefixItems` (2020-12) or an array-valued `items` (draft 4 to 2019-09).
        let (prefix, rest) = match (map.get("prefixItems"), map.get("items")) {
            (Some(Value::Array(prefix)), items) => (prefix.as_slice(), items),
            (None, Some(Value::Array(prefix))) => (prefix.as_slice(), map.get("additionalItems")),
            (_, items) => (&[][..], items),
        };
        let count = preferred.max(min).min(max).max(min).max(prefix.len() as u64);
        for i in 0..count as usize {
            let schema = match prefix.get(i) {
                Some(schema) => schema,
                None => match rest {
                    Some(Value::Bool(false)) => break,
                    Some(schema) => schema,
                    None => &Value::Bool(true),
                },
            };
            out.push(self.value(schema, name, i, depth + 1));
        }
        Value::Array(out)
    }

    fn string(&self, map: &Map<String, Value>, name: &str, index: usize) -> Value {
        let lower = name.to_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|needle| lower.contains(needle));
        let slug = self.salient.get(index % self.salient.len().max(1)).map_or("untitled", String::as_str);
        let mut text = match map.get("format").and_then(Value::as_str) {
            Some("date-time") => "2024-01-01T00:00:00Z".to_owned(),
            Some("date") => "2024-01-01".to_owned(),
            Some("time") => "00:00:00Z".to_owned(),
            Some("email") => format!("{}@example.com", ascii_slug(slug)),
            Some("uri" | "url" | "iri") => format!("https://example.com/{}", ascii_slug(slug)),
            Some("hostname") => "example.com".to_owned(),
            Some("ipv4") => "192.0.2.1".to_owned(),
            Some("ipv6") => "2001:db8::1".to_owned(),
            Some("uuid") => uuid_like(self.hash(name, index)),
            _ if has(&["title", "name", "heading", "headline", "subject", "label"]) => {
                title_case(&self.words_from(index * 8, 8))
            }
            _ if has(&["summary", "description", "abstract", "text", "content", "body", "explanation", "reason"]) => {
                sentence(&self.words_from(index * 24, 24))
            }
            _ if has(&["language", "lang", "locale"]) => "en".to_owned(),
            _ if has(&["keyword", "tag", "topic", "entit", "categor", "term", "concept"]) => {
                let round = index / self.salient.len().max(1);
                if round == 0 { slug.to_owned() } else { format!("{slug}-{round}") }
            }
            _ if has(&["url", "uri", "link", "href"]) => format!("https://example.com/{}", ascii_slug(slug)),
            _ if has(&["email"]) => format!("{}@example.com", ascii_slug(slug)),
            _ if has(&["date"]) => "2024-01-01".to_owned(),
            _ => self.words_from(index * 3, 3).join(" "),
        };
        let min = map.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
        if let Some(max) = map.get("maxLength").and_then(Value::as_u64) {
            text = text.chars().take(max as usize).collect::<String>().trim_end().to_owned();
        }
        let mut next = index;
        while text.chars().count() < min {
            let word = self.word(next);
            next += 1;
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(word);
        }
        if let Some(max) = map.get("maxLength").and_then(Value::as_u64) {
            text = text.chars().take(max as usize).collect();
        }
        Value::String(text)
    }

    fn integer(&self, map: &Map<String, Value>, name: &str, index: usize) -> Value {
        let (lower, upper) = bounds(map);
        let lo = lower.map(|(v, exclusive)| if exclusive { v.floor() + 1.0 } else { v.ceil() });
        let hi = upper.map(|(v, exclusive)| if exclusive { v.ceil() - 1.0 } else { v.floor() });
        let lower_name = name.to_lowercase();
        let mut value = match (lo, hi) {
            (Some(lo), Some(hi)) if hi > lo => lo + (self.hash(name, index) % ((hi - lo) as u64 + 1)) as f64,
            // Counts of words are what a document's metadata most often asks for.
            _ if lower_name.contains("count") || lower_name.contains("words") => self.words.len() as f64,
            _ => (self.words.len() + index) as f64,
        };
        if let Some(step) = map.get("multipleOf").and_then(Value::as_f64).filter(|m| *m >= 1.0) {
            value = (value / step).ceil() * step;
            if hi.is_some_and(|hi| value > hi) {
                value -= step;
            }
        }
        if let Some(lo) = lo {
            value = value.max(lo);
        }
        if let Some(hi) = hi {
            value = value.min(hi);
        }
        Value::Number(Number::from(value as i64))
    }

    fn number(&self, map: &Map<String, Value>, name: &str, index: usize) -> Value {
        let (lower, upper) = bounds(map);
        // In [0.25, 0.75): strictly inside any range, so exclusive bounds hold too.
        let fraction = 0.25 + (self.hash(name, index) % 1000) as f64 / 2000.0;
        let value = match (lower, upper) {
            (Some((lo, _)), Some((hi, _))) => lo + (hi - lo) * fraction,
            (Some((lo, _)), None) => lo + 1.0 + fraction,
            (None, Some((hi, _))) => hi - 1.0 - fraction,
            (None, None) => fraction,
        };
        let value = (value * 1000.0).round() / 1000.0;
        let value = match (lower, upper) {
            (Some((lo, _)), Some((hi, _))) if !(value > lo && value < hi) => (lo + hi) / 2.0,
            _ => value,
        };
        Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

/// The tightest lower and upper bound and whether each is exclusive, in either the draft-4
/// form (`exclusiveMinimum: true`) or the later one (`exclusiveMinimum: 3`).
type Bound = Option<(f64, bool)>;

fn bounds(map: &Map<String, Value>) -> (Bound, Bound) {
    let bound = |inclusive: &str, exclusive: &str, tighter: fn(f64, f64) -> bool| {
        let mut best: Bound = None;
        let flag = map.get(exclusive).and_then(Value::as_bool).unwrap_or(false);
        if let Some(v) = map.get(inclusive).and_then(Value::as_f64) {
            best = Some((v, flag));
        }
        if let Some(v) = map.get(exclusive).and_then(Value::as_f64)
            && best.is_none_or(|(current, _)| tighter(v, current) || v == current)
        {
            best = Some((v, true));
        }
        best
    };
    (bound("minimum", "exclusiveMinimum", |a, b| a > b), bound("maximum", "exclusiveMaximum", |a, b| a < b))
}

fn type_of(map: &Map<String, Value>) -> &str {
    match map.get("type") {
        Some(Value::String(kind)) => kind,
        Some(Value::Array(kinds)) => {
            let mut names = kinds.iter().filter_map(Value::as_str);
            let first = kinds.first().and_then(Value::as_str).unwrap_or("string");
            names.find(|kind| *kind != "null").unwrap_or(first)
        }
        _ if ["properties", "required", "additionalProperties"].iter().any(|k| map.contains_key(*k)) => "object",
        _ if ["items", "prefixItems", "minItems", "maxItems"].iter().any(|k| map.contains_key(*k)) => "array",
        _ if ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"]
            .iter()
            .any(|k| map.contains_key(*k)) =>
        {
            "number"
        }
        _ => "string",
    }
}

fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

/// `allOf` as one schema: properties and required lists united, other keys from the last part.
fn merge_all_of(map: &Map<String, Value>, parts: &[Value]) -> Map<String, Value> {
    let mut merged = map.clone();
    merged.remove("allOf");
    for part in parts.iter().filter_map(Value::as_object) {
        for (key, value) in part {
            match (key.as_str(), merged.get_mut(key), value) {
                ("properties", Some(Value::Object(into)), Value::Object(from)) => {
                    into.extend(from.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                ("required", Some(Value::Array(into)), Value::Array(from)) => into.extend(from.iter().cloned()),
                _ => {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
    }
    merged
}

fn title_case(words: &[&str]) -> String {
    words
        .iter()
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|first| first.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn sentence(words: &[&str]) -> String {
    let text = words.join(" ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

fn ascii_slug(word: &str) -> String {
    let slug: String = word.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase();
    if slug.is_empty() { "item".to_owned() } else { slug }
}

fn uuid_like(bits: u64) -> String {
    let hex = format!("{bits:016x}{:016x}", bits.rotate_left(17) ^ 0x5555_5555_5555_5555);
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn words(text: &str) -> Vec<String> {
        millrace_encoder::hashing::words(text).map(str::to_owned).collect()
    }

    #[test]
    fn a_metadata_schema_gets_every_property_with_its_type() {
        let schema = json!({
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "summary": {"type": "string", "maxLength": 40},
                "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 5, "uniqueItems": true},
                "language": {"type": "string", "enum": ["en", "fr", "de"]},
                "word_count": {"type": "integer", "minimum": 0},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "is_technical": {"type": "boolean"},
                "author": {"type": ["string", "null"]}
            },
            "required": ["title", "summary", "keywords", "language", "word_count", "confidence", "is_technical", "author"],
            "additionalProperties": false
        });
        let value = generate(&schema, &words("Redis streams carry work between the pipeline stages reliably"));
        assert_eq!(value["title"], "Redis Streams Carry Work Between The Pipeline Stages");
        assert!(value["summary"].as_str().unwrap().chars().count() <= 40);
        let keywords = value["keywords"].as_array().unwrap();
        assert_eq!(keywords.len(), 3);
        assert_eq!(keywords[0], "redis");
        assert!(["en", "fr", "de"].contains(&value["language"].as_str().unwrap()));
        assert_eq!(value["word_count"], 9);
        let confidence = value["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&confidence));
        assert!(value["is_technical"].is_boolean());
        assert!(value["author"].is_string());
    }

    #[test]
    fn output_is_deterministic_and_depends_on_the_input() {
        let schema = json!({"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]});
        let a = generate(&schema, &words("first document"));
        assert_eq!(a, generate(&schema, &words("first document")));
        assert_ne!(a, generate(&schema, &words("second document")));
    }

    #[test]
    fn refs_defs_and_recursion_terminate() {
        let schema = json!({
            "type": "object",
            "properties": {"root": {"$ref": "#/$defs/node"}},
            "required": ["root"],
            "$defs": {"node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                    "parent": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}
                },
                "required": ["name", "children", "parent"]
            }}
        });
        let value = generate(&schema, &words("a tree"));
        assert!(value["root"]["name"].is_string());
        assert!(value["root"]["children"].is_array());
        assert!(serde_json::to_string(&value).unwrap().len() < 2_000_000);
    }

    #[test]
    fn bounds_and_lengths_hold() {
        let schema = json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "exclusiveMinimum": 10, "maximum": 12},
                "m": {"type": "integer", "minimum": 0, "exclusiveMaximum": true, "maximum": 1},
                "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.001},
                "s": {"type": "string", "minLength": 30, "maxLength": 31},
                "t": {"type": "array", "items": {"type": "integer"}, "minItems": 7},
                "u": {"type": "array", "prefixItems": [{"type": "boolean"}, {"const": "k"}], "items": false},
                "c": {"allOf": [{"properties": {"a": {"type": "integer"}}}, {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]}
            }
        });
        let value = generate(&schema, &words("x"));
        let n = value["n"].as_i64().unwrap();
        assert!((11..=12).contains(&n));
        assert_eq!(value["m"], 0);
        let x = value["x"].as_f64().unwrap();
        assert!(x > 0.0 && x < 0.001, "{x}");
        let s = value["s"].as_str().unwrap().chars().count();
        assert!((30..=31).contains(&s), "{s}");
        assert_eq!(value["t"].as_array().unwrap().len(), 7);
        assert_eq!(value["u"], json!([value["u"][0].clone(), "k"]));
        assert!(value["c"]["a"].is_i64() && value["c"]["b"].is_boolean());
    }
}
