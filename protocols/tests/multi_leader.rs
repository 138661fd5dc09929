//! Multi-leader replication and its CRDTs.
//!
//! 1. The merge laws, as property tests over reachable states of every type:
//!    commutative, associative, idempotent, inflationary. Each bug flag's merge is shown
//!    to break the law or the specification it is meant to break.
//! 2. The behaviours the reference got right (seed digest §16), on the simulator under
//!    the reference's `instant` network and under a lossy network with crashes: LWW by
//!    (clock, node) with ties to the higher node, strictly increasing timestamps, add-wins
//!    OR-sets, at-most-once application, store-and-forward around a ring (one hop
//!    all-to-all). And its defects, fixed: replication happens without anyone calling
//!    `sync()`, removing an absent element is a clear failure, merges never mutate an
//!    argument (they borrow it), and removed elements leave no tombstones.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use protocols::multi_leader::checker::{
    ConflictChecker, ConvergenceChecker, SpecificationChecker, final_states, specified_merge,
};
use protocols::multi_leader::crdt::{
    CustomMerge, Dot, GCounter, KeySpaces, Kind, LwwRegister, MergeFlaws, MergeFn, MvRegister,
    OrSet, PnCounter, Stamp, Value, ValueType,
};
use protocols::multi_leader::hlc::Hlc;
use protocols::multi_leader::workload::CrdtWorkload;
use protocols::multi_leader::{
    Bugs, ConflictRecord, Node, Observation, Op, Reply, Resolution, Settings, Shipping, Timing,
    Topology,
};
use sim_core::fault::{Fault, ScheduledFault};
use sim_core::network::{LinkConfig, NetworkConfig};
use sim_core::rng::SimRng;
use sim_core::trace::TraceOptions;
use sim_core::workload::ClientConfig;
use sim_core::{
    Checker, ClientId, Completion, NodeId, RunOutput, SimConfig, SimDuration, SimTime, Simulation,
};
use storage::kv::EngineSyncPolicy;

// ---------------------------------------------------------------------------------
// Reachable states
// ---------------------------------------------------------------------------------

/// One step of a three-replica history: replica `at` does operation `arg`, or (when
/// `sync`) joins replica `arg % 3`'s state.
#[derive(Debug, Clone)]
struct Step {
    at: usize,
    sync: bool,
    arg: u8,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0usize..3, prop::bool::weighted(0.3), any::<u8>()).prop_map(|(at, sync, arg)| Step {
            at,
            sync,
            arg,
        }),
        0..40,
    )
}

/// The three replicas' states after `steps` of `kind` operations and joins.
fn replicas(kind: Kind, steps: &[Step]) -> [Value; 3] {
    let mut states = [kind.bottom(), kind.bottom(), kind.bottom()];
    let mut clocks = [Hlc::default(); 3];
    let mut writes = 0u32;
    for step in steps {
        let r = step.at;
        let id = r as u32;
        if step.sync {
            let other = states[step.arg as usize % 3].clone();
            states[r] = states[r].merge(&other).expect("same kind");
            continue;
        }
        writes += 1;
        let delta = match &states[r] {
            Value::GCounter(c) => {
                Value::GCounter(c.increment_delta(id, u64::from(step.arg % 5) + 1))
            }
            Value::PnCounter(c) if step.arg % 2 == 0 => {
                Value::PnCounter(c.increment_delta(id, u64::from(step.arg % 7) + 1))
            }
            Value::PnCounter(c) => {
                Value::PnCounter(c.decrement_delta(id, u64::from(step.arg % 7) + 1))
            }
            Value::Lww(_) => {
                // Physical times collide on purpose, so equal clocks meet node ids.
                clocks[r] = clocks[r].tick(u64::from(step.arg % 4));
                let stamp = Stamp {
                    hlc: clocks[r],
                    replica: id,
                };
                Value::Lww(LwwRegister::assign_delta(stamp, format!("{r}.{writes}")))
            }
            Value::MvRegister(m) => {
                let dot = Dot::new(id, m.context().max_seen(id) + 1);
                Value::MvRegister(m.assign_delta(dot, format!("{r}.{writes}")))
            }
            Value::Custom(m) => {
                let dot = Dot::new(id, m.register().context().max_seen(id) + 1);
                let value = match m.strategy().value_type() {
                    ValueType::Int => (i64::from(step.arg) - 128).to_string(),
                    ValueType::Text => {
                        format!("{r}.{writes}{}", "x".repeat(usize::from(step.arg % 3)))
                    }
                    ValueType::Set => format!("e{},e{}", step.arg % 4, step.arg % 3),
                };
                Value::Custom(m.assign_delta(dot, value))
            }
            Value::OrSet(s) => {
                let element = format!("e{}", step.arg % 3);
                if step.arg % 5 < 2 && s.contains(&element) {
                    Value::OrSet(s.remove_delta(&element))
                } else {
                    let dot = Dot::new(id, s.context().max_seen(id) + 1);
                    Value::OrSet(s.add_delta(dot, element))
                }
            }
        };
        states[r] = states[r].merge(&delta).expect("same kind");
    }
    states
}

