//! The FHIR use cases: CRUD with versions and conditions, search with includes and keyset
//! paging, history, `$everything`, batch and transaction. Every call takes an [`Actor`] and goes
//! through the privacy gate ([`crate::access`]), which also writes the access log.

use crate::access::{label_resource, redact, refresh_write, restrict_bits, Access, Gate, Policy, Relation};
use crate::error::{AppError, AppResult};
use crate::gate::{Actor, Op, Who};
use crate::prepare::{self, check, delete_for, new_id, write_for};
use fascicolo_domain::privacy::labels;
use fascicolo_domain::PatientKey;
use fascicolo_fhir::model::model;
use fascicolo_fhir::params::{registry, IndexValue, ParamType};
use fascicolo_fhir::search::{parse_search, Clause, Include, Modifier, SearchRequest, Summary, Term, Total};
use fascicolo_fhir::{datetime, fhirpath, is_valid_id, OutcomeIssue};
use fascicolo_store::{HistoryQuery, Method, SearchPlan, Store, Stored, Visibility, Write};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A version returned to the web layer, with what the HTTP response needs.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub resource: Value,
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated: i64,
}

/// The JSON of a stored version. It was serialised by us: failing to parse it is a storage fault
/// (500), never the client's error.
pub(crate) fn parse_stored(s: &Stored) -> AppResult<Value> {
    serde_json::from_str(&s.json).map_err(|e| AppError::Store(fascicolo_store::StoreError::Backend(format!("stored JSON: {e}"))))
}

impl Versioned {
    pub(crate) fn from_stored(s: &Stored) -> AppResult<Self> {
        let resource = parse_stored(s)?;
        Ok(Self { resource, resource_type: s.resource_type.clone(), id: s.id.clone(), version: s.version, last_updated: s.last_updated })
    }
    pub(crate) fn from_write(w: &Write, resource: Value) -> Self {
        Self { resource, resource_type: w.resource_type.clone(), id: w.id.clone(), version: w.version, last_updated: w.last_updated }
    }
}

/// The outcome of a write: the version and whether it was created.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub created: bool,
    pub version: Versioned,
}

/// A searchset page. Entries keep the stored JSON text, so a page is written out without
/// parsing and re-serialising every resource.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub total: Option<u64>,
    pub links: Vec<Value>,
    /// (fullUrl, resource JSON text, search mode)
    pub entries: Vec<(String, String, &'static str)>,
}

