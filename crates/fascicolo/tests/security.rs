//! What an attacker found from outside, each as a class, with the request that reproduced it:
//! hostile PDFs (deep nesting, self-listing name trees; decompression bombs in `pdf_bomb.rs`) must not stop the
//! server; a read-only token must not change privacy settings (the scope matrix of every
//! operation); a stored original is reachable only through the document that published it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pdf_gen;

use common::*;
use fascicolo_app::gate::{Scope, OPERATION_SCOPES};
use fascicolo_app::{Actor, Who};
use pdf_gen::{pages, pdf_file};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LAB_CF: &str = "GTWGWY82B42G920M";

fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../cda/tests/data/{name}.xml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn producer() -> Actor {
    Actor::new(Who::Client { client_id: "lis-org-a".into(), organization: Some("org-a".into()), platform: false })
}

fn citizen(cf: &str, patient: &str) -> Actor {
    Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(cf).unwrap(), patient: Some(patient.into()) })
}

fn with_scopes(mut a: Actor, scopes: &str) -> Actor {
    a.scopes = Some(scopes.split_whitespace().map(|s| Scope::parse(s).unwrap()).collect());
    a
}

async fn still_serving(app: &TestApp) {
    let t = Instant::now();
    let r = app.client.get(format!("{}/healthz", app.root)).timeout(Duration::from_secs(5)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "the server must stay responsive");
}

#[tokio::test]
async fn hostile_pdfs_are_refused_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let hospital = token_for(&app.store, &producer()).await;
    // 1. nesting deep enough to overflow a thread's stack (2,000 was enough to abort the process)
    for depth in [2_000usize, 200_000] {
        let catalog = [b"<< /Type /Catalog /Pages 2 0 R /X ".to_vec(), vec![b'['; depth], vec![b']'; depth], b" >>".to_vec()].concat();
        let pdf = pdf_file(&[catalog, pages()]);
        for path in ["/ingest/v1/documents/validation", "/ingest/v1/documents"] {
            let t = Instant::now();
            let (status, body, _) = app.raw("POST", path, Some(&hospital), Some((pdf.clone(), "application/pdf"))).await;
            assert_eq!(status, 422, "depth {depth} {path}: {body}");
            assert!(body.to_string().contains("PDF"), "{body}");
            assert!(t.elapsed() < Duration::from_secs(20));
            still_serving(&app).await;
        }
        // the same nesting inside a dictionary
        let catalog =
            [b"<< /Type /Catalog /Pages 2 0 R /X ".to_vec(), b"<< /A ".repeat(depth / 4), b">> ".repeat(depth / 4), b">>".to_vec()]
                .concat();
        let (status, body, _) = app
            .raw("POST", "/ingest/v1/documents/validation", Some(&hospital), Some((pdf_file(&[catalog, pages()]), "application/pdf")))
            .await;
        assert_eq!(status, 422, "{body}");
        still_serving(&app).await;
    }
    // 2. an embedded-files name tree that lists itself four times (4^17 nodes to walk before)
    let catalog = b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles 3 0 R >> >>".to_vec();
    let tree = b"<< /Kids [3 0 R 3 0 R 3 0 R 3 0 R] >>".to_vec();
    let pdf = pdf_file(&[catalog, pages(), tree]);
    assert!(pdf.len() < 600);
    let t = Instant::now();
    let (status, body, _) = app.raw("POST", "/ingest/v1/documents/validation", Some(&hospital), Some((pdf, "application/pdf"))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("no embedded CDA2"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(5), "a self-listing tree is walked once: {:?}", t.elapsed());
    // and a well-formed PDF with its CDA2 still publishes
    let good = fascicolo_cda::pdf::text_pdf("Referto", &["testo".into()], Some(("cda.xml", &example("LAB")))).unwrap();
    let (status, body, _) = app.raw("POST", "/ingest/v1/documents/validation", Some(&hospital), Some((good, "application/pdf"))).await;
    assert_ne!(status, 422, "{body}");
    assert!(!body.to_string().contains("\"pdf\""), "{body}");
}

