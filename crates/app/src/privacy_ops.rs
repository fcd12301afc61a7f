//! The citizen's privacy controls and the clinician's emergency access, as use cases behind
//! the same gate: consent to consultation, hiding (oscuramento) and its undo, releasing an
//! art. 6 item, granting and revoking delegations, break-glass.

use crate::access::{
    apply_visibility, audit_event, lookup, lookup_values, refresh_write, relation_through, AccessRecord, Relation, CF_SYSTEM,
    CONSENT_CATEGORY, CONSENT_CHANNEL_EXT, DELEGATION_SCOPE_EXT, NOTICE_PREFIX, RELATIONSHIP_SYSTEM,
};
use crate::error::{AppError, AppResult};
use crate::fhir::{parse_stored, Versioned};
use crate::gate::{Actor, Who};
use crate::prepare::{new_id, write_for};
use crate::FhirService;
use fascicolo_domain::privacy::{labels, HidingCode};
use fascicolo_domain::{CodiceFiscale, PatientKey};
use fascicolo_fhir::model::model;
use fascicolo_fhir::search::parse_search;
use fascicolo_fhir::{datetime, is_valid_id};
use fascicolo_store::{Method, SearchPlan, Stored, Write};
use serde_json::{json, Value};
use std::sync::Arc;

/// The kinds of resource a published document is mapped to (tagged with `labels::DOCUMENT`).
const DERIVED_TYPES: [&str; 16] = [
    "Composition",
    "DiagnosticReport",
    "Observation",
    "Immunization",
    "Encounter",
    "MedicationRequest",
    "ServiceRequest",
    "Media",
    "DocumentReference",
    "Condition",
    "Procedure",
    "AllergyIntolerance",
    "CarePlan",
    "MedicationStatement",
    "ImagingStudy",
    "Specimen",
];

/// A value of a FHIR `Parameters` resource by name.
pub fn param<'a>(params: &'a Value, name: &str) -> Option<&'a Value> {
    params["parameter"].as_array()?.iter().find(|p| p["name"] == name)
}

pub fn param_str<'a>(params: &'a Value, name: &str) -> Option<&'a str> {
    let p = param(params, name)?;
    ["valueCode", "valueString", "valueId", "valueDateTime", "valueDate", "valueUri"].iter().find_map(|k| p[*k].as_str())
}

pub fn param_bool(params: &Value, name: &str) -> Option<bool> {
    param(params, name)?["valueBoolean"].as_bool()
}

pub fn param_strs<'a>(params: &'a Value, name: &str) -> Vec<&'a str> {
    params["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == name)
        .filter_map(|p| p["valueCode"].as_str().or_else(|| p["valueString"].as_str()))
        .collect()
}

/// What the emergency access opened, for the clinician: its end and the patient summary.
#[derive(Debug, Clone)]
pub struct BreakGlassOutcome {
    pub until: i64,
    /// Patient-summary documents (LOINC 60591-5) visible under the emergency access.
    pub summary: Vec<Value>,
}

/// Refuse a privacy operation the token's scopes do not cover (see `gate::OPERATION_SCOPES`).
pub(crate) fn require_operation(actor: &Actor, operation: &str, method: &str, target_type: &str) -> AppResult<()> {
    if actor.operation_permitted(operation, method, target_type) {
        return Ok(());
    }
    let needs = crate::gate::OPERATION_SCOPES
        .iter()
        .find(|(o, m, _, _)| *o == operation && m.eq_ignore_ascii_case(method))
        .map(|(_, _, op, rt)| format!(" (it needs a scope granting '{}' on {})", op.letter(), if *rt == "*" { target_type } else { rt }))
        .unwrap_or_default();
    Err(AppError::Forbidden(format!("the token's scopes do not allow {operation}{needs}")))
}

fn is_citizen_side(r: &Relation) -> bool {
    matches!(r, Relation::Own | Relation::Parent { minor: true, .. })
}

