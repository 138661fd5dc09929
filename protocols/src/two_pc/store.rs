//! Durable state of a 2PC node, in the scenario's `KvEngine` on the node's disk.
//!
//! Each node keeps two engines of the scenario's kind, one per role, in their own
//! directories: the coordinator's log (`<dir>/log`) and the participant's shard
//! (`<dir>/shard`). Keeping them apart means a participant's syncs never make a
//! coordinator record durable by accident, so the coordinator's own forces are what
//! count. Keys are text, so a prefix scan finds a record family.
//!
//! Coordinator log:
//!
//! - `c/epoch` — the coordinator's epoch (4 bytes LE), raised and synced at every start,
//!   so transaction ids `(coordinator, epoch, seq)` are never reused.
//! - `d/<txn>` — the coordinator's commit decision record (the writers it must reach),
//!   forced before the decision is sent or revealed. Deleting it is the END record,
//!   written once every writer has acknowledged. Aborts are never logged (presumed abort).
//!
//! Participant shard:
//!
//! - `p/<txn>` — a participant's PREPARED record (coordinator, writers, the
//!   transaction's writes and the epoch that executed it), forced before it votes yes.
//! - `o/<txn>` — a participant's outcome (1 = commit, 0 = abort), written in the same
//!   batch that applies or discards the prepared writes, or as a tombstone when it aborts
//!   a transaction it never voted for (so a late PREPARE is refused).
//! - `a/<account>` — an account's balance and version (16 bytes LE).
//! - `l/last` — the last prepared transaction this shard settled (id, outcome, writes),
//!   written in the settling batch itself. A crash point inside the settle can leave the
//!   batch durable while the process died before announcing it (the sync failed, the
//!   `Decided` observation never happened); a restart announces it again from here.

use serde::{Deserialize, Serialize};
use storage::kv::{EngineError, EngineOpener, KvEngine, WriteBatch};
use storage::vfs::VfsHandle;

use super::{Account, Balance, TxnId, Write};

const EPOCH_KEY: &[u8] = b"c/epoch";
const LAST_SETTLED_KEY: &[u8] = b"l/last";

/// The last prepared transaction a shard settled, kept in the settling batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SettledRecord {
    pub txn: TxnId,
    pub commit: bool,
    pub writes: Vec<Write>,
}

/// A participant's PREPARED record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PreparedRecord {
    pub coordinator: u32,
    pub writers: Vec<u32>,
    pub writes: Vec<Write>,
    /// The participant's epoch when it executed the transaction (its YES votes carry it).
    pub epoch: u32,
}

pub(crate) struct Store {
    /// The coordinator's log.
    log: Box<dyn KvEngine>,
    /// The participant's shard: PREPARED records, outcomes and balances.
    engine: Box<dyn KvEngine>,
    dir: String,
}

fn txn_key(prefix: &str, txn: TxnId) -> Vec<u8> {
    format!(
        "{prefix}/{:04}.{:010}.{:010}",
        txn.coord.0, txn.epoch, txn.seq
    )
    .into_bytes()
}

fn parse_txn(key: &[u8], prefix_len: usize) -> Option<TxnId> {
    let text = std::str::from_utf8(key.get(prefix_len..)?).ok()?;
    let mut parts = text.split('.');
    let coord = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(TxnId {
        coord: sim_core::NodeId(coord),
        epoch,
        seq,
    })
}

fn account_key(account: Account) -> Vec<u8> {
    format!("a/{account:06}").into_bytes()
}

impl Store {
    pub(crate) fn open(
        opener: &dyn EngineOpener,
        vfs: VfsHandle,
        dir: &str,
    ) -> Result<Store, EngineError> {
        let log_dir = format!("{dir}/log");
        let shard_dir = format!("{dir}/shard");
        storage::vfs::create_dir_all_durable(vfs.as_ref(), &log_dir)?;
        storage::vfs::create_dir_all_durable(vfs.as_ref(), &shard_dir)?;
        let log = opener.open(vfs.clone(), &log_dir)?;
        let engine = opener.open(vfs, &shard_dir)?;
        Ok(Store {
            log,
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

    /// Raises the epoch and syncs it; returns the new epoch.
    pub(crate) fn next_epoch(&mut self) -> Result<u32, EngineError> {
        let current = match self.log.get(EPOCH_KEY)? {
            None => 0,
            Some(bytes) => {
                let array: [u8; 4] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.corrupt(format!("epoch has {} bytes, not 4", bytes.len())))?;
                u32::from_le_bytes(array)
            }
        };
        let next = current + 1;
        self.log.put(EPOCH_KEY, &next.to_le_bytes())?;
        self.log.sync()?;
        Ok(next)
    }

    /// An account's balance and version (`initial`, 0 if never written).
    pub(crate) fn account(
        &self,
        account: Account,
        initial: Balance,
    ) -> Result<(Balance, u64), EngineError> {
        match self.engine.get(&account_key(account))? {
            None => Ok((initial, 0)),
            Some(bytes) if bytes.len() == 16 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&bytes[..8]);
                let mut v = [0u8; 8];
                v.copy_from_slice(&bytes[8..]);
                Ok((i64::from_le_bytes(b), u64::from_le_bytes(v)))
            }
            Some(bytes) => Err(self.corrupt(format!(
                "account {account} has {} bytes, not 16",
                bytes.len()
            ))),
        }
    }

