//! The `secret-store` command line: parse, open the store, hand over.

mod maintenance;
mod objects;
mod open;
mod raw;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use open::{Access, open_chain, open_engine};

/// A reference store for Kubernetes Secrets: validates them as kube-apiserver
/// does, encrypts them byte-compatibly with it (KMS v2, aesgcm, aescbc,
/// secretbox, identity) and keeps them in RocksDB.
#[derive(Parser, Debug)]
#[command(name = "secret-store", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// RocksDB directory (the embedded engine).
    #[arg(long, global = true, env = "SECRET_STORE_DB", value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// EncryptionConfiguration file (apiserver.config.k8s.io/v1).
    #[arg(
        long,
        global = true,
        env = "SECRET_STORE_ENCRYPTION_CONFIG",
        value_name = "FILE"
    )]
    pub encryption_config: Option<PathBuf>,
    /// Allow writing Secrets unencrypted (no configuration, or identity first).
    #[arg(long, global = true)]
    pub allow_plaintext: bool,
    /// fsync every write: survives power loss, not just a crash of the process.
    #[arg(long, global = true)]
    pub sync_writes: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or replace Secrets from a manifest (YAML, JSON, multi-document, List).
    Apply(objects::ApplyArgs),
    /// Show one Secret.
    Get(objects::GetArgs),
    /// List Secrets.
    List(objects::ListArgs),
    /// Delete one Secret.
    Delete(objects::DeleteArgs),
    /// Show how a Secret is stored (provider, key_id, staleness) without decrypting it.
    Inspect(objects::InspectArgs),
    /// Re-encrypt every stale value with the first provider and current key.
    Rewrap(maintenance::RewrapArgs),
    /// Decrypt everything; list what fails; exit non-zero on any failure.
    Verify(maintenance::VerifyArgs),
    /// One raw etcd value in, bytes out.
    #[command(subcommand)]
    Raw(raw::RawCommand),
    /// Benchmark the whole write/read path for identity, aesgcm and kms v2.
    Bench(crate::bench::BenchArgs),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let g = &cli.global;
    let result = match cli.command {
        Command::Apply(a) => objects::apply(g, a),
        Command::Get(a) => objects::get(g, a),
        Command::List(a) => objects::list(g, a),
        Command::Delete(a) => objects::delete(g, a),
        Command::Inspect(a) => objects::inspect(g, a),
        Command::Rewrap(a) => maintenance::rewrap(g, a),
        Command::Verify(a) => maintenance::verify(g, a),
        Command::Raw(c) => raw::run(g, c),
        Command::Bench(a) => crate::bench::run(a).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub(crate) struct Bar(pub indicatif::ProgressBar);

impl Bar {
    pub(crate) fn new(what: &str) -> Self {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        b.set_message(what.to_string());
        Bar(b)
    }
}

impl crate::rewrap::Progress for Bar {
    fn total(&self, n: u64) {
        self.0.set_length(n);
    }
    fn tick(&self) {
        self.0.inc(1);
    }
}
