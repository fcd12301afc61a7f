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
    /// The art. 6 category the producer declares at publication (DPCM 178/2015: HIV, …).
    pub art6: Option<&'static str>,
    /// The hiding the citizen asked for at the point of care (P99 from clinicians, P97 from
    /// parents), declared at publication.
    pub hiding: Option<&'static str>,
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
    /// Also the documents a citizen protects (an art. 6 test, a report hidden from clinicians,
    /// a minor's report hidden from parents): the demo's personas have each of them.
    pub protected: bool,
}

impl Default for Depth {
    fn default() -> Self {
        Self { years: 5, protected: false }
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

/// Vaccines of the national calendar, by key (`data/vaccines.tsv`).
static VACCINES: std::sync::LazyLock<Vec<(&'static str, cda::Vaccine)>> = std::sync::LazyLock::new(|| {
    crate::data::rows(include_str!("../data/vaccines.tsv"))
        .filter_map(|r| match r[..] {
            [key, atc, atc_name, aic, product, icd9, disease] => {
                Some((key, cda::Vaccine { atc, atc_name, aic, product, disease: (icd9, disease) }))
            }
            _ => None,
        })
        .collect()
});

fn vaccine(key: &str) -> Option<&'static cda::Vaccine> {
    VACCINES.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Drugs by key, with whether they are for a chronic condition (`data/drugs.tsv`).
static DRUGS: std::sync::LazyLock<Vec<(&'static str, bool, cda::Drug)>> = std::sync::LazyLock::new(|| {
    crate::data::rows(include_str!("../data/drugs.tsv"))
        .filter_map(|r| match r[..] {
            [key, usage, aic, atc, name, packs, icd9, diagnosis, ingredient] => Some((
                key,
                usage == "chronic",
                cda::Drug { aic, atc, ingredient, name, packs: packs.parse().ok()?, diagnosis: (icd9, diagnosis) },
            )),
            _ => None,
        })
        .collect()
});

fn drug(key: &str) -> Option<cda::Drug> {
    DRUGS.iter().find(|(k, _, _)| *k == key).map(|(_, _, d)| d.clone())
}

/// The vaccinations of a person by the national calendar (PNPV 2023–2025, simplified): dates,
/// vaccine, dose number.
fn vaccinations(rng: &mut impl Rng, p: &Person, today: Date) -> Vec<(Date, &'static cda::Vaccine, u32)> {
    let months = |m: i64| p.birth + Duration::days(m * 30 + m / 2);
    let years = |y: i64| p.birth + Duration::days(y * 365 + y / 4);
    let calendar = [
        (months(3), "hexavalent", 1),
        (months(5), "hexavalent", 2),
        (months(11), "hexavalent", 3),
        (months(3), "pneumococcal", 1),
        (months(5), "pneumococcal", 2),
        (months(11), "pneumococcal", 3),
        (months(13), "mmrv", 1),
        (years(6), "mmrv", 2),
        (years(6), "dtap-ipv", 1),
        (years(14), "dtap-ipv", 2),
        (years(12), "menacwy", 1),
        (years(11), "hpv", 1),
        (years(11) + Duration::days(180), "hpv", 2),
    ];
    let mut out: Vec<(Date, &'static cda::Vaccine, u32)> =
        calendar.into_iter().filter_map(|(d, key, dose)| Some((d, vaccine(key)?, dose))).collect();
    let age = p.age(today);
    if age >= 65 || !p.chronic.is_empty() {
        // the yearly flu shot, each autumn since 65 (or since the chronic condition)
        let from = if p.chronic.is_empty() { years(65).year() } else { today.year() - 4 };
        for y in from..=today.year() {
            if rng.gen_bool(0.7) {
                if let Ok(d) = Date::from_calendar_date(y, time::Month::October, rng.gen_range(15..31)) {
                    out.extend(vaccine("influenza").map(|v| (d, v, 0)));
                }
            }
        }
    }
    if age >= 65 && rng.gen_bool(0.4) {
        let (first, second) = (years(65) + Duration::days(rng.gen_range(30..400)), years(65) + Duration::days(rng.gen_range(460..600)));
        out.extend(vaccine("zoster").into_iter().flat_map(|v| [(first, v, 1), (second, v, 2)]));
    }
    // a few children miss a dose, nobody is vaccinated in the future; the regional vaccination
    // registry holds the whole history (also from before the FSE), so no dose is cut off
    out.retain(|(d, _, _)| *d < today && *d > p.birth);
    out.retain(|_| rng.gen_bool(0.95));
    // a dose is numbered by the doses of that vaccine actually given before it (a child who
    // missed the first shot has a first dose, later; the flu shots count up year by year)
    out.sort_by_key(|(d, v, _)| (v.aic, *d));
    let mut last: Option<&str> = None;
    let mut n = 0;
    for (_, v, dose) in &mut out {
        n = if last == Some(v.aic) { n + 1 } else { 1 };
        last = Some(v.aic);
        *dose = n;
    }
    out.sort_by_key(|(d, v, _)| (*d, v.aic));
    out
}

/// A specialist visit: specialty, reason, findings, conclusion.
struct Visit {
    specialty: &'static str,
    reason: &'static str,
    findings: &'static [&'static str],
    conclusion: &'static [&'static str],
}

