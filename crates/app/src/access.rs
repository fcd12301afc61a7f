//! The privacy gate: the one place that decides who may see and change what in a citizen's
//! record (ARCHITECTURE.md invariants 3–5), and that writes the access log.
//!
//! For each patient compartment an actor touches, [`Gate::access`] gathers the facts from the
//! store (whose record it is, parental responsibility and delegations as `RelatedPerson`, the
//! latest consent-to-consultation `Consent`, care relations, break-glass) into a [`Relation`].
//! The relation then gives (a) a SQL [`Visibility`] filter so lists, counts, `_total`, chains and
//! `_has` never include hidden items, and (b) a per-resource check for reads, includes, history
//! and `$everything`. Both read the same labels, derived on every write from the rules in
//! `fascicolo_domain::privacy` (see [`label_resource`]).

use crate::error::{AppError, AppResult};
use crate::gate::{Actor, Op, ProRole, Who};
use fascicolo_domain::privacy::{self, labels, Art6Category, Closed, DocumentFacts, Hiding};
use fascicolo_domain::PatientKey;
use fascicolo_fhir::search::parse_search;
use fascicolo_fhir::{datetime, params::index_resource};
use fascicolo_store::{AccessEntry, AccessQuery, Method, OutboxMessage, SearchPlan, Store, Stored, Visibility, Write};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// `RelatedPerson.relationship` codes of this platform: `parent`, `delegate`.
pub const RELATIONSHIP_SYSTEM: &str = "urn:fascicolo:relationship";
const PARENT_CODES: [&str; 4] = ["PRN", "MTH", "FTH", "parent"];
/// Extension on a delegation `RelatedPerson`: one resource type the delegate may see (repeats).
pub const DELEGATION_SCOPE_EXT: &str = "urn:fascicolo:delegation-scope";
/// `AuditEvent.subtype` codes of this platform: `emergency` (access under break-glass),
/// `break-glass` (the opening of one), `on-behalf` (a parent or delegate).
pub const ACCESS_SYSTEM: &str = "urn:fascicolo:access";
pub use fascicolo_domain::systems::{CF_SYSTEM, CONSENT_CATEGORY, CONSENT_CHANNEL_EXT, NOTICE_PREFIX, V3_ROLE};

/// Rules that are configuration, not law.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Current version of the information notice; consent to an older one is not in force.
    pub notice_version: u32,
    /// Most active delegations a citizen may grant.
    pub max_delegations: usize,
    /// How long a break-glass access lasts.
    pub break_glass_minutes: i64,
    /// Most people on a family doctor's and a pediatrician's list (the care relations the gate
    /// counts come from these lists).
    pub ceilings: crate::doctor_choice::Ceilings,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { notice_version: 1, max_delegations: 3, break_glass_minutes: 60, ceilings: Default::default() }
    }
}

/// An actor's relation to one patient's record.
#[derive(Debug, Clone, PartialEq)]
pub enum Relation {
    /// The console, or a trusted platform client: everything (clients are audited).
    Full,
    /// The citizen's own record.
    Own,
    /// Parental responsibility, through `RelatedPerson/{rp}`; `minor` evaluated today.
    Parent { rp: String, minor: bool },
    /// A delegation through `RelatedPerson/{rp}`.
    Delegate { rp: String, active: bool, scope: Vec<String> },
    /// A clinician: consent in force, care relation, active break-glass.
    Clinician { consent: bool, care: bool, emergency: bool },
    /// An administrative operator (no clinical content).
    Operator(ProRole),
    /// A document producer (its own organisation's work only).
    Producer,
    /// No relation (another citizen's record).
    Stranger,
}

/// Types that only the citizen side (and the console) reads: the access log and consent.
const PRIVATE_TYPES: [&str; 2] = ["AuditEvent", "Consent"];
/// What citizens (and parents for a minor) may write directly: the Taccuino.
const CITIZEN_WRITABLE: [&str; 3] = ["Observation", "DocumentReference", "Media"];
/// Registry types that clinicians and producers must not write.
const REGISTRY_TYPES: [&str; 5] = ["Patient", "RelatedPerson", "Consent", "AuditEvent", "Coverage"];

fn operator_types(role: ProRole, write: bool) -> &'static [&'static str] {
    match (role, write) {
        (ProRole::CupOperator, false) => &["Patient", "Appointment", "AppointmentResponse", "ServiceRequest", "Coverage"],
        (ProRole::CupOperator, true) => &["Appointment", "AppointmentResponse", "ServiceRequest", "Task"],
        (ProRole::AsstAdmin, false) => &["Patient", "RelatedPerson", "Coverage", "Appointment"],
        (ProRole::AsstAdmin, true) => &["Patient", "RelatedPerson", "Coverage"],
        _ => &[],
    }
}

/// Shared (non-patient) types a role may write.
fn shared_writable(actor: &Actor, resource_type: &str) -> bool {
    match &actor.who {
        Who::System | Who::Client { platform: true, .. } => true,
        // a provider's system keeps its own agendas (which ones: `FhirService::gate_write`)
        Who::Client { platform: false, organization: Some(_), .. } if resource_type == "Schedule" => true,
        Who::Client { platform: false, .. } => {
            // what documents carry besides the patient's record (a Specimen may name no subject)
            matches!(
                resource_type,
                "Practitioner"
                    | "PractitionerRole"
                    | "Organization"
                    | "OrganizationAffiliation"
                    | "Location"
                    | "Medication"
                    | "Device"
                    | "Binary"
                    | "Specimen"
                    | "Substance"
            )
        }
        // the registry office also keeps the doctors' lists (`Group/lista-…`)
        Who::Professional { role: ProRole::AsstAdmin, .. } => matches!(
            resource_type,
            "Practitioner" | "PractitionerRole" | "Organization" | "Location" | "HealthcareService" | "Schedule" | "Slot" | "Group"
        ),
        Who::Professional { role: ProRole::CupOperator, .. } => matches!(resource_type, "Schedule" | "Slot"),
        _ => false,
    }
}

/// The facts about one patient compartment for one actor.
#[derive(Debug, Clone)]
pub struct Access {
    pub key: PatientKey,
    /// The Patient id of the compartment, when the patient is registered.
    pub patient_id: Option<String>,
    pub relation: Relation,
}

/// The store's restriction bit of each visibility code.
fn bit(code: &str) -> i64 {
    match code {
        labels::NOT_PATIENT => 1,
        labels::NOT_PARENT => 2,
        labels::NOT_DELEGATE => 4,
        labels::NOT_CLINICIAN => 8,
        _ => 0,
    }
}

