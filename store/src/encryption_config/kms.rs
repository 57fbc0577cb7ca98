//! `kms:` provider entries: upstream's defaults (apiVersion `v1`, timeout
//! 3s, cachesize 1000 for v1) and its rules for the name, the endpoint
//! (`unix://` only), the timeout, the cachesize and the apiVersion.

use std::collections::HashSet;

use super::decode::RawKms;
use super::duration::{duration_from_nanos, parse_go_duration};
use super::validate::Errors;
use super::{DEFAULT_KMS_TIMEOUT, DEFAULT_KMS_V1_CACHE_SIZE, KmsProviderConfig, ProviderConfig};
use crate::k8s::go_quote as q;

/// Validates a `kms:` entry at `path`, defaults applied; `kms_names` holds
/// the names of the kms providers seen so far. `None` when it has errors.
pub(super) fn validate_kms(
    raw: RawKms,
    path: &str,
    kms_names: &mut HashSet<String>,
    errs: &mut Errors,
) -> Option<ProviderConfig> {
    // Defaults as in upstream v1 defaults.go.
    let api_version = raw.api_version.unwrap_or_else(|| "v1".to_owned());
    let name = raw.name.unwrap_or_default();
    let endpoint = raw.endpoint.unwrap_or_default();
    let cache_size = match (raw.cachesize, api_version.as_str()) {
        (None, "v1") => Some(DEFAULT_KMS_V1_CACHE_SIZE),
        (c, _) => c,
    };
    let errors_before = errs.0.len();

    // name
    let name_path = format!("{path}.name");
    if name.is_empty() {
        errs.required(&name_path, "name is a mandatory field for a provider");
    }
    if api_version != "v1" && name.contains(':') {
        errs.invalid(
            &name_path,
            q(&name),
            format!("invalid KMS provider name {name}, must not contain ':'"),
        );
    }
    // Upstream checks uniqueness for v2 always and for v1 only when the
    // config is hot-reloaded; we always check (a shared prefix is ambiguous).
    if !name.is_empty() && !kms_names.insert(name.clone()) {
        errs.invalid(
            &name_path,
            q(&name),
            format!("duplicate KMS provider name {name}, names must be unique"),
        );
    }

    // timeout
    let timeout_path = format!("{path}.timeout");
    let timeout = match raw.timeout.as_deref() {
        None => Some(DEFAULT_KMS_TIMEOUT),
        Some(text) => match parse_go_duration(text) {
            Ok(ns) if ns > 0 => Some(duration_from_nanos(ns)),
            Ok(_) => {
                errs.invalid(&timeout_path, q(text), "timeout should be a positive value");
                None
            }
            Err(e) => {
                errs.invalid(&timeout_path, q(text), e);
                None
            }
        },
    };

    // endpoint
    let endpoint_path = format!("{path}.endpoint");
    if endpoint.is_empty() {
        errs.invalid(
            &endpoint_path,
            q(""),
            "endpoint is a mandatory field for a kms",
        );
    } else if let Err(detail) = check_endpoint(&endpoint) {
        errs.invalid(&endpoint_path, q(&endpoint), detail);
    }

    // cachesize
    let cache_path = format!("{path}.cachesize");
    if api_version != "v1" {
        if let Some(c) = cache_size {
            errs.invalid(
                &cache_path,
                c.to_string(),
                "cachesize is not supported in v2",
            );
        }
    } else if cache_size == Some(0) {
        errs.invalid(
            &cache_path,
            "0",
            "cachesize should be a positive value, or negative to disable",
        );
    }

    // apiVersion
    if api_version != "v1" && api_version != "v2" {
        errs.invalid(
            &format!("{path}.apiVersion"),
            q(&api_version),
            "unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported",
        );
    }

    if errs.0.len() != errors_before {
        return None;
    }
    Some(ProviderConfig::Kms {
        config: KmsProviderConfig {
            api_version,
            name,
            endpoint,
            timeout: timeout.unwrap_or(DEFAULT_KMS_TIMEOUT),
        },
        cache_size,
    })
}

