//! The citizen portal: server-rendered pages (maud templates, checked at compile time) over
//! the app layer's [`fascicolo_app::portal::Portal`]. Italian by default, English on request
//! (`/lingua/en`, remembered in a cookie); accessible markup (landmarks, labels, visible focus,
//! contrast); works at 360 px. Handlers are thin: session → actor → app call → template.

mod booking;
mod celiac;
mod chart;
mod counter;
mod doctor;
mod documents;
mod exemptions;
mod family;
mod info;
mod pdf;
mod privacy;
mod pro;
mod records;
mod taccuino;
pub mod units;

pub(crate) use crate::auth_web::query_map;
use crate::auth_web::{cookie, local_path_or};
use crate::html::Lang;
use crate::i18n::n_;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use fascicolo_app::auth::{ActingAs, Session};
use fascicolo_app::portal::Portal;
use fascicolo_app::{Actor, AppError, Who};
use maud::{html, Markup, PreEscaped, DOCTYPE};

const LANG_COOKIE: &str = "fascicolo_lang";

/// The portal's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(records::home))
        .route("/documenti", get(documents::list))
        .route("/documenti/indice.pdf", get(documents::index_pdf))
        .route("/documenti/{id}", get(documents::show))
        .route("/documenti/{id}/oscuramento", post(documents::hide))
        .route("/documenti/{id}/file", get(documents::file))
        .route("/risultati", get(records::results))
        .route("/risultati/{code}", get(records::chart))
        .route("/cronologia", get(records::timeline))
        .route("/vaccinazioni", get(records::vaccinations))
        .route("/prescrizioni", get(records::prescriptions))
        .route("/appuntamenti", get(records::appointments))
        .route("/vaccinazioni/{id}", get(records::vaccination))
        .route("/prescrizioni/{id}", get(records::prescription))
        .route("/appuntamenti/{id}", get(records::appointment))
        .route("/appuntamenti/{id}/sposta", post(booking::move_to))
        .route("/appuntamenti/{id}/calendario.ics", get(booking::calendar))
        .route("/appuntamenti/{id}/anticipo", post(booking::earlier_opt_in))
        .route("/appuntamenti/{id}/anticipa", post(booking::earlier_accept))
        .route("/appuntamenti/{id}/disdetta", get(booking::cancel_page).post(booking::cancel))
        .route("/prenota", get(booking::page))
        .route("/prenota/{sr}", get(booking::options))
        .route("/prenota/{sr}/blocca", post(booking::hold))
        .route("/prenota/{sr}/tutela", post(booking::protection))
        .route("/prenota/{sr}/conferma", get(booking::confirm_page).post(booking::confirm))
        .route("/piano-di-cura", get(records::care_plans))
        .route("/taccuino", get(taccuino::page).post(taccuino::add_measurement))
        .route("/taccuino/documenti", post(taccuino::add_document))
        .route("/taccuino/note", post(taccuino::add_note))
        .route("/taccuino/misure/{id}/visibilita", post(taccuino::visibility))
        .route("/privacy", get(privacy::page))
        .route("/privacy/consenso", post(privacy::consent))
        .route("/privacy/accessi", get(privacy::access_log))
        .route("/privacy/notifiche", post(privacy::notifications))
        .route("/medico", get(doctor::page).post(doctor::choose))
        .route("/esenzioni", get(exemptions::page).post(exemptions::declare))
        .route("/esenzioni/{id}/revoca", post(exemptions::revoke))
        .route("/celiachia", get(celiac::page))
        .route("/celiachia/codice", post(celiac::code))
        .route("/esercente", get(counter::show).post(counter::charge))
        .route("/famiglia", get(family::page))
        .route("/famiglia/deleghe", post(family::grant))
        .route("/famiglia/deleghe/{id}/revoca", post(family::revoke))
        .route("/professionista", get(pro::home))
        .route("/professionista/assistiti/{id}", get(pro::record))
        .route("/professionista/assistiti/{id}/emergenza", post(pro::emergency))
        .route("/professionista/assistiti/{id}/risultati", get(pro::results))
        .route("/professionista/assistiti/{id}/risultati/{code}", get(pro::chart))
        .route("/professionista/assistiti/{id}/vaccinazioni", get(pro::vaccinations))
        .route("/professionista/assistiti/{id}/prescrizioni", get(pro::prescriptions))
        .route("/professionista/assistiti/{id}/cronologia", get(pro::timeline))
        .route("/professionista/documenti/{id}", get(pro::document))
        .route("/professionista/anagrafe/{id}", get(pro::desk))
        .route("/professionista/anagrafe/{id}/medico", post(pro::desk_choose))
        .route("/professionista/anagrafe/{id}/esenzioni", get(pro::desk_exemptions).post(pro::desk_declare))
        .route("/professionista/anagrafe/{id}/esenzioni/{cov}/revoca", post(pro::desk_revoke))
        .route("/professionista/documenti/{id}/file", get(pro::file))
        .route("/professionista/cup/{id}", get(pro::cup))
        .route("/professionista/cup/{id}/prenota/{sr}/tutela", post(pro::cup_protection))
        .route("/professionista/cup/{id}/appuntamenti/{appt}/esito", post(pro::cup_attendance))
        .route("/professionista/agende", get(pro::agendas))
        .route("/professionista/agende/{id}", get(pro::agenda))
        .route("/professionista/agende/{id}/chiusura", post(pro::agenda_close))
        .route("/professionista/agende/{id}/orari", post(pro::agenda_hours))
        .route("/professionista/cup/{id}/prenota/{sr}", get(pro::cup_options).post(pro::cup_book))
        .route("/professionista/cup/{id}/appuntamenti/{appt}/disdetta", post(pro::cup_cancel))
        .route("/accessibilita", get(info::accessibility))
        .route("/aiuto", get(info::help))
        .route("/note-legali", get(info::legal))
        .route("/lingua/{code}", get(language))
        .route("/static/portal.css", get(css))
        .route("/static/fonts/{name}", get(font))
}

