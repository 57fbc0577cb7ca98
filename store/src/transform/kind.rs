//! The table of provider kinds: for each kind its name, its stored prefix
//! and, for the providers with local keys, the key sizes the configuration
//! accepts and the constructor of one key's transformer. Display, the prefix
//! parser, the chain's builder and the EncryptionConfiguration's key checks
//! all read this table; a new provider is one file (its transformer or
//! [`LocalCipher`]) plus one row here.

use std::sync::Arc;

use super::aescbc::AesCbc;
use super::aesgcm::AesGcm;
use super::local::{LocalCipher, LocalTransformer};
use super::secretbox::Secretbox;
use super::{TransformError, Transformer};

/// What kind of provider wrote (or would write) a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProviderKind {
    /// No encryption.
    Identity,
    /// `k8s:enc:aesgcm:v1:<key>:`
    AesGcm,
    /// `k8s:enc:aescbc:v1:<key>:`
    AesCbc,
    /// `k8s:enc:secretbox:v1:<key>:`
    Secretbox,
    /// `k8s:enc:kms:v2:<name>:`
    #[serde(rename = "kms-v2")]
    KmsV2,
    /// `k8s:enc:kms:v1:<name>:` (recognised, not supported for reading)
    #[serde(rename = "kms-v1")]
    KmsV1,
}

/// Builds the transformer of one key of a local-key provider.
pub type LocalBuilder = fn(&str, &[u8]) -> Result<Arc<dyn Transformer>, TransformError>;

/// What a provider with local keys (aesgcm, aescbc, secretbox) adds.
#[derive(Debug)]
pub struct LocalKeys {
    /// The key sizes the configuration accepts, in bytes.
    pub key_sizes: &'static [usize],
    /// The transformer of one key (name, raw bytes).
    pub build: LocalBuilder,
}

/// One row of the provider table.
#[derive(Debug)]
pub struct ProviderRow {
    /// The kind.
    pub kind: ProviderKind,
    /// Its name in messages and reports (`aesgcm`, `kms-v2`).
    pub name: &'static str,
    /// What every value it writes starts with, before the key or provider
    /// name and `:` (`k8s:enc:aesgcm:v1:`); empty for identity.
    pub prefix: &'static str,
    /// For providers with local keys: key sizes and the constructor.
    pub local: Option<LocalKeys>,
}

const fn local<C: LocalCipher>() -> Option<LocalKeys> {
    Some(LocalKeys {
        key_sizes: C::KEY_SIZES,
        build: build_local::<C>,
    })
}

fn build_local<C: LocalCipher>(
    name: &str,
    key: &[u8],
) -> Result<Arc<dyn Transformer>, TransformError> {
    Ok(Arc::new(LocalTransformer::<C>::new(name, key)?))
}

/// Every provider kind, in the order of [`ProviderKind`].
pub const PROVIDERS: &[ProviderRow] = &[
    ProviderRow {
        kind: ProviderKind::Identity,
        name: "identity",
        prefix: "",
        local: None,
    },
    ProviderRow {
        kind: ProviderKind::AesGcm,
        name: "aesgcm",
        prefix: "k8s:enc:aesgcm:v1:",
        local: local::<AesGcm>(),
    },
    ProviderRow {
        kind: ProviderKind::AesCbc,
        name: "aescbc",
        prefix: "k8s:enc:aescbc:v1:",
        local: local::<AesCbc>(),
    },
    ProviderRow {
        kind: ProviderKind::Secretbox,
        name: "secretbox",
        prefix: "k8s:enc:secretbox:v1:",
        local: local::<Secretbox>(),
    },
    ProviderRow {
        kind: ProviderKind::KmsV2,
        name: "kms-v2",
        prefix: "k8s:enc:kms:v2:",
        local: None,
    },
    ProviderRow {
        kind: ProviderKind::KmsV1,
        name: "kms-v1",
        prefix: "k8s:enc:kms:v1:",
        local: None,
    },
];

impl ProviderKind {
    /// This kind's row of [`PROVIDERS`].
    pub const fn row(self) -> &'static ProviderRow {
        &PROVIDERS[self as usize]
    }

    /// What every value of this kind starts with, before its key or
    /// provider name (`k8s:enc:aesgcm:v1:`); empty for identity.
    pub const fn prefix(self) -> &'static str {
        self.row().prefix
    }

    /// The kind whose prefix is exactly `prefix` (`k8s:enc:<type>:<version>:`).
    pub fn from_prefix(prefix: &[u8]) -> Option<ProviderKind> {
        PROVIDERS
            .iter()
            .find(|r| !r.prefix.is_empty() && r.prefix.as_bytes() == prefix)
            .map(|r| r.kind)
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.row().name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_kind_order_and_prefixes_parse_back() {
        for (i, r) in PROVIDERS.iter().enumerate() {
            assert_eq!(r.kind as usize, i, "{}", r.name);
            assert_eq!(r.kind.row().name, r.name);
            if !r.prefix.is_empty() {
                assert_eq!(ProviderKind::from_prefix(r.prefix.as_bytes()), Some(r.kind));
            }
        }
        assert_eq!(ProviderKind::KmsV2.to_string(), "kms-v2");
        assert_eq!(ProviderKind::from_prefix(b"k8s:enc:rot13:v1:"), None);
        let keys = ProviderKind::Secretbox.row().local.as_ref().unwrap();
        assert_eq!(keys.key_sizes, &[32]);
        assert!((keys.build)("s", &[0; 32]).is_ok());
    }
}
