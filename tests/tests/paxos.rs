//! Multi-Paxos's mechanisms, each shown doing its job in a short run — phase 1 once in
//! steady state, batching, catch-up by decided values and by snapshot, majorities,
//! lease reads — and the reference's behaviours worth keeping, under the `instant`
//! network profile (its delivery) as well as under faults. Every run must also pass all
//! of Paxos's checkers (invariants and linearizability).

use scenarios::{RunOptions, RunReport, Scenario};

fn run(name: &str, text: &str, seed: u64) -> RunReport {
    let scenario = Scenario::parse(&format!("{name}.toml"), text, name).expect("valid scenario");
    let options = RunOptions {
        keep_trace_lines: true,
        ..RunOptions::seed(seed)
    };
    let report = scenarios::run(&scenario, options).expect("runs");
    assert!(
        report.passed(),
        "{name} seed {seed}: {:?}",
        report
            .violations
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
    );
    report
}

fn metric(report: &RunReport, name: &str) -> u64 {
    report
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("metric {name}"))
        .value
}

/// The trace lines of node `node` that contain `needle`.
fn lines<'r>(report: &'r RunReport, node: Option<u32>, needle: &str) -> Vec<&'r str> {
    let prefix = node.map(|n| format!("n{n} "));
    report
        .trace_lines
        .iter()
        .filter(|l| l.text.contains(needle))
        .filter(|l| {
            prefix
                .as_ref()
                .is_none_or(|p| l.text.starts_with(p.as_str()))
        })
        .map(|l| l.text.as_str())
        .collect()
}

/// The slots of `node`'s `Applied` observations, in order.
fn applied_slots(report: &RunReport, node: u32) -> Vec<u64> {
    lines(report, Some(node), "observe Applied")
        .iter()
        .map(|l| {
            l.split("slot: ")
                .nth(1)
                .expect("slot")
                .split(',')
                .next()
                .unwrap()
                .trim()
                .parse()
                .expect("a number")
        })
        .collect()
}

fn ops_ok(report: &RunReport) -> u64 {
    report.stats.operations_ok
}

const STEADY: &str = r#"
protocol = "paxos"
nodes = 5
duration = "6s"
quiet_period = "1s"

[workload]
clients = 4
think = { min = "5ms", max = "30ms" }
timeout = "500ms"
keys = 5

[storage]
engines = ["lsm", "bitcask", "btree"]
"#;

#[test]
fn in_steady_state_phase_one_runs_about_once_then_phase_two_only() {
    for seed in 0..3 {
        let report = run("steady", STEADY, seed);
        let phase1 = metric(&report, "phase1_rounds");
        let commands = metric(&report, "committed_commands");
        assert!(
            commands >= 400,
            "seed {seed}: only {commands} commands committed"
        );
        assert!(
            phase1 <= 2,
            "seed {seed}: {phase1} phase-1 rounds in a fault-free run"
        );
        assert!(metric(&report, "phase1_per_1000_commands") <= 5);
    }
}

#[test]
fn under_instant_delivery_one_leader_decides_everything() {
    let text = STEADY.replace("nodes = 5", "nodes = 3") + "\n[network]\nprofile = \"instant\"\n";
    for seed in 0..3 {
        let report = run("instant", &text, seed);
        assert_eq!(metric(&report, "phase1_rounds"), 1, "seed {seed}");
        assert_eq!(lines(&report, None, "observe BecameLeader").len(), 1);
        // Every node applied the same contiguous sequence of slots from 1.
        let first = applied_slots(&report, 0);
        assert!(first.len() > 100);
        assert_eq!(first, (1..=first.len() as u64).collect::<Vec<_>>());
        for node in 1..3 {
            assert_eq!(applied_slots(&report, node), first, "n{node}");
        }
    }
}

#[test]
fn the_leader_batches_requests_into_one_slot_while_earlier_ones_are_in_flight() {
    let text = STEADY
        .replace("clients = 4", "clients = 24")
        .replace(
            "think = { min = \"5ms\", max = \"30ms\" }",
            "think = { min = \"0ms\", max = \"2ms\" }",
        )
        .replace(
            "keys = 5",
            "keys = 5\n\n[settings]\nmax_in_flight = 1\nmax_batch = 8",
        );
    let report = run("batching", &text, 4);
    let (slots, commands) = (
        metric(&report, "decided_slots"),
        metric(&report, "committed_commands"),
    );
    assert!(
        slots * 2 < commands,
        "{commands} commands in {slots} slots: no batching"
    );
}

