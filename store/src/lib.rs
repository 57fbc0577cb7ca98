//! `secret-store`: a reference store for Kubernetes Secrets that does what
//! kube-apiserver does with every Secret: validates it by type, encrypts it
//! byte-compatibly (KMS v2 envelope, aesgcm, aescbc, secretbox, identity) and
//! keeps it in an embedded RocksDB or in etcd, laid out as kube-apiserver
//! lays it out.
#![deny(missing_docs)]

pub mod bench;
pub mod cli;
pub mod encryption_config;
pub mod k8s;
pub mod migrate;
pub mod rand;
pub mod rewrap;
pub mod runtime;
pub mod secret;
pub mod storage;
pub mod store;
pub mod transform;
pub mod verify;
pub mod wipe;
