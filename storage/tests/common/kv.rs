//! The shared `KvEngine` conformance and crash suite, generic over an `EngineOpener`:
//! every engine (Bitcask, B+tree, and later the LSM tree) runs the same model-based
//! property test against a `BTreeMap`.
//!
//! - **No crash** (`run_case` with `crash: false`, on `RealFs` or `SimDisk`): after every
//!   operation the engine's whole state (a `get` of every key of the universe, and a full
//!   `scan` when the engine supports it) equals the model's; range scans equal the model's
//!   ranges; a clean close and reopen changes nothing.
//! - **Crashes** (on `SimDisk`, torn and lost sectors on): crashes at sync boundaries
//!   (`SyncCrash`), at random points between operations (`Crash`), *inside* an operation
//!   (`CrashDuring`: the file system "dies" after `budget` more mutating file operations,
//!   then the disk crashes), and after an injected fsync failure (`FsyncFailCrash`).
//!   After each reopen the recovered state must equal the durable state with a *prefix*
//!   of the unsynced write units applied (a batch is one unit). That one check covers the
//!   contract of `storage::kv`: acknowledged-and-synced writes survive, deleted keys
//!   stay deleted, no value appears that was not written, batches are atomic, and
//!   unsynced writes survive only as a prefix.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use sim_core::disk::{DiskConfig, DiskFault, SimDisk};
use sim_core::rng::fork;
use storage::kv::{EngineError, EngineOpener, KvEngine, WriteBatch};
use storage::vfs::{Vfs, VfsError, VfsFile, VfsHandle, VfsOp, VfsResult};

/// The engine's directory in every test.
pub const DIR: &str = "db";
/// Short keys are `0..KEY_UNIVERSE` (at most `SHORT_KEY_MAX` bytes).
pub const KEY_UNIVERSE: u8 = 40;
/// The conformance suite also draws the long keys `KEY_UNIVERSE..ALL_KEYS`.
pub const ALL_KEYS: u8 = KEY_UNIVERSE + LONG_KEY_LENS.len() as u8;
/// The longest short key.
pub const SHORT_KEY_MAX: usize = 23;
/// The lengths of the long keys: with a value clipped to `max_value_bytes +
/// SHORT_KEY_MAX` minus the key (see `write_op_strategy`), their entries come near the
/// engine's maximum entry size (the B+tree's is 330 bytes at 1 KiB pages).
const LONG_KEY_LENS: [usize; 3] = [200, 290, 320];

/// The bytes of key number `k`: varied lengths, shared prefixes; `k >= KEY_UNIVERSE`
/// are long keys.
pub fn key_bytes(k: u8) -> Vec<u8> {
    let mut key = format!("key{:02}", k).into_bytes();
    match LONG_KEY_LENS.get(usize::from(k.saturating_sub(KEY_UNIVERSE))) {
        Some(&len) if k >= KEY_UNIVERSE => key.resize(len, b'~'),
        _ => key.extend(std::iter::repeat_n(b'.', usize::from(k % 7) * 3)),
    }
    key
}

/// Clips a value so that `key + value` stays within `max_value_bytes + SHORT_KEY_MAX`.
fn clip(k: u8, mut v: Vec<u8>, max_value_bytes: usize) -> Vec<u8> {
    let budget = (max_value_bytes + SHORT_KEY_MAX).saturating_sub(key_bytes(k).len());
    v.truncate(budget);
    v
}

/// One write unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Put(u8, Vec<u8>),
    Delete(u8),
    /// `None` deletes.
    Batch(Vec<(u8, Option<Vec<u8>>)>),
}

impl WriteOp {
    fn apply(&self, state: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
        match self {
            WriteOp::Put(k, v) => {
                state.insert(key_bytes(*k), v.clone());
            }
            WriteOp::Delete(k) => {
                state.remove(&key_bytes(*k));
            }
            WriteOp::Batch(ops) => {
                for (k, v) in ops {
                    match v {
                        Some(v) => state.insert(key_bytes(*k), v.clone()),
                        None => state.remove(&key_bytes(*k)),
                    };
                }
            }
        }
    }

