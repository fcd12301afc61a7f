//! `/celiachia/v1`: the merchant API of the celiac budget (documented in `docs/celiac-api.md`).
//! A registered merchant's backend (SMART client credentials) authorises a purchase with the
//! code the citizen shows, then captures or voids it, and refunds a captured one. Every answer
//! carries the remaining budget. Authorisations and refunds need an `Idempotency-Key` header.

use crate::er_web::{app_problem, problem};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fascicolo_app::celiac::Outcome;
use fascicolo_app::portal::Portal;
use fascicolo_app::Actor;
use serde_json::{json, Value};

async fn actor(state: &AppState, headers: &HeaderMap) -> Result<Actor, Response> {
    crate::fhir_api::authenticate(state, headers)
        .await
        .map_err(|_| problem(401, "unauthorized", "the access token is not valid or has expired".into()))
}

/// What is wrong with a request body: status, error code, message.
type Bad = (u16, &'static str, &'static str);

fn bad((status, code, message): Bad) -> Response {
    problem(status, code, message.into())
}

fn body_json(body: &[u8]) -> Result<Value, Bad> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    if body.len() > 4096 {
        return Err((413, "too-large", "a request is at most 4 KiB"));
    }
    match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err((400, "bad-request", "the body must be one JSON object")),
    }
}

/// An amount in cents from the body: a whole number, or absent when `required` is false.
fn amount(v: &Value, required: bool) -> Result<Option<i64>, Bad> {
    match &v["amount"] {
        Value::Null if !required => Ok(None),
        Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64()),
        _ => Err((400, "bad-request", "amount: a whole number of euro cents")),
    }
}

fn key(headers: &HeaderMap) -> String {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

fn answer(o: Result<Outcome, fascicolo_app::AppError>, created: bool) -> Response {
    match o {
        Ok(o) => {
            let status = if created && !o.replayed { StatusCode::CREATED } else { StatusCode::OK };
            (status, axum::Json(json!({"purchase": o.spend, "budget": o.budget, "replayed": o.replayed}))).into_response()
        }
        Err(e) => app_problem(&e),
    }
}

/// `POST /celiachia/v1/authorizations` `{"code": "...", "amount": 1250}`: 201 with the
/// purchase and the budget; 200 for a replay of the same key; 409 over the budget.
pub async fn authorize(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let a = match actor(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let v = match body_json(&body) {
        Ok(v) => v,
        Err(b) => return bad(b),
    };
    let Some(code) = v["code"].as_str().filter(|c| !c.is_empty() && c.len() < 200) else {
        return problem(400, "bad-request", "code: the code the citizen shows".into());
    };
    let cents = match amount(&v, true) {
        Ok(c) => c.unwrap_or_default(),
        Err(b) => return bad(b),
    };
    answer(Portal::new(state.fhir.clone()).celiac_authorize(&a, code, cents, &key(&headers)).await, true)
}

/// `POST /celiachia/v1/authorizations/{id}/capture` `{"amount": 1100}` (optional: all).
pub async fn capture(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let a = match actor(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let cents = match body_json(&body).and_then(|v| amount(&v, false)) {
        Ok(c) => c,
        Err(b) => return bad(b),
    };
    answer(Portal::new(state.fhir.clone()).celiac_capture(&a, &id, cents).await, false)
}

/// `POST /celiachia/v1/authorizations/{id}/void`
pub async fn void(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let a = match actor(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    answer(Portal::new(state.fhir.clone()).celiac_void(&a, &id).await, false)
}

/// `POST /celiachia/v1/authorizations/{id}/refunds` `{"amount": 300}`
pub async fn refund(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let a = match actor(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let cents = match body_json(&body).and_then(|v| amount(&v, true)) {
        Ok(c) => c.unwrap_or_default(),
        Err(b) => return bad(b),
    };
    answer(Portal::new(state.fhir.clone()).celiac_refund(&a, &id, cents, &key(&headers)).await, true)
}
