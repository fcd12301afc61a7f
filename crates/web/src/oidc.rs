//! OpenID Connect relying party: authorization code flow with PKCE (S256), `state` (single use,
//! bound to the browser by a cookie), `nonce`, ID-token validation (signature from the
//! provider's JWKS, issuer, audience, authorized party, expiry and issue time with clock skew),
//! logout. Works with any provider found by discovery; in production the regional SPID/CIE
//! proxy, in demo mode our own demo provider, reached over HTTP like any other.

use base64::Engine as _;
use fascicolo_domain::CodiceFiscale;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// Allowed clock skew when checking `exp` and `iat`.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// How the relying party is configured.
#[derive(Debug, Clone)]
pub struct RpConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Our callback URL, registered with the provider.
    pub redirect_uri: String,
    pub scopes: String,
    /// Claims tried, in order, for the codice fiscale.
    pub fiscal_claims: Vec<String>,
}

/// The parts of the provider's discovery document we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// What a login in progress keeps server-side, under its `state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginState {
    pub nonce: String,
    pub verifier: String,
    /// Where to go after sign-in (a local path).
    pub next: String,
}

#[derive(Debug)]
pub enum RpError {
    Provider(String),
    Token(String),
    Identity(String),
}

impl std::fmt::Display for RpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpError::Provider(m) => write!(f, "the identity provider could not be reached or answered badly: {m}"),
            RpError::Token(m) => write!(f, "the identity token was refused: {m}"),
            RpError::Identity(m) => write!(f, "the identity could not be established: {m}"),
        }
    }
}

impl std::error::Error for RpError {}

/// The signed-in identity from a validated ID token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cf: CodiceFiscale,
    pub claims: Value,
    pub id_token: String,
}

struct Cached {
    discovery: Discovery,
    jwks: JwkSet,
    at: Instant,
}

/// The relying party, with discovery and keys cached (refreshed when a key id is unknown).
pub struct RelyingParty {
    pub cfg: RpConfig,
    http: reqwest::Client,
    cache: RwLock<Option<std::sync::Arc<Cached>>>,
}

pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The codice fiscale from the claims: configured claims first, then the SPID/CIE ones, with or
/// without the `TINIT-` prefix; validated with the domain type.
pub fn fiscal_number(claims: &Value, names: &[String]) -> Result<CodiceFiscale, RpError> {
    let raw = names
        .iter()
        .find_map(|n| claims.get(n).and_then(Value::as_str))
        .ok_or_else(|| RpError::Identity("the provider sent no fiscal number claim".into()))?;
    let cf = raw.trim().strip_prefix("TINIT-").unwrap_or(raw.trim());
    CodiceFiscale::parse(cf).map_err(|e| RpError::Identity(format!("the fiscal number is not a valid codice fiscale ({e})")))
}

pub fn default_fiscal_claims(extra: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = extra.into_iter().map(String::from).collect();
    for c in ["https://attributes.eid.gov.it/fiscal_number", "fiscal_number", "fiscalNumber"] {
        v.push(c.into());
    }
    v
}

impl RelyingParty {
    pub fn new(cfg: RpConfig, http: reqwest::Client) -> Self {
        RelyingParty { cfg, http, cache: RwLock::new(None) }
    }

