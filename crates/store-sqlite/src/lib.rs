//! The embedded SQLite backend: one writer connection, a small pool of readers (WAL mode), all
//! work on tokio's blocking pool. Schema and SQL come from `fascicolo_store::sql`.
//!
//! Commits are grouped: concurrent `commit_with` calls queue their writes, and whichever call
//! holds the writer first applies every queued change set in one SQLite transaction, each inside
//! its own savepoint (a conflict in one rolls back that one only). Each caller is answered after
//! the shared COMMIT, so durability and isolation are those of one transaction per change set,
//! while the pages a busy minute touches (index leaves, the WAL, checkpoints) are written once
//! per group instead of once per change set.
#![forbid(unsafe_code)]

use fascicolo_domain::PatientKey;
use fascicolo_store::content;
use fascicolo_store::migrations::{self, Migration};
use fascicolo_store::sql::{self, Dialect, SqlValue};
use fascicolo_store::{
    AccessEntry, AccessQuery, AuthRecord, Claimed, Expect, HistoryQuery, Hit, Method, OutboxMessage, ScanQuery, SearchPlan, Store,
    StoreError, Stored, SubmissionStatus, Write,
};
use parking_lot::Mutex;
use rusqlite::types::{ToSqlOutput, Value as SqlLite};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reader connections kept open between reads. Opening one reads the schema and maps the file,
/// so a pool smaller than the reads in flight (16 clients, each read of an audited access also
/// asking the record's facts version) opens and closes a connection on most reads.
const MAX_IDLE_READERS: usize = 32;
/// Most change sets committed together.
const MAX_GROUP: usize = 64;

/// Change sets waiting for the writer, and whether a committer is on its way for them.
#[derive(Default)]
struct Queue {
    sets: std::collections::VecDeque<Pending>,
    committing: bool,
}

/// If a committer panics, the next caller becomes the committer (instead of every later commit
/// waiting for one that will never come).
struct ReleaseOnPanic(Arc<Mutex<Queue>>);

impl Drop for ReleaseOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().committing = false;
        }
    }
}

/// A change set waiting for the writer, and where its outcome goes.
struct Pending {
    writes: Vec<Write>,
    access: Vec<AccessEntry>,
    outbox: Vec<OutboxMessage>,
    reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    pending: Arc<Mutex<Queue>>,
    /// Tells the checkpointer thread to stop.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How often the checkpointer copies committed WAL pages into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// WAL pages after which the writer checkpoints by itself (only when the checkpointer cannot
/// keep up).
const WRITER_CHECKPOINT_PAGES: i64 = 50_000;

/// Checkpoints off the writer: a thread with its own connection runs a passive checkpoint (it
/// never blocks readers or the writer) every [`CHECKPOINT_EVERY`], so commits only append to
/// the WAL.
fn start_checkpointer(path: PathBuf, stop: Arc<std::sync::atomic::AtomicBool>) -> Result<(), StoreError> {
    let conn = open(&path)?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        })
        .map(|_| ())
        .map_err(|e| StoreError::Backend(e.to_string()))
}

/// The schema's migrations, in order (see [`fascicolo_store::migrations`]).
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "initial", sql: include_str!("../migrations/0001_initial.sql") },
    Migration { version: 2, name: "operational_state", sql: include_str!("../migrations/0002_operational_state.sql") },
    Migration { version: 3, name: "access_log", sql: include_str!("../migrations/0003_access_log.sql") },
    Migration { version: 4, name: "compact_storage", sql: include_str!("../migrations/0004_compact_storage.sql") },
];

/// Applies the migrations the database has not seen, all in one immediate transaction (a second
/// process opening the same file waits, then finds them applied); returns the versions applied now.
fn migrate(conn: &mut Connection) -> Result<Vec<i64>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(be)?;
    tx.execute_batch(migrations::TABLE).map_err(be)?;
    let applied: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT version FROM schema_migrations").map_err(be)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(be)?;
        rows.collect::<Result<_, _>>().map_err(be)?
    };
    let mut now = Vec::new();
    for m in migrations::pending(MIGRATIONS, &applied)? {
        tx.execute_batch(m.sql).map_err(|e| StoreError::Backend(format!("migration {} ({}): {e}", m.version, m.name)))?;
        if m.version == 4 {
            compress_existing(&tx)?;
            // the rows of parameters now answered from other parameters' rows
            tx.execute_batch(&sql::alias_row_deletes()).map_err(be)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            (m.version, m.name, fascicolo_fhir::datetime::now_ms()),
        )
        .map_err(be)?;
        now.push(m.version);
    }
    tx.commit().map_err(be)?;
    if !now.is_empty() {
        tracing::info!(versions = ?now, "applied schema migrations");
    }
    Ok(now)
}

