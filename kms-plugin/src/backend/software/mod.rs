//! The software backend: versioned 256-bit KEKs in the key ring file,
//! decoded into locked, wiped memory; wrap/unwrap in this process.

use std::path::Path;
use std::sync::Arc;

use aes::cipher::{BlockEncrypt, KeyInit};
use zeroize::Zeroizing;

use super::memory::{self, MemoryKey};
use super::options::ConnectOptions;
use super::registry::{BackendRow, Portability};
use super::ring::{LoadError, Loaded, RingBackend, RingKeys};
use super::{BackendError, KeyBackend, KeyMinter, MintedKey};
use crate::keyring::{KeyEntry, Keyring, Material};
use crate::secret::SecretKey;

/// The backend name in rings and flags.
pub(crate) const NAME: &str = "software";
const MATERIAL_FIELD: &str = "key";
const KCV_BLOCK: &[u8; 16] = b"kms-plugin/kcv01";

/// The registry row.
pub(crate) const ROW: BackendRow = BackendRow {
    name: NAME,
    ring: true,
    summary: "KEKs in the key ring file (mode 0600), unwrapped into locked memory",
    options: &[],
    retirement: "the key is gone from the ring file, and the previous file's blocks were overwritten with zeros (best effort: SSDs, copy-on-write filesystems and snapshots may keep copies). Every copy of the ring made before now still holds it: the other nodes' rings (retire it there too), backups and exports; destroy or expire those to destroy the key",
    check: |_| Ok(()),
    verify: |ring_id, e| decode(ring_id, e).map(|_| ()),
    open,
    minter: |_| Ok(Box::new(SoftwareMinter)),
    destroy: None,
    export: Portability::Secret,
};

fn open(dir: Option<&Path>, _: &ConnectOptions) -> Result<Arc<dyn KeyBackend>, BackendError> {
    let dir = crate::backend::registry::ring_dir(dir)?;
    Ok(Arc::new(SoftwareBackend::open(dir, SoftwareKeys)?))
}

/// The key_id of a software KEK: the ring, the version, and a key check
/// value (AES-256 of a fixed block under the key, first 6 bytes), so a key_id
/// names exactly one key even if a ring is restored from an old backup and
/// rotated again.
pub(crate) fn derive_key_id(ring_id: &str, version: u64, key: &SecretKey) -> String {
    let cipher = aes::Aes256::new(key.dangerous_expose().into());
    let mut block = aes::Block::clone_from_slice(KCV_BLOCK);
    cipher.encrypt_block(&mut block);
    format!("soft-{ring_id}-v{version}-{}", hex::encode(&block[..6]))
}

/// Decodes one entry's key, checking its key_id against its material.
pub(crate) fn decode(ring_id: &str, e: &KeyEntry) -> Result<MemoryKey, String> {
    let alg = e
        .aead()
        .ok_or_else(|| format!("key {} has unknown algorithm {:?}", e.key_id, e.algorithm))?;
    let material = e
        .material
        .as_ref()
        .ok_or_else(|| format!("key {} has no material", e.key_id))?;
    let raw = material
        .get(MATERIAL_FIELD)
        .map_err(|r| format!("key {}: {r}", e.key_id))?;
    let key = SecretKey::from_slice(&raw)
        .ok_or_else(|| format!("key {} is {} bytes, expected 32", e.key_id, raw.len()))?;
    if derive_key_id(ring_id, e.version, &key) != e.key_id {
        return Err(format!(
            "key {} does not match its material (corrupted or edited ring)",
            e.key_id
        ));
    }
    Ok(MemoryKey {
        key_id: e.key_id.as_str().into(),
        alg,
        key,
    })
}

/// The software backend's part of a [`RingBackend`]: keys decoded from the
/// ring file; wrap and unwrap in this process.
pub(crate) struct SoftwareKeys;

/// The software backend.
pub(crate) type SoftwareBackend = RingBackend<SoftwareKeys>;

impl RingKeys for SoftwareKeys {
    type Key = MemoryKey;
    const NAME: &'static str = NAME;
    const HARDWARE_BACKED: bool = false;

