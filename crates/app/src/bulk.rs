//! FHIR Bulk Data Access `$export` (decision 0012): the asynchronous kick-off, status and
//! NDJSON-files pattern of the Bulk Data IG, at system, `Patient` and `Group/[id]` level, with
//! `_type`, `_since` and `_typeFilter`.
//!
//! The export is the population-wide path (ARCHITECTURE.md scale rule 6): it walks the store in
//! primary-key order ([`fascicolo_store::ScanQuery`]), so each record's resources pass together
//! through the one gate, and each record an export reads gets one access-log entry, written
//! before any file that holds its data can be downloaded (invariant 4). Nothing labelled with a
//! visibility restriction (a hidden document, an art. 6 item, or anything derived from them)
//! leaves in bulk, whoever asks (invariant 5).
//!
//! A job lives in the store as a record of the sign-in machinery's kind (so every app server
//! sees it) and is run by one server at a time under a lease. It records its progress at
//! checkpoints: the files written so far and the key it reached. A server that dies mid-export
//! leaves the lease to expire; the next status poll, on any server, takes the job over and goes
//! on from the last checkpoint (what was written after it is written again; the access log may
//! then hold an entry twice, never one too few). Files are kept in their own blob store and
//! expire with the job.

use crate::access::redact;
use crate::auth::subject_of;
use crate::error::{AppError, AppResult};
use crate::fhir::in_patient_compartment;
use crate::gate::{Actor, Op, Who};
use crate::FhirService;
use fascicolo_blobs::BlobStore;
use fascicolo_domain::privacy::labels;
use fascicolo_domain::PatientKey;
use fascicolo_fhir::datetime;
use fascicolo_fhir::model::model;
use fascicolo_fhir::search::{parse_search, Clause};
use fascicolo_store::{AuthRecord, ScanQuery, SearchPlan, Stored};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Record kinds: a job, the one export a client may have running, a runner's lease.
const JOB_KIND: &str = "bulk-export";
const ACTIVE_KIND: &str = "bulk-export-active";
const LEASE_KIND: &str = "bulk-export-lease";
/// A cancelled job's tombstone: a runner that saved its progress after the cancel sees it and
/// takes the job away again.
const CANCELLED_KIND: &str = "bulk-export-cancelled";
/// How long a job and its files are kept after it starts.
pub const JOB_TTL_MS: i64 = 24 * 3_600_000;
/// Every visibility restriction bit (see `access::bit`): none of these rows is exported.
const ALL_RESTRICTIONS: i64 = 1 | 2 | 4 | 8;
/// How many records one scan of a `Group` export names at once.
const GROUP_CHUNK: usize = 200;
/// Most `Type/id` references listed in one record's access-log entry (documents first).
const LOGGED_ENTITIES: usize = 50;

/// The media types `_outputFormat` may name.
pub const OUTPUT_FORMATS: [&str; 3] = ["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// How a runner paces itself.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Rows per scan.
    pub page: usize,
    /// A file is closed at this size (one line may take it past).
    pub file_bytes: usize,
    /// Progress is recorded after this many bytes of output.
    pub checkpoint_bytes: usize,
    /// A runner's lease, refreshed every `lease_ms / 4`.
    pub lease_ms: i64,
    /// Tests: the runner stops after this many checkpoints, as a killed server would (holding
    /// its lease until it expires).
    pub crash_after_checkpoints: Option<usize>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { page: 2_000, file_bytes: 32 << 20, checkpoint_bytes: 64 << 20, lease_ms: 30_000, crash_after_checkpoints: None }
    }
}

/// The export service: the FHIR service's store and gate, and where files go.
#[derive(Clone)]
pub struct Exports {
    fhir: FhirService,
    blobs: Arc<dyn BlobStore>,
    tuning: Arc<Tuning>,
}

/// What an export covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    /// `[base]/$export`: every resource.
    System,
    /// `[base]/Patient/$export`: every patient's record.
    Patient,
    /// `[base]/Group/[id]/$export`: the records of the group's active members.
    Group(String),
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutFile {
    pub resource_type: String,
    pub sha256: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    Running,
    Done,
    Failed(String),
}

