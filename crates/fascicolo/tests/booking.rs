//! The regional booking network: a citizen books a specialist visit from a prescription in the
//! portal, moves it and cancels it; the IHE scheduling operations over the FHIR API for a
//! citizen's app and for the CUP desk (audited); the refusals that change nothing; and no slot
//! or prescription given twice when many book at once (SQLite, and PostgreSQL when
//! FASCICOLO_TEST_DATABASE_URL is set). The offer is the synthetic region's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use fascicolo_app::gate::ProRole;
use fascicolo_app::{Actor, FhirService, Who};
use serde_json::{json, Value};
use std::sync::Arc;

const GIULIA: &str = "RSSGLI85D52F205";
const MARCO: &str = "BNCMRC07A10F205";

/// The synthetic region's agendas (and their sites) for these services, stored as the seed
/// stores them.
async fn seed_offer(fhir: &FhirService, codes: &[&str]) -> usize {
    let layout = fascicolo_seed::region::layout(1, 60);
    let all = fascicolo_seed::region::resources(1, &layout);
    let schedules: Vec<&Value> = all
        .iter()
        .filter(|v| v["resourceType"] == "Schedule" && codes.contains(&v["serviceType"][0]["coding"][0]["code"].as_str().unwrap()))
        .collect();
    let refs: Vec<String> = schedules
        .iter()
        .flat_map(|s| s["actor"].as_array().unwrap().iter().map(|a| a["reference"].as_str().unwrap().to_string()))
        .collect();
    let mut entries = Vec::new();
    for v in &all {
        let r = format!("{}/{}", v["resourceType"].as_str().unwrap(), v["id"].as_str().unwrap());
        if schedules.iter().any(|s| s["id"] == v["id"]) || refs.contains(&r) {
            entries.push(json!({"resource": v, "request": {"method": "PUT", "url": r}}));
        }
    }
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    fhir.process_bundle_value(&Actor::system(), bundle, "").await.unwrap();
    schedules.len()
}

/// The organisations that run the sites, as the seed stores them (hospitals, ASSTs, ATSs).
async fn seed_organizations(fhir: &FhirService) {
    let layout = fascicolo_seed::region::layout(1, 60);
    let orgs: Vec<Value> = fascicolo_seed::region::resources(1, &layout)
        .into_iter()
        .filter(|v| v["resourceType"] == "Organization" && v["id"] != "ats-milano")
        .map(|v| json!({"resource": v, "request": {"method": "PUT", "url": format!("Organization/{}", v["id"].as_str().unwrap())}}))
        .collect();
    fhir.process_bundle_value(&Actor::system(), json!({"resourceType": "Bundle", "type": "transaction", "entry": orgs}), "").await.unwrap();
}

async fn read(fhir: &FhirService, rt: &str, id: &str) -> Value {
    fhir.read(&Actor::system(), rt, id).await.unwrap().resource
}

fn ext<'a>(v: &'a Value, url: &str) -> &'a Value {
    v["extension"].as_array().and_then(|a| a.iter().find(|e| e["url"] == url)).unwrap_or(&Value::Null)
}

/// The slot keys of the options table of a page, in order.
fn slots_in(html: &str) -> Vec<String> {
    html.split("name=\"slot\" value=\"").skip(1).map(|s| s.split('"').next().unwrap().to_string()).collect()
}

async fn prescription_of(fhir: &FhirService, patient: &str, code: &str) -> Value {
    let page =
        fhir.search(&Actor::system(), Some("ServiceRequest"), &[("subject".into(), format!("Patient/{patient}"))], "").await.unwrap();
    page.entries
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.1).unwrap())
        .find(|v| v["code"]["coding"][0]["code"] == code)
        .unwrap_or_else(|| panic!("{patient} has no prescription {code}"))
}

#[tokio::test]
async fn a_citizen_books_moves_and_cancels_a_visit_in_the_portal() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    assert!(seed_offer(&fhir, &["89.7A.3"]).await > 5);
    let sr = prescription_of(&fhir, "rossi-giulia", "89.7A.3").await;
    let sr_id = sr["id"].as_str().unwrap().to_string();
    let nre = sr["identifier"][0]["value"].as_str().unwrap().to_string();
    let cookie = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(GIULIA), "citizen").await);

    // the prescription to book, the menu entry, a typed NRE (wrong, unknown, right)
    let (s, _, list) = page(&app, &cookie, "/prenota").await;
    assert_eq!(s, 200, "{list}");
    assert!(list.contains("href=\"/prenota\"") && list.contains(&nre) && list.contains("Prima visita cardiologica"), "{list}");
    let (s, _, bad) = page(&app, &cookie, "/prenota?nre=12").await;
    assert_eq!(s, 422);
    assert!(bad.contains("15 caratteri"));
    let (s, _, unknown) = page(&app, &cookie, "/prenota?nre=030999999999999").await;
    assert_eq!(s, 422);
    assert!(unknown.contains("Nessuna prescrizione da prenotare con questo NRE"));
    let (s, to, _) = page(&app, &cookie, &format!("/prenota?nre={}", nre)).await;
    assert_eq!((s, to.as_str()), (303, format!("/prenota/{sr_id}").as_str()));

    // the options: one per agenda, her ATS (Milan) first, each with its deadline badge
    let (s, _, options) = page(&app, &cookie, &format!("/prenota/{sr_id}")).await;
    assert_eq!(s, 200, "{options}");
    assert!(options.contains("id=\"options\"") && options.contains("Entro i tempi") && options.contains(" km"), "{options}");
    let slots = slots_in(&options);
    assert!(slots.len() > 3, "{slots:?}");
    let rows: Vec<&str> = options.split("id=\"options\"").nth(1).unwrap().split("<tr>").skip(2).collect();
    // her area first: no row of her ATS after one outside it
    let outside: Vec<bool> = rows.iter().map(|r| r.contains("Fuori dalla tua ATS")).collect();
    assert!(!outside[0], "the first option is in her ATS");
    assert!(outside.windows(2).all(|w| w[0] <= w[1]), "her area first: {outside:?}");
    let csrf = csrf_of(&options);

    // hold the first, confirm, book
    let (s, to, _) = post(&app, &cookie, &format!("/prenota/{sr_id}/blocca"), &[("csrf", &csrf), ("slot", &slots[0])]).await;
    assert_eq!(s, 303);
    assert!(to.starts_with(&format!("/prenota/{sr_id}/conferma?slot=")), "{to}");
    let held = read(&fhir, "Slot", &slots[0]).await;
    assert_eq!(held["status"], "busy-tentative");
    let (s, _, confirm) = page(&app, &cookie, &to).await;
    assert_eq!(s, 200);
    assert!(
        confirm.contains("Conferma la prenotazione") && confirm.contains("Preparazione") && confirm.contains("Posto riservato fino alle")
    );
    let (s, to, _) = post(&app, &cookie, &format!("/prenota/{sr_id}/conferma"), &[("csrf", &csrf), ("slot", &slots[0])]).await;
    assert_eq!(s, 303);
    let appt_id = to.strip_prefix("/appuntamenti/").unwrap().split('?').next().unwrap().to_string();
    let appt = read(&fhir, "Appointment", &appt_id).await;
    assert_eq!(appt["status"], "booked");
    assert_eq!(appt["basedOn"][0]["reference"], format!("ServiceRequest/{sr_id}"));
    assert_eq!(appt["slot"][0]["reference"], format!("Slot/{}", slots[0]));
    assert_eq!(ext(&appt, "urn:fascicolo:wait-guarantee")["valueCode"], "kept");
    assert_eq!(read(&fhir, "Slot", &slots[0]).await["status"], "busy");
    assert_eq!(
        ext(&read(&fhir, "ServiceRequest", &sr_id).await, "urn:fascicolo:booked-as")["valueReference"]["reference"],
        format!("Appointment/{appt_id}")
    );
    let (s, _, shown) = page(&app, &cookie, &to).await;
    assert_eq!(s, 200);
    assert!(
        shown.contains("Prenotazione confermata")
            && shown.contains("Entro i tempi garantiti")
            && shown.contains("id=\"appointment-actions\"")
    );

    // booking the same prescription again is refused; the list shows it booked
    let (s, _, _) = post(&app, &cookie, &format!("/prenota/{sr_id}/blocca"), &[("csrf", &csrf), ("slot", &slots[1])]).await;
    assert_eq!(s, 409);
    let (_, _, list) = page(&app, &cookie, "/prenota").await;
    assert!(list.contains("id=\"booked\"") && list.contains(&format!("/appuntamenti/{appt_id}")));

    // Marco (another adult) can neither see nor cancel it
    let marco = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(MARCO), "citizen").await);
    let (_, _, his) = page(&app, &marco, "/prenota").await;
    let his_csrf = csrf_of(&his);
    let (s, _, _) = page(&app, &marco, &format!("/prenota/{sr_id}")).await;
    assert_eq!(s, 404);
    let (s, _, _) = post(&app, &marco, &format!("/appuntamenti/{appt_id}/disdetta"), &[("csrf", &his_csrf)]).await;
    assert_eq!(s, 404);
    assert_eq!(read(&fhir, "Appointment", &appt_id).await["status"], "booked");

    // move it three weeks later: one commit cancels the old and books the new
    let later = (fascicolo_domain::rome::today() + time::Duration::days(21)).to_string();
    let (s, _, moving) = page(&app, &cookie, &format!("/prenota/{sr_id}?sposta={appt_id}&dal={later}")).await;
    assert_eq!(s, 200);
    assert!(moving.contains("Sposta l'appuntamento") && moving.contains(&format!("action=\"/appuntamenti/{appt_id}/sposta\"")));
    let new_slot = slots_in(&moving)[0].clone();
    let (s, to, _) =
        post(&app, &cookie, &format!("/appuntamenti/{appt_id}/sposta"), &[("csrf", &csrf), ("slot", &new_slot), ("sr", &sr_id)]).await;
    assert_eq!(s, 303, "{to}");
    let new_id = to.strip_prefix("/appuntamenti/").unwrap().split('?').next().unwrap().to_string();
    assert_ne!(new_id, appt_id);
    let old = read(&fhir, "Appointment", &appt_id).await;
    assert_eq!(old["status"], "cancelled");
    assert_eq!(read(&fhir, "Slot", &slots[0]).await["status"], "free");
    assert_eq!(read(&fhir, "Slot", &new_slot).await["status"], "busy");
    assert_eq!(
        ext(&read(&fhir, "ServiceRequest", &sr_id).await, "urn:fascicolo:booked-as")["valueReference"]["reference"],
        format!("Appointment/{new_id}")
    );
    // a class D visit is due within 30 days of the prescription: a date past that, chosen while
    // one in time was offered, takes the booking out of the guarantee, and the record says so
    let new = read(&fhir, "Appointment", &new_id).await;
    assert_eq!(new["status"], "booked");
    let deadline = fascicolo_domain::rome::date_of(sr["authoredOn"].as_str().unwrap()).unwrap() + time::Duration::days(30);
    let day = fascicolo_domain::rome::date_of(new["start"].as_str().unwrap()).unwrap();
    let expected = if day <= deadline { "kept" } else { "waived" };
    assert_eq!(ext(&new, "urn:fascicolo:wait-guarantee")["valueCode"], expected, "{day} against {deadline}");

    // cancel it, with notice: not late, the prescription bookable again
    let (s, _, ask) = page(&app, &cookie, &format!("/appuntamenti/{new_id}/disdetta")).await;
    assert_eq!(s, 200);
    assert!(!ask.contains("id=\"late-warning\""), "three weeks of notice is not late");
    let (s, to, _) = post(&app, &cookie, &format!("/appuntamenti/{new_id}/disdetta"), &[("csrf", &csrf)]).await;
    assert_eq!((s, to.as_str()), (303, "/prenota?esito=disdetto"));
    let cancelled = read(&fhir, "Appointment", &new_id).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(ext(&cancelled, "urn:fascicolo:late-cancellation")["valueBoolean"], false);
    assert_eq!(read(&fhir, "Slot", &new_slot).await["status"], "free");
    assert!(ext(&read(&fhir, "ServiceRequest", &sr_id).await, "urn:fascicolo:booked-as").is_null());
    // cancelling twice is refused and changes nothing
    let (s, _, _) = post(&app, &cookie, &format!("/appuntamenti/{new_id}/disdetta"), &[("csrf", &csrf)]).await;
    assert_eq!(s, 409);
    // a forged form changes nothing
    let (s, _, _) = post(&app, &cookie, &format!("/prenota/{sr_id}/conferma"), &[("csrf", "forged"), ("slot", &slots[2])]).await;
    assert_eq!(s, 403);
    assert!(fhir.read(&Actor::system(), "Slot", &slots[2]).await.is_err(), "nothing stored for a forged form");
}

