//! Prometheus metrics: request counts and latency by interaction (never ids or query values).

use crate::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub interaction: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub interaction: String,
}

/// The interaction a response served (set by the FHIR dispatcher as a response extension).
#[derive(Clone, Debug)]
pub struct Interaction(pub &'static str);

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fascicolo");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        Self { registry, requests, latency }
    }
}

pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let path_kind = match req.uri().path() {
        "/healthz" | "/readyz" | "/metrics" => "ops",
        p if p.starts_with("/fhir/") => "fhir",
        _ => "other",
    };
    let resp = next.run(req).await;
    let interaction = resp.extensions().get::<Interaction>().map_or(path_kind, |i| i.0).to_string();
    let status = resp.status().as_u16().to_string();
    state.metrics.requests.get_or_create(&RequestLabels { interaction: interaction.clone(), method, status }).inc();
    state.metrics.latency.get_or_create(&LatencyLabels { interaction }).observe(start.elapsed().as_secs_f64());
    resp
}

pub async fn render(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &state.metrics.registry).is_err() {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable").into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}
