//! Behaviour of the kernel itself: event order, timers, node lifecycle, clocks, clients
//! and the quiet phase, each observed through a small scripted process.

use serde::Serialize;
use sim_core::fault::{Fault, ScheduledFault};
use sim_core::network::{DropReason, Latency, LinkConfig, NetworkConfig, PartitionShape};
use sim_core::trace::TraceOptions;
use sim_core::workload::ClientConfig;
use sim_core::{
    ClientId, ClockConfig, Completion, Ctx, NodeId, NodeStatus, OpId, Process, RunOutput,
    SimConfig, SimDuration, SimTime, Simulation, TimerId,
};

/// What a probe node does, decided by the test.
#[derive(Clone, Default)]
struct Script {
    /// Timers to set at start: (label, delay on the node's clock).
    timers: Vec<(u32, SimDuration)>,
    /// Timer labels to cancel right after setting them all.
    cancel: Vec<u32>,
    /// At start, node 0 sends these numbers to node 1.
    send_at_start: Vec<u64>,
    /// Client requests: reply `ok` to even values, never reply to odd ones.
    reply_to_even: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
enum Obs {
    Started { incarnation: u32 },
    Fired { label: u32, local_now: SimTime },
    Got { from: NodeId, n: u64 },
}

struct Probe {
    script: Script,
}

impl Process for Probe {
    type Msg = u64;
    type Timer = u32;
    type Op = u64;
    type Reply = u64;
    type Obs = Obs;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        ctx.observe(Obs::Started {
            incarnation: ctx.incarnation(),
        });
        let mut ids = Vec::new();
        for &(label, after) in &self.script.timers {
            ids.push((label, ctx.set_timer(after, label)));
        }
        for (label, id) in ids {
            if self.script.cancel.contains(&label) {
                ctx.cancel_timer(id);
            }
        }
        if ctx.id() == NodeId(0) {
            for &n in &self.script.send_at_start {
                ctx.send(NodeId(1), n);
            }
        }
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, n: u64) {
        ctx.observe(Obs::Got { from, n });
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _: TimerId, label: u32) {
        let local_now = ctx.now();
        ctx.observe(Obs::Fired { label, local_now });
    }
    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, value: u64) {
        if self.script.reply_to_even && value.is_multiple_of(2) {
            ctx.reply_ok(op, value * 10);
        }
    }
}

fn config(nodes: usize) -> SimConfig {
    let mut c = SimConfig::new(9, nodes);
    c.duration = SimDuration::from_secs(1);
    c.quiet_period = SimDuration::ZERO;
    c.network = NetworkConfig {
        default_link: LinkConfig {
            latency: Latency::Constant {
                delay: SimDuration::from_millis(5),
            },
            drop_probability: 0.0,
            duplicate_probability: 0.0,
        },
        links: Default::default(),
    };
    c
}

fn run(config: SimConfig, script: Script) -> RunOutput<Probe> {
    run_with_clients(config, script, None)
}

fn run_with_clients(
    config: SimConfig,
    script: Script,
    values: Option<Vec<u64>>,
) -> RunOutput<Probe> {
    let workload: Option<Box<dyn sim_core::workload::Workload<Probe>>> = values.map(|values| {
        let mut next = 0usize;
        Box::new(move |_: ClientId, _: &mut sim_core::rng::SimRng| {
            let v = values[next % values.len()];
            next += 1;
            v
        }) as Box<dyn sim_core::workload::Workload<Probe>>
    });
    let keep = TraceOptions {
        keep_lines: true,
        jsonl: None,
    };
    Simulation::new(
        config,
        move |_| Probe {
            script: script.clone(),
        },
        workload,
        keep,
    )
    .expect("valid config")
    .run()
}

fn fired(out: &RunOutput<Probe>, node: NodeId) -> Vec<(u32, SimTime)> {
    out.observations
        .iter()
        .filter(|o| o.node == node)
        .filter_map(|o| match o.obs {
            Obs::Fired { label, .. } => Some((label, o.time)),
            _ => None,
        })
        .collect()
}

fn at(ms: u64, fault: Fault) -> ScheduledFault {
    ScheduledFault {
        at: SimTime(ms * 1_000),
        fault,
    }
}

