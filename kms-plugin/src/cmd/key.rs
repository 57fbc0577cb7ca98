//! `kms-plugin key init|rotate|list|retire|export-target|share|import`: key
//! ring management. Every change takes the ring's writer lock, is
//! validated, and is durable (the ring file replaced atomically and
//! fsynced) before it is reported. `export-target`, `share` and `import`
//! copy TPM-held KEKs from one node's TPM to another's (see
//! [`crate::backend::tpm::duplicate`]).

use std::io::Write;
use std::path::PathBuf;

use crate::backend::options::{ConnectOptions, CreateOptions};
use crate::backend::registry::{self, MintRequest};
use crate::backend::{self, tpm};
use crate::fsutil;
use crate::keyring::{self, KeyEntry, KeyState, Keyring, KeyringError, now_rfc3339};

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
        /// tpm-sealed keys; tpm-aes-256-cfb-hmac-sha256 for tpm-resident.
        #[arg(long)]
        algorithm: Option<String>,
        #[command(flatten)]
        create: CreateOptions,
    },
    /// Add a new active key; the previous ones stay for Decrypt.
    Rotate {
        #[command(flatten)]
        ring: RingArgs,
        /// Algorithm of the new key (default: the current active key's).
        #[arg(long)]
        algorithm: Option<String>,
        #[command(flatten)]
        create: CreateOptions,
    },
    /// List keys: id, version, algorithm, state, created (never material).
    List {
        #[command(flatten)]
        ring: RingArgs,
        /// table (default) or json.
        #[arg(short = 'o', long, default_value = "table")]
        output: String,
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
    /// TPM backends, on a node that is to receive KEKs: write this TPM's
    /// storage key (public) and print its fingerprint.
    ExportTarget {
        #[command(flatten)]
        connect: ConnectOptions,
        /// Where to write the target file (default: stdout).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// TPM backends: copy this ring's shareable KEKs to another node's TPM.
    /// The bundle can only be imported by that TPM.
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
        /// Where to write the bundle.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
    },
    /// TPM backends: import a bundle made by `key share` for this TPM into
    /// this node's ring (created if missing).
    Import {
        /// The bundle file.
        bundle: PathBuf,
        #[command(flatten)]
        ring: RingArgs,
    },
}

/// Result of a key command: exit code 0 on success.
pub fn run(cmd: KeyCommand) -> Result<(), anyhow::Error> {
    crate::hardening::private_umask();
    let _ = crate::hardening::disable_core_dumps();
    match cmd {
        KeyCommand::Init {
            ring,
            backend,
            algorithm,
            create,
        } => init(&ring, &backend, algorithm.as_deref(), &create),
        KeyCommand::Rotate {
            ring,
            algorithm,
            create,
        } => rotate(&ring, algorithm.as_deref(), &create),
        KeyCommand::List { ring, output } => list(&ring, &output),
        KeyCommand::Retire { key_id, ring, yes } => retire(&ring, &key_id, yes),
        KeyCommand::ExportTarget { connect, output } => {
            export_target(&connect.with_fallbacks(&Default::default()), output)
        }
        KeyCommand::Share {
            ring,
            to,
            fingerprint,
            output,
        } => share(&ring, &to, &fingerprint, &output),
        KeyCommand::Import { bundle, ring } => import(&ring, &bundle),
    }
}

fn mint_entry(
    ring: &Keyring,
    minter: &dyn backend::KeyMinter,
    algorithm: &str,
) -> anyhow::Result<KeyEntry> {
    let m = minter.mint(&ring.ring_id, ring.next_version, algorithm)?;
    Ok(KeyEntry {
        version: ring.next_version,
        key_id: m.key_id,
        algorithm: m.algorithm,
        created: now_rfc3339(),
        state: KeyState::Active,
        retired: None,
        material: Some(m.material),
    })
}

