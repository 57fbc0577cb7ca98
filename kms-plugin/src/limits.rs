//! The limits kube-apiserver enforces on a KMS v2 plugin's answers, and the
//! ones this plugin enforces on its requests.

use std::collections::BTreeMap;

/// Largest ciphertext the apiserver accepts from Encrypt (and sends to Decrypt).
pub const MAX_CIPHERTEXT: usize = 1024;
/// Largest key_id the apiserver accepts.
pub const MAX_KEY_ID: usize = 1024;
/// Largest total of annotation keys plus values.
pub const MAX_ANNOTATIONS: usize = 32 * 1024;
/// Largest uid we accept (the apiserver sends a 36-byte UUID).
pub const MAX_UID: usize = 1024;
/// Largest gRPC request message: above any valid request (ciphertext, key_id,
/// uid and annotations at their limits), far below tonic's 4 MiB default.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The domain this plugin's annotation keys live under.
pub const ANNOTATION_DOMAIN: &str = "kms-plugin.k8s-at-rest.io";

/// Checks annotations as kube-apiserver does: keys are fully qualified DNS
/// names (RFC 1123 subdomains with at least two labels) and keys plus values
/// total at most 32 KiB.
pub fn validate_annotations(annotations: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let mut total = 0usize;
    for (k, v) in annotations {
        if !is_fqdn(k) {
            return Err(format!(
                "annotation key {:?} is not a fully qualified domain name",
                printable(k, 64)
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS {
        return Err(format!(
            "annotations total {total} bytes, the limit is {MAX_ANNOTATIONS}"
        ));
    }
    Ok(())
}

/// Whether `s` is an RFC 1123 subdomain (≤253 characters, lowercase
/// alphanumeric labels of 1-63 characters with inner '-') with at least two
/// labels.
pub fn is_fqdn(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let mut labels = 0;
    for label in s.split('.') {
        labels += 1;
        let b = label.as_bytes();
        if b.is_empty() || b.len() > 63 {
            return false;
        }
        let ok_inner = b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !ok_inner || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
    }
    labels >= 2
}

/// A short, printable rendering of untrusted input for error messages:
/// non-printable characters escaped, at most `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(char::escape_default).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_rules() {
        for ok in [
            "a.b",
            "kms-plugin.k8s-at-rest.io",
            "version.encryption.example.com",
            "x1.y2",
        ] {
            assert!(is_fqdn(ok), "{ok}");
        }
        for bad in [
            "", "a", "A.b", "a..b", "-a.b", "a-.b", ".a.b", "a.b.", "a_b.c", "a b.c",
        ] {
            assert!(!is_fqdn(bad), "{bad:?}");
        }
        assert!(!is_fqdn(&format!("{}.b", "a".repeat(64))));
        assert!(!is_fqdn(
            &"a.".repeat(127).trim_end_matches('.').to_string().repeat(2)
        ));
    }

    #[test]
    fn annotation_limits() {
        let mut a = BTreeMap::new();
        a.insert(format!("x.{ANNOTATION_DOMAIN}"), vec![0u8; 100]);
        assert!(validate_annotations(&a).is_ok());
        a.insert("bad".into(), vec![]);
        assert!(
            validate_annotations(&a)
                .unwrap_err()
                .contains("fully qualified")
        );
        let mut big = BTreeMap::new();
        big.insert("a.b".to_string(), vec![0u8; MAX_ANNOTATIONS]);
        assert!(validate_annotations(&big).unwrap_err().contains("limit"));
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("a\nb", 10), "a\\nb");
        assert_eq!(printable("abcdef", 3), "abc…");
    }
}
