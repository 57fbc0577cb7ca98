//! `metav1.ObjectMeta` as the apiserver stores it for a Secret, every field
//! it keeps: the names, the server-set fields (uid, generation, the
//! timestamps), labels and annotations, and what other actors own
//! (`ownerReferences` for the garbage collector, `finalizers`,
//! `managedFields` for server-side apply). `selfLink` and
//! `resourceVersion` are never stored (the apiserver clears them; the
//! resourceVersion a reader sees is the value's mod revision).
//!
//! `ownerReferences`, `finalizers` and `managedFields` are `Option`s, as
//! Go's nil and empty slices differ: `None` is a field a manifest does not
//! set (an update keeps the stored one), `Some(vec![])` one it sets to
//! empty (an update clears it). Both are stored alike: not at all.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::k8s::time as timefmt;

/// `metav1.ObjectMeta`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// `metadata.name`: an RFC 1123 subdomain of at most 253 bytes.
    pub name: String,
    /// `metadata.generateName`: kept as given (this store does not
    /// generate names: a Secret always has a `name`).
    pub generate_name: String,
    /// `metadata.namespace`: an RFC 1123 label; manifests without one get
    /// [`DEFAULT_NAMESPACE`](super::types::DEFAULT_NAMESPACE).
    pub namespace: String,
    /// `metadata.uid`, set on create.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`: the store's version of the object. It is
    /// never written into the stored bytes (the apiserver clears it too).
    pub resource_version: Option<String>,
    /// `metadata.generation` (0 for Secrets unless a client set one on
    /// create; an update keeps the stored one).
    pub generation: i64,
    /// `metadata.creationTimestamp` in RFC 3339, UTC, whole seconds
    /// (`2024-05-01T10:00:00Z`), set on create.
    pub creation_timestamp: Option<String>,
    /// `metadata.deletionTimestamp`, same format: set when a delete waits
    /// for finalizers.
    pub deletion_timestamp: Option<String>,
    /// `metadata.deletionGracePeriodSeconds`.
    pub deletion_grace_period_seconds: Option<i64>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.ownerReferences`, in list order.
    pub owner_references: Option<Vec<OwnerReference>>,
    /// `metadata.finalizers`, in list order.
    pub finalizers: Option<Vec<String>>,
    /// `metadata.managedFields`, in list order.
    pub managed_fields: Option<Vec<ManagedFieldsEntry>>,
}

/// `metav1.OwnerReference`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerReference {
    /// `apiVersion` of the owner.
    pub api_version: String,
    /// `kind` of the owner.
    pub kind: String,
    /// `name` of the owner.
    pub name: String,
    /// `uid` of the owner.
    pub uid: String,
    /// `controller`: whether the owner is the managing controller.
    pub controller: Option<bool>,
    /// `blockOwnerDeletion`: foreground deletion of the owner waits for this object.
    pub block_owner_deletion: Option<bool>,
}

/// `metav1.ManagedFieldsEntry`: which manager owns which fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManagedFieldsEntry {
    /// `manager`, e.g. `kubectl-client-side-apply`.
    pub manager: String,
    /// `operation`: `Apply` or `Update`.
    pub operation: String,
    /// `apiVersion` of the object the fields were set through.
    pub api_version: String,
    /// `time` of the last change, RFC 3339 like the other timestamps.
    pub time: Option<String>,
    /// `fieldsType`: `FieldsV1`.
    pub fields_type: String,
    /// `fieldsV1`: the field set, exactly the JSON bytes it was stored as
    /// (`{"f:data":{".":{},...}}`); checked to be JSON when read.
    pub fields_v1: Option<String>,
    /// `subresource`, e.g. `status`; usually empty.
    pub subresource: String,
}

impl ObjectMeta {
    /// Sets `creationTimestamp` to `when`, truncated to whole seconds as the
    /// apiserver stores it.
    pub fn set_creation_time(&mut self, when: SystemTime) {
        self.creation_timestamp = Some(timefmt::format_system_time(when));
    }

    /// `creationTimestamp` as a time, when it is set and well formed.
    pub fn creation_time(&self) -> Option<SystemTime> {
        let text = self.creation_timestamp.as_deref()?;
        let (seconds, nanos) = timefmt::parse_rfc3339(text)?;
        timefmt::to_system_time(seconds, nanos)
    }

    /// `ownerReferences`, empty when unset.
    pub fn owner_references(&self) -> &[OwnerReference] {
        self.owner_references.as_deref().unwrap_or_default()
    }

    /// `finalizers`, empty when unset.
    pub fn finalizers(&self) -> &[String] {
        self.finalizers.as_deref().unwrap_or_default()
    }

    /// `managedFields`, empty when unset.
    pub fn managed_fields(&self) -> &[ManagedFieldsEntry] {
        self.managed_fields.as_deref().unwrap_or_default()
    }

    /// Whether a delete has started and waits for finalizers.
    pub fn is_terminating(&self) -> bool {
        self.deletion_timestamp.is_some()
    }
}

/// `Some(list)` for a non-empty list, `None` for an empty one: what a
/// stored object holds (storage cannot tell nil from empty).
pub(crate) fn non_empty<T>(list: Vec<T>) -> Option<Vec<T>> {
    (!list.is_empty()).then_some(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_time_round_trips_in_whole_seconds() {
        let mut m = ObjectMeta::default();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_714_557_600_250);
        m.set_creation_time(t);
        assert_eq!(
            m.creation_timestamp.as_deref(),
            Some("2024-05-01T10:00:00Z")
        );
        assert_eq!(
            m.creation_time(),
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_714_557_600))
        );
    }

    #[test]
    fn unset_lists_read_as_empty() {
        let mut m = ObjectMeta::default();
        assert!(m.owner_references().is_empty() && m.finalizers().is_empty());
        assert!(m.managed_fields().is_empty() && !m.is_terminating());
        m.finalizers = Some(vec!["example.com/x".into()]);
        assert_eq!(m.finalizers(), ["example.com/x"]);
        assert_eq!(non_empty(Vec::<u8>::new()), None);
        assert_eq!(non_empty(vec![1]), Some(vec![1]));
    }
}
