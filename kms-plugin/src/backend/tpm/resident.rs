//! `tpm-resident`: the KEK never leaves the TPM; every wrap and unwrap is
//! a TPM command.
//!
//! A KEK version is two TPM keys created inside the TPM (sensitiveDataOrigin:
//! nobody ever sees them): an AES-256 key used in CFB mode through
//! `TPM2_EncryptDecrypt2` and an HMAC-SHA256 key, combined encrypt-then-MAC:
//!
//! ```text
//! v1: format(1) = 0x02 ‖ scheme(1) = 0x01 ‖ iv(16) ‖ AES-256-CFB(pt) ‖ tag(32)
//! tag = HMAC-SHA256_tpm("k8s-kms-plugin/tpm-resident" ‖ format ‖ scheme
//!                       ‖ u16be(len(key_id)) ‖ key_id ‖ iv ‖ ct)
//! ```
//!
//! The tag binds the format version, the scheme and the key_id, so a
//! ciphertext presented with another key_id or a changed header fails; it is
//! checked (in constant time) before anything is decrypted. The IV is random
//! from the OS. The seed crosses the bus inside a salted session (parameter
//! encryption), so a bus sniffer sees neither the seed nor the KEK.
//!
//! Why not an asymmetric wrap (RSA-OAEP with the TPM's key): anyone holding
//! the public key could then make ciphertexts the plugin accepts, so whoever
//! can write etcd could plant a DEK seed of their choosing; the symmetric
//! MAC makes every accepted ciphertext one this TPM made. RSA decryption is
//! also slower on a TPM than two symmetric commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use subtle::ConstantTimeEq;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm, SymmetricMode};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, InitialValue, KeyedHashScheme, MaxBuffer, Public, PublicBuilder,
    PublicKeyedHashParameters, SymmetricCipherParameters, SymmetricDefinitionObject,
};
use zeroize::Zeroizing;

use super::conn::Conn;
use super::object::{ObjectBlob, short_hash};
use super::policy::{self, PcrPolicy};
use super::worker::Worker;
use super::{MintOptions, TpmError, is_policy_failure, tss};
use crate::backend::{BackendError, KeyBackend, KeyMinter, MintedKey, Refresh, Wrapped};
use crate::keyring::{self, KeyEntry, KeyState, Keyring, Material};
use kms_proto::contract::MAX_CIPHERTEXT;

/// The backend name in rings and flags.
pub const NAME: &str = "tpm-resident";
/// The scheme name recorded as the key's algorithm.
pub const SCHEME: &str = "tpm-aes-256-cfb-hmac-sha256";
/// The first byte of every tpm-resident ciphertext.
pub const FORMAT_V1: u8 = 0x02;
const SCHEME_ID: u8 = 0x01;
const IV_LEN: usize = 16;
const TAG_LEN: usize = 32;
const HEADER_LEN: usize = 2;
const MAC_LABEL: &[u8] = b"k8s-kms-plugin/tpm-resident";
/// The TPM's largest command buffer (`TPM2B_MAX_BUFFER`, 1024 on every PC TPM).
const TPM_MAX_BUFFER: usize = 1024;
/// Ring material prefixes of the two objects.
const AES: &str = "aes";
const HMAC: &str = "hmac";

/// The largest plaintext for `key_id`: the ciphertext must fit in 1024
/// bytes and the MAC input in one TPM buffer.
pub fn max_plaintext(key_id: &str) -> usize {
    let by_ciphertext = MAX_CIPHERTEXT - HEADER_LEN - IV_LEN - TAG_LEN;
    let by_mac = TPM_MAX_BUFFER - MAC_LABEL.len() - HEADER_LEN - 2 - key_id.len() - IV_LEN;
    by_ciphertext.min(by_mac)
}

/// The key_id of a resident KEK: ring, version, and a hash of both objects'
/// TPM names.
pub fn derive_key_id(
    ring_id: &str,
    version: u64,
    aes: &ObjectBlob,
    hmac: &ObjectBlob,
) -> Result<String, TpmError> {
    Ok(format!(
        "tpmr-{ring_id}-v{version}-{}",
        short_hash(&[&aes.name()?, &hmac.name()?])
    ))
}

/// One resident KEK: its two objects and its PCR binding.
pub struct ResidentKey {
    /// Its key_id.
    pub key_id: Arc<str>,
    aes: ObjectBlob,
    hmac: ObjectBlob,
    pcrs: Option<PcrPolicy>,
}

