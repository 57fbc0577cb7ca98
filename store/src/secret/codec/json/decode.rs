//! Reading a Secret from stored JSON as the apiserver's decoder does:
//! unknown fields ignored, `null` read as unset, a field of the wrong type
//! an error naming it; `stringData` (never written by the apiserver)
//! merged into `data` as the v1 conversion would; an absent `type` read as
//! `Opaque` (v1 defaulting). `fieldsV1` keeps its exact bytes, as
//! `metav1.FieldsV1.UnmarshalJSON` does: a second, borrowing pass finds
//! them without copying anything else.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::k8s::base64 as gobase64;
use crate::k8s::time as timefmt;
use crate::secret::DecodeError;
use crate::secret::model::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, SECRET_TYPE_OPAQUE, Secret, SecretValue,
    non_empty,
};
use crate::secret::node::Node;
use crate::wipe::Wiped;

fn string_field<'a>(node: &'a Node, key: &str, path: &str) -> Result<Option<&'a str>, DecodeError> {
    match node.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(DecodeError::field(
            path,
            format!("expected a string, found {}", other.kind()),
        )),
    }
}

/// A string field as an owned string, empty when unset.
fn owned(node: &Node, key: &str, path: &str) -> Result<String, DecodeError> {
    Ok(string_field(node, key, path)?
        .unwrap_or_default()
        .to_owned())
}

fn bool_field(node: &Node, key: &str, path: &str) -> Result<Option<bool>, DecodeError> {
    match node.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(DecodeError::field(
            path,
            format!("expected a boolean, found {}", other.kind()),
        )),
    }
}

fn int_field(node: &Node, key: &str, path: &str) -> Result<Option<i64>, DecodeError> {
    match node.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Number(text)) => text
            .parse::<i64>()
            .map(Some)
            .map_err(|_| DecodeError::field(path, format!("{text} is not a 64-bit integer"))),
        Some(other) => Err(DecodeError::field(
            path,
            format!("expected an integer, found {}", other.kind()),
        )),
    }
}

fn time_field(node: &Node, key: &str, path: &str) -> Result<Option<String>, DecodeError> {
    match string_field(node, key, path)? {
        None | Some("") => Ok(None),
        Some(ts) => timefmt::metav1_time(ts).map_err(|e| DecodeError::field(path, e.to_string())),
    }
}

fn entries<'a>(node: Option<&'a Node>, path: &str) -> Result<&'a [(String, Node)], DecodeError> {
    match node {
        None | Some(Node::Null) => Ok(&[]),
        Some(Node::Map(entries)) => Ok(entries),
        Some(other) => Err(DecodeError::field(
            path,
            format!("expected an object, found {}", other.kind()),
        )),
    }
}

fn items<'a>(node: Option<&'a Node>, path: &str) -> Result<&'a [Node], DecodeError> {
    match node {
        None | Some(Node::Null) => Ok(&[]),
        Some(Node::Seq(items)) => Ok(items),
        Some(other) => Err(DecodeError::field(
            path,
            format!("expected a list, found {}", other.kind()),
        )),
    }
}

fn string_map(node: Option<&Node>, path: &str) -> Result<BTreeMap<String, String>, DecodeError> {
    let mut out = BTreeMap::new();
    for (k, v) in entries(node, path)? {
        let value = match v {
            Node::Null => String::new(),
            Node::String(s) => s.to_string(),
            other => {
                return Err(DecodeError::field(
                    format!("{path}[{k}]"),
                    format!("expected a string, found {}", other.kind()),
                ));
            }
        };
        out.insert(k.clone(), value);
    }
    Ok(out)
}

/// Each element of a list of objects, read by `read`.
fn object_list<T>(
    node: Option<&Node>,
    path: &str,
    read: impl Fn(&Node, &str) -> Result<T, DecodeError>,
) -> Result<Option<Vec<T>>, DecodeError> {
    let mut out = Vec::new();
    for (i, item) in items(node, path)?.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match item {
            Node::Map(_) => out.push(read(item, &at)?),
            Node::Null => out.push(read(&Node::Map(Vec::new()), &at)?),
            other => {
                return Err(DecodeError::field(
                    at,
                    format!("expected an object, found {}", other.kind()),
                ));
            }
        }
    }
    Ok(non_empty(out))
}

fn owner_reference(n: &Node, at: &str) -> Result<OwnerReference, DecodeError> {
    Ok(OwnerReference {
        api_version: owned(n, "apiVersion", &format!("{at}.apiVersion"))?,
        kind: owned(n, "kind", &format!("{at}.kind"))?,
        name: owned(n, "name", &format!("{at}.name"))?,
        uid: owned(n, "uid", &format!("{at}.uid"))?,
        controller: bool_field(n, "controller", &format!("{at}.controller"))?,
        block_owner_deletion: bool_field(
            n,
            "blockOwnerDeletion",
            &format!("{at}.blockOwnerDeletion"),
        )?,
    })
}

fn managed_fields_entry(n: &Node, at: &str) -> Result<ManagedFieldsEntry, DecodeError> {
    if let Some(other) = n
        .get("fieldsV1")
        .filter(|v| !matches!(v, Node::Map(_) | Node::Null))
    {
        return Err(DecodeError::field(
            format!("{at}.fieldsV1"),
            format!("expected an object, found {}", other.kind()),
        ));
    }
    Ok(ManagedFieldsEntry {
        manager: owned(n, "manager", &format!("{at}.manager"))?,
        operation: owned(n, "operation", &format!("{at}.operation"))?,
        api_version: owned(n, "apiVersion", &format!("{at}.apiVersion"))?,
        time: time_field(n, "time", &format!("{at}.time"))?,
        fields_type: owned(n, "fieldsType", &format!("{at}.fieldsType"))?,
        // Filled from the raw bytes by `raw_fields_v1`.
        fields_v1: None,
        subresource: owned(n, "subresource", &format!("{at}.subresource"))?,
    })
}

