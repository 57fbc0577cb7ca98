//! `secret-store`: a reference store for Kubernetes Secrets that does what
//! kube-apiserver does with every Secret: validates it by type, encrypts it
//! byte-compatibly (KMS v2 envelope, aesgcm, aescbc, secretbox, identity) and
//! keeps it in an embedded RocksDB or in etcd, laid out as kube-apiserver
//! lays it out.

mod bench;
mod cli;
pub mod encryption_config;
pub mod k8s;
pub mod migrate;
pub mod placement;
mod progress;
mod protowire;
pub mod rand;
pub mod rewrap;
pub mod runtime;
pub mod secret;
mod stages;
pub mod storage;
pub mod store;
pub mod transform;
pub mod verify;
pub mod wipe;

/// The `secret-store` command line: parses the arguments, runs the command
/// and returns the exit code. The binary's only call into the library.
pub fn run_cli() -> std::process::ExitCode {
    cli::main()
}
