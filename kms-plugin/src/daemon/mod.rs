//! `kms-plugin serve`: everything that runs while the plugin serves.
//!
//! - `config`: flags and the TOML file, validated before anything binds;
//! - `server`: open the backend, bind, serve, reload, drain on SIGTERM;
//! - `service`: the KMS v2 gRPC service and the one error mapping;
//! - `listener`: the unix socket (stale-socket recovery, permissions);
//! - `authority`: serving every gRPC client's `:authority` on it;
//! - `http`, `health`, `metrics`: `/livez`, `/healthz`, `/metrics`;
//! - `telemetry`: logging.

pub(crate) mod authority;
pub(crate) mod config;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod listener;
pub(crate) mod metrics;
pub(crate) mod server;
pub(crate) mod service;
pub(crate) mod telemetry;

use std::process::ExitCode;

use config::{ServeArgs, ServeConfig};

/// Exit status of a configuration error (a bad flag or file value): the
/// CLI's usage status.
const EXIT_CONFIG: u8 = crate::cmd::EXIT_USAGE;

/// Runs `serve` to completion: validate, prepare (backend, health port,
/// socket), then serve on a runtime of `worker_threads` threads.
pub(crate) fn serve(args: &ServeArgs) -> ExitCode {
    let cfg = match ServeConfig::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kms-plugin: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(cfg.log_format);
    let workers = cfg.worker_threads;
    let prepared = match server::prepare(cfg) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kms-plugin: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("kms-plugin-worker")
        .enable_all()
        .build();
    match rt
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(server::run(prepared)))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
