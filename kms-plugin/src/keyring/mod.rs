//! The key ring: versioned KEKs with their public metadata, in one file.
//!
//! ```text
//! <dir>/keyring.json   the ring (mode 0600, replaced atomically on every change)
//! <dir>/keyring.lock   flock'ed by writers so concurrent `key` commands serialize
//! ```
//!
//! Versions only grow (`next_version` is kept even after retirement) and a
//! retired key keeps its metadata with its material destroyed, so a key_id is
//! never reused. Backends put whatever they need in a key's [`Material`]
//! (the raw key for software, TPM blobs for the TPM backends).

mod file;
mod material;
mod watch;

use std::path::{Path, PathBuf};

pub use file::{RingLock, lock, parse, ring_path, stat_ring};
pub use material::Material;
pub use watch::{RingStat, RingWatcher};

use crate::wire::Algorithm;

/// The format tag written into every ring file.
pub const FORMAT: &str = "kms-plugin-keyring/v1";

/// What a key may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Used for new Encrypts (exactly one key).
    Active,
    /// Kept to Decrypt what it wrapped.
    Enabled,
    /// Material destroyed; the metadata stays so the version and key_id are never reused.
    Retired,
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyState::Active => "active",
            KeyState::Enabled => "enabled",
            KeyState::Retired => "retired",
        })
    }
}

/// One key version.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Version, unique and increasing within the ring.
    pub version: u64,
    /// The public key_id reported to kube-apiserver.
    pub key_id: String,
    /// The AEAD (for TPM-resident keys, the TPM scheme name).
    pub algorithm: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// State.
    pub state: KeyState,
    /// When it was retired, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
    /// Backend-specific material; absent once retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub material: Option<Material>,
}

impl KeyEntry {
    /// The AEAD, when the algorithm is one of the in-memory ones.
    pub fn aead(&self) -> Option<Algorithm> {
        Algorithm::from_name(&self.algorithm)
    }
}

/// The whole ring.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    /// Always [`FORMAT`].
    pub format: String,
    /// Random public identifier of this ring, part of every key_id.
    pub ring_id: String,
    /// The backend whose material the ring holds (`software`, `tpm-sealed`, ...).
    pub backend: String,
    /// The version the next key gets.
    pub next_version: u64,
    /// Keys, by increasing version.
    pub keys: Vec<KeyEntry>,
}

/// Why a ring could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// No ring at the path.
    #[error("no key ring at {0} (create one with `kms-plugin key init --keyring {1}`)")]
    Missing(PathBuf, PathBuf),
    /// A ring already exists where `init` was asked to create one.
    #[error("a key ring already exists at {0}; refusing to overwrite it")]
    Exists(PathBuf),
    /// I/O on the ring files.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The ring file does not parse or violates an invariant.
    #[error("key ring {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never key material).
        reason: String,
    },
    /// The requested change is not allowed.
    #[error("{0}")]
    Refused(String),
}

