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

/// `20240131083000+0100` for a date at `hour:minute` on Rome's clocks, with the offset they had
/// then (`+0200` in summer): one instant, which every reader shows the same.
pub fn ts(d: Date, hour: u8, minute: u8) -> String {
    let t = fascicolo_domain::rome::at(d, hour, minute)
        .unwrap_or_else(|| d.midnight().assume_offset(fascicolo_domain::rome::offset(d.midnight().assume_utc())));
    let o = t.offset();
    format!(
        "{:04}{:02}{:02}{:02}{:02}00+{:02}{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        o.whole_hours(),
        o.minutes_past_hour()
    )
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

fn patient_role(p: &Person, pacs: Option<&str>) -> String {
    let gender = if p.female { ("F", "FEMMINA") } else { ("M", "MASCHIO") };
    format!(
        r#"<recordTarget typeCode="RCT" contextControlCode="OP"><patientRole classCode="PAT">
<id root="{CF_OID}" extension="{cf}" assigningAuthorityName="MEF"/>{pacs}
<addr use="H"><country>100</country><state>030</state><county>{prov}</county><city>{city}</city><censusTract>{istat}</censusTract><streetAddressLine>{street}</streetAddressLine></addr>
<patient><name><family>{family}</family><given>{given}</given></name>
<administrativeGenderCode code="{g}" codeSystem="2.16.840.1.113883.5.1" codeSystemName="HL7 AdministrativeGender" displayName="{gd}"/>
<birthTime value="{birth}"/>
<birthplace><place><addr>{bcountry}<city>{bcity}</city><county>{bprov}</county>{btract}</addr></place></birthplace></patient></patientRole></recordTarget>"#,
        bcity = esc(p.birth_place.name),
        // the country and the municipality's ISTAT code where the tables know it (Lombardy)
        bcountry = birth_istat(p).map(|_| "<country>100</country>").unwrap_or_default(),
        btract = birth_istat(p).map(|c| format!("<censusTract>{c}</censusTract>")).unwrap_or_default(),
        bprov = p.birth_place.province,
        cf = p.cf,
        pacs = pacs.map(|x| format!(r#"<id root="{DOC_OID}.1" extension="{x}" assigningAuthorityName="PACS"/>"#)).unwrap_or_default(),
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

/// The ISTAT code of the patient's birth place, when born in a Lombard municipality.
pub fn birth_istat(p: &Person) -> Option<&'static str> {
    crate::data::data().istat_by_place.get(p.birth_place.code).copied()
}

fn assigned_person(a: &Author) -> String {
    format!("<assignedPerson><name><family>{}</family><given>{}</given></name></assignedPerson>", esc(&a.surname), esc(&a.given))
}

fn custodian(a: &Author) -> String {
    format!(
        r#"<custodian typeCode="CST"><assignedCustodian><representedCustodianOrganization>
<id root="2.16.840.1.113883.2.9.4.1.2" extension="{code}" assigningAuthorityName="Ministero della Salute"/>
<name>{name}</name>
<addr use="WP"><country>100</country><state>030</state><city>{city}</city><streetAddressLine>{street}</streetAddressLine></addr>
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
<addr use="WP"><country>100</country><state>030</state><city>{city}</city><streetAddressLine>{street}</streetAddressLine></addr>
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
            // a one-sided range is strict, as its text says ("< 200"): the bound is not inclusive
            let open = if r.low.is_some() && r.high.is_some() { "" } else { r#" inclusive="false""# };
            let low = r.low.map(|l| format!(r#"<low value="{l}" unit="{}"{open}/>"#, esc(r.unit))).unwrap_or_default();
            let high = r.high.map(|h| format!(r#"<high value="{h}" unit="{}"{open}/>"#, esc(r.unit))).unwrap_or_default();
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
    let order = nre.map(in_fulfillment_of).unwrap_or_default();
    let header = Header {
        after_legal: order,
        ..Header::new(("2.16.840.1.113883.2.9.10.1.1", "1.3"), ("11502-2", "Referto di laboratorio"), id, &when, &taken)
    };
    let body = format!(
        r#"<component><section ID="CHIMICA_CLINICA">
<code code="18719-5" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="CHIMICA"/>
<title>Chimica clinica</title>
{sections}
</section></component>"#
    );
    document(&header, p, author, &body)
}

/// The prescription (NRE) a report fulfils.
fn in_fulfillment_of(nre: &str) -> String {
    format!(
        r#"<inFulfillmentOf><order classCode="ACT" moodCode="RQO"><id root="{NRE_OID}" extension="{nre}" assigningAuthorityName="Ministero delle Finanze"/><priorityCode code="R" codeSystem="2.16.840.1.113883.5.7" codeSystemName="HL7 ActPriority" displayName="routine"/></order></inFulfillmentOf>"#
    )
}

/// What differs between document types in the header.
#[derive(Debug)]
pub struct Header<'a> {
    /// Template root and extension.
    pub template: (&'a str, &'a str),
    /// LOINC code and display.
    pub code: (&'a str, &'a str),
    pub title: &'a str,
    pub id: &'a str,
    /// The document's time.
    pub when: &'a str,
    /// The service's time.
    pub service: &'a str,
    /// Header elements after the legal authenticator (participants, inFulfillmentOf).
    pub after_legal: String,
    /// Whether the header carries the encounter (componentOf).
    pub encounter: bool,
    /// The service event's code (ActCode 2.16.840.1.113883.2.9.5.1.4) and display.
    pub service_code: Option<(&'a str, &'a str)>,
    /// A second patient id (the PACS's) after the codice fiscale.
    pub pacs_id: Option<String>,
    /// A stay (admission id, from, to): the encounter and the service carry its period.
    pub stay: Option<(String, String, String)>,
    /// The id's root when not the region's document root (a prescription's id is its NRE).
    pub id_root: Option<&'a str>,
    /// XML inside the document's `code` (translations).
    pub code_translation: String,
}

impl<'a> Header<'a> {
    /// A header with the common defaults: encounter in the header, no service code, no PACS
    /// id, no stay, the region's id root, no translation.
    pub fn new(template: (&'a str, &'a str), code: (&'a str, &'a str), id: &'a str, when: &'a str, service: &'a str) -> Self {
        Header {
            template,
            code,
            title: code.1,
            id,
            when,
            service,
            after_legal: String::new(),
            encounter: true,
            service_code: None,
            pacs_id: None,
            stay: None,
            id_root: None,
            code_translation: String::new(),
        }
    }
}

/// A whole CDA2: the header of `h` and the structured body's components.
pub fn document(h: &Header, p: &Person, author: &Author, body: &str) -> String {
    let (encounter_time, encounter_id) = match &h.stay {
        Some((id, from, to)) => (
            format!(r#"<effectiveTime><low value="{from}"/><high value="{to}"/></effectiveTime>"#),
            format!(r#"<id root="{DOC_OID}.2" extension="{id}" assigningAuthorityName="{}"/>"#, esc(&author.structure_name)),
        ),
        None => (format!(r#"<effectiveTime value="{}"/>"#, h.service), String::new()),
    };
    let encounter = if h.encounter {
        format!(
            r#"<componentOf><encompassingEncounter>{encounter_id}{encounter_time}<location typeCode="LOC"><healthCareFacility classCode="SDLOC">
<id root="2.16.840.1.113883.2.9.4.1.6" extension="{scode}" assigningAuthorityName="Ministero della Salute"/>
<serviceProviderOrganization><id root="2.16.840.1.113883.2.9.4.1.2" extension="{scode}" assigningAuthorityName="Ministero della Salute"/><name>{sname}</name></serviceProviderOrganization>
</healthCareFacility></location></encompassingEncounter></componentOf>"#,
            scode = author.structure_code,
            sname = esc(&author.structure_name),
        )
    } else {
        String::new()
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:sdtc="urn:hl7-org:sdtc">
<realmCode code="IT"/>
<typeId root="2.16.840.1.113883.1.3" extension="POCD_MT000040UV02"/>
<templateId root="{troot}" extension="{text}" assigningAuthorityName="HL7 Italia"/>
<id root="{id_root}" extension="{id}" assigningAuthorityName="{id_authority}"/>
<code code="{code}" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="{display}">{code_translation}</code>
<title>{title}</title>
<sdtc:statusCode code="completed"/>
<effectiveTime value="{when}"/>
<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25" codeSystemName="HL7 Confidentiality" displayName="Normal"/>
<languageCode code="it-IT"/>
<setId root="{DOC_OID}" extension="{id}" assigningAuthorityName="Regione Lombardia"/>
<versionNumber value="1"/>
{patient}
<author typeCode="AUT" contextControlCode="OP"><time value="{when}"/><assignedAuthor classCode="ASSIGNED"><id root="{CF_OID}" extension="{acf}" assigningAuthorityName="MEF"/><telecom use="WP" value="tel:+390200000000"/>{aperson}</assignedAuthor></author>
{custodian}
{legal}
{after}
<documentationOf><serviceEvent moodCode="EVN">{scode}<statusCode code="completed"/>{encounter_time}</serviceEvent></documentationOf>
{encounter}
<component><structuredBody>
{body}
</structuredBody></component>
</ClinicalDocument>
"#,
        id_root = h.id_root.unwrap_or(DOC_OID),
        id_authority = if h.id_root.is_some() { "Ministero delle Finanze" } else { "Regione Lombardia" },
        code_translation = h.code_translation,
        troot = h.template.0,
        text = h.template.1,
        id = h.id,
        code = h.code.0,
        display = esc(h.code.1),
        title = esc(h.title),
        when = h.when,
        after = h.after_legal,
        patient = patient_role(p, h.pacs_id.as_deref()),
        scode = h
            .service_code
            .map(|(c, d)| format!(
                r#"<code code="{c}" codeSystem="2.16.840.1.113883.2.9.5.1.4" codeSystemName="ActCode" displayName="{}"/>"#,
                esc(d)
            ))
            .unwrap_or_default(),
        acf = author.cf,
        aperson = assigned_person(author),
        custodian = custodian(author),
        legal = legal(author, h.when),
    )
}

/// A vaccine as administered: ATC code and name, the product (AIC code and name), the dose.
#[derive(Debug, Clone)]
pub struct Vaccine {
    pub atc: &'static str,
    pub atc_name: &'static str,
    pub aic: &'static str,
    pub product: &'static str,
    /// What it protects from (ICD-9-CM code and name of the disease).
    pub disease: (&'static str, &'static str),
}

/// A single vaccination record (Scheda singola vaccinazione, template
/// 2.16.840.1.113883.2.9.10.1.11.1.1).
pub fn vaccination(id: &str, p: &Person, author: &Author, given: Date, v: &Vaccine, dose: u32, lot: &str) -> String {
    let when = ts(given, 10, 0);
    let header = Header {
        encounter: false,
        ..Header::new(("2.16.840.1.113883.2.9.10.1.11.1.1", "1.1"), ("87273-9", "Scheda della singola vaccinazione"), id, &when, &when)
    };
    let shown = format!("{:02}/{:02}/{}", given.day(), given.month() as u8, given.year());
    let body = format!(
        r#"<component typeCode="COMP"><section classCode="DOCSECT" moodCode="EVN">
<templateId root="2.16.840.1.113883.2.9.10.1.11.3.1"/>
<code code="11369-6" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="History of Immunization Narrative"/>
<title>Scheda della singola vaccinazione</title>
<text><table><thead><tr><th>Vaccino</th><th>Data</th><th>Dose</th><th>Lotto</th><th>Malattia prevenuta</th></tr></thead>
<tbody><tr><td>{product} ({atc_name})</td><td>{date}</td><td>{dose}</td><td>{lot}</td><td>{disease}</td></tr></tbody></table></text>
<entry><substanceAdministration moodCode="EVN" classCode="SBADM">
<templateId root="2.16.840.1.113883.2.9.10.1.11.4.1"/>
<statusCode code="completed"/>
<effectiveTime value="{when}"/>
<routeCode code="IM" codeSystem="2.16.840.1.113883.5.112" codeSystemName="HL7 RouteOfAdministration" displayName="Injection, intramuscular"/>
<approachSiteCode code="LA" codeSystem="2.16.840.1.113883.5.1052" codeSystemName="ActSite" displayName="left arm"/>
<doseQuantity value="0.5" unit="mL"/>
<consumable typeCode="CSM"><manufacturedProduct><manufacturedMaterial>
<code code="{aic}" codeSystem="2.16.840.1.113883.2.9.6.1.5" codeSystemName="AIC" displayName="{product}"><translation code="{atc}" codeSystem="2.16.840.1.113883.6.73" codeSystemName="ATC" displayName="{atc_name}"/></code>
<lotNumberText>{lot}</lotNumberText>
</manufacturedMaterial></manufacturedProduct></consumable>
<participant typeCode="LOC"><participantRole classCode="ROL"><id root="2.16.840.1.113883.2.9.4.1.2" extension="{scode}" assigningAuthorityName="Ministero della Salute"/></participantRole></participant>
<entryRelationship typeCode="SUBJ" inversionInd="true"><observation classCode="OBS" moodCode="EVN">
<templateId root="2.16.840.1.113883.2.9.10.1.11.4.3"/>
<code code="30973-2" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Numero di dose"/>
<statusCode code="completed"/>
<value xsi:type="INT" value="{dose}"/>
</observation></entryRelationship>
<entryRelationship typeCode="RSON" inversionInd="false"><observation classCode="OBS" moodCode="EVN">
<templateId root="2.16.840.1.113883.2.9.10.1.11.4.9"/>
<code code="75323-6" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Condizione"/>
<statusCode code="completed"/>
<value xsi:type="CD" code="{dcode}" codeSystem="2.16.840.1.113883.6.103" codeSystemName="ICD-9CM" displayName="{disease}"/>
</observation></entryRelationship>
</substanceAdministration></entry>
</section></component>"#,
        product = esc(v.product),
        atc_name = esc(v.atc_name),
        atc = v.atc,
        aic = v.aic,
        date = shown,
        lot = esc(lot),
        disease = esc(v.disease.1),
        dcode = v.disease.0,
        scode = author.structure_code,
    );
    document(&header, p, author, &body)
}

/// A narrative section: id, LOINC code and display, title, paragraphs; optional extra XML
/// inside the section (entries, sub-sections).
#[derive(Debug, Clone)]
pub struct Section {
    pub id: &'static str,
    pub code: &'static str,
    pub display: &'static str,
    pub title: String,
    pub text: Vec<String>,
    pub extra: String,
}

fn sections(list: &[Section]) -> String {
    list.iter()
        .map(|s| {
            let paragraphs: String = s.text.iter().map(|t| format!("<paragraph>{}</paragraph>", esc(t))).collect();
            format!(
                r#"<component><section ID="{id}">
<code code="{code}" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="{display}"/>
<title>{title}</title>
<text>{paragraphs}</text>
{extra}</section></component>"#,
                id = s.id,
                code = s.code,
                display = esc(s.display),
                title = esc(&s.title),
                extra = s.extra,
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The kinds of narrative report the region writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Narrative {
    /// Referto di specialistica ambulatoriale.
    Specialist,
    /// Referto di radiologia.
    Radiology,
    /// Verbale di pronto soccorso.
    Emergency,
    /// Lettera di dimissione ospedaliera.
    Discharge,
}

impl Narrative {
    fn header(self) -> ((&'static str, &'static str), (&'static str, &'static str), &'static str) {
        match self {
            Self::Specialist => (
                ("2.16.840.1.113883.2.9.10.1.9.1", "1.1"),
                ("11488-4", "Referto di specialistica ambulatoriale"),
                "Referto di specialistica ambulatoriale",
            ),
            Self::Radiology => (("2.16.840.1.113883.2.9.10.1.7.1", "1.1"), ("68604-8", "Referto di radiologia"), "Referto di radiologia"),
            Self::Emergency => {
                (("2.16.840.1.113883.2.9.10.1.6.1", "1.1"), ("59258-4", "Verbale di Pronto Soccorso"), "Verbale di pronto soccorso")
            }
            Self::Discharge => (
                ("2.16.840.1.113883.2.9.10.1.5", "1.2"),
                ("34105-7", "Lettera di dimissione ospedaliera"),
                "Lettera di dimissione ospedaliera",
            ),
        }
    }
}

/// A narrative report (specialist visit, radiology) with its sections; `nre` is the
/// prescription it fulfils.
pub fn narrative(kind: Narrative, id: &str, p: &Person, author: &Author, on: Date, list: &[Section], nre: Option<&str>) -> String {
    narrative_stay(kind, id, p, author, on, list, nre, None)
}

/// A narrative report about a stay (admission id, first and last day): discharge letters.
#[allow(clippy::too_many_arguments)]
pub fn narrative_stay(
    kind: Narrative,
    id: &str,
    p: &Person,
    author: &Author,
    on: Date,
    list: &[Section],
    nre: Option<&str>,
    stay: Option<(&str, Date, Date)>,
) -> String {
    let when = ts(on, 12, 0);
    let service = ts(on, 10, 30);
    let (template, code, title) = kind.header();
    let order = nre.map(in_fulfillment_of).unwrap_or_default();
    let (service_code, pacs_id) = match kind {
        Narrative::Specialist => (("PROG", "Accesso Programmato"), None),
        Narrative::Radiology => (("RAD_PROG", "Accesso Programmato (Radiologia)"), Some(format!("PACS-{}", p.id))),
        Narrative::Emergency | Narrative::Discharge => (("DIR", "Accesso Diretto"), None),
    };
    let header = Header {
        title,
        after_legal: order,
        service_code: Some(service_code),
        pacs_id,
        stay: stay.map(|(id, from, to)| (id.to_string(), ts(from, 9, 0), ts(to, 11, 0))),
        ..Header::new(template, code, id, &when, &service)
    };
    document(&header, p, author, &sections(list))
}

/// A triage code of the national guidelines (2019): 1 red … 5 white, with its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triage(pub u8);

impl Triage {
    /// The colour, as the national guidelines name it.
    pub fn colour(self) -> &'static str {
        match self.0 {
            1 => "Rosso",
            2 => "Arancione",
            3 => "Azzurro",
            4 => "Verde",
            _ => "Bianco",
        }
    }
}

/// An emergency-room visit as the Verbale di pronto soccorso records it.
///
/// Coded values come from the national VPS value sets, only where a published source gives
/// the meaning of the code: the transport mode, the sender, the main problem and the outcome
/// are the codes the official `VPS.xml` example uses with their displays (`3` "Autonomo",
/// `3` "Specialista", `15` "Ipertensione Arteriosa", `1` "Dimissione a domicilio"); the triage
/// code is the numeric code of the 2019 national guidelines (DOMAIN.md).
#[derive(Debug, Clone)]
pub struct EmergencyVisit {
    /// When the patient arrived (date, hour, minute).
    pub arrival: (Date, u8, u8),
    /// Minutes from arrival to triage, and from arrival to discharge (same day).
    pub triage_after: u16,
    pub discharge_after: u16,
    pub triage: Triage,
    /// Free text: the cause of the visit as reported.
    pub cause: String,
    /// Vital signs at arrival, as written in the record.
    pub vitals: String,
    /// The course in the emergency room.
    pub course: String,
    /// Drugs given in the emergency room.
    pub therapy: String,
    /// Discharge diagnosis (ICD-9-CM code and display).
    pub diagnosis: (&'static str, &'static str),
    /// Advice at discharge.
    pub advice: String,
}

fn at(d: Date, hour: u8, minute: u8, plus: u16) -> String {
    let total = u32::from(hour) * 60 + u32::from(minute) + u32::from(plus);
    // visits end the same day: clamp to 23:59
    let total = total.min(23 * 60 + 59);
    ts(d, (total / 60) as u8, (total % 60) as u8)
}

fn performer_entity(a: &Author) -> String {
    format!(
        r#"<assignedEntity><id root="{CF_OID}" extension="{}" assigningAuthorityName="MEF"/>{}</assignedEntity>"#,
        a.cf,
        assigned_person(a)
    )
}

/// A Verbale di pronto soccorso (template 2.16.840.1.113883.2.9.10.1.6.1): the access as an
/// encounter (arrival to discharge), transport and sender, main problem and cause, triage,
/// vital signs, course, therapy given, and the discharge with diagnosis and outcome. `doctor`
/// writes and signs it; `nurse` assigns the triage code.
pub fn emergency_report(id: &str, access: &str, p: &Person, doctor: &Author, nurse: &Author, v: &EmergencyVisit) -> String {
    let (d, h, m) = v.arrival;
    let arrived = ts(d, h, m);
    let triaged = at(d, h, m, v.triage_after);
    let discharged = at(d, h, m, v.discharge_after);
    let (template, code, title) = Narrative::Emergency.header();
    let header = Header {
        title,
        service_code: Some(("DIR", "Accesso Diretto")),
        stay: Some((access.to_string(), arrived.clone(), discharged.clone())),
        ..Header::new(template, code, id, &discharged, &arrived)
    };
    let colour = v.triage.colour();
    let (dx, dx_name) = v.diagnosis;
    let body = format!(
        r#"<component><section ID="MODALITA_TRASPORTO"><templateId root="2.16.840.1.113883.2.9.10.1.6.20"/>
<code code="11459-5" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Modalità di trasporto"/>
<title>Modalità di trasporto</title>
<text><list><item>Arrivato con mezzi propri</item><item>Inviato dallo specialista</item></list></text>
<entry><act classCode="TRNS" moodCode="EVN"><templateId root="2.16.840.1.113883.2.9.10.1.6.40"/>
<code code="3" codeSystem="2.16.840.1.113883.2.9.6.1.54.6" codeSystemName="ModalitàTrasporto_VPS" displayName="Autonomo (arrivato con mezzi propri)"/>
<statusCode code="completed"/>
<participant typeCode="REFB"><participantRole><code code="3" codeSystem="2.16.840.1.113883.2.9.6.1.54.1" codeSystemName="ResponsabileInvio_VPS" displayName="Specialista"/></participantRole></participant>
</act></entry></section></component>
<component><section ID="MOTIVO_DELLA_VISITA"><templateId root="2.16.840.1.113883.2.9.10.1.6.42"/>
<code code="46239-0" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Motivo della visita"/>
<title>Motivo della visita</title>
<text><list><item>Problema principale: Ipertensione arteriosa</item><item>{cause}</item></list></text>
<entry><observation classCode="OBS" moodCode="EVN"><templateId root="2.16.840.1.113883.2.9.10.1.6.37"/>
<code code="56817-0" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Problema all'accesso"/>
<statusCode code="completed"/>
<value xsi:type="CD" code="15" codeSystem="2.16.840.1.113883.2.9.6.1.54.2" codeSystemName="ProblemaPrincipale_VPS" displayName="Ipertensione Arteriosa"/>
</observation></entry>
<entry><observation classCode="OBS" moodCode="EVN"><templateId root="2.16.840.1.113883.2.9.10.1.6.87"/>
<code code="29298-7" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Ragione della visita"/>
<statusCode code="completed"/><value xsi:type="ST">{cause}</value>
</observation></entry></section></component>
<component><section ID="TRIAGE"><templateId root="2.16.840.1.113883.2.9.10.1.6.21"/>
<code code="54094-8" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Triage note"/>
<title>Triage</title>
<text><list><item>Codice {code_n} - {colour}</item><item>Valutazione alle {tri_hh}:{tri_mm}</item></list></text>
<entry><observation classCode="OBS" moodCode="EVN"><templateId root="2.16.840.1.113883.2.9.10.1.6.39"/>
<code code="11283-9" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Valutazione acutezza"/>
<statusCode code="completed"/><effectiveTime value="{triaged}"/>
<value xsi:type="CD" code="{code_n}" codeSystem="2.16.840.1.113883.2.9.6.1.54.4" codeSystemName="CodiceTriage_VPS" displayName="{colour}"/>
<performer typeCode="PRF">{nurse}</performer>
</observation></entry></section></component>
<component><section ID="PARAMETRI_VITALI"><templateId root="2.16.840.1.113883.2.9.10.1.6.28"/>
<code code="8716-3" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Parametri vitali"/>
<title>Parametri vitali</title><text><paragraph>{vitals}</paragraph></text></section></component>
<component><section ID="DECORSO"><templateId root="2.16.840.1.113883.2.9.10.1.6.23"/>
<code code="8648-8" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Decorso ospedaliero"/>
<title>Decorso in pronto soccorso</title><text><paragraph>{course}</paragraph></text></section></component>
<component><section ID="TERAPIA_PS"><templateId root="2.16.840.1.113883.2.9.10.1.6.29"/>
<code code="29549-3" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Terapia farmacologica in pronto soccorso"/>
<title>Terapia farmacologica in pronto soccorso</title><text><paragraph>{therapy}</paragraph></text></section></component>
<component><section ID="DIMISSIONE"><templateId root="2.16.840.1.113883.2.9.10.1.6.24"/>
<code code="28574-2" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Note di dimissione"/>
<title>Dimissione</title>
<text><list><item>Diagnosi: {dx_name} (ICD-9-CM {dx})</item><item>Esito: dimissione a domicilio</item><item>{advice}</item></list></text>
<entry><act classCode="ACT" moodCode="EVN"><templateId root="2.16.840.1.113883.2.9.10.1.6.66"/>
<code code="dimissione" codeSystem="2.16.840.1.113883.2.9.5.1.4"/>
<statusCode code="completed"/><effectiveTime value="{discharged}"/>
<performer>{doctor}</performer>
<entryRelationship typeCode="COMP"><observation classCode="OBS" moodCode="EVN"><templateId root="2.16.840.1.113883.2.9.10.1.6.70"/>
<code code="29308-4" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Diagnosi"/>
<statusCode code="completed"/><effectiveTime value="{discharged}"/>
<value xsi:type="CD" code="{dx}" codeSystem="2.16.840.1.113883.6.103" codeSystemName="ICD-9-CM" displayName="{dx_name}"/>
</observation></entryRelationship>
<entryRelationship typeCode="COMP"><observation classCode="OBS" moodCode="EVN"><templateId root="2.16.840.1.113883.2.9.10.1.6.69"/>
<code code="11302-7" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Esito"/>
<statusCode code="completed"/>
<value xsi:type="CD" code="1" codeSystem="2.16.840.1.113883.2.9.6.1.54.5" codeSystemName="EsitoTrattamento_VPS" displayName="Dimissione a domicilio"/>
</observation></entryRelationship>
</act></entry></section></component>"#,
        cause = esc(&v.cause),
        code_n = v.triage.0,
        tri_hh = &triaged[8..10],
        tri_mm = &triaged[10..12],
        nurse = performer_entity(nurse),
        doctor = performer_entity(doctor),
        vitals = esc(&v.vitals),
        course = esc(&v.course),
        therapy = esc(&v.therapy),
        dx_name = esc(dx_name),
        advice = esc(&v.advice),
    );
    document(&header, p, doctor, &body)
}

/// The entry of a radiology report's "Esame eseguito" section: the procedure (ICD-9-CM).
pub fn performed_procedure(code: &str, display: &str, on: Date) -> String {
    act_entry(code, "2.16.840.1.113883.6.103", "ICD-9-CM", display, on)
}

/// An act performed on `on`, coded in `system`.
pub fn act_entry(code: &str, system: &str, system_name: &str, display: &str, on: Date) -> String {
    format!(
        r#"<entry><act moodCode="EVN" classCode="ACT"><code code="{code}" displayName="{}" codeSystem="{system}" codeSystemName="{system_name}"/><statusCode code="completed"/><effectiveTime value="{}"/></act></entry>"#,
        esc(display),
        ts(on, 10, 30)
    )
}

/// OID of the NRE (prescription numbers, Ministero dell'Economia e delle Finanze).
pub const NRE_OID: &str = "2.16.840.1.113883.2.9.4.3.9";

/// A drug as prescribed: AIC and ATC codes, name, packs, the diagnosis it is for (ICD-9-CM).
#[derive(Debug, Clone)]
pub struct Drug {
    pub aic: &'static str,
    pub atc: &'static str,
    /// The active ingredient (the ATC substance's Italian name).
    pub ingredient: &'static str,
    pub name: &'static str,
    pub packs: u32,
    pub diagnosis: (&'static str, &'static str),
}

/// A pharmaceutical prescription (Prescrizione farmaceutica, template
/// 2.16.840.1.113883.2.9.10.1.2.1): its id is the NRE; exemption, drugs, notes.
pub fn drug_prescription(nre: &str, p: &Person, gp: &Author, on: Date, drugs: &[Drug], exemption: Option<(&str, &str)>) -> String {
    let when = ts(on, 9, 15);
    let id_section =
        |s: &str| format!(r#"<id root="{NRE_OID}" extension="{nre}" assigningAuthorityName="Ministero delle Finanze"/><!-- {s} -->"#);
    let header = Header {
        id_root: Some(NRE_OID),
        code_translation: r#"<translation code="PRESC_FARMA" codeSystem="2.16.840.1.113883.2.9.5.2.1" displayName="Prescrizione farmaceutica"><qualifier><name code="TR" codeSystem="2.16.840.1.113883.2.9.5.2.1"/><value code="N" codeSystem="2.16.840.1.113883.2.9.5.2.1"/></qualifier></translation>"#.into(),
        ..Header::new(("2.16.840.1.113883.2.9.10.1.2.1", "4.6"), ("57833-6", "Prescrizione farmaceutica"), nre, &when, &when)
    };
    let (ex_code, ex_name) = exemption.unwrap_or(("NE", "Non esente"));
    let exemption_xml = format!(
        r##"<component><section>{id}
<code code="57827-8" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Esenzioni"/>
<title>Esenzioni</title>
<text><paragraph ID="ESENZIONE">{ex_code} - {ex_name}</paragraph></text>
<entry><act classCode="ACT" moodCode="EVN"><code code="{ex_code}" codeSystem="2.16.840.1.113883.2.9.6.1.22" codeSystemName="Catalogo esenzioni" displayName="{ex_name}"><originalText><reference value="#ESENZIONE"/></originalText></code></act></entry>
</section></component>"##,
        id = id_section("esenzioni"),
        ex_name = esc(ex_name),
    );
    let mut rows = String::new();
    let mut entries = String::new();
    for (i, d) in drugs.iter().enumerate() {
        rows.push_str(&format!(
            r#"<tr ID="FARMACO_{i}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            d.aic,
            esc(d.name),
            esc(d.ingredient),
            d.packs,
            esc(d.diagnosis.1)
        ));
        entries.push_str(&format!(
            r##"<entry><substanceAdministration classCode="SBADM" moodCode="RQO">
<effectiveTime xsi:type="IVL_TS"><low value="{day}"/></effectiveTime>
<consumable><manufacturedProduct><manufacturedMaterial><code code="{aic}" codeSystem="2.16.840.1.113883.2.9.6.1.5" codeSystemName="AIC" displayName="{name}"><originalText><reference value="#FARMACO_{i}"/></originalText><translation code="{atc}" codeSystem="2.16.840.1.113883.6.73" codeSystemName="ATC" displayName="{ingredient}"/></code></manufacturedMaterial></manufacturedProduct></consumable>
<entryRelationship typeCode="COMP"><supply classCode="SPLY" moodCode="RQO"><independentInd value="false"/><quantity value="{packs}"/></supply></entryRelationship>
<entryRelationship typeCode="RSON"><observation classCode="OBS" moodCode="EVN"><code code="{dx}" codeSystem="2.16.840.1.113883.6.103" codeSystemName="ICD-9-CM" displayName="{dx_name}"/></observation></entryRelationship>
</substanceAdministration></entry>"##,
            day = day(on),
            aic = d.aic,
            name = esc(d.name),
            atc = d.atc,
            ingredient = esc(d.ingredient),
            packs = d.packs,
            dx = d.diagnosis.0,
            dx_name = esc(d.diagnosis.1),
        ));
    }
    let prescriptions = format!(
        r#"<component><section>{id}
<code code="57828-6" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Prescrizioni"/>
<title>Prescrizioni</title>
<text><table><thead><tr><th>AIC</th><th>Farmaco</th><th>Principio attivo</th><th>Confezioni</th><th>Diagnosi</th></tr></thead><tbody>{rows}</tbody></table></text>
{entries}
</section></component>"#,
        id = id_section("prescrizioni"),
    );
    let notes = format!(
        r##"<component><section>{id}
<code code="48767-8" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Annotazioni"/>
<title>Annotazioni</title>
<text><paragraph ID="NOTA">Ricetta dematerializzata: promemoria consegnato all'assistito.</paragraph></text>
<entry><act classCode="ACT" moodCode="EVN"><code code="48767-8" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Annotazioni"/><text><reference value="#NOTA"/></text></act></entry>
</section></component>"##,
        id = id_section("annotazioni"),
    );
    document(&header, p, gp, &format!("{exemption_xml}\n{prescriptions}\n{notes}"))
}

#[cfg(test)]
mod tests {
    use super::ts;
    use time::macros::date;

    /// A summer document says +0200: the same 11:30 that the clinic's clock showed, which every
    /// reader (the rendering, its PDF, the portal) shows as 11:30 in Rome.
    #[test]
    fn document_times_carry_romes_offset_of_their_day() {
        assert_eq!(ts(date!(2026 - 08 - 14), 11, 30), "20260814113000+0200");
        assert_eq!(ts(date!(2026 - 01 - 14), 11, 30), "20260114113000+0100");
        // the change-over nights: 02:30 in spring does not exist (03:30 summer time); in autumn
        // it happens twice and the first is taken
        assert_eq!(ts(date!(2026 - 03 - 29), 2, 30), "20260329033000+0200");
        assert_eq!(ts(date!(2026 - 10 - 25), 2, 30), "20261025023000+0200");
        assert_eq!(ts(date!(2026 - 10 - 25), 3, 30), "20261025033000+0100");
    }
}
