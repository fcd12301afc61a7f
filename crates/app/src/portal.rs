//! The citizen portal's use cases: the citizen's documents, results, Taccuino, access log and
//! document index, read and written through the same gate as the FHIR API (every call goes
//! through [`FhirService`]; nothing here reads the store directly). Whoever signs in sees exactly
//! what the gate lets them see: a clinician's session gets the clinician's view, a parent's the
//! child's record with the child's hiding rules.

use crate::fhir::FhirService;
use crate::{Actor, AppError, AppResult, Who};
use fascicolo_domain::privacy::labels;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// Marks what the citizen wrote in their Taccuino.
pub const TACCUINO_TAG: &str = "urn:fascicolo:taccuino";
const LOINC: &str = "http://loinc.org";
/// Largest number of items a list reads (pages of [`fascicolo_fhir::search::MAX_COUNT`]).
const MAX_ITEMS: usize = 20_000;

/// One document in the citizen's list.
#[derive(Debug, Clone, Default)]
pub struct DocSummary {
    pub id: String,
    pub title: String,
    /// Document type (LOINC display) and code.
    pub type_display: String,
    pub type_code: String,
    pub class_code: String,
    pub date: String,
    /// Producing organisation (structure).
    pub organization: String,
    pub author: String,
    /// Hiding codes the citizen applied or the producer set (P99, P97...): the citizen sees them.
    pub hiding: Vec<String>,
    /// When the platform stored it (ms since the epoch).
    pub stored_at: i64,
    /// Unchanged since publication (a later hiding or metadata change does not make it new).
    pub first_version: bool,
    pub nre: Option<String>,
    pub identifier: String,
    pub taccuino: bool,
    /// The platform keeps the original (a published CDA or FHIR document): rendering, PDF.
    pub has_original: bool,
    /// The resource carries its file inline (a Taccuino file, a FHIR-only document's PDF).
    pub has_file: bool,
}

impl DocSummary {
    /// Whether the document can be opened with its content: a document the portal cannot show
    /// (an address elsewhere, no attachment at all) is not listed.
    pub fn opens(&self) -> bool {
        self.has_original || self.has_file
    }
}

/// Filters of the document list (every field optional).
#[derive(Debug, Clone, Default)]
pub struct DocFilter {
    pub text: Option<String>,
    pub type_code: Option<String>,
    /// `YYYY-MM-DD`, inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    pub organization: Option<String>,
}

impl DocSummary {
    /// Published after the person's previous visit to the list.
    pub fn is_new(&self, last_seen: i64) -> bool {
        last_seen > 0 && self.first_version && self.stored_at > last_seen
    }
}

impl DocFilter {
    /// Whether a document passes the filter; the text is also searched in `inside` (the names
    /// of the results the document carries).
    fn matches_with(&self, d: &DocSummary, inside: &str) -> bool {
        let day = d.date.get(..10).unwrap_or_default();
        if self.type_code.as_deref().is_some_and(|t| !t.is_empty() && t != d.type_code) {
            return false;
        }
        if self.organization.as_deref().is_some_and(|o| !o.is_empty() && o != d.organization) {
            return false;
        }
        if self.from.as_deref().is_some_and(|f| !f.is_empty() && day < f) {
            return false;
        }
        if self.to.as_deref().is_some_and(|t| !t.is_empty() && day > t) {
            return false;
        }
        match self.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => true,
            Some(t) => {
                let hay =
                    format!("{} {} {} {} {} {inside}", d.title, d.type_display, d.organization, d.author, d.nre.as_deref().unwrap_or(""))
                        .to_lowercase();
                t.to_lowercase().split_whitespace().all(|w| hay.contains(w) || lay_synonyms(w).iter().any(|s| hay.contains(s)))
            }
        }
    }
}

/// The words a laboratory prints for what people call otherwise ("glicemia" is glucose).
fn lay_synonyms(word: &str) -> &'static [&'static str] {
    match word {
        "glicemia" => &["glucosio"],
        "emocromo" => &["emoglobina", "leucociti", "piastrine", "eritrociti"],
        "lipidi" | "lipidico" => &["colesterolo", "trigliceridi"],
        "transaminasi" => &["aminotransferasi"],
        _ => &[],
    }
}

/// The citizen's documents after filtering, newest first, with what the filter form offers.
#[derive(Debug, Clone, Default)]
pub struct DocList {
    pub all: usize,
    pub items: Vec<DocSummary>,
    /// Types present in the record: (code, display, count).
    pub types: Vec<(String, String, usize)>,
    pub organizations: Vec<String>,
}

/// A document with its versions. Only the app layer makes one, from a read through the gate
/// (`non_exhaustive`: no other crate can write one), so a service given one may use its
/// resource without reading it again.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DocDetail {
    pub doc: DocSummary,
    /// Earlier versions this one replaced, newest first: (id, date stored).
    pub replaced: Vec<(String, i64)>,
    pub status: String,
    pub resource: Value,
}

/// One measured value.
#[derive(Debug, Clone, Default)]
pub struct Point {
    /// `YYYY-MM-DD…` as recorded.
    pub when: String,
    pub value: f64,
    pub unit: String,
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// The range as the laboratory wrote it, when its bounds are strict ("< 200 mg/dL").
    pub range_text: Option<String>,
    /// H, L, HH, LL, A...
    pub flag: Option<String>,
    /// Who measured it: the laboratory (organisation of its document) or "Taccuino".
    pub source: String,
    pub document: Option<String>,
    pub taccuino: bool,
    /// The Observation's id.
    pub id: String,
    /// Hidden from clinicians (P99).
    pub hidden: bool,
}

impl Point {
    /// Outside its own reference range (or flagged by the laboratory).
    pub fn out_of_range(&self) -> bool {
        self.flag.as_deref().is_some_and(|f| f != "N")
            || self.low.is_some_and(|l| self.value < l)
            || self.high.is_some_and(|h| self.value > h)
    }
}

/// A panel of results measured together (blood pressure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Panel {
    pub code: String,
    pub name: String,
    /// This component's place in the panel (systolic before diastolic).
    pub position: usize,
}

/// The values of one code over time, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub code: String,
    pub name: String,
    /// The panel this value is a component of (blood pressure: systolic and diastolic).
    pub panel: Option<Panel>,
    pub points: Vec<Point>,
}

