//! `/ingest/v1`: the document publication API (modelled on the national FSE 2.0 gateway), and
//! `/documents/{id}/…`: a published document's original, HTML rendering and PDF.
//!
//! Bodies: CDA2 XML (`application/xml`) or a PDF with the CDA2 embedded (`application/pdf`),
//! sent raw with default metadata, or as `multipart/form-data` with the file (part `file`) and
//! a JSON metadata part (`requestBody`, as the gateway names it, or `metadata`).

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use fascicolo_app::ingest::{IngestError, Metadata, Outcome, Submission};
use fascicolo_app::Actor;
use http_body_util::BodyExt;
use serde_json::json;

use crate::html::{page, Lang};
use crate::AppState;

fn error(e: IngestError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({"error": e.code, "message": e.message, "problems": e.problems});
    if let Some(w) = e.workflow {
        body["workflowInstanceId"] = json!(w);
    }
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        if let Ok(v) = header::HeaderValue::from_str("Bearer realm=\"fascicolo\"") {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

fn simple(status: u16, code: &'static str, message: impl Into<String>) -> Response {
    error(IngestError::new(status, code, message))
}

async fn actor(state: &AppState, headers: &HeaderMap) -> Result<Actor, Response> {
    match crate::fhir_api::authenticate(state, headers).await {
        Ok(a) => Ok(a),
        Err(_) => Err(simple(401, "unauthorized", "the access token is not valid or has expired")),
    }
}

/// Reads a body up to `limit` bytes; a larger one is refused before it is all received.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, Response> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(simple(413, "too-large", format!("the upload is larger than the limit of {} MiB", limit / (1024 * 1024))))
        }
        Err(_) => Err(simple(400, "bad-request", "the request body could not be read")),
    }
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The submission in a request: raw body with default metadata, or multipart file + metadata.
async fn submission(state: &AppState, req: Request) -> Result<Submission, Response> {
    let limit = state.ingest_max_bytes;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()) {
        if len > limit + 64 * 1024 {
            return Err(simple(413, "too-large", format!("the upload is larger than the limit of {} MiB", limit / (1024 * 1024))));
        }
    }
    let declared = media_type(req.headers());
    if declared == "multipart/form-data" {
        let mut multipart = Multipart::from_request(req, state)
            .await
            .map_err(|e| simple(400, "bad-request", format!("the multipart body is not valid: {e}")))?;
        let mut file: Option<(Vec<u8>, String)> = None;
        let mut metadata = Metadata::default();
        let mut total = 0usize;
        while let Some(field) =
            multipart.next_field().await.map_err(|e| simple(400, "bad-request", format!("the multipart body is not valid: {e}")))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let ct = field.content_type().map(|c| c.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()).unwrap_or_default();
            let mut data = Vec::new();
            let mut field = field;
            while let Some(chunk) =
                field.chunk().await.map_err(|e| simple(400, "bad-request", format!("the multipart body could not be read: {e}")))?
            {
                total += chunk.len();
                if total > limit {
                    return Err(simple(413, "too-large", format!("the upload is larger than the limit of {} MiB", limit / (1024 * 1024))));
                }
                data.extend_from_slice(&chunk);
            }
            match name.as_str() {
                "file" => file = Some((data, ct)),
                "requestBody" | "metadata" => {
                    metadata = serde_json::from_slice(&data)
                        .map_err(|e| simple(400, "bad-request", format!("the metadata part is not valid JSON metadata: {e}")))?;
                }
                other => {
                    return Err(simple(
                        400,
                        "bad-request",
                        format!("unexpected multipart part '{other}' (expected 'file' and 'requestBody')"),
                    ))
                }
            }
        }
        let (bytes, content_type) = file.ok_or_else(|| simple(400, "bad-request", "the multipart body has no 'file' part"))?;
        let content_type = if content_type == "application/octet-stream" { String::new() } else { content_type };
        return Ok(Submission { bytes, content_type, metadata });
    }
    let bytes = read_limited(req.into_body(), limit).await?;
    if bytes.is_empty() {
        return Err(simple(
            400,
            "bad-request",
            "the request body is empty: send a CDA2 document (application/xml) or a PDF with the CDA2 embedded (application/pdf)",
        ));
    }
    Ok(Submission { bytes, content_type: declared, metadata: Metadata::default() })
}

/// An upload's turn: uploads held in memory at once are bounded (each takes up to about three
/// times its size while it is read, decoded and parsed), so a flood of large uploads waits its
/// turn instead of growing the server; one that waits too long is told to retry.
type UploadSlot = tokio::sync::OwnedSemaphorePermit;

async fn upload_slot(state: &AppState) -> Result<UploadSlot, Response> {
    match tokio::time::timeout(state.upload_wait, std::sync::Arc::clone(&state.uploads).acquire_owned()).await {
        Ok(Ok(slot)) => Ok(slot),
        _ => {
            let mut r = simple(503, "busy", "too many uploads are being processed; retry in a few seconds");
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            Err(r)
        }
    }
}

/// The caller and the submission of a request, with the upload's turn (held until it is answered).
async fn authed_submission(state: &AppState, req: Request) -> Result<(Actor, Submission, UploadSlot), Response> {
    let actor = actor(state, req.headers()).await?;
    // nothing of an upload is read before the app layer says its sender is a producer
    fascicolo_app::ingest::Ingest::admits(&actor).map_err(error)?;
    let slot = upload_slot(state).await?;
    Ok((actor, submission(state, req).await?, slot))
}

