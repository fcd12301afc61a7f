//! FHIR R4 documents for publication: a `document` Bundle (or a `transaction` Bundle carrying a
//! Composition, as the national FSE 2.0 FHIR examples are) checked and turned into the entries
//! of one transaction: the registry's Patient replaces the Bundle's, every other resource gets
//! an id derived from the document's identity, references are rewritten, and a
//! DocumentReference indexes the whole.

use std::collections::HashMap;

use fascicolo_cda::catalog;
use fascicolo_cda::mapping::{self, Context, SHA256_SYSTEM};
use fascicolo_cda::{Problem, Source};
use fascicolo_domain::privacy::labels;
use serde_json::{json, Value};

const SUBJECT_TYPES: [&str; 15] = [
    "List",
    "Composition",
    "DiagnosticReport",
    "Observation",
    "Encounter",
    "Condition",
    "Procedure",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationAdministration",
    "ServiceRequest",
    "CarePlan",
    "ImagingStudy",
    "Media",
    "ClinicalImpression",
];
const PATIENT_TYPES: [&str; 4] = ["Immunization", "AllergyIntolerance", "BodyStructure", "FamilyMemberHistory"];
/// Registry data a document may carry but does not change: who may act for a patient
/// (RelatedPerson) and coverage come from the registry, never from a producer's document.
const NOT_TAKEN: [&str; 2] = ["RelatedPerson", "Coverage"];
const DROPPED: &str = "#not-taken";
/// The codice fiscale as FHIR names it, and as the national FHIR examples do (its OID).
const CF_SYSTEMS: [&str; 2] = [crate::access::CF_SYSTEM, "urn:oid:2.16.840.1.113883.2.9.4.3.2"];

/// What the checks found in a Bundle.
#[derive(Debug)]
pub struct Checked {
    pub bundle: Value,
    pub problems: Vec<Problem>,
    pub patient_cf: Option<String>,
    /// The Composition's identifier (`system|value`), the document's default identity.
    pub identity: Option<String>,
    pub loinc: Option<String>,
}

fn err(id: &str, message: impl Into<String>, location: Option<String>) -> Problem {
    Problem::error(Source::Fhir, id, message, location)
}

/// Parses and checks a FHIR document Bundle: structure, every resource against R4, a
/// Composition with a LOINC type, a Patient named by codice fiscale.
pub fn check(bytes: &[u8]) -> Checked {
    let mut problems = Vec::new();
    let bundle: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            problems.push(Problem::error(Source::Xml, "not-well-formed", format!("the body is not valid JSON: {e}"), None));
            return Checked { bundle: Value::Null, problems, patient_cf: None, identity: None, loinc: None };
        }
    };
    if bundle["resourceType"] != "Bundle" || !matches!(bundle["type"].as_str(), Some("document" | "transaction")) {
        problems.push(err("bundle", "a FHIR document is a Bundle of type document (or a transaction carrying a Composition)", None));
        return Checked { bundle, problems, patient_cf: None, identity: None, loinc: None };
    }
    for issue in fascicolo_fhir::validate::validate_resource(&bundle) {
        problems.push(err("fhir", issue.message, Some(issue.location)));
    }
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    let compositions: Vec<&Value> = entries.iter().map(|e| &e["resource"]).filter(|r| r["resourceType"] == "Composition").collect();
    if compositions.len() != 1 {
        problems.push(err("composition", format!("a FHIR document has exactly one Composition ({} found)", compositions.len()), None));
    }
    if bundle["type"] == "document" && entries.first().map(|e| &e["resource"]["resourceType"]) != Some(&json!("Composition")) {
        problems.push(err("composition", "in a document Bundle the Composition is the first entry", Some("Bundle.entry[0]".into())));
    }
    let composition = compositions.first().copied().cloned().unwrap_or(Value::Null);
    let loinc = composition["type"]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["system"] == "http://loinc.org")
        .and_then(|c| c["code"].as_str())
        .map(str::to_string);
    if composition.is_object() && loinc.is_none() {
        problems.push(err("type", "Composition.type has no LOINC coding", Some("Composition.type".into())));
    }
    let patients: Vec<&Value> = entries.iter().map(|e| &e["resource"]).filter(|r| r["resourceType"] == "Patient").collect();
    let patient_cf = patients.iter().find_map(|p| {
        p["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["system"].as_str().is_some_and(|s| CF_SYSTEMS.contains(&s)))
            .and_then(|i| i["value"].as_str())
            .map(str::to_string)
    });
    if patient_cf.is_none() {
        problems.push(err("patient", "the Bundle holds no Patient identified by codice fiscale", None));
    }
    let identity = match (composition["identifier"]["system"].as_str(), composition["identifier"]["value"].as_str()) {
        (Some(s), Some(v)) => Some(format!("{s}|{v}")),
        (None, Some(v)) => Some(v.to_string()),
        _ => bundle["identifier"]["value"].as_str().map(str::to_string),
    };
    Checked { bundle, problems, patient_cf, identity, loinc }
}

/// Rewrites every `reference` found in `map` (full URLs and `Type/id` forms alike).
fn rewrite(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "reference" {
                    if let Some(r) = x.as_str().and_then(|r| map.get(r)) {
                        *x = json!(r);
                    }
                } else {
                    rewrite(x, map);
                }
            }
            // a reference to registry data the document does not bring in keeps its display only
            if o.get("reference").and_then(Value::as_str) == Some(DROPPED) {
                o.remove("reference");
                if !o.contains_key("display") {
                    o.insert("display".into(), json!("(dato anagrafico non acquisito dal documento)"));
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, map)),
        _ => {}
    }
}

