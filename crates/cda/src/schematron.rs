//! An interpreter of the ISO Schematron subset the national FSE 2.0 schematrons use, over the
//! XPath 3.1 engine `xee-xpath`.
//!
//! The `.sch` files run as published. Semantics follow the ISO skeleton with `queryBinding="xslt2"`:
//! within a pattern every element is handled by the *first* rule whose context matches it; `let`
//! binds in order (an XSLT `for-each`/`value-of` body becomes the equivalent XPath); an `assert`
//! whose test is false and a `report` whose test is true fire, with their message built from the
//! text, `<name/>` and `<value-of select>`.
//!
//! A [`Schematron`] is the parsed model (plain data, `Send + Sync`). Compiled XPath programs in
//! xee are reference counted and stay on one thread, so each validating thread compiles its own
//! [`Compiled`] once and reuses it for every document.

use std::collections::HashMap;

use xee_xpath::context::StaticContextBuilder;
use xee_xpath::query::SequenceQuery;
use xee_xpath::{Documents, Queries, Query};

const SCH_NS: &str = "http://purl.oclc.org/dsdl/schematron";
const XSL_NS: &str = "http://www.w3.org/1999/XSL/Transform";

/// Whether a check is an `assert` (fires when false: an error) or a `report` (fires when true: a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Assert,
    Report,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    /// `<name/>` or `<name path="..."/>`: an XPath returning the name.
    Expr(String),
}

#[derive(Debug, Clone)]
struct Check {
    kind: Kind,
    test: String,
    id: String,
    message: Vec<Part>,
}

#[derive(Debug, Clone)]
struct Rule {
    context: String,
    /// `let $a := e1, $b := e2 return ` (empty when there are none).
    lets: String,
    /// The same bindings, one by one.
    bindings: Vec<(String, String)>,
    checks: Vec<Check>,
}

/// A parsed schematron.
#[derive(Debug, Clone)]
pub struct Schematron {
    pub name: String,
    pub title: String,
    namespaces: Vec<(String, String)>,
    patterns: Vec<Vec<Rule>>,
}

/// One firing: an assert that failed or a report that hit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Firing {
    pub kind: Kind,
    /// The schematron's own id: the `id` attribute, or the message text before its first `|`
    /// (`ERRORE-46a`, `W001`).
    pub id: String,
    pub message: String,
    /// Where: `/ClinicalDocument[1]/component[1]/...` (local names with their position among
    /// same-named siblings).
    pub location: String,
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Kind::Assert => "assert",
            Kind::Report => "report",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchematronError {
    #[error("schematron {name}: {detail}")]
    Load { name: String, detail: String },
    #[error("schematron {name}: XPath `{xpath}` does not compile: {detail}")]
    Compile { name: String, xpath: String, detail: String },
    #[error("evaluating the schematron failed: {0}")]
    Eval(String),
}

impl Schematron {
    /// Parses a `.sch` file.
    pub fn parse(name: &str, text: &str) -> Result<Self, SchematronError> {
        let load = |detail: String| SchematronError::Load { name: name.to_string(), detail };
        let doc = roxmltree::Document::parse(text).map_err(|e| load(e.to_string()))?;
        let root = doc.root_element();
        if !is_sch(root, "schema") {
            return Err(load("the root element is not an ISO schematron <schema>".into()));
        }
        if let Some(binding) = root.attribute("queryBinding") {
            if !matches!(binding, "xslt2" | "xslt3" | "xpath2" | "xpath3" | "xpath31") {
                return Err(load(format!("queryBinding {binding} is not supported")));
            }
        }
        let mut namespaces = Vec::new();
        let mut title = String::new();
        let mut patterns = Vec::new();
        let mut schema_lets = Vec::new();
        for child in root.children().filter(|n| n.is_element()) {
            if is_sch(child, "ns") {
                let (Some(p), Some(u)) = (child.attribute("prefix"), child.attribute("uri")) else {
                    return Err(load("<ns> without prefix or uri".into()));
                };
                namespaces.push((p.to_string(), u.to_string()));
            } else if is_sch(child, "title") {
                title = normalize(child.text().unwrap_or_default());
            } else if is_sch(child, "let") {
                schema_lets.push(let_binding(child).map_err(load)?);
            } else if is_sch(child, "pattern") {
                let mut lets = schema_lets.clone();
                let mut rules = Vec::new();
                for item in child.children().filter(|n| n.is_element()) {
                    if is_sch(item, "let") {
                        lets.push(let_binding(item).map_err(load)?);
                    } else if is_sch(item, "rule") {
                        rules.push(rule(item, &lets).map_err(load)?);
                    } else if !is_sch(item, "title") && !is_sch(item, "p") {
                        return Err(load(format!("unsupported <{}> in a pattern", item.tag_name().name())));
                    }
                }
                patterns.push(rules);
            } else if !is_sch(child, "p") && !is_sch(child, "phase") {
                return Err(load(format!("unsupported <{}>", child.tag_name().name())));
            }
        }
        Ok(Self { name: name.to_string(), title, namespaces, patterns })
    }

