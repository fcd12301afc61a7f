//! Emergency rooms live: the registry of the region's emergency departments, the event feed from
//! the hospitals' systems, and the live picture per emergency room.
//!
//! Each access is one FHIR `Encounter` (class `EMER`) in the patient's record (or, for a person
//! not identified, outside every record), written through the gate by the hospital's own client,
//! with the triage as an `Observation` per evaluation, in the codes the ER report (VPS) uses, so
//! the live board and the later report agree. The events an access has received are kept on the
//! Encounter (extension [`EVENT_EXT`]); a new event is merged into that set
//! ([`fascicolo_domain::er::Visit::apply`]), so late, repeated and out-of-order events give the
//! same Encounter. The live picture is kept in memory, rebuilt from the store at start and
//! updated after each committed write; the public page and its feed read it without touching
//! the store.

use crate::gate::{Actor, Who};
use crate::{AppError, AppResult, FhirService};
use fascicolo_domain::er::{Applied, Decision, Details, ErKind, Event, Picture, Step, Triage, Visit};
use fascicolo_domain::systems::CF_SYSTEM;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

mod emur;
pub use emur::EmurExport;

/// `Location.type` of an emergency department.
pub const ER_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
pub const ER_TYPE_CODE: &str = "ER";
/// `HealthcareService.type` and `Location` extension: the kind of emergency department.
pub const ER_KIND_SYSTEM: &str = "urn:fascicolo:er-kind";
/// `Location` extension: the number of treatment spaces.
pub const SPACES_EXT: &str = "urn:fascicolo:er-treatment-spaces";
/// Triage codes (CodiceTriage_VPS), as the ER report carries them.
pub const TRIAGE_SYSTEM: &str = "urn:oid:2.16.840.1.113883.2.9.6.1.54.4";
/// Outcome codes (EsitoTrattamento_VPS).
pub const OUTCOME_SYSTEM: &str = "urn:oid:2.16.840.1.113883.2.9.6.1.54.5";
/// `Encounter` extension: one event received (sub-extensions `kind`, `at`, `value`).
pub const EVENT_EXT: &str = "urn:fascicolo:er-event";
/// `Encounter.identifier.system` prefix: the hospital's own access number, per emergency room.
pub const ACCESS_SYSTEM_PREFIX: &str = "urn:fascicolo:er-access:";
/// A hospital that has sent nothing for this long is marked stale.
pub const STALE_AFTER: time::Duration = time::Duration::minutes(30);
/// The crowding formula, as the page and the feed state it.
pub const FORMULA_IT: &str = "Affollamento = presenti (in attesa, in trattamento, in osservazione, in attesa di ricovero) ÷ posti di trattamento × 100. \
    Meno di 70%: poco affollato; da 70% a meno di 100%: mediamente affollato; da 100% a meno di 150%: affollato; 150% e oltre: sovraffollato.";
pub const FORMULA_EN: &str =
    "Crowding = people present (waiting, in treatment, in observation, waiting for a bed) ÷ treatment spaces × 100. \
    Under 70%: not crowded; 70% to under 100%: moderately crowded; 100% to under 150%: crowded; 150% and over: overcrowded.";

/// One emergency department of the registry.
#[derive(Debug, Clone)]
pub struct Er {
    /// Its `Location` id.
    pub id: String,
    pub name: String,
    /// The hospital (`Organization` id) it belongs to, and that hospital's ASST.
    pub hospital: String,
    pub asst: Option<String>,
    pub kind: ErKind,
    pub spaces: u32,
    pub lat: f64,
    pub lon: f64,
    pub town: String,
    pub province: String,
}

/// The `Organization` id that manages a `Location`.
fn hospital_of(loc: &Value) -> Option<&str> {
    loc["managingOrganization"]["reference"].as_str().and_then(|r| r.strip_prefix("Organization/"))
}