/// Migration 4's second half: the content stored as text before it, compressed, in batches
/// walked by key (so no statement reads a table while another one changes it).
fn compress_existing(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    // `resources` by rowid; history by its key (the same walk PostgreSQL does)
    let mut select = tx
        .prepare("SELECT rowid, content FROM resources WHERE rowid > ?1 AND typeof(content) = 'text' AND content <> '' ORDER BY rowid LIMIT 1000")
        .map_err(be)?;
    let mut update = tx.prepare("UPDATE resources SET content = ?1 WHERE rowid = ?2").map_err(be)?;
    let mut after = 0_i64;
    loop {
        let batch: Vec<(i64, String)> =
            select.query_map([after], |r| Ok((r.get(0)?, r.get(1)?))).map_err(be)?.collect::<Result<_, _>>().map_err(be)?;
        let Some(last) = batch.last().map(|(id, _)| *id) else { break };
        for (rowid, text) in batch {
            update.execute((content::encode(&text)?, rowid)).map_err(be)?;
        }
        after = last;
    }
    let mut select = tx
        .prepare(
            "SELECT patient_key, res_type, id, version, content FROM resource_history \
             WHERE (patient_key, res_type, id, version) > (?1, ?2, ?3, ?4) AND typeof(content) = 'text' AND content <> '' \
             ORDER BY patient_key, res_type, id, version LIMIT 1000",
        )
        .map_err(be)?;
    let mut update = tx
        .prepare("UPDATE resource_history SET content = ?5 WHERE patient_key = ?1 AND res_type = ?2 AND id = ?3 AND version = ?4")
        .map_err(be)?;
    let mut after: (Vec<u8>, String, String, i64) = (Vec::new(), String::new(), String::new(), i64::MIN);
    loop {
        type Row4 = ((Vec<u8>, String, String, i64), String);
        let batch: Vec<Row4> = select
            .query_map((&after.0, &after.1, &after.2, after.3), |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?), r.get(4)?)))
            .map_err(be)?
            .collect::<Result<_, _>>()
            .map_err(be)?;
        let Some(last) = batch.last().map(|(k, _)| k.clone()) else { break };
        for ((k, t, i, v), text) in batch {
            update.execute((k, t, i, v, content::encode(&text)?)).map_err(be)?;
        }
        after = last;
    }
    Ok(())
}

/// A SQLite error as the store reports it: a full disk (or the page cap) is `Full`, a database
/// that cannot be opened or read from the disk is `Unavailable`.
fn be(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
        Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(be)?;
    conn.execute_batch("PRAGMA busy_timeout = 10000;").map_err(be)?;
    // switching a new file to WAL needs an exclusive lock; two processes opening the same new
    // file at once can each hold the shared lock the other waits for, and SQLite answers one of
    // them "busy" at once rather than wait into a deadlock: that one tries again
    let mut tries = 0;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())) {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 200 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(be(e)),
        }
    }
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; \
         PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY; PRAGMA mmap_size = 268435456; PRAGMA wal_autocheckpoint = 10000; \
         PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(be)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

struct Bind<'a>(&'a SqlValue);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            SqlValue::Text(s) => ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(s.as_bytes())),
            SqlValue::Int(i) => ToSqlOutput::Owned(SqlLite::Integer(*i)),
            SqlValue::Real(f) => ToSqlOutput::Owned(SqlLite::Real(*f)),
            SqlValue::Key(k) => ToSqlOutput::Owned(SqlLite::Blob(k.uuid().as_bytes().to_vec())),
            SqlValue::Uuid(u) => ToSqlOutput::Owned(SqlLite::Blob(u.as_bytes().to_vec())),
            SqlValue::Null => ToSqlOutput::Owned(SqlLite::Null),
        })
    }
}

fn binds(v: &[SqlValue]) -> Vec<Bind<'_>> {
    v.iter().map(Bind).collect()
}

fn key_param(k: PatientKey) -> Vec<u8> {
    k.uuid().as_bytes().to_vec()
}

fn row_key(row: &Row<'_>, i: usize) -> rusqlite::Result<PatientKey> {
    let b: Vec<u8> = row.get(i)?;
    uuid::Uuid::from_slice(&b)
        .map(PatientKey::from_uuid)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Blob, Box::new(e)))
}

