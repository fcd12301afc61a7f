//! Configuration: defaults, then an optional TOML file (`fascicolo.toml` in the working
//! directory or `--config FILE`), then `FASCICOLO_*` environment variables, then flags.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Folder for the SQLite database and the local blob store.
    pub data_dir: PathBuf,
    /// `postgres://...` switches the store to PostgreSQL; unset means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Public base URL of the FHIR API (e.g. `https://fse.example/fhir/r4`), for links.
    pub base_url: Option<String>,
    /// Maximum PostgreSQL connections.
    pub pg_pool_size: usize,
    /// Public URL of the site (e.g. `https://fse.example`), for OIDC redirects and cookies;
    /// default `http://<listen>`.
    pub public_url: Option<String>,
    /// Demo mode: the built-in identity provider and demo clients, and a small synthetic
    /// registry on an empty store. On unless an OIDC issuer is configured.
    pub demo: Option<bool>,
    /// The identity provider (in production the regional SPID/CIE proxy).
    pub oidc: Option<OidcConfig>,
    /// Registered API clients (SMART apps, hospital systems).
    pub clients: Vec<fascicolo_app::auth::Client>,
    /// Privacy rules that are configuration.
    pub privacy: PrivacyConfig,
    /// Portal sessions.
    pub session: SessionConfig,
    /// Where notifications go.
    pub notify: NotifyConfig,
    /// Document publication (`/ingest/v1`).
    pub ingest: IngestConfig,
    /// Rate limits at the edge, and the reverse proxies whose `X-Forwarded-For` is believed.
    pub rate_limit: fascicolo_web::throttle::ThrottleConfig,
    /// Bulk Data `$export`.
    #[serde(default)]
    pub export: ExportConfig,
    /// Emergency rooms live.
    #[serde(default)]
    pub er: ErConfig,
}

/// Emergency rooms live.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ErConfig {
    /// Simulate every emergency room of the registry in real time, through the same event path
    /// the hospitals use. Unset: on in demo mode, off otherwise.
    pub simulate: Option<bool>,
    /// The region's secret key for the pseudonyms (`CUNI`) of the national flow (EMUR-PS).
    /// Unset: a fixed demo key in demo mode; otherwise the export is refused until it is set.
    pub cuni_key: Option<String>,
}

/// The key the demo uses when none is configured (public: never for real data).
pub const DEMO_CUNI_KEY: &str = "fascicolo-demo-cuni-key-not-for-real-data";

impl ErConfig {
    /// The pseudonym key in force for a configuration.
    pub fn cuni_key(&self, demo: bool) -> Option<&str> {
        self.cuni_key.as_deref().or(demo.then_some(DEMO_CUNI_KEY))
    }
}

/// Bulk Data `$export` (decision 0012).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportConfig {
    /// Where files go. Unset: next to the originals (the data folder's `exports/`, or
    /// `exports/` under the originals' S3 prefix); `s3://bucket/prefix` for a bucket of their own.
    pub blob_url: Option<String>,
    /// Rows read at a time.
    pub page_rows: usize,
    /// Progress (files, access log, cursor) is recorded after this much output, in KiB: what a
    /// crash makes the next runner write again, and about what a running export holds in memory.
    pub checkpoint_kib: usize,
    /// A runner's lease: how long after a server dies its exports wait to be taken over.
    pub lease_seconds: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        let t = fascicolo_app::bulk::Tuning::default();
        Self {
            blob_url: None,
            page_rows: t.page,
            checkpoint_kib: t.checkpoint_bytes / 1024,
            lease_seconds: u64::try_from(t.lease_ms / 1000).unwrap_or(30),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestConfig {
    /// Largest accepted upload, in MiB.
    pub max_upload_mib: usize,
    /// Where originals are kept: unset, the data folder's `blobs/`; `s3://bucket/prefix` for S3
    /// or an S3-compatible service (credentials and endpoint from the standard `AWS_*` variables).
    pub blob_url: Option<String>,
    /// Validator threads (each keeps the national schematrons compiled); 0: one per core.
    pub validators: usize,
    /// The program that reads uploaded PDFs in a process of its own (`PROGRAM pdf-worker`);
    /// unset: this binary.
    pub pdf_worker: Option<PathBuf>,
    /// Uploads held in memory at once (each takes up to about three times its size while it
    /// is read, decoded and parsed); 0: twice the validator threads, at least 4.
    pub concurrent_uploads: usize,
    /// Seconds an upload may wait for its turn before it is answered 503 with `Retry-After`.
    pub upload_wait_seconds: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { max_upload_mib: 20, blob_url: None, validators: 0, pdf_worker: None, concurrent_uploads: 0, upload_wait_seconds: 30 }
    }
}

