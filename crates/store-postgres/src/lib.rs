//! The PostgreSQL backend (tokio-postgres with a deadpool pool). Schema and SQL come from
//! `fascicolo_store::sql`; text columns use the "C" collation so ordering and prefix ranges
//! behave exactly as on SQLite.
#![forbid(unsafe_code)]

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use fascicolo_domain::PatientKey;
use fascicolo_store::content;
use fascicolo_store::migrations::{self, Migration};
use fascicolo_store::sql::{self, Dialect, SqlValue};
use fascicolo_store::{
    AccessEntry, AccessQuery, AuthRecord, Claimed, Expect, HistoryQuery, Hit, Method, OutboxMessage, ScanQuery, SearchPlan, Store,
    StoreError, Stored, SubmissionStatus, Write,
};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};

pub struct PgStore {
    pool: Pool,
    /// One connection of its own for readiness, so a busy pool never makes the service look dead
    /// (nor a dead database look busy).
    probe: Pool,
    /// Searches, counts and histories (the queries a client can make expensive) hold a permit:
    /// at most three quarters of the pool, so reads and writes always find a connection.
    heavy: tokio::sync::Semaphore,
    /// Change sets that only log accesses, waiting to be committed together (see
    /// [`PgStore::commit_log_only`]), and the turn to commit them.
    log: std::sync::Arc<LogWriter>,
}

/// The queue of log-only change sets and the turn to commit them.
struct LogWriter {
    pool: Pool,
    queue: parking_lot::Mutex<Vec<LogOnly>>,
    turn: tokio::sync::Mutex<()>,
}

impl LogWriter {
    /// One transaction for the group; when it fails for a reason other than an outage, each
    /// set is committed alone so that only the failing one fails.
    async fn commit_group(&self, group: Vec<LogOnly>) {
        let together = self.commit_sets(&group).await;
        match together {
            Ok(()) => {
                for g in group {
                    let _ = g.reply.send(Ok(()));
                }
            }
            Err(e) if e.is_outage() || group.len() == 1 => {
                for g in group {
                    let _ = g.reply.send(Err(e.clone()));
                }
            }
            Err(_) => {
                for g in group {
                    let alone = self.commit_sets(std::slice::from_ref(&g)).await;
                    let _ = g.reply.send(alone);
                }
            }
        }
    }

    async fn commit_sets(&self, sets: &[LogOnly]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await.map_err(be)?;
        let tx = c.transaction().await.map_err(be)?;
        let access: Vec<AccessEntry> = sets.iter().flat_map(|g| g.access.iter().cloned()).collect();
        let outbox: Vec<OutboxMessage> = sets.iter().flat_map(|g| g.outbox.iter().cloned()).collect();
        apply_all(&tx, &[], &access, &outbox).await?;
        tx.commit().await.map_err(be)
    }
}

/// A change set of access-log entries and outbox messages, and where its outcome goes.
struct LogOnly {
    access: Vec<AccessEntry>,
    outbox: Vec<OutboxMessage>,
    reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// Most log-only change sets committed together.
const MAX_LOG_GROUP: usize = 256;

/// Statement time limit unless the URL's `options` set one (`?options=-c statement_timeout=10s`).
pub const DEFAULT_STATEMENT_TIMEOUT: &str = "30s";
/// How long a request waits for a free connection before it is told the database is busy.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Cancels the statement running on a connection if the future running it is dropped before it
/// finished (the client went away): PostgreSQL would otherwise run it to the end.
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl CancelOnDrop {
    fn arm(c: &tokio_postgres::Client) -> Self {
        CancelOnDrop(Some(c.cancel_token()))
    }
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = token.cancel_query(NoTls).await {
                        tracing::warn!(error = %e, "could not cancel an abandoned statement");
                    }
                });
            }
        }
    }
}

/// A PostgreSQL or pool error as the store reports it: no room (`53100` disk full) is `Full`;
/// a database that cannot be reached, refuses connections, is shutting down or lost the
/// connection, and a pool with no connection free in time, are `Unavailable`; a cancelled
/// statement (`statement_timeout`, or a client that went away) is `Timeout`.
fn be<E: std::fmt::Display + 'static>(e: E) -> StoreError {
    use tokio_postgres::error::SqlState;
    let any = &e as &dyn std::any::Any;
    let mut msg = e.to_string();
    if let Some(pe) = any.downcast_ref::<tokio_postgres::Error>() {
        // the server's own words ("db error" alone says nothing); its message, never its detail
        // (the detail can quote the row's values)
        if let Some(db) = pe.as_db_error() {
            msg = format!("{} ({})", db.message(), db.code().code());
        }
        return match pe.code() {
            Some(c) if *c == SqlState::DISK_FULL => StoreError::Full(msg),
            Some(c) if *c == SqlState::QUERY_CANCELED => StoreError::Timeout(msg),
            Some(c)
                if c.code().starts_with("08")
                    || c.code().starts_with("53")
                    || c.code().starts_with("57P")
                    || *c == SqlState::READ_ONLY_SQL_TRANSACTION =>
            {
                StoreError::Unavailable(msg)
            }
            Some(_) => StoreError::Backend(msg),
            // no SQL state: the connection failed (refused, closed, I/O), or a value did not convert
            None if pe.is_closed() || std::error::Error::source(pe).is_some_and(|s| s.is::<std::io::Error>()) => {
                StoreError::Unavailable(msg)
            }
            None => StoreError::Backend(msg),
        };
    }
    if any.downcast_ref::<deadpool_postgres::PoolError>().is_some() {
        return StoreError::Unavailable(msg);
    }
    StoreError::Backend(msg)
}

