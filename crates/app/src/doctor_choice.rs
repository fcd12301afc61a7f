//! Choosing or changing the family doctor (medico di medicina generale) or the pediatrician
//! (pediatra di libera scelta): the doctors of the person's ATS who can take them, by age and
//! free places, and the change itself, which takes effect at once.
//!
//! Each doctor's list is a `Group` (`lista-{practitioner}`, managed by the Practitioner) whose
//! `quantity` counts the people who chose them. A change writes the Patient
//! (`generalPractitioner`) and both lists in one transaction whose entries carry the versions
//! just read (`ifMatch`; a list not yet written is created, which fails if someone else created
//! it first). Two people racing for a doctor's last place cannot both get it: the second commit
//! fails on the list's version and is retried from a fresh read, which finds the list full.
//! The new doctor's care relation is the Patient's `generalPractitioner`, the fact the privacy
//! gate reads, so the new doctor gains access and the old one loses it in the same commit.

use crate::portal::Portal;
use crate::{Actor, AppError, AppResult, Who};
use fascicolo_fhir::datetime;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The id prefix of a doctor's list (`Group/lista-{practitioner}`).
pub const LIST_PREFIX: &str = "lista-";
/// How often a change is retried when another one committed first.
const RETRIES: usize = 40;

/// Most people on one list (massimale), by kind of doctor. Configurable; national agreements
/// set 1,500 for family doctors and 880 for pediatricians.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    pub gp: i64,
    pub pediatrician: i64,
}

impl Default for Ceilings {
    fn default() -> Self {
        Ceilings { gp: 1500, pediatrician: 880 }
    }
}

impl Ceilings {
    fn of(&self, role: &str) -> i64 {
        if role == "pediatrician" {
            self.pediatrician
        } else {
            self.gp
        }
    }
}

/// A doctor one may choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub practitioner: String,
    pub name: String,
    /// `gp` or `pediatrician`.
    pub role: String,
    pub gender: String,
    /// People on the list now, and its ceiling.
    pub listed: i64,
    pub ceiling: i64,
}

impl Candidate {
    pub fn free(&self) -> i64 {
        (self.ceiling - self.listed).max(0)
    }
}

/// What a person may choose: their doctor now, and the doctors of their ATS they may take.
#[derive(Debug, Clone)]
pub struct DoctorChoice {
    pub patient: String,
    /// The person's name ("Given Family").
    pub name: String,
    pub age: i32,
    /// The kinds of doctor the age allows (`pediatrician`, `gp`).
    pub roles: Vec<&'static str>,
    pub current: Option<Candidate>,
    /// Doctors of the kinds allowed, the current one left out, by surname.
    pub candidates: Vec<Candidate>,
}

/// The kinds of doctor a person may have at an age: a pediatrician under 6, either between 6
/// and 14, a family doctor from 14.
pub fn roles_for_age(age: i32) -> Vec<&'static str> {
    match age {
        a if a < 6 => vec!["pediatrician"],
        a if a < 14 => vec!["pediatrician", "gp"],
        _ => vec!["gp"],
    }
}

