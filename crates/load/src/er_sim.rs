//! A living demo of the emergency rooms: every emergency department of the registry simulated in
//! real time (arrivals by hour of day and day of week, the triage mix, waits that grow with
//! crowding, treatment, observation and boarding times, and now and then a surge at one room),
//! sent through the same event path the hospitals use (`ErService::event`, as the hospital's own
//! client). The patients are not identified: the simulation writes into nobody's record.
//!
//! Figures are plausible, not measured: about five accesses a day per treatment space, the
//! triage mix of a typical Italian emergency room (code 1 about 1%, 2 about 12%, 3 about 35%,
//! 4 about 40%, 5 about 12%).

use fascicolo_app::er::{ErService, EventIn};
use fascicolo_app::{Actor, Who};
use fascicolo_domain::er::{
    Decision, Details, Event, Step, Triage, OUTCOME_ADMITTED, OUTCOME_HOME, OUTCOME_LEFT_UNSEEN, OUTCOME_OUTPATIENT, OUTCOME_TRANSFERRED,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use time::{Duration, OffsetDateTime};

/// The municipalities of the region with the position of their province's chief town (the
/// synthetic region has no finer geometry).
pub fn places() -> Vec<fascicolo_web::er_web::Place> {
    let d = fascicolo_seed::data::data();
    let mut v: Vec<fascicolo_web::er_web::Place> = d
        .towns
        .iter()
        .map(|t| fascicolo_web::er_web::Place {
            name: t.name.to_string(),
            province: t.province.code.to_string(),
            lat: t.province.lat,
            lon: t.province.lon,
            capital: t.name == t.province.chief_town,
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v.dedup_by(|a, b| a.name == b.name);
    v
}

/// One emergency room as the simulation sees it.
#[derive(Debug, Clone)]
pub struct Room {
    pub id: String,
    pub sender: String,
    pub spaces: u32,
}

/// Relative arrivals by hour of day (mean 1).
const HOURLY: [f64; 24] =
    [0.45, 0.35, 0.3, 0.28, 0.28, 0.35, 0.55, 0.9, 1.35, 1.6, 1.65, 1.55, 1.35, 1.3, 1.35, 1.35, 1.3, 1.25, 1.2, 1.1, 1.0, 0.85, 0.7, 0.55];

/// Arrivals per hour at a room at a time (Mondays are busier, Sundays quieter; `surge` triples).
pub fn rate(room: &Room, at: OffsetDateTime, surge: bool) -> f64 {
    let local = at.to_offset(fascicolo_domain::rome::offset(at));
    let day = match local.weekday() {
        time::Weekday::Monday => 1.15,
        time::Weekday::Sunday => 0.9,
        _ => 1.0,
    };
    let per_day = f64::from(room.spaces) * 5.0;
    per_day / 24.0 * HOURLY[usize::from(local.hour())] * day * if surge { 3.0 } else { 1.0 }
}

fn exp(rng: &mut ChaCha8Rng, mean_minutes: f64) -> Duration {
    let u: f64 = rng.gen_range(1e-9..1.0);
    Duration::seconds((-u.ln() * mean_minutes * 60.0) as i64)
}

/// The whole path of one access from its arrival: its events, in time order. `load` is the
/// room's occupancy (1.0 = full), which lengthens waits.
pub fn access(rng: &mut ChaCha8Rng, arrival: OffsetDateTime, load: f64) -> Vec<Event> {
    let code = match rng.gen_range(0..100) {
        0 => 1,
        1..=12 => 2,
        13..=47 => 3,
        48..=87 => 4,
        _ => 5,
    };
    let triage = Triage::parse(code).unwrap_or(Triage::ALL[4]);
    let mut ev = vec![Event { step: Step::Arrival, at: arrival }];
    let triaged = arrival + Duration::minutes(rng.gen_range(1..8));
    ev.push(Event { step: Step::Triage(triage), at: triaged });
    let slow = 0.5 + load.clamp(0.0, 2.5);
    let wait_mean = [0.0, 8.0, 40.0, 75.0, 100.0][usize::from(code - 1)] * slow;
    let seen = triaged + exp(rng, wait_mean.max(0.5));
    // some of the least urgent leave before being seen
    if code >= 4 && (seen - arrival) > Duration::hours(3) && rng.gen_bool(0.3) {
        ev.push(Event { step: Step::Exit(OUTCOME_LEFT_UNSEEN), at: arrival + Duration::minutes(rng.gen_range(150..180)) });
        return ev;
    }
    ev.push(Event { step: Step::TakeOver, at: seen });
    let treated = seen + Duration::minutes(rng.gen_range(40..200));
    let admit_p = [0.7, 0.4, 0.15, 0.04, 0.01][usize::from(code - 1)];
    let r: f64 = rng.gen();
    let (decision, exit) = if r < admit_p {
        (Decision::Admission, (OUTCOME_ADMITTED, treated + Duration::minutes(rng.gen_range(30..600))))
    } else if r < admit_p + 0.02 {
        (Decision::Transfer, (OUTCOME_TRANSFERRED, treated + Duration::minutes(rng.gen_range(30..180))))
    } else if r < admit_p + 0.09 {
        (Decision::Observation, (OUTCOME_HOME, treated + Duration::minutes(rng.gen_range(360..1440))))
    } else {
        (
            Decision::Discharge,
            (if rng.gen_bool(0.1) { OUTCOME_OUTPATIENT } else { OUTCOME_HOME }, treated + Duration::minutes(rng.gen_range(5..30))),
        )
    };
    ev.push(Event { step: Step::Decision(decision), at: treated });
    ev.push(Event { step: Step::Exit(exit.0), at: exit.1 });
    ev
}

/// What the hospital reports about an access for the national flow: at arrival how the person
/// came, who sent them and the main problem; at exit the diagnoses and services (none for
/// someone who left unseen).
/// `transfer_to`: the code of a hospital a transfer goes to.
pub fn details(rng: &mut ChaCha8Rng, events: &[Event], transfer_to: &str) -> (Details, Details) {
    let code = events.iter().find_map(|e| if let Step::Triage(t) = e.step { Some(t.code()) } else { None }).unwrap_or(4);
    // the more urgent, the likelier an ambulance of the 118 service sent them
    let by_118 = rng.gen_bool([0.9, 0.6, 0.3, 0.1, 0.03][usize::from(code - 1)]);
    let sent_by = if by_118 {
        5
    } else {
        match rng.gen_range(0..10) {
            0 => 2,
            1 => 4,
            _ => 1,
        }
    };
    let arrival = Details {
        arrival_mode: Some(if by_118 { 1 } else { 3 }),
        sent_by: Some(sent_by),
        main_problem: Some(rng.gen_range(1..=31)),
        // the simulated people are not identified: the hospital estimates the age
        age_class: Some(rng.gen_range(0..=6)),
        ..Default::default()
    };
    let seen = events.iter().any(|e| e.step == Step::TakeOver);
    let exit = if seen {
        // common ICD-9-CM diagnoses of an emergency room, graver ones for the urgent codes
        const MINOR: [&str; 8] = ["78650", "78900", "78060", "7840", "84500", "5990", "4660", "8730"];
        const MAJOR: [&str; 4] = ["41091", "43491", "8208", "42731"];
        let main = if code <= 2 { MAJOR[rng.gen_range(0..MAJOR.len())] } else { MINOR[rng.gen_range(0..MINOR.len())] };
        let mut services = vec!["89.7".to_string()];
        if code <= 3 {
            services.extend(["89.52", "90.62.2"].map(String::from));
        }
        if rng.gen_bool(0.3) {
            services.push("87.44.1".into());
        }
        let outcome = events.iter().find_map(|e| if let Step::Exit(o) = e.step { Some(o) } else { None });
        // wards by speciality code: 08 cardiology, 09 general surgery, 26 general medicine,
        // 32 neurology, 36 orthopaedics
        let ward = ["26", "26", "08", "09", "32", "36"][rng.gen_range(0..6)];
        Details {
            diagnoses: vec![main.to_string()],
            services,
            admission: (outcome == Some(OUTCOME_ADMITTED)).then(|| (format!("{:08}", rng.gen_range(0..100_000_000u32)), ward.to_string())),
            transfer: (outcome == Some(OUTCOME_TRANSFERRED)).then(|| (transfer_to.to_string(), rng.gen_range(1..=3))),
            ..Default::default()
        }
    } else {
        Details::default()
    };
    (arrival, exit)
}

/// A scheduled event of the simulation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: i64,
    seq: u64,
    room: usize,
    access: u64,
    /// Index into the access's events; `usize::MAX` marks the room's next arrival.
    step: usize,
}

/// The simulation's state: rooms, pending events, accesses in flight.
pub struct Simulation {
    rooms: Vec<Room>,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<Due>>,
    /// Each access's room, events, and what it reports at arrival and at exit.
    accesses: std::collections::HashMap<u64, (usize, Vec<Event>, Details, Details)>,
    present: Vec<u32>,
    seq: u64,
    next_access: u64,
    /// A room in surge, and until when.
    surge: Option<(usize, OffsetDateTime)>,
    run: String,
}

impl Simulation {
    /// Rooms start at `start` with the patients a steady state would have then (their earlier
    /// events are sent at once).
    pub fn new(rooms: Vec<Room>, seed: u64, start: OffsetDateTime) -> Self {
        let mut s = Simulation {
            present: vec![0; rooms.len()],
            rooms,
            rng: fascicolo_seed::rng(seed, "er-sim", 0),
            queue: BinaryHeap::new(),
            accesses: Default::default(),
            seq: 0,
            next_access: 0,
            surge: None,
            // access numbers differ between runs, so a restarted demo never meets its old ones
            run: format!("{:x}", start.unix_timestamp()),
        };
        // warm start: the accesses of the last 12 hours that are still open at `start`
        for room in 0..s.rooms.len() {
            let mut t = start - Duration::hours(12);
            loop {
                let r = rate(&s.rooms[room], t, false);
                t += exp(&mut s.rng, 60.0 / r.max(0.01));
                if t >= start {
                    break;
                }
                let events = access(&mut s.rng, t, 0.6);
                if events.last().is_some_and(|e| e.at > start) {
                    s.add_access(room, events);
                }
            }
            s.schedule_arrival(room, start);
        }
        s
    }

    fn push(&mut self, at: OffsetDateTime, room: usize, access: u64, step: usize) {
        self.seq += 1;
        self.queue.push(Reverse(Due { at: at.unix_timestamp(), seq: self.seq, room, access, step }));
    }

    fn add_access(&mut self, room: usize, events: Vec<Event>) {
        let id = self.next_access;
        self.next_access += 1;
        for (i, e) in events.iter().enumerate() {
            self.push(e.at, room, id, i);
        }
        // a transfer goes to another room's hospital (its code is in the room's id)
        let other = &self.rooms[self.rng.gen_range(0..self.rooms.len())].id;
        let code = other.trim_start_matches("loc-ps-").chars().take(8).collect::<String>();
        let (arrival, exit) = details(&mut self.rng, &events, &code);
        self.accesses.insert(id, (room, events, arrival, exit));
    }

    fn schedule_arrival(&mut self, room: usize, after: OffsetDateTime) {
        let surge = self.surge.is_some_and(|(r, until)| r == room && after < until);
        let r = rate(&self.rooms[room], after, surge);
        let at = after + exp(&mut self.rng, 60.0 / r.max(0.01));
        self.push(at, room, 0, usize::MAX);
    }

    /// When the next event is due.
    pub fn next_at(&self) -> Option<OffsetDateTime> {
        self.queue.peek().and_then(|Reverse(d)| OffsetDateTime::from_unix_timestamp(d.at).ok())
    }

    /// The events due up to `now`, as hospitals would send them.
    pub fn due(&mut self, now: OffsetDateTime) -> Vec<EventIn> {
        let mut out = Vec::new();
        // now and then a surge at one room for two hours
        if self.surge.is_none_or(|(_, until)| now > until) && self.rng.gen_bool(0.0005) && !self.rooms.is_empty() {
            let room = self.rng.gen_range(0..self.rooms.len());
            self.surge = Some((room, now + Duration::hours(2)));
        }
        while let Some(Reverse(d)) = self.queue.peek().cloned() {
            if d.at > now.unix_timestamp() {
                break;
            }
            self.queue.pop();
            if d.step == usize::MAX {
                let at = OffsetDateTime::from_unix_timestamp(d.at).unwrap_or(now);
                let load = f64::from(self.present[d.room]) / f64::from(self.rooms[d.room].spaces.max(1));
                let events = access(&mut self.rng, at, load);
                self.add_access(d.room, events);
                self.schedule_arrival(d.room, at);
                continue;
            }
            let Some((room, events, at_arrival, at_exit)) = self.accesses.get(&d.access) else { continue };
            let Some(e) = events.get(d.step).cloned() else { continue };
            let details = match e.step {
                Step::Arrival => at_arrival.clone(),
                Step::Exit(_) => at_exit.clone(),
                _ => Details::default(),
            };
            let last = d.step + 1 == events.len();
            let room = *room;
            match e.step {
                Step::Arrival => self.present[room] += 1,
                Step::Exit(_) => self.present[room] = self.present[room].saturating_sub(1),
                _ => {}
            }
            out.push(EventIn {
                er: self.rooms[room].id.clone(),
                access: format!("SIM-{}-{}", self.run, d.access),
                patient: None,
                event: e,
                details,
            });
            if last {
                self.accesses.remove(&d.access);
            }
        }
        out
    }
}

/// The rooms of the registry, each sending as its ASST (or its hospital).
pub async fn rooms(er: &ErService) -> anyhow::Result<Vec<Room>> {
    let board = er.board().await?;
    Ok(board
        .rooms
        .iter()
        .map(|r| Room { id: r.er.id.clone(), sender: r.er.asst.clone().unwrap_or_else(|| r.er.hospital.clone()), spaces: r.er.spaces })
        .collect())
}

/// Run the simulation until the task is aborted.
pub fn spawn(er: ErService) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let rooms = loop {
            match rooms(&er).await {
                Ok(r) if !r.is_empty() => break r,
                Ok(_) => {
                    tracing::info!("emergency rooms: the registry has none; nothing to simulate");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "emergency rooms: the registry could not be read; trying again");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
        };
        let seed = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(1);
        let actors: Vec<Actor> = rooms
            .iter()
            .map(|r| {
                Actor::new(Who::Client { client_id: format!("er-sim-{}", r.sender), organization: Some(r.sender.clone()), platform: false })
            })
            .collect();
        let index: std::collections::HashMap<String, usize> = rooms.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
        // a simulation that ran before (the demo restarted) left its people in the rooms: they
        // leave now, so the new run starts from its own steady state
        let mut closed = 0;
        for (i, r) in rooms.iter().enumerate() {
            for access in er.open_accesses(&r.id).await.unwrap_or_default().into_iter().filter(|a| a.starts_with("SIM-")) {
                let event = Event { step: Step::Exit(OUTCOME_HOME), at: OffsetDateTime::now_utc() };
                if er
                    .event(&actors[i], EventIn { er: r.id.clone(), access, patient: None, event, details: Details::default() })
                    .await
                    .is_ok()
                {
                    closed += 1;
                }
            }
        }
        if closed > 0 {
            tracing::info!(accesses = closed, "emergency rooms: closed the accesses an earlier simulation left open");
        }
        tracing::info!(rooms = rooms.len(), "emergency rooms: simulating every room in real time");
        let mut sim = Simulation::new(rooms, seed, OffsetDateTime::now_utc());
        loop {
            let now = OffsetDateTime::now_utc();
            for e in sim.due(now) {
                let Some(i) = index.get(&e.er).copied() else { continue };
                if let Err(x) = er.event(&actors[i], e).await {
                    tracing::debug!(error = %x, "emergency rooms: a simulated event was refused");
                }
            }
            let wait = sim.next_at().map_or(Duration::seconds(5), |t| t - OffsetDateTime::now_utc());
            let wait = wait.clamp(Duration::milliseconds(50), Duration::seconds(5));
            tokio::time::sleep(std::time::Duration::from_millis(u64::try_from(wait.whole_milliseconds()).unwrap_or(50))).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fascicolo_domain::er::{Picture, Visit};

    #[test]
    fn a_day_looks_like_an_emergency_room() {
        let rooms = vec![Room { id: "loc-ps-1".into(), sender: "asst-1".into(), spaces: 20 }];
        let start = time::macros::datetime!(2026-12-07 08:00 UTC);
        let mut sim = Simulation::new(rooms, 7, start);
        let mut visits: std::collections::HashMap<String, Visit> = Default::default();
        let mut arrivals = 0;
        let mut t = start;
        while t < start + Duration::hours(24) {
            for e in sim.due(t) {
                if e.event.step == Step::Arrival {
                    arrivals += 1;
                }
                visits.entry(e.access.clone()).or_default().apply(&e.event).expect("the simulation sends consistent events");
            }
            t += Duration::minutes(1);
        }
        // about five accesses a day per space (20 spaces), with the warm start's patients
        assert!((60..=160).contains(&arrivals), "{arrivals}");
        let p = Picture::of(visits.values(), 20, t);
        assert!(p.present > 0 && p.present < 80, "{p:?}");
        // every code occurs; most accesses are codes 3 and 4
        let codes: Vec<u8> = visits.values().filter_map(Visit::triage).map(Triage::code).collect();
        assert!(codes.iter().filter(|c| **c == 3 || **c == 4).count() * 2 > codes.len());
        assert!(visits.values().any(|v| v.exit.is_some_and(|e| e.0 == 3)));
    }
}
