//! Earlier-slot offers. A citizen who opted in on an appointment (`urn:fascicolo:earlier-offers`)
//! is offered a slot of the same service in their area that frees up before it. A cancellation
//! or a move queues `booking.slot-freed` in its own transaction; the worker then picks up to
//! [`MAX_OFFERS`] people booked later (the longest waits first) who could take that slot, and
//! records one offer each (`Task`, code `earlier-slot-offer`, focus their appointment, the
//! slot as input, valid [`OFFER_MINUTES`]) with a message to each in one transaction. The
//! first to accept gets the slot through a move (one transaction: their old appointment is
//! kept until the new one commits); the others find it taken; offers expire by themselves.

use super::*;
use fascicolo_store::OutboxMessage;

/// On an `Appointment`: its citizen wants offers of an earlier slot.
pub const EARLIER_EXT: &str = "urn:fascicolo:earlier-offers";
/// Outbox kind of a slot that has just been freed.
pub const SLOT_FREED_KIND: &str = "booking.slot-freed";
/// Outbox kind of the message that tells a citizen of an offer.
pub const EARLIER_OFFER_KIND: &str = "booking.earlier-offer";
/// `Task.code` of an offer.
pub const OFFER_CODE: &str = "earlier-slot-offer";
const TASK_CODES: &str = "urn:fascicolo:task";
/// How long an offer stands.
pub const OFFER_MINUTES: i64 = 120;
/// How many people one freed slot is offered to.
pub const MAX_OFFERS: usize = 5;

/// The message that a slot was freed by `appointment` (queued once per appointment).
pub(super) fn slot_freed(key: &str, appointment: &str, now: i64) -> OutboxMessage {
    OutboxMessage {
        id: message_id(&format!("slot-freed:{appointment}"), now),
        patient_key: fascicolo_domain::PatientKey::SHARED,
        kind: SLOT_FREED_KIND.into(),
        payload: json!({"slot": key}).to_string(),
        available_at: now,
    }
}

/// An offer as the appointment page shows it.
#[derive(Debug, Clone)]
pub struct EarlierOffer {
    /// The `Task` id.
    pub id: String,
    pub key: String,
    pub start_ms: i64,
    pub site: String,
    pub expires_ms: i64,
}

fn offer_of(t: &Value) -> Option<EarlierOffer> {
    let key = t["input"].as_array()?.iter().find(|i| i["type"]["text"] == "slot")?["valueString"].as_str()?.to_string();
    Some(EarlierOffer {
        id: t["id"].as_str()?.to_string(),
        key,
        start_ms: t["input"].as_array()?.iter().find(|i| i["type"]["text"] == "start")?["valueDateTime"].as_str().and_then(instant_ms)?,
        site: t["input"].as_array()?.iter().find(|i| i["type"]["text"] == "site")?["valueString"].as_str().unwrap_or_default().to_string(),
        expires_ms: t["restriction"]["period"]["end"].as_str().and_then(instant_ms)?,
    })
}

