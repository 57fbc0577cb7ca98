//! The Secret object: what a v1 Secret is, how it is read from manifests,
//! validated, stored and printed — each as kube-apiserver and kubectl do it.
//! One folder per concept, each depending only on those above it:
//!
//! - [`model`]: [`Secret`], [`ObjectMeta`], [`SecretValue`], the built-in
//!   [`types`], the server-owned fields ([`prepare_for_create`],
//!   [`prepare_for_update`]) and validation ([`validate_create`],
//!   [`validate_update`], [`Warning`]);
//! - [`manifest`]: YAML / JSON manifests, lists, `stringData` merged into
//!   `data` ([`parse_manifests`]); strict about unknown fields;
//! - [`codec`]: the bytes the apiserver puts inside the encryption, JSON or
//!   protobuf ([`Secret::to_storage_json`], [`Secret::from_storage_bytes`]);
//! - [`output`]: `kubectl get` tables, `-o yaml`, `-o json` ([`render`]);
//! - `node`: the wiped document tree manifests and stored JSON are read into.
//!
//! The field errors, names, base64 and time formats they follow are the
//! Kubernetes conventions of [`crate::k8s`]. No error message, warning or
//! `Debug` output contains a Secret value.

pub mod codec;
pub mod manifest;
pub mod model;
mod node;
pub mod output;
#[cfg(test)]
mod validation_table;

pub use codec::{DecodeError, StorageFormat, UnknownMediaType};
pub use manifest::{ManifestError, ManifestOptions, parse_manifests, parse_manifests_with};
pub use model::types;
pub use model::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Secret, SecretValue, Warning,
    prepare_for_create, prepare_for_update, validate_create, validate_update,
};
pub use output::{
    OutputFormat, UnknownOutputFormat, human_duration, no_resources_message, render, render_list,
    render_object,
};