impl Er {
    /// Read an emergency department from its `Location` (None: not one).
    pub fn from_location(loc: &Value, asst: Option<String>) -> Option<Er> {
        let is_er = loc["type"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["coding"].as_array().into_iter().flatten())
            .any(|c| c["system"] == ER_TYPE_SYSTEM && c["code"] == ER_TYPE_CODE);
        if !is_er {
            return None;
        }
        let ext = |url: &str| loc["extension"].as_array().into_iter().flatten().find(|e| e["url"] == url).cloned();
        let kind = ext(ER_KIND_SYSTEM).and_then(|e| e["valueCode"].as_str().and_then(ErKind::parse)).unwrap_or(ErKind::Ps);
        let spaces = ext(SPACES_EXT).and_then(|e| e["valueUnsignedInt"].as_u64()).and_then(|n| u32::try_from(n).ok()).unwrap_or(10);
        Some(Er {
            id: loc["id"].as_str()?.to_string(),
            name: loc["name"].as_str().unwrap_or_default().to_string(),
            hospital: hospital_of(loc)?.to_string(),
            asst,
            kind,
            spaces,
            lat: loc["position"]["latitude"].as_f64().unwrap_or_default(),
            lon: loc["position"]["longitude"].as_f64().unwrap_or_default(),
            town: loc["address"]["city"].as_str().unwrap_or_default().to_string(),
            province: loc["address"]["district"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// Kilometres from a point (equirectangular; plenty at a region's scale).
    pub fn distance_km(&self, lat: f64, lon: f64) -> f64 {
        fascicolo_domain::booking::distance_km((self.lat, self.lon), (lat, lon))
    }
}

/// One event as a hospital sends it.
#[derive(Debug, Clone)]
pub struct EventIn {
    /// The emergency department (`Location` id).
    pub er: String,
    /// The hospital's own number for the access.
    pub access: String,
    /// The patient's codice fiscale, when identified.
    pub patient: Option<String>,
    pub event: Event,
    /// What the event says for the national flow (any event may carry it).
    pub details: Details,
}

fn bad(msg: impl Into<String>) -> AppError {
    AppError::BadRequest(msg.into())
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// An instant as the store writes them (`fascicolo_fhir::datetime::format_instant`).
fn iso(t: OffsetDateTime) -> String {
    let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    fascicolo_fhir::datetime::format_instant(ms)
}

impl EventIn {
    /// Read an event: `{"emergencyRoom", "access", "patient"?, "event": arrival|triage|take-over|
    /// decision|exit, "at": RFC 3339 with offset, "triage": 1–5, "decision": admission|discharge|
    /// transfer|observation, "outcome": 1–9}`. Every problem is named.
    pub fn from_json(v: &Value) -> AppResult<EventIn> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        let er = text("emergencyRoom").ok_or_else(|| bad("'emergencyRoom' (the emergency department's Location id) is required"))?;
        let access = text("access").ok_or_else(|| bad("'access' (the hospital's own number for the access) is required"))?;
        if access.len() > 64 || !access.chars().all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c)) {
            return Err(bad("'access' must be up to 64 letters, digits, '-', '.', '_' or '/'"));
        }
        let patient = match v.get("patient") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                fascicolo_domain::CodiceFiscale::parse(s)
                    .map_err(|e| bad(format!("'patient' is not a valid codice fiscale: {e}")))?
                    .as_str()
                    .to_string(),
            ),
            Some(_) => return Err(bad("'patient' must be a codice fiscale, or left out for a person not identified")),
        };
        let at_s = text("at").ok_or_else(|| bad("'at' (when it happened, e.g. 2026-12-07T10:15:00+01:00) is required"))?;
        let at = parse_time(at_s).ok_or_else(|| bad(format!("'at' is not a date and time with its offset (RFC 3339): '{at_s}'")))?;
        if at > OffsetDateTime::now_utc() + time::Duration::minutes(5) {
            return Err(bad("'at' is in the future"));
        }
        let kind = text("event").ok_or_else(|| bad("'event' is required: arrival, triage, take-over, decision or exit"))?;
        let num = |k: &str| v.get(k).and_then(Value::as_u64);
        let step = match kind {
            "arrival" => Step::Arrival,
            "triage" => {
                let code = num("triage").ok_or_else(|| bad("a triage event needs 'triage': the code 1 to 5"))?;
                Step::Triage(
                    u8::try_from(code)
                        .ok()
                        .and_then(Triage::parse)
                        .ok_or_else(|| bad(format!("triage code {code} is not one of the national codes 1 (red) to 5 (white)")))?,
                )
            }
            "take-over" => Step::TakeOver,
            "decision" => {
                let d = text("decision")
                    .ok_or_else(|| bad("a decision event needs 'decision': admission, discharge, transfer or observation"))?;
                Step::Decision(
                    Decision::parse(d)
                        .ok_or_else(|| bad(format!("decision '{d}' is not one of admission, discharge, transfer, observation")))?,
                )
            }
            "exit" => {
                let o = num("outcome").ok_or_else(|| bad("an exit event needs 'outcome': the national outcome code 1 to 9"))?;
                match u8::try_from(o).ok().filter(|o| fascicolo_domain::er::outcome(*o).is_some()) {
                    Some(o) => Step::Exit(o),
                    None => return Err(bad(format!("outcome {o} is not one of the national outcome codes 1 to 9"))),
                }
            }
            other => return Err(bad(format!("event '{other}' is not one of arrival, triage, take-over, decision, exit"))),
        };
        let details = details_from_json(v)?;
        Ok(EventIn { er: er.to_string(), access: access.to_string(), patient, event: Event { step, at }, details })
    }
}

/// The fields of the national flow an event may carry: `arrivalMode` (1–7, 9), `sentBy`
/// (1–7, 9), `mainProblem` (1–31), `diagnoses` (ICD-9-CM, main first, up to 5) and `services`
/// (catalogue codes, main first, up to 5).
fn details_from_json(v: &Value) -> AppResult<Details> {
    let code = |k: &str, ok: &dyn Fn(u8) -> bool, what: &str| -> AppResult<Option<u8>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .filter(|n| ok(*n))
                .map(Some)
                .ok_or_else(|| bad(format!("'{k}' must be {what}"))),
        }
    };
    let list = |k: &str, parse: &dyn Fn(&str) -> Option<String>, what: &str| -> AppResult<Vec<String>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) if a.len() <= 5 => {
                a.iter().map(|x| x.as_str().and_then(parse).ok_or_else(|| bad(format!("'{k}' holds '{x}', which is not {what}")))).collect()
            }
            Some(_) => Err(bad(format!("'{k}' must be a list of at most 5 codes ({what}), the main one first"))),
        }
    };
    Ok(Details {
        arrival_mode: code("arrivalMode", &fascicolo_domain::er::emur_code_1_7_9, "the national arrival-mode code: 1 to 7 or 9")?,
        sent_by: code("sentBy", &fascicolo_domain::er::emur_code_1_7_9, "the national code of who sent the patient: 1 to 7 or 9")?,
        main_problem: code("mainProblem", &|n| (1..=31).contains(&n), "the national main-problem code: 1 to 31")?,
        diagnoses: list("diagnoses", &fascicolo_domain::er::icd9, "an ICD-9-CM code (e.g. 786.50)")?,
        services: list("services", &fascicolo_domain::er::service_code, "a code of the outpatient catalogue (e.g. 89.7)")?,
        age_class: code("ageClass", &|n| n <= 6, "the national class of presumed age: 0 to 6")?,
        admission: match v.get("admission") {
            None | Some(Value::Null) => None,
            Some(a) => {
                let number = a["number"].as_str().map(str::trim).filter(|n| n.len() == 8 && n.chars().all(|c| c.is_ascii_alphanumeric()));
                let ward = a["ward"].as_str().map(str::trim).filter(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_digit()));
                match (number, ward) {
                    (Some(n), Some(w)) => Some((n.to_string(), w.to_string())),
                    _ => return Err(bad("'admission' must be {\"number\": the admission's 8-character number, \"ward\": the ward's 2-digit speciality code}")),
                }
            }
        },
        transfer: match v.get("transfer") {
            None | Some(Value::Null) => None,
            Some(t) => {
                let hospital = t["hospital"]
                    .as_str()
                    .map(str::trim)
                    .filter(|h| (1..=8).contains(&h.len()) && h.chars().all(|c| c.is_ascii_alphanumeric()));
                let reason = t["reason"].as_u64().filter(|r| (1..=3).contains(r)).and_then(|r| u8::try_from(r).ok());
                match (hospital, reason) {
                    (Some(h), Some(r)) => Some((h.to_string(), r)),
                    _ => {
                        return Err(bad(
                            "'transfer' must be {\"hospital\": the receiving hospital's code (up to 8 characters), \"reason\": 1 to 3}",
                        ))
                    }
                }
            }
        },
    })
}

