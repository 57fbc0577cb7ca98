//! The `kms-plugin` command line: parse, set up logging, hand over to the
//! daemon or a command.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::daemon::config::ServeArgs;

mod bench;
mod bench_plot;
mod key;
mod probe;

/// Exit status of a command that failed (the reason is on stderr).
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit status of a bad flag or flag value, before anything ran (clap's own,
/// and `serve`'s configuration checks).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit status of a check that ran and found problems: `probe` reached the
/// plugin and it is not healthy for kube-apiserver.
pub(crate) const EXIT_FINDINGS: u8 = 3;

/// The exit statuses, as `--help` lists them (tests/tests/cli_shell.rs
/// checks each one).
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success (probe: the plugin is healthy for kube-apiserver)
  1  the command failed; the reason is on stderr (probe: the plugin cannot
     be reached: no socket, a stale socket, permission denied)
  2  usage: a bad flag, flag value or configuration file, before anything ran
  3  probe: the plugin answered but is not healthy (a failed call or a check
     kube-apiserver applies)";

/// A bad flag value found after clap parsed the command line: exits
/// [`EXIT_USAGE`] like clap's own errors.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// How a command prints what it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// Lines for a person.
    #[default]
    Table,
    /// One JSON document on stdout, for automation: the same facts.
    Json,
}

/// A Kubernetes KMS v2 plugin: wraps kube-apiserver's data-key seeds with a
/// key-encryption key held in a software key ring or a TPM 2.0.
#[derive(Parser, Debug)]
#[command(name = "kms-plugin", version, about, long_about = None, after_long_help = EXIT_STATUS_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the KMS v2 API on a unix socket.
    Serve(ServeArgs),
    /// Manage the key ring.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Check a running plugin as kube-apiserver would.
    Probe(probe::ProbeArgs),
    /// Measure Encrypt/Decrypt throughput and latency over the socket.
    Bench(bench::BenchArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completions(kms_proto::shell::CompletionsArgs),
    /// Write the man pages (one per command) into a directory (scripts/man).
    #[command(hide = true)]
    Man(kms_proto::shell::ManArgs),
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => crate::daemon::serve(&args),
        Command::Key(cmd) => {
            crate::daemon::telemetry::init(crate::daemon::telemetry::LogFormat::Plain);
            report(key::run(cmd))
        }
        Command::Probe(args) => {
            match runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(probe::run(args)))
            {
                Ok(probe::Verdict::Healthy) => ExitCode::SUCCESS,
                Ok(probe::Verdict::Unreachable) => ExitCode::from(EXIT_FAILED),
                Ok(probe::Verdict::Unhealthy) => ExitCode::from(EXIT_FINDINGS),
                Err(e) => report(Err(e)),
            }
        }
        Command::Bench(args) => report(
            args.runtime()
                .and_then(|rt| rt.block_on(bench::run(args)))
                .map(|_| ()),
        ),
        Command::Completions(a) => report(
            kms_proto::shell::write_completions(
                &mut Cli::command(),
                "kms-plugin",
                a.shell,
                &mut std::io::stdout(),
            )
            .map_err(|e| anyhow::anyhow!("writing the completion script: {e}")),
        ),
        Command::Man(a) => report(
            kms_proto::shell::write_man_pages(Cli::command(), &a.dir)
                .map(|files| {
                    for f in files {
                        println!("{}", f.display());
                    }
                })
                .map_err(|e| anyhow::anyhow!("writing man pages to {}: {e}", a.dir.display())),
        ),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms-plugin: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}
