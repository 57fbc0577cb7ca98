//! The validated configuration: [`ResourceConfig`], one entry of the
//! `resources:` list, and its [`ProviderConfig`]s with their keys
//! ([`KeyConfig`], zeroized, never printed) or kms settings
//! ([`KmsProviderConfig`]).

use std::fmt;
use std::time::Duration;

use crate::transform::ProviderKind;
use crate::wipe::Wiped;

/// A `kms:` provider entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsProviderConfig {
    /// `apiVersion`: `v1` or `v2` (default `v1` in the upstream type).
    pub api_version: String,
    /// `name`: unique among kms providers; part of the stored prefix.
    pub name: String,
    /// `endpoint`: `unix:///path` or `unix:///@name`.
    pub endpoint: String,
    /// `timeout`: per-call timeout (default 3s).
    pub timeout: Duration,
}

/// One named key of an aesgcm, aescbc or secretbox provider.
///
/// The key bytes live in a zeroizing buffer; there is no `Clone`, and `Debug`
/// prints the name only.
pub struct KeyConfig {
    name: String,
    secret: Wiped<Vec<u8>>,
}

impl KeyConfig {
    /// Builds a key from its name and raw bytes (already decoded). The bytes
    /// are taken over, not copied.
    pub fn new(name: impl Into<String>, secret: Wiped<Vec<u8>>) -> Self {
        KeyConfig {
            name: name.into(),
            secret,
        }
    }

    /// The key name (public: it is part of every stored prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key length in bits.
    pub fn bits(&self) -> usize {
        self.secret.len() * 8
    }

    /// The raw key bytes. Hand them to a cipher constructor; never print,
    /// log or copy them into a buffer that is not wiped.
    pub fn expose_secret(&self) -> &[u8] {
        &self.secret
    }
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("name", &self.name)
            .field("secret", &format_args!("<{} bits redacted>", self.bits()))
            .finish()
    }
}

/// One entry of a `providers:` list.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProviderConfig {
    /// A provider with local keys: `aesgcm`, `aescbc` or `secretbox`
    /// (`{keys: [...]}`); what each kind does is its row of the provider
    /// table ([`crate::transform::kind::PROVIDERS`]).
    Keys {
        /// `AesGcm`, `AesCbc` or `Secretbox`.
        kind: ProviderKind,
        /// The keys, in file order; the first one writes.
        keys: Vec<KeyConfig>,
    },
    /// `identity: {}`: no encryption.
    Identity,
    /// `kms: {...}`: envelope encryption through a KMS plugin.
    Kms {
        /// The plugin settings (defaults applied).
        config: KmsProviderConfig,
        /// `cachesize` (KMS v1 only; defaults to 1000 for v1, `None` for v2).
        cache_size: Option<i32>,
    },
}

impl ProviderConfig {
    /// The provider kind (`kms` splits into KMS v1 and v2).
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderConfig::Keys { kind, .. } => *kind,
            ProviderConfig::Identity => ProviderKind::Identity,
            ProviderConfig::Kms { config, .. } if config.api_version == "v1" => ProviderKind::KmsV1,
            ProviderConfig::Kms { .. } => ProviderKind::KmsV2,
        }
    }

    /// The keys of an aesgcm, aescbc or secretbox provider; empty otherwise.
    pub fn keys(&self) -> &[KeyConfig] {
        match self {
            ProviderConfig::Keys { keys, .. } => keys,
            ProviderConfig::Identity | ProviderConfig::Kms { .. } => &[],
        }
    }
}

impl fmt::Display for ProviderConfig {
    /// A one-line public description, e.g. `aesgcm(keys: key1, key0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderConfig::Identity => f.write_str("identity"),
            ProviderConfig::Kms { config, .. } => write!(
                f,
                "kms {} {:?} at {}",
                config.api_version, config.name, config.endpoint
            ),
            other => {
                write!(f, "{}(keys: ", other.kind())?;
                for (i, k) in other.keys().iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(&k.name)?;
                }
                f.write_str(")")
            }
        }
    }
}

/// One entry of the top-level `resources:` list.
#[derive(Debug)]
pub struct ResourceConfig {
    /// The resources this entry covers (`secrets`, `*.`, `*.*`, ...).
    pub resources: Vec<String>,
    /// The providers, in the order the apiserver tries them; the first
    /// writes.
    pub providers: Vec<ProviderConfig>,
}

#[cfg(test)]
mod tests {
    use crate::encryption_config::EncryptionConfiguration;
    use crate::encryption_config::test_support::*;

    #[test]
    fn debug_output_redacts_keys() {
        let cfg = EncryptionConfiguration::parse(&doc(&format!(
            "  - aesgcm:\n      keys:\n      - name: k1\n        secret: {K32}\n"
        )))
        .unwrap();
        let dbg = format!("{cfg:?}");
        assert!(dbg.contains("k1"));
        assert!(dbg.contains("redacted"));
        let key = cfg.secrets_providers().unwrap()[0].keys()[0]
            .expose_secret()
            .to_vec();
        assert_eq!(key.len(), 32);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!dbg.contains(&hex));
        assert!(!dbg.contains(&format!("{:?}", key)));
    }
}
