//! Validation as upstream `validation_encryption.go` does it: the
//! `resources:` list, the resource names of each entry, and each provider
//! element (exactly one kind); key lists (`keys`) and kms entries (`kms`)
//! have files of their own. Errors are collected rather than stopping at
//! the first, and each names its field path.

use std::collections::HashSet;

use super::decode::{RawProvider, RawResource};
use super::keys::validate_keys;
use super::kms::validate_kms;
use super::resources::GroupResource;
use super::{ProviderConfig, ResourceConfig};
use crate::k8s::{FieldError, FieldErrors, go_quote as q};

/// Collects field errors with the apiserver's message shapes.
#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<FieldError>);

impl Errors {
    pub(super) fn required(&mut self, field: &str, detail: impl Into<String>) {
        self.0.push(FieldError::required(field, detail));
    }
    pub(super) fn invalid(
        &mut self,
        field: &str,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.0
            .push(FieldError::invalid_rendered(field, value.into(), detail));
    }
    pub(super) fn duplicate(&mut self, field: &str, value: impl Into<String>) {
        self.0.push(FieldError::duplicate(field, value.into()));
    }
}

/// Renders a string list as Go's `%#v` of a `[]string`.
fn q_list(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| q(s)).collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// Validates every `resources:` entry, collecting every error found.
pub(super) fn validate(raw: Vec<RawResource>) -> Result<Vec<ResourceConfig>, FieldErrors> {
    let mut errs = Errors::default();
    if raw.is_empty() {
        errs.required("resources", "at least one resources is required");
        return Err(FieldErrors(errs.0));
    }
    let mut kms_names: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let r_path = format!("resources[{i}].resources");
        let p_path = format!("resources[{i}].providers");
        let resources = entry.resources.unwrap_or_default();
        if resources.is_empty() {
            errs.required(&r_path, format!("at least one {r_path} is required"));
        }
        validate_resource_overlap(&resources, &r_path, &mut errs);
        validate_resource_names(&resources, &r_path, &mut errs);
        let raw_providers = entry.providers.unwrap_or_default();
        if raw_providers.is_empty() {
            errs.required(&p_path, format!("at least one {p_path} is required"));
        }
        let mut providers = Vec::with_capacity(raw_providers.len());
        for (j, p) in raw_providers.into_iter().enumerate() {
            let path = format!("{p_path}[{j}]");
            if let Some(p) = validate_provider(p, &path, &mut kms_names, &mut errs) {
                providers.push(p);
            }
        }
        out.push(ResourceConfig {
            resources,
            providers,
        });
    }
    if errs.0.is_empty() {
        Ok(out)
    } else {
        Err(FieldErrors(errs.0))
    }
}

fn validate_resource_overlap(resources: &[String], path: &str, errs: &mut Errors) {
    if resources.len() < 2 {
        return;
    }
    let parsed: Vec<GroupResource> = resources.iter().map(|r| GroupResource::parse(r)).collect();
    let any = GroupResource::any();
    let (mut has_overlap, mut has_duplicate) = (false, false);
    for (i, r1) in parsed.iter().enumerate() {
        for (j, r2) in parsed.iter().enumerate() {
            if i == j {
                continue;
            }
            if r1 == r2 && !has_duplicate {
                has_duplicate = true;
                continue;
            }
            if has_overlap {
                continue;
            }
            if *r1 == any {
                has_overlap = true;
                continue;
            }
            if r1.group != r2.group {
                continue;
            }
            if r1.resource == "*" || r2.resource == "*" {
                has_overlap = true;
            }
        }
    }
    if has_duplicate {
        errs.invalid(
            path,
            q_list(resources),
            "the same resource cannot be specified multiple times",
        );
    }
    if has_overlap {
        errs.invalid(
            path,
            q_list(resources),
            "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
        );
    }
}

fn validate_resource_names(resources: &[String], path: &str, errs: &mut Errors) {
    for (j, res) in resources.iter().enumerate() {
        let jj = format!("{path}[{j}]");
        if res.to_lowercase() != *res {
            errs.invalid(
                &jj,
                q(res),
                "resource name should not contain capital letters",
            );
            continue;
        }
        if res == "*" {
            errs.invalid(
                &jj,
                q(res),
                "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources",
            );
            continue;
        }
        if matches!(
            res.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            errs.invalid(
                &jj,
                q(res),
                "resources which do not have REST API/s cannot be encrypted",
            );
            continue;
        }
        let gr = GroupResource::parse(res);
        if gr.group == "events.k8s.io" {
            errs.invalid(
                &jj,
                q(res),
                "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file",
            );
            continue;
        }
        if gr.group == "extensions" {
            errs.invalid(
                &jj,
                q(res),
                "'extensions' group has been removed and cannot be used for encryption",
            );
            continue;
        }
        if gr.group == "*" && gr.resource != "*" {
            errs.invalid(
                &jj,
                q(res),
                "encrypting the same resource across groups is not supported",
            );
        }
    }
}

