//! `kms-plugin probe`: what an operator runs when kube-apiserver's healthz
//! says `kms-providers failed`. Calls Status, round-trips Encrypt/Decrypt,
//! applies every check the apiserver applies, and says what it saw: as
//! lines for a person, or (`--output json`) as one JSON document with the
//! same facts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kms_proto::Endpoint;
use kms_proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};

use kms_proto::contract;

use super::{Output, Usage};

/// `probe` flags.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// The plugin's socket: unix:///path.sock or unix:///@name.
    #[arg(long, value_name = "ENDPOINT")]
    pub listen_addr: String,
    /// Per-call timeout.
    #[arg(long, default_value = "3s")]
    pub timeout: String,
    /// table: lines for a person; json: one JSON document with the same facts.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// What the probe concluded (the exit status follows from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check kube-apiserver applies passed.
    Healthy,
    /// The plugin answered, and a call failed or a check did not pass.
    Unhealthy,
    /// The plugin could not be reached (no socket, stale socket, no permission).
    Unreachable,
}

/// A failed gRPC call: its code, the plugin's message, what to do.
#[derive(Debug, serde::Serialize)]
struct CallError {
    code: String,
    message: String,
    hint: Option<&'static str>,
}

impl CallError {
    fn of(s: &tonic::Status) -> Self {
        CallError {
            code: format!("{:?}", s.code()),
            message: s.message().to_owned(),
            hint: hint(s.code()),
        }
    }

    /// `FAILED: <code>: <message> [<hint>]`.
    fn line(&self) -> String {
        match self.hint {
            Some(h) => format!("FAILED: {}: {} [{h}]", self.code, self.message),
            None => format!("FAILED: {}: {}", self.code, self.message),
        }
    }
}

/// The socket file (a path endpoint; an abstract socket has none).
#[derive(Debug, serde::Serialize)]
struct SocketFacts {
    path: String,
    /// present, missing, not-a-socket or unreadable.
    state: &'static str,
    /// Its permission bits, octal (when present).
    mode: Option<String>,
    error: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct ConnectFacts {
    ok: bool,
    ms: f64,
    error: Option<String>,
    hint: Option<&'static str>,
}

#[derive(Debug, Default, serde::Serialize)]
struct StatusFacts {
    ms: f64,
    version: Option<String>,
    healthz: Option<String>,
    key_id: Option<String>,
    error: Option<CallError>,
}

#[derive(Debug, Default, serde::Serialize)]
struct EncryptFacts {
    ms: f64,
    plaintext_bytes: usize,
    ciphertext_bytes: Option<usize>,
    key_id: Option<String>,
    annotations: BTreeMap<String, String>,
    error: Option<CallError>,
}

#[derive(Debug, Default, serde::Serialize)]
struct DecryptFacts {
    ms: f64,
    /// Whether Decrypt returned the seed Encrypt was given.
    round_trip: Option<bool>,
    error: Option<CallError>,
}

/// Everything the probe saw, in the order it looked.
#[derive(Debug, serde::Serialize)]
struct Report {
    endpoint: String,
    socket: Option<SocketFacts>,
    connect: Option<ConnectFacts>,
    status: Option<StatusFacts>,
    encrypt: Option<EncryptFacts>,
    decrypt: Option<DecryptFacts>,
    /// The checks kube-apiserver applies that did not pass, and failed calls.
    problems: Vec<String>,
    result: Verdict,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn line(step: &str, what: impl std::fmt::Display) {
    println!("{step:<10} {what}");
}

/// What an operator does about a failed call whose code names the
/// backend's state (the message says which server, key, policy or file).
fn hint(code: tonic::Code) -> Option<&'static str> {
    match code {
        tonic::Code::PermissionDenied => Some(
            "the key service refuses the plugin: grant its policy the path named, or give it a valid token",
        ),
        tonic::Code::Unavailable => Some(
            "the backend cannot serve now: bring back the device or server named; the plugin recovers by itself",
        ),
        tonic::Code::Internal => Some("see the plugin's log for the cause"),
        _ => None,
    }
}

/// Runs the probe, prints what it saw in the chosen form, and returns the
/// verdict.
pub async fn run(args: ProbeArgs) -> anyhow::Result<Verdict> {
    let ep = Endpoint::parse(&args.listen_addr).map_err(|e| Usage(format!("listen-addr={e}")))?;
    let timeout = crate::daemon::config::parse_duration("timeout", &args.timeout)
        .map_err(|e| Usage(e.to_string()))?;
    let report = probe(&ep, timeout).await?;
    match args.output {
        Output::Table => print_table(&report),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(report.result)
}

async fn probe(ep: &Endpoint, timeout: Duration) -> anyhow::Result<Report> {
    let mut r = Report {
        endpoint: ep.to_string(),
        socket: None,
        connect: None,
        status: None,
        encrypt: None,
        decrypt: None,
        problems: Vec::new(),
        result: Verdict::Unreachable,
    };

    if let Some(p) = ep.path() {
        let mut facts = SocketFacts {
            path: p.display().to_string(),
            state: "present",
            mode: None,
            error: None,
        };
        match std::fs::symlink_metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => facts.state = "missing",
            Err(e) => {
                facts.state = "unreadable";
                facts.error = Some(e.to_string());
            }
            Ok(m) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                if m.file_type().is_socket() {
                    facts.mode = Some(format!("{:o}", m.permissions().mode() & 0o777));
                } else {
                    facts.state = "not-a-socket";
                }
            }
        }
        let usable = facts.state == "present";
        r.socket = Some(facts);
        if !usable {
            return Ok(r);
        }
    }