    /// Number of rules over all patterns.
    pub fn rule_count(&self) -> usize {
        self.patterns.iter().map(Vec::len).sum()
    }

    /// Compiles every XPath of the schematron for use on the current thread.
    pub fn compile(&self) -> Result<Compiled, SchematronError> {
        let mut builder = StaticContextBuilder::default();
        for (p, u) in &self.namespaces {
            builder.add_namespace(p, u);
        }
        let queries = Queries::new(builder);
        let ns_map: HashMap<String, String> = self.namespaces.iter().cloned().collect();
        let compile = |xpath: String| -> Result<SequenceQuery, SchematronError> {
            queries.sequence(&xpath).map_err(|e| SchematronError::Compile { name: self.name.clone(), xpath, detail: e.to_string() })
        };
        let mut patterns = Vec::new();
        for rules in &self.patterns {
            let mut compiled = Vec::new();
            for r in rules {
                let tests = r.checks.iter().map(|c| format!("boolean({})", c.test)).collect::<Vec<_>>().join(", ");
                let mut messages = Vec::new();
                for c in &r.checks {
                    let mut parts = Vec::new();
                    for p in &c.message {
                        parts.push(match p {
                            Part::Text(t) => CPart::Text(t.clone()),
                            Part::Expr(e) => CPart::Expr(compile(format!("{}string-join(({e}) ! string(.), ' ')", r.lets))?),
                        });
                    }
                    messages.push(parts);
                }
                compiled.push(CRule {
                    context: compile(context_query(&r.context))?,
                    rooted: match rooted_query(&r.context, &self.namespaces) {
                        Some(q) => Some(compile(q)?),
                        None => None,
                    },
                    fast: fast_rule(r, &ns_map),
                    fast_context: rooted_query(&r.context, &self.namespaces).and_then(|q| match crate::fastpath::parse(&q, &ns_map) {
                        Some(crate::fastpath::Expr::Path(p)) => Some(p),
                        _ => None,
                    }),
                    fast_descendant: descendant_pattern(&r.context).and_then(|rest| match crate::fastpath::parse(rest, &ns_map) {
                        Some(crate::fastpath::Expr::Path(p))
                            if p.start == crate::fastpath::Start::Context
                                && p.steps.iter().all(|s| matches!(s, crate::fastpath::Step::Child { local: Some(_), .. })) =>
                        {
                            Some(p)
                        }
                        _ => None,
                    }),
                    by_name: match name_contains_plan(&r.context) {
                        Some((literal, q)) => Some((literal, compile(q)?)),
                        None => None,
                    },
                    tests: compile(format!("{}({tests})", r.lets))?,
                    single: r.checks.iter().map(|c| compile(format!("{}boolean({})", r.lets, c.test))).collect::<Result<_, _>>()?,
                    messages,
                });
            }
            patterns.push(compiled);
        }
        Ok(Compiled { schema: self.clone(), patterns })
    }
}

