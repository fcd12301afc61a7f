//! FHIR Bulk Data `$export` over HTTP (decision 0012): kick-off, polling, files; what leaves
//! and what never does (hidden and art. 6 items); the access log of every record exported;
//! refusals (a second export, another client's job, people's tokens, bad parameters); cancel;
//! and a runner that dies mid-export, taken over by the next poll. SQLite, and PostgreSQL when
//! configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use fascicolo_app::bulk::{Exports, Level, Status, Tuning};
use fascicolo_app::gate::ProRole;
use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_domain::PatientKey;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const ASYNC: (&str, &str) = ("prefer", "respond-async");

fn other_platform() -> Actor {
    Actor::new(Who::Client { client_id: "other-platform".into(), organization: None, platform: true })
}

async fn seeded() -> TestApp {
    seeded_with(|_| {}).await
}

/// The demo registry on an app with this configuration.
async fn seeded_with(tune: impl FnOnce(&mut fascicolo_server::config::Config)) -> TestApp {
    let app = spawn_app_with(tune).await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    assert!(fascicolo_load::demo::seed(&fhir).await.unwrap());
    record_fixtures(&fhir).await;
    app
}

/// Kick off `path` as the app's platform client; returns the status URL.
async fn kick_off(app: &TestApp, path: &str) -> String {
    let r = app.send("GET", path, None, &[ASYNC]).await;
    assert_eq!(r.status, 202, "{path}: {}", r.body);
    r.headers.get("content-location").expect("Content-Location").to_str().unwrap().to_string()
}

