//! One storage interface for every backend (SQLite, PostgreSQL), the types it speaks, the SQL
//! they share, and the conformance suite every backend must pass (feature `conformance`).
//!
//! Rows that belong to a patient carry the patient key first in every primary key (see
//! `docs/schema.md` for how each table is distributed when the database is sharded).
#![forbid(unsafe_code)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod content;
pub mod migrations;
pub mod sql;

pub use fascicolo_domain::PatientKey;
use fascicolo_fhir::params::IndexEntry;
use fascicolo_fhir::search::{Clause, SortKey};

/// How a version came to be (recorded in history, shown as `Bundle.entry.request.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Create,
    Update,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Create => "POST",
            Method::Update => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
    pub fn parse(s: &str) -> Method {
        match s {
            "POST" => Method::Create,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => Method::Update,
        }
    }
}

/// A stored version of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    /// Milliseconds since the epoch, UTC.
    pub last_updated: i64,
    pub deleted: bool,
    pub patient_key: PatientKey,
    /// The resource JSON, with `id` and `meta` set. Empty for a deletion in history.
    pub json: String,
    pub method: Method,
}

/// What must hold for a write to apply (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No resource with this type and id exists (in any partition).
    Absent,
    /// The current version is exactly this one.
    Version(i64),
}

/// One resource write inside an atomic commit.
#[derive(Debug, Clone)]
pub struct Write {
    pub resource_type: String,
    pub id: String,
    pub patient_key: PatientKey,
    /// Where the current version lives when it moves to another partition.
    pub previous_key: Option<PatientKey>,
    pub version: i64,
    pub last_updated: i64,
    pub method: Method,
    /// The new content; for a delete, the last content (kept for audit) .
    pub json: String,
    pub index: Vec<IndexEntry>,
    pub expect: Expect,
    /// Who may not see this version, as bits the app defines (0: no restriction); searches
    /// filter on it with [`Visibility::deny_bits`] without probing the index.
    pub restrict: i64,
}

/// A search over current, non-deleted resources.
#[derive(Debug, Clone, Default)]
pub struct SearchPlan {
    /// `None` searches every type (system search, `$everything`).
    pub resource_type: Option<String>,
    /// Restrict to one patient's compartment (one partition).
    pub patient: Option<PatientKey>,
    pub clauses: Vec<Clause>,
    pub sort: Vec<SortKey>,
    pub limit: usize,
    /// Keyset cursor: the sort values of the last row seen, then its type and id.
    pub after: Option<Vec<serde_json::Value>>,
    /// Rows the viewer may not see are left out of results, counts, chained targets and `_has`
    /// sources alike, so nothing hidden can be counted or inferred (ARCHITECTURE.md invariant 5).
    pub visibility: Option<Visibility>,
}

/// A row filter decided by the app's gate. A row is visible when its `restrict` bits share none
/// of `deny_bits` (and `deny_all` is off), or when it carries one of `allow_tags` (the viewer's
/// own work). Shared rows (no patient) are never filtered inside chains and `_has`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visibility {
    /// Restriction bits that hide a row from this viewer.
    pub deny_bits: i64,
    /// Hide every row except those with an `allow_tags` tag.
    pub deny_all: bool,
    /// `meta.tag` codings (system, code) that make a row visible regardless.
    pub allow_tags: Vec<(String, String)>,
}

/// A record of the sign-in machinery (a session, an access token, an OIDC `state`, an
/// authorization code, a signing key), kept in the database so app servers stay stateless.
/// Secrets are stored only as hashes by the callers; `data` is JSON of the caller's own shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRecord {
    pub kind: String,
    pub id: String,
    /// Whose record this is (a person or client), for "sign out everywhere".
    pub subject: String,
    pub data: String,
    /// Milliseconds since the epoch; an expired record is never returned.
    pub expires_at: i64,
}

/// A search result with the values of its sort keys (for the next page's cursor).
#[derive(Debug, Clone)]
pub struct Hit {
    pub stored: Stored,
    pub keys: Vec<serde_json::Value>,
}

