//! Printing Secrets as `kubectl get secrets` does: a table by default
//! (`NAME  TYPE  DATA  AGE`, with a leading `NAMESPACE` for all
//! namespaces), `-o yaml`, `-o json` and `-o name`.
//!
//! - Table: kubectl's tab writer (cells padded by 3 spaces to the widest
//!   cell, columns at least 6 wide, the last column unpadded); `DATA` is
//!   the number of keys; `AGE` is apimachinery's `HumanDuration` of the time
//!   since `creationTimestamp` (`45s`, `3m10s`, `5h`, `2d3h`, `400d`, `3y`),
//!   `<unknown>` without one.
//! - YAML and JSON show what the apiserver returns (`resourceVersion`
//!   included, `data` in base64) with kubectl's layout: keys sorted, JSON
//!   indented by 4 spaces, YAML as go-yaml v2 writes it (see
//!   `yaml`). Several Secrets print as one
//!   `kind: List`, as `kubectl get secrets -o yaml` does.
//!
//! YAML and JSON contain the secret data, as kubectl's do: they come back in
//! a buffer that is wiped when dropped.

mod tree;
mod yaml;
mod yaml_style;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::k8s::base64 as gobase64;
use crate::secret::model::Secret;
use crate::wipe::Wiped;
use tree::object_tree;
use yaml::{YamlValue, YamlWriter};

/// An output format (`-o`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// The table (the default).
    #[default]
    Table,
    /// `-o yaml`.
    Yaml,
    /// `-o json`.
    Json,
    /// `-o name`: `secret/<name>` per line.
    Name,
}

/// An `-o` value that is not a known format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown output format {0:?}: expected one of table, yaml, json, name")]
pub struct UnknownOutputFormat(pub String);

impl FromStr for OutputFormat {
    type Err = UnknownOutputFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "table" => Ok(OutputFormat::Table),
            "yaml" => Ok(OutputFormat::Yaml),
            "json" => Ok(OutputFormat::Json),
            "name" => Ok(OutputFormat::Name),
            other => Err(UnknownOutputFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputFormat::Table => "table",
            OutputFormat::Yaml => "yaml",
            OutputFormat::Json => "json",
            OutputFormat::Name => "name",
        })
    }
}

/// Renders `secrets` in `format`: one Secret prints as itself in YAML and
/// JSON, any other number as a `List` (use [`render_list`] to always get a
/// list, as `kubectl get secrets` without a name does). An empty table is
/// an empty string (see [`no_resources_message`]).
pub fn render(
    secrets: &[Secret],
    format: OutputFormat,
    all_namespaces: bool,
    now: SystemTime,
) -> Wiped<String> {
    match (secrets, format) {
        ([one], OutputFormat::Yaml | OutputFormat::Json) => render_object(one, format, now),
        _ => render_list(secrets, format, all_namespaces, now),
    }
}

/// Renders `secrets` as a list (`kind: List` in YAML and JSON).
pub fn render_list(
    secrets: &[Secret],
    format: OutputFormat,
    all_namespaces: bool,
    now: SystemTime,
) -> Wiped<String> {
    match format {
        OutputFormat::Table => Wiped::new(render_table(secrets, all_namespaces, now)),
        OutputFormat::Name => Wiped::new(
            secrets
                .iter()
                .map(|s| format!("secret/{}\n", s.metadata.name))
                .collect(),
        ),
        OutputFormat::Yaml | OutputFormat::Json => {
            let items = secrets.iter().map(object_tree).collect();
            let list = vec![
                (Cow::Borrowed("apiVersion"), YamlValue::Str("v1".into())),
                (Cow::Borrowed("items"), YamlValue::Seq(items)),
                (Cow::Borrowed("kind"), YamlValue::Str("List".into())),
                (
                    Cow::Borrowed("metadata"),
                    YamlValue::Map(vec![(
                        Cow::Borrowed("resourceVersion"),
                        YamlValue::Str("".into()),
                    )]),
                ),
            ];
            print_tree(&YamlValue::Map(list), format, estimate(secrets))
        }
    }
}

/// Renders one Secret in `format` (the object itself in YAML and JSON, as
/// `kubectl get secret NAME` prints it).
pub fn render_object(secret: &Secret, format: OutputFormat, now: SystemTime) -> Wiped<String> {
    match format {
        OutputFormat::Yaml | OutputFormat::Json => print_tree(
            &object_tree(secret),
            format,
            estimate(std::slice::from_ref(secret)),
        ),
        other => render_list(std::slice::from_ref(secret), other, false, now),
    }
}

/// What kubectl prints (to stderr) when nothing matched: `No resources
/// found in <namespace> namespace.`, or `No resources found` across all
/// namespaces.
pub fn no_resources_message(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("No resources found in {ns} namespace."),
        None => "No resources found".to_owned(),
    }
}

