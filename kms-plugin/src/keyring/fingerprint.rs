//! The ring fingerprint: a digest over the ring id and every key's version,
//! key_id and state (public facts only), so operators and alerts can see
//! that every node holds the same keys in the same states before a key is
//! activated, without comparing key lists by hand.
//!
//! ```text
//! fingerprint = "sha256:" ‖ hex(SHA-256("kms-plugin-ring-fingerprint/v1\n"
//!                 ‖ ring_id ‖ "\n" ‖ for each key by version:
//!                   version ‖ " " ‖ key_id ‖ " " ‖ state ‖ "\n"))[..32]
//! ```

use std::fmt;

use super::Keyring;

/// A ring's fingerprint (`sha256:` and 32 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of `ring` as it is now.
    pub fn of(ring: &Keyring) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"kms-plugin-ring-fingerprint/v1\n");
        ctx.update(ring.ring_id.as_bytes());
        ctx.update(b"\n");
        let mut keys: Vec<_> = ring.keys.iter().collect();
        keys.sort_by_key(|k| k.version);
        for k in keys {
            ctx.update(format!("{} {} {}\n", k.version, k.key_id, k.state).as_bytes());
        }
        let d = ctx.finish();
        Fingerprint(format!("sha256:{}", hex::encode(&d.as_ref()[..16])))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{KeyEntry, KeyState, Material};
    use super::*;

    fn ring() -> Keyring {
        Keyring {
            format: super::super::FORMAT.into(),
            ring_id: "0011223344556677".into(),
            backend: "software".into(),
            next_version: 3,
            keys: vec![
                KeyEntry {
                    version: 1,
                    key_id: "k1".into(),
                    algorithm: "aes-256-gcm".into(),
                    created: "2026-01-01T00:00:00Z".into(),
                    state: KeyState::Active,
                    retired: None,
                    material: Some(Material::single("key", &[1; 32])),
                },
                KeyEntry {
                    version: 2,
                    key_id: "k2".into(),
                    algorithm: "aes-256-gcm".into(),
                    created: "2026-01-02T00:00:00Z".into(),
                    state: KeyState::Staged,
                    retired: None,
                    material: Some(Material::single("key", &[2; 32])),
                },
            ],
        }
    }

    #[test]
    fn covers_ids_versions_and_states_not_material_or_times() {
        let r = ring();
        let fp = Fingerprint::of(&r);
        // A fixed value: nodes running different builds must agree.
        assert_eq!(fp.as_str(), "sha256:eb0f0de82bcb16afb40634b4992067fd");
        let mut other = ring();
        other.keys[0].material = Some(Material::single("key", &[9; 32]));
        other.keys[1].created = "2027-01-01T00:00:00Z".into();
        assert_eq!(
            Fingerprint::of(&other),
            fp,
            "material and times are not covered"
        );
        let mut activated = ring();
        activated.activate("k2").unwrap();
        assert_ne!(Fingerprint::of(&activated), fp, "states are covered");
        let mut other_ring = ring();
        other_ring.ring_id = "8899aabbccddeeff".into();
        assert_ne!(Fingerprint::of(&other_ring), fp);
        let mut fewer = ring();
        fewer.keys.pop();
        assert_ne!(Fingerprint::of(&fewer), fp);
    }
}
