//! The data keys: HKDF-SHA256 Expand from the seed and AES-256-GCM, the hot
//! path of every write and read.
//!
//! Seed mode (`HKDF_SHA256_XNONCE_AES_GCM_SEED`), as upstream
//! `NewHKDFExtendedNonceGCMTransformer`:
//! `encryptedData = info(32) ‖ nonce(12) ‖ AES-256-GCM(DEK, plaintext, AAD = etcd key) ‖ tag(16)`
//! with `DEK = HKDF-Expand-SHA256(PRK = seed, info, 32)` (no Extract step).
//! Legacy (`AES_GCM_KEY`), read only:
//! `encryptedData = nonce(12) ‖ AES-GCM(DEK, plaintext, AAD = etcd key) ‖ tag(16)`.
//!
//! A seal costs one random draw (info and nonce together), one HKDF expand,
//! one AES key schedule and one AEAD pass over a buffer sized once. The
//! derived key goes from ring's HKDF output straight into ring's AES key
//! without passing through our memory.

use std::fmt;

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Prk};

use crate::rand;
use crate::wipe::Wiped;

/// Bytes of a seed we generate (`MinSeedSizeExtendedNonceGCM` upstream).
pub const SEED_LEN: usize = 32;
/// Bytes of the random HKDF `info` at the start of `encryptedData`.
pub const INFO_LEN: usize = 32;
/// Bytes of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes `encryptedData` adds to the plaintext in seed mode.
pub const SEED_OVERHEAD: usize = INFO_LEN + NONCE_LEN + TAG_LEN;
/// Bytes `encryptedData` adds to the plaintext in legacy mode.
pub const LEGACY_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A key unwrapped by the plugin (or generated here): a seed, or a legacy
/// DEK. Wiped when the last reference goes; never printed.
pub(crate) enum UnwrappedKey {
    /// A seed of at least 32 bytes; each value's key is derived from it.
    Seed(Wiped<Vec<u8>>),
    /// A 16- or 32-byte AES-GCM key used directly.
    Legacy(Wiped<Vec<u8>>),
}

impl fmt::Debug for UnwrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnwrappedKey::Seed(_) => f.write_str("UnwrappedKey::Seed(<redacted>)"),
            UnwrappedKey::Legacy(_) => f.write_str("UnwrappedKey::Legacy(<redacted>)"),
        }
    }
}

impl UnwrappedKey {
    /// Checks what the plugin's Decrypt returned against the source type.
    /// The error names sizes only.
    pub(crate) fn from_plugin(seed_mode: bool, bytes: Wiped<Vec<u8>>) -> Result<Self, String> {
        if seed_mode {
            if bytes.len() < SEED_LEN {
                return Err(format!(
                    "the plugin returned a {}-byte seed; at least {SEED_LEN} bytes are required",
                    bytes.len()
                ));
            }
            Ok(UnwrappedKey::Seed(bytes))
        } else {
            if bytes.len() != 16 && bytes.len() != 32 {
                return Err(format!(
                    "the plugin returned a {}-byte AES-GCM key; 16 or 32 bytes are required",
                    bytes.len()
                ));
            }
            Ok(UnwrappedKey::Legacy(bytes))
        }
    }

    /// Opens `encrypted_data` (seed or legacy layout) with `aad`.
    pub(crate) fn open(
        &self,
        encrypted_data: &[u8],
        aad: &[u8],
    ) -> Result<Wiped<Vec<u8>>, OpenError> {
        match self {
            UnwrappedKey::Seed(seed) => open_seed(seed, encrypted_data, aad),
            UnwrappedKey::Legacy(dek) => open_legacy(dek, encrypted_data, aad),
        }
    }
}

/// Why `encryptedData` did not open.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Too short to hold the fixed parts of the layout.
    TooShort {
        /// Its length.
        len: usize,
        /// The least a value of this layout can have.
        min: usize,
    },
    /// The AEAD did not authenticate it. Deliberately opaque.
    Auth,
}

/// A new random seed, drawn directly into a wiped buffer.
pub(crate) fn generate_seed() -> Wiped<Vec<u8>> {
    let mut seed = Wiped::new(vec![0u8; SEED_LEN]);
    rand::fill(&mut seed[..]);
    seed
}

