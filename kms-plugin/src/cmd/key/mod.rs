//! `kms-plugin key ...`: key ring management.
//!
//! Every change takes the ring's writer lock, is validated, and is durable
//! (the ring file replaced atomically and fsynced, then the directory's
//! high-water mark) before it is reported.
//!
//! - `lifecycle`: `init`, `add`, `activate`, `rotate`, `list`, `retire`:
//!   the staged rotation a control plane of several nodes needs
//!   (add everywhere, check fingerprints, activate everywhere), and the
//!   single-node shortcut;
//! - `transfer`: moving keys between nodes and back from backups, where
//!   nothing from outside may remove a key or change the active one:
//!   `export` (software) and `export-target`/`share` (TPM), `import`
//!   (staged, only with the digest the sender printed), `restore` (merge a
//!   ring file), `accept-loss`.

mod lifecycle;
mod transfer;

use std::path::PathBuf;

use crate::backend::options::{ConnectOptions, CreateOptions};
use crate::backend::registry;

/// Where the ring is and how to reach its backend.
#[derive(clap::Args, Debug, Clone)]
pub struct RingArgs {
    /// Key ring directory.
    #[arg(long, value_name = "DIR", env = "KMS_PLUGIN_KEYRING")]
    pub keyring: PathBuf,
    /// How to reach the ring's backend (e.g. --tcti).
    #[command(flatten)]
    pub connect: ConnectOptions,
}

impl RingArgs {
    /// The connection options, with their environment fallbacks.
    fn connect(&self) -> ConnectOptions {
        self.connect.clone().with_fallbacks(&Default::default())
    }
}

