//! The pkcs11 ciphertext, byte by byte (the token computes the AES-GCM;
//! nothing here talks to it).
//!
//! ```text
//! v1: format(1) = 0x03 ‖ scheme(1) = 0x01 ‖ iv(12) ‖ AES-256-GCM(seed) ‖ tag(16)
//! AAD = "k8s-kms-plugin/pkcs11" ‖ format ‖ scheme ‖ u16be(len(key_id)) ‖ key_id
//! ```
//!
//! CKM_AES_GCM rather than CKM_AES_KEY_WRAP_KWP: GCM authenticates the
//! format and the key_id with the seed (a ciphertext presented with another
//! key_id, or a changed header, fails in the token), and a random IV makes
//! two wraps of one seed differ; KWP takes no associated data and is
//! deterministic. The IV is 12 random bytes from the OS per Encrypt; one
//! KEK wraps a seed per apiserver start and key_id change, far below GCM's
//! random-IV bound.

use kms_proto::contract::MAX_CIPHERTEXT;

/// The first byte of every pkcs11 ciphertext.
pub(crate) const FORMAT_V1: u8 = 0x03;
/// The second byte: AES-256-GCM in the token, 96-bit IV, 128-bit tag.
pub(crate) const SCHEME_GCM: u8 = 0x01;
/// The IV length.
pub(crate) const IV_LEN: usize = 12;
/// The tag length.
pub(crate) const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 2;
const AAD_LABEL: &[u8] = b"k8s-kms-plugin/pkcs11";

/// The largest plaintext whose ciphertext fits the 1024-byte limit.
pub(crate) const MAX_PLAINTEXT: usize = MAX_CIPHERTEXT - HEADER_LEN - IV_LEN - TAG_LEN;

/// The associated data of a wrap under `key_id`.
pub(crate) fn aad(key_id: &str) -> Vec<u8> {
    let id = key_id.as_bytes();
    let mut a = Vec::with_capacity(AAD_LABEL.len() + 4 + id.len());
    a.extend_from_slice(AAD_LABEL);
    a.push(FORMAT_V1);
    a.push(SCHEME_GCM);
    a.extend_from_slice(&(id.len() as u16).to_be_bytes());
    a.extend_from_slice(id);
    a
}

/// The IV and the token's output (ciphertext ‖ tag) of a well-formed
/// ciphertext, or what is wrong with it.
pub(crate) fn parse(ciphertext: &[u8]) -> Result<(&[u8], &[u8]), &'static str> {
    if ciphertext.len() < HEADER_LEN {
        return Err("shorter than its header");
    }
    if ciphertext[0] != FORMAT_V1 {
        return Err("unknown format version");
    }
    if ciphertext[1] != SCHEME_GCM {
        return Err("unknown scheme");
    }
    if ciphertext.len() < HEADER_LEN + IV_LEN + TAG_LEN {
        return Err("shorter than IV and tag");
    }
    Ok(ciphertext[HEADER_LEN..].split_at(IV_LEN))
}

/// Puts a ciphertext together from the IV and the token's output.
pub(crate) fn assemble(iv: &[u8], sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + iv.len() + sealed.len());
    out.push(FORMAT_V1);
    out.push(SCHEME_GCM);
    out.extend_from_slice(iv);
    out.extend_from_slice(sealed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed outside this code (Python `cryptography`'s AESGCM) with key
    /// 00 01 .. 1f, IV c0 .. cb, a 32-byte seed of 0x42 and this key_id:
    /// what a token computes for the same key must always open.
    const KEY_ID: &str = "p11-0011223344556677-v1-aabbccddeeff";
    const VECTOR: &str = "0301c0c1c2c3c4c5c6c7c8c9cacb420a6525353ad41cda9bbfe070eeaa140e31a17d7ea05df868810948753f3df440e8a2371beac65f7ebf57d21d0bede9";

    #[test]
    fn the_fixed_vector_opens_with_the_same_math_the_token_does() {
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        let bytes = hex::decode(VECTOR).unwrap();
        let (iv, sealed) = parse(&bytes).unwrap();
        assert_eq!(assemble(iv, sealed), bytes);
        let key: Vec<u8> = (0u8..32).collect();
        let cipher = aes_gcm::Aes256Gcm::new(key.as_slice().into());
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut buf = ct.to_vec();
        cipher
            .decrypt_in_place_detached(iv.into(), &aad(KEY_ID), &mut buf, tag.into())
            .expect("the vector authenticates under its key_id");
        assert_eq!(buf, [0x42u8; 32]);
        let mut other = ct.to_vec();
        assert!(
            cipher
                .decrypt_in_place_detached(iv.into(), &aad("p11-other"), &mut other, tag.into())
                .is_err(),
            "another key_id does not authenticate"
        );
    }

    #[test]
    fn malformed_ciphertexts_name_the_problem() {
        assert_eq!(parse(&[]), Err("shorter than its header"));
        assert_eq!(parse(&[0x01, 0x01]), Err("unknown format version"));
        assert_eq!(parse(&[0x03, 0x09]), Err("unknown scheme"));
        assert_eq!(parse(&[0x03, 0x01, 0]), Err("shorter than IV and tag"));
        assert_eq!(MAX_PLAINTEXT, 994);
    }
}
