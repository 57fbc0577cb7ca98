//! `tpm-sealed`: KEKs sealed by the TPM, unsealed into locked memory.
//!
//! Each KEK version is 32 bytes from the TPM's RNG (mixed with the OS RNG,
//! so neither alone decides the key) sealed as a keyed-hash data object
//! under the storage primary; the ring keeps its public and private blobs.
//! `serve` unseals every enabled KEK once, through a salted session so the
//! KEK is encrypted on the bus, into a [`SecretKey`], and then wraps in
//! software with the format of [`crate::wire`]: Encrypt and Decrypt cost
//! what they cost with the software backend. The TPM is consulted again
//! when the ring changes (a rotation unseals the new key) and by the health
//! check (a GetRandom round trip).
//!
//! When the TPM goes away, healthz says so and Encrypt/Decrypt answer
//! UNAVAILABLE until it is back (the keys in memory could still serve, but
//! a node whose TPM vanished is in a state nobody checked: fail closed and
//! visible; kube-apiserver keeps writing with its current DEK for a while).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::structures::{
    Digest, KeyedHashScheme, PublicBuilder, PublicKeyedHashParameters, SensitiveData,
};
use zeroize::Zeroizing;

use super::conn::Conn;
use super::object::{ObjectBlob, short_hash};
use super::policy::{self, PcrPolicy};
use super::worker::Worker;
use super::{MintOptions, TpmError, is_policy_failure, tss};
use crate::backend::{BackendError, KeyBackend, KeyMinter, MintedKey, Refresh, Wrapped};
use crate::keyring::{self, KeyEntry, KeyState, Keyring, Material};
use crate::secret::{KEY_LEN, SecretKey};
use crate::wire::{self, Algorithm};

/// The backend name in rings and flags.
pub const NAME: &str = "tpm-sealed";

/// The key_id of a sealed KEK: ring, version, and a hash of the sealed
/// object's TPM name (which commits to a salted hash of the KEK, its
/// attributes and its policy, and is the same on every node it is shared to).
pub fn derive_key_id(ring_id: &str, version: u64, blob: &ObjectBlob) -> Result<String, TpmError> {
    Ok(format!(
        "tpms-{ring_id}-v{version}-{}",
        short_hash(&[&blob.name()?])
    ))
}

