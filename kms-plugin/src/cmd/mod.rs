//! The `kms-plugin` command line: parse, set up logging, hand over to the
//! daemon or a command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::daemon::config::ServeArgs;

mod bench;
mod key;
mod probe;

/// A Kubernetes KMS v2 plugin: wraps kube-apiserver's data-key seeds with a
/// key-encryption key held in a software key ring or a TPM 2.0.
#[derive(Parser, Debug)]
#[command(name = "kms-plugin", version, about, long_about = None)]
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
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => report(Err(e)),
            }
        }
        Command::Bench(args) => report(
            args.runtime()
                .and_then(|rt| rt.block_on(bench::run(args)))
                .map(|_| ()),
        ),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms-plugin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
