//! Versioned migrations on PostgreSQL (when `FASCICOLO_TEST_DATABASE_URL` is set): from an empty
//! schema, from the last release's schema (migration 1's tables without the record of it), and
//! a database migrated by a newer program is refused.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use fascicolo_store::Store;
use fascicolo_store_postgres::{PgStore, MIGRATIONS};

async fn admin(url: &str, schema: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET search_path = \"{schema}\"")).await.unwrap();
    c
}

async fn versions(c: &tokio_postgres::Client) -> Vec<i64> {
    c.query("SELECT version FROM schema_migrations ORDER BY version", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn migrations_from_empty_from_the_last_release_and_newer_refused() {
    let Ok(url) = std::env::var("FASCICOLO_TEST_DATABASE_URL") else { return };
    let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();

    // empty: every migration once, twice opened
    let empty = format!("m_{}", uuid::Uuid::now_v7().simple());
    let store = PgStore::connect_in_schema(&url, 2, Some(&empty)).await.unwrap();
    fascicolo_store::conformance::seed(&store).await;
    drop(store);
    let again = PgStore::connect_in_schema(&url, 2, Some(&empty)).await.unwrap();
    assert!(again.read("Patient", "p1").await.unwrap().is_some());
    let c = admin(&url, &empty).await;
    assert_eq!(versions(&c).await, all);

    // two servers starting at once on a new schema: each migration applied and recorded once
    let race = format!("m_{}", uuid::Uuid::now_v7().simple());
    let (a, b) = tokio::join!(PgStore::connect_in_schema(&url, 2, Some(&race)), PgStore::connect_in_schema(&url, 2, Some(&race)));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(versions(&admin(&url, &race).await).await, all);
    fascicolo_store::conformance::seed(&a).await;
    assert!(b.read("Patient", "p1").await.unwrap().is_some());

    // the last release's schema with its data, no records: adopted, data kept
    let release = format!("m_{}", uuid::Uuid::now_v7().simple());
    let c = admin(&url, &release).await;
    c.batch_execute(MIGRATIONS[0].sql).await.unwrap();
    let key = uuid::Uuid::now_v7();
    c.execute(
        "INSERT INTO resources (patient_key, res_type, id, version, last_updated, deleted, content) VALUES ($1, 'Organization', 'org-old', 1, 1000, 0, $2)",
        &[&key, &r#"{"resourceType":"Organization","id":"org-old","name":"ASST Lariana"}"#],
    )
    .await
    .unwrap();
    c.execute("INSERT INTO locator (res_type, id, patient_key) VALUES ('Organization', 'org-old', $1)", &[&key]).await.unwrap();
    let store = PgStore::connect_in_schema(&url, 2, Some(&release)).await.unwrap();
    assert!(store.read("Organization", "org-old").await.unwrap().unwrap().json.contains("ASST Lariana"));
    assert_eq!(versions(&c).await, all);

    // migration 1's catch-all table with operational state: moved to its own tables
    let state = format!("m_{}", uuid::Uuid::now_v7().simple());
    let c2 = admin(&url, &state).await;
    c2.batch_execute(fascicolo_store::migrations::TABLE).await.unwrap();
    c2.batch_execute(MIGRATIONS[0].sql).await.unwrap();
    c2.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, 'initial', 0)", &[]).await.unwrap();
    c2.batch_execute(fascicolo_store::conformance::MIGRATION_1_STATE_ROWS).await.unwrap();
    let store = PgStore::connect_in_schema(&url, 2, Some(&state)).await.unwrap();
    fascicolo_store::conformance::state_moved_by_migration_2(&store).await;
    let kinds: Vec<String> = c2.query("SELECT kind FROM auth_records", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(kinds, ["session"], "only sign-in records stay");

    // migration 2's AuditEvents as resources: moved into the access log
    let audit = format!("m_{}", uuid::Uuid::now_v7().simple());
    let c3 = admin(&url, &audit).await;
    c3.batch_execute(fascicolo_store::migrations::TABLE).await.unwrap();
    for m in &MIGRATIONS[..2] {
        c3.batch_execute(m.sql).await.unwrap();
        c3.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, 0)", &[&m.version, &m.name]).await.unwrap();
    }
    let key = uuid::Uuid::now_v7();
    for (id, json) in fascicolo_store::conformance::MIGRATION_2_AUDIT_EVENTS {
        c3.execute(
            "INSERT INTO resources (patient_key, res_type, id, version, last_updated, deleted, content) VALUES ($1, 'AuditEvent', $2, 1, 1000, 0, $3)",
            &[&key, &id, &json],
        )
        .await
        .unwrap();
        c3.execute("INSERT INTO locator (res_type, id, patient_key) VALUES ('AuditEvent', $1, $2)", &[&id, &key]).await.unwrap();
    }
    let store = PgStore::connect_in_schema(&url, 2, Some(&audit)).await.unwrap();
    fascicolo_store::conformance::audit_moved_by_migration_3(&store).await;

    // migration 3's content as text, history repeating the current version: compacted
    let compact = format!("m_{}", uuid::Uuid::now_v7().simple());
    let c4 = admin(&url, &compact).await;
    c4.batch_execute(fascicolo_store::migrations::TABLE).await.unwrap();
    for m in &MIGRATIONS[..3] {
        c4.batch_execute(m.sql).await.unwrap();
        c4.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, 0)", &[&m.version, &m.name]).await.unwrap();
    }
    let literal = format!("'{}'::uuid", uuid::Uuid::now_v7());
    c4.batch_execute(&fascicolo_store::conformance::MIGRATION_3_RESOURCES.replace("$KEY", &literal)).await.unwrap();
    let store = PgStore::connect_in_schema(&url, 2, Some(&compact)).await.unwrap();
    fascicolo_store::conformance::content_kept_by_migration_4(&store).await;
    let frames: Vec<Vec<u8>> =
        c4.query("SELECT substring(content from 1 for 4) FROM resources", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(frames, vec![vec![0x28_u8, 0xb5, 0x2f, 0xfd]; 2], "zstd frames");
    let history: Vec<(String, i64, bool)> = c4
        .query("SELECT id, version, octet_length(content) > 0 FROM resource_history ORDER BY id, version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [("mo", 1, true), ("mo", 2, false), ("mp", 1, true), ("mp", 2, true), ("mp", 3, false)];
    assert_eq!(history.iter().map(|(i, v, b)| (i.as_str(), *v, *b)).collect::<Vec<_>>(), expected);

    // a newer program's migration: refused
    c.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'from the future', 0)", &[]).await.unwrap();
    let err = PgStore::connect_in_schema(&url, 2, Some(&release)).await.map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("migration 9999"), "{err}");
}
