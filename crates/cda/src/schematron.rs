//! An interpreter of the ISO Schematron subset the national FSE 2.0 schematrons use, over the
//! XPath 3.1 engine `xee-xpath` and a native evaluator for the XPath most rules are written in.
//!
//! The `.sch` files run as published. Semantics follow the ISO skeleton with `queryBinding="xslt2"`:
//! within a pattern every element is handled by the *first* rule whose context matches it; `let`
//! binds in order (an XSLT `for-each`/`value-of` body becomes the equivalent XPath); an `assert`
//! whose test is false and a `report` whose test is true fire, with their message built from the
//! text, `<name/>` and `<value-of select>`.
//!
//! A [`Schematron`] is the parsed model (plain data, `Send + Sync`). Each validating thread
//! prepares its own [`Compiled`] once and reuses it for every document.
//!
//! Rules run over the validator's `roxmltree` tree by the native evaluator ([`crate::fastpath`])
//! when their context, their tests and the lets those tests read are in its XPath subset, which
//! covers every rule the official examples exercise. Any other rule, and any case the evaluator
//! cannot decide, runs in xee: the document is then parsed into xee's tree (once per document,
//! and only then), and the rule's XPath programs are compiled on first use (xee programs are
//! reference counted and stay on their thread). Both trees are built from the same text, so the
//! document node and the elements correspond one to one, in document order.

use std::collections::{HashMap, HashSet};

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
    #[error("the schematron did not finish in the time a document is given")]
    Deadline,
}

/// How far one run may go.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    deadline: Option<std::time::Instant>,
    max_firings: usize,
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

    /// Prepares the schematron for the current thread: each rule in the native subset, where it
    /// fits. The rules' XPath programs for xee are compiled when a rule first needs them
    /// ([`Compiled::compile_all`] compiles every one now).
    pub fn compile(&self) -> Result<Compiled, SchematronError> {
        use crate::fastpath::{parse, Axis, Expr, Start, Step};
        let ns_map: HashMap<String, String> = self.namespaces.iter().cloned().collect();
        let patterns = self
            .patterns
            .iter()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| CRule {
                        fast: fast_rule(r, &ns_map),
                        fast_context: rooted_query(&r.context, &self.namespaces).and_then(|q| match parse(&q, &ns_map) {
                            Some(Expr::Path(p)) => Some(p),
                            _ => None,
                        }),
                        fast_descendant: descendant_pattern(&r.context).and_then(|rest| match parse(rest, &ns_map) {
                            Some(Expr::Path(p))
                                if p.start == Start::Context && matches!(p.steps.first(), Some(Step::Axis { axis: Axis::Child, .. })) =>
                            {
                                Some(p)
                            }
                            _ => None,
                        }),
                        messages: r
                            .checks
                            .iter()
                            .map(|c| {
                                c.message
                                    .iter()
                                    .map(|p| match p {
                                        Part::Text(t) => CPart::Text(t.clone()),
                                        Part::Expr(e) => CPart::Expr(parse(e, &ns_map)),
                                    })
                                    .collect()
                            })
                            .collect(),
                        xee: std::cell::OnceCell::new(),
                    })
                    .collect()
            })
            .collect();
        Ok(Compiled { schema: self.clone(), patterns })
    }

    /// Compiles one rule's XPath programs for xee.
    fn compile_xee(&self, r: &Rule) -> Result<XeeRule, SchematronError> {
        let mut builder = StaticContextBuilder::default();
        for (p, u) in &self.namespaces {
            builder.add_namespace(p, u);
        }
        let queries = Queries::new(builder);
        let compile = |xpath: String| -> Result<SequenceQuery, SchematronError> {
            queries.sequence(&xpath).map_err(|e| SchematronError::Compile { name: self.name.clone(), xpath, detail: e.to_string() })
        };
        let tests = r.checks.iter().map(|c| format!("boolean({})", c.test)).collect::<Vec<_>>().join(", ");
        let mut messages = Vec::new();
        for c in &r.checks {
            let mut parts = Vec::new();
            for p in &c.message {
                parts.push(match p {
                    Part::Text(_) => None,
                    Part::Expr(e) => Some(compile(format!("{}string-join(({e}) ! string(.), ' ')", r.lets))?),
                });
            }
            messages.push(parts);
        }
        Ok(XeeRule {
            context: compile(context_query(&r.context))?,
            rooted: rooted_query(&r.context, &self.namespaces).map(compile).transpose()?,
            tests: compile(format!("{}({tests})", r.lets))?,
            single: r.checks.iter().map(|c| compile(format!("{}boolean({})", r.lets, c.test))).collect::<Result<_, _>>()?,
            messages,
        })
    }
}

