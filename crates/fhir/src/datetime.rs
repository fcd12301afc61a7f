//! FHIR `date`, `dateTime` and `instant` values as closed ranges of UTC milliseconds.
//!
//! A FHIR date has a precision (year, month, day, second, fraction); a search on it matches the
//! whole implicit range (`2020-03` is 1 March 00:00:00.000 up to 31 March 23:59:59.999). Values
//! without a time zone are read as UTC (documented in `docs/search.md`).

/// A closed range of instants, in milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateRange {
    pub low: i64,
    pub high: i64,
}

/// What a parsed value had, so validation can check a `date` is not a `dateTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    Year,
    Month,
    Day,
    Minute,
    Second,
    Millis,
}

const MS_DAY: i64 = 86_400_000;

/// The Julian day number of 1970-01-01.
const EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// The calendar date, when it is one (months 1–12, days of that month, years ±999,999).
fn date(y: i64, m: i64, d: i64) -> Option<time::Date> {
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    time::Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?).ok()
}

/// Days since 1970-01-01 for a proleptic Gregorian date; `None` when it is not a date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    date(y, m, d).map(|d| i64::from(d.to_julian_day()) - EPOCH_JULIAN_DAY)
}

/// The civil date (year, month, day) of a day number since the epoch; `None` past the years
/// `time` represents (±999,999).
pub fn civil_from_days(z: i64) -> Option<(i64, i64, i64)> {
    let d = time::Date::from_julian_day(i32::try_from(z.checked_add(EPOCH_JULIAN_DAY)?).ok()?).ok()?;
    Some((i64::from(d.year()), i64::from(u8::from(d.month())), i64::from(d.day())))
}

fn days_in_month(y: i64, m: i64) -> Option<i64> {
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    Some(i64::from(month.length(i32::try_from(y).ok()?)))
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parse a FHIR date, dateTime or instant. `require_tz` is true for values that carry a time.
pub fn parse(s: &str) -> Option<(DateRange, Precision)> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let ys = parts.next()?;
    if ys.len() != 4 {
        return None;
    }
    let y = num(ys)?;
    let m = match parts.next() {
        Some(p) if p.len() == 2 => Some(num(p)?),
        Some(_) => return None,
        None => None,
    };
    let d = match parts.next() {
        Some(p) if p.len() == 2 => Some(num(p)?),
        Some(_) => return None,
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    if let Some(m) = m {
        if !(1..=12).contains(&m) {
            return None;
        }
        if let Some(d) = d {
            if d < 1 || d > days_in_month(y, m)? {
                return None;
            }
        }
    }
    match (m, d, time) {
        (None, None, None) => {
            let low = days_from_civil(y, 1, 1)? * MS_DAY;
            let high = days_from_civil(y + 1, 1, 1)? * MS_DAY - 1;
            Some((DateRange { low, high }, Precision::Year))
        }
        (Some(m), None, None) => {
            let low = days_from_civil(y, m, 1)? * MS_DAY;
            let high = low + days_in_month(y, m)? * MS_DAY - 1;
            Some((DateRange { low, high }, Precision::Month))
        }
        (Some(m), Some(d), None) => {
            let low = days_from_civil(y, m, d)? * MS_DAY;
            Some((DateRange { low, high: low + MS_DAY - 1 }, Precision::Day))
        }
        (Some(m), Some(d), Some(t)) => {
            let day = days_from_civil(y, m, d)? * MS_DAY;
            let (clock, offset_ms) = split_zone(t)?;
            let mut c = clock.split(':');
            let hh = num(c.next().filter(|p| p.len() == 2)?)?;
            let mi = num(c.next().filter(|p| p.len() == 2)?)?;
            let (ss, ms, prec) = match c.next() {
                None => (0, 0, Precision::Minute),
                Some(sec) => {
                    let (si, frac) = match sec.split_once('.') {
                        Some((a, b)) => (a, Some(b)),
                        None => (sec, None),
                    };
                    if si.len() != 2 {
                        return None;
                    }
                    let si = num(si)?;
                    match frac {
                        None => (si, 0, Precision::Second),
                        Some(f) => {
                            if f.is_empty() || f.len() > 9 || num(f).is_none() {
                                return None;
                            }
                            let mut digits: String = f.chars().take(3).collect();
                            while digits.len() < 3 {
                                digits.push('0');
                            }
                            (si, num(&digits)?, Precision::Millis)
                        }
                    }
                }
            };
            if c.next().is_some() || hh > 23 || mi > 59 || ss > 60 {
                return None;
            }
            let low = day + ((hh * 60 + mi) * 60 + ss) * 1000 + ms - offset_ms;
            let high = match prec {
                Precision::Minute => low + 59_999,
                Precision::Second => low + 999,
                _ => low,
            };
            Some((DateRange { low, high }, prec))
        }
        _ => None,
    }
}

/// Split "10:30:00+01:00" into the clock and the zone offset in milliseconds (UTC when absent).
fn split_zone(t: &str) -> Option<(&str, i64)> {
    if let Some(c) = t.strip_suffix('Z') {
        return Some((c, 0));
    }
    if let Some(pos) = t.rfind(['+', '-']) {
        let (clock, zone) = t.split_at(pos);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m) = (num(h)?, num(m)?);
        if h > 14 || m > 59 {
            return None;
        }
        return Some((clock, sign * (h * 60 + m) * 60_000));
    }
    Some((t, 0))
}

