//! rewrap and verify.

use std::process::ExitCode;

use clap::Args;

use std::sync::Arc;

use super::GlobalArgs;
use super::open::{Access, engine_spec, open_store, store_on};
use super::verify_output::{self, Output};
use crate::progress::Bar;
use crate::storage::EngineSpec;
use crate::storage::snapshot::SnapshotEngine;

/// `rewrap` flags.
#[derive(Args, Debug)]
pub struct RewrapArgs {
    /// Only count what would be rewritten.
    #[arg(long)]
    dry_run: bool,
}

/// `verify` flags.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also print the report as JSON, after the lines (for automation,
    /// prefer --output json: the JSON alone).
    #[arg(long)]
    json: bool,
    /// table: lines for a person; json: only one JSON document on stdout,
    /// with the same facts (counts, failures, formats, keys, snapshot).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Also write the counts (checked, ok, stale, failed, when) as Prometheus
    /// metrics in node_exporter's textfile format to FILE (e.g.
    /// /var/lib/node_exporter/textfile/secret-store-verify.prom), replaced
    /// whole: what the rewrap alert of deploy/monitoring/ reads.
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<std::path::PathBuf>,
    /// One line per key (provider, storage format, revision), not only the failures.
    /// The default with --etcd-snapshot.
    #[arg(long)]
    per_key: bool,
}

pub(super) fn rewrap(g: &GlobalArgs, a: RewrapArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g, Access::Write)?;
    let bar = Bar::new("rewrap");
    let options = crate::rewrap::RewrapOptions {
        dry_run: a.dry_run,
        convert_to: g.storage_media_type,
    };
    let r = crate::rewrap::rewrap_with(&store, options, &bar)?;
    bar.0.finish_and_clear();
    let target = match g.storage_media_type {
        Some(f) => format!(", as {f}"),
        None => String::new(),
    };
    if a.dry_run {
        println!(
            "dry run: {} of {} secrets are stale and would be rewrapped with {} (the first provider){target}",
            r.stale,
            r.scanned,
            store.chain().describe_writer()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "rewrapped {} of {} stale secrets{target} ({} scanned; {} converted to another storage format, {} rewritten concurrently by others, {} deleted meanwhile, {} conflicts retried, {} refused)",
        r.rewrapped,
        r.stale,
        r.scanned,
        r.converted,
        r.rewritten_by_others,
        r.vanished,
        r.retries,
        r.refused.len()
    );
    if r.scanned > r.stale && g.storage_media_type.is_none() {
        // Current values were judged by their envelopes alone: a value under
        // the current key name that does not open (a wrong key with the right
        // name, a damaged value) is only found by decrypting it.
        println!(
            "the {} values already current were judged by their envelopes, not decrypted: `secret-store verify` checks that every value opens",
            r.scanned - r.stale
        );
    }
    for (k, e) in &r.refused {
        eprintln!(
            "REFUSED {k}: {e}: left as it is, not rewrapped (restore the Secret from a backup or delete it; `verify` lists it too)"
        );
    }
    for (k, e) in &r.failed {
        eprintln!("FAILED {k}: {e}");
    }
    Ok(if r.failed.is_empty() && r.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FINDINGS)
    })
}

pub(super) fn verify(g: &GlobalArgs, a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut snapshot_facts = None;
    let (store, per_key) = match &g.etcd_snapshot {
        Some(_) => {
            let EngineSpec::Snapshot { path, check } = engine_spec(g)? else {
                anyhow::bail!("--etcd-snapshot names no snapshot");
            };
            let snapshot = SnapshotEngine::open(&path, check)?;
            let i = snapshot.info();
            snapshot_facts = Some(verify_output::snapshot_facts(i));
            if a.output == Output::Table {
                println!(
                    "snapshot {}: {} bytes, SHA-256 {}, revision {}, {} keys ({} deleted keys skipped, {} revisions kept)",
                    i.path.display(),
                    i.bytes,
                    if i.hash_checked { "ok" } else { "not checked" },
                    i.revision,
                    i.keys,
                    i.deleted_keys,
                    i.revisions
                );
            }
            (store_on(g, Arc::new(snapshot), Access::Read)?, true)
        }
        None => (open_store(g, Access::Read)?, a.per_key),
    };
    let bar = Bar::new("verify");
    let options = crate::verify::VerifyOptions { per_key };
    let r = crate::verify::verify_with(&store, options, &bar)?;
    bar.0.finish_and_clear();
    let verdict = if r.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FINDINGS)
    };
    if let Some(path) = &a.metrics_file {
        verify_output::write_metrics(path, &r)?;
    }
    if a.output == Output::Json {
        let doc = verify_output::json(&r, snapshot_facts)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(verdict);
    }
    for k in &r.keys {
        match &k.error {
            None => println!(
                "ok     {} rev {} {} {}{}",
                k.key,
                k.mod_revision,
                k.provider,
                k.format.unwrap_or("?"),
                if k.stale { " stale" } else { "" }
            ),
            Some(e) => println!("FAILED {}: {e}", k.key),
        }
    }
    if !per_key {
        for (k, e) in &r.failed {
            println!("FAILED {k}: {e}");
        }
    }
    let formats: Vec<String> = r.formats.iter().map(|(f, n)| format!("{n} {f}")).collect();
    println!(
        "verified {} secrets: {} ok ({} stale), {} failed; storage formats: {}; {:.2} s, {:.0} Secrets/s",
        r.checked,
        r.ok,
        r.stale,
        r.failed.len(),
        if formats.is_empty() {
            "none decoded".to_owned()
        } else {
            formats.join(", ")
        },
        r.seconds,
        r.per_second()
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(verdict)
}