/// Whose record the page shows, relative to the signed-in person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relation {
    Own,
    Child,
    Delegator,
}

/// Everything a portal page needs about the request.
pub struct Ctx {
    pub lang: Lang,
    pub session: Session,
    pub demo: bool,
    /// The record shown (Patient id), its holder's name and how the person relates to it.
    pub record: String,
    pub record_name: String,
    /// The holder's administrative gender when it is not the person's own record (for the
    /// words that agree with it); empty otherwise.
    pub record_gender: String,
    pub relation: Relation,
    /// What a delegation covers (resource types; empty: everything the relation allows).
    pub scope: Vec<String>,
    /// Other records the person may switch to.
    pub switchable: usize,
    /// `?lang=` was given: remember it.
    set_lang: Option<Lang>,
    pub path: String,
}

impl Ctx {
    pub fn actor(&self) -> &Actor {
        &self.session.actor
    }
    pub fn t(&self, it: &'static str) -> &'static str {
        self.lang.t(it)
    }
    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }
}

/// A minor child in words that agree with the child's gender.
pub(crate) fn child_word(lang: Lang, gender: &str) -> &'static str {
    match gender {
        "female" => lang.t("figlia minore"),
        "male" => lang.t("figlio minore"),
        _ => lang.t("figlio/a minore"),
    }
}

/// The language of a request: `?lang=`, else the cookie, else Italian.
pub fn lang_of(headers: &HeaderMap, raw: Option<&str>) -> (Lang, Option<Lang>) {
    let q = query_map(raw);
    match q.get("lang").map(String::as_str) {
        Some("en") => (Lang::En, Some(Lang::En)),
        Some("it") => (Lang::It, Some(Lang::It)),
        _ => match cookie(headers, LANG_COOKIE).as_deref() {
            Some("en") => (Lang::En, None),
            _ => (Lang::It, None),
        },
    }
}

