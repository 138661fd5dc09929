/// `bitcask.delete_before_rename` under Raft (`raft-disk-faults`: nodes 0 and 2 keep
/// their state machine in Bitcask with 4 KiB files, merged every 2 frozen files): a
/// crash after a merge keeps the deletion of its inputs but not the rename of its output,
/// the merged keys vanish, and a later read returns an older value or none
/// (`explore --bug bitcask.delete_before_rename`: 55 of seeds 0..200 fail; seed 0 first).
#[test]
fn raft_finds_bitcask_delete_before_rename() {
    detects(
        "raft-disk-faults.toml",
        "bitcask.delete_before_rename",
        0..8,
        "not_linearizable",
    );
}

/// `btree.meta_unlogged` under Raft (`raft-crash-restart`: node 2 keeps its state
/// machine in the B+tree): after a crash the replayed pages meet older metadata and the
/// restarted node stops on corruption although its disk only crashed, which the
/// storage crash-consistency checker reports (`explore --bug btree.meta_unlogged`: 123
/// of seeds 0..200 fail; seed 2 first).
#[test]
fn raft_finds_btree_meta_unlogged() {
    detects(
        "raft-crash-restart.toml",
        "btree.meta_unlogged",
        0..8,
        "corruption_after_crashes",
    );
}

/// The storage crash-consistency checker is clean without engine flags on the scenarios
/// above (the canonical sweep runs every checker too; this pins the two used here).
#[test]
fn crash_consistency_is_clean_without_flags() {
    for file in ["raft-disk-faults.toml", "raft-crash-restart.toml"] {
        let scenario = scenario(file);
        for seed in 0..6 {
            let report = scenarios::run(&scenario, RunOptions::seed(seed)).expect("runs");
            assert!(
                report.passed(),
                "{file} seed {seed}: {:?}",
                report.violations
            );
        }
    }
}
