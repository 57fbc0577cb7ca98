//! `secret-store bench`: N Secrets of a given size written by C concurrent
//! writers through the whole path (validate, serialize, encrypt, store in
//! RocksDB or etcd), then read back cold (empty seed cache, freshly opened
//! engine) and warm, for identity, aesgcm and kms v2 side by side in one
//! run. Each phase reports the share of its time spent in encryption
//! (sealing, opening) and in the storage engine, from the store's own stage
//! marks ([`crate::stages`], counted per thread). Phases run in rounds with
//! the providers taking turns, so that a change in the machine's speed
//! during the run does not land on one provider only. Then a single thread
//! times every stage of a write and a read per provider ([`breakdown`]).
//!
//! On etcd, each provider writes under a throwaway prefix
//! (`/secret-store-bench/<run>/<provider>`), deleted at the end.

mod breakdown;
mod codec;
mod plot;
mod plugin;

pub use breakdown::StageFigures;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::secret::{Secret, SecretValue};
use crate::stages::{self, Level, Stage, StageNanos};
use crate::storage::EngineSpec;
use crate::storage::etcd::EtcdConfig;
use crate::store::SecretStore;
use crate::transform::Transformer;
use crate::transform::aesgcm::AesGcmTransformer;
use crate::transform::chain::TransformerChain;
use crate::transform::identity::IdentityTransformer;
use crate::transform::kmsv2::{KmsOptions, KmsV2Transformer, PluginCalls};

/// `bench` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Secrets to write per provider.
    #[arg(long, default_value_t = 100_000)]
    pub count: usize,
    /// Bytes of secret data per Secret.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Concurrent writers (and readers).
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Providers to compare, in order.
    #[arg(long, value_delimiter = ',', default_value = "identity,aesgcm,kms")]
    pub providers: Vec<String>,
    /// A running KMS v2 plugin; without it a throwaway kms-plugin is started.
    #[arg(long, value_name = "ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// Storage engine: rocksdb (a temporary database under --dir) or etcd (the cluster of
    /// --etcd-endpoints, under a throwaway key prefix deleted afterwards).
    #[arg(long, default_value = "rocksdb", value_name = "ENGINE")]
    pub engine: String,
    /// Where the benchmark databases go (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Also write the figures as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the figures as an SVG picture at FILE (default: beside --json,
    /// with .svg): rates per provider and phase, and the per-stage
    /// breakdown.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Each phase runs in this many slices of the Secrets, the providers
    /// taking turns in every slice, so that machine drift does not favour one.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// With --engine etcd: save a snapshot of the cluster to FILE after the
    /// phases (before the bench's keys are deleted), for
    /// `secret-store --etcd-snapshot FILE verify`; the command to run is printed.
    #[arg(long, value_name = "FILE")]
    pub etcd_snapshot: Option<PathBuf>,
    /// What the Secrets are serialized to (the global --storage-media-type).
    #[arg(skip)]
    pub storage_format: crate::secret::StorageFormat,
}

/// One phase's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseFigures {
    /// rocksdb or etcd.
    pub engine: &'static str,
    /// identity, aesgcm or kms-v2.
    pub provider: String,
    /// write, read-cold or read-warm.
    pub phase: &'static str,
    /// Operations.
    pub ops: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Secret data throughput, MB/s (10^6 bytes).
    pub mb_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// KMS plugin calls during the phase (Status, Encrypt, Decrypt).
    pub plugin_calls: u64,
    /// Share of the operations' summed latency spent sealing or opening
    /// values (plugin calls included), 0..1.
    pub crypto_share: f64,
    /// Share of the operations' summed latency spent in the storage engine, 0..1.
    pub storage_share: f64,
}

/// Which engine the bench runs on.
#[derive(Clone, Debug)]
pub enum BenchEngine {
    /// A fresh RocksDB per provider in the bench directory.
    Rocks,
    /// An etcd cluster.
    Etcd(EtcdConfig),
}

/// A fresh chain for a provider, and its KMS transformer when it has one
/// (for cache clearing and plugin-call counts).
type ChainFactory =
    Box<dyn Fn() -> anyhow::Result<(Arc<TransformerChain>, Option<Arc<KmsV2Transformer>>)>>;

struct Provider {
    label: String,
    chain_factory: ChainFactory,
}

