//! A tonic [`Channel`] to a KMS plugin over its unix socket, as kube-apiserver
//! dials it.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use crate::endpoint::Endpoint;
use crate::v2::key_management_service_client::KeyManagementServiceClient;

/// Why a channel could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Connecting the socket failed (absent, refused, permission).
    #[error("cannot connect to {endpoint}: {reason}")]
    Io {
        /// The endpoint tried.
        endpoint: String,
        /// The innermost cause (e.g. the OS error), once: tonic's transport
        /// error repeats it at every level of its chain.
        reason: String,
    },
}

/// The last error of `e`'s source chain, which names what really went wrong.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Opens one connection to `endpoint`. The connection is established eagerly,
/// so an absent or dead socket is reported here rather than on the first call.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Channel, ConnectError> {
    let ep = endpoint.clone();
    // The URI is required by tonic but never used: the connector decides.
    TonicEndpoint::from_static("http://kms-plugin.local")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_| {
            let ep = ep.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(dial(&ep).await?)) }
        }))
        .await
        .map_err(|e| ConnectError::Io {
            endpoint: endpoint.to_string(),
            reason: root_cause(&e),
        })
}

/// [`connect`], wrapped in the generated KMS v2 client.
pub async fn connect_v2(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<KeyManagementServiceClient<Channel>, ConnectError> {
    Ok(KeyManagementServiceClient::new(
        connect(endpoint, timeout).await?,
    ))
}

/// Dials the socket itself; useful to test whether anything is listening.
pub async fn dial(endpoint: &Endpoint) -> std::io::Result<tokio::net::UnixStream> {
    match endpoint {
        Endpoint::Path(p) => tokio::net::UnixStream::connect(p).await,
        Endpoint::Abstract(_) => {
            let addr = endpoint.socket_addr()?;
            let std = std::os::unix::net::UnixStream::connect_addr(&addr)?;
            std.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(std)
        }
    }
}
