//! The access log through the FHIR API: `AuditEvent` read, vread and search answered from the
//! store's lean append-only log (ARCHITECTURE.md invariant 4), with the same gate as any other
//! resource. Searchable: `patient` (the record), `date`, `agent`, `subtype`, `action`, `entity`,
//! `type`, `outcome`, `_id`; sorted by `date` (newest first unless `_sort=date`).

use crate::access::{audit_resource, audit_stored, log_record, stored_entry, LOG_BREAK_GLASS, LOG_EMERGENCY, LOG_ON_BEHALF};
use crate::error::{AppError, AppResult};
use crate::fhir::{encode_query, FhirService, Page};
use crate::gate::Actor;
use fascicolo_fhir::search::{parse_search, Clause, Modifier, Prefix, Summary, Term, Total};
use fascicolo_store::{AccessEntry, AccessQuery, SearchPlan, Stored};
use serde_json::{json, Value};

/// Parameters the access log answers (besides the result parameters).
const SEARCHABLE: &str = "patient, date, agent, subtype, action, entity, type, outcome, _id";

/// Most entries read from the store to fill one page when filters apply after the read.
const MAX_SCANNED: usize = 20_000;

/// A filter the store does not apply: checked on each entry's AuditEvent.
enum After {
    /// `(path of codings or codes, values)`: any value matches any coding.
    Token(&'static str, Vec<Term>),
    Reference(&'static str, Vec<Term>),
    Id(Vec<String>),
}

impl After {
    fn matches(&self, ev: &Value) -> bool {
        match self {
            After::Id(ids) => ev["id"].as_str().is_some_and(|i| ids.iter().any(|x| x == i)),
            After::Token(path, terms) => {
                let codings = codings_at(ev, path);
                terms.iter().any(|t| {
                    let Term::Token { system, code } = t else { return false };
                    codings.iter().any(|(s, c)| {
                        let system_ok = match system {
                            None => true,
                            Some(None) => s.is_none(),
                            Some(Some(want)) => s.as_deref() == Some(want.as_str()),
                        };
                        system_ok && code.as_ref().is_none_or(|want| c.as_deref() == Some(want.as_str()))
                    })
                })
            }
            After::Reference(path, terms) => {
                let refs = references_at(ev, path);
                terms.iter().any(|t| {
                    let Term::Reference { target_type, id, url } = t else { return false };
                    refs.iter().any(|r| reference_matches(r, target_type.as_deref(), id.as_deref(), url.as_deref()))
                })
            }
        }
    }
}

/// `(system, code)` pairs of a token parameter of an AuditEvent.
fn codings_at(ev: &Value, path: &str) -> Vec<(Option<String>, Option<String>)> {
    let s = |v: &Value| v.as_str().map(String::from);
    match path {
        "subtype" => ev["subtype"].as_array().into_iter().flatten().map(|c| (s(&c["system"]), s(&c["code"]))).collect(),
        "type" => vec![(s(&ev["type"]["system"]), s(&ev["type"]["code"]))],
        "action" => vec![(Some("http://hl7.org/fhir/audit-event-action".into()), s(&ev["action"]))],
        "outcome" => vec![(Some("http://hl7.org/fhir/audit-event-outcome".into()), s(&ev["outcome"]))],
        _ => Vec::new(),
    }
}

/// References of a reference parameter of an AuditEvent.
fn references_at(ev: &Value, path: &str) -> Vec<String> {
    match path {
        "entity" => {
            ev["entity"].as_array().into_iter().flatten().filter_map(|e| e["what"]["reference"].as_str()).map(String::from).collect()
        }
        "agent" => ev["agent"].as_array().into_iter().flatten().filter_map(|a| a["who"]["reference"].as_str()).map(String::from).collect(),
        _ => Vec::new(),
    }
}

fn reference_matches(r: &str, target_type: Option<&str>, id: Option<&str>, url: Option<&str>) -> bool {
    if let Some(u) = url {
        if r == u {
            return true;
        }
    }
    let Some(id) = id else { return false };
    let mut parts = r.rsplitn(2, '/');
    let (rid, rtype) = (parts.next().unwrap_or(""), parts.next().map(|t| t.rsplit('/').next().unwrap_or(t)));
    rid == id && target_type.is_none_or(|t| rtype == Some(t))
}

/// The agent column's value for a reference term (`Practitioner/x`), when it names one exactly.
fn agent_value(t: &Term) -> Option<String> {
    match t {
        Term::Reference { target_type: Some(tt), id: Some(id), .. } => Some(format!("{tt}/{id}")),
        _ => None,
    }
}

/// The log flag a `subtype` term of the platform's access codes stands for.
fn flag_of(t: &Term) -> Option<i64> {
    let Term::Token { system, code: Some(code) } = t else { return None };
    if !matches!(system, None | Some(Some(_))) {
        return None;
    }
    if let Some(Some(s)) = system {
        if s != crate::access::ACCESS_SYSTEM {
            return None;
        }
    }
    match code.as_str() {
        "break-glass" => Some(LOG_BREAK_GLASS),
        "emergency" => Some(LOG_EMERGENCY),
        "on-behalf" => Some(LOG_ON_BEHALF),
        _ => None,
    }
}

/// Narrow the store's range by one `date` term (the instant `recorded` against the term's range).
fn narrow(q: &mut AccessQuery, t: &Term) -> AppResult<()> {
    let Term::Date { prefix, range } = t else { return Err(AppError::BadRequest("date takes a date".into())) };
    let (lo, hi) = (range.low, range.high);
    let (from, to) = match prefix {
        Prefix::Eq => (Some(lo), Some(hi)),
        Prefix::Ge => (Some(lo), None),
        Prefix::Gt | Prefix::Sa => (Some(hi.saturating_add(1)), None),
        Prefix::Le => (None, Some(hi)),
        Prefix::Lt | Prefix::Eb => (None, Some(lo.saturating_sub(1))),
        Prefix::Ne | Prefix::Ap => {
            return Err(AppError::BadRequest("the access log's date takes eq, ge, gt, le, lt, sa or eb".into()));
        }
    };
    if let Some(f) = from {
        q.from = Some(q.from.map_or(f, |x| x.max(f)));
    }
    if let Some(t) = to {
        q.to = Some(q.to.map_or(t, |x| x.min(t)));
    }
    Ok(())
}

impl FhirService {
    /// One access-log entry as a stored resource (none when the id names nothing).
    pub(crate) async fn audit_entry(&self, id: &str) -> AppResult<Option<Stored>> {
        match self.store().access_entry(log_record(id), id).await? {
            Some(e) => Ok(Some(audit_stored(&e)?)),
            None => Ok(None),
        }
    }

    /// `GET /AuditEvent?...`: the log of the record the gate allows (every record for the
    /// platform), filtered and paged.
    pub(crate) async fn search_access_log(&self, actor: &Actor, pairs: &[(String, String)], base: &str) -> AppResult<Page> {
        crate::fhir::check_search_cost(pairs)?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let req = parse_search(Some("AuditEvent"), pairs)?;
        if !req.include.is_empty() || !req.revinclude.is_empty() {
            return Err(AppError::BadRequest("the access log does not take _include or _revinclude".into()));
        }
        let mut q = AccessQuery { limit: req.count, ..Default::default() };
        match req.sort.as_slice() {
            [] => {}
            [k] if k.param == "date" || k.param == "_lastUpdated" => q.oldest_first = !k.descending,
            _ => return Err(AppError::BadRequest("the access log is sorted by date only (_sort=date or _sort=-date)".into())),
        }
        let mut after: Vec<After> = Vec::new();
        for c in &req.clauses {
            match c {
                Clause::Id(ids) => after.push(After::Id(ids.clone())),
                Clause::LastUpdated(terms) => {
                    for t in terms {
                        narrow(&mut q, t)?;
                    }
                }
                Clause::Param { param, modifier: Modifier::None, values } => match param.code.as_str() {
                    // the record: the gate decides below
                    "patient" => {}
                    "date" => {
                        if values.len() != 1 {
                            return Err(AppError::BadRequest("the access log's date takes one value per parameter".into()));
                        }
                        narrow(&mut q, &values[0])?;
                    }
                    "agent" => match values.iter().map(agent_value).collect::<Option<Vec<String>>>() {
                        Some(exact) if q.agents.is_empty() => q.agents = exact,
                        _ => after.push(After::Reference("agent", values.clone())),
                    },
                    "subtype" => match values.as_slice() {
                        [one] if flag_of(one).is_some() => q.flags |= flag_of(one).unwrap_or(0),
                        _ => after.push(After::Token("subtype", values.clone())),
                    },
                    "action" => after.push(After::Token("action", values.clone())),
                    "type" => after.push(After::Token("type", values.clone())),
                    "outcome" => after.push(After::Token("outcome", values.clone())),
                    "entity" => after.push(After::Reference("entity", values.clone())),
                    other => {
                        return Err(AppError::BadRequest(format!("the access log cannot be searched by '{other}': it takes {SEARCHABLE}")))
                    }
                },
                Clause::Param { param, .. } | Clause::Missing { param, .. } => {
                    return Err(AppError::BadRequest(format!("the access log takes '{}' without a modifier", param.code)))
                }
                Clause::Chain { .. } | Clause::Has { .. } => {
                    return Err(AppError::BadRequest("the access log takes no chained or _has search".into()))
                }
            }
        }
        // who may read which record's log: the same rules as any search of a record
        let mut plan = SearchPlan {
            resource_type: Some("AuditEvent".into()),
            // the log is kept per record: `patient=` names the record (for the platform too,
            // whose search the gate does not confine to one)
            patient: crate::fhir::named_patient("AuditEvent", &req),
            limit: req.count,
            ..Default::default()
        };
        self.scope_search(&mut gate, Some("AuditEvent"), &req, pairs, &mut plan).await?;
        q.patient = plan.patient;

        let path = format!("{base}/AuditEvent");
        let self_link = format!("{path}?{}", encode_query(pairs));
        if req.summary == Some(Summary::Count) {
            let total = if after.is_empty() { self.store().access_count(&q).await? } else { self.count_filtered(&q, &after).await? };
            gate.commit_audit().await?;
            return Ok(Page { total: Some(total), links: vec![json!({"relation": "self", "url": self_link})], entries: Vec::new() });
        }
        if let Some(c) = &req.cursor {
            let keys = crate::fhir::decode_cursor(c)?;
            match keys.as_slice() {
                [Value::Number(at), Value::String(id)] if at.is_i64() => q.after = Some((at.as_i64().unwrap_or(0), id.clone())),
                _ => return Err(AppError::BadRequest("the paging cursor is not valid".into())),
            }
        }
        let limit = req.count;
        let (matched, more, last) = self.read_filtered(&q, &after, limit).await?;
        let total = match req.total {
            Total::Accurate | Total::Estimate if after.is_empty() => {
                Some(self.store().access_count(&AccessQuery { after: None, ..q.clone() }).await?)
            }
            Total::Accurate | Total::Estimate => Some(self.count_filtered(&AccessQuery { after: None, ..q.clone() }, &after).await?),
            Total::None if !more && req.cursor.is_none() => Some(matched.len() as u64),
            Total::None => None,
        };
        let mut links = vec![json!({"relation": "self", "url": self_link})];
        if let (true, Some((at, id))) = (more, last) {
            let mut next: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "_cursor").cloned().collect();
            next.push(("_cursor".into(), crate::fhir::encode_cursor(&json!([at, id]))));
            links.push(json!({"relation": "next", "url": format!("{path}?{}", encode_query(&next))}));
        }
        let mut entries = Vec::with_capacity(matched.len());
        for (e, ev) in matched {
            let s = stored_entry(&e, &ev);
            // the same rule again per entry guards the platform's cross-record searches and
            // logs every record whose log it read
            if gate.admit(&s).await? {
                gate.record_seen(&s, "search-type").await?;
                let mut r = ev;
                crate::fhir::apply_elements(&mut r, &req.elements, req.summary);
                entries.push((format!("{base}/AuditEvent/{}", e.id), r.to_string(), "match"));
            }
        }
        gate.commit_audit().await?;
        Ok(Page { total, links, entries })
    }

    /// Up to `limit` entries passing the filters, whether more follow, and the cursor of the
    /// last entry read (the next page starts after it, matched or not).
    async fn read_filtered(
        &self,
        q: &AccessQuery,
        after: &[After],
        limit: usize,
    ) -> AppResult<(Vec<(AccessEntry, Value)>, bool, Option<(i64, String)>)> {
        let mut out = Vec::new();
        let mut q = q.clone();
        let mut scanned = 0usize;
        if limit == 0 {
            return Ok((out, false, None));
        }
        loop {
            let batch = if after.is_empty() { limit + 1 } else { (limit * 4).clamp(100, 1_000) };
            q.limit = batch;
            let rows = self.store().access_log(&q).await?;
            let exhausted = rows.len() < batch;
            for e in rows {
                scanned += 1;
                let cursor = (e.recorded, e.id.clone());
                let ev = audit_resource(&e)?;
                if after.iter().all(|f| f.matches(&ev)) {
                    if out.len() == limit {
                        // one more than the page: there is a next page, after the last kept
                        let last = out.last().map(|(x, _): &(AccessEntry, Value)| (x.recorded, x.id.clone()));
                        return Ok((out, true, last));
                    }
                    out.push((e, ev));
                }
                q.after = Some(cursor);
                if scanned >= MAX_SCANNED && !after.is_empty() {
                    // a sparse filter over a long log: this page ends here, the next goes on
                    return Ok((out, true, q.after.clone()));
                }
            }
            if exhausted {
                return Ok((out, false, None));
            }
        }
    }

    /// How many entries pass filters the store cannot apply (read in batches).
    async fn count_filtered(&self, q: &AccessQuery, after: &[After]) -> AppResult<u64> {
        let mut q = AccessQuery { limit: 1_000, ..q.clone() };
        let mut n = 0u64;
        loop {
            let rows = self.store().access_log(&q).await?;
            let done = rows.len() < q.limit;
            for e in &rows {
                let ev = audit_resource(e)?;
                if after.iter().all(|f| f.matches(&ev)) {
                    n += 1;
                }
            }
            match rows.last() {
                Some(e) if !done => q.after = Some((e.recorded, e.id.clone())),
                _ => return Ok(n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_match_by_type_and_id_or_url() {
        assert!(reference_matches("Practitioner/x", Some("Practitioner"), Some("x"), None));
        assert!(reference_matches("Practitioner/x", None, Some("x"), None));
        assert!(!reference_matches("Practitioner/x", Some("Patient"), Some("x"), None));
        assert!(!reference_matches("Practitioner/xy", Some("Practitioner"), Some("x"), None));
        assert!(reference_matches("http://e.org/fhir/Practitioner/x", Some("Practitioner"), Some("x"), None));
    }

    #[test]
    fn access_subtypes_become_flags() {
        let t = |s: Option<Option<&str>>, c: &str| Term::Token { system: s.map(|o| o.map(String::from)), code: Some(c.into()) };
        assert_eq!(flag_of(&t(Some(Some(crate::access::ACCESS_SYSTEM)), "break-glass")), Some(LOG_BREAK_GLASS));
        assert_eq!(flag_of(&t(None, "emergency")), Some(LOG_EMERGENCY));
        assert_eq!(flag_of(&t(Some(Some("http://other")), "emergency")), None);
        assert_eq!(flag_of(&t(Some(None), "emergency")), None);
        assert_eq!(flag_of(&t(None, "read")), None);
    }
}
