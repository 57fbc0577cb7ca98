//! What `verify` hands to automation: its report as one JSON document
//! (`--output json`, the facts the lines show) and as Prometheus metrics in
//! node_exporter's textfile format (`--metrics-file`), which is how the
//! alert on a rotation never followed by a rewrap sees stale values
//! (deploy/monitoring/).

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::storage::snapshot::SnapshotInfo;
use crate::verify::VerifyReport;

/// How `verify` prints what it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Output {
    /// Lines for a person.
    #[default]
    Table,
    /// Only one JSON document on stdout, with the same facts.
    Json,
}

/// The facts of the snapshot line, for the JSON document.
pub(super) fn snapshot_facts(i: &SnapshotInfo) -> serde_json::Value {
    serde_json::json!({
        "path": i.path.display().to_string(),
        "bytes": i.bytes,
        "hash_checked": i.hash_checked,
        "revision": i.revision,
        "keys": i.keys,
        "deleted_keys": i.deleted_keys,
        "revisions": i.revisions,
    })
}

/// The JSON document of `verify --output json`: the report, the rate the
/// summary line prints, and the snapshot read (or null).
pub(super) fn json(
    r: &VerifyReport,
    snapshot: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut doc = serde_json::to_value(r)?;
    if let Some(o) = doc.as_object_mut() {
        o.insert("per_second".into(), serde_json::json!(r.per_second()));
        o.insert(
            "snapshot".into(),
            snapshot.unwrap_or(serde_json::Value::Null),
        );
    }
    Ok(doc)
}

/// The metrics of a finished verify, in the Prometheus text format.
pub(super) fn metrics_text(r: &VerifyReport, finished: SystemTime) -> String {
    let at = finished
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut s = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        s.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    gauge(
        "secret_store_verify_checked_values",
        "Stored values the last secret-store verify read.",
        r.checked.to_string(),
    );
    gauge(
        "secret_store_verify_ok_values",
        "Values that decrypted and decoded as the Secret their key names.",
        r.ok.to_string(),
    );
    gauge(
        "secret_store_verify_stale_values",
        "Values a rewrap would rewrite: not written by the first provider with its current key (e.g. still wrapped by the KEK before a rotation).",
        r.stale.to_string(),
    );
    gauge(
        "secret_store_verify_failed_values",
        "Values that did not decrypt, decode or match their key.",
        r.failed.len().to_string(),
    );
    gauge(
        "secret_store_verify_duration_seconds",
        "Wall time of the last verify.",
        format!("{:.3}", r.seconds),
    );
    gauge(
        "secret_store_verify_last_run_timestamp_seconds",
        "When the last verify finished (Unix time).",
        format!("{at:.3}"),
    );
    s
}

/// Writes the metrics of `r` to `path` for node_exporter's textfile
/// collector: through a temporary file in the same directory, renamed over
/// `path`, so the collector never reads half a file. Mode 0644: the
/// collector runs as another user, and the file holds counts only.
pub(super) fn write_metrics(path: &Path, r: &VerifyReport) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let text = metrics_text(r, SystemTime::now());
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("metrics-file={} names no file", path.display()))?;
    // Not ending in .prom: the collector skips it.
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("writing metrics-file={}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> VerifyReport {
        VerifyReport {
            checked: 5,
            ok: 4,
            stale: 3,
            failed: vec![("/registry/secrets/a/b".into(), "decryption failed".into())],
            seconds: 0.25,
            ..Default::default()
        }
    }

    #[test]
    fn metrics_carry_the_counts_and_the_time() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let text = metrics_text(&report(), t);
        for want in [
            "secret_store_verify_checked_values 5\n",
            "secret_store_verify_ok_values 4\n",
            "secret_store_verify_stale_values 3\n",
            "secret_store_verify_failed_values 1\n",
            "secret_store_verify_duration_seconds 0.250\n",
            "secret_store_verify_last_run_timestamp_seconds 1700000000.000\n",
            "# TYPE secret_store_verify_stale_values gauge\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert!(
            !text.contains("decryption failed"),
            "a reason leaked: {text}"
        );
    }

    #[test]
    fn json_holds_the_report_and_the_rate() {
        let doc = json(&report(), None).unwrap();
        assert_eq!(doc["stale"], 3);
        assert_eq!(doc["failed"][0][0], "/registry/secrets/a/b");
        assert_eq!(doc["per_second"], 20.0);
        assert!(doc["snapshot"].is_null());
    }

    #[test]
    fn metrics_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verify.prom");
        std::fs::write(&path, "old").unwrap();
        write_metrics(&path, &report()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# HELP"), "{text}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left");
        assert!(write_metrics(&dir.path().join("no/such/dir.prom"), &report()).is_err());
    }
}
