//! The `aescbc` provider: AES-CBC with PKCS#7 padding and a random IV per
//! write, as upstream `k8s.io/apiserver/pkg/storage/value/encrypt/aes`
//! (`NewCBCTransformer`).
//!
//! Stored bytes: `k8s:enc:aescbc:v1:<key name>:` ‖ IV(16) ‖ AES-CBC(PKCS#7).
//! Keys of 16, 24 or 32 bytes.
//!
//! There is no authentication and no additional data: a value copied under
//! another etcd key opens there too (upstream behaviour), and tampering is
//! only detected when it breaks the padding. The upstream documentation
//! recommends against this provider; it is here so values written by it can
//! be read and migrated. Every padding failure is one opaque
//! [`TransformError::DecryptionFailed`], so the error never tells which
//! byte was wrong.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::consts::U16;
use cbc::cipher::{
    BlockCipher, BlockDecryptMut, BlockEncryptMut, BlockSizeUser, InnerIvInit, KeyInit,
};

use super::local::{LocalCipher, LocalTransformer};
use super::{ProviderKind, TransformError};
use crate::wipe::Wiped;

/// IV length (the AES block size).
pub const IV_LEN: usize = 16;
const BLOCK: usize = 16;

/// One aescbc key: seals with it, opens values carrying its prefix.
pub type AesCbcTransformer = LocalTransformer<AesCbc>;

/// The expanded aescbc key (the `aes` crate wipes its round keys on drop).
/// No `Debug`, no `Clone`.
pub struct AesCbc(CbcKey);

enum CbcKey {
    A128(Box<aes::Aes128>),
    A192(Box<aes::Aes192>),
    A256(Box<aes::Aes256>),
}

fn encrypt<C>(cipher: &C, iv: &[u8; IV_LEN], buf: &mut [u8], msg_len: usize) -> Option<usize>
where
    C: BlockEncryptMut + BlockCipher + BlockSizeUser<BlockSize = U16> + Clone,
{
    cbc::Encryptor::<C>::inner_iv_init(cipher.clone(), iv.into())
        .encrypt_padded_mut::<Pkcs7>(buf, msg_len)
        .ok()
        .map(<[u8]>::len)
}

fn decrypt<C>(cipher: &C, iv: &[u8; IV_LEN], buf: &mut [u8]) -> Option<usize>
where
    C: BlockDecryptMut + BlockCipher + BlockSizeUser<BlockSize = U16> + Clone,
{
    cbc::Decryptor::<C>::inner_iv_init(cipher.clone(), iv.into())
        .decrypt_padded_mut::<Pkcs7>(buf)
        .ok()
        .map(<[u8]>::len)
}

fn padded_len(len: usize) -> usize {
    (len / BLOCK + 1) * BLOCK
}

impl LocalCipher for AesCbc {
    const KIND: ProviderKind = ProviderKind::AesCbc;
    const VALUE: &'static str = "an aescbc value";
    const KEY_SIZES: &'static [usize] = &[16, 24, 32];

    fn new(key: &[u8]) -> Result<Self, TransformError> {
        let unusable = |_| TransformError::Config("aescbc: unusable key".to_owned());
        Ok(AesCbc(match key.len() {
            16 => CbcKey::A128(Box::new(
                aes::Aes128::new_from_slice(key).map_err(unusable)?,
            )),
            24 => CbcKey::A192(Box::new(
                aes::Aes192::new_from_slice(key).map_err(unusable)?,
            )),
            _ => CbcKey::A256(Box::new(
                aes::Aes256::new_from_slice(key).map_err(unusable)?,
            )),
        }))
    }

    /// IV and ciphertext lengths are public; nothing here depends on the key.
    fn check_body(body: &[u8]) -> Result<(), String> {
        if body.len() < IV_LEN + BLOCK {
            return Err(format!(
                "aescbc value too short: {} bytes after the prefix, at least {} needed (IV {IV_LEN} + one block)",
                body.len(),
                IV_LEN + BLOCK
            ));
        }
        let ct = body.len() - IV_LEN;
        if !ct.is_multiple_of(BLOCK) {
            return Err(format!(
                "aescbc ciphertext is {ct} bytes, not a multiple of the AES block size"
            ));
        }
        Ok(())
    }

    fn sealed_len(len: usize) -> usize {
        IV_LEN + padded_len(len)
    }

