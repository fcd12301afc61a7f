//! National CDA2 documents for the synthetic region, written to pass the FSE 2.0 XSD and
//! schematrons (the structure follows the official examples in `shared/corpora/fse-cda`).

use crate::people::Person;
use time::Date;

/// OID of the codici fiscali (MEF).
const CF_OID: &str = "2.16.840.1.113883.2.9.4.3.2";
/// Document ids of the synthetic region (Regione Lombardia's branch of the national root).
const DOC_OID: &str = "2.16.840.1.113883.2.9.2.30.4.4";

/// XML text and attribute escaping (the same rules as the HTML renderer's).
pub use fascicolo_cda::render::escape as esc;

/// `20240131083000+0100` for a date at `hour:minute` (CET, as the examples write it).
pub fn ts(d: Date, hour: u8, minute: u8) -> String {
    format!("{:04}{:02}{:02}{hour:02}{minute:02}00+0100", d.year(), d.month() as u8, d.day())
}

fn day(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), d.month() as u8, d.day())
}

/// Who writes and signs a document, and for which structure.
#[derive(Debug, Clone)]
pub struct Author {
    pub cf: String,
    pub given: String,
    pub surname: String,
    /// HSP.11 code and name of the structure (the custodian).
    pub structure_code: String,
    pub structure_name: String,
    pub city: String,
}

/// One lab result.
#[derive(Debug, Clone)]
pub struct LabResult {
    pub loinc: &'static str,
    pub name: &'static str,
    pub value: f64,
    pub decimals: usize,
    pub unit: &'static str,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub specimen: (&'static str, &'static str),
}

impl LabResult {
    /// H, L or N against the reference range.
    pub fn interpretation(&self) -> (&'static str, &'static str) {
        match (self.low, self.high) {
            (Some(l), _) if self.value < l => ("L", "Low"),
            (_, Some(h)) if self.value > h => ("H", "High"),
            _ => ("N", "Normal"),
        }
    }
}

fn patient_role(p: &Person) -> String {
    let gender = if p.female { ("F", "FEMMINA") } else { ("M", "MASCHIO") };
    format!(
        r#"<recordTarget typeCode="RCT" contextControlCode="OP"><patientRole classCode="PAT">
<id root="{CF_OID}" extension="{cf}" assigningAuthorityName="MEF"/>
<addr use="H"><country>100</country><state>030</state><county>{prov}</county><city>{city}</city><censusTract>{istat}</censusTract><streetAddressLine>{street}</streetAddressLine></addr>
<patient><name><family>{family}</family><given>{given}</given></name>
<administrativeGenderCode code="{g}" codeSystem="2.16.840.1.113883.5.1" codeSystemName="HL7 AdministrativeGender" displayName="{gd}"/>
<birthTime value="{birth}"/></patient></patientRole></recordTarget>"#,
        cf = p.cf,
        prov = p.town.province.code,
        city = esc(p.town.name),
        istat = p.town.istat,
        street = esc(&p.street),
        family = esc(p.surname),
        given = esc(p.given),
        g = gender.0,
        gd = gender.1,
        birth = day(p.birth),
    )
}

fn assigned_person(a: &Author) -> String {
    format!("<assignedPerson><name><family>{}</family><given>{}</given></name></assignedPerson>", esc(&a.surname), esc(&a.given))
}

fn custodian(a: &Author) -> String {
    format!(
        r#"<custodian><assignedCustodian><representedCustodianOrganization>
<id root="2.16.840.1.113883.2.9.4.1.2" extension="{code}" assigningAuthorityName="Ministero della Salute"/>
<name>{name}</name>
<addr><country>100</country><state>030</state><city>{city}</city><streetAddressLine>{street}</streetAddressLine></addr>
</representedCustodianOrganization></assignedCustodian></custodian>"#,
        code = a.structure_code,
        name = esc(&a.structure_name),
        city = esc(&a.city),
        street = esc(&format!("Sede {}", a.structure_name)),
    )
}

fn legal(a: &Author, when: &str) -> String {
    format!(
        r#"<legalAuthenticator><time value="{when}"/><signatureCode code="S"/><assignedEntity>
<id root="{CF_OID}" extension="{cf}" assigningAuthorityName="MEF"/>
<addr><country>100</country><state>030</state><city>{city}</city><streetAddressLine>{street}</streetAddressLine></addr>
{person}</assignedEntity></legalAuthenticator>"#,
        cf = a.cf,
        city = esc(&a.city),
        street = esc(&format!("Presidio {}", a.structure_name)),
        person = assigned_person(a),
    )
}

/// The document id: structure, patient, timestamp and a sequence (as the national examples).
pub fn document_id(structure: &str, cf: &str, when: &str, seq: u64) -> String {
    format!("{structure}.{cf}.{}.{seq:08}", &when[..14])
}

