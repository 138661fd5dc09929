//! Model-based crash consistency of the WAL.
//!
//! Random sequences of appends, `append_many`, batches, syncs, checkpoints, prefix and
//! suffix truncations, injected fsync failures, clean reopens and crashes run against a
//! model of the log. After every recovery:
//!
//! - every record the WAL reported durable (`durable_seq`) is recovered, in order;
//! - every recovered record is exactly the one written at that sequence number (nothing
//!   is returned that was never written, nothing stale);
//! - recovered sequence numbers are contiguous from the truncation point;
//! - the recovered log ends at a unit boundary (no partial batch);
//! - a clean reopen (no crash) recovers everything.
//!
//! The same model runs on a `SimDisk` (crashes lose, keep and tear unsynced sectors and
//! drop unsynced directory operations) and on the real file system (where a "crash" is a
//! process restart).
//!
//! Case counts are CI's defaults; `PROPTEST_CASES` overrides them for long hunts (see
//! `docs/storage/wal.md`).

mod common;

use common::{Env, RealEnv, SimEnv, payload};
use proptest::prelude::*;
use sim_core::disk::{DiskConfig, DiskFault};
use storage::bugs::{EngineBug, EngineBugs};
use storage::vfs::VfsHandle;
use storage::wal::{Record, RecordKind, RecoveryMode, SyncPolicy, Wal, WalError, WalOptions};

const DIR: &str = "wal";

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    AppendMany(u8),
    Batch(u8),
    Sync,
    Checkpoint,
    /// Truncate up to a point chosen by the fraction (possibly beyond the end).
    Truncate(u8),
    /// Truncate after a point chosen by the fraction; `true` picks a point inside a batch.
    TruncateAfter(u8, bool),
    Crash,
    Reopen,
    FsyncFail,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0usize..150).prop_map(Op::Append),
        3 => (1u8..6).prop_map(Op::AppendMany),
        4 => (1u8..6).prop_map(Op::Batch),
        3 => Just(Op::Sync),
        1 => Just(Op::Checkpoint),
        1 => any::<u8>().prop_map(Op::Truncate),
        2 => (any::<u8>(), prop::bool::weighted(0.2)).prop_map(|(f, b)| Op::TruncateAfter(f, b)),
        2 => Just(Op::Crash),
        1 => Just(Op::Reopen),
        1 => Just(Op::FsyncFail),
    ]
}

fn options() -> impl Strategy<Value = WalOptions> {
    let policy = prop_oneof![
        Just(SyncPolicy::EveryWrite),
        Just(SyncPolicy::EveryN {
            records: 3,
            bytes: 0
        }),
        Just(SyncPolicy::EveryN {
            records: 0,
            bytes: 400
        }),
        Just(SyncPolicy::Never),
    ];
    let segment = prop_oneof![Just(128u64), Just(300), Just(1024), Just(1 << 20)];
    (policy, segment, any::<u64>()).prop_map(|(sync_policy, max_segment_bytes, nonce)| WalOptions {
        sync_policy,
        max_segment_bytes,
        nonce,
        ..WalOptions::default()
    })
}

fn disk_config() -> impl Strategy<Value = DiskConfig> {
    let sector = prop_oneof![Just(16usize), Just(64), Just(512), Just(4096)];
    let crash = prop_oneof![
        Just((1.0 / 3.0, 1.0 / 3.0)),
        Just((0.0, 0.0)),
        Just((0.0, 1.0)),
        Just((0.8, 0.1)),
    ];
    let dir_keep = prop_oneof![Just(0.0), Just(0.5), Just(1.0)];
    (sector, crash, dir_keep).prop_map(|(sector_size, (keep, torn), dir)| DiskConfig {
        sector_size,
        crash_keep_probability: keep,
        crash_torn_probability: torn,
        crash_keep_dir_op_probability: dir,
        ..DiskConfig::default()
    })
}

/// A wider mix for the second property: more crashes and fsync failures, longer runs.
fn op_wide() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0usize..150).prop_map(Op::Append),
        3 => (1u8..6).prop_map(Op::AppendMany),
        4 => (1u8..6).prop_map(Op::Batch),
        3 => Just(Op::Sync),
        1 => Just(Op::Checkpoint),
        1 => any::<u8>().prop_map(Op::Truncate),
        2 => (any::<u8>(), prop::bool::weighted(0.2)).prop_map(|(f, b)| Op::TruncateAfter(f, b)),
        3 => Just(Op::Crash),
        1 => Just(Op::Reopen),
        3 => Just(Op::FsyncFail),
    ]
}

