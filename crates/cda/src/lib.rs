//! Italian CDA2 documents (FSE 2.0): safe parsing, validation with the XSD and the national
//! schematrons, terminology checks, mapping to FHIR R4, an HTML rendering and PDF handling.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod fastpath;
pub mod mapping;
pub mod pdf;
pub mod render;
pub mod schematron;
pub mod validate;
pub mod xsd;

pub use validate::{Problem, Report, Severity, Source, Validator};
