//! Citizens in households: names, birth dates and places, valid codici fiscali (with omocodia
//! where two people would share a code), residence, health card, family links, family doctor
//! or pediatrician under their ceilings, exemptions, chronic conditions, consent.

use crate::data::{data, Names, Place, Town};
use crate::region::{asst_for, Layout};
use fascicolo_domain::CodiceFiscale;
use rand::Rng;
use std::collections::{HashMap, HashSet, VecDeque};
use time::{Date, Duration};

/// What the generator is asked for.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub citizens: u64,
    /// The day the region is generated for (ages, validity).
    pub today: Date,
    /// Most patients on a family doctor's list (massimale).
    pub gp_ceiling: u32,
    /// Most patients on a pediatrician's list.
    pub pediatrician_ceiling: u32,
    /// Children below this age have a pediatrician.
    pub pediatric_age: u8,
}

impl Config {
    pub fn new(seed: u64, citizens: u64, today: Date) -> Self {
        Self { seed, citizens, today, gp_ceiling: 1_500, pediatrician_ceiling: 880, pediatric_age: 14 }
    }
}

/// A long-term condition that shapes a clinical history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chronic {
    Diabetes,
    Hypertension,
    Celiac,
    Cancer,
}

impl Chronic {
    /// ICD-9-CM code and Italian label.
    pub fn icd9(self) -> (&'static str, &'static str) {
        match self {
            Self::Diabetes => ("250.00", "Diabete mellito tipo II senza complicanze"),
            Self::Hypertension => ("401.9", "Ipertensione essenziale non specificata"),
            Self::Celiac => ("579.0", "Celiachia"),
            Self::Cancer => ("174.9", "Tumori maligni della mammella della donna, non specificato"),
        }
    }

    /// The pathology exemption it gives (DPCM 12/1/2017 annexes 8 and 7).
    pub fn exemption(self) -> (&'static str, &'static str) {
        match self {
            Self::Diabetes => ("013", "Diabete mellito"),
            Self::Hypertension => ("031", "Ipertensione arteriosa con danno d'organo"),
            Self::Celiac => ("RI0060", "Celiachia"),
            Self::Cancer => ("048", "Soggetti affetti da patologie neoplastiche maligne"),
        }
    }
}

/// A professional of the region (family doctor or pediatrician).
#[derive(Debug, Clone)]
pub struct Doctor {
    pub id: String,
    pub role: &'static str,
    pub given: &'static str,
    pub surname: &'static str,
    pub female: bool,
    pub cf: CodiceFiscale,
    pub ats: &'static str,
    /// Where the practice is (a community house id).
    pub practice: String,
}

#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub cf: CodiceFiscale,
    pub given: &'static str,
    pub surname: &'static str,
    pub female: bool,
    pub birth: Date,
    pub birth_place: &'static Place,
    pub town: &'static Town,
    pub street: String,
    /// Tessera sanitaria (TEAM) number.
    pub health_card: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Income exemptions (`E01`…) and the chronic conditions' exemptions.
    pub exemptions: Vec<(&'static str, &'static str)>,
    pub chronic: Vec<Chronic>,
    pub pregnant_since: Option<Date>,
    pub consent: bool,
    pub doctor: Option<String>,
    /// The doctor's codice fiscale, given name and surname (the author of prescriptions).
    pub doctor_name: Option<(String, &'static str, &'static str)>,
    /// Parents in the same household: (member index, `MTH` | `FTH`).
    pub parents: Vec<(usize, &'static str)>,
}

impl Person {
    pub fn age(&self, today: Date) -> i32 {
        let mut years = today.year() - self.birth.year();
        if (today.month() as u8, today.day()) < (self.birth.month() as u8, self.birth.day()) {
            years -= 1;
        }
        years
    }
}

/// One household: its members, the ASST that serves it, and the doctors who opened their list
/// with it.
#[derive(Debug, Clone)]
pub struct Household {
    pub index: u64,
    pub asst: usize,
    pub members: Vec<Person>,
    pub new_doctors: Vec<Doctor>,
}

#[derive(Debug, Default)]
struct List {
    doctor: Option<Doctor>,
    patients: u32,
    target: u32,
    opened: u32,
}

