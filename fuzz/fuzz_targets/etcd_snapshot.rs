//! An etcd snapshot's bbolt database and MVCC records on arbitrary bytes
//! (the SHA-256 trailer is not what is fuzzed: a bare database is opened):
//! opening, listing every key and reading every value must never panic,
//! only fail with an error, and a listing must hold what `get` returns.
//!
//! Seeds: the public etcd 3.4.23 snapshot (tests/vectors), its trailer cut
//! off, so mutations reach the meta pages, branch and leaf pages, overflow
//! and the KeyValue records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_store::storage::StorageEngine;
use secret_store::storage::snapshot::SnapshotEngine;

fuzz_target!(|data: &[u8]| {
    let Ok(engine) = SnapshotEngine::from_db_bytes(data.to_vec()) else {
        return;
    };
    let Ok(page) = engine.list("", None, 10_000) else {
        return;
    };
    for item in page.items {
        if let Ok(Some(again)) = engine.get(&item.key) {
            assert_eq!(again.value, item.value, "get and list disagree");
            assert_eq!(again.mod_revision, item.mod_revision);
        }
    }
    let _ = engine.revision();
});
