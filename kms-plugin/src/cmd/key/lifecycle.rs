//! `key init|add|activate|rotate|list|retire`: a key's life in one ring.

use std::io::Write;

use super::RingArgs;
use crate::backend::KeyMinter;
use crate::backend::options::CreateOptions;
use crate::backend::registry::{self, MintRequest};
use crate::fsutil;
use crate::keyring::{self, KeyEntry, KeyState, Keyring, KeyringError, now_rfc3339};

/// What every command that changes the active key tells the operator.
const PICKUP: &str = "a running `kms-plugin serve` picks this up within its reload interval (1s by default); kube-apiserver wraps a new seed at its next Status poll (within a minute)";

fn mint_entry(ring: &Keyring, minter: &dyn KeyMinter, algorithm: &str) -> anyhow::Result<KeyEntry> {
    let m = minter.mint(&ring.ring_id, ring.next_version, algorithm)?;
    Ok(KeyEntry {
        version: ring.next_version,
        key_id: m.key_id,
        algorithm: m.algorithm,
        created: now_rfc3339(),
        state: KeyState::Staged,
        retired: None,
        material: Some(m.material),
    })
}

/// `key init`: a new ring with its first active key.
pub(super) fn init(
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
        "created key ring {} (backend {}, ring id {})",
        args.keyring.display(),
        ring.backend,
        ring.ring_id
    );
    println!("created key {id} ({alg}, version 1), active");
    println!("ring fingerprint: {}", ring.fingerprint());
    Ok(())
}

/// `key add` (staged) and `key rotate` (`activate`: staged, then active).
pub(super) fn add(
    args: &RingArgs,
    algorithm: Option<&str>,
    create: &CreateOptions,
    activate: bool,
) -> anyhow::Result<()> {
    let lock = keyring::lock(&args.keyring)?;
    let mut ring = Keyring::load(&args.keyring)?;
    // A new key is made like the active one unless told otherwise.
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
    if activate {
        ring.push_active(entry)?;
    } else {
        ring.push_staged(entry)?;
    }
    ring.save(&args.keyring, &lock)?;
    // Reported only once durable: the ring file is replaced and fsynced.
    if activate {
        println!("created key {id} ({alg}, version {version}), active");
        if let Some((p, _)) = previous {
            println!("previous key {p} stays enabled for Decrypt");
        }
        println!("ring fingerprint: {}", ring.fingerprint());
        println!(
            "note: `key rotate` is `key add` + `key activate` in one step, right for a single node. \
             With several control-plane nodes, `key add` on one, give the key to every other node \
             (`key export`/`key share`, then `key import`), check that `key list` shows the same \
             fingerprint everywhere, then `key activate` on every node: otherwise the other nodes \
             cannot read what this one writes until they hold the key"
        );
        println!("{PICKUP}");
    } else {
        println!(
            "created key {id} ({alg}, version {version}), staged: it decrypts, nothing encrypts with it yet"
        );
        println!("ring fingerprint: {}", ring.fingerprint());
        let send = registry::lookup(&ring.backend)
            .map(|r| r.export.send_staged())
            .unwrap_or("`kms-plugin key export --staged` or `key share --staged`");
        println!(
            "next: give it to every other node ({send}), `kms-plugin key import FILE --expect DIGEST` there, \
             check that every node's `key list` shows the same fingerprint, then \
             `kms-plugin key activate {id}` on every node"
        );
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

/// `key activate`.
pub(super) fn activate(args: &RingArgs, key_id: &str) -> anyhow::Result<()> {
    let lock = keyring::lock(&args.keyring)?;
    let mut ring = Keyring::load(&args.keyring)?;
    let previous = ring.activate(key_id)?;
    ring.save(&args.keyring, &lock)?;
    match previous {
        Some(p) => println!("activated key {key_id}; previous key {p} stays enabled for Decrypt"),
        None => println!("activated key {key_id}"),
    }
    println!("ring fingerprint: {}", ring.fingerprint());
    let staged: Vec<&str> = ring.staged().map(|k| k.key_id.as_str()).collect();
    if !staged.is_empty() {
        println!("still staged: {}", staged.join(", "));
    }
    println!("{PICKUP}");
    Ok(())
}

/// `key list`.
pub(super) fn list(args: &RingArgs, output: crate::cmd::Output) -> anyhow::Result<()> {
    let ring = Keyring::load(&args.keyring)?;
    let fingerprint = ring.fingerprint();
    match output {
        crate::cmd::Output::Json => {
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
                "next_version": ring.next_version,
                "fingerprint": fingerprint.as_str(),
                "keys": keys,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        crate::cmd::Output::Table => {
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
            println!();
            println!(
                "ring {} ({}), fingerprint {fingerprint}",
                ring.ring_id, ring.backend
            );
        }
    }
    Ok(())
}

/// `key retire`: says exactly what it destroys and what still holds the key.
pub(super) fn retire(args: &RingArgs, key_id: &str, yes: bool) -> anyhow::Result<()> {
    let lock = keyring::lock(&args.keyring)?;
    let mut ring = Keyring::load(&args.keyring)?;
    let row = registry::lookup(&ring.backend).map_err(anyhow::Error::msg)?;
    // Check refusals (active, unknown, already retired) before asking.
    let mut probe = Keyring::load(&args.keyring)?;
    probe.retire(key_id, now_rfc3339())?;
    eprintln!(
        "WARNING: retiring {key_id} destroys its material in this ring. Data still wrapped by it becomes unreadable: \
         rewrap first (e.g. `secret-store rewrap`, or `kubectl get secrets -A -o json | kubectl replace -f -`) \
         and check that nothing reports this key_id."
    );
    if !yes {
        anyhow::bail!("not retired: re-run with --yes to confirm");
    }
    // A key that is an object in a device is destroyed there first: if
    // that fails nothing changed; if the save after it fails, the ring
    // lists a key whose object is gone, and a second retire finishes.
    let destroyed = match (row.destroy, ring.get(key_id)) {
        (Some(destroy), Some(entry)) => Some(
            destroy(&args.connect(), &ring.ring_id, entry)
                .map_err(|e| anyhow::anyhow!("not retired: {e}"))?,
        ),
        _ => None,
    };
    ring.retire(key_id, now_rfc3339())?;
    ring.save(&args.keyring, &lock)?;
    println!("retired key {key_id}; its key_id and version will never be reused");
    if let Some(said) = destroyed {
        println!("{said}");
    }
    println!(
        "what this destroyed, and what still holds the key: {}",
        row.retirement
    );
    println!("ring fingerprint: {}", ring.fingerprint());
    Ok(())
}
