//! Validation as the national gateway does it: well-formed and safe XML, the CDA XSD, the
//! schematron of the document's template, terminology. Every problem is listed, not the first.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use crate::catalog::{self, DocType};
use crate::schematron::{Compiled, Kind, Schematron, SchematronError};
use crate::xsd;

pub const HL7_NS: &str = "urn:hl7-org:v3";
pub const LOINC: &str = "2.16.840.1.113883.6.1";
pub const ICD9CM: &str = "2.16.840.1.113883.6.103";
pub const CONFIDENTIALITY: &str = "2.16.840.1.113883.5.25";
pub const GENDER: &str = "2.16.840.1.113883.5.1";
/// The largest document accepted, in bytes (the national gateway's limit is in the same range).
pub const MAX_XML_BYTES: usize = 20 * 1024 * 1024;
/// The most XML nodes accepted: a guard against documents built to exhaust memory.
pub const MAX_NODES: u32 = 2_000_000;
/// The deepest element nesting accepted (real CDA2 documents stay under 40).
pub const MAX_DEPTH: usize = 256;
/// The most attributes on one element (a CDA element carries fewer than 10, namespace
/// declarations included). The parser checks each attribute against the element's others, so
/// a single element with a million attributes would hold a validator for hours.
pub const MAX_ATTRIBUTES: usize = 256;
/// How long the schematron may take over one document (real documents take well under a
/// second); past it the document is refused as too costly to check.
pub const DEFAULT_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);
/// The most schematron findings listed for one document; validation stops there.
pub const MAX_FINDINGS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Which check found a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Xml,
    Xsd,
    Schematron,
    Terminology,
    Metadata,
    /// The structure of a FHIR document Bundle.
    Fhir,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub source: Source,
    /// The rule's own id (`ERRORE-46a`, `W001`, `xsd`, `loinc-check-digit`...).
    pub id: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl Problem {
    pub fn error(source: Source, id: &str, message: impl Into<String>, location: Option<String>) -> Self {
        Self { severity: Severity::Error, source, id: id.into(), message: message.into(), location }
    }
    fn warning(source: Source, id: &str, message: impl Into<String>, location: Option<String>) -> Self {
        Self { severity: Severity::Warning, source, id: id.into(), message: message.into(), location }
    }
}

/// The outcome of validating one document.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub problems: Vec<Problem>,
    /// The document type chosen by the first `templateId/@root`, when known.
    #[serde(skip)]
    pub doc_type: Option<&'static DocType>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}

/// Decodes the bytes of an XML document, refusing oversized input and non-UTF-8 text.
pub fn decode(bytes: &[u8]) -> Result<String, Problem> {
    let xml_err = |id: &str, m: String| Problem::error(Source::Xml, id, m, None);
    if bytes.len() > MAX_XML_BYTES {
        return Err(xml_err("too-large", format!("the document is {} bytes; at most {MAX_XML_BYTES} are accepted", bytes.len())));
    }
    std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
        .map(str::to_string)
        .map_err(|e| xml_err("encoding", format!("the document is not UTF-8 text: {e}")))
}

/// Decodes and parses the bytes of an XML document, refusing what must never be processed:
/// non-UTF-8 text, oversized input, DTDs (so no entity expansion and no external fetch).
pub fn parse(bytes: &[u8]) -> Result<String, Problem> {
    let text = decode(bytes)?;
    tree(&text)?;
    Ok(text)
}

/// Parses text into a tree, refusing DTDs (nothing is expanded or fetched) and documents with
/// more than [`MAX_NODES`] nodes.
type Tree<'a> = roxmltree::Document<'a>;

self_cell::self_cell!(
    /// A well-formed document's text with its parsed tree: it moves between threads as one value.
    pub struct ParsedCda {
        owner: String,
        #[covariant]
        dependent: Tree,
    }
);

impl std::fmt::Debug for ParsedCda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedCda").field("bytes", &self.borrow_owner().len()).finish()
    }
}

