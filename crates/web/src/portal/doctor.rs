//! `/medico`: the family doctor or pediatrician of the record shown, and choosing another one
//! of the person's ATS with free places, after a confirmation that says what changes. The app
//! layer decides who may choose (the citizen, a parent for a minor; not a delegate), which
//! doctors the age allows and whether a place is free; the page only shows.

use super::units::whole;
use super::{ctx, form_ctx, layout, PageResult, Relation};
use crate::auth_web::query_map;
use crate::html::Lang;
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use fascicolo_app::doctor_choice::{Candidate, DoctorChoice};
use fascicolo_app::portal::Portal;
use fascicolo_app::AppError;
use maud::{html, Markup};

pub(super) fn role_word(lang: Lang, d: &Candidate) -> &'static str {
    match d.role.as_str() {
        "pediatrician" => lang.t("Pediatra di libera scelta"),
        _ => lang.t("Medico di medicina generale"),
    }
}

fn places(lang: Lang, d: &Candidate) -> Markup {
    html! {
        @if d.free() == 0 { span.badge.out { (lang.t("Nessun posto libero")) } }
        @else {
            (whole(lang, d.free())) " " (if d.free() == 1 { lang.t("posto libero") } else { lang.t("posti liberi") })
            " " span.muted { "(" (lang.t("occupati")) " " (whole(lang, d.listed)) " " (lang.t("su")) " " (whole(lang, d.ceiling)) ")" }
        }
    }
}

/// What the age allows, then the doctors one may choose with their places and, for each with
/// a free place, the action `act` draws (a link for the citizen, a form at the desk).
pub(super) fn candidates_table(lang: Lang, choice: &DoctorChoice, act: impl Fn(&Candidate) -> Markup) -> Markup {
    html! {
        p { (match choice.roles.as_slice() {
            ["pediatrician"] => lang.t("Fino a 6 anni si sceglie un pediatra."),
            ["pediatrician", "gp"] => lang.t("Tra 6 e 14 anni si può scegliere un pediatra o un medico di famiglia."),
            _ => lang.t("Dai 14 anni si sceglie un medico di famiglia."),
        }) " " (lang.t("Sono elencati i medici dell'ATS di residenza, con i posti liberi.")) }
        @if choice.candidates.is_empty() {
            p { (lang.t("Nessun altro medico disponibile.")) }
        } @else {
            div.scroll { table.stack #doctors {
                thead { tr { th scope="col" { (lang.t("Medico")) } th scope="col" { (lang.t("Tipo")) } th scope="col" { (lang.t("Posti")) } th scope="col" { span.sr-only { (lang.t("Azione")) } } } }
                tbody { @for d in &choice.candidates { tr {
                    th scope="row" { (d.name) }
                    td data-label=(lang.t("Tipo")) { (role_word(lang, d)) }
                    td data-label=(lang.t("Posti")) { (places(lang, d)) }
                    td { @if d.free() > 0 { (act(d)) } }
                } } }
            } }
        }
    }
}

/// `GET /medico[?medico=id][&esito=]`: the doctor now and the ones to choose from; with
/// `medico=` the confirmation of that choice.
pub async fn page(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/medico", raw.as_deref()).await?;
    if c.relation == Relation::Delegator {
        // (the app layer refuses it too): say why, instead of a bare "not allowed"
        return Ok(super::message(
            &state,
            c.lang,
            axum::http::StatusCode::FORBIDDEN,
            c.t("Medico e pediatra"),
            c.t("Il medico lo sceglie il titolare del fascicolo, o un genitore per un figlio minorenne: una delega non lo comprende."),
            Some(("/", c.t("Torna alla pagina iniziale"))),
        ));
    }
    let q = query_map(raw.as_deref());
    let ceilings = state.fhir.policy().ceilings;
    let choice = Portal::new(state.fhir.clone()).doctor_choice(c.actor(), ceilings).await.map_err(c.fail())?;
    let whose = if c.relation == Relation::Own { c.t("Il tuo medico") } else { c.t("Il medico di") };
    if let Some(id) = q.get("medico") {
        let Some(d) = choice.candidates.iter().find(|d| &d.practitioner == id) else {
            return Err(c.fail()(AppError::NotFound("not a doctor this person may choose".into())));
        };
        let body = html! {
            p { a href="/medico" { "‹ " (c.t("Medico e pediatra")) } }
            h1 { (c.t("Conferma la scelta")) }
            div.card {
                p { strong { (d.name) } br; (role_word(c.lang, d)) }
                p { (places(c.lang, d)) }
            }
            p { (c.t("La scelta vale da subito: il nuovo medico potrà consultare il fascicolo (se hai dato il consenso) e il medico di prima non potrà più farlo.")) }
            @if let Some(cur) = &choice.current { p { (c.t("Medico attuale")) ": " strong { (cur.name) } } }
            form method="post" action="/medico" {
                input type="hidden" name="csrf" value=(c.csrf());
                input type="hidden" name="medico" value=(d.practitioner);
                button type="submit" { (c.t("Conferma la scelta")) }
                " " a.btn.secondary href="/medico" { (c.t("Annulla")) }
            }
        };
        return Ok(layout(&c, c.t("Conferma la scelta"), body));
    }
    let body = html! {
        h1 { (c.t("Medico e pediatra")) }
        @match q.get("esito").map(String::as_str) {
            Some("scelto") => div.alert.ok role="status" { p { (c.t("Scelta registrata: il nuovo medico è già attivo.")) } },
            Some("pieno") => div.alert.error role="alert" { p { (c.t("Il medico scelto non ha più posti liberi: qualcuno ha preso l'ultimo. Scegline un altro.")) } },
            _ => {},
        }
        section.card #current-doctor {
            h2 style="margin-top:0" { (whose) @if c.relation != Relation::Own { " " (c.record_name) } }
            @match &choice.current {
                Some(d) => p { strong { (d.name) } br; (role_word(c.lang, d)) },
                None => p { (c.t("Nessun medico scelto.")) },
            }
        }
        h2 { (c.t("Cambia medico")) }
        (candidates_table(c.lang, &choice, |d| html! {
            a.btn.secondary href={ "/medico?medico=" (d.practitioner) } aria-label={ (c.t("Scegli")) " " (d.name) } { (c.t("Scegli")) }
        }))
    };
    Ok(layout(&c, c.t("Medico e pediatra"), body))
}

/// `POST /medico`: the choice, confirmed.
pub async fn choose(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let c = form_ctx(&state, &headers, "/medico", form.get("csrf").map_or("", String::as_str)).await?;
    let id = form.get("medico").map_or("", String::as_str);
    match Portal::new(state.fhir.clone()).choose_doctor(c.actor(), state.fhir.policy().ceilings, id).await {
        Ok(_) => Ok(Redirect::to("/medico?esito=scelto").into_response()),
        Err(AppError::Conflict(m)) if m.contains("no free places") => Ok(Redirect::to("/medico?esito=pieno").into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}
