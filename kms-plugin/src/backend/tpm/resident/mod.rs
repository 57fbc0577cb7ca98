//! `tpm-resident`: the KEK never leaves the TPM; every wrap and unwrap is
//! a TPM command.
//!
//! A KEK version is two TPM keys created inside the TPM (sensitiveDataOrigin:
//! nobody ever sees them): an AES-256 key used in CFB mode through
//! `TPM2_EncryptDecrypt2` and an HMAC-SHA256 key, combined encrypt-then-MAC
//! (the ciphertext layout: [`format`]).
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

//! One concept per file: [`format`] (the ciphertext, no TPM), `tpm` (the
//! TPM commands), `mint` (creating keys); this file is the backend.

mod format;
mod mint;
mod tpm;

use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

pub use format::max_plaintext;
pub(crate) use mint::ResidentMinter;
use tpm::{UnwrapError, unwrap, wrap};

use super::TpmError;
use super::object::ObjectBlob;
use super::policy::PcrPolicy;
use super::worker::Worker;
use crate::backend::key_id_hash;
use crate::backend::options::ConnectOptions;
use crate::backend::registry::{BackendRow, MintRequest, Portability};
use crate::backend::ring::{LoadError, Loaded, RingBackend, RingKeys};
use crate::backend::{BackendError, KeyBackend, KeyMinter};
use crate::keyring::{KeyEntry, Keyring};

/// The backend name in rings and flags.
pub const NAME: &str = "tpm-resident";
/// The scheme name recorded as the key's algorithm.
pub const SCHEME: &str = "tpm-aes-256-cfb-hmac-sha256";
/// Ring material prefixes of the two objects.
const AES: &str = "aes";
const HMAC: &str = "hmac";

/// The registry row.
pub(crate) const ROW: BackendRow = BackendRow {
    name: NAME,
    ring: true,
    summary: "KEKs that never leave the TPM 2.0; every wrap and unwrap runs in it",
    options: super::OPTIONS,
    retirement: "the key's two TPM objects are gone from the ring file (its old blocks overwritten with zeros, best effort); they were never persistent in the TPM. This TPM can still load any earlier copy of them (ring backups; other nodes' rings hold their own copies: retire it there too) for as long as its storage key exists: only clearing the TPM's owner hierarchy destroys that, with every other key of the TPM",
    check: |o| super::check(o, NAME),
    verify: |ring_id, e| ResidentKey::decode(ring_id, e).map(|_| ()),
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
    let backend = ResidentBackend::open(
        dir,
        ResidentKeys {
            worker: worker.clone(),
        },
    )?;
    // Check the active key works in this TPM before serving.
    let active = backend.active_key();
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
    Ok(Arc::new(backend))
}

fn minter(req: &MintRequest<'_>) -> Result<Box<dyn KeyMinter>, BackendError> {
    let opts = super::mint_options(req, NAME)?;
    let worker = super::worker(req.connect, NAME)?;
    Ok(Box::new(ResidentMinter { worker, opts }))
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
        key_id_hash(&[&aes.name()?, &hmac.name()?])
    ))
}

/// One resident KEK: its two objects and its PCR binding.
pub(crate) struct ResidentKey {
    /// Its key_id.
    pub key_id: Arc<str>,
    aes: ObjectBlob,
    hmac: ObjectBlob,
    pcrs: Option<PcrPolicy>,
}

impl ResidentKey {
    /// Decodes a ring entry and checks its key_id against the objects.
    pub(crate) fn decode(ring_id: &str, e: &KeyEntry) -> Result<Self, String> {
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

/// Checks a tpm-resident ciphertext's layout without a TPM.
pub(crate) fn check_ciphertext(ciphertext: &[u8]) -> Result<(), &'static str> {
    format::parse(ciphertext).map(|_| ())
}

/// The `tpm-resident` part of a [`RingBackend`]: keys that are TPM
/// objects; every wrap and unwrap is a job of the TPM worker.
pub(crate) struct ResidentKeys {
    /// The TPM.
    pub worker: Arc<Worker>,
}

/// The `tpm-resident` backend.
pub(crate) type ResidentBackend = RingBackend<ResidentKeys>;

fn map_unwrap(e: UnwrapError) -> BackendError {
    match e {
        UnwrapError::Malformed(m) => BackendError::Malformed(m.to_string()),
        UnwrapError::DecryptionFailed => BackendError::DecryptionFailed,
        UnwrapError::Tpm(e) => e.into(),
    }
}

impl RingKeys for ResidentKeys {
    type Key = ResidentKey;
    const NAME: &'static str = NAME;
    const HARDWARE_BACKED: bool = true;

    fn key_id(key: &ResidentKey) -> &Arc<str> {
        &key.key_id
    }

    fn max_plaintext(key: &ResidentKey) -> usize {
        max_plaintext(&key.key_id)
    }

    fn load(
        &self,
        ring: &Keyring,
        entries: &[&KeyEntry],
    ) -> Result<Loaded<ResidentKey>, LoadError> {
        entries
            .iter()
            .map(|e| {
                ResidentKey::decode(&ring.ring_id, e)
                    .map(Ok)
                    .map_err(LoadError::Invalid)
            })
            .collect()
    }

    async fn wrap(
        &self,
        key: &Arc<ResidentKey>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let pt = Zeroizing::new(plaintext.to_vec());
        let k = key.clone();
        Ok(self.worker.call(move |conn| wrap(conn, &k, &pt)).await?)
    }

    fn liveness(&self) -> Result<(), String> {
        self.worker.liveness()
    }

    fn revive(&self) -> usize {
        usize::from(self.worker.revive())
    }

    async fn unwrap(
        &self,
        key: &Arc<ResidentKey>,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        check_ciphertext(ciphertext).map_err(|m| BackendError::Malformed(m.into()))?;
        let (k, ct) = (key.clone(), ciphertext.to_vec());
        self.worker
            // TPM failures go back to the worker as errors, so it can retry
            // when the TPM is momentarily full (another client holds its
            // slots); only the verdicts on the ciphertext come back as values.
            .call(move |conn| match unwrap(conn, &k, &ct) {
                Err(UnwrapError::Tpm(e)) => Err(e),
                verdict => Ok(verdict),
            })
            .await?
            .map_err(map_unwrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tpm::MintOptions;
    use crate::backend::tpm::testing::{Swtpm, make_ring};
    use kms_proto::contract::MAX_CIPHERTEXT;

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
        let b = ResidentBackend::open(
            dir.path(),
            ResidentKeys {
                worker: Worker::spawn(tpm.tcti().parse().unwrap()),
            },
        )
        .unwrap();
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
