//! Emergency rooms live: the hospitals' event feed (`POST /er/v1/events`), and the public pages
//! without login (`/pronto-soccorso`): the nearest emergency rooms, a map of the region, the
//! table per triage code, the JSON feed and the live stream (Server-Sent Events). The pages
//! work without JavaScript (they reload each minute); with it, a small script of our own
//! (`/pronto-soccorso/live.js`) updates them as events arrive.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use fascicolo_app::er::{room_json, Board, ErStatus, EventIn, FORMULA_EN, FORMULA_IT};
use fascicolo_domain::er::{Applied, Crowding, Triage};
use maud::{html, Markup, PreEscaped};
use serde_json::{json, Value};
use std::sync::Arc;

use crate::html::{page_with_head, Lang};
use crate::AppState;

/// A place people may type to find the nearest emergency rooms (a municipality of the region).
#[derive(Debug, Clone)]
pub struct Place {
    pub name: String,
    pub province: String,
    pub lat: f64,
    pub lon: f64,
    /// The province's chief town (named on the map).
    pub capital: bool,
}

/// The scripts the live pages may run: our own file only; the stream on the same origin.
const LIVE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

const LIVE_JS: &str = include_str!("er_live.js");

const STYLE: &str = ".er-grid{list-style:none;padding:0;display:grid;gap:.75rem;grid-template-columns:repeat(auto-fill,minmax(18rem,1fr))}\
.er-grid>li{border:1px solid #5c6f82;border-radius:6px;padding:.75rem}.er-grid h3{margin:0 0 .25rem;font-size:1.1rem}\
.lvl{display:inline-block;border-radius:4px;padding:.1rem .5rem;font-weight:700;border:2px solid #1a1a1a}\
.lvl-low{background:#d7f5e1}.lvl-medium{background:#fff1c2}.lvl-high{background:#ffd7b0}.lvl-overcrowded{background:#f9c6cf}\
.stale{color:#a61f33;font-weight:700}table{border-collapse:collapse;width:100%;margin:.5rem 0}\
th,td{border-bottom:1px solid #c5c7c9;padding:.35rem .4rem;text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.chip{display:inline-block;width:.9rem;height:.9rem;border:1px solid #1a1a1a;border-radius:2px;vertical-align:-2px;margin-right:.35rem}\
.t1{background:#d9364f}.t2{background:#ff8c1a}.t3{background:#4fb3e8}.t4{background:#2e9e5b}.t5{background:#fff}\
.map{max-width:34rem;width:100%;height:auto;border:1px solid #c5c7c9;border-radius:6px;background:#f4f7fa}\
.map .prov{fill:#fff;stroke:#8a99a8;stroke-width:.7;stroke-linejoin:round}\
form.near{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}form.near div{flex:1 1 14rem}\
.js-only{display:none}.live-on .js-only{display:inline-block}\
@media (max-width:40rem){table.stack thead{display:none}table.stack tr{display:block;border:1px solid #c5c7c9;border-radius:6px;margin:.5rem 0;padding:.25rem}\
table.stack td,table.stack th[scope=row]{display:flex;flex-wrap:wrap;justify-content:space-between;gap:0 1rem;border:0;overflow-wrap:anywhere;text-align:left}\
table.stack td::before,table.stack th[scope=row]::before{content:attr(data-label);font-weight:600}table.stack td>div{min-width:0;flex:1 1 12rem;text-align:right}}";

fn unavailable(lang: Lang) -> Response {
    let html = crate::html::error_page(
        lang,
        lang.t("Dati non disponibili"),
        lang.t("Non riusciamo a leggere i dati in questo momento. Riprova tra qualche secondo."),
    );
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, Html(html)).into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

fn with_csp(mut r: Response) -> Response {
    r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(LIVE_CSP));
    r
}

/// An instant in Rome time, as the portal shows dates (`crate::portal::show_date`).
fn rome(t: time::OffsetDateTime) -> String {
    let iso = t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    crate::portal::show_date(Lang::It, &iso, true)
}

