//! The generic backend over a key ring file.
//!
//! Every backend whose keys are listed in the ring (software, tpm-sealed,
//! tpm-resident) is a [`RingBackend`] over its [`RingKeys`]: the backend
//! says how a ring entry becomes a usable key and how to wrap and unwrap
//! with one; this file does the rest, once for all of them: loading the
//! ring, checking it belongs to the backend, noticing a replaced ring file
//! and reloading it (reusing the keys already loaded), looking keys up by
//! key_id (unknown, retired, or present but unusable), the active key, and
//! the health self-test.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use zeroize::Zeroizing;

use super::{BackendError, Fault, KeyBackend, Refresh, RingInfo, Wrapped};
use crate::keyring::{self, KeyEntry, KeyState, Keyring, KeyringError, Lineage};

/// What a backend does with the keys of its ring.
pub(crate) trait RingKeys: Send + Sync + 'static {
    /// A key ready for use.
    type Key: Send + Sync + 'static;

    /// The backend name; a ring of another backend is refused.
    const NAME: &'static str;
    /// Whether keys are protected by hardware.
    const HARDWARE_BACKED: bool;

    /// The key's key_id.
    fn key_id(key: &Self::Key) -> &Arc<str>;

    /// Largest plaintext one Encrypt with `key` takes.
    fn max_plaintext(key: &Self::Key) -> usize;

    /// Makes the keys of `entries` (never retired ones) usable: decodes,
    /// unseals or checks them. Blocking (it may talk to a device); called
    /// at start and after the ring file changed, for the keys not loaded
    /// yet. An `Err` refuses the whole ring (it is corrupt or not this
    /// backend's); a per-key `Err` leaves that key unusable, with the
    /// reason, while the others serve.
    fn load(&self, ring: &Keyring, entries: &[&KeyEntry]) -> Result<Loaded<Self::Key>, LoadError>;

    /// Wraps `plaintext` with `key`.
    fn wrap(
        &self,
        key: &Arc<Self::Key>,
        plaintext: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>, BackendError>> + Send;

    /// Unwraps `ciphertext` with `key`.
    fn unwrap(
        &self,
        key: &Arc<Self::Key>,
        ciphertext: &[u8],
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>, BackendError>> + Send;

    /// A cheap check before every call (is the device marked down?).
    fn ready(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// A live check of the device, run by the self-test before its round
    /// trip.
    fn probe(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
        async { Ok(()) }
    }

    /// See [`KeyBackend::liveness`].
    fn liveness(&self) -> Result<(), String> {
        Ok(())
    }

    /// See [`KeyBackend::revive`].
    fn revive(&self) -> usize {
        0
    }
}

/// What [`RingKeys::load`] made of each entry, in order: the key, or why
/// it cannot be used.
pub(crate) type Loaded<K> = Vec<Result<K, String>>;

/// Why [`RingKeys::load`] refused a whole ring.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The ring is corrupt or edited (a key_id that does not match its
    /// material, an unknown algorithm): the reason, reported with the ring's path.
    Invalid(String),
    /// The backend failed (the device is gone).
    Backend(BackendError),
}

impl From<BackendError> for LoadError {
    fn from(e: BackendError) -> Self {
        LoadError::Backend(e)
    }
}

impl From<super::tpm::TpmError> for LoadError {
    fn from(e: super::tpm::TpmError) -> Self {
        LoadError::Backend(e.into())
    }
}

/// What a key_id names in a loaded ring.
enum Slot<K> {
    /// A usable key.
    Ready(Arc<K>),
    /// A retired key: its material is destroyed.
    Retired,
    /// A key the ring lists that cannot be used here, and why (PCRs
    /// changed, a blob from another TPM).
    Broken(String),
}

/// The keys of one version of the ring, and its public facts.
struct KeySet<K> {
    active: Arc<K>,
    slots: HashMap<String, Slot<K>>,
    /// What a later version of the ring must keep.
    lineage: Lineage,
    /// The ring's fingerprint and how many keys are staged.
    info: RingInfo,
}

impl<K> KeySet<K> {
    fn get(&self, key_id: &str) -> Result<&Arc<K>, BackendError> {
        match self.slots.get(key_id) {
            Some(Slot::Ready(k)) => Ok(k),
            Some(Slot::Retired) => Err(BackendError::Retired(key_id.to_string())),
            Some(Slot::Broken(reason)) => Err(BackendError::Unavailable(reason.clone())),
            None => Err(BackendError::UnknownKeyId(kms_proto::contract::printable(
                key_id, 128,
            ))),
        }
    }
}

fn invalid(dir: &Path, reason: String) -> BackendError {
    BackendError::Keyring(KeyringError::Invalid {
        path: keyring::ring_path(dir),
        reason,
    })
}

/// Loads `ring` into a key set, reusing the usable keys of `prev`.
fn assemble<R: RingKeys>(
    keys: &R,
    ring: &Keyring,
    dir: &Path,
    prev: Option<&KeySet<R::Key>>,
) -> Result<KeySet<R::Key>, BackendError> {
    if ring.backend != R::NAME {
        return Err(invalid(
            dir,
            format!(
                "it belongs to backend {:?}, not {:?}",
                ring.backend,
                R::NAME
            ),
        ));
    }
    let reusable = |e: &KeyEntry| match prev.and_then(|p| p.slots.get(&e.key_id)) {
        Some(Slot::Ready(k)) => Some(k.clone()),
        _ => None,
    };
    let todo: Vec<&KeyEntry> = ring
        .keys
        .iter()
        .filter(|e| e.state != KeyState::Retired && reusable(e).is_none())
        .collect();
    let loaded = if todo.is_empty() {
        Vec::new()
    } else {
        keys.load(ring, &todo).map_err(|e| match e {
            LoadError::Invalid(reason) => invalid(dir, reason),
            LoadError::Backend(e) => e,
        })?
    };
    if loaded.len() != todo.len() {
        return Err(BackendError::Internal(format!(
            "backend {} loaded {} of {} keys",
            R::NAME,
            loaded.len(),
            todo.len()
        )));
    }
    let mut fresh: HashMap<&str, Result<R::Key, String>> =
        todo.iter().map(|e| e.key_id.as_str()).zip(loaded).collect();
    let mut slots = HashMap::with_capacity(ring.keys.len());
    let mut active = None;
    for e in &ring.keys {
        let slot = if e.state == KeyState::Retired {
            Slot::Retired
        } else if let Some(k) = reusable(e) {
            Slot::Ready(k)
        } else {
            match fresh.remove(e.key_id.as_str()) {
                Some(Ok(k)) => {
                    if R::key_id(&k).as_ref() != e.key_id {
                        return Err(BackendError::Internal(format!(
                            "backend {} loaded key {} as {}",
                            R::NAME,
                            e.key_id,
                            R::key_id(&k)
                        )));
                    }
                    Slot::Ready(Arc::new(k))
                }
                Some(Err(reason)) => {
                    tracing::error!(kms.key_id = %e.key_id, reason = %reason, "key cannot be used; Decrypt with it will fail");
                    Slot::Broken(reason)
                }
                None => Slot::Broken(format!("key {} was not loaded", e.key_id)),
            }
        };
        if e.state == KeyState::Active {
            match &slot {
                Slot::Ready(k) => active = Some(k.clone()),
                Slot::Broken(reason) => {
                    return Err(BackendError::Unavailable(format!(
                        "the active key cannot be used: {reason}"
                    )));
                }
                Slot::Retired => {}
            }
        }
        slots.insert(e.key_id.clone(), slot);
    }
    let active = active.ok_or_else(|| {
        let staged = ring.staged().count();
        if staged > 0 {
            invalid(
                dir,
                format!(
                    "no active key ({staged} staged): activate the cluster's current key with `kms-plugin key activate KEY_ID`"
                ),
            )
        } else {
            invalid(dir, "no active key".into())
        }
    })?;
    Ok(KeySet {
        active,
        slots,
        lineage: Lineage::of(ring),
        info: RingInfo {
            fingerprint: ring.fingerprint().to_string(),
            staged: ring.staged().count(),
        },
    })
}

/// A backend over the ring in one directory.
pub(crate) struct RingBackend<R: RingKeys> {
    dir: PathBuf,
    keys: Arc<R>,
    state: ArcSwap<KeySet<R::Key>>,
    watcher: keyring::RingWatcher,
}

impl<R: RingKeys> RingBackend<R> {
    /// Loads the ring in `dir` with `keys` (blocking: start-up).
    pub(crate) fn open(dir: &Path, keys: R) -> Result<Self, BackendError> {
        let watcher = keyring::RingWatcher::new(dir);
        let ring = Keyring::load(dir)?;
        let state = assemble(&keys, &ring, dir, None)?;
        Ok(RingBackend {
            dir: dir.to_path_buf(),
            keys: Arc::new(keys),
            state: ArcSwap::from_pointee(state),
            watcher,
        })
    }

    fn unchanged(&self) -> Refresh {
        Refresh {
            active: R::key_id(&self.state.load().active).clone(),
            changed: false,
        }
    }

    /// The active key.
    pub(crate) fn active_key(&self) -> Arc<R::Key> {
        self.state.load().active.clone()
    }
}

#[async_trait::async_trait]
impl<R: RingKeys> KeyBackend for RingBackend<R> {
    fn kind(&self) -> &'static str {
        R::NAME
    }

    fn is_hardware_backed(&self) -> bool {
        R::HARDWARE_BACKED
    }

    fn active_key_id(&self) -> Result<Arc<str>, BackendError> {
        Ok(R::key_id(&self.state.load().active).clone())
    }

    fn max_plaintext(&self) -> usize {
        R::max_plaintext(&self.state.load().active)
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        self.keys.ready()?;
        let key = self.state.load().active.clone();
        let max = R::max_plaintext(&key);
        if plaintext.len() > max {
            return Err(BackendError::TooLarge {
                len: plaintext.len(),
                max,
            });
        }
        let ciphertext = self.keys.wrap(&key, plaintext).await?;
        Ok(Wrapped {
            key_id: R::key_id(&key).clone(),
            ciphertext,
        })
    }

    async fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        self.keys.ready()?;
        let key = self.state.load().get(key_id)?.clone();
        self.keys.unwrap(&key, ciphertext).await
    }

    fn ring_info(&self) -> Option<RingInfo> {
        Some(self.state.load().info.clone())
    }

    fn liveness(&self) -> Result<(), String> {
        self.keys.liveness()
    }

    fn revive(&self) -> usize {
        self.keys.revive()
    }

    /// Reloads a replaced ring file. A file that does not follow from the
    /// loaded ring (another ring id, a lower version counter, a live key
    /// missing, a retired key back) is refused: the loaded keys keep
    /// serving, and the same file is not tried again until it changes. A
    /// device outage while loading is retried at the next poll.
    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let Some(stat) = self.watcher.changed() else {
            return Ok(self.unchanged());
        };
        let prev = self.state.load_full();
        let (keys, dir) = (self.keys.clone(), self.dir.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            let ring = Keyring::load(&dir)?;
            prev.lineage
                .check(&ring)
                .map_err(|reason| KeyringError::Regressed {
                    path: keyring::ring_path(&dir),
                    reason,
                })?;
            assemble(&*keys, &ring, &dir, Some(&prev))
        })
        .await
        .map_err(|e| BackendError::Internal(format!("key ring reload task failed: {e}")))?;
        let state = match loaded {
            Ok(s) => s,
            Err(e) => {
                if e.fault() != Fault::Unavailable {
                    self.watcher.loaded(stat);
                }
                return Err(e);
            }
        };
        let active = R::key_id(&state.active).clone();
        self.state.store(Arc::new(state));
        self.watcher.loaded(stat);
        Ok(Refresh {
            changed: true,
            active,
        })
    }

    async fn self_test(&self) -> Result<(), BackendError> {
        // A live device check first: healthz must say when the device is gone.
        self.keys.probe().await?;
        super::round_trip(self).await
    }
}
