//! Moving keys between nodes and back from backups.
//!
//! The rule for everything that arrives from outside the node: it may add
//! keys, as staged, and nothing else; it is accepted only when the operator
//! confirms where it came from. `key export` (software, pkcs11) and `key share`
//! (TPM) print the digest of the file they write; `key import` refuses the
//! file unless `--expect` gives that digest, which the operator carries
//! from the sending node by a channel they trust. A file built by anyone
//! else (a KEK they know, planted with the ring's id and the next version)
//! has another digest. `key restore` merges a ring file the operator has
//! (a backup) after showing what it would add.

use std::path::{Path, PathBuf};

use super::RingArgs;
use crate::backend::options::ConnectOptions;
use crate::backend::registry::{self, Portability};
use crate::backend::tpm;
use crate::backend::tpm::duplicate::{Bundle, Selection, Target};
use crate::fsutil;
use crate::keyring::export::{self as ring_export, Export};
use crate::keyring::{self, KeyEntry, KeyState, Keyring, Merge, MergeMode, now_rfc3339};

/// Files larger than this are refused unread.
const MAX_FILE: u64 = 1 << 20;

/// `sha256:` and the hex SHA-256 of `bytes`: what `--expect` compares.
fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    format!("sha256:{}", hex::encode(d.as_ref()))
}

fn read_bounded(path: &Path, what: &str) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    let meta =
        std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{what} {} is not a regular file", path.display());
    }
    if meta.len() > MAX_FILE {
        anyhow::bail!("{what} {} is larger than 1 MiB", path.display());
    }
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?;
    Ok(zeroize::Zeroizing::new(bytes))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fsutil::write_atomic(path, bytes)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

fn tpm_worker(connect: &ConnectOptions) -> anyhow::Result<std::sync::Arc<tpm::worker::Worker>> {
    if connect.get("tcti").is_none() {
        anyhow::bail!(
            "this command needs a TPM: pass --tcti (e.g. device:/dev/tpmrm0) or set TCTI"
        );
    }
    Ok(tpm::worker(connect, "a TPM ring")?)
}

fn print_digest(file: &Path, bytes: &[u8]) {
    let d = digest(bytes);
    println!("digest: {d}");
    println!(
        "on the other node: kms-plugin key import {} --expect {d} --keyring DIR \
         (tell its operator this digest over a channel you trust; the import refuses any other file)",
        file.display()
    );
}

/// `key export`: software keys, or pkcs11 key references, to a file for
/// another node.
pub(super) fn export(args: &RingArgs, staged: bool, output: &Path) -> anyhow::Result<()> {
    let ring = {
        let _lock = keyring::lock(&args.keyring)?;
        Keyring::load(&args.keyring)?
    };
    let row = registry::lookup(&ring.backend).map_err(anyhow::Error::msg)?;
    if let Portability::Elsewhere(how) = row.export {
        anyhow::bail!("key export does not move {} keys: {how}", ring.backend);
    }
    let file = ring_export::export(&ring, |e| !staged || e.state == KeyState::Staged)
        .map_err(anyhow::Error::msg)?;
    let mut text = zeroize::Zeroizing::new(serde_json::to_vec_pretty(&file)?);
    text.push(b'\n');
    write_private(output, &text)?;
    let ids: Vec<&str> = file.keys.iter().map(|k| k.key_id.as_str()).collect();
    println!(
        "wrote {} (mode 0600): {} key(s) of ring {}: {}",
        output.display(),
        ids.len(),
        file.ring_id,
        ids.join(", ")
    );
    if row.export == Portability::Secret {
        eprintln!(
            "WARNING: this file holds the keys themselves: move it only over a secure channel (e.g. scp to the other node), and delete it once imported"
        );
    } else {
        println!(
            "the file holds no key, only which {} objects to use: the other node must reach the same token (an HSM partition both nodes share)",
            ring.backend
        );
    }
    print_digest(output, &text);
    Ok(())
}

