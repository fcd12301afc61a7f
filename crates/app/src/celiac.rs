//! The celiac budget: each month a person with the coeliac-disease exemption (RI0060) may spend
//! the amount DM 10/8/2018 sets for their age and sex on gluten-free food, at pharmacies, shops
//! and supermarkets. Nothing is carried over.
//!
//! **The ledger.** A month's budget is an `Account` (`celiachia-{patient}-{YYYYMM}`) whose
//! extensions hold the amount credited and the amount held (authorised or captured, less what
//! was voided or refunded); it is written the first time the month is used, from the rules
//! of that month. Each purchase is a `ChargeItem` (`planned` when authorised, `billable` when
//! captured, `aborted` when voided) whose id is derived from the merchant and its idempotency
//! key. Every operation commits the Account and the ChargeItem in one transaction guarded by
//! the versions read (`ifMatch`), and is retried from a fresh read when another one committed
//! first: two merchants spending at the same instant cannot both take the last euro.
//!
//! **The merchant** is a backend client (SMART client credentials, kind `merchant`: no FHIR
//! scope, no organisation of its own in the token) that the ATS registered: an `Organization`
//! of type `urn:fascicolo:org-type|celiac-merchant`, with its channel, whose identifier
//! `urn:fascicolo:celiac-merchant-client` is the client id. **The citizen** shows a code (a random secret kept 5 minutes in the
//! sign-in store, shown as a QR code) instead of the card; the merchant sends it with each
//! authorisation.

use crate::auth::{hash_secret, random_secret};
use crate::doctor_choice::{entry, lost_race};
use crate::portal::Portal;
use crate::{Actor, AppError, AppResult, Who};
use fascicolo_domain::celiac::{self as rules, Channel};
use fascicolo_domain::rome;
use fascicolo_fhir::datetime;
use fascicolo_store::AuthRecord;
use serde::Serialize;
use serde_json::{json, Value};

/// How long a code shown at the counter is valid.
pub const CODE_SECONDS: i64 = 300;
const CODE_KIND: &str = "celiac-code";
const RETRIES: usize = 40;
/// `Organization.identifier` system that names the merchant's API client.
pub const MERCHANT_CLIENT: &str = "urn:fascicolo:celiac-merchant-client";
/// `Organization.type` of a registered celiac merchant; another coding is the channel.
pub const MERCHANT_TYPE: (&str, &str) = ("urn:fascicolo:org-type", "celiac-merchant");
const EXT_BUDGET: &str = "urn:fascicolo:celiac-budget";
const EXT_HELD: &str = "urn:fascicolo:celiac-held";
const EXT_CAPTURED: &str = "urn:fascicolo:celiac-captured";
const EXT_REFUNDED: &str = "urn:fascicolo:celiac-refunded";
const EXT_REQUEST: &str = "urn:fascicolo:celiac-request";
const EXT_CHANNEL: &str = "urn:fascicolo:celiac-channel";

/// A month's budget.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Budget {
    /// `YYYY-MM`.
    pub month: String,
    pub budget_cents: i64,
    /// Authorised or spent.
    pub held_cents: i64,
    pub remaining_cents: i64,
}

/// One purchase, as the merchant and the citizen see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Spend {
    pub id: String,
    /// `authorized`, `captured`, `voided`.
    pub status: String,
    pub amount_cents: i64,
    pub captured_cents: i64,
    pub refunded_cents: i64,
    pub channel: String,
    pub merchant: String,
    /// The merchant's name (the citizen's list shows it).
    #[serde(skip)]
    pub merchant_name: String,
    /// FHIR instant.
    pub at: String,
}

/// What every merchant operation answers: the purchase, and the remaining budget.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub spend: Spend,
    pub budget: Budget,
    /// The same request was answered before (an idempotent replay).
    pub replayed: bool,
}

/// The citizen's view.
#[derive(Debug, Clone)]
pub struct CeliacView {
    pub budget: Budget,
    pub spends: Vec<Spend>,
}

fn money(cents: i64) -> Value {
    json!({"value": (cents as f64) / 100.0, "currency": "EUR"})
}

