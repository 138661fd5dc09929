//! Raft's optional mechanisms, each shown doing its job in a short run: pre-vote keeps a
//! rejoining node from disrupting a leader, CheckQuorum deposes an isolated leader, log
//! compaction and InstallSnapshot bring a long-dead node back, reads bypass the log,
//! leadership transfer hands over, and leases answer reads under clock drift. Every run
//! must also pass all of Raft's checkers (invariants and linearizability).

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

/// The trace lines that contain `needle`.
fn lines<'r>(report: &'r RunReport, needle: &str) -> Vec<&'r str> {
    report
        .trace_lines
        .iter()
        .filter(|l| l.text.contains(needle))
        .map(|l| l.text.as_str())
        .collect()
}

/// The terms of the `BecameLeader` observations.
fn leader_terms(report: &RunReport) -> Vec<u64> {
    lines(report, "observe BecameLeader")
        .iter()
        .map(|l| {
            let t = l.split("term: ").nth(1).expect("term");
            t.split(',')
                .next()
                .unwrap()
                .trim()
                .parse()
                .expect("a number")
        })
        .collect()
}

/// Three nodes; node 2 is cut off from 1 s to 3 s. Steady load on the others.
fn rejoin(pre_vote: bool) -> String {
    format!(
        r#"
protocol = "raft"
nodes = 3
duration = "5s"
quiet_period = "500ms"

[settings]
pre_vote = {pre_vote}
check_quorum = {pre_vote}

[workload]
clients = 1
think = {{ min = "20ms", max = "40ms" }}
timeout = "300ms"

[[schedule]]
at = "1s"
fault = "partition"
shape = "isolate"
node = 2

[[schedule]]
at = "3s"
fault = "heal"
"#
    )
}

#[test]
fn pre_vote_keeps_a_rejoining_node_from_deposing_the_leader() {
    for seed in 0..5 {
        let with = run("rejoin-prevote", &rejoin(true), seed);
        let without = run("rejoin-classic", &rejoin(false), seed);
        // With pre-vote the isolated node never raises its term, so the leader elected
        // before the partition stays leader; without it, the rejoining node's higher
        // term forces at least one more election.
        assert_eq!(
            leader_terms(&with).len(),
            1,
            "seed {seed}: {:?}",
            leader_terms(&with)
        );
        assert!(
            leader_terms(&without).len() > 1,
            "seed {seed}: {:?}",
            leader_terms(&without)
        );
        assert!(!lines(&with, "PreVote {").is_empty());
    }
}

#[test]
fn check_quorum_deposes_an_isolated_leader() {
    let text = |check_quorum: bool| {
        format!(
            r#"
protocol = "raft"
nodes = 3
duration = "3s"
quiet_period = "500ms"

[settings]
check_quorum = {check_quorum}

[[schedule]]
at = "1s"
fault = "partition"
shape = "isolate_leader"
"#
        )
    };
    for seed in 0..5 {
        let on = run("cq-on", &text(true), seed);
        let stepped = lines(&on, "observe SteppedDown");
        assert_eq!(stepped.len(), 1, "seed {seed}: {stepped:?}");
        let off = run("cq-off", &text(false), seed);
        assert!(lines(&off, "observe SteppedDown").is_empty());
    }
}

#[test]
fn a_node_that_missed_compacted_entries_catches_up_by_snapshot() {
    let text = r#"
protocol = "raft"
nodes = 3
duration = "6s"
quiet_period = "2s"

[settings]
snapshot_threshold = 20

[workload]
clients = 3
think = { min = "5ms", max = "15ms" }
timeout = "300ms"
mix = { get = 1, put = 3, cas = 1, append = 1 }

[[schedule]]
at = "500ms"
fault = "crash"
node = 2

[[schedule]]
at = "3s"
fault = "restart"
node = 2
"#;
    for seed in 0..5 {
        let report = run("snapshot", text, seed);
        assert!(
            !lines(&report, "observe Compacted").is_empty(),
            "seed {seed}: the log is compacted"
        );
        let installed = lines(&report, "n2 observe SnapshotInstalled");
        assert!(!installed.is_empty(), "seed {seed}: n2 installs a snapshot");
        assert!(!lines(&report, "InstallSnapshot").is_empty());
        // After the snapshot, n2 applies the entries that follow it.
        let last = report
            .trace_lines
            .iter()
            .rposition(|l| l.text.contains("n2 observe SnapshotInstalled"))
            .unwrap();
        assert!(
            report.trace_lines[last..]
                .iter()
                .any(|l| l.text.contains("n2 observe Applied")),
            "seed {seed}"
        );
    }
}

