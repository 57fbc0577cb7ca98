//! Field errors, their aggregate and the `Secret "x" is invalid: …` error,
//! formatted as `k8s.io/apimachinery/pkg/util/validation/field`,
//! `utilerrors.NewAggregate` and `apierrors.NewInvalid` format them. Both
//! the Secret validation and the EncryptionConfiguration validation report
//! through these types; one printer writes every aggregate.

use std::fmt;

use super::quote::go_quote;

/// What is wrong with a field (`field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorType {
    /// `Required value`: a value that must be present is missing.
    Required,
    /// `Invalid value`: the value is malformed.
    Invalid,
    /// `Duplicate value`: the value appears twice where it must be unique.
    Duplicate,
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
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
        }
    }
}

/// One field-level validation error (`field.Error`).
///
/// `bad_value` is already rendered the way Go prints it (a quoted string, or
/// `"<secret contents redacted>"`, `"REDACTED"`); a secret value is never
/// put there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of error.
    pub error_type: ErrorType,
    /// The field path, e.g. `data[tls.key]` or `metadata.name`.
    pub field: String,
    /// The offending value as printed ([`ErrorType::Invalid`] and
    /// [`ErrorType::Duplicate`]).
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

    /// `field.Duplicate(path, value)` with a value already rendered.
    pub fn duplicate(field: impl Into<String>, rendered: String) -> Self {
        Self {
            error_type: ErrorType::Duplicate,
            field: field.into(),
            bad_value: Some(rendered),
            detail: String::new(),
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

/// Writes field errors as apimachinery's aggregate prints them: one error
/// as itself, several as `[a, b]`.
fn write_aggregate(f: &mut fmt::Formatter<'_>, errors: &[FieldError]) -> fmt::Result {
    match errors {
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

/// Field errors in the order found, displayed as an aggregate (one error as
/// itself, several as `[a, b]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// Whether any error is for exactly `field`.
    pub fn has_field(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_aggregate(f, &self.0)
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
        write_aggregate(f, &self.errors)
    }
}

impl std::error::Error for InvalidError {}

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
}
