//! The acceptor's durable state — the promised ballot and, per slot, the accepted ballot
//! and value — in a WAL on the node's disk.
//!
//! Every change is a WAL record (encoded with `postcard`):
//! - `Promise { ballot }` — the acceptor will take part in no ballot below this one;
//! - `Accept { slot, ballot, value }` — accepted `value` in `slot` at `ballot` (which also
//!   raises the promise to `ballot`, since accepting at a ballot implies promising it);
//! - `Base { slot }` — every slot up to `slot` is decided and in the state machine, which
//!   was synced first: the accepted values there are no longer needed. It is written
//!   with the current promise and the accepted values kept after it, synced, and only
//!   then is the WAL truncated before it, so the WAL stays bounded.
//!
//! The WAL guarantees that records survive a crash as a prefix, and `sync` makes all of
//! them durable. The node calls [`AcceptorLog::sync`] before it sends a promise or an
//! accepted reply (persist before you reveal).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use storage::vfs::VfsHandle;
use storage::wal::{SyncPolicy, Wal, WalError, WalOptions};

use super::{Ballot, Slot, Value};
use crate::raft::log::StoredOp;
use sim_core::{NodeId, OpId};

/// The WAL record format: explicit types of its own, so the on-disk format is stable and
/// compact (the in-memory types' serde derives are shaped for JSON).
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Promise {
        round: u64,
        node: u32,
    },
    Accept {
        slot: Slot,
        round: u64,
        node: u32,
        value: StoredValue,
    },
    Base {
        slot: Slot,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum StoredValue {
    Noop,
    Batch(Vec<(u32, u64, StoredOp)>),
}

impl From<&Value> for StoredValue {
    fn from(v: &Value) -> Self {
        match v {
            Value::Noop => StoredValue::Noop,
            Value::Batch(requests) => StoredValue::Batch(
                requests
                    .iter()
                    .map(|r| (r.origin.0, r.op.0, StoredOp::from(&r.request)))
                    .collect(),
            ),
        }
    }
}

impl From<StoredValue> for Value {
    fn from(v: StoredValue) -> Self {
        match v {
            StoredValue::Noop => Value::Noop,
            StoredValue::Batch(requests) => Value::Batch(
                requests
                    .into_iter()
                    .map(|(origin, op, request)| super::Request {
                        origin: NodeId(origin),
                        op: OpId(op),
                        request: request.into(),
                    })
                    .collect(),
            ),
        }
    }
}

/// A stable hash of a value, for the checkers (equal values, equal digests).
pub fn digest(value: &Value) -> u64 {
    postcard::to_allocvec(&StoredValue::from(value))
        .map_or(0, |bytes| xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// Errors of the acceptor's log.
#[derive(Debug, thiserror::Error)]
pub enum AcceptorError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("paxos acceptor record {seq} cannot be decoded: {detail}")]
    Decode { seq: u64, detail: String },
    #[error("paxos acceptor record cannot be encoded: {0}")]
    Encode(String),
}

/// The acceptor's durable state, mirrored in memory.
pub struct AcceptorLog {
    wal: Wal,
    promised: Ballot,
    accepted: BTreeMap<Slot, (Ballot, Value)>,
    base: Slot,
    dirty: bool,
}

impl AcceptorLog {
    /// Opens (or creates) the log in `dir` and replays it.
    pub fn open(
        vfs: VfsHandle,
        dir: &str,
        nonce: u64,
        bugs: storage::bugs::EngineBugs,
    ) -> Result<AcceptorLog, AcceptorError> {
        storage::vfs::create_dir_all_durable(vfs.as_ref(), dir).map_err(WalError::from)?;
        let options = WalOptions {
            sync_policy: SyncPolicy::Never,
            nonce,
            bugs,
            ..WalOptions::default()
        };
        let wal = Wal::open(vfs, dir, options)?;
        let mut log = AcceptorLog {
            wal,
            promised: Ballot::ZERO,
            accepted: BTreeMap::new(),
            base: 0,
            dirty: false,
        };
        for record in log.wal.replay(0)? {
            let decoded: Record =
                postcard::from_bytes(&record.payload).map_err(|e| AcceptorError::Decode {
                    seq: record.seq,
                    detail: e.to_string(),
                })?;
            match decoded {
                Record::Promise { round, node } => {
                    log.promised = log.promised.max(Ballot { round, node });
                }
                Record::Accept {
                    slot,
                    round,
                    node,
                    value,
                } => {
                    let ballot = Ballot { round, node };
                    log.promised = log.promised.max(ballot);
                    if slot > log.base {
                        log.accepted.insert(slot, (ballot, value.into()));
                    }
                }
                Record::Base { slot } => {
                    log.base = log.base.max(slot);
                    log.accepted = log.accepted.split_off(&(log.base + 1));
                }
            }
        }
        Ok(log)
    }

    fn append(&mut self, record: &Record) -> Result<(), AcceptorError> {
        let bytes =
            postcard::to_allocvec(record).map_err(|e| AcceptorError::Encode(e.to_string()))?;
        self.wal.append(&bytes)?;
        self.dirty = true;
        Ok(())
    }

    /// The highest ballot promised (or accepted at).
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// Every slot up to this one is decided, applied, and compacted away.
    pub fn base(&self) -> Slot {
        self.base
    }

    pub fn accepted(&self, slot: Slot) -> Option<&(Ballot, Value)> {
        self.accepted.get(&slot)
    }

    /// The accepted values in slots `from` and later.
    pub fn accepted_from(&self, from: Slot) -> impl Iterator<Item = (Slot, &(Ballot, Value))> {
        self.accepted.range(from..).map(|(s, a)| (*s, a))
    }

    /// The highest slot with an accepted value (or the base).
    pub fn last_slot(&self) -> Slot {
        self.accepted
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.base)
    }

    /// Raises the promise to `ballot`. With `durable` false (the
    /// `paxos.promise_not_persisted` defect) only the memory changes.
    pub fn promise(&mut self, ballot: Ballot, durable: bool) -> Result<(), AcceptorError> {
        if ballot <= self.promised {
            return Ok(());
        }
        self.promised = ballot;
        if durable {
            self.append(&Record::Promise {
                round: ballot.round,
                node: ballot.node,
            })?;
        }
        Ok(())
    }

    /// Accepts `value` in `slot` at `ballot`; with `raise_promise` (the correct rule) the
    /// promise rises to `ballot` too.
    pub fn accept(
        &mut self,
        slot: Slot,
        ballot: Ballot,
        value: &Value,
        raise_promise: bool,
    ) -> Result<(), AcceptorError> {
        if slot <= self.base {
            return Ok(());
        }
        if raise_promise {
            self.promised = self.promised.max(ballot);
        }
        self.append(&Record::Accept {
            slot,
            round: ballot.round,
            node: ballot.node,
            value: value.into(),
        })?;
        self.accepted.insert(slot, (ballot, value.clone()));
        Ok(())
    }

    /// Compacts every slot up to `slot` away (the state machine holds them, synced).
    pub fn set_base(&mut self, slot: Slot) -> Result<(), AcceptorError> {
        if slot <= self.base {
            return Ok(());
        }
        let keep = self.accepted.split_off(&(slot + 1));
        let first = self.wal.current_seq() + 1;
        self.append(&Record::Base { slot })?;
        self.append(&Record::Promise {
            round: self.promised.round,
            node: self.promised.node,
        })?;
        for (s, (ballot, value)) in &keep {
            self.append(&Record::Accept {
                slot: *s,
                round: ballot.round,
                node: ballot.node,
                value: value.into(),
            })?;
        }
        self.sync()?;
        self.base = slot;
        self.accepted = keep;
        if first > 1 {
            self.wal.truncate(first - 1)?;
        }
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), AcceptorError> {
        if self.dirty {
            self.wal.sync()?;
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sim_core::disk::{DiskConfig, SimDisk};
    use sim_core::linearizability::model::KvOp;
    use sim_core::rng::fork;

    use super::*;
    use crate::paxos::Request;

    fn batch(n: u64) -> Value {
        Value::Batch(vec![Request {
            origin: NodeId(1),
            op: OpId(n),
            request: KvOp::put("k", n.to_string()),
        }])
    }

    fn b(round: u64, node: u32) -> Ballot {
        Ballot { round, node }
    }

    #[test]
    fn synced_promises_and_accepts_survive_a_crash() {
        let disk = SimDisk::new(DiskConfig::default(), fork(7, "disk", 0));
        let vfs: VfsHandle = Arc::new(disk.clone());
        {
            let mut log =
                AcceptorLog::open(vfs.clone(), "paxos/acceptor", 1, Default::default()).unwrap();
            log.promise(b(2, 1), true).unwrap();
            log.accept(1, b(2, 1), &batch(1), true).unwrap();
            log.accept(2, b(2, 1), &Value::Noop, true).unwrap();
            log.accept(1, b(3, 0), &batch(9), true).unwrap();
            log.promise(b(4, 2), true).unwrap();
            log.sync().unwrap();
            // Not synced: may or may not survive, never half.
            log.promise(b(9, 2), true).unwrap();
        }
        disk.crash();
        let log = AcceptorLog::open(vfs, "paxos/acceptor", 2, Default::default()).unwrap();
        assert!(log.promised() >= b(4, 2));
        assert_eq!(log.accepted(1), Some(&(b(3, 0), batch(9))));
        assert_eq!(log.accepted(2), Some(&(b(2, 1), Value::Noop)));
        assert_eq!(log.last_slot(), 2);
    }

    #[test]
    fn an_accept_implies_a_promise_on_replay_but_a_volatile_promise_is_lost() {
        let disk = SimDisk::new(DiskConfig::default(), fork(8, "disk", 0));
        let vfs: VfsHandle = Arc::new(disk.clone());
        {
            let mut log =
                AcceptorLog::open(vfs.clone(), "paxos/acceptor", 1, Default::default()).unwrap();
            log.accept(3, b(5, 1), &batch(3), true).unwrap();
            log.promise(b(7, 2), false).unwrap();
            assert_eq!(log.promised(), b(7, 2));
            log.sync().unwrap();
        }
        disk.crash();
        let log = AcceptorLog::open(vfs, "paxos/acceptor", 2, Default::default()).unwrap();
        assert_eq!(log.promised(), b(5, 1), "the volatile promise went down");
    }

    #[test]
    fn a_base_compacts_the_accepted_values_and_bounds_the_wal() {
        let disk = SimDisk::new(DiskConfig::default(), fork(9, "disk", 0));
        let vfs: VfsHandle = Arc::new(disk.clone());
        let mut log =
            AcceptorLog::open(vfs.clone(), "paxos/acceptor", 1, Default::default()).unwrap();
        for s in 1..=20 {
            log.accept(s, b(1, 0), &batch(s), true).unwrap();
        }
        log.promise(b(3, 1), true).unwrap();
        log.sync().unwrap();
        log.set_base(15).unwrap();
        assert_eq!(log.base(), 15);
        assert_eq!(log.accepted(15), None);
        assert_eq!(log.accepted_from(0).count(), 5);
        assert!(
            log.wal.first_seq() > 1,
            "the WAL before the base is truncated"
        );
        log.accept(21, b(3, 1), &Value::Noop, true).unwrap();
        log.accept(10, b(3, 1), &Value::Noop, true).unwrap();
        assert_eq!(log.accepted(10), None, "compacted slots accept nothing");
        log.sync().unwrap();
        drop(log);
        disk.crash();
        let log = AcceptorLog::open(vfs, "paxos/acceptor", 2, Default::default()).unwrap();
        assert_eq!(log.base(), 15);
        assert_eq!(log.promised(), b(3, 1));
        assert_eq!(log.accepted(16), Some(&(b(1, 0), batch(16))));
        assert_eq!(log.accepted(21), Some(&(b(3, 1), Value::Noop)));
        assert_eq!(log.last_slot(), 21);
    }
}
