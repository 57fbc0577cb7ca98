//! What kube-apiserver checks of a plugin's Status and Encrypt answers
//! before it uses them. A plugin must pass every one; the store's provider
//! refuses an answer that fails one, and `kms-plugin probe` lists them all.

use super::limits::{validate_annotations, validate_ciphertext, validate_key_id};
use crate::v2::{EncryptResponse, StatusResponse};

/// The API version a plugin reports in Status.
pub const API_VERSION: &str = "v2";
/// The plugin API versions the apiserver talks to.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["v2", "v2beta1"];
/// The only healthy `healthz` answer.
pub const HEALTHZ_OK: &str = "ok";

/// Every reason the apiserver would refuse this Status answer; empty when
/// it is accepted: a supported version, `healthz` exactly `ok`, a valid
/// `key_id`.
pub fn status_problems(s: &StatusResponse) -> Vec<String> {
    let mut out = Vec::new();
    if !SUPPORTED_VERSIONS.contains(&s.version.as_str()) {
        out.push(format!(
            "Status answered version {:?}; expected {:?} or {:?}",
            s.version, SUPPORTED_VERSIONS[0], SUPPORTED_VERSIONS[1]
        ));
    }
    if s.healthz != HEALTHZ_OK {
        out.push(format!(
            "Status answered healthz {:?}; the plugin is healthy only when it answers {HEALTHZ_OK:?}",
            s.healthz
        ));
    }
    if let Err(e) = validate_key_id(&s.key_id) {
        out.push(format!("Status answered an invalid key_id: {e}"));
    }
    out
}

/// Every reason the apiserver would refuse this Encrypt answer (and not
/// write with the seed it wraps); empty when it is accepted: a valid
/// ciphertext, key_id and annotations, and the key_id of the last Status.
pub fn encrypt_problems(r: &EncryptResponse, status_key_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(e) = validate_ciphertext(&r.ciphertext) {
        out.push(format!("Encrypt answered an unusable ciphertext: {e}"));
    }
    if let Err(e) = validate_key_id(&r.key_id) {
        out.push(format!("Encrypt answered an invalid key_id: {e}"));
    }
    if let Err(e) = validate_annotations(
        r.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice())),
    ) {
        out.push(format!("Encrypt answered invalid annotations: {e}"));
    }
    if r.key_id != status_key_id {
        out.push(format!(
            "Encrypt answered key_id {:?} but Status reported {:?}; the new DEK seed is not used (the apiserver rejects such a rotation)",
            r.key_id, status_key_id
        ));
    }
    out
}

fn joined(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// [`status_problems`] as one result.
pub fn validate_status(s: &StatusResponse) -> Result<(), String> {
    joined(status_problems(s))
}

/// [`encrypt_problems`] as one result.
pub fn validate_encrypt(r: &EncryptResponse, status_key_id: &str) -> Result<(), String> {
    joined(encrypt_problems(r, status_key_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn status(version: &str, healthz: &str, key_id: &str) -> StatusResponse {
        StatusResponse {
            version: version.into(),
            healthz: healthz.into(),
            key_id: key_id.into(),
        }
    }

    #[test]
    fn status_checks() {
        assert!(validate_status(&status("v2", "ok", "k")).is_ok());
        assert!(validate_status(&status("v2beta1", "ok", "k")).is_ok());
        assert!(
            validate_status(&status("v1", "ok", "k"))
                .unwrap_err()
                .contains("version \"v1\"")
        );
        assert!(
            validate_status(&status("v2", "OK", "k"))
                .unwrap_err()
                .contains("healthz \"OK\"")
        );
        assert!(
            validate_status(&status("v2", "ok", ""))
                .unwrap_err()
                .contains("keyID is empty")
        );
        assert!(validate_status(&status("v2", "ok", &"k".repeat(1025))).is_err());
        // Every problem is reported, not only the first.
        assert_eq!(status_problems(&status("v1", "bad", "")).len(), 3);
    }

    #[test]
    fn encrypt_checks() {
        let good = EncryptResponse {
            ciphertext: vec![1; 60],
            key_id: "k".into(),
            annotations: BTreeMap::new(),
        };
        assert!(validate_encrypt(&good, "k").is_ok());
        let e = validate_encrypt(&good, "other").unwrap_err();
        assert!(e.contains("\"k\"") && e.contains("\"other\""), "{e}");
        let empty = EncryptResponse {
            ciphertext: vec![],
            ..good.clone()
        };
        assert!(validate_encrypt(&empty, "k").unwrap_err().contains("empty"));
        let big = EncryptResponse {
            ciphertext: vec![1; 1025],
            ..good.clone()
        };
        assert!(validate_encrypt(&big, "k").unwrap_err().contains("1025"));
        let ann = EncryptResponse {
            annotations: [("not-fqdn".to_string(), vec![])].into(),
            ..good.clone()
        };
        assert!(
            validate_encrypt(&ann, "k")
                .unwrap_err()
                .contains("not-fqdn")
        );
    }
}