/// The restriction bits of a labelled resource (what [`Write::restrict`] stores).
pub fn restrict_bits(v: &Value) -> i64 {
    v["meta"]["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["system"] == labels::VISIBILITY)
        .filter_map(|c| c["code"].as_str())
        .fold(0, |acc, c| acc | bit(c))
}

/// A resource's `meta` alone (what [`Access::admits`] reads).
#[derive(serde::Deserialize)]
struct MetaOnly {
    #[serde(default)]
    meta: Value,
}

/// The producer codes a resource is tagged with (whose work it is).
fn producers_of(v: &Value) -> Vec<String> {
    meta_codes(v, "tag", labels::PRODUCER)
}

/// The codes of one system among a resource's `meta.tag` or `meta.security` labels.
pub fn meta_codes(v: &Value, field: &str, system: &str) -> Vec<String> {
    v["meta"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["system"] == system)
        .filter_map(|c| c["code"].as_str().map(String::from))
        .collect()
}

impl Access {
    /// A relation that must be refused outright, whatever the item.
    pub fn refusal(&self) -> Option<AppError> {
        match &self.relation {
            Relation::Parent { minor: false, .. } => {
                Some(AppError::Forbidden("parental access ends when the child comes of age (18)".into()))
            }
            Relation::Delegate { active: false, .. } => {
                Some(AppError::Forbidden("the delegation is not active (expired, revoked or not yet valid)".into()))
            }
            Relation::Stranger => Some(AppError::Forbidden("this record is not yours and you do not act for its owner".into())),
            _ => None,
        }
    }

    /// Type-level rule: may this relation do `op` on `resource_type` at all?
    pub fn check_type(&self, actor: &Actor, resource_type: &str, op: Op) -> AppResult<()> {
        if !actor.scope_permits(resource_type, op) {
            return Err(AppError::Forbidden(format!("the token's scopes do not allow this operation on {resource_type}")));
        }
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let write = matches!(op, Op::Create | Op::Update | Op::Delete);
        let private = PRIVATE_TYPES.contains(&resource_type);
        let ok = match &self.relation {
            Relation::Full => !(write && resource_type == "AuditEvent" && !matches!(actor.who, Who::System)),
            Relation::Own | Relation::Parent { .. } => !write || CITIZEN_WRITABLE.contains(&resource_type),
            Relation::Delegate { scope, .. } => !write && (scope_covers(scope, resource_type) || private),
            Relation::Clinician { care, emergency, .. } => {
                !private && (!write || ((*care || *emergency) && !REGISTRY_TYPES.contains(&resource_type)))
            }
            Relation::Operator(role) => operator_types(*role, write).contains(&resource_type),
            Relation::Producer => !private && (!REGISTRY_TYPES.contains(&resource_type) || (!write && resource_type == "Patient")),
            Relation::Stranger => false,
        };
        if ok {
            Ok(())
        } else if write {
            Err(AppError::Forbidden(format!("your role may not write {resource_type} in this record")))
        } else {
            Err(AppError::Forbidden(format!("your role may not read {resource_type} in this record")))
        }
    }

    /// The SQL filter for searches in this compartment.
    pub fn visibility(&self, actor: &Actor) -> Option<Visibility> {
        let own: Vec<(String, String)> = actor.own_codes().into_iter().map(|c| (labels::PRODUCER.to_string(), c)).collect();
        let deny = |code: &str| Some(Visibility { deny_bits: bit(code), ..Default::default() });
        match &self.relation {
            Relation::Full => None,
            Relation::Own => deny(labels::NOT_PATIENT),
            Relation::Parent { .. } => deny(labels::NOT_PARENT),
            Relation::Delegate { .. } => deny(labels::NOT_DELEGATE),
            Relation::Clinician { consent, care, emergency } => {
                if (*consent && *care) || *emergency {
                    Some(Visibility { deny_bits: bit(labels::NOT_CLINICIAN), deny_all: false, allow_tags: own })
                } else {
                    Some(Visibility { deny_bits: 0, deny_all: true, allow_tags: own })
                }
            }
            Relation::Operator(_) => deny(labels::NOT_CLINICIAN),
            Relation::Producer => Some(Visibility { deny_bits: 0, deny_all: true, allow_tags: own }),
            Relation::Stranger => Some(Visibility { deny_all: true, ..Default::default() }),
        }
    }

    /// May the actor see this stored resource (same rule as [`Access::visibility`], plus the
    /// type rules)?
    pub fn admits(&self, actor: &Actor, resource_type: &str, v: &Value) -> bool {
        if self.check_type(actor, resource_type, Op::Read).is_err() {
            return false;
        }
        // the same bits the SQL filter tests (`restrict_bits`), so both paths agree
        let bits = restrict_bits(v);
        let closed = |code: &str| bits & bit(code) != 0;
        let producers = producers_of(v);
        let own = actor.own_codes().iter().any(|c| producers.contains(c));
        match &self.relation {
            Relation::Full => true,
            Relation::Own => !closed(labels::NOT_PATIENT),
            Relation::Parent { minor, .. } => *minor && !closed(labels::NOT_PARENT),
            Relation::Delegate { active, .. } => *active && !closed(labels::NOT_DELEGATE),
            Relation::Clinician { consent, care, emergency } => {
                own || (((*consent && *care) || *emergency) && !closed(labels::NOT_CLINICIAN))
            }
            Relation::Operator(_) => !closed(labels::NOT_CLINICIAN),
            // a producer identifies the patients it publishes for (demographics, not records)
            Relation::Producer => own || resource_type == "Patient",
            Relation::Stranger => false,
        }
    }

    /// Accesses by anyone but the citizen themself (and the console) go to the access log.
    pub fn audited(&self, actor: &Actor) -> bool {
        !matches!(self.relation, Relation::Own) && !matches!(actor.who, Who::System)
    }

    /// The access is possible only because of break-glass.
    pub fn emergency(&self) -> bool {
        matches!(self.relation, Relation::Clinician { consent, care, emergency: true } if !(consent && care))
    }
}

/// A recorded access, turned into an AuditEvent at commit time.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub access: Arc<Access>,
    /// FHIR restful interaction code: read, vread, search-type, history-instance, create, update,
    /// delete, operation.
    pub interaction: &'static str,
    /// What was touched: `Type/id` references.
    pub entities: Vec<String>,
    /// The query of a search.
    pub query: Option<String>,
}

/// What the gate decided about a record for a professional or a client, shared between
/// requests: reused only while the record's facts version (which every write to the record, and
/// every emergency opening, moves on) is the one it was decided under, and for at most
/// [`RELATION_TTL_MS`]. It saves the relation lookups (patient, consent, care relation,
/// emergency openings) that an audited access would otherwise make on every request.
#[derive(Default)]
pub struct RelationCache {
    map: parking_lot::Mutex<HashMap<(String, PatientKey), Cached>>,
}

