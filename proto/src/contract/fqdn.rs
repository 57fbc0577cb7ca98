//! Annotation keys are fully qualified domain names, as upstream
//! `IsFullyQualifiedDomainName` decides: an optional trailing dot, then an
//! RFC 1123 subdomain of at least two labels.

/// Longest RFC 1123 subdomain.
const MAX_SUBDOMAIN: usize = 253;
/// Longest RFC 1123 label.
const MAX_LABEL: usize = 63;

/// Whether `name` is a fully qualified domain name.
pub fn is_fully_qualified_domain_name(name: &str) -> bool {
    fqdn_problem(name).is_none()
}

/// Why `name` is not a fully qualified domain name (upstream's wording), or
/// `None` when it is one.
pub fn fqdn_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("a domain name is required");
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > MAX_SUBDOMAIN {
        return Some("must be no more than 253 characters");
    }
    let mut labels = 0usize;
    for label in name.split('.') {
        if let Some(p) = label_problem(label) {
            return Some(p);
        }
        labels += 1;
    }
    if labels < 2 {
        return Some("should be a domain with at least two segments separated by dots");
    }
    None
}

/// Whether `label` has the shape of an RFC 1123 label,
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` (its length aside): the one predicate
/// behind annotation keys here and object names in the store.
pub fn is_rfc1123_label_shaped(label: &str) -> bool {
    let b = label.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            alnum(first) && alnum(last) && b.iter().all(|&c| alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// An RFC 1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
fn label_problem(label: &str) -> Option<&'static str> {
    if label.is_empty() {
        return Some("a lowercase RFC 1123 subdomain must not contain empty labels");
    }
    if label.len() > MAX_LABEL {
        return Some("a DNS label must be no more than 63 characters");
    }
    if !is_rfc1123_label_shaped(label) {
        return Some(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fully_qualified_domain_names_as_upstream() {
        for good in [
            "a.b",
            "kms-plugin.k8s-at-rest.io",
            "version.encryption.example.com",
            "version.soft-kms.example.io",
            "kms.example.io.",
            "a.b.",
            "0.9",
            "x1.y2",
            "x-1.y-2.z",
        ] {
            assert!(is_fully_qualified_domain_name(good), "{good}");
        }
        let long_label = format!("{}.io", "a".repeat(64));
        let long_name = format!("{}.io", vec!["a".repeat(63); 4].join("."));
        for bad in [
            "",
            ".",
            "a",
            "example",
            "example.",
            "A.b",
            "Example.io",
            "-a.io",
            "a-.io",
            "a..io",
            ".a.io",
            "a.io..",
            "a_b.io",
            "a b.c",
            "a.b/c",
            "ä.io",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_fully_qualified_domain_name(bad), "{bad:?}");
        }
        assert_eq!(
            fqdn_problem("example"),
            Some("should be a domain with at least two segments separated by dots")
        );
    }
}
