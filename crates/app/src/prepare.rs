//! Turning a received resource into a store write: validation, id and meta, the patient key
//! (compartment) and the search-index rows.

use crate::error::{AppError, AppResult};
use fascicolo_domain::PatientKey;
use fascicolo_fhir::model::model;
use fascicolo_fhir::params::{index_resource, registry, IndexValue};
use fascicolo_fhir::{datetime, fhirpath, validate, OutcomeIssue};
use fascicolo_store::{Expect, Method, Stored, Write};
use serde_json::{Map, Value};

/// A new server id: UUID v7, so ids sort by creation time and index pages stay local.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Validate a resource for a write to `resource_type`; every problem is returned.
pub fn check(resource: &Value, resource_type: &str, location_prefix: Option<&str>) -> Vec<OutcomeIssue> {
    let mut issues: Vec<OutcomeIssue> = Vec::new();
    match resource.get("resourceType").and_then(Value::as_str) {
        Some(rt) if rt == resource_type => {}
        Some(rt) if model().is_concrete_resource(rt) => {
            issues.push(OutcomeIssue::error("invalid", format!("resourceType '{rt}' does not match the endpoint's type '{resource_type}'")))
        }
        _ => {}
    }
    issues.extend(validate::validate_resource(resource).into_iter().map(OutcomeIssue::from));
    if let Some(prefix) = location_prefix {
        for i in &mut issues {
            i.expression = Some(match &i.expression {
                Some(e) => match e.split_once('.') {
                    Some((head, rest)) if model().is_resource(head) => format!("{prefix}.{rest}"),
                    _ if model().is_resource(e) => prefix.to_string(),
                    _ => format!("{prefix}.{e}"),
                },
                None => prefix.to_string(),
            });
        }
    }
    issues
}

/// The patient whose compartment the resource belongs to (the first patient reference of the
/// Patient CompartmentDefinition's parameters), or SHARED.
pub fn patient_key_of(resource: &Value, resource_type: &str, id: &str) -> PatientKey {
    if resource_type == "Patient" {
        return PatientKey::for_patient_id(id);
    }
    for code in model().patient_compartment_params(resource_type) {
        let Some(p) = registry().get(resource_type, code) else { continue };
        let Some(expr) = &p.expr else { continue };
        for item in fhirpath::evaluate(expr, resource) {
            let Some(r) = item.json().and_then(|v| v.get("reference")).and_then(Value::as_str) else { continue };
            if let IndexValue::Reference { target_type: Some(t), target_id: Some(pid), .. } = fascicolo_fhir::params::parse_reference(r) {
                if t == "Patient" {
                    return PatientKey::for_patient_id(&pid);
                }
            }
        }
    }
    PatientKey::SHARED
}

