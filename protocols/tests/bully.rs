//! The bully election's behaviours that the reference implementation got right (seed
//! digest §11), checked here on the simulator, both under the reference's `instant`
//! network (zero latency, no loss) and under a lossy LAN; and the messages one election
//! costs against the algorithm's O(n²) bound.
//!
//! `cargo test -p protocols --test bully -- --nocapture` prints the message counts.

use std::sync::Arc;

use protocols::bully::checker::{ElectionChecker, FencingChecker};
use protocols::bully::{Bugs, Mode, Node, Observation, Settings, Timing};
use sim_core::fault::{Fault, ScheduledFault};
use sim_core::network::{LinkConfig, NetworkConfig, PartitionShape};
use sim_core::trace::TraceOptions;
use sim_core::{Checker, NodeId, RunOutput, SimConfig, SimDuration, SimTime, Simulation};

#[derive(Debug, Clone, Copy)]
enum Net {
    /// The reference's synchronous delivery.
    Instant,
    /// 1–5 ms links losing 5% of messages.
    LossyLan,
    /// 1–5 ms reliable links.
    Lan,
}

fn settings(resource: Option<u32>, mode: Mode) -> Settings {
    Settings {
        timing: Timing::default(),
        mode,
        resource: resource.map(NodeId),
        engine: Arc::new(storage::bitcask::BitcaskOpener::default()),
    }
}

fn simulate(
    seed: u64,
    nodes: usize,
    net: Net,
    duration_ms: u64,
    schedule: Vec<(u64, Fault)>,
    settings: Settings,
) -> RunOutput<Node> {
    let mut config = SimConfig::new(seed, nodes);
    config.duration = SimDuration::from_millis(duration_ms);
    config.quiet_period = SimDuration::ZERO;
    config.network = match net {
        Net::Instant => NetworkConfig::instant(),
        Net::Lan => NetworkConfig::default(),
        Net::LossyLan => NetworkConfig {
            default_link: LinkConfig {
                drop_probability: 0.05,
                ..LinkConfig::default()
            },
            links: Default::default(),
        },
    };
    config.schedule = schedule
        .into_iter()
        .map(|(at, fault)| ScheduledFault {
            at: SimTime(at * 1_000),
            fault,
        })
        .collect();
    let factory = move |id| Node::new(id, settings.clone(), Bugs::default());
    let trace = TraceOptions {
        keep_lines: true,
        jsonl: None,
    };
    Simulation::new(config, factory, None, trace)
        .expect("valid configuration")
        .run()
}

fn members(run: &RunOutput<Node>, resource: Option<u32>) -> Vec<NodeId> {
    (0..run.node_count as u32)
        .filter(|&n| Some(n) != resource)
        .map(NodeId)
        .collect()
}

fn check(run: &RunOutput<Node>, resource: Option<u32>, mode: Mode) {
    let election = ElectionChecker {
        mode,
        members: members(run, resource),
        max_split_brain: None,
    };
    let violations: Vec<String> = election
        .check(run)
        .into_iter()
        .chain(FencingChecker.check(run))
        .map(|v| v.to_string())
        .collect();
    assert!(violations.is_empty(), "{violations:?}");
}

/// Each member's last view of the leader, in its current incarnation.
fn final_views(run: &RunOutput<Node>) -> Vec<(NodeId, Option<NodeId>)> {
    let mut views = std::collections::BTreeMap::new();
    for o in &run.observations {
        if let Observation::Leader { leader, .. } = o.obs
            && run.final_incarnation[o.node.index()] == o.incarnation
        {
            views.insert(o.node, leader);
        }
    }
    views.into_iter().collect()
}

/// `(time, from, to, kind)` of every message sent, from the trace.
fn sends(run: &RunOutput<Node>) -> Vec<(SimTime, u32, u32, String)> {
    run.trace_lines
        .iter()
        .filter(|l| l.kind == "send")
        .map(|l| {
            // "n1 -> n2 send m3 Election { term: 1 }"
            let words: Vec<&str> = l.text.split_whitespace().collect();
            let node = |w: &str| w.trim_start_matches('n').parse::<u32>().expect("node id");
            (l.time, node(words[0]), node(words[2]), words[5].to_string())
        })
        .collect()
}

const NETS: [Net; 2] = [Net::Instant, Net::LossyLan];

