//! Health: a live self-test of the backend, cached for a few seconds so the
//! apiserver's Status polls (and `/healthz` probes) stay cheap while a broken
//! backend still shows within seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::KeyBackend;
use crate::daemon::metrics::Metrics;

/// What Status reports when healthy: exactly what kube-apiserver expects.
pub(crate) use kms_proto::contract::HEALTHZ_OK as HEALTHY;

struct Cached {
    at: Instant,
    verdict: Arc<str>,
}

/// The cached health verdict of a backend.
pub struct Health {
    backend: Arc<dyn KeyBackend>,
    metrics: Arc<Metrics>,
    ttl: Duration,
    cached: std::sync::Mutex<Option<Cached>>,
    // Only one self-test at a time; others wait for its verdict.
    running: tokio::sync::Mutex<()>,
}

impl Health {
    /// A health tracker that re-checks at most every `ttl`.
    pub fn new(backend: Arc<dyn KeyBackend>, metrics: Arc<Metrics>, ttl: Duration) -> Self {
        Health {
            backend,
            metrics,
            ttl,
            cached: std::sync::Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<Arc<str>> {
        let c = kms_proto::sync::lock(&self.cached);
        c.as_ref()
            .filter(|c| c.at.elapsed() < self.ttl)
            .map(|c| c.verdict.clone())
    }

    /// `"ok"`, or a short reason the backend is not usable.
    pub async fn healthz(&self) -> Arc<str> {
        if let Some(v) = self.fresh() {
            return v;
        }
        let _guard = self.running.lock().await;
        if let Some(v) = self.fresh() {
            return v;
        }
        let verdict: Arc<str> = match self.backend.self_test().await {
            Ok(()) => HEALTHY.into(),
            Err(e) => {
                self.metrics.backend_error("self-test");
                let reason = format!("{} backend self-test failed: {e}", self.backend.kind());
                tracing::warn!(reason = %reason, "backend unhealthy");
                kms_proto::contract::printable(&reason, 200).into()
            }
        };
        self.metrics.set_healthy(&*verdict == HEALTHY);
        *kms_proto::sync::lock(&self.cached) = Some(Cached {
            at: Instant::now(),
            verdict: verdict.clone(),
        });
        verdict
    }

    /// Whether the process can still serve (`/livez`): the backend's own
    /// threads are alive. Not the device: a TPM that went away is a
    /// readiness matter (`/healthz`), which a restart would not fix.
    pub fn liveness(&self) -> Result<(), String> {
        self.backend.liveness()
    }

    /// Forgets the cached verdict (after a key change).
    pub fn invalidate(&self) {
        *kms_proto::sync::lock(&self.cached) = None;
    }
}
