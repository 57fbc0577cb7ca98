//! The one table of key backends. A backend is one module that defines a
//! [`BackendRow`] plus one line in [`BACKENDS`]: its name, the options it
//! reads, how it checks them, opens the serving backend and makes new keys.
//! `serve --backend`, the key ring's `backend` field, the `key` commands,
//! the flags and the config file all go through this table.

use std::path::Path;
use std::sync::Arc;

use super::options::{ConnectOptions, CreateOptions, OptionSpec};
use super::{BackendError, KeyBackend, KeyMinter, pkcs11, software, tpm};
use crate::keyring::KeyEntry;

/// What `key init|add|rotate` know when they need a minter.
pub(crate) struct MintRequest<'a> {
    /// How to reach the backend.
    pub connect: &'a ConnectOptions,
    /// How to make the key.
    pub create: &'a CreateOptions,
    /// The key a rotation or an added version follows, whose settings a
    /// new key inherits unless told otherwise; `None` for `key init`.
    pub like: Option<&'a KeyEntry>,
}

/// Opens the serving backend (over the ring in a directory, for the
/// backends that keep one).
pub(crate) type OpenFn =
    fn(Option<&Path>, &ConnectOptions) -> Result<Arc<dyn KeyBackend>, BackendError>;
/// The ring directory a ring backend was opened with.
pub(crate) fn ring_dir(dir: Option<&Path>) -> Result<&Path, BackendError> {
    dir.ok_or_else(|| {
        BackendError::Config("keyring is required (e.g. --keyring /var/lib/kms-plugin)".into())
    })
}

/// Makes the minter `key init|add|rotate` create keys with.
pub(crate) type MinterFn = fn(&MintRequest<'_>) -> Result<Box<dyn KeyMinter>, BackendError>;

/// Destroys a retiring key where the backend keeps it (a token object),
/// given the ring id and the key's entry; says what it destroyed.
pub(crate) type DestroyFn = fn(&ConnectOptions, &str, &KeyEntry) -> Result<String, BackendError>;

/// What `key export` may write for a backend's ring entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Portability {
    /// The keys themselves (software): the file is as secret as the ring.
    Secret,
    /// Only references to keys in a device the nodes share (an HSM
    /// partition): no key, but it says which keys to use.
    Reference,
    /// Not by `key export`; the text says what moves them.
    Elsewhere(&'static str),
}

impl Portability {
    /// The command that sends staged keys to another node.
    pub(crate) fn send_staged(self) -> &'static str {
        match self {
            Portability::Secret | Portability::Reference => {
                "`kms-plugin key export --staged -o FILE`"
            }
            Portability::Elsewhere(_) => {
                "`kms-plugin key share --staged` (to the target `key export-target` wrote there)"
            }
        }
    }
}

/// One key backend.
pub(crate) struct BackendRow {
    /// The name in flags, config files and key rings.
    pub name: &'static str,
    /// One line for `--help` and messages.
    pub summary: &'static str,
    /// Whether its keys are listed in a key ring file (`--keyring`): false
    /// for a backend whose keys live in the service it talks to, which the
    /// `key` commands do not manage.
    pub ring: bool,
    /// Every option it reads.
    pub options: &'static [OptionSpec],
    /// What still holds a retired key's material (printed by `key retire`,
    /// so nobody is told more is destroyed than is).
    pub retirement: &'static str,
    /// Checks the connection options before anything binds or runs; the
    /// message names the option (`tcti="x" is not valid: ...`).
    pub check: fn(&ConnectOptions) -> Result<(), String>,
    /// Checks, without the device, that a ring entry's material is what its
    /// key_id says (for keys arriving from outside: imports, restores).
    pub verify: fn(&str, &KeyEntry) -> Result<(), String>,
    /// Opens the serving backend.
    pub open: OpenFn,
    /// Makes the minter of new keys.
    pub minter: MinterFn,
    /// For a backend whose keys are objects in a device: destroys one
    /// when `key retire` retires it (before the ring records it). `None`
    /// when the ring's copy is the key (removing it from the ring is all).
    pub destroy: Option<DestroyFn>,
    /// What `key export` writes of its entries, if anything.
    pub export: Portability,
}

impl std::fmt::Debug for BackendRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for BackendRow {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// Every backend, the default first.
pub(crate) const BACKENDS: &[BackendRow] = &[
    software::ROW,
    tpm::sealed::ROW,
    tpm::resident::ROW,
    pkcs11::ROW,
    super::transit::ROW,
];

/// The backend called `name`.
pub(crate) fn row(name: &str) -> Option<&'static BackendRow> {
    BACKENDS.iter().find(|r| r.name == name)
}

/// The default backend (`software`).
pub(crate) fn default_row() -> &'static BackendRow {
    &BACKENDS[0]
}

/// `software, tpm-sealed, tpm-resident, pkcs11 or transit`.
pub(crate) fn choices() -> String {
    let names: Vec<&str> = BACKENDS.iter().map(|r| r.name).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// The `--backend` help: every backend with its summary.
pub(crate) fn backend_help() -> String {
    let mut out = String::from("The key backend:");
    for r in BACKENDS {
        out.push_str(&format!("\n  {:<13} {}", r.name, r.summary));
    }
    out
}

/// The backend called `name`, or `"name" is not valid: choose ...`.
pub(crate) fn lookup(name: &str) -> Result<&'static BackendRow, String> {
    row(name).ok_or_else(|| format!("{name:?} is not valid: choose {}", choices()))
}

/// Opens the serving backend `row` (over the ring in `dir`, when it keeps one).
pub(crate) fn open(
    row: &BackendRow,
    dir: Option<&Path>,
    connect: &ConnectOptions,
) -> Result<Arc<dyn KeyBackend>, BackendError> {
    connect
        .check_applies(row)
        .and_then(|()| (row.check)(connect))
        .map_err(BackendError::Config)?;
    (row.open)(dir, connect)
}

/// The minter for a ring of backend `name` (the ring's own backend name).
pub(crate) fn minter(
    name: &str,
    req: &MintRequest<'_>,
) -> Result<Box<dyn KeyMinter>, BackendError> {
    let row = lookup(name).map_err(|e| BackendError::Config(format!("backend={e}")))?;
    req.connect
        .check_applies(row)
        .and_then(|()| req.create.check_applies(row))
        .and_then(|()| (row.check)(req.connect))
        .map_err(BackendError::Config)?;
    (row.minter)(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_listed() {
        for (i, r) in BACKENDS.iter().enumerate() {
            assert!(
                BACKENDS[i + 1..].iter().all(|o| o.name != r.name),
                "{} twice",
                r.name
            );
            assert_eq!(row(r.name).unwrap().name, r.name);
        }
        assert_eq!(
            choices(),
            "software, tpm-sealed, tpm-resident, pkcs11 or transit"
        );
        assert_eq!(default_row().name, "software");
        assert!(
            lookup("hsm")
                .unwrap_err()
                .contains("\"hsm\" is not valid: choose software")
        );
    }
}
