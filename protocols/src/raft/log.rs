//! Raft's durable state — current term, vote, and the log — in a WAL on the node's disk.
//!
//! Every change is a WAL record (encoded with `postcard`):
//! - `HardState { term, vote }` — the latest one wins on recovery;
//! - `Entry(entry)` — puts `entry` at `entry.index`, dropping every entry at or after that
//!   index first (so an overwrite after a conflict needs no separate truncation record);
//! - `Base { index, term }` — every entry up to `index` (whose term is `term`) is in the
//!   state machine and gone from the log: log compaction (§7) and snapshot installation.
//!   It is written with the current hard state and the entries kept after it, synced,
//!   and only then is the WAL truncated before it, so the WAL stays bounded.
//!
//! The WAL guarantees that records survive a crash as a prefix, and `sync` makes all of
//! them durable. Callers append, then call [`DurableLog::sync`] before sending any
//! message that depends on what they appended (persist before you reveal).

use serde::{Deserialize, Serialize};
use sim_core::linearizability::model::{KvOp, KvResult};
use sim_core::{NodeId, OpId};
use storage::vfs::VfsHandle;
use storage::wal::{SyncPolicy, Wal, WalError, WalOptions};

/// A log index (the first entry is 1; 0 means "before the log").
pub type Index = u64;
pub type Term = u64;

/// What an entry asks the state machine to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Appended by a new leader to commit entries of earlier terms (§5.4.2, §8).
    Noop,
    /// A client operation, received by `origin` as operation `op`.
    Client {
        origin: NodeId,
        op: OpId,
        request: KvOp,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub command: Command,
}

/// The WAL record format. It has its own types rather than reusing the in-memory ones'
/// serde derives (which are shaped for JSON: `KvOp` is internally tagged, which a
/// compact binary format cannot decode), so the on-disk format is explicit and stable.
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    HardState { term: Term, vote: Option<u32> },
    Entry(StoredEntry),
    Base { index: Index, term: Term },
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredEntry {
    term: Term,
    index: Index,
    command: StoredCommand,
}

#[derive(Debug, Serialize, Deserialize)]
enum StoredCommand {
    Noop,
    Client {
        origin: u32,
        op: u64,
        request: StoredOp,
    },
}

/// `KvOp`, as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredOp {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    Append {
        key: String,
        value: String,
    },
}

impl From<&KvOp> for StoredOp {
    fn from(op: &KvOp) -> Self {
        match op.clone() {
            KvOp::Get { key } => StoredOp::Get { key },
            KvOp::Put { key, value } => StoredOp::Put { key, value },
            KvOp::Cas { key, expected, new } => StoredOp::Cas { key, expected, new },
            KvOp::Append { key, value } => StoredOp::Append { key, value },
        }
    }
}

impl From<StoredOp> for KvOp {
    fn from(op: StoredOp) -> Self {
        match op {
            StoredOp::Get { key } => KvOp::Get { key },
            StoredOp::Put { key, value } => KvOp::Put { key, value },
            StoredOp::Cas { key, expected, new } => KvOp::Cas { key, expected, new },
            StoredOp::Append { key, value } => KvOp::Append { key, value },
        }
    }
}

/// `KvResult`, as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredResult {
    Get(Option<String>),
    Put,
    Cas(bool),
    Append,
}

impl From<&KvResult> for StoredResult {
    fn from(r: &KvResult) -> Self {
        match r.clone() {
            KvResult::Get(v) => StoredResult::Get(v),
            KvResult::Put => StoredResult::Put,
            KvResult::Cas(swapped) => StoredResult::Cas(swapped),
            KvResult::Append => StoredResult::Append,
        }
    }
}

impl From<StoredResult> for KvResult {
    fn from(r: StoredResult) -> Self {
        match r {
            StoredResult::Get(v) => KvResult::Get(v),
            StoredResult::Put => KvResult::Put,
            StoredResult::Cas(swapped) => KvResult::Cas(swapped),
            StoredResult::Append => KvResult::Append,
        }
    }
}

impl From<&Entry> for StoredEntry {
    fn from(e: &Entry) -> Self {
        StoredEntry {
            term: e.term,
            index: e.index,
            command: match &e.command {
                Command::Noop => StoredCommand::Noop,
                Command::Client {
                    origin,
                    op,
                    request,
                } => StoredCommand::Client {
                    origin: origin.0,
                    op: op.0,
                    request: request.into(),
                },
            },
        }
    }
}

