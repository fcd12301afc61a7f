//! `fascicolo bench-documents`: document validation and publication throughput over loopback
//! with the 8 valid official CDA2 examples, plus the validation engine's cost per document type
//! on one thread. Both backends (`FASCICOLO_DATABASE_URL` for PostgreSQL).

use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_server::config::Config;
use fascicolo_store::Store;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchDocsArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Single-thread validations per document type for the engine table.
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
    /// Run only the publication scenario over HTTP (no engine table, no validation scenario):
    /// for profiling.
    #[arg(long)]
    pub publish_only: bool,
}

/// The 8 official examples that pass the national schematrons.
const EXAMPLES: [(&str, &[u8]); 8] = [
    ("LAB", include_bytes!("../../cda/tests/data/LAB.xml")),
    ("LDO", include_bytes!("../../cda/tests/data/LDO.xml")),
    ("RAD", include_bytes!("../../cda/tests/data/RAD.xml")),
    ("RAP", include_bytes!("../../cda/tests/data/RAP.xml")),
    ("RSA", include_bytes!("../../cda/tests/data/RSA.xml")),
    ("PSS", include_bytes!("../../cda/tests/data/PSS.xml")),
    ("CERT_VACC", include_bytes!("../../cda/tests/data/CERT_VACC.xml")),
    ("SING_VACC", include_bytes!("../../cda/tests/data/SING_VACC.xml")),
];

