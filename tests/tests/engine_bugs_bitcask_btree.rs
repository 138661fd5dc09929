//! The Bitcask and B+tree engine bug flags (`storage::bugs`), caught end to end: Raft
//! keeps its state machine in the engines of a canonical scenario, and with the flag on
//! a small known range of seeds finds a violation (found with `faultline explore
//! --bug`, see `docs/bug-zoo.md`), while the detecting seed passes without the flag.
//! The engine-level tests of the same flags are in
//! `storage/tests/engine_bugs_bitcask_btree.rs`.

use std::path::PathBuf;

use scenarios::{RunOptions, Scenario};

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/library")
        .join(name);
    Scenario::load(&path).expect("canonical scenario")
}

/// Runs `seeds` of `file` with the engine flag `flag` until one finds a violation of
/// `kind`; asserts there is one and that the same seed passes without the flag.
fn detects(file: &str, flag: &str, seeds: std::ops::Range<u64>, kind: &str) -> u64 {
    let scenario = scenario(file);
    let mut kinds_seen = Vec::new();
    for seed in seeds.clone() {
        let options = RunOptions {
            bugs: vec![flag.to_string()],
            ..RunOptions::seed(seed)
        };
        let report = scenarios::run(&scenario, options).expect("runs");
        if report.violations.iter().any(|v| v.kind == kind) {
            let clean = scenarios::run(&scenario, RunOptions::seed(seed)).expect("runs");
            assert!(
                clean.passed(),
                "{file} seed {seed} fails even without {flag}: {:?}",
                clean.violations
            );
            return seed;
        }
        kinds_seen.extend(report.violations.iter().map(|v| v.kind.clone()));
    }
    panic!("{file} with {flag}: no `{kind}` violation in seeds {seeds:?} (saw {kinds_seen:?})");
}
