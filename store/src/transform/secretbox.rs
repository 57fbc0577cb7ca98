//! The `secretbox` provider: NaCl `crypto_secretbox` (XSalsa20-Poly1305)
//! with a random 24-byte nonce per write, as upstream
//! `k8s.io/apiserver/pkg/storage/value/encrypt/secretbox` (Go's
//! `golang.org/x/crypto/nacl/secretbox`).
//!
//! Stored bytes: `k8s:enc:secretbox:v1:<key name>:` ‖ nonce(24) ‖ tag(16) ‖
//! XSalsa20 ciphertext. 32-byte keys. Secretbox has no additional data, so a
//! value copied under another etcd key opens there too (upstream
//! behaviour); any change to the stored bytes is caught by the tag.

use std::collections::BTreeMap;

use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{AeadInPlace, KeyInit};

use super::aesgcm::check_key_name;
use super::{EnvelopeInfo, Opened, ProviderKind, TransformError, Transformer};
use crate::wipe::Wiped;

/// The provider part of the prefix; the key name and `:` follow.
pub const PREFIX: &str = "k8s:enc:secretbox:v1:";
/// Nonce length.
pub const NONCE_LEN: usize = 24;
/// Tag length (it precedes the ciphertext).
pub const TAG_LEN: usize = 16;
/// Key length.
pub const KEY_LEN: usize = 32;

/// One secretbox key: seals with it, opens values carrying its prefix.
/// The cipher holds the key and wipes it on drop; no `Debug`, no `Clone`.
pub struct SecretboxTransformer {
    name: String,
    prefix: Vec<u8>,
    cipher: Box<XSalsa20Poly1305>,
}

impl SecretboxTransformer {
    /// Builds the transformer for key `name` from its 32 raw bytes. The
    /// bytes are copied into the cipher, which wipes them on drop.
    pub fn new(name: &str, key: &[u8]) -> Result<Self, TransformError> {
        check_key_name(name)?;
        if key.len() != KEY_LEN {
            return Err(TransformError::Config(format!(
                "secretbox key {name:?}: a key must be {KEY_LEN} bytes, got {}",
                key.len()
            )));
        }
        let cipher = XSalsa20Poly1305::new_from_slice(key)
            .map_err(|_| TransformError::Config("secretbox: unusable key".to_owned()))?;
        Ok(SecretboxTransformer {
            name: name.to_owned(),
            prefix: format!("{PREFIX}{name}:").into_bytes(),
            cipher: Box::new(cipher),
        })
    }

    fn body<'a>(&self, stored: &'a [u8], etcd_key: &str) -> Result<&'a [u8], TransformError> {
        let body = stored.strip_prefix(self.prefix.as_slice()).ok_or_else(|| {
            TransformError::Malformed {
                etcd_key: etcd_key.to_owned(),
                reason: format!(
                    "not a secretbox value of key {:?} (prefix mismatch)",
                    self.name
                ),
            }
        })?;
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(TransformError::Malformed {
                etcd_key: etcd_key.to_owned(),
                reason: format!(
                    "secretbox value too short: {} bytes after the prefix, at least {} needed (nonce {NONCE_LEN} + tag {TAG_LEN})",
                    body.len(),
                    NONCE_LEN + TAG_LEN
                ),
            });
        }
        Ok(body)
    }
}

impl Transformer for SecretboxTransformer {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Secretbox
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn seal(&self, plaintext: &[u8], _etcd_key: &str) -> Result<Vec<u8>, TransformError> {
        let nonce: [u8; NONCE_LEN] = crate::rand::array();
        let mut out = Vec::with_capacity(self.prefix.len() + NONCE_LEN + TAG_LEN + plaintext.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&nonce);
        let tag_at = out.len();
        out.extend_from_slice(&[0u8; TAG_LEN]);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached((&nonce).into(), b"", &mut out[tag_at + TAG_LEN..])
            // Only fails with additional data, which we never pass.
            .map_err(|_| TransformError::WriteRefused("secretbox: encryption failed".to_owned()))?;
        out[tag_at..tag_at + TAG_LEN].copy_from_slice(&tag);
        Ok(out)
    }

