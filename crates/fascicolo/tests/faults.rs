//! Faults told as such: a full disk answers 507 with `Retry-After` and makes readiness say so
//! until there is room again, and nothing of the refused write is kept; a database that goes
//! away answers 503 with `Retry-After` (PostgreSQL, when `FASCICOLO_TEST_DATABASE_URL` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;

fn big_observation(patient: &str, i: usize) -> serde_json::Value {
    json!({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": i, "unit": "mg/dL"},
        "note": [{"text": "x".repeat(200_000)}]
    })
}

async fn ready(app: &TestApp) -> (u16, String) {
    let r = app.client.get(format!("{}/readyz", app.root)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_is_507_not_ready_and_keeps_nothing() {
    let dir = std::env::temp_dir().join(format!("fascicolo-full-{}", uuid::Uuid::now_v7()));
    let sqlite = Arc::new(fascicolo_store_sqlite::SqliteStore::open(dir.join("t.db")).unwrap());
    let app = spawn_app_on(Arc::clone(&sqlite) as Arc<dyn fascicolo_store::Store>, |_| {}).await;
    let patient = app.post("/Patient", json!({"resourceType": "Patient", "name": [{"family": "Pieni"}]})).await;
    assert_eq!(patient.status, 201);
    let pid = patient.body["id"].as_str().unwrap().to_string();
    assert_eq!(ready(&app).await.0, 200);

    // the disk is full: the database may not grow past its current size
    sqlite.set_max_pages(1).await.unwrap();
    let mut refused = None;
    for i in 0..50 {
        let r = app.post("/Observation", big_observation(&pid, i)).await;
        if r.status != 201 {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("a write must fail once the storage is full");
    assert_eq!(r.status, 507, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(r.body["issue"][0]["code"], "transient", "{}", r.body);
    assert!(r.body.to_string().contains("storage is full"), "{}", r.body);
    // readiness says so, reads still work
    let (status, text) = ready(&app).await;
    assert_eq!((status, text.as_str()), (503, "storage full: writes are refused until space is freed"));
    assert_eq!(app.get(&format!("/Patient/{pid}")).await.status, 200);
    // nothing of the refused write was kept
    let found = app.get(&format!("/Observation?subject=Patient/{pid}&_summary=count")).await;
    assert_eq!(found.body["total"], json!(i), "{}", found.body);
    // room again: ready, and the write goes through
    sqlite.set_max_pages(1 << 30).await.unwrap();
    assert_eq!(ready(&app).await.0, 200);
    assert_eq!(app.post("/Observation", big_observation(&pid, 99)).await.status, 201);
}

/// PostgreSQL only: a database of its own, taken away under the running server and given back.
#[tokio::test]
async fn a_database_outage_is_503_with_retry_after_and_recovers() {
    let Ok(url) = std::env::var("FASCICOLO_TEST_DATABASE_URL") else { return };
    if url.is_empty() {
        return;
    }
    let name = format!("outage_{}", uuid::Uuid::now_v7().simple());
    eprintln!("taking database {name} away under the server");
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let db_url = match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("a database URL"),
    };
    let pg = fascicolo_store_postgres::PgStore::connect(&db_url, 4).await.unwrap();
    let app = spawn_app_on(Arc::new(pg), |_| {}).await;
    assert_eq!(app.get("/Patient").await.status, 200);
    assert_eq!(ready(&app).await.0, 200);
    // a citizen is signed in to the portal when the database goes
    fascicolo_load::demo::seed(&fascicolo_app::FhirService::new(Arc::clone(&app.store))).await.unwrap();
    record_fixtures(&fascicolo_app::FhirService::new(Arc::clone(&app.store))).await;
    let cookie = format!("fascicolo_session={}", sign_in(&app, "RSSGLI85D52F205Q", "citizen").await);
    let portal = |path: &'static str| {
        let (root, cookie) = (app.root.clone(), cookie.clone());
        async move {
            let r = no_redirects().get(format!("{root}{path}")).header("cookie", cookie).send().await.unwrap();
            let retry = r.headers().contains_key("retry-after");
            (r.status().as_u16(), retry, r.text().await.unwrap())
        }
    };
    assert_eq!(portal("/cronologia").await.0, 200);

    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await.unwrap();
    admin.batch_execute(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")).await.unwrap();
    let t = std::time::Instant::now();
    let r = app.get("/Patient").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(r.body["issue"][0]["code"], "transient", "{}", r.body);
    assert!(t.elapsed() < std::time::Duration::from_secs(15), "told at once, not after a hang: {:?}", t.elapsed());
    let r = app.post("/Patient", json!({"resourceType": "Patient", "name": [{"family": "Assente"}]})).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(ready(&app).await, (503, "database unavailable".to_string()));
    // the portal says so too: not an empty record, not a sign-in page that hides the outage
    for path in ["/", "/cronologia"] {
        let (status, retry, body) = portal(path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(retry && body.contains("Servizio momentaneamente non disponibile"), "{path}: {body}");
    }

    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await.unwrap();
    let mut back = false;
    for _ in 0..20 {
        if ready(&app).await.0 == 200 && app.get("/Patient").await.status == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(back, "the service must recover once the database is back");
    assert_eq!(portal("/cronologia").await.0, 200, "the same session works again");
    // the refused write left nothing
    let r = app.get("/Patient?family=Assente&_summary=count").await;
    assert_eq!(r.body["total"], json!(0), "{}", r.body);
    drop(app);
    let _ = admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await;
}

/// Importing the same files again (a resumed import after a crash) creates nothing twice:
/// creates are keyed by their source entry.
#[tokio::test]
async fn importing_the_same_files_twice_creates_nothing_twice() {
    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!("fascicolo-import-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let patient = "urn:uuid:7d5a3c2e-1b4f-4e6a-9c8d-2f1e0a9b8c7d";
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": patient, "resource": {"resourceType": "Patient", "name": [{"family": "Importato"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "peso"},
            "subject": {"reference": patient}, "valueQuantity": {"value": 70, "unit": "kg"}},
         "request": {"method": "POST", "url": "Observation"}}
    ]});
    let collection = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Organization", "name": "Ambulatorio senza id"}}
    ]});
    let single = json!({"resourceType": "Practitioner", "name": [{"family": "Senzaid"}]});
    std::fs::write(dir.join("a.json"), transaction.to_string()).unwrap();
    std::fs::write(dir.join("b.json"), collection.to_string()).unwrap();
    std::fs::write(dir.join("c.json"), single.to_string()).unwrap();
    let fhir = fascicolo_server::fhir_service(&fascicolo_server::config::Config::default(), Arc::clone(&app.store));
    let count = |t: &'static str| {
        let app = &app;
        async move { app.get(&format!("/{t}?_summary=count")).await.body["total"].as_u64().unwrap() }
    };
    for round in 0..2 {
        let s = fascicolo_load::import::run(fhir.clone(), std::slice::from_ref(&dir), 2, false).await.unwrap();
        assert_eq!((s.files, s.resources, s.errors), (3, 4, 0), "round {round}: {s}");
        for t in ["Patient", "Observation", "Organization", "Practitioner"] {
            assert_eq!(count(t).await, 1, "round {round}: one {t}");
        }
    }
    // the reference to the transaction's urn:uuid points at the imported patient
    let obs = app.get("/Observation").await;
    let subject = obs.body["entry"][0]["resource"]["subject"]["reference"].as_str().unwrap().to_string();
    let pid = app.get("/Patient").await.body["entry"][0]["resource"]["id"].as_str().unwrap().to_string();
    assert_eq!(subject, format!("Patient/{pid}"));
    // and the second import made no new versions: nothing had changed
    let history = app.get(&format!("/Patient/{pid}/_history")).await;
    assert_eq!(history.body["entry"].as_array().map(Vec::len), Some(1), "{}", history.body);
    let _ = std::fs::remove_dir_all(dir);
}

