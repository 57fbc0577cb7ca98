//! Sharing KEKs between control-plane nodes, each with its own TPM, without
//! the plaintext KEK ever being written anywhere.
//!
//! 1. On the new node, `key export-target` writes its storage primary's
//!    public area and prints its fingerprint (SHA-256 of the key's TPM name).
//! 2. The operator checks that fingerprint out of band (read on the new
//!    node's console, not taken from the file that travelled), and runs
//!    `key share --to TARGET --fingerprint FP` on a node that has the KEKs.
//!    For each shareable key the TPM runs `TPM2_Duplicate` to the target's
//!    public key: the object's private area is encrypted under a fresh seed
//!    that is itself encrypted (ECDH) to the target storage key. Only the
//!    target TPM can recover it; the plaintext KEK never leaves either TPM
//!    in the clear, on disk or in this process.
//! 3. On the new node, `key import BUNDLE` runs `TPM2_Import` for each key
//!    and writes the re-wrapped private blobs into its ring, with the same
//!    ring id, versions and key_ids (the names do not change), so every
//!    node reports and accepts the same key_ids.
//!
//! The bundle is public data bound to one TPM; it is written 0600 all the
//! same. Trust rests on the fingerprint check: a bundle made for an
//! attacker's key would hand them the KEKs, exactly like a leaked backup.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{EncryptedSecret, Private, Public, SymmetricDefinitionObject};

use super::object::{self, ObjectBlob};
use super::policy::{self, PcrPolicy};
use super::worker::Worker;
use super::{TpmError, primary, resident, sealed, tss};
use crate::keyring::{KeyEntry, KeyState, Keyring, Material};

/// Format tag of target files.
pub const TARGET_FORMAT: &str = "kms-plugin-tpm-target/v1";
/// Format tag of share bundles.
pub const BUNDLE_FORMAT: &str = "kms-plugin-tpm-share/v2";
/// The earlier format, which carried key states (and so could retire keys
/// or change the active one on import): refused.
pub const BUNDLE_FORMAT_V1: &str = "kms-plugin-tpm-share/v1";

/// A node's storage key, as `key export-target` writes it.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// [`TARGET_FORMAT`].
    pub format: String,
    /// The fingerprint the operator compares.
    pub fingerprint: String,
    /// The public area (marshalled TPMT_PUBLIC), base64.
    pub public: String,
    /// The host name of the node, for the operator's eyes only.
    #[serde(default)]
    pub node: String,
}

/// One shared key in a bundle. It has no state: whatever state it had on
/// the sending node, it arrives staged.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedKey {
    /// Version in the ring.
    pub version: u64,
    /// key_id (the same on every node).
    pub key_id: String,
    /// Algorithm.
    pub algorithm: String,
    /// Creation time.
    pub created: String,
    /// Per object: `<prefix>.public`, `<prefix>.duplicate`, `<prefix>.seed`,
    /// plus `pcrs`/`pcr-digest`.
    pub objects: Material,
}

/// What `key share` writes and `key import` reads.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The target storage key's fingerprint.
    pub target: String,
    /// The ring these keys belong to.
    pub ring_id: String,
    /// `tpm-sealed` or `tpm-resident`.
    pub backend: String,
    /// The sending ring's next version.
    pub next_version: u64,
    /// The keys (never retired ones).
    pub keys: Vec<SharedKey>,
}

/// The object prefixes of a backend's key material.
pub fn prefixes(backend: &str) -> Result<&'static [&'static str], TpmError> {
    match backend {
        sealed::NAME => Ok(&[""]),
        resident::NAME => Ok(&["aes", "hmac"]),
        other => Err(TpmError::Invalid(format!("{other:?} is not a TPM backend"))),
    }
}

fn field(prefix: &str, f: &str) -> String {
    if prefix.is_empty() {
        f.to_string()
    } else {
        format!("{prefix}.{f}")
    }
}

/// Reads this node's storage key (for `key export-target`).
pub fn export_target(worker: &Worker) -> Result<Target, TpmError> {
    let public = worker.call_blocking(|c| c.primary_public())?;
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Ok(Target {
        format: TARGET_FORMAT.into(),
        fingerprint: primary::fingerprint(&public)?,
        public: B64.encode(object::public_bytes(&public)?),
        node,
    })
}

