//! Validation of a Secret as kube-apiserver does it on create and update
//! (`ValidateSecret`, `ValidateSecretUpdate`, `ValidateObjectMeta`,
//! `ValidateObjectMetaUpdate` in `pkg/apis/core/validation` and
//! `apimachinery/pkg/api/validation`), with the same messages.
//!
//! The rules:
//! - `metadata.name`: required, an RFC 1123 subdomain of at most 253 bytes;
//!   `metadata.namespace`: required, an RFC 1123 label of at most 63 bytes.
//! - labels: keys are qualified names (`[prefix/]name`, name at most 63
//!   bytes), values at most 63 bytes of `[A-Za-z0-9._-]` starting and
//!   ending alphanumeric, or empty; annotations: keys are qualified names
//!   (checked lower-cased), keys plus values at most 256 KiB.
//! - `data` keys: `[-._a-zA-Z0-9]+`, at most 253 bytes, not `.`, `..` or
//!   starting with `..`; the values (keys not counted) at most 1 MiB.
//! - per type: service-account-token needs the annotation
//!   `kubernetes.io/service-account.name` (non-empty); dockercfg and
//!   dockerconfigjson need their key, holding JSON that Go decodes into a
//!   map (an object or `null`); basic-auth needs `username` or `password`
//!   (either may be empty); ssh-auth needs a non-empty `ssh-privatekey`;
//!   tls needs `tls.crt` and `tls.key` (either may be empty); `Opaque`,
//!   bootstrap tokens and custom types: nothing.
//! - the other `ObjectMeta` fields (owner references, finalizers, managed
//!   fields, generation, deletion): `meta_validation`;
//! - update: `metadata.resourceVersion` must be set; name, namespace, uid
//!   and creationTimestamp never change; `type` never changes; when the old
//!   Secret is immutable, `immutable` must stay true and `data` must not
//!   change. Then the new Secret is validated as on create.
//!
//! A Secret value never appears in a message: a bad dockercfg prints
//! `"<secret contents redacted>"` as the apiserver does.

use super::meta_validation::{validate_meta_fields, validate_meta_update_fields};
use super::object::Secret;
use super::types::*;
use super::warnings::{Warning, warnings_for};
use crate::k8s::json as gojson;
use crate::k8s::names;
use crate::k8s::time as timefmt;
use crate::k8s::{FieldError, InvalidError};

/// What the apiserver prints instead of a value it must not show.
const REDACTED: &str = "\"<secret contents redacted>\"";

/// Validates a Secret about to be created. `Ok` carries warnings (never
/// fatal); `Err` lists every problem found.
pub fn validate_create(secret: &Secret) -> Result<Vec<Warning>, InvalidError> {
    let errors = validate_secret(secret);
    finish(secret, errors)
}

/// Validates `new` replacing `old`. `new` is expected to have been through
/// [`prepare_for_update`](super::strategy::prepare_for_update), as the
/// apiserver's registry does before it validates.
pub fn validate_update(new: &Secret, old: &Secret) -> Result<Vec<Warning>, InvalidError> {
    let mut errors = validate_metadata_update(new, old);
    if new.type_ != old.type_ {
        errors.push(FieldError::invalid(
            "type",
            &new.type_,
            "field is immutable",
        ));
    }
    if old.is_immutable() {
        let immutable_msg = "field is immutable when `immutable` is set";
        if !new.is_immutable() {
            errors.push(FieldError::forbidden("immutable", immutable_msg));
        }
        if new.data != old.data {
            errors.push(FieldError::forbidden("data", immutable_msg));
        }
    }
    errors.extend(validate_secret(new));
    finish(new, errors)
}

fn finish(secret: &Secret, errors: Vec<FieldError>) -> Result<Vec<Warning>, InvalidError> {
    if errors.is_empty() {
        Ok(warnings_for(secret))
    } else {
        Err(InvalidError::new(secret.metadata.name.clone(), errors))
    }
}