/// NDJSON files (FHIR Bulk Data's format) are imported all or nothing per file: every rejected
/// line is reported with its number, a file with one bad line stores none of its lines, a file
/// over the size limit is refused before it is read, and importing again changes nothing.
#[tokio::test]
async fn ndjson_files_import_all_or_nothing_with_each_rejected_line_reported() {
    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!("fascicolo-ndjson-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let patients = [
        json!({"resourceType": "Patient", "id": "nd-1", "name": [{"family": "Ndjson"}], "gender": "female"}),
        json!({"resourceType": "Patient", "name": [{"family": "Senzaid"}]}),
    ];
    // CRLF line ends and a blank line, as files written on other systems have
    let text = format!("{}\r\n\r\n{}\r\n", patients[0], patients[1]);
    std::fs::write(dir.join("Patient.ndjson"), text).unwrap();
    let obs = json!({"resourceType": "Observation", "id": "nd-obs", "status": "final", "code": {"text": "peso"},
        "subject": {"reference": "Patient/nd-1"}, "valueQuantity": {"value": 61, "unit": "kg"}});
    std::fs::write(dir.join("Observation.ndjson"), format!("{obs}\n")).unwrap();
    let org = json!({"resourceType": "Organization", "id": "nd-org", "name": "Ambulatorio"});
    let bad_gender = json!({"resourceType": "Patient", "id": "nd-bad", "gender": "nope"});
    std::fs::write(dir.join("bad.ndjson"), format!("{org}\n{{not json\n{bad_gender}\n[1]\n")).unwrap();
    let fhir = fascicolo_server::fhir_service(&fascicolo_server::config::Config::default(), Arc::clone(&app.store));
    let status = |t: &'static str, id: &'static str| {
        let app = &app;
        async move { app.get(&format!("/{t}/{id}")).await.status }
    };
    let s = fascicolo_load::import::run(fhir.clone(), std::slice::from_ref(&dir), 2, false).await.unwrap();
    assert_eq!((s.files, s.resources, s.errors), (3, 3, 1), "{s}");
    let report = s.to_string();
    assert!(report.contains("bad.ndjson:2: not JSON"), "{report}");
    assert!(report.contains("bad.ndjson:4: not a FHIR resource"), "{report}");
    assert!(!report.contains("bad.ndjson:1:") && !report.contains("bad.ndjson:3:"), "only the rejected lines: {report}");
    assert_eq!(status("Organization", "nd-org").await, 404, "nothing of a rejected file is stored");
    assert_eq!(status("Patient", "nd-1").await, 200);
    let got = app.get("/Observation/nd-obs").await;
    assert_eq!(got.body["subject"]["reference"], "Patient/nd-1", "{}", got.body);
    let senzaid = app.get("/Patient?family=Senzaid").await;
    assert_eq!(senzaid.body["total"], 1, "{}", senzaid.body);
    // the lines that parse but do not validate are found by the transaction, and located too
    std::fs::write(dir.join("bad.ndjson"), format!("{org}\n{bad_gender}\n")).unwrap();
    // a file naming a patient that no file creates waits for the others, then is reported
    let orphan = json!({"resourceType": "Observation", "id": "nd-orphan", "status": "final", "code": {"text": "peso"},
        "subject": {"reference": "Patient/nd-nowhere"}});
    std::fs::write(dir.join("orphan.ndjson"), format!("\n{orphan}\n")).unwrap();
    let s = fascicolo_load::import::run(fhir.clone(), std::slice::from_ref(&dir), 2, false).await.unwrap();
    assert_eq!((s.resources, s.errors), (3, 2), "{s}");
    let report = s.to_string();
    assert!(report.contains("bad.ndjson:2: ") && report.contains("gender"), "{report}");
    assert!(report.contains("orphan.ndjson:2: ") && report.contains("Patient/nd-nowhere"), "{report}");
    assert_eq!(status("Observation", "nd-orphan").await, 404);
    std::fs::remove_file(dir.join("orphan.ndjson")).unwrap();
    assert_eq!(status("Organization", "nd-org").await, 404);
    assert_eq!(status("Patient", "nd-bad").await, 404);
    // the second import made no new versions: the id-less patient got the same id again
    assert_eq!(app.get("/Patient?family=Senzaid").await.body["total"], 1);
    let history = app.get("/Patient/nd-1/_history").await;
    assert_eq!(history.body["entry"].as_array().map(Vec::len), Some(1), "{}", history.body);
    // a file over the limit is refused by its size, before anything is read
    std::fs::remove_file(dir.join("bad.ndjson")).unwrap();
    let big = std::fs::File::create(dir.join("big.ndjson")).unwrap();
    big.set_len(fascicolo_load::import::MAX_NDJSON_BYTES + 1).unwrap();
    drop(big);
    let s = fascicolo_load::import::run(fhir.clone(), std::slice::from_ref(&dir), 2, false).await.unwrap();
    assert_eq!(s.errors, 1, "{s}");
    assert!(s.to_string().contains("big.ndjson") && s.to_string().contains("limit"), "{s}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `POST [base]/$import` with an NDJSON body: one transaction, a clear error for every rejected
/// line (located by its number), nothing of a rejected body stored, and the usual refusals for
/// a wrong content type or no credentials.
#[tokio::test]
async fn import_over_http_takes_ndjson_all_or_nothing() {
    let app = spawn_app().await;
    let post = |body: String, ct: &'static str, token: Option<String>| {
        let app = &app;
        async move { app.raw("POST", "/fhir/r4/$import", token.as_deref(), Some((body.into_bytes(), ct))).await }
    };
    let token = Some(app.token.clone());
    let patient = json!({"resourceType": "Patient", "id": "hx-1", "gender": "male"});
    let obs = json!({"resourceType": "Observation", "id": "hx-obs", "status": "final", "code": {"text": "peso"},
        "subject": {"reference": "Patient/hx-1"}});
    let org = json!({"resourceType": "Organization", "id": "hx-org", "name": "Ambulatorio"});
    let bad_gender = json!({"resourceType": "Patient", "id": "hx-2", "gender": "nope"});
    let expressions = |outcome: &serde_json::Value| -> Vec<String> {
        outcome["issue"].as_array().unwrap().iter().map(|i| i["expression"][0].as_str().unwrap_or_default().to_string()).collect()
    };
    let (status, _, _) = post(format!("{patient}\n"), "application/fhir+json", token.clone()).await;
    assert_eq!(status, 415);
    let (status, _, _) = post(format!("{patient}\n"), "application/fhir+ndjson", None).await;
    assert_eq!(status, 401);
    // a line that is not JSON: nothing of the body is stored, and only that line is named
    let (status, outcome, _) = post(format!("{org}\n{bad_gender}\n{{nope\n"), "application/fhir+ndjson", token.clone()).await;
    assert_eq!(status, 422, "{outcome}");
    assert_eq!(expressions(&outcome), ["line 3"], "{outcome}");
    assert_eq!(app.get("/Organization/hx-org").await.status, 404);
    // every line parses: the validator's problem is located on its line
    let (status, outcome, _) = post(format!("{org}\n\n{bad_gender}\n"), "application/fhir+ndjson", token.clone()).await;
    assert_eq!(status, 422, "{outcome}");
    assert!(expressions(&outcome).iter().all(|e| e.starts_with("line 3")), "{outcome}");
    assert!(outcome.to_string().contains("gender"), "{outcome}");
    assert_eq!(app.get("/Organization/hx-org").await.status, 404);
    assert_eq!(app.get("/Patient/hx-2").await.status, 404);
    // a good body: every line stored, the count said
    let (status, outcome, _) = post(format!("{obs}\n{patient}\n{org}\n"), "application/fhir+ndjson", token.clone()).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["issue"][0]["diagnostics"], "3 resources imported");
    assert_eq!(app.get("/Observation/hx-obs").await.body["subject"]["reference"], "Patient/hx-1");
    assert_eq!(app.get("/Organization/hx-org").await.status, 200);
    // the gate decides every line: a citizen may not write into another citizen's record, nor a
    // clinician without consent into anyone's; nothing of their bodies is stored
    let other = json!({"resourceType": "Patient", "id": "hx-3", "gender": "female"});
    assert_eq!(post(format!("{other}\n"), "application/fhir+ndjson", token.clone()).await.0, 200);
    let into = |id: &str, patient: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "peso"},
            "subject": {"reference": format!("Patient/{patient}")}})
    };
    let citizen = fascicolo_app::Actor::new(fascicolo_app::Who::Citizen {
        cf: fascicolo_domain::CodiceFiscale::parse("RSSGLI85D52F205Q").unwrap(),
        patient: Some("hx-1".into()),
    });
    let clinician = fascicolo_app::Actor::new(fascicolo_app::Who::Professional {
        practitioner: "hx-doc".into(),
        organization: None,
        role: fascicolo_app::gate::ProRole::Gp,
    });
    for (who, body) in [(citizen, format!("{}\n", into("hx-c", "hx-3"))), (clinician, format!("{}\n", into("hx-p", "hx-1")))] {
        let t = token_for(&app.store, &who).await;
        let (status, outcome, _) = post(body, "application/fhir+ndjson", Some(t)).await;
        assert!(matches!(status, 403 | 404), "{who:?}: {status} {outcome}");
    }
    assert_eq!(app.get("/Observation/hx-c").await.status, 404);
    assert_eq!(app.get("/Observation/hx-p").await.status, 404);
}

