//! The use cases: the only place that decides access (see [`gate`]) and, from issue 3 on,
//! writes audit. Handlers call these; nothing else touches the store.
#![forbid(unsafe_code)]

pub mod access;
mod access_log;
pub mod auth;

pub mod booking;
pub mod bulk;
pub mod bundle;
pub mod capability;
pub mod celiac;
pub mod clinician;
pub mod doctor_choice;
pub mod er;
pub mod error;
pub mod exemptions;
pub mod fhir;
pub mod fhir_document;
pub mod gate;
pub mod health;
pub mod ingest;
pub mod limits;
pub mod ndjson;
pub mod notify;
pub mod operations;
pub mod pdf_reader;
pub mod portal;
pub mod prepare;
pub mod privacy_ops;
pub mod signin;
mod stripes;

pub use access::Policy;
pub use error::{AppError, AppResult};
pub use fhir::{FhirService, Versioned, WriteOutcome};
pub use gate::{Actor, Who};

use fascicolo_fhir::OutcomeIssue;

/// The HTTP status and OperationOutcome issues of an error (shared by the web layer and by
/// batch responses).
pub fn error_status(e: &AppError) -> (u16, Vec<OutcomeIssue>) {
    let one = |code: &str, msg: String| vec![OutcomeIssue::error(code, msg)];
    match e {
        AppError::NotFound(m) => (404, one("not-found", m.clone())),
        AppError::Gone(m) => (410, one("deleted", m.clone())),
        AppError::BadRequest(m) => (400, one("invalid", m.clone())),
        AppError::Invalid(issues) => (422, issues.clone()),
        AppError::Conflict(m) => (409, one("conflict", m.clone())),
        AppError::PreconditionFailed(m) => (412, one("conflict", m.clone())),
        AppError::Forbidden(m) => (403, one("forbidden", m.clone())),
        AppError::Unauthorized(m) => (401, one("login", m.clone())),
        AppError::NotSupported(m) => (501, one("not-supported", m.clone())),
        AppError::TooLarge(m) => (413, one("too-costly", m.clone())),
        AppError::TooMany(m) => (429, one("throttled", m.clone())),
        AppError::Store(fascicolo_store::StoreError::Unavailable(_)) => {
            (503, one("transient", "the database is not answering; nothing was changed; retry in a few seconds".into()))
        }
        AppError::Store(fascicolo_store::StoreError::Full(_)) => {
            (507, one("transient", "the server's storage is full; nothing was stored; retry later".into()))
        }
        AppError::Store(fascicolo_store::StoreError::Timeout(_)) => (
            503,
            one("timeout", "the request took longer than the server allows; narrow it (fewer parameters or results) and retry".into()),
        ),
        AppError::Store(_) | AppError::Internal(_) => (500, one("exception", "the server could not complete the request".into())),
    }
}
