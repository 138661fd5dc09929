//! Regression tests for the LSM-tree, SSTable, compaction and Bloom-filter defects of the
//! reference implementation (seed digest §5 and §6), one or more per defect (named in
//! each test's comment; the table is in `docs/storage/lsm.md`), and crash-point tests
//! during flush and compaction.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use common::kv::{FailVfs, scan_all};
use common::{read_file, write_file};
use sim_core::disk::{DiskConfig, DiskFault, SimDisk};
use sim_core::rng::fork;
use storage::kv::{EngineError, EngineSyncPolicy, KvEngine, WriteBatch};
use storage::lsm::bloom::{self, BloomFilter};
use storage::lsm::{CompactionStrategy, FOOTER_LEN, Lsm, LsmOptions, MAX_LEVELS, table_file_name};
use storage::vfs::{VfsHandle, join};

const DIR: &str = "lsm";

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn disk(config: DiskConfig, seed: u64) -> SimDisk {
    SimDisk::try_new(config, fork(seed, "disk", 0)).expect("config")
}

fn opts(sync_policy: EngineSyncPolicy, compaction: CompactionStrategy) -> LsmOptions {
    LsmOptions {
        sync_policy,
        compaction,
        memtable_bytes: 800,
        block_bytes: 200,
        target_file_bytes: 700,
        l0_compaction_trigger: 3,
        level_base_bytes: 1500,
        level_fanout: 2,
        max_levels: 4,
        size_tiered_min_threshold: 3,
        size_tiered_min_bytes: 600,
        ..LsmOptions::default()
    }
}

fn open(vfs: &VfsHandle, o: &LsmOptions) -> Result<Lsm, EngineError> {
    Lsm::open(vfs.clone(), DIR, o.clone())
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

fn val(i: u32, round: u32) -> Vec<u8> {
    format!("v{i}-{round}-{}", "x".repeat((i % 7) as usize * 9)).into_bytes()
}

/// Write `i` of a deterministic workload (puts, overwrites and deletes over 60 keys),
/// applied to the model.
fn model(state: &mut State, i: u32) {
    let k = key(i * 7 % 60);
    if i % 6 == 5 {
        state.remove(&k);
    } else {
        state.insert(k, val(i * 7 % 60, i));
    }
}

/// Write `i` of the workload, applied to the engine and, if it succeeded, the model.
fn apply(db: &mut Lsm, state: &mut State, i: u32) -> Result<(), EngineError> {
    let k = key(i * 7 % 60);
    if i % 6 == 5 {
        db.delete(&k)?;
    } else {
        db.put(&k, &val(i * 7 % 60, i))?;
    }
    model(state, i);
    Ok(())
}

fn table_paths(vfs: &VfsHandle) -> Vec<String> {
    vfs.list(DIR)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".sst"))
        .map(|n| join(DIR, &n))
        .collect()
}

/// Crashes at every mutating file operation of write number `target` of the workload
/// (which triggers a flush, or a flush and a compaction), on a disk that tears and
/// loses unsynced sectors: after reopening, the state is exactly the state before or
/// after that write (every earlier write was synced), and the engine's invariants hold.
fn crash_at_every_step_of_write(o: &LsmOptions, target: u32, want_compaction: bool) -> u64 {
    // A dry run measures how many mutating operations the target write takes.
    let sim = disk(DiskConfig::reliable(), 0);
    let fail = FailVfs::new(sim.handle());
    let vfs: VfsHandle = Arc::new(fail.clone());
    let mut db = open(&vfs, o).unwrap();
    let mut state = State::new();
    for i in 0..target {
        apply(&mut db, &mut state, i).unwrap();
    }
    let before = db.stats();
    fail.arm(1_000_000);
    apply(&mut db, &mut state, target).unwrap();
    let steps = 1_000_000 - fail.remaining();
    fail.disarm();
    let after = db.stats();
    assert_eq!(
        after.flushes,
        before.flushes + 1,
        "write {target} must flush"
    );
    assert_eq!(
        after.compactions + after.trivial_moves > before.compactions + before.trivial_moves,
        want_compaction,
        "write {target}: compaction expected: {want_compaction}"
    );
    for budget in 0..steps {
        let sim = disk(DiskConfig::default(), u64::from(target) * 1000 + budget);
        let fail = FailVfs::new(sim.handle());
        let vfs: VfsHandle = Arc::new(fail.clone());
        let mut db = open(&vfs, o).unwrap();
        let mut state = State::new();
        for i in 0..target {
            apply(&mut db, &mut state, i).unwrap();
        }
        db.sync().unwrap();
        let synced = state.clone();
        fail.arm(budget);
        let acked = apply(&mut db, &mut state, target).is_ok();
        // A failed write may or may not have reached the disk.
        let mut with_write = synced.clone();
        model(&mut with_write, target);
        drop(db);
        sim.crash();
        fail.disarm();
        let db = open(&vfs, o).unwrap_or_else(|e| panic!("budget {budget}: reopen: {e}"));
        db.check_integrity()
            .unwrap_or_else(|e| panic!("budget {budget}: {e}"));
        let got = scan_all(&db).unwrap();
        assert!(
            got == with_write || (!acked && got == synced),
            "write {target}, crash after {budget} of {steps} steps: recovered {} keys, \
             synced {}, after the write {} (acknowledged: {acked})",
            got.len(),
            synced.len(),
            with_write.len()
        );
    }
    steps
}