struct Row {
    name: &'static str,
    docs: usize,
    errors: usize,
    per_s: f64,
    p50: f64,
    p99: f64,
    /// CPU time of the whole process (server and clients) per document, when the OS tells it.
    cpu_ms: Option<f64>,
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat` (Linux; `USER_HZ`
/// is 100 there). On a machine the benchmark saturates, CPU per document is a steadier figure
/// than documents per second.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the fields after the command name, which is in parentheses and may hold spaces
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

async fn scenario(name: &'static str, url: String, token: Arc<str>, publish: bool, clients: usize, seconds: f64) -> Row {
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build().unwrap_or_default();
    let counter = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_seconds();
    let load = crate::api::drive(clients, seconds, move |_, _| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let (name, bytes) = EXAMPLES[n % EXAMPLES.len()];
        let req = if publish {
            let meta = json!({"identificativoDoc": format!("bench-{name}-{n}-{}", uuid::Uuid::new_v4())});
            let file = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("cda.xml");
            let file = file.mime_str("application/xml").unwrap_or_else(|_| reqwest::multipart::Part::bytes(Vec::new()));
            let form = reqwest::multipart::Form::new().part("file", file).text("requestBody", meta.to_string());
            client.post(&url).bearer_auth(&*token).multipart(form)
        } else {
            client.post(&url).bearer_auth(&*token).header("content-type", "application/xml").body(bytes.to_vec())
        };
        crate::api::succeeded(req)
    })
    .await;
    let n = load.latencies.len();
    let cpu_ms = cpu_before.zip(cpu_seconds()).map(|(a, b)| (b - a) * 1000.0 / n.max(1) as f64);
    Row { name, docs: n, errors: load.errors, per_s: n as f64 / load.seconds, p50: load.pct(0.50), p99: load.pct(0.99), cpu_ms }
}

/// A fresh store for a benchmark: a new schema on PostgreSQL, a new folder for SQLite.
pub(crate) async fn bench_store(cfg: &mut Config, prefix: &str) -> anyhow::Result<Arc<dyn Store>> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(match cfg.database_url.clone() {
        Some(url) if url.starts_with("postgres") => Arc::new(
            fascicolo_store_postgres::PgStore::connect_in_schema(&url, cfg.pg_pool_size, Some(&format!("{prefix}_{stamp}"))).await?,
        ),
        _ => {
            cfg.data_dir = cfg.data_dir.join(format!("{prefix}-{stamp}"));
            fascicolo_server::open_store(cfg).await?
        }
    })
}

pub async fn run(mut cfg: Config, args: BenchDocsArgs) -> anyhow::Result<()> {
    // 1. the engine alone, one thread
    let mut validator = fascicolo_cda::Validator::new();
    let t = Instant::now();
    validator.warm_up().map_err(anyhow::Error::msg)?;
    println!(
        "compiling the 22 national schematrons, xee programs included: {:.0} ms (a validator thread compiles a rule's xee programs only when the rule first needs xee)",
        t.elapsed().as_secs_f64() * 1000.0
    );
    println!("\nvalidation engine, one thread (XML parse + XSD + schematron + terminology)");
    println!("| document | KiB | ms per document | documents/s |");
    println!("|---|---:|---:|---:|");
    let mut total_ms = 0.0;
    for (name, bytes) in EXAMPLES.iter().copied().filter(|_| !args.publish_only) {
        let t = Instant::now();
        for _ in 0..args.repeat.max(1) {
            let r = validator.validate(bytes);
            if r.has_errors() {
                anyhow::bail!("{name} did not validate");
            }
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / args.repeat.max(1) as f64;
        total_ms += ms;
        println!("| {name} | {} | {ms:.1} | {:.0} |", bytes.len() / 1024, 1000.0 / ms);
    }
    println!("| mean | | {:.1} | {:.0} |", total_ms / EXAMPLES.len() as f64, 1000.0 * EXAMPLES.len() as f64 / total_ms);

    // 2. over HTTP, with the store
    let store = bench_store(&mut cfg, "benchdocs").await?;
    let fhir = FhirService::new(Arc::clone(&store));
    fascicolo_load::demo::seed_example_patients(&fhir).await?;
    fhir.update(
        &Actor::system(),
        "Organization",
        "bench-hospital",
        json!({"resourceType": "Organization", "id": "bench-hospital", "name": "Bench"}).to_string().as_bytes(),
        None,
    )
    .await?;
    let producer = Actor::new(Who::Client { client_id: "bench-lis".into(), organization: Some("bench-hospital".into()), platform: false });
    let token: Arc<str> = fascicolo_app::auth::Tokens::new(Arc::clone(&store)).issue(&producer, "bench", 3600).await?.access_token.into();
    let (addr, server) = fascicolo_server::Application::spawn_on_loopback(&cfg, Arc::clone(&store)).await?;
    let base = format!("http://{addr}/ingest/v1/documents");
    // warm every validator thread on every type
    let _ = scenario("warm-up", format!("{base}/validation"), Arc::clone(&token), false, args.clients, 3.0).await;
    let mut rows = Vec::new();
    if !args.publish_only {
        rows.push(
            scenario(
                "validate (POST /ingest/v1/documents/validation)",
                format!("{base}/validation"),
                Arc::clone(&token),
                false,
                args.clients,
                args.seconds,
            )
            .await,
        );
    }
    let publish =
        scenario("validate + publish (POST /ingest/v1/documents)", base.clone(), Arc::clone(&token), true, args.clients, args.seconds)
            .await;
    let publish_rate = publish.per_s;
    rows.push(publish);
    println!(
        "\nbackend: {}, {} clients, {}s per scenario, the 8 valid official examples in turn",
        store.backend(),
        args.clients,
        args.seconds
    );
    println!("| scenario | documents | errors | documents/s | p50 ms | p99 ms | CPU ms per document |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let cpu = r.cpu_ms.map_or_else(|| "n/a".to_string(), |c| format!("{c:.1}"));
        println!("| {} | {} | {} | {:.0} | {:.1} | {:.1} | {cpu} |", r.name, r.docs, r.errors, r.per_s, r.p50, r.p99);
    }
    println!("target 200 documents/s: publication reaches {:.2}× of it", publish_rate / 200.0);
    server.abort();
    if store.backend() == "sqlite" && std::env::var_os("FASCICOLO_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&cfg.data_dir);
    }
    Ok(())
}
