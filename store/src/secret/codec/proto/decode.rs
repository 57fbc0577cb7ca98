//! Reading a Secret from the apiserver's protobuf as its gogo-generated
//! `Unmarshal` methods do: fields in any order; unknown fields of any wire
//! type skipped; a known field with the wrong wire type is an error; the
//! last of a repeated scalar wins, a repeated message (`metadata`) merges,
//! list elements append, map entries with a repeated key keep the last;
//! a missing map value is empty. Stricter than Go where the model needs it:
//! strings must be UTF-8, times must fit RFC 3339 (years 0000-9999), and
//! `fieldsV1` must be JSON (Go could not print it otherwise). Every error
//! names the field (`metadata.managedFields[0].time.seconds: truncated
//! varint`); nothing here can panic on any input, and no message holds a
//! data value.

use std::collections::BTreeMap;

use crate::k8s::raw_json;
use crate::k8s::time as timefmt;
use crate::protowire::{
    Names, Reader, Value, WireError, expect_bytes, expect_string, expect_varint,
};
use crate::secret::DecodeError;
use crate::secret::model::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, SECRET_TYPE_OPAQUE, Secret, SecretValue,
};

type Result<T> = std::result::Result<T, WireError>;

/// A nested message's bytes, the error naming `name` otherwise.
fn nested<'a>(name: &str, wire: u8, v: Value<'a>) -> Result<&'a [u8]> {
    expect_bytes(name, wire, v)
}

/// `metav1.Time.Unmarshal`: an empty message is the zero (unset) time;
/// nanos are read and ignored, as upstream does.
fn time(bytes: &[u8]) -> Result<Option<String>> {
    let mut r = Reader::new(bytes, &[(1, "seconds"), (2, "nanos")]);
    let mut secs = 0i64;
    while let Some((n, wire, v)) = r.next()? {
        match n {
            1 => secs = expect_varint("seconds", wire, v)? as i64,
            2 => drop(expect_varint("nanos", wire, v)?),
            _ => {}
        }
    }
    if bytes.is_empty() || secs == timefmt::GO_ZERO_SECONDS {
        return Ok(None);
    }
    if !(timefmt::MIN_JSON_SECONDS..=timefmt::MAX_JSON_SECONDS).contains(&secs) {
        return Err(WireError::new(format!(
            "{secs} is outside the years 0000-9999 a Kubernetes time can hold"
        ))
        .within("seconds"));
    }
    Ok(Some(timefmt::format_rfc3339(secs)))
}

fn time_field(name: &str, wire: u8, v: Value<'_>) -> Result<Option<String>> {
    time(nested(name, wire, v)?).map_err(|e| e.within(name))
}

/// A map entry `{1: key, 2: value}`; a missing value is empty.
fn entry(bytes: &[u8]) -> Result<(String, &[u8])> {
    let mut r = Reader::new(bytes, &[(1, "key"), (2, "value")]);
    let (mut key, mut value): (String, &[u8]) = (String::new(), &[]);
    while let Some((n, wire, v)) = r.next()? {
        match n {
            1 => key = expect_string("key", wire, v)?,
            2 => value = expect_bytes("value", wire, v)?,
            _ => {}
        }
    }
    Ok((key, value))
}

fn string_entry(
    name: &str,
    wire: u8,
    v: Value<'_>,
    map: &mut BTreeMap<String, String>,
) -> Result<()> {
    let (key, value) = entry(nested(name, wire, v)?).map_err(|e| e.within(name))?;
    let value = std::str::from_utf8(value).map_err(|_| {
        WireError::new("not valid UTF-8")
            .within(format!("[{key}]"))
            .within(name)
    })?;
    map.insert(key, value.to_owned());
    Ok(())
}

fn bool_field(name: &str, wire: u8, v: Value<'_>) -> Result<bool> {
    Ok(expect_varint(name, wire, v)? != 0)
}

const OWNER_REFERENCE: Names = &[
    (1, "kind"),
    (3, "name"),
    (4, "uid"),
    (5, "apiVersion"),
    (6, "controller"),
    (7, "blockOwnerDeletion"),
];

