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

pub(crate) mod export;
mod file;
mod fingerprint;
mod lineage;
mod material;
mod watch;
mod watermark;

use std::path::{Path, PathBuf};

pub use file::{RingLock, lock, parse, ring_path, stat_ring};
pub use fingerprint::Fingerprint;
pub use lineage::{Lineage, Merge, MergeMode};
pub use material::Material;
pub use watch::{RingStat, RingWatcher};

use crate::wire::Algorithm;

/// The format tag written into every ring file.
pub const FORMAT: &str = "kms-plugin-keyring/v1";

/// What a key may be used for.
///
/// ```text
/// key add ──▶ staged ──key activate──▶ active ──(next activation)──▶ enabled ──key retire──▶ retired
///                 ▲                      ▲                               │
///   key import ───┘                      └────────key activate───────────┘
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Used for new Encrypts (exactly one key).
    Active,
    /// New, decrypt-only: waiting until every node holds it, then activated.
    /// Never used for Encrypt; Status keeps reporting the active key.
    Staged,
    /// Kept to Decrypt what it wrapped (a former active key).
    Enabled,
    /// Material destroyed; the metadata stays so the version and key_id are never reused.
    Retired,
}

impl KeyState {
    /// The name in the ring file and in `key list`.
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Staged => "staged",
            KeyState::Enabled => "enabled",
            KeyState::Retired => "retired",
        }
    }

    /// Whether the key's material is kept (it decrypts).
    pub fn is_live(self) -> bool {
        self != KeyState::Retired
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One key version.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    /// The ring file or directory is not safe to take keys from: another
    /// user owns it, others can write it, or it is a symbolic link.
    #[error("key ring {path} is refused: {reason}")]
    Insecure {
        /// The file or directory.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
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
    /// The ring file is an older or foreign version of the ring this
    /// directory held: loading it would drop keys.
    #[error(
        "key ring {path} went backwards: {reason}. Was an older copy put in its place? Merge it instead with `kms-plugin key restore FILE`; if keys are truly lost, `kms-plugin key accept-loss --yes` records them as retired"
    )]
    Regressed {
        /// The ring file.
        path: PathBuf,
        /// What it lacks or changed.
        reason: String,
    },
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

    /// Adds `entry` as a new staged key: it decrypts, but nothing encrypts
    /// with it until [`Keyring::activate`]. `entry.version` must be
    /// `next_version`.
    pub fn push_staged(&mut self, mut entry: KeyEntry) -> Result<(), KeyringError> {
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
        entry.state = KeyState::Staged;
        self.keys.push(entry);
        self.next_version += 1;
        Ok(())
    }

    /// Makes `key_id` (staged, or a former active key) the active key; the
    /// previous active key stays enabled for Decrypt. Returns the previous
    /// active key_id.
    pub fn activate(&mut self, key_id: &str) -> Result<Option<String>, KeyringError> {
        let state = self
            .get(key_id)
            .map(|k| k.state)
            .ok_or_else(|| KeyringError::Refused(format!("no key {key_id:?} in the ring")))?;
        match state {
            KeyState::Active => {
                return Err(KeyringError::Refused(format!(
                    "{key_id} is already the active key"
                )));
            }
            KeyState::Retired => {
                return Err(KeyringError::Refused(format!(
                    "{key_id} is retired: its material is destroyed and it can never be active again"
                )));
            }
            KeyState::Staged | KeyState::Enabled => {}
        }
        let mut previous = None;
        for k in &mut self.keys {
            if k.state == KeyState::Active {
                k.state = KeyState::Enabled;
                previous = Some(k.key_id.clone());
            }
            if k.key_id == key_id {
                k.state = KeyState::Active;
            }
        }
        Ok(previous)
    }

    /// Adds `entry` and activates it at once (`key init`, `key rotate`: a
    /// single node). The previous active key stays enabled for Decrypt.
    pub fn push_active(&mut self, entry: KeyEntry) -> Result<(), KeyringError> {
        let id = entry.key_id.clone();
        self.push_staged(entry)?;
        self.activate(&id).map(|_| ())
    }

    /// The staged keys.
    pub fn staged(&self) -> impl Iterator<Item = &KeyEntry> {
        self.keys.iter().filter(|k| k.state == KeyState::Staged)
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
                "{key_id} is the active key; activate another first (`kms-plugin key add` and `key activate`, or `key rotate` on a single node), rewrap the data, then retire it"
            ))),
            KeyState::Retired => Err(KeyringError::Refused(format!(
                "{key_id} is already retired"
            ))),
            KeyState::Staged | KeyState::Enabled => {
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
                (KeyState::Active | KeyState::Staged | KeyState::Enabled, None) => {
                    return Err(format!("key {} has no material", k.key_id));
                }
                _ => {}
            }
            if k.state == KeyState::Active {
                active += 1;
            }
        }
        // A ring whose keys are all staged (a new node that imported the
        // cluster's keys, before `key activate`) is valid; `serve` refuses it.
        let any_live_unstaged = self
            .keys
            .iter()
            .any(|k| matches!(k.state, KeyState::Active | KeyState::Enabled));
        if active > 1 || (active == 0 && any_live_unstaged) {
            return Err(format!("{active} active keys; exactly one is required"));
        }
        Ok(())
    }

    /// Loads and validates the ring in `dir`, refusing one that goes back on
    /// what this directory last held (see [`Keyring::load_unchecked`]).
    pub fn load(dir: &Path) -> Result<Self, KeyringError> {
        let ring = file::load(dir)?;
        watermark::check(dir, &ring)?;
        Ok(ring)
    }

    /// Loads and validates the ring in `dir` without comparing it with what
    /// the directory last held: for `key restore` and `key accept-loss`,
    /// which repair exactly that.
    pub fn load_unchecked(dir: &Path) -> Result<Self, KeyringError> {
        file::load(dir)
    }

    /// What the directory last held, if it says.
    pub fn last_seen(dir: &Path) -> Result<Option<lineage::Lineage>, KeyringError> {
        watermark::read(dir)
    }

    /// Validates and writes the ring to `dir` atomically, then records it as
    /// the directory's newest version. Callers hold [`lock`].
    pub fn save(&self, dir: &Path, _lock: &RingLock) -> Result<(), KeyringError> {
        file::save(self, dir)?;
        watermark::write(dir, self)
    }

    /// Writes the ring file only, leaving the directory's high-water mark as
    /// it is: for `key restore` when the merged ring still lacks keys the
    /// mark records, so they are not forgotten. Callers hold [`lock`].
    pub fn save_ring_only(&self, dir: &Path, _lock: &RingLock) -> Result<(), KeyringError> {
        file::save(self, dir)
    }

    /// This ring's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self)
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