pub fn tree(text: &str) -> Result<roxmltree::Document<'_>, Problem> {
    // the parser and every later step walk the tree recursively: a document nested deeper than
    // any CDA is refused before parsing rather than exhausting a thread's stack
    let shape = shape(text);
    if shape.depth > MAX_DEPTH {
        return Err(Problem::error(Source::Xml, "too-deep", format!("the document nests elements deeper than {MAX_DEPTH} levels"), None));
    }
    if shape.most_attributes > MAX_ATTRIBUTES {
        return Err(Problem::error(
            Source::Xml,
            "too-many-attributes",
            format!("an element of the document carries {} attributes; at most {MAX_ATTRIBUTES} are accepted", shape.most_attributes),
            None,
        ));
    }
    let opts = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: MAX_NODES };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| match e {
        roxmltree::Error::DtdDetected => Problem::error(
            Source::Xml,
            "dtd",
            "the document carries a DOCTYPE declaration; DTDs and entities are refused (nothing is expanded or fetched)",
            None,
        ),
        e => Problem::error(Source::Xml, "not-well-formed", format!("the document is not well-formed XML: {e}"), None),
    })?;
    Ok(doc)
}

/// What the pre-scan measures: the deepest element nesting and the most attributes on one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    depth: usize,
    most_attributes: usize,
}

/// The shape of XML text, by one linear scan that skips comments, CDATA, processing
/// instructions, declarations and quoted attribute values (no tree is built). Attributes are
/// counted by their `=` outside quotes.
fn shape(text: &str) -> Shape {
    let b = text.as_bytes();
    let (mut i, mut depth, mut max) = (0usize, 0usize, 0usize);
    let mut most_attributes = 0usize;
    let find = |from: usize, pat: &[u8]| b[from.min(b.len())..].windows(pat.len()).position(|w| w == pat).map(|p| from + p + pat.len());
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'/') => {
                depth = depth.saturating_sub(1);
                i = find(i, b">").unwrap_or(b.len());
            }
            Some(b'?') => i = find(i, b"?>").unwrap_or(b.len()),
            Some(b'!') if b[i..].starts_with(b"<!--") => i = find(i, b"-->").unwrap_or(b.len()),
            Some(b'!') if b[i..].starts_with(b"<![CDATA[") => i = find(i, b"]]>").unwrap_or(b.len()),
            Some(b'!') => i = find(i, b">").unwrap_or(b.len()),
            _ => {
                // an element start: to its '>', quotes respected
                let mut j = i + 1;
                let mut quote = None;
                let mut attributes = 0usize;
                while j < b.len() {
                    match (quote, b[j]) {
                        (Some(q), c) if c == q => quote = None,
                        (None, b'"' | b'\'') => quote = Some(b[j]),
                        (None, b'=') => attributes += 1,
                        (None, b'>') => break,
                        _ => {}
                    }
                    j += 1;
                }
                most_attributes = most_attributes.max(attributes);
                if b.get(j.wrapping_sub(1)) != Some(&b'/') {
                    depth += 1;
                    max = max.max(depth);
                }
                i = j + 1;
            }
        }
    }
    Shape { depth: max, most_attributes }
}

fn parsed_schematrons() -> &'static HashMap<&'static str, Result<Schematron, String>> {
    static CELL: OnceLock<HashMap<&'static str, Result<Schematron, String>>> = OnceLock::new();
    CELL.get_or_init(|| {
        catalog::TYPES.iter().map(|t| (t.template, Schematron::parse(t.schematron.0, t.schematron.1).map_err(|e| e.to_string()))).collect()
    })
}

fn icd9_diagnoses() -> &'static HashSet<&'static str> {
    static CELL: OnceLock<HashSet<&'static str>> = OnceLock::new();
    CELL.get_or_init(|| include_str!("../data/icd9cm-diagnoses.txt").lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect())
}

/// A validator for one thread: schematrons are compiled on first use and kept.
#[derive(Debug, Default)]
pub struct Validator {
    compiled: HashMap<&'static str, Compiled>,
    /// How long the schematron may run over one document ([`DEFAULT_BUDGET`] unless set).
    budget: Option<std::time::Duration>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A validator that gives the schematron `budget` per document instead of [`DEFAULT_BUDGET`].
    pub fn with_budget(budget: std::time::Duration) -> Self {
        Self { budget: Some(budget), ..Self::default() }
    }

