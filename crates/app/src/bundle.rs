//! `batch` and `transaction` Bundles. A transaction resolves `urn:uuid` full URLs and
//! conditional references, validates every entry, and commits all writes in one store
//! transaction: all or nothing. A batch runs each entry on its own.

use crate::error::{AppError, AppResult};
use crate::fhir::{rewrite_refs, FhirService, Versioned};
use crate::gate::Actor;
use crate::prepare::{check, delete_for, new_id, write_for};
use fascicolo_fhir::model::model;
use fascicolo_fhir::{datetime, is_valid_id, operation_outcome, OutcomeIssue};
use fascicolo_store::{Method, Stored, Write};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verb {
    Delete,
    Post,
    Put,
    Patch,
    Get,
}

struct Entry {
    index: usize,
    verb: Verb,
    url: String,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<i64>,
}

fn parse_etag(s: &str) -> Option<i64> {
    s.trim().trim_start_matches("W/").trim_matches('"').parse().ok()
}

fn parse_entries(bundle: Value) -> AppResult<Vec<Entry>> {
    let mut issues = Vec::new();
    let mut out = Vec::new();
    let entries = match bundle {
        Value::Object(mut m) => match m.shift_remove("entry") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    for (i, mut e) in entries.into_iter().enumerate() {
        let loc = format!("Bundle.entry[{i}]");
        let resource = e.as_object_mut().and_then(|o| o.shift_remove("resource"));
        let req = &e["request"];
        let verb = match req["method"].as_str() {
            Some("GET") => Verb::Get,
            Some("POST") => Verb::Post,
            Some("PUT") => Verb::Put,
            Some("PATCH") => Verb::Patch,
            Some("DELETE") => Verb::Delete,
            Some("HEAD") => Verb::Get,
            _ => {
                issues.push(OutcomeIssue {
                    expression: Some(format!("{loc}.request.method")),
                    ..OutcomeIssue::error("required", "each entry needs request.method (GET, POST, PUT, PATCH, DELETE)")
                });
                continue;
            }
        };
        let Some(url) = req["url"].as_str() else {
            issues.push(OutcomeIssue {
                expression: Some(format!("{loc}.request.url")),
                ..OutcomeIssue::error("required", "each entry needs request.url")
            });
            continue;
        };
        if matches!(verb, Verb::Post | Verb::Put) && resource.is_none() {
            issues.push(OutcomeIssue {
                expression: Some(format!("{loc}.resource")),
                ..OutcomeIssue::error("required", "POST and PUT entries need a resource")
            });
            continue;
        }
        out.push(Entry {
            index: i,
            verb,
            url: url.trim_start_matches('/').to_string(),
            full_url: e["fullUrl"].as_str().map(String::from),
            resource,
            if_none_exist: req["ifNoneExist"].as_str().map(String::from),
            if_match: req["ifMatch"].as_str().and_then(parse_etag),
        });
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(AppError::Invalid(issues))
    }
}

/// `Type`, `Type/id`, `Type?query`
fn split_url(url: &str) -> (String, Option<String>, Option<String>) {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (url, None),
    };
    let mut segs = path.split('/');
    let t = segs.next().unwrap_or_default().to_string();
    let id = segs.next().map(String::from);
    (t, id, query)
}

fn status(created: bool) -> &'static str {
    if created {
        "201 Created"
    } else {
        "200 OK"
    }
}

fn response_entry(base: &str, v: &Versioned, created: bool, with_resource: bool) -> Value {
    let mut e = json!({
        "fullUrl": format!("{base}/{}/{}", v.resource_type, v.id),
        "response": {"status": status(created), "location": format!("{}/{}/_history/{}", v.resource_type, v.id, v.version),
            "etag": format!("W/\"{}\"", v.version), "lastModified": datetime::format_instant(v.last_updated)}
    });
    if with_resource {
        e["resource"] = v.resource.clone();
    }
    e
}

impl FhirService {
    /// Process a `batch` or `transaction` Bundle posted to the base URL.
    pub async fn process_bundle(&self, actor: &Actor, body: &[u8], base: &str) -> AppResult<Value> {
        let bundle: Value = serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        self.process_bundle_value(actor, bundle, base).await
    }