/// Whether a dateTime string with a time part carries an explicit zone (FHIR requires one).
pub fn has_zone(s: &str) -> bool {
    match s.split_once('T') {
        None => true,
        Some((_, t)) => t.ends_with('Z') || t.contains('+') || t.contains('-'),
    }
}

/// Format milliseconds since the epoch as a FHIR instant (`2024-01-02T03:04:05.678Z`).
pub fn format_instant(ms: i64) -> String {
    let days = ms.div_euclid(MS_DAY);
    let rem = ms.rem_euclid(MS_DAY);
    // beyond the years a date can have, the nearest one (instants come from clocks and stores)
    let (y, m, d) = civil_from_days(days).unwrap_or(if days < 0 { (-999_999, 1, 1) } else { (999_999, 12, 31) });
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    i64::try_from(now).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_ranges() {
        let (r, p) = parse("2020").unwrap();
        assert_eq!(p, Precision::Year);
        assert_eq!(format_instant(r.low), "2020-01-01T00:00:00.000Z");
        assert_eq!(format_instant(r.high), "2020-12-31T23:59:59.999Z");
        let (r, _) = parse("2024-02").unwrap();
        assert_eq!(format_instant(r.high), "2024-02-29T23:59:59.999Z");
        let (r, p) = parse("2013-04-02T09:30:10+01:00").unwrap();
        assert_eq!(p, Precision::Second);
        assert_eq!(format_instant(r.low), "2013-04-02T08:30:10.000Z");
        assert_eq!(r.high - r.low, 999);
        let (r, _) = parse("2015-02-07T13:28:17.239-05:00").unwrap();
        assert_eq!(format_instant(r.low), "2015-02-07T18:28:17.239Z");
    }

    #[test]
    fn rejects_bad_dates() {
        for bad in ["2020-13", "2021-02-29", "20-01-01", "2020-01-01T25:00:00Z", "2020/01/01", "abc", "2020-1-01"] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert!(parse("1969-12-31").is_some());
    }

    #[test]
    fn civil_roundtrip() {
        for d in [-800_000, -1, 0, 1, 19_000, 2_932_896] {
            let (y, m, dd) = civil_from_days(d).unwrap();
            assert_eq!(days_from_civil(y, m, dd), Some(d));
        }
        assert_eq!(civil_from_days(0), Some((1970, 1, 1)));
        assert_eq!(civil_from_days(-1), Some((1969, 12, 31)));
        assert_eq!(days_from_civil(2024, 2, 29), Some(19_782));
        assert_eq!(days_from_civil(2023, 2, 29), None);
        assert_eq!(days_from_civil(2023, 13, 1), None);
        assert_eq!(format_instant(0), "1970-01-01T00:00:00.000Z");
    }
}
