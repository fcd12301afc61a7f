//! The celiac budget: the code shown at the counter, the merchant API (authorise, capture,
//! void, refund, idempotency keys, the remaining budget on every answer), its refusals, the
//! citizen's page, and no overspend when merchants spend at the same instant (SQLite, and
//! PostgreSQL when FASCICOLO_TEST_DATABASE_URL is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use fascicolo_app::celiac::{MERCHANT_CLIENT, MERCHANT_TYPE};
use fascicolo_app::portal::Portal;
use fascicolo_app::{Actor, AppError, FhirService, Who};
use serde_json::{json, Value};
use std::sync::Arc;

const GIULIA: &str = "RSSGLI85D52F205";

/// Registers a merchant (organisation + its API client) and returns the client's actor.
async fn merchant(fhir: &FhirService, id: &str, name: &str, channel: &str) -> Actor {
    let org = json!({"resourceType": "Organization", "id": id, "active": true, "name": name,
        "identifier": [{"system": MERCHANT_CLIENT, "value": format!("client-{id}")}],
        "type": [{"coding": [{"system": MERCHANT_TYPE.0, "code": MERCHANT_TYPE.1}, {"system": "urn:fascicolo:celiac-channel", "code": channel}]}]});
    fhir.update(&Actor::system(), "Organization", id, org.to_string().as_bytes(), None).await.unwrap();
    let mut a = Actor::new(Who::Client { client_id: format!("client-{id}"), organization: None, platform: false });
    a.scopes = Some(Vec::new());
    a
}

/// Gives a person the coeliac-disease exemption, as the ATS does.
async fn celiac_exemption(fhir: &FhirService, patient: &str) {
    let c = json!({"resourceType": "Coverage", "id": format!("{patient}-esenzione-ri0060"), "status": "active",
        "type": {"coding": [{"system": "urn:fascicolo:esenzione", "code": "RI0060", "display": "Celiachia"}]},
        "beneficiary": {"reference": format!("Patient/{patient}")}, "payor": [{"reference": "Organization/ats-milano"}],
        "period": {"start": "2020-01-01"}});
    fhir.update(&Actor::system(), "Coverage", &format!("{patient}-esenzione-ri0060"), c.to_string().as_bytes(), None).await.unwrap();
}