/// `key export-target`: this TPM's storage key, for `key share` elsewhere.
pub(super) fn export_target(
    connect: &ConnectOptions,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let worker = tpm_worker(connect)?;
    let target = tpm::duplicate::export_target(&worker)?;
    let text = serde_json::to_string_pretty(&target)? + "\n";
    match output {
        Some(p) => {
            write_private(&p, text.as_bytes())?;
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

/// `key share`: TPM keys duplicated to another node's TPM.
pub(super) fn share(
    args: &RingArgs,
    to: &Path,
    fingerprint: &str,
    staged: bool,
    output: &Path,
) -> anyhow::Result<()> {
    let ring = {
        let _lock = keyring::lock(&args.keyring)?;
        Keyring::load(&args.keyring)?
    };
    let worker = tpm_worker(&args.connect())?;
    let target: Target = tpm::duplicate::read_json(to, "target file")?;
    let which = if staged {
        Selection::Staged
    } else {
        Selection::Live
    };
    let (bundle, skipped) = tpm::duplicate::share(&worker, &ring, &target, fingerprint, which)?;
    let mut text = serde_json::to_vec_pretty(&bundle)?;
    text.push(b'\n');
    write_private(output, &text)?;
    let ids: Vec<&str> = bundle.keys.iter().map(|k| k.key_id.as_str()).collect();
    println!(
        "wrote {}: {} key(s) of ring {} for the TPM with storage key {}: {}",
        output.display(),
        ids.len(),
        bundle.ring_id,
        bundle.target,
        ids.join(", ")
    );
    for s in skipped {
        eprintln!(
            "WARNING: key {s} was created without --shareable and stays on this node; \
             the other node cannot decrypt what it wrapped: rewrap, then retire it"
        );
    }
    print_digest(output, &text);
    Ok(())
}

/// The format tag of a transfer file, to know how to read the rest.
#[derive(serde::Deserialize)]
struct Tagged {
    format: String,
}

/// `key import`: staged keys from another node, only with the digest its
/// operator gave.
pub(super) fn import(args: &RingArgs, path: &Path, expect: &str) -> anyhow::Result<()> {
    let bytes = read_bounded(path, "bundle")?;
    let got = digest(&bytes);
    let want = expect.trim().to_ascii_lowercase();
    if !want.starts_with("sha256:") || want.len() != "sha256:".len() + 64 {
        anyhow::bail!(
            "expect={expect:?} is not valid: give the full digest the sending node printed (sha256: and 64 hex digits)"
        );
    }
    if got != want {
        anyhow::bail!(
            "{} has digest {got}, not the {want} you were given: refusing it (a changed or wrong file); nothing was imported",
            path.display()
        );
    }
    let tag: Tagged = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a key bundle: {e}", path.display()))?;
    let not_valid = |e: serde_json::Error| anyhow::anyhow!("{} is not valid: {e}", path.display());
    let (ring_id, backend, next_version, entries) = match tag.format.as_str() {
        ring_export::FORMAT | ring_export::FORMAT_SOFTWARE_V1 => {
            let file: Export = serde_json::from_slice(&bytes).map_err(not_valid)?;
            let backend = file.backend.clone();
            let row = registry::lookup(&backend)
                .map_err(|e| anyhow::anyhow!("{} names backend={e}", path.display()))?;
            if let Portability::Elsewhere(how) = row.export {
                anyhow::bail!(
                    "{} claims to hold {backend} keys, which key export never writes ({how}): refusing it",
                    path.display()
                );
            }
            let (ring_id, next, entries) = file.into_entries().map_err(anyhow::Error::msg)?;
            (ring_id, backend, next, entries)
        }
        tpm::duplicate::BUNDLE_FORMAT => {
            let bundle: Bundle = serde_json::from_slice(&bytes).map_err(not_valid)?;
            // Everything that can be checked without the TPM, before it is used.
            bundle.check()?;
            let worker = tpm_worker(&args.connect())?;
            let entries = tpm::duplicate::import(&worker, &bundle)?;
            (bundle.ring_id, bundle.backend, bundle.next_version, entries)
        }
        tpm::duplicate::BUNDLE_FORMAT_V1 => anyhow::bail!(
            "{} is a {} bundle, made by an older kms-plugin: its keys carry states, which an import no longer accepts; run `key share` again with this version",
            path.display(),
            tag.format
        ),
        other => anyhow::bail!(
            "{} is not a key bundle this version reads (format {other:?}; expected {:?} from `key export` or {:?} from `key share`)",
            path.display(),
            ring_export::FORMAT,
            tpm::duplicate::BUNDLE_FORMAT
        ),
    };
    let row = registry::lookup(&backend).map_err(anyhow::Error::msg)?;
    for e in &entries {
        (row.verify)(&ring_id, e).map_err(|r| anyhow::anyhow!("refusing the bundle: {r}"))?;
    }
    fsutil::ensure_private_dir(&args.keyring).map_err(|e| {
        anyhow::anyhow!(
            "cannot create key ring directory {}: {e}",
            args.keyring.display()
        )
    })?;
    let lock = keyring::lock(&args.keyring)?;
    let mut ring = existing_or_new(&args.keyring, &ring_id, &backend)?;
    let merged = ring.merge(&ring_id, next_version, entries, MergeMode::Import)?;
    if !merged.staged.is_empty() {
        ring.save(&args.keyring, &lock)?;
    }
    report(&ring, &merged);
    Ok(())
}

/// The ring in `dir`, or a new empty one for `ring_id` (a node joining).
fn existing_or_new(dir: &Path, ring_id: &str, backend: &str) -> anyhow::Result<Keyring> {
    if keyring::ring_path(dir).exists() {
        let ring = Keyring::load(dir)?;
        if ring.backend != backend {
            anyhow::bail!(
                "this node's ring is a {} ring, the keys are for {backend}: refusing to mix backends",
                ring.backend
            );
        }
        Ok(ring)
    } else {
        Ok(Keyring {
            format: keyring::FORMAT.into(),
            ring_id: ring_id.into(),
            backend: backend.into(),
            next_version: 1,
            keys: Vec::new(),
        })
    }
}

fn report(ring: &Keyring, m: &Merge) {
    for id in &m.staged {
        println!("added key {id}, staged: it decrypts, nothing encrypts with it");
    }
    for id in &m.retired {
        println!("added retired key {id} (metadata only)");
    }
    if !m.present.is_empty() {
        println!("already here: {}", m.present.join(", "));
    }
    if m.staged.is_empty() && m.retired.is_empty() {
        println!("nothing to add: the ring is unchanged");
    }
    match ring.active() {
        Some(a) => println!("active key (unchanged): {}", a.key_id),
        None => println!(
            "this ring has no active key yet: `kms-plugin key activate KEY_ID` with the key the other nodes have active"
        ),
    }
    println!("ring fingerprint: {}", ring.fingerprint());
}

/// `key restore`: merge a ring file (a backup, another node's ring).
pub(super) fn restore(args: &RingArgs, file: &Path, yes: bool) -> anyhow::Result<()> {
    let bytes = read_bounded(file, "ring file")?;
    let other = keyring::parse(&bytes)
        .map_err(|r| anyhow::anyhow!("{} is not a valid key ring: {r}", file.display()))?;
    let row = registry::lookup(&other.backend).map_err(anyhow::Error::msg)?;
    for e in other.keys.iter().filter(|e| e.state.is_live()) {
        (row.verify)(&other.ring_id, e)
            .map_err(|r| anyhow::anyhow!("refusing {}: {r}", file.display()))?;
    }
    fsutil::ensure_private_dir(&args.keyring).map_err(|e| {
        anyhow::anyhow!(
            "cannot create key ring directory {}: {e}",
            args.keyring.display()
        )
    })?;
    let lock = keyring::lock(&args.keyring)?;
    let exists = keyring::ring_path(&args.keyring).exists();
    // Restore repairs a ring that went back, so its own file is read as it is.
    let mut ring = if exists {
        Keyring::load_unchecked(&args.keyring)?
    } else {
        existing_or_new(&args.keyring, &other.ring_id, &other.backend)?
    };
    if ring.backend != other.backend {
        anyhow::bail!(
            "this ring is a {} ring, {} is {}: refusing to mix backends",
            ring.backend,
            file.display(),
            other.backend
        );
    }
    let incoming: Vec<KeyEntry> = other.keys;
    let plan = ring.clone().merge(
        &other.ring_id,
        other.next_version,
        incoming.clone(),
        MergeMode::Restore,
    )?;
    if !yes {
        for id in &plan.staged {
            println!("would add key {id}, staged");
        }
        for id in &plan.retired {
            println!("would add retired key {id} (metadata only)");
        }
        println!(
            "nothing is removed and the active key does not change; {}",
            if plan.staged.is_empty() && plan.retired.is_empty() {
                "there is nothing to add"
            } else {
                "re-run with --yes to merge"
            }
        );
        if plan.staged.is_empty() && plan.retired.is_empty() {
            return Ok(());
        }
        anyhow::bail!("not restored: re-run with --yes to confirm");
    }
    let merged = ring.merge(
        &other.ring_id,
        other.next_version,
        incoming,
        MergeMode::Restore,
    )?;
    let seen = Keyring::last_seen(&args.keyring)?;
    let still = seen.as_ref().and_then(|s| s.check(&ring).err());
    match &still {
        // The directory's record still holds more: keep the record.
        Some(_) => ring.save_ring_only(&args.keyring, &lock)?,
        None => ring.save(&args.keyring, &lock)?,
    }
    report(&ring, &merged);
    if let Some(reason) = still {
        anyhow::bail!(
            "the ring still does not hold everything this directory held: {reason}. Restore a newer copy, \
             or, if those keys are truly lost, `kms-plugin key accept-loss --yes`"
        );
    }
    Ok(())
}

/// `key accept-loss`: record as retired the keys the directory held and its
/// ring file no longer does.
pub(super) fn accept_loss(args: &RingArgs, yes: bool) -> anyhow::Result<()> {
    let lock = keyring::lock(&args.keyring)?;
    let mut ring = Keyring::load_unchecked(&args.keyring)?;
    let Some(seen) = Keyring::last_seen(&args.keyring)? else {
        println!("this directory keeps no record of other keys: nothing to accept");
        return Ok(());
    };
    if seen.ring_id != ring.ring_id || seen.backend != ring.backend {
        anyhow::bail!(
            "the ring file is another ring ({} {}) than this directory held ({} {}): put the right file back; \
             to start over with this one, remove {}",
            ring.ring_id,
            ring.backend,
            seen.ring_id,
            seen.backend,
            keyring::ring_path(&args.keyring)
                .with_file_name("keyring.seen")
                .display()
        );
    }
    let now = now_rfc3339();
    let mut lost = Vec::new();
    let mut re_retired = Vec::new();
    for (version, key_id, state) in &seen.keys {
        match ring.get(key_id) {
            None => {
                if let Some(other) = ring.keys.iter().find(|k| k.version == *version) {
                    anyhow::bail!(
                        "version {version} is {} in the ring file but was {key_id} here: the file is not an older copy of this ring",
                        other.key_id
                    );
                }
                if state.is_live() {
                    lost.push((*version, key_id.clone()));
                }
                ring.keys.push(KeyEntry {
                    version: *version,
                    key_id: key_id.clone(),
                    algorithm: "lost".into(),
                    created: now.clone(),
                    state: KeyState::Retired,
                    retired: Some(now.clone()),
                    material: None,
                });
            }
            Some(k) if *state == KeyState::Retired && k.state.is_live() => {
                re_retired.push(key_id.clone());
            }
            Some(_) => {}
        }
    }
    for id in &re_retired {
        if ring.get(id).map(|k| k.state) == Some(KeyState::Active) {
            anyhow::bail!(
                "key {id} was retired here but is the ring file's active key: activate another key first"
            );
        }
        ring.retire(id, now.clone())?;
    }
    ring.keys.sort_by_key(|k| k.version);
    ring.next_version = ring.next_version.max(seen.next_version);
    if lost.is_empty() && re_retired.is_empty() {
        println!("the ring holds every key this directory held: nothing to accept");
        return Ok(());
    }
    for (v, id) in &lost {
        eprintln!("lost: key {id} (version {v}); data wrapped by it is unreadable");
    }
    for id in &re_retired {
        eprintln!("retired again: key {id} (it had been retired; the file brought it back)");
    }
    if !yes {
        anyhow::bail!("nothing changed: re-run with --yes to record these keys as retired");
    }
    ring.save(&args.keyring, &lock)?;
    println!(
        "recorded {} lost key(s) as retired; their versions and key_ids will never be reused",
        lost.len()
    );
    println!("ring fingerprint: {}", ring.fingerprint());
    Ok(())
}
