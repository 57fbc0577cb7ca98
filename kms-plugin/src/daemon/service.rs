//! The KMS v2 gRPC service kube-apiserver calls: Status, Encrypt, Decrypt.
//!
//! Every request is checked against the protocol's limits before it reaches
//! the backend; every answer satisfies what the apiserver checks (see
//! `limits`). Each call gets a tracing span (op, uid, key_id, code, latency)
//! and is counted in the metrics. Errors are mapped to gRPC codes in one
//! place, [`to_status`]; nothing in a reply or a log line carries plaintext
//! or key bytes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use kms_proto::v2::key_management_service_server::KeyManagementService;
use kms_proto::v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use tonic::{Code, Request, Response, Status};
use tracing::field::Empty;
use zeroize::Zeroizing;

use crate::backend::{BackendError, Fault, KeyBackend};
use crate::daemon::health::Health;
use crate::daemon::metrics::{Metrics, code_name};
use kms_proto::contract::{
    self, API_VERSION, MAX_CIPHERTEXT, MAX_KEY_ID, MAX_UID, check_len, error_chain, printable,
};

/// The domain this plugin's annotation keys live under.
pub const ANNOTATION_DOMAIN: &str = "kms-plugin.k8s-at-rest.io";

/// The service state shared by all connections.
pub struct KmsService {
    backend: Arc<dyn KeyBackend>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    annotation_key: String,
}

impl KmsService {
    /// A service over `backend`.
    pub fn new(backend: Arc<dyn KeyBackend>, health: Arc<Health>, metrics: Arc<Metrics>) -> Self {
        KmsService {
            backend,
            health,
            metrics,
            annotation_key: format!("backend.{ANNOTATION_DOMAIN}"),
        }
    }

    /// Records, counts and logs one finished call, once: failures at warn
    /// (the request's fault) or error (the plugin's), with every field of
    /// the call, so they carry their context even when the (debug-level)
    /// span is off.
    fn finish<T>(
        &self,
        call: Call<'_>,
        span: &tracing::Span,
        start: Instant,
        result: Result<T, Failure>,
    ) -> Result<Response<T>, Status> {
        let elapsed = start.elapsed();
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(f) => f.status.code(),
        };
        self.metrics.observe(call.op, code, elapsed);
        let latency_us = elapsed.as_micros() as u64;
        span.record("grpc.code", code_name(code));
        span.record("latency_us", latency_us);
        let (uid, key_id) = (printable(call.uid, 64), printable(call.key_id, 128));
        match &result {
            Ok(_) => tracing::debug!(parent: span, "call ok"),
            Err(f) if f.fault == Fault::Request => {
                tracing::warn!(parent: span, kms.op = call.op, kms.uid = %uid, kms.key_id = %key_id, grpc.code = code_name(code), latency_us, error = %f.detail(), "call refused")
            }
            Err(f) => {
                tracing::error!(parent: span, kms.op = call.op, kms.uid = %uid, kms.key_id = %key_id, grpc.code = code_name(code), latency_us, error = %f.detail(), "call failed")
            }
        }
        result.map(Response::new).map_err(|f| f.status)
    }

    /// A backend failure of `op`: counted when it is the backend's fault.
    fn backend_failure(&self, op: &'static str, e: &BackendError) -> Failure {
        let f = to_failure(e);
        if f.fault != Fault::Request {
            self.metrics.backend_error(op);
        }
        f
    }
}

/// Which call a log line is about.
struct Call<'a> {
    op: &'static str,
    uid: &'a str,
    key_id: &'a str,
}

/// A failed call: what the client is told, and what only the log says.
struct Failure {
    status: Status,
    fault: Fault,
    /// The whole cause, for the log, when the client is told less.
    internal: Option<String>,
}

impl Failure {
    fn detail(&self) -> &str {
        self.internal.as_deref().unwrap_or(self.status.message())
    }
}

fn invalid(msg: impl Into<String>) -> Failure {
    Failure {
        status: Status::invalid_argument(msg),
        fault: Fault::Request,
        internal: None,
    }
}

fn check_uid(uid: &str) -> Result<(), Failure> {
    // An empty uid is allowed: it is only a correlation id.
    if uid.is_empty() {
        return Ok(());
    }
    check_len("uid", uid.len(), MAX_UID).map_err(|e| invalid(e.to_string()))
}

