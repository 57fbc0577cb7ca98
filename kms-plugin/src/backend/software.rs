//! The software backend: versioned 256-bit KEKs in the key ring file,
//! decoded into locked, wiped memory; wrap/unwrap in this process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes::cipher::{BlockEncrypt, KeyInit};
use arc_swap::ArcSwap;
use zeroize::Zeroizing;

use super::{BackendError, KeyBackend, KeyMinter, MintedKey, Refresh, Wrapped};
use crate::keyring::{self, KeyState, Keyring, Material};
use crate::secret::SecretKey;
use crate::wire::{self, Algorithm};

/// The backend name in rings and flags.
pub const NAME: &str = "software";
const MATERIAL_FIELD: &str = "key";
const KCV_BLOCK: &[u8; 16] = b"kms-plugin/kcv01";

/// The key_id of a software KEK: the ring, the version, and a key check
/// value (AES-256 of a fixed block under the key, first 6 bytes), so a key_id
/// names exactly one key even if a ring is restored from an old backup and
/// rotated again.
pub fn derive_key_id(ring_id: &str, version: u64, key: &SecretKey) -> String {
    let cipher = aes::Aes256::new(key.dangerous_expose().into());
    let mut block = aes::Block::clone_from_slice(KCV_BLOCK);
    cipher.encrypt_block(&mut block);
    format!("soft-{ring_id}-v{version}-{}", hex::encode(&block[..6]))
}

/// A KEK ready for use.
pub struct LoadedKey {
    /// Its key_id.
    pub key_id: Arc<str>,
    /// Its AEAD.
    pub alg: Algorithm,
    /// The key.
    pub key: SecretKey,
}

/// A key ring decoded into memory.
pub struct LoadedRing {
    /// The active key.
    pub active: Arc<LoadedKey>,
    keys: HashMap<String, Option<Arc<LoadedKey>>>,
}

impl LoadedRing {
    /// Decodes every usable key of `ring`, checking each key_id against its material.
    pub fn decode(ring: &Keyring, dir: &Path) -> Result<Self, BackendError> {
        let invalid = |reason: String| {
            BackendError::Keyring(keyring::KeyringError::Invalid {
                path: keyring::ring_path(dir),
                reason,
            })
        };
        if ring.backend != NAME {
            return Err(invalid(format!(
                "it belongs to backend {:?}, not {NAME:?}",
                ring.backend
            )));
        }
        let mut keys = HashMap::with_capacity(ring.keys.len());
        let mut active = None;
        for e in &ring.keys {
            if e.state == KeyState::Retired {
                keys.insert(e.key_id.clone(), None);
                continue;
            }
            let alg = e.aead().ok_or_else(|| {
                invalid(format!(
                    "key {} has unknown algorithm {:?}",
                    e.key_id, e.algorithm
                ))
            })?;
            let material = e
                .material
                .as_ref()
                .ok_or_else(|| invalid(format!("key {} has no material", e.key_id)))?;
            let raw = material
                .get(MATERIAL_FIELD)
                .map_err(|r| invalid(format!("key {}: {r}", e.key_id)))?;
            let key = SecretKey::from_slice(&raw).ok_or_else(|| {
                invalid(format!(
                    "key {} is {} bytes, expected 32",
                    e.key_id,
                    raw.len()
                ))
            })?;
            if derive_key_id(&ring.ring_id, e.version, &key) != e.key_id {
                return Err(invalid(format!(
                    "key {} does not match its material (corrupted or edited ring)",
                    e.key_id
                )));
            }
            let k = Arc::new(LoadedKey {
                key_id: e.key_id.as_str().into(),
                alg,
                key,
            });
            if e.state == KeyState::Active {
                active = Some(k.clone());
            }
            keys.insert(e.key_id.clone(), Some(k));
        }
        let active = active.ok_or_else(|| invalid("no active key".into()))?;
        Ok(LoadedRing { active, keys })
    }

    /// The key named `key_id`.
    pub fn key(&self, key_id: &str) -> Result<&Arc<LoadedKey>, BackendError> {
        match self.keys.get(key_id) {
            Some(Some(k)) => Ok(k),
            Some(None) => Err(BackendError::Retired(key_id.to_string())),
            None => Err(BackendError::UnknownKeyId(kms_proto::contract::printable(
                key_id, 128,
            ))),
        }
    }
}

/// The software backend.
pub struct SoftwareBackend {
    dir: PathBuf,
    ring: ArcSwap<LoadedRing>,
    watcher: keyring::RingWatcher,
}

impl SoftwareBackend {
    /// Loads the ring in `dir`.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        let watcher = keyring::RingWatcher::new(dir);
        let ring = Keyring::load(dir)?;
        let loaded = LoadedRing::decode(&ring, dir)?;
        Ok(SoftwareBackend {
            dir: dir.to_path_buf(),
            ring: ArcSwap::from_pointee(loaded),
            watcher,
        })
    }
}

#[async_trait::async_trait]
impl KeyBackend for SoftwareBackend {
    fn kind(&self) -> &'static str {
        NAME
    }

    fn is_hardware_backed(&self) -> bool {
        false
    }

    fn active_key_id(&self) -> Result<Arc<str>, BackendError> {
        Ok(self.ring.load().active.key_id.clone())
    }

    fn max_plaintext(&self) -> usize {
        self.ring.load().active.alg.max_plaintext()
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        let ring = self.ring.load();
        let k = &ring.active;
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
        let ring = self.ring.load();
        let k = ring.key(key_id)?;
        Ok(wire::open(k.alg, &k.key, &k.key_id, ciphertext)?)
    }

    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let Some(stat) = self.watcher.changed() else {
            return Ok(Refresh {
                active: self.ring.load().active.key_id.clone(),
                changed: false,
            });
        };
        let ring = Keyring::load(&self.dir)?;
        let loaded = LoadedRing::decode(&ring, &self.dir)?;
        let active = loaded.active.key_id.clone();
        self.ring.store(Arc::new(loaded));
        self.watcher.loaded(stat);
        Ok(Refresh {
            changed: true,
            active,
        })
    }
}

