//! A JSON value kept as its bytes, as `metav1.FieldsV1` keeps
//! `managedFields[].fieldsV1`: read from storage exactly as stored, written
//! into stored JSON as Go's `encoding/json` writes a `json.Marshaler`'s
//! output (compacted, `<`, `>`, `&`, U+2028 and U+2029 escaped), and parsed
//! into a tree only to print it as kubectl does.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Checks that `text` is one JSON value whose objects have unique keys: the
/// rule the stored-JSON reader applies to the whole object, `fieldsV1`
/// included, so that what is read from protobuf can be written as JSON and
/// read back.
pub(crate) fn check(text: &str) -> Result<(), String> {
    serde_json::from_str::<UniqueKeys>(text)
        .map(drop)
        .map_err(|e| format!("not valid JSON: {e}"))
}

/// Any JSON value, read and dropped, refusing an object with a key twice.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E: de::Error>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut keys: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            map.next_value::<UniqueKeys>()?;
            keys.push(key);
        }
        Ok(UniqueKeys)
    }
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
        // Keys are unique at every depth, as the stored-JSON reader wants.
        assert!(check(r#"{"f:a":{},"f:b":[{"x":1,"y":{}}]}"#).is_ok());
        let e = check(r#"{"f:data":{".":{},"f:x":{}},"f:type":{},"f:type":{}}"#).unwrap_err();
        assert!(e.contains("duplicate key \"f:type\""), "{e}");
        assert!(check(r#"[{"a":{"b":1,"b":2}}]"#).is_err());
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
