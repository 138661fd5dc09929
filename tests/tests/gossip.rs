//! SWIM gossip membership: every bug flag is found by its canonical scenario on a known
//! seed range, and the same scenarios are clean over a sweep without flags.

use std::path::PathBuf;

use scenarios::{RunOptions, Scenario};

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/library")
        .join(format!("{name}.toml"));
    Scenario::load(&path).expect("valid scenario")
}

fn fails_with(s: &Scenario, seed: u64, bug: &str) -> Vec<String> {
    let options = RunOptions {
        bugs: vec![bug.to_string()],
        ..RunOptions::seed(seed)
    };
    let report = scenarios::run(s, options).expect("runs");
    report.violations.iter().map(|v| v.kind.clone()).collect()
}

#[test]
fn every_bug_flag_is_detected_within_ten_seeds() {
    let cases = [
        ("gossip-lossy", "gossip.no_suspicion", "accuracy"),
        ("gossip-lossy", "gossip.no_indirect_probe", "accuracy"),
        ("gossip-lossy", "gossip.no_refute", "accuracy"),
        (
            "gossip-crash-restart",
            "gossip.wrong_precedence",
            "precedence",
        ),
        (
            "gossip-partitions",
            "gossip.stale_alive_resurrects",
            "resurrection",
        ),
        (
            "gossip-crash-restart",
            "gossip.incarnation_reset_on_restart",
            "incarnation_reused",
        ),
    ];
    for (name, bug, kind) in cases {
        let s = scenario(name);
        let found = (0..10).find(|&seed| fails_with(&s, seed, bug).iter().any(|k| k == kind));
        assert!(
            found.is_some(),
            "{bug} not found as {kind} on {name} seeds 0..10"
        );
    }
}

#[test]
fn canonical_scenarios_are_clean_without_flags() {
    for (name, seeds) in [
        ("gossip-steady", 100),
        ("gossip-lossy", 100),
        ("gossip-partitions", 100),
        ("gossip-crash-restart", 200),
    ] {
        let s = scenario(name);
        for seed in 0..seeds {
            let report = scenarios::run(&s, RunOptions::seed(seed)).expect("runs");
            assert!(
                report.passed(),
                "{name} seed {seed}: {:?}",
                report.violations
            );
        }
    }
}

#[test]
fn gossip_runs_are_repeatable() {
    let s = scenario("gossip-crash-restart");
    for seed in 0..5 {
        let a = scenarios::run(&s, RunOptions::seed(seed)).expect("runs");
        let b = scenarios::run(&s, RunOptions::seed(seed)).expect("runs");
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.metrics, b.metrics);
    }
}
