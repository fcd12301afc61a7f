//! Credentials: opaque access tokens (stored hashed, introspectable, revocable), registered
//! clients, and who a signed-in person is in the registry (citizen, professional, operator).

use crate::access::CF_SYSTEM;
use crate::error::{AppError, AppResult};
use crate::gate::{Actor, ProRole, Scope, Who, ROLE_SYSTEM};
use fascicolo_domain::CodiceFiscale;
use fascicolo_fhir::datetime;
use fascicolo_store::{AuthRecord, Store};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Record kind of access tokens.
pub const ACCESS_TOKEN: &str = "access-token";

/// A random secret: 32 bytes from the OS, base64url.
pub fn random_secret() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256 as lowercase hex: secrets are stored only as their hash.
pub fn hash_secret(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A client registered with the authorization server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub id: String,
    pub name: String,
    /// `platform` (trusted integration, full access, audited), `producer` (writes documents for
    /// its organisation), `merchant` (a celiac merchant: its own API only, no FHIR access),
    /// `app` (a SMART app acting for a signed-in user).
    pub kind: String,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// JWK Set (JSON text) of keys the client signs its assertions with (backend services).
    #[serde(default)]
    pub jwks: Option<String>,
    /// SHA-256 hex of the client secret, for confidential apps using client_secret_basic.
    #[serde(default)]
    pub secret_sha256: Option<String>,
}

impl Client {
    /// The actor a client-credentials token of this client stands for.
    pub fn system_actor(&self, scopes: Vec<Scope>) -> AppResult<Actor> {
        let (platform, scopes, organization) = match self.kind.as_str() {
            "platform" => (true, scopes, self.organization.clone()),
            "producer" => (false, scopes, self.organization.clone()),
            // a celiac merchant reaches its own API only: no FHIR scope, and no organisation
            // that would make it a document producer (the merchant registry names its shop)
            "merchant" => (false, Vec::new(), None),
            _ => return Err(AppError::Forbidden(format!("client '{}' is not a backend service", self.id))),
        };
        let mut a = Actor::new(Who::Client { client_id: self.id.clone(), organization, platform });
        a.scopes = Some(scopes);
        Ok(a)
    }
}

/// What a token record holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenData {
    actor: Actor,
    client_id: String,
    scope: String,
    issued_at: i64,
}

/// A freshly issued token (the secret is shown once).
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
}

/// The subject key of an actor, for "sign out everywhere" and revocation by subject.
pub fn subject_of(actor: &Actor) -> String {
    match &actor.who {
        Who::Citizen { cf, .. } => format!("cf:{cf}"),
        Who::Professional { practitioner, .. } => format!("practitioner:{practitioner}"),
        Who::Client { client_id, .. } => format!("client:{client_id}"),
        Who::System => "system".into(),
        Who::Anonymous => "anonymous".into(),
    }
}

/// How long a server trusts a token it has looked up before asking the database again. A
/// token revoked on this server stops at once; on other servers within this time.
pub const TOKEN_CACHE_MS: i64 = 5_000;

/// Token hash → (trusted until, actor).
type TokenCache = std::collections::HashMap<String, (i64, Arc<Actor>)>;

/// Tokens over the store's sign-in records (shared by every app server), with a short
/// per-server cache of the ones recently seen.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<dyn Store>,
    cache: Arc<parking_lot::Mutex<TokenCache>>,
}