impl From<StoredEntry> for Entry {
    fn from(e: StoredEntry) -> Self {
        Entry {
            term: e.term,
            index: e.index,
            command: match e.command {
                StoredCommand::Noop => Command::Noop,
                StoredCommand::Client {
                    origin,
                    op,
                    request,
                } => Command::Client {
                    origin: NodeId(origin),
                    op: OpId(op),
                    request: request.into(),
                },
            },
        }
    }
}

/// Errors of the durable log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("raft log record {seq} cannot be decoded: {detail}")]
    Decode { seq: u64, detail: String },
    #[error("raft log record {seq} puts entry {index} after a log that ends at {len}")]
    Gap { seq: u64, index: Index, len: u64 },
}

/// The durable state, mirrored in memory.
pub struct DurableLog {
    wal: Wal,
    term: Term,
    vote: Option<NodeId>,
    /// The last index compacted away (in the state machine), and its term.
    base_index: Index,
    base_term: Term,
    /// `entries[i]` has index `base_index + i + 1`.
    entries: Vec<Entry>,
    /// Whether records were appended since the last sync.
    dirty: bool,
}

impl DurableLog {
    /// Opens the log in `dir` of `vfs`, recovering whatever survived.
    pub fn open(
        vfs: VfsHandle,
        dir: &str,
        nonce: u64,
        bugs: storage::bugs::EngineBugs,
    ) -> Result<DurableLog, LogError> {
        storage::vfs::create_dir_all_durable(vfs.as_ref(), dir).map_err(WalError::from)?;
        let options = WalOptions {
            sync_policy: SyncPolicy::Never,
            nonce,
            bugs,
            ..WalOptions::default()
        };
        let wal = Wal::open(vfs, dir, options)?;
        let mut log = DurableLog {
            wal,
            term: 0,
            vote: None,
            base_index: 0,
            base_term: 0,
            entries: Vec::new(),
            dirty: false,
        };
        for record in log.wal.replay(0)? {
            let decoded: Record =
                postcard::from_bytes(&record.payload).map_err(|e| LogError::Decode {
                    seq: record.seq,
                    detail: e.to_string(),
                })?;
            match decoded {
                Record::HardState { term, vote } => {
                    log.term = term;
                    log.vote = vote.map(NodeId);
                }
                Record::Entry(stored) => {
                    let entry = Entry::from(stored);
                    let last = log.last_index();
                    if entry.index <= log.base_index || entry.index > last + 1 {
                        return Err(LogError::Gap {
                            seq: record.seq,
                            index: entry.index,
                            len: last,
                        });
                    }
                    log.entries
                        .truncate((entry.index - log.base_index - 1) as usize);
                    log.entries.push(entry);
                }
                Record::Base { index, term } => {
                    log.base_index = index;
                    log.base_term = term;
                    log.entries.clear();
                }
            }
        }
        Ok(log)
    }

    fn append_record(&mut self, record: &Record) -> Result<(), LogError> {
        let bytes = postcard::to_allocvec(record).map_err(|e| LogError::Decode {
            seq: 0,
            detail: e.to_string(),
        })?;
        self.wal.append(&bytes)?;
        self.dirty = true;
        Ok(())
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// Records a new term and vote (not durable until [`DurableLog::sync`]).
    pub fn set_hard_state(&mut self, term: Term, vote: Option<NodeId>) -> Result<(), LogError> {
        debug_assert!(term >= self.term, "terms never decrease");
        if term == self.term && vote == self.vote {
            return Ok(());
        }
        self.term = term;
        self.vote = vote;
        self.append_record(&Record::HardState {
            term,
            vote: vote.map(|v| v.0),
        })
    }

    pub fn last_index(&self) -> Index {
        self.base_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.base_term, |e| e.term)
    }

    /// The last index compacted into the state machine, and its term (`(0, 0)` if none).
    pub fn base(&self) -> (Index, Term) {
        (self.base_index, self.base_term)
    }

    /// The term of the entry at `index` (the base's term at the base index, 0 for index
    /// 0), or `None` if there is none or it was compacted away.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base_index {
            return Some(self.base_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, unless it is beyond the log or compacted away.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        index
            .checked_sub(self.base_index + 1)
            .and_then(|i| self.entries.get(i as usize))
    }

