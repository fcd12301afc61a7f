//! The store conformance suite on PostgreSQL, when `FASCICOLO_TEST_DATABASE_URL` is set
//! (a fresh schema per test); skipped otherwise.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use fascicolo_store_postgres::PgStore;

async fn fresh() -> Option<PgStore> {
    let url = std::env::var("FASCICOLO_TEST_DATABASE_URL").ok()?;
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    Some(PgStore::connect_in_schema(&url, 4, Some(&schema)).await.expect("connect to PostgreSQL"))
}

fascicolo_store::conformance_suite!(fresh().await);
