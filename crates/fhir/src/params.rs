//! The search-parameter registry, built at start-up from the official R4 SearchParameter Bundle
//! shipped in `data/search-parameters.json`, and the extraction of index values from resources.

use crate::datetime::{self, DateRange};
use crate::fhirpath::{self, Expr, Item};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

static SEARCH_PARAMETERS: &str = include_str!("../data/search-parameters.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "number" => Self::Number,
            "date" => Self::Date,
            "string" => Self::String,
            "token" => Self::Token,
            "reference" => Self::Reference,
            "composite" => Self::Composite,
            "quantity" => Self::Quantity,
            "uri" => Self::Uri,
            "special" => Self::Special,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Date => "date",
            Self::String => "string",
            Self::Token => "token",
            Self::Reference => "reference",
            Self::Composite => "composite",
            Self::Quantity => "quantity",
            Self::Uri => "uri",
            Self::Special => "special",
        }
    }
}

/// One search parameter of one resource type.
#[derive(Debug)]
pub struct SearchParam {
    pub code: String,
    pub url: String,
    pub kind: ParamType,
    pub expression: String,
    pub expr: Option<Expr>,
    /// Target resource types of a reference parameter.
    pub targets: Vec<String>,
    /// For composites: (component parameter code, its type, expression relative to the root).
    pub components: Vec<(String, ParamType, Expr)>,
}

/// Where the rows of a parameter that has none of its own are found (decision 0010): the rows
/// of other parameters of the same resource type whose expressions together are exactly its
/// own, so storing them once answers both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The stored parameters whose rows, together, are this parameter's rows.
    pub sources: Vec<String>,
    /// `X.where(resolve() is T)` over the source's `X`: only the source's references to `T`.
    /// Such a parameter keeps its own `:identifier` rows (a reference by identifier alone
    /// resolves to nothing, so they are not the source's).
    pub target_type: Option<String>,
}

/// All search parameters, by resource type and code.
#[derive(Debug, Default)]
pub struct Registry {
    by_type: HashMap<String, BTreeMap<String, Arc<SearchParam>>>,
    /// (resource type, code) of the parameters answered from other parameters' rows.
    aliases: HashMap<(String, String), Alias>,
    /// Definitions that are not indexed, with the reason (reported in docs and CapabilityStatement).
    pub unsupported: Vec<(String, String)>,
}

/// The registry, parsed once.
pub fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| Registry::load(SEARCH_PARAMETERS).unwrap_or_default())
}

/// Resource-level parameters that are answered from columns, not from index rows.
pub const COLUMN_PARAMS: &[&str] = &["_id", "_lastUpdated"];

