#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The synthetic region: valid codici fiscali that match their people, documents that pass
//! the national validation, the same region for the same seed.

use fascicolo_domain::CodiceFiscale;
use fascicolo_seed::clinical::{documents, Depth};
use fascicolo_seed::people::{Config, Generator};
use std::collections::HashSet;
use time::macros::date;

const TODAY: time::Date = date!(2026 - 11 - 26);

fn households(seed: u64, citizens: u64) -> Vec<fascicolo_seed::people::Household> {
    Generator::new(Config::new(seed, citizens, TODAY)).collect()
}

#[test]
fn every_codice_fiscale_is_valid_and_matches_its_person() {
    let hs = households(11, 3_000);
    let people: Vec<_> = hs.iter().flat_map(|h| &h.members).collect();
    assert_eq!(people.len(), 3_000);
    let mut seen = HashSet::new();
    let mut omocodes = 0;
    for p in &people {
        let cf = CodiceFiscale::parse(p.cf.as_str()).unwrap_or_else(|e| panic!("{}: {e}", p.cf));
        assert!(seen.insert(cf.as_str().to_string()), "duplicate {}", p.cf);
        let canonical = cf.canonical();
        if canonical != cf {
            omocodes += 1;
        }
        // the code is the one computed from the person's data (up to omocodia)
        let expected = CodiceFiscale::compute(p.surname, p.given, p.birth, p.female, p.birth_place.code).unwrap();
        assert_eq!(canonical, expected, "{} {} {}", p.given, p.surname, p.birth);
        assert_eq!(cf.birth_date(TODAY), Some(p.birth));
        assert_eq!(cf.is_female(), p.female);
        assert_eq!(cf.birth_place(), p.birth_place.code);
        // the birth place existed on the birth date
        assert!(p.birth_place.valid_on(p.birth), "{} did not exist on {}", p.birth_place.name, p.birth);
        assert_eq!(p.health_card.len(), 20);
        assert!(p.health_card.bytes().all(|b| b.is_ascii_digit()));
    }
    assert!(omocodes > 0, "no omocodia among 3,000 citizens");
    // children live with their parents, who are older
    for h in &hs {
        for c in &h.members {
            for (i, _) in &c.parents {
                assert!(h.members[*i].birth < c.birth);
            }
        }
    }
}

#[test]
fn doctors_stay_under_their_ceilings_and_children_have_pediatricians() {
    let mut g = Generator::new(Config::new(5, 20_000, TODAY));
    let mut lists = std::collections::HashMap::<String, u32>::new();
    let mut doctors = std::collections::HashMap::new();
    for h in g.by_ref() {
        for d in h.new_doctors {
            doctors.insert(d.id.clone(), d);
        }
        for p in &h.members {
            let d = p.doctor.clone().expect("everyone has a doctor");
            *lists.entry(d.clone()).or_default() += 1;
            let role = doctors[&d].role;
            assert_eq!(role == "pediatrician", p.age(TODAY) < 14, "{} aged {}", d, p.age(TODAY));
        }
    }
    for (d, n) in &lists {
        let ceiling = if doctors[d].role == "gp" { 1_500 } else { 880 };
        assert!(*n <= ceiling, "{d} has {n}");
    }
    assert!(doctors.values().filter(|d| d.role == "gp").count() >= 12);
}

#[test]
fn the_same_seed_gives_the_same_region() {
    let a = households(3, 500);
    let b = households(3, 500);
    let c = households(4, 500);
    let codes =
        |hs: &[fascicolo_seed::people::Household]| hs.iter().flat_map(|h| h.members.iter().map(|p| p.cf.to_string())).collect::<Vec<_>>();
    assert_eq!(codes(&a), codes(&b));
    assert_ne!(codes(&a), codes(&c));
    let g = Generator::new(Config::new(3, 500, TODAY));
    let docs = |hs: &[fascicolo_seed::people::Household]| {
        hs.iter().flat_map(|h| documents(3, g.layout(), TODAY, Depth::default(), h)).map(|d| d.xml).collect::<Vec<_>>()
    };
    assert_eq!(docs(&a[..20]), docs(&b[..20]));
}

#[test]
fn every_generated_document_passes_the_national_validation() {
    let g = Generator::new(Config::new(9, 300, TODAY));
    let layout = g.layout().clone();
    let mut validator = fascicolo_cda::Validator::new();
    let mut n = 0;
    let mut out_of_range = 0;
    let mut kinds = std::collections::BTreeMap::new();
    for h in g {
        // the protected documents (art. 6, hidden reports) too
        for d in documents(9, &layout, TODAY, Depth { protected: true, ..Depth::default() }, &h) {
            let report = validator.validate(d.xml.as_bytes());
            let errors: Vec<_> = report.problems.iter().filter(|p| p.severity == fascicolo_cda::Severity::Error).collect();
            assert!(errors.is_empty(), "{} {}: {:#?}", d.kind, d.id, errors.iter().map(|e| &e.message).collect::<Vec<_>>());
            *kinds.entry(d.kind).or_insert(0) += 1;
            out_of_range +=
                d.xml.matches(r#"interpretationCode code="H""#).count() + d.xml.matches(r#"interpretationCode code="L""#).count();
            n += 1;
        }
    }
    assert!(n > 300, "only {n} documents");
    assert!(out_of_range > 0);
    for (kind, least) in [
        ("lab", 100),
        ("vaccination", 100),
        ("specialist", 10),
        ("radiology", 5),
        ("discharge", 1),
        ("emergency", 1),
        ("prescription", 100),
    ] {
        assert!(kinds.get(kind).copied().unwrap_or(0) >= least, "{kinds:?}");
    }
}

/// Planned care happens on working days: no visit, exam, blood draw, vaccination or GP
/// prescription on a Sunday, a public holiday (Christmas, Easter Monday, ...) or the town's
/// patron day; emergencies and hospital discharges happen any day. One instant per document:
/// its times carry the offset Rome's clocks had that day.
#[test]
fn planned_care_falls_on_working_days_and_times_carry_romes_offset() {
    let g = Generator::new(Config::new(5, 400, TODAY));
    let layout = g.layout().clone();
    let (mut planned, mut summer) = (0, 0);
    for h in g {
        for d in documents(5, &layout, TODAY, Depth { protected: true, ..Depth::default() }, &h) {
            let person = h.members.iter().find(|m| m.id == d.patient).unwrap();
            if matches!(d.kind, "lab" | "vaccination" | "specialist" | "radiology" | "prescription") {
                assert!(
                    fascicolo_domain::calendar::is_working_day(d.date, person.town.istat),
                    "{} {} on {} ({})",
                    d.kind,
                    d.id,
                    d.date,
                    d.date.weekday()
                );
                planned += 1;
            }
            // every time in the document: the wall-clock time with the offset Rome had then
            for ts in d.xml.split("value=\"").skip(1).filter_map(|v| v.split('"').next()).filter(|v| v.len() == 19) {
                let (Ok(date), Ok(h), Ok(m)) = (
                    time::Date::parse(&ts[..8], &time::macros::format_description!("[year][month][day]")),
                    ts[8..10].parse::<u8>(),
                    ts[10..12].parse::<u8>(),
                ) else {
                    continue;
                };
                let expected = fascicolo_domain::rome::at(date, h, m).unwrap().offset().whole_hours();
                assert_eq!(&ts[14..], if expected == 2 { "+0200" } else { "+0100" }, "{} {ts}", d.id);
                summer += usize::from(expected == 2);
            }
        }
    }
    assert!(planned > 500 && summer > 100, "{planned} planned, {summer} in summer time");
}