    fn key_id(key: &MemoryKey) -> &Arc<str> {
        &key.key_id
    }

    fn max_plaintext(key: &MemoryKey) -> usize {
        key.max_plaintext()
    }

    fn load(&self, ring: &Keyring, entries: &[&KeyEntry]) -> Result<Loaded<MemoryKey>, LoadError> {
        // A key that does not decode means a corrupt ring: refuse it whole.
        entries
            .iter()
            .map(|e| decode(&ring.ring_id, e).map(Ok).map_err(LoadError::Invalid))
            .collect()
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
}

/// Creates software keys for the `key` commands.
pub(crate) struct SoftwareMinter;

impl KeyMinter for SoftwareMinter {
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
        let key = SecretKey::generate().map_err(BackendError::Rng)?;
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
    use crate::keyring::{self, KeyState, now_rfc3339};

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
        let b = SoftwareBackend::open(d.path(), SoftwareKeys).unwrap();
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

    /// A key ring file as version 1 of the format writes it, with the key
    /// of the fixed vectors in `wire.rs`: it must load, and decrypt what it
    /// wrapped, in every later version of this code.
    const RING_V1: &str = r#"{
  "format": "kms-plugin-keyring/v1",
  "ring_id": "0011223344556677",
  "backend": "software",
  "next_version": 3,
  "keys": [
    {
      "version": 1,
      "key_id": "soft-0011223344556677-v1-174f2218139d",
      "algorithm": "aes-256-gcm",
      "created": "2026-01-01T00:00:00Z",
      "state": "active",
      "material": {
        "key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
      }
    },
    {
      "version": 2,
      "key_id": "soft-0011223344556677-v2-000000000000",
      "algorithm": "xchacha20-poly1305",
      "created": "2026-01-02T00:00:00Z",
      "state": "retired",
      "retired": "2026-02-01T00:00:00Z"
    }
  ]
}
"#;

    #[tokio::test]
    async fn the_fixed_ring_file_loads_and_decrypts_the_fixed_vector() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(keyring::ring_path(d.path()), RING_V1).unwrap();
        let b = SoftwareBackend::open(d.path(), SoftwareKeys).unwrap();
        assert_eq!(
            &*b.active_key_id().unwrap(),
            "soft-0011223344556677-v1-174f2218139d"
        );
        let ct = hex::decode("0101a0a1a2a3a4a5a6a7a8a9aaaba45a3e6f078940fd2027c5914538829c32ee1b52d0f5002ede4c64c43de9374321d82f7e93259dcc508e6ecd69f3496e").unwrap();
        let pt = b
            .decrypt("soft-0011223344556677-v1-174f2218139d", &ct)
            .await
            .unwrap();
        assert_eq!(&pt[..], &[0x42u8; 32]);
        assert!(matches!(
            b.decrypt("soft-0011223344556677-v2-000000000000", &ct)
                .await,
            Err(BackendError::Retired(_))
        ));
    }

    #[test]
    fn a_hand_edited_ring_is_caught_by_the_directorys_record_too() {
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
        let e = SoftwareBackend::open(d.path(), SoftwareKeys)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("went backwards") && e.contains(&format!("lacks key {id}")),
            "{e}"
        );
        assert!(e.contains("key restore"), "says what to do: {e}");
    }

    #[test]
    fn key_id_is_stable_and_depends_on_the_key() {
        // Independent value: AES-256 of "kms-plugin/kcv01" under key 00..1f.
        let k: Vec<u8> = (0u8..32).collect();
        let k = SecretKey::from_slice(&k).unwrap();
        assert_eq!(
            derive_key_id("0011223344556677", 1, &k),
            "soft-0011223344556677-v1-174f2218139d"
        );
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
        // Without the directory's record of the ring (an older install),
        // the forged key is still caught by its material.
        std::fs::remove_file(d.path().join("keyring.seen")).unwrap();
        let e = SoftwareBackend::open(d.path(), SoftwareKeys)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not match its material"), "{e}");
    }
}
