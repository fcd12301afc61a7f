//! pagoPA identifiers of a debt position, for the platform as creditor institution: the IUV
//! (identificativo univoco di versamento) with its check digits, the 18-digit notice number
//! (numero avviso) printed on the payment notice, the creditor's 11-digit fiscal code, and the
//! payload of the notice's QR code (`PAGOPA|002|<notice>|<creditor>|<cents>`).
//!
//! Application code 3 (aux digit `3`): notice = `3` + segregation code (2) + IUV base (13) +
//! check (2), check = `(3 ‖ segregation ‖ base) mod 93` as two digits
//! (`../shared/reference/DOMAIN.md`); the IUV is the notice without its aux digit.

use std::fmt;

/// A notice number that passed its checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NoticeNumber(String);

/// Why a pagoPA identifier is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagoPaError {
    #[error("a notice number is 18 digits")]
    NoticeShape,
    #[error("only notice numbers with aux digit 3 (segregation code) are issued here")]
    AuxDigit,
    #[error("the notice number's check digits are wrong")]
    NoticeCheck,
    #[error("a segregation code is 2 digits and an IUV base 13 digits")]
    Parts,
    #[error("a creditor fiscal code is 11 digits with a valid check digit")]
    Creditor,
    #[error("an amount is between 1 cent and 999,999,999.99 euro")]
    Amount,
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// The two check digits of aux digit 3, a segregation code and an IUV base.
pub fn check_digits(segregation: &str, base: &str) -> Result<String, PagoPaError> {
    if !digits(segregation, 2) || !digits(base, 13) {
        return Err(PagoPaError::Parts);
    }
    // 18 digits fit in u128 (and in u64, but the concatenation is 16 digits: u64 is enough too)
    let n: u128 = format!("3{segregation}{base}").parse().map_err(|_| PagoPaError::Parts)?;
    Ok(format!("{:02}", n % 93))
}

impl NoticeNumber {
    /// The notice number of a new position: aux 3, the creditor's segregation code and a
    /// 13-digit base (a sequence the creditor never reuses).
    pub fn new(segregation: &str, base: &str) -> Result<Self, PagoPaError> {
        let check = check_digits(segregation, base)?;
        Ok(NoticeNumber(format!("3{segregation}{base}{check}")))
    }

    /// A notice number as typed or read from a QR code (spaces allowed between groups).
    pub fn parse(s: &str) -> Result<Self, PagoPaError> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        if !digits(&s, 18) {
            return Err(PagoPaError::NoticeShape);
        }
        if !s.starts_with('3') {
            return Err(PagoPaError::AuxDigit);
        }
        let expected = check_digits(&s[1..3], &s[3..16])?;
        if s[16..] != expected {
            return Err(PagoPaError::NoticeCheck);
        }
        Ok(NoticeNumber(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The IUV (17 digits): the notice without its aux digit.
    pub fn iuv(&self) -> &str {
        &self.0[1..]
    }

    pub fn segregation(&self) -> &str {
        &self.0[1..3]
    }

    /// As printed on a notice: groups of four (`3010 0000 0000 0001 44`).
    pub fn grouped(&self) -> String {
        self.0.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
    }
}

impl fmt::Display for NoticeNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an 11-digit fiscal code (a body's codice fiscale, the same as a VAT number) has a
/// valid check digit (Luhn over the first ten digits).
pub fn creditor_ok(code: &str) -> bool {
    if !digits(code, 11) {
        return false;
    }
    let d: Vec<u32> = code.bytes().map(|b| u32::from(b - b'0')).collect();
    let mut sum = 0;
    for (i, x) in d[..10].iter().enumerate() {
        sum += if i % 2 == 0 {
            *x
        } else {
            let y = x * 2;
            if y > 9 {
                y - 9
            } else {
                y
            }
        };
    }
    (10 - sum % 10) % 10 == d[10]
}

/// The payload of a payment notice's QR code.
pub fn qr_payload(notice: &NoticeNumber, creditor: &str, amount_cents: i64) -> Result<String, PagoPaError> {
    if !creditor_ok(creditor) {
        return Err(PagoPaError::Creditor);
    }
    if !(1..=99_999_999_999).contains(&amount_cents) {
        return Err(PagoPaError::Amount);
    }
    Ok(format!("PAGOPA|002|{notice}|{creditor}|{amount_cents}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_vector() {
        // DOMAIN.md: segregation 01, base 0000000000001 -> 301000000000000144
        let n = NoticeNumber::new("01", "0000000000001").unwrap();
        assert_eq!(n.as_str(), "301000000000000144");
        assert_eq!(n.iuv(), "01000000000000144");
        assert_eq!(n.segregation(), "01");
        assert_eq!(n.grouped(), "3010 0000 0000 0001 44");
        assert_eq!(NoticeNumber::parse("3010 0000 0000 0001 44"), Ok(n));
    }

    #[test]
    fn bad_notice_numbers_are_refused() {
        assert_eq!(NoticeNumber::parse("301000000000000145"), Err(PagoPaError::NoticeCheck));
        assert_eq!(NoticeNumber::parse("001000000000000144"), Err(PagoPaError::AuxDigit));
        assert_eq!(NoticeNumber::parse("30100000000000014"), Err(PagoPaError::NoticeShape));
        assert_eq!(NoticeNumber::parse("3010000000000001x4"), Err(PagoPaError::NoticeShape));
        assert_eq!(NoticeNumber::new("1", "0000000000001"), Err(PagoPaError::Parts));
        assert_eq!(NoticeNumber::new("01", "12345"), Err(PagoPaError::Parts));
        // every base round-trips through its check digits
        for base in ["0000000000000", "9999999999999", "1234567890123"] {
            let n = NoticeNumber::new("47", base).unwrap();
            assert_eq!(NoticeNumber::parse(n.as_str()).unwrap(), n);
        }
    }

    #[test]
    fn creditor_codes_and_the_qr_payload() {
        // Regione Lombardia's fiscal code, and a VAT number with a valid check digit
        assert!(creditor_ok("80050050154"));
        assert!(creditor_ok("12345678903"));
        assert!(!creditor_ok("12345678901"));
        assert!(!creditor_ok("8005005015"));
        let n = NoticeNumber::new("01", "0000000000001").unwrap();
        assert_eq!(qr_payload(&n, "80050050154", 3650).unwrap(), "PAGOPA|002|301000000000000144|80050050154|3650");
        assert_eq!(qr_payload(&n, "80050050155", 3650), Err(PagoPaError::Creditor));
        assert_eq!(qr_payload(&n, "80050050154", 0), Err(PagoPaError::Amount));
    }
}
