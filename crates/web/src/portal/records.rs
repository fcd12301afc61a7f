//! Home, results and charts, timeline, vaccinations, prescriptions, appointments, care plans.

use super::units::{num, unit};
use super::{app_error, ctx, layout, optional, query_map, show_date, trusted, PageResult, Relation};
use crate::html::Lang;
use crate::i18n::n_;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use fascicolo_app::portal::{DocFilter, DocSummary, Portal, Series};
use maud::{html, Markup};
use serde_json::Value;

fn text_of(cc: &Value) -> String {
    cc["text"].as_str().or(cc["coding"][0]["display"].as_str()).or(cc["coding"][0]["code"].as_str()).unwrap_or_default().to_string()
}

/// The active ingredient of a prescribed medicine: the display of its ATC coding.
fn ingredient(m: &Value) -> Option<String> {
    m["medicationCodeableConcept"]["coding"]
        .as_array()?
        .iter()
        .find(|c| c["system"].as_str().is_some_and(|s| s.ends_with("/atc") || s.ends_with("2.16.840.1.113883.6.73")))
        .and_then(|c| c["display"].as_str())
        .map(String::from)
}

fn med_name(m: &Value) -> String {
    let t = text_of(&m["medicationCodeableConcept"]);
    if t.is_empty() {
        m["medicationReference"]["display"].as_str().unwrap_or_default().to_string()
    } else {
        t
    }
}

/// How many days a drug prescription can be dispensed, the day it was written excluded
/// (the national rule for the ricetta farmaceutica).
pub const DRUG_PRESCRIPTION_DAYS: i64 = 30;

/// The last day a drug prescription written at `authored` can be dispensed.
pub fn drug_prescription_expiry(authored: &str) -> Option<time::Date> {
    fascicolo_domain::rome::date_of(authored)?.checked_add(time::Duration::days(DRUG_PRESCRIPTION_DAYS))
}

/// A coded route or site of administration in the reader's words (producers often send the
/// English display of the HL7 code); other codes as the producer wrote them.
fn administration_words(lang: Lang, cc: &Value) -> String {
    let coding = &cc["coding"][0];
    let system = coding["system"].as_str().unwrap_or_default();
    let code = coding["code"].as_str().unwrap_or_default();
    let words = if system.ends_with("v3-RouteOfAdministration") || system.ends_with("2.16.840.1.113883.5.112") {
        match code {
            "IM" | "IMINJ" => Some(("Intramuscolare", "Intramuscular")),
            "SC" | "SQ" | "SCINJ" => Some(("Sottocutanea", "Subcutaneous")),
            "ID" | "IDINJ" => Some(("Intradermica", "Intradermal")),
            "IV" | "IVINJ" => Some(("Endovenosa", "Intravenous")),
            "PO" => Some(("Orale", "Oral")),
            "NASAL" | "NASINHL" | "IN" => Some(("Nasale", "Nasal")),
            _ => None,
        }
    } else if system.ends_with("v3-ActSite") || system.ends_with("2.16.840.1.113883.5.1052") {
        match code {
            "LA" => Some(("Braccio sinistro", "Left arm")),
            "RA" => Some(("Braccio destro", "Right arm")),
            "LD" => Some(("Deltoide sinistro", "Left deltoid")),
            "RD" => Some(("Deltoide destro", "Right deltoid")),
            "LT" => Some(("Coscia sinistra", "Left thigh")),
            "RT" => Some(("Coscia destra", "Right thigh")),
            "LVL" => Some(("Vasto laterale sinistro", "Left vastus lateralis")),
            "RVL" => Some(("Vasto laterale destro", "Right vastus lateralis")),
            "LG" => Some(("Gluteo sinistro", "Left gluteus")),
            "RG" => Some(("Gluteo destro", "Right gluteus")),
            _ => None,
        }
    } else {
        None
    };
    match words {
        Some((it, en)) => lang.pick(it, en).to_string(),
        None => {
            let t = text_of(cc);
            if t.is_empty() {
                "—".into()
            } else {
                t
            }
        }
    }
}

/// A number of packs, in words.
fn packs(lang: Lang, q: f64) -> String {
    let one = (q - 1.0).abs() < f64::EPSILON;
    format!("{} {}", num(lang, q), if one { lang.t("confezione") } else { lang.t("confezioni") })
}

/// An item's FHIR status in words, for its kind (never the raw code): a drug prescription
/// still "active" past its validity is expired, whatever the record says.
fn status_label(lang: Lang, rt: &str, v: &Value) -> String {
    let code = v["status"].as_str().unwrap_or_default();
    match (rt, code) {
        ("MedicationRequest", "active") => match v["authoredOn"].as_str().and_then(drug_prescription_expiry) {
            Some(last) if last < fascicolo_domain::rome::today() => {
                format!("{} {}", lang.t("Scaduta il"), show_date(lang, &last.to_string(), false))
            }
            Some(last) => format!("{} {}", lang.t("Da ritirare entro il"), show_date(lang, &last.to_string(), false)),
            None => lang.t("Da ritirare").to_string(),
        },
        ("MedicationRequest", "completed") => lang.t("Erogata").to_string(),
        ("ServiceRequest", "active") => lang.t("Da prenotare").to_string(),
        ("ServiceRequest", "completed") => lang.t("Eseguita").to_string(),
        ("MedicationRequest" | "ServiceRequest", "cancelled" | "revoked") => lang.t("Annullata").to_string(),
        ("MedicationRequest" | "ServiceRequest", "stopped" | "on-hold") => lang.t("Sospesa").to_string(),
        ("Immunization", "completed") => lang.t("Somministrata").to_string(),
        ("Immunization", "not-done") => lang.t("Non eseguita").to_string(),
        ("Appointment", "booked") => lang.t("Prenotato").to_string(),
        ("Appointment", "cancelled") => lang.t("Annullato").to_string(),
        ("Appointment", "fulfilled") => lang.t("Eseguito").to_string(),
        ("Appointment", "noshow") => lang.t("Mancata presentazione").to_string(),
        ("Appointment", "arrived" | "checked-in") => lang.t("In corso").to_string(),
        ("Appointment", "proposed" | "pending") => lang.t("Da confermare").to_string(),
        ("Appointment", "waitlist") => lang.t("In lista d'attesa").to_string(),
        ("CarePlan", "active") => lang.t("Attivo").to_string(),
        ("CarePlan", "completed") => lang.t("Concluso").to_string(),
        ("CarePlan", "revoked") => lang.t("Interrotto").to_string(),
        ("CarePlan", "on-hold") => lang.t("Sospeso").to_string(),
        (_, "draft") => lang.t("Bozza").to_string(),
        (_, "entered-in-error") => lang.t("Annullato per errore").to_string(),
        _ => lang.t("Stato non indicato").to_string(),
    }
}

