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

/// A document gets a bounded time: past it the check stops with a clear refusal, instead of
/// holding a validator thread (here a budget no document can meet).
#[test]
fn the_schematron_stops_at_its_budget() {
    let mut v = Validator::with_budget(std::time::Duration::ZERO);
    let report = v.validate(&example("LDO"));
    let costly: Vec<_> = report.problems.iter().filter(|p| p.id == "too-costly").collect();
    assert_eq!(costly.len(), 1, "{:#?}", report.problems);
    assert_eq!(costly[0].severity, Severity::Error);
    assert!(costly[0].message.contains("0 s"), "{}", costly[0].message);
    // with the default budget the same document is valid
    assert!(Validator::new().validate(&example("LDO")).problems.iter().all(|p| p.severity != Severity::Error));
}

#[test]
fn every_national_schematron_compiles() {
    let mut v = Validator::new();
    v.warm_up().unwrap();
}

fn mapped(name: &str) -> (fascicolo_cda::mapping::Header, Vec<serde_json::Value>) {
    use fascicolo_cda::mapping::{header, map, Context};
    let bytes = example(name);
    let text = fascicolo_cda::validate::parse(&bytes).unwrap();
    let doc = fascicolo_cda::validate::tree(&text).unwrap();
    let h = header(&doc);
    let ctx =
        Context { patient: "p1".into(), producer_org: Some("org1".into()), class: "REF".into(), sha256: "ab".into(), ..Context::default() };
    let m = map(&doc, &h, &ctx);
    assert_eq!(m.resources[0]["resourceType"], "DocumentReference");
    assert_eq!(m.resources[0]["id"], m.document_reference_id.as_str());
    (h, m.resources)
}

#[test]
fn the_lab_report_maps_to_a_diagnostic_report_with_charted_results() {
    let (h, rs) = mapped("LAB");
    assert_eq!(h.patient_cf.as_deref(), Some("GTWGWY82B42G920M"));
    let obs: Vec<_> = rs.iter().filter(|r| r["resourceType"] == "Observation").collect();
    let albumin = obs.iter().find(|o| o["code"]["coding"][0]["code"] == "14957-5").expect("the microalbumin result");
    assert_eq!(albumin["valueQuantity"]["value"], 16.0);
    assert_eq!(albumin["valueQuantity"]["unit"], "mg/L");
    assert_eq!(albumin["referenceRange"][0]["high"]["value"], 20.0);
    assert_eq!(albumin["interpretation"][0]["coding"][0]["code"], "N");
    assert_eq!(albumin["effectiveDateTime"], "2022-03-30T11:24:26+01:00");
    let dr = rs.iter().find(|r| r["resourceType"] == "DiagnosticReport").unwrap();
    assert!(dr["result"].as_array().unwrap().iter().any(|r| r["reference"] == format!("Observation/{}", albumin["id"].as_str().unwrap())));
    // every resource belongs to the document's family
    let family = format!("DocumentReference/{}", rs[0]["id"].as_str().unwrap());
    assert!(rs.iter().all(|r| r["meta"]["tag"][0]["code"] == family.as_str()));
    // mapping twice gives the same ids (idempotent publication)
    let (_, again) = mapped("LAB");
    assert_eq!(rs.iter().map(|r| &r["id"]).collect::<Vec<_>>(), again.iter().map(|r| &r["id"]).collect::<Vec<_>>());
}

#[test]
fn vaccinations_discharge_letters_and_er_reports_carry_their_resources() {
    let (_, rs) = mapped("SING_VACC");
    let imm = rs.iter().find(|r| r["resourceType"] == "Immunization").expect("an Immunization");
    assert_eq!(imm["vaccineCode"]["coding"][0]["code"], "035606033");
    assert_eq!(imm["lotNumber"], "20");
    assert_eq!(imm["protocolApplied"][0]["doseNumberPositiveInt"], 3);
    let (_, rs) = mapped("LDO");
    let enc = rs.iter().find(|r| r["resourceType"] == "Encounter").expect("an Encounter");
    assert_eq!(enc["class"]["code"], "IMP");
    assert_eq!(enc["period"]["start"], "2022-03-17T00:00:00+01:00");
    let (_, rs) = mapped("VPS");
    assert_eq!(rs.iter().find(|r| r["resourceType"] == "Encounter").unwrap()["class"]["code"], "EMER");
}

#[test]
fn the_rendering_shows_header_and_narrative_escaped() {
    let bytes = example("LAB");
    let text = fascicolo_cda::validate::parse(&bytes).unwrap();
    let doc = fascicolo_cda::validate::tree(&text).unwrap();
    let html = fascicolo_cda::render::render(&doc);
    assert!(html.contains("<dt>Paziente</dt><dd>Giuseppe Test</dd>"), "{html}");
    assert!(html.contains("<dt>Codice fiscale</dt><dd>GTWGWY82B42G920M</dd>"));
    assert!(html.contains("<section>"));
    let evil = text.replacen("<title> REFERTO DI LABORATORIO</title>", "<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>", 1);
    let doc = fascicolo_cda::validate::tree(&evil).unwrap();
    let html = fascicolo_cda::render::render(&doc);
    assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
}

#[test]
fn mutations_are_caught_with_their_rule_ids() {
    let mut v = Validator::new();
    let lab = String::from_utf8(example("LAB")).unwrap();
    let ids = |v: &mut Validator, xml: &str| -> Vec<String> {
        v.validate(xml.as_bytes()).problems.into_iter().filter(|p| p.severity == Severity::Error).map(|p| p.id).collect()
    };
    let wrong_realm = lab.replacen(r#"<realmCode code="IT"/>"#, r#"<realmCode code="FR"/>"#, 1);
    assert_eq!(ids(&mut v, &wrong_realm), ["ERRORE-2"]);
    let wrong_conf = lab.replacen(r#"<confidentialityCode code="N""#, r#"<confidentialityCode code="X""#, 1);
    let got = ids(&mut v, &wrong_conf);
    assert!(got.contains(&"ERRORE-6".to_string()) && got.contains(&"confidentiality".to_string()), "{got:?}");
    let bad_date = lab.replacen(r#"<effectiveTime value="20220330112426+0100"/>"#, r#"<effectiveTime value="20221345112426+0100"/>"#, 1);
    assert!(ids(&mut v, &bad_date).contains(&"ts".to_string()));
    let unknown_element = lab.replacen("<languageCode", "<colour/><languageCode", 1);
    assert!(ids(&mut v, &unknown_element).contains(&"xsd".to_string()));
    let no_mood = lab.replacen(r#"<observation moodCode="EVN" classCode="OBS">"#, r#"<observation classCode="OBS">"#, 1);
    assert!(ids(&mut v, &no_mood).contains(&"xsd".to_string()));
}
