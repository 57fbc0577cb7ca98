//! The sizes kube-apiserver accepts (upstream `ValidateKeyID`,
//! `validateEncryptedDEKSource`, `validateAnnotations`) and the ones the
//! plugin adds for its own requests.

use std::fmt;

use super::fqdn::fqdn_problem;
use super::text::printable;

/// Largest ciphertext (`encryptedDEKSource`) the apiserver accepts from
/// Encrypt and sends to Decrypt.
pub const MAX_CIPHERTEXT: usize = 1024;
/// Largest `key_id` the apiserver accepts.
pub const MAX_KEY_ID: usize = 1024;
/// Largest total of annotation keys plus values.
pub const MAX_ANNOTATIONS: usize = 32 * 1024;
/// Largest request `uid` a plugin accepts (the apiserver sends a 36-byte UUID).
pub const MAX_UID: usize = 1024;
/// Largest gRPC request message a plugin accepts: above any valid request
/// (ciphertext, key_id, uid and annotations at their limits), far below
/// tonic's 4 MiB default.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A length check that failed; `Display` names the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LenError {
    /// The field is empty.
    Empty(&'static str),
    /// The field is longer than its limit.
    TooLong {
        /// The field, as the message names it.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for LenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LenError::Empty(field) => write!(f, "{field} is empty"),
            LenError::TooLong { field, len, max } => {
                write!(
                    f,
                    "{field} is {len} bytes, which exceeds the max size of {max}"
                )
            }
        }
    }
}

impl std::error::Error for LenError {}

/// Checks that a field named `field` is 1..=`max` bytes long.
pub fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), LenError> {
    if len == 0 {
        Err(LenError::Empty(field))
    } else if len > max {
        Err(LenError::TooLong { field, len, max })
    } else {
        Ok(())
    }
}

/// Checks a `key_id` (upstream wording: `keyID`): non-empty, at most 1 kB.
pub fn validate_key_id(key_id: &str) -> Result<(), LenError> {
    check_len("keyID", key_id.len(), MAX_KEY_ID)
}

/// Checks a plugin ciphertext (`encryptedDEKSource`): non-empty, at most 1 kB.
pub fn validate_ciphertext(ciphertext: &[u8]) -> Result<(), LenError> {
    check_len("encrypted DEK source", ciphertext.len(), MAX_CIPHERTEXT)
}

/// Checks annotations as kube-apiserver does: every key a fully qualified
/// domain name, keys plus values at most 32 kB. All problems are reported
/// together, as upstream aggregates them.
pub fn validate_annotations<'a, I>(annotations: I) -> Result<(), String>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut problems: Vec<String> = Vec::new();
    let mut total: usize = 0;
    for (k, v) in annotations {
        if let Some(e) = fqdn_problem(k) {
            problems.push(format!(
                "annotations: invalid key \"{}\": {e}",
                printable(k, 64)
            ));
        }
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > MAX_ANNOTATIONS {
        problems.push(format!(
            "total size of annotations is {total}, which exceeds the limit of {MAX_ANNOTATIONS}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_and_ciphertext_limits() {
        assert!(validate_key_id("k").is_ok());
        assert!(validate_key_id(&"k".repeat(1024)).is_ok());
        assert_eq!(
            validate_key_id("").unwrap_err().to_string(),
            "keyID is empty"
        );
        let e = validate_key_id(&"k".repeat(1025)).unwrap_err().to_string();
        assert!(e.contains("1025") && e.contains("1024"), "{e}");
        assert!(validate_ciphertext(&[1]).is_ok());
        assert!(validate_ciphertext(&[1; 1024]).is_ok());
        assert_eq!(
            validate_ciphertext(&[]).unwrap_err().to_string(),
            "encrypted DEK source is empty"
        );
        assert!(validate_ciphertext(&[1; 1025]).is_err());
        assert_eq!(
            check_len("key_id", 0, 10).unwrap_err().to_string(),
            "key_id is empty"
        );
        assert_eq!(
            check_len("uid", 11, 10).unwrap_err().to_string(),
            "uid is 11 bytes, which exceeds the max size of 10"
        );
    }

    #[test]
    fn annotations_size_and_keys() {
        let v = vec![0u8; MAX_ANNOTATIONS - 5];
        assert!(validate_annotations([("a.b.c", v.as_slice())]).is_ok());
        let v = vec![0u8; MAX_ANNOTATIONS - 4];
        let e = validate_annotations([("a.b.c", v.as_slice())]).unwrap_err();
        assert!(e.contains("exceeds the limit"), "{e}");
        let err =
            validate_annotations([("nodots", &b"1"[..]), ("UPPER.io", &b"1"[..])]).unwrap_err();
        assert!(
            err.contains("invalid key \"nodots\"") && err.contains("invalid key \"UPPER.io\""),
            "{err}"
        );
        assert!(validate_annotations(std::iter::empty()).is_ok());
        // The apiserver's rule: a trailing dot is allowed.
        assert!(validate_annotations([("kms.example.io.", &b"1"[..])]).is_ok());
    }
}
