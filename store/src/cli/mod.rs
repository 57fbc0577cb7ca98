//! The `secret-store` command line: parse, open the store, hand over.

mod bench;
mod maintenance;
mod migrate;
mod objects;
mod open;
mod raw;
mod verify_output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Exit status of a check that ran to the end and found problems: `verify`
/// found values that fail, `rewrap` left values it could not or would not
/// rewrite.
pub(crate) const EXIT_FINDINGS: u8 = 3;

/// The exit statuses, as `--help` lists them (tests/tests/cli_shell.rs
/// checks them).
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success (verify: every value decrypts and decodes)
  1  the command failed; the reason is on stderr (the store, etcd, the
     EncryptionConfiguration or the KMS plugin could not be used, a manifest
     was refused, ...)
  2  usage: a bad flag or flag value (before anything ran)
  3  verify: values failed (each listed); rewrap: values failed or were
     refused (each listed on stderr)";

/// A reference store for Kubernetes Secrets: validates them as kube-apiserver
/// does, encrypts them byte-compatibly with it (KMS v2, aesgcm, aescbc,
/// secretbox, identity) and keeps them in RocksDB or in etcd, laid out as
/// kube-apiserver lays them out.
#[derive(Parser, Debug)]
#[command(name = "secret-store", version, about, long_about = None, after_long_help = EXIT_STATUS_HELP)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// RocksDB directory (the embedded engine). Exactly one of --db and --etcd-endpoints.
    #[arg(long, global = true, env = "SECRET_STORE_DB", value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// etcd members' client URLs, comma-separated (http://127.0.0.1:2379,...): keep the
    /// Secrets in etcd, as kube-apiserver does. Exactly one of --db and --etcd-endpoints.
    #[arg(
        long,
        global = true,
        env = "SECRET_STORE_ETCD_ENDPOINTS",
        value_name = "URLS"
    )]
    pub etcd_endpoints: Option<String>,
    /// CA bundle (PEM) that signed the etcd members' certificates (https endpoints).
    #[arg(
        long,
        global = true,
        env = "SECRET_STORE_ETCD_CACERT",
        value_name = "FILE",
        alias = "etcd-cafile"
    )]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth; with --etcd-keyfile.
    #[arg(
        long,
        global = true,
        env = "SECRET_STORE_ETCD_CERT",
        value_name = "FILE",
        alias = "etcd-certfile"
    )]
    pub etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of --etcd-cert. (Not --etcd-key: `raw --etcd-key` names a key.)
    #[arg(
        long,
        global = true,
        env = "SECRET_STORE_ETCD_KEYFILE",
        value_name = "FILE"
    )]
    pub etcd_keyfile: Option<PathBuf>,
    /// Key prefix, as kube-apiserver's --etcd-prefix: Secrets live under PREFIX/secrets/.
    /// The key is also the encryption context, so it must match the apiserver's.
    #[arg(
        long,
        global = true,
        env = "SECRET_STORE_ETCD_PREFIX",
        value_name = "PREFIX",
        default_value = crate::store::DEFAULT_ETCD_PREFIX
    )]
    pub etcd_prefix: String,
    /// Time one etcd operation may take, failover to other members and retries included.
    #[arg(
        long,
        global = true,
        env = "SECRET_STORE_ETCD_TIMEOUT",
        value_name = "DURATION",
        value_parser = humantime::parse_duration,
        default_value = "5s"
    )]
    pub etcd_timeout: Duration,
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
    /// fsync every write (RocksDB): survives power loss, not just a crash of the
    /// process. etcd always syncs its WAL before acknowledging.
    #[arg(long, global = true)]
    pub sync_writes: bool,
    /// Accept an existing RocksDB directory that group or others can reach
    /// (refused by default; a new one is created 0700).
    #[arg(long, global = true)]
    pub allow_shared_dir: bool,
    /// What Secrets are serialized to inside the encryption, as kube-apiserver's
    /// --storage-media-type: application/vnd.kubernetes.protobuf (the default, as a default
    /// kube-apiserver) or application/json. Reads take both. `rewrap` converts every value
    /// to TYPE when given, and keeps each value's format when not.
    #[arg(
        long,
        global = true,
        env = "SECRET_STORE_STORAGE_MEDIA_TYPE",
        value_name = "TYPE"
    )]
    pub storage_media_type: Option<crate::secret::StorageFormat>,
    /// Read an etcd v3 snapshot file (`etcdctl snapshot save` output) instead of a live
    /// store, read-only and without etcd: get, list, inspect and verify check a backup
    /// offline. Its SHA-256 trailer is checked. Instead of --db and --etcd-endpoints.
    #[arg(
        long,
        global = true,
        env = "SECRET_STORE_ETCD_SNAPSHOT",
        value_name = "FILE"
    )]
    pub etcd_snapshot: Option<PathBuf>,
    /// With --etcd-snapshot: also read a bare bbolt file without the SHA-256 trailer
    /// (an etcd member's member/snap/db), as `etcdctl snapshot restore --skip-hash-check`.
    #[arg(long, global = true)]
    pub etcd_snapshot_skip_hash_check: bool,
}

impl Default for GlobalArgs {
    fn default() -> Self {
        GlobalArgs {
            db: None,
            etcd_endpoints: None,
            etcd_cacert: None,
            etcd_cert: None,
            etcd_keyfile: None,
            etcd_prefix: crate::store::DEFAULT_ETCD_PREFIX.to_string(),
            etcd_timeout: crate::storage::etcd::DEFAULT_TIMEOUT,
            encryption_config: None,
            allow_plaintext: false,
            sync_writes: false,
            allow_shared_dir: false,
            storage_media_type: None,
            etcd_snapshot: None,
            etcd_snapshot_skip_hash_check: false,
        }
    }
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
    /// Copy every Secret's stored bytes between engines (db:DIR, etcd:URLS), then verify.
    Migrate(migrate::MigrateArgs),
    /// Benchmark the whole write/read path for identity, aesgcm and kms v2.
    Bench(crate::bench::BenchArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completions(kms_proto::shell::CompletionsArgs),
    /// Write the man pages (one per command) into a directory (scripts/man).
    #[command(hide = true)]
    Man(kms_proto::shell::ManArgs),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = shell(&cli.command) {
        return code;
    }
    init_logging();
    // Seeds, DEKs and plaintext Secrets pass through this process: no core
    // file may hold them, and what it creates (RocksDB files) is private.
    if let Err(e) = kms_proto::process::harden() {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
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
        Command::Migrate(a) => migrate::run(g, a),
        Command::Bench(a) => bench::run(g, a).map(|_| ExitCode::SUCCESS),
        Command::Completions(_) | Command::Man(_) => Ok(ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", kms_proto::contract::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}

/// `completions` and `man`: no store, no logging; `None` for every other command.
fn shell(command: &Command) -> Option<ExitCode> {
    let written = match command {
        Command::Completions(a) => kms_proto::shell::write_completions(
            &mut Cli::command(),
            "secret-store",
            a.shell,
            &mut std::io::stdout(),
        )
        .map_err(|e| format!("writing the completion script: {e}")),
        Command::Man(a) => kms_proto::shell::write_man_pages(Cli::command(), &a.dir)
            .map(|files| {
                for f in files {
                    println!("{}", f.display());
                }
            })
            .map_err(|e| format!("writing man pages to {}: {e}", a.dir.display())),
        _ => return None,
    };
    Some(match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    })
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
