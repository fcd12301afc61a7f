//! Validation against the CDA R2 schema `POCD_MT000040UV02` (with the HL7 datatypes and the
//! `sdtc`, `lab` and `pharm` extensions), shipped in `data/xsd`.
//!
//! No maintained Rust crate validates XML Schema, so this module interprets the subset of XSD 1.0
//! these files use: global elements, named and anonymous complex types, `sequence` / `choice` /
//! `any` particles with occurrence bounds, `complexContent` extension and restriction, attributes
//! and attribute groups (required, prohibited, fixed), enumerated simple types through
//! restriction, list and union, and `xsi:type`. It checks which elements may appear where and in
//! which order and number, which attributes are required or unknown and that enumerated attribute
//! values are in their enumeration. Regular-expression facets (7 in these files) are not checked.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::validate::{location, Problem, Source, HL7_NS};

const XS: &str = "http://www.w3.org/2001/XMLSchema";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const UNBOUNDED: u32 = u32::MAX;

type QName = (String, String);

#[derive(Debug, Clone)]
enum Particle {
    Element { name: QName, ty: Option<QName>, min: u32, max: u32 },
    Seq(Vec<Particle>, u32, u32),
    Choice(Vec<Particle>, u32, u32),
    Any { min: u32, max: u32 },
}

#[derive(Debug, Clone)]
struct Attr {
    name: String,
    ty: Option<QName>,
    required: bool,
    prohibited: bool,
    fixed: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Complex {
    content: Option<Particle>,
    attrs: Vec<Attr>,
    any_attribute: bool,
    mixed: bool,
    /// The element declarations of the content (first one per name), with their type (`None`:
    /// a reference to a global element), computed once the derivations are resolved.
    decls: Vec<(QName, Option<QName>)>,
}

#[derive(Debug, Clone)]
enum Simple {
    Enum(Vec<String>),
    Restrict(QName),
    List(Option<QName>),
    Union(Vec<QName>),
    Anything,
}

#[derive(Debug, Default)]
struct Schema {
    elements: HashMap<QName, QName>,
    complex: HashMap<QName, Complex>,
    simple: HashMap<QName, Simple>,
}

const FILES: &[(&str, &str, Option<&str>)] = &[
    ("POCD_MT000040UV02.xsd", include_str!("../data/xsd/POCD_MT000040UV02.xsd"), None),
    ("NarrativeBlock.xsd", include_str!("../data/xsd/NarrativeBlock.xsd"), None),
    ("infrastructureRoot.xsd", include_str!("../data/xsd/infrastructureRoot.xsd"), Some(HL7_NS)),
    ("datatypes.xsd", include_str!("../data/xsd/datatypes.xsd"), Some(HL7_NS)),
    ("datatypes-base.xsd", include_str!("../data/xsd/datatypes-base.xsd"), Some(HL7_NS)),
    ("datatypes-rX-cs.xsd", include_str!("../data/xsd/datatypes-rX-cs.xsd"), Some(HL7_NS)),
    ("voc.xsd", include_str!("../data/xsd/voc.xsd"), Some(HL7_NS)),
    ("sdtcExtension.xsd", include_str!("../data/xsd/sdtcExtension.xsd"), None),
    ("labExtension_1.2_gen.xsd", include_str!("../data/xsd/labExtension_1.2_gen.xsd"), None),
    ("pharmExtension.xsd", include_str!("../data/xsd/pharmExtension.xsd"), None),
    ("CDA.xsd", include_str!("../data/xsd/CDA.xsd"), None),
];

fn schema() -> &'static Result<Schema, String> {
    static CELL: OnceLock<Result<Schema, String>> = OnceLock::new();
    CELL.get_or_init(load)
}

/// Loads the shipped schema; an error means the shipped files are broken (tested).
pub fn check_schema() -> Result<(), String> {
    schema().as_ref().map(|_| ()).map_err(Clone::clone)
}

struct Loader<'a, 's> {
    schema: &'a mut Schema,
    target: String,
    anonymous: usize,
    groups: HashMap<QName, Vec<roxmltree::Node<'s, 's>>>,
}