/// Where a runner is: the chunk of group members, and the last key written at the checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Cursor {
    chunk: usize,
    after: Option<(String, String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    actor: Actor,
    request: String,
    level: Level,
    types: Vec<String>,
    since: Option<i64>,
    /// `_typeFilter`: (type, query).
    filters: Vec<(String, String)>,
    /// A group's member records (sorted keys), fixed at kick-off.
    patients: Vec<String>,
    transaction_time: i64,
    state: State,
    cursor: Cursor,
    files: Vec<OutFile>,
    exported: u64,
    /// Runs that ended in a fault (the job fails after three).
    faults: u32,
}

/// What a status poll finds.
#[derive(Debug, Clone)]
pub enum Status {
    /// Still running: resources written so far.
    InProgress {
        exported: u64,
    },
    Done(Manifest),
    /// Failed; the message says why (for the client).
    Failed(String),
}

/// A finished export.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub transaction_time: i64,
    pub request: String,
    pub files: Vec<OutFile>,
    /// When the job and its files expire (ms).
    pub expires: i64,
}

/// A kick-off's parameters, checked.
struct Spec {
    types: Vec<String>,
    since: Option<i64>,
    filters: Vec<(String, String)>,
}

fn key_text(k: PatientKey) -> String {
    k.uuid().to_string()
}

fn key_of(s: &str) -> AppResult<PatientKey> {
    uuid::Uuid::parse_str(s).map(PatientKey::from_uuid).map_err(|_| AppError::Internal("an export job names a malformed record key".into()))
}

fn may_export(actor: &Actor) -> AppResult<()> {
    match &actor.who {
        Who::Client { platform: true, .. } => Ok(()),
        Who::Anonymous => Err(AppError::Unauthorized("sign-in required: bulk export needs a backend-services access token".into())),
        _ => Err(AppError::Forbidden(
            "bulk export is for the platform's backend services (SMART Backend Services, system/*.rs scopes); \
             people read records through searches and $everything"
                .into(),
        )),
    }
}

/// Check the kick-off's parameters (Bulk Data IG 2.0: `_outputFormat`, `_type`, `_since`,
/// `_typeFilter`; anything else is refused rather than ignored).
fn parse_spec(actor: &Actor, level: &Level, pairs: &[(String, String)]) -> AppResult<Spec> {
    let mut types: Vec<String> = Vec::new();
    let mut since = None;
    let mut filters = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "_outputFormat" => {
                if !OUTPUT_FORMATS.contains(&v.as_str()) {
                    return Err(AppError::BadRequest(format!("_outputFormat '{v}' is not offered: use application/fhir+ndjson")));
                }
            }
            "_type" => {
                for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !model().is_concrete_resource(t) {
                        return Err(AppError::BadRequest(format!("_type: '{t}' is not a FHIR R4 resource type")));
                    }
                    if !types.iter().any(|x| x == t) {
                        types.push(t.to_string());
                    }
                }
            }
            "_since" => {
                let (range, _) = datetime::parse(v)
                    .ok_or_else(|| AppError::BadRequest(format!("_since '{v}' is not a FHIR instant (e.g. 2026-01-01T00:00:00Z)")))?;
                if range.low > datetime::now_ms() {
                    return Err(AppError::BadRequest(format!("_since '{v}' is in the future")));
                }
                since = Some(range.low);
            }
            "_typeFilter" => {
                for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    let (t, q) = f.split_once('?').ok_or_else(|| {
                        AppError::BadRequest(format!("_typeFilter '{f}' must be a resource type and a search (Type?param=value)"))
                    })?;
                    if !model().is_concrete_resource(t) {
                        return Err(AppError::BadRequest(format!("_typeFilter: '{t}' is not a FHIR R4 resource type")));
                    }
                    let qp: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
                    if let Some((p, _)) = qp.iter().find(|(p, _)| {
                        p.starts_with('_') && !matches!(p.as_str(), "_id" | "_lastUpdated" | "_tag" | "_profile" | "_security")
                    }) {
                        return Err(AppError::BadRequest(format!(
                            "_typeFilter '{f}': '{p}' is not a filter (paging, sorting and includes do not apply)"
                        )));
                    }
                    parse_search(Some(t), &qp).map_err(|e| AppError::BadRequest(format!("_typeFilter '{f}': {e}")))?;
                    filters.push((t.to_string(), q.to_string()));
                }
            }
            "patient" | "includeAssociatedData" | "_elements" | "organizeOutputBy" | "allowPartialManifests" => {
                return Err(AppError::BadRequest(format!("the export parameter '{k}' is not supported by this server")));
            }
            other => return Err(AppError::BadRequest(format!("'{other}' is not a $export parameter"))),
        }
    }
    let patient_level = !matches!(level, Level::System);
    for t in types.iter().chain(filters.iter().map(|(t, _)| t)) {
        if t == "AuditEvent" {
            return Err(AppError::BadRequest(
                "the access log is not exported in bulk: each record's log is read with AuditEvent searches".into(),
            ));
        }
    }
    for t in &types {
        if patient_level && !in_patient_compartment(t) {
            return Err(AppError::BadRequest(format!(
                "_type: {t} is not part of a patient's record; export it at system level ([base]/$export)"
            )));
        }
        if !actor.scope_permits(t, Op::Read) {
            return Err(AppError::Forbidden(format!("the token's scopes do not allow reading {t}")));
        }
    }
    if let Some((t, _)) = filters.iter().find(|(t, _)| !types.is_empty() && !types.contains(t)) {
        return Err(AppError::BadRequest(format!("_typeFilter names {t}, which _type leaves out")));
    }
    Ok(Spec { types, since, filters })
}

