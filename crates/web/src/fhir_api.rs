//! The FHIR REST surface. One dispatcher maps `METHOD /fhir/r4/...` to one app call; the whole
//! API is readable in [`route`].

use crate::http_date::http_date;
use crate::metrics::Interaction;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use fascicolo_app::bulk::{Level, Status};
use fascicolo_app::capability::capability_statement;
use fascicolo_app::{error_status, Actor, AppError, Versioned, WriteOutcome};
use fascicolo_fhir::{operation_outcome, OutcomeIssue};
use serde_json::Value;

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

pub async fn ready(State(state): State<AppState>) -> Response {
    match state.fhir.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.message()).into_response(),
    }
}

fn json_response(status: StatusCode, body: &Value, interaction: &'static str) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = (status, [(header::CONTENT_TYPE, FHIR_JSON)], bytes).into_response();
    r.extensions_mut().insert(Interaction(interaction));
    r
}

fn outcome(status: u16, issues: &[OutcomeIssue], interaction: &'static str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &operation_outcome(issues), interaction)
}

/// Why a FHIR request was not answered as asked (the error policy, `docs/decisions/0007`): an
/// app error, with the status [`error_status`] gives it everywhere; a request the API refuses
/// before the app layer (its media type, its headers, its body's size or pace). Every
/// handler returns [`ApiResult`] and uses `?`; the OperationOutcome is written here only.
pub enum ApiError {
    App(AppError, &'static str),
    Refused { status: u16, code: &'static str, message: String, interaction: &'static str },
}

pub type ApiResult = Result<Response, ApiError>;

impl ApiError {
    /// An app error met in `interaction`.
    fn app(interaction: &'static str) -> impl Fn(AppError) -> ApiError {
        move |e| ApiError::App(e, interaction)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::App(e, interaction) => app_error(&e, interaction),
            ApiError::Refused { status, code, message, interaction } => outcome(status, &[OutcomeIssue::error(code, message)], interaction),
        }
    }
}

fn app_error(e: &AppError, interaction: &'static str) -> Response {
    match e {
        AppError::Store(inner) => tracing::error!(error = %inner, interaction, "storage failure"),
        AppError::Forbidden(_) => tracing::info!(interaction, "access refused by the gate"),
        _ => {}
    }
    let (status, issues) = error_status(e);
    let mut r = outcome(status, &issues, interaction);
    if status == 401 {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"fascicolo\", error=\"invalid_token\""));
    }
    r
}

/// A request the API refuses itself.
fn refused(status: u16, code: &'static str, message: impl Into<String>, interaction: &'static str) -> ApiError {
    ApiError::Refused { status, code, message: message.into(), interaction }
}

/// The base URL of links and `Location`: always the configured public URL, never the request's
/// `Host` or `X-Forwarded-*` headers (a client could make them anything, e.g. `javascript:`).
fn base_url(state: &AppState) -> String {
    state.fhir_base().trim_end_matches('/').to_string()
}

fn pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// The actor of a request: the bearer token's, or anonymous (who sees no patient data). A token
/// that is sent but not valid is refused outright.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Actor, AppError> {
    let Some(h) = headers.get(header::AUTHORIZATION) else {
        return Ok(Actor::anonymous());
    };
    let v = h.to_str().unwrap_or("");
    let Some(token) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) else {
        return Err(AppError::Unauthorized("the Authorization header must be 'Bearer <access token>'".into()));
    };
    match state.tokens.resolve(token.trim()).await {
        Ok(a) => Ok(a),
        Err(e) => {
            tracing::warn!("refused an invalid access token");
            Err(e)
        }
    }
}

fn wants_xml(headers: &HeaderMap, q: &[(String, String)]) -> bool {
    if let Some((_, f)) = q.iter().find(|(k, _)| k == "_format") {
        return f.contains("xml");
    }
    let accept = headers.get(header::ACCEPT).and_then(|h| h.to_str().ok()).unwrap_or("*/*");
    accept.contains("xml") && !accept.contains("json") && !accept.contains("*/*")
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json(ct: &str) -> bool {
    matches!(ct, "application/fhir+json" | "application/json" | "application/json+fhir")
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, String> {
    match headers.get(header::IF_MATCH).and_then(|h| h.to_str().ok()) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse()
            .map(Some)
            .map_err(|_| format!("If-Match '{v}' is not an ETag like W/\"3\"")),
    }
}

fn prefer_minimal(headers: &HeaderMap) -> Option<&'static str> {
    let p = headers.get("prefer").and_then(|h| h.to_str().ok()).unwrap_or("");
    if p.contains("return=minimal") {
        Some("minimal")
    } else if p.contains("return=OperationOutcome") {
        Some("outcome")
    } else {
        None
    }
}

