//! The `kms-plugin` command line: parse, set up logging, hand over.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{ServeArgs, ServeConfig};

/// A Kubernetes KMS v2 plugin: wraps kube-apiserver's data-key seeds with a
/// key-encryption key held in a software key ring or a TPM 2.0.
#[derive(Parser, Debug)]
#[command(name = "kms-plugin", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the KMS v2 API on a unix socket.
    Serve(ServeArgs),
    /// Manage the key ring.
    #[command(subcommand)]
    Key(crate::keycmd::KeyCommand),
    /// Check a running plugin as kube-apiserver would.
    Probe(crate::probe::ProbeArgs),
    /// Measure Encrypt/Decrypt throughput and latency over the socket.
    Bench(crate::bench::BenchArgs),
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn serve_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("kms-plugin-worker")
        .enable_all()
        .build()
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let cfg = match ServeConfig::resolve(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("kms-plugin: {e}");
                    return ExitCode::from(2);
                }
            };
            crate::telemetry::init(cfg.log_format);
            let workers = cfg.worker_threads;
            let prepared = match crate::server::prepare(cfg) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("kms-plugin: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            match serve_runtime(workers)
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(crate::server::run(prepared)))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Key(cmd) => {
            crate::telemetry::init(crate::telemetry::LogFormat::Plain);
            report(crate::keycmd::run(cmd))
        }
        Command::Probe(args) => {
            match runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(crate::probe::run(args)))
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => report(Err(e)),
            }
        }
        Command::Bench(args) => report(
            args.runtime()
                .and_then(|rt| rt.block_on(crate::bench::run(args)))
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
