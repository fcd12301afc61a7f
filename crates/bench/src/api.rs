//! `fascicolo bench`: ingest the Synthea set, then load the server over loopback with N
//! concurrent clients per scenario and print throughput and latency percentiles.

use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_load::import;
use fascicolo_server::config::Config;
use serde_json::json;
use serde_json::Value;
use std::collections::HashMap;
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
    /// Who the clients are, comma separated: `system` (the console: no privacy filter, no
    /// access log), `citizen` (each patient on their own record: visibility filter),
    /// `clinician` (a GP with consent and a care relation: relation lookups, filter, and one
    /// access-log entry written per request), `platform` (a trusted integration client: full
    /// access, one access-log entry per record per request).
    #[arg(long, default_value = "system,citizen,clinician,platform")]
    pub actors: String,
    /// Rounds per scenario and actor (interleaved); the best round is kept.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
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

#[derive(Clone)]
struct Row {
    name: String,
    requests: usize,
    errors: usize,
    rps: f64,
    p50: f64,
    p99: f64,
}

/// A request path and the bearer token to send it with.
type Req = (String, Arc<str>);

/// What a load run measured: latencies (ms), errors, wall time (s).
pub(crate) struct Load {
    pub latencies: Vec<f64>,
    pub errors: usize,
    pub seconds: f64,
}

impl Load {
    /// The `p` quantile of the latencies (sorted by [`drive`]).
    pub fn pct(&self, p: f64) -> f64 {
        let all = &self.latencies;
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0.0)
    }
}

/// Runs `clients` loops for `seconds`; each iteration awaits one request built by `request`
/// (given the client index and an iteration counter) and records its latency and success.
pub(crate) async fn drive<F, Fut>(clients: usize, seconds: f64, request: F) -> Load
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let request = Arc::clone(&request);
        set.spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0usize, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                if !request(c, i).await {
                    errors += 1;
                }
                i += 1;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, errors)
        });
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while let Some(Ok((l, e))) = set.join_next().await {
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_by(f64::total_cmp);
    Load { latencies, errors, seconds: start.elapsed().as_secs_f64() }
}

