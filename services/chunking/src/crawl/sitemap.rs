//! sitemap.xml: the `<loc>` of each `<url>` of a `<urlset>`, or of each `<sitemap>` of a
//! `<sitemapindex>` (sitemaps to read in turn). Namespaces are ignored.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Entries read from one sitemap at most (the protocol's own limit).
pub const MAX_SITEMAP_URLS: usize = 50_000;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sitemap {
    /// Pages.
    pub urls: Vec<String>,
    /// Other sitemaps (from a sitemap index).
    pub sitemaps: Vec<String>,
}

/// Reads a sitemap; what cannot be read ends the reading, keeping what was read before.
pub fn parse(bytes: &[u8]) -> Sitemap {
    let mut reader = Reader::from_reader(bytes);
    let mut sitemap = Sitemap::default();
    let mut index = false;
    let mut in_loc = false;
    let mut loc = String::new();
    let mut buffer = Vec::new();
    loop {
        match reader.read_event_into(&mut buffer) {
            Ok(Event::Start(e)) => match e.local_name().as_ref() {
                b"sitemapindex" => index = true,
                b"loc" => {
                    in_loc = true;
                    loc.clear();
                }
                _ => {}
            },
            Ok(Event::Text(text)) if in_loc => loc.push_str(&text.decode().unwrap_or_default()),
            Ok(Event::CData(text)) if in_loc => loc.push_str(&String::from_utf8_lossy(&text.into_inner())),
            Ok(Event::GeneralRef(r)) if in_loc => {
                let name = r.decode().unwrap_or_default();
                loc.push_str(match name.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                });
            }
            Ok(Event::End(e)) if e.local_name().as_ref() == b"loc" => {
                in_loc = false;
                let found = loc.trim().to_owned();
                if !found.is_empty() {
                    if index { sitemap.sitemaps.push(found) } else { sitemap.urls.push(found) }
                }
                if sitemap.urls.len() + sitemap.sitemaps.len() >= MAX_SITEMAP_URLS {
                    break;
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        buffer.clear();
    }
    sitemap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urlset_gives_its_pages() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>http://s.example/a</loc><lastmod>2024-01-01</lastmod></url>
  <url><loc> http://s.example/b?x=1&amp;y=2 </loc></url>
  <url><loc><![CDATA[http://s.example/c]]></loc></url>
  <url><lastmod>no loc</lastmod></url>
</urlset>"#;
        let sitemap = parse(xml);
        assert_eq!(sitemap.urls, ["http://s.example/a", "http://s.example/b?x=1&y=2", "http://s.example/c"]);
        assert!(sitemap.sitemaps.is_empty());
    }

    #[test]
    fn an_index_gives_sitemaps() {
        let xml = br#"<sm:sitemapindex xmlns:sm="http://www.sitemaps.org/schemas/sitemap/0.9">
  <sm:sitemap><sm:loc>http://s.example/sitemap-1.xml</sm:loc></sm:sitemap>
</sm:sitemapindex>"#;
        let sitemap = parse(xml);
        assert_eq!(sitemap.sitemaps, ["http://s.example/sitemap-1.xml"]);
        assert!(sitemap.urls.is_empty());
    }

    #[test]
    fn broken_xml_keeps_what_was_read() {
        let sitemap = parse(b"<urlset><url><loc>http://s.example/a</loc></url><url><loc>http://s.ex</urlset>");
        assert_eq!(sitemap.urls.first().map(String::as_str), Some("http://s.example/a"));
        assert_eq!(parse(b"not xml at all"), Sitemap::default());
    }
}