/// A rule's lets and tests in the native subset.
struct FastRule {
    /// Every let in order, parsed when it is in the subset.
    lets: Vec<(String, Option<crate::fastpath::Expr>)>,
    /// The lets the tests read (directly or through other lets): only these are evaluated.
    needed: Vec<bool>,
    tests: Vec<crate::fastpath::Expr>,
}

/// The native form of a rule's checks: `None` when a test, or a let a test reads, is outside
/// the subset. Lets only messages read are evaluated when a message needs them.
fn fast_rule(r: &Rule, ns: &HashMap<String, String>) -> Option<FastRule> {
    use crate::fastpath::{parse, variables};
    let lets: Vec<(String, Option<crate::fastpath::Expr>)> = r.bindings.iter().map(|(n, e)| (n.clone(), parse(e, ns))).collect();
    let tests = r.checks.iter().map(|c| parse(&c.test, ns)).collect::<Option<Vec<_>>>()?;
    let mut needed = vec![false; lets.len()];
    // (a variable, the lets before which its binding is looked for)
    let mut work: Vec<(String, usize)> = Vec::new();
    for t in &tests {
        let mut vars = Vec::new();
        variables(t, &mut vars);
        work.extend(vars.into_iter().map(|v| (v, lets.len())));
    }
    while let Some((name, before)) = work.pop() {
        // a variable no let binds does not compile in xee either: leave the rule to it
        let i = (0..before).rev().find(|&i| lets[i].0 == name)?;
        if !needed[i] {
            needed[i] = true;
            let mut vars = Vec::new();
            variables(lets[i].1.as_ref()?, &mut vars);
            work.extend(vars.into_iter().map(|v| (v, i)));
        }
    }
    Some(FastRule { lets, needed, tests })
}

/// The rule's test results at `node` by the native evaluator, or `None` when it cannot decide.
fn fast_results<'a>(f: &'a FastRule, node: crate::fastpath::Node<'a>) -> Option<Vec<Option<bool>>> {
    use crate::fastpath::{ebv, eval, Env};
    let mut env = Env::new();
    for ((name, e), needed) in f.lets.iter().zip(&f.needed) {
        if *needed {
            let v = eval(e.as_ref()?, node, &env).ok()?;
            env.insert(name.as_str(), v);
        }
    }
    f.tests.iter().map(|t| eval(t, node, &env).and_then(|v| ebv(&v)).ok().map(Some)).collect()
}

/// Every let of a rule the native evaluator can compute at `node` (for messages).
fn full_env<'a>(f: &'a FastRule, node: crate::fastpath::Node<'a>) -> crate::fastpath::Env<'a> {
    let mut env = crate::fastpath::Env::new();
    for (name, e) in &f.lets {
        match e.as_ref().map(|e| crate::fastpath::eval(e, node, &env)) {
            Some(Ok(v)) => {
                env.insert(name.as_str(), v);
            }
            // a later reference to it is undecided, not bound to an earlier let of that name
            _ => {
                env.remove(name.as_str());
            }
        }
    }
    env
}

/// The document in xee's own tree, built only when a rule needs xee, with the correspondence
/// between the two trees' nodes (the document node and the elements, in document order).
struct XeeDoc<'d> {
    documents: Documents,
    root: xot::Node,
    ro: Vec<crate::fastpath::Node<'d>>,
    xot: Vec<xot::Node>,
    ro_index: HashMap<roxmltree::NodeId, usize>,
    xot_index: HashMap<xot::Node, usize>,
}

impl<'d> XeeDoc<'d> {
    fn new(doc: &'d roxmltree::Document<'d>) -> Result<Self, SchematronError> {
        let mut documents = Documents::new();
        let handle = documents.add_string_without_uri(doc.input_text()).map_err(|e| SchematronError::Eval(e.to_string()))?;
        let root = documents.document_node(handle).ok_or_else(|| SchematronError::Eval("no document node".into()))?;
        let ro: Vec<_> = doc.root().descendants().filter(|n| n.is_root() || n.is_element()).collect();
        let xot: Vec<_> = documents.xot().descendants(root).filter(|n| *n == root || documents.xot().element(*n).is_some()).collect();
        if ro.len() != xot.len() {
            return Err(SchematronError::Eval("the two parses of the document disagree".into()));
        }
        let ro_index = ro.iter().enumerate().map(|(i, n)| (n.id(), i)).collect();
        let xot_index = xot.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        Ok(Self { documents, root, ro, xot, ro_index, xot_index })
    }

