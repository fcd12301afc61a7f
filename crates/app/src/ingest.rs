//! Document publication (FSE 2.0 gateway style): producers validate, publish, replace, delete
//! and re-label CDA2 documents (bare or embedded in a PDF). Validation runs on a pool of threads
//! that keep the national schematrons compiled; publication maps the document to FHIR and writes
//! everything in one transaction through the FHIR service (so the privacy gate labels it, the
//! audit row and the "new document" notification commit with it).

use std::sync::Arc;

use fascicolo_cda::mapping::{self, Context, Header, SHA256_SYSTEM};
use fascicolo_cda::{catalog, pdf, validate, Problem, Report, Severity, Source};
use fascicolo_fhir::datetime;
use fascicolo_store::SubmissionStatus;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::fhir::parse_stored;
use crate::gate::Who;
use crate::{access, Actor, AppError, FhirService};
use fascicolo_blobs::BlobStore;
use fascicolo_validators::{ReadCda, Validated, Validators};

/// How long a submission's status stays available.
const STATUS_TTL_MS: i64 = 90 * 24 * 3600 * 1000;

/// The XDS-style metadata the national gateway takes with a document (all optional here:
/// defaults come from the document and its type).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Facility type: Ospedale, Prevenzione, Territorio, SistemaTS, Cittadino, MdsPLS, Infermiere, Farmacista.
    pub tipologia_struttura: Option<String>,
    /// Practice setting, `AD_PSC001`…`AD_PSC999` (an array, as the gateway takes it, or one string).
    pub assetto_organizzativo: Option<OneOrMany>,
    /// XDS class code (REF, LDO, VRB, SUM, VAC, PRS, PRE...).
    pub tipo_documento_liv_alto: Option<String>,
    /// Clinical-activity type: PHR, CON, DIS, ERP.
    pub tipo_attivita_clinica: Option<String>,
    /// Hiding rules: P99 (hidden), P97 (hidden from parents), P98 (hidden from the patient), P00 (none).
    pub atti_clinici_regole_accesso: Option<OneOrMany>,
    /// Art. 6 category (hiv, abortion, sexual-violence, addiction, anonymous-birth, family-planning).
    pub categoria_art6: Option<String>,
    /// Service start and end (HL7 TS, e.g. 20220330112426+0100).
    pub data_inizio_prestazione: Option<String>,
    pub data_fine_prestazione: Option<String>,
    /// The document's unique id; default: `ClinicalDocument/id` as `root^extension`.
    pub identificativo_doc: Option<String>,
    /// The organisation the document is published for (an Organization id); must be the
    /// producer's own.
    pub organizzazione: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// What went wrong, for the web layer to turn into a status and a JSON body.
#[derive(Debug)]
pub struct IngestError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub problems: Vec<Problem>,
    pub workflow: Option<String>,
    /// The storage failure behind a `storage` error, kept so that a page showing it answers as
    /// the API does (an outage 503, a full disk 507) without guessing from the status.
    pub store: Option<Box<fascicolo_store::StoreError>>,
}

impl IngestError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), problems: Vec::new(), workflow: None, store: None }
    }

    /// The error as the app layer's, for an interface that shows app errors (the portal): a
    /// storage failure is the one that happened; others by what the status means.
    pub fn into_app_error(self) -> AppError {
        match (self.store, self.status) {
            (Some(e), _) => AppError::Store(*e),
            (None, 404) => AppError::NotFound(self.message),
            (None, 410) => AppError::Gone(self.message),
            (None, 401) => AppError::Unauthorized(self.message),
            (None, 403) => AppError::Forbidden(self.message),
            (None, 409) => AppError::Conflict(self.message),
            (None, 413) => AppError::TooLarge(self.message),
            (None, s) if s < 500 => AppError::BadRequest(self.message),
            (None, _) => AppError::Internal(self.message),
        }
    }

    fn invalid(problems: Vec<Problem>) -> Self {
        let n = problems.iter().filter(|p| p.severity == Severity::Error).count();
        Self {
            status: 422,
            code: "invalid",
            message: format!("the document is not valid: {n} error(s)"),
            problems,
            workflow: None,
            store: None,
        }
    }
}

/// An app error as ingestion answers it: the status is the one every interface gives it
/// ([`crate::error_status`], the error policy), the code is ingestion's own.
impl From<AppError> for IngestError {
    fn from(e: AppError) -> Self {
        let (status, issues) = crate::error_status(&e);
        let first = || issues.first().map_or_else(String::new, |i| i.diagnostics.clone());
        match e {
            AppError::NotFound(m) => IngestError::new(status, "not-found", m),
            AppError::Gone(m) => IngestError::new(status, "gone", m),
            AppError::BadRequest(m) => IngestError::new(status, "bad-request", m),
            AppError::Invalid(issues) => {
                let problems =
                    issues.iter().map(|i| Problem::error(Source::Fhir, "fhir", i.diagnostics.clone(), i.expression.clone())).collect();
                IngestError {
                    problems,
                    ..IngestError::new(status, "invalid", "the document's FHIR resources were refused by the R4 validation")
                }
            }
            AppError::Conflict(m) | AppError::PreconditionFailed(m) => IngestError::new(status, "conflict", m),
            AppError::Forbidden(m) => IngestError::new(status, "forbidden", m),
            AppError::Unauthorized(m) => IngestError::new(status, "unauthorized", m),
            AppError::NotSupported(m) => IngestError::new(status, "not-supported", m),
            AppError::TooLarge(m) => IngestError::new(status, "too-large", m),
            AppError::TooMany(m) => IngestError::new(status, "too-many", m),
            AppError::Store(e) => {
                tracing::error!(error = %e, "ingest: storage failure");
                IngestError { store: Some(Box::new(e)), ..IngestError::new(status, "storage", first()) }
            }
            AppError::Internal(m) => {
                tracing::error!(error = %m, "ingest: internal failure");
                IngestError::new(status, "internal", first())
            }
        }
    }
}