/// Streams households until the configured number of citizens; deterministic for a seed.
#[derive(Debug)]
pub struct Generator {
    cfg: Config,
    layout: Layout,
    next: u64,
    produced: u64,
    /// Canonical codes given so far (omocodia when a new person would repeat one).
    codes: HashSet<String>,
    /// Recent people whose data a namesake may share (to produce real omocodie).
    recent: VecDeque<(&'static str, &'static str, bool, Date, &'static Place)>,
    lists: HashMap<(&'static str, &'static str), List>,
}

/// Towns weighted as people live: the metropolis, then the chief towns, then the rest.
fn pick_town(rng: &mut impl Rng) -> &'static Town {
    let d = data();
    let r: f64 = rng.gen();
    if r < 0.14 {
        if let Some(t) = d.town_by_istat("015146") {
            return t;
        }
    }
    if r < 0.30 {
        let p = &crate::data::PROVINCES[rng.gen_range(0..crate::data::PROVINCES.len())];
        if let Some(t) = d.chief_town(p) {
            return t;
        }
    }
    &d.towns[rng.gen_range(0..d.towns.len())]
}

fn pick<T: Copy>(rng: &mut impl Rng, list: &[T]) -> T {
    list[rng.gen_range(0..list.len())]
}

fn date_between(rng: &mut impl Rng, from: Date, to: Date) -> Date {
    let days = (to - from).whole_days().max(1);
    from + Duration::days(rng.gen_range(0..days))
}

const STREETS: [&str; 16] = [
    "Via Roma",
    "Via Garibaldi",
    "Via Mazzini",
    "Via Dante",
    "Corso Italia",
    "Via Manzoni",
    "Via Verdi",
    "Via Cavour",
    "Via Matteotti",
    "Piazza della Repubblica",
    "Via XX Settembre",
    "Viale Lombardia",
    "Via Monte Grappa",
    "Via Volta",
    "Via San Francesco",
    "Via dei Mille",
];

