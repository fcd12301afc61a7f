//! Codice fiscale: the Italian tax code that identifies every citizen (16 characters with a
//! check character; omocodia replaces digits with letters to keep codes unique).

use std::fmt;

const ODD: [u32; 36] =
    [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23];
const OMOCODIA: &[u8; 10] = b"LMNPQRSTUV";
const DIGIT_POSITIONS: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];
const MONTHS: &[u8; 12] = b"ABCDEHLMPRST";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodiceFiscaleError {
    #[error("a codice fiscale has 16 characters")]
    Length,
    #[error("character {0} is not allowed at this position")]
    Format(usize),
    #[error("the check character does not match")]
    Check,
}

/// A syntactically valid codice fiscale with a correct check character (upper case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct CodiceFiscale(String);

fn value(c: u8) -> u32 {
    if c.is_ascii_digit() {
        u32::from(c - b'0')
    } else {
        u32::from(c - b'A') + 10
    }
}

/// The check character of the first 15 characters.
pub fn check_char(first15: &[u8]) -> char {
    let sum: u32 = first15
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if i % 2 == 0 {
                ODD[value(c) as usize]
            } else if c.is_ascii_digit() {
                u32::from(c - b'0')
            } else {
                u32::from(c - b'A')
            }
        })
        .sum();
    char::from(b'A' + (sum % 26) as u8)
}

impl CodiceFiscale {
    pub fn parse(s: &str) -> Result<Self, CodiceFiscaleError> {
        let up = s.trim().to_ascii_uppercase();
        let b = up.as_bytes();
        if b.len() != 16 {
            return Err(CodiceFiscaleError::Length);
        }
        for (i, &c) in b.iter().enumerate() {
            let ok = match i {
                0..=5 | 11 | 15 => c.is_ascii_uppercase(),
                8 => MONTHS.contains(&c),
                _ if DIGIT_POSITIONS.contains(&i) => c.is_ascii_digit() || OMOCODIA.contains(&c),
                _ => false,
            };
            if !ok {
                return Err(CodiceFiscaleError::Format(i + 1));
            }
        }
        if check_char(&b[..15]) != char::from(b[15]) {
            return Err(CodiceFiscaleError::Check);
        }
        Ok(CodiceFiscale(up))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The birth date the code encodes (day + 40 for women), taking the century that does not
    /// put it after `today` (the code carries only two digits of the year).
    pub fn birth_date(&self, today: time::Date) -> Option<time::Date> {
        let c = self.canonical();
        let b = c.0.as_bytes();
        let num = |i: usize, j: usize| c.0.get(i..j).and_then(|x| x.parse::<i32>().ok());
        let yy = num(6, 8)?;
        let month = MONTHS.iter().position(|&m| m == b[8])? as u8 + 1;
        let day = num(9, 11)? % 40;
        let month = time::Month::try_from(month).ok()?;
        let this_century = today.year() - today.year() % 100;
        for year in [this_century + yy, this_century - 100 + yy] {
            if let Ok(d) = time::Date::from_calendar_date(year, month, u8::try_from(day).ok()?) {
                if d <= today {
                    return Some(d);
                }
            }
        }
        None
    }

    /// The same code with omocodia letters turned back into digits (and the check recomputed).
    pub fn canonical(&self) -> CodiceFiscale {
        let mut b = self.0.as_bytes().to_vec();
        for i in DIGIT_POSITIONS {
            if let Some(p) = OMOCODIA.iter().position(|&o| o == b[i]) {
                b[i] = b'0' + p as u8;
            }
        }
        let c = check_char(&b[..15]);
        b[15] = c as u8;
        CodiceFiscale(String::from_utf8_lossy(&b).into_owned())
    }
}

impl fmt::Display for CodiceFiscale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        for ok in ["RSSMRA75C03F839K", "RSSMRA80A01H501U", "PPRPLN20H09D969W", "rssmra80a01h501u"] {
            assert!(CodiceFiscale::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(CodiceFiscale::parse("VRDMRC67T20I257E"), Err(CodiceFiscaleError::Check));
        assert!(CodiceFiscale::parse("VRDMRC67T20I257A").is_ok());
        assert_eq!(CodiceFiscale::parse("RSSMRA80A01H50"), Err(CodiceFiscaleError::Length));
        let omo = CodiceFiscale::parse("RSSMRA80A01H50MM").unwrap();
        assert_eq!(omo.canonical().as_str(), "RSSMRA80A01H501U");
        let today = time::macros::date!(2026 - 11 - 26);
        assert_eq!(omo.birth_date(today), Some(time::macros::date!(1980 - 01 - 01)));
        // born this century
        let child = CodiceFiscale::parse("PPRPLN20H09D969W").unwrap();
        assert_eq!(child.birth_date(today), Some(time::macros::date!(2020 - 06 - 09)));
        // a woman (day + 40)
        let giulia = CodiceFiscale::parse("RSSGLI85D52F205Q").unwrap();
        assert_eq!(giulia.birth_date(today), Some(time::macros::date!(1985 - 04 - 12)));
    }
}