fn init(
    args: &RingArgs,
    backend_name: &str,
    algorithm: Option<&str>,
    create: &CreateOptions,
) -> anyhow::Result<()> {
    let minter = registry::minter(
        backend_name,
        &MintRequest {
            connect: &args.connect(),
            create,
            like: None,
        },
    )?;
    fsutil::ensure_private_dir(&args.keyring).map_err(|e| {
        anyhow::anyhow!(
            "cannot create key ring directory {}: {e}",
            args.keyring.display()
        )
    })?;
    let lock = keyring::lock(&args.keyring)?;
    if keyring::ring_path(&args.keyring).exists() {
        return Err(KeyringError::Exists(keyring::ring_path(&args.keyring)).into());
    }
    let mut ring = Keyring::new(minter.backend())
        .map_err(|_| anyhow::anyhow!("the OS random number generator failed"))?;
    let alg = algorithm.unwrap_or(minter.algorithms()[0]);
    let entry = mint_entry(&ring, &*minter, alg)?;
    let (id, alg) = (entry.key_id.clone(), entry.algorithm.clone());
    ring.push_active(entry)?;
    ring.save(&args.keyring, &lock)?;
    println!(
        "created key ring {} (backend {})",
        args.keyring.display(),
        ring.backend
    );
    println!("created key {id} ({alg}, version 1), active");
    Ok(())
}

fn rotate(args: &RingArgs, algorithm: Option<&str>, create: &CreateOptions) -> anyhow::Result<()> {
    let lock = keyring::lock(&args.keyring)?;
    let mut ring = Keyring::load(&args.keyring)?;
    // A new key is made like the one it replaces unless told otherwise.
    let minter = registry::minter(
        &ring.backend,
        &MintRequest {
            connect: &args.connect(),
            create,
            like: ring.active(),
        },
    )?;
    let previous = ring
        .active()
        .map(|k| (k.key_id.clone(), k.algorithm.clone()));
    let alg = algorithm
        .map(str::to_string)
        .or_else(|| previous.as_ref().map(|p| p.1.clone()))
        .unwrap_or_else(|| minter.algorithms()[0].to_string());
    let entry = mint_entry(&ring, &*minter, &alg)?;
    let (id, version, alg) = (entry.key_id.clone(), entry.version, entry.algorithm.clone());
    ring.push_active(entry)?;
    ring.save(&args.keyring, &lock)?;
    // Reported only once durable: the ring file is replaced and fsynced.
    println!("created key {id} ({alg}, version {version}), active");
    if let Some((p, _)) = previous {
        println!("previous key {p} stays enabled for Decrypt");
    }
    println!(
        "a running `kms-plugin serve` picks this up within its reload interval (1s by default)"
    );
    let _ = std::io::stdout().flush();
    Ok(())
}