fn to_sql(v: &SqlValue) -> Box<dyn ToSql + Sync + Send> {
    match v {
        SqlValue::Text(s) => Box::new(s.clone()),
        SqlValue::Int(i) => Box::new(*i),
        SqlValue::Real(f) => Box::new(*f),
        SqlValue::Key(k) => Box::new(k.uuid()),
        SqlValue::Uuid(u) => Box::new(*u),
        SqlValue::Null => Box::new(Option::<String>::None),
    }
}

fn params(v: &[SqlValue]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    v.iter().map(to_sql).collect()
}

fn refs(b: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    b.iter().map(|x| x.as_ref() as &(dyn ToSql + Sync)).collect()
}

fn row_stored(r: &Row, with_method: bool) -> Result<Stored, StoreError> {
    Ok(Stored {
        patient_key: PatientKey::from_uuid(r.try_get(0).map_err(be)?),
        resource_type: r.try_get(1).map_err(be)?,
        id: r.try_get(2).map_err(be)?,
        version: r.try_get(3).map_err(be)?,
        last_updated: r.try_get(4).map_err(be)?,
        deleted: r.try_get::<_, i64>(5).map_err(be)? != 0,
        json: content::decode(r.try_get::<_, Option<&[u8]>>(6).map_err(be)?.unwrap_or_default())?,
        method: if with_method { Method::parse(&r.try_get::<_, String>(7).map_err(be)?) } else { Method::Update },
    })
}

fn row_access(r: &Row) -> Result<AccessEntry, StoreError> {
    Ok(AccessEntry {
        patient_key: PatientKey::from_uuid(r.try_get(0).map_err(be)?),
        recorded: r.try_get(1).map_err(be)?,
        id: r.try_get(2).map_err(be)?,
        agent: r.try_get(3).map_err(be)?,
        flags: r.try_get(4).map_err(be)?,
        content: r.try_get(5).map_err(be)?,
        changes_facts: false,
    })
}

/// One change set inside a transaction: writes, their index rows, access-log entries, the
/// records' facts versions, outbox messages.
async fn apply_all(
    tx: &deadpool_postgres::Transaction<'_>,
    writes: &[Write],
    access: &[AccessEntry],
    outbox: &[OutboxMessage],
) -> Result<(), StoreError> {
    for w in writes {
        apply(tx, w).await?;
    }
    // every index row of the commit, in multi-row statements
    for (table, rows) in sql::index_rows(writes) {
        for chunk in rows.chunks(sql::INSERT_CHUNK) {
            let st = tx.prepare_cached(&sql::insert_index_sql(Dialect::Postgres, table, chunk.len())).await.map_err(be)?;
            let flat: Vec<SqlValue> = chunk.iter().flatten().cloned().collect();
            let p = params(&flat);
            tx.execute(&st, &refs(&p)).await.map_err(be)?;
        }
    }
    let acc = sql::access_sql(Dialect::Postgres);
    // many requests' entries and messages in a few multi-row statements (one round trip each)
    for chunk in access.chunks(sql::INSERT_CHUNK) {
        let text =
            sql::multi_insert_sql(Dialect::Postgres, &format!("INSERT INTO access_log ({})", sql::ACCESS_COLUMNS), 6, chunk.len(), "");
        let st = tx.prepare_cached(&text).await.map_err(be)?;
        let keys: Vec<uuid::Uuid> = chunk.iter().map(|e| e.patient_key.uuid()).collect();
        let mut p: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 6);
        for (e, k) in chunk.iter().zip(&keys) {
            p.extend([k as &(dyn ToSql + Sync), &e.recorded, &e.id, &e.agent, &e.flags, &e.content]);
        }
        tx.execute(&st, &p).await.map_err(be)?;
    }
    let touched = sql::facts_touched(writes, access);
    if !touched.is_empty() {
        let st = tx.prepare_cached(&acc.bump).await.map_err(be)?;
        for k in touched {
            tx.execute(&st, &[&k.uuid()]).await.map_err(be)?;
        }
    }
    let now = fascicolo_fhir::datetime::now_ms();
    for chunk in outbox.chunks(sql::INSERT_CHUNK) {
        let text = sql::multi_insert_sql(
            Dialect::Postgres,
            "INSERT INTO outbox (patient_key, id, kind, payload, created_at, available_at, attempts)",
            7,
            chunk.len(),
            " ON CONFLICT (patient_key, id) DO NOTHING",
        );
        let st = tx.prepare_cached(&text).await.map_err(be)?;
        let keys: Vec<uuid::Uuid> = chunk.iter().map(|m| m.patient_key.uuid()).collect();
        let zero = 0i64;
        let mut p: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 7);
        for (m, k) in chunk.iter().zip(&keys) {
            p.extend([k as &(dyn ToSql + Sync), &m.id, &m.kind, &m.payload, &now, &m.available_at, &zero]);
        }
        tx.execute(&st, &p).await.map_err(be)?;
    }
    Ok(())
}

