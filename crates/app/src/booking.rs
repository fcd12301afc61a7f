//! The regional booking network (CUP): the offer of every site, first availability for a
//! prescription, holds, bookings, cancellations and moves.
//!
//! **Slots.** An agenda (`Schedule`) carries a weekly template (`urn:fascicolo:agenda-template`,
//! read by [`fascicolo_domain::booking::Template`]) and its closures
//! (`urn:fascicolo:agenda-closure`); the free slots are what the template opens on working
//! days, minus the slots stored as held or busy. A slot is stored, under its key
//! (`{schedule}-{YYYYMMDDHHMM}`, Rome time), only when someone holds or books it; after that
//! every change to it is a guarded write (`ifMatch` on the version read, `W/"0"` when it was
//! not stored yet). Two bookings of one slot meet on that row and the second commit fails: no
//! slot is ever given twice, on either backend, without a lock.
//!
//! **A booking** is one transaction: the slot (busy), the prescription (`ServiceRequest`, which
//! gets the extension `urn:fascicolo:booked-as` naming the appointment, guarded too: a
//! prescription is booked once) and the new `Appointment`. A cancellation frees both in one
//! transaction, a move does cancel and book in one transaction (the old appointment stays
//! until the new one commits).
//!
//! **Holds** expire by themselves: a held slot past its `urn:fascicolo:hold-until` counts as
//! free, and the next hold or booking overwrites it under the version it read.

mod closures;
mod earlier;
mod requests;
pub use closures::PROVIDER_CANCELLED_KIND;
pub use earlier::{EarlierOffer, EARLIER_EXT, EARLIER_OFFER_KIND, OFFER_CODE, SLOT_FREED_KIND};
pub use requests::{PROTECTION_CODE, PROTECTION_EXT};

use crate::doctor_choice::{entry, lost_race};
use crate::portal::Portal;
use crate::{Actor, AppError, AppResult, Who};
use fascicolo_domain::booking::{self as rules, Priority, Service, Template, HORIZON_DAYS};
use fascicolo_fhir::datetime;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use time::{Date, Duration, OffsetDateTime};

pub use fascicolo_domain::booking::{
    ACCESS_EXT, AREA_EXT, BOOKED_UNTIL_EXT, CLOSURE_EXT, PRIORITY_EXT, PROVIDER_KIND_EXT, SERVICE_SYSTEM, TEMPLATE_EXT,
};
use fascicolo_domain::systems::{ASL_SYSTEM, GEOLOCATION_EXT, ISTAT_EXT};
/// On a held `Slot`: until when (instant).
pub const HOLD_UNTIL_EXT: &str = "urn:fascicolo:hold-until";
/// On a held `Slot`: for which prescription, as an opaque tag ([`holder_tag`]): slots are
/// registry data anyone may read, and a prescription's id names its patient.
pub const HELD_FOR_EXT: &str = "urn:fascicolo:held-for";

/// The tag a hold carries for prescription `id` (the first 80 bits of a SHA-256).
pub fn holder_tag(id: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(format!("held-for:{id}").as_bytes())[..10])
}
/// On a booked `ServiceRequest`: its appointment.
pub const BOOKED_AS_EXT: &str = "urn:fascicolo:booked-as";
/// On an `Appointment`: the wait guarantee (`kept`, `waived`: a later date chosen when one in
/// time was offered; `not-available`: nothing in time in the area; `none`: no class applies).
pub const GUARANTEE_EXT: &str = "urn:fascicolo:wait-guarantee";
/// On a cancelled `Appointment`: cancelled with less notice than the rules ask.
pub const LATE_EXT: &str = "urn:fascicolo:late-cancellation";
/// On an `Appointment`: who booked it (`citizen`, `desk`, `api`).
pub const CHANNEL_EXT: &str = "urn:fascicolo:booking-channel";
/// How long a hold keeps a slot.
pub const HOLD_MINUTES: i64 = 10;
/// How many options `$find` answers at most.
pub const MAX_OPTIONS: usize = 20;
const RETRIES: usize = 4;
/// Outbox kind of an appointment's reminder.
pub const REMINDER_KIND: &str = "booking.reminder";
/// A reminder leaves this long before the appointment...
pub const REMINDER_BEFORE_MS: i64 = 24 * 3_600_000;
/// ...or at once when booked later than that, unless the appointment is this close.
const REMINDER_MIN_AHEAD_MS: i64 = 2 * 3_600_000;

/// An outbox message id derived from what the message is about (`seed`) and when it leaves:
/// the store keeps the first message of an id, so it is queued once however often asked.
pub(crate) fn message_id(seed: &str, at: i64) -> uuid::Uuid {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let mut rand = [0u8; 10];
    rand.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(at).unwrap_or(0), &rand).into_uuid()
}

/// The Patient an appointment is for (its participant `Patient/{id}`).
pub fn patient_of(appt: &Value) -> Option<String> {
    appt["participant"].as_array()?.iter().find_map(|p| p["actor"]["reference"].as_str()?.strip_prefix("Patient/")).map(String::from)
}

/// Where an appointment takes place (its participant `Location`'s display).
pub fn place_of(appt: &Value) -> &str {
    appt["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["actor"]["reference"].as_str().is_some_and(|r| r.starts_with("Location/")))
        .and_then(|p| p["actor"]["display"].as_str())
        .unwrap_or_default()
}

/// The closed days an agenda (`Schedule`) records.
fn closures_of(schedule: &Value) -> Vec<Date> {
    schedule["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == CLOSURE_EXT)
        .filter_map(|e| e["valueDate"].as_str().and_then(fascicolo_domain::rome::date_of))
        .collect()
}

/// The slot-freed message of an appointment being cancelled or moved away from its slot.
fn freed(appt: &Value, id: &str) -> Vec<fascicolo_store::OutboxMessage> {
    appt["slot"][0]["reference"]
        .as_str()
        .and_then(|r| r.strip_prefix("Slot/"))
        .map(|key| earlier::slot_freed(key, id, datetime::now_ms()))
        .into_iter()
        .collect()
}

/// The reminder of appointment `id` of `patient` starting at `start_ms`, or none when the
/// appointment is too close for one. Its id is derived from the appointment, so it is queued
/// once however many commits ask for it; it carries no personal or clinical data (the worker
/// reads the appointment when it is due, and sends nothing if it was cancelled or moved).
pub fn reminder(id: &str, patient: &str, start_ms: i64, now: i64) -> Option<fascicolo_store::OutboxMessage> {
    if start_ms - now < REMINDER_MIN_AHEAD_MS {
        return None;
    }
    let at = (start_ms - REMINDER_BEFORE_MS).max(now);
    Some(fascicolo_store::OutboxMessage {
        id: message_id(&format!("reminder:{id}"), at),
        patient_key: fascicolo_domain::PatientKey::for_patient_id(patient),
        kind: REMINDER_KIND.into(),
        payload: json!({"appointment": id, "start": start_ms}).to_string(),
        available_at: at,
    })
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

fn ext<'a>(v: &'a Value, url: &str) -> Option<&'a Value> {
    v["extension"].as_array()?.iter().find(|e| e["url"] == url)
}

fn ext_str<'a>(v: &'a Value, url: &str, key: &str) -> Option<&'a str> {
    ext(v, url)?[key].as_str()
}

fn instant_ms(s: &str) -> Option<i64> {
    datetime::parse(s).map(|(r, _)| r.low)
}

/// How long the agendas of a service are reused before they are read again (agendas change
/// rarely; a template edited shows within this time on every server).
const OFFER_CACHE_MS: i64 = 30_000;

/// The agendas offering each service, with the instant they were read (one per service).
pub type OfferCache = parking_lot::Mutex<HashMap<String, (i64, Arc<Vec<Agenda>>)>>;

/// How long the public waiting times are reused before they are computed again.
const WAITING_CACHE_MS: i64 = 300_000;

/// The public waiting times, with the instant they were computed.
pub type WaitingCache = parking_lot::Mutex<Option<(i64, Arc<WaitingTimes>)>>;

/// Waiting times of the regional network, per service and provider group (an ASST with its
/// public hospitals, or the accredited private providers of an ATS), from the real data: the
/// first free slot of every agenda today, and the bookings made so far.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WaitingTimes {
    /// When this was computed (ms since the epoch).
    pub computed_at: i64,
    pub services: Vec<ServiceWaits>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceWaits {
    pub code: &'static str,
    pub name_it: &'static str,
    pub name_en: &'static str,
    pub diagnostic: bool,
    pub groups: Vec<GroupWaits>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupWaits {
    /// The ASST's organisation id, `public-{ATS code}` (public sites whose ASST the registry
    /// does not name) or `accredited-{ATS code}`.
    pub id: String,
    /// The ASST's name, or the ATS's.
    pub name: String,
    /// `asst`, `public` or `accredited`.
    pub kind: &'static str,
    /// The ATS (guarantee area) code.
    pub area: String,
    pub agendas: usize,
    /// Median days from today to each agenda's first free slot (agendas with none in the
    /// booking horizon left out; `None` when no agenda has one).
    pub median_days: Option<f64>,
    /// The earliest first free day of the group.
    pub first_day: Option<String>,
    /// Bookings made through the network (not cancelled), per priority class.
    pub bookings: Vec<ClassShare>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassShare {
    /// U, B, D or P.
    pub class: &'static str,
    pub bookings: u64,
    /// Booked on a day within the class deadline.
    pub in_time: u64,
}

/// The median of some numbers (`None` for none).
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 })
}

