#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `fascicolo seed`: the synthetic region goes in through the real pipeline (registry
//! transactions, every document published and validated by the producer path), is searchable,
//! and a second run resumes instead of duplicating.

mod common;

use common::*;
use fascicolo_app::gate::ProRole;
use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_load::seed::{publish, put_all, run, SeedArgs};
use fascicolo_seed::clinical::{documents, Depth};
use fascicolo_seed::people::{Config, Generator};
use fascicolo_store::SearchPlan;

fn args(citizens: u64) -> SeedArgs {
    SeedArgs { citizens, seed: 42, years: 3, no_documents: false, batch: 10, jobs: 2 }
}

async fn count(fhir: &FhirService, t: &str) -> u64 {
    let q = [("_summary".to_string(), "count".to_string())];
    fhir.search(&platform_actor(), Some(t), &q, "http://x").await.unwrap().total.unwrap()
}

struct Setup {
    store: std::sync::Arc<dyn fascicolo_store::Store>,
    cfg: fascicolo_server::config::Config,
    fhir: FhirService,
    ingest: fascicolo_app::ingest::Ingest,
}

/// A fresh store with its configuration and the FHIR and publication services over it
/// (originals in a temporary folder).
async fn setup() -> Setup {
    let store = fresh_store().await;
    let cfg = fascicolo_server::config::Config {
        data_dir: std::env::temp_dir().join(format!("fascicolo-seed-{}", uuid::Uuid::now_v7())),
        ..Default::default()
    };
    let fhir = fascicolo_server::fhir_service(&cfg, std::sync::Arc::clone(&store));
    let ingest = fascicolo_server::ingest_service(&cfg, fhir.clone(), "http://localhost").unwrap();
    Setup { store, cfg, fhir, ingest }
}

async fn services() -> (FhirService, fascicolo_app::ingest::Ingest) {
    let s = setup().await;
    (s.fhir, s.ingest)
}

#[tokio::test]
async fn the_region_is_loaded_through_the_producer_path_and_resumes() {
    let Setup { store, fhir, ingest, .. } = setup().await;
    let s = run(&fhir, &ingest, &args(40), false).await.unwrap();
    assert_eq!(s.citizens, 40);
    assert_eq!(count(&fhir, "Patient").await, 40);
    assert!(s.documents > 20, "{s:?}");
    // every document was published (a DocumentReference, an AuditEvent of the publication
    // each) and its results are Observations with LOINC codes
    assert_eq!(count(&fhir, "DocumentReference").await, s.documents);
    let kind = |k: &str| s.kinds.get(k).copied().unwrap_or(0);
    assert_eq!(s.kinds.values().sum::<u64>(), s.documents);
    let reports = count(&fhir, "DiagnosticReport").await;
    assert!(reports >= kind("lab") && kind("lab") > 10, "{reports} reports, {:?}", s.kinds);
    assert_eq!(count(&fhir, "Immunization").await, kind("vaccination"), "one Immunization per vaccination record");
    assert!(kind("vaccination") > 10 && kind("specialist") > 0, "{:?}", s.kinds);
    assert!(count(&fhir, "Composition").await == s.documents);
    assert!(count(&fhir, "MedicationRequest").await >= kind("prescription") && kind("prescription") > 0, "{:?}", s.kinds);
    assert!(count(&fhir, "Observation").await >= 9 * kind("lab"));
    assert_eq!(count(&fhir, "Organization").await as usize, 1 + 8 + 26 + 183 + 26 * 8 + 12);
    // every prescription carries its NRE (the document's id) as the group identifier
    let prescriptions =
        store.search(&SearchPlan { resource_type: Some("MedicationRequest".into()), limit: 1000, ..Default::default() }).await.unwrap();
    assert!(!prescriptions.is_empty());
    for hit in prescriptions {
        let mr: serde_json::Value = serde_json::from_str(&hit.stored.json).unwrap();
        let nre = mr["groupIdentifier"]["value"].as_str().unwrap_or_default();
        assert_eq!(mr["groupIdentifier"]["system"], "urn:oid:2.16.840.1.113883.2.9.4.3.9");
        assert!(nre.len() == 15 && nre.starts_with("030"), "{mr}");
    }
    let pairs = [("code".to_string(), "http://loinc.org|2345-7".to_string()), ("_summary".to_string(), "count".to_string())];
    let glucose = fhir.search(&platform_actor(), Some("Observation"), &pairs, "http://x").await.unwrap();
    assert_eq!(glucose.total, Some(kind("lab")), "every lab report measures glucose");
    // the same run again resumes after the last batch: nothing is added
    let again = run(&fhir, &ingest, &args(40), false).await.unwrap();
    assert_eq!((again.citizens, again.documents, again.resources), (0, 0, 0));
    assert!(again.skipped_households > 0);
    assert_eq!(count(&fhir, "Patient").await, 40);
    assert_eq!(count(&fhir, "DocumentReference").await, s.documents);
}

