//! `/esenzioni`: the exemptions from the ticket of the record shown (in force, then expired or
//! revoked), self-certifying an income exemption (E01–E04) and revoking one's own
//! self-certification after a confirmation. The ASST desk has the same list and form at
//! `/professionista/anagrafe/{id}/esenzioni`. The app layer decides who may declare and
//! whether the rules are met; the page only shows and asks.

use super::units::euro;
use super::{ctx, form_ctx, layout, show_date, PageResult, Relation};
use crate::auth_web::query_map;
use crate::html::Lang;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use fascicolo_app::exemptions::{DeclarationForm, Exemption, Exemptions, State as ExState, STATEMENT, STATEMENT_EN};
use fascicolo_app::portal::{FieldError, Portal};
use fascicolo_domain::exemption::{self as rules, IncomeCode, Kind, Standing};
use maud::{html, Markup};
use std::collections::HashMap;

pub(super) fn kind_word(lang: Lang, k: Kind) -> &'static str {
    match k {
        Kind::Income => lang.t("Reddito"),
        Kind::Pathology => lang.t("Patologia cronica"),
        Kind::RareDisease => lang.t("Malattia rara"),
        Kind::Invalidity => lang.t("Invalidità"),
    }
}

fn name_of(lang: Lang, e: &Exemption) -> String {
    match (lang, rules::english_name(&e.code)) {
        (Lang::En, Some(en)) => en.to_string(),
        _ => e.name.clone(),
    }
}

fn state_word(lang: Lang, s: ExState) -> &'static str {
    match s {
        ExState::Active => lang.t("In corso"),
        ExState::Future => lang.t("Non ancora in vigore"),
        ExState::Expired => lang.t("Scaduta"),
        ExState::Revoked => lang.t("Revocata"),
    }
}

fn period(lang: Lang, e: &Exemption) -> Markup {
    html! {
        @if let Some(s) = e.start { (lang.t("dal")) " " (show_date(lang, &s.to_string(), false)) }
        " "
        @match e.end { Some(end) => { (lang.t("al")) " " (show_date(lang, &end.to_string(), false)) }, None => { span.muted { "(" (lang.t("senza scadenza")) ")" } } }
    }
}