impl Portal {
    /// Switch earlier-slot offers on or off for an appointment of the record (booked, ahead).
    pub async fn set_earlier_offers(&self, actor: &Actor, patient: Option<&str>, appointment: &str, on: bool) -> AppResult<()> {
        let b = self.booker(actor, patient).await?;
        for _ in 0..RETRIES {
            let (mut appt, version) = self.appointment_of(&b, appointment).await?;
            set_ext(&mut appt, EARLIER_EXT, on.then(|| json!(true)), "valueBoolean");
            let bundle =
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry("Appointment", appointment, appt, Some(version))]});
            match self.fhir().process_bundle_value(&b.writer, bundle, "").await {
                Ok(_) => return Ok(()),
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Conflict("the appointment changed meanwhile: try again".into()))
    }

    /// The offers standing for an appointment of the record.
    pub async fn earlier_offers(&self, actor: &Actor, patient: Option<&str>, appointment: &str) -> AppResult<Vec<EarlierOffer>> {
        let b = self.booker(actor, patient).await?;
        let pairs = vec![
            ("focus".to_string(), format!("Appointment/{appointment}")),
            ("code".to_string(), format!("{TASK_CODES}|{OFFER_CODE}")),
            ("status".to_string(), "requested".to_string()),
        ];
        let now = datetime::now_ms();
        let mut out: Vec<EarlierOffer> =
            self.all_as(&b.reader, "Task", pairs, parse).await?.iter().filter_map(offer_of).filter(|o| o.expires_ms > now).collect();
        out.sort_by_key(|o| o.start_ms);
        Ok(out)
    }

    /// Accept an offer: the appointment moves to the offered slot in one transaction. Refused
    /// with nothing changed: an offer expired or not for this appointment (409), a slot taken by
    /// someone quicker (409; the offer is then closed).
    pub async fn accept_earlier(&self, actor: &Actor, patient: Option<&str>, appointment: &str, offer: &str) -> AppResult<Booking> {
        let b = self.booker(actor, patient).await?;
        let stored = match self.fhir().read(&b.reader, "Task", offer).await {
            Ok(v) => v,
            Err(AppError::NotFound(_) | AppError::Gone(_) | AppError::Forbidden(_)) => {
                return Err(AppError::NotFound("no such offer for this record".into()))
            }
            Err(e) => return Err(e),
        };
        let t = stored.resource.clone();
        if t["focus"]["reference"].as_str() != Some(&format!("Appointment/{appointment}")) || t["code"]["coding"][0]["code"] != OFFER_CODE {
            return Err(AppError::NotFound("no such offer for this appointment".into()));
        }
        let Some(o) = offer_of(&t) else { return Err(AppError::NotFound("no such offer for this appointment".into())) };
        if t["status"] != "requested" || o.expires_ms <= datetime::now_ms() {
            return Err(AppError::Conflict("this offer has expired".into()));
        }
        let result = self.move_to(actor, patient, appointment, &o.key).await;
        let status = match &result {
            Ok(_) => "completed",
            Err(AppError::Conflict(_)) => "cancelled",
            Err(_) => return result,
        };
        let mut closed = t.clone();
        closed["status"] = json!(status);
        let bundle =
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry("Task", offer, closed, Some(stored.version))]});
        if let Err(e) = self.fhir().process_bundle_value(&Actor::system(), bundle, "").await {
            tracing::warn!(error = %e, "an offer could not be closed");
        }
        match result {
            Err(AppError::Conflict(m)) if m.contains("taken") => {
                Err(AppError::Conflict("someone took this slot first: your appointment stays as it was".into()))
            }
            other => other,
        }
    }

    /// A slot was freed: record the offers and their messages (see the module's notes). Does
    /// nothing when the slot was taken again meanwhile, is past, or nobody could take it.
    pub(crate) async fn offer_freed_slot(&self, key: &str) -> AppResult<usize> {
        let Some((schedule, day, minute)) = rules::parse_slot_key(key) else { return Ok(0) };
        let (slot, state) = self.slot_now(key).await?;
        if state.busy || state.held_for.is_some() || day <= fascicolo_domain::rome::today() {
            return Ok(0);
        }
        let Some(code) = slot.as_ref().and_then(|s| s["serviceType"][0]["coding"][0]["code"].as_str()).map(String::from) else {
            return Ok(0);
        };
        let agendas = self.agendas(&code).await?;
        let Some(a) = agendas.iter().find(|a| a.id == schedule).cloned() else { return Ok(0) };
        if !a.template.opens_on(day, &a.istat, &a.closures) {
            return Ok(0);
        }
        let (start_ms, _) = slot_times(day, minute, a.template.minutes);
        let system = Actor::system();
        let pairs = vec![
            ("service-type".to_string(), format!("{SERVICE_SYSTEM}|{code}")),
            ("status".to_string(), "booked".to_string()),
            ("date".to_string(), format!("gt{}", datetime::format_instant(start_ms))),
        ];
        let mut later: Vec<Value> = self
            .all_as(&system, "Appointment", pairs, parse)
            .await?
            .into_iter()
            .filter(|v| ext(v, EARLIER_EXT).is_some_and(|e| e["valueBoolean"] == true))
            .filter(|v| v["basedOn"][0]["reference"].as_str().is_some_and(|r| r.starts_with("ServiceRequest/")))
            .collect();
        // the longest waits first
        later.sort_by_key(|v| std::cmp::Reverse(v["start"].as_str().and_then(instant_ms).unwrap_or(0)));
        let now = datetime::now_ms();
        let expires = (now + OFFER_MINUTES * 60_000).min(start_ms);
        let mut entries = Vec::new();
        let mut outbox = Vec::new();
        for v in later {
            if outbox.len() >= MAX_OFFERS {
                break;
            }
            let Some(patient) = patient_of(&v) else { continue };
            // only someone who could book it: the slot is in their guarantee area
            if self.home_of(&patient).await?.1.as_deref() != Some(a.area.as_str()) {
                continue;
            }
            let appt = v["id"].as_str().unwrap_or_default();
            use sha2::Digest as _;
            let id = format!("offerta-{}", &hex::encode(sha2::Sha256::digest(format!("{key}:{appt}").as_bytes()))[..24]);
            let task = json!({"resourceType": "Task", "id": id, "status": "requested", "intent": "proposal",
                "code": {"coding": [{"system": TASK_CODES, "code": OFFER_CODE, "display": "Offerta di un posto prima"}]},
                "focus": {"reference": format!("Appointment/{appt}")},
                "for": {"reference": format!("Patient/{patient}")},
                "authoredOn": datetime::format_instant(now),
                "restriction": {"period": {"end": datetime::format_instant(expires)}},
                "input": [
                    {"type": {"text": "slot"}, "valueString": key},
                    {"type": {"text": "start"}, "valueDateTime": datetime::format_instant(start_ms)},
                    {"type": {"text": "site"}, "valueString": a.site}]});
            entries.push(entry("Task", &id, task, None));
            outbox.push(OutboxMessage {
                id: message_id(&format!("earlier-offer:{id}"), now),
                patient_key: fascicolo_domain::PatientKey::for_patient_id(&patient),
                kind: EARLIER_OFFER_KIND.into(),
                payload: json!({"offer": id, "appointment": appt}).to_string(),
                available_at: now,
            });
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let n = entries.len();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        match self.fhir().process_transaction_with(&system, bundle, outbox).await {
            Ok(_) => Ok(n),
            // offered already (a retry of the same message)
            Err(e) if lost_race(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }
}
