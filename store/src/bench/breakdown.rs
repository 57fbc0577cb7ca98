//! The per-stage breakdown: after the concurrent phases, one thread writes
//! and reads a slice of Secrets per provider with every stage of the store
//! timed ([`crate::stages`] at [`Level::Full`]), and reports the mean
//! nanoseconds per operation in each stage. A regression then shows where it
//! is (the engine, the codec, the envelope parse, the DEK cache, the key
//! derivation, the AEAD), which the rates alone cannot say.
//!
//! Three passes per provider, on the store the phases left warm:
//! - `write`: new Secrets (`breakdown-NNNNNNN`, deleted afterwards);
//! - `read-warm`: the Secrets the write phase stored, as the read-warm
//!   phase reads them (KMS v2: a seed of an earlier start, from the cache);
//! - `read-current`: the Secrets just written (KMS v2: the current write
//!   seed, which a read uses without a cache lookup).

use std::time::Instant;

use crate::secret::{Secret, SecretValue};
use crate::stages::{Level, Recording, Stage, StageNanos};
use crate::store::SecretStore;

/// Operations per pass, at most.
pub(super) const OPS: usize = 20_000;

/// The mean time per operation of one pass, by stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageFigures {
    /// rocksdb or etcd.
    pub engine: &'static str,
    /// identity, aesgcm or kms-v2.
    pub provider: String,
    /// write, read-warm or read-current.
    pub phase: &'static str,
    /// Operations timed.
    pub ops: usize,
    /// Mean nanoseconds per operation, whole.
    pub total_ns: f64,
    /// Mean nanoseconds per operation in each stage (each stage's own time:
    /// `transform` leaves out the stages marked inside it), in
    /// [`Stage::ALL`] order.
    pub stages: Vec<(&'static str, f64)>,
    /// What no stage covers: the store's own code (key formatting, the
    /// result's assembly), the allocator, the clock reads.
    pub other_ns: f64,
}

impl StageFigures {
    fn new(
        (engine, provider, phase): (&'static str, &str, &'static str),
        ops: usize,
        total: u64,
        nanos: StageNanos,
    ) -> Self {
        let per = |n: u64| n as f64 / ops.max(1) as f64;
        let stages: Vec<(&'static str, f64)> = Stage::ALL
            .iter()
            .map(|s| (s.name(), per(nanos.get(*s))))
            .collect();
        let staged: f64 = stages.iter().map(|(_, v)| v).sum();
        StageFigures {
            engine,
            provider: provider.to_string(),
            phase,
            ops,
            total_ns: per(total),
            other_ns: (per(total) - staged).max(0.0),
            stages,
        }
    }

    /// The mean nanoseconds of the stage called `name` (0 if unknown).
    #[cfg(test)]
    fn stage(&self, name: &str) -> f64 {
        self.stages
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, v)| *v)
    }
}

fn breakdown_name(i: usize) -> String {
    format!("breakdown-{i:07}")
}

/// Times `op` on `0..n` on this thread, every stage recorded.
fn pass(
    n: usize,
    mut op: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, StageNanos)> {
    let rec = Recording::start(Level::Full);
    let mut total = 0u64;
    for i in 0..n {
        let t = Instant::now();
        op(i)?;
        total += t.elapsed().as_nanos() as u64;
    }
    Ok((total, rec.nanos()))
}

/// The three passes on `store`, whose `secret-NNNNNNN` Secrets 0..`count`
/// the phases wrote with `size` bytes each.
pub(super) fn measure(
    store: &SecretStore,
    engine: &'static str,
    provider: &str,
    count: usize,
    size: usize,
) -> anyhow::Result<Vec<StageFigures>> {
    let n = count.min(OPS);
    let label = |phase| (engine, provider, phase);
    let (t, w) = pass(n, |i| {
        let mut s = Secret::new("bench", breakdown_name(i));
        s.data
            .insert("payload".into(), SecretValue::new(super::payload(i, size)));
        store.create(s)?;
        Ok(())
    })?;
    let write = StageFigures::new(label("write"), n, t, w);
    let read = |name: String| -> anyhow::Result<()> {
        let s = store.get("bench", &name)?;
        anyhow::ensure!(
            s.data.get("payload").map(|v| v.len()) == Some(size),
            "{name} read back wrong"
        );
        Ok(())
    };
    let (t, w) = pass(n, |i| read(format!("secret-{i:07}")))?;
    let warm = StageFigures::new(label("read-warm"), n, t, w);
    let (t, w) = pass(n, |i| read(breakdown_name(i)))?;
    let current = StageFigures::new(label("read-current"), n, t, w);
    for i in 0..n {
        store.delete("bench", &breakdown_name(i))?;
    }
    Ok(vec![write, warm, current])
}

/// Prints the breakdowns as a table, one row per provider and pass.
pub(super) fn print(all: &[StageFigures]) {
    let Some(first) = all.first() else {
        return;
    };
    println!();
    println!(
        "per-stage breakdown: mean ns per operation, one thread, {} operations per pass",
        first.ops
    );
    print!("{:<9} {:<13} {:>7}", "provider", "pass", "total");
    for (name, _) in &first.stages {
        print!(" {name:>9}");
    }
    println!(" {:>9}", "other");
    for f in all {
        print!("{:<9} {:<13} {:>7.0}", f.provider, f.phase, f.total_ns);
        for (_, v) in &f.stages {
            if *v == 0.0 {
                print!(" {:>9}", "-");
            } else {
                print!(" {v:>9.0}");
            }
        }
        println!(" {:>9.0}", f.other_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_means_and_other_is_the_rest() {
        let mut n = StageNanos::default();
        n.0[0] = 4_000; // engine
        n.0[8] = 2_000; // aead
        let f = StageFigures::new(("rocksdb", "kms-v2", "write"), 2, 10_000, n);
        assert_eq!(f.total_ns, 5_000.0);
        assert_eq!(f.stage("engine"), 2_000.0);
        assert_eq!(f.stage("aead"), 1_000.0);
        assert_eq!(f.stage("derive"), 0.0);
        assert_eq!(f.other_ns, 2_000.0);
        assert_eq!(f.stages.len(), Stage::ALL.len());
    }
}