/// Sends a request and reads the whole answer; whether it succeeded.
pub(crate) async fn succeeded(req: reqwest::RequestBuilder) -> bool {
    match req.send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

async fn scenario(name: &str, base: &str, paths: Arc<Vec<Req>>, clients: usize, seconds: f64) -> Row {
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build().unwrap_or_default();
    let base = base.to_string();
    let load = drive(clients, seconds, move |c, i| {
        let mut rng =
            Rng(0x9E37_79B9_7F4A_7C15 ^ ((c as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)) ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
        let (path, token) = rng.pick(&paths).clone();
        let req = client.get(format!("{base}{path}")).header("accept", "application/fhir+json").bearer_auth(&*token);
        succeeded(req)
    })
    .await;
    let n = load.latencies.len();
    Row { name: name.to_string(), requests: n, errors: load.errors, rps: n as f64 / load.seconds, p50: load.pct(0.50), p99: load.pct(0.99) }
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

/// Who sends the requests: a token per patient (or one for all).
struct Tokens {
    kind: String,
    by_patient: HashMap<String, Arc<str>>,
    shared: Option<Arc<str>>,
}

impl Tokens {
    fn for_patient(&self, p: &str) -> Arc<str> {
        self.shared.clone().or_else(|| self.by_patient.get(p).cloned()).unwrap_or_else(|| Arc::from(""))
    }
}

/// Tokens for an actor kind; the clinician gets consent and a care team on every sampled record.
/// A well-formed codice fiscale numbered `i` (the surname letters count in base 26).
fn bench_cf(i: usize) -> Result<fascicolo_domain::CodiceFiscale, fascicolo_domain::codice_fiscale::CodiceFiscaleError> {
    let letters: String = (0..6).rev().map(|k| char::from(b'A' + ((i / 26usize.pow(k)) % 26) as u8)).collect();
    fascicolo_domain::CodiceFiscale::parse(&fascicolo_load::demo::cf(&format!("{letters}80A01F205")))
}

async fn tokens_for(kind: &str, fhir: &FhirService, patients: &[String]) -> anyhow::Result<Tokens> {
    let issuer = fhir.token_issuer();
    let issue = |a: Actor| {
        let issuer = issuer.clone();
        async move { anyhow::Ok(Arc::<str>::from(issuer.issue(&a, "bench", 86_400).await.map_err(|e| anyhow::anyhow!("{e}"))?.access_token)) }
    };
    let mut t = Tokens { kind: kind.to_string(), by_patient: HashMap::new(), shared: None };
    match kind {
        "system" => t.shared = Some(issue(Actor::system()).await?),
        "citizen" => {
            for (i, p) in patients.iter().enumerate() {
                // Synthea's people carry no codice fiscale: each gets a well-formed one of its own
                let cf = bench_cf(i).map_err(|e| anyhow::anyhow!("{e}"))?;
                let a = Actor::new(Who::Citizen { cf, patient: Some(p.clone()) });
                t.by_patient.insert(p.clone(), issue(a).await?);
            }
        }
        "clinician" => {
            let sys = Actor::system();
            let put = |rt: &'static str, id: String, v: serde_json::Value| {
                let fhir = fhir.clone();
                let sys = sys.clone();
                async move { fhir.update(&sys, rt, &id, v.to_string().as_bytes(), None).await.map_err(|e| anyhow::anyhow!("{rt}/{id}: {e}")) }
            };
            put(
                "Practitioner",
                "bench-gp".into(),
                json!({"resourceType": "Practitioner", "id": "bench-gp", "name": [{"family": "Bench"}]}),
            )
            .await?;
            put("PractitionerRole", "bench-gp-role".into(), json!({"resourceType": "PractitionerRole", "id": "bench-gp-role",
                "practitioner": {"reference": "Practitioner/bench-gp"}, "code": [{"coding": [{"system": fascicolo_app::gate::ROLE_SYSTEM, "code": "gp"}]}]})).await?;
            for p in patients {
                put(
                    "Consent",
                    format!("bench-consent-{p}"),
                    json!({"resourceType": "Consent", "id": format!("bench-consent-{p}"), "status": "active",
                    "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                    "category": [{"coding": [{"system": fascicolo_app::access::CONSENT_CATEGORY, "code": "consultation"}]}],
                    "patient": {"reference": format!("Patient/{p}")}, "dateTime": "2026-01-01T00:00:00Z",
                    "policy": [{"uri": format!("{}1", fascicolo_app::access::NOTICE_PREFIX)}], "provision": {"type": "permit"}}),
                )
                .await?;
                put(
                    "CareTeam",
                    format!("bench-team-{p}"),
                    json!({"resourceType": "CareTeam", "id": format!("bench-team-{p}"), "status": "active",
                    "subject": {"reference": format!("Patient/{p}")}, "participant": [{"member": {"reference": "Practitioner/bench-gp"}}]}),
                )
                .await?;
            }
            let a = Actor::new(Who::Professional {
                practitioner: "bench-gp".into(),
                organization: None,
                role: fascicolo_app::gate::ProRole::Gp,
            });
            t.shared = Some(issue(a).await?);
        }
        "platform" => {
            // a trusted regional integration: full access, every access in the patient's log
            let a = Actor::new(Who::Client { client_id: "bench-platform".into(), organization: None, platform: true });
            t.shared = Some(issue(a).await?);
        }
        other => anyhow::bail!("unknown bench actor '{other}' (system, citizen, clinician, platform)"),
    }
    Ok(t)
}

/// The scenarios' requests for one actor.
async fn plans(fhir: &FhirService, tokens: &Tokens) -> anyhow::Result<Vec<(&'static str, Arc<Vec<Req>>)>> {
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
            let p = p.trim_start_matches("Patient/");
            reads.push((format!("/Observation/{id}"), tokens.for_patient(p)));
            obs_q.push((format!("/Observation?patient={p}&code=http://loinc.org|{code}&date=ge2000-01-01"), tokens.for_patient(p)));
        }
    }
    let per_patient =
        |tpl: &str| -> Arc<Vec<Req>> { Arc::new(patients.iter().map(|p| (tpl.replace("{p}", p), tokens.for_patient(p))).collect()) };
    Ok(vec![
        ("read by id", Arc::new(reads)),
        ("Observation?patient&code&date", Arc::new(obs_q)),
        ("Encounter?patient", per_patient("/Encounter?patient={p}")),
        ("DocumentReference?patient&type", per_patient("/DocumentReference?patient={p}&type=http://loinc.org|34117-2")),
        ("Condition?patient", per_patient("/Condition?patient={p}")),
        ("MedicationRequest?patient&status", per_patient("/MedicationRequest?patient={p}&status=active")),
        ("DiagnosticReport?patient&_include", per_patient("/DiagnosticReport?patient={p}&_include=DiagnosticReport:result")),
        ("Patient/$everything", per_patient("/Patient/{p}/$everything")),
    ]
    .into_iter()
    .filter(|(_, p)| !p.is_empty())
    .collect())
}

/// Run every scenario for every actor, interleaved (scenario by scenario, actor after actor,
/// `rounds` times) so a comparison is not skewed by the machine drifting; keep each actor's best
/// round per scenario.
async fn run_all(fhir: &FhirService, base: &str, args: &BenchArgs, actors: &[Tokens]) -> anyhow::Result<Vec<(String, Vec<Row>)>> {
    let mut per_actor = Vec::new();
    for t in actors {
        per_actor.push(plans(fhir, t).await?);
    }
    let mut out: Vec<(String, Vec<Row>)> = actors.iter().map(|t| (t.kind.clone(), Vec::new())).collect();
    let n = per_actor.first().map_or(0, Vec::len);
    for i in 0..n {
        for _ in 0..args.rounds.max(1) {
            for (k, plan) in per_actor.iter().enumerate() {
                let (name, paths) = &plan[i];
                let row = scenario(name, base, Arc::clone(paths), args.clients, args.seconds).await;
                let rows = &mut out[k].1;
                match rows.get_mut(i) {
                    Some(best) if best.rps >= row.rps => {}
                    Some(best) => *best = row,
                    None => rows.push(row),
                }
            }
        }
    }
    Ok(out)
}

