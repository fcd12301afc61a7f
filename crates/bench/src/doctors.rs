//! `fascicolo bench-doctors`: changing the family doctor as citizens do it, over HTTP with real
//! sessions (`POST /medico`, the portal's own form). A fresh store with `--citizens` adults of
//! one ATS and `--doctors` family doctors whose ceiling (`--ceiling`) leaves some lists full;
//! `--clients` citizens change at once for `--seconds`. Prints changes/s and latency, then
//! checks that every list counts exactly the people the registry gives the doctor, and none is
//! over its ceiling.

use crate::api::drive;
use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_server::config::Config;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct BenchDoctorsArgs {
    /// Citizens who may change doctor.
    #[arg(long, default_value_t = 2000)]
    pub citizens: usize,
    /// Family doctors of the ATS.
    #[arg(long, default_value_t = 20)]
    pub doctors: usize,
    /// Most people on one list (the configured ceiling for the run).
    #[arg(long, default_value_t = 150)]
    pub ceiling: i64,
    /// Citizens changing at once.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of changes.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

fn cf_of(i: usize) -> String {
    fascicolo_load::demo::cf(&format!("MDCPRS80A{:02}F{:03}", 1 + i % 28, i / 28 % 1000))
}

pub async fn run(mut cfg: Config, args: BenchDoctorsArgs) -> anyhow::Result<()> {
    cfg.privacy.gp_ceiling = args.ceiling;
    let store = crate::fresh_store(&mut cfg, "bench-doctors").await?;
    let ceilings = fascicolo_app::doctor_choice::Ceilings { gp: args.ceiling, pediatrician: cfg.privacy.pediatrician_ceiling };
    let fhir = FhirService::with_policy(Arc::clone(&store), fascicolo_app::Policy { ceilings, ..Default::default() });
    let put = |v: Value| {
        let fhir = fhir.clone();
        async move {
            let (rt, id) = (v["resourceType"].as_str().unwrap_or_default().to_string(), v["id"].as_str().unwrap_or_default().to_string());
            fhir.update(&Actor::system(), &rt, &id, v.to_string().as_bytes(), None).await.map(|_| ())
        }
    };
    let started = std::time::Instant::now();
    put(json!({"resourceType": "Organization", "id": "ats-bench", "active": true, "name": "ATS"})).await?;
    for d in 0..args.doctors {
        let id = format!("doc-{d}");
        put(json!({"resourceType": "Practitioner", "id": id, "active": true, "name": [{"family": format!("Medico{d:02}"), "given": ["Dott."]}]})).await?;
        put(json!({"resourceType": "PractitionerRole", "id": format!("{id}-role"), "active": true,
            "practitioner": {"reference": format!("Practitioner/{id}")}, "organization": {"reference": "Organization/ats-bench"},
            "code": [{"coding": [{"system": fascicolo_domain::systems::ROLE_SYSTEM, "code": "gp"}]}]}))
        .await?;
    }
    let sessions = fascicolo_app::auth::Sessions::new(
        Arc::clone(&store),
        fascicolo_app::auth::SessionLimits { idle_ms: 3_600_000, absolute_ms: 36_000_000 },
    );
    let mut people: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(args.citizens);
    for i in 0..args.citizens {
        let id = format!("person-{i}");
        let cf = cf_of(i);
        // everyone starts spread over the first half of the doctors
        let doctor = format!("doc-{}", i % (args.doctors / 2).max(1));
        put(json!({"resourceType": "Patient", "id": id, "active": true, "birthDate": "1980-01-01",
            "identifier": [{"system": fascicolo_domain::systems::CF_SYSTEM, "value": cf}],
            "name": [{"family": "Prova", "given": [format!("P{i}")]}],
            "managingOrganization": {"reference": "Organization/ats-bench"},
            "generalPractitioner": [{"reference": format!("Practitioner/{doctor}")}]}))
        .await?;
        let cf = fascicolo_domain::CodiceFiscale::parse(&cf).map_err(|e| anyhow::anyhow!("{e}"))?;
        let profiles = fascicolo_app::auth::profiles_for(store.as_ref(), &cf).await?;
        let mut actor = Actor::new(Who::Citizen { cf: cf.clone(), patient: Some(id.clone()) });
        actor.acting_for = Some(id);
        let (secret, s) = sessions.create(cf.as_str(), actor, profiles, None).await?;
        people.push((format!("fascicolo_session={secret}").into(), s.csrf.into()));
    }
    println!(
        "setup: {} citizens on {} of {} family doctors, ceiling {} ({:.1} s)",
        args.citizens,
        (args.doctors / 2).max(1),
        args.doctors,
        args.ceiling,
        started.elapsed().as_secs_f64()
    );
    let (addr, server) = fascicolo_server::Application::spawn_on_loopback(&cfg, Arc::clone(&store)).await?;
    let url = Arc::<str>::from(format!("http://{addr}/medico"));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).pool_max_idle_per_host(256).build()?;
    let full = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (client, url, people, doctors, full) = (client.clone(), Arc::clone(&url), Arc::new(people), args.doctors, Arc::clone(&full));
        drive(args.clients, args.seconds, move |c, i| {
            let (client, url, people, full) = (client.clone(), Arc::clone(&url), Arc::clone(&people), Arc::clone(&full));
            async move {
                let k = (c * 7919 + i as usize * 104_729) % people.len();
                let (cookie, csrf) = &people[k];
                let doctor = format!("doc-{}", (k + i as usize * 3 + 1) % doctors);
                let r = client
                    .post(url.as_ref())
                    .header("cookie", cookie.as_ref())
                    .form(&[("csrf", csrf.as_ref()), ("medico", doctor.as_str())])
                    .send()
                    .await;
                let Ok(r) = r else { return false };
                let to = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let _ = r.bytes().await;
                if to.ends_with("esito=pieno") {
                    full.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                to.ends_with("esito=scelto")
            }
        })
        .await
    };
    let changed = load.latencies.len() - load.errors;
    println!(
        "doctor changes, {} citizens at once: {:.0} changes/s ({} changed, {} refused: list full {}, already theirs or lost), p50 {:.1} ms, p99 {:.1} ms",
        args.clients,
        changed as f64 / load.seconds,
        changed,
        load.errors,
        full.load(std::sync::atomic::Ordering::Relaxed),
        load.pct(0.5),
        load.pct(0.99)
    );
    // every list exact and within its ceiling
    let mut wrong = 0;
    let mut over = 0;
    for d in 0..args.doctors {
        let pairs =
            vec![("general-practitioner".to_string(), format!("Practitioner/doc-{d}")), ("_summary".to_string(), "count".to_string())];
        let registry = fhir.search(&Actor::system(), Some("Patient"), &pairs, "").await?.total.unwrap_or(0) as i64;
        let list = match fhir.read(&Actor::system(), "Group", &format!("lista-doc-{d}")).await {
            Ok(g) => g.resource["quantity"].as_i64().unwrap_or(-1),
            Err(_) => registry,
        };
        if list != registry {
            wrong += 1;
        }
        // a list may start above the ceiling (the first half); it can only shrink then
        let half = (args.doctors / 2).max(1);
        let initial = if d < half { ((args.citizens + half - 1 - d) / half) as i64 } else { 0 };
        if registry > args.ceiling.max(initial) {
            over += 1;
        }
    }
    println!("lists: {} doctors; lists that differ from the registry: {wrong}; lists grown over the ceiling: {over}", args.doctors);
    server.abort();
    anyhow::ensure!(wrong == 0 && over == 0, "{wrong} lists differ from the registry, {over} grew over the ceiling");
    Ok(())
}
