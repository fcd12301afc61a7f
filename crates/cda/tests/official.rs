//! The 9 official FSE 2.0 examples through the whole validation.
#![allow(clippy::unwrap_used)]

use fascicolo_cda::{Severity, Validator};

fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}.xml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

const VALID: &[&str] = &["LAB", "LDO", "RAD", "RAP", "RSA", "PSS", "CERT_VACC", "SING_VACC"];

#[test]
fn eight_official_examples_are_valid() {
    let mut v = Validator::new();
    for name in VALID {
        let report = v.validate(&example(name));
        let errors: Vec<_> = report.problems.iter().filter(|p| p.severity == Severity::Error).collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        assert!(report.doc_type.is_some(), "{name}");
    }
}

#[test]
fn vps_breaks_exactly_errore_46a_and_56() {
    let mut v = Validator::new();
    let report = v.validate(&example("VPS"));
    let mut ids: Vec<&str> = report.problems.iter().filter(|p| p.severity == Severity::Error).map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["ERRORE-46a", "ERRORE-56"], "{:#?}", report.problems);
    assert!(report.problems.iter().all(|p| p.location.as_deref().is_some_and(|l| l.starts_with("/ClinicalDocument[1]"))));
}

#[test]
fn every_national_schematron_compiles() {
    let mut v = Validator::new();
    v.warm_up().unwrap();
}
