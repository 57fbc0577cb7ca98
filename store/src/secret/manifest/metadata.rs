//! Reading a manifest's `metadata`: every field of `metav1.ObjectMeta`,
//! strictly (an unknown field is an error naming it, with a suggestion).
//! `ownerReferences`, `finalizers` and `managedFields` are `None` when the
//! manifest leaves them out (an update then keeps the stored ones) and
//! `Some` when it sets them, to empty included. `fieldsV1` is written as
//! the compact JSON kubectl would send (keys sorted). `selfLink` is
//! accepted and ignored (the apiserver clears it).

use std::collections::BTreeMap;

use super::fields::{Location, ManifestError, ManifestOptions, check_fields, opt_string};
use crate::k8s::{go_quote, time as timefmt};
use crate::secret::codec::push_json_string;
use crate::secret::model::{ManagedFieldsEntry, ObjectMeta, OwnerReference};
use crate::secret::node::Node;

const METADATA_FIELDS: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];
const OWNER_REFERENCE_FIELDS: [&str; 6] = [
    "apiVersion",
    "kind",
    "name",
    "uid",
    "controller",
    "blockOwnerDeletion",
];
const MANAGED_FIELDS_FIELDS: [&str; 7] = [
    "manager",
    "operation",
    "apiVersion",
    "time",
    "fieldsType",
    "fieldsV1",
    "subresource",
];
/// How deep a `fieldsV1` may nest (kubectl's own are a few levels).
const MAX_FIELDS_DEPTH: usize = 100;

/// The entries of an optional mapping field.
pub(super) fn map_entries<'a>(
    node: Option<&'a Node>,
    path: &str,
    location: &Location,
) -> Result<&'a [(String, Node)], ManifestError> {
    match node {
        None | Some(Node::Null) => Ok(&[]),
        Some(Node::Map(entries)) => Ok(entries),
        Some(other) => Err(location.error(format!(
            "{path}: expected a mapping, found {}",
            other.kind()
        ))),
    }
}

/// A mapping of strings (`labels`, `annotations`); null values are empty.
fn string_map(
    node: Option<&Node>,
    path: &str,
    location: &Location,
) -> Result<BTreeMap<String, String>, ManifestError> {
    let mut out = BTreeMap::new();
    for (key, value) in map_entries(node, path, location)? {
        let value = match value {
            Node::Null => String::new(),
            Node::String(s) => s.to_string(),
            other => {
                return Err(location.error(format!(
                    "{path}[{key}]: expected a string, found {} (quote the value)",
                    other.kind()
                )));
            }
        };
        out.insert(key.clone(), value);
    }
    Ok(out)
}

fn owned(node: &Node, key: &str, path: &str, location: &Location) -> Result<String, ManifestError> {
    Ok(opt_string(node, key, path, location)?
        .unwrap_or_default()
        .to_owned())
}

fn opt_bool(
    node: &Node,
    key: &str,
    path: &str,
    location: &Location,
) -> Result<Option<bool>, ManifestError> {
    match node.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(location.error(format!(
            "{path}: expected a boolean (true or false, unquoted), found {}",
            other.kind()
        ))),
    }
}

fn opt_int(
    node: &Node,
    key: &str,
    path: &str,
    location: &Location,
) -> Result<Option<i64>, ManifestError> {
    match node.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Number(text)) => text
            .parse()
            .map(Some)
            .map_err(|_| location.error(format!("{path}: {text} is not a whole number"))),
        Some(other) => Err(location.error(format!(
            "{path}: expected a whole number, found {}",
            other.kind()
        ))),
    }
}

fn opt_time(
    node: &Node,
    key: &str,
    path: &str,
    location: &Location,
) -> Result<Option<String>, ManifestError> {
    match opt_string(node, key, path, location)? {
        None => Ok(None),
        Some(text) => timefmt::metav1_time(text).map_err(|e| {
            location.error(format!(
                "{path}: {} is {e} (e.g. \"2024-05-01T10:00:00Z\")",
                go_quote(text)
            ))
        }),
    }
}

/// A list field: `None` when absent or null, each element read by `read`.
fn list<T>(
    node: Option<&Node>,
    path: &str,
    location: &Location,
    read: impl Fn(&Node, &str) -> Result<T, ManifestError>,
) -> Result<Option<Vec<T>>, ManifestError> {
    match node {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Seq(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| read(item, &format!("{path}[{i}]")))
            .collect::<Result<Vec<T>, _>>()
            .map(Some),
        Some(other) => {
            Err(location.error(format!("{path}: expected a list, found {}", other.kind())))
        }
    }
}

/// A list element that must be a mapping with the `known` fields.
fn element<'a>(
    item: &'a Node,
    path: &str,
    known: &[&str],
    location: &Location,
) -> Result<&'a Node, ManifestError> {
    match item {
        Node::Map(_) => {
            check_fields(item, known, &format!("{path}: "), location)?;
            Ok(item)
        }
        other => Err(location.error(format!(
            "{path}: expected a mapping, found {}",
            other.kind()
        ))),
    }
}