fn join(a: &Value, b: &Value) -> Value {
    a.merge(b).expect("same kind")
}

macro_rules! merge_laws {
    ($($name:ident: $kind:expr;)*) => {$(
        mod $name {
            use super::*;

            proptest! {
                #[test]
                fn commutative(s in steps()) {
                    let [a, b, _] = replicas($kind, &s);
                    prop_assert_eq!(join(&a, &b), join(&b, &a));
                }

                #[test]
                fn associative(s in steps()) {
                    let [a, b, c] = replicas($kind, &s);
                    prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
                }

                #[test]
                fn idempotent(s in steps()) {
                    let [a, _, _] = replicas($kind, &s);
                    prop_assert_eq!(join(&a, &a), a);
                }

                #[test]
                fn inflationary(s in steps()) {
                    let [a, b, _] = replicas($kind, &s);
                    let ab = join(&a, &b);
                    // a ≤ a ⊔ b and b ≤ a ⊔ b: joining either back changes nothing.
                    prop_assert_eq!(join(&ab, &a), ab.clone());
                    prop_assert_eq!(join(&ab, &b), ab.clone());
                    // And the arguments are untouched (merge borrows them).
                    prop_assert_eq!(&replicas($kind, &s)[0], &a);
                }

                #[test]
                fn replicas_that_exchange_states_converge(s in steps()) {
                    let [a, b, c] = replicas($kind, &s);
                    let all = join(&join(&a, &b), &c);
                    prop_assert_eq!(join(&join(&c, &a), &b), all.clone());
                    prop_assert_eq!(join(&b, &join(&c, &a)), all);
                }
            }
        }
    )*};
}

merge_laws! {
    gcounter_laws: Kind::GCounter;
    pncounter_laws: Kind::PnCounter;
    lww_laws: Kind::Lww;
    mvregister_laws: Kind::MvRegister;
    orset_laws: Kind::OrSet;
    custom_int_max_laws: custom(ValueType::Int, MergeFn::Max);
    custom_int_min_laws: custom(ValueType::Int, MergeFn::Min);
    custom_text_longest_laws: custom(ValueType::Text, MergeFn::Longest);
    custom_set_union_laws: custom(ValueType::Set, MergeFn::Union);
    custom_set_intersection_laws: custom(ValueType::Set, MergeFn::Intersection);
}

fn custom(ty: ValueType, f: MergeFn) -> Kind {
    Kind::Custom(CustomMerge::new(ty, f).expect("a valid pairing"))
}

