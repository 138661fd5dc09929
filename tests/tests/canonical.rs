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
        // Scale scenarios (hundreds of nodes) take seconds per seed: a few seeds here,
        // the 500-seed sweep with the release binary.
        let seeds = if scenario.sim.node_count > 100 {
            2
        } else {
            sweep_seeds()
        };
        let mut reached = std::collections::BTreeSet::new();
        for seed in 0..seeds {
            let report = scenarios::run(&scenario, RunOptions::seed(seed)).expect("runs");
            reached.extend(report.coverage.keys().copied());
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
        // What the scenario promises to exercise, it exercises (`expect_reached`).
        let missed: Vec<&String> = scenario
            .expect_reached
            .iter()
            .filter(|p| !reached.contains(p.as_str()))
            .collect();
        assert!(
            missed.is_empty(),
            "{}: expect_reached points never reached in {seeds} seeds: {missed:?}",
            path.display()
        );
    }
}

/// Every recorded regression in the library still behaves as recorded: a seed recorded
/// without bug flags passes (the defect it found stays fixed); a seed recorded with bug
/// flags still fails with the recorded kind (the simulator still finds the defect).
#[test]
fn recorded_regressions_still_behave_as_recorded() {
    for path in library() {
        let scenario = Scenario::load(&path).expect("valid");
        for r in scenarios::regressions::load(&path).expect("regression file parses") {
            let options = RunOptions {
                bugs: r.bugs.clone(),
                ..RunOptions::seed(r.seed)
            };
            let report = scenarios::run(&scenario, options).expect("runs");
            if r.bugs.is_empty() {
                assert!(
                    report.passed(),
                    "{} seed {}: {:?}",
                    path.display(),
                    r.seed,
                    report.violations
                );
            } else {
                assert!(
                    report.violations.iter().any(|v| v.kind == r.kind),
                    "{} seed {} with {:?} no longer fails with {}: {:?}",
                    path.display(),
                    r.seed,
                    r.bugs,
                    r.kind,
                    report
                        .violations
                        .iter()
                        .map(|v| &v.kind)
                        .collect::<Vec<_>>()
                );
            }
        }
    }
}

/// Every bug flag of every protocol has a recorded seed on a canonical scenario that
/// finds it (found with `faultline explore --bug`), and that seed passes without the flag.
#[test]
fn every_bug_flag_is_found_by_a_canonical_scenario() {
    let mut recorded: Vec<(PathBuf, scenarios::regressions::Regression)> = Vec::new();
    for path in library() {
        for r in scenarios::regressions::load(&path).expect("regression file parses") {
            recorded.push((path.clone(), r));
        }
    }
    for protocol in scenarios::registry::PROTOCOLS {
        for flag in protocol.bug_flags {
            let detection = recorded
                .iter()
                .find(|(_, r)| r.bugs.len() == 1 && r.bugs[0] == flag.name);
            let Some((path, r)) = detection else {
                panic!(
                    "bug flag {} has no recorded detecting seed in scenarios/library",
                    flag.name
                );
            };
            let scenario = Scenario::load(path).expect("valid");
            let clean = scenarios::run(&scenario, RunOptions::seed(r.seed)).expect("runs");
            assert!(
                clean.passed(),
                "{} seed {} fails even without {}: {:?}",
                path.display(),
                r.seed,
                flag.name,
                clean.violations
            );
        }
    }
}

/// Every engine bug flag has a recorded detecting seed on a canonical scenario (a
/// protocol holding its durable state in that engine finds it), which passes without
/// the flag.
#[test]
fn engine_bug_flags_are_found_by_protocol_sweeps() {
    let mut recorded: Vec<(PathBuf, scenarios::regressions::Regression)> = Vec::new();
    for path in library() {
        for r in scenarios::regressions::load(&path).expect("regression file parses") {
            recorded.push((path.clone(), r));
        }
    }
    for flag in storage::bugs::ENGINE_BUGS {
        let detection = recorded
            .iter()
            .find(|(_, r)| r.bugs.len() == 1 && r.bugs[0] == flag.name);
        let Some((path, r)) = detection else {
            panic!(
                "engine bug flag {} has no recorded detecting seed in scenarios/library",
                flag.name
            );
        };
        let scenario = Scenario::load(path).expect("valid");
        let clean = scenarios::run(&scenario, RunOptions::seed(r.seed)).expect("runs");
        assert!(
            clean.passed(),
            "{} seed {} fails even without {}: {:?}",
            path.display(),
            r.seed,
            flag.name,
            clean.violations
        );
    }
}