/// Defects: the LSM WAL had no CRC, no commits and no fsync; a crash between writing
/// the SSTable and truncating the WAL could lose both copies. A flush writes the table
/// under a temporary name, syncs it, reads it back, renames it, syncs the directory,
/// logs a durable manifest edit, and only then truncates the WAL. A crash at every step
/// of a flush recovers the synced state exactly.
#[test]
fn crash_at_every_step_of_a_flush_recovers_the_synced_state() {
    for strategy in [CompactionStrategy::Leveled, CompactionStrategy::SizeTiered] {
        let o = opts(EngineSyncPolicy::EveryWrite, strategy);
        // Write 12 is the first flush (measured by the dry run's assertions).
        let steps = crash_at_every_step_of_write(&o, first_write_that(&o, false), false);
        assert!(steps >= 8, "a flush takes {steps} steps");
    }
}

/// Defects: compaction wrote output straight to its final path without fsync, removed
/// its inputs at once, and had no manifest, so a crash could resurrect deletes or lose
/// data. Output goes through temporary names, a single durable manifest edit swaps
/// inputs for outputs, and inputs are deleted only after it. A crash at every step of a
/// flush-plus-compaction recovers the synced state exactly.
#[test]
fn crash_at_every_step_of_a_compaction_recovers_the_synced_state() {
    for strategy in [CompactionStrategy::Leveled, CompactionStrategy::SizeTiered] {
        let o = opts(EngineSyncPolicy::EveryWrite, strategy);
        let steps = crash_at_every_step_of_write(&o, first_write_that(&o, true), true);
        assert!(steps >= 15, "a compaction takes {steps} steps");
    }
}

/// The first write of the workload that flushes (and, if `compacts`, also compacts).
fn first_write_that(o: &LsmOptions, compacts: bool) -> u32 {
    let sim = disk(DiskConfig::reliable(), 0);
    let mut db = open(&sim.handle(), o).unwrap();
    let mut state = State::new();
    for i in 0..1000 {
        let before = db.stats();
        apply(&mut db, &mut state, i).unwrap();
        let after = db.stats();
        let compacted =
            after.compactions + after.trivial_moves > before.compactions + before.trivial_moves;
        if after.flushes > before.flushes && compacted == compacts {
            return i;
        }
    }
    panic!("no such write");
}

