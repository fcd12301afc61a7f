//! The patient key: the partition of every patient-scoped row (ARCHITECTURE.md, scale path).

use uuid::Uuid;

/// Namespace for keys derived from non-UUID Patient ids (UUID v5).
const NAMESPACE: Uuid = Uuid::from_u128(0x6f1b_4c3e_9d2a_4b7e_8f00_fa5c_1c0a_0001);

/// The key that groups one patient's rows (their compartment). Resources outside every patient
/// compartment (Organization, Practitioner, ...) carry [`PatientKey::SHARED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PatientKey(Uuid);

impl PatientKey {
    /// Reference data shared by all patients.
    pub const SHARED: PatientKey = PatientKey(Uuid::nil());

    /// The key of `Patient/{id}`: the id itself when it is a UUID (server-assigned ids are v7),
    /// otherwise a UUID v5 of the id, so any reference to a patient yields its key without a lookup.
    pub fn for_patient_id(id: &str) -> Self {
        match Uuid::parse_str(id) {
            Ok(u) if id.len() == 36 => PatientKey(u),
            _ => PatientKey(Uuid::new_v5(&NAMESPACE, id.as_bytes())),
        }
    }

    pub fn from_uuid(u: Uuid) -> Self {
        PatientKey(u)
    }

    pub fn uuid(self) -> Uuid {
        self.0
    }

    pub fn is_shared(self) -> bool {
        self.0.is_nil()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic() {
        let u = "0190a6f0-8b7c-7d3e-9f00-123456789abc";
        assert_eq!(PatientKey::for_patient_id(u).uuid().to_string(), u);
        assert_eq!(PatientKey::for_patient_id("example"), PatientKey::for_patient_id("example"));
        assert_ne!(PatientKey::for_patient_id("a"), PatientKey::for_patient_id("b"));
        assert!(!PatientKey::for_patient_id("a").is_shared());
    }
}
