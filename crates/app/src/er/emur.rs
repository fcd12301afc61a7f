//! The national flow of emergency-room accesses (EMUR-PS, `flsProSoc`): one month of a
//! hospital's closed accesses as the ministry's XML, valid against its XSD
//! (`docs/er-feed.md` says what each element is made from, and what is left out and why).
//!
//! The caller (the hospital's own system, or the platform) must send for every room exported;
//! the rooms' accesses are then found by the service, and each person in them is read through the
//! gate as the caller, so the export is in that citizen's access log. Patients appear only by pseudonym (`CUNI`): a keyed hash of the codice fiscale with the
//! region's key, 88 characters like the ministry's, the same person giving the same pseudonym
//! each month and the code not being recoverable from it.

use super::{details_of, encounter_id, visit_of, Er, ErService, ACCESS_SYSTEM_PREFIX};
use crate::gate::Actor;
use crate::{AppError, AppResult};
use base64::Engine as _;
use fascicolo_domain::er::{Decision, Details, Visit, OUTCOME_ADMITTED, OUTCOME_TRANSFERRED};
use fascicolo_domain::rome;
use fascicolo_domain::systems::{HSP_SYSTEM, ISTAT_EXT};
use hmac::Mac as _;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use time::{Date, Month, OffsetDateTime};

/// The namespace of the flow.
pub const EMUR_NS: &str = "http://flussi.mds.it/flsProSoc";
/// Lombardy's region code in the flows.
const LOMBARDY: &str = "030";
const LOMBARD_PROVINCES: [&str; 12] = ["VA", "CO", "SO", "MI", "BG", "BS", "PV", "CR", "MN", "LC", "LO", "MB"];

/// A month's export.
#[derive(Debug, Clone)]
pub struct EmurExport {
    /// The `flsProSoc` document.
    pub xml: String,
    /// Accesses in it.
    pub accesses: usize,
    /// Accesses of the month left out, with why (the hospital's number, the reason).
    pub left_out: Vec<(String, String)>,
}

/// One access as the flow needs it, before it is written.
struct Row<'a> {
    er: &'a Er,
    institute: &'a str,
    number: String,
    visit: Visit,
    details: Details,
    person: Person,
}