/// Crash points across a long run with explicit syncs: after every crash the state is
/// the last synced state plus a prefix of the unsynced writes; all strategies.
#[test]
fn crashes_during_a_long_run_never_lose_synced_writes() {
    for strategy in [CompactionStrategy::Leveled, CompactionStrategy::SizeTiered] {
        let o = opts(EngineSyncPolicy::Explicit, strategy);
        for seed in 0..12u64 {
            let sim = disk(DiskConfig::default(), seed);
            let fail = FailVfs::new(sim.handle());
            let vfs: VfsHandle = Arc::new(fail.clone());
            let mut db = open(&vfs, &o).unwrap();
            let mut state = State::new();
            let mut i = 0;
            for round in 0..6u64 {
                for _ in 0..25 {
                    apply(&mut db, &mut state, i).unwrap();
                    i += 1;
                }
                db.sync().unwrap();
                let synced = state.clone();
                // Crash somewhere in the next writes.
                fail.arm((seed * 7 + round * 13) % 60);
                let mut history = vec![synced.clone()];
                let mut s = synced.clone();
                for _ in 0..25 {
                    let failed = apply(&mut db, &mut s, i).is_err();
                    if failed {
                        // A failed write may still have reached the disk.
                        model(&mut s, i);
                    }
                    i += 1;
                    history.push(s.clone());
                    if failed {
                        break;
                    }
                }
                drop(db);
                sim.crash();
                fail.disarm();
                db = open(&vfs, &o).unwrap();
                db.check_integrity().unwrap();
                let got = scan_all(&db).unwrap();
                assert!(
                    history.contains(&got),
                    "seed {seed} round {round}: recovered state is not a prefix"
                );
                state = got;
            }
        }
    }
}

/// Defect: `lsm.py` marked a tombstone with `b""`, so an empty value was a delete. The
/// tombstone is an explicit entry kind: an empty value survives the memtable, WAL
/// replay, flush, compaction and reopen.
#[test]
fn empty_value_is_a_value_not_a_delete() {
    let sim = disk(DiskConfig::default(), 3);
    let vfs = sim.handle();
    let o = opts(EngineSyncPolicy::EveryWrite, CompactionStrategy::Leveled);
    let mut db = open(&vfs, &o).unwrap();
    db.put(b"empty", b"").unwrap();
    assert_eq!(db.get(b"empty").unwrap(), Some(Vec::new()));
    drop(db);
    sim.crash();
    let mut db = open(&vfs, &o).unwrap();
    assert_eq!(
        db.get(b"empty").unwrap(),
        Some(Vec::new()),
        "after WAL replay"
    );
    db.flush().unwrap();
    assert_eq!(db.get(b"empty").unwrap(), Some(Vec::new()), "after a flush");
    let mut state = State::new();
    for i in 0..200 {
        apply(&mut db, &mut state, i).unwrap();
    }
    assert!(db.stats().compactions > 0);
    assert_eq!(
        db.get(b"empty").unwrap(),
        Some(Vec::new()),
        "after compaction"
    );
    let scanned = scan_all(&db).unwrap();
    assert_eq!(scanned.get(&b"empty"[..]), Some(&Vec::new()));
    db.delete(b"empty").unwrap();
    assert_eq!(db.get(b"empty").unwrap(), None);
    drop(db);
    sim.crash();
    let db = open(&vfs, &o).unwrap();
    assert_eq!(db.get(b"empty").unwrap(), None);
    db.check_integrity().unwrap();
}

/// Finds a table holding `needle` and returns its path and the offset of `needle`.
fn find_in_tables(vfs: &VfsHandle, needle: &[u8]) -> (String, usize) {
    for path in table_paths(vfs) {
        let bytes = read_file(vfs, &path);
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            return (path, at);
        }
    }
    panic!("not found in any table");
}

