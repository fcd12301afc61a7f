//! A human-readable HTML rendering of a CDA2: the header (document, patient, author, custodian,
//! dates) and every section with its narrative block. Only the narrative elements CDA defines
//! are turned into HTML (paragraphs, lists, tables, line breaks, emphasis); everything else is
//! text, escaped. The output is an HTML fragment for the web layer's page template.

use crate::mapping::{fhir_datetime, header, path, text};
use crate::validate::{child, HL7_NS};

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn name_of(n: Option<roxmltree::Node>) -> String {
    let Some(name) = n.and_then(|n| child(n, "name")) else { return String::new() };
    let part = |p: &str| name.children().filter(|c| c.is_element() && c.tag_name().name() == p).map(text).collect::<Vec<_>>().join(" ");
    let joined = [part("prefix"), part("given"), part("family")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    if joined.is_empty() {
        text(name)
    } else {
        joined
    }
}

fn date(ts: Option<&str>) -> String {
    let Some(dt) = ts.and_then(fhir_datetime) else { return String::new() };
    // 2022-03-30T11:24:26+01:00 -> 30/03/2022 11:24, on Rome's clocks whatever zone it came in
    if let Ok(t) = time::OffsetDateTime::parse(&dt, &time::format_description::well_known::Rfc3339) {
        let t = t.to_offset(fascicolo_domain::rome::offset(t));
        return format!("{:02}/{:02}/{} {:02}:{:02}", t.day(), t.month() as u8, t.year(), t.hour(), t.minute());
    }
    let d = &dt[..dt.len().min(10)];
    let parts: Vec<&str> = d.split('-').collect();
    let day = match parts.as_slice() {
        [y, m, dd] => format!("{dd}/{m}/{y}"),
        [y, m] => format!("{m}/{y}"),
        _ => d.to_string(),
    };
    if dt.len() >= 16 {
        format!("{day} {}", &dt[11..16])
    } else {
        day
    }
}

/// The header as (label, value) rows, empty values left out.
fn header_rows(doc: &roxmltree::Document) -> Vec<(&'static str, String)> {
    let root = doc.root_element();
    let h = header(doc);
    let patient = path(root, &["recordTarget", "patientRole", "patient"]);
    let author = path(root, &["author", "assignedAuthor", "assignedPerson"]);
    let custodian =
        path(root, &["custodian", "assignedCustodian", "representedCustodianOrganization", "name"]).map(text).unwrap_or_default();
    let legal = path(root, &["legalAuthenticator", "assignedEntity", "assignedPerson"]);
    let birth = patient.and_then(|p| child(p, "birthTime")).and_then(|b| b.attribute("value"));
    let rows = [
        ("Paziente", name_of(patient)),
        ("Codice fiscale", h.patient_cf.clone().unwrap_or_default()),
        ("Data di nascita", date(birth)),
        ("Data del documento", date(h.effective.as_deref())),
        ("Autore", name_of(author)),
        ("Firmato da", name_of(legal)),
        ("Struttura", custodian),
        ("Tipo (LOINC)", h.loinc.clone().unwrap_or_default()),
        ("Identificativo", h.id.clone()),
        ("Versione", h.version.clone().unwrap_or_default()),
    ];
    rows.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}

/// A piece of a document as the generated PDF lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A section's title.
    Heading(String),
    /// Running text (a header row, a paragraph, a list item).
    Text(String),
    /// A table: its rows of cells, the first row its header when `header` is true.
    Table { rows: Vec<Vec<String>>, header: bool },
}

/// The document as blocks (header rows, then each section's title and narrative, its tables
/// kept as tables), for the generated PDF.
pub fn blocks(doc: &roxmltree::Document) -> Vec<Block> {
    let mut out: Vec<Block> = header_rows(doc).into_iter().map(|(k, v)| Block::Text(format!("{k}: {v}"))).collect();
    fn walk(s: roxmltree::Node, out: &mut Vec<Block>) {
        if let Some(t) = child(s, "title").map(text).filter(|t| !t.is_empty()) {
            out.push(Block::Heading(t));
        }
        if let Some(t) = child(s, "text") {
            narrative_blocks(t, out);
        }
        for c in s.children().filter(|c| c.is_element() && c.tag_name().name() == "component") {
            if let Some(sub) = child(c, "section") {
                walk(sub, out);
            }
        }
    }
    let root = doc.root_element();
    if let Some(body) = path(root, &["component", "structuredBody"]) {
        for c in body.children().filter(|c| c.is_element() && c.tag_name().name() == "component") {
            if let Some(s) = child(c, "section") {
                walk(s, &mut out);
            }
        }
    } else if let Some(nb) = path(root, &["component", "nonXMLBody", "text"]) {
        out.push(Block::Text(text(nb)));
    }
    out
}