/// A first start on a nearly full disk stops the demo seeding half-way; the next start finishes
/// it instead of taking the half for the whole.
#[tokio::test]
async fn demo_seeding_cut_short_by_a_full_disk_resumes() {
    // the smallest room that lets the first personas in but not the whole demo: tried upwards,
    // since how many pages a write takes depends on the data (one more persona moves it)
    for extra in 1..=64 {
        let dir = std::env::temp_dir().join(format!("fascicolo-seedfull-{}", uuid::Uuid::now_v7()));
        let sqlite = Arc::new(fascicolo_store_sqlite::SqliteStore::open(dir.join("t.db")).unwrap());
        let store: Arc<dyn fascicolo_store::Store> = Arc::clone(&sqlite) as _;
        let fhir = fascicolo_server::fhir_service(&fascicolo_server::config::Config::default(), Arc::clone(&store));
        fascicolo_load::demo::seed_example_patients(&fhir).await.unwrap();
        let pages = sqlite.set_max_pages(1).await.unwrap();
        sqlite.set_max_pages(pages + extra).await.unwrap();
        let cut = fascicolo_load::demo::seed(&fhir).await;
        assert!(cut.is_err(), "the disk filled up during seeding (no room cut it half-way; {extra} pages seeded it all)");
        if store.read("Patient", "rossi-giulia").await.unwrap().is_none() {
            continue; // stopped before the first personas: give it more room
        }
        assert!(store.read("CareTeam", "careteam-anna").await.unwrap().is_none(), "and before the end");
        sqlite.set_max_pages(1 << 30).await.unwrap();
        assert!(fascicolo_load::demo::seed(&fhir).await.unwrap(), "the next start resumes");
        assert!(store.read("CareTeam", "careteam-anna").await.unwrap().is_some());
        assert!(!fascicolo_load::demo::seed(&fhir).await.unwrap(), "and once finished, it is done");
        return;
    }
    panic!("no room between 1 and 64 pages cut the seeding after the first personas");
}

