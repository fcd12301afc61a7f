//! The clinician's desk: what a professional's pages show. A family doctor's list of the people
//! who chose them, finding a person by codice fiscale, and one person's record as the gate lets
//! this clinician see it (consent and a care relation, or an emergency opening), with why not
//! when it does not.
//!
//! The list of one's own patients comes from the registry's choice of doctor
//! (`Patient.generalPractitioner`), the same fact the gate counts as a care relation; it shows
//! who they are (name, code, birth date), not their records. Opening a record goes through the
//! gate as the clinician and into the citizen's access log, like every read.

use crate::access::Relation;
use crate::portal::{DocSummary, Portal, Series};
use crate::{Actor, AppError, AppResult, Who};
use fascicolo_domain::systems::CF_SYSTEM;
use fascicolo_domain::{CodiceFiscale, PatientKey};
use serde_json::Value;

/// Most patients a doctor's list shows (a family doctor has at most 1,500 in Italy; a
/// pediatrician 880).
const MAX_LIST: usize = 5_000;

/// One person on a family doctor's list.
#[derive(Debug, Clone)]
pub struct Assisted {
    pub patient: String,
    /// Given names and surname, and the surname alone (the list is sorted by it).
    pub name: String,
    pub family: String,
    pub cf: String,
    pub birth_date: String,
}

/// Where a clinician stands with one record, as the gate decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The citizen's consent to consultation is in force.
    pub consent: bool,
    /// A care relation: the person's family doctor, an open encounter, an appointment, a care team.
    pub care: bool,
    /// An emergency opening (break-glass) by this clinician that has not ended.
    pub emergency: bool,
}

impl Standing {
    /// The record opens: consent and care, or an emergency.
    pub fn opens(self) -> bool {
        (self.consent && self.care) || self.emergency
    }
    /// Open only because of an emergency opening.
    pub fn by_emergency(self) -> bool {
        self.emergency && !(self.consent && self.care)
    }
}

/// One record as a clinician sees it.
#[derive(Debug, Clone)]
pub struct ClinicalRecord {
    pub patient_id: String,
    pub standing: Standing,
    /// The Patient, when the record opens.
    pub patient: Option<Value>,
    /// Current documents the gate lets this clinician see, newest first.
    pub documents: Vec<DocSummary>,
}

impl Portal {
    /// The professional behind the actor, if a clinician.
    fn clinician(actor: &Actor) -> AppResult<&str> {
        match &actor.who {
            Who::Professional { practitioner, role, .. } if role.clinical() => Ok(practitioner),
            Who::Professional { .. } => Err(AppError::Forbidden("administrative profiles do not consult clinical records".into())),
            _ => Err(AppError::Forbidden("these pages are for health professionals".into())),
        }
    }

    /// The people who chose this doctor (family doctor or pediatrician), by name. Empty for a
    /// clinician who has no list (a specialist, a nurse): they find people by codice fiscale.
    pub async fn assisted(&self, actor: &Actor) -> AppResult<Vec<Assisted>> {
        let me = Self::clinician(actor)?;
        let pairs = vec![("general-practitioner".to_string(), format!("Practitioner/{me}")), ("active".to_string(), "true".to_string())];
        // the registry's fact, read by the service: the gate keeps searches across records for
        // the platform, and this one returns only people whose doctor the caller is
        let found = self.all_as(&Actor::system(), "Patient", pairs, crate::portal::parse_json).await?;
        let mut out: Vec<Assisted> = found
            .iter()
            .take(MAX_LIST)
            .filter_map(|p| {
                Some(Assisted {
                    patient: p["id"].as_str()?.to_string(),
                    name: crate::auth::display_name(p),
                    family: p["name"][0]["family"].as_str().unwrap_or_default().to_string(),
                    cf: crate::auth::cf_of(p).unwrap_or_default().to_string(),
                    birth_date: p["birthDate"].as_str().unwrap_or_default().to_string(),
                })
            })
            .collect();
        out.sort_by_cached_key(|a| {
            (fascicolo_fhir::params::normalize(&a.family), fascicolo_fhir::params::normalize(&a.name), a.cf.clone())
        });
        Ok(out)
    }