/// A storage failure (the database's or the blob store's) as ingestion answers it.
impl From<fascicolo_store::StoreError> for IngestError {
    fn from(e: fascicolo_store::StoreError) -> Self {
        IngestError::from(AppError::from(e))
    }
}

pub type IngestResult<T> = Result<T, IngestError>;

/// Remove stored originals no document refers to: a crash between storing an original and
/// committing its DocumentReference leaves one behind (and partial writes). Only blobs older
/// than `grace_ms` are considered, so a publication in flight is never touched (storing an
/// existing blob refreshes its time). A deleted document's original goes too.
pub async fn sweep_orphans(fhir: &FhirService, blobs: &dyn BlobStore, grace_ms: i64) -> crate::AppResult<Sweep> {
    let before = fascicolo_fhir::datetime::now_ms() - grace_ms;
    let candidates = blobs.written_before(before).await?;
    let mut sweep = Sweep { checked: candidates.len(), removed: 0 };
    for hash in candidates {
        let ident = format!("{SHA256_SYSTEM}|{hash}");
        let users = access::lookup(fhir.store().as_ref(), None, "DocumentReference", &[("identifier", ident.as_str())], 1).await?;
        if users.is_empty() {
            blobs.delete(&hash).await?;
            sweep.removed += 1;
        }
    }
    if sweep.removed > 0 {
        tracing::info!(checked = sweep.checked, removed = sweep.removed, "removed originals no document refers to");
    }
    Ok(sweep)
}

/// What a sweep of orphan originals did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Originals old enough to be looked at.
    pub checked: usize,
    /// Of those, removed: no document refers to them.
    pub removed: usize,
}

/// A submitted document as received.
#[derive(Debug, Clone)]
pub struct Submission {
    pub bytes: Vec<u8>,
    /// The declared media type (without parameters); empty to sniff.
    pub content_type: String,
    pub metadata: Metadata,
}

/// The answer to a validation or publication.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub workflow_instance_id: String,
    /// `validated`, `published`, `already-published`, `replaced`, `deleted`, `metadata-updated`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_reference: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Every problem found (for publication: the warnings; errors refuse it).
    pub problems: Vec<Problem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_type: Option<String>,
}

/// The document publication service.
#[derive(Clone)]
pub struct Ingest {
    fhir: FhirService,
    blobs: Arc<dyn BlobStore>,
    validators: Validators,
    base_url: String,
    pdf: crate::pdf_reader::PdfReader,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").field("base_url", &self.base_url).finish()
    }
}

/// A submission analysed: every problem, and what publication needs.
struct Analysis {
    original: Vec<u8>,
    original_type: &'static str,
    problems: Vec<Problem>,
    /// The mapping context from the metadata (patient, hash and URLs filled later).
    ctx: Context,
    patient_cf: Option<String>,
    /// The document's own id (CDA `root^extension`, FHIR Composition identifier).
    identity: Option<String>,
    document_type: Option<String>,
    payload: Payload,
}

enum Payload {
    /// The CDA2 as the validator read it.
    Cda(ReadCda),
    Fhir(crate::fhir_document::Checked),
}

/// Whose documents: the producer's organisation (None for the platform itself).
struct Producer {
    organization: Option<String>,
    subject: String,
}

impl Ingest {
    pub fn new(fhir: FhirService, blobs: Arc<dyn BlobStore>, validators: Validators, base_url: &str) -> Self {
        Self {
            fhir,
            blobs,
            validators,
            base_url: base_url.trim_end_matches('/').to_string(),
            pdf: crate::pdf_reader::PdfReader::in_process(),
        }
    }

