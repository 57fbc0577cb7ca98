//! The plaintext KEK is in no file of the key ring, the share bundle or the
//! target file. For tpm-sealed the KEK is obtained independently of the
//! plugin: tpm2-tools recreate the storage primary from the documented
//! template, load the ring's blobs and unseal them; the result must be 32
//! bytes that appear nowhere on disk (raw, hex or base64).

use std::path::Path;

use base64::Engine as _;
use e2e::swtpm::{Swtpm, init_tpm_ring, kms_tpm, rotate_tpm};

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn assert_absent(dir: &Path, secret: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let hex_lower = hex::encode(secret);
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "raw KEK in {}",
            f.display()
        );
        assert!(!text.contains(&b64[..40]), "base64 KEK in {}", f.display());
        assert!(
            !text.to_lowercase().contains(&hex_lower),
            "hex KEK in {}",
            f.display()
        );
    }
}

/// Unseals a tpm-sealed key's blobs with tpm2-tools.
fn unseal_with_tpm2_tools(tpm: &Swtpm, material: &serde_json::Value, work: &Path) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let public = b64.decode(material["public"].as_str().unwrap()).unwrap();
    let private = b64.decode(material["private"].as_str().unwrap()).unwrap();
    // tpm2-tools read TPM2B forms: a big-endian u16 size, then the bytes.
    let tpm2b = |b: &[u8]| {
        let mut v = (b.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    };
    std::fs::write(work.join("k.pub"), tpm2b(&public)).unwrap();
    std::fs::write(work.join("k.priv"), tpm2b(&private)).unwrap();
    let ctx = |n: &str| work.join(n).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let o = tpm.tpm2(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    };
    // tpm2-tools leave their objects loaded when there is no resource
    // manager (swtpm): flush after every step.
    let flush = || run(&["tpm2_flushcontext", "-t"]);
    flush();
    run(&[
        "tpm2_createprimary",
        "-C",
        "o",
        "-g",
        "sha256",
        "-G",
        "ecc256:null:aes128cfb",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt",
        "-c",
        &ctx("primary.ctx"),
    ]);
    run(&[
        "tpm2_load",
        "-C",
        &ctx("primary.ctx"),
        "-u",
        &ctx("k.pub"),
        "-r",
        &ctx("k.priv"),
        "-c",
        &ctx("k.ctx"),
    ]);
    flush();
    let o = run(&["tpm2_unseal", "-c", &ctx("k.ctx")]);
    flush();
    o.stdout
}

#[test]
fn tpm_sealed_kek_is_in_no_file() {
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_tpm_ring(&ring, "tpm-sealed", &tpm.tcti(), &["--shareable"]);
    rotate_tpm(&ring, &tpm.tcti(), &["--algorithm", "xchacha20-poly1305"]);
    // A share bundle and a target file live beside the ring.
    let other = Swtpm::start();
    let t = dir.path().join("ring/target.json");
    let o = kms_tpm(
        &["key", "export-target", "-o", t.to_str().unwrap()],
        &other.tcti(),
    );
    assert!(o.status.success());
    let fp: serde_json::Value = serde_json::from_slice(&std::fs::read(&t).unwrap()).unwrap();
    let o = kms_tpm(
        &[
            "key",
            "share",
            "--keyring",
            ring.to_str().unwrap(),
            "--to",
            t.to_str().unwrap(),
            "--fingerprint",
            fp["fingerprint"].as_str().unwrap(),
            "-o",
            dir.path().join("ring/bundle.json").to_str().unwrap(),
        ],
        &tpm.tcti(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ring.join("keyring.json")).unwrap()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for k in keys {
        let m = &k["material"];
        let fields: Vec<_> = m.as_object().unwrap().keys().cloned().collect();
        assert_eq!(fields, ["private", "public"], "only TPM blobs are stored");
        let kek = unseal_with_tpm2_tools(&tpm, m, work.path());
        assert_eq!(kek.len(), 32, "the sealed object holds a 32-byte KEK");
        assert_absent(&ring, &kek);
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ring.join("keyring.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn tpm_resident_ring_holds_only_tpm_objects_made_inside_the_tpm() {
    let tpm = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    init_tpm_ring(&ring, "tpm-resident", &tpm.tcti(), &[]);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ring.join("keyring.json")).unwrap()).unwrap();
    let m = &doc["keys"][0]["material"];
    let fields: Vec<_> = m.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        fields,
        ["aes.private", "aes.public", "hmac.private", "hmac.public"]
    );
    // The public areas say: sensitiveDataOrigin (the TPM made the key) and
    // fixedTPM (it cannot be duplicated), as tpm2_print decodes them.
    let b64 = base64::engine::general_purpose::STANDARD;
    for f in ["aes.public", "hmac.public"] {
        let public = b64.decode(m[f].as_str().unwrap()).unwrap();
        let mut v = (public.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(&public);
        let p = dir.path().join("p.pub");
        std::fs::write(&p, v).unwrap();
        let o = tpm.tpm2(&["tpm2_print", "-t", "TPM2B_PUBLIC", p.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("sensitivedataorigin") && text.contains("fixedtpm"),
            "{text}"
        );
    }
}
