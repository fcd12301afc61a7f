//! Emergency rooms: the national triage codes, the kinds of emergency department, the events a
//! hospital sends about one access, and the live picture computed from them.
//!
//! An access is the set of its events, not their order: events arrive late, twice and out of
//! order, and [`Visit::apply`] gives the same visit whatever order the same events came in. The
//! live picture ([`Picture::of`]) is a pure function of the visits present and the time.

use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A triage code of the national guidelines (2019): 1 red … 5 white.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Triage(u8);

impl Triage {
    pub const ALL: [Triage; 5] = [Triage(1), Triage(2), Triage(3), Triage(4), Triage(5)];

    /// `1`…`5`; anything else is not a triage code.
    pub fn parse(code: u8) -> Option<Triage> {
        (1..=5).contains(&code).then_some(Triage(code))
    }
    pub fn code(self) -> u8 {
        self.0
    }
    /// The colour, as the national guidelines name it.
    pub fn colour_it(self) -> &'static str {
        ["Rosso", "Arancione", "Azzurro", "Verde", "Bianco"][usize::from(self.0 - 1)]
    }
    pub fn colour_en(self) -> &'static str {
        ["Red", "Orange", "Light blue", "Green", "White"][usize::from(self.0 - 1)]
    }
    /// What the code means, in plain words.
    pub fn meaning_it(self) -> &'static str {
        [
            "Emergenza: interruzione o compromissione di una funzione vitale",
            "Urgenza: rischio di compromissione delle funzioni vitali",
            "Urgenza differibile: condizione stabile che richiede più accertamenti",
            "Urgenza minore: condizione stabile senza rischio evolutivo",
            "Non urgenza: problema non urgente o di minima rilevanza clinica",
        ][usize::from(self.0 - 1)]
    }
    pub fn meaning_en(self) -> &'static str {
        [
            "Emergency: a vital function is failing or lost",
            "Urgent: vital functions at risk",
            "Urgent, can wait: stable, needs several tests or treatments",
            "Minor urgency: stable, no risk of getting worse",
            "Not urgent: a minor or non-urgent problem",
        ][usize::from(self.0 - 1)]
    }
    /// The longest wait from triage to being seen that the guidelines set, in minutes (code 1:
    /// immediately).
    pub fn target_minutes(self) -> u32 {
        [0, 15, 60, 120, 240][usize::from(self.0 - 1)]
    }
}

/// The kind of an emergency department.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErKind {
    /// Pronto soccorso (first level, no specialist departments on call).
    Ps,
    /// DEA di I livello.
    DeaI,
    /// DEA di II livello (regional hub).
    DeaII,
    /// Paediatric emergency room.
    Paediatric,
    /// Obstetric and gynaecological emergency room.
    Obstetric,
}

impl ErKind {
    pub const ALL: [ErKind; 5] = [Self::Ps, Self::DeaI, Self::DeaII, Self::Paediatric, Self::Obstetric];
    pub fn code(self) -> &'static str {
        match self {
            Self::Ps => "PS",
            Self::DeaI => "DEA1",
            Self::DeaII => "DEA2",
            Self::Paediatric => "PSP",
            Self::Obstetric => "PSO",
        }
    }
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
    pub fn label_it(self) -> &'static str {
        match self {
            Self::Ps => "Pronto soccorso",
            Self::DeaI => "DEA di I livello",
            Self::DeaII => "DEA di II livello",
            Self::Paediatric => "Pronto soccorso pediatrico",
            Self::Obstetric => "Pronto soccorso ostetrico-ginecologico",
        }
    }
    pub fn label_en(self) -> &'static str {
        match self {
            Self::Ps => "Emergency room",
            Self::DeaI => "Level I emergency department",
            Self::DeaII => "Level II emergency department (hub)",
            Self::Paediatric => "Paediatric emergency room",
            Self::Obstetric => "Obstetric emergency room",
        }
    }
}

/// The decision at the end of treatment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// To be admitted: waits for a bed in a ward.
    Admission,
    /// To be sent home (or to outpatient care).
    Discharge,
    /// To be transferred to another hospital.
    Transfer,
    /// Short observation (OBI).
    Observation,
}