    /// Compiles every national schematron now, the programs for xee included (otherwise each
    /// schematron is prepared on first use, and a rule's xee programs when it first needs xee).
    pub fn warm_up(&mut self) -> Result<(), String> {
        for t in catalog::TYPES {
            self.schematron(t)?.compile_all().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn schematron(&mut self, t: &'static DocType) -> Result<&Compiled, String> {
        if !self.compiled.contains_key(t.template) {
            let parsed = parsed_schematrons().get(t.template).ok_or("no schematron")?.as_ref().map_err(Clone::clone)?;
            let compiled = parsed.compile().map_err(|e| e.to_string())?;
            self.compiled.insert(t.template, compiled);
        }
        self.compiled.get(t.template).ok_or_else(|| "no schematron".to_string())
    }

    /// Validates the bytes of a CDA2 document.
    pub fn validate(&mut self, bytes: &[u8]) -> Report {
        let text = match parse(bytes) {
            Ok(text) => text,
            Err(p) => return Report { problems: vec![p], doc_type: None },
        };
        self.validate_text(&text)
    }

    /// Validates a document that [`parse`] accepted.
    pub fn validate_text(&mut self, text: &str) -> Report {
        match tree(text) {
            Ok(doc) => self.validate_tree(&doc),
            Err(p) => Report { problems: vec![p], doc_type: None },
        }
    }

    /// Validates a document that [`parse`] accepted and hands back its tree with the text, so a
    /// caller on another thread can read the document without parsing it again (`None` when it
    /// is not well-formed XML).
    pub fn validate_owned(&mut self, text: String) -> (Report, Option<ParsedCda>) {
        match ParsedCda::try_new(text, |t| tree(t)) {
            Ok(parsed) => (self.validate_tree(parsed.borrow_dependent()), Some(parsed)),
            Err(p) => (Report { problems: vec![p], doc_type: None }, None),
        }
    }

    fn validate_tree(&mut self, doc: &roxmltree::Document) -> Report {
        let (started, budget) = (std::time::Instant::now(), self.budget.unwrap_or(DEFAULT_BUDGET));
        let mut problems = Vec::new();
        let root = doc.root_element();
        if root.tag_name().name() != "ClinicalDocument" || root.tag_name().namespace() != Some(HL7_NS) {
            problems.push(Problem::error(
                Source::Xml,
                "not-cda",
                "the root element is not a CDA ClinicalDocument in the urn:hl7-org:v3 namespace",
                None,
            ));
            return Report { problems, doc_type: None };
        }
        problems.extend(xsd::validate(doc));
        let template = child(root, "templateId").and_then(|t| t.attribute("root"));
        let doc_type = template.and_then(catalog::by_template);
        match (template, doc_type) {
            (None, _) => problems.push(Problem::error(
                Source::Schematron,
                "template",
                "ClinicalDocument has no templateId: the schematron cannot be chosen",
                Some("/ClinicalDocument[1]".into()),
            )),
            (Some(t), None) => problems.push(Problem::error(
                Source::Schematron,
                "template",
                format!("the first templateId root {t} is not a national FSE 2.0 document template"),
                Some("/ClinicalDocument[1]/templateId[1]".into()),
            )),
            (Some(_), Some(t)) => match self.schematron(t) {
                Err(e) => problems.push(Problem::error(Source::Schematron, "engine", e, None)),
                Ok(compiled) => match compiled.validate_within(doc, started + budget, MAX_FINDINGS) {
                    Err(SchematronError::Deadline) => problems.push(Problem::error(
                        Source::Schematron,
                        "too-costly",
                        format!(
                            "checking the document against its schematron took longer than {} s, far beyond any real document; it is refused",
                            budget.as_secs()
                        ),
                        None,
                    )),
                    Err(e) => problems.push(Problem::error(Source::Schematron, "engine", e.to_string(), None)),
                    Ok(firings) => {
                        let stopped = firings.len() >= MAX_FINDINGS;
                        problems.extend(firings.into_iter().take(MAX_FINDINGS).map(|f| Problem {
                            severity: if f.kind == Kind::Assert { Severity::Error } else { Severity::Warning },
                            source: Source::Schematron,
                            id: f.id,
                            message: f.message,
                            location: Some(f.location),
                        }));
                        if stopped {
                            problems.push(Problem::error(
                                Source::Schematron,
                                "too-many-problems",
                                format!("the schematron check stopped after {MAX_FINDINGS} findings"),
                                None,
                            ));
                        }
                    }
                },
            },
        }
        problems.extend(terminology(root, doc_type));
        Report { problems, doc_type }
    }
}

/// The first child element of `node` named `name` in the HL7 namespace.
pub fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(HL7_NS))
}

/// `/ClinicalDocument[1]/...` for an element (the schematron engine's location format).
pub fn location(node: roxmltree::Node) -> String {
    let mut steps = Vec::new();
    let mut current = Some(node);
    while let Some(n) = current.filter(|n| n.is_element()) {
        let name = n.tag_name();
        let mut position = 1;
        let mut sibling = n.prev_sibling_element();
        while let Some(s) = sibling {
            if s.tag_name() == name {
                position += 1;
            }
            sibling = s.prev_sibling_element();
        }
        steps.push(format!("{}[{position}]", name.name()));
        current = n.parent();
    }
    steps.reverse();
    format!("/{}", steps.join("/"))
}

