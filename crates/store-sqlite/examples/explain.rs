//! Print SQLite's query plan for a search: `cargo run -p fascicolo-store-sqlite --example explain DB TYPE QUERY`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (db, rt, q) = (&args[1], &args[2], &args[3]);
    let pairs: Vec<(String, String)> = q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
    let req = fascicolo_fhir::search::parse_search(Some(rt), &pairs).unwrap();
    let patient = std::env::var("PK").ok().map(|v| fascicolo_domain::PatientKey::for_patient_id(&v));
    let plan = fascicolo_store::SearchPlan {
        resource_type: Some(rt.clone()),
        patient,
        clauses: req.clauses,
        sort: req.sort,
        limit: 21,
        ..Default::default()
    };
    let dialect = if std::env::var("PG").is_ok() { fascicolo_store::sql::Dialect::Postgres } else { fascicolo_store::sql::Dialect::Sqlite };
    let sql = fascicolo_store::sql::search_sql(dialect, &plan);
    if std::env::var("PG").is_ok() {
        println!("{}\n{:?}", sql.sql, sql.params);
        return;
    }
    println!("{}\n{:?}", sql.sql, sql.params);
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {}", sql.sql)).unwrap();
    let mut i = 0;
    let binds: Vec<rusqlite::types::Value> = sql
        .params
        .iter()
        .map(|p| match p {
            fascicolo_store::sql::SqlValue::Text(s) => rusqlite::types::Value::Text(s.clone()),
            fascicolo_store::sql::SqlValue::Int(n) => rusqlite::types::Value::Integer(*n),
            fascicolo_store::sql::SqlValue::Real(f) => rusqlite::types::Value::Real(*f),
            fascicolo_store::sql::SqlValue::Key(k) => rusqlite::types::Value::Blob(k.uuid().as_bytes().to_vec()),
            fascicolo_store::sql::SqlValue::Uuid(u) => rusqlite::types::Value::Blob(u.as_bytes().to_vec()),
            fascicolo_store::sql::SqlValue::Null => rusqlite::types::Value::Null,
        })
        .collect();
    let mut rows = st.query(rusqlite::params_from_iter(binds)).unwrap();
    while let Some(r) = rows.next().unwrap() {
        let d: String = r.get(3).unwrap();
        println!("{i}: {d}");
        i += 1;
    }
}