async fn call(app: &TestApp, token: &str, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = app.client.post(format!("{}{path}", app.root)).bearer_auth(token).json(&body);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn code_of(html: &str) -> String {
    html.split("id=\"code-text\">").nth(1).expect("a code on the page").split('<').next().unwrap().to_string()
}

#[tokio::test]
async fn a_purchase_at_the_counter_from_code_to_refund() {
    let app = spawn_app().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    record_fixtures(&fhir).await;
    let cookie = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf(GIULIA), "citizen").await);

    // no exemption, no budget (and no code)
    let (s, _, none) = page(&app, &cookie, "/celiachia").await;
    assert!(s == 200 && none.contains("RI0060") && !none.contains("id=\"celiac-budget\""), "{none}");
    let csrf = csrf_of(&page(&app, &cookie, "/esenzioni").await.2);
    assert_eq!(post(&app, &cookie, "/celiachia/codice", &[("csrf", &csrf)]).await.0, 403);

    // with it: 90,00 euro a month for a woman of 41 (DM 10/8/2018)
    celiac_exemption(&fhir, "rossi-giulia").await;
    let (s, _, first) = page(&app, &cookie, "/celiachia").await;
    assert_eq!(s, 200, "{first}");
    let card = first.split("id=\"celiac-budget\"").nth(1).unwrap().split("</section>").next().unwrap();
    assert!(card.contains("90,00\u{a0}€") && card.contains("disponibili"), "{card}");
    assert!(first.contains("Nessun acquisto questo mese"));
    assert_eq!(post(&app, &cookie, "/celiachia/codice", &[("csrf", "forged")]).await.0, 403);
    let (s, _, shown) = post(&app, &cookie, "/celiachia/codice", &[("csrf", &csrf)]).await;
    assert!(s == 200 && shown.contains("<svg") && shown.contains("Vale fino alle"), "a QR code: {shown}");
    let code = code_of(&shown);

    let pharmacy = merchant(&fhir, "farmacia-test", "Farmacia Test", "pharmacy").await;
    let market = merchant(&fhir, "super-test", "Supermercato Test", "supermarket").await;
    let (pt, mt) = (token_for(&app.store, &pharmacy).await, token_for(&app.store, &market).await);
    let auth = "/celiachia/v1/authorizations";

    // refusals: no key, a bad amount, a bad code, a body that is not JSON, a client that is not a merchant
    assert_eq!(call(&app, &pt, auth, None, json!({"code": code, "amount": 1000})).await.0, 400);
    assert_eq!(call(&app, &pt, auth, Some("k0"), json!({"code": code, "amount": 12.5})).await.0, 400);
    assert_eq!(call(&app, &pt, auth, Some("k0"), json!({"code": code, "amount": -5})).await.0, 400);
    assert_eq!(call(&app, &pt, auth, Some("k0"), json!({"code": "CEL1-forged", "amount": 1000})).await.0, 403);
    let producer = token_for(
        &app.store,
        &Actor::new(Who::Client { client_id: "demo-hospital".into(), organization: Some("asst-fbf-sacco".into()), platform: false }),
    )
    .await;
    assert_eq!(call(&app, &producer, auth, Some("k0"), json!({"code": code, "amount": 1000})).await.0, 403);
    let raw = app
        .client
        .post(format!("{}{auth}", app.root))
        .bearer_auth(&pt)
        .header("idempotency-key", "k0")
        .body("amount=5")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    // a merchant token opens nothing in the FHIR store
    assert_eq!(app.get_as("/Patient/rossi-giulia", &pt).await.status, 403);

    // authorise 50,00: 40,00 remain; the same key again answers the same; with another amount, 422
    let (s, a1) = call(&app, &pt, auth, Some("k1"), json!({"code": code, "amount": 5000})).await;
    assert_eq!(s, 201, "{a1}");
    assert_eq!((a1["budget"]["remaining_cents"].as_i64(), a1["purchase"]["status"].as_str()), (Some(4000), Some("authorized")));
    let (s, again) = call(&app, &pt, auth, Some("k1"), json!({"code": code, "amount": 5000})).await;
    assert_eq!((s, again["replayed"].as_bool(), again["budget"]["remaining_cents"].as_i64()), (200, Some(true), Some(4000)));
    assert_eq!(call(&app, &pt, auth, Some("k1"), json!({"code": code, "amount": 4000})).await.0, 422);
    // over the remaining budget: 409, nothing held
    let (s, over) = call(&app, &mt, auth, Some("m1"), json!({"code": code, "amount": 4001})).await;
    assert!(s == 409 && over["message"].as_str().unwrap().contains("4000 cents remaining"), "{over}");

    // capture 48,00 of the 50,00: 2,00 back
    let id = a1["purchase"]["id"].as_str().unwrap().to_string();
    let (s, cap) = call(&app, &pt, &format!("{auth}/{id}/capture"), None, json!({"amount": 4800})).await;
    assert_eq!((s, cap["budget"]["remaining_cents"].as_i64(), cap["purchase"]["status"].as_str()), (200, Some(4200), Some("captured")));
    assert_eq!(call(&app, &mt, &format!("{auth}/{id}/capture"), None, json!({})).await.0, 404, "not the supermarket's");
    assert_eq!(call(&app, &pt, &format!("{auth}/{id}/void"), None, json!({})).await.0, 409, "captured: refund it instead");
    // refund 10,00 (once, whatever the retries), then more than is left is refused
    let (s, r1) = call(&app, &pt, &format!("{auth}/{id}/refunds"), Some("r1"), json!({"amount": 1000})).await;
    assert_eq!((s, r1["budget"]["remaining_cents"].as_i64()), (201, Some(5200)));
    let (s, r1b) = call(&app, &pt, &format!("{auth}/{id}/refunds"), Some("r1"), json!({"amount": 1000})).await;
    assert_eq!((s, r1b["budget"]["remaining_cents"].as_i64()), (200, Some(5200)), "a retried refund counts once");
    assert_eq!(call(&app, &pt, &format!("{auth}/{id}/refunds"), Some("r2"), json!({"amount": 3801})).await.0, 400);

    // the supermarket authorises 30,00 and voids it: all back
    let (s, a2) = call(&app, &mt, auth, Some("m2"), json!({"code": code, "amount": 3000})).await;
    assert_eq!((s, a2["budget"]["remaining_cents"].as_i64()), (201, Some(2200)));
    let id2 = a2["purchase"]["id"].as_str().unwrap();
    let (s, v) = call(&app, &mt, &format!("{auth}/{id2}/void"), None, json!({})).await;
    assert_eq!((s, v["budget"]["remaining_cents"].as_i64(), v["purchase"]["status"].as_str()), (200, Some(5200), Some("voided")));

    // the citizen's page: what remains, and the month's purchases by merchant
    let (_, _, after) = page(&app, &cookie, "/celiachia").await;
    assert!(after.contains("52,00\u{a0}€"), "remaining");
    let spends = after.split("id=\"spends\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert!(
        spends.contains("Farmacia Test")
            && spends.contains("48,00")
            && spends.contains("rimborsati")
            && spends.contains("Pagato, rimborsato in parte"),
        "{spends}"
    );
    assert!(spends.contains("Supermercato Test") && spends.contains("Annullato"), "{spends}");
    // the ledger in the FHIR API, as the citizen
    let citizen = Actor::new(Who::Citizen {
        cf: fascicolo_domain::CodiceFiscale::parse(&fascicolo_load::demo::cf(GIULIA)).unwrap(),
        patient: Some("rossi-giulia".into()),
    });
    let ct = token_for(&app.store, &citizen).await;
    assert_eq!(app.get_as("/ChargeItem", &ct).await.body["entry"].as_array().map(Vec::len), Some(2));
    // a clinician without a care relation sees nothing of the ledger: not in a search, not in a count
    let marino = token_for(
        &app.store,
        &Actor::new(Who::Professional { practitioner: "marino-andrea".into(), organization: None, role: fascicolo_app::gate::ProRole::Gp }),
    )
    .await;
    for path in
        ["/ChargeItem?patient=rossi-giulia", "/Account?subject=Patient/rossi-giulia", "/ChargeItem?patient=rossi-giulia&_summary=count"]
    {
        let r = app.get_as(path, &marino).await;
        assert!(r.status != 200 || (r.body["total"].as_u64().unwrap_or(0) == 0 && r.body["entry"].is_null()), "{path}: {}", r.body);
    }
    // the demo till: the registered merchants, a charge with the same code, a wrong code
    let (s, _, till) = page(&app, &cookie, "/esercente").await;
    assert!(s == 200 && till.contains("Farmacia San Luca") && till.contains("Supermercato Navigli"), "{till}");
    let (s, _, charged) =
        post(&app, &cookie, "/esercente", &[("merchant", "demo-farmacia-san-luca"), ("code", &code), ("amount", "5,00")]).await;
    assert!(s == 200 && charged.contains("Acquisto addebitato") && charged.contains("47,00\u{a0}€"), "{charged}");
    let (s, _, wrong) =
        post(&app, &cookie, "/esercente", &[("merchant", "demo-farmacia-san-luca"), ("code", "CEL1-nope"), ("amount", "5")]).await;
    assert!(s == 403 && wrong.contains("non è valido o è scaduto"), "{wrong}");
    let (s, _, _) =
        post(&app, &cookie, "/esercente", &[("merchant", "demo-farmacia-san-luca"), ("code", &code), ("amount", "cinque")]).await;
    assert_eq!(s, 422);
    let (s, _, not_merchant) = post(&app, &cookie, "/esercente", &[("merchant", "demo-hospital"), ("code", &code), ("amount", "5")]).await;
    assert!(s == 403 && not_merchant.contains("non è convenzionato"), "not a registered merchant, and it says so: {not_merchant}");
    assert_eq!(app.get_as("/ChargeItem", &ct).await.body["entry"].as_array().map(Vec::len), Some(3), "one more purchase, no more");

    // another citizen sees none of it
    let marco = format!("fascicolo_session={}", sign_in(&app, &fascicolo_load::demo::cf("BNCMRC07A10F205"), "citizen").await);
    let (_, _, his) = page(&app, &marco, "/celiachia").await;
    assert!(!his.contains("Farmacia Test") && his.contains("RI0060"), "{his}");
}