/// Creates software keys for the `key` commands.
pub struct SoftwareMinter;

impl KeyMinter for SoftwareMinter {
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
        let alg = super::aead_for_mint(algorithm)?;
        let key = SecretKey::generate()
            .map_err(|_| BackendError::Internal("the OS random number generator failed".into()))?;
        Ok(MintedKey {
            key_id: derive_key_id(ring_id, version, &key),
            algorithm: alg.name().to_string(),
            material: Material::single(MATERIAL_FIELD, key.dangerous_expose()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::{KeyEntry, now_rfc3339};

    pub(crate) fn make_ring(dir: &Path, algs: &[&str]) -> Keyring {
        let mut r = Keyring::new(NAME).unwrap();
        for a in algs {
            let m = SoftwareMinter.mint(&r.ring_id, r.next_version, a).unwrap();
            r.push_active(KeyEntry {
                version: r.next_version,
                key_id: m.key_id,
                algorithm: m.algorithm,
                created: now_rfc3339(),
                state: KeyState::Active,
                retired: None,
                material: Some(m.material),
            })
            .unwrap();
        }
        let l = keyring::lock(dir).unwrap();
        r.save(dir, &l).unwrap();
        r
    }

    #[tokio::test]
    async fn wraps_with_active_and_unwraps_with_any_retained_key() {
        let d = tempfile::tempdir().unwrap();
        make_ring(d.path(), &["aes-256-gcm"]);
        let b = SoftwareBackend::open(d.path()).unwrap();
        let w1 = b.encrypt(&[1u8; 32]).await.unwrap();
        assert!(w1.key_id.starts_with("soft-"));
        // Rotate on disk with an XChaCha key; refresh picks it up.
        let mut r = Keyring::load(d.path()).unwrap();
        let m = SoftwareMinter
            .mint(&r.ring_id, r.next_version, "xchacha20-poly1305")
            .unwrap();
        r.push_active(KeyEntry {
            version: r.next_version,
            key_id: m.key_id.clone(),
            algorithm: m.algorithm,
            created: now_rfc3339(),
            state: KeyState::Active,
            retired: None,
            material: Some(m.material),
        })
        .unwrap();
        let l = keyring::lock(d.path()).unwrap();
        r.save(d.path(), &l).unwrap();
        let refresh = b.refresh().await.unwrap();
        assert!(refresh.changed);
        assert_eq!(&*refresh.active, m.key_id.as_str());
        assert!(!b.refresh().await.unwrap().changed);
        let w2 = b.encrypt(&[2u8; 32]).await.unwrap();
        assert_eq!(&*w2.key_id, m.key_id.as_str());
        assert_eq!(
            &b.decrypt(&w1.key_id, &w1.ciphertext).await.unwrap()[..],
            &[1u8; 32]
        );
        assert_eq!(
            &b.decrypt(&w2.key_id, &w2.ciphertext).await.unwrap()[..],
            &[2u8; 32]
        );
        // Wrong key_id: the other key does not authenticate it.
        assert!(matches!(
            b.decrypt(&w2.key_id, &w1.ciphertext).await,
            Err(BackendError::DecryptionFailed)
        ));
        assert!(matches!(
            b.decrypt("soft-nope", &w1.ciphertext).await,
            Err(BackendError::UnknownKeyId(_))
        ));
        b.self_test().await.unwrap();
        // Retire the first key: its ciphertexts are now refused as retired.
        r.retire(&w1.key_id, now_rfc3339()).unwrap();
        r.save(d.path(), &l).unwrap();
        assert!(b.refresh().await.unwrap().changed);
        assert!(matches!(
            b.decrypt(&w1.key_id, &w1.ciphertext).await,
            Err(BackendError::Retired(_))
        ));
    }

    #[test]
    fn key_id_is_stable_and_depends_on_the_key() {
        let k = SecretKey::from_slice(&[9u8; 32]).unwrap();
        let a = derive_key_id("00112233aabbccdd", 3, &k);
        assert_eq!(a, derive_key_id("00112233aabbccdd", 3, &k));
        assert!(a.starts_with("soft-00112233aabbccdd-v3-"));
        let k2 = SecretKey::from_slice(&[8u8; 32]).unwrap();
        assert_ne!(a, derive_key_id("00112233aabbccdd", 3, &k2));
    }

    #[test]
    fn a_ring_whose_key_id_does_not_match_its_material_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let r = make_ring(d.path(), &["aes-256-gcm"]);
        let text = std::fs::read_to_string(keyring::ring_path(d.path())).unwrap();
        let id = &r.keys[0].key_id;
        let forged = format!("{}000000", &id[..id.len() - 6]);
        std::fs::write(
            keyring::ring_path(d.path()),
            text.replace(id.as_str(), &forged),
        )
        .unwrap();
        let e = SoftwareBackend::open(d.path()).err().unwrap().to_string();
        assert!(e.contains("does not match its material"), "{e}");
    }
}
