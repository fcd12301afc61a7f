//! The professional's pages: a family doctor's or pediatrician's list of patients, finding a
//! person by codice fiscale, one record as the gate lets the clinician see it, a document, and
//! the emergency opening (break-glass) from the page. Every read goes through the app layer as
//! the clinician, so it is in the citizen's access log; the pages only show.

use super::records::{self, Links};
use super::{finish, footer, head, header_bands, message, show_date, PageResult};
use crate::auth_web::query_map;
use crate::html::Lang;
use crate::i18n::n_;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use fascicolo_app::auth::Session;
use fascicolo_app::clinician::{ClinicalRecord, Standing};
use fascicolo_app::portal::Portal;
use fascicolo_app::{Actor, AppError, Who};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

/// A professional's page context.
pub struct ProCtx {
    pub lang: Lang,
    pub session: Session,
    /// The name of the organisation the professional works for, when the registry has it.
    pub org_name: Option<String>,
    pub demo: bool,
    set_lang: Option<Lang>,
    pub path: String,
}

impl ProCtx {
    fn actor(&self) -> &Actor {
        &self.session.actor
    }
    fn t(&self, it: &'static str) -> &'static str {
        self.lang.t(it)
    }
    fn fail(&self) -> impl Fn(AppError) -> super::Failure {
        let (lang, demo) = (self.lang, self.demo);
        move |error| super::Failure::App { lang, demo, error }
    }
    fn clinical(&self) -> bool {
        matches!(&self.actor().who, Who::Professional { role, .. } if role.clinical())
    }
    fn registry_office(&self) -> bool {
        matches!(&self.actor().who, Who::Professional { role, .. } if role.code() == "asst-admin")
    }
    fn has_list(&self) -> bool {
        matches!(&self.actor().who, Who::Professional { role, .. } if matches!(role.code(), "gp" | "pediatrician"))
    }
}

/// A signed-in professional, or the response that says why not (sign in, a citizen's profile).
async fn pro_ctx(state: &AppState, headers: &HeaderMap, path: &str, raw: Option<&str>) -> Result<ProCtx, Response> {
    let (lang, set_lang) = super::lang_of(headers, raw);
    let session = super::signed_in(state, headers, lang, path, raw).await?;
    if !matches!(session.actor.who, Who::Professional { .. }) {
        return Err(message(
            state,
            lang,
            StatusCode::FORBIDDEN,
            lang.t("Area riservata ai professionisti"),
            lang.t("Queste pagine sono per medici, pediatri, specialisti e infermieri. Il tuo fascicolo è nella pagina iniziale; se hai anche un profilo professionale, attivalo dalla pagina del tuo profilo."),
            Some(("/me", lang.t("Vai al tuo profilo"))),
        ));
    }
    let org_name = match &session.actor.who {
        Who::Professional { organization: Some(o), .. } => Portal::new(state.fhir.clone()).organization_name(&session.actor, o).await,
        _ => None,
    };
    Ok(ProCtx { lang, demo: state.auth.demo, set_lang, path: path.to_string(), session, org_name })
}

/// A professional's page: the portal's header and footer, the professional's own bar.
/// The context of a professional's form: signed in as a professional, with the session's CSRF
/// token (a forged form is refused with nothing done).
async fn pro_form_ctx(state: &AppState, headers: &HeaderMap, path: &str, sent: &str) -> Result<ProCtx, Response> {
    let c = pro_ctx(state, headers, path, None).await?;
    if !fascicolo_app::auth::same_secret(&c.session.csrf, sent) {
        tracing::warn!("professional form refused: missing or wrong CSRF token");
        return Err(super::csrf_refused(state, c.lang));
    }
    Ok(c)
}

fn pro_layout(c: &ProCtx, title: &str, body: Markup) -> Response {
    let lang = c.lang;
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(lang, title))
            body {
                (header_bands(lang, &c.path, c.demo))
                section.record aria-label=(lang.t("Profilo attivo")) { div.wrap {
                    p style="margin:0" role="status" {
                        (lang.t("Profilo attivo")) ": " strong #pro-profile { (crate::auth_web::profile_label(lang, &c.actor().who, &c.session.person, c.org_name.as_deref())) }
                    }
                    @if c.clinical() {
                        a.btn.secondary href="/professionista" aria-current=[(c.path == "/professionista").then_some("page")] {
                            @if c.has_list() { (lang.t("I miei assistiti")) } @else { (lang.t("Cerca un assistito")) }
                        }
                    }
                    a.btn.secondary href="/me" { (lang.t("Il tuo profilo")) }
                    form.inline method="post" action="/auth/logout" {
                        input type="hidden" name="csrf" value=(c.session.csrf);
                        button.secondary type="submit" { (lang.t("Esci")) }
                    }
                } }
                main #main tabindex="-1" { (body) }
                (footer(lang))
            }
        }
    };
    finish(c.set_lang, StatusCode::OK, markup)
}

fn find_form(c: &ProCtx, value: &str, error: Option<&str>) -> Markup {
    html! {
        form.filters method="get" action="/professionista" role="search" {
            div {
                label for="cf" { (c.t("Codice fiscale dell'assistito")) }
                input #cf name="cf" value=(value) autocomplete="off" spellcheck="false" maxlength="16" size="18"
                    aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| "cf-error")];
                @if let Some(e) = error { p.field-error #cf-error { (e) } }
            }
            button type="submit" { (c.t("Apri il fascicolo")) }
        }
    }
}

