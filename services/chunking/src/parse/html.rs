//! HTML: the page's main content as Markdown, so headings stay structure (`#`…) the splitter
//! and heading paths follow, and lists and code survive. Navigation, headers, footers,
//! sidebars, scripts, styles and forms are dropped: they repeat on every page and would make
//! every page match every query about the site's menu.
//!
//! html5ever (through htmd) builds the DOM; we pick the content root (`<main>`, then
//! `[role=main]`, then a lone top-level `<article>`, else `<body>`), prune it, and let htmd
//! write the Markdown.
//!
//! Deep nesting is refused before parsing, by a cheap estimate of the element depth
//! ([`too_deep`]): html5ever scans its stack of open elements for every `<div>`-like start tag
//! (O(depth) each: 20 000 nested `<div>`s took 20 s on a debug build, quadratic), and htmd
//! converts recursively, so a deep tree would also overflow the thread's stack.

use std::rc::Rc;

use htmd::element_handler::{HandlerResult, Handlers};
use htmd::options::{BulletListMarker, Options};
use htmd::{Element, HtmlToMarkdown};
use html5ever::Attribute;
use markup5ever_rcdom::{Node, NodeData};

use super::{ParseError, ParsedDocument};

/// Deepest element nesting converted. Real pages stay well under 100 levels; htmd needs a few
/// hundred bytes of stack per level and blocking threads have 2 MiB.
pub(super) const MAX_DEPTH: usize = 512;

/// Elements that are never content, wherever they are.
const DROPPED: &[&str] = &[
    "nav", "aside", "script", "style", "noscript", "template", "svg", "form", "button", "input", "select", "textarea",
    "iframe", "object", "embed", "canvas", "dialog", "head", "menu",
];
/// Page furniture, dropped unless inside the content (an article's own header holds its title).
const FURNITURE: &[&str] = &["header", "footer"];
/// ARIA roles of navigation and page furniture.
const DROPPED_ROLES: &[&str] = &["navigation", "search", "complementary", "menu", "menubar", "dialog", "alert"];
const FURNITURE_ROLES: &[&str] = &["banner", "contentinfo"];

pub(super) fn parse(bytes: &[u8]) -> Result<ParsedDocument, ParseError> {
    let html = super::text::decode(bytes)?;
    if too_deep(html, MAX_DEPTH) {
        return Err(ParseError::HtmlTooDeep(MAX_DEPTH));
    }
    let converter = converter();
    // html_to_tree feeds a whole &str to html5ever, which cannot fail on any input.
    let document = converter.html_to_tree(html).map_err(|err| ParseError::Crashed("HTML", err.to_string()))?;
    let scan = scan(&document)?;
    let title = scan.title.clone().or_else(|| scan.first_h1.clone());

    let mut text = String::new();
    if let Some(root) = &scan.content {
        prune(root, true);
        text = converter.tree_to_markdown(root);
    }
    // No content root, or one left empty (a <main> holding only a menu): take the whole body.
    if text.trim().is_empty() {
        let root = scan.body.as_ref().unwrap_or(&document);
        prune(root, false);
        text = converter.tree_to_markdown(root);
    }
    Ok(ParsedDocument { text, markdown: true, page_starts: Vec::new(), title })
}

/// Elements without content or end tag.
const VOID: &[&str] =
    &["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"];
/// Elements the parser closes by itself when a sibling starts (`<li>` after `<li>`).
const SELF_CLOSING_SIBLINGS: &[&str] = &[
    "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead", "tbody", "tfoot", "rb", "rt", "rp",
    "caption", "colgroup",
];
/// Elements whose content is text up to their end tag, not markup.
const RAW_TEXT: &[&str] =
    &["script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "plaintext"];

/// Whether `html` nests elements more than `limit` deep, estimated in one pass over the
/// tags the way the parser opens and closes them (an end tag closes everything opened since
/// its start tag), without building anything. Comments and raw text are skipped.
pub(super) fn too_deep(html: &str, limit: usize) -> bool {
    let bytes = html.as_bytes();
    let mut open: Vec<String> = Vec::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut at = 0;
    while let Some(lt) = html[at..].find('<').map(|i| at + i) {
        at = lt + 1;
        if html[at..].starts_with("!--") {
            at = html[at..].find("-->").map_or(html.len(), |i| at + i + 3);
            continue;
        }
        let closing = bytes.get(at) == Some(&b'/');
        let name_start = if closing { at + 1 } else { at };
        let name_end =
            bytes[name_start..].iter().position(|b| !b.is_ascii_alphanumeric()).map_or(bytes.len(), |i| name_start + i);
        if name_end == name_start || !bytes[name_start].is_ascii_alphabetic() {
            continue;
        }
        let name = html[name_start..name_end].to_ascii_lowercase();
        let tag_end = html[name_end..].find('>').map_or(html.len(), |i| name_end + i);
        at = tag_end;
        if closing {
            if counts.get(&name).is_some_and(|n| *n > 0) {
                while let Some(top) = open.pop() {
                    if let Some(n) = counts.get_mut(&top) {
                        *n = n.saturating_sub(1);
                    }
                    if top == name {
                        break;
                    }
                }
            }
            continue;
        }
        if RAW_TEXT.contains(&name.as_str()) {
            let end = format!("</{name}");
            at = find_ignore_case(html, at, &end).unwrap_or(html.len());
            continue;
        }
        let self_closed = html[name_end..tag_end].ends_with('/');
        if self_closed || VOID.contains(&name.as_str()) || SELF_CLOSING_SIBLINGS.contains(&name.as_str()) {
            continue;
        }
        *counts.entry(name.clone()).or_default() += 1;
        open.push(name);
        if open.len() > limit {
            return true;
        }
    }
    false
}

/// The byte offset of `needle` (ASCII) in `haystack` from `from`, ignoring ASCII case.
fn find_ignore_case(haystack: &str, from: usize, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|i| from + i)
}

