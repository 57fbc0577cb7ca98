//! `bench`: the engine comes from `--engine` and, for etcd, the global etcd
//! flags; the benchmark itself is [`crate::bench`].

use super::GlobalArgs;
use super::open::etcd_config;
use crate::bench::{BenchArgs, BenchEngine, PhaseFigures, run_on};

/// `secret-store bench` from the command line: the engine comes from
/// `--engine` and, for etcd, the global etcd flags.
pub(super) fn run(g: &GlobalArgs, args: BenchArgs) -> anyhow::Result<Vec<PhaseFigures>> {
    let engine = match args.engine.as_str() {
        "rocksdb" | "db" => BenchEngine::Rocks,
        "etcd" => {
            let eps = g.etcd_endpoints.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "engine=etcd needs --etcd-endpoints URLS (or SECRET_STORE_ETCD_ENDPOINTS); scripts/etcd-cluster start prints some"
                )
            })?;
            BenchEngine::Etcd(etcd_config(g, eps)?)
        }
        other => anyhow::bail!("engine={other:?} is not valid: choose rocksdb or etcd"),
    };
    let args = BenchArgs {
        storage_format: g.storage_media_type.unwrap_or_default(),
        ..args
    };
    run_on(args, engine)
}