/// The prescription's NRE (group identifier) if it has one.
fn nre_of(m: &Value) -> Option<String> {
    m["groupIdentifier"]["value"].as_str().map(String::from)
}

/// `GET /`: the signed-in citizen's home; the public landing page otherwise.
pub async fn home(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let signed_in = crate::auth_web::session_checked(&state, &headers).await;
    if let Err(e) = &signed_in {
        let (lang, _) = super::lang_of(&headers, raw.as_deref());
        return Ok(app_error(&state, lang, e));
    }
    if signed_in.is_ok_and(|s| s.is_none()) {
        let (lang, set) = super::lang_of(&headers, raw.as_deref());
        return Ok(landing(&state, lang, set));
    }
    let c = ctx(&state, &headers, "/", raw.as_deref()).await?;
    let portal = Portal::new(state.fhir.clone());
    let seen = portal.last_seen(c.actor()).await.map_err(c.fail())?;
    let docs = if c.allows("/documenti") {
        portal.documents(c.actor(), &DocFilter::default()).await.map_err(c.fail())?
    } else {
        fascicolo_app::portal::DocList::default()
    };
    let ov = optional(portal.overview(c.actor()).await).map_err(c.fail())?.unwrap_or_default();
    // the newest documents; marked when published since the last visit to the list
    let latest: Vec<_> = docs.items.iter().take(4).collect();
    let new_count = docs.items.iter().filter(|d| d.is_new(seen)).count();
    let body = html! {
        // greeted is the person signed in; another's record is named as such
        @match c.relation {
            Relation::Own => { h1 { (c.t("Ciao")) ", " (c.record_name) } }
            Relation::Child => { h1 { (c.t("Il fascicolo di")) " " (c.record_name) } }
            Relation::Delegator => { h1 { (c.t("Il fascicolo di")) " " (c.record_name) " " span.muted { "(" (c.t("su delega")) ")" } } }
        }
        @if ov.consent == Some(false) && c.relation != Relation::Delegator {
            div.alert.warn role="note" {
                h2 style="margin-top:0" { (c.t("Da fare")) }
                p { (c.t("Non hai dato il consenso alla consultazione: i medici che ti curano non possono vedere i tuoi documenti, nemmeno il tuo medico di famiglia.")) }
                a.btn href="/privacy" { (c.t("Decidi sul consenso")) }
            }
        }
        // an emergency opening of the record in the last 30 days: said first, with who and why
        @if !ov.emergencies.is_empty() && c.allows("/privacy") {
            div.alert.error role="note" #recent-emergency {
                h2 style="margin-top:0" { (c.t("Accessi in emergenza")) }
                p { (c.t("Negli ultimi 30 giorni il fascicolo è stato aperto in emergenza, senza consenso:")) }
                ul { @for a in ov.emergencies.iter().take(3) {
                    li {
                        strong { (show_date(c.lang, &a.when, true)) } " — " (super::privacy::who_label(&c, &state, a))
                        @if !a.role.is_empty() && !a.who.is_empty() && super::privacy::who_label(&c, &state, a) != super::privacy::role_label(&c, &a.role, &a.who_gender) { " (" (super::privacy::role_label(&c, &a.role, &a.who_gender)) ")" }
                        @if !a.organization.is_empty() { ", " (a.organization) }
                        @if !a.reason.is_empty() { ": " em { "«" (a.reason) "»" } }
                    }
                } }
                a.btn href="/privacy/accessi?emergenza=1" { (c.t("Vedi nel registro degli accessi")) }
            }
        }
        ul.cards {
            @if c.allows("/documenti") { li.card {
                h2 { a href="/documenti" { (c.t("Documenti")) } }
                p { span.big { (docs.all) } " " (c.t("nel fascicolo")) }
                @if new_count > 0 { p { span.badge.new { (c.t("Nuovi dall'ultima visita")) ": " (new_count) } } }
                @if !latest.is_empty() {
                    h3.muted style="font-size:1rem;margin:.5rem 0 0" { (c.t("I più recenti")) }
                    ul { @for d in &latest { li { a href={ "/documenti/" (d.id) } { (super::doc_name(c.lang, &d.title)) } " " span.muted { (show_date(c.lang, &d.date, false)) }
                        @if d.is_new(seen) { " " span.badge.new { (c.t("Nuovo")) } } } } }
                }
            } }
            @if c.allows("/appuntamenti") { li.card {
                h2 { a href="/appuntamenti" { (c.t("Prossimi appuntamenti")) } }
                @if ov.appointments.is_empty() { p.muted { (c.t("Nessun appuntamento in programma.")) } }
                ul { @for a in ov.appointments.iter().take(3) {
                    li { strong { (show_date(c.lang, a["start"].as_str().unwrap_or_default(), true)) } " — " (a["description"].as_str().unwrap_or_default()) }
                } }
            } }
            // a count only where the person may see what it counts (a delegation may not cover it)
            @if c.allows("/prescrizioni") { li.card {
                h2 { a href="/prescrizioni" { (c.t("Prescrizioni attive")) } }
                // "active" in the record, and still within its validity
                @let valid: Vec<&Value> = ov.prescriptions.iter()
                    .filter(|m| m["authoredOn"].as_str().and_then(drug_prescription_expiry).is_none_or(|last| last >= fascicolo_domain::rome::today()))
                    .collect();
                p { span.big { (valid.len()) } }
                ul { @for m in valid.iter().take(3) { li { (med_name(m)) @if let Some(n) = nre_of(m) { " " span.muted { "NRE " (n) } } } } }
            } }
            @if c.allows("/vaccinazioni") { li.card {
                h2 { a href="/vaccinazioni" { (c.t("Vaccinazioni")) } }
                p { span.big { (ov.immunizations.len()) } " " (c.t("registrate")) }
                @if let Some(last) = ov.immunizations.first() {
                    p { (c.t("Ultima")) ": " (text_of(&last["vaccineCode"])) " — " (show_date(c.lang, last["occurrenceDateTime"].as_str().unwrap_or_default(), false)) }
                }
            } }
            @if !ov.care_plans.is_empty() && c.allows("/piano-di-cura") {
                li.card {
                    h2 { a href="/piano-di-cura" { (c.t("Piani di cura")) } }
                    ul { @for p in &ov.care_plans { li { (p["title"].as_str().unwrap_or_else(|| p["description"].as_str().unwrap_or_default())) } } }
                }
            }
            @if c.allows("/privacy") { li.card {
                h2 { a href="/privacy" { "Privacy" } }
                p { @match ov.consent {
                    Some(true) => (c.t("Consenso alla consultazione: dato.")),
                    Some(false) => (c.t("Consenso alla consultazione: non dato.")),
                    None => (c.t("Le scelte sulla privacy spettano al titolare del fascicolo.")),
                } }
                p { a href="/privacy/accessi" { (c.t("Chi ha consultato il fascicolo")) } }
            } }
        }
    };
    Ok(layout(&c, c.t("Home"), body))
}