/// The portal does not hide failures: with the store failing under it, a page the citizen opens
/// is an error page (500, as the API answers a storage fault; an outage is 503, see the
/// PostgreSQL test) instead of an empty record ("no events", "no consent"); when the store is
/// back, the same pages show the record again.
#[tokio::test]
async fn a_failing_store_under_a_portal_page_is_an_error_page_not_an_empty_record() {
    let dir = std::env::temp_dir().join(format!("fascicolo-portalfail-{}", uuid::Uuid::now_v7()));
    let db = dir.join("t.db");
    let sqlite: Arc<dyn fascicolo_store::Store> = Arc::new(fascicolo_store_sqlite::SqliteStore::open(&db).unwrap());
    let app = spawn_app_on(Arc::clone(&sqlite), |_| {}).await;
    let fhir = fascicolo_app::FhirService::new(Arc::clone(&sqlite));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    record_fixtures(&fhir).await;
    let cookie = format!("fascicolo_session={}", sign_in(&app, "RSSGLI85D52F205Q", "citizen").await);
    let get = |path: &'static str| {
        let (root, cookie) = (app.root.clone(), cookie.clone());
        async move {
            let r = no_redirects().get(format!("{root}{path}")).header("cookie", cookie).send().await.unwrap();
            let retry = r.headers().contains_key("retry-after");
            (r.status().as_u16(), retry, r.text().await.unwrap())
        }
    };
    let pages = ["/", "/cronologia", "/privacy", "/taccuino", "/famiglia", "/prescrizioni", "/documenti"];
    for p in pages {
        assert_eq!(get(p).await.0, 200, "{p} before the failure");
    }
    assert!(!get("/cronologia").await.2.contains("Nessun evento"), "her timeline has events");

    // the clinical data become unreadable (the table is taken away under the running server)
    let side = rusqlite::Connection::open(&db).unwrap();
    side.execute_batch("ALTER TABLE resources RENAME TO resources_away").unwrap();
    for p in pages {
        // a fault of the server's own (not an outage): 500, as the API answers it
        let (status, retry, body) = get(p).await;
        assert_eq!(status, 500, "{p}: {body}");
        assert!(!retry, "{p}: a fault is not an outage to wait out");
        assert!(body.contains("Si è verificato un errore") && body.contains("non ha modificato nulla"), "{p}: {body}");
        for empty in ["Nessun evento", "Nessuna prescrizione", "Nessun documento", "Non hai ancora espresso"] {
            assert!(!body.contains(empty), "{p} shows an empty record during the failure: {empty}");
        }
        assert!(!body.contains("resources_away") && !body.contains("no such table"), "{p} shows internals");
    }

    side.execute_batch("ALTER TABLE resources_away RENAME TO resources").unwrap();
    for p in pages {
        assert_eq!(get(p).await.0, 200, "{p} after the failure");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An address the site does not have is a designed page in the citizen's language, not an
/// empty 404.
#[tokio::test]
async fn an_unknown_address_is_a_designed_not_found_page() {
    let app = spawn_app().await;
    let r = app.client.get(format!("{}/non-esiste/affatto", app.root)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let body = r.text().await.unwrap();
    assert!(body.contains("Pagina non trovata") && body.contains("lang=\"it\"") && body.contains("href=\"/\""), "{body}");
    let r = app.client.get(format!("{}/non-esiste", app.root)).header("cookie", "fascicolo_lang=en").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("Page not found"));
}

/// When the store cannot be asked about the session, every page that needs one says so: /me is
/// not a sign-in page, and a sign-out is not answered as done (its cookie is kept, so the person
/// can try again) while the session may still be alive.
#[tokio::test]
async fn a_session_store_that_cannot_be_asked_is_an_error_page_not_a_sign_in_or_a_sign_out() {
    let dir = std::env::temp_dir().join(format!("fascicolo-sessfail-{}", uuid::Uuid::now_v7()));
    let db = dir.join("t.db");
    let sqlite: Arc<dyn fascicolo_store::Store> = Arc::new(fascicolo_store_sqlite::SqliteStore::open(&db).unwrap());
    let app = spawn_app_on(Arc::clone(&sqlite), |_| {}).await;
    fascicolo_load::demo::seed(&fascicolo_app::FhirService::new(Arc::clone(&sqlite))).await.unwrap();
    let cookie = format!("fascicolo_session={}", sign_in(&app, "RSSGLI85D52F205Q", "citizen").await);
    let me = no_redirects().get(format!("{}/me", app.root)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(me.status(), 200);

    let side = rusqlite::Connection::open(&db).unwrap();
    side.execute_batch("ALTER TABLE auth_records RENAME TO auth_records_away").unwrap();
    let me = no_redirects().get(format!("{}/me", app.root)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(me.status(), 500, "not a redirect to the sign-in page");
    assert!(me.text().await.unwrap().contains("Si è verificato un errore"));
    for path in ["/auth/logout", "/auth/logout-everywhere", "/auth/profile"] {
        let r = no_redirects()
            .post(format!("{}{path}", app.root))
            .header("cookie", &cookie)
            .form(&[("csrf", "whatever")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500, "{path}");
        assert!(r.headers().get("set-cookie").is_none(), "{path}: the session cookie is not cleared");
        assert!(!r.text().await.unwrap().contains("auth_records"), "{path} shows internals");
    }

    side.execute_batch("ALTER TABLE auth_records_away RENAME TO auth_records").unwrap();
    let me = no_redirects().get(format!("{}/me", app.root)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(me.status(), 200, "the session was never lost");
    let _ = std::fs::remove_dir_all(dir);
}