    let t = Instant::now();
    let dialed = kms_proto::client::dial(ep).await;
    let connect = match &dialed {
        Ok(_) => ConnectFacts {
            ok: true,
            ms: ms(t.elapsed()),
            error: None,
            hint: None,
        },
        Err(e) => ConnectFacts {
            ok: false,
            ms: ms(t.elapsed()),
            error: Some(e.to_string()),
            hint: Some(match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "stale socket: nothing is listening (the plugin crashed or stopped; restart it)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied: run as the user kube-apiserver runs as (usually root), or check --socket-group"
                }
                std::io::ErrorKind::NotFound => "no such socket: is the plugin running?",
                _ => "cannot connect",
            }),
        },
    };
    r.connect = Some(connect);
    if dialed.is_err() {
        return Ok(r);
    }
    let mut client = kms_proto::client::connect_v2(ep, timeout).await?;
    r.result = Verdict::Unhealthy;

    let t = Instant::now();
    let status = match client.status(StatusRequest {}).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            r.status = Some(StatusFacts {
                ms: ms(t.elapsed()),
                error: Some(CallError::of(&s)),
                ..Default::default()
            });
            return Ok(r);
        }
    };
    r.status = Some(StatusFacts {
        ms: ms(t.elapsed()),
        version: Some(status.version.clone()),
        healthz: Some(status.healthz.clone()),
        key_id: Some(status.key_id.clone()),
        error: None,
    });
    r.problems = contract::status_problems(&status);

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
        Ok(e) => e.into_inner(),
        Err(s) => {
            r.encrypt = Some(EncryptFacts {
                ms: ms(t.elapsed()),
                plaintext_bytes: seed.len(),
                error: Some(CallError::of(&s)),
                ..Default::default()
            });
            return Ok(r);
        }
    };
    r.encrypt = Some(EncryptFacts {
        ms: ms(t.elapsed()),
        plaintext_bytes: seed.len(),
        ciphertext_bytes: Some(enc.ciphertext.len()),
        key_id: Some(enc.key_id.clone()),
        annotations: enc
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect(),
        error: None,
    });
    r.problems
        .extend(contract::encrypt_problems(&enc, &status.key_id));

    let t = Instant::now();
    let mut decrypt = DecryptFacts::default();
    match client
        .decrypt(DecryptRequest {
            ciphertext: enc.ciphertext.clone(),
            uid: "kms-plugin-probe".into(),
            key_id: enc.key_id.clone(),
            annotations: enc.annotations.clone(),
        })
        .await
    {
        Ok(d) => {
            let pt = zeroize::Zeroizing::new(d.into_inner().plaintext);
            let same = pt[..] == seed[..];
            decrypt.round_trip = Some(same);
            if !same {
                r.problems
                    .push("Decrypt returned something other than what was encrypted".into());
            }
        }
        Err(s) => {
            r.problems.push(format!("Decrypt failed: {:?}", s.code()));
            decrypt.error = Some(CallError::of(&s));
        }
    }
    decrypt.ms = ms(t.elapsed());
    r.decrypt = Some(decrypt);
    if r.problems.is_empty() {
        r.result = Verdict::Healthy;
    }
    Ok(r)
}

