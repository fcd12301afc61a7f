//! Sign-in for people: the relying party's routes (`/auth/*`), server-side sessions in the
//! database (HttpOnly, SameSite=Lax, Secure behind HTTPS; idle and absolute timeouts), CSRF
//! tokens on every form, profile and record switching, sign-out and sign-out everywhere.

use crate::html::{error_page, Lang};
use crate::AppState;
use axum::extract::{Form, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fascicolo_app::auth::{random_secret, ActingAs, Session};
use fascicolo_app::{Actor, Who};
use maud::html;
use serde::Deserialize;
use std::collections::HashMap;

pub const SESSION_COOKIE: &str = "fascicolo_session";
const LOGIN_COOKIE: &str = "fascicolo_login";
/// How long a sign-in may take, from start to return.
const SIGN_IN_SECS: i64 = 600;

/// The sign-in this browser started (`state.started-ms.base64(json)` in the login cookie), if
/// `st` is its state and it has not expired. The `next` path is checked again on the way out.
fn sign_in_state(headers: &HeaderMap, st: &str) -> Option<crate::oidc::LoginState> {
    let raw = cookie(headers, LOGIN_COOKIE)?;
    let mut parts = raw.splitn(3, '.');
    let (mine, started, enc) = (parts.next()?, parts.next()?, parts.next()?);
    if !fascicolo_app::auth::same_secret(mine, st) {
        return None;
    }
    let age = fascicolo_fhir::datetime::now_ms() - started.parse::<i64>().ok()?;
    if !(0..SIGN_IN_SECS * 1000).contains(&age) {
        return None;
    }
    let mut ls: crate::oidc::LoginState = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(enc).ok()?).ok()?;
    ls.next = local_path(Some(&ls.next));
    Some(ls)
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn set_cookie(state: &AppState, name: &str, value: &str, path: &str, max_age: Option<i64>) -> HeaderValue {
    let secure = if state.auth.cookie_secure { "; Secure" } else { "" };
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax{secure}{age}"))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// The live session of a request, with its cookie secret; `Ok(None)` when there is none (sign
/// in), `Err` an error page when the store could not be asked (never a sign-in page that hides
/// an outage, never a sign-out that did not happen).
pub async fn session(state: &AppState, headers: &HeaderMap) -> Result<Option<(String, Session)>, Response> {
    let (lang, _) = crate::portal::lang_of(headers, None);
    session_checked(state, headers).await.map_err(|e| crate::portal::app_error(state, lang, &e))
}

/// The request's session, telling "no session" (`Ok(None)`: sign in) from a store that could
/// not be asked (`Err`: an error page, not a sign-in page that hides the outage).
pub async fn session_checked(state: &AppState, headers: &HeaderMap) -> Result<Option<(String, Session)>, fascicolo_app::AppError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
    Ok(state.auth.sessions.get(&secret).await?.map(|s| (secret, s)))
}

pub(crate) fn query_map(raw: Option<&str>) -> HashMap<String, String> {
    raw.map(|s| form_urlencoded::parse(s.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// Only local paths: never an open redirect.
fn local_path(next: Option<&String>) -> String {
    local_path_or(next, "/me")
}

/// `next` when it is a path of this site, else `default`.
pub(crate) fn local_path_or(next: Option<&String>, default: &str) -> String {
    // browsers drop tabs and newlines from URLs and read `\` as `/`, so `/<tab>/evil.example`
    // is `//evil.example`: only printable ASCII path characters, one leading slash
    let safe = |n: &str| {
        let b = n.as_bytes();
        b.first() == Some(&b'/')
            && !matches!(b.get(1), Some(b'/') | Some(b'\\'))
            && n.chars().all(|c| c.is_ascii_graphic() && c != '\\')
            && n.len() <= 2048
    };
    match next {
        Some(n) if safe(n) => n.clone(),
        _ => default.into(),
    }
}

fn unavailable(title: &str) -> Response {
    refuse(Lang::It, StatusCode::SERVICE_UNAVAILABLE, title, "Servizio momentaneamente non disponibile. / Service temporarily unavailable.")
}

fn refuse(lang: Lang, status: StatusCode, title: &str, message: &str) -> Response {
    (status, Html(error_page(lang, title, message))).into_response()
}

/// Start a sign-in at the identity provider.
pub async fn login(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q = query_map(raw.as_deref());
    let lang = Lang::from_query(raw.as_deref());
    let st = random_secret();
    let (url, ls) = match state.auth.rp.begin(&st, &local_path(q.get("next"))).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in could not start");
            return refuse(
                lang,
                StatusCode::BAD_GATEWAY,
                lang.t("Accesso non disponibile"),
                lang.t("Il servizio di identità non risponde. Riprova tra qualche minuto."),
            );
        }
    };
    // the sign-in's state lives in the browser (an HttpOnly cookie for /auth only): starting a
    // sign-in stores nothing, so anonymous hits cannot fill the database
    let Ok(json) = serde_json::to_vec(&ls) else { return unavailable(lang.t("Riprova")) };
    let value = format!("{st}.{}.{}", fascicolo_fhir::datetime::now_ms(), URL_SAFE_NO_PAD.encode(json));
    let mut r = Redirect::to(&url).into_response();
    r.headers_mut().insert(header::SET_COOKIE, set_cookie(&state, LOGIN_COOKIE, &value, "/auth", Some(SIGN_IN_SECS)));
    r
}

/// Back from the provider: check state (single use, same browser), exchange the code,
/// validate the ID token, find the person's profiles, open a session.
pub async fn callback(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Response {
    let q = query_map(raw.as_deref());
    let lang = Lang::It;
    let failed = lang.t("Accesso non riuscito");
    if let Some(err) = q.get("error") {
        tracing::info!(error = %err, "the identity provider ended the sign-in");
        return refuse(
            lang,
            StatusCode::UNAUTHORIZED,
            failed,
            "Il servizio di identità ha interrotto l'accesso. / The identity service stopped the sign-in.",
        );
    }
    let (Some(code), Some(st)) = (q.get("code"), q.get("state")) else {
        return refuse(
            lang,
            StatusCode::BAD_REQUEST,
            failed,
            "Risposta incompleta dal servizio di identità. / Incomplete answer from the identity service.",
        );
    };
    let Some(ls) = sign_in_state(&headers, st) else {
        tracing::warn!("sign-in refused: state not bound to this browser, or expired");
        return refuse(lang, StatusCode::BAD_REQUEST, failed, "Questo accesso è scaduto o è stato avviato da un altro browser. Ricomincia. / This sign-in has expired or was started in another browser. Please start again.");
    };
    // single use: a state seen once more (a replayed callback) is refused before the provider
    // is asked; only returns with a live sign-in cookie get here, at the sign-in rate
    match state.auth.sessions.spend_sign_in(st, SIGN_IN_SECS * 1000).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("sign-in refused: replayed state");
            return refuse(
                lang,
                StatusCode::BAD_REQUEST,
                failed,
                "Questo accesso è già stato usato. Ricomincia. / This sign-in was already used. Please start again.",
            );
        }
        Err(_) => return unavailable(failed),
    }
    let identity = match state.auth.rp.finish(code, &ls).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in refused");
            return refuse(lang, StatusCode::UNAUTHORIZED, failed, &format!("{e}"));
        }
    };
    let profiles = match state.fhir.profiles_for(&identity.cf).await {
        Ok(p) => p,
        Err(_) => return unavailable(failed),
    };
    // the provider may hint at a profile (the demo one does); the registry decides
    let chosen = fascicolo_app::auth::choose_profile(&profiles, identity.claims["fascicolo_profile"].as_str());
    let Some(chosen) = chosen else {
        return refuse(lang, StatusCode::FORBIDDEN, failed, "Nessun profilo per questa identità. / No profile for this identity.");
    };
    let (secret, _) =
        match state.auth.sessions.create(identity.cf.as_str(), Actor::new(chosen.who), profiles, Some(identity.id_token)).await {
            Ok(x) => x,
            Err(_) => return unavailable(failed),
        };
    let mut r = Redirect::to(&ls.next).into_response();
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, &secret, "/", None));
    h.append(header::SET_COOKIE, set_cookie(&state, LOGIN_COOKIE, "", "/auth", Some(0)));
    r
}