impl Series {
    pub fn last(&self) -> Option<&Point> {
        self.points.last()
    }
    /// Indexes of the points where the unit differs from the previous point's.
    pub fn unit_changes(&self) -> Vec<usize> {
        (1..self.points.len()).filter(|&i| self.points[i].unit != self.points[i - 1].unit).collect()
    }
    /// Indexes of the points measured by another laboratory than the previous laboratory value
    /// (a Taccuino measurement, or a value whose laboratory is not known, changes nothing).
    pub fn source_changes(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut last: Option<&str> = None;
        for (i, p) in self.points.iter().enumerate() {
            if p.taccuino || p.source.is_empty() {
                continue;
            }
            if last.is_some_and(|l| l != p.source) {
                out.push(i);
            }
            last = Some(&p.source);
        }
        out
    }
}

/// One entry of the access log.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub when: String,
    pub who: String,
    /// The administrative gender of the person who looked, when the registry has it (for
    /// "infermiera", "delegata"); empty otherwise.
    pub who_gender: String,
    pub role: String,
    pub organization: String,
    pub purpose: String,
    pub action: String,
    pub emergency: bool,
    pub reason: String,
    pub on_behalf: bool,
    /// A bulk export by the platform (`what` then lists at most 50 of what left, documents first).
    pub export: bool,
    /// The resources looked at (references).
    pub what: Vec<String>,
}

