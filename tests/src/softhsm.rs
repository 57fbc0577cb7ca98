//! A SoftHSM2 token per test: its own configuration and token directory in
//! a temporary directory, initialised with `softhsm2-util`, and the user
//! PIN in a 0600 file. Processes reach it through `SOFTHSM2_CONF`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The SoftHSM2 module Debian installs (`softhsm2`).
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const PIN: &str = "4711-kms";
/// The security officer PIN of every test token.
pub const SO_PIN: &str = "0815-so";

/// One initialised token.
pub struct SoftHsm {
    dir: tempfile::TempDir,
    /// The token's label.
    pub label: String,
}

impl SoftHsm {
    /// A fresh token labelled `label`.
    pub fn new(label: &str) -> SoftHsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: install softhsm2 (scripts/install-deps)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, format!("{PIN}\n")).unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        let hsm = SoftHsm {
            dir,
            label: label.to_string(),
        };
        hsm.add_token(label);
        hsm
    }

    /// Initialises one more token, labelled `label`, in the same store.
    pub fn add_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", self.conf())
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", PIN, "--so-pin", SO_PIN])
            .output()
            .expect("running softhsm2-util: install softhsm2 (scripts/install-deps)");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The configuration file (`SOFTHSM2_CONF`).
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// The directory SoftHSM2 keeps the tokens in: moving it away takes
    /// every token away.
    pub fn tokens_dir(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// The user PIN file (mode 0600).
    pub fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }

    /// The environment every process using the token needs.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("SOFTHSM2_CONF".into(), self.conf().display().to_string())]
    }

    /// The kms-plugin flags that reach the token.
    pub fn connect_args(&self) -> Vec<String> {
        vec![
            "--pkcs11-module".into(),
            MODULE.into(),
            "--pkcs11-token-label".into(),
            self.label.clone(),
            "--pkcs11-pin-file".into(),
            self.pin_file().display().to_string(),
        ]
    }

    /// Runs the test suite's PKCS#11 tool (`p11tool`, at `exe`: the
    /// integration test's `env!("CARGO_BIN_EXE_p11tool")`) on this token.
    pub fn tool(&self, exe: &str, args: &[&str]) -> Output {
        Command::new(exe)
            .env("SOFTHSM2_CONF", self.conf())
            .args([MODULE, &self.label, PIN])
            .args(args)
            .output()
            .expect("running p11tool")
    }
}
