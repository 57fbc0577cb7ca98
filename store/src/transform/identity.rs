//! The identity "transformer": values are stored as they are.
//!
//! As upstream's `identity.NewEncryptCheckTransformer`, it refuses to read a
//! value that starts with `k8s:enc:`: such a value was written by an
//! encrypting provider, and handing its ciphertext out as an object would be
//! wrong. In a chain, identity therefore only ever opens unencrypted values
//! (its [`matches`](Transformer::matches) says no to `k8s:enc:` values), which
//! lets a configuration list identity first while migrating away from
//! encryption.
//!
//! Writing plaintext is allowed here; refusing it unless explicitly allowed
//! is the chain's job ([`TransformerChain`](super::chain::TransformerChain)).

use super::{ENCRYPTED_PREFIX, EnvelopeInfo, Opened, ProviderKind, TransformError, Transformer};
use crate::wipe::Wiped;

/// Stores values unencrypted; refuses to open encrypted ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityTransformer;

impl IdentityTransformer {
    /// The identity transformer.
    pub fn new() -> Self {
        IdentityTransformer
    }

    fn refuse_encrypted(stored: &[u8], etcd_key: &str) -> Result<(), TransformError> {
        if stored.starts_with(ENCRYPTED_PREFIX) {
            return Err(TransformError::Malformed {
                etcd_key: etcd_key.to_owned(),
                reason: "the value is encrypted (it starts with \"k8s:enc:\") but the identity provider was asked to read it; configure the provider that wrote it".to_owned(),
            });
        }
        Ok(())
    }
}

impl Transformer for IdentityTransformer {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Identity
    }

    fn name(&self) -> &str {
        ""
    }

    fn prefix(&self) -> &[u8] {
        b""
    }

    fn matches(&self, stored: &[u8]) -> bool {
        !stored.starts_with(ENCRYPTED_PREFIX)
    }

    fn seal(&self, plaintext: &[u8], _etcd_key: &str) -> Result<Vec<u8>, TransformError> {
        Ok(plaintext.to_vec())
    }

    fn open(&self, stored: &[u8], etcd_key: &str) -> Result<Opened, TransformError> {
        Self::refuse_encrypted(stored, etcd_key)?;
        Ok(Opened {
            plaintext: Wiped::new(stored.to_vec()),
            stale: false,
        })
    }

    fn inspect(&self, stored: &[u8], etcd_key: &str) -> Result<EnvelopeInfo, TransformError> {
        Self::refuse_encrypted(stored, etcd_key)?;
        Ok(EnvelopeInfo::from_prefix(
            ProviderKind::Identity,
            String::new(),
            stored.len(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/registry/secrets/default/plain";

    #[test]
    fn round_trip_is_the_identity() {
        let t = IdentityTransformer::new();
        let stored = t.seal(b"{\"kind\":\"Secret\"}", KEY).unwrap();
        assert_eq!(stored, b"{\"kind\":\"Secret\"}");
        let opened = t.open(&stored, KEY).unwrap();
        assert_eq!(&opened.plaintext[..], b"{\"kind\":\"Secret\"}");
        assert!(!opened.stale);
        // No AAD: any etcd key reads it.
        assert!(t.open(&stored, "/registry/secrets/default/other").is_ok());
        assert!(t.prefix().is_empty());
        assert_eq!(t.kind(), ProviderKind::Identity);
    }

    #[test]
    fn refuses_encrypted_values() {
        let t = IdentityTransformer::new();
        let value = b"k8s:enc:aesgcm:v1:key1:\x00\x01";
        assert!(!t.matches(value));
        assert!(t.matches(b"k8s\x00protobuf"));
        assert!(t.matches(b""));
        assert!(t.matches(b"k8s:en"));
        let err = t.open(value, KEY).unwrap_err();
        assert!(matches!(err, TransformError::Malformed { .. }), "{err:?}");
        assert!(err.to_string().contains("k8s:enc:"));
        assert!(t.inspect(value, KEY).is_err());
    }

    #[test]
    fn inspect_reports_length() {
        let info = IdentityTransformer::new().inspect(b"abc", KEY).unwrap();
        assert_eq!(info.provider_kind, ProviderKind::Identity);
        assert_eq!(info.stored_len, 3);
        assert!(info.provider_name.is_empty());
    }
}