impl Page {
    /// The Bundle as JSON text.
    pub fn into_string(self) -> String {
        let mut out = String::with_capacity(256 + self.entries.iter().map(|e| e.1.len() + 96).sum::<usize>());
        out.push_str(r#"{"resourceType":"Bundle","type":"searchset""#);
        if let Some(t) = self.total {
            out.push_str(&format!(r#","total":{t}"#));
        }
        out.push_str(r#","link":"#);
        out.push_str(&Value::Array(self.links).to_string());
        // FHIR JSON has no empty arrays: an empty page has no `entry`
        if !self.entries.is_empty() {
            out.push_str(r#","entry":["#);
            for (i, (full, json, mode)) in self.entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"fullUrl":"#);
                out.push_str(&Value::String(full.clone()).to_string());
                out.push_str(r#","resource":"#);
                out.push_str(json);
                out.push_str(r#","search":{"mode":""#);
                out.push_str(mode);
                out.push_str(r#""}}"#);
            }
            out.push(']');
        }
        out.push('}');
        out
    }

    /// The Bundle as a JSON value (for embedding in batch responses).
    pub fn into_value(self) -> Value {
        serde_json::from_str(&self.into_string()).unwrap_or(Value::Null)
    }
}

/// The FHIR service over one store, with the privacy policy its gate applies.
#[derive(Clone)]
pub struct FhirService {
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    health: Arc<crate::health::Health>,
    relations: Arc<crate::access::RelationCache>,
    /// Registered celiac merchants recently read (see [`crate::celiac`]).
    merchants: Arc<crate::celiac::MerchantCache>,
    /// The booking network's agendas per service, recently read (see [`crate::booking`]).
    offer: Arc<crate::booking::OfferCache>,
    waiting: Arc<crate::booking::WaitingCache>,
}

fn check_type(resource_type: &str) -> AppResult<()> {
    if model().is_concrete_resource(resource_type) {
        Ok(())
    } else {
        Err(AppError::NotFound(format!("unknown resource type '{resource_type}'")))
    }
}

fn check_id(id: &str) -> AppResult<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(AppError::BadRequest(format!("'{id}' is not a valid FHIR id")))
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

pub(crate) fn encode_cursor(v: &Value) -> String {
    hex::encode(v.to_string())
}

pub(crate) fn decode_cursor(s: &str) -> AppResult<Vec<Value>> {
    unhex(s)
        .and_then(|b| serde_json::from_slice::<Vec<Value>>(&b).ok())
        .ok_or_else(|| AppError::BadRequest("the paging cursor is not valid".into()))
}

/// Query string from decoded pairs (for self/next links).
pub fn encode_query(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

pub(crate) fn apply_elements(resource: &mut Value, elements: &[String], summary: Option<Summary>) {
    let Some(obj) = resource.as_object_mut() else { return };
    let mut subsetted = false;
    if !elements.is_empty() {
        let keep: HashSet<&str> = elements.iter().map(String::as_str).collect();
        obj.retain(|k, _| {
            let base = k.trim_start_matches('_');
            let ok = matches!(k.as_str(), "resourceType" | "id" | "meta") || keep.contains(base);
            subsetted |= !ok;
            ok
        });
    }
    match summary {
        Some(Summary::Data) => {
            subsetted |= obj.remove("text").is_some();
        }
        Some(Summary::True) => {
            let rt = obj.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string();
            let keep: HashSet<String> = model().children(&rt).iter().filter(|e| e.summary || e.min > 0).map(|e| e.name.clone()).collect();
            obj.retain(|k, _| {
                let base = k.trim_start_matches('_');
                let name_ok = keep.contains(base)
                    || keep.iter().any(|n| base.strip_prefix(n.as_str()).is_some_and(|s| s.starts_with(|c: char| c.is_ascii_uppercase())));
                let ok = matches!(k.as_str(), "resourceType" | "id" | "meta") || name_ok;
                subsetted |= !ok;
                ok
            });
        }
        Some(Summary::Text) => {
            obj.retain(|k, _| {
                let ok = matches!(k.as_str(), "resourceType" | "id" | "meta" | "text");
                subsetted |= !ok;
                ok
            });
        }
        _ => {}
    }
    if subsetted {
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let tags = m.entry("tag").or_insert_with(|| json!([]));
            if let Some(a) = tags.as_array_mut() {
                a.push(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}));
            }
        }
    }
}

impl FhirService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_policy(store, Policy::default())
    }

    pub fn with_policy(store: Arc<dyn Store>, policy: Policy) -> Self {
        Self {
            store,
            policy: Arc::new(policy),
            health: Arc::default(),
            relations: Arc::default(),
            merchants: Arc::default(),
            offer: Arc::default(),
            waiting: Arc::default(),
        }
    }

    /// Readiness (see [`crate::health`]).
    pub fn health(&self) -> &crate::health::Health {
        &self.health
    }

    /// Whether the service can serve now.
    pub async fn ready(&self) -> Result<(), crate::health::NotReady> {
        self.health.check(self.store.as_ref()).await
    }

    pub(crate) fn merchant_cache(&self) -> &crate::celiac::MerchantCache {
        &self.merchants
    }

    pub(crate) fn offer_cache(&self) -> &crate::booking::OfferCache {
        &self.offer
    }

    pub(crate) fn waiting_cache(&self) -> &crate::booking::WaitingCache {
        &self.waiting
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A gate for one request.
    pub fn gate<'a>(&'a self, actor: &'a Actor) -> Gate<'a> {
        Gate::new(self.store.as_ref(), &self.policy, actor).with_relations(&self.relations)
    }

    fn parse_body(body: &[u8]) -> AppResult<Value> {
        let v: Value = serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        if v.get("resourceType").and_then(Value::as_str).is_none() {
            return Err(AppError::BadRequest("the body must be a FHIR resource: a JSON object with a resourceType".into()));
        }
        Ok(v)
    }

    async fn references_exist(&self, resource: &Value, resource_type: &str) -> AppResult<()> {
        let issues = prepare::check_references(self.store.as_ref(), &[(resource_type.to_string(), resource)], &HashSet::new()).await?;
        if issues.is_empty() {
            Ok(())
        } else {
            Err(AppError::Invalid(issues))
        }
    }

    /// A stored version the actor may see, or the error that does not reveal whether it exists.
    pub(crate) async fn admit_read(gate: &mut Gate<'_>, s: &Stored, what: &str) -> AppResult<Option<Arc<Access>>> {
        if s.patient_key.is_shared() {
            gate.require_identity()?;
            if !gate.actor.scope_permits(&s.resource_type, Op::Read) {
                return Err(AppError::Forbidden(format!("the token's scopes do not allow reading {}", s.resource_type)));
            }
            return Ok(None);
        }
        let a = gate.access(s.patient_key).await?;
        if let Some(e) = a.refusal().filter(|_| !matches!(a.relation, Relation::Stranger)) {
            return Err(e);
        }
        if !gate.actor.scope_permits(&s.resource_type, Op::Read) {
            return Err(AppError::Forbidden(format!("the token's scopes do not allow reading {}", s.resource_type)));
        }
        if gate.admit(s).await? {
            Ok(Some(a))
        } else {
            Err(AppError::NotFound(format!("{what} is not known")))
        }
    }

    /// The resource as this viewer may see it.
    fn shown(s: &Stored, access: Option<&Access>) -> AppResult<Versioned> {
        let mut v = Versioned::from_stored(s)?;
        if let Some(a) = access {
            redact(&mut v.resource, &a.relation);
        }
        Ok(v)
    }

    pub async fn read(&self, actor: &Actor, resource_type: &str, id: &str) -> AppResult<Versioned> {
        check_type(resource_type)?;
        check_id(id)?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let what = format!("{resource_type}/{id}");
        let found = if resource_type == "AuditEvent" {
            self.audit_entry(id).await?
        } else if gate.shares_decisions() {
            // the record's facts version in the same round trip as the resource
            match self.store.read_with_facts(resource_type, id).await? {
                Some((s, v)) => {
                    gate.knows_version(s.patient_key, v);
                    Some(s)
                }
                None => None,
            }
        } else {
            self.store.read(resource_type, id).await?
        };
        let Some(s) = found else {
            return Err(AppError::NotFound(format!("{what} is not known")));
        };
        let access = Self::admit_read(&mut gate, &s, &what).await?;
        if s.deleted {
            return Err(AppError::Gone(format!("{what} was deleted")));
        }
        if let Some(a) = &access {
            gate.record(a, "read", vec![what.clone()], None);
        }
        gate.commit_audit().await?;
        Self::shown(&s, access.as_deref())
    }

    pub async fn vread(&self, actor: &Actor, resource_type: &str, id: &str, version: &str) -> AppResult<Versioned> {
        check_type(resource_type)?;
        check_id(id)?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let what = format!("{resource_type}/{id}/_history/{version}");
        let v: i64 = version.parse().map_err(|_| AppError::NotFound(format!("version '{version}' is not known")))?;
        // the current version decides whether the resource is visible at all
        let (cur, s) = if resource_type == "AuditEvent" {
            // an access-log entry has one version
            let e = self.audit_entry(id).await?;
            (e.clone(), e.filter(|_| v == 1))
        } else {
            (self.store.read(resource_type, id).await?, self.store.vread(resource_type, id, v).await?)
        };
        let (Some(cur), Some(s)) = (cur, s) else {
            return Err(AppError::NotFound(format!("{what} is not known")));
        };
        Self::admit_read(&mut gate, &cur, &what).await?;
        let access = Self::admit_read(&mut gate, &s, &what).await?;
        if s.deleted {
            return Err(AppError::Gone(format!("{resource_type}/{id} version {version} is a deletion")));
        }
        if let Some(a) = &access {
            gate.record(a, "vread", vec![format!("{resource_type}/{id}")], None);
        }
        gate.commit_audit().await?;
        Self::shown(&s, access.as_deref())
    }

    /// Whether agenda `schedule` is one of a site that organisation `org` runs: the site's
    /// organisation, or the one it is part of (a hospital's ASST), is `org` or the one `org`
    /// is part of.
    async fn agenda_of(&self, schedule: &Value, org: &str) -> AppResult<bool> {
        let part_of = |v: &Value| v["partOf"]["reference"].as_str().and_then(|r| r.strip_prefix("Organization/")).map(String::from);
        let read = |rt: &'static str, id: String| async move {
            AppResult::Ok(
                self.store
                    .read(rt, &id)
                    .await?
                    .filter(|s| !s.deleted)
                    .map(|s| serde_json::from_str::<Value>(&s.json).unwrap_or(Value::Null)),
            )
        };
        let mut owners = vec![org.to_string()];
        if let Some(o) = read("Organization", org.to_string()).await? {
            owners.extend(part_of(&o));
        }
        let Some(loc) = schedule["actor"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|a| a["reference"].as_str()?.strip_prefix("Location/"))
            .map(String::from)
        else {
            return Ok(false);
        };
        let Some(site_org) = read("Location", loc)
            .await?
            .and_then(|l| l["managingOrganization"]["reference"].as_str().and_then(|r| r.strip_prefix("Organization/")).map(String::from))
        else {
            return Ok(false);
        };
        if owners.contains(&site_org) {
            return Ok(true);
        }
        Ok(read("Organization", site_org).await?.and_then(|o| part_of(&o)).is_some_and(|p| owners.contains(&p)))
    }

    /// Gate one write: the actor may write this type in this record (and the current version,
    /// if any, is theirs to change); labels are derived; the access is recorded for the audit.
    pub(crate) async fn gate_write(
        &self,
        gate: &mut Gate<'_>,
        w: &mut Write,
        stamped: &mut Value,
        current: Option<&Stored>,
    ) -> AppResult<()> {
        let live = current.filter(|c| !c.deleted);
        let op = match (w.method, live) {
            (Method::Delete, _) => Op::Delete,
            (_, Some(_)) => Op::Update,
            _ => Op::Create,
        };
        if let Some(c) = live {
            if c.patient_key != w.patient_key {
                gate.check_write(c.patient_key, &c.resource_type, Op::Update, Some(c)).await?;
            }
        }
        let mut a = gate.check_write(w.patient_key, &w.resource_type, op, live).await?;
        if w.resource_type == "Schedule" {
            if let Who::Client { platform: false, organization: Some(org), .. } = &gate.actor.who {
                let old = live.map(|c| serde_json::from_str::<Value>(&c.json).unwrap_or(Value::Null));
                let new = (w.method != Method::Delete).then_some(&*stamped);
                for v in old.iter().chain(new) {
                    if !self.agenda_of(v, org).await? {
                        return Err(AppError::Forbidden(format!("Schedule/{} is not an agenda of a site your organisation runs", w.id)));
                    }
                }
            }
        }
        if w.method != Method::Delete && !gate.publication {
            check_blob_binding(stamped, live, w.patient_key)?;
        }
        if w.method != Method::Delete {
            let limit = crate::limits::resource_bytes(gate.actor, &w.resource_type);
            if w.json.len() > limit {
                return Err(AppError::TooLarge(format!(
                    "{} is {} KiB; a resource written by your kind of client may be at most {} KiB",
                    w.resource_type,
                    w.json.len() / 1024,
                    limit / 1024
                )));
            }
        }
        if w.resource_type == "Patient" {
            a = gate.registering(a, &w.id);
        }
        if w.method != Method::Delete {
            let cur_v = match live {
                Some(c) => Some(parse_stored(c)?),
                None => None,
            };
            let before = stamped.get("meta").cloned();
            label_resource(stamped, cur_v.as_ref(), gate.actor, true);
            if stamped.get("meta") != before.as_ref() {
                refresh_write(w, stamped)?;
            } else {
                w.restrict = restrict_bits(stamped);
            }
            if op == Op::Create && w.resource_type == "DocumentReference" {
                gate.published(&a, &w.id, stamped);
            }
        }
        let interaction = match op {
            Op::Create => "create",
            Op::Delete => "delete",
            _ => "update",
        };
        gate.record(&a, interaction, vec![format!("{}/{}", w.resource_type, w.id)], None);
        Ok(())
    }

    /// Commit writes with the audit of the accesses the gate recorded, all or nothing.
    pub(crate) async fn commit_gated(
        &self,
        gate: &Gate<'_>,
        writes: Vec<Write>,
        mut outbox: Vec<fascicolo_store::OutboxMessage>,
    ) -> AppResult<()> {
        let (audit, notes) = gate.audit_writes(datetime::now_ms())?;
        outbox.extend(notes);
        self.store.commit_all(writes, audit, outbox).await?;
        Ok(())
    }

    /// Create with a server-assigned id; `if_none_exist` makes it conditional.
    pub async fn create(&self, actor: &Actor, resource_type: &str, body: &[u8], if_none_exist: Option<&str>) -> AppResult<WriteOutcome> {
        check_type(resource_type)?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let resource = Self::parse_body(body)?;
        let issues = check(&resource, resource_type, None);
        if !issues.is_empty() {
            return Err(AppError::Invalid(issues));
        }
        if let Some(q) = if_none_exist {
            if let Some(existing) = self.conditional_match(actor, resource_type, q).await? {
                return Ok(WriteOutcome { created: false, version: Versioned::from_stored(&existing)? });
            }
        }
        let id = new_id();
        self.references_exist(&resource, resource_type).await?;
        let (mut w, mut stamped) = write_for(resource, resource_type, &id, None, Method::Create, datetime::now_ms())?;
        self.gate_write(&mut gate, &mut w, &mut stamped, None).await?;
        let out = Versioned::from_write(&w, stamped);
        self.commit_gated(&gate, vec![w], Vec::new()).await?;
        Ok(WriteOutcome { created: true, version: out })
    }

    /// The one resource a conditional operation or conditional reference names: none, one, or
    /// 412 when the criteria match several. Empty criteria are refused (they would match anything).
    /// Only what the actor may see can match.
    pub(crate) async fn conditional_match(&self, actor: &Actor, resource_type: &str, query: &str) -> AppResult<Option<Stored>> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.trim_start_matches('?').as_bytes()).into_owned().collect();
        if pairs.is_empty() {
            return Err(AppError::BadRequest(format!("the condition '{resource_type}?{query}' has no search criteria")));
        }
        let req = parse_search(Some(resource_type), &pairs)?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let mut plan =
            SearchPlan { resource_type: Some(resource_type.to_string()), clauses: req.clauses.clone(), limit: 2, ..Default::default() };
        if !matches!(actor.who, Who::System | Who::Client { platform: true, .. }) && in_patient_compartment(resource_type) {
            let named = match named_patient(resource_type, &req).or_else(|| default_patient(actor)) {
                None if resource_type == "Patient" => self.patient_by_identifier(&req).await?,
                k => k,
            };
            match named {
                Some(k) => {
                    let a = gate.access(k).await?;
                    plan.patient = Some(k);
                    plan.visibility = visibility_for(&a, actor, resource_type, &req)?;
                }
                None => {
                    let own = actor.own_codes().into_iter().map(|c| (labels::PRODUCER.to_string(), c)).collect();
                    plan.visibility = Some(Visibility { deny_all: true, allow_tags: own, ..Default::default() });
                }
            }
        }
        let mut hits = self.store.search(&plan).await?;
        match hits.len() {
            0 => Ok(None),
            1 => Ok(hits.pop().map(|h| h.stored)),
            _ => Err(AppError::PreconditionFailed(format!("the condition '{resource_type}?{query}' matches more than one resource"))),
        }
    }

    /// Update (or create with the client's id); `if_match` is the expected current version.
    pub async fn update(
        &self,
        actor: &Actor,
        resource_type: &str,
        id: &str,
        body: &[u8],
        if_match: Option<i64>,
    ) -> AppResult<WriteOutcome> {
        check_type(resource_type)?;
        check_id(id)?;
        self.gate(actor).require_identity()?;
        let resource = Self::parse_body(body)?;
        let mut issues = check(&resource, resource_type, None);
        match resource.get("id").and_then(Value::as_str) {
            Some(bid) if bid == id => {}
            Some(bid) => issues.push(OutcomeIssue::error("invalid", format!("the body's id '{bid}' does not match the URL's id '{id}'"))),
            None => issues.push(OutcomeIssue::error("required", "an update needs the resource's id in the body")),
        }
        if !issues.is_empty() {
            return Err(AppError::Invalid(issues));
        }
        let current = self.store.read(resource_type, id).await?;
        self.write_version(actor, (resource_type, id), &resource, current, if_match, Method::Update).await
    }

    async fn write_version(
        &self,
        actor: &Actor,
        (resource_type, id): (&str, &str),
        resource: &Value,
        current: Option<Stored>,
        if_match: Option<i64>,
        method: Method,
    ) -> AppResult<WriteOutcome> {
        let mut gate = self.gate(actor);
        if let Some(c) = current.as_ref().filter(|c| !c.deleted) {
            // the same answer for a resource the actor may not see as for a missing one
            gate.check_write(c.patient_key, resource_type, Op::Update, Some(c)).await?;
        }
        if let Some(expected) = if_match {
            match &current {
                Some(c) if c.version == expected && !c.deleted => {}
                _ => return Err(AppError::PreconditionFailed(format!("{resource_type}/{id} is not at version {expected}"))),
            }
        }
        let created = current.as_ref().is_none_or(|c| c.deleted);
        self.references_exist(resource, resource_type).await?;
        let (mut w, mut stamped) = write_for(resource.clone(), resource_type, id, current.as_ref(), method, datetime::now_ms())?;
        self.gate_write(&mut gate, &mut w, &mut stamped, current.as_ref()).await?;
        let out = Versioned::from_write(&w, stamped);
        self.commit_gated(&gate, vec![w], Vec::new()).await?;
        Ok(WriteOutcome { created, version: out })
    }

    /// `PUT Type?criteria`
    pub async fn conditional_update(&self, actor: &Actor, resource_type: &str, query: &str, body: &[u8]) -> AppResult<WriteOutcome> {
        check_type(resource_type)?;
        self.gate(actor).require_identity()?;
        let resource = Self::parse_body(body)?;
        let issues = check(&resource, resource_type, None);
        if !issues.is_empty() {
            return Err(AppError::Invalid(issues));
        }
        let body_id = resource.get("id").and_then(Value::as_str).map(String::from);
        match self.conditional_match(actor, resource_type, query).await? {
            Some(existing) => {
                if body_id.as_deref().is_some_and(|b| b != existing.id) {
                    return Err(AppError::BadRequest("the body's id does not match the resource found by the condition".into()));
                }
                let id = existing.id.clone();
                self.write_version(actor, (resource_type, &id), &resource, Some(existing), None, Method::Update).await
            }
            None => {
                let id = match body_id {
                    Some(b) => {
                        check_id(&b)?;
                        b
                    }
                    None => new_id(),
                };
                let current = self.store.read(resource_type, &id).await?;
                self.write_version(actor, (resource_type, &id), &resource, current, None, Method::Update).await
            }
        }
    }

    /// JSON Patch (RFC 6902).
    pub async fn patch(&self, actor: &Actor, resource_type: &str, id: &str, body: &[u8], if_match: Option<i64>) -> AppResult<WriteOutcome> {
        check_type(resource_type)?;
        check_id(id)?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let what = format!("{resource_type}/{id}");
        let Some(stored) = self.store.read(resource_type, id).await?.filter(|s| !s.deleted) else {
            return Err(AppError::NotFound(format!("{what} is not known")));
        };
        Self::admit_read(&mut gate, &stored, &what).await?;
        let patch: json_patch::Patch =
            serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("not a JSON Patch document: {e}")))?;
        let mut doc = parse_stored(&stored)?;
        json_patch::patch(&mut doc, &patch).map_err(|e| AppError::BadRequest(format!("the patch cannot be applied: {e}")))?;
        if doc.get("id").and_then(Value::as_str) != Some(id) || doc.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
            return Err(AppError::BadRequest("a patch must not change id or resourceType".into()));
        }
        let issues = check(&doc, resource_type, None);
        if !issues.is_empty() {
            return Err(AppError::Invalid(issues));
        }
        self.write_version(actor, (resource_type, id), &doc, Some(stored), if_match, Method::Patch).await
    }

    /// Logical delete: a new version marked deleted, kept in history. Returns false when the
    /// resource was already deleted.
    pub async fn delete(&self, actor: &Actor, resource_type: &str, id: &str) -> AppResult<bool> {
        check_type(resource_type)?;
        check_id(id)?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let Some(cur) = self.store.read(resource_type, id).await? else {
            return Err(AppError::NotFound(format!("{resource_type}/{id} is not known")));
        };
        if cur.deleted {
            Self::admit_read(&mut gate, &cur, &format!("{resource_type}/{id}")).await?;
            return Ok(false);
        }
        let mut w = delete_for(&cur, datetime::now_ms());
        let mut last = Value::Null;
        self.gate_write(&mut gate, &mut w, &mut last, Some(&cur)).await?;
        self.commit_gated(&gate, vec![w], Vec::new()).await?;
        Ok(true)
    }

    /// Scope a search to what the actor may see: one patient's record for everyone but the
    /// platform (the named one, or the citizen's own), with the visibility filter.
    pub(crate) async fn scope_search(
        &self,
        gate: &mut Gate<'_>,
        resource_type: Option<&str>,
        req: &SearchRequest,
        pairs: &[(String, String)],
        plan: &mut SearchPlan,
    ) -> AppResult<()> {
        let actor = gate.actor;
        let full = matches!(actor.who, Who::System | Who::Client { platform: true, .. });
        let Some(rt) = resource_type else {
            if full {
                return Ok(());
            }
            return Err(AppError::Forbidden("search one resource type at a time (e.g. /Observation?patient=...)".into()));
        };
        if !actor.scope_permits(rt, Op::Search) {
            return Err(AppError::Forbidden(format!("the token's scopes do not allow searching {rt}")));
        }
        if full {
            // the platform searches across records; every record in the results is audited
            return Ok(());
        }
        if !in_patient_compartment(rt) {
            // shared data (practitioners, organisations...): no way into patient data from here
            if !full && req.clauses.iter().any(crosses_into_patients) {
                return Err(AppError::Forbidden(
                    "chained and _has searches into patient data need one patient (search that record)".into(),
                ));
            }
            return Ok(());
        }
        let key = match named_patient(rt, req).or_else(|| default_patient(actor)) {
            Some(k) => k,
            // a professional finds a patient by identifier (codice fiscale): the record it names,
            // then the same rules as any search in it (no relation: nothing, as for no match)
            None if rt == "Patient" => match self.patient_by_identifier(req).await? {
                Some(k) => k,
                None => {
                    return Err(AppError::Forbidden(
                        "search patients by identifier (identifier=http://hl7.it/sid/codiceFiscale|<CF>) or by _id".into(),
                    ))
                }
            },
            None => {
                return Err(AppError::Forbidden(format!(
                    "search one patient's record at a time: add patient=<id> (or subject=Patient/<id>) to the {rt} search"
                )))
            }
        };
        let a = gate.access(key).await?;
        a.check_type(actor, rt, Op::Search)?;
        if let Relation::Delegate { scope, .. } = &a.relation {
            if !scope.is_empty() && req.clauses.iter().any(|c| matches!(c, Clause::Chain { .. } | Clause::Has { .. })) {
                return Err(AppError::Forbidden(
                    "a delegation limited to some kinds of record does not allow chained or _has searches".into(),
                ));
            }
        }
        plan.patient = Some(key);
        plan.visibility = visibility_for(&a, actor, rt, req)?;
        gate.record(&a, "search-type", Vec::new(), Some(format!("{rt}?{}", encode_query(pairs))));
        Ok(())
    }

    /// The record a Patient search's single `identifier` value names; a record that exists
    /// nowhere when none or several match (the search then finds nothing). `None` without one.
    async fn patient_by_identifier(&self, req: &SearchRequest) -> AppResult<Option<PatientKey>> {
        let Some(clause) = req.clauses.iter().find(
            |c| matches!(c, Clause::Param { param, values, modifier: Modifier::None } if param.code == "identifier" && values.len() == 1),
        ) else {
            return Ok(None);
        };
        let plan = SearchPlan { resource_type: Some("Patient".into()), clauses: vec![clause.clone()], limit: 2, ..Default::default() };
        let hits = self.store.search(&plan).await?;
        Ok(Some(match hits.as_slice() {
            [one] => one.stored.patient_key,
            _ => PatientKey::for_patient_id(&new_id()),
        }))
    }

    /// Search; `base` is the absolute FHIR base URL for links.
    pub async fn search(&self, actor: &Actor, resource_type: Option<&str>, pairs: &[(String, String)], base: &str) -> AppResult<Page> {
        if let Some(t) = resource_type {
            check_type(t)?;
        }
        if resource_type == Some("AuditEvent") {
            return self.search_access_log(actor, pairs, base).await;
        }
        check_search_cost(pairs)?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let req = parse_search(resource_type, pairs)?;
        let mut plan = SearchPlan {
            resource_type: resource_type.map(String::from),
            patient: resource_type.and_then(|t| compartment_patient(t, &req)),
            clauses: req.clauses.clone(),
            sort: req.sort.clone(),
            limit: req.count,
            after: None,
            visibility: None,
        };
        self.scope_search(&mut gate, resource_type, &req, pairs, &mut plan).await?;
        let path = match resource_type {
            Some(t) => format!("{base}/{t}"),
            None => base.to_string(),
        };
        let page = self.run_search(&mut gate, plan, &req, pairs, &path, base).await?;
        gate.commit_audit().await?;
        Ok(page)
    }

    async fn run_search(
        &self,
        gate: &mut Gate<'_>,
        mut plan: SearchPlan,
        req: &SearchRequest,
        pairs: &[(String, String)],
        path: &str,
        base: &str,
    ) -> AppResult<Page> {
        let self_pairs: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "_cursor").cloned().collect();
        let self_link = format!("{path}?{}", encode_query(pairs));
        if req.summary == Some(Summary::Count) {
            let total = self.store.count(&plan).await?;
            return Ok(Page { total: Some(total), links: vec![json!({"relation": "self", "url": self_link})], entries: Vec::new() });
        }
        if let Some(c) = &req.cursor {
            plan.after = Some(decode_cursor(c)?);
        }
        let limit = plan.limit;
        plan.limit = limit + 1;
        let mut hits = if limit == 0 { Vec::new() } else { self.store.search(&plan).await? };
        let mut more = hits.len() > limit;
        hits.truncate(limit);
        // a page holds at most PAGE_BYTES of resources (at least one): the rest comes with the
        // next link, so a page of large resources is not assembled in memory all at once
        let mut bytes = 0usize;
        if let Some(cut) = hits.iter().position(|h| {
            bytes += h.stored.json.len();
            bytes > crate::limits::PAGE_BYTES
        }) {
            let keep = cut.max(1);
            more |= keep < hits.len();
            hits.truncate(keep);
        }
        let total = match req.total {
            Total::Accurate | Total::Estimate => Some(self.store.count(&plan).await?),
            Total::None if !more && req.cursor.is_none() => Some(hits.len() as u64),
            Total::None => None,
        };
        let mut links = vec![json!({"relation": "self", "url": self_link})];
        if more {
            if let Some(last) = hits.last() {
                let mut keys = last.keys.clone();
                keys.push(Value::String(last.stored.resource_type.clone()));
                keys.push(Value::String(last.stored.id.clone()));
                let mut next = self_pairs.clone();
                next.push(("_cursor".into(), encode_cursor(&Value::Array(keys))));
                links.push(json!({"relation": "next", "url": format!("{path}?{}", encode_query(&next))}));
            }
        }
        let matched: Vec<Stored> = hits.into_iter().map(|h| h.stored).collect();
        // the SQL filter already applied; the same rule again per row guards the platform's
        // cross-patient searches and records every record touched
        let mut shown: Vec<Stored> = Vec::with_capacity(matched.len());
        for s in matched {
            if gate.admit(&s).await? {
                gate.record_seen(&s, "search-type").await?;
                shown.push(s);
            }
        }
        let included = self.includes(gate, &shown, req).await?;
        let mut entries = Vec::with_capacity(shown.len() + included.len());
        let reshape = !req.elements.is_empty() || matches!(req.summary, Some(Summary::True | Summary::Data | Summary::Text));
        for (s, mode) in shown.into_iter().map(|s| (s, "match")).chain(included.into_iter().map(|s| (s, "include"))) {
            let full = format!("{base}/{}/{}", s.resource_type, s.id);
            let needs_redact = s.json.contains(labels::VISIBILITY) || s.json.contains(labels::HIDING);
            let json = if reshape || needs_redact {
                let mut r = parse_stored(&s)?;
                if needs_redact && !s.patient_key.is_shared() {
                    let a = gate.access(s.patient_key).await?;
                    redact(&mut r, &a.relation);
                }
                apply_elements(&mut r, &req.elements, req.summary);
                r.to_string()
            } else {
                s.json
            };
            entries.push((full, json, mode));
        }
        Ok(Page { total, links, entries })
    }

    /// `_include` and `_revinclude`, with `:iterate` (bounded to 3 rounds); only what the actor
    /// may see.
    async fn includes(&self, gate: &mut Gate<'_>, matched: &[Stored], req: &SearchRequest) -> AppResult<Vec<Stored>> {
        if req.include.is_empty() && req.revinclude.is_empty() {
            return Ok(Vec::new());
        }
        let mut seen: HashSet<(String, String)> = matched.iter().map(|s| (s.resource_type.clone(), s.id.clone())).collect();
        let mut out: Vec<Stored> = Vec::new();
        let mut frontier: Vec<Stored> = matched.to_vec();
        for round in 0..3 {
            let mut found: Vec<Stored> = Vec::new();
            for inc in req.include.iter().filter(|i| round == 0 || i.iterate) {
                let refs = outgoing_refs(&frontier, inc);
                let want: Vec<(String, String)> = refs.into_iter().filter(|r| !seen.contains(r)).collect();
                found.extend(self.store.read_many(&want).await?);
            }
            for inc in req.revinclude.iter().filter(|i| round == 0 || i.iterate) {
                let targets: Vec<&Stored> = frontier.iter().collect();
                if targets.is_empty() {
                    continue;
                }
                let params: Vec<String> = if inc.param == "*" {
                    registry()
                        .for_type(&inc.source_type)
                        .filter(|p| p.kind == ParamType::Reference && p.expr.is_some())
                        .map(|p| p.code.clone())
                        .collect()
                } else {
                    vec![inc.param.clone()]
                };
                for pcode in params {
                    let Some(param) = registry().get(&inc.source_type, &pcode) else { continue };
                    let values = targets
                        .iter()
                        .map(|t| Term::Reference { target_type: Some(t.resource_type.clone()), id: Some(t.id.clone()), url: None })
                        .collect();
                    let plan = SearchPlan {
                        resource_type: Some(inc.source_type.clone()),
                        clauses: vec![Clause::Param { param: Arc::clone(param), modifier: Modifier::None, values }],
                        limit: 1000,
                        ..Default::default()
                    };
                    found.extend(self.store.search(&plan).await?.into_iter().map(|h| h.stored));
                }
            }
            let mut added: Vec<Stored> = Vec::new();
            for s in found {
                if seen.contains(&(s.resource_type.clone(), s.id.clone())) {
                    continue;
                }
                if gate.admit(&s).await? {
                    seen.insert((s.resource_type.clone(), s.id.clone()));
                    gate.record_seen(&s, "search-type").await?;
                    added.push(s);
                }
            }
            if added.is_empty() {
                break;
            }
            out.extend(added.iter().cloned());
            frontier = added;
        }
        Ok(out)
    }

    /// History of the system, a type or an instance.
    pub async fn history(
        &self,
        actor: &Actor,
        resource_type: Option<&str>,
        id: Option<&str>,
        pairs: &[(String, String)],
        base: &str,
    ) -> AppResult<Value> {
        if let Some(t) = resource_type {
            check_type(t)?;
        }
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let full = matches!(actor.who, Who::System | Who::Client { platform: true, .. });
        let mut q = HistoryQuery { resource_type: resource_type.map(String::from), limit: 50, ..Default::default() };
        let mut current: Option<Stored> = None;
        if let (Some(t), Some(id)) = (resource_type, id) {
            check_id(id)?;
            let what = format!("{t}/{id}");
            let Some(cur) = self.store.read(t, id).await? else {
                return Err(AppError::NotFound(format!("{what} is not known")));
            };
            if let Some(a) = Self::admit_read(&mut gate, &cur, &what).await? {
                gate.record(&a, "history-instance", vec![what], None);
            }
            q.id = Some(id.to_string());
            q.patient = Some(cur.patient_key);
            current = Some(cur);
        } else if !full {
            // across records: only the citizen's own (or the one they act for)
            match default_patient(actor) {
                Some(k) => {
                    let a = gate.access(k).await?;
                    if let Some(e) = a.refusal() {
                        return Err(e);
                    }
                    q.patient = Some(k);
                }
                None => {
                    return Err(AppError::Forbidden(
                        "history across records is not available to your role; ask for one resource's history".into(),
                    ))
                }
            }
        }
        if let Some(t) = resource_type {
            if !actor.scope_permits(t, Op::Read) {
                return Err(AppError::Forbidden(format!("the token's scopes do not allow reading {t}")));
            }
        }
        for (k, v) in pairs {
            match k.as_str() {
                "_count" => {
                    q.limit = v.parse::<usize>().map_err(|_| AppError::BadRequest("_count must be a whole number".into()))?.min(1000)
                }
                "_since" => {
                    q.since =
                        Some(datetime::parse(v).ok_or_else(|| AppError::BadRequest(format!("_since '{v}' is not an instant")))?.0.low);
                }
                "_cursor" => {
                    let c = decode_cursor(v)?;
                    match c.as_slice() {
                        [Value::Number(lu), Value::String(t), Value::String(i), Value::Number(ver)] => {
                            q.before = Some((lu.as_i64().unwrap_or(0), t.clone(), i.clone(), ver.as_i64().unwrap_or(0)));
                        }
                        _ => return Err(AppError::BadRequest("the paging cursor is not valid".into())),
                    }
                }
                "_format" | "_pretty" => {}
                other => return Err(AppError::BadRequest(format!("'{other}' is not supported for history (use _count, _since)"))),
            }
        }
        let limit = q.limit;
        q.limit = limit + 1;
        let mut rows = self.store.history(&q).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let path = match (resource_type, id) {
            (Some(t), Some(i)) => format!("{base}/{t}/{i}/_history"),
            (Some(t), None) => format!("{base}/{t}/_history"),
            _ => format!("{base}/_history"),
        };
        let self_pairs: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "_cursor").cloned().collect();
        let mut links = vec![json!({"relation": "self", "url": format!("{path}?{}", encode_query(pairs))})];
        if more {
            if let Some(last) = rows.last() {
                let mut next = self_pairs;
                next.push(("_cursor".into(), encode_cursor(&json!([last.last_updated, last.resource_type, last.id, last.version]))));
                links.push(json!({"relation": "next", "url": format!("{path}?{}", encode_query(&next))}));
            }
        }
        // a version is shown when both it and the resource's current version are visible
        let mut currents: HashMap<(String, String), bool> = HashMap::new();
        if let Some(c) = &current {
            currents.insert((c.resource_type.clone(), c.id.clone()), true);
        }
        let mut entries = Vec::new();
        for s in &rows {
            let k = (s.resource_type.clone(), s.id.clone());
            let cur_ok = match currents.get(&k) {
                Some(ok) => *ok,
                None => {
                    let ok = match self.store.read(&s.resource_type, &s.id).await? {
                        Some(c) => gate.admit(&c).await?,
                        None => false,
                    };
                    currents.insert(k, ok);
                    ok
                }
            };
            if !cur_ok || (!s.deleted && !gate.admit(s).await?) {
                continue;
            }
            gate.record_seen(s, "history-type").await?;
            let full = format!("{base}/{}/{}", s.resource_type, s.id);
            let status = match s.method {
                Method::Create => "201 Created",
                Method::Delete => "204 No Content",
                _ => "200 OK",
            };
            let url = match s.method {
                Method::Create => s.resource_type.clone(),
                _ => format!("{}/{}", s.resource_type, s.id),
            };
            let mut e = json!({"fullUrl": full, "request": {"method": s.method.as_str(), "url": url},
                "response": {"status": status, "etag": format!("W/\"{}\"", s.version), "lastModified": datetime::format_instant(s.last_updated)}});
            if !s.deleted {
                let mut r = parse_stored(s)?;
                if !s.patient_key.is_shared() {
                    let a = gate.access(s.patient_key).await?;
                    redact(&mut r, &a.relation);
                }
                e["resource"] = r;
            }
            entries.push(e);
        }
        gate.commit_audit().await?;
        Ok(json!({"resourceType": "Bundle", "type": "history", "link": links, "entry": entries}))
    }

    /// `Patient/{id}/$everything`: every resource in the patient's compartment the actor may see,
    /// paged, plus the resources they reference outside it (practitioners, organizations...) on
    /// the first page.
    pub async fn everything(&self, actor: &Actor, id: &str, pairs: &[(String, String)], base: &str) -> AppResult<Page> {
        check_id(id)?;
        let mut gate = self.gate(actor);
        gate.require_identity()?;
        let key = PatientKey::for_patient_id(id);
        let a = gate.access(key).await?;
        let exists = match &a.patient_id {
            Some(p) => p == id,
            None => self.store.read("Patient", id).await?.is_some_and(|s| !s.deleted),
        };
        if !exists {
            return Err(AppError::NotFound(format!("Patient/{id} is not known")));
        }
        if let Some(e) = a.refusal() {
            return Err(if matches!(a.relation, Relation::Stranger) {
                AppError::NotFound(format!("Patient/{id} is not known"))
            } else {
                e
            });
        }
        a.check_type(actor, "Patient", Op::Search)?;
        let mut count = 50;
        let mut cursor = None;
        for (k, v) in pairs {
            match k.as_str() {
                "_count" => count = v.parse::<usize>().map_err(|_| AppError::BadRequest("_count must be a whole number".into()))?.min(1000),
                "_cursor" => cursor = Some(v.clone()),
                "_format" | "_pretty" => {}
                other => return Err(AppError::BadRequest(format!("'{other}' is not supported for $everything (use _count)"))),
            }
        }
        gate.record(&a, "everything", Vec::new(), Some(format!("Patient/{id}/$everything")));
        let mut req = parse_search(None, &[])?;
        req.count = count;
        req.cursor = cursor.clone();
        let plan =
            SearchPlan { resource_type: None, patient: Some(key), limit: count, visibility: a.visibility(actor), ..Default::default() };
        let mut page = self.run_search(&mut gate, plan, &req, pairs, &format!("{base}/Patient/{id}/$everything"), base).await?;
        if cursor.is_none() {
            // referenced shared resources (one hop)
            let mut refs: HashSet<(String, String)> = HashSet::new();
            let mut have: HashSet<(String, String)> = HashSet::new();
            for (_, json, _) in &page.entries {
                let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
                collect_refs(&v, &mut refs);
                if let (Some(t), Some(i)) = (v["resourceType"].as_str(), v["id"].as_str()) {
                    have.insert((t.to_string(), i.to_string()));
                }
            }
            refs.retain(|r| !have.contains(r));
            let want: Vec<(String, String)> = refs.into_iter().collect();
            for s in self.store.read_many(&want).await?.into_iter().filter(|s| s.patient_key.is_shared()) {
                if actor.scope_permits(&s.resource_type, Op::Read) {
                    page.entries.push((format!("{base}/{}/{}", s.resource_type, s.id), s.json, "include"));
                }
            }
        }
        gate.commit_audit().await?;
        Ok(page)
    }
}