/// Three nodes: with one down, two make progress; with two down, the last one decides
/// nothing (both phases need a strict majority).
#[test]
fn a_majority_makes_progress_and_a_minority_cannot() {
    let base = |crashes: &str| {
        format!(
            r#"
protocol = "paxos"
nodes = 3
duration = "3s"
quiet_period = "0s"

[network]
profile = "instant"

[workload]
clients = 3
think = {{ min = "5ms", max = "20ms" }}
timeout = "200ms"
keys = 3

[storage]
engines = ["lsm", "bitcask", "btree"]
{crashes}
"#
        )
    };
    let one_down = base("[[schedule]]\nat = \"0s\"\nfault = \"crash\"\nnode = 2\n");
    let report = run("one-down", &one_down, 1);
    assert!(ops_ok(&report) > 50, "{} ok", ops_ok(&report));
    assert!(!applied_slots(&report, 0).is_empty());

    let two_down = base(
        "[[schedule]]\nat = \"0s\"\nfault = \"crash\"\nnode = 1\n\n[[schedule]]\nat = \"0s\"\nfault = \"crash\"\nnode = 2\n",
    );
    let report = run("two-down", &two_down, 1);
    assert_eq!(ops_ok(&report), 0);
    assert!(applied_slots(&report, 0).is_empty());
    assert!(lines(&report, None, "observe BecameLeader").is_empty());
}

/// Node 2 is down from 1 s to 3 s under load. It comes back with its acceptor state and
/// learns what it missed: decided values from a peer when the peer still holds them,
/// a snapshot when the peer has compacted past them. Either way it applies the same
/// sequence as the others, in order.
fn catch_up(threshold: u64) -> String {
    format!(
        r#"
protocol = "paxos"
nodes = 3
duration = "5s"
quiet_period = "1s"

[settings]
snapshot_threshold = {threshold}

[workload]
clients = 4
think = {{ min = "5ms", max = "20ms" }}
timeout = "300ms"
keys = 4

[storage]
engines = ["lsm", "bitcask", "btree"]

[[schedule]]
at = "1s"
fault = "crash"
node = 2

[[schedule]]
at = "3s"
fault = "restart"
node = 2
"#
    )
}

#[test]
fn a_restarted_node_catches_up_with_decided_values() {
    let report = run("catch-up-values", &catch_up(100_000), 2);
    assert!(lines(&report, Some(2), "observe SnapshotInstalled").is_empty());
    let (n0, n2) = (applied_slots(&report, 0), applied_slots(&report, 2));
    assert!(n2.len() > 100, "n2 applied {} slots", n2.len());
    assert_eq!(n2.last(), n0.last(), "n2 ends where n0 ends");
    assert!(
        lines(&report, Some(2), "Decided")
            .iter()
            .any(|l| l.contains("deliver")),
        "n2 received decided values"
    );
}

#[test]
fn a_node_behind_a_compacted_log_is_brought_back_by_a_snapshot() {
    let report = run("catch-up-snapshot", &catch_up(20), 2);
    assert!(!lines(&report, Some(0), "observe Compacted").is_empty());
    assert_eq!(
        lines(&report, Some(2), "observe SnapshotInstalled").len(),
        1,
        "n2 installs one snapshot"
    );
    let (n0, n2) = (applied_slots(&report, 0), applied_slots(&report, 2));
    assert_eq!(n2.last(), n0.last(), "n2 ends where n0 ends");
}

#[test]
fn lease_reads_are_answered_without_a_slot() {
    let text = STEADY
        .replace("keys = 5", "keys = 3\nmix = { get = 4, put = 1, cas = 1, append = 1 }\n\n[settings]\nreads = \"lease\"");
    let report = run("lease", &text, 5);
    let commands = metric(&report, "committed_commands");
    assert!(
        ops_ok(&report) > commands + 100,
        "{} ok operations, {commands} through the log",
        ops_ok(&report)
    );
    // The same workload through the log puts every read in a slot.
    let report = run(
        "log-reads",
        &text.replace("reads = \"lease\"", "reads = \"log\""),
        5,
    );
    assert!(metric(&report, "committed_commands") + 5 >= ops_ok(&report));
}

#[test]
fn settings_are_validated_with_the_place_of_the_error() {
    let bad = STEADY.replace("keys = 5", "keys = 5\n\n[settings]\nreads = \"read_index\"");
    let err = Scenario::parse("bad.toml", &bad, "bad").expect_err("read_index is Raft's");
    let text = err.to_string();
    assert!(text.contains("bad.toml"), "{text}");
    assert!(text.contains("expected one of: log, lease"), "{text}");
    let bad = STEADY.replace(
        "keys = 5",
        "keys = 5\n\n[settings]\nheartbeat_interval = \"500ms\"",
    );
    let err = Scenario::parse("bad.toml", &bad, "bad").expect_err("heartbeat too long");
    assert!(err.to_string().contains("heartbeat_interval"), "{err}");
}
