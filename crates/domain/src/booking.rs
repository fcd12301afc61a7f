//! Booking rules: the priority classes of a specialist prescription and the deadlines they
//! guarantee, agenda templates and the slots they open on working days, the slot keys that make
//! one slot one row, and the notice a cancellation needs.

use crate::calendar;
use time::{Date, Duration, Weekday};

/// The system of the extension that carries a prescription's priority class (U, B, D, P).
pub const PRIORITY_EXT: &str = "urn:fascicolo:priority-class";
/// The system of the extension that says first access (`first`) or follow-up (`follow-up`).
pub const ACCESS_EXT: &str = "urn:fascicolo:access-type";
/// The code system of the national catalogue of outpatient services.
pub const SERVICE_SYSTEM: &str = "urn:fascicolo:catalogo-nazionale-prestazioni";
/// On a `Schedule`: its weekly template ([`Template`]).
pub const TEMPLATE_EXT: &str = "urn:fascicolo:agenda-template";
/// On a `Schedule`: a day it is closed (one `valueDate` each).
pub const CLOSURE_EXT: &str = "urn:fascicolo:agenda-closure";
/// On a `Schedule`: the ATS (code) whose citizens it guarantees.
pub const AREA_EXT: &str = "urn:fascicolo:guarantee-area";
/// On a `Schedule`: `public` or `accredited`.
pub const PROVIDER_KIND_EXT: &str = "urn:fascicolo:provider-kind";
/// On a `Schedule`: the day up to which its slots are taken by the bookings of the people the
/// synthetic sample does not hold (the synthetic region's stand-in for everyone else's).
pub const BOOKED_UNTIL_EXT: &str = "urn:fascicolo:booked-until";
/// How many days ahead agendas are open.
pub const HORIZON_DAYS: i64 = 90;
/// Working days of notice a cancellation needs; a later one is recorded as late.
pub const NOTICE_WORKING_DAYS: u32 = 2;

/// A prescription's priority class (PNGLA 2019–2021).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Urgent: within 72 hours.
    U,
    /// Short: within 10 days.
    B,
    /// Deferrable: 30 days for visits, 60 for diagnostic exams.
    D,
    /// Planned: within 120 days.
    P,
}

impl Priority {
    pub fn parse(code: &str) -> Option<Self> {
        match code.trim().to_ascii_uppercase().as_str() {
            "U" => Some(Self::U),
            "B" => Some(Self::B),
            "D" => Some(Self::D),
            "P" => Some(Self::P),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::U => "U",
            Self::B => "B",
            Self::D => "D",
            Self::P => "P",
        }
    }

    /// The guaranteed wait in days for a first access (U: 72 hours, counted as 3 days).
    pub fn days(self, diagnostic: bool) -> i64 {
        match self {
            Self::U => 3,
            Self::B => 10,
            Self::D if diagnostic => 60,
            Self::D => 30,
            Self::P => 120,
        }
    }

    /// The last day a first access of this class must take place on, prescribed or booked on `from`.
    pub fn deadline(self, from: Date, diagnostic: bool) -> Date {
        from + Duration::days(self.days(diagnostic))
    }

    pub fn label_it(self) -> &'static str {
        match self {
            Self::U => "Urgente (entro 72 ore)",
            Self::B => "Breve (entro 10 giorni)",
            Self::D => "Differibile (entro 30 giorni, 60 per gli esami)",
            Self::P => "Programmata (entro 120 giorni)",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            Self::U => "Urgent (within 72 hours)",
            Self::B => "Short (within 10 days)",
            Self::D => "Deferrable (within 30 days, 60 for exams)",
            Self::P => "Planned (within 120 days)",
        }
    }
}

/// A service of the regional offer: catalogue code, names, how long a slot lasts, and whether it
/// is a diagnostic exam (a D class then allows 60 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub code: &'static str,
    pub name_it: &'static str,
    pub name_en: &'static str,
    pub minutes: u16,
    pub diagnostic: bool,
    /// What to bring or do before, shown with the appointment.
    pub preparation_it: &'static str,
    pub preparation_en: &'static str,
}

