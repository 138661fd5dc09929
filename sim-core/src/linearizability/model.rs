//! The key-value model: operations, their results, and the sequential specification the
//! checker holds a history to.
//!
//! Every key is an independent register of text. A key that was never written is
//! *absent* (`None`): `get` returns `None`, `cas` with `expected: None` matches it, and
//! `append` treats it as the empty string (as in Porcupine's kv model). There is no
//! delete, so once a key is present it stays present.
//!
//! Protocols use [`KvOp`] and [`KvResult`] directly as their client request and reply
//! types, and may use [`KvStore`] as their state machine.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A client request on the key-value store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum KvOp {
    /// Read the key's value.
    Get { key: String },
    /// Overwrite the key's value.
    Put { key: String, value: String },
    /// Compare-and-set: replace the value with `new` iff it equals `expected`
    /// (`None` = the key is absent).
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    /// Concatenate `value` onto the current value (absent counts as empty).
    Append { key: String, value: String },
}

/// What a request that took effect returned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "f", content = "value", rename_all = "snake_case")]
pub enum KvResult {
    /// The value read (`None`: absent).
    Get(Option<String>),
    Put,
    /// Whether the compare-and-set swapped.
    Cas(bool),
    Append,
}

impl KvOp {
    pub fn get(key: impl Into<String>) -> Self {
        KvOp::Get { key: key.into() }
    }

    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Self {
        KvOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `KvOp::cas("x", Some("1"), "2")`; `KvOp::cas("x", None, "1")` creates the key.
    pub fn cas(key: impl Into<String>, expected: Option<&str>, new: impl Into<String>) -> Self {
        KvOp::Cas {
            key: key.into(),
            expected: expected.map(str::to_string),
            new: new.into(),
        }
    }

    pub fn append(key: impl Into<String>, value: impl Into<String>) -> Self {
        KvOp::Append {
            key: key.into(),
            value: value.into(),
        }
    }

    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            KvOp::Get { key }
            | KvOp::Put { key, .. }
            | KvOp::Cas { key, .. }
            | KvOp::Append { key, .. } => key,
        }
    }

    /// The Jepsen-style function name: `get`, `put`, `cas` or `append`.
    pub fn name(&self) -> &'static str {
        match self {
            KvOp::Get { .. } => "get",
            KvOp::Put { .. } => "put",
            KvOp::Cas { .. } => "cas",
            KvOp::Append { .. } => "append",
        }
    }

    /// Whether the operation can never change the store (`get`).
    pub fn is_read_only(&self) -> bool {
        matches!(self, KvOp::Get { .. })
    }

    /// Whether `result` is the kind of result this operation returns (a `get` returns
    /// [`KvResult::Get`], and so on).
    pub fn accepts(&self, result: &KvResult) -> bool {
        matches!(
            (self, result),
            (KvOp::Get { .. }, KvResult::Get(_))
                | (KvOp::Put { .. }, KvResult::Put)
                | (KvOp::Cas { .. }, KvResult::Cas(_))
                | (KvOp::Append { .. }, KvResult::Append)
        )
    }

    /// The sequential specification on one key: applied to the key's `current` value,
    /// what the operation returns and the key's value afterwards.
    pub fn apply_to(&self, current: Option<&str>) -> (KvResult, Option<String>) {
        match self {
            KvOp::Get { .. } => (
                KvResult::Get(current.map(str::to_string)),
                current.map(str::to_string),
            ),
            KvOp::Put { value, .. } => (KvResult::Put, Some(value.clone())),
            KvOp::Cas { expected, new, .. } => {
                if current == expected.as_deref() {
                    (KvResult::Cas(true), Some(new.clone()))
                } else {
                    (KvResult::Cas(false), current.map(str::to_string))
                }
            }
            KvOp::Append { value, .. } => {
                let mut text = current.unwrap_or("").to_string();
                text.push_str(value);
                (KvResult::Append, Some(text))
            }
        }
    }
}

impl KvResult {
    /// The value a `get` read, if this is a `get` result.
    pub fn read(&self) -> Option<Option<&str>> {
        match self {
            KvResult::Get(v) => Some(v.as_deref()),
            _ => None,
        }
    }
}

/// A sequential key-value store: the model itself, usable as a protocol's state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    values: BTreeMap<String, String>,
}

impl KvStore {
    pub fn new() -> Self {
        KvStore::default()
    }

    /// Applies one operation and returns its result.
    pub fn apply(&mut self, op: &KvOp) -> KvResult {
        let key = op.key();
        let (result, after) = op.apply_to(self.values.get(key).map(String::as_str));
        // No operation deletes a key, so `after` is `None` only if the key was absent.
        if let Some(value) = after {
            self.values.insert(key.to_string(), value);
        }
        result
    }

