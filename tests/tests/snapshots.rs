//! Trace snapshots: short runs at fixed seeds, rendered as transcripts and compared with
//! the reviewed copies in `tests/snapshots/` (`cargo insta review` to accept a change).

use scenarios::{Scenario, TraceFilter, transcript};

/// Three nodes, one client, a lossy link, and a crash with a restart: small enough to
/// read line by line.
const SMALL: &str = r#"
protocol = "broadcast"
nodes = 3
duration = "400ms"
quiet_period = "150ms"

[settings]
retransmit_interval = "30ms"

[network]
latency = { distribution = "uniform", min = "1ms", max = "4ms" }
drop = 0.2

[workload]
clients = 1
think = { min = "40ms", max = "60ms" }
timeout = "100ms"
max_operations = 3

[[schedule]]
at = "60ms"
fault = "crash"
node = 2

[[schedule]]
at = "120ms"
fault = "restart"
node = 2
"#;

fn small() -> Scenario {
    Scenario::parse("small.toml", SMALL, "broadcast-small").expect("valid scenario")
}

#[test]
fn broadcast_crash_and_resync_transcript() {
    let text = transcript(&small(), 4, &[], &TraceFilter::default()).expect("runs");
    insta::assert_snapshot!(text);
}

#[test]
fn broadcast_transcript_filtered_to_one_node_and_kinds() {
    let filter = TraceFilter {
        nodes: vec![sim_core::NodeId(2)],
        kinds: vec![
            "deliver".into(),
            "crash".into(),
            "restart".into(),
            "observe".into(),
        ],
        ..TraceFilter::default()
    };
    let text = transcript(&small(), 4, &[], &filter).expect("runs");
    insta::assert_snapshot!(text);
}

#[test]
fn broadcast_no_dedup_transcript_shows_the_violation() {
    let filter = TraceFilter {
        kinds: vec!["observe".into(), "duplicate".into()],
        ..TraceFilter::default()
    };
    let text = transcript(&small(), 4, &["broadcast.no_dedup"], &filter).expect("runs");
    assert!(text.contains("violation: [duplicate_delivery]"), "{text}");
    insta::assert_snapshot!(text);
}

/// Three Raft nodes electing their first leader over a lossy LAN, with pre-vote: the
/// pre-vote round, the vote, the leader's no-op and its first heartbeats and commits. No
/// clients, so every line is the election.
const RAFT_ELECTION: &str = r#"
protocol = "raft"
nodes = 3
duration = "300ms"
quiet_period = "0s"

[network]
latency = { distribution = "uniform", min = "1ms", max = "4ms" }
drop = 0.1

[storage]
engines = ["lsm", "bitcask", "btree"]
"#;

#[test]
fn raft_three_node_election_transcript() {
    let scenario =
        Scenario::parse("election.toml", RAFT_ELECTION, "raft-election").expect("valid scenario");
    let filter = TraceFilter {
        kinds: vec![
            "start".into(),
            "send".into(),
            "deliver".into(),
            "drop".into(),
            "timer".into(),
            "observe".into(),
        ],
        ..TraceFilter::default()
    };
    let text = transcript(&scenario, 3, &[], &filter).expect("runs");
    assert!(text.contains("observe BecameLeader"), "{text}");
    insta::assert_snapshot!(text);
}

/// A bully cluster small enough to read: a fenced resource (n0) and three members; the
/// leader n3 crashes and comes back, pre-empting n2, which led meanwhile.
const BULLY_SMALL: &str = r#"
protocol = "bully"
nodes = 4
duration = "700ms"
quiet_period = "0s"

[settings]
resource = 0
coordinator_timeout = "200ms"

[network]
latency = { distribution = "uniform", min = "1ms", max = "4ms" }

[[schedule]]
at = "120ms"
fault = "crash"
node = 3

[[schedule]]
at = "500ms"
fault = "restart"
node = 3
"#;