impl Registry {
    pub fn load(json: &str) -> Result<Self, String> {
        let bundle: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        let mut by_url: HashMap<String, Value> = HashMap::new();
        for e in &entries {
            let r = &e["resource"];
            if let Some(u) = r["url"].as_str() {
                by_url.insert(u.to_string(), r.clone());
            }
        }
        let resource_types: Vec<String> = crate::model::model().resource_types().map(String::from).collect();
        let mut reg = Registry::default();
        for e in &entries {
            let r = &e["resource"];
            let code = r["code"].as_str().unwrap_or_default().to_string();
            let url = r["url"].as_str().unwrap_or_default().to_string();
            let Some(kind) = r["type"].as_str().and_then(ParamType::parse) else { continue };
            let expression = r["expression"].as_str().unwrap_or_default().to_string();
            if COLUMN_PARAMS.contains(&code.as_str()) {
                continue;
            }
            let expr = if expression.is_empty() {
                reg.unsupported.push((url.clone(), "no FHIRPath expression in the definition".into()));
                None
            } else {
                match fhirpath::parse(&expression) {
                    Ok(x) => Some(x),
                    Err(err) => {
                        reg.unsupported.push((url.clone(), format!("expression not supported: {err}")));
                        None
                    }
                }
            };
            if kind == ParamType::Special {
                reg.unsupported.push((url.clone(), "special parameter (needs a dedicated engine)".into()));
            }
            let mut components = Vec::new();
            if kind == ParamType::Composite {
                for c in r["component"].as_array().cloned().unwrap_or_default() {
                    let def = c["definition"].as_str().unwrap_or_default();
                    let Some(cdef) = by_url.get(def) else { continue };
                    let ccode = cdef["code"].as_str().unwrap_or_default().to_string();
                    let Some(ctype) = cdef["type"].as_str().and_then(ParamType::parse) else { continue };
                    match c["expression"].as_str().map(fhirpath::parse) {
                        Some(Ok(x)) => components.push((ccode, ctype, x)),
                        _ => reg.unsupported.push((url.clone(), "composite component not supported".into())),
                    }
                }
            }
            let targets =
                r["target"].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect()).unwrap_or_default();
            let param = Arc::new(SearchParam { code: code.clone(), url, kind, expression, expr, targets, components });
            for base in r["base"].as_array().cloned().unwrap_or_default() {
                let Some(base) = base.as_str() else { continue };
                let types: Vec<String> =
                    if base == "Resource" || base == "DomainResource" { resource_types.clone() } else { vec![base.to_string()] };
                for t in types {
                    reg.by_type.entry(t).or_default().insert(code.clone(), Arc::clone(&param));
                }
            }
        }
        reg.aliases = reg.derive_aliases();
        Ok(reg)
    }

    /// The parameters whose rows other parameters' rows already are. Per resource type, the
    /// parameters are taken from the fewest expression parts up; one may only point at
    /// parameters taken before it that store their own rows, so there are no cycles.
    fn derive_aliases(&self) -> HashMap<(String, String), Alias> {
        let mut out = HashMap::new();
        for (rt, params) in &self.by_type {
            let mut order: Vec<(&Arc<SearchParam>, Vec<String>)> =
                params.values().filter(|p| p.expr.is_some()).map(|p| (p, expression_parts(&p.expression, rt))).collect();
            order.retain(|(_, parts)| !parts.is_empty());
            order.sort_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| a.0.code.cmp(&b.0.code)));
            let mut stored: Vec<(&Arc<SearchParam>, &Vec<String>)> = Vec::new();
            // X.where(resolve() is T) over X: decided once every unrestricted parameter is, so
            // that its source (whatever its code sorts as) is known; never itself a source
            let mut deferred = Vec::new();
            for (p, parts) in &order {
                let same_kind = |s: &SearchParam| s.kind == p.kind && (p.kind != ParamType::Composite || same_components(s, p));
                let restricted = (p.kind == ParamType::Reference && parts.len() == 1)
                    .then(|| parts[0].strip_suffix(')').and_then(|x| x.split_once(".where(resolve() is ")))
                    .flatten()
                    .filter(|(_, t)| t.chars().all(|c| c.is_ascii_alphanumeric()));
                if let Some((base, target)) = restricted {
                    deferred.push((p, base, target));
                    continue;
                }
                // a union of stored parameters' expressions, exactly
                let sources: Vec<&(&Arc<SearchParam>, &Vec<String>)> =
                    stored.iter().filter(|(s, sp)| same_kind(s) && sp.iter().all(|x| parts.contains(x))).collect();
                let covered = parts.iter().all(|x| sources.iter().any(|(_, sp)| sp.contains(x)));
                if covered && !sources.is_empty() {
                    let sources = sources.iter().map(|(s, _)| s.code.clone()).collect();
                    out.insert((rt.clone(), p.code.clone()), Alias { sources, target_type: None });
                    continue;
                }
                stored.push((p, parts));
            }
            for (p, base, target) in deferred {
                let source = stored.iter().find(|(s, sp)| s.kind == p.kind && sp.len() == 1 && sp[0] == base);
                if let Some((source, _)) = source {
                    out.insert(
                        (rt.clone(), p.code.clone()),
                        Alias { sources: vec![source.code.clone()], target_type: Some(target.to_string()) },
                    );
                }
            }
        }
        out
    }

    /// Where the rows of `code` (a parameter of `resource_type`) are, when it has none of its own.
    pub fn alias(&self, resource_type: &str, code: &str) -> Option<&Alias> {
        if self.aliases.is_empty() {
            return None;
        }
        self.aliases.get(&(resource_type.to_string(), code.to_string()))
    }

    /// Every parameter answered from other parameters' rows, as (resource type, code, alias).
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str, &Alias)> {
        self.aliases.iter().map(|((t, c), a)| (t.as_str(), c.as_str(), a))
    }

    pub fn get(&self, resource_type: &str, code: &str) -> Option<&Arc<SearchParam>> {
        self.by_type.get(resource_type)?.get(code)
    }

    pub fn for_type(&self, resource_type: &str) -> impl Iterator<Item = &Arc<SearchParam>> {
        self.by_type.get(resource_type).into_iter().flat_map(|m| m.values())
    }

    pub fn count(&self) -> usize {
        self.by_type.values().map(BTreeMap::len).sum()
    }
}