/// The extension that keeps an access's details for the national flow.
pub const DETAILS_EXT: &str = "urn:fascicolo:er-details";

fn details_ext(d: &Details) -> Option<Value> {
    if d.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for (name, v) in [("arrivalMode", d.arrival_mode), ("sentBy", d.sent_by), ("mainProblem", d.main_problem), ("ageClass", d.age_class)] {
        if let Some(v) = v {
            parts.push(json!({"url": name, "valueCode": v.to_string()}));
        }
    }
    for c in &d.diagnoses {
        parts.push(json!({"url": "diagnosis", "valueCoding": {"system": ICD9_SYSTEM, "code": c}}));
    }
    for c in &d.services {
        parts.push(json!({"url": "service", "valueCoding": {"system": SERVICE_SYSTEM, "code": c}}));
    }
    if let Some((number, ward)) = &d.admission {
        parts.push(json!({"url": "admissionNumber", "valueString": number}));
        parts.push(json!({"url": "admissionWard", "valueCode": ward}));
    }
    if let Some((hospital, reason)) = &d.transfer {
        parts.push(json!({"url": "transferTo", "valueString": hospital}));
        parts.push(json!({"url": "transferReason", "valueCode": reason.to_string()}));
    }
    Some(json!({"url": DETAILS_EXT, "extension": parts}))
}

/// The details kept on a stored Encounter.
pub fn details_of(enc: &Value) -> Details {
    let mut d = Details::default();
    let (mut adm_n, mut adm_w, mut tr_h, mut tr_r) = (None, None, None, None);
    for x in enc["extension"].as_array().into_iter().flatten().filter(|x| x["url"] == DETAILS_EXT) {
        for p in x["extension"].as_array().into_iter().flatten() {
            let code = p["valueCode"].as_str().and_then(|c| c.parse::<u8>().ok());
            let coding = p["valueCoding"]["code"].as_str().map(String::from);
            match p["url"].as_str() {
                Some("arrivalMode") => d.arrival_mode = code,
                Some("sentBy") => d.sent_by = code,
                Some("mainProblem") => d.main_problem = code,
                Some("diagnosis") => d.diagnoses.extend(coding),
                Some("service") => d.services.extend(coding),
                Some("ageClass") => d.age_class = code,
                Some("admissionNumber") => adm_n = p["valueString"].as_str().map(String::from),
                Some("admissionWard") => adm_w = p["valueCode"].as_str().map(String::from),
                Some("transferTo") => tr_h = p["valueString"].as_str().map(String::from),
                Some("transferReason") => tr_r = code,
                _ => {}
            }
        }
    }
    d.admission = adm_n.zip(adm_w);
    d.transfer = tr_h.zip(tr_r);
    d
}

/// ICD-9-CM as the Italian flows use it.
pub const ICD9_SYSTEM: &str = "http://hl7.org/fhir/sid/icd-9-cm";
/// The national catalogue of outpatient services (`CodesystemCatalogoNazionalePrestazioni`;
/// the catalogue publishes no canonical URL, so ours names it).
pub const SERVICE_SYSTEM: &str = "urn:fascicolo:catalogo-nazionale-prestazioni";

/// What an event did.
#[derive(Debug, Clone)]
pub struct EventOutcome {
    pub applied: Applied,
    pub encounter: String,
}

/// `meta.tag` of the record that holds an emergency room's accesses of people not identified.
pub const UNIDENTIFIED_TAG: &str = "urn:fascicolo:er";

/// The Patient id that holds an emergency room's accesses of people not identified.
pub fn unidentified_id(er: &str) -> String {
    format!("anon-{er}")
}

/// The stable id of an access's Encounter.
pub fn encounter_id(er: &str, access: &str) -> String {
    const NS: uuid::Uuid = uuid::Uuid::from_u128(0x2c1e_7d30_52b4_4f0e_9a11_e6f0_0000_0019);
    format!("er-{}", uuid::Uuid::new_v5(&NS, format!("{er}|{access}").as_bytes()))
}

