//! A FHIRPath subset: enough for every expression in the official R4 SearchParameter definitions.
//!
//! Supported: member navigation (with choice types: `value` finds `valueQuantity`), `|` unions,
//! indexers `[n]`, `where(...)`, `as(T)` / `x as T`, `is(T)` / `x is T`, `ofType(T)`,
//! `resolve()` (only as `resolve() is Type`, answered from the reference string), `exists()`,
//! `empty()`, `not()`, `first()`, `extension(url)`, `and`, `or`, `=`, `!=`, string / boolean /
//! number literals. Anything else is a parse error, so unsupported expressions are reported at
//! start-up instead of silently indexing nothing.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A member name or, at the root, a resource type name.
    Ident(String),
    Str(String),
    Bool(bool),
    Num(f64),
    /// `left.right`
    Path(Box<Expr>, Box<Expr>),
    Index(Box<Expr>, usize),
    Union(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Eq(Box<Expr>, Box<Expr>, bool),
    As(Box<Expr>, String),
    Is(Box<Expr>, String),
    Call(String, Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Sym(char),
    Ne,
}

fn lex(s: &str) -> Result<Vec<Tok>, ParseError> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' || c == '$' || c == '%' {
            let st = i;
            i += 1;
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_' || cs[i] == '$') {
                i += 1;
            }
            out.push(Tok::Ident(cs[st..i].iter().collect()));
        } else if c == '`' {
            let st = i + 1;
            i += 1;
            while i < cs.len() && cs[i] != '`' {
                i += 1;
            }
            out.push(Tok::Ident(cs[st..i.min(cs.len())].iter().collect()));
            i += 1;
        } else if c.is_ascii_digit() {
            let st = i;
            while i < cs.len() && (cs[i].is_ascii_digit() || cs[i] == '.') {
                i += 1;
            }
            let t: String = cs[st..i].iter().collect();
            out.push(Tok::Num(t.parse().map_err(|_| ParseError(format!("bad number {t}")))?));
        } else if c == '\'' {
            let mut t = String::new();
            i += 1;
            while i < cs.len() && cs[i] != '\'' {
                if cs[i] == '\\' && i + 1 < cs.len() {
                    i += 1;
                }
                t.push(cs[i]);
                i += 1;
            }
            if i >= cs.len() {
                return Err(ParseError("unterminated string".into()));
            }
            i += 1;
            out.push(Tok::Str(t));
        } else if c == '!' && cs.get(i + 1) == Some(&'=') {
            out.push(Tok::Ne);
            i += 2;
        } else if "().|[],=".contains(c) {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            return Err(ParseError(format!("unexpected character {c:?}")));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat_sym(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x == w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_sym(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat_sym(c) {
            Ok(())
        } else {
            Err(ParseError(format!("expected {c:?} at token {}", self.pos)))
        }
    }
    fn ident(&mut self) -> Result<String, ParseError> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            other => Err(ParseError(format!("expected a name, found {other:?}"))),
        }
    }
    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.and()?;
        while self.eat_word("or") {
            let r = self.and()?;
            l = Expr::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.union()?;
        while self.eat_word("and") {
            let r = self.union()?;
            l = Expr::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn union(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.equality()?;
        while self.eat_sym('|') {
            let r = self.equality()?;
            l = Expr::Union(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn equality(&mut self) -> Result<Expr, ParseError> {
        let l = self.typed()?;
        if self.eat_sym('=') {
            let r = self.typed()?;
            return Ok(Expr::Eq(Box::new(l), Box::new(r), true));
        }
        if self.peek() == Some(&Tok::Ne) {
            self.pos += 1;
            let r = self.typed()?;
            return Ok(Expr::Eq(Box::new(l), Box::new(r), false));
        }
        Ok(l)
    }
    fn typed(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.postfix()?;
        loop {
            if self.eat_word("as") {
                l = Expr::As(Box::new(l), self.type_name()?);
            } else if self.eat_word("is") {
                l = Expr::Is(Box::new(l), self.type_name()?);
            } else {
                return Ok(l);
            }
        }
    }
    fn type_name(&mut self) -> Result<String, ParseError> {
        let mut n = self.ident()?;
        // `FHIR.Patient` / `System.String`
        while self.eat_sym('.') {
            n = self.ident()?;
        }
        Ok(n)
    }
    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.primary()?;
        loop {
            if self.eat_sym('.') {
                let inv = self.invocation()?;
                e = Expr::Path(Box::new(e), Box::new(inv));
            } else if self.eat_sym('[') {
                let n = match self.toks.get(self.pos).cloned() {
                    Some(Tok::Num(n)) if n >= 0.0 => n as usize,
                    other => return Err(ParseError(format!("bad index {other:?}"))),
                };
                self.pos += 1;
                self.expect_sym(']')?;
                e = Expr::Index(Box::new(e), n);
            } else {
                return Ok(e);
            }
        }
    }
    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Sym('(')) => {
                self.pos += 1;
                let e = self.or()?;
                self.expect_sym(')')?;
                Ok(e)
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Str(s))
            }
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Num(n))
            }
            Some(Tok::Ident(w)) if w == "true" || w == "false" => {
                self.pos += 1;
                Ok(Expr::Bool(w == "true"))
            }
            _ => self.invocation(),
        }
    }
    fn invocation(&mut self) -> Result<Expr, ParseError> {
        let name = self.ident()?;
        if self.eat_sym('(') {
            let mut args = Vec::new();
            if !self.eat_sym(')') {
                loop {
                    args.push(self.or()?);
                    if self.eat_sym(')') {
                        break;
                    }
                    self.expect_sym(',')?;
                }
            }
            match name.as_str() {
                "where" | "exists" | "empty" | "not" | "first" | "resolve" | "extension" => Ok(Expr::Call(name, args)),
                "as" | "is" | "ofType" => {
                    let t = match args.as_slice() {
                        [Expr::Ident(t)] => t.clone(),
                        [Expr::Path(_, b)] => match b.as_ref() {
                            Expr::Ident(t) => t.clone(),
                            _ => return Err(ParseError("bad type argument".into())),
                        },
                        _ => return Err(ParseError("bad type argument".into())),
                    };
                    Ok(Expr::Call(name, vec![Expr::Ident(t)]))
                }
                other => Err(ParseError(format!("unsupported function {other}()"))),
            }
        } else {
            Ok(Expr::Ident(name))
        }
    }
}