proptest! {
    /// Every merge function is commutative, associative and idempotent on its values, so
    /// a custom register's reading does not depend on the order its values arrived in;
    /// and the protocol's function agrees with the checker's specification of it.
    #[test]
    fn merge_functions_are_order_independent_and_match_their_specification(
        ints in prop::collection::vec(-50i64..50, 1..6),
        sets in prop::collection::vec(prop::collection::btree_set(0u8..5, 0..4), 1..6),
        texts in prop::collection::vec("[a-c]{0,3}", 1..6),
    ) {
        let ints: Vec<String> = ints.iter().map(|i| i.to_string()).collect();
        let sets: Vec<String> = sets
            .iter()
            .map(|s| s.iter().map(|e| format!("e{e}")).collect::<Vec<_>>().join(","))
            .collect();
        for ty in ValueType::ALL {
            let values = match ty {
                ValueType::Int => &ints,
                ValueType::Set => &sets,
                ValueType::Text => &texts,
            };
            for &f in MergeFn::for_type(ty) {
                let m = CustomMerge::new(ty, f).expect("valid");
                let forward = m.resolve(values.iter().map(String::as_str));
                let backward = m.resolve(values.iter().rev().map(String::as_str));
                prop_assert_eq!(&forward, &backward);
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                prop_assert_eq!(&forward, &specified_merge(m, &refs));
                let twice = m.resolve(values.iter().chain(values.iter()).map(String::as_str));
                prop_assert_eq!(&forward, &twice);
            }
        }
    }
}

proptest! {
    /// A removed element leaves no tombstone: once every replica has joined every other,
    /// the causal context is a bare version vector (no dot cloud), whatever was removed.
    #[test]
    fn orset_keeps_no_tombstones_once_states_are_exchanged(s in steps()) {
        let [a, b, c] = replicas(Kind::OrSet, &s);
        let Value::OrSet(all) = join(&join(&a, &b), &c) else { unreachable!() };
        prop_assert_eq!(all.context().cloud_len(), 0);
    }
}

// ---------------------------------------------------------------------------------
// The CRDTs' specifications, and what each defect breaks
// ---------------------------------------------------------------------------------

fn stamp(physical: u64, logical: u32, replica: u32) -> Stamp {
    Stamp {
        hlc: Hlc::new(physical, logical),
        replica,
    }
}

#[test]
fn lww_compares_clock_then_node_and_ties_go_to_the_higher_node() {
    let low = LwwRegister::assign_delta(stamp(10, 0, 2), "from n2");
    let high = LwwRegister::assign_delta(stamp(10, 0, 1), "from n1 later clock");
    let later = LwwRegister::assign_delta(stamp(10, 1, 0), "later");
    assert_eq!(low.merge(&high).value(), Some("from n2"));
    assert_eq!(high.merge(&low).value(), Some("from n2"));
    assert_eq!(low.merge(&later).value(), Some("later"));
    // The defect: a tie stays with whichever arrived first.
    let flaw = MergeFlaws {
        lww_no_tiebreak: true,
        ..MergeFlaws::default()
    };
    let (a, b) = (Value::Lww(low), Value::Lww(high));
    assert_ne!(
        a.merge_with(&b, flaw).unwrap(),
        b.merge_with(&a, flaw).unwrap()
    );
}

#[test]
fn counters_join_by_maximum_and_the_summing_defect_counts_twice() {
    let a = GCounter::new().increment_delta(0, 3);
    let b = a.merge(&GCounter::new().increment_delta(1, 2));
    assert_eq!(b.value(), 5);
    assert_eq!(b.merge(&b).value(), 5);
    let flaw = MergeFlaws {
        counters_sum: true,
        ..MergeFlaws::default()
    };
    let v = Value::GCounter(b);
    let Value::GCounter(twice) = v.merge_with(&v, flaw).unwrap() else {
        unreachable!()
    };
    assert_eq!(twice.value(), 10, "summing is not idempotent");
    let pn = PnCounter::new().increment_delta(0, 5);
    let pn = pn.merge(&pn.decrement_delta(0, 7));
    assert_eq!(pn.value(), -2);
}