impl Decision {
    pub const ALL: [Decision; 4] = [Self::Admission, Self::Discharge, Self::Transfer, Self::Observation];
    pub fn code(self) -> &'static str {
        match self {
            Self::Admission => "admission",
            Self::Discharge => "discharge",
            Self::Transfer => "transfer",
            Self::Observation => "observation",
        }
    }
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// The outcome of an access (EMUR-PS `EsitoTrattamento`, the codes the national flow and the
/// VPS report use: the VPS schematron names 6 and 7, leaving before the visit and during tests;
/// the national flow asks for the admission's number with 2).
pub const OUTCOMES: [(u8, &str, &str); 9] = [
    (OUTCOME_HOME, "Dimissione a domicilio", "Discharged home"),
    (OUTCOME_ADMITTED, "Ricovero in reparto di degenza", "Admitted to a ward"),
    (OUTCOME_TRANSFERRED, "Trasferimento ad altro istituto", "Transferred to another hospital"),
    (4, "Deceduto in pronto soccorso", "Died in the emergency room"),
    (5, "Rifiuta il ricovero", "Refused admission"),
    (OUTCOME_LEFT_UNSEEN, "Abbandona il pronto soccorso prima della visita medica", "Left before being seen"),
    (7, "Abbandona il pronto soccorso durante gli accertamenti", "Left during tests"),
    (OUTCOME_OUTPATIENT, "Dimissione a strutture ambulatoriali", "Discharged to outpatient care"),
    (9, "Giunto cadavere", "Dead on arrival"),
];

/// Outcome codes the code names (the rest by number in [`OUTCOMES`]).
pub const OUTCOME_HOME: u8 = 1;
pub const OUTCOME_ADMITTED: u8 = 2;
pub const OUTCOME_TRANSFERRED: u8 = 3;
pub const OUTCOME_LEFT_UNSEEN: u8 = 6;
pub const OUTCOME_OUTPATIENT: u8 = 8;

/// The Italian and English names of an outcome code.
pub fn outcome(code: u8) -> Option<(&'static str, &'static str)> {
    OUTCOMES.iter().find(|o| o.0 == code).map(|o| (o.1, o.2))
}

/// What happened, as a hospital reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Arrival,
    /// Triage (a re-triage is another triage event at a later time).
    Triage(Triage),
    /// A doctor takes the patient in charge.
    TakeOver,
    Decision(Decision),
    /// The patient leaves, with the outcome code.
    Exit(u8),
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Arrival => "arrival",
            Self::Triage(_) => "triage",
            Self::TakeOver => "take-over",
            Self::Decision(_) => "decision",
            Self::Exit(_) => "exit",
        }
    }
}

/// One event of one access, with when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub step: Step,
    pub at: OffsetDateTime,
}

/// Why an event cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the {what} is recorded already with a different {field}; send a correction as a new access or leave it")]
    Contradicts { what: &'static str, field: &'static str },
    #[error("the {what} ({at}) is before the arrival ({arrival})")]
    BeforeArrival { what: &'static str, at: String, arrival: String },
    #[error("the {what} ({at}) is after the exit ({exit})")]
    AfterExit { what: &'static str, at: String, exit: String },
    #[error("the outcome code {0} is not one of the national codes 1–9")]
    Outcome(u8),
}

/// One access to an emergency room: the set of events received for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visit {
    pub arrival: Option<OffsetDateTime>,
    /// Triage evaluations by time (a later one replaces the code in force).
    pub triages: BTreeMap<OffsetDateTime, Triage>,
    pub take_over: Option<OffsetDateTime>,
    /// Decisions by time (observation may be followed by admission or discharge).
    pub decisions: BTreeMap<OffsetDateTime, Decision>,
    pub exit: Option<(u8, OffsetDateTime)>,
}

/// Whether an event changed the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// The same event was received before: nothing changes.
    Duplicate,
}