    /// How PDFs are read (the server reads them in a child process: see [`crate::pdf_reader`]).
    pub fn with_pdf_reader(mut self, pdf: crate::pdf_reader::PdfReader) -> Self {
        self.pdf = pdf;
        self
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// Whether `actor` may use the publication API at all (checked before an upload is read).
    pub fn admits(actor: &Actor) -> IngestResult<()> {
        Self::producer(actor).map(|_| ())
    }

    fn producer(actor: &Actor) -> IngestResult<Producer> {
        match &actor.who {
            Who::Client { client_id, organization: Some(o), platform: false } => {
                Ok(Producer { organization: Some(o.clone()), subject: format!("client:{client_id}") })
            }
            Who::Client { client_id, platform: true, organization } => {
                Ok(Producer { organization: organization.clone(), subject: format!("client:{client_id}") })
            }
            Who::System => Ok(Producer { organization: None, subject: "system".into() }),
            Who::Anonymous => {
                Err(IngestError::new(401, "unauthorized", "sign-in required: send a system access token (client credentials)"))
            }
            _ => Err(IngestError::new(
                403,
                "forbidden",
                "only document producers (system clients of a health organisation) use the publication API",
            )),
        }
    }

    /// Reads and checks a submission: CDA2 XML, a PDF with the CDA2 embedded, or a FHIR document
    /// Bundle; validates it and its metadata.
    async fn analyse(&self, producer: &str, sub: &Submission) -> IngestResult<Analysis> {
        let declared = sub.content_type.to_ascii_lowercase();
        let first = sub.bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
        let kind = match declared.as_str() {
            "application/pdf" => "pdf",
            "application/xml" | "text/xml" | "application/hl7-cda+xml" | "application/cda+xml" => "xml",
            "application/fhir+json" | "application/json" => "fhir",
            "" | "application/octet-stream" if pdf::is_pdf(&sub.bytes) => "pdf",
            "" | "application/octet-stream" if first == Some(b'{') => "fhir",
            "" | "application/octet-stream" => "xml",
            other => {
                return Err(IngestError::new(
                    415,
                    "unsupported",
                    format!("{other} is not accepted: send application/xml (CDA2), application/pdf (PDF with the CDA2 embedded) or application/fhir+json (a FHIR document Bundle)"),
                ))
            }
        };
        if kind == "fhir" {
            let checked = crate::fhir_document::check(&sub.bytes);
            let doc_type = checked.loinc.as_deref().and_then(|l| catalog::TYPES.iter().find(|t| t.loinc == l));
            let h = Header { loinc: checked.loinc.clone(), ..Header::default() };
            let report = Report { problems: Vec::new(), doc_type };
            let (ctx, meta_problems) = Self::resolve_metadata(&sub.metadata, &h, &report);
            let mut problems = checked.problems.clone();
            problems.extend(meta_problems);
            return Ok(Analysis {
                original: sub.bytes.clone(),
                original_type: "application/fhir+json",
                problems,
                ctx,
                patient_cf: checked.patient_cf.clone(),
                identity: checked.identity.clone(),
                document_type: doc_type.map(|t| t.name.to_string()).or(checked.loinc.clone()),
                payload: Payload::Fhir(checked),
            });
        }
        let (xml, original_type) = if kind == "pdf" {
            let xml = self
                .pdf
                .extract_cda(&sub.bytes)
                .await
                .map_err(|e| IngestError::invalid(vec![Problem::error(Source::Xml, "pdf", e.to_string(), None)]))?;
            (xml, "application/pdf")
        } else {
            (sub.bytes.clone(), "application/xml")
        };
        let text = validate::decode(&xml).map_err(|p| IngestError::invalid(vec![p]))?;
        // the validator parses it once (refusing DTDs and malformed XML) and reads the header
        let Validated { report, read } = self.validators.validate(producer, text).await;
        let Some(read) = read else {
            return Err(IngestError::invalid(report.problems));
        };
        let h = &read.header;
        let (ctx, meta_problems) = Self::resolve_metadata(&sub.metadata, h, &report);
        let mut problems = report.problems.clone();
        problems.extend(meta_problems);
        let document_type = report.doc_type.map(|t| t.name.to_string()).or(h.loinc.clone());
        Ok(Analysis {
            original: sub.bytes.clone(),
            original_type,
            problems,
            ctx,
            patient_cf: h.patient_cf.clone(),
            identity: Some(h.id.clone()).filter(|i| !i.is_empty()),
            document_type,
            payload: Payload::Cda(read),
        })
    }

    /// Checks the metadata against the document; returns the mapping context (without patient,
    /// hash and URL) and the problems.
    fn resolve_metadata(meta: &Metadata, h: &Header, report: &Report) -> (Context, Vec<Problem>) {
        let mut problems = Vec::new();
        let meta_err = |id: &str, m: String| Problem::error(Source::Metadata, id, m, None);
        let facility = meta.tipologia_struttura.clone().unwrap_or_else(|| "Ospedale".into());
        if !catalog::FACILITY_TYPES.contains(&facility.as_str()) {
            problems.push(meta_err(
                "tipologiaStruttura",
                format!("{facility} is not a facility type ({})", catalog::FACILITY_TYPES.join(", ")),
            ));
        }
        let practice = meta.assetto_organizzativo.as_ref().map(OneOrMany::values).unwrap_or_default();
        let practice = practice.first().cloned().unwrap_or_else(|| "AD_PSC999".into());
        let psc_ok = practice.strip_prefix("AD_PSC").is_some_and(|n| n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()));
        if !psc_ok {
            problems.push(meta_err("assettoOrganizzativo", format!("{practice} is not a practice setting (AD_PSC001…AD_PSC999)")));
        }
        let default_class = report.doc_type.map(|t| t.class).unwrap_or("REF");
        let class = meta.tipo_documento_liv_alto.clone().unwrap_or_else(|| default_class.to_string());
        if !catalog::CLASSES.iter().any(|(c, _)| *c == class) {
            problems.push(meta_err("tipoDocumentoLivAlto", format!("{class} is not a document class")));
        } else if let Some(loinc) = &h.loinc {
            if !catalog::class_matches_type(&class, loinc) {
                problems.push(meta_err(
                    "class-type",
                    format!("class {class} does not go with the document type {loinc} (classCode ↔ typeCode)"),
                ));
            }
        }
        let activity = meta.tipo_attivita_clinica.clone().unwrap_or_else(|| "CON".into());
        if !matches!(activity.as_str(), "PHR" | "CON" | "DIS" | "ERP") {
            problems.push(meta_err("tipoAttivitaClinica", format!("{activity} is not a clinical-activity type (PHR, CON, DIS, ERP)")));
        }
        let mut hiding = Vec::new();
        for code in meta.atti_clinici_regole_accesso.as_ref().map(OneOrMany::values).unwrap_or_default() {
            match code.as_str() {
                "P99" | "P97" | "P98" => hiding.push(code),
                "P00" => {}
                other => problems.push(meta_err("attiCliniciRegoleAccesso", format!("{other} is not a hiding rule (P99, P97, P98, P00)"))),
            }
        }
        let art6 = meta.categoria_art6.clone();
        if let Some(a) = &art6 {
            if fascicolo_domain::privacy::Art6Category::parse(a).is_none() {
                problems.push(meta_err("categoriaArt6", format!("{a} is not an art. 6 category")));
            }
        }
        for (field, v) in [("dataInizioPrestazione", &meta.data_inizio_prestazione), ("dataFinePrestazione", &meta.data_fine_prestazione)] {
            if let Some(v) = v {
                if !validate::ts_ok(v) {
                    problems.push(meta_err(field, format!("{v} is not an HL7 timestamp")));
                }
            }
        }
        let ctx = Context {
            facility_type: facility,
            practice_setting: practice,
            class,
            activity,
            hiding,
            art6,
            service_start: meta.data_inizio_prestazione.clone(),
            service_end: meta.data_fine_prestazione.clone(),
            ..Context::default()
        };
        (ctx, problems)
    }

