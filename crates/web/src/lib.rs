//! HTTP: the FHIR REST API under `/fhir/r4`, health and metrics. Handlers are thin: extract,
//! call the app layer, render. Every route is registered in [`router`].
#![forbid(unsafe_code)]

pub mod auth_web;
mod celiac_api;
pub mod demo_idp;
pub mod er_web;
mod fhir_api;
pub mod html;
mod http_date;
pub(crate) mod i18n;
mod ingest_api;
pub mod metrics;
pub mod oidc;
pub mod portal;
pub mod smart;
pub mod throttle;
mod waiting_web;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post, put};
use axum::Router;
use fascicolo_app::FhirService;
use std::sync::Arc;

/// Shared state of every handler: one allocation, so each request clones a single pointer (the
/// services' own fields are reached through it).
#[derive(Clone)]
pub struct AppState(Arc<AppServices>);

impl AppState {
    pub fn new(services: AppServices) -> Self {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;
    fn deref(&self) -> &AppServices {
        &self.0
    }
}

/// What the handlers use: the app layer's services and the web layer's settings.
pub struct AppServices {
    pub fhir: FhirService,
    pub tokens: fascicolo_app::auth::Tokens,
    pub metrics: Arc<metrics::Metrics>,
    /// Public base URL of the FHIR API; derived from the Host header when unset.
    pub base_url: Option<String>,
    pub auth: Arc<AuthState>,
    /// Document publication.
    pub ingest: fascicolo_app::ingest::Ingest,
    /// Bulk Data `$export`.
    pub exports: fascicolo_app::bulk::Exports,
    /// Largest accepted document upload, in bytes.
    pub ingest_max_bytes: usize,
    /// Uploads held in memory at once, and how long one waits for its turn.
    pub uploads: Arc<tokio::sync::Semaphore>,
    pub upload_wait: std::time::Duration,
    /// Rate limits at the edge.
    pub throttle: Arc<throttle::Throttle>,
    /// Emergency rooms live.
    pub er: fascicolo_app::er::ErService,
    /// Municipalities people may type to find the nearest emergency rooms.
    pub places: Arc<Vec<er_web::Place>>,
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

impl AppServices {
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
        .route("/er/v1/events", post(er_web::post_event))
        .route("/celiachia/v1/authorizations", post(celiac_api::authorize))
        .route("/celiachia/v1/authorizations/{id}/capture", post(celiac_api::capture))
        .route("/celiachia/v1/authorizations/{id}/void", post(celiac_api::void))
        .route("/celiachia/v1/authorizations/{id}/refunds", post(celiac_api::refund))
        .route("/er/v1/emur-ps", get(er_web::emur))
        .route("/tempi-di-attesa", get(waiting_web::index))
        .route("/tempi-di-attesa.json", get(waiting_web::feed))
        .route("/pronto-soccorso", get(er_web::index))
        .route("/pronto-soccorso/stato.json", get(er_web::feed))
        .route("/pronto-soccorso/live", get(er_web::stream))
        .route("/pronto-soccorso/live.js", get(er_web::live_js))
        .route("/pronto-soccorso/{id}", get(er_web::room))
        .route("/pronto-soccorso/{id}/stato.json", get(er_web::room_feed))
        .route("/documents/{id}", get(ingest_api::rendering))
        .route("/documents/{id}/original", get(ingest_api::original))
        .route("/documents/{id}/pdf", get(ingest_api::pdf))
        .merge(demo_routes(&state))
        .merge(portal::routes())
        .route("/fhir/r4", any(fhir_api::dispatch_root))
        .route("/fhir/r4/", any(fhir_api::dispatch_root))
        .route("/fhir/r4/{*rest}", any(fhir_api::dispatch))
        .fallback(portal::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(axum::middleware::from_fn_with_state(state.clone(), rate_limits))
        .layer(axum::middleware::from_fn_with_state(state.clone(), outages))
        .layer(axum::middleware::from_fn_with_state(state.clone(), security_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The content security policy of every response: no scripts at all (the portal needs none),
/// styles and images from the site itself (inline styles for the few layout attributes), never
/// framed by another site.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'none'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Rate limits (see [`throttle`]): sign-in and OAuth endpoints per client address, and an
/// address that keeps sending invalid access tokens is refused before its tokens are looked at.
async fn rate_limits(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, Method};
    use throttle::Bucket;
    // requests that did not come over a connection (in-process calls) have no address to limit
    let Some(Peer(peer)) = req.extensions().get::<Peer>().copied() else { return next.run(req).await };
    let forwarded = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let addr = state.throttle.client_address(peer.ip(), forwarded);
    let path = req.uri().path().to_string();
    let bucket = match path.as_str() {
        "/auth/login" | "/auth/callback" | "/demo-idp/token" => Some(Bucket::SignIn),
        "/demo-idp/authorize" if req.method() == Method::POST => Some(Bucket::SignIn),
        p if p.starts_with("/oauth/") => Some(Bucket::OAuth),
        _ => None,
    };
    if let Some(b) = bucket {
        if let Err(wait) = state.throttle.admit(b, addr) {
            tracing::warn!(path = %path, "rate limit reached");
            return too_many(&path, wait);
        }
    }
    let credentials = req.headers().contains_key(header::AUTHORIZATION);
    if credentials {
        if let Some(wait) = state.throttle.guessing(addr) {
            return too_many(&path, wait);
        }
    }
    let r = next.run(req).await;
    if credentials && r.status() == axum::http::StatusCode::UNAUTHORIZED {
        state.throttle.bad_token(addr);
    }
    r
}

/// Outages told as such: `503` and `507` answers carry `Retry-After`, and a `507` (the storage is
/// full) makes readiness probe for room before it reports ready again.
async fn outages(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue, StatusCode};
    let mut r = next.run(req).await;
    let wait = match r.status() {
        StatusCode::SERVICE_UNAVAILABLE => 5u32,
        StatusCode::INSUFFICIENT_STORAGE => {
            state.fhir.health().storage_full();
            60
        }
        _ => return r,
    };
    if !r.headers().contains_key(header::RETRY_AFTER) {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
    }
    r
}

/// `429 Too Many Requests` in the form the endpoint speaks, with `Retry-After`.
fn too_many(path: &str, wait: throttle::RetryAfter) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let secs = wait.secs();
    let mut r = if path.starts_with("/fhir/") || path.starts_with("/ingest/") || path.starts_with("/documents/") {
        let body = serde_json::json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "throttled",
            "diagnostics": format!("too many requests from this address; retry in {secs} s")}]});
        (StatusCode::TOO_MANY_REQUESTS, [(header::CONTENT_TYPE, "application/fhir+json")], body.to_string()).into_response()
    } else if path.starts_with("/oauth/") || path == "/demo-idp/token" {
        let body = serde_json::json!({"error": "slow_down", "error_description": format!("too many requests; retry in {secs} s")});
        (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
    } else {
        let lang = html::Lang::It;
        let msg = format!(
            "Troppi tentativi da questo indirizzo: riprova tra {secs} secondi. / Too many attempts from this address: try again in {secs} seconds."
        );
        (StatusCode::TOO_MANY_REQUESTS, axum::response::Html(html::error_page(lang, "Troppi tentativi / Too many attempts", &msg)))
            .into_response()
    };
    r.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
    r
}

