//! The JSON kube-apiserver stores for a Secret with
//! `--storage-media-type=application/json`: Go's `encoding/json` output of a
//! v1 Secret, compact, with a trailing newline (`encode`), and its reader
//! (`decode`).
//!
//! Map keys are sorted (bytewise, as Go sorts them); `resourceVersion` is
//! not stored (the apiserver clears it before writing). Strings are escaped
//! as Go escapes them: `\"`, `\\`, `\b \f \n \r \t`, other control
//! characters and `<`, `>`, `&` as `\u00XX`, U+2028 and U+2029 as `\u2028` /
//! `\u2029`.

mod decode;
mod encode;

pub(crate) use decode::decode;
pub(crate) use encode::encode;

/// Appends `s` as a Go JSON string (quotes included).
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                let b = c as u32 as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xf]));
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::DecodeError;
    use crate::secret::model::{Secret, SecretValue};

    fn text(s: &Secret) -> String {
        String::from_utf8(encode(s).to_vec()).unwrap()
    }

    /// Map keys are escaped as Go escapes them (found by the manifest fuzz
    /// target: a `"` in an annotation key broke the object).
    #[test]
    fn map_keys_are_escaped() {
        let mut s = Secret::new("default", "x");
        s.metadata
            .annotations
            .insert("a\"b\\c<d".into(), "v".into());
        let t = text(&s);
        assert!(
            t.contains("\"annotations\":{\"a\\\"b\\\\c\\u003cd\":\"v\"}"),
            "{t}"
        );
        let back = Secret::from_storage_bytes(t.as_bytes()).unwrap();
        assert_eq!(back.metadata.annotations, s.metadata.annotations);
    }

    #[test]
    fn writes_the_go_field_order_and_omissions() {
        let mut s = Secret::new("default", "x");
        assert_eq!(
            text(&s),
            "{\"kind\":\"Secret\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"x\",\"namespace\":\"default\",\"creationTimestamp\":null},\"type\":\"Opaque\"}\n"
        );
        s.metadata.uid = Some("u".into());
        s.metadata.resource_version = Some("9".into());
        s.metadata.creation_timestamp = Some("2024-05-01T10:00:00Z".into());
        s.metadata.labels.insert("b".into(), "2".into());
        s.metadata.labels.insert("a".into(), "1".into());
        s.metadata.annotations.insert("n".into(), "<&>".into());
        s.immutable = Some(false);
        s.data.insert("k2".into(), SecretValue::from("v"));
        s.data.insert("k1".into(), SecretValue::from(""));
        s.type_ = "kubernetes.io/tls".into();
        assert_eq!(
            text(&s),
            "{\"kind\":\"Secret\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"x\",\"namespace\":\"default\",\"uid\":\"u\",\"creationTimestamp\":\"2024-05-01T10:00:00Z\",\"labels\":{\"a\":\"1\",\"b\":\"2\"},\"annotations\":{\"n\":\"\\u003c\\u0026\\u003e\"}},\"immutable\":false,\"data\":{\"k1\":\"\",\"k2\":\"dg==\"},\"type\":\"kubernetes.io/tls\"}\n"
        );
    }

    #[test]
    fn escapes_strings_like_go() {
        let mut out = String::new();
        push_json_string(
            &mut out,
            "a\"\\\u{8}\u{c}\n\r\t\u{1}\u{1f}<>&\u{2028}\u{2029}é\u{7f}",
        );
        assert_eq!(
            out,
            "\"a\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\\u003c\\u003e\\u0026\\u2028\\u2029é\u{7f}\""
        );
    }

    #[test]
    fn reads_back_what_it_writes_and_tolerates_extra_fields() {
        let mut s = Secret::new("ns", "x");
        s.data.insert("a".into(), SecretValue::from("1"));
        s.metadata
            .annotations
            .insert("k".into(), "line\nbreak".into());
        let back = decode(&encode(&s)).unwrap();
        assert_eq!(back, s);
        let extra = br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"x","namespace":"ns","managedFields":[{"manager":"kubectl","fieldsV1":{"f:data": {}}}],"generation":1,"selfLink":"/x","zz":[1]},"stringData":{"s":"t"}}"#;
        let back = decode(extra).unwrap();
        assert_eq!(back.type_, "Opaque");
        assert_eq!(back.data["s"].expose(), b"t");
        assert_eq!(back.metadata.generation, 1);
        let mf = &back.metadata.managed_fields()[0];
        assert_eq!(mf.manager, "kubectl");
        // fieldsV1 keeps its bytes, whitespace included; JSON writes it compacted.
        assert_eq!(mf.fields_v1.as_deref(), Some(r#"{"f:data": {}}"#));
        assert!(
            text(&back)
                .contains(r#""managedFields":[{"manager":"kubectl","fieldsV1":{"f:data":{}}}]"#)
        );
    }

    #[test]
    fn go_zero_time_reads_as_unset_and_out_of_range_times_are_refused() {
        // metav1.Time's zero is unset: null in JSON, an empty protobuf
        // message; reading it as set made the protobuf round trip lose it
        // (found by the stored_value fuzz target).
        let zero = br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"x","namespace":"ns","creationTimestamp":"0001-01-01T00:00:00Z","deletionTimestamp":"0001-01-01T02:00:00+02:00"}}"#;
        let back = decode(zero).unwrap();
        assert_eq!(back.metadata.creation_timestamp, None);
        assert_eq!(back.metadata.deletion_timestamp, None);
        assert!(text(&back).contains("\"creationTimestamp\":null"));
        let proto = back.to_storage_protobuf();
        assert_eq!(Secret::from_storage_bytes(&proto).unwrap(), back);
        // An offset past 9999-12-31 cannot be written back as four digits.
        let late = br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"x","creationTimestamp":"9999-12-31T23:59:59-01:00"}}"#;
        assert_eq!(
            decode(late).unwrap_err().to_string(),
            "metadata.creationTimestamp: outside the years 0000-9999 a Kubernetes time can hold"
        );
    }

    #[test]
    fn refuses_other_kinds_and_bad_fields() {
        assert!(matches!(
            decode(br#"{"kind":"ConfigMap","apiVersion":"v1"}"#),
            Err(DecodeError::WrongKind { .. })
        ));
        let e = decode(br#"{"kind":"Secret","apiVersion":"v1","data":{"p":"c2Vj!"}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "data[p]: illegal base64 data at input byte 4"
        );
        assert!(matches!(decode(b"[1]"), Err(DecodeError::Json(_))));
        for (doc, want) in [
            (
                r#"{"metadata":{"generation":"1"}}"#,
                "metadata.generation: expected an integer, found a string",
            ),
            (
                r#"{"metadata":{"generation":1.5}}"#,
                "metadata.generation: 1.5 is not a 64-bit integer",
            ),
            (
                r#"{"metadata":{"ownerReferences":{}}}"#,
                "metadata.ownerReferences: expected a list, found a mapping",
            ),
            (
                r#"{"metadata":{"ownerReferences":[{"controller":"yes"}]}}"#,
                "metadata.ownerReferences[0].controller: expected a boolean, found a string",
            ),
            (
                r#"{"metadata":{"finalizers":[1]}}"#,
                "metadata.finalizers[0]: expected a string, found a number",
            ),
            (
                r#"{"metadata":{"managedFields":[{"fieldsV1":"x"}]}}"#,
                "metadata.managedFields[0].fieldsV1: expected an object, found a string",
            ),
            (
                r#"{"metadata":{"managedFields":[{"time":"soon"}]}}"#,
                "metadata.managedFields[0].time: not an RFC 3339 time",
            ),
            (
                r#"{"metadata":{"deletionTimestamp":5}}"#,
                "metadata.deletionTimestamp: expected a string, found a number",
            ),
        ] {
            let doc = doc.replacen('{', r#"{"kind":"Secret","apiVersion":"v1","#, 1);
            assert_eq!(
                decode(doc.as_bytes()).unwrap_err().to_string(),
                want,
                "{doc}"
            );
        }
    }
}
