//! The replicated state machine: a key-value store in a `KvEngine` on the node's disk.
//!
//! Data keys are stored under `d/<key>`; the index and term of the last applied entry
//! under `m/applied` (16 bytes, little-endian), written in the same atomic batch as the
//! entry's effect. Each applied client operation's result is kept under `s/<op id>`
//! (Raft §8): a request proposed twice — a forwarded request the network duplicated,
//! say — takes effect once, and the duplicate returns the recorded result.
//!
//! The engine need not sync on every apply: after a crash it recovers a consistent
//! prefix of its batches (the `KvEngine` contract), and the node re-applies the committed
//! entries after it from the log, which is the source of truth. Before the log is
//! compacted up to the applied index, [`StateMachine::sync`] makes the state durable.
//!
//! A snapshot (§7) is the state machine's whole content at its applied index, read
//! through an ordered scan of the engine; installing one replaces the content in one
//! atomic batch and syncs it.

use std::fmt;

use serde::{Deserialize, Serialize};
use sim_core::OpId;
use sim_core::linearizability::model::{KvOp, KvResult};
use storage::kv::{EngineError, EngineOpener, KvEngine, WriteBatch};
use storage::vfs::VfsHandle;
use xxhash_rust::xxh3::xxh3_64;

use super::log::{Command, Entry, Index, StoredResult, Term};

const APPLIED_KEY: &[u8] = b"m/applied";
const DATA_PREFIX: &[u8] = b"d/";
const SESSION_PREFIX: &[u8] = b"s/";

fn session_key(op: OpId) -> Vec<u8> {
    let mut k = SESSION_PREFIX.to_vec();
    k.extend_from_slice(&op.0.to_be_bytes());
    k
}

fn data_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.extend_from_slice(DATA_PREFIX);
    k.extend_from_slice(key.as_bytes());
    k
}

/// A stable hash of a command, for the checkers (equal commands, equal digests).
pub fn digest(command: &Command) -> u64 {
    // postcard is a canonical encoding of the command's serde representation.
    postcard::to_allocvec(command).map_or(0, |bytes| xxh3_64(&bytes))
}

pub struct StateMachine {
    engine: Box<dyn KvEngine>,
    dir: String,
    applied: Index,
    applied_term: Term,
}

/// One item of a snapshot.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotItem {
    /// A key and its value.
    Data { key: String, value: String },
    /// The recorded result of an applied client operation (for duplicate detection).
    Session { op: OpId, result: KvResult },
}

/// The state machine's content after applying the entry at `index` (of `term`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub index: Index,
    pub term: Term,
    pub items: Vec<SnapshotItem>,
}

impl fmt::Debug for Snapshot {
    /// Short, for traces: the items are counted, not listed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self
            .items
            .iter()
            .filter(|i| matches!(i, SnapshotItem::Data { .. }))
            .count();
        write!(
            f,
            "Snapshot {{ index: {}, term: {}, keys: {data}, sessions: {} }}",
            self.index,
            self.term,
            self.items.len() - data
        )
    }
}

