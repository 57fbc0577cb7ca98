//! The schema rules a Pod in deploy/ must pass; `check` returns every
//! broken rule, each naming the field.
//!
//! Every Pod: named containers, mounts of declared volumes, hostPath volumes
//! with an absolute path and an explicit, valid type.
//! A pod running `kms-plugin serve` runs unprivileged: not privileged, no
//! privilege escalation, every capability dropped but at most IPC_LOCK,
//! seccomp RuntimeDefault, a read-only root filesystem, a fixed non-root uid
//! and gid with runAsNonRoot; the key ring (`--keyring`) mounted read-only
//! from an existing directory, the socket's directory (`--listen-addr`)
//! mounted from an existing directory, no host device volume (a TPM comes
//! from a device request), and the liveness and readiness probes on the
//! host and port of `--health-addr` (the node's loopback, so hostNetwork).

use serde_json::Value;

use crate::{file_flags, flag, keeps_no_ring};

const HOST_PATH_TYPES: [&str; 7] = [
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The command line of a container (command, then args).
fn argv(c: &Value) -> Vec<&str> {
    list(&c["command"])
        .iter()
        .chain(list(&c["args"]))
        .filter_map(Value::as_str)
        .collect()
}

fn runs_plugin(c: &Value) -> bool {
    let a = argv(c);
    a.first().is_some_and(|p| p.ends_with("kms-plugin")) && a.get(1) == Some(&"serve")
}

/// Whether a container of `pod` runs `kms-plugin serve`.
pub fn is_plugin_pod(pod: &Value) -> bool {
    list(&pod["spec"]["containers"]).iter().any(runs_plugin)
}

/// Every rule `pod` breaks.
pub fn check(pod: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let spec = &pod["spec"];
    if pod["metadata"]["name"].as_str().unwrap_or("").is_empty() {
        p.push("metadata.name is required".to_string());
    }
    let containers = list(&spec["containers"]);
    if containers.is_empty() {
        p.push("spec.containers is required".to_string());
    }
    let volumes = list(&spec["volumes"]);
    for (i, v) in volumes.iter().enumerate() {
        let at = format!("spec.volumes[{i}]");
        if v["name"].as_str().unwrap_or("").is_empty() {
            p.push(format!("{at}.name is required"));
        }
        let hp = &v["hostPath"];
        if hp.is_null() {
            continue;
        }
        if !hp["path"].as_str().is_some_and(|s| s.starts_with('/')) {
            p.push(format!("{at}.hostPath.path must be absolute"));
        }
        match hp["type"].as_str() {
            Some(t) if HOST_PATH_TYPES.contains(&t) => {}
            Some(t) => p.push(format!(
                "{at}.hostPath.type {t:?} is not one of {HOST_PATH_TYPES:?}"
            )),
            None => p.push(format!(
                "{at}.hostPath.type must be set (without it nothing checks what is at the path)"
            )),
        }
    }
    for (i, c) in containers.iter().enumerate() {
        let at = format!("spec.containers[{i}]");
        if c["name"].as_str().unwrap_or("").is_empty() {
            p.push(format!("{at}.name is required"));
        }
        for (j, m) in list(&c["volumeMounts"]).iter().enumerate() {
            let name = m["name"].as_str().unwrap_or("");
            if !volumes.iter().any(|v| v["name"] == name) {
                p.push(format!(
                    "{at}.volumeMounts[{j}] mounts {name:?}, which spec.volumes does not declare"
                ));
            }
        }
        if runs_plugin(c) {
            check_plugin_container(pod, c, &at, &mut p);
        }
    }
    p
}

/// The field `key` of the container's securityContext, else the pod's.
fn effective<'a>(pod: &'a Value, c: &'a Value, key: &str) -> &'a Value {
    let own = &c["securityContext"][key];
    if own.is_null() {
        &pod["spec"]["securityContext"][key]
    } else {
        own
    }
}

fn check_plugin_container(pod: &Value, c: &Value, at: &str, p: &mut Vec<String>) {
    let sc = &c["securityContext"];
    let spec = &pod["spec"];
    if c["image"].as_str().unwrap_or("").is_empty() {
        p.push(format!("{at}.image is required"));
    }
    if sc["privileged"] == true {
        p.push(format!("{at}.securityContext.privileged must not be true"));
    }
    if sc["allowPrivilegeEscalation"] != false {
        p.push(format!(
            "{at}.securityContext.allowPrivilegeEscalation must be false"
        ));
    }
    if !list(&sc["capabilities"]["drop"]).contains(&Value::from("ALL")) {
        p.push(format!(
            "{at}.securityContext.capabilities.drop must hold ALL"
        ));
    }
    for cap in list(&sc["capabilities"]["add"]) {
        if cap != "IPC_LOCK" {
            p.push(format!(
                "{at}.securityContext.capabilities.add holds {cap}: only IPC_LOCK (mlock of key pages) is allowed"
            ));
        }
    }
    if sc["readOnlyRootFilesystem"] != true {
        p.push(format!(
            "{at}.securityContext.readOnlyRootFilesystem must be true"
        ));
    }
    if effective(pod, c, "runAsNonRoot") != true {
        p.push(format!(
            "{at}: runAsNonRoot must be true (container or pod securityContext)"
        ));
    }
    for id in ["runAsUser", "runAsGroup"] {
        if effective(pod, c, id).as_u64().unwrap_or(0) == 0 {
            p.push(format!(
                "{at}: {id} must be a fixed non-zero id (the key ring's owner on the node)"
            ));
        }
    }
    if effective(pod, c, "seccompProfile")["type"] != "RuntimeDefault" {
        p.push(format!("{at}: seccompProfile.type must be RuntimeDefault"));
    }
    for host in ["hostPID", "hostIPC"] {
        if spec[host] == true {
            p.push(format!("spec.{host} must not be true"));
        }
    }
    let args = argv(c);
    check_mounts(spec, c, &args, at, p);
    check_probes(spec, c, &args, at, p);
    check_devices(spec, c, &args, at, p);
}

/// The hostPath volume mounted at `path` in `c`, with its mount.
fn mounted_at<'a>(spec: &'a Value, c: &'a Value, path: &str) -> Option<(&'a Value, &'a Value)> {
    let m = list(&c["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"] == path)?;
    let v = list(&spec["volumes"])
        .iter()
        .find(|v| v["name"] == m["name"])?;
    Some((m, &v["hostPath"]))
}

