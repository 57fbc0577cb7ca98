//! `rewrap`: re-encrypt every stale value with the first provider and its
//! current key, as the apiserver's storage migration does.
//!
//! Safe beside concurrent writers: each rewrite is conditional on the mod
//! revision it read; on a conflict the value is read again and rewrapped
//! only if it is still stale (a writer that got there first wrote it with
//! the current provider). Resumable after a kill: it keeps no state, values
//! already rewrapped are simply no longer stale.
//!
//! With a target storage format (`--storage-media-type`), a value whose
//! plaintext is in the other format is stale too, and is rewritten as the
//! apiserver would write that object in the target format (decoded, then
//! encoded byte for byte as the upstream codec does); finding those means
//! decrypting every value. Without one, plaintexts are sealed again exactly
//! as they are.
//!
//! Only a value that is the object its key names is sealed again: one that
//! opens but decodes to another Secret (copied from another key under a
//! provider without AAD, see [`crate::placement`]) or to no Secret at all
//! is left as it is and reported, so a rewrap never makes a misplaced copy
//! authentic under the key it was copied to.

use crate::placement;
use crate::secret::{Secret, StorageFormat};
use crate::storage::{self, Precondition, StorageError, Versioned};
use crate::store::{SecretStore, StoreError};

/// What a rewrap did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RewrapReport {
    /// Values looked at.
    pub scanned: u64,
    /// Values that were stale when first seen.
    pub stale: u64,
    /// Values rewritten.
    pub rewrapped: u64,
    /// Stale values found current on a retry (a concurrent writer rewrote them).
    pub rewritten_by_others: u64,
    /// Values deleted while the rewrap ran.
    pub vanished: u64,
    /// Conflicts retried.
    pub retries: u64,
    /// Values that could not be rewrapped: (etcd key, error).
    pub failed: Vec<(String, String)>,
    /// Values left as they are because they decode to another object than
    /// the one their key names, or to no Secret: (etcd key, why).
    pub refused: Vec<(String, String)>,
    /// Of the values rewritten, those whose storage format was converted.
    pub converted: u64,
}

/// How a rewrap runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RewrapOptions {
    /// Only count what would be rewritten.
    pub dry_run: bool,
    /// Convert every value to this storage format (values in the other
    /// format are stale); `None` keeps each plaintext as it is.
    pub convert_to: Option<StorageFormat>,
}

/// Whether a rewrap would rewrite `v`: its envelope is stale, or (with a
/// target format) its plaintext is in the other format. A value that does
/// not open counts as stale, so the rewrite reports why.
fn is_stale(store: &SecretStore, v: &Versioned, convert_to: Option<StorageFormat>) -> bool {
    if store.chain().is_stale(&v.value, &v.key).unwrap_or(true) {
        return true;
    }
    let Some(target) = convert_to else {
        return false;
    };
    match store.chain().open(&v.value, &v.key) {
        Ok(opened) => StorageFormat::detect(&opened.plaintext) != Ok(target),
        Err(_) => true,
    }
}

const MAX_ATTEMPTS: usize = 10;

/// Progress callbacks: total once known, then one tick per value.
pub trait Progress {
    /// The number of values to process.
    fn total(&self, n: u64);
    /// One more value processed.
    fn tick(&self);
}

impl Progress for () {
    fn total(&self, _: u64) {}
    fn tick(&self) {}
}

/// Rewraps every stale Secret. With `dry_run`, only counts, from the
/// envelopes alone (nothing is decrypted, so misplaced values are found by
/// the real run, or by `verify`).
pub fn rewrap(
    store: &SecretStore,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<RewrapReport, StoreError> {
    let options = RewrapOptions {
        dry_run,
        convert_to: None,
    };
    rewrap_with(store, options, progress)
}

/// [`rewrap`] with a target storage format.
pub fn rewrap_with(
    store: &SecretStore,
    options: RewrapOptions,
    progress: &dyn Progress,
) -> Result<RewrapReport, StoreError> {
    let mut report = RewrapReport::default();
    // Pass 1: count stale values (from the envelopes alone unless a
    // format is to be converted).
    let mut stale_total = 0u64;
    storage::for_each(&**store.engine(), store.secrets_prefix(), 1000, |v| {
        report.scanned += 1;
        if is_stale(store, &v, options.convert_to) {
            stale_total += 1;
        }
        Ok(())
    })?;
    report.stale = stale_total;
    if options.dry_run || stale_total == 0 {
        return Ok(report);
    }
    progress.total(stale_total);
    // Pass 2: rewrite them.
    storage::for_each(&**store.engine(), store.secrets_prefix(), 500, |v| {
        if !is_stale(store, &v, options.convert_to) {
            return Ok(());
        }
        rewrap_one(store, v, options.convert_to, &mut report);
        progress.tick();
        Ok(())
    })?;
    Ok(report)
}

fn rewrap_one(
    store: &SecretStore,
    mut v: Versioned,
    convert_to: Option<StorageFormat>,
    report: &mut RewrapReport,
) {
    for _ in 0..MAX_ATTEMPTS {
        let opened = match store.chain().open(&v.value, &v.key) {
            Ok(o) => o,
            Err(e) => {
                report.failed.push((v.key.clone(), e.to_string()));
                return;
            }
        };
        let placed = Secret::from_storage_bytes(&opened.plaintext)
            .map_err(|e| format!("decrypted but is not a Secret: {e}"))
            .and_then(|s| {
                placement::check(store, &v.key, &s)
                    .map(|()| s)
                    .map_err(|m| m.to_string())
            });
        let secret = match placed {
            Ok(s) => s,
            Err(why) => {
                report.refused.push((v.key.clone(), why));
                return;
            }
        };
        let format = StorageFormat::detect(&opened.plaintext).ok();
        let converted = convert_to.filter(|f| Some(*f) != format);
        let plaintext = match converted {
            Some(f) => secret.to_storage_bytes(f),
            None => opened.plaintext,
        };
        let sealed = match store.chain().seal(&plaintext, &v.key) {
            Ok(s) => s,
            Err(e) => {
                report.failed.push((v.key.clone(), e.to_string()));
                return;
            }
        };
        match store
            .engine()
            .put(&v.key, &sealed, Precondition::ModRevision(v.mod_revision))
        {
            Ok(_) => {
                report.rewrapped += 1;
                report.converted += u64::from(converted.is_some());
                return;
            }
            Err(StorageError::Conflict { .. }) => {
                report.retries += 1;
                match store.engine().get(&v.key) {
                    Ok(None) => {
                        report.vanished += 1;
                        return;
                    }
                    Ok(Some(newer)) => {
                        if !is_stale(store, &newer, convert_to) {
                            report.rewritten_by_others += 1;
                            return;
                        }
                        v = newer;
                    }
                    Err(e) => {
                        report.failed.push((v.key.clone(), e.to_string()));
                        return;
                    }
                }
            }
            Err(e) => {
                report.failed.push((v.key.clone(), e.to_string()));
                return;
            }
        }
    }
    report.failed.push((
        v.key.clone(),
        format!("still conflicting after {MAX_ATTEMPTS} attempts"),
    ));
}