fn owner_reference(bytes: &[u8]) -> Result<OwnerReference> {
    let mut r = Reader::new(bytes, OWNER_REFERENCE);
    let mut out = OwnerReference::default();
    while let Some((n, wire, v)) = r.next()? {
        match n {
            1 => out.kind = expect_string("kind", wire, v)?,
            3 => out.name = expect_string("name", wire, v)?,
            4 => out.uid = expect_string("uid", wire, v)?,
            5 => out.api_version = expect_string("apiVersion", wire, v)?,
            6 => out.controller = Some(bool_field("controller", wire, v)?),
            7 => out.block_owner_deletion = Some(bool_field("blockOwnerDeletion", wire, v)?),
            _ => {}
        }
    }
    Ok(out)
}

/// `FieldsV1{1: raw}`, checked to be JSON.
fn fields_v1(bytes: &[u8]) -> Result<String> {
    let mut r = Reader::new(bytes, &[(1, "raw")]);
    let mut raw: &[u8] = &[];
    while let Some((n, wire, v)) = r.next()? {
        if n == 1 {
            raw = expect_bytes("raw", wire, v)?;
        }
    }
    let text = std::str::from_utf8(raw).map_err(|_| WireError::new("not valid UTF-8"))?;
    raw_json::check(text).map_err(WireError::new)?;
    Ok(text.to_owned())
}

const MANAGED_FIELDS_ENTRY: Names = &[
    (1, "manager"),
    (2, "operation"),
    (3, "apiVersion"),
    (4, "time"),
    (6, "fieldsType"),
    (7, "fieldsV1"),
    (8, "subresource"),
];

