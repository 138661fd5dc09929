//! The LSM's engine bug flags (`lsm.*`, see `storage::bugs`), each caught by the shared
//! conformance and crash suite (`common/kv.rs`): a fixed set of cases (a fixed RNG seed,
//! so every run draws the same ones) finds a violation with the flag on and none with
//! it off. The WAL's flags are caught in `wal_crash.rs` and `wal_corruption.rs`.

mod common;

use common::kv::{Op, op_strategy, run_case, sim_disk};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use storage::bugs::{EngineBug, EngineBugs};
use storage::kv::EngineSyncPolicy;
use storage::lsm::{CompactionStrategy, LsmOpener, LsmOptions};

/// The conformance suite's tiny LSM (flushes every few writes, compacts often).
fn lsm(sync_policy: EngineSyncPolicy, bugs: EngineBugs) -> LsmOpener {
    LsmOpener {
        options: LsmOptions {
            sync_policy,
            compaction: CompactionStrategy::Leveled,
            memtable_bytes: 600,
            block_bytes: 128,
            target_file_bytes: 512,
            l0_compaction_trigger: 3,
            level_base_bytes: 1024,
            level_fanout: 2,
            max_levels: 4,
            bugs,
            ..LsmOptions::default()
        },
    }
}

/// `cases` fixed crash cases with `bugs` on; returns the failures.
fn sweep(bugs: EngineBugs, cases: usize) -> Vec<String> {
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[18; 32]),
    );
    let strategy = (
        any::<u64>(),
        any::<bool>(),
        proptest::collection::vec(op_strategy(true, 300), 1..60),
    );
    let mut failures = Vec::new();
    for case in 0..cases {
        let (seed, every_write, ops): (u64, bool, Vec<Op>) =
            strategy.new_tree(&mut runner).expect("a case").current();
        let policy = if every_write {
            EngineSyncPolicy::EveryWrite
        } else {
            EngineSyncPolicy::Explicit
        };
        if let Err(e) = run_case(&lsm(policy, bugs), &sim_disk(seed), every_write, &ops, true) {
            failures.push(format!("case {case}: {e}"));
        }
    }
    failures
}

const CASES: usize = 300;

#[test]
fn the_sweep_is_clean_without_bug_flags() {
    assert_eq!(sweep(EngineBugs::NONE, CASES), Vec::<String>::new());
}

// Measured: 256 of the 300 cases fail (table renames and removals whose directory
// entries a crash undid: tables lost, deleted inputs read again).
#[test]
fn bug_flag_lsm_no_manifest_is_caught() {
    let failures = sweep(EngineBug::LsmNoManifest.into(), CASES);
    assert!(failures.len() > CASES / 2, "{}", failures.len());
}

// Measured: 60 of 300 (a deleted key's older value in a deeper level comes back).
#[test]
fn bug_flag_lsm_tombstone_dropped_early_is_caught() {
    let failures = sweep(EngineBug::LsmTombstoneDroppedEarly.into(), CASES);
    assert!(failures.len() >= 10, "{}", failures.len());
}

// Measured: 21 of 300 (a crash inside a flush, after the log was cut and before the
// table was durable, loses acknowledged writes).
#[test]
fn bug_flag_lsm_wal_truncated_before_sstable_synced_is_caught() {
    let failures = sweep(EngineBug::LsmWalTruncatedBeforeSstableSynced.into(), CASES);
    assert!(failures.len() >= 5, "{}", failures.len());
}