/// `ValidateSecret`: the object on its own.
fn validate_secret(secret: &Secret) -> Vec<FieldError> {
    let mut errors = validate_metadata(secret);
    for key in secret.data.keys() {
        for msg in names::config_key_problems(key) {
            errors.push(FieldError::invalid(format!("data[{key}]"), key, msg));
        }
    }
    if secret.data_size() > MAX_SECRET_SIZE {
        errors.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    errors.extend(validate_type(secret));
    errors
}

fn data_path(key: &str) -> String {
    format!("data[{key}]")
}

/// The checks that depend on `type`.
fn validate_type(secret: &Secret) -> Vec<FieldError> {
    let data = &secret.data;
    let mut errors = Vec::new();
    match secret.type_.as_str() {
        SECRET_TYPE_SERVICE_ACCOUNT_TOKEN => {
            let name = secret.metadata.annotations.get(SERVICE_ACCOUNT_NAME_KEY);
            if name.is_none_or(|n| n.is_empty()) {
                errors.push(FieldError::required(
                    format!("metadata.annotations[{SERVICE_ACCOUNT_NAME_KEY}]"),
                    "",
                ));
            }
        }
        t @ (SECRET_TYPE_DOCKERCFG | SECRET_TYPE_DOCKER_CONFIG_JSON) => {
            let key = if t == SECRET_TYPE_DOCKERCFG {
                DOCKER_CONFIG_KEY
            } else {
                DOCKER_CONFIG_JSON_KEY
            };
            match data.get(key) {
                None => errors.push(FieldError::required(data_path(key), "")),
                Some(value) => {
                    if let Err(msg) = gojson::unmarshal_into_map(value.expose()) {
                        errors.push(FieldError::invalid_rendered(
                            data_path(key),
                            REDACTED.to_owned(),
                            msg,
                        ));
                    }
                }
            }
        }
        SECRET_TYPE_BASIC_AUTH
            if !data.contains_key(BASIC_AUTH_USERNAME_KEY)
                && !data.contains_key(BASIC_AUTH_PASSWORD_KEY) =>
        {
            // Either may be empty, but one must be present.
            errors.push(FieldError::required(data_path(BASIC_AUTH_USERNAME_KEY), ""));
            errors.push(FieldError::required(data_path(BASIC_AUTH_PASSWORD_KEY), ""));
        }
        SECRET_TYPE_SSH_AUTH if data.get(SSH_AUTH_PRIVATE_KEY).is_none_or(|v| v.is_empty()) => {
            errors.push(FieldError::required(data_path(SSH_AUTH_PRIVATE_KEY), ""));
        }
        SECRET_TYPE_TLS => {
            for key in [TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY] {
                if !data.contains_key(key) {
                    errors.push(FieldError::required(data_path(key), ""));
                }
            }
        }
        // Opaque, "" (defaulted to Opaque), bootstrap tokens (checked by
        // the bootstrap authenticator, not here: see warnings) and custom
        // types.
        _ => {}
    }
    errors
}

/// `ValidateObjectMeta` for a namespaced object named as a DNS subdomain.
fn validate_metadata(secret: &Secret) -> Vec<FieldError> {
    let meta = &secret.metadata;
    let mut errors = Vec::new();
    if meta.name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in names::dns1123_subdomain_problems(&meta.name) {
            errors.push(FieldError::invalid("metadata.name", &meta.name, msg));
        }
    }
    if meta.namespace.is_empty() {
        errors.push(FieldError::required("metadata.namespace", ""));
    } else {
        for msg in names::dns1123_label_problems(&meta.namespace) {
            errors.push(FieldError::invalid(
                "metadata.namespace",
                &meta.namespace,
                msg,
            ));
        }
    }
    errors.extend(validate_labels_and_annotations(secret));
    errors.extend(validate_meta_fields(meta));
    errors
}

fn validate_labels_and_annotations(secret: &Secret) -> Vec<FieldError> {
    let meta = &secret.metadata;
    let mut errors = Vec::new();
    for (key, value) in &meta.labels {
        for msg in names::qualified_name_problems(key) {
            errors.push(FieldError::invalid("metadata.labels", key, msg));
        }
        for msg in names::label_value_problems(value) {
            errors.push(FieldError::invalid("metadata.labels", value, msg));
        }
    }
    let mut annotations_size = 0usize;
    for (key, value) in &meta.annotations {
        for msg in names::qualified_name_problems(&key.to_lowercase()) {
            errors.push(FieldError::invalid("metadata.annotations", key, msg));
        }
        annotations_size += key.len() + value.len();
    }
    if annotations_size > TOTAL_ANNOTATION_SIZE_LIMIT {
        errors.push(FieldError::too_long(
            "metadata.annotations",
            TOTAL_ANNOTATION_SIZE_LIMIT,
        ));
    }
    errors
}

