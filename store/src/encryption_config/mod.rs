//! EncryptionConfiguration (`apiserver.config.k8s.io/v1`): parsing and
//! validation of the file kube-apiserver takes as `--encryption-provider-config`.
//!
//! The file is decoded strictly (unknown or duplicate fields are errors, as
//! the apiserver's strict decoder has them), then validated with the rules of
//! upstream `k8s.io/apiserver/pkg/apis/apiserver/validation`
//! (`validation_encryption.go`): every error names its field path in the
//! apiserver's style, e.g.
//!
//! ```text
//! resources[0].providers[1].aesgcm.keys[0].secret: Invalid value: "REDACTED": secret is not of the expected length, got 10, expected one of [16 24 32]
//! ```
//!
//! Two rules are stricter than upstream, because the stored prefix
//! `k8s:enc:<provider>:v1:<key name>:` must be unambiguous: key names must
//! not contain `:` and must be unique within a provider.
//!
//! Key material never appears in an error, a `Debug` output or a log: keys
//! are decoded from base64 straight into [`Wiped`] buffers, and
//! [`EncryptionConfiguration::load`] reads the file into a buffer that is
//! wiped once parsed. (The YAML parser's own short-lived scalar buffers are
//! outside our control.)
//!
//! One concept per file:
//!
//! - here: the entry points ([`EncryptionConfiguration::load`],
//!   [`parse`](EncryptionConfiguration::parse)) and the constants;
//! - `provider`: the validated types ([`ResourceConfig`],
//!   [`ProviderConfig`], [`KeyConfig`], [`KmsProviderConfig`]);
//! - `error`: [`ConfigError`]; its field-path errors are the Kubernetes
//!   conventions' [`FieldErrors`](crate::k8s::FieldErrors);
//! - `decode`: strict YAML / JSON decoding into the raw form, with key
//!   material scrubbed from decoder messages;
//! - `validate`: upstream's rules for the `resources:` list and each
//!   provider element, collected as field-path errors;
//! - `keys`: aesgcm / aescbc / secretbox key lists, whose secrets `base64`
//!   decodes as Go does;
//! - `kms`: kms entries (defaults, endpoint, timeout), whose timeout
//!   `duration` parses as Go does;
//! - `resources`: which providers a resource gets
//!   ([`EncryptionConfiguration::providers_for`]) and the masking check.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use crate::wipe::Wiped;

mod base64;
mod decode;
mod duration;
mod error;
mod keys;
mod kms;
mod provider;
mod resources;
#[cfg(test)]
mod test_support;
mod validate;

pub use error::ConfigError;
pub use provider::{KeyConfig, KmsProviderConfig, ProviderConfig, ResourceConfig};

/// `apiVersion` of the only EncryptionConfiguration version the apiserver
/// serves.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// `kind` of an EncryptionConfiguration.
pub const KIND: &str = "EncryptionConfiguration";
/// The resource name the Secrets rules are looked up by.
pub const SECRETS_RESOURCE: &str = "secrets";
/// Default per-call timeout of a kms provider (upstream default).
pub const DEFAULT_KMS_TIMEOUT: Duration = Duration::from_secs(3);
/// Default `cachesize` of a KMS v1 provider (upstream default).
pub const DEFAULT_KMS_V1_CACHE_SIZE: i32 = 1000;
/// The largest configuration file [`EncryptionConfiguration::load`] reads.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// A parsed and validated EncryptionConfiguration.
#[derive(Debug)]
pub struct EncryptionConfiguration {
    resources: Vec<ResourceConfig>,
}