fn crowding_label(lang: Lang, c: Crowding) -> &'static str {
    lang.pick(c.label_it(), c.label_en())
}

fn kind_label(lang: Lang, s: &ErStatus) -> &'static str {
    lang.pick(s.er.kind.label_it(), s.er.kind.label_en())
}

fn minutes(lang: Lang, m: Option<u32>) -> String {
    match m {
        None => "—".into(),
        Some(m) if m < 60 => format!("{m} min"),
        Some(m) => format!("{} {} {:02} min", m / 60, lang.t("h"), m % 60),
    }
}

fn lang_link(lang: Lang, path: &str) -> String {
    match lang {
        Lang::It => path.to_string(),
        Lang::En if path.contains('?') => format!("{path}&lang=en"),
        Lang::En => format!("{path}?lang=en"),
    }
}

/// `POST /er/v1/events`: one event from a hospital's system (JSON, see `docs/er-feed.md`).
pub async fn post_event(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let actor = match crate::fhir_api::authenticate(&state, &headers).await {
        Ok(a) => a,
        Err(_) => return problem(401, "unauthorized", "the access token is not valid or has expired".into()),
    };
    if body.len() > 16 * 1024 {
        return problem(413, "too-large", "an event is at most 16 KiB".into());
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return problem(400, "bad-request", "the body must be one JSON object (an event)".into()),
    };
    let ev = match EventIn::from_json(&v) {
        Ok(e) => e,
        Err(e) => return app_problem(&e),
    };
    match state.er.event(&actor, ev).await {
        Ok(o) => {
            let status = if o.applied == Applied::Duplicate { "duplicate" } else { "recorded" };
            (StatusCode::OK, axum::Json(json!({"result": status, "encounter": o.encounter}))).into_response()
        }
        Err(e) => app_problem(&e),
    }
}

