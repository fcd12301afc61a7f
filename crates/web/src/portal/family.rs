//! Family and delegations: switch to a minor child's or a delegator's record; grant, scope and
//! revoke delegations on one's own record.

use super::PageResult;
use super::{ctx, form_ctx, layout, optional, show_date, Ctx, Relation};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use fascicolo_app::auth::ActingAs;
use fascicolo_app::portal::{FieldError, Portal};
use fascicolo_app::Who;
use maud::html;
use std::collections::HashMap;

/// What a delegate may be allowed to see: (resource type, Italian, English).
const SCOPES: &[(&str, &str, &str)] = &[
    ("DocumentReference", "Documenti", "Documents"),
    ("Observation", "Risultati e misure", "Results and measurements"),
    ("Immunization", "Vaccinazioni", "Vaccinations"),
    ("MedicationRequest", "Prescrizioni di farmaci", "Medicine prescriptions"),
    ("Appointment", "Appuntamenti", "Appointments"),
    ("CarePlan", "Piani di cura", "Care plans"),
    ("AuditEvent", "Registro degli accessi", "Access log"),
];

/// A resource type a delegation covers, in words.
fn scope_words(c: &Ctx, t: &str) -> String {
    SCOPES.iter().find(|(rt, _, _)| *rt == t).map_or_else(|| t.to_string(), |(_, it, en)| c.t(it, en).to_lowercase())
}

async fn render(state: &AppState, c: &Ctx, form: &HashMap<String, Vec<String>>, errors: &[FieldError], status: StatusCode) -> PageResult {
    let Who::Citizen { cf, patient } = &c.session.actor.who else { return Ok(StatusCode::FORBIDDEN.into_response()) };
    let reps = state.fhir.represented(cf).await.map_err(c.fail())?;
    let portal = Portal::new(state.fhir.clone());
    let delegations = match c.relation {
        Relation::Own => optional(portal.delegations(c.actor()).await).map_err(c.fail())?.unwrap_or_default(),
        _ => Vec::new(),
    };
    let q = |k: &str| form.get(k).and_then(|v| v.first()).cloned().unwrap_or_default();
    let scope_checked = |s: &str| form.get("scope").is_some_and(|v| v.iter().any(|x| x == s));
    let err =
        |field: &str| html! { @for (f, it, en) in errors { @if *f == field { p.field-error id={ (field) "-error" } { (c.t(it, en)) } } } };
    let today = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
    let body = html! {
        h1 { (c.t("Famiglia e deleghe", "Family and delegations")) }
        @if !errors.is_empty() { div.alert.error role="alert" { p { (c.t("La delega non è stata registrata: controlla i campi indicati.", "The delegation was not recorded: check the fields shown.")) } } }
        @if let Some("delega") = form.get("esito").and_then(|v| v.first()).map(String::as_str) { div.alert.ok role="status" { p { (c.t("Fatto.", "Done.")) } } }
        h2 { (c.t("Fascicoli che puoi consultare", "Records you can look at")) }
        p { (c.t("Come genitore consulti il fascicolo dei figli minorenni fino ai 18 anni; come delegato, quello di chi ti ha dato la delega finché è valida.",
            "As a parent you look at your minor children's records until they turn 18; as a delegate, at the record of whoever delegated you while the delegation is valid.")) }
        ul.cards {
            @if let Some(p) = patient {
                li.card {
                    h3 { (c.t("Il mio fascicolo", "My record")) }
                    @if c.record == *p { p { strong { (c.t("Lo stai consultando ora", "You are looking at it now")) } } } @else {
                        form method="post" action="/auth/profile" { input type="hidden" name="csrf" value=(c.csrf()); input type="hidden" name="acting_for" value=(p); input type="hidden" name="next" value="/";
                            button type="submit" { (c.t("Consulta il mio fascicolo", "Look at my record")) } }
                    }
                }
            }
            @for r in &reps {
                @let (pid, name) = (&r.patient, &r.name);
                li.card {
                    h3 { (name) }
                    p.muted { @if r.acting_as == ActingAs::Parent { (c.t("Figlio/a minorenne", "Minor child")) } @else { (c.t("Delega ricevuta", "Delegation received")) } }
                    @if r.acting_as == ActingAs::Delegate {
                        // what the delegation covers and until when
                        p {
                            (c.t("Comprende", "Covers")) ": "
                            @if r.scope.is_empty() { (c.t("tutto il fascicolo", "the whole record")) }
                            @else { (r.scope.iter().map(|t| scope_words(c, t)).collect::<Vec<_>>().join(", ")) }
                            @if let Some(u) = &r.until { br; (c.t("Fino al", "Until")) " " (show_date(c.lang, u, false)) }
                        }
                    }
                    @if c.record == *pid { p { strong { (c.t("Lo stai consultando ora", "You are looking at it now")) } } } @else {
                        form method="post" action="/auth/profile" { input type="hidden" name="csrf" value=(c.csrf()); input type="hidden" name="acting_for" value=(pid); input type="hidden" name="next" value="/";
                            button type="submit" aria-label={ (c.t("Consulta il fascicolo di", "Look at the record of")) " " (name) } { (c.t("Consulta", "Look at it")) } }
                    }
                }
            }
        }
        @if c.relation == Relation::Own {
            h2 { (c.t("Deleghe che hai dato", "Delegations you granted")) }
            @if delegations.is_empty() { p.muted { (c.t("Non hai dato deleghe.", "You have not granted any delegation.")) } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { (c.t("Persona", "Person")) } th scope="col" { (c.t("Può vedere", "May see")) } th scope="col" { (c.t("Validità", "Valid")) } th scope="col" { span.muted { (c.t("Azioni", "Actions")) } } } }
                    tbody { @for d in &delegations { tr {
                        th scope="row" { (d.name) br; span.muted { (d.cf) } }
                        td { @if d.scope.is_empty() { (c.t("Tutto il fascicolo", "The whole record")) } @else {
                            (d.scope.iter().map(|s| SCOPES.iter().find(|x| x.0 == s).map_or(s.as_str(), |x| c.t(x.1, x.2))).collect::<Vec<_>>().join(", ")) } }
                        td { (show_date(c.lang, &d.from, false)) " – " (show_date(c.lang, &d.until, false)) @if !d.active { " " span.badge { (c.t("terminata", "ended")) } } }
                        td { @if d.active {
                            form method="post" action={ "/famiglia/deleghe/" (d.id) "/revoca" } { input type="hidden" name="csrf" value=(c.csrf());
                                button.danger type="submit" aria-label={ (c.t("Revoca la delega a", "Revoke the delegation to")) " " (d.name) } { (c.t("Revoca", "Revoke")) } }
                        } }
                    } } }
                } }
            }
            h3 { (c.t("Dai una nuova delega", "Grant a new delegation")) }
            form method="post" action="/famiglia/deleghe" novalidate {
                input type="hidden" name="csrf" value=(c.csrf());
                div.filters {
                    div { label for="given" { (c.t("Nome", "Given name")) } input #given name="given" value=(q("given")) required autocomplete="off"; }
                    div { label for="family" { (c.t("Cognome", "Surname")) } input #family name="family" value=(q("family")) required autocomplete="off"; (err("name")) }
                    div { label for="cf" { (c.t("Codice fiscale", "Tax code")) } input #cf name="cf" value=(q("cf")) required maxlength="16" autocomplete="off" aria-describedby=[errors.iter().any(|e| e.0 == "cf").then_some("cf-error")]; (err("cf")) }
                    div { label for="until" { (c.t("Valida fino al", "Valid until")) } input #until type="date" name="until" min=(today.get(..10).unwrap_or_default()) value=(q("until")) required aria-describedby=[errors.iter().any(|e| e.0 == "until").then_some("until-error")]; (err("until")) }
                }
                fieldset {
                    legend { (c.t("Cosa può vedere (nessuna scelta: tutto il fascicolo)", "What they may see (none chosen: the whole record)")) }
                    @for (code, it, en) in SCOPES { label.check { input type="checkbox" name="scope" value=(code) checked[scope_checked(code)]; (c.t(it, en)) } }
                    (err("scope"))
                }
                button type="submit" { (c.t("Registra la delega", "Record the delegation")) }
            }
        }
    };
    let mut r = layout(c, c.t("Famiglia e deleghe", "Family and delegations"), body);
    *r.status_mut() = status;
    Ok(r)
}

fn multi(raw: &[u8]) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw) {
        m.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    m
}

