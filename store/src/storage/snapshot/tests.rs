//! The public etcd 3.4.23 snapshot (tests/vectors/etcd-snapshot-public.db,
//! every key and revision listed in its manifest) and malformed files:
//! each gives a clear error, never a panic.

use super::*;

fn vectors(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vectors")
        .join(name)
}

fn public() -> Vec<u8> {
    std::fs::read(vectors("etcd-snapshot-public.db")).expect("snapshot vector")
}

/// `db` with a fresh, matching trailer (to reach the bbolt checks).
fn with_trailer(db: &[u8]) -> Vec<u8> {
    let mut out = db.to_vec();
    out.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, db).as_ref());
    out
}

fn err(bytes: Vec<u8>) -> String {
    SnapshotEngine::from_bytes(bytes).unwrap_err().to_string()
}

#[test]
fn the_public_snapshot_holds_what_its_manifest_says() {
    let e = SnapshotEngine::open(&vectors("etcd-snapshot-public.db"), HashCheck::Require).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(vectors("etcd-snapshot-public.manifest.json")).unwrap(),
    )
    .unwrap();
    let entries = manifest["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 18);
    assert_eq!(e.info().keys, 18);
    assert!(e.info().hash_checked);
    for m in entries {
        let key = m["key"].as_str().unwrap();
        let v = e
            .get(key)
            .unwrap()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(
            hex::encode(&v.value),
            m["value_hex"].as_str().unwrap(),
            "{key}"
        );
        assert_eq!(v.mod_revision, m["mod_revision"].as_u64().unwrap(), "{key}");
        assert_eq!(
            v.create_revision,
            m["create_revision"].as_u64().unwrap(),
            "{key}"
        );
    }
    let max = entries
        .iter()
        .map(|m| m["mod_revision"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(e.revision().unwrap(), max);
    let secrets = e.list("/registry/secrets/", None, 1000).unwrap();
    assert_eq!(secrets.items.len(), 10);
    // Pages neither skip nor repeat.
    let mut seen = Vec::new();
    crate::storage::for_each(&e, "/registry/", 4, |v| {
        seen.push(v.key);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.len(), 18);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert!(e.get("/registry/secrets/none/x").unwrap().is_none());
    assert!(matches!(
        e.put("/registry/secrets/a/b", b"x", Precondition::None),
        Err(StorageError::ReadOnly(_))
    ));
    assert!(matches!(
        e.delete("/registry/secrets/a/b", Precondition::None),
        Err(StorageError::ReadOnly(_))
    ));
}

#[test]
fn damaged_files_are_refused_clearly() {
    let good = public();
    assert!(SnapshotEngine::from_bytes(good.clone()).is_ok());
    assert!(err(Vec::new()).contains("the file is empty"));
    assert!(err(good[..good.len() - 1].to_vec()).contains("no SHA-256 trailer"));
    assert!(err(good[..good.len() / 2].to_vec()).contains("no SHA-256 trailer"));
    let mut flipped = good.clone();
    flipped[5000] ^= 0x01;
    assert!(err(flipped).contains("the SHA-256 trailer does not match the data"));
    let random: Vec<u8> = (0..good.len())
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect();
    assert!(err(random).contains("trailer does not match"));
    // Random bytes with a matching trailer reach the bbolt checks.
    let random: Vec<u8> = (0..8192u32)
        .map(|i| i.wrapping_mul(2_654_435_761) as u8)
        .collect();
    assert!(
        err(with_trailer(&random)).contains("neither meta page is valid"),
        "{}",
        err(with_trailer(&random))
    );
}

#[test]
fn malformed_pages_are_named() {
    let db = public();
    let db = &db[..db.len() - 32];
    let page = 4096usize;
    let high_water = u64::from_le_bytes(db[16 + 40..16 + 48].try_into().unwrap()) as usize;
    // Each page in turn gets its flags, its count, its overflow and its id
    // broken: every case is an error (or, for pages nothing reads, fine),
    // never a panic.
    let mut errors = std::collections::BTreeSet::new();
    for p in 2..high_water {
        for (at, value) in [
            (8usize, 0x7fu8),
            (10, 0xff),
            (12, 0x7f),
            (0, 0x55),
            (16, 0xff),
            (20, 0xff),
        ] {
            let mut bad = db.to_vec();
            bad[p * page + at] = value;
            bad[p * page + at + 1] = value;
            if let Err(e) = SnapshotEngine::from_bytes(with_trailer(&bad)) {
                errors.insert(
                    e.to_string()
                        .split(": ")
                        .nth(2)
                        .unwrap_or("")
                        .split(' ')
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        }
    }
    assert!(!errors.is_empty());
    // Both meta pages broken.
    let mut bad = db.to_vec();
    bad[16] ^= 0xff;
    bad[page + 16] ^= 0xff;
    assert!(err(with_trailer(&bad)).contains("neither meta page is valid (page 0: magic"));
    // One meta page broken: the other is used.
    let mut one = db.to_vec();
    one[16 + 30] ^= 0xff;
    assert!(SnapshotEngine::from_bytes(with_trailer(&one)).is_ok());
    // A database cut short of its high-water mark.
    assert!(err(with_trailer(&db[..page * 3])).contains("truncated?"));
}
