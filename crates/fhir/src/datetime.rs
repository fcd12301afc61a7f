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

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number since the epoch.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
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
            if d < 1 || d > days_in_month(y, m) {
                return None;
            }
        }
    }
    match (m, d, time) {
        (None, None, None) => {
            let low = days_from_civil(y, 1, 1) * MS_DAY;
            let high = days_from_civil(y + 1, 1, 1) * MS_DAY - 1;
            Some((DateRange { low, high }, Precision::Year))
        }
        (Some(m), None, None) => {
            let low = days_from_civil(y, m, 1) * MS_DAY;
            let high = low + days_in_month(y, m) * MS_DAY - 1;
            Some((DateRange { low, high }, Precision::Month))
        }
        (Some(m), Some(d), None) => {
            let low = days_from_civil(y, m, d) * MS_DAY;
            Some((DateRange { low, high: low + MS_DAY - 1 }, Precision::Day))
        }
        (Some(m), Some(d), Some(t)) => {
            let day = days_from_civil(y, m, d) * MS_DAY;
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
    let (y, m, d) = civil_from_days(days);
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
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
