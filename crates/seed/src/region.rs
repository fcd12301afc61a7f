//! The region's organisations: Regione Lombardia, the 8 ATS, the ASST and hospitals of the
//! national list, community houses and pharmacies, each with a site (Location) at plausible
//! coordinates in its province.

use crate::data::{data, Hospital, Province, Town, PROVINCES};
use rand::Rng;
use serde_json::{json, Value};

/// OID of the ASL/ATS codes (Ministero della Salute).
pub const ASL_OID: &str = "2.16.840.1.113883.2.9.4.1.1";
/// OID of the HSP.11 hospital codes.
pub const HSP_OID: &str = "2.16.840.1.113883.2.9.4.1.2";
/// The kind of an organisation in the synthetic region.
pub const ORG_KIND: &str = "urn:fascicolo:organization-kind";
const ORG_TYPE: &str = "http://terminology.hl7.org/CodeSystem/organization-type";
/// Community houses per ASST.
const COMMUNITY_HOUSES_PER_ASST: usize = 8;
/// Citizens per pharmacy (Lombardy: about 3,300).
const CITIZENS_PER_PHARMACY: u64 = 3_300;

/// A place with a name, a town and coordinates.
#[derive(Debug, Clone)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub town: &'static Town,
    pub lat: f64,
    pub lon: f64,
}

/// An ASST with its hospitals.
#[derive(Debug, Clone)]
pub struct Asst {
    pub id: String,
    pub code: &'static str,
    pub name: String,
    pub ats: &'static str,
    pub town: &'static Town,
    pub hospitals: Vec<&'static Hospital>,
}

/// Where the region's organisations are.
#[derive(Debug, Clone)]
pub struct Layout {
    pub assts: Vec<Asst>,
    pub community_houses: Vec<(usize, Site)>,
    pub pharmacies: Vec<Site>,
}

