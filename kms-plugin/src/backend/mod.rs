//! The key backend seam: who holds the KEK and performs wrap/unwrap.
//!
//! - [`KeyBackend`]: what the gRPC service calls (Encrypt, Decrypt, the
//!   active key, reloads, the health self-test);
//! - [`KeyMinter`]: what the `key` commands call to create keys;
//! - `registry`: the one table of backends (name, options, constructors);
//! - `ring`: the generic backend over a key ring file, so a backend whose
//!   keys live in the ring only says how to load a key and how to wrap and
//!   unwrap with it (`RingKeys`), and gets reloads, key lookup, retirement
//!   and the self-test for free;
//! - `memory`: a KEK held in locked memory, wrapping with [`crate::wire`];
//! - `software`: KEKs in the ring file;
//! - `tpm`: `tpm-sealed` / `tpm-resident`, KEKs sealed in, or resident in,
//!   a TPM 2.0;
//! - `pkcs11`: KEKs generated in a PKCS#11 token (an HSM);
//! - `transit`: a key of an OpenBao/Vault Transit engine (no key ring).

mod memory;
pub(crate) mod options;
pub(crate) mod pkcs11;
pub(crate) mod registry;
pub(crate) mod ring;
pub(crate) mod software;
pub(crate) mod tpm;
pub mod transit;

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::keyring::{KeyringError, Material};

/// A wrapped plaintext and the key that wrapped it.
#[derive(Debug)]
pub struct Wrapped {
    /// The key_id of the KEK used (the active one at the time).
    pub key_id: Arc<str>,
    /// The ciphertext, at most 1024 bytes.
    pub ciphertext: Vec<u8>,
}

/// What a refresh found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// The active key_id after the refresh.
    pub active: Arc<str>,
    /// Whether the key material changed (a rotation or retirement).
    pub changed: bool,
}

/// The public facts of the ring a backend serves, for metrics and alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingInfo {
    /// The ring fingerprint: equal on every node that holds the same keys
    /// in the same states.
    pub fingerprint: String,
    /// How many keys are staged (added, not yet activated).
    pub staged: usize,
}

/// Who is at fault when a backend call fails: what the gRPC code, the log
/// level and the error metric follow from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request: an unknown or retired key_id, a ciphertext that does not
    /// authenticate or parse, a plaintext too large. Not a backend failure.
    Request,
    /// The backend cannot serve right now (TPM gone, token removed, server
    /// unreachable); the caller may retry.
    Unavailable,
    /// The key service refuses this plugin the operation (a policy, a
    /// revoked token): an operator must grant it; retrying will not help.
    Denied,
    /// Anything else: a bug, a broken ring, a refused device command.
    Internal,
}