/// Both recovery modes (a crash alone is never corruption, so skip mode must recover
/// exactly what strict mode does), a constant nonce (stale bytes of a reused segment
/// number then carry the same salt), and one more segment size.
fn options_wide() -> impl Strategy<Value = WalOptions> {
    let mode = prop_oneof![
        Just(RecoveryMode::Strict),
        Just(RecoveryMode::SkipCorrupted)
    ];
    let nonce = prop_oneof![Just(0u64), any::<u64>()];
    let segment = prop_oneof![
        Just(128u64),
        Just(200),
        Just(300),
        Just(1024),
        Just(1 << 20)
    ];
    (options(), segment, nonce, mode).prop_map(|(o, max_segment_bytes, nonce, recovery)| {
        WalOptions {
            max_segment_bytes,
            nonce,
            recovery,
            ..o
        }
    })
}

/// More sector sizes (16 B to 8 KiB, sub-block tearing above 512) and crash mixes.
fn disk_config_wide() -> impl Strategy<Value = DiskConfig> {
    let sector = prop_oneof![
        Just(16usize),
        Just(32),
        Just(64),
        Just(512),
        Just(1024),
        Just(4096),
        Just(8192)
    ];
    let crash = prop_oneof![
        Just((1.0 / 3.0, 1.0 / 3.0)),
        Just((0.0, 0.0)),
        Just((0.0, 1.0)),
        Just((0.8, 0.1)),
        Just((0.5, 0.5)),
        Just((1.0, 0.0)),
        Just((0.0, 0.5)),
        Just((0.9, 0.0)),
    ];
    let dir_keep = prop_oneof![Just(0.0), Just(0.5), Just(0.9), Just(1.0)];
    (sector, crash, dir_keep).prop_map(|(sector_size, (keep, torn), dir)| DiskConfig {
        sector_size,
        crash_keep_probability: keep,
        crash_torn_probability: torn,
        crash_keep_dir_op_probability: dir,
        ..DiskConfig::default()
    })
}

#[derive(Debug, Clone)]
struct MRec {
    kind: RecordKind,
    payload: Vec<u8>,
    starts_unit: bool,
    ends_unit: bool,
}

/// The model: every record written and not discarded, by sequence number (`log[s - 1]`).
struct Model {
    log: Vec<MRec>,
    low: u64,
    durable: u64,
    next_id: u64,
}

impl Model {
    fn current(&self) -> u64 {
        self.log.len() as u64
    }

    fn push(&mut self, kind: RecordKind, payload: Vec<u8>, starts_unit: bool, ends_unit: bool) {
        self.log.push(MRec {
            kind,
            payload,
            starts_unit,
            ends_unit,
        });
    }

    fn payload(&mut self, len: usize) -> Vec<u8> {
        self.next_id += 1;
        payload(self.next_id, len)
    }

    fn last_checkpoint(&self) -> Option<u64> {
        self.log
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == RecordKind::Checkpoint)
            .map(|(i, _)| i as u64 + 1)
            .max()
    }
}

fn open_retrying(vfs: &VfsHandle, options: &WalOptions) -> Result<Wal, TestCaseError> {
    // An armed fsync failure may hit the sync that recovery does; each fires once.
    let mut last = None;
    for _ in 0..100 {
        match Wal::open(vfs.clone(), DIR, options.clone()) {
            Ok(wal) => return Ok(wal),
            Err(e @ WalError::Vfs(_)) => last = Some(e),
            Err(e) => return Err(TestCaseError::fail(format!("recovery failed: {e}"))),
        }
    }
    Err(TestCaseError::fail(format!("recovery failed: {last:?}")))
}