/// A capacity that holds the output without growing (so no stray copies).
fn estimate(secrets: &[Secret]) -> usize {
    secrets
        .iter()
        .map(|s| {
            1024 + s
                .data
                .iter()
                .map(|(k, v)| 16 + 2 * k.len() + gobase64::encoded_len(v.len()) * 11 / 10)
                .sum::<usize>()
                + s.metadata
                    .annotations
                    .iter()
                    .chain(&s.metadata.labels)
                    .map(|(k, v)| 16 + 2 * (k.len() + v.len()))
                    .sum::<usize>()
                + s.metadata
                    .managed_fields()
                    .iter()
                    .map(|m| 256 + 4 * m.fields_v1.as_ref().map_or(0, String::len))
                    .sum::<usize>()
                + 256 * s.metadata.owner_references().len()
                + 64 * s.metadata.finalizers().len()
        })
        .sum::<usize>()
        + 256
}

fn print_tree(tree: &YamlValue<'_>, format: OutputFormat, capacity: usize) -> Wiped<String> {
    let mut out = Wiped::new(String::with_capacity(capacity));
    match (format, tree) {
        (OutputFormat::Yaml, YamlValue::Map(entries)) => {
            let mut w = YamlWriter::with_buffer(std::mem::take(&mut *out));
            w.map(entries, 0, false);
            *out = w.finish();
        }
        _ => {
            push_json(&mut out, tree, 0);
            out.push('\n');
        }
    }
    out
}

/// `json.MarshalIndent(v, "", "    ")` of the tree: keys sorted bytewise.
fn push_json(out: &mut String, value: &YamlValue<'_>, depth: usize) {
    let pad = |out: &mut String, depth: usize| (0..depth * 4).for_each(|_| out.push(' '));
    match value {
        YamlValue::Str(s) => crate::secret::codec::push_json_string(out, s),
        YamlValue::Secret(s) => crate::secret::codec::push_json_string(out, s),
        YamlValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        YamlValue::Number(n) => out.push_str(n),
        YamlValue::Null => out.push_str("null"),
        YamlValue::Map(entries) if entries.is_empty() => out.push_str("{}"),
        YamlValue::Seq(items) if items.is_empty() => out.push_str("[]"),
        YamlValue::Map(entries) => {
            let mut sorted: Vec<_> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push_str("{\n");
            for (i, (k, v)) in sorted.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                pad(out, depth + 1);
                crate::secret::codec::push_json_string(out, k);
                out.push_str(": ");
                push_json(out, v, depth + 1);
            }
            out.push('\n');
            pad(out, depth);
            out.push('}');
        }
        YamlValue::Seq(items) => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                pad(out, depth + 1);
                push_json(out, v, depth + 1);
            }
            out.push('\n');
            pad(out, depth);
            out.push(']');
        }
    }
}

