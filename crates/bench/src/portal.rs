//! `fascicolo bench-portal`: the citizen portal's pages for a citizen with many documents and
//! results (default 1,000 documents, 5,000 observations), rendered by the real server over
//! loopback with a real session; prints latency percentiles and page sizes.

use crate::api::drive;
use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_server::config::Config;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct BenchPortalArgs {
    /// Documents of the citizen.
    #[arg(long, default_value_t = 1000)]
    pub documents: usize,
    /// Numeric results of the citizen (spread over 20 laboratory codes).
    #[arg(long, default_value_t = 5000)]
    pub observations: usize,
    /// Concurrent clients (1 measures the render time of one page at a time).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Seconds per page.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
}

/// (LOINC, name, unit, low, high)
const CODES: [(&str, &str, &str, f64, f64); 20] = [
    ("2345-7", "Glucosio", "mg/dL", 70.0, 99.0),
    ("2093-3", "Colesterolo totale", "mg/dL", 0.0, 200.0),
    ("2085-9", "Colesterolo HDL", "mg/dL", 50.0, 90.0),
    ("13457-7", "Colesterolo LDL", "mg/dL", 0.0, 130.0),
    ("2571-8", "Trigliceridi", "mg/dL", 0.0, 150.0),
    ("2160-0", "Creatinina", "mg/dL", 0.5, 1.0),
    ("718-7", "Emoglobina", "g/dL", 12.0, 16.0),
    ("6690-2", "Leucociti", "10*3/uL", 4.0, 10.0),
    ("777-3", "Piastrine", "10*3/uL", 150.0, 400.0),
    ("1742-6", "ALT", "U/L", 0.0, 40.0),
    ("3016-3", "TSH", "mU/L", 0.4, 4.0),
    ("2823-3", "Potassio", "mmol/L", 3.5, 5.1),
    ("2951-2", "Sodio", "mmol/L", 135.0, 145.0),
    ("4548-4", "Emoglobina glicata", "%", 4.0, 6.0),
    ("1920-8", "AST", "U/L", 0.0, 40.0),
    ("3094-0", "Azotemia", "mg/dL", 10.0, 50.0),
    ("2498-4", "Ferro", "ug/dL", 60.0, 170.0),
    ("2276-4", "Ferritina", "ng/mL", 15.0, 150.0),
    ("14879-1", "Fosforo", "mg/dL", 2.5, 4.5),
    ("17861-6", "Calcio", "mg/dL", 8.5, 10.5),
];

const TYPES: [(&str, &str); 6] = [
    ("11502-2", "Referto di laboratorio"),
    ("11488-4", "Referto di visita specialistica"),
    ("68604-8", "Referto di radiologia"),
    ("34105-7", "Lettera di dimissione ospedaliera"),
    ("87273-9", "Certificato vaccinale"),
    ("57833-6", "Prescrizione farmaceutica"),
];

fn day(i: usize) -> String {
    // a day between 2022 and 2028
    fascicolo_fhir::datetime::format_instant((19_000 + (i as i64 * 7) % 2_500) * 86_400_000)[..10].to_string()
}

async fn load(fhir: &FhirService, resources: Vec<Value>) -> anyhow::Result<()> {
    fascicolo_load::seed::put_all(fhir, resources).await.map(|_| ())
}

