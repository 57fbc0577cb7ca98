//! What the apiserver's registry does to a Secret before validating and
//! storing it (`rest.BeforeCreate` / `rest.BeforeUpdate`, the Secret
//! strategy and v1 defaulting), so that the store behaves the same.
//!
//! Not here, because it needs the store: refusing a create whose
//! `resourceVersion` is set (`resourceVersion should not be set on objects
//! to be created`) and the optimistic-concurrency check on update (a set
//! `resourceVersion` that differs from the stored one is a conflict).

use std::time::SystemTime;

use super::object::Secret;
use super::types::SECRET_TYPE_OPAQUE;

/// Prepares a new Secret: an empty `type` becomes `Opaque`, `uid` and
/// `creationTimestamp` are set (any given value is replaced, as the
/// apiserver replaces them), `deletionTimestamp` and
/// `deletionGracePeriodSeconds` are cleared (`rest.BeforeCreate`).
pub fn prepare_for_create(secret: &mut Secret, uid: String, now: SystemTime) {
    if secret.type_.is_empty() {
        secret.type_ = SECRET_TYPE_OPAQUE.to_owned();
    }
    secret.metadata.deletion_timestamp = None;
    secret.metadata.deletion_grace_period_seconds = None;
    secret.metadata.uid = Some(uid);
    secret.metadata.set_creation_time(now);
}

/// Prepares `new` to replace `old`: an empty `type` keeps the old one, a
/// missing `uid` or `resourceVersion` is taken from `old` (Secrets allow
/// unconditional updates), `creationTimestamp` and `generation` are always
/// the old ones, and an unset `deletionTimestamp` or
/// `deletionGracePeriodSeconds` keeps the old one (`rest.BeforeUpdate`).
///
/// What other actors own is never dropped by omission: `ownerReferences`
/// (the garbage collector), `finalizers` and `managedFields` (server-side
/// apply) that `new` does not set keep their stored values; a manifest
/// clears one by setting it to an empty list.
pub fn prepare_for_update(new: &mut Secret, old: &Secret) {
    let (n, o) = (&mut new.metadata, &old.metadata);
    n.generation = o.generation;
    if n.deletion_timestamp.is_none() {
        n.deletion_timestamp.clone_from(&o.deletion_timestamp);
    }
    if n.deletion_grace_period_seconds.is_none() {
        n.deletion_grace_period_seconds = o.deletion_grace_period_seconds;
    }
    if n.owner_references.is_none() {
        n.owner_references.clone_from(&o.owner_references);
    }
    if n.finalizers.is_none() {
        n.finalizers.clone_from(&o.finalizers);
    }
    if n.managed_fields.is_none() {
        n.managed_fields.clone_from(&o.managed_fields);
    }
    if new.type_.is_empty() {
        new.type_.clone_from(&old.type_);
    }
    if new.metadata.uid.as_deref().unwrap_or("").is_empty() {
        new.metadata.uid.clone_from(&old.metadata.uid);
    }
    if new
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        new.metadata
            .resource_version
            .clone_from(&old.metadata.resource_version);
    }
    if old.metadata.creation_timestamp.is_some() {
        new.metadata
            .creation_timestamp
            .clone_from(&old.metadata.creation_timestamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::model::{ManagedFieldsEntry, OwnerReference};
    use std::time::Duration;

    #[test]
    fn update_keeps_what_other_actors_own_unless_set() {
        let mut old = Secret::new("default", "x");
        old.metadata.generation = 2;
        old.metadata.deletion_timestamp = Some("2024-05-01T10:00:00Z".into());
        old.metadata.deletion_grace_period_seconds = Some(0);
        old.metadata.owner_references = Some(vec![OwnerReference::default()]);
        old.metadata.finalizers = Some(vec!["example.com/f".into()]);
        old.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        let mut omitted = Secret::new("default", "x");
        omitted.metadata.generation = 9;
        prepare_for_update(&mut omitted, &old);
        assert_eq!(omitted.metadata, Secret { ..old.clone() }.metadata);
        let mut cleared = Secret::new("default", "x");
        cleared.metadata.owner_references = Some(vec![]);
        cleared.metadata.finalizers = Some(vec![]);
        cleared.metadata.managed_fields = Some(vec![]);
        prepare_for_update(&mut cleared, &old);
        assert!(cleared.metadata.owner_references().is_empty());
        assert!(cleared.metadata.finalizers().is_empty());
        assert!(cleared.metadata.managed_fields().is_empty());
        assert!(cleared.metadata.is_terminating());
        let mut created = old.clone();
        prepare_for_create(&mut created, "u".into(), SystemTime::UNIX_EPOCH);
        assert!(!created.metadata.is_terminating());
        assert_eq!(created.metadata.deletion_grace_period_seconds, None);
    }

    #[test]
    fn create_sets_system_fields() {
        let mut s = Secret::new("default", "x");
        s.type_ = String::new();
        s.metadata.uid = Some("client-chosen".into());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_557_600);
        prepare_for_create(&mut s, "u-1".into(), now);
        assert_eq!(s.type_, "Opaque");
        assert_eq!(s.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(
            s.metadata.creation_timestamp.as_deref(),
            Some("2024-05-01T10:00:00Z")
        );
    }

    #[test]
    fn update_keeps_what_the_server_owns() {
        let mut old = Secret::new("default", "x");
        old.type_ = "kubernetes.io/tls".into();
        old.metadata.uid = Some("u-1".into());
        old.metadata.resource_version = Some("5".into());
        old.metadata.creation_timestamp = Some("2024-05-01T10:00:00Z".into());
        let mut new = Secret::new("default", "x");
        new.type_ = String::new();
        new.metadata.creation_timestamp = Some("2030-01-01T00:00:00Z".into());
        prepare_for_update(&mut new, &old);
        assert_eq!(new.type_, "kubernetes.io/tls");
        assert_eq!(new.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(new.metadata.resource_version.as_deref(), Some("5"));
        assert_eq!(
            new.metadata.creation_timestamp.as_deref(),
            Some("2024-05-01T10:00:00Z")
        );
        assert_eq!(new.metadata.generation, 0);
        let mut pinned = Secret::new("default", "x");
        pinned.metadata.resource_version = Some("4".into());
        prepare_for_update(&mut pinned, &old);
        assert_eq!(pinned.metadata.resource_version.as_deref(), Some("4"));
    }
}