/// A walk over current, non-deleted resources in primary-key order (patient key, type, id):
/// the population-wide path of bulk exports (ARCHITECTURE.md scale rule 6), apart from the
/// citizen path. One patient's resources come out together, so a caller can account for each
/// record as it passes.
#[derive(Debug, Clone, Default)]
pub struct ScanQuery {
    /// Only these types (none: every type).
    pub types: Vec<String>,
    /// Only these records (none: every partition, the shared one included unless
    /// `patients_only`).
    pub patients: Vec<PatientKey>,
    /// Leave out the shared partition (practitioners, organisations...).
    pub patients_only: bool,
    /// Only resources changed after this instant (ms since the epoch).
    pub since: Option<i64>,
    /// Leave out rows whose restriction bits share any of these ([`Write::restrict`]).
    pub deny_bits: i64,
    /// Keyset cursor: the (patient key, type, id) of the last row seen.
    pub after: Option<(PatientKey, String, String)>,
    pub limit: usize,
}

/// History of the whole system, a type or an instance, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub patient: Option<PatientKey>,
    pub since: Option<i64>,
    /// Cursor: (last_updated, type, id, version) of the last entry seen.
    pub before: Option<(i64, String, String, i64)>,
    pub limit: usize,
}

/// One entry of the access log (ARCHITECTURE.md invariant 4): an append-only row per access to
/// a patient's record by someone other than the patient, in that patient's partition. The app
/// decides its content (a compact record it turns into a FHIR `AuditEvent` when read); the store
/// keeps it, finds it by time, agent and flags, and never changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    pub patient_key: PatientKey,
    /// When the access happened (ms since the epoch).
    pub recorded: i64,
    pub id: String,
    /// Who accessed (a reference such as `Practitioner/x`, or a client's identifier).
    pub agent: String,
    /// Bits the app defines (e.g. an emergency opening), filtered with [`AccessQuery::flags`].
    pub flags: i64,
    pub content: String,
    /// The entry changes what the gate decides for this record (an emergency opening does):
    /// the record's [`Store::facts_version`] moves on with it.
    pub changes_facts: bool,
}

/// A range of the access log: one record's (or, for the platform, every record's) entries in a
/// time window, optionally of some agents and with some flags, newest or oldest first.
#[derive(Debug, Clone, Default)]
pub struct AccessQuery {
    pub patient: Option<PatientKey>,
    /// Inclusive bounds on `recorded`.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Any of these agents (none: every agent).
    pub agents: Vec<String>,
    /// Entries with all of these bits.
    pub flags: i64,
    /// Keyset cursor: (recorded, id) of the last entry seen.
    pub after: Option<(i64, String)>,
    pub oldest_first: bool,
    pub limit: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("version conflict on {resource_type}/{id}")]
    Conflict { resource_type: String, id: String },
    #[error("bad cursor")]
    BadCursor,
    /// The database cannot be reached or is not answering (connection refused or lost, pool
    /// exhausted, shutting down): worth retrying in a moment.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database has no room left (disk full, quota): nothing of the change was kept.
    #[error("storage full: {0}")]
    Full(String),
    /// A statement ran past the database's time limit and was cancelled.
    #[error("statement timeout: {0}")]
    Timeout(String),
    #[error("database error: {0}")]
    Backend(String),
}

impl StoreError {
    /// The error says the service as a whole is not able to serve (as opposed to one request
    /// failing): readiness reports it.
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Full(_))
    }
}

/// A side effect to carry out after a commit (email, SMS, push, webhook), stored in the same
/// transaction as the change that causes it (ARCHITECTURE.md invariant 6). The worker leases due
/// messages, then marks them done or schedules a retry; consumers must be idempotent. Payloads
/// carry no personal or clinical data (invariant 8): they point at what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// UUID v7: also the order of creation.
    pub id: uuid::Uuid,
    /// The patient the message is about (SHARED when none), so it lives in that partition.
    pub patient_key: PatientKey,
    /// What to do, e.g. `notify.new-document`.
    pub kind: String,
    /// JSON for the consumer.
    pub payload: String,
    /// Not before this instant (ms since the epoch).
    pub available_at: i64,
}

