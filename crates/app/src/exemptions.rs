//! Exemptions from the ticket: the ones a person holds (pathology, rare disease, invalidity and
//! income, as `Coverage` of type `urn:fascicolo:esenzione`), self-certifying an income exemption
//! (E01–E04, rules in `fascicolo_domain::exemption`) and revoking it; and which exemption a
//! charge on a given day meets.
//!
//! A self-certification is a `Coverage` whose extension `urn:fascicolo:autocertificazione`
//! keeps the declaration: when and by whom it was made, as holder or dependant, the household
//! (spouse, dependent children), the income limit it states and the statement's text. The
//! family income figure is checked and not kept. Its id is `{patient}-autocertificazione-{year}-{n}`
//! (the year its validity ends, the n-th declaration of that cycle): two declarations racing
//! for one person create the same id, and only one commit can (`ifMatch: W/"0"`), so nothing
//! is declared twice; a revoked declaration stays, with its revocation. The citizen's own
//! declaration is written by the platform on their request; the ASST desk writes as the
//! operator, in the person's access log.

use crate::doctor_choice::{entry, lost_race};
use crate::portal::{FieldError, Portal};
use crate::{Actor, AppError, AppResult, Who};
use fascicolo_domain::exemption::{self as rules, Declaration, IncomeCode, Kind, Standing};
use fascicolo_domain::rome;
use fascicolo_fhir::datetime;
use serde_json::{json, Value};
use time::Date;

/// The extension that keeps a self-certification's declaration.
pub const DECLARATION_EXT: &str = "urn:fascicolo:autocertificazione";

/// The statement the declarant signs (DPR 445/2000, artt. 46, 47 and 76), as shown and stored.
pub const STATEMENT: &str = "Dichiaro, ai sensi degli artt. 46 e 47 del DPR 445/2000 e consapevole delle sanzioni penali previste \
dall'art. 76 per le dichiarazioni false, che quanto indicato è vero, e mi impegno a comunicare ogni variazione \
che faccia venire meno il diritto all'esenzione.";
/// [`STATEMENT`] in English (what the page shows to an English reader; the Italian is stored).
pub const STATEMENT_EN: &str = "Under articles 46 and 47 of Presidential Decree 445/2000, and aware of the criminal penalties \
that article 76 sets for false statements, I declare that what I have stated is true, and I undertake to report any change \
that ends the right to the exemption.";

/// Where an exemption stands on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    /// Its validity ended.
    Expired,
    /// Revoked (by the declarant or the desk).
    Revoked,
    /// Not yet in force.
    Future,
}

/// One exemption of a person.
#[derive(Debug, Clone)]
pub struct Exemption {
    /// The Coverage id.
    pub id: String,
    pub code: String,
    /// The registry's (Italian) name.
    pub name: String,
    pub kind: Kind,
    pub start: Option<Date>,
    pub end: Option<Date>,
    pub state: State,
    /// Present for a self-certification.
    pub declared: Option<Declared>,
}

impl Exemption {
    /// Whether the exemption may be revoked by the declarant or the desk: a self-certification
    /// still in force (or about to be).
    pub fn revocable(&self) -> bool {
        self.declared.is_some() && matches!(self.state, State::Active | State::Future)
    }
}

/// What a self-certification declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The instant it was made (FHIR instant).
    pub at: String,
    /// Who made it (the person, a parent, or the desk operator on their statement).
    pub by: String,
    pub standing: Standing,
    pub spouse: bool,
    pub children: u32,
    /// The income limit it states the family is within, in cents.
    pub limit_cents: Option<i64>,
    /// When it was revoked (FHIR instant).
    pub revoked_at: Option<String>,
}

/// A person's exemptions and what may be done.
#[derive(Debug, Clone)]
pub struct Exemptions {
    pub patient: String,
    pub name: String,
    pub age: i32,
    /// In force first, then the others, newest first.
    pub items: Vec<Exemption>,
}

impl Exemptions {
    /// The income exemption in force, if any (one at a time).
    pub fn income_in_force(&self) -> Option<&Exemption> {
        self.items.iter().find(|e| e.kind == Kind::Income && e.state == State::Active)
    }
}

/// A declaration as the form gives it (strings, to be checked).
#[derive(Debug, Clone, Default)]
pub struct DeclarationForm {
    pub code: String,
    pub standing: String,
    pub income: String,
    pub spouse: bool,
    pub children: String,
    /// The statement was accepted.
    pub accepted: bool,
}