/// The exemptions, in force first; `act` draws the action on a revocable one.
pub(super) fn exemptions_table(lang: Lang, ex: &Exemptions, act: impl Fn(&Exemption) -> Markup) -> Markup {
    let (current, past): (Vec<&Exemption>, Vec<&Exemption>) =
        ex.items.iter().partition(|e| matches!(e.state, ExState::Active | ExState::Future));
    let table = |rows: &[&Exemption], id: &str| {
        html! {
            div.scroll { table.stack id=(id) {
                thead { tr {
                    th scope="col" { (lang.t("Codice")) } th scope="col" { (lang.t("Descrizione")) } th scope="col" { (lang.t("Tipo")) }
                    th scope="col" { (lang.t("Validità")) } th scope="col" { (lang.t("Stato")) } th scope="col" { span.sr-only { (lang.t("Azione")) } }
                } }
                tbody { @for e in rows { tr {
                    th scope="row" { (e.code) }
                    td data-label=(lang.t("Descrizione")) {
                        (name_of(lang, e))
                        @if e.code == fascicolo_domain::celiac::EXEMPTION && e.state == ExState::Active {
                            br; a href="/celiachia" { (lang.t("Budget per alimenti senza glutine")) " ›" }
                        }
                        @if let Some(d) = &e.declared {
                            br; span.muted { (lang.t("Autocertificazione del")) " " (show_date(lang, &d.at, false))
                                @if !d.by.is_empty() { " — " (d.by) } }
                        }
                    }
                    td data-label=(lang.t("Tipo")) { (kind_word(lang, e.kind)) }
                    td data-label=(lang.t("Validità")) { (period(lang, e)) }
                    td data-label=(lang.t("Stato")) { (state_word(lang, e.state)) }
                    td { @if e.revocable() { (act(e)) } }
                } } }
            } }
        }
    };
    html! {
        h2 { (lang.t("Esenzioni in corso")) }
        @if current.is_empty() { p #no-exemptions { (lang.t("Nessuna esenzione in corso: le prestazioni prevedono il ticket.")) } }
        @else { (table(&current, "exemptions")) }
        @if !past.is_empty() {
            h2 { (lang.t("Esenzioni scadute o revocate")) }
            (table(&past, "past-exemptions"))
        }
    }
}

/// The self-certification form, posted to `action`, with what was typed and what is wrong.
pub(super) fn declaration_form(lang: Lang, action: &str, csrf: &str, f: &HashMap<String, String>, errors: &[FieldError]) -> Markup {
    let v = |k: &str| f.get(k).cloned().unwrap_or_default();
    let has = |k: &str| errors.iter().any(|e| e.0 == k);
    let err = |field: &str| html! { @for (fld, it, en) in errors { @if *fld == field { p.field-error id={ (field) "-error" } { (lang.pick(it, en)) } } } };
    let described = |k: &str| has(k).then(|| format!("{k}-error"));
    let limits = format!(
        "{} {} ({} {}) {} {} {}",
        lang.t("Limite per E02 ed E04: reddito inferiore a"),
        euro(lang, rules::E02_BASE_CENTS),
        euro(lang, rules::E02_SPOUSE_CENTS),
        lang.t("con il coniuge"),
        lang.t("più"),
        euro(lang, rules::E02_CHILD_CENTS),
        lang.t("per ogni figlio a carico."),
    );
    html! {
        form #declare method="post" action=(action) novalidate {
            input type="hidden" name="csrf" value=(csrf);
            fieldset aria-describedby=[described("code")] {
                legend { (lang.t("Codice di esenzione")) }
                @for code in IncomeCode::ALL {
                    label.check { input type="radio" name="code" value=(code.code()) checked[v("code") == code.code()];
                        span { strong { (code.code()) } " — " (lang.pick(code.name().0, code.name().1)) } }
                }
                (err("code"))
            }
            fieldset aria-describedby=[described("standing")] {
                legend { (lang.t("Chi ha diritto")) }
                label.check { input type="radio" name="standing" value=(Standing::Holder.code()) checked[v("standing") != Standing::Dependant.code()];
                    (lang.t("La persona stessa (titolare)")) }
                label.check { input type="radio" name="standing" value=(Standing::Dependant.code()) checked[v("standing") == Standing::Dependant.code()];
                    (lang.t("Un familiare di cui è a carico (per E02, E03, E04)")) }
                (err("standing"))
            }
            div.field {
                label for="income" { (lang.t("Reddito complessivo del nucleo familiare dell'anno precedente (euro)")) }
                p.muted #income-help { (lang.t("Non serve per E03. Il reddito serve solo al controllo: si conserva il limite dichiarato, non la cifra.")) }
                input #income name="income" inputmode="decimal" autocomplete="off" value=(v("income")) aria-describedby={ "income-help" @if has("income") { " income-error" } };
                (err("income"))
            }
            div.field {
                label for="children" { (lang.t("Figli a carico")) }
                input #children name="children" type="number" min="0" max="20" inputmode="numeric" value=(if v("children").is_empty() { "0".to_string() } else { v("children") }) aria-describedby=[described("children")];
                (err("children"))
            }
            label.check { input type="checkbox" name="spouse" value="1" checked[!v("spouse").is_empty()]; (lang.t("Con il coniuge nel nucleo familiare")) }
            p.muted { (limits) " " (lang.t("Limite per E01:")) " " (euro(lang, rules::E01_LIMIT_CENTS)) "." }
            label.check { input type="checkbox" name="accepted" value="1" checked[!v("accepted").is_empty()] aria-describedby=[described("accepted")];
                (lang.pick(STATEMENT, STATEMENT_EN)) }
            (err("accepted"))
            button type="submit" { (lang.t("Invia l'autocertificazione")) }
        }
    }
}

pub(super) fn form_of(f: &HashMap<String, String>) -> DeclarationForm {
    let v = |k: &str| f.get(k).cloned().unwrap_or_default();
    DeclarationForm {
        code: v("code"),
        standing: v("standing"),
        income: v("income"),
        spouse: !v("spouse").is_empty(),
        children: v("children"),
        accepted: !v("accepted").is_empty(),
    }
}

pub(super) fn outcome(lang: Lang, q: &HashMap<String, String>) -> Markup {
    html! {
        @match q.get("esito").map(String::as_str) {
            Some("dichiarata") => div.alert.ok role="status" { p { (lang.t("Autocertificazione registrata: l'esenzione vale da oggi per le nuove prestazioni.")) } },
            Some("revocata") => div.alert.ok role="status" { p { (lang.t("Esenzione revocata: da oggi le nuove prestazioni prevedono il ticket.")) } },
            _ => {},
        }
    }
}

