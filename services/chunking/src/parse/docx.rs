//! DOCX: the body of `word/document.xml` as Markdown, so Word's structure guides the splitter
//! like HTML's does: paragraphs in order, heading styles (Title, Heading 1…6, or an outline
//! level) as `#` headings, list paragraphs as `- ` items, tables as rows of `cell | cell` text.
//!
//! A DOCX is a ZIP, so the input size limit says little about what it expands to: the entries
//! read are decompressed through one counter that stops at `MILLRACE_MAX_UNZIPPED_BYTES` (zip
//! bombs), and the Markdown written is capped at `MILLRACE_MAX_TEXT_BYTES` as it grows. Headings are found by style *name* from `styles.xml`
//! (style ids are localised: a German "Heading 1" has the id `berschrift1`).

use std::collections::HashMap;
use std::io::{BufReader, Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use zip::ZipArchive;
use zip::result::ZipError;

use super::{ParseError, ParseLimits, ParsedDocument};

pub(super) fn parse(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument, ParseError> {
    let mut archive = ZipArchive::new(Cursor::new(bytes))
        .map_err(|err| ParseError::DocxInvalid(format!("it is not a ZIP archive ({err})")))?;
    let mut budget = limits.max_unzipped_bytes;
    let styles = match open(&mut archive, "word/styles.xml", &mut budget)? {
        Some(xml) => read_styles(xml)?,
        None => HashMap::new(),
    };
    let core_title = match open(&mut archive, "docProps/core.xml", &mut budget)? {
        Some(xml) => read_core_title(xml)?,
        None => None,
    };
    let document = open(&mut archive, "word/document.xml", &mut budget)?
        .ok_or_else(|| ParseError::DocxInvalid("it has no word/document.xml (not a Word document?)".into()))?;
    let mut body = Body::new(&styles, limits.max_text_bytes);
    read_xml(document, |event| body.event(event))?;
    let title = core_title.or(body.title_paragraph).or(body.first_heading);
    Ok(ParsedDocument { text: body.out, markdown: true, page_starts: Vec::new(), title })
}

/// An entry's decompressed bytes, read through what is left of the budget.
struct Capped<R> {
    inner: R,
    remaining: u64,
    exceeded: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.remaining {
            self.exceeded = true;
            return Err(std::io::Error::other("decompression limit reached"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The whole entry `name`, decompressed within the budget (which it uses up); `None` if the
/// archive has no such entry.
fn open(archive: &mut ZipArchive<Cursor<&[u8]>>, name: &str, budget: &mut u64) -> Result<Option<Vec<u8>>, ParseError> {
    let limit = *budget;
    let entry = match archive.by_name(name) {
        Ok(entry) => entry,
        Err(ZipError::FileNotFound) => return Ok(None),
        Err(err) => return Err(ParseError::DocxInvalid(format!("cannot read {name}: {err}"))),
    };
    // Entries are small next to the budget unless they are bombs; reading them whole keeps
    // the XML reader simple, and the cap bounds the memory.
    let mut capped = Capped { inner: entry, remaining: limit, exceeded: false };
    let mut xml = Vec::new();
    let read = capped.read_to_end(&mut xml);
    if capped.exceeded {
        return Err(ParseError::DecompressionBomb { format: "DOCX", limit });
    }
    read.map_err(|err| match err.kind() {
        // Not the archive's fault as such: the parse child's memory limit was reached.
        std::io::ErrorKind::OutOfMemory => ParseError::OutOfMemory,
        _ => ParseError::DocxInvalid(format!("cannot decompress {name}: {err}")),
    })?;
    *budget = capped.remaining;
    Ok(Some(xml))
}

/// Feeds every event of `xml` to `handle`, until the end or an error.
fn read_xml(xml: Vec<u8>, mut handle: impl FnMut(Event<'_>) -> Result<(), ParseError>) -> Result<(), ParseError> {
    let mut reader = Reader::from_reader(BufReader::new(xml.as_slice()));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|err| ParseError::DocxInvalid(format!("its XML is malformed: {err}")))?;
        if matches!(event, Event::Eof) {
            return Ok(());
        }
        handle(event)?;
    }
}

/// How a paragraph style reads: as a heading of some level, or a list item.
#[derive(Debug, Clone, Copy, Default)]
struct Style {
    heading: Option<usize>,
    title: bool,
    list: bool,
}

/// Paragraph styles by id, from `styles.xml`.
fn read_styles(xml: Vec<u8>) -> Result<HashMap<String, Style>, ParseError> {
    let mut styles = HashMap::new();
    let mut current: Option<(String, Style)> = None;
    read_xml(xml, |event| {
        match event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"style" => {
                    current = (attr(&e, b"type").as_deref() == Some("paragraph"))
                        .then(|| attr(&e, b"styleId"))
                        .flatten()
                        .map(|id| (id.clone(), style_from_name(&id)));
                }
                b"name" => {
                    if let (Some((_, style)), Some(name)) = (current.as_mut(), attr(&e, b"val")) {
                        let named = style_from_name(&name);
                        style.heading = named.heading.or(style.heading);
                        style.title |= named.title;
                        style.list |= named.list;
                    }
                }
                b"outlineLvl" => {
                    if let (Some((_, style)), Some(level)) = (current.as_mut(), outline_level(&e)) {
                        style.heading = style.heading.or(Some(level));
                    }
                }
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == b"style" => {
                if let Some((id, style)) = current.take() {
                    styles.insert(id, style);
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(styles)
}

/// What a style's name (`heading 2`, `Title`, `List Bullet`) or English id (`Heading2`) says.
fn style_from_name(name: &str) -> Style {
    let lower = name.to_ascii_lowercase().replace(' ', "");
    let heading = lower.strip_prefix("heading").and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=9).contains(n));
    Style {
        heading: heading.map(|n| n.min(6)).or((lower == "title").then_some(1)),
        title: lower == "title",
        list: lower.starts_with("list"),
    }
}

/// A `w:outlineLvl` as a heading level (0 is level 1; 9 means body text).
fn outline_level(e: &BytesStart<'_>) -> Option<usize> {
    attr(e, b"val").and_then(|v| v.parse::<usize>().ok()).filter(|v| *v < 9).map(|v| (v + 1).min(6))
}

fn read_core_title(xml: Vec<u8>) -> Result<Option<String>, ParseError> {
    let mut in_title = false;
    let mut title = String::new();
    read_xml(xml, |event| {
        match event {
            Event::Start(e) if e.local_name().as_ref() == b"title" => in_title = true,
            Event::End(e) if e.local_name().as_ref() == b"title" => in_title = false,
            Event::Text(t) if in_title => title.push_str(&t.decode().unwrap_or_default()),
            Event::GeneralRef(r) if in_title => title.push_str(&resolve_ref(&r)),
            _ => {}
        }
        Ok(())
    })?;
    Ok(collapse(&title))
}

/// The value of attribute `local` (any prefix), unescaped.
fn attr(e: &BytesStart<'_>, local: &[u8]) -> Option<String> {
    e.attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.local_name().as_ref() == local)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn resolve_ref(r: &quick_xml::events::BytesRef<'_>) -> String {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return c.to_string();
    }
    let name = r.decode().unwrap_or_default();
    quick_xml::escape::resolve_predefined_entity(&name).unwrap_or_default().to_owned()
}

fn collapse(text: &str) -> Option<String> {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// A paragraph being read.
#[derive(Default)]
struct Paragraph {
    text: String,
    style: Option<String>,
    list_level: Option<usize>,
    outline: Option<usize>,
}

/// A table being read: finished rows, the row and the cell being filled.
#[derive(Default)]
struct Table {
    rows: Vec<String>,
    row: Vec<String>,
    cell: String,
}

/// The Markdown written from `document.xml`, one event at a time.
struct Body<'a> {
    styles: &'a HashMap<String, Style>,
    max_text_bytes: usize,
    out: String,
    /// The last block was a list item (items are kept together, one per line).
    last_was_item: bool,
    /// Open paragraphs: text boxes put paragraphs inside paragraphs.
    paragraphs: Vec<Paragraph>,
    tables: Vec<Table>,
    depth: usize,
    in_text: bool,
    in_properties: bool,
    /// Inside an element whose content is a duplicate (`mc:Fallback`), until this depth ends.
    skip_until: Option<usize>,
    title_paragraph: Option<String>,
    first_heading: Option<String>,
}

impl<'a> Body<'a> {
    fn new(styles: &'a HashMap<String, Style>, max_text_bytes: usize) -> Self {
        Self {
            styles,
            max_text_bytes,
            out: String::new(),
            last_was_item: false,
            paragraphs: Vec::new(),
            tables: Vec::new(),
            depth: 0,
            in_text: false,
            in_properties: false,
            skip_until: None,
            title_paragraph: None,
            first_heading: None,
        }
    }

    fn event(&mut self, event: Event<'_>) -> Result<(), ParseError> {
        if let Some(depth) = self.skip_until {
            match event {
                Event::Start(_) => self.depth += 1,
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth < depth {
                        self.skip_until = None;
                    }
                }
                _ => {}
            }
            return Ok(());
        }
        match event {
            Event::Start(e) => {
                self.depth += 1;
                self.open(&e, false);
            }
            Event::Empty(e) => self.open(&e, true),
            Event::End(e) => {
                self.depth = self.depth.saturating_sub(1);
                self.close(e.local_name().as_ref())?;
            }
            Event::Text(t) if self.in_text => {
                let text = t.decode().map_err(|err| ParseError::DocxInvalid(err.to_string()))?;
                self.push_text(&text);
            }
            Event::GeneralRef(r) if self.in_text => self.push_text(&resolve_ref(&r)),
            _ => {}
        }
        Ok(())
    }

    fn open(&mut self, e: &BytesStart<'_>, empty: bool) {
        match e.local_name().as_ref() {
            b"Fallback" if !empty => self.skip_until = Some(self.depth),
            b"p" if !empty => self.paragraphs.push(Paragraph::default()),
            b"pPr" if !empty => self.in_properties = true,
            b"pStyle" => {
                if let Some(p) = self.paragraphs.last_mut() {
                    p.style = attr(e, b"val");
                }
            }
            b"ilvl" => {
                if let Some(p) = self.paragraphs.last_mut() {
                    p.list_level = Some(attr(e, b"val").and_then(|v| v.parse().ok()).unwrap_or(0).min(8));
                }
            }
            b"numPr" => {
                if let Some(p) = self.paragraphs.last_mut() {
                    p.list_level.get_or_insert(0);
                }
            }
            b"outlineLvl" => {
                if let Some(p) = self.paragraphs.last_mut() {
                    p.outline = outline_level(e);
                }
            }
            b"t" if !empty => self.in_text = true,
            // Tab stops are declared in paragraph properties with the same element name.
            b"tab" if !self.in_properties => self.push_text("\t"),
            b"br" | b"cr" if !self.in_properties => self.push_text("\n"),
            b"noBreakHyphen" => self.push_text("-"),
            b"tbl" if !empty => self.tables.push(Table::default()),
            b"tr" if !empty => {
                if let Some(table) = self.tables.last_mut() {
                    table.row.clear();
                }
            }
            b"tc" if !empty => {
                if let Some(table) = self.tables.last_mut() {
                    table.cell.clear();
                }
            }
            _ => {}
        }
    }

    fn close(&mut self, name: &[u8]) -> Result<(), ParseError> {
        match name {
            b"t" => self.in_text = false,
            b"pPr" => self.in_properties = false,
            b"p" => {
                if let Some(paragraph) = self.paragraphs.pop() {
                    self.paragraph(paragraph)?;
                }
            }
            b"tc" => {
                if let Some(table) = self.tables.last_mut() {
                    let cell = collapse(&table.cell).unwrap_or_default();
                    table.row.push(cell);
                }
            }
            b"tr" => {
                if let Some(table) = self.tables.last_mut() {
                    if table.row.iter().any(|cell| !cell.is_empty()) {
                        table.rows.push(table.row.join(" | "));
                    }
                    table.row.clear();
                }
            }
            b"tbl" => {
                if let Some(table) = self.tables.pop() {
                    match self.tables.last_mut() {
                        // A table in a cell reads as part of that cell.
                        Some(outer) => {
                            outer.cell.push(' ');
                            outer.cell.push_str(&table.rows.join(" / "));
                        }
                        None if !table.rows.is_empty() => self.block(&table.rows.join("\n"), false)?,
                        None => {}
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn push_text(&mut self, text: &str) {
        if let Some(p) = self.paragraphs.last_mut() {
            p.text.push_str(text);
        }
    }

    fn paragraph(&mut self, p: Paragraph) -> Result<(), ParseError> {
        let style = p.style.as_deref().map(|id| self.styles.get(id).copied().unwrap_or_else(|| style_from_name(id)));
        let style = style.unwrap_or_default();
        // Inside a table the paragraph is part of the cell, whatever its style.
        if let Some(table) = self.tables.last_mut() {
            if !table.cell.is_empty() {
                table.cell.push(' ');
            }
            table.cell.push_str(&p.text);
            return Ok(());
        }
        let text = p.text.trim();
        if text.is_empty() {
            return Ok(());
        }
        if let Some(level) = p.outline.or(style.heading) {
            let heading = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if style.title {
                self.title_paragraph.get_or_insert_with(|| heading.clone());
            } else if level == 1 {
                self.first_heading.get_or_insert_with(|| heading.clone());
            }
            return self.block(&format!("{} {heading}", "#".repeat(level)), false);
        }
        if let Some(level) = p.list_level.or(style.list.then_some(0)) {
            let item = text.lines().map(str::trim).collect::<Vec<_>>().join(" ");
            return self.block(&format!("{}- {item}", "  ".repeat(level)), true);
        }
        // A paragraph that starts like a heading is text, not structure.
        let escaped = if text.starts_with('#') { format!("\\{text}") } else { text.to_owned() };
        self.block(&escaped, false)
    }

    fn block(&mut self, block: &str, item: bool) -> Result<(), ParseError> {
        if !self.out.is_empty() {
            self.out.push_str(if item && self.last_was_item { "\n" } else { "\n\n" });
        }
        self.out.push_str(block);
        self.last_was_item = item;
        if self.out.len() > self.max_text_bytes {
            return Err(ParseError::TextTooLarge { limit: self.max_text_bytes });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const NS: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006""#;

    fn docx(document: &str, styles: Option<&str>) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("word/document.xml", options).unwrap();
        zip.write_all(format!("<w:document {NS}><w:body>{document}</w:body></w:document>").as_bytes()).unwrap();
        if let Some(styles) = styles {
            zip.start_file("word/styles.xml", options).unwrap();
            zip.write_all(format!("<w:styles {NS}>{styles}</w:styles>").as_bytes()).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn text(document: &str, styles: Option<&str>) -> String {
        parse(&docx(document, styles), &ParseLimits::default()).unwrap().text
    }

    fn p(style: &str, text: &str) -> String {
        format!(
            r#"<w:p><w:pPr><w:pStyle w:val="{style}"/><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr><w:r><w:t>{text}</w:t></w:r></w:p>"#
        )
    }

    #[test]
    fn localised_heading_styles_are_found_by_name() {
        let styles = r#"<w:style w:type="paragraph" w:styleId="berschrift1"><w:name w:val="heading 1"/></w:style>
                        <w:style w:type="paragraph" w:styleId="Zitat"><w:name w:val="Quote"/><w:pPr><w:outlineLvl w:val="2"/></w:pPr></w:style>"#;
        let body = [p("berschrift1", "Kapitel"), p("Zitat", "Tief"), p("Normal", "Text")].concat();
        assert_eq!(text(&body, Some(styles)), "# Kapitel\n\n### Tief\n\nText");
    }

    #[test]
    fn entities_breaks_and_duplicate_fallbacks_are_handled() {
        let body = r#"<w:p><w:r><w:t>Fish &amp; chips &#233;</w:t><w:tab/><w:t>x</w:t><w:br/><w:t>y</w:t></w:r>
            <mc:AlternateContent><mc:Choice><w:r><w:t> chosen</w:t></w:r></mc:Choice>
            <mc:Fallback><w:r><w:t> fallback</w:t></w:r></mc:Fallback></mc:AlternateContent>
            <w:r><w:delText>deleted</w:delText><w:instrText>PAGEREF</w:instrText></w:r></w:p>"#;
        assert_eq!(text(body, None), "Fish & chips é\tx\ny chosen");
    }

    #[test]
    fn nested_tables_and_numbered_lists_flatten_to_text() {
        let cell = |text: &str| format!("<w:tc><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:tc>");
        let inner = format!("<w:tbl><w:tr>{}{}</w:tr></w:tbl>", cell("i1"), cell("i2"));
        let body = format!(
            r#"<w:tbl><w:tr>{}<w:tc>{inner}</w:tc></w:tr><w:tr>{}{}</w:tr></w:tbl>
               <w:p><w:pPr><w:numPr><w:ilvl w:val="1"/><w:numId w:val="3"/></w:numPr></w:pPr><w:r><w:t>nested item</w:t></w:r></w:p>"#,
            cell("a"),
            cell("b"),
            cell("c")
        );
        assert_eq!(text(&body, None), "a | i1 | i2\nb | c\n\n  - nested item");
    }

    #[test]
    fn extracted_text_is_capped_as_it_grows() {
        let body = p("Normal", &"word ".repeat(100)).repeat(100);
        let limits = ParseLimits { max_text_bytes: 1000, ..ParseLimits::default() };
        assert_eq!(parse(&docx(&body, None), &limits), Err(ParseError::TextTooLarge { limit: 1000 }));
    }
}