    fn xot_node(&self, ctx: Ctx<'d>) -> Result<xot::Node, SchematronError> {
        match ctx {
            Ctx::Xot(n) => Ok(n),
            Ctx::Ro(n) => {
                self.ro_index.get(&n.id()).map(|i| self.xot[*i]).ok_or_else(|| SchematronError::Eval("a node without a counterpart".into()))
            }
        }
    }

    fn context_of(&self, n: xot::Node) -> Ctx<'d> {
        match self.xot_index.get(&n) {
            Some(i) => Ctx::Ro(self.ro[*i]),
            None => Ctx::Xot(n),
        }
    }
}

/// A rule's context node: in the validator's tree, or (an attribute, a text node a context
/// selects) only in xee's.
#[derive(Clone, Copy)]
enum Ctx<'d> {
    Ro(crate::fastpath::Node<'d>),
    Xot(xot::Node),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Ro(roxmltree::NodeId),
    Xot(xot::Node),
}

fn xee_doc<'x, 'd>(slot: &'x mut Option<XeeDoc<'d>>, doc: &'d roxmltree::Document<'d>) -> Result<&'x mut XeeDoc<'d>, SchematronError> {
    if slot.is_none() {
        *slot = Some(XeeDoc::new(doc)?);
    }
    slot.as_mut().ok_or_else(|| SchematronError::Eval("no document".into()))
}

enum CPart {
    Text(String),
    /// A `<name/>` or `<value-of>`: the expression in the native subset when it is.
    Expr(Option<crate::fastpath::Expr>),
}

struct CRule {
    /// The rule's lets and tests in the native subset, when all of them fit it.
    fast: Option<FastRule>,
    /// For a context that starts at `ClinicalDocument`: the same selection from the document
    /// element only, in the native subset (valid when the document holds a single
    /// ClinicalDocument).
    fast_context: Option<crate::fastpath::Path>,
    /// A context `[//]S1/S2/...` in the native subset whose first step is a child step, selected
    /// from the document node with [`crate::fastpath::descendants`].
    fast_descendant: Option<crate::fastpath::Path>,
    messages: Vec<Vec<CPart>>,
    /// The rule for xee, compiled on first use.
    xee: std::cell::OnceCell<Result<XeeRule, SchematronError>>,
}

/// A rule's XPath programs for xee.
struct XeeRule {
    context: SequenceQuery,
    /// For a context that starts at `ClinicalDocument`: the same selection from the document
    /// element only, valid (and much faster) when the document holds a single ClinicalDocument.
    rooted: Option<SequenceQuery>,
    tests: SequenceQuery,
    /// One query per check, used only when the combined one raises a dynamic error, to tell which.
    single: Vec<SequenceQuery>,
    /// Per check, per message part: the query of an expression part.
    messages: Vec<Vec<Option<SequenceQuery>>>,
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

    /// The xee form of rule `r` of pattern `p`, compiled now if it was not.
    fn xee_rule(&self, p: usize, r: usize) -> Result<&XeeRule, SchematronError> {
        let cell = &self.patterns[p][r].xee;
        let compiled = cell.get_or_init(|| self.schema.compile_xee(&self.schema.patterns[p][r]));
        compiled.as_ref().map_err(|e| SchematronError::Eval(e.to_string()))
    }

    /// Compiles every rule's XPath programs for xee now: a check that the whole schematron is
    /// within what xee compiles.
    pub fn compile_all(&self) -> Result<(), SchematronError> {
        for (p, rules) in self.patterns.iter().enumerate() {
            for r in 0..rules.len() {
                self.xee_rule(p, r)?;
            }
        }
        Ok(())
    }