/// Why a backend operation failed. Messages never contain key material or
/// plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No key with this key_id was ever in the ring.
    #[error("unknown key_id {0:?}")]
    UnknownKeyId(String),
    /// The key existed but was retired; its material is destroyed.
    #[error("key_id {0:?} was retired; its material is destroyed")]
    Retired(String),
    /// Authentication failed: wrong key, tampered or foreign ciphertext.
    #[error("decryption failed")]
    DecryptionFailed,
    /// The ciphertext is not one this plugin wrote.
    #[error("malformed ciphertext: {0}")]
    Malformed(String),
    /// The plaintext does not fit in the ciphertext limit.
    #[error("plaintext is {len} bytes; at most {max} bytes fit in the 1024-byte ciphertext limit")]
    TooLarge {
        /// Plaintext length.
        len: usize,
        /// Largest that fits.
        max: usize,
    },
    /// The backend cannot be reached right now, and why.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The key service refused the operation (its policy, the credential),
    /// and why.
    #[error("permission denied by the key service: {0}")]
    Denied(String),
    /// The TPM failed (its error says whether it is reachable).
    #[error(transparent)]
    Tpm(#[from] tpm::TpmError),
    /// A call to OpenBao/Vault Transit failed (its error names the cause).
    #[error(transparent)]
    Transit(#[from] transit::TransitError),
    /// The key ring cannot be used.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// An option of the backend is missing or not valid.
    #[error("{0}")]
    Config(String),
    /// The OS random number generator failed.
    #[error("the OS random number generator failed")]
    Rng(#[source] getrandom::Error),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl BackendError {
    /// Who is at fault: the one classification `to_status`, the logs and
    /// the error metric all follow.
    pub fn fault(&self) -> Fault {
        match self {
            BackendError::UnknownKeyId(_)
            | BackendError::Retired(_)
            | BackendError::DecryptionFailed
            | BackendError::Malformed(_)
            | BackendError::TooLarge { .. } => Fault::Request,
            BackendError::Unavailable(_) => Fault::Unavailable,
            BackendError::Denied(_) => Fault::Denied,
            BackendError::Tpm(e) if e.is_unavailable() => Fault::Unavailable,
            BackendError::Transit(e) => e.fault(),
            BackendError::Tpm(_)
            | BackendError::Keyring(_)
            | BackendError::Config(_)
            | BackendError::Rng(_)
            | BackendError::Internal(_) => Fault::Internal,
        }
    }
}

impl From<crate::wire::WireError> for BackendError {
    fn from(e: crate::wire::WireError) -> Self {
        use crate::wire::WireError;
        match e {
            WireError::DecryptionFailed => BackendError::DecryptionFailed,
            WireError::Malformed(m) => BackendError::Malformed(m.to_string()),
            WireError::TooLarge { len, max } => BackendError::TooLarge { len, max },
            WireError::Rng(e) => BackendError::Rng(e),
        }
    }
}

/// The labels of `kms_plugin_backend_calls_total`: one call a backend sent
/// to the service that holds its keys, and how it went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ServiceCallLabels {
    /// The call (`encrypt`, `decrypt`, `key`, `health`, `login`, ...).
    pub op: &'static str,
    /// `ok`, `refused` (4xx), `failed` (5xx) or `unreachable`.
    pub outcome: &'static str,
}

/// The counters of a backend's calls to its service.
pub type ServiceCalls = prometheus_client::metrics::family::Family<
    ServiceCallLabels,
    prometheus_client::metrics::counter::Counter,
>;

/// The runtime side of a backend, used by the gRPC service.
#[async_trait::async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    /// `software`, `tpm-sealed`, `tpm-resident`.
    fn kind(&self) -> &'static str;

    /// Whether keys are protected by hardware (a TPM) rather than by file
    /// permissions alone.
    fn is_hardware_backed(&self) -> bool;

    /// The key_id new Encrypts use.
    fn active_key_id(&self) -> Result<Arc<str>, BackendError>;

    /// Largest plaintext Encrypt accepts with the active key.
    fn max_plaintext(&self) -> usize;

    /// Wraps `plaintext` with the active KEK.
    async fn encrypt(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError>;

    /// Unwraps `ciphertext` with the KEK named `key_id`.
    async fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError>;

    /// Picks up key ring changes (rotation, retirement) made by `key`
    /// commands while serving.
    async fn refresh(&self) -> Result<Refresh, BackendError>;

    /// The ring's fingerprint and staged keys, for a backend that serves a
    /// key ring (`None` for one whose keys live elsewhere).
    fn ring_info(&self) -> Option<RingInfo> {
        None
    }

    /// Whether the backend's own threads are alive (`/livez`): a worker
    /// that died cannot serve, whatever the device says. `Err` says why.
    fn liveness(&self) -> Result<(), String> {
        Ok(())
    }

    /// The calls it sends to the service holding its keys, counted, for a
    /// backend that talks to one (`None` for the others).
    fn service_calls(&self) -> Option<ServiceCalls> {
        None
    }

    /// Starts again whatever [`KeyBackend::liveness`] found dead; returns
    /// how many threads it started.
    fn revive(&self) -> usize {
        0
    }

    /// A live end-to-end check: wraps and unwraps a random value.
    async fn self_test(&self) -> Result<(), BackendError> {
        round_trip(self).await
    }
}

/// Short hex of a hash over `parts`, for key_ids: 12 hex digits (48 bits)
/// of SHA-256 over the length-prefixed parts. Uniqueness comes from the
/// ring id and version; this part ties the key_id to exactly one key (a TPM
/// object's name, a token object's check value).
pub(crate) fn key_id_hash(parts: &[&[u8]]) -> String {
    let mut ctx = ::ring::digest::Context::new(&::ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u32).to_be_bytes());
        ctx.update(p);
    }
    hex::encode(&ctx.finish().as_ref()[..6])
}

/// Wraps a random value with the active key and unwraps it again.
pub(crate) async fn round_trip<B: KeyBackend + ?Sized>(b: &B) -> Result<(), BackendError> {
    let mut probe = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut probe[..]).map_err(BackendError::Rng)?;
    let w = b.encrypt(&probe[..]).await?;
    let back = b.decrypt(&w.key_id, &w.ciphertext).await?;
    if back[..] != probe[..] {
        return Err(BackendError::Internal(
            "self-test: unwrap did not return what was wrapped".into(),
        ));
    }
    Ok(())
}

/// A newly created key: its public key_id and the material to store.
pub struct MintedKey {
    /// The key_id, derived from non-secret facts.
    pub key_id: String,
    /// The algorithm name recorded in the ring.
    pub algorithm: String,
    /// What the ring stores for it.
    pub material: Material,
}

/// The key-management side of a backend, used by `kms-plugin key ...`.
pub trait KeyMinter {
    /// The backend name recorded in the ring.
    fn backend(&self) -> &'static str;
    /// The algorithms this backend can create, default first.
    fn algorithms(&self) -> Vec<&'static str>;
    /// Creates key `version` of ring `ring_id`.
    fn mint(&self, ring_id: &str, version: u64, algorithm: &str)
    -> Result<MintedKey, BackendError>;
}