/// Columns: patient_key, res_type, id, version, last_updated, deleted, content [, method]
fn row_stored(row: &Row<'_>, with_method: bool) -> rusqlite::Result<Stored> {
    Ok(Stored {
        patient_key: row_key(row, 0)?,
        resource_type: row.get(1)?,
        id: row.get(2)?,
        version: row.get(3)?,
        last_updated: row.get(4)?,
        deleted: row.get::<_, i64>(5)? != 0,
        json: row_content(row, 6)?,
        method: if with_method { Method::parse(&row.get::<_, String>(7)?) } else { Method::Update },
    })
}

/// Stored content: a compressed blob, or the text stored before migration 4.
fn row_content(row: &Row<'_>, i: usize) -> rusqlite::Result<String> {
    let decoded = match row.get_ref(i)? {
        rusqlite::types::ValueRef::Blob(b) => content::decode(b),
        rusqlite::types::ValueRef::Text(t) => content::decode(t),
        rusqlite::types::ValueRef::Null => Ok(String::new()),
        other => return Err(rusqlite::Error::InvalidColumnType(i, "content".into(), other.data_type())),
    };
    decoded.map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Blob, Box::new(e)))
}

fn sql_value_of(row: &Row<'_>, i: usize) -> rusqlite::Result<serde_json::Value> {
    Ok(match row.get::<_, SqlLite>(i)? {
        SqlLite::Integer(n) => serde_json::Value::from(n),
        SqlLite::Real(f) => serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        SqlLite::Text(s) => serde_json::Value::String(s),
        _ => serde_json::Value::Null,
    })
}

impl SqliteStore {
    /// Open (creating if needed) the database file and apply the schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        let mut writer = open(&path)?;
        if migrate(&mut writer)?.contains(&4) {
            // migration 4 rewrote the tables into less space: give the freed pages back to the
            // disk (on a new database, the tables migration 1 made and migration 4 replaced)
            writer.execute_batch("VACUUM").map_err(be)?;
        }
        writer.execute_batch(&format!("PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")).map_err(be)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        start_checkpointer(path.clone(), Arc::clone(&stop))?;
        Ok(Self {
            stop,
            path,
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
            pending: Arc::new(Mutex::new(Queue::default())),
        })
    }

    async fn read_many_with(&self, refs: &[(String, String)], include_deleted: bool) -> Result<Vec<Stored>, StoreError> {
        // in statements of a bounded size: SQLite caps an expression's depth and its variables
        let mut out = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(sql::READ_MANY_CHUNK) {
            let q = sql::read_many_sql_with(Dialect::Sqlite, chunk, include_deleted);
            out.extend(
                self.with_reader(move |c| {
                    let mut stmt = c.prepare(&q.sql).map_err(be)?;
                    let rows = stmt.query_map(rusqlite::params_from_iter(binds(&q.params)), |r| row_stored(r, false)).map_err(be)?;
                    rows.collect::<Result<Vec<_>, _>>().map_err(be)
                })
                .await?,
            );
        }
        Ok(out)
    }

    /// Cap the database at `pages` pages (SQLite's `max_page_count`, never below its current
    /// size): past it a write fails as [`StoreError::Full`] and keeps nothing, as on a full disk.
    /// An operator's quota; the tests fill the disk with it. Returns the cap in force.
    pub async fn set_max_pages(&self, pages: u64) -> Result<u64, StoreError> {
        self.with_writer(move |c| c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get::<_, i64>(0)).map_err(be))
            .await
            .map(|n| u64::try_from(n).unwrap_or(0))
    }

    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || f(&mut writer.lock())).await.map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().pop();
            let conn = match conn {
                Some(c) => c,
                None => open(&path)?,
            };
            let out = f(&conn);
            let mut pool = readers.lock();
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }
}

fn row_access(r: &Row<'_>) -> rusqlite::Result<AccessEntry> {
    Ok(AccessEntry {
        patient_key: row_key(r, 0)?,
        recorded: r.get(1)?,
        id: r.get(2)?,
        agent: r.get(3)?,
        flags: r.get(4)?,
        content: r.get(5)?,
        changes_facts: false,
    })
}

