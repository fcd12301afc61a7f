//! HTTP: the FHIR REST API under `/fhir/r4`, health and metrics. Handlers are thin: extract,
//! call the app layer, render. Every route is registered in [`router`].
#![forbid(unsafe_code)]

mod fhir_api;
mod http_date;
pub mod metrics;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use axum::Router;
use fascicolo_app::FhirService;
use std::sync::Arc;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub fhir: FhirService,
    pub tokens: fascicolo_app::auth::Tokens,
    pub metrics: Arc<metrics::Metrics>,
    /// Public base URL of the FHIR API; derived from the Host header when unset.
    pub base_url: Option<String>,
}

/// Largest request body (transaction Bundles of a whole patient fit comfortably).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(fhir_api::ready))
        .route("/metrics", get(metrics::render))
        .route("/fhir/r4", any(fhir_api::dispatch_root))
        .route("/fhir/r4/", any(fhir_api::dispatch_root))
        .route("/fhir/r4/{*rest}", any(fhir_api::dispatch))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Until the citizen portal exists: what this server offers, in Italian and English.
async fn landing() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../assets/index.html"))
}

/// Serve until `shutdown` resolves, then finish in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