/// Defect: in `sstable.py` one flipped byte turned a value into a delete (or the
/// reverse), and SSTables had no checksums. Every block has a CRC32C seeded with the
/// file number and offset: flipping an entry's kind byte is `Corruption`, never a
/// delete.
#[test]
fn flipped_entry_kind_is_corruption_not_a_delete() {
    let sim = disk(DiskConfig::reliable(), 1);
    let vfs = sim.handle();
    let o = opts(EngineSyncPolicy::EveryWrite, CompactionStrategy::Leveled);
    let mut db = open(&vfs, &o).unwrap();
    db.put(b"victim", b"precious").unwrap();
    db.flush().unwrap();
    drop(db);
    // The entry: kind u8, seq u64, key length u32, value length u32, key, value.
    let (path, at) = find_in_tables(&vfs, b"victim");
    let kind_at = at - 17;
    let mut bytes = read_file(&vfs, &path);
    assert_eq!(bytes[kind_at], 1, "a put");
    bytes[kind_at] = 2;
    bytes[kind_at + 13..kind_at + 17].copy_from_slice(&0u32.to_le_bytes());
    write_file(&vfs, &path, &bytes);
    match open(&vfs, &o).and_then(|db| db.get(b"victim")) {
        Err(EngineError::Corruption { file, .. }) => assert_eq!(file, path),
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Defects: the header was patched at the end (a crash left `entry_count = 0`, which
/// the reader trusted), and the trailer was a single point of failure. The footer is
/// checksummed and checked against the file length and the manifest: a truncated table,
/// or a table whose entry count was zeroed, is `Corruption`, never an empty table.
#[test]
fn truncated_or_zero_count_table_is_corruption_never_empty() {
    let sim = disk(DiskConfig::reliable(), 2);
    let vfs = sim.handle();
    let o = opts(EngineSyncPolicy::EveryWrite, CompactionStrategy::Leveled);
    let mut db = open(&vfs, &o).unwrap();
    for i in 0..10 {
        db.put(&key(i), &val(i, 0)).unwrap();
    }
    db.flush().unwrap();
    drop(db);
    let path = table_paths(&vfs).pop().unwrap();
    let good = read_file(&vfs, &path);
    // Cut by one byte.
    write_file(&vfs, &path, &good[..good.len() - 1]);
    assert!(matches!(
        open(&vfs, &o),
        Err(EngineError::Corruption { .. })
    ));
    // Entry count zeroed in the footer.
    let mut zeroed = good.clone();
    let at = good.len() - FOOTER_LEN + 56;
    zeroed[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    write_file(&vfs, &path, &zeroed);
    assert!(matches!(
        open(&vfs, &o),
        Err(EngineError::Corruption { .. })
    ));
    write_file(&vfs, &path, &good);
    let db = open(&vfs, &o).unwrap();
    assert_eq!(db.get(&key(3)).unwrap(), Some(val(3, 0)));
}

/// Defect: only the SSTable format had a version field, and nothing said what a reader
/// does with another version. An unknown version (with a valid footer checksum) is
/// `Corruption` naming the version.
#[test]
fn unknown_format_version_is_corruption() {
    let sim = disk(DiskConfig::reliable(), 4);
    let vfs = sim.handle();
    let o = opts(EngineSyncPolicy::EveryWrite, CompactionStrategy::Leveled);
    let mut db = open(&vfs, &o).unwrap();
    db.put(b"k", b"v").unwrap();
    db.flush().unwrap();
    drop(db);
    let path = table_paths(&vfs).pop().unwrap();
    let mut bytes = read_file(&vfs, &path);
    let f = bytes.len() - FOOTER_LEN;
    bytes[f + 8..f + 12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[f..f + 64]);
    bytes[f + 64..f + 68].copy_from_slice(&crc.to_le_bytes());
    write_file(&vfs, &path, &bytes);
    match open(&vfs, &o) {
        Err(EngineError::Corruption { detail, .. }) => {
            assert!(detail.contains("version 2"), "{detail}")
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Defects: no MANIFEST (`load_existing_sstables` trusted a directory listing), and
/// compacted tables were dropped from the list without deleting their files. The live
/// set comes from the manifest only: stray tables (even a valid copy of an old table
/// holding deleted keys), temporary files and leftovers are ignored and removed at open;
/// other files are left alone; compaction deletes its inputs.
#[test]
fn orphan_and_stray_files_are_ignored_and_removed() {
    let sim = disk(DiskConfig::reliable(), 5);
    let vfs = sim.handle();
    let o = opts(EngineSyncPolicy::EveryWrite, CompactionStrategy::Leveled);
    let mut db = open(&vfs, &o).unwrap();
    for i in 0..10 {
        db.put(&key(i), &val(i, 0)).unwrap();
    }
    db.flush().unwrap();
    let old_table = table_paths(&vfs).pop().unwrap();
    let old_bytes = read_file(&vfs, &old_table);
    let mut state = State::new();
    for i in 0..10 {
        db.delete(&key(i)).unwrap();
    }
    for i in 0..300 {
        apply(&mut db, &mut state, i).unwrap();
    }
    assert!(db.stats().compactions > 0);
    // Compaction deleted its inputs: only live tables are on disk.
    let live: usize = db.levels().iter().map(Vec::len).sum();
    assert_eq!(table_paths(&vfs).len(), live);
    assert!(!table_paths(&vfs).contains(&old_table));
    db.check_integrity().unwrap();
    drop(db);
    // Strays: a valid copy of the old table (it holds the deleted keys), garbage, a
    // temporary file, and a file of another name.
    let stray_copy = join(DIR, &table_file_name(90_000));
    write_file(&vfs, &stray_copy, &old_bytes);
    write_file(&vfs, &join(DIR, &old_table[DIR.len() + 1..]), &old_bytes);
    write_file(&vfs, &join(DIR, "090001.sst"), b"garbage");
    write_file(&vfs, &join(DIR, "090002.sst.tmp"), b"half a table");
    write_file(&vfs, &join(DIR, "NOTES"), b"not ours");
    let db = open(&vfs, &o).unwrap();
    for i in 0..10 {
        let k = key(i);
        assert_eq!(db.get(&k).unwrap(), state.get(&k).cloned(), "key {i}");
    }
    assert_eq!(scan_all(&db).unwrap(), state);
    assert_eq!(db.recovery().removed_files.len(), 4);
    db.check_integrity().unwrap();
    assert!(vfs.exists(&join(DIR, "NOTES")).unwrap());
    assert!(!vfs.exists(&stray_copy).unwrap());
}

/// Defect: levels were not persisted. The manifest records each table's level: a
/// reopen (and a crash) restores exactly the same levels.
#[test]
fn levels_survive_reopen_and_crash() {
    let sim = disk(DiskConfig::default(), 6);
    let vfs = sim.handle();
    let o = opts(EngineSyncPolicy::EveryWrite, CompactionStrategy::Leveled);
    let mut db = open(&vfs, &o).unwrap();
    let mut state = State::new();
    for i in 0..400 {
        apply(&mut db, &mut state, i).unwrap();
    }
    let levels = db.levels();
    assert!(levels[2..].iter().any(|l| !l.is_empty()), "{levels:?}");
    drop(db);
    let db = open(&vfs, &o).unwrap();
    assert_eq!(db.levels(), levels);
    drop(db);
    sim.crash();
    let db = open(&vfs, &o).unwrap();
    assert_eq!(db.levels(), levels);
    assert_eq!(scan_all(&db).unwrap(), state);
}

/// Defects: leveled compaction wrote one unsplit output, so levels above L0 could
/// overlap, and disjointness was never checked. Output is split at the target size;
/// `check_integrity` (levels ≥ 1 sorted and non-overlapping, L0 sequence ranges
/// disjoint, every table readable) holds after every operation of a random workload,
/// and after it settles every level but the last is within its budget.
#[test]
fn levels_stay_non_overlapping_and_within_budget() {
    let o = opts(EngineSyncPolicy::Explicit, CompactionStrategy::Leveled);
    let sim = disk(DiskConfig::reliable(), 7);
    let mut db = open(&sim.handle(), &o).unwrap();
    let mut state = State::new();
    let mut x = 0x1234_5678_9ABC_DEF1u64;
    for i in 0..1500u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = key((x % 400) as u32);
        if x.is_multiple_of(5) {
            db.delete(&k).unwrap();
            state.remove(&k);
        } else {
            let v = val((x % 400) as u32, i);
            db.put(&k, &v).unwrap();
            state.insert(k, v);
        }
        if i % 50 == 0 {
            db.check_integrity().unwrap();
        }
    }
    db.check_integrity().unwrap();
    let levels = db.levels();
    let last = o.max_levels - 1;
    assert!(levels[0].len() < o.l0_compaction_trigger);
    for (n, level) in levels.iter().enumerate().skip(1) {
        for w in level.windows(2) {
            assert!(w[0].largest < w[1].smallest, "level {n} overlaps");
        }
        for t in level {
            // Split at the target: one entry (under 100 bytes) plus the filter, index
            // and footer over it at most.
            assert!(t.size_bytes < o.target_file_bytes + 600, "{t:?}");
        }
        if n < last {
            let bytes: u64 = level.iter().map(|t| t.size_bytes).sum();
            assert!(bytes <= level_budget_of(&o, n), "level {n}: {bytes} bytes");
        }
    }
    assert!(levels[1..].iter().filter(|l| !l.is_empty()).count() >= 2);
    assert_eq!(scan_all(&db).unwrap(), state);
    assert!(levels.len() == MAX_LEVELS);
}

fn level_budget_of(o: &LsmOptions, n: usize) -> u64 {
    let mut b = o.level_base_bytes;
    for _ in 1..n {
        b *= o.level_fanout;
    }
    b
}

/// Defect: the `CompactionManager` never removed tombstones (they piled up), while the
/// general rule allows dropping a tombstone only when every table that could hold an
/// older version of its key is in the merge. A tombstone is kept while a table outside
/// the compaction (a deeper level) may hold the key, and dropped once none can; the
/// deleted key never comes back.
#[test]
fn tombstone_is_dropped_only_when_no_older_table_can_hold_the_key() {
    let o = LsmOptions {
        memtable_bytes: 1 << 20,
        level_base_bytes: 256,
        l0_compaction_trigger: 2,
        max_levels: 3,
        ..opts(EngineSyncPolicy::EveryWrite, CompactionStrategy::Leveled)
    };
    let sim = disk(DiskConfig::reliable(), 8);
    let vfs = sim.handle();
    let mut db = open(&vfs, &o).unwrap();
    for i in 0..20 {
        db.put(&key(i), &val(i, 0)).unwrap();
        if i == 9 {
            db.flush().unwrap();
        }
    }
    db.flush().unwrap();
    // Two L0 tables merged into L1, which is over its tiny budget: moved to L2 (last).
    let levels = db.levels();
    assert!(levels[0].is_empty() && levels[1].is_empty(), "{levels:?}");
    assert_eq!(levels[2].iter().map(|t| t.entries).sum::<u64>(), 20);
    // Delete two keys; each flush keeps its tombstone (L2 may hold the key).
    db.delete(&key(5)).unwrap();
    db.flush().unwrap();
    assert_eq!(
        db.levels()[0][0].tombstones,
        1,
        "the flush kept the tombstone"
    );
    db.delete(&key(6)).unwrap();
    db.flush().unwrap();
    // L0 merged into L1; L2 still holds keys 5 and 6, so the tombstones stay.
    let levels = db.levels();
    assert!(levels[0].is_empty(), "{levels:?}");
    let tombstones: u64 = levels.iter().flatten().map(|t| t.tombstones).sum();
    assert_eq!(tombstones, 2, "{levels:?}");
    assert_eq!(db.stats().tombstones_dropped, 0);
    assert_eq!(db.get(&key(5)).unwrap(), None);
    // Overwrites of the same range merge with the tombstones' table and push L1 over
    // its budget into L2 (the last level): nothing older exists there, so the
    // tombstones go.
    for i in (0..20).filter(|i| ![5, 6].contains(i)) {
        db.put(&key(i), &val(i, 1)).unwrap();
    }
    db.flush().unwrap();
    for i in 20..100 {
        db.put(&key(i), &val(i, 0)).unwrap();
    }
    db.flush().unwrap();
    let levels = db.levels();
    let tombstones: u64 = levels.iter().flatten().map(|t| t.tombstones).sum();
    assert_eq!(tombstones, 0, "{levels:?}");
    assert!(db.stats().tombstones_dropped >= 2);
    for i in [5, 6] {
        assert_eq!(db.get(&key(i)).unwrap(), None, "key {i} resurrected");
    }
    assert_eq!(db.get(&key(7)).unwrap(), Some(val(7, 1)));
    db.check_integrity().unwrap();
    drop(db);
    let db = open(&vfs, &o).unwrap();
    assert_eq!(db.get(&key(5)).unwrap(), None);
    assert_eq!(scan_all(&db).unwrap().len(), 98);
}

/// Size-tiered: a tombstone merged while an older tier (outside the run) may hold the
/// key is kept; the deleted key never resurrects.
#[test]
fn size_tiered_keeps_tombstones_shadowing_older_tiers() {
    let o = LsmOptions {
        memtable_bytes: 1 << 20,
        size_tiered_min_bytes: 0,
        ..opts(EngineSyncPolicy::EveryWrite, CompactionStrategy::SizeTiered)
    };
    let sim = disk(DiskConfig::reliable(), 9);
    let mut db = open(&sim.handle(), &o).unwrap();
    // One big old table holding key 1.
    for i in 0..200 {
        db.put(&key(i), &val(i, 0)).unwrap();
    }
    db.flush().unwrap();
    // Three small tables, the first deleting key 1: they merge, the big one stays.
    db.delete(&key(1)).unwrap();
    db.flush().unwrap();
    for r in 0..2 {
        db.put(&key(500 + r), b"x").unwrap();
        db.flush().unwrap();
    }
    let levels = db.levels();
    assert_eq!(levels[0].len(), 2, "{levels:?}");
    assert_eq!(levels[0][0].tombstones, 1, "{levels:?}");
    assert_eq!(db.get(&key(1)).unwrap(), None);
    db.check_integrity().unwrap();
}

/// Defects: no Bloom filter (every miss probed every SSTable), and the reference's
/// filter math (m = 0 crashed). Every table lookup consults its filter first: reads of
/// absent keys inside the tables' key ranges almost never read a block.
#[test]
fn point_reads_consult_the_bloom_filter() {
    let o = LsmOptions {
        memtable_bytes: 1 << 20,
        ..opts(EngineSyncPolicy::Explicit, CompactionStrategy::SizeTiered)
    };
    let sim = disk(DiskConfig::reliable(), 10);
    let mut db = open(&sim.handle(), &o).unwrap();
    for t in 0..2u32 {
        for i in 0..2000u32 {
            db.put(&key(i * 2 + t * 4000), b"v").unwrap();
        }
        db.flush().unwrap();
    }
    let before = db.stats();
    for i in 0..4000u32 {
        assert_eq!(db.get(&key(i * 2 + 1)).unwrap(), None);
    }
    let s = db.stats();
    let probes = s.bloom_probes - before.bloom_probes;
    let negatives = s.bloom_negatives - before.bloom_negatives;
    let blocks = s.blocks_read - before.blocks_read;
    // Every absent key inside a table's key range probes that table's filter.
    assert!(probes >= 3990, "{probes}");
    assert_eq!(
        blocks,
        probes - negatives,
        "a block is read only on a filter hit"
    );
    assert!(
        (blocks as f64) / (probes as f64) < 0.03,
        "{blocks} blocks read for {probes} probes"
    );
    // Present keys: no false negatives.
    for i in 0..4000u32 {
        assert_eq!(db.get(&key(i * 2)).unwrap(), Some(b"v".to_vec()));
    }
}

/// The Bloom filter's measured false-positive rate, on 200,000 absent keys, is within
/// 1.5× of the theoretical rate for its size and hash count: 10 bits per key (≈ 0.82%)
/// and 6 bits per key (≈ 5.6%).
#[test]
fn bloom_false_positive_rate_is_within_1_5x_of_target() {
    for bits_per_key in [10u32, 6] {
        let n = 20_000u64;
        let keys: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("user:{i:08}").into_bytes())
            .collect();
        let f = BloomFilter::build(&keys, bits_per_key);
        assert!(keys.iter().all(|k| f.may_contain(k)));
        let probes = 200_000u64;
        let fps = (0..probes)
            .filter(|i| f.may_contain(format!("absent:{i:08}").as_bytes()))
            .count() as f64;
        let measured = fps / probes as f64;
        let target = bloom::expected_fp_rate(f.bit_len(), f.hash_count(), n);
        eprintln!(
            "bloom: {bits_per_key} bits/key, k = {}: measured {measured:.5}, theoretical {target:.5}",
            f.hash_count()
        );
        assert!(
            measured <= 1.5 * target,
            "{bits_per_key} bits/key: measured {measured}, target {target}"
        );
        assert!(measured > 0.0);
    }
}

/// Sequence numbers keep increasing across flushes, compactions, clean reopens and
/// crashes (the reference dropped them on replay).
#[test]
fn sequence_numbers_increase_across_restarts() {
    let sim = disk(DiskConfig::default(), 11);
    let vfs = sim.handle();
    let o = opts(EngineSyncPolicy::EveryWrite, CompactionStrategy::Leveled);
    let mut last = 0;
    let mut state = State::new();
    let mut i = 0;
    for round in 0..6 {
        let mut db = open(&vfs, &o).unwrap();
        assert!(db.last_seq() >= last, "round {round}: went back");
        for _ in 0..40 {
            let before = db.last_seq();
            apply(&mut db, &mut state, i).unwrap();
            assert_eq!(db.last_seq(), before + 1);
            i += 1;
        }
        let mut b = WriteBatch::new();
        b.put(b"batch-a".to_vec(), b"1".to_vec())
            .delete(b"batch-b".to_vec());
        let before = db.last_seq();
        db.write_batch(&b).unwrap();
        assert_eq!(db.last_seq(), before + 2);
        last = db.last_seq();
        drop(db);
        if round % 2 == 1 {
            sim.crash();
        }
    }
    let db = open(&vfs, &o).unwrap();
    assert_eq!(db.last_seq(), last);
    for t in db.levels().iter().flatten() {
        assert!(t.max_seq <= last);
    }
}

/// A failed fsync during a flush (fsyncgate) poisons the engine; after a crash (or a
/// reopen in place) every synced write is there and the engine works again.
#[test]
fn failed_sync_during_flush_poisons_and_loses_nothing_synced() {
    for crash in [false, true] {
        let sim = disk(DiskConfig::default(), 12);
        let vfs = sim.handle();
        let o = opts(EngineSyncPolicy::Explicit, CompactionStrategy::Leveled);
        let mut db = open(&vfs, &o).unwrap();
        let mut state = State::new();
        for i in 0..5 {
            apply(&mut db, &mut state, i).unwrap();
        }
        db.sync().unwrap();
        sim.inject(DiskFault::FsyncFail {
            path_prefix: DIR.to_string(),
        });
        assert!(db.flush().is_err());
        assert!(db.is_poisoned());
        assert!(matches!(db.put(b"k", b"v"), Err(EngineError::Poisoned(_))));
        drop(db);
        if crash {
            sim.crash();
        }
        let mut db = open(&vfs, &o).unwrap();
        assert_eq!(scan_all(&db).unwrap(), state, "crash: {crash}");
        db.check_integrity().unwrap();
        db.put(b"after", b"ok").unwrap();
        db.flush().unwrap();
        assert_eq!(db.get(b"after").unwrap(), Some(b"ok".to_vec()));
    }
}

/// Defect: `range_scan` ignored the sparse index and read tables from the start, and
/// built its result in memory. Scans start at the index block holding the start key and
/// are lazy: a short scan of a large table reads a block or two, not the table.
#[test]
fn scans_use_the_index_and_are_lazy() {
    let o = LsmOptions {
        memtable_bytes: 1 << 20,
        ..opts(EngineSyncPolicy::Explicit, CompactionStrategy::Leveled)
    };
    let sim = disk(DiskConfig::reliable(), 13);
    let mut db = open(&sim.handle(), &o).unwrap();
    for i in 0..3000 {
        db.put(&key(i), &val(i, 0)).unwrap();
    }
    db.flush().unwrap();
    let before = db.stats().blocks_read;
    let got: Vec<_> = db
        .scan(Bound::Included(&key(2500)), Bound::Excluded(&key(2503)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got.len(), 3);
    assert!(db.stats().blocks_read - before <= 2);
    let before = db.stats().blocks_read;
    let first: Vec<_> = db
        .scan(Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .take(2)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(first[0].0, key(0));
    assert!(db.stats().blocks_read - before <= 1);
}

/// Defect: the reference treated any strategy name other than `"size_tiered"` as
/// leveled. Parsing rejects unknown names.
#[test]
fn unknown_compaction_strategy_is_rejected() {
    assert_eq!(
        "leveled".parse::<CompactionStrategy>(),
        Ok(CompactionStrategy::Leveled)
    );
    assert_eq!(
        "size_tiered".parse::<CompactionStrategy>(),
        Ok(CompactionStrategy::SizeTiered)
    );
    for bad in ["Leveled", "tiered", "", "size tiered"] {
        let e = bad.parse::<CompactionStrategy>().unwrap_err();
        assert!(e.to_string().contains("unknown compaction strategy"));
    }
    assert!(matches!(
        LsmOptions {
            l0_compaction_trigger: 0,
            ..LsmOptions::default()
        }
        .validate(),
        Err(EngineError::InvalidConfig(_))
    ));
    assert_eq!(level_budget_of(&LsmOptions::default(), 3), 1000 << 20);
}