fn load() -> Result<Schema, String> {
    let docs: Vec<(roxmltree::Document, Option<&str>)> = FILES
        .iter()
        .map(|(name, text, chameleon)| roxmltree::Document::parse(text).map(|d| (d, *chameleon)).map_err(|e| format!("{name}: {e}")))
        .collect::<Result<_, _>>()?;
    let mut schema = Schema::default();
    let mut anonymous = 0;
    // Attribute groups first: types refer to them.
    let mut groups = HashMap::new();
    for (doc, chameleon) in &docs {
        let root = doc.root_element();
        let target = chameleon.map(str::to_string).or_else(|| root.attribute("targetNamespace").map(str::to_string)).unwrap_or_default();
        for g in root.children().filter(|n| is_xs(*n, "attributeGroup")) {
            if let Some(name) = g.attribute("name") {
                groups.insert((target.clone(), name.to_string()), g.children().filter(|n| n.is_element()).collect::<Vec<_>>());
            }
        }
    }
    for (doc, chameleon) in &docs {
        let root = doc.root_element();
        let target = chameleon.map(str::to_string).or_else(|| root.attribute("targetNamespace").map(str::to_string)).unwrap_or_default();
        let mut loader = Loader { schema: &mut schema, target, anonymous, groups: HashMap::new() };
        for (k, v) in &groups {
            loader.groups.insert(k.clone(), v.clone());
        }
        for n in root.children().filter(|n| n.is_element()) {
            match n.tag_name().name() {
                "element" => {
                    let name = (loader.target.clone(), n.attribute("name").ok_or("global element without a name")?.to_string());
                    let ty = loader.element_type(n)?;
                    loader.schema.elements.insert(name, ty);
                }
                "complexType" => {
                    let name = (loader.target.clone(), n.attribute("name").ok_or("global type without a name")?.to_string());
                    let c = loader.complex(n)?;
                    loader.schema.complex.insert(name, c);
                }
                "simpleType" => {
                    let name = (loader.target.clone(), n.attribute("name").ok_or("global type without a name")?.to_string());
                    let s = loader.simple(n);
                    loader.schema.simple.insert(name, s);
                }
                _ => {}
            }
        }
        anonymous = loader.anonymous;
    }
    resolve_derivations(&mut schema, &docs)?;
    for c in schema.complex.values_mut() {
        if let Some(content) = &c.content {
            let mut decls = HashMap::new();
            declarations(content, &mut decls);
            c.decls = decls.into_iter().collect();
        }
    }
    Ok(schema)
}

fn is_xs(n: roxmltree::Node, name: &str) -> bool {
    n.is_element() && n.tag_name().namespace() == Some(XS) && n.tag_name().name() == name
}

fn occurs(n: roxmltree::Node, attr: &str) -> u32 {
    match n.attribute(attr) {
        Some("unbounded") => UNBOUNDED,
        Some(v) => v.parse().unwrap_or(1),
        None => 1,
    }
}

impl Loader<'_, '_> {
    fn qname(&self, n: roxmltree::Node, value: &str) -> QName {
        match value.split_once(':') {
            Some((prefix, local)) => (n.lookup_namespace_uri(Some(prefix)).unwrap_or_default().to_string(), local.to_string()),
            None => {
                let ns = n.lookup_namespace_uri(None).map(str::to_string);
                (ns.filter(|ns| ns != XS).unwrap_or_else(|| self.target.clone()), value.to_string())
            }
        }
    }

    /// The type of an element declaration: named, or an anonymous one registered under a new name.
    fn element_type(&mut self, n: roxmltree::Node) -> Result<QName, String> {
        if let Some(t) = n.attribute("type") {
            return Ok(self.qname(n, t));
        }
        self.anonymous += 1;
        let name = (self.target.clone(), format!("#anon{}", self.anonymous));
        if let Some(ct) = n.children().find(|c| is_xs(*c, "complexType")) {
            let c = self.complex(ct)?;
            self.schema.complex.insert(name.clone(), c);
        } else if let Some(st) = n.children().find(|c| is_xs(*c, "simpleType")) {
            let s = self.simple(st);
            self.schema.simple.insert(name.clone(), s);
        } else {
            self.schema.complex.insert(
                name.clone(),
                Complex { any_attribute: true, mixed: true, content: Some(Particle::Any { min: 0, max: UNBOUNDED }), ..Complex::default() },
            );
        }
        Ok(name)
    }

