//! The Secret object and what the apiserver's registry does with it:
//!
//! - `object`: [`Secret`], [`SecretValue`] (values are wiped on drop and
//!   never printed by `Debug`);
//! - `meta`: [`ObjectMeta`] with every field the apiserver stores
//!   ([`OwnerReference`], [`ManagedFieldsEntry`]);
//! - [`types`]: the built-in types, their keys and the size limits;
//! - `strategy`: the server-owned fields, set as the registry sets them;
//! - `validation` and `meta_validation`: the apiserver's rules and messages
//!   (`Secret "x" is invalid: …`), and `warnings`: what it warns about.

mod meta;
mod meta_validation;
mod object;
mod strategy;
pub mod types;
mod validation;
mod warnings;

pub(crate) use meta::non_empty;
pub use meta::{ManagedFieldsEntry, ObjectMeta, OwnerReference};
pub use object::{Secret, SecretValue};
pub use strategy::{prepare_for_create, prepare_for_update};
pub(crate) use types::{DEFAULT_NAMESPACE, SECRET_TYPE_OPAQUE};
pub use validation::{validate_create, validate_update};
pub use warnings::Warning;
