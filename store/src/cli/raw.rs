//! `raw decrypt` / `raw encrypt`: one etcd value in, bytes out: what an
//! operator uses to check that a backup decrypts with the keys they hold.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::GlobalArgs;
use super::open::{Access, open_chain};
use crate::wipe::Wiped;

/// Raw value commands.
#[derive(Subcommand, Debug)]
pub enum RawCommand {
    /// Print the stored (at-rest) bytes of one key, as `etcdctl get --print-value-only` would.
    Get {
        /// The etcd key, e.g. /registry/secrets/default/db-pass.
        #[arg(long)]
        etcd_key: String,
    },
    /// Decrypt one stored value (as etcdctl get --print-value-only writes it) to stdout.
    Decrypt {
        /// The etcd key the value was stored under (it is authenticated).
        #[arg(long)]
        etcd_key: String,
        /// Read the value from this file instead of stdin.
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
    },
    /// Encrypt bytes from stdin (or --in) for storage at an etcd key, to stdout.
    Encrypt {
        /// The etcd key the value will be stored under.
        #[arg(long)]
        etcd_key: String,
        /// Read the plaintext from this file instead of stdin.
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
    },
}

fn read_input(input: &Option<PathBuf>) -> anyhow::Result<Wiped<Vec<u8>>> {
    let mut buf = Wiped::new(Vec::new());
    match input {
        Some(p) => {
            std::fs::File::open(p)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
        }
        None => {
            std::io::stdin().read_to_end(&mut buf)?;
        }
    }
    Ok(buf)
}

pub(super) fn run(g: &GlobalArgs, c: RawCommand) -> anyhow::Result<ExitCode> {
    match c {
        RawCommand::Get { etcd_key } => {
            let engine = super::open::open_engine(g)?;
            let v = engine
                .get(&etcd_key)?
                .ok_or_else(|| anyhow::anyhow!("no value at {etcd_key}"))?;
            let mut out = std::io::stdout().lock();
            out.write_all(&v.value)?;
            out.flush()?;
        }
        RawCommand::Decrypt { etcd_key, input } => {
            let stored = read_input(&input)?;
            let chain = open_chain(g, Access::Read)?;
            let opened = chain.open(&stored, &etcd_key)?;
            if let Ok(info) = chain.inspect(&stored, &etcd_key) {
                let mut note = format!("decrypted with {}", info.provider_kind);
                if !info.provider_name.is_empty() {
                    note.push_str(&format!(" {:?}", info.provider_name));
                }
                if let Some(k) = &info.key_id {
                    note.push_str(&format!(", key_id {k}"));
                }
                if opened.stale {
                    note.push_str("; stale: a rewrap would re-encrypt it");
                }
                eprintln!("{note}");
            }
            let mut out = std::io::stdout().lock();
            out.write_all(&opened.plaintext)?;
            out.flush()?;
        }
        RawCommand::Encrypt { etcd_key, input } => {
            let plain = read_input(&input)?;
            let chain = open_chain(g, Access::Write)?;
            let sealed = chain.seal(&plain, &etcd_key)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&sealed)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
