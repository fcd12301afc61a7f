//! Parsing FHIR search requests (`?name=value&...`) into typed clauses, checked against the
//! registry: an unknown parameter, modifier or malformed value is an error the client sees.

use crate::datetime::{self, DateRange};
use crate::params::{normalize, registry, ParamType, SearchParam};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    fn split(v: &str) -> (Prefix, &str) {
        let table = [
            ("eq", Prefix::Eq),
            ("ne", Prefix::Ne),
            ("gt", Prefix::Gt),
            ("lt", Prefix::Lt),
            ("ge", Prefix::Ge),
            ("le", Prefix::Le),
            ("sa", Prefix::Sa),
            ("eb", Prefix::Eb),
            ("ap", Prefix::Ap),
        ];
        for (p, x) in table {
            if let Some(rest) = v.strip_prefix(p) {
                if rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.') {
                    return (x, rest);
                }
            }
        }
        (Prefix::Eq, v)
    }
}

/// A value to match, typed by the parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// `system` is `None` for any system, `Some(None)` for "no system" (`|code`).
    Token {
        system: Option<Option<String>>,
        code: Option<String>,
    },
    /// Normalised for the default and `:contains` match; exact for `:exact`.
    String {
        norm: String,
        exact: String,
    },
    Date {
        prefix: Prefix,
        range: DateRange,
    },
    /// `low..high` is the implicit range of the value's precision (for `eq`, `ne`).
    Number {
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
    },
    Quantity {
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Reference {
        target_type: Option<String>,
        id: Option<String>,
        url: Option<String>,
    },
    Uri(String),
    /// A composite value: one term per component.
    Composite(Vec<Term>),
    /// The text of a `:text` token search (normalised).
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Modifier {
    None,
    Exact,
    Contains,
    Text,
    Not,
    Identifier,
    OfType,
    Above,
    Below,
    /// `:Patient` on a reference parameter.
    Type(String),
}

/// One AND-ed condition; its values are OR-ed.
#[derive(Debug, Clone)]
pub enum Clause {
    Id(Vec<String>),
    LastUpdated(Vec<Term>),
    Missing {
        param: Arc<SearchParam>,
        missing: bool,
    },
    Param {
        param: Arc<SearchParam>,
        modifier: Modifier,
        values: Vec<Term>,
    },
    /// `subject:Patient.name=x`: the reference points at a `target_type` matching `inner`.
    Chain {
        param: Arc<SearchParam>,
        target_types: Vec<String>,
        inner: Box<Clause>,
    },
    /// `_has:Observation:patient:code=x`: some `source_type` whose `reference` points here matches `inner`.
    Has {
        source_type: String,
        reference: Arc<SearchParam>,
        inner: Box<Clause>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub param: String,
    pub kind: Option<ParamType>,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    pub source_type: String,
    pub param: String,
    pub target_type: Option<String>,
    pub iterate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Only the elements the definitions mark as summary.
    True,
    Count,
    Data,
    Text,
    False,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    None,
    Estimate,
    Accurate,
}

/// A parsed search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub resource_type: Option<String>,
    pub clauses: Vec<Clause>,
    pub count: usize,
    pub sort: Vec<SortKey>,
    pub summary: Option<Summary>,
    pub total: Total,
    pub elements: Vec<String>,
    pub include: Vec<Include>,
    pub revinclude: Vec<Include>,
    pub cursor: Option<String>,
}

pub const DEFAULT_COUNT: usize = 20;
pub const MAX_COUNT: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct SearchError(pub String);

impl std::fmt::Display for SearchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, SearchError> {
    Err(SearchError(m.into()))
}

/// Split on unescaped `sep` (FHIR escapes `\,` `\|` `\$`).
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if n == sep || n == '\\' || n == ',' || n == '|' || n == '$' {
                    if n == sep {
                        if let Some(last) = out.last_mut() {
                            last.push(n);
                        }
                    } else if let Some(last) = out.last_mut() {
                        last.push('\\');
                        last.push(n);
                    }
                    chars.next();
                    continue;
                }
            }
        }
        if c == sep {
            out.push(String::new());
        } else if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\,", ",").replace("\\|", "|").replace("\\$", "$").replace("\\\\", "\\")
}

