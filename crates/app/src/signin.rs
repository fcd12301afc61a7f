//! What sign-in needs from storage, as app-layer operations: single-use authorization codes
//! (SMART on FHIR, the demo identity provider), client assertions that must not be replayed,
//! values created once and kept (the demo provider's signing key), and whose records a person
//! may act for. The web layer calls these and never the store.

use crate::auth::{hash_secret, Profile};
use crate::{AppResult, FhirService, Who};
use fascicolo_domain::CodiceFiscale;
use fascicolo_fhir::datetime;
use fascicolo_store::AuthRecord;
use serde_json::Value;

/// What a redeemed code was issued with.
#[derive(Debug, Clone)]
pub struct Redeemed {
    /// Whom it was issued to (a client id, a codice fiscale).
    pub subject: String,
    pub data: Value,
}

impl FhirService {
    /// Keeps a single-use code of `kind` (only its hash is stored) with what it grants, for `ttl_ms`.
    pub async fn issue_code(&self, kind: &str, code: &str, subject: &str, data: &Value, ttl_ms: i64) -> AppResult<()> {
        let rec = AuthRecord {
            kind: kind.into(),
            id: hash_secret(code),
            subject: subject.into(),
            data: data.to_string(),
            expires_at: datetime::now_ms() + ttl_ms,
        };
        self.store().auth_put(&rec, true).await?;
        Ok(())
    }

    /// Takes a code: what it was issued with, once; `None` when it is unknown, used or expired
    /// (two concurrent redeemers never both get it).
    pub async fn redeem_code(&self, kind: &str, code: &str) -> AppResult<Option<Redeemed>> {
        let rec = self.store().auth_take(kind, &hash_secret(code), datetime::now_ms()).await?;
        Ok(rec.map(|r| Redeemed { subject: r.subject, data: serde_json::from_str(&r.data).unwrap_or(Value::Null) }))
    }

    /// Records the id of a client's assertion until shortly after it expires; false when the
    /// same client used it before (a replay).
    pub async fn first_use_of_assertion(&self, kind: &str, client: &str, jti: &str, expires_at_ms: i64) -> AppResult<bool> {
        let rec = AuthRecord {
            kind: kind.into(),
            id: format!("{client}:{jti}"),
            subject: client.into(),
            data: String::new(),
            expires_at: expires_at_ms,
        };
        Ok(self.store().auth_put(&rec, false).await?)
    }

    /// A value made once and kept for good (a signing key shared by every server): the stored
    /// one, or `make`'s, stored now; when two servers race, both get the one that was stored.
    pub async fn kept_value(&self, kind: &str, id: &str, make: impl FnOnce() -> Result<String, String>) -> AppResult<String> {
        if let Some(r) = self.store().auth_get(kind, id, 0).await? {
            return Ok(r.data);
        }
        let made = make().map_err(crate::AppError::Internal)?;
        let rec = AuthRecord { kind: kind.into(), id: id.into(), subject: id.into(), data: made, expires_at: i64::MAX };
        self.store().auth_put(&rec, false).await?;
        let kept = self.store().auth_get(kind, id, 0).await?;
        kept.map(|r| r.data).ok_or_else(|| crate::AppError::Internal(format!("the kept value {kind}/{id} vanished")))
    }

    /// Removes what has expired (sessions, tokens, codes, seen marks, submission statuses,
    /// notification claims): expired records are never used, this only frees their room.
    pub async fn purge_expired(&self) -> AppResult<u64> {
        Ok(self.store().auth_purge(datetime::now_ms()).await?)
    }

    /// The profiles the registry gives a signed-in person (citizen, professional roles).
    pub async fn profiles_for(&self, cf: &CodiceFiscale) -> AppResult<Vec<Profile>> {
        crate::auth::profiles_for(self.store().as_ref(), cf).await
    }

    /// The records a person acts for besides their own, and how.
    pub async fn represented(&self, cf: &CodiceFiscale) -> AppResult<Vec<crate::auth::Represented>> {
        crate::auth::represented(self.store().as_ref(), cf).await
    }

    /// Whether a signed-in citizen may act on `target`'s record.
    pub async fn may_act_for(&self, who: &Who, target: &str) -> AppResult<bool> {
        crate::auth::may_act_for(self.store().as_ref(), who, target).await
    }
}