/// `GET /er/v1/emur-ps?month=YYYY-MM[&hospital=ID][&format=json]`: a month of the national flow
/// (EMUR-PS XML) for the hospital's own system or the region; `format=json` answers what was
/// left out and why instead (see `docs/er-feed.md`).
pub async fn emur(State(state): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    // the flow names no one, but it is made from people's records: a token is required
    let actor = match crate::fhir_api::authenticate(&state, &headers).await {
        Ok(a) if !matches!(a.who, fascicolo_app::Who::Anonymous) => a,
        _ => return problem(401, "unauthorized", "the national flow needs the access token of a hospital's system or the platform".into()),
    };
    let pairs = query_pairs(q.as_deref());
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some((year, month)) = get("month").and_then(|m| {
        let (y, mo) = m.split_once('-')?;
        let y: i32 = y.parse().ok().filter(|y| (2000..=2999).contains(y))?;
        let mo = time::Month::try_from(mo.parse::<u8>().ok()?).ok()?;
        Some((y, mo))
    }) else {
        return problem(400, "bad-request", "'month' is required as YYYY-MM (e.g. 2026-11)".into());
    };
    let json_report = match get("format") {
        None | Some("xml") => false,
        Some("json") => true,
        Some(other) => return problem(400, "bad-request", format!("'format' is xml or json, not '{other}'")),
    };
    match state.er.emur(&actor, year, month, get("hospital")).await {
        Ok(x) if json_report => axum::Json(json!({
            "month": format!("{year:04}-{:02}", u8::from(month)),
            "accesses": x.accesses,
            "leftOut": x.left_out.iter().map(|(a, why)| json!({"access": a, "reason": why})).collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(x) => {
            let mut r = x.xml.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
            let name = format!("attachment; filename=\"EMUR-PS-{year:04}-{:02}.xml\"", u8::from(month));
            if let Ok(v) = HeaderValue::from_str(&name) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            h.insert("fascicolo-accesses", HeaderValue::from(x.accesses));
            h.insert("fascicolo-left-out", HeaderValue::from(x.left_out.len()));
            r
        }
        Err(e) => app_problem(&e),
    }
}

pub(crate) fn problem(status: u16, code: &str, message: String) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (s, axum::Json(json!({"error": code, "message": message}))).into_response()
}

pub(crate) fn app_problem(e: &fascicolo_app::AppError) -> Response {
    let (status, issues) = fascicolo_app::error_status(e);
    let message = issues.iter().map(|i| i.diagnostics.clone()).collect::<Vec<_>>().join("; ");
    let code = issues.first().map(|i| i.code.clone()).unwrap_or_default();
    problem(status, &code, message)
}

/// `GET /pronto-soccorso/stato.json`: the whole region (documented in `docs/er-feed.md`).
pub async fn feed(State(state): State<AppState>) -> Response {
    let b = match state.er.board().await {
        Ok(b) => b,
        Err(e) => return app_problem(&e),
    };
    let mut r = ([(header::CONTENT_TYPE, "application/json")], b.feed_text().to_string()).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

/// `GET /pronto-soccorso/live`: the feed again at each change (Server-Sent Events; at most one
/// message per second per connection, the latest state).
pub async fn stream(State(state): State<AppState>) -> Response {
    let rx = state.er.subscribe();
    let er = state.er.clone();
    let s = futures_util::stream::unfold((rx, er, true), |(mut rx, er, first)| async move {
        if !first {
            // the next change (or a minute: waits grow with time even without events)
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), rx.changed()).await;
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        rx.borrow_and_update();
        let ev = match er.board().await {
            Ok(b) => SseEvent::default().event("board").id(b.version.to_string()).data(b.live_text()),
            // the store is not answering: say nothing this time, the browser keeps what it shows
            Err(_) => SseEvent::default().comment("unavailable"),
        };
        Some((Ok::<_, std::convert::Infallible>(ev), (rx, er, false)))
    });
    let mut r = Sse::new(s).keep_alive(KeepAlive::default()).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// `GET /pronto-soccorso/live.js`
pub async fn live_js() -> Response {
    let mut r = ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], LIVE_JS).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()).unwrap_or_default()
}

/// Where the visitor is: a position their browser gave, or a municipality they typed.
enum Origin {
    None,
    Position(f64, f64),
    Town(Place),
    UnknownTown(String),
}

fn origin(state: &AppState, pairs: &[(String, String)]) -> Origin {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty());
    if let (Some(lat), Some(lon)) = (get("lat").and_then(|v| v.parse::<f64>().ok()), get("lon").and_then(|v| v.parse::<f64>().ok())) {
        if (35.0..48.0).contains(&lat) && (6.0..19.0).contains(&lon) {
            return Origin::Position(lat, lon);
        }
    }
    match get("comune") {
        Some(name) => {
            // lower case, accents removed: as FHIR string search compares
            let f = fascicolo_fhir::params::normalize(&name);
            match state.places.iter().find(|p| fascicolo_fhir::params::normalize(&p.name) == f) {
                Some(p) => Origin::Town(p.clone()),
                None => Origin::UnknownTown(name),
            }
        }
        None => Origin::None,
    }
}

fn level(lang: Lang, s: &ErStatus) -> Markup {
    let c = s.picture.crowding;
    html! {
        span.lvl.(format!("lvl-{}", c.code())) data-k="crowding" { (crowding_label(lang, c)) }
        " "
        span data-k="occupancy" { (s.picture.occupancy) "%" }
    }
}

fn updated(lang: Lang, s: &ErStatus) -> Markup {
    html! {
        span data-k="updated" {
            @match s.updated {
                Some(t) => { (lang.t("Aggiornato: ")) (rome(t)) },
                None => { (lang.t("Nessun dato ricevuto")) },
            }
        }
        " "
        span.stale data-k="stale" hidden[!s.stale] { (lang.t("· dati non aggiornati")) }
    }
}

