//! What the pkcs11 tests do to a token behind the plugin's back, as another
//! program with the user PIN would: read a key object's attributes, try to
//! read its value, plant objects under a CKA_ID, destroy them.
//!
//! `p11tool MODULE LABEL PIN COMMAND HEX_ID`, printing one JSON line:
//! - `attrs`: the object's protection attributes, and whether its value
//!   can be read (`"value": "refused: ..."` or the hex length)
//! - `count`: how many AES key objects carry the CKA_ID
//! - `plant`: generates another AES key under the CKA_ID, with the
//!   attributes a KEK has (sensitive, not extractable), so only the check
//!   value tells it from the real one
//! - `destroy`: destroys every object under the CKA_ID

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [module, label, pin, command, id] = args.as_slice() else {
        eprintln!("usage: p11tool MODULE LABEL PIN attrs|count|plant|destroy HEX_ID");
        std::process::exit(2);
    };
    let id = hex::decode(id).expect("HEX_ID is hex");
    let ctx = Pkcs11::new(module).expect("loading the module");
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim() == label)
        .expect("the token");
    let session = ctx.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(pin.as_str())))
        .expect("C_Login");
    let template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Id(id.clone()),
    ];
    let found = session.find_objects(&template).unwrap();
    let out = match command.as_str() {
        "count" => serde_json::json!({ "count": found.len() }),
        "attrs" => {
            let h = *found.first().expect("an object under the CKA_ID");
            let attrs = session
                .get_attributes(
                    h,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                        AttributeType::Local,
                        AttributeType::Token,
                        AttributeType::Private,
                    ],
                )
                .unwrap();
            let mut m = serde_json::Map::new();
            for a in attrs {
                let (k, v) = match a {
                    Attribute::Sensitive(v) => ("sensitive", v),
                    Attribute::Extractable(v) => ("extractable", v),
                    Attribute::AlwaysSensitive(v) => ("always_sensitive", v),
                    Attribute::NeverExtractable(v) => ("never_extractable", v),
                    Attribute::Local(v) => ("local", v),
                    Attribute::Token(v) => ("token", v),
                    Attribute::Private(v) => ("private", v),
                    _ => continue,
                };
                m.insert(k.into(), v.into());
            }
            let value = match session.get_attributes(h, &[AttributeType::Value]) {
                Ok(v) if v.iter().any(|a| matches!(a, Attribute::Value(_))) => {
                    "readable".to_string()
                }
                Ok(_) => "refused: not returned".to_string(),
                Err(e) => format!("refused: {e}"),
            };
            m.insert("value".into(), value.into());
            serde_json::Value::Object(m)
        }
        "plant" => {
            let mut t = template.clone();
            t.extend([
                Attribute::Token(true),
                Attribute::ValueLen(32u64.into()),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ]);
            session.generate_key(&Mechanism::AesKeyGen, &t).unwrap();
            serde_json::json!({ "planted": 1 })
        }
        "destroy" => {
            for h in &found {
                session.destroy_object(*h).unwrap();
            }
            serde_json::json!({ "destroyed": found.len() })
        }
        other => {
            eprintln!("unknown command {other:?}");
            std::process::exit(2);
        }
    };
    println!("{out}");
}
