//! Moving ring entries to another node: `key export` writes the chosen
//! keys of a ring to a file, `key import` on the other node adds them, as
//! staged, to its copy of the same ring. For the backends whose entries
//! are portable (the registry's [`Portability`]): software keys, and
//! references to keys in a token the nodes share (pkcs11).
//!
//! A software KEK is protected by file permissions alone, so its file is
//! exactly as sensitive as the ring: it is written 0600 and must travel
//! over a channel that is both secret and authenticated (scp between the
//! nodes, a secrets manager), and be deleted once imported. A pkcs11 file
//! holds no key, only which token object to use. Its
//! authenticity on arrival is what `key import --expect DIGEST` checks: the
//! operator carries the digest `key export` printed to the other node by a
//! second, trusted way, so a file built by anyone else is refused.
//!
//! [`Portability`]: crate::backend::registry::Portability

use super::{KeyEntry, KeyState, Keyring, Material};

/// Format tag of export files.
pub(crate) const FORMAT: &str = "kms-plugin-key-export/v1";
/// The tag of the same files when only software keys could be exported.
pub(crate) const FORMAT_SOFTWARE_V1: &str = "kms-plugin-software-export/v1";

/// One exported key. It has no state: it arrives staged.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportedKey {
    /// Version in the ring.
    pub version: u64,
    /// key_id.
    pub key_id: String,
    /// AEAD.
    pub algorithm: String,
    /// Creation time.
    pub created: String,
    /// The key (base64).
    pub material: Material,
}

/// What `key export` writes.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Export {
    /// [`FORMAT`].
    pub format: String,
    /// The ring the keys belong to.
    pub ring_id: String,
    /// The ring's backend.
    pub backend: String,
    /// The exporting ring's version counter.
    pub next_version: u64,
    /// The keys.
    pub keys: Vec<ExportedKey>,
}

/// The keys of `ring` for which `wanted` holds (never retired ones).
/// The caller checks the ring's backend allows it.
pub(crate) fn export(ring: &Keyring, wanted: impl Fn(&KeyEntry) -> bool) -> Result<Export, String> {
    let keys: Vec<ExportedKey> = ring
        .keys
        .iter()
        .filter(|e| e.state.is_live() && wanted(e))
        .filter_map(|e| {
            e.material.as_ref().map(|m| ExportedKey {
                version: e.version,
                key_id: e.key_id.clone(),
                algorithm: e.algorithm.clone(),
                created: e.created.clone(),
                material: m.clone(),
            })
        })
        .collect();
    if keys.is_empty() {
        return Err("no key to export (with --staged: `kms-plugin key add` first)".into());
    }
    Ok(Export {
        format: FORMAT.into(),
        ring_id: ring.ring_id.clone(),
        backend: ring.backend.clone(),
        next_version: ring.next_version,
        keys,
    })
}

impl Export {
    /// The entries to merge (the caller checks the backend allows
    /// exports and each entry against its key_id).
    pub(crate) fn into_entries(self) -> Result<(String, u64, Vec<KeyEntry>), String> {
        let legacy_software = self.format == FORMAT_SOFTWARE_V1 && self.backend == "software";
        if self.format != FORMAT && !legacy_software {
            return Err(format!(
                "export format is {:?}, expected {FORMAT:?}",
                self.format
            ));
        }
        let mut out = Vec::with_capacity(self.keys.len());
        for k in self.keys {
            let e = KeyEntry {
                version: k.version,
                key_id: k.key_id,
                algorithm: k.algorithm,
                created: k.created,
                state: KeyState::Staged,
                retired: None,
                material: Some(k.material),
            };
            out.push(e);
        }
        Ok((self.ring_id, self.next_version, out))
    }
}
