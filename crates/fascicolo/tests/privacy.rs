//! The authorization matrix: every kind of actor against the demo registry's records, through
//! the FHIR API (read, search, `_total`, `_summary=count`, history, `_include`/`_revinclude`,
//! `_has`, `$everything`, writes), with consent and without, with hidden (P99, P97, P98) and
//! art. 6 documents, with break-glass. Expected visibility is written as a table; any extra item
//! is a leak, any missing one a bug. Runs on SQLite, and on PostgreSQL when configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use fascicolo_app::gate::{ProRole, Scope};
use fascicolo_app::{Actor, FhirService, Who};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

const GIULIA_CF: &str = "RSSGLI85D52F205Q";

fn citizen(cf: &str, patient: &str, acting_for: &str) -> Actor {
    let mut a = Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(cf).unwrap(), patient: Some(patient.into()) });
    a.acting_for = Some(acting_for.into());
    a
}

fn pro(practitioner: &str, org: Option<&str>, role: ProRole) -> Actor {
    Actor::new(Who::Professional { practitioner: practitioner.into(), organization: org.map(String::from), role })
}

fn producer() -> Actor {
    Actor::new(Who::Client { client_id: "demo-hospital".into(), organization: Some("asst-fbf-sacco".into()), platform: false })
}

struct Env {
    app: TestApp,
}

impl Env {
    async fn new() -> Env {
        let app = spawn_app().await;
        let fhir = FhirService::new(Arc::clone(&app.store));
        assert!(fascicolo_load::demo::seed(&fhir).await.unwrap());
        record_fixtures(&fhir).await;
        // one more hidden item: P98, hidden from the patient (until a clinician explains it)
        let p98 = json!({"resourceType": "DocumentReference", "id": "doc-giulia-p98", "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11526-1", "display": "Referto istologico"}]},
            "subject": {"reference": "Patient/rossi-giulia"}, "description": "Referto istologico",
            "meta": {"security": [{"system": "urn:fascicolo:oscuramento", "code": "P98"}]},
            "content": [{"attachment": {"contentType": "application/pdf"}}]});
        fhir.update(&Actor::system(), "DocumentReference", "doc-giulia-p98", p98.to_string().as_bytes(), None).await.unwrap();
        Env { app }
    }
    async fn token(&self, a: &Actor) -> String {
        token_for(&self.app.store, a).await
    }
    async fn as_(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {token}");
        self.app.send(method, path, body, &[("authorization", auth.as_str())]).await
    }
    async fn audit_count(&self) -> u64 {
        self.app.store.access_count(&fascicolo_store::AccessQuery::default()).await.unwrap()
    }
}

fn id_set(b: &Value) -> BTreeSet<String> {
    ids(b).into_iter().collect()
}

