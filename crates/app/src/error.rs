//! The app layer's error type. The web layer maps each variant to an HTTP status and an
//! OperationOutcome; messages never carry personal data.

use fascicolo_fhir::OutcomeIssue;
use fascicolo_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    BadRequest(String),
    /// Validation failed: every problem, with its location.
    #[error("invalid resource")]
    Invalid(Vec<OutcomeIssue>),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Forbidden(String),
    /// No or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotSupported(String),
    /// A resource or request over a size limit for the actor (the message names the limit).
    #[error("{0}")]
    TooLarge(String),
    /// The actor already has such a request running (e.g. a bulk export): 429.
    #[error("{0}")]
    TooMany(String),
    #[error("storage failure")]
    Store(#[source] StoreError),
    /// A fault of the server's own (never the client's): logged, answered 500 without details.
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// The storage had no room for a write (a full disk, a quota).
    pub fn is_storage_full(&self) -> bool {
        matches!(self, AppError::Store(StoreError::Full(_)))
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { resource_type, id } => {
                AppError::Conflict(format!("{resource_type}/{id} was changed or created concurrently; read it again and retry"))
            }
            StoreError::BadCursor => AppError::BadRequest("the paging cursor is not valid".into()),
            other => AppError::Store(other),
        }
    }
}

impl From<fascicolo_fhir::search::SearchError> for AppError {
    fn from(e: fascicolo_fhir::search::SearchError) -> Self {
        AppError::BadRequest(e.0)
    }
}

pub type AppResult<T> = Result<T, AppError>;