impl StateMachine {
    pub fn open(opener: &dyn EngineOpener, vfs: VfsHandle, dir: &str) -> Result<Self, EngineError> {
        storage::vfs::create_dir_all_durable(vfs.as_ref(), dir)?;
        let engine = opener.open(vfs, dir)?;
        let (applied, applied_term) = match engine.get(APPLIED_KEY)? {
            None => (0, 0),
            Some(bytes) => {
                let array: [u8; 16] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| EngineError::Corruption {
                            file: dir.to_string(),
                            offset: 0,
                            detail: format!("applied index has {} bytes, not 16", bytes.len()),
                        })?;
                (
                    u64::from_le_bytes(array[..8].try_into().unwrap_or_default()),
                    u64::from_le_bytes(array[8..].try_into().unwrap_or_default()),
                )
            }
        };
        Ok(StateMachine {
            engine,
            dir: dir.to_string(),
            applied,
            applied_term,
        })
    }

    /// The index of the last entry applied.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The term of the last entry applied.
    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    fn corrupt(&self, detail: String) -> EngineError {
        EngineError::Corruption {
            file: self.dir.clone(),
            offset: 0,
            detail,
        }
    }

    fn value(&self, key: &str) -> Result<Option<String>, EngineError> {
        match self.engine.get(&data_key(key))? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| self.corrupt(format!("value of key {key} is not UTF-8"))),
        }
    }

    fn applied_record(index: Index, term: Term) -> Vec<u8> {
        let mut v = index.to_le_bytes().to_vec();
        v.extend_from_slice(&term.to_le_bytes());
        v
    }

    /// Makes the applied state durable (before the log is compacted up to it).
    pub fn sync(&mut self) -> Result<(), EngineError> {
        self.engine.sync()
    }

    /// The whole state at the applied index, read by an ordered scan of the engine.
    pub fn snapshot(&self) -> Result<Snapshot, EngineError> {
        let mut items = Vec::new();
        for pair in self
            .engine
            .scan(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)?
        {
            let (key, value) = pair?;
            if let Some(k) = key.strip_prefix(DATA_PREFIX) {
                let (Ok(key), Ok(value)) =
                    (String::from_utf8(k.to_vec()), String::from_utf8(value))
                else {
                    return Err(self.corrupt("a data key or value is not UTF-8".into()));
                };
                items.push(SnapshotItem::Data { key, value });
            } else if let Some(k) = key.strip_prefix(SESSION_PREFIX) {
                let op: [u8; 8] = k
                    .try_into()
                    .map_err(|_| self.corrupt(format!("session key of {} bytes", k.len())))?;
                let op = OpId(u64::from_be_bytes(op));
                let stored: StoredResult = postcard::from_bytes(&value)
                    .map_err(|e| self.corrupt(format!("recorded result of {op}: {e}")))?;
                items.push(SnapshotItem::Session {
                    op,
                    result: stored.into(),
                });
            }
        }
        Ok(Snapshot {
            index: self.applied,
            term: self.applied_term,
            items,
        })
    }

    /// Replaces the whole state with `snapshot` in one atomic batch, and syncs it.
    pub fn install(&mut self, snapshot: &Snapshot) -> Result<(), EngineError> {
        let mut batch = WriteBatch::new();
        for pair in self
            .engine
            .scan(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)?
        {
            let (key, _) = pair?;
            if key.as_slice() != APPLIED_KEY {
                batch.delete(key);
            }
        }
        for item in &snapshot.items {
            match item {
                SnapshotItem::Data { key, value } => {
                    batch.put(data_key(key), value.as_bytes().to_vec());
                }
                SnapshotItem::Session { op, result } => {
                    let recorded = postcard::to_allocvec(&StoredResult::from(result))
                        .map_err(|e| EngineError::Other(format!("encode result of {op}: {e}")))?;
                    batch.put(session_key(*op), recorded);
                }
            }
        }
        batch.put(
            APPLIED_KEY.to_vec(),
            Self::applied_record(snapshot.index, snapshot.term),
        );
        self.engine.write_batch(&batch)?;
        self.engine.sync()?;
        self.applied = snapshot.index;
        self.applied_term = snapshot.term;
        Ok(())
    }

    /// Answers a read-only request from the current state (no log involved).
    pub fn read(&self, request: &KvOp) -> Result<KvResult, EngineError> {
        let current = self.value(request.key())?;
        Ok(request.apply_to(current.as_deref()).0)
    }

    /// Applies a batch of client requests as the position `index` (tagged `term`) after
    /// the last applied one, in one atomic engine batch: Multi-Paxos applies a decided
    /// slot this way. Each request's result is returned with whether it took effect now
    /// (`false`: it had been applied before, at an earlier position or earlier in this
    /// batch, and the recorded result is returned without a second effect).
    pub fn apply_batch(
        &mut self,
        index: Index,
        term: Term,
        requests: &[(OpId, &KvOp)],
    ) -> Result<Vec<(KvResult, bool)>, EngineError> {
        assert_eq!(index, self.applied + 1, "positions are applied in order");
        let mut batch = WriteBatch::new();
        // Values and results written earlier in this batch, which the engine does not
        // hold yet.
        let mut values: std::collections::BTreeMap<&str, Option<String>> =
            std::collections::BTreeMap::new();
        let mut sessions: std::collections::BTreeMap<OpId, KvResult> =
            std::collections::BTreeMap::new();
        let mut results = Vec::with_capacity(requests.len());
        for &(op, request) in requests {
            if let Some(result) = sessions.get(&op) {
                results.push((result.clone(), false));
                continue;
            }
            if let Some(bytes) = self.engine.get(&session_key(op))? {
                let stored: StoredResult = postcard::from_bytes(&bytes)
                    .map_err(|e| self.corrupt(format!("recorded result of {op}: {e}")))?;
                results.push((KvResult::from(stored), false));
                continue;
            }
            let key = request.key();
            let current = match values.get(key) {
                Some(v) => v.clone(),
                None => self.value(key)?,
            };
            let (result, new_value) = request.apply_to(current.as_deref());
            if let Some(value) = new_value
                && Some(value.as_str()) != current.as_deref()
            {
                batch.put(data_key(key), value.clone().into_bytes());
                values.insert(key, Some(value));
            }
            let recorded = postcard::to_allocvec(&StoredResult::from(&result))
                .map_err(|e| EngineError::Other(format!("encode result of {op}: {e}")))?;
            batch.put(session_key(op), recorded);
            sessions.insert(op, result.clone());
            results.push((result, true));
        }
        batch.put(APPLIED_KEY.to_vec(), Self::applied_record(index, term));
        self.engine.write_batch(&batch)?;
        self.applied = index;
        self.applied_term = term;
        Ok(results)
    }

    /// Applies the entry after the last applied one; returns the client's result for a
    /// client command.
    pub fn apply(&mut self, entry: &Entry) -> Result<Option<KvResult>, EngineError> {
        assert_eq!(
            entry.index,
            self.applied + 1,
            "entries are applied in order"
        );
        let mut batch = WriteBatch::new();
        let result = match &entry.command {
            Command::Noop => None,
            Command::Client { request, op, .. } => {
                if let Some(bytes) = self.engine.get(&session_key(*op))? {
                    // Already applied: the same result, no second effect.
                    let stored: StoredResult = postcard::from_bytes(&bytes)
                        .map_err(|e| self.corrupt(format!("recorded result of {op}: {e}")))?;
                    let result = KvResult::from(stored);
                    let mut batch = WriteBatch::new();
                    batch.put(
                        APPLIED_KEY.to_vec(),
                        Self::applied_record(entry.index, entry.term),
                    );
                    self.engine.write_batch(&batch)?;
                    self.applied = entry.index;
                    self.applied_term = entry.term;
                    return Ok(Some(result));
                }
                let current = self.value(request.key())?;
                let (result, new_value) = request.apply_to(current.as_deref());
                if let Some(value) = new_value
                    && Some(value.as_str()) != current.as_deref()
                {
                    batch.put(data_key(request.key()), value.into_bytes());
                }
                let recorded = postcard::to_allocvec(&StoredResult::from(&result))
                    .map_err(|e| EngineError::Other(format!("encode result of {op}: {e}")))?;
                batch.put(session_key(*op), recorded);
                Some(result)
            }
        };
        batch.put(
            APPLIED_KEY.to_vec(),
            Self::applied_record(entry.index, entry.term),
        );
        self.engine.write_batch(&batch)?;
        self.applied = entry.index;
        self.applied_term = entry.term;
        Ok(result)
    }
}
