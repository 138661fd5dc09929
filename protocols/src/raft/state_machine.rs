//! The replicated state machine: a key-value store in a `KvEngine` on the node's disk.
//!
//! Data keys are stored under `d/<key>`; the index of the last applied entry under
//! `m/applied` (8 bytes, little-endian), written in the same atomic batch as the entry's
//! effect. Each applied client operation's result is kept under `s/<op id>` (Raft §8):
//! a request proposed twice — a forwarded request the network duplicated, say — takes
//! effect once, and the duplicate returns the recorded result. The engine need not sync: after a crash it recovers a consistent prefix of its
//! batches (the `KvEngine` contract), and the node re-applies the committed entries after
//! it from the log, which is the source of truth.

use sim_core::linearizability::model::{KvOp, KvResult};
use storage::kv::{EngineError, EngineOpener, KvEngine, WriteBatch};
use storage::vfs::VfsHandle;
use xxhash_rust::xxh3::xxh3_64;

use super::log::{Command, Entry, Index, StoredResult};

const APPLIED_KEY: &[u8] = b"m/applied";

fn session_key(op: sim_core::OpId) -> Vec<u8> {
    let mut k = b"s/".to_vec();
    k.extend_from_slice(&op.0.to_be_bytes());
    k
}

fn data_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.extend_from_slice(b"d/");
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
    applied: Index,
}

impl StateMachine {
    pub fn open(opener: &dyn EngineOpener, vfs: VfsHandle, dir: &str) -> Result<Self, EngineError> {
        storage::vfs::create_dir_all_durable(vfs.as_ref(), dir)?;
        let engine = opener.open(vfs, dir)?;
        let applied = match engine.get(APPLIED_KEY)? {
            None => 0,
            Some(bytes) => {
                let array: [u8; 8] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| EngineError::Corruption {
                            file: dir.to_string(),
                            offset: 0,
                            detail: format!("applied index has {} bytes, not 8", bytes.len()),
                        })?;
                u64::from_le_bytes(array)
            }
        };
        Ok(StateMachine { engine, applied })
    }

    /// The index of the last entry applied.
    pub fn applied(&self) -> Index {
        self.applied
    }

    fn value(&self, key: &str) -> Result<Option<String>, EngineError> {
        match self.engine.get(&data_key(key))? {
            None => Ok(None),
            Some(bytes) => {
                String::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| EngineError::Corruption {
                        file: "raft/state".into(),
                        offset: 0,
                        detail: format!("value of key {key} is not UTF-8"),
                    })
            }
        }
    }

    /// Answers a read-only request from the current state (no log involved).
    pub fn read(&self, request: &KvOp) -> Result<KvResult, EngineError> {
        let current = self.value(request.key())?;
        Ok(request.apply_to(current.as_deref()).0)
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
                    let stored: StoredResult =
                        postcard::from_bytes(&bytes).map_err(|e| EngineError::Corruption {
                            file: "raft/state".into(),
                            offset: 0,
                            detail: format!("recorded result of {op}: {e}"),
                        })?;
                    let result = KvResult::from(stored);
                    let mut batch = WriteBatch::new();
                    batch.put(APPLIED_KEY.to_vec(), entry.index.to_le_bytes().to_vec());
                    self.engine.write_batch(&batch)?;
                    self.applied = entry.index;
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
        batch.put(APPLIED_KEY.to_vec(), entry.index.to_le_bytes().to_vec());
        self.engine.write_batch(&batch)?;
        self.applied = entry.index;
        Ok(result)
    }
}
