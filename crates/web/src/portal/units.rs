//! Numbers and units as people write them: a decimal comma in Italian, UCUM codes turned into
//! what a lab report prints (`mm[Hg]` is mmHg, `10*3/uL` is 10³/µL, `Cel` is °C).

use crate::html::Lang;

/// A value as people write it: no trailing zeros, at most two decimals, the decimal separator
/// of the language (a comma in Italian).
pub fn num(lang: Lang, v: f64) -> String {
    let s = if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    match lang {
        Lang::It => s.replace('.', ","),
        Lang::En => s,
    }
}

/// A whole number with its thousands grouped as people write it: 1.500 in Italian, 1,500 in
/// English.
pub fn whole(lang: Lang, n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let sep = if lang == Lang::It { '.' } else { ',' };
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(ch);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// An amount of money in euro cents as people write it: `11.362,05 €` in Italian, `€11,362.05`
/// in English.
pub fn euro(lang: Lang, cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let (units, rest) = (cents.unsigned_abs() / 100, cents.unsigned_abs() % 100);
    let units = whole(lang, units as i64);
    match lang {
        Lang::It => format!("{sign}{units},{rest:02}\u{a0}€"),
        Lang::En => format!("{sign}€{units}.{rest:02}"),
    }
}

/// A UCUM unit (or a unit someone typed) as a report prints it.
pub fn unit(u: &str) -> String {
    let u = u.trim();
    match u {
        "Cel" => return "°C".into(),
        "[degF]" => return "°F".into(),
        "1" => return String::new(),
        "[iU]/L" | "[IU]/L" => return "UI/L".into(),
        "m[iU]/L" | "m[IU]/L" | "mU/L" => return "mUI/L".into(),
        "u[iU]/mL" | "u[IU]/mL" | "uU/mL" => return "µUI/mL".into(),
        "mL/min/{1.73_m2}" | "mL/min/1.73m2" => return "mL/min/1,73 m²".into(),
        "/min" | "{beats}/min" | "{beat}/min" => return "/min".into(),
        "{breaths}/min" | "{breath}/min" => return "atti/min".into(),
        _ => {}
    }
    let mut out = String::with_capacity(u.len() + 4);
    let mut rest = u;
    while !rest.is_empty() {
        // annotations in braces are comments in UCUM, never printed
        if let Some(r) = rest.strip_prefix('{') {
            rest = r.split_once('}').map_or("", |(_, after)| after);
            continue;
        }
        // 10*3 -> 10³
        if let Some(r) = rest.strip_prefix("10*").or_else(|| rest.strip_prefix("10^")) {
            let digits: String = r.chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
            out.push_str("10");
            out.extend(digits.chars().map(superscript));
            rest = &r[digits.len()..];
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        // micro: "u" before a unit symbol at the start of a term (uL, ug, umol, /uL)
        let starts_term = out.is_empty() || out.ends_with('/') || out.ends_with('.');
        if c == 'u' && starts_term && rest[1..].starts_with(['L', 'g', 'm', 'U', 's', 'k']) {
            out.push('µ');
        } else if c == '[' {
            // [Hg] -> Hg, [in_i] -> in
            let inner = rest[1..].split_once(']').map_or(&rest[1..], |(i, _)| i);
            out.push_str(inner.split('_').next().unwrap_or(inner));
            rest = rest[1..].split_once(']').map_or("", |(_, after)| after);
            continue;
        } else if c.is_ascii_digit() && out.chars().last().is_some_and(|l| l.is_ascii_alphabetic()) {
            // m2 -> m², exponents after a unit symbol
            out.push(superscript(c));
        } else if c == '.' {
            // UCUM's product sign
            out.push('·');
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn superscript(c: char) -> char {
    match c {
        '0' => '⁰',
        '1' => '¹',
        '2' => '²',
        '3' => '³',
        '4' => '⁴',
        '5' => '⁵',
        '6' => '⁶',
        '7' => '⁷',
        '8' => '⁸',
        '9' => '⁹',
        '-' => '⁻',
        other => other,
    }
}

/// `n` things, with the singular or plural word.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_thousands_as_people_write_them() {
        assert_eq!(whole(Lang::It, 1500), "1.500");
        assert_eq!(whole(Lang::En, 1500), "1,500");
        assert_eq!(whole(Lang::It, 880), "880");
        assert_eq!(whole(Lang::It, 1_234_567), "1.234.567");
        assert_eq!(whole(Lang::It, -1500), "-1.500");
    }

    #[test]
    fn units_read_as_a_lab_report_prints_them() {
        for (code, shown) in [
            ("mm[Hg]", "mmHg"),
            ("10*3/uL", "10³/µL"),
            ("10*6/uL", "10⁶/µL"),
            ("Cel", "°C"),
            ("mg/dL", "mg/dL"),
            ("ug/L", "µg/L"),
            ("umol/L", "µmol/L"),
            ("kg/m2", "kg/m²"),
            ("mL/min/{1.73_m2}", "mL/min/1,73 m²"),
            ("{cells}/uL", "/µL"),
            ("%", "%"),
            ("fL", "fL"),
            ("pg", "pg"),
            ("[iU]/L", "UI/L"),
            ("{beats}/min", "/min"),
            ("mmol/mol", "mmol/mol"),
            ("g/dL", "g/dL"),
            ("kg", "kg"),
            ("cm", "cm"),
        ] {
            assert_eq!(unit(code), shown, "{code}");
        }
    }

    #[test]
    fn numbers_have_a_decimal_comma_in_italian() {
        assert_eq!(num(Lang::It, 5.4), "5,4");
        assert_eq!(num(Lang::En, 5.4), "5.4");
        assert_eq!(num(Lang::It, 120.0), "120");
        assert_eq!(num(Lang::It, 0.126), "0,13");
        assert_eq!(num(Lang::It, 1.10), "1,1");
        assert_eq!(count(1, "elemento", "elementi"), "1 elemento");
        assert_eq!(count(2, "elemento", "elementi"), "2 elementi");
    }
}