fn lang_cookie(l: Lang) -> HeaderValue {
    HeaderValue::from_str(&format!("{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax", l.code()))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// Build the context: a signed-in citizen (or parent, delegate) with a record, or a response
/// that says why not (sign-in redirect, a page for professionals).
pub async fn ctx(state: &AppState, headers: &HeaderMap, path: &str, raw: Option<&str>) -> Result<Ctx, Response> {
    let (lang, set_lang) = lang_of(headers, raw);
    let s = signed_in(state, headers, lang, path, raw).await?;
    let Who::Citizen { patient, cf } = &s.actor.who else {
        // a professional's home is their own area
        if path == "/" && matches!(s.actor.who, Who::Professional { .. }) {
            return Err(Redirect::to("/professionista").into_response());
        }
        return Err(message(
            state,
            lang,
            StatusCode::FORBIDDEN,
            lang.t("Area riservata ai cittadini"),
            lang.t("Queste pagine sono il fascicolo del cittadino. Con il profilo professionale attivo consulti i fascicoli dei tuoi assistiti, secondo le regole di privacy, nell'area professionisti; per vedere il tuo fascicolo, cambia profilo dalla pagina del tuo profilo."),
            Some(("/professionista", lang.t("Vai all'area professionisti"))),
        ));
    };
    let Some(record) = s.actor.acting_for.clone() else {
        return Err(message(
            state,
            lang,
            StatusCode::NOT_FOUND,
            lang.t("Fascicolo non trovato"),
            lang.t("Non risulti nell'anagrafe sanitaria regionale: il tuo fascicolo non è ancora attivo. Rivolgiti alla tua ASST o al tuo medico."),
            None,
        ));
    };
    let reps = match state.fhir.represented(cf).await {
        Ok(r) => r,
        Err(e) => return Err(app_error(state, lang, &e)),
    };
    let (relation, name, scope, record_gender) = if patient.as_deref() == Some(record.as_str()) {
        (Relation::Own, String::new(), Vec::new(), String::new())
    } else {
        match reps.iter().find(|r| r.patient == record) {
            Some(r) => (
                if r.acting_as == ActingAs::Parent { Relation::Child } else { Relation::Delegator },
                r.name.clone(),
                r.scope.clone(),
                r.gender.clone(),
            ),
            // the child came of age or the delegation ended since the switch
            None => {
                return Err(message(
                    state,
                    lang,
                    StatusCode::FORBIDDEN,
                    lang.t("Non puoi più consultare questo fascicolo"),
                    lang.t("Il figlio è diventato maggiorenne o la delega è terminata. Torna al tuo fascicolo."),
                    Some(("/famiglia", lang.t("Scegli il fascicolo"))),
                ))
            }
        }
    };
    let record_name = if relation == Relation::Own {
        let portal = Portal::new(state.fhir.clone());
        match optional(portal.patient(&s.actor).await) {
            Ok(p) => p.map(|p| person_name(&p)).unwrap_or_default(),
            Err(e) => return Err(app_error(state, lang, &e)),
        }
    } else {
        name
    };
    let switchable = reps.len() + usize::from(patient.is_some() && relation != Relation::Own);
    Ok(Ctx {
        lang,
        demo: state.auth.demo,
        record,
        record_name,
        record_gender,
        relation,
        scope,
        switchable,
        set_lang,
        path: path.to_string(),
        session: s,
    })
}

/// The request's session, or the response that asks to sign in first (and come back here).
async fn signed_in(state: &AppState, headers: &HeaderMap, lang: Lang, path: &str, raw: Option<&str>) -> Result<Session, Response> {
    match crate::auth_web::session_checked(state, headers).await {
        Ok(Some((_, s))) => Ok(s),
        Ok(None) => {
            let next = match raw {
                Some(q) if !q.is_empty() => format!("{path}?{q}"),
                _ => path.to_string(),
            };
            let enc = percent_encoding::utf8_percent_encode(&next, percent_encoding::NON_ALPHANUMERIC).to_string();
            Err(Redirect::to(&format!("/auth/login?next={enc}")).into_response())
        }
        Err(e) => Err(app_error(state, lang, &e)),
    }
}

/// A document's title or type as shown: a national type's name in the page's language, a
/// producer's own title as written.
pub fn doc_name(lang: Lang, s: &str) -> &str {
    match lang {
        Lang::En => fascicolo_cda::catalog::english_name(s).unwrap_or(s),
        Lang::It => s,
    }
}

pub fn person_name(v: &serde_json::Value) -> String {
    fascicolo_app::auth::display_name(v)
}

/// Navigation entries: (path, Italian, English).
/// The resource types a section shows (a delegation must cover them all for it to be offered).
fn section_types(path: &str) -> &'static [&'static str] {
    match path {
        "/documenti" => &["DocumentReference"],
        "/risultati" | "/taccuino" => &["Observation"],
        "/vaccinazioni" => &["Immunization"],
        "/prescrizioni" => &["MedicationRequest"],
        "/appuntamenti" | "/prenota" => &["Appointment"],
        "/piano-di-cura" => &["CarePlan"],
        "/privacy" => &["AuditEvent"],
        "/esenzioni" => &["Coverage"],
        "/celiachia" => &["Account", "ChargeItem"],
        _ => &[],
    }
}