/// A leased message and how many times it has been claimed (this claim included).
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub message: OutboxMessage,
    pub attempts: i64,
}

/// The storage interface. Every method is atomic; `commit` applies all writes or none.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> Result<(), StoreError>;
    /// The highest schema migration applied (see [`migrations`]).
    async fn schema_version(&self) -> Result<i64, StoreError>;
    /// A clean shutdown, after the last request: leave the storage tidy (SQLite folds its
    /// write-ahead log into the database file and truncates it). Writes after it still work.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The current version (a deleted resource comes back with `deleted = true`).
    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<Stored>, StoreError>;
    async fn vread(&self, resource_type: &str, id: &str, version: i64) -> Result<Option<Stored>, StoreError>;
    /// Current, non-deleted versions of many resources (missing ones are skipped).
    async fn read_many(&self, refs: &[(String, String)]) -> Result<Vec<Stored>, StoreError>;
    /// Current versions of many resources, deletions included (as [`Store::read`] returns them;
    /// missing ones are skipped): what a transaction reads before writing.
    async fn read_current_many(&self, refs: &[(String, String)]) -> Result<Vec<Stored>, StoreError>;
    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.commit_with(writes, Vec::new()).await
    }
    /// Commit resource writes and outbox messages together: all or nothing.
    async fn commit_with(&self, writes: Vec<Write>, outbox: Vec<OutboxMessage>) -> Result<(), StoreError> {
        self.commit_all(writes, Vec::new(), outbox).await
    }
    /// Commit resource writes, access-log entries and outbox messages together: all or nothing.
    /// Every record a write touches (and every record of an entry that `changes_facts`) gets a
    /// new [`Store::facts_version`] in the same transaction. An outbox message whose id is
    /// already stored is left as it is (so a message with an id derived from what it is about is
    /// sent once however many commits ask for it).
    async fn commit_all(&self, writes: Vec<Write>, access: Vec<AccessEntry>, outbox: Vec<OutboxMessage>) -> Result<(), StoreError>;
    /// Access-log entries in a range (see [`AccessQuery`]), ordered by `recorded` then `id`.
    async fn access_log(&self, q: &AccessQuery) -> Result<Vec<AccessEntry>, StoreError>;
    /// How many entries the range holds (its `after` and `limit` ignored).
    async fn access_count(&self, q: &AccessQuery) -> Result<u64, StoreError>;
    /// One access-log entry by id: in the given record, or (without one) in the record the
    /// locator names for an `AuditEvent` of that id (entries moved from an older schema).
    async fn access_entry(&self, patient: Option<PatientKey>, id: &str) -> Result<Option<AccessEntry>, StoreError>;
    /// A number that changes whenever a write touches the record or an entry that
    /// `changes_facts` is logged in it (0 for a record never written): what the gate decided
    /// about the record may be reused while it stays the same.
    async fn facts_version(&self, patient: PatientKey) -> Result<i64, StoreError>;
    /// [`Store::read`], and the facts version of the record the resource lives in (one round
    /// trip where the backend can): what an audited read needs before the gate decides.
    async fn read_with_facts(&self, resource_type: &str, id: &str) -> Result<Option<(Stored, i64)>, StoreError> {
        let Some(s) = self.read(resource_type, id).await? else { return Ok(None) };
        let v = self.facts_version(s.patient_key).await?;
        Ok(Some((s, v)))
    }
    /// Lease up to `limit` due messages (not done, `available_at <= now`) until `now + lease_ms`,
    /// oldest first; each claim counts an attempt. Concurrent claimers get disjoint messages.
    async fn outbox_claim(&self, now: i64, lease_ms: i64, limit: usize) -> Result<Vec<Claimed>, StoreError>;
    /// The message was handled: it is never claimed again.
    async fn outbox_done(&self, patient_key: PatientKey, id: uuid::Uuid, now: i64) -> Result<(), StoreError>;
    /// Handling failed: claimable again from `next_at`, with the error kept for operators.
    async fn outbox_retry(&self, patient_key: PatientKey, id: uuid::Uuid, next_at: i64, error: &str) -> Result<(), StoreError>;
    async fn search(&self, plan: &SearchPlan) -> Result<Vec<Hit>, StoreError>;
    async fn count(&self, plan: &SearchPlan) -> Result<u64, StoreError>;
    async fn history(&self, q: &HistoryQuery) -> Result<Vec<Stored>, StoreError>;
    /// The next rows of a [`ScanQuery`], in primary-key order.
    async fn scan(&self, q: &ScanQuery) -> Result<Vec<Stored>, StoreError>;
    /// Refresh the query planner's statistics (after a bulk load).
    async fn analyze(&self) -> Result<(), StoreError>;
    /// Bytes the store takes on disk, for measurements: SQLite's database file with its
    /// write-ahead log and shared-memory file; PostgreSQL's tables of this store with their
    /// indexes and TOAST (the cluster's write-ahead log is shared and not counted).
    async fn disk_bytes(&self) -> Result<u64, StoreError>;
    /// Store a record; with `replace` false an existing (even expired-but-unpurged) record wins
    /// and the call returns false.
    async fn auth_put(&self, rec: &AuthRecord, replace: bool) -> Result<bool, StoreError>;
    /// A record that has not expired at `now`.
    async fn auth_get(&self, kind: &str, id: &str, now: i64) -> Result<Option<AuthRecord>, StoreError>;
    /// Remove a record and return it if it had not expired: single use (OIDC `state`,
    /// authorization codes). Two concurrent takers never both get it.
    async fn auth_take(&self, kind: &str, id: &str, now: i64) -> Result<Option<AuthRecord>, StoreError>;
    /// Remove one record; true when it existed.
    async fn auth_delete(&self, kind: &str, id: &str) -> Result<bool, StoreError>;
    /// Remove every record of a kind for a subject ("sign out everywhere"); returns how many.
    async fn auth_delete_subject(&self, kind: &str, subject: &str) -> Result<u64, StoreError>;
    /// Remove records expired before `now` (sign-in records, seen marks, submission statuses,
    /// notification claims); returns how many.
    async fn auth_purge(&self, now: i64) -> Result<u64, StoreError>;

    /// The progress a resumable job recorded (JSON of the job's own shape), if any.
    async fn job_mark(&self, job: &str) -> Result<Option<String>, StoreError>;
    /// Record a job's progress, replacing what it recorded before.
    async fn set_job_mark(&self, job: &str, data: &str, now: i64) -> Result<(), StoreError>;
    /// Record a job's mark unless it has one: true when this call recorded it.
    async fn first_job_mark(&self, job: &str, data: &str, now: i64) -> Result<bool, StoreError>;
    /// When a person last opened a list (ms), under an opaque key; marks expire.
    async fn seen_mark(&self, key: &str, now: i64) -> Result<Option<i64>, StoreError>;
    async fn set_seen_mark(&self, key: &str, seen_at: i64, expires_at: i64) -> Result<(), StoreError>;
    /// Record the outcome of an ingestion submission, replacing an earlier one of the workflow.
    async fn put_submission(&self, s: &SubmissionStatus) -> Result<(), StoreError>;
    /// The outcome of a submission that has not expired at `now`.
    async fn submission(&self, workflow: &str, now: i64) -> Result<Option<SubmissionStatus>, StoreError>;
    /// Claim `key` (a patient, a professional and an hour) for the notification `message`: true
    /// when the message holds the claim, made now or by an earlier attempt of its own. The first
    /// claimer keeps it until it expires; two concurrent claimers never both hold it.
    async fn claim_notification(&self, key: &str, message: &str, expires_at: i64) -> Result<bool, StoreError>;
    /// Write `bytes` bytes and remove them: whether the storage has room for such a write.
    async fn probe_write(&self, bytes: usize) -> Result<(), StoreError>;
}

/// The outcome of an ingestion submission, kept for a while for the producer that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionStatus {
    pub workflow: String,
    /// The producer's subject: only it may read the status.
    pub producer: String,
    /// JSON the ingestion service answers with.
    pub body: String,
    pub expires_at: i64,
}