/// A profile in words; the role agrees with the person's gender, read from their codice
/// fiscale (the day of birth plus 40 for women), where Italian has two forms.
pub(crate) fn profile_label(lang: Lang, who: &Who, person: &str, org_name: Option<&str>) -> String {
    let female = fascicolo_domain::CodiceFiscale::parse(person).is_ok_and(|cf| cf.is_female());
    match who {
        Who::Citizen { .. } if female => lang.t("Cittadina").to_string(),
        Who::Citizen { .. } => lang.t("Cittadino").to_string(),
        Who::Professional { role, organization, .. } => {
            let r = match (role.code(), female) {
                ("gp", _) => lang.t("Medico di medicina generale"),
                ("pediatrician", _) => lang.t("Pediatra di libera scelta"),
                ("specialist", _) => lang.t("Medico specialista"),
                ("nurse", true) => lang.t("Infermiera"),
                ("nurse", false) => lang.t("Infermiere"),
                ("cup-operator", true) => lang.t("Operatrice CUP"),
                ("cup-operator", false) => lang.t("Operatore CUP"),
                (_, true) => lang.t("Amministratrice ASST"),
                (_, false) => lang.t("Amministratore ASST"),
            };
            match (org_name, organization) {
                (Some(n), _) => format!("{r} — {n}"),
                (None, Some(o)) => format!("{r} — {o}"),
                (None, None) => r.to_string(),
            }
        }
        _ => String::new(),
    }
}