    async fn record_status(&self, producer: &Producer, workflow: &str, body: &Value) {
        let rec = SubmissionStatus {
            workflow: workflow.to_string(),
            producer: producer.subject.clone(),
            body: body.to_string(),
            expires_at: datetime::now_ms() + STATUS_TTL_MS,
        };
        if let Err(e) = self.fhir.store().put_submission(&rec).await {
            tracing::warn!(error = %e, "could not record a submission status");
        }
    }

    /// Records the outcome of a submission (success or failure) under its workflow id.
    async fn finish(&self, producer: &Producer, workflow: String, operation: &str, result: IngestResult<Outcome>) -> IngestResult<Outcome> {
        match result {
            Ok(out) => {
                self.record_status(producer, &workflow, &json!({"operation": operation, "at": datetime::now_ms(), "outcome": out})).await;
                Ok(out)
            }
            Err(e) => Err(self.failed(producer, workflow, operation, e).await),
        }
    }

    async fn failed(&self, producer: &Producer, workflow: String, operation: &str, mut e: IngestError) -> IngestError {
        let body = json!({"workflowInstanceId": workflow, "operation": operation, "status": "failed", "error": e.code,
            "message": e.message, "problems": e.problems, "at": datetime::now_ms()});
        self.record_status(producer, &workflow, &body).await;
        e.workflow = Some(workflow);
        e
    }

    /// Validate only: nothing is looked up or stored (besides the submission's status).
    pub async fn validate(&self, actor: &Actor, sub: Submission) -> IngestResult<Outcome> {
        let producer = Self::producer(actor)?;
        let workflow = uuid::Uuid::now_v7().to_string();
        let result = self.analyse(&producer.subject, &sub).await;
        match result {
            Ok(a) => {
                let status = if a.problems.iter().any(|p| p.severity == Severity::Error) { "invalid" } else { "validated" };
                let out = Outcome {
                    workflow_instance_id: workflow.clone(),
                    status: status.into(),
                    document_reference: None,
                    resources: Vec::new(),
                    problems: a.problems,
                    document_type: a.document_type,
                };
                self.record_status(&producer, &workflow, &json!({"operation": "validation", "at": datetime::now_ms(), "outcome": out}))
                    .await;
                Ok(out)
            }
            Err(e) => Err(self.failed(&producer, workflow, "validation", e).await),
        }
    }

    /// Validate and publish.
    pub async fn publish(&self, actor: &Actor, sub: Submission) -> IngestResult<Outcome> {
        let producer = Self::producer(actor)?;
        let workflow = uuid::Uuid::now_v7().to_string();
        let result = self.publish_inner(actor, &producer, &workflow, sub, None).await;
        self.finish(&producer, workflow, "publication", result).await
    }

    /// Publish a new version replacing the document `old` (its identifier or DocumentReference id).
    pub async fn replace(&self, actor: &Actor, old: &str, sub: Submission) -> IngestResult<Outcome> {
        let producer = Self::producer(actor)?;
        let workflow = uuid::Uuid::now_v7().to_string();
        let result = async {
            let previous = self.own_document(actor, &producer, old).await?;
            self.publish_inner(actor, &producer, &workflow, sub, Some(previous)).await
        }
        .await;
        self.finish(&producer, workflow, "replacement", result).await
    }