fn rec(kind: &str, id: &str, subject: &str, data: String, expires_at: i64) -> AuthRecord {
    AuthRecord { kind: kind.into(), id: id.into(), subject: subject.into(), data, expires_at }
}

impl Exports {
    pub fn new(fhir: FhirService, blobs: Arc<dyn BlobStore>) -> Self {
        Self::with_tuning(fhir, blobs, Tuning::default())
    }

    pub fn with_tuning(fhir: FhirService, blobs: Arc<dyn BlobStore>, tuning: Tuning) -> Self {
        Exports { fhir, blobs, tuning: Arc::new(tuning) }
    }

    fn store(&self) -> &dyn fascicolo_store::Store {
        self.fhir.store().as_ref()
    }

    /// Start an export; returns the job's id (its status URL is `[base]/$export-status/{id}`).
    /// A client runs one export at a time: a second kick-off while one runs is refused (429),
    /// naming the running one.
    pub async fn kick_off(&self, actor: &Actor, level: Level, pairs: &[(String, String)], request: &str, base: &str) -> AppResult<String> {
        may_export(actor)?;
        let spec = parse_spec(actor, &level, pairs)?;
        let patients = match &level {
            Level::Group(id) => self.group_members(actor, id).await?,
            _ => Vec::new(),
        };
        let now = datetime::now_ms();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let subject = subject_of(actor);
        let expires = now + JOB_TTL_MS;
        // the one running export per client: claimed first, so two kick-offs never both start
        let mut claimed = self.store().auth_put(&rec(ACTIVE_KIND, &subject, &subject, id.clone(), expires), false).await?;
        if !claimed {
            match self.store().auth_get(ACTIVE_KIND, &subject, now).await? {
                Some(running) => {
                    return Err(AppError::TooMany(format!(
                        "an export by this client is already in progress: poll {base}/$export-status/{} or cancel it (DELETE) before starting another",
                        running.data
                    )))
                }
                None => {
                    // an expired claim not yet purged
                    self.store().auth_purge(now).await?;
                    claimed = self.store().auth_put(&rec(ACTIVE_KIND, &subject, &subject, id.clone(), expires), false).await?;
                }
            }
        }
        if !claimed {
            return Err(AppError::TooMany(
                "an export by this client has just started; poll it or cancel it before starting another".into(),
            ));
        }
        let job = Job {
            actor: actor.clone(),
            request: request.to_string(),
            level,
            types: spec.types,
            since: spec.since,
            filters: spec.filters,
            patients,
            transaction_time: now,
            state: State::Running,
            cursor: Cursor::default(),
            files: Vec::new(),
            exported: 0,
            faults: 0,
        };
        let runner = uuid::Uuid::new_v4().to_string();
        let saved = async {
            self.save(&id, &job).await?;
            self.store().auth_put(&rec(LEASE_KIND, &id, &subject, runner.clone(), now + self.tuning.lease_ms), true).await?;
            AppResult::Ok(())
        }
        .await;
        if let Err(e) = saved {
            self.store().auth_delete(ACTIVE_KIND, &subject).await.ok();
            return Err(e);
        }
        self.spawn(id.clone(), runner);
        Ok(id)
    }

