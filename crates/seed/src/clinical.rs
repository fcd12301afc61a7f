//! Clinical histories: what happened to each citizen over the past years, written as national
//! CDA2 documents by the structures of the citizen's ASST.
//!
//! Lab results follow the person: a personal baseline per analyte (shifted by age, sex and
//! chronic conditions) plus visit-to-visit noise, so that the same analytes repeat over the
//! years, trends show, and some values fall outside the laboratory's range.

use crate::cda::{self, Author, LabResult};
use crate::data::data;
use crate::people::{Chronic, Household, Person};
use crate::region::Layout;
use fascicolo_domain::CodiceFiscale;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use time::{Date, Duration};

/// A document ready to publish, and who publishes it.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The CDA2 document id (also the publication's identity).
    pub id: String,
    /// The patient's Patient id.
    pub patient: String,
    /// The producing organisation (`asst-…`): the publishing client acts for it.
    pub producer: String,
    pub date: Date,
    pub kind: &'static str,
    pub xml: String,
}

/// An analyte: LOINC code, Italian name, unit, decimals, reference range (by sex where it
/// differs) and the specimen.
struct Analyte {
    loinc: &'static str,
    name: &'static str,
    unit: &'static str,
    decimals: usize,
    range: fn(bool) -> (Option<f64>, Option<f64>),
    /// Mean and spread of a healthy person's baseline, by sex.
    baseline: fn(bool) -> (f64, f64),
    /// Visit-to-visit variation (coefficient).
    noise: f64,
    specimen: (&'static str, &'static str),
}

const SERUM: (&str, &str) = ("SER", "Siero");
const BLOOD: (&str, &str) = ("BLD", "Sangue intero");

const PANEL: [Analyte; 14] = [
    Analyte {
        loinc: "2345-7",
        name: "Glucosio",
        unit: "mg/dL",
        decimals: 0,
        range: |_| (Some(70.0), Some(99.0)),
        baseline: |_| (86.0, 7.0),
        noise: 0.06,
        specimen: SERUM,
    },
    Analyte {
        loinc: "4548-4",
        name: "Emoglobina glicata (HbA1c)",
        unit: "%",
        decimals: 1,
        range: |_| (Some(4.0), Some(5.6)),
        baseline: |_| (5.3, 0.25),
        noise: 0.03,
        specimen: BLOOD,
    },
    Analyte {
        loinc: "2093-3",
        name: "Colesterolo totale",
        unit: "mg/dL",
        decimals: 0,
        range: |_| (None, Some(200.0)),
        baseline: |_| (190.0, 28.0),
        noise: 0.06,
        specimen: SERUM,
    },
    Analyte {
        loinc: "2085-9",
        name: "Colesterolo HDL",
        unit: "mg/dL",
        decimals: 0,
        range: |f| (Some(if f { 50.0 } else { 40.0 }), None),
        baseline: |f| (if f { 60.0 } else { 50.0 }, 9.0),
        noise: 0.07,
        specimen: SERUM,
    },
    Analyte {
        loinc: "13457-7",
        name: "Colesterolo LDL (calcolato)",
        unit: "mg/dL",
        decimals: 0,
        range: |_| (None, Some(130.0)),
        baseline: |_| (115.0, 25.0),
        noise: 0.08,
        specimen: SERUM,
    },
    Analyte {
        loinc: "2571-8",
        name: "Trigliceridi",
        unit: "mg/dL",
        decimals: 0,
        range: |_| (None, Some(150.0)),
        baseline: |_| (110.0, 30.0),
        noise: 0.15,
        specimen: SERUM,
    },
    Analyte {
        loinc: "2160-0",
        name: "Creatinina",
        unit: "mg/dL",
        decimals: 2,
        range: |f| if f { (Some(0.5), Some(1.0)) } else { (Some(0.7), Some(1.2)) },
        baseline: |f| (if f { 0.75 } else { 0.95 }, 0.1),
        noise: 0.05,
        specimen: SERUM,
    },
    Analyte {
        loinc: "718-7",
        name: "Emoglobina",
        unit: "g/dL",
        decimals: 1,
        range: |f| if f { (Some(12.0), Some(16.0)) } else { (Some(13.5), Some(17.5)) },
        baseline: |f| (if f { 13.6 } else { 15.2 }, 0.8),
        noise: 0.03,
        specimen: BLOOD,
    },
    Analyte {
        loinc: "6690-2",
        name: "Leucociti",
        unit: "10*3/uL",
        decimals: 2,
        range: |_| (Some(4.0), Some(10.0)),
        baseline: |_| (6.5, 1.2),
        noise: 0.12,
        specimen: BLOOD,
    },
    Analyte {
        loinc: "777-3",
        name: "Piastrine",
        unit: "10*3/uL",
        decimals: 0,
        range: |_| (Some(150.0), Some(400.0)),
        baseline: |_| (250.0, 45.0),
        noise: 0.08,
        specimen: BLOOD,
    },
    Analyte {
        loinc: "1742-6",
        name: "Alanina aminotransferasi (ALT)",
        unit: "U/L",
        decimals: 0,
        range: |_| (None, Some(40.0)),
        baseline: |_| (24.0, 7.0),
        noise: 0.15,
        specimen: SERUM,
    },
    Analyte {
        loinc: "3016-3",
        name: "Tireotropina (TSH)",
        unit: "mU/L",
        decimals: 2,
        range: |_| (Some(0.4), Some(4.0)),
        baseline: |_| (1.8, 0.6),
        noise: 0.12,
        specimen: SERUM,
    },
    Analyte {
        loinc: "2823-3",
        name: "Potassio",
        unit: "mmol/L",
        decimals: 1,
        range: |_| (Some(3.5), Some(5.1)),
        baseline: |_| (4.3, 0.3),
        noise: 0.04,
        specimen: SERUM,
    },
    Analyte {
        loinc: "2951-2",
        name: "Sodio",
        unit: "mmol/L",
        decimals: 0,
        range: |_| (Some(135.0), Some(145.0)),
        baseline: |_| (140.0, 1.5),
        noise: 0.01,
        specimen: SERUM,
    },
];

