//! The whole read path of a stored value: a [`TransformerChain`] of aesgcm
//! (three keys), aescbc (two), secretbox (two) and identity, as a fixed
//! EncryptionConfiguration builds it, on arbitrary bytes under a fixed etcd
//! key. `open`, `inspect` and `is_stale` must never panic, and must agree:
//! whatever opens can be inspected, and is stale exactly when `is_stale`
//! says so. As a control, what the chain seals opens back to the input.
//!
//! Whatever opens, and the input itself, is also read as a Secret (JSON or
//! kube-apiserver protobuf, every ObjectMeta field): decoding never panics,
//! and what decodes re-encodes stably: protobuf round-trips to the same
//! object, JSON to the same bytes.
//!
//! The keys are the public ones of tests/vectors/kube-apiserver-at-rest.json,
//! and the etcd key is that of its `aesgcm-256` vector, so the vectors'
//! stored values (see README.md) are seeds that decrypt: mutations of them
//! reach the ciphers, padding and authentication checks.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use secret_store::encryption_config::EncryptionConfiguration;
use secret_store::secret::Secret;
use secret_store::transform::chain::TransformerChain;

const ETCD_KEY: &str = "/registry/secrets/default/api-token";

const CONFIG: &str = "\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aesgcm:
      keys:
      - name: key1
        secret: Q+yhvNRa4jPp/1hjT5yYv9r3NHrdsznnIFgDjBiI1EA=
      - name: gcm-2024
        secret: qRGwRx4KK0MkLWtofcOcpQ==
      - name: gcm-2023
        secret: YFzybl98A5gvrMgK5kkXm63sAyZ73JSdrF4CgIADk40=
  - aescbc:
      keys:
      - name: cbc-key-1
        secret: LY8mrCBEwRna5qhS7F7Cm+Chw3gYxQqfT8XPmp72ps0=
      - name: cbc-key-2
        secret: uiTOdiVLC5yttc/UbGPe0gDHP2CWkw9e
  - secretbox:
      keys:
      - name: sb-key-2
        secret: NFNIJAxflwY41iUZZHvjTWJ3S7Fyo6cxTazJM1PWIzY=
      - name: sb-key-1
        secret: ViJzOs0J2x8Caoi8IvoXRxCAwhijnJQ6jeSKI3e7dqw=
  - identity: {}
";

static CHAIN: LazyLock<TransformerChain> = LazyLock::new(|| {
    let cfg = EncryptionConfiguration::parse(CONFIG).expect("the fixed configuration is valid");
    TransformerChain::from_config_without_kms(&cfg).expect("the fixed chain builds")
});

/// Decodes `bytes` as a Secret; what decodes must re-encode stably.
fn decode_round_trip(bytes: &[u8]) {
    let Ok(s) = Secret::from_storage_bytes(bytes) else {
        return;
    };
    let proto = s.to_storage_protobuf();
    let back = Secret::from_storage_bytes(&proto).expect("our protobuf decodes");
    assert_eq!(back, s, "protobuf round trip changed the object");
    let json = s.to_storage_json();
    let again = Secret::from_storage_bytes(&json).expect("our JSON decodes");
    assert_eq!(
        again.to_storage_json().as_slice(),
        json.as_slice(),
        "JSON round trip is not stable"
    );
}

fuzz_target!(|data: &[u8]| {
    decode_round_trip(data);
    let mut proto = b"k8s\x00".to_vec();
    proto.extend_from_slice(data);
    decode_round_trip(&proto);
    let chain = &*CHAIN;
    let opened = chain.open(data, ETCD_KEY);
    let inspected = chain.inspect(data, ETCD_KEY);
    let stale = chain.is_stale(data, ETCD_KEY);
    if let Ok(opened) = &opened {
        // No two transformers share a prefix here, so the one that opened is
        // the first that matches, which is what `is_stale` looks at.
        assert_eq!(
            stale.as_ref().ok(),
            Some(&opened.stale),
            "open and is_stale disagree"
        );
        let info = inspected.expect("a value that opens can be inspected");
        assert_eq!(info.stored_len, data.len());
        decode_round_trip(&opened.plaintext);
    }

    // Control: the chain's own seal of the input opens back to it, current.
    let sealed = chain.seal(data, ETCD_KEY).expect("seal");
    let back = chain.open(&sealed, ETCD_KEY).expect("open what was sealed");
    assert_eq!(&back.plaintext[..], data);
    assert!(!back.stale);
    assert_eq!(chain.is_stale(&sealed, ETCD_KEY).ok(), Some(false));
});