fn calls_total(c: &PluginCalls) -> u64 {
    c.status + c.encrypt + c.decrypt
}

fn payload(i: usize, size: usize) -> Vec<u8> {
    // Incompressible and distinct per secret; cheap to make.
    let mut v = vec![0u8; size];
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

fn secret(i: usize, size: usize) -> Secret {
    let mut s = Secret::new("bench", format!("secret-{i:07}"));
    s.data
        .insert("payload".into(), SecretValue::new(payload(i, size)));
    s
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// One phase of one provider, added up over the rounds.
struct PhaseAcc {
    phase: &'static str,
    lat: Vec<u64>,
    seconds: f64,
    plugin_calls: u64,
    stages: StageNanos,
}

impl PhaseAcc {
    fn new(phase: &'static str) -> Self {
        PhaseAcc {
            phase,
            lat: Vec::new(),
            seconds: 0.0,
            plugin_calls: 0,
            stages: StageNanos::default(),
        }
    }

    fn figures(mut self, engine: &'static str, provider: &str, size: usize) -> PhaseFigures {
        self.lat.sort_unstable();
        let busy = self.lat.iter().sum::<u64>().max(1) as f64;
        let seconds = self.seconds.max(f64::MIN_POSITIVE);
        PhaseFigures {
            engine,
            provider: provider.to_string(),
            phase: self.phase,
            ops: self.lat.len(),
            seconds: self.seconds,
            ops_per_sec: self.lat.len() as f64 / seconds,
            mb_per_sec: (self.lat.len() * size) as f64 / seconds / 1e6,
            p50_us: percentile(&self.lat, 0.50),
            p99_us: percentile(&self.lat, 0.99),
            plugin_calls: self.plugin_calls,
            crypto_share: self.stages.get(Stage::Transform) as f64 / busy,
            storage_share: self.stages.get(Stage::Engine) as f64 / busy,
        }
    }
}

/// Runs `op` on the indices `range` with `writers` threads, adding the
/// latencies, wall time, plugin calls and the time in the provider and the
/// engine to `acc`.
fn run_slice(
    acc: &mut PhaseAcc,
    run: &ProviderRun<'_>,
    writers: usize,
    range: std::ops::Range<usize>,
    bar: &crate::progress::Bar,
    op: &(dyn Fn(usize) -> anyhow::Result<()> + Sync),
) -> anyhow::Result<()> {
    let before = run.kms.as_ref().map(|k| calls_total(&k.plugin_calls()));
    let next = AtomicUsize::new(range.start);
    let start = Instant::now();
    type Worker = anyhow::Result<(Vec<u64>, StageNanos)>;
    let results: Vec<Worker> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..writers)
            .map(|_| {
                s.spawn(|| {
                    // The provider's and the engine's time, on this thread.
                    let rec = stages::Recording::start(Level::Coarse);
                    let mut lat = Vec::with_capacity(range.len() / writers + 1);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= range.end {
                            return Ok((lat, rec.nanos()));
                        }
                        let t = Instant::now();
                        op(i)?;
                        lat.push(t.elapsed().as_nanos() as u64);
                        if i.is_multiple_of(256) {
                            bar.0.inc(256);
                        }
                    }
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("bench worker panicked"))
            .collect()
    });
    acc.seconds += start.elapsed().as_secs_f64();
    for r in results {
        let (lat, nanos) = r?;
        acc.lat.extend(lat);
        acc.stages.add(&nanos);
    }
    if let (Some(k), Some(before)) = (&run.kms, before) {
        acc.plugin_calls += calls_total(&k.plugin_calls()) - before;
    }
    Ok(())
}

/// Where one provider's run keeps its Secrets.
struct Target<'a> {
    engine: &'a BenchEngine,
    /// What Secrets are serialized to.
    format: crate::secret::StorageFormat,
    /// RocksDB directory.
    db: PathBuf,
    /// etcd prefix.
    etcd_prefix: String,
}

