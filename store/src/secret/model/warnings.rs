//! Warnings: problems that do not stop a write but that a user should hear
//! about, returned by [`validate_create`](super::validate_create) and
//! [`validate_update`](super::validate_update).
//!
//! - `kubernetes.io/tls` (upstream: the Secret strategy's
//!   `warningsForSecret` runs `tls.X509KeyPair` and returns its error as a
//!   warning). Only the PEM-level part of that check is done here, with Go's
//!   messages: a `CERTIFICATE` block in `tls.crt`, a `… PRIVATE KEY` block in
//!   `tls.key`. Parsing the DER and matching the key to the certificate is
//!   not done.
//! - `bootstrap.kubernetes.io/token` (not upstream: the apiserver accepts
//!   any such Secret; the bootstrap token authenticator then silently
//!   ignores one it cannot use). It looks up `bootstrap-token-<token-id>` in
//!   `kube-system` and needs `token-id` = `[a-z0-9]{6}`, `token-secret` =
//!   `[a-z0-9]{16}`, an RFC 3339 `expiration` if any, and extra groups
//!   matching `system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`.
//!
//! No warning contains a data value.

use std::fmt;

use super::object::Secret;
use super::types::*;
use crate::k8s::base64 as gobase64;
use crate::k8s::time as timefmt;

/// A non-fatal remark about a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The field concerned, e.g. `data[token-id]` (empty for the object).
    pub field: String,
    /// What is wrong and what follows from it.
    pub message: String,
}

impl Warning {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// The warnings for `secret` (empty for most Secrets).
pub(crate) fn warnings_for(secret: &Secret) -> Vec<Warning> {
    match secret.type_.as_str() {
        SECRET_TYPE_TLS => tls_warnings(secret),
        SECRET_TYPE_BOOTSTRAP_TOKEN => bootstrap_warnings(secret),
        _ => Vec::new(),
    }
}

/// The types of the PEM blocks in `input` whose body is valid base64, in
/// order (the blocks Go's `pem.Decode` would return).
fn pem_block_types(input: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(input);
    let mut types = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim_end()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = Vec::new();
        let mut closed = false;
        for inner in lines.by_ref() {
            let inner = inner.trim();
            if inner == end {
                closed = true;
                break;
            }
            if !inner.contains(':') {
                body.extend_from_slice(inner.as_bytes());
            }
        }
        if closed && gobase64::decode(&body).is_ok() {
            types.push(label.to_owned());
        }
    }
    types
}

fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// The PEM-level errors of Go's `tls.X509KeyPair`.
fn tls_warnings(secret: &Secret) -> Vec<Warning> {
    let (Some(cert), Some(key)) = (
        secret.data.get(TLS_CERT_KEY),
        secret.data.get(TLS_PRIVATE_KEY_KEY),
    ) else {
        return Vec::new(); // already a validation error
    };
    let cert_types = pem_block_types(cert.expose());
    if !cert_types.iter().any(|t| t == "CERTIFICATE") {
        let msg = match cert_types.as_slice() {
            [] => "tls: failed to find any PEM data in certificate input".to_owned(),
            [only] if only.ends_with("PRIVATE KEY") => "tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched".to_owned(),
            skipped => format!(
                "tls: failed to find \"CERTIFICATE\" PEM block in certificate input after skipping PEM blocks of the following types: {}",
                go_list(skipped)
            ),
        };
        return vec![Warning::new("", msg)];
    }
    let key_types = pem_block_types(key.expose());
    let is_key = |t: &String| t == "PRIVATE KEY" || t.ends_with(" PRIVATE KEY");
    if key_types.iter().any(is_key) {
        return Vec::new();
    }
    let msg = match key_types.as_slice() {
        [] => "tls: failed to find any PEM data in key input".to_owned(),
        [only] if only == "CERTIFICATE" => {
            "tls: found a certificate rather than a key in the PEM for the private key".to_owned()
        }
        skipped => format!(
            "tls: failed to find PEM block with type ending in \"PRIVATE KEY\" in key input after skipping PEM blocks of the following types: {}",
            go_list(skipped)
        ),
    };
    vec![Warning::new("", msg)]
}

