//! The platform wired from configuration: the store (SQLite or PostgreSQL), the blob store,
//! the validator pool, the web application, the outbox worker and the orphan sweeper. The
//! `fascicolo` binary, the benchmarks and the integration tests start it alike
//! ([`Application`]).
#![forbid(unsafe_code)]

pub mod application;
pub mod config;
pub mod token;
pub mod worker;

pub use application::Application;

use anyhow::Context;
use config::Config;
use fascicolo_app::auth::{SessionLimits, Sessions};
use fascicolo_app::FhirService;
use fascicolo_store::Store;
use fascicolo_store_postgres::PgStore;
use fascicolo_store_sqlite::SqliteStore;
use fascicolo_web::oidc::{default_fiscal_claims, RelyingParty, RpConfig};
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

/// Where originals are kept: S3 when `ingest.blob_url` says so, else the data folder's `blobs/`.
pub fn blob_store(cfg: &Config) -> anyhow::Result<Arc<dyn fascicolo_blobs::BlobStore>> {
    Ok(match cfg.ingest.blob_url.as_deref() {
        Some(url) if !url.is_empty() => Arc::new(fascicolo_blobs::ObjectBlobs::s3(url).context("the blob store")?),
        _ => Arc::new(fascicolo_blobs::FolderBlobs::new(cfg.data_dir.join("blobs"))),
    })
}

/// Where `$export` files are kept: `export.blob_url`, else beside the originals (`exports/`
/// under their S3 prefix, or the data folder's `exports/`).
pub fn export_blob_store(cfg: &Config) -> anyhow::Result<Arc<dyn fascicolo_blobs::BlobStore>> {
    let derived = cfg.ingest.blob_url.as_deref().filter(|u| !u.is_empty()).map(|u| format!("{}/exports", u.trim_end_matches('/')));
    Ok(match cfg.export.blob_url.clone().filter(|u| !u.is_empty()).or(derived) {
        Some(url) => Arc::new(fascicolo_blobs::ObjectBlobs::s3(&url).context("the export blob store")?),
        None => Arc::new(fascicolo_blobs::FolderBlobs::new(cfg.data_dir.join("exports"))),
    })
}

/// The Bulk Data export service for a configuration.
pub fn export_service(cfg: &Config, fhir: FhirService) -> anyhow::Result<fascicolo_app::bulk::Exports> {
    let e = &cfg.export;
    let tuning = fascicolo_app::bulk::Tuning {
        page: e.page_rows.max(1),
        checkpoint_bytes: e.checkpoint_kib.max(1) * 1024,
        lease_ms: i64::try_from(e.lease_seconds.max(1)).unwrap_or(30) * 1000,
        ..Default::default()
    };
    Ok(fascicolo_app::bulk::Exports::with_tuning(fhir, export_blob_store(cfg)?, tuning))
}

/// How old an unreferenced original must be before it is removed (a publication takes seconds).
pub const ORPHAN_GRACE_MS: i64 = 3_600_000;

/// Sweep orphan originals and expired records a minute after start and then every six hours,
/// while serving.
pub fn spawn_orphan_sweeper(cfg: &Config, fhir: FhirService) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let blobs = blob_store(cfg)?;
    let exports = export_service(cfg, fhir.clone())?;
    Ok(tokio::spawn(async move {
        let mut wait = std::time::Duration::from_secs(60);
        loop {
            tokio::time::sleep(wait).await;
            wait = std::time::Duration::from_secs(6 * 3600);
            match fhir.purge_expired().await {
                Ok(n) => tracing::debug!(removed = n, "purged expired records"),
                Err(e) => tracing::warn!(error = %e, "purging expired records failed; will try again"),
            }
            if let Err(e) = fascicolo_app::ingest::sweep_orphans(&fhir, blobs.as_ref(), ORPHAN_GRACE_MS).await {
                tracing::warn!(error = %e, "sweeping orphan originals failed; will try again");
            }
            match exports.sweep().await {
                Ok(n) => tracing::debug!(removed = n, "removed expired export files"),
                Err(e) => tracing::warn!(error = %e, "removing expired export files failed; will try again"),
            }
        }
    }))
}

/// Everything demo mode shows, seeded through the app layer with this configuration's services
/// ([`fascicolo_load::demo::seed_everything`]); returns whether anything was left to do.
pub async fn seed_demo(cfg: &Config, store: Arc<dyn Store>) -> anyhow::Result<bool> {
    let fhir = fhir_service(cfg, store);
    let ingest = ingest_service(cfg, fhir.clone(), &cfg.public_url())?;
    fascicolo_load::demo::seed_everything(&fhir, &ingest).await
}

/// Validator threads for a configuration (0: one per core).
fn validator_threads(cfg: &Config) -> usize {
    match cfg.ingest.validators {
        0 => std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(2),
        n => n,
    }
}

/// The document publication service for a configuration (validator threads, blob store).
pub fn ingest_service(cfg: &Config, fhir: FhirService, public_url: &str) -> anyhow::Result<fascicolo_app::ingest::Ingest> {
    let threads = validator_threads(cfg);
    let blobs = blob_store(cfg)?;
    // uploaded PDFs are read in a child process (this binary as `pdf-worker`), never in the server
    let worker = match &cfg.ingest.pdf_worker {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating this program (it reads PDFs as its own child process)")?,
    };
    let pdf = fascicolo_app::pdf_reader::PdfReader::isolated(worker, threads.max(2));
    Ok(fascicolo_app::ingest::Ingest::new(fhir, blobs, fascicolo_validators::Validators::start(threads), public_url).with_pdf_reader(pdf))
}