fn iso(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

impl Visit {
    /// The events this visit holds (what [`Visit::apply`] rebuilds it from).
    pub fn events(&self) -> Vec<Event> {
        let mut v = Vec::new();
        if let Some(at) = self.arrival {
            v.push(Event { step: Step::Arrival, at });
        }
        for (at, t) in &self.triages {
            v.push(Event { step: Step::Triage(*t), at: *at });
        }
        if let Some(at) = self.take_over {
            v.push(Event { step: Step::TakeOver, at });
        }
        for (at, d) in &self.decisions {
            v.push(Event { step: Step::Decision(*d), at: *at });
        }
        if let Some((o, at)) = self.exit {
            v.push(Event { step: Step::Exit(o), at });
        }
        v
    }

    /// Every time the visit holds (arrival aside), with what it is.
    fn times(&self) -> Vec<(&'static str, OffsetDateTime)> {
        let mut v: Vec<(&'static str, OffsetDateTime)> = self.triages.keys().map(|t| ("triage", *t)).collect();
        v.extend(self.take_over.map(|t| ("take-over", t)));
        v.extend(self.decisions.keys().map(|t| ("decision", *t)));
        v.extend(self.exit.map(|e| ("exit", e.1)));
        v
    }

    /// Take one event. The result does not depend on the order events arrive in; an event that
    /// contradicts one received before, or puts the access out of time order, is refused and
    /// leaves the visit as it was.
    pub fn apply(&mut self, e: &Event) -> Result<Applied, EventError> {
        let same = |held: Option<OffsetDateTime>| held == Some(e.at);
        // the event must lie between arrival and exit, whichever of them came first
        let kind = e.step.kind();
        if let Some(arrival) = self.arrival {
            if e.at < arrival && !matches!(e.step, Step::Arrival) {
                return Err(EventError::BeforeArrival { what: kind, at: iso(e.at), arrival: iso(arrival) });
            }
        }
        if let Some((_, exit)) = self.exit {
            if e.at > exit && !matches!(e.step, Step::Exit(_)) {
                return Err(EventError::AfterExit { what: kind, at: iso(e.at), exit: iso(exit) });
            }
        }
        match &e.step {
            Step::Arrival => {
                if let Some(a) = self.arrival {
                    return if same(Some(a)) {
                        Ok(Applied::Duplicate)
                    } else {
                        Err(EventError::Contradicts { what: "arrival", field: "time" })
                    };
                }
                if let Some((what, at)) = self.times().into_iter().find(|(_, t)| *t < e.at) {
                    return Err(EventError::BeforeArrival { what, at: iso(at), arrival: iso(e.at) });
                }
                self.arrival = Some(e.at);
            }
            Step::Triage(t) => match self.triages.get(&e.at) {
                Some(held) if held == t => return Ok(Applied::Duplicate),
                Some(_) => return Err(EventError::Contradicts { what: "triage at this time", field: "code" }),
                None => {
                    self.triages.insert(e.at, *t);
                }
            },
            Step::TakeOver => match self.take_over {
                Some(t) if t == e.at => return Ok(Applied::Duplicate),
                Some(_) => return Err(EventError::Contradicts { what: "take-over", field: "time" }),
                None => self.take_over = Some(e.at),
            },
            Step::Decision(d) => match self.decisions.get(&e.at) {
                Some(held) if held == d => return Ok(Applied::Duplicate),
                Some(_) => return Err(EventError::Contradicts { what: "decision at this time", field: "kind" }),
                None => {
                    self.decisions.insert(e.at, *d);
                }
            },
            Step::Exit(o) => {
                if outcome(*o).is_none() {
                    return Err(EventError::Outcome(*o));
                }
                match self.exit {
                    Some(held) if held == (*o, e.at) => return Ok(Applied::Duplicate),
                    Some(_) => return Err(EventError::Contradicts { what: "exit", field: "outcome or time" }),
                    None => {
                        if let Some((what, at)) = self.times().into_iter().find(|(_, t)| *t > e.at) {
                            return Err(EventError::AfterExit { what, at: iso(at), exit: iso(e.at) });
                        }
                        self.exit = Some((*o, e.at));
                    }
                }
            }
        }
        Ok(Applied::Changed)
    }

    /// The triage code in force (the latest evaluation).
    pub fn triage(&self) -> Option<Triage> {
        self.triages.values().next_back().copied()
    }

    /// The decision in force (the latest).
    pub fn decision(&self) -> Option<Decision> {
        self.decisions.values().next_back().copied()
    }

    /// When the access started: its arrival, or (until the arrival event comes) its earliest event.
    pub fn start(&self) -> Option<OffsetDateTime> {
        self.arrival.or_else(|| self.times().into_iter().map(|t| t.1).min())
    }

    /// Where the patient is now.
    pub fn state(&self) -> State {
        if self.exit.is_some() {
            return State::Gone;
        }
        match self.decision() {
            Some(Decision::Admission | Decision::Transfer) => State::Boarding,
            Some(Decision::Observation) => State::Observation,
            Some(Decision::Discharge) => State::Treatment,
            None if self.take_over.is_some() => State::Treatment,
            None => State::Waiting,
        }
    }
}

/// Where a patient present in the emergency room is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Arrived, waiting to be seen by a doctor.
    Waiting,
    /// Seen by a doctor, in treatment.
    Treatment,
    /// In short observation (OBI).
    Observation,
    /// Decided to admit or transfer; waiting for a bed or a transport.
    Boarding,
    Gone,
}

/// The counts for one triage code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByCode {
    pub waiting: u32,
    pub treatment: u32,
    /// Median and longest wait of those waiting, in minutes.
    pub median_wait: Option<u32>,
    pub longest_wait: Option<u32>,
    /// Of those waiting, how many have waited past the code's target.
    pub over_target: u32,
}