fn landing(state: &AppState, lang: crate::html::Lang, set: Option<crate::html::Lang>) -> Response {
    let body = html! {
        h1 { (lang.t("Il tuo Fascicolo Sanitario Elettronico")) }
        p.lead { (lang.t("Referti, lettere di dimissione, vaccinazioni, prescrizioni e i tuoi dati sanitari, sempre con te. Decidi tu chi può vederli.")) }
        p { a.btn href="/auth/login?next=/" { (lang.t("Accedi al Fascicolo")) } }
        @if state.auth.demo {
            div.alert role="note" { p { (lang.t("Ambiente dimostrativo: l'accesso avviene con un fornitore di identità di prova che ti fa scegliere una persona sintetica. Non inserire dati reali.")) } }
        }
        h2 { (lang.t("Servizi senza autenticazione")) }
        ul #public-services {
            li { a href=(if lang == crate::html::Lang::En { "/tempi-di-attesa?lang=en" } else { "/tempi-di-attesa" }) { (lang.t("Tempi di attesa")) } " — " (lang.t("il primo posto libero per visite ed esami, per ASST.")) }
            li { a href=(if lang == crate::html::Lang::En { "/pronto-soccorso?lang=en" } else { "/pronto-soccorso" }) { (lang.t("Pronto soccorso in tempo reale")) } " — " (lang.t("quante persone attendono, per codice di triage.")) }
        }
        h2 { (lang.t("Per chi sviluppa e per le strutture")) }
        ul {
            li { a href="/fhir/r4/metadata" { "API FHIR R4" } " " (lang.t("con SMART on FHIR: le stesse regole di privacy del portale.")) }
            li { code { "/ingest/v1" } " — " (lang.t("pubblicazione dei documenti CDA2 (gateway FSE 2.0).")) }
        }
    };
    let markup = html! {
        (maud::DOCTYPE)
        html lang=(lang.code()) {
            (super::head(lang, lang.t("Benvenuto")))
            body { (super::header_bands(lang, "/", state.auth.demo)) main #main tabindex="-1" { (body) } (super::footer(lang)) }
        }
    };
    super::finish(set, axum::http::StatusCode::OK, markup)
}

fn flag_badge(lang: Lang, p: &fascicolo_app::portal::Point) -> Markup {
    html! { @if p.out_of_range() {
        span.badge.out { @match (p.high, p.low) {
            (Some(h), _) if p.value > h => (lang.t("Alto")),
            (_, Some(l)) if p.value < l => (lang.t("Basso")),
            _ => (lang.t("Fuori intervallo")),
        } }
    } }
}

fn range_text(lang: Lang, p: &fascicolo_app::portal::Point) -> String {
    if let Some(t) = &p.range_text {
        // strict bounds as the laboratory wrote them: "< 200", never "≤ 200"
        return t.split(' ').map(|w| w.parse::<f64>().map_or_else(|_| unit(w), |v| num(lang, v))).collect::<Vec<_>>().join(" ");
    }
    match (p.low, p.high) {
        (Some(l), Some(h)) => format!("{} – {}", num(lang, l), num(lang, h)),
        (Some(l), None) => format!("≥ {}", num(lang, l)),
        (None, Some(h)) => format!("≤ {}", num(lang, h)),
        _ => "—".into(),
    }
}

/// One row per result, a panel's components (blood pressure) in one row under the panel's
/// code: (code, name, series in panel order).
fn result_rows(series: &[Series]) -> Vec<(String, String, Vec<&Series>)> {
    let mut rows: Vec<(String, String, Vec<&Series>)> = Vec::new();
    for s in series {
        match &s.panel {
            None => rows.push((s.code.clone(), s.name.clone(), vec![s])),
            Some(panel) => match rows.iter_mut().find(|r| r.0 == panel.code) {
                Some(r) => r.2.push(s),
                None => rows.push((panel.code.clone(), panel.name.clone(), vec![s])),
            },
        }
    }
    for r in &mut rows {
        r.2.sort_by_key(|s| s.panel.as_ref().map_or(0, |p| p.position));
    }
    rows.sort_by_key(|r| r.1.to_lowercase());
    rows
}

/// Where a record's pages link: the citizen's own pages, or a clinician's view of one record.
pub(super) struct Links {
    /// Prefix of the record's pages ("" for the citizen's own).
    pub base: String,
    /// Prefix of a document's page.
    pub docs: &'static str,
    /// Whether items (a vaccination, a prescription) have pages of their own.
    pub items: bool,
}

impl Links {
    fn citizen() -> Self {
        Links { base: String::new(), docs: "/documenti/", items: true }
    }
    pub(super) fn clinician(patient: &str) -> Self {
        Links { base: format!("/professionista/assistiti/{patient}"), docs: "/professionista/documenti/", items: false }
    }
}

/// A result's name in the page's language: the Taccuino's own measurements (and blood
/// pressure's two components) have their English names; a laboratory's result keeps the name
/// the laboratory wrote.
pub(super) fn result_name(lang: Lang, code: &str, written: &str) -> String {
    if lang == Lang::It {
        return written.to_string();
    }
    let own = fascicolo_app::portal::MeasureKind::ALL.into_iter().map(|k| k.info()).find(|i| i.0 == code).map(|i| i.2);
    let part = match code {
        "8480-6" => Some("Systolic blood pressure"),
        "8462-4" => Some("Diastolic blood pressure"),
        _ => None,
    };
    own.or(part).unwrap_or(written).to_string()
}

/// The groups the results page shows, as a doctor reads a report: (heading, LOINC codes). A
/// result in no group goes under "Altri esami".
const RESULT_GROUPS: [(&str, &[&str]); 8] = [
    (n_("Glicemia e diabete"), &["2345-7", "1558-6", "4548-4", "17856-6", "15074-8"]),
    (n_("Profilo lipidico"), &["2093-3", "2085-9", "13457-7", "18262-6", "2089-1", "2571-8"]),
    (n_("Emocromo"), &["718-7", "6690-2", "777-3", "789-8", "4544-3", "787-2", "785-6", "786-4", "770-8", "731-0"]),
    (n_("Funzionalità renale ed elettroliti"), &["2160-0", "33914-3", "62238-1", "3094-0", "2823-3", "2951-2", "2075-0"]),
    (n_("Funzionalità epatica"), &["1742-6", "1920-8", "2324-2", "1975-2", "6768-6"]),
    (n_("Tiroide"), &["3016-3", "3024-7", "3026-2"]),
    (
        n_("Parametri vitali e misure"),
        &["85354-9", "8480-6", "8462-4", "29463-7", "8302-2", "39156-5", "8867-4", "8310-5", "2708-6", "59408-5", "9279-1"],
    ),
    (n_("Altri esami"), &[]),
];