#[test]
fn orset_is_add_wins_and_remove_deletes_only_observed_adds() {
    let base = OrSet::new().merge(&OrSet::new().add_delta(Dot::new(0, 1), "x"));
    // Replica 0 removes x (observing dot (0,1)); replica 1 concurrently adds x, before
    // it has seen replica 0's add, and then receives that add.
    let removed = base.merge(&base.remove_delta("x"));
    let readded = base.merge(&OrSet::new().add_delta(Dot::new(1, 1), "x"));
    assert!(!removed.contains("x"));
    let joined = removed.merge(&readded);
    assert!(joined.contains("x"), "the concurrent add wins");
    assert_eq!(joined.dots_of("x"), vec![Dot::new(1, 1)]);
    assert_eq!(joined, readded.merge(&removed));
    // The defect: the remove also deletes the add it never saw, on one side only.
    let flaw = MergeFlaws {
        orset_remove_unobserved: true,
        ..MergeFlaws::default()
    };
    let (r, a) = (Value::OrSet(removed), Value::OrSet(readded));
    assert_ne!(
        r.merge_with(&a, flaw).unwrap(),
        a.merge_with(&r, flaw).unwrap()
    );
}

#[test]
fn mv_register_keeps_concurrent_writes_and_a_later_write_replaces_them() {
    let empty = MvRegister::new();
    let a = empty.merge(&empty.assign_delta(Dot::new(0, 1), "a"));
    let b = empty.merge(&empty.assign_delta(Dot::new(1, 1), "b"));
    let both = a.merge(&b);
    assert_eq!(both.values(), vec!["a", "b"]);
    let c = both.merge(&both.assign_delta(Dot::new(2, 1), "c"));
    assert_eq!(c.values(), vec!["c"]);
    assert_eq!(
        c.merge(&a).values(),
        vec!["c"],
        "a replaced value stays replaced"
    );
    let flaw = MergeFlaws {
        mv_collapse: true,
        ..MergeFlaws::default()
    };
    let Value::MvRegister(collapsed) = Value::MvRegister(a)
        .merge_with(&Value::MvRegister(b), flaw)
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(
        collapsed.values(),
        vec!["b"],
        "the defect loses a concurrent write"
    );
}

#[test]
fn values_of_different_kinds_do_not_merge() {
    let e = Kind::GCounter
        .bottom()
        .merge(&Kind::OrSet.bottom())
        .unwrap_err();
    assert_eq!(e.to_string(), "cannot merge a gcounter with a orset");
}

// ---------------------------------------------------------------------------------
// The protocol on the simulator
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Net {
    Instant,
    Lossy,
}

type Gen = Box<dyn FnMut(ClientId, &mut SimRng) -> Op>;

fn settings(topology: Topology, shipping: Shipping) -> Settings {
    Settings {
        topology,
        shipping,
        timing: Timing::default(),
        spaces: KeySpaces::builtin(),
        engine: Arc::new(storage::btree::BTreeOpener {
            options: storage::btree::BTreeOptions {
                sync_policy: EngineSyncPolicy::Explicit,
                ..Default::default()
            },
        }),
    }
}

fn simulate(
    seed: u64,
    nodes: usize,
    net: Net,
    settings: Settings,
    schedule: Vec<(u64, Fault)>,
    workload: Gen,
) -> RunOutput<Node> {
    simulate_for(2500, seed, nodes, net, settings, schedule, workload)
}

