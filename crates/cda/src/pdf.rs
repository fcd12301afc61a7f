//! PDF handling: the CDA2 a producer embeds in a PDF (as the national gateway takes it, an
//! embedded file or a PDF/A-3 associated file), and a plain PDF generated from a rendering when
//! the original is bare XML.

use std::io::Read;

use lopdf::{dictionary, Document, Object, Stream};

use crate::render::Block;
use crate::validate::MAX_XML_BYTES;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PdfError {
    #[error("the file is not a readable PDF: {0}")]
    Unreadable(String),
    #[error("the PDF carries no embedded CDA2 document (no embedded file holds a ClinicalDocument)")]
    NoCda,
    #[error("an embedded file uses the {0} filter, which is not supported")]
    Filter(String),
    #[error("an embedded file expands beyond {MAX_XML_BYTES} bytes")]
    TooLarge,
}

/// Whether bytes look like a PDF.
pub fn is_pdf(bytes: &[u8]) -> bool {
    bytes.len() > 5 && bytes[..bytes.len().min(1024)].windows(5).any(|w| w == b"%PDF-")
}

/// The bytes of the embedded CDA2 (the first embedded file that is a `ClinicalDocument`).
pub fn extract_cda(bytes: &[u8]) -> Result<Vec<u8>, PdfError> {
    // a PDF parser meets hostile input here: a panic in it is a refusal, not a crash
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| extract(bytes)))
        .unwrap_or_else(|_| Err(PdfError::Unreadable("the PDF structure could not be read".into())))
}

/// At most this many name-tree nodes and file specifications are looked at: a real PDF has a
/// handful; a hostile one may list a node many times over to make the walk explode.
const MAX_NODES: usize = 4096;

fn extract(bytes: &[u8]) -> Result<Vec<u8>, PdfError> {
    let doc = Document::load_mem(bytes).map_err(|e| PdfError::Unreadable(e.to_string()))?;
    let mut specs = Vec::new();
    if let Ok(catalog) = doc.catalog() {
        if let Ok(names) = catalog.get_deref(b"Names", &doc).and_then(Object::as_dict) {
            if let Ok(ef) = names.get(b"EmbeddedFiles") {
                let mut walk = NameTreeWalk { doc: &doc, visited: std::collections::HashSet::new(), budget: MAX_NODES };
                walk.collect(ef, &mut specs, 0)?;
            }
        }
        if let Ok(af) = catalog.get_deref(b"AF", &doc).and_then(Object::as_array) {
            specs.extend(af.iter().take(MAX_NODES).cloned());
        }
    }
    let mut last_error = None;
    for spec in specs.into_iter().take(MAX_NODES) {
        let Ok((_, spec)) = doc.dereference(&spec) else { continue };
        let Ok(spec) = spec.as_dict() else { continue };
        let Ok(ef) = spec.get_deref(b"EF", &doc).and_then(Object::as_dict) else { continue };
        let Ok(file) = ef.get_deref(b"F", &doc).or_else(|_| ef.get_deref(b"UF", &doc)).and_then(Object::as_stream) else { continue };
        match content(file) {
            Ok(content) => {
                let head = String::from_utf8_lossy(&content[..content.len().min(4096)]).to_string();
                if head.contains("ClinicalDocument") {
                    return Ok(content);
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or(PdfError::NoCda))
}

/// A walk of the embedded-files name tree that visits each node once (a tree that lists a node
/// twice, or itself, is not walked again) and gives up past a node budget.
struct NameTreeWalk<'a> {
    doc: &'a Document,
    visited: std::collections::HashSet<lopdf::ObjectId>,
    budget: usize,
}

impl NameTreeWalk<'_> {
    fn collect(&mut self, node: &Object, out: &mut Vec<Object>, depth: usize) -> Result<(), PdfError> {
        if depth > 32 {
            return Err(PdfError::Unreadable("the embedded-files name tree is nested too deeply".into()));
        }
        if self.budget == 0 {
            return Err(PdfError::Unreadable(format!("the embedded-files name tree has more than {MAX_NODES} nodes")));
        }
        self.budget -= 1;
        let node = match node {
            Object::Reference(id) => {
                if !self.visited.insert(*id) {
                    return Ok(()); // a node seen before: a cycle or a repeat, not walked again
                }
                match self.doc.get_object(*id) {
                    Ok(o) => o,
                    Err(_) => return Ok(()),
                }
            }
            other => other,
        };
        let Ok(dict) = node.as_dict() else { return Ok(()) };
        if let Ok(names) = dict.get_deref(b"Names", self.doc).and_then(Object::as_array) {
            for spec in names.iter().skip(1).step_by(2) {
                if out.len() >= MAX_NODES {
                    break;
                }
                out.push(spec.clone());
            }
        }
        if let Ok(kids) = dict.get_deref(b"Kids", self.doc).and_then(Object::as_array) {
            for k in kids {
                self.collect(k, out, depth + 1)?;
            }
        }
        Ok(())
    }
}

/// The reply of [`worker_reply`]: the framed result of an extraction done in another process.
/// The first byte says which outcome; the rest is the CDA2 or the message.
pub fn worker_reply(bytes: &[u8]) -> Vec<u8> {
    let (tag, body): (u8, Vec<u8>) = match extract_cda(bytes) {
        Ok(cda) => (b'O', cda),
        Err(PdfError::NoCda) => (b'N', Vec::new()),
        Err(PdfError::TooLarge) => (b'T', Vec::new()),
        Err(PdfError::Filter(f)) => (b'F', f.into_bytes()),
        Err(PdfError::Unreadable(m)) => (b'U', m.into_bytes()),
    };
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(tag);
    out.extend_from_slice(&body);
    out
}

/// Reads what [`worker_reply`] wrote.
pub fn parse_worker_reply(reply: &[u8]) -> Result<Vec<u8>, PdfError> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match reply.split_first() {
        Some((b'O', cda)) => Ok(cda.to_vec()),
        Some((b'N', _)) => Err(PdfError::NoCda),
        Some((b'T', _)) => Err(PdfError::TooLarge),
        Some((b'F', f)) => Err(PdfError::Filter(text(f))),
        Some((b'U', m)) => Err(PdfError::Unreadable(text(m))),
        _ => Err(PdfError::Unreadable(LIMITS_EXCEEDED.into())),
    }
}

