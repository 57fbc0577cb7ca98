//! deploy/monitoring/ as Prometheus and Grafana would take it: the rules
//! pass `promtool check rules` and the unit tests of
//! kms-plugin.rules.test.yaml (each alert shown firing and not firing), the
//! PrometheusRule is generated from the plain rules file, every alert names
//! a runbook section that exists in the README, and every metric the rules
//! and the dashboard's queries use is one a running plugin or a real
//! `secret-store verify --metrics-file` exports. The textfile metrics show
//! a rotation's stale values until a rewrap.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{Plugin, bin, init_ring, workspace};
use serde_json::Value;

fn monitoring() -> PathBuf {
    workspace().join("deploy/monitoring")
}

/// promtool, from Debian's `prometheus` package: a missing one fails.
fn promtool() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("promtool");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "promtool is not installed: run scripts/install-deps (Debian's `prometheus` package ships it)"
    );
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rules_file() -> Value {
    yaml(&monitoring().join("kms-plugin.rules.yaml"))
}

fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("kms-plugin.dashboard.json")).unwrap(),
    )
    .unwrap()
}

/// Every rule of the rules file.
fn rules() -> Vec<Value> {
    rules_file()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = promtool();
    let o = Command::new(&promtool)
        .args(["check", "rules", "kms-plugin.rules.yaml"])
        .current_dir(monitoring())
        .output()
        .unwrap();
    assert!(o.status.success(), "promtool check rules: {}", text(&o));
    assert!(text(&o).contains("SUCCESS"), "{}", text(&o));

    // The PrometheusRule's spec is a rules file too.
    let dir = tempfile::tempdir().unwrap();
    let spec = yaml(&monitoring().join("kms-plugin.prometheusrule.yaml"))["spec"].clone();
    let from_manifest = dir.path().join("from-prometheusrule.yaml");
    std::fs::write(&from_manifest, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    let o = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&from_manifest)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the PrometheusRule's spec: {}",
        text(&o)
    );

    let o = Command::new(&promtool)
        .args(["test", "rules", "kms-plugin.rules.test.yaml"])
        .current_dir(monitoring())
        .output()
        .unwrap();
    assert!(o.status.success(), "promtool test rules: {}", text(&o));
    assert!(text(&o).contains("SUCCESS"), "{}", text(&o));
}

#[test]
fn prometheusrule_is_generated_from_the_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("generated.yaml");
    let o = Command::new(monitoring().join("generate-prometheusrule"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let checked_in = monitoring().join("kms-plugin.prometheusrule.yaml");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&checked_in).unwrap(),
        "kms-plugin.prometheusrule.yaml is not what deploy/monitoring/generate-prometheusrule makes of kms-plugin.rules.yaml: run it"
    );
    let manifest = yaml(&checked_in);
    assert_eq!(manifest["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(manifest["kind"], "PrometheusRule");
    assert_eq!(manifest["spec"]["groups"], rules_file()["groups"]);
}

/// GitHub's anchor of a heading: lower case, spaces to dashes, punctuation
/// other than dashes and underscores dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_names_a_readme_section_and_is_tested_firing_and_silent() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    assert!(anchors.contains("recover"), "{anchors:?}");

    let tests = yaml(&monitoring().join("kms-plugin.rules.test.yaml"));
    // alertname -> (tested silent, tested firing)
    let mut tested: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for t in tests["tests"].as_array().unwrap() {
        for case in t["alert_rule_test"].as_array().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let fires = !case["exp_alerts"].as_array().unwrap().is_empty();
            let e = tested.entry(name).or_default();
            if fires {
                e.1 = true;
            } else {
                e.0 = true;
            }
        }
    }

    let all = rules();
    let alerts: Vec<&Value> = all.iter().filter(|r| r["alert"].is_string()).collect();
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    for a in alerts {
        let name = a["alert"].as_str().unwrap();
        let ann = &a["annotations"];
        let url = ann["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no runbook_url"));
        let section = url
            .strip_prefix("README.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not a README.md section"));
        assert!(
            anchors.contains(section),
            "{name}: README.md has no section #{section}"
        );
        let description = ann["description"].as_str().unwrap();
        assert!(
            description.contains("README.md \""),
            "{name}: the description names no README section: {description}"
        );
        assert!(ann["summary"].is_string(), "{name}: no summary");
        assert!(a["labels"]["severity"].is_string(), "{name}: no severity");
        assert_eq!(
            tested.get(name),
            Some(&(true, true)),
            "{name}: kms-plugin.rules.test.yaml must show it both silent and firing"
        );
    }
}