/// Checks a freshly recovered WAL against the model, then brings the model in line.
fn verify(wal: &Wal, model: &mut Model, clean: bool) -> Result<(), TestCaseError> {
    let recs = wal
        .records(0)
        .map_err(|e| TestCaseError::fail(format!("records: {e}")))?;
    prop_assert_eq!(wal.first_seq(), model.low + 1, "truncation point");
    let expected = &model.log[model.low as usize..];
    prop_assert!(
        recs.len() <= expected.len(),
        "recovered {} records, only {} written",
        recs.len(),
        expected.len()
    );
    for (i, (got, exp)) in recs.iter().zip(expected).enumerate() {
        let seq = model.low + 1 + i as u64;
        prop_assert_eq!(got.seq, seq, "contiguous sequence numbers");
        prop_assert_eq!(got.kind, exp.kind, "kind of {}", seq);
        prop_assert_eq!(&got.payload, &exp.payload, "payload of {}", seq);
    }
    let r = model.low + recs.len() as u64;
    prop_assert!(
        r >= model.durable,
        "durable records lost: recovered up to {}, durable {}",
        r,
        model.durable
    );
    if !recs.is_empty() {
        prop_assert!(
            expected[recs.len() - 1].ends_unit,
            "ends inside a batch at {}",
            r
        );
    }
    if clean {
        prop_assert_eq!(recs.len(), expected.len(), "a clean reopen loses nothing");
    }
    prop_assert_eq!(wal.current_seq(), r);
    prop_assert_eq!(wal.durable_seq(), r);
    let replayed = wal
        .replay(0)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let users: Vec<Record> = recs
        .into_iter()
        .filter(|r| matches!(r.kind, RecordKind::Data | RecordKind::Batch))
        .collect();
    prop_assert_eq!(replayed, users);
    model.log.truncate(r as usize);
    model.durable = r;
    prop_assert_eq!(wal.last_checkpoint(), model.last_checkpoint());
    Ok(())
}

fn crash_and_recover(
    env: &dyn Env,
    vfs: &VfsHandle,
    options: &WalOptions,
    model: &mut Model,
) -> Result<Wal, TestCaseError> {
    env.crash();
    let wal = open_retrying(vfs, options)?;
    verify(&wal, model, false)?;
    Ok(wal)
}

/// Applies an error of an operation to the model.
fn on_error(e: WalError, model: &mut Model) -> Result<(), TestCaseError> {
    match e {
        WalError::SyncFailed { durable_seq, .. } => {
            prop_assert!(durable_seq <= model.current());
            model.log.truncate(durable_seq as usize);
            Ok(())
        }
        // An injected fsync failure while creating a segment or the metadata file:
        // the operation did not happen.
        WalError::Vfs(_) => Ok(()),
        e => Err(TestCaseError::fail(format!("unexpected error: {e}"))),
    }
}