    /// As [`process_bundle`](Self::process_bundle), for a Bundle already parsed.
    pub async fn process_bundle_value(&self, actor: &Actor, bundle: Value, base: &str) -> AppResult<Value> {
        self.bundle_value(actor, bundle, base, false, Vec::new()).await
    }

    /// A transaction Bundle committed with outbox messages it causes (a booking's reminder),
    /// all or nothing.
    pub(crate) async fn process_transaction_with(
        &self,
        actor: &Actor,
        bundle: Value,
        outbox: Vec<fascicolo_store::OutboxMessage>,
    ) -> AppResult<Value> {
        self.bundle_value(actor, bundle, "", false, outbox).await
    }

    /// A document publication's transaction (the ingestion use case only): the one write path
    /// that may bind resources to the stored original it has just put.
    pub(crate) async fn process_publication(&self, actor: &Actor, bundle: Value, base: &str) -> AppResult<Value> {
        self.bundle_value(actor, bundle, base, true, Vec::new()).await
    }

    async fn bundle_value(
        &self,
        actor: &Actor,
        bundle: Value,
        base: &str,
        publication: bool,
        outbox: Vec<fascicolo_store::OutboxMessage>,
    ) -> AppResult<Value> {
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(AppError::BadRequest("POST to the base URL takes a Bundle of type batch or transaction".into()));
        }
        match bundle.get("type").and_then(Value::as_str) {
            Some("transaction") => self.transaction(actor, bundle, base, publication, outbox).await,
            Some("batch") if publication => Err(AppError::BadRequest("a publication is one transaction".into())),
            Some("batch") => self.batch(actor, bundle, base).await,
            _ => Err(AppError::BadRequest("Bundle.type must be batch or transaction".into())),
        }
    }

    async fn batch(&self, actor: &Actor, bundle: Value, base: &str) -> AppResult<Value> {
        let entries = parse_entries(bundle)?;
        let mut out = Vec::new();
        for e in entries {
            let (t, id, query) = split_url(&e.url);
            let body = e.resource.as_ref().map(|r| serde_json::to_vec(r).unwrap_or_default()).unwrap_or_default();
            let result: AppResult<Value> = match (e.verb, id, query) {
                (Verb::Post, None, _) => self
                    .create(actor, &t, &body, e.if_none_exist.as_deref())
                    .await
                    .map(|o| response_entry(base, &o.version, o.created, true)),
                (Verb::Put, Some(id), None) => {
                    self.update(actor, &t, &id, &body, e.if_match).await.map(|o| response_entry(base, &o.version, o.created, true))
                }
                (Verb::Put, None, Some(q)) => {
                    self.conditional_update(actor, &t, &q, &body).await.map(|o| response_entry(base, &o.version, o.created, true))
                }
                (Verb::Delete, Some(id), None) => {
                    self.delete(actor, &t, &id).await.map(|_| json!({"response": {"status": "204 No Content"}}))
                }
                (Verb::Get, Some(id), None) => self.read(actor, &t, &id).await.map(|v| {
                    let mut x = response_entry(base, &v, false, true);
                    x["response"]["location"] = Value::Null;
                    x
                }),
                (Verb::Get, None, q) => {
                    let pairs: Vec<(String, String)> = form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect();
                    self.search(actor, Some(&t), &pairs, base)
                        .await
                        .map(|b| json!({"resource": b.into_value(), "response": {"status": "200 OK"}}))
                }
                _ => Err(AppError::NotSupported(format!("{:?} {} is not supported in a batch", e.verb, e.url))),
            };
            out.push(match result {
                Ok(v) => v,
                Err(err) => error_entry(&err),
            });
        }
        Ok(json!({"resourceType": "Bundle", "type": "batch-response", "entry": out}))
    }

    async fn transaction(
        &self,
        actor: &Actor,
        bundle: Value,
        base: &str,
        publication: bool,
        outbox: Vec<fascicolo_store::OutboxMessage>,
    ) -> AppResult<Value> {
        let mut gate = self.gate(actor);
        gate.publication = publication;
        gate.require_identity()?;
        let mut entries = parse_entries(bundle)?;
        let mut issues: Vec<OutcomeIssue> = Vec::new();
        // 1. Ids for creates; map fullUrls to their final references.
        let mut map: HashMap<String, String> = HashMap::new();
        let mut targets: HashMap<usize, (String, String, Option<Stored>)> = HashMap::new();
        let mut noop: HashMap<usize, Stored> = HashMap::new();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        // the current versions of every resource named by id, read at once
        let named: Vec<(String, String)> = entries
            .iter()
            .filter(|e| matches!(e.verb, Verb::Put | Verb::Patch | Verb::Delete))
            .filter_map(|e| match split_url(&e.url) {
                (t, Some(id), None) if is_valid_id(&id) && model().is_concrete_resource(&t) => Some((t, id)),
                _ => None,
            })
            .collect();
        let mut current: HashMap<(String, String), Stored> = HashMap::new();
        for chunk in named.chunks(200) {
            for s in self.store().read_current_many(chunk).await? {
                current.insert((s.resource_type.clone(), s.id.clone()), s);
            }
        }
        for e in &entries {
            let (t, id, query) = split_url(&e.url);
            let loc = format!("Bundle.entry[{}].request.url", e.index);
            if !model().is_concrete_resource(&t) {
                issues.push(OutcomeIssue {
                    expression: Some(loc),
                    ..OutcomeIssue::error("not-supported", format!("unknown resource type '{t}'"))
                });
                continue;
            }
            let target: Option<(String, Option<Stored>)> = match (e.verb, id, query) {
                (Verb::Post, None, _) => {
                    if let Some(q) = &e.if_none_exist {
                        match self.conditional_match(actor, &t, q).await {
                            Ok(Some(found)) => {
                                if let Some(fu) = &e.full_url {
                                    map.insert(fu.clone(), format!("{t}/{}", found.id));
                                }
                                noop.insert(e.index, found);
                                continue;
                            }
                            Ok(None) => {}
                            Err(err) => {
                                issues.push(OutcomeIssue {
                                    expression: Some(format!("Bundle.entry[{}].request.ifNoneExist", e.index)),
                                    ..OutcomeIssue::error("invalid", err.to_string())
                                });
                                continue;
                            }
                        }
                    }
                    Some((new_id(), None))
                }
                (Verb::Put | Verb::Patch | Verb::Delete, Some(id), None) if is_valid_id(&id) => {
                    let cur = current.remove(&(t.clone(), id.clone()));
                    Some((id, cur))
                }
                (Verb::Put | Verb::Delete, None, Some(q)) => match self.conditional_match(actor, &t, &q).await {
                    Ok(Some(found)) => Some((found.id.clone(), Some(found))),
                    Ok(None) if e.verb == Verb::Put => {
                        let id = e.resource.as_ref().and_then(|r| r["id"].as_str()).map_or_else(new_id, String::from);
                        Some((id, None))
                    }
                    Ok(None) => {
                        noop.insert(
                            e.index,
                            Stored {
                                resource_type: t.clone(),
                                id: String::new(),
                                version: 0,
                                last_updated: 0,
                                deleted: true,
                                patient_key: fascicolo_domain::PatientKey::SHARED,
                                json: String::new(),
                                method: Method::Delete,
                            },
                        );
                        continue;
                    }
                    Err(err) => {
                        issues.push(OutcomeIssue { expression: Some(loc), ..OutcomeIssue::error("invalid", err.to_string()) });
                        continue;
                    }
                },
                (Verb::Get, _, _) => None,
                _ => {
                    issues.push(OutcomeIssue {
                        expression: Some(loc),
                        ..OutcomeIssue::error("invalid", format!("'{}' is not a valid URL for {:?}", e.url, e.verb))
                    });
                    continue;
                }
            };
            if let Some((id, cur)) = target {
                if !seen.insert((t.clone(), id.clone())) {
                    issues.push(OutcomeIssue {
                        expression: Some(loc),
                        ..OutcomeIssue::error("duplicate", format!("{t}/{id} appears more than once in the transaction"))
                    });
                    continue;
                }
                if let Some(fu) = &e.full_url {
                    map.insert(fu.clone(), format!("{t}/{id}"));
                }
                targets.insert(e.index, (t.clone(), id, cur));
            }
        }
        // 2. Rewrite references (urn:uuid and conditional references) in every resource.
        let mut conditional: HashMap<String, String> = HashMap::new();
        for e in &entries {
            if let Some(r) = &e.resource {
                collect_conditional(r, &mut conditional);
            }
        }
        for (q, slot) in conditional.iter_mut() {
            let (t, _, query) = split_url(q);
            let found = match query {
                Some(qq) if model().is_concrete_resource(&t) => self.conditional_match(actor, &t, &qq).await.ok().flatten(),
                _ => None,
            };
            match found {
                Some(s) => *slot = format!("{t}/{}", s.id),
                None => issues
                    .push(OutcomeIssue::error("not-found", format!("the conditional reference '{q}' does not match exactly one resource"))),
            }
        }
        map.extend(conditional);
        for e in &mut entries {
            if let Some(r) = e.resource.as_mut() {
                rewrite_refs(r, &map);
            }
        }
        // 3. Validate and build writes (in FHIR's processing order).
        entries.sort_by_key(|e| (e.verb, e.index));
        let now = datetime::now_ms();
        let mut writes: Vec<Write> = Vec::new();
        let mut results: HashMap<usize, (Versioned, bool)> = HashMap::new();
        for e in &mut entries {
            let Some((t, id, cur)) = targets.get(&e.index) else { continue };
            let prefix = format!("Bundle.entry[{}].resource", e.index);
            if let (Some(expected), Some(c)) = (e.if_match, cur) {
                if c.version != expected {
                    issues.push(OutcomeIssue {
                        expression: Some(format!("Bundle.entry[{}].request.ifMatch", e.index)),
                        ..OutcomeIssue::error("conflict", format!("{t}/{id} is not at version {expected}"))
                    });
                    continue;
                }
            }
            match e.verb {
                Verb::Delete => {
                    if let Some(c) = cur.as_ref().filter(|c| !c.deleted) {
                        let mut w = delete_for(c, now);
                        let mut last = Value::Null;
                        self.gate_write(&mut gate, &mut w, &mut last, Some(c)).await?;
                        writes.push(w);
                    }
                }
                Verb::Post | Verb::Put => {
                    let Some(mut r) = e.resource.take() else { continue };
                    let found = check(&r, t, Some(&prefix));
                    if !found.is_empty() {
                        issues.extend(found);
                        continue;
                    }
                    if e.verb == Verb::Put {
                        if let Some(bid) = r["id"].as_str() {
                            if bid != id {
                                issues.push(OutcomeIssue {
                                    expression: Some(format!("{prefix}.id")),
                                    ..OutcomeIssue::error("invalid", "the resource id does not match request.url")
                                });
                                continue;
                            }
                        }
                    }
                    r["id"] = Value::String(id.clone());
                    let method = if e.verb == Verb::Post { Method::Create } else { Method::Update };
                    let (mut w, mut stamped) = write_for(r, t, id, cur.as_ref(), method, now)?;
                    self.gate_write(&mut gate, &mut w, &mut stamped, cur.as_ref()).await?;
                    // an update that changes nothing (a resumed import) makes no new version
                    if let Some(c) = cur.as_ref().filter(|c| e.verb == Verb::Put && !c.deleted) {
                        if same_content(&stamped, &crate::fhir::parse_stored(c)?) {
                            noop.insert(e.index, c.clone());
                            continue;
                        }
                    }
                    results.insert(e.index, (Versioned::from_write(&w, stamped), cur.as_ref().is_none_or(|c| c.deleted)));
                    writes.push(w);
                }
                Verb::Patch => {
                    let Some(c) = cur.as_ref().filter(|c| !c.deleted) else {
                        issues.push(OutcomeIssue {
                            expression: Some(format!("Bundle.entry[{}].request.url", e.index)),
                            ..OutcomeIssue::error("not-found", format!("{t}/{id} is not known"))
                        });
                        continue;
                    };
                    let patch: Result<json_patch::Patch, _> = match &e.resource {
                        Some(Value::Object(p)) if p.get("resourceType").and_then(Value::as_str) == Some("Binary") => {
                            let data = p.get("data").and_then(Value::as_str).unwrap_or_default();
                            Err(format!("Binary-wrapped patches are not supported ({} bytes)", data.len()))
                        }
                        Some(v) => serde_json::from_value(v.clone()).map_err(|x| x.to_string()),
                        None => Err("missing patch".into()),
                    };
                    let mut doc = crate::fhir::parse_stored(c)?;
                    match patch.and_then(|p| json_patch::patch(&mut doc, &p).map_err(|x| x.to_string())) {
                        Ok(()) => {
                            let found = check(&doc, t, Some(&prefix));
                            if !found.is_empty() {
                                issues.extend(found);
                                continue;
                            }
                            let (mut w, mut stamped) = write_for(doc, t, id, Some(c), Method::Patch, now)?;
                            self.gate_write(&mut gate, &mut w, &mut stamped, Some(c)).await?;
                            results.insert(e.index, (Versioned::from_write(&w, stamped), false));
                            writes.push(w);
                        }
                        Err(msg) => issues.push(OutcomeIssue { expression: Some(prefix), ..OutcomeIssue::error("invalid", msg) }),
                    }
                }
                Verb::Get => {}
            }
        }
        // 4. Referential integrity: targets exist or are created here; no dangling urn:uuid.
        let created: HashSet<(String, String)> =
            writes.iter().filter(|w| w.method != Method::Delete).map(|w| (w.resource_type.clone(), w.id.clone())).collect();
        let mut to_check: Vec<(String, &Value)> = Vec::new();
        for e in &entries {
            if let (Some((v, _)), true) = (results.get(&e.index), matches!(e.verb, Verb::Post | Verb::Put | Verb::Patch)) {
                to_check.push((format!("Bundle.entry[{}].resource", e.index), &v.resource));
            }
        }
        issues.extend(crate::prepare::check_references(self.store().as_ref(), &to_check, &created).await?);
        if !issues.is_empty() {
            return Err(AppError::Invalid(issues));
        }
        // 5. One atomic commit.
        self.commit_gated(&gate, writes, outbox).await?;
        // 5. Reads after writes, response in request order.
        entries.sort_by_key(|e| e.index);
        let mut out = Vec::new();
        for e in &entries {
            if let Some((v, created)) = results.get(&e.index) {
                out.push(response_entry(base, v, *created, true));
            } else if let Some(s) = noop.get(&e.index) {
                if s.id.is_empty() {
                    out.push(json!({"response": {"status": "204 No Content"}}));
                } else {
                    let v = Versioned::from_stored(s)?;
                    out.push(response_entry(base, &v, false, true));
                }
            } else if e.verb == Verb::Delete {
                out.push(json!({"response": {"status": "204 No Content"}}));
            } else if e.verb == Verb::Get {
                let (t, id, q) = split_url(&e.url);
                let r = match id {
                    Some(id) => self.read(actor, &t, &id).await.map(|v| v.resource),
                    None => {
                        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect();
                        self.search(actor, Some(&t), &pairs, base).await.map(crate::fhir::Page::into_value)
                    }
                };
                out.push(match r {
                    Ok(v) => json!({"resource": v, "response": {"status": "200 OK"}}),
                    Err(err) => error_entry(&err),
                });
            }
        }
        Ok(json!({"resourceType": "Bundle", "type": "transaction-response", "entry": out}))
    }
}

/// A batch/transaction response entry for a failed entry: its status and OperationOutcome.
fn error_entry(err: &AppError) -> Value {
    let (code, issues) = crate::error_status(err);
    json!({"response": {"status": code.to_string(), "outcome": operation_outcome(&issues)}})
}

/// Conditional references (`Patient?identifier=...`), to resolve before the writes.
fn collect_conditional(v: &Value, out: &mut HashMap<String, String>) {
    crate::prepare::for_each_reference(v, &mut |r| {
        let path = r.split('?').next().unwrap_or(r);
        if r.contains('?') && !path.starts_with("urn:") && !path.contains("://") {
            out.entry(r.to_string()).or_default();
        }
    });
}

/// Two versions of a resource say the same, whatever their version id and time.
fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("meta").and_then(Value::as_object_mut) {
            m.remove("versionId");
            m.remove("lastUpdated");
            if m.is_empty() {
                if let Some(o) = v.as_object_mut() {
                    o.remove("meta");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}
