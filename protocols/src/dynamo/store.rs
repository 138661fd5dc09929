//! A Dynamo node's durable state, in the scenario's `KvEngine` on the node's disk.
//!
//! Keys are text so a prefix names a family:
//!
//! - `c` — the dot counter reserved so far: counters up to it may have been used, so a
//!   restart continues above it (reserved in blocks, synced before the first use).
//! - `d/<key>` — a key's record: the dots of its versions, when it became a tombstone,
//!   and the contribution it makes to its Merkle leaf; `v/<key>/<node>/<counter>` —
//!   one version (a sibling) each, so that no engine entry grows with the sibling count
//!   (the B+tree takes entries of about a third of a page).
//! - `h/<id>` — a hint held for another replica, `w/<id>/<i>` its versions.
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

use super::version::{Dot, Object, Sibling};

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

/// A record as stored: the versions are separate entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordHead {
    dots: Vec<Dot>,
    tombstone_since_us: Option<u64>,
    merkle_contribution: u64,
}

/// A hint as stored: the versions are separate entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HintHead {
    owner: u32,
    key: String,
    created_us: u64,
    versions: u32,
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
    /// key, its new record (`None`: removed), the dots of its old record.
    pub records: Vec<(&'a str, Option<&'a Record>, Vec<Dot>)>,
    pub hints_put: Vec<&'a Hint>,
    /// id and number of versions of each hint removed.
    pub hints_removed: Vec<(u64, usize)>,
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
        let mut heads: BTreeMap<String, RecordHead> = BTreeMap::new();
        let mut versions: BTreeMap<(String, Dot), Sibling> = BTreeMap::new();
        let mut hint_heads: BTreeMap<u64, HintHead> = BTreeMap::new();
        let mut hint_versions: BTreeMap<(u64, u32), Sibling> = BTreeMap::new();
        let bad = |key: &[u8], detail: &str| StoreError::Decode {
            key: String::from_utf8_lossy(key).into_owned(),
            detail: detail.into(),
        };
        for entry in self.engine.scan(Bound::Unbounded, Bound::Unbounded)? {
            let (key, bytes) = entry?;
            let name = text(&key, &key)?;
            if name == "c" {
                out.counter_reserved = decode(&key, &bytes)?;
            } else if let Some(k) = name.strip_prefix("d/") {
                heads.insert(k.to_string(), decode(&key, &bytes)?);
            } else if let Some(rest) = name.strip_prefix("v/") {
                let mut parts = rest.rsplitn(3, '/');
                let (Some(counter), Some(node), Some(k)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad(&key, "expected v/<key>/<node>/<counter>"));
                };
                let dot = Dot {
                    node: node.parse().map_err(|_| bad(&key, "bad node"))?,
                    counter: counter.parse().map_err(|_| bad(&key, "bad counter"))?,
                };
                versions.insert((k.to_string(), dot), decode(&key, &bytes)?);
            } else if let Some(id) = name.strip_prefix("h/") {
                let id: u64 = id.parse().map_err(|_| bad(&key, "bad hint id"))?;
                hint_heads.insert(id, decode(&key, &bytes)?);
            } else if let Some(rest) = name.strip_prefix("w/") {
                let Some((id, i)) = rest.split_once('/') else {
                    return Err(bad(&key, "expected w/<id>/<i>"));
                };
                let id: u64 = id.parse().map_err(|_| bad(&key, "bad hint id"))?;
                let i: u32 = i.parse().map_err(|_| bad(&key, "bad index"))?;
                hint_versions.insert((id, i), decode(&key, &bytes)?);
            } else if let Some(rest) = name.strip_prefix("m/") {
                let parsed = rest
                    .split_once('/')
                    .and_then(|(r, l)| Some((r.parse().ok()?, l.parse().ok()?)));
                let Some(at) = parsed else {
                    return Err(bad(&key, "expected m/<range>/<leaf>"));
                };
                out.leaves.insert(at, decode(&key, &bytes)?);
            } else if let Some(k) = name.strip_prefix("g/") {
                out.collected.insert(k.to_string(), decode(&key, &bytes)?);
            } else {
                return Err(bad(&key, "unknown record family"));
            }
        }
        for (k, head) in heads {
            let mut siblings = Vec::with_capacity(head.dots.len());
            for dot in &head.dots {
                let s = versions.remove(&(k.clone(), *dot)).ok_or_else(|| {
                    bad(format!("d/{k}").as_bytes(), "a version it lists is missing")
                })?;
                siblings.push(s);
            }
            out.records.insert(
                k,
                Record {
                    object: Object { siblings },
                    tombstone_since_us: head.tombstone_since_us,
                    merkle_contribution: head.merkle_contribution,
                },
            );
        }
        for (id, head) in hint_heads {
            let mut siblings = Vec::new();
            for i in 0..head.versions {
                let s = hint_versions
                    .remove(&(id, i))
                    .ok_or_else(|| bad(format!("h/{id}").as_bytes(), "a version is missing"))?;
                siblings.push(s);
            }
            out.hints.insert(
                id,
                Hint {
                    id,
                    owner: head.owner,
                    key: head.key,
                    object: Object { siblings },
                    created_us: head.created_us,
                },
            );
        }
        Ok(out)
    }

    /// Writes one change atomically; syncs it if `sync`.
    pub fn commit(&mut self, change: &Change<'_>, sync: bool) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        if let Some(c) = change.counter_reserved {
            batch.put(b"c".to_vec(), encode(&c)?);
        }
        for (key, record, old_dots) in &change.records {
            let version_key = |d: &Dot| format!("v/{key}/{}/{}", d.node, d.counter).into_bytes();
            let new_dots: Vec<Dot> = record.map(|r| r.object.dots()).unwrap_or_default();
            for d in old_dots.iter().filter(|d| !new_dots.contains(d)) {
                batch.delete(version_key(d));
            }
            let k = format!("d/{key}").into_bytes();
            match record {
                Some(r) => {
                    for s in r
                        .object
                        .siblings
                        .iter()
                        .filter(|s| !old_dots.contains(&s.dot))
                    {
                        batch.put(version_key(&s.dot), encode(s)?);
                    }
                    let head = RecordHead {
                        dots: new_dots,
                        tombstone_since_us: r.tombstone_since_us,
                        merkle_contribution: r.merkle_contribution,
                    };
                    batch.put(k, encode(&head)?)
                }
                None => batch.delete(k),
            };
        }
        for hint in &change.hints_put {
            let head = HintHead {
                owner: hint.owner,
                key: hint.key.clone(),
                created_us: hint.created_us,
                versions: hint.object.siblings.len() as u32,
            };
            batch.put(format!("h/{:020}", hint.id).into_bytes(), encode(&head)?);
            for (i, s) in hint.object.siblings.iter().enumerate() {
                batch.put(format!("w/{:020}/{i:05}", hint.id).into_bytes(), encode(s)?);
            }
        }
        for &(id, versions) in &change.hints_removed {
            batch.delete(format!("h/{id:020}").into_bytes());
            for i in 0..versions {
                batch.delete(format!("w/{id:020}/{i:05}").into_bytes());
            }
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
