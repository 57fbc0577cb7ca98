//! Reading Secrets from manifests, as `kubectl apply -f` would send them.
//!
//! Accepted: YAML (one or several documents separated by `---`) and JSON
//! (one value or a stream of values); each document is a `Secret`, a
//! `SecretList` or a `List` (all `apiVersion: v1`), lists possibly nested.
//! `data` values are base64 as the apiserver reads them (see
//! [`crate::k8s::base64`]: line breaks inside are tolerated, padding is
//! required); `stringData` values are plain text merged into `data`, winning
//! on conflict, and then dropped. The fields of one Secret are read in
//! `secret`.
//!
//! Strict: an unknown field is an error naming it (a typo such as
//! `stringdata` would otherwise drop secrets silently), as is a value of the
//! wrong type (`immutable: "true"`, an unquoted number in `stringData`).
//! Messages say where (`document 2, item 1 (Secret "x")`) and which field;
//! they never contain a value from `data` or `stringData`.
//!
//! Documents are numbered from 1 among the non-empty ones (a document that
//! is empty or only `null` is skipped, as kubectl skips it).

use super::fields::{Location, ManifestError, ManifestOptions, check_fields, opt_string};
use super::secret::read_secret;
use crate::k8s::go_quote;
use crate::secret::model::Secret;
use crate::secret::node::Node;

/// Reads every Secret in `text`; Secrets without a namespace land in
/// `default`.
pub fn parse_manifests(text: &str) -> Result<Vec<Secret>, ManifestError> {
    parse_manifests_with(text, &ManifestOptions::default())
}

/// Reads every Secret in `text` with `options`.
pub fn parse_manifests_with(
    text: &str,
    options: &ManifestOptions,
) -> Result<Vec<Secret>, ManifestError> {
    let documents = parse_documents(text)?;
    if documents.is_empty() {
        return Err(ManifestError::Empty);
    }
    let mut secrets = Vec::new();
    for (i, doc) in documents.iter().enumerate() {
        let mut location = Location {
            document: i + 1,
            items: Vec::new(),
            name: None,
        };
        read_object(doc, &mut location, options, false, &mut secrets)?;
    }
    if secrets.is_empty() {
        return Err(ManifestError::Empty);
    }
    Ok(secrets)
}

/// Splits `text` into documents: JSON when it starts with `{` or `[` (and
/// parses as JSON), YAML otherwise.
fn parse_documents(text: &str) -> Result<Vec<Node>, ManifestError> {
    let trimmed = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    if trimmed.is_empty() {
        return Err(ManifestError::Empty);
    }
    if trimmed.starts_with(['{', '[']) {
        let stream = serde_json::Deserializer::from_str(trimmed).into_iter::<Node>();
        match stream.collect::<Result<Vec<Node>, _>>() {
            Ok(docs) => return Ok(docs),
            Err(json_err) => {
                // A YAML flow mapping also starts with '{'.
                return parse_yaml(trimmed).map_err(|_| ManifestError::Syntax {
                    format: "JSON",
                    message: json_err.to_string(),
                });
            }
        }
    }
    parse_yaml(text)
}

fn parse_yaml(text: &str) -> Result<Vec<Node>, ManifestError> {
    let mut options = serde_saphyr::Options::default();
    // A snippet would quote the input, values included.
    options.with_snippet = false;
    options.crop_radius = 0;
    // Bulk loads are many documents; keep the alias/anchor and depth limits
    // that stop YAML bombs, raise the counts to what 256 MiB of input holds.
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 20_000_000;
    budget.max_events = 60_000_000;
    budget.max_total_scalar_bytes = 256 * 1024 * 1024;
    options.budget = Some(budget);
    serde_saphyr::from_multiple_with_options::<Node>(text, options).map_err(|e| {
        ManifestError::Syntax {
            format: "YAML",
            // The library's advice is about its own options, not for users.
            message: e
                .to_string()
                .replace(", set DuplicateKeyPolicy in Options if acceptable", ""),
        }
    })
}