struct FastRule {
    lets: Vec<(String, crate::fastpath::Expr)>,
    tests: Vec<crate::fastpath::Expr>,
}

fn fast_rule(r: &Rule, ns: &HashMap<String, String>) -> Option<FastRule> {
    let lets = r.bindings.iter().map(|(n, e)| Some((n.clone(), crate::fastpath::parse(e, ns)?))).collect::<Option<Vec<_>>>()?;
    let tests = r.checks.iter().map(|c| crate::fastpath::parse(&c.test, ns)).collect::<Option<Vec<_>>>()?;
    Some(FastRule { lets, tests })
}

/// The rule's test results at `node` by the native evaluator, or `None` when it cannot decide.
fn fast_results(xot: &xot::Xot, f: &FastRule, node: xot::Node) -> Option<Vec<Option<bool>>> {
    use crate::fastpath::{eval, Env, Val};
    let mut env = Env::new();
    for (name, e) in &f.lets {
        let v = eval(xot, e, node, &env).ok()?;
        env.insert(name.clone(), v);
    }
    let mut out = Vec::with_capacity(f.tests.len());
    for t in &f.tests {
        let v = eval(xot, t, node, &env).ok()?;
        out.push(Some(match v {
            Val::Items(i) => !i.is_empty(),
            Val::Num(n) => n != 0.0 && !n.is_nan(),
            Val::Str(s) => !s.is_empty(),
            Val::Bool(b) => b,
        }));
    }
    Some(out)
}

enum CPart {
    Text(String),
    Expr(SequenceQuery),
}

struct CRule {
    context: SequenceQuery,
    /// For a context that starts at `ClinicalDocument`: the same selection from the document
    /// element only, valid (and much faster) when the document holds a single ClinicalDocument.
    rooted: Option<SequenceQuery>,
    /// The rule's lets and tests in the native subset, when all of them fit it.
    fast: Option<FastRule>,
    /// The rooted context in the native subset.
    fast_context: Option<crate::fastpath::Path>,
    /// A context `[//]S1/S2/...` of named child steps in the native subset, selected from the
    /// document node with [`crate::fastpath::descendants`].
    fast_descendant: Option<crate::fastpath::Path>,
    /// For a context `//*[contains(local-name(), 'X') ...]...`: the literal, and the rest of the
    /// pattern as a query from each element whose local name contains it (found without XPath:
    /// the string test over every element is the slowest part of a naive evaluation).
    by_name: Option<(String, SequenceQuery)>,
    tests: SequenceQuery,
    /// One query per check, used only when the combined one raises a dynamic error, to tell which.
    single: Vec<SequenceQuery>,
    messages: Vec<Vec<CPart>>,
}

/// A schematron compiled for this thread.
pub struct Compiled {
    schema: Schematron,
    patterns: Vec<Vec<CRule>>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").field("name", &self.schema.name).finish()
    }
}

impl Compiled {
    pub fn name(&self) -> &str {
        &self.schema.name
    }