fn versioned(status: StatusCode, v: &Versioned, base: &str, headers: &HeaderMap, interaction: &'static str, location: bool) -> Response {
    let mut r = match prefer_minimal(headers) {
        Some("minimal") => {
            let mut r = status.into_response();
            r.extensions_mut().insert(Interaction(interaction));
            r
        }
        Some(_) => json_response(
            status,
            &operation_outcome(&[OutcomeIssue::information(format!("{}/{} version {}", v.resource_type, v.id, v.version))]),
            interaction,
        ),
        None => json_response(status, &v.resource, interaction),
    };
    let h = r.headers_mut();
    if let Ok(x) = HeaderValue::from_str(&format!("W/\"{}\"", v.version)) {
        h.insert(header::ETAG, x);
    }
    if let Ok(x) = HeaderValue::from_str(&http_date(v.last_updated)) {
        h.insert(header::LAST_MODIFIED, x);
    }
    if location {
        if let Ok(x) = HeaderValue::from_str(&format!("{base}/{}/{}/_history/{}", v.resource_type, v.id, v.version)) {
            h.insert(header::LOCATION, x);
        }
    }
    r
}

fn written(res: Result<WriteOutcome, AppError>, base: &str, headers: &HeaderMap, interaction: &'static str) -> ApiResult {
    let o = res.map_err(ApiError::app(interaction))?;
    let status = if o.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(versioned(status, &o.version, base, headers, interaction, true))
}

/// Read a request body of at most `limit` bytes, within a time limit (a trickled body does not
/// hold a connection for ever).
async fn read_body(body: axum::body::Body, limit: usize, interaction: &'static str) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let read = tokio::time::timeout(std::time::Duration::from_secs(60), http_body_util::Limited::new(body, limit).collect()).await;
    match read {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(refused(
            413,
            "too-costly",
            format!("the request body is larger than the limit of {} for your kind of client", human_bytes(limit)),
            interaction,
        )),
        Ok(Err(_)) => Err(refused(400, "invalid", "the request body could not be read", interaction)),
        Err(_) => Err(refused(408, "timeout", "the request body took too long to arrive", interaction)),
    }
}

fn human_bytes(n: usize) -> String {
    if n >= 1024 * 1024 {
        format!("{} MiB", n / (1024 * 1024))
    } else {
        format!("{} KiB", n / 1024)
    }
}

pub async fn dispatch_root(
    state: State<AppState>,
    method: Method,
    query: RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    route(state, method, String::new(), query, headers, body).await
}

pub async fn dispatch(
    state: State<AppState>,
    method: Method,
    Path(rest): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    route(state, method, rest, query, headers, body).await
}

