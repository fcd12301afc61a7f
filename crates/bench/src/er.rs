//! `fascicolo bench-er`: emergency rooms live, as hospitals and the public see them. The region's
//! emergency departments (the synthetic registry) on a fresh store; a simulated busy winter day
//! of every room sent over HTTP as each hospital's own client (how many times faster than real
//! time); the public JSON feed and pages under load (requests/s, p99); and live connections: how
//! long after an event each open stream sees the change.

use crate::api::{drive, succeeded};
use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_server::config::Config;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchErArgs {
    /// Hospital systems sending at once while the day is ingested.
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Concurrent clients of the public feed and pages.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds per read scenario.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Live connections held open at once.
    #[arg(long, default_value_t = 5000)]
    pub connections: usize,
    /// Arrivals of the day against an ordinary day (winter: more).
    #[arg(long, default_value_t = 1.3)]
    pub busy: f64,
}

/// Read a live stream until its next `board` message (false: the stream ended or was silent 30 s).
async fn next_board(r: &mut reqwest::Response) -> bool {
    let mut buf = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), r.chunk()).await {
            Ok(Ok(Some(c))) => {
                buf.push_str(&String::from_utf8_lossy(&c));
                while let Some(end) = buf.find("\n\n") {
                    if buf[..end].contains("event: board") {
                        return true;
                    }
                    buf.drain(..end + 2);
                }
            }
            _ => return false,
        }
    }
}