/// A Taccuino measurement the citizen enters.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub kind: MeasureKind,
    pub value: f64,
    /// Second value (diastolic pressure).
    pub value2: Option<f64>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDThh:mm`, Europe/Rome.
    pub when: String,
    pub note: String,
    /// Clinicians may see it.
    pub share: bool,
}

/// What a citizen can measure at home: LOINC code, Italian and English name, UCUM unit, plausible range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureKind {
    Weight,
    BloodPressure,
    Glucose,
    HeartRate,
    Temperature,
    Saturation,
}

impl MeasureKind {
    pub const ALL: [MeasureKind; 6] = [
        MeasureKind::Weight,
        MeasureKind::BloodPressure,
        MeasureKind::Glucose,
        MeasureKind::HeartRate,
        MeasureKind::Temperature,
        MeasureKind::Saturation,
    ];
    pub fn slug(self) -> &'static str {
        match self {
            MeasureKind::Weight => "weight",
            MeasureKind::BloodPressure => "blood-pressure",
            MeasureKind::Glucose => "glucose",
            MeasureKind::HeartRate => "heart-rate",
            MeasureKind::Temperature => "temperature",
            MeasureKind::Saturation => "saturation",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.slug() == s)
    }
    /// (LOINC, Italian, English, unit)
    pub fn info(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            MeasureKind::Weight => ("29463-7", "Peso corporeo", "Body weight", "kg"),
            MeasureKind::BloodPressure => ("85354-9", "Pressione arteriosa", "Blood pressure", "mm[Hg]"),
            MeasureKind::Glucose => ("2339-0", "Glicemia (autocontrollo)", "Blood glucose (self-test)", "mg/dL"),
            MeasureKind::HeartRate => ("8867-4", "Frequenza cardiaca", "Heart rate", "/min"),
            MeasureKind::Temperature => ("8310-5", "Temperatura corporea", "Body temperature", "Cel"),
            MeasureKind::Saturation => ("59408-5", "Saturazione di ossigeno", "Oxygen saturation", "%"),
        }
    }
    /// Values a person can have: outside is a typing error.
    pub fn plausible(self) -> (f64, f64) {
        match self {
            MeasureKind::Weight => (0.5, 400.0),
            MeasureKind::BloodPressure => (40.0, 300.0),
            MeasureKind::Glucose => (10.0, 1000.0),
            MeasureKind::HeartRate => (20.0, 250.0),
            MeasureKind::Temperature => (30.0, 45.0),
            MeasureKind::Saturation => (50.0, 100.0),
        }
    }
}

/// A problem with one field of a form: (field, Italian message, English message).
pub type FieldError = (&'static str, &'static str, &'static str);

/// The portal's use cases.
#[derive(Clone)]
pub struct Portal {
    fhir: FhirService,
}

pub(crate) fn parse_json(json: &str) -> Value {
    parse(json)
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

/// What a document summary reads; the rest (inline attachments above all) is skipped unparsed.
#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LeanDocument {
    id: Value,
    status: Value,
    #[serde(rename = "type")]
    kind: Value,
    category: Value,
    date: Value,
    description: Value,
    author: Value,
    custodian: Value,
    context: Value,
    master_identifier: Value,
    meta: Value,
    content: Vec<LeanContent>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct LeanContent {
    attachment: LeanAttachment,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LeanAttachment {
    url: Option<String>,
    title: Option<String>,
    /// Present or not: the file itself is skipped unread.
    data: Option<serde::de::IgnoredAny>,
    content_type: Option<String>,
}

pub(crate) fn lean_document(json: &str) -> Value {
    let d: LeanDocument = serde_json::from_str(json).unwrap_or_default();
    let a = d.content.into_iter().next().map(|c| c.attachment).unwrap_or_default();
    json!({"id": d.id, "status": d.status, "type": d.kind, "category": d.category, "date": d.date, "description": d.description,
        "author": d.author, "custodian": d.custodian, "context": d.context, "masterIdentifier": d.master_identifier, "meta": d.meta,
        // an inline file is marked by an empty `data` (what a summary needs to know of it)
        "content": [{"attachment": {"url": a.url, "title": a.title, "contentType": a.content_type, "data": a.data.map(|_| "")}}]})
}

/// What a result point reads of an Observation (its narrative and the rest are skipped).
#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LeanObservation {
    id: Value,
    code: Value,
    effective_date_time: Value,
    effective_period: Value,
    value_quantity: Value,
    component: Value,
    reference_range: Value,
    interpretation: Value,
    meta: Value,
}

fn lean_observation(json: &str) -> Value {
    let o: LeanObservation = serde_json::from_str(json).unwrap_or_default();
    let mut v =
        json!({"id": o.id, "code": o.code, "referenceRange": o.reference_range, "interpretation": o.interpretation, "meta": o.meta});
    for (k, x) in [
        ("effectiveDateTime", o.effective_date_time),
        ("effectivePeriod", o.effective_period),
        ("valueQuantity", o.value_quantity),
        ("component", o.component),
    ] {
        if !x.is_null() {
            v[k] = x;
        }
    }
    v
}

fn coding_of(cc: &Value, system: Option<&str>) -> (String, String) {
    let codings = cc["coding"].as_array().cloned().unwrap_or_default();
    let c = codings.iter().find(|c| system.is_none_or(|s| c["system"] == s)).or(codings.first()).cloned().unwrap_or(Value::Null);
    let code = c["code"].as_str().unwrap_or_default().to_string();
    let display = c["display"].as_str().or(cc["text"].as_str()).unwrap_or(&code).to_string();
    (code, display)
}

fn is_taccuino(v: &Value) -> bool {
    v["meta"]["tag"].as_array().is_some_and(|t| t.iter().any(|c| c["system"] == TACCUINO_TAG))
}

fn hiding_codes(v: &Value) -> Vec<String> {
    crate::access::meta_codes(v, "security", labels::HIDING)
}

fn stored_at(v: &Value) -> i64 {
    v["meta"]["lastUpdated"].as_str().and_then(fascicolo_fhir::datetime::parse).map_or(0, |(r, _)| r.low)
}

impl Portal {
    pub fn new(fhir: FhirService) -> Self {
        Portal { fhir }
    }

    pub fn fhir(&self) -> &FhirService {
        &self.fhir
    }

    /// Whose record the actor is looking at.
    pub fn record_of(actor: &Actor) -> AppResult<String> {
        match (&actor.who, &actor.acting_for) {
            (Who::Citizen { .. }, Some(p)) => Ok(p.clone()),
            (Who::Citizen { .. }, None) => Err(AppError::NotFound("this person has no record in the regional registry".into())),
            _ => Err(AppError::Forbidden("the citizen portal is for citizens, parents and delegates".into())),
        }
    }

    /// Every resource of a search in the record the actor acts on, following the pages (the gate
    /// confines a citizen's, parent's or delegate's search to that record, filters and logs each
    /// page). No `patient=` parameter: the partition already is the patient, and the extra
    /// reference join only slows the query down.
    async fn all(&self, actor: &Actor, rt: &str, pairs: Vec<(String, String)>) -> AppResult<Vec<Value>> {
        self.all_as(actor, rt, pairs, parse).await
    }

    /// [`Self::all`] with each resource's JSON turned into what the caller needs.
    pub(crate) async fn all_as<T>(
        &self,
        actor: &Actor,
        rt: &str,
        mut pairs: Vec<(String, String)>,
        map: impl Fn(&str) -> T,
    ) -> AppResult<Vec<T>> {
        pairs.push(("_count".into(), fascicolo_fhir::search::MAX_COUNT.to_string()));
        let mut out = Vec::new();
        loop {
            let page = self.fhir.search(actor, Some(rt), &pairs, "").await?;
            out.extend(page.entries.iter().filter(|e| e.2 == "match").map(|e| map(&e.1)));
            let next = page.links.iter().find(|l| l["relation"] == "next").and_then(|l| l["url"].as_str()).map(String::from);
            let Some(next) = next else { break };
            if out.len() >= MAX_ITEMS {
                break;
            }
            let cursor = next.split_once('?').map(|(_, q)| q).unwrap_or_default();
            let Some((_, c)) = form_urlencoded::parse(cursor.as_bytes()).find(|(k, _)| k == "_cursor") else { break };
            pairs.retain(|(k, _)| k != "_cursor");
            pairs.push(("_cursor".into(), c.into_owned()));
        }
        Ok(out)
    }

    /// The Patient resource of the record (name, birth date, codice fiscale).
    pub async fn patient(&self, actor: &Actor) -> AppResult<Value> {
        let id = Self::record_of(actor)?;
        Ok(self.fhir.read(actor, "Patient", &id).await?.resource)
    }

    /// Organisation names by id (shared resources: one search).
    pub(crate) async fn organization_names(&self, actor: &Actor, ids: impl Iterator<Item = String>) -> HashMap<String, String> {
        let mut ids: Vec<String> = ids.collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return HashMap::new();
        }
        let pairs = vec![("_id".to_string(), ids.join(",")), ("_count".into(), "1000".into())];
        let Ok(page) = self.fhir.search(actor, Some("Organization"), &pairs, "").await else { return HashMap::new() };
        page.entries
            .iter()
            .map(|e| parse(&e.1))
            .filter_map(|o| Some((o["id"].as_str()?.to_string(), o["name"].as_str()?.to_string())))
            .collect()
    }

    /// The name of the organisation a signed-in professional works for (registry facts,
    /// public), for their profile bar; `None` when the registry does not name it.
    pub async fn organization_name(&self, actor: &Actor, id: &str) -> Option<String> {
        if !matches!(actor.who, Who::Professional { .. }) {
            return None;
        }
        self.organization_names(actor, std::iter::once(id.to_string())).await.remove(id)
    }

    pub(crate) fn summary(v: &Value, orgs: &HashMap<String, String>) -> DocSummary {
        let (type_code, type_display) = coding_of(&v["type"], Some(LOINC));
        let org_id = v["custodian"]["reference"].as_str().and_then(|r| r.strip_prefix("Organization/")).unwrap_or_default();
        let author = v["author"].as_array().into_iter().flatten().find_map(|a| a["display"].as_str()).unwrap_or_default();
        let nre = v["context"]["related"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["identifier"]["system"].as_str().is_some_and(|s| s.ends_with(fascicolo_cda::mapping::NRE_OID)))
            .and_then(|r| r["identifier"]["value"].as_str())
            .map(String::from);
        DocSummary {
            id: v["id"].as_str().unwrap_or_default().to_string(),
            title: v["description"].as_str().or(v["content"][0]["attachment"]["title"].as_str()).unwrap_or(&type_display).to_string(),
            type_display,
            type_code,
            class_code: v["category"][0]["coding"][0]["code"].as_str().unwrap_or_default().to_string(),
            date: v["date"].as_str().unwrap_or_default().to_string(),
            organization: orgs.get(org_id).cloned().or_else(|| v["custodian"]["display"].as_str().map(String::from)).unwrap_or_default(),
            author: author.to_string(),
            hiding: hiding_codes(v),
            stored_at: stored_at(v),
            first_version: v["meta"]["versionId"].as_str().is_none_or(|n| n == "1"),
            nre,
            identifier: v["masterIdentifier"]["value"].as_str().unwrap_or_default().to_string(),
            taccuino: is_taccuino(v),
            // the original this platform keeps (an address elsewhere cannot be fetched from here)
            has_original: v["content"][0]["attachment"]["url"]
                .as_str()
                .is_some_and(|u| v["id"].as_str().is_some_and(|id| u.ends_with(&format!("/documents/{id}/original")))),
            has_file: v["content"][0]["attachment"]["data"].is_string(),
        }
    }

    /// The record's current documents the actor may see, newest first, filtered.
    pub async fn documents(&self, actor: &Actor, filter: &DocFilter) -> AppResult<DocList> {
        Self::record_of(actor)?;
        // filtered and sorted here: the store's date sort costs more than sorting a thousand
        // summaries in memory (bench-portal); only the fields a summary shows are parsed
        let docs = self.all_as(actor, "DocumentReference", Vec::new(), lean_document).await?;
        let docs: Vec<Value> = docs.into_iter().filter(|d| d["status"] == "current").collect();
        let orgs = self
            .organization_names(
                actor,
                docs.iter().filter_map(|d| d["custodian"]["reference"].as_str()?.strip_prefix("Organization/").map(String::from)),
            )
            .await;
        let mut all: Vec<DocSummary> = docs.iter().map(|d| Self::summary(d, &orgs)).filter(DocSummary::opens).collect();
        all.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| b.stored_at.cmp(&a.stored_at)));
        let mut types: BTreeMap<String, (String, usize)> = BTreeMap::new();
        let mut organizations: Vec<String> = Vec::new();
        for d in &all {
            // grouped under the national name of the type, not the first document's own title
            let e = types.entry(d.type_code.clone()).or_insert_with(|| {
                (fascicolo_cda::catalog::name_by_loinc(&d.type_code).map_or_else(|| d.type_display.clone(), String::from), 0)
            });
            e.1 += 1;
            if !d.organization.is_empty() && !organizations.contains(&d.organization) {
                organizations.push(d.organization.clone());
            }
        }
        organizations.sort();
        let mut types: Vec<(String, String, usize)> = types.into_iter().map(|(c, (d, n))| (c, d, n)).collect();
        types.sort_by(|a, b| a.1.cmp(&b.1));
        let count = all.len();
        // a text search also looks inside: the names of the results a report carries
        let inside = match filter.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Some(_) => self.result_names_by_document(actor).await?,
            None => HashMap::new(),
        };
        let items = all.into_iter().filter(|d| filter.matches_with(d, inside.get(&d.id).map(String::as_str).unwrap_or_default())).collect();
        Ok(DocList { all: count, items, types, organizations })
    }

    /// The names of the results each document carries (Observation codes, by document id),
    /// lower case, for the text search.
    async fn result_names_by_document(&self, actor: &Actor) -> AppResult<HashMap<String, String>> {
        let obs = self.all_as(actor, "Observation", Vec::new(), lean_observation).await?;
        let mut out: HashMap<String, String> = HashMap::new();
        for o in &obs {
            let Some(doc) = o["meta"]["tag"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["system"] == labels::DOCUMENT))
                .and_then(|t| t["code"].as_str())
                .and_then(|d| d.strip_prefix("DocumentReference/"))
            else {
                continue;
            };
            let (_, name) = coding_of(&o["code"], Some(LOINC));
            let e = out.entry(doc.to_string()).or_default();
            e.push(' ');
            e.push_str(&name.to_lowercase());
        }
        Ok(out)
    }

    /// One document with the versions it replaced.
    pub async fn document(&self, actor: &Actor, id: &str) -> AppResult<DocDetail> {
        let v = self.fhir.read(actor, "DocumentReference", id).await?.resource;
        let org = v["custodian"]["reference"].as_str().and_then(|r| r.strip_prefix("Organization/")).map(String::from);
        let orgs = self.organization_names(actor, org.into_iter()).await;
        let mut replaced = Vec::new();
        let mut prev = v["relatesTo"].as_array().and_then(|r| r.iter().find(|x| x["code"] == "replaces")).cloned();
        while let Some(p) = prev.take() {
            let Some(pid) = p["target"]["reference"].as_str().and_then(|r| r.strip_prefix("DocumentReference/")) else { break };
            if replaced.len() > 50 || replaced.iter().any(|(r, _)| r == pid) {
                break;
            }
            match self.fhir.read(actor, "DocumentReference", pid).await {
                Ok(old) => {
                    replaced.push((pid.to_string(), stored_at(&old.resource)));
                    prev = old.resource["relatesTo"].as_array().and_then(|r| r.iter().find(|x| x["code"] == "replaces")).cloned();
                }
                Err(_) => break,
            }
        }
        Ok(DocDetail { doc: Self::summary(&v, &orgs), replaced, status: v["status"].as_str().unwrap_or_default().to_string(), resource: v })
    }

    /// Every numeric result of the record by code (laboratory and Taccuino), oldest first.
    /// `code` limits the search to one code.
    /// `sources`: name the laboratory of each value (one more lookup per 200 reports).
    pub async fn results(&self, actor: &Actor, code: Option<&str>, sources: bool) -> AppResult<Vec<Series>> {
        Self::record_of(actor)?;
        self.results_in(actor, Vec::new(), code, sources).await
    }

    /// [`Self::results`] for a search already confined to one record (`patient=` for a
    /// clinician; nothing for a citizen, whose partition is the record).
    pub(crate) async fn results_in(
        &self,
        actor: &Actor,
        mut pairs: Vec<(String, String)>,
        code: Option<&str>,
        sources: bool,
    ) -> AppResult<Vec<Series>> {
        // the same confinement for the laboratories' reports looked up below
        let scope = pairs.clone();
        // sorted below, in memory: the store's date sort is far slower for thousands of rows
        // a code is a result's own or a panel component's (systolic pressure): combo-code
        pairs.extend(code.map(|c| ("combo-code".to_string(), c.to_string())));
        let obs = self.all_as(actor, "Observation", pairs, lean_observation).await?;
        // the laboratory of a result is the custodian of its document
        let docs: Vec<String> = obs
            .iter()
            .filter_map(|o| {
                o["meta"]["tag"].as_array()?.iter().find(|t| t["system"] == labels::DOCUMENT)?["code"].as_str().map(String::from)
            })
            .collect();
        let mut lab_of: HashMap<String, String> = HashMap::new();
        let mut doc_ids: Vec<String> = docs.iter().filter_map(|d| d.strip_prefix("DocumentReference/").map(String::from)).collect();
        doc_ids.sort();
        doc_ids.dedup();
        if sources && !doc_ids.is_empty() {
            let mut refs = Vec::new();
            for chunk in doc_ids.chunks(200) {
                let mut pairs = scope.clone();
                pairs.extend([("_id".into(), chunk.join(",")), ("_count".into(), "1000".into())]);
                for e in self.fhir.search(actor, Some("DocumentReference"), &pairs, "").await?.entries {
                    let d = parse(&e.1);
                    if let (Some(id), Some(org)) = (d["id"].as_str(), d["custodian"]["reference"].as_str()) {
                        refs.push((id.to_string(), org.trim_start_matches("Organization/").to_string()));
                    }
                }
            }
            let names = self.organization_names(actor, refs.iter().map(|(_, o)| o.clone())).await;
            for (id, org) in refs {
                lab_of.insert(format!("DocumentReference/{id}"), names.get(&org).cloned().unwrap_or(org));
            }
        }
        let mut by_code: BTreeMap<String, Series> = BTreeMap::new();
        for o in &obs {
            let taccuino = is_taccuino(o);
            let (c, name) = coding_of(&o["code"], Some(LOINC));
            let when = o["effectiveDateTime"].as_str().or(o["effectivePeriod"]["start"].as_str()).unwrap_or_default().to_string();
            let doc = o["meta"]["tag"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["system"] == labels::DOCUMENT))
                .and_then(|t| t["code"].as_str())
                .map(String::from);
            let source =
                if taccuino { "Taccuino".to_string() } else { doc.as_ref().and_then(|d| lab_of.get(d).cloned()).unwrap_or_default() };
            let flag = o["interpretation"][0]["coding"][0]["code"].as_str().map(String::from);
            let range = &o["referenceRange"][0];
            let mut push = |code: String, name: String, q: &Value, panel: Option<Panel>| {
                let Some(value) = q["value"].as_f64() else { return };
                let s = by_code.entry(code.clone()).or_insert_with(|| Series { code, name, panel, points: Vec::new() });
                s.points.push(Point {
                    when: when.clone(),
                    value,
                    unit: q["unit"].as_str().or(q["code"].as_str()).unwrap_or_default().to_string(),
                    low: range["low"]["value"].as_f64(),
                    high: range["high"]["value"].as_f64(),
                    range_text: range["text"].as_str().map(String::from),
                    flag: flag.clone(),
                    source: source.clone(),
                    document: doc.clone(),
                    taccuino,
                    id: o["id"].as_str().unwrap_or_default().to_string(),
                    hidden: hiding_codes(o).iter().any(|h| h == "P99"),
                });
            };
            if o["valueQuantity"].is_object() {
                push(c.clone(), name.clone(), &o["valueQuantity"], None);
            }
            // blood pressure and other panels: one series per component
            for (position, comp) in o["component"].as_array().into_iter().flatten().enumerate() {
                if comp["valueQuantity"].is_object() {
                    let (cc, cn) = coding_of(&comp["code"], Some(LOINC));
                    push(cc, cn, &comp["valueQuantity"], Some(Panel { code: c.clone(), name: name.clone(), position }));
                }
            }
        }
        let mut out: Vec<Series> = by_code.into_values().collect();
        for s in &mut out {
            s.points.sort_by(|a, b| a.when.cmp(&b.when));
        }
        out.sort_by_key(|a| a.name.to_lowercase());
        Ok(out)
    }

    /// Check a Taccuino measurement: every problem, by field.
    pub fn check_measurement(m: &Measurement) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let (lo, hi) = m.kind.plausible();
        if !m.value.is_finite() || m.value < lo || m.value > hi {
            errs.push((
                "value",
                "Il valore è fuori dall'intervallo possibile per questa misura.",
                "The value is outside the possible range for this measurement.",
            ));
        }
        if m.kind == MeasureKind::BloodPressure {
            match m.value2 {
                Some(d) if d.is_finite() && (20.0..=200.0).contains(&d) && d < m.value => {}
                Some(_) => errs.push((
                    "value2",
                    "La minima deve essere tra 20 e 200 e inferiore alla massima.",
                    "The diastolic value must be between 20 and 200 and below the systolic one.",
                )),
                None => errs.push(("value2", "Indica anche la pressione minima.", "Enter the diastolic pressure too.")),
            }
        }
        if fascicolo_fhir::datetime::parse(&m.when).is_none() || m.when.len() < 10 {
            errs.push((
                "when",
                "Indica la data (e se vuoi l'ora) della misura.",
                "Enter the date (and, if you wish, the time) of the measurement.",
            ));
        } else if m
            .when
            .get(..10)
            .is_some_and(|d| d > fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms()).get(..10).unwrap_or(""))
        {
            errs.push(("when", "La data non può essere nel futuro.", "The date cannot be in the future."));
        }
        if m.note.chars().count() > 2000 {
            errs.push(("note", "La nota è troppo lunga (al massimo 2000 caratteri).", "The note is too long (2000 characters at most)."));
        }
        errs
    }

    /// Store a Taccuino measurement as an Observation of the record (hidden from clinicians
    /// unless the citizen shares it), in one write.
    pub async fn add_measurement(&self, actor: &Actor, m: &Measurement) -> Result<String, Result<Vec<FieldError>, AppError>> {
        let errs = Self::check_measurement(m);
        if !errs.is_empty() {
            return Err(Ok(errs));
        }
        let patient = Self::record_of(actor).map_err(Err)?;
        let (loinc, it, _, unit) = m.kind.info();
        let when = if m.when.len() == 16 { format!("{}:00+01:00", m.when) } else { m.when.clone() };
        let q = |v: f64| json!({"value": v, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit});
        let mut o = json!({"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": loinc, "display": it}], "text": it},
            "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": when,
            "performer": [{"reference": format!("Patient/{patient}")}],
            "meta": {"tag": [{"system": TACCUINO_TAG, "code": "measurement"}]}});
        if m.kind == MeasureKind::BloodPressure {
            o["component"] = json!([
                {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Pressione sistolica"}]}, "valueQuantity": q(m.value)},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Pressione diastolica"}]}, "valueQuantity": q(m.value2.unwrap_or_default())}
            ]);
        } else {
            o["valueQuantity"] = q(m.value);
        }
        if !m.note.trim().is_empty() {
            o["note"] = json!([{"text": m.note.trim()}]);
        }
        if !m.share {
            o["meta"]["security"] = json!([{"system": labels::HIDING, "code": "P99"}]);
        }
        let out = self.fhir.create(actor, "Observation", o.to_string().as_bytes(), None).await.map_err(Err)?;
        Ok(out.version.id)
    }

    /// Store a Taccuino note or an uploaded file as a DocumentReference of class TAC.
    pub async fn add_taccuino_document(
        &self,
        actor: &Actor,
        title: &str,
        content_type: &str,
        bytes: &[u8],
        share: bool,
    ) -> Result<String, Result<Vec<FieldError>, AppError>> {
        let mut errs = Vec::new();
        if title.trim().is_empty() || title.chars().count() > 200 {
            errs.push((
                "title",
                "Dai un titolo al documento (al massimo 200 caratteri).",
                "Give the document a title (200 characters at most).",
            ));
        }
        let ok_type = match content_type {
            "application/pdf" => bytes.starts_with(b"%PDF-"),
            "image/png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "image/jpeg" => bytes.starts_with(&[0xFF, 0xD8, 0xFF]),
            "text/plain" => std::str::from_utf8(bytes).is_ok(),
            _ => false,
        };
        if bytes.is_empty() {
            errs.push(("file", "Scegli un file da caricare.", "Choose a file to upload."));
        } else if !ok_type {
            errs.push((
                "file",
                "Sono accettati solo PDF, immagini PNG o JPEG e testo.",
                "Only PDF, PNG or JPEG images and text are accepted.",
            ));
        } else if bytes.len() > TACCUINO_MAX_BYTES {
            errs.push(("file", "Il file supera i 5 MB.", "The file is larger than 5 MB."));
        }
        if !errs.is_empty() {
            return Err(Ok(errs));
        }
        let patient = Self::record_of(actor).map_err(Err)?;
        use base64::Engine as _;
        let mut d = json!({"resourceType": "DocumentReference", "status": "current",
            "type": {"coding": [{"system": LOINC, "code": "51855-5", "display": "Documento del paziente"}], "text": "Documento del Taccuino"},
            "category": [{"coding": [{"system": "urn:fascicolo:class", "code": "TAC", "display": "Taccuino"}]}],
            "subject": {"reference": format!("Patient/{patient}")},
            "date": fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms()),
            "author": [{"reference": format!("Patient/{patient}")}],
            "description": title.trim(),
            "content": [{"attachment": {"contentType": content_type, "data": base64::engine::general_purpose::STANDARD.encode(bytes),
                "size": bytes.len(), "title": title.trim()}}],
            "meta": {"tag": [{"system": TACCUINO_TAG, "code": "document"}]}});
        if !share {
            d["meta"]["security"] = json!([{"system": labels::HIDING, "code": "P99"}]);
        }
        let out = self.fhir.create(actor, "DocumentReference", d.to_string().as_bytes(), None).await.map_err(Err)?;
        Ok(out.version.id)
    }

    /// The file a document carries inline (a Taccuino upload, a FHIR-only document's PDF), through the gate.
    pub async fn document_file(&self, actor: &Actor, id: &str) -> AppResult<(String, Vec<u8>)> {
        let v = self.fhir.read(actor, "DocumentReference", id).await?.resource;
        inline_file(&v, id)
    }

    /// The inline file of a document the page has already opened (no second read).
    pub fn file_of(detail: &DocDetail) -> AppResult<(String, Vec<u8>)> {
        inline_file(&detail.resource, &detail.doc.id)
    }
}

/// A DocumentReference's inline file (a Taccuino upload or note), decoded.
fn inline_file(v: &Value, id: &str) -> AppResult<(String, Vec<u8>)> {
    use base64::Engine as _;
    let a = &v["content"][0]["attachment"];
    let data = a["data"].as_str().ok_or_else(|| AppError::NotFound(format!("DocumentReference/{id} has no attached file")))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(data).map_err(|_| AppError::NotFound("the file cannot be read".into()))?;
    Ok((a["contentType"].as_str().unwrap_or("application/octet-stream").to_string(), bytes))
}

impl Portal {
    /// The access log of the record: who looked (name, role, organisation), when, why, what;
    /// emergency accesses flagged. Newest first.
    pub async fn access_log(&self, actor: &Actor) -> AppResult<Vec<Access>> {
        self.access_log_where(actor, Vec::new()).await
    }

    /// The emergency openings of the record in the last `days` days, newest first, with names.
    pub async fn recent_emergencies(&self, actor: &Actor, days: i64) -> AppResult<Vec<Access>> {
        let since = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms() - days * 86_400_000);
        let pairs = vec![
            ("subtype".to_string(), format!("{}|break-glass", crate::access::ACCESS_SYSTEM)),
            ("date".to_string(), format!("ge{since}")),
        ];
        self.access_log_where(actor, pairs).await
    }

    /// [`Self::access_log`] narrowed by further AuditEvent search parameters.
    async fn access_log_where(&self, actor: &Actor, mut pairs: Vec<(String, String)>) -> AppResult<Vec<Access>> {
        Self::record_of(actor)?;
        pairs.push(("_sort".into(), "-date".into()));
        let events = self.all(actor, "AuditEvent", pairs).await?;
        let mut out: Vec<Access> = events.iter().map(access_entry).collect();
        // names of the people and organisations (registry resources)
        let ids = |prefix: &str| -> Vec<String> {
            let mut v: Vec<String> = out
                .iter()
                .flat_map(|a| [a.who.as_str(), a.organization.as_str()])
                .filter_map(|r| r.strip_prefix(prefix).map(String::from))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let mut names: HashMap<String, String> = HashMap::new();
        let mut genders: HashMap<String, String> = HashMap::new();
        for (rt, list) in [("Practitioner", ids("Practitioner/")), ("Organization", ids("Organization/"))] {
            for chunk in list.chunks(200) {
                let pairs = vec![("_id".to_string(), chunk.join(",")), ("_count".into(), "1000".into())];
                if let Ok(page) = self.fhir.search(actor, Some(rt), &pairs, "").await {
                    for e in page.entries {
                        let v = parse(&e.1);
                        let name = if rt == "Organization" { v["name"].as_str().map(String::from) } else { person_name(&v) };
                        if let (Some(id), Some(n)) = (v["id"].as_str(), name) {
                            names.insert(format!("{rt}/{id}"), n);
                            if let Some(g) = v["gender"].as_str() {
                                genders.insert(format!("{rt}/{id}"), g.to_string());
                            }
                        }
                    }
                }
            }
        }
        for rp in ids("RelatedPerson/") {
            if let Ok(v) = self.fhir.read(actor, "RelatedPerson", &rp).await {
                if let Some(n) = person_name(&v.resource) {
                    names.insert(format!("RelatedPerson/{rp}"), n);
                }
                if let Some(g) = v.resource["gender"].as_str() {
                    genders.insert(format!("RelatedPerson/{rp}"), g.to_string());
                }
            }
        }
        for a in &mut out {
            if let Some(g) = genders.get(&a.who) {
                a.who_gender = g.clone();
            }
            if let Some(n) = names.get(&a.who) {
                a.who = n.clone();
            }
            if let Some(n) = names.get(&a.organization) {
                a.organization = n.clone();
            }
        }
        Ok(out)
    }

    /// Hide a document from clinicians (P99) or from parents (P97), or lift the citizen's hiding (P00).
    pub async fn hide(&self, actor: &Actor, id: &str, code: &str) -> AppResult<()> {
        Self::record_of(actor)?;
        self.fhir.hide(actor, "DocumentReference", id, code).await.map(|_| ())
    }

    /// Share a Taccuino measurement with clinicians (P00) or keep it private again (P99).
    pub async fn measurement_visibility(&self, actor: &Actor, id: &str, share: bool) -> AppResult<()> {
        Self::record_of(actor)?;
        let v = self.fhir.read(actor, "Observation", id).await?.resource;
        if !is_taccuino(&v) {
            return Err(AppError::Forbidden("only Taccuino measurements are shared or kept private here".into()));
        }
        self.fhir.hide(actor, "Observation", id, if share { "P00" } else { "P99" }).await.map(|_| ())
    }

    /// The notification settings switched off (`kind.channel`).
    pub async fn notifications_off(&self, actor: &Actor) -> AppResult<Vec<String>> {
        let patient = Self::record_of(actor)?;
        self.fhir.notifications_off(actor, &patient).await
    }

    pub async fn set_notifications_off(&self, actor: &Actor, off: &[String]) -> AppResult<()> {
        let patient = Self::record_of(actor)?;
        self.fhir.set_notifications_off(actor, &patient, off).await.map(|_| ())
    }

    fn seen_key(actor: &Actor) -> AppResult<String> {
        let patient = Self::record_of(actor)?;
        let person = match &actor.who {
            Who::Citizen { cf, .. } => cf.to_string(),
            _ => String::new(),
        };
        Ok(crate::auth::hash_secret(&format!("{person}|{patient}")))
    }

    /// When this person last opened the record's document list (ms; 0 = never): documents
    /// stored after it are marked new.
    pub async fn last_seen(&self, actor: &Actor) -> AppResult<i64> {
        let key = Self::seen_key(actor)?;
        let now = fascicolo_fhir::datetime::now_ms();
        Ok(self.fhir.store().seen_mark(&key, now).await?.unwrap_or(0))
    }

    /// Remember that the person has seen the list now.
    pub async fn mark_seen(&self, actor: &Actor) -> AppResult<()> {
        let key = Self::seen_key(actor)?;
        let now = fascicolo_fhir::datetime::now_ms();
        self.fhir.store().set_seen_mark(&key, now, now + SEEN_KEPT_MS).await?;
        Ok(())
    }

    /// A compact overview for the home page.
    pub async fn overview(&self, actor: &Actor) -> AppResult<Overview> {
        let patient = Self::record_of(actor)?;
        let p = Vec::<(String, String)>::new;
        let mut out = Overview::default();
        let now = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
        let mut appts = p();
        appts.push(("date".into(), format!("ge{}", &now[..10])));
        appts.push(("_sort".into(), "date".into()));
        // each list is optional: a delegation may not cover a type, and then it is empty
        out.appointments = self.all(actor, "Appointment", appts).await.unwrap_or_default();
        out.appointments.retain(|a| a["status"] != "cancelled");
        let mut meds = p();
        meds.push(("status".into(), "active".into()));
        meds.push(("_sort".into(), "-authoredon".into()));
        out.prescriptions = self.all(actor, "MedicationRequest", meds).await.unwrap_or_default();
        let mut imm = p();
        imm.push(("_sort".into(), "-date".into()));
        out.immunizations = self.all(actor, "Immunization", imm).await.unwrap_or_default();
        let mut plans = p();
        plans.push(("status".into(), "active".into()));
        out.care_plans = self.all(actor, "CarePlan", plans).await.unwrap_or_default();
        out.consent = self.fhir.consent_status(actor, &patient).await.ok();
        out.emergencies = self.recent_emergencies(actor, 30).await.unwrap_or_default();
        Ok(out)
    }

    /// One item of the record (a vaccination, a prescription, an appointment), through the gate.
    pub async fn item(&self, actor: &Actor, rt: &str, id: &str) -> AppResult<Value> {
        Self::record_of(actor)?;
        let v = self.fhir.read(actor, rt, id).await?.resource;
        // the item must belong to the record on screen, not merely be readable
        let owner = ["patient", "subject"].iter().find_map(|k| v[*k]["reference"].as_str()).map(String::from).or_else(|| {
            v["participant"]
                .as_array()?
                .iter()
                .find_map(|p| p["actor"]["reference"].as_str().filter(|r| r.starts_with("Patient/")).map(String::from))
        });
        if owner.as_deref() != actor.acting_for.as_ref().map(|p| format!("Patient/{p}")).as_deref() {
            return Err(AppError::NotFound(format!("{rt}/{id} is not known")));
        }
        Ok(v)
    }

    /// Resources of one type for the record, newest first (vaccinations, prescriptions...).
    pub async fn list(&self, actor: &Actor, rt: &str, sort: &str) -> AppResult<Vec<Value>> {
        Self::record_of(actor)?;
        self.all(actor, rt, vec![("_sort".into(), sort.into())]).await
    }

    /// The delegations the citizen granted on their own record (active and ended).
    pub async fn delegations(&self, actor: &Actor) -> AppResult<Vec<Delegation>> {
        let rps = self.list(actor, "RelatedPerson", "_id").await?;
        let now = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
        Ok(rps
            .iter()
            .filter(|rp| {
                rp["relationship"].as_array().is_some_and(|r| {
                    r.iter().any(|c| {
                        c["coding"].as_array().is_some_and(|cs| {
                            cs.iter().any(|x| x["system"] == crate::access::RELATIONSHIP_SYSTEM && x["code"] == "delegate")
                        })
                    })
                })
            })
            .map(|rp| {
                let until = rp["period"]["end"].as_str().unwrap_or_default().to_string();
                Delegation {
                    id: rp["id"].as_str().unwrap_or_default().to_string(),
                    name: person_name(rp).unwrap_or_default(),
                    cf: rp["identifier"][0]["value"].as_str().unwrap_or_default().to_string(),
                    from: rp["period"]["start"].as_str().unwrap_or_default().to_string(),
                    active: rp["active"] != Value::Bool(false) && until.as_str() > now.as_str(),
                    until,
                    scope: rp["extension"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|e| e["url"] == crate::access::DELEGATION_SCOPE_EXT)
                        .filter_map(|e| e["valueCode"].as_str().map(String::from))
                        .collect(),
                }
            })
            .collect())
    }

    /// Grant a delegation to an adult; problems by field (nothing stored when there are any).
    pub async fn grant_delegation(
        &self,
        actor: &Actor,
        cf: &str,
        given: &str,
        family: &str,
        until: &str,
        scope: &[String],
    ) -> Result<(), Result<Vec<FieldError>, AppError>> {
        let patient = Self::record_of(actor).map_err(Err)?;
        let mut params = vec![
            json!({"name": "cf", "valueString": cf.trim().to_uppercase()}),
            json!({"name": "given", "valueString": given}),
            json!({"name": "family", "valueString": family}),
        ];
        if !until.trim().is_empty() {
            params.push(json!({"name": "until", "valueDate": until.trim()}));
        }
        params.extend(scope.iter().map(|s| json!({"name": "scope", "valueCode": s})));
        let body = json!({"resourceType": "Parameters", "parameter": params});
        match self.fhir.grant_delegation(actor, &patient, &body).await {
            Ok(_) => Ok(()),
            Err(AppError::Invalid(issues)) => Err(Ok(issues
                .iter()
                .map(|i| {
                    let d = i.diagnostics.as_str();
                    if d.starts_with("cf:") && d.contains("adult") {
                        ("cf", "La persona delegata deve essere maggiorenne.", "The delegate must be an adult.")
                    } else if d.starts_with("cf:") && d.contains("yourself") {
                        ("cf", "Non puoi delegare te stesso.", "You cannot delegate yourself.")
                    } else if d.starts_with("cf:") {
                        (
                            "cf",
                            "Il codice fiscale non è valido: controlla i 16 caratteri.",
                            "The tax code is not valid: check its 16 characters.",
                        )
                    } else if d.starts_with("until:") {
                        ("until", "Indica una data di fine futura.", "Enter an end date in the future.")
                    } else if d.starts_with("scope:") {
                        ("scope", "Scegli cosa può vedere la persona delegata.", "Choose what the delegate may see.")
                    } else {
                        ("name", "Indica nome e cognome della persona delegata.", "Enter the delegate's given name and surname.")
                    }
                })
                .collect())),
            Err(AppError::Conflict(_)) => Err(Ok(vec![(
                "cf",
                "Hai già il numero massimo di deleghe attive: revocane una prima di aggiungerne un'altra.",
                "You already have the most active delegations allowed: revoke one before adding another.",
            )])),
            Err(e) => Err(Err(e)),
        }
    }

    pub async fn revoke_delegation(&self, actor: &Actor, id: &str) -> AppResult<()> {
        Self::record_of(actor)?;
        self.fhir.revoke_delegation(actor, id).await.map(|_| ())
    }

    /// Whether consent to consultation is in force, and record a new choice.
    pub async fn consent(&self, actor: &Actor) -> AppResult<bool> {
        let patient = Self::record_of(actor)?;
        self.fhir.consent_status(actor, &patient).await
    }

    pub async fn set_consent(&self, actor: &Actor, given: bool) -> AppResult<()> {
        let patient = Self::record_of(actor)?;
        self.fhir.record_consent(actor, &patient, given, "portal").await.map(|_| ())
    }
}

/// How long a "seen" mark is kept (a person who has not looked for longer sees all as new).
const SEEN_KEPT_MS: i64 = 400 * 86_400_000;

/// A delegation the citizen granted.
#[derive(Debug, Clone, Default)]
pub struct Delegation {
    pub id: String,
    pub name: String,
    pub cf: String,
    pub from: String,
    pub until: String,
    pub active: bool,
    /// Resource types it covers (empty: the whole record).
    pub scope: Vec<String>,
}

/// What the home page shows at a glance.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    pub appointments: Vec<Value>,
    pub prescriptions: Vec<Value>,
    pub immunizations: Vec<Value>,
    pub care_plans: Vec<Value>,
    /// Consent to consultation (None: the actor may not read it, e.g. a delegate).
    pub consent: Option<bool>,
    /// Emergency openings of the record in the last 30 days (empty when the log is not the
    /// actor's to read).
    pub emergencies: Vec<Access>,
}

/// Largest Taccuino upload.
pub const TACCUINO_MAX_BYTES: usize = 5 * 1024 * 1024;

fn access_entry(e: &Value) -> Access {
    let agents = e["agent"].as_array().cloned().unwrap_or_default();
    let person = agents.iter().find(|a| a["requestor"] == true).or(agents.first()).cloned().unwrap_or(Value::Null);
    let org = agents
        .iter()
        .find(|a| a["who"]["reference"].as_str().is_some_and(|r| r.starts_with("Organization/")))
        .and_then(|a| a["who"]["reference"].as_str())
        .unwrap_or_default();
    let sub = |code: &str| e["subtype"].as_array().is_some_and(|s| s.iter().any(|c| c["code"] == code));
    let purpose = e["purposeOfEvent"][0]["coding"][0]["code"].as_str().unwrap_or_default();
    let what: Vec<String> = e["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["type"]["code"] == "2")
        .filter_map(|x| x["what"]["reference"].as_str().map(String::from))
        .collect();
    Access {
        when: e["recorded"].as_str().unwrap_or_default().to_string(),
        who: person["who"]["reference"]
            .as_str()
            .or(person["who"]["identifier"]["value"].as_str())
            .or(person["who"]["display"].as_str())
            .unwrap_or_default()
            .to_string(),
        who_gender: String::new(),
        role: person["type"]["coding"][0]["code"].as_str().unwrap_or_default().to_string(),
        organization: org.to_string(),
        purpose: purpose.to_string(),
        action: e["action"].as_str().unwrap_or_default().to_string(),
        emergency: purpose == "ETREAT" || sub("emergency") || sub("break-glass"),
        reason: e["purposeOfEvent"][0]["text"].as_str().unwrap_or_default().to_string(),
        on_behalf: sub("on-behalf"),
        export: sub("bulk-export"),
        what,
    }
}

fn person_name(v: &Value) -> Option<String> {
    Some(crate::auth::display_name(v)).filter(|n| !n.is_empty())
}