/// Giulia (a citizen) with her own record, and a published lab report in another citizen's.
struct World {
    app: TestApp,
    giulia: String,
    lab_patient: String,
    lab_doc: String,
}

async fn world() -> World {
    let app = spawn_app().await;
    let r = app.put("/Organization/org-a", json!({"resourceType": "Organization", "id": "org-a", "name": "org-a"})).await;
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    let giulia = app.create(patient("Rossi", "RSSGLI85D52F205Q")).await;
    let lab_patient = app.create(patient("Test", LAB_CF)).await;
    let hospital = token_for(&app.store, &producer()).await;
    let (status, body, _) = app.raw("POST", "/ingest/v1/documents", Some(&hospital), Some((example("LAB"), "application/xml"))).await;
    assert_eq!(status, 201, "{body}");
    let lab_doc = body["documentReference"].as_str().unwrap().trim_start_matches("DocumentReference/").to_string();
    World { app, giulia, lab_patient, lab_doc }
}

fn sha256_of(docref: &Value) -> String {
    docref["identifier"].as_array().unwrap().iter().find(|i| i["system"] == "urn:fascicolo:sha256").unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_stored_original_is_reached_only_through_the_document_that_published_it() {
    let w = world().await;
    let app = &w.app;
    let victim = app.get(&format!("/DocumentReference/{}", w.lab_doc)).await.body;
    let hash = sha256_of(&victim);
    let pointer = |subject: &str| {
        json!({"resourceType": "DocumentReference", "status": "current",
            "identifier": [{"system": "urn:fascicolo:sha256", "value": hash}],
            "subject": {"reference": format!("Patient/{subject}")},
            "content": [{"attachment": {"contentType": "application/xml"}}]})
    };
    // the citizen, in her own record; the platform client, anywhere: neither may point at the file
    let giulia = token_for(&app.store, &citizen("RSSGLI85D52F205Q", &w.giulia)).await;
    let before = app.count("DocumentReference").await;
    for token in [giulia.as_str(), app.token.as_str()] {
        let auth = format!("Bearer {token}");
        let r = app.send("POST", "/DocumentReference", Some(pointer(&w.giulia)), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert!(r.body.to_string().contains("urn:fascicolo:sha256"), "{}", r.body);
        // nor by update-as-create with an id of their choosing, nor in a transaction
        let mut p = pointer(&w.giulia);
        p["id"] = json!("pointer-1");
        let r = app.send("PUT", "/DocumentReference/pointer-1", Some(p.clone()), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 422, "{}", r.body);
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": p, "request": {"method": "PUT", "url": "DocumentReference/pointer-1"}}]});
        let r = app.send("POST", "", Some(tx), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 422, "{}", r.body);
    }
    assert_eq!(app.count("DocumentReference").await, before, "nothing was stored");
    // an existing resource may not be re-pointed either, nor the document moved to another record
    let other = app
        .create(json!({"resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": format!("Patient/{}", w.giulia)}, "content": [{"attachment": {"contentType": "text/plain"}}]}))
        .await;
    let mut repointed = pointer(&w.giulia);
    repointed["id"] = json!(other);
    assert_eq!(app.put(&format!("/DocumentReference/{other}"), repointed).await.status, 422);
    let patch = json!([{"op": "add", "path": "/identifier", "value": [{"system": "urn:fascicolo:sha256", "value": hash}]}]);
    let r =
        app.send("PATCH", &format!("/DocumentReference/{other}"), Some(patch), &[("content-type", "application/json-patch+json")]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let mut moved = victim.clone();
    moved["subject"]["reference"] = json!(format!("Patient/{}", w.giulia));
    assert_eq!(app.put(&format!("/DocumentReference/{}", w.lab_doc), moved).await.status, 422);
    // the download through the other resource finds no file; the real document still has it
    let (status, _, _) = app.raw("GET", &format!("/documents/{other}/original"), Some(&giulia), None).await;
    assert_eq!(status, 404);
    let (status, _, bytes) = app.raw("GET", &format!("/documents/{}/original", w.lab_doc), Some(&app.token), None).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, example("LAB"));
    // Giulia cannot read the other citizen's document at all
    let (status, _, _) = app.raw("GET", &format!("/documents/{}/original", w.lab_doc), Some(&giulia), None).await;
    assert_eq!(status, 404);
    // an update that keeps the binding as it is (a status change) is fine
    let mut kept = victim.clone();
    kept["description"] = json!("Referto di laboratorio");
    let r = app.put(&format!("/DocumentReference/{}", w.lab_doc), kept).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sha256_of(&r.body), hash);
    let _ = w.lab_patient;
}

