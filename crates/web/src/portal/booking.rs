//! `/prenota`: booking a specialist visit or exam from a prescription. The prescriptions of the
//! record that can be booked (or an NRE typed in), the options of the regional network (first
//! availability, the citizen's area first, distance from home, whether each meets the
//! priority class deadline), a hold while the citizen confirms, the booking; moving and
//! cancelling an appointment (`/appuntamenti/{id}/sposta`, `/appuntamenti/{id}/disdetta`).
//! The app layer decides who may book and keeps each slot for one person; the pages only show
//! and ask. The CUP desk's pages (in `pro.rs`) draw the same options table.

use super::units::num;
use super::{ctx, form_ctx, layout, show_date, PageResult};
use crate::auth_web::query_map;
use crate::html::Lang;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use fascicolo_app::booking::{Booking, Choice, EarlierOffer, Options, Prescription, EARLIER_EXT};
use fascicolo_app::portal::Portal;
use fascicolo_app::AppError;
use fascicolo_fhir::datetime::format_instant;
use maud::{html, Markup};
use std::collections::HashMap;

fn service_name(lang: Lang, code: &str, fallback: &str) -> String {
    match (lang, fascicolo_domain::booking::service(code)) {
        (Lang::En, Some(s)) => s.name_en.to_string(),
        (_, Some(s)) => s.name_it.to_string(),
        _ => fallback.to_string(),
    }
}

fn class_label(lang: Lang, p: &Prescription) -> String {
    match p.priority {
        Some(c) => format!("{} — {}", c.code(), lang.pick(c.label_it(), c.label_en())),
        None => lang.t("Nessuna classe di priorità").to_string(),
    }
}

/// The prescription in a few lines: service, NRE, class, deadline, question, date.
pub(super) fn prescription_card(lang: Lang, p: &Prescription, deadline: Option<time::Date>) -> Markup {
    html! {
        section.card #prescription {
            h2 { (service_name(lang, &p.code, &p.name)) " " span.muted { "(" (p.code) ")" } }
            dl.meta {
                @if let Some(n) = &p.nre { dt { "NRE" } dd { strong.nre { (n) } } }
                dt { (lang.t("Classe di priorità")) } dd { (class_label(lang, p)) }
                dt { (lang.t("Accesso")) } dd { @if p.first_access { (lang.t("Primo accesso")) } @else { (lang.t("Controllo")) } }
                @if let Some(d) = deadline { dt { (lang.t("Da eseguire entro")) } dd { (show_date(lang, &d.to_string(), false)) } }
                @if let Some(q) = &p.question { dt { (lang.t("Quesito diagnostico")) } dd { (q) } }
                @if let Some(d) = p.authored { dt { (lang.t("Prescritta il")) } dd { (show_date(lang, &d.to_string(), false)) } }
            }
        }
    }
}

fn km(lang: Lang, d: f64) -> String {
    format!("{} km", num(lang, (d * 10.0).round() / 10.0))
}

