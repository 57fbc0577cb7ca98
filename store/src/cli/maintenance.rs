//! rewrap and verify.

use std::process::ExitCode;

use clap::Args;

use super::GlobalArgs;
use super::open::{Access, open_store};
use crate::progress::Bar;

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
    /// Also print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn rewrap(g: &GlobalArgs, a: RewrapArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g, Access::Write)?;
    let bar = Bar::new("rewrap");
    let r = crate::rewrap::rewrap(&store, a.dry_run, &bar)?;
    bar.0.finish_and_clear();
    if a.dry_run {
        println!(
            "dry run: {} of {} secrets are stale and would be rewrapped with {} (the first provider)",
            r.stale,
            r.scanned,
            store.chain().describe_writer()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "rewrapped {} of {} stale secrets ({} scanned; {} rewritten concurrently by others, {} deleted meanwhile, {} conflicts retried, {} refused)",
        r.rewrapped,
        r.stale,
        r.scanned,
        r.rewritten_by_others,
        r.vanished,
        r.retries,
        r.refused.len()
    );
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
        ExitCode::FAILURE
    })
}

pub(super) fn verify(g: &GlobalArgs, a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g, Access::Read)?;
    let bar = Bar::new("verify");
    let r = crate::verify::verify(&store, &bar)?;
    bar.0.finish_and_clear();
    for (k, e) in &r.failed {
        println!("FAILED {k}: {e}");
    }
    println!(
        "verified {} secrets: {} ok ({} stale), {} failed",
        r.checked,
        r.ok,
        r.stale,
        r.failed.len()
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(if r.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