    /// Forces the coordinator's commit record.
    pub(crate) fn force_decision(
        &mut self,
        txn: TxnId,
        writers: &[u32],
        sync: bool,
    ) -> Result<(), EngineError> {
        let bytes = postcard::to_stdvec(writers).map_err(|e| EngineError::Other(e.to_string()))?;
        self.log.put(&txn_key("d", txn), &bytes)?;
        if sync {
            self.log.sync()?;
        }
        Ok(())
    }

    /// The END record: the decision is forgotten (not forced: a lost END only means the
    /// decision is re-sent after a restart).
    pub(crate) fn end(&mut self, txn: TxnId) -> Result<(), EngineError> {
        self.log.delete(&txn_key("d", txn))
    }

    /// Every commit decision not yet ended.
    pub(crate) fn decisions(&self) -> Result<Vec<(TxnId, Vec<u32>)>, EngineError> {
        self.scan_prefix(&*self.log, "d/", |bytes| {
            postcard::from_bytes::<Vec<u32>>(bytes).ok()
        })
    }

    /// Forces a PREPARED record.
    pub(crate) fn force_prepared(
        &mut self,
        txn: TxnId,
        record: &PreparedRecord,
    ) -> Result<(), EngineError> {
        let bytes = postcard::to_stdvec(record).map_err(|e| EngineError::Other(e.to_string()))?;
        self.engine.put(&txn_key("p", txn), &bytes)?;
        self.engine.sync()
    }

    /// Every PREPARED record (the transactions in doubt).
    pub(crate) fn prepared(&self) -> Result<Vec<(TxnId, PreparedRecord)>, EngineError> {
        self.scan_prefix(&*self.engine, "p/", |bytes| {
            postcard::from_bytes(bytes).ok()
        })
    }

    /// A participant's recorded outcome of `txn`, if any.
    pub(crate) fn outcome(&self, txn: TxnId) -> Result<Option<bool>, EngineError> {
        match self.engine.get(&txn_key("o", txn))? {
            None => Ok(None),
            Some(bytes) if bytes == [1] => Ok(Some(true)),
            Some(bytes) if bytes == [0] => Ok(Some(false)),
            Some(bytes) => Err(self.corrupt(format!("outcome of {txn:?} is {bytes:?}"))),
        }
    }

    /// The last prepared transaction this shard settled, if any.
    pub(crate) fn last_settled(&self) -> Result<Option<SettledRecord>, EngineError> {
        match self.engine.get(LAST_SETTLED_KEY)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| self.corrupt(format!("bad last-settled record: {e}"))),
        }
    }

    /// Settles `txn` at a participant in one synced batch: on commit its writes are
    /// applied; the PREPARED record (if any) goes; the outcome is recorded. `prepared`:
    /// the transaction was prepared here, and the batch also records it as the last one
    /// settled (see `l/last`).
    pub(crate) fn settle(
        &mut self,
        txn: TxnId,
        commit: bool,
        writes: &[Write],
        prepared: bool,
    ) -> Result<(), EngineError> {
        let mut batch = WriteBatch::new();
        if prepared {
            let record = SettledRecord {
                txn,
                commit,
                writes: if commit { writes.to_vec() } else { Vec::new() },
            };
            let bytes =
                postcard::to_stdvec(&record).map_err(|e| EngineError::Other(e.to_string()))?;
            batch.put(LAST_SETTLED_KEY.to_vec(), bytes);
        }
        if commit {
            for w in writes {
                let mut value = w.balance.to_le_bytes().to_vec();
                value.extend_from_slice(&w.version.to_le_bytes());
                batch.put(account_key(w.account), value);
            }
        }
        batch.delete(txn_key("p", txn));
        batch.put(txn_key("o", txn), vec![u8::from(commit)]);
        self.engine.write_batch(&batch)?;
        self.engine.sync()
    }

    fn scan_prefix<T>(
        &self,
        engine: &dyn KvEngine,
        prefix: &str,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<(TxnId, T)>, EngineError> {
        use std::ops::Bound;
        let start = prefix.as_bytes().to_vec();
        let mut end = start.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut out = Vec::new();
        for entry in engine.scan(Bound::Included(&start), Bound::Excluded(&end))? {
            let (key, value) = entry?;
            let txn = parse_txn(&key, prefix.len())
                .ok_or_else(|| self.corrupt(format!("bad key {key:?}")))?;
            let record = decode(&value).ok_or_else(|| {
                self.corrupt(format!(
                    "bad record under {}",
                    String::from_utf8_lossy(&key)
                ))
            })?;
            out.push((txn, record));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_keys_round_trip_and_sort_by_id() {
        let a = TxnId {
            coord: sim_core::NodeId(2),
            epoch: 3,
            seq: 41,
        };
        let b = TxnId { seq: 400, ..a };
        let ka = txn_key("p", a);
        let kb = txn_key("p", b);
        assert_eq!(parse_txn(&ka, 2), Some(a));
        assert_eq!(parse_txn(&kb, 2), Some(b));
        assert!(ka < kb);
        assert_eq!(parse_txn(b"p/12.x.3", 2), None);
    }
}