/// `GET /professionista[?cf=]`: the family doctor's list, and finding a person by code.
pub async fn home(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = pro_ctx(&state, &headers, "/professionista", raw.as_deref()).await?;
    let portal = Portal::new(state.fhir.clone());
    let q = query_map(raw.as_deref());
    if !c.clinical() {
        let registry = c.registry_office();
        let cup = matches!(&c.actor().who, Who::Professional { role, .. } if role.code() == "cup-operator");
        let typed = q.get("cf").map(|s| s.trim().to_string()).unwrap_or_default();
        let mut error = None;
        if (registry || cup) && !typed.is_empty() {
            match portal.find_by_cf(c.actor(), &typed).await {
                Ok(id) if cup => return Ok(Redirect::to(&format!("/professionista/cup/{id}")).into_response()),
                Ok(id) => return Ok(Redirect::to(&format!("/professionista/anagrafe/{id}")).into_response()),
                Err(AppError::BadRequest(_)) => error = Some(c.t("Il codice fiscale non è valido: controlla le 16 lettere e cifre.")),
                Err(AppError::NotFound(_)) => error = Some(c.t("Nessuna persona con questo codice fiscale nell'anagrafe regionale.")),
                Err(e) => return Err(c.fail()(e)),
            }
        }
        let body = html! {
            h1 { (c.t("Area professionisti")) }
            div.alert role="status" { p { (c.t("Il profilo amministrativo non consulta i fascicoli clinici: la legge riserva la consultazione ai professionisti che hanno in cura la persona.")) } }
            @if registry || cup {
                @if registry {
                    h2 { (c.t("Anagrafe: scelta del medico allo sportello")) }
                    p { (c.t("Cerca la persona per codice fiscale per cambiarne il medico o il pediatra. Ogni operazione è registrata nel suo elenco degli accessi.")) }
                } @else {
                    h2 { (c.t("Sportello CUP: prenotazioni")) }
                    p { (c.t("Cerca la persona per codice fiscale per prenotare, spostare o disdire le sue visite ed esami. Ogni operazione è registrata nel suo elenco degli accessi.")) }
                    p { a href="/professionista/agende" { (c.t("Agende della struttura")) } }
                }
                form.filters method="get" action="/professionista" role="search" {
                    div {
                        label for="cf" { (c.t("Codice fiscale della persona")) }
                        input #cf name="cf" value=(typed) autocomplete="off" spellcheck="false" maxlength="16" size="18"
                            aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| "cf-error")];
                        @if let Some(e) = error { p.field-error #cf-error { (e) } }
                    }
                    button type="submit" { (c.t("Cerca")) }
                }
            }
        };
        return Ok(pro_layout(&c, c.t("Area professionisti"), body));
    }
    let typed = q.get("cf").map(|s| s.trim().to_string()).unwrap_or_default();
    let mut error = None;
    if !typed.is_empty() {
        match portal.find_by_cf(c.actor(), &typed).await {
            Ok(id) => return Ok(Redirect::to(&format!("/professionista/assistiti/{id}")).into_response()),
            Err(AppError::BadRequest(_)) => error = Some(c.t("Il codice fiscale non è valido: controlla le 16 lettere e cifre.")),
            Err(AppError::NotFound(_)) => error = Some(c.t("Nessuna persona con questo codice fiscale nell'anagrafe regionale.")),
            Err(e) => return Err(c.fail()(e)),
        }
    }
    let list = if c.has_list() { portal.assisted(c.actor()).await.map_err(c.fail())? } else { Vec::new() };
    let title = if c.has_list() { c.t("I miei assistiti") } else { c.t("Cerca un assistito") };
    let body = html! {
        h1 { (title) }
        p.lead { (c.t("Apri il fascicolo di una persona che hai in cura. Vedi ciò che ha acconsentito a mostrare, senza i documenti che ha oscurato; ogni consultazione è registrata nel suo elenco degli accessi.")) }
        (find_form(&c, &typed, error))
        @if c.has_list() {
            h2 #elenco { (c.t("Elenco")) " " span.muted { "(" (list.len()) ")" } }
            @if list.is_empty() {
                p { (c.t("Nessuna persona ti ha scelto come medico.")) }
            } @else {
                table.stack {
                    caption.muted { (c.t("Le persone che ti hanno scelto, per cognome")) }
                    thead { tr { th scope="col" { (c.t("Nome e cognome")) } th scope="col" { (c.t("Codice fiscale")) } th scope="col" { (c.t("Data di nascita")) } } }
                    tbody { @for a in &list {
                        tr {
                            th scope="row" { a href={ "/professionista/assistiti/" (a.patient) } { (a.name) } }
                            td data-label=(c.t("Codice fiscale")) { code { (a.cf) } }
                            td data-label=(c.t("Data di nascita")) { (show_date(c.lang, &a.birth_date, false)) }
                        }
                    } }
                }
            }
        }
    };
    Ok(pro_layout(&c, title, body))
}

/// Why a record does not open, in words.
fn closed_reason(c: &ProCtx, s: Standing) -> &'static str {
    match (s.consent, s.care) {
        (false, _) => c.t("La persona non ha dato il consenso alla consultazione del fascicolo (o l'ha revocato): i professionisti non possono vederlo, salvo in emergenza."),
        (true, false) => c.t("Non risulti tra chi ha in cura la persona: non sei il suo medico e non ha con te un ricovero, una visita prenotata o un piano di cura aperti."),
        (true, true) => "",
    }
}

/// `GET /professionista/assistiti/{id}`: one record as the gate lets the clinician see it.
pub async fn record(State(state): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let path = format!("/professionista/assistiti/{id}");
    let c = pro_ctx(&state, &headers, &path, raw.as_deref()).await?;
    let portal = Portal::new(state.fhir.clone());
    let r: ClinicalRecord = portal.clinical_record(c.actor(), &id).await.map_err(c.fail())?;
    let q = query_map(raw.as_deref());
    let minutes = state.fhir.policy().break_glass_minutes;
    let name = r.patient.as_ref().map(super::person_name).unwrap_or_default();
    let title = if name.is_empty() { c.t("Fascicolo non consultabile").to_string() } else { name.clone() };
    // newest first, 20 a page like the citizen's list
    let pages = r.documents.len().div_ceil(super::documents::PAGE_SIZE).max(1);
    let page: usize = q.get("pagina").and_then(|p| p.parse().ok()).unwrap_or(1).clamp(1, pages);
    let shown = &r.documents[(page - 1) * super::documents::PAGE_SIZE..(page * super::documents::PAGE_SIZE).min(r.documents.len())];
    let body = html! {
        @if let Some(p) = &r.patient {
            (record_head(&c, &r.patient_id, p, r.standing, Tab::Documents, minutes))
            @if q.contains_key("aperto") && !r.standing.by_emergency() {
                div.alert.ok role="status" { p { (c.t("Il fascicolo è già consultabile: l'accesso in emergenza non serve.")) } }
            }
            h2 { (c.t("Documenti")) " " span.muted { "(" (r.documents.len()) ")" } }
            p.muted { (c.t("Non sono elencati i documenti che la persona ha oscurato né quelli a maggior tutela (art. 6) che non ha reso visibili.")) }
            @if r.documents.is_empty() {
                p { (c.t("Nessun documento consultabile.")) }
            } @else {
                ul.doclist { @for d in shown {
                    li { div {
                        a href={ "/professionista/documenti/" (d.id) } { strong { (super::doc_name(c.lang, &d.title)) } }
                        br;
                        span.muted { (show_date(c.lang, &d.date, false)) @if !d.organization.is_empty() { " · " (d.organization) } @if !d.author.is_empty() { " · " (d.author) } }
                    } }
                } }
                @if pages > 1 {
                    nav.pager aria-label=(c.t("Pagine")) {
                        @if page > 1 { a.btn.secondary href={ (path) "?pagina=" (page - 1) } rel="prev" { "‹ " (c.t("Precedenti")) } }
                        span { (c.t("Pagina")) " " (page) " " (c.t("di")) " " (pages) }
                        @if page < pages { a.btn.secondary href={ (path) "?pagina=" (page + 1) } rel="next" { (c.t("Successivi")) " ›" } }
                    }
                }
            }
        } @else {
            p { a href="/professionista" { "‹ " (if c.has_list() { c.t("I miei assistiti") } else { c.t("Cerca un assistito") }) } }
            h1 { (title) }
            div.alert.warn role="status" #record-closed {
                p { strong { (c.t("Non puoi consultare questo fascicolo.")) } " " (closed_reason(&c, r.standing)) }
            }
            h2 { (c.t("Accesso in emergenza")) }
            p { (c.t("Se la persona è in pericolo e serve il fascicolo per curarla, puoi aprirlo dichiarando il motivo. L'accesso dura")) " " (minutes) " "
                (c.t("minuti, è registrato con il motivo e la persona riceve un avviso. I documenti oscurati restano esclusi.")) }
            form method="post" action={ "/professionista/assistiti/" (r.patient_id) "/emergenza" } {
                input type="hidden" name="csrf" value=(c.session.csrf);
                label for="reason" { (c.t("Motivo dell'emergenza (almeno 10 caratteri)")) }
                @if let Some(e) = q.get("errore") {
                    @if e == "motivo" {
                        p.field-error #reason-error { (c.t("Scrivi il motivo: da 10 a 2.000 caratteri.")) }
                    }
                }
                textarea #reason name="reason" rows="3" required minlength="10" maxlength="2000" aria-describedby=[q.get("errore").map(|_| "reason-error")] {}
                p { button.danger type="submit" { (c.t("Apri in emergenza")) } }
            }
        }
    };
    Ok(pro_layout(&c, &title, body))
}

