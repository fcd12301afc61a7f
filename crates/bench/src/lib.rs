//! Benchmarks of the platform as clients see it: HTTP with real tokens per kind of actor
//! (`fascicolo bench`), document publication (`fascicolo bench-documents`) and the portal's
//! pages (`fascicolo bench-portal`), with in-process figures beside them where labelled.
#![forbid(unsafe_code)]

pub mod api;
pub mod documents;
pub mod portal;