/// The services the synthetic region's agendas offer (codes of the national catalogue; names
/// shortened from it; slot lengths and preparation notes are synthetic).
pub const SERVICES: [Service; 12] = [
    Service {
        code: "89.7A.3",
        name_it: "Prima visita cardiologica",
        name_en: "First cardiology visit",
        minutes: 30,
        diagnostic: false,
        preparation_it: "Porti gli esami e gli elettrocardiogrammi precedenti e l'elenco dei farmaci che prende.",
        preparation_en: "Bring earlier tests and ECGs and the list of medicines you take.",
    },
    Service {
        code: "89.01.3",
        name_it: "Visita cardiologica di controllo",
        name_en: "Cardiology follow-up visit",
        minutes: 20,
        diagnostic: false,
        preparation_it: "Porti gli esami e gli elettrocardiogrammi precedenti e l'elenco dei farmaci che prende.",
        preparation_en: "Bring earlier tests and ECGs and the list of medicines you take.",
    },
    Service {
        code: "95.02",
        name_it: "Prima visita oculistica",
        name_en: "First eye examination",
        minutes: 20,
        diagnostic: false,
        preparation_it: "Porti gli occhiali. Dopo le gocce per dilatare la pupilla non potrà guidare per alcune ore.",
        preparation_en: "Bring your glasses. After the drops that widen the pupil you cannot drive for a few hours.",
    },
    Service {
        code: "89.7A.7",
        name_it: "Prima visita dermatologica",
        name_en: "First dermatology visit",
        minutes: 20,
        diagnostic: false,
        preparation_it: "Non applichi creme sulla pelle da esaminare nel giorno della visita.",
        preparation_en: "Do not put creams on the skin to be examined on the day of the visit.",
    },
    Service {
        code: "89.7B.8",
        name_it: "Prima visita ortopedica",
        name_en: "First orthopaedic visit",
        minutes: 20,
        diagnostic: false,
        preparation_it: "Porti le radiografie e i referti precedenti.",
        preparation_en: "Bring earlier X-rays and reports.",
    },
    Service {
        code: "89.13",
        name_it: "Prima visita neurologica",
        name_en: "First neurology visit",
        minutes: 30,
        diagnostic: false,
        preparation_it: "Porti i referti precedenti e l'elenco dei farmaci che prende.",
        preparation_en: "Bring earlier reports and the list of medicines you take.",
    },
    Service {
        code: "89.26.1",
        name_it: "Prima visita ginecologica",
        name_en: "First gynaecology visit",
        minutes: 20,
        diagnostic: false,
        preparation_it: "Porti il referto dell'ultimo Pap test, se lo ha.",
        preparation_en: "Bring your last Pap test report, if you have one.",
    },
    Service {
        code: "88.76.1",
        name_it: "Ecografia dell'addome completo",
        name_en: "Full abdominal ultrasound",
        minutes: 20,
        diagnostic: true,
        preparation_it: "Digiuno da almeno 6 ore; beva un litro d'acqua un'ora prima e non urini.",
        preparation_en: "Fast for at least 6 hours; drink a litre of water an hour before and do not pass urine.",
    },
    Service {
        code: "87.37.1",
        name_it: "Mammografia bilaterale",
        name_en: "Bilateral mammogram",
        minutes: 15,
        diagnostic: true,
        preparation_it: "Non usi deodorante né talco il giorno dell'esame; porti le mammografie precedenti.",
        preparation_en: "Do not use deodorant or talc on the day of the exam; bring earlier mammograms.",
    },
    Service {
        code: "89.52",
        name_it: "Elettrocardiogramma",
        name_en: "Electrocardiogram",
        minutes: 15,
        diagnostic: true,
        preparation_it: "Nessuna preparazione.",
        preparation_en: "No preparation.",
    },
    Service {
        code: "87.44.1",
        name_it: "RX del torace",
        name_en: "Chest X-ray",
        minutes: 10,
        diagnostic: true,
        preparation_it: "Tolga collane e oggetti metallici; avvisi se potrebbe essere incinta.",
        preparation_en: "Take off necklaces and metal objects; say so if you might be pregnant.",
    },
    Service {
        code: "45.23",
        name_it: "Colonscopia totale",
        name_en: "Colonoscopy",
        minutes: 45,
        diagnostic: true,
        preparation_it: "Dieta senza scorie per 3 giorni e la preparazione intestinale prescritta; serve un accompagnatore.",
        preparation_en: "Low-residue diet for 3 days and the prescribed bowel preparation; someone must come with you.",
    },
];