/// The options, best first; `act` draws the button of each.
/// The options of a prescription; when none in the area meets the deadline, the protection
/// route with `ask` (the form that asks for it: posts to `ask_action`), or when it was asked.
pub(super) fn options_table(lang: Lang, found: &Options, ask_action: &str, csrf: &str, act: impl Fn(&Choice) -> Markup) -> Markup {
    html! {
        @if found.protection {
            div.alert.warn role="status" #protection {
                p { strong { (lang.t("Nessuna disponibilità nella tua area entro i tempi garantiti dalla classe di priorità.")) } }
                p { (lang.t("Hai diritto al percorso di tutela: la prestazione in libera professione (intramoenia) o presso un privato accreditato, pagando solo il ticket.")) }
                @match &found.prescription.protection_requested {
                    Some(at) => p #protection-asked { (lang.t("Percorso di tutela chiesto il")) " " (show_date(lang, at, true)) ". " (lang.t("L'ATS ti contatterà con la data e il luogo.")) },
                    None => form method="post" action=(ask_action) {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { (lang.t("Chiedi il percorso di tutela")) }
                    },
                }
            }
        }
        @if found.options.is_empty() {
            p #no-options { (lang.t("Nessuna disponibilità nei prossimi 90 giorni per questa prestazione.")) }
        } @else {
            div.scroll { table.stack #options {
                caption.muted { (lang.t("Prima disponibilità di ogni struttura: prima la tua area, poi per data e distanza da casa")) }
                thead { tr {
                    th scope="col" { (lang.t("Quando")) } th scope="col" { (lang.t("Dove")) } th scope="col" { (lang.t("Distanza")) }
                    th scope="col" { (lang.t("Tempi garantiti")) } th scope="col" { span.sr-only { (lang.t("Azione")) } }
                } }
                tbody { @for o in &found.options { tr {
                    th scope="row" { (show_date(lang, &format_instant(o.start_ms), true)) }
                    td data-label=(lang.t("Dove")) {
                        (o.agenda.site) @if !o.agenda.town.is_empty() { ", " (o.agenda.town) }
                        br;
                        @if o.agenda.accredited { span.badge { (lang.t("Privato accreditato")) } } @else { span.badge { (lang.t("Pubblico")) } }
                        @if !o.in_area { span.badge.out { (lang.t("Fuori dalla tua ATS")) } }
                    }
                    td data-label=(lang.t("Distanza")) { @match o.distance_km { Some(d) => (km(lang, d)), None => "—" } }
                    td data-label=(lang.t("Tempi garantiti")) {
                        @if found.deadline.is_none() { span.muted { (lang.t("Non previsti")) } }
                        @else if o.in_time { span.badge.new { (lang.t("Entro i tempi")) } }
                        @else { span.badge.out { (lang.t("Oltre i tempi")) } }
                    }
                    td { (act(o)) }
                } } }
            } }
        }
    }
}

/// When an option is later than the deadline while another in the area is in time.
pub(super) fn waiver_note(lang: Lang) -> Markup {
    html! { p.muted #waiver { (lang.t("Se scegli una data oltre i tempi garantiti quando ce n'è una entro i tempi, la prenotazione esce dalla garanzia dei tempi di attesa e il fascicolo lo registra.")) } }
}

pub(super) fn guarantee_words(lang: Lang, g: &str) -> &'static str {
    match g {
        "kept" => lang.t("Entro i tempi garantiti"),
        "waived" => lang.t("Data scelta oltre i tempi garantiti: prenotazione fuori garanzia"),
        "not-available" => lang.t("Nessuna data entro i tempi nella tua area: diritto al percorso di tutela"),
        _ => lang.t("Tempi garantiti non previsti (controllo o senza classe)"),
    }
}

pub(super) fn outcome(lang: Lang, q: &HashMap<String, String>) -> Markup {
    html! {
        @match q.get("esito").map(String::as_str) {
            Some("prenotato") => div.alert.ok role="status" { p { (lang.t("Prenotazione confermata.")) } },
            Some("spostato") => div.alert.ok role="status" { p { (lang.t("Appuntamento spostato: quello di prima è stato disdetto.")) } },
            Some("disdetto") => div.alert.ok role="status" { p { (lang.t("Appuntamento disdetto: la prescrizione si può prenotare di nuovo.")) } },
            Some("disdetto-tardi") => div.alert.warn role="status" { p { (lang.t("Appuntamento disdetto con meno di due giorni lavorativi di preavviso: in Lombardia il ticket è comunque dovuto.")) } },
            Some("preso") => div.alert.error role="alert" { p { (lang.t("Qualcuno ha appena preso questo posto: scegline un altro.")) } },
            Some("anticipo-attivo") => div.alert.ok role="status" { p { (lang.t("Ti avviseremo se si libera un posto prima.")) } },
            Some("anticipo-spento") => div.alert.ok role="status" { p { (lang.t("Non riceverai più offerte di posti prima.")) } },
            Some("offerta-persa") => div.alert.error role="alert" { p { (lang.t("Il posto non è più disponibile: l'appuntamento resta com'era.")) } },
            Some("tutela") => div.alert.ok role="status" { p { (lang.t("Richiesta del percorso di tutela registrata: l'ATS ti contatterà con la data e il luogo.")) } },
            Some("esito-registrato") => div.alert.ok role="status" { p { (lang.t("Esito dell'appuntamento registrato.")) } },
            _ => {},
        }
    }
}

fn refused_delegate(state: &AppState, c: &super::Ctx) -> axum::response::Response {
    super::message(
        state,
        c.lang,
        StatusCode::FORBIDDEN,
        c.t("Prenota"),
        c.t("La delega che hai ricevuto non comprende le prenotazioni."),
        Some(("/", c.t("Torna alla pagina iniziale"))),
    )
}