/// Elements whose `value` is an HL7 timestamp (TS) in the CDA schema.
const TS_ELEMENTS: &[&str] = &["effectiveTime", "time", "birthTime", "deceasedTime", "expirationTime", "signatureTime"];

/// Whether `v` is an HL7 v3 TS literal with real calendar values.
pub fn ts_ok(v: &str) -> bool {
    let (main, zone) = match v.find(['+', '-']) {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    if zone.is_some_and(|z| z.len() != 4 || !z.bytes().all(|b| b.is_ascii_digit()) || z[..2] > *"14" || z[2..] > *"59") {
        return false;
    }
    let (digits, fraction) = match main.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (main, None),
    };
    if fraction.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) || digits.len() != 14) {
        return false;
    }
    if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let n = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<u32>().ok());
    let month_ok = n(4..6).is_none_or(|m| (1..=12).contains(&m));
    let day_ok = n(6..8).is_none_or(|d| {
        let (y, m) = (n(0..4).unwrap_or(2000), n(4..6).unwrap_or(1));
        let month = u8::try_from(m).ok().and_then(|m| time::Month::try_from(m).ok());
        let days = month.zip(i32::try_from(y).ok()).map_or(0, |(month, y)| u32::from(month.length(y)));
        (1..=days).contains(&d)
    });
    let time_ok = n(8..10).is_none_or(|h| h <= 23) && n(10..12).is_none_or(|m| m <= 59) && n(12..14).is_none_or(|s| s <= 60);
    month_ok && day_ok && time_ok
}

/// Whether a LOINC code's check digit (mod 10, as LOINC defines it) is right.
pub fn loinc_check_digit_ok(code: &str) -> bool {
    // Answer (LA), part (LP), group (LG) and answer-list (LL) codes use another check digit
    // scheme: only their form is checked.
    if let Some(rest) = ["LA", "LP", "LG", "LL"].iter().find_map(|p| code.strip_prefix(p)) {
        return rest.split_once('-').is_some_and(|(b, c)| {
            !b.is_empty() && b.len() <= 7 && b.bytes().all(|x| x.is_ascii_digit()) && c.len() == 1 && c.bytes().all(|x| x.is_ascii_digit())
        });
    }
    let Some((body, check)) = code.split_once('-') else { return false };
    if body.is_empty() || body.len() > 7 || check.len() != 1 || !body.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Some(check) = check.bytes().next().filter(u8::is_ascii_digit).map(|b| u32::from(b - b'0')) else {
        return false;
    };
    // Luhn over the digits, the rightmost doubled.
    let mut sum = 0;
    for (i, b) in body.bytes().rev().enumerate() {
        let d = u32::from(b - b'0');
        sum += if i % 2 == 0 {
            let x = d * 2;
            x / 10 + x % 10
        } else {
            d
        };
    }
    (10 - sum % 10) % 10 == check
}

