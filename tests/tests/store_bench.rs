//! `secret-store bench` on RocksDB with a real (throwaway) kms-plugin: the
//! side-by-side table, every Secret written and read back per provider and
//! phase, the plugin called only on a cold cache, the per-stage breakdown,
//! the JSON report and its SVG picture, and bad flags refused with a
//! message naming them.

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

    // The per-stage breakdown: a write and two reads per provider, each
    // stage's mean time, the stages no more than the whole, and the kms v2
    // stages only where kms v2 runs them.
    assert!(table.contains("per-stage breakdown"), "{table}");
    let stages = doc["stages"].as_array().unwrap();
    let mut seen = Vec::new();
    for f in stages {
        let (prov, pass) = (
            f["provider"].as_str().unwrap(),
            f["phase"].as_str().unwrap(),
        );
        seen.push(format!("{prov}/{pass}"));
        assert_eq!(f["ops"], 90, "{f}");
        let total = f["total_ns"].as_f64().unwrap();
        let stage = |name: &str| -> f64 {
            f["stages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s[0] == name)
                .unwrap_or_else(|| panic!("no stage {name}: {f}"))[1]
                .as_f64()
                .unwrap()
        };
        let names = [
            "engine",
            "transform",
            "validate",
            "encode",
            "decode",
            "parse",
            "cache",
            "derive",
            "aead",
        ];
        let sum: f64 = names.iter().map(|n| stage(n)).sum();
        assert!(total > 0.0 && sum <= total * 1.0001, "{f}");
        assert!(stage("engine") > 0.0, "{f}");
        if pass == "write" {
            assert!(stage("validate") > 0.0 && stage("encode") > 0.0, "{f}");
            assert_eq!(stage("decode"), 0.0, "{f}");
        } else {
            assert!(stage("decode") > 0.0, "{f}");
        }
        if prov == "kms-v2" {
            assert!(stage("derive") > 0.0 && stage("aead") > 0.0, "{f}");
            if pass != "write" {
                assert!(stage("parse") > 0.0, "{f}");
            }
            // Reads of an earlier seed's values look the seed up; reads of
            // the current seed's values do not.
            assert_eq!(pass == "read-warm", stage("cache") > 0.0, "{f}");
        } else {
            for n in ["parse", "cache", "derive"] {
                assert_eq!(stage(n), 0.0, "{n}: {f}");
            }
        }
    }
    let want: Vec<String> = ["identity", "aesgcm", "kms-v2"]
        .iter()
        .flat_map(|p| ["write", "read-warm", "read-current"].map(|ph| format!("{p}/{ph}")))
        .collect();
    assert_eq!(seen, want);

    // The picture beside the JSON names every provider, phase and stage.
    let svg = std::fs::read_to_string(dir.path().join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    let texts: Vec<&str> = svg.lines().map(str::trim).collect();
    for want in [
        "identity",
        "aesgcm",
        "kms-v2",
        "write",
        "read-cold",
        "read-warm",
        "engine",
        "derive",
        "aead",
        "kms-v2 read",
    ] {
        assert!(texts.contains(&want), "{want} missing from the SVG");
    }

    // The bench cleans up its databases.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "bench.json" && n != "bench.svg")
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