impl ResidentKey {
    /// Decodes a ring entry and checks its key_id against the objects.
    pub fn decode(ring_id: &str, e: &KeyEntry) -> Result<Self, String> {
        if e.algorithm != SCHEME {
            return Err(format!(
                "key {} has algorithm {:?}, expected {SCHEME:?}",
                e.key_id, e.algorithm
            ));
        }
        let m = e
            .material
            .as_ref()
            .ok_or_else(|| format!("key {} has no material", e.key_id))?;
        let aes =
            ObjectBlob::from_material(m, AES).map_err(|r| format!("key {}: {r}", e.key_id))?;
        let hmac =
            ObjectBlob::from_material(m, HMAC).map_err(|r| format!("key {}: {r}", e.key_id))?;
        let pcrs = PcrPolicy::from_material(m).map_err(|r| format!("key {}: {r}", e.key_id))?;
        let id = derive_key_id(ring_id, e.version, &aes, &hmac).map_err(|r| r.to_string())?;
        if id != e.key_id {
            return Err(format!(
                "key {} does not match its TPM objects (corrupted or edited ring)",
                e.key_id
            ));
        }
        Ok(ResidentKey {
            key_id: e.key_id.as_str().into(),
            aes,
            hmac,
            pcrs,
        })
    }
}

fn key_template(
    kind: PublicAlgorithm,
    auth_policy: Digest,
    uwa: bool,
    shareable: bool,
) -> Result<Public, TpmError> {
    let build = || -> tss_esapi::Result<Public> {
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(!shareable)
            .with_fixed_parent(!shareable)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(uwa)
            .with_no_da(true)
            .with_sign_encrypt(true)
            .with_decrypt(kind == PublicAlgorithm::SymCipher)
            .build()?;
        let b = PublicBuilder::new()
            .with_public_algorithm(kind)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(auth_policy);
        match kind {
            PublicAlgorithm::SymCipher => b
                .with_symmetric_cipher_parameters(SymmetricCipherParameters::new(
                    SymmetricDefinitionObject::AES_256_CFB,
                ))
                .with_symmetric_cipher_unique_identifier(Digest::default())
                .build(),
            _ => b
                .with_keyed_hash_parameters(PublicKeyedHashParameters::new(
                    KeyedHashScheme::HMAC_SHA_256,
                ))
                .with_keyed_hash_unique_identifier(Digest::default())
                .build(),
        }
    };
    build().map_err(|e| TpmError::Invalid(format!("resident key template: {e}")))
}

fn mac_input(key_id: &str, iv: &[u8], ct: &[u8]) -> Vec<u8> {
    let id = key_id.as_bytes();
    let mut m = Vec::with_capacity(MAC_LABEL.len() + 4 + id.len() + iv.len() + ct.len());
    m.extend_from_slice(MAC_LABEL);
    m.push(FORMAT_V1);
    m.push(SCHEME_ID);
    m.extend_from_slice(&(id.len() as u16).to_be_bytes());
    m.extend_from_slice(id);
    m.extend_from_slice(iv);
    m.extend_from_slice(ct);
    m
}

/// Runs `f` with the key's two handles loaded and the session that
/// authorises their use: the salted HMAC session, or (PCR-bound keys) a
/// salted policy session whose PolicyPCR `f` re-satisfies before each use.
fn with_key<T>(
    conn: &mut Conn,
    key: &ResidentKey,
    f: impl FnOnce(
        &mut Conn,
        [KeyHandle; 2],
        &dyn Fn(&mut Conn) -> Result<AuthSession, TpmError>,
    ) -> Result<T, TpmError>,
) -> Result<T, TpmError> {
    let hs = conn.cached(&key.key_id, &[&key.aes, &key.hmac])?;
    let hs = [hs[0], hs[1]];
    match &key.pcrs {
        None => f(conn, hs, &|c: &mut Conn| c.param_session()),
        Some(p) => conn
            .with_policy_session(|conn, ps, s| {
                f(conn, hs, &move |c: &mut Conn| {
                    policy::satisfy_use(c, ps, p)?;
                    Ok(s)
                })
            })
            .map_err(|e| {
                if is_policy_failure(&e) {
                    policy::policy_error(&key.key_id, p, "use", &e)
                } else {
                    e
                }
            }),
    }
}

/// The session for the HMAC command. Its input (header, key_id, IV,
/// ciphertext) and output (the tag) are public, so without a PCR policy it
/// needs no parameter encryption: a password session with the key's empty
/// auth value saves one HMAC-session round of ESYS work (~2.5 ms on
/// tpm2-tss 3.2). PCR-bound keys need their policy session.
fn mac_auth(
    conn: &mut Conn,
    key: &ResidentKey,
    auth: &dyn Fn(&mut Conn) -> Result<AuthSession, TpmError>,
) -> Result<AuthSession, TpmError> {
    match key.pcrs {
        None => Ok(AuthSession::Password),
        Some(_) => auth(conn),
    }
}