fn is_token_chars(value: &[u8], len: usize) -> bool {
    value.len() == len
        && value
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`
fn is_bootstrap_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    let b = rest.as_bytes();
    let Some(&last) = b.last() else {
        return false;
    };
    b.len() <= 256
        && (last.is_ascii_lowercase() || last.is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b':' || c == b'-')
}

fn bootstrap_warnings(secret: &Secret) -> Vec<Warning> {
    let ignored = "the bootstrap token authenticator will ignore this token";
    let data = &secret.data;
    let mut out = Vec::new();
    let token_id = data.get(BOOTSTRAP_TOKEN_ID_KEY);
    match token_id {
        None => out.push(Warning::new(
            format!("data[{BOOTSTRAP_TOKEN_ID_KEY}]"),
            format!("missing: {ignored}"),
        )),
        Some(id) if !is_token_chars(id.expose(), 6) => out.push(Warning::new(
            format!("data[{BOOTSTRAP_TOKEN_ID_KEY}]"),
            format!("must be 6 characters from [a-z0-9]: {ignored}"),
        )),
        Some(_) => {}
    }
    match data.get(BOOTSTRAP_TOKEN_SECRET_KEY) {
        None => out.push(Warning::new(
            format!("data[{BOOTSTRAP_TOKEN_SECRET_KEY}]"),
            format!("missing: {ignored}"),
        )),
        Some(s) if !is_token_chars(s.expose(), 16) => out.push(Warning::new(
            format!("data[{BOOTSTRAP_TOKEN_SECRET_KEY}]"),
            format!("must be 16 characters from [a-z0-9]: {ignored}"),
        )),
        Some(_) => {}
    }
    let name_matches = token_id.is_some_and(|id| {
        secret
            .metadata
            .name
            .strip_prefix(BOOTSTRAP_TOKEN_SECRET_PREFIX)
            .is_some_and(|rest| rest.as_bytes() == id.expose())
    });
    if token_id.is_some() && !name_matches {
        out.push(Warning::new(
            "metadata.name",
            format!(
                "must be \"{BOOTSTRAP_TOKEN_SECRET_PREFIX}\" followed by data[{BOOTSTRAP_TOKEN_ID_KEY}]: {ignored}"
            ),
        ));
    }
    if secret.metadata.namespace != BOOTSTRAP_TOKEN_NAMESPACE {
        out.push(Warning::new(
            "metadata.namespace",
            format!(
                "bootstrap tokens are read only from \"{BOOTSTRAP_TOKEN_NAMESPACE}\": {ignored}"
            ),
        ));
    }
    if let Some(expiration) = data.get(BOOTSTRAP_TOKEN_EXPIRATION_KEY) {
        let valid = std::str::from_utf8(expiration.expose())
            .ok()
            .and_then(timefmt::parse_rfc3339)
            .is_some();
        if !valid {
            out.push(Warning::new(
                format!("data[{BOOTSTRAP_TOKEN_EXPIRATION_KEY}]"),
                "not an RFC 3339 time: the token is treated as expired",
            ));
        }
    }
    if let Some(groups) = data.get(BOOTSTRAP_TOKEN_EXTRA_GROUPS_KEY) {
        let text = String::from_utf8_lossy(groups.expose());
        let valid = text
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .all(is_bootstrap_group);
        if !valid {
            out.push(Warning::new(
                format!("data[{BOOTSTRAP_TOKEN_EXTRA_GROUPS_KEY}]"),
                format!(
                    "every group must match system:bootstrappers:[a-z0-9:-]{{0,255}}[a-z0-9]: {ignored}"
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::model::SecretValue;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n";

    fn tls(cert: &str, key: &str) -> Vec<String> {
        let mut s = Secret::new("default", "t");
        s.type_ = SECRET_TYPE_TLS.into();
        s.data.insert(TLS_CERT_KEY.into(), SecretValue::from(cert));
        s.data
            .insert(TLS_PRIVATE_KEY_KEY.into(), SecretValue::from(key));
        warnings_for(&s).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn tls_pem_checks_follow_x509_key_pair() {
        assert!(tls(CERT, KEY).is_empty());
        assert_eq!(
            tls("junk", KEY),
            ["tls: failed to find any PEM data in certificate input"]
        );
        assert_eq!(
            tls(KEY, CERT),
            [
                "tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched"
            ]
        );
        assert_eq!(
            tls(CERT, CERT),
            ["tls: found a certificate rather than a key in the PEM for the private key"]
        );
        assert_eq!(
            tls(CERT, ""),
            ["tls: failed to find any PEM data in key input"]
        );
        let other = "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n";
        assert_eq!(
            tls(&format!("{other}{other}"), KEY),
            [
                "tls: failed to find \"CERTIFICATE\" PEM block in certificate input after skipping PEM blocks of the following types: [FOO FOO]"
            ]
        );
    }

    fn bootstrap(name: &str, ns: &str, data: &[(&str, &str)]) -> Vec<String> {
        let mut s = Secret::new(ns, name);
        s.type_ = SECRET_TYPE_BOOTSTRAP_TOKEN.into();
        for (k, v) in data {
            s.data.insert((*k).into(), SecretValue::from(*v));
        }
        warnings_for(&s).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_well_formed_bootstrap_token_has_no_warning() {
        assert!(
            bootstrap(
                "bootstrap-token-abcdef",
                "kube-system",
                &[
                    ("token-id", "abcdef"),
                    ("token-secret", "0123456789abcdef"),
                    ("expiration", "2030-01-01T00:00:00Z"),
                    (
                        "auth-extra-groups",
                        "system:bootstrappers:kubeadm:default-node-token"
                    ),
                ],
            )
            .is_empty()
        );
    }

    #[test]
    fn bootstrap_token_problems_are_warnings_without_values() {
        let w = bootstrap(
            "my-token",
            "default",
            &[
                ("token-id", "ABCDEF"),
                ("token-secret", "short-secret-val"),
                ("expiration", "tomorrow"),
                ("auth-extra-groups", "system:masters"),
            ],
        );
        assert_eq!(w.len(), 6, "{w:#?}");
        assert!(w[0].starts_with("data[token-id]: must be 6 characters"));
        assert!(w[1].starts_with("data[token-secret]: must be 16 characters"));
        assert!(w[2].starts_with("metadata.name: must be \"bootstrap-token-\""));
        assert!(w[3].starts_with("metadata.namespace:"));
        assert!(w[4].starts_with("data[expiration]:"));
        assert!(w[5].starts_with("data[auth-extra-groups]:"));
        let all = w.join("\n");
        for value in ["ABCDEF", "short-secret-val", "tomorrow", "system:masters"] {
            assert!(!all.contains(value), "{all}");
        }
        let missing = bootstrap("bootstrap-token-abcdef", "kube-system", &[]);
        assert_eq!(
            missing,
            [
                "data[token-id]: missing: the bootstrap token authenticator will ignore this token",
                "data[token-secret]: missing: the bootstrap token authenticator will ignore this token",
            ]
        );
    }
}