fn simulate_for(
    millis: u64,
    seed: u64,
    nodes: usize,
    net: Net,
    settings: Settings,
    schedule: Vec<(u64, Fault)>,
    workload: Gen,
) -> RunOutput<Node> {
    let mut config = SimConfig::new(seed, nodes);
    config.duration = SimDuration::from_millis(millis);
    config.quiet_period = SimDuration::from_millis(1000);
    config.network = match net {
        Net::Instant => NetworkConfig::instant(),
        Net::Lossy => NetworkConfig {
            default_link: LinkConfig {
                drop_probability: 0.05,
                duplicate_probability: 0.05,
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
    config.clients = Some(ClientConfig {
        clients: 4,
        think_min: SimDuration::from_millis(5),
        think_max: SimDuration::from_millis(20),
        timeout: SimDuration::from_millis(400),
        max_operations: None,
        max_retries: 0,
    });
    let factory = move |id| Node::new(id, settings.clone(), Bugs::default());
    let trace = TraceOptions {
        keep_lines: false,
        jsonl: None,
    };
    Simulation::new(config, factory, Some(Box::new(workload)), trace)
        .expect("valid configuration")
        .run()
}

fn all_types() -> Gen {
    let mut w = CrdtWorkload::new(Kind::ALL.to_vec(), 2, 3);
    Box::new(move |c, rng| w.next(c, rng))
}

fn check(run: &RunOutput<Node>) {
    check_with(run, &KeySpaces::builtin());
}

fn check_with(run: &RunOutput<Node>, spaces: &KeySpaces) {
    let spaces = spaces.clone();
    let violations: Vec<String> = ConvergenceChecker {
        spaces: spaces.clone(),
    }
    .check(run)
    .into_iter()
    .chain(
        SpecificationChecker {
            spaces: spaces.clone(),
        }
        .check(run),
    )
    .chain(ConflictChecker { spaces }.check(run))
    .map(|v| v.to_string())
    .collect();
    assert!(violations.is_empty(), "{violations:?}");
    let ok = run.history.operations.iter().filter(|o| o.is_ok()).count();
    assert!(ok > 50, "only {ok} operations succeeded");
}

/// `(origin, from)` of every remote application.
fn applications(run: &RunOutput<Node>) -> Vec<(u32, u32)> {
    run.observations
        .iter()
        .filter_map(|o| match o.obs {
            Observation::Applied { origin, from, .. } => Some((origin, from)),
            _ => None,
        })
        .collect()
}

#[test]
fn all_to_all_converges_in_one_hop_under_the_instant_network() {
    for seed in 0..4 {
        let run = simulate(
            seed,
            4,
            Net::Instant,
            settings(Topology::AllToAll, Shipping::Delta),
            vec![],
            all_types(),
        );
        check(&run);
        let apps = applications(&run);
        assert!(!apps.is_empty());
        assert!(
            apps.iter().all(|(origin, from)| origin == from),
            "with no delay every change reaches every node straight from its origin"
        );
    }
}

#[test]
fn ring_and_star_converge_by_store_and_forward() {
    for (topology, nodes) in [(Topology::Ring, 5), (Topology::Star, 4)] {
        for net in [Net::Instant, Net::Lossy] {
            let run = simulate(
                7,
                nodes,
                net,
                settings(topology.clone(), Shipping::Delta),
                vec![],
                all_types(),
            );
            check(&run);
            let forwarded = applications(&run)
                .iter()
                .filter(|(origin, from)| origin != from)
                .count();
            assert!(forwarded > 0, "{topology:?} {net:?}: nothing was forwarded");
            let (states, unsettled) = final_states(&run);
            assert!(unsettled.is_empty());
            assert_eq!(states.len(), nodes);
        }
    }
}

#[test]
fn full_state_shipping_converges_too_and_costs_more_bytes() {
    let run = simulate(
        3,
        4,
        Net::Lossy,
        settings(Topology::Ring, Shipping::Full),
        vec![],
        all_types(),
    );
    check(&run);
    let (mut delta, mut state) = (0, 0);
    for o in &run.observations {
        if let Observation::LocalWrite {
            delta_bytes,
            state_bytes,
            ..
        } = o.obs
        {
            delta += delta_bytes;
            state += state_bytes;
        }
    }
    assert!(state > delta, "state {state} bytes, delta {delta} bytes");
}

#[test]
fn timestamps_strictly_increase_per_node_also_across_a_restart() {
    let only_lww: Gen = {
        let mut w = CrdtWorkload::new(vec![Kind::Lww], 2, 1);
        Box::new(move |c, rng| w.next(c, rng))
    };
    let schedule = vec![
        (600, Fault::Crash { node: NodeId(1) }),
        (700, Fault::Restart { node: NodeId(1) }),
    ];
    let run = simulate(
        11,
        3,
        Net::Instant,
        settings(Topology::AllToAll, Shipping::Delta),
        schedule,
        only_lww,
    );
    check(&run);
    let mut by_node: BTreeMap<NodeId, Vec<(SimTime, Stamp)>> = BTreeMap::new();
    for op in &run.history.operations {
        if let Some((at, Completion::Ok(Reply::Assigned { stamp }))) = &op.completion {
            assert_eq!(
                stamp.replica, op.node.0,
                "a stamp names the node that wrote"
            );
            by_node.entry(op.node).or_default().push((*at, *stamp));
        }
    }
    assert_eq!(by_node.len(), 3);
    for (node, mut stamps) in by_node {
        stamps.sort();
        for pair in stamps.windows(2) {
            assert!(pair[0].1 < pair[1].1, "{node}: {:?}", pair);
        }
    }
}

#[test]
fn acknowledged_writes_survive_crashes_and_are_applied_once() {
    for seed in 0..3 {
        let schedule = vec![
            (300, Fault::Crash { node: NodeId(0) }),
            (500, Fault::Restart { node: NodeId(0) }),
            (800, Fault::Crash { node: NodeId(2) }),
            (1100, Fault::Restart { node: NodeId(2) }),
        ];
        let run = simulate(
            seed,
            3,
            Net::Lossy,
            settings(Topology::Ring, Shipping::Delta),
            schedule,
            all_types(),
        );
        check(&run);
        assert_eq!(run.final_incarnation, vec![2, 1, 2]);
    }
}

#[test]
fn an_operation_outside_its_key_space_or_removing_an_absent_element_fails_clearly() {
    let requests = [
        Op::Remove {
            key: "set.k0".into(),
            element: "ghost".into(),
        },
        Op::Decrement {
            key: "g.k0".into(),
            by: 1,
        },
        Op::Add {
            key: "pn.k0".into(),
            element: "x".into(),
        },
        Op::Increment {
            key: "nospace".into(),
            by: 1,
        },
    ];
    let mut i = 0;
    let requests_gen: Gen = Box::new(move |_c, _rng| {
        let op = requests[i % requests.len()].clone();
        i += 1;
        op
    });
    let run = simulate(
        1,
        2,
        Net::Instant,
        settings(Topology::AllToAll, Shipping::Delta),
        vec![],
        requests_gen,
    );
    let reasons: Vec<String> = run
        .history
        .operations
        .iter()
        .filter_map(|o| match &o.completion {
            Some((_, Completion::Fail(reason))) => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons.len(),
        run.history
            .operations
            .iter()
            .filter(|o| o.completion.is_some())
            .count()
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("ghost is not in the set here"))
    );
    assert!(reasons.iter().any(|r| r.contains("g.k0 holds a gcounter")));
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("pn.k0 holds a pncounter"))
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("nospace is in no key space"))
    );
}

