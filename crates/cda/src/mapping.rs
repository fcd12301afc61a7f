//! From a validated CDA2 document to FHIR R4 resources: a `DocumentReference` for the document
//! and the structured resources its body carries (`Composition`; `DiagnosticReport` and one
//! `Observation` per result for laboratory reports; `Immunization` for vaccinations; `Encounter`
//! for discharge letters and ER reports; `MedicationRequest` / `ServiceRequest` for prescriptions).
//!
//! Resource ids are derived from the document id (UUID v5), so mapping the same document twice
//! yields the same ids: publication is idempotent by construction.

use fascicolo_domain::privacy::labels;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::catalog::{self, DocType};
use crate::validate::{child, HL7_NS, LOINC};

pub const CF_OID: &str = "2.16.840.1.113883.2.9.4.3.2";
/// The NRE (prescription number) root, as the national examples and the prescription
/// schematron use it.
pub const NRE_OID: &str = "2.16.840.1.113883.2.9.4.3.9";
/// `DocumentReference.identifier` system for the SHA-256 of the bytes as published.
pub const SHA256_SYSTEM: &str = "urn:fascicolo:sha256";
pub const CLASS_SYSTEM: &str = "urn:fascicolo:fse:tipoDocumentoLivAlto";
pub const FACILITY_SYSTEM: &str = "urn:fascicolo:fse:tipologiaStruttura";
pub const PRACTICE_SYSTEM: &str = "urn:fascicolo:fse:assettoOrganizzativo";
pub const ACTIVITY_SYSTEM: &str = "urn:fascicolo:fse:tipoAttivitaClinica";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const NS_IDS: Uuid = Uuid::from_u128(0x6a1f_7c52_9e0b_4b8e_a3f1_2d5c_8e4a_0b17);

/// What the header of a CDA2 says, as needed before mapping (patient lookup, identity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// `root^extension` of `ClinicalDocument/id`.
    pub id: String,
    pub set_id: Option<String>,
    pub version: Option<String>,
    pub template: Option<String>,
    pub loinc: Option<String>,
    pub title: String,
    /// The codice fiscale in `recordTarget/patientRole/id`.
    pub patient_cf: Option<String>,
    pub effective: Option<String>,
    pub confidentiality: Option<String>,
    /// The NRE of the prescription fulfilled (`inFulfillmentOf/order/id`), when present.
    pub nre: Option<String>,
    pub custodian: Option<String>,
}

fn hl7_children<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    n.children().filter(move |c| c.is_element() && c.tag_name().name() == name && c.tag_name().namespace() == Some(HL7_NS))
}

pub(crate) fn path<'a, 'i>(n: roxmltree::Node<'a, 'i>, names: &[&str]) -> Option<roxmltree::Node<'a, 'i>> {
    let mut cur = n;
    for name in names {
        cur = child(cur, name)?;
    }
    Some(cur)
}

pub(crate) fn text(n: roxmltree::Node) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn ii(n: roxmltree::Node) -> Option<String> {
    let root = n.attribute("root")?;
    Some(match n.attribute("extension") {
        Some(e) => format!("{root}^{e}"),
        None => root.to_string(),
    })
}

/// The ids (`root`, `extension`) of a CDA2's custodian organisation.
pub fn custodian_ids(doc: &roxmltree::Document) -> Vec<(String, String)> {
    doc.root_element()
        .descendants()
        .find(|n| n.tag_name().name() == "representedCustodianOrganization")
        .into_iter()
        .flat_map(|o| o.children().filter(|c| c.tag_name().name() == "id").collect::<Vec<_>>())
        .filter_map(|i| Some((i.attribute("root")?.to_string(), i.attribute("extension")?.to_string())))
        .collect()
}