/// `GET /famiglia`
pub async fn page(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = ctx(&state, &headers, "/famiglia", raw.as_deref()).await?;
    let form = multi(raw.as_deref().unwrap_or_default().as_bytes());
    render(&state, &c, &form, &[], StatusCode::OK).await
}

/// `POST /famiglia/deleghe`
pub async fn grant(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let form = multi(&body);
    let one = |k: &str| form.get(k).and_then(|v| v.first()).cloned().unwrap_or_default();
    let c = form_ctx(&state, &headers, "/famiglia", &one("csrf")).await?;
    let scope = form.get("scope").cloned().unwrap_or_default();
    match Portal::new(state.fhir.clone())
        .grant_delegation(c.actor(), &one("cf"), &one("given"), &one("family"), &one("until"), &scope)
        .await
    {
        Ok(()) => Ok(Redirect::to("/famiglia?esito=delega").into_response()),
        Err(Ok(errors)) => render(&state, &c, &form, &errors, StatusCode::UNPROCESSABLE_ENTITY).await,
        Err(Err(e)) => Err(c.fail()(e)),
    }
}

/// `POST /famiglia/deleghe/{id}/revoca`
pub async fn revoke(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    let form = multi(&body);
    let c = form_ctx(&state, &headers, "/famiglia", form.get("csrf").and_then(|v| v.first()).map_or("", String::as_str)).await?;
    match Portal::new(state.fhir.clone()).revoke_delegation(c.actor(), &id).await {
        Ok(()) => Ok(Redirect::to("/famiglia?esito=delega").into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}