    fn complex(&mut self, n: roxmltree::Node) -> Result<Complex, String> {
        let mut c = Complex { mixed: n.attribute("mixed") == Some("true"), ..Complex::default() };
        let mut body = n;
        if let Some(cc) = n.children().find(|x| is_xs(*x, "complexContent") || is_xs(*x, "simpleContent")) {
            if cc.attribute("mixed") == Some("true") {
                c.mixed = true;
            }
            if is_xs(cc, "simpleContent") {
                c.mixed = true;
            }
            // The derivation is recorded here and resolved once every type is loaded.
            if let Some(d) = cc.children().find(|x| is_xs(*x, "extension") || is_xs(*x, "restriction")) {
                body = d;
            }
        }
        for x in body.children().filter(|x| x.is_element()) {
            match x.tag_name().name() {
                "sequence" | "choice" | "all" | "group" => c.content = Some(self.particle(x)?),
                "attribute" => c.attrs.push(self.attribute(x)),
                "attributeGroup" => {
                    let key = self.qname(x, x.attribute("ref").unwrap_or_default());
                    for a in self.groups.get(&key).cloned().unwrap_or_default() {
                        if is_xs(a, "attribute") {
                            c.attrs.push(self.attribute(a));
                        }
                    }
                }
                "anyAttribute" => c.any_attribute = true,
                _ => {}
            }
        }
        Ok(c)
    }

    fn attribute(&mut self, n: roxmltree::Node) -> Attr {
        let ty = match n.attribute("type") {
            Some(t) => Some(self.qname(n, t)),
            None => n.children().find(|c| is_xs(*c, "simpleType")).map(|st| {
                self.anonymous += 1;
                let name = (self.target.clone(), format!("#anon{}", self.anonymous));
                let s = self.simple(st);
                self.schema.simple.insert(name.clone(), s);
                name
            }),
        };
        Attr {
            name: n.attribute("name").or(n.attribute("ref")).unwrap_or_default().to_string(),
            ty,
            required: n.attribute("use") == Some("required"),
            prohibited: n.attribute("use") == Some("prohibited"),
            fixed: n.attribute("fixed").map(str::to_string),
        }
    }

    fn simple(&mut self, n: roxmltree::Node) -> Simple {
        for x in n.children().filter(|x| x.is_element()) {
            match x.tag_name().name() {
                "restriction" => {
                    let values: Vec<String> = x
                        .children()
                        .filter(|e| is_xs(*e, "enumeration"))
                        .filter_map(|e| e.attribute("value").map(str::to_string))
                        .collect();
                    if !values.is_empty() {
                        return Simple::Enum(values);
                    }
                    return match x.attribute("base") {
                        Some(b) => Simple::Restrict(self.qname(x, b)),
                        None => Simple::Anything,
                    };
                }
                "list" => return Simple::List(x.attribute("itemType").map(|t| self.qname(x, t))),
                "union" => {
                    let mut members =
                        x.attribute("memberTypes").unwrap_or_default().split_whitespace().map(|m| self.qname(x, m)).collect::<Vec<_>>();
                    for st in x.children().filter(|c| is_xs(*c, "simpleType")) {
                        self.anonymous += 1;
                        let name = (self.target.clone(), format!("#anon{}", self.anonymous));
                        let s = self.simple(st);
                        self.schema.simple.insert(name.clone(), s);
                        members.push(name);
                    }
                    return Simple::Union(members);
                }
                _ => {}
            }
        }
        Simple::Anything
    }

    fn particle(&mut self, n: roxmltree::Node) -> Result<Particle, String> {
        let (min, max) = (occurs(n, "minOccurs"), occurs(n, "maxOccurs"));
        Ok(match n.tag_name().name() {
            "element" => {
                if let Some(r) = n.attribute("ref") {
                    let name = self.qname(n, r);
                    Particle::Element { ty: None, name, min, max }
                } else {
                    let name = (self.target.clone(), n.attribute("name").ok_or("element without a name")?.to_string());
                    let ty = self.element_type(n)?;
                    Particle::Element { name, ty: Some(ty), min, max }
                }
            }
            "sequence" | "all" => Particle::Seq(self.particles(n)?, min, max),
            "choice" => Particle::Choice(self.particles(n)?, min, max),
            "any" => Particle::Any { min, max },
            other => return Err(format!("unsupported particle {other}")),
        })
    }