fn event_ext(e: &Event) -> Value {
    let mut parts = vec![json!({"url": "kind", "valueCode": e.step.kind()}), json!({"url": "at", "valueDateTime": iso(e.at)})];
    let value = match &e.step {
        Step::Triage(t) => Some(t.code().to_string()),
        Step::Decision(d) => Some(d.code().to_string()),
        Step::Exit(o) => Some(o.to_string()),
        Step::Arrival | Step::TakeOver => None,
    };
    if let Some(v) = value {
        parts.push(json!({"url": "value", "valueCode": v}));
    }
    json!({"url": EVENT_EXT, "extension": parts})
}

/// The events kept on a stored Encounter.
pub fn visit_of(enc: &Value) -> Visit {
    let mut v = Visit::default();
    for x in enc["extension"].as_array().into_iter().flatten().filter(|x| x["url"] == EVENT_EXT) {
        let part = |name: &str| {
            x["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["url"] == name)
                .and_then(|p| p["valueCode"].as_str().or(p["valueDateTime"].as_str()))
                .map(String::from)
        };
        let (Some(kind), Some(at)) = (part("kind"), part("at").as_deref().and_then(parse_time)) else { continue };
        let value = part("value").unwrap_or_default();
        let step = match kind.as_str() {
            "arrival" => Step::Arrival,
            "triage" => match value.parse().ok().and_then(Triage::parse) {
                Some(t) => Step::Triage(t),
                None => continue,
            },
            "take-over" => Step::TakeOver,
            "decision" => match Decision::parse(&value) {
                Some(d) => Step::Decision(d),
                None => continue,
            },
            "exit" => match value.parse() {
                Ok(o) => Step::Exit(o),
                Err(_) => continue,
            },
            _ => continue,
        };
        let _ = v.apply(&Event { step, at });
    }
    v
}

/// The Encounter and triage Observations of a visit.
fn resources_of(id: &str, er: &Er, access: &str, subject: &str, v: &Visit, details: &Details) -> Vec<Value> {
    let status = match (v.exit.is_some(), v.take_over.is_some() || v.decision().is_some(), v.triage().is_some()) {
        (true, _, _) => "finished",
        (false, true, _) => "in-progress",
        (false, false, true) => "triaged",
        (false, false, false) => "arrived",
    };
    // the status history: each status from when it began to when the next began
    let mut marks: Vec<(&str, OffsetDateTime)> = Vec::new();
    marks.extend(v.arrival.map(|t| ("arrived", t)));
    marks.extend(v.triages.keys().next().map(|t| ("triaged", *t)));
    marks.extend(v.take_over.map(|t| ("in-progress", t)));
    marks.extend(v.exit.map(|e| ("finished", e.1)));
    marks.sort_by_key(|m| m.1);
    let history: Vec<Value> = marks
        .iter()
        .enumerate()
        .map(|(i, (s, t))| {
            let mut p = json!({"start": iso(*t)});
            if let Some(next) = marks.get(i + 1) {
                p["end"] = json!(iso(next.1));
            }
            json!({"status": s, "period": p})
        })
        .collect();
    let mut enc = json!({"resourceType": "Encounter", "id": id, "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER", "display": "emergency"},
        "identifier": [{"system": format!("{ACCESS_SYSTEM_PREFIX}{}", er.id), "value": access}],
        "serviceProvider": {"reference": format!("Organization/{}", er.hospital)},
        "location": [{"location": {"reference": format!("Location/{}", er.id), "display": er.name}}],
        "subject": {"reference": subject},
        "extension": v.events().iter().map(event_ext).collect::<Vec<_>>()});
    if let (Some(x), Some(exts)) = (details_ext(details), enc["extension"].as_array_mut()) {
        exts.push(x);
    }
    if !history.is_empty() {
        enc["statusHistory"] = json!(history);
    }
    if let Some(start) = v.start() {
        enc["period"] = json!({"start": iso(start)});
        if let Some((_, end)) = v.exit {
            enc["period"]["end"] = json!(iso(end));
        }
    }
    if let Some(t) = v.triage() {
        enc["priority"] = json!({"coding": [{"system": TRIAGE_SYSTEM, "code": t.code().to_string(), "display": t.colour_it()}]});
    }
    if let Some((o, _)) = v.exit {
        let (it, _) = fascicolo_domain::er::outcome(o).unwrap_or(("", ""));
        enc["hospitalization"] =
            json!({"dischargeDisposition": {"coding": [{"system": OUTCOME_SYSTEM, "code": o.to_string(), "display": it}]}});
    }
    let mut out = vec![enc];
    for (at, t) in &v.triages {
        let o = json!({"resourceType": "Observation", "id": format!("{id}-t{}", at.unix_timestamp()), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "11283-9", "display": "Valutazione acutezza"}], "text": "Codice di triage"},
            "encounter": {"reference": format!("Encounter/{id}")},
            "effectiveDateTime": iso(*at),
            "valueCodeableConcept": {"coding": [{"system": TRIAGE_SYSTEM, "code": t.code().to_string(), "display": t.colour_it()}]},
            "subject": {"reference": subject}});
        out.push(o);
    }
    out
}

#[derive(Default)]
struct Live {
    visits: HashMap<String, Visit>,
    /// The hospital's access number of each open access (by Encounter id).
    numbers: HashMap<String, String>,
    last_event: Option<OffsetDateTime>,
}

#[derive(Default)]
struct Inner {
    ers: Vec<Er>,
    index: HashMap<String, usize>,
    live: Vec<Live>,
}

