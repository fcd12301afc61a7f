//! Notifications leave through the transactional outbox: one per access by a professional
//! (coalesced per hour, emergencies always), none for the citizen's own or a parent's actions,
//! per-kind-and-channel opt-out, no personal or clinical data; delivered by SMTP, by an SMS
//! gateway, or into the demo folder, with retries when a channel fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::routing::post;
use axum::Router;
use common::*;
use fascicolo_app::gate::ProRole;
use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_server::config::Config;
use fascicolo_server::worker::{run_once, Channels};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const GIULIA_CF: &str = "RSSGLI85D52F205Q";

fn gp() -> Actor {
    Actor::new(Who::Professional { practitioner: "ferrari-paolo".into(), organization: None, role: ProRole::Gp })
}

fn giulia(acting_for: &str) -> Actor {
    let mut a =
        Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(GIULIA_CF).unwrap(), patient: Some("rossi-giulia".into()) });
    a.acting_for = Some(acting_for.into());
    a
}

fn files(dir: &std::path::Path) -> Vec<Value> {
    let mut v: Vec<(String, Value)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| (e.file_name().to_string_lossy().to_string(), serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap()))
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.into_iter().map(|(_, j)| j).collect()
}

async fn setup() -> (FhirService, std::path::PathBuf, Arc<dyn fascicolo_store::Store>) {
    let store = fresh_store().await;
    let fhir = FhirService::new(Arc::clone(&store));
    fascicolo_load::demo::seed(&fhir).await.unwrap();
    record_fixtures(&fhir).await;
    // nothing from the seeding is pending
    let _ = store.outbox_claim(i64::MAX / 2, 1, 10_000).await.unwrap();
    let dir = std::env::temp_dir().join(format!("fascicolo-outbox-{}", uuid::Uuid::now_v7()));
    (fhir, dir, store)
}

fn folder_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.notify.outbox_dir = Some(dir.to_path_buf());
    cfg
}

#[tokio::test]
async fn accesses_are_notified_without_personal_data() {
    let (fhir, dir, _) = setup().await;
    let channels = Channels::from_config(&folder_config(&dir)).unwrap();
    let site = "https://fse.example";
    // the citizen's own reads: nothing
    fhir.read(&giulia("rossi-giulia"), "Patient", "rossi-giulia").await.unwrap();
    assert_eq!(run_once(&fhir, &channels, site).await.unwrap(), 0);
    // her GP reads her record: an e-mail and an SMS (she has both addresses)
    fhir.read(&gp(), "Patient", "rossi-giulia").await.unwrap();
    assert_eq!(run_once(&fhir, &channels, site).await.unwrap(), 1);
    let sent = files(&dir);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let channels_used: Vec<&str> = sent.iter().map(|m| m["channel"].as_str().unwrap()).collect();
    assert!(channels_used.contains(&"email") && channels_used.contains(&"sms"));
    for m in &sent {
        let text = m.to_string();
        let body = m["text"].as_str().unwrap();
        assert!(
            body.contains("nuovo accesso") && body.contains("https://fse.example/privacy/accessi"),
            "the link leads to the access log: {text}"
        );
        assert!(!body.contains("emergenza=1"), "{text}");
        for personal in ["Rossi", "Giulia", GIULIA_CF, "Ferrari", "ferrari-paolo", "rossi-giulia", "glucos", "Referto"] {
            assert!(
                !m["text"].as_str().unwrap().contains(personal) && !m["subject"].as_str().unwrap().contains(personal),
                "{personal} in {text}"
            );
        }
    }
    // the same GP again within the hour: one notification is enough, and the second access
    // stores no message at all (coalesced when its log entry is written)
    fhir.search(&gp(), Some("DocumentReference"), &[("patient".into(), "rossi-giulia".into())], "").await.unwrap();
    assert_eq!(run_once(&fhir, &channels, site).await.unwrap(), 0, "no second message");
    assert_eq!(files(&dir).len(), 2, "coalesced");
    // a parent's action for her son: logged, not notified
    fhir.search(&giulia("bianchi-luca"), Some("Immunization"), &[], "").await.unwrap();
    run_once(&fhir, &channels, site).await.unwrap();
    assert_eq!(files(&dir).len(), 2);
    // the citizen switches access e-mails off: the next access reaches her by SMS only
    fhir.set_notifications_off(&giulia("rossi-giulia"), "rossi-giulia", &["access.email".into()]).await.unwrap();
    assert_eq!(fhir.notifications_off(&giulia("rossi-giulia"), "rossi-giulia").await.unwrap(), vec!["access.email"]);
    assert!(fhir.set_notifications_off(&gp(), "rossi-giulia", &[]).await.is_err(), "only the citizen");
    assert!(fhir.set_notifications_off(&giulia("rossi-giulia"), "rossi-giulia", &["access.pigeon".into()]).await.is_err());
    // the specialist wrote in her record during the demo's setup, this same hour: his read now
    // makes no second message (the hour's first one was the setup's)
    let ricci = Actor::new(Who::Professional {
        practitioner: "ricci-marco".into(),
        organization: Some("asst-fbf-sacco".into()),
        role: ProRole::Specialist,
    });
    fhir.read(&ricci, "Patient", "rossi-giulia").await.unwrap();
    assert_eq!(run_once(&fhir, &channels, site).await.unwrap(), 0, "coalesced with the setup's access");
    // the regional integration, new to her record this hour: notified
    let platform = Actor::new(Who::Client { client_id: "demo-platform".into(), organization: None, platform: true });
    fhir.read(&platform, "Patient", "rossi-giulia").await.unwrap();
    assert_eq!(run_once(&fhir, &channels, site).await.unwrap(), 1);
    let sent = files(&dir);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent.iter().filter(|m| m["channel"] == "email").count(), 1, "no new e-mail");
    // a hospital publishes a report: she is told a new document is there (not what it is);
    // a report hidden from her (P98) is not announced
    let hospital =
        Actor::new(Who::Client { client_id: "demo-hospital".into(), organization: Some("asst-fbf-sacco".into()), platform: false });
    let doc = |sec: bool| {
        let mut d = serde_json::json!({"resourceType": "DocumentReference", "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11502-2"}]}, "subject": {"reference": "Patient/rossi-giulia"},
            "content": [{"attachment": {"contentType": "application/pdf", "title": "Referto"}}]});
        if sec {
            d["meta"] = serde_json::json!({"security": [{"system": "urn:fascicolo:oscuramento", "code": "P98"}]});
        }
        d.to_string()
    };
    fhir.create(&hospital, "DocumentReference", doc(true).as_bytes(), None).await.unwrap();
    run_once(&fhir, &channels, site).await.unwrap();
    assert!(!files(&dir).iter().any(|m| m["subject"].as_str().unwrap().contains("nuovo documento")), "a P98 report was announced");
    fhir.create(&hospital, "DocumentReference", doc(false).as_bytes(), None).await.unwrap();
    run_once(&fhir, &channels, site).await.unwrap();
    let news: Vec<Value> = files(&dir).into_iter().filter(|m| m["subject"].as_str().unwrap().contains("nuovo documento")).collect();
    assert_eq!(news.len(), 2, "e-mail and SMS: {news:?}");
    assert!(!news[0]["text"].as_str().unwrap().contains("Referto"));
    // an emergency access is always notified, and says so
    let ped = Actor::new(Who::Professional { practitioner: "colombo-elena".into(), organization: None, role: ProRole::Pediatrician });
    fhir.break_glass(&ped, "rossi-giulia", "paziente incosciente in pronto soccorso").await.unwrap();
    run_once(&fhir, &channels, site).await.unwrap();
    let sent = files(&dir);
    assert!(
        sent.iter().any(|m| {
            let t = m["text"].as_str().unwrap();
            t.contains("accesso in emergenza") && t.contains("https://fse.example/privacy/accessi?emergenza=1")
        }),
        "an emergency's message leads to the emergencies in the log: {sent:?}"
    );
}