#[tokio::test]
async fn every_privacy_operation_needs_a_scope_that_grants_it() {
    let w = world().await;
    let app = &w.app;
    let me = citizen("RSSGLI85D52F205Q", &w.giulia);
    let own_obs = app.create(observation(&w.giulia, "2345-7", 90.0, "2026-01-01")).await;
    let rp = {
        let t = token_for(&app.store, &me).await;
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "cf", "valueString": fascicolo_load::demo::cf("BNCLRA90A41F205")}, {"name": "given", "valueString": "Laura"},
            {"name": "family", "valueString": "Bianchi"}, {"name": "until", "valueDateTime": "2030-01-01"}]});
        let r =
            app.send("POST", &format!("/Patient/{}/$delegate", w.giulia), Some(body), &[("authorization", &format!("Bearer {t}"))]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    };
    // each operation as it is invoked: (method, path, body)
    let p = |params: Value| json!({"resourceType": "Parameters", "parameter": params});
    let calls: Vec<(&str, &str, String, Option<Value>)> = vec![
        ("$consent", "POST", format!("/Patient/{}/$consent", w.giulia), Some(p(json!([{"name": "given", "valueBoolean": true}])))),
        ("$consent", "GET", format!("/Patient/{}/$consent", w.giulia), None),
        ("$hide", "POST", format!("/Observation/{own_obs}/$hide"), Some(p(json!([{"name": "code", "valueCode": "P99"}])))),
        (
            "$art6-release",
            "POST",
            format!("/Observation/{own_obs}/$art6-release"),
            Some(p(json!([{"name": "released", "valueBoolean": true}]))),
        ),
        (
            "$delegate",
            "POST",
            format!("/Patient/{}/$delegate", w.giulia),
            Some(p(
                json!([{"name": "cf", "valueString": fascicolo_load::demo::cf("VRDMRA80A01F205")}, {"name": "given", "valueString": "Mario"},
                {"name": "family", "valueString": "Verdi"}, {"name": "until", "valueDateTime": "2030-01-01"}]),
            )),
        ),
        ("$revoke", "POST", format!("/RelatedPerson/{rp}/$revoke"), Some(p(json!([])))),
        (
            "$notifications",
            "POST",
            format!("/Patient/{}/$notifications", w.giulia),
            Some(p(json!([{"name": "off", "valueCode": "access.sms"}]))),
        ),
        ("$notifications", "GET", format!("/Patient/{}/$notifications", w.giulia), None),
    ];
    // every operation in the table is exercised here
    for (op, method, _, _) in OPERATION_SCOPES {
        assert!(*op == "$break-glass" || calls.iter().any(|c| c.0 == *op && c.1 == *method), "{op} {method} is not in the matrix");
    }
    let read_only =
        ["patient/*.rs", "patient/*.read", "patient/Patient.rs patient/Consent.rs patient/RelatedPerson.rs patient/Observation.rs"];
    for scopes in read_only {
        let t = token_for(&app.store, &with_scopes(me.clone(), scopes)).await;
        let auth = format!("Bearer {t}");
        for (op, method, path, body) in &calls {
            let r = app.send(method, path, body.clone(), &[("authorization", &auth)]).await;
            if *method == "GET" {
                assert_eq!(r.status, 200, "{scopes}: GET {op} reads: {}", r.body);
            } else {
                assert_eq!(r.status, 403, "{scopes}: {op} must be refused to a read-only token: {}", r.body);
                assert!(r.body.to_string().contains(op), "{}", r.body);
            }
        }
    }
    // nothing changed: consent not given, the delegation still active, notifications all on
    let full = token_for(&app.store, &me).await;
    let c = app.get_as(&format!("/Patient/{}/$consent", w.giulia), &full).await;
    assert_eq!(c.body["parameter"][0]["valueBoolean"], false);
    assert_eq!(app.get(&format!("/RelatedPerson/{rp}")).await.body["active"], true);
    let n = app.get_as(&format!("/Patient/{}/$notifications", w.giulia), &full).await;
    assert!(n.body["parameter"].is_null() || n.body["parameter"].as_array().unwrap().is_empty(), "{}", n.body);
    assert!(app.get(&format!("/Observation/{own_obs}")).await.body["meta"]["security"].to_string().find("P99").is_none());
    // a token for one type does not grant another's operation; the right scope does
    let wrong = token_for(&app.store, &with_scopes(me.clone(), "patient/Observation.cruds")).await;
    let r = app.send("POST", &calls[0].2, calls[0].3.clone(), &[("authorization", &format!("Bearer {wrong}"))]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let granted = [
        "patient/Consent.c",
        "patient/Consent.r",
        // an operation on an item reads it first
        "patient/Observation.ru",
        "patient/Observation.ru",
        "patient/RelatedPerson.c",
        "patient/RelatedPerson.ru",
        "patient/Patient.u",
        "patient/Patient.r",
    ];
    for ((op, method, path, body), scope) in calls.iter().zip(granted) {
        let t = token_for(&app.store, &with_scopes(me.clone(), scope)).await;
        let r = app.send(method, path, body.clone(), &[("authorization", &format!("Bearer {t}"))]).await;
        // the scope lets the call through; what the gate then decides is its own business
        assert_ne!(r.status, 403, "{scope} must allow {method} {op}: {}", r.body);
    }
    // break-glass: a clinician's read-only token may open it, a token without Patient read not
    let doc = fascicolo_app::Actor::new(Who::Professional {
        practitioner: "dr-x".into(),
        organization: None,
        role: fascicolo_app::gate::ProRole::Gp,
    });
    let t = token_for(&app.store, &with_scopes(doc, "user/Observation.rs")).await;
    let body = p(json!([{"name": "reason", "valueString": "paziente incosciente in pronto soccorso"}]));
    let r =
        app.send("POST", &format!("/Patient/{}/$break-glass", w.giulia), Some(body), &[("authorization", &format!("Bearer {t}"))]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.to_string().contains("$break-glass"), "{}", r.body);
}