/// A narrative block as PDF blocks: tables as tables, paragraphs and list items as text, loose
/// text gathered into one paragraph.
fn narrative_blocks(n: roxmltree::Node, out: &mut Vec<Block>) {
    let mut loose = String::new();
    let flush = |loose: &mut String, out: &mut Vec<Block>| {
        let t = loose.split_whitespace().collect::<Vec<_>>().join(" ");
        if !t.is_empty() {
            out.push(Block::Text(t));
        }
        loose.clear();
    };
    for c in n.children() {
        if c.is_text() {
            loose.push_str(c.text().unwrap_or_default());
            continue;
        }
        if !c.is_element() {
            continue;
        }
        match c.tag_name().name() {
            "table" => {
                flush(&mut loose, out);
                let rows: Vec<roxmltree::Node> = c.descendants().filter(|r| r.is_element() && r.tag_name().name() == "tr").collect();
                let header = rows.first().is_some_and(|r| {
                    r.parent().is_some_and(|p| p.tag_name().name() == "thead")
                        || r.children().filter(|x| x.is_element()).all(|x| x.tag_name().name() == "th")
                });
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| r.children().filter(|x| x.is_element() && matches!(x.tag_name().name(), "td" | "th")).map(text).collect())
                    .filter(|r: &Vec<String>| !r.is_empty())
                    .collect();
                if let Some(cap) = child(c, "caption").map(text).filter(|t| !t.is_empty()) {
                    out.push(Block::Text(cap));
                }
                if !cells.is_empty() {
                    out.push(Block::Table { rows: cells, header });
                }
            }
            "paragraph" => {
                flush(&mut loose, out);
                let t = text(c);
                if !t.is_empty() {
                    out.push(Block::Text(t));
                }
            }
            "list" => {
                flush(&mut loose, out);
                let ordered = c.attribute("listType") == Some("ordered");
                for (i, item) in c.children().filter(|x| x.is_element() && x.tag_name().name() == "item").enumerate() {
                    let mark = if ordered { format!("{}.", i + 1) } else { "•".to_string() };
                    out.push(Block::Text(format!("{mark} {}", text(item))));
                }
            }
            "br" => flush(&mut loose, out),
            _ => loose.push_str(&format!(" {} ", text(c))),
        }
    }
    flush(&mut loose, out);
}

/// Renders a parsed CDA2 as an HTML fragment.
pub fn render(doc: &roxmltree::Document) -> String {
    render_at(doc, 1)
}

/// The rendering with its title at heading level `top` (sections below it), for pages that
/// already have their own `h1`.
pub fn render_at(doc: &roxmltree::Document, top: usize) -> String {
    let top = top.clamp(1, 5);
    let root = doc.root_element();
    let h = header(doc);
    let title = if h.title.is_empty() { "Documento clinico".to_string() } else { h.title.clone() };
    let mut out = String::new();
    out.push_str(&format!("<article class=\"cda\" lang=\"it\"><h{top}>{}</h{top}>\n<dl class=\"cda-header\">\n", escape(&title)));
    for (k, v) in header_rows(doc) {
        out.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", escape(k), escape(&v)));
    }
    out.push_str("</dl>\n");
    if let Some(body) = path(root, &["component", "structuredBody"]) {
        for c in body.children().filter(|c| c.is_element() && c.tag_name().name() == "component") {
            if let Some(s) = child(c, "section") {
                section(s, top + 1, &mut out);
            }
        }
    } else if let Some(nb) = path(root, &["component", "nonXMLBody", "text"]) {
        out.push_str(&format!("<p>{}</p>", escape(&text(nb))));
    }
    out.push_str("</article>\n");
    out
}

