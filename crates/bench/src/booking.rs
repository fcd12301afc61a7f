//! `fascicolo bench-booking`: the regional booking network as apps use it, over HTTP with
//! citizens' tokens: `Appointment/$find` (first availability) and `$book`, on the synthetic
//! region's whole offer (every hospital's agendas, 90 days ahead). A fresh store with
//! `--prescriptions` citizens of the region, each with a specialist prescription; `--clients`
//! apps at once. Prints finds/s with latency, then bookings/s (each a `$find` and a `$book`,
//! the next option tried when another booked it first), then checks that no slot and no
//! prescription was booked twice.

use crate::api::drive;
use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_server::config::Config;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct BenchBookingArgs {
    /// Citizens with a prescription to book.
    #[arg(long, default_value_t = 3000)]
    pub prescriptions: usize,
    /// Apps at once.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

fn cf_of(i: usize) -> String {
    let letters: String = [i / 17_576 % 26, i / 676 % 26, i / 26 % 26, i % 26].iter().map(|d| char::from(b'A' + *d as u8)).collect();
    fascicolo_load::demo::cf(&format!("PR{letters}80A01F205"))
}

/// The free slots the offer opens in 90 days (what the templates make bookable).
fn future_slots(schedules: &[Value]) -> usize {
    let today = fascicolo_domain::rome::today();
    let mut n = 0;
    for s in schedules {
        let Some(t) = s["extension"][0]["valueString"].as_str().and_then(|t| fascicolo_domain::booking::Template::parse(t).ok()) else {
            continue;
        };
        let per_day = t.starts().count();
        for d in 1..=fascicolo_domain::booking::HORIZON_DAYS {
            if t.opens_on(today + time::Duration::days(d), "", &[]) {
                n += per_day;
            }
        }
    }
    n
}

async fn op(client: &reqwest::Client, url: &str, token: &str, params: Value) -> Option<(u16, Value)> {
    let r = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Parameters", "parameter": params}).to_string())
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

/// Every citizen has had their turn: idle instead of spinning (counted as a failure by the
/// driver, so the figures below count bookings themselves).
async fn exhausted() -> bool {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    false
}

/// `$book` the first of these proposed appointments still free (each one taken meanwhile counted
/// in `conflicts`); whether one was booked.
async fn book_one_of<'a>(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    ids: impl Iterator<Item = &'a str>,
    conflicts: &AtomicUsize,
) -> bool {
    for id in ids {
        let params = json!([{"name": "appointment-reference", "valueReference": {"reference": format!("Appointment/{id}")}}]);
        match op(client, &format!("{base}/$book"), token, params).await {
            Some((200, _)) => return true,
            Some((409, _)) => {
                conflicts.fetch_add(1, Ordering::Relaxed);
            }
            _ => return false,
        }
    }
    false
}

pub async fn run(mut cfg: Config, args: BenchBookingArgs) -> anyhow::Result<()> {
    let store = crate::fresh_store(&mut cfg, "bench-booking").await?;
    let fhir = FhirService::new(Arc::clone(&store));
    let started = std::time::Instant::now();
    let layout = fascicolo_seed::region::layout(1, 10_000_000);
    let region = fascicolo_seed::region::resources(1, &layout);
    let schedules: Vec<Value> = region.iter().filter(|v| v["resourceType"] == "Schedule").cloned().collect();
    let slots = future_slots(&schedules);
    fascicolo_load::seed::put_all(&fhir, region).await?;
    let ats: Vec<String> = layout.assts.iter().map(|a| a.ats.to_string()).collect();
    let services = fascicolo_domain::booking::SERVICES;
    let tokens = fascicolo_app::auth::Tokens::new(Arc::clone(&store));
    let mut people: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(args.prescriptions);
    let mut resources = Vec::new();
    for i in 0..args.prescriptions {
        let (pid, cf) = (format!("bench-{i}"), cf_of(i));
        let nre = format!("030{:012}", 700_000_000 + i);
        let s = &services[i % services.len()];
        resources.push(json!({"resourceType": "Patient", "id": pid, "active": true, "birthDate": "1980-01-01",
            "identifier": [{"system": fascicolo_domain::systems::CF_SYSTEM, "value": cf}],
            "managingOrganization": {"reference": format!("Organization/ats-{}", ats[i % ats.len()])}}));
        resources.push(json!({"resourceType": "ServiceRequest", "id": format!("{pid}-sr"), "status": "active", "intent": "order",
            "subject": {"reference": format!("Patient/{pid}")},
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.9.4.3.9", "value": nre}],
            "code": {"coding": [{"system": fascicolo_domain::booking::SERVICE_SYSTEM, "code": s.code}]},
            "extension": [{"url": fascicolo_domain::booking::PRIORITY_EXT, "valueCode": "D"}]}));
        let cf = fascicolo_domain::CodiceFiscale::parse(&cf).map_err(|e| anyhow::anyhow!("{e}"))?;
        let actor = Actor::new(Who::Citizen { cf, patient: Some(pid) });
        people.push((tokens.issue(&actor, "bench", 36_000).await?.access_token.into(), nre.into()));
    }
    fascicolo_load::seed::put_all(&fhir, resources).await?;
    println!(
        "setup: {} agendas of {} sites opening {} slots in {} days; {} citizens with a prescription ({:.1} s)",
        schedules.len(),
        schedules.iter().filter_map(|s| s["actor"][0]["reference"].as_str()).collect::<std::collections::HashSet<_>>().len(),
        slots,
        fascicolo_domain::booking::HORIZON_DAYS,
        args.prescriptions,
        started.elapsed().as_secs_f64()
    );
    let (addr, server) = fascicolo_server::Application::spawn_on_loopback(&cfg, Arc::clone(&store)).await?;
    let base = Arc::<str>::from(format!("http://{addr}/fhir/r4/Appointment"));
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let people = Arc::new(people);

    // $find: first availability for a random citizen's prescription
    let load = {
        let (client, base, people) = (client.clone(), Arc::clone(&base), Arc::clone(&people));
        drive(args.clients, args.seconds, move |c, i| {
            let (client, base, people) = (client.clone(), Arc::clone(&base), Arc::clone(&people));
            async move {
                let (token, nre) = &people[(c * 7919 + i as usize * 104_729) % people.len()];
                let params = json!([{"name": "referral-identifier", "valueIdentifier": {"value": nre.as_ref()}}]);
                matches!(op(&client, &format!("{base}/$find"), token, params).await, Some((200, _)))
            }
        })
        .await
    };
    println!(
        "$find, {} apps at once: {:.0} finds/s ({} errors), p50 {:.1} ms, p99 {:.1} ms",
        args.clients,
        (load.latencies.len() - load.errors) as f64 / load.seconds,
        load.errors,
        load.pct(0.5),
        load.pct(0.99)
    );

    // $find then $book (the next option when someone else booked it first), each citizen once
    let next = Arc::new(AtomicUsize::new(0));
    let conflicts = Arc::new(AtomicUsize::new(0));
    let load = {
        let (client, base, people, next, conflicts) =
            (client.clone(), Arc::clone(&base), Arc::clone(&people), Arc::clone(&next), Arc::clone(&conflicts));
        drive(args.clients, args.seconds, move |_, _| {
            let (client, base, people, next, conflicts) =
                (client.clone(), Arc::clone(&base), Arc::clone(&people), Arc::clone(&next), Arc::clone(&conflicts));
            async move {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((token, nre)) = people.get(k) else { return exhausted().await };
                let params = json!([{"name": "referral-identifier", "valueIdentifier": {"value": nre.as_ref()}}]);
                let Some((200, found)) = op(&client, &format!("{base}/$find"), token, params).await else { return false };
                let ids = found["entry"].as_array().into_iter().flatten().filter(|e| e["search"]["mode"] == "match");
                let ids: Vec<&str> = ids.filter_map(|e| e["resource"]["id"].as_str()).collect();
                book_one_of(&client, &base, token, ids.into_iter(), &conflicts).await
            }
        })
        .await
    };
    let booked = load.latencies.len() - load.errors;
    let tried = next.load(Ordering::Relaxed).min(people.len());
    println!(
        "$find + $book, {} apps at once: {:.0} bookings/s ({} booked, {} failed, {} slots taken first by another app), p50 {:.1} ms, p99 {:.1} ms",
        args.clients,
        booked as f64 / load.seconds,
        booked,
        tried - booked,
        conflicts.load(Ordering::Relaxed),
        load.pct(0.5),
        load.pct(0.99)
    );
    // contention: the citizens left all find their options first, then book at once from those
    // lists (one of the options, the others when another app booked it first): most attempts
    // meet a slot someone else just took
    let first_left = tried;
    let mut proposals: Vec<Vec<String>> = Vec::with_capacity(people.len());
    for (token, nre) in people.iter().skip(first_left) {
        let params = json!([{"name": "referral-identifier", "valueIdentifier": {"value": nre.as_ref()}}]);
        let ids = match op(&client, &format!("{base}/$find"), token, params).await {
            Some((200, found)) => found["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"] == "match")
                .filter_map(|e| e["resource"]["id"].as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        proposals.push(ids);
    }
    let proposals = Arc::new(proposals);
    let next2 = Arc::new(AtomicUsize::new(0));
    let conflicts2 = Arc::new(AtomicUsize::new(0));
    let people_left: Arc<Vec<(Arc<str>, Arc<str>)>> = Arc::new(people.iter().skip(first_left).cloned().collect());
    let contended = {
        let (client, base, people, next, conflicts, proposals) = (
            client.clone(),
            Arc::clone(&base),
            Arc::clone(&people_left),
            Arc::clone(&next2),
            Arc::clone(&conflicts2),
            Arc::clone(&proposals),
        );
        drive(args.clients, args.seconds, move |_, _| {
            let (client, base, people, next, conflicts, proposals) =
                (client.clone(), Arc::clone(&base), Arc::clone(&people), Arc::clone(&next), Arc::clone(&conflicts), Arc::clone(&proposals));
            async move {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let (Some((token, _)), Some(ids)) = (people.get(k), proposals.get(k)) else { return exhausted().await };
                // apps choose among the options (not all the first), then try the others
                let start = if ids.is_empty() { 0 } else { k % ids.len() };
                let order = ids[start..].iter().chain(&ids[..start]).map(String::as_str);
                book_one_of(&client, &base, token, order, &conflicts).await
            }
        })
        .await
    };
    let won = contended.latencies.len() - contended.errors;
    let stranded = next2.load(Ordering::Relaxed).min(people_left.len()) - won;
    let attempts = won + conflicts2.load(Ordering::Relaxed);
    println!(
        "contention, {} apps booking from lists found beforehand: {} $book attempts, {} booked, {} refused as taken, {} citizens left without a slot of their list",
        args.clients,
        attempts,
        won,
        conflicts2.load(Ordering::Relaxed),
        stranded
    );
    let booked = booked + won;
    server.abort();

    // no slot and no prescription booked twice
    let mut by_slot: HashMap<String, usize> = HashMap::new();
    let mut by_sr: HashMap<String, usize> = HashMap::new();
    let mut pairs = vec![("status".to_string(), "booked".to_string()), ("_count".to_string(), "1000".to_string())];
    let mut stored = 0;
    loop {
        let page = fhir.search(&Actor::system(), Some("Appointment"), &pairs, "").await?;
        for (_, json, _) in &page.entries {
            let v: Value = serde_json::from_str(json)?;
            *by_slot.entry(v["slot"][0]["reference"].as_str().unwrap_or_default().to_string()).or_default() += 1;
            *by_sr.entry(v["basedOn"][0]["reference"].as_str().unwrap_or_default().to_string()).or_default() += 1;
            stored += 1;
        }
        let cursor = page.links.iter().filter(|l| l["relation"] == "next").find_map(|l| {
            let url = l["url"].as_str()?;
            form_urlencoded::parse(url.split_once('?')?.1.as_bytes()).find(|(k, _)| k == "_cursor").map(|(_, v)| v.into_owned())
        });
        match cursor {
            Some(c) => {
                pairs.retain(|(k, _)| k != "_cursor");
                pairs.push(("_cursor".to_string(), c));
            }
            None => break,
        }
    }
    let twice_slots = by_slot.values().filter(|n| **n > 1).count();
    let twice_srs = by_sr.values().filter(|n| **n > 1).count();
    println!("appointments booked: {stored}; slots booked twice: {twice_slots}; prescriptions booked twice: {twice_srs}");
    anyhow::ensure!(stored == booked, "{stored} appointments stored for {booked} bookings answered");
    anyhow::ensure!(twice_slots == 0 && twice_srs == 0, "double bookings: {twice_slots} slots, {twice_srs} prescriptions");
    Ok(())
}