fn ms_text(v: f64) -> String {
    format!("{v:.2} ms")
}

/// The report as lines for a person, one per step.
fn print_table(r: &Report) {
    line("endpoint", &r.endpoint);
    if let Some(s) = &r.socket {
        match s.state {
            "missing" => line(
                "socket",
                format!(
                    "MISSING: nothing at {}: is the plugin running? (systemctl status kms-plugin / crictl ps)",
                    s.path
                ),
            ),
            "not-a-socket" => line(
                "socket",
                format!("NOT A SOCKET: {} is something else", s.path),
            ),
            "present" => line(
                "socket",
                format!("present, mode {}", s.mode.as_deref().unwrap_or("?")),
            ),
            _ => line(
                "socket",
                format!(
                    "cannot inspect {}: {}",
                    s.path,
                    s.error.as_deref().unwrap_or("")
                ),
            ),
        }
    }
    if let Some(c) = &r.connect {
        match &c.error {
            None => line("connect", format!("ok ({})", ms_text(c.ms))),
            Some(e) => line(
                "connect",
                format!("FAILED: {e}: {}", c.hint.unwrap_or("cannot connect")),
            ),
        }
    }
    if let Some(s) = &r.status {
        match &s.error {
            Some(e) => line(
                "status",
                format!("FAILED: {}: {} ({})", e.code, e.message, ms_text(s.ms)),
            ),
            None => line(
                "status",
                format!(
                    "version={:?} healthz={:?} key_id={:?} ({})",
                    s.version.as_deref().unwrap_or(""),
                    s.healthz.as_deref().unwrap_or(""),
                    s.key_id.as_deref().unwrap_or(""),
                    ms_text(s.ms)
                ),
            ),
        }
    }
    if let Some(e) = &r.encrypt {
        match &e.error {
            Some(err) => line("encrypt", err.line()),
            None => {
                let ann: Vec<String> = e
                    .annotations
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                line(
                    "encrypt",
                    format!(
                        "ok: {}-byte seed -> {}-byte ciphertext, key_id={:?}, annotations [{}] ({})",
                        e.plaintext_bytes,
                        e.ciphertext_bytes.unwrap_or(0),
                        e.key_id.as_deref().unwrap_or(""),
                        ann.join(", "),
                        ms_text(e.ms)
                    ),
                );
            }
        }
    }
    if let Some(d) = &r.decrypt {
        match (&d.error, d.round_trip) {
            (Some(err), _) => line("decrypt", err.line()),
            (None, Some(true)) => line(
                "decrypt",
                format!("ok: round trip matches ({})", ms_text(d.ms)),
            ),
            // A mismatch is listed with the problems.
            _ => {}
        }
    }
    for p in &r.problems {
        line("problem", p);
    }
    match r.result {
        Verdict::Healthy => line(
            "result",
            "healthy: every check kube-apiserver applies passed",
        ),
        Verdict::Unhealthy => line("result", "UNHEALTHY"),
        Verdict::Unreachable => line("result", "UNREACHABLE"),
    }
}
