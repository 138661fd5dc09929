//! Every canonical scenario passes every checker over a range of seeds, and every bug
//! flag is found on a canonical scenario within a few seeds.
//!
//! CI runs `FAULTLINE_SWEEP_SEEDS` seeds per scenario (default 40); the protocol
//! contract's 500-seed sweep is the same test with `FAULTLINE_SWEEP_SEEDS=500`.

use std::path::PathBuf;

use scenarios::{RunOptions, Scenario};

fn library() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/library");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenario library")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn sweep_seeds() -> u64 {
    std::env::var("FAULTLINE_SWEEP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

#[test]
fn canonical_scenarios_pass_every_checker() {
    let files = library();
    assert!(files.len() >= 3);
    for path in files {
        let scenario = Scenario::load(&path).expect("canonical scenarios are valid");
        for seed in 0..sweep_seeds() {
            let report = scenarios::run(&scenario, RunOptions::seed(seed)).expect("runs");
            assert!(
                report.passed(),
                "{} seed {seed}: {}",
                path.display(),
                report
                    .violations
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
}

/// Each flag, the scenario that finds it, and the violation kind it must produce.
const FLAGS: &[(&str, &str, &str)] = &[
    (
        "broadcast.no_retransmit",
        "broadcast-lossy-partitions.toml",
        "missing_delivery",
    ),
    (
        "broadcast.no_dedup",
        "broadcast-lossy-partitions.toml",
        "duplicate_delivery",
    ),
    (
        "broadcast.no_relay",
        "broadcast-lossy-partitions.toml",
        "missing_delivery",
    ),
];

#[test]
fn every_bug_flag_is_found_within_a_few_seeds() {
    for protocol in scenarios::registry::PROTOCOLS {
        for flag in protocol.bug_flags {
            assert!(
                FLAGS.iter().any(|(name, _, _)| name == &flag.name),
                "bug flag {} has no detection test",
                flag.name
            );
        }
    }
    for &(flag, file, kind) in FLAGS {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios/library")
            .join(file);
        let scenario = Scenario::load(&path).expect("valid");
        let found = (0..30).find(|&seed| {
            let options = RunOptions {
                bugs: vec![flag.to_string()],
                ..RunOptions::seed(seed)
            };
            let report = scenarios::run(&scenario, options).expect("runs");
            report.violations.iter().any(|v| v.kind == kind)
        });
        assert!(found.is_some(), "{flag} not found by {file} in 30 seeds");
    }
}