/// A specialist prescription as booking reads it.
#[derive(Debug, Clone)]
pub struct Prescription {
    pub id: String,
    pub patient: String,
    pub nre: Option<String>,
    pub code: String,
    pub name: String,
    pub service: Option<&'static Service>,
    pub priority: Option<Priority>,
    pub first_access: bool,
    pub authored: Option<Date>,
    pub question: Option<String>,
    pub requester: Option<String>,
    /// The appointment it is booked as (`Appointment/{id}`), if any.
    pub booked_as: Option<String>,
    /// When the citizen asked for the protection route (instant), if they did.
    pub protection_requested: Option<String>,
    pub active: bool,
    version: i64,
    resource: Value,
}

impl Prescription {
    fn from(v: &Value, version: i64) -> Prescription {
        let coding = v["code"]["coding"].as_array().and_then(|c| c.first()).cloned().unwrap_or(Value::Null);
        let code = coding["code"].as_str().unwrap_or_default().to_string();
        let service = rules::service(&code);
        let nre = v["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&v["requisition"]))
            .find(|i| i["system"].as_str().is_some_and(|s| s.contains("2.16.840.1.113883.2.9.4.3")))
            .and_then(|i| i["value"].as_str())
            .map(String::from);
        Prescription {
            id: v["id"].as_str().unwrap_or_default().to_string(),
            patient: v["subject"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/")).unwrap_or_default().to_string(),
            nre,
            name: service
                .map(|s| s.name_it.to_string())
                .or_else(|| v["code"]["text"].as_str().map(String::from))
                .or_else(|| coding["display"].as_str().map(String::from))
                .unwrap_or_else(|| code.clone()),
            code,
            service,
            priority: ext_str(v, PRIORITY_EXT, "valueCode").and_then(Priority::parse),
            first_access: ext_str(v, ACCESS_EXT, "valueCode") != Some("follow-up"),
            authored: v["authoredOn"].as_str().and_then(fascicolo_domain::rome::date_of),
            question: v["reasonCode"][0]["text"].as_str().map(String::from),
            requester: v["requester"]["display"].as_str().or_else(|| v["requester"]["reference"].as_str()).map(String::from),
            booked_as: ext_str(v, BOOKED_AS_EXT, "valueReference")
                .map(String::from)
                .or_else(|| ext(v, BOOKED_AS_EXT).and_then(|e| e["valueReference"]["reference"].as_str()).map(String::from)),
            protection_requested: ext_str(v, PROTECTION_EXT, "valueDateTime").map(String::from),
            active: v["status"] == "active",
            version,
            resource: v.clone(),
        }
    }

    /// The last day the class guarantees (first access with a class only).
    pub fn deadline(&self) -> Option<Date> {
        let p = self.priority?;
        if !self.first_access {
            return None;
        }
        let from = self.authored.unwrap_or_else(fascicolo_domain::rome::today);
        Some(p.deadline(from, self.service.is_some_and(|s| s.diagnostic)))
    }
}

/// An agenda of the offer, as read from its `Schedule` and `Location`.
#[derive(Debug, Clone)]
pub struct Agenda {
    pub id: String,
    pub code: String,
    pub template: Template,
    pub closures: Vec<Date>,
    pub area: String,
    pub accredited: bool,
    pub location: String,
    pub site: String,
    pub town: String,
    pub istat: String,
    pub position: Option<(f64, f64)>,
    pub healthcare_service: Option<String>,
    /// Slots up to this day are taken by bookings made elsewhere.
    pub booked_until: Option<Date>,
    /// The organisation that runs the site (a hospital of an ASST, or an accredited provider).
    pub provider: String,
}

/// One bookable option: a free slot of an agenda.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The slot key (`{schedule}-{YYYYMMDDHHMM}`).
    pub key: String,
    pub agenda: Agenda,
    pub day: Date,
    pub start_ms: i64,
    pub end_ms: i64,
    pub distance_km: Option<f64>,
    pub in_area: bool,
    /// Within the class deadline (always true when no deadline applies).
    pub in_time: bool,
}

/// What `$find` answers for a prescription.
#[derive(Debug, Clone)]
pub struct Options {
    pub prescription: Prescription,
    pub deadline: Option<Date>,
    pub options: Vec<Choice>,
    /// No option in the citizen's area meets the deadline: the protection route applies.
    pub protection: bool,
}

/// A slot's state as stored.
struct SlotState {
    version: Option<i64>,
    /// free, or held (with its prescription), or busy.
    held_for: Option<String>,
    busy: bool,
}

/// An appointment as the portal shows it.
#[derive(Debug, Clone)]
pub struct Booking {
    pub id: String,
    pub status: String,
    pub service: String,
    pub code: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub site: String,
    pub town: String,
    pub prescription: Option<String>,
    pub guarantee: Option<String>,
    pub late: bool,
    pub preparation_it: Option<&'static str>,
    pub preparation_en: Option<&'static str>,
    pub channel: Option<String>,
    /// The stored `Appointment`.
    pub resource: Value,
}

/// Who books: the record, who reads it (the person or operator, through the gate and into the
/// access log), and whom the store sees writing.
struct Booker {
    patient: String,
    reader: Actor,
    writer: Actor,
    channel: &'static str,
}

impl Portal {
    /// Whether `actor` may book for `patient` (None: the record the citizen acts on) and as whom
    /// the writes go: a citizen for themself, a parent for a minor child, a delegate whose scope
    /// covers appointments (written by the platform on their request); a CUP operator for anyone
    /// at the desk, written as the operator (so in the person's access log).
    async fn booker(&self, actor: &Actor, patient: Option<&str>) -> AppResult<Booker> {
        match &actor.who {
            Who::Professional { role: crate::gate::ProRole::CupOperator, .. } => {
                let p = patient.ok_or_else(|| AppError::BadRequest("the desk books for a patient: name them".into()))?;
                // read as the operator: checks the person exists and logs the access
                self.fhir().read(actor, "Patient", p).await?;
                Ok(Booker { patient: p.to_string(), reader: actor.clone(), writer: actor.clone(), channel: "desk" })
            }
            Who::Citizen { cf, patient: own } => {
                // the portal's record, or (an API token of the citizen) their own
                let record = match (&actor.acting_for, own) {
                    (Some(r), _) => r.clone(),
                    (None, Some(o)) => o.clone(),
                    (None, None) => return Err(AppError::NotFound("this person has no record in the regional registry".into())),
                };
                if patient.is_some_and(|p| p != record) {
                    return Err(AppError::Forbidden("a citizen books in the record they act on".into()));
                }
                if own.as_deref() != Some(record.as_str()) {
                    let reps = self.fhir().represented(cf).await?;
                    let ok = reps.iter().any(|r| {
                        r.patient == record
                            && (r.acting_as == crate::auth::ActingAs::Parent || crate::access::scope_covers(&r.scope, "Appointment"))
                    });
                    if !ok {
                        return Err(AppError::Forbidden("this delegation does not cover bookings".into()));
                    }
                }
                // reads as the person (a parent's or delegate's in the record's log); the platform
                // writes on their request, as for the doctor choice
                Ok(Booker { patient: record, reader: actor.clone(), writer: Actor::system(), channel: "citizen" })
            }
            _ => Err(AppError::Forbidden("bookings are made by the citizen, a parent, a delegate or the CUP desk".into())),
        }
    }

    /// The CUP desk's view of a person: name, prescriptions to book, appointments (read as the
    /// operator, so in the person's access log).
    pub async fn booking_desk(&self, actor: &Actor, patient: &str) -> AppResult<(String, Vec<Prescription>, Vec<Booking>)> {
        if !matches!(&actor.who, Who::Professional { role: crate::gate::ProRole::CupOperator, .. }) {
            return Err(AppError::Forbidden("the booking desk is for CUP operators".into()));
        }
        let p = self.fhir().read(actor, "Patient", patient).await?.resource;
        let prescriptions = self.prescriptions(actor, Some(patient)).await?;
        let bookings = self.bookings(actor, Some(patient)).await?;
        Ok((crate::auth::display_name(&p), prescriptions, bookings))
    }

