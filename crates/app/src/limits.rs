//! Limits on what one request may ask of the platform. Each is a client's error when exceeded:
//! the answer names the limit (400/413 with an OperationOutcome), never a 500.

use crate::gate::{Actor, Who};

/// Largest resource a citizen (or their app) may store: a Taccuino measurement or note is a few
/// KiB.
pub const CITIZEN_RESOURCE_BYTES: usize = 256 * 1024;
/// Largest resource carrying a file of the citizen's own (a Taccuino file, inline in base64).
pub const CITIZEN_FILE_RESOURCE_BYTES: usize = crate::portal::TACCUINO_MAX_BYTES / 3 * 4 + 64 * 1024;
/// Largest resource (or request body) a professional may store.
pub const PROFESSIONAL_RESOURCE_BYTES: usize = 8 * 1024 * 1024;
/// Largest single resource a system client may store (a transaction Bundle may be larger).
pub const SYSTEM_RESOURCE_BYTES: usize = 64 * 1024 * 1024;

/// Search: query parameters in one request.
pub const MAX_SEARCH_PARAMETERS: usize = 64;
/// Search: values one parameter may OR together (`code=a,b,c`).
pub const MAX_OR_VALUES: usize = 100;
/// Search: `_has` parameters in one request, and nesting of one `_has` chain.
pub const MAX_HAS: usize = 4;
/// Search: length of the whole query string.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Resources in one page of search results, in bytes of JSON (at least one resource): a page of
/// large resources (documents with their content) ends early, with a next link.
pub const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Free text a person types (a break-glass reason, a note): characters.
pub const MAX_FREE_TEXT_CHARS: usize = 2000;

/// The largest request body `actor` may send.
pub fn body_bytes(actor: &Actor) -> usize {
    match &actor.who {
        Who::Citizen { .. } => CITIZEN_FILE_RESOURCE_BYTES,
        Who::Professional { .. } => PROFESSIONAL_RESOURCE_BYTES,
        Who::Anonymous => 0,
        _ => 64 * 1024 * 1024,
    }
}

/// The largest resource of `resource_type` that `actor` may write.
pub fn resource_bytes(actor: &Actor, resource_type: &str) -> usize {
    match &actor.who {
        Who::Citizen { .. } if matches!(resource_type, "DocumentReference" | "Binary" | "Media") => CITIZEN_FILE_RESOURCE_BYTES,
        Who::Citizen { .. } => CITIZEN_RESOURCE_BYTES,
        Who::Professional { .. } => PROFESSIONAL_RESOURCE_BYTES,
        Who::Anonymous => 0,
        _ => SYSTEM_RESOURCE_BYTES,
    }
}