fn apply(tx: &rusqlite::Connection, w: &Write) -> Result<(), StoreError> {
    let ws = sql::write_sql(Dialect::Sqlite);
    match w.expect {
        Expect::Absent => {
            let n = tx
                .prepare_cached(&ws.insert_locator_new)
                .map_err(be)?
                .execute((&w.resource_type, &w.id, key_param(w.patient_key)))
                .map_err(be)?;
            if n != 1 {
                return Err(StoreError::Conflict { resource_type: w.resource_type.clone(), id: w.id.clone() });
            }
        }
        Expect::Version(v) => {
            let old = w.previous_key.unwrap_or(w.patient_key);
            let cur: Option<i64> = tx
                .prepare_cached(&ws.current_version)
                .map_err(be)?
                .query_row((key_param(old), &w.resource_type, &w.id), |r| r.get(0))
                .optional()
                .map_err(be)?;
            if cur != Some(v) {
                return Err(StoreError::Conflict { resource_type: w.resource_type.clone(), id: w.id.clone() });
            }
            tx.prepare_cached(&ws.fill_history).map_err(be)?.execute((key_param(old), &w.resource_type, &w.id, v)).map_err(be)?;
            for d in &ws.delete_index {
                tx.prepare_cached(d).map_err(be)?.execute((key_param(old), &w.resource_type, &w.id)).map_err(be)?;
            }
            if old != w.patient_key {
                tx.prepare_cached(&ws.delete_current).map_err(be)?.execute((key_param(old), &w.resource_type, &w.id)).map_err(be)?;
            }
        }
    }
    let deleted = i64::from(w.method == Method::Delete);
    let key = key_param(w.patient_key);
    tx.prepare_cached(&ws.upsert_current)
        .map_err(be)?
        .execute((&key, &w.resource_type, &w.id, w.version, w.last_updated, deleted, content::encode(&w.json)?, w.restrict))
        .map_err(be)?;
    // the new version's content is in `resources`; its history row gets it when it is replaced
    tx.prepare_cached(&ws.insert_history)
        .map_err(be)?
        .execute((&key, &w.resource_type, &w.id, w.version, w.last_updated, deleted, w.method.as_str(), Vec::<u8>::new()))
        .map_err(be)?;
    if w.expect != Expect::Absent {
        tx.prepare_cached(&ws.upsert_locator).map_err(be)?.execute((&w.resource_type, &w.id, &key)).map_err(be)?;
    }
    Ok(())
}

/// Every index row of the commit, in 64-row statements (the remainder row by row).
/// One change set: its writes, their index rows, its outbox messages.
fn apply_set(tx: &rusqlite::Connection, writes: &[Write], access: &[AccessEntry], outbox: &[OutboxMessage]) -> Result<(), StoreError> {
    for w in writes {
        apply(tx, w)?;
    }
    insert_index(tx, writes)?;
    let acc = sql::access_sql(Dialect::Sqlite);
    for e in access {
        tx.prepare_cached(&acc.insert)
            .map_err(be)?
            .execute((key_param(e.patient_key), e.recorded, &e.id, &e.agent, e.flags, &e.content))
            .map_err(be)?;
    }
    for k in sql::facts_touched(writes, access) {
        tx.prepare_cached(&acc.bump).map_err(be)?.execute([key_param(k)]).map_err(be)?;
    }
    let os = sql::outbox_sql(Dialect::Sqlite);
    let now = fascicolo_fhir::datetime::now_ms();
    for m in outbox {
        tx.prepare_cached(&os.insert)
            .map_err(be)?
            .execute((key_param(m.patient_key), m.id.as_bytes().to_vec(), &m.kind, &m.payload, now, m.available_at))
            .map_err(be)?;
    }
    Ok(())
}

/// Commits a group of change sets in one transaction and answers each caller after the COMMIT
/// (or with the COMMIT's error).
///
/// The common case, where every change set applies, runs them one after the other with no
/// savepoint (a savepoint makes SQLite copy every page it touches into a sub-journal first). When
/// one fails, the whole transaction is rolled back and the group is applied again with each
/// change set in its own savepoint, so the failing one is rolled back alone and the others commit.
fn commit_group(conn: &mut Connection, group: Vec<Pending>) {
    let optimistic = (|| -> Result<bool, StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(be)?;
        for p in &group {
            match apply_set(&tx, &p.writes, &p.access, &p.outbox) {
                Ok(()) => {}
                // a full disk or a failing device fails every set alike: no second pass
                Err(e) if e.is_outage() => return Err(e),
                // dropping the transaction rolls it back
                Err(_) => return Ok(false),
            }
        }
        tx.commit().map_err(be)?;
        Ok(true)
    })();
    match optimistic {
        Ok(true) => {
            for p in group {
                let _ = p.reply.send(Ok(()));
            }
        }
        Ok(false) => commit_each(conn, group),
        Err(e) => {
            for p in group {
                let _ = p.reply.send(Err(StoreError::clone(&e)));
            }
        }
    }
}