#[derive(Debug, Deserialize)]
pub struct EmergencyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// `POST /professionista/assistiti/{id}/emergenza`: break-glass, then the record.
pub async fn emergency(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<EmergencyForm>,
) -> PageResult {
    let path = format!("/professionista/assistiti/{id}");
    let c = pro_form_ctx(&state, &headers, &path, &f.csrf).await?;
    let portal = Portal::new(state.fhir.clone());
    // already open (consent and care): nothing to declare
    let r = portal.clinical_record(c.actor(), &id).await.map_err(c.fail())?;
    if r.standing.consent && r.standing.care {
        return Ok(Redirect::to(&format!("{path}?aperto=1")).into_response());
    }
    // the app layer checks the reason (10 to 2,000 characters); a refusal comes back to the form
    match state.fhir.break_glass(c.actor(), &id, &f.reason).await {
        Ok(_) => {}
        Err(AppError::BadRequest(_)) => return Ok(Redirect::to(&format!("{path}?errore=motivo")).into_response()),
        Err(e) => return Err(c.fail()(e)),
    }
    Ok(Redirect::to(&path).into_response())
}

/// `GET /professionista/documenti/{id}`: a document, through the gate as the clinician.
pub async fn document(State(state): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let path = format!("/professionista/documenti/{id}");
    let c = pro_ctx(&state, &headers, &path, raw.as_deref()).await?;
    if !c.clinical() {
        // (the gate would not show it either: this says why instead of "not found")
        return Err(c.fail()(AppError::Forbidden("administrative profiles do not consult clinical records".into())));
    }
    let portal = Portal::new(state.fhir.clone());
    let detail = portal.document(c.actor(), &id).await.map_err(c.fail())?;
    let d = &detail.doc;
    let (rendering, note) = super::documents::content(&state, &detail).await.map_err(c.fail())?;
    let patient = detail.resource["subject"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/")).map(String::from);
    let body = html! {
        @if let Some(p) = &patient { p { a href={ "/professionista/assistiti/" (p) } { "‹ " (c.t("Torna al fascicolo")) } } }
        h1 { (super::doc_name(c.lang, &d.title)) }
        dl.meta {
            dt { (c.t("Tipo")) } dd { (super::doc_name(c.lang, &d.type_display)) @if !d.type_code.is_empty() { span.muted { " (LOINC " (d.type_code) ")" } } }
            dt { (c.t("Data")) } dd { (show_date(c.lang, &d.date, true)) }
            @if !d.organization.is_empty() { dt { (c.t("Struttura")) } dd { (d.organization) } }
            @if !d.author.is_empty() { dt { (c.t("Autore")) } dd { (d.author) } }
            @if let Some(n) = &d.nre { dt { "NRE" } dd { (n) } }
            dt { (c.t("Stato")) } dd { @if detail.status == "current" { (c.t("Versione in vigore")) } @else { (c.t("Sostituito da una versione più recente")) } }
        }
        @if d.has_original {
            p {
                a.btn href={ "/documents/" (d.id) "/pdf" } download { (c.t("Scarica il PDF")) } " "
                a.btn.secondary href={ "/documents/" (d.id) "/original" } download { (c.t("Scarica l'originale (CDA)")) }
            }
        }
        @if d.has_file { p { a.btn href={ "/professionista/documenti/" (d.id) "/file" } { (c.t("Apri il file")) } } }
        (super::documents::content_markup(c.lang, c.t("Nota del cittadino"), note.as_deref(), rendering))
    };
    Ok(pro_layout(&c, super::doc_name(c.lang, &d.title), body))
}

/// `GET /professionista/documenti/{id}/file`: a document's inline file, through the gate.
pub async fn file(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> PageResult {
    let c = pro_ctx(&state, &headers, &format!("/professionista/documenti/{id}/file"), None).await?;
    if !c.clinical() {
        return Err(c.fail()(AppError::Forbidden("administrative profiles do not consult clinical records".into())));
    }
    let (ct, bytes) = Portal::new(state.fhir.clone()).document_file(c.actor(), &id).await.map_err(c.fail())?;
    Ok(super::documents::file_response(&id, ct, bytes))
}

/// The pages of one record, as tabs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tab {
    Documents,
    Results,
    Vaccinations,
    Prescriptions,
    Timeline,
}

const TABS: [(Tab, &str, &str); 5] = [
    (Tab::Documents, "", n_("Documenti")),
    (Tab::Results, "/risultati", n_("Risultati")),
    (Tab::Vaccinations, "/vaccinazioni", n_("Vaccinazioni")),
    (Tab::Prescriptions, "/prescrizioni", n_("Prescrizioni")),
    (Tab::Timeline, "/cronologia", n_("Cronologia")),
];

/// The top of every page of an open record: who it is, the emergency banner when opened by
/// break-glass, and the record's tabs.
fn record_head(c: &ProCtx, id: &str, p: &serde_json::Value, standing: Standing, active: Tab, minutes: i64) -> Markup {
    html! {
        p { a href="/professionista" { "‹ " (if c.has_list() { c.t("I miei assistiti") } else { c.t("Cerca un assistito") }) } }
        h1 { (super::person_name(p)) }
        @if standing.by_emergency() {
            div.alert.emergency role="status" #emergency-open {
                p { strong { (c.t("Accesso in emergenza in corso.")) } " "
                    (c.t("Vedi il fascicolo senza consenso perché hai dichiarato un'emergenza: ogni consultazione è registrata e la persona ne è avvisata. L'accesso termina da solo dopo"))
                    " " (minutes) " " (c.t("minuti.")) }
            }
        }
        dl.meta {
            dt { (c.t("Codice fiscale")) } dd { code { (fascicolo_app::auth::cf_of(p).unwrap_or("—")) } }
            dt { (c.t("Data di nascita")) } dd { (show_date(c.lang, p["birthDate"].as_str().unwrap_or_default(), false)) }
            dt { (c.t("Sesso")) } dd { (match p["gender"].as_str() { Some("female") => c.t("Femmina"), Some("male") => c.t("Maschio"), _ => "—" }) }
        }
        nav.tabs aria-label=(c.t("Sezioni del fascicolo")) { ul {
            @for (tab, sub, label) in TABS {
                li { a href={ "/professionista/assistiti/" (id) (sub) } aria-current=[(tab == active).then_some("page")] { (c.t(label)) } }
            }
        } }
    }
}