/// The endpoint check of upstream: a parseable URL whose scheme is `unix`.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.chars().any(|c| c.is_ascii_control()) {
        return Err(format!(
            "invalid endpoint for kms provider, error: parse {endpoint:?}: net/url: invalid control character in URL"
        ));
    }
    // Go's url.Parse: a scheme is [A-Za-z][A-Za-z0-9+.-]* before the first
    // ':'; anything else before a ':' means "no scheme".
    let scheme = match endpoint.find(':') {
        Some(0) => {
            return Err(format!(
                "invalid endpoint for kms provider, error: parse {endpoint:?}: missing protocol scheme"
            ));
        }
        Some(i) => {
            let s = &endpoint[..i];
            let mut chars = s.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if valid {
                s.to_ascii_lowercase()
            } else {
                String::new()
            }
        }
        None => String::new(),
    };
    if scheme != "unix" {
        return Err(format!(
            "unsupported scheme {scheme:?} for KMS provider, only unix is supported"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption_config::EncryptionConfiguration;
    use crate::encryption_config::test_support::*;
    use crate::transform::ProviderKind;

    #[test]
    fn kms_defaults_follow_upstream() {
        let cfg = EncryptionConfiguration::parse(&doc(
            "  - kms:\n      name: old\n      endpoint: unix:///tmp/old.sock\n",
        ))
        .unwrap();
        match cfg.secrets_providers().unwrap()[0] {
            ProviderConfig::Kms { config, cache_size } => {
                assert_eq!(config.api_version, "v1");
                assert_eq!(config.timeout, DEFAULT_KMS_TIMEOUT);
                assert_eq!(*cache_size, Some(DEFAULT_KMS_V1_CACHE_SIZE));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            cfg.secrets_providers().unwrap()[0].kind(),
            ProviderKind::KmsV1
        );
    }

    #[test]
    fn kms_rules() {
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: a:b\n      endpoint: unix:///x\n",
        ));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[0].kms.name: Invalid value: "a:b": invalid KMS provider name a:b, must not contain ':'"#
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///y\n",
        ));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[1].kms.name: Invalid value: "p": duplicate KMS provider name p, names must be unique"#
        );
        let e = invalid(&doc("  - kms:\n      apiVersion: v2\n      name: p\n"));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[0].kms.endpoint: Invalid value: "": endpoint is a mandatory field for a kms"#
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: tcp://127.0.0.1:1\n",
        ));
        assert!(
            e.to_string()
                .contains(r#"unsupported scheme "tcp" for KMS provider, only unix is supported"#),
            "{e}"
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n      timeout: 0s\n",
        ));
        assert_eq!(
            e.to_string(),
            r#"resources[0].providers[0].kms.timeout: Invalid value: "0s": timeout should be a positive value"#
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n      timeout: -3s\n",
        ));
        assert!(e.to_string().contains("timeout should be a positive value"));
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n      timeout: soon\n",
        ));
        assert!(
            e.to_string().contains(r#"time: invalid duration "soon""#),
            "{e}"
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n      cachesize: 100\n",
        ));
        assert_eq!(
            e.to_string(),
            "resources[0].providers[0].kms.cachesize: Invalid value: 100: cachesize is not supported in v2"
        );
        let e = invalid(&doc(
            "  - kms:\n      name: p\n      endpoint: unix:///x\n      cachesize: 0\n",
        ));
        assert!(
            e.to_string()
                .contains("cachesize should be a positive value, or negative to disable")
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v3\n      name: p\n      endpoint: unix:///x\n",
        ));
        assert!(
            e.to_string()
                .contains("kms.apiVersion: Invalid value: \"v3\""),
            "{e}"
        );
        let e = invalid(&doc(
            "  - kms:\n      apiVersion: v2\n      endpoint: unix:///x\n",
        ));
        assert_eq!(
            e.to_string(),
            "resources[0].providers[0].kms.name: Required value: name is a mandatory field for a provider"
        );
    }
}