    /// No additional data: `aad` is not used (upstream behaviour).
    fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        _aad: &[u8],
    ) -> Result<(), TransformError> {
        let iv: [u8; IV_LEN] = crate::rand::array();
        let padded = padded_len(plaintext.len());
        out.extend_from_slice(&iv);
        let start = out.len();
        out.extend_from_slice(plaintext);
        out.resize(start + padded, 0);
        let buf = &mut out[start..];
        let written = match &self.0 {
            CbcKey::A128(c) => encrypt(&**c, &iv, buf, plaintext.len()),
            CbcKey::A192(c) => encrypt(&**c, &iv, buf, plaintext.len()),
            CbcKey::A256(c) => encrypt(&**c, &iv, buf, plaintext.len()),
        };
        // The buffer is sized for the padding, so this always succeeds.
        debug_assert_eq!(written, Some(padded));
        Ok(())
    }

    fn open_body(&self, body: &[u8], _aad: &[u8]) -> Option<Wiped<Vec<u8>>> {
        let (iv, ct) = body.split_at(IV_LEN);
        let mut iv_arr = [0u8; IV_LEN];
        iv_arr.copy_from_slice(iv);
        let mut buf = Wiped::new(ct.to_vec());
        // Bad padding: one opaque failure, whatever was wrong.
        let len = match &self.0 {
            CbcKey::A128(c) => decrypt(&**c, &iv_arr, &mut buf),
            CbcKey::A192(c) => decrypt(&**c, &iv_arr, &mut buf),
            CbcKey::A256(c) => decrypt(&**c, &iv_arr, &mut buf),
        }?;
        buf.truncate(len);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::Transformer;
    use crate::transform::aesgcm::tests::vector;

    const KEY: &str = "/registry/secrets/default/smtp";

    fn transformers() -> Vec<AesCbcTransformer> {
        [16usize, 24, 32]
            .iter()
            .map(|n| AesCbcTransformer::new("c1", &vec![9u8; *n]).unwrap())
            .collect()
    }

    #[test]
    fn opens_upstream_values() {
        for id in ["aescbc-256", "aescbc-192"] {
            let v = vector(id);
            let key = hex::decode(v["key"]["secret_hex"].as_str().unwrap()).unwrap();
            let t = AesCbcTransformer::new(v["key"]["name"].as_str().unwrap(), &key).unwrap();
            let stored = hex::decode(v["stored_hex"].as_str().unwrap()).unwrap();
            let plaintext = hex::decode(v["plaintext_hex"].as_str().unwrap()).unwrap();
            let opened = t.open(&stored, v["etcd_key"].as_str().unwrap()).unwrap();
            assert_eq!(&opened.plaintext[..], &plaintext[..], "{id}");
            // No AAD: the copy under another key opens as well (upstream).
            let copy = v["expect"]["wrong_etcd_key"].as_str().unwrap();
            assert_eq!(
                &t.open(&stored, copy).unwrap().plaintext[..],
                &plaintext[..]
            );
        }
    }

    #[test]
    fn round_trip_and_layout_for_every_key_size() {
        for t in transformers() {
            for len in [0usize, 1, 15, 16, 17, 1000] {
                let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let sealed = t.seal(&pt, KEY).unwrap();
                assert!(sealed.starts_with(b"k8s:enc:aescbc:v1:c1:"));
                let padded = (len / 16 + 1) * 16;
                assert_eq!(sealed.len(), t.prefix().len() + IV_LEN + padded, "{len}");
                let opened = t.open(&sealed, KEY).unwrap();
                assert_eq!(&opened.plaintext[..], &pt[..]);
                assert!(!opened.stale);
            }
        }
    }

    #[test]
    fn ivs_differ() {
        let t = &transformers()[0];
        assert_ne!(t.seal(b"same", KEY).unwrap(), t.seal(b"same", KEY).unwrap());
    }

    #[test]
    fn padding_errors_are_one_opaque_error() {
        let t = &transformers()[2];
        let sealed = t.seal(b"exactly sixteen!", KEY).unwrap(); // a full padding block
        let last = sealed.len() - 1;
        // Flipping bytes of the second-to-last ciphertext block changes the
        // decrypted padding block.
        let mut messages = std::collections::HashSet::new();
        for i in (last - 31)..=(last - 16) {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                match t.open(&bad, KEY) {
                    Err(e @ TransformError::DecryptionFailed { .. }) => {
                        messages.insert(e.to_string());
                    }
                    Err(other) => panic!("not opaque: {other:?}"),
                    Ok(_) => {} // a flip that still leaves valid padding
                }
            }
        }
        assert_eq!(messages.len(), 1, "{messages:?}");
    }

    #[test]
    fn wrong_key_mostly_fails_and_never_panics() {
        let a = AesCbcTransformer::new("c1", &[1u8; 32]).unwrap();
        let b = AesCbcTransformer::new("c1", &[2u8; 32]).unwrap();
        // Without authentication a wrong key is only caught when the
        // padding comes out wrong (about 255 times in 256), as upstream.
        let mut failed = 0;
        for _ in 0..64 {
            let sealed = a.seal(b"some secret value", KEY).unwrap();
            match b.open(&sealed, KEY) {
                Err(TransformError::DecryptionFailed { .. }) => failed += 1,
                Err(other) => panic!("{other:?}"),
                Ok(o) => assert_ne!(&o.plaintext[..], b"some secret value"),
            }
        }
        assert!(failed >= 56, "{failed}");
    }

    #[test]
    fn short_and_misaligned_values_are_malformed() {
        let t = &transformers()[0];
        for n in [0usize, 15, 16, 31, 33, 40] {
            let mut v = t.prefix().to_vec();
            v.extend(vec![0u8; n]);
            let err = t.open(&v, KEY).unwrap_err();
            assert!(
                matches!(err, TransformError::Malformed { .. }),
                "{n}: {err:?}"
            );
        }
        assert!(t.open(b"k8s:enc:aescbc:v1:zz:", KEY).is_err());
    }

    #[test]
    fn bad_keys_are_refused() {
        for n in [0usize, 8, 31, 33] {
            assert!(AesCbcTransformer::new("k", &vec![0u8; n]).is_err());
        }
        assert!(AesCbcTransformer::new("x:y", &[0u8; 16]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200), size in 0usize..3) {
            let t = &transformers()[size];
            let mut stored = t.prefix().to_vec();
            stored.extend_from_slice(&body);
            let _ = t.open(&stored, KEY);
            let _ = t.open(&body, KEY);
            let _ = t.inspect(&stored, KEY);
        }

        #[test]
        fn round_trips(pt in proptest::collection::vec(proptest::num::u8::ANY, 0..2000), size in 0usize..3) {
            let t = &transformers()[size];
            let sealed = t.seal(&pt, KEY).unwrap();
            proptest::prop_assert_eq!(&t.open(&sealed, KEY).unwrap().plaintext[..], &pt[..]);
        }
    }
}
