//! What the manifest readers share: the options, the error, where an object
//! sits in the input, and the strict field checks (unknown fields refused
//! with a suggestion, typed optional strings).

use std::fmt;

use super::super::node::Node;
use crate::k8s::go_quote;
use crate::secret::model::DEFAULT_NAMESPACE;

/// How manifests are read.
#[derive(Clone, Debug)]
pub struct ManifestOptions {
    /// The namespace of a Secret that names none (kubectl's `-n`, else
    /// `default`).
    pub default_namespace: String,
    /// Refuse a Secret whose `metadata.namespace` differs from
    /// `default_namespace` (what kubectl does when `-n` is given).
    pub enforce_namespace: bool,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            default_namespace: DEFAULT_NAMESPACE.to_owned(),
            enforce_namespace: false,
        }
    }
}

/// Why a manifest could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    /// The input holds no object at all.
    Empty,
    /// The text is not well-formed YAML or JSON.
    Syntax {
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The parser's message (a position and what was expected).
        message: String,
    },
    /// An object is not an acceptable Secret.
    Object {
        /// Where: `document 2`, `document 1, item 3 (Secret "x")`.
        location: String,
        /// What: `data[password]: illegal base64 data at input byte 4`.
        message: String,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Empty => f.write_str(
                "no objects found: the input is empty or holds only comments and '---' separators",
            ),
            ManifestError::Syntax { format, message } => write!(f, "invalid {format}: {message}"),
            ManifestError::Object { location, message } => write!(f, "{location}: {message}"),
        }
    }
}

impl std::error::Error for ManifestError {}

/// Where an object sits in the input.
pub(super) struct Location {
    pub(super) document: usize,
    pub(super) items: Vec<usize>,
    pub(super) name: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if !self.items.is_empty() {
            let path: Vec<String> = self.items.iter().map(usize::to_string).collect();
            write!(f, ", item {}", path.join("."))?;
        }
        if let Some(name) = &self.name {
            write!(f, " (Secret {})", go_quote(name))?;
        }
        Ok(())
    }
}

impl Location {
    pub(super) fn error(&self, message: impl Into<String>) -> ManifestError {
        ManifestError::Object {
            location: self.to_string(),
            message: message.into(),
        }
    }
}

/// An optional string field: `None` when absent or null.
pub(super) fn opt_string<'a>(
    node: &'a Node,
    key: &str,
    path: &str,
    location: &Location,
) -> Result<Option<&'a str>, ManifestError> {
    match node.get(key) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::String(s)) => Ok(Some(s.as_str())),
        Some(other) => {
            Err(location.error(format!("{path}: expected a string, found {}", other.kind())))
        }
    }
}

/// Refuses fields outside `known`, suggesting the intended one.
pub(super) fn check_fields(
    node: &Node,
    known: &[&str],
    prefix: &str,
    location: &Location,
) -> Result<(), ManifestError> {
    let Node::Map(entries) = node else {
        return Ok(());
    };
    for (key, _) in entries {
        if !known.contains(&key.as_str()) {
            let hint = suggest(key, known)
                .map(|s| format!(" (did you mean {}?)", go_quote(s)))
                .unwrap_or_default();
            return Err(location.error(format!("{prefix}unknown field {}{hint}", go_quote(key))));
        }
    }
    Ok(())
}

/// The known field closest to `key` (same letters ignoring case, or at most
/// two edits away).
fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::manifest::secret::SECRET_FIELDS;

    #[test]
    fn suggestions_need_a_close_match() {
        assert_eq!(suggest("stringdata", &SECRET_FIELDS), Some("stringData"));
        assert_eq!(suggest("immutabel", &SECRET_FIELDS), Some("immutable"));
        assert_eq!(suggest("zzz", &SECRET_FIELDS), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