/// What a producer is told when reading its PDF was stopped (a crash, memory, time).
pub const LIMITS_EXCEEDED: &str =
    "the PDF could not be read within the limits for one document (structure nested too deeply, too much memory or time)";

/// A stream's content, inflated with a size limit (a small PDF must not expand without bound).
fn content(stream: &Stream) -> Result<Vec<u8>, PdfError> {
    let filters: Vec<Vec<u8>> = stream.filters().map(|f| f.into_iter().map(<[u8]>::to_vec).collect()).unwrap_or_default();
    match filters.as_slice() {
        [] => {
            if stream.content.len() > MAX_XML_BYTES {
                return Err(PdfError::TooLarge);
            }
            Ok(stream.content.clone())
        }
        [f] if f.as_slice() == b"FlateDecode" => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(stream.content.as_slice())
                .take(MAX_XML_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| PdfError::Unreadable(e.to_string()))?;
            if out.len() > MAX_XML_BYTES {
                return Err(PdfError::TooLarge);
            }
            Ok(out)
        }
        other => Err(PdfError::Filter(other.iter().map(|f| String::from_utf8_lossy(f).to_string()).collect::<Vec<_>>().join(","))),
    }
}

/// Windows-1252 bytes (the PDF `WinAnsiEncoding` of the standard fonts and of the portal's
/// embedded one); a character the encoding does not have becomes `?`.
pub fn win_ansi(s: &str) -> Vec<u8> {
    let mut buf = [0u8; 4];
    s.chars()
        .map(|c| {
            let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(c.encode_utf8(&mut buf));
            match bytes.as_ref() {
                [b] if !unmappable => *b,
                _ => b'?',
            }
        })
        .collect()
}

/// The character a Windows-1252 byte stands for (`None` for the five codes it leaves unassigned).
pub fn win_ansi_char(code: u8) -> Option<char> {
    let byte = [code];
    let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(&byte);
    text.chars().next().filter(|c| !matches!(code, 0x81 | 0x8D | 0x8F | 0x90 | 0x9D) && *c != '\u{FFFD}')
}

fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in line.split_whitespace() {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    out.push(cur);
    out
}

/// A simple A4 PDF of text lines (a title, then paragraphs), embedding `attachment` (the CDA2) as
/// an embedded file when given, as producers do.
pub fn text_pdf(title: &str, paragraphs: &[String], attachment: Option<(&str, &[u8])>) -> Result<Vec<u8>, PdfError> {
    let blocks: Vec<Block> = paragraphs.iter().map(|p| Block::Text(p.clone())).collect();
    document_pdf(title, &blocks, attachment)
}