/// An open record's page: the clinician, the Patient (read through the gate, so logged), or
/// the response that says why not (the record page explains a closed record and offers the
/// emergency opening).
async fn open_record(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    sub: &str,
    raw: Option<&str>,
) -> Result<(ProCtx, serde_json::Value, Standing), Response> {
    let c = pro_ctx(state, headers, &format!("/professionista/assistiti/{id}{sub}"), raw).await?;
    // who may open a record (clinicians only, with consent and care, or in an emergency) is the
    // app layer's decision: an operator's refusal comes back from it as 403
    let portal = Portal::new(state.fhir.clone());
    match portal.clinical_patient(c.actor(), id).await {
        Ok((standing, Some(p))) => Ok((c, p, standing)),
        Ok((_, None)) => Err(Redirect::to(&format!("/professionista/assistiti/{id}")).into_response()),
        Err(e) => Err(c.fail()(e).into_response()),
    }
}

/// `GET /professionista/assistiti/{id}/risultati`: the record's results, as the citizen sees them.
pub async fn results(State(state): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let (c, p, standing) = open_record(&state, &headers, &id, "/risultati", raw.as_deref()).await?;
    let series = Portal::new(state.fhir.clone()).clinical_results(c.actor(), &id, None).await.map_err(c.fail())?;
    let minutes = state.fhir.policy().break_glass_minutes;
    let body = html! {
        (record_head(&c, &id, &p, standing, Tab::Results, minutes))
        @if series.is_empty() {
            p { (c.t("Nessun risultato consultabile.")) }
        } @else {
            (records::results_table(c.lang, &series, &Links::clinician(&id)))
        }
    };
    Ok(pro_layout(&c, &format!("{} · {}", c.t("Risultati"), super::person_name(&p)), body))
}

