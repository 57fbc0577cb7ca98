//! The tpm-resident ciphertext, byte by byte; nothing here talks to a TPM.
//!
//! ```text
//! v1: format(1) = 0x02 ‖ scheme(1) = 0x01 ‖ iv(16) ‖ AES-256-CFB(pt) ‖ tag(32)
//! tag = HMAC-SHA256_tpm("k8s-kms-plugin/tpm-resident" ‖ format ‖ scheme
//!                       ‖ u16be(len(key_id)) ‖ key_id ‖ iv ‖ ct)
//! ```
//!
//! The tag binds the format version, the scheme and the key_id, so a
//! ciphertext presented with another key_id or a changed header fails.

use kms_proto::contract::MAX_CIPHERTEXT;

/// The first byte of every tpm-resident ciphertext.
pub const FORMAT_V1: u8 = 0x02;
/// The second byte: AES-256-CFB then HMAC-SHA256, both in the TPM.
pub(crate) const SCHEME_ID: u8 = 0x01;
/// The IV length.
pub(crate) const IV_LEN: usize = 16;
/// The tag length (HMAC-SHA256).
pub(crate) const TAG_LEN: usize = 32;
const HEADER_LEN: usize = 2;
const MAC_LABEL: &[u8] = b"k8s-kms-plugin/tpm-resident";
/// The TPM's largest command buffer (`TPM2B_MAX_BUFFER`, 1024 on every PC TPM).
const TPM_MAX_BUFFER: usize = 1024;

/// The largest plaintext for `key_id`: the ciphertext must fit in 1024
/// bytes and the MAC input in one TPM buffer.
pub fn max_plaintext(key_id: &str) -> usize {
    let by_ciphertext = MAX_CIPHERTEXT - HEADER_LEN - IV_LEN - TAG_LEN;
    let by_mac = TPM_MAX_BUFFER - MAC_LABEL.len() - HEADER_LEN - 2 - key_id.len() - IV_LEN;
    by_ciphertext.min(by_mac)
}

/// The bytes the tag authenticates.
pub(crate) fn mac_input(key_id: &str, iv: &[u8], ct: &[u8]) -> Vec<u8> {
    let id = key_id.as_bytes();
    let mut m = Vec::with_capacity(MAC_LABEL.len() + 4 + id.len() + iv.len() + ct.len());
    m.extend_from_slice(MAC_LABEL);
    m.push(FORMAT_V1);
    m.push(SCHEME_ID);
    m.extend_from_slice(&(id.len() as u16).to_be_bytes());
    m.extend_from_slice(id);
    m.extend_from_slice(iv);
    m.extend_from_slice(ct);
    m
}

/// Whether the MAC input of a ciphertext of `ct_len` bytes under `key_id`
/// fits one TPM buffer (Encrypt never makes one that does not).
pub(crate) fn mac_fits(key_id: &str, ct_len: usize) -> bool {
    HEADER_LEN + 2 + MAC_LABEL.len() + key_id.len() + IV_LEN + ct_len <= TPM_MAX_BUFFER
}

/// The parts of a well-formed ciphertext.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    /// The IV.
    pub iv: &'a [u8],
    /// The encrypted bytes.
    pub ct: &'a [u8],
    /// The tag.
    pub tag: &'a [u8],
}

/// Splits a ciphertext, checking its header and length; the reason names
/// what is wrong.
pub(crate) fn parse(ciphertext: &[u8]) -> Result<Parts<'_>, &'static str> {
    if ciphertext.len() < HEADER_LEN {
        return Err("shorter than its header");
    }
    if ciphertext[0] != FORMAT_V1 {
        return Err("unknown format version");
    }
    if ciphertext[1] != SCHEME_ID {
        return Err("unknown scheme");
    }
    if ciphertext.len() < HEADER_LEN + IV_LEN + TAG_LEN + 1 {
        return Err("shorter than IV and tag");
    }
    let (iv, rest) = ciphertext[HEADER_LEN..].split_at(IV_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    Ok(Parts { iv, ct, tag })
}

/// Puts a ciphertext together.
pub(crate) fn assemble(iv: &[u8], ct: &[u8], tag: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + iv.len() + ct.len() + tag.len());
    out.push(FORMAT_V1);
    out.push(SCHEME_ID);
    out.extend_from_slice(iv);
    out.extend_from_slice(ct);
    out.extend_from_slice(tag);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed ciphertext (a 32-byte seed wrapped under key_id
    /// `tpmr-0011223344556677-v1-aabbccddeeff`) as the format writes it:
    /// the layout and the authenticated bytes must never change, or every
    /// stored DEK seed of a tpm-resident ring becomes unreadable.
    const KEY_ID: &str = "tpmr-0011223344556677-v1-aabbccddeeff";
    const VECTOR: &str = "0201\
        000102030405060708090a0b0c0d0e0f\
        a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\
        f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff\
        e0e1e2e3e4e5e6e7e8e9eaebecedeeef";
    const MAC_INPUT: &str = "6b38732d6b6d732d706c7567696e2f74706d2d7265736964656e74\
        0201\
        0025\
        74706d722d303031313232333334343535363637372d76312d616162626363646465656666\
        000102030405060708090a0b0c0d0e0f\
        a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";

    #[test]
    fn the_fixed_vector_parses_and_reassembles() {
        let bytes = hex::decode(VECTOR).unwrap();
        let p = parse(&bytes).unwrap();
        assert_eq!(
            p.iv,
            &hex::decode("000102030405060708090a0b0c0d0e0f").unwrap()[..]
        );
        assert_eq!(p.ct.len(), 32);
        assert_eq!(p.tag.len(), TAG_LEN);
        assert_eq!(assemble(p.iv, p.ct, p.tag), bytes);
        assert_eq!(
            hex::encode(mac_input(KEY_ID, p.iv, p.ct)),
            MAC_INPUT.replace(char::is_whitespace, "")
        );
        assert!(mac_fits(KEY_ID, p.ct.len()));
    }

    #[test]
    fn malformed_ciphertexts_name_the_problem() {
        assert_eq!(parse(&[]), Err("shorter than its header"));
        assert_eq!(parse(&[0x01, 0x01]), Err("unknown format version"));
        assert_eq!(parse(&[0x02, 0x09]), Err("unknown scheme"));
        assert_eq!(parse(&[0x02, 0x01, 0, 0]), Err("shorter than IV and tag"));
        let mut min = vec![0x02, 0x01];
        min.extend_from_slice(&[0u8; IV_LEN + TAG_LEN + 1]);
        assert_eq!(parse(&min).unwrap().ct.len(), 1);
    }

    #[test]
    fn limits() {
        // A one-byte key_id: the 1024-byte ciphertext limit decides.
        assert_eq!(max_plaintext("k"), 1024 - 2 - 16 - 32);
        // A real key_id: the TPM's 1024-byte buffer for the MAC input decides.
        assert_eq!(max_plaintext(KEY_ID), 1024 - 27 - 2 - 2 - 37 - 16);
        for id in ["k", KEY_ID, &"k".repeat(200)] {
            assert!(mac_fits(id, max_plaintext(id)));
            assert!(2 + IV_LEN + max_plaintext(id) + TAG_LEN <= MAX_CIPHERTEXT);
        }
        assert!(!mac_fits(KEY_ID, max_plaintext(KEY_ID) + 1));
    }
}