/// The per-value key: HKDF-SHA256 Expand (PRK = seed, `info`), 32 bytes,
/// made straight into an AES-256-GCM key.
fn derive(seed: &[u8], info: &[u8]) -> LessSafeKey {
    let prk = Prk::new_less_safe(HKDF_SHA256, seed);
    let info = [info];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .expect("32 bytes is far below HKDF-SHA256's 8160-byte limit");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// Appends `info ‖ nonce ‖ AES-256-GCM(plaintext) ‖ tag` to `out`; `out`
/// should have room for `plaintext.len() + SEED_OVERHEAD` more bytes.
pub(crate) fn seal_seed_into(out: &mut Vec<u8>, seed: &[u8], plaintext: &[u8], aad: &[u8]) {
    let start = out.len();
    // info and nonce in one draw from the batched OS randomness.
    out.resize(start + INFO_LEN + NONCE_LEN, 0);
    rand::fill(&mut out[start..]);
    out.extend_from_slice(plaintext);
    let (head, body) = out[start..].split_at_mut(INFO_LEN + NONCE_LEN);
    let key = derive(seed, &head[..INFO_LEN]);
    let nonce = nonce_from(&head[INFO_LEN..]);
    let tag: Tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(aad), body)
        .expect("AES-GCM seals up to 64 GiB per nonce; a stored value is far smaller");
    out.extend_from_slice(tag.as_ref());
}

fn nonce_from(bytes: &[u8]) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(bytes);
    Nonce::assume_unique_for_key(n)
}

/// Copies the ciphertext once into a wiped buffer and opens it in place.
fn open_with(
    key: &LessSafeKey,
    nonce: Nonce,
    ct_and_tag: &[u8],
    aad: &[u8],
) -> Result<Wiped<Vec<u8>>, OpenError> {
    let (ct, tag) = ct_and_tag.split_at(ct_and_tag.len() - TAG_LEN);
    let tag: [u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN");
    let mut buf = Wiped::new(ct.to_vec());
    key.open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(tag), &mut buf[..], 0..)
        .map_err(|_| OpenError::Auth)?;
    Ok(buf)
}

/// Opens seed-mode `encryptedData`.
pub(crate) fn open_seed(
    seed: &[u8],
    encrypted_data: &[u8],
    aad: &[u8],
) -> Result<Wiped<Vec<u8>>, OpenError> {
    if encrypted_data.len() < SEED_OVERHEAD {
        return Err(OpenError::TooShort {
            len: encrypted_data.len(),
            min: SEED_OVERHEAD,
        });
    }
    let (info, rest) = encrypted_data.split_at(INFO_LEN);
    let (nonce, ct_and_tag) = rest.split_at(NONCE_LEN);
    let key = derive(seed, info);
    open_with(&key, nonce_from(nonce), ct_and_tag, aad)
}

