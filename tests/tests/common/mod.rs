//! What the engine-flag tests share: loading a canonical scenario and finding a flag's
//! violation in a known seed range.

#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;

use scenarios::{RunOptions, Scenario};

pub fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/library")
        .join(name);
    Scenario::load(&path).expect("canonical scenario")
}

/// Runs `seeds` of `file` with the engine flag `flag` until one finds a violation of
/// `kind`; asserts there is one and that the same seed passes without the flag.
pub fn detects(file: &str, flag: &str, seeds: std::ops::Range<u64>, kind: &str) -> u64 {
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