/// An OpenID Connect provider, found by discovery at `{issuer}/.well-known/openid-configuration`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Extra claims carrying the codice fiscale, tried before the standard ones
    /// (`fiscal_number`, `https://attributes.eid.gov.it/fiscal_number`).
    #[serde(default)]
    pub fiscal_number_claim: Option<String>,
    /// Scopes asked for (default `openid profile`).
    #[serde(default)]
    pub scopes: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrivacyConfig {
    pub notice_version: u32,
    pub max_delegations: usize,
    pub break_glass_minutes: i64,
    /// Most people on a family doctor's list (massimale; national agreement: 1,500).
    #[serde(default = "default_gp_ceiling")]
    pub gp_ceiling: i64,
    /// Most children on a pediatrician's list (national agreement: 880).
    #[serde(default = "default_pediatrician_ceiling")]
    pub pediatrician_ceiling: i64,
}

fn default_gp_ceiling() -> i64 {
    fascicolo_app::doctor_choice::Ceilings::default().gp
}

fn default_pediatrician_ceiling() -> i64 {
    fascicolo_app::doctor_choice::Ceilings::default().pediatrician
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        let p = fascicolo_app::Policy::default();
        Self {
            notice_version: p.notice_version,
            max_delegations: p.max_delegations,
            break_glass_minutes: p.break_glass_minutes,
            gp_ceiling: p.ceilings.gp,
            pediatrician_ceiling: p.ceilings.pediatrician,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionConfig {
    pub idle_minutes: i64,
    pub absolute_hours: i64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { idle_minutes: 30, absolute_hours: 12 }
    }
}

/// Delivery of notifications. Unset SMTP/SMS means they are written to `outbox_dir`
/// (default `<data>/outbox`), one file per message, where the demo shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NotifyConfig {
    /// `smtp://user:pass@host:587` (STARTTLS) or `smtps://...`.
    pub smtp_url: Option<String>,
    pub smtp_from: Option<String>,
    /// HTTP endpoint of an SMS gateway: POST JSON `{"to": ..., "text": ...}`.
    pub sms_gateway_url: Option<String>,
    pub outbox_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            base_url: None,
            pg_pool_size: 16,
            public_url: None,
            demo: None,
            oidc: None,
            clients: Vec::new(),
            privacy: PrivacyConfig::default(),
            session: SessionConfig::default(),
            notify: NotifyConfig::default(),
            ingest: IngestConfig::default(),
            rate_limit: fascicolo_web::throttle::ThrottleConfig::default(),
            export: ExportConfig::default(),
            er: ErConfig::default(),
        }
    }
}

impl Config {
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) => fig = fig.merge(Toml::file_exact(f)),
            None => fig = fig.merge(Toml::file("fascicolo.toml")),
        }
        fig = fig.merge(Env::prefixed("FASCICOLO_").split("__"));
        Ok(fig.extract()?)
    }

    /// Demo mode unless switched off or a real identity provider is configured.
    pub fn demo_mode(&self) -> bool {
        self.demo.unwrap_or(self.oidc.is_none())
    }

    /// The site's public URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }

    pub fn policy(&self) -> fascicolo_app::Policy {
        fascicolo_app::Policy {
            notice_version: self.privacy.notice_version,
            max_delegations: self.privacy.max_delegations,
            break_glass_minutes: self.privacy.break_glass_minutes,
            ceilings: fascicolo_app::doctor_choice::Ceilings {
                gp: self.privacy.gp_ceiling,
                pediatrician: self.privacy.pediatrician_ceiling,
            },
        }
    }

    /// Registered clients, plus the demo ones in demo mode.
    pub fn all_clients(&self) -> Vec<fascicolo_app::auth::Client> {
        let mut v = self.clients.clone();
        if self.demo_mode() {
            v.extend(fascicolo_load::demo::clients());
        }
        v
    }
}
