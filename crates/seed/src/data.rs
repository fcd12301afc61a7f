//! The code lists the region is built from (see `data/README.md` for sources and licences).

use std::sync::OnceLock;
use time::Date;

/// A municipality or foreign country as a codice fiscale birth place.
#[derive(Debug, Clone)]
pub struct Place {
    /// Codice catastale (`F205`) or foreign country code (`Z129`).
    pub code: &'static str,
    pub name: &'static str,
    /// Province (`MI`); `EE` abroad.
    pub province: &'static str,
    pub from: Date,
    pub to: Option<Date>,
}

impl Place {
    pub fn valid_on(&self, d: Date) -> bool {
        self.from <= d && self.to.is_none_or(|t| d <= t)
    }
}

/// A Lombard municipality.
#[derive(Debug, Clone)]
pub struct Town {
    pub istat: &'static str,
    pub name: &'static str,
    pub province: &'static Province,
    /// The codice catastale valid today and since when.
    pub place: Place,
}

/// A province of Lombardy with the coordinates of its chief town.
#[derive(Debug)]
pub struct Province {
    pub istat: &'static str,
    pub code: &'static str,
    pub name: &'static str,
    pub chief_town: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// How far from the chief town (degrees) the province's sites are placed: roughly the
    /// province's half-width, so that they stay inside it.
    pub radius: f64,
    /// The ATS most of the province belongs to.
    pub ats: &'static str,
}

/// Lombardy's 12 provinces (ISTAT code, abbreviation, chief town and its approximate
/// coordinates, ATS).
pub static PROVINCES: [Province; 12] = [
    Province { istat: "012", code: "VA", name: "Varese", chief_town: "Varese", lat: 45.82, lon: 8.83, radius: 0.12, ats: "030322" },
    Province { istat: "013", code: "CO", name: "Como", chief_town: "Como", lat: 45.81, lon: 9.09, radius: 0.12, ats: "030322" },
    Province { istat: "014", code: "SO", name: "Sondrio", chief_town: "Sondrio", lat: 46.17, lon: 9.87, radius: 0.2, ats: "030323" },
    Province { istat: "015", code: "MI", name: "Milano", chief_town: "Milano", lat: 45.46, lon: 9.19, radius: 0.14, ats: "030321" },
    Province { istat: "016", code: "BG", name: "Bergamo", chief_town: "Bergamo", lat: 45.70, lon: 9.67, radius: 0.18, ats: "030325" },
    Province { istat: "017", code: "BS", name: "Brescia", chief_town: "Brescia", lat: 45.54, lon: 10.22, radius: 0.25, ats: "030326" },
    Province { istat: "018", code: "PV", name: "Pavia", chief_town: "Pavia", lat: 45.19, lon: 9.16, radius: 0.2, ats: "030328" },
    Province { istat: "019", code: "CR", name: "Cremona", chief_town: "Cremona", lat: 45.13, lon: 10.02, radius: 0.2, ats: "030327" },
    Province { istat: "020", code: "MN", name: "Mantova", chief_town: "Mantova", lat: 45.16, lon: 10.79, radius: 0.2, ats: "030327" },
    Province { istat: "097", code: "LC", name: "Lecco", chief_town: "Lecco", lat: 45.85, lon: 9.39, radius: 0.08, ats: "030324" },
    Province { istat: "098", code: "LO", name: "Lodi", chief_town: "Lodi", lat: 45.31, lon: 9.50, radius: 0.08, ats: "030321" },
    Province {
        istat: "108",
        code: "MB",
        name: "Monza e della Brianza",
        chief_town: "Monza",
        lat: 45.58,
        lon: 9.27,
        radius: 0.06,
        ats: "030324",
    },
];

#[derive(Debug, Clone)]
pub struct Ats {
    pub code: &'static str,
    pub name: &'static str,
    pub seat_istat: &'static str,
}

#[derive(Debug, Clone)]
pub struct Hospital {
    /// HSP.11 code (`030703`).
    pub code: &'static str,
    pub name: &'static str,
    pub istat: &'static str,
    pub ats: &'static str,
    /// Company code (`703`): the ASST a public hospital belongs to.
    pub azienda: &'static str,
    /// `0` for an ASST head office.
    pub kind: &'static str,
    pub ownership: &'static str,
}

/// Given names and surnames by origin (`IT` or a country code).
#[derive(Debug, Default)]
pub struct Names {
    pub male: Vec<(&'static str, &'static str)>,
    pub female: Vec<(&'static str, &'static str)>,
    pub surnames: Vec<(&'static str, &'static str)>,
}