/// Parse an expression of the supported subset.
pub fn parse(s: &str) -> Result<Expr, ParseError> {
    let toks = lex(s)?;
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(ParseError(format!("trailing input in {s:?}")));
    }
    Ok(e)
}

/// One item of a FHIRPath collection.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// A JSON node, with the FHIR type when known from a choice element (`valueQuantity`).
    Node(&'a Value, Option<&'a str>),
    Bool(bool),
    Str(String),
    Num(f64),
    /// The target of `resolve()`: only its resource type is known.
    Resolved(String),
}

impl Item<'_> {
    pub fn json(&self) -> Option<&Value> {
        match self {
            Item::Node(v, _) => Some(v),
            _ => None,
        }
    }
}

fn type_matches(item: &Item<'_>, t: &str) -> bool {
    match item {
        Item::Node(v, hint) => match hint {
            Some(h) => h.eq_ignore_ascii_case(t),
            None => match t {
                "string" | "uri" | "code" | "id" | "canonical" | "url" | "markdown" | "date" | "dateTime" | "instant" | "time" | "oid"
                | "uuid" => v.is_string(),
                "boolean" => v.is_boolean(),
                "integer" | "decimal" | "positiveInt" | "unsignedInt" => v.is_number(),
                "Reference" => v.get("reference").is_some() || v.get("identifier").is_some(),
                _ => v.get("resourceType").and_then(Value::as_str).map_or(v.is_object(), |rt| rt == t),
            },
        },
        Item::Resolved(rt) => rt == t || t == "Resource" || t == "DomainResource",
        Item::Bool(_) => t == "boolean" || t == "Boolean",
        Item::Str(_) => t == "string" || t == "String",
        Item::Num(_) => t == "decimal" || t == "integer",
    }
}

fn push_child<'a>(out: &mut Vec<Item<'a>>, v: &'a Value, hint: Option<&'a str>) {
    match v {
        Value::Array(a) => out.extend(a.iter().map(|x| Item::Node(x, hint))),
        Value::Null => {}
        _ => out.push(Item::Node(v, hint)),
    }
}

fn member<'a>(focus: &[Item<'a>], name: &str, out: &mut Vec<Item<'a>>) {
    for it in focus {
        let Item::Node(Value::Object(map), _) = it else { continue };
        if let Some(v) = map.get(name) {
            push_child(out, v, None);
            continue;
        }
        // choice type: `value` matches `valueQuantity`, `valueString`, ...
        for (k, v) in map.iter() {
            if let Some(rest) = k.strip_prefix(name) {
                if rest.starts_with(|c: char| c.is_ascii_uppercase()) {
                    push_child(out, v, Some(rest));
                }
            }
        }
    }
}

