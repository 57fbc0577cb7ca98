//! `kms-plugin`: a Kubernetes KMS v2 plugin.
//!
//! kube-apiserver's EncryptionConfiguration points at this plugin's unix
//! socket; the plugin wraps the apiserver's data-key seeds with a
//! key-encryption key (KEK) held by a pluggable [`backend`].
//!
//! The crate in three parts (`ARCHITECTURE.md` has the picture):
//! - the core: [`backend`] (the key backend seam and its implementations),
//!   [`keyring`] (versioned KEKs on disk), [`wire`] (the ciphertext format),
//!   `secret` (locked key memory) and `fsutil` (crash-safe writes); process
//!   hardening is [`kms_proto::process`], shared with the store;
//! - `daemon`: `serve` (configuration, the gRPC service, the socket, the
//!   health/metrics endpoint, logging);
//! - `cmd`: the command line (`key`, `probe`, `bench`), reached through
//!   [`main`].
//!
//! The KMS contract itself (limits, annotation keys, the checks of Status and
//! Encrypt answers) lives in [`kms_proto::contract`], shared with the store.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod backend;
mod cmd;
mod daemon;
mod fsutil;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod keyring;
mod secret;
pub mod wire;

pub use cmd::main;
