//! A replica's durable protocol state, in a `KvEngine` of the scenario's kind on the
//! node's disk (`pbft/log`), beside the state machine (`pbft/state`).
//!
//! Keys (sequence numbers big-endian, so a scan is in order):
//! - `view` — the current view and whether it is active (a replica that sent VIEW-CHANGE
//!   for `v` records `(v, false)` first, and never again accepts messages of a lower view);
//! - `ck` — the stable checkpoint: sequence number, state digest and its 2f+1 proof;
//! - `pp/<seq>` — the pre-prepare this replica accepted (a primary: sent) at `seq`, written
//!   before its PREPARE (or PRE-PREPARE) is sent, so after a restart it never prepares a
//!   second value at the same view and sequence number;
//! - `pc/<seq>` — its highest-view prepared certificate, written before its COMMIT is
//!   sent (a VIEW-CHANGE after a restart still carries it);
//! - `cm/<seq>` — the commit certificate of a committed sequence number, written before
//!   it is executed: a restart re-executes from the state machine's recovered point.
//!
//! Records at or below the stable checkpoint are deleted once the state machine is synced
//! past it (garbage collection). Every handler that wrote calls [`Store::sync`] before
//! it returns, so every message it sends follows the durable state it depends on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use storage::kv::{EngineError, EngineOpener, KvEngine, WriteBatch};
use storage::vfs::VfsHandle;

use super::wire::{CommitCert, PreparedCert, Proof, Seq, Signed, View};

const VIEW_KEY: &[u8] = b"view";
const CHECKPOINT_KEY: &[u8] = b"ck";

/// A stable checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Stable {
    pub seq: Seq,
    pub state: u64,
    pub proof: Proof,
}

/// Everything recovered from the disk.
#[derive(Debug, Default)]
pub struct Recovered {
    pub view: View,
    pub active: bool,
    pub stable: Stable,
    pub pre_prepares: BTreeMap<Seq, Signed>,
    pub prepared: BTreeMap<Seq, PreparedCert>,
    pub committed: BTreeMap<Seq, CommitCert>,
}

fn key(prefix: &[u8], seq: Seq) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub struct Store {
    engine: Box<dyn KvEngine>,
    dir: String,
    dirty: bool,
}

impl Store {
    pub fn open(
        opener: &dyn EngineOpener,
        vfs: VfsHandle,
        dir: &str,
    ) -> Result<(Self, Recovered), EngineError> {
        storage::vfs::create_dir_all_durable(vfs.as_ref(), dir)?;
        let engine = opener.open(vfs, dir)?;
        let store = Store {
            engine,
            dir: dir.to_string(),
            dirty: false,
        };
        let recovered = store.recover()?;
        Ok((store, recovered))
    }

    fn corrupt(&self, what: &str, e: impl std::fmt::Display) -> EngineError {
        EngineError::Corruption {
            file: self.dir.clone(),
            offset: 0,
            detail: format!("{what}: {e}"),
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, EngineError> {
        postcard::from_bytes(bytes).map_err(|e| self.corrupt(what, e))
    }

    fn recover(&self) -> Result<Recovered, EngineError> {
        let mut r = Recovered {
            active: true,
            ..Recovered::default()
        };
        if let Some(bytes) = self.engine.get(VIEW_KEY)? {
            let (view, active): (View, bool) = self.decode("view", &bytes)?;
            r.view = view;
            r.active = active;
        }
        if let Some(bytes) = self.engine.get(CHECKPOINT_KEY)? {
            r.stable = self.decode("stable checkpoint", &bytes)?;
        }
        for pair in self
            .engine
            .scan(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)?
        {
            let (k, v) = pair?;
            let Some((prefix, seq)) = k.split_last_chunk::<8>() else {
                continue;
            };
            let seq = u64::from_be_bytes(*seq);
            match prefix {
                b"pp/" => {
                    r.pre_prepares.insert(seq, self.decode("pre-prepare", &v)?);
                }
                b"pc/" => {
                    r.prepared
                        .insert(seq, self.decode("prepared certificate", &v)?);
                }
                b"cm/" => {
                    r.committed
                        .insert(seq, self.decode("commit certificate", &v)?);
                }
                _ => {}
            }
        }
        Ok(r)
    }

    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), EngineError> {
        let bytes = postcard::to_allocvec(value).map_err(|e| EngineError::Other(e.to_string()))?;
        self.engine.put(&key, &bytes)?;
        self.dirty = true;
        Ok(())
    }

    pub fn set_view(&mut self, view: View, active: bool) -> Result<(), EngineError> {
        self.put(VIEW_KEY.to_vec(), &(view, active))
    }

    pub fn put_pre_prepare(&mut self, seq: Seq, pp: &Signed) -> Result<(), EngineError> {
        self.put(key(b"pp/", seq), pp)
    }

    pub fn put_prepared(&mut self, seq: Seq, cert: &PreparedCert) -> Result<(), EngineError> {
        self.put(key(b"pc/", seq), cert)
    }

    pub fn put_committed(&mut self, seq: Seq, cert: &CommitCert) -> Result<(), EngineError> {
        self.put(key(b"cm/", seq), cert)
    }

    /// Records a new stable checkpoint and deletes every record at or below it (the
    /// caller has synced the state machine past it).
    pub fn set_stable(&mut self, stable: &Stable) -> Result<(), EngineError> {
        let mut batch = WriteBatch::new();
        let bytes = postcard::to_allocvec(stable).map_err(|e| EngineError::Other(e.to_string()))?;
        batch.put(CHECKPOINT_KEY.to_vec(), bytes);
        for pair in self
            .engine
            .scan(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)?
        {
            let (k, _) = pair?;
            if let Some((prefix, seq)) = k.split_last_chunk::<8>()
                && matches!(prefix, b"pp/" | b"pc/" | b"cm/")
                && u64::from_be_bytes(*seq) <= stable.seq
            {
                batch.delete(k.clone());
            }
        }
        self.engine.write_batch(&batch)?;
        self.dirty = true;
        Ok(())
    }

    /// Makes every write so far durable (a no-op if nothing was written).
    pub fn sync(&mut self) -> Result<(), EngineError> {
        if self.dirty {
            self.engine.sync()?;
            self.dirty = false;
        }
        Ok(())
    }
}