impl Names {
    pub fn of(list: &[(&'static str, &'static str)], origin: &str) -> Vec<&'static str> {
        list.iter().filter(|(o, _)| *o == origin).map(|(_, n)| *n).collect()
    }
}

#[derive(Debug)]
pub struct Data {
    /// Every municipality, past and present (birth places).
    pub municipalities: Vec<Place>,
    pub countries: Vec<Place>,
    pub towns: Vec<Town>,
    /// ISTAT code of a Lombard municipality by its codice catastale.
    pub istat_by_place: std::collections::HashMap<&'static str, &'static str>,
    pub ats: Vec<Ats>,
    pub hospitals: Vec<Hospital>,
    pub names: Names,
}

pub(crate) fn rows(text: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(|l| l.split('\t').collect())
}

fn date(s: &str) -> Option<Date> {
    Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

fn places(text: &'static str, with_province: bool) -> Vec<Place> {
    rows(text)
        .filter_map(|r| {
            let (province, from, to) = if with_province { (*r.get(2)?, r.get(3)?, r.get(4)) } else { ("EE", r.get(2)?, r.get(3)) };
            Some(Place { code: r[0], name: r.get(1)?, province, from: date(from)?, to: to.and_then(|t| date(t)) })
        })
        .collect()
}

fn fold(s: &str) -> String {
    s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

fn load() -> Data {
    let municipalities = places(include_str!("../data/municipalities.tsv"), true);
    let countries = places(include_str!("../data/countries.tsv"), false);
    let mut towns = Vec::new();
    for r in rows(include_str!("../data/istat-lombardy.tsv")) {
        let (Some(istat), Some(name)) = (r.first(), r.get(1)) else { continue };
        let Some(province) = PROVINCES.iter().find(|p| istat.starts_with(p.istat)) else { continue };
        let key = fold(name);
        let current = municipalities.iter().rfind(|m| m.to.is_none() && m.province == province.code && fold(m.name) == key);
        if let Some(place) = current {
            towns.push(Town { istat, name, province, place: place.clone() });
        }
    }
    let ats = rows(include_str!("../data/ats-lombardy.tsv"))
        .filter_map(|r| Some(Ats { code: r[0], name: r.get(1)?, seat_istat: r.get(2)? }))
        .collect();
    let hospitals = rows(include_str!("../data/hospitals-lombardy.tsv"))
        .filter_map(|r| {
            Some(Hospital {
                code: r[0],
                name: r.get(1)?,
                istat: r.get(2)?,
                ats: r.get(3)?,
                azienda: r.get(4)?,
                kind: r.get(5)?,
                ownership: r.get(6)?,
            })
        })
        .collect();
    let mut names = Names::default();
    for r in rows(include_str!("../data/names.tsv")) {
        let (Some(kind), Some(origin), Some(name)) = (r.first(), r.get(1), r.get(2)) else { continue };
        match *kind {
            "M" => names.male.push((origin, name)),
            "F" => names.female.push((origin, name)),
            _ => names.surnames.push((origin, name)),
        }
    }
    let istat_by_place = towns.iter().map(|t| (t.place.code, t.istat)).collect();
    Data { municipalities, countries, towns, istat_by_place, ats, hospitals, names }
}

/// The tables, parsed once.
pub fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(load)
}

impl Data {
    pub fn town_by_istat(&self, istat: &str) -> Option<&Town> {
        self.towns.iter().find(|t| t.istat == istat)
    }

    pub fn chief_town(&self, p: &Province) -> Option<&Town> {
        self.towns.iter().find(|t| std::ptr::eq(t.province, p) && t.name == p.chief_town)
    }

    /// The place with this code valid on `d`.
    pub fn place(&self, code: &str, d: Date) -> Option<&Place> {
        self.municipalities.iter().chain(&self.countries).find(|p| p.code == code && p.valid_on(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_are_complete() {
        let d = data();
        assert_eq!(d.ats.len(), 8);
        assert_eq!(d.hospitals.len(), 209);
        assert_eq!(d.hospitals.iter().filter(|h| h.kind == "0").count(), 26);
        // nearly every Lombard municipality found its codice catastale
        assert!(d.towns.len() > 1400, "{}", d.towns.len());
        for p in &PROVINCES {
            assert!(d.chief_town(p).is_some(), "{}", p.name);
        }
        assert_eq!(d.town_by_istat("015146").map(|t| t.place.code), Some("F205"));
        assert!(d.municipalities.len() > 19_000);
        assert!(d.countries.iter().any(|c| c.code == "Z129"));
        assert!(Names::of(&d.names.surnames, "IT").len() > 100);
    }
}
