//! The heading structure of a Markdown text, so that each chunk can say which section it sits
//! in ("Chapter 4" › "What is ownership?"): searchers and the metadata model see the context a
//! chunk lost when it was cut out. Built with one pulldown-cmark pass per document.
//! It lives with the parsers, which also take a Markdown document's title from it; the
//! splitter reads the heading paths from here, so the dependency runs one way.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// Every heading's start (byte offset) and the path of headings down to it, in text order.
#[derive(Debug, Default)]
pub(crate) struct Outline {
    entries: Vec<(usize, Vec<String>)>,
}

impl Outline {
    pub fn of(markdown: &str) -> Self {
        let mut entries = Vec::new();
        let mut stack: Vec<(HeadingLevel, String)> = Vec::new();
        for (start, level, title) in headings(markdown) {
            // An empty heading (a lone `#`) names nothing; it does not close sections either.
            if title.is_empty() {
                continue;
            }
            while stack.last().is_some_and(|(open, _)| *open >= level) {
                stack.pop();
            }
            stack.push((level, title));
            entries.push((start, stack.iter().map(|(_, t)| t.clone()).collect()));
        }
        Self { entries }
    }

    /// The headings above byte `offset`, outermost first; a heading starting at `offset` counts.
    pub fn path_at(&self, offset: usize) -> &[String] {
        let index = self.entries.partition_point(|(start, _)| *start <= offset);
        match index.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some((_, path)) => path,
            None => &[],
        }
    }
}

/// A Markdown text's title: its first level-1 heading, else its first heading.
pub(crate) fn title(markdown: &str) -> Option<String> {
    let mut first = None;
    for (_, level, title) in headings(markdown) {
        if title.is_empty() {
            continue;
        }
        if level == HeadingLevel::H1 {
            return Some(title);
        }
        first.get_or_insert(title);
    }
    first
}

/// Each heading as (start byte, level, plain text), in order.
fn headings(markdown: &str) -> impl Iterator<Item = (usize, HeadingLevel, String)> + '_ {
    // The same extensions as text-splitter's MarkdownSplitter, so both see the same structure.
    let mut events = Parser::new_ext(markdown, Options::all()).into_offset_iter();
    std::iter::from_fn(move || {
        loop {
            let (event, range) = events.next()?;
            let Event::Start(Tag::Heading { level, .. }) = event else { continue };
            let mut text = String::new();
            for (event, _) in events.by_ref() {
                match event {
                    Event::End(TagEnd::Heading(_)) => break,
                    Event::Text(t) | Event::Code(t) | Event::InlineMath(t) => text.push_str(&t),
                    Event::SoftBreak | Event::HardBreak => text.push(' '),
                    _ => {}
                }
            }
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            return Some((range.start, level, text));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_heading_levels() {
        let text = "# Book\n\nintro\n\n## Chapter `4`\n\nbody\n\n### What *is* it?\n\nmore\n\n## Chapter 5\n\nend";
        let outline = Outline::of(text);
        assert!(outline.path_at(0).len() == 1 && outline.path_at(0)[0] == "Book");
        let at = |needle: &str| outline.path_at(text.find(needle).unwrap()).to_vec();
        assert_eq!(at("intro"), ["Book"]);
        assert_eq!(at("## Chapter `4`"), ["Book", "Chapter 4"]);
        assert_eq!(at("more"), ["Book", "Chapter 4", "What is it?"]);
        assert_eq!(at("end"), ["Book", "Chapter 5"]);
    }

    #[test]
    fn text_before_any_heading_has_no_path() {
        let outline = Outline::of("preface\n\nSetext\n======\n\nbody");
        assert!(outline.path_at(0).is_empty());
        assert_eq!(outline.path_at(9), ["Setext"]);
    }

    #[test]
    fn the_title_is_the_first_top_heading() {
        assert_eq!(title("## Intro\n\n# Real title\n"), Some("Real title".into()));
        assert_eq!(title("## Only second level\n"), Some("Only second level".into()));
        assert_eq!(title("no headings"), None);
    }
}