/// The transaction entries publishing a checked Bundle for registry patient `ctx.patient`, and
/// the DocumentReference id.
pub fn entries(checked: &Checked, ctx: &Context, base: &str) -> (String, Vec<Value>) {
    let identity = ctx.identity.as_str();
    let docref_id = mapping::derived_id(identity, "DocumentReference");
    let patient_ref = format!("Patient/{}", ctx.patient);
    let items = checked.bundle["entry"].as_array().cloned().unwrap_or_default();
    // 1. every resource's new reference
    let mut map = HashMap::new();
    let mut keep = Vec::new();
    for (i, e) in items.iter().enumerate() {
        let r = &e["resource"];
        let rt = r["resourceType"].as_str().unwrap_or_default().to_string();
        let new = match rt.as_str() {
            "Patient" => patient_ref.clone(),
            "DocumentReference" => format!("DocumentReference/{docref_id}"),
            t if NOT_TAKEN.contains(&t) => DROPPED.to_string(),
            _ => format!("{rt}/{}", mapping::derived_id(identity, &format!("{rt}/{i}"))),
        };
        if let Some(full) = e["fullUrl"].as_str() {
            map.insert(full.to_string(), new.clone());
            if let Some((_, tail)) = full.rsplit_once(&format!("/{rt}/")) {
                map.insert(format!("{rt}/{tail}"), new.clone());
            }
        }
        if let Some(id) = r["id"].as_str() {
            map.insert(format!("{rt}/{id}"), new.clone());
        }
        if rt != "Patient" && rt != "DocumentReference" && !NOT_TAKEN.contains(&rt.as_str()) {
            keep.push((new, r.clone()));
        }
    }
    // 2. the resources, relabelled, with their new ids
    let mut out = Vec::new();
    let mut related = Vec::new();
    let mut security: Vec<Value> = ctx.hiding.iter().map(|c| json!({"system": labels::HIDING, "code": c})).collect();
    if let Some(a) = &ctx.art6 {
        security.push(json!({"system": labels::ART6, "code": a}));
    }
    let mut meta = json!({"tag": [{"system": labels::DOCUMENT, "code": format!("DocumentReference/{docref_id}")}]});
    if !security.is_empty() {
        meta["security"] = json!(security);
    }
    let mut composition = Value::Null;
    for (new, mut r) in keep {
        rewrite(&mut r, &map);
        let (rt, id) = new.split_once('/').unwrap_or_default();
        // everything in a document concerns its patient: clinical resources that name nobody
        // name the registry's patient
        if r.get("subject").is_none() && r.get("patient").is_none() {
            if SUBJECT_TYPES.contains(&rt) {
                r["subject"] = json!({"reference": patient_ref});
            } else if PATIENT_TYPES.contains(&rt) {
                r["patient"] = json!({"reference": patient_ref});
            }
        }
        r["id"] = json!(id);
        r["meta"] = meta.clone();
        if rt == "Composition" {
            composition = r.clone();
        }
        related.push(json!({"reference": new}));
        out.push(json!({"fullUrl": format!("{base}/{new}"), "resource": r, "request": {"method": "PUT", "url": new}}));
    }
    // 3. the index
    let class_display = catalog::CLASSES.iter().find(|(c, _)| *c == ctx.class).map(|(_, d)| *d).unwrap_or_default();
    let title = composition["title"].as_str().unwrap_or("Documento").to_string();
    let mut docref = json!({"resourceType": "DocumentReference", "id": docref_id, "status": "current", "docStatus": "final",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:fascicolo:fhir:{identity}")},
        "identifier": [{"system": SHA256_SYSTEM, "value": ctx.sha256}],
        "type": composition["type"], "category": [{"coding": [{"system": mapping::CLASS_SYSTEM, "code": ctx.class, "display": class_display}]}],
        "subject": {"reference": patient_ref}, "description": title,
        "content": [{"attachment": {"contentType": "application/fhir+json", "url": ctx.original_url, "size": ctx.size, "title": title},
            "format": {"system": "urn:fascicolo:format", "code": "fhir-document"}}],
        "context": {
            "facilityType": {"coding": [{"system": mapping::FACILITY_SYSTEM, "code": ctx.facility_type}]},
            "practiceSetting": {"coding": [{"system": mapping::PRACTICE_SYSTEM, "code": ctx.practice_setting}]},
            "event": [{"coding": [{"system": mapping::ACTIVITY_SYSTEM, "code": ctx.activity}]}],
            "related": related,
        },
        "meta": meta});
    if let Some(d) = composition["date"].as_str() {
        docref["date"] = json!(if d.len() > 10 { d.to_string() } else { format!("{d}T00:00:00Z") });
    }
    if let Some(o) = &ctx.producer_org {
        docref["custodian"] = json!({"reference": format!("Organization/{o}")});
        docref["author"] = json!([{"reference": format!("Organization/{o}")}]);
    }
    if let Some(c) = composition["confidentiality"].as_str() {
        docref["securityLabel"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": c}]}]);
    }
    if let Some(prev) = &ctx.replaces {
        docref["relatesTo"] = json!([{"code": "replaces", "target": {"reference": format!("DocumentReference/{prev}")}}]);
    }
    let url = format!("DocumentReference/{docref_id}");
    out.insert(0, json!({"fullUrl": format!("{base}/{url}"), "resource": docref, "request": {"method": "PUT", "url": url}}));
    (docref_id, out)
}