/// The map's frame: Lombardy spans about 44.68–46.64 N, 8.49–11.43 E; x is scaled by
/// cos(45.6°) so that a kilometre is as long across as down.
const MAP_W: f64 = 340.0;
const MAP_H: f64 = 300.0;

fn project(lat: f64, lon: f64) -> (f64, f64) {
    let (lat0, lat1, lon0, lon1) = (44.6, 46.7, 8.4, 11.5);
    let k = (45.6f64).to_radians().cos();
    let s = (MAP_W / ((lon1 - lon0) * k)).min(MAP_H / (lat1 - lat0));
    ((lon - lon0) * k * s + 5.0, (lat1 - lat) * s + 5.0)
}

/// The provinces' outlines (Natural Earth, public domain; see `assets/geo/README.md`),
/// projected once into SVG paths.
static PROVINCES: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| province_paths(include_str!("../assets/geo/lombardia-province.geojson")));

fn province_paths(geojson: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(geojson) else {
        return String::new();
    };
    let mut out = String::new();
    for f in v["features"].as_array().into_iter().flatten() {
        let mut d = String::new();
        for ring in f["geometry"]["coordinates"].as_array().into_iter().flatten() {
            for (i, c) in ring.as_array().into_iter().flatten().enumerate() {
                let (Some(lon), Some(lat)) = (c[0].as_f64(), c[1].as_f64()) else {
                    continue;
                };
                let (x, y) = project(lat, lon);
                d.push_str(&format!("{}{x:.1} {y:.1}", if i == 0 { "M" } else { "L" }));
            }
            d.push('Z');
        }
        if d.is_empty() {
            continue;
        }
        out.push_str(&format!(
            r##"<path class="prov" d="{d}" data-province="{}"/>"##,
            crate::html::esc(f["properties"]["sigla"].as_str().unwrap_or_default())
        ));
    }
    out
}

/// The map: every emergency room as a dot coloured by crowding, over the outlines of the
/// region's provinces.
fn map(lang: Lang, b: &Board, places: &[Place], highlight: Option<&str>) -> Markup {
    let (w, h) = (MAP_W, MAP_H);
    let xy = project;
    let colour = |c: Crowding| match c {
        Crowding::Low => "#2e9e5b",
        Crowding::Medium => "#e0b000",
        Crowding::High => "#ff8c1a",
        Crowding::Overcrowded => "#d9364f",
    };
    let mut svg = String::with_capacity(PROVINCES.len() + b.rooms.len() * 300);
    svg.push_str(&PROVINCES);
    for r in &b.rooms {
        let (x, y) = xy(r.er.lat, r.er.lon);
        let big = highlight == Some(r.er.id.as_str());
        svg.push_str(&format!(
            r##"<a href="{href}" aria-label="{name}: {lvl}"><circle cx="{x:.1}" cy="{y:.1}" r="{rad}" fill="{fill}" stroke="#1a1a1a" stroke-width="{sw}" data-er="{id}"><title>{name}: {lvl}</title></circle></a>"##,
            href = crate::html::esc(&lang_link(lang, &format!("/pronto-soccorso/{}", r.er.id))),
            rad = if big { 7 } else { 4 },
            sw = if big { 2 } else { 1 },
            fill = colour(r.picture.crowding),
            id = crate::html::esc(&r.er.id),
            name = crate::html::esc(&r.er.name),
            lvl = crowding_label(lang, r.picture.crowding),
        ));
    }
    // the provincial capitals, to find one's way
    for p in places.iter().filter(|p| p.capital) {
        let (x, y) = xy(p.lat, p.lon);
        svg.push_str(&format!(
            r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#33475b">{}</text>"##,
            x + 6.0,
            y - 5.0,
            crate::html::esc(&p.name)
        ));
    }
    html! {
        figure {
            svg.map viewBox=(format!("0 0 {} {}", w + 10.0, h + 10.0)) role="group" aria-labelledby="map-title" {
                title #map-title { (lang.t("Mappa dei pronto soccorso della Lombardia colorati per affollamento")) }
                (PreEscaped(svg))
            }
            figcaption.muted {
                (lang.t("Verde: poco affollato · giallo: mediamente · arancione: affollato · rosso: sovraffollato. Ogni punto porta alla sua pagina; la tabella qui sotto dice le stesse cose in testo."))
            }
        }
    }
}

