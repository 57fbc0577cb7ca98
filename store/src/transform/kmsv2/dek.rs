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
//! one AES key schedule and one AEAD pass over a buffer sized once.
//!
//! HKDF-Expand of a 32-byte key is one HMAC-SHA256 over `info ‖ 0x01`: four
//! SHA-256 blocks, two of which (the seed ⊕ ipad and ⊕ opad blocks) are the
//! same for every value of a seed. A [`SeedKey`] computes those two once,
//! when the seed is unwrapped or generated, and keeps the two hash states
//! (key-equivalent: they are wiped with it); each value then costs two
//! blocks (`sha2::compress256`, SHA-NI where the CPU has it). The derived key
//! lives in a wiped array until ring's AES key is made from it.

use std::fmt;

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use sha2::digest::generic_array::GenericArray;

use crate::rand;
use crate::stages::{self, Stage};
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
    Seed(SeedKey),
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
            Ok(UnwrappedKey::Seed(SeedKey::new(&bytes)))
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
            UnwrappedKey::Seed(seed) => seed.open(encrypted_data, aad),
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

/// SHA-256's initial hash value.
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

const BLOCK: usize = 64;

fn compress(state: &mut [u32; 8], block: &[u8; BLOCK]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

fn state_bytes(state: &[u32; 8], out: &mut [u8]) {
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
}

/// SHA-256 of `msg` with every intermediate buffer wiped (for seeds longer
/// than a block, which HMAC hashes first).
fn sha256_wiped(msg: &[u8]) -> Wiped<[u8; 32]> {
    let mut st = Wiped::new(SHA256_IV);
    let mut blocks = msg.chunks_exact(BLOCK);
    let mut block = Wiped::new([0u8; BLOCK]);
    for b in &mut blocks {
        block.copy_from_slice(b);
        compress(&mut st, &block);
    }
    let rest = blocks.remainder();
    block.fill(0);
    block[..rest.len()].copy_from_slice(rest);
    block[rest.len()] = 0x80;
    if rest.len() + 1 > BLOCK - 8 {
        compress(&mut st, &block);
        block.fill(0);
    }
    block[BLOCK - 8..].copy_from_slice(&((msg.len() as u64) * 8).to_be_bytes());
    compress(&mut st, &block);
    let mut out = Wiped::new([0u8; 32]);
    state_bytes(&st, &mut out[..]);
    out
}

/// A seed, kept as HMAC-SHA256 keyed by it needs it: the hash states after
/// the key's inner (⊕ 0x36) and outer (⊕ 0x5c) blocks. They are
/// key-equivalent, so they are wiped when dropped and never printed.
pub(crate) struct SeedKey {
    inner: Wiped<[u32; 8]>,
    outer: Wiped<[u32; 8]>,
}

impl fmt::Debug for SeedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeedKey(<redacted>)")
    }
}

impl SeedKey {
    /// Precomputes the HMAC states of `seed` (hashed first when longer than
    /// a block, as HMAC does).
    pub(crate) fn new(seed: &[u8]) -> Self {
        let mut key = Wiped::new([0u8; BLOCK]);
        if seed.len() > BLOCK {
            key[..32].copy_from_slice(&sha256_wiped(seed)[..]);
        } else {
            key[..seed.len()].copy_from_slice(seed);
        }
        let mut block = Wiped::new([0u8; BLOCK]);
        let mut pad = |byte: u8| {
            for (b, k) in block.iter_mut().zip(key.iter()) {
                *b = k ^ byte;
            }
            let mut st = Wiped::new(SHA256_IV);
            compress(&mut st, &block);
            st
        };
        SeedKey {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }

    /// The per-value key: HKDF-SHA256 Expand (PRK = seed, `info`, 32
    /// bytes), which is HMAC(seed, info ‖ 0x01): one block on each state.
    fn derive(&self, info: &[u8]) -> LessSafeKey {
        debug_assert_eq!(info.len(), INFO_LEN);
        // Inner: info ‖ 0x01, padded; the length counts the key block.
        let mut block = Wiped::new([0u8; BLOCK]);
        block[..INFO_LEN].copy_from_slice(info);
        block[INFO_LEN] = 0x01;
        block[INFO_LEN + 1] = 0x80;
        block[BLOCK - 8..].copy_from_slice(&(((BLOCK + INFO_LEN + 1) * 8) as u64).to_be_bytes());
        // Copied into wiped memory directly, not through a stack temporary.
        let mut st = Wiped::new([0u32; 8]);
        st.copy_from_slice(&self.inner[..]);
        compress(&mut st, &block);
        // Outer: the inner digest, padded.
        block.fill(0);
        state_bytes(&st, &mut block[..32]);
        block[32] = 0x80;
        block[BLOCK - 8..].copy_from_slice(&(((BLOCK + 32) * 8) as u64).to_be_bytes());
        st.copy_from_slice(&self.outer[..]);
        compress(&mut st, &block);
        let mut dek = Wiped::new([0u8; 32]);
        state_bytes(&st, &mut dek[..]);
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &dek[..]).expect("32 bytes is an AES-256 key"),
        )
    }

    /// Appends `info ‖ nonce ‖ AES-256-GCM(plaintext) ‖ tag` to `out`; `out`
    /// should have room for `plaintext.len() + SEED_OVERHEAD` more bytes.
    pub(crate) fn seal_into(&self, out: &mut Vec<u8>, plaintext: &[u8], aad: &[u8]) {
        let start = out.len();
        // info and nonce in one draw from the batched OS randomness.
        out.resize(start + INFO_LEN + NONCE_LEN, 0);
        rand::fill(&mut out[start..]);
        out.extend_from_slice(plaintext);
        let (head, body) = out[start..].split_at_mut(INFO_LEN + NONCE_LEN);
        let key = stages::time(Stage::Derive, || self.derive(&head[..INFO_LEN]));
        let nonce = nonce_from(&head[INFO_LEN..]);
        let tag: Tag = stages::time(Stage::Aead, || {
            key.seal_in_place_separate_tag(nonce, Aad::from(aad), body)
        })
        .expect("AES-GCM seals up to 64 GiB per nonce; a stored value is far smaller");
        out.extend_from_slice(tag.as_ref());
    }

    /// Opens seed-mode `encryptedData`.
    pub(crate) fn open(
        &self,
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
        let key = stages::time(Stage::Derive, || self.derive(info));
        open_with(&key, nonce_from(nonce), ct_and_tag, aad)
    }
}

