//! `serve` configuration: flags, the same keys in a TOML `--config FILE`
//! (flags win), defaults; everything validated before the socket is bound.
//! A bad value names itself: `listen-addr="tcp://x" is not valid: ...`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kms_proto::Endpoint;

use crate::backend::options::ConnectOptions;
use crate::backend::registry::{self, BackendRow};
use crate::daemon::telemetry::LogFormat;

/// The `serve` flags. Every one is optional here so a config file can
/// supply it; [`ServeConfig::resolve`] applies defaults and validates.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML file with the same keys as these flags (kebab-case); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Socket to serve on: unix:///path.sock or unix:///@abstract-name.
    #[arg(long, value_name = "ENDPOINT")]
    pub listen_addr: Option<String>,
    /// Key ring directory.
    #[arg(long, value_name = "DIR")]
    pub keyring: Option<PathBuf>,
    /// Key backend (default: software).
    #[arg(long, value_name = "BACKEND", long_help = registry::backend_help())]
    pub backend: Option<String>,
    /// The backends' own options (e.g. --tcti).
    #[command(flatten)]
    pub connect: ConnectOptions,
    /// Per-call deadline on the server side (e.g. 3s).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// HTTP address for /healthz, /livez and /metrics (e.g. 127.0.0.1:8095).
    #[arg(long, value_name = "HOST:PORT")]
    pub health_addr: Option<String>,
    /// Log format: plain (default) or json.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Let this group (name or gid) use the socket: mode 0660 instead of 0600.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Most calls served at once; more wait (default 256).
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<usize>,
    /// Runtime worker threads (default 1: one thread serves tens of
    /// thousands of calls per second and leaves the other cores to the
    /// apiserver; see the README's benchmark).
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<usize>,
    /// How long SIGTERM waits for in-flight calls (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// How long a backend self-test verdict is reused by Status (default 5s).
    #[arg(long, value_name = "DURATION")]
    pub health_cache: Option<String>,
    /// How often the key ring is checked for rotations (default 1s).
    #[arg(long, value_name = "DURATION")]
    pub reload_interval: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct FileConfig {
    listen_addr: Option<String>,
    keyring: Option<PathBuf>,
    backend: Option<String>,
    timeout: Option<String>,
    health_addr: Option<String>,
    log_format: Option<String>,
    socket_group: Option<String>,
    max_in_flight: Option<usize>,
    worker_threads: Option<usize>,
    shutdown_grace: Option<String>,
    health_cache: Option<String>,
    reload_interval: Option<String>,
    /// Every other key: a backend option (checked against the registry).
    #[serde(flatten)]
    backend_options: std::collections::BTreeMap<String, toml::Value>,
}

/// A validated `serve` configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: Endpoint,
    /// Key ring directory (for the backends that keep one).
    pub keyring: Option<PathBuf>,
    /// Backend.
    pub backend: &'static BackendRow,
    /// The backend's options.
    pub connect: ConnectOptions,
    /// Server-side per-call deadline.
    pub timeout: Duration,
    /// Health/metrics HTTP address.
    pub health_addr: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Group allowed on the socket.
    pub socket_gid: Option<u32>,
    /// Concurrency bound.
    pub max_in_flight: usize,
    /// Runtime worker threads.
    pub worker_threads: usize,
    /// Drain time on SIGTERM.
    pub shutdown_grace: Duration,
    /// Health verdict cache time.
    pub health_cache: Duration,
    /// Key ring poll interval.
    pub reload_interval: Duration,
}

/// A configuration error, naming the offending key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("{key}={value:?} is not valid: {reason}")]
    Invalid {
        /// The flag or file key.
        key: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A required setting is missing.
    #[error("{key} is required (e.g. {example})")]
    Missing {
        /// The flag or file key.
        key: &'static str,
        /// An example flag.
        example: &'static str,
    },
    /// The listen address is not a KMS endpoint.
    #[error("listen-addr={0}")]
    ListenAddr(#[source] kms_proto::endpoint::EndpointError),
    /// The config file cannot be read.
    #[error("config={path:?}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected shape.
    #[error("config={path:?} is not valid: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong (TOML's message names line and column).
        reason: String,
    },
    /// A backend option is missing, does not apply, or is not valid (the
    /// message names the option).
    #[error("{0}")]
    Backend(String),
}

fn bad(key: &'static str, value: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: why.to_string(),
    }
}

/// Parses a duration such as `3s`, `500ms`, `1m`; zero is refused.
pub fn parse_duration(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value).map_err(|e| bad(key, value, e))?;
    if d.is_zero() {
        return Err(bad(key, value, "must be greater than zero"));
    }
    Ok(d)
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::File {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    // Keys that are neither `serve` settings nor backend options are
    // mistakes (`listen_addr` for `listen-addr`): refuse them.
    for key in file.backend_options.keys() {
        if !ConnectOptions::knows(key) {
            return Err(ConfigError::File {
                path: shown,
                reason: format!("unknown field `{key}`"),
            });
        }
    }
    Ok(file)
}

