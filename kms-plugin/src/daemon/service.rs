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

use crate::backend::{BackendError, KeyBackend};
use crate::daemon::health::Health;
use crate::daemon::metrics::{Metrics, code_name};
use kms_proto::contract::{
    self, API_VERSION, MAX_CIPHERTEXT, MAX_KEY_ID, MAX_UID, check_len, printable,
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

    #[allow(clippy::too_many_arguments)]
    fn finish<T>(
        &self,
        op: &'static str,
        span: &tracing::Span,
        uid: &str,
        key_id: &str,
        start: Instant,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let elapsed = start.elapsed();
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        self.metrics.observe(op, code, elapsed);
        let latency_us = elapsed.as_micros() as u64;
        span.record("grpc.code", code_name(code));
        span.record("latency_us", latency_us);
        // Failures are logged at warn/error with every field of the call, so
        // they carry their context even when the (debug-level) span is off.
        match &result {
            Ok(_) => tracing::debug!(parent: span, "call ok"),
            Err(s) if s.code() == Code::Internal || s.code() == Code::Unavailable => {
                tracing::error!(parent: span, kms.op = op, kms.uid = %printable(uid, 64), kms.key_id = %printable(key_id, 128), grpc.code = code_name(code), latency_us, error = s.message(), "call failed")
            }
            Err(s) => {
                tracing::warn!(parent: span, kms.op = op, kms.uid = %printable(uid, 64), kms.key_id = %printable(key_id, 128), grpc.code = code_name(code), latency_us, error = s.message(), "call refused")
            }
        }
        result.map(Response::new)
    }
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg)
}

fn check_uid(uid: &str) -> Result<(), Status> {
    // An empty uid is allowed: it is only a correlation id.
    if uid.is_empty() {
        return Ok(());
    }
    check_len("uid", uid.len(), MAX_UID).map_err(|e| invalid(e.to_string()))
}

/// Maps a backend error to what the client sees. The one place where
/// internal failures are turned into an opaque `Internal`.
pub fn to_status(e: &BackendError) -> Status {
    match e {
        BackendError::UnknownKeyId(_) | BackendError::Retired(_) => {
            Status::not_found(e.to_string())
        }
        BackendError::DecryptionFailed => Status::invalid_argument("decryption failed"),
        BackendError::Malformed(_) | BackendError::TooLarge { .. } => {
            Status::invalid_argument(e.to_string())
        }
        BackendError::Unavailable(_) => Status::unavailable(e.to_string()),
        BackendError::Keyring(_) | BackendError::Internal(_) => {
            tracing::error!(error = %e, "internal backend error");
            Status::internal("internal error in the KMS plugin; see its log")
        }
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
            let key_id = self.backend.active_key_id().map_err(|e| to_status(&e))?;
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
        let key_id = active.as_deref().unwrap_or("");
        self.finish("status", &span, "", key_id, start, result)
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
            let w = self.backend.encrypt(&plaintext).await.map_err(|e| {
                self.metrics.backend_error("encrypt");
                to_status(&e)
            })?;
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
        let key_id = used.as_deref().unwrap_or("");
        self.finish("encrypt", &span, &req.uid, key_id, start, result)
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
                .map_err(|e| {
                    if !matches!(
                        e,
                        BackendError::DecryptionFailed
                            | BackendError::UnknownKeyId(_)
                            | BackendError::Retired(_)
                            | BackendError::Malformed(_)
                    ) {
                        self.metrics.backend_error("decrypt");
                    }
                    to_status(&e)
                })?;
            // The response owns a copy; the wiping buffer is dropped here.
            Ok(DecryptResponse {
                plaintext: plaintext.to_vec(),
            })
        }
        .await;
        self.finish("decrypt", &span, &req.uid, &req.key_id, start, result)
    }
}