/// How crowded an emergency room is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Crowding {
    /// Occupancy under 70%.
    Low,
    /// 70% to under 100%.
    Medium,
    /// 100% to under 150%.
    High,
    /// 150% and more.
    Overcrowded,
}

impl Crowding {
    /// The level of an occupancy in percent (present people over treatment spaces).
    pub fn of(occupancy_percent: u32) -> Crowding {
        match occupancy_percent {
            0..70 => Self::Low,
            70..100 => Self::Medium,
            100..150 => Self::High,
            _ => Self::Overcrowded,
        }
    }
    pub fn code(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Overcrowded => "overcrowded",
        }
    }
    pub fn label_it(self) -> &'static str {
        match self {
            Self::Low => "Poco affollato",
            Self::Medium => "Mediamente affollato",
            Self::High => "Affollato",
            Self::Overcrowded => "Sovraffollato",
        }
    }
    pub fn label_en(self) -> &'static str {
        match self {
            Self::Low => "Not crowded",
            Self::Medium => "Moderately crowded",
            Self::High => "Crowded",
            Self::Overcrowded => "Overcrowded",
        }
    }
}

/// The live picture of one emergency room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// Per triage code 1…5.
    pub by_code: [ByCode; 5],
    /// Arrived, not yet triaged.
    pub awaiting_triage: u32,
    pub observation: u32,
    /// Waiting for a ward bed or a transfer.
    pub boarding: u32,
    /// Everyone present.
    pub present: u32,
    /// `present × 100 / treatment spaces`, rounded down.
    pub occupancy: u32,
    pub crowding: Crowding,
}

fn minutes(from: OffsetDateTime, to: OffsetDateTime) -> u32 {
    u32::try_from((to - from).whole_minutes().max(0)).unwrap_or(u32::MAX)
}

impl Picture {
    /// The picture at `now` of the visits present, for an emergency room of `spaces` treatment
    /// spaces. Waits run from arrival; a visit not yet triaged counts apart.
    pub fn of<'a>(visits: impl IntoIterator<Item = &'a Visit>, spaces: u32, now: OffsetDateTime) -> Picture {
        let mut by_code = [ByCode::default(); 5];
        let mut waits: [Vec<u32>; 5] = Default::default();
        let (mut awaiting_triage, mut observation, mut boarding, mut present) = (0u32, 0u32, 0u32, 0u32);
        for v in visits {
            let state = v.state();
            if state == State::Gone {
                continue;
            }
            present += 1;
            match (state, v.triage()) {
                (State::Observation, _) => observation += 1,
                (State::Boarding, _) => boarding += 1,
                (State::Waiting, None) => awaiting_triage += 1,
                (State::Waiting, Some(t)) => {
                    let i = usize::from(t.code() - 1);
                    by_code[i].waiting += 1;
                    let waited = v.start().map_or(0, |s| minutes(s, now));
                    waits[i].push(waited);
                    if waited > t.target_minutes() {
                        by_code[i].over_target += 1;
                    }
                }
                (State::Treatment, t) => by_code[usize::from(t.map_or(5, Triage::code) - 1)].treatment += 1,
                (State::Gone, _) => {}
            }
        }
        for (b, w) in by_code.iter_mut().zip(waits.iter_mut()) {
            w.sort_unstable();
            b.longest_wait = w.last().copied();
            b.median_wait = match w.len() {
                0 => None,
                n if n % 2 == 1 => Some(w[n / 2]),
                n => Some((w[n / 2 - 1] + w[n / 2]) / 2),
            };
        }
        let occupancy = (present * 100).checked_div(spaces).unwrap_or(0);
        Picture { by_code, awaiting_triage, observation, boarding, present, occupancy, crowding: Crowding::of(occupancy) }
    }
}

