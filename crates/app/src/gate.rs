//! Who is asking. Every use case takes an [`Actor`]; the decisions about what it may see are
//! taken in [`crate::access`], the one gate shared by the FHIR API, the portal and exports.

use fascicolo_domain::CodiceFiscale;
use serde::{Deserialize, Serialize};

/// A professional's role, from the registry (`PractitionerRole.code`, system [`ROLE_SYSTEM`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProRole {
    /// Medico di medicina generale.
    Gp,
    /// Pediatra di libera scelta.
    Pediatrician,
    Specialist,
    Nurse,
    /// Booking-centre operator: administrative data only.
    CupOperator,
    /// ASST registry administrator: administrative data only.
    AsstAdmin,
}

/// Code system of [`ProRole`] codes in `PractitionerRole.code`.
pub use fascicolo_domain::systems::ROLE_SYSTEM;

impl ProRole {
    pub const ALL: [ProRole; 6] = [Self::Gp, Self::Pediatrician, Self::Specialist, Self::Nurse, Self::CupOperator, Self::AsstAdmin];
    pub fn code(self) -> &'static str {
        match self {
            Self::Gp => "gp",
            Self::Pediatrician => "pediatrician",
            Self::Specialist => "specialist",
            Self::Nurse => "nurse",
            Self::CupOperator => "cup-operator",
            Self::AsstAdmin => "asst-admin",
        }
    }
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
    /// Clinicians see clinical content (with consent and a care relation); operators never do.
    pub fn clinical(self) -> bool {
        !matches!(self, Self::CupOperator | Self::AsstAdmin)
    }
}

/// The person or system behind a request, as resolved at sign-in or token issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Who {
    /// No credentials.
    Anonymous,
    /// The platform itself on the console (`fascicolo import`, seeding, workers).
    System,
    /// A citizen, identified by codice fiscale; `patient` is their own Patient id when registered.
    Citizen { cf: CodiceFiscale, patient: Option<String> },
    /// A health professional or operator of the registry.
    Professional { practitioner: String, organization: Option<String>, role: ProRole },
    /// A registered system (SMART backend service). `platform` clients are trusted integrations
    /// with full access (audited); the others are document producers for their organisation.
    Client { client_id: String, organization: Option<String>, platform: bool },
}

/// What a scope lets a client do, SMART v2 style (`c r u d s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Op {
    pub fn letter(self) -> char {
        match self {
            Op::Create => 'c',
            Op::Read => 'r',
            Op::Update => 'u',
            Op::Delete => 'd',
            Op::Search => 's',
        }
    }
}

/// The privacy operations and the SMART scope each needs. A token is a client's word for what the
/// user let it do; an operation that changes privacy settings is a write, never something a read
/// scope allows. Portal sessions and the console carry no scopes and are not limited here.
pub const OPERATION_SCOPES: &[(&str, &str, Op, &str)] = &[
    // (operation, HTTP method, what it needs, on which resource type; "*" = the target's type)
    ("$consent", "POST", Op::Create, "Consent"),
    ("$consent", "GET", Op::Read, "Consent"),
    ("$hide", "POST", Op::Update, "*"),
    ("$art6-release", "POST", Op::Update, "*"),
    ("$delegate", "POST", Op::Create, "RelatedPerson"),
    ("$revoke", "POST", Op::Update, "RelatedPerson"),
    ("$notifications", "POST", Op::Update, "Patient"),
    ("$notifications", "GET", Op::Read, "Patient"),
    ("$break-glass", "POST", Op::Read, "Patient"),
];

/// One SMART scope: `patient/Observation.rs`, `user/*.cruds`, `system/*.*`, `patient/*.read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// `patient`, `user` or `system`.
    pub context: String,
    /// A resource type, or `*`.
    pub resource: String,
    /// Permitted operations as SMART v2 letters (`cruds`).
    pub perms: String,
}

impl Scope {
    /// Parse one clinical scope; other scopes (`openid`, `launch/patient`...) are not clinical
    /// and return `None`.
    pub fn parse(s: &str) -> Option<Scope> {
        let (context, rest) = s.split_once('/')?;
        if !matches!(context, "patient" | "user" | "system") {
            return None;
        }
        let (resource, perms) = rest.split_once('.')?;
        if resource != "*" && !fascicolo_fhir::model::model().is_concrete_resource(resource) {
            return None;
        }
        let perms = match perms {
            "*" => "cruds".to_string(),
            "read" => "rs".to_string(),
            "write" => "cud".to_string(),
            p if !p.is_empty() && p.chars().all(|c| "cruds".contains(c)) => {
                // v2 letters must be in order c r u d s; keep them as given
                p.to_string()
            }
            _ => return None,
        };
        Some(Scope { context: context.into(), resource: resource.into(), perms })
    }
    pub fn to_scope_string(&self) -> String {
        format!("{}/{}.{}", self.context, self.resource, self.perms)
    }
}