/// Giulia's budget is 90,00 euro; 16 merchants ask 5 times each for 3,00 euro at the same
/// instant (240,00 euro in all): exactly 30 are authorised, and nothing is left or overspent.
#[tokio::test]
async fn merchants_spending_at_the_same_instant_never_overspend() {
    let store = fresh_store().await;
    let fhir = FhirService::new(Arc::clone(&store));
    let cf = fascicolo_load::demo::cf("RCCPRV85D52F205");
    let put = |v: Value| {
        let fhir = fhir.clone();
        async move {
            let (rt, id) = (v["resourceType"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string());
            fhir.update(&Actor::system(), &rt, &id, v.to_string().as_bytes(), None).await.unwrap();
        }
    };
    put(json!({"resourceType": "Organization", "id": "ats-milano", "active": true, "name": "ATS"})).await;
    put(json!({"resourceType": "Patient", "id": "racer", "active": true, "birthDate": "1985-04-12", "gender": "female",
        "identifier": [{"system": fascicolo_domain::systems::CF_SYSTEM, "value": cf}], "name": [{"family": "Prova", "given": ["Persona"]}]}))
    .await;
    celiac_exemption(&fhir, "racer").await;
    let person = Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(&cf).unwrap(), patient: Some("racer".into()) });
    let portal = Portal::new(fhir.clone());
    let (code, _) = portal.celiac_code(&person).await.unwrap();
    let mut merchants = Vec::new();
    for i in 0..16 {
        merchants.push(merchant(&fhir, &format!("m{i}"), &format!("Merchant {i}"), ["pharmacy", "shop", "supermarket"][i % 3]).await);
    }
    let tasks: Vec<_> = merchants
        .iter()
        .flat_map(|m| (0..5).map(move |k| (m.clone(), k)))
        .map(|(m, k)| {
            let (portal, code) = (portal.clone(), code.clone());
            tokio::spawn(async move { portal.celiac_authorize(&m, &code, 300, &format!("k{k}")).await })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => {
                assert!(o.budget.remaining_cents >= 0);
                ok += 1
            }
            Err(AppError::Conflict(m)) if m.contains("insufficient budget") || m.contains("try again") => refused += 1,
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(ok + refused, 80);
    let view = portal.celiac_view(&person).await.unwrap();
    assert_eq!(view.budget.budget_cents, 9000);
    let held: i64 = view.spends.iter().map(|s| s.amount_cents).sum();
    assert_eq!((ok, held, view.budget.held_cents), (30, 9000, 9000), "exactly the budget, no more");
    assert_eq!(view.budget.remaining_cents, 0);
}
