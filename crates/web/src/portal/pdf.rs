//! The PDF index of a record's documents: A4 pages with a table (date, document, facility,
//! identifier), the header row repeated on every page, page numbers, and the portal's font
//! (Titillium Web) embedded as TrueType so the file looks the same everywhere. Written with
//! `lopdf`; glyph widths come from the font itself (`ttf-parser`) for line wrapping.

use fascicolo_cda::pdf::{win_ansi as encode, win_ansi_char as cp1252_char};
use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Document, Object, ObjectId, Stream, StringFormat};

/// One document line of the index.
#[derive(Debug, Clone)]
pub struct Row {
    pub date: String,
    pub title: String,
    pub kind: String,
    pub organization: String,
    pub identifier: String,
}

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 40.0;
const BODY: f32 = 9.0;
const LEAD: f32 = 11.5;
/// Column x positions and widths.
const COLS: [(f32, f32); 4] = [(MARGIN, 58.0), (MARGIN + 62.0, 215.0), (MARGIN + 281.0, 130.0), (MARGIN + 415.0, 100.0)];

/// A TrueType font to embed, with its WinAnsi widths (1/1000 em).
struct Font {
    bytes: &'static [u8],
    name: &'static str,
    widths: Vec<f32>,
    ascent: i64,
    descent: i64,
    cap: i64,
    bbox: [i64; 4],
}

impl Font {
    fn load(bytes: &'static [u8], name: &'static str) -> Result<Font, String> {
        let face = ttf_parser::Face::parse(bytes, 0).map_err(|e| format!("font {name}: {e}"))?;
        let upem = f32::from(face.units_per_em());
        let scale = |v: i16| (f32::from(v) * 1000.0 / upem).round() as i64;
        let widths = (32u8..=255)
            .map(|code| {
                cp1252_char(code)
                    .and_then(|ch| face.glyph_index(ch))
                    .and_then(|g| face.glyph_hor_advance(g))
                    .map_or(500.0, |w| f32::from(w) * 1000.0 / upem)
            })
            .collect();
        let b = face.global_bounding_box();
        Ok(Font {
            bytes,
            name,
            widths,
            ascent: scale(face.ascender()),
            descent: scale(face.descender()),
            cap: face.capital_height().map_or(700, scale),
            bbox: [scale(b.x_min), scale(b.y_min), scale(b.x_max), scale(b.y_max)],
        })
    }

    fn width(&self, s: &str, size: f32) -> f32 {
        encode(s).iter().map(|&b| if b >= 32 { self.widths[usize::from(b - 32)] } else { 0.0 }).sum::<f32>() * size / 1000.0
    }