fn run(env: &dyn Env, options: &WalOptions, ops: &[Op]) -> Result<(), TestCaseError> {
    let vfs = env.vfs();
    let mut model = Model {
        log: Vec::new(),
        low: 0,
        durable: 0,
        next_id: 0,
    };
    let mut wal = open_retrying(&vfs, options)?;
    verify(&wal, &mut model, true)?;
    let every_write = options.sync_policy == SyncPolicy::EveryWrite;
    for op in ops {
        let expect = model.current() + 1;
        match op {
            Op::Append(len) => {
                let p = model.payload(*len);
                match wal.append(&p) {
                    Ok(seq) => {
                        prop_assert_eq!(seq, expect);
                        model.push(RecordKind::Data, p, true, true);
                        if every_write {
                            prop_assert_eq!(wal.durable_seq(), seq);
                        }
                    }
                    Err(e) => on_error(e, &mut model)?,
                }
            }
            Op::AppendMany(n) => {
                let ps: Vec<Vec<u8>> = (0..*n).map(|i| model.payload(i as usize * 7)).collect();
                match wal.append_many(&ps) {
                    Ok(range) => {
                        prop_assert_eq!(range, expect..=expect + u64::from(*n) - 1);
                        for p in ps {
                            model.push(RecordKind::Data, p, true, true);
                        }
                    }
                    Err(e) => on_error(e, &mut model)?,
                }
            }
            Op::Batch(n) => {
                let ps: Vec<Vec<u8>> = (0..*n).map(|i| model.payload(i as usize * 11)).collect();
                match wal.append_batch(&ps) {
                    Ok(b) => {
                        prop_assert_eq!((b.first, b.commit), (expect, expect + u64::from(*n)));
                        for (i, p) in ps.into_iter().enumerate() {
                            model.push(RecordKind::Batch, p, i == 0, false);
                        }
                        model.push(RecordKind::Commit, Vec::new(), false, true);
                    }
                    Err(e) => on_error(e, &mut model)?,
                }
            }
            Op::Sync => match wal.sync() {
                Ok(()) => prop_assert_eq!(wal.durable_seq(), model.current()),
                Err(e) => on_error(e, &mut model)?,
            },
            Op::Checkpoint => match wal.checkpoint() {
                Ok(seq) => {
                    prop_assert_eq!(seq, expect);
                    model.push(RecordKind::Checkpoint, Vec::new(), true, true);
                    prop_assert_eq!(wal.durable_seq(), seq);
                }
                Err(e) => on_error(e, &mut model)?,
            },
            Op::Truncate(f) => {
                let current = model.current();
                let upto = model.low + u64::from(*f) * (current + 2 - model.low) / 255;
                match wal.truncate(upto) {
                    Ok(()) => {
                        prop_assert!(upto <= current);
                        model.low = model.low.max(upto);
                    }
                    Err(WalError::OutOfRange { .. }) => prop_assert!(upto > current),
                    Err(e) => on_error(e, &mut model)?,
                }
            }
            Op::TruncateAfter(f, inside_batch) => {
                let (low, current) = (model.low, model.current());
                // `seq` is a unit boundary iff record `seq + 1` starts a unit.
                let points: Vec<u64> = (low..=current)
                    .filter(|&s| s == current || model.log[s as usize].starts_unit != *inside_batch)
                    .filter(|&s| !(*inside_batch && s == current))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                let seq = points[usize::from(*f) * (points.len() - 1) / 255];
                match wal.truncate_after(seq) {
                    Ok(()) => {
                        prop_assert!(!inside_batch);
                        model.log.truncate(seq as usize);
                    }
                    Err(WalError::InsideBatch { seq: s }) => {
                        prop_assert!(*inside_batch);
                        prop_assert_eq!(s, seq);
                    }
                    Err(e) if wal.is_poisoned() => {
                        // Failed part-way: the log is anywhere between untouched and
                        // truncated at `seq`, so records after `seq` are no longer promised.
                        prop_assert!(matches!(e, WalError::Vfs(_)), "{}", e);
                        model.durable = model.durable.min(seq);
                    }
                    Err(e) => on_error(e, &mut model)?,
                }
            }
            Op::Crash => {
                drop(wal);
                wal = crash_and_recover(env, &vfs, options, &mut model)?;
                continue;
            }
            Op::Reopen => {
                let clean = match wal.close() {
                    Ok(()) => true,
                    Err(e) => {
                        on_error(e, &mut model)?;
                        false
                    }
                };
                if clean {
                    wal = open_retrying(&vfs, options)?;
                    verify(&wal, &mut model, true)?;
                } else {
                    wal = crash_and_recover(env, &vfs, options, &mut model)?;
                }
                continue;
            }
            Op::FsyncFail => {
                if let Some(disk) = env.sim() {
                    disk.inject(DiskFault::FsyncFail {
                        path_prefix: DIR.to_string(),
                    });
                }
            }
        }
        if wal.is_poisoned() {
            drop(wal);
            wal = crash_and_recover(env, &vfs, options, &mut model)?;
            continue;
        }
        prop_assert_eq!(wal.current_seq(), model.current(), "after {:?}", op);
        prop_assert!(wal.durable_seq() <= wal.current_seq());
        prop_assert!(wal.durable_seq() >= model.low);
        model.durable = wal.durable_seq();
    }
    drop(wal);
    crash_and_recover(env, &vfs, options, &mut model)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases(5000)))]

    #[test]
    fn wal_survives_crashes_on_simdisk(
        config in disk_config(),
        seed in any::<u64>(),
        options in options(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let env = SimEnv::new(config, seed);
        run(&env, &options, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases(2000)))]

    #[test]
    fn wal_survives_crashes_and_fsync_failures_on_simdisk_wide(
        config in disk_config_wide(),
        seed in any::<u64>(),
        options in options_wide(),
        ops in prop::collection::vec(op_wide(), 1..150),
    ) {
        let env = SimEnv::new(config, seed);
        run(&env, &options, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases(64)))]

    #[test]
    fn wal_survives_restarts_on_the_real_file_system(
        options in options(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let env = RealEnv::new();
        run(&env, &options, &ops)?;
    }
}