pub async fn run(mut cfg: Config, args: BenchErArgs) -> anyhow::Result<()> {
    let store = crate::documents::bench_store(&mut cfg, "bencher").await?;
    let fhir = FhirService::new(Arc::clone(&store));
    let layout = fascicolo_seed::region::layout(1, 10_000);
    fascicolo_load::seed::put_all(&fhir, fascicolo_seed::region::resources(1, &layout)).await?;
    cfg.er.simulate = Some(false);
    let (addr, server) = fascicolo_server::Application::spawn_on_loopback(&cfg, Arc::clone(&store)).await?;
    let root = format!("http://{addr}");
    let board = fascicolo_app::er::ErService::new(fhir.clone()).board().await?;
    let rooms: Vec<fascicolo_load::er_sim::Room> = board
        .rooms
        .iter()
        .map(|r| fascicolo_load::er_sim::Room {
            id: r.er.id.clone(),
            sender: r.er.asst.clone().unwrap_or_else(|| r.er.hospital.clone()),
            // a busy day: more arrivals than the rooms' ordinary rate
            spaces: ((f64::from(r.er.spaces) * args.busy).round() as u32).max(1),
        })
        .collect();
    let tokens = fascicolo_app::auth::Tokens::new(Arc::clone(&store));
    let mut by_sender: HashMap<String, Arc<str>> = HashMap::new();
    for r in &rooms {
        if !by_sender.contains_key(&r.sender) {
            let actor =
                Actor::new(Who::Client { client_id: format!("his-{}", r.sender), organization: Some(r.sender.clone()), platform: false });
            by_sender.insert(r.sender.clone(), tokens.issue(&actor, "bench", 24 * 3600).await?.access_token.into());
        }
    }
    let sender_of: HashMap<String, Arc<str>> = rooms.iter().map(|r| (r.id.clone(), Arc::clone(&by_sender[&r.sender]))).collect();

    // the day: yesterday from midnight (Rome), every event a hospital would send
    let today = fascicolo_domain::rome::today();
    let start = fascicolo_domain::rome::at(today.previous_day().unwrap_or(today), 0, 0).unwrap_or_else(time::OffsetDateTime::now_utc);
    let mut sim = fascicolo_load::er_sim::Simulation::new(rooms.clone(), 19, start);
    let mut events = Vec::new();
    let mut t = start;
    while t <= start + time::Duration::hours(24) {
        events.extend(sim.due(t));
        t += time::Duration::minutes(1);
    }
    let accesses = events.iter().filter(|e| e.event.step == fascicolo_domain::er::Step::Arrival).count();
    // each hospital sends its own accesses in order: one queue per sender, shared by the senders
    let mut queues: Vec<Vec<serde_json::Value>> = vec![Vec::new(); args.senders.max(1)];
    for e in &events {
        let h = e.access.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
        let mut v = serde_json::json!({"emergencyRoom": e.er, "access": e.access, "event": e.event.step.kind(),
            "at": e.event.at.format(&time::format_description::well_known::Rfc3339)?});
        match &e.event.step {
            fascicolo_domain::er::Step::Triage(c) => v["triage"] = c.code().into(),
            fascicolo_domain::er::Step::Decision(d) => v["decision"] = d.code().into(),
            fascicolo_domain::er::Step::Exit(o) => v["outcome"] = (*o).into(),
            _ => {}
        }
        let n = queues.len();
        queues[h % n].push(v);
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.senders.max(args.clients)).build()?;
    let began = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for q in queues {
        let (client, root, sender_of) = (client.clone(), root.clone(), sender_of.clone());
        set.spawn(async move {
            let mut errors = Vec::new();
            for v in q {
                let token = v["emergencyRoom"].as_str().and_then(|id| sender_of.get(id)).cloned().unwrap_or_else(|| Arc::from(""));
                match client.post(format!("{root}/er/v1/events")).bearer_auth(&*token).json(&v).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    Ok(r) => errors.push(format!("{} {} ← {v}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => errors.push(format!("{e} ← {v}")),
                }
            }
            errors
        });
    }
    let mut failed = Vec::new();
    while let Some(r) = set.join_next().await {
        failed.extend(r.unwrap_or_else(|_| vec!["a sender stopped".into()]));
    }
    let errors = failed.len();
    let took = began.elapsed().as_secs_f64();
    println!("emergency rooms: {} rooms, a busy day of {} accesses = {} events", rooms.len(), accesses, events.len());
    println!(
        "  ingested over HTTP by {} hospital senders in {:.1} s: {:.0} events/s, {:.0}x faster than real time, {} errors",
        args.senders,
        took,
        events.len() as f64 / took,
        86_400.0 / took,
        errors
    );
    for f in failed.iter().take(5) {
        println!("    refused: {f}");
    }

    // the public feed and pages
    let first_room = rooms.first().map(|r| r.id.clone()).unwrap_or_default();
    for (name, path) in [
        ("feed /pronto-soccorso/stato.json", "/pronto-soccorso/stato.json".to_string()),
        ("page /pronto-soccorso", "/pronto-soccorso".to_string()),
        ("page /pronto-soccorso?comune=Bergamo", "/pronto-soccorso?comune=Bergamo".to_string()),
        ("page of one room", format!("/pronto-soccorso/{first_room}")),
    ] {
        let (client, url) = (client.clone(), format!("{root}{path}"));
        let load = drive(args.clients, args.seconds, move |_, _| succeeded(client.get(&url))).await;
        let n = load.latencies.len();
        println!(
            "  {name}: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, {} errors ({} clients)",
            n as f64 / load.seconds,
            load.pct(0.5),
            load.pct(0.99),
            load.errors,
            args.clients
        );
    }

    // live connections: each holds the stream open and reports when it sees the next change
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<Duration>>();
    let sent: Arc<tokio::sync::OnceCell<Instant>> = Arc::default();
    let ready = Arc::new(tokio::sync::Barrier::new(args.connections + 1));
    let streams = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    for _ in 0..args.connections {
        let (streams, root, tx, sent, ready) = (streams.clone(), root.clone(), tx.clone(), Arc::clone(&sent), Arc::clone(&ready));
        tokio::spawn(async move {
            // the first message is the picture at connection time; then every task waits until
            // all are connected, and the second message is the change after the event
            let mut first = None;
            if let Ok(mut r) = streams.get(format!("{root}/pronto-soccorso/live")).send().await {
                if next_board(&mut r).await {
                    first = Some(r);
                }
            }
            ready.wait().await;
            let seen = match first {
                Some(mut r) => next_board(&mut r).await.then(|| sent.get().map(Instant::elapsed)).flatten(),
                None => None,
            };
            let _ = tx.send(seen);
        });
    }
    drop(tx);
    ready.wait().await;
    let room = rooms.first().map(|r| r.id.clone()).unwrap_or_default();
    let token = sender_of.get(&room).cloned().unwrap_or_else(|| Arc::from(""));
    let _ = sent.set(Instant::now());
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let ev = serde_json::json!({"emergencyRoom": room, "access": "BENCH-LIVE-1", "event": "arrival", "at": now});
    let ok = succeeded(client.post(format!("{root}/er/v1/events")).bearer_auth(&*token).json(&ev)).await;
    let mut seen = Vec::new();
    let mut lost = 0;
    while let Some(r) = rx.recv().await {
        match r {
            Some(d) => seen.push(d.as_secs_f64() * 1000.0),
            None => lost += 1,
        }
    }
    seen.sort_by(f64::total_cmp);
    let within = seen.iter().filter(|ms| **ms <= 2000.0).count();
    let pct = |p: f64| seen.get(((seen.len() as f64 * p) as usize).min(seen.len().saturating_sub(1))).copied().unwrap_or(0.0);
    println!(
        "  live: {} connections open, event accepted: {ok}; {} saw the change (p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms), {} within 2 s, {} failed",
        args.connections,
        seen.len(),
        pct(0.5),
        pct(0.99),
        seen.last().copied().unwrap_or(0.0),
        within,
        lost
    );
    server.abort();
    Ok(())
}
