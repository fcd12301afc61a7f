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

/// All search parameters, by resource type and code.
#[derive(Debug, Default)]
pub struct Registry {
    by_type: HashMap<String, BTreeMap<String, Arc<SearchParam>>>,
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
        Ok(reg)
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

/// Every index row of a resource, for every search parameter of its type.
pub fn index_resource(resource: &Value) -> Vec<IndexEntry> {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else { return Vec::new() };
    let mut rows = Vec::new();
    let mut group = 0;
    for p in registry().for_type(rt) {
        let Some(expr) = &p.expr else { continue };
        let items = fhirpath::evaluate(expr, resource);
        if p.kind == ParamType::Composite {
            for root in &items {
                group += 1;
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
                    rows.extend(vals.into_iter().map(|value| IndexEntry { param: format!("{}#{i}", p.code), group, value }));
                }
            }
            continue;
        }
        let (mut vals, mut aux) = (Vec::new(), Vec::new());
        for it in &items {
            extract(p.kind, it, &mut vals, &mut aux);
        }
        rows.extend(vals.into_iter().map(|value| IndexEntry { param: p.code.clone(), group: 0, value }));
        rows.extend(aux.into_iter().map(|(suffix, value)| IndexEntry { param: format!("{}:{suffix}", p.code), group: 0, value }));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(find("patient").len(), 1);
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
