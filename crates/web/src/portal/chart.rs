//! Server-side SVG charts of a result over time: the laboratory's reference range shaded,
//! out-of-range values marked (shape and colour, not colour alone), dashed lines where the unit
//! or the laboratory changed. The chart has a text alternative; the page also lists the values
//! in a table.

use super::show_date;
use super::units::{num, unit};
use crate::html::{esc, Lang};
use fascicolo_app::portal::Series;
use std::fmt::Write as _;

/// Widths of the two drawings: the wide one for screens, the narrow one for phones (its text
/// stays readable: 12 units are about 11 px on a 360-px screen, not 5 as the wide one scaled).
const WIDE: f64 = 720.0;
const NARROW: f64 = 360.0;
const H: f64 = 300.0;
const L: f64 = 56.0;
const R: f64 = 16.0;
const T: f64 = 16.0;
const B: f64 = 40.0;

/// Days since the epoch of a FHIR date/dateTime (time of day as a fraction).
fn day_of(s: &str) -> Option<f64> {
    let (r, _) = fascicolo_fhir::datetime::parse(s)?;
    Some(r.low as f64 / 86_400_000.0)
}

/// "Nice" tick step for a span.
fn step(span: f64) -> f64 {
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    mag * if n < 1.5 {
        1.0
    } else if n < 3.0 {
        2.0
    } else if n < 7.0 {
        5.0
    } else {
        10.0
    }
}

