//! The FHIR R4 layer: resources as JSON (the source of truth), the structure model and
//! validation, the search-parameter registry built from the official definitions, the FHIRPath
//! subset that extracts index values, the search-URL parser, and OperationOutcome helpers.
#![forbid(unsafe_code)]

pub mod datetime;
pub mod fhirpath;
pub mod model;
pub mod params;
pub mod search;
pub mod validate;

use serde_json::{json, Value};

pub const FHIR_VERSION: &str = "4.0.1";
pub const FHIR_JSON: &str = "application/fhir+json";

/// FHIR logical ids: 1 to 64 of `[A-Za-z0-9\-\.]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Severity of an OperationOutcome issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One issue of an OperationOutcome.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeIssue {
    pub severity: Severity,
    pub code: String,
    pub diagnostics: String,
    pub expression: Option<String>,
}

impl OutcomeIssue {
    pub fn error(code: &str, diagnostics: impl Into<String>) -> Self {
        Self { severity: Severity::Error, code: code.into(), diagnostics: diagnostics.into(), expression: None }
    }

    /// An `information` / `informational` issue: what a successful operation reports.
    pub fn information(diagnostics: impl Into<String>) -> Self {
        Self { severity: Severity::Information, code: "informational".into(), diagnostics: diagnostics.into(), expression: None }
    }
}

impl From<validate::Issue> for OutcomeIssue {
    fn from(i: validate::Issue) -> Self {
        Self { severity: Severity::Error, code: i.code.into(), diagnostics: i.message, expression: Some(i.location) }
    }
}

/// Build an OperationOutcome resource.
pub fn operation_outcome(issues: &[OutcomeIssue]) -> Value {
    let issue: Vec<Value> = issues
        .iter()
        .map(|i| {
            let mut v = json!({"severity": i.severity.as_str(), "code": i.code, "diagnostics": i.diagnostics});
            if let Some(e) = &i.expression {
                v["expression"] = json!([e]);
            }
            v
        })
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issue})
}