/// The slow path of [`commit_group`]: one transaction, each change set in its own savepoint.
fn commit_each(conn: &mut Connection, group: Vec<Pending>) {
    let mut outcomes = Vec::with_capacity(group.len());
    let committed = (|| -> Result<(), StoreError> {
        let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(be)?;
        for p in &group {
            let sp = tx.savepoint().map_err(be)?;
            let outcome = apply_set(&sp, &p.writes, &p.access, &p.outbox);
            if outcome.is_ok() {
                sp.commit().map_err(be)?;
            } else {
                // rolls this change set back, the others stay; if even that fails, the whole
                // group fails rather than commit half a change set
                // (after a full disk SQLite may have rolled the whole transaction back already)
                if let Err(fe) = sp.finish() {
                    return Err(match &outcome {
                        Err(e) if e.is_outage() => e.clone(),
                        _ => be(fe),
                    });
                }
            }
            outcomes.push(outcome);
        }
        tx.commit().map_err(be)
    })();
    match committed {
        Ok(()) => {
            for (p, outcome) in group.into_iter().zip(outcomes) {
                let _ = p.reply.send(outcome);
            }
        }
        Err(e) => {
            for p in group {
                let _ = p.reply.send(Err(StoreError::clone(&e)));
            }
        }
    }
}

