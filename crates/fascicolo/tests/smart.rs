//! SMART on FHIR: discovery, backend services (signed JWT assertion → system token), the
//! authorization code flow of a registered app (PKCE, user approval, patient launch context,
//! scopes enforced), introspection and revocation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use fascicolo_app::auth::Client;
use fascicolo_app::FhirService;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};
use std::sync::Arc;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

struct Key {
    pem: String,
    jwks: String,
}

fn key(kid: &str) -> Key {
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let mut jwk: Value = serde_json::from_str(&sk.public_key().to_jwk_string()).unwrap();
    jwk["kid"] = json!(kid);
    Key { pem: sk.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(), jwks: json!({"keys": [jwk]}).to_string() }
}

fn assertion(k: &Key, kid: &str, client: &str, aud: &str, jti: &str) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    let claims = json!({"iss": client, "sub": client, "aud": aud, "exp": now() + 240, "jti": jti});
    jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_pem(k.pem.as_bytes()).unwrap()).unwrap()
}

async fn post_form(url: &str, form: &[(&str, &str)], bearer: Option<&str>) -> (u16, Value) {
    let mut rb = no_redirects().post(url).form(form);
    if let Some(t) = bearer {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn backend_services_introspection_and_revocation() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let k = key("hosp-1");
    let jwks = k.jwks.clone();
    let app = spawn_app_with(move |cfg| {
        cfg.clients.push(Client {
            id: "sacco-lis".into(),
            name: "Sacco laboratory system".into(),
            kind: "producer".into(),
            organization: Some("asst-fbf-sacco".into()),
            redirect_uris: Vec::new(),
            jwks: Some(jwks),
            secret_sha256: None,
        })
    })
    .await;
    fascicolo_load::demo::seed(&FhirService::new(Arc::clone(&app.store))).await.unwrap();
    record_fixtures(&FhirService::new(Arc::clone(&app.store))).await;
    let conf: Value = reqwest::get(format!("{}/.well-known/smart-configuration", app.base)).await.unwrap().json().await.unwrap();
    let token_url = conf["token_endpoint"].as_str().unwrap().to_string();
    assert_eq!(token_url, format!("{}/oauth/token", app.root));
    assert!(conf["capabilities"].as_array().unwrap().contains(&json!("client-confidential-asymmetric")));
    let grant = |a: &str| {
        vec![
            ("grant_type", "client_credentials".to_string()),
            ("scope", "system/*.cruds".to_string()),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string()),
            ("client_assertion", a.to_string()),
        ]
    };
    let send = |form: Vec<(&'static str, String)>| {
        let url = token_url.clone();
        async move {
            let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(&url, &f, None).await
        }
    };
    let good = assertion(&k, "hosp-1", "sacco-lis", &token_url, "j1");
    let (status, body) = send(grant(&good)).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(body["token_type"], "Bearer");
    // the same assertion again: jti replay
    assert_eq!(send(grant(&good)).await.0, 401);
    // wrong audience, unknown key, unknown client
    assert_eq!(send(grant(&assertion(&k, "hosp-1", "sacco-lis", "https://elsewhere/token", "j2"))).await.0, 401);
    assert_eq!(send(grant(&assertion(&key("hosp-1"), "hosp-1", "sacco-lis", &token_url, "j3"))).await.0, 401);
    assert_eq!(send(grant(&assertion(&k, "hosp-1", "nobody", &token_url, "j4"))).await.0, 401);
    // an assertion not valid before ten minutes from now is not valid now
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("hosp-1".into());
    let claims = json!({"iss": "sacco-lis", "sub": "sacco-lis", "aud": token_url, "exp": now() + 240, "nbf": now() + 600, "jti": "j5"});
    let future = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_pem(k.pem.as_bytes()).unwrap()).unwrap();
    let (status, body) = send(grant(&future)).await;
    assert_eq!(status, 401, "{body}");
    // the producer writes for its organisation and sees only its own work
    let auth = format!("Bearer {token}");
    let obs = observation("rossi-giulia", "2345-7", 97.0, "2026-11-25");
    let r = app.send("POST", "/Observation", Some(obs), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let listed = app.send("GET", "/Observation?patient=rossi-giulia", None, &[("authorization", &auth)]).await;
    let mine = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(ids(&listed.body), vec![mine.clone()]);
    // it finds the patient by codice fiscale (demographics only) and publishes with a
    // conditional reference, as hospital systems do
    let found =
        app.send("GET", "/Patient?identifier=http://hl7.it/sid/codiceFiscale|RSSGLI85D52F205Q", None, &[("authorization", &auth)]).await;
    assert_eq!(ids(&found.body), vec!["rossi-giulia"]);
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST", "url": "Observation"},
        "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "emoglobina"},
            "subject": {"reference": "Patient?identifier=http://hl7.it/sid/codiceFiscale|RSSGLI85D52F205Q"}}}]});
    let r = app.send("POST", "", Some(tx), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // but not the rest of her record
    assert_eq!(ids(&app.send("GET", "/DocumentReference?patient=rossi-giulia", None, &[("authorization", &auth)]).await.body).len(), 0);
    // introspection by a registered system; revocation
    let (s, v) = post_form(&format!("{}/oauth/introspect", app.root), &[("token", &token)], Some(&token)).await;
    assert_eq!(s, 200);
    assert_eq!(v["active"], true);
    assert_eq!(v["client_id"], "sacco-lis");
    assert!(v["scope"].as_str().unwrap().contains("system/*.cruds"));
    let (s, _) = post_form(&format!("{}/oauth/revoke", app.root), &[("token", &token)], None).await;
    assert_eq!(s, 200);
    assert_eq!(app.send("GET", "/Observation?patient=rossi-giulia", None, &[("authorization", &auth)]).await.status, 401);
    let (_, v) = post_form(&format!("{}/oauth/introspect", app.root), &[("token", &token)], Some(&app.token)).await;
    assert_eq!(v["active"], false);
}