/// `POST /fhir/r4/Appointment/{op}` with a token.
async fn op(app: &TestApp, token: &str, name: &str, params: Vec<Value>) -> (u16, Value) {
    let r = app
        .send(
            "POST",
            &format!("/Appointment/{name}"),
            Some(json!({"resourceType": "Parameters", "parameter": params})),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    (r.status, r.body)
}

fn nre_param(nre: &str) -> Value {
    json!({"name": "referral-identifier", "valueIdentifier": {"system": "urn:oid:2.16.840.1.113883.2.9.4.3.9", "value": nre}})
}

#[tokio::test]
async fn the_scheduling_operations_for_a_citizen_app_and_the_cup_desk() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    seed_offer(&fhir, &["88.76.1", "95.02"]).await;
    let anna_sr = prescription_of(&fhir, "verdi-anna", "88.76.1").await;
    let anna_nre = anna_sr["identifier"][0]["value"].as_str().unwrap().to_string();
    let anna_cf = fascicolo_domain::CodiceFiscale::parse(&fascicolo_load::demo::cf("VRDNNA40B60F205")).unwrap();
    let anna = token_for(&app.store, &Actor::new(Who::Citizen { cf: anna_cf, patient: Some("verdi-anna".into()) })).await;

    // $find: proposed appointments, each with its slot, deadline flag and distance
    let (s, found) = op(&app, &anna, "$find", vec![nre_param(&anna_nre)]).await;
    assert_eq!(s, 200, "{found}");
    let proposed: Vec<&Value> =
        found["entry"].as_array().unwrap().iter().filter(|e| e["search"]["mode"] == "match").map(|e| &e["resource"]).collect();
    assert!(proposed.len() > 2);
    for p in &proposed {
        assert_eq!(p["status"], "proposed");
        assert!(p["id"].as_str().unwrap().ends_with(&format!(".{anna_nre}")));
        assert!(ext(p, "urn:fascicolo:within-deadline")["valueBoolean"].is_boolean());
    }
    // options are ranked: in the area first, then by start
    let keys: Vec<(bool, String)> = proposed
        .iter()
        .map(|p| (!ext(p, "urn:fascicolo:in-guarantee-area")["valueBoolean"].as_bool().unwrap(), p["start"].as_str().unwrap().to_string()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);

    // bad input: no NRE, a malformed one, one not hers, a made-up proposed appointment
    let (s, _) = op(&app, &anna, "$find", vec![]).await;
    assert_eq!(s, 400);
    let (s, _) = op(&app, &anna, "$find", vec![nre_param("12")]).await;
    assert_eq!(s, 400);
    let giulia_sr = prescription_of(&fhir, "rossi-giulia", "89.7A.3").await;
    let (s, _) = op(&app, &anna, "$find", vec![nre_param(giulia_sr["identifier"][0]["value"].as_str().unwrap())]).await;
    assert_eq!(s, 404, "another citizen's prescription is not found");
    let first = proposed[0]["id"].as_str().unwrap().to_string();
    let reference = |id: &str| json!({"name": "appointment-reference", "valueReference": {"reference": format!("Appointment/{id}")}});
    let (s, out) = op(&app, &anna, "$book", vec![reference("not-a-proposal")]).await;
    assert_eq!(s, 400, "{out}");
    assert!(out.to_string().contains("not a proposed appointment"), "{out}");
    let slot_key = first.rsplit_once('.').unwrap().0.to_string();
    let (s, _) =
        op(&app, &anna, "$book", vec![reference(&format!("{}-202001010900.{anna_nre}", slot_key.rsplit_once('-').unwrap().0))]).await;
    assert_eq!(s, 400, "a date in the past");
    assert!(fhir.read(&Actor::system(), "Slot", &slot_key).await.is_err(), "nothing stored by refusals");

    // $hold, then $book
    let (s, held) = op(&app, &anna, "$hold", vec![reference(&first)]).await;
    assert_eq!(s, 200, "{held}");
    assert_eq!(held["entry"][0]["resource"]["status"], "pending");
    assert!(ext(&held["entry"][0]["resource"], "urn:fascicolo:hold-until")["valueInstant"].is_string());
    let (s, booked) = op(&app, &anna, "$book", vec![reference(&first)]).await;
    assert_eq!(s, 200, "{booked}");
    let appt = &booked["entry"][0]["resource"];
    assert_eq!(appt["status"], "booked");
    assert_eq!(appt["basedOn"][0]["reference"], format!("ServiceRequest/{}", anna_sr["id"].as_str().unwrap()));
    // the same prescription again: 409, and the slot for another prescription: 409
    let (s, _) = op(&app, &anna, "$book", vec![reference(proposed[1]["id"].as_str().unwrap())]).await;
    assert_eq!(s, 409);

    // the CUP desk books Anna's eye examination at the counter: audited, in her access log
    let moretti = token_for(
        &app.store,
        &Actor::new(Who::Professional {
            practitioner: "moretti-luigi".into(),
            organization: Some("asst-fbf-sacco".into()),
            role: ProRole::CupOperator,
        }),
    )
    .await;
    let eye = prescription_of(&fhir, "verdi-anna", "95.02").await;
    let eye_nre = eye["identifier"][0]["value"].as_str().unwrap().to_string();
    let who = json!({"name": "patient-reference", "valueReference": {"reference": "Patient/verdi-anna"}});
    let (s, _) = op(&app, &moretti, "$find", vec![nre_param(&eye_nre)]).await;
    assert_eq!(s, 400, "the desk names the person");
    let (s, found) = op(&app, &moretti, "$find", vec![nre_param(&eye_nre), who.clone()]).await;
    assert_eq!(s, 200, "{found}");
    let eye_first = found["entry"][0]["resource"]["id"].as_str().unwrap().to_string();
    // a slot of another service's agenda is no proposal for this prescription
    let (s, _) = op(&app, &moretti, "$book", vec![reference(&first.replace(&anna_nre, &eye_nre)), who.clone()]).await;
    assert_eq!(s, 404);
    let (s, booked) = op(&app, &moretti, "$book", vec![reference(&eye_first), who.clone()]).await;
    assert_eq!(s, 200, "{booked}");
    assert_eq!(ext(&booked["entry"][0]["resource"], "urn:fascicolo:booking-channel")["valueCode"], "desk");
    let log = app.get_as("/AuditEvent?patient=Patient/verdi-anna&_count=100", &anna).await.body;
    let by_moretti = log["entry"].as_array().unwrap().iter().filter(|e| e.to_string().contains("moretti-luigi")).count();
    assert!(by_moretti >= 1, "the desk's access is in Anna's log: {log}");

    // a clinician cannot book, a citizen's token cannot book for someone else
    let gp = token_for(
        &app.store,
        &Actor::new(Who::Professional { practitioner: "ferrari-paolo".into(), organization: None, role: ProRole::Gp }),
    )
    .await;
    let (s, _) = op(&app, &gp, "$find", vec![nre_param(&eye_nre), who.clone()]).await;
    assert_eq!(s, 403);
    let (s, _) = op(
        &app,
        &anna,
        "$find",
        vec![nre_param(&eye_nre), json!({"name": "patient-reference", "valueReference": {"reference": "Patient/rossi-giulia"}})],
    )
    .await;
    assert_eq!(s, 403);

    // cancel through $book with the appointment's status cancelled
    let mut cancel = appt.clone();
    cancel["status"] = json!("cancelled");
    let (s, out) = op(&app, &anna, "$book", vec![json!({"name": "appointment-resource", "resource": cancel})]).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["entry"][0]["resource"]["status"], "cancelled");
}

