//! Value transformers: what kube-apiserver does to every object on its way to
//! and from etcd, one provider per file.
//!
//! A [`Transformer`] seals a serialized object into the exact bytes stored at
//! its etcd key (prefix included) and opens such bytes again. The
//! [`chain`] tries the providers of an
//! EncryptionConfiguration in order, as the apiserver does, and reports
//! staleness. The [`kind`] table gives every provider kind its name and
//! prefix (and, for aesgcm, aescbc and secretbox, its key sizes and
//! constructor); those three are [`local::LocalCipher`]s under one generic
//! [`local::LocalTransformer`].
//!
//! A new provider with local keys: one file with its `LocalCipher`, one
//! [`ProviderKind`] variant with its row in [`kind::PROVIDERS`], and its
//! field in the EncryptionConfiguration decoder (`encryption_config/decode.rs`).

use std::collections::BTreeMap;
use std::fmt;

use crate::wipe::Wiped;

pub mod aescbc;
pub mod aesgcm;
pub mod chain;
pub mod identity;
pub mod kind;
pub mod kmsv2;
pub mod local;
pub mod secretbox;

pub use kind::ProviderKind;

/// Every stored value that is not identity starts with this.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// What can be read from a stored value's envelope without decrypting it.
/// Everything here is public: it is stored in plaintext in etcd.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EnvelopeInfo {
    /// The provider kind named by the prefix.
    pub provider_kind: ProviderKind,
    /// The provider name (kms) or key name (aesgcm, aescbc, secretbox);
    /// empty for identity.
    pub provider_name: String,
    /// KMS: the key_id of the KEK that wrapped the DEK source.
    pub key_id: Option<String>,
    /// KMS v2: `HKDF_SHA256_XNONCE_AES_GCM_SEED` or `AES_GCM_KEY`.
    pub dek_source_type: Option<String>,
    /// KMS: the plugin's annotations (stored in plaintext).
    pub annotations: BTreeMap<String, Vec<u8>>,
    /// Total stored length, prefix included.
    pub stored_len: usize,
}

impl EnvelopeInfo {
    /// The facts of a value whose envelope holds nothing but its prefix
    /// (identity, aesgcm, aescbc, secretbox, kms v1): kind, name, length.
    pub fn from_prefix(
        provider_kind: ProviderKind,
        provider_name: impl Into<String>,
        stored_len: usize,
    ) -> Self {
        EnvelopeInfo {
            provider_kind,
            provider_name: provider_name.into(),
            key_id: None,
            dek_source_type: None,
            annotations: BTreeMap::new(),
            stored_len,
        }
    }
}

/// A value opened by a transformer.
pub struct Opened {
    /// The serialized object.
    pub plaintext: Wiped<Vec<u8>>,
    /// The value should be rewritten: it was read by a provider or key other
    /// than the one used for writing, or (kms) under another key_id or DEK
    /// source type than the current write state.
    pub stale: bool,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field(
                "plaintext",
                &format_args!("<{} bytes redacted>", self.plaintext.len()),
            )
            .field("stale", &self.stale)
            .finish()
    }
}

/// Why a value could not be sealed or opened. Messages never contain
/// plaintext or key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// Authentication failed (wrong key, tampered bytes, or a value copied
    /// under another etcd key). Deliberately opaque.
    #[error(
        "decryption failed for {etcd_key}: the value does not authenticate under the configured keys (tampered, copied from another key, or written with another key)"
    )]
    DecryptionFailed {
        /// The etcd key the value was read under.
        etcd_key: String,
    },
    /// The stored bytes are not a well-formed value for the provider.
    #[error("malformed value at {etcd_key}: {reason}")]
    Malformed {
        /// The etcd key the value was read under.
        etcd_key: String,
        /// What is wrong, without any secret.
        reason: String,
    },
    /// No configured provider recognises the value's prefix.
    #[error(
        "no provider configured for the value at {etcd_key} (prefix {prefix:?}); configured: {configured}"
    )]
    NoMatchingProvider {
        /// The etcd key the value was read under.
        etcd_key: String,
        /// The prefix found (printable part, at most 64 characters).
        prefix: String,
        /// The configured providers, in order.
        configured: String,
    },
    /// The KMS plugin could not be used (unreachable, unhealthy, bad answer).
    #[error("kms provider {provider:?}: {reason}")]
    Kms {
        /// The kms provider name.
        provider: String,
        /// What went wrong.
        reason: String,
    },
    /// Writing is refused (e.g. the plugin has been unhealthy for longer than
    /// the apiserver's 3-minute window, or plaintext writes are not allowed).
    #[error("write refused: {0}")]
    WriteRefused(String),
    /// The configuration cannot be used.
    #[error("invalid encryption configuration: {0}")]
    Config(String),
}

/// One provider key: seals with itself, opens values carrying its prefix.
pub trait Transformer: Send + Sync {
    /// The provider kind.
    fn kind(&self) -> ProviderKind;
    /// The name shown to users: kms provider name, or the key name.
    fn name(&self) -> &str;
    /// The prefix this transformer writes; empty for identity.
    fn prefix(&self) -> &[u8];
    /// Whether `stored` is this transformer's to open (prefix match; identity
    /// matches anything that does not start with `k8s:enc:`).
    fn matches(&self, stored: &[u8]) -> bool {
        stored.starts_with(self.prefix())
    }
    /// Seals `plaintext` for storage at `etcd_key`; returns the complete
    /// stored bytes, prefix included.
    fn seal(&self, plaintext: &[u8], etcd_key: &str) -> Result<Vec<u8>, TransformError>;
    /// Opens bytes stored at `etcd_key` (prefix included).
    fn open(&self, stored: &[u8], etcd_key: &str) -> Result<Opened, TransformError>;
    /// Reads the envelope's public facts without decrypting.
    fn inspect(&self, stored: &[u8], etcd_key: &str) -> Result<EnvelopeInfo, TransformError>;
    /// Whether a value this transformer matches was written with its
    /// current write state, judged from the envelope alone (kms v2: the
    /// current key_id, seed mode). Default: yes.
    fn is_current(&self, _stored: &[u8]) -> bool {
        true
    }
}