/// The index in [`RESULT_GROUPS`] of a result's group (the last one for any other code).
fn group_of(code: &str) -> usize {
    RESULT_GROUPS.iter().position(|(_, codes)| codes.contains(&code)).unwrap_or(RESULT_GROUPS.len() - 1)
}

/// The results, by group (blood sugar, lipids, blood count...), each a table: one row per
/// result (a panel's components together), its latest value, range, date and change since the
/// one before.
pub(super) fn results_table(lang: Lang, series: &[Series], links: &Links) -> Markup {
    let rows = result_rows(series);
    let mut groups: Vec<Vec<&(String, String, Vec<&Series>)>> = vec![Vec::new(); RESULT_GROUPS.len()];
    for r in &rows {
        groups[group_of(&r.0)].push(r);
    }
    html! {
    p.muted { (rows.len()) " " (if rows.len() == 1 { lang.t("esame") } else { lang.t("esami") }) }
    @for (g, members) in groups.iter().enumerate().filter(|(_, m)| !m.is_empty()) {
    section.results-group aria-labelledby={ "group-" (g) } {
    h2 #{ "group-" (g) } { (lang.t(RESULT_GROUPS[g].0)) }
    div.scroll { table.stack {
        thead { tr { th scope="col" { (lang.t("Esame")) } th scope="col" { (lang.t("Ultimo valore")) } th scope="col" { (lang.t("Intervallo")) } th scope="col" { (lang.t("Data")) } th scope="col" { (lang.t("Rispetto al precedente")) } th scope="col" { (lang.t("Valori")) } } }
        tbody { @for (code, name, parts) in members.iter().copied() { @if let Some(p) = parts.first().and_then(|s| s.last()) {
                tr {
                    th scope="row" { a href={ (links.base) "/risultati/" (code) } { (result_name(lang, code, name)) } }
                    td.num data-label=(lang.t("Ultimo valore")) {
                        // a panel's components together, as people write them: 131/84 mmHg
                        (parts.iter().filter_map(|s| s.last()).map(|p| num(lang, p.value)).collect::<Vec<_>>().join("/"))
                        " " (unit(&p.unit))
                        @for q in parts.iter().filter_map(|s| s.last()) { " " (flag_badge(lang, q)) }
                    }
                    td.num data-label=(lang.t("Intervallo")) { (parts.iter().filter_map(|s| s.last()).map(|p| range_text(lang, p)).collect::<Vec<_>>().join(" / ")) }
                    td data-label=(lang.t("Data")) { (show_date(lang, &p.when, false)) }
                    td.num data-label=(lang.t("Rispetto al precedente")) {
                        @let changes: Vec<Option<String>> = parts.iter().map(|s| change_since(lang, s)).collect();
                        @if changes.iter().all(Option::is_some) {
                            (changes.into_iter().flatten().collect::<Vec<_>>().join(" / "))
                            @if let Some(prev) = parts[0].points.len().checked_sub(2).and_then(|i| parts[0].points.get(i)) {
                                br; span.muted { (lang.t("dal")) " " (show_date(lang, &prev.when, false)) }
                            }
                        } @else { span.muted { "—" } }
                    }
                    td data-label=(lang.t("Valori")) { (parts.iter().map(|s| s.points.len()).max().unwrap_or(0)) }
                }
        } } }
    } }
    }
    }
    }
}

/// `GET /risultati`: every coded result with its latest value.
pub async fn results(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/risultati", raw.as_deref()).await?;
    let series = Portal::new(state.fhir.clone()).results(c.actor(), None, false).await.map_err(c.fail())?;
    let body = html! {
        h1 { (c.t("Risultati ed esami")) }
        p.lead { (c.t("Ogni valore misurato, dai referti di laboratorio e dal tuo Taccuino. Apri un esame per vederne l'andamento nel tempo con l'intervallo di riferimento del laboratorio.")) }
        @if series.is_empty() {
            div.alert { p { (c.t("Non ci sono ancora risultati. Quando un laboratorio pubblica un referto, i valori compaiono qui.")) } }
        } @else {
            (results_table(c.lang, &series, &Links::citizen()))
        }
        p { a.btn.secondary href="/taccuino" { (c.t("Aggiungi una misura nel Taccuino")) } }
    };
    Ok(layout(&c, c.t("Risultati"), body))
}

/// How the latest value compares with the one before it: "↑ +12", "↓ −0,3", "= 0". Nothing
/// when there is no earlier value or the unit changed (the two are not comparable as numbers).
fn change_since(lang: Lang, s: &Series) -> Option<String> {
    let [.., prev, last] = s.points.as_slice() else { return None };
    if prev.unit != last.unit {
        return None;
    }
    let d = last.value - prev.value;
    Some(if d.abs() < 1e-9 {
        "= 0".to_string()
    } else if d > 0.0 {
        format!("↑ +{}", num(lang, d))
    } else {
        format!("↓ −{}", num(lang, -d))
    })
}

pub(super) fn code_param(code: &str) -> String {
    if code.contains('|') {
        code.to_string()
    } else {
        format!("http://loinc.org|{code}")
    }
}

/// What the chart's marks mean: only the marks this chart draws.
fn legend(lang: Lang, s: &Series) -> String {
    let mut parts: Vec<&str> = vec![lang.t("Cerchio blu: valore del laboratorio.")];
    if !s.points.iter().any(|p| !p.taccuino && !p.out_of_range()) {
        parts.clear();
    }
    if s.points.iter().any(|p| p.high.is_some()) {
        parts.push(lang.t("Area verde: intervallo di riferimento del laboratorio."));
    }
    if s.points.iter().any(|p| p.out_of_range()) {
        parts.push(lang.t("Rombo rosso: valore fuori intervallo."));
    }
    if s.points.iter().any(|p| p.taccuino && !p.out_of_range()) {
        parts.push(lang.t("Quadrato bianco: misura del Taccuino."));
    }
    if !s.unit_changes().is_empty() || !s.source_changes().is_empty() {
        parts.push(lang.t("Linea tratteggiata arancione: cambio di unità o di laboratorio."));
    }
    parts.join(" ")
}

/// The series a chart shows for a code: the result's own, or a panel's components in order
/// (a panel search, blood pressure, returns them).
pub(super) fn series_of<'a>(all: &'a [Series], code: &str) -> Vec<&'a Series> {
    let exact: Vec<&Series> = all.iter().filter(|s| s.code == code).collect();
    if exact.is_empty() {
        let mut parts: Vec<&Series> = all.iter().collect();
        parts.sort_by_key(|s| s.panel.as_ref().map_or(0, |p| p.position));
        parts
    } else {
        exact
    }
}

