//! `fascicolo bench-export`: FHIR Bulk Data `$export` as a client sees it. Imports the Synthea
//! set (again and again, up to `--resources`), then, with a platform client's real token over
//! loopback, kicks off each export level, polls the status URL and downloads every file;
//! prints resources per second to the manifest and to the last byte downloaded. The same
//! export run in process (no HTTP, no polling) is printed beside it, labelled.

use fascicolo_app::bulk::{Exports, Level, Status};
use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_server::config::Config;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchExportArgs {
    /// Folder of FHIR transaction Bundles to import.
    #[arg(long, default_value = "../shared/corpora/synthea-r4")]
    pub synthea: PathBuf,
    /// Import the set again until the store holds at least this many resources.
    #[arg(long, default_value_t = 0)]
    pub resources: usize,
    /// Exports per level; the best is kept.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

struct Run {
    resources: u64,
    files: usize,
    to_manifest: f64,
    to_download: f64,
}

/// One export over HTTP: kick-off, poll every 20 ms, download every file.
async fn over_http(http: &reqwest::Client, base: &str, token: &str, path: &str) -> anyhow::Result<Run> {
    let start = Instant::now();
    let r = http.get(format!("{base}/{path}")).bearer_auth(token).header("prefer", "respond-async").send().await?;
    anyhow::ensure!(r.status().as_u16() == 202, "kick-off answered {}: {}", r.status(), r.text().await?);
    let status = r.headers().get("content-location").and_then(|h| h.to_str().ok()).map(String::from).unwrap_or_default();
    let manifest: Value = loop {
        let r = http.get(&status).bearer_auth(token).send().await?;
        match r.status().as_u16() {
            202 => tokio::time::sleep(Duration::from_millis(20)).await,
            200 => break r.json().await?,
            other => anyhow::bail!("status answered {other}: {}", r.text().await?),
        }
    };
    let to_manifest = start.elapsed().as_secs_f64();
    let mut resources = 0u64;
    let files = manifest["output"].as_array().cloned().unwrap_or_default();
    for f in &files {
        let url = f["url"].as_str().unwrap_or_default();
        let body = http.get(url).bearer_auth(token).send().await?.error_for_status()?.bytes().await?;
        resources += body.iter().filter(|b| **b == b'\n').count() as u64;
    }
    Ok(Run { resources, files: files.len(), to_manifest, to_download: start.elapsed().as_secs_f64() })
}

/// The same export in process: the app layer's runner, polled directly.
async fn in_process(exports: &Exports, actor: &Actor, level: Level) -> anyhow::Result<Run> {
    let start = Instant::now();
    let id = exports.kick_off(actor, level, &[], "bench", "http://bench").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let m = loop {
        match exports.status(actor, &id).await.map_err(|e| anyhow::anyhow!("{e}"))? {
            Status::Done(m) => break m,
            Status::Failed(why) => anyhow::bail!("{why}"),
            Status::InProgress { .. } => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let t = start.elapsed().as_secs_f64();
    Ok(Run { resources: m.files.iter().map(|f| f.count).sum(), files: m.files.len(), to_manifest: t, to_download: t })
}

fn best(runs: Vec<Run>) -> Option<Run> {
    runs.into_iter().min_by(|a, b| a.to_download.total_cmp(&b.to_download))
}

pub async fn run(mut cfg: Config, args: BenchExportArgs) -> anyhow::Result<()> {
    let store = crate::fresh_store(&mut cfg, "bench-export").await?;
    let fhir = FhirService::new(Arc::clone(&store));
    let mut total = 0;
    for copy in 0.. {
        // each copy with resources and references of its own (Synthea's ids rewritten)
        let s = crate::import_copy(&fhir, &args.synthea, copy).await?;
        total += s.resources;
        println!("loaded {total} resources");
        if total >= args.resources {
            break;
        }
    }
    store.analyze().await?;
    let issue = |client: &str| {
        let a = Actor::new(Who::Client { client_id: client.into(), organization: None, platform: true });
        let issuer = fhir.token_issuer();
        async move { anyhow::Ok((issuer.issue(&a, "bench", 86_400).await.map_err(|e| anyhow::anyhow!("{e}"))?.access_token, a)) }
    };
    let (token, _) = issue("bench-export").await?;
    let (addr, server) = fascicolo_server::Application::spawn_on_loopback(&cfg, Arc::clone(&store)).await?;
    let base = format!("http://{addr}/fhir/r4");
    let http = reqwest::Client::new();
    let exports = fascicolo_server::export_service(&cfg, fhir.clone())?;
    let (_, inproc_actor) = issue("bench-export-in-process").await?;
    println!("\n### $export, {} backend, {total} resources (best of {})\n", store.backend(), args.rounds);
    println!("| export | how | resources | files | s to manifest | s to last byte | resources/s |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (path, level) in [("$export", Level::System), ("Patient/$export", Level::Patient)] {
        let mut http_runs = Vec::new();
        let mut local_runs = Vec::new();
        for _ in 0..args.rounds.max(1) {
            http_runs.push(over_http(&http, &base, &token, path).await?);
            local_runs.push(in_process(&exports, &inproc_actor, level.clone()).await?);
        }
        for (how, r) in [("HTTP, platform token", best(http_runs)), ("in process (no HTTP)", best(local_runs))] {
            if let Some(r) = r {
                println!(
                    "| {path} | {how} | {} | {} | {:.2} | {:.2} | {:.0} |",
                    r.resources,
                    r.files,
                    r.to_manifest,
                    r.to_download,
                    r.resources as f64 / r.to_download
                );
            }
        }
    }
    server.abort();
    if store.backend() == "sqlite" {
        let _ = std::fs::remove_dir_all(&cfg.data_dir);
    }
    Ok(())
}