    fn particles(&mut self, n: roxmltree::Node) -> Result<Vec<Particle>, String> {
        n.children()
            .filter(|c| c.is_element() && c.tag_name().namespace() == Some(XS) && c.tag_name().name() != "annotation")
            .map(|c| self.particle(c))
            .collect()
    }
}

/// Applies `complexContent` extension (base content, then the type's own) and restriction (the
/// type's own content; base attributes unless redeclared or prohibited).
fn resolve_derivations(schema: &mut Schema, docs: &[(roxmltree::Document, Option<&str>)]) -> Result<(), String> {
    let mut bases: HashMap<QName, (QName, bool)> = HashMap::new();
    for (doc, chameleon) in docs {
        let root = doc.root_element();
        let target = chameleon.map(str::to_string).or_else(|| root.attribute("targetNamespace").map(str::to_string)).unwrap_or_default();
        for ct in root.children().filter(|n| is_xs(*n, "complexType")) {
            let Some(name) = ct.attribute("name") else { continue };
            let derivation = ct
                .children()
                .filter(|x| is_xs(*x, "complexContent") || is_xs(*x, "simpleContent"))
                .flat_map(|cc| cc.children())
                .find(|x| is_xs(*x, "extension") || is_xs(*x, "restriction"));
            if let Some(d) = derivation {
                let base = d.attribute("base").unwrap_or_default();
                let q = match base.split_once(':') {
                    Some((p, l)) => (d.lookup_namespace_uri(Some(p)).unwrap_or_default().to_string(), l.to_string()),
                    None => (
                        d.lookup_namespace_uri(None).filter(|ns| *ns != XS).map(str::to_string).unwrap_or_else(|| target.clone()),
                        base.to_string(),
                    ),
                };
                bases.insert((target.clone(), name.to_string()), (q, is_xs(d, "extension")));
            }
        }
    }
    // Resolve in dependency order by memoised recursion.
    fn resolved(
        name: &QName,
        schema: &Schema,
        bases: &HashMap<QName, (QName, bool)>,
        done: &mut HashMap<QName, Complex>,
        depth: usize,
    ) -> Option<Complex> {
        if let Some(c) = done.get(name) {
            return Some(c.clone());
        }
        let own = schema.complex.get(name).or_else(|| schema.complex.get(&(HL7_NS.to_string(), name.1.clone())))?.clone();
        let result = match bases.get(name) {
            Some((base, extension)) if depth < 64 => match resolved(base, schema, bases, done, depth + 1) {
                Some(b) => {
                    let mut attrs: Vec<Attr> = b.attrs.iter().filter(|a| !own.attrs.iter().any(|o| o.name == a.name)).cloned().collect();
                    attrs.extend(own.attrs.iter().filter(|a| !a.prohibited).cloned());
                    let content = if *extension {
                        match (b.content, own.content) {
                            (Some(x), Some(y)) => Some(Particle::Seq(vec![x, y], 1, 1)),
                            (x, y) => x.or(y),
                        }
                    } else {
                        own.content
                    };
                    Complex {
                        content,
                        attrs,
                        any_attribute: own.any_attribute || (*extension && b.any_attribute),
                        mixed: own.mixed || (*extension && b.mixed),
                        decls: Vec::new(),
                    }
                }
                None => own,
            },
            _ => own,
        };
        done.insert(name.clone(), result.clone());
        Some(result)
    }
    let mut done = HashMap::new();
    let names: Vec<QName> = schema.complex.keys().cloned().collect();
    for n in &names {
        resolved(n, schema, &bases, &mut done, 0);
    }
    schema.complex = done;
    Ok(())
}

impl Schema {
    fn complex_type(&self, q: &QName) -> Option<&Complex> {
        self.complex.get(q).or_else(|| self.complex.get(&(HL7_NS.to_string(), q.1.clone())))
    }

    fn simple_type(&self, q: &QName) -> Option<&Simple> {
        self.simple.get(q).or_else(|| self.simple.get(&(HL7_NS.to_string(), q.1.clone())))
    }

