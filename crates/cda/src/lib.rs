//! Italian CDA2 documents (FSE 2.0): safe parsing, validation with the XSD and the national
//! schematrons, terminology checks, mapping to FHIR R4 and an HTML rendering.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod schematron;
pub mod validate;
pub mod xsd;

pub use validate::{Problem, Report, Severity, Source, Validator};
