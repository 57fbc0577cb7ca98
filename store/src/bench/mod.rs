//! `secret-store bench`: N Secrets of a given size written by C concurrent
//! writers through the whole path (validate, serialize, encrypt, RocksDB),
//! then read back cold (empty seed cache, freshly opened database) and warm,
//! for identity, aesgcm and kms v2 side by side in one run.

mod plugin;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::secret::{Secret, SecretValue};
use crate::storage::StorageEngine;
use crate::storage::rocks::RocksEngine;
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
    /// Where the benchmark databases go (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Also write the figures as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One phase's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseFigures {
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

fn run_phase(
    label: &str,
    phase: &'static str,
    args: &BenchArgs,
    kms: Option<&KmsV2Transformer>,
    op: &(dyn Fn(usize) -> anyhow::Result<()> + Sync),
) -> anyhow::Result<PhaseFigures> {
    let bar = crate::cli::Bar::new(phase);
    bar.0.set_length(args.count as u64);
    let before = kms.map(|k| calls_total(&k.plugin_calls())).unwrap_or(0);
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let results: Vec<anyhow::Result<Vec<u64>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..args.writers)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::with_capacity(args.count / args.writers + 1);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= args.count {
                            return Ok(lat);
                        }
                        let t = Instant::now();
                        op(i)?;
                        lat.push(t.elapsed().as_nanos() as u64);
                        if i.is_multiple_of(256) {
                            bar.0.set_position(i as u64);
                        }
                    }
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("bench worker panicked"))
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    bar.0.finish_and_clear();
    let mut lat = Vec::with_capacity(args.count);
    for r in results {
        lat.extend(r?);
    }
    lat.sort_unstable();
    let after = kms.map(|k| calls_total(&k.plugin_calls())).unwrap_or(0);
    Ok(PhaseFigures {
        provider: label.to_string(),
        phase,
        ops: lat.len(),
        seconds,
        ops_per_sec: lat.len() as f64 / seconds,
        mb_per_sec: (lat.len() * args.size) as f64 / seconds / 1e6,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        plugin_calls: after - before,
    })
}

fn bench_provider(
    args: &BenchArgs,
    root: &std::path::Path,
    p: &Provider,
) -> anyhow::Result<Vec<PhaseFigures>> {
    let db = root.join(format!("db-{}", p.label));
    let mut out = Vec::new();
    {
        let (chain, kms) = (p.chain_factory)()?;
        let engine: Arc<dyn StorageEngine> = Arc::new(RocksEngine::open(&db, false)?);
        let store = SecretStore::new(engine, chain);
        out.push(run_phase(&p.label, "write", args, kms.as_deref(), &|i| {
            store.create(secret(i, args.size))?;
            Ok(())
        })?);
    }
    // Cold: a new process's view: database reopened, provider caches empty.
    let (chain, kms) = (p.chain_factory)()?;
    if let Some(k) = &kms {
        k.clear_cache();
    }
    let engine: Arc<dyn StorageEngine> = Arc::new(RocksEngine::open(&db, false)?);
    let store = SecretStore::new(engine, chain);
    let read = |i: usize| -> anyhow::Result<()> {
        let s = store.get("bench", &format!("secret-{i:07}"))?;
        anyhow::ensure!(
            s.data.get("payload").map(|v| v.len()) == Some(args.size),
            "secret-{i:07} read back wrong"
        );
        Ok(())
    };
    out.push(run_phase(
        &p.label,
        "read-cold",
        args,
        kms.as_deref(),
        &read,
    )?);
    out.push(run_phase(
        &p.label,
        "read-warm",
        args,
        kms.as_deref(),
        &read,
    )?);
    Ok(out)
}

/// Runs the benchmark and prints the side-by-side table.
pub fn run(args: BenchArgs) -> anyhow::Result<Vec<PhaseFigures>> {
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
    eprintln!(
        "bench: {} secrets of {} bytes per provider, {} writers, RocksDB in {}",
        args.count,
        args.size,
        args.writers,
        root.display()
    );
    let mut all = Vec::new();
    for p in &providers {
        all.extend(bench_provider(&args, root, p)?);
    }
    drop(local_plugin);
    print_table(&all);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "count": args.count,
            "size": args.size,
            "writers": args.writers,
            "phases": all,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(all)
}

fn print_table(all: &[PhaseFigures]) {
    println!(
        "{:<9} {:<10} {:>10} {:>9} {:>9} {:>9} {:>13}",
        "provider", "phase", "ops/s", "MB/s", "p50 us", "p99 us", "plugin calls"
    );
    for f in all {
        println!(
            "{:<9} {:<10} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>13}",
            f.provider, f.phase, f.ops_per_sec, f.mb_per_sec, f.p50_us, f.p99_us, f.plugin_calls
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
