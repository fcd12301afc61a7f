//! The celiac budget (DM 10/8/2018): what a person with coeliac disease may spend each month on
//! gluten-free food, by age and sex; credited on the first of the month and not carried over.
//! Amounts in euro cents.

use time::{Date, Month};

/// The exemption code that gives the budget (coeliac disease, DPCM 12/1/2017 annex 7).
pub const EXEMPTION: &str = "RI0060";

/// Monthly amounts by age band, (male, female) in cents: the band starts at the age in whole
/// years (the first band at 6 months).
const BANDS: [(i32, i64, i64); 6] =
    [(0, 5_600, 5_600), (6, 7_000, 7_000), (10, 10_000, 9_000), (14, 12_400, 9_900), (18, 11_000, 9_000), (60, 8_900, 7_500)];

/// The first day of the month a day falls in.
pub fn month_start(day: Date) -> Date {
    day.replace_day(1).unwrap_or(day)
}

/// The last day of the month a day falls in.
pub fn month_end(day: Date) -> Date {
    let first = month_start(day);
    let next = if first.month() == Month::December {
        Date::from_calendar_date(first.year() + 1, Month::January, 1)
    } else {
        Date::from_calendar_date(first.year(), first.month().next(), 1)
    };
    next.ok().and_then(|n| n.previous_day()).unwrap_or(day)
}

/// The month's key, `YYYY-MM`.
pub fn month_key(day: Date) -> String {
    format!("{:04}-{:02}", day.year(), day.month() as u8)
}

/// Whole months from birth to a day.
fn months_on(birth: Date, on: Date) -> i32 {
    let mut m = (on.year() - birth.year()) * 12 + (on.month() as i32 - birth.month() as i32);
    if on.day() < birth.day() {
        m -= 1;
    }
    m
}

/// The budget of the month `day` falls in, for a person born on `birth`: the age on the first of
/// the month decides the band. `None` under six months (weaned children only).
pub fn monthly_cents(birth: Date, female: bool, day: Date) -> Option<i64> {
    let first = month_start(day);
    if months_on(birth, first) < 6 {
        return None;
    }
    let age = crate::privacy::age_on(birth, first);
    let (_, male, fem) = BANDS.iter().rev().find(|(from, _, _)| age >= *from).copied().unwrap_or(BANDS[0]);
    Some(if female { fem } else { male })
}

/// Where a purchase was made (the budget is split across channels in the reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Pharmacy,
    Shop,
    Supermarket,
}

impl Channel {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pharmacy" | "farmacia" => Some(Self::Pharmacy),
            "shop" | "negozio" => Some(Self::Shop),
            "supermarket" | "gdo" | "supermercato" => Some(Self::Supermarket),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Pharmacy => "pharmacy",
            Self::Shop => "shop",
            Self::Supermarket => "supermarket",
        }
    }

    /// (Italian, English)
    pub fn name(self) -> (&'static str, &'static str) {
        match self {
            Self::Pharmacy => ("Farmacia", "Pharmacy"),
            Self::Shop => ("Negozio specializzato", "Specialist shop"),
            Self::Supermarket => ("Supermercato", "Supermarket"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn amounts_by_age_and_sex_from_the_decree() {
        let on = date!(2026 - 12 - 07);
        let born = |y: i32| Date::from_calendar_date(y, Month::June, 15).unwrap();
        assert_eq!(monthly_cents(date!(2026 - 08 - 01), false, on), None, "four months old");
        assert_eq!(monthly_cents(date!(2026 - 06 - 01), false, on), Some(5_600), "six months on the 1st");
        assert_eq!(monthly_cents(born(2021), true, on), Some(5_600));
        assert_eq!(monthly_cents(born(2019), true, on), Some(7_000));
        assert_eq!(monthly_cents(born(2015), false, on), Some(10_000));
        assert_eq!(monthly_cents(born(2015), true, on), Some(9_000));
        assert_eq!(monthly_cents(born(2010), false, on), Some(12_400));
        assert_eq!(monthly_cents(born(2010), true, on), Some(9_900));
        assert_eq!(monthly_cents(born(1985), false, on), Some(11_000));
        assert_eq!(monthly_cents(born(1985), true, on), Some(9_000));
        assert_eq!(monthly_cents(born(1950), false, on), Some(8_900));
        assert_eq!(monthly_cents(born(1950), true, on), Some(7_500));
        // the age on the first of the month decides: 18 on 15 December is still 17 in December
        assert_eq!(monthly_cents(date!(2008 - 12 - 15), false, on), Some(12_400));
        assert_eq!(monthly_cents(date!(2008 - 12 - 15), false, date!(2027 - 01 - 03)), Some(11_000));
    }

    #[test]
    fn months() {
        assert_eq!(month_start(date!(2026 - 12 - 07)), date!(2026 - 12 - 01));
        assert_eq!(month_end(date!(2026 - 12 - 07)), date!(2026 - 12 - 31));
        assert_eq!(month_end(date!(2028 - 02 - 10)), date!(2028 - 02 - 29));
        assert_eq!(month_key(date!(2027 - 03 - 31)), "2027-03");
        assert_eq!(Channel::parse("gdo"), Some(Channel::Supermarket));
        assert_eq!(Channel::parse("bar"), None);
    }
}