/// Citizens with a prescription each for the same service, as the registry has them.
async fn many_prescriptions(fhir: &FhirService, n: usize, code: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut entries = Vec::new();
    for i in 0..n {
        let pid = format!("racer-{i}");
        let letters: String = [i / 676, (i / 26) % 26, i % 26].iter().map(|d| char::from(b'A' + *d as u8)).collect();
        let cf = fascicolo_load::demo::cf(&format!("RCR{letters}40B60F205"));
        let sr = format!("{pid}-prescrizione");
        let nre = format!("030{:012}", 555_000_000 + i);
        entries.push(json!({"resource": {"resourceType": "Patient", "id": pid, "active": true,
            "identifier": [{"system": "http://hl7.org/fhir/sid/it-cf", "value": cf}],
            "managingOrganization": {"reference": "Organization/ats-milano"}}, "request": {"method": "PUT", "url": format!("Patient/{pid}")}}));
        entries.push(json!({"resource": {"resourceType": "ServiceRequest", "id": sr, "status": "active", "intent": "order",
            "subject": {"reference": format!("Patient/{pid}")},
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.9.4.3.9", "value": nre}],
            "code": {"coding": [{"system": "urn:fascicolo:catalogo-nazionale-prestazioni", "code": code}]},
            "extension": [{"url": "urn:fascicolo:priority-class", "valueCode": "P"}]},
            "request": {"method": "PUT", "url": format!("ServiceRequest/{sr}")}}));
        out.push((pid, sr));
    }
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    fhir.process_bundle_value(&Actor::system(), bundle, "").await.unwrap();
    out
}

/// The app with the demo registry, the offer of one service and `n` citizens with a
/// prescription for it.
async fn race_setup(code: &str, n: usize) -> (TestApp, FhirService, fascicolo_app::portal::Portal, Vec<(String, String)>) {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    seed_offer(&fhir, &[code]).await;
    let racers = many_prescriptions(&fhir, n, code).await;
    (app, fhir.clone(), fascicolo_app::portal::Portal::new(fhir), racers)
}

/// The store holds exactly one booked appointment for each of these slots.
async fn one_booking_per_slot(fhir: &FhirService, keys: &[String]) {
    for k in keys {
        let page = fhir
            .search(&Actor::system(), Some("Appointment"), &[("slot".into(), format!("Slot/{k}")), ("status".into(), "booked".into())], "")
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1, "{k}");
    }
}

#[tokio::test]
async fn no_slot_and_no_prescription_is_booked_twice() {
    let (_app, fhir, portal, mut racers) = race_setup("89.52", 41).await;
    let last = racers.pop().unwrap();
    let moretti = Actor::new(Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::CupOperator,
    });
    // the first 8 options of the first racer: everyone tries them all, in the same order
    let options = portal.find(&moretti, Some(&racers[0].0), &racers[0].1, None).await.unwrap();
    let mut keys: Vec<String> = options.options.iter().map(|o| o.key.clone()).collect();
    keys.truncate(8);
    assert_eq!(keys.len(), 8);
    let mut tasks = Vec::new();
    for (pid, sr) in racers.clone() {
        let (portal, actor, keys) = (portal.clone(), moretti.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            for k in &keys {
                if portal.book(&actor, Some(&pid), &sr, k).await.is_ok() {
                    return Some(k.clone());
                }
            }
            None
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        if let Some(k) = t.await.unwrap() {
            won.push(k);
        }
    }
    won.sort();
    let mut distinct = won.clone();
    distinct.dedup();
    assert_eq!(won.len(), 8, "exactly one booking per slot: {won:?}");
    assert_eq!(distinct.len(), 8);
    // the store agrees: one booked appointment per slot
    one_booking_per_slot(&fhir, &keys).await;

    // one prescription racing for 12 different slots at once: booked once
    let (pid, sr) = last;
    let free: Vec<String> = portal
        .find(&moretti, Some(&pid), &sr, Some(fascicolo_domain::rome::today() + time::Duration::days(30)))
        .await
        .unwrap()
        .options
        .iter()
        .take(12)
        .map(|o| o.key.clone())
        .collect();
    let mut tasks = Vec::new();
    for k in free {
        let (portal, actor, pid, sr) = (portal.clone(), moretti.clone(), pid.clone(), sr.clone());
        tasks.push(tokio::spawn(async move { portal.book(&actor, Some(&pid), &sr, &k).await.is_ok() }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 1, "a prescription is booked once");
    let page = fhir
        .search(
            &Actor::system(),
            Some("Appointment"),
            &[("based-on".into(), format!("ServiceRequest/{sr}")), ("status".into(), "booked".into())],
            "",
        )
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1);
}

#[tokio::test]
async fn the_cup_desk_books_for_a_citizen_who_sees_it_and_the_access_in_her_log() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    seed_offer(&fhir, &["95.02", "88.76.1"]).await;
    let desk = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("MRTLGU82C08F205"), "cup-operator").await);
    let (s, _, refused) = page(&app, &desk, "/professionista?cf=VRDNNA40B60F205").await;
    assert_eq!(s, 200);
    assert!(refused.contains("non è valido"), "a codice fiscale without its check character is refused");
    let (s, to, _) = page(&app, &desk, &format!("/professionista?cf={}", fascicolo_load::demo::cf("VRDNNA40B60F205"))).await;
    assert_eq!((s, to.as_str()), (303, "/professionista/cup/verdi-anna"));
    let (s, _, person) = page(&app, &desk, &to).await;
    assert_eq!(s, 200, "{person}");
    assert!(person.contains("Anna Verdi") || person.contains("Verdi Anna"), "{person}");
    let eye = prescription_of(&fhir, "verdi-anna", "95.02").await;
    let eye_id = eye["id"].as_str().unwrap();
    assert!(person.contains(&format!("/professionista/cup/verdi-anna/prenota/{eye_id}")));
    let (s, _, options) = page(&app, &desk, &format!("/professionista/cup/verdi-anna/prenota/{eye_id}")).await;
    assert_eq!(s, 200);
    let slot = slots_in(&options)[0].clone();
    let csrf = csrf_of(&options);
    let (s, to, _) =
        post(&app, &desk, &format!("/professionista/cup/verdi-anna/prenota/{eye_id}"), &[("csrf", &csrf), ("slot", &slot)]).await;
    assert_eq!((s, to.as_str()), (303, "/professionista/cup/verdi-anna?esito=prenotato"));
    let booked = ext(&read(&fhir, "ServiceRequest", eye_id).await, "urn:fascicolo:booked-as")["valueReference"]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let appt_id = booked.strip_prefix("Appointment/").unwrap().to_string();
    assert_eq!(ext(&read(&fhir, "Appointment", &appt_id).await, "urn:fascicolo:booking-channel")["valueCode"], "desk");

    // Giulia, Anna's delegate for appointments, sees it in Anna's record; the desk's access is
    // in Anna's log by the operator's name
    let giulia = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(GIULIA), "citizen").await);
    let (_, _, me) = page(&app, &giulia, "/me").await;
    let csrf_g = csrf_of(&me);
    let (s, _, _) = post(&app, &giulia, "/auth/profile", &[("csrf", &csrf_g), ("acting_for", "verdi-anna"), ("next", "/")]).await;
    assert_eq!(s, 303);
    let (s, _, shown) = page(&app, &giulia, &format!("/appuntamenti/{appt_id}")).await;
    assert_eq!(s, 200, "{shown}");
    assert!(shown.contains("Prima visita oculistica") && shown.contains("Preparazione"), "{shown}");
    let (s, _, _) = page(&app, &giulia, "/prenota").await;
    assert_eq!(s, 200, "her delegation covers appointments");
    let (_, _, booking_page) = page(&app, &giulia, "/prenota").await;
    assert!(booking_page.contains("Ecografia dell'addome completo"), "the delegate reads the prescriptions to book");

    // as Luca's mother: his prescription, and her reads of it in his access log
    let (_, _, me) = page(&app, &giulia, "/me").await;
    post(&app, &giulia, "/auth/profile", &[("csrf", &csrf_of(&me)), ("acting_for", "bianchi-luca"), ("next", "/")]).await;
    let (s, _, luca) = page(&app, &giulia, "/prenota").await;
    assert_eq!(s, 200);
    assert!(luca.contains("Prima visita oculistica") && luca.contains("Prenotazioni per"), "{luca}");
    let luca_log = fhir
        .search(
            &Actor::system(),
            Some("AuditEvent"),
            &[("patient".into(), "Patient/bianchi-luca".into()), ("_count".into(), "200".into())],
            "",
        )
        .await
        .unwrap();
    let giulia_cf = fascicolo_load::demo::cf(GIULIA);
    assert!(
        luca_log.entries.iter().any(|e| e.1.contains("ServiceRequest") && (e.1.contains("rossi-giulia") || e.1.contains(&giulia_cf))),
        "the parent's reading of his prescriptions is in his log"
    );

    // a delegation that does not cover appointments books nothing, and nothing is stored
    let mut rp = read(&fhir, "RelatedPerson", "rossi-giulia-for-anna").await;
    rp["extension"] = json!([{"url": fascicolo_app::access::DELEGATION_SCOPE_EXT, "valueCode": "DocumentReference"}]);
    fhir.update(&Actor::system(), "RelatedPerson", "rossi-giulia-for-anna", rp.to_string().as_bytes(), None).await.unwrap();
    let mut delegate =
        Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(&giulia_cf).unwrap(), patient: Some("rossi-giulia".into()) });
    delegate.acting_for = Some("verdi-anna".into());
    let portal = fascicolo_app::portal::Portal::new(fhir.clone());
    let uso = prescription_of(&fhir, "verdi-anna", "88.76.1").await;
    let uso_id = uso["id"].as_str().unwrap();
    assert!(matches!(portal.prescriptions(&delegate, None).await, Err(fascicolo_app::AppError::Forbidden(_))));
    assert!(matches!(portal.find(&delegate, None, uso_id, None).await, Err(fascicolo_app::AppError::Forbidden(_))));
    let key = portal
        .find(
            &Actor::new(Who::Professional {
                practitioner: "moretti-luigi".into(),
                organization: Some("asst-fbf-sacco".into()),
                role: ProRole::CupOperator,
            }),
            Some("verdi-anna"),
            uso_id,
            None,
        )
        .await
        .unwrap()
        .options[0]
        .key
        .clone();
    assert!(matches!(portal.book(&delegate, None, uso_id, &key).await, Err(fascicolo_app::AppError::Forbidden(_))));
    assert!(fhir.read(&Actor::system(), "Slot", &key).await.is_err(), "nothing stored");
    assert!(ext(&read(&fhir, "ServiceRequest", uso_id).await, "urn:fascicolo:booked-as").is_null());
    let log = fhir
        .search(
            &Actor::system(),
            Some("AuditEvent"),
            &[("patient".into(), "Patient/verdi-anna".into()), ("_count".into(), "200".into())],
            "",
        )
        .await
        .unwrap();
    assert!(log.entries.iter().any(|e| e.1.contains("moretti-luigi")), "the desk's access in Anna's log");

    // the desk cancels it; a GP has no desk
    let (_, _, person) = page(&app, &desk, "/professionista/cup/verdi-anna").await;
    assert!(person.contains("id=\"desk-bookings\""));
    let (s, to, _) =
        post(&app, &desk, &format!("/professionista/cup/verdi-anna/appuntamenti/{appt_id}/disdetta"), &[("csrf", &csrf)]).await;
    assert_eq!(s, 303, "{to}");
    assert_eq!(read(&fhir, "Appointment", &appt_id).await["status"], "cancelled");
    let gp = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("FRRPLA70A01F205"), "gp").await);
    let (s, _, _) = page(&app, &gp, "/professionista/cup/verdi-anna").await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn over_http_many_apps_race_for_few_slots_and_an_expired_hold_is_free() {
    let (app, fhir, portal, racers) = race_setup("87.44.1", 60).await;
    let desk = Actor::new(Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::CupOperator,
    });
    // every racer's app found the same 6 options (the first of each agenda) and books them in turn
    let found = portal.find(&desk, Some(&racers[0].0), &racers[0].1, None).await.unwrap();
    let keys: Vec<String> = found.options.iter().take(6).map(|o| o.key.clone()).collect();
    assert_eq!(keys.len(), 6);
    let token = token_for(&app.store, &desk).await;
    let mut tasks = Vec::new();
    for (pid, _) in racers.iter().skip(1) {
        let (root, keys, token, pid) = (app.root.clone(), keys.clone(), token.clone(), pid.clone());
        let nre = fhir.read(&Actor::system(), "ServiceRequest", &format!("{pid}-prescrizione")).await.unwrap().resource["identifier"][0]
            ["value"]
            .as_str()
            .unwrap()
            .to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut statuses = Vec::new();
            for k in &keys {
                let params = json!({"resourceType": "Parameters", "parameter": [
                    {"name": "appointment-reference", "valueReference": {"reference": format!("Appointment/{k}.{nre}")}},
                    {"name": "patient-reference", "valueReference": {"reference": format!("Patient/{pid}")}}]});
                let r = client.post(format!("{root}/fhir/r4/Appointment/$book")).bearer_auth(&token).json(&params).send().await.unwrap();
                statuses.push(r.status().as_u16());
                if r.status() == 200 {
                    break;
                }
            }
            statuses
        }));
    }
    let mut ok = 0;
    let mut attempts = 0;
    for t in tasks {
        let s = t.await.unwrap();
        attempts += s.len();
        assert!(s.iter().all(|c| *c == 200 || *c == 409), "only booked or taken: {s:?}");
        ok += s.iter().filter(|c| **c == 200).count();
    }
    assert_eq!(ok, 6, "exactly one booking per slot ({attempts} attempts)");
    one_booking_per_slot(&fhir, &keys).await;

    // a hold keeps a slot from others; once expired, the slot is free for the next one and the
    // first holder's booking is refused
    // (b: a racer who got nothing, so its prescription is still to book)
    let mut b = None;
    for r in racers.iter().rev() {
        if ext(&read(&fhir, "ServiceRequest", &r.1).await, "urn:fascicolo:booked-as").is_null() {
            b = Some(r);
            break;
        }
    }
    let (a, b) = (&racers[0], b.unwrap());
    let later = fascicolo_domain::rome::today() + time::Duration::days(40);
    let key = portal.find(&desk, Some(&a.0), &a.1, Some(later)).await.unwrap().options[0].key.clone();
    portal.hold(&desk, Some(&a.0), &a.1, &key).await.unwrap();
    assert!(matches!(portal.book(&desk, Some(&b.0), &b.1, &key).await, Err(fascicolo_app::AppError::Conflict(_))), "held for another");
    // the hold runs out (its instant moved to the past, as time would)
    let mut slot = read(&fhir, "Slot", &key).await;
    for e in slot["extension"].as_array_mut().unwrap() {
        if e["url"] == "urn:fascicolo:hold-until" {
            e["valueInstant"] = json!("2020-01-01T00:00:00.000Z");
        }
    }
    fhir.update(&Actor::system(), "Slot", &key, slot.to_string().as_bytes(), None).await.unwrap();
    // both at once: exactly one gets it
    let (p1, p2) = (portal.clone(), portal.clone());
    let (d1, d2) = (desk.clone(), desk.clone());
    let (a2, b2, k1, k2) = (a.clone(), b.clone(), key.clone(), key.clone());
    let r1 = tokio::spawn(async move { p1.book(&d1, Some(&a2.0), &a2.1, &k1).await.is_ok() });
    let r2 = tokio::spawn(async move { p2.book(&d2, Some(&b2.0), &b2.1, &k2).await.is_ok() });
    let (r1, r2) = (r1.await.unwrap(), r2.await.unwrap());
    assert!(r1 ^ r2, "exactly one books the slot whose hold expired: {r1} {r2}");
    assert_eq!(read(&fhir, "Slot", &key).await["status"], "busy");
}

