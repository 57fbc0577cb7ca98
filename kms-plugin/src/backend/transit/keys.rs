//! What the transit backend knows of its key: the server's cluster id
//! (`sys/health`), the key's versions (`<mount>/keys/<key>`), and the
//! key_ids derived from them.
//!
//! ```text
//! key_id = "transit-" key "-v" version "-" key_id_hash(
//!            "kms-plugin/transit/key-id/v1", cluster_id, namespace, mount,
//!            key, u32be(version), creation time of the version)
//! (key_id_hash: 48 bits of SHA-256 over the length-prefixed parts)
//! ```
//!
//! The cluster id is the same from every node and every address of one
//! cluster (so every control-plane node derives the same key_id), and
//! differs between clusters; the creation time makes a key deleted and
//! created again under the same name give new key_ids. The key name and
//! version are shown for people; the digest is what makes the key_id one
//! key's.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// The key_id prefix of every transit key.
pub(crate) const PREFIX: &str = "transit-";
const DIGEST_LABEL: &[u8] = b"kms-plugin/transit/key-id/v1";
/// Hex digits of the digest in a key_id (`key_id_hash`).
const DIGEST_HEX: usize = 12;

/// The key types the backend wraps with, and the bytes Transit adds to a
/// plaintext with each (nonce and tag).
const KEY_TYPES: &[(&str, usize)] = &[
    ("aes256-gcm96", 28),
    ("aes128-gcm96", 28),
    ("chacha20-poly1305", 28),
    ("xchacha20-poly1305", 40),
];

/// Where a key lives: what its key_ids are derived from besides the
/// version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The server cluster's id.
    pub cluster_id: String,
    /// The namespace ("" for none).
    pub namespace: String,
    /// The mount.
    pub mount: String,
    /// The key name.
    pub key: String,
}

/// The key's state as last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyInfo {
    /// The newest version (what Encrypt uses).
    pub latest: u32,
    /// Versions below this no longer decrypt (retired).
    pub min_decryption: u32,
    /// Every version that decrypts, with its key_id.
    pub versions: BTreeMap<u32, Arc<str>>,
    /// The Transit key type.
    pub key_type: String,
    /// Whether the key derives per-context keys (a context is then sent).
    pub derived: bool,
    /// The bytes Transit adds to a plaintext.
    pub overhead: usize,
}

impl KeyInfo {
    /// The active key_id.
    pub(crate) fn active(&self) -> Arc<str> {
        // `parse_key` checked that the latest version is listed.
        self.versions
            .get(&self.latest)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }
}

/// What the server said of itself (`sys/health`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// Unsealed, with this cluster id.
    Ready(String),
    /// Sealed.
    Sealed,
    /// Not initialised.
    Uninitialized,
}

/// Reads `sys/health`'s answer.
pub(crate) fn parse_health(v: &Value) -> Result<Health, String> {
    let flag = |name: &str| -> Result<bool, String> {
        v.get(name)
            .and_then(Value::as_bool)
            .ok_or_else(|| format!("sys/health has no boolean {name:?}"))
    };
    if !flag("initialized")? {
        return Ok(Health::Uninitialized);
    }
    if flag("sealed")? {
        return Ok(Health::Sealed);
    }
    match v.get("cluster_id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.len() <= 128 => Ok(Health::Ready(id.to_string())),
        Some(_) => Err("sys/health's cluster_id is empty or too long".into()),
        None => Err("sys/health has no cluster_id".into()),
    }
}

/// The key_id of version `version` of the Transit key `id.key` in mount
/// `id.mount` (namespace `id.namespace`, "" for none) of the cluster
/// `id.cluster_id`, created at `created` (as `keys/<key>` lists it): the
/// one derivation, which the end-to-end tests call too.
pub fn key_id(id: &Identity, version: u32, created: &str) -> String {
    let digest = crate::backend::key_id_hash(&[
        DIGEST_LABEL,
        id.cluster_id.as_bytes(),
        id.namespace.as_bytes(),
        id.mount.as_bytes(),
        id.key.as_bytes(),
        &version.to_be_bytes(),
        created.as_bytes(),
    ]);
    format!("{PREFIX}{}-v{version}-{digest}", id.key)
}