const MAX_LIST_NESTING: usize = 4;
const LIST_FIELDS: [&str; 4] = ["apiVersion", "kind", "metadata", "items"];

fn read_object(
    node: &Node,
    location: &mut Location,
    options: &ManifestOptions,
    in_secret_list: bool,
    out: &mut Vec<Secret>,
) -> Result<(), ManifestError> {
    if !matches!(node, Node::Map(_)) {
        return Err(location.error(format!(
            "expected an object (a mapping), found {}",
            node.kind()
        )));
    }
    location.name = match node.get("metadata").and_then(|m| m.get("name")) {
        Some(Node::String(s)) if !s.is_empty() => Some(s.to_string()),
        _ => None,
    };
    let kind = opt_string(node, "kind", "kind", location)?;
    let api_version = opt_string(node, "apiVersion", "apiVersion", location)?;
    let kind = match kind {
        Some(kind) => kind,
        None if in_secret_list => "Secret",
        None => return Err(location.error("kind is missing (expected \"Secret\")")),
    };
    match (kind, api_version) {
        ("Secret", None) if in_secret_list => {}
        ("Secret" | "SecretList" | "List", Some("v1")) => {}
        ("Secret" | "SecretList" | "List", None) => {
            return Err(location.error(format!(
                "apiVersion is missing (expected \"v1\" for kind {kind})"
            )));
        }
        ("Secret" | "SecretList" | "List", Some(other)) => {
            return Err(location.error(format!(
                "apiVersion {} is not supported for kind {kind}: expected \"v1\"",
                go_quote(other)
            )));
        }
        (other, version) => {
            let version = version.map(|v| format!(" (apiVersion {})", go_quote(v)));
            return Err(location.error(format!(
                "kind {}{} is not supported: expected Secret, SecretList or List (apiVersion v1)",
                go_quote(other),
                version.unwrap_or_default()
            )));
        }
    }
    if kind == "Secret" {
        out.push(read_secret(node, location, options)?);
        return Ok(());
    }
    location.name = None;
    check_fields(node, &LIST_FIELDS, "", location)?;
    if location.items.len() >= MAX_LIST_NESTING {
        return Err(location.error("lists are nested too deeply"));
    }
    let items = match node.get("items") {
        None | Some(Node::Null) => return Ok(()),
        Some(Node::Seq(items)) => items,
        Some(other) => {
            return Err(location.error(format!("items: expected a list, found {}", other.kind())));
        }
    };
    for (j, item) in items.iter().enumerate() {
        location.items.push(j + 1);
        read_object(item, location, options, kind == "SecretList", out)?;
        location.items.pop();
    }
    location.name = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::manifest::test_support::{BASIC, err, one};

    #[test]
    fn defaults_namespace_and_type() {
        let s = one(BASIC);
        assert_eq!(s.metadata.namespace, "default");
        assert_eq!(s.type_, "Opaque");
        assert_eq!(s.immutable, None);
        assert!(s.data.is_empty());
        let options = ManifestOptions {
            default_namespace: "team-a".into(),
            enforce_namespace: true,
        };
        let s = parse_manifests_with(BASIC, &options).unwrap();
        assert_eq!(s[0].metadata.namespace, "team-a");
        let e = parse_manifests_with(&format!("{BASIC}  namespace: other\n"), &options)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match the namespace \"team-a\""), "{e}");
    }

    #[test]
    fn reads_multi_document_yaml_and_lists() {
        let text = format!(
            "{BASIC}---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- {{apiVersion: v1, kind: Secret, metadata: {{name: a}}}}\n- apiVersion: v1\n  kind: SecretList\n  items:\n  - metadata: {{name: b}}\n"
        );
        let all = parse_manifests(&text).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.metadata.name.as_str()).collect();
        assert_eq!(names, ["db", "a", "b"]);
    }

    #[test]
    fn reads_json_objects_streams_and_lists() {
        let all = parse_manifests(
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"},"data":{"k":"dg=="}}
               {"apiVersion":"v1","kind":"SecretList","items":[{"metadata":{"name":"b"}}]}"#,
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].data["k"].expose(), b"v");
        assert_eq!(all[1].metadata.name, "b");
    }

    #[test]
    fn empty_inputs_are_refused() {
        for text in ["", "  \n", "---\n---\n", "# just a comment\n"] {
            assert_eq!(
                parse_manifests(text).unwrap_err(),
                ManifestError::Empty,
                "{text:?}"
            );
        }
        assert_eq!(
            parse_manifests("apiVersion: v1\nkind: List\nitems: []\n").unwrap_err(),
            ManifestError::Empty
        );
        assert!(err("").starts_with("no objects found"));
    }

    #[test]
    fn bad_base64_names_document_secret_and_key_but_not_the_value() {
        let text = format!(
            "{BASIC}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: x\ndata:\n  password: c2Vj!mV0\n"
        );
        let e = err(&text);
        assert_eq!(
            e,
            "document 2 (Secret \"x\"): data[password]: illegal base64 data at input byte 4"
        );
        assert!(!e.contains("c2Vj"));
    }

    #[test]
    fn wrong_kind_and_api_version_are_named() {
        assert_eq!(
            err("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
            "document 1 (Secret \"x\"): kind \"ConfigMap\" (apiVersion \"v1\") is not supported: expected Secret, SecretList or List (apiVersion v1)"
        );
        assert_eq!(
            err("apiVersion: v2\nkind: Secret\nmetadata: {name: x}\n"),
            "document 1 (Secret \"x\"): apiVersion \"v2\" is not supported for kind Secret: expected \"v1\""
        );
        assert_eq!(
            err("metadata: {name: x}\n"),
            "document 1 (Secret \"x\"): kind is missing (expected \"Secret\")"
        );
        assert_eq!(
            err("kind: Secret\nmetadata: {name: x}\n"),
            "document 1 (Secret \"x\"): apiVersion is missing (expected \"v1\" for kind Secret)"
        );
        assert_eq!(
            err("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: apps/v1, kind: Deployment}\n"),
            "document 1, item 1: kind \"Deployment\" (apiVersion \"apps/v1\") is not supported: expected Secret, SecretList or List (apiVersion v1)"
        );
        assert_eq!(
            err("- a\n- b\n"),
            "document 1: expected an object (a mapping), found a list"
        );
    }

    #[test]
    fn malformed_yaml_and_json_are_syntax_errors_without_content() {
        let e =
            parse_manifests(&format!("{BASIC}stringData:\n  password: \"hunter2\n")).unwrap_err();
        assert!(
            matches!(e, ManifestError::Syntax { format: "YAML", .. }),
            "{e}"
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e =
            parse_manifests("{\"apiVersion\": \"v1\", \"data\": {\"p\": \"hunter2\"").unwrap_err();
        assert!(
            matches!(e, ManifestError::Syntax { format: "JSON", .. }),
            "{e}"
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse_manifests(&format!("{BASIC}data:\n  a: YQ==\n  a: Yg==\n")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid YAML: duplicate mapping key: a at line 7"),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(text in "\\PC{0,200}") {
            let _ = parse_manifests(&text);
        }

        #[test]
        fn mangled_manifests_never_panic(cut in 0usize..200, insert in "[-:{}\\[\\]'\"#|>\n ]{0,3}") {
            let text = format!("{BASIC}  labels: {{a: b}}\ndata:\n  k: YQ==\nstringData:\n  s: |\n    line\n");
            let at = text.char_indices().map(|(i, _)| i).nth(cut % text.chars().count()).unwrap_or(0);
            let mangled = format!("{}{insert}{}", &text[..at], &text[at..]);
            let _ = parse_manifests(&mangled);
            let json = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"},"data":{"k":"YQ=="}}"#;
            let at = cut % json.len();
            let _ = parse_manifests(&format!("{}{insert}{}", &json[..at], &json[at..]));
        }
    }
}
