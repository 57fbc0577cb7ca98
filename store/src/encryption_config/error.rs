//! Why a configuration cannot be used: [`ConfigError`]. Validation errors
//! name their field paths in the apiserver's format, as the Kubernetes
//! conventions' [`FieldErrors`] print them.

use std::path::PathBuf;

use super::{API_VERSION, KIND};
use crate::k8s::FieldErrors;

/// Why a configuration cannot be used. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("error reading encryption provider configuration file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file (or string) is empty.
    #[error("the encryption provider configuration is empty")]
    Empty,
    /// The file is larger than [`MAX_CONFIG_BYTES`](super::MAX_CONFIG_BYTES).
    #[error("the encryption provider configuration is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not UTF-8.
    #[error("the encryption provider configuration is not valid UTF-8")]
    NotUtf8,
    /// The YAML/JSON could not be decoded into an EncryptionConfiguration
    /// (syntax error, unknown or duplicate field, wrong type).
    #[error("error decoding encryption provider configuration: {message}")]
    Decode {
        /// The decoder's message, with anything that looks like key
        /// material replaced by `REDACTED`.
        message: String,
    },
    /// The document is not an `apiserver.config.k8s.io/v1`
    /// `EncryptionConfiguration`.
    #[error(
        "the file is not an EncryptionConfiguration: got apiVersion {api_version:?}, kind {kind:?}; expected apiVersion {API_VERSION:?}, kind {KIND:?}"
    )]
    WrongKind {
        /// The `apiVersion` found (empty when missing).
        api_version: String,
        /// The `kind` found (empty when missing).
        kind: String,
    },
    /// Validation failed; every error names its field.
    #[error("{0}")]
    Invalid(FieldErrors),
    /// A resource is listed after a wildcard rule of an earlier entry that
    /// already covers it (the apiserver refuses this).
    #[error("resource {resource:?} is masked by earlier rule {rule:?}")]
    Masked {
        /// The masked resource, as written.
        resource: String,
        /// The earlier wildcard rule (`*.`, `*.<group>` or `*.*`).
        rule: String,
    },
}