fn triage_legend(lang: Lang) -> Markup {
    html! {
        h2 #codici { (lang.t("I codici di triage")) }
        p { (lang.t("All'arrivo un infermiere assegna un codice in base alla gravità, non all'ordine di arrivo: chi ha un codice più grave passa prima. Il tempo indicato è l'attesa massima raccomandata dalle linee guida nazionali (2019) tra il triage e la visita.")) }
        table.stack {
            thead { tr { th scope="col" { (lang.t("Codice")) } th scope="col" { (lang.t("Significato")) } th scope="col" { (lang.t("Attesa massima")) } } }
            tbody {
                @for t in Triage::ALL {
                    tr {
                        td data-label=(lang.t("Codice")) { span.chip.(format!("t{}", t.code())) aria-hidden="true" {} (t.code()) " · " (lang.pick(t.colour_it(), t.colour_en())) }
                        td data-label=(lang.t("Significato")) { (lang.pick(t.meaning_it(), t.meaning_en())) }
                        td data-label=(lang.t("Attesa massima")) {
                            @if t.target_minutes() == 0 { (lang.t("accesso immediato")) } @else { (t.target_minutes()) " min" }
                        }
                    }
                }
            }
        }
        p { strong { (lang.t("In pericolo di vita chiama il 112.")) } " "
            (lang.t("Per problemi non urgenti rivolgiti al tuo medico o alla guardia medica (116117).")) }
    }
}

fn head_extra() -> Markup {
    html! {
        style { (PreEscaped(STYLE)) }
        noscript { meta http-equiv="refresh" content="60"; }
        script src="/pronto-soccorso/live.js" defer {}
    }
}

fn shell(state: &AppState, lang: Lang, title: &str, body: Markup) -> Response {
    with_csp(Html(shell_html(state, lang, title, body)).into_response())
}

fn shell_html(state: &AppState, lang: Lang, title: &str, body: Markup) -> String {
    let banner = state.auth.demo.then(|| lang.t("Dimostrazione: i pronto soccorso e i loro pazienti sono simulati."));
    let i18n = html! {
        div #er-i18n hidden data-updated=(lang.t("Aggiornato: ")) data-nodata=(lang.t("Nessun dato ricevuto"))
            data-nopos=(lang.t("Posizione non disponibile: scrivi il comune"))
            data-lvl-low=(crowding_label(lang, Crowding::Low)) data-lvl-medium=(crowding_label(lang, Crowding::Medium))
            data-lvl-high=(crowding_label(lang, Crowding::High)) data-lvl-overcrowded=(crowding_label(lang, Crowding::Overcrowded)) {}
    };
    page_with_head(lang, title, banner, head_extra(), html! { (i18n) (body) })
}

/// `GET /pronto-soccorso`: the nearest emergency rooms, the map, every room in a table.
pub async fn index(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let lang = Lang::from_query(q.as_deref());
    let pairs = query_pairs(q.as_deref());
    let b = match state.er.board().await {
        Ok(b) => b,
        Err(_) => return unavailable(lang),
    };
    // the page with no position asked for is the same for everyone: rendered once per board
    if pairs.iter().all(|(k, _)| k == "lang") {
        let key = if lang == Lang::En { "index-en" } else { "index-it" };
        let html = b.view(key, || index_html(&state, lang, &b, &pairs));
        return with_csp(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html.to_string()).into_response());
    }
    with_csp(Html(index_html(&state, lang, &b, &pairs)).into_response())
}