    /// The key's current value (`None`: absent).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Every present key and its value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Writes a key or value for people: bare if it is a plain word (letters, digits,
/// `_ - . : /`), otherwise quoted with escapes, so `""`, `" "` and `"nil"` stay visible.
pub(crate) struct Text<'a>(pub &'a str);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self.0 != "nil"
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// Writes an optional value: `nil` when absent.
pub(crate) struct MaybeText<'a>(pub Option<&'a str>);

impl fmt::Display for MaybeText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => Text(v).fmt(f),
            None => f.write_str("nil"),
        }
    }
}

/// `get(x)`, `put(x, 5)`, `cas(x, nil → 1)`, `append(x, ab)`.
impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOp::Get { key } => write!(f, "get({})", Text(key)),
            KvOp::Put { key, value } => write!(f, "put({}, {})", Text(key), Text(value)),
            KvOp::Cas { key, expected, new } => write!(
                f,
                "cas({}, {} → {})",
                Text(key),
                MaybeText(expected.as_deref()),
                Text(new)
            ),
            KvOp::Append { key, value } => write!(f, "append({}, {})", Text(key), Text(value)),
        }
    }
}

/// The value read (`nil` if absent), `ok`, `swapped` or `not swapped`.
impl fmt::Display for KvResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvResult::Get(v) => MaybeText(v.as_deref()).fmt(f),
            KvResult::Put | KvResult::Append => f.write_str("ok"),
            KvResult::Cas(true) => f.write_str("swapped"),
            KvResult::Cas(false) => f.write_str("not swapped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequential_model() {
        let mut store = KvStore::new();
        assert_eq!(store.apply(&KvOp::get("x")), KvResult::Get(None));
        assert_eq!(
            store.apply(&KvOp::cas("x", Some("1"), "2")),
            KvResult::Cas(false)
        );
        assert_eq!(store.apply(&KvOp::cas("x", None, "1")), KvResult::Cas(true));
        assert_eq!(
            store.apply(&KvOp::cas("x", None, "9")),
            KvResult::Cas(false)
        );
        assert_eq!(store.apply(&KvOp::append("x", "ab")), KvResult::Append);
        assert_eq!(
            store.apply(&KvOp::get("x")),
            KvResult::Get(Some("1ab".into()))
        );
        assert_eq!(store.apply(&KvOp::append("y", "z")), KvResult::Append);
        assert_eq!(store.get("y"), Some("z"));
        assert_eq!(store.apply(&KvOp::put("x", "5")), KvResult::Put);
        assert_eq!(store.get("x"), Some("5"));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn display() {
        assert_eq!(KvOp::get("x").to_string(), "get(x)");
        assert_eq!(KvOp::put("x", "a b").to_string(), "put(x, \"a b\")");
        assert_eq!(KvOp::cas("x", None, "1").to_string(), "cas(x, nil → 1)");
        assert_eq!(KvOp::append("k", "").to_string(), "append(k, \"\")");
        assert_eq!(KvResult::Get(None).to_string(), "nil");
        assert_eq!(KvResult::Get(Some("nil".into())).to_string(), "\"nil\"");
        assert_eq!(KvResult::Cas(false).to_string(), "not swapped");
    }

    #[test]
    fn serde_shapes() {
        let json = serde_json::to_string(&KvOp::cas("x", None, "1")).unwrap();
        assert_eq!(json, r#"{"f":"cas","key":"x","expected":null,"new":"1"}"#);
        let back: KvOp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, KvOp::cas("x", None, "1"));
        let json = serde_json::to_string(&KvResult::Get(Some("3".into()))).unwrap();
        assert_eq!(json, r#"{"f":"get","value":"3"}"#);
        let json = serde_json::to_string(&KvResult::Put).unwrap();
        let back: KvResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, KvResult::Put);
    }

    #[test]
    fn the_trace_hash_encoding_accepts_them() {
        // The kernel hashes the postcard encoding of every payload.
        for op in [
            KvOp::get("x"),
            KvOp::put("x", "1"),
            KvOp::cas("x", None, "2"),
            KvOp::append("x", "a"),
        ] {
            let bytes = postcard::to_allocvec(&op).unwrap();
            assert_eq!(postcard::to_allocvec(&op.clone()).unwrap(), bytes);
        }
        for result in [
            KvResult::Get(None),
            KvResult::Put,
            KvResult::Cas(false),
            KvResult::Append,
        ] {
            assert!(postcard::to_allocvec(&result).is_ok());
        }
    }
}
