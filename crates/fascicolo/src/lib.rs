//! Wiring of the `fascicolo` binary, as a library so integration tests start the same app.
#![forbid(unsafe_code)]

pub mod bench;
pub mod config;
pub mod demo;
pub mod import;
pub mod token;

use anyhow::Context;
use config::Config;
use fascicolo_app::FhirService;
use fascicolo_store::Store;
use fascicolo_store_postgres::PgStore;
use fascicolo_store_sqlite::SqliteStore;
use std::sync::Arc;

pub async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match cfg.database_url.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let s = PgStore::connect(url, cfg.pg_pool_size).await.context("connecting to PostgreSQL")?;
            Ok(Arc::new(s))
        }
        Some(other) if !other.is_empty() => {
            anyhow::bail!("unsupported database URL scheme (use postgres://): {}", other.split(':').next().unwrap_or(""))
        }
        _ => {
            std::fs::create_dir_all(cfg.data_dir.join("blobs")).context("creating the data folder")?;
            let path = cfg.data_dir.join("fascicolo.db");
            let s = tokio::task::spawn_blocking(move || SqliteStore::open(path)).await??;
            Ok(Arc::new(s))
        }
    }
}

/// The FHIR service with the configured privacy policy.
pub fn fhir_service(cfg: &Config, store: Arc<dyn Store>) -> FhirService {
    FhirService::with_policy(store, cfg.policy())
}

pub fn build_router(store: Arc<dyn Store>, base_url: Option<String>) -> axum::Router {
    let state = fascicolo_web::AppState {
        fhir: FhirService::new(Arc::clone(&store)),
        tokens: fascicolo_app::auth::Tokens::new(store),
        metrics: Arc::default(),
        base_url,
    };
    fascicolo_web::router(state)
}
