//! Field errors and the `Secret "x" is invalid: …` error, formatted as
//! `k8s.io/apimachinery/pkg/util/validation/field` and
//! `apierrors.NewInvalid` format them.

use std::fmt;

/// What is wrong with a field (`field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorType {
    /// `Required value`: a value that must be present is missing.
    Required,
    /// `Invalid value`: the value is malformed.
    Invalid,
    /// `Forbidden`: the value is well formed but not allowed here.
    Forbidden,
    /// `Too long`: the value (or the sum of values) is too large.
    TooLong,
}

impl ErrorType {
    /// The text the apiserver prints for this type.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
        }
    }
}

/// One field-level validation error (`field.Error`).
///
/// `bad_value` is already rendered the way Go prints it (a quoted string, or
/// `"<secret contents redacted>"`); a secret value is never put there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of error.
    pub error_type: ErrorType,
    /// The field path, e.g. `data[tls.key]` or `metadata.name`.
    pub field: String,
    /// The offending value as printed (only for [`ErrorType::Invalid`]).
    pub bad_value: Option<String>,
    /// The explanation, possibly empty.
    pub detail: String,
}

impl FieldError {
    /// `field.Required(path, detail)`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Required,
            field: field.into(),
            bad_value: None,
            detail: detail.into(),
        }
    }

    /// `field.Invalid(path, value, detail)` for a string value, which is
    /// printed quoted (`%q`).
    pub fn invalid(field: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        Self::invalid_rendered(field, go_quote(value), detail)
    }

    /// `field.Invalid` with a value already rendered for printing.
    pub fn invalid_rendered(
        field: impl Into<String>,
        rendered: String,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            error_type: ErrorType::Invalid,
            field: field.into(),
            bad_value: Some(rendered),
            detail: detail.into(),
        }
    }

    /// `field.Forbidden(path, detail)`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Forbidden,
            field: field.into(),
            bad_value: None,
            detail: detail.into(),
        }
    }

    /// `field.TooLong(path, _, max)`: `must have at most N bytes`.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        Self {
            error_type: ErrorType::TooLong,
            field: field.into(),
            bad_value: None,
            detail: format!("must have at most {max_bytes} bytes"),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error_type.as_str())?;
        if let Some(value) = &self.bad_value {
            write!(f, ": {value}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// A Secret failed validation: `Secret "name" is invalid: …`.
///
/// With one error the message is `Secret "x" is invalid: <error>`; with
/// several, `Secret "x" is invalid: [<e1>, <e2>]`, duplicates removed, as
/// `apierrors.NewInvalid` prints an aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidError {
    /// `metadata.name` of the Secret (possibly empty).
    pub name: String,
    /// The field errors, in the order they were found, without duplicates.
    pub errors: Vec<FieldError>,
}

impl InvalidError {
    /// Builds the error, dropping errors whose message repeats an earlier one.
    pub fn new(name: impl Into<String>, errors: Vec<FieldError>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let errors = errors
            .into_iter()
            .filter(|e| seen.insert(e.to_string()))
            .collect();
        Self {
            name: name.into(),
            errors,
        }
    }
}

impl fmt::Display for InvalidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret {} is invalid: ", go_quote(&self.name))?;
        match self.errors.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("[")?;
                for (i, e) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl std::error::Error for InvalidError {}

/// Quotes `s` as Go's `%q` (`strconv.Quote`) does: printable characters as
/// they are, `\"`, `\\`, the C escapes, `\xNN` below U+0020 and for DEL,
/// `\uNNNN` / `\UNNNNNNNN` for other non-printable characters.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint`: letters, marks, numbers,
/// punctuation, symbols and the ASCII space.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    // Format characters, surrogates' neighbours and private use are not
    // printable in Go; the common ones are listed here.
    !matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e000}'..='\u{f8ff}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_error_bodies_match_go() {
        assert_eq!(
            FieldError::required("data[tls.key]", "").to_string(),
            "data[tls.key]: Required value"
        );
        assert_eq!(
            FieldError::required("metadata.name", "name or generateName is required").to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(
            FieldError::invalid("type", "kubernetes.io/tls", "field is immutable").to_string(),
            "type: Invalid value: \"kubernetes.io/tls\": field is immutable"
        );
        assert_eq!(
            FieldError::forbidden("immutable", "field is immutable when `immutable` is set")
                .to_string(),
            "immutable: Forbidden: field is immutable when `immutable` is set"
        );
        assert_eq!(
            FieldError::too_long("data", 1_048_576).to_string(),
            "data: Too long: must have at most 1048576 bytes"
        );
    }

    #[test]
    fn invalid_error_formats_one_and_many() {
        let one = InvalidError::new("x", vec![FieldError::required("data[a]", "")]);
        assert_eq!(
            one.to_string(),
            "Secret \"x\" is invalid: data[a]: Required value"
        );
        let many = InvalidError::new(
            "x",
            vec![
                FieldError::required("data[a]", ""),
                FieldError::required("data[b]", ""),
                FieldError::required("data[a]", ""),
            ],
        );
        assert_eq!(many.errors.len(), 2);
        assert_eq!(
            many.to_string(),
            "Secret \"x\" is invalid: [data[a]: Required value, data[b]: Required value]"
        );
    }

    #[test]
    fn go_quote_escapes_like_strconv() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(go_quote("a\nb\tc\u{1}\u{7f}"), "\"a\\nb\\tc\\x01\\x7f\"");
        assert_eq!(go_quote("é ü"), "\"é ü\"");
        assert_eq!(go_quote("\u{200b}"), "\"\\u200b\"");
        assert_eq!(go_quote("\u{a0}"), "\"\\u00a0\"");
    }
}
