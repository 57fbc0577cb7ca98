//! The KMS v2 envelope provider (`kms` with `apiVersion: v2`), byte-compatible
//! with kube-apiserver.
//!
//! - [`envelope`]: the stored form, `k8s:enc:kms:v2:<name>:` ‖ protobuf
//!   `EncryptedObject`, decoded zero-copy and validated as upstream;
//!   [`parse_envelope`] is the entry point for inspection and fuzzing.
//! - `dek`: HKDF-SHA256 Expand and AES-256-GCM, the per-value hot path.
//! - `cache`: unwrapped seeds and DEKs by upstream's cache key.
//! - `flight`: one plugin Decrypt per DEK source at a time.
//! - `fixed_seed`: a provider without a plugin for benches, tests and
//!   fuzzing (feature `test-support`).
//! - `plugin`: the gRPC client (Status, Encrypt, Decrypt, timeouts); every
//!   answer and every stored object is checked by the KMS contract
//!   ([`kms_proto::contract`]).
//! - `state`: the current write state, swapped atomically.
//! - `health`: the Status poller, seed rotation and the write window.
//! - [`KmsV2Transformer`]: all of it behind the store's synchronous
//!   [`Transformer`](crate::transform::Transformer).

mod cache;
mod dek;
pub mod envelope;
#[cfg(any(test, feature = "test-support"))]
mod fixed_seed;
mod flight;
mod health;
mod options;
mod plugin;
mod state;
mod transformer;

pub use envelope::{DekSourceType, EncryptedObjectRef, Envelope, EnvelopeError, parse_envelope};
pub use health::KmsHealth;
pub use options::{
    DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL, DEFAULT_CALL_TIMEOUT, DEFAULT_HEALTHY_POLL_INTERVAL,
    DEFAULT_UNHEALTHY_POLL_INTERVAL, DEFAULT_WRITE_WINDOW, KmsOptions,
};
pub use plugin::PluginCalls;
pub use transformer::KmsV2Transformer;
