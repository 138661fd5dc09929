//! A Dynamo node's durable state, in the scenario's `KvEngine` on the node's disk.
//!
//! Keys are text so a prefix names a family:
//!
//! - `c` — the dot counter reserved so far: counters up to it may have been used, so a
//!   restart continues above it (reserved in blocks, synced before the first use).
//! - `d/<key>` — a key's [`Record`]: its versions, when it became a tombstone, and the
//!   contribution it makes to its Merkle leaf.
//! - `h/<id>` — a hint held for another replica ([`Hint`]).
//! - `m/<range>/<leaf>` — a Merkle leaf hash of a key range (XOR of its keys'
//!   contributions), updated in the same batch as the record that changes it.
//! - `g/<key>` — the digest of a tombstone this node garbage-collected, so that a copy
//!   shipped back by a slower replica is recognised and not stored again.
//!
//! Every change is one batch, synced before anything that depends on it is revealed.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use storage::kv::{EngineError, EngineOpener, KvEngine, WriteBatch};
use storage::vfs::VfsHandle;

use super::version::Object;

/// Errors of the durable store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("undecodable record {key}: {detail}")]
    Decode { key: String, detail: String },
}

/// A key's durable record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub object: Object,
    /// The node's clock (µs) when the key became a tombstone here.
    pub tombstone_since_us: Option<u64>,
    /// What this key currently contributes to its Merkle leaf.
    pub merkle_contribution: u64,
}

/// A write held for a replica that did not answer (hinted handoff).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub id: u64,
    pub owner: u32,
    pub key: String,
    pub object: Object,
    /// The holder's clock (µs) when it took the hint; the TTL runs from here.
    pub created_us: u64,
}

/// What a node recovers from its disk.
#[derive(Debug, Default)]
pub struct Recovered {
    pub counter_reserved: u64,
    pub records: BTreeMap<String, Record>,
    pub hints: BTreeMap<u64, Hint>,
    pub leaves: BTreeMap<(u32, u32), u64>,
    pub collected: BTreeMap<String, u64>,
}

/// One atomic change.
#[derive(Debug, Default)]
pub struct Change<'a> {
    pub counter_reserved: Option<u64>,
    pub records: Vec<(&'a str, Option<&'a Record>)>,
    pub hints_put: Vec<&'a Hint>,
    pub hints_removed: Vec<u64>,
    pub leaves: Vec<((u32, u32), u64)>,
    pub collected: Vec<(&'a str, Option<u64>)>,
}

pub struct Store {
    engine: Box<dyn KvEngine>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Decode {
        key: "(encoding)".into(),
        detail: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

fn text(key: &[u8], bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| StoreError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

fn leaf_key(range: u32, leaf: u32) -> Vec<u8> {
    format!("m/{range:05}/{leaf:03}").into_bytes()
}

impl Store {
    pub fn open(opener: &dyn EngineOpener, vfs: VfsHandle, dir: &str) -> Result<Store, StoreError> {
        storage::vfs::create_dir_all_durable(vfs.as_ref(), dir).map_err(EngineError::from)?;
        Ok(Store {
            engine: opener.open(vfs, dir)?,
        })
    }

    /// Reads everything back.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        let mut out = Recovered::default();
        for entry in self.engine.scan(Bound::Unbounded, Bound::Unbounded)? {
            let (key, bytes) = entry?;
            if key == b"c" {
                out.counter_reserved = decode(&key, &bytes)?;
            } else if let Some(name) = key.strip_prefix(b"d/") {
                out.records.insert(text(&key, name)?, decode(&key, &bytes)?);
            } else if key.starts_with(b"h/") {
                let hint: Hint = decode(&key, &bytes)?;
                out.hints.insert(hint.id, hint);
            } else if let Some(rest) = key.strip_prefix(b"m/") {
                let name = text(&key, rest)?;
                let parsed = name
                    .split_once('/')
                    .and_then(|(r, l)| Some((r.parse().ok()?, l.parse().ok()?)));
                let Some(at) = parsed else {
                    return Err(StoreError::Decode {
                        key: format!("m/{name}"),
                        detail: "expected m/<range>/<leaf>".into(),
                    });
                };
                out.leaves.insert(at, decode(&key, &bytes)?);
            } else if let Some(name) = key.strip_prefix(b"g/") {
                out.collected
                    .insert(text(&key, name)?, decode(&key, &bytes)?);
            } else {
                return Err(StoreError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    detail: "unknown record family".into(),
                });
            }
        }
        Ok(out)
    }

    /// Writes one change atomically; syncs it if `sync`.
    pub fn commit(&mut self, change: &Change<'_>, sync: bool) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        if let Some(c) = change.counter_reserved {
            batch.put(b"c".to_vec(), encode(&c)?);
        }
        for (key, record) in &change.records {
            let k = format!("d/{key}").into_bytes();
            match record {
                Some(r) => batch.put(k, encode(r)?),
                None => batch.delete(k),
            };
        }
        for hint in &change.hints_put {
            batch.put(format!("h/{:020}", hint.id).into_bytes(), encode(hint)?);
        }
        for id in &change.hints_removed {
            batch.delete(format!("h/{id:020}").into_bytes());
        }
        for &((range, leaf), hash) in &change.leaves {
            batch.put(leaf_key(range, leaf), encode(&hash)?);
        }
        for (key, digest) in &change.collected {
            let k = format!("g/{key}").into_bytes();
            match digest {
                Some(d) => batch.put(k, encode(d)?),
                None => batch.delete(k),
            };
        }
        self.engine.write_batch(&batch)?;
        if sync {
            self.engine.sync()?;
        }
        Ok(())
    }
}