impl Generator {
    pub fn new(cfg: Config) -> Self {
        let layout = crate::region::layout(cfg.seed, cfg.citizens);
        Self { cfg, layout, next: 0, produced: 0, codes: HashSet::new(), recent: VecDeque::new(), lists: HashMap::new() }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Citizens generated so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    fn birth_place(&self, rng: &mut impl Rng, origin: &str, birth: Date, residence: &'static Town) -> &'static Place {
        let d = data();
        if origin != "IT" {
            if let Some(p) = d.countries.iter().find(|c| c.code == origin && c.valid_on(birth)) {
                return p;
            }
        }
        let r: f64 = rng.gen();
        let candidate: Option<&'static Place> = if r < 0.55 {
            Some(&residence.place)
        } else if r < 0.80 {
            let t = pick_town(rng);
            Some(&t.place)
        } else {
            // elsewhere in Italy
            Some(&d.municipalities[rng.gen_range(0..d.municipalities.len())])
        };
        match candidate.filter(|p| p.valid_on(birth)) {
            Some(p) => p,
            // the town did not exist yet (or no longer): born in Milan's hospitals
            None => d.place("F205", birth).unwrap_or(&residence.place),
        }
    }

    /// The person's code, with omocodia when someone already has it (`None` only for data the
    /// code cannot be computed from).
    fn code(&mut self, surname: &str, given: &str, female: bool, birth: Date, place: &str) -> Option<CodiceFiscale> {
        let base = CodiceFiscale::compute(surname, given, birth, female, place).ok()?;
        for level in 0..=7 {
            let c = base.omocode(level);
            if self.codes.insert(c.as_str().to_string()) {
                return Some(c);
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn person(
        &mut self,
        rng: &mut impl Rng,
        id: String,
        origin: &'static str,
        surname: &'static str,
        female: bool,
        birth: Date,
        town: &'static Town,
        street: &str,
        namesake_allowed: bool,
    ) -> Option<Person> {
        let names: &Names = &data().names;
        let pool = if female { &names.female } else { &names.male };
        let mut given = pick(rng, &Names::of(pool, origin));
        let mut surname = surname;
        let mut birth = birth;
        let mut place = self.birth_place(rng, origin, birth, town);
        // now and then a namesake: same name, same day, same town as someone before
        if namesake_allowed && rng.gen_bool(0.004) {
            if let Some(&(s, g, _, b, p)) = self.recent.iter().find(|r| r.2 == female) {
                (surname, given, birth, place) = (s, g, b, p);
            }
        }
        if self.recent.len() >= 64 {
            self.recent.pop_front();
        }
        self.recent.push_back((surname, given, female, birth, place));
        let cf = self.code(surname, given, female, birth, place.code)?;
        let today = self.cfg.today;
        let adult = today.year() - birth.year() >= 18;
        let health_card = format!("80380{:015}", rng.gen_range(0..1_000_000_000_000_000u64));
        let phone = adult.then(|| format!("+39 3{:02} {:07}", rng.gen_range(20..99), rng.gen_range(0..10_000_000)));
        let email =
            (adult && rng.gen_bool(0.6)).then(|| format!("{}.{}{}@example.invalid", ascii(given), ascii(surname), rng.gen_range(1..999)));
        Some(Person {
            id,
            cf,
            given,
            surname,
            female,
            birth,
            birth_place: place,
            town,
            street: street.to_string(),
            health_card,
            phone,
            email,
            exemptions: Vec::new(),
            chronic: Vec::new(),
            pregnant_since: None,
            consent: false,
            doctor: None,
            doctor_name: None,
            parents: Vec::new(),
        })
    }

    fn health(&self, rng: &mut impl Rng, p: &mut Person) {
        let age = p.age(self.cfg.today);
        if age >= 40 && rng.gen_bool(if age >= 65 { 0.18 } else { 0.07 }) {
            p.chronic.push(Chronic::Diabetes);
        }
        if age >= 45 && rng.gen_bool(if age >= 65 { 0.35 } else { 0.12 }) {
            p.chronic.push(Chronic::Hypertension);
        }
        if rng.gen_bool(0.012) {
            p.chronic.push(Chronic::Celiac);
        }
        if p.female && age >= 45 && rng.gen_bool(0.03) {
            p.chronic.push(Chronic::Cancer);
        }
        for c in &p.chronic {
            p.exemptions.push(c.exemption());
        }
        if !(6..=65).contains(&age) && rng.gen_bool(0.45) {
            p.exemptions.push(("E01", "Età inferiore a 6 anni o superiore a 65 anni e reddito familiare fino a 36.151,98 euro"));
        } else if (18..60).contains(&age) && rng.gen_bool(0.04) {
            p.exemptions.push(("E02", "Disoccupato e familiari a carico, reddito fino a 8.263,31 euro"));
        } else if age >= 60 && rng.gen_bool(0.05) {
            p.exemptions.push(("E04", "Titolare di pensione al minimo, età superiore a 60 anni"));
        }
        if p.female && (24..43).contains(&age) && rng.gen_bool(0.04) {
            p.pregnant_since = Some(self.cfg.today - Duration::days(rng.gen_range(20..260)));
        }
        p.consent = rng.gen_bool(0.7);
    }

    fn assign_doctor(&mut self, rng: &mut impl Rng, p: &mut Person, asst: usize, new: &mut Vec<Doctor>) {
        let pediatric = p.age(self.cfg.today) < i32::from(self.cfg.pediatric_age);
        let (role, ceiling) = if pediatric { ("pediatrician", self.cfg.pediatrician_ceiling) } else { ("gp", self.cfg.gp_ceiling) };
        let a = &self.layout.assts[asst];
        let ats = a.ats;
        let houses: Vec<String> = self.layout.community_houses.iter().filter(|(i, _)| *i == asst).map(|(_, s)| s.id.clone()).collect();
        let list = self.lists.entry((ats, role)).or_default();
        if list.doctor.is_none() || list.patients >= list.target {
            list.opened += 1;
            let female = rng.gen_bool(0.5);
            let names = &data().names;
            let given = pick(rng, &Names::of(if female { &names.female } else { &names.male }, "IT"));
            let surname = pick(rng, &Names::of(&names.surnames, "IT"));
            let birth = date_between(
                rng,
                Date::from_ordinal_date(1958, 1).unwrap_or(self.cfg.today),
                Date::from_ordinal_date(1990, 1).unwrap_or(self.cfg.today),
            );
            let place = data().place("F205", birth).map(|p| p.code).unwrap_or("F205");
            let prefix = if pediatric { "pls" } else { "mmg" };
            let practice = houses.get(usize::try_from(list.opened).unwrap_or(0) % houses.len().max(1)).cloned().unwrap_or_default();
            let doctor_id = format!("{prefix}-{ats}-{}", list.opened);
            let Some(cf) = self.code(surname, given, female, birth, place) else { return };
            let list = self.lists.entry((ats, role)).or_default();
            let d = Doctor { id: doctor_id, role, given, surname, female, cf, ats, practice };
            new.push(d.clone());
            list.doctor = Some(d);
            list.patients = 0;
            // lists differ in size but stay under the ceiling
            list.target = rng.gen_range(ceiling * 6 / 10..=ceiling);
        }
        let list = self.lists.entry((ats, role)).or_default();
        list.patients += 1;
        p.doctor = list.doctor.as_ref().map(|d| d.id.clone());
        p.doctor_name = list.doctor.as_ref().map(|d| (d.cf.to_string(), d.given, d.surname));
    }

    fn household(&mut self, index: u64) -> Household {
        let mut rng = crate::rng(self.cfg.seed, "household", index);
        let today = self.cfg.today;
        let town = pick_town(&mut rng);
        let asst = self.layout.assts.iter().position(|a| a.id == asst_for(&self.layout, town).id).unwrap_or(0);
        let origin: &'static str =
            if rng.gen_bool(0.1) { pick(&mut rng, &["Z129", "Z330", "Z100", "Z210", "Z216", "Z138", "Z336"]) } else { "IT" };
        let names = &data().names;
        let surnames = Names::of(&names.surnames, origin);
        let street = format!("{} {}", pick(&mut rng, &STREETS), rng.gen_range(1..180));
        let years = |y: i64| Duration::days(y * 365 + y / 4);
        let kind: f64 = rng.gen();
        let mut members = Vec::new();
        let id = |k: usize| format!("pz-{index}-{k}");
        // adults
        let (single, with_children) = match kind {
            k if k < 0.32 => (true, false),
            k if k < 0.55 => (false, false),
            k if k < 0.92 => (false, true),
            _ => (true, true),
        };
        let age_range = if with_children { (24, 58) } else { (19, 96) };
        let first_age = rng.gen_range(age_range.0..age_range.1);
        let first_female = rng.gen_bool(if single && with_children { 0.85 } else { 0.5 });
        let first_birth = date_between(&mut rng, today - years(first_age + 1), today - years(first_age));
        let family_surname = pick(&mut rng, &surnames);
        let first_surname = if first_female && !single { pick(&mut rng, &surnames) } else { family_surname };
        members.extend(self.person(&mut rng, id(0), origin, first_surname, first_female, first_birth, town, &street, !with_children));
        if !single {
            let age = (first_age + rng.gen_range(-4..5)).clamp(19, 99);
            let birth = date_between(&mut rng, today - years(age + 1), today - years(age));
            let female = !first_female;
            let surname = if female { pick(&mut rng, &surnames) } else { family_surname };
            members.extend(self.person(&mut rng, id(1), origin, surname, female, birth, town, &street, false));
        }
        if with_children {
            let mother = members.iter().position(|m| m.female);
            let father = members.iter().position(|m| !m.female);
            let mother_age = mother.map(|m| members[m].age(today)).unwrap_or(35);
            let n = rng.gen_range(1..=3);
            for _ in 0..n {
                let max_age = (mother_age - 20).clamp(0, 24);
                let age = rng.gen_range(0..=max_age);
                let birth = date_between(&mut rng, today - years(i64::from(age) + 1), today - years(i64::from(age)).max(Duration::ZERO));
                let birth = birth.min(today - Duration::days(1));
                let female = rng.gen_bool(0.49);
                // born here: an Italian birth place even for families from abroad
                let Some(mut c) = self.person(&mut rng, id(members.len()), origin, family_surname, female, birth, town, &street, false)
                else {
                    continue;
                };
                if origin != "IT" && birth > first_birth + years(22) {
                    let place = self.birth_place(&mut rng, "IT", birth, town);
                    self.codes.remove(c.cf.as_str());
                    if let Some(cf) = self.code(c.surname, c.given, c.female, c.birth, place.code) {
                        (c.birth_place, c.cf) = (place, cf);
                    }
                }
                if let Some(m) = mother {
                    c.parents.push((m, "MTH"));
                }
                if let Some(f) = father {
                    c.parents.push((f, "FTH"));
                }
                members.push(c);
            }
        }
        // no more than asked for
        let left = self.cfg.citizens.saturating_sub(self.produced);
        members.truncate(usize::try_from(left).unwrap_or(usize::MAX));
        let n = members.len();
        for m in &mut members {
            m.parents.retain(|(i, _)| *i < n);
        }
        let mut new_doctors = Vec::new();
        for p in &mut members {
            self.health(&mut rng, p);
            self.assign_doctor(&mut rng, p, asst, &mut new_doctors);
        }
        Household { index, asst, members, new_doctors }
    }
}

fn ascii(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'à' | 'á' => Some('a'),
            'è' | 'é' => Some('e'),
            'ì' => Some('i'),
            'ò' => Some('o'),
            'ù' => Some('u'),
            c if c.is_ascii_alphabetic() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

impl Iterator for Generator {
    type Item = Household;

    fn next(&mut self) -> Option<Household> {
        if self.produced >= self.cfg.citizens {
            return None;
        }
        let h = self.household(self.next);
        self.next += 1;
        self.produced += h.members.len() as u64;
        Some(h)
    }
}
