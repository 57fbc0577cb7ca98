//! The `aesgcm` provider: AES-GCM with a random 96-bit nonce per write and
//! the etcd key as additional authenticated data, as upstream
//! `k8s.io/apiserver/pkg/storage/value/encrypt/aes` (`NewGCMTransformer`).
//!
//! Stored bytes: `k8s:enc:aesgcm:v1:<key name>:` ‖ nonce(12) ‖ ciphertext ‖
//! tag(16). Keys of 16, 24 or 32 bytes (AES-128, -192, -256).
//!
//! AES-128 and AES-256 run on `ring` (fast); AES-192, which `ring` lacks,
//! on RustCrypto `aes-gcm`. The cipher key is expanded once, at
//! construction. With random nonces a key should be rotated long before
//! 2^32 writes; the upstream documentation says every 200,000 writes.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::local::{LocalCipher, LocalTransformer};
use super::{ProviderKind, TransformError};
use crate::wipe::{Wipe, Wiped};

/// Nonce length.
pub const NONCE_LEN: usize = 12;
/// Tag length.
pub const TAG_LEN: usize = 16;

type Aes192Gcm = aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;

/// One aesgcm key: seals with it, opens values carrying its prefix.
pub type AesGcmTransformer = LocalTransformer<AesGcm>;

/// The expanded aesgcm key. No `Debug`, no `Clone`. The RustCrypto cipher
/// wipes its round keys on drop; `ring` does not wipe its key schedule (a
/// known `ring` limitation), so that one lives in a box that is never moved.
pub struct AesGcm(GcmKey);

enum GcmKey {
    Ring(Box<LessSafeKey>),
    Aes192(Box<Aes192Gcm>),
}

fn unusable<E>(_: E) -> TransformError {
    TransformError::Config("aesgcm: unusable key".to_owned())
}

impl LocalCipher for AesGcm {
    const KIND: ProviderKind = ProviderKind::AesGcm;
    const VALUE: &'static str = "an aesgcm value";
    const KEY_SIZES: &'static [usize] = &[16, 24, 32];

    fn new(key: &[u8]) -> Result<Self, TransformError> {
        Ok(AesGcm(if key.len() == 24 {
            GcmKey::Aes192(Box::new(Aes192Gcm::new_from_slice(key).map_err(unusable)?))
        } else {
            let alg = if key.len() == 16 {
                &AES_128_GCM
            } else {
                &AES_256_GCM
            };
            let unbound = UnboundKey::new(alg, key).map_err(unusable)?;
            GcmKey::Ring(Box::new(LessSafeKey::new(unbound)))
        }))
    }

