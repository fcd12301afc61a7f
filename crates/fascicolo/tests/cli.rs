//! The `fascicolo` binary as a user runs it: configuration file and environment, `migrate`,
//! `import` (summary and exit code), `serve` printing its URL, and graceful shutdown.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::bin;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fascicolo-cli-{name}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn migrate_creates_the_database_in_the_data_folder() {
    let dir = tmp("migrate");
    let out = bin().args(["--data", dir.to_str().unwrap(), "migrate"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = fascicolo_store_sqlite::MIGRATIONS.last().unwrap().version;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("schema ready (sqlite, migration {last})")), "{said}");
    assert!(dir.join("fascicolo.db").exists() && dir.join("blobs").is_dir());
    // an unsupported database URL is a clear error, not a silent fallback
    let out = bin().args(["--data", dir.to_str().unwrap(), "migrate"]).env("FASCICOLO_DATABASE_URL", "mysql://x").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL scheme"));
}

#[test]
fn import_reports_counts_and_fails_on_errors() {
    let dir = tmp("import");
    let files = tmp("import-files");
    std::fs::write(
        files.join("ok.json"),
        r#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"p1","gender":"female"}},
            {"resource":{"resourceType":"Observation","status":"final","code":{"text":"peso"},"subject":{"reference":"Patient/p1"}}}]}"#,
    )
    .unwrap();
    let out = bin().args(["--data", dir.to_str().unwrap(), "import", files.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("imported 2 resources from 1 files"), "{stdout}");
    assert!(stdout.contains("0 errors"), "{stdout}");
    std::fs::write(files.join("bad.json"), r#"{"resourceType":"Patient","gender":"nope"}"#).unwrap();
    std::fs::write(files.join("broken.json"), "{not json").unwrap();
    let out = bin().args(["--data", dir.to_str().unwrap(), "import", files.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("2 errors"), "{stdout}");
    assert!(stdout.contains("bad.json") && stdout.contains("Patient.gender"), "{stdout}");
    assert!(stdout.contains("broken.json") && stdout.contains("not JSON"), "{stdout}");
}

#[cfg(unix)]
#[test]
fn serve_reads_config_file_then_environment_and_stops_gracefully() {
    let dir = tmp("serve");
    let cfg = dir.join("fascicolo.toml");
    // the file says one folder and port 1 (unusable); the environment overrides the listen address
    std::fs::write(&cfg, format!("listen = \"127.0.0.1:1\"\ndata_dir = \"{}\"\n", dir.join("from-file").display())).unwrap();
    let mut child = bin()
        .args(["--config", cfg.to_str().unwrap()])
        .env("FASCICOLO_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("serving on http://127.0.0.1:") && line.contains("store: sqlite"), "{line}");
    assert!(dir.join("from-file").join("fascicolo.db").exists(), "data_dir from the file was not used");
    let addr = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let body = rt.block_on(async { reqwest::get(format!("http://{addr}/readyz")).await.unwrap().text().await.unwrap() });
    assert_eq!(body, "ready");
    // SIGTERM: the server finishes and exits cleanly
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "server did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // a clean stop leaves no write-ahead log behind (the demo's was ~200 MB)
    let wal = dir.join("from-file").join("fascicolo.db-wal");
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0, "the WAL was left at a clean stop");
}