/// Creates a sealed data object holding `kek`.
fn seal(
    conn: &mut Conn,
    kek: &[u8],
    pcrs: Option<(&PcrPolicy, &[u8])>,
    shareable: bool,
) -> Result<ObjectBlob, TpmError> {
    let (auth_policy, user_with_auth) = policy::object_policy(conn, pcrs, shareable)?;
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(!shareable)
        .with_fixed_parent(!shareable)
        .with_no_da(true)
        .with_user_with_auth(user_with_auth)
        .build()
        .map_err(|e| TpmError::Invalid(format!("sealed object attributes: {e}")))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_auth_policy(auth_policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(|e| TpmError::Invalid(format!("sealed object template: {e}")))?;
    let data = SensitiveData::try_from(kek.to_vec())
        .map_err(|e| TpmError::Invalid(format!("sealed data: {e}")))?;
    let parent = conn.primary()?;
    let session = conn.param_session()?;
    let created = conn
        .ctx()
        .execute_with_session(Some(session), |c| {
            c.create(parent, public, None, Some(data), None, None)
        })
        .map_err(tss("sealing a KEK (TPM2_Create)"))?;
    Ok(ObjectBlob {
        public: created.out_public,
        private: created.out_private,
    })
}

/// Unseals a KEK into locked memory.
pub fn unseal(
    conn: &mut Conn,
    blob: &ObjectBlob,
    pcrs: Option<&PcrPolicy>,
    key_id: &str,
) -> Result<SecretKey, TpmError> {
    conn.with_loaded(blob, |conn, h| {
        let data = match pcrs {
            None => {
                let s = conn.param_session()?;
                conn.ctx()
                    .execute_with_session(Some(s), |c| c.unseal(h.into()))
                    .map_err(tss("Unseal"))?
            }
            Some(p) => conn
                .with_policy_session(|conn, ps, s| {
                    policy::satisfy_use(conn, ps, p)?;
                    conn.ctx()
                        .execute_with_session(Some(s), |c| c.unseal(h.into()))
                        .map_err(tss("Unseal"))
                })
                .map_err(|e| {
                    if is_policy_failure(&e) {
                        policy::policy_error(key_id, p, "unseal", &e)
                    } else {
                        e
                    }
                })?,
        };
        // `data` wipes itself on drop; the key is copied straight into its page.
        SecretKey::from_slice(data.value()).ok_or_else(|| {
            TpmError::Invalid(format!(
                "key {key_id} unsealed to {} bytes, expected {KEY_LEN}",
                data.len()
            ))
        })
    })
}

/// Creates sealed KEKs for the `key` commands.
pub struct SealedMinter {
    /// The TPM.
    pub worker: Arc<Worker>,
    /// PCR binding and shareability.
    pub opts: MintOptions,
}

impl KeyMinter for SealedMinter {
    fn backend(&self) -> &'static str {
        NAME
    }

    fn algorithms(&self) -> Vec<&'static str> {
        Algorithm::ALL.iter().map(|a| a.name()).collect()
    }

    fn mint(
        &self,
        ring_id: &str,
        version: u64,
        algorithm: &str,
    ) -> Result<MintedKey, BackendError> {
        let alg = crate::backend::aead_for_mint(algorithm)?;
        let opts = self.opts.clone();
        let (blob, digest) = self.worker.call_blocking(move |conn| {
            let digest = match &opts.pcrs {
                Some(p) => Some(p.current_digest(conn)?),
                None => None,
            };
            let tpm_random = conn
                .ctx()
                .execute_without_session(|c| c.get_random(KEY_LEN))
                .map_err(tss("GetRandom"))?;
            let mut kek = Zeroizing::new([0u8; KEY_LEN]);
            getrandom::fill(&mut kek[..])
                .map_err(|_| TpmError::Invalid("the OS random number generator failed".into()))?;
            if tpm_random.len() != KEY_LEN {
                return Err(TpmError::Invalid(
                    "GetRandom returned a short answer".into(),
                ));
            }
            for (k, t) in kek.iter_mut().zip(tpm_random.value()) {
                *k ^= t;
            }
            let pcrs = opts.pcrs.as_ref().zip(digest.as_deref());
            let blob = seal(conn, &kek[..], pcrs, opts.shareable)?;
            // Check the new object unseals to exactly this KEK before it is recorded.
            let back = unseal(conn, &blob, opts.pcrs.as_ref(), "new key")?;
            if back.dangerous_expose()[..] != kek[..] {
                return Err(TpmError::Invalid(
                    "a new sealed KEK did not unseal to itself".into(),
                ));
            }
            Ok((blob, digest))
        })?;
        let key_id = derive_key_id(ring_id, version, &blob)?;
        let mut material = Material::default();
        blob.to_material(&mut material, "")?;
        if let (Some(p), Some(d)) = (&self.opts.pcrs, &digest) {
            p.to_material(d, &mut material);
        }
        Ok(MintedKey {
            key_id,
            algorithm: alg.name().to_string(),
            material,
        })
    }
}

/// A KEK ready for use.
struct LoadedKey {
    key_id: Arc<str>,
    alg: Algorithm,
    key: SecretKey,
}

enum Slot {
    Ready(Arc<LoadedKey>),
    Retired,
    /// The key is in the ring but cannot be unsealed (PCRs changed, blob
    /// from another TPM): the reason, for Decrypt and the log.
    Broken(String),
}

struct State {
    active: Arc<LoadedKey>,
    keys: HashMap<String, Slot>,
}

/// A key to unseal: id, algorithm, blob, PCR binding.
type Todo = (String, Algorithm, ObjectBlob, Option<PcrPolicy>);
/// What unsealing one key gave: the key, or why not.
type Unsealed = (String, Result<LoadedKey, String>);

fn invalid(dir: &Path, reason: String) -> BackendError {
    BackendError::Keyring(keyring::KeyringError::Invalid {
        path: keyring::ring_path(dir),
        reason,
    })
}

/// Checks the ring and lists the keys to unseal (those not already in `prev`).
fn plan(ring: &Keyring, dir: &Path, prev: Option<&State>) -> Result<Vec<Todo>, BackendError> {
    if ring.backend != NAME {
        return Err(invalid(
            dir,
            format!("it belongs to backend {:?}, not {NAME:?}", ring.backend),
        ));
    }
    let mut todo = Vec::new();
    for e in &ring.keys {
        if e.state == KeyState::Retired {
            continue;
        }
        if let Some(Slot::Ready(_)) = prev.and_then(|p| p.keys.get(&e.key_id)) {
            continue;
        }
        let (alg, blob, pcrs) = decode_entry(e).map_err(|r| invalid(dir, r))?;
        if derive_key_id(&ring.ring_id, e.version, &blob)
            .map_err(|r| invalid(dir, r.to_string()))?
            != e.key_id
        {
            return Err(invalid(
                dir,
                format!(
                    "key {} does not match its sealed object (corrupted or edited ring)",
                    e.key_id
                ),
            ));
        }
        todo.push((e.key_id.clone(), alg, blob, pcrs));
    }
    Ok(todo)
}