struct Cached {
    version: i64,
    until: i64,
    access: Arc<Access>,
}

/// Longest reuse of a decision.
pub const RELATION_TTL_MS: i64 = 60_000;
/// Most decisions kept (the cache starts over when full).
const RELATION_CACHE_MAX: usize = 100_000;

impl RelationCache {
    fn get(&self, who: &str, key: PatientKey, version: i64, now: i64) -> Option<Arc<Access>> {
        let map = self.map.lock();
        let c = map.get(&(who.to_string(), key))?;
        (c.version == version && now < c.until).then(|| Arc::clone(&c.access))
    }

    fn put(&self, who: String, key: PatientKey, version: i64, now: i64, access: Arc<Access>) {
        let mut map = self.map.lock();
        if map.len() >= RELATION_CACHE_MAX {
            map.clear();
        }
        map.insert((who, key), Cached { version, until: now + RELATION_TTL_MS, access });
    }
}

/// Per-request gate: caches relations, records every compartment touched for the audit.
pub struct Gate<'a> {
    store: &'a dyn Store,
    policy: &'a Policy,
    /// What the gate decided for professionals and clients, shared between requests.
    relations: Option<&'a RelationCache>,
    /// Facts versions already read by this request (with the resource it read).
    versions: HashMap<PatientKey, i64>,
    pub actor: &'a Actor,
    cache: HashMap<PatientKey, Arc<Access>>,
    records: Vec<AccessRecord>,
    /// Documents published by this request that the patient may see: (record, document id).
    new_documents: Vec<(PatientKey, String)>,
    /// This request is a document publication by the ingestion use case: it alone may bind a
    /// DocumentReference to a stored original (the `urn:fascicolo:sha256` identifier).
    pub(crate) publication: bool,
}

/// The platform's own lookups (the gate's facts, registry profiles, notification settings):
/// current resources of one type matching a query, in one record or everywhere, unfiltered.
/// Callers decide what the result may be used for; nothing here is shown to a user as is.
pub(crate) async fn lookup(
    store: &dyn Store,
    patient: Option<PatientKey>,
    resource_type: &str,
    query: &[(&str, &str)],
    limit: usize,
) -> AppResult<Vec<Stored>> {
    let pairs: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let req = parse_search(Some(resource_type), &pairs)?;
    let plan = SearchPlan {
        resource_type: Some(resource_type.to_string()),
        patient,
        clauses: req.clauses,
        sort: req.sort,
        limit,
        ..Default::default()
    };
    Ok(store.search(&plan).await?.into_iter().map(|h| h.stored).collect())
}

/// [`lookup`], parsed.
pub(crate) async fn lookup_values(
    store: &dyn Store,
    patient: Option<PatientKey>,
    resource_type: &str,
    query: &[(&str, &str)],
    limit: usize,
) -> AppResult<Vec<Value>> {
    Ok(lookup(store, patient, resource_type, query, limit).await?.iter().filter_map(|s| serde_json::from_str(&s.json).ok()).collect())
}

fn has_coding(v: &Value, systems: &[&str], codes: &[&str]) -> bool {
    v["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["system"].as_str().is_some_and(|s| systems.contains(&s)) && c["code"].as_str().is_some_and(|k| codes.contains(&k)))
}

fn has_cf(v: &Value, cf: &str) -> bool {
    v["identifier"].as_array().into_iter().flatten().any(|i| i["system"] == CF_SYSTEM && i["value"].as_str() == Some(cf))
}

fn instant(v: &Value) -> Option<i64> {
    v.as_str().and_then(datetime::parse).map(|(r, _)| r.low)
}

fn instant_end(v: &Value) -> Option<i64> {
    v.as_str().and_then(datetime::parse).map(|(r, _)| r.high)
}

/// The relation a `RelatedPerson` gives its person to the patient's record: parental
/// responsibility (minor evaluated today from the patient's `birthDate`, when the Patient is
/// given) or a delegation (active now or not). `None` for any other relationship.
pub fn relation_through(rp: &Value, patient: Option<&Value>, now: i64) -> Option<Relation> {
    let rp_id = rp["id"].as_str().unwrap_or_default().to_string();
    let rels = rp["relationship"].as_array().cloned().unwrap_or_default();
    if rels.iter().any(|r| has_coding(r, &[V3_ROLE, RELATIONSHIP_SYSTEM], &PARENT_CODES)) && rp["active"] != Value::Bool(false) {
        let minor = patient.and_then(birth_date).is_some_and(|b| privacy::is_minor(b, today()));
        return Some(Relation::Parent { rp: rp_id, minor });
    }
    if rels.iter().any(|r| has_coding(r, &[RELATIONSHIP_SYSTEM], &["delegate"])) {
        return Some(Relation::Delegate { rp: rp_id, active: delegation_active(rp, now), scope: delegation_scope(rp) });
    }
    None
}

/// An instant in milliseconds as the domain rules take it (clamped to the calendar's range).
fn at_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or_else(|_| {
        if ms < 0 {
            time::PrimitiveDateTime::MIN.assume_utc()
        } else {
            time::PrimitiveDateTime::MAX.assume_utc()
        }
    })
}

/// The delegation a `RelatedPerson` records, as the domain rule ([`privacy::Delegation`]) reads it.
pub fn delegation_of(rp: &Value) -> privacy::Delegation {
    let valid_from = instant(&rp["period"]["start"]).map_or(time::PrimitiveDateTime::MIN.assume_utc(), at_ms);
    privacy::Delegation {
        valid_from,
        valid_until: instant_end(&rp["period"]["end"]).map_or(time::PrimitiveDateTime::MAX.assume_utc(), at_ms),
        // a revoked delegation is kept with `active: false` (when it was revoked is in its
        // history): for the rule it counts as revoked from its start
        revoked_at: (rp["active"] == Value::Bool(false)).then_some(valid_from),
        scope: delegation_scope(rp),
    }
}

/// Is a delegation `RelatedPerson` active now? The domain's rule decides.
pub fn delegation_active(rp: &Value, now: i64) -> bool {
    delegation_of(rp).active(at_ms(now))
}

/// The emergency access an `AuditEvent` of subtype `break-glass` records, as the domain rule
/// ([`privacy::BreakGlass`]) reads it.
fn break_glass_of(e: &Value) -> Option<privacy::BreakGlass> {
    Some(privacy::BreakGlass {
        started_at: at_ms(instant(&e["period"]["start"])?),
        until: at_ms(instant(&e["period"]["end"])?),
        reason: e["purposeOfEvent"][0]["text"].as_str().unwrap_or_default().to_string(),
    })
}

