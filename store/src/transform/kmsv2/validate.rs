//! The limits kube-apiserver enforces on what a KMS v2 plugin hands back and
//! on what it reads from etcd (upstream `ValidateKeyID`,
//! `validateEncryptedDEKSource`, `validateAnnotations`).
//!
//! The same checks run on the plugin's Encrypt answer (before a new seed is
//! used for writing) and on every stored `EncryptedObject` (before the plugin
//! is asked to Decrypt anything).

use std::fmt;

/// Longest `key_id` the apiserver accepts (1 kB).
pub const KEY_ID_MAX_SIZE: usize = 1024;
/// Longest `encryptedDEKSource` (the plugin's ciphertext) it accepts (1 kB).
pub const ENCRYPTED_DEK_SOURCE_MAX_SIZE: usize = 1024;
/// Largest total of annotation keys plus values it accepts (32 kB).
pub const ANNOTATIONS_MAX_SIZE: usize = 32 * 1024;

/// The plugin API versions the apiserver talks to.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["v2", "v2beta1"];
/// The only healthy `healthz` answer.
pub const HEALTHZ_OK: &str = "ok";

/// Checks a `key_id`: non-empty, at most 1 kB.
pub fn validate_key_id(key_id: &str) -> Result<(), String> {
    if key_id.is_empty() {
        return Err("keyID is empty".into());
    }
    if key_id.len() > KEY_ID_MAX_SIZE {
        return Err(format!(
            "keyID is {} bytes, which exceeds the max size of {KEY_ID_MAX_SIZE}",
            key_id.len()
        ));
    }
    Ok(())
}

/// Checks an `encryptedDEKSource`: non-empty, at most 1 kB.
pub fn validate_encrypted_dek_source(source: &[u8]) -> Result<(), String> {
    if source.is_empty() {
        return Err("encrypted DEK source is empty".into());
    }
    if source.len() > ENCRYPTED_DEK_SOURCE_MAX_SIZE {
        return Err(format!(
            "encrypted DEK source is {} bytes, which exceeds the max size of {ENCRYPTED_DEK_SOURCE_MAX_SIZE}",
            source.len()
        ));
    }
    Ok(())
}

/// Checks annotations: every key a fully qualified domain name, keys plus
/// values at most 32 kB. All problems are reported together, as upstream
/// aggregates them.
pub fn validate_annotations<'a, I>(annotations: I) -> Result<(), String>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut problems: Vec<String> = Vec::new();
    let mut total: usize = 0;
    for (k, v) in annotations {
        if let Err(e) = check_fqdn(k) {
            problems.push(format!("annotations: invalid key {}: {e}", Printable(k)));
        }
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > ANNOTATIONS_MAX_SIZE {
        problems.push(format!(
            "total size of annotations is {total}, which exceeds the max size of {ANNOTATIONS_MAX_SIZE}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Whether `name` is a fully qualified domain name as upstream
/// `IsFullyQualifiedDomainName` decides: an optional trailing dot, then an RFC
/// 1123 subdomain of at least two labels.
pub fn is_fully_qualified_domain_name(name: &str) -> bool {
    check_fqdn(name).is_ok()
}

fn check_fqdn(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("a domain name is required");
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > 253 {
        return Err("must be no more than 253 characters");
    }
    let mut labels = 0usize;
    for label in name.split('.') {
        check_label(label)?;
        labels += 1;
    }
    if labels < 2 {
        return Err("should be a domain with at least two segments separated by dots");
    }
    Ok(())
}

/// An RFC 1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
fn check_label(label: &str) -> Result<(), &'static str> {
    let b = label.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() {
        return Err("a lowercase RFC 1123 subdomain must not contain empty labels");
    }
    if b.len() > 63 {
        return Err("a DNS label must be no more than 63 characters");
    }
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) || !b.iter().all(|&c| alnum(c) || c == b'-') {
        return Err(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        );
    }
    Ok(())
}

/// Shows untrusted text quoted and cut to 64 characters, so a hostile
/// annotation key cannot flood an error message.
pub(crate) struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 64;
        if self.0.chars().count() <= MAX {
            write!(f, "{:?}", self.0)
        } else {
            let cut: String = self.0.chars().take(MAX).collect();
            write!(f, "{cut:?}... ({} bytes)", self.0.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fully_qualified_domain_names_as_upstream() {
        for good in [
            "a.b",
            "version.soft-kms.example.io",
            "kms.example.io.",
            "0.9",
            "x-1.y-2.z",
        ] {
            assert!(is_fully_qualified_domain_name(good), "{good}");
        }
        let long_label = format!("{}.io", "a".repeat(64));
        let long_name = format!("{}.io", vec!["a".repeat(63); 4].join("."));
        for bad in [
            "",
            ".",
            "example",
            "example.",
            "Example.io",
            "-a.io",
            "a-.io",
            "a..io",
            ".a.io",
            "a.io..",
            "a_b.io",
            "a.b/c",
            "ä.io",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_fully_qualified_domain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn key_id_and_dek_source_limits() {
        assert!(validate_key_id("k").is_ok());
        assert!(validate_key_id(&"k".repeat(1024)).is_ok());
        assert!(validate_key_id("").unwrap_err().contains("empty"));
        assert!(
            validate_key_id(&"k".repeat(1025))
                .unwrap_err()
                .contains("1025")
        );
        assert!(validate_encrypted_dek_source(&[1]).is_ok());
        assert!(validate_encrypted_dek_source(&[1; 1024]).is_ok());
        assert!(validate_encrypted_dek_source(&[]).is_err());
        assert!(validate_encrypted_dek_source(&[1; 1025]).is_err());
    }

    #[test]
    fn annotations_size_and_keys() {
        let v = vec![0u8; ANNOTATIONS_MAX_SIZE - 5];
        assert!(validate_annotations([("a.b.c", v.as_slice())]).is_ok());
        let v = vec![0u8; ANNOTATIONS_MAX_SIZE - 4];
        assert!(
            validate_annotations([("a.b.c", v.as_slice())])
                .unwrap_err()
                .contains("exceeds")
        );
        let err =
            validate_annotations([("nodots", &b"1"[..]), ("UPPER.io", &b"1"[..])]).unwrap_err();
        assert!(err.contains("nodots") && err.contains("UPPER.io"), "{err}");
        assert!(validate_annotations(std::iter::empty()).is_ok());
    }

    #[test]
    fn printable_cuts_long_text() {
        let s = Printable(&"x".repeat(1000)).to_string();
        assert!(s.len() < 100 && s.contains("1000 bytes"), "{s}");
    }
}
