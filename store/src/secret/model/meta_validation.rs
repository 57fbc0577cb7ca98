//! The `ObjectMeta` checks beyond names, labels and annotations, as
//! apimachinery's `ValidateObjectMetaAccessor` and
//! `ValidateObjectMetaAccessorUpdate` run them, with their messages:
//!
//! - `generateName`: a DNS subdomain prefix (a trailing `-` allowed);
//! - `generation`: not negative;
//! - `ownerReferences`: `apiVersion`, `kind`, `name` and `uid` set, at most
//!   one `controller: true`;
//! - `finalizers`: qualified names, fully qualified unless a standard one
//!   (`kubernetes`, `orphan`, `foregroundDeletion`), not both `orphan` and
//!   `foregroundDeletion`;
//! - `managedFields`: `operation` `Apply` or `Update`, `fieldsType`
//!   `FieldsV1`, `manager` at most 128 bytes, `subresource` at most 256;
//! - update: `deletionTimestamp` and `deletionGracePeriodSeconds` never
//!   change once set, and no finalizer is added while deleting.

use crate::k8s::names;
use crate::k8s::{FieldError, go_quote};
use crate::secret::model::ObjectMeta;

const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];
const FIELD_MANAGER_MAX: usize = 128;
const SUBRESOURCE_MAX: usize = 256;