/// The service of a catalogue code in the regional offer.
pub fn service(code: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.code == code)
}

/// An agenda's weekly template: the weekdays it opens, its opening hours (minutes from
/// midnight, Rome time) and how long a slot lasts. Written as
/// `days=1-5;hours=08:30-12:30,14:00-16:00;minutes=20` (days 1 Monday … 7 Sunday).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Monday first.
    pub days: [bool; 7],
    pub hours: Vec<(u16, u16)>,
    pub minutes: u16,
}

fn hm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl Template {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut days = [false; 7];
        let mut hours = Vec::new();
        let mut minutes = 0u16;
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("'{part}' is not key=value"))?;
            match k.trim() {
                "days" => {
                    for r in v.split(',') {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        let (a, b): (usize, usize) = (
                            a.trim().parse().map_err(|_| format!("'{r}' is not a day range"))?,
                            b.trim().parse().map_err(|_| format!("'{r}' is not a day range"))?,
                        );
                        if !(1..=7).contains(&a) || !(a..=7).contains(&b) {
                            return Err(format!("'{r}' is not a range of days 1 to 7"));
                        }
                        days.iter_mut().take(b).skip(a - 1).for_each(|d| *d = true);
                    }
                }
                "hours" => {
                    for r in v.split(',') {
                        let (a, b) = r.split_once('-').ok_or_else(|| format!("'{r}' is not a time range"))?;
                        let (a, b) = (hm(a).ok_or(format!("'{a}' is not a time"))?, hm(b).ok_or(format!("'{b}' is not a time"))?);
                        if b <= a {
                            return Err(format!("'{r}' ends before it starts"));
                        }
                        hours.push((a, b));
                    }
                }
                "minutes" => minutes = v.trim().parse().map_err(|_| format!("'{v}' is not a number of minutes"))?,
                other => return Err(format!("'{other}' is not part of an agenda template")),
            }
        }
        hours.sort_unstable();
        if hours.windows(2).any(|w| w[1].0 < w[0].1) {
            return Err("opening hours overlap".into());
        }
        if !(5..=240).contains(&minutes) {
            return Err("a slot lasts between 5 and 240 minutes".into());
        }
        if hours.is_empty() || !days.contains(&true) {
            return Err("an agenda opens on some day at some hour".into());
        }
        Ok(Template { days, hours, minutes })
    }

    pub fn render(&self) -> String {
        let days: Vec<String> = (0..7).filter(|i| self.days[*i]).map(|i| (i + 1).to_string()).collect();
        let hours: Vec<String> =
            self.hours.iter().map(|(a, b)| format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60)).collect();
        format!("days={};hours={};minutes={}", days.join(","), hours.join(","), self.minutes)
    }

    /// Whether the agenda opens on `d` (its weekday, not a public holiday nor the patron day
    /// of the town `istat`, not a closure).
    pub fn opens_on(&self, d: Date, istat: &str, closures: &[Date]) -> bool {
        self.days[d.weekday().number_days_from_monday() as usize]
            && !calendar::is_national_holiday(d)
            && calendar::patron_day(istat, d.year()) != Some(d)
            && !closures.contains(&d)
    }

    /// The slots' start times (minutes from midnight) on a day the agenda opens.
    pub fn starts(&self) -> impl Iterator<Item = u16> + '_ {
        let step = self.minutes.max(1);
        self.hours.iter().flat_map(move |(a, b)| (*a..).step_by(step as usize).take_while(move |t| t + step <= *b))
    }
}