    /// Runs the schematron over a well-formed XML document (already checked for DTDs).
    pub fn validate(&self, xml: &str) -> Result<Vec<Firing>, SchematronError> {
        let mut documents = Documents::new();
        let handle = documents.add_string_without_uri(xml).map_err(|e| SchematronError::Eval(e.to_string()))?;
        let root = documents.document_node(handle).ok_or_else(|| SchematronError::Eval("no document node".into()))?;
        let eval = |e: xee_xpath::error::Error| SchematronError::Eval(e.to_string());
        let mut firings = Vec::new();
        let single_root = single_clinical_document(documents.xot(), root);
        for (p, rules) in self.patterns.iter().enumerate() {
            let mut handled: HashMap<xot::Node, ()> = HashMap::new();
            for (r, rule) in rules.iter().enumerate() {
                let query = match (&rule.rooted, single_root) {
                    (Some(q), true) => q,
                    _ => &rule.context,
                };
                let fast_nodes = match (&rule.fast_context, single_root) {
                    (Some(p), true) => crate::fastpath::path(documents.xot(), p, root, &crate::fastpath::Env::new()).ok().map(|items| {
                        items
                            .into_iter()
                            .filter_map(|i| match i {
                                crate::fastpath::Item::Element(n) => Some(xee_xpath::Item::Node(n)),
                                crate::fastpath::Item::Attr(_) => None,
                            })
                            .collect::<Vec<_>>()
                    }),
                    _ => None,
                };
                let fast_nodes = fast_nodes.or_else(|| {
                    let p = rule.fast_descendant.as_ref()?;
                    let found = crate::fastpath::descendants(documents.xot(), p, root).ok()?;
                    Some(found.into_iter().map(xee_xpath::Item::Node).collect::<Vec<_>>())
                });
                let nodes = match (&rule.by_name, fast_nodes) {
                    (_, Some(found)) => xee_xpath::Sequence::from(found),
                    (Some((literal, q)), None) => {
                        let candidates: Vec<xot::Node> = documents
                            .xot()
                            .descendants(root)
                            .filter(|n| {
                                documents
                                    .xot()
                                    .element(*n)
                                    .is_some_and(|e| documents.xot().local_name_str(e.name()).contains(literal.as_str()))
                            })
                            .collect();
                        let mut found = Vec::new();
                        for c in candidates {
                            let seq = q.execute(&mut documents, c).map_err(eval)?;
                            for n in seq.nodes() {
                                let n = n.map_err(|e| SchematronError::Eval(e.to_string()))?;
                                if !found.contains(&n) {
                                    found.push(n);
                                }
                            }
                        }
                        xee_xpath::Sequence::from(found.into_iter().map(xee_xpath::Item::Node).collect::<Vec<_>>())
                    }
                    (None, None) => query.execute(&mut documents, root).map_err(eval)?,
                };
                let nodes: Vec<xot::Node> = nodes.nodes().collect::<Result<_, _>>().map_err(|e| SchematronError::Eval(e.to_string()))?;
                for node in nodes {
                    if handled.insert(node, ()).is_some() {
                        continue;
                    }
                    let checks = &self.schema.patterns[p][r].checks;
                    let fast = rule.fast.as_ref().and_then(|f| fast_results(documents.xot(), f, node));
                    let results: Vec<Option<bool>> = match fast {
                        Some(r) => r,
                        None => match rule.tests.execute(&mut documents, node) {
                            Ok(seq) => seq.iter().map(|i| i.effective_boolean_value().ok()).collect(),
                            Err(_) => rule
                                .single
                                .iter()
                                .map(|q| q.execute(&mut documents, node).ok().and_then(|s| s.effective_boolean_value().ok()))
                                .collect(),
                        },
                    };
                    for (i, check) in checks.iter().enumerate() {
                        let fired = match (check.kind, results.get(i).copied().flatten()) {
                            (_, None) => true,
                            (Kind::Assert, Some(v)) => !v,
                            (Kind::Report, Some(v)) => v,
                        };
                        if !fired {
                            continue;
                        }
                        let mut message = String::new();
                        for part in &rule.messages[i] {
                            match part {
                                CPart::Text(t) => message.push_str(t),
                                CPart::Expr(q) => {
                                    if let Ok(s) = q.execute(&mut documents, node) {
                                        message.push_str(&s.string_value(documents.xot()).unwrap_or_default());
                                    }
                                }
                            }
                        }
                        if results.get(i).copied().flatten().is_none() {
                            message.push_str(" [the test raised an XPath error]");
                        }
                        firings.push(Firing {
                            kind: check.kind,
                            id: check.id.clone(),
                            message: normalize(&message),
                            location: location(documents.xot(), node),
                        });
                    }
                }
            }
        }
        Ok(firings)
    }
}