fn truthy(c: &[Item<'_>]) -> Option<bool> {
    match c {
        [] => None,
        [Item::Bool(b)] => Some(*b),
        [Item::Node(Value::Bool(b), _)] => Some(*b),
        _ => Some(true),
    }
}

fn same(a: &Item<'_>, b: &Item<'_>) -> bool {
    let as_val = |i: &Item<'_>| -> Value {
        match i {
            Item::Node(v, _) => (*v).clone(),
            Item::Bool(b) => Value::Bool(*b),
            Item::Str(s) => Value::String(s.clone()),
            Item::Num(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
            Item::Resolved(s) => Value::String(s.clone()),
        }
    };
    let (x, y) = (as_val(a), as_val(b));
    match (x.as_f64(), y.as_f64()) {
        (Some(p), Some(q)) => p == q,
        _ => x == y,
    }
}

/// Evaluate `e` with `focus` as the input collection and `root` the resource.
pub fn eval<'a>(e: &Expr, focus: &[Item<'a>], root: &'a Value) -> Vec<Item<'a>> {
    match e {
        Expr::Ident(name) => {
            let is_root = focus.len() == 1 && matches!(focus[0], Item::Node(v, _) if std::ptr::eq(v, root));
            if is_root && name.starts_with(|c: char| c.is_ascii_uppercase()) {
                let rt = root.get("resourceType").and_then(Value::as_str).unwrap_or("");
                if name == rt || name == "Resource" || name == "DomainResource" {
                    return focus.to_vec();
                }
                return Vec::new();
            }
            if name == "$this" {
                return focus.to_vec();
            }
            if name == "%resource" || name == "%rootResource" {
                return vec![Item::Node(root, None)];
            }
            let mut out = Vec::new();
            member(focus, name, &mut out);
            out
        }
        Expr::Str(s) => vec![Item::Str(s.clone())],
        Expr::Bool(b) => vec![Item::Bool(*b)],
        Expr::Num(n) => vec![Item::Num(*n)],
        Expr::Path(l, r) => {
            let lv = eval(l, focus, root);
            eval_on(r, &lv, root)
        }
        Expr::Index(l, n) => eval(l, focus, root).into_iter().nth(*n).into_iter().collect(),
        Expr::Union(l, r) => {
            let mut a = eval(l, focus, root);
            a.extend(eval(r, focus, root));
            a
        }
        Expr::And(l, r) => {
            let (a, b) = (truthy(&eval(l, focus, root)), truthy(&eval(r, focus, root)));
            match (a, b) {
                (Some(false), _) | (_, Some(false)) => vec![Item::Bool(false)],
                (Some(true), Some(true)) => vec![Item::Bool(true)],
                _ => Vec::new(),
            }
        }
        Expr::Or(l, r) => {
            let (a, b) = (truthy(&eval(l, focus, root)), truthy(&eval(r, focus, root)));
            match (a, b) {
                (Some(true), _) | (_, Some(true)) => vec![Item::Bool(true)],
                (Some(false), Some(false)) => vec![Item::Bool(false)],
                _ => Vec::new(),
            }
        }
        Expr::Eq(l, r, positive) => {
            let (a, b) = (eval(l, focus, root), eval(r, focus, root));
            if a.is_empty() || b.is_empty() {
                return Vec::new();
            }
            let eq = a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| same(x, y));
            vec![Item::Bool(eq == *positive)]
        }
        Expr::As(l, t) => eval(l, focus, root).into_iter().filter(|i| type_matches(i, t)).collect(),
        Expr::Is(l, t) => {
            let v = eval(l, focus, root);
            match v.as_slice() {
                [one] => vec![Item::Bool(type_matches(one, t))],
                _ => Vec::new(),
            }
        }
        Expr::Call(..) => eval_on(e, focus, root),
    }
}