/// Reads the header of a parsed CDA2.
pub fn header(doc: &roxmltree::Document) -> Header {
    let root = doc.root_element();
    let patient_role = path(root, &["recordTarget", "patientRole"]);
    let patient_cf = patient_role.and_then(|p| {
        hl7_children(p, "id").find(|i| i.attribute("root") == Some(CF_OID)).and_then(|i| i.attribute("extension")).map(str::to_string)
    });
    // a prescription is identified by its NRE; a report names the prescription it fulfils
    let own_nre = child(root, "id").filter(|i| i.attribute("root") == Some(NRE_OID)).and_then(|i| i.attribute("extension"));
    let nre = own_nre.map(str::to_string).or_else(|| {
        hl7_children(root, "inFulfillmentOf")
            .filter_map(|f| child(f, "order"))
            .flat_map(|o| hl7_children(o, "id").collect::<Vec<_>>())
            .find_map(|i| i.attribute("extension").filter(|e| !e.starts_with('[')).map(str::to_string))
    });
    Header {
        id: child(root, "id").and_then(ii).unwrap_or_default(),
        set_id: child(root, "setId").and_then(ii),
        version: child(root, "versionNumber").and_then(|v| v.attribute("value")).map(str::to_string),
        template: child(root, "templateId").and_then(|t| t.attribute("root")).map(str::to_string),
        loinc: child(root, "code").and_then(|c| c.attribute("code")).map(str::to_string),
        title: child(root, "title").map(text).unwrap_or_default(),
        patient_cf,
        effective: child(root, "effectiveTime").and_then(|e| e.attribute("value")).map(str::to_string),
        confidentiality: child(root, "confidentialityCode").and_then(|c| c.attribute("code")).map(str::to_string),
        nre,
        custodian: path(root, &["custodian", "assignedCustodian", "representedCustodianOrganization", "name"]).map(text),
    }
}

/// HL7 TS (`20220330112426+0100`) to a FHIR dateTime (`2022-03-30T11:24:26+01:00`).
pub fn fhir_datetime(ts: &str) -> Option<String> {
    let (main, zone) = match ts.find(['+', '-']) {
        Some(i) => (&ts[..i], Some(&ts[i..])),
        None => (ts, None),
    };
    let main = main.split('.').next().unwrap_or(main);
    if !main.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let z = match zone.filter(|z| z.len() == 5) {
        Some(z) => format!("{}:{}", &z[..3], &z[3..]),
        // a time without a zone is what the clocks in Italy showed (never UTC)
        None if main.len() >= 10 => return rome_local(main),
        None => String::new(),
    };
    Some(match main.len() {
        4 => main.to_string(),
        6 => format!("{}-{}", &main[..4], &main[4..6]),
        8 => format!("{}-{}-{}", &main[..4], &main[4..6], &main[6..8]),
        10 => format!("{}-{}-{}T{}:00:00{z}", &main[..4], &main[4..6], &main[6..8], &main[8..10]),
        12 => format!("{}-{}-{}T{}:{}:00{z}", &main[..4], &main[4..6], &main[6..8], &main[8..10], &main[10..12]),
        14 => format!("{}-{}-{}T{}:{}:{}{z}", &main[..4], &main[4..6], &main[6..8], &main[8..10], &main[10..12], &main[12..14]),
        _ => return None,
    })
}

/// The FHIR system of a CDA code system OID.
pub fn system_of(oid: &str) -> String {
    match oid {
        LOINC => "http://loinc.org".into(),
        "2.16.840.1.113883.6.96" => "http://snomed.info/sct".into(),
        "2.16.840.1.113883.6.73" => "http://www.whocc.no/atc".into(),
        "2.16.840.1.113883.6.103" => "http://hl7.org/fhir/sid/icd-9-cm".into(),
        "2.16.840.1.113883.5.83" => "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation".into(),
        "2.16.840.1.113883.5.25" => "http://terminology.hl7.org/CodeSystem/v3-Confidentiality".into(),
        "2.16.840.1.113883.5.4" => "http://terminology.hl7.org/CodeSystem/v3-ActCode".into(),
        "2.16.840.1.113883.2.9.6.1.5" => "http://hl7.it/sid/aic".into(),
        "2.16.840.1.113883.5.112" => "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration".into(),
        "2.16.840.1.113883.5.1052" => "http://terminology.hl7.org/CodeSystem/v3-ActSite".into(),
        other => format!("urn:oid:{other}"),
    }
}

