//! Who may see a document in the Fascicolo: the rules of the FSE 2.0 decree (DM 7 settembre
//! 2023) as pure functions. The app layer's gate gathers the facts (relations, consent, hiding
//! flags) and asks these functions; nothing here does I/O.
//!
//! Sources: `shared/reference/DOMAIN.md` (Privacy): consent to consultation (given once,
//! revocable, asked again for a new information-notice version), oscuramento (art. 9: P99 hidden
//! from clinicians, P97 from the parent, P98 from the patient, P00 undo), art. 6 data (visible
//! only to the patient unless the patient explicitly consents), minors (art. 11), emergency access
//! (art. 20: never hidden documents, only while needed).

use time::{Date, OffsetDateTime};

/// Codings the platform uses to carry privacy facts on every resource (`meta.security` and
/// `meta.tag`). The gate reads them; only the app layer writes them.
pub mod labels {
    /// `meta.security`: oscuramento codes P99, P97, P98 (P00 removes them).
    pub const HIDING: &str = "urn:fascicolo:oscuramento";
    /// `meta.security`: the art. 6 category (`hiv`, `abortion`, `sexual-violence`, `addiction`,
    /// `anonymous-birth`, `family-planning`).
    pub const ART6: &str = "urn:fascicolo:art6";
    /// `meta.tag` `released`: the patient explicitly made an art. 6 item visible.
    pub const ART6_CONSENT: &str = "urn:fascicolo:art6-consent";
    /// `meta.security`: who may not see the item, derived from the facts above on every write
    /// (`not-patient`, `not-parent`, `not-delegate`, `not-clinician`), so searches filter in SQL.
    pub const VISIBILITY: &str = "urn:fascicolo:visibility";
    /// `meta.tag`: who wrote the item through the platform (`Practitioner/x`, `Organization/y`,
    /// `Patient/z`, `Client/c`); professionals always see their own work.
    pub const PRODUCER: &str = "urn:fascicolo:producer";
    /// `meta.tag`: the DocumentReference a derived resource belongs to (hidden with it).
    pub const DOCUMENT: &str = "urn:fascicolo:document";
    pub const NOT_PATIENT: &str = "not-patient";
    pub const NOT_PARENT: &str = "not-parent";
    pub const NOT_DELEGATE: &str = "not-delegate";
    pub const NOT_CLINICIAN: &str = "not-clinician";
}

/// An oscuramento instruction carried by a document's metadata or given later by the citizen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HidingCode {
    /// P99: hidden from clinicians.
    FromClinicians,
    /// P97: hidden from whoever holds parental responsibility.
    FromParents,
    /// P98: hidden from the patient (e.g. until a clinician has explained a result).
    FromPatient,
    /// P00: every hiding undone.
    Undo,
}

impl HidingCode {
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "P99" => Some(Self::FromClinicians),
            "P97" => Some(Self::FromParents),
            "P98" => Some(Self::FromPatient),
            "P00" => Some(Self::Undo),
            _ => None,
        }
    }
    pub fn code(self) -> &'static str {
        match self {
            Self::FromClinicians => "P99",
            Self::FromParents => "P97",
            Self::FromPatient => "P98",
            Self::Undo => "P00",
        }
    }
}

/// The hiding state of one document (the result of applying its codes in order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hiding {
    pub from_clinicians: bool,
    pub from_parents: bool,
    pub from_patient: bool,
}

impl Hiding {
    pub fn apply(&mut self, code: HidingCode) {
        match code {
            HidingCode::FromClinicians => self.from_clinicians = true,
            HidingCode::FromParents => self.from_parents = true,
            HidingCode::FromPatient => self.from_patient = true,
            HidingCode::Undo => *self = Hiding::default(),
        }
    }
    pub fn from_codes<'a>(codes: impl IntoIterator<Item = &'a str>) -> Self {
        let mut h = Hiding::default();
        for c in codes.into_iter().filter_map(HidingCode::parse) {
            h.apply(c);
        }
        h
    }
}

/// Data protected by art. 6: visible only to the patient unless the patient consents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Art6Category {
    Hiv,
    Abortion,
    SexualViolence,
    Addiction,
    AnonymousBirth,
    FamilyPlanning,
}