fn key_value(r: &Row, i: usize) -> Result<serde_json::Value, StoreError> {
    let t = r.columns()[i].type_().clone();
    Ok(if t == Type::INT8 {
        r.try_get::<_, Option<i64>>(i).map_err(be)?.map_or(serde_json::Value::Null, serde_json::Value::from)
    } else if t == Type::FLOAT8 {
        r.try_get::<_, Option<f64>>(i)
            .map_err(be)?
            .and_then(serde_json::Number::from_f64)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)
    } else {
        r.try_get::<_, Option<String>>(i).map_err(be)?.map_or(serde_json::Value::Null, serde_json::Value::String)
    })
}

/// The schema's migrations, in order (see [`fascicolo_store::migrations`]).
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "initial", sql: include_str!("../migrations/0001_initial.sql") },
    Migration { version: 2, name: "operational_state", sql: include_str!("../migrations/0002_operational_state.sql") },
    Migration { version: 3, name: "access_log", sql: include_str!("../migrations/0003_access_log.sql") },
    Migration { version: 4, name: "compact_storage", sql: include_str!("../migrations/0004_compact_storage.sql") },
];

/// Applies the migrations the database has not seen, each in its own transaction with its
/// record (the caller holds the start-up lock); returns the versions applied now.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<Vec<i64>, StoreError> {
    client.batch_execute(migrations::TABLE).await.map_err(be)?;
    let applied: Vec<i64> =
        client.query("SELECT version FROM schema_migrations", &[]).await.map_err(be)?.iter().map(|r| r.get(0)).collect();
    let mut now = Vec::new();
    for m in migrations::pending(MIGRATIONS, &applied)? {
        let tx = client.transaction().await.map_err(be)?;
        // a migration may rewrite whole tables: the request time limit does not apply to it
        tx.batch_execute("SET LOCAL statement_timeout = 0").await.map_err(be)?;
        tx.batch_execute(m.sql).await.map_err(|e| StoreError::Backend(format!("migration {} ({}): {e}", m.version, m.name)))?;
        if m.version == 4 {
            compress_existing(&tx).await?;
            // the rows of parameters now answered from other parameters' rows
            tx.batch_execute(&sql::alias_row_deletes()).await.map_err(be)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &fascicolo_fhir::datetime::now_ms()],
        )
        .await
        .map_err(be)?;
        tx.commit().await.map_err(be)?;
        now.push(m.version);
    }
    if !now.is_empty() {
        tracing::info!(versions = ?now, "applied schema migrations");
    }
    Ok(now)
}

/// Migration 4's second half: the content stored as text before it (now plain bytes),
/// compressed, walking each table in key order in batches.
async fn compress_existing(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    // (table, its primary key): `resources` holds one row per resource, history one per version
    for (table, with_version) in [("resources", false), ("resource_history", true)] {
        let (key, after_version) =
            if with_version { ("patient_key, res_type, id, version", ", $4") } else { ("patient_key, res_type, id", "") };
        let select = tx
            .prepare(&format!(
                "SELECT patient_key, res_type, id, version, content FROM {table} \
                 WHERE ({key}) > ($1, $2, $3{after_version}) ORDER BY {key} LIMIT 1000"
            ))
            .await
            .map_err(be)?;
        let update = tx
            .prepare(&format!("UPDATE {table} SET content = $5 WHERE patient_key = $1 AND res_type = $2 AND id = $3 AND version = $4"))
            .await
            .map_err(be)?;
        let mut after: (uuid::Uuid, String, String, i64) = (uuid::Uuid::nil(), String::new(), String::new(), i64::MIN);
        loop {
            let rows = if with_version {
                tx.query(&select, &[&after.0, &after.1, &after.2, &after.3]).await
            } else {
                tx.query(&select, &[&after.0, &after.1, &after.2]).await
            }
            .map_err(be)?;
            let Some(last) = rows.last() else { break };
            let next =
                (last.try_get(0).map_err(be)?, last.try_get(1).map_err(be)?, last.try_get(2).map_err(be)?, last.try_get(3).map_err(be)?);
            for r in &rows {
                let body: &[u8] = r.try_get(4).map_err(be)?;
                if content::is_encoded(body) {
                    continue;
                }
                let text = std::str::from_utf8(body).map_err(|e| StoreError::Backend(format!("resource content: {e}")))?;
                let (k, t, i, v): (uuid::Uuid, &str, &str, i64) =
                    (r.try_get(0).map_err(be)?, r.try_get(1).map_err(be)?, r.try_get(2).map_err(be)?, r.try_get(3).map_err(be)?);
                tx.execute(&update, &[&k, &t, &i, &v, &content::encode(text)?]).await.map_err(be)?;
            }
            after = next;
        }
    }
    Ok(())
}