/// The metric names a PromQL expression reads (series selectors), leaving
/// out functions, keywords, label names of by/without/on/ignoring/group_*
/// and anything inside strings, label matchers and ranges.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Grafana's label_values(METRIC, LABEL) names one metric.
    if let Some(args) = expr
        .trim()
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let first = args.split(',').next().unwrap().trim();
        return metric_names(first);
    }
    let mut plain = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_string = false;
    let mut prev = ' ';
    for c in expr.chars() {
        if in_string {
            if c == '"' && prev != '\\' {
                in_string = false;
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            c => plain.push(c),
        }
        if matches!(c, '{' | '[') {
            plain.push(' ');
        }
        prev = c;
    }
    // Aggregations take their modifier before the parenthesis (sum by (x) (...)).
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const KEYWORDS: [&str; 12] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
    ];
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            if KEYWORDS.contains(&word.as_str()) {
                // The label list of a grouping or matching modifier.
                skip_group = word != "and" && word != "or" && word != "unless" && word != "bool";
            } else if !call && !skip_group && !AGGREGATIONS.contains(&word.as_str()) {
                names.insert(word);
            }
            continue;
        }
        if c.is_ascii_digit() {
            // Numbers, durations (5m), exponents.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if c == ')' {
            skip_group = false;
        }
        if c == '$' {
            // A Grafana variable outside a string ($__range).
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (instance, op) (rate(a_total{op=~"x|y",le=~"3(\\.0)?"}[5m])) / on (instance) group_left (op) b > 6 * 3600"#
        ),
        ["a_total", "b"]
    );
    assert_eq!(
        names("count by (cluster) (count by (cluster, h) (m_info == 1)) > 1 unless c:rec"),
        ["c:rec", "m_info"]
    );
    assert_eq!(
        names("label_values(kms_plugin_healthy, instance)"),
        ["kms_plugin_healthy"]
    );
    assert_eq!(
        names("time() - max(max_over_time(x[7d])) > 1e3 and bool y offset 5m"),
        ["x", "y"]
    );
}

/// Every PromQL expression of the dashboard: panel targets, annotation
/// queries and template variable queries.
fn dashboard_exprs(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(s)) => out.push(s.clone()),
                        ("query", Value::Object(q)) => {
                            if let Some(Value::String(s)) = q.get("query") {
                                out.push(s.clone());
                            }
                        }
                        ("definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(d, &mut out);
    out
}

