//! Striped in-process locks for the small ledgers (doctors' lists, celiac budgets). Writes to
//! one ledger entry from one server go one at a time, so that requests of the same server do
//! not keep losing version races to each other under load; the version guard of each commit
//! is what keeps several servers right. Process-wide and bounded: 256 stripes.

use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 256;

fn index(key: &str) -> usize {
    // FNV-1a: stable and cheap
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (h % STRIPES as u64) as usize
}

fn stripes() -> &'static [Mutex<()>] {
    static ALL: std::sync::OnceLock<Vec<Mutex<()>>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| (0..STRIPES).map(|_| Mutex::new(())).collect())
}

/// The lock of one key.
pub(crate) async fn lock(key: &str) -> MutexGuard<'static, ()> {
    stripes()[index(key)].lock().await
}

/// The locks of several keys, taken in stripe order (no two holders wait on each other).
pub(crate) async fn lock_all(keys: &[&str]) -> Vec<MutexGuard<'static, ()>> {
    let mut idx: Vec<usize> = keys.iter().map(|k| index(k)).collect();
    idx.sort_unstable();
    idx.dedup();
    let mut out = Vec::with_capacity(idx.len());
    for i in idx {
        out.push(stripes()[i].lock().await);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_keys_on_one_stripe_take_it_once() {
        let k = "lista-doc-1";
        let guards = lock_all(&[k, k]).await;
        assert_eq!(guards.len(), 1);
        drop(guards);
        let _g = lock(k).await;
    }
}