/// A chart's title: the panel's name, or the result's.
pub(super) fn chart_title(lang: Lang, series: &[&Series]) -> String {
    match series.first().and_then(|s| s.panel.as_ref()) {
        Some(panel) if series.len() > 1 => result_name(lang, &panel.code, &panel.name),
        _ => series.iter().map(|s| result_name(lang, &s.code, &s.name)).collect::<Vec<_>>().join(" / "),
    }
}

/// A chart page's content: for each series its drawing (wide and narrow), what the marks mean,
/// warnings on changed units or laboratories, and every value in a table.
pub(super) fn chart_body(lang: Lang, series: &[&Series], title: &str, links: &Links) -> Markup {
    html! {
        p { a href={ (links.base) "/risultati" } { "‹ " (lang.t("Tutti i risultati")) } }
        h1 { (title) }
        @for s in series {
            @if series.len() > 1 { h2 { (result_name(lang, &s.code, &s.name)) } }
            @let units = s.unit_changes();
            @let sources = s.source_changes();
            @if !units.is_empty() {
                div.alert.warn role="note" { p { (lang.t("Attenzione: l'unità di misura è cambiata nel tempo (linea tratteggiata arancione). Confronta i valori con il loro intervallo di riferimento.")) } }
            }
            @if !sources.is_empty() {
                div.alert.warn role="note" { p { (lang.t("I valori vengono da laboratori diversi (linea tratteggiata arancione dove cambia il laboratorio): metodi e intervalli di riferimento possono differire.")) } }
            }
            figure.chart {
                (trusted(super::chart::svg(lang, s, false)))
                (trusted(super::chart::svg(lang, s, true)))
                figcaption.muted { (legend(lang, s)) }
            }
            div.scroll { table.stack {
                caption.muted style="text-align:left" { (lang.t("Tutti i valori")) }
                thead { tr { th scope="col" { (lang.t("Data")) } th scope="col" { (lang.t("Valore")) } th scope="col" { (lang.t("Intervallo")) } th scope="col" { (lang.t("Fonte")) } } }
                tbody { @for (i, p) in s.points.iter().enumerate().rev() {
                    tr {
                        td data-label=(lang.t("Data")) { (show_date(lang, &p.when, false)) }
                        td data-label=(lang.t("Valore")) { span.num { (num(lang, p.value)) " " (unit(&p.unit)) } " " (flag_badge(lang, p)) @if units.contains(&i) { " " span.badge { (lang.t("unità cambiata")) } } }
                        td.num data-label=(lang.t("Intervallo")) { (range_text(lang, p)) }
                        td data-label=(lang.t("Fonte")) {
                            @if let Some(d) = &p.document { a href={ (links.docs) (d.trim_start_matches("DocumentReference/")) } { (if p.source.is_empty() { lang.t("Referto").to_string() } else { p.source.clone() }) } }
                            @else { (p.source) }
                            @if sources.contains(&i) { " " span.badge { (lang.t("laboratorio cambiato")) } }
                        }
                    }
                } }
            } }
        }
    }
}

/// `GET /risultati/{code}`: the chart of one result.
pub async fn chart(State(state): State<AppState>, Path(code): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let path = format!("/risultati/{code}");
    let c = ctx(&state, &headers, &path, raw.as_deref()).await?;
    if code.is_empty() || code.len() > 64 || !code.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.') {
        return Err(c.fail()(fascicolo_app::AppError::NotFound("code".into())));
    }
    let all = Portal::new(state.fhir.clone()).results(c.actor(), Some(&code_param(&code)), true).await.map_err(c.fail())?;
    let series = series_of(&all, &code);
    if series.is_empty() {
        return Err(c.fail()(fascicolo_app::AppError::NotFound("no values".into())));
    }
    let title = chart_title(c.lang, &series);
    let body = chart_body(c.lang, &series, &title, &Links::citizen());
    Ok(layout(&c, &title, body))
}

/// What a timeline is drawn from (each list empty when not asked for or not allowed).
#[derive(Default)]
pub(super) struct TimelineData {
    pub documents: Vec<DocSummary>,
    pub encounters: Vec<Value>,
    pub immunizations: Vec<Value>,
    pub prescriptions: Vec<Value>,
}

/// The timeline's kinds: (filter value, label).
const TIMELINE_KINDS: [(&str, &str); 5] = [
    ("", n_("Tutto")),
    ("documenti", n_("Documenti")),
    ("ricoveri", n_("Ricoveri e pronto soccorso")),
    ("vaccinazioni", n_("Vaccinazioni")),
    ("prescrizioni", n_("Prescrizioni")),
];

/// `GET /cronologia`: care events over time, filterable by kind.
pub async fn timeline(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/cronologia", raw.as_deref()).await?;
    let q = query_map(raw.as_deref());
    let kind = q.get("tipo").cloned().unwrap_or_default();
    let portal = Portal::new(state.fhir.clone());
    let want = |k: &str| kind.is_empty() || kind == k;
    let mut data = TimelineData::default();
    if want("documenti") {
        if let Some(d) = optional(portal.documents(c.actor(), &DocFilter::default()).await).map_err(c.fail())? {
            data.documents = d.items;
        }
    }
    if want("ricoveri") {
        data.encounters = optional(portal.list(c.actor(), "Encounter", "-date").await).map_err(c.fail())?.unwrap_or_default();
    }
    if want("vaccinazioni") {
        data.immunizations = optional(portal.list(c.actor(), "Immunization", "-date").await).map_err(c.fail())?.unwrap_or_default();
    }
    if want("prescrizioni") {
        data.prescriptions =
            optional(portal.list(c.actor(), "MedicationRequest", "-authoredon").await).map_err(c.fail())?.unwrap_or_default();
    }
    let body = html! {
        h1 { (c.t("Cronologia")) }
        (timeline_body(c.lang, data, &kind, &Links::citizen()))
    };
    Ok(layout(&c, c.t("Cronologia"), body))
}