#[tokio::test]
async fn the_web_edge_holds() {
    let w = world().await;
    let app = &w.app;
    let c = no_redirects();
    // open redirects: a tab, a newline, a backslash or two slashes never leave the site
    for next in ["/%09/evil.example", "/%0d%0a/evil.example", "/\\evil.example", "//evil.example", "https://evil.example", "/%0d"] {
        let r = c.get(format!("{}/lingua/en?next={next}", app.root)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{next}");
        assert_eq!(location(&r), "/", "{next}");
    }
    let r = c.get(format!("{}/lingua/en?next=/documenti%3Fpagina%3D2", app.root)).send().await.unwrap();
    assert_eq!(location(&r), "/documenti?pagina=2");
    // security headers on pages and API answers
    for path in ["/", "/fhir/r4/metadata", "/auth/login"] {
        let r = c.get(format!("{}{path}", app.root)).send().await.unwrap();
        let h = r.headers();
        assert!(h["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"), "{path}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h.contains_key("referrer-policy"));
        assert!(!h.contains_key("strict-transport-security"), "no HSTS over plain http");
    }
    // links and Location come from the configured URL, never from Host or X-Forwarded-Proto
    let r = app.send("GET", "/Patient", None, &[("host", "evil.example"), ("x-forwarded-proto", "javascript")]).await;
    assert_eq!(r.status, 200);
    assert!(!r.body.to_string().contains("evil.example") && !r.body.to_string().contains("javascript"), "{}", r.body);
    // no token: a write is refused before its body is read
    let r = app
        .client
        .post(format!("{}/Observation", app.base))
        .header("content-type", "application/fhir+json")
        .body(vec![b' '; 8 << 20])
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 401);
    }
    // only producers upload documents, told so before the upload is read
    let giulia = token_for(&app.store, &citizen("RSSGLI85D52F205Q", &w.giulia)).await;
    let orgless = token_for(&app.store, &Actor::new(Who::Client { client_id: "app".into(), organization: None, platform: false })).await;
    for (token, expected) in [(None, 401), (Some(giulia.as_str()), 403), (Some(orgless.as_str()), 403)] {
        let (status, body, _) = app.raw("POST", "/ingest/v1/documents", token, Some((example("LAB"), "application/xml"))).await;
        assert_eq!(status, expected, "{body}");
    }
    // a citizen may not store a huge resource; the answer names the limit
    let mut big = observation(&w.giulia, "2345-7", 90.0, "2026-01-01");
    big["note"] = json!((0..20_000).map(|i| json!({"text": format!("nota {i}")})).collect::<Vec<_>>());
    let r = app.send("POST", "/Observation", Some(big), &[("authorization", &format!("Bearer {giulia}"))]).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.to_string().contains("KiB"), "{}", r.body);
    // search abuse is the client's error, with the limit named
    let many_or = (0..1000).map(|i| format!("c{i}")).collect::<Vec<_>>().join(",");
    let r = app.get(&format!("/Observation?code={many_or}")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.to_string().contains("100 values"), "{}", r.body);
    let many_params = (0..300).map(|i| format!("_has:Observation:patient:code=x{i}")).collect::<Vec<_>>().join("&");
    let r = app.get(&format!("/Patient?{many_params}")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let deep =
        "_has:Observation:patient:_has:AuditEvent:entity:_has:Provenance:target:_has:Observation:subject:_has:Observation:subject:code=x";
    let r = app.get(&format!("/Patient?{deep}")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.to_string().contains("_has"), "{}", r.body);
    // free text is bounded: a 1 MB break-glass reason is refused
    let doc = Actor::new(Who::Professional { practitioner: "dr-x".into(), organization: None, role: fascicolo_app::gate::ProRole::Gp });
    let t = token_for(&app.store, &doc).await;
    let body = json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "x".repeat(1 << 20)}]});
    let r =
        app.send("POST", &format!("/Patient/{}/$break-glass", w.giulia), Some(body), &[("authorization", &format!("Bearer {t}"))]).await;
    assert!(r.status == 400 || r.status == 413, "{}: {}", r.status, r.body);
}