const DIABETOLOGY: Visit = Visit {
    specialty: "Diabetologia",
    reason: "Controllo periodico di diabete mellito tipo 2",
    findings: &[
        "Paziente in buon compenso glicemico, non episodi ipoglicemici riferiti.",
        "Compenso glicemico subottimale; riferita scarsa aderenza alla dieta.",
    ],
    conclusion: &[
        "Si conferma la terapia in atto. Controllo tra 12 mesi con emoglobina glicata.",
        "Si potenzia la terapia ipoglicemizzante. Controllo tra 6 mesi.",
    ],
};
const CARDIOLOGY: Visit = Visit {
    specialty: "Cardiologia",
    reason: "Ipertensione arteriosa: valutazione cardiologica",
    findings: &[
        "PA 135/85 mmHg, FC 68 bpm ritmica. ECG: ritmo sinusale, nei limiti.",
        "PA 150/95 mmHg. ECG: segni di ipertrofia ventricolare sinistra.",
    ],
    conclusion: &[
        "Buon controllo pressorio. Si prosegue la terapia in atto.",
        "Controllo pressorio non ottimale: si modifica la terapia antipertensiva.",
    ],
};
const GASTRO: Visit = Visit {
    specialty: "Gastroenterologia",
    reason: "Celiachia: controllo annuale",
    findings: &["Paziente asintomatico in dieta aglutinata, anticorpi anti-transglutaminasi negativi."],
    conclusion: &["Proseguire la dieta senza glutine. Controllo tra 12 mesi."],
};
const ONCOLOGY: Visit = Visit {
    specialty: "Oncologia",
    reason: "Follow-up oncologico",
    findings: &["Non segni clinici di ripresa di malattia. Marcatori nella norma."],
    conclusion: &["Prosegue il follow-up secondo protocollo. Controllo tra 6 mesi."],
};
const OTHER_VISITS: [Visit; 4] = [
    Visit {
        specialty: "Dermatologia",
        reason: "Controllo dei nevi",
        findings: &["Nevi melanocitici benigni all'esame dermoscopico."],
        conclusion: &["Nessun intervento necessario. Controllo tra 12 mesi."],
    },
    Visit {
        specialty: "Ortopedia",
        reason: "Lombalgia",
        findings: &["Contrattura della muscolatura paravertebrale lombare, Lasègue negativo."],
        conclusion: &["Terapia antinfiammatoria e fisioterapia."],
    },
    Visit {
        specialty: "Oculistica",
        reason: "Calo del visus da vicino",
        findings: &["Presbiopia. Fondo dell'occhio nella norma."],
        conclusion: &["Prescrizione di lenti correttive."],
    },
    Visit {
        specialty: "Otorinolaringoiatria",
        reason: "Ipoacusia",
        findings: &["Tappo di cerume bilaterale, rimosso."],
        conclusion: &["Udito ripristinato. Nessun controllo necessario."],
    },
];