    /// Split text into lines no wider than `max`.
    fn wrap(&self, s: &str, size: f32, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut cur = String::new();
        for word in s.split_whitespace() {
            let candidate = if cur.is_empty() { word.to_string() } else { format!("{cur} {word}") };
            if self.width(&candidate, size) <= max || cur.is_empty() {
                cur = candidate;
                // a single word wider than the column is cut
                while self.width(&cur, size) > max && cur.chars().count() > 1 {
                    let mut head = String::new();
                    for ch in cur.chars() {
                        if self.width(&format!("{head}{ch}"), size) > max {
                            break;
                        }
                        head.push(ch);
                    }
                    let rest = cur[head.len()..].to_string();
                    lines.push(head);
                    cur = rest;
                }
            } else {
                lines.push(std::mem::take(&mut cur));
                cur = word.to_string();
            }
        }
        if !cur.is_empty() {
            lines.push(cur);
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
        lines
    }

    fn embed(&self, doc: &mut Document) -> ObjectId {
        let mut file = Stream::new(dictionary! { "Length1" => self.bytes.len() as i64 }, self.bytes.to_vec());
        let _ = file.compress();
        let file_id = doc.add_object(file);
        let descriptor = doc.add_object(dictionary! {
            "Type" => "FontDescriptor",
            "FontName" => Object::Name(self.name.as_bytes().to_vec()),
            "Flags" => 32,
            "FontBBox" => self.bbox.iter().map(|v| Object::Integer(*v)).collect::<Vec<_>>(),
            "ItalicAngle" => 0,
            "Ascent" => self.ascent,
            "Descent" => self.descent,
            "CapHeight" => self.cap,
            "StemV" => 80,
            "FontFile2" => file_id,
        });
        doc.add_object(dictionary! {
            "Type" => "Font",
            "Subtype" => "TrueType",
            "BaseFont" => Object::Name(self.name.as_bytes().to_vec()),
            "FirstChar" => 32,
            "LastChar" => 255,
            "Widths" => self.widths.iter().map(|w| Object::Integer(w.round() as i64)).collect::<Vec<_>>(),
            "FontDescriptor" => descriptor,
            "Encoding" => "WinAnsiEncoding",
        })
    }
}

struct Writer {
    ops: Vec<Operation>,
}

impl Writer {
    fn text(&mut self, font: &str, size: f32, x: f32, y: f32, s: &str) {
        self.ops.push(Operation::new("BT", vec![]));
        self.ops.push(Operation::new("Tf", vec![Object::Name(font.as_bytes().to_vec()), size.into()]));
        self.ops.push(Operation::new("Td", vec![x.into(), y.into()]));
        self.ops.push(Operation::new("Tj", vec![Object::String(encode(s), StringFormat::Literal)]));
        self.ops.push(Operation::new("ET", vec![]));
    }
    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, grey: f32) {
        self.ops.push(Operation::new("rg", vec![grey.into(), grey.into(), grey.into()]));
        self.ops.push(Operation::new("re", vec![x.into(), y.into(), w.into(), h.into()]));
        self.ops.push(Operation::new("f", vec![]));
        self.ops.push(Operation::new("rg", vec![0.09.into(), 0.2.into(), 0.3.into()]));
    }
    fn line(&mut self, y: f32) {
        self.ops.push(Operation::new("w", vec![0.4.into()]));
        self.ops.push(Operation::new("RG", vec![0.7.into(), 0.75.into(), 0.8.into()]));
        self.ops.push(Operation::new("m", vec![MARGIN.into(), y.into()]));
        self.ops.push(Operation::new("l", vec![(PAGE_W - MARGIN).into(), y.into()]));
        self.ops.push(Operation::new("S", vec![]));
    }
}

