//! The etcd engine: the store on a real etcd cluster (v3 API), laid out as
//! kube-apiserver lays it out.
//!
//! - keys are the etcd keys themselves (`/registry/secrets/<ns>/<name>`,
//!   the prefix being the store's); values are exactly the at-rest bytes;
//! - a value's revisions are etcd's `create_revision` and `mod_revision`
//!   (the resourceVersion); the store revision is the response header's;
//! - every write is one transaction: `put` or `delete` if the key's
//!   `mod_revision` is what the caller read (0 for "absent"), else a `get`
//!   of the key, so a stale update is a conflict naming the current
//!   revision, as in the apiserver's `GuaranteedUpdate`;
//! - reads are linearizable (etcd's default: served through the leader's
//!   read index, never a stale member-local copy);
//! - `list` is a key-range read `[start, prefix_end)` with a limit.
//!
//! The store is synchronous and etcd-client is async: the engine's calls run
//! on the store's shared runtime through its one bridge ([`crate::runtime`]).
//! Every request carries etcd's require-leader header, so a member cut off
//! from the quorum answers `no leader` at once instead of holding the
//! request; members are tried in turn within `--etcd-timeout`.
//!
//! - `config`: [`EtcdConfig`], the settings, checked before anything is
//!   dialled (always built: the CLI parses them without the engine);
//! - `engine`: [`EtcdEngine`], the [`StorageEngine`](super::StorageEngine)
//!   (feature `etcd`);
//! - `failover`: members tried in turn, failures classified;
//! - `tls`: client certificates for the members;
//! - `snapshot_save`: [`save_snapshot`], `etcdctl snapshot save` for the bench.

mod config;
#[cfg(feature = "etcd")]
mod engine;
#[cfg(feature = "etcd")]
mod failover;
#[cfg(feature = "etcd")]
mod snapshot_save;
#[cfg(feature = "etcd")]
mod tls;

pub use config::{DEFAULT_TIMEOUT, EtcdConfig, EtcdTls, split_endpoints};
#[cfg(feature = "etcd")]
pub use engine::EtcdEngine;
#[cfg(feature = "etcd")]
pub use snapshot_save::save_snapshot;