/// A timeline: the kind filter and the events, newest first (a vaccination or a prescription
/// once, as the item, not also as the document it came in).
pub(super) fn timeline_body(lang: Lang, data: TimelineData, kind: &str, links: &Links) -> Markup {
    // (date, kind, text, link)
    let mut events: Vec<(String, &'static str, String, Option<String>)> = Vec::new();
    events.extend(data.documents.into_iter().map(|d| {
        (
            d.date.clone(),
            "documenti",
            format!(
                "{}{}",
                super::doc_name(lang, &d.title),
                if d.organization.is_empty() { String::new() } else { format!(" — {}", d.organization) }
            ),
            Some(format!("{}{}", links.docs, d.id)),
        )
    }));
    for e in &data.encounters {
        let what = match e["class"]["code"].as_str() {
            Some("EMER") => lang.t("Accesso in pronto soccorso"),
            Some("IMP") => lang.t("Ricovero"),
            _ => lang.t("Visita o contatto"),
        };
        let end = e["period"]["end"].as_str().map(|x| format!(" – {}", show_date(lang, x, false))).unwrap_or_default();
        // where, and for a visit still open: that it is, with its triage code
        let place = e["location"][0]["location"]["display"].as_str().map(|p| format!(" · {p}")).unwrap_or_default();
        let open = if e["class"]["code"] == "EMER" && e["status"] != "finished" {
            let code = e["priority"]["coding"][0]["code"]
                .as_str()
                .and_then(|c| c.parse::<u8>().ok())
                .and_then(fascicolo_domain::er::Triage::parse);
            match code {
                Some(t) => {
                    format!(" ({}, {} {} · {})", lang.t("in corso"), lang.t("codice"), t.code(), lang.pick(t.colour_it(), t.colour_en()))
                }
                None => format!(" ({})", lang.t("in corso")),
            }
        } else {
            String::new()
        };
        events.push((e["period"]["start"].as_str().unwrap_or_default().to_string(), "ricoveri", format!("{what}{end}{place}{open}"), None));
    }
    let mut shown_as_items: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut source_of = |v: &Value| {
        for t in v["meta"]["tag"].as_array().into_iter().flatten() {
            if t["system"] == fascicolo_domain::privacy::labels::DOCUMENT {
                if let Some(d) = t["code"].as_str().and_then(|d| d.strip_prefix("DocumentReference/")) {
                    shown_as_items.insert(format!("{}{d}", links.docs));
                }
            }
        }
    };
    for i in &data.immunizations {
        source_of(i);
        let link = links.items.then(|| format!("/vaccinazioni/{}", i["id"].as_str().unwrap_or_default()));
        events.push((i["occurrenceDateTime"].as_str().unwrap_or_default().to_string(), "vaccinazioni", text_of(&i["vaccineCode"]), link));
    }
    for m in &data.prescriptions {
        source_of(m);
        let link = links.items.then(|| format!("/prescrizioni/{}", m["id"].as_str().unwrap_or_default()));
        events.push((m["authoredOn"].as_str().unwrap_or_default().to_string(), "prescrizioni", med_name(m), link));
    }
    events.retain(|e| e.1 != "documenti" || e.3.as_ref().is_none_or(|l| !shown_as_items.contains(l)));
    events.sort_by(|a, b| b.0.cmp(&a.0));
    let label = |k: &str| TIMELINE_KINDS.iter().find(|x| x.0 == k).map_or("", |x| lang.t(x.1));
    html! {
        form.filters method="get" action={ (links.base) "/cronologia" } {
            div { label for="tipo" { (lang.t("Mostra")) }
                select #tipo name="tipo" { @for (k, it) in TIMELINE_KINDS { option value=(k) selected[kind == k] { (lang.t(it)) } } } }
            div.actions { button type="submit" { (lang.t("Filtra")) } }
        }
        @if events.is_empty() {
            div.alert { p { (lang.t("Nessun evento da mostrare.")) } }
        } @else {
            p role="status" { (events.len()) " " (if events.len() == 1 { lang.t("evento") } else { lang.t("eventi") }) }
            ol.timeline { @for (date, k, text, link) in events.iter().take(300) {
                li { strong { (show_date(lang, date, false)) } " · " span.muted { (label(k)) } br;
                    @if let Some(l) = link { a href=(l) { (text) } } @else { (text) } }
            } }
            @if events.len() > 300 { p.muted { (lang.t("Sono mostrati i 300 eventi più recenti: usa i filtri per vedere gli altri.")) } }
        }
    }
}

/// The vaccinations table, newest first.
pub(super) fn vaccination_table(lang: Lang, list: &[Value], links: &Links) -> Markup {
    html! {
    div.scroll { table.stack {
        thead { tr { th scope="col" { (lang.t("Data")) } th scope="col" { (lang.t("Vaccino")) } th scope="col" { (lang.t("Dose")) } th scope="col" { (lang.t("Lotto")) } th scope="col" { (lang.t("Stato")) } } }
        tbody { @for i in list { tr {
            td data-label=(lang.t("Data")) { (show_date(lang, i["occurrenceDateTime"].as_str().unwrap_or_default(), false)) }
            th scope="row" { @if links.items { a href={ "/vaccinazioni/" (i["id"].as_str().unwrap_or_default()) } { (text_of(&i["vaccineCode"])) } } @else { (text_of(&i["vaccineCode"])) } }
            td data-label=(lang.t("Dose")) { (i["protocolApplied"][0]["doseNumberPositiveInt"].as_i64().map(|d| d.to_string()).unwrap_or_else(|| "—".into())) }
            td data-label=(lang.t("Lotto")) { (i["lotNumber"].as_str().unwrap_or("—")) }
            td data-label=(lang.t("Stato")) { (status_label(lang, "Immunization", i)) }
        } } }
    } }
    }
}

/// `GET /vaccinazioni`
pub async fn vaccinations(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/vaccinazioni", raw.as_deref()).await?;
    let list = Portal::new(state.fhir.clone()).list(c.actor(), "Immunization", "-date").await.map_err(c.fail())?;
    let body = html! {
        h1 { (c.t("Vaccinazioni")) }
        @if list.is_empty() {
            div.alert { p { (c.t("Nessuna vaccinazione registrata nel fascicolo.")) } }
        } @else {
            (vaccination_table(c.lang, &list, &Links::citizen()))
        }
    };
    Ok(layout(&c, c.t("Vaccinazioni"), body))
}

/// A Code 39 barcode of an NRE as SVG (what pharmacies scan).
fn barcode(nre: &str) -> Option<String> {
    let bars = barcoders::sym::code39::Code39::new(nre.to_uppercase()).ok()?.encode();
    let unit = 1.6;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {:.1} 60\" width=\"{:.0}\" height=\"60\" role=\"img\" aria-label=\"Code 39: {}\">",
        bars.len() as f64 * unit + 20.0,
        bars.len() as f64 * unit + 20.0,
        crate::html::esc(nre)
    );
    out.push_str("<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>");
    for (i, b) in bars.iter().enumerate() {
        if *b == 1 {
            out.push_str(&format!("<rect x=\"{:.1}\" y=\"5\" width=\"{unit}\" height=\"50\" fill=\"#000\"/>", 10.0 + i as f64 * unit));
        }
    }
    out.push_str("</svg>");
    Some(out)
}

/// Drug prescriptions as cards (state, dosage, ingredient, quantity, prescriber, NRE and its
/// barcode), then the prescribed services.
pub(super) fn prescription_cards(lang: Lang, meds: &[Value], services: &[Value], links: &Links) -> Markup {
    html! {
        @for m in meds {
            section.card style="margin:1rem 0" {
                h2 { @if links.items { a href={ "/prescrizioni/" (m["id"].as_str().unwrap_or_default()) } { (med_name(m)) } } @else { (med_name(m)) } }
                dl.meta {
                    dt { (lang.t("Data")) } dd { (show_date(lang, m["authoredOn"].as_str().unwrap_or_default(), false)) }
                    dt { (lang.t("Stato")) } dd { (status_label(lang, "MedicationRequest", m)) }
                    @if let Some(d) = m["dosageInstruction"][0]["text"].as_str() { dt { (lang.t("Posologia")) } dd { (d) } }
                    @if let Some(i) = ingredient(m) { dt { (lang.t("Principio attivo")) } dd { (i) } }
                    @if let Some(q) = m["dispenseRequest"]["quantity"]["value"].as_f64() { dt { (lang.t("Quantità")) } dd { (packs(lang, q)) } }
                    @if let Some(r) = m["reasonCode"].get(0).map(text_of).filter(|r| !r.is_empty()) { dt { (lang.t("Motivo")) } dd { (r) } }
                    @if let Some(r) = m["requester"]["display"].as_str() { dt { (lang.t("Prescrittore")) } dd { (r) } }
                    @if let Some(n) = nre_of(m) { dt { "NRE" } dd { strong.nre { (n) } } }
                }
                @if let (Some(n), Some(svg)) = (nre_of(m), nre_of(m).and_then(|n| barcode(&n))) {
                    // the code with its digits under it (the pharmacist can type them), larger on its own page
                    figure.barcode { (trusted(svg)) figcaption.digits { (n) } }
                    @if links.items { p { a href={ "/prescrizioni/" (m["id"].as_str().unwrap_or_default()) } { (lang.t("Mostra il codice a barre grande")) } } }
                }
            }
        }
        @if !services.is_empty() {
            h2 { (lang.t("Prestazioni prescritte")) }
            ul { @for s in services { li { (text_of(&s["code"])) " — " (show_date(lang, s["authoredOn"].as_str().unwrap_or_default(), false)) " · " (status_label(lang, "ServiceRequest", s)) } } }
        }
    }
}

/// `GET /prescrizioni`
pub async fn prescriptions(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/prescrizioni", raw.as_deref()).await?;
    let portal = Portal::new(state.fhir.clone());
    let meds = portal.list(c.actor(), "MedicationRequest", "-authoredon").await.map_err(c.fail())?;
    let services = optional(portal.list(c.actor(), "ServiceRequest", "-authored").await).map_err(c.fail())?.unwrap_or_default();
    // the holder's codice fiscale as the health card's Code 39, for the pharmacist to scan
    let holder = optional(portal.patient(c.actor()).await).map_err(c.fail())?;
    let cf = holder.as_ref().and_then(fascicolo_app::auth::cf_of).map(String::from);
    let body = html! {
        h1 { (c.t("Prescrizioni")) }
        p.lead { (c.t("Ricette elettroniche di farmaci e prestazioni. In farmacia basta il codice NRE con la tessera sanitaria.")) }
        @if let (Some(cf), Some(svg)) = (&cf, cf.as_deref().and_then(barcode)) {
            section.card #health-card style="margin:1rem 0" {
                h2 { (c.t("Codice fiscale della tessera sanitaria")) }
                p.muted { (c.t("Lo stesso codice a barre del retro della tessera: il farmacista può leggerlo da qui insieme al codice NRE.")) }
                figure.barcode { (trusted(svg)) figcaption.digits.cf { (cf) } }
            }
        }
        @if meds.is_empty() && services.is_empty() {
            div.alert { p { (c.t("Nessuna prescrizione nel fascicolo.")) } }
        }
        (prescription_cards(c.lang, &meds, &services, &Links::citizen()))
    };
    Ok(layout(&c, c.t("Prescrizioni"), body))
}

