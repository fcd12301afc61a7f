//! A household as FHIR resources for the regional registry: Patient, RelatedPerson (parents),
//! Coverage (exemptions), Condition (chronic conditions), Consent, CarePlan (chronic care plan
//! and birth pathway), and the Practitioner/PractitionerRole of doctors who opened their list.

use crate::people::{Chronic, Doctor, Household, Person};
use fascicolo_domain::systems::{CF_SYSTEM, CONSENT_CATEGORY, CONSENT_CHANNEL_EXT, NOTICE_PREFIX, ROLE_SYSTEM, V3_ROLE};
use serde_json::{json, Value};
use time::{Date, Duration};

/// Exemption codes (income E01–E04, pathology per DPCM 12/1/2017).
pub const EXEMPTION_SYSTEM: &str = "urn:fascicolo:esenzione";
/// The health card (tessera sanitaria, TEAM) number.
pub const HEALTH_CARD_SYSTEM: &str = "urn:fascicolo:tessera-sanitaria";
const ICD9: &str = "http://hl7.org/fhir/sid/icd-9-cm";

fn d(date: Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), date.month() as u8, date.day())
}

fn doctor(doc: &Doctor) -> [Value; 2] {
    [
        json!({"resourceType": "Practitioner", "id": doc.id, "active": true,
            "identifier": [{"system": CF_SYSTEM, "value": doc.cf.to_string()}],
            "name": [{"family": doc.surname, "given": [doc.given], "prefix": ["Dott."]}],
            "gender": if doc.female { "female" } else { "male" }}),
        json!({"resourceType": "PractitionerRole", "id": format!("{}-role", doc.id), "active": true,
            "practitioner": {"reference": format!("Practitioner/{}", doc.id)},
            "organization": {"reference": format!("Organization/ats-{}", doc.ats)},
            "location": [{"reference": format!("Location/loc-{}", doc.practice)}],
            "code": [{"coding": [{"system": ROLE_SYSTEM, "code": doc.role}]}]}),
    ]
}

fn patient(p: &Person, payor: &str, home: (f64, f64)) -> Value {
    let mut telecom = Vec::new();
    if let Some(phone) = &p.phone {
        telecom.push(json!({"system": "phone", "value": phone, "use": "mobile"}));
    }
    if let Some(email) = &p.email {
        telecom.push(json!({"system": "email", "value": email}));
    }
    let mut v = json!({"resourceType": "Patient", "id": p.id, "active": true,
        "identifier": [{"system": CF_SYSTEM, "value": p.cf.to_string()}, {"system": HEALTH_CARD_SYSTEM, "value": p.health_card}],
        "name": [{"family": p.surname, "given": [p.given]}],
        "gender": if p.female { "female" } else { "male" },
        "birthDate": d(p.birth),
        "address": [{"use": "home", "line": [p.street], "city": p.town.name, "district": p.town.province.code, "country": "IT",
            "_city": {"extension": [{"url": fascicolo_domain::systems::ISTAT_EXT, "valueCode": p.town.istat}]},
            "extension": [{"url": fascicolo_domain::systems::GEOLOCATION_EXT, "extension": [{"url": "latitude", "valueDecimal": home.0}, {"url": "longitude", "valueDecimal": home.1}]}]}],
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
            "valueAddress": {"city": p.birth_place.name, "district": p.birth_place.province,
                "country": if p.birth_place.code.starts_with('Z') { "EE" } else { "IT" }}}],
        "managingOrganization": {"reference": payor}});
    if !telecom.is_empty() {
        v["telecom"] = json!(telecom);
    }
    if let Some(doc) = &p.doctor {
        v["generalPractitioner"] = json!([{"reference": format!("Practitioner/{doc}")}]);
    }
    v
}

/// One in five people with a family doctor has a specialist prescription to book, written by
/// that doctor in the last three weeks (a service of the regional offer, a priority class, an
/// NRE of the region; the number ends in 9990, past the drug prescriptions' sequence).
fn specialist_prescription(p: &Person, n: u64, today: Date) -> Option<Value> {
    use fascicolo_domain::booking::{Priority, ACCESS_EXT, PRIORITY_EXT, SERVICES, SERVICE_SYSTEM};
    let doc = p.doctor.as_ref()?;
    if n % 5 != 2 || p.age(today) < 1 {
        return None;
    }
    let mut s = &SERVICES[(n / 5) as usize % SERVICES.len()];
    if (!p.female && matches!(s.code, "89.26.1" | "87.37.1")) || (p.age(today) < 40 && s.code == "45.23") {
        s = &SERVICES[0];
    }
    let class = [Priority::D, Priority::P, Priority::B, Priority::D, Priority::P][(n / 7) as usize % 5];
    let access = if s.code == "89.01.3" { "follow-up" } else { "first" };
    let nre = format!("030{:012}", n * 10_000 + 9_990);
    let question = ["Controllo clinico", "Dolore persistente da approfondire", "Sospetto clinico da confermare", "Sintomi ricorrenti"]
        [(n / 3) as usize % 4];
    Some(json!({"resourceType": "ServiceRequest", "id": format!("{}-prescrizione-{}", p.id, nre), "status": "active",
        "intent": "order", "subject": {"reference": format!("Patient/{}", p.id)},
        "identifier": [{"system": format!("urn:oid:{}", crate::cda::NRE_OID), "value": nre}],
        "requisition": {"system": format!("urn:oid:{}", crate::cda::NRE_OID), "value": nre},
        "code": {"coding": [{"system": SERVICE_SYSTEM, "code": s.code, "display": s.name_it}], "text": s.name_it},
        "authoredOn": d(today - Duration::days((n % 21) as i64)),
        "requester": {"reference": format!("Practitioner/{doc}")},
        "reasonCode": [{"text": question}],
        "extension": [{"url": PRIORITY_EXT, "valueCode": class.code()}, {"url": ACCESS_EXT, "valueCode": access}]}))
}