#[tokio::test]
async fn an_er_report_goes_in_as_an_emergency_encounter_with_its_triage() {
    let (fhir, ingest) = services().await;
    let today = fascicolo_seed::today();
    let generator = Generator::new(Config::new(42, 3000, today));
    let layout = generator.layout().clone();
    // the first household of the region with an emergency-room visit of a patient who has a
    // family doctor and has consented to consultation (for the hiding check below)
    let (h, er) = generator
        .into_iter()
        .find_map(|h| {
            let er = documents(42, &layout, today, Depth::default(), &h)
                .into_iter()
                .find(|d| d.kind == "emergency" && h.members.iter().any(|p| p.id == d.patient && p.consent && p.doctor.is_some()))?;
            Some((h, er))
        })
        .expect("an ER visit in the region");
    let person = h.members.iter().find(|p| p.id == er.patient).unwrap();
    put_all(&fhir, fascicolo_seed::registry::resources(&h, layout.assts[h.asst].ats, today)).await.unwrap();
    assert_eq!(publish(&ingest, vec![er.clone()], 1).await.unwrap(), 1);
    let search = |t: &'static str, k: &'static str, v: &'static str| {
        let fhir = fhir.clone();
        async move {
            let pairs = [(k.to_string(), v.to_string())];
            let found = fhir.search(&platform_actor(), Some(t), &pairs, "http://x").await.unwrap();
            found.entries.into_iter().map(|(_, json, _)| serde_json::from_str::<serde_json::Value>(&json).unwrap()).collect::<Vec<_>>()
        }
    };
    let encounters = search("Encounter", "class", "EMER").await;
    assert_eq!(encounters.len(), 1, "{encounters:?}");
    assert_eq!(encounters[0]["subject"]["reference"], format!("Patient/{}", er.patient));
    let (start, end) = (encounters[0]["period"]["start"].as_str().unwrap(), encounters[0]["period"]["end"].as_str().unwrap());
    assert!(start < end, "arrival {start} before discharge {end}");
    // the coded triage (2019 guidelines), main problem and outcome of the national value sets
    let enc = &encounters[0];
    let triage = enc["priority"]["coding"][0]["code"].as_str().unwrap();
    assert!(["2", "3", "4"].contains(&triage), "{enc}");
    assert_eq!(enc["priority"]["coding"][0]["system"], "urn:oid:2.16.840.1.113883.2.9.6.1.54.4");
    assert_eq!(enc["reasonCode"][0]["coding"][0]["code"], "15");
    assert_eq!(enc["hospitalization"]["dischargeDisposition"]["coding"][0]["display"], "Dimissione a domicilio");
    let docs = search("DocumentReference", "type", "http://loinc.org|59258-4").await;
    assert_eq!(docs.len(), 1);
    // the triage and the outcome reach the Composition's sections
    let compositions = search("Composition", "type", "http://loinc.org|59258-4").await;
    let text = compositions[0].to_string();
    assert!(text.contains("Triage") && text.contains("dimissione a domicilio") && text.contains("401.9"), "{text}");

    // hidden by the citizen (P99), the visit leaves the family doctor's view everywhere: the
    // Encounter with its triage and reason, in search, count, read and $everything
    let gp = Actor::new(Who::Professional { practitioner: person.doctor.clone().unwrap(), organization: None, role: ProRole::Gp });
    let own = Actor::new(Who::Citizen { cf: person.cf.clone(), patient: Some(person.id.clone()) });
    let enc_id = enc["id"].as_str().unwrap().to_string();
    let visible = |a: Actor| {
        let (fhir, enc_id, patient) = (fhir.clone(), enc_id.clone(), person.id.clone());
        async move {
            let pairs = |extra: &[(&str, &str)]| {
                let mut v = vec![("patient".to_string(), format!("Patient/{patient}"))];
                v.extend(extra.iter().map(|(k, x)| (k.to_string(), x.to_string())));
                v
            };
            let found = fhir.search(&a, Some("Encounter"), &pairs(&[("class", "EMER")]), "http://x").await.unwrap();
            let count = fhir.search(&a, Some("Encounter"), &pairs(&[("_summary", "count")]), "http://x").await.unwrap().total;
            let read = fhir.read(&a, "Encounter", &enc_id).await.is_ok();
            let everything = fhir.everything(&a, &patient, &[], "http://x").await.unwrap();
            let in_everything = everything.entries.iter().filter(|e| e.1.contains(&enc_id)).count();
            (found.entries.len(), count, read, in_everything)
        }
    };
    // (in $everything the visit is the Encounter and the documents that point at it)
    let before = visible(gp.clone()).await;
    assert!(before.0 == 1 && before.1 == Some(1) && before.2 && before.3 >= 2, "before hiding, her doctor sees the visit: {before:?}");
    let docref = docs[0]["id"].as_str().unwrap();
    fhir.hide(&own, "DocumentReference", docref, "P99").await.unwrap();
    assert_eq!(visible(gp).await, (0, Some(0), false, 0), "a hidden ER report leaks through its Encounter");
    // (her $everything also holds the access log, whose entries name the visit the GP read)
    let hers = visible(own).await;
    assert!(hers.0 == 1 && hers.1 == Some(1) && hers.2 && hers.3 >= before.3, "she still sees her own visit: {hers:?}");
}

