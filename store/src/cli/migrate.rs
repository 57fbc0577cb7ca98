//! `migrate --from ENGINE:WHERE --to ENGINE:WHERE`.

use std::process::ExitCode;

use clap::Args;

use super::GlobalArgs;
use super::open::{etcd_config, open_spec};
use crate::migrate::{MigrateOptions, migrate};
use crate::progress::Bar;
use crate::storage::EngineSpec;
use crate::store::secrets_prefix_for;

/// `migrate` flags. The etcd side(s) take --etcd-prefix, --etcd-timeout and
/// the TLS flags from the global flags; --db and --etcd-endpoints are not used.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Source: db:DIR (RocksDB) or etcd:URL[,URL...].
    #[arg(long, value_name = "ENGINE:WHERE")]
    from: String,
    /// Destination: db:DIR (RocksDB, created if missing) or etcd:URL[,URL...].
    #[arg(long, value_name = "ENGINE:WHERE")]
    to: String,
    /// Replace destination values that differ from the source (refused otherwise).
    #[arg(long)]
    overwrite: bool,
    /// Compare and count only; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Concurrent writes to the destination.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Also print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_side(g: &GlobalArgs, flag: &str, s: &str) -> anyhow::Result<EngineSpec> {
    match s.split_once(':') {
        Some(("db" | "rocksdb", dir)) if !dir.is_empty() => Ok(EngineSpec::Rocks {
            dir: dir.into(),
            sync: g.sync_writes,
        }),
        Some(("etcd", eps)) if !eps.is_empty() => Ok(EngineSpec::Etcd(etcd_config(g, eps)?)),
        _ => anyhow::bail!(
            "{flag}={s:?} is not valid: expected db:DIR (RocksDB) or etcd:URL[,URL...] (e.g. etcd:http://127.0.0.1:2379)"
        ),
    }
}

pub(super) fn run(g: &GlobalArgs, a: MigrateArgs) -> anyhow::Result<ExitCode> {
    let from = parse_side(g, "--from", &a.from)?;
    let to = parse_side(g, "--to", &a.to)?;
    anyhow::ensure!(from != to, "--from and --to name the same store ({from})");
    anyhow::ensure!(
        (1..=64).contains(&a.workers),
        "workers={} is not valid: between 1 and 64",
        a.workers
    );
    let prefix = secrets_prefix_for(&g.etcd_prefix).map_err(anyhow::Error::msg)?;
    let src = open_spec(g, &from)?;
    let dst = open_spec(g, &to)?;
    let opts = MigrateOptions {
        overwrite: a.overwrite,
        dry_run: a.dry_run,
        workers: a.workers,
        ..Default::default()
    };
    let bar = Bar::new("migrate");
    let r = migrate(&*src, &*dst, &prefix, &opts, &bar);
    bar.0.finish_and_clear();
    let r = r?;
    if r.dry_run {
        println!(
            "dry run {from} -> {to} ({prefix}): {} values at the source: {} to copy, {} identical, {} different at the destination{}; {} only at the destination",
            r.source_values,
            r.source_values - r.identical - r.differing,
            r.identical,
            r.differing,
            if r.differing > 0 && !a.overwrite {
                " (a migration would refuse them without --overwrite)"
            } else {
                ""
            },
            r.only_at_destination
        );
    } else {
        for (k, e) in &r.failed {
            eprintln!("FAILED {k}: {e}");
        }
        println!(
            "migrated {from} -> {to} ({prefix}): {} values at the source: {} copied, {} overwritten, {} already identical; verified {} of {} byte for byte, {} failed; {} only at the destination (left alone)",
            r.source_values,
            r.copied,
            r.overwritten,
            r.identical,
            r.verified,
            r.source_values,
            r.failed.len(),
            r.only_at_destination
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(if r.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