/// What the flow says of the person.
enum Person {
    Identified {
        cuni: String,
        birth_year: String,
        birth_month: Option<String>,
        gender: char,
        citizenship: String,
        region: String,
        municipality: String,
    },
    NotIdentified {
        cuni: String,
        age_class: u8,
    },
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `(date, HH:MM)` of an instant in Rome.
fn day_time(t: OffsetDateTime) -> (String, String) {
    let l = t.to_offset(rome::offset(t));
    (format!("{:04}-{:02}-{:02}", l.year(), u8::from(l.month()), l.day()), format!("{:02}:{:02}", l.hour(), l.minute()))
}

/// The flow's 16-digit number of an access: the year of arrival and 12 digits, the hospital's
/// own number when it is one of up to 12 digits, or else digits derived from the access's id
/// (stable: the same access always gets the same number).
fn access_number(year: i32, er: &str, number: &str) -> String {
    let digits = if !number.is_empty() && number.len() <= 12 && number.bytes().all(|b| b.is_ascii_digit()) {
        number.parse::<u64>().unwrap_or(0)
    } else {
        let id = encounter_id(er, number);
        let hex: String = id.chars().filter(char::is_ascii_hexdigit).take(15).collect();
        u64::from_str_radix(&hex, 16).unwrap_or(0) % 1_000_000_000_000
    };
    format!("{:04}{digits:012}", year.clamp(1000, 2999))
}

impl ErService {
    /// The pseudonym (`CUNI`) of a codice fiscale or of an access not identified: HMAC-SHA-512
    /// with the region's key, base64 (88 characters).
    fn cuni(&self, what: &str) -> AppResult<String> {
        let key = self.cuni_key.as_ref().ok_or_else(|| {
            AppError::NotSupported(
                "the national flow needs the region's pseudonym key: set FASCICOLO_ER__CUNI_KEY (see docs/er-feed.md)".into(),
            )
        })?;
        let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(key)
            .map_err(|_| AppError::NotSupported("the pseudonym key is not usable".into()))?;
        mac.update(what.as_bytes());
        Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// The national flow (EMUR-PS) of one month: the accesses that arrived in it (Rome time) and
    /// have ended, at the emergency rooms of `hospital` (an Organization id), or of every
    /// hospital the caller sends for when `None`. The caller is the hospital's own system or the
    /// platform; each person is read through the gate as the caller, into the access log.
    pub async fn emur(&self, actor: &Actor, year: i32, month: Month, hospital: Option<&str>) -> AppResult<EmurExport> {
        self.ready().await?;
        if self.cuni_key.is_none() {
            self.cuni("")?;
        }
        let first = Date::from_calendar_date(year, month, 1).map_err(|_| AppError::BadRequest(format!("no such month: {year}-{month}")))?;
        let next = if month == Month::December {
            Date::from_calendar_date(year + 1, Month::January, 1)
        } else {
            Date::from_calendar_date(year, month.next(), 1)
        }
        .map_err(|_| AppError::BadRequest("the month is out of range".into()))?;
        let (Some(from), Some(to)) = (rome::at(first, 0, 0), rome::at(next, 0, 0)) else {
            return Err(AppError::BadRequest("the month is out of range".into()));
        };
        let ers: Vec<Er> = {
            let inner = self.inner.read();
            inner.ers.iter().filter(|e| hospital.is_none_or(|h| e.hospital == h)).cloned().collect()
        };
        let mine: Vec<Er> = ers.iter().filter(|e| Self::check_sender(actor, e).is_ok()).cloned().collect();
        if let Some(h) = hospital {
            if ers.is_empty() {
                return Err(AppError::NotFound(format!("Organization/{h} has no emergency department in the registry")));
            }
            if mine.len() < ers.len() {
                return Err(AppError::Forbidden(format!("the national flow of Organization/{h} is sent by its own system or the region")));
            }
        } else if mine.is_empty() {
            return Err(AppError::Forbidden("this client sends for no emergency department".into()));
        }
        // each hospital's national code (HSP.11)
        let mut institutes: HashMap<String, String> = HashMap::new();
        for er in &mine {
            if institutes.contains_key(&er.hospital) {
                continue;
            }
            let org = self.fhir.read(&Actor::system(), "Organization", &er.hospital).await?;
            let code = org.resource["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|i| i["system"] == HSP_SYSTEM)
                .and_then(|i| i["value"].as_str())
                .filter(|c| (6..=8).contains(&c.len()))
                .ok_or_else(|| {
                    AppError::Conflict(format!("Organization/{} has no HSP.11 code ({HSP_SYSTEM}), which the flow needs", er.hospital))
                })?;
            institutes.insert(er.hospital.clone(), code.to_string());
        }
        let (from_s, to_s) = (super::iso(from), super::iso(to));
        let mut rows: Vec<Row> = Vec::new();
        let mut left_out = Vec::new();
        let mut people: HashMap<String, Result<Value, String>> = HashMap::new();
        for er in &mine {
            let location = format!("Location/{}", er.id);
            let ge = format!("ge{from_s}");
            let lt = format!("lt{to_s}");
            // the room's accesses, which the caller sends for (checked above): a search across
            // patients, which the gate keeps for the platform, so it is the service's; each
            // person in them is then read as the caller, into their access log
            let found = self.search_all("Encounter", &[("location", &location), ("date", &ge), ("date", &lt)]).await?;
            let system = format!("{ACCESS_SYSTEM_PREFIX}{}", er.id);
            for enc in found {
                let number = enc["identifier"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|i| i["system"] == system.as_str())
                    .and_then(|i| i["value"].as_str())
                    .unwrap_or_default()
                    .to_string();
                let visit = visit_of(&enc);
                // the month an access belongs to is the month of its arrival
                let Some(arrival) = visit.arrival else {
                    left_out.push((number, "no arrival recorded".into()));
                    continue;
                };
                if arrival < from || arrival >= to {
                    continue;
                }
                if visit.exit.is_none() {
                    left_out.push((number, "still open: it goes in once it has ended".into()));
                    continue;
                }
                let details = details_of(&enc);
                let subject = enc["subject"]["reference"].as_str().unwrap_or_default().to_string();
                let person = if subject == format!("Patient/{}", super::unidentified_id(&er.id)) {
                    match details.age_class {
                        Some(age_class) => Person::NotIdentified { cuni: self.cuni(&format!("anon|{}|{number}", er.id))?, age_class },
                        None => {
                            left_out.push((number, "a person not identified needs 'ageClass' (presumed age, 0–6)".into()));
                            continue;
                        }
                    }
                } else {
                    let id = subject.strip_prefix("Patient/").unwrap_or_default().to_string();
                    if !people.contains_key(&id) {
                        let read = match self.fhir.read(actor, "Patient", &id).await {
                            Ok(p) => Ok(p.resource),
                            Err(AppError::Store(e)) => return Err(AppError::Store(e)),
                            Err(e) => Err(e.to_string()),
                        };
                        people.insert(id.clone(), read);
                    }
                    match people.get(&id) {
                        Some(Ok(p)) => match self.identified(p) {
                            Ok(person) => person,
                            Err(why) => {
                                left_out.push((number, why));
                                continue;
                            }
                        },
                        Some(Err(why)) => {
                            left_out.push((number, format!("the patient's record cannot be read: {why}")));
                            continue;
                        }
                        None => continue,
                    }
                };
                if let Some(why) = missing(&visit, &details) {
                    left_out.push((number, why));
                    continue;
                }
                let institute = institutes.get(&er.hospital).map(String::as_str).unwrap_or_default();
                rows.push(Row { er, institute, number, visit, details, person });
            }
        }
        rows.sort_by(|a, b| (a.institute, a.visit.arrival, &a.number).cmp(&(b.institute, b.visit.arrival, &b.number)));
        left_out.sort();
        let mut xml = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<flsProSoc xmlns=\"{EMUR_NS}\">\n");
        for r in &rows {
            write_access(&mut xml, r);
        }
        xml.push_str("</flsProSoc>\n");
        Ok(EmurExport { xml, accesses: rows.len(), left_out })
    }

    /// What the flow says of a registered citizen, from their record.
    fn identified(&self, p: &Value) -> Result<Person, String> {
        let cf = crate::auth::cf_of(p).ok_or("the patient's record has no codice fiscale")?;
        let birth = p["birthDate"].as_str().unwrap_or_default();
        let birth_year =
            birth.get(0..4).filter(|y| y.bytes().all(|b| b.is_ascii_digit())).ok_or("the patient's record has no birth date")?;
        let birth_month = birth.get(5..7).map(String::from);
        let gender = match p["gender"].as_str() {
            Some("male") => '1',
            Some("female") => '2',
            _ => '9',
        };
        let citizenship = p["extension"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["url"] == "http://hl7.org/fhir/StructureDefinition/patient-nationality")
            .and_then(|x| x["extension"].as_array())
            .and_then(|parts| parts.iter().find(|p| p["url"] == "code"))
            .and_then(|c| c["valueCodeableConcept"]["coding"][0]["code"].as_str())
            .filter(|c| c.len() == 2)
            .unwrap_or("IT")
            .to_ascii_uppercase();
        let home = p["address"].as_array().and_then(|a| a.iter().find(|a| a["use"] != "old").or_else(|| a.first()));
        let municipality = home
            .and_then(|a| a["_city"]["extension"].as_array())
            .and_then(|x| x.iter().find(|x| x["url"] == ISTAT_EXT))
            .and_then(|x| x["valueCode"].as_str())
            .filter(|c| c.len() == 6)
            .ok_or("the patient's address has no municipality code (ISTAT)")?;
        let province = home.and_then(|a| a["district"].as_str()).unwrap_or_default();
        // the flow's region of residence: Lombardy for the region's own municipalities (the
        // ISTAT codes of Lombard provinces run 012–020 and 097, 098, 108)
        let lombard = LOMBARD_PROVINCES.contains(&province)
            || matches!(&municipality[..3], "012" | "013" | "014" | "015" | "016" | "017" | "018" | "019" | "020" | "097" | "098" | "108");
        if !lombard {
            return Err("the patient lives outside Lombardy: their region's code is not known here".into());
        }
        Ok(Person::Identified {
            cuni: self.cuni(cf).map_err(|e| e.to_string())?,
            birth_year: birth_year.to_string(),
            birth_month,
            gender,
            citizenship,
            region: LOMBARDY.into(),
            municipality: municipality.to_string(),
        })
    }
}

/// What the flow needs that the access does not say (`None` when it has all).
fn missing(v: &Visit, d: &Details) -> Option<String> {
    let need = |what: &str, field: &str| Some(format!("the hospital has not sent the {what} ('{field}')"));
    if d.arrival_mode.is_none() {
        return need("arrival mode", "arrivalMode");
    }
    if d.sent_by.is_none() {
        return need("sender", "sentBy");
    }
    if d.main_problem.is_none() {
        return need("main problem", "mainProblem");
    }
    match v.exit.map(|e| e.0) {
        Some(OUTCOME_ADMITTED) if d.admission.is_none() => need("admission number and ward", "admission"),
        Some(OUTCOME_TRANSFERRED) if d.transfer.is_none() => need("receiving hospital and reason", "transfer"),
        _ => None,
    }
}

fn el(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", esc(value));
}

fn write_access(out: &mut String, r: &Row) {
    let Some(arrival) = r.visit.arrival else { return };
    let Some((outcome, exit)) = r.visit.exit else { return };
    let d = &r.details;
    let (day, hm) = day_time(arrival);
    let year = day.get(..4).and_then(|y| y.parse().ok()).unwrap_or(arrival.year());
    out.push_str("<Accesso>");
    el(out, "Identificativo", &access_number(year, &r.er.id, &r.number));
    out.push_str("<Erogatore>");
    el(out, "CodiceIstituto", r.institute);
    out.push_str("</Erogatore><Entrata>");
    el(out, "Data", &day);
    el(out, "Ora", &hm);
    out.push_str("</Entrata>");
    el(out, "ModalitaArrivo", &d.arrival_mode.unwrap_or(9).to_string());
    el(out, "ResponsabileInvio", &d.sent_by.unwrap_or(9).to_string());
    el(out, "ProblemaPrincipale", &format!("{:02}", d.main_problem.unwrap_or(31)));
    // the code given at triage on arrival; N when no triage was done (someone who left first)
    let triage = r.visit.triages.values().next().map_or('N', |t| char::from(b'0' + t.code()));
    el(out, "Triage", &triage.to_string());
    out.push_str("<Assistito>");
    match &r.person {
        Person::Identified { cuni, birth_year, birth_month, gender, citizenship, region, municipality } => {
            el(out, "CUNI", cuni);
            el(out, "ValiditaCI", "0");
            el(out, "TipologiaCI", "0");
            out.push_str("<DatiAnagrafici><Eta><Nascita>");
            el(out, "Anno", birth_year);
            if let Some(m) = birth_month {
                el(out, "Mese", m);
            }
            out.push_str("</Nascita></Eta>");
            el(out, "Genere", &gender.to_string());
            el(out, "Cittadinanza", citizenship);
            out.push_str("<Residenza>");
            el(out, "Regione", region);
            el(out, "Comune", municipality);
            out.push_str("</Residenza></DatiAnagrafici>");
        }
        Person::NotIdentified { cuni, age_class } => {
            el(out, "CUNI", cuni);
            el(out, "ValiditaCI", "1");
            el(out, "TipologiaCI", "99");
            out.push_str("<DatiAnagrafici><Eta>");
            el(out, "Presunta", &age_class.to_string());
            out.push_str("</Eta>");
            el(out, "Genere", "9");
            el(out, "Cittadinanza", "XX");
            out.push_str("<Residenza>");
            el(out, "Regione", "999");
            el(out, "Comune", "999999");
            out.push_str("</Residenza></DatiAnagrafici>");
        }
    }
    out.push_str("<Prestazioni>");
    if let Some(t) = r.visit.take_over {
        let (day, hm) = day_time(t);
        out.push_str("<PresaInCarico>");
        el(out, "Data", &day);
        el(out, "Ora", &hm);
        out.push_str("</PresaInCarico>");
    }
    if let Some((main, rest)) = d.diagnoses.split_first() {
        out.push_str("<Diagnosi>");
        el(out, "DiagnosiPrincipale", main);
        for x in rest.iter().take(4) {
            el(out, "DiagnosiSecondaria", x);
        }
        out.push_str("</Diagnosi>");
    }
    if let Some((main, rest)) = d.services.split_first() {
        out.push_str("<Prestazione>");
        el(out, "PrestazionePrincipale", main);
        for x in rest.iter().take(4) {
            el(out, "PrestazioneSecondaria", x);
        }
        out.push_str("</Prestazione>");
    }
    out.push_str("</Prestazioni><Dimissione>");
    el(out, "EsitoTrattamento", &outcome.to_string());
    // when the destination was decided (the last decision), and when the person left
    if let Some((at, _)) = r.visit.decisions.iter().next_back() {
        let (day, hm) = day_time(*at);
        el(out, "DataDest", &day);
        el(out, "OraDest", &hm);
    }
    let (day, hm) = day_time(exit);
    el(out, "Data", &day);
    el(out, "Ora", &hm);
    if outcome == OUTCOME_ADMITTED {
        if let Some((number, ward)) = &d.admission {
            out.push_str("<Ricovero>");
            el(out, "Progressivo", number);
            el(out, "CodiceSpecialitaReparto", ward);
            out.push_str("</Ricovero>");
        }
    }
    if outcome == OUTCOME_TRANSFERRED {
        if let Some((hospital, reason)) = &d.transfer {
            out.push_str("<Trasferimento>");
            el(out, "Motivo", &reason.to_string());
            el(out, "Istituto", hospital);
            out.push_str("</Trasferimento>");
        }
    }
    out.push_str("</Dimissione>");
    // short observation (OBI): from the decision to observe to the exit
    if let Some((at, _)) = r.visit.decisions.iter().find(|(_, d)| **d == Decision::Observation) {
        let (d_in, h_in) = day_time(*at);
        out.push_str("<OBI>");
        el(out, "DataIngresso", &d_in);
        el(out, "OraIngresso", &h_in);
        el(out, "DataUscita", &day);
        el(out, "OraUscita", &hm);
        out.push_str("</OBI>");
    }
    out.push_str("</Assistito>");
    el(out, "TipoTrasmissione", "I");
    out.push_str("</Accesso>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_numbers_have_the_flows_shape() {
        assert_eq!(access_number(2026, "loc-ps-1", "123"), "2026000000000123");
        let hashed = access_number(2026, "loc-ps-1", "SIM-abc-7");
        assert_eq!(hashed.len(), 16);
        assert!(hashed.starts_with("2026") && hashed.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(hashed, access_number(2026, "loc-ps-1", "SIM-abc-7"), "stable");
        assert_ne!(hashed, access_number(2026, "loc-ps-2", "SIM-abc-7"));
    }

    #[test]
    fn times_are_romes() {
        // 23:30 UTC on 31 July is 1 August in Rome (summer time), 30 minutes past one
        let t = time::macros::datetime!(2026-07-31 23:30 UTC);
        assert_eq!(day_time(t), ("2026-08-01".into(), "01:30".into()));
        let w = time::macros::datetime!(2026-12-31 23:30 UTC);
        assert_eq!(day_time(w), ("2027-01-01".into(), "00:30".into()));
    }
}
