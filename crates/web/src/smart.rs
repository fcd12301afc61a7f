//! SMART on FHIR authorization server: `/.well-known/smart-configuration`, the authorization
//! code flow for registered apps (PKCE; the user signs in through the portal and approves the
//! scopes; launch context `patient`), client credentials with signed JWT assertions for hospital
//! systems (SMART Backend Services: `private_key_jwt`, single-use `jti`), introspection (RFC 7662)
//! and revocation (RFC 7009). Access tokens are opaque and stored hashed.

use crate::auth_web::session;
use crate::html::{page, Lang};
use crate::AppState;
use axum::extract::{Form, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use fascicolo_app::auth::{hash_secret, random_secret, Client};
use fascicolo_app::gate::Scope;
use fascicolo_app::Actor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use maud::html;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

const CODE_KIND: &str = "smart-code";
const JTI_KIND: &str = "assertion-jti";
/// Lifetime of access tokens.
pub const TOKEN_TTL_SECS: i64 = 3600;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn endpoint(state: &AppState, path: &str) -> String {
    format!("{}{path}", state.auth.public_url)
}

pub async fn configuration(State(state): State<AppState>) -> Response {
    let mut r = Json(json!({
        "authorization_endpoint": endpoint(&state, "/oauth/authorize"),
        "token_endpoint": endpoint(&state, "/oauth/token"),
        "introspection_endpoint": endpoint(&state, "/oauth/introspect"),
        "revocation_endpoint": endpoint(&state, "/oauth/revoke"),
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256", "ES256"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["patient/*.rs", "patient/*.cruds", "user/*.rs", "user/*.cruds", "system/*.rs", "system/*.cruds", "launch/patient", "openid", "fhirUser"],
        "capabilities": ["launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
            "context-standalone-patient", "permission-patient", "permission-user", "permission-v1", "permission-v2"]
    }))
    .into_response();
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    tracing::info!(error, "token request refused");
    let mut r = (status, Json(json!({"error": error, "error_description": description}))).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn client<'a>(state: &'a AppState, id: &str) -> Option<&'a Client> {
    state.auth.clients.iter().find(|c| c.id == id)
}

fn redirect_allowed(c: &Client, uri: &str) -> bool {
    c.redirect_uris.iter().any(|r| match r.strip_suffix('*') {
        Some(prefix) => uri.starts_with(prefix),
        None => r == uri,
    })
}

/// The approval page of the authorization code flow.
pub async fn authorize(State(state): State<AppState>, RawQuery(raw): RawQuery, headers: HeaderMap) -> crate::portal::PageResult {
    let lang = Lang::from_query(raw.as_deref());
    let q: HashMap<String, String> =
        raw.as_deref().map(|s| form_urlencoded::parse(s.as_bytes()).into_owned().collect()).unwrap_or_default();
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    let Some(c) = client(&state, get("client_id")).filter(|c| c.kind == "app") else {
        return Ok((StatusCode::BAD_REQUEST, Html(crate::html::error_page(lang, "client_id", lang.t("Applicazione non registrata."))))
            .into_response());
    };
    if !redirect_allowed(c, get("redirect_uri")) {
        return Ok((
            StatusCode::BAD_REQUEST,
            Html(crate::html::error_page(lang, "redirect_uri", lang.t("Indirizzo di ritorno non registrato."))),
        )
            .into_response());
    }
    let back = |err: &str, why: &str| {
        let qs = form_urlencoded::Serializer::new(String::new())
            .append_pair("error", err)
            .append_pair("error_description", why)
            .append_pair("state", get("state"))
            .finish();
        Redirect::to(&format!("{}?{qs}", get("redirect_uri"))).into_response()
    };
    if get("response_type") != "code" || get("code_challenge_method") != "S256" || get("code_challenge").is_empty() {
        return Ok(back("invalid_request", "response_type=code and PKCE (code_challenge, code_challenge_method=S256) are required"));
    }
    if !get("aud").is_empty() && get("aud").trim_end_matches('/') != state.fhir_base().trim_end_matches('/') {
        return Ok(back("invalid_request", "aud must be this server's FHIR base URL"));
    }
    let Some((_, s)) = session(&state, &headers).await? else {
        let here = format!("/oauth/authorize?{}", raw.unwrap_or_default());
        let next = form_urlencoded::Serializer::new(String::new()).append_pair("next", &here).finish();
        return Ok(Redirect::to(&format!("/auth/login?{next}")).into_response());
    };
    let (clinical, _) = fascicolo_app::auth::grantable_scopes(&s.actor, get("scope"));
    if clinical.is_empty() {
        return Ok(back("invalid_scope", "no clinical scope your profile may grant (citizens: patient/..., professionals: user/...)"));
    }
    let body = html! {
        h1 { (lang.t("Autorizzare l'applicazione?")) }
        p {
            (lang.t("L'applicazione")) " " strong { (c.name) } " "
            (lang.t("chiede di accedere al fascicolo con questi permessi:"))
        }
        ul { @for sc in &clinical { li { code { (sc.to_scope_string()) } } } }
        form method="post" action="/oauth/authorize" {
            input type="hidden" name="csrf" value=(s.csrf);
            @for k in ["client_id", "redirect_uri", "scope", "state", "code_challenge"] { input type="hidden" name=(k) value=(get(k)); }
            button type="submit" name="decision" value="allow" { (lang.t("Consenti")) }
            " "
            button type="submit" name="decision" value="deny" .secondary { (lang.t("Nega")) }
        }
    };
    Ok(Html(page(lang, lang.t("Autorizza applicazione"), None, body)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct Approval {
    csrf: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    #[serde(default)]
    state: String,
    code_challenge: String,
    decision: String,
}

pub async fn approve(State(state): State<AppState>, headers: HeaderMap, Form(a): Form<Approval>) -> crate::portal::PageResult {
    let Some((_, s)) = session(&state, &headers).await? else {
        return Ok(Redirect::to("/auth/login").into_response());
    };
    if !fascicolo_app::auth::same_secret(&s.csrf, &a.csrf) {
        return Ok((StatusCode::FORBIDDEN, "the form has expired; reload the page").into_response());
    }
    let Some(c) = client(&state, &a.client_id).filter(|c| c.kind == "app" && redirect_allowed(c, &a.redirect_uri)) else {
        return Ok((StatusCode::BAD_REQUEST, "unknown client or redirect").into_response());
    };
    let reply = |pairs: &[(&str, &str)]| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        q.append_pair("state", &a.state);
        Redirect::to(&format!("{}?{}", a.redirect_uri, q.finish())).into_response()
    };
    if a.decision != "allow" {
        return Ok(reply(&[("error", "access_denied")]));
    }
    let (clinical, other) = fascicolo_app::auth::grantable_scopes(&s.actor, &a.scope);
    let mut actor = s.actor.clone();
    actor.scopes = Some(clinical);
    let code = random_secret();
    let data =
        json!({"actor": actor, "other": other.join(" "), "client_id": c.id, "redirect_uri": a.redirect_uri, "challenge": a.code_challenge});
    if state.fhir.issue_code(CODE_KIND, &code, &c.id, &data, 60_000).await.is_err() {
        return Ok((StatusCode::SERVICE_UNAVAILABLE, "try again").into_response());
    }
    Ok(reply(&[("code", &code)]))
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(v.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn token_response(issued: &fascicolo_app::auth::Issued, extra_scope: &str, patient: Option<&str>) -> Response {
    let scope = [issued.scope.as_str(), extra_scope].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(" ");
    let mut body = json!({"access_token": issued.access_token, "token_type": "Bearer", "expires_in": issued.expires_in, "scope": scope});
    if let Some(p) = patient {
        body["patient"] = json!(p);
    }
    let mut r = Json(body).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub async fn token(State(state): State<AppState>, headers: HeaderMap, Form(t): Form<TokenForm>) -> Response {
    match t.grant_type.as_str() {
        "authorization_code" => code_grant(&state, &headers, &t).await,
        "client_credentials" => client_credentials(&state, &t).await,
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "use authorization_code or client_credentials"),
    }
}

/// An authenticated client asking for more tokens than its allowance gets 429 (the answer).
fn client_allowance(state: &AppState, client_id: &str) -> Option<Response> {
    state.throttle.admit_client(client_id).err().map(|wait| {
        tracing::warn!(client_id, "token rate limit reached");
        let mut r = oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            &format!("too many tokens for this client; retry in {} s", wait.secs()),
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.secs()));
        r
    })
}

async fn code_grant(state: &AppState, headers: &HeaderMap, t: &TokenForm) -> Response {
    // client authentication: secret (basic) for confidential apps, none (PKCE) for public ones
    let (client_id, secret) = match basic_auth(headers) {
        Some((u, p)) => (u, Some(p)),
        None => (t.client_id.clone().unwrap_or_default(), None),
    };
    let Some(c) = client(state, &client_id).filter(|c| c.kind == "app") else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    if let Some(expected) = &c.secret_sha256 {
        if secret.as_deref().map(hash_secret).as_ref() != Some(expected) {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
        }
    }
    let (Some(code), Some(verifier)) = (t.code.as_deref(), t.code_verifier.as_deref()) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "code and code_verifier are required");
    };
    let rec = match state.fhir.redeem_code(CODE_KIND, code).await {
        Ok(Some(r)) => r,
        Ok(None) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code is unknown, used or expired"),
        Err(_) => return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again"),
    };
    let d = rec.data;
    if d["client_id"].as_str() != Some(c.id.as_str()) || d["redirect_uri"].as_str() != t.redirect_uri.as_deref() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code was issued to another client or redirect");
    }
    if crate::oidc::pkce_challenge(verifier) != d["challenge"].as_str().unwrap_or_default() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "PKCE verification failed");
    }
    let Ok(actor) = serde_json::from_value::<Actor>(d["actor"].clone()) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "bad code");
    };
    if let Some(r) = client_allowance(state, &c.id) {
        return r;
    }
    match state.tokens.issue(&actor, &c.id, TOKEN_TTL_SECS).await {
        Ok(i) => token_response(&i, d["other"].as_str().unwrap_or_default(), actor.acting_for.as_deref()),
        Err(_) => oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again"),
    }
}

/// SMART Backend Services: the client proves itself with a JWT signed by a key in its
/// registered JWK Set (`iss` = `sub` = client id, `aud` = our token endpoint, short `exp`,
/// single-use `jti`).
async fn client_credentials(state: &AppState, t: &TokenForm) -> Response {
    if t.client_assertion_type.as_deref() != Some(ASSERTION_TYPE) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", "client_credentials needs a JWT client assertion (private_key_jwt)");
    }
    let Some(assertion) = t.client_assertion.as_deref() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", "client_assertion is missing");
    };
    let header = match jsonwebtoken::decode_header(assertion) {
        Ok(h) => h,
        Err(_) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "the client assertion is not a JWT"),
    };
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384 | Algorithm::RS256 | Algorithm::ES256) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unsupported signing algorithm");
    }
    let claims: Value = match jsonwebtoken::dangerous::insecure_decode::<Value>(assertion) {
        Ok(d) => d.claims,
        Err(_) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "the client assertion is not a JWT"),
    };
    let iss = claims["iss"].as_str().unwrap_or_default();
    let Some(c) = client(state, iss).filter(|c| matches!(c.kind.as_str(), "platform" | "producer" | "merchant")) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown backend client");
    };
    let Some(jwks) = c.jwks.as_deref().and_then(|j| serde_json::from_str::<JwkSet>(j).ok()) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "the client has no registered keys");
    };
    let jwk = match &header.kid {
        Some(k) => jwks.find(k).cloned(),
        None => (jwks.keys.len() == 1).then(|| jwks.keys[0].clone()),
    };
    let Some(key) = jwk.and_then(|j| DecodingKey::from_jwk(&j).ok()) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "signed with a key the client did not register");
    };
    let mut v = Validation::new(header.alg);
    v.leeway = crate::oidc::CLOCK_SKEW_SECS;
    v.set_issuer(&[c.id.as_str()]);
    let aud = endpoint(state, "/oauth/token");
    v.set_audience(&[aud.as_str()]);
    v.sub = Some(c.id.clone());
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    // an assertion that is not valid yet is not valid (RFC 7519 4.1.5)
    v.validate_nbf = true;
    let verified = match jsonwebtoken::decode::<Value>(assertion, &key, &v) {
        Ok(d) => d.claims,
        Err(e) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &format!("the client assertion is not valid: {e}")),
    };
    let now = fascicolo_fhir::datetime::now_ms() / 1000;
    let exp = verified["exp"].as_i64().unwrap_or(0);
    if exp > now + 300 + 60 {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "the assertion must expire within five minutes");
    }
    let Some(jti) = verified["jti"].as_str().filter(|j| !j.is_empty()) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "the assertion needs a jti");
    };
    match state.fhir.first_use_of_assertion(JTI_KIND, &c.id, jti, (exp + 120) * 1000).await {
        Ok(true) => {}
        Ok(false) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "this assertion was already used (jti replay)"),
        Err(_) => return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again"),
    }
    let requested = t.scope.as_deref().unwrap_or("system/*.rs");
    let scopes: Vec<Scope> = requested.split_whitespace().filter_map(Scope::parse).filter(|s| s.context == "system").collect();
    if scopes.is_empty() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "ask for system/ scopes, e.g. system/*.rs");
    }
    let actor = match c.system_actor(scopes) {
        Ok(a) => a,
        Err(_) => return oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", "not a backend client"),
    };
    if let Some(r) = client_allowance(state, &c.id) {
        return r;
    }
    match state.tokens.issue(&actor, &c.id, TOKEN_TTL_SECS).await {
        Ok(i) => token_response(&i, "", None),
        Err(_) => oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again"),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenOnly {
    token: String,
}

/// RFC 7662. The caller authenticates with its own access token (a registered backend system).
pub async fn introspect(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<TokenOnly>) -> Response {
    let caller = match crate::fhir_api::authenticate(&state, &headers).await {
        Ok(a) => a,
        Err(_) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", "authenticate with an access token"),
    };
    match state.tokens.introspect_for(&caller, &f.token).await {
        Ok(v) => Json(v).into_response(),
        Err(fascicolo_app::AppError::Forbidden(m)) => oauth_error(StatusCode::FORBIDDEN, "insufficient_scope", &m),
        Err(_) => oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again"),
    }
}

/// RFC 7009: revoking an unknown token succeeds too.
pub async fn revoke(State(state): State<AppState>, Form(f): Form<TokenOnly>) -> Response {
    match state.tokens.revoke(&f.token).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(_) => oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again"),
    }
}