    fn run(&self, engine: &mut dyn KvEngine) -> Result<(), EngineError> {
        match self {
            WriteOp::Put(k, v) => engine.put(&key_bytes(*k), v),
            WriteOp::Delete(k) => engine.delete(&key_bytes(*k)),
            WriteOp::Batch(ops) => {
                let mut b = WriteBatch::new();
                for (k, v) in ops {
                    match v {
                        Some(v) => b.put(key_bytes(*k), v.clone()),
                        None => b.delete(key_bytes(*k)),
                    };
                }
                engine.write_batch(&b)
            }
        }
    }
}

/// One step of a test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Write(WriteOp),
    Sync,
    /// A range scan `[a, b)` compared with the model.
    Scan(u8, u8),
    /// Close cleanly (drop) and reopen.
    Reopen,
    /// Crash now (between operations), then reopen.
    Crash,
    /// Sync, then crash: a crash at a sync boundary.
    SyncCrash,
    /// Arm a fail point that kills the file system after `budget` more mutating file
    /// operations, run the writes (and a sync), then crash: a crash inside an operation
    /// (including rotations, merges, splits, checkpoints).
    CrashDuring {
        budget: u16,
        writes: Vec<WriteOp>,
    },
    /// The next fsync of an engine file fails (dropping its dirty data); write, sync,
    /// then crash.
    FsyncFailCrash(WriteOp),
    /// The next fsync of an engine file fails; write, sync, then close and reopen *in
    /// place* (no crash): what the reopened engine shows must be durable, so a crash
    /// right after must not lose it.
    FsyncFailReopen(WriteOp),
}

fn value_strategy(max_value_bytes: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..24),
        2 => proptest::collection::vec(any::<u8>(), 0..=max_value_bytes),
    ]
}

pub fn write_op_strategy(max_value_bytes: usize) -> impl Strategy<Value = WriteOp> + Clone {
    let m = max_value_bytes;
    let key = prop_oneof![12 => 0..KEY_UNIVERSE, 1 => KEY_UNIVERSE..ALL_KEYS];
    let big = prop_oneof![1 => Just(m), 1 => 0..=m];
    prop_oneof![
        6 => (key.clone(), value_strategy(m)).prop_map(move |(k, v)| WriteOp::Put(k, clip(k, v, m))),
        // Entries at the size limit (long keys with the largest value that fits).
        1 => (KEY_UNIVERSE..ALL_KEYS, big).prop_map(move |(k, n)| WriteOp::Put(k, clip(k, vec![b'L'; n], m))),
        3 => key.clone().prop_map(WriteOp::Delete),
        1 => proptest::collection::vec(
            (key, proptest::option::weighted(0.7, value_strategy(m))),
            1..6
        )
        .prop_map(move |ops| {
            WriteOp::Batch(ops.into_iter().map(|(k, v)| (k, v.map(|v| clip(k, v, m)))).collect())
        }),
    ]
}

/// The operations of a case; crash steps only if `crash`.
pub fn op_strategy(crash: bool, max_value_bytes: usize) -> BoxedStrategy<Op> {
    let write = write_op_strategy(max_value_bytes).boxed();
    if crash {
        prop_oneof![
            40 => write.clone().prop_map(Op::Write),
            4 => Just(Op::Sync),
            1 => (0..KEY_UNIVERSE, 0..KEY_UNIVERSE).prop_map(|(a, b)| Op::Scan(a, b)),
            1 => Just(Op::Reopen),
            1 => Just(Op::Crash),
            1 => Just(Op::SyncCrash),
            2 => (0u16..40, proptest::collection::vec(write.clone(), 1..4))
                .prop_map(|(budget, writes)| Op::CrashDuring { budget, writes }),
            1 => write.clone().prop_map(Op::FsyncFailCrash),
            1 => write.prop_map(Op::FsyncFailReopen),
        ]
        .boxed()
    } else {
        prop_oneof![
            30 => write.prop_map(Op::Write),
            4 => Just(Op::Sync),
            3 => (0..KEY_UNIVERSE, 0..KEY_UNIVERSE).prop_map(|(a, b)| Op::Scan(a, b)),
            2 => Just(Op::Reopen),
        ]
        .boxed()
    }
}

