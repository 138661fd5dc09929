//! The engine bug flags that only a purpose-built workload reaches, caught end to end by
//! a protocol on a canonical scenario (issue 18, part (b)), and the scenario features
//! that reach them: `[storage] lsm_memtable_bytes` / `lsm_level_base_bytes` and
//! `[workload] literal_values` / `literal_value_rate`.
//!
//! - `wal.apply_uncommitted_batch` — `raft-append-crash-points`: a half-replayed
//!   state-machine batch makes Raft apply an append twice.
//! - `wal.crc_excludes_header` — `raft-append-crash-points` too: after a crash, a stale
//!   record that only the header checksum would reject (of an earlier incarnation of
//!   the segment file), beyond the torn tail, reads as valid, so the tail looks like damage in the middle of the log and the node stops
//!   on corruption although its disk only crashed.
//! - `bitcask.in_band_tombstone` — `raft-edge-values`: a client's put of the sentinel
//!   vanishes when a Bitcask node restarts.
//! - `lsm.tombstone_dropped_early` — `dynamo-tombstone-collection`: a collected
//!   tombstone's record comes back from a deeper LSM level and the replicas disagree.
//! - `btree.crc_excludes_page_number` — `raft-btree-misdirected`: misdirected writes
//!   aimed at the B+tree's data file (`[disk] fault_paths`) with pages as large as the
//!   sectors (`[storage] btree_page_size`); a clobbered leaf reads as valid and, after a
//!   restart, its keys are gone.
//!
//! Each detection runs a small known seed range with the flag (the first detecting seed
//! is also recorded in the scenario's `.regressions` file) and checks that the detecting
//! seed passes without it. Rates: `docs/bug-zoo.md`.

mod common;

use common::{detects, scenario};
use scenarios::{RunOptions, Scenario};

#[test]
fn apply_uncommitted_batch_is_found_under_raft_appends() {
    detects(
        "raft-append-crash-points.toml",
        "wal.apply_uncommitted_batch",
        0..20,
        "not_linearizable",
    );
}

#[test]
fn crc_excludes_header_is_found_under_raft_appends() {
    detects(
        "raft-append-crash-points.toml",
        "wal.crc_excludes_header",
        142..143,
        "corruption_after_crashes",
    );
}

#[test]
fn in_band_tombstone_is_found_under_raft_edge_values() {
    detects(
        "raft-edge-values.toml",
        "bitcask.in_band_tombstone",
        0..6,
        "not_linearizable",
    );
}

#[test]
fn crc_excludes_page_number_is_found_under_raft_btree_misdirected() {
    detects(
        "raft-btree-misdirected.toml",
        "btree.crc_excludes_page_number",
        16..17,
        "not_linearizable",
    );
}

#[test]
fn tombstone_dropped_early_is_found_under_dynamo_tombstone_collection() {
    detects(
        "dynamo-tombstone-collection.toml",
        "lsm.tombstone_dropped_early",
        0..8,
        "merkle_roots_differ",
    );
}

/// Without the small LSM of `[storage] lsm_memtable_bytes` / `lsm_level_base_bytes`, a
/// node's data stays in the top levels, no older table outside a compaction holds a
/// deleted key, and the flag changes nothing on the detecting seed: the tuning is what
/// makes the defect reachable.
#[test]
fn tombstone_dropped_early_needs_a_multi_level_lsm() {
    let tuned = scenario("dynamo-tombstone-collection.toml");
    assert_eq!(tuned.engine_tuning.lsm_memtable_bytes, Some(1024));
    assert_eq!(tuned.engine_tuning.lsm_level_base_bytes, Some(2048));
    let text = tuned
        .text
        .lines()
        .filter(|l| !l.starts_with("lsm_"))
        .collect::<Vec<_>>()
        .join("\n");
    let untuned = Scenario::parse("untuned.toml", &text, "untuned").expect("valid");
    assert_eq!(untuned.engine_tuning.lsm_memtable_bytes, None);
    let options = || RunOptions {
        bugs: vec!["lsm.tombstone_dropped_early".to_string()],
        ..RunOptions::seed(3)
    };
    let tuned_run = scenarios::run(&tuned, options()).expect("runs");
    assert!(!tuned_run.passed());
    let untuned_run = scenarios::run(&untuned, options()).expect("runs");
    assert!(untuned_run.passed(), "{:?}", untuned_run.violations);
}

#[test]
fn lsm_tuning_is_read_and_range_checked() {
    let base = "protocol = \"raft\"\nnodes = 3\nduration = \"1s\"\n[storage]\nengine = \"lsm\"\n";
    let ok = Scenario::parse(
        "t.toml",
        &format!("{base}lsm_memtable_bytes = 1024\nlsm_level_base_bytes = 4096\n"),
        "t",
    )
    .expect("valid");
    assert_eq!(ok.engine_tuning.lsm_memtable_bytes, Some(1024));
    assert_eq!(ok.engine_tuning.lsm_level_base_bytes, Some(4096));
    for (line, expected) in [
        (
            "lsm_memtable_bytes = 100",
            "lsm_memtable_bytes 100 is out of range: expected 256",
        ),
        (
            "lsm_level_base_bytes = 2000000000",
            "lsm_level_base_bytes 2000000000 is out of range: expected 256",
        ),
    ] {
        let err = Scenario::parse("t.toml", &format!("{base}{line}\n"), "t")
            .expect_err(line)
            .to_string();
        assert!(err.contains(expected), "{line}: {err}");
    }
}