/// Appends `info ‖ nonce ‖ AES-256-GCM(plaintext) ‖ tag` to `out`, sealed
/// with a key derived from `seed` (see [`SeedKey::seal_into`]).
#[cfg(test)]
pub(crate) fn seal_seed_into(out: &mut Vec<u8>, seed: &[u8], plaintext: &[u8], aad: &[u8]) {
    SeedKey::new(seed).seal_into(out, plaintext, aad);
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
    stages::time(Stage::Aead, || {
        let mut buf = Wiped::new(ct.to_vec());
        key.open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(tag), &mut buf[..], 0..)
            .map_err(|_| OpenError::Auth)?;
        Ok(buf)
    })
}

/// Opens seed-mode `encryptedData` with a key derived from `seed`.
#[cfg(test)]
pub(crate) fn open_seed(
    seed: &[u8],
    encrypted_data: &[u8],
    aad: &[u8],
) -> Result<Wiped<Vec<u8>>, OpenError> {
    SeedKey::new(seed).open(encrypted_data, aad)
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
    let key = stages::time(Stage::Derive, || UnboundKey::new(alg, dek))
        .map(LessSafeKey::new)
        .map_err(|_| OpenError::Auth)?;
    let (nonce, ct_and_tag) = encrypted_data.split_at(NONCE_LEN);
    open_with(&key, nonce_from(nonce), ct_and_tag, aad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::hkdf::{HKDF_SHA256, Prk};

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

    /// The precomputed HMAC states give exactly ring's HKDF-SHA256 Expand,
    /// for seeds shorter than, as long as and longer than a SHA-256 block.
    #[test]
    fn precomputed_expand_is_hkdf() {
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        for len in [32usize, 33, 55, 56, 63, 64, 65, 100, 119, 120, 128, 200] {
            let mut seed = vec![0u8; len];
            crate::rand::fill(&mut seed);
            let info: [u8; INFO_LEN] = crate::rand::array();
            let mut want = [0u8; 32];
            Prk::new_less_safe(HKDF_SHA256, &seed)
                .expand(&[&info], Len32)
                .unwrap()
                .fill(&mut want)
                .unwrap();
            let key = SeedKey::new(&seed).derive(&info);
            // Same key: a value sealed with ring's key opens with ours.
            let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &want).unwrap());
            let mut buf = b"hkdf".to_vec();
            let nonce = [7u8; NONCE_LEN];
            let tag = ring_key
                .seal_in_place_separate_tag(nonce_from(&nonce), Aad::from(b"a"), &mut buf)
                .unwrap();
            buf.extend_from_slice(tag.as_ref());
            let opened = open_with(&key, nonce_from(&nonce), &buf, b"a")
                .unwrap_or_else(|_| panic!("a {len}-byte seed derives another key than HKDF"));
            assert_eq!(&opened[..], b"hkdf");
        }
    }

    #[test]
    fn sha256_of_every_padding_case() {
        for len in [0usize, 1, 55, 56, 63, 64, 65, 119, 120, 200] {
            let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let want = ring::digest::digest(&ring::digest::SHA256, &msg);
            assert_eq!(&sha256_wiped(&msg)[..], want.as_ref(), "{len} bytes");
        }
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