/// The ids of a Bundle's entries that pass `keep`.
fn entry_ids(b: &Value, keep: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    b["entry"].as_array().into_iter().flatten().filter(|e| keep(e)).map(|e| e["resource"]["id"].as_str().unwrap().to_string()).collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const ALL_GIULIA_DOCS: [&str; 6] =
    ["doc-giulia-lab", "doc-giulia-psy", "doc-giulia-hiv", "doc-giulia-cardio", "doc-giulia-summary", "doc-giulia-p98"];

/// What each actor sees of the DocumentReferences in Giulia's record (None: refused outright).
/// Written out by hand from the rules in DOMAIN.md, not computed by the code under test.
#[allow(clippy::type_complexity)]
fn doc_table() -> Vec<(&'static str, Actor, Option<Vec<&'static str>>)> {
    vec![
        // the citizen: everything but what is hidden from her (P98)
        (
            "citizen",
            citizen(GIULIA_CF, "rossi-giulia", "rossi-giulia"),
            Some(vec!["doc-giulia-lab", "doc-giulia-psy", "doc-giulia-hiv", "doc-giulia-cardio", "doc-giulia-summary"]),
        ),
        // her GP, with consent: not P99, not art. 6; P98 is not hidden from clinicians
        (
            "gp-consent",
            pro("ferrari-paolo", None, ProRole::Gp),
            Some(vec!["doc-giulia-lab", "doc-giulia-cardio", "doc-giulia-summary", "doc-giulia-p98"]),
        ),
        // the specialist with a booked appointment: the same
        (
            "specialist-appointment",
            pro("ricci-marco", Some("asst-fbf-sacco"), ProRole::Specialist),
            Some(vec!["doc-giulia-lab", "doc-giulia-cardio", "doc-giulia-summary", "doc-giulia-p98"]),
        ),
        // a pediatrician with consent but no care relation: nothing
        ("no-relation", pro("colombo-elena", None, ProRole::Pediatrician), Some(vec![])),
        // a nurse of the hospital, no relation to Giulia: nothing
        ("nurse-no-relation", pro("galli-sara", Some("asst-fbf-sacco"), ProRole::Nurse), Some(vec![])),
        // operators: no clinical documents at all
        ("cup-operator", pro("moretti-luigi", Some("asst-fbf-sacco"), ProRole::CupOperator), None),
        ("asst-admin", pro("conti-chiara", Some("asst-fbf-sacco"), ProRole::AsstAdmin), None),
        // the producer sees only its own organisation's publications (none in her record yet)
        ("producer", producer(), Some(vec![])),
        // the platform: everything
        ("platform", platform_actor(), Some(ALL_GIULIA_DOCS.to_vec())),
        // another citizen
        ("stranger", citizen(&fascicolo_load::demo::cf("VRDNNA40B60F205"), "verdi-anna", "verdi-anna"), None),
    ]
}

#[tokio::test]
async fn authorization_matrix_documents() {
    let env = Env::new().await;
    let q = "patient=rossi-giulia";
    for (name, actor, expected) in doc_table() {
        let t = env.token(&actor).await;
        let search = env.as_(&t, "GET", &format!("/DocumentReference?{q}&_total=accurate&_count=100"), None).await;
        let count = env.as_(&t, "GET", &format!("/DocumentReference?{q}&_summary=count"), None).await;
        let every = env.as_(&t, "GET", "/Patient/rossi-giulia/$everything?_count=500", None).await;
        let rev = env.as_(&t, "GET", "/Patient?_id=rossi-giulia&_revinclude=DocumentReference:subject", None).await;
        match &expected {
            None => {
                assert_eq!(search.status, 403, "{name}: search must be refused: {}", search.body);
                assert_eq!(count.status, 403, "{name}: count must be refused");
                // refused, or (operators) administrative items only
                let docs_in_everything = every.body["entry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| {
                        let t = e["resource"]["resourceType"].as_str().unwrap_or_default();
                        // (the CUP desk books from the prescription: it reads ServiceRequests)
                        let cup_reads = name == "cup-operator" && t == "ServiceRequest";
                        !cup_reads
                            && !matches!(t, "Patient" | "Appointment" | "Organization" | "Practitioner" | "Coverage" | "RelatedPerson")
                    })
                    .count();
                assert!(matches!(every.status, 403 | 404) || docs_in_everything == 0, "{name}: $everything: {}", every.body);
            }
            Some(docs) => {
                let want = set(docs);
                assert_eq!(search.status, 200, "{name}: {}", search.body);
                assert_eq!(id_set(&search.body), want, "{name}: search");
                assert_eq!(search.body["total"], json!(want.len()), "{name}: _total");
                assert_eq!(count.body["total"], json!(want.len()), "{name}: _summary=count");
                if every.status == 200 {
                    let got = entry_ids(&every.body, |e| e["resource"]["resourceType"] == "DocumentReference");
                    assert_eq!(got, want, "{name}: $everything");
                } else {
                    assert!(want.is_empty(), "{name}: $everything refused but documents expected");
                }
                assert_eq!(entry_ids(&rev.body, |e| e["search"]["mode"] == "include"), want, "{name}: _revinclude");
            }
        }
        // read, vread and history of every document: visible ones 200, the others not found
        // (never "forbidden": that would tell the item exists)
        for doc in ALL_GIULIA_DOCS {
            let visible = expected.as_ref().is_some_and(|d| d.contains(&doc));
            let r = env.as_(&t, "GET", &format!("/DocumentReference/{doc}"), None).await;
            let h = env.as_(&t, "GET", &format!("/DocumentReference/{doc}/_history"), None).await;
            let v = env.as_(&t, "GET", &format!("/DocumentReference/{doc}/_history/1"), None).await;
            if visible {
                assert_eq!((r.status, h.status, v.status), (200, 200, 200), "{name} must see {doc}");
                // hiding labels never reach anyone but the citizen
                let text = r.body.to_string();
                if name != "citizen" && name != "platform" {
                    assert!(!text.contains("urn:fascicolo:visibility") && !text.contains("urn:fascicolo:oscuramento"), "{name}: {text}");
                }
            } else {
                assert_eq!((r.status, h.status, v.status), (404, 404, 404), "{name} must not see {doc}");
                let missing = env.as_(&t, "GET", "/DocumentReference/no-such-document", None).await;
                assert_eq!(
                    r.body["issue"][0]["diagnostics"].as_str().map(|s| s.replace(doc, "X")),
                    missing.body["issue"][0]["diagnostics"].as_str().map(|s| s.replace("no-such-document", "X")),
                    "{name}: a hidden item must look exactly like a missing one"
                );
            }
        }
        // _has and plain search cannot detect a hidden item by its content
        let has = env
            .as_(&t, "GET", "/Patient?_id=rossi-giulia&_has:DocumentReference:subject:description=Referto%20di%20consulenza", None)
            .await;
        let by_text = env.as_(&t, "GET", &format!("/DocumentReference?{q}&description=Test"), None).await;
        let sees = |d: &str| expected.as_ref().is_some_and(|x| x.contains(&d));
        // operators, producers and strangers may not reach into the record with `_has` at all
        let has_allowed = expected.is_some() && name != "producer";
        assert_eq!(has.status, if has_allowed { 200 } else { 403 }, "{name}: _has: {}", has.body);
        if has_allowed {
            assert_eq!(ids(&has.body).len(), usize::from(sees("doc-giulia-psy")), "{name}: _has on a hidden document");
        }
        // a plain (not hidden) clinical document is not detectable by an operator either
        let plain = env
            .as_(&t, "GET", "/Patient?_id=rossi-giulia&_has:DocumentReference:subject:description=Referto%20di%20laboratorio", None)
            .await;
        assert_eq!(plain.status == 200 && !ids(&plain.body).is_empty(), sees("doc-giulia-lab"), "{name}: _has on a plain document");
        assert_eq!(by_text.status, if expected.is_some() { 200 } else { 403 }, "{name}: search by content");
        if by_text.status == 200 {
            assert_eq!(ids(&by_text.body).len(), usize::from(sees("doc-giulia-hiv")), "{name}: search by content of an art. 6 document");
        }
    }
    // professionals find a patient by codice fiscale: the GP does, a clinician without a
    // relation gets the same empty answer as for a codice fiscale nobody has
    let by_cf = |cf: &str| format!("/Patient?identifier=http://hl7.it/sid/codiceFiscale|{cf}");
    let gp = env.token(&pro("ferrari-paolo", None, ProRole::Gp)).await;
    assert_eq!(ids(&env.as_(&gp, "GET", &by_cf(GIULIA_CF), None).await.body), vec!["rossi-giulia"]);
    let nurse = env.token(&pro("galli-sara", Some("asst-fbf-sacco"), ProRole::Nurse)).await;
    let unrelated = env.as_(&nurse, "GET", &by_cf(GIULIA_CF), None).await;
    let nobody = env.as_(&nurse, "GET", &by_cf("RSSMRA80A01H501U"), None).await;
    assert_eq!((unrelated.status, unrelated.body["total"].clone()), (200, json!(0)));
    assert_eq!((nobody.status, nobody.body["total"].clone()), (200, json!(0)));
    let cup = env.token(&pro("moretti-luigi", Some("asst-fbf-sacco"), ProRole::CupOperator)).await;
    assert_eq!(
        ids(&env.as_(&cup, "GET", &by_cf(GIULIA_CF), None).await.body),
        vec!["rossi-giulia"],
        "the booking centre finds the patient"
    );
    // anonymous: nothing at all, with a clear 401
    let r = env.app.send("GET", "/DocumentReference?patient=rossi-giulia", None, &[("authorization", "")]).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.get("www-authenticate").is_some());
}