impl Art6Category {
    pub const ALL: [Art6Category; 6] =
        [Self::Hiv, Self::Abortion, Self::SexualViolence, Self::Addiction, Self::AnonymousBirth, Self::FamilyPlanning];
    pub fn code(self) -> &'static str {
        match self {
            Self::Hiv => "hiv",
            Self::Abortion => "abortion",
            Self::SexualViolence => "sexual-violence",
            Self::Addiction => "addiction",
            Self::AnonymousBirth => "anonymous-birth",
            Self::FamilyPlanning => "family-planning",
        }
    }
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// Which kinds of viewer an item is closed to, whatever their relation to the patient: the
/// parts of [`may_see`] that depend on the item alone. Stored as `labels::VISIBILITY` codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Closed {
    pub patient: bool,
    pub parent: bool,
    pub delegate: bool,
    pub clinician: bool,
}

impl Closed {
    pub fn of(doc: DocumentFacts) -> Self {
        let denied = |v: Viewer| matches!(may_see(v, doc), Decision::Deny(_));
        Closed {
            patient: denied(Viewer::Patient),
            parent: denied(Viewer::Parent { child_is_minor: true }),
            delegate: denied(Viewer::Delegate { active: true, covers_document: true }),
            clinician: denied(Viewer::Clinician { consent: true, care_relation: true, author: false, emergency: false }),
        }
    }
    /// The `labels::VISIBILITY` codes of this state.
    pub fn codes(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (closed, code) in [
            (self.patient, labels::NOT_PATIENT),
            (self.parent, labels::NOT_PARENT),
            (self.delegate, labels::NOT_DELEGATE),
            (self.clinician, labels::NOT_CLINICIAN),
        ] {
            if closed {
                v.push(code);
            }
        }
        v
    }
}

/// What the gate knows about one document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DocumentFacts {
    pub hiding: Hiding,
    pub art6: Option<Art6Category>,
    /// The patient explicitly made this art. 6 document visible.
    pub art6_released: bool,
}

/// The latest consent-to-consultation record of a citizen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentRecord {
    pub notice_version: u32,
    pub given: bool,
}

/// Consent is in force only when the latest record gives it for the current notice version.
pub fn consent_in_force(latest: Option<ConsentRecord>, current_notice_version: u32) -> bool {
    latest.is_some_and(|c| c.given && c.notice_version == current_notice_version)
}

/// Completed years between a birth date and a day.
pub fn age_on(birth: Date, on: Date) -> i32 {
    let mut years = on.year() - birth.year();
    if (on.month() as u8, on.day()) < (birth.month() as u8, birth.day()) {
        years -= 1;
    }
    years
}

/// Parental responsibility gives access only while the child is a minor.
pub fn is_minor(birth: Date, on: Date) -> bool {
    age_on(birth, on) < 18
}

/// A delegation from an adult citizen to another adult.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    pub valid_from: OffsetDateTime,
    pub valid_until: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    /// The kinds of record the delegate may see, as FHIR resource types (`DocumentReference`,
    /// `Immunization`, `MedicationRequest`...); empty = all.
    pub scope: Vec<String>,
}

impl Delegation {
    pub fn active(&self, now: OffsetDateTime) -> bool {
        self.valid_from <= now && now < self.valid_until && self.revoked_at.is_none_or(|r| now < r)
    }
    pub fn covers(&self, resource_type: &str) -> bool {
        self.scope.is_empty() || self.scope.iter().any(|c| c == resource_type)
    }
}

/// Emergency access opened by a clinician, with its stated reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlass {
    pub started_at: OffsetDateTime,
    pub until: OffsetDateTime,
    pub reason: String,
}

impl BreakGlass {
    pub fn active(&self, now: OffsetDateTime) -> bool {
        self.started_at <= now && now < self.until && !self.reason.trim().is_empty()
    }
}

/// Who is looking, in relation to the patient, with the facts already evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Patient,
    /// Holds parental responsibility; `child_is_minor` evaluated today.
    Parent {
        child_is_minor: bool,
    },
    /// An adult delegate; `active` and `covers_document` evaluated for this document.
    Delegate {
        active: bool,
        covers_document: bool,
    },
    Clinician {
        /// Consent to consultation in force.
        consent: bool,
        /// GP/pediatrician of the patient, or a professional with an open encounter,
        /// appointment or care team.
        care_relation: bool,
        /// The clinician (or their organisation) produced this document.
        author: bool,
        /// An active break-glass for this patient.
        emergency: bool,
    },
    /// Administrative operators (CUP, ASST): no clinical content.
    Operator,
}

/// Why access was refused. Internal only: a clinician is told nothing that reveals hiding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deny {
    Hidden,
    Art6,
    NoConsent,
    NoCareRelation,
    NotMinor,
    DelegationInactive,
    OutOfDelegationScope,
    NotClinical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allowed under break-glass: the access log flags it and the patient is notified.
    AllowEmergency,
    Deny(Deny),
}