/// `GET /appuntamenti`
pub async fn appointments(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/appuntamenti", raw.as_deref()).await?;
    let list = Portal::new(state.fhir.clone()).list(c.actor(), "Appointment", "-date").await.map_err(c.fail())?;
    let now = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
    let (next, past): (Vec<&Value>, Vec<&Value>) = list.iter().partition(|a| a["start"].as_str().is_some_and(|s| s >= now.as_str()));
    let row = |a: &Value| {
        html! { tr {
            td { (show_date(c.lang, a["start"].as_str().unwrap_or_default(), true)) }
            th scope="row" { a href={ "/appuntamenti/" (a["id"].as_str().unwrap_or_default()) } { (a["description"].as_str().unwrap_or_default()) } }
            td { (status_label(c.lang, "Appointment", a)) }
        } }
    };
    let body = html! {
        h1 { (c.t("Appuntamenti")) }
        h2 { (c.t("In programma")) }
        @if next.is_empty() { p.muted { (c.t("Nessun appuntamento in programma.")) } } @else {
            div.scroll { table { thead { tr { th scope="col" { (c.t("Quando")) } th scope="col" { (c.t("Prestazione")) } th scope="col" { (c.t("Stato")) } } } tbody { @for a in next.iter().rev() { (row(a)) } } } }
        }
        h2 { (c.t("Passati")) }
        @if past.is_empty() { p.muted { (c.t("Nessun appuntamento passato.")) } } @else {
            div.scroll { table { thead { tr { th scope="col" { (c.t("Quando")) } th scope="col" { (c.t("Prestazione")) } th scope="col" { (c.t("Stato")) } } } tbody { @for a in &past { (row(a)) } } } }
        }
    };
    Ok(layout(&c, c.t("Appuntamenti"), body))
}

/// `GET /piano-di-cura`: care plans (PAI) and the birth-pathway agenda.
pub async fn care_plans(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/piano-di-cura", raw.as_deref()).await?;
    let list = Portal::new(state.fhir.clone()).list(c.actor(), "CarePlan", "-date").await.map_err(c.fail())?;
    let body = html! {
        h1 { (c.t("Piano di cura")) }
        @if list.is_empty() {
            div.alert { p { (c.t("Non hai piani di cura attivi. Il piano assistenziale individuale (PAI) o l'agenda del percorso nascita, quando ci sono, compaiono qui.")) } }
        }
        @for p in &list {
            section.card style="margin:1rem 0" {
                h2 { (p["title"].as_str().unwrap_or_else(|| p["description"].as_str().unwrap_or_default())) }
                dl.meta {
                    dt { (c.t("Stato")) } dd { (status_label(c.lang, "CarePlan", p)) }
                    @if let Some(s) = p["period"]["start"].as_str() { dt { (c.t("Dal")) } dd { (show_date(c.lang, s, false)) } }
                    @if let Some(s) = p["period"]["end"].as_str() { dt { (c.t("Al")) } dd { (show_date(c.lang, s, false)) } }
                    @if let Some(d) = p["description"].as_str() { dt { (c.t("Descrizione")) } dd { (d) } }
                }
                @if let Some(acts) = p["activity"].as_array() {
                    h3 { (c.t("Attività")) }
                    ul { @for a in acts { li {
                        (text_of(&a["detail"]["code"]))
                        @if let Some(d) = a["detail"]["description"].as_str() { " — " (d) }
                        @if let Some(s) = a["detail"]["scheduledPeriod"]["start"].as_str() { " · " (show_date(c.lang, s, false)) }
                        @else if let Some(s) = a["detail"]["scheduledString"].as_str() { " · " (s) }
                    } } }
                }
            }
        }
    };
    Ok(layout(&c, c.t("Piano di cura"), body))
}