fn decimal_range(raw: &str) -> Result<(f64, f64, f64), SearchError> {
    let value: f64 = raw.parse().map_err(|_| SearchError(format!("'{raw}' is not a number")))?;
    if !value.is_finite() {
        return err(format!("'{raw}' is not a number"));
    }
    let mantissa = raw.split(['e', 'E']).next().unwrap_or(raw);
    let exp: i32 = raw.split(['e', 'E']).nth(1).and_then(|e| e.parse().ok()).unwrap_or(0);
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len() as i32);
    let half = 0.5 * 10f64.powi(exp - decimals);
    Ok((value, value - half, value + half))
}

pub fn parse_term(kind: ParamType, modifier: &Modifier, raw: &str) -> Result<Term, SearchError> {
    if raw.is_empty() {
        return err("empty search value");
    }
    Ok(match kind {
        ParamType::Token => {
            if *modifier == Modifier::Text {
                return Ok(Term::Text(normalize(&unescape(raw))));
            }
            let parts = split_escaped(raw, '|');
            match parts.as_slice() {
                [code] => Term::Token { system: None, code: Some(code.clone()) },
                [sys, code] => Term::Token {
                    system: Some(if sys.is_empty() { None } else { Some(sys.clone()) }),
                    code: if code.is_empty() { None } else { Some(code.clone()) },
                },
                [sys, tcode, value] if *modifier == Modifier::OfType => {
                    Term::Token { system: Some(Some(sys.clone())), code: Some(format!("{tcode}|{value}")) }
                }
                _ => return err(format!("'{raw}' is not a token (system|code)")),
            }
        }
        ParamType::String => {
            let s = unescape(raw);
            Term::String { norm: normalize(&s), exact: s }
        }
        ParamType::Date => {
            let (prefix, rest) = Prefix::split(raw);
            let Some((range, _)) = datetime::parse(rest) else {
                return err(format!("'{rest}' is not a valid date (YYYY, YYYY-MM, YYYY-MM-DD or a date-time)"));
            };
            Term::Date { prefix, range }
        }
        ParamType::Number => {
            let (prefix, rest) = Prefix::split(raw);
            let (value, low, high) = decimal_range(rest)?;
            Term::Number { prefix, value, low, high }
        }
        ParamType::Quantity => {
            let (prefix, rest) = Prefix::split(raw);
            let parts = split_escaped(rest, '|');
            let (num, system, code) = match parts.as_slice() {
                [n] => (n.clone(), None, None),
                [n, s, c] => (n.clone(), (!s.is_empty()).then(|| s.clone()), (!c.is_empty()).then(|| c.clone())),
                _ => return err(format!("'{raw}' is not a quantity (number|system|code)")),
            };
            let (value, low, high) = decimal_range(&num)?;
            Term::Quantity { prefix, value, low, high, system, code }
        }
        ParamType::Reference => {
            if *modifier == Modifier::Identifier {
                return parse_term(ParamType::Token, &Modifier::None, raw);
            }
            let r = unescape(raw);
            let type_hint = match modifier {
                Modifier::Type(t) => Some(t.clone()),
                _ => None,
            };
            if r.contains("://") || r.starts_with("urn:") {
                match crate::params::parse_reference(&r) {
                    crate::params::IndexValue::Reference { target_type: Some(t), target_id: Some(id), .. } => Term::Reference {
                        target_type: Some(t),
                        id: Some(id),
                        url: Some(r.split("/_history/").next().unwrap_or(&r).to_string()),
                    },
                    _ => Term::Reference { target_type: None, id: None, url: Some(r.split('|').next().unwrap_or(&r).to_string()) },
                }
            } else if let Some((t, id)) = r.split_once('/') {
                let id = id.split("/_history/").next().unwrap_or(id);
                if !crate::is_valid_id(id) {
                    return err(format!("'{r}' is not a valid reference"));
                }
                Term::Reference { target_type: Some(t.to_string()), id: Some(id.to_string()), url: None }
            } else {
                if !crate::is_valid_id(&r) {
                    return err(format!("'{r}' is not a valid id"));
                }
                Term::Reference { target_type: type_hint, id: Some(r), url: None }
            }
        }
        ParamType::Uri => Term::Uri(unescape(raw)),
        ParamType::Composite | ParamType::Special => return err("composite values are parsed by the parameter"),
    })
}

