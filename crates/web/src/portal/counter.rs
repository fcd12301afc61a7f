//! `/esercente` (demo mode only): a shop's till for the celiac budget, to try the merchant API's
//! path by hand. The cashier picks one of the demo merchants, types or pastes the code the
//! citizen shows and the amount; the page authorises and captures the purchase as that
//! merchant, through the same app-layer calls `/celiachia/v1` makes, and shows what remains.
//! Outside demo mode the address does not exist: real shops use the API from their own tills.

use super::units::euro;
use super::{lang_of, plain_page, PageResult};
use crate::html::Lang;
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use fascicolo_app::celiac::{Merchant, Outcome};
use fascicolo_app::portal::Portal;
use fascicolo_app::{Actor, AppError, Who};
use fascicolo_domain::exemption::parse_euro;
use maud::{html, Markup};
use std::collections::HashMap;

fn merchant_actor(client: &str) -> Actor {
    let mut a = Actor::new(Who::Client { client_id: client.to_string(), organization: None, platform: false });
    a.scopes = Some(Vec::new());
    a
}

fn form(lang: Lang, merchants: &[Merchant], f: &HashMap<String, String>) -> Markup {
    let v = |k: &str| f.get(k).cloned().unwrap_or_default();
    html! {
        form method="post" action="/esercente" #till novalidate {
            div.field {
                label for="merchant" { (lang.t("Esercizio")) }
                select #merchant name="merchant" {
                    @for m in merchants { option value=(m.client) selected[v("merchant") == m.client] { (m.name) } }
                }
            }
            div.field {
                label for="code" { (lang.t("Codice mostrato dal cliente")) }
                input #code name="code" autocomplete="off" value=(v("code")) required;
            }
            div.field {
                label for="amount" { (lang.t("Importo (euro)")) }
                input #amount name="amount" inputmode="decimal" autocomplete="off" value=(v("amount")) required;
            }
            button type="submit" { (lang.t("Addebita sul budget")) }
        }
    }
}

async fn page(
    state: &AppState,
    lang: Lang,
    set_lang: Option<Lang>,
    status: StatusCode,
    outcome: Markup,
    f: &HashMap<String, String>,
) -> PageResult {
    let merchants = match Portal::new(state.fhir.clone()).registered_merchants().await {
        Ok(m) => m,
        Err(e) => return Ok(super::app_error(state, lang, &e)),
    };
    let body = html! {
        h1 { (lang.t("Cassa dell'esercente (dimostrazione)")) }
        p { (lang.t("Qui un esercizio convenzionato addebita un acquisto di alimenti senza glutine sul budget del cliente, con il codice che il cliente mostra sul telefono. Le casse vere usano l'API per gli esercenti.")) }
        (outcome)
        (form(lang, &merchants, f))
    };
    let mut r = plain_page(state.auth.demo, lang, set_lang, "/esercente", lang.t("Cassa dell'esercente (dimostrazione)"), body);
    *r.status_mut() = status;
    Ok(r)
}

fn done(lang: Lang, o: &Outcome) -> Markup {
    html! {
        div.alert.ok role="status" #till-outcome {
            p { strong { (lang.t("Acquisto addebitato")) ": " (euro(lang, o.spend.captured_cents)) } }
            p { (lang.t("Restano")) " " (euro(lang, o.budget.remaining_cents)) " " (lang.t("del budget del mese")) " (" (euro(lang, o.budget.budget_cents)) ")." }
        }
    }
}

fn refused(lang: Lang, e: &AppError) -> (StatusCode, Markup) {
    let (status, text) = match e {
        AppError::Conflict(m) if m.contains("insufficient budget") => {
            (StatusCode::CONFLICT, lang.t("Il budget del mese non basta per questo importo: nulla è stato addebitato."))
        }
        AppError::Forbidden(m) if m.contains("merchant") => (
            StatusCode::FORBIDDEN,
            lang.t("Questo esercizio non è convenzionato con l'ATS per la celiachia: non può addebitare il budget."),
        ),
        AppError::Forbidden(_) => {
            (StatusCode::FORBIDDEN, lang.t("Il codice non è valido o è scaduto: chiedi al cliente di mostrarne uno nuovo."))
        }
        AppError::BadRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, lang.t("Scrivi un importo in euro, per esempio 12,50.")),
        _ => (StatusCode::SERVICE_UNAVAILABLE, lang.t("Il servizio non risponde: riprova tra poco.")),
    };
    (status, html! { div.alert.error role="alert" #till-outcome { p { (text) } } })
}

/// `GET /esercente`
pub async fn show(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> PageResult {
    if !state.auth.demo {
        return Ok(super::not_found(State(state), headers).await.into_response());
    }
    let (lang, set_lang) = lang_of(&headers, raw.as_deref());
    page(&state, lang, set_lang, StatusCode::OK, html! {}, &HashMap::new()).await
}

/// `POST /esercente`: authorise and capture at once, as the chosen demo merchant.
pub async fn charge(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> PageResult {
    if !state.auth.demo {
        return Ok(super::not_found(State(state), headers).await.into_response());
    }
    let (lang, _) = lang_of(&headers, None);
    let f: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let client = f.get("merchant").map_or("", String::as_str).to_string();
    let Some(cents) = f.get("amount").and_then(|a| parse_euro(a)).filter(|c| *c > 0) else {
        return page(&state, lang, None, StatusCode::UNPROCESSABLE_ENTITY, refused(lang, &AppError::BadRequest(String::new())).1, &f).await;
    };
    // the merchant API's own path: a registered merchant's client, authorise then capture
    let actor = merchant_actor(&client);
    let portal = Portal::new(state.fhir.clone());
    let key = fascicolo_app::auth::random_secret();
    let code = f.get("code").map_or("", |c| c.trim());
    let result = match portal.celiac_authorize(&actor, code, cents, &key).await {
        Ok(a) => portal.celiac_capture(&actor, &a.spend.id, None).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(o) => page(&state, lang, None, StatusCode::OK, done(lang, &o), &HashMap::from([("merchant".to_string(), client)])).await,
        Err(e) => {
            let (status, m) = refused(lang, &e);
            page(&state, lang, None, status, m, &f).await
        }
    }
}
