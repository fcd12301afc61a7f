//! `fascicolo bench`: ingest the Synthea set, then load the server over loopback with N
//! concurrent clients per scenario and print throughput and latency percentiles.

use crate::config::Config;
use crate::import;
use fascicolo_app::FhirService;
use fascicolo_store::Store;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Folder of FHIR transaction Bundles to ingest.
    #[arg(long, default_value = "../shared/corpora/synthea-r4")]
    pub synthea: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// After the first round, re-import the set until the store holds this many resources and
    /// run the searches again (0 = skip).
    #[arg(long, default_value_t = 0)]
    pub scale_resources: usize,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

struct Row {
    name: String,
    requests: usize,
    errors: usize,
    rps: f64,
    p50: f64,
    p99: f64,
}

async fn scenario(name: &str, base: &str, paths: Arc<Vec<String>>, clients: usize, seconds: f64) -> Row {
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, paths, base) = (client.clone(), Arc::clone(&paths), base.to_string());
        set.spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((c as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)));
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let url = format!("{base}{}", rng.pick(&paths));
                let t = Instant::now();
                match client.get(&url).header("accept", "application/fhir+json").send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, errors)
        });
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(Ok((l, e))) = set.join_next().await {
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0.0);
    Row { name: name.to_string(), requests: all.len(), errors, rps: all.len() as f64 / elapsed, p50: pct(0.50), p99: pct(0.99) }
}

async fn sample(fhir: &FhirService, query: &str) -> anyhow::Result<Vec<Value>> {
    let pairs: Vec<(String, String)> = form_urlencoded_pairs(query);
    let (t, _) = query.split_once('?').unwrap_or((query, ""));
    let b = fhir.search(&fascicolo_app::Actor::system(), Some(t), &pairs, "").await.map_err(|e| anyhow::anyhow!("{e}"))?.into_value();
    Ok(b["entry"].as_array().cloned().unwrap_or_default().into_iter().map(|e| e["resource"].clone()).collect())
}

fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    let qs = q.split_once('?').map_or("", |(_, b)| b);
    qs.split('&').filter(|s| !s.is_empty()).filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn scenarios(fhir: &FhirService, base: &str, args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    let patients: Vec<String> =
        sample(fhir, "Patient?_count=1000").await?.iter().filter_map(|p| p["id"].as_str().map(String::from)).collect();
    anyhow::ensure!(!patients.is_empty(), "no patients to benchmark with");
    let obs = sample(fhir, "Observation?_count=1000").await?;
    let mut reads = Vec::new();
    let mut obs_q = Vec::new();
    for o in &obs {
        if let (Some(id), Some(p), Some(code)) =
            (o["id"].as_str(), o["subject"]["reference"].as_str(), o["code"]["coding"][0]["code"].as_str())
        {
            reads.push(format!("/Observation/{id}"));
            obs_q.push(format!("/Observation?patient={}&code=http://loinc.org|{code}&date=ge2000-01-01", p.trim_start_matches("Patient/")));
        }
    }
    let per_patient = |tpl: &str| -> Arc<Vec<String>> { Arc::new(patients.iter().map(|p| tpl.replace("{p}", p)).collect()) };
    let mut rows = Vec::new();
    let run = [
        ("read by id", Arc::new(reads)),
        ("Observation?patient&code&date", Arc::new(obs_q)),
        ("Encounter?patient", per_patient("/Encounter?patient={p}")),
        ("DocumentReference?patient&type", per_patient("/DocumentReference?patient={p}&type=http://loinc.org|34117-2")),
        ("Condition?patient", per_patient("/Condition?patient={p}")),
        ("MedicationRequest?patient&status", per_patient("/MedicationRequest?patient={p}&status=active")),
        ("DiagnosticReport?patient&_include", per_patient("/DiagnosticReport?patient={p}&_include=DiagnosticReport:result")),
        ("Patient/$everything", per_patient("/Patient/{p}/$everything")),
    ];
    for (name, paths) in run {
        if paths.is_empty() {
            continue;
        }
        rows.push(scenario(name, base, paths, args.clients, args.seconds).await);
    }
    Ok(rows)
}

fn print(title: &str, rows: &[Row]) {
    println!("\n### {title}\n");
    println!("| scenario | requests | errors | req/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("| {} | {} | {} | {:.0} | {:.2} | {:.2} |", r.name, r.requests, r.errors, r.rps, r.p50, r.p99);
    }
}

pub async fn run(mut cfg: Config, args: BenchArgs) -> anyhow::Result<()> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let store: Arc<dyn Store> = match cfg.database_url.clone() {
        Some(url) if url.starts_with("postgres") => {
            let schema = format!("bench_{stamp}");
            Arc::new(fascicolo_store_postgres::PgStore::connect_in_schema(&url, cfg.pg_pool_size, Some(&schema)).await?)
        }
        _ => {
            cfg.data_dir = cfg.data_dir.join(format!("bench-{stamp}"));
            crate::open_store(&cfg).await?
        }
    };
    println!("backend: {}, clients: {}, {}s per scenario", store.backend(), args.clients, args.seconds);
    let fhir = FhirService::new(Arc::clone(&store));
    let s = import::run(fhir.clone(), std::slice::from_ref(&args.synthea), 4, false).await?;
    println!("ingest: {s}");
    let mut total = s.resources;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    cfg.public_url = Some(format!("http://{addr}"));
    let router = crate::build_router(Arc::clone(&store), &cfg);
    let server = tokio::spawn(async move { fascicolo_web::serve(listener, router, std::future::pending()).await });
    let base = format!("http://{addr}/fhir/r4");
    let rows = scenarios(&fhir, &base, &args).await?;
    print(&format!("{} resources", total), &rows);
    if args.scale_resources > total {
        while total < args.scale_resources {
            let s = import::run(fhir.clone(), std::slice::from_ref(&args.synthea), 4, false).await?;
            total += s.resources;
            println!("loaded {total} resources ({:.0}/s)", s.resources as f64 / s.seconds);
        }
        let rows = scenarios(&fhir, &base, &args).await?;
        print(&format!("{} resources", total), &rows);
    }
    server.abort();
    if store.backend() == "sqlite" {
        let _ = std::fs::remove_dir_all(&cfg.data_dir);
    }
    Ok(())
}
