//! A ring's history may only move forward: the rules every reload, every
//! `key` command and every merge (`key import`, `key restore`) follow.
//!
//! A newer version of a ring keeps its ring id and backend, never lowers
//! its version counter, keeps every key that was not retired, never brings
//! a retired key back, and never gives a version to another key_id. What
//! arrives from outside (another node's keys, a backup) may only add keys,
//! and only as *staged*: nothing from outside removes a key, retires one or
//! changes which key is active.

use super::{KeyEntry, KeyState, Keyring, KeyringError};

/// The public facts of one version of a ring: what a newer version must
/// keep. Holds no material.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// The ring id.
    pub ring_id: String,
    /// The backend.
    pub backend: String,
    /// The version counter.
    pub next_version: u64,
    /// Every key: version, key_id, state.
    pub keys: Vec<(u64, String, KeyState)>,
}

impl Lineage {
    /// The facts of `ring`.
    pub fn of(ring: &Keyring) -> Self {
        Lineage {
            ring_id: ring.ring_id.clone(),
            backend: ring.backend.clone(),
            next_version: ring.next_version,
            keys: ring
                .keys
                .iter()
                .map(|k| (k.version, k.key_id.clone(), k.state))
                .collect(),
        }
    }

    /// Checks that `newer` can follow this version: every reason it
    /// cannot, joined; nothing is quoted from material.
    pub fn check(&self, newer: &Keyring) -> Result<(), String> {
        let mut problems = Vec::new();
        if newer.ring_id != self.ring_id {
            problems.push(format!(
                "it is another ring ({}, not {})",
                newer.ring_id, self.ring_id
            ));
        }
        if newer.backend != self.backend {
            problems.push(format!(
                "it belongs to backend {:?}, not {:?}",
                newer.backend, self.backend
            ));
        }
        if newer.next_version < self.next_version {
            problems.push(format!(
                "its version counter went down ({} < {}): an older copy",
                newer.next_version, self.next_version
            ));
        }
        for (version, key_id, state) in &self.keys {
            match newer.get(key_id) {
                None if state.is_live() => problems.push(format!(
                    "it lacks key {key_id} ({state}, version {version})"
                )),
                None => {}
                Some(n) if n.version != *version => problems.push(format!(
                    "key {key_id} has version {} instead of {version}",
                    n.version
                )),
                Some(n) if *state == KeyState::Retired && n.state.is_live() => {
                    problems.push(format!("key {key_id} was retired and is {} again", n.state))
                }
                Some(_) => {}
            }
        }
        for n in &newer.keys {
            if let Some((_, id, _)) = self
                .keys
                .iter()
                .find(|(v, id, _)| *v == n.version && *id != n.key_id)
            {
                problems.push(format!(
                    "version {} is {} instead of {id}",
                    n.version, n.key_id
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// How keys from outside the ring are merged into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeMode {
    /// `key import`: another node's keys. Each is added as staged; a key
    /// this ring retired, a version held by another key, or a key without
    /// material is refused; nothing else changes.
    Import,
    /// `key restore`: a ring file from a backup or from another node. Keys
    /// the ring lacks are added as staged, or as retired (metadata only)
    /// where the file says retired; keys the ring has are left as they are.
    Restore,
}

/// What a merge did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merge {
    /// Keys added as staged.
    pub staged: Vec<String>,
    /// Keys added as retired (metadata only; restore).
    pub retired: Vec<String>,
    /// Keys the ring already had.
    pub present: Vec<String>,
}

impl Keyring {
    /// Merges `incoming` (the entries of ring `ring_id`, whose counter was
    /// `next_version`, already in this backend's material form) into this
    /// ring by `mode`. On any refusal the ring is left unchanged.
    pub fn merge(
        &mut self,
        ring_id: &str,
        next_version: u64,
        incoming: Vec<KeyEntry>,
        mode: MergeMode,
    ) -> Result<Merge, KeyringError> {
        let refuse = |m: String| Err(KeyringError::Refused(m));
        if ring_id != self.ring_id {
            return refuse(format!(
                "the keys belong to ring {ring_id}, this ring is {}: refusing to mix rings",
                self.ring_id
            ));
        }
        let max_incoming = incoming.iter().map(|e| e.version).max().unwrap_or(0);
        if next_version <= max_incoming || next_version > max_incoming.saturating_add(1 << 20) {
            return refuse(format!(
                "the keys claim a version counter of {next_version} for versions up to {max_incoming}"
            ));
        }
        // Plan every addition against the ring (and each other) first; the
        // ring changes only once all of them are accepted.
        let mut out = Merge::default();
        let mut plan: Vec<KeyEntry> = Vec::new();
        for mut e in incoming {
            let have_id = self
                .get(&e.key_id)
                .or_else(|| plan.iter().find(|k| k.key_id == e.key_id));
            if let Some(have) = have_id {
                if have.version != e.version {
                    return refuse(format!(
                        "key {} is version {} here but {} in what is merged: the rings diverged",
                        e.key_id, have.version, e.version
                    ));
                }
                if mode == MergeMode::Import && have.state == KeyState::Retired {
                    return refuse(format!(
                        "key {} was retired on this node; an old copy cannot bring it back",
                        e.key_id
                    ));
                }
                out.present.push(e.key_id);
                continue;
            }
            let have_version = self
                .keys
                .iter()
                .chain(plan.iter())
                .find(|k| k.version == e.version);
            if let Some(have) = have_version {
                return refuse(format!(
                    "version {} is {} here but {} in what is merged: the rings diverged",
                    e.version, have.key_id, e.key_id
                ));
            }
            match (mode, e.state, e.material.is_some()) {
                (MergeMode::Restore, KeyState::Retired, _) => {
                    e.material = None;
                    out.retired.push(e.key_id.clone());
                }
                (MergeMode::Import, KeyState::Retired, _) | (_, _, false) => {
                    return refuse(format!(
                        "key {} comes without material: only live keys can be added",
                        e.key_id
                    ));
                }
                _ => {
                    e.state = KeyState::Staged;
                    e.retired = None;
                    out.staged.push(e.key_id.clone());
                }
            }
            plan.push(e);
        }
        let before = self.next_version;
        let added: Vec<String> = plan.iter().map(|e| e.key_id.clone()).collect();
        self.keys.extend(plan);
        self.keys.sort_by_key(|k| k.version);
        self.next_version = self.next_version.max(next_version);
        if let Err(reason) = self.validate() {
            self.keys.retain(|k| !added.contains(&k.key_id));
            self.next_version = before;
            return refuse(format!("the merged ring would be invalid: {reason}"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Material, now_rfc3339};
    use super::*;

    fn entry(v: u64, id: &str, state: KeyState) -> KeyEntry {
        KeyEntry {
            version: v,
            key_id: id.into(),
            algorithm: "aes-256-gcm".into(),
            created: now_rfc3339(),
            state,
            retired: None,
            material: state
                .is_live()
                .then(|| Material::single("key", &[v as u8; 32])),
        }
    }

    fn ring() -> Keyring {
        let mut r = Keyring::new("software").unwrap();
        r.push_active(entry(1, "k1", KeyState::Active)).unwrap();
        r.push_active(entry(2, "k2", KeyState::Active)).unwrap();
        r
    }

    #[test]
    fn a_ring_may_only_move_forward() {
        let old = ring();
        let l = Lineage::of(&old);
        // Adding, activating and retiring are forward moves.
        let mut newer = ring();
        newer.ring_id = old.ring_id.clone();
        newer.push_staged(entry(3, "k3", KeyState::Staged)).unwrap();
        newer.activate("k3").unwrap();
        newer.retire("k1", now_rfc3339()).unwrap();
        assert!(l.check(&newer).is_ok(), "{:?}", l.check(&newer));
        // Going back from there is not.
        let back = Lineage::of(&newer);
        let e = back.check(&old).unwrap_err();
        assert!(e.contains("version counter went down"), "{e}");
        assert!(e.contains("lacks key k3"), "{e}");
        assert!(e.contains("k1 was retired and is enabled again"), "{e}");
        // Another ring, another backend, a version given to another key.
        let mut other = ring();
        other.backend = "tpm-sealed".into();
        let e = l.check(&other).unwrap_err();
        assert!(e.contains("another ring") && e.contains("backend"), "{e}");
        let mut forged = ring();
        forged.ring_id = old.ring_id.clone();
        forged.keys[1].key_id = "k2-forged".into();
        let e = l.check(&forged).unwrap_err();
        assert!(
            e.contains("lacks key k2") && e.contains("version 2 is k2-forged"),
            "{e}"
        );
    }

    #[test]
    fn imports_only_add_staged_keys() {
        let mut r = ring();
        let id = r.ring_id.clone();
        let m = r
            .merge(
                &id,
                4,
                vec![
                    entry(3, "k3", KeyState::Active),
                    entry(2, "k2", KeyState::Enabled),
                ],
                MergeMode::Import,
            )
            .unwrap();
        assert_eq!(m.staged, ["k3"]);
        assert_eq!(m.present, ["k2"]);
        assert_eq!(r.get("k3").unwrap().state, KeyState::Staged);
        assert_eq!(
            r.active().unwrap().key_id,
            "k2",
            "the active key never changes"
        );
        assert_eq!(r.next_version, 4);
    }

    #[test]
    fn refused_merges_leave_the_ring_unchanged() {
        let mut r = ring();
        r.retire("k1", now_rfc3339()).unwrap();
        let id = r.ring_id.clone();
        let before = serde_json::to_string(&r).unwrap();
        let cases: Vec<(Vec<KeyEntry>, u64, &str)> = vec![
            (
                vec![entry(1, "k1", KeyState::Enabled)],
                3,
                "was retired on this node",
            ),
            (
                vec![entry(2, "k2-other", KeyState::Enabled)],
                3,
                "rings diverged",
            ),
            (vec![entry(5, "k2", KeyState::Enabled)], 6, "rings diverged"),
            (
                vec![entry(3, "k3", KeyState::Retired)],
                4,
                "without material",
            ),
            (vec![entry(3, "k3", KeyState::Staged)], 3, "version counter"),
            (
                vec![entry(3, "k3", KeyState::Staged)],
                u64::MAX,
                "version counter",
            ),
        ];
        for (incoming, next, want) in cases {
            let e = r
                .merge(&id, next, incoming, MergeMode::Import)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{want:?} not in {e}");
            assert_eq!(serde_json::to_string(&r).unwrap(), before);
        }
        let e = r
            .merge(
                "ffffffffffffffff",
                4,
                vec![entry(3, "k3", KeyState::Staged)],
                MergeMode::Import,
            )
            .unwrap_err();
        assert!(e.to_string().contains("refusing to mix rings"));
        assert_eq!(serde_json::to_string(&r).unwrap(), before);
    }

    #[test]
    fn restores_add_what_is_missing_and_record_retirements() {
        let mut r = ring();
        let id = r.ring_id.clone();
        let m = r
            .merge(
                &id,
                6,
                vec![
                    entry(1, "k1", KeyState::Retired),
                    entry(3, "k3", KeyState::Active),
                    entry(4, "k4", KeyState::Retired),
                ],
                MergeMode::Restore,
            )
            .unwrap();
        assert_eq!(
            (m.staged, m.retired, m.present),
            (
                vec!["k3".to_string()],
                vec!["k4".to_string()],
                vec!["k1".to_string()]
            )
        );
        assert_eq!(
            r.get("k1").unwrap().state,
            KeyState::Enabled,
            "keys the ring has stay as they are"
        );
        assert_eq!(r.get("k3").unwrap().state, KeyState::Staged);
        assert!(r.get("k4").unwrap().material.is_none());
        assert_eq!(r.active().unwrap().key_id, "k2");
        assert_eq!(r.next_version, 6);
    }
}