fn managed_fields_entry(bytes: &[u8]) -> Result<ManagedFieldsEntry> {
    let mut r = Reader::new(bytes, MANAGED_FIELDS_ENTRY);
    let mut out = ManagedFieldsEntry::default();
    while let Some((n, wire, v)) = r.next()? {
        match n {
            1 => out.manager = expect_string("manager", wire, v)?,
            2 => out.operation = expect_string("operation", wire, v)?,
            3 => out.api_version = expect_string("apiVersion", wire, v)?,
            4 => out.time = time_field("time", wire, v)?,
            6 => out.fields_type = expect_string("fieldsType", wire, v)?,
            7 => {
                let b = nested("fieldsV1", wire, v)?;
                out.fields_v1 = Some(fields_v1(b).map_err(|e| e.within("fieldsV1"))?);
            }
            8 => out.subresource = expect_string("subresource", wire, v)?,
            _ => {}
        }
    }
    Ok(out)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// `ObjectMeta.Unmarshal` into `m` (a repeated `metadata` merges).
const OBJECT_META: Names = &[
    (1, "name"),
    (2, "generateName"),
    (3, "namespace"),
    (4, "selfLink"),
    (5, "uid"),
    (6, "resourceVersion"),
    (7, "generation"),
    (8, "creationTimestamp"),
    (9, "deletionTimestamp"),
    (10, "deletionGracePeriodSeconds"),
    (11, "labels"),
    (12, "annotations"),
    (13, "ownerReferences"),
    (14, "finalizers"),
    (17, "managedFields"),
];

fn object_meta(bytes: &[u8], m: &mut ObjectMeta) -> Result<()> {
    let mut r = Reader::new(bytes, OBJECT_META);
    while let Some((n, wire, v)) = r.next()? {
        match n {
            1 => m.name = expect_string("name", wire, v)?,
            2 => m.generate_name = expect_string("generateName", wire, v)?,
            3 => m.namespace = expect_string("namespace", wire, v)?,
            4 => drop(expect_string("selfLink", wire, v)?),
            5 => m.uid = non_empty(expect_string("uid", wire, v)?),
            6 => m.resource_version = non_empty(expect_string("resourceVersion", wire, v)?),
            7 => m.generation = expect_varint("generation", wire, v)? as i64,
            8 => m.creation_timestamp = time_field("creationTimestamp", wire, v)?,
            9 => m.deletion_timestamp = time_field("deletionTimestamp", wire, v)?,
            10 => {
                let g = expect_varint("deletionGracePeriodSeconds", wire, v)? as i64;
                m.deletion_grace_period_seconds = Some(g);
            }
            11 => string_entry("labels", wire, v, &mut m.labels)?,
            12 => string_entry("annotations", wire, v, &mut m.annotations)?,
            13 => {
                let list = m.owner_references.get_or_insert_with(Vec::new);
                let at = format!("[{}]", list.len());
                let b = nested("ownerReferences", wire, v)?;
                let r = owner_reference(b).map_err(|e| e.within(at).within("ownerReferences"))?;
                list.push(r);
            }
            14 => {
                let f = expect_string("finalizers", wire, v)?;
                m.finalizers.get_or_insert_with(Vec::new).push(f);
            }
            17 => {
                let list = m.managed_fields.get_or_insert_with(Vec::new);
                let at = format!("[{}]", list.len());
                let b = nested("managedFields", wire, v)?;
                let e =
                    managed_fields_entry(b).map_err(|e| e.within(at).within("managedFields"))?;
                list.push(e);
            }
            _ => {}
        }
    }
    Ok(())
}

/// `v1.Secret.Unmarshal`, then v1 defaulting (`type` "" is `Opaque`) and
/// the conversion that merges `stringData` into `data`.
const SECRET: Names = &[
    (1, "metadata"),
    (2, "data"),
    (3, "type"),
    (4, "stringData"),
    (5, "immutable"),
];

fn secret(raw: &[u8]) -> Result<Secret> {
    let mut r = Reader::new(raw, SECRET);
    let mut s = Secret::default();
    s.type_.clear();
    let mut string_data = BTreeMap::new();
    while let Some((n, wire, v)) = r.next()? {
        match n {
            1 => {
                let b = nested("metadata", wire, v)?;
                object_meta(b, &mut s.metadata).map_err(|e| e.within("metadata"))?;
            }
            2 => {
                let b = nested("data", wire, v)?;
                let (key, value) = entry(b).map_err(|e| e.within("data"))?;
                s.data.insert(key, SecretValue::from_slice(value));
            }
            3 => s.type_ = expect_string("type", wire, v)?,
            4 => string_entry("stringData", wire, v, &mut string_data)?,
            5 => s.immutable = Some(bool_field("immutable", wire, v)?),
            _ => {}
        }
    }
    for (k, v) in string_data {
        s.data.insert(k, SecretValue::new(v.into_bytes()));
    }
    if s.type_.is_empty() {
        s.type_ = SECRET_TYPE_OPAQUE.to_owned();
    }
    Ok(s)
}

/// The `runtime.Unknown` after the magic: its type, then its `raw` as a
/// Secret.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Secret, DecodeError> {
    let bad = |e: WireError| DecodeError::Protobuf(e.to_string());
    let mut r = Reader::new(
        bytes,
        &[
            (1, "typeMeta"),
            (2, "raw"),
            (3, "contentEncoding"),
            (4, "contentType"),
        ],
    );
    let (mut api_version, mut kind) = (String::new(), String::new());
    let (mut raw, mut encoding, mut content_type): (&[u8], String, String) =
        (&[], String::new(), String::new());
    while let Some((n, wire, v)) = r.next().map_err(bad)? {
        match n {
            1 => {
                let b = nested("typeMeta", wire, v).map_err(bad)?;
                let mut t = Reader::new(b, &[(1, "apiVersion"), (2, "kind")]);
                while let Some((n, wire, v)) = t.next().map_err(|e| bad(e.within("typeMeta")))? {
                    let field =
                        |name| expect_string(name, wire, v).map_err(|e| bad(e.within("typeMeta")));
                    match n {
                        1 => api_version = field("apiVersion")?,
                        2 => kind = field("kind")?,
                        _ => {}
                    }
                }
            }
            2 => raw = expect_bytes("raw", wire, v).map_err(bad)?,
            3 => encoding = expect_string("contentEncoding", wire, v).map_err(bad)?,
            4 => content_type = expect_string("contentType", wire, v).map_err(bad)?,
            _ => {}
        }
    }
    if kind != "Secret" || api_version != "v1" {
        return Err(DecodeError::WrongKind { api_version, kind });
    }
    if !encoding.is_empty() {
        return Err(DecodeError::Protobuf(format!(
            "contentEncoding {encoding:?} is not supported (the apiserver writes none)"
        )));
    }
    if !content_type.is_empty() && content_type != "application/vnd.kubernetes.protobuf" {
        return Err(DecodeError::Protobuf(format!(
            "contentType {content_type:?} is not supported"
        )));
    }
    secret(raw).map_err(bad)
}