fn terminology(root: roxmltree::Node, doc_type: Option<&DocType>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let term = |id: &str, m: String, n: roxmltree::Node| Problem::error(Source::Terminology, id, m, Some(location(n)));
    for node in root.descendants().filter(|n| n.is_element()) {
        let name = node.tag_name().name();
        let interval_part = matches!(name, "low" | "high" | "center");
        let is_ts = if interval_part {
            node.parent_element().is_some_and(|p| {
                matches!(p.tag_name().name(), "effectiveTime" | "time")
                    || p.attribute(("http://www.w3.org/2001/XMLSchema-instance", "type")).is_some_and(|t| t.ends_with("IVL_TS"))
            })
        } else {
            TS_ELEMENTS.contains(&name)
        };
        if is_ts && node.attribute(("http://www.w3.org/2001/XMLSchema-instance", "type")).is_none_or(|t| t.ends_with("TS")) {
            if let Some(v) = node.attribute("value") {
                if !ts_ok(v) {
                    problems.push(Problem::error(
                        Source::Xsd,
                        "ts",
                        format!("{v} is not an HL7 timestamp (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+|-ZZZZ])"),
                        Some(location(node)),
                    ));
                }
            }
        }
        let (Some(system), Some(code)) = (node.attribute("codeSystem"), node.attribute("code")) else { continue };
        match system {
            LOINC if !loinc_check_digit_ok(code) => {
                problems.push(term("loinc", format!("{code} is not a LOINC code (wrong format or check digit)"), node))
            }
            ICD9CM => {
                let procedure = code.len() >= 2
                    && code.len() <= 5
                    && code.bytes().take(2).all(|b| b.is_ascii_digit())
                    && (code.len() == 2 || code.as_bytes()[2] == b'.' && code[3..].bytes().all(|b| b.is_ascii_digit()) && code.len() > 3);
                if !procedure && !icd9_diagnoses().contains(code) {
                    problems.push(term("icd9cm", format!("{code} is not an ICD-9-CM diagnosis or procedure code"), node));
                }
            }
            CONFIDENTIALITY if !matches!(code, "N" | "R" | "V") => {
                problems.push(term("confidentiality", format!("confidentiality {code} is not N, R or V"), node))
            }
            GENDER if !matches!(code, "M" | "F" | "UN") => {
                problems.push(term("gender", format!("administrative gender {code} is not M, F or UN"), node))
            }
            _ => {}
        }
    }
    if let (Some(t), Some(code)) = (doc_type, child(root, "code")) {
        let loinc = code.attribute("code").unwrap_or_default();
        if code.attribute("codeSystem") == Some(LOINC)
            && loinc != t.loinc
            && !catalog::TYPES.iter().any(|o| o.template == t.template && o.loinc == loinc)
        {
            problems.push(Problem::warning(
                Source::Terminology,
                "type",
                format!("document code {loinc} differs from the type {} of template {}", t.loinc, t.template),
                Some(location(code)),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loinc_check_digits() {
        for ok in ["11502-2", "34105-7", "59258-4", "2160-0", "718-7", "60591-5", "LA28752-6", "LA16666-2"] {
            assert!(loinc_check_digit_ok(ok), "{ok}");
        }
        for bad in ["11502-3", "34105", "ABC-1", "-1", "11502-22", "LA16666", "LX16666-2"] {
            assert!(!loinc_check_digit_ok(bad), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        for ok in ["2022", "202203", "20220330", "20220330112426+0100", "20240229", "20220330112426.123-0500"] {
            assert!(ts_ok(ok), "{ok}");
        }
        for bad in ["2022-13-45", "20221345", "20230229", "2022033", "20220330251000", "20220330112426+01", "x"] {
            assert!(!ts_ok(bad), "{bad}");
        }
    }

    #[test]
    fn dtds_and_entities_are_refused() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><a>&lol2;</a>"#;
        assert_eq!(parse(bomb).unwrap_err().id, "dtd");
        let xxe = br#"<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>"#;
        assert_eq!(parse(xxe).unwrap_err().id, "dtd");
        assert_eq!(parse(b"<a><b></a>").unwrap_err().id, "not-well-formed");
        assert_eq!(parse(b"\xff\xfe<a/>").unwrap_err().id, "encoding");
        let deep = format!("{}{}", "<a>".repeat(5000), "</a>".repeat(5000));
        assert_eq!(parse(deep.as_bytes()).unwrap_err().id, "too-deep");
        let fine = format!("{}{}", "<a>".repeat(200), "</a>".repeat(200));
        assert!(parse(fine.as_bytes()).is_ok());
        assert_eq!(
            shape(r#"<?xml version="1.0"?><a x="1>2" y='<=' z="="><!-- <b q="1"> --><![CDATA[<c><c>]]><d/><e></e></a>"#),
            Shape { depth: 2, most_attributes: 3 }
        );
    }

    /// The parser compares each attribute with the element's others: 40,000 attributes on one
    /// element took 2.8 s and 1.5 million would take about an hour. Refused by the linear
    /// pre-scan before any parsing, at once.
    #[test]
    fn an_element_with_too_many_attributes_is_refused_before_parsing() {
        let attrs = |n: usize| (0..n).map(|i| format!(" a{i}=''")).collect::<String>();
        let many = format!("<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><x{}/></ClinicalDocument>", attrs(1_500_000));
        assert!(many.len() < MAX_XML_BYTES, "under the size limit: {} bytes", many.len());
        let p = parse(many.as_bytes()).unwrap_err();
        assert_eq!(p.id, "too-many-attributes");
        assert!(p.message.contains("1500000 attributes"), "{}", p.message);
        let fine = format!("<a{}/>", attrs(MAX_ATTRIBUTES));
        assert!(parse(fine.as_bytes()).is_ok());
        let over = format!("<a{}/>", attrs(MAX_ATTRIBUTES + 1));
        assert_eq!(parse(over.as_bytes()).unwrap_err().id, "too-many-attributes");
    }
}