    /// Entries from `from` (inclusive, after the base), at most `max`.
    pub fn entries_from(&self, from: Index, max: usize) -> Vec<Entry> {
        let start = from.saturating_sub(self.base_index + 1) as usize;
        self.entries.iter().skip(start).take(max).cloned().collect()
    }

    /// The first index of the run of entries with the same term as `index` (not before
    /// the base).
    pub fn first_index_of_term_run(&self, index: Index) -> Index {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first > self.base_index + 1 && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index whose entry has `term`, if any (the base counts).
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term == term)
            .map(|e| e.index)
            .or((self.base_index > 0 && self.base_term == term).then_some(self.base_index))
    }

    /// Puts `entry` at `entry.index`, dropping any entries at or after it.
    pub fn put(&mut self, entry: Entry) -> Result<(), LogError> {
        let last = self.last_index();
        assert!(
            entry.index > self.base_index && entry.index <= last + 1,
            "entry {} put after a log that ends at {last} (base {})",
            entry.index,
            self.base_index
        );
        self.append_record(&Record::Entry(StoredEntry::from(&entry)))?;
        self.entries
            .truncate((entry.index - self.base_index - 1) as usize);
        self.entries.push(entry);
        Ok(())
    }

    /// Makes `(index, term)` the base: every entry up to `index` is in the state machine
    /// (which the caller has synced). Entries after it are kept if the log has the entry
    /// at `index` with `term` (compaction, or a snapshot the log already extends), else
    /// the whole log is dropped (a snapshot that conflicts with it or lies beyond it).
    /// Durable when it returns; the WAL before the new base is then truncated.
    pub fn set_base(&mut self, index: Index, term: Term) -> Result<(), LogError> {
        assert!(index > self.base_index, "the base only moves forward");
        let keep: Vec<Entry> = if self.term_at(index) == Some(term) {
            self.entries_from(index + 1, usize::MAX)
        } else {
            Vec::new()
        };
        let first = self.wal.current_seq() + 1;
        self.append_record(&Record::Base { index, term })?;
        self.append_record(&Record::HardState {
            term: self.term,
            vote: self.vote.map(|v| v.0),
        })?;
        for e in &keep {
            self.append_record(&Record::Entry(StoredEntry::from(e)))?;
        }
        self.sync()?;
        self.base_index = index;
        self.base_term = term;
        self.entries = keep;
        if first > 1 {
            self.wal.truncate(first - 1)?;
        }
        Ok(())
    }

    /// Makes every change so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        if self.dirty {
            self.wal.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Whether there are changes not yet synced.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The log after the base as runs of equal terms: `(term, first index, last index)`.
    pub fn term_runs(&self) -> Vec<(Term, Index, Index)> {
        let mut runs: Vec<(Term, Index, Index)> = Vec::new();
        for e in &self.entries {
            match runs.last_mut() {
                Some((term, _, last)) if *term == e.term => *last = e.index,
                _ => runs.push((e.term, e.index, e.index)),
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sim_core::disk::{DiskConfig, SimDisk};
    use sim_core::rng::fork;
    use storage::vfs::VfsHandle;

    use super::*;

    fn client(index: Index, term: Term, request: KvOp) -> Entry {
        Entry {
            term,
            index,
            command: Command::Client {
                origin: NodeId(2),
                op: OpId(index * 10),
                request,
            },
        }
    }

    #[test]
    fn everything_synced_survives_a_crash_and_reads_back_equal() {
        let disk = SimDisk::new(DiskConfig::default(), fork(3, "disk", 0));
        let vfs: VfsHandle = Arc::new(disk.clone());
        let entries = vec![
            Entry {
                term: 1,
                index: 1,
                command: Command::Noop,
            },
            client(2, 1, KvOp::get("a")),
            client(3, 1, KvOp::put("a", "1")),
            client(4, 2, KvOp::cas("a", Some("1"), "2")),
            client(5, 2, KvOp::cas("b", None, "3")),
            client(6, 2, KvOp::append("a", "[4]")),
        ];
        {
            let mut log = DurableLog::open(vfs.clone(), "raft/log", 1, Default::default()).unwrap();
            log.set_hard_state(2, Some(NodeId(4))).unwrap();
            for e in &entries {
                log.put(e.clone()).unwrap();
            }
            // Overwrite a conflicting suffix, as a follower does.
            log.put(client(5, 3, KvOp::put("c", "5"))).unwrap();
            log.set_hard_state(3, None).unwrap();
            log.sync().unwrap();
        }
        disk.crash();
        let log = DurableLog::open(vfs, "raft/log", 2, Default::default()).unwrap();
        assert_eq!(log.term(), 3);
        assert_eq!(log.vote(), None);
        assert_eq!(log.last_index(), 5);
        for e in &entries[..4] {
            assert_eq!(log.entry(e.index), Some(e));
        }
        assert_eq!(log.entry(5), Some(&client(5, 3, KvOp::put("c", "5"))));
        assert_eq!(log.term_runs(), vec![(1, 1, 3), (2, 4, 4), (3, 5, 5)]);
    }

    #[test]
    fn a_base_compacts_the_log_and_survives_a_crash_with_the_entries_after_it() {
        let disk = SimDisk::new(DiskConfig::default(), fork(5, "disk", 0));
        let vfs: VfsHandle = Arc::new(disk.clone());
        let mut log = DurableLog::open(vfs.clone(), "raft/log", 1, Default::default()).unwrap();
        log.set_hard_state(3, Some(NodeId(1))).unwrap();
        for i in 1..=10 {
            log.put(client(i, 1 + i / 5, KvOp::put("k", i.to_string())))
                .unwrap();
        }
        log.sync().unwrap();
        log.set_base(7, 2).unwrap();
        assert_eq!(log.base(), (7, 2));
        assert_eq!((log.last_index(), log.last_term()), (10, 3));
        assert_eq!(log.term_at(7), Some(2));
        assert_eq!(log.term_at(6), None, "compacted");
        assert_eq!(log.entry(8), Some(&client(8, 2, KvOp::put("k", "8"))));
        assert_eq!(
            log.entries_from(1, 10).len(),
            3,
            "only entries after the base"
        );
        assert_eq!(log.first_index_of_term_run(9), 8);
        assert_eq!(log.last_index_of_term(2), Some(9));
        assert!(
            log.wal.first_seq() > 1,
            "the WAL before the base is truncated"
        );
        log.put(client(11, 3, KvOp::put("k", "11"))).unwrap();
        log.sync().unwrap();
        drop(log);
        disk.crash();
        let mut log = DurableLog::open(vfs.clone(), "raft/log", 2, Default::default()).unwrap();
        assert_eq!((log.term(), log.vote()), (3, Some(NodeId(1))));
        assert_eq!(log.base(), (7, 2));
        assert_eq!(log.last_index(), 11);
        assert_eq!(log.term_runs(), vec![(2, 8, 9), (3, 10, 11)]);
        // A snapshot beyond the log (or conflicting with it) drops every entry.
        log.set_base(20, 4).unwrap();
        assert_eq!((log.last_index(), log.last_term()), (20, 4));
        assert_eq!(log.term_runs(), vec![]);
        log.put(client(21, 4, KvOp::get("k"))).unwrap();
        log.sync().unwrap();
        drop(log);
        disk.crash();
        let log = DurableLog::open(vfs, "raft/log", 3, Default::default()).unwrap();
        assert_eq!(log.base(), (20, 4));
        assert_eq!(log.last_index(), 21);
        assert_eq!(log.term_at(21), Some(4));
    }

    #[test]
    fn unsynced_changes_survive_as_a_prefix_at_most() {
        for seed in 0..40 {
            let disk = SimDisk::new(DiskConfig::default(), fork(seed, "disk", 0));
            let vfs: VfsHandle = Arc::new(disk.clone());
            let mut log =
                DurableLog::open(vfs.clone(), "raft/log", seed, Default::default()).unwrap();
            for i in 1..=3 {
                log.put(client(i, 1, KvOp::put("k", i.to_string())))
                    .unwrap();
            }
            log.sync().unwrap();
            for i in 4..=9 {
                log.put(client(i, 1, KvOp::put("k", i.to_string())))
                    .unwrap();
            }
            drop(log);
            disk.crash();
            let log = DurableLog::open(vfs, "raft/log", seed + 1, Default::default()).unwrap();
            let last = log.last_index();
            assert!((3..=9).contains(&last), "seed {seed}: {last}");
            for i in 1..=last {
                assert_eq!(
                    log.entry(i),
                    Some(&client(i, 1, KvOp::put("k", i.to_string())))
                );
            }
        }
    }
}