fn list(args: &RingArgs, output: &str) -> anyhow::Result<()> {
    let ring = Keyring::load(&args.keyring)?;
    match output {
        "json" => {
            let keys: Vec<_> = ring
                .keys
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "key_id": k.key_id,
                        "version": k.version,
                        "algorithm": k.algorithm,
                        "state": k.state.to_string(),
                        "created": k.created,
                        "retired": k.retired,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "ring_id": ring.ring_id,
                "backend": ring.backend,
                "keys": keys,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        "table" => {
            let w = ring
                .keys
                .iter()
                .map(|k| k.key_id.len())
                .max()
                .unwrap_or(6)
                .max(6);
            println!(
                "{:<w$}  {:>7}  {:<18}  {:<8}  {:<20}  RETIRED",
                "KEY_ID", "VERSION", "ALGORITHM", "STATE", "CREATED"
            );
            for k in &ring.keys {
                println!(
                    "{:<w$}  {:>7}  {:<18}  {:<8}  {:<20}  {}",
                    k.key_id,
                    k.version,
                    k.algorithm,
                    k.state.to_string(),
                    k.created,
                    k.retired.as_deref().unwrap_or("-")
                );
            }
        }
        other => anyhow::bail!("output={other:?} is not valid: choose table or json"),
    }
    Ok(())
}

fn retire(args: &RingArgs, key_id: &str, yes: bool) -> anyhow::Result<()> {
    let lock = keyring::lock(&args.keyring)?;
    let mut ring = Keyring::load(&args.keyring)?;
    // Check refusals (active, unknown, already retired) before asking.
    {
        let mut probe = Keyring::load(&args.keyring)?;
        probe.retire(key_id, now_rfc3339())?;
    }
    eprintln!(
        "WARNING: retiring {key_id} destroys its material. Data still wrapped by it becomes unreadable: \
         rewrap first (e.g. `secret-store rewrap`, or `kubectl get secrets -A -o json | kubectl replace -f -`) \
         and check that nothing reports this key_id."
    );
    if !yes {
        anyhow::bail!("not retired: re-run with --yes to confirm");
    }
    ring.retire(key_id, now_rfc3339())?;
    ring.save(&args.keyring, &lock)?;
    println!("retired key {key_id}; its material is destroyed, its key_id will never be reused");
    Ok(())
}

fn tpm_worker(connect: &ConnectOptions) -> anyhow::Result<std::sync::Arc<tpm::worker::Worker>> {
    if connect.get("tcti").is_none() {
        anyhow::bail!(
            "this command needs a TPM: pass --tcti (e.g. device:/dev/tpmrm0) or set TCTI"
        );
    }
    Ok(tpm::worker(connect, "a TPM ring")?)
}

fn export_target(connect: &ConnectOptions, output: Option<PathBuf>) -> anyhow::Result<()> {
    let worker = tpm_worker(connect)?;
    let target = tpm::duplicate::export_target(&worker)?;
    let text = serde_json::to_string_pretty(&target)? + "\n";
    match output {
        Some(p) => {
            fsutil::write_atomic(&p, text.as_bytes())
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?;
            println!("wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    // The fingerprint goes to stderr too, so it is seen even with -o -.
    eprintln!(
        "storage key fingerprint of this TPM{}: {}",
        if target.node.is_empty() {
            String::new()
        } else {
            format!(" ({})", target.node)
        },
        target.fingerprint
    );
    eprintln!(
        "give the file to the node that shares the KEKs, and tell its operator this fingerprint over a channel you trust"
    );
    Ok(())
}

fn share(
    args: &RingArgs,
    to: &std::path::Path,
    fingerprint: &str,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    let ring = {
        let _lock = keyring::lock(&args.keyring)?;
        Keyring::load(&args.keyring)?
    };
    let worker = tpm_worker(&args.connect())?;
    let target: tpm::duplicate::Target = tpm::duplicate::read_json(to, "target file")?;
    let (bundle, skipped) = tpm::duplicate::share(&worker, &ring, &target, fingerprint)?;
    let text = serde_json::to_vec_pretty(&bundle)?;
    fsutil::write_atomic(output, &text)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", output.display()))?;
    let n = bundle.keys.iter().filter(|k| k.objects.is_some()).count();
    println!(
        "wrote {}: {n} key(s) of ring {} for the TPM with storage key {}",
        output.display(),
        bundle.ring_id,
        bundle.target
    );
    for s in skipped {
        eprintln!(
            "WARNING: key {s} was created without --shareable and stays on this node; \
             the other node cannot decrypt what it wrapped: rewrap, then retire it"
        );
    }
    println!(
        "on the target node: kms-plugin key import {} --keyring DIR",
        output.display()
    );
    Ok(())
}

fn import(args: &RingArgs, bundle_path: &std::path::Path) -> anyhow::Result<()> {
    let bundle: tpm::duplicate::Bundle = tpm::duplicate::read_json(bundle_path, "bundle")?;
    let worker = tpm_worker(&args.connect())?;
    let entries = tpm::duplicate::import(&worker, &bundle)?;
    fsutil::ensure_private_dir(&args.keyring).map_err(|e| {
        anyhow::anyhow!(
            "cannot create key ring directory {}: {e}",
            args.keyring.display()
        )
    })?;
    let lock = keyring::lock(&args.keyring)?;
    let existing = if keyring::ring_path(&args.keyring).exists() {
        Some(Keyring::load(&args.keyring)?)
    } else {
        None
    };
    let (ring, added) = tpm::duplicate::merge(existing, &bundle, entries)?;
    ring.save(&args.keyring, &lock)?;
    for id in &added {
        println!("imported key {id}");
    }
    if added.is_empty() {
        println!("no new keys; states updated from the bundle");
    }
    if let Some(a) = ring.active() {
        println!("active key: {}", a.key_id);
    }
    println!(
        "a running `kms-plugin serve` picks this up within its reload interval (1s by default)"
    );
    Ok(())
}