    fn open(&self, stored: &[u8], etcd_key: &str) -> Result<Opened, TransformError> {
        let body = self.body(stored, etcd_key)?;
        let (nonce, rest) = body.split_at(NONCE_LEN);
        let (tag, ct) = rest.split_at(TAG_LEN);
        let mut buf = Wiped::new(ct.to_vec());
        self.cipher
            .decrypt_in_place_detached(nonce.into(), b"", &mut buf, tag.into())
            .map_err(|_| TransformError::DecryptionFailed {
                etcd_key: etcd_key.to_owned(),
            })?;
        Ok(Opened {
            plaintext: buf,
            stale: false,
        })
    }

    fn inspect(&self, stored: &[u8], etcd_key: &str) -> Result<EnvelopeInfo, TransformError> {
        self.body(stored, etcd_key)?;
        Ok(EnvelopeInfo {
            provider_kind: ProviderKind::Secretbox,
            provider_name: self.name.clone(),
            key_id: None,
            dek_source_type: None,
            annotations: BTreeMap::new(),
            stored_len: stored.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::aesgcm::tests::vector;

    const KEY: &str = "/registry/secrets/default/webhook-hmac";

    fn transformer() -> SecretboxTransformer {
        SecretboxTransformer::new("sb", &[5u8; 32]).unwrap()
    }

    #[test]
    fn opens_upstream_values() {
        for id in ["secretbox-1", "secretbox-2"] {
            let v = vector(id);
            let key = hex::decode(v["key"]["secret_hex"].as_str().unwrap()).unwrap();
            let t = SecretboxTransformer::new(v["key"]["name"].as_str().unwrap(), &key).unwrap();
            let stored = hex::decode(v["stored_hex"].as_str().unwrap()).unwrap();
            let plaintext = hex::decode(v["plaintext_hex"].as_str().unwrap()).unwrap();
            let opened = t.open(&stored, v["etcd_key"].as_str().unwrap()).unwrap();
            assert_eq!(&opened.plaintext[..], &plaintext[..], "{id}");
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let t = transformer();
        for len in [0usize, 1, 63, 64, 65, 5000] {
            let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let sealed = t.seal(&pt, KEY).unwrap();
            assert!(sealed.starts_with(b"k8s:enc:secretbox:v1:sb:"));
            assert_eq!(sealed.len(), t.prefix().len() + NONCE_LEN + TAG_LEN + len);
            let opened = t.open(&sealed, KEY).unwrap();
            assert_eq!(&opened.plaintext[..], &pt[..]);
            // No AAD: opens under any etcd key.
            assert!(t.open(&sealed, "/elsewhere").is_ok());
        }
    }

    #[test]
    fn nonces_differ() {
        let t = transformer();
        assert_ne!(t.seal(b"same", KEY).unwrap(), t.seal(b"same", KEY).unwrap());
    }

    #[test]
    fn any_flipped_byte_fails() {
        let t = transformer();
        let sealed = t.seal(b"0123456789abcdef", KEY).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x80;
            assert!(t.open(&bad, KEY).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn wrong_key_fails_opaquely() {
        let other = SecretboxTransformer::new("sb", &[6u8; 32]).unwrap();
        let sealed = transformer().seal(b"x", KEY).unwrap();
        assert!(matches!(
            other.open(&sealed, KEY).unwrap_err(),
            TransformError::DecryptionFailed { .. }
        ));
    }

    #[test]
    fn short_values_are_malformed_and_bad_keys_refused() {
        let t = transformer();
        let mut v = t.prefix().to_vec();
        v.extend([0u8; NONCE_LEN + TAG_LEN - 1]);
        assert!(matches!(
            t.open(&v, KEY).unwrap_err(),
            TransformError::Malformed { .. }
        ));
        for n in [0usize, 16, 24, 31, 33] {
            assert!(SecretboxTransformer::new("k", &vec![0u8; n]).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let t = transformer();
            let mut stored = t.prefix().to_vec();
            stored.extend_from_slice(&body);
            proptest::prop_assert!(t.open(&stored, KEY).is_err());
            let _ = t.open(&body, KEY);
            let _ = t.inspect(&body, KEY);
        }
    }
}