/// Security headers on every response; over HTTPS, HSTS, and every cookie `Secure`.
async fn security_headers(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    // a page that runs our own script sets its own policy; every other response runs none
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if state.auth.cookie_secure {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
        let cookies: Vec<HeaderValue> = h.get_all(header::SET_COOKIE).iter().cloned().collect();
        if cookies.iter().any(|c| !c.to_str().unwrap_or_default().contains("; Secure")) {
            h.remove(header::SET_COOKIE);
            for c in cookies {
                let v = c.to_str().unwrap_or_default();
                let fixed =
                    if v.contains("; Secure") { c.clone() } else { HeaderValue::from_str(&format!("{v}; Secure")).unwrap_or(c.clone()) };
                h.append(header::SET_COOKIE, fixed);
            }
        }
    }
    r
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

/// Limits of the HTTP edge: what one connection, or many, may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Open connections at once; past it, new ones are closed at accept.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (slow-header attacks).
    pub header_timeout: std::time::Duration,
}

impl Default for ServeLimits {
    /// Room for thousands of open live streams (the emergency-room page) under a 20,000-file
    /// limit, with the store's files and outgoing connections beside them.
    fn default() -> Self {
        ServeLimits { max_connections: 12_000, header_timeout: std::time::Duration::from_secs(10) }
    }
}

/// The peer address of a request's connection (set by [`serve`]).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// Serve until `shutdown` resolves, then finish in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, ServeLimits::default()).await
}

/// [`serve`] with explicit limits: HTTP/1.1 connections with a header timeout, at most
/// `max_connections` at once, each request told its peer address; on shutdown the listener
/// closes and in-flight requests finish.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // too many open files and the like: wait a moment rather than spin
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            drop(stream); // over the connection cap: closed at once, nothing read
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            let mut app = app.clone();
            async move {
                use tower::Service;
                app.call(req.map(axum::body::Body::new)).await
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    // in-flight requests finish; a connection that will not end is not waited for forever
    if tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still open 30 s after shutdown began; closing them");
    }
    Ok(())
}