fn cents_of(v: &Value) -> i64 {
    v["value"].as_f64().map(|x| (x * 100.0).round() as i64).unwrap_or(0)
}

fn ext<'a>(r: &'a Value, url: &str) -> &'a Value {
    r["extension"].as_array().and_then(|xs| xs.iter().find(|x| x["url"] == url)).unwrap_or(&Value::Null)
}

fn set_ext(r: &mut Value, url: &str, value: Value) {
    if !r["extension"].is_array() {
        r["extension"] = json!([]);
    }
    if let Some(xs) = r["extension"].as_array_mut() {
        xs.retain(|x| x["url"] != url);
        let mut x = value;
        x["url"] = json!(url);
        xs.push(x);
    }
}

fn budget_of(account: &Value) -> Budget {
    let budget = cents_of(&ext(account, EXT_BUDGET)["valueMoney"]);
    let held = cents_of(&ext(account, EXT_HELD)["valueMoney"]);
    Budget {
        month: account["servicePeriod"]["start"].as_str().unwrap_or_default().get(..7).unwrap_or_default().to_string(),
        budget_cents: budget,
        held_cents: held,
        remaining_cents: budget - held,
    }
}

fn spend_of(c: &Value) -> Spend {
    let status = match c["status"].as_str() {
        Some("billable") => "captured",
        Some("aborted") => "voided",
        _ => "authorized",
    };
    Spend {
        id: c["id"].as_str().unwrap_or_default().to_string(),
        status: status.into(),
        amount_cents: cents_of(&c["priceOverride"]),
        captured_cents: cents_of(&ext(c, EXT_CAPTURED)["valueMoney"]),
        refunded_cents: cents_of(&ext(c, EXT_REFUNDED)["valueMoney"]),
        channel: ext(c, EXT_CHANNEL)["valueCode"].as_str().unwrap_or_default().to_string(),
        merchant: c["performingOrganization"]["reference"]
            .as_str()
            .and_then(|r| r.strip_prefix("Organization/"))
            .unwrap_or_default()
            .into(),
        merchant_name: c["performingOrganization"]["display"].as_str().unwrap_or_default().to_string(),
        at: c["occurrenceDateTime"].as_str().unwrap_or_default().to_string(),
    }
}

/// The ChargeItem id of a merchant's idempotency key.
fn spend_id(client: &str, key: &str) -> String {
    format!("celiachia-{}", &hash_secret(&format!("{client}|{key}"))[..32])
}

/// How long a merchant's registration is trusted without reading it again (a shop the ATS
/// deactivates is refused within this time).
const MERCHANT_CACHE_MS: i64 = 30_000;

/// Merchants by client id, with the instant they were read (one per service, like its store).
pub type MerchantCache = parking_lot::Mutex<std::collections::HashMap<String, (i64, Merchant)>>;

/// A registered merchant: organisation id, name and channel.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub client: String,
    pub organization: String,
    pub name: String,
    pub channel: Channel,
}

impl Portal {
    /// The merchant a client stands for, or 403.
    pub async fn merchant(&self, actor: &Actor) -> AppResult<Merchant> {
        let refused = || AppError::Forbidden("only a registered celiac merchant may spend a celiac budget".into());
        let Who::Client { client_id, organization: None, platform: false } = &actor.who else {
            return Err(refused());
        };
        let now = datetime::now_ms();
        if let Some((at, m)) = self.fhir().merchant_cache().lock().get(client_id) {
            if now - at < MERCHANT_CACHE_MS {
                return Ok(m.clone());
            }
        }
        let m = self.merchant_in_registry(client_id).await?;
        self.fhir().merchant_cache().lock().insert(client_id.clone(), (now, m.clone()));
        Ok(m)
    }

