//! What the platform's own jobs ask of storage, as app-layer operations: the marks of jobs that
//! resume where they stopped (seeding), statistics after a bulk load, the outbox the worker
//! drains, and the token issuer. The jobs (`fascicolo-load`, the worker, the benchmarks) call
//! these and never the store.

use crate::{AppResult, FhirService};
use fascicolo_fhir::datetime;
use fascicolo_store::{Claimed, PatientKey};

impl FhirService {
    /// The progress a resumable job recorded, if any.
    pub async fn job_mark(&self, job: &str) -> AppResult<Option<String>> {
        Ok(self.store().job_mark(job).await?)
    }

    /// Records a job's progress, replacing what it recorded before.
    pub async fn set_job_mark(&self, job: &str, data: &str) -> AppResult<()> {
        Ok(self.store().set_job_mark(job, data, datetime::now_ms()).await?)
    }

    /// Records a job's mark unless it has one: true when this call recorded it.
    pub async fn first_job_mark(&self, job: &str, data: &str) -> AppResult<bool> {
        Ok(self.store().first_job_mark(job, data, datetime::now_ms()).await?)
    }

    /// Whether a resource exists (deleted or not): for loaders that never overwrite.
    pub async fn exists(&self, resource_type: &str, id: &str) -> AppResult<bool> {
        Ok(self.store().read(resource_type, id).await?.is_some())
    }

    /// Refreshes the query planner's statistics (after a bulk load).
    pub async fn analyze(&self) -> AppResult<()> {
        Ok(self.store().analyze().await?)
    }

    /// A clean stop of the store (see [`fascicolo_store::Store::close`]); it stays usable.
    pub async fn close(&self) -> AppResult<()> {
        Ok(self.store().close().await?)
    }

    /// Bytes the store takes on disk (see [`fascicolo_store::Store::disk_bytes`]).
    pub async fn disk_bytes(&self) -> AppResult<u64> {
        Ok(self.store().disk_bytes().await?)
    }

    /// Leases up to `limit` due outbox messages for `lease_ms`.
    pub async fn claim_outbox(&self, lease_ms: i64, limit: usize) -> AppResult<Vec<Claimed>> {
        Ok(self.store().outbox_claim(datetime::now_ms(), lease_ms, limit).await?)
    }

    /// The message was handled: never claimed again.
    pub async fn outbox_done(&self, patient_key: PatientKey, id: uuid::Uuid) -> AppResult<()> {
        Ok(self.store().outbox_done(patient_key, id, datetime::now_ms()).await?)
    }

    /// Handling failed: claimable again from `next_at`, with the error kept for operators.
    pub async fn outbox_retry(&self, patient_key: PatientKey, id: uuid::Uuid, next_at: i64, error: &str) -> AppResult<()> {
        Ok(self.store().outbox_retry(patient_key, id, next_at, error).await?)
    }

    /// The access-token issuer over this service's store.
    pub fn token_issuer(&self) -> crate::auth::Tokens {
        crate::auth::Tokens::new(std::sync::Arc::clone(self.store()))
    }
}