impl FhirService {
    /// Build, label and gate-check a new resource version written by a privacy use case.
    fn privacy_write(
        &self,
        actor: &Actor,
        rt: &str,
        id: &str,
        v: Value,
        current: Option<&Stored>,
        key: PatientKey,
    ) -> AppResult<(Write, Value)> {
        let method = if current.is_some() { Method::Update } else { Method::Create };
        let (mut w, mut stamped) = write_for(v, rt, id, current, method, datetime::now_ms())?;
        if w.patient_key != key {
            return Err(AppError::BadRequest(format!("{rt} must belong to the record it is written for")));
        }
        // keep labels the use case set explicitly; producer tag from the actor on creation
        let mut security: Vec<Value> = stamped["meta"]["security"].as_array().cloned().unwrap_or_default();
        let mut tags: Vec<Value> = stamped["meta"]["tag"].as_array().cloned().unwrap_or_default();
        if current.is_none() && !tags.iter().any(|t| t["system"] == labels::PRODUCER) {
            if let Some(code) = actor.producer_code() {
                tags.push(json!({"system": labels::PRODUCER, "code": code}));
            }
        }
        apply_visibility(&mut security, &tags);
        let meta = &mut stamped["meta"];
        meta["security"] = Value::Array(security);
        meta["tag"] = Value::Array(tags);
        for k in ["security", "tag"] {
            if meta[k].as_array().is_some_and(Vec::is_empty) {
                if let Some(m) = meta.as_object_mut() {
                    m.shift_remove(k);
                }
            }
        }
        refresh_write(&mut w, &stamped)?;
        Ok((w, stamped))
    }