/// The key of one slot: the agenda (`Schedule` id) and its Rome start, `{schedule}-{YYYYMMDDHHMM}`.
/// A slot is stored under this id once it is held or booked, so two bookings of it meet on
/// one row.
pub fn slot_key(schedule: &str, day: Date, minute: u16) -> String {
    format!("{schedule}-{:04}{:02}{:02}{:02}{:02}", day.year(), day.month() as u8, day.day(), minute / 60, minute % 60)
}

/// A slot key read back: (schedule, day, minute). None when it is not one.
pub fn parse_slot_key(key: &str) -> Option<(&str, Date, u16)> {
    let (schedule, stamp) = key.rsplit_once('-')?;
    if stamp.len() != 12 || !stamp.bytes().all(|b| b.is_ascii_digit()) || schedule.is_empty() {
        return None;
    }
    let n = |a: usize, b: usize| stamp[a..b].parse::<u32>().ok();
    let day = Date::from_calendar_date(n(0, 4)? as i32, time::Month::try_from(n(4, 6)? as u8).ok()?, n(6, 8)? as u8).ok()?;
    let (h, m) = (n(8, 10)?, n(10, 12)?);
    (h < 24 && m < 60).then_some((schedule, day, (h * 60 + m) as u16))
}

/// Whether cancelling on `today` an appointment on `day` is late: fewer than
/// [`NOTICE_WORKING_DAYS`] whole working days between them (Lombardy then charges the ticket).
pub fn late_cancellation(today: Date, day: Date, istat: &str) -> bool {
    let mut d = today;
    let mut working = 0;
    while let Some(next) = d.next_day() {
        d = next;
        if d >= day {
            break;
        }
        if calendar::is_working_day(d, istat) {
            working += 1;
        }
    }
    working < NOTICE_WORKING_DAYS
}

/// An NRE as written on a prescription: 15 characters, digits (the first three the region or
/// province), spaces ignored. Returns it normalised.
pub fn parse_nre(s: &str) -> Option<String> {
    let n: String = s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
    (n.len() == 15 && n.bytes().all(|b| b.is_ascii_alphanumeric()) && n.bytes().take(3).all(|b| b.is_ascii_digit())).then_some(n)
}

/// Kilometres between two points (equirectangular; plenty at a region's scale).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let k = std::f64::consts::PI / 180.0;
    let x = (a.1 - b.1) * k * ((a.0 + b.0) / 2.0 * k).cos();
    let y = (a.0 - b.0) * k;
    6371.0 * (x * x + y * y).sqrt()
}