/// Key ring commands.
#[derive(clap::Subcommand, Debug)]
#[allow(missing_docs)] // flattened clap fields cannot carry doc comments
pub enum KeyCommand {
    /// Create a key ring with its first active key.
    Init {
        #[command(flatten)]
        ring: RingArgs,
        /// The key backend.
        #[arg(long, default_value = "software", long_help = registry::backend_help())]
        backend: String,
        /// aes-256-gcm (default) or xchacha20-poly1305 for software and
        /// tpm-sealed keys; tpm-aes-256-cfb-hmac-sha256 for tpm-resident;
        /// pkcs11-aes-256-gcm for pkcs11.
        #[arg(long)]
        algorithm: Option<String>,
        #[command(flatten)]
        create: CreateOptions,
    },
    /// Add a new key in state staged: it decrypts, nothing encrypts with it,
    /// Status keeps the current key_id. Give it to every node, then
    /// `key activate` it on every node.
    Add {
        #[command(flatten)]
        ring: RingArgs,
        /// Algorithm of the new key (default: the active key's).
        #[arg(long)]
        algorithm: Option<String>,
        #[command(flatten)]
        create: CreateOptions,
    },
    /// Make a staged (or former active) key the active one; the previous
    /// active key stays enabled for Decrypt.
    Activate {
        /// The key_id to activate.
        key_id: String,
        #[command(flatten)]
        ring: RingArgs,
    },
    /// `key add` and `key activate` at once: for a single node only (on
    /// several nodes, the others cannot read what this one then writes
    /// until they hold the key).
    Rotate {
        #[command(flatten)]
        ring: RingArgs,
        /// Algorithm of the new key (default: the active key's).
        #[arg(long)]
        algorithm: Option<String>,
        #[command(flatten)]
        create: CreateOptions,
    },
    /// List keys (id, version, algorithm, state, created; never material)
    /// and the ring fingerprint.
    List {
        #[command(flatten)]
        ring: RingArgs,
        /// table: lines for a person; json: one JSON document with the same
        /// facts (and the ring's next version).
        #[arg(short = 'o', long, value_enum, default_value_t = super::Output::Table)]
        output: super::Output,
    },
    /// Destroy a non-active key's material. Data still wrapped by it becomes unreadable.
    Retire {
        /// The key_id to retire.
        key_id: String,
        #[command(flatten)]
        ring: RingArgs,
        /// Confirm: data wrapped only by this key will be lost.
        #[arg(long)]
        yes: bool,
    },
    /// Software and pkcs11 rings: write keys to a file for another node
    /// (`key import` there) and print its digest. A software file holds the
    /// keys (move it over a secure channel, then delete it); a pkcs11 file
    /// only which token objects to use.
    Export {
        #[command(flatten)]
        ring: RingArgs,
        /// Only the staged keys (a rotation); default: every key not retired
        /// (a node joining).
        #[arg(long)]
        staged: bool,
        /// Where to write the file (mode 0600).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
    },
    /// TPM backends, on a node that is to receive KEKs: write this TPM's
    /// storage key (public) and print its fingerprint.
    ExportTarget {
        #[command(flatten)]
        connect: ConnectOptions,
        /// Where to write the target file (default: stdout).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// TPM backends: copy this ring's shareable KEKs to another node's TPM
    /// and print the bundle's digest. The bundle can only be imported by
    /// that TPM, and only with that digest.
    Share {
        #[command(flatten)]
        ring: RingArgs,
        /// The target file `key export-target` wrote on the other node.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// The fingerprint `key export-target` printed on the other node,
        /// checked by you out of band (not copied from the target file).
        #[arg(long, value_name = "FINGERPRINT")]
        fingerprint: String,
        /// Only the staged keys (a rotation); default: every key not retired
        /// (a node joining).
        #[arg(long)]
        staged: bool,
        /// Where to write the bundle.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Add the keys of a file made by `key export` or `key share` on another
    /// node to this node's ring (created if missing), as staged keys. Never
    /// changes the active key, never retires or removes anything.
    Import {
        /// The file.
        bundle: PathBuf,
        #[command(flatten)]
        ring: RingArgs,
        /// The digest `key export`/`key share` printed on the sending node,
        /// carried here by a channel you trust (not copied from the file).
        #[arg(long, value_name = "DIGEST")]
        expect: String,
    },
    /// Merge a ring file (a backup, or another node's ring of the same ring
    /// id) into this ring: keys it lacks are added as staged (or retired
    /// where the file says so); no key is removed, the active key stays.
    Restore {
        /// The ring file.
        file: PathBuf,
        #[command(flatten)]
        ring: RingArgs,
        /// Apply the merge (without it, only say what it would add).
        #[arg(long)]
        yes: bool,
    },
    /// Accept that keys this ring held are lost (its file went back and no
    /// copy of them is left): record them as retired, so their versions and
    /// key_ids are never reused, and carry on with what the file holds.
    AcceptLoss {
        #[command(flatten)]
        ring: RingArgs,
        /// Confirm: data wrapped by the lost keys is unreadable for good.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs a key command.
pub fn run(cmd: KeyCommand) -> Result<(), anyhow::Error> {
    kms_proto::process::private_umask();
    let _ = kms_proto::process::disable_core_dumps();
    match cmd {
        KeyCommand::Init {
            ring,
            backend,
            algorithm,
            create,
        } => lifecycle::init(&ring, &backend, algorithm.as_deref(), &create),
        KeyCommand::Add {
            ring,
            algorithm,
            create,
        } => lifecycle::add(&ring, algorithm.as_deref(), &create, false),
        KeyCommand::Activate { key_id, ring } => lifecycle::activate(&ring, &key_id),
        KeyCommand::Rotate {
            ring,
            algorithm,
            create,
        } => lifecycle::add(&ring, algorithm.as_deref(), &create, true),
        KeyCommand::List { ring, output } => lifecycle::list(&ring, output),
        KeyCommand::Retire { key_id, ring, yes } => lifecycle::retire(&ring, &key_id, yes),
        KeyCommand::Export {
            ring,
            staged,
            output,
        } => transfer::export(&ring, staged, &output),
        KeyCommand::ExportTarget { connect, output } => {
            transfer::export_target(&connect.with_fallbacks(&Default::default()), output)
        }
        KeyCommand::Share {
            ring,
            to,
            fingerprint,
            staged,
            output,
        } => transfer::share(&ring, &to, &fingerprint, staged, &output),
        KeyCommand::Import {
            bundle,
            ring,
            expect,
        } => transfer::import(&ring, &bundle, &expect),
        KeyCommand::Restore { file, ring, yes } => transfer::restore(&ring, &file, yes),
        KeyCommand::AcceptLoss { ring, yes } => transfer::accept_loss(&ring, yes),
    }
}