/// Opens legacy `encryptedData` with the DEK itself.
pub(crate) fn open_legacy(
    dek: &[u8],
    encrypted_data: &[u8],
    aad: &[u8],
) -> Result<Wiped<Vec<u8>>, OpenError> {
    if encrypted_data.len() < LEGACY_OVERHEAD {
        return Err(OpenError::TooShort {
            len: encrypted_data.len(),
            min: LEGACY_OVERHEAD,
        });
    }
    let alg = if dek.len() == 16 {
        &AES_128_GCM
    } else {
        &AES_256_GCM
    };
    let key = LessSafeKey::new(UnboundKey::new(alg, dek).map_err(|_| OpenError::Auth)?);
    let (nonce, ct_and_tag) = encrypted_data.split_at(NONCE_LEN);
    open_with(&key, nonce_from(nonce), ct_and_tag, aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The first kms vector of tests/vectors: seed, info and the derived key
    /// as the upstream apiserver computed them.
    #[test]
    fn hkdf_expand_matches_upstream() {
        let seed = unhex("fd06c0bb4f62c772339c542c9e413744db2ec76a4336fc042ae55d10d2a9c2da");
        let info = unhex("17928dc653913d410193a05d3b68f0cfe685713b2b2a715f3a75cd6c27db47e5");
        let want = unhex("3f32741459c6eedf051fcafca0facc7081e417476aadd2ff5f24a1c0f9e58d1f");
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let mut got = [0u8; 32];
        Prk::new_less_safe(HKDF_SHA256, &seed)
            .expand(&[&info], Len32)
            .unwrap()
            .fill(&mut got)
            .unwrap();
        assert_eq!(got.to_vec(), want);
        // And the key made directly from the OKM is that key: it opens what
        // an AES-256-GCM key of those bytes sealed.
        let direct = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &want).unwrap());
        let mut buf = b"hello".to_vec();
        let tag = direct
            .seal_in_place_separate_tag(nonce_from(&[3; 12]), Aad::from(b"k"), &mut buf)
            .unwrap();
        let mut ed = info.clone();
        ed.extend([3; 12]);
        ed.extend(&buf);
        ed.extend(tag.as_ref());
        assert_eq!(&open_seed(&seed, &ed, b"k").unwrap()[..], b"hello");
    }

    #[test]
    fn seal_open_round_trip_and_layout() {
        let seed = generate_seed();
        for len in [0usize, 1, 5, 1024, 70_000] {
            let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = vec![0xAA];
            seal_seed_into(&mut out, &seed[..], &pt, b"/registry/secrets/a/b");
            assert_eq!(out.len(), 1 + len + SEED_OVERHEAD);
            assert_eq!(out[0], 0xAA);
            let ed = &out[1..];
            assert_eq!(
                &open_seed(&seed[..], ed, b"/registry/secrets/a/b").unwrap()[..],
                &pt[..]
            );
            assert_eq!(
                open_seed(&seed[..], ed, b"/registry/secrets/a/c"),
                Err(OpenError::Auth)
            );
        }
    }

    #[test]
    fn every_flipped_bit_fails() {
        let seed = generate_seed();
        let mut ed = Vec::new();
        seal_seed_into(&mut ed, &seed[..], b"secret", b"k");
        for i in 0..ed.len() {
            let mut bad = ed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                open_seed(&seed[..], &bad, b"k"),
                Err(OpenError::Auth),
                "byte {i}"
            );
        }
        assert_eq!(
            open_seed(&seed[..], &ed[..SEED_OVERHEAD - 1], b"k"),
            Err(OpenError::TooShort {
                len: SEED_OVERHEAD - 1,
                min: SEED_OVERHEAD
            })
        );
    }

    #[test]
    fn two_seals_differ() {
        let seed = generate_seed();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        seal_seed_into(&mut a, &seed[..], b"same", b"k");
        seal_seed_into(&mut b, &seed[..], b"same", b"k");
        assert_ne!(a[..INFO_LEN], b[..INFO_LEN]);
        assert_ne!(
            a[INFO_LEN..INFO_LEN + NONCE_LEN],
            b[INFO_LEN..INFO_LEN + NONCE_LEN]
        );
    }

    #[test]
    fn legacy_opens_with_the_dek() {
        for klen in [16usize, 32] {
            let dek = vec![0x42; klen];
            let alg = if klen == 16 {
                &AES_128_GCM
            } else {
                &AES_256_GCM
            };
            let key = LessSafeKey::new(UnboundKey::new(alg, &dek).unwrap());
            let nonce = [1u8, 2, 3, 4, 1, 0, 0, 0, 0, 0, 0, 0];
            let mut buf = b"legacy".to_vec();
            let tag = key
                .seal_in_place_separate_tag(nonce_from(&nonce), Aad::from(b"k"), &mut buf)
                .unwrap();
            let mut ed = nonce.to_vec();
            ed.extend(&buf);
            ed.extend(tag.as_ref());
            let k = UnwrappedKey::from_plugin(false, Wiped::new(dek)).unwrap();
            assert_eq!(&k.open(&ed, b"k").unwrap()[..], b"legacy");
            assert_eq!(k.open(&ed, b"x").unwrap_err(), OpenError::Auth);
        }
    }

    #[test]
    fn plugin_answers_of_the_wrong_size_are_refused() {
        assert!(UnwrappedKey::from_plugin(true, Wiped::new(vec![0; 31])).is_err());
        assert!(UnwrappedKey::from_plugin(true, Wiped::new(vec![0; 48])).is_ok());
        assert!(UnwrappedKey::from_plugin(false, Wiped::new(vec![0; 24])).is_err());
        let k = UnwrappedKey::from_plugin(true, Wiped::new(vec![0; 32])).unwrap();
        assert_eq!(format!("{k:?}"), "UnwrappedKey::Seed(<redacted>)");
    }
}