/// Whole years from a birth date (`YYYY-MM-DD`) to `today` (the privacy rules' own count).
pub fn age_on(birth: &str, today: time::Date) -> Option<i32> {
    let d = time::Date::parse(birth.get(..10)?, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(fascicolo_domain::privacy::age_on(d, today))
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

/// A commit that lost a race (someone else changed a list or the Patient first): worth a retry.
pub(crate) fn lost_race(e: &AppError) -> bool {
    match e {
        AppError::Conflict(_) | AppError::PreconditionFailed(_) => true,
        AppError::Store(fascicolo_store::StoreError::Conflict { .. }) => true,
        AppError::Invalid(issues) => !issues.is_empty() && issues.iter().all(|i| i.code == "conflict"),
        _ => false,
    }
}

impl Portal {
    /// The record a citizen may choose the doctor for: their own, or a minor child's as a
    /// parent. A delegation does not cover it.
    async fn choosing_for(&self, actor: &Actor) -> AppResult<String> {
        self.holder_or_parent(actor, "the doctor is chosen by the citizen, or a parent for a minor").await
    }

    /// The record the citizen acts on when they hold it or are a parent of the minor who does
    /// (what personal choices and statements need); refused with `why` otherwise.
    pub(crate) async fn holder_or_parent(&self, actor: &Actor, why: &str) -> AppResult<String> {
        let record = Self::record_of(actor)?;
        let Who::Citizen { cf, patient } = &actor.who else {
            return Err(AppError::Forbidden(why.into()));
        };
        if patient.as_deref() == Some(record.as_str()) {
            return Ok(record);
        }
        let reps = self.fhir().represented(cf).await?;
        match reps.iter().find(|r| r.patient == record) {
            Some(r) if r.acting_as == crate::auth::ActingAs::Parent => Ok(record),
            _ => Err(AppError::Forbidden(format!("{why}: a delegation does not cover it"))),
        }
    }

    /// The doctors of these roles in one ATS, with their lists' counts (as the platform: the
    /// registry's facts, names and counts only).
    async fn doctors_of(&self, ats: &str, roles: &[&str], ceilings: Ceilings) -> AppResult<Vec<Candidate>> {
        let system = Actor::system();
        let pairs = vec![("organization".to_string(), ats.to_string()), ("active".to_string(), "true".to_string())];
        let role_rows = self.all_as(&system, "PractitionerRole", pairs, parse).await?;
        let mut by_id: HashMap<String, String> = HashMap::new();
        for r in &role_rows {
            let role = r["code"][0]["coding"][0]["code"].as_str().unwrap_or_default();
            if let (true, Some(p)) =
                (roles.contains(&role), r["practitioner"]["reference"].as_str().and_then(|p| p.strip_prefix("Practitioner/")))
            {
                by_id.insert(p.to_string(), role.to_string());
            }
        }
        let mut ids: Vec<String> = by_id.keys().cloned().collect();
        ids.sort();
        let mut out = Vec::new();
        for chunk in ids.chunks(100) {
            let pairs = vec![("_id".to_string(), chunk.join(","))];
            let people = self.all_as(&system, "Practitioner", pairs, parse).await?;
            let list_ids: Vec<String> = chunk.iter().map(|p| format!("{LIST_PREFIX}{p}")).collect();
            let lists = self.all_as(&system, "Group", vec![("_id".to_string(), list_ids.join(","))], parse).await?;
            for p in people {
                let Some(id) = p["id"].as_str() else { continue };
                let role = by_id.get(id).cloned().unwrap_or_default();
                let listed = match lists.iter().find(|g| g["id"] == format!("{LIST_PREFIX}{id}").as_str()) {
                    Some(g) => g["quantity"].as_i64().unwrap_or(0),
                    None => self.listed_in_registry(id).await?,
                };
                out.push(Candidate {
                    practitioner: id.to_string(),
                    name: crate::auth::display_name(&p),
                    gender: p["gender"].as_str().unwrap_or_default().to_string(),
                    ceiling: ceilings.of(&role),
                    role,
                    listed,
                });
            }
        }
        out.sort_by_cached_key(|c| (fascicolo_fhir::params::normalize(&c.name), c.practitioner.clone()));
        Ok(out)
    }

    /// How many active people have chosen this doctor, counted in the registry (a list not yet
    /// written starts from this).
    async fn listed_in_registry(&self, practitioner: &str) -> AppResult<i64> {
        let pairs = vec![
            ("general-practitioner".to_string(), format!("Practitioner/{practitioner}")),
            ("active".to_string(), "true".to_string()),
            ("_summary".to_string(), "count".to_string()),
        ];
        let page = self.fhir().search(&Actor::system(), Some("Patient"), &pairs, "").await?;
        Ok(page.total.unwrap_or(0) as i64)
    }

    /// What the signed-in citizen (or parent) may choose for the record they act on.
    pub async fn doctor_choice(&self, actor: &Actor, ceilings: Ceilings) -> AppResult<DoctorChoice> {
        let patient_id = self.choosing_for(actor).await?;
        self.choice_of(actor, &patient_id, ceilings).await
    }

    /// The ASST registry office at the desk: what a person may choose (the Patient read as the
    /// operator, so in the person's access log).
    pub async fn doctor_choice_at_desk(&self, actor: &Actor, patient_id: &str, ceilings: Ceilings) -> AppResult<DoctorChoice> {
        Self::registry_operator(actor)?;
        self.choice_of(actor, patient_id, ceilings).await
    }

    /// The ASST registry office changes a person's doctor at the desk: the same rules, the
    /// change written as the operator (in the person's access log, by name).
    pub async fn choose_doctor_at_desk(
        &self,
        actor: &Actor,
        patient_id: &str,
        ceilings: Ceilings,
        practitioner: &str,
    ) -> AppResult<Candidate> {
        Self::registry_operator(actor)?;
        let choice = self.choice_of(actor, patient_id, ceilings).await?;
        self.change(actor, choice, ceilings, practitioner).await
    }

    fn registry_operator(actor: &Actor) -> AppResult<()> {
        match &actor.who {
            Who::Professional { role: crate::gate::ProRole::AsstAdmin, .. } => Ok(()),
            _ => Err(AppError::Forbidden("the doctor is changed at the desk by the ASST registry office".into())),
        }
    }

    async fn choice_of(&self, actor: &Actor, patient_id: &str, ceilings: Ceilings) -> AppResult<DoctorChoice> {
        let patient_id = patient_id.to_string();
        let patient = self.fhir().read(actor, "Patient", &patient_id).await?.resource;
        let age = patient["birthDate"].as_str().and_then(|b| age_on(b, fascicolo_domain::rome::today())).unwrap_or(0);
        let roles = roles_for_age(age);
        let ats = patient["managingOrganization"]["reference"].as_str().unwrap_or_default().to_string();
        let current_id = patient["generalPractitioner"][0]["reference"].as_str().and_then(|r| r.strip_prefix("Practitioner/"));
        let all = if ats.is_empty() { Vec::new() } else { self.doctors_of(&ats, &["gp", "pediatrician"], ceilings).await? };
        let current = current_id.and_then(|c| all.iter().find(|d| d.practitioner == c).cloned());
        let candidates =
            all.into_iter().filter(|d| roles.contains(&d.role.as_str()) && Some(d.practitioner.as_str()) != current_id).collect();
        let name = crate::auth::display_name(&patient);
        Ok(DoctorChoice { patient: patient_id, name, age, roles, current, candidates })
    }

    /// Change the doctor of the record the citizen acts on to `practitioner`, at once. Refused,
    /// with nothing changed: a doctor outside the person's ATS or not of a kind their age
    /// allows (404 / 422), the doctor they already have (409), a full list (409).
    pub async fn choose_doctor(&self, actor: &Actor, ceilings: Ceilings, practitioner: &str) -> AppResult<Candidate> {
        let choice = self.doctor_choice(actor, ceilings).await?;
        // the citizen does not write the registry: the platform does, on their request
        self.change(&Actor::system(), choice, ceilings, practitioner).await
    }

    /// The change, written by `writer`, retried while other changes commit first.
    async fn change(&self, writer: &Actor, choice: DoctorChoice, ceilings: Ceilings, practitioner: &str) -> AppResult<Candidate> {
        if choice.current.as_ref().is_some_and(|c| c.practitioner == practitioner) {
            return Err(AppError::Conflict("this is already the person's doctor".into()));
        }
        let Some(target) = choice.candidates.iter().find(|c| c.practitioner == practitioner).cloned() else {
            return Err(AppError::NotFound(format!(
                "Practitioner/{practitioner} is not a doctor this person may choose (their ATS, a kind their age allows)"
            )));
        };
        // this server's changes touching the same lists go one at a time (see crate::stripes)
        let old = choice.current.as_ref().map(|c| format!("{LIST_PREFIX}{}", c.practitioner)).unwrap_or_default();
        let new = format!("{LIST_PREFIX}{}", target.practitioner);
        let _lists = crate::stripes::lock_all(&[old.as_str(), new.as_str()]).await;
        for attempt in 0..RETRIES {
            match self.try_change(writer, &choice.patient, &target, ceilings).await {
                Ok(Attempt::Done(listed)) => {
                    tracing::info!(attempt, "doctor changed");
                    return Ok(Candidate { listed, ..target });
                }
                Ok(Attempt::Full(count)) => {
                    return Err(AppError::Conflict(format!(
                        "{} has no free places ({count} of {})",
                        target.name,
                        ceilings.of(&target.role)
                    )))
                }
                Ok(Attempt::Already) => return Err(AppError::Conflict("this is already the person's doctor".into())),
                Err(e) if lost_race(&e) => {
                    // someone else changed a list first: read again (jittered, growing pause)
                    let pause = 2 + (datetime::now_ms() as u64 % 7) * (attempt as u64 + 1);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Conflict("too many changes at once on this doctor's list: try again".into()))
    }

    /// One attempt: read the Patient and both lists, check the place, commit all three with
    /// the versions read. Returns the new list's count.
    async fn try_change(&self, writer: &Actor, patient_id: &str, target: &Candidate, ceilings: Ceilings) -> AppResult<Attempt> {
        let fhir = self.fhir();
        let system = &Actor::system();
        let current = fhir.read(system, "Patient", patient_id).await?;
        let mut patient = current.resource.clone();
        let old = patient["generalPractitioner"][0]["reference"].as_str().and_then(|r| r.strip_prefix("Practitioner/")).map(String::from);
        if old.as_deref() == Some(target.practitioner.as_str()) {
            return Ok(Attempt::Already);
        }
        let mut entries = Vec::new();
        let (new_list, new_version) = self.list_of(system, &target.practitioner, &target.name, ceilings.of(&target.role)).await?;
        let count = new_list["quantity"].as_i64().unwrap_or(0);
        if count >= ceilings.of(&target.role) {
            return Ok(Attempt::Full(count));
        }
        let mut new_list = new_list;
        new_list["quantity"] = json!(count + 1);
        entries.push(entry("Group", &format!("{LIST_PREFIX}{}", target.practitioner), new_list, new_version));
        if let Some(old) = &old {
            let (mut old_list, old_version) = self.list_of(system, old, "", 0).await?;
            let n = old_list["quantity"].as_i64().unwrap_or(0);
            // the count includes this person (read from the registry before the change)
            old_list["quantity"] = json!((n - 1).max(0));
            entries.push(entry("Group", &format!("{LIST_PREFIX}{old}"), old_list, old_version));
        }
        patient["generalPractitioner"] = json!([{"reference": format!("Practitioner/{}", target.practitioner)}]);
        entries.push(entry("Patient", patient_id, patient, Some(current.version)));
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        fhir.process_bundle_value(writer, bundle, "").await?;
        Ok(Attempt::Done(count + 1))
    }

    /// A doctor's list and its version, or a new one counted from the registry (version
    /// `None`: to be created).
    async fn list_of(&self, system: &Actor, practitioner: &str, name: &str, ceiling: i64) -> AppResult<(Value, Option<i64>)> {
        let id = format!("{LIST_PREFIX}{practitioner}");
        match self.fhir().read(system, "Group", &id).await {
            Ok(v) => Ok((v.resource, Some(v.version))),
            Err(AppError::NotFound(_) | AppError::Gone(_)) => {
                let n = self.listed_in_registry(practitioner).await?;
                let mut g = json!({"resourceType": "Group", "id": id, "active": true, "type": "person", "actual": true,
                    "managingEntity": {"reference": format!("Practitioner/{practitioner}")},
                    "quantity": n});
                if !name.is_empty() {
                    g["name"] = json!(format!("Assistiti di {name}"));
                }
                if ceiling > 0 {
                    g["characteristic"] = json!([{"code": {"text": "massimale"}, "valueQuantity": {"value": ceiling}, "exclude": false}]);
                }
                Ok((g, None))
            }
            Err(e) => Err(e),
        }
    }
}

/// How one attempt at a change ended (a lost race is an error, retried).
enum Attempt {
    /// Changed; the new list's count.
    Done(i64),
    /// The new doctor's list is full (its count).
    Full(i64),
    /// The person already has this doctor.
    Already,
}

/// A transaction entry that replaces `rt/id` with `resource`, only at `version`; with none,
/// only if it still does not exist (the guarded write of every small ledger: doctors' lists,
/// exemptions, celiac budgets) (`W/"0"`: no version yet; the commit then expects it absent).
pub(crate) fn entry(rt: &str, id: &str, resource: Value, version: Option<i64>) -> Value {
    let request = json!({"method": "PUT", "url": format!("{rt}/{id}"), "ifMatch": format!("W/\"{}\"", version.unwrap_or(0))});
    json!({"fullUrl": format!("{rt}/{id}"), "resource": resource, "request": request})
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_kind_of_doctor_follows_the_age() {
        assert_eq!(roles_for_age(0), ["pediatrician"]);
        assert_eq!(roles_for_age(5), ["pediatrician"]);
        assert_eq!(roles_for_age(6), ["pediatrician", "gp"]);
        assert_eq!(roles_for_age(13), ["pediatrician", "gp"]);
        assert_eq!(roles_for_age(14), ["gp"]);
        assert_eq!(roles_for_age(90), ["gp"]);
    }

    #[test]
    fn age_in_whole_years() {
        assert_eq!(age_on("2012-12-07", date!(2026 - 12 - 07)), Some(14));
        assert_eq!(age_on("2012-12-08", date!(2026 - 12 - 07)), Some(13));
        assert_eq!(age_on("2020-02-29", date!(2026 - 02 - 28)), Some(5));
        assert_eq!(age_on("nonsense", date!(2026 - 02 - 28)), None);
    }

    #[test]
    fn a_full_list_is_full_and_free_places_never_go_negative() {
        let c =
            Candidate { practitioner: "x".into(), name: "X".into(), role: "gp".into(), gender: String::new(), listed: 1501, ceiling: 1500 };
        assert_eq!(c.free(), 0);
        assert_eq!(Ceilings::default().of("pediatrician"), 880);
        assert_eq!(Ceilings::default().of("gp"), 1500);
    }
}