/// The signed-in person's page: who they are, whose record they act on, sign-out.
pub async fn me(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> crate::portal::PageResult {
    // the portal's language (`?lang=`, else the cookie) and design
    let (lang, set_lang) = crate::portal::lang_of(&headers, raw.as_deref());
    let Some((_, s)) = session(&state, &headers).await? else {
        return Ok(Redirect::to("/auth/login?next=/me").into_response());
    };
    let csrf = s.csrf.as_str();
    // the records a citizen may switch between: their own, their minor children's, their delegators'
    let mut options = Vec::new();
    if let Who::Citizen { cf, patient } = &s.actor.who {
        if let Some(p) = patient {
            options.push((p.clone(), lang.t("Il mio fascicolo").to_string()));
        }
        let list = state.fhir.represented(cf).await.map_err(|e| crate::portal::app_error(&state, lang, &e))?;
        {
            for r in list {
                let what = match r.acting_as {
                    ActingAs::Parent => crate::portal::child_word(lang, &r.gender),
                    ActingAs::Delegate => lang.t("delega"),
                };
                options.push((r.patient, format!("{} ({what})", r.name)));
            }
        }
    }
    let org_name = match &s.actor.who {
        Who::Professional { organization: Some(o), .. } => {
            fascicolo_app::portal::Portal::new(state.fhir.clone()).organization_name(&s.actor, o).await
        }
        _ => None,
    };
    let current = s.actor.acting_for.clone().unwrap_or_default();
    let current_label = options.iter().find(|(p, _)| *p == current).map_or("—".to_string(), |(_, l)| l.clone());
    let body = html! {
        h1 { (lang.t("Il tuo profilo")) }
        p { (lang.t("Profilo attivo")) ": " strong { (profile_label(lang, &s.actor.who, &s.person, org_name.as_deref())) } }
        p { @match &s.actor.who {
            Who::Professional { .. } => { a.btn href="/professionista" { (lang.t("Vai all'area professionisti")) } }
            _ => { a.btn href="/" { (lang.t("Vai al fascicolo")) } }
        } }
        @if let Who::Citizen { cf, .. } = &s.actor.who {
            p { (lang.t("Codice fiscale")) " " strong { (cf) } }
            p role="status" { (lang.t("Stai consultando il fascicolo di")) ": " strong { (current_label) } }
            @if options.len() > 1 {
                form method="post" action="/auth/profile" {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="acting_for" { (lang.t("Fascicolo da consultare")) }
                    select #acting_for name="acting_for" {
                        @for (p, l) in &options { option value=(p) selected[*p == current] { (l) } }
                    }
                    " "
                    button type="submit" { (lang.t("Cambia")) }
                }
            }
        }
        @if s.profiles.len() > 1 {
            form method="post" action="/auth/profile" {
                input type="hidden" name="csrf" value=(csrf);
                label for="profile" { (lang.t("Profilo")) }
                select #profile name="profile" {
                    @for (i, p) in s.profiles.iter().enumerate() { option value=(i) selected[p.who == s.actor.who] { (profile_label(lang, &p.who, &s.person, None)) } }
                }
                " "
                button type="submit" { (lang.t("Cambia profilo")) }
            }
        }
        form method="post" action="/auth/logout" style="margin-top:2rem" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" { (lang.t("Esci")) }
        }
        form method="post" action="/auth/logout-everywhere" style="margin-top:.5rem" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" .secondary { (lang.t("Esci da tutti i dispositivi")) }
        }
    };
    Ok(crate::portal::plain_page(state.auth.demo, lang, set_lang, "/me", lang.t("Il tuo profilo"), body))
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
    profile: Option<usize>,
    acting_for: Option<String>,
    /// Where to go after a switch (a local path; the profile page by default).
    next: Option<String>,
}