    fn value_ok(&self, q: &QName, value: &str, depth: usize) -> bool {
        if q.0 == XS || depth > 32 {
            return true;
        }
        match self.simple_type(q) {
            None | Some(Simple::Anything) => true,
            Some(Simple::Enum(values)) => values.iter().any(|v| v == value),
            Some(Simple::Restrict(base)) => self.value_ok(base, value, depth + 1),
            Some(Simple::List(item)) => item.as_ref().is_none_or(|i| value.split_whitespace().all(|v| self.value_ok(i, v, depth + 1))),
            Some(Simple::Union(members)) => members.is_empty() || members.iter().any(|m| self.value_ok(m, value, depth + 1)),
        }
    }
}

/// Validates a parsed document against the CDA schema.
pub fn validate(doc: &roxmltree::Document) -> Vec<Problem> {
    let schema = match schema() {
        Ok(s) => s,
        Err(e) => return vec![Problem::error(Source::Xsd, "xsd-engine", format!("the CDA schema did not load: {e}"), None)],
    };
    let root = doc.root_element();
    let mut problems = Vec::new();
    let key = (root.tag_name().namespace().unwrap_or_default().to_string(), root.tag_name().name().to_string());
    match schema.elements.get(&key) {
        Some(ty) => check_element(schema, root, ty, &mut problems),
        None => problems.push(xsd_error(format!("<{}> is not a CDA root element", key.1), root)),
    }
    problems
}

fn xsd_error(message: String, n: roxmltree::Node) -> Problem {
    Problem::error(Source::Xsd, "xsd", message, Some(location(n)))
}

fn check_element(schema: &Schema, el: roxmltree::Node, declared: &QName, problems: &mut Vec<Problem>) {
    if problems.len() > 200 {
        return;
    }
    let by_xsi_type;
    let mut ty = declared;
    if let Some(x) = el.attribute((XSI, "type")) {
        by_xsi_type = match x.split_once(':') {
            Some((p, l)) => (el.lookup_namespace_uri(Some(p)).unwrap_or_default().to_string(), l.to_string()),
            None => (el.lookup_namespace_uri(None).unwrap_or_default().to_string(), x.to_string()),
        };
        ty = &by_xsi_type;
        if schema.complex_type(ty).is_none() && schema.simple_type(ty).is_none() {
            problems.push(xsd_error(format!("xsi:type {x} on <{}> is not a type of the CDA schema", el.tag_name().name()), el));
            return;
        }
    }
    let Some(ct) = schema.complex_type(ty) else {
        // A simple type: the text must be a valid value.
        if !schema.value_ok(ty, el.text().unwrap_or_default().trim(), 0) {
            problems.push(xsd_error(format!("<{}> has a value outside its enumeration", el.tag_name().name()), el));
        }
        return;
    };
    for a in el.attributes() {
        if matches!(a.namespace(), Some(XSI) | Some("http://www.w3.org/XML/1998/namespace")) {
            continue;
        }
        match ct.attrs.iter().find(|d| d.name == a.name() && !d.prohibited) {
            None if !ct.any_attribute => {
                problems.push(xsd_error(format!("attribute {} is not allowed on <{}>", a.name(), el.tag_name().name()), el))
            }
            None => {}
            Some(d) => {
                let bad_fixed = d.fixed.as_deref().is_some_and(|f| f != a.value());
                let bad_value = d.ty.as_ref().is_some_and(|t| !schema.value_ok(t, a.value(), 0));
                if bad_fixed || bad_value {
                    problems.push(xsd_error(
                        format!("attribute {}=\"{}\" on <{}> is not an allowed value", a.name(), a.value(), el.tag_name().name()),
                        el,
                    ));
                }
            }
        }
    }
    for d in ct.attrs.iter().filter(|d| d.required) {
        if el.attribute(d.name.as_str()).is_none() {
            problems.push(xsd_error(format!("<{}> lacks the required attribute {}", el.tag_name().name(), d.name), el));
        }
    }
    let children: Vec<roxmltree::Node> = el.children().filter(|c| c.is_element()).collect();
    if !ct.mixed && el.children().any(|c| c.is_text() && !c.text().unwrap_or_default().trim().is_empty()) {
        problems.push(xsd_error(format!("<{}> may not contain text", el.tag_name().name()), el));
    }
    let names: Vec<(&str, &str)> = children.iter().map(|c| (c.tag_name().namespace().unwrap_or_default(), c.tag_name().name())).collect();
    let Some(content) = &ct.content else {
        if let Some(c) = children.first() {
            problems.push(xsd_error(format!("<{}> may not contain elements (found <{}>)", el.tag_name().name(), c.tag_name().name()), *c));
        }
        return;
    };
    let mut high = 0;
    let ends = matches(content, &names, &[0], &mut high);
    if !ends.contains(&names.len()) {
        match children.get(high) {
            Some(c) => problems.push(xsd_error(
                format!(
                    "<{}> is not allowed here in <{}> (unexpected, out of order or repeated too often)",
                    c.tag_name().name(),
                    el.tag_name().name()
                ),
                *c,
            )),
            None => problems.push(xsd_error(format!("<{}> lacks a required element", el.tag_name().name()), el)),
        }
        return;
    }
    for (c, (ns, local)) in children.iter().zip(&names) {
        let ty = match ct.decls.iter().find(|(q, _)| q.0 == *ns && q.1 == *local) {
            Some((_, Some(t))) => Some(t),
            Some((q, None)) => schema.elements.get(q),
            None => None, // matched by xs:any
        };
        if let Some(t) = ty {
            check_element(schema, *c, t, problems);
        }
    }
}