    /// The current DocumentReference named by `reference` (a document identifier or the
    /// DocumentReference id) that this producer published.
    async fn own_document(&self, actor: &Actor, producer: &Producer, reference: &str) -> IngestResult<Value> {
        let not_found = || IngestError::new(404, "not-found", format!("no current document {reference} published by your organisation"));
        let mut found = None;
        for id in [reference.to_string(), mapping::derived_id(reference, "DocumentReference")] {
            if let Some(v) = self.readable_document(actor, &id).await? {
                found = Some(v);
                break;
            }
        }
        let v = found.ok_or_else(not_found)?;
        if v["status"] != "current" {
            return Err(IngestError::new(
                409,
                "conflict",
                format!("document {reference} is {} and cannot change", v["status"].as_str().unwrap_or("?")),
            ));
        }
        if let Some(org) = &producer.organization {
            let mine = v["custodian"]["reference"].as_str() == Some(&format!("Organization/{org}"));
            if !mine {
                return Err(not_found());
            }
        }
        Ok(v)
    }

    /// A DocumentReference as `actor` may see it: read through the gate (so the access is
    /// logged), `None` when it does not exist or is not the actor's to see.
    async fn readable_document(&self, actor: &Actor, id: &str) -> IngestResult<Option<Value>> {
        if !fascicolo_fhir::is_valid_id(id) {
            return Ok(None);
        }
        match self.fhir.read(actor, "DocumentReference", id).await {
            Ok(v) => Ok(Some(v.resource)),
            Err(AppError::NotFound(_) | AppError::Gone(_) | AppError::Forbidden(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn publish_inner(
        &self,
        actor: &Actor,
        producer: &Producer,
        workflow: &str,
        sub: Submission,
        previous: Option<Value>,
    ) -> IngestResult<Outcome> {
        // the organisation: the producer's own, never another
        let organization = match (&producer.organization, &sub.metadata.organizzazione) {
            (Some(own), Some(named)) if own != named => {
                return Err(IngestError::new(
                    403,
                    "forbidden",
                    format!("your client publishes for Organization/{own}, not for Organization/{named}"),
                ))
            }
            (Some(own), _) => Some(own.clone()),
            (None, named) => named.clone(),
        };
        let analysis = self.analyse(&producer.subject, &sub).await?;
        let problems = analysis.problems.clone();
        if problems.iter().any(|p| p.severity == Severity::Error) {
            return Err(IngestError::invalid(problems));
        }
        if let (Some(org), Payload::Cda(ReadCda { custodian, .. })) = (&organization, &analysis.payload) {
            self.check_custodian(org, custodian).await?;
        }
        // the citizen must be in the registry
        let Some(cf) = analysis.patient_cf.clone() else {
            return Err(IngestError::invalid(vec![Problem::error(
                Source::Metadata,
                "patient",
                "the document names no patient by codice fiscale",
                None,
            )]));
        };
        let ident = format!("{}|{cf}", access::CF_SYSTEM);
        let patients = access::lookup(self.fhir.store().as_ref(), None, "Patient", &[("identifier", ident.as_str())], 2).await?;
        let patient = match patients.as_slice() {
            [p] => p.id.clone(),
            [] => {
                return Err(IngestError::invalid(vec![Problem::error(
                    Source::Metadata,
                    "patient-unknown",
                    "the document's patient (recordTarget/patientRole/id) is not in the regional registry: it cannot be published",
                    Some("/ClinicalDocument[1]/recordTarget[1]/patientRole[1]".into()),
                )]))
            }
            _ => return Err(IngestError::new(409, "conflict", "more than one registry record carries the document's codice fiscale")),
        };
        // identity: the same document (id and bytes) is published once
        let identity = sub.metadata.identificativo_doc.clone().or(analysis.identity.clone()).unwrap_or_default();
        if identity.is_empty() {
            return Err(IngestError::invalid(vec![Problem::error(Source::Metadata, "identificativoDoc", "the document has no id", None)]));
        }
        let blob = fascicolo_blobs::Blob::new(&analysis.original);
        let sha256 = blob.sha256().to_string();
        let docref_id = mapping::derived_id(&identity, "DocumentReference");
        // existence is checked in the store (an id is taken whoever took it); what is returned
        // about it comes only from a read the gate allows
        let taken = self.fhir.store().read("DocumentReference", &docref_id).await.map_err(AppError::from)?.is_some_and(|s| !s.deleted);
        if taken {
            let same = self.readable_document(actor, &docref_id).await?.filter(|v| {
                v["identifier"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|i| i["system"] == SHA256_SYSTEM && i["value"] == sha256.as_str()))
            });
            if let (Some(v), None) = (&same, &previous) {
                return Ok(Outcome {
                    workflow_instance_id: workflow.to_string(),
                    status: "already-published".into(),
                    document_reference: Some(format!("DocumentReference/{docref_id}")),
                    resources: related(v),
                    problems,
                    document_type: analysis.document_type.clone(),
                });
            }
            return Err(IngestError::new(
                409,
                "conflict",
                format!("the document id {identity} is already used by another published document: send a replacement, or a new id"),
            ));
        }
        if let Some(prev) = &previous {
            if prev["subject"]["reference"].as_str() != Some(&format!("Patient/{patient}")) {
                return Err(IngestError::new(409, "conflict", "a replacement must concern the same patient as the document it replaces"));
            }
        }
        self.blobs.put_blob(&blob).await?;
        let mut ctx = analysis.ctx.clone();
        ctx.patient = patient;
        ctx.producer_org = organization;
        ctx.sha256 = sha256;
        ctx.size = analysis.original.len();
        ctx.content_type = analysis.original_type.to_string();
        ctx.original_url = format!("{}/documents/{docref_id}/original", self.base_url);
        ctx.replaces = previous.as_ref().and_then(|p| p["id"].as_str()).map(str::to_string);
        ctx.identity = identity.clone();
        let fhir_base = format!("{}/fhir/r4", self.base_url);
        let (docref, mut entries) = match &analysis.payload {
            Payload::Cda(read) => {
                let mapped = mapping::map(read.parsed.borrow_dependent(), &read.header, &ctx);
                let entries = mapped
                    .resources
                    .iter()
                    .map(|r| {
                        let url = format!("{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default());
                        json!({"fullUrl": format!("{fhir_base}/{url}"), "resource": r, "request": {"method": "PUT", "url": url}})
                    })
                    .collect::<Vec<_>>();
                (mapped.document_reference_id, entries)
            }
            Payload::Fhir(checked) => crate::fhir_document::entries(checked, &ctx, &fhir_base),
        };
        let resources: Vec<String> = entries.iter().skip(1).filter_map(|e| e["request"]["url"].as_str().map(str::to_string)).collect();
        if let Some(prev) = &previous {
            entries.extend(retire(prev, "superseded"));
        }
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        self.fhir.process_publication(actor, bundle, &fhir_base).await?;
        Ok(Outcome {
            workflow_instance_id: workflow.to_string(),
            status: if previous.is_some() { "replaced" } else { "published" }.into(),
            document_reference: Some(format!("DocumentReference/{docref}")),
            resources,
            problems,
            document_type: analysis.document_type.clone(),
        })
    }

    /// When the producer's Organization carries identifiers, the document's custodian must be one
    /// of them.
    async fn check_custodian(&self, org: &str, custodian: &[(String, String)]) -> IngestResult<()> {
        let Some(stored) = self.fhir.store().read("Organization", org).await.map_err(AppError::from)?.filter(|s| !s.deleted) else {
            return Ok(());
        };
        let v = parse_stored(&stored)?;
        let ids: Vec<(String, String)> = v["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| Some((i["system"].as_str()?.trim_start_matches("urn:oid:").to_string(), i["value"].as_str()?.to_string())))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        if custodian.iter().any(|c| ids.contains(c)) {
            Ok(())
        } else {
            Err(IngestError::new(
                403,
                "forbidden",
                format!("the document's custodian is not Organization/{org}: a producer publishes only its own organisation's documents"),
            ))
        }
    }

    /// Logical deletion of a published document and everything mapped from it (audited; the
    /// versions stay in history).
    pub async fn delete(&self, actor: &Actor, reference: &str) -> IngestResult<Outcome> {
        let producer = Self::producer(actor)?;
        let workflow = uuid::Uuid::now_v7().to_string();
        let result = async {
            let doc = self.own_document(actor, &producer, reference).await?;
            let id = doc["id"].as_str().unwrap_or_default().to_string();
            let mut entries: Vec<Value> = related(&doc).into_iter().map(|r| json!({"request": {"method": "DELETE", "url": r}})).collect();
            entries.push(json!({"request": {"method": "DELETE", "url": format!("DocumentReference/{id}")}}));
            let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
            self.fhir.process_bundle_value(actor, bundle, &format!("{}/fhir/r4", self.base_url)).await?;
            Ok::<_, IngestError>(Outcome {
                workflow_instance_id: workflow.clone(),
                status: "deleted".into(),
                document_reference: Some(format!("DocumentReference/{id}")),
                resources: related(&doc),
                problems: Vec::new(),
                document_type: None,
            })
        }
        .await;
        self.finish(&producer, workflow, "deletion", result).await
    }

    /// Updates a published document's metadata: hiding rules (applied to the whole document
    /// family) and the XDS context (facility type, practice setting, activity, class, dates).
    pub async fn update_metadata(&self, actor: &Actor, reference: &str, meta: Metadata) -> IngestResult<Outcome> {
        let producer = Self::producer(actor)?;
        let workflow = uuid::Uuid::now_v7().to_string();
        let result = async {
            let doc = self.own_document(actor, &producer, reference).await?;
            let id = doc["id"].as_str().unwrap_or_default().to_string();
            let loinc = doc["type"]["coding"][0]["code"].as_str().map(str::to_string);
            let h = Header { loinc, ..Header::default() };
            let report = Report::default();
            let mut effective = meta.clone();
            // fields not sent keep their current values
            let cur = |v: &Value| v.as_str().map(str::to_string);
            effective.tipologia_struttura =
                meta.tipologia_struttura.clone().or_else(|| cur(&doc["context"]["facilityType"]["coding"][0]["code"]));
            effective.assetto_organizzativo = meta
                .assetto_organizzativo
                .clone()
                .or_else(|| cur(&doc["context"]["practiceSetting"]["coding"][0]["code"]).map(OneOrMany::One));
            effective.tipo_documento_liv_alto =
                meta.tipo_documento_liv_alto.clone().or_else(|| cur(&doc["category"][0]["coding"][0]["code"]));
            effective.tipo_attivita_clinica =
                meta.tipo_attivita_clinica.clone().or_else(|| cur(&doc["context"]["event"][0]["coding"][0]["code"]));
            let (ctx, problems) = Self::resolve_metadata(&effective, &h, &report);
            if problems.iter().any(|p| p.severity == Severity::Error) {
                return Err(IngestError::invalid(problems));
            }
            let mut v = doc.clone();
            v["context"]["facilityType"] = json!({"coding": [{"system": mapping::FACILITY_SYSTEM, "code": ctx.facility_type}]});
            v["context"]["practiceSetting"] = json!({"coding": [{"system": mapping::PRACTICE_SYSTEM, "code": ctx.practice_setting}]});
            v["context"]["event"] = json!([{"coding": [{"system": mapping::ACTIVITY_SYSTEM, "code": ctx.activity}]}]);
            v["category"] = json!([{"coding": [{"system": mapping::CLASS_SYSTEM, "code": ctx.class}]}]);
            if let Some(s) = meta.data_inizio_prestazione.as_deref().and_then(mapping::fhir_datetime) {
                v["context"]["period"]["start"] = json!(s);
            }
            if let Some(e) = meta.data_fine_prestazione.as_deref().and_then(mapping::fhir_datetime) {
                v["context"]["period"]["end"] = json!(e);
            }
            // hiding first: if it is refused, nothing else has changed; the context update after it
            // is one write (on the current version, which hiding advanced)
            if let Some(rules) = &meta.atti_clinici_regole_accesso {
                for code in rules.values() {
                    self.fhir.hide(actor, "DocumentReference", &id, &code).await?;
                }
            }
            if v != doc {
                let current = self
                    .readable_document(actor, &id)
                    .await?
                    .ok_or_else(|| IngestError::new(404, "not-found", "the document disappeared"))?;
                let mut next = current.clone();
                for key in ["context", "category"] {
                    next[key] = v[key].clone();
                }
                if next != current {
                    self.fhir.update(actor, "DocumentReference", &id, next.to_string().as_bytes(), None).await?;
                }
            }
            Ok::<_, IngestError>(Outcome {
                workflow_instance_id: workflow.clone(),
                status: "metadata-updated".into(),
                document_reference: Some(format!("DocumentReference/{id}")),
                resources: Vec::new(),
                problems: Vec::new(),
                document_type: None,
            })
        }
        .await;
        self.finish(&producer, workflow, "metadata", result).await
    }

    /// The recorded status of a submission (only the producer that sent it may read it).
    /// See [`sweep_orphans`].
    pub async fn sweep_orphans(&self, grace_ms: i64) -> crate::AppResult<Sweep> {
        sweep_orphans(&self.fhir, self.blobs.as_ref(), grace_ms).await
    }

    pub async fn status(&self, actor: &Actor, workflow: &str) -> IngestResult<Value> {
        let producer = Self::producer(actor)?;
        let rec = self.fhir.store().submission(workflow, datetime::now_ms()).await.map_err(AppError::from)?;
        match rec {
            Some(r) if r.producer == producer.subject => {
                serde_json::from_str(&r.body).map_err(|_| IngestError::new(500, "storage", "unreadable status"))
            }
            _ => Err(IngestError::new(404, "not-found", format!("no submission {workflow} of yours"))),
        }
    }

    /// The original bytes of a document the actor may read, with their media type.
    pub async fn original(&self, actor: &Actor, docref_id: &str) -> IngestResult<(String, Vec<u8>)> {
        let v = self.fhir.read(actor, "DocumentReference", docref_id).await?;
        self.original_of(&v.resource).await
    }

    /// The original of a DocumentReference already read through the gate.
    async fn original_of(&self, docref: &Value) -> IngestResult<(String, Vec<u8>)> {
        let attachment = &docref["content"][0]["attachment"];
        let hash = docref["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["system"] == SHA256_SYSTEM)
            .and_then(|i| i["value"].as_str())
            .ok_or_else(|| IngestError::new(404, "not-found", "this document has no stored original"))?;
        let bytes =
            self.blobs.get(hash).await?.ok_or_else(|| IngestError::new(404, "not-found", "the original is missing from the blob store"))?;
        Ok((attachment["contentType"].as_str().unwrap_or("application/octet-stream").to_string(), bytes))
    }

    /// The CDA2 of a document the actor may read (extracted from the PDF when needed).
    async fn cda_text(&self, actor: &Actor, docref_id: &str) -> IngestResult<(String, Vec<u8>, String)> {
        let (ct, bytes) = self.original(actor, docref_id).await?;
        self.cda_text_of(ct, bytes).await
    }

    async fn cda_text_of(&self, ct: String, bytes: Vec<u8>) -> IngestResult<(String, Vec<u8>, String)> {
        let xml = if ct == "application/pdf" {
            self.pdf.extract_cda(&bytes).await.map_err(|e| IngestError::new(500, "storage", e.to_string()))?
        } else {
            bytes.clone()
        };
        let text = validate::parse(&xml).map_err(|p| IngestError::new(500, "storage", p.message))?;
        Ok((text, bytes, ct))
    }

    /// The HTML rendering (a fragment) of a document the actor may read.
    pub async fn rendering(&self, actor: &Actor, docref_id: &str) -> IngestResult<String> {
        self.rendering_at(actor, docref_id, 1).await
    }

    /// The rendering with its title at heading level `top`.
    pub async fn rendering_at(&self, actor: &Actor, docref_id: &str, top: usize) -> IngestResult<String> {
        let (text, _, _) = self.cda_text(actor, docref_id).await?;
        let doc = validate::tree(&text).map_err(|p| IngestError::new(500, "storage", p.message))?;
        Ok(fascicolo_cda::render::render_at(&doc, top))
    }

    /// The rendering of a document the page has already opened ([`DocDetail`] exists only as
    /// the result of a read through the gate, which wrote its access-log entry): no second read,
    /// so one opening is one entry in the citizen's log.
    pub async fn rendering_of(&self, detail: &crate::portal::DocDetail, top: usize) -> IngestResult<String> {
        let (ct, bytes) = self.original_of(&detail.resource).await?;
        let (text, _, _) = self.cda_text_of(ct, bytes).await?;
        let doc = validate::tree(&text).map_err(|p| IngestError::new(500, "storage", p.message))?;
        Ok(fascicolo_cda::render::render_at(&doc, top))
    }

    /// A PDF of the document: the original when it was a PDF, otherwise one generated from the
    /// rendering (with the CDA2 embedded).
    /// With it, a file name that says what it is: `referto-di-laboratorio-2026-11-04.pdf`.
    pub async fn pdf(&self, actor: &Actor, docref_id: &str) -> IngestResult<(Vec<u8>, String)> {
        let (text, bytes, ct) = self.cda_text(actor, docref_id).await?;
        let doc = validate::tree(&text).map_err(|p| IngestError::new(500, "storage", p.message))?;
        let h = mapping::header(&doc);
        let title = if h.title.is_empty() { "Documento clinico".to_string() } else { h.title.clone() };
        let name = pdf_file_name(&title, h.effective.as_deref());
        if ct == "application/pdf" {
            return Ok((bytes, name));
        }
        let blocks = fascicolo_cda::render::blocks(&doc);
        let out = pdf::document_pdf(&title, &blocks, Some(("documento-cda.xml", text.as_bytes())))
            .map_err(|e| IngestError::new(500, "pdf", e.to_string()))?;
        Ok((out, name))
    }
}

/// A document's file name: its title in lower-case ASCII words and its day in Rome.
pub fn pdf_file_name(title: &str, effective: Option<&str>) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        let c = match c {
            'à' | 'á' | 'À' => 'a',
            'è' | 'é' | 'È' | 'É' => 'e',
            'ì' | 'í' => 'i',
            'ò' | 'ó' => 'o',
            'ù' | 'ú' => 'u',
            c => c,
        };
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let day = effective
        .and_then(mapping::fhir_datetime)
        .and_then(|d| fascicolo_domain::rome::date_of(&d))
        .map(|d| d.to_string())
        .unwrap_or_default();
    match (slug.is_empty(), day.is_empty()) {
        (true, true) => "documento.pdf".into(),
        (true, false) => format!("documento-{day}.pdf"),
        (false, true) => format!("{slug}.pdf"),
        (false, false) => format!("{slug}-{day}.pdf"),
    }
}

/// The resources a DocumentReference lists as mapped from it.
fn related(docref: &Value) -> Vec<String> {
    docref["context"]["related"].as_array().into_iter().flatten().filter_map(|r| r["reference"].as_str().map(str::to_string)).collect()
}

/// Transaction entries retiring a document: its DocumentReference gets `status`, the
/// resources mapped from it are deleted.
fn retire(docref: &Value, status: &str) -> Vec<Value> {
    let mut old = docref.clone();
    old["status"] = json!(status);
    if let Some(m) = old.get_mut("meta").and_then(Value::as_object_mut) {
        m.remove("versionId");
        m.remove("lastUpdated");
    }
    let id = docref["id"].as_str().unwrap_or_default();
    let mut entries = vec![json!({"resource": old, "request": {"method": "PUT", "url": format!("DocumentReference/{id}")}})];
    for r in related(docref) {
        entries.push(json!({"request": {"method": "DELETE", "url": r}}));
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::pdf_file_name;

    #[test]
    fn a_document_file_is_named_by_its_title_and_day_in_rome() {
        assert_eq!(pdf_file_name("Referto di laboratorio", Some("20261104113000+0100")), "referto-di-laboratorio-2026-11-04.pdf");
        // 23:30 UTC on the 3rd is the 4th in Rome
        assert_eq!(
            pdf_file_name("Lettera di dimissione ospedaliera", Some("20261103233000+0000")),
            "lettera-di-dimissione-ospedaliera-2026-11-04.pdf"
        );
        assert_eq!(pdf_file_name("Verbale di Pronto Soccorso", Some("20260814")), "verbale-di-pronto-soccorso-2026-08-14.pdf");
        assert_eq!(pdf_file_name("Attività: è «tutto»", None), "attivita-e-tutto.pdf");
        assert_eq!(pdf_file_name("", None), "documento.pdf");
    }
}
