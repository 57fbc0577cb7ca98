//! The key backend seam: who holds the KEK and performs wrap/unwrap.
//!
//! - [`software`]: KEKs in a key ring file, unwrapped into locked memory.
//! - [`tpm`]: `tpm-sealed` / `tpm-resident`: KEKs sealed in, or resident in,
//!   a TPM 2.0.
//!
//! A backend serves the gRPC service ([`KeyBackend`]) and creates keys for the
//! `key` commands ([`KeyMinter`]).

pub mod software;
pub mod tpm;

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
    #[error("{0}")]
    Malformed(String),
    /// The plaintext does not fit in the ciphertext limit.
    #[error("plaintext is {len} bytes; at most {max} bytes fit in the 1024-byte ciphertext limit")]
    TooLarge {
        /// Plaintext length.
        len: usize,
        /// Largest that fits.
        max: usize,
    },
    /// The backend cannot be reached right now (e.g. the TPM is gone).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The key ring cannot be used.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::wire::WireError> for BackendError {
    fn from(e: crate::wire::WireError) -> Self {
        use crate::wire::WireError;
        match e {
            WireError::DecryptionFailed => BackendError::DecryptionFailed,
            WireError::Malformed(m) => {
                BackendError::Malformed(format!("malformed ciphertext: {m}"))
            }
            WireError::TooLarge { len, max } => BackendError::TooLarge { len, max },
            WireError::Rng => {
                BackendError::Internal("the OS random number generator failed".into())
            }
        }
    }
}

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

    /// A live end-to-end check: wraps and unwraps a random value.
    async fn self_test(&self) -> Result<(), BackendError> {
        let mut probe = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut probe[..])
            .map_err(|_| BackendError::Internal("the OS random number generator failed".into()))?;
        let w = self.encrypt(&probe[..]).await?;
        let back = self.decrypt(&w.key_id, &w.ciphertext).await?;
        if back[..] != probe[..] {
            return Err(BackendError::Internal(
                "self-test: unwrap did not return what was wrapped".into(),
            ));
        }
        Ok(())
    }
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

/// The in-memory AEAD a new key of a software or TPM-sealed ring uses.
pub(crate) fn aead_for_mint(algorithm: &str) -> Result<crate::wire::Algorithm, BackendError> {
    use crate::wire::Algorithm;
    Algorithm::from_name(algorithm).ok_or_else(|| {
        let names: Vec<_> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        BackendError::Internal(format!(
            "unknown algorithm {algorithm:?}; choose one of {}",
            names.join(", ")
        ))
    })
}

/// Opens the backend `serve` was configured with.
pub fn open(cfg: &crate::daemon::config::ServeConfig) -> Result<Arc<dyn KeyBackend>, BackendError> {
    use crate::daemon::config::BackendKind;
    match cfg.backend {
        BackendKind::Software => Ok(Arc::new(software::SoftwareBackend::open(&cfg.keyring)?)),
        kind @ (BackendKind::TpmSealed | BackendKind::TpmResident) => {
            let tcti = cfg.tcti.as_deref().ok_or_else(|| {
                BackendError::Internal(format!(
                    "tcti is required with backend={} (e.g. --tcti device:/dev/tpmrm0, or set TCTI)",
                    kind.name()
                ))
            })?;
            tpm::open(kind, &cfg.keyring, tcti)
        }
    }
}

/// How the `key` commands create keys: where the TPM is, and the TPM
/// options (ignored by, and refused with, the software backend).
#[derive(Clone, Debug, Default)]
pub struct MinterConfig {
    /// TPM transport.
    pub tcti: Option<String>,
    /// TPM key options.
    pub tpm: tpm::MintOptions,
}

/// The minter for a ring of `backend` (the ring's own backend name).
pub fn minter(backend: &str, cfg: &MinterConfig) -> Result<Box<dyn KeyMinter>, BackendError> {
    match backend {
        software::NAME => {
            if cfg.tpm.pcrs.is_some() || cfg.tpm.shareable {
                return Err(BackendError::Internal(
                    "--pcrs and --shareable apply to the TPM backends only".into(),
                ));
            }
            Ok(Box::new(software::SoftwareMinter))
        }
        tpm::sealed::NAME | tpm::resident::NAME => {
            tpm::minter(backend, cfg.tcti.as_deref(), cfg.tpm.clone())
        }
        other => Err(BackendError::Internal(format!(
            "backend {other:?} is not known: choose software, tpm-sealed or tpm-resident"
        ))),
    }
}