/// A laboratory report (Referto di laboratorio, template 2.16.840.1.113883.2.9.10.1.1) with one
/// chemistry section, one sub-section and one result per analyte.
pub fn lab_report(id: &str, p: &Person, author: &Author, collected: Date, results: &[LabResult], nre: Option<&str>) -> String {
    let when = ts(collected, 11, 30);
    let taken = ts(collected, 8, 0);
    let mut sections = String::new();
    for (i, r) in results.iter().enumerate() {
        let (icode, idisplay) = r.interpretation();
        let value = format!("{:.*}", r.decimals, r.value);
        let range_text = match (r.low, r.high) {
            (Some(l), Some(h)) => format!("{l} - {h}"),
            (None, Some(h)) => format!("&lt; {h}"),
            (Some(l), None) => format!("&gt; {l}"),
            (None, None) => String::new(),
        };
        let range = if r.low.is_some() || r.high.is_some() {
            let low = r.low.map(|l| format!(r#"<low value="{l}" unit="{}"/>"#, esc(r.unit))).unwrap_or_default();
            let high = r.high.map(|h| format!(r#"<high value="{h}" unit="{}"/>"#, esc(r.unit))).unwrap_or_default();
            format!(
                r#"<referenceRange><observationRange><value xsi:type="IVL_PQ">{low}{high}</value><interpretationCode code="N" codeSystem="2.16.840.1.113883.5.83" codeSystemName="HL7 Observation Interpretation" displayName="Normal"/></observationRange></referenceRange>"#
            )
        } else {
            String::new()
        };
        let specimen = format!(
            r#"<specimen typeCode="SPC"><specimenRole classCode="SPEC"><specimenPlayingEntity><code code="{}" codeSystem="2.16.840.1.113883.5.129" codeSystemName="SpecimenType" displayName="{}"/></specimenPlayingEntity></specimenRole></specimen>"#,
            r.specimen.0, r.specimen.1
        );
        sections.push_str(&format!(
            r#"<component><section ID="ESAME_{i}">
<code code="{loinc}" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="{name}"/>
<title>{name}</title>
<text><table><thead><tr><th>Esame</th><th>Risultato</th><th>Unità di misura</th><th>Intervallo di riferimento</th><th>Interpretazione</th></tr></thead>
<tbody><tr><td>{name}</td><td>{value}</td><td>{unit}</td><td>{range_text}</td><td>{icode}</td></tr></tbody></table></text>
<entry typeCode="DRIV"><act moodCode="EVN" classCode="ACT">
<code code="{loinc}" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="{name}"/>
<statusCode code="completed"/>
<entryRelationship typeCode="COMP"><observation moodCode="EVN" classCode="OBS">
<code code="{loinc}" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="{name}"/>
<statusCode code="completed"/>
<effectiveTime value="{taken}"/>
<value xsi:type="PQ" value="{value}" unit="{unit}"/>
<interpretationCode code="{icode}" codeSystem="2.16.840.1.113883.5.83" codeSystemName="HL7 Observation Interpretation" displayName="{idisplay}"/>
{specimen}{range}
</observation></entryRelationship></act></entry></section></component>"#,
            loinc = r.loinc,
            name = esc(r.name),
            unit = esc(r.unit),
        ));
    }
    let order = nre
        .map(|n| {
            format!(
                r#"<inFulfillmentOf><order classCode="ACT" moodCode="RQO"><id root="2.16.840.1.113883.2.9.4.3.9" extension="{n}" assigningAuthorityName="Ministero delle Finanze"/><priorityCode code="R" codeSystem="2.16.840.1.113883.5.7" codeSystemName="HL7 ActPriority" displayName="routine"/></order></inFulfillmentOf>"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:sdtc="urn:hl7-org:sdtc">
<realmCode code="IT"/>
<typeId root="2.16.840.1.113883.1.3" extension="POCD_MT000040UV02"/>
<templateId root="2.16.840.1.113883.2.9.10.1.1" extension="1.3" assigningAuthorityName="HL7 Italia"/>
<id root="{DOC_OID}" extension="{id}" assigningAuthorityName="Regione Lombardia"/>
<code code="11502-2" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Referto di laboratorio"/>
<title>Referto di laboratorio</title>
<sdtc:statusCode code="completed"/>
<effectiveTime value="{when}"/>
<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25" codeSystemName="HL7 Confidentiality" displayName="Normal"/>
<languageCode code="it-IT"/>
<setId root="{DOC_OID}" extension="{id}" assigningAuthorityName="Regione Lombardia"/>
<versionNumber value="1"/>
{patient}
<author><time value="{when}"/><assignedAuthor classCode="ASSIGNED"><id root="{CF_OID}" extension="{acf}" assigningAuthorityName="MEF"/><telecom use="WP" value="tel:+390200000000"/>{aperson}</assignedAuthor></author>
{custodian}
{legal}
{order}
<documentationOf><serviceEvent moodCode="EVN"><statusCode code="completed"/><effectiveTime value="{taken}"/></serviceEvent></documentationOf>
<componentOf><encompassingEncounter><effectiveTime value="{taken}"/><location><healthCareFacility>
<id root="2.16.840.1.113883.2.9.4.1.6" extension="{scode}" assigningAuthorityName="Ministero della Salute"/>
<serviceProviderOrganization><id root="2.16.840.1.113883.2.9.4.1.2" extension="{scode}" assigningAuthorityName="Ministero della Salute"/><name>{sname}</name></serviceProviderOrganization>
</healthCareFacility></location></encompassingEncounter></componentOf>
<component><structuredBody><component><section ID="CHIMICA_CLINICA">
<code code="18719-5" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="CHIMICA"/>
<title>Chimica clinica</title>
{sections}
</section></component></structuredBody></component>
</ClinicalDocument>
"#,
        patient = patient_role(p),
        acf = author.cf,
        aperson = assigned_person(author),
        custodian = custodian(author),
        legal = legal(author, &when),
        scode = author.structure_code,
        sname = esc(&author.structure_name),
    )
}