/// `GET /vaccinazioni/{id}`
pub async fn vaccination(state: State<AppState>, Path(id): Path<String>, raw: RawQuery, headers: HeaderMap) -> PageResult {
    detail(state, "vaccinazioni", id, raw, headers).await
}

/// `GET /prescrizioni/{id}`
pub async fn prescription(state: State<AppState>, Path(id): Path<String>, raw: RawQuery, headers: HeaderMap) -> PageResult {
    detail(state, "prescrizioni", id, raw, headers).await
}

/// `GET /appuntamenti/{id}`
pub async fn appointment(state: State<AppState>, Path(id): Path<String>, raw: RawQuery, headers: HeaderMap) -> PageResult {
    detail(state, "appuntamenti", id, raw, headers).await
}

/// One vaccination, prescription or appointment in full.
async fn detail(State(state): State<AppState>, section: &str, id: String, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let (rt, back) = match section {
        "vaccinazioni" => ("Immunization", n_("Tutte le vaccinazioni")),
        "prescrizioni" => ("MedicationRequest", n_("Tutte le prescrizioni")),
        _ => ("Appointment", n_("Tutti gli appuntamenti")),
    };
    let c = match ctx(&state, &headers, &format!("/{section}/{id}"), raw.as_deref()).await {
        Ok(c) => c,
        Err(r) => return Ok(r),
    };
    let v = Portal::new(state.fhir.clone()).item(c.actor(), rt, &id).await.map_err(c.fail())?;
    let date = |k: &str| show_date(c.lang, v[k].as_str().unwrap_or_default(), true);
    let (title, rows): (String, Vec<(&str, String)>) = match rt {
        "Immunization" => (
            text_of(&v["vaccineCode"]),
            vec![
                (c.t("Data"), show_date(c.lang, v["occurrenceDateTime"].as_str().unwrap_or_default(), false)),
                (c.t("Codice del vaccino"), v["vaccineCode"]["coding"][0]["code"].as_str().unwrap_or("—").to_string()),
                (c.t("Dose"), v["protocolApplied"][0]["doseNumberPositiveInt"].as_i64().map_or("—".into(), |d| d.to_string())),
                (c.t("Lotto"), v["lotNumber"].as_str().unwrap_or("—").to_string()),
                (c.t("Sede di somministrazione"), administration_words(c.lang, &v["site"])),
                (c.t("Via di somministrazione"), administration_words(c.lang, &v["route"])),
                (c.t("Stato"), status_label(c.lang, "Immunization", &v)),
            ],
        ),
        "MedicationRequest" => (
            med_name(&v),
            vec![
                (c.t("Data"), date("authoredOn")),
                ("NRE", nre_of(&v).unwrap_or_else(|| "—".into())),
                (c.t("Codice del farmaco"), v["medicationCodeableConcept"]["coding"][0]["code"].as_str().unwrap_or("—").to_string()),
                (c.t("Principio attivo"), ingredient(&v).unwrap_or_else(|| "—".into())),
                (c.t("Posologia"), v["dosageInstruction"][0]["text"].as_str().unwrap_or("—").to_string()),
                (c.t("Quantità"), v["dispenseRequest"]["quantity"]["value"].as_f64().map_or("—".into(), |q| packs(c.lang, q))),
                (c.t("Motivo"), text_of(&v["reasonCode"][0])),
                (c.t("Prescrittore"), v["requester"]["display"].as_str().unwrap_or("—").to_string()),
                (c.t("Stato"), status_label(c.lang, "MedicationRequest", &v)),
            ],
        ),
        _ => (
            v["description"].as_str().unwrap_or_default().to_string(),
            vec![
                (c.t("Inizio"), date("start")),
                (c.t("Fine"), date("end")),
                (c.t("Stato"), status_label(c.lang, "Appointment", &v)),
                (c.t("Note"), v["comment"].as_str().unwrap_or("—").to_string()),
            ],
        ),
    };
    let nre = if rt == "MedicationRequest" { nre_of(&v).and_then(|n| Some((barcode(&n)?, n))) } else { None };
    // offers of an earlier slot (a delegation without them reads none)
    let offers = if rt == "Appointment" && v["status"] == "booked" && c.allows("/prenota") {
        Portal::new(state.fhir.clone()).earlier_offers(c.actor(), None, &id).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let body = html! {
        p { a href={ "/" (section) } { "‹ " (c.t(back)) } }
        h1 { (title) }
        @if rt == "Appointment" { (super::booking::outcome(c.lang, &crate::auth_web::query_map(raw.as_deref()))) }
        dl.meta { @for (k, val) in &rows { @if !val.is_empty() { dt { (k) } dd { (val) } } } }
        @if rt == "Appointment" { (super::booking::appointment_extras(c.lang, &v, c.allows("/prenota"), c.csrf(), &offers)) }
        @if let Some((svg, digits)) = nre { figure.barcode.large { (trusted(svg)) figcaption.digits { (digits) } } }
    };
    Ok(layout(&c, &title, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fascicolo_app::portal::Point;

    fn series(points: &[(f64, &str)]) -> Series {
        Series {
            code: "2345-7".into(),
            name: "Glucosio".into(),
            panel: None,
            points: points
                .iter()
                .map(|(v, u)| Point { value: *v, unit: (*u).into(), when: "2026-10-02".into(), ..Default::default() })
                .collect(),
        }
    }

    #[test]
    fn a_value_is_compared_with_the_one_before_in_the_same_unit_only() {
        assert_eq!(change_since(Lang::It, &series(&[(92.0, "mg/dL"), (104.0, "mg/dL")])).as_deref(), Some("↑ +12"));
        assert_eq!(change_since(Lang::It, &series(&[(5.4, "%"), (5.1, "%")])).as_deref(), Some("↓ −0,3"));
        assert_eq!(change_since(Lang::En, &series(&[(5.4, "%"), (5.1, "%")])).as_deref(), Some("↓ −0.3"));
        assert_eq!(change_since(Lang::It, &series(&[(7.0, "mmol/L"), (7.0, "mmol/L")])).as_deref(), Some("= 0"));
        assert_eq!(change_since(Lang::It, &series(&[(5.0, "mmol/L"), (90.0, "mg/dL")])), None, "another unit");
        assert_eq!(change_since(Lang::It, &series(&[(90.0, "mg/dL")])), None, "no earlier value");
    }
}