    /// GET a JSON document from the provider; `what` names it in errors.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str, what: &str) -> Result<T, RpError> {
        let resp = self.http.get(url).send().await.and_then(reqwest::Response::error_for_status);
        let resp = resp.map_err(|e| RpError::Provider(format!("{what}: {e}")))?;
        resp.json().await.map_err(|e| RpError::Provider(format!("{what} is not the expected JSON: {e}")))
    }

    async fn fetch(&self) -> Result<std::sync::Arc<Cached>, RpError> {
        let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer.trim_end_matches('/'));
        let d: Discovery = self.get_json(&url, "discovery document").await?;
        if d.issuer.trim_end_matches('/') != self.cfg.issuer.trim_end_matches('/') {
            return Err(RpError::Provider(format!("discovery names issuer '{}', expected '{}'", d.issuer, self.cfg.issuer)));
        }
        let jwks: JwkSet = self.get_json(&d.jwks_uri, "key set").await?;
        let c = std::sync::Arc::new(Cached { discovery: d, jwks, at: Instant::now() });
        *self.cache.write() = Some(std::sync::Arc::clone(&c));
        Ok(c)
    }

    async fn cached(&self, refresh: bool) -> Result<std::sync::Arc<Cached>, RpError> {
        if !refresh {
            if let Some(c) = self.cache.read().as_ref().filter(|c| c.at.elapsed() < Duration::from_secs(3600)) {
                return Ok(std::sync::Arc::clone(c));
            }
        }
        self.fetch().await
    }

    pub async fn discovery(&self) -> Result<Discovery, RpError> {
        Ok(self.cached(false).await?.discovery.clone())
    }

    /// The provider's authorization URL for a new login; the state record to keep.
    pub async fn begin(&self, state: &str, next: &str) -> Result<(String, LoginState), RpError> {
        let d = self.discovery().await?;
        let ls =
            LoginState { nonce: fascicolo_app::auth::random_secret(), verifier: fascicolo_app::auth::random_secret(), next: next.into() };
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("redirect_uri", &self.cfg.redirect_uri)
            .append_pair("scope", &self.cfg.scopes)
            .append_pair("state", state)
            .append_pair("nonce", &ls.nonce)
            .append_pair("code_challenge", &pkce_challenge(&ls.verifier))
            .append_pair("code_challenge_method", "S256")
            .finish();
        let sep = if d.authorization_endpoint.contains('?') { '&' } else { '?' };
        Ok((format!("{}{sep}{q}", d.authorization_endpoint), ls))
    }

    /// Exchange the code and validate the ID token against the login's nonce.
    pub async fn finish(&self, code: &str, ls: &LoginState) -> Result<Identity, RpError> {
        let d = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", self.cfg.redirect_uri.clone()),
            ("code_verifier", ls.verifier.clone()),
        ];
        let mut req = self.http.post(&d.token_endpoint);
        match &self.cfg.client_secret {
            Some(secret) => req = req.basic_auth(&self.cfg.client_id, Some(secret)),
            None => form.push(("client_id", self.cfg.client_id.clone())),
        }
        let resp = req.form(&form).send().await.map_err(|e| RpError::Provider(format!("token endpoint: {e}")))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| RpError::Provider(format!("token response: {e}")))?;
        if !status.is_success() {
            let err = body["error"].as_str().unwrap_or("error");
            return Err(RpError::Provider(format!("the code was refused ({err})")));
        }
        let id_token = body["id_token"].as_str().ok_or_else(|| RpError::Token("the token response has no id_token".into()))?;
        let claims = self.validate(id_token, &ls.nonce).await?;
        let cf = fiscal_number(&claims, &self.cfg.fiscal_claims)?;
        Ok(Identity { cf, claims, id_token: id_token.to_string() })
    }

    /// Validate an ID token: signature, `iss`, `aud`, `azp`, `exp`/`iat` with clock skew, `nonce`.
    pub async fn validate(&self, id_token: &str, nonce: &str) -> Result<Value, RpError> {
        let header = jsonwebtoken::decode_header(id_token).map_err(|e| RpError::Token(format!("malformed: {e}")))?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        if !allowed.contains(&header.alg) {
            return Err(RpError::Token(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let mut cache = self.cached(false).await?;
        let find = |c: &Cached| -> Option<jsonwebtoken::jwk::Jwk> {
            match &header.kid {
                Some(k) => c.jwks.find(k).cloned(),
                None => (c.jwks.keys.len() == 1).then(|| c.jwks.keys[0].clone()),
            }
        };
        let jwk = match find(&cache) {
            Some(j) => j,
            None => {
                cache = self.cached(true).await?;
                find(&cache).ok_or_else(|| RpError::Token("signed with a key the provider does not publish".into()))?
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| RpError::Token(format!("unusable key: {e}")))?;
        let mut v = Validation::new(header.alg);
        v.leeway = CLOCK_SKEW_SECS;
        v.set_issuer(&[cache.discovery.issuer.as_str()]);
        v.set_audience(&[self.cfg.client_id.as_str()]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(id_token, &key, &v).map_err(|e| RpError::Token(e.to_string()))?;
        let claims = data.claims;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if claims["iat"].as_u64().is_some_and(|iat| iat > now + CLOCK_SKEW_SECS) {
            return Err(RpError::Token("issued in the future".into()));
        }
        if claims["nonce"].as_str() != Some(nonce) {
            return Err(RpError::Token("the nonce does not match this login".into()));
        }
        if let Some(aud) = claims["aud"].as_array() {
            if aud.len() > 1 && claims["azp"].as_str() != Some(self.cfg.client_id.as_str()) {
                return Err(RpError::Token("several audiences and we are not the authorized party".into()));
            }
        }
        Ok(claims)
    }

    /// Where to send the browser to end the provider's session too, when it supports it.
    pub async fn logout_url(&self, id_token: Option<&str>, after: &str) -> Option<String> {
        let d = self.discovery().await.ok()?;
        let end = d.end_session_endpoint?;
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("post_logout_redirect_uri", after).append_pair("client_id", &self.cfg.client_id);
        if let Some(t) = id_token {
            q.append_pair("id_token_hint", t);
        }
        let sep = if end.contains('?') { '&' } else { '?' };
        Some(format!("{end}{sep}{}", q.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fiscal_number_claims() {
        let names = default_fiscal_claims(None);
        let c = serde_json::json!({"https://attributes.eid.gov.it/fiscal_number": "TINIT-RSSGLI85D52F205Q"});
        assert_eq!(fiscal_number(&c, &names).map(|c| c.as_str().to_string()).ok().as_deref(), Some("RSSGLI85D52F205Q"));
        let c = serde_json::json!({"fiscal_number": "RSSGLI85D52F205Q"});
        assert!(fiscal_number(&c, &names).is_ok());
        let c = serde_json::json!({"fiscal_number": "TINIT-RSSGLI85D52F205A"});
        assert!(matches!(fiscal_number(&c, &names), Err(RpError::Identity(_))), "bad check character");
        assert!(matches!(fiscal_number(&serde_json::json!({"sub": "x"}), &names), Err(RpError::Identity(_))));
        // RFC 7636 appendix B
        assert_eq!(pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }
}