/// Evaluate an invocation (the right side of `.`) on each item of `focus`.
fn eval_on<'a>(e: &Expr, focus: &[Item<'a>], root: &'a Value) -> Vec<Item<'a>> {
    match e {
        Expr::Call(name, args) => match name.as_str() {
            "where" => {
                let Some(cond) = args.first() else { return Vec::new() };
                focus.iter().filter(|it| truthy(&eval(cond, std::slice::from_ref(*it), root)) == Some(true)).cloned().collect()
            }
            "exists" => vec![Item::Bool(!focus.is_empty())],
            "empty" => vec![Item::Bool(focus.is_empty())],
            "not" => match truthy(focus) {
                Some(b) => vec![Item::Bool(!b)],
                None => Vec::new(),
            },
            "first" => focus.first().cloned().into_iter().collect(),
            "as" | "ofType" => match args.first() {
                Some(Expr::Ident(t)) => focus.iter().filter(|i| type_matches(i, t)).cloned().collect(),
                _ => Vec::new(),
            },
            "is" => match (args.first(), focus) {
                (Some(Expr::Ident(t)), [one]) => vec![Item::Bool(type_matches(one, t))],
                _ => Vec::new(),
            },
            "resolve" => focus
                .iter()
                .filter_map(|it| {
                    let r = it.json()?.get("reference")?.as_str()?;
                    reference_type(r).map(|t| Item::Resolved(t.to_string()))
                })
                .collect(),
            "extension" => {
                let url = match args.first() {
                    Some(Expr::Str(u)) => u.as_str(),
                    _ => return Vec::new(),
                };
                let mut exts = Vec::new();
                member(focus, "extension", &mut exts);
                exts.into_iter().filter(|x| x.json().and_then(|v| v.get("url")).and_then(Value::as_str) == Some(url)).collect()
            }
            _ => Vec::new(),
        },
        other => {
            // navigation relative to each item
            let mut out = Vec::new();
            for it in focus {
                out.extend(eval(other, std::slice::from_ref(it), root));
            }
            out
        }
    }
}

/// The resource type of a relative or absolute literal reference (`Patient/1`, `http://x/fhir/Patient/1/_history/2`).
pub fn reference_type(r: &str) -> Option<&str> {
    let r = r.split('#').next().unwrap_or(r);
    let mut segs: Vec<&str> = r.split('/').collect();
    if segs.len() >= 4 && segs[segs.len() - 2] == "_history" {
        segs.truncate(segs.len() - 2);
    }
    if segs.len() < 2 {
        return None;
    }
    let t = segs[segs.len() - 2];
    t.starts_with(|c: char| c.is_ascii_uppercase()).then_some(t)
}

/// Evaluate an expression on a resource.
pub fn evaluate<'a>(e: &Expr, resource: &'a Value) -> Vec<Item<'a>> {
    eval(e, &[Item::Node(resource, None)], resource)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn navigation_and_choice() {
        let obs = json!({"resourceType":"Observation","code":{"coding":[{"system":"http://loinc.org","code":"1"}]},
            "valueQuantity":{"value":5},"subject":{"reference":"Patient/p1"}});
        let e = parse("Observation.code").unwrap();
        assert_eq!(evaluate(&e, &obs).len(), 1);
        let e = parse("(Observation.value as Quantity) | (Observation.value as SampledData)").unwrap();
        assert_eq!(evaluate(&e, &obs).len(), 1);
        let e = parse("Observation.value.as(CodeableConcept)").unwrap();
        assert!(evaluate(&e, &obs).is_empty());
        let e = parse("Observation.subject.where(resolve() is Patient)").unwrap();
        assert_eq!(evaluate(&e, &obs).len(), 1);
        let e = parse("Observation.subject.where(resolve() is Group)").unwrap();
        assert!(evaluate(&e, &obs).is_empty());
        let e = parse("Patient.name | Observation.code").unwrap();
        assert_eq!(evaluate(&e, &obs).len(), 1);
    }

    #[test]
    fn where_and_booleans() {
        let p = json!({"resourceType":"Patient","telecom":[{"system":"phone","value":"1"},{"system":"email","value":"a@b"}],
            "deceasedBoolean": false});
        let e = parse("Patient.telecom.where(system='email')").unwrap();
        let r = evaluate(&e, &p);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].json().unwrap()["value"], "a@b");
        let e = parse("Patient.deceased.exists() and Patient.deceased != false").unwrap();
        assert!(matches!(evaluate(&e, &p).as_slice(), [Item::Bool(false)]));
        let e = parse("Bundle.entry[0].resource").unwrap();
        let b = json!({"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Composition"}},{"resource":{}}]});
        assert_eq!(evaluate(&e, &b).len(), 1);
    }

    #[test]
    fn unsupported_is_an_error() {
        assert!(parse("Patient.name.select(given)").is_err());
        assert!(parse("Patient.name +").is_err());
    }

    #[test]
    fn reference_types() {
        assert_eq!(reference_type("Patient/1"), Some("Patient"));
        assert_eq!(reference_type("http://a/fhir/Observation/2/_history/3"), Some("Observation"));
        assert_eq!(reference_type("urn:uuid:123"), None);
    }
}