/// Throughput of each actor relative to the first (the gate's overhead), and of the audited
/// actors relative to the citizen (the cost of the access log: invariant 4's target is ≥ 0.5).
fn compare(all: &[(String, Vec<Row>)]) {
    relative(all);
    if let Some(citizen) = all.iter().find(|(k, _)| k == "citizen") {
        let mut v = vec![citizen.clone()];
        v.extend(all.iter().filter(|(k, _)| k == "clinician" || k == "platform").cloned());
        relative(&v);
    }
}

/// Throughput of each actor relative to the first.
fn relative(all: &[(String, Vec<Row>)]) {
    let Some((base_kind, base)) = all.first() else { return };
    if all.len() < 2 {
        return;
    }
    let others: Vec<&(String, Vec<Row>)> = all.iter().skip(1).collect();
    println!("\n### throughput relative to {base_kind} (1.00 = no overhead)\n");
    let head: Vec<String> = others.iter().map(|(k, _)| format!("{k} / {base_kind}")).collect();
    println!("| scenario | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(others.len()));
    for (i, r) in base.iter().enumerate() {
        let cells: Vec<String> = others
            .iter()
            .map(|(_, rows)| rows.get(i).map_or("-".to_string(), |o| format!("{:.2}", o.rps / r.rps.max(f64::MIN_POSITIVE))))
            .collect();
        println!("| {} | {} |", r.name, cells.join(" | "));
    }
    // one figure per actor: the geometric mean of the ratios (robust to one noisy scenario)
    let means: Vec<String> = others
        .iter()
        .map(|(_, rows)| {
            let logs: Vec<f64> =
                base.iter().zip(rows.iter()).filter(|(b, o)| b.rps > 0.0 && o.rps > 0.0).map(|(b, o)| (o.rps / b.rps).ln()).collect();
            format!("{:.2}", (logs.iter().sum::<f64>() / logs.len().max(1) as f64).exp())
        })
        .collect();
    println!("| geometric mean | {} |", means.join(" | "));
}

/// What the store takes on disk after a clean stop (SQLite folds its write-ahead log in; see
/// `Store::disk_bytes` for what each backend counts), per resource imported.
async fn storage(fhir: &FhirService, resources: usize) -> anyhow::Result<()> {
    fhir.close().await?;
    let bytes = fhir.disk_bytes().await?;
    println!("storage: {bytes} bytes on disk after a clean stop, {} bytes per resource", bytes / resources.max(1) as u64);
    Ok(())
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
    let store = crate::fresh_store(&mut cfg, "bench").await?;
    println!("backend: {}, clients: {}, {}s per scenario", store.backend(), args.clients, args.seconds);
    let fhir = FhirService::new(Arc::clone(&store));
    let s = import::run(fhir.clone(), std::slice::from_ref(&args.synthea), 4, false).await?;
    println!("ingest: {s}");
    let mut total = s.resources;
    storage(&fhir, total).await?;
    let patients: Vec<String> =
        sample(&fhir, "Patient?_count=1000").await?.iter().filter_map(|p| p["id"].as_str().map(String::from)).collect();
    let mut actor_tokens = Vec::new();
    for kind in args.actors.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        actor_tokens.push(tokens_for(kind, &fhir, &patients).await?);
    }
    let (addr, server) = fascicolo_server::Application::spawn_on_loopback(&cfg, Arc::clone(&store)).await?;
    let base = format!("http://{addr}/fhir/r4");
    let all_rows = run_all(&fhir, &base, &args, &actor_tokens).await?;
    for (kind, rows) in &all_rows {
        print(&format!("{total} resources, as {kind}"), rows);
    }
    compare(&all_rows);
    if args.scale_resources > total {
        let mut copy = 0;
        while total < args.scale_resources {
            copy += 1;
            let s = crate::import_copy(&fhir, &args.synthea, copy).await?;
            total += s.resources;
            println!("loaded {total} resources ({:.0}/s)", s.resources as f64 / s.seconds);
        }
        storage(&fhir, total).await?;
        let all_rows = run_all(&fhir, &base, &args, &actor_tokens).await?;
        for (kind, rows) in &all_rows {
            print(&format!("{total} resources, as {kind}"), rows);
        }
        compare(&all_rows);
    }
    server.abort();
    if store.backend() == "sqlite" {
        let _ = std::fs::remove_dir_all(&cfg.data_dir);
    }
    Ok(())
}
