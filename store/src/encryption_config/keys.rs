//! The key lists of aesgcm, aescbc and secretbox providers: each key has a
//! name (required, without `:`, unique within its provider: it is part of
//! the stored prefix) and a base64 secret of an accepted length, decoded
//! straight into a zeroizing buffer and never echoed in an error.

use std::collections::HashSet;

use super::KeyConfig;
use super::base64::decode_base64_std;
use super::decode::RawKeys;
use super::validate::Errors;
use crate::k8s::go_quote as q;

/// Validates the `keys:` of the provider at `path` (key sizes in bytes from
/// `sizes`); returns the keys that passed, in file order.
pub(super) fn validate_keys(
    raw: RawKeys,
    path: &str,
    sizes: &[usize],
    errs: &mut Errors,
) -> Vec<KeyConfig> {
    let raw = raw.keys.unwrap_or_default();
    if raw.is_empty() {
        errs.required(path, "at least one keys is required");
        return Vec::new();
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut keys = Vec::with_capacity(raw.len());
    for (i, key) in raw.into_iter().enumerate() {
        let kp = format!("{path}[{i}]");
        let name = key.name.unwrap_or_default();
        let name_path = format!("{kp}.name");
        if name.is_empty() {
            errs.required(&name_path, "name is a mandatory field for a key");
        } else if name.contains(':') {
            // Stricter than upstream: `k8s:enc:aesgcm:v1:a:b:` would be
            // ambiguous between keys `a` and `a:b`.
            errs.invalid(
                &name_path,
                q(&name),
                "key names must not contain ':' (the name is part of the stored prefix k8s:enc:<provider>:v1:<name>:)",
            );
        } else if !seen.insert(name.clone()) {
            // Stricter than upstream: two keys with one name share a prefix.
            errs.duplicate(&name_path, q(&name));
        }
        let secret_path = format!("{kp}.secret");
        let text = match key.secret {
            Some(s) if !s.0.is_empty() => s,
            _ => {
                errs.required(&secret_path, "secret is a mandatory field for a key");
                continue;
            }
        };
        let Some(secret) = decode_base64_std(&text.0) else {
            errs.invalid(
                &secret_path,
                q("REDACTED"),
                "secrets must be base64 encoded",
            );
            continue;
        };
        if !sizes.contains(&secret.len()) {
            let expected: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
            errs.invalid(
                &secret_path,
                q("REDACTED"),
                format!(
                    "secret is not of the expected length, got {}, expected one of [{}]",
                    secret.len(),
                    expected.join(" ")
                ),
            );
            continue;
        }
        keys.push(KeyConfig::new(name, secret));
    }
    keys
}

#[cfg(test)]
mod tests {
    use crate::encryption_config::test_support::*;

    #[test]
    fn wrong_key_length_names_the_field_and_redacts() {
        let e = invalid(&doc(&format!(
            "  - identity: {{}}\n  - aesgcm:\n      keys:\n      - name: k\n        secret: {}\n",
            "MDEyMzQ1Njc4OQ=="
        )));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[1].aesgcm.keys[0].secret: Invalid value: "REDACTED": secret is not of the expected length, got 10, expected one of [16 24 32]"#
        );
    }

    #[test]
    fn secretbox_needs_32_bytes() {
        let e = invalid(&doc(&format!(
            "  - secretbox:\n      keys:\n      - name: k\n        secret: {K16}\n"
        )));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[0].secretbox.keys[0].secret: Invalid value: "REDACTED": secret is not of the expected length, got 16, expected one of [32]"#
        );
        assert_no_key_material(&e.to_string());
    }

    #[test]
    fn bad_base64_is_refused_without_echo() {
        let e = invalid(&doc(
            "  - aescbc:\n      keys:\n      - name: k\n        secret: not-base64!!\n",
        ));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[0].aescbc.keys[0].secret: Invalid value: "REDACTED": secrets must be base64 encoded"#
        );
        // Unpadded base64 is refused too (Go's StdEncoding wants padding).
        let e = invalid(&doc(
            "  - aescbc:\n      keys:\n      - name: k\n        secret: qRGwRx4KK0MkLWtofcOcpQ\n",
        ));
        assert!(e.to_string().contains("secrets must be base64 encoded"));
    }

    #[test]
    fn key_name_rules() {
        let e = invalid(&doc(&format!(
            "  - aesgcm:\n      keys:\n      - secret: {K16}\n      - name: a:b\n        secret: {K16}\n      - name: x\n        secret: {K16}\n      - name: x\n        secret: {K32}\n"
        )));
        let s = e.to_string();
        assert!(s.contains("resources[0].providers[0].aesgcm.keys[0].name: Required value: name is a mandatory field for a key"), "{s}");
        assert!(s.contains(r#"resources[0].providers[0].aesgcm.keys[1].name: Invalid value: "a:b": key names must not contain ':'"#), "{s}");
        assert!(
            s.contains(r#"resources[0].providers[0].aesgcm.keys[3].name: Duplicate value: "x""#),
            "{s}"
        );
        assert_no_key_material(&s);
    }

    #[test]
    fn missing_secret_and_missing_keys() {
        let e = invalid(&doc("  - aesgcm:\n      keys:\n      - name: k\n"));
        assert_eq!(
            e.to_string(),
            "resources[0].providers[0].aesgcm.keys[0].secret: Required value: secret is a mandatory field for a key"
        );
        let e = invalid(&doc("  - aescbc:\n      keys: []\n"));
        assert_eq!(
            e.to_string(),
            "resources[0].providers[0].aescbc.keys: Required value: at least one keys is required"
        );
    }
}