fn check_mounts(spec: &Value, c: &Value, args: &[&str], at: &str, p: &mut Vec<String>) {
    match flag(args, "keyring") {
        // No ring: the credential files come from a read-only hostPath.
        None if keeps_no_ring(args) => {
            for f in file_flags(args) {
                let dir = f.rsplit_once('/').map_or("", |(d, _)| d);
                match mounted_at(spec, c, dir) {
                    Some((m, hp)) if m["readOnly"] == true && hp["type"] == "Directory" => {}
                    _ => p.push(format!(
                        "{at}: {f} must be in a hostPath Directory mounted readOnly at {dir}"
                    )),
                }
            }
        }
        None => p.push(format!("{at}: kms-plugin serve needs --keyring")),
        Some(ring) => match mounted_at(spec, c, ring) {
            None => p.push(format!(
                "{at}: --keyring={ring} is not a hostPath volume mounted at {ring}"
            )),
            Some((m, hp)) => {
                if m["readOnly"] != true {
                    p.push(format!(
                        "{at}: the key ring mount {ring} must be readOnly (serve never writes it)"
                    ));
                }
                if hp["type"] != "Directory" {
                    p.push(format!(
                        "{at}: the key ring volume must be hostPath type Directory (never create an empty ring directory)"
                    ));
                }
            }
        },
    }
    let sock = flag(args, "listen-addr").and_then(|a| a.strip_prefix("unix://"));
    match sock.and_then(|s| s.rsplit_once('/')) {
        Some((dir, _)) if !dir.starts_with('@') && !dir.is_empty() => {
            match mounted_at(spec, c, dir) {
                None => p.push(format!(
                    "{at}: the socket directory {dir} is not a hostPath volume mounted there (kube-apiserver mounts the same one)"
                )),
                Some((m, hp)) => {
                    if m["readOnly"] == true {
                        p.push(format!("{at}: the socket directory {dir} cannot be readOnly"));
                    }
                    if hp["type"] != "Directory" {
                        p.push(format!(
                            "{at}: the socket volume must be hostPath type Directory (made for the plugin's uid before the kubelet starts)"
                        ));
                    }
                }
            }
        }
        _ => p.push(format!(
            "{at}: --listen-addr must be unix:///DIR/NAME on a hostPath kube-apiserver shares"
        )),
    }
    for (i, v) in list(&spec["volumes"]).iter().enumerate() {
        if matches!(
            v["hostPath"]["type"].as_str(),
            Some("CharDevice" | "BlockDevice")
        ) {
            p.push(format!(
                "spec.volumes[{i}]: a hostPath device only opens in a privileged container: request the device from a device plugin"
            ));
        }
    }
}