#[tokio::test]
async fn family_delegation_and_minors() {
    let env = Env::new().await;
    // Giulia acting for her son Luca (9): his vaccination yes, the P97 item no
    let t = env.token(&citizen(GIULIA_CF, "rossi-giulia", "bianchi-luca")).await;
    let docs = env.as_(&t, "GET", "/DocumentReference?_count=50", None).await;
    assert_eq!(docs.status, 200);
    assert!(ids(&docs.body).is_empty(), "the P97 item leaked to the parent: {}", docs.body);
    assert_eq!(env.as_(&t, "GET", "/DocumentReference/doc-luca-consultorio", None).await.status, 404);
    assert_eq!(ids(&env.as_(&t, "GET", "/Immunization", None).await.body), vec!["imm-luca-flu"]);
    // his pediatrician (care relation, consent given by the mother) sees the P97 item
    let ped = env.token(&pro("colombo-elena", None, ProRole::Pediatrician)).await;
    assert_eq!(ids(&env.as_(&ped, "GET", "/DocumentReference?patient=bianchi-luca", None).await.body), vec!["doc-luca-consultorio"]);
    // Marco is 19: parental access has ended, with a clear message
    let t = env.token(&citizen(GIULIA_CF, "rossi-giulia", "bianchi-marco")).await;
    let r = env.as_(&t, "GET", "/Patient/bianchi-marco", None).await;
    assert_eq!(r.status, 403);
    assert!(r.body["issue"][0]["diagnostics"].as_str().unwrap().contains("18"));
    assert_eq!(env.as_(&t, "GET", "/Immunization?patient=bianchi-marco", None).await.status, 403);
    // Giulia as Anna's delegate: documents yes (in scope), the care team no (out of scope)
    let t = env.token(&citizen(GIULIA_CF, "rossi-giulia", "verdi-anna")).await;
    assert_eq!(ids(&env.as_(&t, "GET", "/DocumentReference", None).await.body), vec!["doc-anna-ldo"]);
    assert_eq!(env.as_(&t, "GET", "/CareTeam?patient=verdi-anna", None).await.status, 403);
    // a delegate only reads
    let obs = observation("verdi-anna", "2345-7", 99.0, "2026-11-01");
    assert_eq!(env.as_(&t, "POST", "/Observation", Some(obs)).await.status, 403);
    // Anna revokes: immediate effect
    let anna = env.token(&citizen(&fascicolo_load::demo::cf("VRDNNA40B60F205"), "verdi-anna", "verdi-anna")).await;
    let rv = env.as_(&anna, "POST", "/RelatedPerson/rossi-giulia-for-anna/$revoke", Some(json!({"resourceType": "Parameters"}))).await;
    assert_eq!(rv.status, 200, "{}", rv.body);
    let r = env.as_(&t, "GET", "/DocumentReference", None).await;
    assert_eq!(r.status, 403);
    assert!(r.body["issue"][0]["diagnostics"].as_str().unwrap().contains("not active"));
    // Anna grants a new, scoped delegation; limits and bad input are refused clearly
    let grant = |cf: &str, until: &str| {
        json!({"resourceType": "Parameters", "parameter": [{"name": "cf", "valueString": cf}, {"name": "given", "valueString": "Marco"},
            {"name": "family", "valueString": "Bianchi"}, {"name": "scope", "valueCode": "Immunization"}, {"name": "until", "valueDateTime": until}]})
    };
    let bad = env.as_(&anna, "POST", "/Patient/verdi-anna/$delegate", Some(grant("NOTACF", "2020-01-01"))).await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["issue"].as_array().unwrap().len(), 2, "every problem is listed: {}", bad.body);
    let ok = env
        .as_(&anna, "POST", "/Patient/verdi-anna/$delegate", Some(grant(&fascicolo_load::demo::cf("BNCMRC07A10F205"), "2030-01-01")))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let marco = env.token(&citizen(&fascicolo_load::demo::cf("BNCMRC07A10F205"), "bianchi-marco", "verdi-anna")).await;
    assert_eq!(env.as_(&marco, "GET", "/DocumentReference", None).await.status, 403, "out of the delegation's scope");
    assert_eq!(env.as_(&marco, "GET", "/Immunization", None).await.status, 200);
    // a minor cannot be a delegate (the birth date is in the codice fiscale)
    let minor = env
        .as_(&anna, "POST", "/Patient/verdi-anna/$delegate", Some(grant(&fascicolo_load::demo::cf("BNCLCU16P03F205"), "2030-01-01")))
        .await;
    assert_eq!(minor.status, 422);
    assert!(minor.body.to_string().contains("adult"));
    // nobody but Anna may grant on her record
    assert_eq!(
        env.as_(&t, "POST", "/Patient/verdi-anna/$delegate", Some(grant(&fascicolo_load::demo::cf("BNCMRC07A10F205"), "2030-01-01")))
            .await
            .status,
        403
    );
    // at most N active delegations (3 by default)
    for cf in [&fascicolo_load::demo::cf("FRRPLA70A01F205"), &fascicolo_load::demo::cf("RCCMRC68L22F205")] {
        assert_eq!(env.as_(&anna, "POST", "/Patient/verdi-anna/$delegate", Some(grant(cf, "2030-01-01"))).await.status, 200);
    }
    assert_eq!(
        env.as_(&anna, "POST", "/Patient/verdi-anna/$delegate", Some(grant(&fascicolo_load::demo::cf("GLLSRA90S70F205"), "2030-01-01")))
            .await
            .status,
        409
    );
}