    /// The record of the person with this codice fiscale, for a clinician to open: its id, or
    /// not found. Says only whether the regional registry knows the code; the record itself is
    /// then opened through the gate.
    pub async fn find_by_cf(&self, actor: &Actor, cf: &str) -> AppResult<String> {
        // clinicians to open a record, registry operators to serve the person at the desk
        if !matches!(actor.who, Who::Professional { .. }) {
            return Err(AppError::Forbidden("finding a person by codice fiscale is for professionals".into()));
        }
        let cf = CodiceFiscale::try_from(cf.trim().to_ascii_uppercase())
            .map_err(|e| AppError::BadRequest(format!("the codice fiscale is not valid: {e}")))?;
        let pairs = vec![("identifier".to_string(), format!("{CF_SYSTEM}|{cf}"))];
        let found = self.all_as(&Actor::system(), "Patient", pairs, crate::portal::parse_json).await?;
        found
            .iter()
            .find_map(|p| p["id"].as_str().map(String::from))
            .ok_or_else(|| AppError::NotFound("no one with this codice fiscale is in the regional registry".into()))
    }

    /// Where this clinician stands with a record, and its Patient when it opens (the read is
    /// in the citizen's access log); the pages of one record start here.
    pub async fn clinical_patient(&self, actor: &Actor, patient_id: &str) -> AppResult<(Standing, Option<Value>)> {
        Self::clinician(actor)?;
        let access = self.fhir().gate(actor).access(PatientKey::for_patient_id(patient_id)).await?;
        if access.patient_id.as_deref() != Some(patient_id) {
            return Err(AppError::NotFound(format!("Patient/{patient_id} is not in the regional registry")));
        }
        let Relation::Clinician { consent, care, emergency } = access.relation else {
            return Err(AppError::Forbidden("these pages are for clinicians".into()));
        };
        let standing = Standing { consent, care, emergency };
        if !standing.opens() {
            return Ok((standing, None));
        }
        Ok((standing, Some(self.fhir().read(actor, "Patient", patient_id).await?.resource)))
    }

    /// One record's numeric results as this clinician may see them (hidden and art. 6 values
    /// left out by the gate), grouped by code like the citizen's.
    pub async fn clinical_results(&self, actor: &Actor, patient_id: &str, code: Option<&str>) -> AppResult<Vec<Series>> {
        Self::clinician(actor)?;
        self.results_in(actor, vec![("patient".into(), patient_id.into())], code, code.is_some()).await
    }

    /// One record's resources of a type (vaccinations, prescriptions, stays) as this clinician
    /// may see them, in the given order.
    pub async fn clinical_list(&self, actor: &Actor, patient_id: &str, rt: &str, sort: &str) -> AppResult<Vec<Value>> {
        Self::clinician(actor)?;
        let pairs = vec![("patient".to_string(), patient_id.to_string()), ("_sort".to_string(), sort.to_string())];
        self.all_as(actor, rt, pairs, crate::portal::parse_json).await
    }

    /// One record as this clinician may see it: where they stand (consent, care, emergency),
    /// and when it opens the person and their current documents, read through the gate as the
    /// clinician (so into the citizen's access log), hidden and art. 6 items excluded by it.
    pub async fn clinical_record(&self, actor: &Actor, patient_id: &str) -> AppResult<ClinicalRecord> {
        let (standing, patient) = self.clinical_patient(actor, patient_id).await?;
        let Some(patient) = patient else {
            return Ok(ClinicalRecord { patient_id: patient_id.to_string(), standing, patient: None, documents: Vec::new() });
        };
        let pairs = vec![("patient".to_string(), patient_id.to_string()), ("status".to_string(), "current".to_string())];
        let docs = self.all_as(actor, "DocumentReference", pairs, crate::portal::lean_document).await?;
        let orgs = self
            .organization_names(
                actor,
                docs.iter().filter_map(|d| d["custodian"]["reference"].as_str()?.strip_prefix("Organization/").map(String::from)),
            )
            .await;
        let mut documents: Vec<DocSummary> = docs.iter().map(|d| Self::summary(d, &orgs)).filter(DocSummary::opens).collect();
        documents.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| b.stored_at.cmp(&a.stored_at)));
        Ok(ClinicalRecord { patient_id: patient_id.to_string(), standing, patient: Some(patient), documents })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_opens_with_consent_and_care_or_in_an_emergency_only() {
        let s = |consent, care, emergency| Standing { consent, care, emergency };
        assert!(s(true, true, false).opens() && !s(true, true, false).by_emergency());
        assert!(!s(true, false, false).opens());
        assert!(!s(false, true, false).opens());
        assert!(s(false, true, true).opens() && s(false, true, true).by_emergency());
        assert!(s(true, true, true).opens() && !s(true, true, true).by_emergency());
    }
}