fn date_of(v: &Value) -> Option<Date> {
    v.as_str().and_then(rome::date_of)
}

/// An exemption read from its Coverage, as it stands on `today`.
pub fn exemption_of(c: &Value, today: Date) -> Option<Exemption> {
    let coding = c["type"]["coding"].as_array()?.iter().find(|x| x["system"] == rules::SYSTEM)?;
    let code = coding["code"].as_str()?.to_string();
    let start = date_of(&c["period"]["start"]);
    let end = date_of(&c["period"]["end"]);
    let declared = c["extension"].as_array().and_then(|xs| xs.iter().find(|x| x["url"] == DECLARATION_EXT)).map(|x| {
        let part = |name: &str| -> Value {
            x["extension"].as_array().and_then(|ps| ps.iter().find(|p| p["url"] == name)).cloned().unwrap_or(Value::Null)
        };
        Declared {
            at: part("dichiarata")["valueDateTime"].as_str().unwrap_or_default().to_string(),
            by: part("dichiarante")["valueString"].as_str().unwrap_or_default().to_string(),
            standing: part("titolo")["valueCode"].as_str().and_then(Standing::parse).unwrap_or(Standing::Holder),
            spouse: part("coniuge")["valueBoolean"].as_bool().unwrap_or(false),
            children: part("figli")["valueUnsignedInt"].as_u64().unwrap_or(0) as u32,
            limit_cents: part("limite")["valueMoney"]["value"].as_f64().map(|v| (v * 100.0).round() as i64),
            revoked_at: part("revocata")["valueDateTime"].as_str().map(String::from),
        }
    });
    let state = match c["status"].as_str() {
        Some("cancelled") => State::Revoked,
        _ if end.is_some_and(|e| e < today) => State::Expired,
        _ if start.is_some_and(|s| s > today) => State::Future,
        Some("active") => State::Active,
        _ => State::Expired,
    };
    Some(Exemption {
        id: c["id"].as_str().unwrap_or_default().to_string(),
        name: coding["display"].as_str().unwrap_or_default().to_string(),
        kind: Kind::of(&code),
        code,
        start,
        end,
        state,
        declared,
    })
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

/// The id prefix of a person's self-certifications whose validity ends in `year`.
fn declaration_id(patient: &str, year: i32) -> String {
    format!("{patient}-autocertificazione-{year}")
}

fn money(cents: i64) -> Value {
    json!({"value": (cents as f64) / 100.0, "currency": "EUR"})
}

impl Portal {
    /// A person's exemptions as the actor may read them (through the gate, logged as any read).
    async fn exemptions_of(&self, actor: &Actor, patient_id: &str) -> AppResult<Exemptions> {
        // the gate decides on the exemptions; the person's name and age come with them (as the
        // platform for a citizen side, whose delegation may not cover the registry entry; as
        // the operator at the desk, in the person's log)
        let pairs = vec![("beneficiary".to_string(), format!("Patient/{patient_id}"))];
        let rows = self.all_as(actor, "Coverage", pairs, parse).await?;
        let reader = if matches!(actor.who, Who::Citizen { .. }) { Actor::system() } else { actor.clone() };
        let patient = self.fhir().read(&reader, "Patient", patient_id).await?.resource;
        let today = rome::today();
        let age = patient["birthDate"].as_str().and_then(|b| crate::doctor_choice::age_on(b, today)).unwrap_or(0);
        let mut items: Vec<Exemption> = rows.iter().filter_map(|c| exemption_of(c, today)).collect();
        items.sort_by(|a, b| {
            (a.state != State::Active, a.state == State::Revoked || a.state == State::Expired)
                .cmp(&(b.state != State::Active, b.state == State::Revoked || b.state == State::Expired))
                .then(b.start.cmp(&a.start))
                .then(a.code.cmp(&b.code))
        });
        Ok(Exemptions { patient: patient_id.to_string(), name: crate::auth::display_name(&patient), age, items })
    }

    /// The exemptions of the record the citizen (parent, delegate) looks at.
    pub async fn exemptions(&self, actor: &Actor) -> AppResult<Exemptions> {
        let record = Self::record_of(actor)?;
        self.exemptions_of(actor, &record).await
    }

    /// The ASST desk: a person's exemptions (read as the operator: in the person's log).
    pub async fn exemptions_at_desk(&self, actor: &Actor, patient_id: &str) -> AppResult<Exemptions> {
        Self::desk_operator(actor)?;
        self.exemptions_of(actor, patient_id).await
    }

    fn desk_operator(actor: &Actor) -> AppResult<()> {
        match &actor.who {
            Who::Professional { role: crate::gate::ProRole::AsstAdmin, .. } => Ok(()),
            _ => Err(AppError::Forbidden("exemptions are recorded at the desk by the ASST registry office".into())),
        }
    }

    /// Self-certify an income exemption for the record the citizen acts on (their own, or a
    /// minor child's as a parent; a delegation does not cover a statement under DPR 445/2000).
    /// `Err(Ok(..))`: what is wrong with the form, nothing stored.
    pub async fn declare_exemption(&self, actor: &Actor, form: &DeclarationForm) -> Result<Exemption, Result<Vec<FieldError>, AppError>> {
        let record = self.holder_or_parent(actor, "an exemption is declared by the citizen, or a parent for a minor").await.map_err(Err)?;
        let by = match &actor.who {
            Who::Citizen { .. } => self.signed_in_name(actor).await.map_err(Err)?,
            _ => String::new(),
        };
        self.declare(&Actor::system(), actor, &record, form, &by).await
    }

    /// The desk records a self-certification the person signed there (as the operator).
    pub async fn declare_exemption_at_desk(
        &self,
        actor: &Actor,
        patient_id: &str,
        form: &DeclarationForm,
    ) -> Result<Exemption, Result<Vec<FieldError>, AppError>> {
        Self::desk_operator(actor).map_err(Err)?;
        let by = format!("{} (sportello ASST)", self.professional_name(actor).await.map_err(Err)?);
        self.declare(actor, actor, patient_id, form, &by).await
    }

    /// Revoke a self-certification of the record the citizen acts on.
    pub async fn revoke_exemption(&self, actor: &Actor, coverage_id: &str) -> AppResult<Exemption> {
        let record = self.holder_or_parent(actor, "an exemption is revoked by the citizen, or a parent for a minor").await?;
        self.revoke(&Actor::system(), actor, &record, coverage_id).await
    }

    /// The desk revokes a person's self-certification.
    pub async fn revoke_exemption_at_desk(&self, actor: &Actor, patient_id: &str, coverage_id: &str) -> AppResult<Exemption> {
        Self::desk_operator(actor)?;
        self.revoke(actor, actor, patient_id, coverage_id).await
    }

    /// The exemptions a charge for this person on `day` meets: the codes in force then (income
    /// and others), as the platform reads them. Charges use it to price a ticket.
    pub async fn exemptions_on(&self, patient_id: &str, day: Date) -> AppResult<Vec<String>> {
        let pairs = vec![("beneficiary".to_string(), format!("Patient/{patient_id}"))];
        let rows = self.all_as(&Actor::system(), "Coverage", pairs, parse).await?;
        let mut codes: Vec<String> =
            rows.iter().filter_map(|c| exemption_of(c, day)).filter(|e| e.state == State::Active).map(|e| e.code).collect();
        codes.sort();
        codes.dedup();
        Ok(codes)
    }

    async fn signed_in_name(&self, actor: &Actor) -> AppResult<String> {
        let Who::Citizen { patient: Some(own), .. } = &actor.who else { return Ok(String::new()) };
        let own = own.clone();
        let me = self.fhir().read(&Actor::system(), "Patient", &own).await?.resource;
        Ok(crate::auth::display_name(&me))
    }

    async fn professional_name(&self, actor: &Actor) -> AppResult<String> {
        let Who::Professional { practitioner, .. } = &actor.who else { return Ok(String::new()) };
        let p = self.fhir().read(&Actor::system(), "Practitioner", practitioner).await?.resource;
        Ok(crate::auth::display_name(&p))
    }

    async fn declare(
        &self,
        writer: &Actor,
        reader: &Actor,
        patient_id: &str,
        form: &DeclarationForm,
        by: &str,
    ) -> Result<Exemption, Result<Vec<FieldError>, AppError>> {
        let current = self.exemptions_of(reader, patient_id).await.map_err(Err)?;
        let patient = self.fhir().read(&Actor::system(), "Patient", patient_id).await.map_err(Err)?.resource;
        let birth = patient["birthDate"].as_str().and_then(rome::date_of);
        let mut errors: Vec<FieldError> = Vec::new();
        let code = IncomeCode::parse(&form.code);
        if code.is_none() {
            errors.push(("code", "Scegli il codice di esenzione.", "Choose the exemption code."));
        }
        let standing = match (code, Standing::parse(&form.standing)) {
            (Some(IncomeCode::E01), None) => Some(Standing::Holder),
            (_, s) => s,
        };
        if standing.is_none() {
            errors.push(("standing", "Indica se sei titolare o familiare a carico.", "Say whether you are the holder or a dependant."));
        }
        let children = if form.children.trim().is_empty() { Some(0) } else { form.children.trim().parse::<u32>().ok() };
        if children.is_none() {
            errors.push((
                "children",
                "Indica il numero dei figli a carico (da 0 a 20).",
                "Enter the number of dependent children (0 to 20).",
            ));
        }
        let income = if form.income.trim().is_empty() { None } else { rules::parse_euro(&form.income) };
        if !form.income.trim().is_empty() && income.is_none() {
            errors.push(("income", "Scrivi il reddito in euro, per esempio 8.000,00.", "Write the income in euro, for example 8,000.00."));
        }
        if !form.accepted {
            errors.push(("accepted", "Per dichiarare devi confermare la dichiarazione.", "To declare you must confirm the statement."));
        }
        let Some(birth) = birth else {
            return Err(Err(AppError::Conflict("the registry has no birth date for this person".into())));
        };
        if let (Some(code), Some(standing), Some(children)) = (code, standing, children) {
            let d = Declaration { code, standing, family_income_cents: income, spouse: form.spouse, children, age: current.age };
            if let Err(refusals) = rules::check(&d) {
                for r in refusals {
                    if !(r.field == "income" && errors.iter().any(|e| e.0 == "income")) {
                        errors.push((r.field, r.it, r.en));
                    }
                }
            }
            if current.income_in_force().is_some() {
                errors.push((
                    "code",
                    "Hai già un'esenzione per reddito in corso di validità: per dichiararne un'altra revoca prima quella.",
                    "You already hold an income exemption in force: revoke it before declaring another.",
                ));
            }
            if errors.is_empty() {
                return self.write_declaration(writer, &current, &patient, &d, birth, by).await;
            }
        }
        Err(Ok(errors))
    }

    async fn write_declaration(
        &self,
        writer: &Actor,
        current: &Exemptions,
        patient: &Value,
        d: &Declaration,
        birth: Date,
        by: &str,
    ) -> Result<Exemption, Result<Vec<FieldError>, AppError>> {
        let patient_id = current.patient.as_str();
        let today = rome::today();
        let until = rules::valid_until(d.code, birth, today);
        // the n-th declaration of this cycle: two racing for one person make the same id, and
        // only the first commit creates it
        let prefix = declaration_id(patient_id, until.year());
        let n = current.items.iter().filter(|e| e.id.starts_with(&prefix)).count() + 1;
        let id = format!("{prefix}-{n}");
        let mut parts = vec![
            json!({"url": "dichiarata", "valueDateTime": datetime::format_instant(datetime::now_ms())}),
            json!({"url": "dichiarante", "valueString": by}),
            json!({"url": "titolo", "valueCode": d.standing.code()}),
            json!({"url": "coniuge", "valueBoolean": d.spouse}),
            json!({"url": "figli", "valueUnsignedInt": d.children}),
            json!({"url": "testo", "valueString": STATEMENT}),
        ];
        if let Some(limit) = rules::limit_cents(d) {
            parts.push(json!({"url": "limite", "valueMoney": money(limit)}));
        }
        let (name, _) = d.code.name();
        let mut coverage = json!({"resourceType": "Coverage", "id": id, "status": "active",
            "type": {"coding": [{"system": rules::SYSTEM, "code": d.code.code(), "display": name}]},
            "beneficiary": {"reference": format!("Patient/{patient_id}")},
            "period": {"start": today.to_string(), "end": until.to_string()},
            "extension": [{"url": DECLARATION_EXT, "extension": parts}]});
        // the payer is the person's ATS, for the regional health service
        coverage["payor"] = match patient["managingOrganization"]["reference"].as_str() {
            Some(org) => json!([{"reference": org}]),
            None => json!([{"display": "Servizio Sanitario Regionale"}]),
        };
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry("Coverage", &id, coverage.clone(), None)]});
        match self.fhir().process_bundle_value(writer, bundle, "").await {
            Ok(_) => {
                tracing::info!(code = d.code.code(), "income exemption declared");
                exemption_of(&coverage, today).ok_or_else(|| Err(AppError::Internal("declaration not readable".into())))
            }
            // another declaration for this person committed first
            Err(e) if lost_race(&e) => Err(Err(AppError::Conflict("an income exemption was already declared for this person".into()))),
            Err(e) => Err(Err(e)),
        }
    }

    async fn revoke(&self, writer: &Actor, reader: &Actor, patient_id: &str, coverage_id: &str) -> AppResult<Exemption> {
        let current = self.exemptions_of(reader, patient_id).await?;
        let Some(found) = current.items.iter().find(|e| e.id == coverage_id) else {
            return Err(AppError::NotFound(format!("Coverage/{coverage_id} is not an exemption of this person")));
        };
        if found.declared.is_none() {
            return Err(AppError::Conflict(
                "only a self-certification can be revoked here; exemptions issued by the ATS are changed by the ATS".into(),
            ));
        }
        if !found.revocable() {
            return Err(AppError::Conflict("this exemption is no longer in force".into()));
        }
        let read = self.fhir().read(&Actor::system(), "Coverage", coverage_id).await?;
        let mut c = read.resource;
        let today = rome::today();
        c["status"] = json!("cancelled");
        // not in force from today
        c["period"]["end"] = json!(today.previous_day().unwrap_or(today).to_string());
        if let Some(ext) = c["extension"].as_array_mut().and_then(|xs| xs.iter_mut().find(|x| x["url"] == DECLARATION_EXT)) {
            if let Some(parts) = ext["extension"].as_array_mut() {
                parts.push(json!({"url": "revocata", "valueDateTime": datetime::format_instant(datetime::now_ms())}));
            }
        }
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry("Coverage", coverage_id, c.clone(), Some(read.version))]});
        match self.fhir().process_bundle_value(writer, bundle, "").await {
            Ok(_) => exemption_of(&c, today).ok_or_else(|| AppError::Internal("revocation not readable".into())),
            Err(e) if lost_race(&e) => Err(AppError::Conflict("this exemption changed meanwhile: reload".into())),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn a_coverage_reads_as_an_exemption_in_its_state() {
        let c = json!({"resourceType": "Coverage", "id": "x", "status": "active",
            "type": {"coding": [{"system": rules::SYSTEM, "code": "E02", "display": "Disoccupato"}]},
            "period": {"start": "2026-12-01", "end": "2027-03-31"},
            "extension": [{"url": DECLARATION_EXT, "extension": [
                {"url": "titolo", "valueCode": "dependant"}, {"url": "figli", "valueUnsignedInt": 2},
                {"url": "coniuge", "valueBoolean": true}, {"url": "limite", "valueMoney": {"value": 12394.97, "currency": "EUR"}}]}]});
        let e = exemption_of(&c, date!(2026 - 12 - 07)).expect("an exemption");
        assert_eq!((e.code.as_str(), e.kind, e.state), ("E02", Kind::Income, State::Active));
        let d = e.declared.clone().expect("declared");
        assert_eq!((d.standing, d.children, d.spouse, d.limit_cents), (Standing::Dependant, 2, true, Some(1_239_497)));
        assert!(e.revocable());
        assert_eq!(exemption_of(&c, date!(2027 - 04 - 01)).map(|e| e.state), Some(State::Expired));
        assert_eq!(exemption_of(&c, date!(2026 - 11 - 30)).map(|e| e.state), Some(State::Future));
        let mut revoked = c.clone();
        revoked["status"] = json!("cancelled");
        let r = exemption_of(&revoked, date!(2026 - 12 - 07)).expect("an exemption");
        assert_eq!(r.state, State::Revoked);
        assert!(!r.revocable());
        // another system's coverage is not an exemption
        let other = json!({"resourceType": "Coverage", "type": {"coding": [{"system": "urn:x", "code": "E02"}]}});
        assert!(exemption_of(&other, date!(2026 - 12 - 07)).is_none());
    }
}
