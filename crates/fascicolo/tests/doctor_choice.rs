//! Choosing the family doctor or pediatrician: the portal page and its refusals, the care
//! relation moving with the choice (the new doctor gains access, the old one loses it, through
//! the API), and no list over its ceiling when many people race for the last places (SQLite,
//! and PostgreSQL when FASCICOLO_TEST_DATABASE_URL is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use fascicolo_app::doctor_choice::Ceilings;
use fascicolo_app::gate::ProRole;
use fascicolo_app::portal::Portal;
use fascicolo_app::{Actor, AppError, FhirService, Policy, Who};
use serde_json::json;
use std::sync::Arc;

const GIULIA: &str = "RSSGLI85D52F205";

fn doctor_of(app_patient: &serde_json::Value) -> String {
    app_patient["generalPractitioner"][0]["reference"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_citizen_changes_doctor_and_the_care_relation_moves_with_it() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    record_fixtures(&fhir).await;
    let cookie = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(GIULIA), "citizen").await);

    // what she may choose: the family doctors of her ATS with places; not a pediatrician (adult)
    let (s, _, choice) = page(&app, &cookie, "/medico").await;
    assert_eq!(s, 200, "{choice}");
    let current = choice.split("id=\"current-doctor\"").nth(1).unwrap().split("</section>").next().unwrap();
    assert!(current.contains("Paolo Ferrari"), "{current}");
    let table = choice.split("id=\"doctors\"").nth(1).expect("a list of doctors").split("</table>").next().unwrap();
    assert!(table.contains("Andrea Marino") && !table.contains("Elena Colombo") && !table.contains("Paolo Ferrari"), "{table}");
    assert!(table.contains("1.500 posti liberi") && table.contains("occupati 0 su 1.500"), "places as Italians write them: {table}");
    let (s, _, confirm) = page(&app, &cookie, "/medico?medico=marino-andrea").await;
    assert!(s == 200 && confirm.contains("Conferma la scelta") && confirm.contains("Andrea Marino"), "{confirm}");
    let csrf = csrf_of(&confirm);

    // before: her doctor reads her record, the other one does not
    let ferrari = token_for(
        &app.store,
        &Actor::new(Who::Professional { practitioner: "ferrari-paolo".into(), organization: None, role: ProRole::Gp }),
    )
    .await;
    let marino = token_for(
        &app.store,
        &Actor::new(Who::Professional { practitioner: "marino-andrea".into(), organization: None, role: ProRole::Gp }),
    )
    .await;
    assert_eq!(app.get_as("/Patient/rossi-giulia", &ferrari).await.status, 200);
    assert_ne!(app.get_as("/Patient/rossi-giulia", &marino).await.status, 200);

    // refusals change nothing: a forged form, a pediatrician for an adult, a doctor unknown
    assert_eq!(post(&app, &cookie, "/medico", &[("csrf", "forged"), ("medico", "marino-andrea")]).await.0, 403);
    assert_eq!(post(&app, &cookie, "/medico", &[("csrf", &csrf), ("medico", "colombo-elena")]).await.0, 404);
    assert_eq!(post(&app, &cookie, "/medico", &[("csrf", &csrf), ("medico", "nobody")]).await.0, 404);
    assert_eq!(post(&app, &cookie, "/medico", &[("csrf", &csrf), ("medico", "ferrari-paolo")]).await.0, 409, "already hers");
    assert_eq!(doctor_of(&app.get("/Patient/rossi-giulia").await.body), "Practitioner/ferrari-paolo");
    assert_eq!(app.get("/Group/lista-marino-andrea").await.status, 404, "no list written by a refusal");

    // the change, at once
    let (s, loc, _) = post(&app, &cookie, "/medico", &[("csrf", &csrf), ("medico", "marino-andrea")]).await;
    assert_eq!((s, loc.as_str()), (303, "/medico?esito=scelto"));
    assert_eq!(doctor_of(&app.get("/Patient/rossi-giulia").await.body), "Practitioner/marino-andrea");
    assert_eq!(app.get_as("/Patient/rossi-giulia", &marino).await.status, 200, "the new doctor has the care relation");
    assert_ne!(app.get_as("/Patient/rossi-giulia", &ferrari).await.status, 200, "the old one lost it");
    // the lists count: Marino 1 (her), Ferrari 2 (Anna and Marco)
    assert_eq!(app.get("/Group/lista-marino-andrea").await.body["quantity"], 1);
    assert_eq!(app.get("/Group/lista-ferrari-paolo").await.body["quantity"], 2);
    let (_, _, after) = page(&app, &cookie, "/medico?esito=scelto").await;
    assert!(after.contains("Scelta registrata"));
    assert!(after.split("id=\"current-doctor\"").nth(1).unwrap().split("</section>").next().unwrap().contains("Andrea Marino"));

    // a minor child (10): a pediatrician or a family doctor; a delegate may not choose
    post(&app, &cookie, "/auth/profile", &[("csrf", &csrf), ("acting_for", "bianchi-luca"), ("next", "/")]).await;
    let (s, _, luca) = page(&app, &cookie, "/medico").await;
    assert_eq!(s, 200);
    assert!(luca.contains("Tra 6 e 14 anni") && luca.contains("Paolo Ferrari"), "{luca}");
    post(&app, &cookie, "/auth/profile", &[("csrf", &csrf), ("acting_for", "verdi-anna"), ("next", "/")]).await;
    let (s, _, anna) = page(&app, &cookie, "/medico").await;
    assert!(s == 403 && anna.contains("una delega non lo comprende"), "{anna}");
    let (_, _, home) = page(&app, &cookie, "/").await;
    assert!(!home.contains("href=\"/medico\""), "no menu entry a delegate cannot use");
    assert_eq!(post(&app, &cookie, "/medico", &[("csrf", &csrf), ("medico", "marino-andrea")]).await.0, 403);
    assert_eq!(doctor_of(&app.get("/Patient/verdi-anna").await.body), "Practitioner/ferrari-paolo");

    // Anna goes to the ASST registry office instead: the operator changes it at the desk
    let desk = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("CNTCHR79T41F205"), "asst-admin").await);
    let (s, _, home) = page(&app, &desk, "/professionista").await;
    assert!(s == 200 && home.contains("allo sportello") && home.contains("name=\"cf\""), "{home}");
    assert!(
        home.contains("Amministratrice ASST — ASST Fatebenefratelli Sacco") && !home.contains("— asst-fbf-sacco"),
        "her office by name"
    );
    let anna_cf = fascicolo_load::demo::cf("VRDNNA40B60F205");
    let (s, loc, _) = page(&app, &desk, &format!("/professionista?cf={anna_cf}")).await;
    assert_eq!((s, loc.as_str()), (303, "/professionista/anagrafe/verdi-anna"));
    let platform = token_for(&app.store, &platform_actor()).await;
    let by_desk = |log: serde_json::Value| {
        log["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["agent"].as_array().unwrap().iter().any(|a| a["who"]["reference"] == "Practitioner/conti-chiara"))
            .count()
    };
    let before = by_desk(app.get_as("/AuditEvent?patient=verdi-anna&_count=500", &platform).await.body);
    let (s, _, at_desk) = page(&app, &desk, "/professionista/anagrafe/verdi-anna").await;
    assert_eq!(s, 200, "{at_desk}");
    let after = by_desk(app.get_as("/AuditEvent?patient=verdi-anna&_count=500", &platform).await.body);
    assert_eq!(after, before + 1, "opening her page at the desk is one entry in her log");
    assert!(at_desk.contains("<h1>Anna Verdi</h1>") && at_desk.contains("Andrea Marino") && at_desk.contains("Paolo Ferrari"));
    assert!(!at_desk.contains("Referto") && !at_desk.contains("/documenti/"), "no clinical content at the desk");
    let desk_csrf = csrf_of(&at_desk);
    assert_eq!(
        post(&app, &desk, "/professionista/anagrafe/verdi-anna/medico", &[("csrf", "forged"), ("medico", "marino-andrea")]).await.0,
        403
    );
    let (s, loc, _) =
        post(&app, &desk, "/professionista/anagrafe/verdi-anna/medico", &[("csrf", &desk_csrf), ("medico", "marino-andrea")]).await;
    assert_eq!((s, loc.as_str()), (303, "/professionista/anagrafe/verdi-anna?esito=scelto"));
    assert_eq!(doctor_of(&app.get("/Patient/verdi-anna").await.body), "Practitioner/marino-andrea");
    assert_eq!(app.get("/Group/lista-marino-andrea").await.body["quantity"], 2);
    assert_eq!(app.get("/Group/lista-ferrari-paolo").await.body["quantity"], 1);
    // the change is in Anna's access log, by the operator
    let log = app.get_as("/AuditEvent?patient=verdi-anna&_count=500", &platform).await.body.to_string();
    assert!(log.contains("Practitioner/conti-chiara"), "the desk's change is in her log");
    // a booking-centre operator has no such desk
    let cup = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("MRTLGU82C08F205"), "cup-operator").await);
    assert_eq!(page(&app, &cup, "/professionista/anagrafe/verdi-anna").await.0, 403);
    let (_, _, cup_home) = page(&app, &cup, "/professionista").await;
    assert!(!cup_home.contains("Anagrafe: scelta del medico"), "no registry desk for the booking centre");
    assert!(cup_home.contains("Sportello CUP"), "its own desk: bookings");
}