/// May `viewer` see a document with these facts?
pub fn may_see(viewer: Viewer, doc: DocumentFacts) -> Decision {
    use Decision::{Allow, AllowEmergency, Deny as No};
    let art6_closed = doc.art6.is_some() && !doc.art6_released;
    match viewer {
        Viewer::Patient => {
            if doc.hiding.from_patient {
                No(Deny::Hidden)
            } else {
                Allow
            }
        }
        Viewer::Parent { child_is_minor } => {
            if !child_is_minor {
                No(Deny::NotMinor)
            } else if doc.hiding.from_parents || doc.hiding.from_patient {
                No(Deny::Hidden)
            } else if art6_closed {
                No(Deny::Art6)
            } else {
                Allow
            }
        }
        Viewer::Delegate { active, covers_document } => {
            if !active {
                No(Deny::DelegationInactive)
            } else if !covers_document {
                No(Deny::OutOfDelegationScope)
            } else if doc.hiding.from_patient {
                No(Deny::Hidden)
            } else if art6_closed {
                No(Deny::Art6)
            } else {
                Allow
            }
        }
        Viewer::Clinician { consent, care_relation, author, emergency } => {
            if author {
                Allow
            } else if doc.hiding.from_clinicians {
                No(Deny::Hidden)
            } else if art6_closed {
                No(Deny::Art6)
            } else if consent && care_relation {
                Allow
            } else if emergency {
                AllowEmergency
            } else if !consent {
                No(Deny::NoConsent)
            } else {
                No(Deny::NoCareRelation)
            }
        }
        Viewer::Operator => No(Deny::NotClinical),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn doc(codes: &[&str], art6: bool, released: bool) -> DocumentFacts {
        DocumentFacts {
            hiding: Hiding::from_codes(codes.iter().copied()),
            art6: art6.then_some(Art6Category::Hiv),
            art6_released: released,
        }
    }

    const CLIN: Viewer = Viewer::Clinician { consent: true, care_relation: true, author: false, emergency: false };
    const CLIN_NO_CONSENT: Viewer = Viewer::Clinician { consent: false, care_relation: true, author: false, emergency: false };
    const CLIN_NO_RELATION: Viewer = Viewer::Clinician { consent: true, care_relation: false, author: false, emergency: false };
    const CLIN_AUTHOR: Viewer = Viewer::Clinician { consent: false, care_relation: false, author: true, emergency: false };
    const CLIN_EMERGENCY: Viewer = Viewer::Clinician { consent: false, care_relation: false, author: false, emergency: true };
    const PARENT: Viewer = Viewer::Parent { child_is_minor: true };
    const PARENT_ADULT_CHILD: Viewer = Viewer::Parent { child_is_minor: false };
    const DELEGATE: Viewer = Viewer::Delegate { active: true, covers_document: true };
    const DELEGATE_EXPIRED: Viewer = Viewer::Delegate { active: false, covers_document: true };
    const DELEGATE_OUT: Viewer = Viewer::Delegate { active: true, covers_document: false };

    /// The authorisation table: every viewer against every document state.
    #[test]
    fn visibility_matrix() {
        use Decision::{Allow, AllowEmergency};
        let no = Decision::Deny;
        let plain = doc(&[], false, false);
        let p99 = doc(&["P99"], false, false);
        let p97 = doc(&["P97"], false, false);
        let p98 = doc(&["P98"], false, false);
        let undone = doc(&["P99", "P98", "P00"], false, false);
        let art6 = doc(&[], true, false);
        let art6_released = doc(&[], true, true);
        #[rustfmt::skip]
        let table: &[(Viewer, DocumentFacts, Decision)] = &[
            (Viewer::Patient, plain, Allow), (Viewer::Patient, p99, Allow), (Viewer::Patient, p97, Allow),
            (Viewer::Patient, p98, no(Deny::Hidden)), (Viewer::Patient, art6, Allow), (Viewer::Patient, undone, Allow),
            (PARENT, plain, Allow), (PARENT, p99, Allow), (PARENT, p97, no(Deny::Hidden)), (PARENT, p98, no(Deny::Hidden)),
            (PARENT, art6, no(Deny::Art6)), (PARENT, art6_released, Allow), (PARENT_ADULT_CHILD, plain, no(Deny::NotMinor)),
            (DELEGATE, plain, Allow), (DELEGATE, p97, Allow), (DELEGATE, p98, no(Deny::Hidden)), (DELEGATE, art6, no(Deny::Art6)),
            (DELEGATE_EXPIRED, plain, no(Deny::DelegationInactive)), (DELEGATE_OUT, plain, no(Deny::OutOfDelegationScope)),
            (CLIN, plain, Allow), (CLIN, p97, Allow), (CLIN, p98, Allow), (CLIN, p99, no(Deny::Hidden)), (CLIN, undone, Allow),
            (CLIN, art6, no(Deny::Art6)), (CLIN, art6_released, Allow),
            (CLIN_NO_CONSENT, plain, no(Deny::NoConsent)), (CLIN_NO_RELATION, plain, no(Deny::NoCareRelation)),
            (CLIN_AUTHOR, plain, Allow), (CLIN_AUTHOR, p99, Allow),
            (CLIN_EMERGENCY, plain, AllowEmergency), (CLIN_EMERGENCY, p99, no(Deny::Hidden)), (CLIN_EMERGENCY, art6, no(Deny::Art6)),
            (Viewer::Operator, plain, no(Deny::NotClinical)),
        ];
        for (viewer, facts, expected) in table {
            assert_eq!(may_see(*viewer, *facts), *expected, "{viewer:?} on {facts:?}");
        }
    }

    #[test]
    fn consent_follows_the_notice_version() {
        assert!(!consent_in_force(None, 2));
        assert!(consent_in_force(Some(ConsentRecord { notice_version: 2, given: true }), 2));
        assert!(!consent_in_force(Some(ConsentRecord { notice_version: 1, given: true }), 2));
        assert!(!consent_in_force(Some(ConsentRecord { notice_version: 2, given: false }), 2));
    }

    #[test]
    fn parental_access_ends_at_eighteen() {
        let birth = date!(2008 - 03 - 15);
        assert!(is_minor(birth, date!(2026 - 03 - 14)));
        assert!(!is_minor(birth, date!(2026 - 03 - 15)));
        assert_eq!(age_on(date!(2008 - 02 - 29), date!(2026 - 02 - 28)), 17);
        assert_eq!(age_on(date!(2008 - 02 - 29), date!(2026 - 03 - 01)), 18);
    }

    #[test]
    fn delegations_and_break_glass_expire() {
        let d = Delegation {
            valid_from: datetime!(2026-01-01 0:00 UTC),
            valid_until: datetime!(2026-07-01 0:00 UTC),
            revoked_at: Some(datetime!(2026-05-01 0:00 UTC)),
            scope: vec!["DocumentReference".into(), "Immunization".into()],
        };
        assert!(!d.active(datetime!(2025-12-31 23:59 UTC)));
        assert!(d.active(datetime!(2026-04-30 12:00 UTC)));
        assert!(!d.active(datetime!(2026-05-01 0:00 UTC)));
        assert!(d.covers("Immunization") && !d.covers("Condition"));
        let b = BreakGlass {
            started_at: datetime!(2026-11-26 10:00 UTC),
            until: datetime!(2026-11-26 11:00 UTC),
            reason: "paziente incosciente in PS".into(),
        };
        assert!(b.active(datetime!(2026-11-26 10:30 UTC)));
        assert!(!b.active(datetime!(2026-11-26 11:00 UTC)));
        let no_reason = BreakGlass { reason: "  ".into(), ..b };
        assert!(!no_reason.active(datetime!(2026-11-26 10:30 UTC)));
    }

    #[test]
    fn closed_labels_follow_may_see() {
        assert_eq!(Closed::of(doc(&[], false, false)).codes(), Vec::<&str>::new());
        assert_eq!(Closed::of(doc(&["P99"], false, false)).codes(), ["not-clinician"]);
        assert_eq!(Closed::of(doc(&["P97"], false, false)).codes(), ["not-parent"]);
        assert_eq!(Closed::of(doc(&["P98"], false, false)).codes(), ["not-patient", "not-parent", "not-delegate"]);
        assert_eq!(Closed::of(doc(&[], true, false)).codes(), ["not-parent", "not-delegate", "not-clinician"]);
        assert_eq!(Closed::of(doc(&[], true, true)).codes(), Vec::<&str>::new());
        for c in Art6Category::ALL {
            assert_eq!(Art6Category::parse(c.code()), Some(c));
        }
    }

    #[test]
    fn hiding_codes_round_trip() {
        for c in ["P99", "P97", "P98", "P00"] {
            assert_eq!(HidingCode::parse(c).map(HidingCode::code), Some(c));
        }
        assert_eq!(HidingCode::parse("P42"), None);
    }
}
