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

use std::collections::BTreeMap;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::{EnvelopeInfo, Opened, ProviderKind, TransformError, Transformer};
use crate::wipe::{Wipe, Wiped};

/// The provider part of the prefix; the key name and `:` follow.
pub const PREFIX: &str = "k8s:enc:aesgcm:v1:";
/// Nonce length.
pub const NONCE_LEN: usize = 12;
/// Tag length.
pub const TAG_LEN: usize = 16;

type Aes192Gcm = aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;

/// The expanded key. No `Debug`, no `Clone`. The RustCrypto cipher wipes
/// its round keys on drop; `ring` does not wipe its key schedule (a known
/// `ring` limitation), so that one lives in a box that is never moved.
enum GcmKey {
    Ring(Box<LessSafeKey>),
    Aes192(Box<Aes192Gcm>),
}

/// One aesgcm key: seals with it, opens values carrying its prefix.
pub struct AesGcmTransformer {
    name: String,
    prefix: Vec<u8>,
    bits: usize,
    key: GcmKey,
}

impl AesGcmTransformer {
    /// Builds the transformer for key `name` from its raw bytes (16, 24 or
    /// 32). The bytes are not kept: only the expanded cipher key is.
    pub fn new(name: &str, key: &[u8]) -> Result<Self, TransformError> {
        check_key_name(name)?;
        let cipher = match key.len() {
            16 | 32 => {
                let alg = if key.len() == 16 {
                    &AES_128_GCM
                } else {
                    &AES_256_GCM
                };
                let unbound = UnboundKey::new(alg, key)
                    .map_err(|_| TransformError::Config("aesgcm: unusable key".to_owned()))?;
                GcmKey::Ring(Box::new(LessSafeKey::new(unbound)))
            }
            24 => {
                GcmKey::Aes192(Box::new(Aes192Gcm::new_from_slice(key).map_err(|_| {
                    TransformError::Config("aesgcm: unusable key".to_owned())
                })?))
            }
            n => {
                return Err(TransformError::Config(format!(
                    "aesgcm key {name:?}: a key must be 16, 24 or 32 bytes, got {n}"
                )));
            }
        };
        Ok(AesGcmTransformer {
            name: name.to_owned(),
            prefix: format!("{PREFIX}{name}:").into_bytes(),
            bits: key.len() * 8,
            key: cipher,
        })
    }

    /// The key length in bits (128, 192 or 256).
    pub fn key_bits(&self) -> usize {
        self.bits
    }

    fn body<'a>(&self, stored: &'a [u8], etcd_key: &str) -> Result<&'a [u8], TransformError> {
        let body = stored.strip_prefix(self.prefix.as_slice()).ok_or_else(|| {
            TransformError::Malformed {
                etcd_key: etcd_key.to_owned(),
                reason: format!(
                    "not an aesgcm value of key {:?} (prefix mismatch)",
                    self.name
                ),
            }
        })?;
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(TransformError::Malformed {
                etcd_key: etcd_key.to_owned(),
                reason: format!(
                    "aesgcm value too short: {} bytes after the prefix, at least {} needed (nonce {NONCE_LEN} + tag {TAG_LEN})",
                    body.len(),
                    NONCE_LEN + TAG_LEN
                ),
            });
        }
        Ok(body)
    }
}

/// Key names end up in the stored prefix: non-empty and without `:`.
pub(crate) fn check_key_name(name: &str) -> Result<(), TransformError> {
    if name.is_empty() || name.contains(':') {
        return Err(TransformError::Config(format!(
            "invalid key name {name:?}: it must be non-empty and must not contain ':'"
        )));
    }
    Ok(())
}

impl Transformer for AesGcmTransformer {
    fn kind(&self) -> ProviderKind {
        ProviderKind::AesGcm
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn seal(&self, plaintext: &[u8], etcd_key: &str) -> Result<Vec<u8>, TransformError> {
        let nonce: [u8; NONCE_LEN] = crate::rand::array();
        let mut out = Vec::with_capacity(self.prefix.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let aad = etcd_key.as_bytes();
        let tag: Result<[u8; TAG_LEN], ()> = match &self.key {
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
                Ok(out)
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

    fn open(&self, stored: &[u8], etcd_key: &str) -> Result<Opened, TransformError> {
        let body = self.body(stored, etcd_key)?;
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let mut nonce_arr = [0u8; NONCE_LEN];
        nonce_arr.copy_from_slice(nonce);
        let aad = etcd_key.as_bytes();
        let failed = || TransformError::DecryptionFailed {
            etcd_key: etcd_key.to_owned(),
        };
        let plaintext = match &self.key {
            GcmKey::Ring(k) => {
                let mut buf = Wiped::new(sealed.to_vec());
                let len = k
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce_arr),
                        Aad::from(aad),
                        &mut buf,
                    )
                    .map_err(|_| failed())?
                    .len();
                buf.truncate(len);
                buf
            }
            GcmKey::Aes192(c) => {
                let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
                let mut buf = Wiped::new(ct.to_vec());
                c.decrypt_in_place_detached((&nonce_arr).into(), aad, &mut buf, tag.into())
                    .map_err(|_| failed())?;
                buf
            }
        };
        Ok(Opened {
            plaintext,
            stale: false,
        })
    }

    fn inspect(&self, stored: &[u8], etcd_key: &str) -> Result<EnvelopeInfo, TransformError> {
        self.body(stored, etcd_key)?;
        Ok(EnvelopeInfo {
            provider_kind: ProviderKind::AesGcm,
            provider_name: self.name.clone(),
            key_id: None,
            dek_source_type: None,
            annotations: BTreeMap::new(),
            stored_len: stored.len(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