/// Poll until the manifest (at most 60 s).
async fn manifest(app: &TestApp, status_url: &str) -> Value {
    for _ in 0..600 {
        let r = app.get(status_url).await;
        match r.status {
            202 => {
                assert!(r.headers.get("x-progress").is_some() && r.headers.get("retry-after").is_some());
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            200 => return r.body,
            other => panic!("status {other}: {}", r.body),
        }
    }
    panic!("the export did not finish in 60 s");
}

/// Every line of every file of a manifest, by type (checking each file's type and count).
async fn download(app: &TestApp, m: &Value) -> BTreeMap<String, Vec<Value>> {
    assert_eq!(m["requiresAccessToken"], true);
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for f in m["output"].as_array().unwrap() {
        let url = f["url"].as_str().unwrap();
        let r = app.client.get(url).bearer_auth(&app.token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
        let text = r.text().await.unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("one resource per line")).collect();
        assert_eq!(lines.len() as u64, f["count"].as_u64().unwrap());
        for l in &lines {
            assert_eq!(l["resourceType"], f["type"]);
        }
        out.entry(f["type"].as_str().unwrap().to_string()).or_default().extend(lines);
    }
    out
}

fn ids_of(v: &[Value]) -> BTreeSet<String> {
    v.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

/// Every current resource of a type as the platform searches it, minus those carrying a
/// visibility restriction (computed from the labels, not by the export code).
async fn unrestricted(app: &TestApp, t: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut url = format!("/{t}?_count=1000");
    loop {
        let b = app.get(&url).await.body;
        for e in b["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            let restricted = r["meta"]["security"].as_array().into_iter().flatten().any(|c| c["system"] == "urn:fascicolo:visibility");
            if !restricted {
                out.insert(r["id"].as_str().unwrap().to_string());
            }
        }
        match b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(l) => url = l["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_export_holds_everything_unrestricted_and_logs_every_record() {
    // small steps: the export is still running when the second kick-off comes
    let app = seeded_with(|c| {
        c.export.page_rows = 2;
        c.export.checkpoint_kib = 8;
    })
    .await;
    let before = app.store.access_count(&fascicolo_store::AccessQuery::default()).await.unwrap();
    let status = kick_off(&app, "/$export?_type=Patient,DocumentReference,Observation,Organization").await;
    assert!(status.starts_with(&app.base) && status.contains("/$export-status/"));
    // one export at a time per client: the second is refused and told where the first is
    let again = app.send("GET", "/$export", None, &[ASYNC]).await;
    assert_eq!(app.get(&status).await.status, 202, "the first export had already finished: the 429 below proves nothing");
    assert_eq!(again.status, 429, "{}", again.body);
    assert!(again.body["issue"][0]["diagnostics"].as_str().unwrap().contains(&status));
    // another client never sees this job
    let other = token_for(&app.store, &other_platform()).await;
    assert_eq!(app.get_as(&status, &other).await.status, 404);
    assert_eq!(app.send("DELETE", &status, None, &[("authorization", &format!("Bearer {other}"))]).await.status, 404);

    let m = manifest(&app, &status).await;
    assert!(m["transactionTime"].as_str().is_some());
    assert!(m["request"].as_str().unwrap().ends_with("/$export?_type=Patient,DocumentReference,Observation,Organization"));
    // the files are the requesting client's alone
    let first = m["output"][0]["url"].as_str().unwrap();
    assert_eq!(app.client.get(first).bearer_auth(&other).send().await.unwrap().status(), 404);
    assert_eq!(app.client.get(first).send().await.unwrap().status(), 401);
    let files = download(&app, &m).await;
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), ["DocumentReference", "Observation", "Organization", "Patient"]);
    for (t, lines) in &files {
        assert_eq!(ids_of(lines).len(), lines.len(), "{t}: a resource written twice");
        assert_eq!(ids_of(lines), unrestricted(&app, t).await, "{t}");
    }
    // hidden documents (P99, P98) and art. 6 ones leave nowhere, with anything derived from them
    let docs = ids_of(&files["DocumentReference"]);
    for gone in ["doc-giulia-psy", "doc-giulia-hiv"] {
        assert!(!docs.contains(gone), "{gone} was exported");
    }
    assert!(docs.contains("doc-giulia-lab") && docs.contains("doc-giulia-cardio"));
    assert!(files.values().flatten().all(|r| !r.to_string().contains("urn:fascicolo:visibility")));

    // every record exported has one access-log entry naming the client and the export
    let patients: BTreeSet<String> = ids_of(&files["Patient"]);
    let after = app.store.access_count(&fascicolo_store::AccessQuery::default()).await.unwrap();
    assert!(after - before >= patients.len() as u64, "{} entries for {} records", after - before, patients.len());
    for p in &patients {
        let q = fascicolo_store::AccessQuery { patient: Some(PatientKey::for_patient_id(p)), limit: 50, ..Default::default() };
        let log = app.store.access_log(&q).await.unwrap();
        assert!(
            log.iter().any(|e| e.agent == "urn:fascicolo:client|tests" && e.content.contains("bulk export")),
            "no access-log entry for {p}'s export"
        );
    }
    // the citizen reads it in her access log, with the documents that left
    let giulia = fascicolo_app::access::audit_resource(
        &app.store
            .access_log(&fascicolo_store::AccessQuery {
                patient: Some(PatientKey::for_patient_id("rossi-giulia")),
                limit: 50,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.content.contains("bulk export"))
            .unwrap(),
    )
    .unwrap();
    let seen = giulia.to_string();
    assert!(seen.contains("DocumentReference/doc-giulia-lab") && !seen.contains("doc-giulia-psy"), "{seen}");
    assert!(seen.contains("bulk-export"), "the entry says it was an export: {seen}");
    // and her portal's access log says so in words, not as a search
    let session = sign_in(&app, &fascicolo_load::demo::cf("RSSGLI85D52F205"), "citizen").await;
    let page = no_redirects()
        .get(format!("{}/privacy/accessi", app.root))
        .header("cookie", format!("fascicolo_session={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Ha esportato i dati del fascicolo"), "the export is not named in the portal's log");

    // the claim is released: a new export may start
    kick_off(&app, "/Patient/$export?_type=Condition").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_type_filter_group_and_patient_level_choose_what_leaves() {
    let app = seeded().await;
    // _since: only what changed after the instant
    let mark = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let pid = app.create(patient("Esposito", "SPSMRA80A01F205X")).await;
    let obs = app.create(observation(&pid, "2345-7", 101.0, "2026-11-30T08:00:00Z")).await;
    let status = kick_off(&app, &format!("/$export?_since={}", mark.replace('+', "%2B"))).await;
    let files = download(&app, &manifest(&app, &status).await).await;
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), ["Observation", "Patient"]);
    assert_eq!(ids_of(&files["Patient"]), BTreeSet::from([pid.clone()]));
    assert_eq!(ids_of(&files["Observation"]), BTreeSet::from([obs.clone()]));

    // _typeFilter: only the matching resources of that type, the other types whole
    app.create(observation(&pid, "2093-3", 180.0, "2026-11-30T08:00:00Z")).await;
    let status = kick_off(&app, "/Patient/$export?_type=Observation,Patient&_typeFilter=Observation%3Fcode%3D2345-7").await;
    let files = download(&app, &manifest(&app, &status).await).await;
    assert!(files["Observation"].iter().all(|o| o["code"]["coding"][0]["code"] == "2345-7"), "a filtered-out Observation left");
    assert!(ids_of(&files["Observation"]).contains(&obs));
    assert_eq!(ids_of(&files["Patient"]), unrestricted(&app, "Patient").await);
    // several filters of a type: a resource any of them matches
    let status =
        kick_off(&app, "/Patient/$export?_type=Observation&_typeFilter=Observation%3Fcode%3D2345-7,Observation%3Fcode%3D2093-3").await;
    let files = download(&app, &manifest(&app, &status).await).await;
    let codes: BTreeSet<String> =
        files["Observation"].iter().map(|o| o["code"]["coding"][0]["code"].as_str().unwrap().to_string()).collect();
    assert_eq!(codes, BTreeSet::from(["2093-3".to_string(), "2345-7".to_string()]));

    // Group: the active members' records only
    let group = app
        .create(json!({"resourceType": "Group", "type": "person", "actual": true, "member": [
            {"entity": {"reference": format!("Patient/{pid}")}},
            {"entity": {"reference": "Patient/rossi-giulia"}, "inactive": true}]}))
        .await;
    let status = kick_off(&app, &format!("/Group/{group}/$export")).await;
    let files = download(&app, &manifest(&app, &status).await).await;
    assert_eq!(ids_of(&files["Patient"]), BTreeSet::from([pid.clone()]));
    for lines in files.values() {
        for r in lines {
            let s = r.to_string();
            assert!(r["resourceType"] == "Patient" || s.contains(&format!("Patient/{pid}")), "not the member's: {s}");
        }
    }
    assert!(!files.contains_key("Organization"), "shared data are not a member's record");
    assert_eq!(app.send("GET", "/Group/no-such-group/$export", None, &[ASYNC]).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_kick_offs_are_refused_and_start_nothing() {
    let app = seeded().await;
    for (path, status, says) in [
        ("/$export?_type=Nonsense", 400, "not a FHIR R4 resource type"),
        ("/$export?_since=yesterday", 400, "not a FHIR instant"),
        ("/$export?_since=2999-01-01T00:00:00Z", 400, "in the future"),
        ("/$export?_outputFormat=text/csv", 400, "_outputFormat"),
        ("/$export?_typeFilter=Observation", 400, "Type?param=value"),
        ("/$export?_typeFilter=Observation%3Fnonsense%3D1", 400, "nonsense"),
        ("/$export?_typeFilter=Observation%3F_sort%3Ddate", 400, "not a filter"),
        ("/$export?_type=Patient&_typeFilter=Observation%3Fcode%3D1", 400, "_type leaves out"),
        ("/$export?patient=Patient/x", 400, "not supported"),
        ("/$export?_count=10", 400, "not a $export parameter"),
        ("/$export?_type=AuditEvent", 400, "access log is not exported"),
        ("/Patient/$export?_typeFilter=AuditEvent%3Fdate%3Dge2026-01-01", 400, "access log is not exported"),
        ("/Patient/$export?_type=Organization", 400, "not part of a patient's record"),
    ] {
        let r = app.send("GET", path, None, &[ASYNC]).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        let d = r.body["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(d.contains(says), "{path}: {d}");
    }
    // synchronous requests are not how exports work
    let r = app.get("/$export").await;
    assert_eq!(r.status, 400);
    assert!(r.body["issue"][0]["diagnostics"].as_str().unwrap().contains("respond-async"));
    // people do not export: a citizen, a clinician, a hospital's producer system; nobody anonymous
    let citizen = Actor::new(Who::Citizen {
        cf: fascicolo_domain::CodiceFiscale::parse(&fascicolo_load::demo::cf("RSSGLI85D52F205")).unwrap(),
        patient: Some("rossi-giulia".into()),
    });
    let gp = Actor::new(Who::Professional { practitioner: "ferrari-paolo".into(), organization: None, role: ProRole::Gp });
    let producer =
        Actor::new(Who::Client { client_id: "demo-hospital".into(), organization: Some("asst-fbf-sacco".into()), platform: false });
    for a in [citizen, gp, producer] {
        let t = token_for(&app.store, &a).await;
        let r = app.send("GET", "/Patient/$export", None, &[ASYNC, ("authorization", &format!("Bearer {t}"))]).await;
        assert_eq!(r.status, 403, "{:?}: {}", a.who, r.body);
    }
    assert_eq!(app.send("GET", "/$export", None, &[ASYNC, ("authorization", "")]).await.status, 401);
    // none of that started anything: the client may export now
    let status = kick_off(&app, "/$export?_type=Organization").await;
    // and a cancelled export is gone, its claim released
    assert_eq!(app.send("DELETE", &status, None, &[]).await.status, 202);
    assert_eq!(app.get(&status).await.status, 404);
    assert_eq!(app.send("DELETE", &status, None, &[]).await.status, 404);
    kick_off(&app, "/$export?_type=Organization").await;
    // unknown jobs and files
    assert_eq!(app.get("/$export-status/0123abcd").await.status, 404);
    assert_eq!(app.get("/$export-file/0123abcd/0").await.status, 404);
}

/// A runner that stops after its first checkpoint holding its lease, as a killed server does:
/// the next poll after the lease expires takes the job over and finishes it, and the files hold
/// every resource exactly once (the same as an export that never stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_server_died_is_taken_over_and_completes_once() {
    let app = seeded().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    let blobs: Arc<dyn fascicolo_blobs::BlobStore> = Arc::new(fascicolo_blobs::MemoryBlobs::default());
    let small = Tuning { page: 7, file_bytes: 4_000, checkpoint_bytes: 6_000, lease_ms: 400, crash_after_checkpoints: Some(1) };
    let dying = Exports::with_tuning(fhir.clone(), Arc::clone(&blobs), small.clone());
    let actor = platform_actor();
    let id = dying.kick_off(&actor, Level::Patient, &[], "Patient/$export", "http://x").await.unwrap();
    // the dead runner's lease holds for a while: nobody takes over early
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let survivor = Exports::with_tuning(fhir.clone(), Arc::clone(&blobs), Tuning { crash_after_checkpoints: None, ..small });
    let mut exported_at_crash = None;
    let manifest = loop {
        match survivor.status(&actor, &id).await.unwrap() {
            Status::Done(m) => break m,
            Status::InProgress { exported } => {
                exported_at_crash.get_or_insert(exported);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Status::Failed(why) => panic!("{why}"),
        }
    };
    assert!(exported_at_crash.unwrap() > 0, "the first runner recorded a checkpoint before it died");
    let mut resumed: Vec<(String, String)> = Vec::new();
    for (n, f) in manifest.files.iter().enumerate() {
        let (_, bytes) = survivor.file(&actor, &id, n).await.unwrap();
        for l in String::from_utf8(bytes).unwrap().lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["resourceType"], f.resource_type.as_str());
            resumed.push((f.resource_type.clone(), v["id"].as_str().unwrap().to_string()));
        }
    }
    let total = resumed.len();
    resumed.sort();
    resumed.dedup();
    assert_eq!(resumed.len(), total, "a resource was written twice across the takeover");
    // the same export in one go
    let clean = Exports::new(fhir, Arc::new(fascicolo_blobs::MemoryBlobs::default()));
    let other = other_platform();
    let id2 = clean.kick_off(&other, Level::Patient, &[], "Patient/$export", "http://x").await.unwrap();
    let m2 = loop {
        match clean.status(&other, &id2).await.unwrap() {
            Status::Done(m) => break m,
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    let mut whole: Vec<(String, String)> = Vec::new();
    for (n, f) in m2.files.iter().enumerate() {
        let (_, bytes) = clean.file(&other, &id2, n).await.unwrap();
        whole.extend(String::from_utf8(bytes).unwrap().lines().map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (f.resource_type.clone(), v["id"].as_str().unwrap().to_string())
        }));
    }
    whole.sort();
    assert_eq!(resumed, whole);
    assert!(manifest.files.len() > 2, "small files: the takeover resumed mid-way");
}

/// Cancelling a running export stops it: the job is gone for good (a runner that records its
/// progress after the cancel does not bring it back), no file is written after, and the
/// client may start another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cancelled_half_way_stops_and_stays_cancelled() {
    let app = seeded().await;
    let fhir = FhirService::new(Arc::clone(&app.store));
    // a folder: it keeps the files' times, so every file written can be listed
    let folder = std::env::temp_dir().join(format!("fascicolo-export-cancel-{}", uuid::Uuid::now_v7()));
    let blobs: Arc<dyn fascicolo_blobs::BlobStore> = Arc::new(fascicolo_blobs::FolderBlobs::new(&folder));
    // one resource a page and small files: slow enough to be caught half way even when the
    // machine is busy (with 3 a page it once finished between two polls under a full test run)
    let slow = Tuning { page: 1, file_bytes: 400, checkpoint_bytes: 400, lease_ms: 30_000, crash_after_checkpoints: None };
    let exports = Exports::with_tuning(fhir, Arc::clone(&blobs), slow);
    let actor = platform_actor();
    let id = exports.kick_off(&actor, Level::System, &[], "$export", "http://x").await.unwrap();
    let written = || async { blobs.written_before(i64::MAX).await.unwrap().len() };
    for _ in 0..1000 {
        if written().await >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(written().await >= 3, "the export wrote no files in 10 s");
    assert!(matches!(exports.status(&actor, &id).await.unwrap(), Status::InProgress { .. }), "still running when cancelled");
    exports.cancel(&actor, &id).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = written().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(written().await, after, "the runner went on writing files after the cancel");
    assert!(matches!(exports.status(&actor, &id).await, Err(fascicolo_app::AppError::NotFound(_))));
    assert!(matches!(exports.cancel(&actor, &id).await, Err(fascicolo_app::AppError::NotFound(_))));
    exports.kick_off(&actor, Level::System, &[("_type".into(), "Organization".into())], "$export", "http://x").await.unwrap();
}

/// The server running an export is killed with SIGKILL mid-way; started again on the same data,
/// the next status poll takes the job over (its lease ran out) and finishes it: every resource
/// unrestricted once, and the access log of every record exported.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_survives_a_kill_9_of_its_server() {
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("fascicolo-export-kill-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    // small steps and a short lease, so the kill lands mid-way and the takeover comes soon
    let config = dir.join("fascicolo.toml");
    std::fs::write(&config, "[export]\npage_rows = 5\ncheckpoint_kib = 2\nlease_seconds = 1\n").unwrap();
    let (d, c) = (dir.to_str().unwrap(), config.to_str().unwrap());
    let out = bin().args(["--data", d, "--config", c, "token", "--as", "system:demo-platform"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let http = reqwest::Client::new();

    let (mut first, addr) = serve(&["--data", d, "--config", c, "--listen", "127.0.0.1:0"]);
    let r = http.get(format!("http://{addr}/fhir/r4/$export")).bearer_auth(&token).header("prefer", "respond-async").send().await.unwrap();
    assert_eq!(r.status(), 202);
    let status = r.headers()["content-location"].to_str().unwrap().to_string();
    let job = status.rsplit('/').next().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = http.get(&status).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 202, "the export finished before the kill: nothing to take over");
    let progress = r.headers()["x-progress"].to_str().unwrap().to_string();
    assert!(Command::new("kill").args(["-KILL", &first.id().to_string()]).status().unwrap().success());
    first.wait().unwrap();

    let (mut second, addr) = serve(&["--data", d, "--config", c, "--listen", "127.0.0.1:0"]);
    let base = format!("http://{addr}/fhir/r4");
    let status = format!("{base}/$export-status/{job}");
    let manifest: Value = loop {
        let r = http.get(&status).bearer_auth(&token).send().await.unwrap();
        match r.status().as_u16() {
            202 => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            200 => break r.json().await.unwrap(),
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    };
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in manifest["output"].as_array().unwrap() {
        // the manifest is the second server's: its links lead there
        let url = f["url"].as_str().unwrap();
        assert!(url.starts_with(&base), "{url}");
        let text = http.get(url).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
        let ids = files.entry(f["type"].as_str().unwrap().to_string()).or_default();
        ids.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_string()));
    }
    // what a search finds, without restricted items, is exactly what was exported, once
    for (t, ids) in &files {
        let mut want = BTreeSet::new();
        let mut url = format!("{base}/{t}?_count=1000");
        loop {
            let b: Value = http.get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
            for e in b["entry"].as_array().into_iter().flatten() {
                let sec = e["resource"]["meta"]["security"].to_string();
                if !sec.contains("urn:fascicolo:visibility") {
                    want.insert(e["resource"]["id"].as_str().unwrap().to_string());
                }
            }
            match b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
                Some(l) => url = l["url"].as_str().unwrap().to_string(),
                None => break,
            }
        }
        let got: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(got.len(), ids.len(), "{t}: a resource exported twice across the kill ({progress} before it)");
        assert_eq!(got, want, "{t}");
    }
    second.kill().unwrap();
    second.wait().unwrap();
    // every record exported has its access-log entry, whichever server wrote it
    let store = fascicolo_store_sqlite::SqliteStore::open(dir.join("fascicolo.db")).unwrap();
    use fascicolo_store::Store as _;
    for p in &files["Patient"] {
        let q = fascicolo_store::AccessQuery { patient: Some(PatientKey::for_patient_id(p)), limit: 100, ..Default::default() };
        let log = store.access_log(&q).await.unwrap();
        assert!(log.iter().any(|e| e.content.contains("bulk export")), "no access-log entry for {p}");
    }
}