/// The SQL filter of a search of `resource_type` in a record. Producers see the Patient itself
/// (to identify whom they publish for) and nothing else of the record: for them a Patient search
/// has no filter, so it must not reach into the record through chains or `_has` (refused).
/// A stored original (document file) belongs to the document that published it: only the
/// ingestion use case binds a resource to one, through the `urn:fascicolo:sha256` identifier
/// the download routes follow. Any other write may keep the binding a resource already has,
/// never add one or point it at another file (that would open another document's original
/// under this resource's visibility).
fn check_blob_binding(stamped: &Value, live: Option<&Stored>, key: PatientKey) -> AppResult<()> {
    use fascicolo_cda::mapping::SHA256_SYSTEM;
    let hashes = |v: &Value| -> Vec<String> {
        v["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["system"] == SHA256_SYSTEM)
            .map(|i| i["value"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let new = hashes(stamped);
    if new.is_empty() {
        return Ok(());
    }
    let old = match live {
        Some(c) => hashes(&parse_stored(c)?),
        None => Vec::new(),
    };
    let same_record = live.is_some_and(|c| c.patient_key == key);
    if same_record && new.iter().all(|h| old.contains(h)) && stamped["resourceType"] == "DocumentReference" {
        return Ok(());
    }
    Err(AppError::Invalid(vec![fascicolo_fhir::OutcomeIssue {
        expression: Some(format!("{}.identifier", stamped["resourceType"].as_str().unwrap_or("Resource"))),
        ..fascicolo_fhir::OutcomeIssue::error(
        "business-rule",
        format!("identifiers of the system {SHA256_SYSTEM} name a stored document original and are assigned by the platform when a document is published (/ingest/v1); a client may not add or change them"),
    )}]))
}

/// A search's cost is bounded before it runs: the number of parameters, values ORed in one,
/// `_has` parameters and their nesting, the query's length. Past a limit the client is told
/// which (400), rather than the database working for minutes.
pub(crate) fn check_search_cost(pairs: &[(String, String)]) -> AppResult<()> {
    use crate::limits::{MAX_HAS, MAX_OR_VALUES, MAX_QUERY_BYTES, MAX_SEARCH_PARAMETERS};
    let too = |m: String| Err(AppError::BadRequest(m));
    if pairs.len() > MAX_SEARCH_PARAMETERS {
        return too(format!("a search takes at most {MAX_SEARCH_PARAMETERS} parameters; this one has {}", pairs.len()));
    }
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if bytes > MAX_QUERY_BYTES {
        return too(format!("a search's parameters may be at most {} KiB long", MAX_QUERY_BYTES / 1024));
    }
    let mut has = 0;
    for (k, v) in pairs {
        let values = v.split(',').count();
        if values > MAX_OR_VALUES {
            return too(format!("a search parameter may combine at most {MAX_OR_VALUES} values; '{k}' has {values}"));
        }
        if k.starts_with("_has:") {
            has += 1;
            let depth = k.matches("_has:").count();
            if depth > MAX_HAS {
                return too(format!("a _has chain may be at most {MAX_HAS} levels deep"));
            }
        }
    }
    if has > MAX_HAS {
        return too(format!("a search takes at most {MAX_HAS} _has parameters; this one has {has}"));
    }
    Ok(())
}

fn visibility_for(a: &Access, actor: &Actor, resource_type: &str, req: &SearchRequest) -> AppResult<Option<Visibility>> {
    // operators and producers see no clinical records: a chain or `_has` would reach into them
    let reaches = req.clauses.iter().any(|c| matches!(c, Clause::Chain { .. } | Clause::Has { .. }));
    if reaches && matches!(a.relation, Relation::Producer | Relation::Operator(_)) {
        return Err(AppError::Forbidden("your role searches by identifier and simple parameters only (no chained or _has search)".into()));
    }
    if resource_type == "Patient" && matches!(a.relation, Relation::Producer) {
        return Ok(None);
    }
    Ok(a.visibility(actor))
}

/// Types whose resources belong to a patient's record.
pub(crate) fn in_patient_compartment(resource_type: &str) -> bool {
    resource_type == "Patient" || !model().patient_compartment_params(resource_type).is_empty()
}

/// A chained or `_has` clause that reaches into patient records.
fn crosses_into_patients(c: &Clause) -> bool {
    match c {
        Clause::Has { .. } => true,
        Clause::Chain { target_types, inner, .. } => target_types.iter().any(|t| in_patient_compartment(t)) || crosses_into_patients(inner),
        _ => false,
    }
}

/// The one patient a search names (`patient=`, `subject=Patient/..`, any patient-compartment
/// reference, or `Patient?_id=`), for the gate.
pub(crate) fn named_patient(resource_type: &str, req: &SearchRequest) -> Option<PatientKey> {
    if let Some(k) = compartment_patient(resource_type, req) {
        return Some(k);
    }
    let comp = model().patient_compartment_params(resource_type);
    for c in &req.clauses {
        match c {
            Clause::Id(ids) if resource_type == "Patient" && ids.len() == 1 => return Some(PatientKey::for_patient_id(&ids[0])),
            Clause::Param { param, modifier, values } if param.kind == ParamType::Reference && values.len() == 1 => {
                if matches!(modifier, Modifier::Identifier) || !(comp.iter().any(|p| *p == param.code) || param.code == "patient") {
                    continue;
                }
                if let Term::Reference { target_type, id: Some(id), .. } = &values[0] {
                    let typed = target_type.as_deref().or(match modifier {
                        Modifier::Type(t) => Some(t.as_str()),
                        _ => None,
                    });
                    if typed == Some("Patient") || (typed.is_none() && (param.code == "patient" || param.targets == ["Patient"])) {
                        return Some(PatientKey::for_patient_id(id));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// The record a citizen's search goes to when it names none: the one they act for.
fn default_patient(actor: &Actor) -> Option<PatientKey> {
    match &actor.who {
        Who::Citizen { .. } => actor.acting_for.as_deref().map(PatientKey::for_patient_id),
        _ => None,
    }
}

/// When a search names one patient through the parameter that decides the patient key, the
/// plan carries that key so the query stays in one partition.
pub(crate) fn compartment_patient(resource_type: &str, req: &SearchRequest) -> Option<PatientKey> {
    for c in &req.clauses {
        let Clause::Param { param, modifier, values } = c else { continue };
        if param.kind != ParamType::Reference || values.len() != 1 || matches!(modifier, Modifier::Identifier) {
            continue;
        }
        if !decides_patient_key(resource_type, &param.code) {
            continue;
        }
        if let Term::Reference { target_type, id: Some(id), .. } = &values[0] {
            let typed = target_type.as_deref().or(match modifier {
                Modifier::Type(t) => Some(t.as_str()),
                _ => None,
            });
            if typed.is_none_or(|t| t == "Patient") && (typed.is_some() || param.code == "patient" || param.targets == ["Patient"]) {
                return Some(PatientKey::for_patient_id(id));
            }
        }
    }
    None
}

/// The part of a (possibly multi-type) expression for one type, without `.where(resolve() is Patient)`.
fn own_path(expression: &str, resource_type: &str) -> Option<String> {
    let prefix = format!("{resource_type}.");
    expression
        .split('|')
        .map(|p| {
            let p = p.trim().replace(".where(resolve() is Patient)", "");
            match p.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
                Some(inner) => inner.to_string(),
                None => p,
            }
        })
        .find(|p| p.starts_with(&prefix))
}

/// Whether `code` is (or is equivalent to) the first Patient-compartment parameter of the type
/// and follows a single-valued path: then a patient reference in it is the resource's key.
fn decides_patient_key(resource_type: &str, code: &str) -> bool {
    let Some(first) = model().patient_compartment_params(resource_type).first() else { return false };
    let (Some(f), Some(p)) = (registry().get(resource_type, first), registry().get(resource_type, code)) else { return false };
    let (Some(fp), Some(pp)) = (own_path(&f.expression, resource_type), own_path(&p.expression, resource_type)) else { return false };
    if fp != pp || fp.contains('(') {
        return false;
    }
    // every step of the path must allow one value only
    let mut parent = resource_type.to_string();
    for seg in fp.split('.').skip(1) {
        let Some(el) = model().children(&parent).iter().find(|e| e.name == seg) else { return false };
        if el.max != Some(1) {
            return false;
        }
        parent = el.path.clone();
    }
    true
}

fn outgoing_refs(resources: &[Stored], inc: &Include) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in resources.iter().filter(|s| s.resource_type == inc.source_type) {
        let Ok(v) = serde_json::from_str::<Value>(&s.json) else { continue };
        let params: Vec<_> = if inc.param == "*" {
            registry().for_type(&s.resource_type).filter(|p| p.kind == ParamType::Reference).cloned().collect()
        } else {
            registry().get(&s.resource_type, &inc.param).cloned().into_iter().collect()
        };
        for p in params {
            let Some(expr) = &p.expr else { continue };
            for item in fhirpath::evaluate(expr, &v) {
                let Some(r) = item.json().and_then(|j| j.get("reference")).and_then(Value::as_str) else { continue };
                if let IndexValue::Reference { target_type: Some(t), target_id: Some(id), .. } = fascicolo_fhir::params::parse_reference(r)
                {
                    if inc.target_type.as_ref().is_none_or(|tt| tt == &t) {
                        out.push((t, id));
                    }
                }
            }
        }
    }
    out
}

fn collect_refs(v: &Value, out: &mut HashSet<(String, String)>) {
    prepare::for_each_reference(v, &mut |r| {
        if let Some(t) = prepare::local_target(r) {
            out.insert(t);
        }
    });
}

/// Rewrite every `reference` found in `map` (used by transactions).
pub(crate) fn rewrite_refs(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "reference" {
                    if let Value::String(r) = x {
                        if let Some(n) = map.get(r.as_str()) {
                            *r = n.clone();
                        }
                    }
                } else {
                    rewrite_refs(x, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, map)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::decides_patient_key;

    #[test]
    fn partition_restriction_only_where_it_is_exact() {
        assert!(decides_patient_key("Observation", "subject"));
        assert!(decides_patient_key("Observation", "patient"));
        assert!(decides_patient_key("Encounter", "patient"));
        assert!(!decides_patient_key("Observation", "performer"));
        // Coverage's patient is the beneficiary, but the key comes from the policy holder
        assert!(!decides_patient_key("Coverage", "patient"));
        // Appointment's actors are a list: another patient may be the key
        assert!(!decides_patient_key("Appointment", "patient"));
        assert!(!decides_patient_key("Organization", "name"));
    }
}