impl Tokens {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Tokens { store, cache: Arc::default() }
    }

    pub async fn issue(&self, actor: &Actor, client_id: &str, ttl_secs: i64) -> AppResult<Issued> {
        let token = format!("fat_{}", random_secret());
        let now = datetime::now_ms();
        let scope = actor.scopes.as_ref().map(|l| l.iter().map(Scope::to_scope_string).collect::<Vec<_>>().join(" ")).unwrap_or_default();
        let data = TokenData { actor: actor.clone(), client_id: client_id.to_string(), scope: scope.clone(), issued_at: now };
        let rec = AuthRecord {
            kind: ACCESS_TOKEN.into(),
            id: hash_secret(&token),
            subject: subject_of(actor),
            data: serde_json::to_string(&data).map_err(|e| AppError::BadRequest(e.to_string()))?,
            expires_at: now + ttl_secs * 1000,
        };
        self.store.auth_put(&rec, true).await?;
        Ok(Issued { access_token: token, expires_in: ttl_secs, scope })
    }

    /// The actor of a bearer token; a clear 401 when it is unknown, expired or revoked.
    pub async fn resolve(&self, token: &str) -> AppResult<Actor> {
        let id = hash_secret(token);
        let now = datetime::now_ms();
        if let Some((until, actor)) = self.cache.lock().get(&id) {
            if now < *until {
                return Ok((**actor).clone());
            }
        }
        let rec = self.store.auth_get(ACCESS_TOKEN, &id, now).await?;
        let rec = rec.ok_or_else(|| AppError::Unauthorized("the access token is not valid (unknown, expired or revoked)".into()))?;
        let data: TokenData =
            serde_json::from_str(&rec.data).map_err(|_| AppError::Unauthorized("the access token is not valid".into()))?;
        let mut cache = self.cache.lock();
        if cache.len() > 50_000 {
            cache.retain(|_, (until, _)| *until > now);
        }
        cache.insert(id, ((now + TOKEN_CACHE_MS).min(rec.expires_at), Arc::new(data.actor.clone())));
        Ok(data.actor)
    }

    /// RFC 7662 introspection, for a caller that is a registered system.
    pub async fn introspect_for(&self, caller: &Actor, token: &str) -> AppResult<Value> {
        if !matches!(caller.who, Who::Client { .. }) {
            return Err(AppError::Forbidden("introspection is for registered systems".into()));
        }
        self.introspect(token).await
    }

    /// RFC 7662 introspection response.
    pub async fn introspect(&self, token: &str) -> AppResult<Value> {
        let now = datetime::now_ms();
        let Some(rec) = self.store.auth_get(ACCESS_TOKEN, &hash_secret(token), now).await? else {
            return Ok(json!({"active": false}));
        };
        let Ok(data) = serde_json::from_str::<TokenData>(&rec.data) else { return Ok(json!({"active": false})) };
        let mut v = json!({"active": true, "scope": data.scope, "client_id": data.client_id, "token_type": "Bearer",
            "exp": rec.expires_at / 1000, "iat": data.issued_at / 1000, "sub": rec.subject});
        if let Some(p) = &data.actor.acting_for {
            v["patient"] = Value::String(p.clone());
        }
        Ok(v)
    }

    /// RFC 7009 revocation: always succeeds (unknown tokens included).
    pub async fn revoke(&self, token: &str) -> AppResult<()> {
        let id = hash_secret(token);
        self.cache.lock().remove(&id);
        self.store.auth_delete(ACCESS_TOKEN, &id).await?;
        Ok(())
    }

    /// Forget every cached token (after "sign out everywhere" on this server).
    pub fn forget_all(&self) {
        self.cache.lock().clear();
    }
}

/// One way a person can act: as a citizen, or in one of their professional roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub who: Who,
    /// For the profile picker: "Cittadino", "Medico di medicina generale — ASST ...".
    pub label: String,
}

/// "Given Family" of a Patient, Practitioner or RelatedPerson.
/// A Patient's (or RelatedPerson's) codice fiscale, from its identifiers.
pub fn cf_of(v: &Value) -> Option<&str> {
    v["identifier"].as_array()?.iter().find(|i| i["system"] == fascicolo_domain::systems::CF_SYSTEM)?["value"].as_str()
}

