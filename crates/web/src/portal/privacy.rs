//! Privacy: consent to consultation with the information notice, hidden documents, the access
//! log with filters (emergency accesses highlighted), the PDF index.

use super::PageResult;
use super::{ctx, form_ctx, layout, optional, query_map, show_date, Ctx, Relation};
use crate::i18n::n_;
use crate::AppState;
use axum::extract::{Form, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use fascicolo_app::portal::{Access, DocFilter, Portal};
use maud::html;
use serde::Deserialize;

/// Notification settings: (kind.channel, Italian text for the catalogue).
const NOTIFICATIONS: [(&str, &str); 6] = [
    ("new-document.email", n_("Nuovo documento, per e-mail")),
    ("new-document.sms", n_("Nuovo documento, per SMS")),
    ("access.email", n_("Accesso al fascicolo, per e-mail")),
    ("access.sms", n_("Accesso al fascicolo, per SMS")),
    ("reminder.email", n_("Promemoria degli appuntamenti, per e-mail")),
    ("reminder.sms", n_("Promemoria degli appuntamenti, per SMS")),
];

/// `POST /privacy/notifiche`: the ticked settings are on, the others off.
pub async fn notifications(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let csrf = pairs.iter().find(|(k, _)| k == "csrf").map_or("", |(_, v)| v.as_str());
    let c = form_ctx(&state, &headers, "/privacy", csrf).await?;
    let on: Vec<&str> = pairs.iter().filter(|(k, _)| k == "on").map(|(_, v)| v.as_str()).collect();
    let off: Vec<String> = NOTIFICATIONS.iter().map(|n| n.0).filter(|k| !on.contains(k)).map(String::from).collect();
    match Portal::new(state.fhir.clone()).set_notifications_off(c.actor(), &off).await {
        Ok(()) => Ok(Redirect::to("/privacy?esito=notifiche#notify").into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// A role in words, agreeing with the person's gender where Italian has two forms
/// ("infermiere", "infermiera"); the masculine when the registry does not say.
pub(super) fn role_label(c: &Ctx, code: &str, gender: &str) -> String {
    let female = gender == "female";
    match code {
        "gp" => c.t("Medico di medicina generale"),
        "pediatrician" => c.t("Pediatra di libera scelta"),
        "specialist" => c.t("Medico specialista"),
        "nurse" if female => c.t("Infermiera"),
        "nurse" => c.t("Infermiere"),
        "cup-operator" if female => c.t("Operatrice CUP"),
        "cup-operator" => c.t("Operatore CUP"),
        "asst-admin" if female => c.t("Amministrativa ASST"),
        "asst-admin" => c.t("Amministrativo ASST"),
        "system" => c.t("Sistema della struttura"),
        "parent" => c.t("Genitore"),
        "delegate" if female => c.t("Delegata"),
        "delegate" => c.t("Delegato"),
        "" => c.t("Piattaforma regionale"),
        other => other,
    }
    .to_string()
}

/// Who accessed, in words: a person by name, a delegate by role (never a bare reference), a
/// system by its registered name or as its organisation's information system.
pub(super) fn who_label(c: &Ctx, state: &AppState, a: &Access) -> String {
    if a.who.starts_with("RelatedPerson/") || a.who.starts_with("Practitioner/") || a.who.is_empty() {
        return role_label(c, &a.role, &a.who_gender);
    }
    if let Some(client) = state.auth.clients.iter().find(|cl| cl.id == a.who) {
        return client.name.clone();
    }
    // a client id the registry of clients does not name (a producer's system)
    if !a.who.contains(' ') && a.who.contains('-') {
        return if a.organization.is_empty() {
            role_label(c, &a.role, &a.who_gender)
        } else {
            format!("{} — {}", c.t("Sistema informativo"), a.organization)
        };
    }
    a.who.clone()
}

/// Consecutive entries of the same actor doing the same thing within ten minutes (a hospital
/// publishing a batch, a clinician paging through results) as one row: (first entry, how many,
/// what they touched together). Emergency accesses stay one row each.
fn group_rows<'a>(shown: &[&'a Access]) -> Vec<(&'a Access, usize, Vec<String>)> {
    let mut rows: Vec<(&Access, usize, Vec<String>)> = Vec::new();
    for a in shown {
        let joins = rows.last().is_some_and(|(first, _, _)| {
            !a.emergency
                && !first.emergency
                && first.who == a.who
                && first.organization == a.organization
                && first.action == a.action
                && first.role == a.role
                && first.export == a.export
                && minutes_between(&first.when, &a.when).is_some_and(|m| m <= 10)
        });
        match rows.last_mut() {
            Some((_, n, what)) if joins => {
                *n += 1;
                what.extend(a.what.iter().filter(|w| !what.contains(w)).cloned().collect::<Vec<_>>());
            }
            _ => rows.push((a, 1, a.what.clone())),
        }
    }
    rows
}

fn minutes_between(a: &str, b: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let (a, b) = (time::OffsetDateTime::parse(a, &Rfc3339).ok()?, time::OffsetDateTime::parse(b, &Rfc3339).ok()?);
    Some((a - b).whole_minutes().abs())
}

fn action_label(c: &Ctx, a: &str) -> &'static str {
    match a {
        "C" => c.t("Ha aggiunto dati"),
        "U" => c.t("Ha modificato dati"),
        "D" => c.t("Ha cancellato dati"),
        "E" => c.t("Ha cercato nel fascicolo"),
        _ => c.t("Ha consultato"),
    }
}

/// `GET /privacy`
pub async fn page(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/privacy", raw.as_deref()).await?;
    let portal = Portal::new(state.fhir.clone());
    let consent = optional(portal.consent(c.actor()).await).map_err(c.fail())?;
    let hidden: Vec<_> = optional(portal.documents(c.actor(), &DocFilter::default()).await)
        .map_err(c.fail())?
        .map(|d| d.items.into_iter().filter(|d| !d.hiding.is_empty()).collect())
        .unwrap_or_default();
    let q = query_map(raw.as_deref());
    let off = match c.relation {
        Relation::Own => optional(portal.notifications_off(c.actor()).await).map_err(c.fail())?,
        _ => None,
    };
    let body = html! {
        h1 { "Privacy" }
        @if let Some(m) = q.get("esito") {
            div.alert.ok role="status" { p { @if m == "consenso-si" { (c.t("Consenso registrato: i medici che ti curano ora possono consultare il fascicolo.")) }
                @else { (c.t("Consenso revocato: da ora i medici non possono più consultare il fascicolo (tranne in emergenza, con registrazione).")) } } }
        }
        section aria-labelledby="consent" {
            h2 #consent { (c.t("Consenso alla consultazione")) }
            details {
                summary { (c.t("Leggi l'informativa")) }
                p { (c.t("Il Fascicolo raccoglie i documenti sanitari prodotti dalle strutture del Servizio sanitario. Con il consenso alla consultazione, i professionisti che ti hanno in cura (il tuo medico o pediatra, i medici delle strutture dove sei seguito) possono vedere i tuoi documenti per curarti. Senza consenso i documenti vengono comunque raccolti, ma solo tu li vedi. Puoi cambiare idea in qualsiasi momento. In emergenza un medico può accedere anche senza consenso: l'accesso viene registrato e ti viene notificato.")) }
            }
            @match consent {
                // a delegate sees the holder's choice, and is offered nothing the gate would refuse
                Some(given) if c.relation != Relation::Own => {
                    p role="status" #consent-status { strong { @if given { (c.t("Il consenso alla consultazione è dato.")) } @else { (c.t("Il consenso alla consultazione non è dato.")) } } }
                    @if c.relation == Relation::Delegator {
                        p.muted { (c.t("Il consenso lo decide il titolare del fascicolo: una delega non lo comprende.")) }
                    }
                }
                Some(given) => {
                    p role="status" #consent-status { strong { @if given { (c.t("Hai dato il consenso alla consultazione.")) } @else { (c.t("Non hai dato il consenso alla consultazione.")) } } }
                }
                None => { p.muted { (c.t("Il consenso lo decide il titolare del fascicolo (o il genitore per un minore).")) } }
            }
            @if let (Some(given), false) = (consent, c.relation == Relation::Delegator) {
                    form method="post" action="/privacy/consenso" {
                        input type="hidden" name="csrf" value=(c.csrf());
                        @if given {
                            input type="hidden" name="given" value="false";
                            button.danger type="submit" { (c.t("Revoca il consenso")) }
                        } @else {
                            input type="hidden" name="given" value="true";
                            button type="submit" { (c.t("Do il consenso")) }
                        }
                    }
            }
        }
        section aria-labelledby="hidden" {
            h2 #hidden { (c.t("Documenti oscurati")) }
            p { (c.t("Un documento oscurato non è visibile ai medici, nemmeno in emergenza, e non si può capire che esista. Puoi oscurare o rendere di nuovo visibile un documento dalla sua pagina.")) }
            @if hidden.is_empty() { p.muted { (c.t("Nessun documento oscurato.")) } } @else {
                ul { @for d in &hidden { li { a href={ "/documenti/" (d.id) } { (super::doc_name(c.lang, &d.title)) } " — " (show_date(c.lang, &d.date, false)) " " span.badge.hidden { (d.hiding.join(", ")) } } } }
            }
        }
        section aria-labelledby="log" {
            h2 #log { (c.t("Chi ha consultato il fascicolo")) }
            p { (c.t("Ogni accesso di medici, operatori e strutture è registrato, con data, ruolo e motivo. Gli accessi in emergenza sono evidenziati.")) }
            p { a.btn href="/privacy/accessi" { (c.t("Vedi il registro degli accessi")) } " " a.btn.secondary href="/documenti/indice.pdf" download { (c.t("Scarica l'indice dei documenti (PDF)")) } }
        }
        @if c.relation == Relation::Own {
            section aria-labelledby="notify" {
                h2 #notify { (c.t("Notifiche")) }
                p { (c.t("Ricevi un avviso all'indirizzo e al numero registrati presso la tua ASST. Gli accessi in emergenza ti vengono sempre notificati.")) }
                @if q.get("esito").is_some_and(|e| e == "notifiche") { div.alert.ok role="status" { p { (c.t("Preferenze salvate.")) } } }
                @if let Some(off) = &off {
                    form method="post" action="/privacy/notifiche" {
                        input type="hidden" name="csrf" value=(c.csrf());
                        fieldset {
                            legend { (c.t("Avvisami")) }
                            @for (key, it) in NOTIFICATIONS {
                                label.check { input type="checkbox" name="on" value=(key) checked[!off.iter().any(|o| o == key)]; (c.t(it)) }
                            }
                        }
                        button type="submit" { (c.t("Salva le preferenze")) }
                    }
                }
            }
        }
    };
    Ok(layout(&c, "Privacy", body))
}

#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    given: String,
}

