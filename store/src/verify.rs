//! `verify`: decrypt and decode every Secret; list what fails.

use crate::placement;
use crate::rewrap::Progress;
use crate::storage;
use crate::store::{SecretStore, StoreError};

/// What a verify found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Values checked.
    pub checked: u64,
    /// Values that decrypted and decoded.
    pub ok: u64,
    /// Of those, values a rewrap would rewrite.
    pub stale: u64,
    /// Values that failed: (etcd key, reason).
    pub failed: Vec<(String, String)>,
}

/// Decrypts every value; a value must open, decode as a Secret, and name
/// the namespace and name of the key it is stored under (see
/// [`placement`]: providers without AAD accept a value copied from another
/// key).
pub fn verify(store: &SecretStore, progress: &dyn Progress) -> Result<VerifyReport, StoreError> {
    let mut r = VerifyReport::default();
    if let Ok(total) = count(store) {
        progress.total(total);
    }
    storage::for_each(&**store.engine(), store.secrets_prefix(), 500, |v| {
        r.checked += 1;
        match store.decode(&v) {
            Ok((s, stale)) => match placement::check(store, &v.key, &s) {
                Err(misplaced) => r.failed.push((v.key.clone(), misplaced.to_string())),
                Ok(()) => {
                    r.ok += 1;
                    if stale {
                        r.stale += 1;
                    }
                }
            },
            Err(e) => r.failed.push((v.key.clone(), e.to_string())),
        }
        progress.tick();
        Ok(())
    })?;
    Ok(r)
}

fn count(store: &SecretStore) -> Result<u64, StoreError> {
    let mut n = 0;
    storage::for_each(&**store.engine(), store.secrets_prefix(), 1000, |_| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}
