//! The validation table: manifests in, the apiserver's verdict out, for
//! every built-in type (one valid and at least one invalid manifest each),
//! data keys, the size limit, names, labels, annotations, and the update
//! rules for `type` and `immutable`. Each expected message is exact.

use super::types::*;
use super::*;

const HEAD: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n";

/// Parses `HEAD` + `body` (one Secret) and validates it for create.
fn create(body: &str) -> Result<Vec<String>, String> {
    let mut secrets = parse_manifests(&format!("{HEAD}{body}")).map_err(|e| e.to_string())?;
    assert_eq!(secrets.len(), 1);
    let secret = secrets.remove(0);
    validate_create(&secret)
        .map(|w| w.iter().map(ToString::to_string).collect())
        .map_err(|e| e.to_string())
}

fn valid(body: &str) {
    if let Err(e) = create(body) {
        panic!("expected valid, got {e}\n--- manifest ---\n{HEAD}{body}");
    }
}

fn invalid(body: &str, message: &str) {
    match create(body) {
        Ok(_) => panic!("expected invalid, got valid\n--- manifest ---\n{HEAD}{body}"),
        Err(e) => assert_eq!(
            e,
            format!("Secret \"x\" is invalid: {message}"),
            "{HEAD}{body}"
        ),
    }
}

#[test]
fn every_built_in_type() {
    // (type, valid body, invalid body, exact error after the prefix)
    let table: &[(&str, &str, &str, &str)] = &[
        (
            SECRET_TYPE_OPAQUE,
            "data:\n  a: YQ==\n",
            "data:\n  'a b': YQ==\n",
            "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        ),
        (
            SECRET_TYPE_SERVICE_ACCOUNT_TOKEN,
            "  annotations:\n    kubernetes.io/service-account.name: default\n",
            "  annotations:\n    kubernetes.io/service-account.name: ''\n",
            "metadata.annotations[kubernetes.io/service-account.name]: Required value",
        ),
        (
            SECRET_TYPE_DOCKERCFG,
            "stringData:\n  .dockercfg: '{\"r.io\":{\"auth\":\"eDp5\"}}'\n",
            "data:\n  other: YQ==\n",
            "data[.dockercfg]: Required value",
        ),
        (
            SECRET_TYPE_DOCKERCFG,
            "stringData:\n  .dockercfg: 'null'\n",
            "stringData:\n  .dockercfg: '{\"auths\": '\n",
            "data[.dockercfg]: Invalid value: \"<secret contents redacted>\": unexpected end of JSON input",
        ),
        (
            SECRET_TYPE_DOCKER_CONFIG_JSON,
            "stringData:\n  .dockerconfigjson: '{\"auths\":{}}'\n",
            "stringData:\n  .dockerconfigjson: '[1]'\n",
            "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type map[string]interface {}",
        ),
        (
            SECRET_TYPE_DOCKER_CONFIG_JSON,
            "data:\n  .dockerconfigjson: e30=\n",
            "data:\n  .dockercfg: e30=\n",
            "data[.dockerconfigjson]: Required value",
        ),
        (
            SECRET_TYPE_BASIC_AUTH,
            "stringData:\n  username: admin\n",
            "stringData:\n  user: admin\n",
            "[data[username]: Required value, data[password]: Required value]",
        ),
        (
            SECRET_TYPE_BASIC_AUTH,
            "stringData:\n  password: ''\n",
            "data: {}\n",
            "[data[username]: Required value, data[password]: Required value]",
        ),
        (
            SECRET_TYPE_SSH_AUTH,
            "stringData:\n  ssh-privatekey: k\n",
            "stringData:\n  ssh-privatekey: ''\n",
            "data[ssh-privatekey]: Required value",
        ),
        (
            SECRET_TYPE_TLS,
            "stringData:\n  tls.crt: ''\n  tls.key: ''\n",
            "stringData:\n  tls.crt: c\n",
            "data[tls.key]: Required value",
        ),
        (
            SECRET_TYPE_TLS,
            "stringData:\n  tls.crt: c\n  tls.key: k\n",
            "data: {}\n",
            "[data[tls.crt]: Required value, data[tls.key]: Required value]",
        ),
        (
            SECRET_TYPE_BOOTSTRAP_TOKEN,
            "stringData:\n  token-id: abcdef\n  token-secret: 0123456789abcdef\n",
            "stringData:\n  ..token-id: abcdef\n",
            "data[..token-id]: Invalid value: \"..token-id\": must not start with '..'",
        ),
        (
            "example.com/custom",
            "data:\n  anything: YQ==\n",
            "data:\n  '.': YQ==\n",
            "data[.]: Invalid value: \".\": must not be '.'",
        ),
    ];
    for (type_, good, bad, message) in table {
        valid(&format!("{good}type: {type_}\n"));
        invalid(&format!("{bad}type: {type_}\n"), message);
    }
}

#[test]
fn data_keys() {
    for key in ["a", "A_B", "a-b", "a.b", "x..y", ".dotfile", "-", "_"] {
        valid(&format!("stringData:\n  '{key}': v\n"));
    }
    invalid(
        "stringData:\n  '..': v\n",
        "data[..]: Invalid value: \"..\": must not be '..'",
    );
    invalid(
        "stringData:\n  'a/b': v\n",
        "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
    );
    let long = "k".repeat(254);
    invalid(
        &format!("stringData:\n  {long}: v\n"),
        &format!("data[{long}]: Invalid value: \"{long}\": must be no more than 253 characters"),
    );
    valid(&format!("stringData:\n  {}: v\n", "k".repeat(253)));
}

#[test]
fn total_size_is_one_mebibyte_of_values() {
    let mut s = Secret::new("default", "x");
    // Keys are not counted: exactly 1 MiB of values is fine.
    s.data.insert(
        "a".repeat(200),
        SecretValue::new(vec![0; MAX_SECRET_SIZE - 10]),
    );
    s.data
        .insert("b".repeat(200), SecretValue::new(vec![0; 10]));
    assert_eq!(validate_create(&s), Ok(vec![]));
    s.data.insert("c".into(), SecretValue::new(vec![0; 1]));
    assert_eq!(
        validate_create(&s).unwrap_err().to_string(),
        "Secret \"x\" is invalid: data: Too long: must have at most 1048576 bytes"
    );
}

#[test]
fn names_and_namespaces() {
    let bad_name = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: Bad_Name\n";
    let s = parse_manifests(bad_name).unwrap().remove(0);
    assert_eq!(
        validate_create(&s).unwrap_err().to_string(),
        "Secret \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    let mut s = Secret::new("default", "a".repeat(253));
    assert_eq!(validate_create(&s), Ok(vec![]));
    s.metadata.name.push('a');
    let e = validate_create(&s).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].detail, "must be no more than 253 characters");
    let mut s = Secret::new("a.b", "x");
    assert_eq!(
        validate_create(&s).unwrap_err().to_string(),
        "Secret \"x\" is invalid: metadata.namespace: Invalid value: \"a.b\": must not contain dots"
    );
    s.metadata.namespace = String::new();
    assert_eq!(
        validate_create(&s).unwrap_err().to_string(),
        "Secret \"x\" is invalid: metadata.namespace: Required value"
    );
    s.metadata.namespace = "n".repeat(63);
    assert_eq!(validate_create(&s), Ok(vec![]));
    let mut s = Secret::new("default", "");
    s.data.insert("ok".into(), SecretValue::from("v"));
    assert_eq!(
        validate_create(&s).unwrap_err().to_string(),
        "Secret \"\" is invalid: metadata.name: Required value: name or generateName is required"
    );
}