fn section(s: roxmltree::Node, level: usize, out: &mut String) {
    let level = level.min(6);
    out.push_str("<section>");
    let title = child(s, "title")
        .map(text)
        .filter(|t| !t.is_empty())
        .or_else(|| child(s, "code").and_then(|c| c.attribute("displayName")).map(str::to_string));
    if let Some(t) = title {
        out.push_str(&format!("<h{level}>{}</h{level}>", escape(&t)));
    }
    if let Some(t) = child(s, "text") {
        out.push_str("<div class=\"narrative\">");
        narrative(t, out);
        out.push_str("</div>");
    }
    for c in s.children().filter(|c| c.is_element() && c.tag_name().name() == "component") {
        if let Some(sub) = child(c, "section") {
            section(sub, level + 1, out);
        }
    }
    out.push_str("</section>\n");
}

/// The CDA narrative block as HTML: known elements mapped, the rest reduced to their text.
fn narrative(n: roxmltree::Node, out: &mut String) {
    for c in n.children() {
        if c.is_text() {
            out.push_str(&escape(c.text().unwrap_or_default()));
            continue;
        }
        if !c.is_element() || c.tag_name().namespace() != Some(HL7_NS) {
            continue;
        }
        let tag = match c.tag_name().name() {
            "paragraph" => Some("p"),
            "list" => Some(if c.attribute("listType") == Some("ordered") { "ol" } else { "ul" }),
            "item" => Some("li"),
            "table" => Some("table"),
            "thead" => Some("thead"),
            "tbody" => Some("tbody"),
            "tfoot" => Some("tfoot"),
            "tr" => Some("tr"),
            "td" => Some("td"),
            "th" => Some("th"),
            "caption" => Some("caption"),
            "sub" => Some("sub"),
            "sup" => Some("sup"),
            "content" => Some("span"),
            "footnote" => Some("small"),
            "br" => {
                out.push_str("<br>");
                None
            }
            _ => {
                narrative(c, out);
                None
            }
        };
        if let Some(tag) = tag {
            let mut attrs = String::new();
            for a in ["colspan", "rowspan"] {
                if let Some(v) = c.attribute(a).filter(|v| v.bytes().all(|b| b.is_ascii_digit())) {
                    attrs.push_str(&format!(" {a}=\"{v}\""));
                }
            }
            if c.attribute("styleCode").is_some_and(|s| s.contains("Bold")) && tag == "span" {
                out.push_str("<strong>");
                narrative(c, out);
                out.push_str("</strong>");
                continue;
            }
            out.push_str(&format!("<{tag}{attrs}>"));
            narrative(c, out);
            out.push_str(&format!("</{tag}>"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::date;
    use crate::mapping::fhir_datetime;

    /// One instant, shown on Rome's clocks whatever zone the producer wrote it in: the same
    /// summer 11:30 from a +0200 document, a UTC one and one without a zone (Italian local time).
    #[test]
    fn document_times_are_shown_on_romes_clocks() {
        assert_eq!(date(Some("20260814113000+0200")), "14/08/2026 11:30");
        assert_eq!(date(Some("20260814093000+0000")), "14/08/2026 11:30");
        assert_eq!(date(Some("20260814113000")), "14/08/2026 11:30");
        assert_eq!(date(Some("20260114103000+0000")), "14/01/2026 11:30");
        assert_eq!(date(Some("20260114113000")), "14/01/2026 11:30");
        // a night across the date line of UTC, and the autumn change-over
        assert_eq!(date(Some("20261231233000+0000")), "01/01/2027 00:30");
        assert_eq!(date(Some("20261025003000+0000")), "25/10/2026 02:30");
        assert_eq!(date(Some("20261025013000+0000")), "25/10/2026 02:30");
        assert_eq!(date(Some("20261025023000+0000")), "25/10/2026 03:30");
        // dates stay dates
        assert_eq!(date(Some("19850412")), "12/04/1985");
    }

    #[test]
    fn times_without_a_zone_are_italian_local_time() {
        assert_eq!(fhir_datetime("20230120145726").as_deref(), Some("2023-01-20T14:57:26+01:00"));
        assert_eq!(fhir_datetime("20230720145726").as_deref(), Some("2023-07-20T14:57:26+02:00"));
        assert_eq!(fhir_datetime("202307201457").as_deref(), Some("2023-07-20T14:57:00+02:00"));
        assert_eq!(fhir_datetime("20230720145726+0100").as_deref(), Some("2023-07-20T14:57:26+01:00"));
        assert_eq!(fhir_datetime("20230720").as_deref(), Some("2023-07-20"));
    }
}