/// `GET /professionista/assistiti/{id}/risultati/{code}`: one result's chart.
pub async fn chart(
    State(state): State<AppState>,
    Path((id, code)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> PageResult {
    let (c, p, _) = open_record(&state, &headers, &id, &format!("/risultati/{code}"), raw.as_deref()).await?;
    if code.is_empty() || code.len() > 64 || !code.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.') {
        return Err(c.fail()(AppError::NotFound("code".into())));
    }
    let all =
        Portal::new(state.fhir.clone()).clinical_results(c.actor(), &id, Some(&records::code_param(&code))).await.map_err(c.fail())?;
    let series = records::series_of(&all, &code);
    if series.is_empty() {
        return Err(c.fail()(AppError::NotFound("no values".into())));
    }
    let title = records::chart_title(c.lang, &series);
    let body = html! {
        p.muted { (super::person_name(&p)) }
        (records::chart_body(c.lang, &series, &title, &Links::clinician(&id)))
    };
    Ok(pro_layout(&c, &title, body))
}

/// `GET /professionista/assistiti/{id}/vaccinazioni`
pub async fn vaccinations(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> PageResult {
    let (c, p, standing) = open_record(&state, &headers, &id, "/vaccinazioni", raw.as_deref()).await?;
    let list = Portal::new(state.fhir.clone()).clinical_list(c.actor(), &id, "Immunization", "-date").await.map_err(c.fail())?;
    let minutes = state.fhir.policy().break_glass_minutes;
    let body = html! {
        (record_head(&c, &id, &p, standing, Tab::Vaccinations, minutes))
        h2 { (c.t("Vaccinazioni")) }
        @if list.is_empty() {
            p { (c.t("Nessuna vaccinazione consultabile.")) }
        } @else {
            (records::vaccination_table(c.lang, &list, &Links::clinician(&id)))
        }
    };
    Ok(pro_layout(&c, &format!("{} · {}", c.t("Vaccinazioni"), super::person_name(&p)), body))
}

/// `GET /professionista/assistiti/{id}/prescrizioni`
pub async fn prescriptions(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> PageResult {
    let (c, p, standing) = open_record(&state, &headers, &id, "/prescrizioni", raw.as_deref()).await?;
    let portal = Portal::new(state.fhir.clone());
    let meds = portal.clinical_list(c.actor(), &id, "MedicationRequest", "-authoredon").await.map_err(c.fail())?;
    let services = portal.clinical_list(c.actor(), &id, "ServiceRequest", "-authored").await.map_err(c.fail())?;
    let minutes = state.fhir.policy().break_glass_minutes;
    let body = html! {
        (record_head(&c, &id, &p, standing, Tab::Prescriptions, minutes))
        h2 { (c.t("Prescrizioni")) }
        @if meds.is_empty() && services.is_empty() {
            p { (c.t("Nessuna prescrizione consultabile.")) }
        } @else {
            (records::prescription_cards(c.lang, &meds, &services, &Links::clinician(&id)))
        }
    };
    Ok(pro_layout(&c, &format!("{} · {}", c.t("Prescrizioni"), super::person_name(&p)), body))
}

/// `GET /professionista/assistiti/{id}/cronologia[?tipo=]`
pub async fn timeline(State(state): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let (c, p, standing) = open_record(&state, &headers, &id, "/cronologia", raw.as_deref()).await?;
    let kind = query_map(raw.as_deref()).get("tipo").cloned().unwrap_or_default();
    let want = |k: &str| kind.is_empty() || kind == k;
    let portal = Portal::new(state.fhir.clone());
    let mut data = records::TimelineData::default();
    if want("documenti") {
        data.documents = portal.clinical_record(c.actor(), &id).await.map_err(c.fail())?.documents;
    }
    if want("ricoveri") {
        data.encounters = portal.clinical_list(c.actor(), &id, "Encounter", "-date").await.map_err(c.fail())?;
    }
    if want("vaccinazioni") {
        data.immunizations = portal.clinical_list(c.actor(), &id, "Immunization", "-date").await.map_err(c.fail())?;
    }
    if want("prescrizioni") {
        data.prescriptions = portal.clinical_list(c.actor(), &id, "MedicationRequest", "-authoredon").await.map_err(c.fail())?;
    }
    let minutes = state.fhir.policy().break_glass_minutes;
    let body = html! {
        (record_head(&c, &id, &p, standing, Tab::Timeline, minutes))
        h2 { (c.t("Cronologia")) }
        (records::timeline_body(c.lang, data, &kind, &Links::clinician(&id)))
    };
    Ok(pro_layout(&c, &format!("{} · {}", c.t("Cronologia"), super::person_name(&p)), body))
}

/// `GET /professionista/anagrafe/{id}`: the registry office's desk: a person's doctor and the
/// doctors they may choose, with free places.
pub async fn desk(State(state): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = pro_ctx(&state, &headers, &format!("/professionista/anagrafe/{id}"), raw.as_deref()).await?;
    let ceilings = state.fhir.policy().ceilings;
    let choice = Portal::new(state.fhir.clone()).doctor_choice_at_desk(c.actor(), &id, ceilings).await.map_err(c.fail())?;
    let q = query_map(raw.as_deref());
    // the person's name comes with the choice: one read of the Patient, one entry in their log
    let name = choice.name.clone();
    let body = html! {
        p { a href="/professionista" { "‹ " (c.t("Cerca un'altra persona")) } }
        h1 { (name) }
        @match q.get("esito").map(String::as_str) {
            Some("scelto") => div.alert.ok role="status" { p { (c.t("Scelta registrata: il nuovo medico è già attivo.")) } },
            Some("pieno") => div.alert.error role="alert" { p { (c.t("Il medico scelto non ha più posti liberi: qualcuno ha preso l'ultimo. Scegline un altro.")) } },
            _ => {},
        }
        section.card #current-doctor {
            h2 style="margin-top:0" { (c.t("Medico attuale")) }
            @match &choice.current {
                Some(d) => p { strong { (d.name) } br; (super::doctor::role_word(c.lang, d)) },
                None => p { (c.t("Nessun medico scelto.")) },
            }
        }
        p { a href={ "/professionista/anagrafe/" (id) "/esenzioni" } { (c.t("Esenzioni")) " ›" } }
        h2 { (c.t("Cambia medico")) }
        p.muted { (choice.age) " " (c.t("anni")) }
        (super::doctor::candidates_table(c.lang, &choice, |d| html! {
            form.inline method="post" action={ "/professionista/anagrafe/" (id) "/medico" } {
                input type="hidden" name="csrf" value=(c.session.csrf);
                input type="hidden" name="medico" value=(d.practitioner);
                button.secondary type="submit" aria-label={ (c.t("Assegna")) " " (d.name) } { (c.t("Assegna")) }
            }
        }))
    };
    Ok(pro_layout(&c, &name, body))
}

#[derive(Debug, Deserialize)]
pub struct DeskForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    medico: String,
}

/// `POST /professionista/anagrafe/{id}/medico`: the change, at the desk.
pub async fn desk_choose(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, Form(f): Form<DeskForm>) -> PageResult {
    let path = format!("/professionista/anagrafe/{id}");
    let c = pro_form_ctx(&state, &headers, &path, &f.csrf).await?;
    let ceilings = state.fhir.policy().ceilings;
    match Portal::new(state.fhir.clone()).choose_doctor_at_desk(c.actor(), &id, ceilings, &f.medico).await {
        Ok(_) => Ok(Redirect::to(&format!("{path}?esito=scelto")).into_response()),
        Err(AppError::Conflict(m)) if m.contains("no free places") => Ok(Redirect::to(&format!("{path}?esito=pieno")).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

async fn desk_exemptions_page(
    state: &AppState,
    id: &str,
    raw: Option<&str>,
    headers: &HeaderMap,
    f: &std::collections::HashMap<String, String>,
    errors: &[fascicolo_app::portal::FieldError],
) -> PageResult {
    use super::exemptions::{declaration_form, exemptions_table, outcome};
    let path = format!("/professionista/anagrafe/{id}/esenzioni");
    let c = pro_ctx(state, headers, &path, raw).await?;
    let ex = Portal::new(state.fhir.clone()).exemptions_at_desk(c.actor(), id).await.map_err(c.fail())?;
    let q = query_map(raw);
    let body = html! {
        p { a href={ "/professionista/anagrafe/" (id) } { "‹ " (ex.name) } }
        h1 { (c.t("Esenzioni")) ": " (ex.name) }
        (outcome(c.lang, &q))
        @if !errors.is_empty() { div.alert.error role="alert" { p { (c.t("L'autocertificazione non è stata registrata: controlla i campi indicati.")) } } }
        p.muted { (ex.age) " " (c.t("anni")) }
        (exemptions_table(c.lang, &ex, |e| html! {
            form.inline method="post" action={ (path) "/" (e.id) "/revoca" } {
                input type="hidden" name="csrf" value=(c.session.csrf);
                button.secondary type="submit" aria-label={ (c.t("Revoca")) " " (e.code) } { (c.t("Revoca")) }
            }
        }))
        h2 { (c.t("Registra un'autocertificazione firmata allo sportello")) }
        @if let Some(held) = ex.income_in_force().filter(|_| errors.is_empty()) {
            p { (c.t("È già in corso l'esenzione per reddito")) " " strong { (held.code) } ". " (c.t("Per dichiararne un'altra revoca prima quella.")) }
        } @else {
            (declaration_form(c.lang, &path, &c.session.csrf, f, errors))
        }
    };
    let mut r = pro_layout(&c, c.t("Esenzioni"), body);
    if !errors.is_empty() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(r)
}

/// `GET /professionista/anagrafe/{id}/esenzioni`: the registry office's desk: a person's
/// exemptions, recording a self-certification signed at the desk, revoking one.
pub async fn desk_exemptions(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> PageResult {
    desk_exemptions_page(&state, &id, raw.as_deref(), &headers, &Default::default(), &[]).await
}

/// `POST /professionista/anagrafe/{id}/esenzioni`: a self-certification, at the desk.
pub async fn desk_declare(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> PageResult {
    let f: std::collections::HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let path = format!("/professionista/anagrafe/{id}/esenzioni");
    let c = pro_form_ctx(&state, &headers, &path, f.get("csrf").map_or("", String::as_str)).await?;
    match Portal::new(state.fhir.clone()).declare_exemption_at_desk(c.actor(), &id, &super::exemptions::form_of(&f)).await {
        Ok(_) => Ok(Redirect::to(&format!("{path}?esito=dichiarata")).into_response()),
        Err(Ok(errors)) => desk_exemptions_page(&state, &id, None, &headers, &f, &errors).await,
        Err(Err(e)) => Err(c.fail()(e)),
    }
}

/// `POST /professionista/anagrafe/{id}/esenzioni/{cov}/revoca`
pub async fn desk_revoke(
    State(state): State<AppState>,
    Path((id, cov)): Path<(String, String)>,
    headers: HeaderMap,
    Form(f): Form<DeskForm>,
) -> PageResult {
    let path = format!("/professionista/anagrafe/{id}/esenzioni");
    let c = pro_form_ctx(&state, &headers, &path, &f.csrf).await?;
    match Portal::new(state.fhir.clone()).revoke_exemption_at_desk(c.actor(), &id, &cov).await {
        Ok(_) => Ok(Redirect::to(&format!("{path}?esito=revocata")).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// `GET /professionista/cup/{id}`: the CUP desk: a person's prescriptions to book and their
/// appointments, with cancel.
pub async fn cup(State(state): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let path = format!("/professionista/cup/{id}");
    let c = pro_ctx(&state, &headers, &path, raw.as_deref()).await?;
    let (name, prescriptions, bookings) = Portal::new(state.fhir.clone()).booking_desk(c.actor(), &id).await.map_err(c.fail())?;
    let q = query_map(raw.as_deref());
    let now = fascicolo_fhir::datetime::now_ms();
    let open: Vec<_> = prescriptions.iter().filter(|p| p.booked_as.is_none()).collect();
    let body = html! {
        p { a href="/professionista" { "‹ " (c.t("Cerca un'altra persona")) } }
        h1 { (name) }
        (super::booking::outcome(c.lang, &q))
        h2 { (c.t("Prescrizioni da prenotare")) }
        @if open.is_empty() { p #nothing-to-book { (c.t("Nessuna prescrizione da prenotare.")) } } @else {
            ul #to-book { @for p in &open { li {
                a href={ (path) "/prenota/" (p.id) } { (p.name) }
                " " span.muted { @if let Some(n) = &p.nre { "NRE " (n) } @if let Some(pr) = p.priority { " · " (c.t("classe")) " " (pr.code()) } }
            } } }
        }
        h2 { (c.t("Appuntamenti")) }
        @if bookings.is_empty() { p.muted { (c.t("Nessun appuntamento in programma.")) } } @else {
            div.scroll { table.stack #desk-bookings {
                thead { tr { th scope="col" { (c.t("Quando")) } th scope="col" { (c.t("Prestazione")) } th scope="col" { (c.t("Dove")) }
                    th scope="col" { (c.t("Stato")) } th scope="col" { span.sr-only { (c.t("Azione")) } } } }
                tbody { @for b in &bookings { tr {
                    th scope="row" { (show_date(c.lang, &fascicolo_fhir::datetime::format_instant(b.start_ms), true)) }
                    td data-label=(c.t("Prestazione")) { (b.service) }
                    td data-label=(c.t("Dove")) { (b.site) }
                    td data-label=(c.t("Stato")) { @match b.status.as_str() {
                        "booked" => (c.t("Prenotato")),
                        "fulfilled" => (c.t("Eseguito")),
                        "noshow" => (c.t("Mancata presentazione")),
                        _ => { (c.t("Disdetto")) @if b.late { " (" (c.t("tardiva")) ")" } },
                    } }
                    td { @if b.status == "booked" && b.start_ms > now {
                        form.inline method="post" action={ (path) "/appuntamenti/" (b.id) "/disdetta" } {
                            input type="hidden" name="csrf" value=(c.session.csrf);
                            button.secondary type="submit" aria-label={ (c.t("Disdici")) " " (b.service) } { (c.t("Disdici")) }
                        }
                    } @else if b.status == "booked" {
                        form.inline method="post" action={ (path) "/appuntamenti/" (b.id) "/esito" } {
                            input type="hidden" name="csrf" value=(c.session.csrf);
                            button type="submit" name="presente" value="1" aria-label={ (c.t("Presentato")) " " (b.service) } { (c.t("Presentato")) }
                            " "
                            button.secondary type="submit" name="presente" value="0" aria-label={ (c.t("Non presentato")) " " (b.service) } { (c.t("Non presentato")) }
                        }
                    } }
                } } }
            } }
        }
    };
    Ok(pro_layout(&c, &name, body))
}

/// `GET /professionista/cup/{id}/prenota/{sr}[?dal=]`: the options for one prescription, at the desk.
pub async fn cup_options(
    State(state): State<AppState>,
    Path((id, sr)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> PageResult {
    let path = format!("/professionista/cup/{id}");
    let c = pro_ctx(&state, &headers, &path, raw.as_deref()).await?;
    let q = query_map(raw.as_deref());
    let from = q.get("dal").filter(|s| !s.is_empty()).and_then(|s| fascicolo_domain::rome::date_of(s));
    let found = Portal::new(state.fhir.clone()).find(c.actor(), Some(&id), &sr, from).await.map_err(c.fail())?;
    let body = html! {
        p { a href=(path) { "‹ " (c.t("Torna alla persona")) } }
        h1 { (c.t("Scegli data e luogo")) }
        (super::booking::outcome(c.lang, &q))
        (super::booking::prescription_card(c.lang, &found.prescription, found.deadline))
        form.filters method="get" action={ (path) "/prenota/" (sr) } {
            div { label for="dal" { (c.t("Cerca dal giorno")) } input #dal name="dal" type="date" value=(from.map(|d| d.to_string()).unwrap_or_default()); }
            button.secondary type="submit" { (c.t("Cerca")) }
        }
        @if found.deadline.is_some() { (super::booking::waiver_note(c.lang)) }
        (super::booking::options_table(c.lang, &found, &format!("{path}/prenota/{sr}/tutela"), &c.session.csrf, |o| html! {
            form.inline method="post" action={ (path) "/prenota/" (sr) } {
                input type="hidden" name="csrf" value=(c.session.csrf);
                input type="hidden" name="slot" value=(o.key);
                button type="submit" aria-label={ (c.t("Prenota")) " " (o.agenda.site) } { (c.t("Prenota")) }
            }
        }))
    };
    Ok(pro_layout(&c, c.t("Scegli data e luogo"), body))
}

/// `POST /professionista/cup/{id}/prenota/{sr}`: book at the desk (written as the operator).
pub async fn cup_book(
    State(state): State<AppState>,
    Path((id, sr)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> PageResult {
    let f: std::collections::HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let path = format!("/professionista/cup/{id}");
    let c = pro_form_ctx(&state, &headers, &path, f.get("csrf").map_or("", String::as_str)).await?;
    let slot = f.get("slot").cloned().unwrap_or_default();
    match Portal::new(state.fhir.clone()).book(c.actor(), Some(&id), &sr, &slot).await {
        Ok(_) => Ok(Redirect::to(&format!("{path}?esito=prenotato")).into_response()),
        Err(AppError::Conflict(m)) if m.contains("taken") => Ok(Redirect::to(&format!("{path}/prenota/{sr}?esito=preso")).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// `POST /professionista/cup/{id}/prenota/{sr}/tutela`: the protection route asked at the desk.
pub async fn cup_protection(
    State(state): State<AppState>,
    Path((id, sr)): Path<(String, String)>,
    headers: HeaderMap,
    Form(f): Form<DeskForm>,
) -> PageResult {
    let path = format!("/professionista/cup/{id}");
    let c = pro_form_ctx(&state, &headers, &path, &f.csrf).await?;
    match Portal::new(state.fhir.clone()).request_protection(c.actor(), Some(&id), &sr).await {
        Ok(_) => Ok(Redirect::to(&format!("{path}/prenota/{sr}?esito=tutela")).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// `POST /professionista/cup/{id}/appuntamenti/{appt}/esito`: the person came (`presente=1`) or
/// did not.
pub async fn cup_attendance(
    State(state): State<AppState>,
    Path((id, appt)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> PageResult {
    let f: std::collections::HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let path = format!("/professionista/cup/{id}");
    let c = pro_form_ctx(&state, &headers, &path, f.get("csrf").map_or("", String::as_str)).await?;
    let came = match f.get("presente").map(String::as_str) {
        Some("1") => true,
        Some("0") => false,
        _ => return Err(c.fail()(AppError::BadRequest("say whether the person came (presente=1 or 0)".into()))),
    };
    match Portal::new(state.fhir.clone()).record_attendance(c.actor(), &id, &appt, came).await {
        Ok(_) => Ok(Redirect::to(&format!("{path}?esito=esito-registrato")).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// `POST /professionista/cup/{id}/appuntamenti/{appt}/disdetta`: cancel at the desk.
pub async fn cup_cancel(
    State(state): State<AppState>,
    Path((id, appt)): Path<(String, String)>,
    headers: HeaderMap,
    Form(f): Form<DeskForm>,
) -> PageResult {
    let path = format!("/professionista/cup/{id}");
    let c = pro_form_ctx(&state, &headers, &path, &f.csrf).await?;
    match Portal::new(state.fhir.clone()).cancel(c.actor(), Some(&id), &appt).await {
        Ok(b) => Ok(Redirect::to(&format!("{path}?esito={}", if b.late { "disdetto-tardi" } else { "disdetto" })).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// The days of the week, Monday first, as an agenda's hours name them.
const DAYS: [&str; 7] = [
    crate::i18n::n_("lun"),
    crate::i18n::n_("mar"),
    crate::i18n::n_("mer"),
    crate::i18n::n_("gio"),
    crate::i18n::n_("ven"),
    crate::i18n::n_("sab"),
    crate::i18n::n_("dom"),
];

/// The weekly hours of an agenda in words: "lun–ven 08:30–12:30, 14:00–16:00 · 20 min".
fn template_words(c: &ProCtx, t: &fascicolo_domain::booking::Template) -> String {
    let days: Vec<&str> = t.days.iter().zip(DAYS).filter(|(on, _)| **on).map(|(_, d)| c.t(d)).collect();
    let hours: Vec<String> = t.hours.iter().map(|(a, b)| format!("{:02}:{:02}–{:02}:{:02}", a / 60, a % 60, b / 60, b % 60)).collect();
    format!("{} {} · {} min", days.join(", "), hours.join(", "), t.minutes)
}

/// `GET /professionista/agende`: the agendas of the operator's organisation, with their
/// closed days ahead.
pub async fn agendas(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let c = pro_ctx(&state, &headers, "/professionista/agende", raw.as_deref()).await?;
    let list = Portal::new(state.fhir.clone()).managed_agendas(c.actor()).await.map_err(c.fail())?;
    let today = fascicolo_domain::rome::today();
    let body = html! {
        p { a href="/professionista" { "‹ " (c.t("Area professionisti")) } }
        h1 { (c.t("Agende della struttura")) }
        p { (c.t("Le agende dei siti della tua organizzazione. Chiudere un giorno annulla gli appuntamenti di quel giorno e avvisa ogni persona; la prescrizione resta valida e nessun ticket è addebitato.")) }
        @if list.is_empty() { p #no-agendas { (c.t("La tua organizzazione non gestisce agende della rete regionale.")) } } @else {
            div.scroll { table.stack #agendas {
                thead { tr { th scope="col" { (c.t("Prestazione")) } th scope="col" { (c.t("Dove")) } th scope="col" { (c.t("Orari")) }
                    th scope="col" { (c.t("Giorni chiusi")) } } }
                tbody { @for a in &list { tr {
                    th scope="row" { a href={ "/professionista/agende/" (a.id) } {
                        (fascicolo_domain::booking::service(&a.code).map_or(a.code.clone(), |s| c.lang.pick(s.name_it, s.name_en).to_string())) } }
                    td data-label=(c.t("Dove")) { (a.site) }
                    td data-label=(c.t("Orari")) { (template_words(&c, &a.template)) }
                    td data-label=(c.t("Giorni chiusi")) {
                        @let ahead: Vec<String> = a.closures.iter().filter(|d| **d > today).map(|d| show_date(c.lang, &d.to_string(), false)).collect();
                        @if ahead.is_empty() { "—" } @else { (ahead.join(", ")) }
                    }
                } } }
            } }
        }
    };
    Ok(pro_layout(&c, c.t("Agende della struttura"), body))
}

/// `GET /professionista/agende/{id}[?giorno=]`: one agenda; with a day, what closing it would
/// cancel, and the confirmation.
pub async fn agenda(State(state): State<AppState>, Path(id): Path<String>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    let path = format!("/professionista/agende/{id}");
    let c = pro_ctx(&state, &headers, &path, raw.as_deref()).await?;
    let portal = Portal::new(state.fhir.clone());
    let list = portal.managed_agendas(c.actor()).await.map_err(c.fail())?;
    let Some(a) = list.into_iter().find(|a| a.id == id) else {
        return Err(c.fail()(AppError::NotFound("not an agenda of your organisation".into())));
    };
    let q = query_map(raw.as_deref());
    let day = q.get("giorno").filter(|s| !s.is_empty()).and_then(|s| fascicolo_domain::rome::date_of(s));
    let affected = match day {
        Some(d) => Some(portal.booked_on(c.actor(), &id, d).await.map_err(c.fail())?),
        None => None,
    };
    let name = fascicolo_domain::booking::service(&a.code).map_or(a.code.clone(), |s| c.lang.pick(s.name_it, s.name_en).to_string());
    let body = html! {
        p { a href="/professionista/agende" { "‹ " (c.t("Agende della struttura")) } }
        h1 { (name) }
        p { (a.site) @if !a.town.is_empty() { ", " (a.town) } }
        p { (template_words(&c, &a.template)) }
        @if q.get("esito").map(String::as_str) == Some("chiuso") {
            div.alert.ok role="status" #closed { p { (c.t("Giorno chiuso. Appuntamenti annullati e persone avvisate: ")) (q.get("annullati").map_or("0", String::as_str)) "." } }
        }
        @if q.get("esito").map(String::as_str) == Some("orari") {
            div.alert.ok role="status" #hours-changed { p { (c.t("Orari cambiati. Appuntamenti annullati e persone avvisate: ")) (q.get("annullati").map_or("0", String::as_str)) "." } }
        }
        h2 { (c.t("Orari settimanali")) }
        form #hours method="post" action={ (path) "/orari" } {
            input type="hidden" name="csrf" value=(c.session.csrf);
            fieldset {
                legend { (c.t("Giorni di apertura")) }
                @for (i, d) in DAYS.iter().enumerate() {
                    label.inline { input type="checkbox" name="giorno" value=(i + 1) checked[a.template.days[i]]; " " (c.t(d)) } " "
                }
            }
            div {
                label for="fasce" { (c.t("Fasce orarie")) }
                input #fasce name="fasce" required aria-describedby="fasce-help"
                    value=(a.template.hours.iter().map(|(x, y)| format!("{:02}:{:02}-{:02}:{:02}", x / 60, x % 60, y / 60, y % 60)).collect::<Vec<_>>().join(", "));
                p.muted #fasce-help { (c.t("Per esempio 08:30-12:30, 14:00-16:00.")) }
            }
            div { label for="minuti" { (c.t("Minuti per appuntamento")) } input #minuti name="minuti" type="number" min="5" max="240" required value=(a.template.minutes); }
            p.muted { (c.t("Gli appuntamenti già prenotati in orari che non restano aperti sono annullati e ogni persona riceve un avviso.")) }
            button.secondary type="submit" { (c.t("Cambia gli orari")) }
        }
        h2 { (c.t("Chiudi un giorno")) }
        form.filters method="get" action=(path) {
            div { label for="giorno" { (c.t("Giorno")) } input #giorno name="giorno" type="date" required value=(day.map(|d| d.to_string()).unwrap_or_default()); }
            button.secondary type="submit" { (c.t("Verifica")) }
        }
        @if let Some(d) = day.filter(|d| a.closures.contains(d)) {
            p #not-open { (show_date(c.lang, &d.to_string(), false)) ": " (c.t("giorno già chiuso.")) }
        } @else if let Some(d) = day.filter(|d| !a.template.opens_on(*d, &a.istat, &a.closures)) {
            p #not-open { (show_date(c.lang, &d.to_string(), false)) ": " (c.t("l'agenda non è aperta in questo giorno.")) }
        } @else if let (Some(d), Some(list)) = (day, &affected) {
            section.card #closing {
                p { strong { (show_date(c.lang, &d.to_string(), false)) } ": "
                    @if list.is_empty() { (c.t("nessun appuntamento prenotato.")) }
                    @else { (list.len()) " " (c.t("appuntamenti prenotati: saranno annullati e ogni persona riceverà un avviso.")) } }
                @if !list.is_empty() { ul { @for (v, _) in list {
                    li { (show_date(c.lang, v["start"].as_str().unwrap_or_default(), true)) }
                } } }
                form method="post" action={ (path) "/chiusura" } {
                    input type="hidden" name="csrf" value=(c.session.csrf);
                    input type="hidden" name="giorno" value=(d.to_string());
                    button type="submit" { (c.t("Chiudi il giorno")) }
                }
            }
        }
    };
    Ok(pro_layout(&c, &name, body))
}

/// `POST /professionista/agende/{id}/chiusura`: close the day (see [`Portal::close_day`]).
pub async fn agenda_close(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> PageResult {
    let f: std::collections::HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let path = format!("/professionista/agende/{id}");
    let c = pro_form_ctx(&state, &headers, &path, f.get("csrf").map_or("", String::as_str)).await?;
    let Some(day) = f.get("giorno").and_then(|s| fascicolo_domain::rome::date_of(s)) else {
        return Err(c.fail()(AppError::BadRequest("choose the day to close".into())));
    };
    match Portal::new(state.fhir.clone()).close_day(c.actor(), &id, day).await {
        Ok(cancelled) => Ok(Redirect::to(&format!("{path}?esito=chiuso&annullati={}", cancelled.len())).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}

/// `POST /professionista/agende/{id}/orari`: new weekly hours (see [`Portal::change_hours`]).
pub async fn agenda_hours(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> PageResult {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| pairs.iter().find(|(x, _)| x == k).map_or("", |(_, v)| v.as_str());
    let path = format!("/professionista/agende/{id}");
    let c = pro_form_ctx(&state, &headers, &path, get("csrf")).await?;
    let days: Vec<&str> = pairs.iter().filter(|(k, _)| k == "giorno").map(|(_, v)| v.as_str()).collect();
    let hours = get("fasce").split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(",");
    let template = format!("days={};hours={};minutes={}", days.join(","), hours, get("minuti").trim());
    match Portal::new(state.fhir.clone()).change_hours(c.actor(), &id, &template).await {
        Ok(cancelled) => Ok(Redirect::to(&format!("{path}?esito=orari&annullati={}", cancelled.len())).into_response()),
        Err(e) => Err(c.fail()(e)),
    }
}
