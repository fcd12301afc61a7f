//! The built-in demo identity provider: a real OpenID provider (discovery, authorization code
//! with PKCE, ES256-signed ID tokens, JWKS, end-session) that lets you pick a synthetic person.
//! Our relying party talks to it over HTTP exactly as to the regional SPID/CIE proxy. Clearly
//! marked as a demo; never on when a real provider is configured.

use crate::html::{page, Lang};
use crate::AppState;
use axum::extract::{Form, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use fascicolo_app::auth::{hash_secret, random_secret};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use maud::html;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The portal's client id at the demo provider.
pub const PORTAL_CLIENT: &str = "fascicolo-portal";
const KEY_KIND: &str = "signing-key";
const KEY_ID: &str = "demo-idp";
const CODE_KIND: &str = "demo-idp-code";

/// A person the demo provider offers.
#[derive(Debug, Clone)]
pub struct DemoPersona {
    pub cf: String,
    pub name: String,
    /// The profile hint sent as `fascicolo_profile` (`citizen`, `gp`, `nurse`...).
    pub profile: String,
    /// What to show next to the name (Italian, English).
    pub description: (String, String),
}

pub fn issuer(state: &AppState) -> String {
    format!("{}/demo-idp", state.auth.public_url)
}

/// The provider's signing key: generated once, kept in the database (shared by every server).
async fn signing_key(state: &AppState) -> Result<(EncodingKey, Value), String> {
    let make = || {
        let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
        sk.to_pkcs8_pem(LineEnding::LF).map(|p| p.to_string()).map_err(|e| e.to_string())
    };
    // made by the first server that needs it; whoever wins a race, everyone uses the stored key
    let pem = state.fhir.kept_value(KEY_KIND, KEY_ID, make).await.map_err(|e| e.to_string())?;
    let sk = p256::SecretKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string())?;
    let mut jwk: Value = serde_json::from_str(&sk.public_key().to_jwk_string()).map_err(|e| e.to_string())?;
    jwk["kid"] = json!(KEY_ID);
    jwk["use"] = json!("sig");
    jwk["alg"] = json!("ES256");
    Ok((EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| e.to_string())?, jwk))
}

pub async fn discovery(State(state): State<AppState>) -> Json<Value> {
    let iss = issuer(&state);
    Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"),
        "end_session_endpoint": format!("{iss}/logout"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile"],
        "token_endpoint_auth_methods_supported": ["none"],
        "claims_supported": ["sub", "name", "given_name", "family_name", "fiscal_number", "https://attributes.eid.gov.it/fiscal_number"]
    }))
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    match signing_key(&state).await {
        Ok((_, jwk)) => Json(json!({"keys": [jwk]})).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "signing key unavailable").into_response(),
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

fn valid_request(state: &AppState, q: &HashMap<String, String>) -> Result<(), String> {
    if q.get("client_id").map(String::as_str) != Some(PORTAL_CLIENT) {
        return Err("unknown client_id".into());
    }
    if q.get("redirect_uri") != Some(&state.auth.rp.cfg.redirect_uri) {
        return Err("redirect_uri is not registered for this client".into());
    }
    if q.get("response_type").map(String::as_str) != Some("code") {
        return Err("only response_type=code is supported".into());
    }
    if q.get("code_challenge_method").map(String::as_str) != Some("S256") || q.get("code_challenge").is_none_or(String::is_empty) {
        return Err("PKCE with S256 is required".into());
    }
    Ok(())
}

/// The picker: choose who to be.
pub async fn authorize(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let lang = Lang::from_query(raw.as_deref());
    let q: HashMap<String, String> =
        raw.as_deref().map(|s| form_urlencoded::parse(s.as_bytes()).into_owned().collect()).unwrap_or_default();
    if let Err(m) = valid_request(&state, &q) {
        return (StatusCode::BAD_REQUEST, Html(crate::html::error_page(lang, lang.t("Richiesta non valida"), &m))).into_response();
    }
    let hidden =
        ["client_id", "redirect_uri", "state", "nonce", "code_challenge", "scope"].map(|k| (k, q.get(k).map_or("", String::as_str)));
    let body = html! {
        h1 { (lang.t("Scegli una persona di prova")) }
        p { (lang.t("Questo è un fornitore di identità dimostrativo: nessuna credenziale reale, tutte le persone sono inventate. In produzione l'accesso avviene con SPID o CIE.")) }
        ul.cards {
            @for p in &state.auth.personas {
                li { form method="post" action="/demo-idp/authorize" {
                    @for (k, v) in &hidden { input type="hidden" name=(k) value=(v); }
                    input type="hidden" name="cf" value=(p.cf);
                    input type="hidden" name="profile" value=(p.profile);
                    p {
                        strong { (p.name) } br;
                        span.muted { (match lang { Lang::It => &p.description.0, Lang::En => &p.description.1 }) } br;
                        span.muted { "CF " (p.cf) }
                    }
                    button type="submit" { (lang.t("Entra come")) " " (p.name) }
                } }
            }
        }
    };
    let banner = lang.t("AMBIENTE DEMO — identità di prova");
    Html(page(lang, lang.t("Accesso demo"), Some(banner), body)).into_response()
}