/// `GET /prenota[?nre=][&esito=]`: the prescriptions to book, and a typed NRE.
pub async fn page(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/prenota", raw.as_deref()).await?;
    if !c.allows("/prenota") {
        return Ok(refused_delegate(&state, &c));
    }
    let q = query_map(raw.as_deref());
    let portal = Portal::new(state.fhir.clone());
    let typed = q.get("nre").map(|s| s.trim().to_string()).unwrap_or_default();
    let mut error = None;
    if !typed.is_empty() {
        match portal.prescription_by_nre(c.actor(), None, &typed, None).await {
            Ok(p) => return Ok(Redirect::to(&format!("/prenota/{}", p.id)).into_response()),
            Err(AppError::BadRequest(_)) => error = Some(c.t("L'NRE ha 15 caratteri e inizia con tre cifre: controllalo sul promemoria.")),
            Err(AppError::NotFound(_)) => error = Some(c.t("Nessuna prescrizione da prenotare con questo NRE in questo fascicolo.")),
            Err(e) => return Err(c.fail()(e)),
        }
    }
    let list = portal.prescriptions(c.actor(), None).await.map_err(c.fail())?;
    let (open, booked): (Vec<&Prescription>, Vec<&Prescription>) = list.iter().partition(|p| p.booked_as.is_none());
    let body = html! {
        h1 { (c.t("Prenota una visita o un esame")) }
        (outcome(c.lang, &q))
        @if c.relation != super::Relation::Own { p { (c.t("Prenotazioni per")) " " strong { (c.record_name) } } }
        p { (c.t("Scegli una prescrizione del medico: ti mostriamo la prima data libera in ogni struttura pubblica e privata accreditata della rete regionale.")) }
        h2 { (c.t("Prescrizioni da prenotare")) }
        @if open.is_empty() { p #nothing-to-book { (c.t("Nessuna prescrizione da prenotare.")) } } @else {
            ul.plain #to-book { @for p in &open { li.card style="margin:.5rem 0" {
                a href={ "/prenota/" (p.id) } { strong { (service_name(c.lang, &p.code, &p.name)) } }
                br; span.muted { @if let Some(n) = &p.nre { "NRE " (n) " · " } (class_label(c.lang, p)) }
            } } }
        }
        @if !booked.is_empty() {
            h2 { (c.t("Già prenotate")) }
            ul #booked { @for p in &booked { li {
                (service_name(c.lang, &p.code, &p.name))
                @if let Some(a) = p.booked_as.as_deref().and_then(|a| a.strip_prefix("Appointment/")) {
                    " — " a href={ "/appuntamenti/" (a) } { (c.t("vedi l'appuntamento")) }
                }
            } } }
        }
        h2 { (c.t("Hai un promemoria con l'NRE?")) }
        form.filters method="get" action="/prenota" {
            div {
                label for="nre" { (c.t("Numero di ricetta elettronica (NRE)")) }
                input #nre name="nre" value=(typed) autocomplete="off" spellcheck="false" maxlength="20" size="18" inputmode="numeric"
                    aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| "nre-error")];
                @if let Some(e) = error { p.field-error #nre-error { (e) } }
            }
            button type="submit" { (c.t("Cerca")) }
        }
        p { a href="/tempi-di-attesa" { (c.t("Tempi di attesa")) } " — " (c.t("il primo posto libero per visite ed esami, per ASST.")) }
    };
    let mut r = layout(&c, c.t("Prenota"), body);
    if error.is_some() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(r)
}

