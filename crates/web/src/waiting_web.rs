//! `/tempi-di-attesa`: the public waiting times of the regional booking network (no login),
//! per service and provider group, and the same as JSON (`/tempi-di-attesa.json`). The app
//! computes them from the real offer and bookings; this page only shows them.

use crate::html::{page_with_head, Lang};
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use fascicolo_app::booking::GroupWaits;
use fascicolo_app::portal::Portal;
use maud::html;

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect()
}

fn link(lang: Lang, path: &str) -> String {
    match lang {
        Lang::It => path.to_string(),
        Lang::En => format!("{path}{}lang=en", if path.contains('?') { '&' } else { '?' }),
    }
}

fn days(lang: Lang, d: f64) -> String {
    let s = if d.fract() == 0.0 { format!("{d:.0}") } else { format!("{d:.1}") };
    if lang == Lang::It {
        s.replace('.', ",")
    } else {
        s
    }
}

fn day_label(s: &str) -> String {
    match (s.get(0..4), s.get(5..7), s.get(8..10)) {
        (Some(y), Some(m), Some(d)) => format!("{d}/{m}/{y}"),
        _ => s.to_string(),
    }
}

fn group_name(lang: Lang, g: &GroupWaits) -> String {
    match g.kind {
        "asst" => g.name.clone(),
        "public" => format!("{} — {}", lang.t("Strutture pubbliche"), g.name),
        _ => format!("{} — {}", lang.t("Strutture private accreditate"), g.name),
    }
}

fn unavailable(lang: Lang) -> Response {
    let html = crate::html::error_page(
        lang,
        lang.t("Dati non disponibili"),
        lang.t("Non riusciamo a leggere i dati in questo momento. Riprova tra qualche secondo."),
    );
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, Html(html)).into_response()
}

/// `GET /tempi-di-attesa.json`
pub async fn feed(State(state): State<AppState>) -> Response {
    match Portal::new(state.fhir.clone()).waiting_times().await {
        Ok(w) => {
            let body = serde_json::to_string(&*w).unwrap_or_default();
            let mut r = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            r
        }
        Err(e) => crate::er_web::app_problem(&e),
    }
}

/// `GET /tempi-di-attesa[?prestazione=code]`
pub async fn index(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let lang = Lang::from_query(q.as_deref());
    let pairs = query_pairs(q.as_deref());
    let w = match Portal::new(state.fhir.clone()).waiting_times().await {
        Ok(w) => w,
        Err(_) => return unavailable(lang),
    };
    let asked = pairs.iter().find(|(k, _)| k == "prestazione").map(|(_, v)| v.as_str());
    let Some(s) = w.services.iter().find(|s| Some(s.code) == asked).or(w.services.first()) else {
        return unavailable(lang);
    };
    let title = lang.t("Tempi di attesa");
    let body = html! {
        h1 { (title) }
        p { (lang.t("Per ogni prestazione: fra quanti giorni c'è il primo posto libero nelle strutture di ogni ASST e nelle strutture private accreditate, e quante prenotazioni fatte finora rispettano i tempi massimi della classe di priorità della prescrizione (U 3 giorni, B 10, D 30 per le visite e 60 per gli esami, P 120).")) }
        form method="get" action="/tempi-di-attesa" {
            @if lang == Lang::En { input type="hidden" name="lang" value="en"; }
            div {
                label for="prestazione" { (lang.t("Prestazione")) }
                select #prestazione name="prestazione" {
                    @for x in &w.services {
                        option value=(x.code) selected[x.code == s.code] { (lang.pick(x.name_it, x.name_en)) " (" (x.code) ")" }
                    }
                }
            }
            button type="submit" { (lang.t("Mostra")) }
        }
        h2 #service { (lang.pick(s.name_it, s.name_en)) }
        @if s.groups.is_empty() {
            p { (lang.t("Nessuna struttura offre questa prestazione.")) }
        } @else {
            div.scroll {
                table.stack #waits {
                    caption { (lang.t("Giorni di attesa per il primo posto libero e prenotazioni entro i tempi, per classe di priorità")) }
                    thead { tr {
                        th scope="col" { (lang.t("Strutture")) }
                        th scope="col" { (lang.t("Agende")) }
                        th scope="col" { (lang.t("Attesa mediana")) }
                        th scope="col" { (lang.t("Primo posto")) }
                        th scope="col" { (lang.t("Prenotazioni entro i tempi")) }
                    } }
                    tbody {
                        @for g in &s.groups {
                            tr data-group=(g.id) {
                                th scope="row" { (group_name(lang, g)) }
                                td data-label=(lang.t("Agende")) { (g.agendas) }
                                td data-label=(lang.t("Attesa mediana")) { @match g.median_days { Some(d) => { (days(lang, d)) " " (lang.t("giorni")) }, None => { (lang.t("nessun posto nei prossimi 90 giorni")) } } }
                                td data-label=(lang.t("Primo posto")) { @match &g.first_day { Some(d) => (day_label(d)), None => "—" } }
                                td data-label=(lang.t("Entro i tempi")) {
                                    @let used: Vec<_> = g.bookings.iter().filter(|c| c.bookings > 0).collect();
                                    @if used.is_empty() { span.muted { (lang.t("nessuna prenotazione finora")) } }
                                    @for c in used {
                                        span.share { (c.class) ": " (c.in_time * 100 / c.bookings) "% " (lang.t("di")) " " (c.bookings) } " "
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted { (lang.t("Calcolato dalle agende e dalle prenotazioni della rete regionale; aggiornato ogni 5 minuti. Gli stessi dati in formato aperto: ")) a href="/tempi-di-attesa.json" { "JSON" } "." }
        p { a href=(link(lang, "/prenota")) { (lang.t("Prenota una visita o un esame")) } }
    };
    let banner = state.auth.demo.then(|| lang.t("Dimostrazione: le agende e le prenotazioni sono della regione sintetica."));
    // the portal's tables and colours; its footer is dark, so this page's footer text is light
    let head = html! { link rel="stylesheet" href="/static/portal.css"; style { "footer.muted{color:#fff}" } };
    Html(page_with_head(lang, title, banner, head, body)).into_response()
}
