//! `kms-plugin`: a Kubernetes KMS v2 plugin.
//!
//! kube-apiserver's EncryptionConfiguration points at this plugin's unix
//! socket; the plugin wraps the apiserver's data-key seeds with a
//! key-encryption key (KEK) held by a pluggable [`backend`].
//!
//! Layout, one concept per module:
//! - [`service`]: the gRPC service (Status/Encrypt/Decrypt) and error mapping;
//! - [`backend`]: the key backend seam and its implementations;
//! - [`keyring`]: versioned KEKs on disk; [`fsutil`]: crash-safe writes;
//! - [`wire`]: the ciphertext format; [`secret`]: locked key memory;
//! - [`server`], [`listener`], [`http`], [`health`], [`metrics`],
//!   [`telemetry`], [`hardening`], [`config`]: running as a daemon;
//! - [`keycmd`], [`probe`], [`bench`](mod@bench), [`cli`]: the command line.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod backend;
pub mod bench;
pub mod cli;
pub mod config;
pub mod fsutil;
pub mod hardening;
pub mod health;
pub mod http;
pub mod keycmd;
pub mod keyring;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod probe;
pub mod secret;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod wire;
