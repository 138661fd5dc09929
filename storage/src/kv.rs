//! The key-value engine interface every storage engine implements (Bitcask, B+tree, LSM).
//!
//! Keys and values are bytes. Protocols choose an engine per node at run time, so the
//! trait is object-safe: a node holds a `Box<dyn KvEngine>`.
//!
//! **Durability contract.** A write (put, delete, batch) is durable once a later
//! [`KvEngine::sync`] returns `Ok` (an engine may also make it durable earlier, for
//! example with a sync-every-write policy). After a crash, reopening the engine with
//! [`EngineOpener::open`] recovers a state that
//! - contains every write acknowledged before the last successful `sync`,
//! - never contains a value that was not written, nor a deleted key that a synced delete
//!   removed,
//! - applies each batch entirely or not at all.
//!
//! Writes after the last successful sync may or may not survive, but always as a prefix
//! of the write order (no later write without the earlier ones).
//!
//! A failed `sync` means the unsynced writes may be lost; the engine must not report a
//! later sync as covering them (see `vfs` on fsync failures), nor show them after a
//! reopen in place (without a crash). Corrupt data on disk is reported as
//! [`EngineError::Corruption`], never silently dropped or returned (but see the known
//! limitation below).
//!
//! **Known limitation.** A corrupted *last* record of a log (Bitcask's active file, the
//! B+tree's WAL) is indistinguishable from a torn write at a crash and is cut like one:
//! the engine then recovers the state without its last write unit, even if that unit
//! was synced. Corruption anywhere else is `Corruption` (or a failing read), never a
//! wrong value or an older state (`storage/tests/kv_corruption.rs` checks both).

use std::fmt;
use std::ops::Bound;

use crate::vfs::{VfsError, VfsHandle};

/// A key-value pair.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// Writes applied atomically, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        WriteBatch::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Delete { key: key.into() });
        self
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Errors of a key-value engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Vfs(#[from] VfsError),
    /// Data on disk failed its checks.
    #[error("corruption in {file} at offset {offset}: {detail}")]
    Corruption {
        file: String,
        offset: u64,
        detail: String,
    },
    /// The engine cannot do this (for example an ordered scan on a hash engine).
    #[error("{engine} does not support {operation}")]
    Unsupported {
        engine: &'static str,
        operation: &'static str,
    },
    /// A key or value is larger than the engine supports.
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("invalid engine configuration: {0}")]
    InvalidConfig(String),
    /// A previous failure (such as a failed sync) left the engine unusable until it is
    /// reopened.
    #[error("the engine is unusable after an earlier failure: {0}")]
    Poisoned(String),
    /// Any other engine-specific failure.
    #[error("{0}")]
    Other(String),
}

/// An ordered scan's results, produced lazily.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<Entry, EngineError>> + 'a>;

/// A key-value storage engine.
pub trait KvEngine: Send {
    /// The engine's name (`bitcask`, `btree`, `lsm`).
    fn name(&self) -> &'static str;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), EngineError>;
    /// Deleting an absent key succeeds.
    fn delete(&mut self, key: &[u8]) -> Result<(), EngineError>;
    /// Applies every write of `batch` atomically, in order.
    fn write_batch(&mut self, batch: &WriteBatch) -> Result<(), EngineError>;
    /// The entries with keys in `(start, end)`, in key order, lazily. Engines that keep
    /// no order return [`EngineError::Unsupported`].
    fn scan<'a>(
        &'a self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<ScanIter<'a>, EngineError>;
    /// Makes every write so far durable.
    fn sync(&mut self) -> Result<(), EngineError>;
}

/// Opens (and recovers) an engine in a directory of a file system: the factory a
/// protocol's `on_start` calls with the node's disk.
pub trait EngineOpener: Send + Sync {
    fn name(&self) -> &'static str;
    fn open(&self, vfs: VfsHandle, dir: &str) -> Result<Box<dyn KvEngine>, EngineError>;
}

impl fmt::Debug for dyn KvEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KvEngine({})", self.name())
    }
}

// ---- Shared helpers for engines (added with Bitcask and the B+tree). ----

/// When an engine makes its writes durable by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineSyncPolicy {
    /// Every acknowledged write (put, delete, batch) is durable when the call returns.
    #[default]
    EveryWrite,
    /// Writes are durable only after [`KvEngine::sync`] (or an engine's own
    /// maintenance, which may sync earlier).
    Explicit,
}

impl EngineError {
    /// A [`EngineError::Corruption`] at `offset` of `file`.
    pub fn corruption(file: &str, offset: u64, detail: impl Into<String>) -> EngineError {
        EngineError::Corruption {
            file: file.to_string(),
            offset,
            detail: detail.into(),
        }
    }
}

/// Whether the key range `(start, end)` is empty because its bounds cross (start above
/// end, or equal with one side excluded). `BTreeMap::range` panics on such bounds, so
/// engines check this first and return an empty scan.
pub fn range_is_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
    }
}

/// Whether `key` lies within `(start, end)`.
pub fn key_in_range(key: &[u8], start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    let above_start = match start {
        Bound::Unbounded => true,
        Bound::Included(s) => key >= s,
        Bound::Excluded(s) => key > s,
    };
    let below_end = match end {
        Bound::Unbounded => true,
        Bound::Included(e) => key <= e,
        Bound::Excluded(e) => key < e,
    };
    above_start && below_end
}