#[tokio::test]
async fn consent_hiding_art6_and_break_glass() {
    let env = Env::new().await;
    let giulia = env.token(&citizen(GIULIA_CF, "rossi-giulia", "rossi-giulia")).await;
    let gp = env.token(&pro("ferrari-paolo", None, ProRole::Gp)).await;
    let docs = |b: &Value| id_set(b);
    let gp_docs = || async { docs(&env.as_(&gp, "GET", "/DocumentReference?patient=rossi-giulia", None).await.body) };
    assert!(gp_docs().await.contains("doc-giulia-lab"));
    // hiding the lab report hides it and its results from the GP at once
    let hide = |code: &str| json!({"resourceType": "Parameters", "parameter": [{"name": "code", "valueCode": code}]});
    let r = env.as_(&giulia, "POST", "/DocumentReference/doc-giulia-lab/$hide", Some(hide("P99"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!gp_docs().await.contains("doc-giulia-lab"));
    let obs = env.as_(&gp, "GET", "/Observation?patient=rossi-giulia", None).await;
    assert_eq!(ids(&obs.body), vec!["obs-giulia-glucose-0"], "the result of the hidden report leaked");
    assert_eq!(env.as_(&gp, "GET", "/Observation/obs-giulia-glucose-1", None).await.status, 404);
    // nor through an _include from a document he may see
    let comp = json!({"resourceType": "Composition", "status": "final", "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]},
        "subject": {"reference": "Patient/rossi-giulia"}, "date": "2026-11-01", "title": "Sintesi", "author": [{"reference": "Practitioner/ferrari-paolo"}],
        "section": [{"title": "Referti", "entry": [{"reference": "DocumentReference/doc-giulia-lab"}, {"reference": "DocumentReference/doc-giulia-cardio"}]}]});
    let comp_id = env.app.create(comp).await;
    let inc_url = format!("/Composition?_id={comp_id}&patient=rossi-giulia&_include=Composition:entry");
    let included = |b: &Value| entry_ids(b, |e| e["search"]["mode"] == "include");
    assert_eq!(
        included(&env.as_(&gp, "GET", &inc_url, None).await.body),
        set(&["doc-giulia-cardio"]),
        "the hidden report came in through _include"
    );
    assert_eq!(included(&env.as_(&giulia, "GET", &inc_url, None).await.body), set(&["doc-giulia-lab", "doc-giulia-cardio"]));
    // the GP cannot undo it, nor apply hiding
    assert_eq!(env.as_(&gp, "POST", "/DocumentReference/doc-giulia-lab/$hide", Some(hide("P00"))).await.status, 404);
    assert_eq!(env.as_(&gp, "POST", "/DocumentReference/doc-giulia-cardio/$hide", Some(hide("P99"))).await.status, 403);
    // the citizen still sees it, and undoes the hiding (P00)
    assert_eq!(env.as_(&giulia, "GET", "/DocumentReference/doc-giulia-lab", None).await.status, 200);
    assert_eq!(env.as_(&giulia, "POST", "/DocumentReference/doc-giulia-lab/$hide", Some(hide("P00"))).await.status, 200);
    assert!(gp_docs().await.contains("doc-giulia-lab"));
    assert_eq!(env.as_(&gp, "GET", "/Observation/obs-giulia-glucose-1", None).await.status, 200);
    // the citizen may not lift P98 (she cannot even see it) nor set it
    assert_eq!(env.as_(&giulia, "POST", "/DocumentReference/doc-giulia-p98/$hide", Some(hide("P00"))).await.status, 404);
    assert_eq!(env.as_(&giulia, "POST", "/DocumentReference/doc-giulia-cardio/$hide", Some(hide("P98"))).await.status, 403);
    assert_eq!(env.as_(&giulia, "POST", "/DocumentReference/doc-giulia-cardio/$hide", Some(hide("P42"))).await.status, 400);
    // hiding from parents is a minor's choice on his own record: an adult is told why not, and
    // nothing changes; the minor himself may
    let before = env.as_(&giulia, "GET", "/DocumentReference/doc-giulia-cardio", None).await.body;
    let r = env.as_(&giulia, "POST", "/DocumentReference/doc-giulia-cardio/$hide", Some(hide("P97"))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.to_string().contains("minor's own record"), "{}", r.body);
    assert_eq!(env.as_(&giulia, "GET", "/DocumentReference/doc-giulia-cardio", None).await.body, before);
    let luca_cf = fascicolo_load::demo::child().cf;
    let luca = env.token(&citizen(&luca_cf, "bianchi-luca", "bianchi-luca")).await;
    let r = env.as_(&luca, "POST", "/Immunization/imm-luca-flu/$hide", Some(hide("P97"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.to_string().contains("P97"), "{}", r.body);
    // art. 6: released by the citizen, then visible to her GP
    let rel = json!({"resourceType": "Parameters", "parameter": [{"name": "released", "valueBoolean": true}]});
    assert_eq!(env.as_(&gp, "POST", "/DocumentReference/doc-giulia-hiv/$art6-release", Some(rel.clone())).await.status, 404);
    assert_eq!(env.as_(&giulia, "POST", "/DocumentReference/doc-giulia-hiv/$art6-release", Some(rel)).await.status, 200);
    assert!(gp_docs().await.contains("doc-giulia-hiv"));
    // consent revoked: the GP sees nothing but what he produced himself
    let consent = |given: bool| json!({"resourceType": "Parameters", "parameter": [{"name": "given", "valueBoolean": given}, {"name": "channel", "valueCode": "portal"}]});
    assert_eq!(env.as_(&gp, "POST", "/Patient/rossi-giulia/$consent", Some(consent(true))).await.status, 403);
    assert_eq!(env.as_(&giulia, "POST", "/Patient/rossi-giulia/$consent", Some(consent(false))).await.status, 200);
    let st = env.as_(&giulia, "GET", "/Patient/rossi-giulia/$consent", None).await;
    assert_eq!(st.body["parameter"][0]["valueBoolean"], false);
    assert!(gp_docs().await.is_empty());
    assert_eq!(env.as_(&gp, "GET", "/Patient/rossi-giulia", None).await.status, 404);
    let note = json!({"resourceType": "DocumentReference", "status": "current", "type": {"text": "Nota del medico"},
        "subject": {"reference": "Patient/rossi-giulia"}, "content": [{"attachment": {"contentType": "text/plain", "data": "b2s="}}]});
    let mine = env.as_(&gp, "POST", "/DocumentReference", Some(note)).await;
    assert_eq!(mine.status, 201, "a GP writes in his patient's record without consent (feeding needs none): {}", mine.body);
    let mine_id = mine.body["id"].as_str().unwrap().to_string();
    assert_eq!(gp_docs().await, set(&[&mine_id]), "without consent, only his own work");
    let counted = env.as_(&gp, "GET", "/DocumentReference?patient=rossi-giulia&_summary=count", None).await;
    assert_eq!(counted.body["total"], 1, "counts see only his own work too");
    let everything = env.as_(&gp, "GET", "/Patient/rossi-giulia/$everything", None).await;
    assert_eq!(ids(&everything.body), vec![mine_id.clone()], "$everything without consent: only his own work");
    assert_eq!(env.as_(&giulia, "POST", "/Patient/rossi-giulia/$consent", Some(consent(true))).await.status, 200);
    assert!(gp_docs().await.contains("doc-giulia-summary"));
    // a new information-notice version asks again: the consent to version 1 is not in force
    let v2 = FhirService::with_policy(Arc::clone(&env.app.store), fascicolo_app::Policy { notice_version: 2, ..Default::default() });
    let gp_actor = pro("ferrari-paolo", None, ProRole::Gp);
    let page = v2.search(&gp_actor, Some("DocumentReference"), &[("patient".into(), "rossi-giulia".into())], "").await.unwrap();
    assert_eq!(page.entries.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), vec![format!("/DocumentReference/{mine_id}")]);
    // break-glass by a clinician without relation: reason required, hidden items never shown
    let ped = env.token(&pro("colombo-elena", None, ProRole::Pediatrician)).await;
    let bg = |reason: &str| json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]});
    assert_eq!(env.as_(&ped, "POST", "/Patient/rossi-giulia/$break-glass", Some(bg("x"))).await.status, 400);
    let cup = env.token(&pro("moretti-luigi", Some("asst-fbf-sacco"), ProRole::CupOperator)).await;
    assert_eq!(env.as_(&cup, "POST", "/Patient/rossi-giulia/$break-glass", Some(bg("paziente incosciente"))).await.status, 403);
    assert!(docs(&env.as_(&ped, "GET", "/DocumentReference?patient=rossi-giulia", None).await.body).is_empty());
    let before = env.audit_count().await;
    let open = env.as_(&ped, "POST", "/Patient/rossi-giulia/$break-glass", Some(bg("paziente incosciente in pronto soccorso"))).await;
    assert_eq!(open.status, 200, "{}", open.body);
    let summary = &open.body["parameter"][1]["resource"]["entry"];
    assert_eq!(summary.as_array().unwrap().len(), 1);
    assert_eq!(summary[0]["resource"]["id"], "doc-giulia-summary");
    assert_eq!(env.audit_count().await, before + 1);
    let seen = docs(&env.as_(&ped, "GET", "/DocumentReference?patient=rossi-giulia", None).await.body);
    assert!(seen.contains("doc-giulia-lab") && seen.contains("doc-giulia-hiv"), "{seen:?}");
    assert!(!seen.contains("doc-giulia-psy"), "break-glass never shows hidden documents");
    // the citizen sees the emergency accesses flagged in her access log
    let log = env.as_(&giulia, "GET", "/AuditEvent?subtype=urn:fascicolo:access|emergency&_count=100", None).await;
    assert_eq!(log.status, 200);
    assert!(!ids(&log.body).is_empty());
    for e in log.body["entry"].as_array().unwrap() {
        assert_eq!(e["resource"]["agent"][0]["who"]["reference"], "Practitioner/colombo-elena");
        assert_eq!(e["resource"]["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
    }
    let opened = env.as_(&giulia, "GET", "/AuditEvent?subtype=urn:fascicolo:access|break-glass", None).await;
    assert_eq!(ids(&opened.body).len(), 1);
    assert_eq!(opened.body["entry"][0]["resource"]["purposeOfEvent"][0]["text"], "paziente incosciente in pronto soccorso");
    // and the clinician cannot read the access log
    assert_eq!(env.as_(&gp, "GET", "/AuditEvent?patient=rossi-giulia", None).await.status, 403);
    // the emergency notification left through the outbox, with no personal data
    let msgs = env.app.store.outbox_claim(i64::MAX / 2, 1000, 1000).await.unwrap();
    let emergency: Vec<_> = msgs.iter().filter(|m| m.message.payload.contains("\"emergency\":true")).collect();
    assert!(!emergency.is_empty());
    for m in &msgs {
        assert!(!m.message.payload.contains("Rossi") && !m.message.payload.contains(GIULIA_CF), "{}", m.message.payload);
    }
}

#[tokio::test]
async fn writes_by_role() {
    let env = Env::new().await;
    let obs = || observation("rossi-giulia", "29463-7", 61.5, "2026-11-20");
    #[rustfmt::skip]
    let table: Vec<(&str, Actor, u16)> = vec![
        ("citizen (Taccuino)", citizen(GIULIA_CF, "rossi-giulia", "rossi-giulia"), 201),
        ("gp with care relation", pro("ferrari-paolo", None, ProRole::Gp), 201),
        ("clinician without relation", pro("colombo-elena", None, ProRole::Pediatrician), 403),
        ("cup operator", pro("moretti-luigi", Some("asst-fbf-sacco"), ProRole::CupOperator), 403),
        ("producer", producer(), 201),
        ("platform", platform_actor(), 201),
        ("stranger", citizen(&fascicolo_load::demo::cf("VRDNNA40B60F205"), "verdi-anna", "verdi-anna"), 403),
    ];
    for (name, actor, status) in table {
        let t = env.token(&actor).await;
        let r = env.as_(&t, "POST", "/Observation", Some(obs())).await;
        assert_eq!(r.status, status, "{name}: {}", r.body);
        if status == 201 {
            // what each one wrote is theirs: the producer sees it (and nothing else)
            let id = r.body["id"].as_str().unwrap();
            assert_eq!(env.as_(&t, "GET", &format!("/Observation/{id}"), None).await.status, 200, "{name}");
        }
    }
    // only who produced a document may change it
    let gp = env.token(&pro("ferrari-paolo", None, ProRole::Gp)).await;
    let mut doc = env.as_(&gp, "GET", "/DocumentReference/doc-giulia-cardio", None).await.body;
    doc["description"] = json!("changed");
    assert_eq!(env.as_(&gp, "PUT", "/DocumentReference/doc-giulia-cardio", Some(doc.clone())).await.status, 403);
    let ricci = env.token(&pro("ricci-marco", Some("asst-fbf-sacco"), ProRole::Specialist)).await;
    assert_eq!(env.as_(&ricci, "PUT", "/DocumentReference/doc-giulia-cardio", Some(doc)).await.status, 200);
    // nobody writes the access log or consent directly
    let ev = json!({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": true}], "source": {"observer": {"display": "x"}}, "entity": [{"what": {"reference": "Patient/rossi-giulia"}}]});
    for a in [pro("ferrari-paolo", None, ProRole::Gp), citizen(GIULIA_CF, "rossi-giulia", "rossi-giulia"), producer(), platform_actor()] {
        let t = env.token(&a).await;
        assert_eq!(env.as_(&t, "POST", "/AuditEvent", Some(ev.clone())).await.status, 403);
    }
    // a citizen cannot hide a document by rewriting its labels
    let giulia = env.token(&citizen(GIULIA_CF, "rossi-giulia", "rossi-giulia")).await;
    let mut note = observation("rossi-giulia", "8867-4", 70.0, "2026-11-21");
    note["meta"] = json!({"security": [{"system": "urn:fascicolo:visibility", "code": "not-patient"}]});
    let r = env.as_(&giulia, "POST", "/Observation", Some(note)).await;
    assert_eq!(r.status, 201);
    assert_eq!(env.as_(&giulia, "GET", &format!("/Observation/{}", r.body["id"].as_str().unwrap()), None).await.status, 200);
}

#[tokio::test]
async fn every_resource_type_is_gated() {
    let env = Env::new().await;
    let model = fascicolo_fhir::model::model();
    let own = env.token(&citizen(GIULIA_CF, "rossi-giulia", "rossi-giulia")).await;
    let gp = env.token(&pro("ferrari-paolo", None, ProRole::Gp)).await;
    let cup = env.token(&pro("moretti-luigi", Some("asst-fbf-sacco"), ProRole::CupOperator)).await;
    let mut scoped = citizen(GIULIA_CF, "rossi-giulia", "rossi-giulia");
    scoped.scopes = Some(vec![Scope::parse("patient/Observation.rs").unwrap()]);
    let scoped = env.token(&scoped).await;
    let cup_types = ["Patient", "Appointment", "AppointmentResponse", "ServiceRequest", "Coverage"];
    let mut checked = 0;
    for t in model.resource_types() {
        if !model.is_concrete_resource(t) {
            continue;
        }
        let comp = model.patient_compartment_params(t);
        let path = if t == "Patient" {
            "/Patient?_id=rossi-giulia".to_string()
        } else if let Some(p) = comp.first() {
            format!("/{t}?{p}=Patient/rossi-giulia")
        } else {
            format!("/{t}")
        };
        let anon = env.app.send("GET", &path, None, &[("authorization", "")]).await;
        assert_eq!(anon.status, 401, "{t}: anonymous");
        let shared = t != "Patient" && comp.is_empty();
        let (own_s, gp_s, cup_s, sc_s) = (
            env.as_(&own, "GET", &path, None).await.status,
            env.as_(&gp, "GET", &path, None).await.status,
            env.as_(&cup, "GET", &path, None).await.status,
            env.as_(&scoped, "GET", &path, None).await.status,
        );
        let private = t == "AuditEvent" || t == "Consent";
        assert_eq!(own_s, 200, "{t}: citizen on her own record");
        assert_eq!(gp_s, if private && !shared { 403 } else { 200 }, "{t}: GP");
        assert_eq!(cup_s, if shared || cup_types.contains(&t) { 200 } else { 403 }, "{t}: CUP operator");
        assert_eq!(sc_s, if t == "Observation" { 200 } else { 403 }, "{t}: token scoped to patient/Observation.rs");
        // history across records: the citizen's own only; never a clinician's
        let hist = format!("/{t}/_history");
        assert_eq!(env.as_(&own, "GET", &hist, None).await.status, 200, "{t}: citizen's own history");
        assert_eq!(env.as_(&gp, "GET", &hist, None).await.status, 403, "{t}: GP history across records");
        // an unknown id is the same answer for everyone; no write without credentials
        assert_eq!(env.as_(&gp, "GET", &format!("/{t}/no-such-id"), None).await.status, 404, "{t}");
        let w = env.app.send("POST", &format!("/{t}"), Some(json!({"resourceType": t})), &[("authorization", "")]).await;
        assert_eq!(w.status, 401, "{t}: anonymous write");
        checked += 1;
    }
    assert!(checked > 140, "{checked} types checked");
}

#[tokio::test]
async fn audit_trail_is_complete_and_transactional() {
    let env = Env::new().await;
    let gp = env.token(&pro("ferrari-paolo", None, ProRole::Gp)).await;
    let giulia = env.token(&citizen(GIULIA_CF, "rossi-giulia", "rossi-giulia")).await;
    let mother_for_luca = env.token(&citizen(GIULIA_CF, "rossi-giulia", "bianchi-luca")).await;
    // each access by a non-patient: exactly one AuditEvent; the patient's own: none
    let accesses: Vec<(&str, &str, &str, Option<Value>, u64)> = vec![
        (gp.as_str(), "GET", "/Patient/rossi-giulia", None, 1),
        (gp.as_str(), "GET", "/DocumentReference?patient=rossi-giulia", None, 1),
        (gp.as_str(), "GET", "/Observation?patient=rossi-giulia&_include=Observation:subject", None, 1),
        (gp.as_str(), "GET", "/Patient/rossi-giulia/$everything", None, 1),
        (gp.as_str(), "GET", "/DocumentReference/doc-giulia-lab/_history", None, 1),
        (gp.as_str(), "POST", "/Observation", Some(observation("rossi-giulia", "2345-7", 88.0, "2026-11-22")), 1),
        (giulia.as_str(), "GET", "/DocumentReference", None, 0),
        (giulia.as_str(), "GET", "/Patient/rossi-giulia/$everything", None, 0),
        (mother_for_luca.as_str(), "GET", "/Immunization", None, 1),
        (mother_for_luca.as_str(), "GET", "/Patient/bianchi-luca/$consent", None, 1),
        (giulia.as_str(), "GET", "/Patient/rossi-giulia/$consent", None, 0),
    ];
    for (t, m, path, body, n) in accesses {
        let before = env.audit_count().await;
        let r = env.as_(t, m, path, body).await;
        assert!(r.status < 300, "{path}: {}", r.body);
        assert_eq!(env.audit_count().await, before + n, "{m} {path}");
    }
    // what the GP did is in Giulia's log, with who, role, when and what
    let log = env.as_(&giulia, "GET", "/AuditEvent?agent=Practitioner/ferrari-paolo&_count=100", None).await;
    assert_eq!(ids(&log.body).len(), 6);
    let read = log.body["entry"].as_array().unwrap().iter().find(|e| e["resource"]["subtype"][0]["code"] == "read").unwrap();
    assert_eq!(read["resource"]["agent"][0]["type"]["coding"][0]["code"], "gp");
    assert_eq!(read["resource"]["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    assert!(read["resource"]["entity"].as_array().unwrap().iter().any(|e| e["what"]["reference"] == "Patient/rossi-giulia"));
    // an entry of Giulia's log, by its id: hers to read; not the GP's (the log is the
    // patient's), not another citizen's, and not reachable by searching another record
    let entry_id = read["resource"]["id"].as_str().unwrap().to_string();
    assert_eq!(env.as_(&giulia, "GET", &format!("/AuditEvent/{entry_id}"), None).await.status, 200);
    let anna = env.token(&citizen(&fascicolo_load::demo::cf("VRDNNA40B60F205"), "verdi-anna", "verdi-anna")).await;
    for (who, t) in [("gp", gp.as_str()), ("anna", anna.as_str())] {
        let r = env.as_(t, "GET", &format!("/AuditEvent/{entry_id}"), None).await;
        assert!(r.status == 403 || r.status == 404, "{who} reads Giulia's log entry: {}", r.status);
        assert!(!r.body.to_string().contains("ferrari-paolo"), "{who}: nothing of the entry in the error");
        let v = env.as_(t, "GET", &format!("/AuditEvent/{entry_id}/_history/1"), None).await;
        assert!(v.status == 403 || v.status == 404, "{who} vreads Giulia's log entry: {}", v.status);
    }
    let gp_search = env.as_(&gp, "GET", "/AuditEvent?patient=rossi-giulia", None).await;
    assert_eq!(gp_search.status, 403, "the GP does not search her log: {}", gp_search.body);
    let gp_count = env.as_(&gp, "GET", "/AuditEvent?patient=rossi-giulia&_summary=count", None).await;
    assert_eq!(gp_count.status, 403, "nor count it");
    let cross = env.as_(&anna, "GET", &format!("/AuditEvent?_id={entry_id}"), None).await;
    assert_eq!(cross.status, 200, "{}", cross.body);
    assert_eq!(
        (cross.body["total"].as_u64(), cross.body["entry"].as_array().map(Vec::len)),
        (Some(0), None),
        "Giulia's entry is not in Anna's log"
    );
    // the mother's action for her son is in his log, marked as on his behalf
    let luca_log = env.as_(&mother_for_luca, "GET", "/AuditEvent", None).await;
    assert!(luca_log.body["entry"].as_array().unwrap().iter().any(|e| e["resource"]["subtype"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["code"] == "on-behalf")));
    // a failed transaction leaves neither the change nor its audit
    let before = (env.audit_count().await, env.app.versions().await);
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation("rossi-giulia", "2345-7", 90.0, "2026-11-23"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}}, "request": {"method": "POST", "url": "Observation"}}]});
    let r = env.as_(&gp, "POST", "", Some(tx)).await;
    assert!(r.status >= 400);
    assert_eq!((env.audit_count().await, env.app.versions().await), before);
    // a record whose Patient was deleted keeps its log: reading its history is logged under it
    assert_eq!(env.app.send("DELETE", "/Patient/bianchi-marco", None, &[]).await.status, 204);
    let before = env.audit_count().await;
    assert_eq!(env.app.get("/Patient/bianchi-marco/_history").await.status, 200);
    assert_eq!(env.audit_count().await, before + 1);
}

#[tokio::test]
async fn bad_credentials_are_refused() {
    let env = Env::new().await;
    for h in ["Bearer fat_forged", "Bearer ", "Basic dXNlcjpwYXNz", "fat_without_scheme"] {
        let r = env.app.send("GET", "/Patient/rossi-giulia", None, &[("authorization", h)]).await;
        assert_eq!(r.status, 401, "{h}");
        assert!(r.body["issue"][0]["diagnostics"].as_str().is_some());
    }
    // an expired token
    let tokens = fascicolo_app::auth::Tokens::new(Arc::clone(&env.app.store));
    let expired = tokens.issue(&platform_actor(), "tests", -1).await.unwrap().access_token;
    assert_eq!(env.as_(&expired, "GET", "/Patient/rossi-giulia", None).await.status, 401);
    // revoked (at the server that answers: at once)
    let t = tokens.issue(&platform_actor(), "tests", 600).await.unwrap().access_token;
    assert_eq!(env.as_(&t, "GET", "/Patient/rossi-giulia", None).await.status, 200);
    let r = env.app.client.post(format!("{}/oauth/revoke", env.app.root)).form(&[("token", t.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(env.as_(&t, "GET", "/Patient/rossi-giulia", None).await.status, 401);
    // revoked by another server: refused here once the short per-server cache has expired
    let t = tokens.issue(&platform_actor(), "tests", 600).await.unwrap().access_token;
    assert_eq!(env.as_(&t, "GET", "/Patient/rossi-giulia", None).await.status, 200);
    tokens.revoke(&t).await.unwrap();
    let ms = u64::try_from(fascicolo_app::auth::TOKEN_CACHE_MS).unwrap() + 200;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    assert_eq!(env.as_(&t, "GET", "/Patient/rossi-giulia", None).await.status, 401);
}
