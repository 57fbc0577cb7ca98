//! `kms-plugin bench` against the running binary: every phase completes with
//! real calls and no errors, the JSON report holds the same figures, the SVG
//! beside it is a well-formed picture of them, and bad flags are refused
//! with a message naming them.

use e2e::{Plugin, init_ring, kms};

#[test]
fn bench_reports_every_phase_and_refuses_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let sock = dir.path().join("kms.sock");
    let mut p = Plugin::start(&ring, &sock, &dir.path().join("log"), &[]);
    let json = dir.path().join("bench.json");
    let ep = p.endpoint();
    let json_arg = json.to_str().unwrap();
    let common = [
        "bench",
        "--listen-addr",
        ep.as_str(),
        "--concurrency",
        "1,3",
        "--duration",
        "300ms",
        "--warmup",
        "50ms",
    ];

    for threads in ["1", "2"] {
        let mut args = common.to_vec();
        args.extend(["--client-threads", threads, "--json", json_arg]);
        let out = kms(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains("ops/s"), "{stdout}");

        let report: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let phases: Vec<(String, u64)> = report
            .iter()
            .map(|r| {
                (
                    r["op"].as_str().unwrap().to_owned(),
                    r["callers"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            phases,
            [
                ("encrypt", 1),
                ("decrypt", 1),
                ("encrypt", 3),
                ("decrypt", 3)
            ]
            .map(|(o, c)| (o.to_owned(), c))
        );
        for r in &report {
            assert!(r["calls"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["errors"].as_u64().unwrap(), 0, "{r}");
            let (p50, p99) = (r["p50_us"].as_f64().unwrap(), r["p99_us"].as_f64().unwrap());
            assert!(p50 > 0.0 && p99 >= p50, "{r}");
            // The table line shows the same call rate as the JSON.
            let line = format!("{:.0}", r["ops_per_sec"].as_f64().unwrap());
            assert!(stdout.contains(&line), "{line} missing from\n{stdout}");
        }
        // The picture, by default beside the JSON.
        let svg = dir.path().join("bench.svg");
        assert!(
            stdout.contains(&format!("plot: {}", svg.display())),
            "{stdout}"
        );
        check_svg(&std::fs::read_to_string(&svg).unwrap(), &["1", "3"]);
        std::fs::remove_file(&svg).unwrap();
    }

    // --svg names the file; without --json it is the only file written.
    let named = dir.path().join("named.svg");
    let mut args = common.to_vec();
    args.extend(["--svg", named.to_str().unwrap()]);
    let out = kms(&args);
    assert!(out.status.success(), "{out:?}");
    check_svg(&std::fs::read_to_string(&named).unwrap(), &["1", "3"]);
    let out = kms(&["bench", "--svg", "/nonexistent/dir/x.svg"]
        .iter()
        .chain(&common[1..])
        .copied()
        .collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir/x.svg"),
        "{out:?}"
    );

    for (flag, value, needle) in [
        ("--client-threads", "0", "client-threads=0"),
        ("--concurrency", "0", "concurrency"),
        ("--duration", "soon", "duration"),
        ("--warmup", "a while", "warmup"),
    ] {
        // The common flags without the one under test, then the bad value.
        let mut args = vec!["bench", "--listen-addr", ep.as_str()];
        for (f, v) in [
            ("--concurrency", "1"),
            ("--duration", "300ms"),
            ("--warmup", "50ms"),
        ] {
            if f != flag {
                args.extend([f, v]);
            }
        }
        args.extend([flag, value]);
        let out = kms(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} accepted: {out:?}");
        assert!(stderr.contains(needle), "{flag} {value}: {stderr}");
    }

    // The bench against a socket nobody serves fails with the path.
    p.terminate();
    let out = kms(&common);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kms.sock"),
        "{out:?}"
    );
}

/// `svg` is a well-formed SVG document whose texts name both ops, their
/// p50 and p99 series and every concurrency in `callers`.
fn check_svg(svg: &str, callers: &[&str]) {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}\n{svg}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{svg}");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    assert!(root.attribute("width").is_some() && root.attribute("viewBox").is_some());
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .collect();
    for want in [
        "encrypt",
        "decrypt",
        "encrypt p50",
        "encrypt p99",
        "decrypt p50",
        "decrypt p99",
    ]
    .iter()
    .chain(callers)
    {
        assert!(
            texts.iter().any(|t| t == want),
            "no text {want:?} in the SVG: {texts:?}"
        );
    }
    assert!(texts.iter().any(|t| t.contains("throughput")), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("latency")), "{texts:?}");
    // Lines were drawn: at least one polyline per series.
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count();
    assert!(lines >= 6, "{lines} polylines");
}