fn tpm_hmac(
    conn: &mut Conn,
    h: KeyHandle,
    s: AuthSession,
    data: Vec<u8>,
) -> Result<Vec<u8>, TpmError> {
    let buf =
        MaxBuffer::try_from(data).map_err(|e| TpmError::Invalid(format!("MAC input: {e}")))?;
    let tag = conn
        .ctx()
        .execute_with_session(Some(s), |c| c.hmac(h.into(), buf, HashingAlgorithm::Sha256))
        .map_err(tss("HMAC"))?;
    Ok(tag.value().to_vec())
}

fn tpm_cfb(
    conn: &mut Conn,
    h: KeyHandle,
    s: AuthSession,
    decrypt: bool,
    iv: &[u8],
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    let iv =
        InitialValue::try_from(iv.to_vec()).map_err(|e| TpmError::Invalid(format!("IV: {e}")))?;
    let input = MaxBuffer::try_from(data.to_vec())
        .map_err(|e| TpmError::Invalid(format!("cipher input: {e}")))?;
    let (out, _) = conn
        .ctx()
        .execute_with_session(Some(s), |c| {
            c.encrypt_decrypt_2(h, decrypt, SymmetricMode::Cfb, input, iv)
        })
        .map_err(tss("EncryptDecrypt2"))?;
    Ok(Zeroizing::new(out.value().to_vec()))
}