impl EncryptionConfiguration {
    /// Reads, parses and validates the file at `path` (YAML or JSON). The
    /// file's bytes are held in a buffer that is wiped before returning.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let io_err = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                limit: MAX_CONFIG_BYTES,
            });
        }
        // Room for the whole file plus one byte, so that reading to the end
        // never reallocates (a reallocation would leave an unwiped copy).
        let capacity = usize::try_from(len).unwrap_or(0).saturating_add(1);
        let mut buf = Wiped::new(Vec::with_capacity(capacity));
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        if buf.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                limit: MAX_CONFIG_BYTES,
            });
        }
        Self::parse_bytes(&buf)
    }

    /// Parses and validates a configuration held in memory (YAML or JSON).
    /// The caller owns (and should wipe) `bytes`.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8)?;
        Self::parse(text)
    }

    /// Parses and validates a configuration held in memory (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::Empty);
        }
        let raw = decode::decode(text)?;
        let api_version = raw.api_version.unwrap_or_default();
        let kind = raw.kind.unwrap_or_default();
        if api_version != API_VERSION || kind != KIND {
            return Err(ConfigError::WrongKind { api_version, kind });
        }
        let entries =
            validate::validate(raw.resources.unwrap_or_default()).map_err(ConfigError::Invalid)?;
        resources::check_masking(&entries)?;
        Ok(EncryptionConfiguration { resources: entries })
    }

    /// The `resources:` entries, in file order.
    pub fn resources(&self) -> &[ResourceConfig] {
        &self.resources
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption_config::test_support::*;
    use crate::transform::ProviderKind;

    #[test]
    fn parses_every_provider_kind_in_order() {
        let text = doc(&format!(
            "  - aesgcm:\n      keys:\n      - name: k1\n        secret: {K32}\n      - name: k0\n        secret: {K16}\n  - aescbc:\n      keys:\n      - name: c1\n        secret: {K24}\n  - secretbox:\n      keys:\n      - name: s1\n        secret: {K32}\n  - kms:\n      apiVersion: v2\n      name: plugin\n      endpoint: unix:///run/kms.sock\n      timeout: 1m30s\n  - identity: {{}}\n"
        ));
        let cfg = EncryptionConfiguration::parse(&text).unwrap();
        let providers = cfg.secrets_providers().unwrap();
        let kinds: Vec<ProviderKind> = providers.iter().map(|p| p.kind()).collect();
        assert_eq!(
            kinds,
            [
                ProviderKind::AesGcm,
                ProviderKind::AesCbc,
                ProviderKind::Secretbox,
                ProviderKind::KmsV2,
                ProviderKind::Identity
            ]
        );
        let names: Vec<&str> = providers[0].keys().iter().map(|k| k.name()).collect();
        assert_eq!(names, ["k1", "k0"]);
        assert_eq!(providers[0].keys()[1].bits(), 128);
        assert_eq!(providers[1].keys()[0].bits(), 192);
        match providers[3] {
            ProviderConfig::Kms { config, cache_size } => {
                assert_eq!(config.name, "plugin");
                assert_eq!(config.api_version, "v2");
                assert_eq!(config.endpoint, "unix:///run/kms.sock");
                assert_eq!(config.timeout, Duration::from_secs(90));
                assert_eq!(*cache_size, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.yaml");
        std::fs::write(
            &path,
            doc(&format!(
                "  - aesgcm:\n      keys:\n      - name: k\n        secret: {K32}\n"
            )),
        )
        .unwrap();
        let cfg = EncryptionConfiguration::load(&path).unwrap();
        assert_eq!(cfg.resources().len(), 1);
        let missing = EncryptionConfiguration::load(dir.path().join("nope.yaml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Io { .. }));
        assert!(missing.to_string().contains("nope.yaml"));
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            EncryptionConfiguration::load(&path).unwrap_err(),
            ConfigError::Empty
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = EncryptionConfiguration::parse(&s);
        }

        #[test]
        fn mutated_configs_never_panic(at in 0usize..400, cut in 0usize..12, junk in "\\PC{0,12}") {
            let text = doc(&format!(
                "  - aesgcm:\n      keys:\n      - name: k\n        secret: {K32}\n  - kms:\n      apiVersion: v2\n      name: p\n      endpoint: unix:///x\n      timeout: 3s\n  - identity: {{}}\n"
            ));
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let mutated = format!("{}{junk}{}", &text[..at], &text[end..]);
            if let Err(e) = EncryptionConfiguration::parse(&mutated) {
                proptest::prop_assert!(!e.to_string().contains(K32), "{}", e);
            }
        }
    }
}
