//! Durable state of a gossip member, in the scenario's `KvEngine` on the node's disk.
//!
//! One key: `g/incarnation` (8 bytes, little-endian), the highest incarnation number this
//! node has ever announced. A (re)started node reads it, announces one more, and writes
//! and syncs that before it sends anything; a refutation writes and syncs the raised
//! number before the refuting ALIVE leaves. So no incarnation number is ever announced
//! twice by two lives of one node, whatever the crash keeps, loses or tears of unsynced
//! sectors.

use storage::kv::{EngineError, EngineOpener, KvEngine, WriteBatch};
use storage::vfs::VfsHandle;

use super::Incarnation;

pub(crate) const INCARNATION_KEY: &[u8] = b"g/incarnation";

pub(crate) struct Store {
    engine: Box<dyn KvEngine>,
    dir: String,
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

    /// The highest incarnation announced so far (0 on a fresh disk).
    pub(crate) fn incarnation(&self) -> Result<Incarnation, EngineError> {
        match self.engine.get(INCARNATION_KEY)? {
            None => Ok(0),
            Some(bytes) => {
                let array: [u8; 8] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| EngineError::Corruption {
                            file: self.dir.clone(),
                            offset: 0,
                            detail: format!("incarnation has {} bytes, not 8", bytes.len()),
                        })?;
                Ok(u64::from_le_bytes(array))
            }
        }
    }

    /// Writes `incarnation` and syncs it.
    pub(crate) fn set_incarnation(&mut self, incarnation: Incarnation) -> Result<(), EngineError> {
        let mut batch = WriteBatch::new();
        batch.put(INCARNATION_KEY.to_vec(), incarnation.to_le_bytes().to_vec());
        self.engine.write_batch(&batch)?;
        self.engine.sync()
    }
}