/// A CDA CD/CE as a FHIR CodeableConcept (with its translations as further codings).
pub fn concept(n: roxmltree::Node) -> Option<Value> {
    let mut codings = Vec::new();
    for c in std::iter::once(n).chain(hl7_children(n, "translation")) {
        if let (Some(code), Some(system)) = (c.attribute("code"), c.attribute("codeSystem")) {
            let mut coding = json!({"system": system_of(system), "code": code});
            if let Some(d) = c.attribute("displayName") {
                coding["display"] = json!(d.trim());
            }
            codings.push(coding);
        }
    }
    let text = child(n, "originalText").map(text).filter(|t| !t.is_empty());
    if codings.is_empty() && text.is_none() {
        return None;
    }
    let mut cc = json!({});
    if !codings.is_empty() {
        cc["coding"] = Value::Array(codings);
    }
    if let Some(t) = text.or_else(|| n.attribute("displayName").map(|d| d.trim().to_string())) {
        cc["text"] = json!(t);
    }
    Some(cc)
}

fn quantity(n: roxmltree::Node) -> Option<Value> {
    let value: f64 = n.attribute("value")?.trim().parse().ok()?;
    let mut q = json!({"value": value});
    if let Some(u) = n.attribute("unit").filter(|u| !u.is_empty() && *u != "1") {
        q["unit"] = json!(u);
        q["system"] = json!("http://unitsofmeasure.org");
        q["code"] = json!(u);
    }
    Some(q)
}

fn person_name(n: roxmltree::Node) -> Option<String> {
    let name = child(n, "name")?;
    let given = hl7_children(name, "given").map(text).collect::<Vec<_>>().join(" ");
    let family = hl7_children(name, "family").map(text).collect::<Vec<_>>().join(" ");
    let prefix = hl7_children(name, "prefix").map(text).collect::<Vec<_>>().join(" ");
    let full = [prefix, given, family].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    (!full.is_empty()).then_some(full).or_else(|| Some(text(name)).filter(|t| !t.is_empty()))
}

/// Metadata of a publication (the XDS-style fields the national gateway takes).
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub patient: String,
    pub producer_org: Option<String>,
    pub facility_type: String,
    pub practice_setting: String,
    pub class: String,
    pub activity: String,
    /// Hiding codes (P99, P97, P98) as `urn:fascicolo:oscuramento` labels.
    pub hiding: Vec<String>,
    pub art6: Option<String>,
    pub service_start: Option<String>,
    pub service_end: Option<String>,
    pub sha256: String,
    pub size: usize,
    pub content_type: String,
    /// Where the original can be downloaded (filled once the DocumentReference id is known).
    pub original_url: String,
    /// The DocumentReference this one replaces.
    pub replaces: Option<String>,
    /// The document's identity for derived ids (the producer's identificativoDoc); empty: the
    /// CDA id.
    pub identity: String,
}

/// The mapped resources, DocumentReference first.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub document_reference_id: String,
    pub resources: Vec<Value>,
}

/// A deterministic id for the `n`th resource of kind `what` of document `doc_id`.
pub fn derived_id(doc_id: &str, what: &str) -> String {
    Uuid::new_v5(&NS_IDS, format!("{doc_id}|{what}").as_bytes()).to_string()
}