/// A radiology exam: ICD-9-CM procedure, name, findings.
const EXAMS: [(&str, &str, &str, &str); 3] = [
    ("87.37", "Mammografia bilaterale", "Screening mammografico", "Parenchima fibroghiandolare senza lesioni focali sospette. BI-RADS 1."),
    (
        "87.44",
        "Radiografia del torace",
        "Tosse persistente",
        "Non addensamenti parenchimali in atto. Seni costofrenici liberi. Ombra cardiaca nei limiti.",
    ),
    (
        "88.76",
        "Ecografia dell'addome completo",
        "Dolore addominale",
        "Fegato di dimensioni e ecostruttura regolari. Colecisti alitiasica. Reni nei limiti.",
    ),
];

/// Reasons for a hospital stay: ICD-9-CM, name, course.
const STAYS: [(&str, &str, &str); 4] = [
    ("486", "Polmonite, agente non specificato", "Terapia antibiotica endovenosa con progressivo miglioramento clinico e radiologico."),
    (
        "428.0",
        "Insufficienza cardiaca congestizia non specificata",
        "Terapia diuretica endovenosa con risoluzione della congestione; ottimizzata la terapia.",
    ),
    (
        "820.8",
        "Frattura del collo del femore non specificata, chiusa",
        "Intervento di osteosintesi; mobilizzazione precoce con fisioterapia.",
    ),
    ("540.9", "Appendicite acuta senza menzione di peritonite", "Appendicectomia laparoscopica senza complicanze."),
];

/// What comes with a pressure peak, as written in the cause of an emergency visit.
const ER_SYMPTOMS: [&str; 4] = ["cefalea nucale", "vertigini", "epistassi", "cardiopalmo e senso di oppressione toracica"];

fn section(id: &'static str, code: &'static str, display: &'static str, title: &str, text: &str) -> cda::Section {
    cda::Section { id, code, display, title: title.to_string(), text: vec![text.to_string()], extra: String::new() }
}

/// An NRE-like prescription number: region (030), then 12 digits.
fn nre(household: u64, member: usize, seq: u64) -> String {
    // unique by construction: household, member, sequence (12 digits hold 10 million citizens)
    format!("030{:012}", (household * 8 + member as u64) * 10_000 + seq % 10_000)
}

/// The four sections of an outpatient consultation report: question, service (with its coded
/// entry), findings, conclusions.
fn consult_sections(
    date: Date,
    question: &str,
    service: &str,
    findings_title: &str,
    findings: &str,
    conclusion: &str,
) -> [cda::Section; 4] {
    [
        section("QUESITO_DIAGNOSTICO", "29299-5", "Quesito diagnostico", "Quesito diagnostico", question),
        cda::Section {
            extra: cda::act_entry("34108-1", "2.16.840.1.113883.6.1", "LOINC", service, date),
            ..section("PRESTAZIONI", "62387-6", "Prestazioni", "Prestazioni", service)
        },
        section("REFERTO", "47045-0", "Referto", findings_title, findings),
        section("CONCLUSIONI", "55110-1", "Conclusioni", "Conclusioni", conclusion),
    ]
}

/// The documents a citizen protects: for an adult an HIV screening (art. 6, DPCM 178/2015)
/// and a clinical psychology report hidden from clinicians (P99); for a minor a family
/// counselling report hidden from parents (P97).
#[allow(clippy::too_many_arguments)]
fn protected_documents(
    seq: &mut u64,
    code: &str,
    asst: &crate::region::Asst,
    p: &Person,
    today: Date,
    specialist: &Author,
    lab: &Author,
    work: &dyn Fn(Date) -> Date,
    order: &dyn Fn(u64) -> String,
) -> Vec<Doc> {
    let mut out = Vec::new();
    // xml: from the document id and the sequence number (which also numbers its prescription)
    let mut doc = |kind: &'static str, date: Date, hour: u8, xml: &dyn Fn(&str, u64) -> String, art6, hiding| {
        *seq += 1;
        let id = cda::document_id(code, p.cf.as_str(), &cda::ts(date, hour, 0), *seq);
        out.push(Doc { art6, hiding, id: id.clone(), patient: p.id.clone(), producer: asst.id.clone(), date, kind, xml: xml(&id, *seq) });
    };
    let age = p.age(today);
    if (18..=65).contains(&age) {
        let date = work(today - Duration::days(270));
        let hiv = LabResult {
            loinc: "56888-1",
            name: "HIV 1-2 anticorpi e antigene p24 (indice)",
            value: 0.21,
            decimals: 2,
            unit: "{index}",
            low: None,
            high: Some(1.0),
            specimen: SERUM,
        };
        doc("lab", date, 11, &|id, n| cda::lab_report(id, p, lab, date, std::slice::from_ref(&hiv), Some(&order(n))), Some("hiv"), None);
    }
    if age >= 18 {
        let date = work(today - Duration::days(175));
        let list = consult_sections(
            date,
            "Ansia reattiva in periodo di stress lavorativo",
            "Colloquio psicologico clinico",
            "Referto - Psicologia clinica",
            "Sintomi ansiosi reattivi, senza elementi di rilievo psicopatologico.",
            "Si propone un ciclo di quattro colloqui di sostegno.",
        );
        let xml = |id: &str, _| cda::narrative(cda::Narrative::Specialist, id, p, specialist, date, &list, None);
        doc("specialist", date, 12, &xml, None, Some("P99"));
    } else if age >= 6 {
        let date = work(today - Duration::days(215));
        let list = consult_sections(
            date,
            "Colloquio richiesto dal minore al consultorio familiare",
            "Colloquio psicologico al consultorio familiare",
            "Referto - Consultorio familiare",
            "Colloquio di ascolto; nessun elemento di rischio.",
            "Disponibilità a un nuovo colloquio su richiesta.",
        );
        let xml = |id: &str, _| cda::narrative(cda::Narrative::Specialist, id, p, specialist, date, &list, None);
        doc("specialist", date, 15, &xml, None, Some("P97"));
    }
    out
}

