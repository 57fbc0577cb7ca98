//! Built-in Secret types, their well-known keys and the size limits, with the
//! spelling kube-apiserver uses (`k8s.io/api/core/v1/types.go`,
//! `k8s.io/cluster-bootstrap/token/api`).

/// `Opaque`: arbitrary user data; the default when `type` is empty.
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";
/// `kubernetes.io/service-account-token`: needs the annotation
/// [`SERVICE_ACCOUNT_NAME_KEY`].
pub const SECRET_TYPE_SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";
/// `kubernetes.io/dockercfg`: a `~/.dockercfg` file under [`DOCKER_CONFIG_KEY`].
pub const SECRET_TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
/// `kubernetes.io/dockerconfigjson`: a `~/.docker/config.json` file under
/// [`DOCKER_CONFIG_JSON_KEY`].
pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// `kubernetes.io/basic-auth`: [`BASIC_AUTH_USERNAME_KEY`] and/or
/// [`BASIC_AUTH_PASSWORD_KEY`].
pub const SECRET_TYPE_BASIC_AUTH: &str = "kubernetes.io/basic-auth";
/// `kubernetes.io/ssh-auth`: a non-empty [`SSH_AUTH_PRIVATE_KEY`].
pub const SECRET_TYPE_SSH_AUTH: &str = "kubernetes.io/ssh-auth";
/// `kubernetes.io/tls`: [`TLS_CERT_KEY`] and [`TLS_PRIVATE_KEY_KEY`].
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";
/// `bootstrap.kubernetes.io/token`: a node bootstrap token.
pub const SECRET_TYPE_BOOTSTRAP_TOKEN: &str = "bootstrap.kubernetes.io/token";

/// Every type the API server knows; any other string is a custom type with no
/// constraints.
pub const BUILT_IN_SECRET_TYPES: [&str; 8] = [
    SECRET_TYPE_OPAQUE,
    SECRET_TYPE_SERVICE_ACCOUNT_TOKEN,
    SECRET_TYPE_DOCKERCFG,
    SECRET_TYPE_DOCKER_CONFIG_JSON,
    SECRET_TYPE_BASIC_AUTH,
    SECRET_TYPE_SSH_AUTH,
    SECRET_TYPE_TLS,
    SECRET_TYPE_BOOTSTRAP_TOKEN,
];

/// Annotation naming the ServiceAccount of a service-account-token Secret
/// (required).
pub const SERVICE_ACCOUNT_NAME_KEY: &str = "kubernetes.io/service-account.name";
/// Annotation holding the ServiceAccount's uid (set by the token controller).
pub const SERVICE_ACCOUNT_UID_KEY: &str = "kubernetes.io/service-account.uid";
/// Data key of the token in a service-account-token Secret.
pub const SERVICE_ACCOUNT_TOKEN_KEY: &str = "token";
/// Data key of a kubeconfig in a service-account-token Secret.
pub const SERVICE_ACCOUNT_KUBECONFIG_KEY: &str = "kubernetes.kubeconfig";
/// Data key of the cluster CA bundle in a service-account-token Secret.
pub const SERVICE_ACCOUNT_ROOT_CA_KEY: &str = "ca.crt";
/// Data key of the namespace in a service-account-token Secret.
pub const SERVICE_ACCOUNT_NAMESPACE_KEY: &str = "namespace";

/// Data key of a `kubernetes.io/dockercfg` Secret.
pub const DOCKER_CONFIG_KEY: &str = ".dockercfg";
/// Data key of a `kubernetes.io/dockerconfigjson` Secret.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

/// User name of a `kubernetes.io/basic-auth` Secret.
pub const BASIC_AUTH_USERNAME_KEY: &str = "username";
/// Password of a `kubernetes.io/basic-auth` Secret.
pub const BASIC_AUTH_PASSWORD_KEY: &str = "password";

/// Private key of a `kubernetes.io/ssh-auth` Secret.
pub const SSH_AUTH_PRIVATE_KEY: &str = "ssh-privatekey";

/// Certificate chain of a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Private key of a `kubernetes.io/tls` Secret.
pub const TLS_PRIVATE_KEY_KEY: &str = "tls.key";

/// Prefix of a bootstrap token Secret's name: `bootstrap-token-<token-id>`.
pub const BOOTSTRAP_TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";
/// Public part of a bootstrap token (`[a-z0-9]{6}`).
pub const BOOTSTRAP_TOKEN_ID_KEY: &str = "token-id";
/// Private part of a bootstrap token (`[a-z0-9]{16}`).
pub const BOOTSTRAP_TOKEN_SECRET_KEY: &str = "token-secret";
/// Optional expiry of a bootstrap token (RFC 3339).
pub const BOOTSTRAP_TOKEN_EXPIRATION_KEY: &str = "expiration";
/// Optional description of a bootstrap token.
pub const BOOTSTRAP_TOKEN_DESCRIPTION_KEY: &str = "description";
/// `"true"` when the token may authenticate to the API server.
pub const BOOTSTRAP_TOKEN_USAGE_AUTHENTICATION_KEY: &str = "usage-bootstrap-authentication";
/// `"true"` when the token may sign the `cluster-info` ConfigMap.
pub const BOOTSTRAP_TOKEN_USAGE_SIGNING_KEY: &str = "usage-bootstrap-signing";
/// Comma-separated extra groups (`system:bootstrappers:…`).
pub const BOOTSTRAP_TOKEN_EXTRA_GROUPS_KEY: &str = "auth-extra-groups";
/// The only namespace the bootstrap token authenticator reads.
pub const BOOTSTRAP_TOKEN_NAMESPACE: &str = "kube-system";

/// Largest total size of `data` values, in bytes (`core.MaxSecretSize`, 1 MiB).
/// Keys are not counted.
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;
/// Largest total size of annotation keys plus values, in bytes
/// (`TotalAnnotationSizeLimitB`, 256 KiB).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// The namespace a manifest without `metadata.namespace` lands in.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Whether `secret_type` is one of [`BUILT_IN_SECRET_TYPES`].
pub fn is_built_in_type(secret_type: &str) -> bool {
    BUILT_IN_SECRET_TYPES.contains(&secret_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_types_are_recognised_and_custom_ones_are_not() {
        for t in BUILT_IN_SECRET_TYPES {
            assert!(is_built_in_type(t));
        }
        assert!(!is_built_in_type("example.com/custom"));
        assert!(!is_built_in_type(""));
    }

    #[test]
    fn limits_have_upstream_values() {
        assert_eq!(MAX_SECRET_SIZE, 1_048_576);
        assert_eq!(TOTAL_ANNOTATION_SIZE_LIMIT, 262_144);
    }
}
