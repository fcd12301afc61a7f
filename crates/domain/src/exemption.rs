//! Exemptions from the ticket (esenzioni): the income exemptions a citizen may self-certify
//! (E01–E04, DM 11/12/2009 and art. 8 c. 16 L. 537/1993), their rules and how long a
//! self-certification lasts; the kinds of the other codes (pathology, rare disease, invalidity).
//!
//! Amounts are in euro cents. The rules take the declared family income and household and say
//! whether the code may be declared; the figure itself is not kept (the declaration states the
//! limit it is under, as the paper form does).

use time::{Date, Month};

/// The code system of exemption codes in `Coverage.type`.
pub const SYSTEM: &str = "urn:fascicolo:esenzione";

/// E01: family income not above €36,151.98.
pub const E01_LIMIT_CENTS: i64 = 3_615_198;
/// E02 and E04: family income below €8,263.31 …
pub const E02_BASE_CENTS: i64 = 826_331;
/// … €11,362.05 with a spouse …
pub const E02_SPOUSE_CENTS: i64 = 1_136_205;
/// … and €516.46 more for each dependent child.
pub const E02_CHILD_CENTS: i64 = 51_646;
/// Most dependent children a household declares (a bound on nonsense, not a rule).
pub const MAX_CHILDREN: u32 = 20;

/// An income exemption code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IncomeCode {
    E01,
    E02,
    E03,
    E04,
}

impl IncomeCode {
    pub const ALL: [IncomeCode; 4] = [IncomeCode::E01, IncomeCode::E02, IncomeCode::E03, IncomeCode::E04];

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code().eq_ignore_ascii_case(code.trim()))
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::E01 => "E01",
            Self::E02 => "E02",
            Self::E03 => "E03",
            Self::E04 => "E04",
        }
    }

    /// The official wording (Italian, English).
    pub fn name(self) -> (&'static str, &'static str) {
        match self {
            Self::E01 => (
                "Età inferiore a 6 anni o superiore a 65 anni e reddito familiare fino a 36.151,98 euro",
                "Under 6 or over 65 with a family income up to €36,151.98",
            ),
            Self::E02 => (
                "Disoccupato e familiari a carico, reddito fino a 8.263,31 euro",
                "Unemployed person and dependent family, income below €8,263.31",
            ),
            Self::E03 => ("Titolare di assegno sociale e familiari a carico", "Holder of the social allowance and dependent family"),
            Self::E04 => {
                ("Titolare di pensione al minimo, età superiore a 60 anni", "Holder of a minimum pension over 60, and dependent family")
            }
        }
    }

    /// Whether the declarant may be a dependent family member of the holder.
    pub fn has_dependants(self) -> bool {
        self != Self::E01
    }

    /// Whether the code has an income limit.
    pub fn has_income_limit(self) -> bool {
        self != Self::E03
    }
}

/// Whether the person is the holder of the condition (the unemployed person, the pensioner)
/// or a family member dependent on them (familiare a carico).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Holder,
    Dependant,
}

impl Standing {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "holder" | "titolare" => Some(Self::Holder),
            "dependant" | "familiare" => Some(Self::Dependant),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Holder => "holder",
            Self::Dependant => "dependant",
        }
    }
}

/// A self-certification as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub code: IncomeCode,
    pub standing: Standing,
    /// The family's total income of the year before, in cents (not needed for E03).
    pub family_income_cents: Option<i64>,
    pub spouse: bool,
    pub children: u32,
    /// Age of the person the exemption is for; for E04 as holder, the holder is this person.
    pub age: i32,
}

/// Why a declaration cannot be made: the form field it is about and the message in Italian
/// and English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub field: &'static str,
    pub it: &'static str,
    pub en: &'static str,
}

/// The income limit of E02 and E04 for a household, in cents (below it, strictly).
pub fn e02_limit_cents(spouse: bool, children: u32) -> i64 {
    (if spouse { E02_SPOUSE_CENTS } else { E02_BASE_CENTS }) + E02_CHILD_CENTS * i64::from(children)
}