#[tokio::test]
async fn a_registry_only_run_does_not_stand_in_for_the_documents() {
    let (fhir, ingest) = services().await;
    let registry = run(&fhir, &ingest, &SeedArgs { no_documents: true, ..args(12) }, false).await.unwrap();
    assert_eq!((registry.citizens, registry.documents), (12, 0));
    assert_eq!(count(&fhir, "DocumentReference").await, 0);
    // the same region with documents: the registry is written again (same ids, nothing
    // duplicated) and every document is published
    let full = run(&fhir, &ingest, &args(12), false).await.unwrap();
    assert_eq!(full.citizens, 12);
    assert!(full.documents > 0);
    assert_eq!(count(&fhir, "Patient").await, 12);
    assert_eq!(count(&fhir, "DocumentReference").await, full.documents);
}

/// The README's flow: `fascicolo seed --seed 7` and then `fascicolo serve` (demo mode) on the same
/// data folder. The demo lives in that region instead of seeding a second one over it, its
/// personas' prescription numbers stay clear of the region's, and a second start has nothing to do.
#[tokio::test]
async fn the_demo_starts_on_a_data_folder_seeded_before() {
    let Setup { store, cfg, fhir, ingest } = setup().await;
    let region = SeedArgs { citizens: 30, seed: 7, ..args(30) };
    let s = run(&fhir, &ingest, &region, false).await.unwrap();
    let first = store.read("Patient", "pz-0-0").await.unwrap().unwrap();
    let documents = count(&fhir, "DocumentReference").await;
    assert_eq!(documents, s.documents);

    assert!(fascicolo_server::seed_demo(&cfg, std::sync::Arc::clone(&store)).await.unwrap(), "the demo starts");
    // the region's first citizen is still the one `fascicolo seed` made (one version)
    let after = store.read("Patient", "pz-0-0").await.unwrap().unwrap();
    assert_eq!((after.version, after.json), (first.version, first.json));
    // 30 citizens, 4 personas, the 3 patients of the official examples
    assert_eq!(count(&fhir, "Patient").await, 30 + 4 + 3);
    let giulia = fhir
        .search(&platform_actor(), Some("DocumentReference"), &[("patient".into(), "Patient/rossi-giulia".into())], "http://x")
        .await
        .unwrap();
    assert!(giulia.entries.len() > 10, "the personas have their histories: {}", giulia.entries.len());
    // every prescription number names one patient
    let prescriptions =
        store.search(&SearchPlan { resource_type: Some("MedicationRequest".into()), limit: 10_000, ..Default::default() }).await.unwrap();
    let mut owner = std::collections::HashMap::new();
    for hit in prescriptions {
        let mr: serde_json::Value = serde_json::from_str(&hit.stored.json).unwrap();
        let nre = mr["groupIdentifier"]["value"].as_str().unwrap().to_string();
        let subject = mr["subject"]["reference"].as_str().unwrap().to_string();
        assert_eq!(owner.entry(nre.clone()).or_insert_with(|| subject.clone()), &subject, "NRE {nre}");
    }
    assert!(owner.len() > 5);
    // the next start has nothing left to do
    let total = count(&fhir, "DocumentReference").await;
    assert!(!fascicolo_server::seed_demo(&cfg, std::sync::Arc::clone(&store)).await.unwrap());
    assert_eq!(count(&fhir, "DocumentReference").await, total);
    // a region with other parameters is refused before anything is written, saying which one is there
    let err = run(&fhir, &ingest, &SeedArgs { seed: 1, ..region.clone() }, false).await.unwrap_err().to_string();
    assert!(err.contains("seed 7 with 30 citizens"), "{err}");
    assert_eq!(count(&fhir, "Patient").await, 30 + 4 + 3);
    // the same parameters again: resumes, nothing new
    let again = run(&fhir, &ingest, &region, false).await.unwrap();
    assert_eq!((again.citizens, again.documents), (0, 0));
}