fn index_html(state: &AppState, lang: Lang, b: &Board, pairs: &[(String, String)]) -> String {
    let from = origin(state, pairs);
    let point = match &from {
        Origin::Position(lat, lon) => Some((*lat, *lon)),
        Origin::Town(p) => Some((p.lat, p.lon)),
        _ => None,
    };
    let mut near: Vec<(f64, &ErStatus)> = match point {
        Some((lat, lon)) => b.rooms.iter().map(|r| (r.er.distance_km(lat, lon), r)).collect(),
        None => Vec::new(),
    };
    near.sort_by(|a, b| a.0.total_cmp(&b.0));
    near.truncate(6);
    let typed = pairs.iter().find(|(k, _)| k == "comune").map(|(_, v)| v.clone()).unwrap_or_default();
    let title = lang.t("Pronto soccorso in tempo reale");
    let body = html! {
        h1 { (title) }
        p { (lang.t("Quante persone attendono o sono in cura in ogni pronto soccorso della Lombardia, per codice di triage. I dati arrivano dagli ospedali man mano che i pazienti arrivano, vengono visitati ed escono.")) }
        p { strong { (lang.t("In pericolo di vita chiama il 112.")) } }
        form.near method="get" action="/pronto-soccorso" {
            @if lang == Lang::En { input type="hidden" name="lang" value="en"; }
            div {
                label for="comune" { (lang.t("Il tuo comune")) }
                input #comune name="comune" type="text" autocomplete="address-level2" value=(typed) list="comuni";
            }
            button type="submit" { (lang.t("Trova i più vicini")) }
            button.secondary.js-only type="button" #use-position data-label-wait=(lang.t("Cerco la posizione…")) { (lang.t("Usa la mia posizione")) }
        }
        (PreEscaped(&*b.view("datalist", || html! { datalist #comuni { @for p in state.places.iter() { option value=(p.name) {} } } }.into_string())))
        @match &from {
            Origin::UnknownTown(t) => p.error role="alert" { (lang.t("Non trovo il comune ")) "«" (t) "» " (lang.t("in Lombardia: controlla come è scritto.")) },
            Origin::Town(p) => p.muted { (lang.t("Distanze in linea d'aria dal centro di ")) (p.name) " (" (p.province) ")." },
            Origin::Position(..) => p.muted { (lang.t("Distanze in linea d'aria dalla tua posizione (non la conserviamo).")) },
            Origin::None => {},
        }
        @if !near.is_empty() {
            h2 { (lang.t("I più vicini")) }
            ul.er-grid {
                @for (km, r) in &near {
                    li data-er=(r.er.id) {
                        h3 { a href=(lang_link(lang, &format!("/pronto-soccorso/{}", r.er.id))) { (r.er.name) } }
                        p.muted { (kind_label(lang, r)) " · " (r.er.town) " · " (format!("{:.1}", km).replace('.', if lang == Lang::It { "," } else { "." })) " km" }
                        p { (level(lang, r)) }
                        p { (lang.t("In attesa: ")) strong data-k="waiting" { (r.picture.by_code.iter().map(|c| c.waiting).sum::<u32>() + r.picture.awaiting_triage) }
                            " · " (lang.t("in cura: ")) strong data-k="treatment" { (r.picture.by_code.iter().map(|c| c.treatment).sum::<u32>()) } }
                        p.muted { (updated(lang, r)) }
                    }
                }
            }
        }
        h2 { (lang.t("La mappa")) }
        (PreEscaped(&*b.view(lang.t("map-it"), || map(lang, b, &state.places, None).into_string())))
        h2 #tutti { (lang.t("Tutti i pronto soccorso")) }
        p.muted { (lang.t("Ultimo aggiornamento della pagina: ")) span #board-at { (rome(b.at)) } }
        (PreEscaped(&*b.view(lang.t("table-it"), || all_rooms(lang, b).into_string())))
        h2 { (lang.t("Come calcoliamo l'affollamento")) }
        p { (lang.pick(FORMULA_IT, FORMULA_EN)) }
        p { (lang.t("Un pronto soccorso è segnato «dati non aggiornati» quando il suo ospedale non invia eventi da più di 30 minuti.")) }
        (triage_legend(lang))
        p { (lang.t("Per altre app: ")) a href="/pronto-soccorso/stato.json" { (lang.t("i dati in JSON")) } " · " (lang.t("aggiornamenti in diretta: ")) code { "/pronto-soccorso/live" } " (Server-Sent Events)." }
    };
    shell_html(state, lang, title, body)
}

/// Every room in a table (the same for every visitor of a board: rendered once per language).
fn all_rooms(lang: Lang, b: &Board) -> Markup {
    html! {
        table.stack {
            thead { tr {
                th scope="col" { (lang.t("Pronto soccorso")) }
                th scope="col" { (lang.t("Affollamento")) }
                th.n scope="col" { (lang.t("In attesa")) }
                th.n scope="col" { (lang.t("In cura")) }
                th scope="col" { (lang.t("Stato dei dati")) }
            } }
            tbody {
                @for r in &b.rooms {
                    tr data-er=(r.er.id) {
                        td data-label=(lang.t("Pronto soccorso")) { div { a href=(lang_link(lang, &format!("/pronto-soccorso/{}", r.er.id))) { (r.er.name) } br; span.muted { (r.er.town) " (" (r.er.province) ")" } } }
                        td data-label=(lang.t("Affollamento")) { div { (level(lang, r)) } }
                        td.n data-label=(lang.t("In attesa")) data-k="waiting" { (r.picture.by_code.iter().map(|c| c.waiting).sum::<u32>() + r.picture.awaiting_triage) }
                        td.n data-label=(lang.t("In cura")) data-k="treatment" { (r.picture.by_code.iter().map(|c| c.treatment).sum::<u32>()) }
                        td data-label=(lang.t("Stato dei dati")) { div { (updated(lang, r)) } }
                    }
                }
            }
        }
    }
}

/// `GET /pronto-soccorso/{id}`: one emergency room, per triage code.
pub async fn room(State(state): State<AppState>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let lang = Lang::from_query(q.as_deref());
    let b: Arc<Board> = match state.er.board().await {
        Ok(b) => b,
        Err(_) => return unavailable(lang),
    };
    let Some(r) = b.rooms.iter().find(|r| r.er.id == id) else {
        let html = crate::html::error_page(
            lang,
            lang.t("Pronto soccorso non trovato"),
            lang.t("Non c'è un pronto soccorso con questo indirizzo."),
        );
        return (StatusCode::NOT_FOUND, Html(html)).into_response();
    };
    let p = &r.picture;
    let body = html! {
        p { a href=(lang_link(lang, "/pronto-soccorso")) { "← " (lang.t("Tutti i pronto soccorso")) } }
        div data-er=(r.er.id) {
            h1 { (r.er.name) }
            p.muted { (kind_label(lang, r)) " · " (r.er.town) " (" (r.er.province) ") · " (r.er.spaces) " " (lang.t("posti di trattamento")) }
            p { (level(lang, r)) " · " (lang.t("presenti: ")) strong data-k="present" { (p.present) } }
            p.muted { (updated(lang, r)) }
            table.stack {
                caption { (lang.t("Pazienti per codice di triage")) }
                thead { tr {
                    th scope="col" { (lang.t("Codice")) }
                    th.n scope="col" { (lang.t("In attesa")) }
                    th.n scope="col" { (lang.t("In cura")) }
                    th.n scope="col" { (lang.t("Attesa mediana")) }
                    th.n scope="col" { (lang.t("Attesa più lunga")) }
                    th.n scope="col" { (lang.t("Attesa massima raccomandata")) }
                } }
                tbody {
                    @for (c, t) in p.by_code.iter().zip(Triage::ALL) {
                        tr data-code=(t.code()) {
                            th scope="row" data-label=(lang.t("Codice")) { span.chip.(format!("t{}", t.code())) aria-hidden="true" {} (t.code()) " · " (lang.pick(t.colour_it(), t.colour_en())) }
                            td.n data-label=(lang.t("In attesa")) data-k="w" { (c.waiting) }
                            td.n data-label=(lang.t("In cura")) data-k="t" { (c.treatment) }
                            td.n data-label=(lang.t("Attesa mediana")) data-k="m" { (minutes(lang, c.median_wait)) }
                            td.n data-label=(lang.t("Attesa più lunga")) data-k="l" { (minutes(lang, c.longest_wait)) }
                            td.n data-label=(lang.t("Attesa massima raccomandata")) {
                                @if t.target_minutes() == 0 { (lang.t("immediata")) } @else { (t.target_minutes()) " min" }
                            }
                        }
                    }
                }
            }
            ul {
                li { (lang.t("Arrivati, in attesa del triage: ")) strong data-k="awaiting" { (p.awaiting_triage) } }
                li { (lang.t("In osservazione breve (OBI): ")) strong data-k="observation" { (p.observation) } }
                li { (lang.t("In attesa di un posto letto o di trasferimento: ")) strong data-k="boarding" { (p.boarding) } }
            }
            p.muted { (lang.t("Le attese contano dall'arrivo. Chi attende più a lungo non è necessariamente in ritardo: i codici più gravi passano prima.")) }
        }
        (map(lang, &b, &state.places, Some(&r.er.id)))
        h2 { (lang.t("Come calcoliamo l'affollamento")) }
        p { (lang.pick(FORMULA_IT, FORMULA_EN)) }
        (triage_legend(lang))
    };
    shell(&state, lang, &r.er.name, body)
}

/// A feed's JSON for one room (tests and other apps may ask for one).
pub async fn room_feed(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let b = match state.er.board().await {
        Ok(b) => b,
        Err(e) => return app_problem(&e),
    };
    match b.rooms.iter().find(|r| r.er.id == id) {
        Some(r) => axum::Json(room_json(r)).into_response(),
        None => problem(404, "not-found", format!("there is no emergency room '{id}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_draws_the_twelve_provinces_inside_its_frame() {
        let svg = PROVINCES.as_str();
        let sigle: Vec<&str> = svg.split("data-province=\"").skip(1).filter_map(|s| s.split('"').next()).collect();
        let mut sorted = sigle.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, ["BG", "BS", "CO", "CR", "LC", "LO", "MB", "MI", "MN", "PV", "SO", "VA"]);
        // every point lies inside the drawing (the frame is 5 px of margin around MAP_W × MAP_H)
        for d in svg.split(" d=\"").skip(1).filter_map(|s| s.split('"').next()) {
            for pt in d.split(['M', 'L', 'Z']).filter(|p| !p.is_empty()) {
                let mut it = pt.split(' ').map(|n| n.parse::<f64>().expect("a number"));
                let (x, y) = (it.next().expect("x"), it.next().expect("y"));
                assert!((5.0..=MAP_W + 5.0).contains(&x) && (5.0..=MAP_H + 5.0).contains(&y), "{x} {y}");
            }
        }
        // Milan's province holds Milan (45.464 N, 9.19 E): the projection and the outline agree
        let (mx, my) = project(45.464, 9.19);
        let mi = svg.split("<path").find(|p| p.contains("data-province=\"MI\"")).expect("MI");
        let xs: Vec<f64> = mi.split(['M', 'L', 'Z', '"']).filter_map(|p| p.split(' ').next()?.parse().ok()).collect();
        let (lo, hi) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(lo < mx && mx < hi, "{lo} < {mx} < {hi}");
        assert!(my > 5.0);
        // a broken asset draws nothing rather than failing the page
        assert_eq!(province_paths("not json"), "");
    }
}
