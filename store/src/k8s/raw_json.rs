//! A JSON value kept as its bytes, as `metav1.FieldsV1` keeps
//! `managedFields[].fieldsV1`: read from storage exactly as stored, written
//! into stored JSON as Go's `encoding/json` writes a `json.Marshaler`'s
//! output (compacted, `<`, `>`, `&`, U+2028 and U+2029 escaped), and parsed
//! into a tree only to print it as kubectl does.

/// Checks that `text` is one JSON value.
pub(crate) fn check(text: &str) -> Result<(), String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|e| format!("not valid JSON: {e}"))
}

/// `text` (valid JSON) as Go's `compact(dst, src, escapeHTML = true)`
/// writes it: whitespace outside strings removed, HTML characters and the
/// two JavaScript line separators escaped inside them.
pub(crate) fn compact_for_go(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            match c {
                '<' | '>' | '&' => out.push_str(&format!("\\u{:04x}", c as u32)),
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c => out.push(c),
            }
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// `text` (valid JSON) as a tree, for printing; `null` if it is not JSON.
pub(crate) fn tree(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_syntax() {
        assert!(check(r#"{"f:data":{".":{}}}"#).is_ok());
        assert!(check("").unwrap_err().starts_with("not valid JSON: "));
        assert!(check("{} {}").is_err());
    }

    #[test]
    fn compacts_as_go_does() {
        assert_eq!(
            compact_for_go("{ \"a <b>\" : { \"&\\\"x\" : [1, 2] },\n \"é\u{2028}\":{} }"),
            r#"{"a \u003cb\u003e":{"\u0026\"x":[1,2]},"é\u2028":{}}"#
        );
        assert_eq!(compact_for_go(r#"{"\\":{}}"#), r#"{"\\":{}}"#);
    }
}
