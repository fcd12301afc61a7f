//! Versioned migrations on SQLite: from an empty database, from a database made by the last
//! release before versioned migrations (its schema is migration 1's, without the record of it),
//! and a database migrated by a newer program is refused rather than written to.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use fascicolo_store::Store;
use fascicolo_store_sqlite::{SqliteStore, MIGRATIONS};

fn path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fascicolo-migrations-{}", uuid::Uuid::now_v7())).join(name)
}

fn versions(p: &std::path::Path) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(p).unwrap();
    let mut s = c.prepare("SELECT version, name FROM schema_migrations ORDER BY version").unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

#[tokio::test]
async fn an_empty_database_gets_every_migration_once() {
    let p = path("empty.db");
    let store = SqliteStore::open(&p).unwrap();
    fascicolo_store::conformance::seed(&store).await;
    let all: Vec<(i64, String)> = MIGRATIONS.iter().map(|m| (m.version, m.name.to_string())).collect();
    assert_eq!(versions(&p), all);
    drop(store);
    // opened again: nothing applied twice, the data is there
    let again = SqliteStore::open(&p).unwrap();
    assert_eq!(versions(&p), all);
    assert!(again.read("Patient", "p1").await.unwrap().is_some());
}

#[tokio::test]
async fn a_database_of_the_last_release_is_adopted_with_its_data() {
    let p = path("release.db");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    {
        // what the last release left: its schema and a resource, no migration records
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch(MIGRATIONS[0].sql).unwrap();
        let key = uuid::Uuid::now_v7();
        c.execute(
            "INSERT INTO resources (patient_key, res_type, id, version, last_updated, deleted, content) VALUES (?1, 'Organization', 'org-old', 1, 1000, 0, ?2)",
            (key.as_bytes().to_vec(), r#"{"resourceType":"Organization","id":"org-old","name":"ASST Lariana"}"#),
        )
        .unwrap();
        c.execute("INSERT INTO locator (res_type, id, patient_key) VALUES ('Organization', 'org-old', ?1)", [key.as_bytes().to_vec()])
            .unwrap();
        let has: i64 = c.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'", [], |r| r.get(0)).unwrap();
        assert_eq!(has, 0);
    }
    let store = SqliteStore::open(&p).unwrap();
    assert_eq!(versions(&p).first().map(|v| v.0), Some(1));
    let old = store.read("Organization", "org-old").await.unwrap().expect("the release's data is kept");
    assert!(old.json.contains("ASST Lariana"));
    // and the store works on it
    fascicolo_store::conformance::seed(&store).await;
    assert!(store.read("Patient", "p1").await.unwrap().is_some());
}

/// Migration 1 kept operational state in the sign-in records table; migration 2 moves each kind
/// to its own table, where the typed operations find it, and leaves the sign-in records alone.
#[tokio::test]
async fn operational_state_moves_out_of_the_sign_in_records() {
    let p = path("state.db");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch(fascicolo_store::migrations::TABLE).unwrap();
        c.execute_batch(MIGRATIONS[0].sql).unwrap();
        c.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, 'initial', 0)", []).unwrap();
        c.execute_batch(fascicolo_store::conformance::MIGRATION_1_STATE_ROWS).unwrap();
    }
    let store = SqliteStore::open(&p).unwrap();
    fascicolo_store::conformance::state_moved_by_migration_2(&store).await;
    let c = rusqlite::Connection::open(&p).unwrap();
    let kinds: Vec<String> =
        c.prepare("SELECT kind FROM auth_records").unwrap().query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(kinds, ["session"], "only sign-in records stay");
}