    /// The record's specialist prescriptions that can be booked here: active, for a service of
    /// the regional offer; booked ones included (with their appointment).
    pub async fn prescriptions(&self, actor: &Actor, patient: Option<&str>) -> AppResult<Vec<Prescription>> {
        let b = self.booker(actor, patient).await?;
        let reader = b.reader.clone();
        let pairs = vec![("subject".to_string(), format!("Patient/{}", b.patient)), ("status".to_string(), "active".to_string())];
        let page = self.all_as(&reader, "ServiceRequest", pairs, parse).await?;
        let mut out: Vec<Prescription> =
            page.iter().map(|v| Prescription::from(v, 0)).filter(|p| p.service.is_some() && p.patient == b.patient).collect();
        out.sort_by(|a, b| b.authored.cmp(&a.authored).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// A prescription of the record by NRE (and the service, when one NRE holds several).
    pub async fn prescription_by_nre(
        &self,
        actor: &Actor,
        patient: Option<&str>,
        nre: &str,
        code: Option<&str>,
    ) -> AppResult<Prescription> {
        let Some(nre) = rules::parse_nre(nre) else {
            return Err(AppError::BadRequest("an NRE has 15 characters, the first three digits".into()));
        };
        let b = self.booker(actor, patient).await?;
        let reader = b.reader.clone();
        // the NRE is the identifier of a prescription written through the API, the requisition
        // of one mapped from a CDA2 document
        for param in ["identifier", "requisition"] {
            let pairs = vec![
                ("subject".to_string(), format!("Patient/{}", b.patient)),
                (param.to_string(), nre.clone()),
                ("status".to_string(), "active".to_string()),
            ];
            let found = self.all_as(&reader, "ServiceRequest", pairs, parse).await?;
            if let Some(p) = found
                .iter()
                .map(|v| Prescription::from(v, 0))
                .find(|p| p.service.is_some() && p.patient == b.patient && code.is_none_or(|c| c == p.code))
            {
                return Ok(p);
            }
        }
        Err(AppError::NotFound(format!("no prescription {nre} to book in this record")))
    }

    /// One prescription of the record, read fresh (with its version), as the booker may.
    async fn prescription(&self, b: &Booker, id: &str) -> AppResult<Prescription> {
        let reader = b.reader.clone();
        let v = match self.fhir().read(&reader, "ServiceRequest", id).await {
            Ok(v) => v,
            Err(AppError::NotFound(_) | AppError::Gone(_) | AppError::Forbidden(_)) => {
                return Err(AppError::NotFound(format!("ServiceRequest/{id} is not a prescription of this record")))
            }
            Err(e) => return Err(e),
        };
        let p = Prescription::from(&v.resource, v.version);
        if p.patient != b.patient {
            return Err(AppError::NotFound(format!("ServiceRequest/{id} is not a prescription of this record")));
        }
        if p.service.is_none() {
            return Err(AppError::BadRequest(format!("{} is not a service the regional network books", p.code)));
        }
        Ok(p)
    }

    /// The agendas that offer a service (as the platform: the offer is public registry data),
    /// read at most every [`OFFER_CACHE_MS`].
    pub async fn agendas(&self, code: &str) -> AppResult<Arc<Vec<Agenda>>> {
        let now = datetime::now_ms();
        if let Some((at, a)) = self.fhir().offer_cache().lock().get(code) {
            if now - at < OFFER_CACHE_MS {
                return Ok(Arc::clone(a));
            }
        }
        let a = Arc::new(self.agendas_in_registry(code).await?);
        self.fhir().offer_cache().lock().insert(code.to_string(), (now, Arc::clone(&a)));
        Ok(a)
    }

    async fn agendas_in_registry(&self, code: &str) -> AppResult<Vec<Agenda>> {
        let system = Actor::system();
        let pairs = vec![("service-type".to_string(), format!("{SERVICE_SYSTEM}|{code}")), ("active".to_string(), "true".to_string())];
        let schedules = self.all_as(&system, "Schedule", pairs, parse).await?;
        let loc_ids: Vec<String> = schedules
            .iter()
            .filter_map(|s| {
                s["actor"].as_array()?.iter().find_map(|a| a["reference"].as_str()?.strip_prefix("Location/").map(String::from))
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut locations: HashMap<String, Value> = HashMap::new();
        for chunk in loc_ids.chunks(100) {
            for l in self.all_as(&system, "Location", vec![("_id".to_string(), chunk.join(","))], parse).await? {
                if let Some(id) = l["id"].as_str() {
                    locations.insert(id.to_string(), l.clone());
                }
            }
        }
        let mut out = Vec::new();
        for s in schedules {
            let Some(template) = ext_str(&s, TEMPLATE_EXT, "valueString").and_then(|t| Template::parse(t).ok()) else { continue };
            let actors: Vec<&str> = s["actor"].as_array().into_iter().flatten().filter_map(|a| a["reference"].as_str()).collect();
            let Some(loc) = actors.iter().find_map(|a| a.strip_prefix("Location/")) else { continue };
            let l = locations.get(loc).cloned().unwrap_or(Value::Null);
            let closures = closures_of(&s);
            out.push(Agenda {
                id: s["id"].as_str().unwrap_or_default().to_string(),
                code: code.to_string(),
                template,
                closures,
                area: ext_str(&s, AREA_EXT, "valueCode").unwrap_or_default().to_string(),
                accredited: ext_str(&s, PROVIDER_KIND_EXT, "valueCode") == Some("accredited"),
                location: loc.to_string(),
                site: l["name"].as_str().unwrap_or(loc).to_string(),
                town: l["address"]["city"].as_str().unwrap_or_default().to_string(),
                istat: l["address"]["_city"]["extension"][0]["valueCode"].as_str().unwrap_or_default().to_string(),
                position: l["position"]["latitude"].as_f64().zip(l["position"]["longitude"].as_f64()),
                healthcare_service: actors.iter().find_map(|a| a.strip_prefix("HealthcareService/")).map(String::from),
                booked_until: ext_str(&s, BOOKED_UNTIL_EXT, "valueDate").and_then(fascicolo_domain::rome::date_of),
                provider: l["managingOrganization"]["reference"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("Organization/"))
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Where a person lives (map position of the home address) and their guarantee area (the
    /// ATS code of their `managingOrganization`).
    async fn home_of(&self, patient: &str) -> AppResult<(Option<(f64, f64)>, Option<String>)> {
        let system = Actor::system();
        let p = self.fhir().read(&system, "Patient", patient).await?.resource;
        let home = p["address"].as_array().into_iter().flatten().find_map(|a| {
            let g = ext(a, GEOLOCATION_EXT)?;
            let sub = |k: &str| g["extension"].as_array()?.iter().find(|e| e["url"] == k)?["valueDecimal"].as_f64();
            sub("latitude").zip(sub("longitude"))
        });
        let area = match p["managingOrganization"]["reference"].as_str().and_then(|r| r.strip_prefix("Organization/")) {
            Some(org) => match self.fhir().read(&system, "Organization", org).await {
                Ok(o) => o.resource["identifier"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|i| i["system"] == ASL_SYSTEM)
                    .and_then(|i| i["value"].as_str())
                    .map(String::from)
                    .or_else(|| org.strip_prefix("ats-").map(String::from)),
                Err(_) => org.strip_prefix("ats-").map(String::from),
            },
            None => None,
        };
        Ok((home, area))
    }

    /// The stored (held or busy) slots of these agendas from `from` on: key → state.
    async fn taken(&self, agendas: &[&Agenda], from: Date) -> AppResult<HashMap<String, SlotState>> {
        let system = Actor::system();
        let now = datetime::now_ms();
        let mut out = HashMap::new();
        for chunk in agendas.chunks(40) {
            let refs: Vec<String> = chunk.iter().map(|a| format!("Schedule/{}", a.id)).collect();
            let pairs = vec![
                ("schedule".to_string(), refs.join(",")),
                ("status".to_string(), "busy,busy-tentative".to_string()),
                ("start".to_string(), format!("ge{}", from)),
            ];
            for s in self.all_as(&system, "Slot", pairs, parse).await? {
                let state = slot_state(&s, 0, now);
                if let (Some(id), true) = (s["id"].as_str(), state.busy || state.held_for.is_some()) {
                    out.insert(id.to_string(), state);
                }
            }
        }
        Ok(out)
    }

    /// `$find`: the options for a prescription. Each agenda offering the service gives its first
    /// free slot from `from` (tomorrow at the earliest); the citizen's area first, then by date
    /// and distance from home. Each says whether it meets the class deadline.
    pub async fn find(&self, actor: &Actor, patient: Option<&str>, prescription: &str, from: Option<Date>) -> AppResult<Options> {
        let b = self.booker(actor, patient).await?;
        let p = self.prescription(&b, prescription).await?;
        self.options_for(&b, p, from).await
    }

    async fn options_for(&self, b: &Booker, p: Prescription, from: Option<Date>) -> AppResult<Options> {
        let today = fascicolo_domain::rome::today();
        let first_day = from.unwrap_or(today).max(today + Duration::days(1));
        let last_day = today + Duration::days(HORIZON_DAYS);
        let (home, area) = self.home_of(&b.patient).await?;
        let agendas = self.agendas(&p.code).await?;
        let refs: Vec<&Agenda> = agendas.iter().collect();
        let taken = self.taken(&refs, first_day).await?;
        let deadline = p.deadline();
        let mut options = Vec::new();
        for a in agendas.iter() {
            if let Some(o) = first_free(a, first_day, last_day, &taken, &p.id) {
                let in_area = area.as_deref() == Some(a.area.as_str());
                let distance_km = home.zip(a.position).map(|(h, s)| rules::distance_km(h, s));
                let in_time = deadline.is_none_or(|d| o.0 <= d);
                let (start_ms, end_ms) = slot_times(o.0, o.1, a.template.minutes);
                options.push(Choice {
                    key: rules::slot_key(&a.id, o.0, o.1),
                    agenda: a.clone(),
                    day: o.0,
                    start_ms,
                    end_ms,
                    distance_km,
                    in_area,
                    in_time,
                });
            }
        }
        options.sort_by(|x, y| {
            (!x.in_area)
                .cmp(&!y.in_area)
                .then(x.start_ms.cmp(&y.start_ms))
                .then(x.distance_km.unwrap_or(f64::MAX).total_cmp(&y.distance_km.unwrap_or(f64::MAX)))
                .then(x.key.cmp(&y.key))
        });
        let protection = deadline.is_some() && !options.iter().any(|o| o.in_area && o.in_time) && from.is_none_or(|f| f <= today);
        options.truncate(MAX_OPTIONS);
        Ok(Options { prescription: p, deadline, options, protection })
    }

    /// The agenda of a slot key, checked: the agenda offers the prescription's service, opens
    /// that day at that time, and the day is ahead (tomorrow to the horizon).
    async fn slot_of(&self, p: &Prescription, key: &str) -> AppResult<(Agenda, Date, u16)> {
        let bad = || AppError::BadRequest(format!("'{key}' is not a slot of the regional offer"));
        let (schedule, day, minute) = rules::parse_slot_key(key).ok_or_else(bad)?;
        let agendas = self.agendas(&p.code).await?;
        let Some(a) = agendas.iter().find(|a| a.id == schedule).cloned() else {
            return Err(AppError::BadRequest(format!("Schedule/{schedule} does not offer {}", p.name)));
        };
        let today = fascicolo_domain::rome::today();
        if day <= today {
            return Err(AppError::BadRequest("a booking is for tomorrow or later".into()));
        }
        if day > today + Duration::days(HORIZON_DAYS) {
            return Err(AppError::BadRequest(format!("agendas are open {HORIZON_DAYS} days ahead")));
        }
        if !a.template.opens_on(day, &a.istat, &a.closures) || !a.template.starts().any(|m| m == minute) {
            return Err(bad());
        }
        if a.booked_until.is_some_and(|d| day <= d) {
            return Err(AppError::Conflict("this slot has just been taken: choose another".into()));
        }
        // the offer may be read a little while ago: a day closed since is refused all the same
        let stored = self.fhir().read(&Actor::system(), "Schedule", &a.id).await?.resource;
        if closures_of(&stored).contains(&day) {
            return Err(AppError::Conflict("the provider has closed this day: choose another".into()));
        }
        // nor a slot the agenda's hours no longer open
        let hours = ext_str(&stored, TEMPLATE_EXT, "valueString").and_then(|t| Template::parse(t).ok());
        if hours.is_some_and(|t| !t.opens_on(day, &a.istat, &a.closures) || !t.starts().any(|m| m == minute)) {
            return Err(AppError::Conflict("the provider has changed this agenda's hours: choose another slot".into()));
        }
        Ok((a, day, minute))
    }

    async fn slot_now(&self, key: &str) -> AppResult<(Option<Value>, SlotState)> {
        match self.fhir().read(&Actor::system(), "Slot", key).await {
            Ok(v) => {
                let s = slot_state(&v.resource, v.version, datetime::now_ms());
                Ok((Some(v.resource), s))
            }
            Err(AppError::NotFound(_) | AppError::Gone(_)) => Ok((None, SlotState { version: None, held_for: None, busy: false })),
            Err(e) => Err(e),
        }
    }

    /// `$hold`: keep a slot for a prescription for [`HOLD_MINUTES`]. Holding it again refreshes
    /// the hold; a slot held for another prescription or booked is refused (409).
    pub async fn hold(&self, actor: &Actor, patient: Option<&str>, prescription: &str, key: &str) -> AppResult<(Choice, i64)> {
        let b = self.booker(actor, patient).await?;
        let p = self.prescription(&b, prescription).await?;
        if p.booked_as.is_some() {
            return Err(AppError::Conflict("this prescription is booked already: move the appointment instead".into()));
        }
        let (a, day, minute) = self.slot_of(&p, key).await?;
        let until = datetime::now_ms() + HOLD_MINUTES * 60_000;
        for _ in 0..RETRIES {
            let (_, state) = self.slot_now(key).await?;
            if state.busy || state.held_for.as_deref().is_some_and(|h| h != holder_tag(&p.id)) {
                return Err(AppError::Conflict("this slot has just been taken: choose another".into()));
            }
            let (start_ms, end_ms) = slot_times(day, minute, a.template.minutes);
            let slot = slot_resource(key, &a, start_ms, end_ms, "busy-tentative", Some((&p.id, until)));
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry("Slot", key, slot, state.version)]});
            match self.fhir().process_bundle_value(&b.writer, bundle, "").await {
                Ok(_) => {
                    let o = self.option(&b, &p, &a, day, minute).await?;
                    return Ok((o, until));
                }
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Conflict("this slot has just been taken: choose another".into()))
    }

    async fn option(&self, b: &Booker, p: &Prescription, a: &Agenda, day: Date, minute: u16) -> AppResult<Choice> {
        let (home, area) = self.home_of(&b.patient).await?;
        let (start_ms, end_ms) = slot_times(day, minute, a.template.minutes);
        Ok(Choice {
            key: rules::slot_key(&a.id, day, minute),
            agenda: a.clone(),
            day,
            start_ms,
            end_ms,
            distance_km: home.zip(a.position).map(|(h, s)| rules::distance_km(h, s)),
            in_area: area.as_deref() == Some(a.area.as_str()),
            in_time: p.deadline().is_none_or(|d| day <= d),
        })
    }

    /// `$book`: book a slot for a prescription. Refused with nothing changed: a slot taken (or
    /// held for another prescription) meanwhile (409), a prescription already booked (409) or
    /// not active (409), a slot that is not one of the offer for this service (400).
    pub async fn book(&self, actor: &Actor, patient: Option<&str>, prescription: &str, key: &str) -> AppResult<Booking> {
        let b = self.booker(actor, patient).await?;
        for attempt in 0..RETRIES {
            let p = self.prescription(&b, prescription).await?;
            if !p.active {
                return Err(AppError::Conflict("this prescription is no longer active".into()));
            }
            if p.booked_as.is_some() {
                return Err(AppError::Conflict("this prescription is booked already: move the appointment instead".into()));
            }
            let (a, day, minute) = self.slot_of(&p, key).await?;
            let (_, state) = self.slot_now(key).await?;
            if state.busy || state.held_for.as_deref().is_some_and(|h| h != holder_tag(&p.id)) {
                return Err(AppError::Conflict("this slot has just been taken: choose another".into()));
            }
            let guarantee = self.guarantee(&b, &p, day).await?;
            let (start_ms, end_ms) = slot_times(day, minute, a.template.minutes);
            let appt_id = format!("{key}-{}", state.version.unwrap_or(0) + 1);
            let appt = appointment_resource(&appt_id, &b, &p, &a, key, start_ms, end_ms, guarantee);
            let mut sr = p.resource.clone();
            set_ext(&mut sr, BOOKED_AS_EXT, Some(json!({"reference": format!("Appointment/{appt_id}")})), "valueReference");
            let slot = slot_resource(key, &a, start_ms, end_ms, "busy", None);
            let entries = vec![
                entry("Slot", key, slot, state.version),
                entry("ServiceRequest", &p.id, sr, Some(p.version)),
                entry("Appointment", &appt_id, appt.clone(), None),
            ];
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
            let outbox = reminder(&appt_id, &b.patient, start_ms, datetime::now_ms()).into_iter().collect();
            match self.fhir().process_transaction_with(&b.writer, bundle, outbox).await {
                Ok(_) => {
                    tracing::info!(attempt, channel = b.channel, "appointment booked");
                    return Ok(booking_of(&appt, Some(&a)));
                }
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Conflict("this slot has just been taken: choose another".into()))
    }

    /// What the wait guarantee says of booking `p` on `day`: kept (in time), waived (a later day
    /// chosen while one in time was free in the area), not-available (none in time in the area),
    /// none (no class applies: a follow-up, or no class written).
    async fn guarantee(&self, b: &Booker, p: &Prescription, day: Date) -> AppResult<&'static str> {
        let Some(deadline) = p.deadline() else { return Ok("none") };
        if day <= deadline {
            return Ok("kept");
        }
        let opts = self.options_for(b, p.clone(), None).await?;
        Ok(if opts.options.iter().any(|o| o.in_area && o.in_time) { "waived" } else { "not-available" })
    }

    /// The record's appointments, the coming ones first, then the past and cancelled.
    pub async fn bookings(&self, actor: &Actor, patient: Option<&str>) -> AppResult<Vec<Booking>> {
        let b = self.booker(actor, patient).await?;
        let reader = b.reader.clone();
        let pairs = vec![("actor".to_string(), format!("Patient/{}", b.patient))];
        let mut out: Vec<Booking> = self.all_as(&reader, "Appointment", pairs, parse).await?.iter().map(|v| booking_of(v, None)).collect();
        let now = datetime::now_ms();
        out.sort_by_key(|x| (x.status != "booked" || x.start_ms < now, if x.start_ms >= now { x.start_ms } else { -x.start_ms }));
        Ok(out)
    }

    /// Whether cancelling this appointment today would be late (the rule [`Self::cancel`]
    /// records, with the site's patron day), for the page to warn before.
    pub async fn cancellation_would_be_late(&self, b: &Booking) -> AppResult<bool> {
        let istat = match b.resource["slot"][0]["reference"].as_str().and_then(|r| r.strip_prefix("Slot/")) {
            Some(key) => self.slot_now(key).await?.0.and_then(|s| ext_str(&s, ISTAT_EXT, "valueCode").map(String::from)),
            None => None,
        };
        let day = fascicolo_domain::rome::date_of(&datetime::format_instant(b.start_ms)).unwrap_or_else(fascicolo_domain::rome::today);
        Ok(rules::late_cancellation(fascicolo_domain::rome::today(), day, istat.as_deref().unwrap_or_default()))
    }

    /// Cancel an appointment (disdetta): the slot is free again and the prescription can be
    /// booked again. With less than two working days' notice the cancellation is recorded as
    /// late (Lombardy then charges the ticket). Past or cancelled appointments are refused (409).
    pub async fn cancel(&self, actor: &Actor, patient: Option<&str>, appointment: &str) -> AppResult<Booking> {
        let b = self.booker(actor, patient).await?;
        for _ in 0..RETRIES {
            let (appt, version) = self.appointment_of(&b, appointment).await?;
            let entries = self.release(&b, &appt, version, "pat", true).await?;
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries.0});
            let outbox = freed(&appt, appointment);
            match self.fhir().process_transaction_with(&b.writer, bundle, outbox).await {
                Ok(_) => return Ok(booking_of(&entries.1, None)),
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Conflict("the appointment changed meanwhile: try again".into()))
    }

    /// Move an appointment to another slot of the same service: one transaction cancels the old
    /// one and books the new; if the new slot is taken, the old appointment stays as it was.
    pub async fn move_to(&self, actor: &Actor, patient: Option<&str>, appointment: &str, key: &str) -> AppResult<Booking> {
        let b = self.booker(actor, patient).await?;
        for _ in 0..RETRIES {
            let (appt, version) = self.appointment_of(&b, appointment).await?;
            let Some(sr_id) = appt["basedOn"][0]["reference"].as_str().and_then(|r| r.strip_prefix("ServiceRequest/")) else {
                return Err(AppError::Conflict("this appointment was not booked from a prescription: cancel it and book again".into()));
            };
            let p = self.prescription(&b, sr_id).await?;
            let (a, day, minute) = self.slot_of(&p, key).await?;
            if appt["slot"][0]["reference"].as_str() == Some(&format!("Slot/{key}")) {
                return Err(AppError::Conflict("the appointment is already in this slot".into()));
            }
            let (_, state) = self.slot_now(key).await?;
            if state.busy || state.held_for.as_deref().is_some_and(|h| h != holder_tag(&p.id)) {
                return Err(AppError::Conflict("this slot has just been taken: choose another".into()));
            }
            let (mut entries, _) = self.release(&b, &appt, version, "pat", false).await?;
            let guarantee = self.guarantee(&b, &p, day).await?;
            let (start_ms, end_ms) = slot_times(day, minute, a.template.minutes);
            let new_id = format!("{key}-{}", state.version.unwrap_or(0) + 1);
            let new = appointment_resource(&new_id, &b, &p, &a, key, start_ms, end_ms, guarantee);
            // the prescription entry the release wrote now names the new appointment
            for e in entries.iter_mut() {
                if e["resource"]["resourceType"] == "ServiceRequest" {
                    set_ext(
                        &mut e["resource"],
                        BOOKED_AS_EXT,
                        Some(json!({"reference": format!("Appointment/{new_id}")})),
                        "valueReference",
                    );
                }
            }
            entries.push(entry("Slot", key, slot_resource(key, &a, start_ms, end_ms, "busy", None), state.version));
            entries.push(entry("Appointment", &new_id, new.clone(), None));
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
            let mut outbox: Vec<_> = reminder(&new_id, &b.patient, start_ms, datetime::now_ms()).into_iter().collect();
            outbox.extend(freed(&appt, appointment));
            match self.fhir().process_transaction_with(&b.writer, bundle, outbox).await {
                Ok(_) => return Ok(booking_of(&new, Some(&a))),
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Conflict("this slot has just been taken: choose another".into()))
    }

    /// An appointment of the record, booked and ahead, with its version.
    async fn appointment_of(&self, b: &Booker, id: &str) -> AppResult<(Value, i64)> {
        let reader = b.reader.clone();
        let not_here = || AppError::NotFound(format!("Appointment/{id} is not an appointment of this record"));
        let v = match self.fhir().read(&reader, "Appointment", id).await {
            Ok(v) => v,
            Err(AppError::NotFound(_) | AppError::Gone(_) | AppError::Forbidden(_)) => return Err(not_here()),
            Err(e) => return Err(e),
        };
        let mine = v.resource["participant"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["actor"]["reference"].as_str() == Some(&format!("Patient/{}", b.patient)));
        if !mine {
            return Err(not_here());
        }
        if v.resource["status"] != "booked" {
            return Err(AppError::Conflict("this appointment is not booked (cancelled or already past)".into()));
        }
        if v.resource["start"].as_str().and_then(instant_ms).is_none_or(|s| s <= datetime::now_ms()) {
            return Err(AppError::Conflict("this appointment is past".into()));
        }
        Ok((v.resource, v.version))
    }

    /// The entries that cancel `appt`: the appointment cancelled, its slot free, its
    /// prescription bookable again. Returns them and the cancelled appointment.
    async fn release(&self, b: &Booker, appt: &Value, version: i64, reason: &str, count_late: bool) -> AppResult<(Vec<Value>, Value)> {
        let id = appt["id"].as_str().unwrap_or_default().to_string();
        let mut cancelled = appt.clone();
        cancelled["status"] = json!("cancelled");
        cancelled["cancelationReason"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
            "code": reason}]});
        let mut entries = Vec::new();
        let slot_key = appt["slot"][0]["reference"].as_str().and_then(|r| r.strip_prefix("Slot/")).map(String::from);
        let mut istat = String::new();
        if let Some(key) = &slot_key {
            let (slot, state) = self.slot_now(key).await?;
            if let Some(mut s) = slot {
                istat = ext_str(&s, ISTAT_EXT, "valueCode").unwrap_or_default().to_string();
                s["status"] = json!("free");
                set_ext(&mut s, HOLD_UNTIL_EXT, None, "");
                set_ext(&mut s, HELD_FOR_EXT, None, "");
                entries.push(entry("Slot", key, s, state.version));
            }
        }
        if count_late {
            let day = appt["start"].as_str().and_then(fascicolo_domain::rome::date_of).unwrap_or_else(fascicolo_domain::rome::today);
            let late = rules::late_cancellation(fascicolo_domain::rome::today(), day, &istat);
            set_ext(&mut cancelled, LATE_EXT, Some(json!(late)), "valueBoolean");
        }
        if let Some(sr_id) = appt["basedOn"][0]["reference"].as_str().and_then(|r| r.strip_prefix("ServiceRequest/")) {
            let p = self.prescription(b, sr_id).await?;
            if p.booked_as.as_deref() == Some(&format!("Appointment/{id}")) {
                let mut sr = p.resource.clone();
                set_ext(&mut sr, BOOKED_AS_EXT, None, "");
                entries.push(entry("ServiceRequest", sr_id, sr, Some(p.version)));
            }
        }
        entries.push(entry("Appointment", &id, cancelled.clone(), Some(version)));
        Ok((entries, cancelled))
    }
}

impl Portal {
    /// The public waiting times (no login: they are about the offer, not about anyone), reused
    /// for [`WAITING_CACHE_MS`].
    pub async fn waiting_times(&self) -> AppResult<Arc<WaitingTimes>> {
        let now = datetime::now_ms();
        if let Some((at, w)) = self.fhir().waiting_cache().lock().as_ref() {
            if now - at < WAITING_CACHE_MS {
                return Ok(Arc::clone(w));
            }
        }
        let w = Arc::new(self.compute_waiting_times(now).await?);
        *self.fhir().waiting_cache().lock() = Some((now, Arc::clone(&w)));
        Ok(w)
    }

    async fn organizations(&self, system: &Actor, ids: Vec<String>) -> AppResult<Vec<Value>> {
        let mut found = Vec::new();
        for chunk in ids.chunks(100) {
            found.extend(self.all_as(system, "Organization", vec![("_id".to_string(), chunk.join(","))], parse).await?);
        }
        Ok(found)
    }

    async fn compute_waiting_times(&self, now: i64) -> AppResult<WaitingTimes> {
        let system = Actor::system();
        let today = fascicolo_domain::rome::today();
        let (first, last) = (today + Duration::days(1), today + Duration::days(HORIZON_DAYS));
        // every agenda of every service, and the organisations that run their sites
        let mut all: Vec<Arc<Vec<Agenda>>> = Vec::new();
        for s in rules::SERVICES {
            all.push(self.agendas(s.code).await?);
        }
        let providers: Vec<String> = all
            .iter()
            .flat_map(|a| a.iter().map(|x| x.provider.clone()))
            .filter(|p| !p.is_empty())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut orgs: HashMap<String, Value> = HashMap::new();
        for o in self.organizations(&system, providers).await? {
            orgs.insert(o["id"].as_str().unwrap_or_default().to_string(), o);
        }
        let parents: Vec<String> = orgs
            .values()
            .filter_map(|o| o["partOf"]["reference"].as_str()?.strip_prefix("Organization/").map(String::from))
            .chain(all.iter().flat_map(|a| a.iter().map(|x| format!("ats-{}", x.area))))
            .filter(|p| !orgs.contains_key(p))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for o in self.organizations(&system, parents).await? {
            orgs.insert(o["id"].as_str().unwrap_or_default().to_string(), o);
        }
        // the group of an agenda: its hospital's ASST, or the accredited providers of its ATS
        let group_of = |a: &Agenda| -> (String, String, &'static str) {
            let asst = orgs
                .get(&a.provider)
                .and_then(|o| o["partOf"]["reference"].as_str()?.strip_prefix("Organization/"))
                .and_then(|p| orgs.get(p))
                .filter(|o| o["type"].as_array().into_iter().flatten().any(|t| t["coding"][0]["code"] == "asst"));
            let ats = || orgs.get(&format!("ats-{}", a.area)).and_then(|o| o["name"].as_str()).unwrap_or(&a.area).to_string();
            match (a.accredited, asst) {
                (false, Some(o)) => {
                    (o["id"].as_str().unwrap_or_default().to_string(), o["name"].as_str().unwrap_or_default().to_string(), "asst")
                }
                // a public site whose ASST the registry does not name: with the others of its ATS
                (false, None) => (format!("public-{}", a.area), ats(), "public"),
                (true, _) => (format!("accredited-{}", a.area), ats(), "accredited"),
            }
        };
        // the bookings made so far, by agenda and class: kept or not
        let pairs = vec![("status".to_string(), "booked,fulfilled,arrived,checked-in,noshow".to_string())];
        let mut counts: HashMap<(String, &'static str), (u64, u64)> = HashMap::new();
        for v in self.all_as(&system, "Appointment", pairs, parse).await? {
            let Some(g) = ext_str(&v, GUARANTEE_EXT, "valueCode") else { continue };
            let class = match v["priority"].as_u64() {
                Some(1) => "U",
                Some(2) => "B",
                Some(5) => "D",
                Some(9) => "P",
                _ => continue,
            };
            if g == "none" {
                continue;
            }
            let Some(schedule) = v["slot"][0]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Slot/"))
                .and_then(rules::parse_slot_key)
                .map(|k| k.0.to_string())
            else {
                continue;
            };
            let c = counts.entry((schedule, class)).or_default();
            c.0 += 1;
            c.1 += u64::from(g == "kept");
        }
        let mut services = Vec::new();
        for (s, agendas) in rules::SERVICES.iter().zip(all.iter()) {
            let refs: Vec<&Agenda> = agendas.iter().collect();
            let taken = self.taken(&refs, first).await?;
            let mut groups: Vec<GroupWaits> = Vec::new();
            for a in agendas.iter() {
                let (id, name, kind) = group_of(a);
                let i = match groups.iter().position(|g| g.id == id) {
                    Some(i) => i,
                    None => {
                        groups.push(GroupWaits {
                            id,
                            name,
                            kind,
                            area: a.area.clone(),
                            agendas: 0,
                            median_days: None,
                            first_day: None,
                            bookings: ["U", "B", "D", "P"].iter().map(|c| ClassShare { class: c, bookings: 0, in_time: 0 }).collect(),
                        });
                        groups.len() - 1
                    }
                };
                let g = &mut groups[i];
                g.agendas += 1;
                for c in g.bookings.iter_mut() {
                    if let Some((n, k)) = counts.get(&(a.id.clone(), c.class)) {
                        c.bookings += n;
                        c.in_time += k;
                    }
                }
            }
            // the median over each group's agendas of the days to their first free slot
            for g in groups.iter_mut() {
                let mut days = Vec::new();
                let mut earliest: Option<Date> = None;
                for a in agendas.iter().filter(|a| group_of(a).0 == g.id) {
                    if let Some((day, _)) = first_free(a, first, last, &taken, "") {
                        days.push((day - today).whole_days() as f64);
                        earliest = Some(earliest.map_or(day, |e| e.min(day)));
                    }
                }
                g.median_days = median(days);
                g.first_day = earliest.map(|d| d.to_string());
            }
            // the ASSTs first, then other public sites, then the accredited providers
            let rank = |k: &str| ["asst", "public", "accredited"].iter().position(|x| *x == k);
            groups.sort_by(|x, y| (rank(x.kind), &x.area, &x.name).cmp(&(rank(y.kind), &y.area, &y.name)));
            services.push(ServiceWaits { code: s.code, name_it: s.name_it, name_en: s.name_en, diagnostic: s.diagnostic, groups });
        }
        Ok(WaitingTimes { computed_at: now, services })
    }
}

/// The IHE ITI Scheduling operations on `Appointment` (`$find`, `$hold`, `$book`), with the
/// Argonaut/IHE parameter names: `referral-identifier` carries the NRE, `patient-reference`
/// names the person (needed at the desk; a citizen's token names its own record), `start`
/// the first day wanted, `visit-type` the catalogue code when one NRE holds several services.
/// A proposed appointment's id is `{slot key}.{NRE}`: `$hold` and `$book` take it back as
/// `appointment-reference`. `$book` with an `appointment-resource` whose status is
/// `cancelled` cancels that appointment; with another slot, moves it.
pub async fn operation(portal: &Portal, actor: &Actor, op: &str, params: &Value) -> AppResult<Value> {
    let param = |name: &str| params["parameter"].as_array().into_iter().flatten().find(|p| p["name"] == name);
    let patient = param("patient-reference")
        .and_then(|p| p["valueReference"]["reference"].as_str())
        .map(|r| r.trim_start_matches("Patient/").to_string());
    let patient = patient.as_deref();
    match op {
        "$find" => {
            let nre = param("referral-identifier")
                .and_then(|p| p["valueIdentifier"]["value"].as_str())
                .ok_or_else(|| AppError::BadRequest("$find needs referral-identifier: the prescription's NRE".into()))?;
            let code = param("visit-type").and_then(|p| p["valueString"].as_str().or(p["valueCode"].as_str()));
            let from = param("start")
                .and_then(|p| p["valueDateTime"].as_str().or(p["valueDate"].as_str()))
                .map(|s| fascicolo_domain::rome::date_of(s).ok_or_else(|| AppError::BadRequest(format!("'{s}' is not a date"))))
                .transpose()?;
            let p = portal.prescription_by_nre(actor, patient, nre, code).await?;
            let found = portal.find(actor, patient, &p.id, from).await?;
            let mut entries: Vec<Value> = found
                .options
                .iter()
                .map(|o| {
                    json!({"fullUrl": format!("Appointment/{}.{}", o.key, p.nre.as_deref().unwrap_or_default()),
                    "resource": proposed(o, &found.prescription, "proposed", None), "search": {"mode": "match"}})
                })
                .collect();
            if found.protection {
                entries.push(json!({"resource": fascicolo_fhir::operation_outcome(&[fascicolo_fhir::OutcomeIssue::information(
                    "no site in the guarantee area has a date within the priority class deadline: the protection route applies (intramoenia or accredited private at the cost of the ticket)")]),
                    "search": {"mode": "outcome"}}));
            }
            Ok(json!({"resourceType": "Bundle", "type": "searchset", "total": found.options.len(), "entry": entries}))
        }
        "$hold" | "$book" => {
            if op == "$book" {
                if let Some(a) = param("appointment-resource").map(|p| &p["resource"]) {
                    let id = a["id"].as_str().ok_or_else(|| AppError::BadRequest("appointment-resource needs its id".into()))?;
                    if a["status"] == "cancelled" {
                        let b = portal.cancel(actor, patient, id).await?;
                        return Ok(bundle_of(&[booked(&b)]));
                    }
                    let key = a["slot"][0]["reference"].as_str().and_then(|r| r.strip_prefix("Slot/")).ok_or_else(|| {
                        AppError::BadRequest("to move an appointment, name the new Slot in appointment-resource.slot".into())
                    })?;
                    let b = portal.move_to(actor, patient, id, key).await?;
                    return Ok(bundle_of(&[booked(&b)]));
                }
            }
            let reference = param("appointment-reference")
                .and_then(|p| p["valueReference"]["reference"].as_str())
                .ok_or_else(|| AppError::BadRequest(format!("{op} needs appointment-reference: a proposed appointment of $find")))?;
            let id = reference.rsplit('/').next().unwrap_or_default();
            let (key, nre) =
                id.rsplit_once('.').ok_or_else(|| AppError::BadRequest(format!("'{reference}' is not a proposed appointment of $find")))?;
            let (schedule, _, _) = rules::parse_slot_key(key)
                .ok_or_else(|| AppError::BadRequest(format!("'{reference}' is not a proposed appointment of $find")))?;
            let code = schedule_code(portal, schedule).await?;
            let p = portal.prescription_by_nre(actor, patient, nre, Some(&code)).await?;
            if op == "$hold" {
                let (o, until) = portal.hold(actor, patient, &p.id, key).await?;
                Ok(bundle_of(&[proposed(&o, &p, "pending", Some(until))]))
            } else {
                let b = portal.book(actor, patient, &p.id, key).await?;
                Ok(bundle_of(&[booked(&b)]))
            }
        }
        _ => Err(AppError::NotSupported(format!("Appointment/{op} is not an operation this server supports"))),
    }
}

/// The catalogue code an agenda offers.
async fn schedule_code(portal: &Portal, schedule: &str) -> AppResult<String> {
    let s = match portal.fhir().read(&Actor::system(), "Schedule", schedule).await {
        Ok(s) => s.resource,
        Err(AppError::NotFound(_) | AppError::Gone(_)) => {
            return Err(AppError::BadRequest(format!("Schedule/{schedule} is not an agenda")))
        }
        Err(e) => return Err(e),
    };
    s["serviceType"][0]["coding"][0]["code"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| AppError::BadRequest("an agenda without a service".into()))
}

fn bundle_of(resources: &[Value]) -> Value {
    let entries: Vec<Value> = resources
        .iter()
        .map(|r| json!({"fullUrl": format!("Appointment/{}", r["id"].as_str().unwrap_or_default()), "resource": r, "search": {"mode": "match"}}))
        .collect();
    json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
}

/// A proposed (or held) appointment for an option, as `$find` and `$hold` answer it.
fn proposed(o: &Choice, p: &Prescription, status: &str, until: Option<i64>) -> Value {
    let participants = participants(&p.patient, "needs-action", &o.agenda);
    let mut ext = vec![
        json!({"url": "urn:fascicolo:within-deadline", "valueBoolean": o.in_time}),
        json!({"url": "urn:fascicolo:in-guarantee-area", "valueBoolean": o.in_area}),
        json!({"url": PROVIDER_KIND_EXT, "valueCode": if o.agenda.accredited { "accredited" } else { "public" }}),
    ];
    if let Some(d) = o.distance_km {
        ext.push(json!({"url": "urn:fascicolo:distance-km", "valueDecimal": (d * 10.0).round() / 10.0}));
    }
    if let Some(u) = until {
        ext.push(json!({"url": HOLD_UNTIL_EXT, "valueInstant": datetime::format_instant(u)}));
    }
    json!({"resourceType": "Appointment", "id": format!("{}.{}", o.key, p.nre.as_deref().unwrap_or_default()), "status": status,
        "serviceType": [{"coding": [{"system": SERVICE_SYSTEM, "code": p.code, "display": p.name}]}],
        "description": p.name, "start": datetime::format_instant(o.start_ms), "end": datetime::format_instant(o.end_ms),
        "slot": [{"reference": format!("Slot/{}", o.key)}], "basedOn": [{"reference": format!("ServiceRequest/{}", p.id)}],
        "participant": participants, "extension": ext})
}

/// A booked or cancelled appointment as the operations answer it: as stored.
fn booked(b: &Booking) -> Value {
    b.resource.clone()
}

/// A slot's state from its stored resource at `now`: an expired hold is free.
fn slot_state(s: &Value, version: i64, now: i64) -> SlotState {
    let version = if version > 0 { Some(version) } else { None };
    match s["status"].as_str() {
        Some("busy") => SlotState { version, held_for: None, busy: true },
        Some("busy-tentative") => {
            let until = ext_str(s, HOLD_UNTIL_EXT, "valueInstant").and_then(instant_ms).unwrap_or(0);
            let held_for = ext_str(s, HELD_FOR_EXT, "valueString").map(String::from);
            SlotState { version, held_for: if until >= now { held_for } else { None }, busy: false }
        }
        _ => SlotState { version, held_for: None, busy: false },
    }
}

/// The first free slot of an agenda between two days (a slot held for `mine` counts as free).
fn first_free(a: &Agenda, from: Date, to: Date, taken: &HashMap<String, SlotState>, mine: &str) -> Option<(Date, u16)> {
    let mine = holder_tag(mine);
    let mut day = match a.booked_until.and_then(|d| d.next_day()) {
        Some(d) if d > from => d,
        _ => from,
    };
    while day <= to {
        if a.template.opens_on(day, &a.istat, &a.closures) {
            for m in a.template.starts() {
                let key = rules::slot_key(&a.id, day, m);
                match taken.get(&key) {
                    None => return Some((day, m)),
                    Some(s) if !s.busy && s.held_for.as_deref().is_none_or(|h| h == mine.as_str()) => return Some((day, m)),
                    _ => {}
                }
            }
        }
        day = day.next_day()?;
    }
    None
}

/// A slot's start and end instants (ms) from its Rome day and minute.
pub fn slot_times(day: Date, minute: u16, length: u16) -> (i64, i64) {
    let start = fascicolo_domain::rome::at(day, (minute / 60) as u8, (minute % 60) as u8)
        .unwrap_or_else(|| OffsetDateTime::from_unix_timestamp(0).unwrap_or(OffsetDateTime::UNIX_EPOCH));
    let ms = (start.unix_timestamp_nanos() / 1_000_000) as i64;
    (ms, ms + i64::from(length) * 60_000)
}

fn set_ext(v: &mut Value, url: &str, value: Option<Value>, key: &str) {
    let mut list: Vec<Value> = v["extension"].as_array().cloned().unwrap_or_default().into_iter().filter(|e| e["url"] != url).collect();
    if let Some(x) = value {
        let mut e = json!({"url": url});
        e[key] = x;
        list.push(e);
    }
    if list.is_empty() {
        if let Some(o) = v.as_object_mut() {
            o.remove("extension");
        }
    } else {
        v["extension"] = Value::Array(list);
    }
}

/// An appointment's participants: the patient (with their answer), the site and the service.
fn participants(patient: &str, patient_status: &str, a: &Agenda) -> Vec<Value> {
    let mut out = vec![
        json!({"actor": {"reference": format!("Patient/{patient}")}, "status": patient_status}),
        json!({"actor": {"reference": format!("Location/{}", a.location), "display": a.site}, "status": "accepted"}),
    ];
    if let Some(hs) = &a.healthcare_service {
        out.push(json!({"actor": {"reference": format!("HealthcareService/{hs}")}, "status": "accepted"}));
    }
    out
}

fn slot_resource(key: &str, a: &Agenda, start_ms: i64, end_ms: i64, status: &str, hold: Option<(&str, i64)>) -> Value {
    let mut s = json!({"resourceType": "Slot", "id": key, "schedule": {"reference": format!("Schedule/{}", a.id)},
        "status": status, "start": datetime::format_instant(start_ms), "end": datetime::format_instant(end_ms),
        "serviceType": [{"coding": [{"system": SERVICE_SYSTEM, "code": a.code}]}]});
    let mut exts = vec![];
    if !a.istat.is_empty() {
        exts.push(json!({"url": ISTAT_EXT, "valueCode": a.istat}));
    }
    if let Some((sr, until)) = hold {
        exts.push(json!({"url": HOLD_UNTIL_EXT, "valueInstant": datetime::format_instant(until)}));
        exts.push(json!({"url": HELD_FOR_EXT, "valueString": holder_tag(sr)}));
    }
    if !exts.is_empty() {
        s["extension"] = Value::Array(exts);
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn appointment_resource(
    id: &str,
    b: &Booker,
    p: &Prescription,
    a: &Agenda,
    key: &str,
    start_ms: i64,
    end_ms: i64,
    guarantee: &str,
) -> Value {
    let participants = participants(&b.patient, "accepted", a);
    let mut v = json!({"resourceType": "Appointment", "id": id, "status": "booked",
        "serviceType": [{"coding": [{"system": SERVICE_SYSTEM, "code": p.code, "display": p.name}]}],
        "description": p.name, "start": datetime::format_instant(start_ms), "end": datetime::format_instant(end_ms),
        "minutesDuration": (end_ms - start_ms) / 60_000,
        "created": fascicolo_domain::rome::today().to_string(),
        "slot": [{"reference": format!("Slot/{key}")}],
        "basedOn": [{"reference": format!("ServiceRequest/{}", p.id)}],
        "participant": participants,
        "extension": [{"url": GUARANTEE_EXT, "valueCode": guarantee}, {"url": CHANNEL_EXT, "valueCode": b.channel}]});
    if let Some(pr) = p.priority {
        v["priority"] = json!(match pr {
            Priority::U => 1,
            Priority::B => 2,
            Priority::D => 5,
            Priority::P => 9,
        });
    }
    if let Some(s) = p.service {
        v["patientInstruction"] = json!(s.preparation_it);
    }
    v
}

impl Booking {
    /// An `Appointment` as the pages show it (where, the service's preparation, the wait
    /// guarantee, a late cancellation).
    pub fn of(v: &Value) -> Booking {
        booking_of(v, None)
    }
}

fn booking_of(v: &Value, a: Option<&Agenda>) -> Booking {
    let code = v["serviceType"][0]["coding"][0]["code"].as_str().unwrap_or_default().to_string();
    let service = rules::service(&code);
    let site = place_of(v).to_string();
    Booking {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        status: v["status"].as_str().unwrap_or_default().to_string(),
        service: v["description"].as_str().unwrap_or_default().to_string(),
        code,
        start_ms: v["start"].as_str().and_then(instant_ms).unwrap_or(0),
        end_ms: v["end"].as_str().and_then(instant_ms).unwrap_or(0),
        site,
        town: a.map(|a| a.town.clone()).unwrap_or_default(),
        prescription: v["basedOn"][0]["reference"].as_str().and_then(|r| r.strip_prefix("ServiceRequest/")).map(String::from),
        guarantee: ext_str(v, GUARANTEE_EXT, "valueCode").map(String::from),
        late: ext(v, LATE_EXT).and_then(|e| e["valueBoolean"].as_bool()).unwrap_or(false),
        preparation_it: service.map(|s| s.preparation_it),
        preparation_en: service.map(|s| s.preparation_en),
        channel: ext_str(v, CHANNEL_EXT, "valueCode").map(String::from),
        resource: v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn a_reminder_leaves_the_day_before_once_per_appointment() {
        let now = 1_800_000_000_000;
        let h = 3_600_000;
        let far = reminder("ag-1-202701101020-1", "p1", now + 72 * h, now).unwrap();
        assert_eq!(far.available_at, now + 48 * h, "a day before");
        assert_eq!(far.kind, REMINDER_KIND);
        assert_eq!(far.patient_key, fascicolo_domain::PatientKey::for_patient_id("p1"));
        let payload: Value = serde_json::from_str(&far.payload).unwrap();
        assert_eq!(payload, json!({"appointment": "ag-1-202701101020-1", "start": now + 72 * h}));
        // the same appointment asked twice: the same message (the store keeps one)
        assert_eq!(reminder("ag-1-202701101020-1", "p1", now + 72 * h, now + 5).unwrap().id, far.id);
        assert_ne!(reminder("ag-1-202701101020-2", "p1", now + 72 * h, now).unwrap().id, far.id);
        // booked for tomorrow: at once; for within two hours: none
        assert_eq!(reminder("x", "p1", now + 5 * h, now).unwrap().available_at, now);
        assert!(reminder("x", "p1", now + h, now).is_none());
    }

    fn agenda(template: &str) -> Agenda {
        Agenda {
            id: "ag-1".into(),
            code: "89.52".into(),
            template: Template::parse(template).unwrap(),
            closures: vec![],
            area: "030321".into(),
            accredited: false,
            location: "loc".into(),
            site: "Site".into(),
            town: "Milano".into(),
            istat: "015146".into(),
            position: None,
            healthcare_service: None,
            booked_until: None,
            provider: "hsp-1".into(),
        }
    }

    #[test]
    fn the_first_free_slot_skips_taken_ones_and_expired_holds_are_free() {
        let a = agenda("days=1-5;hours=08:00-09:00;minutes=30");
        let mut taken = HashMap::new();
        // Wednesday 9 December 2026: 08:00 busy, 08:30 held for someone else
        taken.insert(rules::slot_key("ag-1", date!(2026 - 12 - 09), 480), SlotState { version: Some(1), held_for: None, busy: true });
        taken.insert(
            rules::slot_key("ag-1", date!(2026 - 12 - 09), 510),
            SlotState { version: Some(1), held_for: Some(holder_tag("other")), busy: false },
        );
        // Monday 7 is Sant'Ambrogio and Tuesday 8 the Immacolata in Milan
        let f = first_free(&a, date!(2026 - 12 - 07), date!(2027 - 01 - 31), &taken, "mine");
        assert_eq!(f, Some((date!(2026 - 12 - 10), 480)));
        // a slot held for this very prescription is offered to it
        let f = first_free(&a, date!(2026 - 12 - 07), date!(2027 - 01 - 31), &taken, "other");
        assert_eq!(f, Some((date!(2026 - 12 - 09), 510)));
        // an expired hold reads as free
        let s = json!({"status": "busy-tentative", "extension": [{"url": HOLD_UNTIL_EXT, "valueInstant": "2020-01-01T00:00:00Z"},
            {"url": HELD_FOR_EXT, "valueReference": {"reference": "ServiceRequest/x"}}]});
        let st = slot_state(&s, 3, datetime::now_ms());
        assert!(!st.busy && st.held_for.is_none());
        let s = json!({"status": "busy-tentative", "extension": [{"url": HOLD_UNTIL_EXT, "valueInstant": "2999-01-01T00:00:00Z"},
            {"url": HELD_FOR_EXT, "valueString": holder_tag("x")}]});
        assert_eq!(slot_state(&s, 3, datetime::now_ms()).held_for, Some(holder_tag("x")));
        // nothing in range
        assert_eq!(first_free(&a, date!(2026 - 12 - 12), date!(2026 - 12 - 13), &taken, "m"), None);
        // the bookings made elsewhere fill the agenda up to a day
        let mut full = a.clone();
        full.booked_until = Some(date!(2026 - 12 - 18));
        assert_eq!(first_free(&full, date!(2026 - 12 - 07), date!(2027 - 01 - 31), &taken, "m"), Some((date!(2026 - 12 - 21), 480)));
        assert_eq!(first_free(&full, date!(2026 - 12 - 22), date!(2027 - 01 - 31), &taken, "m"), Some((date!(2026 - 12 - 22), 480)));
    }

    #[test]
    fn slot_times_are_rome_times() {
        // 9:30 in Rome in winter is 8:30 UTC
        let (s, e) = slot_times(date!(2026 - 12 - 10), 570, 20);
        assert_eq!(datetime::format_instant(s), "2026-12-10T08:30:00.000Z");
        assert_eq!(e - s, 20 * 60_000);
        let (s, _) = slot_times(date!(2027 - 06 - 10), 570, 20);
        assert_eq!(datetime::format_instant(s), "2027-06-10T07:30:00.000Z");
    }

    #[test]
    fn extensions_are_set_replaced_and_removed() {
        let mut v = json!({"resourceType": "ServiceRequest"});
        set_ext(&mut v, BOOKED_AS_EXT, Some(json!({"reference": "Appointment/a"})), "valueReference");
        set_ext(&mut v, BOOKED_AS_EXT, Some(json!({"reference": "Appointment/b"})), "valueReference");
        assert_eq!(v["extension"].as_array().unwrap().len(), 1);
        assert_eq!(Prescription::from(&v, 1).booked_as.as_deref(), Some("Appointment/b"));
        set_ext(&mut v, BOOKED_AS_EXT, None, "");
        assert!(v.get("extension").is_none());
    }
}
