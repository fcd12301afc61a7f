//! Time in Italy: Central European Time with summer time (from 01:00 UTC on the last Sunday of
//! March to 01:00 UTC on the last Sunday of October, the EU rule). Dates the law counts (a
//! child's coming of age, a deadline's day) and every time shown to people are Rome's.

use time::{Date, Month, OffsetDateTime, UtcOffset, Weekday};

/// Rome's offset from UTC at the instant `t`.
pub fn offset(t: OffsetDateTime) -> UtcOffset {
    let last_sunday = |m: Month| -> Option<OffsetDateTime> {
        let mut d = Date::from_calendar_date(t.year(), m, 31).ok()?;
        while d.weekday() != Weekday::Sunday {
            d = d.previous_day()?;
        }
        Some(d.with_hms(1, 0, 0).ok()?.assume_utc())
    };
    let summer = matches!((last_sunday(Month::March), last_sunday(Month::October)), (Some(a), Some(b)) if t >= a && t < b);
    if summer {
        time::macros::offset!(+2)
    } else {
        time::macros::offset!(+1)
    }
}

/// The date in Rome at the instant `t`.
pub fn date_at(t: OffsetDateTime) -> Date {
    t.to_offset(offset(t)).date()
}

/// The instant a Rome wall-clock time names. In the spring gap (02:00–03:00 on the last Sunday
/// of March, which no clock shows) the time is read as summer time an hour on, as clocks are
/// moved; in the autumn hour that happens twice, the first (summer time) is taken.
pub fn at(date: Date, hour: u8, minute: u8) -> Option<OffsetDateTime> {
    let local = date.with_hms(hour, minute, 0).ok()?;
    let winter = local.assume_offset(time::macros::offset!(+1));
    let summer = local.assume_offset(time::macros::offset!(+2));
    Some(if offset(summer) == time::macros::offset!(+2) { summer } else { winter.to_offset(offset(winter)) })
}

/// The day in Rome of a FHIR date, dateTime or instant (`2026-11-03T23:30:00Z` is 4 November);
/// a date alone is that day.
pub fn date_of(fhir: &str) -> Option<Date> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(fhir, &Rfc3339) {
        return Some(date_at(t));
    }
    Date::parse(fhir.get(..10)?, &time::macros::format_description!("[year]-[month]-[day]")).ok()
}

/// Today's date in Rome.
pub fn today() -> Date {
    date_at(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn summer_time_starts_and_ends_at_one_utc_on_the_last_sundays() {
        assert_eq!(offset(datetime!(2026-03-29 00:59 UTC)), time::macros::offset!(+1));
        assert_eq!(offset(datetime!(2026-03-29 01:00 UTC)), time::macros::offset!(+2));
        assert_eq!(offset(datetime!(2026-10-25 00:59 UTC)), time::macros::offset!(+2));
        assert_eq!(offset(datetime!(2026-10-25 01:00 UTC)), time::macros::offset!(+1));
        assert_eq!(offset(datetime!(2026-07-01 12:00 UTC)), time::macros::offset!(+2));
        assert_eq!(offset(datetime!(2026-12-06 12:00 UTC)), time::macros::offset!(+1));
    }

    #[test]
    fn the_day_of_a_fhir_time_is_romes() {
        use time::macros::date;
        assert_eq!(date_of("2026-11-03T23:30:00Z"), Some(date!(2026 - 11 - 04)));
        assert_eq!(date_of("2026-07-31T21:59:00Z"), Some(date!(2026 - 07 - 31)));
        assert_eq!(date_of("2026-07-31T22:00:00Z"), Some(date!(2026 - 08 - 01)));
        assert_eq!(date_of("2026-11-03"), Some(date!(2026 - 11 - 03)));
        assert_eq!(date_of("2026-11"), None);
    }

    #[test]
    fn wall_clock_times_name_one_instant_across_the_changeover_nights() {
        use time::macros::date;
        let utc = |t: OffsetDateTime| t.to_offset(time::UtcOffset::UTC);
        // an August morning is summer time, a January one is not
        assert_eq!(at(date!(2026 - 08 - 14), 11, 30), Some(datetime!(2026-08-14 11:30 +2)));
        assert_eq!(utc(at(date!(2026 - 01 - 14), 11, 30).unwrap()), datetime!(2026-01-14 10:30 UTC));
        // spring: 01:59 is still winter, 02:30 does not exist and is 03:30 summer time
        assert_eq!(utc(at(date!(2026 - 03 - 29), 1, 59).unwrap()), datetime!(2026-03-29 00:59 UTC));
        assert_eq!(at(date!(2026 - 03 - 29), 2, 30), Some(datetime!(2026-03-29 03:30 +2)));
        assert_eq!(at(date!(2026 - 03 - 29), 3, 0), Some(datetime!(2026-03-29 03:00 +2)));
        // autumn: 02:30 happens twice; the first one (summer time) is taken; 03:00 is winter
        assert_eq!(at(date!(2026 - 10 - 25), 2, 30), Some(datetime!(2026-10-25 02:30 +2)));
        assert_eq!(at(date!(2026 - 10 - 25), 3, 0), Some(datetime!(2026-10-25 03:00 +1)));
        // the offset written is the one Rome's clocks had at that instant
        for (d, h) in [(date!(2026 - 03 - 29), 2), (date!(2026 - 10 - 25), 2), (date!(2026 - 07 - 01), 12), (date!(2026 - 12 - 24), 9)] {
            let t = at(d, h, 30).unwrap();
            assert_eq!(t.offset(), offset(t));
        }
    }

    /// A child born on 6 December 2008 comes of age at midnight in Rome, which is 23:00 UTC the
    /// day before: from then on the parent's access ends, not an hour later.
    #[test]
    fn the_date_the_law_counts_is_romes() {
        let birth = time::macros::date!(2008 - 12 - 06);
        let t = datetime!(2026-12-05 23:30 UTC);
        assert_eq!(t.date(), time::macros::date!(2026 - 12 - 05));
        assert_eq!(date_at(t), time::macros::date!(2026 - 12 - 06));
        assert!(crate::privacy::is_minor(birth, t.date()), "by the UTC date she would still be a minor");
        assert!(!crate::privacy::is_minor(birth, date_at(t)), "in Rome she is 18");
        // summer: midnight in Rome is 22:00 UTC
        assert_eq!(date_at(datetime!(2026-07-31 22:30 UTC)), time::macros::date!(2026 - 08 - 01));
    }
}