/// Whether a delegation's scope covers a resource type (an empty scope covers the whole
/// record). A delegation for appointments also covers the prescriptions they are booked from:
/// booking for someone is reading what their doctor prescribed.
pub fn scope_covers(scope: &[String], resource_type: &str) -> bool {
    scope.is_empty() || scope.iter().any(|s| s == resource_type || (s == "Appointment" && resource_type == "ServiceRequest"))
}

pub fn delegation_scope(rp: &Value) -> Vec<String> {
    rp["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == DELEGATION_SCOPE_EXT)
        .filter_map(|e| e["valueCode"].as_str().map(String::from))
        .collect()
}

/// Today in Rome: a child comes of age at midnight Italian time, not UTC.
fn today() -> time::Date {
    fascicolo_domain::rome::today()
}

fn birth_date(patient: &Value) -> Option<time::Date> {
    let s = patient["birthDate"].as_str()?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s.get(..10)?, &fmt).ok()
}

impl<'a> Gate<'a> {
    pub fn new(store: &'a dyn Store, policy: &'a Policy, actor: &'a Actor) -> Self {
        Gate {
            store,
            policy,
            relations: None,
            versions: HashMap::new(),
            actor,
            cache: HashMap::new(),
            records: Vec::new(),
            new_documents: Vec::new(),
            publication: false,
        }
    }

    /// The facts version of a record, read with a resource of it (see [`Store::read_with_facts`]).
    pub fn knows_version(&mut self, key: PatientKey, version: i64) {
        self.versions.insert(key, version);
    }

    /// Whether this actor's decisions are shared between requests (and so the request needs
    /// the records' facts versions).
    pub fn shares_decisions(&self) -> bool {
        self.relations.is_some() && self.shared_key().is_some()
    }

    /// Reuse what the gate decided in earlier requests (see [`RelationCache`]).
    pub fn with_relations(mut self, relations: &'a RelationCache) -> Self {
        self.relations = Some(relations);
        self
    }

    /// The key of the actor in the shared cache: professionals and clients only (a citizen's
    /// relations to another record depend on the time of day: a delegation's period, a child's
    /// coming of age).
    fn shared_key(&self) -> Option<String> {
        let a = self.actor;
        let scoped = a.patient_scoped();
        match &a.who {
            Who::Professional { practitioner, organization, role } => {
                Some(format!("pro|{practitioner}|{organization:?}|{}|{scoped}|{:?}", role.code(), a.acting_for))
            }
            Who::Client { client_id, organization, platform } => {
                Some(format!("cli|{client_id}|{organization:?}|{platform}|{scoped}|{:?}", a.acting_for))
            }
            _ => None,
        }
    }

    /// Refuse anonymous callers before anything else.
    pub fn require_identity(&self) -> AppResult<()> {
        match self.actor.who {
            Who::Anonymous => Err(AppError::Unauthorized("sign-in required: send an access token (Authorization: Bearer ...)".into())),
            _ => Ok(()),
        }
    }

    /// The actor's relation to the record in partition `key`.
    pub async fn access(&mut self, key: PatientKey) -> AppResult<Arc<Access>> {
        self.require_identity()?;
        if let Some(a) = self.cache.get(&key) {
            return Ok(Arc::clone(a));
        }
        let a = match (self.relations, self.shared_key()) {
            (Some(shared), Some(who)) if !key.is_shared() => {
                // the record's facts version first: a decision made on facts newer than the
                // version read is only ever filed under an older version, never the reverse
                let version = match self.versions.get(&key) {
                    Some(v) => *v,
                    None => self.store.facts_version(key).await?,
                };
                let now = datetime::now_ms();
                match shared.get(&who, key, version, now) {
                    Some(a) => a,
                    None => {
                        let a = Arc::new(self.resolve(key).await?);
                        // an emergency opening ends by itself: decided again each time
                        if !a.emergency() {
                            shared.put(who, key, version, now, Arc::clone(&a));
                        }
                        a
                    }
                }
            }
            _ => Arc::new(self.resolve(key).await?),
        };
        self.cache.insert(key, Arc::clone(&a));
        Ok(a)
    }

    async fn resolve(&self, key: PatientKey) -> AppResult<Access> {
        // the console sees everything and is not logged: nothing to look up
        if matches!(self.actor.who, Who::System) {
            return Ok(Access { key, patient_id: None, relation: Relation::Full });
        }
        // a citizen on their own record (by their Patient id): nothing to look up either
        if let Who::Citizen { patient: Some(own), .. } = &self.actor.who {
            let bound_elsewhere = self.actor.patient_scoped() && self.actor.acting_for.as_deref() != Some(own.as_str());
            if PatientKey::for_patient_id(own) == key && !bound_elsewhere {
                return Ok(Access { key, patient_id: Some(own.clone()), relation: Relation::Own });
            }
        }
        let store = self.store;
        let patient = lookup_values(store, Some(key), "Patient", &[], 2).await?.into_iter().next();
        let mut patient_id = patient.as_ref().and_then(|p| p["id"].as_str()).map(String::from);
        if patient_id.is_none() {
            // a deleted Patient still names its record (for the log)
            let q =
                fascicolo_store::HistoryQuery { resource_type: Some("Patient".into()), patient: Some(key), limit: 1, ..Default::default() };
            patient_id = store.history(&q).await?.into_iter().next().map(|s| s.id);
        }
        let mut access = Access { key, patient_id: patient_id.clone(), relation: Relation::Stranger };
        // a token bound to one patient sees only that patient
        if self.actor.patient_scoped() && self.actor.acting_for.as_deref().map(PatientKey::for_patient_id) != Some(key) {
            return Ok(access);
        }
        access.relation = match &self.actor.who {
            Who::Anonymous => Relation::Stranger,
            Who::System | Who::Client { platform: true, .. } => Relation::Full,
            Who::Client { platform: false, .. } => Relation::Producer,
            Who::Citizen { cf, patient: own } => {
                let is_own = own.as_deref().is_some_and(|o| PatientKey::for_patient_id(o) == key)
                    || patient.as_ref().is_some_and(|p| has_cf(p, cf.as_str()));
                if is_own {
                    Relation::Own
                } else {
                    let now = datetime::now_ms();
                    let rps = lookup_values(store, Some(key), "RelatedPerson", &[("identifier", &format!("{CF_SYSTEM}|{cf}"))], 20).await?;
                    // a parent of a minor first, then an active delegation, then whatever refuses
                    let mut found: Vec<Relation> = rps.iter().filter_map(|rp| relation_through(rp, patient.as_ref(), now)).collect();
                    found.sort_by_key(|r| match r {
                        Relation::Parent { minor: true, .. } => 0,
                        Relation::Delegate { active: true, .. } => 1,
                        _ => 2,
                    });
                    found.into_iter().next().unwrap_or(Relation::Stranger)
                }
            }
            Who::Professional { role, practitioner, organization } => {
                if !role.clinical() {
                    Relation::Operator(*role)
                } else {
                    let (consent, care) = tokio::join!(
                        self.consent_in_force(key),
                        self.care_relation(key, patient.as_ref(), practitioner, organization.as_deref())
                    );
                    let (consent, care) = (consent?, care?);
                    let emergency = if consent && care { false } else { self.break_glass_active(key, practitioner).await? };
                    Relation::Clinician { consent, care, emergency }
                }
            }
        };
        Ok(access)
    }