/// `/ClinicalDocument[1]/component[1]/...` for an element.
pub fn location(xot: &xot::Xot, node: xot::Node) -> String {
    let mut steps = Vec::new();
    let mut current = Some(node);
    while let Some(n) = current {
        let Some(el) = xot.element(n) else { break };
        let name = el.name();
        let position = match xot.parent(n) {
            Some(parent) => {
                xot.children(parent).take_while(|c| *c != n).filter(|c| xot.element(*c).is_some_and(|e| e.name() == name)).count() + 1
            }
            None => 1,
        };
        steps.push(format!("{}[{position}]", xot.local_name_str(name)));
        current = xot.parent(n);
    }
    steps.reverse();
    format!("/{}", steps.join("/"))
}

/// The XPath selecting every node a rule context (an XSLT match pattern) matches.
fn context_query(pattern: &str) -> String {
    split_union(pattern)
        .into_iter()
        .map(|p| match descent(p.trim()) {
            // `/descendant::S` selects what `//S` does when S's predicates are not positional,
            // without building the descendant-or-self sequence first
            Some(rest) => format!("/descendant::{rest}"),
            None => {
                let p = p.trim();
                let rest = p.strip_prefix("//").unwrap_or(p);
                if first_step_positional(rest) && !rest.starts_with('/') {
                    format!("//{rest}")
                } else {
                    p.to_string()
                }
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The steps `S` of one union member that selects by descent from the document node: `//S`
/// or a relative `S` (a match pattern matches wherever the element is), whose first step is not
/// positional. `None` for an absolute path or a positional first step.
fn descent(p: &str) -> Option<&str> {
    let rest = p.strip_prefix("//").unwrap_or(p);
    if rest.starts_with('/') || (p.starts_with('/') && !p.starts_with("//")) || first_step_positional(rest) {
        return None;
    }
    Some(rest)
}

/// [`descent`] for a whole context pattern without a union (the native evaluator's case).
fn descendant_pattern(pattern: &str) -> Option<&str> {
    let p = pattern.trim();
    if split_union(p).len() != 1 {
        return None;
    }
    descent(p)
}

/// Whether the document element is the document's only `ClinicalDocument` (any namespace).
fn single_clinical_document(xot: &xot::Xot, root: xot::Node) -> bool {
    let mut count = 0;
    for n in xot.descendants(root) {
        if xot.element(n).is_some_and(|e| xot.local_name_str(e.name()) == "ClinicalDocument") {
            count += 1;
            if count > 1 {
                return false;
            }
        }
    }
    xot.document_element(root).ok().and_then(|e| xot.element(e)).is_some_and(|e| xot.local_name_str(e.name()) == "ClinicalDocument")
}

/// `/p:ClinicalDocument/rest` for a context `[//]p:ClinicalDocument[/rest]` whose prefix is the
/// HL7 namespace and that has no union: what it selects when ClinicalDocument is the document
/// element and occurs once.
fn rooted_query(pattern: &str, namespaces: &[(String, String)]) -> Option<String> {
    if split_union(pattern).len() != 1 {
        return None;
    }
    let p = pattern.trim();
    let p = p.strip_prefix("//").unwrap_or(p);
    let (prefix, rest) = p.split_once(':')?;
    if !namespaces.iter().any(|(pre, uri)| pre == prefix && uri == "urn:hl7-org:v3") {
        return None;
    }
    let after = rest.strip_prefix("ClinicalDocument")?;
    if !(after.is_empty() || after.starts_with('/') || after.starts_with('[')) || after.starts_with("//") {
        return None;
    }
    Some(format!("/{prefix}:ClinicalDocument{after}"))
}

/// For `//*[contains(local-name(), 'LIT')]REST` or `//*[contains(local-name(), 'LIT') and Q]REST`
/// (REST: further predicates or child steps): `LIT` and the query `self::*[Q]REST` that, from each
/// element whose local name contains LIT, selects what the pattern selects through it.
fn name_contains_plan(pattern: &str) -> Option<(String, String)> {
    let p = pattern.trim().strip_prefix("//*[contains(local-name(), '")?;
    let (literal, after) = p.split_once("')")?;
    if literal.is_empty() || !literal.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    // the rest of the first predicate, up to its closing bracket (depth 1 inside it)
    let end = top_level(after).into_iter().find(|&(_, c, d)| c == ']' && d == 0).map(|(i, _, _)| i);
    let end = end?;
    let inner = after[..end].trim();
    let rest = &after[end + 1..];
    if rest.starts_with("//") || !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('[')) || split_union(rest).len() != 1 {
        return None;
    }
    let first = if inner.is_empty() {
        "self::*".to_string()
    } else {
        let q = inner.strip_prefix("and ")?;
        format!("self::*[{q}]")
    };
    if first_step_positional(&format!("x{rest}")) {
        return None;
    }
    Some((literal.to_string(), format!("{first}{rest}")))
}

/// The byte offsets of the characters of `s` that lie outside string literals, with the bracket
/// and parenthesis depth before each (depth counts `[` and `(`).
fn top_level(s: &str) -> Vec<(usize, char, i32)> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    continue;
                }
                out.push((i, c, depth));
                match c {
                    '[' | '(' => depth += 1,
                    ']' | ')' => depth -= 1,
                    _ => {}
                }
            }
        }
    }
    out
}