/// The SVG of one series, wide or for a phone (the page carries both; CSS shows one).
pub fn svg(lang: Lang, s: &Series, narrow: bool) -> String {
    #[allow(non_snake_case)]
    let W = if narrow { NARROW } else { WIDE };
    let (class, suffix) = if narrow { ("narrow", "-n") } else { ("wide", "") };
    let pts: Vec<(f64, &fascicolo_app::portal::Point)> = s.points.iter().filter_map(|p| Some((day_of(&p.when)?, p))).collect();
    let mut out = String::with_capacity(4096);
    let title = format!("{} — {}", s.name, lang.t("andamento nel tempo"));
    let desc = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => format!(
            "{} {} {}: {} {} {} ({}), {} {} {} ({}).",
            pts.len(),
            lang.t("valori"),
            lang.t("dal primo all'ultimo"),
            lang.t("primo"),
            num(lang, a.1.value),
            unit(&a.1.unit),
            show_date(lang, &a.1.when, false),
            lang.t("ultimo"),
            num(lang, b.1.value),
            unit(&b.1.unit),
            show_date(lang, &b.1.when, false)
        ),
        _ => lang.t("Nessun valore").to_string(),
    };
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"{class}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"chart-title{suffix} chart-desc{suffix}\" font-family=\"Titillium Web, sans-serif\" font-size=\"12\">\
         <title id=\"chart-title{suffix}\">{}</title><desc id=\"chart-desc{suffix}\">{}</desc>",
        esc(&title),
        esc(&desc)
    );
    if pts.is_empty() {
        out.push_str("</svg>");
        return out;
    }
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for (d, p) in &pts {
        x0 = x0.min(*d);
        x1 = x1.max(*d);
        for v in [Some(p.value), p.low, p.high].into_iter().flatten() {
            y0 = y0.min(v);
            y1 = y1.max(v);
        }
    }
    if (x1 - x0).abs() < 1.0 {
        x0 -= 15.0;
        x1 += 15.0;
    }
    let pad = ((y1 - y0) * 0.1).max(y1.abs() * 0.05).max(1e-3);
    y0 -= pad;
    y1 += pad;
    if y0 < 0.0 && pts.iter().all(|(_, p)| p.value >= 0.0) {
        y0 = 0.0;
    }
    let sx = |d: f64| L + (d - x0) / (x1 - x0) * (W - L - R);
    let sy = |v: f64| T + (y1 - v) / (y1 - y0) * (H - T - B);
    // reference range: a band that follows each point's own range
    let band: Vec<(f64, f64, f64)> = pts.iter().filter_map(|(d, p)| Some((*d, p.low.unwrap_or(y0.max(0.0)), p.high?))).collect();
    if !band.is_empty() {
        let mut poly = String::new();
        let first = band[0];
        let last = band[band.len() - 1];
        let mut upper: Vec<(f64, f64)> = vec![(x0, first.2)];
        upper.extend(band.iter().map(|b| (b.0, b.2)));
        upper.push((x1, last.2));
        let mut lower: Vec<(f64, f64)> = vec![(x0, first.1)];
        lower.extend(band.iter().map(|b| (b.0, b.1)));
        lower.push((x1, last.1));
        for (d, v) in upper.iter().chain(lower.iter().rev()) {
            let _ = write!(poly, "{:.1},{:.1} ", sx(*d), sy(v.clamp(y0, y1)));
        }
        let _ = write!(
            out,
            "<polygon points=\"{}\" fill=\"#d4edda\" stroke=\"#2e7d4f\" stroke-width=\"0.8\" stroke-dasharray=\"2 2\"><title>{}</title></polygon>",
            poly.trim(),
            lang.t("Intervallo di riferimento del laboratorio")
        );
    }
    // y axis and grid
    let st = step(y1 - y0);
    let mut v = (y0 / st).ceil() * st;
    while v <= y1 {
        let y = sy(v);
        let _ = write!(
            out,
            "<line x1=\"{L}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d0d7de\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#17324d\">{}</text>",
            W - R,
            L - 6.0,
            y + 4.0,
            num(lang, v)
        );
        v += st;
    }
    // x axis: years or months
    let span_days = x1 - x0;
    let year = |x: f64| fascicolo_fhir::datetime::civil_from_days(x as i64).map_or(1970, |(y, _, _)| y);
    let (ya, yb) = (year(x0.floor()), year(x1.ceil()));
    let mut ticks: Vec<(f64, String)> = Vec::new();
    if span_days > 540.0 {
        for y in (ya..=yb + 1).filter(|y| !narrow || yb - ya <= 6 || (y - ya) % 2 == 0) {
            ticks.extend(fascicolo_fhir::datetime::days_from_civil(y, 1, 1).map(|d| (d as f64, y.to_string())));
        }
    } else {
        for y in ya..=yb {
            for m in 1..=12 {
                // fewer ticks on the narrow drawing: its labels would touch
                let step_m = match (span_days > 180.0, narrow) {
                    (true, false) => 3,
                    (true, true) => 6,
                    (false, false) => 1,
                    (false, true) => 2,
                };
                if (m - 1) % step_m == 0 {
                    ticks.extend(fascicolo_fhir::datetime::days_from_civil(y, m, 1).map(|d| (d as f64, format!("{m:02}/{y}"))));
                }
            }
        }
    }
    let base = H - B;
    let _ = write!(out, "<line x1=\"{L}\" x2=\"{:.1}\" y1=\"{base}\" y2=\"{base}\" stroke=\"#17324d\"/>", W - R);
    for (d, label) in ticks.iter().filter(|(d, _)| *d >= x0 && *d <= x1) {
        let x = sx(*d);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{base}\" y2=\"{:.1}\" stroke=\"#17324d\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#17324d\">{label}</text>",
            base + 5.0,
            base + 18.0
        );
    }
    // changes of unit or laboratory
    let mut changes: Vec<usize> = s.unit_changes();
    changes.extend(s.source_changes());
    changes.sort_unstable();
    changes.dedup();
    for i in changes {
        if let Some(d) = s.points.get(i).and_then(|p| day_of(&p.when)) {
            let x = sx(d);
            let _ = write!(out, "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{T}\" y2=\"{base}\" stroke=\"#a66300\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\"/>");
        }
    }
    // the line and the points
    let mut path = String::new();
    for (i, (d, p)) in pts.iter().enumerate() {
        let _ = write!(path, "{}{:.1},{:.1} ", if i == 0 { "M" } else { "L" }, sx(*d), sy(p.value));
    }
    let _ = write!(out, "<path d=\"{}\" fill=\"none\" stroke=\"#0066cc\" stroke-width=\"2\"/>", path.trim());
    for (d, p) in &pts {
        let (x, y) = (sx(*d), sy(p.value));
        let label = format!(
            "{} {} {}{}",
            show_date(lang, &p.when, false),
            num(lang, p.value),
            unit(&p.unit),
            if p.out_of_range() { lang.t(" (fuori intervallo)") } else { "" }
        );
        if p.out_of_range() {
            let _ = write!(
                out,
                "<path class=\"out\" d=\"M{x:.1},{:.1} L{:.1},{y:.1} L{x:.1},{:.1} L{:.1},{y:.1} Z\" fill=\"#b3192e\"><title>{}</title></path>",
                y - 7.0,
                x + 7.0,
                y + 7.0,
                x - 7.0,
                esc(&label)
            );
        } else if p.taccuino {
            let _ = write!(out, "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\" fill=\"#fff\" stroke=\"#0066cc\" stroke-width=\"2\"><title>{}</title></rect>", x - 4.5, y - 4.5, esc(&label));
        } else {
            let _ = write!(out, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"5\" fill=\"#0066cc\"><title>{}</title></circle>", esc(&label));
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fascicolo_app::portal::Point;

    fn point(when: &str, value: f64, unit: &str, source: &str) -> Point {
        Point {
            when: when.into(),
            value,
            unit: unit.into(),
            low: Some(70.0),
            high: Some(99.0),
            source: source.into(),
            ..Default::default()
        }
    }

    #[test]
    fn marks_out_of_range_values_and_changes() {
        let s = Series {
            code: "2345-7".into(),
            name: "Glucosio".into(),
            panel: None,
            points: vec![
                point("2024-01-01", 90.0, "mg/dL", "A"),
                point("2025-01-01", 120.0, "mg/dL", "A"),
                point("2026-01-01", 95.0, "mg/dL", "B"),
            ],
        };
        let svg = super::svg(Lang::It, &s, false);
        assert_eq!(svg.matches("class=\"out\"").count(), 1, "one value above 99");
        assert!(svg.contains("<polygon"), "reference range shaded");
        assert_eq!(svg.matches("stroke-dasharray=\"5 3\"").count(), 1, "the laboratory changed once");
        assert!(svg.contains("<title id=\"chart-title\">Glucosio"));
        assert_eq!(svg.matches("<circle").count(), 2);
    }

    #[test]
    fn an_empty_series_is_still_a_labelled_image() {
        let s = Series { code: "x".into(), name: "X".into(), panel: None, points: vec![] };
        let svg = super::svg(Lang::En, &s, false);
        assert!(svg.contains("No values"));
        // the phone's drawing: its own ids (both are in the page), half as wide
        let narrow = super::svg(Lang::En, &s, true);
        assert!(narrow.contains("class=\"narrow\" viewBox=\"0 0 360 300\"") && narrow.contains("id=\"chart-title-n\""));
    }
}