impl Ctx {
    /// Whether this person may use a section of the record shown (a delegation covers it).
    pub fn allows(&self, path: &str) -> bool {
        // the doctor is chosen by the holder, or a parent for a minor; never by a delegate
        if path == "/medico" {
            return self.relation != Relation::Delegator;
        }
        self.scope.is_empty() || section_types(path).iter().all(|t| self.scope.iter().any(|s| s == t))
    }

    /// The sections of the record shown that this person may use.
    fn sections(&self) -> impl Iterator<Item = &'static (&'static str, &'static str)> + '_ {
        NAV.iter().filter(|(p, _)| self.allows(p))
    }
}

const NAV: &[(&str, &str)] = &[
    ("/", n_("Home")),
    ("/documenti", n_("Documenti")),
    ("/risultati", n_("Risultati")),
    ("/cronologia", n_("Cronologia")),
    ("/vaccinazioni", n_("Vaccinazioni")),
    ("/prescrizioni", n_("Prescrizioni")),
    ("/prenota", n_("Prenota")),
    ("/appuntamenti", n_("Appuntamenti")),
    ("/piano-di-cura", n_("Piano di cura")),
    ("/taccuino", n_("Taccuino")),
    ("/privacy", n_("Privacy")),
    ("/medico", n_("Medico")),
    ("/esenzioni", n_("Esenzioni")),
    ("/famiglia", n_("Famiglia e deleghe")),
];

fn language_link(lang: Lang, path: &str) -> Markup {
    let (code, label, hl) = match lang {
        Lang::It => ("en", "English", "en"),
        Lang::En => ("it", "Italiano", "it"),
    };
    let next = percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC).to_string();
    html! { a href={ "/lingua/" (code) "?next=" (next) } lang=(hl) hreflang=(hl) { (label) } }
}

fn head(lang: Lang, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " — " (lang.t("Fascicolo Sanitario Elettronico")) }
            link rel="stylesheet" href="/static/portal.css";
        }
    }
}

fn header_bands(lang: Lang, path: &str, demo: bool) -> Markup {
    html! {
        a.skip href="#main" { (lang.t("Vai al contenuto principale")) }
        @if demo {
            div.demo role="note" { (lang.t("Ambiente dimostrativo: persone e dati sono sintetici")) }
        }
        header {
            div.slim { div.wrap {
                span { "Regione Lombardia" }
                span { (language_link(lang, path)) }
            } }
            div.center { div.wrap {
                a.brand href="/" {
                    span.logo aria-hidden="true" { "FSE" }
                    span { span.name { (lang.t("Fascicolo Sanitario Elettronico")) }
                        span.tag { (lang.t("I tuoi documenti e dati sanitari, in un unico posto")) } }
                }
            } }
        }
    }
}