/// Sign-in, OAuth and bearer-token guessing are rate limited per address; starting a sign-in
/// stores nothing; `X-Forwarded-For` from an untrusted peer changes nothing.
#[tokio::test]
async fn sign_in_token_and_guessing_are_rate_limited() {
    let app = spawn_app_with(|cfg| {
        cfg.rate_limit.sign_in_per_minute = 10;
        cfg.rate_limit.oauth_per_minute = 10;
        cfg.rate_limit.bad_tokens_per_minute = 5;
    })
    .await;
    let c = no_redirects();
    let mut codes = Vec::new();
    for i in 0..30 {
        // a new forwarded address each time: believed only from a configured proxy, so ignored
        let r =
            c.get(format!("{}/auth/login?next=/me", app.root)).header("x-forwarded-for", format!("198.51.100.{i}")).send().await.unwrap();
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
            assert!(r.text().await.unwrap().contains("Troppi tentativi"));
        }
    }
    assert_eq!(codes.iter().filter(|s| **s == 303).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|s| **s == 429).count(), 20, "{codes:?}");
    // ten sign-ins started, nothing stored for them: the records are the tests' own token and
    // the demo provider's signing key (made once, at its first discovery)
    assert_eq!(app.store.auth_purge(i64::MAX).await.unwrap(), 2, "starting a sign-in must not write to the database");

    // the OAuth endpoints have their own allowance, answered in OAuth's JSON
    let mut last = None;
    for _ in 0..12 {
        let r = c.post(format!("{}/oauth/token", app.root)).form(&[("grant_type", "password")]).send().await.unwrap();
        last = Some((r.status().as_u16(), r.headers().get("retry-after").is_some(), r.text().await.unwrap()));
    }
    let (status, retry, body) = last.unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(retry && body.contains("slow_down"), "{body}");

    // guessing bearer tokens: five wrong ones are answered 401, then the address is refused
    // before any token is looked at, a right one included
    let token = token_for(&app.store, &platform_actor()).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let (status, _, _) = app.raw("GET", "/fhir/r4/Patient", Some(&format!("guess-{i}")), None).await;
        statuses.push(status);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 401, 429, 429]);
    let (status, body, _) = app.raw("GET", "/fhir/r4/Patient", Some(&token), None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["issue"][0]["code"], "throttled", "{body}");
    // requests without credentials (public pages, metadata) are not held back
    let (status, _, _) = app.raw("GET", "/fhir/r4/metadata", None, None).await;
    assert_eq!(status, 200);
}