fn decode_entry(e: &KeyEntry) -> Result<(Algorithm, ObjectBlob, Option<PcrPolicy>), String> {
    let alg = e
        .aead()
        .ok_or_else(|| format!("key {} has unknown algorithm {:?}", e.key_id, e.algorithm))?;
    let m = e
        .material
        .as_ref()
        .ok_or_else(|| format!("key {} has no material", e.key_id))?;
    let blob = ObjectBlob::from_material(m, "").map_err(|r| format!("key {}: {r}", e.key_id))?;
    let pcrs = PcrPolicy::from_material(m).map_err(|r| format!("key {}: {r}", e.key_id))?;
    Ok((alg, blob, pcrs))
}

/// Unseals every key of `todo` on one connection. A TPM outage fails the
/// whole job; a key that does not unseal is reported on its own.
fn unseal_all(conn: &mut Conn, todo: &[Todo]) -> Result<Vec<Unsealed>, TpmError> {
    let mut out = Vec::with_capacity(todo.len());
    for (key_id, alg, blob, pcrs) in todo {
        let alg = *alg;
        match unseal(conn, blob, pcrs.as_ref(), key_id) {
            Ok(key) => out.push((
                key_id.clone(),
                Ok(LoadedKey {
                    key_id: key_id.as_str().into(),
                    alg,
                    key,
                }),
            )),
            Err(e @ TpmError::Unavailable(_)) => return Err(e),
            Err(e) => out.push((key_id.clone(), Err(e.to_string()))),
        }
    }
    Ok(out)
}

fn assemble(
    ring: &Keyring,
    dir: &Path,
    prev: Option<&State>,
    unsealed: Vec<Unsealed>,
) -> Result<State, BackendError> {
    let mut fresh: HashMap<String, Result<LoadedKey, String>> = unsealed.into_iter().collect();
    let mut keys = HashMap::with_capacity(ring.keys.len());
    let mut active = None;
    for e in &ring.keys {
        let slot = if e.state == KeyState::Retired {
            Slot::Retired
        } else if let Some(Slot::Ready(k)) = prev.and_then(|p| p.keys.get(&e.key_id)) {
            Slot::Ready(k.clone())
        } else {
            match fresh.remove(&e.key_id) {
                Some(Ok(k)) => Slot::Ready(Arc::new(k)),
                Some(Err(reason)) => {
                    tracing::error!(kms.key_id = %e.key_id, reason = %reason, "key cannot be unsealed; Decrypt with it will fail");
                    Slot::Broken(reason)
                }
                None => Slot::Broken(format!("key {} was not unsealed", e.key_id)),
            }
        };
        if e.state == KeyState::Active {
            match &slot {
                Slot::Ready(k) => active = Some(k.clone()),
                Slot::Broken(reason) => {
                    return Err(BackendError::Unavailable(format!(
                        "the active key cannot be unsealed: {reason}"
                    )));
                }
                Slot::Retired => {}
            }
        }
        keys.insert(e.key_id.clone(), slot);
    }
    let active = active.ok_or_else(|| invalid(dir, "no active key".into()))?;
    Ok(State { active, keys })
}

/// The `tpm-sealed` backend.
pub struct SealedBackend {
    dir: PathBuf,
    worker: Arc<Worker>,
    state: ArcSwap<State>,
    watcher: keyring::RingWatcher,
}

impl SealedBackend {
    /// Loads the ring in `dir` and unseals its keys (blocking: start-up).
    pub fn open(dir: &Path, worker: Arc<Worker>) -> Result<Self, BackendError> {
        let watcher = keyring::RingWatcher::new(dir);
        let ring = Keyring::load(dir)?;
        let todo = plan(&ring, dir, None)?;
        let unsealed = worker.call_blocking(move |c| unseal_all(c, &todo))?;
        let state = assemble(&ring, dir, None, unsealed)?;
        Ok(SealedBackend {
            dir: dir.to_path_buf(),
            worker,
            state: ArcSwap::from_pointee(state),
            watcher,
        })
    }