#[test]
fn the_highest_available_id_wins_and_election_goes_only_to_higher_ids() {
    for net in NETS {
        for seed in 0..5 {
            let run = simulate(seed, 5, net, 1_000, vec![], settings(None, Mode::Classic));
            check(&run, None, Mode::Classic);
            let views = final_views(&run);
            assert_eq!(views.len(), 5, "{net:?}");
            assert!(
                views.iter().all(|(_, l)| *l == Some(NodeId(4))),
                "{net:?} seed {seed}: {views:?}"
            );
            let sent = sends(&run);
            let elections: Vec<_> = sent.iter().filter(|s| s.3 == "Election").collect();
            assert!(!elections.is_empty());
            assert!(
                elections.iter().all(|(_, from, to, _)| to > from),
                "{net:?}: ELECTION went to a lower id"
            );
            // The winner announces itself to every other member.
            let mut announced: Vec<u32> = sent
                .iter()
                .filter(|s| s.3 == "Coordinator" && s.1 == 4)
                .map(|s| s.2)
                .collect();
            announced.sort();
            announced.dedup();
            assert_eq!(announced, vec![0, 1, 2, 3], "{net:?}");
            // Only the highest member ever led.
            assert!(run.observations.iter().all(|o| match o.obs {
                Observation::Leading { token } => token.leader == NodeId(4),
                _ => true,
            }));
        }
    }
}

#[test]
fn an_election_from_a_lower_id_gets_alive_and_the_receivers_own_election() {
    // n4 leads; from 500 ms n0 no longer hears it (n4 -> n0 is cut), so n0 holds an
    // election: n1, n2, n3 (followers) answer ALIVE and hold their own.
    let cut = Fault::Partition {
        shape: PartitionShape::OneWay {
            from: vec![NodeId(4)],
            to: vec![NodeId(0)],
        },
    };
    for net in NETS {
        let schedule = vec![(500, cut.clone()), (1_000, Fault::Heal)];
        let run = simulate(3, 5, net, 1_500, schedule, settings(None, Mode::Classic));
        check(&run, None, Mode::Classic);
        let started_at = |node: u32, after: SimTime| {
            run.observations
                .iter()
                .find(|o| {
                    o.node == NodeId(node)
                        && o.time >= after
                        && matches!(o.obs, Observation::ElectionStarted { .. })
                })
                .map(|o| o.time)
        };
        let first = started_at(0, SimTime(500_000)).expect("n0 holds an election");
        let sent = sends(&run);
        for higher in 1..4 {
            assert!(
                sent.iter()
                    .any(|s| s.0 >= first && s.1 == higher && s.2 == 0 && s.3 == "Alive"),
                "{net:?}: n{higher} did not answer ALIVE"
            );
            assert!(
                started_at(higher, first).is_some(),
                "{net:?}: n{higher} did not hold its own election"
            );
        }
        // The leader keeps leading: once the link is back, everyone names it.
        let views = final_views(&run);
        assert!(
            views.iter().all(|(_, l)| *l == Some(NodeId(4))),
            "{net:?}: {views:?}"
        );
    }
}

#[test]
fn a_recovered_higher_member_starts_an_election_at_once_and_preempts_the_leader() {
    for net in NETS {
        for seed in 0..5 {
            let schedule = vec![
                (300, Fault::Crash { node: NodeId(4) }),
                (1_000, Fault::Restart { node: NodeId(4) }),
            ];
            let run = simulate(seed, 5, net, 2_000, schedule, settings(None, Mode::Classic));
            check(&run, None, Mode::Classic);
            // Meanwhile n3 led.
            assert!(run.observations.iter().any(|o| o.node == NodeId(3)
                && o.time < SimTime(1_000_000)
                && matches!(o.obs, Observation::Leading { .. })));
            // n4 holds an election the moment it is back...
            assert!(run.observations.iter().any(|o| o.node == NodeId(4)
                && o.incarnation == 2
                && o.time == SimTime(1_000_000)
                && matches!(o.obs, Observation::ElectionStarted { .. })));
            // ...and everyone follows it.
            let views = final_views(&run);
            assert!(
                views.iter().all(|(_, l)| *l == Some(NodeId(4))),
                "{net:?} seed {seed}: {views:?}"
            );
        }
    }
}

#[test]
fn terms_never_decrease_across_elections_and_restarts() {
    for net in NETS {
        let schedule = vec![
            (200, Fault::Crash { node: NodeId(4) }),
            (600, Fault::Crash { node: NodeId(3) }),
            (900, Fault::Restart { node: NodeId(4) }),
            (1_300, Fault::Restart { node: NodeId(3) }),
            (1_500, Fault::Crash { node: NodeId(4) }),
            (1_800, Fault::Restart { node: NodeId(4) }),
        ];
        let run = simulate(7, 5, net, 2_500, schedule, settings(None, Mode::Classic));
        check(&run, None, Mode::Classic);
        for node in 0..5 {
            let terms: Vec<u64> = run
                .observations
                .iter()
                .filter(|o| o.node == NodeId(node))
                .filter_map(|o| match o.obs {
                    Observation::Term { term } | Observation::Recovered { term } => Some(term),
                    _ => None,
                })
                .collect();
            assert!(terms.windows(2).all(|w| w[0] <= w[1]), "n{node}: {terms:?}");
        }
        // Each member's successive leaderships have increasing terms (across the
        // cluster they need not: a restarted member may lead briefly in a stale term).
        let leading = |node: u32| -> Vec<u64> {
            run.observations
                .iter()
                .filter(|o| o.node == NodeId(node))
                .filter_map(|o| match o.obs {
                    Observation::Leading { token } => Some(token.term),
                    _ => None,
                })
                .collect()
        };
        assert!(leading(4).len() >= 3, "{:?}", leading(4));
        for node in 0..5 {
            let terms = leading(node);
            assert!(terms.windows(2).all(|w| w[0] < w[1]), "n{node}: {terms:?}");
        }
    }
}

