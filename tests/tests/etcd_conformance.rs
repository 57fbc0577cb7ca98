//! The storage-engine conformance suite (one suite, every engine): here on
//! real etcd (a fresh single-member cluster per check, and a three-member
//! one), beside RocksDB so both engines are seen passing the same checks.

use std::cell::RefCell;
use std::time::Duration;

use e2e::etcd::Cluster;
use secret_store::storage::StorageEngine;
use secret_store::storage::conformance;
use secret_store::storage::etcd::{EtcdConfig, EtcdEngine, split_endpoints};
use secret_store::storage::rocks::RocksEngine;

fn engine(c: &Cluster) -> EtcdEngine {
    let cfg = EtcdConfig::new(
        split_endpoints(&c.endpoints()),
        None,
        Duration::from_secs(10),
    )
    .unwrap();
    EtcdEngine::open(&cfg).unwrap()
}

#[test]
fn conformance_on_etcd() {
    let clusters = RefCell::new(Vec::new());
    conformance::run_all(&|| {
        let c = Cluster::start(1);
        let e = engine(&c);
        clusters.borrow_mut().push(c);
        Box::new(e) as Box<dyn StorageEngine>
    });
}

#[test]
fn conformance_on_a_three_member_etcd_cluster() {
    let clusters = RefCell::new(Vec::new());
    conformance::run_all(&|| {
        let c = Cluster::start(3);
        let e = engine(&c);
        clusters.borrow_mut().push(c);
        Box::new(e) as Box<dyn StorageEngine>
    });
}

#[test]
fn conformance_on_rocksdb() {
    let dirs = RefCell::new(Vec::new());
    conformance::run_all(&|| {
        let d = tempfile::tempdir().unwrap();
        let e = RocksEngine::open(d.path(), false).unwrap();
        dirs.borrow_mut().push(d);
        Box::new(e) as Box<dyn StorageEngine>
    });
}

/// What etcd itself says about a key the engine wrote: the same bytes, and
/// the revisions the engine reported.
#[test]
fn keys_values_and_revisions_are_etcds_own() {
    let c = Cluster::start(1);
    let e = engine(&c);
    let value: Vec<u8> = (0..=255u8).collect();
    let key = "/registry/secrets/default/raw";
    let rev = e
        .put(key, &value, secret_store::storage::Precondition::Absent)
        .unwrap();
    let out = c.etcdctl(&["get", key, "--print-value-only"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // etcdctl prints the value and a newline.
    assert_eq!(&out.stdout[..out.stdout.len() - 1], &value[..]);
    let out = c.etcdctl(&["get", key, "-w", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["kvs"][0]["mod_revision"].as_u64(), Some(rev));
    assert_eq!(doc["kvs"][0]["create_revision"].as_u64(), Some(rev));
    assert_eq!(
        doc["header"]["revision"].as_u64(),
        Some(e.revision().unwrap())
    );
}
