//! The object as the apiserver returns it to kubectl (what `-o yaml` and
//! `-o json` print): every stored field, empty ones left out as Go's
//! `omitempty` leaves them out, `creationTimestamp` always (`null` when
//! unset), `resourceVersion` (the mod revision), `data` in base64 and
//! `fieldsV1` as the nested mapping kubectl decodes it into. Keys come in
//! any order here; the printers sort them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::yaml::YamlValue;
use crate::k8s::base64 as gobase64;
use crate::k8s::raw_json;
use crate::secret::model::{ManagedFieldsEntry, OwnerReference, Secret};
use crate::wipe::Wiped;

type Entries<'a> = Vec<(Cow<'a, str>, YamlValue<'a>)>;

fn str_value(s: &str) -> YamlValue<'_> {
    YamlValue::Str(Cow::Borrowed(s))
}

fn push<'a>(entries: &mut Entries<'a>, key: &'static str, value: YamlValue<'a>) {
    entries.push((Cow::Borrowed(key), value));
}

/// A string field with `omitempty`.
fn push_str<'a>(entries: &mut Entries<'a>, key: &'static str, value: &'a str) {
    if !value.is_empty() {
        push(entries, key, str_value(value));
    }
}

fn string_map_tree(map: &BTreeMap<String, String>) -> YamlValue<'_> {
    YamlValue::Map(
        map.iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), str_value(v)))
            .collect(),
    )
}

/// A JSON tree (a `fieldsV1`) as kubectl holds it after decoding.
fn json_tree(v: serde_json::Value) -> YamlValue<'static> {
    match v {
        serde_json::Value::Null => YamlValue::Null,
        serde_json::Value::Bool(b) => YamlValue::Bool(b),
        serde_json::Value::Number(n) => YamlValue::Number(n.to_string()),
        serde_json::Value::String(s) => YamlValue::Str(Cow::Owned(s)),
        serde_json::Value::Array(items) => {
            YamlValue::Seq(items.into_iter().map(json_tree).collect())
        }
        serde_json::Value::Object(map) => YamlValue::Map(
            map.into_iter()
                .map(|(k, v)| (Cow::Owned(k), json_tree(v)))
                .collect(),
        ),
    }
}

fn owner_reference_tree(r: &OwnerReference) -> YamlValue<'_> {
    let mut e = Entries::new();
    push(&mut e, "apiVersion", str_value(&r.api_version));
    push(&mut e, "kind", str_value(&r.kind));
    push(&mut e, "name", str_value(&r.name));
    push(&mut e, "uid", str_value(&r.uid));
    if let Some(c) = r.controller {
        push(&mut e, "controller", YamlValue::Bool(c));
    }
    if let Some(b) = r.block_owner_deletion {
        push(&mut e, "blockOwnerDeletion", YamlValue::Bool(b));
    }
    YamlValue::Map(e)
}

fn managed_fields_tree(m: &ManagedFieldsEntry) -> YamlValue<'_> {
    let mut e = Entries::new();
    push_str(&mut e, "manager", &m.manager);
    push_str(&mut e, "operation", &m.operation);
    push_str(&mut e, "apiVersion", &m.api_version);
    if let Some(t) = &m.time {
        push(&mut e, "time", str_value(t));
    }
    push_str(&mut e, "fieldsType", &m.fields_type);
    if let Some(raw) = &m.fields_v1 {
        push(&mut e, "fieldsV1", json_tree(raw_json::tree(raw)));
    }
    push_str(&mut e, "subresource", &m.subresource);
    YamlValue::Map(e)
}

