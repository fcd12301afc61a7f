//! Exemptions from the ticket: self-certifying an income exemption (E01–E04 rules) and
//! revoking it, as the citizen, a parent and at the ASST desk; the refusals that store nothing;
//! what a later charge meets; and one declaration only when many are sent at once (SQLite, and
//! PostgreSQL when FASCICOLO_TEST_DATABASE_URL is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use fascicolo_app::exemptions::DeclarationForm;
use fascicolo_app::portal::Portal;
use fascicolo_app::{Actor, AppError, FhirService, Who};
use fascicolo_domain::exemption::{valid_until, IncomeCode};
use serde_json::{json, Value};
use std::sync::Arc;

const GIULIA: &str = "RSSGLI85D52F205";

/// The exemption Coverages of a person, as the platform reads them.
async fn coverages(app: &TestApp, patient: &str) -> Vec<Value> {
    let body = app.get(&format!("/Coverage?beneficiary=Patient/{patient}&_count=100")).await.body;
    body["entry"].as_array().cloned().unwrap_or_default().into_iter().map(|e| e["resource"].clone()).collect()
}

fn self_certified(all: &[Value]) -> Vec<Value> {
    all.iter().filter(|c| c["id"].as_str().unwrap_or_default().contains("-autocertificazione-")).cloned().collect()
}

fn part<'a>(c: &'a Value, name: &str) -> &'a Value {
    let parts = c["extension"][0]["extension"].as_array().unwrap();
    parts.iter().find(|p| p["url"] == name).unwrap_or(&Value::Null)
}

fn today() -> time::Date {
    fascicolo_domain::rome::today()
}