/// The sample names an exposition (Prometheus text or OpenMetrics) holds,
/// from its `# TYPE` lines (a family with no series yet still counts):
/// counters as `_total`, histograms as `_bucket`, `_sum` and `_count`.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in exposition.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => {
                let base = name.strip_suffix("_total").unwrap_or(name);
                names.insert(format!("{base}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            "info" => {
                names.insert(format!("{name}_info"));
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

fn enc_config(dir: &Path, sock: &Path) -> PathBuf {
    let p = dir.join("enc.yaml");
    std::fs::write(
        &p,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms:\n      apiVersion: v2\n      name: e2e-kms\n      endpoint: unix://{}\n      timeout: 3s\n  - identity: {{}}\n",
            sock.display()
        ),
    )
    .unwrap();
    p
}

fn store(dir: &Path, cfg: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(bin("secret-store"))
        .env("SECRET_STORE_DB", dir.join("db"))
        .env("SECRET_STORE_ENCRYPTION_CONFIG", cfg)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = c.stdin.take().unwrap();
    if let Some(s) = stdin {
        i.write_all(s.as_bytes()).unwrap();
    }
    drop(i);
    c.wait_with_output().unwrap()
}

/// The value of an unlabelled sample `name` in an exposition.
fn sample(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{exposition}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn rules_and_dashboard_use_only_exported_metrics_and_verify_reports_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_ring(&ring, &[]);
    let sock = dir.path().join("kms.sock");
    let p = Plugin::start(&ring, &sock, &dir.path().join("plugin.log"), &[]);
    let port = p.health_port.unwrap();

    // A Secret wrapped with the first key, then a rotation the plugin sees.
    let cfg = enc_config(dir.path(), &sock);
    let manifest = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: one\nstringData:\n  v: x\n";
    let o = store(dir.path(), &cfg, &["apply", "-f", "-"], Some(manifest));
    assert!(o.status.success(), "{}", text(&o));
    let key = e2e::rotate(&ring);
    let t = Instant::now();
    let metrics = loop {
        let (code, body) = e2e::http_get(port, "/metrics");
        assert_eq!(code, 200);
        if body.contains("kms_plugin_key_rotations_total 1") {
            break body;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the plugin never counted the rotation to {key}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // verify after the rotation: one stale value, in the textfile.
    let prom = dir.path().join("textfile/secret-store-verify.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let prom_arg = prom.to_str().unwrap();
    let o = store(
        dir.path(),
        &cfg,
        &["verify", "--metrics-file", prom_arg],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let textfile = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(sample(&textfile, "secret_store_verify_stale_values"), 1.0);
    assert_eq!(sample(&textfile, "secret_store_verify_failed_values"), 0.0);
    assert_eq!(sample(&textfile, "secret_store_verify_checked_values"), 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let at = sample(&textfile, "secret_store_verify_last_run_timestamp_seconds");
    assert!((now - at).abs() < 60.0, "{at} is not now ({now})");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777,
        0o644,
        "node_exporter must be able to read it"
    );
    // promtool reads it as node_exporter's textfile collector would.
    let mut lint = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(textfile.as_bytes())
        .unwrap();
    let o = lint.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics: {}\n{textfile}",
        text(&o)
    );

    // After a rewrap, verify reports nothing stale: what clears the alert.
    let o = store(dir.path(), &cfg, &["rewrap"], None);
    assert!(o.status.success(), "{}", text(&o));
    let o = store(
        dir.path(),
        &cfg,
        &["verify", "--metrics-file", prom_arg],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let textfile = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(sample(&textfile, "secret_store_verify_stale_values"), 0.0);

    let mut exported = exported_names(&metrics);
    exported.extend(exported_names(&textfile));
    for want in [
        "kms_plugin_requests_total",
        "kms_plugin_request_duration_seconds_bucket",
        "kms_plugin_healthy",
        "secret_store_verify_stale_values",
    ] {
        assert!(exported.contains(want), "{want} not in {exported:?}");
    }
    let recorded: BTreeSet<String> = rules()
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect();

    let mut used = BTreeMap::new();
    for r in rules() {
        let what = r["alert"]
            .as_str()
            .or(r["record"].as_str())
            .unwrap()
            .to_owned();
        for n in metric_names(r["expr"].as_str().unwrap()) {
            used.entry(n).or_insert_with(Vec::new).push(what.clone());
        }
    }
    let exprs = dashboard_exprs(&dashboard());
    assert!(exprs.len() >= 15, "{exprs:?}");
    for e in &exprs {
        for n in metric_names(e) {
            used.entry(n)
                .or_insert_with(Vec::new)
                .push(format!("dashboard: {e}"));
        }
    }
    let unknown: Vec<String> = used
        .iter()
        .filter(|(n, _)| !exported.contains(*n) && !recorded.contains(*n))
        .map(|(n, by)| format!("{n} (used by {})", by.join("; ")))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics nothing exports:\n  {}\nexported: {exported:?}",
        unknown.join("\n  ")
    );
    // The dashboard shows the drift the alerts fire on.
    for n in [
        "kms_plugin_active_key_info",
        "kms_plugin_ring_info",
        "kms_plugin_staged_keys",
        "secret_store_verify_stale_values",
    ] {
        assert!(
            used[n].iter().any(|u| u.starts_with("dashboard")),
            "the dashboard does not show {n}"
        );
    }
    drop(p);
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses them as recording rules, Grafana's variables
    // replaced by what they stand for.
    let exprs = dashboard_exprs(&dashboard());
    let rules: Vec<Value> = exprs
        .iter()
        .filter(|e| !e.starts_with("label_values("))
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": e})
        })
        .collect();
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&f, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let o = Command::new(promtool())
        .arg("check")
        .arg("rules")
        .arg(&f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Every panel but rows queries something, and says what it shows.
    for p in dashboard()["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        assert!(!p["targets"].as_array().unwrap().is_empty(), "{p}");
        assert!(
            p["description"].is_string(),
            "{}: no description",
            p["title"]
        );
    }
}
