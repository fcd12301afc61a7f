//! Test kit: the real app on 127.0.0.1:0 with a fresh store (SQLite by default, PostgreSQL in
//! a fresh schema when `FASCICOLO_TEST_DATABASE_URL` is set).
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use fascicolo_store::Store;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

pub struct TestApp {
    pub base: String,
    pub root: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    /// A platform client's token: full access, audited (the tests of the FHIR surface use it).
    pub token: String,
    /// The server's data folder (document originals).
    pub data_dir: std::path::PathBuf,
}

/// A token for any actor, issued the way the authorization server issues them.
pub async fn token_for(store: &Arc<dyn Store>, actor: &fascicolo_app::Actor) -> String {
    fascicolo_app::auth::Tokens::new(Arc::clone(store)).issue(actor, "tests", 3600).await.expect("token").access_token
}

pub fn platform_actor() -> fascicolo_app::Actor {
    fascicolo_app::Actor::new(fascicolo_app::Who::Client { client_id: "tests".into(), organization: None, platform: true })
}

pub async fn fresh_store() -> Arc<dyn Store> {
    match std::env::var("FASCICOLO_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
            Arc::new(fascicolo_store_postgres::PgStore::connect_in_schema(&url, 8, Some(&schema)).await.expect("PostgreSQL"))
        }
        _ => {
            let dir = std::env::temp_dir().join(format!("fascicolo-api-{}", uuid::Uuid::now_v7()));
            Arc::new(fascicolo_store_sqlite::SqliteStore::open(dir.join("t.db")).expect("SQLite"))
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The app with a configuration adjusted by `tune` (clients, policy...).
pub async fn spawn_app_with(tune: impl FnOnce(&mut fascicolo_server::config::Config)) -> TestApp {
    spawn_app_on(fresh_store().await, tune).await
}

/// The app on a store the test made (a capped SQLite file, a PostgreSQL database it can take away).
pub async fn spawn_app_on(store: Arc<dyn Store>, tune: impl FnOnce(&mut fascicolo_server::config::Config)) -> TestApp {
    // blobs (document originals) in a folder of the test's own, never in the source tree
    let data_dir = std::env::temp_dir().join(format!("fascicolo-test-{}", uuid::Uuid::now_v7()));
    let mut cfg = fascicolo_server::config::Config { listen: "127.0.0.1:0".into(), data_dir, ..Default::default() };
    // the test harness is not the server binary: PDFs are read by the real one, as in production
    cfg.ingest.pdf_worker = Some(env!("CARGO_BIN_EXE_fascicolo").into());
    tune(&mut cfg);
    let data_dir = cfg.data_dir.clone();
    // started as `fascicolo serve` starts it (the tests drive the outbox themselves)
    let app = fascicolo_server::Application::build(cfg, Arc::clone(&store)).await.expect("the application starts");
    let addr = app.addr();
    app.spawn();
    let token = token_for(&store, &platform_actor()).await;
    TestApp {
        base: format!("http://{addr}/fhir/r4"),
        root: format!("http://{addr}"),
        client: reqwest::Client::new(),
        store,
        token,
        data_dir,
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestApp {
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Resp {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{}", self.base, path) };
        let mut rb = self.client.request(method.parse().expect("method"), url);
        let mut has_ct = false;
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
            rb = rb.bearer_auth(&self.token);
        }
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("authorization") && v.is_empty() {
                continue; // an empty value stands for "no credentials"
            }
            has_ct |= k.eq_ignore_ascii_case("content-type");
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            if !has_ct {
                rb = rb.header("content-type", "application/fhir+json");
            }
            // a JSON string stands for a raw (possibly malformed) body
            rb = rb.body(match b {
                Value::String(raw) => raw,
                other => other.to_string(),
            });
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Resp { status, headers, body }
    }
    /// Any request to a path of the site (not only the FHIR API): status, JSON (or Null), bytes.
    pub async fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Option<(Vec<u8>, &str)>) -> (u16, Value, Vec<u8>) {
        let mut rb = self.client.request(method.parse().expect("method"), format!("{}{path}", self.root));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some((bytes, ct)) = body {
            rb = rb.header("content-type", ct).body(bytes);
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let bytes = r.bytes().await.expect("body").to_vec();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), bytes)
    }
    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, &[]).await
    }
    /// `GET path` with `token` as the bearer.
    pub async fn get_as(&self, path: &str, token: &str) -> Resp {
        self.send("GET", path, None, &[("authorization", &format!("Bearer {token}"))]).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send("POST", path, Some(body), &[]).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.send("PUT", path, Some(body), &[]).await
    }
    /// How many current resources of a type exist.
    pub async fn count(&self, t: &str) -> u64 {
        self.get(&format!("/{t}?_summary=count")).await.body["total"].as_u64().expect("count")
    }
    /// Total number of stored versions (every write leaves one).
    pub async fn versions(&self) -> usize {
        let h = self.store.history(&fascicolo_store::HistoryQuery { limit: 100_000, ..Default::default() }).await.expect("history");
        h.len()
    }
    pub async fn create(&self, r: Value) -> String {
        let t = r["resourceType"].as_str().expect("type").to_string();
        let resp = self.post(&format!("/{t}"), r).await;
        assert_eq!(resp.status, 201, "{}", resp.body);
        resp.body["id"].as_str().expect("id").to_string()
    }
}

