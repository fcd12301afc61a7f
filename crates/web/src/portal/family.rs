//! Family and delegations: switch to a minor child's or a delegator's record; grant, scope and
//! revoke delegations on one's own record.

use super::PageResult;
use super::{ctx, form_ctx, layout, optional, show_date, Ctx, Relation};
use crate::i18n::n_;
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
const SCOPES: &[(&str, &str)] = &[
    ("DocumentReference", n_("Documenti")),
    ("Observation", n_("Risultati e misure")),
    ("Immunization", n_("Vaccinazioni")),
    ("MedicationRequest", n_("Prescrizioni di farmaci")),
    ("Appointment", n_("Appuntamenti")),
    ("CarePlan", n_("Piani di cura")),
    ("AuditEvent", n_("Registro degli accessi")),
    ("Coverage", n_("Esenzioni")),
];

/// A resource type a delegation covers, in words.
fn scope_words(c: &Ctx, t: &str) -> String {
    SCOPES.iter().find(|(rt, _)| *rt == t).map_or_else(|| t.to_string(), |(_, it)| c.t(it).to_lowercase())
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
    let err = |field: &str| html! { @for (f, it, en) in errors { @if *f == field { p.field-error id={ (field) "-error" } { (c.lang.pick(it, en)) } } } };
    let today = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
    let body = html! {
        h1 { (c.t("Famiglia e deleghe")) }
        @if !errors.is_empty() { div.alert.error role="alert" { p { (c.t("La delega non è stata registrata: controlla i campi indicati.")) } } }
        @if let Some("delega") = form.get("esito").and_then(|v| v.first()).map(String::as_str) { div.alert.ok role="status" { p { (c.t("Fatto.")) } } }
        h2 { (c.t("Fascicoli che puoi consultare")) }
        p { (c.t("Come genitore consulti il fascicolo dei figli minorenni fino ai 18 anni; come delegato, quello di chi ti ha dato la delega finché è valida.")) }
        ul.cards {
            @if let Some(p) = patient {
                li.card {
                    h3 { (c.t("Il mio fascicolo")) }
                    @if c.record == *p { p { strong { (c.t("Lo stai consultando ora")) } } } @else {
                        form method="post" action="/auth/profile" { input type="hidden" name="csrf" value=(c.csrf()); input type="hidden" name="acting_for" value=(p); input type="hidden" name="next" value="/";
                            button type="submit" { (c.t("Consulta il mio fascicolo")) } }
                    }
                }
            }
            @for r in &reps {
                @let (pid, name) = (&r.patient, &r.name);
                li.card {
                    h3 { (name) }
                    p.muted { @if r.acting_as == ActingAs::Parent { (match r.gender.as_str() { "female" => c.t("Figlia minorenne"), "male" => c.t("Figlio minorenne"), _ => c.t("Figlio/a minorenne") }) } @else { (c.t("Delega ricevuta")) } }
                    @if r.acting_as == ActingAs::Delegate {
                        // what the delegation covers and until when
                        p {
                            (c.t("Comprende")) ": "
                            @if r.scope.is_empty() { (c.t("tutto il fascicolo")) }
                            @else { (r.scope.iter().map(|t| scope_words(c, t)).collect::<Vec<_>>().join(", ")) }
                            @if let Some(u) = &r.until { br; (c.t("Fino al")) " " (show_date(c.lang, u, false)) }
                        }
                    }
                    @if c.record == *pid { p { strong { (c.t("Lo stai consultando ora")) } } } @else {
                        form method="post" action="/auth/profile" { input type="hidden" name="csrf" value=(c.csrf()); input type="hidden" name="acting_for" value=(pid); input type="hidden" name="next" value="/";
                            button type="submit" aria-label={ (c.t("Consulta il fascicolo di")) " " (name) } { (c.t("Consulta")) } }
                    }
                }
            }
        }
        @if c.relation == Relation::Own {
            h2 { (c.t("Deleghe che hai dato")) }
            @if delegations.is_empty() { p.muted { (c.t("Non hai dato deleghe.")) } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { (c.t("Persona")) } th scope="col" { (c.t("Può vedere")) } th scope="col" { (c.t("Validità")) } th scope="col" { span.muted { (c.t("Azioni")) } } } }
                    tbody { @for d in &delegations { tr {
                        th scope="row" { (d.name) br; span.muted { (d.cf) } }
                        td { @if d.scope.is_empty() { (c.t("Tutto il fascicolo")) } @else {
                            (d.scope.iter().map(|s| SCOPES.iter().find(|x| x.0 == s).map_or(s.as_str(), |x| c.t(x.1))).collect::<Vec<_>>().join(", ")) } }
                        td { (show_date(c.lang, &d.from, false)) " – " (show_date(c.lang, &d.until, false)) @if !d.active { " " span.badge { (c.t("terminata")) } } }
                        td { @if d.active {
                            form method="post" action={ "/famiglia/deleghe/" (d.id) "/revoca" } { input type="hidden" name="csrf" value=(c.csrf());
                                button.danger type="submit" aria-label={ (c.t("Revoca la delega a")) " " (d.name) } { (c.t("Revoca")) } }
                        } }
                    } } }
                } }
            }
            h3 { (c.t("Dai una nuova delega")) }
            form method="post" action="/famiglia/deleghe" novalidate {
                input type="hidden" name="csrf" value=(c.csrf());
                div.filters {
                    div { label for="given" { (c.t("Nome")) } input #given name="given" value=(q("given")) required autocomplete="off"; }
                    div { label for="family" { (c.t("Cognome")) } input #family name="family" value=(q("family")) required autocomplete="off"; (err("name")) }
                    div { label for="cf" { (c.t("Codice fiscale")) } input #cf name="cf" value=(q("cf")) required maxlength="16" autocomplete="off" aria-describedby=[errors.iter().any(|e| e.0 == "cf").then_some("cf-error")]; (err("cf")) }
                    div { label for="until" { (c.t("Valida fino al")) } input #until type="date" name="until" min=(today.get(..10).unwrap_or_default()) value=(q("until")) required aria-describedby=[errors.iter().any(|e| e.0 == "until").then_some("until-error")]; (err("until")) }
                }
                fieldset {
                    legend { (c.t("Cosa può vedere (nessuna scelta: tutto il fascicolo)")) }
                    @for (code, it) in SCOPES { label.check { input type="checkbox" name="scope" value=(code) checked[scope_checked(code)]; (c.t(it)) } }
                    (err("scope"))
                }
                button type="submit" { (c.t("Registra la delega")) }
            }
        }
    };
    let mut r = layout(c, c.t("Famiglia e deleghe"), body);
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