impl PgStore {
    async fn read_many_with(&self, refs_: &[(String, String)], include_deleted: bool) -> Result<Vec<Stored>, StoreError> {
        if refs_.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        let mut out = Vec::with_capacity(refs_.len());
        for chunk in refs_.chunks(sql::READ_MANY_CHUNK) {
            let q = sql::read_many_sql_with(Dialect::Postgres, chunk, include_deleted);
            let p = params(&q.params);
            for r in c.query(&q.sql, &refs(&p)).await.map_err(be)? {
                out.push(row_stored(&r, false)?);
            }
        }
        Ok(out)
    }

    /// Connect and apply the schema.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::connect_in_schema(url, pool_size, None).await
    }

    /// Connect with every connection's `search_path` set to `schema` (created when missing):
    /// used by tests to get a fresh, isolated store on a shared database.
    pub async fn connect_in_schema(url: &str, pool_size: usize, schema: Option<&str>) -> Result<Self, StoreError> {
        let mut cfg: tokio_postgres::Config = url.parse().map_err(be)?;
        let mut options = cfg.get_options().unwrap_or_default().to_string();
        if !options.contains("statement_timeout") {
            options = format!("{options} -c statement_timeout={DEFAULT_STATEMENT_TIMEOUT}").trim().to_string();
        }
        if let Some(s) = schema {
            let (client, conn) = cfg.connect(NoTls).await.map_err(be)?;
            let h = tokio::spawn(conn);
            // two stores created at once race on IF NOT EXISTS: the loser finds it made
            if let Err(e) = client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"")).await {
                use tokio_postgres::error::SqlState;
                if !matches!(e.code(), Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_SCHEMA) {
                    return Err(be(e));
                }
            }
            drop(client);
            let _ = h.await;
            options.push_str(&format!(" -c search_path={s}"));
        }
        cfg.options(options.trim());
        let probe_mgr = Manager::from_config(cfg.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Verified });
        let probe = Pool::builder(probe_mgr)
            .max_size(1)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .build()
            .map_err(be)?;
        let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(be)?;
        let mut client = pool.get().await.map_err(be)?;
        // serialise concurrent start-ups on the same database; neither the wait for another
        // start-up's migrations nor our own is held to the request time limit
        client.batch_execute("SET statement_timeout = 0; SELECT pg_advisory_lock(7310001)").await.map_err(be)?;
        let res = migrate(&mut client).await;
        client.batch_execute("SELECT pg_advisory_unlock(7310001); RESET statement_timeout").await.map_err(be)?;
        res?;
        drop(client);
        let heavy = tokio::sync::Semaphore::new((pool_size.max(1) * 3 / 4).max(1));
        let log = std::sync::Arc::new(LogWriter {
            pool: pool.clone(),
            queue: parking_lot::Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
        });
        Ok(Self { pool, probe, heavy, log })
    }

    /// Commits access-log entries (with their outbox messages) of many requests in one
    /// transaction: each caller queues its change set and a task takes the turn; whoever has the
    /// turn commits everything queued so far and answers every caller after the COMMIT. Under
    /// load one commit (one WAL flush) carries many requests' entries. The committing runs in its
    /// own task, so a request that goes away does not take the others' commit with it.
    async fn commit_log_only(&self, access: Vec<AccessEntry>, outbox: Vec<OutboxMessage>) -> Result<(), StoreError> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.log.queue.lock().push(LogOnly { access, outbox, reply });
        let log = std::sync::Arc::clone(&self.log);
        tokio::spawn(async move {
            let _turn = log.turn.lock().await;
            loop {
                let group: Vec<LogOnly> = {
                    let mut q = log.queue.lock();
                    let n = q.len().min(MAX_LOG_GROUP);
                    q.drain(..n).collect()
                };
                if group.is_empty() {
                    break;
                }
                log.commit_group(group).await;
            }
        });
        outcome.await.map_err(|_| StoreError::Backend("the access log writer stopped before committing".into()))?
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(be)
    }

    async fn heavy_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        match tokio::time::timeout(POOL_WAIT, self.heavy.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(StoreError::Unavailable("every connection for searches is busy".into())),
        }
    }

    /// A read that may take long (a search, a range of the log, a scan): under the searches'
    /// share of the pool, prepared once per connection, cancelled if its caller goes away.
    async fn heavy_query(&self, q: &sql::SqlBuf) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let _permit = self.heavy_permit().await?;
        let c = self.client().await?;
        let p = params(&q.params);
        let st = c.prepare_cached(&q.sql).await.map_err(be)?;
        let guard = CancelOnDrop::arm(&c);
        let rows = c.query(&st, &refs(&p)).await.map_err(be)?;
        guard.disarm();
        Ok(rows)
    }
}