/// Wraps `plaintext` with `key` in the TPM.
pub fn wrap(conn: &mut Conn, key: &ResidentKey, plaintext: &[u8]) -> Result<Vec<u8>, TpmError> {
    let mut iv = [0u8; IV_LEN];
    getrandom::fill(&mut iv)
        .map_err(|_| TpmError::Invalid("the OS random number generator failed".into()))?;
    let key_id = key.key_id.clone();
    let (ct, tag) = with_key(conn, key, |conn, [aes, hmac], auth| {
        let s = auth(conn)?;
        let ct = tpm_cfb(conn, aes, s, false, &iv, plaintext)?;
        let s = mac_auth(conn, key, auth)?;
        let tag = tpm_hmac(conn, hmac, s, mac_input(&key_id, &iv, &ct))?;
        Ok((ct, tag))
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + IV_LEN + ct.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.push(SCHEME_ID);
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Why an unwrap failed: the ciphertext (no TPM involved) or the TPM.
pub enum UnwrapError {
    /// Not a tpm-resident ciphertext.
    Malformed(&'static str),
    /// The tag does not verify.
    DecryptionFailed,
    /// The TPM failed.
    Tpm(TpmError),
}

/// Checks the header of a ciphertext.
pub fn check_format(ciphertext: &[u8]) -> Result<(), UnwrapError> {
    if ciphertext.len() < HEADER_LEN {
        return Err(UnwrapError::Malformed("shorter than its header"));
    }
    if ciphertext[0] != FORMAT_V1 {
        return Err(UnwrapError::Malformed("unknown format version"));
    }
    if ciphertext[1] != SCHEME_ID {
        return Err(UnwrapError::Malformed("unknown scheme"));
    }
    if ciphertext.len() < HEADER_LEN + IV_LEN + TAG_LEN + 1 {
        return Err(UnwrapError::Malformed("shorter than IV and tag"));
    }
    Ok(())
}

/// Unwraps `ciphertext` with `key` in the TPM: MAC first, then decrypt.
pub fn unwrap(
    conn: &mut Conn,
    key: &ResidentKey,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
    check_format(ciphertext)?;
    let body = &ciphertext[HEADER_LEN..];
    let (iv, rest) = body.split_at(IV_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    if HEADER_LEN + 2 + MAC_LABEL.len() + key.key_id.len() + IV_LEN + ct.len() > TPM_MAX_BUFFER {
        // Encrypt never makes such a ciphertext.
        return Err(UnwrapError::DecryptionFailed);
    }
    let key_id = key.key_id.clone();
    let r = with_key(conn, key, |conn, [aes, hmac], auth| {
        let s = mac_auth(conn, key, auth)?;
        let want = tpm_hmac(conn, hmac, s, mac_input(&key_id, iv, ct))?;
        if !bool::from(want.ct_eq(tag)) {
            return Ok(None);
        }
        let s = auth(conn)?;
        tpm_cfb(conn, aes, s, true, iv, ct).map(Some)
    });
    match r {
        Ok(Some(pt)) => Ok(pt),
        Ok(None) => Err(UnwrapError::DecryptionFailed),
        Err(e) => Err(UnwrapError::Tpm(e)),
    }
}

/// Creates resident KEKs for the `key` commands.
pub struct ResidentMinter {
    /// The TPM.
    pub worker: Arc<Worker>,
    /// PCR binding and shareability.
    pub opts: MintOptions,
}

impl KeyMinter for ResidentMinter {
    fn backend(&self) -> &'static str {
        NAME
    }

    fn algorithms(&self) -> Vec<&'static str> {
        vec![SCHEME]
    }

    fn mint(
        &self,
        ring_id: &str,
        version: u64,
        algorithm: &str,
    ) -> Result<MintedKey, BackendError> {
        if algorithm != SCHEME {
            return Err(BackendError::Internal(format!(
                "unknown algorithm {algorithm:?}; tpm-resident keys use {SCHEME}"
            )));
        }
        let opts = self.opts.clone();
        let ring_id = ring_id.to_string();
        let (key_id, aes, hmac, digest) = self.worker.call_blocking(move |conn| {
            let digest = match &opts.pcrs {
                Some(p) => Some(p.current_digest(conn)?),
                None => None,
            };
            let pcrs = opts.pcrs.as_ref().zip(digest.as_deref());
            let (auth_policy, uwa) = policy::object_policy(conn, pcrs, opts.shareable)?;
            let parent = conn.primary()?;
            let mut make = |kind| -> Result<ObjectBlob, TpmError> {
                let public = key_template(kind, auth_policy.clone(), uwa, opts.shareable)?;
                let r = conn
                    .ctx()
                    .execute_with_session(Some(AuthSession::Password), |c| {
                        c.create(parent, public, None, None, None, None)
                    })
                    .map_err(tss("creating a resident key (TPM2_Create)"))?;
                Ok(ObjectBlob {
                    public: r.out_public,
                    private: r.out_private,
                })
            };
            let aes = make(PublicAlgorithm::SymCipher)?;
            let hmac = make(PublicAlgorithm::KeyedHash)?;
            let key_id = derive_key_id(&ring_id, version, &aes, &hmac)?;
            // Check the pair works before it is recorded.
            let key = ResidentKey {
                key_id: key_id.as_str().into(),
                aes: aes.clone(),
                hmac: hmac.clone(),
                pcrs: opts.pcrs.clone(),
            };
            let probe = [0x5au8; 32];
            let ct = wrap(conn, &key, &probe)?;
            match unwrap(conn, &key, &ct) {
                Ok(pt) if pt[..] == probe[..] => {}
                Ok(_) | Err(UnwrapError::DecryptionFailed | UnwrapError::Malformed(_)) => {
                    return Err(TpmError::Invalid(
                        "a new resident key failed its round trip".into(),
                    ));
                }
                Err(UnwrapError::Tpm(e)) => return Err(e),
            }
            conn.drop_cached();
            Ok((key_id, aes, hmac, digest))
        })?;
        let mut material = Material::default();
        aes.to_material(&mut material, AES)?;
        hmac.to_material(&mut material, HMAC)?;
        if let (Some(p), Some(d)) = (&self.opts.pcrs, &digest) {
            p.to_material(d, &mut material);
        }
        Ok(MintedKey {
            key_id,
            algorithm: SCHEME.to_string(),
            material,
        })
    }
}

struct State {
    active: Arc<ResidentKey>,
    keys: HashMap<String, Option<Arc<ResidentKey>>>,
}

fn decode(ring: &Keyring, dir: &Path) -> Result<State, BackendError> {
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
        let k = Arc::new(ResidentKey::decode(&ring.ring_id, e).map_err(invalid)?);
        if e.state == KeyState::Active {
            active = Some(k.clone());
        }
        keys.insert(e.key_id.clone(), Some(k));
    }
    let active = active.ok_or_else(|| invalid("no active key".into()))?;
    Ok(State { active, keys })
}

/// The `tpm-resident` backend.
pub struct ResidentBackend {
    dir: PathBuf,
    worker: Arc<Worker>,
    state: ArcSwap<State>,
    watcher: keyring::RingWatcher,
}

impl ResidentBackend {
    /// Loads the ring in `dir` and checks the active key works in this TPM
    /// (blocking: start-up).
    pub fn open(dir: &Path, worker: Arc<Worker>) -> Result<Self, BackendError> {
        let watcher = keyring::RingWatcher::new(dir);
        let ring = Keyring::load(dir)?;
        let state = decode(&ring, dir)?;
        let active = state.active.clone();
        worker.call_blocking(move |conn| {
            let ct = wrap(conn, &active, &[0u8; 32])?;
            match unwrap(conn, &active, &ct) {
                Ok(_) => Ok(()),
                Err(UnwrapError::Tpm(e)) => Err(e),
                Err(_) => Err(TpmError::Invalid(
                    "the active key failed its start-up round trip".into(),
                )),
            }
        })?;
        Ok(ResidentBackend {
            dir: dir.to_path_buf(),
            worker,
            state: ArcSwap::from_pointee(state),
            watcher,
        })
    }
}

#[async_trait::async_trait]
impl KeyBackend for ResidentBackend {
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
        max_plaintext(&self.state.load().active.key_id)
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        let key = self.state.load().active.clone();
        let max = max_plaintext(&key.key_id);
        if plaintext.len() > max {
            return Err(BackendError::TooLarge {
                len: plaintext.len(),
                max,
            });
        }
        let pt = Zeroizing::new(plaintext.to_vec());
        let k = key.clone();
        let ciphertext = self.worker.call(move |conn| wrap(conn, &k, &pt)).await?;
        Ok(Wrapped {
            key_id: key.key_id.clone(),
            ciphertext,
        })
    }

    async fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let key = match self.state.load().keys.get(key_id) {
            Some(Some(k)) => k.clone(),
            Some(None) => return Err(BackendError::Retired(key_id.to_string())),
            None => {
                return Err(BackendError::UnknownKeyId(kms_proto::contract::printable(
                    key_id, 128,
                )));
            }
        };
        let map = |e: UnwrapError| match e {
            UnwrapError::Malformed(m) => {
                BackendError::Malformed(format!("malformed ciphertext: {m}"))
            }
            UnwrapError::DecryptionFailed => BackendError::DecryptionFailed,
            UnwrapError::Tpm(e) => e.into(),
        };
        check_format(ciphertext).map_err(map)?;
        let ct = ciphertext.to_vec();
        self.worker
            // TPM failures go back to the worker as errors, so it can retry
            // when the TPM is momentarily full (another client holds its
            // slots); only the verdicts on the ciphertext come back as values.
            .call(move |conn| match unwrap(conn, &key, &ct) {
                Err(UnwrapError::Tpm(e)) => Err(e),
                verdict => Ok(verdict),
            })
            .await?
            .map_err(map)
    }

    async fn refresh(&self) -> Result<Refresh, BackendError> {
        let Some(stat) = self.watcher.changed() else {
            return Ok(Refresh {
                active: self.state.load().active.key_id.clone(),
                changed: false,
            });
        };
        let ring = Keyring::load(&self.dir)?;
        let state = decode(&ring, &self.dir)?;
        let active = state.active.key_id.clone();
        self.state.store(Arc::new(state));
        self.watcher.loaded(stat);
        Ok(Refresh {
            changed: true,
            active,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tpm::testing::{Swtpm, make_ring};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tpm_resident_round_trip_limits_and_tamper() {
        let tpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        make_ring(
            dir.path(),
            NAME,
            &tpm.tcti(),
            &[SCHEME],
            MintOptions::default(),
        );
        let b =
            ResidentBackend::open(dir.path(), Worker::spawn(tpm.tcti().parse().unwrap())).unwrap();
        let id = b.active_key_id().unwrap();
        assert!(id.starts_with("tpmr-"));
        let w = b.encrypt(&[7u8; 32]).await.unwrap();
        assert_eq!(w.ciphertext.len(), 2 + 16 + 32 + 32);
        assert_eq!(
            &b.decrypt(&w.key_id, &w.ciphertext).await.unwrap()[..],
            &[7u8; 32]
        );
        for i in 0..w.ciphertext.len() {
            let mut bad = w.ciphertext.clone();
            bad[i] ^= 0x01;
            assert!(b.decrypt(&w.key_id, &bad).await.is_err(), "byte {i}");
        }
        let max = b.max_plaintext();
        let big = b.encrypt(&vec![1u8; max]).await.unwrap();
        assert!(big.ciphertext.len() <= MAX_CIPHERTEXT);
        assert_eq!(
            b.decrypt(&big.key_id, &big.ciphertext).await.unwrap().len(),
            max
        );
        assert!(matches!(
            b.encrypt(&vec![1u8; max + 1]).await,
            Err(BackendError::TooLarge { .. })
        ));
        b.self_test().await.unwrap();
    }
}