/// The weekday of a 1-based day number (1 Monday).
pub fn weekday(n: u8) -> Option<Weekday> {
    match n {
        1 => Some(Weekday::Monday),
        2 => Some(Weekday::Tuesday),
        3 => Some(Weekday::Wednesday),
        4 => Some(Weekday::Thursday),
        5 => Some(Weekday::Friday),
        6 => Some(Weekday::Saturday),
        7 => Some(Weekday::Sunday),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn deadlines_by_class() {
        let d = date!(2026 - 12 - 07);
        assert_eq!(Priority::U.deadline(d, false), date!(2026 - 12 - 10));
        assert_eq!(Priority::B.deadline(d, true), date!(2026 - 12 - 17));
        assert_eq!(Priority::D.deadline(d, false), date!(2027 - 01 - 06));
        assert_eq!(Priority::D.deadline(d, true), date!(2027 - 02 - 05));
        assert_eq!(Priority::P.deadline(d, true), date!(2027 - 04 - 06));
        assert_eq!(Priority::parse(" b"), Some(Priority::B));
        assert_eq!(Priority::parse("X"), None);
    }

    #[test]
    fn templates_round_trip_and_refuse_nonsense() {
        let t = Template::parse("days=1-5;hours=08:30-12:30,14:00-16:00;minutes=20").unwrap();
        assert_eq!(t.render(), "days=1,2,3,4,5;hours=08:30-12:30,14:00-16:00;minutes=20");
        assert_eq!(Template::parse(&t.render()).unwrap(), t);
        // 08:30-12:30 holds 12 slots of 20 minutes, 14:00-16:00 six
        let starts: Vec<u16> = t.starts().collect();
        assert_eq!(starts.len(), 18);
        assert_eq!(starts[0], 8 * 60 + 30);
        assert_eq!(*starts.last().unwrap(), 15 * 60 + 40);
        // a slot that would run past closing is not offered
        let t = Template::parse("days=6;hours=09:00-10:00;minutes=25").unwrap();
        assert_eq!(t.starts().collect::<Vec<_>>(), vec![540, 565]);
        for bad in [
            "days=0-5;hours=08:00-12:00;minutes=20",
            "days=1-5;hours=12:00-08:00;minutes=20",
            "days=1-5;hours=08:00-12:00,11:00-13:00;minutes=20",
            "days=1-5;hours=08:00-12:00;minutes=2",
            "days=1-5;hours=25:00-26:00;minutes=20",
            "days=1-5;minutes=20",
            "hours=08:00-12:00;minutes=20",
            "colour=blue",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn agendas_close_on_holidays_patron_days_and_closures() {
        let t = Template::parse("days=1-6;hours=08:00-12:00;minutes=30").unwrap();
        let milan = "015146";
        assert!(t.opens_on(date!(2026 - 12 - 09), milan, &[]));
        assert!(!t.opens_on(date!(2026 - 12 - 07), milan, &[]), "Sant'Ambrogio in Milan");
        assert!(t.opens_on(date!(2026 - 12 - 07), "016024", &[]), "an ordinary Monday in Bergamo");
        assert!(!t.opens_on(date!(2026 - 12 - 08), milan, &[]), "Immacolata");
        assert!(t.opens_on(date!(2026 - 12 - 12), milan, &[]), "Saturday opens in this template");
        assert!(!t.opens_on(date!(2026 - 12 - 13), milan, &[]), "Sunday");
        assert!(!t.opens_on(date!(2027 - 03 - 29), milan, &[]), "Easter Monday 2027");
        assert!(!t.opens_on(date!(2026 - 12 - 10), milan, &[date!(2026 - 12 - 10)]), "a closure");
    }

    #[test]
    fn slot_keys_round_trip() {
        let k = slot_key("ag-hsp-030906-897A3", date!(2026 - 12 - 10), 9 * 60 + 30);
        assert_eq!(k, "ag-hsp-030906-897A3-202612100930");
        assert_eq!(parse_slot_key(&k), Some(("ag-hsp-030906-897A3", date!(2026 - 12 - 10), 570)));
        assert_eq!(parse_slot_key("ag-x-202613100930"), None);
        assert_eq!(parse_slot_key("ag-x-2026121009"), None);
        assert_eq!(parse_slot_key("-202612100930"), None);
    }

    #[test]
    fn two_working_days_of_notice() {
        let milan = "015146";
        // Wednesday 9 for Monday 14 December: Thursday and Friday in between
        assert!(!late_cancellation(date!(2026 - 12 - 09), date!(2026 - 12 - 14), milan));
        // Thursday 10 for Monday 14: only Friday
        assert!(late_cancellation(date!(2026 - 12 - 10), date!(2026 - 12 - 14), milan));
        // Friday 4 for Thursday 10 in Milan: 7 and 8 are holidays, only 9 is a working day
        assert!(late_cancellation(date!(2026 - 12 - 04), date!(2026 - 12 - 10), milan));
        assert!(!late_cancellation(date!(2026 - 12 - 04), date!(2026 - 12 - 10), "016024"));
        assert!(late_cancellation(date!(2026 - 12 - 10), date!(2026 - 12 - 10), milan));
    }

    #[test]
    fn nre_format() {
        assert_eq!(parse_nre("030 000000000017"), Some("030000000000017".into()));
        assert_eq!(parse_nre("0300A0000000017"), Some("0300A0000000017".into()));
        assert_eq!(parse_nre("03000000000001"), None);
        assert_eq!(parse_nre("A30000000000017"), None);
        assert_eq!(parse_nre("030-00000000001"), None);
    }

    #[test]
    fn every_service_is_in_the_catalogue_form() {
        for s in SERVICES {
            assert!(s.code.split('.').count() >= 2, "{}", s.code);
            assert!(service(s.code).is_some());
            assert!(s.minutes >= 10);
        }
    }
}
