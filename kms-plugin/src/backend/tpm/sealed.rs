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

use std::path::Path;
use std::sync::Arc;

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::structures::{
    Digest, KeyedHashScheme, PublicBuilder, PublicKeyedHashParameters, SensitiveData,
};
use zeroize::Zeroizing;

use super::conn::Conn;
use super::object::ObjectBlob;
use super::policy::{self, PcrPolicy};
use super::worker::Worker;
use super::{MintOptions, TpmError, is_policy_failure, tss};
use crate::backend::key_id_hash;
use crate::backend::memory::{self, MemoryKey};
use crate::backend::options::ConnectOptions;
use crate::backend::registry::{BackendRow, MintRequest, Portability};
use crate::backend::ring::{LoadError, Loaded, RingBackend, RingKeys};
use crate::backend::{BackendError, KeyBackend, KeyMinter, MintedKey};
use crate::keyring::{KeyEntry, Keyring, Material};
use crate::secret::{KEY_LEN, SecretKey};

/// The backend name in rings and flags.
pub const NAME: &str = "tpm-sealed";

/// The registry row.
pub(crate) const ROW: BackendRow = BackendRow {
    name: NAME,
    ring: true,
    summary: "KEKs sealed by a TPM 2.0, unsealed once into locked memory",
    options: super::OPTIONS,
    retirement: "the sealed blob is gone from the ring file (its old blocks overwritten with zeros, best effort). This TPM can still unseal any earlier copy of the blob (ring backups; other nodes' rings hold their own copies: retire it there too) for as long as its storage key exists: only clearing the TPM's owner hierarchy destroys that, with every other key of the TPM",
    check: |o| super::check(o, NAME),
    verify: |ring_id, e| check_entry(ring_id, e).map(|_| ()),
    open,
    minter,
    destroy: None,
    export: Portability::Elsewhere(
        "TPM keys move with `key export-target` on the receiving node, then `key share` here",
    ),
};

fn open(dir: Option<&Path>, o: &ConnectOptions) -> Result<Arc<dyn KeyBackend>, BackendError> {
    let dir = crate::backend::registry::ring_dir(dir)?;
    let worker = super::worker(o, NAME)?;
    Ok(Arc::new(SealedBackend::open(dir, SealedKeys { worker })?))
}

fn minter(req: &MintRequest<'_>) -> Result<Box<dyn KeyMinter>, BackendError> {
    let opts = super::mint_options(req, NAME)?;
    let worker = super::worker(req.connect, NAME)?;
    Ok(Box::new(SealedMinter { worker, opts }))
}

/// The key_id of a sealed KEK: ring, version, and a hash of the sealed
/// object's TPM name (which commits to a salted hash of the KEK, its
/// attributes and its policy, and is the same on every node it is shared to).
pub fn derive_key_id(ring_id: &str, version: u64, blob: &ObjectBlob) -> Result<String, TpmError> {
    Ok(format!(
        "tpms-{ring_id}-v{version}-{}",
        key_id_hash(&[&blob.name()?])
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
        memory::algorithm_names()
    }

    fn mint(
        &self,
        ring_id: &str,
        version: u64,
        algorithm: &str,
    ) -> Result<MintedKey, BackendError> {
        let alg = memory::algorithm_for_mint(algorithm)?;
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

/// The `tpm-sealed` part of a [`RingBackend`]: keys unsealed through the
/// worker's TPM connection; wrap and unwrap in memory.
pub(crate) struct SealedKeys {
    /// The TPM.
    pub worker: Arc<Worker>,
}

/// The `tpm-sealed` backend.
pub(crate) type SealedBackend = RingBackend<SealedKeys>;

/// A sealed key's entry, decoded: its AEAD, sealed object and PCR binding.
type DecodedEntry = (crate::wire::Algorithm, ObjectBlob, Option<PcrPolicy>);

fn decode_entry(e: &KeyEntry) -> Result<DecodedEntry, String> {
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

/// Decodes an entry and checks its key_id against its sealed object.
fn check_entry(ring_id: &str, e: &KeyEntry) -> Result<DecodedEntry, String> {
    let (alg, blob, pcrs) = decode_entry(e)?;
    if derive_key_id(ring_id, e.version, &blob).map_err(|r| r.to_string())? != e.key_id {
        return Err(format!(
            "key {} does not match its sealed object (corrupted or edited ring)",
            e.key_id
        ));
    }
    Ok((alg, blob, pcrs))
}

impl RingKeys for SealedKeys {
    type Key = MemoryKey;
    const NAME: &'static str = NAME;
    const HARDWARE_BACKED: bool = true;

    fn key_id(key: &MemoryKey) -> &Arc<str> {
        &key.key_id
    }

    fn max_plaintext(key: &MemoryKey) -> usize {
        key.max_plaintext()
    }

    fn load(&self, ring: &Keyring, entries: &[&KeyEntry]) -> Result<Loaded<MemoryKey>, LoadError> {
        // Check every entry against its sealed object before touching the TPM.
        let mut todo = Vec::with_capacity(entries.len());
        for e in entries {
            let (alg, blob, pcrs) = check_entry(&ring.ring_id, e).map_err(LoadError::Invalid)?;
            todo.push((e.key_id.clone(), alg, blob, pcrs));
        }
        // Unseal them on one connection. A TPM outage fails the whole job; a
        // key that does not unseal is reported on its own.
        Ok(self.worker.call_blocking(move |conn| {
            let mut out = Vec::with_capacity(todo.len());
            for (key_id, alg, blob, pcrs) in &todo {
                match unseal(conn, blob, pcrs.as_ref(), key_id) {
                    Ok(key) => out.push(Ok(MemoryKey {
                        key_id: key_id.as_str().into(),
                        alg: *alg,
                        key,
                    })),
                    Err(e @ TpmError::Unavailable(_)) => return Err(e),
                    Err(e) => out.push(Err(e.to_string())),
                }
            }
            Ok(out)
        })?)
    }

    async fn wrap(&self, key: &Arc<MemoryKey>, plaintext: &[u8]) -> Result<Vec<u8>, BackendError> {
        key.wrap(plaintext)
    }

    async fn unwrap(
        &self,
        key: &Arc<MemoryKey>,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        key.unwrap(ciphertext)
    }

    /// The keys in memory could still serve, but a node whose TPM vanished
    /// is in a state nobody checked: fail closed and visible.
    fn ready(&self) -> Result<(), BackendError> {
        match self.worker.down_reason() {
            Some(r) => Err(BackendError::Unavailable(r)),
            None => Ok(()),
        }
    }

    fn liveness(&self) -> Result<(), String> {
        self.worker.liveness()
    }

    fn revive(&self) -> usize {
        usize::from(self.worker.revive())
    }

    async fn probe(&self) -> Result<(), BackendError> {
        Ok(self.worker.call(|c| c.probe()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tpm::testing::{Swtpm, make_ring};
    use crate::keyring;

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
        let b = SealedBackend::open(
            dir.path(),
            SealedKeys {
                worker: Worker::spawn(tpm.tcti().parse().unwrap()),
            },
        )
        .unwrap();
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
        // Without the directory's record of the ring (an older install),
        // the forged key is still caught by its material.
        std::fs::remove_file(dir.path().join("keyring.seen")).unwrap();
        let e = SealedBackend::open(
            dir.path(),
            SealedKeys {
                worker: Worker::spawn(tpm.tcti().parse().unwrap()),
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("does not match its sealed object"), "{e}");
    }
}