async fn apply(tx: &deadpool_postgres::Transaction<'_>, w: &Write) -> Result<(), StoreError> {
    let ws = sql::write_sql(Dialect::Postgres);
    let key = w.patient_key.uuid();
    let conflict = || StoreError::Conflict { resource_type: w.resource_type.clone(), id: w.id.clone() };
    match w.expect {
        Expect::Absent => {
            let st = tx.prepare_cached(&ws.insert_locator_new).await.map_err(be)?;
            if tx.execute(&st, &[&w.resource_type, &w.id, &key]).await.map_err(be)? != 1 {
                return Err(conflict());
            }
        }
        Expect::Version(v) => {
            let old = w.previous_key.unwrap_or(w.patient_key).uuid();
            let st = tx.prepare_cached(&format!("{} FOR UPDATE", ws.current_version)).await.map_err(be)?;
            let cur: Option<i64> = tx.query_opt(&st, &[&old, &w.resource_type, &w.id]).await.map_err(be)?.map(|r| r.get(0));
            if cur != Some(v) {
                return Err(conflict());
            }
            let st = tx.prepare_cached(&ws.fill_history).await.map_err(be)?;
            tx.execute(&st, &[&old, &w.resource_type, &w.id, &v]).await.map_err(be)?;
            for d in &ws.delete_index {
                let st = tx.prepare_cached(d).await.map_err(be)?;
                tx.execute(&st, &[&old, &w.resource_type, &w.id]).await.map_err(be)?;
            }
            if old != key {
                let st = tx.prepare_cached(&ws.delete_current).await.map_err(be)?;
                tx.execute(&st, &[&old, &w.resource_type, &w.id]).await.map_err(be)?;
            }
            let st = tx.prepare_cached(&ws.upsert_locator).await.map_err(be)?;
            tx.execute(&st, &[&w.resource_type, &w.id, &key]).await.map_err(be)?;
        }
    }
    let deleted = i64::from(w.method == Method::Delete);
    let st = tx.prepare_cached(&ws.upsert_current).await.map_err(be)?;
    let body = content::encode(&w.json)?;
    tx.execute(&st, &[&key, &w.resource_type, &w.id, &w.version, &w.last_updated, &deleted, &body, &w.restrict]).await.map_err(be)?;
    // the new version's content is in `resources`; its history row gets it when it is replaced
    let hist: &[u8] = &[];
    let st = tx.prepare_cached(&ws.insert_history).await.map_err(be)?;
    tx.execute(&st, &[&key, &w.resource_type, &w.id, &w.version, &w.last_updated, &deleted, &w.method.as_str(), &hist])
        .await
        .map_err(be)?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.probe.get().await.map_err(be)?.simple_query("SELECT 1").await.map_err(be).map(|_| ())
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        c.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await.map_err(be).map(|r| r.get(0))
    }

    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<Stored>, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::read_sql(Dialect::Postgres)).await.map_err(be)?;
        match c.query_opt(&st, &[&resource_type, &id]).await.map_err(be)? {
            Some(r) => Ok(Some(row_stored(&r, false)?)),
            None => Ok(None),
        }
    }

    async fn read_with_facts(&self, resource_type: &str, id: &str) -> Result<Option<(Stored, i64)>, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::read_with_facts_sql(Dialect::Postgres)).await.map_err(be)?;
        match c.query_opt(&st, &[&resource_type, &id]).await.map_err(be)? {
            Some(r) => Ok(Some((row_stored(&r, false)?, r.try_get(7).map_err(be)?))),
            None => Ok(None),
        }
    }

    async fn vread(&self, resource_type: &str, id: &str, version: i64) -> Result<Option<Stored>, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::vread_sql(Dialect::Postgres)).await.map_err(be)?;
        match c.query_opt(&st, &[&resource_type, &id, &version]).await.map_err(be)? {
            Some(r) => Ok(Some(row_stored(&r, true)?)),
            None => Ok(None),
        }
    }

    async fn read_many(&self, refs_: &[(String, String)]) -> Result<Vec<Stored>, StoreError> {
        self.read_many_with(refs_, false).await
    }

    async fn read_current_many(&self, refs_: &[(String, String)]) -> Result<Vec<Stored>, StoreError> {
        self.read_many_with(refs_, true).await
    }

    async fn commit_all(&self, writes: Vec<Write>, access: Vec<AccessEntry>, outbox: Vec<OutboxMessage>) -> Result<(), StoreError> {
        if writes.is_empty() && !access.is_empty() {
            return self.commit_log_only(access, outbox).await;
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(be)?;
        apply_all(&tx, &writes, &access, &outbox).await?;
        tx.commit().await.map_err(be)
    }

    async fn access_log(&self, q: &AccessQuery) -> Result<Vec<AccessEntry>, StoreError> {
        let rows = self.heavy_query(&sql::access_log_sql(Dialect::Postgres, q)).await?;
        rows.iter().map(row_access).collect()
    }

    async fn access_count(&self, q: &AccessQuery) -> Result<u64, StoreError> {
        let q = sql::access_count_sql(Dialect::Postgres, q);
        let _permit = self.heavy_permit().await?;
        let c = self.client().await?;
        let p = params(&q.params);
        let st = c.prepare_cached(&q.sql).await.map_err(be)?;
        let n: i64 = c.query_one(&st, &refs(&p)).await.map_err(be)?.try_get(0).map_err(be)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn access_entry(&self, patient: Option<PatientKey>, id: &str) -> Result<Option<AccessEntry>, StoreError> {
        let c = self.client().await?;
        let acc = sql::access_sql(Dialect::Postgres);
        let key = match patient {
            Some(k) => k,
            None => {
                let st = c.prepare_cached(&acc.locate).await.map_err(be)?;
                match c.query_opt(&st, &[&id]).await.map_err(be)? {
                    Some(r) => PatientKey::from_uuid(r.try_get(0).map_err(be)?),
                    None => return Ok(None),
                }
            }
        };
        let st = c.prepare_cached(&acc.by_id).await.map_err(be)?;
        c.query_opt(&st, &[&key.uuid(), &id]).await.map_err(be)?.as_ref().map(row_access).transpose()
    }

    async fn facts_version(&self, patient: PatientKey) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::access_sql(Dialect::Postgres).version).await.map_err(be)?;
        Ok(c.query_opt(&st, &[&patient.uuid()]).await.map_err(be)?.map(|r| r.try_get::<_, i64>(0)).transpose().map_err(be)?.unwrap_or(0))
    }

    async fn outbox_claim(&self, now: i64, lease_ms: i64, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        let c = self.client().await?;
        let os = sql::outbox_sql(Dialect::Postgres);
        let until = now.saturating_add(lease_ms);
        let st = c.prepare_cached(&os.claim).await.map_err(be)?;
        let rows = c.query(&st, &[&until, &now, &i64::try_from(limit).unwrap_or(i64::MAX)]).await.map_err(be)?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(Claimed {
                    message: OutboxMessage {
                        patient_key: PatientKey::from_uuid(r.try_get(0).map_err(be)?),
                        id: r.try_get(1).map_err(be)?,
                        kind: r.try_get(2).map_err(be)?,
                        payload: r.try_get(3).map_err(be)?,
                        available_at: until,
                    },
                    attempts: r.try_get(4).map_err(be)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by_key(|c| c.message.id);
        Ok(out)
    }

    async fn outbox_done(&self, patient_key: PatientKey, id: uuid::Uuid, now: i64) -> Result<(), StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::outbox_sql(Dialect::Postgres).done).await.map_err(be)?;
        c.execute(&st, &[&now, &patient_key.uuid(), &id]).await.map_err(be)?;
        Ok(())
    }

    async fn outbox_retry(&self, patient_key: PatientKey, id: uuid::Uuid, next_at: i64, error: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::outbox_sql(Dialect::Postgres).retry).await.map_err(be)?;
        c.execute(&st, &[&next_at, &error, &patient_key.uuid(), &id]).await.map_err(be)?;
        Ok(())
    }

    async fn search(&self, plan: &SearchPlan) -> Result<Vec<Hit>, StoreError> {
        let rows = self.heavy_query(&sql::search_sql(Dialect::Postgres, plan)).await?;
        rows.iter()
            .map(|r| {
                let stored = row_stored(r, false)?;
                let keys = (0..plan.sort.len()).map(|i| key_value(r, 7 + i)).collect::<Result<Vec<_>, _>>()?;
                Ok(Hit { stored, keys })
            })
            .collect()
    }

    async fn scan(&self, q: &ScanQuery) -> Result<Vec<Stored>, StoreError> {
        let rows = self.heavy_query(&sql::scan_sql(Dialect::Postgres, q)).await?;
        rows.iter().map(|r| row_stored(r, false)).collect()
    }

    async fn count(&self, plan: &SearchPlan) -> Result<u64, StoreError> {
        let q = sql::count_sql(Dialect::Postgres, plan);
        let _permit = self.heavy_permit().await?;
        let c = self.client().await?;
        let p = params(&q.params);
        let guard = CancelOnDrop::arm(&c);
        let n: i64 = c.query_one(&q.sql, &refs(&p)).await.map_err(be)?.get(0);
        guard.disarm();
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn disk_bytes(&self) -> Result<u64, StoreError> {
        // the tables of the schema this store's connections work in (indexes and TOAST included)
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                 WHERE c.relkind IN ('r', 'm') AND c.relnamespace = current_schema()::regnamespace",
                &[],
            )
            .await
            .map_err(be)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    async fn analyze(&self) -> Result<(), StoreError> {
        // maintenance after a bulk load is not a client's request: no statement time limit
        // only this store's tables (its schema may share the database with others): a bare
        // ANALYZE locks every table of every schema and can run out of lock slots
        let tables = "resources, resource_history, locator, idx_token, idx_string, idx_date, idx_ref, idx_number, idx_quantity, idx_uri";
        self.client()
            .await?
            .batch_execute(&format!("SET statement_timeout = 0; ANALYZE {tables}; RESET statement_timeout"))
            .await
            .map_err(be)
    }

    async fn history(&self, q: &HistoryQuery) -> Result<Vec<Stored>, StoreError> {
        let q = sql::history_sql(Dialect::Postgres, q);
        let _permit = self.heavy_permit().await?;
        let c = self.client().await?;
        let p = params(&q.params);
        let guard = CancelOnDrop::arm(&c);
        let rows = c.query(&q.sql, &refs(&p)).await.map_err(be)?;
        guard.disarm();
        rows.iter().map(|r| row_stored(r, true)).collect()
    }

    async fn auth_put(&self, rec: &AuthRecord, replace: bool) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let a = sql::auth_sql(Dialect::Postgres);
        let st = c.prepare_cached(if replace { &a.upsert } else { &a.insert_new }).await.map_err(be)?;
        let n = c.execute(&st, &[&rec.kind, &rec.id, &rec.subject, &rec.data, &rec.expires_at]).await.map_err(be)?;
        Ok(n > 0)
    }

    async fn auth_get(&self, kind: &str, id: &str, now: i64) -> Result<Option<AuthRecord>, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::auth_sql(Dialect::Postgres).get).await.map_err(be)?;
        Ok(c.query_opt(&st, &[&kind, &id, &now]).await.map_err(be)?.map(|r| auth_row(&r)))
    }

    async fn auth_take(&self, kind: &str, id: &str, now: i64) -> Result<Option<AuthRecord>, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::auth_sql(Dialect::Postgres).take).await.map_err(be)?;
        Ok(c.query_opt(&st, &[&kind, &id]).await.map_err(be)?.map(|r| auth_row(&r)).filter(|r| r.expires_at > now))
    }

    async fn auth_delete(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::auth_sql(Dialect::Postgres).delete).await.map_err(be)?;
        Ok(c.execute(&st, &[&kind, &id]).await.map_err(be)? > 0)
    }

    async fn auth_delete_subject(&self, kind: &str, subject: &str) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::auth_sql(Dialect::Postgres).delete_subject).await.map_err(be)?;
        c.execute(&st, &[&kind, &subject]).await.map_err(be)
    }

    async fn auth_purge(&self, now: i64) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::auth_sql(Dialect::Postgres).purge).await.map_err(be)?;
        let mut n = c.execute(&st, &[&now]).await.map_err(be)?;
        for q in sql::state_sql(Dialect::Postgres).purge {
            let st = c.prepare_cached(&q).await.map_err(be)?;
            n += c.execute(&st, &[&now]).await.map_err(be)?;
        }
        Ok(n)
    }

    async fn job_mark(&self, job: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::state_sql(Dialect::Postgres).job_get).await.map_err(be)?;
        Ok(c.query_opt(&st, &[&job]).await.map_err(be)?.map(|r| r.get(0)))
    }

    async fn set_job_mark(&self, job: &str, data: &str, now: i64) -> Result<(), StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::state_sql(Dialect::Postgres).job_put).await.map_err(be)?;
        c.execute(&st, &[&job, &data, &now]).await.map_err(be).map(drop)
    }

    async fn first_job_mark(&self, job: &str, data: &str, now: i64) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::state_sql(Dialect::Postgres).job_insert_new).await.map_err(be)?;
        Ok(c.execute(&st, &[&job, &data, &now]).await.map_err(be)? > 0)
    }

    async fn seen_mark(&self, key: &str, now: i64) -> Result<Option<i64>, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::state_sql(Dialect::Postgres).seen_get).await.map_err(be)?;
        Ok(c.query_opt(&st, &[&key, &now]).await.map_err(be)?.map(|r| r.get(0)))
    }

    async fn set_seen_mark(&self, key: &str, seen_at: i64, expires_at: i64) -> Result<(), StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::state_sql(Dialect::Postgres).seen_put).await.map_err(be)?;
        c.execute(&st, &[&key, &seen_at, &expires_at]).await.map_err(be).map(drop)
    }

    async fn put_submission(&self, s: &SubmissionStatus) -> Result<(), StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::state_sql(Dialect::Postgres).submission_put).await.map_err(be)?;
        c.execute(&st, &[&s.workflow, &s.producer, &s.body, &s.expires_at]).await.map_err(be).map(drop)
    }

    async fn submission(&self, workflow: &str, now: i64) -> Result<Option<SubmissionStatus>, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::state_sql(Dialect::Postgres).submission_get).await.map_err(be)?;
        Ok(c.query_opt(&st, &[&workflow, &now]).await.map_err(be)?.map(|r| SubmissionStatus {
            workflow: r.get(0),
            producer: r.get(1),
            body: r.get(2),
            expires_at: r.get(3),
        }))
    }

    async fn claim_notification(&self, key: &str, message: &str, expires_at: i64) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let st = c.prepare_cached(&sql::state_sql(Dialect::Postgres).claim).await.map_err(be)?;
        let holder: String = c.query_one(&st, &[&key, &message, &expires_at]).await.map_err(be)?.get(0);
        Ok(holder == message)
    }

    async fn probe_write(&self, bytes: usize) -> Result<(), StoreError> {
        let c = self.client().await?;
        let q = sql::state_sql(Dialect::Postgres);
        let st = c.prepare_cached(&q.probe_put).await.map_err(be)?;
        c.execute(&st, &[&"x".repeat(bytes)]).await.map_err(be)?;
        c.batch_execute(&q.probe_delete).await.map_err(be)
    }
}