/// The form's CSRF token must be the session's.
fn csrf_ok(s: &Session, sent: &str) -> bool {
    fascicolo_app::auth::same_secret(&s.csrf, sent)
}

fn csrf_refused() -> Response {
    tracing::warn!("form refused: missing or wrong CSRF token");
    (StatusCode::FORBIDDEN, Html(error_page(Lang::It, "Richiesta rifiutata / Request refused",
        "Il modulo è scaduto o non proviene da questo sito. Ricarica la pagina e riprova. / The form has expired or does not come from this site. Reload the page and try again."))).into_response()
}

pub async fn switch_profile(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> crate::portal::PageResult {
    let Some((secret, mut s)) = session(&state, &headers).await? else {
        return Ok(Redirect::to("/auth/login?next=/me").into_response());
    };
    if !csrf_ok(&s, &f.csrf) {
        return Ok(csrf_refused());
    }
    if let Some(i) = f.profile {
        let Some(p) = s.profiles.get(i) else {
            return Ok(refuse(
                Lang::It,
                StatusCode::BAD_REQUEST,
                "Profilo sconosciuto / Unknown profile",
                "Il profilo scelto non è tra i tuoi. Ricarica la pagina. / The chosen profile is not one of yours. Reload the page.",
            ));
        };
        s.actor = Actor::new(p.who.clone());
    }
    if let Some(target) = f.acting_for {
        // whose record this person may act on is the app's decision
        let may = state.fhir.may_act_for(&s.actor.who, &target).await.map_err(|e| crate::portal::app_error(&state, Lang::It, &e))?;
        if !may {
            return Ok(refuse(Lang::It, StatusCode::FORBIDDEN, "Non consentito / Not allowed",
                "Non puoi consultare questo fascicolo (la delega è scaduta o il figlio è maggiorenne). / You cannot look at this record (the delegation has ended or the child is of age)."));
        }
        s.actor.acting_for = Some(target);
    }
    if state.auth.sessions.update(&secret, &s).await.is_err() {
        return Ok(unavailable("Riprova / Try again"));
    }
    Ok(Redirect::to(&local_path(f.next.as_ref())).into_response())
}

fn cleared(state: &AppState, to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    r.headers_mut().insert(header::SET_COOKIE, set_cookie(state, SESSION_COOKIE, "", "/", Some(0)));
    r
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> crate::portal::PageResult {
    let Some((secret, s)) = session(&state, &headers).await? else {
        return Ok(cleared(&state, "/"));
    };
    if !csrf_ok(&s, &f.csrf) {
        return Ok(csrf_refused());
    }
    // a sign-out that did not happen must not look as if it had
    state.auth.sessions.end(&secret).await.map_err(|e| crate::portal::app_error(&state, Lang::It, &e))?;
    let after = format!("{}/", state.auth.public_url);
    let to = state.auth.rp.logout_url(s.id_token.as_deref(), &after).await.unwrap_or_else(|| "/".into());
    Ok(cleared(&state, &to))
}

pub async fn logout_everywhere(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> crate::portal::PageResult {
    let Some((_, s)) = session(&state, &headers).await? else {
        return Ok(cleared(&state, "/"));
    };
    if !csrf_ok(&s, &f.csrf) {
        return Ok(csrf_refused());
    }
    state.auth.sessions.end_all(&s).await.map_err(|e| crate::portal::app_error(&state, Lang::It, &e))?;
    state.tokens.forget_all();
    Ok(cleared(&state, "/"))
}