impl Target {
    /// Parses and checks a target file's text; returns the public area.
    pub fn public(&self) -> Result<Public, TpmError> {
        if self.format != TARGET_FORMAT {
            return Err(TpmError::Invalid(format!(
                "target format is {:?}, expected {TARGET_FORMAT:?}",
                self.format
            )));
        }
        let bytes = B64
            .decode(&self.public)
            .map_err(|_| TpmError::Invalid("target public key is not base64".into()))?;
        let public = object::public_from_bytes(&bytes)?;
        primary::check_target(&public)?;
        if primary::fingerprint(&public)? != self.fingerprint {
            return Err(TpmError::Invalid(
                "the target file's fingerprint does not match its public key".into(),
            ));
        }
        Ok(public)
    }
}

/// Which keys `key share` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every key that is not retired (a node joining the ring).
    Live,
    /// Only the staged keys (a rotation: the key just added).
    Staged,
}

/// Duplicates the shareable keys of `ring` chosen by `which` to `target`,
/// whose fingerprint the operator verified as `expected`. Returns the
/// bundle and the keys left out because they cannot leave this TPM.
pub fn share(
    worker: &Worker,
    ring: &Keyring,
    target: &Target,
    expected: &str,
    which: Selection,
) -> Result<(Bundle, Vec<String>), TpmError> {
    let target_pub = target.public()?;
    let fp = primary::fingerprint(&target_pub)?;
    if fp != expected.trim() {
        return Err(TpmError::Invalid(format!(
            "the target's storage key has fingerprint {fp}, not the {} you verified: refusing to share",
            expected.trim()
        )));
    }
    let prefixes = prefixes(&ring.backend)?;
    let mut todo = Vec::new();
    let mut skipped = Vec::new();
    let mut keys = Vec::new();
    for e in &ring.keys {
        let wanted = match which {
            Selection::Live => e.state.is_live(),
            Selection::Staged => e.state == KeyState::Staged,
        };
        let Some(m) = e.material.as_ref().filter(|_| wanted) else {
            continue;
        };
        let mut objs = Vec::new();
        for p in prefixes {
            objs.push((*p, ObjectBlob::from_material(m, p)?));
        }
        if !objs.iter().all(|(_, o)| o.is_duplicable()) {
            if e.state == KeyState::Active || which == Selection::Staged {
                return Err(TpmError::Invalid(format!(
                    "key {} ({}) was created without --shareable: it cannot leave this TPM. \
                     Add a shareable key with `kms-plugin key add --shareable` and share that",
                    e.key_id, e.state
                )));
            }
            skipped.push(e.key_id.clone());
            continue;
        }
        todo.push((
            keys.len(),
            objs,
            PcrPolicy::from_material(m)?,
            pcr_fields(m)?,
        ));
        keys.push(SharedKey {
            version: e.version,
            key_id: e.key_id.clone(),
            algorithm: e.algorithm.clone(),
            created: e.created.clone(),
            objects: Material::default(),
        });
    }
    if keys.is_empty() {
        return Err(TpmError::Invalid(match which {
            Selection::Staged => {
                "the ring has no staged key to share: `kms-plugin key add` first".into()
            }
            Selection::Live => "the ring has no key that can be shared".into(),
        }));
    }
    let jobs: Vec<_> = todo
        .iter()
        .map(|(i, objs, pcrs, _)| (*i, objs.clone(), pcrs.clone(), keys[*i].key_id.clone()))
        .collect();
    let target_for_job = target_pub.clone();
    let dups = worker.call_blocking(move |conn| {
        conn.drop_cached();
        let np = conn
            .ctx()
            .execute_without_session(|c| {
                c.load_external_public(target_for_job.clone(), Hierarchy::Owner)
            })
            .map_err(tss("loading the target storage key"))?;
        let mut out = Vec::new();
        let r = (|| {
            for (i, objs, pcrs, key_id) in &jobs {
                let (i, pcrs) = (*i, pcrs.clone());
                for (p, obj) in objs {
                    let p = *p;
                    let (dup, seed) = conn
                        .with_loaded(obj, |conn, h| {
                            conn.with_policy_session(|conn, ps, s| {
                                policy::satisfy_duplicate(conn, ps, pcrs.as_ref())?;
                                conn.ctx()
                                    .execute_with_session(Some(s), |c| {
                                        c.duplicate(
                                            h.into(),
                                            np.into(),
                                            None,
                                            SymmetricDefinitionObject::Null,
                                        )
                                    })
                                    .map(|(_, d, s)| (d, s))
                                    .map_err(tss("TPM2_Duplicate"))
                            })
                        })
                        .map_err(|e| match (&pcrs, super::is_policy_failure(&e)) {
                            (Some(pc), true) => policy::policy_error(key_id, pc, "duplicate", &e),
                            _ => e,
                        })?;
                    out.push((i, p, object::public_bytes(&obj.public)?, dup, seed));
                }
            }
            Ok(out)
        })();
        if let Err(e) = conn.ctx().flush_context(np.into()) {
            tracing::debug!(error = %e, "flushing the target key failed");
        }
        r
    })?;
    for (i, p, public, dup, seed) in dups {
        let m = &mut keys[i].objects;
        m.insert(&field(p, "public"), &public);
        m.insert(&field(p, "duplicate"), dup.value());
        m.insert(&field(p, "seed"), seed.value());
    }
    for (i, _, _, pcr) in todo {
        if let Some((pcrs, digest)) = pcr {
            let m = &mut keys[i].objects;
            m.insert(policy::FIELD_PCRS, &pcrs);
            m.insert(policy::FIELD_PCR_DIGEST, &digest);
        }
    }
    Ok((
        Bundle {
            format: BUNDLE_FORMAT.into(),
            target: fp,
            ring_id: ring.ring_id.clone(),
            backend: ring.backend.clone(),
            next_version: ring.next_version,
            keys,
        },
        skipped,
    ))
}

