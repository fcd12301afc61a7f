//! `/celiachia`: the monthly budget for gluten-free food of the record shown (budget, spent,
//! remaining, the month's purchases) and, for the holder or a parent, the code to show at the
//! counter instead of the card: a QR code valid five minutes. The app layer decides who may
//! see and who may show a code; the page only shows.

use super::units::euro;
use super::{ctx, form_ctx, layout, show_date, PageResult};
use crate::html::Lang;
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use fascicolo_app::celiac::{CeliacView, Spend};
use fascicolo_app::portal::Portal;
use fascicolo_app::AppError;
use fascicolo_domain::celiac::Channel;
use maud::{html, Markup, PreEscaped};

fn status_word(lang: Lang, s: &Spend) -> &'static str {
    match s.status.as_str() {
        "captured" if s.refunded_cents > 0 => lang.t("Pagato, rimborsato in parte"),
        "captured" => lang.t("Pagato"),
        "voided" => lang.t("Annullato"),
        _ => lang.t("Autorizzato"),
    }
}

fn month_name(lang: Lang, month: &str) -> String {
    const IT: [&str; 12] =
        ["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto", "settembre", "ottobre", "novembre", "dicembre"];
    const EN: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    let (y, m) = month.split_once('-').unwrap_or((month, "1"));
    let i = m.parse::<usize>().unwrap_or(1).clamp(1, 12) - 1;
    match lang {
        Lang::It => format!("{} {y}", IT[i]),
        Lang::En => format!("{} {y}", EN[i]),
    }
}

/// A QR code of `text` as inline SVG (black on white, quiet zone included).
fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(code.render::<qrcode::render::svg::Color>().min_dimensions(240, 240).quiet_zone(true).build())
}

fn budget_card(lang: Lang, v: &CeliacView) -> Markup {
    let b = &v.budget;
    let used = if b.budget_cents > 0 { (b.held_cents * 100 / b.budget_cents).clamp(0, 100) } else { 0 };
    html! {
        section.card #celiac-budget {
            h2 style="margin-top:0" { (lang.t("Budget di")) " " (month_name(lang, &b.month)) }
            p.big { strong { (euro(lang, b.remaining_cents)) } " " (lang.t("disponibili")) }
            div.bar role="img" aria-label={ (lang.t("Speso")) " " (used) "%" } { span style={ "width:" (used) "%" } {} }
            p { (lang.t("Budget del mese")) ": " (euro(lang, b.budget_cents)) " · " (lang.t("Speso o autorizzato")) ": " (euro(lang, b.held_cents)) }
            p.muted { (lang.t("Il budget si ricarica il primo giorno di ogni mese; quello non speso non passa al mese successivo.")) }
        }
    }
}

fn spends_table(lang: Lang, v: &CeliacView) -> Markup {
    html! {
        h2 { (lang.t("Acquisti del mese")) }
        @if v.spends.is_empty() { p #no-spends { (lang.t("Nessun acquisto questo mese.")) } } @else {
            div.scroll { table.stack #spends {
                thead { tr {
                    th scope="col" { (lang.t("Data")) } th scope="col" { (lang.t("Esercizio")) } th scope="col" { (lang.t("Canale")) }
                    th scope="col" { (lang.t("Importo")) } th scope="col" { (lang.t("Stato")) }
                } }
                tbody { @for s in &v.spends { tr {
                    th scope="row" { (show_date(lang, &s.at, true)) }
                    td data-label=(lang.t("Esercizio")) { (s.merchant_name) }
                    td data-label=(lang.t("Canale")) { (Channel::parse(&s.channel).map_or(s.channel.clone(), |c| lang.pick(c.name().0, c.name().1).to_string())) }
                    td data-label=(lang.t("Importo")) {
                        (euro(lang, if s.status == "captured" { s.captured_cents } else { s.amount_cents }))
                        @if s.refunded_cents > 0 { br; span.muted { (lang.t("rimborsati")) " " (euro(lang, s.refunded_cents)) } }
                    }
                    td data-label=(lang.t("Stato")) { (status_word(lang, s)) }
                } } }
            } }
        }
    }
}

async fn render(state: &AppState, raw: Option<&str>, headers: &HeaderMap, code: Option<(String, i64)>) -> PageResult {
    let c = ctx(state, headers, "/celiachia", raw).await?;
    let portal = Portal::new(state.fhir.clone());
    let view = match portal.celiac_view(c.actor()).await {
        Ok(v) => v,
        Err(AppError::Forbidden(m)) if m.contains("RI0060") || m.contains("six months") => {
            return Ok(super::message(
                state,
                c.lang,
                StatusCode::OK,
                c.t("Celiachia"),
                c.t("Il budget per gli alimenti senza glutine spetta a chi ha l'esenzione per celiachia (RI0060), dai sei mesi di età. L'esenzione la rilascia l'ATS."),
                Some(("/esenzioni", c.t("Esenzioni"))),
            ))
        }
        Err(e) => return Err(c.fail()(e)),
    };
    let may_show = c.relation != super::Relation::Delegator;
    let until = code.as_ref().map(|(_, until)| {
        let shown = show_date(c.lang, &fascicolo_fhir::datetime::format_instant(*until), true);
        shown.split(' ').nth(1).unwrap_or_default().to_string()
    });
    let body = html! {
        h1 { (c.t("Celiachia: alimenti senza glutine")) }
        @if c.relation != super::Relation::Own { p { (c.t("Budget di")) " " strong { (c.record_name) } } }
        (budget_card(c.lang, &view))
        section.card #celiac-code {
            h2 style="margin-top:0" { (c.t("Codice per l'acquisto")) }
            @if let Some((code, _)) = &code {
                @if let Some(svg) = qr_svg(code) { div.qr role="img" aria-label=(c.t("Codice QR per l'acquisto")) { (PreEscaped(svg)) } }
                p { (c.t("Mostra questo codice alla cassa della farmacia, del negozio o del supermercato. Vale fino alle")) " "
                    strong { (until.clone().unwrap_or_default()) } "." }
                p.muted { (c.t("Codice")) ": " code #code-text { (code) } }
            } @else if may_show {
                p { (c.t("Alla cassa mostra un codice al posto della tessera sanitaria: vale cinque minuti e si può usare per più acquisti.")) }
                form method="post" action="/celiachia/codice" {
                    input type="hidden" name="csrf" value=(c.csrf());
                    button type="submit" { (c.t("Mostra il codice")) }
                }
            } @else {
                p { (c.t("Il codice lo mostra il titolare del fascicolo, o un genitore per un figlio minorenne.")) }
            }
        }
        (spends_table(c.lang, &view))
    };
    Ok(layout(&c, c.t("Celiachia"), body))
}

/// `GET /celiachia`
pub async fn page(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    render(&state, raw.as_deref(), &headers, None).await
}

/// `POST /celiachia/codice`: a new code, shown at once (never in an address).
pub async fn code(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let f: std::collections::HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let c = form_ctx(&state, &headers, "/celiachia", f.get("csrf").map_or("", String::as_str)).await?;
    let issued = Portal::new(state.fhir.clone()).celiac_code(c.actor()).await.map_err(c.fail())?;
    let mut r = render(&state, None, &headers, Some(issued)).await?;
    r.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(r)
}
