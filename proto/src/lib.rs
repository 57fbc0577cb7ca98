//! The Kubernetes KMS plugin wire contract, generated in one place.
//!
//! - [`v2`]: the KMS v2 plugin API kube-apiserver calls
//!   (`/v2.KeyManagementService/{Status,Encrypt,Decrypt}`).
//! - [`v1beta1`]: the legacy KMS v1 API.
//! - [`envelope`]: the `EncryptedObject` kube-apiserver stores behind the
//!   `k8s:enc:kms:v2:<name>:` prefix.
//! - [`contract`]: the rules both sides of the socket honour (limits,
//!   annotation keys, the checks of Status and Encrypt answers, request uids).
//! - [`sync`]: locking that survives a panic elsewhere, decided once.
//! - [`process`]: process hardening both programs apply at start (no core
//!   dumps, not dumpable, umask 077).
//! - [`shell`]: shell completions and man pages from a clap definition,
//!   for both programs' CLIs.
//! - [`endpoint`] and [`client`]: the `unix:///path` / `unix:///@abstract`
//!   endpoint syntax and a tonic channel over it, shared by the plugin's
//!   listener, its probe and bench, and the store's KMS provider.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod contract;
pub mod endpoint;
pub mod process;
pub mod shell;
pub mod sync;

/// KMS v2 plugin API (package `v2`).
#[allow(missing_docs, clippy::all)]
pub mod v2 {
    tonic::include_proto!("v2");
}

/// Legacy KMS v1 plugin API (package `v1beta1`).
#[allow(missing_docs, clippy::all)]
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// The KMS v2 at-rest envelope (`EncryptedObject`).
#[allow(missing_docs, clippy::all)]
pub mod envelope {
    tonic::include_proto!("envelope.v2");
}

pub use endpoint::Endpoint;