    /// The latest consent-to-consultation record, in force for the current notice version.
    pub async fn consent_in_force(&self, key: PatientKey) -> AppResult<bool> {
        let latest = lookup_values(
            self.store,
            Some(key),
            "Consent",
            &[("category", &format!("{CONSENT_CATEGORY}|consultation")), ("_sort", "-date,-_lastUpdated")],
            1,
        )
        .await?;
        let record = latest.first().map(|c| privacy::ConsentRecord {
            notice_version: c["policy"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|p| p["uri"].as_str().and_then(|u| u.strip_prefix(NOTICE_PREFIX)).and_then(|n| n.parse().ok()))
                .unwrap_or(0),
            given: c["status"] == "active" && c["provision"]["type"] == "permit",
        });
        Ok(privacy::consent_in_force(record, self.policy.notice_version))
    }

    /// GP or pediatrician of the patient; or a professional (or their structure) with an open
    /// encounter, a booked appointment or an active care team for the patient.
    async fn care_relation(&self, key: PatientKey, patient: Option<&Value>, practitioner: &str, org: Option<&str>) -> AppResult<bool> {
        let me = format!("Practitioner/{practitioner}");
        let my_org = org.map(|o| format!("Organization/{o}"));
        if let Some(p) = patient {
            let gps = p["generalPractitioner"].as_array().into_iter().flatten().filter_map(|r| r["reference"].as_str());
            if gps.into_iter().any(|r| r == me) {
                return Ok(true);
            }
        }
        let open_encounter = "planned,arrived,triaged,in-progress,onleave";
        if !lookup_values(self.store, Some(key), "Encounter", &[("status", open_encounter), ("participant", &me)], 1).await?.is_empty() {
            return Ok(true);
        }
        if let Some(o) = &my_org {
            if !lookup_values(self.store, Some(key), "Encounter", &[("status", open_encounter), ("service-provider", o)], 1)
                .await?
                .is_empty()
            {
                return Ok(true);
            }
        }
        if !lookup_values(
            self.store,
            Some(key),
            "Appointment",
            &[("status", "proposed,pending,booked,arrived,checked-in"), ("actor", &me)],
            1,
        )
        .await?
        .is_empty()
        {
            return Ok(true);
        }
        if !lookup_values(self.store, Some(key), "CareTeam", &[("status", "proposed,active"), ("participant", &me)], 1).await?.is_empty() {
            return Ok(true);
        }
        Ok(false)
    }

    /// An emergency access opened by this practitioner that has not ended.
    async fn break_glass_active(&self, key: PatientKey, practitioner: &str) -> AppResult<bool> {
        let now = datetime::now_ms();
        let since_ms = now - self.policy.break_glass_minutes.max(1) * 60_000 - 60_000;
        let q = AccessQuery {
            patient: Some(key),
            from: Some(since_ms),
            agents: vec![format!("Practitioner/{practitioner}")],
            flags: LOG_BREAK_GLASS,
            limit: 20,
            ..Default::default()
        };
        let mut found = Vec::new();
        for e in self.store.access_log(&q).await? {
            found.push(audit_resource(&e)?);
        }
        Ok(found.iter().filter_map(break_glass_of).any(|b| b.active(at_ms(now))))
    }

    /// May the actor see this stored resource? Shared resources: any signed-in actor whose
    /// scopes allow reading the type. Records the compartment as touched when it is seen.
    pub async fn admit(&mut self, s: &Stored) -> AppResult<bool> {
        if s.patient_key.is_shared() {
            self.require_identity()?;
            return Ok(self.actor.scope_permits(&s.resource_type, Op::Read));
        }
        let a = self.access(s.patient_key).await?;
        // most resources carry no platform label: no need to parse them to know
        if !s.json.contains("urn:fascicolo:") {
            return Ok(a.admits(self.actor, &s.resource_type, &Value::Null));
        }
        // the rule reads only `meta` (labels): skip the rest of the resource while parsing
        let v: MetaOnly = match serde_json::from_str(&s.json) {
            Ok(v) => v,
            Err(_) => return Ok(false),
        };
        Ok(a.admits(self.actor, &s.resource_type, &serde_json::json!({"meta": v.meta})))
    }

    /// Check a write of `resource_type` into partition `key` (shared or a patient's).
    pub async fn check_write(&mut self, key: PatientKey, resource_type: &str, op: Op, current: Option<&Stored>) -> AppResult<Arc<Access>> {
        self.require_identity()?;
        if resource_type == "AuditEvent" {
            return Err(AppError::Forbidden("the access log is written by the server only".into()));
        }
        if key.is_shared() {
            if !self.actor.scope_permits(resource_type, op) || !shared_writable(self.actor, resource_type) {
                return Err(AppError::Forbidden(format!("your role may not write {resource_type}")));
            }
            return Ok(Arc::new(Access { key, patient_id: None, relation: Relation::Full }));
        }
        let a = self.access(key).await?;
        a.check_type(self.actor, resource_type, op)?;
        if let Some(cur) = current.filter(|c| !c.deleted) {
            let v: Value = serde_json::from_str(&cur.json).unwrap_or(Value::Null);
            if !a.admits(self.actor, resource_type, &v) && !matches!(a.relation, Relation::Full) {
                // never reveal that a hidden item exists
                return Err(AppError::NotFound(format!("{resource_type}/{} is not known", cur.id)));
            }
            let mine = producers_of(&v).iter().any(|c| self.actor.own_codes().contains(c));
            let may_change = match &a.relation {
                Relation::Full => true,
                Relation::Operator(_) => true,
                Relation::Own | Relation::Parent { .. } | Relation::Clinician { .. } | Relation::Producer => mine,
                _ => false,
            };
            if !may_change {
                return Err(AppError::Forbidden(format!("only who produced {resource_type}/{} may change it", cur.id)));
            }
        }
        Ok(a)
    }

    /// A Patient is being registered in this partition: its id names the record from now on.
    pub fn registering(&mut self, access: Arc<Access>, patient_id: &str) -> Arc<Access> {
        if access.patient_id.is_some() {
            return access;
        }
        let a = Arc::new(Access { patient_id: Some(patient_id.to_string()), ..(*access).clone() });
        self.cache.insert(a.key, Arc::clone(&a));
        a
    }