/// Maps a backend error to what the client sees: the one place where
/// internal failures become an opaque `Internal` (their cause goes to the
/// log only).
fn to_failure(e: &BackendError) -> Failure {
    let fault = e.fault();
    let (status, internal) = match (fault, e) {
        (Fault::Request, BackendError::UnknownKeyId(_) | BackendError::Retired(_)) => {
            (Status::not_found(e.to_string()), None)
        }
        (Fault::Request, _) => (Status::invalid_argument(e.to_string()), None),
        (Fault::Unavailable, _) => (Status::unavailable(e.to_string()), None),
        (Fault::Denied, _) => (Status::permission_denied(e.to_string()), None),
        (Fault::Internal, _) => (
            Status::internal("internal error in the KMS plugin; see its log"),
            Some(error_chain(e)),
        ),
    };
    Failure {
        status,
        fault,
        internal,
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let start = Instant::now();
        let span = tracing::debug_span!(
            "rpc",
            kms.op = "status",
            kms.key_id = Empty,
            grpc.code = Empty,
            latency_us = Empty
        );
        let mut active = None;
        let result = async {
            let key_id = self
                .backend
                .active_key_id()
                .map_err(|e| self.backend_failure("status", &e))?;
            span.record("kms.key_id", &*key_id);
            active = Some(key_id.clone());
            let healthz = self.health.healthz().await;
            Ok(StatusResponse {
                version: API_VERSION.to_string(),
                healthz: healthz.to_string(),
                key_id: key_id.to_string(),
            })
        }
        .await;
        let call = Call {
            op: "status",
            uid: "",
            key_id: active.as_deref().unwrap_or(""),
        };
        self.finish(call, &span, start, result)
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let plaintext = Zeroizing::new(req.plaintext);
        let span = tracing::debug_span!("rpc", kms.op = "encrypt", kms.uid = %printable(&req.uid, 64), kms.key_id = Empty, grpc.code = Empty, latency_us = Empty);
        let mut used = None;
        let result = async {
            check_uid(&req.uid)?;
            if plaintext.is_empty() {
                return Err(invalid("plaintext is empty"));
            }
            let max = self.backend.max_plaintext();
            if plaintext.len() > max {
                return Err(invalid(format!(
                    "plaintext is {} bytes; at most {max} bytes fit in the {MAX_CIPHERTEXT}-byte ciphertext limit",
                    plaintext.len()
                )));
            }
            let w = self
                .backend
                .encrypt(&plaintext)
                .await
                .map_err(|e| self.backend_failure("encrypt", &e))?;
            span.record("kms.key_id", &*w.key_id);
            used = Some(w.key_id.clone());
            debug_assert!(!w.ciphertext.is_empty() && w.ciphertext.len() <= MAX_CIPHERTEXT);
            let mut annotations = BTreeMap::new();
            annotations.insert(
                self.annotation_key.clone(),
                self.backend.kind().as_bytes().to_vec(),
            );
            Ok(EncryptResponse {
                ciphertext: w.ciphertext,
                key_id: w.key_id.to_string(),
                annotations,
            })
        }
        .await;
        let call = Call {
            op: "encrypt",
            uid: &req.uid,
            key_id: used.as_deref().unwrap_or(""),
        };
        self.finish(call, &span, start, result)
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let span = tracing::debug_span!("rpc", kms.op = "decrypt", kms.uid = %printable(&req.uid, 64), kms.key_id = %printable(&req.key_id, 128), grpc.code = Empty, latency_us = Empty);
        let result = async {
            check_uid(&req.uid)?;
            check_len("ciphertext", req.ciphertext.len(), MAX_CIPHERTEXT)
                .map_err(|e| invalid(e.to_string()))?;
            check_len("key_id", req.key_id.len(), MAX_KEY_ID)
                .map_err(|e| invalid(e.to_string()))?;
            contract::validate_annotations(
                req.annotations
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice())),
            )
            .map_err(invalid)?;
            let plaintext = self
                .backend
                .decrypt(&req.key_id, &req.ciphertext)
                .await
                .map_err(|e| self.backend_failure("decrypt", &e))?;
            // The response owns a copy; the wiping buffer is dropped here.
            Ok(DecryptResponse {
                plaintext: plaintext.to_vec(),
            })
        }
        .await;
        let call = Call {
            op: "decrypt",
            uid: &req.uid,
            key_id: &req.key_id,
        };
        self.finish(call, &span, start, result)
    }
}
