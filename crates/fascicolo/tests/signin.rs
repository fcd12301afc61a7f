//! Sign-in end to end: our relying party against our demo provider over real HTTP (PKCE,
//! state, nonce, ES256 ID token), sessions and CSRF; then the relying party against a hostile
//! provider that sends forged, expired, mis-addressed or replayed tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use fascicolo_app::FhirService;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

const GIULIA_CF: &str = "RSSGLI85D52F205Q";

async fn me(app: &TestApp, session: &str) -> (u16, String) {
    let r = no_redirects().get(format!("{}/me", app.root)).header("cookie", format!("fascicolo_session={session}")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn demo_app() -> TestApp {
    let app = spawn_app().await;
    fascicolo_load::demo::seed(&FhirService::new(Arc::clone(&app.store))).await.unwrap();
    app
}

#[tokio::test]
async fn demo_provider_sign_in_sessions_and_csrf() {
    let app = demo_app().await;
    let s = sign_in(&app, GIULIA_CF, "citizen").await;
    let (status, page) = me(&app, &s).await;
    assert_eq!(status, 200);
    assert!(page.contains(GIULIA_CF) && page.contains("Il mio fascicolo"), "{page}");
    assert!(page.contains("Luca Bianchi") && page.contains("Anna Verdi"), "children and delegators are offered");
    assert!(!page.contains("Marco Bianchi"), "an adult child is not offered");
    let csrf = csrf_of(&page);
    let c = no_redirects();
    let post = |path: &str, form: Vec<(&str, &str)>| {
        c.post(format!("{}{path}", app.root)).header("cookie", format!("fascicolo_session={s}")).form(&form).send()
    };
    // every form needs the session's CSRF token
    assert_eq!(post("/auth/profile", vec![("acting_for", "bianchi-luca")]).await.unwrap().status(), 403);
    assert_eq!(post("/auth/profile", vec![("csrf", "forged"), ("acting_for", "bianchi-luca")]).await.unwrap().status(), 403);
    assert_eq!(post("/auth/profile", vec![("csrf", &csrf), ("acting_for", "bianchi-luca")]).await.unwrap().status(), 303);
    let (_, page) = me(&app, &s).await;
    assert!(page.contains("Stai consultando il fascicolo di") && page.contains("<strong>Luca Bianchi (figlio minore)</strong>"), "{page}");
    // not a record she may act on: the 19-year-old son
    assert_eq!(post("/auth/profile", vec![("csrf", &csrf), ("acting_for", "bianchi-marco")]).await.unwrap().status(), 403);
    // a second session, then sign out everywhere ends both
    let s2 = sign_in(&app, GIULIA_CF, "citizen").await;
    assert_eq!(me(&app, &s2).await.0, 200);
    assert_eq!(post("/auth/logout-everywhere", vec![("csrf", &csrf)]).await.unwrap().status(), 303);
    assert_eq!(me(&app, &s).await.0, 303);
    assert_eq!(me(&app, &s2).await.0, 303);
}

#[tokio::test]
async fn professionals_get_their_role_and_sign_out_reaches_the_provider() {
    let app = demo_app().await;
    let s = sign_in(&app, &fascicolo_load::demo::cf("FRRPLA70A01F205"), "gp").await;
    let (_, page) = me(&app, &s).await;
    assert!(page.contains("Medico di medicina generale"), "{page}");
    let csrf = csrf_of(&page);
    let r = no_redirects()
        .post(format!("{}/auth/logout", app.root))
        .header("cookie", format!("fascicolo_session={s}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with(&format!("{}/demo-idp/logout?", app.root)), "RP-initiated logout at the provider");
    assert!(set_cookie(&r, "fascicolo_session").is_some_and(|v| v.is_empty()));
    assert_eq!(me(&app, &s).await.0, 303);
}

#[tokio::test]
async fn sessions_expire_when_idle() {
    let store = fresh_store().await;
    let sessions = fascicolo_app::auth::Sessions::new(store, fascicolo_app::auth::SessionLimits { idle_ms: 50, absolute_ms: 60_000 });
    let (secret, _) = sessions.create(GIULIA_CF, fascicolo_app::Actor::anonymous(), Vec::new(), None).await.unwrap();
    assert!(sessions.get(&secret).await.unwrap().is_some());
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert!(sessions.get(&secret).await.unwrap().is_none());
    let abs =
        fascicolo_app::auth::Sessions::new(fresh_store().await, fascicolo_app::auth::SessionLimits { idle_ms: 60_000, absolute_ms: 50 });
    let (secret, _) = abs.create(GIULIA_CF, fascicolo_app::Actor::anonymous(), Vec::new(), None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert!(abs.get(&secret).await.unwrap().is_none(), "the absolute timeout holds even when active");
}

/// A provider under test control: every token it issues is shaped by `case`.
async fn hostile_provider(case: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = sk.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let mut jwk: Value = serde_json::from_str(&sk.public_key().to_jwk_string()).unwrap();
    jwk["kid"] = json!("k1");
    let other = p256::SecretKey::random(&mut rand::rngs::OsRng).to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let b = base.clone();
    let disc = json!({"issuer": base, "authorization_endpoint": format!("{base}/authorize"), "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks")});
    let router = Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { Json(disc) }))
        .route("/jwks", get(move || async move { Json(json!({"keys": [jwk]})) }))
        .route(
            "/token",
            post(move |body: String| async move {
                let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                let nonce = form.get("code").cloned().unwrap_or_default(); // the test passes the nonce as the code
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                let mut claims = json!({"iss": b, "sub": "u1", "aud": "fascicolo", "iat": now, "exp": now + 300, "nonce": nonce,
                    "https://attributes.eid.gov.it/fiscal_number": format!("TINIT-{GIULIA_CF}")});
                let mut key = pem.clone();
                match case {
                    "ok" => {}
                    "expired" => {
                        claims["exp"] = json!(now - 600);
                        claims["iat"] = json!(now - 900);
                    }
                    "wrong-audience" => claims["aud"] = json!("someone-else"),
                    "wrong-issuer" => claims["iss"] = json!("https://evil.example"),
                    "wrong-nonce" => claims["nonce"] = json!("replayed"),
                    "future" => claims["iat"] = json!(now + 3600),
                    "forged" => key = other.clone(),
                    "no-cf" => {
                        claims.as_object_mut().unwrap().remove("https://attributes.eid.gov.it/fiscal_number");
                    }
                    "bad-cf" => claims["https://attributes.eid.gov.it/fiscal_number"] = json!("TINIT-RSSGLI85D52F205A"),
                    _ => {}
                }
                let mut h = Header::new(Algorithm::ES256);
                h.kid = Some("k1".into());
                let t = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_pem(key.as_bytes()).unwrap()).unwrap();
                Json(json!({"access_token": "x", "token_type": "Bearer", "id_token": t}))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

#[tokio::test]
async fn relying_party_refuses_bad_id_tokens() {
    use fascicolo_web::oidc::{default_fiscal_claims, LoginState, RelyingParty, RpConfig, RpError};
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    for (case, ok) in [
        ("ok", true),
        ("expired", false),
        ("wrong-audience", false),
        ("wrong-issuer", false),
        ("wrong-nonce", false),
        ("future", false),
        ("forged", false),
        ("no-cf", false),
        ("bad-cf", false),
    ] {
        let issuer = hostile_provider(case).await;
        let rp = RelyingParty::new(
            RpConfig {
                issuer,
                client_id: "fascicolo".into(),
                client_secret: Some("s".into()),
                redirect_uri: "http://127.0.0.1/auth/callback".into(),
                scopes: "openid".into(),
                fiscal_claims: default_fiscal_claims(None),
            },
            reqwest::Client::new(),
        );
        let (url, ls) = rp.begin("st", "/me").await.unwrap();
        assert!(url.contains("code_challenge=") && url.contains("nonce="));
        let ls = LoginState { nonce: ls.nonce.clone(), ..ls };
        let res = rp.finish(&ls.nonce, &ls).await;
        assert_eq!(res.is_ok(), ok, "{case}: {:?}", res.as_ref().err().map(ToString::to_string));
        match res {
            Ok(id) => assert_eq!(id.cf.as_str(), GIULIA_CF),
            Err(e) => assert_eq!(matches!(e, RpError::Identity(_)), case.ends_with("cf"), "{case}: {e}"),
        }
    }
}