impl Target<'_> {
    fn store(&self, chain: Arc<TransformerChain>) -> anyhow::Result<SecretStore> {
        let engine = match self.engine {
            BenchEngine::Rocks => EngineSpec::Rocks {
                dir: self.db.clone(),
                sync: false,
            },
            BenchEngine::Etcd(c) => EngineSpec::Etcd(c.clone()),
        }
        .open()?;
        let store = SecretStore::new(engine, chain).with_storage_format(self.format);
        match self.engine {
            BenchEngine::Rocks => Ok(store),
            BenchEngine::Etcd(_) => store
                .with_etcd_prefix(&self.etcd_prefix)
                .map_err(anyhow::Error::msg),
        }
    }
}

/// One provider's store and (kms) transformer, open for a phase.
struct ProviderRun<'a> {
    provider: &'a Provider,
    target: Target<'a>,
    store: Option<SecretStore>,
    kms: Option<Arc<KmsV2Transformer>>,
}

impl ProviderRun<'_> {
    /// (Re)opens the engine with a fresh chain: a new process's view, whose
    /// provider holds only the seed it just wrapped.
    fn reopen(&mut self) -> anyhow::Result<()> {
        self.store = None;
        // A new provider holds only the seed it just wrapped, as a new
        // kube-apiserver does: values of earlier seeds miss its cache.
        let (chain, kms) = (self.provider.chain_factory)()?;
        self.store = Some(self.target.store(chain)?);
        self.kms = kms;
        Ok(())
    }

    fn store(&self) -> &SecretStore {
        self.store.as_ref().expect("opened before every phase")
    }
}