fn footer(lang: Lang) -> Markup {
    html! {
        footer { div.wrap {
            p { strong { "Fascicolo" } " — " (lang.t("piattaforma regionale open source per la sanità digitale")) }
            ul.links aria-label=(lang.t("Informazioni sul servizio")) {
                li { a href="/aiuto" { (lang.t("Aiuto")) } }
                li { a href="/accessibilita" { (lang.t("Dichiarazione di accessibilità")) } }
                li { a href="/note-legali" { (lang.t("Note legali")) } }
                li { a href="/privacy" { (lang.t("Informativa e privacy")) } }
                li { a href="/me" { (lang.t("Il tuo profilo")) } }
                li { a href="/fhir/r4/metadata" { "API FHIR R4" } }
            }
        } }
    }
}

/// A whole portal page for a signed-in person.
pub fn layout(c: &Ctx, title: &str, body: Markup) -> Response {
    let lang = c.lang;
    let active = NAV.iter().filter(|(p, _)| *p == c.path || (*p != "/" && c.path.starts_with(p))).map(|(p, _)| *p).next_back();
    let other = c.relation != Relation::Own;
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(lang, title))
            body {
                (header_bands(lang, &c.path, c.demo))
                nav.main aria-label=(lang.t("Sezioni del fascicolo")) {
                    // on a phone: a menu button that opens every section (no script needed)
                    details.phone-menu {
                        summary {
                            span aria-hidden="true" { "☰ " }
                            (lang.t("Menu"))
                            @if let Some((_, it)) = NAV.iter().find(|(p, _)| Some(*p) == active) { " · " (lang.t(it)) }
                        }
                        ul { @for (p, it) in c.sections() {
                            li { a href=(p) aria-current=[(Some(*p) == active).then_some("page")] { (lang.t(it)) } }
                        } }
                    }
                    ul.wide {
                        @for (p, it) in c.sections() {
                            li { a href=(p) aria-current=[(Some(*p) == active).then_some("page")] { (lang.t(it)) } }
                        }
                    }
                }
                section.record.other[other] aria-label=(lang.t("Fascicolo consultato")) { div.wrap {
                    p style="margin:0" role="status" {
                        (lang.t("Stai consultando il fascicolo di")) " "
                        strong #record-holder { (c.record_name) }
                        @match c.relation {
                            Relation::Own => { " (" (lang.t("il tuo")) ")" }
                            Relation::Child => { " (" (child_word(lang, &c.record_gender)) ")" }
                            Relation::Delegator => { " (" (lang.t("su delega")) ")" }
                        }
                    }
                    @if c.relation == Relation::Delegator && !c.scope.is_empty() {
                        p.muted style="margin:0;flex-basis:100%" #delegation-scope {
                            (lang.t("La delega comprende solo")) ": "
                            (c.sections().filter(|(p, _)| !section_types(p).is_empty()).map(|(_, it)| lang.t(it)).collect::<Vec<_>>().join(", "))
                            ". " (lang.t("Le altre sezioni non sono mostrate."))
                        }
                    }
                    @if c.switchable > 0 || other {
                        a.btn.secondary href="/famiglia" { (lang.t("Cambia fascicolo")) }
                    }
                    form.inline method="post" action="/auth/logout" {
                        input type="hidden" name="csrf" value=(c.csrf());
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

fn finish(set_lang: Option<Lang>, status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, Html(markup.into_string())).into_response();
    if let Some(l) = set_lang {
        r.headers_mut().insert(header::SET_COOKIE, lang_cookie(l));
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A page in the portal's design outside any record (the profile page): header, main, footer.
pub fn plain_page(demo: bool, lang: Lang, set_lang: Option<Lang>, path: &str, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(lang, title))
            body {
                (header_bands(lang, path, demo))
                main #main tabindex="-1" { (body) }
                (footer(lang))
            }
        }
    };
    finish(set_lang, StatusCode::OK, markup)
}

/// A page with a message (no session needed): errors and empty states written for people.
pub fn message(state: &AppState, lang: Lang, status: StatusCode, title: &str, text: &str, link: Option<(&str, &str)>) -> Response {
    message_page(state.auth.demo, lang, status, title, text, link)
}

fn message_page(demo: bool, lang: Lang, status: StatusCode, title: &str, text: &str, link: Option<(&str, &str)>) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(lang, title))
            body {
                (header_bands(lang, "/", demo))
                main #main tabindex="-1" {
                    h1 { (title) }
                    div.alert.error[status.is_client_error() || status.is_server_error()] role="alert" { p { (text) } }
                    p { @if let Some((href, label)) = link { a.btn href=(href) { (label) } " " } a href="/" { (lang.t("Torna alla pagina iniziale")) } }
                }
                (footer(lang))
            }
        }
    };
    finish(None, status, markup)
}