/// The actor of one request: who, what their token or session permits, and whose record they
/// are looking at by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub who: Who,
    /// SMART scopes of the token; `None` for a portal session or the console (every type).
    pub scopes: Option<Vec<Scope>>,
    /// The Patient id whose record a citizen is acting on (their own, a child's, a delegator's);
    /// the SMART launch context.
    pub acting_for: Option<String>,
}

impl Actor {
    pub fn new(who: Who) -> Self {
        let acting_for = match &who {
            Who::Citizen { patient, .. } => patient.clone(),
            _ => None,
        };
        Actor { who, scopes: None, acting_for }
    }
    /// The platform on the console.
    pub fn system() -> Self {
        Actor::new(Who::System)
    }
    pub fn anonymous() -> Self {
        Actor::new(Who::Anonymous)
    }
    /// Whether the token's scopes permit `op` on `resource_type`.
    pub fn scope_permits(&self, resource_type: &str, op: Op) -> bool {
        match &self.scopes {
            None => true,
            Some(list) => list.iter().any(|s| (s.resource == "*" || s.resource == resource_type) && s.perms.contains(op.letter())),
        }
    }
    /// Whether the token's scopes permit a privacy operation (`$hide`...) invoked with `method`
    /// on a resource of `target_type`; see [`OPERATION_SCOPES`]. An operation not in the table
    /// is refused.
    pub fn operation_permitted(&self, operation: &str, method: &str, target_type: &str) -> bool {
        OPERATION_SCOPES.iter().filter(|(o, m, _, _)| *o == operation && m.eq_ignore_ascii_case(method)).any(|(_, _, op, rt)| {
            let rt = if *rt == "*" { target_type } else { rt };
            self.scope_permits(rt, *op)
        })
    }
    /// Only `patient/` scopes: the token is bound to its launch patient.
    pub fn patient_scoped(&self) -> bool {
        self.scopes.as_ref().is_some_and(|l| !l.is_empty() && l.iter().all(|s| s.context == "patient"))
    }
    /// The `meta.tag` code of work produced by this actor (see `labels::PRODUCER`).
    pub fn producer_code(&self) -> Option<String> {
        match &self.who {
            Who::Citizen { patient: Some(p), .. } => Some(format!("Patient/{p}")),
            Who::Professional { practitioner, .. } => Some(format!("Practitioner/{practitioner}")),
            Who::Client { client_id, organization, .. } => {
                Some(organization.as_ref().map_or_else(|| format!("Client/{client_id}"), |o| format!("Organization/{o}")))
            }
            _ => None,
        }
    }
    /// Codes of work this actor counts as its own: a professional's, and their organisation's.
    pub fn own_codes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.producer_code().into_iter().collect();
        if let Who::Professional { organization: Some(o), role, .. } = &self.who {
            if role.clinical() {
                v.push(format!("Organization/{o}"));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_scopes() {
        let s = Scope::parse("patient/Observation.rs").unwrap_or_else(|| panic!("parses"));
        assert_eq!((s.context.as_str(), s.resource.as_str(), s.perms.as_str()), ("patient", "Observation", "rs"));
        assert_eq!(Scope::parse("user/*.read").map(|s| s.perms), Some("rs".into()));
        assert_eq!(Scope::parse("system/*.*").map(|s| s.perms), Some("cruds".into()));
        assert_eq!(Scope::parse("openid"), None);
        assert_eq!(Scope::parse("patient/NotAType.rs"), None);
        assert_eq!(Scope::parse("patient/*.xyz"), None);
        let mut a = Actor::new(Who::Citizen {
            cf: CodiceFiscale::parse("RSSMRA80A01H501U").unwrap_or_else(|e| panic!("{e}")),
            patient: Some("p1".into()),
        });
        a.scopes = Some(vec![Scope::parse("patient/Observation.rs").unwrap_or_else(|| panic!("parses"))]);
        assert!(a.scope_permits("Observation", Op::Read));
        assert!(!a.scope_permits("Observation", Op::Create));
        assert!(!a.scope_permits("Condition", Op::Read));
        assert!(a.patient_scoped());
        assert_eq!(a.producer_code().as_deref(), Some("Patient/p1"));
    }
}