#[test]
fn topologies_are_validated() {
    assert_eq!(Topology::Ring.neighbours(0, 5), vec![NodeId(1), NodeId(4)]);
    assert_eq!(Topology::Star.neighbours(3, 5), vec![NodeId(0)]);
    assert_eq!(Topology::Star.neighbours(0, 3), vec![NodeId(1), NodeId(2)]);
    assert!(Topology::Custom(vec![(0, 1), (1, 2)]).validate(3).is_ok());
    assert!(Topology::Custom(vec![(0, 1)]).validate(3).is_err());
    assert!(Topology::Custom(vec![(0, 0), (0, 1)]).validate(2).is_err());
    assert!(Topology::AllToAll.validate(1).is_ok());
}

// ---------------------------------------------------------------------------------
// Custom merge, durable conflict records, garbage collection by causal stability
// ---------------------------------------------------------------------------------

fn custom_spaces() -> KeySpaces {
    KeySpaces::builtin()
        .with_custom(
            "hi",
            CustomMerge::new(ValueType::Int, MergeFn::Max).unwrap(),
        )
        .unwrap()
        .with_custom(
            "tags",
            CustomMerge::new(ValueType::Set, MergeFn::Union).unwrap(),
        )
        .unwrap()
        .with_custom(
            "name",
            CustomMerge::new(ValueType::Text, MergeFn::Longest).unwrap(),
        )
        .unwrap()
}

fn custom_settings(topology: Topology) -> Settings {
    Settings {
        spaces: custom_spaces(),
        ..settings(topology, Shipping::Delta)
    }
}

