//! `verify`: decrypt and decode every Secret; list what fails, count the
//! storage formats, and (on request) report every key.

use std::collections::BTreeMap;
use std::time::Instant;

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
    /// Values that decoded, by storage format (`protobuf`, `json`).
    pub formats: BTreeMap<&'static str, u64>,
    /// Every key, when asked for ([`VerifyOptions::per_key`]).
    pub keys: Vec<KeyReport>,
    /// Wall time of the pass, seconds.
    pub seconds: f64,
}

impl VerifyReport {
    /// Secrets checked per second.
    pub fn per_second(&self) -> f64 {
        self.checked as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }
}

/// One key's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyReport {
    /// The etcd key.
    pub key: String,
    /// Its mod revision (the resourceVersion).
    pub mod_revision: u64,
    /// The provider that opened it, e.g. `kms:name` (empty if none did).
    pub provider: String,
    /// Its storage format (`protobuf`, `json`), when it decoded.
    pub format: Option<&'static str>,
    /// Whether a rewrap would rewrite it.
    pub stale: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// How a verify runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct VerifyOptions {
    /// Keep a [`KeyReport`] for every key.
    pub per_key: bool,
}

/// Decrypts every value; a value must open, decode as a Secret, and name
/// the namespace and name of the key it is stored under (see
/// [`placement`]: providers without AAD accept a value copied from another
/// key).
pub fn verify(store: &SecretStore, progress: &dyn Progress) -> Result<VerifyReport, StoreError> {
    verify_with(store, VerifyOptions::default(), progress)
}

/// [`verify`] with options.
pub fn verify_with(
    store: &SecretStore,
    options: VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport, StoreError> {
    let mut r = VerifyReport::default();
    if let Ok(total) = count(store) {
        progress.total(total);
    }
    let start = Instant::now();
    storage::for_each(&**store.engine(), store.secrets_prefix(), 500, |v| {
        r.checked += 1;
        let (mut format, mut stale) = (None, false);
        let outcome = match store.open(&v) {
            Ok(d) => match placement::check(store, &v.key, &d.secret) {
                Err(misplaced) => Err(misplaced.to_string()),
                Ok(()) => {
                    let name = d.format.short_name();
                    *r.formats.entry(name).or_default() += 1;
                    (format, stale) = (Some(name), d.stale);
                    Ok(())
                }
            },
            Err(e) => Err(e.to_string()),
        };
        match &outcome {
            Ok(()) => {
                r.ok += 1;
                r.stale += u64::from(stale);
            }
            Err(e) => r.failed.push((v.key.clone(), e.clone())),
        }
        if options.per_key {
            let provider = store
                .chain()
                .inspect(&v.value, &v.key)
                .map(|i| match i.provider_name.as_str() {
                    "" => i.provider_kind.to_string(),
                    name => format!("{}:{name}", i.provider_kind),
                })
                .unwrap_or_default();
            r.keys.push(KeyReport {
                key: v.key.clone(),
                mod_revision: v.mod_revision,
                provider,
                format,
                stale,
                error: outcome.err(),
            });
        }
        progress.tick();
        Ok(())
    })?;
    r.seconds = start.elapsed().as_secs_f64();
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
