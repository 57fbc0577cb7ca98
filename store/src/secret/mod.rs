//! The Secret object: what a v1 Secret is, how it is read from manifests,
//! validated, stored and printed — each as kube-apiserver and kubectl do it.
//!
//! - [`Secret`], [`ObjectMeta`], [`SecretValue`] (`model`): the object;
//!   values are wiped on drop and never printed by `Debug`.
//! - [`types`]: the built-in types, their keys and the size limits.
//! - [`parse_manifests`] (`manifest`): YAML / JSON manifests, lists,
//!   `stringData` merged into `data`; strict about unknown fields.
//! - [`prepare_for_create`], [`prepare_for_update`] (`strategy`): the
//!   server-owned fields, set as the apiserver's registry sets them.
//! - [`validate_create`], [`validate_update`] (`validation`): the
//!   apiserver's rules and messages (`Secret "x" is invalid: …`), plus
//!   [`Warning`]s (`warnings`).
//! - [`Secret::to_storage_json`], [`Secret::to_storage_protobuf`],
//!   [`Secret::from_storage_bytes`] (`storage_codec`): the bytes the
//!   apiserver puts inside the encryption, JSON or protobuf.
//! - [`render`] (`output`): `kubectl get` tables, `-o yaml`, `-o json`.
//!
//! No error message, warning or `Debug` output contains a Secret value.

mod field_error;
pub(crate) mod gobase64;
mod gojson;
mod manifest;
mod manifest_secret;
mod model;
mod names;
mod node;
mod output;
mod storage_codec;
mod storage_json;
mod storage_proto;
mod strategy;
mod timefmt;
pub mod types;
mod validation;
mod warnings;
mod yaml_out;
mod yaml_style;

#[cfg(test)]
mod validation_table;

pub use field_error::{ErrorType, FieldError, InvalidError};
pub use gobase64::CorruptInputError;
pub use manifest::{ManifestError, ManifestOptions, parse_manifests, parse_manifests_with};
pub use model::{ObjectMeta, Secret, SecretValue};
pub use names::{
    config_key_problems, dns1123_label_problems, dns1123_subdomain_problems, label_value_problems,
    qualified_name_problems,
};
pub use output::{
    OutputFormat, UnknownOutputFormat, human_duration, no_resources_message, render, render_list,
    render_object,
};
pub use storage_codec::{DecodeError, StorageFormat};
pub use strategy::{prepare_for_create, prepare_for_update};
pub use validation::{validate_create, validate_update};
pub use warnings::Warning;