#[derive(Debug, Deserialize)]
pub struct Pick {
    client_id: String,
    redirect_uri: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    nonce: String,
    code_challenge: String,
    cf: String,
    profile: String,
}

/// The person was chosen: back to the client with a one-time code.
pub async fn choose(State(state): State<AppState>, Form(p): Form<Pick>) -> Response {
    let mut q = HashMap::new();
    q.insert("client_id".to_string(), p.client_id.clone());
    q.insert("redirect_uri".to_string(), p.redirect_uri.clone());
    q.insert("response_type".to_string(), "code".to_string());
    q.insert("code_challenge_method".to_string(), "S256".to_string());
    q.insert("code_challenge".to_string(), p.code_challenge.clone());
    if let Err(m) = valid_request(&state, &q) {
        return (StatusCode::BAD_REQUEST, m).into_response();
    }
    let Some(persona) = state.auth.personas.iter().find(|x| x.cf == p.cf && x.profile == p.profile) else {
        return (StatusCode::BAD_REQUEST, "unknown demo person").into_response();
    };
    let code = random_secret();
    let data = json!({"cf": persona.cf, "name": persona.name, "profile": persona.profile, "nonce": p.nonce,
        "challenge": p.code_challenge, "redirect_uri": p.redirect_uri, "client_id": p.client_id});
    if state.fhir.issue_code(CODE_KIND, &code, &persona.cf, &data, 60_000).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    let back = form_urlencoded::Serializer::new(String::new()).append_pair("code", &code).append_pair("state", &p.state).finish();
    Redirect::to(&format!("{}?{back}", p.redirect_uri)).into_response()
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
}

/// Code for tokens: single use, PKCE-checked, ID token signed with ES256.
pub async fn token(State(state): State<AppState>, Form(t): Form<TokenRequest>) -> Response {
    if t.grant_type != "authorization_code" {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only authorization_code");
    }
    let (Some(code), Some(verifier)) = (t.code.as_deref(), t.code_verifier.as_deref()) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "code and code_verifier are required");
    };
    let now_ms = fascicolo_fhir::datetime::now_ms();
    let rec = match state.fhir.redeem_code(CODE_KIND, code).await {
        Ok(Some(r)) => r,
        Ok(None) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code is unknown, used or expired"),
        Err(_) => return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again"),
    };
    let d = rec.data;
    if t.client_id.as_deref() != d["client_id"].as_str() || t.redirect_uri.as_deref() != d["redirect_uri"].as_str() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "client_id or redirect_uri do not match the authorization");
    }
    if crate::oidc::pkce_challenge(verifier) != d["challenge"].as_str().unwrap_or_default() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "PKCE verification failed");
    }
    let Ok((key, _)) = signing_key(&state).await else {
        return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "signing key unavailable");
    };
    let now = now_ms / 1000;
    let cf = d["cf"].as_str().unwrap_or_default();
    let name = d["name"].as_str().unwrap_or_default();
    let (given, family) = name.split_once(' ').unwrap_or((name, ""));
    let claims = json!({"iss": issuer(&state), "sub": format!("demo-{}", &hash_secret(cf)[..16]), "aud": PORTAL_CLIENT,
        "iat": now, "exp": now + 300, "auth_time": now, "nonce": d["nonce"], "name": name, "given_name": given, "family_name": family,
        "https://attributes.eid.gov.it/fiscal_number": format!("TINIT-{cf}"), "fascicolo_profile": d["profile"]});
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KEY_ID.into());
    let Ok(id_token) = jsonwebtoken::encode(&header, &claims, &key) else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "could not sign");
    };
    let mut r =
        Json(json!({"access_token": random_secret(), "token_type": "Bearer", "expires_in": 300, "id_token": id_token})).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

/// End-session: nothing to end at a demo provider but the redirect back.
pub async fn logout(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q: HashMap<String, String> =
        raw.as_deref().map(|s| form_urlencoded::parse(s.as_bytes()).into_owned().collect()).unwrap_or_default();
    match q.get("post_logout_redirect_uri") {
        Some(u) if u.starts_with(&state.auth.public_url) => Redirect::to(u).into_response(),
        _ => Redirect::to("/").into_response(),
    }
}