/// `POST /privacy/consenso`
pub async fn consent(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<ConsentForm>) -> PageResult {
    let c = form_ctx(&state, &headers, "/privacy", &f.csrf).await?;
    let given = f.given == "true";
    match Portal::new(state.fhir.clone()).set_consent(c.actor(), given).await {
        Ok(()) => Ok(Redirect::to(if given { "/privacy?esito=consenso-si" } else { "/privacy?esito=consenso-no" }).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// `GET /privacy/accessi`: the access log, newest first, with filters.
pub async fn access_log(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/privacy/accessi", raw.as_deref()).await?;
    let q = query_map(raw.as_deref());
    let log = Portal::new(state.fhir.clone()).access_log(c.actor()).await.map_err(c.fail())?;
    let only_emergency = q.get("emergenza").is_some_and(|v| v == "1");
    let who = q.get("chi").map(|s| s.trim().to_lowercase()).unwrap_or_default();
    let from = q.get("dal").cloned().unwrap_or_default();
    let to = q.get("al").cloned().unwrap_or_default();
    // the day in Rome (an access at 23:30 UTC is the next day here)
    let day = |a: &Access| super::rome_day(&a.when);
    let shown: Vec<_> = log
        .iter()
        .filter(|a| !only_emergency || a.emergency)
        .filter(|a| {
            who.is_empty()
                || format!("{} {} {}", who_label(&c, &state, a), a.organization, role_label(&c, &a.role, &a.who_gender))
                    .to_lowercase()
                    .contains(&who)
        })
        .filter(|a| from.is_empty() || day(a) >= from)
        .filter(|a| to.is_empty() || day(a) <= to)
        .collect();
    let rows = group_rows(&shown);
    // the documents looked at, by title and date (those this person may see)
    let titles: std::collections::HashMap<String, String> =
        optional(Portal::new(state.fhir.clone()).documents(c.actor(), &DocFilter::default()).await)
            .map_err(c.fail())?
            .map(|d| {
                d.items
                    .into_iter()
                    .map(|d| {
                        (
                            format!("DocumentReference/{}", d.id),
                            format!("{} ({})", super::doc_name(c.lang, &d.title), show_date(c.lang, &d.date, false)),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
    let emergencies = log.iter().filter(|a| a.emergency).count();
    let body = html! {
        p { a href="/privacy" { "‹ Privacy" } }
        h1 { (c.t("Registro degli accessi")) }
        @if emergencies > 0 {
            div.alert.error role="note" { p { strong { (emergencies) " " (c.t("accessi in emergenza")) } " — " (c.t("sono evidenziati in rosso con il motivo dichiarato da chi ha aperto l'accesso.")) } }
        }
        form.filters method="get" action="/privacy/accessi" {
            div { label for="chi" { (c.t("Chi (nome, ruolo o struttura)")) } input #chi name="chi" value=(q.get("chi").cloned().unwrap_or_default()); }
            details.more open[!from.is_empty() || !to.is_empty() || only_emergency] {
                summary { (c.t("Altri filtri: periodo, emergenze")) }
                div.filters {
                    div { label for="dal" { (c.t("Dal")) } input #dal type="date" name="dal" value=(from); }
                    div { label for="al" { (c.t("Al")) } input #al type="date" name="al" value=(to); }
                    div { label.check { input type="checkbox" name="emergenza" value="1" checked[only_emergency]; (c.t("Solo accessi in emergenza")) } }
                }
            }
            div.actions { button type="submit" { (c.t("Filtra")) } }
        }
        p role="status" #access-count { (shown.len()) " " (if shown.len() == 1 { c.t("accesso") } else { c.t("accessi") }) }
        @if shown.is_empty() {
            div.alert { p { (c.t("Nessun accesso da mostrare. Quando un medico o una struttura consulta il fascicolo, lo vedi qui.")) } }
        } @else {
            div.scroll { table.stack #access-log {
                thead { tr { th scope="col" { (c.t("Quando")) } th scope="col" { (c.t("Chi")) } th scope="col" { (c.t("Ruolo")) } th scope="col" { (c.t("Struttura")) } th scope="col" { (c.t("Cosa e perché")) } } }
                tbody { @for (a, times, what) in rows.iter().take(500) {
                    tr style=[a.emergency.then_some("background:#fbe9ec")] {
                        td data-label=(c.t("Quando")) { (show_date(c.lang, &a.when, true)) }
                        // a person acting for the holder whose name this viewer may not read
                        // (a delegation limited to some kinds of record) is shown by role, never
                        // by a bare reference
                        th scope="row" { (who_label(&c, &state, a)) }
                        td data-label=(c.t("Ruolo")) { (role_label(&c, &a.role, &a.who_gender)) }
                        td data-label=(c.t("Struttura")) { @if a.organization.is_empty() { "—" } @else { (a.organization) } }
                        td data-label=(c.t("Cosa e perché")) {
                            @if a.export {
                                // the entry names at most 50 of what left: no count that could mislead
                                (c.t("Ha esportato i dati del fascicolo (esportazione regionale)"))
                            } @else {
                                @if *times > 1 && a.action == "C" {
                                    // one publication run: one line, not one per document
                                    (c.t("Ha pubblicato")) " " (times) " " (c.t("documenti"))
                                } @else {
                                    (action_label(&c, &a.action))
                                    @if *times > 1 { " (" (times) " " (c.t("volte")) ")" }
                                }
                                @let docs: Vec<&String> = what.iter().filter_map(|w| titles.get(w)).collect();
                                @if !docs.is_empty() {
                                    ": " (docs.iter().take(3).map(|t| t.as_str()).collect::<Vec<_>>().join("; "))
                                    @if docs.len() > 3 { " " (c.t("e altri")) " " (docs.len() - 3) @if docs.len() > 3 && c.lang == crate::html::Lang::En { " more" } }
                                    @if what.len() > docs.len() { " " (c.t("e")) " " (what.len() - docs.len()) " " (if what.len() - docs.len() == 1 { c.t("altro dato") } else { c.t("altri dati") }) }
                                } @else {
                                    @if what.len() == 1 { " (1 " (c.t("elemento")) ")" }
                                    @if what.len() > 1 { " (" (what.len()) " " (c.t("elementi")) ")" }
                                }
                            }
                            @if a.emergency { " " span.badge.emergency { (c.t("Emergenza")) } @if !a.reason.is_empty() { br; em { (a.reason) } } }
                            @if a.on_behalf { " " span.badge { (c.t("per conto del titolare")) } }
                        }
                    }
                } }
            } }
        }
    };
    Ok(layout(&c, c.t("Registro degli accessi"), body))
}
