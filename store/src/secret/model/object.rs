//! The Secret object as the store keeps it: `metadata` (see `meta`),
//! `type`, `data`, `immutable`. `stringData` exists only in manifests (it
//! is merged into `data` while parsing) and never here.

use std::collections::BTreeMap;
use std::fmt;

use subtle::ConstantTimeEq;

use super::meta::ObjectMeta;
use super::types::SECRET_TYPE_OPAQUE;
use crate::wipe::Wiped;

/// One value of a Secret's `data`: bytes that are wiped when dropped.
///
/// `Debug` prints only the length (`<5 bytes redacted>`); there is no
/// `Display`. Equality runs in constant time for equal lengths.
#[derive(Clone, Default)]
pub struct SecretValue(Wiped<Vec<u8>>);

impl SecretValue {
    /// Wraps `bytes` (taken, not copied).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Wiped::new(bytes))
    }

    /// Copies `bytes` into a new value.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// The secret bytes. Whatever the caller copies out of here is its own
    /// to wipe.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty (an empty value is legal: a key may be
    /// present with no content).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretValue {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<&[u8]> for SecretValue {
    fn from(bytes: &[u8]) -> Self {
        Self::from_slice(bytes)
    }
}

impl From<&str> for SecretValue {
    fn from(text: &str) -> Self {
        Self::from_slice(text.as_bytes())
    }
}

impl From<Wiped<Vec<u8>>> for SecretValue {
    fn from(bytes: Wiped<Vec<u8>>) -> Self {
        Self(bytes)
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl Eq for SecretValue {}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0.len())
    }
}

/// A v1 Secret.
///
/// `Debug` is safe to log: every value prints as `<N bytes redacted>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `type` (`Opaque` when not given); see [`super::types`].
    pub type_: String,
    /// `data`, with `stringData` already merged in.
    pub data: BTreeMap<String, SecretValue>,
    /// `immutable`: `Some(true)` forbids any later change of `data` and of
    /// `immutable` itself.
    pub immutable: Option<bool>,
}

impl Default for Secret {
    fn default() -> Self {
        Self {
            metadata: ObjectMeta::default(),
            type_: SECRET_TYPE_OPAQUE.to_owned(),
            data: BTreeMap::new(),
            immutable: None,
        }
    }
}

impl Secret {
    /// An empty `Opaque` Secret called `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let mut secret = Self::default();
        secret.metadata.namespace = namespace.into();
        secret.metadata.name = name.into();
        secret
    }

    /// Whether `immutable` is set to true.
    pub fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }

    /// Sum of the lengths of the `data` values (what the 1 MiB limit counts).
    pub fn data_size(&self) -> usize {
        self.data.values().map(SecretValue::len).sum()
    }

    /// `namespace/name`, for messages and logs.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_debug_prints_only_the_length() {
        let v = SecretValue::from("hunter2");
        assert_eq!(format!("{v:?}"), "<7 bytes redacted>");
        assert_eq!(v.expose(), b"hunter2");
        assert_eq!(v.len(), 7);
        assert!(!v.is_empty());
        assert!(SecretValue::default().is_empty());
    }

    #[test]
    fn secret_debug_never_prints_a_value() {
        let mut s = Secret::new("default", "db");
        s.data
            .insert("password".into(), SecretValue::from("S3cr3t-value"));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("S3cr3t-value"), "{dbg}");
        assert!(dbg.contains("password"), "{dbg}");
        assert!(dbg.contains("<12 bytes redacted>"), "{dbg}");
    }

    #[test]
    fn values_compare_by_content() {
        assert_eq!(SecretValue::from("a"), SecretValue::from("a"));
        assert_ne!(SecretValue::from("a"), SecretValue::from("b"));
        assert_ne!(SecretValue::from("a"), SecretValue::from("ab"));
    }

    #[test]
    fn defaults_and_helpers() {
        let mut s = Secret::new("ns", "x");
        assert_eq!(s.type_, "Opaque");
        assert!(!s.is_immutable());
        s.immutable = Some(true);
        assert!(s.is_immutable());
        s.data.insert("a".into(), SecretValue::from("123"));
        s.data.insert("b".into(), SecretValue::from("45"));
        assert_eq!(s.data_size(), 5);
        assert_eq!(s.qualified_name(), "ns/x");
    }
}