async fn route(
    State(state): State<AppState>,
    method: Method,
    rest: String,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let q = pairs(&query);
    if wants_xml(&headers, &q) {
        return Err(refused(406, "not-supported", "this server speaks FHIR JSON only (application/fhir+json)", "fhir"));
    }
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let base = base_url(&state);
    let f = &state.fhir;
    let who = authenticate(&state, &headers).await.map_err(ApiError::app("fhir"))?;
    // the body is read only once the client is known, and only as much as its kind may send
    let has_body = matches!(method, Method::POST | Method::PUT | Method::PATCH);
    if has_body && matches!(who.who, fascicolo_app::Who::Anonymous) {
        return Err(ApiError::App(AppError::Unauthorized("sign-in required: send an access token".into()), "fhir"));
    }
    let body = if has_body { read_body(body, fascicolo_app::limits::body_bytes(&who), "fhir").await? } else { Bytes::new() };
    let needs_json = matches!(method, Method::POST | Method::PUT) && segs.last() != Some(&"_search") && segs != ["$import"];
    if needs_json && !is_json(&content_type(&headers)) {
        return Err(refused(415, "not-supported", "send application/fhir+json", "fhir"));
    }
    let if_match = if_match(&headers).map_err(|m| refused(400, "invalid", m, "fhir"))?;
    Ok(match (&method, segs.as_slice()) {
        (&Method::GET, ["metadata"]) => {
            json_response(StatusCode::OK, &capability_statement(&base, env!("CARGO_PKG_VERSION")), "capabilities")
        }
        (&Method::POST, []) => {
            let b = f.process_bundle(&who, &body, &base).await.map_err(ApiError::app("transaction"))?;
            json_response(StatusCode::OK, &b, "transaction")
        }
        (&Method::POST, ["$import"]) => {
            // NDJSON in the body, all or nothing (decision 0011)
            if !matches!(content_type(&headers).as_str(), "application/fhir+ndjson" | "application/ndjson" | "application/x-ndjson") {
                return Err(refused(415, "not-supported", "$import takes application/fhir+ndjson", "import"));
            }
            let n = f.import_ndjson(&who, &body).await.map_err(ApiError::app("import"))?;
            let outcome = operation_outcome(&[OutcomeIssue::information(format!("{n} resources imported"))]);
            json_response(StatusCode::OK, &outcome, "import")
        }
        (&Method::GET, ["$export"]) => kick_off(&state, &who, Level::System, &q, &query, &headers, &base).await?,
        (&Method::GET, ["Patient", "$export"]) => kick_off(&state, &who, Level::Patient, &q, &query, &headers, &base).await?,
        (&Method::GET, ["Group", id, "$export"]) => {
            kick_off(&state, &who, Level::Group((*id).to_string()), &q, &query, &headers, &base).await?
        }
        (&Method::GET, ["$export-status", id]) => export_status(&state, &who, id, &base).await?,
        (&Method::DELETE, ["$export-status", id]) => {
            state.exports.cancel(&who, id).await.map_err(ApiError::app("export"))?;
            let mut r = StatusCode::ACCEPTED.into_response();
            r.extensions_mut().insert(Interaction("export"));
            r
        }
        (&Method::GET, ["$export-file", id, n]) => {
            let n: usize = n.parse().map_err(|_| refused(404, "not-found", format!("export {id} has no file {n}"), "export"))?;
            let (_, bytes) = state.exports.file(&who, id, n).await.map_err(ApiError::app("export"))?;
            let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+ndjson")], bytes).into_response();
            r.extensions_mut().insert(Interaction("export"));
            r
        }
        (&Method::GET, []) => page(f.search(&who, None, &q, &base).await, "search-system")?,
        (&Method::GET, ["_history"]) => search(f.history(&who, None, None, &q, &base).await, "history-system")?,
        (&Method::GET, [t]) => page(f.search(&who, Some(t), &q, &base).await, "search-type")?,
        (&Method::POST, ["Appointment", op]) if op.starts_with('$') => {
            let params = parameters(&body).map_err(|m| refused(400, "invalid", m, "operation"))?;
            let portal = fascicolo_app::portal::Portal::new(f.clone());
            let out = fascicolo_app::booking::operation(&portal, &who, op, &params).await.map_err(ApiError::app("operation"))?;
            json_response(StatusCode::OK, &out, "operation")
        }
        (&Method::POST, [t, "_search"]) => {
            if content_type(&headers) != "application/x-www-form-urlencoded" {
                return Err(refused(415, "not-supported", "POST _search takes application/x-www-form-urlencoded", "search-type"));
            }
            let mut all = q.clone();
            all.extend(form_urlencoded::parse(&body).into_owned());
            page(f.search(&who, Some(t), &all, &base).await, "search-type")?
        }
        (&Method::POST, [t]) => {
            let ine = headers.get("if-none-exist").and_then(|h| h.to_str().ok()).map(String::from);
            written(f.create(&who, t, &body, ine.as_deref()).await, &base, &headers, "create")?
        }
        (&Method::PUT, [t]) => match &query {
            Some(qs) if !qs.is_empty() => written(f.conditional_update(&who, t, qs, &body).await, &base, &headers, "update")?,
            _ => return Err(refused(400, "invalid", "PUT needs an id (Type/id) or search criteria (Type?...)", "update")),
        },
        (&Method::GET, [t, "_history"]) => search(f.history(&who, Some(t), None, &q, &base).await, "history-type")?,
        (&Method::GET, [t, id]) => {
            let v = f.read(&who, t, id).await.map_err(ApiError::app("read"))?;
            let inm = headers.get(header::IF_NONE_MATCH).and_then(|h| h.to_str().ok());
            if inm.is_some_and(|x| x.trim_start_matches("W/").trim_matches('"') == v.version.to_string()) {
                let mut r = StatusCode::NOT_MODIFIED.into_response();
                r.extensions_mut().insert(Interaction("read"));
                return Ok(r);
            }
            versioned(StatusCode::OK, &v, &base, &HeaderMap::new(), "read", false)
        }
        (&Method::PUT, [t, id]) => written(f.update(&who, t, id, &body, if_match).await, &base, &headers, "update")?,
        (&Method::PATCH, [t, id]) => {
            if content_type(&headers) != "application/json-patch+json" {
                return Err(refused(415, "not-supported", "PATCH takes application/json-patch+json", "patch"));
            }
            written(f.patch(&who, t, id, &body, if_match).await, &base, &headers, "patch")?
        }
        (&Method::DELETE, [t, id]) => {
            f.delete(&who, t, id).await.map_err(ApiError::app("delete"))?;
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.extensions_mut().insert(Interaction("delete"));
            r
        }
        (&Method::POST, [t, id, op]) if op.starts_with('$') => {
            let params = parameters(&body).map_err(|m| refused(400, "invalid", m, "operation"))?;
            operation(f, &who, t, id, op, &params, &base).await?
        }
        (&Method::GET, ["Patient", id, "$consent"]) => {
            let given = f.consent_status(&who, id).await.map_err(ApiError::app("operation"))?;
            json_response(
                StatusCode::OK,
                &serde_json::json!({"resourceType": "Parameters", "parameter": [{"name": "inForce", "valueBoolean": given}]}),
                "operation",
            )
        }
        (&Method::GET, ["Patient", id, "$notifications"]) => {
            let off = f.notifications_off(&who, id).await.map_err(ApiError::app("operation"))?;
            let p: Vec<Value> = off.into_iter().map(|o| serde_json::json!({"name": "off", "valueCode": o})).collect();
            json_response(StatusCode::OK, &serde_json::json!({"resourceType": "Parameters", "parameter": p}), "operation")
        }
        (&Method::GET, ["Patient", id, "$everything"]) => page(f.everything(&who, id, &q, &base).await, "everything")?,
        (&Method::GET, [t, id, "_history"]) => search(f.history(&who, Some(t), Some(id), &q, &base).await, "history-instance")?,
        (&Method::GET, [t, id, "_history", vid]) => {
            let v = f.vread(&who, t, id, vid).await.map_err(ApiError::app("vread"))?;
            versioned(StatusCode::OK, &v, &base, &HeaderMap::new(), "vread", false)
        }
        _ => {
            return Err(refused(
                404,
                "not-supported",
                format!("{method} /fhir/r4/{rest} is not a FHIR interaction this server supports"),
                "fhir",
            ))
        }
    })
}

