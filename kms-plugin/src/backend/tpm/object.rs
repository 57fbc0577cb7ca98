//! TPM objects as the key ring stores them: the public area (marshalled
//! `TPMT_PUBLIC`) and the private area (the `TPM2B_PRIVATE` buffer,
//! encrypted by the TPM under its parent, the storage primary). Neither is
//! secret on its own: the private blob only loads into the TPM that made it
//! (or one it was duplicated to), under the same storage key.
//!
//! An object's TPM *name* is its name algorithm followed by the hash of its
//! public area. It commits to the object's attributes, its policy and (for
//! keyed-hash and symmetric objects) a hash of its secret with a random
//! seed, so it identifies the key without revealing it; key_ids are derived
//! from names.

use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::{Marshall, UnMarshall};

use super::TpmError;
use crate::keyring::Material;

/// The public and private area of one TPM object.
#[derive(Clone)]
pub struct ObjectBlob {
    /// The public area.
    pub public: Public,
    /// The private area, encrypted under the parent.
    pub private: Private,
}

impl std::fmt::Debug for ObjectBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectBlob { <redacted> }")
    }
}

/// The name algorithm tag of SHA-256 (`TPM_ALG_SHA256`).
const ALG_SHA256: [u8; 2] = [0x00, 0x0B];

/// Marshals a public area.
pub fn public_bytes(public: &Public) -> Result<Vec<u8>, TpmError> {
    public
        .marshall()
        .map_err(|e| TpmError::Invalid(format!("cannot marshal a public area: {e}")))
}

/// Unmarshals a public area.
pub fn public_from_bytes(bytes: &[u8]) -> Result<Public, TpmError> {
    Public::unmarshall(bytes).map_err(|e| TpmError::Invalid(format!("not a TPM public area: {e}")))
}

/// The TPM name of a public area with name algorithm SHA-256.
pub fn name(public: &Public) -> Result<Vec<u8>, TpmError> {
    if public.name_hashing_algorithm()
        != tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256
    {
        return Err(TpmError::Invalid(
            "object name algorithm is not SHA-256".into(),
        ));
    }
    let bytes = public_bytes(public)?;
    let mut n = ALG_SHA256.to_vec();
    n.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    Ok(n)
}

impl ObjectBlob {
    /// Reads the object stored under `prefix` (`public`/`private`, or
    /// `<prefix>.public`/`<prefix>.private`).
    pub fn from_material(m: &Material, prefix: &str) -> Result<Self, TpmError> {
        let field = |f: &str| {
            if prefix.is_empty() {
                f.to_string()
            } else {
                format!("{prefix}.{f}")
            }
        };
        let public = m.get(&field("public")).map_err(TpmError::Invalid)?;
        let private = m.get(&field("private")).map_err(TpmError::Invalid)?;
        Ok(ObjectBlob {
            public: public_from_bytes(&public)?,
            private: Private::try_from(private.to_vec())
                .map_err(|e| TpmError::Invalid(format!("not a TPM private area: {e}")))?,
        })
    }

    /// Stores the object under `prefix` (see [`ObjectBlob::from_material`]).
    pub fn to_material(&self, m: &mut Material, prefix: &str) -> Result<(), TpmError> {
        let field = |f: &str| {
            if prefix.is_empty() {
                f.to_string()
            } else {
                format!("{prefix}.{f}")
            }
        };
        m.insert(&field("public"), &public_bytes(&self.public)?);
        m.insert(&field("private"), self.private.value());
        Ok(())
    }

    /// The object's TPM name.
    pub fn name(&self) -> Result<Vec<u8>, TpmError> {
        name(&self.public)
    }

    /// Whether the object may leave this TPM (fixedTPM and fixedParent clear).
    pub fn is_duplicable(&self) -> bool {
        let a = self.public.object_attributes();
        !a.fixed_tpm() && !a.fixed_parent()
    }
}
