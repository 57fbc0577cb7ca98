//! The conformance suite (`e2e::conformance`) once per key backend: the
//! software ring with each of its AEADs, both TPM backends, each test with
//! its own swtpm, pkcs11, each test with its own SoftHSM2 token, and
//! transit, each test with its own OpenBao server (no key ring: the ring's
//! own suite functions do not apply).

use e2e::conformance::{self, Fixture};
use e2e::openbao::{OpenBao, plugin_policy};
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

/// The Transit key of the transit fixture.
const TRANSIT_KEY: &str = "kube-secrets";

/// transit: a dev OpenBao per test; the plugin logs in with a token of the
/// policy it needs (not root); keys are made, rotated and retired in
/// Transit, as an operator does.
struct Transit {
    bao: OpenBao,
    token_file: std::path::PathBuf,
}

impl Fixture for Transit {
    fn backend(&self) -> &'static str {
        "transit"
    }
    fn key_id_prefix(&self) -> &'static str {
        "transit-"
    }
    fn keeps_a_ring(&self) -> bool {
        false
    }
    fn connect_args(&self) -> Vec<String> {
        vec![
            "--transit-addr".into(),
            self.bao.addr(),
            "--transit-key".into(),
            TRANSIT_KEY.into(),
            "--transit-token-file".into(),
            self.token_file.display().to_string(),
        ]
    }
    fn max_plaintext(&self) -> Option<usize> {
        // 1024 - header(6) - nonce(12) - tag(16)
        Some(990)
    }
    fn init(&self, _: &std::path::Path) {
        self.bao.create_key(TRANSIT_KEY, "aes256-gcm96");
    }
    fn rotate(&self, _: &std::path::Path) -> String {
        let v = self.bao.rotate(TRANSIT_KEY);
        self.bao.key_id(TRANSIT_KEY, v)
    }
    fn retire(&self, _: &std::path::Path, key_id: &str) {
        let v = self
            .key_version(key_id)
            .expect("a transit key_id names its version");
        self.bao
            .set_min_decryption_version(TRANSIT_KEY, u32::try_from(v).unwrap() + 1);
    }
}

fn transit() -> Transit {
    let bao = OpenBao::dev();
    bao.write_policy("kms-plugin", &plugin_policy(TRANSIT_KEY));
    let token = bao.create_token(&["kms-plugin"], "1h");
    let token_file = bao.write_secret_file("token", &token);
    Transit { bao, token_file }
}

/// One module per fixture, one test per suite function. Multi-threaded
/// runtimes: the client answers HTTP/2 pings while a test thread waits for
/// a plugin to drain and exit. `suite!(name, fixture)` runs every suite
/// function, the key ring's included; a backend without a ring lists the
/// ones that apply: `suite!(name, fixture, [function, ...])`.
macro_rules! suite {
    ($name:ident, $fixture:expr) => {
        suite!(
            $name,
            $fixture,
            [
                status_encrypt_decrypt,
                tampering_and_key_ids,
                limits_and_garbage,
                rotation_restart_and_retirement,
                reloads_never_drop_a_key,
            ]
        );
    };
    ($name:ident, $fixture:expr, [$($test:ident),+ $(,)?]) => {
        mod $name {
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    conformance::$test(&$fixture).await;
                }
            )+
        }
    };
}

suite!(software_aes_256_gcm, software_aes());
suite!(software_xchacha20_poly1305, software_xchacha());
suite!(tpm_sealed, tpm_sealed());
suite!(tpm_resident, tpm_resident());
suite!(pkcs11, pkcs11());
suite!(
    transit,
    transit(),
    [
        status_encrypt_decrypt,
        tampering_and_key_ids,
        limits_and_garbage,
        rotation_restart_and_retirement,
    ]
);