fn custom_and_lww() -> Gen {
    let mut w = CrdtWorkload::new(vec![Kind::Lww], 1, 3);
    for (name, &m) in custom_spaces().custom() {
        w = w.with_space(name, Kind::Custom(m));
    }
    Box::new(move |c, rng| w.next(c, rng))
}

fn records(run: &RunOutput<Node>) -> Vec<(NodeId, u32, &ConflictRecord)> {
    run.observations
        .iter()
        .filter_map(|o| match &o.obs {
            Observation::Conflict(r) => Some((o.node, o.incarnation, r)),
            _ => None,
        })
        .collect()
}

#[test]
fn custom_merge_key_spaces_converge_to_their_function_over_concurrent_writes() {
    for (topology, nodes) in [(Topology::AllToAll, 4), (Topology::Ring, 5)] {
        for net in [Net::Instant, Net::Lossy] {
            for seed in 0..3 {
                let run = simulate(
                    seed,
                    nodes,
                    net,
                    custom_settings(topology.clone()),
                    vec![],
                    custom_and_lww(),
                );
                check_with(&run, &custom_spaces());
                let merged = records(&run)
                    .iter()
                    .filter(|(_, _, r)| matches!(r.resolution, Resolution::Merged { .. }))
                    .count();
                if matches!(net, Net::Lossy) {
                    assert!(
                        merged > 0,
                        "{topology:?} seed {seed}: no custom merge conflict"
                    );
                }
            }
        }
    }
    // A value that does not fit its space's type is refused when written, not merged.
    let mut w = 0u64;
    let bad: Gen = Box::new(move |_, _| {
        w += 1;
        Op::Assign {
            key: "hi.k0".into(),
            value: format!("not a number {w}"),
        }
    });
    let run = simulate(
        1,
        2,
        Net::Instant,
        custom_settings(Topology::AllToAll),
        vec![],
        bad,
    );
    assert!(run.history.operations.iter().all(|op| matches!(
        &op.completion,
        Some((_, Completion::Fail(why))) if why.contains("is not an int")
    )));
}

#[test]
fn same_origin_conflicts_are_recorded_too() {
    // Under the ring a node's conflicts are mostly met through one neighbour; records
    // whose held write came from the very node that delivered the change exist.
    let run = simulate(
        2,
        5,
        Net::Lossy,
        custom_settings(Topology::Ring),
        vec![],
        custom_and_lww(),
    );
    check_with(&run, &custom_spaces());
    let from_sender = records(&run)
        .iter()
        .filter(|(_, _, r)| match &r.resolution {
            Resolution::Kept { discarded, kept } => kept.0.replica == discarded.0.replica,
            Resolution::Merged { held, .. } => held.iter().any(|(d, _)| d.replica == r.change.0),
        })
        .count();
    assert!(
        from_sender > 0,
        "no conflict with a write of the change's own origin"
    );
}

#[test]
fn conflict_records_are_durable_and_read_back_after_a_restart() {
    let timing = Timing {
        conflict_retention: SimDuration::from_millis(100_000),
        ..Timing::default()
    };
    let schedule = vec![
        (1200, Fault::Crash { node: NodeId(1) }),
        (1300, Fault::Restart { node: NodeId(1) }),
    ];
    let run = simulate(
        4,
        3,
        Net::Lossy,
        Settings {
            timing,
            ..custom_settings(Topology::AllToAll)
        },
        schedule,
        custom_and_lww(),
    );
    check_with(&run, &custom_spaces());
    let before: Vec<&ConflictRecord> = records(&run)
        .into_iter()
        .filter(|(n, inc, _)| *n == NodeId(1) && *inc == 1)
        .map(|(_, _, r)| r)
        .collect();
    assert!(
        before.len() > 3,
        "only {} records before the crash",
        before.len()
    );
    let recovered: Vec<&ConflictRecord> = run
        .observations
        .iter()
        .filter(|o| o.node == NodeId(1) && o.incarnation == 2)
        .find_map(|o| match &o.obs {
            Observation::RecoveredConflicts { records } => Some(records.iter().collect()),
            _ => None,
        })
        .expect("the restarted node reads its records back");
    // Nothing was collected (the retention outlasts the run): every record the first
    // incarnation made is read back, unchanged, and the numbering continues after them.
    assert_eq!(recovered, before);
    let after_restart: Vec<u64> = records(&run)
        .iter()
        .filter(|(n, inc, _)| *n == NodeId(1) && *inc == 2)
        .map(|(_, _, r)| r.id)
        .collect();
    let last = before.iter().map(|r| r.id).max().unwrap();
    assert!(
        after_restart.iter().all(|&id| id > last),
        "{after_restart:?} after {last}"
    );
}

