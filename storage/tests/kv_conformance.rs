//! The shared `KvEngine` conformance and crash suite (see `common/kv.rs`), run for every
//! engine: model-based property tests against a `BTreeMap`, with crashes at sync
//! boundaries, at random points and inside operations on `SimDisk`, and the non-crash
//! part on the real file system.
//!
//! Case counts: `PROPTEST_CASES` overrides them all for long hunts.

mod common;

use common::kv::{Op, op_strategy, real_disk, run_case, sim_disk};
use common::proptest_cases;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use storage::bitcask::{BitcaskOpener, BitcaskOptions};
use storage::btree::{BTreeOpener, BTreeOptions};
use storage::kv::{EngineOpener, EngineSyncPolicy};
use storage::lsm::{CompactionStrategy, LsmOpener, LsmOptions};

/// Small files, so cases rotate and merge often.
fn bitcask(sync_policy: EngineSyncPolicy) -> BitcaskOpener {
    BitcaskOpener {
        options: BitcaskOptions {
            sync_policy,
            max_file_bytes: 512,
            merge_trigger_files: 3,
            ..BitcaskOptions::default()
        },
    }
}

/// Small pages (1 KiB: splits, merges and height changes with a few dozen keys) and few
/// dirty pages, so cases checkpoint often.
fn btree(sync_policy: EngineSyncPolicy) -> BTreeOpener {
    BTreeOpener {
        options: BTreeOptions {
            sync_policy,
            page_size: 1024,
            max_dirty_pages: 3,
            ..BTreeOptions::default()
        },
    }
}

/// Tiny memtables, blocks, tables and level budgets, so cases flush every few writes
/// and compact (and, leveled, push tables down several levels) often.
fn lsm(sync_policy: EngineSyncPolicy, compaction: CompactionStrategy) -> LsmOpener {
    LsmOpener {
        options: LsmOptions {
            sync_policy,
            compaction,
            memtable_bytes: 600,
            block_bytes: 128,
            target_file_bytes: 512,
            l0_compaction_trigger: 3,
            level_base_bytes: 1024,
            level_fanout: 2,
            max_levels: 4,
            size_tiered_min_threshold: 3,
            size_tiered_min_bytes: 512,
            ..LsmOptions::default()
        },
    }
}

/// LSM case counts per strategy (tuned to keep the suite's added time modest).
const LSM_CRASH_CASES: u32 = 1500;
const LSM_EVERY_WRITE_CASES: u32 = 400;

fn config(cases: u32, file: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases: proptest_cases(cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..ProptestConfig::default()
    }
}

fn crash_case(
    opener: &dyn EngineOpener,
    every_write: bool,
    seed: u64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    run_case(opener, &sim_disk(seed), every_write, ops, true)
}

fn ops(crash: bool, max_value_bytes: usize, len: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op_strategy(crash, max_value_bytes), 1..len)
}

proptest! {
    #![proptest_config(config(1500, "tests/proptest-regressions/kv_conformance_bitcask_crash.txt"))]
    #[test]
    fn bitcask_crash_explicit_sync(seed in any::<u64>(), ops in ops(true, 300, 60)) {
        crash_case(&bitcask(EngineSyncPolicy::Explicit), false, seed, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(400, "tests/proptest-regressions/kv_conformance_bitcask_crash_every_write.txt"))]
    #[test]
    fn bitcask_crash_sync_every_write(seed in any::<u64>(), ops in ops(true, 200, 30)) {
        crash_case(&bitcask(EngineSyncPolicy::EveryWrite), true, seed, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(300, "tests/proptest-regressions/kv_conformance_bitcask_sim.txt"))]
    #[test]
    fn bitcask_model_no_crash_simdisk(seed in any::<u64>(), ops in ops(false, 300, 60)) {
        run_case(&bitcask(EngineSyncPolicy::Explicit), &sim_disk(seed), false, &ops, false)?;
    }
}

proptest! {
    #![proptest_config(config(24, "tests/proptest-regressions/kv_conformance_bitcask_real.txt"))]
    #[test]
    fn bitcask_model_no_crash_real_fs(ops in ops(false, 300, 40)) {
        run_case(&bitcask(EngineSyncPolicy::Explicit), &real_disk(), false, &ops, false)?;
    }
}