/// The limit the declaration states the income is within, in cents (`None` for E03).
pub fn limit_cents(d: &Declaration) -> Option<i64> {
    match d.code {
        IncomeCode::E01 => Some(E01_LIMIT_CENTS),
        IncomeCode::E02 | IncomeCode::E04 => Some(e02_limit_cents(d.spouse, d.children)),
        IncomeCode::E03 => None,
    }
}

/// Whether the code may be declared, every reason it may not.
pub fn check(d: &Declaration) -> Result<(), Vec<Refusal>> {
    let mut out = Vec::new();
    if d.children > MAX_CHILDREN {
        out.push(Refusal {
            field: "children",
            it: "Indica il numero dei figli a carico (da 0 a 20).",
            en: "Enter the number of dependent children (0 to 20).",
        });
    }
    if d.code == IncomeCode::E01 && (6..65).contains(&d.age) {
        out.push(Refusal {
            field: "code",
            it: "L'esenzione E01 spetta a chi ha meno di 6 anni o almeno 65 anni.",
            en: "Exemption E01 is for people under 6 or aged 65 and over.",
        });
    }
    if d.code == IncomeCode::E01 && d.standing == Standing::Dependant {
        out.push(Refusal {
            field: "standing",
            it: "L'esenzione E01 è personale: non si dichiara come familiare a carico.",
            en: "Exemption E01 is personal: it is not declared as a dependant.",
        });
    }
    if d.code == IncomeCode::E04 && d.standing == Standing::Holder && d.age < 60 {
        out.push(Refusal {
            field: "code",
            it: "Chi è titolare della pensione al minimo deve avere almeno 60 anni per l'esenzione E04.",
            en: "The holder of a minimum pension must be 60 or over for exemption E04.",
        });
    }
    if d.code.has_income_limit() {
        match d.family_income_cents {
            None => out.push(Refusal {
                field: "income",
                it: "Indica il reddito complessivo del nucleo familiare dell'anno precedente, in euro.",
                en: "Enter the family's total income of the previous year, in euro.",
            }),
            Some(c) if c < 0 => {
                out.push(Refusal { field: "income", it: "Il reddito non può essere negativo.", en: "The income cannot be negative." })
            }
            Some(c) => {
                let within = match d.code {
                    IncomeCode::E01 => c <= E01_LIMIT_CENTS,
                    _ => c < e02_limit_cents(d.spouse, d.children),
                };
                if !within {
                    out.push(Refusal {
                        field: "income",
                        it: "Con questo reddito l'esenzione non spetta: supera il limite previsto per il nucleo familiare.",
                        en: "With this income the exemption does not apply: it exceeds the household's limit.",
                    });
                }
            }
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}

/// A euro amount as people type it (`8.263,31`, `8263.31`, `8263`, `€ 8 263,31`), in cents.
pub fn parse_euro(s: &str) -> Option<i64> {
    let s: String = s.trim().trim_start_matches('€').chars().filter(|c| !c.is_whitespace() && *c != '\u{a0}').collect();
    if s.is_empty() || s.starts_with('-') || s.starts_with('+') {
        return None;
    }
    // the last comma or dot followed by one or two digits is the decimal mark
    let (whole, cents) = match s.rfind([',', '.']) {
        Some(i) if s.len() - i - 1 <= 2 && s.len() - i > 1 => (&s[..i], &s[i + 1..]),
        _ => (s.as_str(), ""),
    };
    let whole: String = whole.chars().filter(|c| *c != '.' && *c != ',').collect();
    if whole.is_empty() || !whole.chars().all(|c| c.is_ascii_digit()) || !cents.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let euros: i64 = whole.parse().ok()?;
    let cents: i64 = match cents.len() {
        0 => 0,
        1 => cents.parse::<i64>().ok()? * 10,
        _ => cents.parse().ok()?,
    };
    euros.checked_mul(100)?.checked_add(cents)
}

/// The last day a self-certification made on `on` is valid: income certifications run to
/// 31 March (the yearly cycle of the income lists, 1 April to 31 March); E01 for a child ends
/// the day before the sixth birthday if that comes first.
pub fn valid_until(code: IncomeCode, birth: Date, on: Date) -> Date {
    let year = if on.month() as u8 <= 3 { on.year() } else { on.year() + 1 };
    let march = Date::from_calendar_date(year, Month::March, 31).unwrap_or(on);
    if code == IncomeCode::E01 && crate::privacy::age_on(birth, on) < 6 {
        let sixth = birthday(birth, birth.year() + 6);
        if let Some(last) = sixth.previous_day() {
            return last.min(march);
        }
    }
    march
}

/// The birthday in a year (29 February falls on 1 March in other years).
fn birthday(birth: Date, year: i32) -> Date {
    Date::from_calendar_date(year, birth.month(), birth.day()).or_else(|_| Date::from_calendar_date(year, Month::March, 1)).unwrap_or(birth)
}

/// The kind of an exemption code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Income,
    Invalidity,
    RareDisease,
    Pathology,
}

impl Kind {
    pub fn of(code: &str) -> Kind {
        let c = code.trim().to_ascii_uppercase();
        if IncomeCode::parse(&c).is_some() {
            Kind::Income
        } else if c.starts_with('C') || c.starts_with('G') || c.starts_with('L') || c.starts_with('S') || c.starts_with('N') {
            // C01–C06 civil invalidity; G war, L work, S service, N victims (DM 1/2/1991)
            Kind::Invalidity
        } else if c.starts_with('R') {
            Kind::RareDisease
        } else {
            Kind::Pathology
        }
    }
}

/// English names of the pathology and rare-disease codes the platform knows (the Italian is
/// in the registry); others keep their Italian name.
pub fn english_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "013" => "Diabetes mellitus",
        "031" => "Arterial hypertension with organ damage",
        "048" => "Malignant neoplastic diseases",
        "RI0060" => "Coeliac disease",
        _ => return IncomeCode::parse(code).map(|c| c.name().1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn decl(code: IncomeCode, income: Option<i64>, age: i32) -> Declaration {
        Declaration { code, standing: Standing::Holder, family_income_cents: income, spouse: false, children: 0, age }
    }

    fn fields(r: Result<(), Vec<Refusal>>) -> Vec<&'static str> {
        r.err().unwrap_or_default().iter().map(|r| r.field).collect()
    }

    #[test]
    fn e01_is_for_the_young_and_the_old_up_to_the_limit_inclusive() {
        assert_eq!(check(&decl(IncomeCode::E01, Some(E01_LIMIT_CENTS), 70)), Ok(()));
        assert_eq!(check(&decl(IncomeCode::E01, Some(2_000_000), 5)), Ok(()));
        assert_eq!(check(&decl(IncomeCode::E01, Some(2_000_000), 65)), Ok(()));
        assert_eq!(fields(check(&decl(IncomeCode::E01, Some(E01_LIMIT_CENTS + 1), 70))), ["income"]);
        assert_eq!(fields(check(&decl(IncomeCode::E01, Some(1_000), 6))), ["code"]);
        assert_eq!(fields(check(&decl(IncomeCode::E01, Some(1_000), 64))), ["code"]);
        let dependant = Declaration { standing: Standing::Dependant, ..decl(IncomeCode::E01, Some(1_000), 70) };
        assert_eq!(fields(check(&dependant)), ["standing"]);
    }

    #[test]
    fn e02_limit_is_strict_and_grows_with_the_household() {
        assert_eq!(e02_limit_cents(false, 0), 826_331);
        assert_eq!(e02_limit_cents(true, 0), 1_136_205);
        assert_eq!(e02_limit_cents(true, 2), 1_136_205 + 2 * 51_646);
        assert_eq!(e02_limit_cents(false, 1), 826_331 + 51_646);
        assert_eq!(check(&decl(IncomeCode::E02, Some(826_330), 40)), Ok(()));
        assert_eq!(fields(check(&decl(IncomeCode::E02, Some(826_331), 40))), ["income"]);
        let family = Declaration { spouse: true, children: 2, ..decl(IncomeCode::E02, Some(1_239_496), 40) };
        assert_eq!(check(&family), Ok(()));
        assert_eq!(fields(check(&Declaration { family_income_cents: Some(1_239_497), ..family.clone() })), ["income"]);
        assert_eq!(fields(check(&Declaration { children: 21, ..family })), ["children"]);
        assert_eq!(fields(check(&decl(IncomeCode::E02, None, 40))), ["income"]);
        assert_eq!(fields(check(&decl(IncomeCode::E02, Some(-1), 40))), ["income"]);
    }

    #[test]
    fn e03_has_no_income_test_and_e04_wants_a_holder_over_60() {
        assert_eq!(check(&decl(IncomeCode::E03, None, 70)), Ok(()));
        assert_eq!(check(&decl(IncomeCode::E03, Some(99_999_999), 30)), Ok(()));
        assert_eq!(check(&decl(IncomeCode::E04, Some(700_000), 60)), Ok(()));
        assert_eq!(fields(check(&decl(IncomeCode::E04, Some(700_000), 59))), ["code"]);
        // a dependent spouse or child of the pensioner may be younger
        let dependant = Declaration { standing: Standing::Dependant, ..decl(IncomeCode::E04, Some(700_000), 12) };
        assert_eq!(check(&dependant), Ok(()));
        assert_eq!(fields(check(&decl(IncomeCode::E04, Some(900_000), 70))), ["income"]);
    }

    #[test]
    fn euro_amounts_as_people_write_them() {
        assert_eq!(parse_euro("8.263,31"), Some(826_331));
        assert_eq!(parse_euro("8263,31"), Some(826_331));
        assert_eq!(parse_euro("8263.31"), Some(826_331));
        assert_eq!(parse_euro("8263"), Some(826_300));
        assert_eq!(parse_euro("€ 8 263,3"), Some(826_330));
        assert_eq!(parse_euro("36.151,98"), Some(3_615_198));
        assert_eq!(parse_euro("12.000"), Some(1_200_000));
        assert_eq!(parse_euro("0"), Some(0));
        for bad in ["", "abc", "-5", "1,2,3x", "12,345,6a", "€"] {
            assert_eq!(parse_euro(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_certification_runs_to_the_next_31_march() {
        let adult = date!(1980 - 05 - 10);
        assert_eq!(valid_until(IncomeCode::E02, adult, date!(2026 - 12 - 07)), date!(2027 - 03 - 31));
        assert_eq!(valid_until(IncomeCode::E02, adult, date!(2027 - 03 - 31)), date!(2027 - 03 - 31));
        assert_eq!(valid_until(IncomeCode::E02, adult, date!(2027 - 04 - 01)), date!(2028 - 03 - 31));
        // a child's E01 ends the day before the sixth birthday
        assert_eq!(valid_until(IncomeCode::E01, date!(2021 - 01 - 15), date!(2026 - 12 - 07)), date!(2027 - 01 - 14));
        assert_eq!(valid_until(IncomeCode::E01, date!(2021 - 06 - 15), date!(2026 - 12 - 07)), date!(2027 - 03 - 31));
        assert_eq!(valid_until(IncomeCode::E01, date!(2020 - 02 - 29), date!(2025 - 12 - 01)), date!(2026 - 02 - 28));
    }

    #[test]
    fn kinds_of_codes() {
        assert_eq!(Kind::of("E02"), Kind::Income);
        assert_eq!(Kind::of("013"), Kind::Pathology);
        assert_eq!(Kind::of("RI0060"), Kind::RareDisease);
        assert_eq!(Kind::of("C01"), Kind::Invalidity);
        assert_eq!(IncomeCode::parse("e03"), Some(IncomeCode::E03));
        assert_eq!(IncomeCode::parse("E05"), None);
        assert_eq!(english_name("E04"), Some("Holder of a minimum pension over 60, and dependent family"));
    }
}