/// `GET /prenota/{sr}[?dal=YYYY-MM-DD][&sposta=appointment]`: the options for a prescription.
pub async fn options(State(state): State<AppState>, Path(sr): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/prenota", raw.as_deref()).await?;
    if !c.allows("/prenota") {
        return Ok(refused_delegate(&state, &c));
    }
    let q = query_map(raw.as_deref());
    let from = q.get("dal").filter(|s| !s.is_empty()).and_then(|s| fascicolo_domain::rome::date_of(s));
    let moving = q.get("sposta").filter(|s| !s.is_empty()).cloned();
    let found = Portal::new(state.fhir.clone()).find(c.actor(), None, &sr, from).await.map_err(c.fail())?;
    let p = &found.prescription;
    if p.booked_as.is_some() && moving.is_none() {
        let a = p.booked_as.as_deref().and_then(|a| a.strip_prefix("Appointment/")).unwrap_or_default();
        return Ok(Redirect::to(&format!("/appuntamenti/{a}")).into_response());
    }
    let action = match &moving {
        Some(a) => format!("/appuntamenti/{a}/sposta"),
        None => format!("/prenota/{sr}/blocca"),
    };
    let title = if moving.is_some() { c.t("Sposta l'appuntamento") } else { c.t("Scegli data e luogo") };
    let body = html! {
        p { a href="/prenota" { "‹ " (c.t("Prenota")) } }
        h1 { (title) }
        (outcome(c.lang, &q))
        (prescription_card(c.lang, p, found.deadline))
        form.filters method="get" action={ "/prenota/" (sr) } {
            @if let Some(a) = &moving { input type="hidden" name="sposta" value=(a); }
            div {
                label for="dal" { (c.t("Cerca dal giorno")) }
                input #dal name="dal" type="date" value=(from.map(|d| d.to_string()).unwrap_or_default());
            }
            button.secondary type="submit" { (c.t("Cerca")) }
        }
        @if found.deadline.is_some() { (waiver_note(c.lang)) }
        (options_table(c.lang, &found, &format!("/prenota/{sr}/tutela"), c.csrf(), |o| html! {
            form.inline method="post" action=(action) {
                input type="hidden" name="csrf" value=(c.csrf());
                input type="hidden" name="slot" value=(o.key);
                @if moving.is_some() { input type="hidden" name="sr" value=(sr); }
                button type="submit" aria-label={ (c.t("Scegli")) " " (show_date(c.lang, &format_instant(o.start_ms), true)) ", " (o.agenda.site) } { (c.t("Scegli")) }
            }
        }))
    };
    Ok(layout(&c, title, body))
}

