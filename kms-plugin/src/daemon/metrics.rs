//! Prometheus metrics: calls by op and gRPC code, latency histograms, the
//! active key_id as a hash label (so nodes can be compared without printing
//! key_ids), rotations, backend errors and health.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    op: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RingLabels {
    fingerprint: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key_id_hash: String,
    backend: String,
}

/// The gRPC operations.
const OPS: [&str; 3] = ["status", "encrypt", "decrypt"];

/// What `backend_error` counts failures of.
const BACKEND_OPS: [&str; 4] = ["encrypt", "decrypt", "reload", "self-test"];

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
        0.1, 0.5, 1.0, 3.0,
    ])
}

/// Pre-resolved series for the common case (a call that succeeded), so
/// the hot path does not hash label sets.
struct FastOp {
    ok: Counter,
    latency: Histogram,
}

/// The plugin's metrics and their registry.
pub struct Metrics {
    fast: [FastOp; 3],
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<OpLabels, Histogram, fn() -> Histogram>,
    active_key: Family<KeyLabels, Gauge>,
    current_key: Mutex<Option<KeyLabels>>,
    rotations: Counter,
    backend_errors: Family<OpLabels, Counter>,
    healthy: Gauge,
    ring: Family<RingLabels, Gauge>,
    current_ring: Mutex<Option<RingLabels>>,
    staged_keys: Gauge,
    ring_refused: Counter,
    health_listen_failures: Counter,
    worker_restarts: Counter,
}

/// `sha256:<hex>` of a key_id, as kube-apiserver labels its own key_id metrics.
pub fn key_id_hash(key_id: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key_id.as_bytes());
    format!("sha256:{}", hex::encode(d.as_ref()))
}

