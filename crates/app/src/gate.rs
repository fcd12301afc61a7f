//! Who is asking, and the one place that decides whether they may. Until sign-in lands
//! (issue 3) the only actor is the open demo actor; every use case already takes an `Actor`
//! and calls [`authorize`], so the real rules slot in here without touching handlers.

use crate::error::{AppError, AppResult};
use fascicolo_domain::PatientKey;

/// The person or system behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Demo mode without sign-in: full access, for local trials only.
    DemoOpen,
    /// The platform itself (CLI import, seeding).
    System,
    /// No credentials.
    Anonymous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Search,
    History,
    Write,
}

/// Decide one access. `patient` is the compartment touched, when known.
pub fn authorize(actor: &Actor, _action: Action, _resource_type: &str, _patient: Option<PatientKey>) -> AppResult<()> {
    match actor {
        Actor::DemoOpen | Actor::System => Ok(()),
        Actor::Anonymous => Err(AppError::Forbidden("sign-in required".into())),
    }
}