fn parse_modifier(kind: ParamType, m: Option<&str>) -> Result<Modifier, SearchError> {
    let Some(m) = m else { return Ok(Modifier::None) };
    let ok = |x: Modifier, allowed: &[ParamType]| {
        if allowed.contains(&kind) {
            Ok(x)
        } else {
            err(format!("modifier ':{m}' is not allowed on a {} parameter", kind.as_str()))
        }
    };
    use ParamType as P;
    match m {
        "exact" => ok(Modifier::Exact, &[P::String]),
        "contains" => ok(Modifier::Contains, &[P::String, P::Uri]),
        "text" => ok(Modifier::Text, &[P::Token]),
        "not" => ok(Modifier::Not, &[P::Token]),
        "identifier" => ok(Modifier::Identifier, &[P::Reference]),
        "of-type" => ok(Modifier::OfType, &[P::Token]),
        "above" => ok(Modifier::Above, &[P::Uri]),
        "below" => ok(Modifier::Below, &[P::Uri]),
        t if kind == P::Reference && crate::model::model().is_concrete_resource(t) => Ok(Modifier::Type(t.to_string())),
        other => err(format!("modifier ':{other}' is not supported")),
    }
}

fn parse_values(param: &SearchParam, modifier: &Modifier, raw: &str) -> Result<Vec<Term>, SearchError> {
    split_escaped(raw, ',')
        .iter()
        .map(|v| {
            if param.kind == ParamType::Composite {
                let parts = split_escaped(v, '$');
                if parts.len() != param.components.len() {
                    return err(format!("'{}' needs {} values joined by '$'", param.code, param.components.len()));
                }
                let terms = parts
                    .iter()
                    .zip(&param.components)
                    .map(|(p, (_, ctype, _))| parse_term(*ctype, &Modifier::None, p))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Term::Composite(terms))
            } else {
                // keep escapes for token's `|` split; other types unescape inside parse_term
                parse_term(param.kind, modifier, v)
            }
        })
        .collect()
}

fn lookup(resource_type: &str, code: &str) -> Result<Arc<SearchParam>, SearchError> {
    match registry().get(resource_type, code) {
        Some(p) if p.expr.is_some() && p.kind != ParamType::Special => Ok(Arc::clone(p)),
        Some(_) => err(format!("search parameter '{code}' of {resource_type} is not supported")),
        None => err(format!("unknown search parameter '{code}' for {resource_type}")),
    }
}