/// apimachinery's `duration.HumanDuration` of an elapsed time in
/// nanoseconds (negative when the start is in the future: up to a second
/// early is `0s`, more is `<invalid>`).
pub fn human_duration(elapsed_nanos: i128) -> String {
    let seconds = elapsed_nanos / 1_000_000_000;
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The AGE cell of `secret` at `now`.
fn age(secret: &Secret, now: SystemTime) -> String {
    let Some(created) = secret.metadata.creation_time() else {
        return "<unknown>".to_owned();
    };
    let nanos = match now.duration_since(created) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    human_duration(nanos)
}

/// kubectl's table: tab writer with minimum width 6 and padding 3.
fn render_table(secrets: &[Secret], all_namespaces: bool, now: SystemTime) -> String {
    if secrets.is_empty() {
        return String::new();
    }
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(secrets.len() + 1);
    let mut header = vec!["NAME", "TYPE", "DATA", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.into_iter().map(str::to_owned).collect());
    for s in secrets {
        let mut row = vec![
            s.metadata.name.clone(),
            s.type_.clone(),
            s.data.len().to_string(),
            age(s, now),
        ];
        if all_namespaces {
            row.insert(0, s.metadata.namespace.clone());
        }
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns - 1)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(6)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < columns {
                (cell.chars().count()..widths[c]).for_each(|_| out.push(' '));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::model::SecretValue;
    use std::time::Duration;

    const T0: u64 = 1_714_557_600; // 2024-05-01T10:00:00Z

    fn sample() -> Secret {
        let mut s = Secret::new("default", "db-pass");
        s.metadata.uid = Some("0b7d3c7e-5a0f-4c59-9d3e-1f4f6a2b8c01".into());
        s.metadata.resource_version = Some("12".into());
        s.metadata.creation_timestamp = Some("2024-05-01T10:00:00Z".into());
        s.metadata.labels.insert("app".into(), "db".into());
        s.data
            .insert("password".into(), SecretValue::from("S3cr3t"));
        s.data.insert("username".into(), SecretValue::from("admin"));
        s
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn parses_formats() {
        assert_eq!("yaml".parse(), Ok(OutputFormat::Yaml));
        assert_eq!("".parse(), Ok(OutputFormat::Table));
        assert_eq!(
            "xml".parse::<OutputFormat>().unwrap_err().to_string(),
            "unknown output format \"xml\": expected one of table, yaml, json, name"
        );
        assert_eq!(OutputFormat::Json.to_string(), "json");
    }

    #[test]
    fn table_matches_kubectl() {
        let mut tls = Secret::new("kube-system", "ingress-cert");
        tls.type_ = "kubernetes.io/tls".into();
        tls.metadata.creation_timestamp = Some("2024-04-29T09:00:00Z".into());
        let secrets = [sample(), tls];
        let now = at(T0 + 5);
        assert_eq!(
            render(&secrets, OutputFormat::Table, false, now).as_str(),
            "NAME           TYPE                DATA   AGE\n\
             db-pass        Opaque              2      5s\n\
             ingress-cert   kubernetes.io/tls   0      2d1h\n"
        );
        assert_eq!(
            render(&secrets[..1], OutputFormat::Table, true, now).as_str(),
            "NAMESPACE   NAME      TYPE     DATA   AGE\ndefault     db-pass   Opaque   2      5s\n"
        );
        assert_eq!(render(&[], OutputFormat::Table, false, now).as_str(), "");
        assert_eq!(
            no_resources_message(Some("default")),
            "No resources found in default namespace."
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let s = 1_000_000_000i128;
        let cases = [
            (-3 * s, "<invalid>"),
            (-s, "0s"),
            (0, "0s"),
            (119 * s, "119s"),
            (120 * s, "2m"),
            (190 * s, "3m10s"),
            (11 * 60 * s, "11m"),
            (179 * 60 * s, "179m"),
            (3 * 3600 * s, "3h"),
            (5 * 3600 * s + 30 * 60 * s, "5h30m"),
            (47 * 3600 * s, "47h"),
            (49 * 3600 * s, "2d1h"),
            (48 * 3600 * s, "2d"),
            (10 * 86400 * s, "10d"),
            (800 * 86400 * s, "2y70d"),
            (3000 * 86400 * s, "8y"),
        ];
        for (nanos, want) in cases {
            assert_eq!(human_duration(nanos), want, "{nanos}");
        }
        assert_eq!(age(&Secret::new("a", "b"), at(T0)), "<unknown>");
    }

    #[test]
    fn yaml_matches_kubectl() {
        let mut s = sample();
        s.immutable = Some(true);
        assert_eq!(
            render(&[s], OutputFormat::Yaml, false, at(T0)).as_str(),
            "apiVersion: v1\n\
             data:\n  password: UzNjcjN0\n  username: YWRtaW4=\n\
             immutable: true\n\
             kind: Secret\n\
             metadata:\n  creationTimestamp: \"2024-05-01T10:00:00Z\"\n  labels:\n    app: db\n  name: db-pass\n  namespace: default\n  resourceVersion: \"12\"\n  uid: 0b7d3c7e-5a0f-4c59-9d3e-1f4f6a2b8c01\n\
             type: Opaque\n"
        );
    }

    #[test]
    fn yaml_lists_several() {
        let out = render(&[sample(), sample()], OutputFormat::Yaml, false, at(T0));
        assert!(
            out.starts_with(
                "apiVersion: v1\nitems:\n- apiVersion: v1\n  data:\n    password: UzNjcjN0\n"
            ),
            "{}",
            out.as_str()
        );
        assert!(
            out.ends_with("  type: Opaque\nkind: List\nmetadata:\n  resourceVersion: \"\"\n"),
            "{}",
            out.as_str()
        );
        let empty = render(&[], OutputFormat::Yaml, false, at(T0));
        assert_eq!(
            empty.as_str(),
            "apiVersion: v1\nitems: []\nkind: List\nmetadata:\n  resourceVersion: \"\"\n"
        );
    }

    #[test]
    fn json_matches_kubectl() {
        let out = render(&[sample()], OutputFormat::Json, false, at(T0));
        assert_eq!(
            out.as_str(),
            r#"{
    "apiVersion": "v1",
    "data": {
        "password": "UzNjcjN0",
        "username": "YWRtaW4="
    },
    "kind": "Secret",
    "metadata": {
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "labels": {
            "app": "db"
        },
        "name": "db-pass",
        "namespace": "default",
        "resourceVersion": "12",
        "uid": "0b7d3c7e-5a0f-4c59-9d3e-1f4f6a2b8c01"
    },
    "type": "Opaque"
}
"#
        );
        let list = render_list(&[], OutputFormat::Json, false, at(T0));
        assert_eq!(
            list.as_str(),
            "{\n    \"apiVersion\": \"v1\",\n    \"items\": [],\n    \"kind\": \"List\",\n    \"metadata\": {\n        \"resourceVersion\": \"\"\n    }\n}\n"
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            render(&[sample()], OutputFormat::Name, false, at(T0)).as_str(),
            "secret/db-pass\n"
        );
    }
}