/// The outbox messages of this kind due by the end of time, leased for no time at all (so a
/// later call sees them again; a claim moves `available_at` to the lease's end).
async fn pending(app: &TestApp, kind: &str) -> Vec<fascicolo_store::OutboxMessage> {
    let claimed = app.store.outbox_claim(i64::MAX / 2, 0, 10_000).await.unwrap();
    claimed.into_iter().map(|c| c.message).filter(|m| m.kind == kind).collect()
}

/// When a message was queued to leave: its UUID v7's instant.
fn queued_for(m: &fascicolo_store::OutboxMessage) -> i64 {
    let (secs, nanos) = m.id.get_timestamp().unwrap().to_unix();
    secs as i64 * 1000 + i64::from(nanos / 1_000_000)
}

#[tokio::test]
async fn a_booking_is_reminded_the_day_before_unless_moved_cancelled_or_switched_off_and_comes_as_ics() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    seed_offer(&fhir, &["89.7A.3"]).await;
    let portal = fascicolo_app::portal::Portal::new(fhir.clone());
    let sr = prescription_of(&fhir, "rossi-giulia", "89.7A.3").await;
    let sr_id = sr["id"].as_str().unwrap().to_string();
    let moretti = Actor::new(Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::CupOperator,
    });
    assert!(pending(&app, "booking.reminder").await.is_empty());
    // the desk books her a week ahead
    let week = fascicolo_domain::rome::today() + time::Duration::days(7);
    let options = portal.find(&moretti, Some("rossi-giulia"), &sr_id, Some(week)).await.unwrap();
    let b = portal.book(&moretti, Some("rossi-giulia"), &sr_id, &options.options[0].key).await.unwrap();
    let due = pending(&app, "booking.reminder").await;
    assert_eq!(due.len(), 1, "one reminder queued with the booking");
    assert_eq!(queued_for(&due[0]), b.start_ms - 24 * 3_600_000, "the day before");
    assert!(!due[0].payload.contains("rossi") && !due[0].payload.contains("89.7A.3"), "no personal or clinical data: {}", due[0].payload);

    // what it says, to each address on file: when and where, not what
    let sent = fhir.deliveries(&due[0], "https://fse.example").await.unwrap();
    let to: Vec<&str> = sent.iter().map(|d| d.to.as_str()).collect();
    assert_eq!(to, ["giulia.rossi@example.invalid", "+39 333 000 0001"]);
    let start = time::OffsetDateTime::from_unix_timestamp(b.start_ms / 1000).unwrap();
    let local = start.to_offset(fascicolo_domain::rome::offset(start));
    let (day, hour) =
        (format!("{:02}/{:02}/{}", local.day(), local.month() as u8, local.year()), format!("{:02}:{:02}", local.hour(), local.minute()));
    let text = &sent[0].text;
    assert!(text.contains(&format!("il {day} alle {hour} presso {}", b.site)), "{text}");
    assert!(text.contains(&format!("https://fse.example/appuntamenti/{}", b.id)), "{text}");
    assert!(!text.to_lowercase().contains("cardiolog"), "the service is not in the message: {text}");

    // she switches SMS reminders off: the e-mail only
    let cf = fascicolo_domain::CodiceFiscale::parse(&fascicolo_load::demo::cf(GIULIA)).unwrap();
    let giulia = Actor::new(Who::Citizen { cf, patient: Some("rossi-giulia".into()) });
    fhir.set_notifications_off(&giulia, "rossi-giulia", &["reminder.sms".into()]).await.unwrap();
    let sent = fhir.deliveries(&due[0], "https://fse.example").await.unwrap();
    assert_eq!(sent.iter().map(|d| d.to.as_str()).collect::<Vec<_>>(), ["giulia.rossi@example.invalid"]);

    // the calendar file: hers, in UTC, with the place; nobody else's
    let cookie = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(GIULIA), "citizen").await);
    let (s, _, ics) = page(&app, &cookie, &format!("/appuntamenti/{}/calendario.ics", b.id)).await;
    assert_eq!(s, 200, "{ics}");
    let utc = |ms: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap();
        format!("{}{:02}{:02}T{:02}{:02}{:02}Z", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
    };
    assert!(ics.contains("BEGIN:VEVENT") && ics.contains(&format!("UID:{}@fascicolo", b.id)), "{ics}");
    assert!(ics.contains(&format!("DTSTART:{}", utc(b.start_ms))) && ics.contains(&format!("DTEND:{}", utc(b.end_ms))), "{ics}");
    assert!(ics.contains("LOCATION:") && ics.contains("STATUS:CONFIRMED"), "{ics}");
    let marco = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(MARCO), "citizen").await);
    let (s, _, _) = page(&app, &marco, &format!("/appuntamenti/{}/calendario.ics", b.id)).await;
    assert_eq!(s, 404);
    let (_, _, shown) = page(&app, &cookie, &format!("/appuntamenti/{}", b.id)).await;
    assert!(shown.contains(&format!("/appuntamenti/{}/calendario.ics", b.id)), "the page links the calendar file");

    // moved: the old reminder says nothing, the new one is queued for the new day
    let later = portal.find(&moretti, Some("rossi-giulia"), &sr_id, Some(week + time::Duration::days(7))).await.unwrap();
    let moved = portal.move_to(&moretti, Some("rossi-giulia"), &b.id, &later.options[0].key).await.unwrap();
    assert!(fhir.deliveries(&due[0], "https://fse.example").await.unwrap().is_empty(), "the moved appointment's reminder is void");
    let due2: Vec<_> = pending(&app, "booking.reminder").await.into_iter().filter(|m| m.id != due[0].id).collect();
    assert_eq!(due2.len(), 1);
    assert_eq!(queued_for(&due2[0]), moved.start_ms - 24 * 3_600_000);
    assert_eq!(fhir.deliveries(&due2[0], "https://fse.example").await.unwrap().len(), 1);
    // cancelled: nothing
    portal.cancel(&giulia, None, &moved.id).await.unwrap();
    assert!(fhir.deliveries(&due2[0], "https://fse.example").await.unwrap().is_empty(), "a cancelled appointment is not reminded");
}