impl Metrics {
    /// Registers every metric under the `kms_plugin` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kms_plugin");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "requests",
            "gRPC calls by operation and status code",
            calls.clone(),
        );
        let latency = Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "gRPC call latency by operation",
            latency.clone(),
        );
        let active_key = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "active_key_info",
            "1 for the active KEK, labelled by the SHA-256 of its key_id",
            active_key.clone(),
        );
        let rotations = Counter::default();
        registry.register(
            "key_rotations",
            "Active key changes observed while serving",
            rotations.clone(),
        );
        let backend_errors = Family::<OpLabels, Counter>::default();
        // Every op's series from the start, at 0: the family is exported
        // before the first failure (the alert rules and the dashboard read
        // it), and rate() sees the first failure as an increase.
        for op in BACKEND_OPS {
            let _ = backend_errors.get_or_create(&OpLabels { op });
        }
        registry.register(
            "backend_errors",
            "Backend failures by operation (encrypt, decrypt, reload, self-test)",
            backend_errors.clone(),
        );
        let healthy = Gauge::default();
        registry.register(
            "healthy",
            "1 when the last backend self-test passed",
            healthy.clone(),
        );
        let ring = Family::<RingLabels, Gauge>::default();
        registry.register(
            "ring_info",
            "1 for the key ring being served, labelled by its fingerprint (equal on every node holding the same keys in the same states)",
            ring.clone(),
        );
        let staged_keys = Gauge::default();
        registry.register(
            "staged_keys",
            "Keys added to the ring and not yet activated",
            staged_keys.clone(),
        );
        let ring_refused = Counter::default();
        registry.register(
            "ring_reload_refused",
            "Replaced key ring files refused because they would drop or change keys (an older copy, another ring)",
            ring_refused.clone(),
        );
        let health_listen_failures = Counter::default();
        registry.register(
            "health_listen_failures",
            "Attempts to bind --health-addr that failed (the port was taken); retried while serving",
            health_listen_failures.clone(),
        );
        let worker_restarts = Counter::default();
        registry.register(
            "worker_restarts",
            "Backend worker threads found dead and started again",
            worker_restarts.clone(),
        );
        let fast = OPS.map(|op| FastOp {
            ok: calls.get_or_create(&CallLabels { op, code: "OK" }).clone(),
            latency: latency.get_or_create(&OpLabels { op }).clone(),
        });
        Metrics {
            fast,
            registry,
            calls,
            latency,
            active_key,
            current_key: Mutex::new(None),
            rotations,
            backend_errors,
            healthy,
            ring,
            current_ring: Mutex::new(None),
            staged_keys,
            ring_refused,
            health_listen_failures,
            worker_restarts,
        }
    }

    /// Publishes a backend's calls to its key service as
    /// `kms_plugin_backend_calls_total{op, outcome}`.
    pub fn register_backend_calls(&mut self, calls: crate::backend::ServiceCalls) {
        self.registry.register(
            "backend_calls",
            "Calls the backend sent to the service holding its keys (each attempt, retries included), by call and outcome",
            calls,
        );
    }

    /// Counts a failed bind of the health port.
    pub fn health_listen_failed(&self) {
        self.health_listen_failures.inc();
    }

    /// Counts a backend worker started again.
    pub fn worker_restarted(&self) {
        self.worker_restarts.inc();
    }

    /// Publishes the ring's fingerprint and staged key count.
    pub fn set_ring(&self, info: &crate::backend::RingInfo, backend: &str) {
        let labels = RingLabels {
            fingerprint: info.fingerprint.clone(),
            backend: backend.to_string(),
        };
        self.staged_keys.set(info.staged as i64);
        let mut cur = kms_proto::sync::lock(&self.current_ring);
        if cur.as_ref() == Some(&labels) {
            return;
        }
        if let Some(old) = cur.take() {
            self.ring.remove(&old);
        }
        self.ring.get_or_create(&labels).set(1);
        *cur = Some(labels);
    }

    /// Counts a refused ring file.
    pub fn ring_refused(&self) {
        self.ring_refused.inc();
    }

    /// Records one finished call.
    pub fn observe(&self, op: &'static str, code: tonic::Code, elapsed: Duration) {
        if code == tonic::Code::Ok
            && let Some(i) = OPS.iter().position(|o| *o == op)
        {
            self.fast[i].ok.inc();
            self.fast[i].latency.observe(elapsed.as_secs_f64());
            return;
        }
        self.calls
            .get_or_create(&CallLabels {
                op,
                code: code_name(code),
            })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a backend failure.
    pub fn backend_error(&self, op: &'static str) {
        self.backend_errors.get_or_create(&OpLabels { op }).inc();
    }

    /// Sets the health gauge.
    pub fn set_healthy(&self, ok: bool) {
        self.healthy.set(i64::from(ok));
    }

    /// Publishes the active key; counts a rotation when it changed.
    pub fn set_active_key(&self, key_id: &str, backend: &str) {
        let labels = KeyLabels {
            key_id_hash: key_id_hash(key_id),
            backend: backend.to_string(),
        };
        let mut cur = kms_proto::sync::lock(&self.current_key);
        if cur.as_ref() == Some(&labels) {
            return;
        }
        if let Some(old) = cur.take() {
            self.active_key.remove(&old);
            self.rotations.inc();
        }
        self.active_key.get_or_create(&labels).set(1);
        *cur = Some(labels);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The canonical name of a gRPC code, as used in labels.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_calls_keys_and_rotations() {
        let m = Metrics::new();
        m.observe("encrypt", tonic::Code::Ok, Duration::from_micros(50));
        m.observe(
            "decrypt",
            tonic::Code::InvalidArgument,
            Duration::from_micros(70),
        );
        m.set_active_key("k1", "software");
        m.set_active_key("k1", "software");
        m.set_active_key("k2", "software");
        m.backend_error("reload");
        let text = m.encode();
        assert!(
            text.contains(r#"kms_plugin_requests_total{op="encrypt",code="OK"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"code="InvalidArgument""#));
        assert!(text.contains("kms_plugin_key_rotations_total 1"));
        assert!(text.contains(&key_id_hash("k2")));
        assert!(!text.contains(&key_id_hash("k1")), "old key still exported");
        assert!(!text.contains("\"k2\""), "raw key_id exported");
        assert!(text.contains(r#"kms_plugin_backend_errors_total{op="reload"} 1"#));
        assert!(text.contains(r#"kms_plugin_backend_errors_total{op="self-test"} 0"#));
        assert!(text.contains("kms_plugin_request_duration_seconds_bucket"));
    }

    #[test]
    fn exposes_a_backends_service_calls() {
        let mut m = Metrics::new();
        let calls = crate::backend::ServiceCalls::default();
        m.register_backend_calls(calls.clone());
        calls
            .get_or_create(&crate::backend::ServiceCallLabels {
                op: "encrypt",
                outcome: "ok",
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains(r#"kms_plugin_backend_calls_total{op="encrypt",outcome="ok"} 1"#),
            "{text}"
        );
    }
}
