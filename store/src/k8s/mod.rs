//! Kubernetes conventions the store follows wherever it meets them, each in
//! one place:
//!
//! - [`field`]: field errors, their aggregate and `Secret "x" is invalid`
//!   (apimachinery's `field` and `apierrors`);
//! - [`names`]: RFC 1123 names, qualified names, label values, config keys,
//!   with the apiserver's messages;
//! - [`base64`]: Go's `base64.StdEncoding`, as the apiserver reads `data`
//!   values and key secrets;
//! - `json`: Go's `encoding/json` syntax check and messages;
//! - `time`: RFC 3339 as `metav1.Time` reads and writes it;
//! - `quote`: Go's `%q`;
//! - `raw_json`: JSON kept as bytes (`fieldsV1`), compacted as Go embeds it;
//! - `uid`: object and request uids.

pub mod base64;
pub mod field;
pub(crate) mod json;
pub mod names;
mod quote;
pub(crate) mod raw_json;
pub(crate) mod time;
mod uid;

pub use field::{ErrorType, FieldError, FieldErrors, InvalidError};
pub(crate) use quote::go_quote;
pub(crate) use uid::new_uid;
