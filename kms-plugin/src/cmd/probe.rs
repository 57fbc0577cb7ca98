//! `kms-plugin probe`: what an operator runs when kube-apiserver's healthz
//! says `kms-providers failed`. Calls Status, round-trips Encrypt/Decrypt,
//! applies every check the apiserver applies, and says what it saw.

use std::time::{Duration, Instant};

use kms_proto::Endpoint;
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};

use kms_proto::contract;

/// `probe` flags.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// The plugin's socket: unix:///path.sock or unix:///@name.
    #[arg(long, value_name = "ENDPOINT")]
    pub listen_addr: String,
    /// Per-call timeout.
    #[arg(long, default_value = "3s")]
    pub timeout: String,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn line(step: &str, what: impl std::fmt::Display) {
    println!("{step:<10} {what}");
}

/// What an operator does about a failed call whose code names the
/// backend's state (the message says which server, key, policy or file).
fn hint(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => {
            " [the key service refuses the plugin: grant its policy the path named, or give it a valid token]"
        }
        tonic::Code::Unavailable => {
            " [the backend cannot serve now: bring back the device or server named; the plugin recovers by itself]"
        }
        tonic::Code::Internal => " [see the plugin's log for the cause]",
        _ => "",
    }
}

/// The failed call `step`: its code, message and what to do.
fn failed(s: &tonic::Status) -> String {
    format!("FAILED: {:?}: {}{}", s.code(), s.message(), hint(s.code()))
}

/// Runs the probe; returns whether the plugin is healthy for kube-apiserver.
pub async fn run(args: ProbeArgs) -> anyhow::Result<bool> {
    let ep = Endpoint::parse(&args.listen_addr).map_err(|e| anyhow::anyhow!("listen-addr={e}"))?;
    let timeout = crate::daemon::config::parse_duration("timeout", &args.timeout)?;
    line("endpoint", &ep);

    if let Some(p) = ep.path() {
        match std::fs::symlink_metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                line(
                    "socket",
                    format!(
                        "MISSING: nothing at {}: is the plugin running? (systemctl status kms-plugin / crictl ps)",
                        p.display()
                    ),
                );
                return Ok(false);
            }
            Err(e) => {
                line("socket", format!("cannot inspect {}: {e}", p.display()));
                return Ok(false);
            }
            Ok(m) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                if !m.file_type().is_socket() {
                    line(
                        "socket",
                        format!("NOT A SOCKET: {} is something else", p.display()),
                    );
                    return Ok(false);
                }
                line(
                    "socket",
                    format!("present, mode {:o}", m.permissions().mode() & 0o777),
                );
            }
        }
    }

    let t = Instant::now();
    match kms_proto::client::dial(&ep).await {
        Ok(_) => line("connect", format!("ok ({})", ms(t.elapsed()))),
        Err(e) => {
            let hint = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "stale socket: nothing is listening (the plugin crashed or stopped; restart it)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied: run as the user kube-apiserver runs as (usually root), or check --socket-group"
                }
                std::io::ErrorKind::NotFound => "no such socket: is the plugin running?",
                _ => "cannot connect",
            };
            line("connect", format!("FAILED: {e}: {hint}"));
            return Ok(false);
        }
    }
    let mut client = kms_proto::client::connect_v2(&ep, timeout).await?;
    let mut healthy = true;

    let t = Instant::now();
    let status = match client.status(StatusRequest {}).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            line(
                "status",
                format!(
                    "FAILED: {:?}: {} ({})",
                    s.code(),
                    s.message(),
                    ms(t.elapsed())
                ),
            );
            return Ok(false);
        }
    };
    line(
        "status",
        format!(
            "version={:?} healthz={:?} key_id={:?} ({})",
            status.version,
            status.healthz,
            status.key_id,
            ms(t.elapsed())
        ),
    );
    let mut problems = contract::status_problems(&status);

    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..])?;
    let t = Instant::now();
    let enc = match client
        .encrypt(EncryptRequest {
            plaintext: seed.to_vec(),
            uid: "kms-plugin-probe".into(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            line("encrypt", failed(&s));
            for p in &problems {
                line("problem", p);
            }
            line("result", "UNHEALTHY");
            return Ok(false);
        }
    };
    let ann: Vec<String> = enc
        .annotations
        .iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
        .collect();
    line(
        "encrypt",
        format!(
            "ok: 32-byte seed -> {}-byte ciphertext, key_id={:?}, annotations [{}] ({})",
            enc.ciphertext.len(),
            enc.key_id,
            ann.join(", "),
            ms(t.elapsed())
        ),
    );
    problems.extend(contract::encrypt_problems(&enc, &status.key_id));

    let t = Instant::now();
    match client
        .decrypt(DecryptRequest {
            ciphertext: enc.ciphertext.clone(),
            uid: "kms-plugin-probe".into(),
            key_id: enc.key_id.clone(),
            annotations: enc.annotations.clone(),
        })
        .await
    {
        Ok(r) => {
            let pt = zeroize::Zeroizing::new(r.into_inner().plaintext);
            if pt[..] == seed[..] {
                line(
                    "decrypt",
                    format!("ok: round trip matches ({})", ms(t.elapsed())),
                );
            } else {
                problems.push("Decrypt returned something other than what was encrypted".into());
            }
        }
        Err(s) => {
            line("decrypt", failed(&s));
            problems.push(format!("Decrypt failed: {:?}", s.code()));
        }
    }

    if problems.is_empty() {
        line(
            "result",
            "healthy: every check kube-apiserver applies passed",
        );
    } else {
        healthy = false;
        for p in &problems {
            line("problem", p);
        }
        line("result", "UNHEALTHY");
    }
    Ok(healthy)
}