async fn render(
    state: &AppState,
    raw: Option<&str>,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
    errors: &[FieldError],
) -> PageResult {
    let c = ctx(state, headers, "/esenzioni", raw).await?;
    if !c.allows("/esenzioni") {
        // (the gate refuses the read too): say why, instead of "not found"
        return Ok(super::message(
            state,
            c.lang,
            StatusCode::FORBIDDEN,
            c.t("Esenzioni"),
            c.t("La delega che hai ricevuto non comprende le esenzioni."),
            Some(("/", c.t("Torna alla pagina iniziale"))),
        ));
    }
    let q = query_map(raw);
    let ex = Portal::new(state.fhir.clone()).exemptions(c.actor()).await.map_err(c.fail())?;
    let may_declare = c.relation != Relation::Delegator;
    if let Some(id) = q.get("revoca") {
        let Some(e) = ex.items.iter().find(|e| &e.id == id && e.revocable()) else {
            return Err(c.fail()(fascicolo_app::AppError::NotFound("not a self-certification in force".into())));
        };
        let body = html! {
            p { a href="/esenzioni" { "‹ " (c.t("Esenzioni")) } }
            h1 { (c.t("Revoca l'esenzione")) }
            div.card { p { strong { (e.code) } " — " (name_of(c.lang, e)) } p { (period(c.lang, e)) } }
            p { (c.t("Da oggi l'esenzione non vale più: le nuove prestazioni prevedono il ticket. Le prestazioni già prenotate restano come sono.")) }
            form method="post" action={ "/esenzioni/" (e.id) "/revoca" } {
                input type="hidden" name="csrf" value=(c.csrf());
                button type="submit" { (c.t("Revoca l'esenzione")) }
                " " a.btn.secondary href="/esenzioni" { (c.t("Annulla")) }
            }
        };
        return Ok(layout(&c, c.t("Revoca l'esenzione"), body));
    }
    let body = html! {
        h1 { (c.t("Esenzioni")) }
        (outcome(c.lang, &q))
        @if !errors.is_empty() { div.alert.error role="alert" { p { (c.t("L'autocertificazione non è stata registrata: controlla i campi indicati.")) } } }
        @if c.relation != Relation::Own { p { (c.t("Esenzioni di")) " " strong { (c.record_name) } } }
        p { (c.t("Le esenzioni per patologia, malattia rara e invalidità le rilascia l'ATS; quelle per reddito si possono autocertificare qui.")) }
        (exemptions_table(c.lang, &ex, |e| html! {
            a.btn.secondary href={ "/esenzioni?revoca=" (e.id) } aria-label={ (c.t("Revoca")) " " (e.code) } { (c.t("Revoca")) }
        }))
        h2 { (c.t("Autocertifica un'esenzione per reddito")) }
        @if !may_declare {
            p #declare-delegate { (c.t("L'autocertificazione la fa il titolare del fascicolo, o un genitore per un figlio minorenne: una delega non la comprende.")) }
        } @else if let Some(held) = ex.income_in_force().filter(|_| errors.is_empty()) {
            p { (c.t("È già in corso l'esenzione per reddito")) " " strong { (held.code) } ". " (c.t("Per dichiararne un'altra revoca prima quella.")) }
        } @else {
            p { (c.t("L'esenzione vale dal giorno della dichiarazione fino al 31 marzo successivo; E01 per un bambino fino al giorno prima del sesto compleanno.")) }
            (declaration_form(c.lang, "/esenzioni", c.csrf(), f, errors))
        }
    };
    let mut r = layout(&c, c.t("Esenzioni"), body);
    if !errors.is_empty() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(r)
}

/// `GET /esenzioni[?esito=][&revoca=id]`
pub async fn page(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    render(&state, raw.as_deref(), &headers, &HashMap::new(), &[]).await
}

/// `POST /esenzioni`: a self-certification.
pub async fn declare(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let f: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let c = form_ctx(&state, &headers, "/esenzioni", f.get("csrf").map_or("", String::as_str)).await?;
    match Portal::new(state.fhir.clone()).declare_exemption(c.actor(), &form_of(&f)).await {
        Ok(_) => Ok(Redirect::to("/esenzioni?esito=dichiarata").into_response()),
        Err(Ok(errors)) => render(&state, None, &headers, &f, &errors).await,
        Err(Err(e)) => Err(c.fail()(e)),
    }
}

/// `POST /esenzioni/{id}/revoca`
pub async fn revoke(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let f: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let c = form_ctx(&state, &headers, "/esenzioni", f.get("csrf").map_or("", String::as_str)).await?;
    match Portal::new(state.fhir.clone()).revoke_exemption(c.actor(), &id).await {
        Ok(_) => Ok(Redirect::to("/esenzioni?esito=revocata").into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}