#[test]
fn literal_values_are_read_and_validated() {
    let base = "protocol = \"raft\"\nnodes = 3\nduration = \"1s\"\n[workload]\n";
    let ok = Scenario::parse(
        "t.toml",
        &format!("{base}literal_values = [\"\", \"x\"]\nliteral_value_rate = 0.1\n"),
        "t",
    )
    .expect("valid");
    assert_eq!(
        ok.kv_literal_values,
        (vec![String::new(), "x".to_string()], 0.1)
    );
    let none = Scenario::parse("t.toml", base, "t").expect("valid");
    assert_eq!(none.kv_literal_values, (Vec::new(), 0.0));
    let long = format!(
        "literal_values = [\"{}\"]\nliteral_value_rate = 0.1",
        "a".repeat(300)
    );
    for (text, expected) in [
        (format!("{base}literal_values = [\"x\"]\n"), "needs `literal_value_rate`"),
        (format!("{base}literal_value_rate = 0.1\n"), "needs `literal_values`"),
        (
            format!("{base}literal_values = []\nliteral_value_rate = 0.1\n"),
            "has 0 values: expected 1 to 16",
        ),
        (
            format!("{base}literal_values = [\"x\"]\nliteral_value_rate = 1.5\n"),
            "`literal_value_rate` 1.5 is out of range: expected 0 to 1",
        ),
        (format!("{base}{long}\n"), "expected at most 256"),
        (
            "protocol = \"two_pc\"\nnodes = 3\nduration = \"1s\"\n[workload]\nliteral_values = [\"x\"]\nliteral_value_rate = 0.1\n".to_string(),
            "`literal_values` applies to key-value protocols, not two_pc",
        ),
    ] {
        let err = Scenario::parse("t.toml", &text, "t")
            .expect_err(&text)
            .to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

/// `raft-btree-misdirected` reaches `btree.crc_excludes_page_number` because its faults
/// are aimed at the B+tree's data file and its pages are as large as the sectors: on
/// the detecting seed, the scenario without either finds nothing.
#[test]
fn crc_excludes_page_number_needs_aimed_faults_and_page_sized_sectors() {
    let tuned = scenario("raft-btree-misdirected.toml");
    assert_eq!(tuned.sim.disk.fault_paths, vec!["raft/state/btree.db"]);
    assert_eq!(tuned.engine_tuning.btree_page_size, Some(1024));
    let options = || RunOptions {
        bugs: vec!["btree.crc_excludes_page_number".to_string()],
        ..RunOptions::seed(16)
    };
    assert!(!scenarios::run(&tuned, options()).expect("runs").passed());
    let without = |keys: &[&str]| {
        tuned
            .text
            .lines()
            .filter(|l| !keys.iter().any(|k| l.starts_with(k)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (what, keys) in [
        ("unaimed", &["fault_paths"][..]),
        (
            "4 KiB pages and sectors",
            &["btree_page_size", "sector_size"][..],
        ),
    ] {
        let text = without(keys);
        let variant = Scenario::parse("variant.toml", &text, "variant").expect("valid");
        let report = scenarios::run(&variant, options()).expect("runs");
        assert!(report.passed(), "{what}: {:?}", report.violations);
    }
}

#[test]
fn aimed_faults_and_btree_page_size_are_read_and_validated() {
    let base = "protocol = \"raft\"\nnodes = 3\nduration = \"1s\"\n";
    let ok = Scenario::parse(
        "t.toml",
        &format!(
            "{base}[disk]\nmisdirected_write = 0.1\nfault_paths = [\"raft/state\", \"raft/log\"]\n[storage]\nengine = \"btree\"\nbtree_page_size = 2048\n"
        ),
        "t",
    )
    .expect("valid");
    assert_eq!(ok.sim.disk.fault_paths, vec!["raft/state", "raft/log"]);
    assert_eq!(ok.engine_tuning.btree_page_size, Some(2048));
    let none = Scenario::parse("t.toml", base, "t").expect("valid");
    assert!(none.sim.disk.fault_paths.is_empty());
    assert_eq!(none.engine_tuning.btree_page_size, None);
    for (text, expected) in [
        (
            "[disk]\nfault_paths = []\n",
            "t.toml:5:15: fault_paths has 0 entries; expected 1 to 16",
        ),
        (
            "[disk]\nfault_paths = [\"/abs\"]\n",
            "fault_paths entry \"/abs\" is invalid; expected a relative path prefix",
        ),
        (
            "[disk]\nfault_paths = [\"./raft\"]\n",
            "fault_paths entry \"./raft\" is invalid",
        ),
        (
            "[disk]\nfault_paths = [\"raft//state\"]\n",
            "fault_paths entry \"raft//state\" is invalid",
        ),
        (
            "[storage]\nengine = \"btree\"\nbtree_page_size = 1000\n",
            "btree_page_size 1000 is invalid: expected a power of two from 1024 to 32768",
        ),
        (
            "[storage]\nengine = \"btree\"\nbtree_page_size = 512\n",
            "btree_page_size 512 is invalid",
        ),
    ] {
        let err = Scenario::parse("t.toml", &format!("{base}{text}"), "t")
            .expect_err(text)
            .to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}