#[tokio::test]
async fn the_public_waiting_times_come_from_the_offer_and_the_bookings_without_login() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    let agendas = seed_offer(&fhir, &["89.7A.3"]).await;
    seed_organizations(&fhir).await;
    let portal = fascicolo_app::portal::Portal::new(fhir.clone());
    let sr = prescription_of(&fhir, "rossi-giulia", "89.7A.3").await;
    let sr_id = sr["id"].as_str().unwrap().to_string();
    let moretti = Actor::new(Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::CupOperator,
    });
    let options = portal.find(&moretti, Some("rossi-giulia"), &sr_id, None).await.unwrap();
    let earliest = options.options.iter().map(|o| o.day).min().unwrap().to_string();
    // her class D visit booked on the first date of her area: within the deadline
    let first = options.options.iter().find(|o| o.in_area && o.in_time).unwrap();
    let schedule = first.agenda.id.clone();
    let b = portal.book(&moretti, Some("rossi-giulia"), &sr_id, &first.key).await.unwrap();

    // no login: the JSON
    let (s, _, body) = page(&app, "", "/tempi-di-attesa.json").await;
    assert_eq!(s, 200, "{body}");
    let w: Value = serde_json::from_str(&body).unwrap();
    let service = w["services"].as_array().unwrap().iter().find(|s| s["code"] == "89.7A.3").unwrap();
    let groups = service["groups"].as_array().unwrap();
    assert_eq!(groups.iter().map(|g| g["agendas"].as_u64().unwrap()).sum::<u64>(), agendas as u64, "every agenda in one group");
    assert!(groups.iter().any(|g| g["kind"] == "asst" && g["name"].as_str().unwrap().starts_with("ASST")), "{groups:?}");
    assert!(groups.iter().any(|g| g["kind"] == "accredited"), "{groups:?}");
    assert_eq!(groups[0]["kind"], "asst", "the ASSTs first");
    let firsts: Vec<&str> = groups.iter().filter_map(|g| g["first_day"].as_str()).collect();
    // $find shows the first twenty (her area first): none earlier than the region's earliest
    assert!(firsts.iter().min().copied().unwrap() <= earliest.as_str(), "{firsts:?} against {earliest}");
    let tomorrow = (fascicolo_domain::rome::today() + time::Duration::days(1)).to_string();
    assert!(firsts.iter().all(|d| *d >= tomorrow.as_str()), "{firsts:?}");
    for g in groups {
        let m = g["median_days"].as_f64().unwrap();
        assert!((1.0..=90.0).contains(&m), "{g}");
    }
    // the booking counts in its agenda's group, in class D, in time; nowhere else
    let counted: Vec<(&Value, &Value)> =
        groups.iter().flat_map(|g| g["bookings"].as_array().unwrap().iter().filter(|c| c["bookings"] != 0).map(move |c| (g, c))).collect();
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert_eq!(
        (counted[0].1["class"].as_str(), counted[0].1["bookings"].as_u64(), counted[0].1["in_time"].as_u64()),
        (Some("D"), Some(1), Some(1))
    );
    let group = counted[0].0["id"].as_str().unwrap().to_string();

    // the page, in Italian and in English, shows the same row
    let (s, _, html) = page(&app, "", "/tempi-di-attesa?prestazione=89.7A.3").await;
    assert_eq!(s, 200);
    let row = html.split(&format!("data-group=\"{group}\"")).nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(row.contains("D: 100% di 1"), "{row}");
    assert!(html.contains("Prima visita cardiologica") && html.contains("Attesa mediana"));
    let (_, _, en) = page(&app, "", "/tempi-di-attesa?prestazione=89.7A.3&lang=en").await;
    assert!(en.contains("Median wait") && en.contains("D: 100% of 1"), "{en}");
    assert!(!en.contains(&b.id) && !html.contains("rossi") && !html.contains("Giulia"), "nothing about anyone");

    // cancelled, it no longer counts (a server that computes again: no cache)
    portal.cancel(&moretti, Some("rossi-giulia"), &b.id).await.unwrap();
    let fresh = fascicolo_app::portal::Portal::new(FhirService::new(Arc::clone(&app.store)));
    let w = fresh.waiting_times().await.unwrap();
    let s = w.services.iter().find(|s| s.code == "89.7A.3").unwrap();
    assert!(s.groups.iter().all(|g| g.bookings.iter().all(|c| c.bookings == 0)));
    assert!(s.groups.iter().any(|g| g.id == group), "{schedule} stays in its group");
}

#[tokio::test]
async fn closing_an_agenda_day_cancels_its_appointments_with_notice_and_only_its_office_may() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    let codes: Vec<&str> = fascicolo_domain::booking::SERVICES.iter().map(|s| s.code).collect();
    seed_offer(&fhir, &codes).await;
    seed_organizations(&fhir).await;
    let portal = fascicolo_app::portal::Portal::new(fhir.clone());
    let cup = |org: &str| {
        Actor::new(Who::Professional { practitioner: "moretti-luigi".into(), organization: Some(org.into()), role: ProRole::CupOperator })
    };
    // the demo desk's organisation is the front office of the region's ASST Fatebenefratelli
    // Sacco, as the demo pipeline records it
    let mut front = read(&fhir, "Organization", "asst-fbf-sacco").await;
    front["partOf"] = json!({"reference": "Organization/asst-030703"});
    fhir.update(&Actor::system(), "Organization", "asst-fbf-sacco", front.to_string().as_bytes(), None).await.unwrap();
    let moretti = cup("asst-fbf-sacco");
    let managed = portal.managed_agendas(&moretti).await.unwrap();
    assert!(!managed.is_empty());
    for a in &managed {
        let site = read(&fhir, "Organization", &a.provider).await;
        assert_eq!(site["partOf"]["reference"], "Organization/asst-030703", "{} is not the office's", a.id);
    }
    let a = managed[0].clone();
    // Giulia has a prescription for that agenda's service; the desk books her into it
    let sr_id = "rossi-giulia-prescrizione-chiusura";
    let sr = json!({"resourceType": "ServiceRequest", "id": sr_id, "status": "active", "intent": "order",
        "subject": {"reference": "Patient/rossi-giulia"},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.9.4.3.9", "value": "030777000009990"}],
        "code": {"coding": [{"system": "urn:fascicolo:catalogo-nazionale-prestazioni", "code": a.code}]},
        "extension": [{"url": "urn:fascicolo:priority-class", "valueCode": "P"}]});
    fhir.update(&Actor::system(), "ServiceRequest", sr_id, sr.to_string().as_bytes(), None).await.unwrap();
    let mut day = fascicolo_domain::rome::today() + time::Duration::days(3);
    if let Some(b) = a.booked_until {
        day = day.max(b + time::Duration::days(1));
    }
    while !a.template.opens_on(day, &a.istat, &a.closures) {
        day = day.next_day().unwrap();
    }
    let key = fascicolo_domain::booking::slot_key(&a.id, day, a.template.starts().next().unwrap());
    let b = portal.book(&moretti, Some("rossi-giulia"), sr_id, &key).await.unwrap();
    let schedule_before = read(&fhir, "Schedule", &a.id).await;

    // refused, nothing changed: another ASST's office, today, a day past the horizon
    let other = cup("asst-030701");
    assert!(matches!(portal.close_day(&other, &a.id, day).await, Err(fascicolo_app::AppError::Forbidden(_))));
    let today = fascicolo_domain::rome::today();
    assert!(matches!(portal.close_day(&moretti, &a.id, today).await, Err(fascicolo_app::AppError::BadRequest(_))));
    assert!(matches!(
        portal.close_day(&moretti, &a.id, today + time::Duration::days(200)).await,
        Err(fascicolo_app::AppError::BadRequest(_))
    ));
    assert_eq!(read(&fhir, "Schedule", &a.id).await, schedule_before);
    assert_eq!(read(&fhir, "Appointment", &b.id).await["status"], "booked");
    let giulia_log =
        fascicolo_store::AccessQuery { patient: Some(fascicolo_domain::PatientKey::for_patient_id("rossi-giulia")), ..Default::default() };
    let log_before = app.store.access_count(&giulia_log).await.unwrap();

    // the desk's pages: the agenda listed, the day checked (one appointment), then closed
    let desk = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("MRTLGU82C08F205"), "cup-operator").await);
    let (s, _, list) = page(&app, &desk, "/professionista/agende").await;
    assert_eq!(s, 200, "{list}");
    assert!(list.contains(&format!("/professionista/agende/{}", a.id)));
    let (s, _, check) = page(&app, &desk, &format!("/professionista/agende/{}?giorno={day}", a.id)).await;
    assert_eq!(s, 200, "{check}");
    assert!(check.contains("1 appuntamenti prenotati"), "{check}");
    assert!(!check.contains("Rossi") && !check.contains("Giulia"), "the check shows times, not people");
    let (s, to, _) = post(
        &app,
        &desk,
        &format!("/professionista/agende/{}/chiusura", a.id),
        &[("csrf", &csrf_of(&check)), ("giorno", &day.to_string())],
    )
    .await;
    assert_eq!((s, to.as_str()), (303, format!("/professionista/agende/{}?esito=chiuso&annullati=1", a.id).as_str()));

    // cancelled by the provider, not late; slot and prescription free; the day closed
    let cancelled = read(&fhir, "Appointment", &b.id).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancelationReason"]["coding"][0]["code"], "prov");
    assert!(ext(&cancelled, "urn:fascicolo:late-cancellation").is_null(), "nothing charged: {cancelled}");
    assert_eq!(read(&fhir, "Slot", &key).await["status"], "free");
    assert!(ext(&read(&fhir, "ServiceRequest", sr_id).await, "urn:fascicolo:booked-as").is_null());
    let sched = read(&fhir, "Schedule", &a.id).await;
    assert!(sched["extension"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["url"] == "urn:fascicolo:agenda-closure" && e["valueDate"] == day.to_string()));
    // that day is no longer offered by that agenda (a server that reads the offer again); one
    // that read it before the closure still refuses to book it
    let fresh = fascicolo_app::portal::Portal::new(FhirService::new(Arc::clone(&app.store)));
    let found = fresh.find(&moretti, Some("rossi-giulia"), sr_id, Some(day)).await.unwrap();
    assert!(!found.options.iter().any(|o| o.agenda.id == a.id && o.day == day));
    let second = fascicolo_domain::booking::slot_key(&a.id, day, a.template.starts().nth(1).unwrap());
    match portal.book(&moretti, Some("rossi-giulia"), sr_id, &second).await {
        Err(fascicolo_app::AppError::Conflict(m)) => assert!(m.contains("closed"), "{m}"),
        other => panic!("a closed day booked: {other:?}"),
    }
    // in her access log, and a notice for her (when, where, how to book again); no reminder
    let log_after = app.store.access_count(&giulia_log).await.unwrap();
    assert!(log_after > log_before, "the closure's cancellation is in her access log");
    let notices = pending(&app, fascicolo_app::booking::PROVIDER_CANCELLED_KIND).await;
    assert_eq!(notices.len(), 1);
    let sent = fhir.deliveries(&notices[0], "https://fse.example").await.unwrap();
    assert_eq!(sent.len(), 2, "to every address on file: {sent:?}");
    assert!(sent[0].text.contains("https://fse.example/prenota") && sent[0].text.contains(&a.site), "{}", sent[0].text);
    for r in pending(&app, "booking.reminder").await {
        assert!(fhir.deliveries(&r, "https://fse.example").await.unwrap().is_empty(), "no reminder of a cancelled appointment");
    }
    // closing it again is refused
    assert!(matches!(portal.close_day(&moretti, &a.id, day).await, Err(fascicolo_app::AppError::Conflict(_))));
}

