//! etcd's MVCC layout inside the bbolt file (`server/mvcc`): bucket `key`
//! maps a revision to the `mvccpb.KeyValue` written at it. A revision key
//! is `main (u64 BE) ‖ '_' ‖ sub (u64 BE)`, plus a trailing `t` for a
//! tombstone (a delete); keys sort by revision. The live value of a key is
//! its entry of highest revision, unless that is a tombstone. Compaction
//! removes older revisions and tombstones, never a key's latest value, so
//! this holds before and after it.
//!
//! `KeyValue`: `key = 1` (bytes), `create_revision = 2`, `mod_revision = 3`,
//! `version = 4`, `value = 5` (bytes), `lease = 6` (int64 varints).

use std::collections::BTreeMap;

use super::bolt::{Bolt, BoltError, Location, PageSource};
use crate::protowire::{Reader, expect_bytes, expect_varint};

/// The bucket holding the revisions.
pub(crate) const KEY_BUCKET: &[u8] = b"key";

/// One live key: where its latest value is.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    /// Its create revision.
    pub(crate) create_revision: u64,
    /// Its mod revision.
    pub(crate) mod_revision: u64,
    /// Where its `KeyValue` is.
    pub(crate) location: Location,
}

/// What the index saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counts {
    /// Revisions (entries of bucket `key`).
    pub(crate) revisions: u64,
    /// Of those, tombstones.
    pub(crate) tombstones: u64,
    /// Keys whose latest revision is a tombstone (deleted, not compacted yet).
    pub(crate) deleted_keys: u64,
    /// The highest revision (the snapshot's revision).
    pub(crate) revision: u64,
}

/// A decoded `mvccpb.KeyValue` (value bytes borrowed).
pub(crate) struct KeyValue<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) create_revision: u64,
    pub(crate) mod_revision: u64,
    pub(crate) value: &'a [u8],
}

const KEY_VALUE: crate::protowire::Names = &[
    (1, "key"),
    (2, "create_revision"),
    (3, "mod_revision"),
    (4, "version"),
    (5, "value"),
    (6, "lease"),
];

/// Decodes a `mvccpb.KeyValue`.
pub(crate) fn key_value(bytes: &[u8]) -> Result<KeyValue<'_>, String> {
    let mut r = Reader::new(bytes, KEY_VALUE);
    let mut kv = KeyValue {
        key: &[],
        create_revision: 0,
        mod_revision: 0,
        value: &[],
    };
    while let Some((n, wire, v)) = r.next().map_err(|e| e.to_string())? {
        let err = |e: crate::protowire::WireError| e.to_string();
        match n {
            1 => kv.key = expect_bytes("key", wire, v).map_err(err)?,
            2 => kv.create_revision = expect_varint("create_revision", wire, v).map_err(err)?,
            3 => kv.mod_revision = expect_varint("mod_revision", wire, v).map_err(err)?,
            5 => kv.value = expect_bytes("value", wire, v).map_err(err)?,
            _ => {}
        }
    }
    Ok(kv)
}

/// Splits a revision key: (main, is a tombstone).
fn revision(key: &[u8]) -> Option<(u64, bool)> {
    let tombstone = match key.len() {
        17 => false,
        18 if key[17] == b't' => true,
        _ => return None,
    };
    if key[8] != b'_' {
        return None;
    }
    let mut main = [0u8; 8];
    main.copy_from_slice(&key[..8]);
    Some((u64::from_be_bytes(main), tombstone))
}

/// Every live key of the snapshot with where its value is, in key order.
pub(crate) fn index<S: PageSource>(
    bolt: &Bolt<S>,
) -> Result<(BTreeMap<String, Live>, Counts), BoltError> {
    let bad = |m: String| BoltError::Corrupt(m);
    let bucket = bolt
        .root_bucket(KEY_BUCKET)?
        .ok_or_else(|| bad("it has no bucket \"key\": not an etcd v3 database".to_owned()))?;
    let mut latest: BTreeMap<Vec<u8>, (Option<Live>, u64)> = BTreeMap::new();
    let mut counts = Counts::default();
    bolt.walk(&bucket, &mut |rev_key, value, is_bucket, location| {
        if is_bucket {
            return Err(bad("bucket \"key\" holds a nested bucket".into()));
        }
        let (main, tombstone) = revision(rev_key).ok_or_else(|| {
            bad(format!(
                "bucket \"key\" holds {:?}, not a revision (8 bytes, '_', 8 bytes, optional 't')",
                String::from_utf8_lossy(rev_key)
            ))
        })?;
        let kv = key_value(value)
            .map_err(|e| bad(format!("revision {main}: its KeyValue is malformed: {e}")))?;
        counts.revisions += 1;
        counts.revision = counts.revision.max(main);
        let entry = latest.entry(kv.key.to_vec()).or_insert((None, 0));
        if main < entry.1 {
            return Ok(());
        }
        entry.1 = main;
        entry.0 = if tombstone {
            counts.tombstones += 1;
            None
        } else {
            Some(Live {
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision.max(main),
                location,
            })
        };
        Ok(())
    })?;
    let mut live = BTreeMap::new();
    for (key, (entry, _)) in latest {
        match entry {
            None => counts.deleted_keys += 1,
            Some(l) => {
                let key = String::from_utf8(key).map_err(|e| {
                    bad(format!(
                        "a key is not UTF-8: {:?}",
                        String::from_utf8_lossy(e.as_bytes())
                    ))
                })?;
                live.insert(key, l);
            }
        }
    }
    Ok((live, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys() {
        let mut k = 5u64.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend(0u64.to_be_bytes());
        assert_eq!(revision(&k), Some((5, false)));
        k.push(b't');
        assert_eq!(revision(&k), Some((5, true)));
        k[17] = b'x';
        assert_eq!(revision(&k), None);
        assert_eq!(revision(b"short"), None);
    }

    #[test]
    fn key_values_decode_and_name_their_errors() {
        let kv = key_value(&[0x0a, 1, b'k', 0x10, 2, 0x18, 3, 0x20, 1, 0x2a, 1, b'v']).unwrap();
        assert_eq!(
            (kv.key, kv.create_revision, kv.mod_revision, kv.value),
            (&b"k"[..], 2, 3, &b"v"[..])
        );
        assert_eq!(
            key_value(&[0x2a, 5, b'v']).err().unwrap(),
            "value: length 5 runs past the end of its message (1 bytes left)"
        );
        assert!(
            key_value(&[0x18, 0x80])
                .err()
                .unwrap()
                .contains("mod_revision: truncated varint")
        );
    }
}