/// The exact inputs of a failure the crash test found (also in
/// `wal_crash.proptest-regressions`), replayed deterministically: a segment creation
/// whose header sync failed was removed without a directory sync, a crash brought the
/// empty `000002.wal` back after `truncate_after` had made segment 1 active again, and
/// strict recovery called segment 1's torn tail corruption. See
/// `a_failed_segment_creation_does_not_come_back_after_a_crash` in `wal.rs`.
#[test]
fn regression_failed_segment_creation_resurrected_by_a_crash() {
    let config = DiskConfig {
        sector_size: 16,
        crash_keep_probability: 1.0 / 3.0,
        crash_torn_probability: 1.0 / 3.0,
        crash_keep_dir_op_probability: 0.5,
        ..DiskConfig::default()
    };
    let options = WalOptions {
        max_segment_bytes: 300,
        sync_policy: SyncPolicy::EveryN {
            records: 3,
            bytes: 0,
        },
        nonce: 0,
        ..WalOptions::default()
    };
    let ops = [
        Op::Append(0),
        Op::Batch(3),
        Op::Append(28),
        Op::Crash,
        Op::Append(0),
        Op::Batch(1),
        Op::FsyncFail,
        Op::Append(0),
        Op::TruncateAfter(0, false),
        Op::Append(0),
        Op::Crash,
    ];
    let env = SimEnv::new(config, 14303039136236078006);
    if let Err(e) = run(&env, &options, &ops) {
        panic!("{e}");
    }
}

/// Runs the wide crash property over `cases` fixed cases (a fixed RNG seed, so every run
/// draws the same cases) with `bugs` switched on; returns the failures.
fn crash_sweep(bugs: EngineBugs, cases: usize) -> Vec<String> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[18; 32]),
    );
    let strategy = (
        disk_config_wide(),
        any::<u64>(),
        options_wide(),
        prop::collection::vec(op_wide(), 1..150),
    );
    let mut failures = Vec::new();
    for case in 0..cases {
        let (config, seed, options, ops) =
            strategy.new_tree(&mut runner).expect("a case").current();
        let options = WalOptions { bugs, ..options };
        let env = SimEnv::new(config, seed);
        if let Err(e) = run(&env, &options, &ops) {
            failures.push(format!("case {case}: {e}"));
        }
    }
    failures
}

/// The crash sweep the flags are measured against finds nothing with no flag on.
#[test]
fn crash_sweep_is_clean_without_bug_flags() {
    assert_eq!(crash_sweep(EngineBugs::NONE, 300), Vec::<String>::new());
}

// Measured over these 300 cases: 10 failures ("ends inside a batch": a torn batch
// replayed without its commit record).
#[test]
fn bug_flag_wal_apply_uncommitted_batch_is_caught_by_the_crash_sweep() {
    let failures = crash_sweep(EngineBug::WalApplyUncommittedBatch.into(), 300);
    assert!(
        failures.iter().any(|f| f.contains("ends inside a batch")),
        "{failures:?}"
    );
}

// Measured: most cases with a crash lose a segment's directory entry and with it
// records reported durable.
#[test]
fn bug_flag_wal_no_dir_sync_is_caught_by_the_crash_sweep() {
    let failures = crash_sweep(EngineBug::WalNoDirSync.into(), 300);
    assert!(
        failures.iter().any(|f| f.contains("durable records lost")),
        "{failures:?}"
    );
}

// Measured: 5 of 300 cases, where a segment number is reused after `truncate_after` or a
// lost creation and the old incarnation's records validate without the salted header
// checksum. (`wal.truncate_at_corruption` is not here: crashes alone never damage the
// middle of the log; `wal_corruption.rs` catches it.)
#[test]
fn bug_flag_wal_crc_excludes_header_is_caught_by_the_crash_sweep() {
    let failures = crash_sweep(EngineBug::WalCrcExcludesHeader.into(), 300);
    assert!(!failures.is_empty());
}