#[test]
fn split_brain_after_a_partition_is_resolved_by_the_members_themselves() {
    // Node 0 is the resource; the highest member, n5, is cut off: in classic mode both
    // sides have a leader (n5 and n4). When the partition heals, the members alone
    // settle on n5; there is no harness repair.
    for net in NETS {
        for mode in [Mode::Classic, Mode::Majority] {
            let schedule = vec![
                (
                    400,
                    Fault::Partition {
                        shape: PartitionShape::Isolate { node: NodeId(5) },
                    },
                ),
                (1_400, Fault::Heal),
            ];
            let run = simulate(5, 6, net, 2_500, schedule, settings(Some(0), mode));
            check(&run, Some(0), mode);
            let n4_led = run
                .observations
                .iter()
                .any(|o| o.node == NodeId(4) && matches!(o.obs, Observation::Leading { .. }));
            assert!(n4_led, "{net:?} {mode:?}: the majority side elected n4");
            let views = final_views(&run);
            assert!(
                views.iter().all(|(_, l)| *l == Some(NodeId(5))),
                "{net:?} {mode:?}: {views:?}"
            );
            let split = protocols::bully::checker::split_brain(&run).total;
            match mode {
                Mode::Classic => assert!(split > SimDuration::ZERO, "{net:?}: no split brain?"),
                Mode::Majority => assert_eq!(split, SimDuration::ZERO, "{net:?}"),
            }
        }
    }
}

#[test]
fn a_deposed_leaders_writes_are_fenced_off() {
    // Classic mode, n5 isolated from the members but not from the resource (n0): it keeps
    // writing with its old token after n4 has written with a newer one.
    let mut links = Vec::new();
    for m in 1..5 {
        links.push((NodeId(5), NodeId(m)));
        links.push((NodeId(m), NodeId(5)));
    }
    let schedule = vec![
        (
            400,
            Fault::Partition {
                shape: PartitionShape::Links { links },
            },
        ),
        (1_400, Fault::Heal),
    ];
    let run = simulate(
        2,
        6,
        Net::LossyLan,
        2_500,
        schedule,
        settings(Some(0), Mode::Classic),
    );
    check(&run, Some(0), Mode::Classic);
    let rejected = run
        .observations
        .iter()
        .filter(|o| matches!(o.obs, Observation::WriteRejected { .. }))
        .count();
    assert!(rejected > 0, "the resource rejected no stale write");
}

/// Election messages (ELECTION, ALIVE, COORDINATOR) sent from `from` to the end.
fn election_messages(run: &RunOutput<Node>, from: SimTime) -> u64 {
    sends(run)
        .iter()
        .filter(|s| s.0 >= from && matches!(s.3.as_str(), "Election" | "Alive" | "Coordinator"))
        .count() as u64
}

#[test]
fn messages_per_election_stay_within_the_quadratic_bound() {
    // Two elections per run on a 1-5 ms LAN: the boot election (every member starts one
    // at once: the worst case) and the one after the leader crashes at 1 s.
    println!("members  election     median  worst  n^2");
    for n in [5usize, 20, 50] {
        let seeds = if n == 50 { 10 } else { 30 };
        let (mut boot, mut after_crash) = (Vec::new(), Vec::new());
        for seed in 0..seeds {
            let schedule = vec![(
                1_000,
                Fault::Crash {
                    node: NodeId(n as u32 - 1),
                },
            )];
            let run = simulate(
                seed,
                n,
                Net::Lan,
                2_000,
                schedule,
                settings(None, Mode::Classic),
            );
            let total = election_messages(&run, SimTime::ZERO);
            let after = election_messages(&run, SimTime(1_000_000));
            boot.push(total - after);
            after_crash.push(after);
            let views = final_views(&run);
            assert!(
                views
                    .iter()
                    .filter(|(node, _)| node.index() != n - 1)
                    .all(|(_, l)| *l == Some(NodeId(n as u32 - 2)))
            );
        }
        for (label, counts) in [("boot", &mut boot), ("leader crash", &mut after_crash)] {
            counts.sort_unstable();
            let median = counts[counts.len() / 2];
            let worst = *counts.last().expect("seeds ran");
            println!("{n:>7}  {label:<12} {median:>6} {worst:>6} {:>4}", n * n);
            assert!(
                worst <= (n * n) as u64 + 2 * n as u64,
                "{n} members, {label}: {worst} messages exceed n^2 + 2n"
            );
        }
    }
}
