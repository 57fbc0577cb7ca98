//! `secret-store bench` on RocksDB with a real (throwaway) kms-plugin: the
//! side-by-side table, every Secret written and read back per provider and
//! phase, the plugin called only on a cold cache, the JSON report, and bad
//! flags refused with a message naming them.

use std::process::{Command, Output};

use e2e::bin;

fn store(args: &[&str]) -> Output {
    // The bench finds kms-plugin next to secret-store, as installed.
    bin("kms-plugin");
    Command::new(bin("secret-store"))
        .env_remove("SECRET_STORE_ENCRYPTION_CONFIG")
        .env_remove("SECRET_STORE_DB")
        .env_remove("SECRET_STORE_ETCD_ENDPOINTS")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bench_compares_providers_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = store(&[
        "bench",
        "--count",
        "90",
        "--size",
        "300",
        "--writers",
        "3",
        "--rounds",
        "4",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("rocksdb "))
        .collect();
    assert_eq!(rows.len(), 9, "{table}");
    assert!(table.contains("kms-v2 read-warm rate is"), "{table}");

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["rounds"], 4);
    let phases = doc["phases"].as_array().unwrap();
    let mut seen = Vec::new();
    for p in phases {
        let (prov, phase) = (
            p["provider"].as_str().unwrap(),
            p["phase"].as_str().unwrap(),
        );
        seen.push(format!("{prov}/{phase}"));
        assert_eq!(p["ops"], 90, "{p}");
        assert!(p["ops_per_sec"].as_f64().unwrap() > 0.0, "{p}");
        assert!(
            p["p99_us"].as_f64().unwrap() >= p["p50_us"].as_f64().unwrap(),
            "{p}"
        );
        let calls = p["plugin_calls"].as_u64().unwrap();
        match (prov, phase) {
            // A fresh cache unwraps the seed once; warm reads never call.
            ("kms-v2", "read-cold") => assert!((1..=3).contains(&calls), "{p}"),
            _ => assert_eq!(calls, 0, "{p}"),
        }
        let crypto = p["crypto_share"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&crypto), "{p}");
        if prov != "identity" {
            assert!(crypto > 0.0, "{p}");
        }
    }
    let want: Vec<String> = ["identity", "aesgcm", "kms-v2"]
        .iter()
        .flat_map(|p| ["write", "read-cold", "read-warm"].map(|ph| format!("{p}/{ph}")))
        .collect();
    assert_eq!(seen, want);
    // The bench cleans up its databases.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "bench.json")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bench_refuses_bad_flags() {
    for (args, needle) in [
        (&["--writers", "0"][..], "writers"),
        (&["--count", "0"][..], "count"),
        (&["--size", "2000000"][..], "1 MiB"),
        (&["--providers", "identity,rot13"][..], "rot13"),
        (&["--engine", "cassandra"][..], "cassandra"),
        (&["--rounds", "many"][..], "rounds"),
    ] {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        let o = store(&all);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