#[tokio::test]
async fn a_citizen_self_certifies_an_income_exemption_and_revokes_it() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    record_fixtures(&fhir).await;
    // a pathology exemption issued by the ATS (not hers to revoke)
    let ats = json!({"resourceType": "Coverage", "id": "rossi-giulia-esenzione-013", "status": "active",
        "type": {"coding": [{"system": "urn:fascicolo:esenzione", "code": "013", "display": "Diabete mellito"}]},
        "beneficiary": {"reference": "Patient/rossi-giulia"}, "payor": [{"reference": "Organization/ats-milano"}], "period": {"start": "2024-01-10"}});
    fhir.update(&Actor::system(), "Coverage", "rossi-giulia-esenzione-013", ats.to_string().as_bytes(), None).await.unwrap();
    let cookie = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(GIULIA), "citizen").await);

    let (s, _, first) = page(&app, &cookie, "/esenzioni").await;
    assert_eq!(s, 200, "{first}");
    let table = first.split("id=\"exemptions\"").nth(1).expect("exemptions in force").split("</table>").next().unwrap();
    assert!(table.contains("013") && table.contains("Diabete mellito") && table.contains("Patologia cronica"), "{table}");
    assert!(!table.contains("Revoca"), "an ATS exemption has no revoke button: {table}");
    assert!(first.contains("id=\"declare\"") && first.contains("href=\"/esenzioni\""), "the form, and the menu entry");
    let csrf = csrf_of(&first);
    let before = coverages(&app, "rossi-giulia").await.len();

    // refusals store nothing: E01 at 41, income over the limit, no statement, a bad figure, a forged form
    let refused = [
        (vec![("code", "E01"), ("income", "20.000"), ("accepted", "1")], "spetta a chi ha meno di 6 anni"),
        (vec![("code", "E02"), ("standing", "holder"), ("income", "8.263,31"), ("accepted", "1")], "supera il limite"),
        (vec![("code", "E02"), ("standing", "holder"), ("income", "7.000")], "devi confermare la dichiarazione"),
        (vec![("code", "E02"), ("standing", "holder"), ("income", "settemila"), ("accepted", "1")], "per esempio 8.000,00"),
        (vec![("code", "E09"), ("accepted", "1")], "Scegli il codice di esenzione"),
        (vec![("code", "E04"), ("standing", "holder"), ("income", "5.000"), ("accepted", "1")], "almeno 60 anni"),
        (vec![("code", "E02"), ("standing", "holder"), ("income", "5.000"), ("children", "-2"), ("accepted", "1")], "da 0 a 20"),
    ];
    for (form, message) in refused {
        let mut form = form.clone();
        form.push(("csrf", &csrf));
        let (s, _, body) = post(&app, &cookie, "/esenzioni", &form).await;
        assert_eq!(s, 422, "{form:?}");
        assert!(body.contains(message) && body.contains("non è stata registrata"), "{message}: {body}");
    }
    let (s, _, _) = post(&app, &cookie, "/esenzioni", &[("csrf", "forged"), ("code", "E03"), ("accepted", "1")]).await;
    assert_eq!(s, 403);
    assert_eq!(coverages(&app, "rossi-giulia").await.len(), before, "nothing stored by a refusal");

    // E02 for an unemployed person with a spouse and a child: under 11,362.05 + 516.46
    let form = [
        ("csrf", csrf.as_str()),
        ("code", "E02"),
        ("standing", "holder"),
        ("income", "11.878,50"),
        ("spouse", "1"),
        ("children", "1"),
        ("accepted", "1"),
    ];
    let (s, loc, _) = post(&app, &cookie, "/esenzioni", &form).await;
    assert_eq!((s, loc.as_str()), (303, "/esenzioni?esito=dichiarata"));
    let mine = self_certified(&coverages(&app, "rossi-giulia").await);
    assert_eq!(mine.len(), 1);
    let c = &mine[0];
    let until = valid_until(IncomeCode::E02, time::macros::date!(1985 - 04 - 12), today());
    assert_eq!(c["id"], format!("rossi-giulia-autocertificazione-{}-1", until.year()));
    assert_eq!((c["status"].as_str(), c["type"]["coding"][0]["code"].as_str()), (Some("active"), Some("E02")));
    assert_eq!(c["period"]["end"], until.to_string());
    assert_eq!(c["period"]["start"], today().to_string());
    assert_eq!(part(c, "limite")["valueMoney"]["value"], 11878.51);
    assert_eq!((part(c, "coniuge")["valueBoolean"].as_bool(), part(c, "figli")["valueUnsignedInt"].as_u64()), (Some(true), Some(1)));
    assert_eq!(part(c, "dichiarante")["valueString"], "Giulia Rossi");
    assert!(part(c, "testo")["valueString"].as_str().unwrap().contains("DPR 445/2000"));
    // the income figure (11.878,50) is nowhere in what was stored, as a number or as typed
    fn numbers(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Number(n) => out.extend(n.as_f64()),
            Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
            Value::Object(o) => o.values().for_each(|x| numbers(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    numbers(c, &mut all);
    assert!(all.contains(&11878.51) && !all.contains(&11878.5), "the limit is kept, the income is not: {all:?}");
    assert!(!c.to_string().contains("11.878,50"), "{c}");
    // what a charge today meets, and in the FHIR API as the citizen
    let portal = Portal::new(fhir.clone());
    assert_eq!(portal.exemptions_on("rossi-giulia", today()).await.unwrap(), ["013", "E02"]);
    assert_eq!(portal.exemptions_on("rossi-giulia", until.next_day().unwrap()).await.unwrap(), ["013"], "not after 31 March");
    let citizen = Actor::new(Who::Citizen {
        cf: fascicolo_domain::CodiceFiscale::parse(&fascicolo_load::demo::cf(GIULIA)).unwrap(),
        patient: Some("rossi-giulia".into()),
    });
    let token = token_for(&app.store, &citizen).await;
    let api = app.get_as("/Coverage", &token).await;
    assert!(api.status == 200 && api.body.to_string().contains("E02"), "{}", api.body);

    // the page: in force, revocable; no second income exemption
    let (_, _, after) = page(&app, &cookie, "/esenzioni?esito=dichiarata").await;
    assert!(after.contains("Autocertificazione registrata"));
    let table = after.split("id=\"exemptions\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert!(table.contains("E02") && table.contains("Autocertificazione del") && table.contains("Giulia Rossi"), "{table}");
    assert!(table.contains("?revoca="), "{table}");
    assert!(!after.contains("id=\"declare\""), "no form while an income exemption is in force");
    let (s, _, twice) =
        post(&app, &cookie, "/esenzioni", &[("csrf", &csrf), ("code", "E03"), ("standing", "holder"), ("accepted", "1")]).await;
    assert!(s == 422 && twice.contains("già un'esenzione per reddito"), "{twice}");
    assert_eq!(self_certified(&coverages(&app, "rossi-giulia").await).len(), 1, "declared once");

    // another citizen cannot revoke hers; she cannot revoke the ATS's
    let id = c["id"].as_str().unwrap().to_string();
    let marco = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("BNCMRC07A10F205"), "citizen").await);
    let (_, _, marco_page) = page(&app, &marco, "/esenzioni").await;
    assert!(!marco_page.contains("Giulia Rossi") && !marco_page.contains("?revoca="), "not his to see");
    let marco_csrf = csrf_of(&marco_page);
    assert_eq!(post(&app, &marco, &format!("/esenzioni/{id}/revoca"), &[("csrf", &marco_csrf)]).await.0, 404);
    assert_eq!(post(&app, &cookie, "/esenzioni/rossi-giulia-esenzione-013/revoca", &[("csrf", &csrf)]).await.0, 409);
    assert_eq!(post(&app, &cookie, &format!("/esenzioni/{id}/revoca"), &[("csrf", "forged")]).await.0, 403);

    // the revocation: confirmed, in force until yesterday, kept with its revocation
    let (s, _, confirm) = page(&app, &cookie, &format!("/esenzioni?revoca={id}")).await;
    assert!(s == 200 && confirm.contains("Revoca l'esenzione") && confirm.contains("E02"), "{confirm}");
    let (s, loc, _) = post(&app, &cookie, &format!("/esenzioni/{id}/revoca"), &[("csrf", &csrf)]).await;
    assert_eq!((s, loc.as_str()), (303, "/esenzioni?esito=revocata"));
    let c = app.get(&format!("/Coverage/{id}")).await.body;
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["period"]["end"], today().previous_day().unwrap().to_string());
    assert!(part(&c, "revocata")["valueDateTime"].is_string());
    assert_eq!(portal.exemptions_on("rossi-giulia", today()).await.unwrap(), ["013"], "a charge from today pays the ticket");
    assert_eq!(post(&app, &cookie, &format!("/esenzioni/{id}/revoca"), &[("csrf", &csrf)]).await.0, 409, "revoked once");
    let (_, _, revoked) = page(&app, &cookie, "/esenzioni?esito=revocata").await;
    let past = revoked.split("id=\"past-exemptions\"").nth(1).expect("the past").split("</table>").next().unwrap();
    assert!(past.contains("E02") && past.contains("Revocata"), "{past}");

    // a new declaration after the revocation is a second one, beside it
    let form = [("csrf", csrf.as_str()), ("code", "E03"), ("standing", "dependant"), ("accepted", "1")];
    assert_eq!(post(&app, &cookie, "/esenzioni", &form).await.0, 303);
    let mine = self_certified(&coverages(&app, "rossi-giulia").await);
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().any(|c| c["id"].as_str().unwrap().ends_with("-2") && c["type"]["coding"][0]["code"] == "E03"));
    assert!(part(mine.iter().find(|c| c["type"]["coding"][0]["code"] == "E03").unwrap(), "limite").is_null(), "E03 has no limit");

    // in English
    let (_, _, en) = page(&app, &cookie, "/esenzioni?lang=en").await;
    assert!(
        en.contains("Exemptions in force") && en.contains("Holder of the social allowance") && en.contains("Diabetes mellitus"),
        "{en}"
    );

    // as a parent for Luca (10): E01 is not his; E02 as a dependant is, signed by his mother
    post(&app, &cookie, "/auth/profile", &[("csrf", &csrf), ("acting_for", "bianchi-luca"), ("next", "/")]).await;
    let (s, _, luca) =
        post(&app, &cookie, "/esenzioni", &[("csrf", &csrf), ("code", "E01"), ("income", "20.000"), ("accepted", "1")]).await;
    assert!(s == 422 && luca.contains("spetta a chi ha meno di 6 anni"), "{luca}");
    let form = [("csrf", csrf.as_str()), ("code", "E02"), ("standing", "dependant"), ("income", "6.000"), ("accepted", "1")];
    assert_eq!(post(&app, &cookie, "/esenzioni", &form).await.0, 303);
    let his = self_certified(&coverages(&app, "bianchi-luca").await);
    assert_eq!(his.len(), 1);
    assert_eq!(
        (part(&his[0], "titolo")["valueCode"].as_str(), part(&his[0], "dichiarante")["valueString"].as_str()),
        (Some("dependant"), Some("Giulia Rossi"))
    );

    // as Anna's delegate: her delegation does not cover exemptions; once it does, she sees
    // them and still may not declare (a statement under DPR 445/2000 is the holder's)
    post(&app, &cookie, "/auth/profile", &[("csrf", &csrf), ("acting_for", "verdi-anna"), ("next", "/")]).await;
    let (s, _, anna) = page(&app, &cookie, "/esenzioni").await;
    assert!(s == 403 && anna.contains("non comprende le esenzioni"), "{anna}");
    let (_, _, home) = page(&app, &cookie, "/").await;
    assert!(!home.contains("href=\"/esenzioni\""), "no menu entry a delegate cannot use");
    let mut rp = app.get("/RelatedPerson/rossi-giulia-for-anna").await.body;
    rp["extension"].as_array_mut().unwrap().push(json!({"url": "urn:fascicolo:delegation-scope", "valueCode": "Coverage"}));
    fhir.update(&Actor::system(), "RelatedPerson", "rossi-giulia-for-anna", rp.to_string().as_bytes(), None).await.unwrap();
    let (s, _, anna) = page(&app, &cookie, "/esenzioni").await;
    assert!(s == 200 && anna.contains("una delega non la comprende") && !anna.contains("id=\"declare\""), "{anna}");
    let (s, _, _) = post(&app, &cookie, "/esenzioni", &[("csrf", &csrf), ("code", "E01"), ("income", "9.000"), ("accepted", "1")]).await;
    assert_eq!(s, 403);
    assert!(self_certified(&coverages(&app, "verdi-anna").await).is_empty());
}