fn form_of(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// `POST /prenota/{sr}/blocca`: hold the chosen slot, then ask for confirmation.
pub async fn hold(State(state): State<AppState>, Path(sr): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let f = form_of(&body);
    let c = form_ctx(&state, &headers, "/prenota", f.get("csrf").map_or("", String::as_str)).await?;
    let key = f.get("slot").cloned().unwrap_or_default();
    match Portal::new(state.fhir.clone()).hold(c.actor(), None, &sr, &key).await {
        Ok(_) => Ok(Redirect::to(&format!("/prenota/{sr}/conferma?slot={}", enc(&key))).into_response()),
        Err(AppError::Conflict(m)) if m.contains("taken") => Ok(Redirect::to(&format!("/prenota/{sr}?esito=preso")).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `GET /prenota/{sr}/conferma?slot=`: the held slot, to confirm.
pub async fn confirm_page(
    State(state): State<AppState>,
    Path(sr): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> PageResult {
    let c = ctx(&state, &headers, "/prenota", raw.as_deref()).await?;
    if !c.allows("/prenota") {
        return Ok(refused_delegate(&state, &c));
    }
    let q = query_map(raw.as_deref());
    let key = q.get("slot").cloned().unwrap_or_default();
    let portal = Portal::new(state.fhir.clone());
    // holding again refreshes the hold and answers the option as it stands (a slot taken
    // meanwhile goes back to the options)
    let (o, until) = match portal.hold(c.actor(), None, &sr, &key).await {
        Ok(x) => x,
        Err(AppError::Conflict(m)) if m.contains("taken") => return Ok(Redirect::to(&format!("/prenota/{sr}?esito=preso")).into_response()),
        Err(e) => return Err(c.fail()(e)),
    };
    let found = portal.find(c.actor(), None, &sr, None).await.map_err(c.fail())?;
    let p = &found.prescription;
    let later_than_offered = found.deadline.is_some() && !o.in_time && found.options.iter().any(|x| x.in_area && x.in_time);
    let service = fascicolo_domain::booking::service(&p.code);
    let body = html! {
        p { a href={ "/prenota/" (sr) } { "‹ " (c.t("Scegli un'altra data")) } }
        h1 { (c.t("Conferma la prenotazione")) }
        section.card #held {
            h2 { (service_name(c.lang, &p.code, &p.name)) }
            dl.meta {
                dt { (c.t("Quando")) } dd { strong { (show_date(c.lang, &format_instant(o.start_ms), true)) } }
                dt { (c.t("Dove")) } dd { (o.agenda.site) @if !o.agenda.town.is_empty() { ", " (o.agenda.town) } }
                @if let Some(d) = o.distance_km { dt { (c.t("Distanza da casa")) } dd { (km(c.lang, d)) } }
                @if let Some(s) = service { dt { (c.t("Preparazione")) } dd { (c.lang.pick(s.preparation_it, s.preparation_en)) } }
                dt { (c.t("Posto riservato fino alle")) } dd { (show_date(c.lang, &format_instant(until), true)) }
            }
        }
        @if later_than_offered {
            div.alert.warn role="status" #waiver-warning { p { (c.t("Questa data è oltre i tempi garantiti mentre ce n'è una entro i tempi: confermando, la prenotazione esce dalla garanzia dei tempi di attesa.")) } }
        }
        form method="post" action={ "/prenota/" (sr) "/conferma" } {
            input type="hidden" name="csrf" value=(c.csrf());
            input type="hidden" name="slot" value=(key);
            button type="submit" { (c.t("Conferma la prenotazione")) }
            " " a.btn.secondary href={ "/prenota/" (sr) } { (c.t("Annulla")) }
        }
    };
    Ok(layout(&c, c.t("Conferma la prenotazione"), body))
}

/// `POST /prenota/{sr}/conferma`: book the held slot.
pub async fn confirm(State(state): State<AppState>, Path(sr): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let f = form_of(&body);
    let c = form_ctx(&state, &headers, "/prenota", f.get("csrf").map_or("", String::as_str)).await?;
    let key = f.get("slot").cloned().unwrap_or_default();
    match Portal::new(state.fhir.clone()).book(c.actor(), None, &sr, &key).await {
        Ok(b) => Ok(Redirect::to(&format!("/appuntamenti/{}?esito=prenotato", b.id)).into_response()),
        Err(AppError::Conflict(m)) if m.contains("taken") => Ok(Redirect::to(&format!("/prenota/{sr}?esito=preso")).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// `POST /prenota/{sr}/tutela`: ask for the protection route.
pub async fn protection(State(state): State<AppState>, Path(sr): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let f = form_of(&body);
    let c = form_ctx(&state, &headers, "/prenota", f.get("csrf").map_or("", String::as_str)).await?;
    match Portal::new(state.fhir.clone()).request_protection(c.actor(), None, &sr).await {
        Ok(_) => Ok(Redirect::to(&format!("/prenota/{sr}?esito=tutela")).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// `POST /appuntamenti/{id}/sposta`: move to the chosen slot (one transaction).
pub async fn move_to(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let f = form_of(&body);
    let c = form_ctx(&state, &headers, "/appuntamenti", f.get("csrf").map_or("", String::as_str)).await?;
    let key = f.get("slot").cloned().unwrap_or_default();
    let sr = f.get("sr").cloned().unwrap_or_default();
    match Portal::new(state.fhir.clone()).move_to(c.actor(), None, &id, &key).await {
        Ok(b) => Ok(Redirect::to(&format!("/appuntamenti/{}?esito=spostato", b.id)).into_response()),
        Err(AppError::Conflict(m)) if m.contains("taken") => {
            Ok(Redirect::to(&format!("/prenota/{sr}?sposta={}&esito=preso", enc(&id))).into_response())
        }
        Err(e) => Err(c.fail()(e)),
    }
}

/// `GET /appuntamenti/{id}/disdetta`: confirm a cancellation, saying whether it is late.
pub async fn cancel_page(State(state): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/appuntamenti", raw.as_deref()).await?;
    if !c.allows("/prenota") {
        return Ok(refused_delegate(&state, &c));
    }
    let portal = Portal::new(state.fhir.clone());
    let list = portal.bookings(c.actor(), None).await.map_err(c.fail())?;
    let Some(b) = list.into_iter().find(|b| b.id == id && b.status == "booked") else {
        return Err(c.fail()(AppError::NotFound("not an appointment of this record that can be cancelled".into())));
    };
    let late = portal.cancellation_would_be_late(&b).await.map_err(c.fail())?;
    let body = html! {
        p { a href={ "/appuntamenti/" (id) } { "‹ " (c.t("Torna all'appuntamento")) } }
        h1 { (c.t("Disdici l'appuntamento")) }
        section.card { p { strong { (service_name(c.lang, &b.code, &b.service)) } } p { (show_date(c.lang, &format_instant(b.start_ms), true)) " — " (b.site) } }
        @if late {
            div.alert.warn role="status" #late-warning { p { (c.t("Mancano meno di due giorni lavorativi: la disdetta è tardiva e in Lombardia il ticket è comunque dovuto, anche da chi è esente.")) } }
        } @else {
            p { (c.t("Disdire per tempo libera il posto per un'altra persona. La prescrizione resta valida e si può prenotare di nuovo.")) }
        }
        form method="post" action={ "/appuntamenti/" (id) "/disdetta" } {
            input type="hidden" name="csrf" value=(c.csrf());
            button type="submit" { (c.t("Disdici l'appuntamento")) }
            " " a.btn.secondary href={ "/appuntamenti/" (id) } { (c.t("Annulla")) }
        }
    };
    Ok(layout(&c, c.t("Disdici l'appuntamento"), body))
}

/// `POST /appuntamenti/{id}/disdetta`
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let f = form_of(&body);
    let c = form_ctx(&state, &headers, "/appuntamenti", f.get("csrf").map_or("", String::as_str)).await?;
    match Portal::new(state.fhir.clone()).cancel(c.actor(), None, &id).await {
        Ok(b) => Ok(Redirect::to(&format!("/prenota?esito={}", if b.late { "disdetto-tardi" } else { "disdetto" })).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// What the appointment page adds for an appointment booked here: where, preparation, the
/// wait guarantee, the calendar file, the earlier-slot opt-in with the offers standing, and
/// the move and cancel actions while it is ahead.
pub(super) fn appointment_extras(lang: Lang, v: &serde_json::Value, may_change: bool, csrf: &str, offers: &[EarlierOffer]) -> Markup {
    let b = Booking::of(v);
    let sr = b.prescription.as_deref();
    let id = b.id.as_str();
    let ahead = b.start_ms > fascicolo_fhir::datetime::now_ms();
    let (site, late, guarantee) = (Some(b.site.as_str()).filter(|s| !s.is_empty()), b.late, b.guarantee.clone());
    let service = fascicolo_domain::booking::service(&b.code);
    let opted_in = v["extension"].as_array().into_iter().flatten().any(|e| e["url"] == EARLIER_EXT && e["valueBoolean"] == true);
    let changeable = may_change && b.status == "booked" && ahead && sr.is_some();
    html! {
        dl.meta #booking-extras {
            @if let Some(s) = site { dt { (lang.t("Dove")) } dd { (s) } }
            @if let Some(s) = service { dt { (lang.t("Preparazione")) } dd { (lang.pick(s.preparation_it, s.preparation_en)) } }
            @if let Some(g) = &guarantee { dt { (lang.t("Tempi di attesa")) } dd #guarantee { (guarantee_words(lang, g)) } }
            @if late { dt { (lang.t("Disdetta")) } dd #late { (lang.t("Tardiva: il ticket è dovuto")) } }
        }
        @if b.status == "booked" && ahead {
            p { a href={ "/appuntamenti/" (id) "/calendario.ics" } download { (lang.t("Aggiungi al calendario")) " (.ics)" } }
        }
        @if changeable && !offers.is_empty() {
            section.card #earlier-offers {
                h2 { (lang.t("Si è liberato un posto prima")) }
                @for o in offers {
                    form method="post" action={ "/appuntamenti/" (id) "/anticipa" } {
                        p { strong { (show_date(lang, &format_instant(o.start_ms), true)) } " — " (o.site) br;
                            span.muted { (lang.t("Disponibile fino alle")) " " (show_date(lang, &format_instant(o.expires_ms), true)) } }
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="offerta" value=(o.id);
                        button type="submit" { (lang.t("Prendi questo posto")) }
                    }
                }
                p.muted { (lang.t("Il primo che accetta ottiene il posto; l'appuntamento attuale resta finché il nuovo non è confermato.")) }
            }
        }
        @if changeable {
            form #earlier-opt-in method="post" action={ "/appuntamenti/" (id) "/anticipo" } {
                input type="hidden" name="csrf" value=(csrf);
                @if opted_in {
                    p { (lang.t("Ti avvisiamo per SMS o e-mail se si libera un posto prima nella tua area.")) }
                    input type="hidden" name="attiva" value="0";
                    button.secondary type="submit" { (lang.t("Non avvisarmi più")) }
                } @else {
                    input type="hidden" name="attiva" value="1";
                    button.secondary type="submit" { (lang.t("Avvisami se si libera un posto prima")) }
                }
            }
            p #appointment-actions {
                a.btn href={ "/prenota/" (sr.unwrap_or_default()) "?sposta=" (id) } { (lang.t("Sposta")) }
                " " a.btn.secondary href={ "/appuntamenti/" (id) "/disdetta" } { (lang.t("Disdici")) }
            }
        }
    }
}

/// `POST /appuntamenti/{id}/anticipo`: earlier-slot offers on (`attiva=1`) or off.
pub async fn earlier_opt_in(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> PageResult {
    let f = form_of(&body);
    let c = form_ctx(&state, &headers, "/appuntamenti", f.get("csrf").map_or("", String::as_str)).await?;
    let on = f.get("attiva").map(String::as_str) == Some("1");
    match Portal::new(state.fhir.clone()).set_earlier_offers(c.actor(), None, &id, on).await {
        Ok(()) => {
            Ok(Redirect::to(&format!("/appuntamenti/{id}?esito={}", if on { "anticipo-attivo" } else { "anticipo-spento" }))
                .into_response())
        }
        Err(e) => Err(c.fail()(e)),
    }
}

/// `POST /appuntamenti/{id}/anticipa`: take an offered earlier slot.
pub async fn earlier_accept(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> PageResult {
    let f = form_of(&body);
    let c = form_ctx(&state, &headers, "/appuntamenti", f.get("csrf").map_or("", String::as_str)).await?;
    let offer = f.get("offerta").cloned().unwrap_or_default();
    match Portal::new(state.fhir.clone()).accept_earlier(c.actor(), None, &id, &offer).await {
        Ok(b) => Ok(Redirect::to(&format!("/appuntamenti/{}?esito=spostato", b.id)).into_response()),
        Err(AppError::Conflict(m)) if m.contains("first") || m.contains("expired") => {
            Ok(Redirect::to(&format!("/appuntamenti/{id}?esito=offerta-persa")).into_response())
        }
        Err(e) => Err(c.fail()(e)),
    }
}

/// The appointment as an iCalendar event (RFC 5545): the instant in UTC (a calendar shows it
/// in its own zone), the service, the place, the preparation and a link back to the page.
pub(super) fn ics(lang: Lang, b: &Booking, page_url: &str) -> String {
    use icalendar::{Calendar, Component, Event, EventLike};
    let utc = |ms: i64| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms);
    let mut e = Event::new();
    e.uid(&format!("{}@fascicolo", b.id)).summary(&service_name(lang, &b.code, &b.service)).url(page_url);
    if let Some(s) = utc(b.start_ms) {
        e.starts(s);
    }
    if let Some(s) = utc(b.end_ms) {
        e.ends(s);
    }
    if let Some(s) = utc(fascicolo_fhir::datetime::now_ms()) {
        e.timestamp(s);
    }
    if !b.site.is_empty() {
        e.location(&b.site);
    }
    let prep = b.preparation_it.map(|it| lang.pick(it, b.preparation_en.unwrap_or(it)));
    e.description(&match prep {
        Some(p) => format!("{}: {p}\n{page_url}", lang.t("Preparazione")),
        None => page_url.to_string(),
    });
    e.status(if b.status == "booked" { icalendar::EventStatus::Confirmed } else { icalendar::EventStatus::Cancelled });
    let mut cal = Calendar::new();
    cal.name(lang.t("Appuntamenti")).push(e.done());
    cal.done().to_string()
}

/// `GET /appuntamenti/{id}/calendario.ics`: the appointment for the citizen's calendar.
pub async fn calendar(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/appuntamenti", None).await?;
    let list = Portal::new(state.fhir.clone()).bookings(c.actor(), None).await.map_err(c.fail())?;
    let Some(b) = list.into_iter().find(|b| b.id == id) else {
        return Err(c.fail()(AppError::NotFound("not an appointment of this record".into())));
    };
    let url = format!("{}/appuntamenti/{}", state.auth.public_url.trim_end_matches('/'), b.id);
    let headers = [
        (axum::http::header::CONTENT_TYPE, "text/calendar; charset=utf-8".to_string()),
        (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"appuntamento-{}.ics\"", b.start_ms / 1000)),
    ];
    Ok((headers, ics(c.lang, &b, &url)).into_response())
}