/// Build the index PDF.
pub fn index(title: &str, subtitle: &str, headings: [&str; 4], rows: &[Row]) -> Result<Vec<u8>, String> {
    let regular = Font::load(super::FONT_REGULAR, "TitilliumWeb-Regular")?;
    let bold = Font::load(super::FONT_BOLD, "TitilliumWeb-Bold")?;
    let mut doc = Document::with_version("1.7");
    let pages_id = doc.new_object_id();
    let f1 = regular.embed(&mut doc);
    let f2 = bold.embed(&mut doc);
    let resources = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => f1, "F2" => f2 } });

    // lay the rows out into pages first, to know how many pages there are
    type Cell = Vec<String>;
    let laid: Vec<[Cell; 4]> = rows
        .iter()
        .map(|r| {
            let mut doc_lines = regular.wrap(&r.title, BODY, COLS[1].1);
            if !r.kind.is_empty() && r.kind != r.title {
                doc_lines.extend(regular.wrap(&format!("({})", r.kind), BODY, COLS[1].1));
            }
            [
                regular.wrap(&r.date, BODY, COLS[0].1),
                doc_lines,
                regular.wrap(&r.organization, BODY, COLS[2].1),
                regular.wrap(&r.identifier, BODY - 1.0, COLS[3].1),
            ]
        })
        .collect();
    let first_top = PAGE_H - MARGIN - 60.0;
    let top = PAGE_H - MARGIN - 20.0;
    let bottom = MARGIN + 30.0;
    let mut pages: Vec<Vec<usize>> = vec![Vec::new()];
    let mut y = first_top - LEAD * 1.6;
    for (i, cells) in laid.iter().enumerate() {
        let h = cells.iter().map(Vec::len).max().unwrap_or(1) as f32 * LEAD + 5.0;
        if y - h < bottom {
            pages.push(Vec::new());
            y = top - LEAD * 1.6;
        }
        y -= h;
        if let Some(p) = pages.last_mut() {
            p.push(i);
        }
    }
    let total = pages.len();
    let mut kids = Vec::new();
    for (n, items) in pages.iter().enumerate() {
        let mut w = Writer { ops: Vec::new() };
        w.ops.push(Operation::new("rg", vec![0.09.into(), 0.2.into(), 0.3.into()]));
        let mut y = if n == 0 {
            w.text("F2", 15.0, MARGIN, PAGE_H - MARGIN - 10.0, title);
            for (k, line) in regular.wrap(subtitle, 10.0, PAGE_W - 2.0 * MARGIN).iter().enumerate() {
                w.text("F1", 10.0, MARGIN, PAGE_H - MARGIN - 28.0 - k as f32 * 12.0, line);
            }
            first_top
        } else {
            w.text("F1", 8.0, MARGIN, PAGE_H - MARGIN, title);
            top
        };
        // header row
        w.rect(MARGIN, y - LEAD * 1.6 + 3.0, PAGE_W - 2.0 * MARGIN, LEAD * 1.6, 0.9);
        for (k, h) in headings.iter().enumerate() {
            w.text("F2", BODY, COLS[k].0 + 2.0, y - LEAD, h);
        }
        y -= LEAD * 1.6;
        for &i in items {
            let cells = &laid[i];
            let lines = cells.iter().map(Vec::len).max().unwrap_or(1);
            for (k, cell) in cells.iter().enumerate() {
                let size = if k == 3 { BODY - 1.0 } else { BODY };
                for (l, text) in cell.iter().enumerate() {
                    let font = if k == 1 && l == 0 { "F2" } else { "F1" };
                    w.text(font, size, COLS[k].0 + 2.0, y - LEAD * (l as f32 + 1.0), text);
                }
            }
            y -= lines as f32 * LEAD + 5.0;
            w.line(y + 2.0);
        }
        if rows.is_empty() {
            w.text("F1", BODY, MARGIN, y - LEAD * 1.5, "—");
        }
        let footer = format!("{} / {}", n + 1, total);
        w.text("F1", 8.0, PAGE_W - MARGIN - regular.width(&footer, 8.0), MARGIN - 10.0, &footer);
        let content = Content { operations: w.ops }.encode().map_err(|e| e.to_string())?;
        let mut stream = Stream::new(dictionary! {}, content);
        let _ = stream.compress();
        let content_id = doc.add_object(stream);
        kids.push(Object::Reference(doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "MediaBox" => vec![0.into(), 0.into(), PAGE_W.into(), PAGE_H.into()],
            "Contents" => content_id,
            "Resources" => resources,
        })));
    }
    doc.objects.insert(pages_id, Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => kids, "Count" => total as i64 }));
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id, "Lang" => Object::string_literal("it-IT") });
    doc.trailer.set("Root", catalog);
    let info = doc.add_object(
        dictionary! { "Title" => Object::String(encode(title), StringFormat::Literal), "Producer" => Object::string_literal("Fascicolo") },
    );
    doc.trailer.set("Info", info);
    let mut out = Vec::new();
    doc.save_to(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<Row> {
        (0..n)
            .map(|i| Row {
                date: "01/02/2026".into(),
                title: format!("Referto di laboratorio numero {i} — emocromo completo, perché sì"),
                kind: "Referto di laboratorio".into(),
                organization: "ASST Grande Ospedale Metropolitano Niguarda".into(),
                identifier: format!("NRE 0301A400{i:07}"),
            })
            .collect()
    }

    #[test]
    fn the_index_lists_every_row_with_the_font_embedded() {
        let pdf =
            index("Indice", "Fascicolo di Giulia Rossi", ["Data", "Documento", "Struttura", "Identificativo"], &rows(130)).expect("pdf");
        assert!(pdf.starts_with(b"%PDF-1.7"));
        let doc = Document::load_mem(&pdf).expect("parses");
        let pages = doc.get_pages();
        assert!(pages.len() >= 3, "130 rows need several pages: {}", pages.len());
        // every row's identifier is on some page, once
        let mut text = String::new();
        for n in pages.keys() {
            text.push_str(&doc.extract_text(&[*n]).unwrap_or_default());
        }
        for i in 0..130 {
            assert_eq!(text.matches(&format!("0301A400{i:07}")).count(), 1, "row {i}");
        }
        // fonts are embedded (FontFile2), not referenced by name only
        let embedded = doc.objects.values().filter(|o| o.as_dict().is_ok_and(|d| d.has(b"FontFile2"))).count();
        assert_eq!(embedded, 2);
    }

    #[test]
    fn italian_text_survives_the_encoding() {
        assert_eq!(encode("perché — €"), vec![b'p', b'e', b'r', b'c', b'h', 0xE9, b' ', 0x97, b' ', 0x80]);
        assert_eq!(encode("Ω"), b"?");
    }

    #[test]
    fn long_words_are_cut_to_the_column() {
        let f = Font::load(super::super::FONT_REGULAR, "x").expect("font");
        let lines = f.wrap("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 9.0, 50.0);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| f.width(l, 9.0) <= 50.0));
    }
}