/// A `Vfs` wrapper with a fail point: once armed with a budget of N, the N+1-th mutating
/// operation and everything after it fail (as if the process died there).
#[derive(Clone)]
pub struct FailVfs {
    inner: VfsHandle,
    /// Remaining mutating operations; `u64::MAX` is disarmed.
    budget: Arc<AtomicU64>,
}

impl FailVfs {
    pub fn new(inner: VfsHandle) -> FailVfs {
        FailVfs {
            inner,
            budget: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    pub fn arm(&self, budget: u64) {
        self.budget.store(budget, Ordering::SeqCst);
    }

    pub fn disarm(&self) {
        self.budget.store(u64::MAX, Ordering::SeqCst);
    }

    /// The mutating operations left before the fail point trips (`u64::MAX`: disarmed).
    pub fn remaining(&self) -> u64 {
        self.budget.load(Ordering::SeqCst)
    }

    pub fn tripped(&self) -> bool {
        self.budget.load(Ordering::SeqCst) == 0
    }

    fn check(budget: &AtomicU64, path: &str, op: VfsOp, mutating: bool) -> VfsResult<()> {
        let b = budget.load(Ordering::SeqCst);
        if b == u64::MAX {
            return Ok(());
        }
        if b == 0 {
            return Err(VfsError::Io {
                path: path.to_string(),
                op,
                detail: "fail point: the process died".to_string(),
            });
        }
        if mutating {
            budget.store(b - 1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn wrap(&self, file: Box<dyn VfsFile>) -> Box<dyn VfsFile> {
        Box::new(FailFile {
            inner: file,
            budget: self.budget.clone(),
        })
    }
}

impl Vfs for FailVfs {
    fn create(&self, path: &str) -> VfsResult<Box<dyn VfsFile>> {
        Self::check(&self.budget, path, VfsOp::Create, true)?;
        Ok(self.wrap(self.inner.create(path)?))
    }
    fn open(&self, path: &str) -> VfsResult<Box<dyn VfsFile>> {
        Self::check(&self.budget, path, VfsOp::Open, false)?;
        Ok(self.wrap(self.inner.open(path)?))
    }
    fn exists(&self, path: &str) -> VfsResult<bool> {
        Self::check(&self.budget, path, VfsOp::Open, false)?;
        self.inner.exists(path)
    }
    fn list(&self, dir: &str) -> VfsResult<Vec<String>> {
        Self::check(&self.budget, dir, VfsOp::List, false)?;
        self.inner.list(dir)
    }
    fn rename(&self, from: &str, to: &str) -> VfsResult<()> {
        Self::check(&self.budget, from, VfsOp::Rename, true)?;
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &str) -> VfsResult<()> {
        Self::check(&self.budget, path, VfsOp::Remove, true)?;
        self.inner.remove(path)
    }
    fn create_dir_all(&self, dir: &str) -> VfsResult<()> {
        Self::check(&self.budget, dir, VfsOp::CreateDir, true)?;
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &str) -> VfsResult<()> {
        Self::check(&self.budget, dir, VfsOp::SyncDir, true)?;
        self.inner.sync_dir(dir)
    }
}

struct FailFile {
    inner: Box<dyn VfsFile>,
    budget: Arc<AtomicU64>,
}

impl VfsFile for FailFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        FailVfs::check(&self.budget, self.inner.path(), VfsOp::Read, false)?;
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> VfsResult<()> {
        FailVfs::check(&self.budget, self.inner.path(), VfsOp::Write, true)?;
        self.inner.write_at(offset, data)
    }
    fn append(&mut self, data: &[u8]) -> VfsResult<u64> {
        FailVfs::check(&self.budget, self.inner.path(), VfsOp::Append, true)?;
        self.inner.append(data)
    }
    fn len(&self) -> VfsResult<u64> {
        FailVfs::check(&self.budget, self.inner.path(), VfsOp::Len, false)?;
        self.inner.len()
    }
    fn truncate(&mut self, len: u64) -> VfsResult<()> {
        FailVfs::check(&self.budget, self.inner.path(), VfsOp::Truncate, true)?;
        self.inner.truncate(len)
    }
    fn sync(&mut self) -> VfsResult<()> {
        FailVfs::check(&self.budget, self.inner.path(), VfsOp::Sync, true)?;
        self.inner.sync()
    }
    fn path(&self) -> &str {
        self.inner.path()
    }
}

/// The model: the durable state and the write units since (each may or may not
/// survive a crash, but only as a prefix).
#[derive(Debug, Default)]
pub struct Model {
    pub durable: BTreeMap<Vec<u8>, Vec<u8>>,
    pub pending: Vec<WriteOp>,
}

impl Model {
    pub fn current(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut s = self.durable.clone();
        for op in &self.pending {
            op.apply(&mut s);
        }
        s
    }

    fn make_durable(&mut self) {
        self.durable = self.current();
        self.pending.clear();
    }

    /// The number of pending units whose prefix gives `actual`, if any.
    fn matching_prefix(&self, actual: &BTreeMap<Vec<u8>, Vec<u8>>) -> Option<usize> {
        let mut s = self.durable.clone();
        if &s == actual {
            return Some(0);
        }
        for (i, op) in self.pending.iter().enumerate() {
            op.apply(&mut s);
            if &s == actual {
                return Some(i + 1);
            }
        }
        None
    }
}

/// Reads the engine's whole state: `get` of every key of the universe, checked against a
/// full scan if the engine supports scans.
pub fn read_state(engine: &dyn KvEngine) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let mut state = BTreeMap::new();
    for k in 0..ALL_KEYS {
        let key = key_bytes(k);
        match engine.get(&key) {
            Ok(Some(v)) => {
                state.insert(key, v);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("get {:?}: {e}", String::from_utf8_lossy(&key))),
        }
    }
    match engine.scan(Bound::Unbounded, Bound::Unbounded) {
        Ok(iter) => {
            let scanned: Result<BTreeMap<_, _>, _> = iter.collect();
            let scanned = scanned.map_err(|e| format!("scan: {e}"))?;
            if scanned != state {
                return Err(format!(
                    "full scan disagrees with gets: scan has {} keys, gets {}",
                    scanned.len(),
                    state.len()
                ));
            }
        }
        Err(EngineError::Unsupported { .. }) => {}
        Err(e) => return Err(format!("scan: {e}")),
    }
    Ok(state)
}

fn describe(state: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    state
        .iter()
        .map(|(k, v)| format!("{}={}b", String::from_utf8_lossy(k), v.len()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The environment of one case: a `SimDisk` (crashes possible) or the real file system.
pub enum CaseDisk {
    Sim(SimDisk),
    Real(tempfile::TempDir),
}

/// The default crash model for the suite: keep, tear or lose each unsynced sector with
/// probability 1/3, keep unsynced directory operations with probability 1/2, 128-byte
/// sectors (small, so records and pages tear in many places).
pub fn crash_disk_config() -> DiskConfig {
    DiskConfig {
        sector_size: 128,
        ..DiskConfig::default()
    }
}

struct Runner<'a> {
    opener: &'a dyn EngineOpener,
    disk: &'a CaseDisk,
    fail: FailVfs,
    engine: Option<Box<dyn KvEngine>>,
    model: Model,
    every_write: bool,
    log: Vec<String>,
}

impl Runner<'_> {
    fn fail(&self, msg: String) -> TestCaseError {
        let tail: Vec<&String> = self.log.iter().rev().take(12).collect();
        TestCaseError::fail(format!(
            "[{}] {msg}\nlast steps (newest first): {tail:#?}",
            self.opener.name()
        ))
    }

    fn open(&mut self) -> Result<(), TestCaseError> {
        self.engine = None;
        let mut last_err = None;
        // An open can hit a fault left armed (an injected fsync failure not consumed yet):
        // crash and retry, as a restarted node would.
        for _ in 0..3 {
            match self.opener.open(Arc::new(self.fail.clone()), DIR) {
                Ok(e) => {
                    self.engine = Some(e);
                    return Ok(());
                }
                Err(e @ EngineError::Vfs(_)) if matches!(self.disk, CaseDisk::Sim(_)) => {
                    last_err = Some(e);
                    self.crash_disk();
                }
                Err(e) => return Err(self.fail(format!("open failed: {e}"))),
            }
        }
        Err(self.fail(format!("open kept failing: {last_err:?}")))
    }

    fn crash_disk(&mut self) {
        self.engine = None;
        if let CaseDisk::Sim(disk) = self.disk {
            disk.crash();
        }
    }

    fn engine(&mut self) -> &mut dyn KvEngine {
        self.engine.as_deref_mut().expect("engine is open")
    }

    /// Runs a write unit; the model records it as pending (durable at once if it
    /// succeeded under a sync-every-write policy). A failed write may or may not have
    /// happened: it stays pending (and the caller crashes before going on).
    fn write(&mut self, op: &WriteOp) -> Result<(), EngineError> {
        let result = op.run(self.engine());
        self.model.pending.push(op.clone());
        if result.is_ok() && self.every_write {
            self.model.make_durable();
        }
        result
    }

    fn sync(&mut self) -> Result<(), EngineError> {
        let result = self.engine().sync();
        if result.is_ok() {
            self.model.make_durable();
        }
        result
    }

    fn check_exact(&mut self) -> Result<(), TestCaseError> {
        let engine = self.engine.as_deref().expect("engine is open");
        let actual = read_state(engine).map_err(|e| self.fail(e))?;
        let expected = self.model.current();
        if actual != expected {
            return Err(self.fail(format!(
                "state differs from the model\n  actual:   {}\n  expected: {}",
                describe(&actual),
                describe(&expected)
            )));
        }
        Ok(())
    }

    /// After a crash and reopen: the state must be the durable state plus a prefix of
    /// the pending units.
    fn check_after_crash(&mut self) -> Result<(), TestCaseError> {
        self.fail.disarm();
        self.open()?;
        let engine = self.engine.as_deref().expect("engine is open");
        let actual = read_state(engine).map_err(|e| self.fail(e))?;
        match self.model.matching_prefix(&actual) {
            Some(_) => {
                self.model.durable = actual;
                self.model.pending.clear();
                Ok(())
            }
            None => Err(self.fail(format!(
                "recovered state is not the durable state plus a prefix of the {} unsynced units\n  actual:  {}\n  durable: {}\n  pending: {:?}",
                self.model.pending.len(),
                describe(&actual),
                describe(&self.model.durable),
                self.model.pending
            ))),
        }
    }

    fn scan(&mut self, a: u8, b: u8) -> Result<(), TestCaseError> {
        let (lo, hi) = (key_bytes(a.min(b)), key_bytes(a.max(b)));
        let expected: Vec<(Vec<u8>, Vec<u8>)> = self
            .model
            .current()
            .range::<[u8], _>((Bound::Included(&lo[..]), Bound::Excluded(&hi[..])))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let engine = self.engine.as_deref().expect("engine is open");
        match engine.scan(Bound::Included(&lo), Bound::Excluded(&hi)) {
            Ok(iter) => {
                let got: Result<Vec<_>, _> = iter.collect();
                let got = got.map_err(|e| self.fail(format!("scan: {e}")))?;
                if got != expected {
                    return Err(self.fail(format!(
                        "scan [{a}, {b}) returned {} entries, expected {}",
                        got.len(),
                        expected.len()
                    )));
                }
                // Crossed bounds are an empty scan, never a panic.
                let crossed = engine.scan(Bound::Excluded(&hi), Bound::Included(&lo));
                if let Ok(iter) = crossed
                    && iter.count() != 0
                    && lo != hi
                {
                    return Err(self.fail("a crossed range returned entries".into()));
                }
                Ok(())
            }
            Err(EngineError::Unsupported { .. }) => Ok(()),
            Err(e) => Err(self.fail(format!("scan: {e}"))),
        }
    }

    fn step(&mut self, op: &Op, crash: bool) -> Result<(), TestCaseError> {
        self.log.push(format!("{op:?}"));
        match op {
            Op::Write(w) => {
                if let Err(e) = self.write(w) {
                    return Err(self.fail(format!("write failed without a fault: {e}")));
                }
                self.check_exact()
            }
            Op::Sync => {
                if let Err(e) = self.sync() {
                    return Err(self.fail(format!("sync failed without a fault: {e}")));
                }
                self.check_exact()
            }
            Op::Scan(a, b) => self.scan(*a, *b),
            Op::Reopen => {
                self.engine = None;
                self.open()?;
                self.check_exact()
            }
            Op::Crash
            | Op::SyncCrash
            | Op::CrashDuring { .. }
            | Op::FsyncFailCrash(_)
            | Op::FsyncFailReopen(_)
                if !crash =>
            {
                Ok(())
            }
            Op::Crash => {
                self.crash_disk();
                self.check_after_crash()
            }
            Op::SyncCrash => {
                if let Err(e) = self.sync() {
                    return Err(self.fail(format!("sync failed without a fault: {e}")));
                }
                self.crash_disk();
                self.check_after_crash()
            }
            Op::CrashDuring { budget, writes } => {
                self.fail.arm(u64::from(*budget));
                let mut ok = true;
                for w in writes {
                    if self.write(w).is_err() {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    let _ = self.sync();
                }
                self.crash_disk();
                self.check_after_crash()
            }
            Op::FsyncFailCrash(w) => {
                if let CaseDisk::Sim(disk) = self.disk {
                    disk.inject(DiskFault::FsyncFail {
                        path_prefix: DIR.to_string(),
                    });
                }
                if self.write(w).is_ok() {
                    let _ = self.sync();
                }
                self.crash_disk();
                self.check_after_crash()
            }
            Op::FsyncFailReopen(w) => {
                if let CaseDisk::Sim(disk) = self.disk {
                    disk.inject(DiskFault::FsyncFail {
                        path_prefix: DIR.to_string(),
                    });
                }
                if self.write(w).is_ok() {
                    let _ = self.sync();
                }
                // Close and reopen without a crash: the reopened state is a prefix...
                self.engine = None;
                self.check_after_crash()?;
                // ...and, once open, durable: a crash now must give the same state.
                self.crash_disk();
                self.check_after_crash()
            }
        }
    }
}

/// Runs one case: opens the engine on `disk`, runs `ops`, checking after each one.
/// `every_write`: the engine syncs every write (so every acknowledged write is durable).
pub fn run_case(
    opener: &dyn EngineOpener,
    disk: &CaseDisk,
    every_write: bool,
    ops: &[Op],
    crash: bool,
) -> Result<(), TestCaseError> {
    let vfs: VfsHandle = match disk {
        CaseDisk::Sim(d) => d.handle(),
        CaseDisk::Real(dir) => Arc::new(storage::vfs::real::RealFs::new(dir.path().to_path_buf())),
    };
    let mut runner = Runner {
        opener,
        disk,
        fail: FailVfs::new(vfs),
        engine: None,
        model: Model::default(),
        every_write,
        log: Vec::new(),
    };
    runner.open()?;
    for op in ops {
        runner.step(op, crash)?;
    }
    // Finally: a crash right after a sync loses nothing.
    if crash {
        runner.step(&Op::SyncCrash, crash)?;
    } else {
        runner.step(&Op::Reopen, crash)?;
    }
    Ok(())
}

/// A fresh simulated disk for a case.
pub fn sim_disk(seed: u64) -> CaseDisk {
    CaseDisk::Sim(
        SimDisk::try_new(crash_disk_config(), fork(seed, "disk", 0)).expect("valid config"),
    )
}

/// A fresh temporary directory on the real file system.
pub fn real_disk() -> CaseDisk {
    CaseDisk::Real(tempfile::tempdir().expect("tempdir"))
}

/// Every entry, by a full scan, each checked with a `get`.
pub fn scan_all(engine: &dyn KvEngine) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let iter = engine
        .scan(Bound::Unbounded, Bound::Unbounded)
        .map_err(|e| format!("scan: {e}"))?;
    let mut state = BTreeMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| format!("scan: {e}"))?;
        let got = engine.get(&k).map_err(|e| format!("get: {e}"))?;
        if got.as_ref() != Some(&v) {
            return Err(format!("get {k:?} disagrees with the scan"));
        }
        state.insert(k, v);
    }
    Ok(state)
}