    /// A document was published for a citizen: they are told (when it is not hidden from them,
    /// they did not write it themselves, and it is not the console loading data).
    pub fn published(&mut self, access: &Access, document: &str, resource: &Value) {
        let closed_to_patient = restrict_bits(resource) & bit(labels::NOT_PATIENT) != 0;
        // the console loads data (imports, seeding): not a publication to announce
        let console = matches!(self.actor.who, Who::System);
        if console || access.key.is_shared() || closed_to_patient || matches!(access.relation, Relation::Own | Relation::Parent { .. }) {
            return;
        }
        self.new_documents.push((access.key, document.to_string()));
    }

    /// Record an access for the audit log (when the relation is audited).
    pub fn record(&mut self, access: &Arc<Access>, interaction: &'static str, entities: Vec<String>, query: Option<String>) {
        // no log for a record that does not exist (e.g. a search for an unknown identifier)
        if access.key.is_shared() || !access.audited(self.actor) || access.patient_id.is_none() {
            return;
        }
        // one AuditEvent per record touched by one request
        if let Some(r) = self.records.iter_mut().find(|r| r.access.key == access.key) {
            if r.query.is_none() {
                r.query = query;
            }
            for e in entities {
                if !r.entities.contains(&e) {
                    r.entities.push(e);
                }
            }
            return;
        }
        self.records.push(AccessRecord { access: Arc::clone(access), interaction, entities, query });
    }

    /// Record that a stored resource was returned.
    pub async fn record_seen(&mut self, s: &Stored, interaction: &'static str) -> AppResult<()> {
        if s.patient_key.is_shared() {
            return Ok(());
        }
        let a = self.access(s.patient_key).await?;
        self.record(&a, interaction, vec![format!("{}/{}", s.resource_type, s.id)], None);
        Ok(())
    }

    /// The access-log entries (and access notifications) of everything recorded, to commit with
    /// the access itself.
    pub fn audit_writes(&self, now: i64) -> AppResult<(Vec<AccessEntry>, Vec<OutboxMessage>)> {
        let mut entries = Vec::with_capacity(self.records.len());
        let mut outbox = Vec::new();
        for r in &self.records {
            let (e, notify) = audit_event(self.actor, r, now, None)?;
            if notify {
                outbox.push(access_notification(&e, r.access.emergency(), now));
            }
            entries.push(e);
        }
        for (key, doc) in &self.new_documents {
            outbox.push(OutboxMessage {
                id: uuid::Uuid::now_v7(),
                patient_key: *key,
                kind: "notify.new-document".into(),
                payload: json!({"document": doc}).to_string(),
                available_at: now,
            });
        }
        Ok((entries, outbox))
    }

    /// Commit the recorded audit (for reads); nothing to do when nothing was recorded.
    pub async fn commit_audit(&self) -> AppResult<()> {
        if self.records.is_empty() && self.new_documents.is_empty() {
            return Ok(());
        }
        let (e, o) = self.audit_writes(datetime::now_ms())?;
        self.store.commit_all(Vec::new(), e, o).await?;
        Ok(())
    }
}

/// Access-log flags (the store filters on them): an emergency opening (break-glass)...
pub const LOG_BREAK_GLASS: i64 = 1;
/// ...an access under an emergency opening...
pub const LOG_EMERGENCY: i64 = 2;
/// ...an access by a parent or delegate on the patient's behalf.
pub const LOG_ON_BEHALF: i64 = 4;

/// `notify.access`: carries only the log entry's id and who accessed (no personal or clinical
/// data). Ordinary accesses by one agent to one record within an hour make one message: its id
/// is derived from the record, the agent and the hour, and the store keeps the first.
pub fn access_notification(entry: &AccessEntry, emergency: bool, now: i64) -> OutboxMessage {
    let id = if emergency {
        uuid::Uuid::now_v7()
    } else {
        let hour = now.div_euclid(3_600_000);
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("{}:{}:{hour}", entry.patient_key.uuid(), entry.agent).as_bytes());
        let mut rand = [0u8; 10];
        rand.copy_from_slice(&digest[..10]);
        uuid::Builder::from_unix_timestamp_millis(u64::try_from(hour * 3_600_000).unwrap_or(0), &rand).into_uuid()
    };
    OutboxMessage {
        id,
        patient_key: entry.patient_key,
        kind: "notify.access".into(),
        payload: json!({"audit": entry.id, "agent": entry.agent, "emergency": emergency}).to_string(),
        available_at: now,
    }
}

/// An access-log entry as stored: what the FHIR `AuditEvent` is built from when read.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Logged {
    /// The interaction (read, search-type, create, operation...).
    i: String,
    /// The purpose of use (v3-ActReason code).
    p: String,
    /// Agents: `[kind, code, who]` with kind `rp` (a related person: code parent or delegate),
    /// `pro` (a professional: code its role), `org` (their organisation), `cli` (a client: who
    /// its id), `fas` (the platform itself).
    a: Vec<[String; 3]>,
    /// The patient's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pt: Option<String>,
    /// What was touched (`Type/id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    e: Vec<String>,
    /// The query of a search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    /// An emergency opening: its period (ms) and reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per: Option<(i64, i64, String)>,
}

/// A new access-log id: the record's key and a time-ordered UUID, 64 hex digits (a valid FHIR
/// id), so a read by id finds the record without a lookup.
fn log_id(key: PatientKey) -> String {
    format!("{}{}", key.uuid().simple(), uuid::Uuid::now_v7().simple())
}

/// The record an access-log id names (ids of this scheme; older ones are found by the store).
pub fn log_record(id: &str) -> Option<PatientKey> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    uuid::Uuid::parse_str(id.get(..32)?).ok().map(PatientKey::from_uuid)
}