/// Maps a validated document.
pub fn map(doc: &roxmltree::Document, h: &Header, ctx: &Context) -> Mapped {
    let root = doc.root_element();
    let doc_type: Option<&DocType> = h.template.as_deref().and_then(catalog::by_template);
    let key = if ctx.identity.is_empty() { h.id.as_str() } else { ctx.identity.as_str() };
    let docref_id = derived_id(key, "DocumentReference");
    let subject = json!({"reference": format!("Patient/{}", ctx.patient)});
    let date = h.effective.as_deref().and_then(fhir_datetime);
    let doc_tag = format!("DocumentReference/{docref_id}");
    let type_cc = child(root, "code").and_then(concept).unwrap_or_else(|| json!({"text": h.title}));
    let title = if h.title.is_empty() { doc_type.map(|t| t.name.to_string()).unwrap_or_default() } else { h.title.clone() };
    let author_name = path(root, &["author", "assignedAuthor", "assignedPerson"]).and_then(person_name);
    let mut authors = Vec::new();
    if let Some(o) = &ctx.producer_org {
        authors.push(json!({"reference": format!("Organization/{o}")}));
    }
    if let Some(a) = &author_name {
        authors.push(json!({"display": a}));
    }
    let mut resources = Vec::new();
    let mut refs: Vec<Value> = Vec::new();

    // Composition with one section per CDA section (narrative kept as text).
    let composition_id = derived_id(key, "Composition");
    let sections: Vec<Value> = path(root, &["component", "structuredBody"])
        .map(|body| hl7_children(body, "component").filter_map(|c| child(c, "section")).map(section).collect())
        .unwrap_or_default();
    let mut composition = json!({"resourceType": "Composition", "id": composition_id, "status": "final", "type": type_cc,
        "subject": subject, "date": date.clone().unwrap_or_else(|| "1970-01-01".into()), "title": title,
        "author": if authors.is_empty() { json!([{"display": "Produttore sconosciuto"}]) } else { json!(authors) },
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:oid:{}", h.id.replace('^', "."))}});
    if let Some(c) = &h.confidentiality {
        composition["confidentiality"] = json!(c);
    }
    if !sections.is_empty() {
        composition["section"] = json!(sections);
    }
    if let Some(o) = &ctx.producer_org {
        composition["custodian"] = json!({"reference": format!("Organization/{o}")});
    }
    refs.push(json!({"reference": format!("Composition/{composition_id}")}));
    resources.push(composition);

    let class = ctx.class.as_str();
    let template_is = |suffix: &str| h.template.as_deref().is_some_and(|t| t == format!("2.16.840.1.113883.2.9.10.1.{suffix}"));

    // Encounter for discharge letters and ER reports.
    if template_is("5") || template_is("6.1") {
        if let Some(enc) = path(root, &["componentOf", "encompassingEncounter"]) {
            let id = derived_id(key, "Encounter");
            let (code, display) = if template_is("5") { ("IMP", "inpatient encounter") } else { ("EMER", "emergency") };
            let mut e = json!({"resourceType": "Encounter", "id": id, "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code, "display": display},
                "subject": subject});
            if let Some(i) = child(enc, "id") {
                e["identifier"] = json!([{"system": format!("urn:oid:{}", i.attribute("root").unwrap_or_default()), "value": i.attribute("extension").unwrap_or_default()}]);
            }
            if let Some(t) = child(enc, "effectiveTime") {
                let mut period = json!({});
                if let Some(l) = child(t, "low").and_then(|l| l.attribute("value")).and_then(fhir_datetime) {
                    period["start"] = json!(l);
                }
                if let Some(hh) = child(t, "high").and_then(|l| l.attribute("value")).and_then(fhir_datetime) {
                    period["end"] = json!(hh);
                }
                if period.as_object().is_some_and(|p| !p.is_empty()) {
                    e["period"] = period;
                }
            }
            if let Some(o) = &ctx.producer_org {
                e["serviceProvider"] = json!({"reference": format!("Organization/{o}")});
            }
            if let Some(name) = path(enc, &["location", "healthCareFacility", "location", "name"]).map(text) {
                e["location"] = json!([{"location": {"display": name}}]);
            }
            if template_is("6.1") {
                // the ER report's coded triage, main problem and outcome
                let coded = |section: &str, obs: &str| {
                    root.descendants()
                        .filter(|n| {
                            n.has_tag_name((HL7_NS, "section")) && child(*n, "code").and_then(|c| c.attribute("code")) == Some(section)
                        })
                        .flat_map(|s| s.descendants())
                        .find(|n| {
                            n.has_tag_name((HL7_NS, "observation")) && child(*n, "code").and_then(|c| c.attribute("code")) == Some(obs)
                        })
                        .and_then(|o| child(o, "value"))
                        .and_then(concept)
                };
                if let Some(c) = coded("54094-8", "11283-9") {
                    e["priority"] = c;
                }
                if let Some(c) = coded("46239-0", "56817-0") {
                    e["reasonCode"] = json!([c]);
                }
                if let Some(c) = coded("28574-2", "11302-7") {
                    e["hospitalization"] = json!({"dischargeDisposition": c});
                }
            }
            refs.push(json!({"reference": format!("Encounter/{id}")}));
            resources.push(e);
        }
    }

    // Laboratory: DiagnosticReport + one Observation per result.
    let lab = template_is("1");
    let mut results = Vec::new();
    if lab || template_is("7.1") || template_is("8.1") {
        for (n, obs) in root
            .descendants()
            .filter(|d| d.is_element() && d.tag_name().name() == "observation" && d.tag_name().namespace() == Some(HL7_NS))
            .enumerate()
        {
            if obs.attribute("moodCode") != Some("EVN") {
                continue;
            }
            let Some(code) = child(obs, "code").filter(|c| c.attribute("codeSystem") == Some(LOINC)) else { continue };
            let Some(value) = child(obs, "value") else { continue };
            let id = derived_id(key, &format!("Observation/{n}"));
            let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": if lab { "laboratory" } else { "imaging" }}]}],
                "code": concept(code).unwrap_or_else(|| json!({"text": "?"})), "subject": subject});
            let eff = child(obs, "effectiveTime").and_then(|e| e.attribute("value")).and_then(fhir_datetime).or(date.clone());
            if let Some(e) = eff {
                o["effectiveDateTime"] = json!(e);
            }
            let ty = value.attribute((XSI, "type")).unwrap_or_default();
            let ty = ty.rsplit(':').next().unwrap_or(ty);
            match ty {
                "PQ" => match quantity(value) {
                    Some(q) => o["valueQuantity"] = q,
                    None => continue,
                },
                "ST" | "ED" => {
                    let t = text(value);
                    if t.is_empty() {
                        continue;
                    }
                    o["valueString"] = json!(t);
                }
                "CD" | "CE" | "CV" | "CO" => match concept(value) {
                    Some(c) => o["valueCodeableConcept"] = c,
                    None => continue,
                },
                "INT" => match value.attribute("value").and_then(|v| v.parse::<i64>().ok()) {
                    Some(i) => o["valueInteger"] = json!(i),
                    None => continue,
                },
                "REAL" => match value.attribute("value").and_then(|v| v.parse::<f64>().ok()) {
                    Some(r) => o["valueQuantity"] = json!({"value": r}),
                    None => continue,
                },
                "BL" => o["valueBoolean"] = json!(value.attribute("value") == Some("true")),
                _ => continue,
            }
            let interpretation: Vec<Value> = hl7_children(obs, "interpretationCode").filter_map(concept).collect();
            if !interpretation.is_empty() {
                o["interpretation"] = json!(interpretation);
            }
            let ranges: Vec<Value> = hl7_children(obs, "referenceRange")
                .filter_map(|r| path(r, &["observationRange", "value"]))
                .filter_map(|v| {
                    let mut range = json!({});
                    if let Some(l) = child(v, "low").and_then(quantity) {
                        range["low"] = l;
                    }
                    if let Some(hh) = child(v, "high").and_then(quantity) {
                        range["high"] = hh;
                    }
                    // FHIR's bounds are inclusive: a strict one ("< 200") is said in the text
                    let strict = |n: &str, sign: &str| {
                        child(v, n).filter(|b| b.attribute("inclusive") == Some("false")).and_then(|b| {
                            let value = b.attribute("value")?;
                            Some(format!("{sign} {value} {}", b.attribute("unit").unwrap_or_default()).trim().to_string())
                        })
                    };
                    let text: Vec<String> = [strict("low", ">"), strict("high", "<")].into_iter().flatten().collect();
                    if !text.is_empty() {
                        range["text"] = json!(text.join(", "));
                    }
                    range.as_object().is_some_and(|m| !m.is_empty()).then_some(range)
                })
                .collect();
            if !ranges.is_empty() {
                o["referenceRange"] = json!(ranges);
            }
            results.push(json!({"reference": format!("Observation/{id}")}));
            refs.push(json!({"reference": format!("Observation/{id}")}));
            resources.push(o);
        }
        let id = derived_id(key, "DiagnosticReport");
        let mut dr = json!({"resourceType": "DiagnosticReport", "id": id, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": if lab { "LAB" } else if template_is("7.1") { "RAD" } else { "PAT" }}]}],
            "code": child(root, "code").and_then(concept).unwrap_or_else(|| json!({"text": title})), "subject": subject});
        if let Some(d) = &date {
            dr["effectiveDateTime"] = json!(d);
            dr["issued"] = json!(d);
        }
        if let Some(o) = &ctx.producer_org {
            dr["performer"] = json!([{"reference": format!("Organization/{o}")}]);
        }
        if !results.is_empty() {
            dr["result"] = json!(results);
        }
        refs.push(json!({"reference": format!("DiagnosticReport/{id}")}));
        resources.push(dr);
    }

    // Vaccinations: one Immunization per administration.
    if class == "VAC" || template_is("11.1.1") || template_is("11.1.2") {
        for (n, sa) in root
            .descendants()
            .filter(|d| d.is_element() && d.tag_name().name() == "substanceAdministration" && d.tag_name().namespace() == Some(HL7_NS))
            .enumerate()
        {
            if sa.attribute("moodCode") != Some("EVN") {
                continue;
            }
            let material = path(sa, &["consumable", "manufacturedProduct", "manufacturedMaterial"]);
            let Some(vaccine) = material.and_then(|m| child(m, "code")).and_then(concept) else { continue };
            let id = derived_id(key, &format!("Immunization/{n}"));
            let when = child(sa, "effectiveTime")
                .and_then(|e| e.attribute("value").or_else(|| child(e, "low").and_then(|l| l.attribute("value"))))
                .and_then(fhir_datetime);
            let mut imm = json!({"resourceType": "Immunization", "id": id, "status": "completed", "vaccineCode": vaccine,
                "patient": subject, "occurrenceDateTime": when.or(date.clone()).unwrap_or_else(|| "1970-01-01".into()), "primarySource": true});
            if let Some(lot) = material.and_then(|m| child(m, "lotNumberText")).map(text).filter(|l| !l.is_empty()) {
                imm["lotNumber"] = json!(lot);
            }
            if let Some(route) = child(sa, "routeCode").and_then(concept) {
                imm["route"] = route;
            }
            if let Some(site) = child(sa, "approachSiteCode").and_then(concept) {
                imm["site"] = site;
            }
            if let Some(dose) = child(sa, "doseQuantity").and_then(quantity) {
                imm["doseQuantity"] = dose;
            }
            let dose_number = hl7_children(sa, "entryRelationship")
                .filter_map(|e| child(e, "observation"))
                .find(|o| child(*o, "code").and_then(|c| c.attribute("code")) == Some("30973-2"))
                .and_then(|o| child(o, "value"))
                .and_then(|v| v.attribute("value"))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(d) = dose_number {
                imm["protocolApplied"] = json!([{"doseNumberPositiveInt": d}]);
            }
            if let Some(o) = &ctx.producer_org {
                imm["performer"] = json!([{"actor": {"reference": format!("Organization/{o}")}}]);
            }
            refs.push(json!({"reference": format!("Immunization/{id}")}));
            resources.push(imm);
        }
    }

    // Prescriptions: medicines as MedicationRequest, other services as ServiceRequest.
    if class == "PRS" {
        // the prescriber: the document's author, by name and codice fiscale
        let assigned = path(root, &["author", "assignedAuthor"]);
        let requester = assigned.and_then(|a| child(a, "assignedPerson")).and_then(person_name).map(|name| {
            let mut r = json!({"display": name});
            if let Some(cf) = assigned
                .and_then(|a| hl7_children(a, "id").find(|i| i.attribute("root") == Some(CF_OID)))
                .and_then(|i| i.attribute("extension"))
            {
                r["identifier"] = json!({"system": fascicolo_domain::systems::CF_SYSTEM, "value": cf});
            }
            r
        });
        for (n, sa) in root.descendants().filter(|d| d.is_element() && d.tag_name().namespace() == Some(HL7_NS)).enumerate() {
            let name = sa.tag_name().name();
            let intent = matches!(sa.attribute("moodCode"), Some("INT") | Some("RQO"));
            if name == "substanceAdministration" && intent {
                let Some(med) = path(sa, &["consumable", "manufacturedProduct", "manufacturedMaterial", "code"]).and_then(concept) else {
                    continue;
                };
                let id = derived_id(key, &format!("MedicationRequest/{n}"));
                let mut mr = json!({"resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
                    "medicationCodeableConcept": med, "subject": subject});
                if let Some(d) = &date {
                    mr["authoredOn"] = json!(d);
                }
                // what the prescription carries besides the drug: the prescriber, the packs,
                // the diagnosis, the dosage when written
                if let Some(r) = &requester {
                    mr["requester"] = r.clone();
                }
                let packs = sa
                    .descendants()
                    .find(|d| d.is_element() && d.tag_name().name() == "supply")
                    .and_then(|s| child(s, "quantity"))
                    .and_then(|q| q.attribute("value"))
                    .and_then(|v| v.parse::<f64>().ok());
                if let Some(v) = packs {
                    mr["dispenseRequest"] = json!({"quantity": {"value": v, "unit": "confezioni"}});
                }
                let reasons: Vec<Value> = hl7_children(sa, "entryRelationship")
                    .filter(|e| e.attribute("typeCode") == Some("RSON"))
                    .filter_map(|e| child(e, "observation").and_then(|o| child(o, "code")).and_then(concept))
                    .collect();
                if !reasons.is_empty() {
                    mr["reasonCode"] = Value::Array(reasons);
                }
                let dose =
                    child(sa, "doseQuantity").and_then(|q| q.attribute("value").map(|v| (v, q.attribute("unit").unwrap_or_default())));
                let dosage_text = child(sa, "text").map(text).filter(|t| !t.is_empty());
                if dosage_text.is_some() || dose.is_some() {
                    let text = dosage_text.unwrap_or_else(|| dose.map(|(v, u)| format!("{v} {u}").trim().to_string()).unwrap_or_default());
                    mr["dosageInstruction"] = json!([{"text": text}]);
                }
                if let Some(nre) = &h.nre {
                    mr["groupIdentifier"] = json!({"system": format!("urn:oid:{NRE_OID}"), "value": nre});
                }
                refs.push(json!({"reference": format!("MedicationRequest/{id}")}));
                resources.push(mr);
            } else if matches!(name, "observation" | "act" | "procedure") && intent {
                let Some(code) = child(sa, "code").and_then(concept) else { continue };
                let id = derived_id(key, &format!("ServiceRequest/{n}"));
                let mut sr = json!({"resourceType": "ServiceRequest", "id": id, "status": "active", "intent": "order",
                    "code": code, "subject": subject});
                if let Some(r) = &requester {
                    sr["requester"] = r.clone();
                }
                if let Some(d) = &date {
                    sr["authoredOn"] = json!(d);
                }
                if let Some(nre) = &h.nre {
                    sr["requisition"] = json!({"system": format!("urn:oid:{NRE_OID}"), "value": nre});
                }
                refs.push(json!({"reference": format!("ServiceRequest/{id}")}));
                resources.push(sr);
            }
        }
    }

    // The DocumentReference, first.
    let mut identifiers = vec![json!({"system": SHA256_SYSTEM, "value": ctx.sha256})];
    if let Some(set) = &h.set_id {
        identifiers.push(json!({"system": "urn:fascicolo:cda:setId", "value": set}));
    }
    let mut context = json!({
        "facilityType": {"coding": [{"system": FACILITY_SYSTEM, "code": ctx.facility_type}]},
        "practiceSetting": {"coding": [{"system": PRACTICE_SYSTEM, "code": ctx.practice_setting}]},
        "event": [{"coding": [{"system": ACTIVITY_SYSTEM, "code": ctx.activity}]}],
        "related": refs,
    });
    let mut period = Map::new();
    if let Some(s) = ctx.service_start.as_deref().and_then(fhir_datetime) {
        period.insert("start".into(), json!(s));
    }
    if let Some(e) = ctx.service_end.as_deref().and_then(fhir_datetime) {
        period.insert("end".into(), json!(e));
    }
    if !period.is_empty() {
        context["period"] = Value::Object(period);
    }
    if let Some(nre) = &h.nre {
        if let Some(a) = context["related"].as_array_mut() {
            a.push(json!({"identifier": {"system": format!("urn:oid:{NRE_OID}"), "value": nre}, "display": "NRE"}));
        }
    }
    let class_display = catalog::CLASSES.iter().find(|(c, _)| *c == class).map(|(_, d)| *d).unwrap_or_default();
    let mut docref = json!({"resourceType": "DocumentReference", "id": docref_id, "status": "current", "docStatus": "final",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:fascicolo:cda:{}", h.id)},
        "identifier": identifiers, "type": child(root, "code").and_then(concept).unwrap_or_else(|| json!({"text": title})),
        "category": [{"coding": [{"system": CLASS_SYSTEM, "code": class, "display": class_display}]}],
        "subject": subject, "description": title,
        "content": [{"attachment": {"contentType": ctx.content_type, "url": ctx.original_url, "size": ctx.size, "title": title},
            "format": {"system": "urn:fascicolo:format", "code": h.template.clone().unwrap_or_default()}}],
        "context": context});
    if let Some(d) = &date {
        docref["date"] = json!(instant(d));
    }
    if !authors.is_empty() {
        docref["author"] = json!(authors);
    }
    if let Some(o) = &ctx.producer_org {
        docref["custodian"] = json!({"reference": format!("Organization/{o}")});
    }
    if let Some(c) = &h.confidentiality {
        docref["securityLabel"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": c}]}]);
    }
    if let Some(prev) = &ctx.replaces {
        docref["relatesTo"] = json!([{"code": "replaces", "target": {"reference": format!("DocumentReference/{prev}")}}]);
    }
    resources.insert(0, docref);

    // Every resource: hiding and art. 6 labels, and the document family tag.
    for r in &mut resources {
        let mut security: Vec<Value> = ctx.hiding.iter().map(|c| json!({"system": labels::HIDING, "code": c})).collect();
        if let Some(a) = &ctx.art6 {
            security.push(json!({"system": labels::ART6, "code": a}));
        }
        let mut meta = json!({"tag": [{"system": labels::DOCUMENT, "code": doc_tag}]});
        if !security.is_empty() {
            meta["security"] = json!(security);
        }
        r["meta"] = meta;
    }
    Mapped { document_reference_id: docref_id, resources }
}

/// `YYYYMMDDHH[MM[SS]]` read on Rome's clocks, as a FHIR dateTime with the offset of that instant.
fn rome_local(main: &str) -> Option<String> {
    let num = |r: std::ops::Range<usize>| main.get(r).and_then(|s| s.parse::<u8>().ok());
    let year: i32 = main.get(0..4)?.parse().ok()?;
    let date = time::Date::from_calendar_date(year, time::Month::try_from(num(4..6)?).ok()?, num(6..8)?).ok()?;
    let t = fascicolo_domain::rome::at(date, num(8..10)?, num(10..12).unwrap_or(0))?;
    let o = t.offset();
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+{:02}:{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        num(12..14).unwrap_or(0),
        o.whole_hours(),
        o.minutes_past_hour()
    ))
}