#[tokio::test]
async fn the_desk_records_arrivals_and_no_shows_and_a_citizen_asks_for_the_protection_route() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    seed_offer(&fhir, &["89.7A.3", "95.02"]).await;
    let portal = fascicolo_app::portal::Portal::new(fhir.clone());
    let moretti = Actor::new(Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::CupOperator,
    });
    let sr = prescription_of(&fhir, "rossi-giulia", "89.7A.3").await;
    let sr_id = sr["id"].as_str().unwrap().to_string();
    let options = portal.find(&moretti, Some("rossi-giulia"), &sr_id, None).await.unwrap();
    let b = portal.book(&moretti, Some("rossi-giulia"), &sr_id, &options.options[0].key).await.unwrap();

    // not before it begins; not by the citizen
    assert!(matches!(portal.record_attendance(&moretti, "rossi-giulia", &b.id, false).await, Err(fascicolo_app::AppError::Conflict(_))));
    let cf = fascicolo_domain::CodiceFiscale::parse(&fascicolo_load::demo::cf(GIULIA)).unwrap();
    let giulia = Actor::new(Who::Citizen { cf, patient: Some("rossi-giulia".into()) });
    assert!(matches!(portal.record_attendance(&giulia, "rossi-giulia", &b.id, true).await, Err(fascicolo_app::AppError::Forbidden(_))));
    assert_eq!(read(&fhir, "Appointment", &b.id).await["status"], "booked");
    // the day comes (the appointment moved to yesterday, as time would) and she does not
    let mut past = read(&fhir, "Appointment", &b.id).await;
    let yesterday = fascicolo_fhir::datetime::now_ms() - 86_400_000;
    past["start"] = json!(fascicolo_fhir::datetime::format_instant(yesterday));
    past["end"] = json!(fascicolo_fhir::datetime::format_instant(yesterday + 1_200_000));
    fhir.update(&Actor::system(), "Appointment", &b.id, past.to_string().as_bytes(), None).await.unwrap();
    let desk = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("MRTLGU82C08F205"), "cup-operator").await);
    let (s, _, person) = page(&app, &desk, "/professionista/cup/rossi-giulia").await;
    assert_eq!(s, 200);
    assert!(person.contains(&format!("/professionista/cup/rossi-giulia/appuntamenti/{}/esito", b.id)), "{person}");
    let csrf = csrf_of(&person);
    let (s, _, _) =
        post(&app, &desk, &format!("/professionista/cup/rossi-giulia/appuntamenti/{}/esito", b.id), &[("csrf", &csrf), ("presente", "x")])
            .await;
    assert_eq!(s, 400);
    assert_eq!(read(&fhir, "Appointment", &b.id).await["status"], "booked", "a bad form changes nothing");
    let (s, to, _) =
        post(&app, &desk, &format!("/professionista/cup/rossi-giulia/appuntamenti/{}/esito", b.id), &[("csrf", &csrf), ("presente", "0")])
            .await;
    assert_eq!((s, to.as_str()), (303, "/professionista/cup/rossi-giulia?esito=esito-registrato"));
    assert_eq!(read(&fhir, "Appointment", &b.id).await["status"], "noshow");
    assert!(matches!(portal.record_attendance(&moretti, "rossi-giulia", &b.id, true).await, Err(fascicolo_app::AppError::Conflict(_))));
    let cookie = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(GIULIA), "citizen").await);
    let (_, _, shown) = page(&app, &cookie, &format!("/appuntamenti/{}", b.id)).await;
    assert!(shown.contains("Mancata presentazione"), "she sees it recorded");

    // the protection route: refused while a slot in her area meets the deadline
    let tasks = |fhir: FhirService| async move {
        fhir.search(&Actor::system(), Some("Task"), &[("patient".into(), "Patient/rossi-giulia".into())], "").await.unwrap().entries.len()
    };
    let urgent = json!({"resourceType": "ServiceRequest", "id": "rossi-giulia-urgente", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/rossi-giulia"},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.9.4.3.9", "value": "030888000009990"}],
        "code": {"coding": [{"system": "urn:fascicolo:catalogo-nazionale-prestazioni", "code": "95.02"}]},
        "authoredOn": (fascicolo_domain::rome::today() - time::Duration::days(10)).to_string(),
        "extension": [{"url": "urn:fascicolo:priority-class", "valueCode": "U"}]});
    fhir.update(&Actor::system(), "ServiceRequest", "rossi-giulia-urgente", urgent.to_string().as_bytes(), None).await.unwrap();
    let relaxed = json!({"resourceType": "ServiceRequest", "id": "rossi-giulia-programmata", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/rossi-giulia"},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.9.4.3.9", "value": "030889000009990"}],
        "code": {"coding": [{"system": "urn:fascicolo:catalogo-nazionale-prestazioni", "code": "95.02"}]},
        "authoredOn": fascicolo_domain::rome::today().to_string(),
        "extension": [{"url": "urn:fascicolo:priority-class", "valueCode": "P"}]});
    fhir.update(&Actor::system(), "ServiceRequest", "rossi-giulia-programmata", relaxed.to_string().as_bytes(), None).await.unwrap();
    let (_, _, list) = page(&app, &cookie, "/prenota").await;
    let csrf = csrf_of(&list);
    let (s, _, _) = post(&app, &cookie, "/prenota/rossi-giulia-programmata/tutela", &[("csrf", &csrf)]).await;
    assert_eq!(s, 409, "a class P visit has slots in time");
    assert_eq!(tasks(fhir.clone()).await, 0);
    // a class U visit prescribed ten days ago: nothing in time anywhere, the route offered
    let (s, _, opts) = page(&app, &cookie, "/prenota/rossi-giulia-urgente").await;
    assert_eq!(s, 200);
    assert!(opts.contains("id=\"protection\"") && opts.contains("action=\"/prenota/rossi-giulia-urgente/tutela\""), "{opts}");
    // Marco cannot ask it for her
    let marco = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(MARCO), "citizen").await);
    let (_, _, his) = page(&app, &marco, "/prenota").await;
    let (s, _, _) = post(&app, &marco, "/prenota/rossi-giulia-urgente/tutela", &[("csrf", &csrf_of(&his))]).await;
    assert_eq!(s, 404);
    assert_eq!(tasks(fhir.clone()).await, 0);
    let (s, to, _) = post(&app, &cookie, "/prenota/rossi-giulia-urgente/tutela", &[("csrf", &csrf)]).await;
    assert_eq!((s, to.as_str()), (303, "/prenota/rossi-giulia-urgente?esito=tutela"));
    let task = read(&fhir, "Task", "rossi-giulia-urgente-tutela").await;
    assert_eq!(task["status"], "requested");
    assert_eq!(task["code"]["coding"][0]["code"], "protection-route");
    assert_eq!(task["focus"]["reference"], "ServiceRequest/rossi-giulia-urgente");
    assert_eq!(task["for"]["reference"], "Patient/rossi-giulia");
    assert_eq!(task["owner"]["identifier"]["value"], "030321", "for her ATS");
    assert!(!ext(&read(&fhir, "ServiceRequest", "rossi-giulia-urgente").await, "urn:fascicolo:protection-route-requested").is_null());
    let (_, _, after) = page(&app, &cookie, "/prenota/rossi-giulia-urgente?esito=tutela").await;
    assert!(after.contains("id=\"protection-asked\"") && !after.contains("action=\"/prenota/rossi-giulia-urgente/tutela\""));
    let (s, _, _) = post(&app, &cookie, "/prenota/rossi-giulia-urgente/tutela", &[("csrf", &csrf)]).await;
    assert_eq!(s, 409, "asked once");
    assert_eq!(tasks(fhir.clone()).await, 1);
}