/// One access-log entry for one access; returns whether the citizen is notified.
/// `period` makes it an emergency opening (break-glass).
pub fn audit_event(actor: &Actor, r: &AccessRecord, now: i64, period: Option<(i64, i64, &str)>) -> AppResult<(AccessEntry, bool)> {
    let emergency = r.access.emergency() || period.is_some();
    let (purpose, on_behalf) = match &r.access.relation {
        Relation::Clinician { .. } if emergency => ("ETREAT", false),
        Relation::Clinician { .. } => ("TREAT", false),
        Relation::Operator(_) => ("HOPERAT", false),
        Relation::Parent { .. } | Relation::Delegate { .. } => ("PATADMIN", true),
        _ => ("HSYSADMIN", false),
    };
    let a3 = |k: &str, c: &str, w: String| [k.to_string(), c.to_string(), w];
    let mut agents = Vec::new();
    match (&actor.who, &r.access.relation) {
        (_, Relation::Parent { rp, .. } | Relation::Delegate { rp, .. }) => {
            let code = if matches!(r.access.relation, Relation::Parent { .. }) { "parent" } else { "delegate" };
            agents.push(a3("rp", code, format!("RelatedPerson/{rp}")));
        }
        (Who::Professional { practitioner, organization, role }, _) => {
            agents.push(a3("pro", role.code(), format!("Practitioner/{practitioner}")));
            if let Some(o) = organization {
                agents.push(a3("org", "PROV", format!("Organization/{o}")));
            }
        }
        (Who::Client { client_id, organization, .. }, _) => {
            agents.push(a3("cli", "system", client_id.clone()));
            if let Some(o) = organization {
                agents.push(a3("org", "PROV", format!("Organization/{o}")));
            }
        }
        _ => agents.push(a3("fas", "", String::new())),
    }
    let agent = match agents.first() {
        Some([k, _, w]) if k == "cli" => format!("urn:fascicolo:client|{w}"),
        Some([_, _, w]) => w.clone(),
        None => String::new(),
    };
    let mut flags = 0;
    if period.is_some() {
        flags |= LOG_BREAK_GLASS;
    } else if emergency {
        flags |= LOG_EMERGENCY;
    }
    if on_behalf {
        flags |= LOG_ON_BEHALF;
    }
    let logged = Logged {
        i: r.interaction.to_string(),
        p: purpose.to_string(),
        a: agents,
        pt: r.access.patient_id.clone(),
        e: r.entities.clone(),
        q: r.query.clone(),
        per: period.map(|(s, e, why)| (s, e, why.to_string())),
    };
    let content = serde_json::to_string(&logged).map_err(|e| AppError::Internal(format!("an access-log entry: {e}")))?;
    let entry = AccessEntry {
        // the entry lives in the patient's partition (a record whose Patient was deleted
        // still gets its log entry there)
        patient_key: r.access.key,
        recorded: now,
        id: log_id(r.access.key),
        agent,
        flags,
        content,
        changes_facts: period.is_some(),
    };
    let notify = !on_behalf && !matches!(actor.who, Who::System);
    Ok((entry, notify))
}