/// Bulk Data kick-off (`Prefer: respond-async`): 202 with the status URL in `Content-Location`.
async fn kick_off(
    state: &AppState,
    who: &Actor,
    level: Level,
    q: &[(String, String)],
    raw: &Option<String>,
    headers: &HeaderMap,
    base: &str,
) -> ApiResult {
    let prefer = headers.get("prefer").and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !prefer.split([',', ';']).any(|p| p.trim() == "respond-async") {
        return Err(refused(400, "invalid", "a bulk export is asynchronous: send Prefer: respond-async", "export"));
    }
    let path = match &level {
        Level::System => "$export".to_string(),
        Level::Patient => "Patient/$export".to_string(),
        Level::Group(id) => format!("Group/{id}/$export"),
    };
    let request = match raw.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => format!("{base}/{path}?{r}"),
        None => format!("{base}/{path}"),
    };
    let id = state.exports.kick_off(who, level, q, &request, base).await.map_err(ApiError::app("export"))?;
    let status_url = format!("{base}/$export-status/{id}");
    let body = operation_outcome(&[OutcomeIssue::information(format!("export started: poll {status_url}"))]);
    let mut r = json_response(StatusCode::ACCEPTED, &body, "export");
    if let Ok(v) = HeaderValue::from_str(&status_url) {
        r.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    Ok(r)
}

