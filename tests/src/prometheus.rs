//! A parser of the Prometheus text exposition format (version 0.0.4, what `/metrics` serves),
//! so tests can read counters by name and labels instead of searching the text.
//!
//! Written by hand: the crates that parse it pull in a date library and regexes for what is a
//! line-oriented format of a few rules (`# HELP`, `# TYPE`, `name{label="value",…} value`).

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A metric family as `# TYPE` and `# HELP` declare it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Family {
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub kind: String,
    pub help: Option<String>,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub families: BTreeMap<String, Family>,
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut scrape = Self::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            let fail = |what: &str| format!("line {}: {what}: {line}", number + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        let kind = kind.trim();
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                            return Err(fail("unknown metric type"));
                        }
                        scrape.families.entry(name.to_owned()).or_default().kind = kind.to_owned();
                    }
                    (Some("HELP"), Some(name), help) => {
                        let help = help.map(|h| unescape(h, false)).transpose().map_err(|e| fail(&e))?;
                        scrape.families.entry(name.to_owned()).or_default().help = help;
                    }
                    _ => {} // any other comment
                }
                continue;
            }
            scrape.samples.push(parse_sample(line).map_err(|e| fail(&e))?);
        }
        Ok(scrape)
    }

    /// The sum of every sample named `name` whose labels include all of `labels` (0 if none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether a sample named `name` with all of `labels` exists.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|value| value == v))
        })
    }

    /// Whether a query may name `series`: a family of this page, or the `_bucket`, `_sum` or
    /// `_count` series of one of its histograms (`_sum` and `_count` of a summary).
    pub fn exports(&self, series: &str) -> bool {
        if self.families.contains_key(series) {
            return true;
        }
        let part_of = |suffix: &str, kinds: &[&str]| {
            series
                .strip_suffix(suffix)
                .and_then(|base| self.families.get(base))
                .is_some_and(|f| kinds.contains(&&*f.kind))
        };
        part_of("_bucket", &["histogram"])
            || part_of("_sum", &["histogram", "summary"])
            || part_of("_count", &["histogram", "summary"])
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inside) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inside)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("a sample without a value")?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse::<f64>().map_err(|_| format!("bad value {number:?}"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// Parses `label="value",…}` and returns the labels and what follows the closing brace.
fn parse_labels(mut text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = text.find('=').ok_or("a label without a value")?;
        let key = text[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        text = text[eq + 1..].trim_start().strip_prefix('"').ok_or("a label value without quotes")?;
        let mut end = None;
        let mut escaped = false;
        for (i, c) in text.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or("an unterminated label value")?;
        labels.insert(key.to_owned(), unescape(&text[..end], true)?);
        text = text[end + 1..].trim_start();
        if let Some(after) = text.strip_prefix(',') {
            text = after;
        } else if !text.starts_with('}') {
            return Err("labels not separated by commas".into());
        }
    }
}

/// Label values escape `\\`, `\"` and `\n`; HELP text only `\\` and `\n`.
fn unescape(text: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            // Prometheus keeps an unknown escape as it is.
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => return Err("a trailing backslash".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP millrace_stage_messages_total Stream entries handled, by outcome.
# TYPE millrace_stage_messages_total counter
millrace_stage_messages_total{stage="metadata",outcome="ok"} 12
millrace_stage_messages_total{stage="storage",outcome="ok"} 3
millrace_stage_messages_total{stage="storage",outcome="retry"} 1 1712345678000

# TYPE millrace_stage_handler_duration_seconds histogram
millrace_stage_handler_duration_seconds_bucket{stage="storage",le="0.5"} 2
millrace_stage_handler_duration_seconds_bucket{stage="storage",le="+Inf"} 4
millrace_stage_handler_duration_seconds_sum{stage="storage"} 1.5e0
millrace_stage_handler_duration_seconds_count{stage="storage"} 4
# TYPE odd gauge
# HELP odd A help with a \\ backslash\nand a newline.
odd{path="C:\\dir",quote="say \"hi\"",line="a\nb",}   NaN
plain -Inf
"#;

    #[test]
    fn samples_are_read_by_name_and_labels() {
        let scrape = Scrape::parse(PAGE).unwrap();
        assert_eq!(scrape.value("millrace_stage_messages_total", &[]), 16.0);
        assert_eq!(scrape.value("millrace_stage_messages_total", &[("stage", "storage")]), 4.0);
        assert_eq!(scrape.value("millrace_stage_messages_total", &[("stage", "storage"), ("outcome", "ok")]), 3.0);
        assert_eq!(scrape.value("millrace_stage_messages_total", &[("stage", "chunking")]), 0.0);
        assert!(!scrape.has("millrace_stage_messages_total", &[("stage", "chunking")]));
        assert_eq!(scrape.value("millrace_stage_handler_duration_seconds_sum", &[]), 1.5);
        assert_eq!(
            scrape.families["millrace_stage_messages_total"].help.as_deref(),
            Some("Stream entries handled, by outcome.")
        );
        assert_eq!(scrape.value("plain", &[]), f64::NEG_INFINITY);
    }

    #[test]
    fn escapes_in_label_values_and_help_are_undone() {
        let scrape = Scrape::parse(PAGE).unwrap();
        let odd = scrape.samples.iter().find(|s| s.name == "odd").unwrap();
        assert_eq!(odd.labels["path"], r"C:\dir");
        assert_eq!(odd.labels["quote"], r#"say "hi""#);
        assert_eq!(odd.labels["line"], "a\nb");
        assert!(odd.value.is_nan());
        assert_eq!(scrape.families["odd"].help.as_deref(), Some("A help with a \\ backslash\nand a newline."));
    }

    #[test]
    fn histogram_series_count_as_exported_but_invented_names_do_not() {
        let scrape = Scrape::parse(PAGE).unwrap();
        assert!(scrape.exports("millrace_stage_handler_duration_seconds_bucket"));
        assert!(scrape.exports("millrace_stage_handler_duration_seconds_count"));
        assert!(scrape.exports("millrace_stage_messages_total"));
        assert!(!scrape.exports("millrace_stage_messages_total_bucket"));
        assert!(!scrape.exports("millrace_stage_messages"));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        for bad in [
            "m{a=\"1\" 2",
            "m{a=1} 2",
            "m{a=\"1\"} x",
            "m 1 2 3",
            "bad-name 1",
            "# TYPE m countr",
            "m{a=\"1\"b=\"2\"} 1",
        ] {
            let err = Scrape::parse(&format!("ok 1\n{bad}\n")).unwrap_err();
            assert!(err.starts_with("line 2:"), "{bad}: {err}");
        }
    }
}
