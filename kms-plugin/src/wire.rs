//! The plugin ciphertext returned by Encrypt when a KEK is held in memory
//! (software and TPM-sealed backends).
//!
//! ```text
//! v1: format(1) = 0x01 ‖ algorithm(1) ‖ nonce(12 | 24) ‖ AEAD ciphertext ‖ tag(16)
//! AAD = "k8s-kms-plugin/wrap" ‖ format ‖ algorithm ‖ u16be(len(key_id)) ‖ key_id
//! ```
//!
//! The ciphertext carries its own format version and algorithm, and the AAD
//! binds both plus the key_id, so a ciphertext presented with another key_id,
//! a downgraded format or another algorithm does not authenticate. Nonces are
//! random from the OS, one `getrandom` call per Encrypt. AES-256-GCM with
//! random 96-bit nonces is safe for 2^32 wraps per KEK; kube-apiserver wraps
//! once per key_id change and at start, so rotation happens long before.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use zeroize::Zeroizing;

use crate::secret::SecretKey;
use kms_proto::contract::MAX_CIPHERTEXT;

/// The first byte of every v1 software-wrapped ciphertext.
pub const FORMAT_V1: u8 = 0x01;
const HEADER_LEN: usize = 2;
const TAG_LEN: usize = 16;
const AAD_LABEL: &[u8] = b"k8s-kms-plugin/wrap";

/// The AEAD a KEK is used with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// AES-256-GCM, 96-bit random nonce (the default).
    Aes256Gcm,
    /// XChaCha20-Poly1305, 192-bit random nonce.
    XChaCha20Poly1305,
}

impl Algorithm {
    /// Every algorithm, default first.
    pub const ALL: [Algorithm; 2] = [Algorithm::Aes256Gcm, Algorithm::XChaCha20Poly1305];

