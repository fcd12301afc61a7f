//! HTTP: the FHIR REST API under `/fhir/r4`, health and metrics. Handlers are thin: extract,
//! call the app layer, render. Every route is registered in [`router`].
#![forbid(unsafe_code)]

pub mod auth_web;
pub mod demo_idp;
mod fhir_api;
pub mod html;
mod http_date;
mod ingest_api;
pub mod metrics;
pub mod oidc;
pub mod portal;
pub mod smart;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post, put};
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
    pub auth: Arc<AuthState>,
    /// Document publication.
    pub ingest: fascicolo_app::ingest::Ingest,
    /// Largest accepted document upload, in bytes.
    pub ingest_max_bytes: usize,
}

/// Sign-in and authorization: the relying party, sessions, the demo provider, clients.
pub struct AuthState {
    /// The site's public URL (no trailing slash).
    pub public_url: String,
    /// Cookies carry `Secure` (the site is served over HTTPS).
    pub cookie_secure: bool,
    /// Demo mode: the demo identity provider is on and pages say so.
    pub demo: bool,
    pub rp: oidc::RelyingParty,
    /// People the demo provider offers (empty outside demo mode).
    pub personas: Vec<demo_idp::DemoPersona>,
    pub clients: Vec<fascicolo_app::auth::Client>,
    pub sessions: fascicolo_app::auth::Sessions,
}

impl AppState {
    /// The FHIR base URL (for `aud` checks and links).
    pub fn fhir_base(&self) -> String {
        self.base_url.clone().unwrap_or_else(|| format!("{}/fhir/r4", self.auth.public_url))
    }
}

/// Largest request body (transaction Bundles of a whole patient fit comfortably).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(fhir_api::ready))
        .route("/metrics", get(metrics::render))
        .route("/auth/login", get(auth_web::login))
        .route("/auth/callback", get(auth_web::callback))
        .route("/auth/profile", post(auth_web::switch_profile))
        .route("/auth/logout", post(auth_web::logout))
        .route("/auth/logout-everywhere", post(auth_web::logout_everywhere))
        .route("/me", get(auth_web::me))
        .route("/.well-known/smart-configuration", get(smart::configuration))
        .route("/fhir/r4/.well-known/smart-configuration", get(smart::configuration))
        .route("/oauth/authorize", get(smart::authorize).post(smart::approve))
        .route("/oauth/token", post(smart::token))
        .route("/oauth/introspect", post(smart::introspect))
        .route("/oauth/revoke", post(smart::revoke))
        .route("/ingest/v1/documents/validation", post(ingest_api::validation))
        .route("/ingest/v1/documents", post(ingest_api::publish))
        .route("/ingest/v1/documents/{id}", put(ingest_api::replace).delete(ingest_api::delete))
        .route("/ingest/v1/documents/{id}/metadata", put(ingest_api::metadata))
        .route("/ingest/v1/status/{id}", get(ingest_api::status))
        .route("/documents/{id}", get(ingest_api::rendering))
        .route("/documents/{id}/original", get(ingest_api::original))
        .route("/documents/{id}/pdf", get(ingest_api::pdf))
        .merge(demo_routes(&state))
        .merge(portal::routes())
        .route("/fhir/r4", any(fhir_api::dispatch_root))
        .route("/fhir/r4/", any(fhir_api::dispatch_root))
        .route("/fhir/r4/{*rest}", any(fhir_api::dispatch))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The demo identity provider's routes, only in demo mode.
fn demo_routes(state: &AppState) -> Router<AppState> {
    if !state.auth.demo {
        return Router::new();
    }
    Router::new()
        .route("/demo-idp/.well-known/openid-configuration", get(demo_idp::discovery))
        .route("/demo-idp/authorize", get(demo_idp::authorize).post(demo_idp::choose))
        .route("/demo-idp/token", post(demo_idp::token))
        .route("/demo-idp/jwks", get(demo_idp::jwks))
        .route("/demo-idp/logout", get(demo_idp::logout))
}

/// Serve until `shutdown` resolves, then finish in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
