//! Notifications of accesses and new documents (DM 7/9/2023 arts. 9, 21, 22): on by default,
//! switched off per kind and channel by the citizen, never carrying personal or clinical data.
//! Messages wait in the transactional outbox; the worker asks [`FhirService::deliveries`] what
//! each one means and for whom, then hands the deliveries to the channels.

use crate::access::{lookup_values, Relation};
use crate::error::{AppError, AppResult};
use crate::fhir::Versioned;
use crate::gate::Actor;
use crate::prepare::write_for;
use crate::FhirService;
use fascicolo_domain::PatientKey;
use fascicolo_fhir::datetime;
use fascicolo_store::{Method, OutboxMessage};
use serde_json::{json, Value};

/// `Basic.code` of a citizen's notification preferences.
pub const PREFERENCES_CODE: &str = "notification-preferences";
pub const RESOURCE_CODES: &str = "urn:fascicolo:resource";
/// Extension of the preferences: one `kind.channel` switched off (repeats).
pub const OFF_EXT: &str = "urn:fascicolo:notify-off";
pub const KINDS: [&str; 3] = ["access", "new-document", "reminder"];
pub const CHANNELS: [&str; 2] = ["email", "sms"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn code(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// One message to one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub channel: Channel,
    pub to: String,
    pub subject: String,
    pub text: String,
}

fn texts(kind: &str, emergency: bool, link: &str) -> (String, String) {
    match (kind, emergency) {
        ("access", true) => (
            "Fascicolo Sanitario Elettronico: accesso in emergenza".into(),
            format!(
                "È stato registrato un accesso in emergenza al tuo Fascicolo Sanitario Elettronico.\n\
                 Puoi vedere chi, quando e perché nel registro degli accessi: {link}\n\n\
                 An emergency access to your electronic health record was logged. See who, when and why in the access log: {link}"
            ),
        ),
        ("access", false) => (
            "Fascicolo Sanitario Elettronico: nuovo accesso".into(),
            format!(
                "È stato registrato un nuovo accesso al tuo Fascicolo Sanitario Elettronico.\n\
                 Puoi vedere chi e quando nel registro degli accessi: {link}\n\n\
                 A new access to your electronic health record was logged. See who and when in the access log: {link}"
            ),
        ),
        _ => (
            "Fascicolo Sanitario Elettronico: nuovo documento".into(),
            format!(
                "Nel tuo Fascicolo Sanitario Elettronico è disponibile un nuovo documento: {link}\n\n\
                 A new document is available in your electronic health record: {link}"
            ),
        ),
    }
}

impl FhirService {
    async fn preferences_resource(&self, key: PatientKey) -> AppResult<Option<Value>> {
        let code = format!("{RESOURCE_CODES}|{PREFERENCES_CODE}");
        Ok(lookup_values(self.store().as_ref(), Some(key), "Basic", &[("code", &code)], 1).await?.into_iter().next())
    }

    /// The `kind.channel` pairs the citizen switched off (everything else is on).
    pub async fn notifications_off(&self, actor: &Actor, patient_id: &str) -> AppResult<Vec<String>> {
        crate::privacy_ops::require_operation(actor, "$notifications", "GET", "Patient")?;
        let key = PatientKey::for_patient_id(patient_id);
        let mut gate = self.gate(actor);
        let a = gate.access(key).await?;
        if !matches!(a.relation, Relation::Own | Relation::Full) {
            return Err(a.refusal().unwrap_or_else(|| AppError::Forbidden("notification settings are the citizen's".into())));
        }
        let off = off_list(self.preferences_resource(key).await?.as_ref());
        gate.record(&a, "operation", Vec::new(), Some(format!("Patient/{patient_id}/$notifications")));
        gate.commit_audit().await?;
        Ok(off)
    }

    /// Switch notifications off (the listed `kind.channel` pairs) and on (all the others).
    pub async fn set_notifications_off(&self, actor: &Actor, patient_id: &str, off: &[String]) -> AppResult<Versioned> {
        crate::privacy_ops::require_operation(actor, "$notifications", "POST", "Patient")?;
        for o in off {
            let ok = o.split_once('.').is_some_and(|(k, c)| KINDS.contains(&k) && CHANNELS.contains(&c));
            if !ok {
                return Err(AppError::BadRequest(format!(
                    "'{o}' is not a notification setting (kind.channel: access.email, access.sms, new-document.email, new-document.sms, reminder.email, reminder.sms)"
                )));
            }
        }
        let key = PatientKey::for_patient_id(patient_id);
        let mut gate = self.gate(actor);
        let a = gate.access(key).await?;
        if !matches!(a.relation, Relation::Own) || a.patient_id.as_deref() != Some(patient_id) {
            return Err(a.refusal().unwrap_or_else(|| AppError::Forbidden("only the citizen changes their notification settings".into())));
        }
        let current = self.preferences_resource(key).await?;
        let cur_stored = match &current {
            Some(v) => self.store().read("Basic", v["id"].as_str().unwrap_or_default()).await?,
            None => None,
        };
        let id = current.as_ref().and_then(|v| v["id"].as_str()).map_or_else(crate::prepare::new_id, String::from);
        let mut v = json!({"resourceType": "Basic", "id": id,
            "code": {"coding": [{"system": RESOURCE_CODES, "code": PREFERENCES_CODE, "display": "Preferenze di notifica"}]},
            "subject": {"reference": format!("Patient/{patient_id}")}});
        if !off.is_empty() {
            v["extension"] = off.iter().map(|o| json!({"url": OFF_EXT, "valueCode": o})).collect();
        }
        let method = if cur_stored.is_some() { Method::Update } else { Method::Create };
        let (w, stamped) = write_for(v, "Basic", &id, cur_stored.as_ref(), method, datetime::now_ms())?;
        let out = Versioned::from_write(&w, stamped);
        self.commit_gated(&gate, vec![w], Vec::new()).await?;
        Ok(out)
    }

    /// What an outbox message means: the deliveries to make now (none when the citizen switched
    /// them off, has no address, or was told of the same professional's access within the hour).
    /// `site` is the public URL the messages link to.
    pub async fn deliveries(&self, m: &OutboxMessage, site: &str) -> AppResult<Vec<Delivery>> {
        let payload: Value = serde_json::from_str(&m.payload).unwrap_or(Value::Null);
        let (kind, emergency, agent) = match m.kind.as_str() {
            "notify.access" => {
                // who accessed travels with the message; a message of an older release names
                // only its log entry
                let agent = match payload["agent"].as_str() {
                    Some(a) => a.to_string(),
                    None => {
                        let id = payload["audit"].as_str().unwrap_or_default();
                        let Some(e) = self.store().access_entry(crate::access::log_record(id), id).await? else {
                            return Ok(Vec::new());
                        };
                        let ev = crate::access::audit_resource(&e)?;
                        ev["agent"][0]["who"]["reference"]
                            .as_str()
                            .or(ev["agent"][0]["who"]["identifier"]["value"].as_str())
                            .unwrap_or("")
                            .to_string()
                    }
                };
                ("access", payload["emergency"] == true, agent)
            }
            "notify.new-document" => ("new-document", false, String::new()),
            crate::booking::REMINDER_KIND => return self.reminder_deliveries(m, &payload, site).await,
            crate::booking::PROVIDER_CANCELLED_KIND => return self.provider_cancelled_deliveries(m, &payload, site).await,
            crate::booking::SLOT_FREED_KIND => {
                // offers are recorded with their own messages; this one sends nothing itself
                let key = payload["slot"].as_str().unwrap_or_default();
                crate::portal::Portal::new(self.clone()).offer_freed_slot(key).await?;
                return Ok(Vec::new());
            }
            crate::booking::EARLIER_OFFER_KIND => return self.offer_deliveries(m, &payload, site).await,
            _ => return Ok(Vec::new()),
        };
        let Some(patient) = lookup_values(self.store().as_ref(), Some(m.patient_key), "Patient", &[], 1).await?.into_iter().next() else {
            return Ok(Vec::new());
        };
        let off = off_list(self.preferences_resource(m.patient_key).await?.as_ref());
        // one message per professional per hour for ordinary accesses; emergencies always
        if kind == "access" && !emergency {
            let bucket = m.available_at / 3_600_000;
            let key = crate::auth::hash_secret(&format!("{}:{agent}:{bucket}", m.patient_key.uuid()));
            // the first message of the hour wins; its own retries keep their claim
            if !self.store().claim_notification(&key, &m.id.to_string(), (bucket + 2) * 3_600_000).await? {
                return Ok(Vec::new());
            }
        }
        // straight to the access log (after signing in), an emergency to the emergencies
        let link = match kind {
            "access" if emergency => format!("{site}/privacy/accessi?emergenza=1"),
            "access" => format!("{site}/privacy/accessi"),
            _ => format!("{site}/"),
        };
        let (subject, text) = texts(kind, emergency, &link);
        Ok(addressed(&patient, &off, kind, &subject, &text))
    }

    /// An appointment's reminder: nothing when it was cancelled or moved since (the message
    /// names the appointment and the start it was queued for) or the citizen switched
    /// reminders off. The text says when and where, not what (no clinical data in a message).
    async fn reminder_deliveries(&self, m: &OutboxMessage, payload: &Value, site: &str) -> AppResult<Vec<Delivery>> {
        let id = payload["appointment"].as_str().unwrap_or_default();
        let Some((appt, patient)) = self.appointment_and_patient(m, id).await? else { return Ok(Vec::new()) };
        let start = appt["start"].as_str().and_then(|x| datetime::parse(x).map(|(r, _)| r.low));
        if appt["status"] != "booked" || start != payload["start"].as_i64() {
            return Ok(Vec::new());
        }
        let Some((day, hour, place)) = when_where(&appt) else { return Ok(Vec::new()) };
        let off = off_list(self.preferences_resource(m.patient_key).await?.as_ref());
        let link = format!("{site}/appuntamenti/{id}");
        let subject = "Fascicolo Sanitario Elettronico: promemoria appuntamento".to_string();
        let text = format!(
            "Promemoria: hai un appuntamento il {day} alle {hour} presso {place}.\n\
             Dettagli, preparazione e disdetta: {link}\n\n\
             Reminder: you have an appointment on {day} at {hour} at {place}. Details, preparation and cancellation: {link}"
        );
        Ok(addressed(&patient, &off, "reminder", &subject, &text))
    }

    /// The notice of an appointment the provider cancelled (a closed agenda day): always sent
    /// (it is not a reminder one may switch off), when and where, and how to book again.
    async fn provider_cancelled_deliveries(&self, m: &OutboxMessage, payload: &Value, site: &str) -> AppResult<Vec<Delivery>> {
        let id = payload["appointment"].as_str().unwrap_or_default();
        let Some((appt, patient)) = self.appointment_and_patient(m, id).await? else { return Ok(Vec::new()) };
        if appt["status"] != "cancelled" {
            return Ok(Vec::new());
        }
        let Some((day, hour, place)) = when_where(&appt) else { return Ok(Vec::new()) };
        let link = format!("{site}/prenota");
        let subject = "Fascicolo Sanitario Elettronico: appuntamento annullato dalla struttura".to_string();
        let text = format!(
            "La struttura ha annullato il tuo appuntamento del {day} alle {hour} presso {place} (agenda chiusa o modificata). \
             Non ti è addebitato nulla e la prescrizione resta valida: prenota di nuovo da {link}\n\n\
             The provider cancelled your appointment on {day} at {hour} at {place} (agenda closed or changed). \
             Nothing is charged and the prescription stays valid: book again at {link}"
        );
        Ok(addressed(&patient, &[], "booking", &subject, &text))
    }

    /// An earlier slot offered: when and where, until when, and the link to take it; nothing
    /// once the offer is closed or expired.
    async fn offer_deliveries(&self, m: &OutboxMessage, payload: &Value, site: &str) -> AppResult<Vec<Delivery>> {
        let Some(s) = self.store().read("Task", payload["offer"].as_str().unwrap_or_default()).await? else { return Ok(Vec::new()) };
        let t: Value = serde_json::from_str(&s.json).unwrap_or(Value::Null);
        let input = |k: &str| t["input"].as_array().into_iter().flatten().find(|i| i["type"]["text"] == k).cloned().unwrap_or(Value::Null);
        let expires = t["restriction"]["period"]["end"].as_str().and_then(|x| datetime::parse(x).map(|(r, _)| r.low));
        if s.deleted || t["status"] != "requested" || expires.is_none_or(|e| e <= datetime::now_ms()) {
            return Ok(Vec::new());
        }
        let Some(patient) = lookup_values(self.store().as_ref(), Some(m.patient_key), "Patient", &[], 1).await?.into_iter().next() else {
            return Ok(Vec::new());
        };
        let Some((day, hour)) = input("start")["valueDateTime"].as_str().and_then(day_and_hour) else { return Ok(Vec::new()) };
        let place = input("site")["valueString"].as_str().unwrap_or_default().to_string();
        let until = t["restriction"]["period"]["end"].as_str().and_then(day_and_hour).map(|w| w.1).unwrap_or_default();
        let link = format!("{site}/appuntamenti/{}", payload["appointment"].as_str().unwrap_or_default());
        let subject = "Fascicolo Sanitario Elettronico: si è liberato un posto prima".to_string();
        let text = format!(
            "Si è liberato un posto il {day} alle {hour} presso {place}, prima del tuo appuntamento. \
             Se lo vuoi, prendilo entro le {until}: {link}\n\n\
             An earlier slot is free on {day} at {hour} at {place}. If you want it, take it by {until}: {link}"
        );
        Ok(addressed(&patient, &[], "earlier", &subject, &text))
    }

    /// The appointment a message names and the Patient of its record.
    async fn appointment_and_patient(&self, m: &OutboxMessage, id: &str) -> AppResult<Option<(Value, Value)>> {
        let Some(s) = self.store().read("Appointment", id).await? else { return Ok(None) };
        if s.deleted {
            return Ok(None);
        }
        let appt: Value = serde_json::from_str(&s.json).unwrap_or(Value::Null);
        let patient = lookup_values(self.store().as_ref(), Some(m.patient_key), "Patient", &[], 1).await?.into_iter().next();
        Ok(patient.map(|p| (appt, p)))
    }
}

/// An appointment's day and time in Rome and its place, as a message writes them.
fn when_where(appt: &Value) -> Option<(String, String, String)> {
    let (day, hour) = day_and_hour(appt["start"].as_str()?)?;
    Some((day, hour, crate::booking::place_of(appt).to_string()))
}

/// An instant as a message writes it in Rome: `dd/mm/yyyy` and `HH:MM`.
fn day_and_hour(instant: &str) -> Option<(String, String)> {
    let ms = datetime::parse(instant).map(|(r, _)| r.low)?;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    let when = t.to_offset(fascicolo_domain::rome::offset(t));
    Some((format!("{:02}/{:02}/{}", when.day(), u8::from(when.month()), when.year()), format!("{:02}:{:02}", when.hour(), when.minute())))
}

/// One delivery per address on file whose `kind.channel` the citizen did not switch off.
fn addressed(patient: &Value, off: &[String], kind: &str, subject: &str, text: &str) -> Vec<Delivery> {
    let mut out = Vec::new();
    for t in patient["telecom"].as_array().into_iter().flatten() {
        let (channel, value) = match (t["system"].as_str(), t["value"].as_str()) {
            (Some("email"), Some(v)) => (Channel::Email, v),
            (Some("sms"), Some(v)) => (Channel::Sms, v),
            _ => continue,
        };
        if off.iter().any(|o| *o == format!("{kind}.{}", channel.code())) {
            continue;
        }
        out.push(Delivery { channel, to: value.to_string(), subject: subject.to_string(), text: text.to_string() });
    }
    out
}

fn off_list(prefs: Option<&Value>) -> Vec<String> {
    prefs
        .and_then(|p| p["extension"].as_array())
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == OFF_EXT)
        .filter_map(|e| e["valueCode"].as_str().map(String::from))
        .collect()
}