pub async fn run(mut cfg: Config, args: BenchPortalArgs) -> anyhow::Result<()> {
    let store = crate::documents::bench_store(&mut cfg, "benchportal").await?;
    let fhir = FhirService::new(Arc::clone(&store));
    fascicolo_load::demo::seed(&fhir).await?;
    let patient = "rossi-giulia";
    let orgs: Vec<Value> = (0..10)
        .map(|i| json!({"resourceType": "Organization", "id": format!("bench-org-{i}"), "name": format!("ASST di prova {i}")}))
        .collect();
    load(&fhir, orgs).await?;
    let t = std::time::Instant::now();
    let mut docs = Vec::new();
    for i in 0..args.documents {
        let (code, name) = TYPES[i % TYPES.len()];
        docs.push(json!({"resourceType": "DocumentReference", "id": format!("bench-doc-{i}"), "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": code, "display": name}]},
            "category": [{"coding": [{"system": "urn:fascicolo:class", "code": "REF"}]}],
            "subject": {"reference": format!("Patient/{patient}")}, "date": format!("{}T09:00:00Z", day(i)),
            "description": format!("{name} n. {i}"), "author": [{"display": "Dott. Mario Bianchi"}],
            "custodian": {"reference": format!("Organization/bench-org-{}", i % 10)},
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:fascicolo:cda:bench.{i}")},
            "content": [{"attachment": {"contentType": "application/xml", "title": name}}]}));
    }
    load(&fhir, docs).await?;
    let mut obs = Vec::new();
    for i in 0..args.observations {
        let (code, name, unit, low, high) = CODES[i % CODES.len()];
        let doc = (i / CODES.len()) % args.documents.max(1);
        let value = low + (high - low) * (0.3 + ((i * 37) % 100) as f64 / 100.0);
        obs.push(json!({"resourceType": "Observation", "id": format!("bench-obs-{i}"), "status": "final",
            "meta": {"tag": [{"system": "urn:fascicolo:document", "code": format!("DocumentReference/bench-doc-{doc}")}]},
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": name}]},
            "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": format!("{}T08:00:00Z", day(i / CODES.len())),
            "valueQuantity": {"value": (value * 100.0).round() / 100.0, "unit": unit},
            "referenceRange": [{"low": {"value": low, "unit": unit}, "high": {"value": high, "unit": unit}}]}));
    }
    load(&fhir, obs).await?;
    // a live database has statistics (autovacuum); a bulk load just now has none yet
    store.analyze().await?;
    println!(
        "loaded {} documents and {} observations for one citizen in {:.1} s ({})",
        args.documents,
        args.observations,
        t.elapsed().as_secs_f64(),
        if cfg.database_url.as_deref().is_some_and(|u| u.starts_with("postgres")) { "PostgreSQL" } else { "SQLite" }
    );

    // a real session for the citizen, as the sign-in creates it
    let cf = fascicolo_domain::CodiceFiscale::parse("RSSGLI85D52F205Q").map_err(|e| anyhow::anyhow!("{e}"))?;
    let profiles = fascicolo_app::auth::profiles_for(store.as_ref(), &cf).await?;
    let sessions = fascicolo_app::auth::Sessions::new(
        Arc::clone(&store),
        fascicolo_app::auth::SessionLimits { idle_ms: 3_600_000, absolute_ms: 36_000_000 },
    );
    let actor = Actor::new(Who::Citizen { cf: cf.clone(), patient: Some(patient.into()) });
    let (secret, _) = sessions.create(cf.as_str(), actor, profiles, None).await?;
    let cookie: Arc<str> = format!("fascicolo_session={secret}").into();

    let (addr, server) = fascicolo_server::Application::spawn_on_loopback(&cfg, Arc::clone(&store)).await?;
    let base = format!("http://{addr}");
    // a document in the middle of the citizen's list (the 500th with the default 1,000)
    let middle = format!("/documenti/bench-doc-{}", args.documents / 2);
    let pages = [
        ("home", "/"),
        ("document list, newest 20", "/documenti"),
        ("document list, text search", "/documenti?q=laboratorio+prova+3"),
        ("document list, page 25", "/documenti?pagina=25"),
        ("results overview", "/risultati"),
        ("chart (250 values)", "/risultati/2345-7"),
        ("document page", middle.as_str()),
    ];
    println!("\n| page | requests | p50 ms | p99 ms | KiB |");
    println!("|---|---:|---:|---:|---:|");
    let client = reqwest::Client::new();
    for (name, path) in pages {
        let url = format!("{base}{path}");
        let first = client.get(&url).header("cookie", &*cookie).send().await?;
        anyhow::ensure!(first.status().is_success(), "{path} answered {}", first.status());
        let size = first.bytes().await?.len();
        let (client, cookie, url2) = (client.clone(), Arc::clone(&cookie), url.clone());
        let l = drive(args.clients, args.seconds, move |_, _| {
            let req = client.get(&url2).header("cookie", &*cookie);
            crate::api::succeeded(req)
        })
        .await;
        anyhow::ensure!(l.errors == 0, "{path}: {} errors", l.errors);
        println!("| {name} `{path}` | {} | {:.1} | {:.1} | {:.1} |", l.latencies.len(), l.pct(0.5), l.pct(0.99), size as f64 / 1024.0);
    }
    server.abort();
    Ok(())
}