fn auth_row(r: &tokio_postgres::Row) -> AuthRecord {
    AuthRecord { kind: r.get(0), id: r.get(1), subject: r.get(2), data: r.get(3), expires_at: r.get(4) }
}

#[cfg(test)]
mod tests {
    //! Against a real PostgreSQL when `FASCICOLO_TEST_DATABASE_URL` is set (skipped otherwise).
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::Arc;

    fn url() -> Option<String> {
        std::env::var("FASCICOLO_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty())
    }

    fn with_options(url: &str, options: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options={}", options.replace(' ', "%20").replace('=', "%3D"))
    }

    #[tokio::test]
    async fn a_statement_past_the_time_limit_is_cancelled_as_a_timeout() {
        let Some(url) = url() else { return };
        let s = PgStore::connect(&with_options(&url, "-c statement_timeout=200"), 2).await.unwrap();
        let c = s.client().await.unwrap();
        let e = c.simple_query("SELECT pg_sleep(5)").await.map_err(be).unwrap_err();
        assert!(matches!(e, StoreError::Timeout(_)), "{e:?}");
        // the default applies when the URL sets none
        let s = PgStore::connect(&url, 2).await.unwrap();
        let c = s.client().await.unwrap();
        let shown: String = c.query_one("SHOW statement_timeout", &[]).await.unwrap().get(0);
        assert_eq!(shown, DEFAULT_STATEMENT_TIMEOUT);
    }

    #[tokio::test]
    async fn a_statement_whose_caller_went_away_is_cancelled() {
        let Some(url) = url() else { return };
        let s = Arc::new(PgStore::connect(&url, 2).await.unwrap());
        let marker = format!("abandoned_{}", uuid::Uuid::now_v7().simple());
        let running = {
            let (s, marker) = (Arc::clone(&s), marker.clone());
            tokio::spawn(async move {
                let c = s.client().await.unwrap();
                let guard = CancelOnDrop::arm(&c);
                let _ = c.simple_query(&format!("SELECT pg_sleep(20) /* {marker} */")).await;
                guard.disarm();
            })
        };
        let active = |s: Arc<PgStore>, marker: String| async move {
            let c = s.probe.get().await.unwrap();
            let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{marker}%' AND query NOT LIKE '%pg_stat_activity%'");
            c.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0)
        };
        let mut started = false;
        for _ in 0..50 {
            if active(Arc::clone(&s), marker.clone()).await == 1 {
                started = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(started, "the statement must be running");
        running.abort(); // the client went away
        let mut gone = false;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if active(Arc::clone(&s), marker.clone()).await == 0 {
                gone = true;
                break;
            }
        }
        assert!(gone, "an abandoned statement must be cancelled on the server, not run for 20 s");
    }

    #[tokio::test]
    async fn searches_never_hold_the_whole_pool() {
        let Some(url) = url() else { return };
        let s = PgStore::connect(&url, 4).await.unwrap();
        // three searches running (their permits and connections held): a fourth search waits
        // for a permit instead of taking the last connection, and a plain read still gets it
        assert_eq!(s.heavy.available_permits(), 3);
        let busy = s.heavy.acquire_many(3).await.unwrap();
        let held: Vec<_> = vec![s.client().await.unwrap(), s.client().await.unwrap(), s.client().await.unwrap()];
        let plan = SearchPlan { resource_type: Some("Patient".into()), limit: 10, ..Default::default() };
        let fourth = tokio::time::timeout(std::time::Duration::from_millis(500), s.search(&plan)).await;
        assert!(fourth.is_err(), "a fourth search must wait while three run");
        let t = std::time::Instant::now();
        assert!(s.read("Patient", "nobody").await.unwrap().is_none(), "a read still finds a connection");
        s.ping().await.unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
        drop((busy, held));
        // once they end, searches run again
        assert!(s.search(&plan).await.is_ok());
    }

    #[test]
    fn errors_are_classified() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(be(refused), StoreError::Backend(_)), "a bare I/O error is not a PostgreSQL error");
    }
}