fn check_probes(spec: &Value, c: &Value, args: &[&str], at: &str, p: &mut Vec<String>) {
    let Some(addr) = flag(args, "health-addr") else {
        p.push(format!(
            "{at}: --health-addr is needed for the liveness and readiness probes"
        ));
        return;
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        p.push(format!("{at}: --health-addr={addr} is not HOST:PORT"));
        return;
    };
    let port: u64 = port.parse().unwrap_or(0);
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        if get.is_null() {
            p.push(format!("{at}.{probe}.httpGet is required ({path})"));
            continue;
        }
        if get["path"] != path {
            p.push(format!("{at}.{probe}.httpGet.path must be {path}"));
        }
        if get["port"].as_u64() != Some(port) {
            p.push(format!(
                "{at}.{probe}.httpGet.port is {}, but --health-addr={addr} serves port {port}",
                get["port"]
            ));
        }
        if get["host"] != host {
            p.push(format!(
                "{at}.{probe}.httpGet.host is {}, but --health-addr={addr} listens on {host}",
                get["host"]
            ));
        }
    }
    if host.starts_with("127.") && spec["hostNetwork"] != true {
        p.push(format!(
            "{at}: --health-addr={addr} is loopback: the kubelet reaches it only with spec.hostNetwork: true"
        ));
    }
}