/// A crash between storing an original and committing its document leaves files behind; the
/// sweep removes those (and partial writes) once they are old, and nothing a document uses.
#[tokio::test]
async fn orphan_originals_are_swept_and_referenced_ones_kept() {
    use fascicolo_blobs::BlobStore;
    let w = world().await;
    let app = &w.app;
    let blobs = fascicolo_blobs::FolderBlobs::new(app.data_dir.join("blobs"));
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    let age = |path: std::path::PathBuf| std::fs::File::options().append(true).open(path).unwrap().set_modified(two_hours_ago).unwrap();
    let path_of = |h: &str| app.data_dir.join("blobs").join("sha256").join(&h[..2]).join(&h[2..]);
    // every stored original, the published document's included, is two hours old
    let published: Vec<String> = std::fs::read_dir(app.data_dir.join("blobs/sha256"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .map(|p| format!("{}{}", p.parent().unwrap().file_name().unwrap().to_string_lossy(), p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert_eq!(published.len(), 1);
    age(path_of(&published[0]));
    // what a crash leaves: an original no document took, a write that never got its rename
    let orphan = blobs.put(b"<ClinicalDocument/> never committed").await.unwrap();
    age(path_of(&orphan));
    let partial = path_of(&orphan).with_file_name(".partial-write");
    std::fs::write(&partial, b"half").unwrap();
    age(partial.clone());
    // and one being published right now (young): not touched
    let young = blobs.put(b"in flight").await.unwrap();

    let fhir = fascicolo_server::fhir_service(&fascicolo_server::config::Config::default(), std::sync::Arc::clone(&app.store));
    let sweep = fascicolo_app::ingest::sweep_orphans(&fhir, &blobs, fascicolo_server::ORPHAN_GRACE_MS).await.unwrap();
    assert_eq!((sweep.checked, sweep.removed), (2, 1), "{sweep:?}");
    assert!(!path_of(&orphan).exists() && !partial.exists());
    assert!(path_of(&young).exists() && path_of(&published[0]).exists());
    let reader = token_for(&app.store, &platform_actor()).await;
    let (status, _, bytes) = app.raw("GET", &format!("/documents/{}/original", w.lab_doc), Some(&reader), None).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, example("LAB"));
    // storing an original again makes it young: a sweep racing a re-publication keeps it
    age(path_of(&published[0]));
    blobs.put(&example("LAB")).await.unwrap();
    assert!(blobs.written_before(fascicolo_fhir::datetime::now_ms() - fascicolo_server::ORPHAN_GRACE_MS).await.unwrap().is_empty());
}
