//! The outbox worker: leases due messages, asks the app what each means, delivers by e-mail
//! (SMTP) and SMS (an HTTP gateway), or into a local folder in demo mode; retries with
//! exponential backoff. Several servers may run it at once (leases are disjoint).

use crate::config::Config;
use anyhow::Context;
use fascicolo_app::notify::{Channel, Delivery};
use fascicolo_app::FhirService;
use fascicolo_fhir::datetime;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Where deliveries go.
pub struct Channels {
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    sms: Option<(reqwest::Client, String)>,
    /// Deliveries without a configured channel land here (the demo's inspectable outbox).
    folder: PathBuf,
}

impl Channels {
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let smtp = match &cfg.notify.smtp_url {
            Some(url) => {
                let t = AsyncSmtpTransport::<Tokio1Executor>::from_url(url).context("notify.smtp_url")?.build();
                let from = cfg.notify.smtp_from.as_deref().unwrap_or("Fascicolo <noreply@fascicolo.invalid>");
                Some((t, from.parse().context("notify.smtp_from is not an address")?))
            }
            None => None,
        };
        let sms = cfg.notify.sms_gateway_url.clone().map(|u| (reqwest::Client::new(), u));
        let folder = cfg.notify.outbox_dir.clone().unwrap_or_else(|| cfg.data_dir.join("outbox"));
        Ok(Channels { smtp, sms, folder })
    }

    async fn deliver(&self, id: &str, d: &Delivery) -> anyhow::Result<()> {
        match (d.channel, &self.smtp, &self.sms) {
            (Channel::Email, Some((t, from)), _) => {
                let msg = Message::builder()
                    .from(from.clone())
                    .to(d.to.parse().context("recipient address")?)
                    .subject(d.subject.clone())
                    .message_id(Some(format!("<{id}@fascicolo>")))
                    .body(d.text.clone())
                    .context("composing the e-mail")?;
                t.send(msg).await.context("smtp delivery")?;
                Ok(())
            }
            (Channel::Sms, _, Some((client, url))) => {
                client
                    .post(url)
                    .json(&json!({"to": d.to, "text": d.text, "id": id}))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .context("sms gateway")?;
                Ok(())
            }
            _ => {
                tokio::fs::create_dir_all(&self.folder).await.context("outbox folder")?;
                // one file per message and channel: re-delivery overwrites (idempotent)
                let path = self.folder.join(format!("{id}-{}.json", d.channel.code()));
                let body = json!({"channel": d.channel.code(), "to": d.to, "subject": d.subject, "text": d.text});
                tokio::fs::write(&path, serde_json::to_vec_pretty(&body)?).await.context("outbox folder")?;
                Ok(())
            }
        }
    }
}

/// Backoff before attempt `n + 1`: 30 s doubling, at most an hour.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 8) - 1;
    (30_000i64 << exp).min(3_600_000)
}

/// Handle the due messages once; returns how many were handled (delivered or nothing to do).
pub async fn run_once(fhir: &FhirService, channels: &Channels, site: &str) -> anyhow::Result<usize> {
    let claimed = fhir.claim_outbox(60_000, 50).await?;
    let mut handled = 0;
    for c in claimed {
        let m = &c.message;
        let result = async {
            let deliveries = fhir.deliveries(m, site).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            for d in &deliveries {
                channels.deliver(&m.id.to_string(), d).await?;
            }
            anyhow::Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                fhir.outbox_done(m.patient_key, m.id).await?;
                handled += 1;
            }
            Err(e) => {
                // the error goes to operators with the message id only (no addresses)
                tracing::warn!(message = %m.id, kind = %m.kind, attempts = c.attempts, "delivery failed, will retry");
                // only the outermost context (never an address or a provider's echo of one)
                fhir.outbox_retry(m.patient_key, m.id, datetime::now_ms() + backoff_ms(c.attempts), &e.to_string()).await?;
            }
        }
    }
    Ok(handled)
}

/// Run the worker until the process ends.
pub fn spawn(fhir: FhirService, channels: Channels, site: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match run_once(&fhir, &channels, &site).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox worker"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}