#[tokio::test]
async fn the_asst_desk_records_and_revokes_a_self_certification_in_the_persons_log() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    record_fixtures(&fhir).await;
    let desk = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("CNTCHR79T41F205"), "asst-admin").await);
    let (s, _, home) = page(&app, &desk, "/professionista/anagrafe/verdi-anna").await;
    assert!(s == 200 && home.contains("/professionista/anagrafe/verdi-anna/esenzioni"), "a link from the desk");
    let (s, _, at_desk) = page(&app, &desk, "/professionista/anagrafe/verdi-anna/esenzioni").await;
    assert!(s == 200 && at_desk.contains("Anna Verdi") && at_desk.contains("id=\"declare\""), "{at_desk}");
    assert!(!at_desk.contains("Referto"), "no clinical content at the desk");
    let csrf = csrf_of(&at_desk);
    let path = "/professionista/anagrafe/verdi-anna/esenzioni";
    assert_eq!(post(&app, &desk, path, &[("csrf", "forged"), ("code", "E01"), ("income", "20.000"), ("accepted", "1")]).await.0, 403);
    let (s, _, over) = post(&app, &desk, path, &[("csrf", &csrf), ("code", "E01"), ("income", "40.000"), ("accepted", "1")]).await;
    assert!(s == 422 && over.contains("supera il limite"), "{over}");
    assert!(self_certified(&coverages(&app, "verdi-anna").await).is_empty());
    // Anna is 86: E01 with her household's 20,000 euro
    let (s, loc, _) = post(&app, &desk, path, &[("csrf", &csrf), ("code", "E01"), ("income", "20.000"), ("accepted", "1")]).await;
    assert_eq!((s, loc.as_str()), (303, "/professionista/anagrafe/verdi-anna/esenzioni?esito=dichiarata"));
    let hers = self_certified(&coverages(&app, "verdi-anna").await);
    assert_eq!(hers.len(), 1);
    assert_eq!(hers[0]["type"]["coding"][0]["code"], "E01");
    assert_eq!(part(&hers[0], "dichiarante")["valueString"], "Chiara Conti (sportello ASST)");
    let platform = token_for(&app.store, &platform_actor()).await;
    let log = app.get_as("/AuditEvent?patient=verdi-anna&_count=500", &platform).await.body.to_string();
    assert!(log.contains("Practitioner/conti-chiara"), "the desk's work is in her log");
    let id = hers[0]["id"].as_str().unwrap();
    let (s, _, _) = post(&app, &desk, &format!("{path}/{id}/revoca"), &[("csrf", &csrf)]).await;
    assert_eq!(s, 303);
    assert_eq!(app.get(&format!("/Coverage/{id}")).await.body["status"], "cancelled");
    // the booking centre and a family doctor have no such desk
    let cup = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("MRTLGU82C08F205"), "cup-operator").await);
    assert_eq!(page(&app, &cup, path).await.0, 403);
    let gp = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("FRRPLA70A01F205"), "gp").await);
    assert_eq!(page(&app, &gp, path).await.0, 403);
}