/// Parse one `name[:modifier][.chain]=value` pair for a resource type.
pub fn parse_clause(resource_type: &str, name: &str, value: &str) -> Result<Clause, SearchError> {
    if let Some(rest) = name.strip_prefix("_has:") {
        // _has:Observation:patient:code
        let parts: Vec<&str> = rest.splitn(3, ':').collect();
        let [source, refp, inner_name] = parts.as_slice() else {
            return err("_has needs _has:Type:reference:parameter");
        };
        if !crate::model::model().is_concrete_resource(source) {
            return err(format!("unknown resource type '{source}' in _has"));
        }
        let reference = lookup(source, refp)?;
        if reference.kind != ParamType::Reference {
            return err(format!("'{refp}' of {source} is not a reference parameter"));
        }
        let inner = parse_clause(source, inner_name, value)?;
        return Ok(Clause::Has { source_type: source.to_string(), reference, inner: Box::new(inner) });
    }
    let (head, chain) = match name.split_once('.') {
        Some((h, c)) => (h, Some(c)),
        None => (name, None),
    };
    let (code, modifier) = match head.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (head, None),
    };
    match code {
        "_id" => {
            if modifier.is_some() || chain.is_some() {
                return err("_id takes no modifier");
            }
            let ids = split_escaped(value, ',');
            if ids.iter().any(|i| !crate::is_valid_id(i)) {
                return err(format!("'{value}' is not a valid id"));
            }
            return Ok(Clause::Id(ids));
        }
        "_lastUpdated" => {
            let values =
                split_escaped(value, ',').iter().map(|v| parse_term(ParamType::Date, &Modifier::None, v)).collect::<Result<_, _>>()?;
            return Ok(Clause::LastUpdated(values));
        }
        _ => {}
    }
    let param = lookup(resource_type, code)?;
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return err(":missing takes true or false"),
        };
        return Ok(Clause::Missing { param, missing });
    }
    if let Some(chain) = chain {
        if param.kind != ParamType::Reference {
            return err(format!("'{code}' is not a reference parameter and cannot be chained"));
        }
        let chain_code = chain.split([':', '.']).next().unwrap_or(chain);
        let candidates: Vec<String> = match modifier {
            Some(t) => vec![t.to_string()],
            None => param.targets.iter().filter(|t| registry().get(t, chain_code).is_some()).cloned().collect(),
        };
        if candidates.is_empty() {
            return err(format!("no target of '{code}' has a parameter '{chain_code}'"));
        }
        if chain.contains('.') {
            return err("only one level of chaining is supported");
        }
        let inner = parse_clause(&candidates[0], chain, value)?;
        return Ok(Clause::Chain { param, target_types: candidates, inner: Box::new(inner) });
    }
    let modifier = parse_modifier(param.kind, modifier)?;
    let values = parse_values(&param, &modifier, value)?;
    Ok(Clause::Param { param, modifier, values })
}