/// The checks of `meta` on its own (create and update).
pub(super) fn validate_meta_fields(meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !meta.generate_name.is_empty() {
        let masked = meta
            .generate_name
            .strip_suffix('-')
            .unwrap_or(&meta.generate_name);
        let masked = if masked.is_empty() { "a" } else { masked };
        for msg in names::dns1123_subdomain_problems(masked) {
            errors.push(FieldError::invalid(
                "metadata.generateName",
                &meta.generate_name,
                msg,
            ));
        }
    }
    if meta.generation < 0 {
        errors.push(FieldError::invalid_rendered(
            "metadata.generation",
            meta.generation.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errors.extend(owner_references(meta));
    errors.extend(finalizers(meta));
    errors.extend(managed_fields(meta));
    errors
}

fn owner_references(meta: &ObjectMeta) -> Vec<FieldError> {
    let path = "metadata.ownerReferences";
    let mut errors = Vec::new();
    let mut controllers = Vec::new();
    for r in meta.owner_references() {
        let checks = [
            ("apiVersion", &r.api_version, "version must not be empty"),
            ("kind", &r.kind, "kind must not be empty"),
            ("name", &r.name, "name must not be empty"),
            ("uid", &r.uid, "uid must not be empty"),
        ];
        for (field, value, msg) in checks {
            if value.is_empty() {
                errors.push(FieldError::invalid(format!("{path}.{field}"), value, msg));
            }
        }
        if r.api_version == "v1" && r.kind == "Event" {
            errors.push(FieldError::invalid(
                path,
                &r.name,
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if r.controller == Some(true) {
            controllers.push(format!("{}/{}", r.kind, r.name));
        }
    }
    if controllers.len() > 1 {
        errors.push(FieldError::invalid_rendered(
            path,
            format!("[{}]", controllers.join(", ")),
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
    errors
}

fn finalizers(meta: &ObjectMeta) -> Vec<FieldError> {
    let path = "metadata.finalizers";
    let mut errors = Vec::new();
    for f in meta.finalizers() {
        let problems = names::qualified_name_problems(f);
        let had = !problems.is_empty();
        for msg in problems {
            errors.push(FieldError::invalid(path, f, msg));
        }
        if !had && !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()) {
            errors.push(FieldError::invalid(
                path,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    let has = |n: &str| meta.finalizers().iter().any(|f| f == n);
    if has("orphan") && has("foregroundDeletion") {
        errors.push(FieldError::invalid_rendered(
            path,
            format!("{:?}", meta.finalizers()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errors
}

fn managed_fields(meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, m) in meta.managed_fields().iter().enumerate() {
        let at = format!("metadata.managedFields[{i}]");
        if m.operation != "Apply" && m.operation != "Update" {
            errors.push(FieldError::invalid(
                format!("{at}.operation"),
                &m.operation,
                "must be `Apply` or `Update`",
            ));
        }
        if !m.fields_type.is_empty() && m.fields_type != "FieldsV1" {
            errors.push(FieldError::invalid(
                format!("{at}.fieldsType"),
                &m.fields_type,
                "must be `FieldsV1`",
            ));
        }
        if m.manager.len() > FIELD_MANAGER_MAX {
            errors.push(FieldError::too_long(
                format!("{at}.manager"),
                FIELD_MANAGER_MAX,
            ));
        }
        if m.subresource.len() > SUBRESOURCE_MAX {
            errors.push(FieldError::too_long(
                format!("{at}.subresource"),
                SUBRESOURCE_MAX,
            ));
        }
    }
    errors
}

/// The update checks of `new` (already prepared) against `old`.
pub(super) fn validate_meta_update_fields(new: &ObjectMeta, old: &ObjectMeta) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let immutable = "field is immutable";
    if new.deletion_timestamp != old.deletion_timestamp {
        let shown = new.deletion_timestamp.as_deref().unwrap_or("null");
        errors.push(FieldError::invalid(
            "metadata.deletionTimestamp",
            shown,
            immutable,
        ));
    }
    if new.deletion_grace_period_seconds != old.deletion_grace_period_seconds {
        let shown = new
            .deletion_grace_period_seconds
            .map_or("null".to_owned(), |g| g.to_string());
        errors.push(FieldError::invalid_rendered(
            "metadata.deletionGracePeriodSeconds",
            shown,
            immutable,
        ));
    }
    if new.is_terminating() {
        let added: Vec<String> = new
            .finalizers()
            .iter()
            .filter(|f| !old.finalizers().contains(f))
            .map(|f| go_quote(f))
            .collect();
        if !added.is_empty() {
            errors.push(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    added.join(", ")
                ),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::model::{ManagedFieldsEntry, OwnerReference};

    fn shown(errors: Vec<FieldError>) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn owner_references_need_their_fields_and_one_controller() {
        let mut m = ObjectMeta::default();
        let r = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        m.owner_references = Some(vec![r.clone(), OwnerReference::default()]);
        assert_eq!(
            shown(validate_meta_fields(&m)),
            [
                "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty",
                "metadata.ownerReferences.kind: Invalid value: \"\": kind must not be empty",
                "metadata.ownerReferences.name: Invalid value: \"\": name must not be empty",
                "metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty",
            ]
        );
        m.owner_references = Some(vec![r.clone(), r]);
        assert!(
            shown(validate_meta_fields(&m))[0]
                .contains("Only one reference can have Controller set to true")
        );
    }

    #[test]
    fn finalizers_and_managed_fields_follow_apimachinery() {
        let m = ObjectMeta {
            finalizers: Some(vec![
                "kubernetes".into(),
                "example.com/ok".into(),
                "mine".into(),
            ]),
            managed_fields: Some(vec![ManagedFieldsEntry {
                operation: "Patch".into(),
                fields_type: "FieldsV2".into(),
                ..ManagedFieldsEntry::default()
            }]),
            generation: -1,
            ..ObjectMeta::default()
        };
        assert_eq!(
            shown(validate_meta_fields(&m)),
            [
                "metadata.generation: Invalid value: -1: must be greater than or equal to 0",
                "metadata.finalizers: Invalid value: \"mine\": name is neither a standard finalizer name nor is it fully qualified",
                "metadata.managedFields[0].operation: Invalid value: \"Patch\": must be `Apply` or `Update`",
                "metadata.managedFields[0].fieldsType: Invalid value: \"FieldsV2\": must be `FieldsV1`",
            ]
        );
    }

    #[test]
    fn deletion_is_one_way() {
        let old = ObjectMeta {
            deletion_timestamp: Some("2024-05-01T10:00:00Z".into()),
            deletion_grace_period_seconds: Some(0),
            finalizers: Some(vec!["example.com/a".into()]),
            ..ObjectMeta::default()
        };
        let mut new = old.clone();
        assert!(validate_meta_update_fields(&new, &old).is_empty());
        new.finalizers = Some(vec!["example.com/a".into(), "example.com/b".into()]);
        new.deletion_grace_period_seconds = Some(30);
        assert_eq!(
            shown(validate_meta_update_fields(&new, &old)),
            [
                "metadata.deletionGracePeriodSeconds: Invalid value: 30: field is immutable",
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/b\"}",
            ]
        );
    }
}
