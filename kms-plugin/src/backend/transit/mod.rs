//! `transit`: the KEK is a key of an OpenBao (or HashiCorp Vault) Transit
//! engine; every wrap and unwrap is a call to the server, and the key never
//! leaves it.
//!
//! The plugin keeps no key ring: the versions of the Transit key are the
//! versions of the KEK (`bao write -f transit/keys/NAME/rotate` makes a new
//! one, `min_decryption_version` retires old ones), and every node of a
//! control plane reaches the same key, so a rotation needs no staging:
//! every node decrypts every version at once.
//!
//! - key_id: `transit-<key>-v<version>-<digest>`, the digest (SHA-256,
//!   48 bits shown) over the server's cluster id (`sys/health`, the same
//!   from every node and address of one cluster), the namespace, the mount,
//!   the key name, the version and that version's creation time, so a key
//!   deleted and made again under the same name never reuses a key_id
//!   (`keys`);
//! - the ciphertext: a header with the version, then Transit's own bytes;
//!   the associated data sent to Transit binds the format and the version
//!   (`format`);
//! - `config`: the options and their checks (before anything binds);
//! - `http`: the HTTP client: deadlines inside the apiserver's 3 s,
//!   bounded retries with backoff on 5xx and connection errors, none on
//!   4xx, and the errors that name their cause (policy, missing key or
//!   mount, sealed, TLS);
//! - `auth`: the token from a file (read again when it changes) or from
//!   an AppRole login, renewed before it expires;
//! - `backend`: the [`KeyBackend`]: the active
//!   key_id is cached (read again every few seconds from the reload loop,
//!   never for a Status), the self-test is the daemon's cached round trip.

pub(crate) mod auth;
pub(crate) mod backend;
pub(crate) mod config;
pub(crate) mod format;
pub(crate) mod http;
pub(crate) mod keys;

use std::path::Path;
use std::sync::Arc;

pub use http::TransitError;
pub use keys::{Identity, key_id};

use super::options::{ConnectOptions, Kind, OptionSpec, Scope};
use super::registry::{BackendRow, Portability};
use super::{BackendError, KeyBackend};

/// The backend name in flags and messages.
pub(crate) const NAME: &str = "transit";

const fn opt(name: &'static str, value_name: &'static str, help: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        value_name,
        help,
        env: None,
        scope: Scope::Connect,
        kind: Kind::Value,
    }
}

/// The options of the transit backend. None takes a secret: tokens and
/// secret ids are read from files.
pub(crate) const OPTIONS: &[OptionSpec] = &[
    opt(
        "transit-addr",
        "URL",
        "transit: the OpenBao/Vault server, https://HOST:PORT (http:// only to a loopback dev server)",
    ),
    opt(
        "transit-key",
        "NAME",
        "transit: the Transit key (aes256-gcm96, aes128-gcm96, chacha20-poly1305 or xchacha20-poly1305)",
    ),
    opt(
        "transit-mount",
        "PATH",
        "transit: where the Transit engine is mounted (default: transit)",
    ),
    opt(
        "transit-namespace",
        "NAMESPACE",
        "transit: the namespace of the mount (OpenBao namespaces, Vault Enterprise)",
    ),
    opt(
        "transit-token-file",
        "FILE",
        "transit: a file holding the token (read again when it changes; renewed before it expires)",
    ),
    opt(
        "transit-role-id-file",
        "FILE",
        "transit: AppRole login: a file holding the role_id (with --transit-secret-id-file)",
    ),
    opt(
        "transit-secret-id-file",
        "FILE",
        "transit: AppRole login: a file holding the secret_id",
    ),
    opt(
        "transit-approle-mount",
        "PATH",
        "transit: where the AppRole auth method is mounted (default: approle)",
    ),
    opt(
        "transit-ca-file",
        "FILE",
        "transit: PEM CA certificates that verify the server (default: the system's trust store)",
    ),
    opt(
        "transit-client-cert-file",
        "FILE",
        "transit: PEM client certificate for mutual TLS (with --transit-client-key-file)",
    ),
    opt(
        "transit-client-key-file",
        "FILE",
        "transit: PEM private key of the client certificate",
    ),
];

/// The registry row.
pub(crate) const ROW: BackendRow = BackendRow {
    name: NAME,
    ring: false,
    summary: "a key of an OpenBao/Vault Transit engine; every wrap and unwrap is a call to the server (no key ring)",
    options: OPTIONS,
    retirement: "the version stays in Transit until it is trimmed (transit/keys/NAME/trim); min_decryption_version only stops its use",
    check: |o| config::TransitConfig::from_options(o).map(|_| ()),
    verify: |_, _| Err("the transit backend keeps no key ring".into()),
    open,
    destroy: None,
    export: Portability::Elsewhere(
        "transit keys stay in Transit: every node reaches the same key, nothing moves between nodes",
    ),
    minter: |_| {
        Err(BackendError::Config(
            "backend transit keeps its keys in Transit, not in a key ring: create the key with `bao write -f transit/keys/NAME` and rotate it with `bao write -f transit/keys/NAME/rotate` (the plugin picks the new version up by itself)".into(),
        ))
    },
};

fn open(dir: Option<&Path>, o: &ConnectOptions) -> Result<Arc<dyn KeyBackend>, BackendError> {
    if dir.is_some() {
        return Err(BackendError::Config(
            "backend transit keeps no key ring: drop --keyring".into(),
        ));
    }
    let cfg = config::TransitConfig::from_options(o).map_err(BackendError::Config)?;
    Ok(Arc::new(backend::TransitBackend::open(cfg)?))
}