    fn check_body(body: &[u8]) -> Result<(), String> {
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(format!(
                "aesgcm value too short: {} bytes after the prefix, at least {} needed (nonce {NONCE_LEN} + tag {TAG_LEN})",
                body.len(),
                NONCE_LEN + TAG_LEN
            ));
        }
        Ok(())
    }

    fn sealed_len(len: usize) -> usize {
        NONCE_LEN + len + TAG_LEN
    }

    fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), TransformError> {
        let nonce: [u8; NONCE_LEN] = crate::rand::array();
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag: Result<[u8; TAG_LEN], ()> = match &self.0 {
            GcmKey::Ring(k) => k
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut out[start..],
                )
                .map(|t| {
                    let mut a = [0u8; TAG_LEN];
                    a.copy_from_slice(t.as_ref());
                    a
                })
                .map_err(|_| ()),
            GcmKey::Aes192(c) => c
                .encrypt_in_place_detached((&nonce).into(), aad, &mut out[start..])
                .map(|t| t.into())
                .map_err(|_| ()),
        };
        match tag {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(()) => {
                // Only a plaintext beyond GCM's limit (~64 GiB) gets here;
                // the buffer may still hold plaintext: wipe it.
                out.wipe();
                Err(TransformError::WriteRefused(
                    "aesgcm: the value is too large for AES-GCM".to_owned(),
                ))
            }
        }
    }

    fn open_body(&self, body: &[u8], aad: &[u8]) -> Option<Wiped<Vec<u8>>> {
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let mut nonce_arr = [0u8; NONCE_LEN];
        nonce_arr.copy_from_slice(nonce);
        match &self.0 {
            GcmKey::Ring(k) => {
                let mut buf = Wiped::new(sealed.to_vec());
                let len = k
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce_arr),
                        Aad::from(aad),
                        &mut buf,
                    )
                    .ok()?
                    .len();
                buf.truncate(len);
                Some(buf)
            }
            GcmKey::Aes192(c) => {
                let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
                let mut buf = Wiped::new(ct.to_vec());
                c.decrypt_in_place_detached((&nonce_arr).into(), aad, &mut buf, tag.into())
                    .ok()?;
                Some(buf)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::transform::Transformer;

    const KEY: &str = "/registry/secrets/default/api-token";

    fn transformers() -> Vec<AesGcmTransformer> {
        [16usize, 24, 32]
            .iter()
            .map(|n| AesGcmTransformer::new("k1", &vec![7u8; *n]).unwrap())
            .collect()
    }

    /// A known-answer vector written by kube-apiserver.
    pub(crate) fn vector(id: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/vectors/kube-apiserver-at-rest.json"
        ))
        .unwrap();
        let all: serde_json::Value = serde_json::from_str(&text).unwrap();
        all["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == id)
            .unwrap()
            .clone()
    }

    fn hex_field(v: &serde_json::Value, field: &str) -> Vec<u8> {
        hex::decode(v[field].as_str().unwrap()).unwrap()
    }

    #[test]
    fn opens_upstream_values() {
        for id in ["aesgcm-256", "aesgcm-128-two-keys"] {
            let v = vector(id);
            let key = hex::decode(v["key"]["secret_hex"].as_str().unwrap()).unwrap();
            let t = AesGcmTransformer::new(v["key"]["name"].as_str().unwrap(), &key).unwrap();
            let etcd_key = v["etcd_key"].as_str().unwrap();
            let opened = t.open(&hex_field(&v, "stored_hex"), etcd_key).unwrap();
            assert_eq!(
                &opened.plaintext[..],
                &hex_field(&v, "plaintext_hex")[..],
                "{id}"
            );
        }
    }

    /// AES-192-GCM has no upstream vector; this one is from an independent
    /// implementation (Python `cryptography`), and the GCM spec's test
    /// case 8 (zero key, zero nonce, 16 zero bytes).
    #[test]
    fn aes192_known_answers() {
        let t = AesGcmTransformer::new("k", &(0u8..24).collect::<Vec<_>>()).unwrap();
        let etcd_key = "/registry/secrets/default/x";
        let mut stored = b"k8s:enc:aesgcm:v1:k:".to_vec();
        stored.extend((0u8..12).collect::<Vec<_>>());
        stored.extend(hex::decode("8e9c4ef7f6f6caf17f4c5567b72253040f5cb73fda").unwrap());
        assert_eq!(&t.open(&stored, etcd_key).unwrap().plaintext[..], b"hello");

        let t = AesGcmTransformer::new("k", &[0u8; 24]).unwrap();
        let mut stored = b"k8s:enc:aesgcm:v1:k:".to_vec();
        stored.extend([0u8; 12]);
        stored.extend(
            hex::decode("98e7247c07f0fe411c267e4384b0f6002ff58d80033927ab8ef4d4587514f0fb")
                .unwrap(),
        );
        assert_eq!(&t.open(&stored, "").unwrap().plaintext[..], &[0u8; 16]);
    }

    #[test]
    fn round_trip_and_layout_for_every_key_size() {
        for t in transformers() {
            for len in [0usize, 1, 15, 16, 17, 1000] {
                let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let sealed = t.seal(&pt, KEY).unwrap();
                assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
                assert_eq!(sealed.len(), t.prefix().len() + NONCE_LEN + len + TAG_LEN);
                let opened = t.open(&sealed, KEY).unwrap();
                assert_eq!(&opened.plaintext[..], &pt[..]);
                assert!(!opened.stale);
            }
        }
    }

    #[test]
    fn nonces_differ() {
        let t = &transformers()[2];
        let a = t.seal(b"same", KEY).unwrap();
        let b = t.seal(b"same", KEY).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn etcd_key_is_authenticated() {
        for t in transformers() {
            let sealed = t.seal(b"secret", KEY).unwrap();
            let err = t
                .open(&sealed, "/registry/secrets/default/copy")
                .unwrap_err();
            assert!(
                matches!(err, TransformError::DecryptionFailed { .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn any_flipped_byte_fails() {
        for t in transformers() {
            let sealed = t.seal(b"0123456789", KEY).unwrap();
            for i in 0..sealed.len() {
                let mut bad = sealed.clone();
                bad[i] ^= 0x01;
                assert!(
                    t.open(&bad, KEY).is_err(),
                    "flip at {i} (key bits {})",
                    t.key_bits()
                );
            }
        }
    }

    #[test]
    fn wrong_key_fails() {
        let a = AesGcmTransformer::new("k1", &[1u8; 32]).unwrap();
        let b = AesGcmTransformer::new("k1", &[2u8; 32]).unwrap();
        let sealed = a.seal(b"x", KEY).unwrap();
        assert!(matches!(
            b.open(&sealed, KEY).unwrap_err(),
            TransformError::DecryptionFailed { .. }
        ));
    }

    #[test]
    fn short_and_foreign_values_are_malformed() {
        let t = &transformers()[0];
        let mut short = t.prefix().to_vec();
        short.extend_from_slice(&[0u8; NONCE_LEN + TAG_LEN - 1]);
        let err = t.open(&short, KEY).unwrap_err();
        assert!(matches!(err, TransformError::Malformed { .. }), "{err:?}");
        assert!(err.to_string().contains("too short"));
        let err = t
            .open(b"k8s:enc:aesgcm:v1:other:0123456789012345678901234567", KEY)
            .unwrap_err();
        assert!(matches!(err, TransformError::Malformed { .. }));
        assert!(t.inspect(&short, KEY).is_err());
    }

    #[test]
    fn bad_keys_and_names_are_refused() {
        for n in [0usize, 8, 31, 33] {
            assert!(AesGcmTransformer::new("k", &vec![0u8; n]).is_err());
        }
        assert!(AesGcmTransformer::new("", &[0u8; 16]).is_err());
        assert!(AesGcmTransformer::new("a:b", &[0u8; 16]).is_err());
    }

    #[test]
    fn inspect_reads_the_prefix() {
        let t = &transformers()[1];
        let sealed = t.seal(b"abc", KEY).unwrap();
        let info = t.inspect(&sealed, KEY).unwrap();
        assert_eq!(info.provider_kind, ProviderKind::AesGcm);
        assert_eq!(info.provider_name, "k1");
        assert_eq!(info.stored_len, sealed.len());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200), size in 0usize..3) {
            let t = &transformers()[size];
            let mut stored = t.prefix().to_vec();
            stored.extend_from_slice(&body);
            proptest::prop_assert!(t.open(&stored, KEY).is_err());
            let _ = t.open(&body, KEY);
            let _ = t.inspect(&body, KEY);
        }

        #[test]
        fn round_trips(pt in proptest::collection::vec(proptest::num::u8::ANY, 0..2000), size in 0usize..3) {
            let t = &transformers()[size];
            let sealed = t.seal(&pt, KEY).unwrap();
            proptest::prop_assert_eq!(&t.open(&sealed, KEY).unwrap().plaintext[..], &pt[..]);
        }
    }
}