    fn check_tpm(&self) -> Result<(), BackendError> {
        match self.worker.down_reason() {
            Some(r) => Err(BackendError::Unavailable(r)),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl KeyBackend for SealedBackend {
    fn kind(&self) -> &'static str {
        NAME
    }

    fn is_hardware_backed(&self) -> bool {
        true
    }

    fn active_key_id(&self) -> Result<Arc<str>, BackendError> {
        Ok(self.state.load().active.key_id.clone())
    }

    fn max_plaintext(&self) -> usize {
        self.state.load().active.alg.max_plaintext()
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        self.check_tpm()?;
        let state = self.state.load();
        let k = &state.active;
        let ciphertext = wire::seal(k.alg, &k.key, &k.key_id, plaintext)?;
        Ok(Wrapped {
            key_id: k.key_id.clone(),
            ciphertext,
        })
    }

    async fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        self.check_tpm()?;
        let state = self.state.load();
        match state.keys.get(key_id) {
            Some(Slot::Ready(k)) => Ok(wire::open(k.alg, &k.key, &k.key_id, ciphertext)?),
            Some(Slot::Retired) => Err(BackendError::Retired(key_id.to_string())),
            Some(Slot::Broken(reason)) => Err(BackendError::Unavailable(reason.clone())),
            None => Err(BackendError::UnknownKeyId(kms_proto::contract::printable(
                key_id, 128,
            ))),
        }
    }

    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let Some(stat) = self.watcher.changed() else {
            return Ok(Refresh {
                active: self.state.load().active.key_id.clone(),
                changed: false,
            });
        };
        let ring = Keyring::load(&self.dir)?;
        let prev = self.state.load_full();
        let todo = plan(&ring, &self.dir, Some(&prev))?;
        let unsealed = if todo.is_empty() {
            Vec::new()
        } else {
            self.worker.call(move |c| unseal_all(c, &todo)).await?
        };
        let state = assemble(&ring, &self.dir, Some(&prev), unsealed)?;
        let active = state.active.key_id.clone();
        self.state.store(Arc::new(state));
        self.watcher.loaded(stat);
        Ok(Refresh {
            changed: true,
            active,
        })
    }

    async fn self_test(&self) -> Result<(), BackendError> {
        // A live TPM round trip first: healthz must say when the TPM is gone.
        self.worker.call(|c| c.probe()).await?;
        let mut probe = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut probe[..])
            .map_err(|_| BackendError::Internal("the OS random number generator failed".into()))?;
        let w = self.encrypt(&probe[..]).await?;
        let back = self.decrypt(&w.key_id, &w.ciphertext).await?;
        if back[..] != probe[..] {
            return Err(BackendError::Internal(
                "self-test: unwrap did not return what was wrapped".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tpm::testing::{Swtpm, make_ring};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tpm_sealed_round_trip_rotation_and_tamper() {
        let tpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        make_ring(
            dir.path(),
            NAME,
            &tpm.tcti(),
            &["aes-256-gcm"],
            MintOptions::default(),
        );
        let b =
            SealedBackend::open(dir.path(), Worker::spawn(tpm.tcti().parse().unwrap())).unwrap();
        assert!(b.active_key_id().unwrap().starts_with("tpms-"));
        let w = b.encrypt(&[7u8; 32]).await.unwrap();
        assert_eq!(
            &b.decrypt(&w.key_id, &w.ciphertext).await.unwrap()[..],
            &[7u8; 32]
        );
        let mut bad = w.ciphertext.clone();
        bad[5] ^= 1;
        assert!(matches!(
            b.decrypt(&w.key_id, &bad).await,
            Err(BackendError::DecryptionFailed)
        ));
        b.self_test().await.unwrap();
        // A rotation made on disk is unsealed by refresh.
        make_ring(
            dir.path(),
            NAME,
            &tpm.tcti(),
            &["xchacha20-poly1305"],
            MintOptions::default(),
        );
        let r = b.refresh().await.unwrap();
        assert!(r.changed);
        assert_ne!(r.active, w.key_id);
        assert_eq!(
            &b.decrypt(&w.key_id, &w.ciphertext).await.unwrap()[..],
            &[7u8; 32]
        );
        let w2 = b.encrypt(&[8u8; 32]).await.unwrap();
        assert_eq!(w2.key_id, r.active);
    }

    #[test]
    fn tpm_sealed_ring_with_a_forged_key_id_is_refused() {
        let tpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        let r = make_ring(
            dir.path(),
            NAME,
            &tpm.tcti(),
            &["aes-256-gcm"],
            MintOptions::default(),
        );
        let path = keyring::ring_path(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        let id = &r.keys[0].key_id;
        let forged = format!("{}000000", &id[..id.len() - 6]);
        std::fs::write(&path, text.replace(id.as_str(), &forged)).unwrap();
        let e = SealedBackend::open(dir.path(), Worker::spawn(tpm.tcti().parse().unwrap()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not match its sealed object"), "{e}");
    }
}