/// `creationTimestamp` as a field error prints it (Go's `Time.String()`).
fn go_time_string(timestamp: Option<&str>) -> String {
    match timestamp.and_then(timefmt::parse_rfc3339) {
        Some((seconds, _)) => timefmt::format_go_time_string(seconds),
        None => "0001-01-01 00:00:00 +0000 UTC".to_owned(),
    }
}

/// `ValidateObjectMetaUpdate`.
fn validate_metadata_update(new: &Secret, old: &Secret) -> Vec<FieldError> {
    let (n, o) = (&new.metadata, &old.metadata);
    let mut errors = Vec::new();
    if n.resource_version.as_deref().unwrap_or("").is_empty() {
        errors.push(FieldError::invalid(
            "metadata.resourceVersion",
            "",
            "must be specified for an update",
        ));
    }
    let immutable = "field is immutable";
    if n.name != o.name {
        errors.push(FieldError::invalid("metadata.name", &n.name, immutable));
    }
    if n.namespace != o.namespace {
        errors.push(FieldError::invalid(
            "metadata.namespace",
            &n.namespace,
            immutable,
        ));
    }
    if n.uid != o.uid {
        let uid = n.uid.as_deref().unwrap_or("");
        errors.push(FieldError::invalid("metadata.uid", uid, immutable));
    }
    let (new_ts, old_ts) = (
        go_time_string(n.creation_timestamp.as_deref()),
        go_time_string(o.creation_timestamp.as_deref()),
    );
    if new_ts != old_ts {
        errors.push(FieldError::invalid_rendered(
            "metadata.creationTimestamp",
            new_ts,
            immutable,
        ));
    }
    errors.extend(validate_meta_update_fields(n, o));
    errors.extend(validate_labels_and_annotations(new));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::model::SecretValue;

    fn secret(type_: &str, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret::new("default", "x");
        s.type_ = type_.to_owned();
        for (k, v) in data {
            s.data.insert((*k).to_owned(), SecretValue::from(*v));
        }
        s
    }

    #[test]
    fn a_plain_opaque_secret_is_valid() {
        assert_eq!(
            validate_create(&secret("Opaque", &[("a", "b")])),
            Ok(vec![])
        );
    }

    #[test]
    fn errors_come_in_apiserver_order() {
        let mut s = secret(SECRET_TYPE_TLS, &[("bad key", "v")]);
        s.metadata.name = String::new();
        let e = validate_create(&s).unwrap_err();
        let fields: Vec<&str> = e.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "data[bad key]",
                "data[tls.crt]",
                "data[tls.key]"
            ]
        );
        assert!(e.to_string().starts_with("Secret \"\" is invalid: [metadata.name: Required value: name or generateName is required, "));
    }

    #[test]
    fn update_reports_metadata_then_type_then_immutability() {
        let mut old = secret("Opaque", &[("a", "1")]);
        old.immutable = Some(true);
        old.metadata.uid = Some("u1".into());
        let mut new = secret(SECRET_TYPE_TLS, &[("a", "2")]);
        new.metadata.uid = Some("u2".into());
        let e = validate_update(&new, &old).unwrap_err();
        let shown: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "metadata.resourceVersion: Invalid value: \"\": must be specified for an update",
                "metadata.uid: Invalid value: \"u2\": field is immutable",
                "type: Invalid value: \"kubernetes.io/tls\": field is immutable",
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
                "data[tls.crt]: Required value",
                "data[tls.key]: Required value",
            ]
        );
    }

    #[test]
    fn creation_timestamp_changes_print_as_go_times() {
        let mut old = secret("Opaque", &[]);
        old.metadata.creation_timestamp = Some("2024-05-01T10:00:00Z".into());
        let mut new = old.clone();
        new.metadata.resource_version = Some("2".into());
        new.metadata.creation_timestamp = Some("2024-05-02T10:00:00Z".into());
        assert_eq!(
            validate_update(&new, &old).unwrap_err().to_string(),
            "Secret \"x\" is invalid: metadata.creationTimestamp: Invalid value: 2024-05-02 10:00:00 +0000 UTC: field is immutable"
        );
    }
}