/// `ASST DELL'INSUBRIA - MILANO` → `ASST dell'Insubria - Milano`.
pub fn title_case(s: &str) -> String {
    const KEEP: [&str; 6] = ["ASST", "ATS", "IRCCS", "SPA", "SRL", "II"];
    const LOWER: [&str; 12] = ["di", "del", "della", "dei", "degli", "delle", "e", "ed", "in", "al", "alla", "da"];
    s.split(' ')
        .enumerate()
        .map(|(i, w)| {
            // codes and Roman numerals stay as written (Papa Giovanni XXIII)
            let roman = w.len() >= 2 && w != "IL" && w.chars().all(|c| matches!(c, 'I' | 'V' | 'X' | 'L'));
            if KEEP.contains(&w) || roman || w.chars().any(|c| c.is_ascii_digit()) {
                return w.to_string();
            }
            let lower = w.to_lowercase();
            if i > 0 && LOWER.contains(&lower.as_str()) {
                return lower;
            }
            // capitalise each part: dell'insubria → Dell'Insubria, s.agostino → S.Agostino
            let mut out = String::with_capacity(lower.len());
            let mut up = true;
            for c in lower.chars() {
                if up && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                    up = false;
                } else {
                    out.push(c);
                }
                if matches!(c, '\'' | '.' | '-' | '(' | '/') {
                    up = true;
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn jitter(rng: &mut impl Rng, town: &Town) -> (f64, f64) {
    let p: &Province = town.province;
    // the chief town itself: within its city; elsewhere: within the province's extent
    let r = if town.name == p.chief_town { 0.03 } else { p.radius };
    // a degree of longitude is ~0.7 of a degree of latitude here
    let (dlat, dlon) = (r, r / 0.7);
    let lat = p.lat + rng.gen_range(-dlat..dlat);
    let lon = p.lon + rng.gen_range(-dlon..dlon);
    ((lat * 1e5).round() / 1e5, (lon * 1e5).round() / 1e5)
}

fn towns_of(p: &Province) -> Vec<&'static Town> {
    data().towns.iter().filter(|t| std::ptr::eq(t.province, p)).collect()
}

/// The ASST a town's citizens are served by: one with its head office in the town's province,
/// else one of the town's ATS.
pub fn asst_for<'a>(layout: &'a Layout, town: &Town) -> &'a Asst {
    let same_province: Vec<&Asst> = layout.assts.iter().filter(|a| std::ptr::eq(a.town.province, town.province)).collect();
    let pool = if same_province.is_empty() {
        layout.assts.iter().filter(|a| a.ats == town.province.ats).collect::<Vec<_>>()
    } else {
        same_province
    };
    let i = town.istat.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
    pool.get(i % pool.len().max(1)).copied().unwrap_or(&layout.assts[0])
}

/// Lays out the region for `citizens` citizens.
pub fn layout(seed: u64, citizens: u64) -> Layout {
    let d = data();
    let mut assts: Vec<Asst> = d
        .hospitals
        .iter()
        .filter(|h| h.kind == "0")
        .filter_map(|h| {
            let town = d.town_by_istat(h.istat)?;
            Some(Asst { id: format!("asst-{}", h.code), code: h.code, name: title_case(h.name), ats: h.ats, town, hospitals: Vec::new() })
        })
        .collect();
    for h in d.hospitals.iter().filter(|h| h.kind != "0") {
        if let Some(a) = assts.iter_mut().find(|a| a.code.ends_with(h.azienda) && a.ats == h.ats) {
            a.hospitals.push(h);
        }
    }
    let mut rng = crate::rng(seed, "layout", 0);
    let mut community_houses = Vec::new();
    for (ai, a) in assts.iter().enumerate() {
        let towns = towns_of(a.town.province);
        for k in 0..COMMUNITY_HOUSES_PER_ASST {
            let town = if k == 0 { a.town } else { towns[rng.gen_range(0..towns.len())] };
            let (lat, lon) = jitter(&mut rng, town);
            community_houses.push((
                ai,
                Site { id: format!("cdc-{}-{}", a.code, k + 1), name: format!("Casa di Comunità di {}", town.name), town, lat, lon },
            ));
        }
    }
    let n_pharmacies = citizens.div_ceil(CITIZENS_PER_PHARMACY).max(12);
    let mut pharmacies = Vec::new();
    for k in 0..n_pharmacies {
        let p = &PROVINCES[usize::try_from(k).unwrap_or(0) % PROVINCES.len()];
        let towns = towns_of(p);
        let town = towns[rng.gen_range(0..towns.len())];
        let (lat, lon) = jitter(&mut rng, town);
        let surname = d.names.surnames[rng.gen_range(0..d.names.surnames.len())].1;
        let name = if rng.gen_bool(0.5) { format!("Farmacia {surname}") } else { format!("Farmacia Comunale {}", town.name) };
        pharmacies.push(Site { id: format!("farmacia-{}", k + 1), name, town, lat, lon });
    }
    Layout { assts, community_houses, pharmacies }
}

fn organization(id: &str, name: &str, kind: &str, fhir_type: &str, part_of: Option<&str>, town: Option<&Town>) -> Value {
    let mut o = json!({"resourceType": "Organization", "id": id, "active": true, "name": name,
        "type": [{"coding": [{"system": ORG_TYPE, "code": fhir_type}]}, {"coding": [{"system": ORG_KIND, "code": kind}]}]});
    if let Some(p) = part_of {
        o["partOf"] = json!({"reference": format!("Organization/{p}")});
    }
    if let Some(t) = town {
        o["address"] = json!([{"city": t.name, "district": t.province.code, "country": "IT"}]);
    }
    o
}

fn location(site: &Site, org: &str) -> Value {
    json!({"resourceType": "Location", "id": format!("loc-{}", site.id), "status": "active", "name": site.name,
        "address": {"city": site.town.name, "district": site.town.province.code, "country": "IT",
            "_city": {"extension": [{"url": fascicolo_domain::systems::ISTAT_EXT, "valueCode": site.town.istat}]}},
        "position": {"latitude": site.lat, "longitude": site.lon},
        "managingOrganization": {"reference": format!("Organization/{org}")}})
}

/// A hospital's outpatient offer: for some services of the regional catalogue, a
/// `HealthcareService` and its agenda (`Schedule`) with a weekly template. Public hospitals
/// offer more services on weekdays; accredited private ones fewer, with longer hours and
/// Saturday mornings. Which services and days is drawn from the seed.
fn offer(seed: u64, h: &Hospital, site: &Site, org: &str) -> Vec<Value> {
    use fascicolo_domain::booking::{AREA_EXT, BOOKED_UNTIL_EXT, PROVIDER_KIND_EXT, SERVICES, SERVICE_SYSTEM, TEMPLATE_EXT};
    let public = h.ownership.contains("Pubblico") || h.ownership.contains("Equiparato");
    let mut rng = crate::rng(seed, "offer", h.code.parse::<u64>().unwrap_or(0));
    let n = if public { rng.gen_range(6..=9) } else { rng.gen_range(3..=5) };
    let mut picked: Vec<usize> = (0..SERVICES.len()).collect();
    // a partial shuffle: the first n are the offer
    for i in 0..n.min(picked.len()) {
        let j = rng.gen_range(i..picked.len());
        picked.swap(i, j);
    }
    picked.truncate(n);
    picked.sort_unstable();
    let mut out = Vec::new();
    for i in picked {
        let s = &SERVICES[i];
        let compact: String = s.code.chars().filter(|c| *c != '.').collect();
        let hs = format!("hs-{}-{compact}", h.code);
        let coding = json!([{"coding": [{"system": SERVICE_SYSTEM, "code": s.code, "display": s.name_it}]}]);
        out.push(json!({"resourceType": "HealthcareService", "id": hs, "active": true, "name": s.name_it,
            "providedBy": {"reference": format!("Organization/{org}")},
            "location": [{"reference": format!("Location/loc-{}", site.id)}],
            "type": coding, "appointmentRequired": true}));
        // days: public agendas open 2 to 5 weekdays, accredited ones 4 weekdays and Saturday
        let days: Vec<String> = if public {
            let k = rng.gen_range(2..=5);
            let mut d: Vec<u8> = (1..=5).collect();
            for i in 0..k {
                let j = rng.gen_range(i..5);
                d.swap(i, j);
            }
            let mut d = d[..k].to_vec();
            d.sort_unstable();
            d.iter().map(u8::to_string).collect()
        } else {
            let skip = rng.gen_range(1..=5u8);
            (1..=6u8).filter(|d| *d != skip).map(|d| d.to_string()).collect()
        };
        let hours = if public { "08:30-12:30,14:00-16:00" } else { "08:00-13:00,14:00-18:00" };
        // the region's other bookings: the synthetic citizens are a sample of 10 million people,
        // whose appointments fill each agenda up to a day (the wait a new booking meets)
        let backlog = match (public, s.diagnostic) {
            (true, false) => rng.gen_range(7..=70),
            (true, true) => rng.gen_range(3..=55),
            (false, _) => rng.gen_range(2..=20),
        };
        let booked_until = crate::today() + time::Duration::days(backlog);
        let template = format!("days={};hours={hours};minutes={}", days.join(","), s.minutes);
        out.push(json!({"resourceType": "Schedule", "id": format!("ag-{}-{compact}", h.code), "active": true,
            "serviceType": coding,
            "actor": [{"reference": format!("Location/loc-{}", site.id)}, {"reference": format!("HealthcareService/{hs}")}],
            "comment": format!("{} - {}", s.name_it, site.name),
            "extension": [{"url": TEMPLATE_EXT, "valueString": template},
                {"url": AREA_EXT, "valueCode": h.ats},
                {"url": PROVIDER_KIND_EXT, "valueCode": if public { "public" } else { "accredited" }},
                {"url": BOOKED_UNTIL_EXT, "valueDate": booked_until.to_string()}]}));
    }
    out
}

/// Code systems of the emergency-department registry (the app layer reads the same).
pub const ER_KIND_SYSTEM: &str = "urn:fascicolo:er-kind";
pub const ER_SPACES_EXT: &str = "urn:fascicolo:er-treatment-spaces";

/// Whether a hospital runs an emergency room, of which kind and with how many treatment spaces.
/// Public hospitals and those equivalent to public (IRCCS, classified) do; private accredited
/// clinics do not. The regional hubs are DEA II, the first hospital of each ASST a DEA I,
/// children's and maternity hospitals have their own kind, the rest are first-level PS. No
/// public list gives the real kinds; this is a plausible layout, not the real network.
pub fn emergency_room(h: &Hospital, asst: Option<&Asst>) -> Option<(&'static str, u32)> {
    if !(h.kind == "1" || h.kind.starts_with('3') || h.kind == "4") {
        return None;
    }
    // research institutes for one speciality (cancer, neurology, rehabilitation...) have none
    const SPECIALISED: [&str; 13] = [
        "MONZINO",
        "TUMORI",
        "BESTA",
        "RIABIL",
        "GNOCCHI",
        "AUXOLOGICO",
        "ONCOLOGIA",
        "CENTRO MEDICO",
        "MONDINO",
        "MEDEA",
        "S.GIOVANNI DI DIO",
        "I.N.R.C.A",
        "TURRO",
    ];
    if SPECIALISED.iter().any(|k| h.name.contains(k)) {
        return None;
    }
    const HUBS: [&str; 7] = [
        "NIGUARDA",
        "PAPA GIOVANNI",
        "SPEDALI CIVILI",
        "S. MATTEO",
        "PRESIDIO OSPEDALIERO DI VARESE",
        "SAN GERARDO",
        "CA' GRANDA - OSPEDALE MAGGI",
    ];
    let name = h.name;
    let spread = u32::from(h.code.bytes().last().unwrap_or(b'0') - b'0');
    Some(if name.contains("BAMBINI") || name.contains("BUZZI") {
        ("PSP", 8 + spread % 4)
    } else if name.contains("MELLONI") || name.contains("MATERN") {
        ("PSO", 5 + spread % 3)
    } else if HUBS.iter().any(|k| name.contains(k)) {
        ("DEA2", 36 + spread)
    } else if asst.and_then(|a| a.hospitals.first()).is_some_and(|f| f.code == h.code) {
        ("DEA1", 20 + spread)
    } else {
        ("PS", 8 + spread / 2)
    })
}

/// The emergency room of a hospital: its `Location` (type ER, inside the hospital's site, with
/// its kind and treatment spaces) and its `HealthcareService`.
fn emergency_resources(site: &Site, hospital: &str, kind: &str, spaces: u32) -> [Value; 2] {
    let id = format!("loc-ps-{}", site.id.trim_start_matches("hsp-"));
    let loc = json!({"resourceType": "Location", "id": id, "status": "active", "name": format!("Pronto soccorso - {}", site.name),
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "ER", "display": "Emergency room"}]}],
        "address": {"city": site.town.name, "district": site.town.province.code, "country": "IT",
            "_city": {"extension": [{"url": fascicolo_domain::systems::ISTAT_EXT, "valueCode": site.town.istat}]}},
        "position": {"latitude": site.lat, "longitude": site.lon},
        "managingOrganization": {"reference": format!("Organization/{hospital}")},
        "partOf": {"reference": format!("Location/loc-{}", site.id)},
        "hoursOfOperation": [{"allDay": true, "daysOfWeek": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}],
        "extension": [{"url": ER_KIND_SYSTEM, "valueCode": kind}, {"url": ER_SPACES_EXT, "valueUnsignedInt": spaces}]});
    let service = json!({"resourceType": "HealthcareService", "id": format!("ps-{}", site.id.trim_start_matches("hsp-")), "active": true,
        "providedBy": {"reference": format!("Organization/{hospital}")},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-category", "code": "14", "display": "Emergency Department"}]}],
        "type": [{"coding": [{"system": ER_KIND_SYSTEM, "code": kind}]}],
        "location": [{"reference": format!("Location/{id}")}], "name": format!("Pronto soccorso - {}", site.name),
        "availableTime": [{"allDay": true, "daysOfWeek": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}]});
    [loc, service]
}