/// 40 people move at the same instant from doctor A to doctor B, whose list has 5 places: 5
/// get one, 35 are told the list is full, and both lists count exactly what the registry holds.
#[tokio::test]
async fn no_list_goes_over_its_ceiling_when_many_race_for_the_last_places() {
    let store = fresh_store().await;
    let ceilings = Ceilings { gp: 5, pediatrician: 880 };
    let fhir = FhirService::with_policy(Arc::clone(&store), Policy { ceilings, ..Default::default() });
    let put = |v: serde_json::Value| {
        let fhir = fhir.clone();
        async move {
            let (rt, id) = (v["resourceType"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string());
            fhir.update(&Actor::system(), &rt, &id, v.to_string().as_bytes(), None).await.unwrap();
        }
    };
    put(json!({"resourceType": "Organization", "id": "ats-race", "active": true, "name": "ATS di prova"})).await;
    for doc in ["doc-a", "doc-b"] {
        put(json!({"resourceType": "Practitioner", "id": doc, "active": true, "name": [{"family": doc, "given": ["Dott."]}]})).await;
        put(json!({"resourceType": "PractitionerRole", "id": format!("{doc}-role"), "active": true,
            "practitioner": {"reference": format!("Practitioner/{doc}")}, "organization": {"reference": "Organization/ats-race"},
            "code": [{"coding": [{"system": fascicolo_domain::systems::ROLE_SYSTEM, "code": "gp"}]}]}))
        .await;
    }
    let mut people = Vec::new();
    for i in 0..40 {
        let first15 = format!("RCCPRV80{}{:02}F205", ['A', 'B'][i / 28], 1 + i % 28);
        let cf = fascicolo_load::demo::cf(&first15);
        let id = format!("racer-{i}");
        put(json!({"resourceType": "Patient", "id": id, "active": true, "birthDate": "1980-01-01",
            "identifier": [{"system": fascicolo_domain::systems::CF_SYSTEM, "value": cf}],
            "name": [{"family": "Prova", "given": [format!("Persona {i}")]}],
            "managingOrganization": {"reference": "Organization/ats-race"},
            "generalPractitioner": [{"reference": "Practitioner/doc-a"}]}))
        .await;
        people.push(Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(&cf).unwrap(), patient: Some(id) }));
    }
    let portal = Portal::new(fhir.clone());
    let choice = portal.doctor_choice(&people[0], ceilings).await.unwrap();
    assert_eq!(choice.current.as_ref().map(|d| d.listed), Some(40));
    assert_eq!(choice.candidates.iter().map(|d| (d.practitioner.as_str(), d.free())).collect::<Vec<_>>(), [("doc-b", 5)]);

    let tasks: Vec<_> = people
        .iter()
        .cloned()
        .map(|a| {
            let portal = portal.clone();
            tokio::spawn(async move { portal.choose_doctor(&a, ceilings, "doc-b").await })
        })
        .collect();
    let mut done = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => done += 1,
            Err(AppError::Conflict(m)) if m.contains("no free places") => full += 1,
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!((done, full), (5, 35), "exactly the free places were given");
    let count = |doc: &'static str| {
        let fhir = fhir.clone();
        async move {
            let pairs =
                vec![("general-practitioner".to_string(), format!("Practitioner/{doc}")), ("_summary".to_string(), "count".to_string())];
            fhir.search(&Actor::system(), Some("Patient"), &pairs, "").await.unwrap().total.unwrap()
        }
    };
    assert_eq!((count("doc-a").await, count("doc-b").await), (35, 5), "the registry");
    let list = |id: &'static str| {
        let fhir = fhir.clone();
        async move { fhir.read(&Actor::system(), "Group", id).await.unwrap().resource["quantity"].as_i64().unwrap() }
    };
    assert_eq!((list("lista-doc-a").await, list("lista-doc-b").await), (35, 5), "the lists agree with it");
    // and one more is refused (the list is full, or already theirs), with nothing changed
    let late = &people[39];
    let r = portal.choose_doctor(late, ceilings, "doc-b").await;
    assert!(matches!(r, Err(AppError::Conflict(_))), "{r:?}");
    assert_eq!(list("lista-doc-b").await, 5);
}

