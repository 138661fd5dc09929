//! Multi-leader replication on its canonical scenarios: every bug flag is detected on a
//! known seed of its scenario, the scenarios are clean over a few dozen seeds with no
//! flags, runs are repeatable, and the scenarios do what they say (faults happen,
//! changes are forwarded, crashed nodes recover, full-state shipping costs more bytes).
//!
//! `FAULTLINE_MULTI_LEADER_SEEDS` widens the clean sweep (per scenario; default 30); the
//! contract's 500-seed sweep is `faultline explore <file> --seeds 0..500`.

use std::path::PathBuf;

use scenarios::{RunOptions, RunReport, Scenario};
use sim_core::fault::FaultKind;

const SCENARIOS: [&str; 6] = [
    "steady",
    "ring-partitions",
    "star-crash-restart",
    "custom-mixed",
    "clock-skew",
    "custom-merge",
];

fn load(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../scenarios/library/multi_leader-{name}.toml"));
    Scenario::load(&path).expect("valid scenario")
}

fn run(scenario: &Scenario, seed: u64, bugs: &[&str]) -> RunReport {
    let options = RunOptions {
        bugs: bugs.iter().map(|b| b.to_string()).collect(),
        ..RunOptions::seed(seed)
    };
    scenarios::run(scenario, options).expect("runs")
}

fn metric(report: &RunReport, name: &str) -> u64 {
    report
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
        .value
}

fn sweep_seeds() -> u64 {
    std::env::var("FAULTLINE_MULTI_LEADER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// Each flag, the scenario that finds it, the detecting seed recorded in its
/// `.regressions`, and the violation kinds it may cause.
const DETECTIONS: [(&str, &str, u64, &[&str]); 7] = [
    (
        "multi_leader.gcounter_merge_sums",
        "steady",
        0,
        &["counter_out_of_range", "diverged"],
    ),
    (
        "multi_leader.replica_slot_collision",
        "steady",
        0,
        &["counter_out_of_range", "diverged"],
    ),
    (
        "multi_leader.lww_no_tiebreak",
        "clock-skew",
        0,
        &["lww_conflict_misresolved", "diverged", "lww_not_maximal"],
    ),
    (
        "multi_leader.orset_remove_unobserved",
        "ring-partitions",
        0,
        &["diverged", "orset_add_lost"],
    ),
    (
        "multi_leader.dot_counter_not_persisted",
        "star-crash-restart",
        0,
        &["dot_reused", "orset_add_lost", "mv_lost_write"],
    ),
    (
        "multi_leader.mvreg_collapse",
        "custom-mixed",
        0,
        &["mv_lost_write"],
    ),
    (
        "multi_leader.same_origin_conflicts_ignored",
        "custom-merge",
        0,
        &["conflict_unrecorded"],
    ),
];

#[test]
fn every_bug_flag_is_detected_on_its_scenario_and_the_seed_is_clean_without_it() {
    for (flag, name, seed, kinds) in DETECTIONS {
        let scenario = load(name);
        let report = run(&scenario, seed, &[flag]);
        assert!(
            report
                .violations
                .iter()
                .any(|v| kinds.contains(&v.kind.as_str())),
            "{flag} on {name} seed {seed}: {:?}",
            report.violations
        );
        let clean = run(&scenario, seed, &[]);
        assert!(clean.passed(), "{name} seed {seed}: {:?}", clean.violations);
    }
}

#[test]
fn every_flag_is_detected_on_most_of_a_small_range() {
    // Not just one lucky seed: each flag fails at least half of seeds 0..6.
    for (flag, name, _, _) in DETECTIONS {
        let scenario = load(name);
        let failing = (0..6)
            .filter(|&seed| !run(&scenario, seed, &[flag]).passed())
            .count();
        assert!(failing >= 3, "{flag} on {name}: {failing} of 6 seeds fail");
    }
}

#[test]
fn canonical_scenarios_are_clean_without_flags() {
    for name in SCENARIOS {
        let scenario = load(name);
        for seed in 0..sweep_seeds() {
            let report = run(&scenario, seed, &[]);
            assert!(
                report.passed(),
                "{name} seed {seed}: {}",
                report
                    .violations
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            assert!(!report.hit_event_limit);
            assert!(metric(&report, "local_writes") > 20, "{name} seed {seed}");
        }
    }
}

#[test]
fn runs_are_repeatable_and_seeds_differ() {
    for name in SCENARIOS {
        let scenario = load(name);
        let a = run(&scenario, 5, &[]);
        let b = run(&scenario, 5, &[]);
        assert_eq!(a.trace_hash, b.trace_hash, "{name}");
        assert_eq!(a.metrics, b.metrics, "{name}");
        assert_ne!(a.trace_hash, run(&scenario, 6, &[]).trace_hash, "{name}");
    }
}

#[test]
fn the_scenarios_do_what_they_say() {
    for seed in 0..5 {
        // Faults happen where the scenario says they do.
        let ring = run(&load("ring-partitions"), seed, &[]);
        assert!(ring.stats.faults.contains_key(&FaultKind::Partition));
        let star = run(&load("star-crash-restart"), seed, &[]);
        assert!(star.stats.faults.contains_key(&FaultKind::Crash));
        // A ring forwards: each update is applied at every other node (4 of 5).
        let writes = metric(&ring, "local_writes");
        let applies = metric(&ring, "remote_applies");
        assert_eq!(
            applies,
            writes * 4,
            "each of {writes} writes applied once at 4 nodes"
        );
        // Full-state shipping (custom-mixed) ships more than a delta would.
        let custom = run(&load("custom-mixed"), seed, &[]);
        assert!(
            metric(&custom, "state_bytes_per_update") > metric(&custom, "delta_bytes_per_update")
        );
    }
}

#[test]
fn custom_merge_records_conflicts_and_collects_them_once_stable() {
    for seed in 0..3 {
        let report = run(&load("custom-merge"), seed, &[]);
        assert!(report.passed(), "seed {seed}: {:?}", report.violations);
        let made = metric(&report, "conflict_records");
        let collected = metric(&report, "conflict_records_collected");
        assert!(made > 20, "seed {seed}: {made} conflict records");
        // Records are collected once their change is stable everywhere and 300 ms old;
        // by the end of the quiet phase none is left on any node, nor any log entry.
        assert_eq!(
            collected, made,
            "seed {seed}: {collected} of {made} collected"
        );
        assert_eq!(metric(&report, "final_records_max"), 0, "seed {seed}");
        assert_eq!(metric(&report, "final_log_entries_max"), 0, "seed {seed}");
    }
}