    /// Runs the schematron over a well-formed XML document (parsed by [`crate::validate::tree`],
    /// so already checked for DTDs). Rules in the native subset run over this tree; the first
    /// rule that needs xee has the document parsed into xee's tree, once.
    pub fn validate<'d>(&'d self, doc: &'d roxmltree::Document<'d>) -> Result<Vec<Firing>, SchematronError> {
        self.run(doc).map(|(firings, _)| firings)
    }

    /// [`Compiled::validate`] within bounds: at most `max_firings` findings (a document with
    /// more stops there), and an error once `deadline` has passed.
    pub fn validate_within<'d>(
        &'d self,
        doc: &'d roxmltree::Document<'d>,
        deadline: std::time::Instant,
        max_firings: usize,
    ) -> Result<Vec<Firing>, SchematronError> {
        self.run_within(doc, Bounds { deadline: Some(deadline), max_firings }).map(|(firings, _)| firings)
    }

    /// [`Compiled::validate`], telling also whether any rule needed xee.
    fn run<'d>(&'d self, doc: &'d roxmltree::Document<'d>) -> Result<(Vec<Firing>, bool), SchematronError> {
        self.run_within(doc, Bounds { deadline: None, max_firings: usize::MAX })
    }

    fn run_within<'d>(&'d self, doc: &'d roxmltree::Document<'d>, bounds: Bounds) -> Result<(Vec<Firing>, bool), SchematronError> {
        use crate::fastpath::{Env, Item};
        let eval = |e: xee_xpath::error::Error| SchematronError::Eval(e.to_string());
        let mut xee: Option<XeeDoc<'d>> = None;
        let mut firings = Vec::new();
        let single_root = single_clinical_document(doc);
        let mut visited = 0u64;
        for (p, rules) in self.patterns.iter().enumerate() {
            let mut handled: HashSet<Key> = HashSet::new();
            for (r, rule) in rules.iter().enumerate() {
                let rooted = match (&rule.fast_context, single_root) {
                    (Some(path), true) => crate::fastpath::path(path, doc.root(), &Env::new()).ok().and_then(|items| {
                        items
                            .into_iter()
                            .map(|i| match i {
                                Item::Node(n) if n.is_element() => Some(n),
                                _ => None,
                            })
                            .collect::<Option<Vec<_>>>()
                    }),
                    _ => None,
                };
                let native = rooted.or_else(|| crate::fastpath::descendants(rule.fast_descendant.as_ref()?, doc).ok());
                let contexts: Vec<Ctx<'d>> = match native {
                    Some(nodes) => nodes.into_iter().map(Ctx::Ro).collect(),
                    None => {
                        let xr = self.xee_rule(p, r)?;
                        let x = xee_doc(&mut xee, doc)?;
                        let nodes = match (&xr.rooted, single_root) {
                            (Some(q), true) => q.execute(&mut x.documents, x.root).map_err(eval)?,
                            _ => xr.context.execute(&mut x.documents, x.root).map_err(eval)?,
                        };
                        let nodes: Vec<xot::Node> =
                            nodes.nodes().collect::<Result<_, _>>().map_err(|e| SchematronError::Eval(e.to_string()))?;
                        nodes.into_iter().map(|n| x.context_of(n)).collect()
                    }
                };
                for ctx in contexts {
                    visited += 1;
                    if visited.is_multiple_of(64) && bounds.deadline.is_some_and(|d| std::time::Instant::now() > d) {
                        return Err(SchematronError::Deadline);
                    }
                    if firings.len() >= bounds.max_firings {
                        return Ok((firings, xee.is_some()));
                    }
                    let key = match ctx {
                        Ctx::Ro(n) => Key::Ro(n.id()),
                        Ctx::Xot(n) => Key::Xot(n),
                    };
                    if !handled.insert(key) {
                        continue;
                    }
                    let checks = &self.schema.patterns[p][r].checks;
                    let fast = match (ctx, &rule.fast) {
                        (Ctx::Ro(n), Some(f)) => fast_results(f, n),
                        _ => None,
                    };
                    let results: Vec<Option<bool>> = match fast {
                        Some(r) => r,
                        None => {
                            let xr = self.xee_rule(p, r)?;
                            let x = xee_doc(&mut xee, doc)?;
                            let node = x.xot_node(ctx)?;
                            match xr.tests.execute(&mut x.documents, node) {
                                Ok(seq) => seq.iter().map(|i| i.effective_boolean_value().ok()).collect(),
                                Err(_) => xr
                                    .single
                                    .iter()
                                    .map(|q| q.execute(&mut x.documents, node).ok().and_then(|s| s.effective_boolean_value().ok()))
                                    .collect(),
                            }
                        }
                    };
                    let mut env: Option<Env<'d>> = None;
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
                        for (k, part) in rule.messages[i].iter().enumerate() {
                            match part {
                                CPart::Text(t) => message.push_str(t),
                                CPart::Expr(native) => {
                                    let native_text = match (ctx, native, &rule.fast) {
                                        (Ctx::Ro(n), Some(e), Some(f)) => {
                                            let env = env.get_or_insert_with(|| full_env(f, n));
                                            crate::fastpath::eval(e, n, env).and_then(|v| crate::fastpath::message_text(&v)).ok()
                                        }
                                        (Ctx::Ro(n), Some(e), None) => {
                                            crate::fastpath::eval(e, n, &Env::new()).and_then(|v| crate::fastpath::message_text(&v)).ok()
                                        }
                                        _ => None,
                                    };
                                    match native_text {
                                        Some(t) => message.push_str(&t),
                                        None => {
                                            let q = self.xee_rule(p, r)?.messages[i][k]
                                                .as_ref()
                                                .ok_or_else(|| SchematronError::Eval("a message part without its query".into()))?;
                                            let x = xee_doc(&mut xee, doc)?;
                                            let node = x.xot_node(ctx)?;
                                            if let Ok(s) = q.execute(&mut x.documents, node) {
                                                message.push_str(&s.string_value(x.documents.xot()).unwrap_or_default());
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        if results.get(i).copied().flatten().is_none() {
                            message.push_str(" [the test raised an XPath error]");
                        }
                        let location = match ctx {
                            Ctx::Ro(n) => crate::validate::location(n),
                            Ctx::Xot(n) => location(xee_doc(&mut xee, doc)?.documents.xot(), n),
                        };
                        firings.push(Firing { kind: check.kind, id: check.id.clone(), message: normalize(&message), location });
                    }
                }
            }
        }
        Ok((firings, xee.is_some()))
    }
}

#[cfg(test)]
impl Compiled {
    /// The same schematron run by xee alone (for comparing the native evaluator with it).
    fn without_native(mut self) -> Self {
        for r in self.patterns.iter_mut().flatten() {
            r.fast = None;
            r.fast_context = None;
            r.fast_descendant = None;
            for part in r.messages.iter_mut().flatten() {
                if let CPart::Expr(native) = part {
                    *native = None;
                }
            }
        }
        self
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
fn single_clinical_document(doc: &roxmltree::Document) -> bool {
    doc.root_element().tag_name().name() == "ClinicalDocument"
        && doc.descendants().filter(|n| n.is_element() && n.tag_name().name() == "ClinicalDocument").nth(1).is_none()
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
    }

    /// The native evaluator changes nothing: on every official example and on mutated copies
    /// of them, the firings (kind, id, message, location, order) are those of xee alone.
    #[test]
    fn native_rules_fire_exactly_as_xee_does() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        let mutations: &[(&str, &str)] = &[
            ("", ""),
            (r#"<realmCode code="IT""#, r#"<realmCode code="FR""#),
            ("<confidentialityCode code=\"", "<confidentialityCode code=\"X"),
            ("root=\"2.16.840.1.113883.2.9.10.1", "root=\"9.9.9"),
            ("codeSystem=\"2.16.840.1.113883.6.1\"", "codeSystem=\"2.16.840.1.113883.6.2\""),
            ("<high value=\"", "<high value=\"1"),
            ("<low value=\"", "<low value=\"3"),
            ("root=\"2.16.840.1.113883.2.9.4.3.2\"", "root=\"2.16.840.1.113883.2.9.4.3.9\""),
            ("xsi:type=\"CD\"", "xsi:type=\"CE\""),
            ("<addr use=\"", "<addr use=\"H"),
        ];
        let mut compiled: HashMap<&str, (Compiled, Compiled)> = HashMap::new();
        let mut firings_seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("xml") {
                continue;
            }
            let original = std::fs::read_to_string(&path).unwrap();
            let template = {
                let doc = crate::validate::tree(&original).unwrap();
                let t = crate::validate::child(doc.root_element(), "templateId").unwrap();
                crate::catalog::by_template(t.attribute("root").unwrap()).unwrap()
            };
            let (native, xee_only) = compiled.entry(template.template).or_insert_with(|| {
                let s = Schematron::parse(template.schematron.0, template.schematron.1).unwrap();
                (s.compile().unwrap(), s.compile().unwrap().without_native())
            });
            for (from, to) in mutations {
                let text = if from.is_empty() { original.clone() } else { original.replace(from, to) };
                let doc = crate::validate::tree(&text).unwrap();
                let (ours, needed_xee) = native.run(&doc).unwrap();
                let (theirs, _) = xee_only.run(&doc).unwrap();
                assert_eq!(ours, theirs, "{} with {from:?} -> {to:?}", path.display());
                // the official examples as published are validated without xee's tree at all
                assert!(!from.is_empty() || !needed_xee, "{} needed xee", path.display());
                firings_seen += ours.len();
            }
        }
        assert!(firings_seen > 200, "the mutations make rules fire ({firings_seen})");
    }

    /// A schematron text binding `h` to `urn:x` around `patterns`.
    fn schema(patterns: &str) -> String {
        format!(
            r#"<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2"><ns prefix="h" uri="urn:x"/>{patterns}</schema>"#
        )
    }

    /// A schematron whose rules are partly outside the native subset: xee's tree is built, the
    /// nodes one rule handled in one tree are skipped by the later rules in the other, and
    /// messages come out the same whichever engine built them.
    #[test]
    fn rules_in_both_engines_share_one_first_match() {
        let sch = schema(
            r#"<pattern>
            <rule context="h:b[normalize-space(@k) = '1']">
              <report test="true()">X-1| <name/> by xee, <value-of select="count(h:c)"/> c</report>
            </rule>
            <rule context="h:b">
              <let name="n" value="count(h:c)"/>
              <assert test="$n = 2">N-2| <name/> has <value-of select="$n"/> c, <value-of select="upper-case(@k)"/></assert>
            </rule>
          </pattern>
          <pattern>
            <rule context="h:c">
              <report test="string-length(normalize-space(@v)) = 1">X-3| v</report>
            </rule>
          </pattern>"#,
        );
        let s = Schematron::parse("t", &sch).unwrap();
        let (c, xee_only) = (s.compile().unwrap(), s.compile().unwrap().without_native());
        let doc =
            crate::validate::tree(r#"<a xmlns="urn:x"><b k=" 1 "><c/></b><b k="z"><c v=" q "/></b><b k="1"><c/><c/></b></a>"#).unwrap();
        let (f, needed_xee) = c.run(&doc).unwrap();
        assert!(needed_xee);
        let got: Vec<(&str, &str, &str)> = f.iter().map(|f| (f.id.as_str(), f.location.as_str(), f.message.as_str())).collect();
        assert_eq!(
            got,
            [
                // b[1] has one c, but rule 1 (xee's tree) took it: rule 2 (native) skips it
                ("X-1", "/a[1]/b[1]", "X-1| b by xee, 1 c"),
                ("X-1", "/a[1]/b[3]", "X-1| b by xee, 2 c"),
                ("N-2", "/a[1]/b[2]", "N-2| b has 1 c, Z"),
                ("X-3", "/a[1]/b[2]/c[1]", "X-3| v"),
            ]
        );
        assert_eq!(f, xee_only.run(&doc).unwrap().0);
        // the same rules with native contexts, on a document where nothing needs xee (the
        // xee-only test and message are never reached): xee's tree is not built
        let native_sch = sch.replace("normalize-space(@k) = '1'", "@k = '1'").replace(r#"context="h:c""#, r#"context="h:zzz""#);
        let plain = Schematron::parse("p", &native_sch).unwrap().compile().unwrap();
        let doc = crate::validate::tree(r#"<a xmlns="urn:x"><b k="1"><c/></b><b><c/><c/></b></a>"#).unwrap();
        let (f, needed_xee) = plain.run(&doc).unwrap();
        assert_eq!(f.iter().map(|f| f.message.as_str()).collect::<Vec<_>>(), ["X-1| b by xee, 1 c"]);
        assert!(!needed_xee);
    }

    #[test]
    fn first_matching_rule_wins_and_messages_are_built() {
        let sch = schema(
            r#"<pattern>
            <rule context="h:b[@k='1']">
              <let name="n" value="count(h:c)"/>
              <assert test="$n = 2">E-1| <name/> needs two c, has <value-of select="$n"/></assert>
            </rule>
            <rule context="h:b">
              <report test="true()">W-2| other b</report>
            </rule>
          </pattern>"#,
        );
        let s = Schematron::parse("t", &sch).unwrap();
        let c = s.compile().unwrap();
        let doc = crate::validate::tree(r#"<a xmlns="urn:x"><b k="1"><c/></b><b/><b k="1"><c/><c/></b></a>"#).unwrap();
        let f = c.validate(&doc).unwrap();
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!((f[0].id.as_str(), f[0].kind), ("E-1", Kind::Assert));
        assert_eq!(f[0].message, "E-1| b needs two c, has 1");
        assert_eq!(f[0].location, "/a[1]/b[1]");
        assert_eq!((f[1].id.as_str(), f[1].location.as_str()), ("W-2", "/a[1]/b[2]"));
    }
}