/// Migration 3 moves the AuditEvents of the resource tables into the lean access log.
#[tokio::test]
async fn audit_events_move_to_the_access_log() {
    let p = path("audit.db");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch(fascicolo_store::migrations::TABLE).unwrap();
        for m in &MIGRATIONS[..2] {
            c.execute_batch(m.sql).unwrap();
            c.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, 0)", (m.version, m.name)).unwrap();
        }
        let key = uuid::Uuid::now_v7();
        for (id, json) in fascicolo_store::conformance::MIGRATION_2_AUDIT_EVENTS {
            c.execute(
                "INSERT INTO resources (patient_key, res_type, id, version, last_updated, deleted, content) VALUES (?1, 'AuditEvent', ?2, 1, 1000, 0, ?3)",
                (key.as_bytes().to_vec(), id, json),
            )
            .unwrap();
            c.execute(
                "INSERT INTO resource_history (patient_key, res_type, id, version, last_updated, deleted, method, content) VALUES (?1, 'AuditEvent', ?2, 1, 1000, 0, 'POST', ?3)",
                (key.as_bytes().to_vec(), id, json),
            )
            .unwrap();
            c.execute("INSERT INTO locator (res_type, id, patient_key) VALUES ('AuditEvent', ?1, ?2)", (id, key.as_bytes().to_vec()))
                .unwrap();
            c.execute(
                "INSERT INTO idx_token (patient_key, res_type, res_id, param, seq, grp, system, code) VALUES (?1, 'AuditEvent', ?2, 'subtype', 0, 0, 's', 'c')",
                (key.as_bytes().to_vec(), id),
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&p).unwrap();
    fascicolo_store::conformance::audit_moved_by_migration_3(&store).await;
    let c = rusqlite::Connection::open(&p).unwrap();
    let left: i64 = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM resource_history WHERE res_type = 'AuditEvent') + (SELECT COUNT(*) FROM idx_token WHERE res_type = 'AuditEvent')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "no history or index rows of AuditEvents stay");
}

/// Migration 4 compresses the content, stops repeating the current version in history and keys
/// the index tables, history and the locator by their primary key; what was stored reads the same.
#[tokio::test]
async fn content_is_compacted_and_reads_the_same() {
    let p = path("compact.db");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let key = uuid::Uuid::now_v7();
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch(fascicolo_store::migrations::TABLE).unwrap();
        for m in &MIGRATIONS[..3] {
            c.execute_batch(m.sql).unwrap();
            c.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, 0)", (m.version, m.name)).unwrap();
        }
        let literal = format!("X'{}'", key.simple());
        c.execute_batch(&fascicolo_store::conformance::MIGRATION_3_RESOURCES.replace("$KEY", &literal)).unwrap();
    }
    let store = SqliteStore::open(&p).unwrap();
    fascicolo_store::conformance::content_kept_by_migration_4(&store).await;
    drop(store);
    let c = rusqlite::Connection::open(&p).unwrap();
    let kinds: Vec<(String, String)> = c
        .prepare("SELECT typeof(content), hex(substr(content, 1, 4)) FROM resources ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kinds, [("blob".to_string(), "28B52FFD".to_string()), ("blob".into(), "28B52FFD".into())], "zstd frames");
    let history: Vec<(String, i64, i64)> = c
        .prepare("SELECT id, version, length(content) FROM resource_history ORDER BY id, version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let lens: Vec<(&str, i64, bool)> = history.iter().map(|(i, v, n)| (i.as_str(), *v, *n > 0)).collect();
    // mo: v1 kept (compressed), v2 the deletion; mp: v1 and v2 kept since migration, v3 current
    assert_eq!(lens, [("mo", 1, true), ("mo", 2, false), ("mp", 1, true), ("mp", 2, true), ("mp", 3, false)]);
    for t in ["locator", "idx_token", "idx_string", "idx_date", "idx_ref", "idx_number", "idx_quantity", "idx_uri"] {
        let ddl: String = c.query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1", [t], |r| r.get(0)).unwrap();
        assert!(ddl.contains("WITHOUT ROWID"), "{t}: {ddl}");
    }
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_program_is_refused() {
    let p = path("newer.db");
    drop(SqliteStore::open(&p).unwrap());
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'from the future', 0)", []).unwrap();
    drop(c);
    let err = SqliteStore::open(&p).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("migration 9999") && err.contains("newer release"), "{err}");
}

/// Two processes starting on the same new file at once (here two threads, each its own
/// connections): the migrations are applied once, and both stores work.
#[tokio::test]
async fn two_starts_at_once_apply_each_migration_once() {
    let p = path("race.db");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let (a, b) = (p.clone(), p.clone());
    let ta = std::thread::spawn(move || SqliteStore::open(&a).map(|_| ()));
    let tb = std::thread::spawn(move || SqliteStore::open(&b).map(|_| ()));
    ta.join().unwrap().unwrap();
    tb.join().unwrap().unwrap();
    let all: Vec<(i64, String)> = MIGRATIONS.iter().map(|m| (m.version, m.name.to_string())).collect();
    assert_eq!(versions(&p), all, "each migration recorded once");
    let store = SqliteStore::open(&p).unwrap();
    fascicolo_store::conformance::seed(&store).await;
    assert!(store.read("Patient", "p1").await.unwrap().is_some());
}