fn converter() -> HtmlToMarkdown {
    let options = Options { bullet_list_marker: BulletListMarker::Dash, ul_bullet_spacing: 1, ..Options::default() };
    HtmlToMarkdown::builder()
        .options(options)
        // Keep a link's words and an image's description, not their URLs: addresses are noise
        // to an embedding and to a reader of the chunk.
        .add_handler(vec!["a"], |handlers: &dyn Handlers, element: Element| Some(handlers.walk_children(element.node)))
        .add_handler(vec!["img"], |_: &dyn Handlers, element: Element| {
            let alt = attribute(element.attrs, "alt")?;
            let alt = alt.split_whitespace().collect::<Vec<_>>().join(" ");
            (!alt.is_empty()).then(|| HandlerResult::from(alt))
        })
        .build()
}

/// What one pass over the DOM finds.
#[derive(Default)]
struct Scan {
    title: Option<String>,
    first_h1: Option<String>,
    body: Option<Rc<Node>>,
    /// The main content element, if the page marks one.
    content: Option<Rc<Node>>,
}

fn scan(document: &Rc<Node>) -> Result<Scan, ParseError> {
    let mut scan = Scan::default();
    let mut main = None;
    let mut role_main = None;
    let mut articles = Vec::new();
    // Depth-first, in document order, without recursion.
    let mut stack = vec![(Rc::clone(document), 0usize, false)];
    while let Some((node, depth, in_article)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(ParseError::HtmlTooDeep(MAX_DEPTH));
        }
        let mut child_in_article = in_article;
        if let NodeData::Element { name, attrs, .. } = &node.data {
            let attrs = attrs.borrow();
            match &*name.local {
                "title" if scan.title.is_none() => scan.title = non_empty(text_of(&node)),
                "h1" if scan.first_h1.is_none() => scan.first_h1 = non_empty(text_of(&node)),
                "body" if scan.body.is_none() => scan.body = Some(Rc::clone(&node)),
                "main" if main.is_none() => main = Some(Rc::clone(&node)),
                "article" => {
                    if !in_article {
                        articles.push(Rc::clone(&node));
                    }
                    child_in_article = true;
                }
                _ => {}
            }
            if role_main.is_none() && attribute(&attrs, "role").is_some_and(|role| role.eq_ignore_ascii_case("main")) {
                role_main = Some(Rc::clone(&node));
            }
        }
        let children = node.children.borrow();
        stack.extend(children.iter().rev().map(|child| (Rc::clone(child), depth + 1, child_in_article)));
    }
    scan.content = main.or(role_main).or_else(|| if articles.len() == 1 { articles.pop() } else { None });
    Ok(scan)
}

/// Removes what is not content from under `root`. `in_content` says whether `root` is the
/// page's content element (so its own header and footer are kept).
fn prune(root: &Rc<Node>, in_content: bool) {
    let mut stack = vec![(Rc::clone(root), in_content)];
    while let Some((node, in_content)) = stack.pop() {
        node.children.borrow_mut().retain(|child| !dropped(child, in_content));
        for child in node.children.borrow().iter() {
            let inside = in_content || matches!(element_name(child), Some("main" | "article"));
            stack.push((Rc::clone(child), inside));
        }
    }
}