/// What a portal page answers when it cannot show itself: a response decided already (sign
/// in first, a refusal) or an app error, shown as a page for people. Handlers return
/// [`PageResult`] and use `?`: a failed read is never shown as an empty list.
pub enum Failure {
    Page(Box<Response>),
    App { lang: Lang, demo: bool, error: AppError },
}

pub type PageResult = Result<Response, Failure>;

impl From<Response> for Failure {
    fn from(r: Response) -> Self {
        Failure::Page(Box::new(r))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Page(r) => *r,
            Failure::App { lang, demo, error } => error_page(demo, lang, &error),
        }
    }
}

impl Ctx {
    /// An app error met while building this page.
    pub fn fail(&self) -> impl Fn(AppError) -> Failure {
        let (lang, demo) = (self.lang, self.demo);
        move |error| Failure::App { lang, demo, error }
    }
}

/// A read a page can do without: nothing there, or not the viewer's to see, is `None`; a fault
/// (the store down, a timeout) stays an error.
pub fn optional<T>(r: Result<T, AppError>) -> Result<Option<T>, AppError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(AppError::NotFound(_) | AppError::Gone(_) | AppError::Forbidden(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An app error as a page for people (never internals).
pub fn app_error(state: &AppState, lang: Lang, e: &AppError) -> Response {
    error_page(state.auth.demo, lang, e)
}

fn error_page(demo: bool, lang: Lang, e: &AppError) -> Response {
    let (status, title, text) = match e {
        AppError::NotFound(_) | AppError::Gone(_) => {
            (StatusCode::NOT_FOUND, lang.t("Non trovato"), lang.t("Questo elemento non esiste o non è visibile per te."))
        }
        AppError::Forbidden(_) => (
            StatusCode::FORBIDDEN,
            lang.t("Operazione non consentita"),
            lang.t("Il tuo profilo non permette questa operazione su questo fascicolo."),
        ),
        AppError::BadRequest(_) | AppError::Invalid(_) => {
            (StatusCode::BAD_REQUEST, lang.t("Richiesta non valida"), lang.t("Controlla i dati inseriti e riprova."))
        }
        e if e.is_storage_full() => {
            tracing::error!("portal write refused: storage full");
            (
                StatusCode::INSUFFICIENT_STORAGE,
                lang.t("Spazio di archiviazione esaurito"),
                lang.t("Il servizio non ha spazio per salvare: non è stato salvato nulla. Riprova più tardi."),
            )
        }
        _ => {
            tracing::warn!(error = %e, "portal request failed");
            // the status every interface gives this error (the error policy, decision 0007)
            let status = StatusCode::from_u16(fascicolo_app::error_status(e).0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                (
                    status,
                    lang.t("Servizio momentaneamente non disponibile"),
                    lang.t("Non è stato possibile completare la richiesta. Riprova tra qualche minuto."),
                )
            } else {
                (
                    status,
                    lang.t("Si è verificato un errore"),
                    lang.t("Il servizio non è riuscito a completare la richiesta e non ha modificato nulla. Il problema è stato registrato: riprova più tardi."),
                )
            }
        }
    };
    let mut r = message_page(demo, lang, status, title, text, None);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    r
}

/// The designed page for an address the portal does not have.
pub async fn not_found(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (lang, _) = lang_of(&headers, None);
    message(
        &state,
        lang,
        StatusCode::NOT_FOUND,
        lang.t("Pagina non trovata"),
        lang.t("L'indirizzo che hai aperto non corrisponde a nessuna pagina del Fascicolo. Controlla l'indirizzo o riparti dalla pagina iniziale."),
        None,
    )
}

/// The context of a form post: signed in with a record, and carrying the session's CSRF token.
pub async fn form_ctx(state: &AppState, headers: &HeaderMap, path: &str, csrf: &str) -> Result<Ctx, Response> {
    let c = ctx(state, headers, path, None).await?;
    if !csrf_ok(&c, csrf) {
        return Err(csrf_refused(state, c.lang));
    }
    Ok(c)
}

/// The CSRF token of a form must be the session's.
pub fn csrf_ok(c: &Ctx, sent: &str) -> bool {
    fascicolo_app::auth::same_secret(&c.session.csrf, sent)
}

pub fn csrf_refused(state: &AppState, lang: Lang) -> Response {
    tracing::warn!("portal form refused: missing or wrong CSRF token");
    message(
        state,
        lang,
        StatusCode::FORBIDDEN,
        lang.t("Modulo scaduto"),
        lang.t("Il modulo è scaduto o non proviene da questo sito. Ricarica la pagina e riprova."),
        None,
    )
}

/// The Rome day (`YYYY-MM-DD`) of a FHIR date, dateTime or instant.
pub fn rome_day(s: &str) -> String {
    fascicolo_domain::rome::date_of(s).map_or_else(|| s.get(..10).unwrap_or(s).to_string(), |d| d.to_string())
}

/// Dates as people read them in Italy (Europe/Rome), from FHIR date/dateTime/instant text.
pub fn show_date(lang: Lang, s: &str, with_time: bool) -> String {
    use time::{format_description::well_known::Rfc3339, OffsetDateTime};
    if s.len() >= 16 {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            let local = t.to_offset(fascicolo_domain::rome::offset(t));
            let d = format!("{:02}/{:02}/{}", local.day(), local.month() as u8, local.year());
            return if with_time { format!("{d} {:02}:{:02}", local.hour(), local.minute()) } else { d };
        }
    }
    match (s.get(0..4), s.get(5..7), s.get(8..10)) {
        (Some(y), Some(m), Some(d)) => format!("{d}/{m}/{y}"),
        (Some(y), Some(m), None) => format!("{m}/{y}"),
        _ => {
            let _ = lang;
            s.to_string()
        }
    }
}

/// `GET /lingua/{code}?next=`: remember the language and go back.
async fn language(Path(code): Path<String>, RawQuery(raw): RawQuery) -> Response {
    let lang = if code == "en" { Lang::En } else { Lang::It };
    let q = query_map(raw.as_deref());
    let next = local_path_or(q.get("next"), "/");
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut().insert(header::SET_COOKIE, lang_cookie(lang));
    r
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../../assets/portal.css"),
    )
        .into_response()
}

/// The fonts ship with the project (SIL Open Font License, see assets/fonts/OFL.txt).
pub const FONT_REGULAR: &[u8] = include_bytes!("../../assets/fonts/TitilliumWeb_400Regular.ttf");
pub const FONT_SEMIBOLD: &[u8] = include_bytes!("../../assets/fonts/TitilliumWeb_600SemiBold.ttf");
pub const FONT_BOLD: &[u8] = include_bytes!("../../assets/fonts/TitilliumWeb_700Bold.ttf");

async fn font(Path(name): Path<String>) -> Response {
    let bytes = match name.as_str() {
        "TitilliumWeb_400Regular.ttf" => FONT_REGULAR,
        "TitilliumWeb_600SemiBold.ttf" => FONT_SEMIBOLD,
        "TitilliumWeb_700Bold.ttf" => FONT_BOLD,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, "font/ttf"), (header::CACHE_CONTROL, "public, max-age=604800, immutable")], bytes).into_response()
}

/// Raw HTML that we produced ourselves (the CDA renderer escapes what it copies).
pub fn trusted(s: String) -> PreEscaped<String> {
    PreEscaped(s)
}