/// The backend options of the file, as strings.
fn file_options(path: &Path, file: &FileConfig) -> Result<BTreeMap<String, String>, ConfigError> {
    file.backend_options
        .iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k.clone(), s.clone())),
            toml::Value::Boolean(b) => Ok((k.clone(), b.to_string())),
            other => Err(ConfigError::File {
                path: path.display().to_string(),
                reason: format!("{k} must be a string, not {}", other.type_str()),
            }),
        })
        .collect()
}

impl ServeConfig {
    /// Merges flags over the file over defaults, and validates every value.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let file_opts = match &args.config {
            Some(p) => file_options(p, &file)?,
            None => BTreeMap::new(),
        };
        let pick = |a: &Option<String>, f: Option<String>| a.clone().or(f);

        let listen_s = pick(&args.listen_addr, file.listen_addr).ok_or(ConfigError::Missing {
            key: "listen-addr",
            example: "--listen-addr unix:///var/run/kmsplugin/socket.sock",
        })?;
        let listen = Endpoint::parse(&listen_s).map_err(ConfigError::ListenAddr)?;

        let backend = match pick(&args.backend, file.backend) {
            Some(b) => registry::row(&b)
                .ok_or_else(|| bad("backend", &b, format!("choose {}", registry::choices())))?,
            None => registry::default_row(),
        };
        let keyring = args.keyring.clone().or(file.keyring);
        let keyring = match (keyring, backend.ring) {
            (Some(k), true) if k.as_os_str().is_empty() => {
                return Err(bad("keyring", "", "must not be empty"));
            }
            (Some(k), true) => Some(k),
            (None, true) => {
                return Err(ConfigError::Missing {
                    key: "keyring",
                    example: "--keyring /var/lib/kms-plugin",
                });
            }
            (Some(k), false) => {
                return Err(bad(
                    "keyring",
                    &k.display().to_string(),
                    format!(
                        "backend {} keeps no key ring (its keys live in the service it talks to)",
                        backend.name
                    ),
                ));
            }
            (None, false) => None,
        };
        let connect = args.connect.clone().with_fallbacks(&file_opts);
        connect
            .check_applies(backend)
            .and_then(|()| (backend.check)(&connect))
            .map_err(ConfigError::Backend)?;

        let dur = |key: &'static str, a: &Option<String>, f: Option<String>, default: Duration| {
            match pick(a, f) {
                Some(v) => parse_duration(key, &v),
                None => Ok(default),
            }
        };
        let timeout = dur(
            "timeout",
            &args.timeout,
            file.timeout,
            Duration::from_secs(3),
        )?;
        let shutdown_grace = dur(
            "shutdown-grace",
            &args.shutdown_grace,
            file.shutdown_grace,
            Duration::from_secs(10),
        )?;
        let health_cache = dur(
            "health-cache",
            &args.health_cache,
            file.health_cache,
            Duration::from_secs(5),
        )?;
        let reload_interval = dur(
            "reload-interval",
            &args.reload_interval,
            file.reload_interval,
            Duration::from_secs(1),
        )?;

        let health_addr = match pick(&args.health_addr, file.health_addr) {
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|e| {
                bad(
                    "health-addr",
                    &a,
                    format!("{e} (expected HOST:PORT such as 127.0.0.1:8095)"),
                )
            })?),
            None => None,
        };

        let log_format = match pick(&args.log_format, file.log_format) {
            Some(f) => f
                .parse()
                .map_err(|_| bad("log-format", &f, "choose plain or json"))?,
            None => LogFormat::Plain,
        };

        let socket_gid = match pick(&args.socket_group, file.socket_group) {
            Some(g) => {
                if listen.path().is_none() {
                    return Err(bad(
                        "socket-group",
                        &g,
                        "abstract sockets have no file permissions",
                    ));
                }
                Some(
                    crate::daemon::listener::resolve_group(&g)
                        .map_err(|e| bad("socket-group", &g, e))?,
                )
            }
            None => None,
        };

        let worker_threads = args.worker_threads.or(file.worker_threads).unwrap_or(1);
        if worker_threads == 0 || worker_threads > 64 {
            return Err(bad(
                "worker-threads",
                &worker_threads.to_string(),
                "must be between 1 and 64",
            ));
        }

        let max_in_flight = args.max_in_flight.or(file.max_in_flight).unwrap_or(256);
        if max_in_flight == 0 || max_in_flight > 65_536 {
            return Err(bad(
                "max-in-flight",
                &max_in_flight.to_string(),
                "must be between 1 and 65536",
            ));
        }

        Ok(ServeConfig {
            listen,
            keyring,
            backend,
            connect,
            timeout,
            health_addr,
            log_format,
            socket_gid,
            max_in_flight,
            worker_threads,
            shutdown_grace,
            health_cache,
            reload_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(listen: &str) -> ServeArgs {
        ServeArgs {
            listen_addr: Some(listen.into()),
            keyring: Some("/tmp/ring".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let c = ServeConfig::resolve(&args("unix:///tmp/k.sock")).unwrap();
        assert_eq!(c.backend.name, "software");
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.max_in_flight, 256);
        assert_eq!(c.worker_threads, 1);
        assert!(c.health_addr.is_none());
    }

    #[test]
    fn bad_values_name_themselves() {
        let cases: Vec<(ServeArgs, &str)> = vec![
            (
                args("tcp://127.0.0.1:1"),
                "listen-addr=\"tcp://127.0.0.1:1\" is not valid",
            ),
            (
                ServeArgs {
                    timeout: Some("soon".into()),
                    ..args("unix:///a.sock")
                },
                "timeout=\"soon\" is not valid",
            ),
            (
                ServeArgs {
                    timeout: Some("0s".into()),
                    ..args("unix:///a.sock")
                },
                "greater than zero",
            ),
            (
                ServeArgs {
                    health_addr: Some("localhost".into()),
                    ..args("unix:///a.sock")
                },
                "health-addr=\"localhost\" is not valid",
            ),
            (
                ServeArgs {
                    log_format: Some("xml".into()),
                    ..args("unix:///a.sock")
                },
                "log-format=\"xml\" is not valid",
            ),
            (
                ServeArgs {
                    backend: Some("hsm".into()),
                    ..args("unix:///a.sock")
                },
                "backend=\"hsm\" is not valid",
            ),
            (
                ServeArgs {
                    max_in_flight: Some(0),
                    ..args("unix:///a.sock")
                },
                "max-in-flight=\"0\" is not valid",
            ),
            (
                ServeArgs {
                    socket_group: Some("no-such-group-zz".into()),
                    ..args("unix:///a.sock")
                },
                "socket-group",
            ),
            (
                ServeArgs {
                    socket_group: Some("0".into()),
                    ..args("unix:///@abs")
                },
                "abstract",
            ),
            (
                ServeArgs {
                    listen_addr: None,
                    ..args("unix:///a.sock")
                },
                "listen-addr is required",
            ),
        ];
        for (a, want) in cases {
            let e = ServeConfig::resolve(&a).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn tpm_settings_are_validated_before_anything_runs() {
        let tpm = |tcti: &str| {
            let mut connect = ConnectOptions::default();
            connect.set("tcti", tcti).unwrap();
            ServeArgs {
                backend: Some("tpm-sealed".into()),
                connect,
                ..args("unix:///a.sock")
            }
        };
        let c = ServeConfig::resolve(&tpm("swtpm:host=127.0.0.1,port=2321")).unwrap();
        assert_eq!(c.backend.name, "tpm-sealed");
        assert_eq!(
            c.connect.get("tcti"),
            Some("swtpm:host=127.0.0.1,port=2321")
        );
        for (value, want) in [
            ("tpm", "tcti=\"tpm\" is not valid: unknown transport"),
            ("swtpm:path=/s", "unix socket"),
            ("device:dev/tpmrm0", "not absolute"),
        ] {
            let e = ServeConfig::resolve(&tpm(value)).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
        crate::backend::tpm::parse_tcti("device:/dev/tpmrm0").unwrap();
        // A TPM backend without a TCTI, and a TPM option with the software backend.
        let e = ServeConfig::resolve(&ServeArgs {
            backend: Some("tpm-resident".into()),
            ..args("unix:///a.sock")
        });
        if std::env::var_os("TCTI").is_none() {
            let e = e.unwrap_err().to_string();
            assert!(
                e.contains("tcti is required with backend=tpm-resident"),
                "{e}"
            );
        }
        let mut software = tpm("device:/dev/tpmrm0");
        software.backend = None;
        let e = ServeConfig::resolve(&software).unwrap_err().to_string();
        assert!(
            e.contains("--tcti does not apply to backend software"),
            "{e}"
        );
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        std::fs::write(
            &f,
            "listen-addr = \"unix:///from/file.sock\"\nkeyring = \"/file/ring\"\ntimeout = \"7s\"\nhealth-addr = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let a = ServeArgs {
            config: Some(f.clone()),
            timeout: Some("2s".into()),
            ..Default::default()
        };
        let c = ServeConfig::resolve(&a).unwrap();
        assert_eq!(c.listen.to_string(), "unix:///from/file.sock");
        assert_eq!(c.keyring, Some(PathBuf::from("/file/ring")));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.health_addr.unwrap().port(), 9000);

        std::fs::write(&f, "listen_addr = \"x\"\n").unwrap();
        let e = ServeConfig::resolve(&a).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        std::fs::write(&f, "timeout = [").unwrap();
        assert!(
            ServeConfig::resolve(&a)
                .unwrap_err()
                .to_string()
                .contains("is not valid")
        );
    }
}

#[cfg(test)]
mod deploy_tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kms-plugin.toml");
        let c = ServeConfig::resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.listen.to_string(),
            "unix:///var/run/kmsplugin/socket.sock"
        );
        assert_eq!(c.backend.name, "software");
        assert_eq!(c.health_addr.unwrap().port(), 8095);
    }
}
