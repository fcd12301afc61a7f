//! What is recorded around a booking besides the booking itself: whether the person came (the
//! desk records an arrival or a no-show once the appointment has begun; Lombardy charges the
//! ticket of a no-show), and the protection route a citizen asks for when no slot in their
//! area meets the priority class's deadline (a `Task` for the ATS, and a mark on the
//! prescription, in one transaction).

use super::*;

/// On a `ServiceRequest`: when the citizen asked for the protection route.
pub const PROTECTION_EXT: &str = "urn:fascicolo:protection-route-requested";
/// `Task.code` of a protection-route request.
pub const PROTECTION_CODE: &str = "protection-route";
const TASK_CODES: &str = "urn:fascicolo:task";

impl Portal {
    /// The desk records whether the person came to an appointment that has begun: `fulfilled`
    /// or `noshow`. Refused: not the CUP desk (403), an appointment not yet begun (409), one
    /// already recorded or cancelled (409).
    pub async fn record_attendance(&self, actor: &Actor, patient: &str, appointment: &str, came: bool) -> AppResult<Booking> {
        if !matches!(&actor.who, Who::Professional { role: crate::gate::ProRole::CupOperator, .. }) {
            return Err(AppError::Forbidden("arrivals and no-shows are recorded at the desk".into()));
        }
        let b = self.booker(actor, Some(patient)).await?;
        for _ in 0..RETRIES {
            let v = match self.fhir().read(&b.reader, "Appointment", appointment).await {
                Ok(v) => v,
                Err(AppError::NotFound(_) | AppError::Gone(_)) => {
                    return Err(AppError::NotFound(format!("Appointment/{appointment} is not an appointment of this person")))
                }
                Err(e) => return Err(e),
            };
            let mine = v.resource["participant"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["actor"]["reference"].as_str() == Some(&format!("Patient/{patient}")));
            if !mine {
                return Err(AppError::NotFound(format!("Appointment/{appointment} is not an appointment of this person")));
            }
            if v.resource["status"] != "booked" {
                return Err(AppError::Conflict("this appointment is not booked (cancelled, or its outcome recorded already)".into()));
            }
            if v.resource["start"].as_str().and_then(instant_ms).is_none_or(|s| s > datetime::now_ms()) {
                return Err(AppError::Conflict("an arrival or a no-show is recorded once the appointment has begun".into()));
            }
            let mut a = v.resource.clone();
            a["status"] = json!(if came { "fulfilled" } else { "noshow" });
            let bundle = json!({"resourceType": "Bundle", "type": "transaction",
                "entry": [entry("Appointment", appointment, a.clone(), Some(v.version))]});
            match self.fhir().process_bundle_value(&b.writer, bundle, "").await {
                Ok(_) => return Ok(booking_of(&a, None)),
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Conflict("the appointment changed meanwhile: try again".into()))
    }

    /// The citizen asks for the protection route for a prescription: only when no option in
    /// their area meets the class deadline, once per prescription. Recorded as a `Task` for
    /// their ATS (focus: the prescription) and a mark on the prescription.
    pub async fn request_protection(&self, actor: &Actor, patient: Option<&str>, prescription: &str) -> AppResult<String> {
        let b = self.booker(actor, patient).await?;
        let p = self.prescription(&b, prescription).await?;
        if p.protection_requested.is_some() {
            return Err(AppError::Conflict("the protection route was asked for already".into()));
        }
        if !p.active || p.booked_as.is_some() {
            return Err(AppError::Conflict("this prescription is booked already or no longer active".into()));
        }
        let opts = self.options_for(&b, p.clone(), None).await?;
        if !opts.protection {
            return Err(AppError::Conflict(
                "a slot in your area meets the deadline: book it (the protection route applies only when none does)".into(),
            ));
        }
        let (_, area) = self.home_of(&b.patient).await?;
        let now = datetime::now_ms();
        let at = datetime::format_instant(now);
        let mut sr = p.resource.clone();
        set_ext(&mut sr, PROTECTION_EXT, Some(json!(at)), "valueDateTime");
        let task_id = format!("{}-tutela", p.id);
        let mut task = json!({"resourceType": "Task", "id": task_id, "status": "requested", "intent": "order",
            "code": {"coding": [{"system": TASK_CODES, "code": PROTECTION_CODE, "display": "Percorso di tutela"}]},
            "focus": {"reference": format!("ServiceRequest/{}", p.id)},
            "for": {"reference": format!("Patient/{}", b.patient)},
            "authoredOn": at,
            "description": format!("{} — nessuna disponibilità entro {} nell'ATS", p.name, opts.deadline.map(|d| d.to_string()).unwrap_or_default()),
            "businessStatus": {"text": b.channel}});
        if let Some(a) = area {
            task["owner"] = json!({"identifier": {"system": fascicolo_domain::systems::ASL_SYSTEM, "value": a}});
        }
        let entries = vec![entry("ServiceRequest", &p.id, sr, Some(p.version)), entry("Task", &task_id, task, None)];
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        match self.fhir().process_bundle_value(&b.writer, bundle, "").await {
            Ok(_) => Ok(task_id),
            Err(e) if lost_race(&e) => Err(AppError::Conflict("the prescription changed meanwhile: try again".into())),
            Err(e) => Err(e),
        }
    }
}