/// A newborn has no doctor yet: the mother chooses the first one, among pediatricians only;
/// a family doctor is refused for a baby, and a stranger cannot choose for the child.
#[tokio::test]
async fn a_parent_chooses_a_newborns_first_pediatrician() {
    let store = fresh_store().await;
    let fhir = FhirService::new(Arc::clone(&store));
    let put = |v: serde_json::Value| {
        let fhir = fhir.clone();
        async move {
            let (rt, id) = (v["resourceType"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string());
            fhir.update(&Actor::system(), &rt, &id, v.to_string().as_bytes(), None).await.unwrap();
        }
    };
    put(json!({"resourceType": "Organization", "id": "ats-nb", "active": true, "name": "ATS di prova"})).await;
    for (doc, role) in [("ped-a", "pediatrician"), ("gp-a", "gp")] {
        put(json!({"resourceType": "Practitioner", "id": doc, "active": true, "name": [{"family": doc, "given": ["Dott."]}]})).await;
        put(json!({"resourceType": "PractitionerRole", "id": format!("{doc}-role"), "active": true,
            "practitioner": {"reference": format!("Practitioner/{doc}")}, "organization": {"reference": "Organization/ats-nb"},
            "code": [{"coding": [{"system": fascicolo_domain::systems::ROLE_SYSTEM, "code": role}]}]}))
        .await;
    }
    let mother_cf = fascicolo_load::demo::cf("MDRNBN90A41F205");
    let today = fascicolo_domain::rome::today();
    let birth = today - time::Duration::days(40);
    let birth = format!("{:04}-{:02}-{:02}", birth.year(), birth.month() as u8, birth.day());
    put(json!({"resourceType": "Patient", "id": "mother", "active": true, "birthDate": "1990-01-01", "gender": "female",
        "identifier": [{"system": fascicolo_domain::systems::CF_SYSTEM, "value": mother_cf}],
        "managingOrganization": {"reference": "Organization/ats-nb"}, "generalPractitioner": [{"reference": "Practitioner/gp-a"}]}))
    .await;
    put(json!({"resourceType": "Patient", "id": "baby", "active": true, "birthDate": birth, "gender": "female",
        "managingOrganization": {"reference": "Organization/ats-nb"}}))
    .await;
    put(json!({"resourceType": "RelatedPerson", "id": "mother-for-baby", "active": true, "patient": {"reference": "Patient/baby"},
        "identifier": [{"system": fascicolo_domain::systems::CF_SYSTEM, "value": mother_cf}],
        "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH"}]}]}))
    .await;
    let mut mother =
        Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(&mother_cf).unwrap(), patient: Some("mother".into()) });
    mother.acting_for = Some("baby".into());
    let portal = Portal::new(fhir.clone());
    let ceilings = Ceilings::default();
    let choice = portal.doctor_choice(&mother, ceilings).await.unwrap();
    assert_eq!((choice.patient.as_str(), choice.age, choice.current.is_none()), ("baby", 0, true));
    assert_eq!(choice.candidates.iter().map(|d| d.practitioner.as_str()).collect::<Vec<_>>(), ["ped-a"], "pediatricians only");
    assert!(matches!(portal.choose_doctor(&mother, ceilings, "gp-a").await, Err(AppError::NotFound(_))), "no family doctor for a baby");
    assert!(fhir.read(&Actor::system(), "Patient", "baby").await.unwrap().resource.get("generalPractitioner").is_none());
    // someone who is not her parent
    let mut stranger = Actor::new(Who::Citizen {
        cf: fascicolo_domain::CodiceFiscale::parse(&fascicolo_load::demo::cf("STRNGR80A01F205")).unwrap(),
        patient: None,
    });
    stranger.acting_for = Some("baby".into());
    let refused = portal.choose_doctor(&stranger, ceilings, "ped-a").await;
    assert!(matches!(refused, Err(AppError::Forbidden(_))), "{refused:?}");
    assert!(fhir.read(&Actor::system(), "Group", "lista-ped-a").await.is_err(), "the refusal wrote nothing");
    // the mother's choice
    let chosen = portal.choose_doctor(&mother, ceilings, "ped-a").await.unwrap();
    assert_eq!((chosen.practitioner.as_str(), chosen.listed), ("ped-a", 1));
    let baby = fhir.read(&Actor::system(), "Patient", "baby").await.unwrap().resource;
    assert_eq!(baby["generalPractitioner"][0]["reference"], "Practitioner/ped-a");
    assert_eq!(fhir.read(&Actor::system(), "Group", "lista-ped-a").await.unwrap().resource["quantity"], 1);
    assert!(fhir.read(&Actor::system(), "Group", "lista-gp-a").await.is_err(), "no old list to touch");
}