pub fn patient(family: &str, cf: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": ["Giulia"]}], "gender": "female", "birthDate": "1985-04-12",
        "identifier": [{"system": "http://hl7.it/sid/codiceFiscale", "value": cf}]})
}

pub fn observation(patient_id: &str, code: &str, value: f64, when: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": "Glucose"}]},
        "subject": {"reference": format!("Patient/{patient_id}")}, "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}})
}

pub fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["resource"]["id"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

// --- browser-style helpers (no redirects followed, cookies by hand) ---

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let (kv, _) = c.split_once(';').unwrap_or((c, ""));
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

pub fn query(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

pub fn csrf_of(html: &str) -> String {
    let i = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[i..].split('"').next().unwrap().to_string()
}

/// Sign in through the demo provider as a persona; returns the session cookie.
pub async fn sign_in(app: &TestApp, cf: &str, profile: &str) -> String {
    let c = no_redirects();
    let r = c.get(format!("{}/auth/login?next=/me", app.root)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let login_cookie = set_cookie(&r, "fascicolo_login").unwrap();
    let authorize = location(&r);
    assert!(authorize.starts_with(&format!("{}/demo-idp/authorize?", app.root)), "{authorize}");
    let q = query(&authorize);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(!q["nonce"].is_empty() && !q["state"].is_empty());
    let page = c.get(&authorize).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("AMBIENTE DEMO") && page.contains(cf), "the picker lists the persona and says it is a demo");
    let mut form: Vec<(String, String)> =
        ["client_id", "redirect_uri", "state", "nonce", "code_challenge"].iter().map(|k| (k.to_string(), q[*k].clone())).collect();
    form.push(("cf".into(), cf.into()));
    form.push(("profile".into(), profile.into()));
    let r = c.post(format!("{}/demo-idp/authorize", app.root)).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let callback = location(&r);
    assert!(callback.starts_with(&format!("{}/auth/callback?", app.root)));
    let r = c.get(&callback).header("cookie", format!("fascicolo_login={login_cookie}")).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), "/me");
    let set = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>().join("\n");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax"), "{set}");
    // the same callback again: the state was single use
    let again = c.get(&callback).header("cookie", format!("fascicolo_login={login_cookie}")).send().await.unwrap();
    assert_eq!(again.status(), 400, "a replayed state must be refused");
    set_cookie(&r, "fascicolo_session").unwrap()
}

/// The `fascicolo` binary as a user runs it, without the environment's store or address, and
/// without the emergency-room simulation (its writes would change what the tests count).
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fascicolo"));
    c.env_remove("FASCICOLO_DATABASE_URL").env_remove("FASCICOLO_LISTEN").env_remove("FASCICOLO_DATA_DIR");
    c.env("FASCICOLO_ER__SIMULATE", "false");
    c
}

/// Starts `fascicolo serve` with these arguments and waits for the line it prints: the child
/// and its `host:port`.
pub fn serve(args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = bin().args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("serving on http://"), "{line}");
    let addr = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_string();
    (child, addr)
}

fn docref(id: &str, patient: &str, loinc: &str, title: &str, date: &str, security: &[(&str, &str)]) -> Value {
    let mut d = json!({"resourceType": "DocumentReference", "id": id, "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": title}]},
        "subject": {"reference": format!("Patient/{patient}")}, "date": date, "description": title,
        "custodian": {"reference": format!("Organization/{}", fascicolo_load::demo::DEMO_HOSPITAL_ORG)},
        // content the portal can show (a document without any is not listed)
        "content": [{"attachment": {"contentType": "text/plain", "title": title,
            "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{title}: testo del documento di prova"))}}]});
    if !security.is_empty() {
        d["meta"] = json!({"security": security.iter().map(|(s, c)| json!({"system": s, "code": c})).collect::<Vec<_>>()});
    }
    d
}