/// The object as the apiserver returns it.
pub(super) fn object_tree(secret: &Secret) -> YamlValue<'_> {
    let meta = &secret.metadata;
    let mut metadata = Entries::new();
    push(&mut metadata, "name", str_value(&meta.name));
    push_str(&mut metadata, "generateName", &meta.generate_name);
    push_str(&mut metadata, "namespace", &meta.namespace);
    push_str(&mut metadata, "uid", meta.uid.as_deref().unwrap_or(""));
    push_str(
        &mut metadata,
        "resourceVersion",
        meta.resource_version.as_deref().unwrap_or(""),
    );
    if meta.generation != 0 {
        push(
            &mut metadata,
            "generation",
            YamlValue::Number(meta.generation.to_string()),
        );
    }
    push(
        &mut metadata,
        "creationTimestamp",
        match meta.creation_timestamp.as_deref() {
            Some(ts) => str_value(ts),
            None => YamlValue::Null,
        },
    );
    if let Some(ts) = &meta.deletion_timestamp {
        push(&mut metadata, "deletionTimestamp", str_value(ts));
    }
    if let Some(g) = meta.deletion_grace_period_seconds {
        push(
            &mut metadata,
            "deletionGracePeriodSeconds",
            YamlValue::Number(g.to_string()),
        );
    }
    if !meta.labels.is_empty() {
        push(&mut metadata, "labels", string_map_tree(&meta.labels));
    }
    if !meta.annotations.is_empty() {
        push(
            &mut metadata,
            "annotations",
            string_map_tree(&meta.annotations),
        );
    }
    if !meta.owner_references().is_empty() {
        let refs = meta
            .owner_references()
            .iter()
            .map(owner_reference_tree)
            .collect();
        push(&mut metadata, "ownerReferences", YamlValue::Seq(refs));
    }
    if !meta.finalizers().is_empty() {
        let f = meta.finalizers().iter().map(|f| str_value(f)).collect();
        push(&mut metadata, "finalizers", YamlValue::Seq(f));
    }
    if !meta.managed_fields().is_empty() {
        let m = meta
            .managed_fields()
            .iter()
            .map(managed_fields_tree)
            .collect();
        push(&mut metadata, "managedFields", YamlValue::Seq(m));
    }
    let mut root = Entries::new();
    push(&mut root, "apiVersion", YamlValue::Str("v1".into()));
    push(&mut root, "kind", YamlValue::Str("Secret".into()));
    push(&mut root, "metadata", YamlValue::Map(metadata));
    if !secret.data.is_empty() {
        let data = secret
            .data
            .iter()
            .map(|(k, v)| {
                (
                    Cow::Borrowed(k.as_str()),
                    YamlValue::Secret(Wiped::new(gobase64::encode(v.expose()))),
                )
            })
            .collect();
        push(&mut root, "data", YamlValue::Map(data));
    }
    if let Some(immutable) = secret.immutable {
        push(&mut root, "immutable", YamlValue::Bool(immutable));
    }
    push_str(&mut root, "type", &secret.type_);
    YamlValue::Map(root)
}

#[cfg(test)]
mod tests {
    use crate::secret::model::{ManagedFieldsEntry, OwnerReference, Secret};
    use crate::secret::{OutputFormat, render_object};

    #[test]
    fn yaml_shows_every_field_as_kubectl_does() {
        let mut s = Secret::new("default", "web");
        let m = &mut s.metadata;
        m.uid = Some("u-1".into());
        m.creation_timestamp = Some("2024-05-01T10:00:00Z".into());
        m.generation = 2;
        m.deletion_timestamp = Some("2024-05-02T10:00:00Z".into());
        m.deletion_grace_period_seconds = Some(0);
        m.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "u-2".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        m.finalizers = Some(vec!["example.com/keep".into()]);
        m.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: "kubectl".into(),
            operation: "Update".into(),
            api_version: "v1".into(),
            time: Some("2024-05-01T10:00:00Z".into()),
            fields_type: "FieldsV1".into(),
            fields_v1: Some(r#"{"f:data":{".":{},"f:password":{}},"f:metadata":{"f:finalizers":{"v:\"example.com/keep\"":{}}}}"#.into()),
            subresource: String::new(),
        }]);
        let now = std::time::SystemTime::UNIX_EPOCH;
        assert_eq!(
            render_object(&s, OutputFormat::Yaml, now).as_str(),
            r#"apiVersion: v1
kind: Secret
metadata:
  creationTimestamp: "2024-05-01T10:00:00Z"
  deletionGracePeriodSeconds: 0
  deletionTimestamp: "2024-05-02T10:00:00Z"
  finalizers:
  - example.com/keep
  generation: 2
  managedFields:
  - apiVersion: v1
    fieldsType: FieldsV1
    fieldsV1:
      f:data:
        .: {}
        f:password: {}
      f:metadata:
        f:finalizers:
          v:"example.com/keep": {}
    manager: kubectl
    operation: Update
    time: "2024-05-01T10:00:00Z"
  name: web
  namespace: default
  ownerReferences:
  - apiVersion: apps/v1
    controller: true
    kind: Deployment
    name: web
    uid: u-2
  uid: u-1
type: Opaque
"#
        );
    }
}