fn check_devices(_spec: &Value, c: &Value, args: &[&str], at: &str, p: &mut Vec<String>) {
    let Some(dev) = flag(args, "tcti").and_then(|t| t.strip_prefix("device:")) else {
        return;
    };
    let limits = c["resources"]["limits"].as_object();
    let requested = limits.is_some_and(|l| {
        l.iter().any(|(k, v)| {
            k.contains('/')
                && !k.contains("kubernetes.io/")
                && v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    >= Some(1)
        })
    });
    if !requested {
        p.push(format!(
            "{at}: --tcti=device:{dev} needs the device allocated to the container: a device plugin resource in resources.limits (deploy/tpm/README.md)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn software_pod() -> Value {
        let text = std::fs::read_to_string(
            crate::deploy_dir().join("kubernetes/kms-plugin-static-pod.yaml"),
        )
        .unwrap();
        serde_saphyr::from_str(&text).unwrap()
    }

    fn tpm_pod() -> Value {
        let text =
            std::fs::read_to_string(crate::deploy_dir().join("tpm/kms-plugin-tpm-static-pod.yaml"))
                .unwrap();
        serde_saphyr::from_str(&text).unwrap()
    }

    /// The rules `pod` breaks once `edit` ran on it.
    fn broken(mut pod: Value, edit: impl FnOnce(&mut Value)) -> String {
        edit(&mut pod);
        check(&pod).join("\n")
    }

    fn container(pod: &mut Value) -> &mut Value {
        &mut pod["spec"]["containers"][0]
    }

    fn sc(pod: &mut Value) -> &mut Value {
        &mut container(pod)["securityContext"]
    }

    fn transit_pod() -> Value {
        let text = std::fs::read_to_string(
            crate::deploy_dir().join("transit/kms-plugin-transit-static-pod.yaml"),
        )
        .unwrap();
        serde_saphyr::from_str(&text).unwrap()
    }

    #[test]
    fn the_shipped_pods_pass() {
        assert_eq!(check(&software_pod()), Vec::<String>::new());
        assert_eq!(check(&tpm_pod()), Vec::<String>::new());
        assert_eq!(check(&transit_pod()), Vec::<String>::new());
    }

    #[test]
    fn a_ringless_backend_needs_its_credentials_read_only_and_others_a_ring() {
        let b = broken(transit_pod(), |p| {
            container(p)["volumeMounts"][0]["readOnly"] = false.into()
        });
        assert!(
            b.contains(
                "/etc/kms-plugin/transit/token must be in a hostPath Directory mounted readOnly"
            ),
            "{b}"
        );
        let b = broken(transit_pod(), |p| {
            container(p)["command"][2] = "--backend=software".into()
        });
        assert!(b.contains("kms-plugin serve needs --keyring"), "{b}");
    }

    #[test]
    fn privilege_is_refused() {
        let b = broken(software_pod(), |p| sc(p)["privileged"] = true.into());
        assert!(b.contains("privileged must not be true"), "{b}");
        let b = broken(software_pod(), |p| {
            sc(p)
                .as_object_mut()
                .unwrap()
                .remove("allowPrivilegeEscalation");
        });
        assert!(b.contains("allowPrivilegeEscalation must be false"), "{b}");
        let b = broken(software_pod(), |p| {
            sc(p)["capabilities"]["add"] = serde_json::json!(["IPC_LOCK", "SYS_ADMIN"])
        });
        assert!(b.contains("holds \"SYS_ADMIN\""), "{b}");
        let b = broken(software_pod(), |p| {
            sc(p)["capabilities"]["drop"] = serde_json::json!(["NET_RAW"])
        });
        assert!(b.contains("drop must hold ALL"), "{b}");
        let b = broken(software_pod(), |p| {
            sc(p)["readOnlyRootFilesystem"] = false.into()
        });
        assert!(b.contains("readOnlyRootFilesystem must be true"), "{b}");
        let b = broken(software_pod(), |p| p["spec"]["hostPID"] = true.into());
        assert!(b.contains("spec.hostPID must not be true"), "{b}");
    }

    #[test]
    fn root_and_unconfined_are_refused_at_either_level() {
        let b = broken(software_pod(), |p| {
            p["spec"]["securityContext"]["runAsUser"] = 0.into()
        });
        assert!(b.contains("runAsUser must be a fixed non-zero id"), "{b}");
        let b = broken(software_pod(), |p| {
            container(p)["securityContext"]["runAsNonRoot"] = false.into()
        });
        assert!(b.contains("runAsNonRoot must be true"), "{b}");
        let b = broken(software_pod(), |p| {
            container(p)["securityContext"]["seccompProfile"] =
                serde_json::json!({"type": "Unconfined"})
        });
        assert!(
            b.contains("seccompProfile.type must be RuntimeDefault"),
            "{b}"
        );
    }

    #[test]
    fn a_writable_ring_a_created_ring_or_a_device_volume_is_refused() {
        let b = broken(software_pod(), |p| {
            container(p)["volumeMounts"][1]["readOnly"] = false.into()
        });
        assert!(
            b.contains("key ring mount /var/lib/kms-plugin must be readOnly"),
            "{b}"
        );
        let b = broken(software_pod(), |p| {
            p["spec"]["volumes"][1]["hostPath"]["type"] = "DirectoryOrCreate".into()
        });
        assert!(
            b.contains("key ring volume must be hostPath type Directory"),
            "{b}"
        );
        let b = broken(software_pod(), |p| {
            p["spec"]["volumes"][1]["hostPath"]["type"] = "Dir".into()
        });
        assert!(b.contains("hostPath.type \"Dir\" is not one of"), "{b}");
        let b = broken(tpm_pod(), |p| {
            p["spec"]["volumes"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": "tpm", "hostPath": {"path": "/dev/tpmrm0", "type": "CharDevice"}}));
            container(p)["resources"]["limits"]
                .as_object_mut()
                .unwrap()
                .remove("squat.ai/tpmrm");
        });
        assert!(
            b.contains("a hostPath device only opens in a privileged container"),
            "{b}"
        );
        assert!(
            b.contains("--tcti=device:/dev/tpmrm0 needs the device allocated"),
            "{b}"
        );
        let b = broken(software_pod(), |p| {
            container(p)["volumeMounts"][0]["name"] = "sock".into()
        });
        assert!(
            b.contains("mounts \"sock\", which spec.volumes does not declare"),
            "{b}"
        );
    }

    #[test]
    fn probes_must_match_the_health_flag() {
        let b = broken(software_pod(), |p| {
            container(p)["livenessProbe"]["httpGet"]["port"] = 8096.into()
        });
        assert!(
            b.contains("livenessProbe.httpGet.port is 8096, but --health-addr=127.0.0.1:8095 serves port 8095"),
            "{b}"
        );
        let b = broken(software_pod(), |p| {
            container(p)["readinessProbe"]["httpGet"]["path"] = "/livez".into()
        });
        assert!(
            b.contains("readinessProbe.httpGet.path must be /healthz"),
            "{b}"
        );
        let b = broken(software_pod(), |p| p["spec"]["hostNetwork"] = false.into());
        assert!(b.contains("only with spec.hostNetwork: true"), "{b}");
    }

    #[test]
    fn flags_are_read_in_both_spellings() {
        let a = [
            "kms-plugin",
            "serve",
            "--keyring",
            "/r",
            "--health-addr=h:1",
        ];
        assert_eq!(flag(&a, "keyring"), Some("/r"));
        assert_eq!(flag(&a, "health-addr"), Some("h:1"));
        assert_eq!(flag(&a, "tcti"), None);
    }
}
