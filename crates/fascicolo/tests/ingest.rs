//! Document publication under `/ingest/v1`: the official CDA2 examples published (and VPS
//! refused with exactly its two asserts), validation without storage, idempotency, replacement,
//! deletion, metadata, status, PDF with embedded CDA, the rendering and downloads, and bad input
//! (each refused with a clear error and nothing stored).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use fascicolo_app::{Actor, Who};
use serde_json::{json, Value};

const EXAMPLES: [&str; 9] = ["LAB", "LDO", "RAD", "RAP", "RSA", "PSS", "CERT_VACC", "SING_VACC", "VPS"];
const PATIENT_CFS: [&str; 3] = ["GTWGWY82B42G920M", "RSSMRA22A01A399Z", "PROVAX00X00X000Y"];

fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../cda/tests/data/{name}.xml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn producer(org: &str) -> Actor {
    Actor::new(Who::Client { client_id: format!("lis-{org}"), organization: Some(org.into()), platform: false })
}

struct Setup {
    app: TestApp,
    hospital: String,
    /// Patient ids by codice fiscale.
    patients: Vec<(String, String)>,
}

async fn setup() -> Setup {
    let app = spawn_app().await;
    for org in ["org-a", "org-b"] {
        let r = app.put(&format!("/Organization/{org}"), json!({"resourceType": "Organization", "id": org, "name": org})).await;
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
    }
    let mut patients = Vec::new();
    for cf in PATIENT_CFS {
        let id = app
            .create(json!({"resourceType": "Patient", "name": [{"family": "Test", "given": ["Giuseppe"]}],
            "identifier": [{"system": "http://hl7.it/sid/codiceFiscale", "value": cf}]}))
            .await;
        patients.push((cf.to_string(), id));
    }
    let hospital = token_for(&app.store, &producer("org-a")).await;
    Setup { app, hospital, patients }
}

struct Answer {
    status: u16,
    body: Value,
    bytes: Vec<u8>,
    content_type: String,
}

async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>, body: Option<(Vec<u8>, &str)>) -> Answer {
    let mut rb = app.client.request(method.parse().unwrap(), format!("{}{path}", app.root));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some((bytes, ct)) = body {
        rb = rb.header("content-type", ct).body(bytes);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = r.bytes().await.unwrap().to_vec();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, body, bytes, content_type }
}

async fn multipart(app: &TestApp, path: &str, token: &str, file: Vec<u8>, file_type: &str, metadata: Value) -> Answer {
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(file).file_name("doc").mime_str(file_type).unwrap())
        .part("requestBody", reqwest::multipart::Part::text(metadata.to_string()).mime_str("application/json").unwrap());
    let r = app.client.post(format!("{}{path}", app.root)).bearer_auth(token).multipart(form).send().await.unwrap();
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap().to_vec();
    Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), bytes, content_type: String::new() }
}

fn error_ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["severity"] == "error")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn docref_id(body: &Value) -> String {
    body["documentReference"].as_str().unwrap().trim_start_matches("DocumentReference/").to_string()
}

#[tokio::test]
async fn eight_official_examples_are_published_and_vps_is_refused_with_its_two_asserts() {
    let s = setup().await;
    let app = &s.app;
    for name in EXAMPLES {
        // several official examples share a ClinicalDocument/id: each gets its own identificativoDoc
        let meta = json!({"identificativoDoc": format!("esempio-{name}"), "tipologiaStruttura": "Ospedale", "assettoOrganizzativo": ["AD_PSC100"]});
        let r = multipart(app, "/ingest/v1/documents", &s.hospital, example(name), "application/xml", meta).await;
        if name == "VPS" {
            assert_eq!(r.status, 422, "{}", r.body);
            assert_eq!(error_ids(&r.body), ["ERRORE-46a", "ERRORE-56"], "{}", r.body);
            continue;
        }
        assert_eq!(r.status, 201, "{name}: {}", r.body);
        let id = docref_id(&r.body);
        // readable through the FHIR API, with its mapped resources
        let d = app.get(&format!("/DocumentReference/{id}")).await;
        assert_eq!(d.status, 200, "{name}");
        assert_eq!(d.body["custodian"]["reference"], "Organization/org-a");
        assert_eq!(d.body["context"]["practiceSetting"]["coding"][0]["code"], "AD_PSC100");
        for res in r.body["resources"].as_array().unwrap() {
            assert_eq!(app.get(&format!("/{}", res.as_str().unwrap())).await.status, 200, "{name}: {res}");
        }
        // and through the rendering
        let html = call(app, "GET", &format!("/documents/{id}"), Some(&app.token), None).await;
        assert_eq!(html.status, 200, "{name}");
        let html = String::from_utf8(html.bytes).unwrap();
        assert!(html.contains("<dt>Codice fiscale</dt>"), "{name}");
    }
    // nothing of VPS was stored: 8 documents
    assert_eq!(app.count("DocumentReference").await, 8);
    // the lab report's results are searchable by LOINC code, for charting
    let giuseppe = &s.patients[0].1;
    let obs = app.get(&format!("/Observation?patient={giuseppe}&code=http://loinc.org|14957-5")).await;
    assert_eq!(obs.body["entry"].as_array().unwrap().len(), 1, "{}", obs.body);
    assert_eq!(obs.body["entry"][0]["resource"]["valueQuantity"]["value"], 16.0);
    // vaccinations became Immunizations; discharge letters Encounters
    assert!(app.count("Immunization").await >= 2);
    assert!(app.count("Encounter").await >= 1);
}