fn dropped(node: &Node, in_content: bool) -> bool {
    let NodeData::Element { name, attrs, .. } = &node.data else {
        return matches!(node.data, NodeData::Comment { .. } | NodeData::ProcessingInstruction { .. });
    };
    let tag = &*name.local;
    if DROPPED.contains(&tag) || (!in_content && FURNITURE.contains(&tag)) {
        return true;
    }
    let attrs = attrs.borrow();
    if attribute(&attrs, "hidden").is_some() || attribute(&attrs, "aria-hidden").is_some_and(|v| v == "true") {
        return true;
    }
    attribute(&attrs, "role").is_some_and(|role| {
        let role = role.to_ascii_lowercase();
        DROPPED_ROLES.contains(&role.as_str()) || (!in_content && FURNITURE_ROLES.contains(&role.as_str()))
    })
}

fn element_name(node: &Node) -> Option<&str> {
    match &node.data {
        NodeData::Element { name, .. } => Some(&name.local),
        _ => None,
    }
}

fn attribute<'a>(attrs: &'a [Attribute], name: &str) -> Option<&'a str> {
    attrs.iter().find(|attr| &*attr.name.local == name).map(|attr| &*attr.value)
}

/// The text under a node, whitespace collapsed.
fn text_of(node: &Rc<Node>) -> String {
    let mut words = Vec::new();
    let mut stack = vec![Rc::clone(node)];
    while let Some(node) = stack.pop() {
        if let NodeData::Text { contents } = &node.data {
            words.extend(contents.borrow().split_whitespace().map(str::to_owned));
        }
        stack.extend(node.children.borrow().iter().rev().cloned());
    }
    words.join(" ")
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(html: &str) -> ParsedDocument {
        parse(html.as_bytes()).unwrap()
    }

    #[test]
    fn the_article_is_kept_and_the_furniture_dropped() {
        let doc = parse_str(
            "<html><head><title>Ownership | The Book</title><style>p{color:red}</style></head><body>\
             <header>Site banner</header><nav><a href='/'>Home</a></nav>\
             <article><header><h1>What is ownership?</h1></header><p>Rust&apos;s <a href='/x'>rules</a> &amp; you.</p>\
             <ul><li>one</li><li>two</li></ul><pre><code>let x = 1;</code></pre></article>\
             <aside>Related posts</aside><footer>Copyright</footer><script>track()</script></body></html>",
        );
        assert_eq!(doc.title.as_deref(), Some("Ownership | The Book"));
        assert!(doc.markdown);
        assert!(doc.text.starts_with("# What is ownership?"), "{}", doc.text);
        assert!(doc.text.contains("Rust's rules & you."), "{}", doc.text);
        assert!(doc.text.contains("- one\n- two"), "{}", doc.text);
        assert!(doc.text.contains("```\nlet x = 1;\n```"), "{}", doc.text);
        for furniture in ["Site banner", "Home", "Related", "Copyright", "track", "color"] {
            assert!(!doc.text.contains(furniture), "{furniture:?} in {}", doc.text);
        }
    }

    #[test]
    fn without_a_content_element_the_body_minus_furniture_is_kept() {
        let doc = parse_str(
            "<body><header>Banner</header><div role=navigation>Menu</div><h1>Title</h1><p>Text</p>\
             <div hidden>secret</div><footer>Foot</footer></body>",
        );
        assert_eq!(doc.text, "# Title\n\nText");
        assert_eq!(doc.title.as_deref(), Some("Title"));
    }

    #[test]
    fn a_page_that_is_only_script_has_no_text() {
        assert_eq!(parse_str("<script>only()</script>").text, "");
    }

    #[test]
    fn the_depth_estimate_follows_how_the_parser_closes_elements() {
        assert!(too_deep(&"<div>".repeat(11), 10));
        assert!(!too_deep(&"<div>".repeat(10), 10));
        // Siblings, void and self-closing elements, implied ends and raw text do not nest.
        assert!(!too_deep(&"<div>x</div><br><img src=a><p>p<li>i<td>".repeat(1000), 10));
        assert!(!too_deep(&format!("<section>{}</section>", "<div><span>".repeat(4)).repeat(1000), 10));
        assert!(!too_deep(&format!("<script>{}</SCRIPT><!-- {} -->", "<div>".repeat(50), "<div>".repeat(50)), 10));
        assert!(too_deep(&"<DIV class=\"a>b\">".repeat(11), 10));
        // Fast on the input that makes html5ever quadratic.
        let started = std::time::Instant::now();
        assert_eq!(parse("<div>".repeat(200_000).as_bytes()), Err(ParseError::HtmlTooDeep(MAX_DEPTH)));
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let html = "<div>".repeat(MAX_DEPTH + 10);
        assert_eq!(parse(html.as_bytes()), Err(ParseError::HtmlTooDeep(MAX_DEPTH)));
        // A depth just under the limit converts fine on a default-sized thread.
        let html = format!("{}deep text", "<div>".repeat(MAX_DEPTH - 10));
        let text = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse(html.as_bytes()).map(|doc| doc.text))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(text.unwrap(), "deep text");
    }
}