/// A FHIR instant needs seconds and a zone: a date becomes its midnight in Rome.
fn instant(dt: &str) -> String {
    if dt.len() > 10 {
        return dt.to_string();
    }
    let d = pad_date(dt);
    rome_local(&format!("{}00", d.replace('-', ""))).unwrap_or_else(|| format!("{d}T00:00:00Z"))
}

fn pad_date(d: &str) -> String {
    match d.len() {
        4 => format!("{d}-01-01"),
        7 => format!("{d}-01"),
        _ => d.to_string(),
    }
}

fn section(s: roxmltree::Node) -> Value {
    let mut out = json!({});
    if let Some(t) = child(s, "title").map(text).filter(|t| !t.is_empty()) {
        out["title"] = json!(t);
    }
    if let Some(c) = child(s, "code").and_then(concept) {
        out["code"] = c;
    }
    let narrative = child(s, "text").map(text).unwrap_or_default();
    let div = if narrative.is_empty() {
        "<div xmlns=\"http://www.w3.org/1999/xhtml\">—</div>".to_string()
    } else {
        format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", crate::render::escape(&narrative))
    };
    out["text"] = json!({"status": "generated", "div": div});
    let subs: Vec<Value> = hl7_children(s, "component").filter_map(|c| child(c, "section")).map(section).collect();
    if !subs.is_empty() {
        out["section"] = json!(subs);
    }
    if out.get("title").is_none() && out.get("code").is_none() {
        out["title"] = json!("Sezione");
    }
    out
}
