//! Property tests of the network model, end to end through the kernel: random clusters,
//! links and fault schedules, judged from the JSON Lines trace (the public format).
//!
//! Properties: nothing crosses a blocked link; nothing reaches a crashed or paused node;
//! without duplication a message is delivered at most once; with no drops and no
//! partitions every message to a live node arrives; latency stays within its bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use rand::RngExt;
use serde::Serialize;
use serde_json::Value;
use sim_core::fault::{Fault, ScheduledFault};
use sim_core::network::{Latency, LinkConfig, NetworkConfig, PartitionShape};
use sim_core::trace::TraceOptions;
use sim_core::{Ctx, NodeId, OpId, Process, SimConfig, SimDuration, SimTime, Simulation, TimerId};

/// Sends a numbered message to a random peer every few milliseconds until `stop_at`
/// (in its own clock, which is perfect in these tests).
struct Chatter {
    stop_at: SimTime,
    sent: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Note(u64);

impl Process for Chatter {
    type Msg = Note;
    type Timer = ();
    type Op = ();
    type Reply = ();
    type Obs = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        ctx.set_timer(SimDuration::from_millis(1), ());
    }
    fn on_message(&mut self, _: &mut Ctx<'_, Self>, _: NodeId, _: Note) {}
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _: TimerId, _: ()) {
        if ctx.now() >= self.stop_at {
            return;
        }
        let n = ctx.node_count() as u32;
        let to = NodeId(ctx.rng().random_range(0..n));
        self.sent += 1;
        ctx.send(to, Note(self.sent));
        let next = ctx.rng().random_range(500..3_000);
        ctx.set_timer(SimDuration::from_micros(next), ());
    }
    fn on_client(&mut self, _: &mut Ctx<'_, Self>, _: OpId, _: ()) {}
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Setup {
    seed: u64,
    nodes: usize,
    min_us: u64,
    max_us: u64,
    drop: f64,
    duplicate: f64,
    schedule: Vec<ScheduledFault>,
}

const DURATION: SimDuration = SimDuration::from_millis(400);
const STOP_SENDING: SimTime = SimTime(300_000);

fn node(n: usize) -> impl Strategy<Value = NodeId> {
    (0..n as u32).prop_map(NodeId)
}

fn fault(n: usize) -> impl Strategy<Value = Fault> {
    prop_oneof![
        node(n).prop_map(|node| Fault::Crash { node }),
        node(n).prop_map(|node| Fault::Restart { node }),
        node(n).prop_map(|node| Fault::Pause { node }),
        node(n).prop_map(|node| Fault::Resume { node }),
        node(n).prop_map(|node| Fault::Partition {
            shape: PartitionShape::Isolate { node }
        }),
        Just(Fault::Partition {
            shape: PartitionShape::RandomHalves
        }),
        (node(n), node(n)).prop_map(|(a, b)| Fault::Partition {
            shape: PartitionShape::OneWay {
                from: vec![a],
                to: vec![b]
            }
        }),
        Just(Fault::Heal),
    ]
}

fn setup(allow_faults: bool) -> impl Strategy<Value = Setup> {
    (2usize..6, any::<u64>()).prop_flat_map(move |(nodes, seed)| {
        let faults = if allow_faults {
            prop::collection::vec((0u64..350_000, fault(nodes)), 0..12).boxed()
        } else {
            Just(Vec::new()).boxed()
        };
        (
            0u64..3_000,
            0u64..20_000,
            prop_oneof![Just(0.0), 0.0..0.5f64],
            prop_oneof![Just(0.0), 0.0..0.5f64],
            faults,
        )
            .prop_map(move |(min_us, spread, drop, duplicate, faults)| Setup {
                seed,
                nodes,
                min_us,
                max_us: min_us + spread,
                drop,
                duplicate,
                schedule: faults
                    .into_iter()
                    .map(|(at, fault)| ScheduledFault {
                        at: SimTime(at),
                        fault,
                    })
                    .collect(),
            })
    })
}

/// Runs the setup and returns the trace as JSON values, in order.
fn run(setup: &Setup) -> Vec<Value> {
    let mut config = SimConfig::new(setup.seed, setup.nodes);
    config.duration = DURATION;
    config.quiet_period = SimDuration::ZERO;
    config.network = NetworkConfig {
        default_link: LinkConfig {
            latency: Latency::Uniform {
                min: SimDuration(setup.min_us),
                max: SimDuration(setup.max_us),
            },
            drop_probability: setup.drop,
            duplicate_probability: setup.duplicate,
        },
        links: BTreeMap::new(),
    };
    config.schedule = setup.schedule.clone();
    let buffer = SharedBuf::default();
    let trace = TraceOptions {
        keep_lines: false,
        jsonl: Some(Box::new(buffer.clone())),
    };
    let sim = Simulation::new(
        config,
        |_| Chatter {
            stop_at: STOP_SENDING,
            sent: 0,
        },
        None,
        trace,
    )
    .expect("valid config");
    let out = sim.run();
    assert!(out.trace_error.is_none());
    let bytes = buffer.0.lock().expect("buffer lock").clone();
    String::from_utf8(bytes)
        .expect("utf-8 trace")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

fn node_of(v: &Value, key: &str) -> u32 {
    v[key].as_u64().expect("node id") as u32
}

#[derive(Debug, Default)]
struct Replay {
    sent: BTreeMap<u64, (u32, u32, u64)>,
    delivered: BTreeMap<u64, u32>,
    dropped: BTreeSet<u64>,
    duplicated: BTreeSet<u64>,
}

/// Walks the trace, asserting the per-event properties, and returns what it saw.
fn replay(events: &[Value], nodes: usize) -> Result<Replay, TestCaseError> {
    let mut blocked: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut up = vec![false; nodes];
    let mut paused = vec![false; nodes];
    let mut r = Replay::default();
    for e in events {
        let time = e["time"].as_u64().expect("time");
        match e["event"].as_str().expect("event kind") {
            "start" | "restart" => up[node_of(e, "node") as usize] = true,
            // A crash ends a pause: the restarted process is a fresh one.
            "crash" => {
                up[node_of(e, "node") as usize] = false;
                paused[node_of(e, "node") as usize] = false;
            }
            "pause" => paused[node_of(e, "node") as usize] = true,
            "resume" => paused[node_of(e, "node") as usize] = false,
            "partition" => {
                for link in e["links"].as_array().expect("links") {
                    blocked.insert((
                        link[0].as_u64().unwrap() as u32,
                        link[1].as_u64().unwrap() as u32,
                    ));
                }
            }
            "heal" => blocked.clear(),
            "send" => {
                let id = e["id"].as_u64().unwrap();
                r.sent
                    .insert(id, (node_of(e, "from"), node_of(e, "to"), time));
            }
            "duplicate" => {
                r.duplicated.insert(e["id"].as_u64().unwrap());
            }
            "drop" => {
                r.dropped.insert(e["id"].as_u64().unwrap());
            }
            "deliver" => {
                let (from, to, id) = (
                    node_of(e, "from"),
                    node_of(e, "to"),
                    e["id"].as_u64().unwrap(),
                );
                prop_assert!(
                    !blocked.contains(&(from, to)),
                    "message {id} crossed the cut link {from}->{to}"
                );
                prop_assert!(up[to as usize], "message {id} reached crashed node {to}");
                prop_assert!(
                    !paused[to as usize],
                    "message {id} reached paused node {to}"
                );
                let sent = r.sent.get(&id).copied();
                prop_assert!(sent.is_some(), "message {id} delivered but never sent");
                *r.delivered.entry(id).or_default() += 1;
            }
            _ => {}
        }
    }
    Ok(r)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("tests/proptest-regressions/network_props.txt"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn faults_never_let_a_message_through(setup in setup(true)) {
        let events = run(&setup);
        let r = replay(&events, setup.nodes)?;
        if setup.duplicate == 0.0 {
            for (id, count) in &r.delivered {
                prop_assert!(*count <= 1, "message {id} delivered {count} times without duplication");
            }
        }
        for (id, count) in &r.delivered {
            prop_assert!(*count <= 2, "message {id} delivered {count} times");
            if *count == 2 {
                prop_assert!(r.duplicated.contains(id), "message {id} delivered twice but never duplicated");
            }
        }
    }

    #[test]
    fn a_clean_network_delivers_everything_within_bounds(setup in setup(false)) {
        let setup = Setup { drop: 0.0, ..setup };
        let events = run(&setup);
        let r = replay(&events, setup.nodes)?;
        prop_assert!(r.dropped.is_empty(), "{} messages dropped on a clean network", r.dropped.len());
        prop_assert!(!r.sent.is_empty());
        for (id, (from, to, _)) in &r.sent {
            let count = r.delivered.get(id).copied().unwrap_or(0);
            prop_assert!(count >= 1, "message {id} {from}->{to} never arrived");
        }
        // Latency: each delivery happens within [min, max] of its send.
        for e in events.iter().filter(|e| e["event"] == "deliver") {
            let id = e["id"].as_u64().unwrap();
            let sent_at = r.sent[&id].2;
            let delay = e["time"].as_u64().unwrap() - sent_at;
            prop_assert!(delay >= setup.min_us && delay <= setup.max_us,
                "message {id} took {delay}us, outside [{}, {}]", setup.min_us, setup.max_us);
        }
    }
}

#[test]
fn same_seed_same_trace_and_different_seed_different_trace() {
    let setup = Setup {
        seed: 5,
        nodes: 4,
        min_us: 100,
        max_us: 5_000,
        drop: 0.2,
        duplicate: 0.2,
        schedule: vec![ScheduledFault {
            at: SimTime(100_000),
            fault: Fault::Partition {
                shape: PartitionShape::RandomHalves,
            },
        }],
    };
    assert_eq!(run(&setup), run(&setup));
    assert_ne!(
        run(&setup),
        run(&Setup {
            seed: 6,
            ..setup.clone()
        })
    );
}
