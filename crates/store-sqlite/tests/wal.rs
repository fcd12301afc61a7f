//! A clean shutdown leaves no write-ahead log behind: `Store::close` folds it into the database
//! file and truncates it (the demo's log was ~200 MB after a clean stop).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use fascicolo_store::Store;
use fascicolo_store_sqlite::SqliteStore;

#[tokio::test]
async fn close_folds_the_log_into_the_database() {
    let dir = std::env::temp_dir().join(format!("fascicolo-wal-{}", uuid::Uuid::now_v7()));
    let path = dir.join("test.db");
    let store = SqliteStore::open(&path).unwrap();
    fascicolo_store::conformance::seed(&store).await;
    let wal = dir.join("test.db-wal");
    let before = std::fs::metadata(&wal).unwrap().len();
    assert!(before > 0, "writes go to the log first");
    // a reader that has come and gone (its connection is kept idle) does not hold the log
    assert!(store.read("Patient", "p1").await.unwrap().is_some());
    store.close().await.unwrap();
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0, "the log was {before} bytes");
    // everything is in the database file: a copy of that file alone holds the data
    let copy = dir.join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    let alone = SqliteStore::open(&copy).unwrap();
    assert!(alone.read("Patient", "p1").await.unwrap().is_some());
    // and the store still works after it
    let org = serde_json::json!({"resourceType": "Organization", "id": "org9", "name": "ATS Brianza"});
    let w = fascicolo_store::conformance::write(org, fascicolo_store::PatientKey::SHARED, 1, 9_000, fascicolo_store::Expect::Absent);
    store.commit(vec![w]).await.unwrap();
    assert!(store.read("Organization", "org9").await.unwrap().is_some());
    let _ = std::fs::remove_dir_all(dir);
}
