//! A KEK held in locked process memory (the software backend's keys, and
//! the tpm-sealed backend's once unsealed): wraps and unwraps with
//! [`crate::wire`], bound to its key_id.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::BackendError;
use crate::secret::SecretKey;
use crate::wire::{self, Algorithm};

/// A KEK ready for use.
pub(crate) struct MemoryKey {
    /// Its key_id.
    pub key_id: Arc<str>,
    /// Its AEAD.
    pub alg: Algorithm,
    /// The key.
    pub key: SecretKey,
}

impl MemoryKey {
    /// Largest plaintext one Encrypt takes.
    pub(crate) fn max_plaintext(&self) -> usize {
        self.alg.max_plaintext()
    }

    /// Wraps `plaintext`.
    pub(crate) fn wrap(&self, plaintext: &[u8]) -> Result<Vec<u8>, BackendError> {
        Ok(wire::seal(self.alg, &self.key, &self.key_id, plaintext)?)
    }

    /// Unwraps `ciphertext`.
    pub(crate) fn unwrap(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        Ok(wire::open(self.alg, &self.key, &self.key_id, ciphertext)?)
    }
}

/// The in-memory AEAD a new key of a software or TPM-sealed ring uses.
pub(crate) fn algorithm_for_mint(algorithm: &str) -> Result<Algorithm, BackendError> {
    Algorithm::from_name(algorithm).ok_or_else(|| {
        let names: Vec<_> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        BackendError::Config(format!(
            "unknown algorithm {algorithm:?}; choose one of {}",
            names.join(", ")
        ))
    })
}

/// The algorithm names a memory key can have, default first.
pub(crate) fn algorithm_names() -> Vec<&'static str> {
    Algorithm::ALL.iter().map(|a| a.name()).collect()
}