#[tokio::test]
async fn a_freed_slot_is_offered_to_those_booked_later_who_opted_in_and_the_first_to_accept_gets_it() {
    let (app, fhir, portal, racers) = race_setup("95.02", 3).await;
    let moretti = Actor::new(Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::CupOperator,
    });
    // an agenda of their area (Milan); r0 books early, the others (and Anna) weeks later
    let first = portal.find(&moretti, Some(&racers[0].0), &racers[0].1, None).await.unwrap();
    let o = first.options.iter().find(|o| o.in_area).unwrap().clone();
    let early = portal.book(&moretti, Some(&racers[0].0), &racers[0].1, &o.key).await.unwrap();
    let later_day = o.day + time::Duration::days(21);
    let mut later = Vec::new();
    for (pid, sr) in racers[1..]
        .iter()
        .cloned()
        .chain([("verdi-anna".to_string(), prescription_of(&fhir, "verdi-anna", "95.02").await["id"].as_str().unwrap().to_string())])
    {
        let opts = portal.find(&moretti, Some(&pid), &sr, Some(later_day)).await.unwrap();
        let k = opts.options.iter().find(|x| x.in_area).unwrap().key.clone();
        later.push((pid.clone(), portal.book(&moretti, Some(&pid), &sr, &k).await.unwrap()));
    }
    // Anna opts in on her page; r1 at the desk; r2 does not
    let anna = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("VRDNNA40B60F205"), "citizen").await);
    let anna_appt = later[2].1.id.clone();
    let (_, _, shown) = page(&app, &anna, &format!("/appuntamenti/{anna_appt}")).await;
    assert!(shown.contains("id=\"earlier-opt-in\""), "{shown}");
    let csrf = csrf_of(&shown);
    let (s, _, _) = post(&app, &anna, &format!("/appuntamenti/{anna_appt}/anticipo"), &[("csrf", &csrf), ("attiva", "1")]).await;
    assert_eq!(s, 303);
    assert_eq!(ext(&read(&fhir, "Appointment", &anna_appt).await, "urn:fascicolo:earlier-offers")["valueBoolean"], true);
    portal.set_earlier_offers(&moretti, Some(&later[0].0), &later[0].1.id, true).await.unwrap();
    let _ = pending(&app, "booking.slot-freed").await;

    // r0 cancels: the freed slot is offered to r1 and Anna, not to r2 (no opt-in)
    portal.cancel(&moretti, Some(&racers[0].0), &early.id).await.unwrap();
    let freed = pending(&app, "booking.slot-freed").await;
    assert_eq!(freed.len(), 1);
    assert!(fhir.deliveries(&freed[0], "https://fse.example").await.unwrap().is_empty());
    let offers = pending(&app, "booking.earlier-offer").await;
    assert_eq!(offers.len(), 2, "{offers:?}");
    let anna_offers = portal.earlier_offers(&moretti, Some("verdi-anna"), &anna_appt).await.unwrap();
    assert_eq!(anna_offers.len(), 1);
    assert_eq!(anna_offers[0].key, o.key);
    assert!(portal.earlier_offers(&moretti, Some(&later[1].0), &later[1].1.id).await.unwrap().is_empty(), "r2 did not opt in");
    // the same message handled again offers nothing more
    fhir.deliveries(&freed[0], "https://fse.example").await.unwrap();
    assert_eq!(pending(&app, "booking.earlier-offer").await.len(), 2);
    // Anna's message: when and where, the link to her appointment
    let to_anna = offers.iter().find(|m| m.patient_key == fascicolo_domain::PatientKey::for_patient_id("verdi-anna")).unwrap();
    let sent = fhir.deliveries(to_anna, "https://fse.example").await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "anna.verdi@example.invalid");
    assert!(
        sent[0].text.contains(&format!("https://fse.example/appuntamenti/{anna_appt}")) && sent[0].text.contains(&o.agenda.site),
        "{}",
        sent[0].text
    );
    let (_, _, shown) = page(&app, &anna, &format!("/appuntamenti/{anna_appt}")).await;
    assert!(shown.contains("id=\"earlier-offers\"") && shown.contains(&anna_offers[0].id), "{shown}");

    // r1 accepts first: moved into the freed slot
    let r1_offer = portal.earlier_offers(&moretti, Some(&later[0].0), &later[0].1.id).await.unwrap().remove(0);
    let moved = portal.accept_earlier(&moretti, Some(&later[0].0), &later[0].1.id, &r1_offer.id).await.unwrap();
    assert_eq!(moved.resource["slot"][0]["reference"], format!("Slot/{}", o.key));
    assert_eq!(read(&fhir, "Appointment", &later[0].1.id).await["status"], "cancelled");
    assert_eq!(read(&fhir, "Task", &r1_offer.id).await["status"], "completed");
    // Marco cannot take Anna's offer; Anna is too late: her appointment stays as it was
    let marco = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(MARCO), "citizen").await);
    let (_, _, his) = page(&app, &marco, "/prenota").await;
    let (s, _, _) =
        post(&app, &marco, &format!("/appuntamenti/{anna_appt}/anticipa"), &[("csrf", &csrf_of(&his)), ("offerta", &anna_offers[0].id)])
            .await;
    assert_eq!(s, 404);
    let (s, to, _) =
        post(&app, &anna, &format!("/appuntamenti/{anna_appt}/anticipa"), &[("csrf", &csrf), ("offerta", &anna_offers[0].id)]).await;
    assert_eq!((s, to.as_str()), (303, format!("/appuntamenti/{anna_appt}?esito=offerta-persa").as_str()));
    let hers = read(&fhir, "Appointment", &anna_appt).await;
    assert_eq!(hers["status"], "booked");
    assert_eq!(
        hers["slot"][0]["reference"],
        format!("Slot/{}", later[2].1.resource["slot"][0]["reference"].as_str().unwrap().trim_start_matches("Slot/"))
    );
    assert_eq!(read(&fhir, "Task", &anna_offers[0].id).await["status"], "cancelled");
    assert!(fhir.deliveries(to_anna, "https://fse.example").await.unwrap().is_empty(), "a closed offer is not announced");
    one_booking_per_slot(&fhir, std::slice::from_ref(&o.key)).await;
}

#[tokio::test]
async fn ten_thousand_attempts_over_http_book_each_of_a_hundred_slots_exactly_once() {
    let (app, fhir, portal, racers) = race_setup("89.52", 200).await;
    let desk = Actor::new(Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::CupOperator,
    });
    // 100 free slots: one agenda's first free days, every start of each
    let found = portal.find(&desk, Some(&racers[0].0), &racers[0].1, None).await.unwrap();
    let a = found.options[0].agenda.clone();
    let mut day = found.options[0].day;
    let mut keys = Vec::new();
    while keys.len() < 100 {
        if a.template.opens_on(day, &a.istat, &a.closures) {
            keys.extend(a.template.starts().map(|m| fascicolo_domain::booking::slot_key(&a.id, day, m)));
        }
        day = day.next_day().unwrap();
    }
    keys.truncate(100);
    let before = booked_count(&fhir).await;
    let token = token_for(&app.store, &desk).await;
    let client = reqwest::Client::new();
    // 200 people at once, each trying the slots from its own place in the list until one
    // books: the first hundred get one each, the other hundred find all taken
    let mut tasks = Vec::new();
    for (i, (pid, sr)) in racers.iter().enumerate() {
        let (root, keys, token, pid, client) = (app.root.clone(), keys.clone(), token.clone(), pid.clone(), client.clone());
        let nre = read(&fhir, "ServiceRequest", sr).await["identifier"][0]["value"].as_str().unwrap().to_string();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for j in 0..keys.len() {
                let k = &keys[(i + j) % keys.len()];
                let params = json!({"resourceType": "Parameters", "parameter": [
                    {"name": "appointment-reference", "valueReference": {"reference": format!("Appointment/{k}.{nre}")}},
                    {"name": "patient-reference", "valueReference": {"reference": format!("Patient/{pid}")}}]});
                let r = client.post(format!("{root}/fhir/r4/Appointment/$book")).bearer_auth(&token).json(&params).send().await.unwrap();
                statuses.push(r.status().as_u16());
                if r.status() == 200 {
                    break;
                }
            }
            statuses
        }));
    }
    let (mut ok, mut attempts) = (0, 0);
    for t in tasks {
        let s = t.await.unwrap();
        attempts += s.len();
        assert!(s.iter().all(|c| *c == 200 || *c == 409), "only booked or taken: {s:?}");
        ok += s.iter().filter(|c| **c == 200).count();
    }
    assert!(attempts >= 10_000, "{attempts} attempts");
    assert_eq!(ok, 100, "exactly one booking per slot ({attempts} attempts)");
    one_booking_per_slot(&fhir, &keys).await;
    assert_eq!(booked_count(&fhir).await, before + 100, "no other appointment stored");
}

async fn booked_count(fhir: &FhirService) -> usize {
    let page = fhir
        .search(&Actor::system(), Some("Appointment"), &[("status".into(), "booked".into()), ("_count".into(), "1000".into())], "")
        .await
        .unwrap();
    page.entries.iter().filter(|e| e.2 == "match").count()
}

#[tokio::test]
async fn a_held_slot_does_not_name_whose_prescription_holds_it() {
    let (_app, fhir, portal, racers) = race_setup("89.52", 2).await;
    let desk = Actor::new(Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::CupOperator,
    });
    let found = portal.find(&desk, Some(&racers[0].0), &racers[0].1, None).await.unwrap();
    let key = found.options[0].key.clone();
    portal.hold(&desk, Some(&racers[0].0), &racers[0].1, &key).await.unwrap();
    let slot = read(&fhir, "Slot", &key).await.to_string();
    assert!(!slot.contains(&racers[0].0) && !slot.contains(&racers[0].1), "the slot names no one: {slot}");
    // still, the holder books it and another is refused
    assert!(matches!(portal.book(&desk, Some(&racers[1].0), &racers[1].1, &key).await, Err(fascicolo_app::AppError::Conflict(_))));
    portal.book(&desk, Some(&racers[0].0), &racers[0].1, &key).await.unwrap();
}