/// The documents of one household, oldest first.
pub fn documents(seed: u64, layout: &Layout, today: Date, depth: Depth, h: &Household) -> Vec<Doc> {
    let asst = &layout.assts[h.asst];
    // the ASST's laboratory writes, the ASST is the custodian (and the publishing organisation)
    let code = asst.code;
    let author = lab_author(seed, code, &asst.name, asst.town.name);
    let vaccinator = lab_author(seed ^ 0x5eed, code, &asst.name, asst.town.name);
    let specialist = lab_author(seed ^ 0x5bec, code, &asst.name, asst.town.name);
    let radiologist = lab_author(seed ^ 0xad10, code, &asst.name, asst.town.name);
    let ward = lab_author(seed ^ 0x1d0, code, &asst.name, asst.town.name);
    let emergency_doctor = lab_author(seed ^ 0xe3e7, code, &asst.name, asst.town.name);
    let triage_nurse = lab_author(seed ^ 0x7a1a, code, &asst.name, asst.town.name);
    let mut out = Vec::new();
    for (k, p) in h.members.iter().enumerate() {
        let mut rng = crate::rng(seed, "clinical", h.index * 16 + k as u64);
        let age = p.age(today);
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
        // no blood tests in the first year of life
        let start = (today - Duration::days(depth.years * 365)).max(p.birth + Duration::days(365));
        let mut when = start + Duration::days(rng.gen_range(0..every_days.max(1)));
        let mut seq = 0u64;
        // clinics work on working days (the calendar booking uses): a planned date that falls on
        // a Sunday, a public holiday or the town's patron day moves to the next working day
        let work = |d: Date| fascicolo_domain::calendar::working_day_from(d, p.town.istat);
        for (date, vaccine, dose) in vaccinations(&mut rng, p, today) {
            let date = work(date);
            if date >= today {
                continue;
            }
            let stamp = cda::ts(date, 10, 0);
            seq += 1;
            let id = cda::document_id(code, p.cf.as_str(), &stamp, seq);
            let lot = format!("{}{:05}", &vaccine.atc[5..], rng.gen_range(0..100_000));
            out.push(Doc {
                art6: None,
                hiding: None,
                id: id.clone(),
                patient: p.id.clone(),
                producer: asst.id.clone(),
                date,
                kind: "vaccination",
                xml: cda::vaccination(&id, p, &vaccinator, date, vaccine, dose, &lot),
            });
        }
        // specialist visits: follow-up of chronic conditions, now and then another specialty
        let mut visits: Vec<(Date, &Visit)> = Vec::new();
        let history_start = today - Duration::days(depth.years * 365);
        for c in &p.chronic {
            let (visit, every) = match c {
                Chronic::Diabetes => (&DIABETOLOGY, 365),
                Chronic::Hypertension => (&CARDIOLOGY, 365),
                Chronic::Celiac => (&GASTRO, 365),
                Chronic::Cancer => (&ONCOLOGY, 180),
            };
            let mut d = history_start + Duration::days(rng.gen_range(0..every));
            while d < today {
                visits.push((d, visit));
                d += Duration::days(every + rng.gen_range(-30..30));
            }
        }
        if age >= 14 {
            for y in 0..depth.years {
                if rng.gen_bool(0.15) {
                    let v = &OTHER_VISITS[rng.gen_range(0..OTHER_VISITS.len())];
                    visits.push((history_start + Duration::days(y * 365 + rng.gen_range(0..365)), v));
                }
            }
        }
        for (date, v) in visits.into_iter().map(|(d, v)| (work(d), v)).filter(|(d, _)| *d < today) {
            let stamp = cda::ts(date, 12, 0);
            seq += 1;
            let id = cda::document_id(code, p.cf.as_str(), &stamp, seq);
            let findings = v.findings[rng.gen_range(0..v.findings.len())];
            let conclusion = v.conclusion[rng.gen_range(0..v.conclusion.len())];
            let service = format!("Visita {}", v.specialty.to_lowercase());
            let list = consult_sections(date, v.reason, &service, &format!("Referto - {}", v.specialty), findings, conclusion);
            let order = nre(h.index, k, seq);
            out.push(Doc {
                art6: None,
                hiding: None,
                id: id.clone(),
                patient: p.id.clone(),
                producer: asst.id.clone(),
                date,
                kind: "specialist",
                xml: cda::narrative(cda::Narrative::Specialist, &id, p, &specialist, date, &list, Some(&order)),
            });
        }
        if depth.protected {
            let order = |seq: u64| nre(h.index, k, seq);
            out.extend(protected_documents(&mut seq, code, asst, p, today, &specialist, &author, &work, &order));
        }
        // radiology: screening mammography for women 50–74 every two years, other exams now and then
        let mut exams: Vec<(Date, usize)> = Vec::new();
        if p.female && (50..75).contains(&age) {
            let mut d = history_start + Duration::days(rng.gen_range(0..730));
            while d < today {
                exams.push((d, 0));
                d += Duration::days(730);
            }
        }
        if age >= 18 {
            for y in 0..depth.years {
                if rng.gen_bool(0.08) {
                    exams.push((history_start + Duration::days(y * 365 + rng.gen_range(0..365)), rng.gen_range(1..EXAMS.len())));
                }
            }
        }
        for (date, e) in exams.into_iter().map(|(d, e)| (work(d), e)).filter(|(d, _)| *d < today) {
            let (pcode, name, reason, finding) = EXAMS[e];
            let stamp = cda::ts(date, 12, 0);
            seq += 1;
            let id = cda::document_id(code, p.cf.as_str(), &stamp, seq);
            let mut done = section("ESAME_ESEGUITO", "55111-9", "Descrizioni attuale procedure di imaging", "Esame eseguito", name);
            done.extra = cda::performed_procedure(pcode, name, date);
            let list = [
                section("QUESITO_DIAGNOSTICO", "18785-6", "Motivo per lo studio - Radiologia", "Quesito diagnostico", reason),
                done,
                section("REFERTO", "18782-3", "Rilievo - Radiologia", "Referto", finding),
                section("CONCLUSIONI", "55110-1", "Conclusioni", "Conclusioni", "Quadro nei limiti della norma."),
            ];
            let order = nre(h.index, k, seq);
            out.push(Doc {
                art6: None,
                hiding: None,
                id: id.clone(),
                patient: p.id.clone(),
                producer: asst.id.clone(),
                date,
                kind: "radiology",
                xml: cda::narrative(cda::Narrative::Radiology, &id, p, &radiologist, date, &list, Some(&order)),
            });
        }
        // hospital stays, more frequent with age
        let stay_rate = if age >= 75 {
            0.10
        } else if age >= 18 {
            0.02
        } else {
            0.01
        };
        for y in 0..depth.years {
            if !rng.gen_bool(stay_rate) {
                continue;
            }
            let (dx, dx_name, course) = STAYS[if age >= 65 { rng.gen_range(0..3) } else { rng.gen_range(0..STAYS.len()) }];
            let from = history_start + Duration::days(y * 365 + rng.gen_range(0..350));
            let to = from + Duration::days(rng.gen_range(3..13));
            if to >= today || from <= p.birth {
                continue;
            }
            let stamp = cda::ts(to, 12, 0);
            seq += 1;
            let id = cda::document_id(code, p.cf.as_str(), &stamp, seq);
            let admission = format!("RIC-{}-{seq}", p.id);
            let list = [
                section(
                    "Motivo_del_Ricovero",
                    "46241-6",
                    "Diagnosi di accettazione",
                    "Motivo del ricovero",
                    &format!("{dx_name} (ICD-9-CM {dx})"),
                ),
                section("Decorso_Ospedaliero", "8648-8", "Decorso ospedaliero", "Decorso ospedaliero", course),
                section(
                    "Condizioni_Paziente_Dimissione",
                    "11535-2",
                    "Diagnosi di dimissione",
                    "Diagnosi di dimissione",
                    &format!("{dx_name}. Dimesso in buone condizioni generali al domicilio, con controllo dal medico curante."),
                ),
            ];
            out.push(Doc {
                art6: None,
                hiding: None,
                id: id.clone(),
                patient: p.id.clone(),
                producer: asst.id.clone(),
                date: to,
                kind: "discharge",
                xml: cda::narrative_stay(cda::Narrative::Discharge, &id, p, &ward, to, &list, None, Some((&admission, from, to))),
            });
        }
        // emergency-room visits: hypertensive patients now and then come in with a pressure
        // peak, sent by their specialist, and go home after treatment (the only presentation
        // whose VPS codes a published source explains; see `cda::EmergencyVisit`)
        // (the VPS needs the ISTAT code of an Italian birth place: the tables hold Lombardy's)
        if p.chronic.contains(&Chronic::Hypertension) && cda::birth_istat(p).is_some() {
            for y in 0..depth.years {
                if !rng.gen_bool(0.12) {
                    continue;
                }
                let date = history_start + Duration::days(y * 365 + rng.gen_range(0..365));
                if date >= today {
                    continue;
                }
                let (hour, minute) = (rng.gen_range(7..20u8), rng.gen_range(0..60u8));
                let systolic = rng.gen_range(178..225u32);
                let diastolic = rng.gen_range(98..125u32);
                let triage = cda::Triage(match (systolic, rng.gen_range(0..10u8)) {
                    (s, _) if s >= 210 => 2,
                    (_, r) if r < 6 => 3,
                    _ => 4,
                });
                let symptom = ER_SYMPTOMS[rng.gen_range(0..ER_SYMPTOMS.len())];
                let after = rng.gen_range(150..330u16);
                let visit = cda::EmergencyVisit {
                    arrival: (date, hour, minute),
                    triage_after: rng.gen_range(3..15),
                    discharge_after: after,
                    triage,
                    cause: format!("Riscontro di pressione arteriosa elevata ({systolic}/{diastolic} mmHg) con {symptom}."),
                    vitals: format!(
                        "PA {systolic}/{diastolic} mmHg, FC {} bpm, SpO2 {}%, temperatura 36,{} °C.",
                        rng.gen_range(68..104),
                        rng.gen_range(95..100),
                        rng.gen_range(2..9)
                    ),
                    course: format!(
                        "ECG: ritmo sinusale, non alterazioni acute della ripolarizzazione. Esami ematici nei limiti. \
                         Dopo terapia progressiva riduzione dei valori pressori fino a {}/{} mmHg e regressione della sintomatologia.",
                        rng.gen_range(138..156),
                        rng.gen_range(82..94)
                    ),
                    therapy: "Captopril 25 mg per via sublinguale; osservazione con monitoraggio pressorio.".into(),
                    diagnosis: ("401.9", "Ipertensione essenziale non specificata"),
                    advice:
                        "Proseguire la terapia antipertensiva in atto; controllo dal medico curante entro 7 giorni con diario pressorio."
                            .into(),
                };
                let stamp = cda::ts(date, 12, 0);
                seq += 1;
                let id = cda::document_id(code, p.cf.as_str(), &stamp, seq);
                let access = format!("PS-{}-{seq}", p.id);
                out.push(Doc {
                    art6: None,
                    hiding: None,
                    id: id.clone(),
                    patient: p.id.clone(),
                    producer: asst.id.clone(),
                    date,
                    kind: "emergency",
                    xml: cda::emergency_report(&id, &access, p, &emergency_doctor, &triage_nurse, &visit),
                });
            }
        }
        // prescriptions by the family doctor over the last two years: repeat prescriptions for
        // chronic conditions every three months, now and then an acute one
        if let Some((gp_cf, gp_given, gp_surname)) = &p.doctor_name {
            let gp = Author {
                cf: gp_cf.clone(),
                given: (*gp_given).into(),
                surname: (*gp_surname).into(),
                structure_code: code.into(),
                structure_name: asst.name.clone(),
                city: p.town.name.into(),
            };
            let mut repeat: Vec<cda::Drug> = Vec::new();
            if p.chronic.contains(&Chronic::Diabetes) {
                repeat.extend(["metformin", "atorvastatin"].into_iter().filter_map(drug));
            }
            if p.chronic.contains(&Chronic::Hypertension) {
                repeat.extend(drug(if rng.gen_bool(0.5) { "ramipril" } else { "amlodipine" }));
            }
            let exemption = p.exemptions.first().copied();
            let mut dates: Vec<(Date, Vec<cda::Drug>)> = Vec::new();
            if !repeat.is_empty() {
                let mut d = today - Duration::days(730) + Duration::days(rng.gen_range(0..90));
                while d < today {
                    dates.push((d, repeat.clone()));
                    d += Duration::days(90 + rng.gen_range(-10..10));
                }
            }
            if age >= 3 {
                for _ in 0..2 {
                    if rng.gen_bool(0.3) {
                        let d = today - Duration::days(rng.gen_range(1..730));
                        let acute: Vec<&cda::Drug> = DRUGS.iter().filter(|(_, chronic, _)| !chronic).map(|(_, _, d)| d).collect();
                        if let Some(drug) = acute.get(rng.gen_range(0..acute.len().max(1))) {
                            dates.push((d, vec![(*drug).clone()]));
                        }
                    }
                }
            }
            for (date, drugs) in dates.into_iter().map(|(d, x): (Date, Vec<cda::Drug>)| (work(d), x)).filter(|(d, _)| *d < today) {
                seq += 1;
                let number = nre(h.index, k, seq);
                out.push(Doc {
                    art6: None,
                    hiding: None,
                    id: number.clone(),
                    patient: p.id.clone(),
                    producer: asst.id.clone(),
                    date,
                    kind: "prescription",
                    xml: cda::drug_prescription(&number, p, &gp, date, &drugs, exemption),
                });
            }
        }
        while work(when) < today {
            let day = work(when);
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
            let stamp = cda::ts(day, 11, 30);
            seq += 1;
            let id = cda::document_id(code, p.cf.as_str(), &stamp, seq);
            let order = nre(h.index, k, seq);
            out.push(Doc {
                art6: None,
                hiding: None,
                id: id.clone(),
                patient: p.id.clone(),
                producer: asst.id.clone(),
                date: day,
                kind: "lab",
                xml: cda::lab_report(&id, p, &author, day, &results, Some(&order)),
            });
            let jitter = rng.gen_range(-(every_days / 5)..=(every_days / 5));
            when += Duration::days(every_days + jitter);
        }
    }
    out.sort_by_key(|d| d.date);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_tables_load_with_every_key_the_generator_uses() {
        for key in ["hexavalent", "pneumococcal", "mmrv", "dtap-ipv", "menacwy", "hpv", "influenza", "zoster"] {
            let v = vaccine(key).unwrap_or_else(|| panic!("vaccine {key}"));
            assert!(v.atc.starts_with("J07") && v.aic.len() == 9, "{key}: {v:?}");
        }
        for key in ["metformin", "atorvastatin", "ramipril", "amlodipine"] {
            let d = drug(key).unwrap_or_else(|| panic!("drug {key}"));
            assert!(d.aic.len() == 9 && d.packs == 2, "{key}: {d:?}");
        }
        assert_eq!(DRUGS.iter().filter(|(_, chronic, _)| !chronic).count(), 3, "three acute drugs");
        assert_eq!(vaccine("hexavalent").map(|v| v.disease), Some(("033.9", "Pertosse, non specificata")));
        assert!(vaccine("nonexistent").is_none());
    }
}
