//! The client side of the KMS v2 plugin API, as kube-apiserver calls it:
//! Status, Encrypt and Decrypt over the unix socket, each bounded by the
//! per-call timeout of the configuration, and the checks the apiserver makes
//! of every answer.
//!
//! Like gRPC's `WaitForReady`, a call whose socket is not there yet keeps
//! dialling until its deadline instead of failing at once, so a plugin that
//! restarts within the timeout is not noticed. A broken connection is dropped
//! and dialled again on the next call.

use std::error::Error as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kms_proto::Endpoint;
use kms_proto::v2::key_management_service_client::KeyManagementServiceClient;
use kms_proto::v2::{
    DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::k8s::new_uid;
use crate::wipe::Wiped;
use kms_proto::contract::error_chain;

type Client = KeyManagementServiceClient<Channel>;

/// How many calls of each method this provider has made to its plugin
/// (attempts, successful or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PluginCalls {
    /// `Status` calls (start-up, the poller, `check_now`).
    pub status: u64,
    /// `Encrypt` calls: one per new DEK seed.
    pub encrypt: u64,
    /// `Decrypt` calls: one per read that missed the cache.
    pub decrypt: u64,
}

#[derive(Default)]
struct Counters {
    status: AtomicU64,
    encrypt: AtomicU64,
    decrypt: AtomicU64,
}

/// One plugin endpoint with its per-call timeout.
pub(crate) struct PluginClient {
    endpoint: Endpoint,
    timeout: Duration,
    client: tokio::sync::Mutex<Option<Client>>,
    counters: Counters,
}

impl PluginClient {
    /// A client for `endpoint`; nothing is dialled until the first call.
    pub(crate) fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        PluginClient {
            endpoint,
            timeout,
            client: tokio::sync::Mutex::new(None),
            counters: Counters::default(),
        }
    }

    /// The calls made so far.
    pub(crate) fn calls(&self) -> PluginCalls {
        PluginCalls {
            status: self.counters.status.load(Ordering::Relaxed),
            encrypt: self.counters.encrypt.load(Ordering::Relaxed),
            decrypt: self.counters.decrypt.load(Ordering::Relaxed),
        }
    }

    /// `Status`, unchecked (see [`kms_proto::contract::validate_status`]).
    pub(crate) async fn status(&self) -> Result<StatusResponse, String> {
        self.counters.status.fetch_add(1, Ordering::Relaxed);
        self.call(
            "Status",
            |mut c| async move { c.status(StatusRequest {}).await },
        )
        .await
    }

    /// `Encrypt` of a new seed, unchecked (see [`kms_proto::contract::validate_encrypt`]).
    ///
    /// The request message is handed to tonic by value and encoded into its
    /// send buffer; that copy of the seed is not wiped by us.
    pub(crate) async fn encrypt(&self, seed: &[u8]) -> Result<EncryptResponse, String> {
        self.counters.encrypt.fetch_add(1, Ordering::Relaxed);
        let req = EncryptRequest {
            plaintext: seed.to_vec(),
            uid: new_uid(),
        };
        self.call("Encrypt", |mut c| async move { c.encrypt(req).await })
            .await
    }

    /// `Decrypt` of a stored DEK source; the answer goes straight into a
    /// wiped buffer (no copy).
    pub(crate) async fn decrypt(&self, req: DecryptRequest) -> Result<Wiped<Vec<u8>>, String> {
        self.counters.decrypt.fetch_add(1, Ordering::Relaxed);
        let mut req = req;
        req.uid = new_uid();
        let resp = self
            .call("Decrypt", |mut c| async move { c.decrypt(req).await })
            .await?;
        Ok(Wiped::new(resp.plaintext))
    }

    async fn call<T, F, Fut>(&self, method: &str, f: F) -> Result<T, String>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let attempt = async {
            let client = self.connected(deadline).await?;
            match f(client).await {
                Ok(r) => Ok(r.into_inner()),
                Err(status) => {
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                    ) {
                        self.forget().await;
                    }
                    Err(describe_status(&status))
                }
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{method} failed: {e}")),
            Err(_) => {
                self.forget().await;
                Err(format!(
                    "{method} failed: no answer within the {} timeout",
                    humantime::format_duration(self.timeout)
                ))
            }
        }
    }

    /// The current connection, dialling (and re-dialling until `deadline`,
    /// as `WaitForReady` does) when there is none.
    async fn connected(&self, deadline: Instant) -> Result<Client, String> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut backoff = Duration::from_millis(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match kms_proto::client::connect_v2(&self.endpoint, left.max(Duration::from_millis(1)))
                .await
            {
                Ok(c) => {
                    *slot = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    if Instant::now() + backoff >= deadline {
                        return Err(error_chain(&e));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
            }
        }
    }

    async fn forget(&self) {
        *self.client.lock().await = None;
    }
}

fn describe_status(s: &tonic::Status) -> String {
    let mut out = format!("{:?}", s.code());
    if !s.message().is_empty() {
        out.push_str(": ");
        out.push_str(s.message());
    }
    if let Some(src) = s.source() {
        out.push_str(": ");
        out.push_str(&error_chain(src));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_absent_socket_fails_within_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let ep = Endpoint::parse(&format!("unix://{}/none.sock", dir.path().display())).unwrap();
        let c = PluginClient::new(ep, Duration::from_millis(150));
        let t = std::time::Instant::now();
        let e = c.status().await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(
            e.starts_with("Status failed: ") && e.contains("none.sock"),
            "{e}"
        );
        assert_eq!(
            c.calls(),
            PluginCalls {
                status: 1,
                encrypt: 0,
                decrypt: 0
            }
        );
    }
}