    /// The sorted record keys of a group's active members that are patients.
    async fn group_members(&self, actor: &Actor, id: &str) -> AppResult<Vec<String>> {
        let v = self.fhir.read(actor, "Group", id).await?;
        let mut keys: Vec<PatientKey> = v.resource["member"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["inactive"] != Value::Bool(true))
            .filter_map(|m| m["entity"]["reference"].as_str())
            .filter_map(|r| r.strip_prefix("Patient/"))
            .map(PatientKey::for_patient_id)
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys.into_iter().map(key_text).collect())
    }

    async fn save(&self, id: &str, job: &Job) -> AppResult<()> {
        let data = serde_json::to_string(job).map_err(|e| AppError::Internal(format!("an export job: {e}")))?;
        let expires = job.transaction_time + JOB_TTL_MS;
        self.store().auth_put(&rec(JOB_KIND, id, &subject_of(&job.actor), data, expires), true).await?;
        Ok(())
    }

    /// A runner records the job; false (and the job gone again) when it was cancelled
    /// meanwhile.
    async fn save_running(&self, id: &str, job: &Job) -> AppResult<bool> {
        self.save(id, job).await?;
        if self.store().auth_get(CANCELLED_KIND, id, datetime::now_ms()).await?.is_some() {
            self.store().auth_delete(JOB_KIND, id).await?;
            self.store().auth_delete(LEASE_KIND, id).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn load_raw(&self, id: &str) -> AppResult<Option<Job>> {
        let Some(r) = self.store().auth_get(JOB_KIND, id, datetime::now_ms()).await? else { return Ok(None) };
        serde_json::from_str(&r.data).map(Some).map_err(|e| AppError::Internal(format!("an export job: {e}")))
    }

    /// The job, for the client that started it only (anyone else: not found, as for a job
    /// that never existed).
    async fn load(&self, actor: &Actor, id: &str) -> AppResult<Job> {
        may_export(actor)?;
        let not_found = || AppError::NotFound(format!("no export job {id} (unknown, cancelled or expired)"));
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        match self.load_raw(id).await? {
            // a runner may record a cancelled job for a moment before it sees the tombstone
            Some(job) if subject_of(&job.actor) == subject_of(actor) => {
                if self.store().auth_get(CANCELLED_KIND, id, datetime::now_ms()).await?.is_some() {
                    return Err(not_found());
                }
                Ok(job)
            }
            _ => Err(not_found()),
        }
    }

    /// A status poll. A running job whose runner stopped (its server died) is taken over here.
    pub async fn status(&self, actor: &Actor, id: &str) -> AppResult<Status> {
        let job = self.load(actor, id).await?;
        Ok(match job.state {
            State::Done => Status::Done(Manifest {
                transaction_time: job.transaction_time,
                request: job.request,
                files: job.files,
                expires: job.transaction_time + JOB_TTL_MS,
            }),
            State::Failed(why) => Status::Failed(why),
            State::Running => {
                self.resume_if_abandoned(id).await?;
                Status::InProgress { exported: job.exported }
            }
        })
    }

    /// Take over a job whose lease has expired: only one poller wins the new lease.
    async fn resume_if_abandoned(&self, id: &str) -> AppResult<bool> {
        let now = datetime::now_ms();
        if self.store().auth_get(LEASE_KIND, id, now).await?.is_some() {
            return Ok(false);
        }
        self.store().auth_purge(now).await?;
        let runner = uuid::Uuid::new_v4().to_string();
        if !self.store().auth_put(&rec(LEASE_KIND, id, "", runner.clone(), now + self.tuning.lease_ms), false).await? {
            return Ok(false);
        }
        tracing::info!(job = id, "resuming an export whose runner stopped");
        self.spawn(id.to_string(), runner);
        Ok(true)
    }

    /// Cancel a job (running or finished): its status and files are gone at once.
    pub async fn cancel(&self, actor: &Actor, id: &str) -> AppResult<()> {
        let job = self.load(actor, id).await?;
        let expires = job.transaction_time + JOB_TTL_MS;
        self.store().auth_put(&rec(CANCELLED_KIND, id, &subject_of(actor), String::new(), expires), true).await?;
        self.store().auth_delete(JOB_KIND, id).await?;
        self.release(id, &job).await
    }

    /// The client's claim and the runner's lease go (the claim only if it is this job's).
    async fn release(&self, id: &str, job: &Job) -> AppResult<()> {
        let subject = subject_of(&job.actor);
        if self.store().auth_get(ACTIVE_KIND, &subject, datetime::now_ms()).await?.is_some_and(|r| r.data == id) {
            self.store().auth_delete(ACTIVE_KIND, &subject).await?;
        }
        self.store().auth_delete(LEASE_KIND, id).await?;
        Ok(())
    }

    /// One output file of a finished job, for the client that started it.
    pub async fn file(&self, actor: &Actor, id: &str, n: usize) -> AppResult<(OutFile, Vec<u8>)> {
        let job = self.load(actor, id).await?;
        if job.state != State::Done {
            return Err(AppError::NotFound(format!("export {id} has no files yet: poll its status until it is complete")));
        }
        let f = job.files.get(n).cloned().ok_or_else(|| AppError::NotFound(format!("export {id} has no file {n}")))?;
        let bytes = self.blobs.get(&f.sha256).await?.ok_or_else(|| AppError::NotFound(format!("export {id}: file {n} has expired")))?;
        Ok((f, bytes))
    }

    /// Remove files older than a job lives; returns how many.
    pub async fn sweep(&self) -> AppResult<usize> {
        let old = self.blobs.written_before(datetime::now_ms() - JOB_TTL_MS).await?;
        for h in &old {
            self.blobs.delete(h).await?;
        }
        Ok(old.len())
    }

    /// Run a job as `runner` (the lease names it).
    fn spawn(&self, id: String, runner: String) {
        let me = self.clone();
        tokio::spawn(async move { me.run(id, runner).await });
    }

    async fn run(self, id: String, runner: String) {
        match self.run_job(&id, &runner).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "an export run failed");
                let failed = async {
                    let Some(mut job) = self.load_raw(&id).await? else { return AppResult::Ok(()) };
                    job.faults += 1;
                    if job.faults >= 3 {
                        job.state = State::Failed("the export could not be completed; start it again".into());
                        if self.save_running(&id, &job).await? {
                            self.release(&id, &job).await?;
                        }
                    } else if self.save_running(&id, &job).await? {
                        // the next status poll takes it over again
                        self.store().auth_delete(LEASE_KIND, &id).await?;
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = failed {
                    tracing::warn!(job = %id, error = %e, "recording an export's failure failed; the lease will expire");
                }
            }
        }
    }

    /// Is the job still this runner's (not cancelled, not taken over after this runner
    /// stalled past its lease)? Refreshes the lease.
    async fn still_mine(&self, id: &str, runner: &str) -> AppResult<bool> {
        let now = datetime::now_ms();
        if self.store().auth_get(JOB_KIND, id, now).await?.is_none() {
            return Ok(false);
        }
        if self.store().auth_get(LEASE_KIND, id, now).await?.is_some_and(|l| l.data != runner) {
            return Ok(false);
        }
        self.store().auth_put(&rec(LEASE_KIND, id, "", runner.to_string(), now + self.tuning.lease_ms), true).await?;
        Ok(true)
    }

    /// The next scan from where the job is, or `None` when every row has been seen.
    fn next_scan(&self, job: &Job) -> AppResult<Option<ScanQuery>> {
        let mut q = ScanQuery {
            types: job.types.clone(),
            since: job.since,
            deny_bits: ALL_RESTRICTIONS,
            limit: self.tuning.page,
            patients_only: !matches!(job.level, Level::System),
            ..Default::default()
        };
        if let Some((k, t, i)) = &job.cursor.after {
            q.after = Some((key_of(k)?, t.clone(), i.clone()));
        }
        if let Level::Group(_) = job.level {
            let chunk: Vec<&String> = job.patients.iter().skip(job.cursor.chunk * GROUP_CHUNK).take(GROUP_CHUNK).collect();
            if chunk.is_empty() {
                return Ok(None);
            }
            q.patients = chunk.into_iter().map(|k| key_of(k)).collect::<AppResult<_>>()?;
        }
        Ok(Some(q))
    }

    async fn run_job(&self, id: &str, runner: &str) -> AppResult<()> {
        let Some(mut job) = self.load_raw(id).await? else { return Ok(()) };
        if job.state != State::Running {
            return Ok(());
        }
        let actor = job.actor.clone();
        let mut out = Output::default();
        let mut last_beat = datetime::now_ms();
        let mut checkpoints = 0usize;
        // the next page is read while this one is written out
        let scan = |q: ScanQuery| {
            let store = Arc::clone(self.fhir.store());
            tokio::spawn(async move { store.scan(&q).await })
        };
        let mut next = self.next_scan(&job)?.map(scan);
        while let Some(reading) = next.take() {
            let page = reading.await.map_err(|e| AppError::Internal(format!("an export's read: {e}")))??;
            match page.last() {
                Some(last) => job.cursor.after = Some((key_text(last.patient_key), last.resource_type.clone(), last.id.clone())),
                None if matches!(job.level, Level::Group(_)) => job.cursor = Cursor { chunk: job.cursor.chunk + 1, after: None },
                None => break,
            }
            next = self.next_scan(&job)?.map(scan);
            let page = self.apply_filters(&job, page).await?;
            let mut gate = self.fhir.gate(&actor);
            for s in page {
                if s.json.contains(labels::VISIBILITY) || !gate.admit(&s).await? {
                    continue;
                }
                let line = if s.json.contains(labels::HIDING) || s.json.contains('\n') {
                    let mut v = crate::fhir::parse_stored(&s)?;
                    if !s.patient_key.is_shared() {
                        redact(&mut v, &gate.access(s.patient_key).await?.relation);
                    }
                    v.to_string()
                } else {
                    s.json
                };
                out.add(&s.resource_type, &s.id, s.patient_key, line);
                if out.open_bytes(&s.resource_type) >= self.tuning.file_bytes {
                    out.close(&s.resource_type, self.blobs.as_ref()).await?;
                }
            }
            if out.since_checkpoint >= self.tuning.checkpoint_bytes {
                if !self.checkpoint(id, runner, &mut job, &mut out).await? {
                    return Ok(());
                }
                checkpoints += 1;
                if self.tuning.crash_after_checkpoints == Some(checkpoints) {
                    return Ok(());
                }
            }
            let now = datetime::now_ms();
            if now - last_beat > self.tuning.lease_ms / 4 {
                last_beat = now;
                if !self.still_mine(id, runner).await? {
                    return Ok(());
                }
            }
        }
        if !self.checkpoint(id, runner, &mut job, &mut out).await? {
            return Ok(());
        }
        job.state = State::Done;
        if !self.save_running(id, &job).await? {
            return Ok(());
        }
        self.release(id, &job).await?;
        tracing::info!(job = id, resources = job.exported, files = job.files.len(), "export complete");
        Ok(())
    }

    /// `_typeFilter`: of a page's resources of a filtered type, those that one of its filters
    /// matches (the store's own search decides, on the page's ids).
    async fn apply_filters(&self, job: &Job, page: Vec<Stored>) -> AppResult<Vec<Stored>> {
        if job.filters.is_empty() {
            return Ok(page);
        }
        let mut by_type: HashMap<&str, Vec<String>> = HashMap::new();
        for s in &page {
            if job.filters.iter().any(|(t, _)| *t == s.resource_type) {
                by_type.entry(s.resource_type.as_str()).or_default().push(s.id.clone());
            }
        }
        let mut keep: HashSet<(String, String)> = HashSet::new();
        for (t, q) in &job.filters {
            let Some(ids) = by_type.get(t.as_str()) else { continue };
            let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
            let req = parse_search(Some(t), &pairs).map_err(|e| AppError::Internal(format!("a stored _typeFilter: {e}")))?;
            let mut clauses = req.clauses;
            clauses.push(Clause::Id(ids.clone()));
            let plan = SearchPlan { resource_type: Some(t.clone()), clauses, limit: ids.len(), ..Default::default() };
            for h in self.store().search(&plan).await? {
                keep.insert((h.stored.resource_type, h.stored.id));
            }
        }
        Ok(page
            .into_iter()
            .filter(|s| !job.filters.iter().any(|(t, _)| *t == s.resource_type) || keep.contains(&(s.resource_type.clone(), s.id.clone())))
            .collect())
    }

    /// Close every open file, log each record read since the last checkpoint, and record the
    /// progress. False when the job is no longer this runner's (cancelled or taken over).
    async fn checkpoint(&self, id: &str, runner: &str, job: &mut Job, out: &mut Output) -> AppResult<bool> {
        let open: Vec<String> = out.open.keys().cloned().collect();
        for t in open {
            out.close(&t, self.blobs.as_ref()).await?;
        }
        if !self.still_mine(id, runner).await? {
            return Ok(false);
        }
        // the access log first: an entry may be written twice (a crash before the progress is
        // recorded), never missing for data a file holds
        let actor = job.actor.clone();
        let mut gate = self.fhir.gate(&actor);
        let what = format!("{} (bulk export {id})", job.request);
        for (key, seen) in std::mem::take(&mut out.records) {
            let a = gate.access(key).await?;
            let query = format!("{what}: {} resources", seen.count);
            gate.record(&a, "export", seen.entities(), Some(query));
        }
        gate.commit_audit().await?;
        job.exported += out.written;
        job.files.append(&mut out.closed);
        out.written = 0;
        out.since_checkpoint = 0;
        self.save_running(id, job).await
    }
}

