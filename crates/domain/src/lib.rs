//! Pure domain types and rules, no I/O. Newtypes here can only be built by parsing.
#![forbid(unsafe_code)]

pub mod booking;
pub mod calendar;
pub mod celiac;
pub mod codice_fiscale;
pub mod er;
pub mod exemption;
pub mod pagopa;
pub mod patient_key;
pub mod privacy;
pub mod rome;
pub mod systems;

pub use codice_fiscale::CodiceFiscale;
pub use patient_key::PatientKey;