type PcrFields = Option<(zeroize::Zeroizing<Vec<u8>>, zeroize::Zeroizing<Vec<u8>>)>;

fn pcr_fields(m: &Material) -> Result<PcrFields, TpmError> {
    if !m.fields().any(|f| f == policy::FIELD_PCRS) {
        return Ok(None);
    }
    Ok(Some((
        m.get(policy::FIELD_PCRS).map_err(TpmError::Invalid)?,
        m.get(policy::FIELD_PCR_DIGEST).map_err(TpmError::Invalid)?,
    )))
}

/// One object of a bundle, decoded: (key index, material prefix, public
/// area, duplicate blob, encrypted seed).
type ImportJob = (usize, &'static str, Public, Private, EncryptedSecret);

impl Bundle {
    /// Parses a bundle file's bytes, as [`read_json`] does.
    #[cfg(feature = "fuzzing")]
    pub fn parse(bytes: &[u8]) -> Result<Bundle, TpmError> {
        serde_json::from_slice(bytes)
            .map_err(|e| TpmError::Invalid(format!("the bundle is not valid: {e}")))
    }

    /// Checks the format and decodes every object, without a TPM: nothing
    /// reaches the TPM from a bundle that does not decode whole.
    fn decode(&self) -> Result<Vec<ImportJob>, TpmError> {
        if self.format == BUNDLE_FORMAT_V1 {
            return Err(TpmError::Invalid(format!(
                "this bundle is {BUNDLE_FORMAT_V1:?}, made by an older kms-plugin; its keys carry states, which an import no longer accepts: run `key share` again with this version"
            )));
        }
        if self.format != BUNDLE_FORMAT {
            return Err(TpmError::Invalid(format!(
                "bundle format is {:?}, expected {BUNDLE_FORMAT:?}",
                self.format
            )));
        }
        let prefixes = prefixes(&self.backend)?;
        let mut jobs = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let m = &k.objects;
            for p in prefixes {
                let public = object::public_from_bytes(
                    &m.get(&field(p, "public")).map_err(TpmError::Invalid)?,
                )?;
                let dup = Private::try_from(
                    m.get(&field(p, "duplicate"))
                        .map_err(TpmError::Invalid)?
                        .to_vec(),
                )
                .map_err(|e| TpmError::Invalid(format!("duplicate blob: {e}")))?;
                let seed = EncryptedSecret::try_from(
                    m.get(&field(p, "seed"))
                        .map_err(TpmError::Invalid)?
                        .to_vec(),
                )
                .map_err(|e| TpmError::Invalid(format!("seed: {e}")))?;
                jobs.push((i, *p, public, dup, seed));
            }
        }
        Ok(jobs)
    }

    /// Everything a bundle can be checked for without a TPM.
    pub fn check(&self) -> Result<(), TpmError> {
        self.decode().map(|_| ())
    }
}

