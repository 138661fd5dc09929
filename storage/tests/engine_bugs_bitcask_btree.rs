//! The Bitcask and B+tree engine bug flags (`storage::bugs`), each caught by the crash
//! suite or by a targeted fault on the simulated disk: every test runs the same fixed
//! cases twice, with the flag on (it must find a violation: a lost acknowledged write, a
//! resurrected delete, a wrong value, or a state that is not the durable state plus a
//! prefix of the unsynced writes) and with it off (it must find none).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::kv::{FailVfs, Op, WriteOp, key_bytes, run_case, sim_disk};
use sim_core::disk::{DiskConfig, DiskFault, SimDisk};
use sim_core::rng::fork;
use storage::bitcask::{
    Bitcask, BitcaskOptions, IN_BAND_TOMBSTONE, data_file_name, hint_file_name,
};
use storage::btree::{BTree, BTreeOpener, BTreeOptions, DATA_FILE};
use storage::bugs::{EngineBug, EngineBugs};
use storage::kv::{EngineError, EngineSyncPolicy, KvEngine};
use storage::vfs::{VfsHandle, join};

const DIR: &str = "db";

fn disk(config: DiskConfig, seed: u64) -> SimDisk {
    SimDisk::try_new(config, fork(seed, "disk", 0)).expect("config")
}

