//! The agendas a CUP back office manages, and closing one of their days with notice: every
//! appointment booked on that day is cancelled by the provider in the same transaction that
//! records the closure, its slot and prescription freed (the citizen books again, with the
//! prescription's guarantee intact), and each citizen gets a message through the outbox.
//! Never silently, never a late cancellation charged to the citizen.

use super::*;

/// What an operator changes in an agenda.
enum Change {
    /// Close one day.
    Close(Date),
    /// New weekly hours (parsed, and as stored).
    Hours(Template, String),
}

/// Outbox kind of the notice of an appointment cancelled by the provider.
pub const PROVIDER_CANCELLED_KIND: &str = "booking.cancelled-by-provider";

fn operator_org(actor: &Actor) -> AppResult<&str> {
    match &actor.who {
        Who::Professional { role: crate::gate::ProRole::CupOperator, organization: Some(o), .. } => Ok(o),
        _ => Err(AppError::Forbidden("agendas are managed by the CUP office of the organisation that runs them".into())),
    }
}

/// The notice of a cancellation by the provider: names the appointment only (the worker
/// reads the rest when it sends it); sent once.
fn notice(appointment: &str, patient: &str, now: i64) -> fascicolo_store::OutboxMessage {
    fascicolo_store::OutboxMessage {
        id: message_id(&format!("cancelled-by-provider:{appointment}"), now),
        patient_key: fascicolo_domain::PatientKey::for_patient_id(patient),
        kind: PROVIDER_CANCELLED_KIND.into(),
        payload: json!({"appointment": appointment}).to_string(),
        available_at: now,
    }
}