/// Reads by ReadIndex (the default) put nothing in the log; reads through the log do.
#[test]
fn read_index_reads_bypass_the_log() {
    let text = |reads: &str| {
        format!(
            r#"
protocol = "raft"
nodes = 3
duration = "3s"
quiet_period = "500ms"

[settings]
reads = "{reads}"

[workload]
clients = 3
think = {{ min = "5ms", max = "15ms" }}
timeout = "300ms"
mix = {{ get = 1 }}
"#
        )
    };
    for seed in 0..3 {
        let by_index = run("reads-index", &text("read_index"), seed);
        let by_log = run("reads-log", &text("log"), seed);
        let ok = |r: &RunReport| lines(r, " ok op").len();
        assert!(ok(&by_index) > 50, "seed {seed}: {}", ok(&by_index));
        assert!(ok(&by_log) > 50, "seed {seed}: {}", ok(&by_log));
        // Only the leaders' no-ops are applied with ReadIndex.
        let applied = |r: &RunReport| lines(r, "observe Applied").len();
        assert!(
            applied(&by_index) <= 3 * leader_terms(&by_index).len(),
            "seed {seed}: {} applied",
            applied(&by_index)
        );
        assert!(applied(&by_log) > ok(&by_log), "seed {seed}");
        assert!(
            !lines(&by_index, "ReadIndexOk").is_empty(),
            "followers' reads"
        );
    }
}

#[test]
fn leadership_is_transferred_on_schedule() {
    let text = r#"
protocol = "raft"
nodes = 3
duration = "4s"
quiet_period = "500ms"

[settings]
transfer_interval = "1s"

[workload]
clients = 2
think = { min = "10ms", max = "30ms" }
timeout = "300ms"
"#;
    for seed in 0..5 {
        let report = run("transfer", text, seed);
        let timeouts = lines(&report, "TimeoutNow");
        assert!(!timeouts.is_empty(), "seed {seed}");
        // Each transfer elects a new leader: one term per transfer, roughly.
        assert!(
            leader_terms(&report).len() >= 3,
            "seed {seed}: {:?}",
            leader_terms(&report)
        );
        // A transfer election is not ignored by the sticky voters.
        assert!(!lines(&report, "transfer: true").is_empty());
    }
}

/// Reads answered at the instant they were invoked (no message round trip).
fn immediate_reads(report: &RunReport) -> usize {
    use std::collections::BTreeMap;
    let mut invoked = BTreeMap::new();
    let mut immediate = 0;
    for l in &report.trace_lines {
        let mut words = l.text.split_whitespace();
        let (_, what, op) = (words.next(), words.next(), words.next());
        match (what, op) {
            (Some("invoke"), Some(op)) if l.text.contains("Get {") => {
                invoked.insert(op.to_string(), l.time);
            }
            (Some("ok"), Some(op)) if invoked.get(op) == Some(&l.time) => immediate += 1,
            _ => {}
        }
    }
    immediate
}

#[test]
fn leases_answer_reads_without_a_round_under_clock_drift() {
    let text = |reads: &str| {
        format!(
            r#"
protocol = "raft"
nodes = 3
duration = "3s"
quiet_period = "500ms"

[settings]
reads = "{reads}"

[clock]
max_offset = "50ms"
max_drift_ppm = 100000

[workload]
clients = 3
think = {{ min = "5ms", max = "15ms" }}
timeout = "300ms"
mix = {{ get = 3, put = 1 }}
"#
        )
    };
    for seed in 0..5 {
        let lease = run("lease", &text("lease"), seed);
        let read_index = run("read-index", &text("read_index"), seed);
        // Within a lease the leader answers its own clients' reads at once; by ReadIndex
        // it always waits for a round of acknowledgements.
        assert!(
            immediate_reads(&lease) > 20,
            "seed {seed}: {}",
            immediate_reads(&lease)
        );
        assert_eq!(immediate_reads(&read_index), 0, "seed {seed}");
    }
}