/// Whether the first step of a relative path has a predicate that may depend on position.
fn first_step_positional(path: &str) -> bool {
    let end = top_level(path).into_iter().find(|&(_, c, d)| c == '/' && d == 0).map_or(path.len(), |(i, _, _)| i);
    let first_step = &path[..end];
    let predicates = first_step.split_once('[').map(|(_, p)| p).unwrap_or_default();
    predicates.contains("position")
        || predicates.contains("last()")
        || predicates.split(']').any(|p| {
            let p = p.trim_start_matches('[').trim();
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Splits a pattern at its top-level `|` (outside brackets, parentheses and string literals).
fn split_union(pattern: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c, d) in top_level(pattern) {
        if c == '|' && d == 0 {
            parts.push(pattern[start..i].to_string());
            start = i + 1;
        }
    }
    parts.push(pattern[start..].to_string());
    parts
}

fn is_sch(node: roxmltree::Node, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(SCH_NS)
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `(name, xpath)` for a `<let>`: its `value`, or its XSLT body as the equivalent XPath string.
fn let_binding(node: roxmltree::Node) -> Result<(String, String), String> {
    let name = node.attribute("name").ok_or("<let> without a name")?.to_string();
    if let Some(v) = node.attribute("value") {
        return Ok((name, v.to_string()));
    }
    let body = xslt_body(node)?;
    Ok((name, format!("string-join(({body}), '')")))
}

/// The XPath producing the strings an XSLT `for-each` / `value-of` body writes.
fn xslt_body(node: roxmltree::Node) -> Result<String, String> {
    let mut items = Vec::new();
    for child in node.children() {
        if child.is_text() {
            let t = child.text().unwrap_or_default();
            if !t.trim().is_empty() {
                items.push(format!("'{}'", t.replace('\'', "''")));
            }
            continue;
        }
        if !child.is_element() {
            continue;
        }
        let ns = child.tag_name().namespace();
        let local = child.tag_name().name();
        let select = child.attribute("select");
        match (ns, local, select) {
            (Some(XSL_NS), "for-each", Some(sel)) => items.push(format!("({sel}) ! string-join(({}), '')", xslt_body(child)?)),
            (Some(XSL_NS | SCH_NS), "value-of", Some(sel)) => items.push(format!("string-join(({sel}) ! string(.), ' ')")),
            _ => return Err(format!("unsupported <{local}> in a <let> body")),
        }
    }
    if items.is_empty() {
        return Ok("''".into());
    }
    Ok(items.join(", "))
}

fn rule(node: roxmltree::Node, outer_lets: &[(String, String)]) -> Result<Rule, String> {
    if node.attribute("abstract") == Some("true") {
        return Err("abstract rules are not supported".into());
    }
    let context = node.attribute("context").ok_or("<rule> without a context")?.to_string();
    let mut lets = outer_lets.to_vec();
    let mut checks = Vec::new();
    for child in node.children().filter(|n| n.is_element()) {
        if is_sch(child, "let") {
            lets.push(let_binding(child)?);
        } else if is_sch(child, "assert") || is_sch(child, "report") {
            let kind = if is_sch(child, "assert") { Kind::Assert } else { Kind::Report };
            let test = child.attribute("test").ok_or("a check without a test")?.to_string();
            let message = message(child)?;
            let text: String = message
                .iter()
                .map(|p| match p {
                    Part::Text(t) => t.as_str(),
                    Part::Expr(_) => "",
                })
                .collect();
            let id = match child.attribute("id") {
                Some(id) => id.to_string(),
                None => normalize(text.split('|').next().unwrap_or_default()),
            };
            checks.push(Check { kind, test, id, message });
        } else {
            return Err(format!("unsupported <{}> in a rule", child.tag_name().name()));
        }
    }
    let bindings = lets;
    let lets = if bindings.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = bindings.iter().map(|(n, e)| format!("${n} := ({e})")).collect();
        format!("let {} return ", list.join(", "))
    };
    Ok(Rule { context, lets, bindings, checks })
}

fn message(node: roxmltree::Node) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    for child in node.children() {
        if child.is_text() {
            parts.push(Part::Text(child.text().unwrap_or_default().to_string()));
        } else if child.is_element() {
            match child.tag_name().name() {
                "name" => parts.push(Part::Expr(match child.attribute("path") {
                    Some(p) => format!("name({p})"),
                    None => "name(.)".into(),
                })),
                "value-of" => parts.push(Part::Expr(child.attribute("select").ok_or("value-of without select")?.to_string())),
                "emph" | "dir" | "span" => parts.push(Part::Text(child.text().unwrap_or_default().to_string())),
                other => return Err(format!("unsupported <{other}> in a message")),
            }
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unions_split_outside_predicates() {
        assert_eq!(context_query("a[b|c] | /d"), "/descendant::a[b|c] | /d");
        assert_eq!(context_query("hl7:x[@a='|']"), "/descendant::hl7:x[@a='|']");
        assert_eq!(context_query("//x[1]/y"), "//x[1]/y");
        assert_eq!(context_query("//x[last()]"), "//x[last()]");
        assert_eq!(
            name_contains_plan("//*[contains(local-name(), 'Person') and not(ancestor::hl7:section)]/hl7:name"),
            Some(("Person".into(), "self::*[not(ancestor::hl7:section)]/hl7:name".into()))
        );
        assert_eq!(
            name_contains_plan("//*[contains(local-name(), 'Organization')][hl7:telecom]"),
            Some(("Organization".into(), "self::*[hl7:telecom]".into()))
        );
        assert_eq!(name_contains_plan("//*[contains(local-name(), 'X') or y]/z"), None);
    }

    #[test]
    fn first_matching_rule_wins_and_messages_are_built() {
        let sch = r#"<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">
          <ns prefix="h" uri="urn:x"/>
          <pattern>
            <rule context="h:b[@k='1']">
              <let name="n" value="count(h:c)"/>
              <assert test="$n = 2">E-1| <name/> needs two c, has <value-of select="$n"/></assert>
            </rule>
            <rule context="h:b">
              <report test="true()">W-2| other b</report>
            </rule>
          </pattern>
        </schema>"#;
        let s = Schematron::parse("t", sch).unwrap();
        let c = s.compile().unwrap();
        let f = c.validate(r#"<a xmlns="urn:x"><b k="1"><c/></b><b/><b k="1"><c/><c/></b></a>"#).unwrap();
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!((f[0].id.as_str(), f[0].kind), ("E-1", Kind::Assert));
        assert_eq!(f[0].message, "E-1| b needs two c, has 1");
        assert_eq!(f[0].location, "/a[1]/b[1]");
        assert_eq!((f[1].id.as_str(), f[1].location.as_str()), ("W-2", "/a[1]/b[2]"));
    }
}