/// A status poll: 202 with `X-Progress` while running, the manifest when complete, the
/// failure as an OperationOutcome.
async fn export_status(state: &AppState, who: &Actor, id: &str, base: &str) -> ApiResult {
    let status = state.exports.status(who, id).await.map_err(ApiError::app("export"))?;
    Ok(match status {
        Status::InProgress { exported } => {
            let mut r = StatusCode::ACCEPTED.into_response();
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("{exported} resources exported")) {
                h.insert("x-progress", v);
            }
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            r.extensions_mut().insert(Interaction("export"));
            r
        }
        Status::Done(m) => {
            let output: Vec<Value> = m
                .files
                .iter()
                .enumerate()
                .map(
                    |(n, f)| serde_json::json!({"type": f.resource_type, "url": format!("{base}/$export-file/{id}/{n}"), "count": f.count}),
                )
                .collect();
            let body = serde_json::json!({
                "transactionTime": fascicolo_fhir::datetime::format_instant(m.transaction_time),
                "request": m.request,
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            });
            let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
            if let Ok(v) = HeaderValue::from_str(&http_date(m.expires)) {
                r.headers_mut().insert(header::EXPIRES, v);
            }
            r.extensions_mut().insert(Interaction("export"));
            r
        }
        Status::Failed(why) => outcome(500, &[OutcomeIssue::error("exception", why)], "export"),
    })
}

fn page(res: Result<fascicolo_app::fhir::Page, AppError>, interaction: &'static str) -> ApiResult {
    let p = res.map_err(ApiError::app(interaction))?;
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, FHIR_JSON)], p.into_string()).into_response();
    r.extensions_mut().insert(Interaction(interaction));
    Ok(r)
}

fn search(res: Result<Value, AppError>, interaction: &'static str) -> ApiResult {
    Ok(json_response(StatusCode::OK, &res.map_err(ApiError::app(interaction))?, interaction))
}

/// A `Parameters` body.
fn parameters(body: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["resourceType"] == "Parameters" => Ok(v),
        Ok(_) => Err("an operation takes a Parameters resource".into()),
        Err(e) => Err(format!("the body is not valid JSON: {e}")),
    }
}

/// The privacy operations: `$consent`, `$hide`, `$art6-release`, `$delegate`, `$revoke`,
/// `$break-glass`.
async fn operation(f: &fascicolo_app::FhirService, who: &Actor, t: &str, id: &str, op: &str, params: &Value, base: &str) -> ApiResult {
    use fascicolo_app::privacy_ops::{param_bool, param_str};
    let missing = |name: &str| refused(400, "required", format!("the operation needs the parameter '{name}'"), "operation");
    let res = match (t, op) {
        ("Patient", "$consent") => {
            let given = param_bool(params, "given").ok_or_else(|| missing("given (valueBoolean)"))?;
            f.record_consent(who, id, given, param_str(params, "channel").unwrap_or("api")).await
        }
        (_, "$hide") => {
            let code = param_str(params, "code").ok_or_else(|| missing("code (P99, P97, P98 or P00)"))?;
            f.hide(who, t, id, code).await
        }
        (_, "$art6-release") => {
            let released = param_bool(params, "released").ok_or_else(|| missing("released (valueBoolean)"))?;
            f.release_art6(who, t, id, released).await
        }
        ("Patient", "$delegate") => f.grant_delegation(who, id, params).await,
        ("RelatedPerson", "$revoke") => f.revoke_delegation(who, id).await,
        ("Patient", "$notifications") => {
            let off: Vec<String> = fascicolo_app::privacy_ops::param_strs(params, "off").into_iter().map(String::from).collect();
            f.set_notifications_off(who, id, &off).await
        }
        ("Patient", "$break-glass") => {
            let reason = param_str(params, "reason").ok_or_else(|| missing("reason"))?;
            let o = f.break_glass(who, id, reason).await.map_err(ApiError::app("operation"))?;
            let entries: Vec<Value> = o.summary.into_iter().map(|r| serde_json::json!({"resource": r})).collect();
            let mut bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection"});
            if !entries.is_empty() {
                bundle["entry"] = Value::Array(entries);
            }
            return Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"resourceType": "Parameters", "parameter": [
                    {"name": "until", "valueInstant": fascicolo_fhir::datetime::format_instant(o.until)},
                    {"name": "summary", "resource": bundle}]}),
                "operation",
            ));
        }
        _ => return Err(refused(404, "not-supported", format!("{t}/{{id}}/{op} is not an operation this server supports"), "operation")),
    };
    let v = res.map_err(ApiError::app("operation"))?;
    Ok(versioned(StatusCode::OK, &v, base, &HeaderMap::new(), "operation", false))
}