#[test]
fn simultaneous_events_run_in_insertion_order() {
    let same = SimDuration::from_millis(10);
    let script = Script {
        timers: vec![(3, same), (1, same), (2, same)],
        send_at_start: (1..=20).collect(),
        ..Script::default()
    };
    let out = run(config(2), script);
    let labels: Vec<u32> = fired(&out, NodeId(0)).iter().map(|(l, _)| *l).collect();
    assert_eq!(
        labels,
        vec![3, 1, 2],
        "timers due together fire in the order they were set"
    );
    let got: Vec<u64> = out
        .observations
        .iter()
        .filter_map(|o| match o.obs {
            Obs::Got { n, .. } => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        (1..=20).collect::<Vec<_>>(),
        "equal latency preserves send order"
    );
}

#[test]
fn a_cancelled_timer_never_fires() {
    let script = Script {
        timers: vec![
            (1, SimDuration::from_millis(10)),
            (2, SimDuration::from_millis(20)),
        ],
        cancel: vec![1],
        ..Script::default()
    };
    let out = run(config(1), script);
    assert_eq!(fired(&out, NodeId(0)), vec![(2, SimTime(20_000))]);
}

#[test]
fn a_crash_discards_timers_and_a_restart_starts_afresh() {
    let mut c = config(2);
    c.schedule = vec![
        at(50, Fault::Crash { node: NodeId(1) }),
        at(60, Fault::Restart { node: NodeId(1) }),
    ];
    let script = Script {
        timers: vec![(7, SimDuration::from_millis(100))],
        ..Script::default()
    };
    let out = run(c, script);
    // Node 1's first timer (due at 100 ms) died with its process; the restarted
    // incarnation's timer fires 100 ms after the restart.
    assert_eq!(fired(&out, NodeId(1)), vec![(7, SimTime(160_000))]);
    let starts: Vec<(u32, u32)> = out
        .observations
        .iter()
        .filter(|o| o.node == NodeId(1))
        .filter_map(|o| match o.obs {
            Obs::Started { incarnation } => Some((incarnation, o.incarnation)),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![(1, 1), (2, 2)]);
    assert_eq!(out.final_incarnation, vec![1, 2]);
}

#[test]
fn a_paused_node_defers_timers_and_drops_messages() {
    let mut c = config(2);
    c.schedule = vec![
        at(1, Fault::Pause { node: NodeId(1) }),
        at(50, Fault::Resume { node: NodeId(1) }),
    ];
    let script = Script {
        timers: vec![(1, SimDuration::from_millis(20))],
        send_at_start: vec![42],
        ..Script::default()
    };
    let out = run(c, script);
    assert_eq!(
        fired(&out, NodeId(1)),
        vec![(1, SimTime(50_000))],
        "fires on resume"
    );
    assert_eq!(fired(&out, NodeId(0)), vec![(1, SimTime(20_000))]);
    assert_eq!(
        out.stats.messages_dropped.get(&DropReason::ReceiverPaused),
        Some(&1)
    );
    assert!(
        !out.observations
            .iter()
            .any(|o| matches!(o.obs, Obs::Got { .. }))
    );
}

#[test]
fn messages_to_a_crashed_node_or_across_a_cut_are_dropped() {
    let mut c = config(3);
    c.schedule = vec![
        at(0, Fault::Crash { node: NodeId(1) }),
        at(
            0,
            Fault::Partition {
                shape: PartitionShape::Isolate { node: NodeId(2) },
            },
        ),
    ];
    let out = run(c, Script::default());
    assert_eq!(
        out.final_status,
        vec![NodeStatus::Up, NodeStatus::Crashed, NodeStatus::Up]
    );
    let mut c = config(2);
    c.schedule = vec![at(
        2,
        Fault::Partition {
            shape: PartitionShape::OneWay {
                from: vec![NodeId(0)],
                to: vec![NodeId(1)],
            },
        },
    )];
    let script = Script {
        send_at_start: vec![1, 2],
        ..Script::default()
    };
    // Sent at 0 before the cut, arriving at 5 ms after it: dropped on arrival.
    let out = run(c, script);
    assert_eq!(
        out.stats.messages_dropped.get(&DropReason::Partitioned),
        Some(&2)
    );
}

#[test]
fn timers_run_on_the_nodes_drifting_clocks() {
    let mut c = config(8);
    c.clock = ClockConfig {
        max_offset: SimDuration::from_millis(30),
        max_drift_ppm: 100_000,
    };
    let d = SimDuration::from_millis(200);
    let script = Script {
        timers: vec![(1, d)],
        ..Script::default()
    };
    let out = run(c, script);
    let mut true_elapsed = Vec::new();
    for o in &out.observations {
        if let Obs::Fired { local_now, .. } = o.obs {
            // Each node started at true time 0; its local reading then was its offset.
            true_elapsed.push(o.time.0);
            assert!(
                local_now.0 >= d.0,
                "{local_now} read before the local deadline"
            );
        }
    }
    assert_eq!(true_elapsed.len(), 8);
    true_elapsed.sort();
    true_elapsed.dedup();
    assert!(
        true_elapsed.len() > 1,
        "drifting clocks fire at different true times"
    );
    assert!(
        true_elapsed
            .iter()
            .all(|&t| (181_000..=223_000).contains(&t)),
        "{true_elapsed:?}"
    );
}

#[test]
fn client_operations_complete_ok_fail_or_info() {
    let mut c = config(2);
    c.duration = SimDuration::from_secs(10);
    c.clients = Some(ClientConfig {
        clients: 1,
        think_min: SimDuration::from_millis(1),
        think_max: SimDuration::from_millis(1),
        timeout: SimDuration::from_millis(100),
        max_operations: Some(40),
        max_retries: 0,
    });
    c.schedule = vec![at(500, Fault::Crash { node: NodeId(1) })];
    let script = Script {
        reply_to_even: true,
        ..Script::default()
    };
    let out = run_with_clients(c, script, Some(vec![2, 3]));
    assert_eq!(out.history.len(), 40);
    for op in &out.history.operations {
        let (_, completion) = op.completion.as_ref().expect("every op completed");
        match completion {
            Completion::Ok(reply) => {
                assert_eq!(op.request % 2, 0);
                assert_eq!(*reply, op.request * 10);
            }
            Completion::Info(why) => {
                assert_eq!(op.request % 2, 1, "only unanswered ops time out");
                assert!(why == "timeout" || why == "node crashed", "{why}");
            }
            Completion::Fail(why) => {
                assert_eq!(op.node, NodeId(1));
                assert_eq!(why, "connection refused");
                assert!(op.invoked_at >= SimTime(500_000));
            }
        }
    }
    assert!(out.history.operations.iter().any(|o| o.is_ok()));
    assert!(out.history.operations.iter().any(|o| o.is_indeterminate()));
}

#[test]
fn the_quiet_phase_heals_and_restarts_everything() {
    let mut c = config(3);
    c.duration = SimDuration::from_secs(2);
    c.quiet_period = SimDuration::from_secs(1);
    c.schedule = vec![
        at(100, Fault::Crash { node: NodeId(0) }),
        at(100, Fault::Pause { node: NodeId(1) }),
        at(
            100,
            Fault::Partition {
                shape: PartitionShape::Isolate { node: NodeId(2) },
            },
        ),
        at(1_500, Fault::Crash { node: NodeId(2) }), // inside the quiet period: ignored
    ];
    let out = run(c, Script::default());
    assert_eq!(out.final_status, vec![NodeStatus::Up; 3]);
    assert_eq!(out.final_incarnation, vec![2, 1, 1]);
    assert_eq!(out.quiet_from, SimTime(1_000_000));
    let text: Vec<&str> = out.trace_lines.iter().map(|l| l.text.as_str()).collect();
    let quiet = text
        .iter()
        .position(|t| t.starts_with("QUIET PHASE"))
        .expect("quiet phase traced");
    assert!(text[quiet..].contains(&"HEAL"));
    assert!(text[quiet..].iter().any(|t| t.starts_with("n0 RESTART")));
    assert!(text[quiet..].contains(&"n1 RESUME"));
}

#[test]
fn the_event_limit_stops_a_runaway_run() {
    let mut c = config(2);
    c.max_events = 5;
    let script = Script {
        send_at_start: (0..100).collect(),
        ..Script::default()
    };
    let out = run(c, script);
    assert!(out.hit_event_limit);
    assert_eq!(out.stats.queue_events, 5);
}

#[test]
fn swarm_mode_picks_a_seeded_subset_of_fault_kinds() {
    use sim_core::fault::{FaultKind, NemesisConfig};
    let nemesis = NemesisConfig {
        swarm: true,
        ..NemesisConfig::default()
    };
    let mut subsets = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let mut rng = sim_core::rng::fork(seed, "nemesis", 0);
        let kinds = nemesis.active_kinds(&mut rng);
        assert!(!kinds.is_empty());
        assert!(kinds.iter().all(|k| FaultKind::ALL.contains(k)));
        let mut again = sim_core::rng::fork(seed, "nemesis", 0);
        assert_eq!(kinds, nemesis.active_kinds(&mut again), "seeded");
        subsets.insert(kinds);
    }
    assert!(
        subsets.len() > 8,
        "swarm explores many subsets: {subsets:?}"
    );
    // Without swarm, every kind is active.
    let mut rng = sim_core::rng::fork(1, "nemesis", 0);
    assert_eq!(
        NemesisConfig::default().active_kinds(&mut rng),
        FaultKind::ALL.to_vec()
    );
}

#[test]
fn the_nemesis_injects_only_active_kinds_and_never_downs_a_majority() {
    use sim_core::fault::{FaultKind, NemesisConfig};
    for seed in 0..20 {
        let mut c = config(5);
        c.seed = seed;
        c.duration = SimDuration::from_secs(5);
        c.quiet_period = SimDuration::from_secs(1);
        c.nemesis = Some(NemesisConfig {
            interval_min: SimDuration::from_millis(20),
            interval_max: SimDuration::from_millis(80),
            kinds: vec![FaultKind::Crash, FaultKind::Pause, FaultKind::Partition],
            ..NemesisConfig::default()
        });
        let out = run(c, Script::default());
        assert!(
            out.stats.faults.keys().all(|k| *k != FaultKind::Clog),
            "seed {seed}"
        );
        assert!(
            out.stats
                .faults
                .get(&FaultKind::Crash)
                .copied()
                .unwrap_or(0)
                > 0
        );
        // Replay the realised schedule: at most ⌊(5-1)/2⌋ = 2 nodes down at once.
        let mut down = std::collections::BTreeSet::new();
        for f in &out.realised_schedule {
            match f.fault {
                Fault::Crash { node } | Fault::Pause { node } => {
                    down.insert(node);
                }
                Fault::Restart { node } | Fault::Resume { node } => {
                    down.remove(&node);
                }
                _ => {}
            }
            assert!(down.len() <= 2, "seed {seed}: {down:?} down at {}", f.at);
        }
    }
}

#[test]
fn a_failed_request_is_retried_on_other_nodes_as_new_operations() {
    let mut c = config(3);
    c.duration = SimDuration::from_secs(10);
    c.clients = Some(ClientConfig {
        clients: 1,
        think_min: SimDuration::from_millis(1),
        think_max: SimDuration::from_millis(1),
        timeout: SimDuration::from_millis(50),
        max_operations: Some(30),
        max_retries: 2,
    });
    let script = Script {
        reply_to_even: true,
        ..Script::default()
    };
    // Requests alternate 2, 3, 4, 5... : odd ones are never answered.
    let out = run_with_clients(c, script, Some((2..100).collect()));
    let ops = &out.history.operations;
    assert_eq!(ops.len(), 30);
    let mut i = 0;
    while i < ops.len() {
        let request = ops[i].request;
        let attempts = ops[i..].iter().take_while(|o| o.request == request).count();
        if request.is_multiple_of(2) {
            assert_eq!(attempts, 1, "an answered request is not retried");
            assert!(ops[i].is_ok());
        } else {
            assert!(
                attempts == 3 || i + attempts == ops.len(),
                "1 try + 2 retries: {attempts}"
            );
            for pair in ops[i..i + attempts].windows(2) {
                assert_ne!(pair[0].node, pair[1].node, "a retry goes to another node");
                assert_ne!(pair[0].id, pair[1].id, "as a new operation");
            }
        }
        i += attempts;
    }
}

/// An outer process that runs a [`Probe`] inside itself through [`Ctx::nested`]: the
/// probe's messages travel wrapped in the outer type, its timers fire with the ids it set,
/// and its observations reach the trace mapped.
mod nested {
    use super::*;
    use sim_core::process::{Effect, Lift};

    #[derive(Debug, Clone, Serialize)]
    enum OuterMsg {
        Inner(u64),
    }

    #[derive(Debug, Clone, Serialize)]
    enum OuterTimer {
        Inner(u32),
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    enum OuterObs {
        Inner(Obs),
        /// The outer process saw a timer of the inner one fire, with the id the inner
        /// process got back from `set_timer`.
        TimerIdKept(bool),
    }

    struct Outer {
        probe: Probe,
        inner_timer_ids: Vec<TimerId>,
    }

    impl Outer {
        fn forward(ctx: &mut Ctx<'_, Self>, effects: Vec<Effect<Probe>>) {
            let lift = Lift::<Probe, Outer> {
                msg: &OuterMsg::Inner,
                timer: &OuterTimer::Inner,
                obs: &|o| Some(OuterObs::Inner(o)),
                reply: &Some,
            };
            for effect in effects {
                if let Some(e) = effect.lift(&lift) {
                    ctx.forward(e);
                }
            }
        }
    }

    impl Process for Outer {
        type Msg = OuterMsg;
        type Timer = OuterTimer;
        type Op = u64;
        type Reply = u64;
        type Obs = OuterObs;

        fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
            let probe = &mut self.probe;
            let ((), effects) = ctx.nested(|inner| probe.on_start(inner));
            self.inner_timer_ids = effects
                .iter()
                .filter_map(|e| match e {
                    Effect::SetTimer { id, .. } => Some(*id),
                    _ => None,
                })
                .collect();
            Self::forward(ctx, effects);
        }
        fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: OuterMsg) {
            let OuterMsg::Inner(n) = msg;
            let probe = &mut self.probe;
            let ((), effects) = ctx.nested(|inner| probe.on_message(inner, from, n));
            Self::forward(ctx, effects);
        }
        fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, id: TimerId, timer: OuterTimer) {
            ctx.observe(OuterObs::TimerIdKept(self.inner_timer_ids.contains(&id)));
            let OuterTimer::Inner(label) = timer;
            let probe = &mut self.probe;
            let ((), effects) = ctx.nested(|inner| probe.on_timer(inner, id, label));
            Self::forward(ctx, effects);
        }
        fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, value: u64) {
            let probe = &mut self.probe;
            let ((), effects) = ctx.nested(|inner| probe.on_client(inner, op, value));
            Self::forward(ctx, effects);
        }
    }

    #[test]
    fn a_nested_process_sends_sets_timers_and_observes_through_the_outer_one() {
        let script = Script {
            timers: vec![
                (7, SimDuration::from_millis(30)),
                (8, SimDuration::from_millis(40)),
            ],
            cancel: vec![8],
            send_at_start: vec![11, 12],
            reply_to_even: false,
        };
        let out = Simulation::new(
            config(2),
            move |_| Outer {
                probe: Probe {
                    script: script.clone(),
                },
                inner_timer_ids: Vec::new(),
            },
            None,
            TraceOptions::default(),
        )
        .expect("valid config")
        .run();
        let obs: Vec<(NodeId, OuterObs)> = out
            .observations
            .iter()
            .map(|o| (o.node, o.obs.clone()))
            .collect();
        // The inner messages arrived at node 1, unwrapped by the outer process.
        for n in [11, 12] {
            assert!(obs.contains(&(NodeId(1), OuterObs::Inner(Obs::Got { from: NodeId(0), n }))));
        }
        // Timer 7 fired on both nodes with the id the inner process was given; the
        // cancelled timer 8 never fired.
        for node in [NodeId(0), NodeId(1)] {
            let fired: Vec<u32> = obs
                .iter()
                .filter(|(n, _)| *n == node)
                .filter_map(|(_, o)| match o {
                    OuterObs::Inner(Obs::Fired { label, .. }) => Some(*label),
                    _ => None,
                })
                .collect();
            assert_eq!(fired, vec![7], "node {node:?}");
            assert!(obs.contains(&(node, OuterObs::TimerIdKept(true))));
            assert!(!obs.contains(&(node, OuterObs::TimerIdKept(false))));
        }
    }
}
