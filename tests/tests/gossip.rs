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
fn every_bug_flag_is_detected_on_a_known_seed_range() {
    // (scenario, flag, violation kind, seeds searched). Without PING-REQ a cut pair's
    // suspicion must run out before the refutation arrives; with every failed probe of a
    // suspect confirming it (Lifeguard) that happens on 4 seeds of 300, the first 21.
    let cases = [
        ("gossip-lossy", "gossip.no_suspicion", "accuracy", 10),
        ("gossip-lossy", "gossip.no_indirect_probe", "accuracy", 30),
        ("gossip-lossy", "gossip.no_refute", "accuracy", 10),
        (
            "gossip-crash-restart",
            "gossip.wrong_precedence",
            "precedence",
            10,
        ),
        (
            "gossip-partitions",
            "gossip.stale_alive_resurrects",
            "resurrection",
            30,
        ),
        (
            "gossip-crash-restart",
            "gossip.incarnation_reset_on_restart",
            "incarnation_reused",
            10,
        ),
    ];
    for (name, bug, kind, seeds) in cases {
        let s = scenario(name);
        let found = (0..seeds).find(|&seed| fails_with(&s, seed, bug).iter().any(|k| k == kind));
        assert!(
            found.is_some(),
            "{bug} not found as {kind} on {name} seeds 0..{seeds}"
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

/// Ten members running the reference's heartbeat detector; node 3 crashes at 4 s and
/// stays down.
fn baseline(drop: f64) -> Scenario {
    let text = format!(
        r#"
protocol = "gossip"
nodes = 10
duration = "20s"
quiet_period = "5s"

[settings]
detector = "baseline"

[network]
drop = {drop}

[[schedule]]
at = "4s"
fault = "crash"
node = 3
"#
    );
    Scenario::parse("baseline.toml", &text, "gossip-baseline").expect("valid scenario")
}

fn metric(report: &scenarios::RunReport, name: &str) -> u64 {
    report
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
        .value
}

#[test]
fn baseline_detector_declares_a_crashed_member_dead_at_every_member() {
    let s = baseline(0.0);
    for seed in 0..10 {
        let report = scenarios::run(&s, RunOptions::seed(seed)).expect("runs");
        // Every one of the nine live members declares n3 dead, and nobody else dies.
        assert_eq!(metric(&report, "detections"), 9, "seed {seed}");
        assert_eq!(metric(&report, "undetected"), 0, "seed {seed}");
        assert_eq!(metric(&report, "false_positives"), 0, "seed {seed}");
        // Ten rounds (2 s) without a newer heartbeat, plus the heartbeat's way round.
        let p99 = metric(&report, "detection_p99_us");
        assert!((2_000_000..3_000_000).contains(&p99), "seed {seed}: {p99}");
        // Completeness included: its bound counts the heartbeat's way to each observer
        // (it did not, and every seed failed although every pair was detected).
        assert!(report.passed(), "seed {seed}: {:?}", report.violations);
    }
}

#[test]
fn baseline_fixed_thresholds_declare_live_members_dead_under_heavy_loss() {
    // At 20% loss ten rounds without a newer heartbeat is still rare for a live member;
    // at 30% the fixed threshold is crossed and live members are declared dead (the
    // checker fails such a run: loss only, so every false DEAD is an accuracy violation).
    let moderate = baseline(0.2);
    for seed in 0..10 {
        let report = scenarios::run(&moderate, RunOptions::seed(seed)).expect("runs");
        assert_eq!(metric(&report, "false_positives"), 0, "seed {seed}");
    }
    let heavy = baseline(0.3);
    let found = (0..50).find(|&seed| {
        let report = scenarios::run(&heavy, RunOptions::seed(seed)).expect("runs");
        metric(&report, "false_positives") > 0
            && report.violations.iter().any(|v| v.kind == "accuracy")
    });
    assert!(found.is_some(), "no false DEAD at 30% loss on seeds 0..50");
}

#[test]
fn baseline_messages_carry_the_whole_table_and_swim_messages_do_not() {
    // The reference's O(n) messages, kept in the baseline; SWIM's are bounded by
    // max_piggyback (8) and push_pull_entries (64) whatever the group size.
    let text = |detector: &str| {
        format!(
            r#"
protocol = "gossip"
nodes = 100
duration = "3s"
quiet_period = "1s"

[settings]
detector = "{detector}"
"#
        )
    };
    let largest = |detector: &str| {
        let s = Scenario::parse("size.toml", &text(detector), "gossip-size").expect("valid");
        let options = RunOptions {
            keep_trace_lines: true,
            ..RunOptions::seed(1)
        };
        let report = scenarios::run(&s, options).expect("runs");
        report
            .trace_lines
            .iter()
            .filter(|l| l.kind == "send")
            .map(|l| l.text.matches('@').count())
            .max()
            .unwrap_or(0)
    };
    assert!(largest("baseline") >= 90, "{}", largest("baseline"));
    assert!(largest("swim") <= 64, "{}", largest("swim"));
}

/// Twenty members running SWIM + Lifeguard without loss; node 7 crashes at 4 s and stays
/// down until the quiet phase (25 s).
fn lifeguard_crash() -> Scenario {
    let text = r#"
protocol = "gossip"
nodes = 20
duration = "30s"
quiet_period = "5s"

[settings]
lifeguard = true

[[schedule]]
at = "4s"
fault = "crash"
node = 7
"#;
    Scenario::parse("lifeguard.toml", text, "gossip-lifeguard-crash").expect("valid scenario")
}

#[test]
fn lifeguard_counts_every_failed_probe_of_a_suspect_as_a_confirmation() {
    // A suspicion starts at the maximum timeout (6 × the minimum) and falls to the
    // minimum with four independent confirmations. Every member that then probes the
    // crashed member and fails confirms the suspicion (memberlist's suspectNode →
    // Confirm). Before, only members whose view was still ALIVE could accuse, and the
    // suspicion spreads faster than probes, so one accuser stayed alone and every
    // observer ran the maximum timeout (9.4 s at 20 members) from when it heard.
    let s = lifeguard_crash();
    let config = protocols::gossip::Config::default();
    let max = config.suspicion_max(20).as_micros();
    for seed in 0..8 {
        let report = scenarios::run(&s, RunOptions::seed(seed)).expect("runs");
        assert_eq!(metric(&report, "detections"), 19, "seed {seed}");
        assert_eq!(metric(&report, "undetected"), 0, "seed {seed}");
        let p99 = metric(&report, "detection_p99_us");
        assert!(
            p99 < max / 2,
            "seed {seed}: p99 {p99} µs, maximum suspicion {max} µs"
        );
        assert!(report.passed(), "seed {seed}: {:?}", report.violations);
    }
}

#[test]
fn completeness_bound_is_tight_enough_to_fail_a_detector_that_never_confirms() {
    use std::sync::Arc;

    use protocols::gossip::checker::DetectorChecker;
    use protocols::gossip::{Bugs, Config, Node, Settings};
    use sim_core::trace::TraceOptions;
    use sim_core::{Checker, Simulation};

    let s = lifeguard_crash();
    let judged = Config::default();
    // The bound at 20 members is a few seconds, far below the run; the old one,
    // (2n + 1) periods × max health + max suspicion, was 75 s and could never fail here.
    let bound = judged.detection_bound(20);
    assert!(bound.as_micros() < 12_000_000, "{bound:?}");
    let kinds = |nodes: Config, seed: u64| -> Vec<String> {
        let nodes = Arc::new(nodes);
        let opener = scenarios::engines::opener(
            "btree",
            storage::kv::EngineSyncPolicy::EveryWrite,
            Default::default(),
        )
        .expect("engine");
        let factory = move |_node| {
            Node::new(
                Settings {
                    config: nodes.clone(),
                    leave_at: None,
                    engine: opener.clone(),
                },
                Bugs::default(),
            )
        };
        let sim = Simulation::new(s.sim_config(seed), factory, None, TraceOptions::default())
            .expect("valid");
        let output = sim.run();
        DetectorChecker {
            config: judged.clone(),
        }
        .check(&output)
        .into_iter()
        .map(|v| v.kind)
        .collect()
    };
    // A detector whose suspicions never run out (a 10,000-fold suspicion multiplier:
    // it suspects, gossips the suspicion, and never confirms), judged against the
    // configured bound, fails completeness on every seed; the real one passes.
    let never_confirms = Config {
        suspicion_mult: 10_000,
        ..Config::default()
    };
    for seed in 0..4 {
        let broken = kinds(never_confirms.clone(), seed);
        assert!(
            broken.iter().any(|k| k == "completeness"),
            "seed {seed}: {broken:?}"
        );
        let fine = kinds(Config::default(), seed);
        assert!(
            !fine.iter().any(|k| k == "completeness"),
            "seed {seed}: {fine:?}"
        );
    }
}

#[test]
fn push_pull_sweep_retries_a_slice_until_its_reply_arrives() {
    // Forty members, slices of four (ten per sweep), 20% loss, and no periodic
    // push-pull within the run: only the join sweep, one slice per period, exchanges
    // tables. A push-pull round trip is lost about a third of the time; the cursor used
    // to move on regardless, so a member's lost slices were left out until a next sweep
    // (`push_pull_interval` × ten later) and pairs of members could stay unknown to each
    // other. Now every member gets a reply for every slice of the id space.
    let text = r#"
protocol = "gossip"
nodes = 40
duration = "12s"
quiet_period = "2s"

[settings]
push_pull_entries = 4
push_pull_interval = "60s"

[network]
drop = 0.2
"#;
    let s = Scenario::parse("sweep.toml", text, "gossip-sweep").expect("valid scenario");
    for seed in 0..3 {
        let options = RunOptions {
            keep_trace_lines: true,
            ..RunOptions::seed(seed)
        };
        let report = scenarios::run(&s, options).expect("runs");
        let mut answered = std::collections::BTreeSet::new();
        for line in report.trace_lines.iter().filter(|l| l.kind == "deliver") {
            let t = &line.text;
            let Some(rest) = t.split(" deliver ").nth(1) else {
                continue;
            };
            if !t.ends_with("reply: false }") || !rest.contains("PushPull { from: ") {
                continue;
            }
            let to: u32 = t[1..t.find(' ').expect("node")].parse().expect("node id");
            let from = rest.split("PushPull { from: ").nth(1).expect("slice");
            let start: u32 = from[..from.find(',').expect("comma")]
                .parse()
                .expect("slice start");
            answered.insert((to, start));
        }
        for node in 0..40u32 {
            for start in (0..40u32).step_by(4) {
                assert!(
                    answered.contains(&(node, start)),
                    "seed {seed}: n{node} never got a reply for slice {start}"
                );
            }
        }
    }
}

// ---- The reference's behaviours to keep (seed digest, gossip), under its `instant`
// delivery: the baseline detector is the reference's model, so it must still behave as
// the reference's tests expected.

/// Five members on the `instant` network; `extra` adds faults or settings.
fn instant_baseline(extra: &str) -> Scenario {
    let text = format!(
        r#"
protocol = "gossip"
nodes = 5
duration = "14s"
quiet_period = "1s"

[network]
profile = "instant"

{extra}
"#
    );
    Scenario::parse("instant-baseline.toml", &text, "gossip-instant-baseline").expect("valid")
}

/// `(time µs, state, incarnation)` of every change in `observer`'s view of `member`.
fn view_changes(
    report: &scenarios::RunReport,
    observer: u32,
    member: u32,
) -> Vec<(u64, String, u64)> {
    let prefix = format!("n{observer} observe View {{ member: NodeId({member}), state: ");
    report
        .trace_lines
        .iter()
        .filter(|l| l.text.starts_with(&prefix))
        .map(|l| {
            let rest = &l.text[prefix.len()..];
            let state = rest.split(',').next().expect("state").to_string();
            let inc = rest
                .split("incarnation: ")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|s| s.parse().ok())
                .expect("incarnation");
            (l.time.as_micros(), state, inc)
        })
        .collect()
}

fn run_kept(s: &Scenario, seed: u64) -> scenarios::RunReport {
    let report = scenarios::run(
        s,
        RunOptions {
            keep_trace_lines: true,
            ..RunOptions::seed(seed)
        },
    )
    .expect("runs");
    assert!(report.passed(), "seed {seed}: {:?}", report.violations);
    report
}

/// alive → suspected → dead → deleted at every member; a dead member is never revived at
/// its incarnation; once deleted it rejoins fresh (at a higher incarnation) when it
/// comes back.
#[test]
fn under_instant_delivery_the_baseline_lifecycle_is_the_references() {
    let s = instant_baseline(
        "[settings]\ndetector = \"baseline\"\n\n[[schedule]]\nat = \"2s\"\nfault = \"crash\"\nnode = 3\n\n[[schedule]]\nat = \"10s\"\nfault = \"restart\"\nnode = 3\n",
    );
    const RESTART_US: u64 = 10_000_000;
    for seed in 0..5 {
        let report = run_kept(&s, seed);
        for observer in [0, 1, 2, 4] {
            let changes = view_changes(&report, observer, 3);
            let states: Vec<&str> = changes.iter().map(|(_, s, _)| s.as_str()).collect();
            let pos = |want: &str| states.iter().position(|s| *s == want);
            let (Some(sus), Some(dead), Some(removed)) =
                (pos("Suspect"), pos("Dead"), pos("Removed"))
            else {
                panic!("seed {seed}: n{observer}'s view of n3 went {states:?}");
            };
            assert!(
                sus < dead && dead < removed,
                "seed {seed}: n{observer}: {states:?}"
            );
            // Never revived at the incarnation it died at.
            let died_at = changes[dead].2;
            assert!(
                !changes[dead..]
                    .iter()
                    .any(|(_, s, i)| s == "Alive" && *i <= died_at),
                "seed {seed}: n{observer} revived n3: {changes:?}"
            );
            // Back after its restart, fresh: alive at a higher incarnation.
            let back = changes[removed..].iter().find(|(_, s, _)| s == "Alive");
            assert!(
                back.is_some_and(|(t, _, i)| *i > died_at && *t >= RESTART_US),
                "seed {seed}: n{observer} never saw n3 rejoin: {changes:?}"
            );
        }
    }
}

/// A member that leaves announces it to every active peer: under instant delivery every
/// other member marks it `Left` at the moment it leaves, and never revives it.
#[test]
fn under_instant_delivery_a_leave_reaches_every_active_peer_at_once() {
    const LEAVE_US: u64 = 3_000_000;
    for detector in ["baseline", "swim"] {
        let s = instant_baseline(&format!(
            "[settings]\ndetector = \"{detector}\"\nleave = [{{ node = 2, at = \"3s\" }}]\n"
        ));
        for seed in 0..5 {
            let report = run_kept(&s, seed);
            for observer in [0, 1, 3, 4] {
                let changes = view_changes(&report, observer, 2);
                let left = changes.iter().position(|(_, s, _)| s == "Left");
                let Some(left) = left else {
                    panic!("{detector} seed {seed}: n{observer} never saw n2 leave: {changes:?}");
                };
                assert_eq!(
                    changes[left].0, LEAVE_US,
                    "{detector} seed {seed}: n{observer}"
                );
                assert!(
                    !changes[left..].iter().any(|(_, s, _)| s == "Alive"),
                    "{detector} seed {seed}: n{observer} revived n2: {changes:?}"
                );
            }
        }
    }
}
