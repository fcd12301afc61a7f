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
/// Deserialising checks it as [`CodiceFiscale::parse`] does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct CodiceFiscale(String);

impl TryFrom<String> for CodiceFiscale {
    type Error = CodiceFiscaleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CodiceFiscale::parse(&s)
    }
}

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

/// The letters of a name as the code reads them: upper case, accents dropped, anything that is
/// not a letter (spaces, apostrophes) left out.
fn letters(name: &str) -> Vec<u8> {
    use unicode_normalization::UnicodeNormalization;
    name.nfd().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_uppercase() as u8).collect()
}

fn is_vowel(c: u8) -> bool {
    matches!(c, b'A' | b'E' | b'I' | b'O' | b'U')
}

/// Three letters for a surname (`given == false`) or a given name: consonants, then vowels,
/// then `X`; a given name with four or more consonants takes the 1st, 3rd and 4th.
fn name_code(name: &str, given: bool) -> [u8; 3] {
    let l = letters(name);
    let consonants: Vec<u8> = l.iter().copied().filter(|&c| !is_vowel(c)).collect();
    let vowels = l.iter().copied().filter(|&c| is_vowel(c));
    let picked: Vec<u8> = if given && consonants.len() >= 4 {
        vec![consonants[0], consonants[2], consonants[3]]
    } else {
        consonants.iter().copied().chain(vowels).chain(std::iter::repeat(b'X')).take(3).collect()
    };
    [picked[0], picked[1], picked[2]]
}

/// Why a codice fiscale cannot be computed from personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError {
    #[error("the birth place code must be a codice catastale (a letter and three digits)")]
    Place,
    #[error("the birth year must be between 1800 and 2199")]
    Year,
}

impl CodiceFiscale {
    /// The code of a person from surname, given name(s), birth date, sex and birth place
    /// (codice catastale of the municipality, or `Z…` of the foreign country, valid on the
    /// birth date).
    pub fn compute(surname: &str, given: &str, birth: time::Date, female: bool, place: &str) -> Result<Self, ComputeError> {
        let p = place.as_bytes();
        if p.len() != 4 || !p[0].is_ascii_uppercase() || !p[1..].iter().all(u8::is_ascii_digit) {
            return Err(ComputeError::Place);
        }
        if !(1800..2200).contains(&birth.year()) {
            return Err(ComputeError::Year);
        }
        let mut b = Vec::with_capacity(16);
        b.extend(name_code(surname, false));
        b.extend(name_code(given, true));
        b.extend(format!("{:02}", birth.year() % 100).bytes());
        b.push(MONTHS[usize::from(u8::from(birth.month())) - 1]);
        let day = birth.day() + if female { 40 } else { 0 };
        b.extend(format!("{day:02}").bytes());
        b.extend(p);
        let c = check_char(&b);
        b.push(c as u8);
        Ok(CodiceFiscale(String::from_utf8_lossy(&b).into_owned()))
    }

    /// The omocodia variant of `level` (1–7): the `level` rightmost digits become letters, as
    /// the Agenzia delle Entrate assigns them when two people would share a code; level 0 is
    /// the code itself.
    pub fn omocode(&self, level: usize) -> CodiceFiscale {
        let mut b = self.canonical().0.into_bytes();
        for &i in DIGIT_POSITIONS.iter().rev().take(level) {
            b[i] = OMOCODIA[usize::from(b[i] - b'0')];
        }
        let c = check_char(&b[..15]);
        b[15] = c as u8;
        CodiceFiscale(String::from_utf8_lossy(&b).into_owned())
    }

    /// The codice catastale of the birth place (omocodia undone).
    pub fn birth_place(&self) -> String {
        self.canonical().0[11..15].to_string()
    }

    /// Whether the code is a woman's (day + 40).
    pub fn is_female(&self) -> bool {
        self.canonical().0.get(9..11).and_then(|d| d.parse::<u8>().ok()).is_some_and(|d| d > 40)
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

    #[test]
    fn computed_from_personal_data() {
        let d = |y, m, day| time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), day).unwrap();
        // the reference vectors: Mario Rossi born in Rome on 1 January 1980
        assert_eq!(CodiceFiscale::compute("Rossi", "Mario", d(1980, 1, 1), false, "H501").unwrap().as_str(), "RSSMRA80A01H501U");
        // a woman: day + 40; a given name with four consonants takes the 1st, 3rd and 4th
        let g = CodiceFiscale::compute("Rossi", "Giulia", d(1985, 4, 12), true, "F205").unwrap();
        assert_eq!(g.as_str(), "RSSGLI85D52F205Q");
        assert!(g.is_female());
        assert_eq!(&CodiceFiscale::compute("Bianchi", "Francesca", d(1990, 12, 5), true, "F205").unwrap().as_str()[3..6], "FNC");
        // short names pad with X; accents and apostrophes are dropped
        assert_eq!(&CodiceFiscale::compute("Hu", "Li", d(2001, 7, 3), true, "Z210").unwrap().as_str()[..6], "HUXLIX");
        assert_eq!(&CodiceFiscale::compute("D'Angelo", "Nicolò", d(1975, 3, 3), false, "F205").unwrap().as_str()[..6], "DNGNCL");
        assert_eq!(&CodiceFiscale::compute("Viganò", "Ugo", d(1950, 8, 30), false, "F205").unwrap().as_str()[..6], "VGNGUO");
        assert_eq!(CodiceFiscale::compute("Rossi", "Mario", d(1980, 1, 1), false, "H5O1"), Err(ComputeError::Place));
        // omocodia: the rightmost digits become letters, the check is recomputed
        let c = CodiceFiscale::parse("RSSMRA80A01H501U").unwrap();
        assert_eq!(c.omocode(1).as_str(), "RSSMRA80A01H50MM");
        assert_eq!(c.omocode(0), c);
        for level in 1..=7 {
            let o = c.omocode(level);
            assert!(CodiceFiscale::parse(o.as_str()).is_ok());
            assert_eq!(o.canonical(), c);
            assert_eq!(o.birth_place(), "H501");
        }
    }
}