/// Each node's last `Metadata` report: (records, log entries, context entries).
fn final_metadata(run: &RunOutput<Node>) -> BTreeMap<NodeId, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for o in &run.observations {
        if let Observation::Metadata {
            records,
            log_entries,
            context_entries,
        } = o.obs
        {
            out.insert(o.node, (records, log_entries, context_entries));
        }
    }
    out
}

#[test]
fn metadata_stays_bounded_in_a_long_run_once_causally_stable() {
    let run_for = |millis: u64, retention: u64| {
        let timing = Timing {
            conflict_retention: SimDuration::from_millis(retention),
            ..Timing::default()
        };
        let settings = Settings {
            timing,
            ..custom_settings(Topology::Ring)
        };
        simulate_for(millis, 9, 4, Net::Lossy, settings, vec![], custom_and_lww())
    };
    let short = run_for(2500, 200);
    let long = run_for(10_000, 200);
    check_with(&long, &custom_spaces());
    let made = |run: &RunOutput<Node>| records(run).len() as u64;
    assert!(
        made(&long) > 3 * made(&short),
        "the long run makes far more conflicts"
    );
    // At the end every record and log entry is collected, and the causal metadata is the
    // same size whether the run lasted 2.5 s or 10 s.
    for (node, (records, log, context)) in final_metadata(&long) {
        assert_eq!((records, log), (0, 0), "{node}");
        let short_context = final_metadata(&short)[&node].2;
        assert!(
            context <= short_context + 8,
            "{node}: {context} vs {short_context}"
        );
    }
    // Without collection (a retention longer than the run) the records pile up.
    let kept = run_for(10_000, 100_000);
    let piled: u64 = final_metadata(&kept).values().map(|m| m.0).sum();
    assert_eq!(piled, made(&kept), "every record is still on disk");
    assert!(piled > 3 * made(&short));
}

/// The reference's OR-set kept a tag per add forever. Here an add replaces the element's
/// dots it observed: re-adding keeps one dot, concurrent adds keep one each (and a
/// later add that has seen both folds them into one), and the context stays a version
/// vector.
#[test]
fn orset_readd_replaces_the_dots_it_observed() {
    let mut a = OrSet::new();
    for n in 1..=100 {
        a = a.merge(&a.add_delta(Dot::new(0, n), "x"));
    }
    assert_eq!(a.dots_of("x"), vec![Dot::new(0, 100)]);
    assert_eq!(a.context().cloud_len(), 0);
    assert_eq!(a.context().size(), 1);
    // Replica 1 adds x concurrently: both adds survive the join.
    let b = OrSet::new().add_delta(Dot::new(1, 1), "x");
    let joined = a.merge(&b);
    assert_eq!(joined.dots_of("x"), vec![Dot::new(0, 100), Dot::new(1, 1)]);
    // A remove that observed only replica 0's add leaves replica 1's: add wins.
    let removed = a.merge(&a.remove_delta("x"));
    assert_eq!(removed.merge(&b).dots_of("x"), vec![Dot::new(1, 1)]);
    // An add after the join replaces both.
    let again = joined.merge(&joined.add_delta(Dot::new(0, 101), "x"));
    assert_eq!(again.dots_of("x"), vec![Dot::new(0, 101)]);
    // Its delta, shipped to a replica that holds only replica 1's add, deletes that too.
    assert_eq!(
        b.merge(&joined.add_delta(Dot::new(0, 101), "x"))
            .dots_of("x"),
        vec![Dot::new(0, 101)]
    );
}
