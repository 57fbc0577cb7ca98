//! The conformance suite (`e2e::conformance`) once per key backend: the
//! software ring with each of its AEADs, both TPM backends, each test with
//! its own swtpm, and pkcs11, each test with its own SoftHSM2 token.

use e2e::conformance::{self, Fixture};
use e2e::softhsm::SoftHsm;
use e2e::swtpm::Swtpm;

struct Software {
    algorithm: &'static str,
    max_plaintext: usize,
}

impl Fixture for Software {
    fn backend(&self) -> &'static str {
        "software"
    }
    fn key_id_prefix(&self) -> &'static str {
        "soft-"
    }
    fn init_args(&self) -> Vec<String> {
        vec!["--algorithm".into(), self.algorithm.into()]
    }
    fn max_plaintext(&self) -> Option<usize> {
        Some(self.max_plaintext)
    }
}

struct Tpm {
    backend: &'static str,
    prefix: &'static str,
    tpm: Swtpm,
}

impl Fixture for Tpm {
    fn backend(&self) -> &'static str {
        self.backend
    }
    fn key_id_prefix(&self) -> &'static str {
        self.prefix
    }
    fn connect_args(&self) -> Vec<String> {
        vec!["--tcti".into(), self.tpm.tcti()]
    }
}

struct Pkcs11 {
    hsm: SoftHsm,
}

impl Fixture for Pkcs11 {
    fn backend(&self) -> &'static str {
        "pkcs11"
    }
    fn key_id_prefix(&self) -> &'static str {
        "p11-"
    }
    fn connect_args(&self) -> Vec<String> {
        self.hsm.connect_args()
    }
    fn env(&self) -> Vec<(String, String)> {
        self.hsm.env()
    }
    fn max_plaintext(&self) -> Option<usize> {
        // 1024 - format(2) - IV(12) - tag(16)
        Some(994)
    }
    fn retirement_destroys_first(&self) -> bool {
        true
    }
}

fn pkcs11() -> Pkcs11 {
    Pkcs11 {
        hsm: SoftHsm::new("kek"),
    }
}

fn software_aes() -> Software {
    Software {
        algorithm: "aes-256-gcm",
        max_plaintext: 994,
    }
}

fn software_xchacha() -> Software {
    Software {
        algorithm: "xchacha20-poly1305",
        max_plaintext: 982,
    }
}

fn tpm_sealed() -> Tpm {
    Tpm {
        backend: "tpm-sealed",
        prefix: "tpms-",
        tpm: Swtpm::start(),
    }
}

fn tpm_resident() -> Tpm {
    Tpm {
        backend: "tpm-resident",
        prefix: "tpmr-",
        tpm: Swtpm::start(),
    }
}

/// One module per fixture, one test per suite function. Multi-threaded
/// runtimes: the client answers HTTP/2 pings while a test thread waits for
/// a plugin to drain and exit.
macro_rules! suite {
    ($name:ident, $fixture:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn status_encrypt_decrypt() {
                conformance::status_encrypt_decrypt(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tampering_and_key_ids() {
                conformance::tampering_and_key_ids(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn limits_and_garbage() {
                conformance::limits_and_garbage(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rotation_restart_and_retirement() {
                conformance::rotation_restart_and_retirement(&$fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reloads_never_drop_a_key() {
                conformance::reloads_never_drop_a_key(&$fixture).await;
            }
        }
    };
}

suite!(software_aes_256_gcm, software_aes());
suite!(software_xchacha20_poly1305, software_xchacha());
suite!(tpm_sealed, tpm_sealed());
suite!(tpm_resident, tpm_resident());
suite!(pkcs11, pkcs11());