/// Imports a bundle into this TPM; returns the ring entries, with material
/// re-wrapped under this node's storage key, in bundle order.
pub fn import(worker: &Worker, bundle: &Bundle) -> Result<Vec<KeyEntry>, TpmError> {
    // Decode everything before touching the TPM.
    let jobs = bundle.decode()?;
    let target = bundle.target.clone();
    let imported = worker.call_blocking(move |conn| {
        let own = primary::fingerprint(&conn.primary_public()?)?;
        if own != target {
            return Err(TpmError::Invalid(format!(
                "this bundle was made for the storage key {target}, but this TPM's storage key is {own}: \
                 run `kms-plugin key export-target` here and share again"
            )));
        }
        let parent = conn.primary()?;
        let mut out = Vec::with_capacity(jobs.len());
        for (i, p, public, dup, seed) in &jobs {
            let (i, p) = (*i, *p);
            let private = conn
                .ctx()
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.import(
                        parent.into(),
                        None,
                        public.clone(),
                        dup.clone(),
                        seed.clone(),
                        SymmetricDefinitionObject::Null,
                    )
                })
                .map_err(tss("TPM2_Import (was the bundle made for this TPM?)"))?;
            out.push((i, p, ObjectBlob { public: public.clone(), private }));
        }
        Ok(out)
    })?;
    let mut entries: Vec<KeyEntry> = bundle
        .keys
        .iter()
        .map(|k| KeyEntry {
            version: k.version,
            key_id: k.key_id.clone(),
            algorithm: k.algorithm.clone(),
            created: k.created.clone(),
            state: KeyState::Staged,
            retired: None,
            material: Some(Material::default()),
        })
        .collect();
    for (i, p, blob) in &imported {
        let m = entries[*i].material.as_mut().expect("material");
        blob.to_material(m, p)?;
    }
    for (i, k) in bundle.keys.iter().enumerate() {
        if let (src, Some(m)) = (&k.objects, entries[i].material.as_mut())
            && let Some((pcrs, digest)) = pcr_fields(src)?
        {
            m.insert(policy::FIELD_PCRS, &pcrs);
            m.insert(policy::FIELD_PCR_DIGEST, &digest);
        }
    }
    // The key_ids must follow from the imported objects.
    for e in &entries {
        let Some(m) = &e.material else { continue };
        let id = match bundle.backend.as_str() {
            sealed::NAME => sealed::derive_key_id(
                &bundle.ring_id,
                e.version,
                &ObjectBlob::from_material(m, "")?,
            )?,
            _ => resident::derive_key_id(
                &bundle.ring_id,
                e.version,
                &ObjectBlob::from_material(m, "aes")?,
                &ObjectBlob::from_material(m, "hmac")?,
            )?,
        };
        if id != e.key_id {
            return Err(TpmError::Invalid(format!(
                "bundle key {} does not match its objects (corrupted or edited bundle)",
                e.key_id
            )));
        }
    }
    Ok(entries)
}

/// Reads a JSON file of at most 1 MiB.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, TpmError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| TpmError::Invalid(format!("{what} {}: {e}", path.display())))?;
    if meta.len() > 1 << 20 {
        return Err(TpmError::Invalid(format!(
            "{what} {} is larger than 1 MiB",
            path.display()
        )));
    }
    let text = std::fs::read(path)
        .map_err(|e| TpmError::Invalid(format!("{what} {}: {e}", path.display())))?;
    serde_json::from_slice(&text)
        .map_err(|e| TpmError::Invalid(format!("{what} {} is not valid: {e}", path.display())))
}