/// The state of one emergency room at a time.
#[derive(Debug, Clone)]
pub struct ErStatus {
    pub er: Er,
    pub picture: Picture,
    pub updated: Option<OffsetDateTime>,
    pub stale: bool,
}

/// The whole region at a time.
#[derive(Debug)]
pub struct Board {
    pub at: OffsetDateTime,
    /// Changes seen (what live connections compare).
    pub version: u64,
    pub rooms: Vec<ErStatus>,
    /// The feed and the live message, written once per board and shared by every reader.
    feed: std::sync::OnceLock<String>,
    live: std::sync::OnceLock<String>,
    /// Other renderings of this board (the public page per language), made once by whoever
    /// needs them.
    views: parking_lot::Mutex<HashMap<&'static str, Arc<str>>>,
}

impl Board {
    /// A rendering of this board under `key`, made by `make` the first time it is asked for.
    pub fn view(&self, key: &'static str, make: impl FnOnce() -> String) -> Arc<str> {
        if let Some(v) = self.views.lock().get(key) {
            return Arc::clone(v);
        }
        let v: Arc<str> = make().into();
        self.views.lock().insert(key, Arc::clone(&v));
        v
    }

    /// The public JSON feed (`board_json`) as text, built once.
    pub fn feed_text(&self) -> &str {
        self.feed.get_or_init(|| board_json(self).to_string())
    }

    /// The compact picture live connections receive, built once: `{"at": instant, "rooms":
    /// [[id, crowding, occupancy, present, awaiting triage, observation, boarding, stale,
    /// updated (instant), [[waiting, in treatment, median wait, longest wait] × 5]]]}`.
    pub fn live_text(&self) -> &str {
        self.live.get_or_init(|| {
            json!({"at": iso(self.at), "rooms": self.rooms.iter().map(|s| {
                let p = &s.picture;
                json!([s.er.id, p.crowding.code(), p.occupancy, p.present, p.awaiting_triage, p.observation, p.boarding, s.stale,
                    s.updated.map(iso), p.by_code.iter().map(|c| json!([c.waiting, c.treatment, c.median_wait, c.longest_wait])).collect::<Vec<_>>()])
            }).collect::<Vec<_>>()})
            .to_string()
        })
    }
}

/// The emergency-room service: the registry, the event feed, the live board.
#[derive(Clone)]
pub struct ErService {
    fhir: FhirService,
    inner: Arc<parking_lot::RwLock<Inner>>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// One writer per access at a time in this process (the store's version check covers others).
    locks: Arc<Vec<tokio::sync::Mutex<()>>>,
    /// The last board built, with the version and minute it is for.
    cache: Arc<parking_lot::Mutex<Option<Arc<Board>>>>,
    /// Rooms whose record of people not identified is known to exist.
    anon_ready: Arc<parking_lot::Mutex<std::collections::HashSet<String>>>,
    /// The registry and open accesses are read from the store once, on first use.
    loaded: Arc<tokio::sync::OnceCell<()>>,
    /// The region's key for the pseudonyms of the national flow (`CUNI`); without it the
    /// export is refused.
    cuni_key: Option<Arc<[u8]>>,
}

impl ErService {
    pub fn new(fhir: FhirService) -> Self {
        let (tx, _) = tokio::sync::watch::channel(0);
        ErService {
            fhir,
            inner: Arc::default(),
            changes: Arc::new(tx),
            locks: Arc::new((0..64).map(|_| tokio::sync::Mutex::new(())).collect()),
            cache: Arc::default(),
            loaded: Arc::default(),
            anon_ready: Arc::default(),
            cuni_key: None,
        }
    }

    /// Set the region's key for the national flow's pseudonyms (see [`ErService::emur`]).
    pub fn with_cuni_key(mut self, key: Option<&str>) -> Self {
        self.cuni_key = key.filter(|k| !k.is_empty()).map(|k| Arc::from(k.as_bytes()));
        self
    }

    /// Read the registry and the open accesses from the store, once (a failure is tried again
    /// by the next caller).
    pub async fn ready(&self) -> AppResult<()> {
        self.loaded.get_or_try_init(|| self.load()).await.map(|_| ())
    }

    /// Pages of a search as the platform (the registry and open accesses: population-wide).
    async fn search_all(&self, resource_type: &str, pairs: &[(&str, &str)]) -> AppResult<Vec<Value>> {
        self.search_as(&Actor::system(), resource_type, pairs).await
    }

