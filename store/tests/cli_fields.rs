//! Through the binary on RocksDB: every ObjectMeta field survives writes and
//! reads; an update that leaves out ownerReferences, finalizers or
//! managedFields keeps the stored ones, one that sets them to empty clears
//! them; writes are protobuf by default (or JSON with
//! --storage-media-type), and `rewrap --storage-media-type` converts each
//! value to what the apiserver would write for it, while a plain rewrap
//! keeps the plaintext bytes; inspect and verify report the format.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;

const BIN: &str = env!("CARGO_BIN_EXE_secret-store");

struct Env {
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let cfg = dir.path().join("enc.yaml");
        std::fs::write(
            &cfg,
            format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k1\n        secret: {key}\n"),
        )
        .unwrap();
        Env { dir, cfg }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("SECRET_STORE_ETCD_ENDPOINTS")
            .env_remove("SECRET_STORE_STORAGE_MEDIA_TYPE")
            .arg("--db")
            .arg(self.dir.path().join("db"))
            .arg("--encryption-config")
            .arg(&self.cfg)
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn apply(&self, args: &[&str], manifest: &str) -> Output {
        let mut a = args.to_vec();
        a.extend(["apply", "-f", "-"]);
        let mut c = self
            .cmd(&a)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        c.wait_with_output().unwrap()
    }

    fn json(&self, name: &str) -> serde_json::Value {
        let o = self.run(&["get", name, "-o", "json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The plaintext stored for `name` (decrypted through `raw`).
    fn plaintext(&self, name: &str) -> Vec<u8> {
        let key = format!("/registry/secrets/default/{name}");
        let raw = self.run(&["raw", "get", "--etcd-key", &key]);
        let file = self.dir.path().join("value.bin");
        std::fs::write(&file, &raw.stdout).unwrap();
        let o = self.run(&[
            "raw",
            "decrypt",
            "--etcd-key",
            &key,
            "--in",
            file.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        o.stdout
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const FULL: &str = "apiVersion: v1
kind: Secret
metadata:
  name: web-tls
  labels: {app: web}
  ownerReferences:
  - apiVersion: cert-manager.io/v1
    kind: Certificate
    name: web
    uid: 46271bb2-e4ae-46cb-8705-9450922f3403
    controller: true
    blockOwnerDeletion: true
  finalizers: [example.com/protect]
  managedFields:
  - manager: cert-manager
    operation: Update
    apiVersion: v1
    time: \"2024-05-01T10:00:00Z\"
    fieldsType: FieldsV1
    fieldsV1:
      f:data: {.: {}, f:tls.crt: {}}
type: Opaque
stringData: {tls.crt: cert}
";

#[test]
fn updates_keep_what_other_actors_own_and_formats_convert() {
    let e = Env::new();
    let o = e.apply(&[], FULL);
    assert!(o.status.success(), "{}", text(&o));
    let v = e.json("web-tls");
    let meta = &v["metadata"];
    assert_eq!(meta["ownerReferences"][0]["kind"], "Certificate");
    assert_eq!(meta["finalizers"][0], "example.com/protect");
    assert_eq!(
        meta["managedFields"][0]["fieldsV1"]["f:data"]["f:tls.crt"],
        serde_json::json!({})
    );
    // Written as protobuf, as a default kube-apiserver writes it.
    let plain = e.plaintext("web-tls");
    assert!(plain.starts_with(b"k8s\x00"), "{:?}", &plain[..8]);

    // An update that leaves them out keeps them.
    let o = e.apply(&[], "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-tls\n  labels: {app: web2}\nstringData: {tls.crt: cert2}\n");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("configured"),
        "{}",
        text(&o)
    );
    let v2 = e.json("web-tls");
    assert_eq!(v2["metadata"]["labels"]["app"], "web2");
    for f in ["ownerReferences", "finalizers", "managedFields"] {
        assert_eq!(v2["metadata"][f], v["metadata"][f], "{f}");
    }
    // A delete only marks it while a finalizer is there.
    let o = e.run(&["delete", "web-tls"]);
    assert!(o.status.success(), "{}", text(&o));
    let v3 = e.json("web-tls");
    assert!(v3["metadata"]["deletionTimestamp"].is_string(), "{v3}");
    assert_eq!(v3["metadata"]["deletionGracePeriodSeconds"], 0);
    // Adding a finalizer now is refused; removing the last one deletes it.
    let o = e.apply(&[], "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-tls\n  finalizers: [example.com/protect, example.com/more]\n");
    assert!(
        text(&o).contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        text(&o)
    );
    let o = e.apply(
        &[],
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-tls\n  finalizers: []\n",
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = e.run(&["get", "web-tls"]);
    assert!(text(&o).contains("not found"), "{}", text(&o));

    // JSON when asked for; rewrap converts, byte-identical to the codec.
    let o = e.apply(&["--storage-media-type", "application/json"], FULL);
    assert!(o.status.success(), "{}", text(&o));
    let json = e.plaintext("web-tls");
    assert!(
        json.starts_with(b"{\"kind\":\"Secret\""),
        "{}",
        String::from_utf8_lossy(&json)
    );
    let i = e.run(&["inspect", "web-tls"]);
    assert!(
        text(&i).contains("storage format:    json (application/json)"),
        "{}",
        text(&i)
    );
    // Without the flag rewrap keeps the plaintext as it is (nothing stale).
    let o = e.run(&["rewrap"]);
    assert!(text(&o).contains("rewrapped 0 of 0"), "{}", text(&o));
    assert_eq!(e.plaintext("web-tls"), json);
    let o = e.run(&[
        "rewrap",
        "--dry-run",
        "--storage-media-type",
        "application/vnd.kubernetes.protobuf",
    ]);
    assert!(
        text(&o).contains("1 of 1 secrets are stale"),
        "{}",
        text(&o)
    );
    let o = e.run(&[
        "rewrap",
        "--storage-media-type",
        "application/vnd.kubernetes.protobuf",
    ]);
    assert!(
        text(&o).contains("rewrapped 1 of 1 stale secrets, as application/vnd.kubernetes.protobuf"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("1 converted"), "{}", text(&o));
    let proto = e.plaintext("web-tls");
    let secret = secret_store::secret::Secret::from_storage_bytes(&json).unwrap();
    assert_eq!(proto, secret.to_storage_protobuf().to_vec());
    let o = e.run(&["verify", "--per-key"]);
    assert!(
        text(&o).contains("storage formats: 1 protobuf"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("ok     /registry/secrets/default/web-tls rev"),
        "{}",
        text(&o)
    );
    // A second conversion finds nothing to do.
    let o = e.run(&[
        "rewrap",
        "--storage-media-type",
        "application/vnd.kubernetes.protobuf",
    ]);
    assert!(text(&o).contains("rewrapped 0 of 0"), "{}", text(&o));
    let o = e.run(&["--storage-media-type", "yaml", "list"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("choose application/vnd.kubernetes.protobuf"),
        "{}",
        text(&o)
    );
}

#[test]
fn managed_fields_and_owner_references_can_be_cleared_explicitly() {
    let e = Env::new();
    assert!(e.apply(&[], FULL).status.success());
    let o = e.apply(&[], "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-tls\n  ownerReferences: []\n  managedFields: []\n");
    assert!(o.status.success(), "{}", text(&o));
    let v = e.json("web-tls");
    assert!(v["metadata"].get("ownerReferences").is_none(), "{v}");
    assert!(v["metadata"].get("managedFields").is_none(), "{v}");
    assert_eq!(v["metadata"]["finalizers"][0], "example.com/protect");
}