/// 20 declarations for one person at the same instant (a double click, two devices, the desk):
/// one is stored, the others are refused, and the person holds one income exemption.
#[tokio::test]
async fn one_declaration_only_when_many_are_sent_at_once() {
    let store = fresh_store().await;
    let fhir = FhirService::new(Arc::clone(&store));
    let cf = fascicolo_load::demo::cf("RCCPRV50A01F205");
    let put = |v: Value| {
        let fhir = fhir.clone();
        async move {
            let (rt, id) = (v["resourceType"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string());
            fhir.update(&Actor::system(), &rt, &id, v.to_string().as_bytes(), None).await.unwrap();
        }
    };
    put(json!({"resourceType": "Patient", "id": "racer", "active": true, "birthDate": "1950-01-01",
        "identifier": [{"system": fascicolo_domain::systems::CF_SYSTEM, "value": cf}],
        "name": [{"family": "Prova", "given": ["Persona"]}]}))
    .await;
    let actor = Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(&cf).unwrap(), patient: Some("racer".into()) });
    let portal = Portal::new(fhir.clone());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (portal, actor) = (portal.clone(), actor.clone());
            let code = ["E01", "E04"][i % 2];
            tokio::spawn(async move {
                let form = DeclarationForm {
                    code: code.into(),
                    standing: "holder".into(),
                    income: "7.000".into(),
                    accepted: true,
                    ..Default::default()
                };
                portal.declare_exemption(&actor, &form).await
            })
        })
        .collect();
    let (mut stored, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => stored += 1,
            Err(Ok(errors)) if errors.iter().any(|e| e.0 == "code") => refused += 1,
            Err(Err(AppError::Conflict(_))) => refused += 1,
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!((stored, refused), (1, 19));
    let pairs = vec![("beneficiary".to_string(), "Patient/racer".to_string())];
    let page = fhir.search(&Actor::system(), Some("Coverage"), &pairs, "").await.unwrap();
    assert_eq!(page.entries.iter().filter(|e| e.2 == "match").count(), 1, "one Coverage stored");
    assert_eq!(portal.exemptions_on("racer", today()).await.unwrap().len(), 1);
}