/// A minimal SMTP server that accepts everything and keeps the transcript.
async fn smtp_sink() -> (u16, Arc<Mutex<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(String::new()));
    let l2 = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            let log = Arc::clone(&l2);
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                    let reply: &[u8] = if in_data {
                        if line == "." {
                            in_data = false;
                            b"250 queued\r\n"
                        } else {
                            continue;
                        }
                    } else {
                        let cmd = line.to_ascii_uppercase();
                        if cmd.starts_with("EHLO") {
                            b"250-sink\r\n250 8BITMIME\r\n"
                        } else if cmd.starts_with("DATA") {
                            in_data = true;
                            b"354 go on\r\n"
                        } else if cmd.starts_with("QUIT") {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        }
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, log)
}

#[tokio::test]
async fn smtp_and_sms_gateway_with_retries() {
    let (fhir, dir, store) = setup().await;
    let (smtp_port, transcript) = smtp_sink().await;
    // an SMS gateway that fails twice, then accepts
    let calls = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::<Value>::new()));
    let (c2, r2) = (Arc::clone(&calls), Arc::clone(&received));
    let gateway = Router::new().route(
        "/sms",
        post(move |axum::Json(body): axum::Json<Value>| async move {
            if c2.fetch_add(1, Ordering::SeqCst) < 2 {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE;
            }
            r2.lock().unwrap().push(body);
            axum::http::StatusCode::ACCEPTED
        }),
    );
    let gl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gaddr = gl.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(gl, gateway).await });
    let mut cfg = folder_config(&dir);
    cfg.notify.smtp_url = Some(format!("smtp://127.0.0.1:{smtp_port}"));
    cfg.notify.smtp_from = Some("Fascicolo <noreply@fse.example>".into());
    cfg.notify.sms_gateway_url = Some(format!("http://{gaddr}/sms"));
    let channels = Channels::from_config(&cfg).unwrap();
    fhir.read(&gp(), "Patient", "rossi-giulia").await.unwrap();
    // first attempt: the e-mail goes, the SMS fails: the message stays pending
    assert_eq!(run_once(&fhir, &channels, "https://fse.example").await.unwrap(), 0);
    let t = transcript.lock().unwrap().clone();
    assert!(
        t.contains("RCPT TO:<giulia.rossi@example.invalid>") && t.contains("Subject: Fascicolo Sanitario Elettronico: nuovo accesso"),
        "{t}"
    );
    // not due again yet (backoff)
    assert_eq!(run_once(&fhir, &channels, "https://fse.example").await.unwrap(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // the retries come due; the gateway recovers on the third call
    for _ in 0..2 {
        let claimed = store.outbox_claim(i64::MAX / 4, 0, 10).await.unwrap();
        for c in claimed {
            store.outbox_retry(c.message.patient_key, c.message.id, 0, "test: due now").await.unwrap();
        }
        let _ = run_once(&fhir, &channels, "https://fse.example").await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["to"], "+39 333 000 0001");
    assert!(!got[0]["text"].as_str().unwrap().contains("Rossi"));
    // done: nothing left to deliver, nothing landed in the folder
    assert!(store.outbox_claim(i64::MAX / 4, 0, 10).await.unwrap().is_empty());
    assert!(files(&dir).is_empty());
}