    /// Pages of a search as an actor (through the gate, in the access log).
    async fn search_as(&self, actor: &Actor, resource_type: &str, pairs: &[(&str, &str)]) -> AppResult<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut p: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
            p.push(("_count".into(), "500".into()));
            if let Some(c) = &cursor {
                p.push(("_cursor".into(), c.clone()));
            }
            let page = self.fhir.search(actor, Some(resource_type), &p, "urn:fascicolo:er").await?;
            for (_, json, _) in &page.entries {
                if let Ok(v) = serde_json::from_str::<Value>(json) {
                    out.push(v);
                }
            }
            let next = page.links.iter().find(|l| l["relation"] == "next").and_then(|l| l["url"].as_str()).and_then(|u| {
                let q = u.split_once('?')?.1;
                form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "_cursor").map(|(_, v)| v.into_owned())
            });
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    async fn asst_of(&self, hospital: &str) -> Option<String> {
        let org = self.fhir.read(&Actor::system(), "Organization", hospital).await.ok()?;
        org.resource["partOf"]["reference"].as_str().and_then(|r| r.strip_prefix("Organization/")).map(String::from)
    }

    /// Load the registry and the accesses still open from the store (at start).
    async fn load(&self) -> AppResult<()> {
        let locations = self.search_all("Location", &[("type", &format!("{ER_TYPE_SYSTEM}|{ER_TYPE_CODE}"))]).await?;
        let mut ers = Vec::new();
        for l in &locations {
            let hospital = hospital_of(l).unwrap_or_default();
            let asst = self.asst_of(hospital).await;
            if let Some(er) = Er::from_location(l, asst) {
                ers.push(er);
            }
        }
        ers.sort_by(|a, b| a.name.cmp(&b.name));
        let open = self.search_all("Encounter", &[("class", "EMER"), ("status", "arrived,triaged,in-progress")]).await?;
        let mut inner = Inner::default();
        for er in ers {
            let n = inner.ers.len();
            inner.index.insert(er.id.clone(), n);
            inner.ers.push(er);
            inner.live.push(Live::default());
        }
        for enc in open {
            let Some(i) = enc["location"][0]["location"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Location/"))
                .and_then(|id| inner.index.get(id).copied())
            else {
                continue;
            };
            let v = visit_of(&enc);
            let updated = enc["meta"]["lastUpdated"].as_str().and_then(parse_time);
            let live = &mut inner.live[i];
            live.last_event = live.last_event.max(updated);
            if let Some(id) = enc["id"].as_str() {
                live.visits.insert(id.to_string(), v);
                if let Some(n) = enc["identifier"][0]["value"].as_str() {
                    live.numbers.insert(id.to_string(), n.to_string());
                }
            }
        }
        *self.inner.write() = inner;
        self.changed();
        Ok(())
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
        *self.cache.lock() = None;
    }

    /// A receiver that sees every change of the board.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The emergency department, loaded from the registry when it is not known yet.
    async fn er(&self, id: &str) -> AppResult<Er> {
        let known = {
            let inner = self.inner.read();
            inner.index.get(id).map(|i| inner.ers[*i].clone())
        };
        if let Some(er) = known {
            return Ok(er);
        }
        let unknown = || AppError::NotFound(format!("there is no emergency department Location/{id} in the registry"));
        let loc = match self.fhir.read(&Actor::system(), "Location", id).await {
            Ok(l) => l.resource,
            Err(AppError::NotFound(_) | AppError::Gone(_)) => return Err(unknown()),
            Err(e) => return Err(e),
        };
        let hospital = hospital_of(&loc).unwrap_or_default();
        let asst = self.asst_of(hospital).await;
        let er = Er::from_location(&loc, asst).ok_or_else(unknown)?;
        let mut inner = self.inner.write();
        if !inner.index.contains_key(id) {
            let n = inner.ers.len();
            inner.index.insert(er.id.clone(), n);
            inner.ers.push(er.clone());
            inner.live.push(Live::default());
        }
        drop(inner);
        self.changed();
        Ok(er)
    }

    /// Who may send events for an emergency room: its hospital's or ASST's own system (and the
    /// platform).
    fn check_sender(actor: &Actor, er: &Er) -> AppResult<()> {
        match &actor.who {
            Who::System | Who::Client { platform: true, .. } => Ok(()),
            Who::Client { organization: Some(o), platform: false, .. } if *o == er.hospital || er.asst.as_deref() == Some(o.as_str()) => {
                Ok(())
            }
            Who::Client { organization: Some(o), platform: false, .. } => Err(AppError::Forbidden(format!(
                "Location/{} belongs to Organization/{}; this client sends for Organization/{o} only",
                er.id, er.hospital
            ))),
            _ => Err(AppError::Forbidden("emergency-room events come from the hospital's own system (a producer client)".into())),
        }
    }

    /// The record that holds an emergency room's accesses of people not identified (one per
    /// room, registry data written once by the platform): their accesses stay behind the gate
    /// like anyone's, visible to the hospital that wrote them and to nobody else.
    async fn unidentified(&self, er: &Er) -> AppResult<String> {
        let id = unidentified_id(&er.id);
        if self.anon_ready.lock().contains(&id) {
            return Ok(format!("Patient/{id}"));
        }
        match self.fhir.read(&Actor::system(), "Patient", &id).await {
            Ok(_) => {}
            Err(AppError::NotFound(_) | AppError::Gone(_)) => {
                let p = json!({"resourceType": "Patient", "id": id, "active": true,
                    "meta": {"tag": [{"system": UNIDENTIFIED_TAG, "code": "unidentified"}]},
                    "name": [{"use": "anonymous", "text": format!("Persone non identificate - {}", er.name)}],
                    "managingOrganization": {"reference": format!("Organization/{}", er.hospital)}});
                match self.fhir.update(&Actor::system(), "Patient", &id, p.to_string().as_bytes(), None).await {
                    Ok(_) => {}
                    // another request created it at the same moment: it exists, which is all we need
                    Err(AppError::Conflict(_) | AppError::PreconditionFailed(_))
                        if self.fhir.read(&Actor::system(), "Patient", &id).await.is_ok() => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        self.anon_ready.lock().insert(id.clone());
        Ok(format!("Patient/{id}"))
    }

    /// The registry record of the citizen a hospital names, as document publication finds it:
    /// exactly one Patient carries the codice fiscale.
    async fn patient_ref(&self, cf: &str) -> AppResult<String> {
        let ident = format!("{CF_SYSTEM}|{cf}");
        let found = crate::access::lookup(self.fhir.store().as_ref(), None, "Patient", &[("identifier", ident.as_str())], 2).await?;
        match found.as_slice() {
            [p] => Ok(format!("Patient/{}", p.id)),
            [] => Err(AppError::Invalid(vec![fascicolo_fhir::OutcomeIssue::error(
                "not-found",
                "no citizen with this codice fiscale is registered; send the access without 'patient' (not identified)",
            )])),
            _ => Err(AppError::Conflict("more than one registry record carries this codice fiscale".into())),
        }
    }

    /// Take one event from a hospital: merge it into its access, store the access (one
    /// transaction: Encounter and triage Observations, with the access-log entry), update the
    /// live board. A repeated event changes nothing; a contradicting one is refused.
    pub async fn event(&self, actor: &Actor, mut e: EventIn) -> AppResult<EventOutcome> {
        // times are kept to the second: the same event sent again compares equal
        e.event.at = e.event.at.replace_nanosecond(0).unwrap_or(e.event.at);
        self.ready().await?;
        let er = self.er(&e.er).await?;
        Self::check_sender(actor, &er)?;
        let id = encounter_id(&er.id, &e.access);
        let lock = {
            let h = id.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
            &self.locks[h % self.locks.len()]
        };
        let _guard = lock.lock().await;
        let anon = format!("Patient/{}", unidentified_id(&er.id));
        let subject = match &e.patient {
            Some(cf) => self.patient_ref(cf).await?,
            None => anon.clone(),
        };
        for _ in 0..5 {
            let current = match self.fhir.read(actor, "Encounter", &id).await {
                Ok(c) => Some(c),
                Err(AppError::NotFound(_) | AppError::Gone(_)) => None,
                Err(e) => return Err(e),
            };
            let mut visit = current.as_ref().map(|c| visit_of(&c.resource)).unwrap_or_default();
            // the access's patient is the one it was first recorded with (an event may leave it out)
            let held = current.as_ref().and_then(|c| c.resource["subject"]["reference"].as_str().map(String::from));
            // every event of an access names the same patient, or none when not identified
            if let Some(h) = &held {
                if *h != subject {
                    return Err(AppError::Conflict(if *h == anon {
                        "this access was recorded without a patient (not identified); every event of it must leave 'patient' out".into()
                    } else if subject == anon {
                        "this access was recorded for a patient; every event of it must name the same 'patient'".into()
                    } else {
                        "this access was recorded for another patient; the patient of an access cannot change".into()
                    }));
                }
            }
            let refuse = |x: fascicolo_domain::er::EventError| {
                AppError::Invalid(vec![fascicolo_fhir::OutcomeIssue::error("business-rule", x.to_string())])
            };
            let mut details = current.as_ref().map(|c| details_of(&c.resource)).unwrap_or_default();
            let mut applied = visit.apply(&e.event).map_err(refuse)?;
            // the event is known but it brings details not yet held: it changes the access
            if details.merge(&e.details).map_err(refuse)? {
                applied = Applied::Changed;
            }
            if applied == Applied::Duplicate {
                return Ok(EventOutcome { applied, encounter: format!("Encounter/{id}") });
            }
            let entries: Vec<Value> = resources_of(&id, &er, &e.access, &subject, &visit, &details)
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let url = format!("{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default());
                    let mut req = json!({"method": "PUT", "url": url});
                    if i == 0 {
                        if let Some(c) = &current {
                            req["ifMatch"] = json!(format!("W/\"{}\"", c.version));
                        }
                    }
                    json!({"fullUrl": format!("urn:fascicolo:{url}"), "resource": r, "request": req})
                })
                .collect();
            // the room's record of people not identified exists before the first access goes in
            // (registry data, written once; only when an event is really stored)
            if subject == anon {
                self.unidentified(&er).await?;
            }
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
            match self.fhir.process_bundle_value(actor, bundle, "urn:fascicolo:er").await {
                Ok(_) => {
                    self.record(&er, &id, &e.access, visit);
                    return Ok(EventOutcome { applied, encounter: format!("Encounter/{id}") });
                }
                // another server wrote the access meanwhile: read it again and merge
                Err(AppError::PreconditionFailed(_) | AppError::Conflict(_)) => continue,
                Err(x) => return Err(x),
            }
        }
        Err(AppError::Conflict("the access kept changing while this event was merged; send it again".into()))
    }

    fn record(&self, er: &Er, id: &str, number: &str, visit: Visit) {
        let mut inner = self.inner.write();
        if let Some(i) = inner.index.get(&er.id).copied() {
            let live = &mut inner.live[i];
            live.last_event = Some(OffsetDateTime::now_utc());
            if visit.state() == fascicolo_domain::er::State::Gone {
                live.visits.remove(id);
                live.numbers.remove(id);
            } else {
                live.visits.insert(id.to_string(), visit);
                live.numbers.insert(id.to_string(), number.to_string());
            }
        }
        drop(inner);
        self.changed();
    }

    /// The hospital's numbers of the accesses still open in a room (what a hospital system, or
    /// the demo's simulation after a restart, reconciles against its own list).
    pub async fn open_accesses(&self, er: &str) -> AppResult<Vec<String>> {
        self.ready().await?;
        let inner = self.inner.read();
        Ok(inner.index.get(er).map(|i| inner.live[*i].numbers.values().cloned().collect()).unwrap_or_default())
    }

    /// The live board now (built once per change and minute, shared by every reader).
    pub async fn board(&self) -> AppResult<Arc<Board>> {
        self.ready().await?;
        Ok(self.board_now())
    }

    fn board_now(&self) -> Arc<Board> {
        let now = OffsetDateTime::now_utc();
        let version = *self.changes.borrow();
        let minute = now.unix_timestamp() / 60;
        if let Some(b) = self.cache.lock().as_ref() {
            if b.version == version && b.at.unix_timestamp() / 60 == minute {
                return Arc::clone(b);
            }
        }
        let b = Arc::new(self.board_at(now, version));
        *self.cache.lock() = Some(Arc::clone(&b));
        b
    }

    fn board_at(&self, now: OffsetDateTime, version: u64) -> Board {
        let inner = self.inner.read();
        let rooms = inner
            .ers
            .iter()
            .zip(&inner.live)
            .map(|(er, live)| ErStatus {
                er: er.clone(),
                picture: Picture::of(live.visits.values(), er.spaces, now),
                updated: live.last_event,
                stale: live.last_event.is_none_or(|t| now - t > STALE_AFTER),
            })
            .collect();
        Board { at: now, version, rooms, feed: Default::default(), live: Default::default(), views: Default::default() }
    }
}

/// The measure the history reports follow.
pub const HISTORY_MEASURE: &str = "urn:fascicolo:measure:er-crowding";

impl ErService {
    /// Keep the picture of every emergency room at `at` as a FHIR `MeasureReport` (one per room
    /// per interval, for analysis). Ids are derived from room and time, so two servers recording
    /// the same interval write the same reports.
    pub async fn record_history(&self, from: OffsetDateTime, at: OffsetDateTime) -> AppResult<usize> {
        self.ready().await?;
        let b = self.board_at(at, *self.changes.borrow());
        let stamp = at.to_offset(time::UtcOffset::UTC);
        let key = format!("{:04}{:02}{:02}{:02}{:02}", stamp.year(), u8::from(stamp.month()), stamp.day(), stamp.hour(), stamp.minute());
        let mut entries = Vec::new();
        for r in &b.rooms {
            let p = &r.picture;
            let id = format!("mr-{}-{key}", r.er.id);
            let count = |code: &str, n: u32| json!({"code": {"coding": [{"system": HISTORY_MEASURE, "code": code}]}, "count": n});
            let mut groups = vec![json!({"code": {"coding": [{"system": HISTORY_MEASURE, "code": "overall"}]},
                "population": [count("present", p.present), count("awaiting-triage", p.awaiting_triage),
                    count("observation", p.observation), count("boarding", p.boarding)],
                "measureScore": {"value": p.occupancy, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}})];
            for (c, t) in p.by_code.iter().zip(Triage::ALL) {
                let mut g = json!({"code": {"coding": [{"system": TRIAGE_SYSTEM, "code": t.code().to_string(), "display": t.colour_it()}]},
                    "population": [count("waiting", c.waiting), count("in-treatment", c.treatment), count("over-target", c.over_target)]});
                if let Some(m) = c.median_wait {
                    g["measureScore"] = json!({"value": m, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"});
                }
                groups.push(g);
            }
            let mut mr = json!({"resourceType": "MeasureReport", "id": id, "status": "complete", "type": "summary",
                "measure": HISTORY_MEASURE, "date": iso(at), "period": {"start": iso(from), "end": iso(at)},
                "subject": {"reference": format!("Location/{}", r.er.id)},
                "reporter": {"reference": format!("Organization/{}", r.er.hospital)},
                "group": groups});
            if r.stale {
                // the hospital had stopped sending: the figures may be out of date
                mr["extension"] = json!([{"url": "urn:fascicolo:er-stale", "valueBoolean": true}]);
            }
            entries.push(json!({"fullUrl": format!("urn:fascicolo:MeasureReport/{id}"), "resource": mr,
                "request": {"method": "PUT", "url": format!("MeasureReport/{id}")}}));
        }
        let n = entries.len();
        if n > 0 {
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
            self.fhir.process_bundle_value(&Actor::system(), bundle, "urn:fascicolo:er").await?;
        }
        Ok(n)
    }
}

/// The board as the public JSON feed (documented in `docs/er-feed.md`).
pub fn board_json(b: &Board) -> Value {
    let rooms: Vec<Value> = b.rooms.iter().map(room_json).collect();
    json!({"generated": iso(b.at), "version": b.version,
        "formula": {"it": FORMULA_IT, "en": FORMULA_EN},
        "triageCodes": Triage::ALL.iter().map(|t| json!({"code": t.code(), "colour": {"it": t.colour_it(), "en": t.colour_en()},
            "targetMinutes": t.target_minutes(), "meaning": {"it": t.meaning_it(), "en": t.meaning_en()}})).collect::<Vec<_>>(),
        "emergencyRooms": rooms})
}

/// One emergency room in the feed.
pub fn room_json(s: &ErStatus) -> Value {
    let p = &s.picture;
    json!({"id": s.er.id, "name": s.er.name, "kind": s.er.kind.code(), "hospital": s.er.hospital,
        "town": s.er.town, "province": s.er.province, "latitude": s.er.lat, "longitude": s.er.lon,
        "treatmentSpaces": s.er.spaces, "present": p.present, "occupancyPercent": p.occupancy, "crowding": p.crowding.code(),
        "awaitingTriage": p.awaiting_triage, "inObservation": p.observation, "waitingForBed": p.boarding,
        "updated": s.updated.map(iso), "stale": s.stale,
        "byTriage": p.by_code.iter().zip(Triage::ALL).map(|(c, t)| json!({"code": t.code(), "waiting": c.waiting,
            "inTreatment": c.treatment, "medianWaitMinutes": c.median_wait, "longestWaitMinutes": c.longest_wait,
            "waitingOverTarget": c.over_target})).collect::<Vec<_>>()})
}
