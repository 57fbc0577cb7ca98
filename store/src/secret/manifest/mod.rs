//! Reading Secrets from manifests, as `kubectl apply -f` would send them.
//!
//! - `documents`: YAML / JSON documents, `List`s and `SecretList`s, the
//!   entry points [`parse_manifests`] and [`parse_manifests_with`];
//! - `secret`: the fields of one Secret (`data`, `stringData`, metadata);
//! - `fields`: what both share ([`ManifestOptions`], [`ManifestError`],
//!   locations, strict field checks).

mod documents;
mod fields;
mod secret;

pub use documents::{parse_manifests, parse_manifests_with};
pub use fields::{ManifestError, ManifestOptions};