/// A record's share of an export since the last checkpoint.
#[derive(Default)]
struct Seen {
    count: u64,
    documents: Vec<String>,
    others: Vec<String>,
}

impl Seen {
    /// What the access-log entry names: documents first, at most [`LOGGED_ENTITIES`].
    fn entities(self) -> Vec<String> {
        self.documents.into_iter().chain(self.others).take(LOGGED_ENTITIES).collect()
    }
}

/// Files being written by a runner.
#[derive(Default)]
struct Output {
    /// Per type: the open file's bytes and lines.
    open: BTreeMap<String, (Vec<u8>, u64)>,
    /// Files closed since the last checkpoint.
    closed: Vec<OutFile>,
    records: BTreeMap<PatientKey, Seen>,
    written: u64,
    since_checkpoint: usize,
}

impl Output {
    fn add(&mut self, resource_type: &str, id: &str, key: PatientKey, line: String) {
        let (buf, n) = self.open.entry(resource_type.to_string()).or_default();
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        *n += 1;
        self.written += 1;
        self.since_checkpoint += line.len() + 1;
        if !key.is_shared() {
            let seen = self.records.entry(key).or_default();
            seen.count += 1;
            let r = format!("{resource_type}/{id}");
            if resource_type == "DocumentReference" {
                seen.documents.push(r);
            } else if seen.others.len() < LOGGED_ENTITIES {
                seen.others.push(r);
            }
        }
    }

    fn open_bytes(&self, resource_type: &str) -> usize {
        self.open.get(resource_type).map_or(0, |(b, _)| b.len())
    }

    async fn close(&mut self, resource_type: &str, blobs: &dyn BlobStore) -> AppResult<()> {
        let Some((bytes, count)) = self.open.remove(resource_type) else { return Ok(()) };
        if count == 0 {
            return Ok(());
        }
        let sha256 = blobs.put(&bytes).await?;
        self.closed.push(OutFile { resource_type: resource_type.to_string(), sha256, count });
        Ok(())
    }
}