/// What a hospital says about an access besides its course, for the national flow (EMUR-PS):
/// how the person came, who sent them, the main problem, and at the end the diagnoses and
/// services. Each field is set once; the same value again changes nothing; another value is a
/// contradiction (as for the events).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// `ModalitaArrivo`: 1–7 or 9 (3: own means; 1, 4 and 6 involve the 118 service).
    pub arrival_mode: Option<u8>,
    /// `ResponsabileInvio`: 1–7 or 9 (5: the 118 service).
    pub sent_by: Option<u8>,
    /// `ProblemaPrincipale`: 1–31.
    pub main_problem: Option<u8>,
    /// ICD-9-CM diagnoses, the main one first (at most 5), written without the dot.
    pub diagnoses: Vec<String>,
    /// Services given (codes of the outpatient catalogue), the main one first (at most 5).
    pub services: Vec<String>,
    /// For a person not identified: the class of presumed age (`Eta/Presunta`, 0–6).
    pub age_class: Option<u8>,
    /// For an admission: the hospital's admission number (8 characters) and the ward's
    /// speciality code (2 characters).
    pub admission: Option<(String, String)>,
    /// For a transfer: the receiving hospital's code (up to 8 characters) and the reason (1–3).
    pub transfer: Option<(String, u8)>,
}

/// A code list field: `1`–`7` or `9`.
pub fn emur_code_1_7_9(c: u8) -> bool {
    (1..=7).contains(&c) || c == 9
}

/// An ICD-9-CM code as the flows write it: 3 to 6 characters, digits or a leading `V`/`E`, no
/// dot (`786.50` → `78650`). `None` when it is not one.
pub fn icd9(code: &str) -> Option<String> {
    let c: String = code.trim().chars().filter(|c| *c != '.').collect::<String>().to_ascii_uppercase();
    let mut chars = c.chars();
    let first_ok = chars.next().is_some_and(|f| f.is_ascii_digit() || f == 'V' || f == 'E');
    (first_ok && chars.all(|c| c.is_ascii_digit()) && (3..=6).contains(&c.len())).then_some(c)
}

