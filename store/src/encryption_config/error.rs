//! Why a configuration cannot be used: [`ConfigError`], and the errors of
//! validation, each naming its field path in the apiserver's format
//! ([`FieldError`], [`FieldErrors`]).

use std::fmt;
use std::path::PathBuf;

use super::{API_VERSION, KIND};

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

/// The kind of a [`FieldError`], as in apimachinery's `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldErrorKind {
    /// A required field is missing or empty.
    Required,
    /// A field has an invalid value.
    Invalid,
    /// A value appears twice where it must be unique.
    Duplicate,
}

/// One validation error: the field path, what is wrong, and the offending
/// value (already made safe: secrets are shown as `REDACTED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `resources[0].providers[1].aesgcm.keys[0].secret`.
    pub field: String,
    /// The kind of error.
    pub kind: FieldErrorKind,
    /// The offending value, rendered (`"REDACTED"` for secrets); `None` for
    /// `Required`.
    pub value: Option<String>,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
        };
        write!(f, "{}: {kind}", self.field)?;
        if let Some(v) = &self.value {
            write!(f, ": {v}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// All validation errors of a file, in the order found. Displayed as the
/// apiserver's aggregate: one error as itself, several as `[a, b]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// Whether any error is for exactly `field`.
    pub fn has_field(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("[")?;
                for (i, e) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
        }
    }
}