#[tokio::test]
async fn authorization_code_flow_with_patient_context() {
    let app = spawn_app().await;
    fascicolo_load::demo::seed(&FhirService::new(Arc::clone(&app.store))).await.unwrap();
    record_fixtures(&FhirService::new(Arc::clone(&app.store))).await;
    let verifier = "a-verifier-of-enough-length-0123456789-abcdefghij";
    let challenge = fascicolo_web::oidc::pkce_challenge(verifier);
    let redirect = "http://127.0.0.1:9/callback";
    let authorize = format!(
        "{}/oauth/authorize?{}",
        app.root,
        form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", "demo-app")
            .append_pair("redirect_uri", redirect)
            .append_pair("scope", "launch/patient patient/*.rs openid")
            .append_pair("state", "s-123")
            .append_pair("aud", &app.base)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish()
    );
    let c = no_redirects();
    // not signed in: to the portal's sign-in, coming back here afterwards
    let r = c.get(&authorize).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("/auth/login?next=%2Foauth%2Fauthorize"));
    // an unregistered redirect is never followed
    let bad = authorize.replace("127.0.0.1%3A9", "evil.example");
    assert_eq!(c.get(&bad).send().await.unwrap().status(), 400);
    let session = sign_in(&app, "RSSGLI85D52F205Q", "citizen").await;
    let cookie = format!("fascicolo_session={session}");
    let page = c.get(&authorize).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("patient/*.rs") && page.contains("Demo SMART app"), "{page}");
    let csrf = csrf_of(&page);
    let form = [
        ("csrf", csrf.as_str()),
        ("client_id", "demo-app"),
        ("redirect_uri", redirect),
        ("scope", "launch/patient patient/*.rs openid"),
        ("state", "s-123"),
        ("code_challenge", challenge.as_str()),
        ("decision", "allow"),
    ];
    let r = c.post(format!("{}/oauth/authorize", app.root)).header("cookie", &cookie).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let back = location(&r);
    let q = query(&back);
    assert!(back.starts_with(redirect) && q["state"] == "s-123");
    let code = q["code"].clone();
    let token_url = format!("{}/oauth/token", app.root);
    let exchange = |v: &str| {
        vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.clone()),
            ("redirect_uri", redirect.to_string()),
            ("client_id", "demo-app".to_string()),
            ("code_verifier", v.to_string()),
        ]
    };
    let f = exchange("wrong-verifier");
    let (s, _) = post_form(&token_url, &f.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(), None).await;
    assert_eq!(s, 400, "PKCE mismatch (and the code is now spent)");
    // the code was single use: start again
    let r = c.post(format!("{}/oauth/authorize", app.root)).header("cookie", &cookie).form(&form).send().await.unwrap();
    let code = query(&location(&r))["code"].clone();
    let f: Vec<(&str, String)> =
        exchange(verifier).into_iter().map(|(k, v)| if k == "code" { (k, code.clone()) } else { (k, v) }).collect();
    let (s, tok) = post_form(&token_url, &f.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(), None).await;
    assert_eq!(s, 200, "{tok}");
    assert_eq!(tok["patient"], "rossi-giulia");
    assert!(tok["scope"].as_str().unwrap().contains("patient/*.rs"));
    let auth = format!("Bearer {}", tok["access_token"].as_str().unwrap());
    let mine = app.send("GET", "/DocumentReference", None, &[("authorization", &auth)]).await;
    assert_eq!(mine.status, 200);
    assert!(!ids(&mine.body).is_empty());
    // read-only scopes: no writes
    let obs = observation("rossi-giulia", "29463-7", 60.0, "2026-11-25");
    assert_eq!(app.send("POST", "/Observation", Some(obs), &[("authorization", &auth)]).await.status, 403);
    // bound to its launch patient: not her son's record, although she may see it in the portal
    assert_eq!(app.send("GET", "/Immunization?patient=bianchi-luca", None, &[("authorization", &auth)]).await.status, 403);
}
