//! Durable state of a bully node, in the scenario's `KvEngine` on the node's disk.
//!
//! Members keep their term under `m/term` (8 bytes, little-endian) and, in majority mode,
//! the leader they acknowledged in a term under `m/vote` (term, then leader id: 12 bytes).
//! The fenced resource keeps the highest fencing token it has accepted under
//! `r/highest` (12 bytes) and the last accepted write under `r/last` (token and sequence
//! number: 20 bytes). Every write is one batch followed by a sync, done before any
//! message or observation that depends on it.

use sim_core::NodeId;
use storage::kv::{EngineError, EngineOpener, KvEngine, WriteBatch};
use storage::vfs::VfsHandle;

use super::{Term, Token};

pub(crate) const TERM_KEY: &[u8] = b"m/term";
pub(crate) const VOTE_KEY: &[u8] = b"m/vote";
pub(crate) const HIGHEST_KEY: &[u8] = b"r/highest";
pub(crate) const LAST_WRITE_KEY: &[u8] = b"r/last";

pub(crate) struct Store {
    engine: Box<dyn KvEngine>,
    dir: String,
}

pub(crate) fn encode_token(token: Token) -> Vec<u8> {
    let mut bytes = token.term.to_le_bytes().to_vec();
    bytes.extend_from_slice(&token.leader.0.to_le_bytes());
    bytes
}

impl Store {
    pub(crate) fn open(
        opener: &dyn EngineOpener,
        vfs: VfsHandle,
        dir: &str,
    ) -> Result<Store, EngineError> {
        storage::vfs::create_dir_all_durable(vfs.as_ref(), dir)?;
        let engine = opener.open(vfs, dir)?;
        Ok(Store {
            engine,
            dir: dir.to_string(),
        })
    }

    fn corrupt(&self, detail: String) -> EngineError {
        EngineError::Corruption {
            file: self.dir.clone(),
            offset: 0,
            detail,
        }
    }

    pub(crate) fn term(&self) -> Result<Term, EngineError> {
        match self.engine.get(TERM_KEY)? {
            None => Ok(0),
            Some(bytes) => {
                let array: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.corrupt(format!("term has {} bytes, not 8", bytes.len())))?;
                Ok(u64::from_le_bytes(array))
            }
        }
    }

    pub(crate) fn token(&self, key: &[u8]) -> Result<Option<Token>, EngineError> {
        match self.engine.get(key)? {
            None => Ok(None),
            Some(bytes) if bytes.len() == 12 => {
                let mut term = [0u8; 8];
                term.copy_from_slice(&bytes[..8]);
                let mut leader = [0u8; 4];
                leader.copy_from_slice(&bytes[8..]);
                Ok(Some(Token {
                    term: u64::from_le_bytes(term),
                    leader: NodeId(u32::from_le_bytes(leader)),
                }))
            }
            Some(bytes) => Err(self.corrupt(format!(
                "{} has {} bytes, not 12",
                String::from_utf8_lossy(key),
                bytes.len()
            ))),
        }
    }

    /// Writes `puts` as one batch and syncs it.
    pub(crate) fn put_synced(&mut self, puts: &[(&[u8], Vec<u8>)]) -> Result<(), EngineError> {
        let mut batch = WriteBatch::new();
        for (key, value) in puts {
            batch.put(key.to_vec(), value.clone());
        }
        self.engine.write_batch(&batch)?;
        self.engine.sync()
    }
}