#[test]
fn bully_election_crash_and_preemption_transcript() {
    let scenario = Scenario::parse("bully-small.toml", BULLY_SMALL, "bully-small").expect("valid");
    // Heartbeats and their acknowledgements are left out so the election reads clearly.
    let filter = TraceFilter {
        kinds: vec![
            "start".into(),
            "send".into(),
            "crash".into(),
            "restart".into(),
            "observe".into(),
            "timer".into(),
        ],
        ..TraceFilter::default()
    };
    let text = transcript(&scenario, 3, &[], &filter).expect("runs");
    let text: String = text
        .lines()
        .filter(|l| !l.contains(" Heartbeat {") && !l.contains(" Ack {"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(text.contains("verdict: ok"), "{text}");
    insta::assert_snapshot!(text);
}

/// Three Multi-Paxos nodes: phase 1 once, a client's writes decided in phase 2 only,
/// then the leader crashes; the next proposer's phase 1 recovers the accepted values from
/// the promises and re-proposes them with its higher ballot. Heartbeats are left out.
const PAXOS_SMALL: &str = r#"
protocol = "paxos"
nodes = 3
duration = "700ms"
quiet_period = "0s"

[network]
latency = { distribution = "uniform", min = "1ms", max = "4ms" }

[workload]
clients = 1
think = { min = "40ms", max = "60ms" }
timeout = "300ms"
keys = 2

[storage]
engines = ["lsm", "bitcask", "btree"]

[[schedule]]
at = "300ms"
fault = "crash"
node = 0
"#;

#[test]
fn paxos_phase_one_once_then_leader_crash_transcript() {
    let scenario = Scenario::parse("paxos-small.toml", PAXOS_SMALL, "paxos-small").expect("valid");
    let filter = TraceFilter {
        kinds: vec![
            "start".into(),
            "send".into(),
            "crash".into(),
            "observe".into(),
            "invoke".into(),
            "complete".into(),
        ],
        ..TraceFilter::default()
    };
    let text = transcript(&scenario, 2, &[], &filter).expect("runs");
    let text: String = text
        .lines()
        .filter(|l| !l.contains(" Heartbeat {") && !l.contains(" HeartbeatOk {"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(text.contains("verdict: ok"), "{text}");
    assert!(text.contains("observe BecameLeader"), "{text}");
    insta::assert_snapshot!(text);
}

/// The opening of every canonical scenario at seed 1 (the first 40 ms, then the verdict
/// and hash of the whole run): a change in what a scenario does shows up here.
#[test]
fn canonical_scenario_openings() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/library");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("library")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for path in files {
        let scenario = Scenario::load(&path).expect("valid");
        // Scale scenarios (hundreds of nodes): one node's view of the opening only.
        let nodes = if scenario.sim.node_count > 100 {
            vec![sim_core::NodeId(scenario.sim.node_count as u32 - 1)]
        } else {
            Vec::new()
        };
        let filter = TraceFilter {
            to: Some(sim_core::SimTime(40_000)),
            nodes,
            ..TraceFilter::default()
        };
        let text = transcript(&scenario, 1, &[], &filter).expect("runs");
        insta::assert_snapshot!(format!("opening-{}", scenario.name), text);
    }
}

/// A 2PC cluster small enough to read: three shards, one client, transfers and a
/// read-all over four accounts; the coordinator n0 crashes inside its decision window
/// (after forcing the commit record of T0.1.3, before sending it): n2 stays prepared,
/// holding its locks (a later transfer is refused), asks, and commits once the restarted
/// n0 finds the record on its disk and re-sends it.
const TWO_PC_SMALL: &str = r#"
protocol = "two_pc"
nodes = 3
duration = "560ms"
quiet_period = "260ms"

[settings]
accounts = 4
decision_send_delay = "30ms"

[network]
latency = { distribution = "uniform", min = "1ms", max = "4ms" }

[workload]
clients = 1
think = { min = "20ms", max = "40ms" }
timeout = "1s"

[storage]
engine = "btree"

[[schedule]]
at = "200ms"
fault = "crash"
node = 0

[[schedule]]
at = "260ms"
fault = "restart"
node = 0
"#;

#[test]
fn two_pc_transactions_and_a_coordinator_crash_transcript() {
    let scenario =
        Scenario::parse("two_pc-small.toml", TWO_PC_SMALL, "two_pc-small").expect("valid");
    // Messages are left out (the observations say what each node did and decided).
    let filter = TraceFilter {
        kinds: vec![
            "start".into(),
            "crash".into(),
            "restart".into(),
            "observe".into(),
            "timer".into(),
            "invoke".into(),
            "complete".into(),
        ],
        ..TraceFilter::default()
    };
    let text = transcript(&scenario, 2, &[], &filter).expect("runs");
    assert!(text.contains("verdict: ok"), "{text}");
    // n0 restarts holding a commit it forced but never sent, and re-sends it.
    assert!(
        text.contains("n0 observe Started { epoch: 2, decisions: [T0.1."),
        "{text}"
    );
    insta::assert_snapshot!(text);
}

/// Five SWIM members on clean links: n4 crashes at 1 s and stays down; its prober's
/// ping and ping-reqs go unanswered, it is suspected, the suspicion spreads and
/// runs out, and every member declares it dead. Only the membership changes are kept.
const GOSSIP_SMALL: &str = r#"
protocol = "gossip"
nodes = 5
duration = "6s"
quiet_period = "1s"

[settings]
probe_interval = "100ms"
ack_timeout = "20ms"
cleanup = "2s"

[network]
latency = { distribution = "uniform", min = "1ms", max = "4ms" }

[[schedule]]
at = "1s"
fault = "crash"
node = 4
"#;

#[test]
fn gossip_swim_crash_suspicion_and_confirmation_transcript() {
    let scenario =
        Scenario::parse("gossip-small.toml", GOSSIP_SMALL, "gossip-small").expect("valid");
    let filter = TraceFilter {
        kinds: vec!["start".into(), "crash".into(), "observe".into()],
        ..TraceFilter::default()
    };
    let text = transcript(&scenario, 2, &[], &filter).expect("runs");
    // The join (every member learning every other alive at incarnation 1) is left out.
    let text: String = text
        .lines()
        .filter(|l| !(l.contains("state: Alive, incarnation: 1") && l.contains(" observe View")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(text.contains("verdict: ok"), "{text}");
    assert!(text.contains("member: NodeId(4), state: Suspect"), "{text}");
    assert!(text.contains("member: NodeId(4), state: Dead"), "{text}");
    insta::assert_snapshot!(text);
}

/// Three multi-leader nodes in a star around n0, one client writing an LWW register and
/// an OR-set at whichever node it picks; n2 crashes and restarts. Each write is durable
/// before its reply, then replicated (the leaves through the hub), applied once per
/// node and acknowledged; the restarted node recovers from its disk, and every node
/// reports the same snapshot at the end. Timers are left out.
const MULTI_LEADER_SMALL: &str = r#"
protocol = "multi_leader"
nodes = 3
duration = "600ms"
quiet_period = "250ms"

[settings]
topology = "star"
types = ["lww", "orset"]
keys = 1
elements = 1
settle = "60ms"

[network]
latency = { distribution = "uniform", min = "1ms", max = "4ms" }

[workload]
clients = 1
think = { min = "30ms", max = "60ms" }
timeout = "200ms"
max_operations = 6

[[schedule]]
at = "150ms"
fault = "crash"
node = 2

[[schedule]]
at = "250ms"
fault = "restart"
node = 2
"#;

#[test]
fn multi_leader_star_replication_and_recovery_transcript() {
    let scenario = Scenario::parse(
        "multi_leader-small.toml",
        MULTI_LEADER_SMALL,
        "multi_leader-small",
    )
    .expect("valid");
    let filter = TraceFilter {
        kinds: vec![
            "start".into(),
            "send".into(),
            "crash".into(),
            "restart".into(),
            "invoke".into(),
            "complete".into(),
            "observe".into(),
        ],
        ..TraceFilter::default()
    };
    let text = transcript(&scenario, 12, &[], &filter).expect("runs");
    assert!(text.contains("verdict: ok"), "{text}");
    assert!(text.contains("Applied"), "{text}");
    assert!(text.contains("Snapshot"), "{text}");
    insta::assert_snapshot!(text);
}

/// Four Dynamo nodes (N = 3, R = W = 2), one client reading a register and writing it
/// with the read's context; n3 crashes, so writes to its keys leave a hint on the
/// fallback, which hands it off after the restart. Timers and deliveries are left out:
/// sends, client steps and observations only.
const DYNAMO_SMALL: &str = r#"
protocol = "dynamo"
nodes = 4
duration = "900ms"
quiet_period = "500ms"

[settings]
n = 3
r = 2
w = 2
register_keys = 1
set_keys = 0
delete_fraction = 0.3
blind_fraction = 0.0
settle = "100ms"
ae_interval = "200ms"

[network]
latency = { distribution = "uniform", min = "1ms", max = "3ms" }

[workload]
clients = 1
think = { min = "20ms", max = "40ms" }
timeout = "200ms"
max_operations = 6

[[schedule]]
at = "60ms"
fault = "crash"
node = 3

[[schedule]]
at = "300ms"
fault = "restart"
node = 3
"#;

#[test]
fn dynamo_context_write_and_hinted_handoff_transcript() {
    let scenario =
        Scenario::parse("dynamo-small.toml", DYNAMO_SMALL, "dynamo-small").expect("valid");
    let filter = TraceFilter {
        kinds: vec![
            "crash".into(),
            "restart".into(),
            "invoke".into(),
            "complete".into(),
            "observe".into(),
        ],
        ..TraceFilter::default()
    };
    let text = transcript(&scenario, 3, &[], &filter).expect("runs");
    assert!(text.contains("verdict: ok"), "{text}");
    assert!(text.contains("Coordinated"), "{text}");
    assert!(text.contains("HintStored"), "{text}");
    assert!(text.contains("HintDelivered"), "{text}");
    insta::assert_snapshot!(text);
}

/// Four PBFT replicas, one client: requests go through pre-prepare, prepare and commit
/// and are answered by f+1 matching replies; then the primary n0 crashes, the backups
/// time out on a waiting request and change view with their prepared certificates, and
/// n1's NEW-VIEW re-issues them. Prepares, commits, replies, checkpoints and fetches are
/// left out (the observations say what each replica did).
const PBFT_SMALL: &str = r#"
protocol = "pbft"
nodes = 4
duration = "700ms"
quiet_period = "0s"

[settings]
request_timeout = "100ms"
view_change_timeout = "100ms"

[network]
latency = { distribution = "uniform", min = "1ms", max = "4ms" }

[workload]
clients = 1
think = { min = "40ms", max = "60ms" }
timeout = "400ms"
keys = 2

[storage]
engines = ["lsm", "bitcask", "btree"]

[[schedule]]
at = "300ms"
fault = "crash"
node = 0
"#;

#[test]
fn pbft_normal_case_then_primary_crash_and_view_change_transcript() {
    let scenario = Scenario::parse("pbft-small.toml", PBFT_SMALL, "pbft-small").expect("valid");
    let filter = TraceFilter {
        kinds: vec![
            "start".into(),
            "send".into(),
            "crash".into(),
            "observe".into(),
            "invoke".into(),
            "complete".into(),
        ],
        ..TraceFilter::default()
    };
    let text = transcript(&scenario, 2, &[], &filter).expect("runs");
    let text: String = text
        .lines()
        .filter(|l| {
            ![
                " Prepare {",
                " Commit {",
                " Reply {",
                " Fetch {",
                " Checkpoint {",
                "CommitSent",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(text.contains("verdict: ok"), "{text}");
    assert!(text.contains("observe NewViewEntered { view: 1"), "{text}");
    insta::assert_snapshot!(text);
}
