//! Durable state of a multi-leader node, in the scenario's `KvEngine` on the node's disk.
//!
//! Keys are text so a prefix scan finds a family:
//!
//! - `m/hlc` — the highest hybrid-clock reading the node has revealed (12 bytes LE).
//! - `m/seq` — the last replication sequence number the node gave a local change.
//! - `m/applied` — the changes applied here, as a causal context over `(origin, seq)`
//!   (a version vector once the gaps fill), so a change is applied at most once, also
//!   across restarts.
//! - `s/<key>` — a key's CRDT value.
//! - `l/<origin>/<seq>` — the outgoing replication log: a change still to be delivered
//!   to some neighbour. Deleted once every neighbour has acknowledged it.
//!
//! - `c/<n>` — conflict record number `n`, written in the batch of the change that met
//!   the conflict; `m/cseq` the last record number. Deleted (unsynced) once collected.
//!
//! Every change — a local write or a remote one applied — is one atomic batch (value,
//! applied set, clock, sequence number, log entry), synced before it is revealed (the
//! client's reply, an acknowledgement, a forward).

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::Serialize;
use serde::de::DeserializeOwned;
use storage::kv::{EngineError, EngineOpener, KvEngine, WriteBatch};
use storage::vfs::VfsHandle;

use super::crdt::{CausalContext, Value};
use super::hlc::Hlc;
use super::{ConflictRecord, Update};

const HLC_KEY: &[u8] = b"m/hlc";
const SEQ_KEY: &[u8] = b"m/seq";
const APPLIED_KEY: &[u8] = b"m/applied";
const CONFLICT_SEQ_KEY: &[u8] = b"m/cseq";

/// Errors of the durable store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("undecodable record {key}: {detail}")]
    Decode { key: String, detail: String },
}

/// What a node recovers from its disk.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub hlc: Hlc,
    pub seq: u64,
    pub applied: CausalContext,
    pub values: BTreeMap<String, Value>,
    pub log: Vec<Update>,
    pub conflicts: Vec<ConflictRecord>,
    pub conflict_seq: u64,
}

/// One change's writes, applied in one batch and synced.
#[derive(Debug, Default)]
pub(crate) struct Commit<'a> {
    pub hlc: Option<Hlc>,
    pub seq: Option<u64>,
    pub applied: Option<&'a CausalContext>,
    pub values: Vec<(&'a str, &'a Value)>,
    pub log: Vec<&'a Update>,
    pub conflicts: Vec<&'a ConflictRecord>,
    pub conflict_seq: Option<u64>,
}

pub(crate) struct Store {
    engine: Box<dyn KvEngine>,
}

fn log_key(origin: u32, seq: u64) -> Vec<u8> {
    format!("l/{origin:05}/{seq:020}").into_bytes()
}

fn conflict_key(id: u64) -> Vec<u8> {
    format!("c/{id:020}").into_bytes()
}

fn value_key(key: &str) -> Vec<u8> {
    format!("s/{key}").into_bytes()
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

impl Store {
    pub(crate) fn open(
        opener: &dyn EngineOpener,
        vfs: VfsHandle,
        dir: &str,
    ) -> Result<Store, StoreError> {
        storage::vfs::create_dir_all_durable(vfs.as_ref(), dir).map_err(EngineError::from)?;
        Ok(Store {
            engine: opener.open(vfs, dir)?,
        })
    }

    /// Reads everything back.
    pub(crate) fn recover(&self) -> Result<Recovered, StoreError> {
        let mut out = Recovered::default();
        for entry in self.engine.scan(Bound::Unbounded, Bound::Unbounded)? {
            let (key, bytes) = entry?;
            if key == HLC_KEY {
                out.hlc = Hlc::from_bytes(&bytes).ok_or_else(|| StoreError::Decode {
                    key: "m/hlc".into(),
                    detail: format!("{} bytes, not 12", bytes.len()),
                })?;
            } else if key == SEQ_KEY {
                out.seq = decode(&key, &bytes)?;
            } else if key == CONFLICT_SEQ_KEY {
                out.conflict_seq = decode(&key, &bytes)?;
            } else if key.starts_with(b"c/") {
                out.conflicts.push(decode(&key, &bytes)?);
            } else if key == APPLIED_KEY {
                out.applied = decode(&key, &bytes)?;
            } else if let Some(name) = key.strip_prefix(b"s/") {
                let name = String::from_utf8(name.to_vec()).map_err(|e| StoreError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    detail: e.to_string(),
                })?;
                out.values.insert(name, decode(&key, &bytes)?);
            } else if key.starts_with(b"l/") {
                out.log.push(decode(&key, &bytes)?);
            } else {
                return Err(StoreError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    detail: "unknown record family".into(),
                });
            }
        }
        // A record number is never reused, even if `m/cseq` was lost with a record.
        let highest = out.conflicts.iter().map(|c| c.id).max().unwrap_or(0);
        out.conflict_seq = out.conflict_seq.max(highest);
        Ok(out)
    }

    /// Writes one change atomically and syncs it.
    pub(crate) fn commit(&mut self, commit: &Commit<'_>) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        if let Some(hlc) = commit.hlc {
            batch.put(HLC_KEY, hlc.to_bytes().to_vec());
        }
        if let Some(seq) = commit.seq {
            batch.put(SEQ_KEY, encode(&seq)?);
        }
        if let Some(applied) = commit.applied {
            batch.put(APPLIED_KEY, encode(applied)?);
        }
        for (key, value) in &commit.values {
            batch.put(value_key(key), encode(value)?);
        }
        for update in &commit.log {
            batch.put(log_key(update.origin, update.seq), encode(update)?);
        }
        for record in &commit.conflicts {
            batch.put(conflict_key(record.id), encode(record)?);
        }
        if let Some(n) = commit.conflict_seq {
            batch.put(CONFLICT_SEQ_KEY, encode(&n)?);
        }
        self.engine.write_batch(&batch)?;
        self.engine.sync()?;
        Ok(())
    }

    /// Drops a log entry every neighbour has acknowledged. Not synced: if the delete is
    /// lost in a crash, the entry is sent again and de-duplicated by its receivers.
    pub(crate) fn forget(&mut self, origin: u32, seq: u64) -> Result<(), StoreError> {
        self.engine.delete(&log_key(origin, seq))?;
        Ok(())
    }
}

impl Store {
    /// Drops a collected conflict record (not synced: a lost delete is collected again).
    pub(crate) fn forget_conflict(&mut self, id: u64) -> Result<(), StoreError> {
        self.engine.delete(&conflict_key(id))?;
        Ok(())
    }
}