/// A service code of the outpatient catalogue as the flows write it: 3 to 9 letters, digits or
/// dots (`89.7`, `87.03`).
pub fn service_code(code: &str) -> Option<String> {
    let c = code.trim().to_ascii_uppercase();
    ((3..=9).contains(&c.len()) && c.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')).then_some(c)
}

impl Details {
    pub fn is_empty(&self) -> bool {
        *self == Details::default()
    }

    /// Take what another event says. `Ok(true)` when something new was learnt; an error names
    /// the field that would change.
    pub fn merge(&mut self, other: &Details) -> Result<bool, EventError> {
        fn one<T: PartialEq + Clone>(held: &mut Option<T>, new: &Option<T>, field: &'static str) -> Result<bool, EventError> {
            match (held.as_ref(), new) {
                (_, None) => Ok(false),
                (None, Some(n)) => {
                    *held = Some(n.clone());
                    Ok(true)
                }
                (Some(h), Some(n)) if h == n => Ok(false),
                _ => Err(EventError::Contradicts { what: "access", field }),
            }
        }
        fn list(held: &mut Vec<String>, new: &[String], field: &'static str) -> Result<bool, EventError> {
            if new.is_empty() || held.as_slice() == new {
                Ok(false)
            } else if held.is_empty() {
                *held = new.to_vec();
                Ok(true)
            } else {
                Err(EventError::Contradicts { what: "access", field })
            }
        }
        // check every field before changing any: a refused merge leaves the details as they were
        let mut next = self.clone();
        let changed = one(&mut next.arrival_mode, &other.arrival_mode, "arrival mode")?
            | one(&mut next.sent_by, &other.sent_by, "sender")?
            | one(&mut next.main_problem, &other.main_problem, "main problem")?
            | list(&mut next.diagnoses, &other.diagnoses, "diagnoses")?
            | list(&mut next.services, &other.services, "services")?
            | one(&mut next.age_class, &other.age_class, "presumed age")?
            | one(&mut next.admission, &other.admission, "admission")?
            | one(&mut next.transfer, &other.transfer, "transfer")?;
        *self = next;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ev(step: Step, minute: i64) -> Event {
        Event { step, at: datetime!(2026-12-07 10:00 UTC) + time::Duration::minutes(minute) }
    }

    fn full() -> Vec<Event> {
        vec![
            ev(Step::Arrival, 0),
            ev(Step::Triage(Triage(3)), 5),
            ev(Step::Triage(Triage(2)), 20),
            ev(Step::TakeOver, 30),
            ev(Step::Decision(Decision::Observation), 60),
            ev(Step::Decision(Decision::Admission), 90),
            ev(Step::Exit(3), 200),
        ]
    }

    #[test]
    fn any_order_and_repeats_give_the_same_visit() {
        let mut in_order = Visit::default();
        for e in full() {
            assert_eq!(in_order.apply(&e), Ok(Applied::Changed));
        }
        // every rotation, reversed, and with each event twice
        let events = full();
        for k in 0..events.len() {
            let mut v = Visit::default();
            let mut order: Vec<Event> = events[k..].iter().chain(&events[..k]).cloned().collect();
            if k % 2 == 1 {
                order.reverse();
            }
            // an exit before other events is taken only once they are all earlier than it
            for e in order.iter().chain(order.iter()) {
                let _ = v.apply(e);
            }
            for e in &events {
                let _ = v.apply(e);
            }
            assert_eq!(v, in_order, "order starting at {k}");
        }
        assert_eq!(in_order.triage(), Some(Triage(2)));
        assert_eq!(in_order.state(), State::Gone);
        assert_eq!(in_order.apply(&ev(Step::Exit(3), 200)), Ok(Applied::Duplicate));
    }

    #[test]
    fn contradictions_and_time_travel_are_refused_and_change_nothing() {
        let mut v = Visit::default();
        v.apply(&ev(Step::Arrival, 0)).unwrap();
        let before = v.clone();
        assert!(matches!(v.apply(&ev(Step::TakeOver, -5)), Err(EventError::BeforeArrival { .. })));
        assert!(matches!(v.apply(&ev(Step::Arrival, 3)), Err(EventError::Contradicts { .. })));
        assert!(matches!(v.apply(&ev(Step::Exit(42), 10)), Err(EventError::Outcome(42))));
        assert_eq!(v, before);
        v.apply(&ev(Step::Exit(1), 60)).unwrap();
        assert!(matches!(v.apply(&ev(Step::Exit(1), 61)), Err(EventError::Contradicts { .. })));
        assert!(matches!(v.apply(&ev(Step::Exit(2), 60)), Err(EventError::Contradicts { .. })));
        assert!(matches!(v.apply(&ev(Step::TakeOver, 70)), Err(EventError::AfterExit { .. })));
        // a late event from before the exit is still taken
        assert_eq!(v.apply(&ev(Step::TakeOver, 50)), Ok(Applied::Changed));
        // a late arrival after events it would follow is refused
        let mut w = Visit::default();
        w.apply(&ev(Step::TakeOver, 10)).unwrap();
        assert!(matches!(w.apply(&ev(Step::Arrival, 20)), Err(EventError::BeforeArrival { .. })));
        assert_eq!(w.apply(&ev(Step::Arrival, 0)), Ok(Applied::Changed));
    }

    #[test]
    fn the_picture_counts_by_code_and_state() {
        let now = datetime!(2026-12-07 12:00 UTC);
        let mk = |events: &[Event]| {
            let mut v = Visit::default();
            for e in events {
                v.apply(e).unwrap();
            }
            v
        };
        let visits = [
            // waiting, code 4, for 120 minutes (arrived 10:00)
            mk(&[ev(Step::Arrival, 0), ev(Step::Triage(Triage(4)), 5)]),
            // waiting, code 4, for 130 minutes: over the target
            mk(&[ev(Step::Arrival, -10), ev(Step::Triage(Triage(4)), 0)]),
            // waiting, code 4, 20 minutes
            mk(&[ev(Step::Arrival, 100), ev(Step::Triage(Triage(4)), 101)]),
            // in treatment, code 2
            mk(&[ev(Step::Arrival, 0), ev(Step::Triage(Triage(2)), 1), ev(Step::TakeOver, 10)]),
            // not yet triaged
            mk(&[ev(Step::Arrival, 115)]),
            mk(&[ev(Step::Arrival, 0), ev(Step::TakeOver, 10), ev(Step::Decision(Decision::Observation), 30)]),
            mk(&[ev(Step::Arrival, 0), ev(Step::TakeOver, 10), ev(Step::Decision(Decision::Admission), 30)]),
            mk(&[ev(Step::Arrival, 0), ev(Step::Exit(8), 30)]),
        ];
        let p = Picture::of(&visits, 10, now);
        assert_eq!(p.by_code[3], ByCode { waiting: 3, treatment: 0, median_wait: Some(120), longest_wait: Some(130), over_target: 1 });
        assert_eq!(p.by_code[1].treatment, 1);
        assert_eq!((p.awaiting_triage, p.observation, p.boarding, p.present), (1, 1, 1, 7));
        assert_eq!((p.occupancy, p.crowding), (70, Crowding::Medium));
        assert_eq!(Picture::of(&visits, 4, now).crowding, Crowding::Overcrowded);
        assert_eq!(Picture::of(&[], 0, now).crowding, Crowding::Low);
    }

    #[test]
    fn codes_parse() {
        assert_eq!(Triage::parse(0), None);
        assert_eq!(Triage::parse(6), None);
        assert_eq!(Triage::parse(2).map(|t| (t.colour_it(), t.target_minutes())), Some(("Arancione", 15)));
        assert_eq!(ErKind::parse("DEA2"), Some(ErKind::DeaII));
        assert_eq!(outcome(9).map(|o| o.0), Some("Giunto cadavere"));
        // the VPS schematron names 6 and 7 as the two ways of leaving (before the visit, during
        // tests); the national flow requires the admission's number with 2
        assert_eq!(outcome(6).map(|o| o.1), Some("Left before being seen"));
        assert_eq!(outcome(7).map(|o| o.1), Some("Left during tests"));
        assert_eq!(outcome(OUTCOME_ADMITTED).map(|o| o.1), Some("Admitted to a ward"));
        assert_eq!(outcome(10), None);
    }

    #[test]
    fn details_are_set_once_and_a_contradiction_changes_nothing() {
        let mut d = Details::default();
        let arrival = Details { arrival_mode: Some(3), sent_by: Some(1), main_problem: Some(1), ..Default::default() };
        assert_eq!(d.merge(&arrival), Ok(true));
        assert_eq!(d.merge(&arrival), Ok(false), "the same again is nothing new");
        let exit = Details { diagnoses: vec!["78650".into()], services: vec!["89.7".into()], ..Default::default() };
        assert_eq!(d.merge(&exit), Ok(true));
        let before = d.clone();
        // a new sender with a new diagnosis list: refused whole, nothing taken
        let wrong = Details { sent_by: Some(2), diagnoses: vec!["4019".into()], ..Default::default() };
        assert!(matches!(d.merge(&wrong), Err(EventError::Contradicts { field: "sender", .. })));
        assert_eq!(d, before);
        let wrong = Details { diagnoses: vec!["4019".into()], ..Default::default() };
        assert!(matches!(d.merge(&wrong), Err(EventError::Contradicts { field: "diagnoses", .. })));
        assert_eq!(d, before);
    }

    #[test]
    fn codes_of_the_flow() {
        assert_eq!(icd9("786.50").as_deref(), Some("78650"));
        assert_eq!(icd9("v45.81").as_deref(), Some("V4581"));
        assert_eq!(icd9("E888").as_deref(), Some("E888"));
        assert_eq!(icd9("12"), None);
        assert_eq!(icd9("1234567"), None);
        assert_eq!(icd9("A09"), None, "ICD-10 is not ICD-9-CM");
        assert_eq!(service_code("89.7").as_deref(), Some("89.7"));
        assert_eq!(service_code("8"), None);
        assert_eq!(service_code("89 7"), None);
        assert!(emur_code_1_7_9(9) && emur_code_1_7_9(1) && !emur_code_1_7_9(8) && !emur_code_1_7_9(0));
    }
}