/// Rebuild the resource with `resourceType`, `id` and `meta` (versionId, lastUpdated) first,
/// every other element kept as received.
pub fn stamp(resource: Value, id: &str, version: i64, last_updated: i64) -> Value {
    let mut out = Map::new();
    let mut src = match resource {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(rt) = src.shift_remove("resourceType") {
        out.insert("resourceType".into(), rt);
    }
    out.insert("id".into(), Value::String(id.to_string()));
    let mut meta = match src.shift_remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert("lastUpdated".into(), Value::String(datetime::format_instant(last_updated)));
    out.insert("meta".into(), Value::Object(meta));
    for (k, v) in src {
        if !matches!(k.as_str(), "resourceType" | "id" | "meta") {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

/// Build the store write for a new version of a resource.
pub fn write_for(
    resource: Value,
    resource_type: &str,
    id: &str,
    current: Option<&Stored>,
    method: Method,
    now: i64,
) -> AppResult<(Write, Value)> {
    let version = current.map_or(1, |c| c.version + 1);
    // keep lastUpdated strictly increasing per resource
    let now = current.map_or(now, |c| now.max(c.last_updated + 1));
    let stamped = stamp(resource, id, version, now);
    let key = patient_key_of(&stamped, resource_type, id);
    let json = serde_json::to_string(&stamped).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let w = Write {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        patient_key: key,
        previous_key: current.map(|c| c.patient_key).filter(|k| *k != key),
        version,
        last_updated: now,
        method,
        json,
        index: index_resource(&stamped),
        expect: current.map_or(Expect::Absent, |c| Expect::Version(c.version)),
        restrict: 0,
    };
    Ok((w, stamped))
}

/// The write that deletes the current version.
pub fn delete_for(current: &Stored, now: i64) -> Write {
    Write {
        resource_type: current.resource_type.clone(),
        id: current.id.clone(),
        patient_key: current.patient_key,
        previous_key: None,
        version: current.version + 1,
        last_updated: now.max(current.last_updated + 1),
        method: Method::Delete,
        json: current.json.clone(),
        index: Vec::new(),
        expect: Expect::Version(current.version),
        restrict: 0,
    }
}

/// Call `f` with every `reference` string anywhere in a resource (contained resources and
/// extensions included). The one walker behind reference checks, includes and transactions.
pub fn for_each_reference<'a>(v: &'a Value, f: &mut impl FnMut(&'a str)) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("reference") {
                f(r);
            }
            m.values().for_each(|x| for_each_reference(x, f));
        }
        Value::Array(a) => a.iter().for_each(|x| for_each_reference(x, f)),
        _ => {}
    }
}

/// `Type/id` of a literal reference to a resource on this server, if it is one.
pub fn local_target(r: &str) -> Option<(String, String)> {
    match fascicolo_fhir::params::parse_reference(r) {
        IndexValue::Reference { target_type: Some(t), target_id: Some(id), url: None } => Some((t, id)),
        _ => None,
    }
}

/// Literal references to patients on this server (`Patient/id`), and unresolved `urn:uuid:`
/// references, found anywhere in a resource. Only patient references are checked for
/// existence: the patient is the compartment anchor, so a dangling one would file data under a
/// partition nobody owns. Other references may point at resources that arrive later.
pub fn literal_refs(v: &Value, out: &mut std::collections::BTreeSet<(String, String)>, urns: &mut Vec<String>) {
    for_each_reference(v, &mut |r| {
        if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") {
            urns.push(r.to_string());
        } else if let Some((t, id)) = local_target(r).filter(|(t, _)| t == "Patient") {
            out.insert((t, id));
        }
    });
}

/// Referential integrity: every patient reference must point at an existing, non-deleted
/// Patient (or one created in the same transaction, listed in `created`).
pub async fn check_references(
    store: &dyn fascicolo_store::Store,
    resources: &[(String, &Value)],
    created: &std::collections::HashSet<(String, String)>,
) -> AppResult<Vec<OutcomeIssue>> {
    let mut wanted = std::collections::BTreeSet::new();
    let mut issues = Vec::new();
    let mut per: Vec<(String, std::collections::BTreeSet<(String, String)>)> = Vec::new();
    for (loc, r) in resources {
        // a stored Bundle (document, collection) resolves its references inside itself
        if r.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            continue;
        }
        let (mut refs, mut urns) = (std::collections::BTreeSet::new(), Vec::new());
        literal_refs(r, &mut refs, &mut urns);
        for u in urns {
            issues.push(OutcomeIssue {
                expression: Some(loc.clone()),
                ..OutcomeIssue::error("not-found", format!("the reference '{u}' does not match any fullUrl in the transaction"))
            });
        }
        refs.retain(|x| !created.contains(x));
        wanted.extend(refs.iter().cloned());
        per.push((loc.clone(), refs));
    }
    if wanted.is_empty() {
        return Ok(issues);
    }
    let list: Vec<(String, String)> = wanted.into_iter().collect();
    let found: std::collections::HashSet<(String, String)> =
        store.read_many(&list).await?.into_iter().map(|s| (s.resource_type, s.id)).collect();
    for (loc, refs) in per {
        for (t, id) in refs {
            if !found.contains(&(t.clone(), id.clone())) {
                issues.push(OutcomeIssue {
                    expression: Some(loc.clone()),
                    ..OutcomeIssue::error("not-found", format!("the reference '{t}/{id}' points to a resource that does not exist"))
                });
            }
        }
    }
    Ok(issues)
}