fn validate_provider(
    p: RawProvider,
    path: &str,
    kms_names: &mut HashSet<String>,
    errs: &mut Errors,
) -> Option<ProviderConfig> {
    // In upstream's order: kms, the local-key providers, identity.
    let present: Vec<&str> = p
        .kms
        .iter()
        .map(|_| "kms")
        .chain(p.local.iter().map(|(kind, _)| kind.row().name))
        .chain(p.identity.iter().map(|_| "identity"))
        .collect();
    match present.len() {
        0 => {
            errs.invalid(
                path,
                "{}",
                "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity",
            );
            return None;
        }
        1 => {}
        _ => {
            errs.invalid(
                path,
                format!("[{}]", present.join(" ")),
                "more than one provider specified in a single element, should split into different list elements",
            );
            return None;
        }
    }
    if let Some(kms) = p.kms {
        let kms_path = format!("{path}.kms");
        return validate_kms(kms, &kms_path, kms_names, errs);
    }
    if let Some((kind, raw)) = p.local.into_iter().next()
        && let Some(row) = kind.row().local.as_ref()
    {
        let keys = validate_keys(raw, &format!("{path}.{kind}.keys"), row.key_sizes, errs);
        return Some(ProviderConfig::Keys { kind, keys });
    }
    Some(ProviderConfig::Identity)
}

#[cfg(test)]
mod tests {
    use crate::encryption_config::test_support::*;

    #[test]
    fn exactly_one_provider_per_entry() {
        let e = invalid(&doc(&format!(
            "  - identity: {{}}\n    aesgcm:\n      keys:\n      - name: k\n        secret: {K16}\n"
        )));
        assert!(e.to_string().contains("resources[0].providers[0]: Invalid value: [aesgcm identity]: more than one provider specified in a single element, should split into different list elements"), "{e}");
        let e = invalid(&doc("  - {}\n"));
        assert!(
            e.to_string()
                .contains("provider does not contain any of the expected providers")
        );
    }

    #[test]
    fn resource_rules() {
        let base = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
        let e = invalid(&format!("{base}resources: []\n"));
        assert_eq!(
            e.to_string(),
            "resources: Required value: at least one resources is required"
        );
        let e = invalid(&format!(
            "{base}resources:\n- providers:\n  - identity: {{}}\n"
        ));
        assert_eq!(
            e.to_string(),
            "resources[0].resources: Required value: at least one resources[0].resources is required"
        );
        let e = invalid(&format!("{base}resources:\n- resources: [secrets]\n"));
        assert_eq!(
            e.to_string(),
            "resources[0].providers: Required value: at least one resources[0].providers is required"
        );
        for (res, msg) in [
            (
                "Secrets",
                "resource name should not contain capital letters",
            ),
            ("'*'", "use '*.' to encrypt all the resources"),
            (
                "serviceipallocations",
                "resources which do not have REST API/s",
            ),
            (
                "events.events.k8s.io",
                "objects are stored using the 'events' API group",
            ),
            (
                "deployments.extensions",
                "'extensions' group has been removed",
            ),
            (
                "secrets.*",
                "encrypting the same resource across groups is not supported",
            ),
        ] {
            let e = invalid(&format!(
                "{base}resources:\n- resources: [{res}]\n  providers:\n  - identity: {{}}\n"
            ));
            assert!(
                e.to_string()
                    .contains("resources[0].resources[0]: Invalid value"),
                "{e}"
            );
            assert!(e.to_string().contains(msg), "{res}: {e}");
        }
        let e = invalid(&format!(
            "{base}resources:\n- resources: [secrets, secrets]\n  providers:\n  - identity: {{}}\n"
        ));
        assert_eq!(
            e.to_string(),
            r#"resources[0].resources: Invalid value: []string{"secrets", "secrets"}: the same resource cannot be specified multiple times"#
        );
        let e = invalid(&format!(
            "{base}resources:\n- resources: [secrets, '*.']\n  providers:\n  - identity: {{}}\n"
        ));
        assert!(e.to_string().contains("using overlapping resources"), "{e}");
    }
}