fn flags(bug: EngineBug, on: bool) -> EngineBugs {
    if on {
        EngineBugs::from(bug)
    } else {
        EngineBugs::NONE
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

fn val(i: u32, round: u32) -> Vec<u8> {
    format!("value-{i}-{round}-{}", "x".repeat((i % 5) as usize * 7)).into_bytes()
}

/// What a reopened engine shows for the keys `0..universe`, against the model of what
/// was acknowledged (and synced): each difference, classified. A read error is not a
/// violation here (a detected fault is the correct outcome); a silent difference is.
fn violations(
    engine: &dyn KvEngine,
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    universe: u32,
) -> Vec<String> {
    let mut found = Vec::new();
    for i in 0..universe {
        let k = key(i);
        let got = match engine.get(&k) {
            Ok(v) => v,
            Err(_) => continue,
        };
        match (model.get(&k), got) {
            (Some(_), None) => found.push(format!("lost acknowledged write of {i}")),
            (None, Some(_)) => found.push(format!("resurrected delete of {i}")),
            (Some(want), Some(v)) if *want != v => found.push(format!("wrong value of {i}")),
            _ => {}
        }
    }
    found
}

// ---------------------------------------------------------------------------- Bitcask

fn bitcask_options(bugs: EngineBugs) -> BitcaskOptions {
    BitcaskOptions {
        sync_policy: EngineSyncPolicy::EveryWrite,
        max_file_bytes: 256,
        merge_trigger_files: 0,
        bugs,
        ..BitcaskOptions::default()
    }
}

fn open_bitcask(vfs: &VfsHandle, options: &BitcaskOptions) -> Result<Bitcask, EngineError> {
    Bitcask::open(vfs.clone(), DIR, options.clone())
}

/// Fills several files (two rounds of puts, some deletes); returns the model.
fn fill(db: &mut Bitcask) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for round in 0..2 {
        for i in 0..16 {
            db.put(&key(i), &val(i, round)).unwrap();
            model.insert(key(i), val(i, round));
        }
    }
    for i in (0..16).step_by(3) {
        db.delete(&key(i)).unwrap();
        model.remove(&key(i));
    }
    db.sync().unwrap();
    model
}

/// A merge interrupted after every possible number of its file operations (the process
/// dies; then, on one disk, the machine crashes too, keeping each unsynced directory
/// operation with probability 1/2; on the other every directory operation survives, as
/// after a process crash or once a journal commit made them durable), and a completed
/// merge followed by a crash before any later directory sync. Returns the violations
/// found (with the case that found them).
fn merge_crash_sweep(bugs: EngineBugs) -> Vec<String> {
    let mut found = Vec::new();
    for keep_dir_ops in [0.5, 1.0] {
        found.extend(merge_crash_sweep_on(bugs, keep_dir_ops));
    }
    found
}

fn merge_crash_sweep_on(bugs: EngineBugs, keep_dir_ops: f64) -> Vec<String> {
    let options = bitcask_options(bugs);
    let config = DiskConfig {
        crash_keep_dir_op_probability: keep_dir_ops,
        ..DiskConfig::default()
    };
    let mut found = Vec::new();
    // A crash inside the merge, at every step.
    let mut budget = 0u64;
    loop {
        let sim = disk(config.clone(), 11 + budget);
        let fail = FailVfs::new(sim.handle());
        let vfs: VfsHandle = Arc::new(fail.clone());
        let mut db = open_bitcask(&vfs, &options).unwrap();
        let model = fill(&mut db);
        fail.arm(budget);
        let _ = db.merge();
        let tripped = fail.tripped();
        drop(db);
        sim.crash();
        fail.disarm();
        match open_bitcask(&vfs, &options) {
            Ok(db) => found.extend(violations(&db, &model, 16).into_iter().map(|v| {
                format!("keep dir ops {keep_dir_ops}, crash after {budget} merge steps: {v}")
            })),
            Err(e) => found.push(format!(
                "keep dir ops {keep_dir_ops}, crash after {budget} merge steps: open: {e}"
            )),
        }
        if !tripped {
            break;
        }
        budget += 1;
        assert!(budget < 300, "merge takes too many file operations");
    }
    // A completed merge, then a crash.
    for seed in 0..24 {
        let sim = disk(config.clone(), 1000 + seed);
        let vfs = sim.handle();
        let mut db = open_bitcask(&vfs, &options).unwrap();
        let model = fill(&mut db);
        db.merge().unwrap();
        drop(db);
        sim.crash();
        match open_bitcask(&vfs, &options) {
            Ok(db) => {
                found.extend(violations(&db, &model, 16).into_iter().map(|v| {
                    format!("keep dir ops {keep_dir_ops}, merge, crash (seed {seed}): {v}")
                }))
            }
            Err(e) => found.push(format!(
                "keep dir ops {keep_dir_ops}, merge, crash (seed {seed}): open: {e}"
            )),
        }
    }
    found
}

/// `bitcask.delete_before_rename`: the merge deletes its inputs before its output has
/// its final name (and syncs no directory), so a crash loses the merged records.
#[test]
fn bitcask_delete_before_rename_loses_merged_records_in_a_crash() {
    let off = merge_crash_sweep(EngineBugs::NONE);
    assert!(off.is_empty(), "flag off: {off:#?}");
    let on = merge_crash_sweep(flags(EngineBug::BitcaskDeleteBeforeRename, true));
    assert!(
        on.iter().any(|v| v.contains("lost acknowledged write")),
        "flag on: no lost write found: {on:#?}"
    );
    eprintln!(
        "bitcask.delete_before_rename: {} violations, e.g. {}",
        on.len(),
        on[0]
    );
}

/// A merged directory (so the merged file has a hint), reopened while the hint's read
/// returns one flipped bit (an injected `BitFlip` on the hint file), over `seeds`.
fn hint_bit_flip_sweep(bugs: EngineBugs, seeds: std::ops::Range<u64>) -> Vec<String> {
    let options = bitcask_options(bugs);
    let mut found = Vec::new();
    for seed in seeds {
        let sim = disk(DiskConfig::default(), seed);
        let vfs = sim.handle();
        let mut db = open_bitcask(&vfs, &options).unwrap();
        let model = fill(&mut db);
        db.merge().unwrap();
        let hint = db
            .file_ids()
            .into_iter()
            .map(|id| join(DIR, &hint_file_name(id)))
            .find(|p| vfs.exists(p).unwrap())
            .expect("the merge wrote a hint");
        drop(db);
        sim.inject(DiskFault::BitFlip { path_prefix: hint });
        match open_bitcask(&vfs, &options) {
            Ok(db) => {
                assert_eq!(sim.fault_counts().bit_flips, 1, "seed {seed}");
                found.extend(
                    violations(&db, &model, 16)
                        .into_iter()
                        .map(|v| format!("seed {seed}: {v}")),
                );
            }
            Err(e) => found.push(format!("seed {seed}: open: {e}")),
        }
    }
    found
}

/// `bitcask.trust_hint`: a hint read without its checksum: a damaged entry silently
/// ends the list (later keys lost) or puts a key somewhere else. Without the flag the
/// damaged hint is rejected and the data file scanned: every value is right.
#[test]
fn bitcask_trust_hint_loses_keys_when_a_hint_is_damaged() {
    let off = hint_bit_flip_sweep(EngineBugs::NONE, 0..40);
    assert!(off.is_empty(), "flag off: {off:#?}");
    let on = hint_bit_flip_sweep(flags(EngineBug::BitcaskTrustHint, true), 0..40);
    assert!(
        on.iter().any(|v| v.contains("lost acknowledged write")),
        "flag on: no lost write found: {on:#?}"
    );
    eprintln!(
        "bitcask.trust_hint: {} violations in 40 seeds, e.g. {}",
        on.len(),
        on[0]
    );
}

/// Puts the sentinel value (and ordinary values), deletes some keys, reopens (cleanly,
/// and after a crash): returns the violations.
fn sentinel_value_case(bugs: EngineBugs) -> Vec<String> {
    let options = bitcask_options(bugs);
    let sim = disk(DiskConfig::default(), 3);
    let vfs = sim.handle();
    let mut db = open_bitcask(&vfs, &options).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..12 {
        let v = if i % 4 == 1 {
            IN_BAND_TOMBSTONE.to_vec()
        } else {
            val(i, 0)
        };
        db.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    for i in [0, 6] {
        db.delete(&key(i)).unwrap();
        model.remove(&key(i));
    }
    // Before any reopen the engine shows what was written.
    let mut found: Vec<String> = violations(&db, &model, 12)
        .into_iter()
        .map(|v| format!("before reopen: {v}"))
        .collect();
    drop(db);
    let db = open_bitcask(&vfs, &options).unwrap();
    found.extend(
        violations(&db, &model, 12)
            .into_iter()
            .map(|v| format!("reopen: {v}")),
    );
    drop(db);
    sim.crash();
    let db = open_bitcask(&vfs, &options).unwrap();
    found.extend(
        violations(&db, &model, 12)
            .into_iter()
            .map(|v| format!("crash: {v}")),
    );
    found
}

/// `bitcask.in_band_tombstone`: a delete is a put of a sentinel value, so a put of that
/// value (acknowledged, synced) turns into a delete at the next open.
#[test]
fn bitcask_in_band_tombstone_turns_a_put_into_a_delete() {
    let off = sentinel_value_case(EngineBugs::NONE);
    assert!(off.is_empty(), "flag off: {off:#?}");
    let on = sentinel_value_case(flags(EngineBug::BitcaskInBandTombstone, true));
    assert!(
        on.iter()
            .any(|v| v.starts_with("reopen: lost acknowledged write")),
        "flag on: {on:#?}"
    );
    assert!(
        !on.iter().any(|v| v.starts_with("before reopen")),
        "the live engine shows what was written: {on:#?}"
    );
    eprintln!("bitcask.in_band_tombstone: {on:?}");
}

// ---------------------------------------------------------------------------- B+tree

/// The conformance suite's B+tree: 1 KiB pages, a checkpoint every few pages.
fn btree_opener(bugs: EngineBugs) -> BTreeOpener {
    BTreeOpener {
        options: BTreeOptions {
            sync_policy: EngineSyncPolicy::EveryWrite,
            page_size: 1024,
            max_dirty_pages: 3,
            bugs,
        },
    }
}

/// Fixed crash-suite cases: puts of mid-sized values over the suite's key universe
/// (splits, root splits, new pages), deletes (frees, merges), crashes between writes
/// and inside them.
fn btree_crash_cases() -> Vec<Vec<Op>> {
    (0..6u32)
        .map(|case| {
            let mut ops = Vec::new();
            for step in 0..90u32 {
                let k = ((step * 7 + case * 13) % 40) as u8;
                let op = if step % 5 == 4 {
                    WriteOp::Delete(((step * 3 + case) % 40) as u8)
                } else {
                    WriteOp::Put(
                        k,
                        vec![b'a' + (step % 26) as u8; 60 + (step as usize * 11) % 140],
                    )
                };
                ops.push(Op::Write(op));
                if step % 9 == 8 {
                    ops.push(Op::Crash);
                }
                if step % 23 == 22 {
                    ops.push(Op::CrashDuring {
                        budget: (step % 7) as u16,
                        writes: vec![WriteOp::Put(k, vec![b'z'; 120])],
                    });
                }
            }
            ops
        })
        .collect()
}

/// Runs the fixed crash-suite cases on fresh simulated disks; returns the failures.
fn btree_crash_sweep(bugs: EngineBugs) -> Vec<String> {
    let opener = btree_opener(bugs);
    let mut found = Vec::new();
    for (case, ops) in btree_crash_cases().iter().enumerate() {
        for seed in 0..3u64 {
            let disk = sim_disk(case as u64 * 100 + seed);
            if let Err(e) = run_case(&opener, &disk, true, ops, true) {
                let first = e.to_string();
                let first = first.lines().next().unwrap_or_default().to_string();
                found.push(format!("case {case} seed {seed}: {first}"));
            }
        }
    }
    found
}

/// `btree.meta_unlogged`: the root, page count and free list are written in place into
/// the superblock, unsynced, while the pages go through the WAL. After a crash the
/// replayed pages meet older (or torn) metadata: the crash suite finds a recovered
/// state that is not the durable state (or an engine that cannot reopen).
#[test]
fn btree_meta_unlogged_breaks_recovery_after_a_crash() {
    let off = btree_crash_sweep(EngineBugs::NONE);
    assert!(off.is_empty(), "flag off: {off:#?}");
    let on = btree_crash_sweep(flags(EngineBug::BtreeMetaUnlogged, true));
    assert!(!on.is_empty(), "flag on: the crash suite found nothing");
    eprintln!(
        "btree.meta_unlogged: {} of 18 cases fail, e.g. {}",
        on.len(),
        on[0]
    );
}

/// A tree of several leaves, checkpointed; then a few keys are changed and the next
/// checkpoint's first page write is misdirected (to another page of the file: the
/// sectors are as large as the pages). After a crash and reopen, every key is read.
fn misdirected_checkpoint_sweep(bugs: EngineBugs, seeds: std::ops::Range<u64>) -> Vec<String> {
    let options = BTreeOptions {
        sync_policy: EngineSyncPolicy::EveryWrite,
        page_size: 1024,
        max_dirty_pages: 1 << 16,
        bugs,
    };
    let config = DiskConfig {
        sector_size: 1024,
        ..DiskConfig::default()
    };
    let path = join(DIR, DATA_FILE);
    let mut found = Vec::new();
    for seed in seeds {
        let sim = disk(config.clone(), seed);
        let vfs = sim.handle();
        let mut db = BTree::open(vfs.clone(), DIR, options.clone()).unwrap();
        let mut model = BTreeMap::new();
        for i in 0..80 {
            db.put(&key(i), &val(i, 0)).unwrap();
            model.insert(key(i), val(i, 0));
        }
        db.checkpoint().unwrap();
        for i in (0..80).step_by(20) {
            db.put(&key(i), &val(i, 1)).unwrap();
            model.insert(key(i), val(i, 1));
        }
        sim.inject(DiskFault::MisdirectedWrite {
            path_prefix: path.clone(),
        });
        let _ = db.checkpoint();
        assert_eq!(sim.fault_counts().misdirected_writes, 1, "seed {seed}");
        drop(db);
        sim.crash();
        match BTree::open(vfs.clone(), DIR, options.clone()) {
            Ok(db) => found.extend(
                violations(&db, &model, 80)
                    .into_iter()
                    .map(|v| format!("seed {seed}: {v}")),
            ),
            // A detected fault: the correct outcome (never a wrong value).
            Err(EngineError::Corruption { .. }) => {}
            Err(e) => found.push(format!("seed {seed}: open: {e}")),
        }
    }
    found
}

/// `btree.crc_excludes_page_number`: a page's checksum does not cover its number, so a
/// page image misdirected onto another page reads as valid there: the checkpoint's
/// read-back finds nothing wrong with the clobbered page, the WAL is truncated, and the
/// keys of the page it replaced are gone. With the number in the checksum the
/// clobbered page fails to decode: reported, never a silent loss.
#[test]
fn btree_crc_excludes_page_number_lets_a_misdirected_page_read_as_valid() {
    let off = misdirected_checkpoint_sweep(EngineBugs::NONE, 0..30);
    assert!(off.is_empty(), "flag off: {off:#?}");
    let on =
        misdirected_checkpoint_sweep(flags(EngineBug::BtreeCrcExcludesPageNumber, true), 0..30);
    assert!(
        on.iter().any(|v| v.contains("lost acknowledged write")),
        "flag on: {on:#?}"
    );
    eprintln!(
        "btree.crc_excludes_page_number: {} violations in 30 seeds, e.g. {}",
        on.len(),
        on[0]
    );
}

/// Names: every flag here is listed and parses.
#[test]
fn flags_are_listed() {
    for name in [
        "bitcask.delete_before_rename",
        "bitcask.trust_hint",
        "bitcask.in_band_tombstone",
        "btree.meta_unlogged",
        "btree.crc_excludes_page_number",
    ] {
        assert!(EngineBugs::from_names([name]).is_ok(), "{name}");
    }
    let _ = (data_file_name(1), key_bytes(0));
}