/// The FHIR resources of the region's organisations and sites.
pub fn resources(seed: u64, layout: &Layout) -> Vec<Value> {
    let d = data();
    let mut out = vec![organization("regione-lombardia", "Regione Lombardia", "region", "govt", None, d.town_by_istat("015146"))];
    for a in &d.ats {
        let mut o = organization(
            &format!("ats-{}", a.code),
            &title_case(a.name),
            "ats",
            "govt",
            Some("regione-lombardia"),
            d.town_by_istat(a.seat_istat),
        );
        o["identifier"] = json!([{"system": format!("urn:oid:{ASL_OID}"), "value": a.code}]);
        out.push(o);
    }
    let mut rng = crate::rng(seed, "sites", 0);
    for a in &layout.assts {
        let mut o = organization(&a.id, &a.name, "asst", "prov", Some(&format!("ats-{}", a.ats)), Some(a.town));
        o["identifier"] = json!([{"system": format!("urn:oid:{HSP_OID}"), "value": a.code}]);
        out.push(o);
    }
    for h in &d.hospitals {
        if h.kind == "0" {
            continue;
        }
        let Some(town) = d.town_by_istat(h.istat) else { continue };
        let id = format!("hsp-{}", h.code);
        let part_of = layout.assts.iter().find(|a| a.hospitals.iter().any(|x| x.code == h.code)).map(|a| a.id.clone());
        let mut o = organization(&id, &title_case(h.name), "hospital", "prov", part_of.as_deref(), Some(town));
        o["identifier"] = json!([{"system": format!("urn:oid:{HSP_OID}"), "value": h.code}]);
        o["extension"] = json!([{"url": "urn:fascicolo:ownership", "valueString": h.ownership}]);
        out.push(o);
        let (lat, lon) = jitter(&mut rng, town);
        let site = Site { id: id.clone(), name: title_case(h.name), town, lat, lon };
        out.push(location(&site, &id));
        if let Some((kind, spaces)) = emergency_room(h, part_of.as_deref().and_then(|a| layout.assts.iter().find(|x| x.id == a))) {
            out.extend(emergency_resources(&site, &id, kind, spaces));
        }
        out.extend(offer(seed, h, &site, &id));
    }
    for (ai, site) in &layout.community_houses {
        out.push(organization(&site.id, &site.name, "community-house", "prov", Some(&layout.assts[*ai].id), Some(site.town)));
        out.push(location(site, &site.id));
    }
    for site in &layout.pharmacies {
        out.push(organization(&site.id, &site.name, "pharmacy", "prov", None, Some(site.town)));
        out.push(location(site, &site.id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_names() {
        assert_eq!(title_case("ASST FATEBENEFRATELLI SACCO"), "ASST Fatebenefratelli Sacco");
        assert_eq!(title_case("ATS DELL'INSUBRIA"), "ATS Dell'Insubria");
        assert_eq!(title_case("OSPEDALE DI CIRCOLO - VARESE"), "Ospedale di Circolo - Varese");
        assert_eq!(title_case("OSPEDALE PAPA GIOVANNI XXIII - BG"), "Ospedale Papa Giovanni XXIII - Bg");
        assert_eq!(title_case("IL CASTELLO"), "Il Castello");
        assert_eq!(title_case("ASST SPEC.ORT.TRAUMATOLOGICO G.PINI/CTO"), "ASST Spec.Ort.Traumatologico G.Pini/Cto");
    }

    #[test]
    fn the_region_is_lombardy() {
        let l = layout(7, 100_000);
        assert_eq!(l.assts.len(), 26);
        assert!(l.assts.iter().all(|a| a.ats.starts_with("0303")));
        // nearly every public hospital belongs to an ASST
        assert!(l.assts.iter().map(|a| a.hospitals.len()).sum::<usize>() >= 60);
        assert_eq!(l.community_houses.len(), 26 * COMMUNITY_HOUSES_PER_ASST);
        assert_eq!(l.pharmacies.len(), 31);
        let r = resources(7, &l);
        // every site lies in Lombardy (45.0–46.6 N, 8.5–11.4 E)
        for loc in r.iter().filter(|v| v["resourceType"] == "Location") {
            let (lat, lon) = (loc["position"]["latitude"].as_f64().unwrap(), loc["position"]["longitude"].as_f64().unwrap());
            assert!((44.7..46.7).contains(&lat) && (8.4..11.5).contains(&lon), "{loc}");
        }
        assert_eq!(r.iter().filter(|v| v["type"][1]["coding"][0]["code"] == "ats").count(), 8);
        // emergency rooms: public and equivalent hospitals, each a Location of type ER inside its
        // hospital's site with a HealthcareService; hubs, children's and maternity ones among them
        let ers: Vec<&Value> = r.iter().filter(|v| v["resourceType"] == "Location" && v["type"][0]["coding"][0]["code"] == "ER").collect();
        assert!((90..=100).contains(&ers.len()), "{}", ers.len());
        let is_er_service = |v: &&Value| v["resourceType"] == "HealthcareService" && v["id"].as_str().unwrap().starts_with("ps-");
        assert_eq!(r.iter().filter(is_er_service).count(), ers.len());
        // the outpatient offer: every hospital offers some services, each with its agenda, whose
        // template parses and names the hospital's ATS as guarantee area
        let agendas: Vec<&Value> = r.iter().filter(|v| v["resourceType"] == "Schedule").collect();
        let services = r.iter().filter(|v| v["resourceType"] == "HealthcareService").count() - ers.len();
        assert_eq!(agendas.len(), services);
        assert!(agendas.len() > 500, "{}", agendas.len());
        for a in &agendas {
            let t = a["extension"][0]["valueString"].as_str().unwrap();
            assert!(fascicolo_domain::booking::Template::parse(t).is_ok(), "{t}");
            assert!(a["extension"][1]["valueCode"].as_str().unwrap().starts_with("0303"));
            let code = a["serviceType"][0]["coding"][0]["code"].as_str().unwrap();
            assert!(fascicolo_domain::booking::service(code).is_some());
        }
        assert!(agendas.iter().any(|a| a["extension"][2]["valueCode"] == "accredited"));
        assert!(agendas.iter().any(|a| a["extension"][2]["valueCode"] == "public"));
        for kind in ["PS", "DEA1", "DEA2", "PSP", "PSO"] {
            assert!(ers.iter().any(|e| e["extension"][0]["valueCode"] == kind), "no {kind}");
        }
        let niguarda = ers.iter().find(|e| e["name"].as_str().unwrap().contains("Niguarda")).unwrap();
        assert_eq!(niguarda["extension"][0]["valueCode"], "DEA2");
        assert!(niguarda["extension"][1]["valueUnsignedInt"].as_u64().unwrap() >= 36);
        // the same seed lays out the same region
        assert_eq!(resources(7, &layout(7, 100_000)), r);
    }
}
