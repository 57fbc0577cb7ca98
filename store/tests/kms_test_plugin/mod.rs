//! An in-process KMS v2 plugin for the store's tests: a tonic server on a
//! unix socket in a temporary directory, wrapping as the vectors' plugin does:
//! `nonce(12) ‖ AES-256-GCM(KEK, plaintext, AAD = key_id) ‖ tag(16)`.
//!
//! Each start runs the server on a runtime of its own, so `stop` kills every
//! connection at once, like a crashed plugin. Its answers can be bent to test
//! how the provider refuses bad ones.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kms_proto::v2::key_management_service_server::{
    KeyManagementService, KeyManagementServiceServer,
};
use kms_proto::v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use secret_store::encryption_config::KmsProviderConfig;
use tonic::{Request, Response, Status};

/// What the plugin answers; tests change it while the plugin runs.
#[derive(Clone)]
pub struct Behaviour {
    pub version: String,
    pub healthz: String,
    /// The key_id Status reports and Encrypt wraps under.
    pub key_id: String,
    /// KEKs by key_id (Decrypt picks by the request's key_id).
    pub keks: HashMap<String, [u8; 32]>,
    /// Annotations Encrypt returns.
    pub annotations: BTreeMap<String, Vec<u8>>,
    /// Replaces Encrypt's key_id in the answer.
    pub encrypt_key_id: Option<String>,
    /// Replaces Encrypt's ciphertext in the answer.
    pub encrypt_ciphertext: Option<Vec<u8>>,
    /// Status fails with this code when set.
    pub status_error: Option<tonic::Code>,
    /// Decrypt answers after this long.
    pub decrypt_delay: Option<std::time::Duration>,
    /// The next Encrypt first makes this key_id the active one (and Status
    /// reports it from then on): a `key activate` landing between a
    /// client's Status and its Encrypt.
    pub activate_on_encrypt: Option<String>,
}

impl Behaviour {
    pub fn new(key_id: &str, kek: [u8; 32]) -> Self {
        Behaviour {
            version: "v2".into(),
            healthz: "ok".into(),
            key_id: key_id.into(),
            keks: [(key_id.to_string(), kek)].into(),
            annotations: BTreeMap::new(),
            encrypt_key_id: None,
            encrypt_ciphertext: None,
            status_error: None,
            decrypt_delay: None,
            activate_on_encrypt: None,
        }
    }
}

/// Calls the plugin served, and the last Decrypt request.
#[derive(Default)]
pub struct Served {
    pub status: AtomicU64,
    pub encrypt: AtomicU64,
    pub decrypt: AtomicU64,
    pub last_decrypt: Mutex<Option<DecryptRequest>>,
}

struct Service {
    behaviour: Arc<Mutex<Behaviour>>,
    served: Arc<Served>,
}

fn wrap(kek: &[u8; 32], key_id: &str, plaintext: &[u8]) -> Vec<u8> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).unwrap());
    let nonce: [u8; 12] = secret_store::rand::array();
    let mut out = nonce.to_vec();
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(key_id.as_bytes()),
        &mut body,
    )
    .unwrap();
    out.extend(body);
    out
}

/// The vectors' unwrap.
pub fn unwrap(kek: &[u8; 32], key_id: &str, ciphertext: &[u8]) -> Option<Vec<u8>> {
    if ciphertext.len() < 28 {
        return None;
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).unwrap());
    let nonce: [u8; 12] = ciphertext[..12].try_into().unwrap();
    let mut body = ciphertext[12..].to_vec();
    let pt = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(key_id.as_bytes()),
            &mut body,
        )
        .ok()?;
    Some(pt.to_vec())
}

#[tonic::async_trait]
impl KeyManagementService for Service {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.served.status.fetch_add(1, Ordering::SeqCst);
        let b = self.behaviour.lock().unwrap().clone();
        if let Some(code) = b.status_error {
            return Err(Status::new(code, "test plugin: status failure"));
        }
        Ok(Response::new(StatusResponse {
            version: b.version,
            healthz: b.healthz,
            key_id: b.key_id,
        }))
    }

    async fn encrypt(
        &self,
        req: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        self.served.encrypt.fetch_add(1, Ordering::SeqCst);
        let b = {
            let mut shared = self.behaviour.lock().unwrap();
            if let Some(next) = shared.activate_on_encrypt.take() {
                shared.key_id = next;
            }
            shared.clone()
        };
        let req = req.into_inner();
        let kek = b
            .keks
            .get(&b.key_id)
            .ok_or_else(|| Status::internal("no KEK"))?;
        let ciphertext = b
            .encrypt_ciphertext
            .clone()
            .unwrap_or_else(|| wrap(kek, &b.key_id, &req.plaintext));
        Ok(Response::new(EncryptResponse {
            ciphertext,
            key_id: b.encrypt_key_id.clone().unwrap_or(b.key_id.clone()),
            annotations: b.annotations.clone(),
        }))
    }

    async fn decrypt(
        &self,
        req: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        self.served.decrypt.fetch_add(1, Ordering::SeqCst);
        let req = req.into_inner();
        *self.served.last_decrypt.lock().unwrap() = Some(req.clone());
        let b = self.behaviour.lock().unwrap().clone();
        if let Some(d) = b.decrypt_delay {
            tokio::time::sleep(d).await;
        }
        let kek = b
            .keks
            .get(&req.key_id)
            .ok_or_else(|| Status::not_found(format!("unknown key_id {:?}", req.key_id)))?;
        let plaintext = unwrap(kek, &req.key_id, &req.ciphertext)
            .ok_or_else(|| Status::invalid_argument("ciphertext does not authenticate"))?;
        Ok(Response::new(DecryptResponse { plaintext }))
    }
}

/// A running (or stopped) test plugin.
pub struct TestPlugin {
    _dir: Option<tempfile::TempDir>,
    pub socket: PathBuf,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub served: Arc<Served>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestPlugin {
    /// Starts a plugin in a new temporary directory.
    pub fn start(behaviour: Behaviour) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kms.sock");
        let mut p = TestPlugin {
            _dir: Some(dir),
            socket,
            behaviour: Arc::new(Mutex::new(behaviour)),
            served: Arc::new(Served::default()),
            runtime: None,
        };
        p.restart();
        p
    }

    /// Starts a plugin on an existing socket path.
    pub fn start_at(socket: &Path, behaviour: Behaviour) -> Self {
        let mut p = TestPlugin {
            _dir: None,
            socket: socket.to_path_buf(),
            behaviour: Arc::new(Mutex::new(behaviour)),
            served: Arc::new(Served::default()),
            runtime: None,
        };
        p.restart();
        p
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A provider configuration pointing at this plugin.
    pub fn config(&self, name: &str, timeout: Duration) -> KmsProviderConfig {
        KmsProviderConfig {
            api_version: "v2".into(),
            name: name.into(),
            endpoint: self.endpoint(),
            timeout,
        }
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }

    /// Kills the server and every connection, and removes the socket.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// (Re)starts the server on the same socket path.
    pub fn restart(&mut self) {
        self.stop();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let svc = Service {
            behaviour: Arc::clone(&self.behaviour),
            served: Arc::clone(&self.served),
        };
        let socket = self.socket.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            ready_tx.send(()).unwrap();
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tonic::transport::Server::builder()
                .add_service(KeyManagementServiceServer::new(svc))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        self.runtime = Some(rt);
    }
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
