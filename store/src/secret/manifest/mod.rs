//! Reading Secrets from manifests, as `kubectl apply -f` would send them.
//!
//! - `documents`: YAML / JSON documents, `List`s and `SecretList`s, the
//!   entry points [`parse_manifests`] and [`parse_manifests_with`];
//! - `secret`: the fields of one Secret (`data`, `stringData`, `type`);
//! - `metadata`: its `metadata`, every `ObjectMeta` field;
//! - `fields`: what both share ([`ManifestOptions`], [`ManifestError`],
//!   locations, strict field checks).

mod documents;
mod fields;
mod metadata;
mod secret;

pub use documents::{parse_manifests, parse_manifests_with};
pub use fields::{ManifestError, ManifestOptions};

/// What the readers' unit tests share.
#[cfg(test)]
mod test_support {
    use super::parse_manifests;
    use crate::secret::Secret;

    /// The one Secret of `text`.
    pub(super) fn one(text: &str) -> Secret {
        let mut all = parse_manifests(text).unwrap();
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    /// Why `text` is refused.
    pub(super) fn err(text: &str) -> String {
        parse_manifests(text).unwrap_err().to_string()
    }

    /// A minimal Secret manifest.
    pub(super) const BASIC: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n";
}
