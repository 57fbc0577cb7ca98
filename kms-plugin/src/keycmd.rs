//! `kms-plugin key init|rotate|list|retire`: key ring management. Every
//! change takes the ring's writer lock, is validated, and is durable (the
//! ring file replaced atomically and fsynced) before it is reported.

use std::io::Write;
use std::path::PathBuf;

use crate::backend;
use crate::fsutil;
use crate::keyring::{self, KeyEntry, KeyState, Keyring, KeyringError, now_rfc3339};

/// Where the ring is and how to reach its backend.
#[derive(clap::Args, Debug, Clone)]
pub struct RingArgs {
    /// Key ring directory.
    #[arg(long, value_name = "DIR", env = "KMS_PLUGIN_KEYRING")]
    pub keyring: PathBuf,
    /// TPM transport for TPM-backed rings (default: $TCTI).
    #[arg(long, value_name = "TCTI", env = "TCTI")]
    pub tcti: Option<String>,
}

/// Key ring commands.
#[derive(clap::Subcommand, Debug)]
#[allow(missing_docs)] // flattened clap fields cannot carry doc comments
pub enum KeyCommand {
    /// Create a key ring with its first active key.
    Init {
        #[command(flatten)]
        ring: RingArgs,
        /// software (default), tpm-sealed or tpm-resident.
        #[arg(long, default_value = "software")]
        backend: String,
        /// aes-256-gcm (default) or xchacha20-poly1305 for software keys.
        #[arg(long)]
        algorithm: Option<String>,
    },
    /// Add a new active key; the previous ones stay for Decrypt.
    Rotate {
        #[command(flatten)]
        ring: RingArgs,
        /// Algorithm of the new key (default: the current active key's).
        #[arg(long)]
        algorithm: Option<String>,
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
        } => init(&ring, &backend, algorithm.as_deref()),
        KeyCommand::Rotate { ring, algorithm } => rotate(&ring, algorithm.as_deref()),
        KeyCommand::List { ring, output } => list(&ring, &output),
        KeyCommand::Retire { key_id, ring, yes } => retire(&ring, &key_id, yes),
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

fn init(args: &RingArgs, backend_name: &str, algorithm: Option<&str>) -> anyhow::Result<()> {
    let minter = backend::minter(backend_name, args.tcti.as_deref())?;
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

fn rotate(args: &RingArgs, algorithm: Option<&str>) -> anyhow::Result<()> {
    let lock = keyring::lock(&args.keyring)?;
    let mut ring = Keyring::load(&args.keyring)?;
    let minter = backend::minter(&ring.backend, args.tcti.as_deref())?;
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
