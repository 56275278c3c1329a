//! Metadata without a model: a title from the first heading or line, the most frequent
//! content words as keywords, the language guessed from stop words, and the lead sentence
//! as a summary. Cheap, deterministic, and always available.

use std::collections::HashMap;

use serde_json::{Value, json};

const MAX_TITLE_CHARS: usize = 80;
const MAX_SUMMARY_CHARS: usize = 240;
const KEYWORDS: usize = 6;

/// Frequent function words per language, used both to guess the language and to keep them
/// out of the keywords.
const STOP_WORDS: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "the", "and", "of", "to", "a", "in", "is", "it", "that", "for", "on", "with", "as", "are", "this", "be",
            "by", "or", "from", "at", "an", "was", "not", "you", "we", "can", "its", "which", "have", "has", "but",
            "they", "their", "if", "all", "will", "more", "when", "there", "into", "these", "each", "also", "than",
        ],
    ),
    (
        "de",
        &[
            "der", "die", "und", "das", "ist", "nicht", "ein", "eine", "zu", "den", "mit", "sich", "auf", "für", "von",
            "dem", "des", "im", "auch", "wird",
        ],
    ),
    (
        "fr",
        &[
            "le", "la", "les", "et", "des", "est", "une", "un", "du", "en", "que", "qui", "dans", "pour", "pas", "sur",
            "au", "avec", "sont", "par",
        ],
    ),
    (
        "es",
        &[
            "el", "la", "los", "las", "y", "de", "que", "en", "un", "una", "es", "por", "con", "para", "del", "se",
            "no", "al", "lo", "como",
        ],
    ),
];

pub fn extract(text: &str) -> Value {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    json!({
        "extractor": "extractive",
        "title": title(text),
        "summary": lead_sentence(text),
        "keywords": keywords(&words),
        "language": language(&words),
    })
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    match cut.rfind(' ') {
        Some(space) if space > max / 2 => format!("{}…", &cut[..space]),
        _ => format!("{cut}…"),
    }
}

fn title(text: &str) -> String {
    let lines = || text.lines().map(str::trim).filter(|l| !l.is_empty());
    let heading = lines().find(|l| l.starts_with('#')).map(|l| l.trim_start_matches('#').trim());
    let first = heading.or_else(|| lines().next()).unwrap_or_default();
    truncate(first, MAX_TITLE_CHARS)
}

/// A line that reads like a heading: Markdown `#`, or short and without closing punctuation
/// (HTML and plain-text headings arrive as such lines).
fn is_heading(line: &str) -> bool {
    line.starts_with('#')
        || (line.chars().count() <= MAX_TITLE_CHARS && !line.ends_with(['.', '!', '?', ':', ';', ',']))
}

fn lead_sentence(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let body_lines: Vec<&str> = lines.iter().copied().filter(|l| !is_heading(l)).collect();
    let body = if body_lines.is_empty() { lines.join(" ") } else { body_lines.join(" ") };
    let end = body
        .char_indices()
        .find(|&(i, c)| matches!(c, '.' | '!' | '?') && body[i + c.len_utf8()..].starts_with(' '))
        .map(|(i, c)| i + c.len_utf8());
    truncate(end.map_or(body.as_str(), |e| &body[..e]), MAX_SUMMARY_CHARS)
}

fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.iter().any(|(_, words)| words.contains(&word))
}

fn keywords(words: &[String]) -> Vec<String> {
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (position, word) in words.iter().enumerate() {
        if word.chars().count() < 3 || is_stop_word(word) || word.chars().all(|c| c.is_numeric()) {
            continue;
        }
        counts.entry(word).or_insert((0, position)).0 += 1;
    }
    let mut ranked: Vec<(&str, (usize, usize))> = counts.into_iter().collect();
    // Most frequent first; ties go to the word seen first, so the result is deterministic.
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    ranked.into_iter().take(KEYWORDS).map(|(w, _)| w.to_owned()).collect()
}

fn language(words: &[String]) -> &'static str {
    let best = STOP_WORDS
        .iter()
        .map(|(lang, stops)| (*lang, words.iter().filter(|w| stops.contains(&w.as_str())).count()))
        .max_by_key(|(_, hits)| *hits);
    match best {
        Some((lang, hits)) if hits > 0 => lang,
        _ => "und",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_comes_from_the_first_heading() {
        let meta = extract("Intro line\n## Ownership rules\nEach value has an owner. It is dropped later.");
        assert_eq!(meta["title"], "Ownership rules");
        assert_eq!(meta["extractor"], "extractive");
    }

    #[test]
    fn headings_without_markup_are_not_the_summary() {
        let meta = extract("How a Grist Mill Grinds Grain\n\nA grist mill grinds grain into flour. It uses stones.");
        assert_eq!(meta["title"], "How a Grist Mill Grinds Grain");
        assert_eq!(meta["summary"], "A grist mill grinds grain into flour.");
    }

    #[test]
    fn summary_is_the_lead_sentence() {
        let meta = extract("Each value has an owner. It is dropped when the owner goes out of scope.");
        assert_eq!(meta["summary"], "Each value has an owner.");
    }

    #[test]
    fn keywords_skip_stop_words_and_rank_by_frequency() {
        let meta = extract("The borrow checker checks borrows. The borrow checker is strict about borrow rules.");
        let keywords: Vec<&str> = meta["keywords"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(&keywords[..2], &["borrow", "checker"]);
        assert!(!keywords.contains(&"the"));
    }

    #[test]
    fn language_is_guessed_from_stop_words() {
        assert_eq!(extract("Der Hund und die Katze sind nicht im Haus.")["language"], "de");
        assert_eq!(extract("The dog and the cat are in the house.")["language"], "en");
        assert_eq!(extract("12345")["language"], "und");
    }
}