    /// Record a consent-to-consultation decision (given or revoked) for the current notice.
    pub async fn record_consent(&self, actor: &Actor, patient_id: &str, given: bool, channel: &str) -> AppResult<Versioned> {
        require_operation(actor, "$consent", "POST", "Patient")?;
        let key = PatientKey::for_patient_id(patient_id);
        let mut gate = self.gate(actor);
        let a = gate.access(key).await?;
        if a.patient_id.as_deref() != Some(patient_id) {
            return Err(AppError::NotFound(format!("Patient/{patient_id} is not known")));
        }
        if !is_citizen_side(&a.relation) && !matches!(a.relation, Relation::Full) {
            return Err(a
                .refusal()
                .unwrap_or_else(|| AppError::Forbidden("only the citizen (or a parent for a minor) gives or revokes consent".into())));
        }
        if !matches!(channel, "portal" | "app" | "desk" | "api" | "pharmacy" | "gp") {
            return Err(AppError::BadRequest(format!("channel '{channel}' is not one of portal, app, desk, api, pharmacy, gp")));
        }
        let performer = match &a.relation {
            Relation::Parent { rp, .. } => format!("RelatedPerson/{rp}"),
            _ => format!("Patient/{patient_id}"),
        };
        let now = datetime::now_ms();
        let consent = json!({"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": CONSENT_CATEGORY, "code": "consultation", "display": "Consenso alla consultazione"}]}],
            "patient": {"reference": format!("Patient/{patient_id}")}, "dateTime": datetime::format_instant(now),
            "performer": [{"reference": performer}], "policy": [{"uri": format!("{NOTICE_PREFIX}{}", self.policy().notice_version)}],
            "provision": {"type": if given { "permit" } else { "deny" }},
            "extension": [{"url": CONSENT_CHANNEL_EXT, "valueCode": channel}]});
        let id = new_id();
        let (w, stamped) = self.privacy_write(actor, "Consent", &id, consent, None, key)?;
        gate.record(&a, "create", vec![format!("Consent/{id}")], None);
        let out = Versioned::from_write(&w, stamped);
        self.commit_gated(&gate, vec![w], Vec::new()).await?;
        Ok(out)
    }

    /// Whether consent to consultation is in force for a record the actor may act on.
    pub async fn consent_status(&self, actor: &Actor, patient_id: &str) -> AppResult<bool> {
        require_operation(actor, "$consent", "GET", "Patient")?;
        let key = PatientKey::for_patient_id(patient_id);
        let mut gate = self.gate(actor);
        let a = gate.access(key).await?;
        if !is_citizen_side(&a.relation) && !matches!(a.relation, Relation::Full | Relation::Delegate { active: true, .. }) {
            return Err(a.refusal().unwrap_or_else(|| AppError::Forbidden("consent is visible to the citizen only".into())));
        }
        let in_force = gate.consent_in_force(key).await?;
        // a parent, a delegate or the platform reading it is an access to the record
        gate.record(&a, "operation", Vec::new(), Some(format!("Patient/{patient_id}/$consent")));
        gate.commit_audit().await?;
        Ok(in_force)
    }

    /// Resources of a record that belong to a document (tagged with it), for hiding them together.
    async fn document_family(&self, s: &Stored) -> AppResult<Vec<Stored>> {
        let code = format!("{}|{}/{}", labels::DOCUMENT, s.resource_type, s.id);
        let mut out = Vec::new();
        for rt in DERIVED_TYPES {
            out.extend(lookup(self.store().as_ref(), Some(s.patient_key), rt, &[("_tag", &code)], 1000).await?);
        }
        Ok(out)
    }

    /// Oscuramento: apply P99/P97/P98/P00 to a resource and everything derived from it, with
    /// immediate effect. The citizen hides from clinicians (P99) and from parents (P97) and
    /// undoes their own hiding (P00); a parent may hide a minor's item from clinicians; P98
    /// (hidden from the patient) is the producer's, at publication.
    pub async fn hide(&self, actor: &Actor, rt: &str, id: &str, code: &str) -> AppResult<Versioned> {
        require_operation(actor, "$hide", "POST", rt)?;
        let hc =
            HidingCode::parse(code).ok_or_else(|| AppError::BadRequest(format!("'{code}' is not a hiding code (P99, P97, P98, P00)")))?;
        if !model().is_concrete_resource(rt) || !is_valid_id(id) {
            return Err(AppError::NotFound(format!("{rt}/{id} is not known")));
        }
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let what = format!("{rt}/{id}");
        let Some(cur) = self.store().read(rt, id).await?.filter(|s| !s.deleted) else {
            return Err(AppError::NotFound(format!("{what} is not known")));
        };
        if cur.patient_key.is_shared() {
            return Err(AppError::BadRequest(format!("{rt} is not part of a citizen's record")));
        }
        let a = Self::admit_read(&mut gate, &cur, &what).await?.ok_or_else(|| AppError::NotFound(format!("{what} is not known")))?;
        let allowed: &[HidingCode] = match &a.relation {
            Relation::Own => &[HidingCode::FromClinicians, HidingCode::FromParents, HidingCode::Undo],
            Relation::Parent { minor: true, .. } => &[HidingCode::FromClinicians, HidingCode::Undo],
            Relation::Full | Relation::Producer => {
                &[HidingCode::FromClinicians, HidingCode::FromParents, HidingCode::FromPatient, HidingCode::Undo]
            }
            _ => &[],
        };
        if !allowed.contains(&hc) {
            return Err(AppError::Forbidden(format!("your role may not apply {code} to this item")));
        }
        // hiding from parents means something only while the holder is a minor (parental access
        // ends at 18): the rule the portal's button follows, held here for every door
        if hc == HidingCode::FromParents && matches!(a.relation, Relation::Own) {
            let birth = match &a.patient_id {
                Some(pid) => self.store().read("Patient", pid).await?.filter(|p| !p.deleted).and_then(|p| parse_stored(&p).ok()),
                None => None,
            };
            let minor = birth
                .as_ref()
                .and_then(|p| p["birthDate"].as_str())
                .and_then(fascicolo_domain::rome::date_of)
                .is_some_and(|b| fascicolo_domain::privacy::is_minor(b, fascicolo_domain::rome::today()));
            if !minor {
                return Err(AppError::Forbidden(
                    "hiding from parents (P97) applies to a minor's own record only: parents' access ends at 18".into(),
                ));
            }
        }
        // the undo lifts only what this actor may lift
        let lifts: &[&str] = match &a.relation {
            Relation::Own => &["P99", "P97"],
            Relation::Parent { .. } => &["P99"],
            _ => &["P99", "P97", "P98"],
        };
        let mut targets = vec![cur.clone()];
        for s in self.document_family(&cur).await? {
            if s.id != cur.id || s.resource_type != cur.resource_type {
                targets.push(s);
            }
        }
        let mut writes = Vec::new();
        let mut main: Option<Versioned> = None;
        for t in &targets {
            let mut v = parse_stored(t)?;
            let mut security: Vec<Value> = v["meta"]["security"].as_array().cloned().unwrap_or_default();
            match hc {
                HidingCode::Undo => {
                    security.retain(|c| !(c["system"] == labels::HIDING && c["code"].as_str().is_some_and(|k| lifts.contains(&k))))
                }
                other => {
                    if !security.iter().any(|c| c["system"] == labels::HIDING && c["code"] == other.code()) {
                        security.push(json!({"system": labels::HIDING, "code": other.code()}));
                    }
                }
            }
            v["meta"]["security"] = Value::Array(security);
            let (w, stamped) = self.privacy_write(actor, &t.resource_type, &t.id, v, Some(t), t.patient_key)?;
            if t.resource_type == cur.resource_type && t.id == cur.id {
                main = Some(Versioned::from_write(&w, stamped));
            }
            writes.push(w);
        }
        gate.record(&a, "update", targets.iter().map(|t| format!("{}/{}", t.resource_type, t.id)).collect(), None);
        self.commit_gated(&gate, writes, Vec::new()).await?;
        main.ok_or_else(|| AppError::NotFound(format!("{what} is not known")))
    }

    /// The citizen makes an art. 6 item visible (or closes it again).
    pub async fn release_art6(&self, actor: &Actor, rt: &str, id: &str, released: bool) -> AppResult<Versioned> {
        require_operation(actor, "$art6-release", "POST", rt)?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let what = format!("{rt}/{id}");
        let Some(cur) = self.store().read(rt, id).await?.filter(|s| !s.deleted) else {
            return Err(AppError::NotFound(format!("{what} is not known")));
        };
        let a = Self::admit_read(&mut gate, &cur, &what)
            .await?
            .ok_or_else(|| AppError::BadRequest(format!("{rt} is not part of a citizen's record")))?;
        if !matches!(a.relation, Relation::Own) {
            return Err(AppError::Forbidden("only the citizen may release an art. 6 item".into()));
        }
        let mut v = parse_stored(&cur)?;
        if !v["meta"]["security"].as_array().into_iter().flatten().any(|c| c["system"] == labels::ART6) {
            return Err(AppError::BadRequest(format!("{what} is not an art. 6 item")));
        }
        let mut tags: Vec<Value> = v["meta"]["tag"].as_array().cloned().unwrap_or_default();
        tags.retain(|t| t["system"] != labels::ART6_CONSENT);
        if released {
            tags.push(json!({"system": labels::ART6_CONSENT, "code": "released"}));
        }
        v["meta"]["tag"] = Value::Array(tags);
        let (w, stamped) = self.privacy_write(actor, rt, id, v, Some(&cur), cur.patient_key)?;
        let out = Versioned::from_write(&w, stamped);
        self.commit_gated(&gate, vec![w], Vec::new()).await?;
        Ok(out)
    }

    /// Grant a delegation to another adult, scoped to resource types and limited in time.
    pub async fn grant_delegation(&self, actor: &Actor, patient_id: &str, params: &Value) -> AppResult<Versioned> {
        require_operation(actor, "$delegate", "POST", "Patient")?;
        let key = PatientKey::for_patient_id(patient_id);
        let mut gate = self.gate(actor);
        let a = gate.access(key).await?;
        if !matches!(a.relation, Relation::Own) || a.patient_id.as_deref() != Some(patient_id) {
            return Err(AppError::Forbidden("only the citizen grants delegations on their own record".into()));
        }
        let mut problems = Vec::new();
        let cf = param_str(params, "cf").map(CodiceFiscale::parse);
        let cf = match cf {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                problems.push(format!("cf: not a valid codice fiscale ({e})"));
                None
            }
            None => {
                problems.push("cf: the delegate's codice fiscale is required".to_string());
                None
            }
        };
        if let (Some(c), Who::Citizen { cf: me, .. }) = (&cf, &actor.who) {
            if c == me {
                problems.push("cf: you cannot delegate yourself".into());
            }
        }
        let today = fascicolo_domain::rome::today();
        if cf.as_ref().and_then(|c| c.birth_date(today)).is_some_and(|b| fascicolo_domain::privacy::is_minor(b, today)) {
            problems.push("cf: a delegate must be an adult".into());
        }
        let family = param_str(params, "family").unwrap_or_default().trim().to_string();
        let given = param_str(params, "given").unwrap_or_default().trim().to_string();
        if family.is_empty() || given.is_empty() {
            problems.push("given, family: the delegate's name is required".into());
        }
        let scope: Vec<String> = param_strs(params, "scope").into_iter().map(String::from).collect();
        for s in &scope {
            if !model().is_concrete_resource(s) {
                problems.push(format!("scope: '{s}' is not a kind of record (a FHIR resource type such as DocumentReference)"));
            }
        }
        let now = datetime::now_ms();
        let until = match param_str(params, "until").map(datetime::parse) {
            Some(Some((r, _))) if r.high > now => Some(r.high),
            Some(_) => {
                problems.push("until: must be a date in the future".into());
                None
            }
            None => {
                problems.push("until: the end of the delegation is required".into());
                None
            }
        };
        if !problems.is_empty() {
            return Err(AppError::Invalid(problems.into_iter().map(|m| fascicolo_fhir::OutcomeIssue::error("invalid", m)).collect()));
        }
        let (Some(cf), Some(until)) = (cf, until) else { return Err(AppError::BadRequest("incomplete delegation".into())) };
        // at most N active delegations
        let active = lookup_values(self.store().as_ref(), Some(key), "RelatedPerson", &[], 1000)
            .await?
            .iter()
            .filter(|rp| matches!(relation_through(rp, None, now), Some(Relation::Delegate { active: true, .. })))
            .count();
        if active >= self.policy().max_delegations {
            return Err(AppError::Conflict(format!("you already have {active} active delegations, the most allowed; revoke one first")));
        }
        let mut rp = json!({"resourceType": "RelatedPerson", "active": true, "patient": {"reference": format!("Patient/{patient_id}")},
            "relationship": [{"coding": [{"system": RELATIONSHIP_SYSTEM, "code": "delegate", "display": "Delegato"}]}],
            "identifier": [{"system": CF_SYSTEM, "value": cf.as_str()}], "name": [{"family": family, "given": [given]}],
            "period": {"start": datetime::format_instant(now), "end": datetime::format_instant(until)}});
        if !scope.is_empty() {
            rp["extension"] = Value::Array(scope.iter().map(|s| json!({"url": DELEGATION_SCOPE_EXT, "valueCode": s})).collect());
        }
        let id = new_id();
        let (w, stamped) = self.privacy_write(actor, "RelatedPerson", &id, rp, None, key)?;
        let out = Versioned::from_write(&w, stamped);
        self.commit_gated(&gate, vec![w], Vec::new()).await?;
        Ok(out)
    }

    /// Revoke a delegation, with immediate effect.
    pub async fn revoke_delegation(&self, actor: &Actor, rp_id: &str) -> AppResult<Versioned> {
        require_operation(actor, "$revoke", "POST", "RelatedPerson")?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let what = format!("RelatedPerson/{rp_id}");
        let Some(cur) = self.store().read("RelatedPerson", rp_id).await?.filter(|s| !s.deleted) else {
            return Err(AppError::NotFound(format!("{what} is not known")));
        };
        let a = Self::admit_read(&mut gate, &cur, &what).await?.ok_or_else(|| AppError::NotFound(format!("{what} is not known")))?;
        if !matches!(a.relation, Relation::Own | Relation::Full) {
            return Err(AppError::Forbidden("only the citizen revokes their delegations".into()));
        }
        let mut v = parse_stored(&cur)?;
        let now = datetime::now_ms();
        v["active"] = Value::Bool(false);
        v["period"]["end"] = Value::String(datetime::format_instant(now));
        let (w, stamped) = self.privacy_write(actor, "RelatedPerson", rp_id, v, Some(&cur), cur.patient_key)?;
        let out = Versioned::from_write(&w, stamped);
        gate.record(&a, "update", vec![what.clone()], None);
        self.commit_gated(&gate, vec![w], Vec::new()).await?;
        Ok(out)
    }

    /// Emergency access (art. 20): a clinician states why; for the configured time they see the
    /// record as with consent, hidden and art. 6 items excluded; the opening is logged and the
    /// citizen notified. Returns the patient summary to start from.
    pub async fn break_glass(&self, actor: &Actor, patient_id: &str, reason: &str) -> AppResult<BreakGlassOutcome> {
        require_operation(actor, "$break-glass", "POST", "Patient")?;
        let Who::Professional { role, .. } = &actor.who else {
            return Err(AppError::Forbidden("emergency access is for clinicians".into()));
        };
        if !role.clinical() {
            return Err(AppError::Forbidden("emergency access is for clinicians".into()));
        }
        let reason = reason.trim();
        if reason.chars().count() > crate::limits::MAX_FREE_TEXT_CHARS {
            return Err(AppError::BadRequest(format!("the reason may be at most {} characters long", crate::limits::MAX_FREE_TEXT_CHARS)));
        }
        if reason.chars().count() < 10 {
            return Err(AppError::BadRequest("state the reason for the emergency access (at least 10 characters)".into()));
        }
        let key = PatientKey::for_patient_id(patient_id);
        let mut gate = self.gate(actor);
        let a = gate.access(key).await?;
        if a.patient_id.as_deref() != Some(patient_id) {
            return Err(AppError::NotFound(format!("Patient/{patient_id} is not known")));
        }
        let Relation::Clinician { consent, care, .. } = a.relation else {
            return Err(AppError::Forbidden("emergency access is for clinicians".into()));
        };
        let now = datetime::now_ms();
        let until = now + self.policy().break_glass_minutes.max(1) * 60_000;
        let opened = Arc::new(crate::access::Access { relation: Relation::Clinician { consent, care, emergency: true }, ..(*a).clone() });
        // the patient summary, under the emergency rules
        let req = parse_search(Some("DocumentReference"), &[("type".into(), "http://loinc.org|60591-5".into())])?;
        let plan = SearchPlan {
            resource_type: Some("DocumentReference".into()),
            patient: Some(key),
            clauses: req.clauses,
            limit: 20,
            visibility: opened.visibility(actor),
            ..Default::default()
        };
        let mut summary = Vec::new();
        let mut seen = Vec::new();
        for h in self.store().search(&plan).await? {
            let mut v = parse_stored(&h.stored)?;
            crate::access::redact(&mut v, &opened.relation);
            seen.push(format!("DocumentReference/{}", h.stored.id));
            summary.push(v);
        }
        // one log entry: the opening, its reason and period, and what it showed
        let rec = AccessRecord { access: Arc::clone(&opened), interaction: "operation", entities: seen, query: None };
        let (e, _) = audit_event(actor, &rec, now, Some((now, until, reason)))?;
        let note = crate::access::access_notification(&e, true, now);
        self.store().commit_all(Vec::new(), vec![e], vec![note]).await?;
        Ok(BreakGlassOutcome { until, summary })
    }
}
