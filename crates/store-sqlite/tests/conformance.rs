//! The store conformance suite on SQLite (a fresh database file per test).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use fascicolo_store_sqlite::SqliteStore;

fn fresh() -> Option<SqliteStore> {
    let dir = std::env::temp_dir().join(format!("fascicolo-test-{}", uuid::Uuid::now_v7()));
    Some(SqliteStore::open(dir.join("test.db")).expect("open sqlite"))
}

fascicolo_store::conformance_suite!(fresh());
