//! Entry points for the fuzz targets (`fuzz/`), behind the `fuzzing`
//! feature: the formats the plugin reads from outside, each with the
//! invariants a fuzzer checks. Not part of the plugin's API.

use crate::backend::tpm::duplicate::{Bundle, Target};
use crate::keyring;
use crate::secret::SecretKey;
use crate::wire::{self, Algorithm};

/// A key ring file: parsing never panics, and an accepted ring survives
/// being written and read again unchanged.
pub fn key_ring(bytes: &[u8]) {
    let Ok(ring) = keyring::parse(bytes) else {
        return;
    };
    let text = serde_json::to_vec(&ring).expect("an accepted ring serializes");
    let again = keyring::parse(&text).expect("a written ring parses again");
    assert_eq!(again.ring_id, ring.ring_id);
    assert_eq!(again.next_version, ring.next_version);
    assert_eq!(again.keys.len(), ring.keys.len());
    for (a, b) in again.keys.iter().zip(&ring.keys) {
        assert_eq!(
            (a.version, &a.key_id, a.state),
            (b.version, &b.key_id, b.state)
        );
    }
}

/// A Decrypt request's ciphertext for a key held in memory: never a
/// panic, never accepted unless it really is a sealing of that key (a
/// fuzzer cannot forge one), and what the key seals opens again.
pub fn plugin_ciphertext(bytes: &[u8]) {
    let key = SecretKey::from_slice(&[7u8; 32]).expect("32 bytes");
    for alg in Algorithm::ALL {
        let _ = wire::algorithm_of(bytes);
        assert!(
            wire::open(alg, &key, "fuzz-key", bytes).is_err(),
            "an arbitrary ciphertext opened"
        );
        if bytes.len() <= alg.max_plaintext() {
            let sealed = wire::seal(alg, &key, "fuzz-key", bytes).expect("seal");
            let opened = wire::open(alg, &key, "fuzz-key", &sealed).expect("open");
            assert_eq!(&opened[..], bytes);
            assert!(wire::open(alg, &key, "other-key", &sealed).is_err());
        }
    }
    let _ = crate::backend::tpm::resident::check_ciphertext(bytes);
    transit_bytes(bytes);
}

/// The transit backend's inputs from outside: a Decrypt ciphertext (what
/// parses re-encodes to the same bytes), Transit's `vault:v<N>:` text, and
/// the server's key and health answers: never a panic.
fn transit_bytes(bytes: &[u8]) {
    use crate::backend::transit::{format, keys};
    if let Ok(p) = format::parse(bytes)
        && bytes.len() <= kms_proto::contract::MAX_CIPHERTEXT
    {
        let again = format::encode(p.version, p.transit).expect("a parsed ciphertext fits");
        assert_eq!(again, bytes);
    }
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Ok((v, raw)) = format::from_vault(text)
    {
        assert_eq!(format::from_vault(&format::to_vault(v, &raw)), Ok((v, raw)));
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let _ = keys::parse_health(&v);
        let id = keys::Identity {
            cluster_id: "fuzz".into(),
            namespace: String::new(),
            mount: "transit".into(),
            key: "k".into(),
        };
        if let Ok(k) = keys::parse_key(&id, &v) {
            assert!(k.versions.contains_key(&k.latest));
        }
    }
}

/// A `key share` bundle and a `key export-target` file: parsing and every
/// check that needs no TPM never panic.
pub fn share_files(bytes: &[u8]) {
    if let Ok(b) = Bundle::parse(bytes) {
        let _ = b.check();
    }
    if let Ok(t) = serde_json::from_slice::<Target>(bytes) {
        let _ = t.public();
    }
}