fn insert_index(tx: &rusqlite::Connection, writes: &[Write]) -> Result<(), StoreError> {
    for (table, rows) in sql::index_rows(writes) {
        for chunk in rows.chunks(sql::INSERT_CHUNK) {
            let n = if chunk.len() == sql::INSERT_CHUNK { sql::INSERT_CHUNK } else { 1 };
            let mut stmt = tx.prepare_cached(&sql::insert_index_sql(Dialect::Sqlite, table, n)).map_err(be)?;
            if n == sql::INSERT_CHUNK {
                let flat: Vec<Bind<'_>> = chunk.iter().flat_map(|r| r.iter().map(Bind)).collect();
                stmt.execute(rusqlite::params_from_iter(flat)).map_err(be)?;
            } else {
                for r in chunk {
                    stmt.execute(rusqlite::params_from_iter(binds(r))).map_err(be)?;
                }
            }
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_reader(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(be)).await
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        self.with_reader(|c| c.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0)).map_err(be)).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Idle readers go first (a reader's snapshot would keep the log alive), then the writer
        // copies every committed page and empties the log. Work that was already on its way when
        // the server stopped (a reader, an outbox write) may still land: try again until the log
        // stays empty, for a few seconds at most.
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        for _ in 0..40 {
            self.readers.lock().clear();
            let busy = self.with_writer(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).map_err(be)).await?;
            if busy == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0 {
                    return Ok(());
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(StoreError::Unavailable("the write-ahead log stayed in use; it is folded in at the next start".into()))
    }

    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<Stored>, StoreError> {
        let (t, i) = (resource_type.to_string(), id.to_string());
        self.with_reader(move |c| {
            c.prepare_cached(&sql::read_sql(Dialect::Sqlite))
                .map_err(be)?
                .query_row((&t, &i), |r| row_stored(r, false))
                .optional()
                .map_err(be)
        })
        .await
    }

    async fn read_with_facts(&self, resource_type: &str, id: &str) -> Result<Option<(Stored, i64)>, StoreError> {
        let (t, i) = (resource_type.to_string(), id.to_string());
        self.with_reader(move |c| {
            c.prepare_cached(&sql::read_with_facts_sql(Dialect::Sqlite))
                .map_err(be)?
                .query_row((&t, &i), |r| Ok((row_stored(r, false)?, r.get(7)?)))
                .optional()
                .map_err(be)
        })
        .await
    }

    async fn vread(&self, resource_type: &str, id: &str, version: i64) -> Result<Option<Stored>, StoreError> {
        let (t, i) = (resource_type.to_string(), id.to_string());
        self.with_reader(move |c| {
            c.prepare_cached(&sql::vread_sql(Dialect::Sqlite))
                .map_err(be)?
                .query_row((&t, &i, version), |r| row_stored(r, true))
                .optional()
                .map_err(be)
        })
        .await
    }

    async fn read_many(&self, refs: &[(String, String)]) -> Result<Vec<Stored>, StoreError> {
        self.read_many_with(refs, false).await
    }

    async fn read_current_many(&self, refs: &[(String, String)]) -> Result<Vec<Stored>, StoreError> {
        self.read_many_with(refs, true).await
    }

    async fn commit_all(&self, writes: Vec<Write>, access: Vec<AccessEntry>, outbox: Vec<OutboxMessage>) -> Result<(), StoreError> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        // one committer at a time takes everything queued (this change set included); a caller
        // that finds one on its way only waits for its outcome, so a burst of commits wakes one
        // blocking thread, not one per caller
        let lead = {
            let mut q = self.pending.lock();
            q.sets.push_back(Pending { writes, access, outbox, reply });
            !std::mem::replace(&mut q.committing, true)
        };
        if lead {
            let pending = Arc::clone(&self.pending);
            let writer = Arc::clone(&self.writer);
            tokio::task::spawn_blocking(move || {
                let _release = ReleaseOnPanic(Arc::clone(&pending));
                let mut conn = writer.lock();
                loop {
                    let group: Vec<Pending> = {
                        let mut q = pending.lock();
                        if q.sets.is_empty() {
                            // cleared under the same lock a caller queues under: nothing is
                            // left behind without a committer
                            q.committing = false;
                            return;
                        }
                        let n = q.sets.len().min(MAX_GROUP);
                        q.sets.drain(..n).collect()
                    };
                    commit_group(&mut conn, group);
                }
            });
        }
        outcome.await.map_err(|_| StoreError::Backend("the writer stopped before committing".into()))?
    }

    async fn access_log(&self, q: &AccessQuery) -> Result<Vec<AccessEntry>, StoreError> {
        let q = sql::access_log_sql(Dialect::Sqlite, q);
        self.with_reader(move |c| {
            let mut stmt = c.prepare_cached(&q.sql).map_err(be)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(binds(&q.params)), row_access).map_err(be)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(be)
        })
        .await
    }

    async fn access_count(&self, q: &AccessQuery) -> Result<u64, StoreError> {
        let q = sql::access_count_sql(Dialect::Sqlite, q);
        self.with_reader(move |c| {
            let n: i64 =
                c.prepare_cached(&q.sql).map_err(be)?.query_row(rusqlite::params_from_iter(binds(&q.params)), |r| r.get(0)).map_err(be)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn access_entry(&self, patient: Option<PatientKey>, id: &str) -> Result<Option<AccessEntry>, StoreError> {
        let id = id.to_string();
        self.with_reader(move |c| {
            let acc = sql::access_sql(Dialect::Sqlite);
            let key = match patient {
                Some(k) => k,
                None => match c.prepare_cached(&acc.locate).map_err(be)?.query_row([&id], |r| row_key(r, 0)).optional().map_err(be)? {
                    Some(k) => k,
                    None => return Ok(None),
                },
            };
            c.prepare_cached(&acc.by_id).map_err(be)?.query_row((key_param(key), &id), row_access).optional().map_err(be)
        })
        .await
    }

    async fn facts_version(&self, patient: PatientKey) -> Result<i64, StoreError> {
        self.with_reader(move |c| {
            let acc = sql::access_sql(Dialect::Sqlite);
            let v: Option<i64> =
                c.prepare_cached(&acc.version).map_err(be)?.query_row([key_param(patient)], |r| r.get(0)).optional().map_err(be)?;
            Ok(v.unwrap_or(0))
        })
        .await
    }

    async fn outbox_claim(&self, now: i64, lease_ms: i64, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        self.with_writer(move |conn| {
            let os = sql::outbox_sql(Dialect::Sqlite);
            let until = now.saturating_add(lease_ms);
            let mut stmt = conn.prepare_cached(&os.claim).map_err(be)?;
            let rows = stmt
                .query_map((until, now, i64::try_from(limit).unwrap_or(i64::MAX)), |r| {
                    let id: Vec<u8> = r.get(1)?;
                    Ok(Claimed {
                        message: OutboxMessage {
                            patient_key: row_key(r, 0)?,
                            id: uuid::Uuid::from_slice(&id).unwrap_or_default(),
                            kind: r.get(2)?,
                            payload: r.get(3)?,
                            available_at: until,
                        },
                        attempts: r.get(4)?,
                    })
                })
                .map_err(be)?;
            let mut out = rows.collect::<Result<Vec<_>, _>>().map_err(be)?;
            out.sort_by_key(|c| c.message.id);
            Ok(out)
        })
        .await
    }

    async fn outbox_done(&self, patient_key: PatientKey, id: uuid::Uuid, now: i64) -> Result<(), StoreError> {
        self.with_writer(move |conn| {
            let os = sql::outbox_sql(Dialect::Sqlite);
            conn.prepare_cached(&os.done).map_err(be)?.execute((now, key_param(patient_key), id.as_bytes().to_vec())).map_err(be)?;
            Ok(())
        })
        .await
    }

    async fn outbox_retry(&self, patient_key: PatientKey, id: uuid::Uuid, next_at: i64, error: &str) -> Result<(), StoreError> {
        let error = error.to_string();
        self.with_writer(move |conn| {
            let os = sql::outbox_sql(Dialect::Sqlite);
            conn.prepare_cached(&os.retry)
                .map_err(be)?
                .execute((next_at, &error, key_param(patient_key), id.as_bytes().to_vec()))
                .map_err(be)?;
            Ok(())
        })
        .await
    }

    async fn search(&self, plan: &SearchPlan) -> Result<Vec<Hit>, StoreError> {
        let q = sql::search_sql(Dialect::Sqlite, plan);
        let nkeys = plan.sort.len();
        self.with_reader(move |c| {
            let mut stmt = c.prepare_cached(&q.sql).map_err(be)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(binds(&q.params)), |r| {
                    let stored = row_stored(r, false)?;
                    let keys = (0..nkeys).map(|i| sql_value_of(r, 7 + i)).collect::<Result<Vec<_>, _>>()?;
                    Ok(Hit { stored, keys })
                })
                .map_err(be)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(be)
        })
        .await
    }

    async fn scan(&self, q: &ScanQuery) -> Result<Vec<Stored>, StoreError> {
        let q = sql::scan_sql(Dialect::Sqlite, q);
        self.with_reader(move |c| {
            let mut stmt = c.prepare_cached(&q.sql).map_err(be)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(binds(&q.params)), |r| row_stored(r, false)).map_err(be)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(be)
        })
        .await
    }

    async fn count(&self, plan: &SearchPlan) -> Result<u64, StoreError> {
        let q = sql::count_sql(Dialect::Sqlite, plan);
        self.with_reader(move |c| {
            let n: i64 =
                c.prepare_cached(&q.sql).map_err(be)?.query_row(rusqlite::params_from_iter(binds(&q.params)), |r| r.get(0)).map_err(be)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn disk_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for suffix in ["", "-wal", "-shm"] {
            match std::fs::metadata(format!("{}{suffix}", self.path.display())) {
                Ok(m) => total += m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Backend(format!("the size of the database file: {e}"))),
            }
        }
        Ok(total)
    }

    async fn analyze(&self) -> Result<(), StoreError> {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || {
            writer.lock().execute_batch("PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002;").map_err(be)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn history(&self, q: &HistoryQuery) -> Result<Vec<Stored>, StoreError> {
        let q = sql::history_sql(Dialect::Sqlite, q);
        self.with_reader(move |c| {
            let mut stmt = c.prepare_cached(&q.sql).map_err(be)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(binds(&q.params)), |r| row_stored(r, true)).map_err(be)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(be)
        })
        .await
    }

    async fn auth_put(&self, rec: &AuthRecord, replace: bool) -> Result<bool, StoreError> {
        let rec = rec.clone();
        self.with_writer(move |conn| {
            let a = sql::auth_sql(Dialect::Sqlite);
            let stmt = if replace { &a.upsert } else { &a.insert_new };
            let n = conn
                .prepare_cached(stmt)
                .map_err(be)?
                .execute((&rec.kind, &rec.id, &rec.subject, &rec.data, rec.expires_at))
                .map_err(be)?;
            Ok(n > 0)
        })
        .await
    }

    async fn auth_get(&self, kind: &str, id: &str, now: i64) -> Result<Option<AuthRecord>, StoreError> {
        let (kind, id) = (kind.to_string(), id.to_string());
        self.with_reader(move |c| {
            let a = sql::auth_sql(Dialect::Sqlite);
            c.prepare_cached(&a.get).map_err(be)?.query_row((&kind, &id, now), auth_row).optional().map_err(be)
        })
        .await
    }

    async fn auth_take(&self, kind: &str, id: &str, now: i64) -> Result<Option<AuthRecord>, StoreError> {
        let (kind, id) = (kind.to_string(), id.to_string());
        self.with_writer(move |c| {
            let a = sql::auth_sql(Dialect::Sqlite);
            let rec = c.prepare_cached(&a.take).map_err(be)?.query_row((&kind, &id), auth_row).optional().map_err(be)?;
            Ok(rec.filter(|r| r.expires_at > now))
        })
        .await
    }

    async fn auth_delete(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        let (kind, id) = (kind.to_string(), id.to_string());
        self.with_writer(move |c| {
            let a = sql::auth_sql(Dialect::Sqlite);
            Ok(c.prepare_cached(&a.delete).map_err(be)?.execute((&kind, &id)).map_err(be)? > 0)
        })
        .await
    }

    async fn auth_delete_subject(&self, kind: &str, subject: &str) -> Result<u64, StoreError> {
        let (kind, subject) = (kind.to_string(), subject.to_string());
        self.with_writer(move |c| {
            let a = sql::auth_sql(Dialect::Sqlite);
            Ok(c.prepare_cached(&a.delete_subject).map_err(be)?.execute((&kind, &subject)).map_err(be)? as u64)
        })
        .await
    }

    async fn auth_purge(&self, now: i64) -> Result<u64, StoreError> {
        self.with_writer(move |c| {
            let a = sql::auth_sql(Dialect::Sqlite);
            let mut n = c.prepare_cached(&a.purge).map_err(be)?.execute([now]).map_err(be)? as u64;
            for q in sql::state_sql(Dialect::Sqlite).purge {
                n += c.prepare_cached(&q).map_err(be)?.execute([now]).map_err(be)? as u64;
            }
            Ok(n)
        })
        .await
    }

    async fn job_mark(&self, job: &str) -> Result<Option<String>, StoreError> {
        let job = job.to_string();
        self.with_reader(move |c| {
            let q = sql::state_sql(Dialect::Sqlite).job_get;
            c.prepare_cached(&q).map_err(be)?.query_row([&job], |r| r.get(0)).optional().map_err(be)
        })
        .await
    }

    async fn set_job_mark(&self, job: &str, data: &str, now: i64) -> Result<(), StoreError> {
        let (job, data) = (job.to_string(), data.to_string());
        self.with_writer(move |c| {
            let q = sql::state_sql(Dialect::Sqlite).job_put;
            c.prepare_cached(&q).map_err(be)?.execute((&job, &data, now)).map_err(be).map(drop)
        })
        .await
    }

    async fn first_job_mark(&self, job: &str, data: &str, now: i64) -> Result<bool, StoreError> {
        let (job, data) = (job.to_string(), data.to_string());
        self.with_writer(move |c| {
            let q = sql::state_sql(Dialect::Sqlite).job_insert_new;
            Ok(c.prepare_cached(&q).map_err(be)?.execute((&job, &data, now)).map_err(be)? > 0)
        })
        .await
    }

    async fn seen_mark(&self, key: &str, now: i64) -> Result<Option<i64>, StoreError> {
        let key = key.to_string();
        self.with_reader(move |c| {
            let q = sql::state_sql(Dialect::Sqlite).seen_get;
            c.prepare_cached(&q).map_err(be)?.query_row((&key, now), |r| r.get(0)).optional().map_err(be)
        })
        .await
    }

    async fn set_seen_mark(&self, key: &str, seen_at: i64, expires_at: i64) -> Result<(), StoreError> {
        let key = key.to_string();
        self.with_writer(move |c| {
            let q = sql::state_sql(Dialect::Sqlite).seen_put;
            c.prepare_cached(&q).map_err(be)?.execute((&key, seen_at, expires_at)).map_err(be).map(drop)
        })
        .await
    }

    async fn put_submission(&self, s: &SubmissionStatus) -> Result<(), StoreError> {
        let s = s.clone();
        self.with_writer(move |c| {
            let q = sql::state_sql(Dialect::Sqlite).submission_put;
            c.prepare_cached(&q).map_err(be)?.execute((&s.workflow, &s.producer, &s.body, s.expires_at)).map_err(be).map(drop)
        })
        .await
    }

    async fn submission(&self, workflow: &str, now: i64) -> Result<Option<SubmissionStatus>, StoreError> {
        let workflow = workflow.to_string();
        self.with_reader(move |c| {
            let q = sql::state_sql(Dialect::Sqlite).submission_get;
            c.prepare_cached(&q)
                .map_err(be)?
                .query_row((&workflow, now), |r| {
                    Ok(SubmissionStatus { workflow: r.get(0)?, producer: r.get(1)?, body: r.get(2)?, expires_at: r.get(3)? })
                })
                .optional()
                .map_err(be)
        })
        .await
    }

    async fn claim_notification(&self, key: &str, message: &str, expires_at: i64) -> Result<bool, StoreError> {
        let (key, message) = (key.to_string(), message.to_string());
        self.with_writer(move |c| {
            let q = sql::state_sql(Dialect::Sqlite).claim;
            let holder: String = c.prepare_cached(&q).map_err(be)?.query_row((&key, &message, expires_at), |r| r.get(0)).map_err(be)?;
            Ok(holder == message)
        })
        .await
    }

    async fn probe_write(&self, bytes: usize) -> Result<(), StoreError> {
        self.with_writer(move |c| {
            let q = sql::state_sql(Dialect::Sqlite);
            c.prepare_cached(&q.probe_put).map_err(be)?.execute(["x".repeat(bytes)]).map_err(be)?;
            c.prepare_cached(&q.probe_delete).map_err(be)?.execute([]).map_err(be).map(drop)
        })
        .await
    }
}

fn auth_row(r: &Row<'_>) -> rusqlite::Result<AuthRecord> {
    Ok(AuthRecord { kind: r.get(0)?, id: r.get(1)?, subject: r.get(2)?, data: r.get(3)?, expires_at: r.get(4)? })
}
