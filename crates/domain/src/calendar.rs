//! The Italian working calendar: national public holidays (law 260/1949 and later, Easter
//! Monday included), Sundays and Saturdays, and a town's patron day. Clinics open on working
//! days; what the synthetic region generates, and what booking offers, follows it.

use time::{Date, Month, Weekday};

/// Easter Sunday of a Gregorian year (the anonymous Gregorian algorithm, "Meeus/Jones/Butcher").
pub fn easter(year: i32) -> Option<Date> {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    Date::from_calendar_date(year, Month::try_from(u8::try_from(month).ok()?).ok()?, u8::try_from(day).ok()?).ok()
}

/// The national public holidays: New Year, Epiphany, Easter Monday, Liberation Day (25 April),
/// Labour Day, Republic Day (2 June), Assumption (15 August), All Saints, Immaculate Conception
/// (8 December), Christmas and St Stephen's day; and St Francis of Assisi (4 October), a
/// national holiday again from 2026.
pub fn is_national_holiday(d: Date) -> bool {
    let fixed = matches!(
        (d.month(), d.day()),
        (Month::January, 1)
            | (Month::January, 6)
            | (Month::April, 25)
            | (Month::May, 1)
            | (Month::June, 2)
            | (Month::August, 15)
            | (Month::November, 1)
            | (Month::December, 8)
            | (Month::December, 25)
            | (Month::December, 26)
    );
    let st_francis = d.year() >= 2026 && d.month() == Month::October && d.day() == 4;
    let easter_monday = easter(d.year()).and_then(|e| e.next_day()) == Some(d);
    fixed || st_francis || easter_monday
}

/// A town's patron day, when the calendar knows it (Milan: St Ambrose, 7 December).
pub fn patron_day(istat: &str, year: i32) -> Option<Date> {
    let (month, day) = match istat {
        "015146" => (Month::December, 7),  // Milano, Sant'Ambrogio
        "016024" => (Month::August, 26),   // Bergamo, Sant'Alessandro
        "017029" => (Month::February, 15), // Brescia, Santi Faustino e Giovita
        "018110" => (Month::December, 9),  // Pavia, San Siro
        "019036" => (Month::November, 13), // Cremona, Sant'Omobono
        "020030" => (Month::March, 18),    // Mantova, Sant'Anselmo
        "012133" => (Month::May, 8),       // Varese, San Vittore
        "013075" => (Month::August, 31),   // Como, Sant'Abbondio
        _ => return None,
    };
    Date::from_calendar_date(year, month, day).ok()
}

/// A day clinics work: Monday to Friday, not a public holiday nor the town's patron day
/// (`istat`: the town's ISTAT code, empty when not known).
pub fn is_working_day(d: Date, istat: &str) -> bool {
    !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday) && !is_national_holiday(d) && patron_day(istat, d.year()) != Some(d)
}

/// The first working day on or after `d`.
pub fn working_day_from(d: Date, istat: &str) -> Date {
    let mut day = d;
    for _ in 0..14 {
        if is_working_day(day, istat) {
            return day;
        }
        match day.next_day() {
            Some(n) => day = n,
            None => return d,
        }
    }
    day
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn easter_falls_on_the_known_sundays() {
        for (y, d) in [
            (2024, date!(2024 - 03 - 31)),
            (2025, date!(2025 - 04 - 20)),
            (2026, date!(2026 - 04 - 05)),
            (2027, date!(2027 - 03 - 28)),
            (2038, date!(2038 - 04 - 25)),
        ] {
            assert_eq!(easter(y), Some(d), "{y}");
        }
    }

    #[test]
    fn holidays_weekends_and_the_patron_day_are_not_working_days() {
        assert!(!is_working_day(date!(2026 - 12 - 24) + time::Duration::days(1), ""), "Christmas");
        assert!(is_working_day(date!(2026 - 12 - 24), ""), "Christmas Eve is a Thursday like any other");
        assert!(!is_working_day(date!(2025 - 12 - 26), ""), "St Stephen");
        assert!(!is_working_day(date!(2026 - 04 - 06), ""), "Easter Monday 2026");
        assert!(!is_working_day(date!(2026 - 06 - 02), ""), "Republic Day");
        assert!(!is_working_day(date!(2026 - 10 - 04), ""), "St Francis from 2026 (a Sunday too)");
        assert!(!is_working_day(date!(2027 - 10 - 04), ""), "St Francis, a Monday");
        assert!(is_working_day(date!(2025 - 10 - 04) + time::Duration::days(2), ""), "a Monday in October");
        assert!(!is_working_day(date!(2026 - 12 - 05), ""), "a Saturday");
        assert!(!is_working_day(date!(2026 - 12 - 07), "015146"), "Sant'Ambrogio in Milan");
        assert!(is_working_day(date!(2026 - 12 - 07), "016024"), "not in Bergamo");
        // the next working day after Christmas Eve 2026 (Thursday): Christmas, St Stephen, the weekend
        assert_eq!(working_day_from(date!(2026 - 12 - 25), ""), date!(2026 - 12 - 28));
        assert_eq!(working_day_from(date!(2026 - 12 - 28), ""), date!(2026 - 12 - 28));
    }
}