    /// Every registered and active celiac merchant, by name (the demo till lists them).
    pub async fn registered_merchants(&self) -> AppResult<Vec<Merchant>> {
        let pairs = vec![("type".to_string(), format!("{}|{}", MERCHANT_TYPE.0, MERCHANT_TYPE.1))];
        let orgs =
            self.all_as(&Actor::system(), "Organization", pairs, |s| serde_json::from_str::<Value>(s).unwrap_or(Value::Null)).await?;
        let mut out = Vec::new();
        for o in orgs {
            let client =
                o["identifier"].as_array().into_iter().flatten().find(|i| i["system"] == MERCHANT_CLIENT).and_then(|i| i["value"].as_str());
            if let Some(client) = client {
                if let Ok(m) = self.merchant_in_registry(client).await {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The registered merchant of a client, read from the registry.
    async fn merchant_in_registry(&self, client_id: &str) -> AppResult<Merchant> {
        let refused = || AppError::Forbidden("only a registered celiac merchant may spend a celiac budget".into());
        let pairs = vec![("identifier".to_string(), format!("{MERCHANT_CLIENT}|{client_id}"))];
        let orgs =
            self.all_as(&Actor::system(), "Organization", pairs, |s| serde_json::from_str::<Value>(s).unwrap_or(Value::Null)).await?;
        let [o] = orgs.as_slice() else { return Err(refused()) };
        let codings: Vec<&Value> =
            o["type"].as_array().into_iter().flatten().flat_map(|t| t["coding"].as_array().into_iter().flatten()).collect();
        let registered = codings.iter().any(|c| c["system"] == MERCHANT_TYPE.0 && c["code"] == MERCHANT_TYPE.1);
        let channel = codings.iter().find_map(|c| c["code"].as_str().and_then(Channel::parse));
        match (registered && o["active"] != json!(false), channel) {
            (true, Some(channel)) => Ok(Merchant {
                client: client_id.to_string(),
                organization: o["id"].as_str().unwrap_or_default().to_string(),
                name: o["name"].as_str().unwrap_or_default().to_string(),
                channel,
            }),
            _ => Err(refused()),
        }
    }

    /// The month's budget of a person, or why they have none (no RI0060 exemption, under six
    /// months). Does not write.
    async fn entitlement(&self, patient_id: &str, day: time::Date) -> AppResult<i64> {
        let codes = self.exemptions_on(patient_id, day).await?;
        if !codes.iter().any(|c| c == rules::EXEMPTION) {
            return Err(AppError::Forbidden("this person has no coeliac-disease exemption (RI0060) in force".into()));
        }
        let p = self.fhir().read(&Actor::system(), "Patient", patient_id).await?.resource;
        let birth =
            p["birthDate"].as_str().and_then(rome::date_of).ok_or_else(|| AppError::Conflict("no birth date in the registry".into()))?;
        rules::monthly_cents(birth, p["gender"] == "female", day)
            .ok_or_else(|| AppError::Forbidden("the budget starts at six months of age".into()))
    }

    /// The month's Account and its version, or a new one (version `None`).
    async fn account(&self, patient_id: &str, day: time::Date) -> AppResult<(Value, Option<i64>)> {
        let id = format!("celiachia-{patient_id}-{}", rules::month_key(day).replace('-', ""));
        match self.fhir().read(&Actor::system(), "Account", &id).await {
            Ok(v) => Ok((v.resource, Some(v.version))),
            Err(AppError::NotFound(_) | AppError::Gone(_)) => {
                let budget = self.entitlement(patient_id, day).await?;
                let a = json!({"resourceType": "Account", "id": id, "status": "active",
                    "type": {"coding": [{"system": "urn:fascicolo:account", "code": "celiachia", "display": "Budget celiachia"}]},
                    "name": format!("Budget celiachia {}", rules::month_key(day)),
                    "subject": [{"reference": format!("Patient/{patient_id}")}],
                    "servicePeriod": {"start": rules::month_start(day).to_string(), "end": rules::month_end(day).to_string()},
                    "extension": [{"url": EXT_BUDGET, "valueMoney": money(budget)}, {"url": EXT_HELD, "valueMoney": money(0)}]});
                Ok((a, None))
            }
            Err(e) => Err(e),
        }
    }

    /// A code for the counter, for the record the citizen acts on (their own, or a minor
    /// child's): valid [`CODE_SECONDS`], any number of purchases in that time.
    pub async fn celiac_code(&self, actor: &Actor) -> AppResult<(String, i64)> {
        let patient = self.holder_or_parent(actor, "the celiac code is shown by the citizen, or a parent for a minor").await?;
        self.entitlement(&patient, rome::today()).await?;
        let code = format!("CEL1-{}", random_secret());
        let expires_at = datetime::now_ms() + CODE_SECONDS * 1000;
        let rec = AuthRecord { kind: CODE_KIND.into(), id: hash_secret(&code), subject: patient.clone(), data: patient, expires_at };
        self.fhir().store().auth_put(&rec, true).await?;
        Ok((code, expires_at))
    }

    /// The citizen's budget this month and the purchases of the month.
    pub async fn celiac_view(&self, actor: &Actor) -> AppResult<CeliacView> {
        let patient = Self::record_of(actor)?;
        let today = rome::today();
        // through the gate: the citizen's (or parent's, delegate's) own reads
        let pairs = vec![("_id".to_string(), format!("celiachia-{patient}-{}", rules::month_key(today).replace('-', "")))];
        let accounts = self.all_as(actor, "Account", pairs, |s| serde_json::from_str::<Value>(s).unwrap_or(Value::Null)).await?;
        let budget = match accounts.first() {
            Some(a) => budget_of(a),
            None => {
                let b = self.entitlement(&patient, today).await?;
                Budget { month: rules::month_key(today), budget_cents: b, held_cents: 0, remaining_cents: b }
            }
        };
        let pairs = vec![
            ("code".to_string(), "urn:fascicolo:celiac|gluten-free-food".to_string()),
            ("entered-date".to_string(), format!("ge{}", rules::month_start(today))),
        ];
        let mut spends: Vec<Spend> =
            self.all_as(actor, "ChargeItem", pairs, |s| spend_of(&serde_json::from_str::<Value>(s).unwrap_or(Value::Null))).await?;
        spends.sort_by(|a, b| b.at.cmp(&a.at));
        Ok(CeliacView { budget, spends })
    }

    /// Authorise a purchase of `amount_cents` for the person whose code the merchant scanned.
    /// The same idempotency key with the same request answers the first outcome again; with a
    /// different request, 422. Over the remaining budget, 409 with nothing held.
    pub async fn celiac_authorize(&self, actor: &Actor, code: &str, amount_cents: i64, key: &str) -> AppResult<Outcome> {
        let m = self.merchant(actor).await?;
        if key.trim().is_empty() || key.len() > 200 {
            return Err(AppError::BadRequest("an Idempotency-Key header (1 to 200 characters) is required".into()));
        }
        if amount_cents <= 0 || amount_cents > 100_000 {
            return Err(AppError::BadRequest("amount: a positive amount in euro cents, at most 100000".into()));
        }
        let id = spend_id(&m.client, key);
        let fingerprint = hash_secret(&format!("{}|{amount_cents}", hash_secret(code)));
        // a replay is found when the first outcome is needed (the happy path reads nothing more):
        // the code expired since, the budget is spent since, or the purchase exists already
        let now = datetime::now_ms();
        let Some(rec) = self.fhir().store().auth_get(CODE_KIND, &hash_secret(code), now).await? else {
            if let Some(out) = self.replay(&id, &fingerprint).await? {
                return Ok(out);
            }
            return Err(AppError::Forbidden("the code is not valid or has expired: ask the citizen to show a new one".into()));
        };
        let patient = rec.data;
        let today = rome::today();
        let _one_at_a_time = crate::stripes::lock(&format!("celiac|{patient}")).await;
        for attempt in 0..RETRIES {
            let (mut account, version) = self.account(&patient, today).await?;
            let b = budget_of(&account);
            if amount_cents > b.remaining_cents {
                if let Some(out) = self.replay(&id, &fingerprint).await? {
                    return Ok(out);
                }
                return Err(AppError::Conflict(format!(
                    "insufficient budget: {} cents remaining this month, {amount_cents} asked",
                    b.remaining_cents
                )));
            }
            set_ext(&mut account, EXT_HELD, json!({"valueMoney": money(b.held_cents + amount_cents)}));
            let charge = json!({"resourceType": "ChargeItem", "id": id, "status": "planned",
                "code": {"coding": [{"system": "urn:fascicolo:celiac", "code": "gluten-free-food", "display": "Alimenti senza glutine"}]},
                "subject": {"reference": format!("Patient/{patient}")},
                "occurrenceDateTime": datetime::format_instant(now),
                "enteredDate": datetime::format_instant(now),
                "performingOrganization": {"reference": format!("Organization/{}", m.organization), "display": m.name},
                "account": [{"reference": format!("Account/{}", account["id"].as_str().unwrap_or_default())}],
                "priceOverride": money(amount_cents),
                "extension": [{"url": EXT_REQUEST, "valueString": fingerprint}, {"url": EXT_CHANNEL, "valueCode": m.channel.code()}]});
            let aid = account["id"].as_str().unwrap_or_default().to_string();
            let bundle = json!({"resourceType": "Bundle", "type": "transaction",
                "entry": [entry("Account", &aid, account.clone(), version), entry("ChargeItem", &id, charge.clone(), None)]});
            match self.fhir().process_bundle_value(&Actor::system(), bundle, "").await {
                Ok(_) => {
                    tracing::info!(attempt, "celiac purchase authorised");
                    return Ok(Outcome { spend: spend_of(&charge), budget: budget_of(&account), replayed: false });
                }
                Err(e) if lost_race(&e) => {
                    // the same key committed meanwhile: answer it; otherwise the account moved
                    if let Some(out) = self.replay(&id, &fingerprint).await? {
                        return Ok(out);
                    }
                    pause(attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Conflict("too many purchases at once on this budget: try again".into()))
    }

    async fn replay(&self, id: &str, fingerprint: &str) -> AppResult<Option<Outcome>> {
        match self.fhir().read(&Actor::system(), "ChargeItem", id).await {
            Ok(v) => {
                if ext(&v.resource, EXT_REQUEST)["valueString"] != fingerprint {
                    return Err(AppError::Invalid(vec![fascicolo_fhir::OutcomeIssue::error(
                        "business-rule",
                        "this Idempotency-Key was used for a different request",
                    )]));
                }
                let account = self.account_of(&v.resource).await?;
                Ok(Some(Outcome { spend: spend_of(&v.resource), budget: budget_of(&account.0), replayed: true }))
            }
            Err(AppError::NotFound(_) | AppError::Gone(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn account_of(&self, charge: &Value) -> AppResult<(Value, i64)> {
        let id = charge["account"][0]["reference"].as_str().and_then(|r| r.strip_prefix("Account/")).unwrap_or_default().to_string();
        let v = self.fhir().read(&Actor::system(), "Account", &id).await?;
        Ok((v.resource, v.version))
    }

    /// The merchant's own purchase (another merchant's is 404).
    async fn own_spend(&self, m: &Merchant, spend: &str) -> AppResult<(Value, i64)> {
        let v = match self.fhir().read(&Actor::system(), "ChargeItem", spend).await {
            Ok(v) => v,
            Err(AppError::NotFound(_) | AppError::Gone(_)) => {
                return Err(AppError::NotFound(format!("no purchase {spend} of this merchant")))
            }
            Err(e) => return Err(e),
        };
        if v.resource["performingOrganization"]["reference"] != format!("Organization/{}", m.organization).as_str()
            || !spend.starts_with("celiachia-")
        {
            return Err(AppError::NotFound(format!("no purchase {spend} of this merchant")));
        }
        Ok((v.resource, v.version))
    }

    /// Capture an authorised purchase for `amount_cents` (at most what was authorised; the rest
    /// goes back to the budget). Capturing again with the same amount answers the same.
    pub async fn celiac_capture(&self, actor: &Actor, spend: &str, amount_cents: Option<i64>) -> AppResult<Outcome> {
        self.settle(actor, spend, Settle::Capture(amount_cents)).await
    }

    /// Void an authorised purchase: the amount goes back to the budget. Voiding again answers
    /// the same; a captured purchase is refunded instead (409).
    pub async fn celiac_void(&self, actor: &Actor, spend: &str) -> AppResult<Outcome> {
        self.settle(actor, spend, Settle::Void).await
    }

    /// Refund part or all of a captured purchase (the amount goes back to the month's budget
    /// it was spent from). The idempotency key makes a retried refund count once.
    pub async fn celiac_refund(&self, actor: &Actor, spend: &str, amount_cents: i64, key: &str) -> AppResult<Outcome> {
        if key.trim().is_empty() || key.len() > 200 {
            return Err(AppError::BadRequest("an Idempotency-Key header (1 to 200 characters) is required".into()));
        }
        self.settle(actor, spend, Settle::Refund(amount_cents, key.to_string())).await
    }

    async fn settle(&self, actor: &Actor, spend: &str, op: Settle) -> AppResult<Outcome> {
        let m = self.merchant(actor).await?;
        let (charge, _) = self.own_spend(&m, spend).await?;
        let patient = charge["subject"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/")).unwrap_or_default().to_string();
        let _one_at_a_time = crate::stripes::lock(&format!("celiac|{patient}")).await;
        for attempt in 0..RETRIES {
            let (mut charge, cv) = self.own_spend(&m, spend).await?;
            let (mut account, av) = self.account_of(&charge).await?;
            let s = spend_of(&charge);
            let b = budget_of(&account);
            let back = match (&op, s.status.as_str()) {
                (Settle::Capture(amount), "authorized") => {
                    let amount = amount.unwrap_or(s.amount_cents);
                    if amount <= 0 || amount > s.amount_cents {
                        return Err(AppError::BadRequest(format!("amount: between 1 and the {} cents authorised", s.amount_cents)));
                    }
                    charge["status"] = json!("billable");
                    set_ext(&mut charge, EXT_CAPTURED, json!({"valueMoney": money(amount)}));
                    s.amount_cents - amount
                }
                (Settle::Capture(amount), "captured") if amount.is_none_or(|a| a == s.captured_cents) => {
                    return Ok(Outcome { spend: s, budget: b, replayed: true })
                }
                (Settle::Void, "authorized") => {
                    charge["status"] = json!("aborted");
                    s.amount_cents
                }
                (Settle::Void, "voided") => return Ok(Outcome { spend: s, budget: b, replayed: true }),
                (Settle::Refund(amount, key), "captured") => {
                    let keys = ext(&charge, EXT_REFUNDED)["extension"].as_array().cloned().unwrap_or_default();
                    if keys.iter().any(|k| k["valueString"] == key.as_str()) {
                        return Ok(Outcome { spend: s, budget: b, replayed: true });
                    }
                    if *amount <= 0 || *amount > s.captured_cents - s.refunded_cents {
                        return Err(AppError::BadRequest(format!(
                            "amount: between 1 and the {} cents captured and not yet refunded",
                            s.captured_cents - s.refunded_cents
                        )));
                    }
                    let mut keys = keys;
                    keys.push(json!({"url": "key", "valueString": key}));
                    set_ext(&mut charge, EXT_REFUNDED, json!({"valueMoney": money(s.refunded_cents + amount), "extension": keys}));
                    *amount
                }
                (_, status) => return Err(AppError::Conflict(format!("the purchase is {status}: this operation does not apply"))),
            };
            set_ext(&mut account, EXT_HELD, json!({"valueMoney": money((b.held_cents - back).max(0))}));
            let aid = account["id"].as_str().unwrap_or_default().to_string();
            let bundle = json!({"resourceType": "Bundle", "type": "transaction",
                "entry": [entry("Account", &aid, account.clone(), Some(av)), entry("ChargeItem", spend, charge.clone(), Some(cv))]});
            match self.fhir().process_bundle_value(&Actor::system(), bundle, "").await {
                Ok(_) => return Ok(Outcome { spend: spend_of(&charge), budget: budget_of(&account), replayed: false }),
                Err(e) if lost_race(&e) => pause(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Conflict("too many operations at once on this budget: try again".into()))
    }
}

enum Settle {
    Capture(Option<i64>),
    Void,
    Refund(i64, String),
}

async fn pause(attempt: usize) {
    let ms = 1 + (datetime::now_ms() as u64 % 5) * (attempt as u64 + 1);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}