/// How much history to write.
#[derive(Debug, Clone, Copy)]
pub struct Depth {
    /// Years of history before today.
    pub years: i64,
}

impl Default for Depth {
    fn default() -> Self {
        Self { years: 5 }
    }
}

fn normal(rng: &mut impl Rng, mean: f64, sd: f64) -> f64 {
    Normal::new(mean, sd.max(1e-9)).map(|n| n.sample(rng)).unwrap_or(mean)
}

/// The person's own baseline for an analyte.
fn baseline(rng: &mut impl Rng, a: &Analyte, p: &Person, age: i32) -> f64 {
    let (mean, sd) = (a.baseline)(p.female);
    let mut v = normal(rng, mean, sd);
    let has = |c| p.chronic.contains(&c);
    match a.loinc {
        "2345-7" if has(Chronic::Diabetes) => v = normal(rng, 145.0, 22.0),
        "4548-4" if has(Chronic::Diabetes) => v = normal(rng, 7.3, 0.6),
        "2093-3" => v += f64::from((age - 40).max(0)) * 0.6,
        "2160-0" if has(Chronic::Hypertension) => v *= 1.15,
        "718-7" if has(Chronic::Celiac) => v -= 1.2,
        _ => {}
    }
    v.max(0.01)
}

/// The lab physician who signs a structure's reports (one per structure, from the seed).
fn lab_author(seed: u64, code: &str, name: &str, city: &str) -> Author {
    let mut rng = crate::rng(seed, "lab-author", code.bytes().fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b))));
    let names = &data().names;
    let female = rng.gen_bool(0.5);
    let pool = crate::data::Names::of(if female { &names.female } else { &names.male }, "IT");
    let given = pool[rng.gen_range(0..pool.len())];
    let surnames = crate::data::Names::of(&names.surnames, "IT");
    let surname = surnames[rng.gen_range(0..surnames.len())];
    let birth = Date::from_ordinal_date(rng.gen_range(1960..1988), rng.gen_range(1..365)).unwrap_or(Date::MIN);
    let cf = CodiceFiscale::compute(surname, given, birth, female, "F205").map(|c| c.to_string()).unwrap_or_default();
    Author { cf, given: given.into(), surname: surname.into(), structure_code: code.into(), structure_name: name.into(), city: city.into() }
}

/// An NRE-like prescription number: region (030), then 12 digits.
fn nre(rng: &mut impl Rng) -> String {
    format!("030{:012}", rng.gen_range(0..1_000_000_000_000u64))
}

/// The documents of one household, oldest first.
pub fn documents(seed: u64, layout: &Layout, today: Date, depth: Depth, h: &Household) -> Vec<Doc> {
    let asst = &layout.assts[h.asst];
    // the ASST's laboratory writes, the ASST is the custodian (and the publishing organisation)
    let code = asst.code;
    let author = lab_author(seed, code, &asst.name, asst.town.name);
    let mut out = Vec::new();
    for p in &h.members {
        let mut rng = crate::rng(seed, "clinical", h.index * 16 + p.id.len() as u64 + out.len() as u64);
        let age = p.age(today);
        if age < 1 {
            continue;
        }
        let chronic = !p.chronic.is_empty();
        // how often blood is drawn: chronic patients twice a year, the elderly yearly,
        // others every two or three years, children seldom
        let every_days: i64 = match (chronic, age) {
            (true, _) => 180,
            (false, a) if a >= 65 => 365,
            (false, a) if a >= 18 => 800,
            _ => 1_500,
        };
        let baselines: Vec<f64> = PANEL.iter().map(|a| baseline(&mut rng, a, p, age)).collect();
        let start = (today - Duration::days(depth.years * 365)).max(p.birth + Duration::days(365));
        let mut when = start + Duration::days(rng.gen_range(0..every_days.max(1)));
        let mut seq = 0u64;
        while when < today {
            // a full panel for chronic and elderly patients, a basic one otherwise
            let picks: Vec<usize> = if chronic || age >= 65 { (0..PANEL.len()).collect() } else { vec![0, 2, 3, 5, 6, 7, 8, 9, 10] };
            let results: Vec<LabResult> = picks
                .into_iter()
                .filter(|&i| !(PANEL[i].loinc == "4548-4" && !p.chronic.contains(&Chronic::Diabetes) && age < 50))
                .map(|i| {
                    let a = &PANEL[i];
                    let (low, high) = (a.range)(p.female);
                    let v = normal(&mut rng, baselines[i], baselines[i] * a.noise).max(0.01);
                    LabResult {
                        loinc: a.loinc,
                        name: a.name,
                        value: v,
                        decimals: a.decimals,
                        unit: a.unit,
                        low,
                        high,
                        specimen: a.specimen,
                    }
                })
                .collect();
            let stamp = cda::ts(when, 11, 30);
            seq += 1;
            let id = cda::document_id(code, p.cf.as_str(), &stamp, seq);
            let order = nre(&mut rng);
            out.push(Doc {
                id: id.clone(),
                patient: p.id.clone(),
                producer: asst.id.clone(),
                date: when,
                kind: "lab",
                xml: cda::lab_report(&id, p, &author, when, &results, Some(&order)),
            });
            let jitter = rng.gen_range(-(every_days / 5)..=(every_days / 5));
            when += Duration::days(every_days + jitter);
        }
    }
    out.sort_by_key(|d| d.date);
    out
}