#[test]
fn labels_and_annotations() {
    valid(
        "  labels:\n    app.kubernetes.io/name: db\n    tier: ''\n  annotations:\n    Example.COM/Note: 'free text: anything'\n",
    );
    invalid(
        "  labels:\n    app: -bad-\n",
        "metadata.labels: Invalid value: \"-bad-\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    );
    invalid(
        "  labels:\n    a/b/c: v\n",
        "metadata.labels: Invalid value: \"a/b/c\": a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
    );
    invalid(
        &format!("  labels:\n    k: {}\n", "v".repeat(64)),
        "metadata.labels: Invalid value: \"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\": must be no more than 63 bytes",
    );
    invalid(
        "  annotations:\n    /x: v\n",
        "metadata.annotations: Invalid value: \"/x\": prefix part must be non-empty",
    );
    let mut s = Secret::new("default", "x");
    s.metadata
        .annotations
        .insert("big".into(), "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 3));
    assert_eq!(validate_create(&s), Ok(vec![]));
    s.metadata.annotations.insert("c".into(), String::new());
    assert_eq!(
        validate_create(&s).unwrap_err().to_string(),
        "Secret \"x\" is invalid: metadata.annotations: Too long: must have at most 262144 bytes"
    );
}

/// A stored Secret and the same after `prepare_for_update` of `edit`.
fn update(old_body: &str, new_body: &str) -> Result<(), String> {
    let mut old = parse_manifests(&format!("{HEAD}{old_body}"))
        .unwrap()
        .remove(0);
    prepare_for_create(&mut old, "uid-1".into(), std::time::SystemTime::UNIX_EPOCH);
    old.metadata.resource_version = Some("1".into());
    let mut new = parse_manifests(&format!("{HEAD}{new_body}"))
        .unwrap()
        .remove(0);
    prepare_for_update(&mut new, &old);
    validate_update(&new, &old)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn immutable_and_type_rules_on_update() {
    let locked = "immutable: true\ndata:\n  a: YQ==\n";
    assert_eq!(update(locked, locked), Ok(()));
    assert_eq!(
        update(locked, &format!("  labels:\n    new: label\n{locked}")),
        Ok(())
    );
    assert_eq!(
        update(locked, "immutable: true\ndata:\n  a: Yg==\n"),
        Err(
            "Secret \"x\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
                .into()
        )
    );
    assert_eq!(
        update(locked, "immutable: false\ndata:\n  a: YQ==\n"),
        Err("Secret \"x\" is invalid: immutable: Forbidden: field is immutable when `immutable` is set".into())
    );
    assert_eq!(
        update(locked, "data:\n  a: YQ==\n"),
        Err("Secret \"x\" is invalid: immutable: Forbidden: field is immutable when `immutable` is set".into())
    );
    assert_eq!(
        update(
            locked,
            "stringData:\n  b: extra\nimmutable: true\ndata:\n  a: YQ==\n"
        ),
        Err(
            "Secret \"x\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
                .into()
        )
    );
    // A mutable Secret may change its data and become immutable.
    assert_eq!(
        update("data:\n  a: YQ==\n", "immutable: true\ndata:\n  a: Yg==\n"),
        Ok(())
    );
    // The type never changes, immutable or not.
    assert_eq!(
        update("data:\n  a: YQ==\n", "type: kubernetes.io/tls\nstringData:\n  tls.crt: c\n  tls.key: k\n"),
        Err("Secret \"x\" is invalid: type: Invalid value: \"kubernetes.io/tls\": field is immutable".into())
    );
    // Omitting type in an update of a TLS Secret defaults it to Opaque,
    // which is a change (v1 defaulting happens before the update).
    assert!(
        update(
            "type: kubernetes.io/tls\nstringData:\n  tls.crt: c\n  tls.key: k\n",
            "data:\n  a: YQ==\n"
        )
        .unwrap_err()
        .contains("type: Invalid value: \"Opaque\": field is immutable")
    );
}

#[test]
fn metadata_may_change_on_an_immutable_secret() {
    let mut old = Secret::new("default", "x");
    old.immutable = Some(true);
    old.metadata.resource_version = Some("3".into());
    old.data.insert("a".into(), SecretValue::from("1"));
    let mut new = old.clone();
    new.metadata.labels.insert("team".into(), "db".into());
    new.metadata
        .annotations
        .insert("example.com/n".into(), "x".into());
    assert_eq!(validate_update(&new, &old), Ok(vec![]));
}

#[test]
fn string_data_wins_over_data_before_validation() {
    // data says username only; stringData adds the password and replaces
    // the username.
    let s = parse_manifests(&format!(
        "{HEAD}type: kubernetes.io/basic-auth\ndata:\n  username: b2xk\nstringData:\n  username: new\n  password: p\n"
    ))
    .unwrap()
    .remove(0);
    assert_eq!(s.data["username"].expose(), b"new");
    assert_eq!(s.data["password"].expose(), b"p");
    assert_eq!(validate_create(&s), Ok(vec![]));
}

#[test]
fn no_message_contains_a_secret_value() {
    let value = "supersecret-value-123";
    let json_err = create(&format!(
        "type: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{value}'\n"
    ))
    .unwrap_err();
    assert_eq!(
        json_err,
        "Secret \"x\" is invalid: data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid character 's' looking for beginning of value"
    );
    assert!(!json_err.contains(value));
    let cfg_err = create(&format!(
        "type: kubernetes.io/dockercfg\nstringData:\n  .dockercfg: '{{\"a\": {value}}}'\n"
    ))
    .unwrap_err();
    assert!(!cfg_err.contains(value), "{cfg_err}");
    let b64_err = parse_manifests(&format!("{HEAD}data:\n  p: '{value}!'\n"))
        .unwrap_err()
        .to_string();
    assert!(!b64_err.contains(value), "{b64_err}");
    let secret = parse_manifests(&format!("{HEAD}stringData:\n  p: {value}\n"))
        .unwrap()
        .remove(0);
    assert!(!format!("{secret:?}").contains(value));
    let warnings = validate_create(&{
        let mut s = secret.clone();
        s.type_ = SECRET_TYPE_BOOTSTRAP_TOKEN.into();
        s.data
            .insert("token-secret".into(), SecretValue::from(value));
        s
    })
    .unwrap();
    assert!(!warnings.iter().any(|w| w.to_string().contains(value)));
}

#[test]
fn bootstrap_tokens_get_warnings_not_errors() {
    let warnings =
        create("type: bootstrap.kubernetes.io/token\nstringData:\n  token-id: TOOLONGID\n")
            .unwrap();
    assert_eq!(
        warnings,
        [
            "data[token-id]: must be 6 characters from [a-z0-9]: the bootstrap token authenticator will ignore this token",
            "data[token-secret]: missing: the bootstrap token authenticator will ignore this token",
            "metadata.name: must be \"bootstrap-token-\" followed by data[token-id]: the bootstrap token authenticator will ignore this token",
            "metadata.namespace: bootstrap tokens are read only from \"kube-system\": the bootstrap token authenticator will ignore this token",
        ]
    );
    let ok = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-abcdef\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: abcdef\n  token-secret: 0123456789abcdef\n  usage-bootstrap-authentication: 'true'\n";
    let s = parse_manifests(ok).unwrap().remove(0);
    assert_eq!(validate_create(&s), Ok(vec![]));
}