proptest! {
    #![proptest_config(config(1500, "tests/proptest-regressions/kv_conformance_btree_crash.txt"))]
    #[test]
    fn btree_crash_explicit_sync(seed in any::<u64>(), ops in ops(true, 300, 60)) {
        crash_case(&btree(EngineSyncPolicy::Explicit), false, seed, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(400, "tests/proptest-regressions/kv_conformance_btree_crash_every_write.txt"))]
    #[test]
    fn btree_crash_sync_every_write(seed in any::<u64>(), ops in ops(true, 300, 40)) {
        crash_case(&btree(EngineSyncPolicy::EveryWrite), true, seed, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(300, "tests/proptest-regressions/kv_conformance_btree_sim.txt"))]
    #[test]
    fn btree_model_no_crash_simdisk(seed in any::<u64>(), ops in ops(false, 300, 60)) {
        run_case(&btree(EngineSyncPolicy::Explicit), &sim_disk(seed), false, &ops, false)?;
    }
}

proptest! {
    #![proptest_config(config(24, "tests/proptest-regressions/kv_conformance_btree_real.txt"))]
    #[test]
    fn btree_model_no_crash_real_fs(ops in ops(false, 300, 40)) {
        run_case(&btree(EngineSyncPolicy::Explicit), &real_disk(), false, &ops, false)?;
    }
}

proptest! {
    #![proptest_config(config(LSM_CRASH_CASES, "tests/proptest-regressions/kv_conformance_lsm_leveled_crash.txt"))]
    #[test]
    fn lsm_leveled_crash_explicit_sync(seed in any::<u64>(), ops in ops(true, 300, 60)) {
        crash_case(&lsm(EngineSyncPolicy::Explicit, CompactionStrategy::Leveled), false, seed, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(LSM_EVERY_WRITE_CASES, "tests/proptest-regressions/kv_conformance_lsm_leveled_crash_every_write.txt"))]
    #[test]
    fn lsm_leveled_crash_sync_every_write(seed in any::<u64>(), ops in ops(true, 300, 40)) {
        crash_case(&lsm(EngineSyncPolicy::EveryWrite, CompactionStrategy::Leveled), true, seed, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(LSM_CRASH_CASES, "tests/proptest-regressions/kv_conformance_lsm_size_tiered_crash.txt"))]
    #[test]
    fn lsm_size_tiered_crash_explicit_sync(seed in any::<u64>(), ops in ops(true, 300, 60)) {
        crash_case(&lsm(EngineSyncPolicy::Explicit, CompactionStrategy::SizeTiered), false, seed, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(LSM_EVERY_WRITE_CASES, "tests/proptest-regressions/kv_conformance_lsm_size_tiered_crash_every_write.txt"))]
    #[test]
    fn lsm_size_tiered_crash_sync_every_write(seed in any::<u64>(), ops in ops(true, 300, 40)) {
        crash_case(&lsm(EngineSyncPolicy::EveryWrite, CompactionStrategy::SizeTiered), true, seed, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(300, "tests/proptest-regressions/kv_conformance_lsm_sim.txt"))]
    #[test]
    fn lsm_model_no_crash_simdisk(seed in any::<u64>(), ops in ops(false, 300, 60), leveled in any::<bool>()) {
        let strategy = if leveled { CompactionStrategy::Leveled } else { CompactionStrategy::SizeTiered };
        run_case(&lsm(EngineSyncPolicy::Explicit, strategy), &sim_disk(seed), false, &ops, false)?;
    }
}

proptest! {
    #![proptest_config(config(24, "tests/proptest-regressions/kv_conformance_lsm_real.txt"))]
    #[test]
    fn lsm_model_no_crash_real_fs(ops in ops(false, 300, 40), leveled in any::<bool>()) {
        let strategy = if leveled { CompactionStrategy::Leveled } else { CompactionStrategy::SizeTiered };
        run_case(&lsm(EngineSyncPolicy::Explicit, strategy), &real_disk(), false, &ops, false)?;
    }
}