/// Runs write, read-cold and read-warm for every provider. Each phase is cut
/// into `rounds` slices of the Secrets, and within a round the providers
/// take turns: drift of the machine (other load, background compaction,
/// frequency changes) then falls on every provider alike instead of on
/// whichever ran last.
fn bench_providers(
    args: &BenchArgs,
    engine_name: &'static str,
    runs: &mut [ProviderRun<'_>],
) -> anyhow::Result<(Vec<PhaseFigures>, Vec<StageFigures>)> {
    let rounds = args.rounds.min(args.count).max(1);
    let slice = |r: usize| (args.count * r / rounds)..(args.count * (r + 1) / rounds);
    let mut accs: Vec<[PhaseAcc; 3]> = runs
        .iter()
        .map(|_| {
            [
                PhaseAcc::new("write"),
                PhaseAcc::new("read-cold"),
                PhaseAcc::new("read-warm"),
            ]
        })
        .collect();
    for run in runs.iter_mut() {
        run.reopen()?;
    }
    for (phase, name) in ["write", "read-cold", "read-warm"].into_iter().enumerate() {
        if phase == 1 {
            // Cold: every engine reopened, every provider cache empty.
            for run in runs.iter_mut() {
                run.reopen()?;
            }
        }
        let bar = crate::progress::Bar::new(name);
        bar.0.set_length((args.count * runs.len()) as u64);
        for r in 0..rounds {
            for (run, acc) in runs.iter().zip(accs.iter_mut()) {
                let store = run.store();
                let write = |i: usize| -> anyhow::Result<()> {
                    store.create(secret(i, args.size))?;
                    Ok(())
                };
                let read = |i: usize| -> anyhow::Result<()> {
                    let s = store.get("bench", &format!("secret-{i:07}"))?;
                    anyhow::ensure!(
                        s.data.get("payload").map(|v| v.len()) == Some(args.size),
                        "secret-{i:07} read back wrong"
                    );
                    Ok(())
                };
                let op: &(dyn Fn(usize) -> anyhow::Result<()> + Sync) =
                    if phase == 0 { &write } else { &read };
                run_slice(&mut acc[phase], run, args.writers, slice(r), &bar, op)?;
            }
        }
        bar.0.finish_and_clear();
    }
    let mut out = Vec::new();
    for (run, acc) in runs.iter().zip(accs) {
        for a in acc {
            out.push(a.figures(engine_name, &run.provider.label, args.size));
        }
    }
    let mut stages = Vec::new();
    for run in runs.iter() {
        stages.extend(breakdown::measure(
            run.store(),
            engine_name,
            &run.provider.label,
            args.count,
            args.size,
        )?);
    }
    Ok((out, stages))
}

/// Deletes the bench's etcd keys when dropped (also after a failure).
struct EtcdCleanup {
    config: EtcdConfig,
    prefix: String,
}

impl Drop for EtcdCleanup {
    fn drop(&mut self) {
        #[cfg(feature = "etcd")]
        let done = crate::storage::etcd::EtcdEngine::open(&self.config)
            .and_then(|e| e.delete_prefix(&self.prefix));
        #[cfg(not(feature = "etcd"))]
        let done: Result<u64, crate::storage::StorageError> = {
            let _ = &self.config;
            Err(crate::storage::StorageError::NotBuilt("etcd"))
        };
        if let Err(e) = done {
            eprintln!(
                "bench: could not delete its etcd keys under {}: {e}",
                self.prefix
            );
        }
    }
}

/// Saves a snapshot of the bench's etcd cluster and says how to verify it.
fn save_snapshot(
    c: &EtcdConfig,
    path: &std::path::Path,
    run_id: &str,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    #[cfg(not(feature = "etcd"))]
    {
        let _ = (c, path, run_id, args);
        anyhow::bail!("this secret-store was built without the etcd engine");
    }
    #[cfg(feature = "etcd")]
    {
        let bytes = crate::storage::etcd::save_snapshot(c, path)?;
        eprintln!(
            "bench: etcd snapshot {} ({bytes} bytes) holds {} secrets per provider; check it offline with\n  secret-store --etcd-snapshot {} --etcd-prefix /secret-store-bench/{run_id}/<provider> --encryption-config <a config with the same provider> verify",
            path.display(),
            args.count,
            path.display()
        );
        Ok(())
    }
}

/// Runs the benchmark on `engine` and prints the side-by-side table.
pub fn run_on(args: BenchArgs, engine: BenchEngine) -> anyhow::Result<Vec<PhaseFigures>> {
    anyhow::ensure!(args.count > 0, "count must be at least 1");
    anyhow::ensure!(
        (1..=256).contains(&args.writers),
        "writers must be between 1 and 256"
    );
    anyhow::ensure!(
        args.size <= 1024 * 1024,
        "size must be at most 1 MiB (the Secret limit)"
    );
    let tmp = tempfile::Builder::new()
        .prefix("secret-store-bench-")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let root = tmp.path();
    let mut local_plugin = None;
    let mut providers = Vec::new();
    for name in &args.providers {
        match name.as_str() {
            "identity" => providers.push(Provider {
                label: "identity".into(),
                chain_factory: Box::new(|| {
                    let t: Arc<dyn Transformer> = Arc::new(IdentityTransformer::new());
                    Ok((
                        Arc::new(TransformerChain::new(vec![t])?.with_plaintext_allowed(true)),
                        None,
                    ))
                }),
            }),
            "aesgcm" => {
                let key = crate::rand::array::<32>();
                providers.push(Provider {
                    label: "aesgcm".into(),
                    chain_factory: Box::new(move || {
                        let t: Arc<dyn Transformer> =
                            Arc::new(AesGcmTransformer::new("bench", &key)?);
                        Ok((Arc::new(TransformerChain::new(vec![t])?), None))
                    }),
                });
            }
            "kms" | "kms-v2" => {
                let endpoint = match &args.kms_endpoint {
                    Some(e) => e.clone(),
                    None => {
                        let bin = plugin::find_plugin_binary().ok_or_else(|| {
                            anyhow::anyhow!(
                                "kms v2 needs a plugin: pass --kms-endpoint, or put kms-plugin next to secret-store or on PATH"
                            )
                        })?;
                        let p = plugin::LocalPlugin::start(&bin, root)?;
                        let e = p.endpoint.clone();
                        local_plugin = Some(p);
                        e
                    }
                };
                providers.push(Provider {
                    label: "kms-v2".into(),
                    chain_factory: Box::new(move || {
                        let cfg = crate::encryption_config::KmsProviderConfig {
                            api_version: "v2".into(),
                            name: "bench".into(),
                            endpoint: endpoint.clone(),
                            timeout: Duration::from_secs(3),
                        };
                        let k = Arc::new(KmsV2Transformer::new(&cfg, KmsOptions::default())?);
                        let t: Arc<dyn Transformer> = k.clone();
                        Ok((Arc::new(TransformerChain::new(vec![t])?), Some(k)))
                    }),
                });
            }
            other => {
                anyhow::bail!("providers: {other:?} is not valid: choose identity, aesgcm, kms")
            }
        }
    }
    let run_id = hex::encode(crate::rand::array::<6>());
    let _cleanup = match &engine {
        BenchEngine::Rocks => {
            eprintln!(
                "bench: {} secrets of {} bytes per provider, {} writers, RocksDB in {}",
                args.count,
                args.size,
                args.writers,
                root.display()
            );
            None
        }
        BenchEngine::Etcd(c) => {
            let prefix = format!("/secret-store-bench/{run_id}/");
            eprintln!(
                "bench: {} secrets of {} bytes per provider, {} writers, etcd at {} under {prefix}",
                args.count,
                args.size,
                args.writers,
                c.endpoints_list()
            );
            Some(EtcdCleanup {
                config: c.clone(),
                prefix,
            })
        }
    };
    let engine_name = match &engine {
        BenchEngine::Rocks => "rocksdb",
        BenchEngine::Etcd(_) => "etcd",
    };
    let mut runs: Vec<ProviderRun<'_>> = providers
        .iter()
        .map(|p| ProviderRun {
            provider: p,
            target: Target {
                engine: &engine,
                format: args.storage_format,
                db: root.join(format!("db-{}", p.label)),
                etcd_prefix: format!("/secret-store-bench/{run_id}/{}", p.label),
            },
            store: None,
            kms: None,
        })
        .collect();
    let (all, stages) = bench_providers(&args, engine_name, &mut runs)?;
    drop(runs);
    drop(local_plugin);
    if let (Some(path), BenchEngine::Etcd(c)) = (&args.etcd_snapshot, &engine) {
        save_snapshot(c, path, &run_id, &args)?;
    }
    let codecs = codec::bench_codecs(args.size, args.count.min(20_000))?;
    print_table(&[all.as_slice(), codecs.as_slice()].concat());
    breakdown::print(&stages);
    let json_ratio = |phase: &str| {
        let rate = |f: &str| {
            codecs
                .iter()
                .find(|c| c.provider == f && c.phase == phase)
                .map(|c| c.ops_per_sec)
        };
        rate("protobuf").zip(rate("json")).map(|(p, j)| p / j)
    };
    if let (Some(e), Some(d)) = (json_ratio("encode"), json_ratio("decode")) {
        println!(
            "storage codec: protobuf encodes {e:.1}x and decodes {d:.1}x as fast as JSON; the store wrote {}",
            args.storage_format
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "engine": args.engine,
            "count": args.count,
            "size": args.size,
            "writers": args.writers,
            "rounds": args.rounds,
            "storage_media_type": args.storage_format.media_type(),
            "phases": all,
            "codec": codecs,
            "stages": stages,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    let svg = args
        .svg
        .clone()
        .or_else(|| args.json.as_ref().map(|j| j.with_extension("svg")));
    if let Some(path) = svg {
        let subtitle = format!(
            "{} Secrets of {} bytes, {} writers/readers, {engine_name}",
            args.count, args.size, args.writers
        );
        std::fs::write(&path, plot::render(&all, &stages, &subtitle)?)?;
        eprintln!("bench: picture at {}", path.display());
    }
    Ok(all)
}

fn print_table(all: &[PhaseFigures]) {
    println!(
        "{:<8} {:<9} {:<10} {:>9} {:>8} {:>9} {:>9} {:>8} {:>8} {:>13}",
        "engine",
        "provider",
        "phase",
        "ops/s",
        "MB/s",
        "p50 us",
        "p99 us",
        "crypto %",
        "store %",
        "plugin calls"
    );
    for f in all {
        println!(
            "{:<8} {:<9} {:<10} {:>9.0} {:>8.1} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>13}",
            f.engine,
            f.provider,
            f.phase,
            f.ops_per_sec,
            f.mb_per_sec,
            f.p50_us,
            f.p99_us,
            100.0 * f.crypto_share,
            100.0 * f.storage_share,
            f.plugin_calls
        );
    }
    let rate = |prov: &str, phase: &str| {
        all.iter()
            .find(|f| f.provider == prov && f.phase == phase)
            .map(|f| f.ops_per_sec)
    };
    for phase in ["write", "read-warm"] {
        if let (Some(k), Some(i)) = (rate("kms-v2", phase), rate("identity", phase)) {
            println!("kms-v2 {phase} rate is {:.0}% of identity's", 100.0 * k / i);
        }
    }
}