#[tokio::test]
async fn a_providers_system_updates_its_own_agendas_only() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    let codes: Vec<&str> = fascicolo_domain::booking::SERVICES.iter().map(|s| s.code).collect();
    seed_offer(&fhir, &codes).await;
    seed_organizations(&fhir).await;
    let mut front = read(&fhir, "Organization", "asst-fbf-sacco").await;
    front["partOf"] = json!({"reference": "Organization/asst-030703"});
    fhir.update(&Actor::system(), "Organization", "asst-fbf-sacco", front.to_string().as_bytes(), None).await.unwrap();
    let portal = fascicolo_app::portal::Portal::new(fhir.clone());
    let moretti = Actor::new(Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::CupOperator,
    });
    let own: Vec<String> = portal.managed_agendas(&moretti).await.unwrap().into_iter().map(|a| a.id).collect();
    let page = fhir.search(&Actor::system(), Some("Schedule"), &[("_count".into(), "1000".into())], "").await.unwrap();
    let all: Vec<Value> = page.entries.iter().map(|e| serde_json::from_str(&e.1).unwrap()).collect();
    let mine = all.iter().find(|s| own.contains(&s["id"].as_str().unwrap().to_string())).unwrap().clone();
    let theirs = all.iter().find(|s| !own.contains(&s["id"].as_str().unwrap().to_string())).unwrap().clone();
    let hospital =
        Actor::new(Who::Client { client_id: "demo-hospital".into(), organization: Some("asst-fbf-sacco".into()), platform: false });
    let token = token_for(&app.store, &hospital).await;
    let put = |v: Value, token: String| {
        let url = format!("{}/fhir/r4/Schedule/{}", app.root, v["id"].as_str().unwrap());
        async move {
            let r = reqwest::Client::new()
                .put(url)
                .bearer_auth(token)
                .header("content-type", "application/fhir+json")
                .body(v.to_string())
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    let retemplate = |mut v: Value| {
        for e in v["extension"].as_array_mut().unwrap() {
            if e["url"] == "urn:fascicolo:agenda-template" {
                e["valueString"] = json!("days=1-5;hours=09:00-12:00;minutes=30");
            }
        }
        v
    };
    // its own agenda: the new weekly hours are stored
    assert_eq!(put(retemplate(mine.clone()), token.clone()).await, 200);
    assert_eq!(
        ext(&read(&fhir, "Schedule", mine["id"].as_str().unwrap()).await, "urn:fascicolo:agenda-template")["valueString"],
        "days=1-5;hours=09:00-12:00;minutes=30"
    );
    // another ASST's agenda: refused, unchanged
    assert_eq!(put(retemplate(theirs.clone()), token.clone()).await, 403);
    assert_eq!(read(&fhir, "Schedule", theirs["id"].as_str().unwrap()).await["extension"], theirs["extension"]);
    // moving its own agenda to another's site, or creating one there: refused
    let mut moved = mine.clone();
    moved["actor"] = theirs["actor"].clone();
    assert_eq!(put(moved, token.clone()).await, 403);
    let mut new = theirs.clone();
    new["id"] = json!("ag-nuova-altrui");
    assert_eq!(put(new, token.clone()).await, 403);
    assert!(fhir.read(&Actor::system(), "Schedule", "ag-nuova-altrui").await.is_err());
    // a client of no organisation writes no agenda; nobody but the booking service writes slots
    let nobody = token_for(&app.store, &Actor::new(Who::Client { client_id: "x".into(), organization: None, platform: false })).await;
    assert_eq!(put(retemplate(mine.clone()), nobody).await, 403);
    let slot = json!({"resourceType": "Slot", "id": "ag-x-202701041000", "schedule": {"reference": format!("Schedule/{}", mine["id"].as_str().unwrap())},
        "status": "busy", "start": "2027-01-04T09:00:00Z", "end": "2027-01-04T09:30:00Z"});
    let r = reqwest::Client::new()
        .put(format!("{}/fhir/r4/Slot/ag-x-202701041000", app.root))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(slot.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn new_weekly_hours_cancel_with_notice_only_the_appointments_they_drop() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    let codes: Vec<&str> = fascicolo_domain::booking::SERVICES.iter().map(|s| s.code).collect();
    seed_offer(&fhir, &codes).await;
    seed_organizations(&fhir).await;
    let mut front = read(&fhir, "Organization", "asst-fbf-sacco").await;
    front["partOf"] = json!({"reference": "Organization/asst-030703"});
    fhir.update(&Actor::system(), "Organization", "asst-fbf-sacco", front.to_string().as_bytes(), None).await.unwrap();
    let portal = fascicolo_app::portal::Portal::new(fhir.clone());
    let cup = |org: &str| {
        Actor::new(Who::Professional { practitioner: "moretti-luigi".into(), organization: Some(org.into()), role: ProRole::CupOperator })
    };
    let moretti = cup("asst-fbf-sacco");
    let a = portal.managed_agendas(&moretti).await.unwrap().remove(0);
    // two prescriptions of Giulia for that service: one booked at the day's first start, one at its last
    let mut srs = Vec::new();
    for (id, nre) in [("rossi-giulia-orari-1", "030777100009990"), ("rossi-giulia-orari-2", "030777200009990")] {
        let sr = json!({"resourceType": "ServiceRequest", "id": id, "status": "active", "intent": "order",
            "subject": {"reference": "Patient/rossi-giulia"},
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.9.4.3.9", "value": nre}],
            "code": {"coding": [{"system": "urn:fascicolo:catalogo-nazionale-prestazioni", "code": a.code}]},
            "extension": [{"url": "urn:fascicolo:priority-class", "valueCode": "P"}]});
        fhir.update(&Actor::system(), "ServiceRequest", id, sr.to_string().as_bytes(), None).await.unwrap();
        srs.push(id);
    }
    let mut day = fascicolo_domain::rome::today() + time::Duration::days(3);
    if let Some(b) = a.booked_until {
        day = day.max(b + time::Duration::days(1));
    }
    while !a.template.opens_on(day, &a.istat, &a.closures) {
        day = day.next_day().unwrap();
    }
    let starts: Vec<u16> = a.template.starts().collect();
    let (first, last) = (starts[0], *starts.last().unwrap());
    let early_key = fascicolo_domain::booking::slot_key(&a.id, day, first);
    let late_key = fascicolo_domain::booking::slot_key(&a.id, day, last);
    let early = portal.book(&moretti, Some("rossi-giulia"), srs[0], &early_key).await.unwrap();
    let late = portal.book(&moretti, Some("rossi-giulia"), srs[1], &late_key).await.unwrap();
    let before = read(&fhir, "Schedule", &a.id).await;

    // the new hours open an hour later, close as before
    let t = &a.template;
    let days: Vec<String> = (0..7).filter(|i| t.days[*i]).map(|i| (i + 1).to_string()).collect();
    let hours: Vec<String> = t
        .hours
        .iter()
        .enumerate()
        .map(|(i, (x, y))| {
            let x = if i == 0 { x + 60 } else { *x };
            format!("{:02}:{:02}-{:02}:{:02}", x / 60, x % 60, y / 60, y % 60)
        })
        .collect();
    let template = format!("days={};hours={};minutes={}", days.join(","), hours.join(","), t.minutes);
    // refused, nothing changed: another ASST's office, hours that do not read, the same hours
    assert!(matches!(portal.change_hours(&cup("asst-030701"), &a.id, &template).await, Err(fascicolo_app::AppError::Forbidden(_))));
    assert!(matches!(
        portal.change_hours(&moretti, &a.id, "days=1-5;hours=12:00-09:00;minutes=20").await,
        Err(fascicolo_app::AppError::BadRequest(_))
    ));
    assert!(matches!(portal.change_hours(&moretti, &a.id, &a.template.render()).await, Err(fascicolo_app::AppError::Conflict(_))));
    assert_eq!(read(&fhir, "Schedule", &a.id).await, before);

    // at the desk's page
    let desk = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("MRTLGU82C08F205"), "cup-operator").await);
    let (s, _, page_) = page(&app, &desk, &format!("/professionista/agende/{}", a.id)).await;
    assert_eq!(s, 200);
    assert!(page_.contains("id=\"hours\""));
    let mut form: Vec<(&str, String)> = vec![("csrf", csrf_of(&page_)), ("fasce", hours.join(", ")), ("minuti", t.minutes.to_string())];
    form.extend(days.iter().map(|d| ("giorno", d.clone())));
    let form_refs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, to, _) = post(&app, &desk, &format!("/professionista/agende/{}/orari", a.id), &form_refs).await;
    assert_eq!(
        (s, to.as_str()),
        (303, format!("/professionista/agende/{}?esito=orari&annullati=1", a.id).as_str()),
        "only the dropped one"
    );

    let stored = read(&fhir, "Schedule", &a.id).await;
    assert_eq!(
        ext(&stored, "urn:fascicolo:agenda-template")["valueString"],
        fascicolo_domain::booking::Template::parse(&template).unwrap().render()
    );
    let cancelled = read(&fhir, "Appointment", &early.id).await;
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["cancelationReason"]["coding"][0]["code"].as_str()),
        (Some("cancelled"), Some("prov"))
    );
    assert_eq!(read(&fhir, "Appointment", &late.id).await["status"], "booked", "a slot that stays open keeps its appointment");
    assert_eq!(read(&fhir, "Slot", &early_key).await["status"], "free");
    assert!(ext(&read(&fhir, "ServiceRequest", srs[0]).await, "urn:fascicolo:booked-as").is_null());
    let notices = pending(&app, fascicolo_app::booking::PROVIDER_CANCELLED_KIND).await;
    assert_eq!(notices.len(), 1);
    assert!(fhir.deliveries(&notices[0], "https://fse.example").await.unwrap()[0].text.contains("modificata"));
    // a server whose offer predates the change refuses the hour that closed
    match portal.book(&moretti, Some("rossi-giulia"), srs[0], &early_key).await {
        Err(fascicolo_app::AppError::Conflict(m)) => assert!(m.contains("hours"), "{m}"),
        other => panic!("a dropped hour booked: {other:?}"),
    }
}

#[tokio::test]
async fn two_people_accepting_the_same_earlier_slot_at_once_one_gets_it() {
    let (app, fhir, portal, racers) = race_setup("95.02", 3).await;
    let desk = Actor::new(Who::Professional {
        practitioner: "moretti-luigi".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::CupOperator,
    });
    let first = portal.find(&desk, Some(&racers[0].0), &racers[0].1, None).await.unwrap();
    let o = first.options.iter().find(|o| o.in_area).unwrap().clone();
    let early = portal.book(&desk, Some(&racers[0].0), &racers[0].1, &o.key).await.unwrap();
    let mut later = Vec::new();
    for (pid, sr) in racers[1..].iter().cloned() {
        let opts = portal.find(&desk, Some(&pid), &sr, Some(o.day + time::Duration::days(21))).await.unwrap();
        let b = portal.book(&desk, Some(&pid), &sr, &opts.options.iter().find(|x| x.in_area).unwrap().key).await.unwrap();
        portal.set_earlier_offers(&desk, Some(&pid), &b.id, true).await.unwrap();
        later.push((pid, b));
    }
    portal.cancel(&desk, Some(&racers[0].0), &early.id).await.unwrap();
    for m in pending(&app, "booking.slot-freed").await {
        fhir.deliveries(&m, "https://fse.example").await.unwrap();
    }
    let mut tasks = Vec::new();
    for (pid, b) in later.clone() {
        let offer = portal.earlier_offers(&desk, Some(&pid), &b.id).await.unwrap().remove(0);
        let (portal, desk) = (portal.clone(), desk.clone());
        tasks.push(tokio::spawn(async move { portal.accept_earlier(&desk, Some(&pid), &b.id, &offer.id).await.is_ok() }));
    }
    let won: Vec<bool> = futures_join(tasks).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let loser = &later[won.iter().position(|w| !w).unwrap()].1;
    assert_eq!(read(&fhir, "Appointment", &loser.id).await["status"], "booked", "the loser's appointment stays");
    one_booking_per_slot(&fhir, std::slice::from_ref(&o.key)).await;
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<bool>>) -> Vec<bool> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
