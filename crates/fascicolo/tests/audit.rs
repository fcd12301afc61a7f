//! Every audited access is in the patient's log, counted: under concurrency, and after the
//! server process is killed with SIGKILL in the middle of the load (ARCHITECTURE.md invariant 4:
//! the entry is durable before the data leaves the server).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fascicolo_store::{AccessQuery, Store};

mod common;

/// The platform client's accesses to one record, as the store holds them.
async fn logged(dir: &std::path::Path, patient: &str) -> u64 {
    let store = fascicolo_store_sqlite::SqliteStore::open(dir.join("fascicolo.db")).unwrap();
    let q = AccessQuery {
        patient: Some(fascicolo_domain::PatientKey::for_patient_id(patient)),
        agents: vec!["urn:fascicolo:client|demo-platform".into()],
        ..Default::default()
    };
    store.access_count(&q).await.unwrap()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_access_survives_a_kill_9() {
    let dir = std::env::temp_dir().join(format!("fascicolo-kill-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = common::bin().args(["--data", dir.to_str().unwrap(), "token", "--as", "system:demo-platform"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (mut child, addr) = common::serve(&["--data", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let base = format!("http://{addr}/fhir/r4");
    let client = reqwest::Client::new();
    let patient = "kill-nine-patient";
    let put = client
        .put(format!("{base}/Patient/{patient}"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(serde_json::json!({"resourceType": "Patient", "id": patient, "name": [{"family": "Nove"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());

    // 16 clients read the record as fast as they can; the process is killed under them
    let answered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for _ in 0..16 {
        let (client, url, token) = (client.clone(), format!("{base}/Patient/{patient}"), token.clone());
        let (answered, sent) = (Arc::clone(&answered), Arc::clone(&sent));
        loops.push(tokio::spawn(async move {
            loop {
                sent.fetch_add(1, Ordering::SeqCst);
                match client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => {
                        if r.bytes().await.is_ok() {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    child.wait().unwrap();
    for l in loops {
        l.await.unwrap();
    }
    let (answered, sent) = (answered.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
    assert!(answered > 50, "the load ran ({answered} answers)");
    // the write of the Patient is one entry; every answered read has its own, and no entry
    // exists for a read that was never sent
    let n = logged(&dir, patient).await;
    assert!(n > answered, "{n} entries for {answered} answered reads (+1 write)");
    assert!(n <= sent + 1, "{n} entries for {sent} reads sent (+1 write)");
}

/// The access log through the FHIR API: each access of the platform client is one entry; read
/// by id (one version), searched by date and entity, paged without loss, counted; unsupported
/// parameters are named; nobody writes it.
#[tokio::test]
async fn the_log_reads_pages_and_filters_like_a_resource() {
    let app = common::spawn_app().await;
    let p = app
        .post("/Patient", serde_json::json!({"resourceType": "Patient", "name": [{"family": "Registro"}], "birthDate": "1970-01-01"}))
        .await;
    assert_eq!(p.status, 201, "{}", p.body);
    let pid = p.body["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mid = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
    tokio::time::sleep(Duration::from_millis(5)).await;
    for _ in 0..4 {
        assert_eq!(app.get(&format!("/Patient/{pid}")).await.status, 200);
    }
    // another record, read twice: its log is its own
    let other = app.post("/Patient", serde_json::json!({"resourceType": "Patient", "name": [{"family": "Altro"}]})).await;
    let other = other.body["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(app.get(&format!("/Patient/{other}")).await.status, 200);
    }
    // one entry for the create, one per read; reading the log is an access of its own, logged
    // after the answer is made, so the count below does not include itself; `patient=` confines
    // the platform's search to that record (it once returned every record's log)
    let count = app.get(&format!("/AuditEvent?patient={pid}&_summary=count")).await;
    assert_eq!(count.body["total"], 5, "{}", count.body);
    let theirs = app.get(&format!("/AuditEvent?patient=Patient/{other}&_count=100")).await;
    assert_eq!(theirs.body["total"], 3, "{}", theirs.body);
    assert!(!theirs.body.to_string().contains(&format!("Patient/{pid}")), "another record's entries: {}", theirs.body);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = app.get(&format!("/AuditEvent?patient={pid}&date=ge{mid}&date=le{now}&_count=100")).await;
    let actions: Vec<&str> = later.body["entry"].as_array().unwrap().iter().map(|e| e["resource"]["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["R", "R", "R", "R"], "the create came before {mid}");
    let creates = app.get(&format!("/AuditEvent?patient={pid}&action=C&date=le{now}")).await;
    assert_eq!(creates.body["entry"].as_array().map(Vec::len), Some(1), "{}", creates.body);
    let first = &creates.body["entry"][0]["resource"];
    assert_eq!(first["entity"][0]["what"]["reference"], format!("Patient/{pid}"));
    assert_eq!(first["agent"][0]["who"]["identifier"]["system"], "urn:fascicolo:client");

    // paging: two by two, newest first, every entry once (the searches above are logged
    // after `now`)
    let mut seen = Vec::new();
    let mut next = Some(format!("/AuditEvent?patient={pid}&_count=2&date=le{now}"));
    while let Some(url) = next {
        let page = app.get(&url).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let mut when = Vec::new();
        for e in page.body["entry"].as_array().into_iter().flatten() {
            seen.push(e["resource"]["id"].as_str().unwrap().to_string());
            when.push(e["resource"]["recorded"].as_str().unwrap().to_string());
        }
        assert!(when.windows(2).all(|w| w[0] >= w[1]), "newest first: {when:?}");
        next = page.body["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").map(|l| {
            let u = l["url"].as_str().unwrap();
            u[u.find("/AuditEvent").unwrap()..].to_string()
        });
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (5, 5), "{seen:?}");

    // read by id and its one version
    let id = &seen[0];
    let read = app.get(&format!("/AuditEvent/{id}")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["id"], id.as_str());
    assert_eq!(app.get(&format!("/AuditEvent/{id}/_history/1")).await.status, 200);
    assert_eq!(app.get(&format!("/AuditEvent/{id}/_history/2")).await.status, 404);
    assert_eq!(app.get(&format!("/AuditEvent/{}", "0".repeat(64))).await.status, 404);

    // what the log cannot answer is named, and nobody writes it
    let bad = app.get(&format!("/AuditEvent?patient={pid}&site=x")).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.to_string().contains("patient, date, agent"), "{}", bad.body);
    let sorted = app.get(&format!("/AuditEvent?patient={pid}&_sort=action")).await;
    assert_eq!(sorted.status, 400, "{}", sorted.body);
    let ev = serde_json::json!({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": true}], "source": {"observer": {"display": "x"}}, "entity": [{"what": {"reference": format!("Patient/{pid}")}}]});
    let write = app.post("/AuditEvent", ev).await;
    assert_eq!(write.status, 403, "{}", write.body);
}
