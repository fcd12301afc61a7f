//! `fascicolo token`: an access token for a chosen actor, so anyone can try the API with curl.

use crate::config::Config;
use anyhow::{bail, Context};
use fascicolo_app::auth::{professional, profiles_for, Tokens};
use fascicolo_app::gate::Scope;
use fascicolo_app::{Actor, Who};
use fascicolo_domain::CodiceFiscale;
use fascicolo_store::Store;
use std::sync::Arc;

fn scopes(spec: Option<&str>, default: &str) -> anyhow::Result<Vec<Scope>> {
    let spec = spec.unwrap_or(default);
    let mut v = Vec::new();
    for s in spec.split_whitespace() {
        match Scope::parse(s) {
            Some(x) => v.push(x),
            None if matches!(s, "openid" | "fhirUser" | "launch/patient" | "offline_access") => {}
            None => bail!("'{s}' is not a SMART scope (e.g. patient/*.rs, user/Observation.rs, system/*.*)"),
        }
    }
    Ok(v)
}

/// Resolve `kind:id` to an actor and issue a token for it.
pub async fn issue_for(
    cfg: &Config,
    store: Arc<dyn Store>,
    who: &str,
    scope: Option<&str>,
    patient: Option<&str>,
    ttl: i64,
) -> anyhow::Result<String> {
    let (kind, id) = who.split_once(':').context("--as takes KIND:ID, e.g. citizen:RSSGLI85D52F205Q")?;
    let mut actor = match kind {
        "citizen" => {
            let cf = CodiceFiscale::parse(id).map_err(|e| anyhow::anyhow!("'{id}' is not a valid codice fiscale: {e}"))?;
            let profiles = profiles_for(store.as_ref(), &cf).await?;
            let citizen = profiles.into_iter().find(|p| matches!(p.who, Who::Citizen { .. })).context("no citizen profile")?;
            let mut a = Actor::new(citizen.who);
            a.scopes = Some(scopes(scope, "patient/*.cruds")?);
            if let Some(p) = patient {
                a.acting_for = Some(p.to_string());
            }
            if a.acting_for.is_none() {
                bail!("no Patient with codice fiscale {id} is registered (give --patient to act for someone else's record)");
            }
            a
        }
        "clinician" | "operator" => {
            let w = professional(store.as_ref(), id, kind == "clinician").await?;
            if kind == "operator" && matches!(&w, Who::Professional { role, .. } if role.clinical()) {
                bail!("Practitioner/{id} is a clinician, not an operator");
            }
            let mut a = Actor::new(w);
            a.scopes = Some(scopes(scope, "user/*.cruds")?);
            a
        }
        "system" => {
            let clients = cfg.all_clients();
            let Some(c) = clients.iter().find(|c| c.id == id) else {
                let known: Vec<&str> = clients.iter().filter(|c| c.kind != "app").map(|c| c.id.as_str()).collect();
                bail!("no registered backend client '{id}' (known: {})", known.join(", "));
            };
            if c.kind == "merchant" {
                // a celiac merchant's token: its own API only, no FHIR scope
                let actor = c.system_actor(Vec::new())?;
                return Ok(Tokens::new(store).issue(&actor, "fascicolo-cli", ttl).await?.access_token);
            }
            c.system_actor(scopes(scope, "system/*.cruds")?)?
        }
        other => bail!("unknown actor kind '{other}' (use citizen, clinician, operator or system)"),
    };
    if actor.scopes.as_ref().is_some_and(Vec::is_empty) {
        actor.scopes = None;
        bail!("no clinical scope given");
    }
    let issued = Tokens::new(store).issue(&actor, "fascicolo-cli", ttl).await?;
    Ok(issued.access_token)
}