/// The privacy tests' own records on the demo registry (after `demo::seed`): documents with
/// every kind of hiding and an art. 6 item, two glucose values (one from a report), Luca's flu
/// shot, and a specialist's report written through the gate as him. Hand-made FHIR without
/// originals, for tests that need fixed ids: the demo server never has them (its records are
/// published through the producer path, `demo::seed_histories`).
pub async fn record_fixtures(fhir: &fascicolo_app::FhirService) {
    use fascicolo_app::{Actor, Who};
    let put = |v: Value| async move {
        let rt = v["resourceType"].as_str().unwrap_or_default().to_string();
        let id = v["id"].as_str().unwrap_or_default().to_string();
        fhir.update(&Actor::system(), &rt, &id, v.to_string().as_bytes(), None).await.unwrap_or_else(|e| panic!("{rt}/{id}: {e}"));
    };
    // Giulia's documents: a lab report with results, a patient summary, a report she hid from
    // clinicians (P99), an art. 6 test result
    put(docref("doc-giulia-lab", "rossi-giulia", "11502-2", "Referto di laboratorio", "2026-10-02T08:00:00Z", &[])).await;
    for (i, (v, date)) in [(92.0, "2025-10-01T08:00:00Z"), (104.0, "2026-10-02T08:00:00Z")].iter().enumerate() {
        let mut o = json!({"resourceType": "Observation", "id": format!("obs-giulia-glucose-{i}"), "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucosio"}]},
            "subject": {"reference": "Patient/rossi-giulia"}, "effectiveDateTime": date,
            "valueQuantity": {"value": v, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
            "referenceRange": [{"low": {"value": 70, "unit": "mg/dL"}, "high": {"value": 99, "unit": "mg/dL"}}]});
        if i == 1 {
            o["meta"] =
                json!({"tag": [{"system": fascicolo_domain::privacy::labels::DOCUMENT, "code": "DocumentReference/doc-giulia-lab"}]});
        }
        put(o).await;
    }
    put(docref("doc-giulia-summary", "rossi-giulia", "60591-5", "Profilo sanitario sintetico", "2026-09-01T08:00:00Z", &[])).await;
    put(docref(
        "doc-giulia-psy",
        "rossi-giulia",
        "11488-4",
        "Referto di consulenza psicologica",
        "2026-06-12T10:00:00Z",
        &[(fascicolo_domain::privacy::labels::HIDING, "P99")],
    ))
    .await;
    put(docref(
        "doc-giulia-hiv",
        "rossi-giulia",
        "11502-2",
        "Test HIV",
        "2026-03-03T10:00:00Z",
        &[(fascicolo_domain::privacy::labels::ART6, "hiv")],
    ))
    .await;
    // Luca's flu shot at two (recommended from 6 months to 6 years; the national calendar's
    // doses come with his published history), and a document his record keeps from parents (P97)
    put(json!({"resourceType": "Immunization", "id": "imm-luca-flu", "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J07BB02", "display": "Vaccino antinfluenzale quadrivalente"}],
            "text": "Vaccino antinfluenzale quadrivalente"},
        "patient": {"reference": "Patient/bianchi-luca"}, "occurrenceDateTime": "2018-10-22",
        "protocolApplied": [{"doseNumberPositiveInt": 1}]}))
    .await;
    put(docref(
        "doc-luca-consultorio",
        "bianchi-luca",
        "11488-4",
        "Colloquio al consultorio",
        "2026-05-05T15:00:00Z",
        &[(fascicolo_domain::privacy::labels::HIDING, "P97")],
    ))
    .await;
    put(docref("doc-anna-ldo", "verdi-anna", "34105-7", "Lettera di dimissione ospedaliera", "2026-08-20T12:00:00Z", &[])).await;
    // the specialist's own report on Giulia, written through the gate as him
    let ricci = Actor::new(Who::Professional {
        practitioner: "ricci-marco".into(),
        organization: Some(fascicolo_load::demo::DEMO_HOSPITAL_ORG.into()),
        role: fascicolo_app::gate::ProRole::Specialist,
    });
    let report = docref("doc-giulia-cardio", "rossi-giulia", "11488-4", "Referto di visita cardiologica", "2026-11-02T10:00:00Z", &[]);
    fhir.update(&ricci, "DocumentReference", "doc-giulia-cardio", report.to_string().as_bytes(), None)
        .await
        .expect("the specialist's report");
}

/// A portal page with a session cookie, not following redirects: (status, Location, body).
pub async fn page(app: &TestApp, cookie: &str, path: &str) -> (u16, String, String) {
    let r = no_redirects().get(format!("{}{path}", app.root)).header("cookie", cookie).send().await.unwrap();
    let s = r.status().as_u16();
    let loc = r.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (s, loc, r.text().await.unwrap())
}

/// A portal form posted with a session cookie, not following redirects: (status, Location, body).
pub async fn post(app: &TestApp, cookie: &str, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
    let r = no_redirects().post(format!("{}{path}", app.root)).header("cookie", cookie).form(form).send().await.unwrap();
    let s = r.status().as_u16();
    let loc = r.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (s, loc, r.text().await.unwrap())
}
