//! The bully scenarios are deterministic: every library scenario gives the same trace hash
//! (and the same measured split-brain time) when a seed is run twice, and different seeds
//! give different runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use scenarios::{RunOptions, Scenario};

fn bully_library() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/library");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenario library")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("bully-"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn bully_runs_are_repeatable_and_seeds_differ() {
    let files = bully_library();
    assert!(files.len() >= 5, "{files:?}");
    for path in files {
        let scenario = Scenario::load(&path).expect("valid");
        let mut hashes: BTreeMap<u64, u64> = BTreeMap::new();
        for seed in 0..20 {
            let first = scenarios::run(&scenario, RunOptions::seed(seed)).expect("runs");
            let second = scenarios::run(&scenario, RunOptions::seed(seed)).expect("runs");
            assert_eq!(
                first.trace_hash,
                second.trace_hash,
                "{} seed {seed}",
                path.display()
            );
            assert_eq!(
                first.metrics,
                second.metrics,
                "{} seed {seed}",
                path.display()
            );
            if let Some(other) = hashes.insert(first.trace_hash, seed) {
                panic!("{}: seeds {other} and {seed} gave one hash", path.display());
            }
        }
    }
}