/// Parse a whole query (already split into decoded pairs).
pub fn parse_search(resource_type: Option<&str>, pairs: &[(String, String)]) -> Result<SearchRequest, SearchError> {
    let mut req = SearchRequest {
        resource_type: resource_type.map(String::from),
        clauses: Vec::new(),
        count: DEFAULT_COUNT,
        sort: Vec::new(),
        summary: None,
        total: Total::None,
        elements: Vec::new(),
        include: Vec::new(),
        revinclude: Vec::new(),
        cursor: None,
    };
    for (name, value) in pairs {
        match name.as_str() {
            "_count" => {
                let n: usize = value.parse().map_err(|_| SearchError("_count must be a whole number".into()))?;
                req.count = n.min(MAX_COUNT);
            }
            "_sort" => {
                for key in value.split(',').filter(|k| !k.is_empty()) {
                    let (descending, p) = match key.strip_prefix('-') {
                        Some(p) => (true, p),
                        None => (false, key),
                    };
                    let kind = match p {
                        "_id" | "_lastUpdated" => None,
                        _ => {
                            let Some(rt) = resource_type else { return err("_sort needs a resource type") };
                            let param = lookup(rt, p)?;
                            if matches!(param.kind, ParamType::Composite | ParamType::Special) {
                                return err(format!("cannot sort by '{p}'"));
                            }
                            Some(param.kind)
                        }
                    };
                    req.sort.push(SortKey { param: p.to_string(), kind, descending });
                }
            }
            "_summary" => {
                req.summary = Some(match value.as_str() {
                    "true" => Summary::True,
                    "count" => Summary::Count,
                    "data" => Summary::Data,
                    "text" => Summary::Text,
                    "false" => Summary::False,
                    other => return err(format!("_summary={other}: use true, count, data, text or false")),
                })
            }
            "_total" => {
                req.total = match value.as_str() {
                    "none" => Total::None,
                    "estimate" => Total::Estimate,
                    "accurate" => Total::Accurate,
                    other => return err(format!("_total={other}: use none, estimate or accurate")),
                }
            }
            "_elements" => req.elements = value.split(',').filter(|e| !e.is_empty()).map(String::from).collect(),
            "_include" | "_include:iterate" | "_revinclude" | "_revinclude:iterate" => {
                let iterate = name.ends_with(":iterate");
                let parts: Vec<&str> = value.split(':').collect();
                let (source, param, target) = match parts.as_slice() {
                    [s, p] => (*s, *p, None),
                    [s, p, t] => (*s, *p, Some(t.to_string())),
                    _ => return err(format!("{name} takes Type:parameter[:targetType]")),
                };
                if param != "*" {
                    let p = lookup(source, param)?;
                    if p.kind != ParamType::Reference {
                        return err(format!("'{param}' of {source} is not a reference parameter"));
                    }
                }
                let inc = Include { source_type: source.to_string(), param: param.to_string(), target_type: target, iterate };
                if name.starts_with("_include") {
                    req.include.push(inc);
                } else {
                    req.revinclude.push(inc);
                }
            }
            "_cursor" => req.cursor = Some(value.clone()),
            "_format" | "_pretty" => {}
            n if n.starts_with('_')
                && !matches!(
                    n.split([':', '.']).next(),
                    Some("_id" | "_lastUpdated" | "_has" | "_tag" | "_profile" | "_security" | "_source")
                ) =>
            {
                return err(format!("search parameter '{n}' is not supported"));
            }
            _ => {
                let Some(rt) = resource_type else {
                    if name == "_id" || name.starts_with("_lastUpdated") {
                        req.clauses.push(parse_clause("Resource", name, value)?);
                        continue;
                    }
                    return err(format!("'{name}' needs a resource type (system search supports _id and _lastUpdated)"));
                };
                req.clauses.push(parse_clause(rt, name, value)?);
            }
        }
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    #[test]
    fn parses_common_searches() {
        let r = parse_search(
            Some("Observation"),
            &pairs("patient=Patient/1&code=http://loinc.org|2345-7,1234-5&date=ge2020-01&_count=5&_sort=-date,_id"),
        )
        .unwrap();
        assert_eq!(r.clauses.len(), 3);
        assert_eq!(r.count, 5);
        assert_eq!(r.sort.len(), 2);
        assert!(r.sort[0].descending);
        match &r.clauses[1] {
            Clause::Param { values, .. } => {
                assert_eq!(values[0], Term::Token { system: Some(Some("http://loinc.org".into())), code: Some("2345-7".into()) });
                assert_eq!(values[1], Term::Token { system: None, code: Some("1234-5".into()) });
            }
            other => panic!("{other:?}"),
        }
        match &r.clauses[2] {
            Clause::Param { values, .. } => assert!(matches!(values[0], Term::Date { prefix: Prefix::Ge, .. })),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn number_precision() {
        match parse_term(ParamType::Number, &Modifier::None, "100").unwrap() {
            Term::Number { low, high, .. } => assert_eq!((low, high), (99.5, 100.5)),
            t => panic!("{t:?}"),
        }
        match parse_term(ParamType::Quantity, &Modifier::None, "gt5.4|http://unitsofmeasure.org|mg").unwrap() {
            Term::Quantity { prefix, value, code, .. } => {
                assert_eq!(prefix, Prefix::Gt);
                assert_eq!(value, 5.4);
                assert_eq!(code.as_deref(), Some("mg"));
            }
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn chains_has_and_composites() {
        let r = parse_search(
            Some("Observation"),
            &pairs(
                "subject:Patient.name=peter&_has:Provenance:target:agent=Practitioner/1&code-value-quantity=http://loinc.org|8480-6$gt100",
            ),
        )
        .unwrap();
        assert!(matches!(&r.clauses[0], Clause::Chain { target_types, .. } if target_types == &["Patient"]));
        assert!(matches!(&r.clauses[1], Clause::Has { source_type, .. } if source_type == "Provenance"));
        assert!(matches!(&r.clauses[2], Clause::Param { values, .. } if matches!(&values[0], Term::Composite(t) if t.len() == 2)));
    }

    #[test]
    fn errors_are_clear() {
        let e = parse_search(Some("Patient"), &pairs("foo=bar")).unwrap_err();
        assert!(e.0.contains("unknown search parameter 'foo'"));
        assert!(parse_search(Some("Patient"), &pairs("birthdate=notadate")).is_err());
        assert!(parse_search(Some("Patient"), &pairs("name:text=x")).is_err());
        assert!(parse_search(Some("Patient"), &pairs("_count=abc")).is_err());
        assert!(parse_search(Some("Observation"), &pairs("code-value-quantity=1")).is_err());
    }
}