/// The household's registry resources (doctors first: patients refer to them).
pub fn resources(h: &Household, ats: &str, today: Date) -> Vec<Value> {
    let mut out: Vec<Value> = h.new_doctors.iter().flat_map(doctor).collect();
    let payor = format!("Organization/ats-{ats}");
    for (i, p) in h.members.iter().enumerate() {
        let n = h.index * 8 + i as u64;
        let home = crate::region::jitter(&mut crate::rng(0, "home", n), p.town);
        out.push(patient(p, &payor, home));
        let subject = json!({"reference": format!("Patient/{}", p.id)});
        if let Some(sr) = specialist_prescription(p, n, today) {
            out.push(sr);
        }
        for (i, role) in &p.parents {
            let parent = &h.members[*i];
            out.push(json!({"resourceType": "RelatedPerson", "id": format!("{}-for-{}", parent.id, p.id), "active": true,
                "patient": subject,
                "relationship": [{"coding": [{"system": V3_ROLE, "code": role, "display": if *role == "MTH" { "mother" } else { "father" }}]}],
                "identifier": [{"system": CF_SYSTEM, "value": parent.cf.to_string()}],
                "name": [{"family": parent.surname, "given": [parent.given]}]}));
        }
        for (code, display) in &p.exemptions {
            out.push(
                json!({"resourceType": "Coverage", "id": format!("{}-esenzione-{}", p.id, code.to_ascii_lowercase()), "status": "active",
                "type": {"coding": [{"system": EXEMPTION_SYSTEM, "code": code, "display": display}]},
                "beneficiary": subject, "payor": [{"reference": payor}],
                "period": {"start": d(today - Duration::days(400))}}),
            );
        }
        for c in &p.chronic {
            let (code, display) = c.icd9();
            let slug = format!("{c:?}").to_ascii_lowercase();
            out.push(json!({"resourceType": "Condition", "id": format!("{}-{slug}", p.id),
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
                "code": {"coding": [{"system": ICD9, "code": code, "display": display}], "text": display},
                "subject": subject}));
            if matches!(c, Chronic::Diabetes | Chronic::Hypertension) {
                out.push(json!({"resourceType": "CarePlan", "id": format!("{}-pai-{slug}", p.id), "status": "active", "intent": "plan",
                    "title": format!("Piano di assistenza individuale: {display}"),
                    "category": [{"coding": [{"system": "urn:fascicolo:care-plan", "code": "pai"}]}],
                    "subject": subject, "period": {"start": d(today - Duration::days(300))},
                    "addresses": [{"reference": format!("Condition/{}-{slug}", p.id)}],
                    "activity": [
                        {"detail": {"status": "scheduled", "description": "Visita di controllo dal medico di medicina generale",
                            "scheduledString": "ogni 6 mesi"}},
                        {"detail": {"status": "scheduled", "description": if *c == Chronic::Diabetes { "Emoglobina glicata e glicemia" } else { "Creatinina, potassio, sodio" },
                            "scheduledString": "ogni 6 mesi"}},
                        {"detail": {"status": "scheduled", "description": if *c == Chronic::Diabetes { "Fondo dell'occhio" } else { "Elettrocardiogramma" },
                            "scheduledString": "ogni 12 mesi"}}]}));
            }
        }
        if let Some(since) = p.pregnant_since {
            let week = |w: i64| d(since + Duration::days(w * 7));
            let steps: Vec<Value> = [
                (10, "Prima visita ostetrica ed esami del primo trimestre"),
                (12, "Ecografia del primo trimestre e screening combinato"),
                (20, "Ecografia morfologica"),
                (25, "Curva da carico di glucosio"),
                (32, "Ecografia del terzo trimestre"),
                (36, "Tampone vagino-rettale per streptococco B"),
                (38, "Visita ostetrica e cardiotocografia"),
            ]
            .iter()
            .map(|(w, what)| {
                let status = if since + Duration::days(w * 7) < today { "completed" } else { "scheduled" };
                json!({"detail": {"status": status, "description": what, "scheduledString": format!("settimana {w} ({})", week(*w))}})
            })
            .collect();
            out.push(json!({"resourceType": "CarePlan", "id": format!("{}-percorso-nascita", p.id), "status": "active", "intent": "plan",
                "title": "Agenda del percorso nascita",
                "category": [{"coding": [{"system": "urn:fascicolo:care-plan", "code": "percorso-nascita"}]}],
                "subject": subject, "period": {"start": d(since), "end": week(40)},
                "activity": steps}));
        }
        if p.consent {
            // a minor's consent is given by a parent
            let performer = p.parents.first().map(|(i, _)| format!("RelatedPerson/{}-for-{}", h.members[*i].id, p.id));
            let performer = if p.age(today) < 18 { performer } else { None }.unwrap_or_else(|| format!("Patient/{}", p.id));
            out.push(json!({"resourceType": "Consent", "id": format!("consent-{}", p.id), "status": "active",
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": CONSENT_CATEGORY, "code": "consultation"}]}],
                "patient": subject, "dateTime": format!("{}T09:00:00Z", d(today - Duration::days(200))),
                "performer": [{"reference": performer}], "policy": [{"uri": format!("{NOTICE_PREFIX}1")}],
                "provision": {"type": "permit"},
                "extension": [{"url": CONSENT_CHANNEL_EXT, "valueCode": "portal"}]}));
        }
    }
    out
}
