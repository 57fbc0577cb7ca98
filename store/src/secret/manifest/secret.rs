//! Reading one Secret object of a manifest: its fields, its metadata,
//! `data` (base64) and `stringData` (plain text, merged into `data` and
//! winning on conflict). Strict: unknown fields and values of the wrong
//! type are errors naming the field; no message holds a value.

use std::collections::BTreeMap;

use super::fields::{Location, ManifestError, ManifestOptions, check_fields, opt_string};
use super::metadata::{map_entries, read_metadata};
use crate::k8s::base64 as gobase64;
use crate::secret::model::{SECRET_TYPE_OPAQUE, Secret, SecretValue};
use crate::secret::node::Node;
use crate::wipe::Wiped;

pub(super) const SECRET_FIELDS: [&str; 7] = [
    "apiVersion",
    "kind",
    "metadata",
    "data",
    "stringData",
    "type",
    "immutable",
];
/// Reads one Secret object (kind and apiVersion already checked).
pub(super) fn read_secret(
    node: &Node,
    location: &Location,
    options: &ManifestOptions,
) -> Result<Secret, ManifestError> {
    let metadata = read_metadata(node.get("metadata"), location, options)?;
    check_fields(node, &SECRET_FIELDS, "", location)?;
    let type_ = match opt_string(node, "type", "type", location)? {
        None | Some("") => SECRET_TYPE_OPAQUE.to_owned(),
        Some(t) => t.to_owned(),
    };
    let immutable = match node.get("immutable") {
        None | Some(Node::Null) => None,
        Some(Node::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(location.error(format!(
                "immutable: expected a boolean (true or false, unquoted), found {}",
                other.kind()
            )));
        }
    };
    let mut data = BTreeMap::new();
    for (key, value) in map_entries(node.get("data"), "data", location)? {
        let decoded = match value {
            Node::Null => Wiped::new(Vec::new()),
            Node::String(text) => gobase64::decode(text.as_bytes())
                .map_err(|e| location.error(format!("data[{key}]: {e}")))?,
            other => {
                return Err(location.error(format!(
                    "data[{key}]: expected a base64 string, found {}",
                    other.kind()
                )));
            }
        };
        data.insert(key.clone(), SecretValue::from(decoded));
    }
    for (key, value) in map_entries(node.get("stringData"), "stringData", location)? {
        let text = match value {
            Node::Null => Vec::new(),
            Node::String(text) => text.as_bytes().to_vec(),
            other => {
                return Err(location.error(format!(
                    "stringData[{key}]: expected a string, found {} (quote the value)",
                    other.kind()
                )));
            }
        };
        data.insert(key.clone(), SecretValue::new(text));
    }
    Ok(Secret {
        metadata,
        type_,
        data,
        immutable,
    })
}

#[cfg(test)]
mod tests {
    use crate::secret::manifest::test_support::{BASIC, err, one};

    #[test]
    fn reads_a_yaml_secret_with_every_field() {
        let s = one(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: prod\n  labels: {app: db}\n  annotations:\n    example.com/owner: team\n  uid: u-1\n  resourceVersion: \"7\"\n  creationTimestamp: \"2024-05-01T12:00:00+02:00\"\ntype: kubernetes.io/basic-auth\nimmutable: true\ndata:\n  username: YWRtaW4=\n",
        );
        assert_eq!(s.metadata.name, "db");
        assert_eq!(s.metadata.namespace, "prod");
        assert_eq!(s.metadata.labels["app"], "db");
        assert_eq!(s.metadata.annotations["example.com/owner"], "team");
        assert_eq!(s.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(s.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(
            s.metadata.creation_timestamp.as_deref(),
            Some("2024-05-01T10:00:00Z")
        );
        assert_eq!(s.type_, "kubernetes.io/basic-auth");
        assert_eq!(s.immutable, Some(true));
        assert_eq!(s.data["username"].expose(), b"admin");
    }

    #[test]
    fn string_data_is_merged_and_wins() {
        let s = one(&format!(
            "{BASIC}data:\n  password: b2xk\n  user: YQ==\nstringData:\n  password: new\n  token: t\n"
        ));
        assert_eq!(s.data["password"].expose(), b"new");
        assert_eq!(s.data["user"].expose(), b"a");
        assert_eq!(s.data["token"].expose(), b"t");
        assert_eq!(s.data.len(), 3);
    }

    #[test]
    fn base64_may_span_lines_of_a_block_scalar() {
        let s = one(&format!("{BASIC}data:\n  cert: |\n    aGVs\n    bG8=\n"));
        assert_eq!(s.data["cert"].expose(), b"hello");
    }

    #[test]
    fn null_values_are_empty() {
        let s = one(&format!("{BASIC}data:\n  a:\nstringData:\n  b: null\n"));
        assert!(s.data["a"].is_empty());
        assert!(s.data["b"].is_empty());
    }

    #[test]
    fn missing_name_is_refused() {
        assert_eq!(
            err("apiVersion: v1\nkind: Secret\ndata: {}\n"),
            "document 1: metadata.name: Required value: a Secret needs a name (generateName is not supported)"
        );
        assert!(
            err("apiVersion: v1\nkind: Secret\nmetadata:\n  generateName: x-\n")
                .contains("metadata.generateName: not supported")
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_a_hint() {
        assert_eq!(
            err(&format!("{BASIC}stringdata:\n  password: p\n")),
            "document 1 (Secret \"db\"): unknown field \"stringdata\" (did you mean \"stringData\"?)"
        );
        assert_eq!(
            err("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  lables: {a: b}\n"),
            "document 1 (Secret \"db\"): metadata: unknown field \"lables\" (did you mean \"labels\"?)"
        );
        assert_eq!(
            err(&format!("{BASIC}spec: {{}}\n")),
            "document 1 (Secret \"db\"): unknown field \"spec\""
        );
        // Every ObjectMeta field is accepted.
        one(&format!(
            "{BASIC}  managedFields: []\n  generation: 3\n  selfLink: /x\n  ownerReferences: [{{}}]\n"
        ));
    }

    #[test]
    fn wrong_value_types_are_refused_without_echoing_values() {
        assert_eq!(
            err(&format!("{BASIC}immutable: \"true\"\n")),
            "document 1 (Secret \"db\"): immutable: expected a boolean (true or false, unquoted), found a string"
        );
        let e = err(&format!("{BASIC}stringData:\n  port: 5432\n"));
        assert_eq!(
            e,
            "document 1 (Secret \"db\"): stringData[port]: expected a string, found a number (quote the value)"
        );
        assert!(!e.contains("5432"));
        assert_eq!(
            err(&format!("{BASIC}data: [a]\n")),
            "document 1 (Secret \"db\"): data: expected a mapping, found a list"
        );
        assert_eq!(
            err(&format!("{BASIC}data:\n  k: {{a: b}}\n")),
            "document 1 (Secret \"db\"): data[k]: expected a base64 string, found a mapping"
        );
        assert_eq!(
            err(&format!("{BASIC}  labels: {{num: 1}}\n")),
            "document 1 (Secret \"db\"): metadata.labels[num]: expected a string, found a number (quote the value)"
        );
        assert!(
            err(&format!("{BASIC}  creationTimestamp: yesterday\n"))
                .contains("metadata.creationTimestamp: \"yesterday\" is not an RFC 3339 time")
        );
    }
}