fn finalizers(node: Option<&Node>) -> Result<Option<Vec<String>>, DecodeError> {
    let mut out = Vec::new();
    for (i, item) in items(node, "metadata.finalizers")?.iter().enumerate() {
        match item {
            Node::String(s) => out.push(s.to_string()),
            Node::Null => out.push(String::new()),
            other => {
                return Err(DecodeError::field(
                    format!("metadata.finalizers[{i}]"),
                    format!("expected a string, found {}", other.kind()),
                ));
            }
        }
    }
    Ok(non_empty(out))
}

fn metadata(m: &Node) -> Result<ObjectMeta, DecodeError> {
    let opt = |key: &str| -> Result<Option<String>, DecodeError> {
        Ok(non_empty_string(owned(m, key, &format!("metadata.{key}"))?))
    };
    Ok(ObjectMeta {
        name: opt("name")?.unwrap_or_default(),
        generate_name: opt("generateName")?.unwrap_or_default(),
        namespace: opt("namespace")?.unwrap_or_default(),
        uid: opt("uid")?,
        resource_version: opt("resourceVersion")?,
        generation: int_field(m, "generation", "metadata.generation")?.unwrap_or(0),
        creation_timestamp: time_field(m, "creationTimestamp", "metadata.creationTimestamp")?,
        deletion_timestamp: time_field(m, "deletionTimestamp", "metadata.deletionTimestamp")?,
        deletion_grace_period_seconds: int_field(
            m,
            "deletionGracePeriodSeconds",
            "metadata.deletionGracePeriodSeconds",
        )?,
        labels: string_map(m.get("labels"), "metadata.labels")?,
        annotations: string_map(m.get("annotations"), "metadata.annotations")?,
        owner_references: object_list(
            m.get("ownerReferences"),
            "metadata.ownerReferences",
            owner_reference,
        )?,
        finalizers: finalizers(m.get("finalizers"))?,
        managed_fields: object_list(
            m.get("managedFields"),
            "metadata.managedFields",
            managed_fields_entry,
        )?,
    })
}

fn non_empty_string(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[derive(Deserialize)]
struct RawSecret<'a> {
    #[serde(borrow, default)]
    metadata: Option<RawMeta<'a>>,
}

#[derive(Deserialize)]
struct RawMeta<'a> {
    #[serde(rename = "managedFields", borrow, default)]
    managed_fields: Option<Vec<Option<RawEntry<'a>>>>,
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(rename = "fieldsV1", borrow, default)]
    fields_v1: Option<&'a RawValue>,
}

/// Sets every `fieldsV1` to its bytes in `bytes` (a document already read).
fn raw_fields_v1(bytes: &[u8], meta: &mut ObjectMeta) -> Result<(), DecodeError> {
    let Some(entries) = meta.managed_fields.as_mut() else {
        return Ok(());
    };
    let raw: RawSecret<'_> = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError::field("metadata.managedFields", e.to_string()))?;
    let raws = raw
        .metadata
        .and_then(|m| m.managed_fields)
        .unwrap_or_default();
    for (entry, raw) in entries.iter_mut().zip(raws) {
        entry.fields_v1 = raw.and_then(|r| r.fields_v1).map(|v| v.get().to_owned());
    }
    Ok(())
}

/// Reads a Secret from stored JSON.
pub(crate) fn decode(bytes: &[u8]) -> Result<Secret, DecodeError> {
    let node: Node = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    if !matches!(node, Node::Map(_)) {
        return Err(DecodeError::Json(format!(
            "expected an object, found {}",
            node.kind()
        )));
    }
    let kind = string_field(&node, "kind", "kind")?.unwrap_or("");
    let api_version = string_field(&node, "apiVersion", "apiVersion")?.unwrap_or("");
    if kind != "Secret" || api_version != "v1" {
        return Err(DecodeError::WrongKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    }
    let mut meta = match node.get("metadata") {
        None | Some(Node::Null) => ObjectMeta::default(),
        Some(m @ Node::Map(_)) => metadata(m)?,
        Some(other) => {
            return Err(DecodeError::field(
                "metadata",
                format!("expected an object, found {}", other.kind()),
            ));
        }
    };
    raw_fields_v1(bytes, &mut meta)?;
    let immutable = bool_field(&node, "immutable", "immutable")?;
    let mut data = BTreeMap::new();
    for (key, value) in entries(node.get("data"), "data")? {
        let bytes = match value {
            Node::Null => Wiped::new(Vec::new()),
            Node::String(text) => gobase64::decode(text.as_bytes())
                .map_err(|e| DecodeError::field(format!("data[{key}]"), e.to_string()))?,
            other => {
                return Err(DecodeError::field(
                    format!("data[{key}]"),
                    format!("expected a base64 string, found {}", other.kind()),
                ));
            }
        };
        data.insert(key.clone(), SecretValue::from(bytes));
    }
    for (key, value) in entries(node.get("stringData"), "stringData")? {
        let bytes = match value {
            Node::Null => Vec::new(),
            Node::String(text) => text.as_bytes().to_vec(),
            other => {
                return Err(DecodeError::field(
                    format!("stringData[{key}]"),
                    format!("expected a string, found {}", other.kind()),
                ));
            }
        };
        data.insert(key.clone(), SecretValue::new(bytes));
    }
    let type_ = match string_field(&node, "type", "type")? {
        None | Some("") => SECRET_TYPE_OPAQUE.to_owned(),
        Some(t) => t.to_owned(),
    };
    Ok(Secret {
        metadata: meta,
        type_,
        data,
        immutable,
    })
}
