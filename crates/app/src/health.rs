//! Readiness: the store answers, and once a write has found the storage full, the service
//! reports not ready until a small probe write fits again (a full disk keeps reads working,
//! so a ping alone would say all is well while every write fails).

use fascicolo_store::{Store, StoreError};
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    /// When a write last found the storage full (ms since the epoch); 0: not since the last probe.
    full_at: AtomicI64,
}

/// Why the service is not ready, for the readiness answer (no internals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The database does not answer.
    Database,
    /// The storage is full: writes fail.
    StorageFull,
}

impl NotReady {
    pub fn message(&self) -> &'static str {
        match self {
            NotReady::Database => "database unavailable",
            NotReady::StorageFull => "storage full: writes are refused until space is freed",
        }
    }
}

impl Health {
    /// A write failed because the storage is full.
    pub fn storage_full(&self) {
        self.full_at.store(fascicolo_fhir::datetime::now_ms().max(1), Ordering::Relaxed);
    }

    /// Ready to serve?
    pub async fn check(&self, store: &dyn Store) -> Result<(), NotReady> {
        store.ping().await.map_err(|_| NotReady::Database)?;
        if self.full_at.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        // a write as large as the largest a citizen may make: when it fits, writes work again
        match store.probe_write(crate::limits::CITIZEN_RESOURCE_BYTES).await {
            Ok(()) => {
                self.full_at.store(0, Ordering::Relaxed);
                tracing::info!("storage has room again: ready");
                Ok(())
            }
            Err(StoreError::Full(_)) => Err(NotReady::StorageFull),
            Err(_) => Err(NotReady::Database),
        }
    }
}
