//! What loads data into a store through the app layer: the demo's registry and personas with
//! their histories, the synthetic region (`fascicolo seed`), and FHIR Bundles from files
//! (`fascicolo import`, Synthea). Every clinical document goes through the producers' path.
#![forbid(unsafe_code)]

pub mod demo;
pub mod er_sim;
pub mod import;
pub mod seed;
