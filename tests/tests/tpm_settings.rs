//! TPM settings that cannot work fail before the socket is bound, with a
//! message naming what is wrong (the TPM contract itself is the
//! conformance suite, `conformance.rs`).

use e2e::swtpm::kms_tpm;

#[test]
fn tpm_bad_tcti_and_missing_tpm_fail_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let sock = dir.path().join("kms.sock");
    // init without a TPM to talk to.
    let port = e2e::free_port();
    let out = kms_tpm(
        &[
            "key",
            "init",
            "--keyring",
            ring.to_str().unwrap(),
            "--backend",
            "tpm-sealed",
        ],
        &format!("swtpm:host=127.0.0.1,port={port}"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TPM unavailable"), "{err}");
    let out = kms_tpm(
        &[
            "key",
            "init",
            "--keyring",
            ring.to_str().unwrap(),
            "--backend",
            "tpm-sealed",
        ],
        "swtpm:path=/x",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcti=\"swtpm:path=/x\" is not valid"));
    let out = std::process::Command::new(e2e::bin("kms-plugin"))
        .args([
            "serve",
            "--listen-addr",
            &format!("unix://{}", sock.display()),
            "--keyring",
            ring.to_str().unwrap(),
            "--backend",
            "tpm-resident",
            "--tcti",
            "bogus",
        ])
        .env_remove("TCTI")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcti=\"bogus\" is not valid"));
    assert!(!sock.exists());
}