    /// The name used in key rings, flags and `key list`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "aes-256-gcm",
            Algorithm::XChaCha20Poly1305 => "xchacha20-poly1305",
        }
    }

    /// Parses [`Algorithm::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    fn id(self) -> u8 {
        match self {
            Algorithm::Aes256Gcm => 1,
            Algorithm::XChaCha20Poly1305 => 2,
        }
    }

    fn nonce_len(self) -> usize {
        match self {
            Algorithm::Aes256Gcm => 12,
            Algorithm::XChaCha20Poly1305 => 24,
        }
    }

    /// The largest plaintext whose ciphertext fits kube-apiserver's 1024-byte limit.
    pub fn max_plaintext(self) -> usize {
        MAX_CIPHERTEXT - HEADER_LEN - self.nonce_len() - TAG_LEN
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a ciphertext could not be opened. Deliberately coarse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Not a ciphertext this code wrote (too short, unknown format or algorithm).
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// Authentication failed.
    #[error("decryption failed")]
    DecryptionFailed,
    /// The plaintext does not fit in the ciphertext limit.
    #[error(
        "plaintext is {len} bytes; at most {max} bytes fit in the {MAX_CIPHERTEXT}-byte ciphertext limit"
    )]
    TooLarge {
        /// Plaintext length.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
    /// The OS RNG failed.
    #[error("the operating system's random number generator failed")]
    Rng(#[source] getrandom::Error),
}

fn aad(alg: Algorithm, key_id: &str) -> Vec<u8> {
    let id = key_id.as_bytes();
    let mut a = Vec::with_capacity(AAD_LABEL.len() + 4 + id.len());
    a.extend_from_slice(AAD_LABEL);
    a.push(FORMAT_V1);
    a.push(alg.id());
    a.extend_from_slice(&(id.len() as u16).to_be_bytes());
    a.extend_from_slice(id);
    a
}

/// Wraps `plaintext` under `key`, bound to `key_id`, with a fresh random nonce.
pub fn seal(
    alg: Algorithm,
    key: &SecretKey,
    key_id: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, WireError> {
    let mut nonce = [0u8; 24];
    let nonce = &mut nonce[..alg.nonce_len()];
    getrandom::fill(nonce).map_err(WireError::Rng)?;
    seal_with_nonce(alg, key, key_id, nonce, plaintext)
}

/// [`seal`] with a given nonce (exactly the algorithm's nonce length): the
/// deterministic core, for the fixed test vectors. A nonce must never be
/// used twice with one key.
fn seal_with_nonce(
    alg: Algorithm,
    key: &SecretKey,
    key_id: &str,
    nonce: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, WireError> {
    let max = alg.max_plaintext();
    if plaintext.len() > max {
        return Err(WireError::TooLarge {
            len: plaintext.len(),
            max,
        });
    }
    let nlen = alg.nonce_len();
    debug_assert_eq!(nonce.len(), nlen);
    let aad = aad(alg, key_id);
    // Encrypt in a wiping buffer: the plaintext is never copied elsewhere.
    let mut body = Zeroizing::new(Vec::with_capacity(plaintext.len()));
    body.extend_from_slice(plaintext);
    let tag: [u8; TAG_LEN] = match alg {
        Algorithm::Aes256Gcm => aes_gcm::Aes256Gcm::new(key.dangerous_expose().into())
            .encrypt_in_place_detached(nonce.into(), &aad, &mut body)
            .map_err(|_| WireError::DecryptionFailed)?
            .into(),
        Algorithm::XChaCha20Poly1305 => {
            chacha20poly1305::XChaCha20Poly1305::new(key.dangerous_expose().into())
                .encrypt_in_place_detached(nonce.into(), &aad, &mut body)
                .map_err(|_| WireError::DecryptionFailed)?
                .into()
        }
    };
    let mut out = Vec::with_capacity(HEADER_LEN + nlen + body.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.push(alg.id());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The algorithm a ciphertext says it was made with, if it is well formed.
pub fn algorithm_of(ciphertext: &[u8]) -> Result<Algorithm, WireError> {
    if ciphertext.len() < HEADER_LEN {
        return Err(WireError::Malformed("shorter than its header"));
    }
    if ciphertext[0] != FORMAT_V1 {
        return Err(WireError::Malformed("unknown format version"));
    }
    let alg = Algorithm::ALL
        .into_iter()
        .find(|a| a.id() == ciphertext[1])
        .ok_or(WireError::Malformed("unknown algorithm"))?;
    if ciphertext.len() < HEADER_LEN + alg.nonce_len() + TAG_LEN {
        return Err(WireError::Malformed("shorter than nonce and tag"));
    }
    Ok(alg)
}

/// Unwraps a ciphertext made by [`seal`] with `key` and `key_id`.
pub fn open(
    alg: Algorithm,
    key: &SecretKey,
    key_id: &str,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, WireError> {
    if algorithm_of(ciphertext)? != alg {
        // A ciphertext claiming another algorithm than the KEK's cannot be ours.
        return Err(WireError::DecryptionFailed);
    }
    let nlen = alg.nonce_len();
    let (nonce, rest) = ciphertext[HEADER_LEN..].split_at(nlen);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let aad = aad(alg, key_id);
    let mut buf = Zeroizing::new(body.to_vec());
    let ok = match alg {
        Algorithm::Aes256Gcm => {
            let c = aes_gcm::Aes256Gcm::new(key.dangerous_expose().into());
            c.decrypt_in_place_detached(nonce.into(), &aad, &mut buf, tag.into())
        }
        Algorithm::XChaCha20Poly1305 => {
            let c = chacha20poly1305::XChaCha20Poly1305::new(key.dangerous_expose().into());
            c.decrypt_in_place_detached(nonce.into(), &aad, &mut buf, tag.into())
        }
    };
    ok.map_err(|_| WireError::DecryptionFailed)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap()
    }

    /// Fixed vectors computed outside this code (Python `cryptography`'s
    /// AESGCM and libsodium's XChaCha20-Poly1305) with key 00 01 .. 1f,
    /// the key_id that key gets as version 1 of ring 0011223344556677, and
    /// a 32-byte seed of 0x42: what a software or tpm-sealed ring has ever
    /// written must stay readable, byte for byte.
    pub(crate) const VECTOR_KEY_ID: &str = "soft-0011223344556677-v1-174f2218139d";
    const VECTORS: [(Algorithm, &str); 2] = [
        (
            Algorithm::Aes256Gcm,
            "0101a0a1a2a3a4a5a6a7a8a9aaaba45a3e6f078940fd2027c5914538829c32ee1b52d0f5002ede4c64c43de9374321d82f7e93259dcc508e6ecd69f3496e",
        ),
        (
            Algorithm::XChaCha20Poly1305,
            "0102b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c72a143b15abb18577a6f4965ae184bce007cf285be4a961b35251f35d813057b59dc23d6e53c00ccff63dfcfa8f024437",
        ),
    ];

    fn vector_key() -> SecretKey {
        let k: Vec<u8> = (0u8..32).collect();
        SecretKey::from_slice(&k).unwrap()
    }

    #[test]
    fn fixed_vectors_open_and_reseal_byte_for_byte() {
        let key = vector_key();
        for (alg, hexed) in VECTORS {
            let ct = hex::decode(hexed).unwrap();
            assert_eq!(
                &open(alg, &key, VECTOR_KEY_ID, &ct).unwrap()[..],
                &[0x42u8; 32]
            );
            let nonce = &ct[HEADER_LEN..HEADER_LEN + alg.nonce_len()];
            let again = seal_with_nonce(alg, &key, VECTOR_KEY_ID, nonce, &[0x42u8; 32]).unwrap();
            assert_eq!(again, ct, "{alg}");
            assert_eq!(ct.len(), 2 + alg.nonce_len() + 32 + 16);
        }
    }

    #[test]
    fn round_trips_both_algorithms_and_binds_key_id() {
        for alg in Algorithm::ALL {
            let k = key();
            let ct = seal(alg, &k, "kid-1", b"0123456789abcdef0123456789abcdef").unwrap();
            assert_eq!(ct[0], FORMAT_V1);
            assert!(ct.len() <= MAX_CIPHERTEXT);
            assert_eq!(
                &open(alg, &k, "kid-1", &ct).unwrap()[..],
                b"0123456789abcdef0123456789abcdef"
            );
            assert_eq!(
                open(alg, &k, "kid-2", &ct),
                Err(WireError::DecryptionFailed)
            );
            assert_eq!(
                open(alg, &key(), "kid-1", &ct),
                Err(WireError::DecryptionFailed)
            );
        }
    }

    #[test]
    fn every_single_byte_flip_is_refused() {
        for alg in Algorithm::ALL {
            let k = key();
            let ct = seal(alg, &k, "kid", &[9u8; 32]).unwrap();
            for i in 0..ct.len() {
                for bit in [0x01u8, 0x80] {
                    let mut bad = ct.clone();
                    bad[i] ^= bit;
                    assert!(open(alg, &k, "kid", &bad).is_err(), "{alg} byte {i}");
                }
            }
        }
    }

    #[test]
    fn size_limits() {
        for alg in Algorithm::ALL {
            let k = key();
            let max = alg.max_plaintext();
            let ct = seal(alg, &k, "kid", &vec![1u8; max]).unwrap();
            assert_eq!(ct.len(), MAX_CIPHERTEXT);
            let err = seal(alg, &k, "kid", &vec![1u8; max + 1]).unwrap_err();
            assert!(err.to_string().contains("1024-byte"), "{err}");
        }
        assert_eq!(Algorithm::Aes256Gcm.max_plaintext(), 994);
        assert_eq!(Algorithm::XChaCha20Poly1305.max_plaintext(), 982);
    }

    #[test]
    fn malformed_inputs() {
        let k = key();
        for bad in [&b""[..], &[1], &[2, 1], &[1, 9], &[1, 1, 0, 0]] {
            assert!(open(Algorithm::Aes256Gcm, &k, "kid", bad).is_err());
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let k = SecretKey::from_slice(&[3u8; 32]).unwrap();
            for alg in Algorithm::ALL {
                prop_assert!(open(alg, &k, "kid", &data).is_err());
            }
        }

        #[test]
        fn round_trip_any_plaintext(data in proptest::collection::vec(any::<u8>(), 0..994)) {
            let k = SecretKey::from_slice(&[5u8; 32]).unwrap();
            let ct = seal(Algorithm::Aes256Gcm, &k, "k", &data).unwrap();
            prop_assert_eq!(&open(Algorithm::Aes256Gcm, &k, "k", &ct).unwrap()[..], &data[..]);
        }
    }
}