fn declarations(p: &Particle, out: &mut HashMap<QName, Option<QName>>) {
    match p {
        Particle::Element { name, ty, .. } => {
            out.entry(name.clone()).or_insert_with(|| ty.clone());
        }
        Particle::Seq(ps, ..) | Particle::Choice(ps, ..) => ps.iter().for_each(|p| declarations(p, out)),
        Particle::Any { .. } => {}
    }
}

/// Every position reachable after matching `p` from any of `starts`; `high` records the furthest
/// child any element particle consumed (where an invalid content went wrong).
fn matches(p: &Particle, names: &[(&str, &str)], starts: &[usize], high: &mut usize) -> Vec<usize> {
    let (min, max) = match p {
        Particle::Element { min, max, .. } | Particle::Seq(_, min, max) | Particle::Choice(_, min, max) | Particle::Any { min, max } => {
            (*min, *max)
        }
    };
    let once = |from: &[usize], high: &mut usize| -> Vec<usize> {
        let mut out = Vec::new();
        match p {
            Particle::Element { name, .. } => {
                out.extend(from.iter().filter(|&&i| names.get(i).is_some_and(|n| n.0 == name.0 && n.1 == name.1)).map(|i| i + 1))
            }
            Particle::Any { .. } => out.extend(from.iter().filter(|&&i| i < names.len()).map(|i| i + 1)),
            Particle::Seq(items, ..) => {
                let mut cur = from.to_vec();
                for it in items {
                    cur = matches(it, names, &cur, high);
                    if cur.is_empty() {
                        break;
                    }
                }
                out = cur;
            }
            Particle::Choice(items, ..) => {
                for it in items {
                    out.extend(matches(it, names, from, high));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        if let Some(&m) = out.last() {
            *high = (*high).max(m);
        }
        out
    };
    let mut reached: Vec<usize> = if min == 0 { starts.to_vec() } else { Vec::new() };
    let cap = if max == UNBOUNDED { min.saturating_add(names.len() as u32 + 1) } else { max };
    let mut frontier = starts.to_vec();
    for count in 1..=cap {
        let next = once(&frontier, high);
        if next.is_empty() {
            break;
        }
        if count >= min {
            reached.extend(next.iter().copied());
        }
        if next == frontier && count >= min {
            break;
        }
        frontier = next;
    }
    reached.sort_unstable();
    reached.dedup();
    reached
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_schema_loads() {
        check_schema().unwrap();
        let s = schema().as_ref().unwrap();
        assert!(s.elements.contains_key(&(HL7_NS.to_string(), "ClinicalDocument".to_string())));
        let obs = s.complex_type(&(HL7_NS.to_string(), "POCD_MT000040UV02.Observation".to_string())).unwrap();
        assert!(obs.attrs.iter().any(|a| a.name == "moodCode" && a.required));
        // CD extends ANY: it has nullFlavor from the base and code of its own.
        let cd = s.complex_type(&(HL7_NS.to_string(), "CD".to_string())).unwrap();
        assert!(cd.attrs.iter().any(|a| a.name == "code") && cd.attrs.iter().any(|a| a.name == "nullFlavor"));
    }
}