/// The FHIR `AuditEvent` (IHE BALP style) of an access-log entry, as stored: what the API,
/// the portal and the notifications read. Entries moved from an older schema are AuditEvents
/// already.
pub fn audit_resource(e: &AccessEntry) -> AppResult<Value> {
    if e.content.contains("\"resourceType\"") {
        return serde_json::from_str(&e.content).map_err(|err| AppError::Internal(format!("access-log entry {}: {err}", e.id)));
    }
    let l: Logged = serde_json::from_str(&e.content).map_err(|err| AppError::Internal(format!("access-log entry {}: {err}", e.id)))?;
    let (action, restful) = match l.i.as_str() {
        "create" => ("C", "create"),
        "update" | "patch" => ("U", l.i.as_str()),
        "delete" => ("D", "delete"),
        "search-type" | "search-system" | "history-instance" | "history-type" | "everything" => ("E", l.i.as_str()),
        "operation" | "export" => ("E", "operation"),
        other => ("R", other),
    };
    let role_class = "http://terminology.hl7.org/CodeSystem/v3-RoleClass";
    let agents: Vec<Value> = l
        .a
        .iter()
        .map(|[kind, code, who]| match kind.as_str() {
            "rp" => json!({"type": {"coding": [{"system": RELATIONSHIP_SYSTEM, "code": code}]}, "who": {"reference": who}, "requestor": true}),
            "pro" => json!({"type": {"coding": [{"system": crate::gate::ROLE_SYSTEM, "code": code}]}, "who": {"reference": who}, "requestor": true}),
            "org" => json!({"type": {"coding": [{"system": role_class, "code": code}]}, "who": {"reference": who}, "requestor": false}),
            "cli" => json!({"type": {"coding": [{"system": crate::gate::ROLE_SYSTEM, "code": "system"}]},
                "who": {"identifier": {"system": "urn:fascicolo:client", "value": who}}, "requestor": true}),
            _ => json!({"who": {"display": "Fascicolo"}, "requestor": true}),
        })
        .collect();
    let mut subtype = vec![json!({"system": "http://hl7.org/fhir/restful-interaction", "code": restful})];
    if e.flags & LOG_BREAK_GLASS != 0 {
        subtype.push(json!({"system": ACCESS_SYSTEM, "code": "break-glass"}));
    } else if e.flags & LOG_EMERGENCY != 0 {
        subtype.push(json!({"system": ACCESS_SYSTEM, "code": "emergency"}));
    }
    if e.flags & LOG_ON_BEHALF != 0 {
        subtype.push(json!({"system": ACCESS_SYSTEM, "code": "on-behalf"}));
    }
    if l.i == "export" {
        subtype.push(json!({"system": ACCESS_SYSTEM, "code": "bulk-export"}));
    }
    let patient_ref = l.pt.as_ref().map(|p| format!("Patient/{p}"));
    let mut entities = Vec::new();
    if let Some(p) = &patient_ref {
        entities.push(json!({"what": {"reference": p},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}}));
    }
    for x in &l.e {
        if Some(x) != patient_ref.as_ref() {
            entities.push(json!({"what": {"reference": x},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"}}));
        }
    }
    if let Some(q) = &l.q {
        use base64::Engine as _;
        entities.push(json!({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24"},
            "query": base64::engine::general_purpose::STANDARD.encode(q)}));
    }
    let recorded = datetime::format_instant(e.recorded);
    let mut ev = json!({"resourceType": "AuditEvent", "id": e.id, "meta": {"versionId": "1", "lastUpdated": recorded},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": subtype, "action": action, "recorded": recorded, "outcome": "0",
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": l.p}]}],
        "agent": agents,
        "source": {"observer": {"display": "Fascicolo"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "entity": entities});
    if let Some((start, end, reason)) = &l.per {
        ev["period"] = json!({"start": datetime::format_instant(*start), "end": datetime::format_instant(*end)});
        ev["purposeOfEvent"][0]["text"] = Value::String(reason.clone());
    }
    Ok(ev)
}

/// An access-log entry as the stored resource the gate and the API handle.
pub fn audit_stored(e: &AccessEntry) -> AppResult<Stored> {
    Ok(stored_entry(e, &audit_resource(e)?))
}

/// An entry with its AuditEvent (built already) as a stored resource.
pub fn stored_entry(e: &AccessEntry, ev: &Value) -> Stored {
    Stored {
        patient_key: e.patient_key,
        resource_type: "AuditEvent".into(),
        id: e.id.clone(),
        version: 1,
        last_updated: e.recorded,
        deleted: false,
        json: ev.to_string(),
        method: Method::Create,
    }
}

/// Derive the privacy labels of a resource about to be written: strip what only the platform
/// may set, carry the hiding and art. 6 release of the current version (only the dedicated
/// operations change them), tag the producer, recompute the visibility codes.
pub fn label_resource(v: &mut Value, current: Option<&Value>, actor: &Actor, may_set_hiding: bool) {
    let meta = match v.get_mut("meta") {
        Some(Value::Object(m)) => m,
        _ => {
            if let Some(o) = v.as_object_mut() {
                o.insert("meta".into(), Value::Object(Map::new()));
            }
            match v.get_mut("meta") {
                Some(Value::Object(m)) => m,
                _ => return,
            }
        }
    };
    let keep_from = |arr: Option<&Value>, systems: &[&str]| -> Vec<Value> {
        arr.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c["system"].as_str().is_some_and(|s| systems.contains(&s)))
            .cloned()
            .collect()
    };
    let drop_systems = |arr: Option<&Value>, systems: &[&str]| -> Vec<Value> {
        arr.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| !c["system"].as_str().is_some_and(|s| systems.contains(&s)))
            .cloned()
            .collect()
    };
    let cur_meta = current.map(|c| &c["meta"]);
    // security: keep the client's own labels, but the platform decides hiding and visibility
    let mut security = drop_systems(meta.get("security"), &[labels::VISIBILITY, labels::HIDING]);
    if may_set_hiding && current.is_none() {
        security.extend(keep_from(meta.get("security"), &[labels::HIDING]));
    } else {
        security.extend(keep_from(cur_meta.and_then(|m| m.get("security")), &[labels::HIDING]));
    }
    let mut tags = drop_systems(meta.get("tag"), &[labels::PRODUCER, labels::ART6_CONSENT]);
    tags.extend(keep_from(cur_meta.and_then(|m| m.get("tag")), &[labels::ART6_CONSENT]));
    let producer = keep_from(cur_meta.and_then(|m| m.get("tag")), &[labels::PRODUCER]);
    if producer.is_empty() {
        if let Some(code) = actor.producer_code() {
            tags.push(json!({"system": labels::PRODUCER, "code": code}));
        }
    } else {
        tags.extend(producer);
    }
    apply_visibility(&mut security, &tags);
    set_or_remove(meta, "security", security);
    set_or_remove(meta, "tag", tags);
}

fn set_or_remove(meta: &mut Map<String, Value>, key: &str, list: Vec<Value>) {
    if list.is_empty() {
        meta.shift_remove(key);
    } else {
        meta.insert(key.into(), Value::Array(list));
    }
}

/// Recompute the `labels::VISIBILITY` codes from hiding, art. 6 and its release.
pub fn apply_visibility(security: &mut Vec<Value>, tags: &[Value]) {
    security.retain(|c| c["system"] != labels::VISIBILITY);
    let hiding = Hiding::from_codes(security.iter().filter(|c| c["system"] == labels::HIDING).filter_map(|c| c["code"].as_str()));
    let art6 = security.iter().filter(|c| c["system"] == labels::ART6).find_map(|c| c["code"].as_str().and_then(Art6Category::parse));
    let released = tags.iter().any(|t| t["system"] == labels::ART6_CONSENT && t["code"] == "released");
    let closed = Closed::of(DocumentFacts { hiding, art6, art6_released: released });
    for code in closed.codes() {
        security.push(json!({"system": labels::VISIBILITY, "code": code}));
    }
}

/// Rebuild a write's JSON, index and restriction bits after its resource changed.
pub fn refresh_write(w: &mut Write, v: &Value) -> AppResult<()> {
    w.json = serde_json::to_string(v).map_err(|e| AppError::BadRequest(e.to_string()))?;
    w.index = index_resource(v);
    w.restrict = restrict_bits(v);
    Ok(())
}

/// Remove what a viewer must not learn from a resource they may see: the hiding and
/// visibility labels (they tell who else it is hidden from).
pub fn redact(v: &mut Value, relation: &Relation) {
    if matches!(relation, Relation::Own | Relation::Full) {
        return;
    }
    if let Some(Value::Array(sec)) = v.get_mut("meta").and_then(|m| m.get_mut("security")) {
        sec.retain(|c| c["system"] != labels::VISIBILITY && c["system"] != labels::HIDING);
        if sec.is_empty() {
            if let Some(m) = v.get_mut("meta").and_then(Value::as_object_mut) {
                m.shift_remove("security");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(active: bool, start: &str, end: &str) -> Value {
        json!({"resourceType": "RelatedPerson", "active": active, "period": {"start": start, "end": end},
            "relationship": [{"coding": [{"system": RELATIONSHIP_SYSTEM, "code": "delegate"}]}],
            "extension": [{"url": DELEGATION_SCOPE_EXT, "valueCode": "Immunization"}]})
    }

    #[test]
    fn a_delegation_is_read_by_the_domain_rule() {
        let now = datetime::parse("2026-12-06T10:00:00Z").map(|(r, _)| r.low).unwrap_or_default();
        assert!(delegation_active(&rp(true, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"), now));
        assert!(!delegation_active(&rp(false, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"), now), "revoked");
        assert!(!delegation_active(&rp(true, "2026-01-01T00:00:00Z", "2026-12-06T09:59:59Z"), now), "ended");
        assert!(!delegation_active(&rp(true, "2026-12-07", "2027-01-01"), now), "not begun");
        // an end given as a date lasts to the end of that day
        assert!(delegation_active(&rp(true, "2026-01-01", "2026-12-06"), now));
        let d = delegation_of(&rp(true, "2026-01-01", "2027-01-01"));
        assert!(d.covers("Immunization") && !d.covers("DocumentReference"));
        // no period: open on both sides
        let open = json!({"active": true, "relationship": [{"coding": [{"system": RELATIONSHIP_SYSTEM, "code": "delegate"}]}]});
        assert!(delegation_active(&open, now));
    }

    #[test]
    fn a_break_glass_needs_its_period_and_a_reason() {
        let now = at_ms(datetime::parse("2026-12-06T10:00:00Z").map(|(r, _)| r.low).unwrap_or_default());
        let ev = |reason: &str, end: &str| json!({"period": {"start": "2026-12-06T09:30:00Z", "end": end}, "purposeOfEvent": [{"text": reason}]});
        assert!(break_glass_of(&ev("paziente incosciente in PS", "2026-12-06T10:30:00Z")).is_some_and(|b| b.active(now)));
        assert!(!break_glass_of(&ev("paziente incosciente in PS", "2026-12-06T09:59:00Z")).is_some_and(|b| b.active(now)), "over");
        assert!(!break_glass_of(&ev("  ", "2026-12-06T10:30:00Z")).is_some_and(|b| b.active(now)), "no reason, no emergency");
        assert!(break_glass_of(&json!({"purposeOfEvent": [{"text": "x"}]})).is_none(), "no period");
    }
}
