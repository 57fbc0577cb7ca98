//! The TPM transport (TCTI) named by `--tcti` or `$TCTI`, checked strictly.
//!
//! ```text
//! device[:/dev/tpmrm0]              the kernel's resource manager (default path)
//! swtpm[:host=H,port=P]             swtpm's TCP server socket (tests, dev)
//! mssim[:host=H,port=P]             the Microsoft/IBM simulator protocol
//! tabrmd[:bus_name=N,bus_type=T]    the user-space resource manager over D-Bus
//! ```
//!
//! tss-esapi's own parser ignores keys it does not know (`swtpm:path=/x`
//! becomes `localhost:2321`); here every key is checked and a bad value names
//! itself, so a typo fails before anything talks to a TPM.

use std::str::FromStr;

use tss_esapi::tcti_ldr::{DeviceConfig, TctiNameConf};

/// Where the TPM is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcti {
    canonical: String,
}

/// The default device: the kernel resource manager, which lets several
/// processes (the plugin and the `key` commands) share the TPM.
pub const DEFAULT_DEVICE: &str = "/dev/tpmrm0";

fn network(kind: &str, rest: &str) -> Result<String, String> {
    let mut host = "localhost".to_string();
    let mut port: u16 = 2321;
    for kv in rest.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{kv:?} is not KEY=VALUE"))?;
        match k {
            "host" => {
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
                {
                    return Err(format!("host {v:?} is not a host name or IP address"));
                }
                host = v.to_string();
            }
            "port" => {
                port = v
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("port {v:?} is not a TCP port"))?;
            }
            "path" => {
                return Err(format!(
                    "{kind} over a unix socket is not supported by this tpm2-tss; use {kind}:host=127.0.0.1,port=P"
                ));
            }
            other => return Err(format!("unknown {kind} option {other:?} (host, port)")),
        }
    }
    Ok(format!("{kind}:host={host},port={port}"))
}

fn tabrmd(rest: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for kv in rest.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{kv:?} is not KEY=VALUE"))?;
        match (k, v) {
            ("bus_name", n) if !n.is_empty() && !n.contains(',') => out.push(kv.to_string()),
            ("bus_type", "system" | "session") => out.push(kv.to_string()),
            ("bus_type", t) => return Err(format!("bus_type {t:?} is not system or session")),
            (other, _) => {
                return Err(format!(
                    "unknown tabrmd option {other:?} (bus_name, bus_type)"
                ));
            }
        }
    }
    Ok(if out.is_empty() {
        "tabrmd".into()
    } else {
        format!("tabrmd:{}", out.join(","))
    })
}

impl FromStr for Tcti {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let canonical = match kind {
            "device" => {
                let path = if rest.is_empty() {
                    DEFAULT_DEVICE
                } else {
                    rest
                };
                if !path.starts_with('/') {
                    return Err(format!("device path {path:?} is not absolute"));
                }
                format!("device:{path}")
            }
            "swtpm" | "mssim" => network(kind, rest)?,
            "tabrmd" => tabrmd(rest)?,
            "" => return Err("empty; e.g. device:/dev/tpmrm0".into()),
            other => {
                return Err(format!(
                    "unknown transport {other:?}: choose device:/dev/tpmrm0, swtpm:host=H,port=P, mssim:host=H,port=P or tabrmd"
                ));
            }
        };
        // tss-esapi must accept what we accept.
        TctiNameConf::from_str(&canonical)
            .map_err(|e| format!("not accepted by tss-esapi: {e}"))?;
        Ok(Tcti { canonical })
    }
}

impl Tcti {
    /// The tss-esapi configuration to connect with.
    pub fn name_conf(&self) -> TctiNameConf {
        // Checked in `from_str`.
        TctiNameConf::from_str(&self.canonical).unwrap_or_else(|_| {
            TctiNameConf::Device(DeviceConfig::from_str(DEFAULT_DEVICE).unwrap_or_default())
        })
    }

    /// Whether this is a raw TPM device without a resource manager
    /// (`/dev/tpm0`): the kernel lets one process open it at a time, so
    /// transient objects found at connect time were left by a dead client.
    pub fn is_exclusive_raw_device(&self) -> bool {
        self.canonical.starts_with("device:") && !self.is_resource_managed()
    }

    /// Whether this transport is a resource manager that virtualises object
    /// slots per connection.
    pub fn is_resource_managed(&self) -> bool {
        self.canonical.starts_with("tabrmd")
            || self
                .canonical
                .strip_prefix("device:")
                .is_some_and(|p| p.contains("tpmrm"))
    }
}

impl std::fmt::Display for Tcti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms_and_canonicalises_them() {
        for (input, want) in [
            ("device:/dev/tpmrm0", "device:/dev/tpmrm0"),
            ("device", "device:/dev/tpmrm0"),
            ("device:/dev/tpm0", "device:/dev/tpm0"),
            (
                "swtpm:host=127.0.0.1,port=2321",
                "swtpm:host=127.0.0.1,port=2321",
            ),
            ("swtpm:port=9999", "swtpm:host=localhost,port=9999"),
            ("swtpm", "swtpm:host=localhost,port=2321"),
            ("mssim:host=localhost,port=1", "mssim:host=localhost,port=1"),
            ("tabrmd", "tabrmd"),
            ("tabrmd:bus_type=session", "tabrmd:bus_type=session"),
        ] {
            let t: Tcti = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(t.to_string(), want);
            let _ = t.name_conf();
        }
        assert!(
            "device:/dev/tpmrm0"
                .parse::<Tcti>()
                .unwrap()
                .is_resource_managed()
        );
        assert!(!"swtpm".parse::<Tcti>().unwrap().is_resource_managed());
        assert!(
            "device:/dev/tpm0"
                .parse::<Tcti>()
                .unwrap()
                .is_exclusive_raw_device()
        );
        assert!(!"swtpm".parse::<Tcti>().unwrap().is_exclusive_raw_device());
    }

    #[test]
    fn refuses_what_it_does_not_understand_with_a_reason() {
        for (input, want) in [
            ("", "empty"),
            ("tpm", "unknown transport"),
            ("device:dev/tpm0", "not absolute"),
            ("swtpm:path=/tmp/s", "unix socket"),
            ("swtpm:port=0", "not a TCP port"),
            ("swtpm:port=x", "not a TCP port"),
            ("swtpm:prot=1", "unknown swtpm option"),
            ("swtpm:host=a b", "not a host"),
            ("swtpm:host", "KEY=VALUE"),
            ("tabrmd:bus_type=bus", "bus_type"),
            ("tabrmd:x=y", "unknown tabrmd option"),
        ] {
            let e = input.parse::<Tcti>().unwrap_err();
            assert!(e.contains(want), "{input:?}: {want:?} not in {e:?}");
        }
    }
}