/// Every resource of a type in a store, without what the store stamps (`meta`), by id.
async fn contents(fhir: &FhirService, t: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let q = [("_count".to_string(), "1000".to_string())];
    let page = fhir.search(&platform_actor(), Some(t), &q, "http://x").await.unwrap();
    page.entries
        .iter()
        .map(|(_, text, _)| {
            let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
            v.as_object_mut().unwrap().remove("meta");
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// `fascicolo seed --no-documents --ndjson DIR` then `fascicolo import DIR` gives the registry
/// that seeding loads: the same resources of every type with the same content. Histories are
/// not written (asked for, it is an error), and a folder that holds a region already is refused.
#[tokio::test]
async fn the_registry_written_as_ndjson_imports_to_what_seeding_loads() {
    let registry = SeedArgs { no_documents: true, ..args(12) };
    let dir = std::env::temp_dir().join(format!("fascicolo-seed-ndjson-{}", uuid::Uuid::now_v7()));
    let written = fascicolo_load::seed::write_ndjson(&registry, &dir).unwrap();
    assert_eq!((written.citizens, written.documents), (12, 0));
    let again = fascicolo_load::seed::write_ndjson(&registry, &dir).unwrap_err().to_string();
    assert!(again.contains("already holds NDJSON files"), "{again}");
    let other = dir.with_extension("docs");
    let docs = fascicolo_load::seed::write_ndjson(&args(12), &other).unwrap_err().to_string();
    assert!(docs.contains("--no-documents"), "{docs}");
    let mut types: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().split('.').next().unwrap().to_string()).collect();
    types.sort();
    types.dedup();
    assert!(types.iter().any(|t| t == "Patient") && types.iter().any(|t| t == "Practitioner"), "{types:?}");
    let imported = setup().await.fhir;
    let s = fascicolo_load::import::run(imported.clone(), std::slice::from_ref(&dir), 2, false).await.unwrap();
    assert_eq!((s.resources as u64, s.errors), (written.resources, 0), "{s}");
    let (seeded, ingest) = services().await;
    let loaded = run(&seeded, &ingest, &registry, false).await.unwrap();
    assert_eq!(loaded.resources, written.resources);
    for t in &types {
        let (a, b) = (contents(&imported, t).await, contents(&seeded, t).await);
        assert!(!a.is_empty(), "{t}");
        assert_eq!(a, b, "{t}: the imported resources are the seeded ones");
    }
    let _ = std::fs::remove_dir_all(dir);
}