impl Keyring {
    /// A new, empty ring for `backend`.
    pub fn new(backend: &str) -> Result<Self, getrandom::Error> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id)?;
        Ok(Keyring {
            format: FORMAT.to_string(),
            ring_id: hex::encode(id),
            backend: backend.to_string(),
            next_version: 1,
            keys: Vec::new(),
        })
    }

    /// The active key.
    pub fn active(&self) -> Option<&KeyEntry> {
        self.keys.iter().find(|k| k.state == KeyState::Active)
    }

    /// The key with `key_id`, in any state.
    pub fn get(&self, key_id: &str) -> Option<&KeyEntry> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }

    /// Adds `entry` as the new active key; the previous active key stays
    /// enabled for Decrypt. `entry.version` must be `next_version`.
    pub fn push_active(&mut self, mut entry: KeyEntry) -> Result<(), KeyringError> {
        if entry.version != self.next_version {
            return Err(KeyringError::Refused(format!(
                "new key version {} is not the ring's next version {}",
                entry.version, self.next_version
            )));
        }
        if self.get(&entry.key_id).is_some() {
            return Err(KeyringError::Refused(format!(
                "key_id {} already exists in the ring",
                entry.key_id
            )));
        }
        for k in &mut self.keys {
            if k.state == KeyState::Active {
                k.state = KeyState::Enabled;
            }
        }
        entry.state = KeyState::Active;
        self.keys.push(entry);
        self.next_version += 1;
        Ok(())
    }

    /// Retires `key_id`: its material is destroyed. Refused for the active key.
    pub fn retire(&mut self, key_id: &str, now: String) -> Result<(), KeyringError> {
        let k = self
            .keys
            .iter_mut()
            .find(|k| k.key_id == key_id)
            .ok_or_else(|| KeyringError::Refused(format!("no key {key_id:?} in the ring")))?;
        match k.state {
            KeyState::Active => Err(KeyringError::Refused(format!(
                "{key_id} is the active key; rotate first (`kms-plugin key rotate`), rewrap the data, then retire it"
            ))),
            KeyState::Retired => Err(KeyringError::Refused(format!(
                "{key_id} is already retired"
            ))),
            KeyState::Enabled => {
                k.state = KeyState::Retired;
                k.material = None;
                k.retired = Some(now);
                Ok(())
            }
        }
    }

    /// Checks every invariant a loaded or about-to-be-written ring must hold.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format is {:?}, expected {FORMAT:?}", self.format));
        }
        if self.ring_id.len() != 16 || !self.ring_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("ring_id is not 16 hex digits".into());
        }
        if self.backend.is_empty() {
            return Err("backend is empty".into());
        }
        let mut last = 0u64;
        let mut active = 0;
        let mut ids = std::collections::HashSet::new();
        for k in &self.keys {
            if k.version <= last {
                return Err(format!(
                    "key versions are not strictly increasing at version {}",
                    k.version
                ));
            }
            last = k.version;
            if k.version >= self.next_version {
                return Err(format!(
                    "key version {} is not below next_version {}",
                    k.version, self.next_version
                ));
            }
            if k.key_id.is_empty() || k.key_id.len() > kms_proto::contract::MAX_KEY_ID {
                return Err(format!("key version {} has an invalid key_id", k.version));
            }
            if !ids.insert(k.key_id.as_str()) {
                return Err(format!("key_id {} appears twice", k.key_id));
            }
            if humantime::parse_rfc3339(&k.created).is_err() {
                return Err(format!("key {} has an invalid created time", k.key_id));
            }
            match (k.state, &k.material) {
                (KeyState::Retired, Some(_)) => {
                    return Err(format!("retired key {} still has material", k.key_id));
                }
                (KeyState::Active | KeyState::Enabled, None) => {
                    return Err(format!("key {} has no material", k.key_id));
                }
                _ => {}
            }
            if k.state == KeyState::Active {
                active += 1;
            }
        }
        if !self.keys.is_empty() && active != 1 {
            return Err(format!("{active} active keys; exactly one is required"));
        }
        Ok(())
    }

    /// Loads and validates the ring in `dir`.
    pub fn load(dir: &Path) -> Result<Self, KeyringError> {
        file::load(dir)
    }

    /// Validates and writes the ring to `dir` atomically. Callers hold [`lock`].
    pub fn save(&self, dir: &Path, _lock: &RingLock) -> Result<(), KeyringError> {
        file::save(self, dir)
    }
}

/// The current time as RFC 3339 UTC, seconds precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: u64) -> KeyEntry {
        KeyEntry {
            version: v,
            key_id: format!("k{v}"),
            algorithm: "aes-256-gcm".into(),
            created: now_rfc3339(),
            state: KeyState::Enabled,
            retired: None,
            material: Some(Material::single("key", &[1u8; 32])),
        }
    }

    #[test]
    fn rotation_and_retirement_rules() {
        let mut r = Keyring::new("software").unwrap();
        r.push_active(entry(1)).unwrap();
        r.push_active(entry(2)).unwrap();
        assert_eq!(r.active().unwrap().key_id, "k2");
        assert_eq!(r.get("k1").unwrap().state, KeyState::Enabled);
        assert!(r.validate().is_ok());
        assert!(matches!(
            r.push_active(entry(2)),
            Err(KeyringError::Refused(_))
        ));
        let err = r.retire("k2", now_rfc3339()).unwrap_err().to_string();
        assert!(err.contains("active key"), "{err}");
        r.retire("k1", now_rfc3339()).unwrap();
        assert!(r.get("k1").unwrap().material.is_none());
        assert!(
            r.retire("k1", now_rfc3339())
                .unwrap_err()
                .to_string()
                .contains("already retired")
        );
        assert!(r.retire("nope", now_rfc3339()).is_err());
        // Versions are never reused, even after retirement.
        assert_eq!(r.next_version, 3);
        assert!(r.validate().is_ok());
    }

    #[test]
    fn validation_catches_broken_invariants() {
        let mut r = Keyring::new("software").unwrap();
        r.push_active(entry(1)).unwrap();
        r.push_active(entry(2)).unwrap();
        r.keys[0].state = KeyState::Active;
        assert!(r.validate().unwrap_err().contains("2 active"));
        r.keys[0].state = KeyState::Enabled;
        r.keys[0].key_id = "k2".into();
        assert!(r.validate().unwrap_err().contains("twice"));
        r.keys[0].key_id = "k1".into();
        r.next_version = 2;
        assert!(r.validate().unwrap_err().contains("next_version"));
        r.next_version = 3;
        r.keys[1].material = None;
        assert!(r.validate().unwrap_err().contains("no material"));
    }
}
