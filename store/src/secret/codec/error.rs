//! Why stored bytes are not a Secret.

/// Why stored bytes are not a Secret. No variant carries a data value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Nothing was stored.
    #[error("the stored value is empty")]
    Empty,
    /// The bytes still carry an at-rest encryption prefix.
    #[error("the stored value is still encrypted (it starts with \"k8s:enc:\"): decrypt it first")]
    Encrypted,
    /// Neither JSON nor kube-apiserver protobuf.
    #[error(
        "the stored value is neither JSON nor kube-apiserver protobuf (\"k8s\\x00\" + runtime.Unknown)"
    )]
    UnknownFormat,
    /// Malformed JSON.
    #[error("invalid stored JSON: {0}")]
    Json(String),
    /// Malformed protobuf.
    #[error("invalid stored protobuf: {0}")]
    Protobuf(String),
    /// A well-formed object that is not a v1 Secret.
    #[error("the stored object is kind {kind:?} apiVersion {api_version:?}, not a v1 Secret")]
    WrongKind {
        /// The `apiVersion` found.
        api_version: String,
        /// The `kind` found.
        kind: String,
    },
    /// A field has the wrong type or content.
    #[error("{field}: {message}")]
    Field {
        /// The field path, e.g. `data[password]`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl DecodeError {
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        DecodeError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}