/// Page geometry (points, A4) and the fonts' sizes.
const PAGE_W: f64 = 595.0;
const PAGE_H: f64 = 842.0;
const MARGIN: f64 = 50.0;
const TOP: f64 = 800.0;
const BOTTOM: f64 = 50.0;
/// Helvetica's average advance as a share of the font size: enough to wrap by characters.
const AVG_ADVANCE: f64 = 0.52;
/// The gap between table columns.
const GAP: f64 = 8.0;

/// Pages being written: each page's content stream.
struct Layout {
    pages: Vec<Vec<u8>>,
    y: f64,
}

impl Layout {
    fn new() -> Self {
        Layout { pages: vec![Vec::new()], y: TOP }
    }
    fn page(&mut self) -> &mut Vec<u8> {
        if self.pages.is_empty() {
            self.pages.push(Vec::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }
    /// Room for `h` points more on this page, or a new page.
    fn room(&mut self, h: f64) {
        if self.y - h < BOTTOM && self.y < TOP {
            self.pages.push(Vec::new());
            self.y = TOP;
        }
    }
    fn text_at(&mut self, x: f64, y: f64, bold: bool, size: f64, line: &str) {
        let font = if bold { "F2" } else { "F1" };
        let mut ops = format!("BT /{font} {size} Tf 1 0 0 1 {x:.1} {y:.1} Tm (").into_bytes();
        for b in win_ansi(line) {
            if matches!(b, b'\\' | b'(' | b')') {
                ops.push(b'\\');
            }
            ops.push(b);
        }
        ops.extend_from_slice(b") Tj ET\n");
        self.page().extend_from_slice(&ops);
    }
    fn rule(&mut self, y: f64, width: f64) {
        let ops = format!("{width} w {MARGIN} {y:.1} m {:.1} {y:.1} l S\n", PAGE_W - MARGIN);
        self.page().extend_from_slice(ops.as_bytes());
    }
    /// Wrapped lines of one font, each on the page.
    fn lines(&mut self, text: &str, bold: bool, size: f64, after: f64) {
        let width = ((PAGE_W - 2.0 * MARGIN) / (size * AVG_ADVANCE)) as usize;
        for l in wrap(text, width) {
            self.room(size * 1.3);
            self.y -= size * 1.3;
            let y = self.y;
            self.text_at(MARGIN, y, bold, size, &l);
        }
        self.y -= after;
    }
    /// A table: columns sized by their content within the page, cells wrapped, a rule under
    /// the header and between rows; the header row repeated on each new page.
    fn table(&mut self, rows: &[Vec<String>], header: bool) {
        let size = 9.0;
        let line_h = size * 1.3;
        let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
        if cols == 0 {
            return;
        }
        let char_w = size * AVG_ADVANCE;
        let natural: Vec<f64> = (0..cols)
            .map(|c| {
                let longest = rows.iter().filter_map(|r| r.get(c)).map(|t| t.chars().count()).max().unwrap_or(1);
                (longest.clamp(3, 60) as f64) * char_w
            })
            .collect();
        let avail = PAGE_W - 2.0 * MARGIN - GAP * (cols as f64 - 1.0);
        let total: f64 = natural.iter().sum();
        let widths: Vec<f64> = if total <= avail {
            natural
        } else {
            // shrink in proportion, no column under four characters
            let floor = 4.0 * char_w;
            let scaled: Vec<f64> = natural.iter().map(|w| (w * avail / total).max(floor)).collect();
            let sum: f64 = scaled.iter().sum();
            scaled.iter().map(|w| w * avail / sum).collect()
        };
        let xs: Vec<f64> = widths
            .iter()
            .scan(MARGIN, |x, w| {
                let at = *x;
                *x += w + GAP;
                Some(at)
            })
            .collect();
        let wrapped = |r: &Vec<String>| -> Vec<Vec<String>> {
            (0..cols).map(|c| wrap(r.get(c).map_or("", String::as_str), ((widths[c] / char_w) as usize).max(1))).collect()
        };
        let head = if header { rows.first().map(&wrapped) } else { None };
        let draw = |l: &mut Layout, cells: &[Vec<String>], bold: bool| {
            let n = cells.iter().map(Vec::len).max().unwrap_or(1);
            let top = l.y;
            for (c, lines) in cells.iter().enumerate() {
                for (i, line) in lines.iter().enumerate() {
                    l.text_at(xs[c], top - line_h * (i as f64 + 1.0), bold, size, line);
                }
            }
            l.y = top - line_h * n as f64 - 5.0;
            let y = l.y;
            l.rule(y + 2.0, if bold { 0.8 } else { 0.3 });
        };
        let start = usize::from(header);
        if let Some(h) = &head {
            let need = line_h * (h.iter().map(Vec::len).max().unwrap_or(1) + 1) as f64 + 6.0;
            self.room(need);
            draw(self, h, true);
        }
        for r in &rows[start.min(rows.len())..] {
            let cells = wrapped(r);
            let need = line_h * cells.iter().map(Vec::len).max().unwrap_or(1) as f64 + 5.0;
            let before = self.pages.len();
            self.room(need);
            if self.pages.len() > before {
                if let Some(h) = &head {
                    draw(self, h, true);
                }
            }
            draw(self, &cells, false);
        }
        self.y -= 8.0;
    }
}

/// An A4 PDF of a document: its title, then its blocks (section titles in bold, text wrapped,
/// tables as tables), embedding `attachment` (the CDA2) when given, as producers do.
pub fn document_pdf(title: &str, blocks: &[Block], attachment: Option<(&str, &[u8])>) -> Result<Vec<u8>, PdfError> {
    let err = |e: lopdf::Error| PdfError::Unreadable(e.to_string());
    let mut doc = Document::with_version("1.7");
    let pages_id = doc.new_object_id();
    let font = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
    });
    let bold = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica-Bold", "Encoding" => "WinAnsiEncoding",
    });
    let resources = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font, "F2" => bold } });
    let mut l = Layout::new();
    l.lines(title, true, 14.0, 8.0);
    for b in blocks {
        match b {
            Block::Heading(t) => {
                l.room(40.0);
                l.y -= 4.0;
                l.lines(t, true, 11.0, 3.0);
            }
            Block::Text(t) => {
                for para in t.split('\n') {
                    l.lines(para, false, 10.0, 4.0);
                }
            }
            Block::Table { rows, header } => l.table(rows, *header),
        }
    }
    let mut kids = Vec::new();
    for ops in l.pages {
        let content_id = doc.add_object(Stream::new(dictionary! {}, ops));
        let page = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content_id, "Resources" => resources,
            "MediaBox" => vec![0.into(), 0.into(), (PAGE_W as i64).into(), (PAGE_H as i64).into()],
        });
        kids.push(Object::from(page));
    }
    let count = kids.len() as i64;
    doc.objects.insert(pages_id, Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => kids, "Count" => count }));
    let mut catalog = dictionary! { "Type" => "Catalog", "Pages" => pages_id };
    if let Some((name, bytes)) = attachment {
        let file = doc.add_object(Stream::new(dictionary! { "Type" => "EmbeddedFile", "Subtype" => "text#2Fxml" }, bytes.to_vec()));
        let spec = doc.add_object(dictionary! {
            "Type" => "Filespec", "F" => Object::string_literal(name), "UF" => Object::string_literal(name),
            "EF" => dictionary! { "F" => file }, "AFRelationship" => "Source",
        });
        catalog.set("Names", dictionary! { "EmbeddedFiles" => dictionary! { "Names" => vec![Object::string_literal(name), spec.into()] } });
        catalog.set("AF", vec![Object::from(spec)]);
    }
    let catalog_id = doc.add_object(catalog);
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).map_err(|e| err(lopdf::Error::IO(e)))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_1252_both_ways() {
        assert_eq!(win_ansi("perché — €’"), [b'p', b'e', b'r', b'c', b'h', 0xE9, b' ', 0x97, b' ', 0x80, 0x92]);
        assert_eq!(win_ansi("Ω 中"), b"? ?");
        assert_eq!(win_ansi_char(0x80), Some('€'));
        assert_eq!(win_ansi_char(0xE0), Some('à'));
        assert_eq!(win_ansi_char(b'A'), Some('A'));
        assert_eq!(win_ansi_char(0x81), None, "unassigned in Windows-1252");
    }

    /// A report's table stays a table: each row's cells on one line, in columns left to right,
    /// the header in bold; a long table goes on over pages with its header repeated.
    #[test]
    fn tables_are_laid_out_as_tables() {
        let cda = r#"<ClinicalDocument xmlns="urn:hl7-org:v3"><component><structuredBody><component><section>
            <title>Esami</title><text><paragraph>Prelievo del mattino.</paragraph><table><thead><tr><th>Esame</th><th>Valore</th><th>Unita</th></tr></thead>
            <tbody><tr><td>Glucosio</td><td>209</td><td>mg/dL</td></tr><tr><td>Colesterolo totale</td><td>180</td><td>mg/dL</td></tr></tbody></table>
            </text></section></component></structuredBody></component></ClinicalDocument>"#;
        let doc = roxmltree::Document::parse(cda).unwrap();
        let blocks = crate::render::blocks(&doc);
        assert!(blocks.contains(&Block::Heading("Esami".into())));
        assert!(blocks.contains(&Block::Text("Prelievo del mattino.".into())));
        let table = Block::Table {
            rows: vec![
                vec!["Esame".into(), "Valore".into(), "Unita".into()],
                vec!["Glucosio".into(), "209".into(), "mg/dL".into()],
                vec!["Colesterolo totale".into(), "180".into(), "mg/dL".into()],
            ],
            header: true,
        };
        assert!(blocks.contains(&table), "{blocks:?}");

        // where each text is drawn: (font, x, y, text)
        let drawn = |pdf: &[u8]| -> Vec<(String, f64, f64, String)> {
            let doc = Document::load_mem(pdf).unwrap();
            let mut out = Vec::new();
            for (_, page) in doc.get_pages() {
                let content = String::from_utf8_lossy(&doc.get_page_content(page).unwrap()).to_string();
                for op in content.split("BT ").skip(1) {
                    let w: Vec<&str> = op.split_whitespace().collect();
                    let text = op.split_once('(').and_then(|(_, r)| r.rsplit_once(") Tj")).map(|(t, _)| t.to_string()).unwrap_or_default();
                    out.push((w[0].to_string(), w[7].parse().unwrap(), w[8].parse().unwrap(), text));
                }
            }
            out
        };
        let pdf = document_pdf("Referto", &blocks, None).unwrap();
        let at = drawn(&pdf);
        let find = |t: &str| at.iter().find(|d| d.3 == t).unwrap_or_else(|| panic!("{t} not drawn: {at:?}")).clone();
        let (glucose, value, unit) = (find("Glucosio"), find("209"), find("mg/dL"));
        assert!(glucose.2 == value.2 && value.2 == unit.2, "one row on one line");
        assert!(glucose.1 < value.1 && value.1 < unit.1, "in columns, left to right");
        assert_eq!(find("Valore").1, value.1, "the header over its column");
        assert_eq!(find("Esame").0, "/F2", "the header in bold");
        assert_eq!(find("Colesterolo totale").1, glucose.1);
        assert!(find("Colesterolo totale").2 < glucose.2, "the next row below");

        let long = Block::Table {
            rows: std::iter::once(vec!["Esame".to_string(), "Valore".to_string()])
                .chain((0..150).map(|i| vec![format!("Analita {i}"), i.to_string()]))
                .collect(),
            header: true,
        };
        let pdf = document_pdf("Referto lungo", &[long], None).unwrap();
        let at = drawn(&pdf);
        assert!(Document::load_mem(&pdf).unwrap().get_pages().len() >= 3);
        assert_eq!(
            at.iter().filter(|d| d.3 == "Esame").count(),
            Document::load_mem(&pdf).unwrap().get_pages().len(),
            "header on every page"
        );
        assert!((0..150).all(|i| at.iter().any(|d| d.3 == format!("Analita {i}"))), "no row lost");
    }

    #[test]
    fn a_generated_pdf_carries_its_cda_back() {
        let cda = r#"<ClinicalDocument xmlns="urn:hl7-org:v3"><title>Perché</title></ClinicalDocument>"#.as_bytes();
        let pdf = text_pdf("Referto di laboratorio", &["Paziente: Città (prova)".into()], Some(("cda.xml", cda))).unwrap();
        assert!(is_pdf(&pdf));
        assert_eq!(extract_cda(&pdf).unwrap(), cda.to_vec());
        let plain = text_pdf("Senza allegato", &["testo".into()], None).unwrap();
        assert_eq!(extract_cda(&plain), Err(PdfError::NoCda));
        assert!(matches!(extract_cda(b"%PDF-1.7 garbage"), Err(PdfError::Unreadable(_))));
    }
}
