//! Which providers a resource gets: resource names read as apimachinery's
//! `schema.ParseGroupResource` reads them, upstream's lookup (the exact
//! name, then `*.<group>`, then `*.*`), and the refusal of a rule masked by
//! an earlier wildcard.

use std::collections::HashSet;

use super::{
    ConfigError, EncryptionConfiguration, ProviderConfig, ResourceConfig, SECRETS_RESOURCE,
};

impl EncryptionConfiguration {
    /// The providers the apiserver uses for `resource` (written as in the
    /// file: `secrets`, `deployments.apps`), in the order it tries them;
    /// `None` when no entry covers the resource, in which case the
    /// apiserver stores it unencrypted (identity).
    ///
    /// As upstream: the providers of every entry naming the resource exactly
    /// are concatenated in file order; failing that, those of `*.<group>`
    /// (`*.` for the core group), failing that those of `*.*`.
    pub fn providers_for(&self, resource: &str) -> Option<Vec<&ProviderConfig>> {
        let wanted = GroupResource::parse(resource);
        let candidates = [
            wanted.clone(),
            GroupResource {
                group: wanted.group.clone(),
                resource: "*".to_owned(),
            },
            GroupResource::any(),
        ];
        candidates.iter().find_map(|rule| {
            let found: Vec<&ProviderConfig> = self
                .resources
                .iter()
                .filter(|e| e.resources.iter().any(|r| GroupResource::parse(r) == *rule))
                .flat_map(|e| e.providers.iter())
                .collect();
            (!found.is_empty()).then_some(found)
        })
    }

    /// The providers for Secrets ([`providers_for`](Self::providers_for)
    /// `("secrets")`).
    pub fn secrets_providers(&self) -> Option<Vec<&ProviderConfig>> {
        self.providers_for(SECRETS_RESOURCE)
    }
}

/// A `resource.group` pair as apimachinery's `schema.ParseGroupResource`
/// reads it: split at the first dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct GroupResource {
    pub(super) group: String,
    pub(super) resource: String,
}

impl GroupResource {
    pub(super) fn parse(s: &str) -> Self {
        match s.split_once('.') {
            Some((resource, group)) => GroupResource {
                group: group.to_owned(),
                resource: resource.to_owned(),
            },
            None => GroupResource {
                group: String::new(),
                resource: s.to_owned(),
            },
        }
    }
    pub(super) fn any() -> Self {
        GroupResource {
            group: "*".to_owned(),
            resource: "*".to_owned(),
        }
    }
    /// As the apiserver prints a rule in its masking error.
    pub(super) fn yaml_string(&self) -> String {
        if self.group.is_empty() && self.resource == "*" {
            "*.".to_owned()
        } else if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// Refuses a resource listed after an earlier entry's wildcard covering it,
/// as upstream does when building its transformers.
pub(super) fn check_masking(entries: &[ResourceConfig]) -> Result<(), ConfigError> {
    let mut seen: HashSet<GroupResource> = HashSet::new();
    let any = GroupResource::any();
    for entry in entries {
        let mut this_entry = Vec::new();
        for res in &entry.resources {
            let gr = GroupResource::parse(res);
            let group_rule = GroupResource {
                group: gr.group.clone(),
                resource: "*".to_owned(),
            };
            for rule in [&group_rule, &any] {
                if seen.contains(rule) {
                    return Err(ConfigError::Masked {
                        resource: gr.yaml_string(),
                        rule: rule.yaml_string(),
                    });
                }
            }
            this_entry.push(gr);
        }
        seen.extend(this_entry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption_config::test_support::*;
    use crate::transform::ProviderKind;

    #[test]
    fn secrets_lookup_follows_upstream() {
        let base = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
        let gcm = format!("  - aesgcm:\n      keys:\n      - name: g\n        secret: {K16}\n");
        let sb = format!("  - secretbox:\n      keys:\n      - name: s\n        secret: {K32}\n");
        // Exact match wins over a later wildcard.
        let cfg = EncryptionConfiguration::parse(&format!(
            "{base}resources:\n- resources: [configmaps]\n  providers:\n  - identity: {{}}\n- resources: [secrets]\n  providers:\n{gcm}- resources: ['*.']\n  providers:\n{sb}"
        ))
        .unwrap();
        let p = cfg.secrets_providers().unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind(), ProviderKind::AesGcm);
        assert_eq!(
            cfg.providers_for("pods").unwrap()[0].kind(),
            ProviderKind::Secretbox
        );
        assert!(cfg.providers_for("deployments.apps").is_none());
        // Core wildcard and any-any wildcard.
        let cfg = EncryptionConfiguration::parse(&format!(
            "{base}resources:\n- resources: ['*.*']\n  providers:\n{sb}"
        ))
        .unwrap();
        assert_eq!(
            cfg.secrets_providers().unwrap()[0].kind(),
            ProviderKind::Secretbox
        );
        // Two entries naming secrets: providers are concatenated.
        let cfg = EncryptionConfiguration::parse(&format!(
            "{base}resources:\n- resources: [secrets]\n  providers:\n{gcm}- resources: [secrets]\n  providers:\n  - identity: {{}}\n"
        ))
        .unwrap();
        let kinds: Vec<_> = cfg
            .secrets_providers()
            .unwrap()
            .iter()
            .map(|p| p.kind())
            .collect();
        assert_eq!(kinds, [ProviderKind::AesGcm, ProviderKind::Identity]);
        // No rule for secrets: None (the apiserver would store plaintext).
        let cfg = EncryptionConfiguration::parse(&format!(
            "{base}resources:\n- resources: [configmaps]\n  providers:\n{gcm}"
        ))
        .unwrap();
        assert!(cfg.secrets_providers().is_none());
    }

    #[test]
    fn masking_is_refused() {
        let base = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
        let err = EncryptionConfiguration::parse(&format!(
            "{base}resources:\n- resources: ['*.']\n  providers:\n  - identity: {{}}\n- resources: [secrets]\n  providers:\n  - identity: {{}}\n"
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"resource "secrets" is masked by earlier rule "*.""#
        );
    }
}