pub fn display_name(v: &Value) -> String {
    let n = &v["name"][0];
    let given = n["given"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(" ");
    format!("{given} {}", n["family"].as_str().unwrap_or_default()).trim().to_string()
}

/// Every profile a person identified by codice fiscale holds in the registry: citizen (a
/// Patient with that CF, or none yet), and each active PractitionerRole of the Practitioner
/// with that CF.
pub async fn profiles_for(store: &dyn Store, cf: &CodiceFiscale) -> AppResult<Vec<Profile>> {
    let ident = format!("{CF_SYSTEM}|{cf}");
    let mut out = Vec::new();
    let patients = crate::access::lookup_values(store, None, "Patient", &[("identifier", &ident)], 50).await?;
    let patient = patients.first().and_then(|p| p["id"].as_str()).map(String::from);
    out.push(Profile { who: Who::Citizen { cf: cf.clone(), patient }, label: "citizen".into() });
    for pr in crate::access::lookup_values(store, None, "Practitioner", &[("identifier", &ident)], 50).await? {
        let Some(pid) = pr["id"].as_str() else { continue };
        for role in
            crate::access::lookup_values(store, None, "PractitionerRole", &[("practitioner", &format!("Practitioner/{pid}"))], 50).await?
        {
            if role["active"] == Value::Bool(false) {
                continue;
            }
            let org = role["organization"]["reference"].as_str().and_then(|r| r.strip_prefix("Organization/")).map(String::from);
            for code in role["code"].as_array().into_iter().flatten().flat_map(|c| c["coding"].as_array().cloned().unwrap_or_default()) {
                if code["system"] != ROLE_SYSTEM {
                    continue;
                }
                if let Some(r) = code["code"].as_str().and_then(ProRole::parse) {
                    let who = Who::Professional { practitioner: pid.to_string(), organization: org.clone(), role: r };
                    if !out.iter().any(|p: &Profile| p.who == who) {
                        out.push(Profile { who, label: format!("{} ({})", r.code(), display_name(&pr)) });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The professional profile of a Practitioner id (for `fascicolo token --as clinician:<id>`).
pub async fn professional(store: &dyn Store, practitioner: &str, clinical_only: bool) -> AppResult<Who> {
    for role in
        crate::access::lookup_values(store, None, "PractitionerRole", &[("practitioner", &format!("Practitioner/{practitioner}"))], 50)
            .await?
    {
        let org = role["organization"]["reference"].as_str().and_then(|r| r.strip_prefix("Organization/")).map(String::from);
        for code in role["code"].as_array().into_iter().flatten().flat_map(|c| c["coding"].as_array().cloned().unwrap_or_default()) {
            if let Some(r) = code["code"].as_str().and_then(ProRole::parse).filter(|_| code["system"] == ROLE_SYSTEM) {
                if !clinical_only || r.clinical() {
                    return Ok(Who::Professional { practitioner: practitioner.to_string(), organization: org, role: r });
                }
            }
        }
    }
    Err(AppError::NotFound(format!(
        "Practitioner/{practitioner} has no {}role in the registry",
        if clinical_only { "clinical " } else { "" }
    )))
}

/// Record kind of portal sessions.
pub const SESSION: &str = "session";
/// A sign-in `state` that has been used (replay protection; the state itself lives in a cookie).
pub const SIGN_IN_USED: &str = "sign-in-used";

/// A signed-in browser session, stored server-side (app servers stay stateless).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The person's codice fiscale (every profile is theirs).
    pub person: String,
    /// The active profile, and whose record it acts on.
    pub actor: Actor,
    /// Every profile the person holds (citizen, professional roles).
    pub profiles: Vec<Profile>,
    /// Synchronizer token that every form of the session must carry.
    pub csrf: String,
    pub created_at: i64,
    pub last_seen: i64,
    /// The provider's ID token, for the logout hint.
    pub id_token: Option<String>,
}

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle_ms: i64,
    pub absolute_ms: i64,
}

/// Sessions over the store's sign-in records.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
    pub limits: SessionLimits,
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, limits: SessionLimits) -> Self {
        Sessions { store, limits }
    }

    fn expiry(&self, s: &Session) -> i64 {
        (s.created_at + self.limits.absolute_ms).min(s.last_seen + self.limits.idle_ms)
    }

    async fn save(&self, id_hash: &str, s: &Session) -> AppResult<()> {
        let rec = AuthRecord {
            kind: SESSION.into(),
            id: id_hash.to_string(),
            subject: format!("cf:{}", s.person),
            data: serde_json::to_string(s).map_err(|e| AppError::BadRequest(e.to_string()))?,
            expires_at: self.expiry(s),
        };
        self.store.auth_put(&rec, true).await?;
        Ok(())
    }

    /// Start a session; returns the cookie secret (shown once, stored hashed).
    pub async fn create(
        &self,
        person: &str,
        actor: Actor,
        profiles: Vec<Profile>,
        id_token: Option<String>,
    ) -> AppResult<(String, Session)> {
        let now = datetime::now_ms();
        let secret = random_secret();
        let s = Session { person: person.to_string(), actor, profiles, csrf: random_secret(), created_at: now, last_seen: now, id_token };
        self.save(&hash_secret(&secret), &s).await?;
        Ok((secret, s))
    }

    /// The live session of a cookie secret, its idle clock refreshed (at most once a minute).
    pub async fn get(&self, secret: &str) -> AppResult<Option<Session>> {
        let id = hash_secret(secret);
        let now = datetime::now_ms();
        let Some(rec) = self.store.auth_get(SESSION, &id, now).await? else { return Ok(None) };
        let Ok(mut s) = serde_json::from_str::<Session>(&rec.data) else { return Ok(None) };
        if now - s.last_seen > 60_000 {
            s.last_seen = now;
            self.save(&id, &s).await?;
        }
        Ok(Some(s))
    }

    /// Mark a sign-in's `state` as used; false when it already was (a replayed callback).
    /// Only a sign-in that came back with a valid code reaches this, so starting a sign-in
    /// stores nothing.
    pub async fn spend_sign_in(&self, state_secret: &str, valid_for_ms: i64) -> AppResult<bool> {
        let rec = AuthRecord {
            kind: SIGN_IN_USED.into(),
            id: hash_secret(state_secret),
            subject: "sign-in".into(),
            data: String::new(),
            expires_at: datetime::now_ms() + valid_for_ms,
        };
        Ok(self.store.auth_put(&rec, false).await?)
    }

    pub async fn update(&self, secret: &str, s: &Session) -> AppResult<()> {
        self.save(&hash_secret(secret), s).await
    }

    pub async fn end(&self, secret: &str) -> AppResult<()> {
        self.store.auth_delete(SESSION, &hash_secret(secret)).await?;
        Ok(())
    }

    /// Sign out everywhere: every session of this person, and the access tokens of every
    /// profile they hold.
    pub async fn end_all(&self, s: &Session) -> AppResult<u64> {
        let n = self.store.auth_delete_subject(SESSION, &format!("cf:{}", s.person)).await?;
        for p in &s.profiles {
            self.store.auth_delete_subject(ACCESS_TOKEN, &subject_of(&Actor::new(p.who.clone()))).await?;
        }
        Ok(n)
    }
}

/// How a person acts for a record that is not their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActingAs {
    /// Parental responsibility for a minor child.
    Parent,
    /// An active delegation from the record's holder.
    Delegate,
}

/// A record a person acts for: whose, how, and the holder's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Represented {
    pub patient: String,
    pub acting_as: ActingAs,
    pub name: String,
    /// What a delegation covers: resource types (empty: the whole record).
    pub scope: Vec<String>,
    /// When a delegation ends (FHIR dateTime), if it does.
    pub until: Option<String>,
    /// The holder's administrative gender (`female`, `male`...; empty when not recorded), for
    /// the words that agree with it ("figlia", "figlio").
    pub gender: String,
}

/// The records a citizen may act on besides their own: children (parental responsibility,
/// while minors, by the gate's own relation rules) and delegators (active delegations).
pub async fn represented(store: &dyn Store, cf: &CodiceFiscale) -> AppResult<Vec<Represented>> {
    use crate::access::{relation_through, Relation};
    let now = datetime::now_ms();
    let mut out = Vec::new();
    for rp in crate::access::lookup_values(store, None, "RelatedPerson", &[("identifier", &format!("{CF_SYSTEM}|{cf}"))], 50).await? {
        let Some(pid) = rp["patient"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/")) else { continue };
        let Some(p) = store.read("Patient", pid).await?.filter(|s| !s.deleted) else { continue };
        let pv: Value = serde_json::from_str(&p.json).unwrap_or(Value::Null);
        let (acting_as, scope) = match relation_through(&rp, Some(&pv), now) {
            Some(Relation::Parent { minor: true, .. }) => (ActingAs::Parent, Vec::new()),
            Some(Relation::Delegate { active: true, scope, .. }) => (ActingAs::Delegate, scope),
            _ => continue,
        };
        let until = if acting_as == ActingAs::Delegate { rp["period"]["end"].as_str().map(String::from) } else { None };
        let gender = pv["gender"].as_str().unwrap_or_default().to_string();
        out.push(Represented { patient: pid.to_string(), acting_as, name: display_name(&pv), scope, until, gender });
    }
    Ok(out)
}

/// Compare two secrets in constant time (CSRF tokens).
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Whether a signed-in citizen may act on `target`'s record: their own, a minor child's, or an
/// active delegator's. Other profiles act on no record by default.
pub async fn may_act_for(store: &dyn Store, who: &Who, target: &str) -> AppResult<bool> {
    let Who::Citizen { cf, patient } = who else { return Ok(false) };
    if patient.as_deref() == Some(target) {
        return Ok(true);
    }
    Ok(represented(store, cf).await?.iter().any(|r| r.patient == target))
}

/// The scopes a person may grant an app: citizens `patient/` ones, professionals `user/` ones;
/// plus the non-clinical scopes that are only echoed back (`launch/patient`, `openid`...).
pub fn grantable_scopes(actor: &Actor, requested: &str) -> (Vec<Scope>, Vec<String>) {
    let ctx = match actor.who {
        Who::Citizen { .. } => "patient",
        _ => "user",
    };
    let mut clinical = Vec::new();
    let mut other = Vec::new();
    for s in requested.split_whitespace() {
        match Scope::parse(s) {
            Some(sc) if sc.context == ctx => clinical.push(sc),
            Some(_) => {}
            None if matches!(s, "launch/patient" | "openid" | "fhirUser" | "offline_access") => other.push(s.to_string()),
            None => {}
        }
    }
    (clinical, other)
}

/// The profile a sign-in starts in: the one hinted at (if the person holds it), else the citizen
/// with a record, else a professional role, else whatever there is.
pub fn choose_profile(profiles: &[Profile], hint: Option<&str>) -> Option<Profile> {
    let hint = hint.unwrap_or("citizen");
    profiles
        .iter()
        .find(|p| match &p.who {
            Who::Citizen { .. } => hint == "citizen",
            Who::Professional { role, .. } => role.code() == hint,
            _ => false,
        })
        .or_else(|| profiles.iter().find(|p| matches!(&p.who, Who::Citizen { patient: Some(_), .. })))
        .or_else(|| profiles.iter().find(|p| matches!(p.who, Who::Professional { .. })))
        .or_else(|| profiles.first())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merchant_token_has_no_fhir_scope_and_no_organisation() {
        let c = Client {
            id: "shop".into(),
            name: "Shop".into(),
            kind: "merchant".into(),
            organization: Some("some-org".into()),
            redirect_uris: Vec::new(),
            jwks: None,
            secret_sha256: None,
        };
        let all = Scope::parse("system/*.cruds").into_iter().collect::<Vec<_>>();
        let a = c.system_actor(all).expect("a backend client");
        assert_eq!(a.who, Who::Client { client_id: "shop".into(), organization: None, platform: false });
        assert_eq!(a.scopes.as_deref(), Some(&[][..]));
        assert!(!a.scope_permits("Patient", crate::gate::Op::Read));
        let producer = Client { kind: "producer".into(), ..c };
        let p = producer.system_actor(Scope::parse("system/*.cruds").into_iter().collect()).expect("a backend client");
        assert!(p.scope_permits("Patient", crate::gate::Op::Read));
    }
}
