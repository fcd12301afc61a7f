//! `fascicolo bench-celiac`: the celiac merchant API as shops use it. A fresh store with
//! `--citizens` people who have the coeliac-disease exemption and `--merchants` registered shops;
//! each shop's backend authorises 1-euro purchases over HTTP with its own merchant token and the
//! code a citizen showed, for `--seconds`. Then the hardest case: every merchant on one budget
//! at once. Prints authorisations/s and latency percentiles, and checks that no budget was
//! overspent (held never above the amount credited, and equal to the sum of its purchases).

use crate::api::drive;
use fascicolo_app::celiac::{MERCHANT_CLIENT, MERCHANT_TYPE};
use fascicolo_app::portal::Portal;
use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_server::config::Config;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct BenchCeliacArgs {
    /// People with a celiac budget.
    #[arg(long, default_value_t = 2000)]
    pub citizens: usize,
    /// Merchant clients authorising at once.
    #[arg(long, default_value_t = 16)]
    pub merchants: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

fn cf_of(i: usize) -> String {
    // a valid codice fiscale per person: surname/name letters fixed, the number in the birth
    // day and the municipality digits
    let first15 = format!("CLCPRS80A{:02}F{:03}", 1 + i % 28, i / 28 % 1000);
    fascicolo_load::demo::cf(&first15)
}

/// One 1-euro authorisation as a merchant's till sends it; whether it was given (201), its
/// answer read whole.
async fn authorise(client: &reqwest::Client, url: &str, token: &str, code: &str, key: &str) -> bool {
    let r = client.post(url).bearer_auth(token).header("idempotency-key", key).json(&json!({"code": code, "amount": 100})).send().await;
    match r {
        Ok(r) if r.status().as_u16() == 201 => r.bytes().await.is_ok(),
        _ => false,
    }
}

pub async fn run(mut cfg: Config, args: BenchCeliacArgs) -> anyhow::Result<()> {
    let store = crate::fresh_store(&mut cfg, "bench-celiac").await?;
    let fhir = FhirService::new(Arc::clone(&store));
    let put = |v: Value| {
        let fhir = fhir.clone();
        async move {
            let (rt, id) = (v["resourceType"].as_str().unwrap_or_default().to_string(), v["id"].as_str().unwrap_or_default().to_string());
            fhir.update(&Actor::system(), &rt, &id, v.to_string().as_bytes(), None).await.map(|_| ())
        }
    };
    put(json!({"resourceType": "Organization", "id": "ats-bench", "active": true, "name": "ATS"})).await?;
    let portal = Portal::new(fhir.clone());
    let started = std::time::Instant::now();
    let mut codes: Vec<Arc<str>> = Vec::with_capacity(args.citizens);
    for i in 0..args.citizens {
        let id = format!("celiac-{i}");
        let cf = cf_of(i);
        put(json!({"resourceType": "Patient", "id": id, "active": true, "birthDate": "1980-01-01", "gender": if i % 2 == 0 { "female" } else { "male" },
            "identifier": [{"system": fascicolo_domain::systems::CF_SYSTEM, "value": cf}], "name": [{"family": "Prova", "given": [format!("P{i}")]}]}))
        .await?;
        put(json!({"resourceType": "Coverage", "id": format!("{id}-ri0060"), "status": "active",
            "type": {"coding": [{"system": fascicolo_domain::exemption::SYSTEM, "code": "RI0060"}]},
            "beneficiary": {"reference": format!("Patient/{id}")}, "payor": [{"reference": "Organization/ats-bench"}],
            "period": {"start": "2020-01-01"}}))
        .await?;
        let person = Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(&cf)?, patient: Some(id) });
        let (code, _) = portal.celiac_code(&person).await?;
        codes.push(code.into());
    }
    let tokens = fascicolo_app::auth::Tokens::new(Arc::clone(&store));
    let mut merchant_tokens: Vec<Arc<str>> = Vec::new();
    for m in 0..args.merchants {
        let id = format!("merchant-{m}");
        let channel = ["pharmacy", "shop", "supermarket"][m % 3];
        put(json!({"resourceType": "Organization", "id": id, "active": true, "name": format!("Negozio {m}"),
            "identifier": [{"system": MERCHANT_CLIENT, "value": format!("client-{id}")}],
            "type": [{"coding": [{"system": MERCHANT_TYPE.0, "code": MERCHANT_TYPE.1},
                {"system": "urn:fascicolo:celiac-channel", "code": channel}]}]}))
        .await?;
        let mut actor = Actor::new(Who::Client { client_id: format!("client-{id}"), organization: None, platform: false });
        actor.scopes = Some(Vec::new());
        merchant_tokens.push(tokens.issue(&actor, "bench", 24 * 3600).await?.access_token.into());
    }
    println!("setup: {} citizens with a budget, {} merchants ({:.1} s)", args.citizens, args.merchants, started.elapsed().as_secs_f64());
    let (addr, server) = fascicolo_server::Application::spawn_on_loopback(&cfg, Arc::clone(&store)).await?;
    let url = Arc::<str>::from(format!("http://{addr}/celiachia/v1/authorizations"));
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;

    // spread: each merchant authorises for many citizens
    let spread = {
        let (client, url, codes, toks) = (client.clone(), Arc::clone(&url), Arc::new(codes.clone()), Arc::new(merchant_tokens.clone()));
        drive(args.merchants, args.seconds, move |c, i| {
            let (client, url, codes, toks) = (client.clone(), Arc::clone(&url), Arc::clone(&codes), Arc::clone(&toks));
            async move {
                let code = &codes[(c * 7919 + i as usize * 104_729) % codes.len()];
                authorise(&client, &url, &toks[c], code, &format!("spread-{c}-{i}")).await
            }
        })
        .await
    };
    let rate = spread.latencies.len() as f64 / spread.seconds;
    println!(
        "authorisations, {} merchants over {} budgets: {rate:.0}/s, p50 {:.1} ms, p99 {:.1} ms, {} refused or failed of {}",
        args.merchants,
        args.citizens,
        spread.pct(0.5),
        spread.pct(0.99),
        spread.errors,
        spread.latencies.len()
    );

    // one budget, every merchant at once: 1 euro each until it is gone
    let hot = Arc::clone(&codes[0]);
    let contended = {
        let (client, url, toks) = (client.clone(), Arc::clone(&url), Arc::new(merchant_tokens.clone()));
        drive(args.merchants, args.seconds.min(5.0), move |c, i| {
            let (client, url, toks, hot) = (client.clone(), Arc::clone(&url), Arc::clone(&toks), Arc::clone(&hot));
            async move { authorise(&client, &url, &toks[c], &hot, &format!("hot-{c}-{i}")).await }
        })
        .await
    };
    println!(
        "one budget, {} merchants at once: {} authorised, {} refused (over the budget), p99 {:.1} ms",
        args.merchants,
        contended.latencies.len() - contended.errors,
        contended.errors,
        contended.pct(0.99)
    );

    // the ledger: no budget above its credit, and each one the sum of its purchases
    let mut overspent = 0;
    let mut mismatched = 0;
    let mut authorised = 0i64;
    for i in 0..args.citizens {
        let person =
            Actor::new(Who::Citizen { cf: fascicolo_domain::CodiceFiscale::parse(&cf_of(i))?, patient: Some(format!("celiac-{i}")) });
        let mut acting = person.clone();
        acting.acting_for = Some(format!("celiac-{i}"));
        let v = portal.celiac_view(&acting).await?;
        let sum: i64 = v.spends.iter().filter(|s| s.status != "voided").map(|s| s.amount_cents).sum();
        authorised += v.spends.len() as i64;
        if v.budget.held_cents > v.budget.budget_cents {
            overspent += 1;
        }
        if sum != v.budget.held_cents {
            mismatched += 1;
        }
    }
    println!("ledger: {authorised} purchases; budgets overspent: {overspent}; budgets whose held amount differs from their purchases: {mismatched}");
    server.abort();
    if overspent > 0 || mismatched > 0 {
        anyhow::bail!("the ledger is wrong: {overspent} overspent, {mismatched} mismatched");
    }
    Ok(())
}