#[tokio::test]
async fn raw_xml_with_default_metadata_is_idempotent_and_ids_are_not_reused() {
    let s = setup().await;
    let app = &s.app;
    let before = app.versions().await;
    // validate only: no patient lookup, nothing stored
    let v = call(app, "POST", "/ingest/v1/documents/validation", Some(&s.hospital), Some((example("LAB"), "application/xml"))).await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.body["status"], "validated");
    assert!(v.body["problems"].as_array().unwrap().iter().all(|p| p["severity"] == "warning"));
    let bad = call(app, "POST", "/ingest/v1/documents/validation", Some(&s.hospital), Some((example("VPS"), "application/xml"))).await;
    assert_eq!(bad.status, 422);
    assert_eq!(error_ids(&bad.body), ["ERRORE-46a", "ERRORE-56"]);
    assert_eq!(app.versions().await, before, "validation stores nothing");

    let first = call(app, "POST", "/ingest/v1/documents", Some(&s.hospital), Some((example("LAB"), "application/xml"))).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let after_first = app.versions().await;
    let audit_first = app.count("AuditEvent").await;
    let again = call(app, "POST", "/ingest/v1/documents", Some(&s.hospital), Some((example("LAB"), "application/xml"))).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["status"], "already-published");
    assert_eq!(again.body["documentReference"], first.body["documentReference"]);
    // nothing new but the access-log entry of the producer's look at its existing document
    // (the log is not a versioned resource: no version is added)
    assert_eq!(app.versions().await, after_first, "re-sending stores nothing new");
    assert_eq!(app.count("AuditEvent").await, audit_first + 1);
    // RAP carries the same ClinicalDocument/id with other content: refused, not overwritten
    let clash = call(app, "POST", "/ingest/v1/documents", Some(&s.hospital), Some((example("RAP"), "application/xml"))).await;
    assert_eq!(clash.status, 409, "{}", clash.body);
    assert_eq!(app.versions().await, after_first, "nothing stored but the second access-log entry");
    assert_eq!(app.count("AuditEvent").await, audit_first + 2);
    assert_eq!(app.count("DocumentReference").await, 1);
    // another organisation sending the very same bytes learns nothing about the document
    let org_b = token_for(&app.store, &producer("org-b")).await;
    let copy = call(app, "POST", "/ingest/v1/documents", Some(&org_b), Some((example("LAB"), "application/xml"))).await;
    assert_eq!(copy.status, 409, "{}", copy.body);
    assert!(
        copy.body.get("documentReference").is_none() && !copy.body.to_string().contains(first.body["documentReference"].as_str().unwrap())
    );
    // the status of each submission, for its producer only
    let wf = first.body["workflowInstanceId"].as_str().unwrap();
    let st = call(app, "GET", &format!("/ingest/v1/status/{wf}"), Some(&s.hospital), None).await;
    assert_eq!(st.status, 200);
    assert_eq!(st.body["operation"], "publication");
    assert_eq!(st.body["outcome"]["status"], "published");
    assert_eq!(call(app, "GET", &format!("/ingest/v1/status/{wf}"), Some(&org_b), None).await.status, 404);
    let failed = clash.body["workflowInstanceId"].as_str().unwrap();
    let st = call(app, "GET", &format!("/ingest/v1/status/{failed}"), Some(&s.hospital), None).await;
    assert_eq!(st.body["status"], "failed");
    assert_eq!(st.body["error"], "conflict");
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_nothing_is_stored() {
    let s = setup().await;
    let app = &s.app;
    let lab = String::from_utf8(example("LAB")).unwrap();
    let unknown_patient = lab.replace("GTWGWY82B42G920M", "BNCMRA80A01F205X");
    let no_cda_pdf = fascicolo_cda::pdf::text_pdf("Un referto senza CDA", &["testo".into()], None).unwrap();
    let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;">]><ClinicalDocument xmlns="urn:hl7-org:v3">&lol3;</ClinicalDocument>"#.to_vec();
    let xxe = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "http://127.0.0.1:9/steal">]><ClinicalDocument xmlns="urn:hl7-org:v3">&e;</ClinicalDocument>"#.to_vec();
    let citizen = token_for(
        &app.store,
        &Actor::new(Who::Citizen {
            cf: fascicolo_domain::CodiceFiscale::parse(PATIENT_CFS[0]).unwrap(),
            patient: Some(s.patients[0].1.clone()),
        }),
    )
    .await;
    let before = app.versions().await;
    // (what, body, media type, token, status, error or first problem id)
    type Case<'a> = (&'a str, Vec<u8>, &'a str, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed XML",
            b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><id></ClinicalDocument>".to_vec(),
            "application/xml",
            Some(&s.hospital),
            422,
            "not-well-formed",
        ),
        ("XML bomb", bomb, "application/xml", Some(&s.hospital), 422, "dtd"),
        ("external entity", xxe, "application/xml", Some(&s.hospital), 422, "dtd"),
        ("PDF without CDA", no_cda_pdf, "application/pdf", Some(&s.hospital), 422, "pdf"),
        ("not a PDF", b"%PDF-1.7 this is not really a pdf".to_vec(), "application/pdf", Some(&s.hospital), 422, "pdf"),
        ("unknown patient", unknown_patient.into_bytes(), "application/xml", Some(&s.hospital), 422, "patient-unknown"),
        ("not a CDA", b"<html/>".to_vec(), "application/xml", Some(&s.hospital), 422, "not-cda"),
        (
            "nested 100,000 deep",
            format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000)).into_bytes(),
            "application/xml",
            Some(&s.hospital),
            422,
            "too-deep",
        ),
        ("wrong media type", example("LAB"), "text/plain", Some(&s.hospital), 415, "unsupported"),
        ("empty body", Vec::new(), "application/xml", Some(&s.hospital), 400, "bad-request"),
        ("a citizen", example("LAB"), "application/xml", Some(&citizen), 403, "forbidden"),
        ("no token", example("LAB"), "application/xml", None, 401, "unauthorized"),
    ];
    for (what, body, ct, token, status, code) in cases {
        let r = call(app, "POST", "/ingest/v1/documents", token, Some((body, ct))).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a clear message");
        if status == 422 {
            assert_eq!(r.body["problems"][0]["id"], code, "{what}: {}", r.body);
        } else {
            assert_eq!(r.body["error"], code, "{what}: {}", r.body);
        }
    }
    // a producer publishing for another organisation
    let r =
        multipart(app, "/ingest/v1/documents", &s.hospital, example("LAB"), "application/xml", json!({"organizzazione": "org-b"})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    // ... or a document whose custodian is not its organisation (when the organisation has ids)
    let r = app
        .put(
            "/Organization/org-a",
            json!({"resourceType": "Organization", "id": "org-a", "name": "org-a",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.9.4.1.2", "value": "030913"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let before_custodian = app.versions().await;
    let r = call(app, "POST", "/ingest/v1/documents", Some(&s.hospital), Some((example("LAB"), "application/xml"))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("custodian"));
    assert_eq!(app.versions().await, before_custodian);
    // bad metadata: every problem listed
    let r = multipart(app, "/ingest/v1/documents", &s.hospital, example("RSA"), "application/xml",
        json!({"tipologiaStruttura": "Castello", "assettoOrganizzativo": "PSC1", "tipoDocumentoLivAlto": "LDO", "attiCliniciRegoleAccesso": ["P42"]})).await;
    assert_eq!(r.status, 422);
    assert_eq!(error_ids(&r.body), ["assettoOrganizzativo", "attiCliniciRegoleAccesso", "class-type", "tipologiaStruttura"]);
    // a 200 MB upload stops at the size limit
    let huge = vec![b' '; 200 * 1024 * 1024];
    let r = call(app, "POST", "/ingest/v1/documents", Some(&s.hospital), Some((huge, "application/xml"))).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["error"], "too-large");
    assert_eq!(app.versions().await, before + 1, "only the Organization update above was stored");
    assert_eq!(app.count("DocumentReference").await, 0);
}

#[tokio::test]
async fn replacement_supersedes_deletion_retires_and_metadata_hides() {
    let s = setup().await;
    let app = &s.app;
    let giuseppe = &s.patients[0].1;
    let lab = String::from_utf8(example("LAB")).unwrap();
    let first = call(app, "POST", "/ingest/v1/documents", Some(&s.hospital), Some((lab.clone().into_bytes(), "application/xml"))).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let old = docref_id(&first.body);
    // a new version: new document id, same set, a corrected value
    let v2 = lab
        .replacen(r#"extension="030702.TSTSMN63A01F205H.20220325112426.OQlvTq1J" assigningAuthorityName="Regione Lazio"/>"#,
            r#"extension="030702.TSTSMN63A01F205H.20220325112426.V2" assigningAuthorityName="Regione Lazio"/>"#, 1)
        .replace(r#"<versionNumber value="1"/>"#, r#"<versionNumber value="2"/>"#)
        .replace(r#"value="16.00" unit="mg/L""#, r#"value="18.00" unit="mg/L""#)
        .replacen("<componentOf>", r#"<relatedDocument typeCode="RPLC"><parentDocument><id root="2.16.840.1.113883.2.9.2.120.4.4" extension="030702.TSTSMN63A01F205H.20220325112426.OQlvTq1J"/></parentDocument></relatedDocument><componentOf>"#, 1);
    assert_ne!(v2, lab);
    let other = token_for(&app.store, &producer("org-b")).await;
    let r =
        call(app, "PUT", &format!("/ingest/v1/documents/{old}"), Some(&other), Some((v2.clone().into_bytes(), "application/xml"))).await;
    assert_eq!(r.status, 404, "another organisation cannot replace it: {}", r.body);
    let r = call(app, "PUT", &format!("/ingest/v1/documents/{old}"), Some(&s.hospital), Some((v2.into_bytes(), "application/xml"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["status"], "replaced");
    let new = docref_id(&r.body);
    assert_eq!(app.get(&format!("/DocumentReference/{old}")).await.body["status"], "superseded");
    let n = app.get(&format!("/DocumentReference/{new}")).await.body;
    assert_eq!(n["relatesTo"][0]["code"], "replaces");
    assert_eq!(n["relatesTo"][0]["target"]["reference"], format!("DocumentReference/{old}"));
    // the chart shows the corrected value only; the old version stays in history
    let obs = app.get(&format!("/Observation?patient={giuseppe}&code=http://loinc.org|14957-5")).await;
    let values: Vec<&Value> = obs.body["entry"].as_array().unwrap().iter().map(|e| &e["resource"]["valueQuantity"]["value"]).collect();
    assert_eq!(values, [&json!(18.0)]);
    assert_eq!(app.get(&format!("/DocumentReference/{old}/_history")).await.body["entry"].as_array().unwrap().len(), 2);
    // the current documents: one
    let current = app.get(&format!("/DocumentReference?patient={giuseppe}&status=current")).await;
    assert_eq!(current.body["entry"].as_array().unwrap().len(), 1);

    // metadata: hide from the patient (P98) — the citizen then sees neither the document nor its results
    let r = call(
        app,
        "PUT",
        &format!("/ingest/v1/documents/{new}/metadata"),
        Some(&s.hospital),
        Some((json!({"attiCliniciRegoleAccesso": ["P98"], "tipoAttivitaClinica": "ERP"}).to_string().into_bytes(), "application/json")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = app.get(&format!("/DocumentReference/{new}")).await.body;
    assert_eq!(d["context"]["event"][0]["coding"][0]["code"], "ERP");
    assert!(d["meta"]["security"].as_array().unwrap().iter().any(|c| c["code"] == "P98"));
    let citizen = token_for(
        &app.store,
        &Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(PATIENT_CFS[0]).unwrap(), patient: Some(giuseppe.clone()) }),
    )
    .await;
    let seen =
        call(app, "GET", &format!("/fhir/r4/Observation?patient={giuseppe}&code=http://loinc.org|14957-5"), Some(&citizen), None).await;
    assert_eq!(seen.body["entry"].as_array().map_or(0, Vec::len), 0, "{}", seen.body);
    assert_eq!(call(app, "GET", &format!("/documents/{new}"), Some(&citizen), None).await.status, 404);
    assert_eq!(call(app, "GET", &format!("/documents/{new}/original"), Some(&citizen), None).await.status, 404);
    // undo (P00): visible again
    let r = call(
        app,
        "PUT",
        &format!("/ingest/v1/documents/{new}/metadata"),
        Some(&s.hospital),
        Some((json!({"attiCliniciRegoleAccesso": ["P00"]}).to_string().into_bytes(), "application/json")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(call(app, "GET", &format!("/documents/{new}"), Some(&citizen), None).await.status, 200);

    // deletion: logical, audited, the results leave the chart
    let r = call(app, "DELETE", &format!("/ingest/v1/documents/{new}"), Some(&s.hospital), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.get(&format!("/DocumentReference/{new}")).await.status, 410);
    let obs = app.get(&format!("/Observation?patient={giuseppe}&code=http://loinc.org|14957-5")).await;
    assert_eq!(obs.body["entry"].as_array().map_or(0, Vec::len), 0);
    let audit = app.get(&format!("/AuditEvent?patient={giuseppe}&_count=100")).await;
    let deletes = audit.body["entry"].as_array().unwrap().iter().filter(|e| e["resource"]["action"] == "D").count();
    assert!(deletes >= 1, "{}", audit.body);
    assert_eq!(call(app, "DELETE", &format!("/ingest/v1/documents/{new}"), Some(&s.hospital), None).await.status, 404);
}

#[tokio::test]
async fn a_pdf_with_the_cda_embedded_is_published_and_kept_as_the_original() {
    let s = setup().await;
    let app = &s.app;
    let pdf =
        fascicolo_cda::pdf::text_pdf("Referto di laboratorio", &["Microalbumina 16 mg/L".into()], Some(("referto.xml", &example("LAB"))))
            .unwrap();
    let r = call(app, "POST", "/ingest/v1/documents", Some(&s.hospital), Some((pdf.clone(), "application/pdf"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = docref_id(&r.body);
    let d = app.get(&format!("/DocumentReference/{id}")).await.body;
    assert_eq!(d["content"][0]["attachment"]["contentType"], "application/pdf");
    assert_eq!(d["content"][0]["attachment"]["size"], pdf.len());
    let original = call(app, "GET", &format!("/documents/{id}/original"), Some(&app.token), None).await;
    assert_eq!(original.status, 200);
    assert_eq!(original.content_type, "application/pdf");
    assert_eq!(original.bytes, pdf, "the original PDF, byte for byte");
    assert_eq!(call(app, "GET", &format!("/documents/{id}/pdf"), Some(&app.token), None).await.bytes, pdf);
    // a bare XML document gets a generated PDF that carries its CDA2
    let rsa = call(app, "POST", "/ingest/v1/documents", Some(&s.hospital), Some((example("RSA"), "application/xml"))).await;
    assert_eq!(rsa.status, 201, "{}", rsa.body);
    let rid = docref_id(&rsa.body);
    let generated = call(app, "GET", &format!("/documents/{rid}/pdf"), Some(&app.token), None).await;
    assert_eq!(generated.status, 200);
    assert!(fascicolo_cda::pdf::is_pdf(&generated.bytes));
    assert_eq!(fascicolo_cda::pdf::extract_cda(&generated.bytes).unwrap(), example("RSA"));
    // no credentials, no document
    assert_eq!(call(app, "GET", &format!("/documents/{id}/original"), None, None).await.status, 401);
}

#[tokio::test]
async fn publication_notifies_the_citizen_in_the_same_transaction() {
    let s = setup().await;
    let app = &s.app;
    let r = call(app, "POST", "/ingest/v1/documents", Some(&s.hospital), Some((example("RSA"), "application/xml"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let claimed = app.store.outbox_claim(i64::MAX / 2, 1000, 100).await.unwrap();
    let kinds: Vec<&str> = claimed.iter().map(|c| c.message.kind.as_str()).collect();
    assert!(kinds.contains(&"notify.new-document"), "{kinds:?}");
    let note = claimed.iter().find(|c| c.message.kind == "notify.new-document").unwrap();
    assert!(!note.message.payload.contains("GTWGWY82B42G920M"), "no personal data in the payload");
    // the producer's write is on the access log
    let giuseppe = &s.patients[0].1;
    let audit = app.get(&format!("/AuditEvent?patient={giuseppe}")).await;
    assert!(audit.body["entry"].as_array().unwrap().iter().any(|e| e["resource"]["action"] == "C"), "{}", audit.body);
}

#[tokio::test]
async fn fhir_document_bundles_are_published_with_the_registry_patient() {
    let s = setup().await;
    let app = &s.app;
    let patients_before = app.count("Patient").await;
    let mut published = 0;
    for name in EXAMPLES {
        let bytes = std::fs::read(format!("{}/../cda/tests/data/fhir/{name}.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let meta = json!({"identificativoDoc": format!("fhir-{name}")});
        let r = multipart(app, "/ingest/v1/documents", &s.hospital, bytes, "application/fhir+json", meta).await;
        assert_eq!(r.status, 201, "{name}: {}", r.body);
        published += 1;
        let id = docref_id(&r.body);
        let d = app.get(&format!("/DocumentReference/{id}")).await.body;
        assert_eq!(d["content"][0]["attachment"]["contentType"], "application/fhir+json");
        let subject = d["subject"]["reference"].as_str().unwrap().to_string();
        assert!(s.patients.iter().any(|(_, p)| subject == format!("Patient/{p}")), "{name}: {subject}");
        // every mapped resource points at the registry patient, never at the Bundle's own
        for res in r.body["resources"].as_array().unwrap() {
            let v = app.get(&format!("/{}", res.as_str().unwrap())).await;
            assert_eq!(v.status, 200, "{name}: {res}");
            assert!(!v.body.to_string().contains("https://example/Patient/"), "{name}: {res} keeps a Bundle reference");
        }
    }
    assert_eq!(published, 9);
    assert_eq!(app.count("Patient").await, patients_before, "the Bundles' Patients do not enter the registry");
    let giuseppe = &s.patients[0].1;
    let obs = app.get(&format!("/Observation?patient={giuseppe}&_count=200")).await;
    assert!(!obs.body["entry"].as_array().unwrap().is_empty());
    // a Bundle without a Composition, or not JSON, is refused with its problems
    let bad = json!({"resourceType": "Bundle", "type": "document", "entry": [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient",
        "identifier": [{"system": "http://hl7.it/sid/codiceFiscale", "value": PATIENT_CFS[0]}]}}]});
    let r = call(
        app,
        "POST",
        "/ingest/v1/documents/validation",
        Some(&s.hospital),
        Some((bad.to_string().into_bytes(), "application/fhir+json")),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(error_ids(&r.body).contains(&"composition".to_string()), "{}", r.body);
    let r = call(app, "POST", "/ingest/v1/documents", Some(&s.hospital), Some((b"{not json".to_vec(), "application/fhir+json"))).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["problems"][0]["id"], "not-well-formed");
}

#[tokio::test]
async fn published_documents_obey_consent_and_hiding_everywhere() {
    use fascicolo_app::gate::ProRole;
    let app = spawn_app().await;
    let fhir = fascicolo_app::FhirService::new(std::sync::Arc::clone(&app.store));
    assert!(fascicolo_load::demo::seed(&fhir).await.unwrap());
    let hospital = token_for(
        &app.store,
        &Actor::new(Who::Client { client_id: "demo-hospital".into(), organization: Some("asst-fbf-sacco".into()), platform: false }),
    )
    .await;
    let giulia_cf = "RSSGLI85D52F205Q";
    let lab = String::from_utf8(example("LAB")).unwrap().replace("GTWGWY82B42G920M", giulia_cf);
    let visible = multipart(
        &app,
        "/ingest/v1/documents",
        &hospital,
        lab.clone().into_bytes(),
        "application/xml",
        json!({"identificativoDoc": "giulia-lab-1"}),
    )
    .await;
    assert_eq!(visible.status, 201, "{}", visible.body);
    let hidden_lab = lab.replace(r#"value="16.00" unit="mg/L""#, r#"value="77.00" unit="mg/L""#);
    let hidden = multipart(
        &app,
        "/ingest/v1/documents",
        &hospital,
        hidden_lab.into_bytes(),
        "application/xml",
        json!({"identificativoDoc": "giulia-lab-2", "attiCliniciRegoleAccesso": ["P99"]}),
    )
    .await;
    assert_eq!(hidden.status, 201, "{}", hidden.body);
    let (shown, secret) = (docref_id(&visible.body), docref_id(&hidden.body));

    let gp = token_for(
        &app.store,
        &Actor::new(Who::Professional { practitioner: "ferrari-paolo".into(), organization: None, role: ProRole::Gp }),
    )
    .await;
    let stranger = token_for(
        &app.store,
        &Actor::new(Who::Professional { practitioner: "colombo-elena".into(), organization: None, role: ProRole::Pediatrician }),
    )
    .await;
    let giulia = token_for(
        &app.store,
        &Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(giulia_cf).unwrap(), patient: Some("rossi-giulia".into()) }),
    )
    .await;

    // her GP (consent, care relation): the plain report, never the hidden one, nor its result
    for suffix in ["", "/original", "/pdf"] {
        assert_eq!(call(&app, "GET", &format!("/documents/{shown}{suffix}"), Some(&gp), None).await.status, 200, "{suffix}");
        assert_eq!(call(&app, "GET", &format!("/documents/{secret}{suffix}"), Some(&gp), None).await.status, 404, "{suffix}");
    }
    let values = |b: &Value| -> Vec<f64> {
        b["entry"].as_array().into_iter().flatten().filter_map(|e| e["resource"]["valueQuantity"]["value"].as_f64()).collect()
    };
    let obs = call(&app, "GET", "/fhir/r4/Observation?patient=rossi-giulia&code=http://loinc.org|14957-5", Some(&gp), None).await;
    assert_eq!(values(&obs.body), [16.0], "{}", obs.body);
    let docs = call(&app, "GET", "/fhir/r4/DocumentReference?patient=rossi-giulia", Some(&gp), None).await;
    assert!(!docs.body.to_string().contains(&secret), "the hidden document leaks into a search");
    // nor in counts, includes or $everything
    let secret_obs_value = |b: &Value| b.to_string().contains("77.0") || b.to_string().contains(&secret);
    let count = |b: &Value| b["total"].as_u64().unwrap_or(0);
    let all =
        call(&app, "GET", "/fhir/r4/Observation?patient=rossi-giulia&code=http://loinc.org|14957-5&_summary=count", Some(&gp), None).await;
    assert_eq!(count(&all.body), 1, "{}", all.body);
    let mine =
        call(&app, "GET", "/fhir/r4/Observation?patient=rossi-giulia&code=http://loinc.org|14957-5&_summary=count", Some(&giulia), None)
            .await;
    assert_eq!(count(&mine.body), 2, "the count differs only by what is hidden: {}", mine.body);
    let inc = call(&app, "GET", "/fhir/r4/DiagnosticReport?patient=rossi-giulia&_include=DiagnosticReport:result", Some(&gp), None).await;
    assert_eq!(inc.status, 200, "{}", inc.body);
    assert!(inc.body["entry"].as_array().is_some_and(|e| !e.is_empty()), "the plain report is there: {}", inc.body);
    assert!(!secret_obs_value(&inc.body), "the hidden report or its result leaks through _include: {}", inc.body);
    let rev = call(&app, "GET", "/fhir/r4/Observation?patient=rossi-giulia&_revinclude=DiagnosticReport:result", Some(&gp), None).await;
    assert!(!secret_obs_value(&rev.body), "leak through _revinclude");
    let everything = call(&app, "GET", "/fhir/r4/Patient/rossi-giulia/$everything", Some(&gp), None).await;
    assert_eq!(everything.status, 200);
    assert!(everything.body.to_string().contains(&shown) && !secret_obs_value(&everything.body), "$everything");
    // a clinician with no consent-backed relation: nothing at all
    for path in ["/fhir/r4/DocumentReference?patient=rossi-giulia", "/fhir/r4/Observation?patient=rossi-giulia&_summary=count"] {
        let r = call(&app, "GET", path, Some(&stranger), None).await;
        assert!(r.status == 403 || count(&r.body) == 0 && r.body["entry"].as_array().is_none_or(Vec::is_empty), "{path}: {}", r.body);
        assert!(!r.body.to_string().contains(&shown) && !r.body.to_string().contains(&secret));
    }
    // another producer: neither document, through no surface
    let other = token_for(
        &app.store,
        &Actor::new(Who::Client { client_id: "lis-other".into(), organization: Some("ats-milano".into()), platform: false }),
    )
    .await;
    for id in [&shown, &secret] {
        for suffix in ["", "/original", "/pdf"] {
            assert_eq!(call(&app, "GET", &format!("/documents/{id}{suffix}"), Some(&other), None).await.status, 404, "{suffix}");
        }
    }
    for id in [&shown, &secret] {
        let r = call(&app, "GET", &format!("/documents/{id}"), Some(&stranger), None).await;
        assert!(r.status == 403 || r.status == 404, "{}", r.status);
        assert!(!String::from_utf8_lossy(&r.bytes).contains("Giuseppe"), "no content leaks in the refusal");
    }
    // the citizen sees both of her documents and both results
    assert_eq!(call(&app, "GET", &format!("/documents/{secret}"), Some(&giulia), None).await.status, 200);
    let obs = call(&app, "GET", "/fhir/r4/Observation?patient=rossi-giulia&code=http://loinc.org|14957-5", Some(&giulia), None).await;
    let mut v = values(&obs.body);
    v.sort_by(f64::total_cmp);
    assert_eq!(v, [16.0, 77.0]);
}

/// Originals in S3 (or an S3-compatible service): run when `FASCICOLO_TEST_S3_ENDPOINT` names one
/// (CI starts an S3 emulator, PyPI `moto`, and sets the `AWS_*` variables); skipped otherwise.
#[tokio::test]
async fn originals_can_live_in_s3() {
    let Ok(endpoint) = std::env::var("FASCICOLO_TEST_S3_ENDPOINT") else {
        eprintln!("skipped: FASCICOLO_TEST_S3_ENDPOINT is not set");
        return;
    };
    let bucket = format!("fse-{}", uuid::Uuid::now_v7().simple());
    // create the bucket (the emulator takes unsigned requests)
    let r = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // credentials and endpoint come from the standard AWS_* variables, as in production (CI sets
    // AWS_ENDPOINT to the emulator, AWS_ALLOW_HTTP, and test credentials)
    let app = spawn_app_with(|c| c.ingest.blob_url = Some(format!("s3://{bucket}/originals"))).await;
    let org = app.put("/Organization/org-a", json!({"resourceType": "Organization", "id": "org-a", "name": "org-a"})).await;
    assert_eq!(org.status, 201);
    app.create(json!({"resourceType": "Patient", "identifier": [{"system": "http://hl7.it/sid/codiceFiscale", "value": PATIENT_CFS[0]}]}))
        .await;
    let hospital = token_for(&app.store, &producer("org-a")).await;
    let r = call(&app, "POST", "/ingest/v1/documents", Some(&hospital), Some((example("LAB"), "application/xml"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = docref_id(&r.body);
    let original = call(&app, "GET", &format!("/documents/{id}/original"), Some(&app.token), None).await;
    assert_eq!(original.bytes, example("LAB"));
    // the object is in the bucket, under its SHA-256
    let hash = fascicolo_blobs::sha256_hex(&example("LAB"));
    let listing = reqwest::get(format!("{endpoint}/{bucket}?list-type=2")).await.unwrap().text().await.unwrap();
    assert!(listing.contains(&format!("originals/sha256/{}/{}", &hash[..2], &hash[2..])), "{listing}");
}

/// Uploads held in memory at once are bounded: while one upload is being received, the next
/// waits its turn and, past the configured wait, is told to retry (503 with `Retry-After`)
/// instead of adding its body to the server's memory; once the first is answered, uploads go
/// through again. (24 uploads of 17 MB at once took the server from 166 MB to 1.2 GB resident.)
#[tokio::test]
async fn uploads_in_memory_at_once_are_bounded() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|c| {
        c.ingest.concurrent_uploads = 1;
        c.ingest.upload_wait_seconds = 1;
    })
    .await;
    let token = token_for(&app.store, &producer("org-a")).await;
    // an upload whose body is still arriving holds the only turn
    let doc = example("LAB");
    let addr = app.root.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /ingest/v1/documents/validation HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
        doc.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&doc[..100]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let r = app
        .client
        .post(format!("{}/ingest/v1/documents/validation", app.root))
        .bearer_auth(&token)
        .header("content-type", "application/xml")
        .body(doc.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "answered after the wait, not held");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "busy", "{body}");
    // the first upload finishes and is answered; then the next goes through
    slow.write_all(&doc[100..]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    use tokio::io::AsyncReadExt;
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = slow.read(&mut buf).await.unwrap();
        assert!(n > 0, "the first upload is answered");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    drop(slow);
    let v = call(&app, "POST", "/ingest/v1/documents/validation", Some(&token), Some((doc, "application/xml"))).await;
    assert_eq!(v.status, 200, "{}", v.body);
}
