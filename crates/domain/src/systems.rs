//! The identifier and code systems the platform writes and reads in FHIR resources: shared by
//! the gate (which reads them), the synthetic region and the demo (which write them).

/// Identifier system of the codice fiscale.
pub const CF_SYSTEM: &str = "http://hl7.it/sid/codiceFiscale";
/// HL7 v3 RoleCode codes that also mean parental responsibility.
pub const V3_ROLE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
/// `Consent.category` of consent to consultation.
pub const CONSENT_CATEGORY: &str = "urn:fascicolo:consent";
/// `Consent.policy.uri` prefix; the information-notice version follows.
pub const NOTICE_PREFIX: &str = "urn:fascicolo:notice:";
/// `Consent` extension: the channel the record was given through.
pub const CONSENT_CHANNEL_EXT: &str = "urn:fascicolo:consent-channel";
/// Code system of the professional roles in `PractitionerRole.code`.
pub const ROLE_SYSTEM: &str = "urn:fascicolo:role";
/// Extension on an address's `city`: the municipality's ISTAT code (what the national flows name
/// a municipality by).
pub const ISTAT_EXT: &str = "urn:fascicolo:istat-municipality";
/// Identifier system of the national hospital codes (HSP.11).
pub const HSP_SYSTEM: &str = "urn:oid:2.16.840.1.113883.2.9.4.1.2";
/// The ASL/ATS codes (Ministero della Salute), as an identifier system.
pub const ASL_SYSTEM: &str = "urn:oid:2.16.840.1.113883.2.9.4.1.1";
/// The standard extension that places an address on the map (latitude, longitude).
pub const GEOLOCATION_EXT: &str = "http://hl7.org/fhir/StructureDefinition/geolocation";