/// The version a key_id of key `key` names, if it has the shape of one
/// (`transit-<key>-v<N>-<12 hex>`); whether it is really one is for the
/// key's versions to say.
pub(crate) fn version_of(key: &str, key_id: &str) -> Option<u32> {
    let rest = key_id
        .strip_prefix(PREFIX)?
        .strip_prefix(key)?
        .strip_prefix("-v")?;
    let (v, digest) = rest.split_once('-')?;
    if v.is_empty()
        || v.starts_with('0')
        || !v.bytes().all(|c| c.is_ascii_digit())
        || digest.len() != DIGEST_HEX
        || !digest
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    v.parse().ok()
}

fn uint(v: &Value, name: &str) -> Result<u32, String> {
    v.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("the key has no number {name:?}"))
        .and_then(|n| u32::try_from(n).map_err(|_| format!("{name} {n} is out of range")))
}

/// Reads `<mount>/keys/<key>`'s `data` into the key's state, with the
/// key_ids of `id`. Refuses key types that cannot wrap with associated
/// data, and answers that are not Transit's.
pub(crate) fn parse_key(id: &Identity, data: &Value) -> Result<KeyInfo, String> {
    let key_type = data
        .get("type")
        .and_then(Value::as_str)
        .ok_or("the key has no \"type\"")?
        .to_string();
    let overhead = KEY_TYPES
        .iter()
        .find(|(t, _)| *t == key_type)
        .map(|(_, o)| *o)
        .ok_or_else(|| {
            format!(
                "key {} is of type {key_type}, which does not encrypt with associated data: use a key of type {} (bao write {}/keys/NAME type=aes256-gcm96)",
                id.key,
                KEY_TYPES.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", "),
                id.mount
            )
        })?;
    for flag in ["supports_encryption", "supports_decryption"] {
        if data.get(flag).and_then(Value::as_bool) == Some(false) {
            return Err(format!("key {} does not allow {flag}", id.key));
        }
    }
    if data.get("convergent_encryption").and_then(Value::as_bool) == Some(true) {
        return Err(format!(
            "key {} uses convergent encryption (a nonce chosen by the caller): use a key without it",
            id.key
        ));
    }
    let derived = data
        .get("derived")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let latest = uint(data, "latest_version")?;
    let min_decryption = uint(data, "min_decryption_version")?.max(1);
    if latest == 0 {
        return Err("latest_version is 0".into());
    }
    let keys = data
        .get("keys")
        .and_then(Value::as_object)
        .ok_or("the key has no \"keys\" map of versions")?;
    let mut versions = BTreeMap::new();
    for (v, facts) in keys {
        let version: u32 = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!(
                "the key lists a version {:?}, not a number",
                kms_proto::contract::printable(v, 20)
            )
        })?;
        // Symmetric keys: the creation time in seconds; other types: an
        // object with creation_time.
        let created = match facts {
            Value::Number(n) => n.to_string(),
            Value::Object(o) => o
                .get("creation_time")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("version {version} has no creation_time"))?,
            _ => return Err(format!("version {version} has no creation time")),
        };
        if version >= min_decryption {
            versions.insert(version, Arc::from(key_id(id, version, &created)));
        }
    }
    if !versions.contains_key(&latest) {
        return Err(format!(
            "the latest version {latest} is not among the versions listed"
        ));
    }
    Ok(KeyInfo {
        latest,
        min_decryption,
        versions,
        key_type,
        derived,
        overhead,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            cluster_id: "638f083b-0791-c099-d103-35aff312978d".into(),
            namespace: String::new(),
            mount: "transit".into(),
            key: "k1".into(),
        }
    }

    fn answer(extra: Value) -> Value {
        let mut v = serde_json::json!({
            "type": "aes256-gcm96", "derived": false,
            "keys": {"1": 1796195298u64, "2": 1796195387u64, "3": 1796195387u64},
            "latest_version": 3, "min_decryption_version": 1, "min_encryption_version": 0,
            "supports_encryption": true, "supports_decryption": true,
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                o.insert(k.clone(), x.clone());
            }
        }
        v
    }

    #[test]
    fn key_ids_are_fixed_stable_and_distinct() {
        let k = key_id(&id(), 3, "1796195387");
        // A fixed vector (Python hashlib gives the same): the derivation is
        // a format, key_ids are stored with every Secret.
        assert_eq!(k, "transit-k1-v3-364919bf5997");
        assert_eq!(version_of("k1", &k), Some(3));
        assert_eq!(key_id(&id(), 3, "1796195387"), k);
        let mut other = id();
        other.cluster_id.push('x');
        assert_ne!(key_id(&other, 3, "1796195387"), k);
        assert_ne!(key_id(&id(), 3, "1796195388"), k, "a key made again");
        let mut ns = id();
        ns.namespace = "team".into();
        assert_ne!(key_id(&ns, 3, "1796195387"), k);
        for bad in [
            "transit-k1-v3-364919bf599",
            "transit-k1-v03-364919bf5997",
            "transit-k1-v-364919bf5997",
            "transit-k2-v3-364919bf5997",
            "transit-k1-v3-364919BF5997",
            "transit-0000000000000000-v9-000000000000",
            "soft-k1-v3-364919bf5997",
        ] {
            assert_eq!(version_of("k1", bad), None, "{bad}");
        }
    }

    #[test]
    fn key_answers() {
        let k = parse_key(&id(), &answer(serde_json::json!({}))).unwrap();
        assert_eq!(k.latest, 3);
        assert_eq!(k.versions.len(), 3);
        assert_eq!(k.overhead, 28);
        assert_eq!(&*k.active(), key_id(&id(), 3, "1796195387"));
        let k = parse_key(
            &id(),
            &answer(serde_json::json!({"min_decryption_version": 2, "keys": {"2": 5, "3": 6}})),
        )
        .unwrap();
        assert_eq!(k.versions.keys().copied().collect::<Vec<_>>(), [2, 3]);
        for (extra, want) in [
            (
                serde_json::json!({"type": "rsa-2048"}),
                "does not encrypt with associated data",
            ),
            (serde_json::json!({"type": null}), "no \"type\""),
            (
                serde_json::json!({"latest_version": "3"}),
                "no number \"latest_version\"",
            ),
            (
                serde_json::json!({"latest_version": 4}),
                "latest version 4 is not among",
            ),
            (serde_json::json!({"keys": []}), "no \"keys\" map"),
            (
                serde_json::json!({"keys": {"x": 1, "3": 1}}),
                "not a number",
            ),
            (serde_json::json!({"keys": {"3": true}}), "no creation time"),
            (
                serde_json::json!({"convergent_encryption": true}),
                "convergent",
            ),
            (
                serde_json::json!({"supports_decryption": false}),
                "supports_decryption",
            ),
        ] {
            let e = parse_key(&id(), &answer(extra.clone())).unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }

    #[test]
    fn health_answers() {
        let h = |v: Value| parse_health(&v);
        assert_eq!(
            h(serde_json::json!({"initialized": true, "sealed": false, "cluster_id": "c"})),
            Ok(Health::Ready("c".into()))
        );
        assert_eq!(
            h(serde_json::json!({"initialized": true, "sealed": true})),
            Ok(Health::Sealed)
        );
        assert_eq!(
            h(serde_json::json!({"initialized": false, "sealed": true})),
            Ok(Health::Uninitialized)
        );
        assert!(h(serde_json::json!({"initialized": true, "sealed": false})).is_err());
        assert!(h(serde_json::json!({"sealed": false})).is_err());
    }
}
