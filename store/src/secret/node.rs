//! A minimal document tree that both the YAML and the JSON readers fill:
//! enough to walk a manifest field by field and name what is wrong, with
//! string scalars wiped on drop (they may hold secrets) and duplicate keys
//! refused.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::wipe::Wiped;

/// One parsed value.
pub(crate) enum Node {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// Any number, as its text (`generation`, `deletionGracePeriodSeconds`).
    Number(String),
    /// A string, wiped on drop.
    String(Wiped<String>),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in input order, keys unique.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// What the node is, for messages: `a string`, `a number`, ….
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }

    /// The entry `key` of a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print scalar content: it may be a secret.
        match self {
            Node::String(s) => write!(f, "String(<{} bytes>)", s.len()),
            Node::Seq(items) => f.debug_list().entries(items).finish(),
            Node::Map(entries) => f
                .debug_map()
                .entries(entries.iter().map(|(k, v)| (k, v)))
                .finish(),
            other => f.write_str(other.kind()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Flatten nested containers so that dropping a deep tree does not
        // recurse once per level.
        let mut stack: Vec<Node> = Vec::new();
        match self {
            Node::Seq(items) => stack.append(items),
            Node::Map(entries) => stack.extend(entries.drain(..).map(|(_, v)| v)),
            _ => return,
        }
        while let Some(mut node) = stack.pop() {
            match &mut node {
                Node::Seq(items) => stack.append(items),
                Node::Map(entries) => stack.extend(entries.drain(..).map(|(_, v)| v)),
                _ => {}
            }
        }
    }
}

/// A mapping key, as its text: a YAML key `on` or `1` is the string "on" or
/// "1" (asked for as a string, so YAML does not turn `on` into a boolean).
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
                Ok(Key(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
        }
        deserializer.deserialize_string(KeyVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(Wiped::new(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(Wiped::new(v)))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Err(E::custom("binary scalars are not supported"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_with_every_kind() {
        let n: Node =
            serde_json::from_str(r#"{"a":null,"b":true,"c":1.5,"d":"x","e":[1],"f":{}}"#).unwrap();
        let kinds: Vec<&str> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|k| n.get(k).unwrap().kind())
            .collect();
        assert_eq!(
            kinds,
            [
                "null",
                "a boolean",
                "a number",
                "a string",
                "a list",
                "a mapping"
            ]
        );
        assert!(n.get("zz").is_none());
    }

    #[test]
    fn refuses_duplicate_json_keys() {
        let err = serde_json::from_str::<Node>(r#"{"a":1,"a":2}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key \"a\""), "{err}");
    }

    #[test]
    fn yaml_keys_keep_their_text() {
        let n: Node = serde_saphyr::from_str("on: x\n1: y\nno: z\n").unwrap();
        let Node::Map(entries) = &n else {
            panic!("not a map");
        };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["on", "1", "no"]);
        assert_eq!(n.get("on").unwrap().kind(), "a string");
    }

    #[test]
    fn debug_hides_strings() {
        let n: Node = serde_json::from_str(r#"{"password":"hunter2"}"#).unwrap();
        let dbg = format!("{n:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    #[test]
    fn dropping_a_deep_tree_does_not_overflow_the_stack() {
        let mut n = Node::Null;
        for _ in 0..200_000 {
            n = Node::Seq(vec![n]);
        }
        drop(n);
    }
}