/// `fascicolo pdf-worker`: read one PDF from standard input under this process's own limits
/// (address space, CPU time), write the embedded CDA2 or the error to standard output.
pub fn pdf_worker() -> std::io::Result<()> {
    fascicolo_app::pdf_reader::worker_main(|| {
        // the limits hold for this child alone; on failure to set them the reply is still bounded
        // by the parent's wall-clock limit
        let _ = rlimit::setrlimit(rlimit::Resource::AS, PDF_WORKER_MEMORY, PDF_WORKER_MEMORY);
        let _ = rlimit::setrlimit(rlimit::Resource::CPU, 10, 12);
        let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
    })
}

/// Address space a PDF worker may use (a 20 MiB upload with its CDA2 needs far less).
pub const PDF_WORKER_MEMORY: u64 = 1024 * 1024 * 1024;

/// The whole web application for a configuration (the server and the tests build it alike).
pub fn build_router(store: Arc<dyn Store>, cfg: &Config) -> anyhow::Result<axum::Router> {
    let er = fascicolo_app::er::ErService::new(fhir_service(cfg, Arc::clone(&store))).with_cuni_key(cfg.er.cuni_key(cfg.demo_mode()));
    build_router_with(store, cfg, er)
}

/// Every quarter of an hour, the picture of every emergency room kept as `MeasureReport`s.
pub fn spawn_er_history(er: fascicolo_app::er::ErService) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        const EVERY: i64 = 15 * 60;
        loop {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let next = (now / EVERY + 1) * EVERY;
            tokio::time::sleep(std::time::Duration::from_secs(u64::try_from(next - now).unwrap_or(1))).await;
            let (Ok(at), Ok(from)) =
                (time::OffsetDateTime::from_unix_timestamp(next), time::OffsetDateTime::from_unix_timestamp(next - EVERY))
            else {
                continue;
            };
            match er.record_history(from, at).await {
                Ok(n) => tracing::debug!(reports = n, "emergency rooms: history recorded"),
                Err(e) => tracing::warn!(error = %e, "emergency rooms: the history was not recorded this time"),
            }
        }
    })
}

/// The municipalities of the region with a position to measure distances from (the centre of
/// their province: the synthetic region knows no finer geometry).
pub fn er_places() -> Vec<fascicolo_web::er_web::Place> {
    fascicolo_load::er_sim::places()
}

/// The web application over `store`, with the emergency-room service `er` (shared with the
/// simulator that feeds it in demo mode).
pub fn build_router_with(store: Arc<dyn Store>, cfg: &Config, er: fascicolo_app::er::ErService) -> anyhow::Result<axum::Router> {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let public_url = cfg.public_url();
    let demo = cfg.demo_mode();
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap_or_default();
    let rp_cfg = match (&cfg.oidc, demo) {
        (Some(o), _) => RpConfig {
            issuer: o.issuer.trim_end_matches('/').to_string(),
            client_id: o.client_id.clone(),
            client_secret: o.client_secret.clone(),
            redirect_uri: format!("{public_url}/auth/callback"),
            scopes: o.scopes.clone().unwrap_or_else(|| "openid profile".into()),
            fiscal_claims: default_fiscal_claims(o.fiscal_number_claim.as_deref()),
        },
        (None, _) => RpConfig {
            issuer: format!("{public_url}/demo-idp"),
            client_id: fascicolo_web::demo_idp::PORTAL_CLIENT.into(),
            client_secret: None,
            redirect_uri: format!("{public_url}/auth/callback"),
            scopes: "openid profile".into(),
            fiscal_claims: default_fiscal_claims(None),
        },
    };
    let personas = if demo { fascicolo_load::demo::idp_personas() } else { Vec::new() };
    let limits = SessionLimits { idle_ms: cfg.session.idle_minutes * 60_000, absolute_ms: cfg.session.absolute_hours * 3_600_000 };
    let auth = fascicolo_web::AuthState {
        cookie_secure: public_url.starts_with("https://"),
        public_url,
        demo,
        rp: RelyingParty::new(rp_cfg, http),
        personas,
        clients: cfg.all_clients(),
        sessions: Sessions::new(Arc::clone(&store), limits),
    };
    let fhir = fhir_service(cfg, Arc::clone(&store));
    let ingest = ingest_service(cfg, fhir.clone(), &auth.public_url)?;
    let exports = export_service(cfg, fhir.clone())?;
    let state = fascicolo_web::AppState::new(fascicolo_web::AppServices {
        fhir,
        exports,
        tokens: fascicolo_app::auth::Tokens::new(store),
        metrics: Arc::default(),
        base_url: cfg.base_url.clone(),
        auth: Arc::new(auth),
        ingest,
        ingest_max_bytes: cfg.ingest.max_upload_mib * 1024 * 1024,
        uploads: Arc::new(tokio::sync::Semaphore::new(match cfg.ingest.concurrent_uploads {
            0 => (validator_threads(cfg) * 2).max(4),
            n => n,
        })),
        upload_wait: std::time::Duration::from_secs(cfg.ingest.upload_wait_seconds),
        throttle: Arc::new(fascicolo_web::throttle::Throttle::new(cfg.rate_limit.clone())),
        er,
        places: Arc::new(er_places()),
    });
    Ok(fascicolo_web::router(state))
}

/// `fascicolo validate`: validates CDA2 files and prints one JSON object per file
/// (`{"file": ..., "valid": ..., "problems": [...]}`). Returns whether every file is valid.
pub fn validate_files(files: &[std::path::PathBuf]) -> anyhow::Result<bool> {
    let mut validator = fascicolo_cda::Validator::new();
    let mut all_valid = true;
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let report = validator.validate(&bytes);
        all_valid &= !report.has_errors();
        let line = serde_json::json!({
            "file": file.display().to_string(),
            "valid": !report.has_errors(),
            "problems": report.problems,
        });
        println!("{line}");
    }
    Ok(all_valid)
}