impl Portal {
    /// The organisations the operator's office answers for: its own, and the one it is part
    /// of (a hospital's front office answers for its ASST).
    async fn offices(&self, org: &str) -> AppResult<HashSet<String>> {
        let mut out = HashSet::from([org.to_string()]);
        match self.fhir().read(&Actor::system(), "Organization", org).await {
            Ok(v) => out.extend(v.resource["partOf"]["reference"].as_str().and_then(|r| r.strip_prefix("Organization/")).map(String::from)),
            Err(AppError::NotFound(_) | AppError::Gone(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    /// The agendas of every service whose site the operator's organisation runs (directly, or
    /// as the ASST of the hospital that does), by service then site.
    pub async fn managed_agendas(&self, actor: &Actor) -> AppResult<Vec<Agenda>> {
        let org = operator_org(actor)?;
        let offices = self.offices(org).await?;
        let system = Actor::system();
        let mut all = Vec::new();
        for s in rules::SERVICES {
            all.extend(self.agendas(s.code).await?.iter().cloned());
        }
        let providers: Vec<String> =
            all.iter().map(|a| a.provider.clone()).filter(|p| !p.is_empty()).collect::<HashSet<_>>().into_iter().collect();
        let parents: HashMap<String, String> = self
            .organizations(&system, providers)
            .await?
            .iter()
            .filter_map(|o| {
                let parent = o["partOf"]["reference"].as_str()?.strip_prefix("Organization/")?;
                Some((o["id"].as_str()?.to_string(), parent.to_string()))
            })
            .collect();
        all.retain(|a| offices.contains(&a.provider) || parents.get(&a.provider).is_some_and(|p| offices.contains(p)));
        all.sort_by(|x, y| (&x.site, &x.code).cmp(&(&y.site, &y.code)));
        Ok(all)
    }

    /// The appointments booked on `day` in agenda `schedule` (what closing it would cancel).
    pub async fn booked_on(&self, actor: &Actor, schedule: &str, day: Date) -> AppResult<Vec<(Value, i64)>> {
        operator_org(actor)?;
        let system = Actor::system();
        let prefix = format!("Slot/{}", rules::slot_key(schedule, day, 0));
        let prefix = &prefix[..prefix.len() - 4];
        let pairs = vec![
            ("status".to_string(), "booked".to_string()),
            ("date".to_string(), format!("ge{}", day - Duration::days(1))),
            ("date".to_string(), format!("le{}", day + Duration::days(1))),
        ];
        let mut out = Vec::new();
        let page = self.all_as(&system, "Appointment", pairs, |j| j.to_string()).await?;
        for j in page {
            let v = parse(&j);
            if v["slot"][0]["reference"].as_str().is_some_and(|r| r.starts_with(prefix)) {
                let id = v["id"].as_str().unwrap_or_default().to_string();
                let version = self.fhir().read(&system, "Appointment", &id).await?.version;
                out.push((v, version));
            }
        }
        Ok(out)
    }

    /// The booked appointments of agenda `schedule` from tomorrow on whose slot `keep` says is
    /// no longer opened (what changing the agenda would cancel).
    async fn booked_dropped(&self, schedule: &str, keep: impl Fn(Date, u16) -> bool) -> AppResult<Vec<(Value, i64)>> {
        let system = Actor::system();
        let prefix = format!("Slot/{schedule}-");
        let pairs =
            vec![("status".to_string(), "booked".to_string()), ("date".to_string(), format!("ge{}", fascicolo_domain::rome::today()))];
        let mut out = Vec::new();
        for v in self.all_as(&system, "Appointment", pairs, parse).await? {
            let Some(key) = v["slot"][0]["reference"].as_str().filter(|r| r.starts_with(&prefix)).and_then(|r| r.strip_prefix("Slot/"))
            else {
                continue;
            };
            let Some((_, day, minute)) = rules::parse_slot_key(key) else { continue };
            if day > fascicolo_domain::rome::today() && !keep(day, minute) {
                let id = v["id"].as_str().unwrap_or_default().to_string();
                let version = self.fhir().read(&system, "Appointment", &id).await?.version;
                out.push((v, version));
            }
        }
        Ok(out)
    }

    /// Close `day` in agenda `schedule`: the closure recorded on the agenda, every appointment
    /// of that day cancelled by the provider (reason `prov`, never late), its slot free, its
    /// prescription bookable again, and a notice to each citizen, all in one transaction.
    /// Refused: an agenda the operator's organisation does not run (403), a day not after
    /// today (400), a day already closed or one the agenda does not open (409).
    pub async fn close_day(&self, actor: &Actor, schedule: &str, day: Date) -> AppResult<Vec<Booking>> {
        self.change_agenda(actor, schedule, Change::Close(day)).await
    }

    /// Change agenda `schedule`'s weekly hours (a template as [`Template::parse`] reads it):
    /// the new template stored and, in the same transaction, every appointment ahead in a slot
    /// it no longer opens cancelled by the provider with a notice, as [`Self::close_day`] does.
    /// Refused: a template that does not parse (400), the same template (409).
    pub async fn change_hours(&self, actor: &Actor, schedule: &str, template: &str) -> AppResult<Vec<Booking>> {
        let t = Template::parse(template).map_err(|e| AppError::BadRequest(format!("the weekly hours do not read: {e}")))?;
        let text = t.render();
        self.change_agenda(actor, schedule, Change::Hours(t, text)).await
    }

    async fn change_agenda(&self, actor: &Actor, schedule: &str, change: Change) -> AppResult<Vec<Booking>> {
        let managed = self.managed_agendas(actor).await?;
        let Some(a) = managed.into_iter().find(|a| a.id == schedule) else {
            return Err(AppError::Forbidden(format!("Schedule/{schedule} is not an agenda your organisation runs")));
        };
        if let Change::Close(day) = change {
            if day <= fascicolo_domain::rome::today() {
                return Err(AppError::BadRequest("only a day after today can be closed".into()));
            }
            if day > fascicolo_domain::rome::today() + Duration::days(HORIZON_DAYS) {
                return Err(AppError::BadRequest(format!("only the next {HORIZON_DAYS} days can be closed")));
            }
        }
        // what stays open after the change: a booked slot outside it is cancelled
        let keep = |d: Date, m: u16| match &change {
            Change::Close(day) => d != *day,
            Change::Hours(t, _) => t.opens_on(d, &a.istat, &a.closures) && t.starts().any(|x| x == m),
        };
        // the closure with that day's appointments in one transaction; then, while bookings
        // made meanwhile by a server whose offer was read before the closure show up, those too
        let mut closed_now = false;
        let mut cancelled = Vec::new();
        for _ in 0..RETRIES * 2 {
            let mut entries = Vec::new();
            if !closed_now {
                let stored = self.fhir().read(actor, "Schedule", schedule).await?;
                let mut sched = stored.resource.clone();
                let closed = closures_of(&sched);
                match &change {
                    Change::Close(day) => {
                        if closed.contains(day) {
                            return Err(AppError::Conflict(format!("{day} is closed already")));
                        }
                        if !a.template.opens_on(*day, &a.istat, &[]) {
                            return Err(AppError::Conflict(format!("the agenda does not open on {day}")));
                        }
                        let mut ext = sched["extension"].as_array().cloned().unwrap_or_default();
                        ext.push(json!({"url": CLOSURE_EXT, "valueDate": day.to_string()}));
                        sched["extension"] = Value::Array(ext);
                    }
                    Change::Hours(_, text) => {
                        let now = ext_str(&sched, TEMPLATE_EXT, "valueString").and_then(|t| Template::parse(t).ok()).map(|t| t.render());
                        if now.as_deref() == Some(text.as_str()) {
                            return Err(AppError::Conflict("these are the agenda's hours already".into()));
                        }
                        set_ext(&mut sched, TEMPLATE_EXT, Some(json!(text)), "valueString");
                    }
                }
                entries.push(entry("Schedule", schedule, sched, Some(stored.version)));
            }
            let booked = self.booked_dropped(schedule, &keep).await?;
            if closed_now && booked.is_empty() {
                tracing::info!(cancelled = cancelled.len(), "agenda changed");
                return Ok(cancelled);
            }
            let mut outbox = Vec::new();
            let mut these = Vec::new();
            let now = datetime::now_ms();
            for (appt, version) in booked {
                let Some(patient) = patient_of(&appt) else { continue };
                // as the desk for that person: the cancellation is in their access log
                let b = self.booker(actor, Some(&patient)).await?;
                let (mut e, c) = self.release(&b, &appt, version, "prov", false).await?;
                entries.append(&mut e);
                outbox.push(notice(c["id"].as_str().unwrap_or_default(), &patient, now));
                these.push(booking_of(&c, Some(&a)));
            }
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
            match self.fhir().process_transaction_with(actor, bundle, outbox).await {
                Ok(_) => {
                    closed_now = true;
                    cancelled.append(&mut these);
                    self.fhir().offer_cache().lock().remove(&a.code);
                }
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        if closed_now {
            // closed, with what was booked by then; a booking still arriving is the next sweep's
            tracing::warn!(cancelled = cancelled.len(), "agenda changed while bookings kept arriving");
            return Ok(cancelled);
        }
        Err(AppError::Conflict("the agenda changed meanwhile: try again".into()))
    }
}