/// The parts of a (multi-type) expression that apply to `resource_type`, each without one level
/// of enclosing parentheses: `(Observation.value as Quantity) | Observation.code` for
/// Observation is `["Observation.value as Quantity", "Observation.code"]`.
fn expression_parts(expression: &str, resource_type: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0_i32, false, 0);
    let bytes = expression.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            b'|' if !quoted && depth == 0 => {
                parts.push(&expression[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&expression[start..]);
    let mut out: Vec<String> = parts
        .into_iter()
        .map(|p| {
            let p = p.trim();
            let inner = p.strip_prefix('(').and_then(|x| x.strip_suffix(')'));
            // only when the parentheses enclose the whole part
            match inner {
                Some(x)
                    if x.chars().try_fold(0_i32, |d, c| match c {
                        '(' => Some(d + 1),
                        ')' => (d > 0).then(|| d - 1),
                        _ => Some(d),
                    }) == Some(0) =>
                {
                    x.split_whitespace().collect::<Vec<_>>().join(" ")
                }
                _ => p.split_whitespace().collect::<Vec<_>>().join(" "),
            }
        })
        .filter(|p| p == resource_type || p.strip_prefix(resource_type).is_some_and(|rest| rest.starts_with('.') || rest.starts_with(' ')))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Two composites whose components, in order, have the same types and expressions (their
/// definitions' names differ: `combo-code` where the other has `code`).
fn same_components(a: &SearchParam, b: &SearchParam) -> bool {
    a.components.len() == b.components.len() && a.components.iter().zip(&b.components).all(|(x, y)| x.1 == y.1 && x.2 == y.2)
}

/// A value to store in a search index.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    Token { system: Option<String>, code: Option<String>, text: Option<String> },
    String { norm: String, exact: String },
    Date(DateRange),
    Reference { target_type: Option<String>, target_id: Option<String>, url: Option<String> },
    Number(f64),
    Quantity { value: f64, system: Option<String>, code: Option<String>, unit: Option<String> },
    Uri(String),
}

/// One index row: the parameter (or `param:identifier`, `param:of-type` for modifier rows), the
/// composite group it belongs to (0 when not part of a composite) and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub param: String,
    pub group: i32,
    pub value: IndexValue,
}

/// Lower-case, accents removed: how FHIR string search compares.
pub fn normalize(s: &str) -> String {
    s.nfd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(String::from)
}

fn extract(kind: ParamType, item: &Item<'_>, out: &mut Vec<IndexValue>, aux: &mut Vec<(&'static str, IndexValue)>) {
    let v = match item {
        Item::Node(v, _) => *v,
        Item::Bool(b) => {
            if kind == ParamType::Token {
                out.push(IndexValue::Token { system: None, code: Some(b.to_string()), text: None });
            }
            return;
        }
        _ => return,
    };
    match kind {
        ParamType::Token => match v {
            Value::String(x) => out.push(IndexValue::Token { system: None, code: Some(x.clone()), text: None }),
            Value::Bool(b) => out.push(IndexValue::Token { system: None, code: Some(b.to_string()), text: None }),
            Value::Object(_) => {
                if let Some(codings) = v.get("coding").and_then(Value::as_array) {
                    let cc_text = s(v, "text");
                    for c in codings {
                        let text = cc_text.clone().or_else(|| s(c, "display")).map(|t| normalize(&t));
                        out.push(IndexValue::Token { system: s(c, "system"), code: s(c, "code"), text });
                    }
                    if codings.is_empty() {
                        if let Some(t) = cc_text {
                            out.push(IndexValue::Token { system: None, code: None, text: Some(normalize(&t)) });
                        }
                    }
                } else if v.get("text").is_some() && v.get("value").is_none() {
                    out.push(IndexValue::Token { system: None, code: None, text: s(v, "text").map(|t| normalize(&t)) });
                } else if v.get("value").is_some() {
                    // Identifier or ContactPoint
                    let value = v.get("value").map(|x| match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                    let text = v.get("type").and_then(|t| s(t, "text")).map(|t| normalize(&t));
                    out.push(IndexValue::Token { system: s(v, "system"), code: value.clone(), text });
                    if let Some(codings) = v.get("type").and_then(|t| t.get("coding")).and_then(Value::as_array) {
                        for c in codings {
                            // `identifier:of-type=typeSystem|typeCode|value`: system is the type system,
                            // code is `typeCode|value`.
                            aux.push((
                                "of-type",
                                IndexValue::Token {
                                    system: s(c, "system"),
                                    code: Some(format!("{}|{}", s(c, "code").unwrap_or_default(), value.clone().unwrap_or_default())),
                                    text: None,
                                },
                            ));
                        }
                    }
                } else if v.get("code").is_some() || v.get("system").is_some() {
                    out.push(IndexValue::Token {
                        system: s(v, "system"),
                        code: s(v, "code"),
                        text: s(v, "display").map(|t| normalize(&t)),
                    });
                }
            }
            _ => {}
        },
        ParamType::String => {
            let mut push = |x: &str| out.push(IndexValue::String { norm: normalize(x), exact: x.to_string() });
            match v {
                Value::String(x) => push(x),
                Value::Object(m) => {
                    for (k, val) in m {
                        if matches!(k.as_str(), "id" | "extension" | "use" | "type" | "period" | "system") {
                            continue;
                        }
                        match val {
                            Value::String(x) => push(x),
                            Value::Array(a) => a.iter().filter_map(Value::as_str).for_each(&mut push),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        ParamType::Date => match v {
            Value::String(x) => {
                if let Some((r, _)) = datetime::parse(x) {
                    out.push(IndexValue::Date(r));
                }
            }
            Value::Object(_) => {
                if v.get("start").is_some() || v.get("end").is_some() {
                    let low = v.get("start").and_then(Value::as_str).and_then(datetime::parse).map_or(i64::MIN, |(r, _)| r.low);
                    let high = v.get("end").and_then(Value::as_str).and_then(datetime::parse).map_or(i64::MAX, |(r, _)| r.high);
                    out.push(IndexValue::Date(DateRange { low, high }));
                } else if let Some(events) = v.get("event").and_then(Value::as_array) {
                    for e in events.iter().filter_map(Value::as_str) {
                        if let Some((r, _)) = datetime::parse(e) {
                            out.push(IndexValue::Date(r));
                        }
                    }
                }
            }
            _ => {}
        },
        ParamType::Reference => match v {
            Value::String(url) => out.push(IndexValue::Reference {
                target_type: None,
                target_id: None,
                url: Some(url.split('|').next().unwrap_or(url).to_string()),
            }),
            Value::Object(_) => {
                if let Some(r) = v.get("reference").and_then(Value::as_str) {
                    out.push(parse_reference(r));
                }
                if let Some(id) = v.get("identifier") {
                    if let Some(value) = s(id, "value") {
                        aux.push(("identifier", IndexValue::Token { system: s(id, "system"), code: Some(value), text: None }));
                    }
                }
            }
            _ => {}
        },
        ParamType::Number => match v {
            Value::Number(n) => out.extend(n.as_f64().map(IndexValue::Number)),
            Value::Object(_) => out.extend(v.get("value").and_then(Value::as_f64).map(IndexValue::Number)),
            _ => {}
        },
        ParamType::Quantity => {
            if let Some(value) = v.get("value").and_then(Value::as_f64) {
                out.push(IndexValue::Quantity {
                    value,
                    system: s(v, "system"),
                    code: s(v, "code").or_else(|| s(v, "currency")),
                    unit: s(v, "unit"),
                });
            }
        }
        ParamType::Uri => {
            if let Value::String(x) = v {
                out.push(IndexValue::Uri(x.clone()));
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
}

/// Split a literal reference into type and id where it is `Type/id` (optionally absolute or with
/// `_history`); otherwise keep it as a URL.
pub fn parse_reference(r: &str) -> IndexValue {
    let trimmed = r.split("/_history/").next().unwrap_or(r);
    let segs: Vec<&str> = trimmed.rsplitn(3, '/').collect();
    if segs.len() >= 2 {
        let (id, ty) = (segs[0], segs[1]);
        let relative = segs.len() == 2;
        if ty.starts_with(|c: char| c.is_ascii_uppercase()) && crate::model::model().is_resource(ty) && crate::is_valid_id(id) {
            return IndexValue::Reference {
                target_type: Some(ty.to_string()),
                target_id: Some(id.to_string()),
                url: if relative { None } else { Some(trimmed.to_string()) },
            };
        }
    }
    IndexValue::Reference { target_type: None, target_id: None, url: Some(r.to_string()) }
}

/// Every index row of a resource, for every search parameter of its type that stores its own
/// (an [`Alias`] is answered from its sources' rows).
pub fn index_resource(resource: &Value) -> Vec<IndexEntry> {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else { return Vec::new() };
    let reg = registry();
    let mut rows = Vec::new();
    let mut group = 0;
    for p in reg.for_type(rt) {
        match reg.alias(rt, &p.code) {
            None => rows.extend(param_rows(p, resource, &mut group)),
            Some(a) if a.target_type.is_some() => {
                rows.extend(param_rows(p, resource, &mut group).into_iter().filter(|r| r.param.contains(':')));
            }
            Some(_) => {}
        }
    }
    rows
}

/// The index rows one parameter gives a resource; `group` numbers composite groups.
pub fn param_rows(p: &SearchParam, resource: &Value, group: &mut i32) -> Vec<IndexEntry> {
    let mut rows = Vec::new();
    let Some(expr) = &p.expr else { return rows };
    let items = fhirpath::evaluate(expr, resource);
    if p.kind == ParamType::Composite {
        for root in &items {
            *group += 1;
            // a composite matches only when every component does: a group missing one
            // component could never match, so it is not indexed
            let mut parts = Vec::with_capacity(p.components.len());
            for (i, (_, ctype, cexpr)) in p.components.iter().enumerate() {
                let citems = fhirpath::eval(cexpr, std::slice::from_ref(root), resource);
                let (mut vals, mut aux) = (Vec::new(), Vec::new());
                for it in &citems {
                    extract(*ctype, it, &mut vals, &mut aux);
                }
                if vals.is_empty() {
                    parts.clear();
                    break;
                }
                parts.push((i, vals));
            }
            for (i, vals) in parts {
                rows.extend(vals.into_iter().map(|value| IndexEntry { param: format!("{}#{i}", p.code), group: *group, value }));
            }
        }
        return rows;
    }
    let (mut vals, mut aux) = (Vec::new(), Vec::new());
    for it in &items {
        extract(p.kind, it, &mut vals, &mut aux);
    }
    rows.extend(vals.into_iter().map(|value| IndexEntry { param: p.code.clone(), group: 0, value }));
    rows.extend(aux.into_iter().map(|(suffix, value)| IndexEntry { param: format!("{}:{suffix}", p.code), group: 0, value }));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What an alias stands for, as comparable values: the rows of its sources (only references
    /// to its target type when it has one), per composite group as tuples of component values.
    fn alias_values(rt: &str, alias: &Alias, resource: &Value) -> Vec<String> {
        let reg = registry();
        let (mut rows, mut group) = (Vec::new(), 0);
        // one group counter over the sources, as `index_resource` numbers them
        for source in &alias.sources {
            let p = reg.get(rt, source).expect("source");
            rows.extend(param_rows(p, resource, &mut group));
        }
        // a restricted alias keeps its own modifier rows: only the references to its target count
        if let Some(t) = &alias.target_type {
            rows.retain(|r| !r.param.contains(':') && matches!(&r.value, IndexValue::Reference { target_type: Some(x), .. } if x == t));
        }
        comparable(rows, alias.target_type.is_none())
    }

    /// Rows as comparable values, each with what follows its parameter's code (`#1` for a
    /// component, `:of-type` for a modifier's row); modifier rows only when `modifiers`.
    fn comparable(rows: Vec<IndexEntry>, modifiers: bool) -> Vec<String> {
        let mut groups: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        let mut out = Vec::new();
        for r in rows.into_iter().filter(|r| modifiers || !r.param.contains(':')) {
            let suffix = r.param.find(['#', ':']).map_or("", |i| &r.param[i..]);
            let v = format!("{suffix}={:?}", r.value);
            if r.group > 0 {
                groups.entry(r.group).or_default().push(v);
            } else {
                out.push(v);
            }
        }
        out.extend(groups.into_values().map(|mut g| {
            g.sort();
            g.join("&")
        }));
        out.sort();
        out.dedup();
        out
    }

    /// Checks every alias of the resource's type against the parameter's own expression.
    fn assert_aliases_hold(resource: &Value) -> usize {
        let reg = registry();
        let rt = resource["resourceType"].as_str().unwrap_or_default();
        let mut checked = 0;
        for (t, code, alias) in reg.aliases().filter(|(t, _, _)| *t == rt) {
            let own = comparable(param_rows(reg.get(t, code).expect("param"), resource, &mut 0), alias.target_type.is_none());
            assert_eq!(own, alias_values(t, alias, resource), "{t}.{code} = {alias:?} on {resource}");
            checked += usize::from(!own.is_empty());
        }
        checked
    }

    #[test]
    fn aliases_are_derived_from_the_expressions() {
        let reg = registry();
        let alias = |t: &str, c: &str| reg.alias(t, c).cloned();
        let patient = Some(Alias { sources: vec!["subject".into()], target_type: Some("Patient".into()) });
        assert_eq!(alias("Observation", "patient"), patient);
        assert_eq!(alias("Encounter", "patient"), patient);
        assert_eq!(alias("DocumentReference", "patient"), patient);
        assert_eq!(
            alias("Observation", "combo-code"),
            Some(Alias { sources: vec!["code".into(), "component-code".into()], target_type: None })
        );
        assert_eq!(
            alias("Observation", "combo-value-quantity"),
            Some(Alias { sources: vec!["component-value-quantity".into(), "value-quantity".into()], target_type: None })
        );
        assert_eq!(
            alias("Observation", "combo-code-value-quantity"),
            Some(Alias { sources: vec!["code-value-quantity".into(), "component-code-value-quantity".into()], target_type: None })
        );
        // parameters with expressions of their own store their rows
        for (t, c) in [
            ("Observation", "code"),
            ("Observation", "subject"),
            ("AllergyIntolerance", "patient"),
            ("Patient", "_tag"),
            ("Observation", "code-value-quantity"),
        ] {
            assert!(alias(t, c).is_none(), "{t}.{c}");
        }
        // sources always store their own rows
        for (t, code, a) in reg.aliases() {
            for s in &a.sources {
                assert!(reg.alias(t, s).is_none(), "{t}.{code} points at {s}, itself an alias");
            }
        }
        // and the index holds no rows of an alias (a restricted one keeps its modifier rows)
        let obs = json!({"resourceType":"Observation","subject":{"reference":"Patient/p1"},
            "code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":120,"code":"mm[Hg]"}});
        let rows = index_resource(&obs);
        assert!(rows.iter().all(|r| !r.param.starts_with("combo-") && r.param != "patient"), "{rows:?}");
        assert!(rows.iter().any(|r| r.param == "subject") && rows.iter().any(|r| r.param == "code-value-quantity#1"));
    }

    #[test]
    fn an_alias_finds_exactly_what_its_own_expression_would() {
        let cases = [
            json!({"resourceType":"Observation","status":"final",
                "code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}],"text":"Pressione"},
                "subject":{"reference":"Patient/p1"},"valueQuantity":{"value":7.2,"unit":"%","code":"%"},
                "component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":131,"code":"mm[Hg]"}},
                    {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":84,"code":"mm[Hg]"}},
                    {"code":{"coding":[{"system":"http://loinc.org","code":"9999-9"}]},"valueCodeableConcept":{"coding":[{"code":"x"}]}}]}),
            json!({"resourceType":"Observation","subject":{"reference":"Group/g1"},"code":{"text":"no codes"}}),
            json!({"resourceType":"Observation","subject":{"reference":"http://other.example/fhir/Patient/p2/_history/3"}}),
            json!({"resourceType":"Observation","subject":{"reference":"urn:uuid:0190f3a4-1c2b-7d3e-8f40-123456789abc"}}),
            json!({"resourceType":"Observation","subject":{"identifier":{"system":"http://hl7.it/sid/codiceFiscale","value":"RSSGLI85D52F205Q"}}}),
            json!({"resourceType":"Observation","subject":{"reference":"#contained"}}),
            json!({"resourceType":"Encounter","subject":{"reference":"Patient/p1"}}),
            json!({"resourceType":"DocumentReference","subject":{"reference":"Patient/p1","identifier":{"value":"x"}}}),
        ];
        let checked: usize = cases.iter().map(assert_aliases_hold).sum();
        assert!(checked >= 6, "{checked}");
    }

    /// The same over every resource of the Synthea sample set in the shared corpora (when present:
    /// `FASCICOLO_SHARED`, or `../shared` beside the repository; CI sets it).
    #[test]
    fn aliases_hold_on_the_synthea_corpus() {
        let configured = std::env::var("FASCICOLO_SHARED").ok();
        let shared = configured
            .clone()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
        let Ok(dir) = std::fs::read_dir(shared.join("corpora/synthea-r4")) else {
            // CI names the corpora: there, a missing one is a failure, not a skip
            assert!(configured.is_none(), "FASCICOLO_SHARED={} holds no corpora/synthea-r4", shared.display());
            eprintln!("skipped: no shared corpora at {}", shared.display());
            return;
        };
        let (mut resources, mut checked) = (0, 0);
        for file in dir.flatten() {
            let bundle: Value = serde_json::from_slice(&std::fs::read(file.path()).expect("read")).expect("json");
            for e in bundle["entry"].as_array().into_iter().flatten() {
                resources += 1;
                checked += assert_aliases_hold(&e["resource"]);
            }
        }
        assert!(resources > 20_000 && checked > 10_000, "{resources} resources, {checked} alias values checked");
    }

    #[test]
    fn registry_covers_every_type() {
        let reg = registry();
        assert!(reg.count() > 2500, "{}", reg.count());
        assert!(reg.get("Observation", "code").is_some());
        assert!(reg.get("Observation", "code-value-quantity").is_some());
        assert!(reg.get("Patient", "_tag").is_some());
        assert!(reg.get("Observation", "nonsense").is_none());
        // The only expressions we cannot index are listed, with a reason.
        for (url, why) in &reg.unsupported {
            assert!(!why.is_empty(), "{url}");
        }
    }

    #[test]
    fn indexes_observation() {
        let obs = json!({"resourceType":"Observation","status":"final",
            "code":{"coding":[{"system":"http://loinc.org","code":"2345-7","display":"Glucose"}],"text":"Glucosio"},
            "subject":{"reference":"Patient/abc"},
            "effectiveDateTime":"2020-03-01T10:00:00Z",
            "valueQuantity":{"value":105.5,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"},
            "identifier":[{"system":"urn:x","value":"42","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"FILL"}]}}]});
        let rows = index_resource(&obs);
        let find = |p: &str| rows.iter().filter(|r| r.param == p).map(|r| r.value.clone()).collect::<Vec<_>>();
        assert_eq!(
            find("code"),
            vec![IndexValue::Token { system: Some("http://loinc.org".into()), code: Some("2345-7".into()), text: Some("glucosio".into()) }]
        );
        assert_eq!(find("status").len(), 1);
        assert_eq!(
            find("subject"),
            vec![IndexValue::Reference { target_type: Some("Patient".into()), target_id: Some("abc".into()), url: None }]
        );
        // `patient` is `subject` to a Patient: answered from the `subject` row (decision 0010)
        assert_eq!(find("patient").len(), 0);
        assert!(matches!(find("date").as_slice(), [IndexValue::Date(_)]));
        assert!(matches!(find("value-quantity").as_slice(), [IndexValue::Quantity { value, .. }] if (*value - 105.5).abs() < 1e-9));
        assert_eq!(find("identifier:of-type").len(), 1);
        // composite: code + value share one group
        let c0: Vec<_> = rows.iter().filter(|r| r.param == "code-value-quantity#0").collect();
        let c1: Vec<_> = rows.iter().filter(|r| r.param == "code-value-quantity#1").collect();
        assert_eq!(c0.len(), 1);
        assert_eq!(c1.len(), 1);
        assert_eq!(c0[0].group, c1[0].group);
        // a composite whose value component is absent (no dateTime, string or concept value)
        // is not indexed at all
        for p in ["code-value-date#0", "code-value-string#0", "code-value-concept#0", "code-value-concept#1"] {
            assert!(rows.iter().all(|r| r.param != p), "{p} indexed without its value");
        }
    }

    #[test]
    fn strings_are_accent_and_case_insensitive() {
        assert_eq!(normalize("Nicolò ÀRGENTÒ"), "nicolo argento");
        let p = json!({"resourceType":"Patient","name":[{"family":"Bianchi","given":["Niccolò"]}]});
        let rows = index_resource(&p);
        assert!(rows
            .iter()
            .any(|r| r.param == "name" && r.value == IndexValue::String { norm: "niccolo".into(), exact: "Niccolò".into() }));
        assert!(rows.iter().any(|r| r.param == "family"));
    }
}
