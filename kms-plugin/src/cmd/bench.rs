//! `kms-plugin bench`: Encrypt and Decrypt of 32-byte seeds over the unix
//! socket with N concurrent callers (one connection each), printing ops/s,
//! p50 and p99 per phase; the figures also as JSON (`--json`) and as a
//! picture (`--svg`, `bench_plot`).

use std::time::{Duration, Instant};

use kms_proto::Endpoint;
use kms_proto::v2::{DecryptRequest, EncryptRequest};

use super::Usage;

/// `bench` flags.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The plugin's socket.
    #[arg(long, value_name = "ENDPOINT")]
    pub listen_addr: String,
    /// Comma-separated caller counts to run, one phase each.
    #[arg(long, default_value = "1,16", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Measured time per phase.
    #[arg(long, default_value = "5s")]
    pub duration: String,
    /// Unmeasured warm-up per phase.
    #[arg(long, default_value = "1s")]
    pub warmup: String,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
    /// Also draw the figures (throughput and p50/p99 latency per concurrency
    /// and op) as SVG to this file. Default with --json: beside it, the JSON
    /// file's name with `.svg` (bench.json -> bench.svg).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,
    /// Threads of the load generator. One by default: on a small machine a
    /// second client thread takes CPU from the plugin being measured, which
    /// is then what the figures show.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub client_threads: usize,
}

impl BenchArgs {
    /// The load generator's runtime: `client_threads` worker threads
    /// (a current-thread runtime for one).
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let rt = match self.client_threads {
            0 | 65.. => {
                return Err(Usage(format!(
                    "client-threads={} is not valid: between 1 and 64",
                    self.client_threads
                ))
                .into());
            }
            1 => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            n => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build()?,
        };
        Ok(rt)
    }
}

/// One phase's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseResult {
    /// encrypt or decrypt.
    pub op: &'static str,
    /// Concurrent callers.
    pub callers: usize,
    /// Completed calls in the measured window.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Calls per second.
    pub ops_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
}

#[derive(Clone, Copy)]
enum Op {
    Encrypt,
    Decrypt,
}

async fn phase(
    ep: &Endpoint,
    op: Op,
    callers: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<PhaseResult> {
    let mut tasks = Vec::new();
    let start_at = Instant::now() + Duration::from_millis(200);
    for _ in 0..callers {
        let mut client = kms_proto::client::connect_v2(ep, Duration::from_secs(5)).await?;
        // A ciphertext to decrypt, made by the plugin itself.
        let sample = client
            .encrypt(EncryptRequest {
                plaintext: vec![7u8; 32],
                uid: "bench".into(),
            })
            .await?
            .into_inner();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at.into()).await;
            let measure_from = Instant::now() + warmup;
            let end = measure_from + duration;
            let mut lat: Vec<u32> = Vec::with_capacity(200_000);
            let mut errors = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let ok = match op {
                    Op::Encrypt => client
                        .encrypt(EncryptRequest {
                            plaintext: vec![7u8; 32],
                            uid: String::new(),
                        })
                        .await
                        .is_ok(),
                    Op::Decrypt => client
                        .decrypt(DecryptRequest {
                            ciphertext: sample.ciphertext.clone(),
                            uid: String::new(),
                            key_id: sample.key_id.clone(),
                            annotations: sample.annotations.clone(),
                        })
                        .await
                        .is_ok(),
                };
                if t >= measure_from {
                    if ok {
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64
    };
    Ok(PhaseResult {
        op: match op {
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
        },
        callers,
        calls: all.len() as u64,
        errors,
        ops_per_sec: all.len() as f64 / duration.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

/// Runs every phase and prints the table.
pub async fn run(args: BenchArgs) -> anyhow::Result<Vec<PhaseResult>> {
    let ep = Endpoint::parse(&args.listen_addr).map_err(|e| Usage(format!("listen-addr={e}")))?;
    let duration = crate::daemon::config::parse_duration("duration", &args.duration)
        .map_err(|e| Usage(e.to_string()))?;
    let warmup = humantime::parse_duration(&args.warmup)
        .map_err(|e| Usage(format!("warmup={:?} is not valid: {e}", args.warmup)))?;
    if args.concurrency.iter().any(|&c| c == 0 || c > 1024) {
        return Err(Usage("concurrency values must be between 1 and 1024".into()).into());
    }
    println!(
        "{:<8} {:>7} {:>10} {:>10} {:>10} {:>7}",
        "op", "callers", "ops/s", "p50 us", "p99 us", "errors"
    );
    let mut results = Vec::new();
    for &c in &args.concurrency {
        for op in [Op::Encrypt, Op::Decrypt] {
            let r = phase(&ep, op, c, warmup, duration).await?;
            println!(
                "{:<8} {:>7} {:>10.0} {:>10.1} {:>10.1} {:>7}",
                r.op, r.callers, r.ops_per_sec, r.p50_us, r.p99_us, r.errors
            );
            results.push(r);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = svg_path(&args) {
        let subtitle = format!(
            "32-byte seeds over {ep}, {} per phase",
            humantime::format_duration(duration)
        );
        super::bench_plot::write(&path, &results, &subtitle)?;
        println!("plot: {}", path.display());
    }
    Ok(results)
}

/// Where the picture goes: `--svg`, else beside `--json` (its name with
/// `.svg`), else nowhere.
fn svg_path(args: &BenchArgs) -> Option<std::path::PathBuf> {
    if let Some(p) = &args.svg {
        return Some(p.clone());
    }
    let json = args.json.as_ref()?;
    let svg = json.with_extension("svg");
    Some(if svg == *json {
        json.with_extension("svg.svg")
    } else {
        svg
    })
}
