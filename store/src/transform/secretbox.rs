//! The `secretbox` provider: NaCl `crypto_secretbox` (XSalsa20-Poly1305)
//! with a random 24-byte nonce per write, as upstream
//! `k8s.io/apiserver/pkg/storage/value/encrypt/secretbox` (Go's
//! `golang.org/x/crypto/nacl/secretbox`).
//!
//! Stored bytes: `k8s:enc:secretbox:v1:<key name>:` ‖ nonce(24) ‖ tag(16) ‖
//! XSalsa20 ciphertext. 32-byte keys. Secretbox has no additional data, so a
//! value copied under another etcd key opens there too (upstream
//! behaviour); any change to the stored bytes is caught by the tag.

use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{AeadInPlace, KeyInit};

use super::local::{LocalCipher, LocalTransformer};
use super::{ProviderKind, TransformError};
use crate::wipe::Wiped;

/// Nonce length.
pub const NONCE_LEN: usize = 24;
/// Tag length (it precedes the ciphertext).
pub const TAG_LEN: usize = 16;
/// Key length.
pub const KEY_LEN: usize = 32;

/// One secretbox key: seals with it, opens values carrying its prefix.
pub type SecretboxTransformer = LocalTransformer<Secretbox>;

/// The secretbox cipher: it holds the key and wipes it on drop; no
/// `Debug`, no `Clone`.
pub struct Secretbox(Box<XSalsa20Poly1305>);

impl LocalCipher for Secretbox {
    const KIND: ProviderKind = ProviderKind::Secretbox;
    const VALUE: &'static str = "a secretbox value";
    const KEY_SIZES: &'static [usize] = &[KEY_LEN];

    fn new(key: &[u8]) -> Result<Self, TransformError> {
        let cipher = XSalsa20Poly1305::new_from_slice(key)
            .map_err(|_| TransformError::Config("secretbox: unusable key".to_owned()))?;
        Ok(Secretbox(Box::new(cipher)))
    }

    fn check_body(body: &[u8]) -> Result<(), String> {
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(format!(
                "secretbox value too short: {} bytes after the prefix, at least {} needed (nonce {NONCE_LEN} + tag {TAG_LEN})",
                body.len(),
                NONCE_LEN + TAG_LEN
            ));
        }
        Ok(())
    }

    fn sealed_len(len: usize) -> usize {
        NONCE_LEN + TAG_LEN + len
    }

    /// No additional data: `aad` is not used (upstream behaviour).
    fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        _aad: &[u8],
    ) -> Result<(), TransformError> {
        let nonce: [u8; NONCE_LEN] = crate::rand::array();
        out.extend_from_slice(&nonce);
        let tag_at = out.len();
        out.extend_from_slice(&[0u8; TAG_LEN]);
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .encrypt_in_place_detached((&nonce).into(), b"", &mut out[tag_at + TAG_LEN..])
            // Only fails with additional data, which we never pass.
            .map_err(|_| TransformError::WriteRefused("secretbox: encryption failed".to_owned()))?;
        out[tag_at..tag_at + TAG_LEN].copy_from_slice(&tag);
        Ok(())
    }

    fn open_body(&self, body: &[u8], _aad: &[u8]) -> Option<Wiped<Vec<u8>>> {
        let (nonce, rest) = body.split_at(NONCE_LEN);
        let (tag, ct) = rest.split_at(TAG_LEN);
        let mut buf = Wiped::new(ct.to_vec());
        self.0
            .decrypt_in_place_detached(nonce.into(), b"", &mut buf, tag.into())
            .ok()?;
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::Transformer;
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