fn owner_reference(
    item: &Node,
    at: &str,
    location: &Location,
) -> Result<OwnerReference, ManifestError> {
    let n = element(item, at, &OWNER_REFERENCE_FIELDS, location)?;
    Ok(OwnerReference {
        api_version: owned(n, "apiVersion", &format!("{at}.apiVersion"), location)?,
        kind: owned(n, "kind", &format!("{at}.kind"), location)?,
        name: owned(n, "name", &format!("{at}.name"), location)?,
        uid: owned(n, "uid", &format!("{at}.uid"), location)?,
        controller: opt_bool(n, "controller", &format!("{at}.controller"), location)?,
        block_owner_deletion: opt_bool(
            n,
            "blockOwnerDeletion",
            &format!("{at}.blockOwnerDeletion"),
            location,
        )?,
    })
}

/// `node` as compact JSON with sorted keys (what kubectl sends for a
/// `fieldsV1` it read from YAML).
fn push_json(out: &mut String, node: &Node, depth: usize) -> Result<(), String> {
    if depth > MAX_FIELDS_DEPTH {
        return Err(format!("nested deeper than {MAX_FIELDS_DEPTH} levels"));
    }
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Number(text) => out.push_str(text),
        Node::String(s) => push_json_string(out, s),
        Node::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Node::Map(entries) => {
            let mut sorted: Vec<&(String, Node)> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, k);
                out.push(':');
                push_json(out, v, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn managed_fields_entry(
    item: &Node,
    at: &str,
    location: &Location,
) -> Result<ManagedFieldsEntry, ManifestError> {
    let n = element(item, at, &MANAGED_FIELDS_FIELDS, location)?;
    let fields_v1 = match n.get("fieldsV1") {
        None | Some(Node::Null) => None,
        Some(f @ Node::Map(_)) => {
            let mut raw = String::new();
            push_json(&mut raw, f, 0).map_err(|e| location.error(format!("{at}.fieldsV1: {e}")))?;
            Some(raw)
        }
        Some(other) => {
            return Err(location.error(format!(
                "{at}.fieldsV1: expected a mapping, found {}",
                other.kind()
            )));
        }
    };
    Ok(ManagedFieldsEntry {
        manager: owned(n, "manager", &format!("{at}.manager"), location)?,
        operation: owned(n, "operation", &format!("{at}.operation"), location)?,
        api_version: owned(n, "apiVersion", &format!("{at}.apiVersion"), location)?,
        time: opt_time(n, "time", &format!("{at}.time"), location)?,
        fields_type: owned(n, "fieldsType", &format!("{at}.fieldsType"), location)?,
        fields_v1,
        subresource: owned(n, "subresource", &format!("{at}.subresource"), location)?,
    })
}

fn finalizer(item: &Node, at: &str, location: &Location) -> Result<String, ManifestError> {
    match item {
        Node::String(s) => Ok(s.to_string()),
        other => Err(location.error(format!("{at}: expected a string, found {}", other.kind()))),
    }
}

/// Reads `metadata` (absent or null: empty).
pub(super) fn read_metadata(
    node: Option<&Node>,
    location: &Location,
    options: &ManifestOptions,
) -> Result<ObjectMeta, ManifestError> {
    let empty = Node::Map(Vec::new());
    let node = match node {
        None | Some(Node::Null) => &empty,
        Some(map @ Node::Map(_)) => map,
        Some(other) => {
            return Err(location.error(format!(
                "metadata: expected a mapping, found {}",
                other.kind()
            )));
        }
    };
    check_fields(node, &METADATA_FIELDS, "metadata: ", location)?;
    let name = opt_string(node, "name", "metadata.name", location)?.unwrap_or_default();
    let generate_name = owned(node, "generateName", "metadata.generateName", location)?;
    if name.is_empty() && !generate_name.is_empty() {
        return Err(location.error(
            "metadata.generateName: not supported: this store does not generate names: set metadata.name",
        ));
    }
    if name.is_empty() {
        return Err(location.error(
            "metadata.name: Required value: a Secret needs a name (generateName is not supported)",
        ));
    }
    let namespace = match opt_string(node, "namespace", "metadata.namespace", location)? {
        None | Some("") => options.default_namespace.clone(),
        Some(ns) => {
            if options.enforce_namespace && ns != options.default_namespace {
                return Err(location.error(format!(
                    "the namespace from the provided object {} does not match the namespace {}. You must pass '--namespace={ns}' to perform this operation.",
                    go_quote(ns),
                    go_quote(&options.default_namespace)
                )));
            }
            ns.to_owned()
        }
    };
    let non_empty = |key: &str| -> Result<Option<String>, ManifestError> {
        Ok(opt_string(node, key, &format!("metadata.{key}"), location)?
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    };
    Ok(ObjectMeta {
        name: name.to_owned(),
        generate_name,
        namespace,
        uid: non_empty("uid")?,
        resource_version: non_empty("resourceVersion")?,
        generation: opt_int(node, "generation", "metadata.generation", location)?.unwrap_or(0),
        creation_timestamp: opt_time(
            node,
            "creationTimestamp",
            "metadata.creationTimestamp",
            location,
        )?,
        deletion_timestamp: opt_time(
            node,
            "deletionTimestamp",
            "metadata.deletionTimestamp",
            location,
        )?,
        deletion_grace_period_seconds: opt_int(
            node,
            "deletionGracePeriodSeconds",
            "metadata.deletionGracePeriodSeconds",
            location,
        )?,
        labels: string_map(node.get("labels"), "metadata.labels", location)?,
        annotations: string_map(node.get("annotations"), "metadata.annotations", location)?,
        owner_references: list(
            node.get("ownerReferences"),
            "metadata.ownerReferences",
            location,
            |n, at| owner_reference(n, at, location),
        )?,
        finalizers: list(
            node.get("finalizers"),
            "metadata.finalizers",
            location,
            |n, at| finalizer(n, at, location),
        )?,
        managed_fields: list(
            node.get("managedFields"),
            "metadata.managedFields",
            location,
            |n, at| managed_fields_entry(n, at, location),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use crate::secret::manifest::test_support::{BASIC, err, one};

    #[test]
    fn reads_every_object_meta_field() {
        let s = one(&format!(
            "{BASIC}  generateName: db-\n  generation: 4\n  deletionTimestamp: \"2024-05-01T12:00:00+02:00\"\n  deletionGracePeriodSeconds: 30\n  selfLink: /api/v1/x\n  ownerReferences:\n  - apiVersion: apps/v1\n    kind: Deployment\n    name: web\n    uid: u-1\n    controller: true\n  finalizers: [example.com/a]\n  managedFields:\n  - manager: kubectl\n    operation: Update\n    apiVersion: v1\n    time: \"2024-05-01T10:00:00Z\"\n    fieldsType: FieldsV1\n    fieldsV1:\n      f:metadata: {{f:labels: {{}}}}\n      f:data:\n        .: {{}}\n        f:password: {{}}\n"
        ));
        let m = &s.metadata;
        assert_eq!(m.generate_name, "db-");
        assert_eq!(m.generation, 4);
        assert_eq!(
            m.deletion_timestamp.as_deref(),
            Some("2024-05-01T10:00:00Z")
        );
        assert_eq!(m.deletion_grace_period_seconds, Some(30));
        let r = &m.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.controller, r.block_owner_deletion),
            ("Deployment", Some(true), None)
        );
        assert_eq!(m.finalizers(), ["example.com/a"]);
        let f = &m.managed_fields()[0];
        assert_eq!(f.time.as_deref(), Some("2024-05-01T10:00:00Z"));
        assert_eq!(
            f.fields_v1.as_deref(),
            Some(r#"{"f:data":{".":{},"f:password":{}},"f:metadata":{"f:labels":{}}}"#)
        );
        // Absent lists are None, empty ones Some(empty).
        let s = one(&format!("{BASIC}  finalizers: []\n"));
        assert_eq!(s.metadata.finalizers, Some(vec![]));
        assert_eq!(s.metadata.owner_references, None);
    }

    #[test]
    fn malformed_metadata_is_named() {
        for (extra, want) in [
            (
                "  ownerReferences: {}\n",
                "metadata.ownerReferences: expected a list, found a mapping",
            ),
            (
                "  ownerReferences: [x]\n",
                "metadata.ownerReferences[0]: expected a mapping, found a string",
            ),
            (
                "  ownerReferences: [{knd: x}]\n",
                "metadata.ownerReferences[0]: unknown field \"knd\" (did you mean \"kind\"?)",
            ),
            (
                "  ownerReferences: [{controller: \"yes\"}]\n",
                "metadata.ownerReferences[0].controller: expected a boolean (true or false, unquoted), found a string",
            ),
            (
                "  finalizers: [1]\n",
                "metadata.finalizers[0]: expected a string, found a number",
            ),
            (
                "  generation: \"1\"\n",
                "metadata.generation: expected a whole number, found a string",
            ),
            (
                "  generation: 1.5\n",
                "metadata.generation: 1.5 is not a whole number",
            ),
            (
                "  managedFields: [{fieldsV1: x}]\n",
                "metadata.managedFields[0].fieldsV1: expected a mapping, found a string",
            ),
            (
                "  managedFields: [{time: soon}]\n",
                "metadata.managedFields[0].time: \"soon\" is not an RFC 3339 time (e.g. \"2024-05-01T10:00:00Z\")",
            ),
            (
                "  deletionTimestamp: 3\n",
                "metadata.deletionTimestamp: expected a string, found a number",
            ),
        ] {
            assert_eq!(
                err(&format!("{BASIC}{extra}")),
                format!("document 1 (Secret \"db\"): {want}"),
                "{extra}"
            );
        }
    }
}