fn outcome(status: StatusCode, o: &Outcome) -> Response {
    let mut resp = (status, axum::Json(o)).into_response();
    if let Some(d) = &o.document_reference {
        if let Ok(v) = header::HeaderValue::from_str(&format!("/fhir/r4/{d}")) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
    }
    resp
}

/// Ingestion's refusals: an [`IngestError`] as its JSON body, or an answer made before the
/// service was asked (no credentials, a body over the limit). Handlers return [`Reply`] and use `?`.
pub struct Refusal(Response);

impl From<IngestError> for Refusal {
    fn from(e: IngestError) -> Self {
        Refusal(error(e))
    }
}

impl From<Response> for Refusal {
    fn from(r: Response) -> Self {
        Refusal(r)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        self.0
    }
}

pub type Reply = Result<Response, Refusal>;

/// `POST /ingest/v1/documents/validation`: 200 with the problems (warnings only), or 422.
pub async fn validation(State(state): State<AppState>, req: Request) -> Reply {
    let (actor, sub, _slot) = authed_submission(&state, req).await?;
    Ok(match state.ingest.validate(&actor, sub).await? {
        o if o.status == "invalid" => outcome(StatusCode::UNPROCESSABLE_ENTITY, &o),
        o => outcome(StatusCode::OK, &o),
    })
}

/// `POST /ingest/v1/documents`: 201 with the ids; 200 when the same document was already published.
pub async fn publish(State(state): State<AppState>, req: Request) -> Reply {
    let (actor, sub, _slot) = authed_submission(&state, req).await?;
    Ok(match state.ingest.publish(&actor, sub).await? {
        o if o.status == "already-published" => outcome(StatusCode::OK, &o),
        o => outcome(StatusCode::CREATED, &o),
    })
}

/// `PUT /ingest/v1/documents/{id}`: publish a new version replacing document `id`.
pub async fn replace(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Reply {
    let (actor, sub, _slot) = authed_submission(&state, req).await?;
    let o = state.ingest.replace(&actor, &id, sub).await?;
    Ok(outcome(StatusCode::CREATED, &o))
}

/// `DELETE /ingest/v1/documents/{id}`: logical deletion, audited.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Reply {
    let actor = actor(&state, &headers).await?;
    let o = state.ingest.delete(&actor, &id).await?;
    Ok(outcome(StatusCode::OK, &o))
}

/// `PUT /ingest/v1/documents/{id}/metadata`: hiding rules and XDS context.
pub async fn metadata(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Reply {
    let actor = actor(&state, req.headers()).await?;
    let bytes = read_limited(req.into_body(), 64 * 1024).await?;
    let meta: Metadata = serde_json::from_slice(&bytes)
        .map_err(|e| IngestError::new(400, "bad-request", format!("the body is not valid JSON metadata: {e}")))?;
    let o = state.ingest.update_metadata(&actor, &id, meta).await?;
    Ok(outcome(StatusCode::OK, &o))
}

/// `GET /ingest/v1/status/{workflowInstanceId}`.
pub async fn status(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Reply {
    let actor = actor(&state, &headers).await?;
    let v = state.ingest.status(&actor, &id).await?;
    Ok(axum::Json(v).into_response())
}

/// Who is asking for a document page: a bearer token, or else the portal session.
async fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Actor, Response> {
    if headers.contains_key(header::AUTHORIZATION) {
        return actor(state, headers).await;
    }
    match crate::auth_web::session_checked(state, headers).await {
        Ok(Some((_, s))) => Ok(s.actor),
        Ok(None) => Err(simple(401, "unauthorized", "sign in, or send an access token")),
        Err(e) => Err(error(IngestError::from(e))),
    }
}

fn attachment_headers(ct: &str, name: &str) -> [(header::HeaderName, String); 3] {
    [
        (header::CONTENT_TYPE, ct.to_string()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
    ]
}

/// `GET /documents/{id}/original`: the bytes as the producer sent them.
pub async fn original(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Reply {
    let actor = viewer(&state, &headers).await?;
    let (ct, bytes) = state.ingest.original(&actor, &id).await?;
    let ext = if ct == "application/pdf" { "pdf" } else { "xml" };
    Ok((attachment_headers(&ct, &format!("documento-{id}.{ext}")), bytes).into_response())
}

/// `GET /documents/{id}/pdf`: the original PDF, or one generated from the rendering.
pub async fn pdf(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Reply {
    let actor = viewer(&state, &headers).await?;
    let (bytes, name) = state.ingest.pdf(&actor, &id).await?;
    Ok((attachment_headers("application/pdf", &name), bytes).into_response())
}

/// `GET /documents/{id}`: the HTML rendering in the site's page.
pub async fn rendering(State(state): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Reply {
    let lang = Lang::from_query(raw.as_deref());
    let actor = viewer(&state, &headers).await?;
    let fragment = state.ingest.rendering(&actor, &id).await?;
    // the rendering escapes everything the document says (crates/cda/src/render.rs)
    let body = maud::html! {
        (maud::PreEscaped(fragment))
        p.downloads {
            a href={ "/documents/" (id) "/pdf" } { (lang.t("Scarica il PDF")) }
            " · "
            a href={ "/documents/" (id) "/original" } { (lang.t("Scarica l'originale")) }
        }
    };
    let title = lang.t("Documento");
    let banner = state.auth.demo.then_some(lang.t("Ambiente dimostrativo: dati sintetici"));
    Ok(Html(page(lang, title, banner, body)).into_response())
}
