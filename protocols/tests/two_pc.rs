//! Two-phase commit's behaviours that the reference implementation got right (seed
//! digest §10), checked on the simulator under the reference's `instant` network (zero
//! latency, no loss) and under a lossy LAN, and the defects it had, shown fixed: the
//! timeout is enforced in simulated time, and a coordinator that crashes between its
//! decision record and the first send finishes the transaction on its own after restart.

use std::sync::Arc;

use protocols::two_pc::checker::{AtomicCommitmentChecker, BankChecker};
use protocols::two_pc::{
    Bank, Bugs, Learned, Node, Observation, Outcome, Request, Settings, Timing, TxnId, shard_of,
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

#[derive(Debug, Clone, Copy)]
enum Net {
    Instant,
    LossyLan,
}

const BANK: Bank = Bank {
    accounts: 6,
    initial_balance: 100,
};

fn settings(timing: Timing) -> Settings {
    Settings {
        timing,
        bank: BANK,
        engine: Arc::new(storage::bitcask::BitcaskOpener {
            options: storage::bitcask::BitcaskOptions {
                sync_policy: EngineSyncPolicy::Explicit,
                ..Default::default()
            },
        }),
    }
}

type Gen = Box<dyn FnMut(ClientId, &mut SimRng) -> Request>;

fn simulate(
    seed: u64,
    net: Net,
    duration_ms: u64,
    schedule: Vec<(u64, Fault)>,
    timing: Timing,
    clients: u32,
    workload: Gen,
) -> RunOutput<Node> {
    let mut config = SimConfig::new(seed, 3);
    config.duration = SimDuration::from_millis(duration_ms);
    config.quiet_period = SimDuration::from_millis(1500);
    config.network = match net {
        Net::Instant => NetworkConfig::instant(),
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
    config.clients = Some(ClientConfig {
        clients,
        think_min: SimDuration::from_millis(5),
        think_max: SimDuration::from_millis(20),
        timeout: SimDuration::from_millis(800),
        max_operations: None,
        max_retries: 0,
    });
    let s = settings(timing);
    let factory = move |id| Node::new(id, s.clone(), Bugs::default());
    let trace = TraceOptions {
        keep_lines: false,
        jsonl: None,
    };
    Simulation::new(config, factory, Some(Box::new(workload)), trace)
        .expect("valid configuration")
        .run()
}

fn check(run: &RunOutput<Node>) {
    let violations: Vec<String> = AtomicCommitmentChecker
        .check(run)
        .into_iter()
        .chain(BankChecker { bank: BANK }.check(run))
        .map(|v| v.to_string())
        .collect();
    assert!(violations.is_empty(), "{violations:?}");
}

fn bank_load() -> Gen {
    Box::new(|_c, rng: &mut SimRng| {
        use rand::RngExt;
        if rng.random_bool(0.25) {
            Request::ReadAll
        } else {
            let from = rng.random_range(0..BANK.accounts);
            let to = (from + rng.random_range(1..BANK.accounts)) % BANK.accounts;
            Request::Transfer {
                from,
                to,
                amount: rng.random_range(1..=30),
            }
        }
    })
}

/// `(request, outcome, latency)` of every completed operation.
fn outcomes(run: &RunOutput<Node>) -> Vec<(Request, Outcome, SimDuration)> {
    run.history
        .operations
        .iter()
        .filter_map(|op| match &op.completion {
            Some((at, Completion::Ok(outcome))) => Some((
                op.request.clone(),
                outcome.clone(),
                at.saturating_since(op.invoked_at),
            )),
            _ => None,
        })
        .collect()
}

fn reason(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Aborted { reason } => Some(reason),
        Outcome::Committed { .. } => None,
    }
}

/// All yes votes commit; every committed read-all sees the opening total; overdrafts
/// and lock conflicts abort at once (a no vote, no waiting) — under the reference's
/// instant delivery and under a lossy LAN.
#[test]
fn all_yes_commits_one_no_aborts_and_conflicts_do_not_wait() {
    for net in [Net::Instant, Net::LossyLan] {
        let mut commits = 0;
        let mut overdrafts = 0;
        let mut conflicts = 0;
        for seed in 0..4 {
            let run = simulate(seed, net, 3000, vec![], Timing::default(), 4, bank_load());
            check(&run);
            for (request, outcome, latency) in outcomes(&run) {
                match (&request, &outcome) {
                    (Request::ReadAll, Outcome::Committed { reads }) => {
                        commits += 1;
                        let total: i64 = reads.iter().map(|r| r.balance).sum();
                        assert_eq!(total, 600, "{net:?} seed {seed}: {reads:?}");
                    }
                    (_, Outcome::Committed { .. }) => commits += 1,
                    (_, Outcome::Aborted { reason }) if reason.contains("insufficient funds") => {
                        overdrafts += 1;
                    }
                    (_, Outcome::Aborted { reason }) if reason.contains("lock conflict") => {
                        conflicts += 1;
                        // No waiting: under instant delivery the refusal comes back in
                        // the same instant; under loss, within the vote timeout (a lost
                        // EXECUTE is re-sent), never after waiting for the lock.
                        let bound = match net {
                            Net::Instant => SimDuration::ZERO,
                            Net::LossyLan => Timing::default().vote_timeout,
                        };
                        assert!(
                            latency <= bound,
                            "{net:?} seed {seed}: a conflict took {latency}"
                        );
                    }
                    (_, Outcome::Aborted { reason }) => {
                        if matches!(net, Net::Instant) {
                            panic!("{net:?} seed {seed}: unexpected abort: {reason}");
                        }
                    }
                }
            }
        }
        assert!(commits > 100, "{net:?}: {commits} commits");
        assert!(overdrafts > 0, "{net:?}: no overdraft was refused");
        if matches!(net, Net::LossyLan) {
            assert!(conflicts > 0, "{net:?}: no lock conflict was seen");
        }
    }
}

/// A transfer touching a shard that is down aborts with a reason naming it, when the
/// coordinator's timeout runs out in simulated time; nothing changes anywhere.
#[test]
fn an_unavailable_participant_aborts_at_the_timeout_and_changes_nothing() {
    let timing = Timing::default();
    let down = NodeId(2);
    let owned: Vec<u32> = (0..BANK.accounts)
        .filter(|a| shard_of(*a, 3) == down)
        .collect();
    assert!(!owned.is_empty());
    let account = owned[0];
    let other = (0..BANK.accounts)
        .find(|a| shard_of(*a, 3) != down)
        .unwrap();
    let workload: Gen = Box::new(move |_c, _rng| Request::Transfer {
        from: other,
        to: account,
        amount: 5,
    });
    let run = simulate(
        7,
        Net::Instant,
        3000,
        vec![(0, Fault::Crash { node: down })],
        timing.clone(),
        1,
        workload,
    );
    check(&run);
    let results = outcomes(&run);
    let during: Vec<_> = results
        .iter()
        .filter(|(_, _, latency)| *latency >= timing.vote_timeout)
        .collect();
    assert!(!during.is_empty(), "{results:?}");
    for (_, outcome, latency) in &during {
        let reason = reason(outcome).expect("aborted");
        assert!(
            reason.starts_with("timeout: no execution from n2"),
            "{reason}"
        );
        assert!(*latency < timing.vote_timeout + SimDuration::from_millis(1));
    }
    // Nothing was applied before the quiet phase restarted n2.
    let applied_early = run.observations.iter().any(|o| {
        o.time < run.quiet_from && matches!(o.obs, Observation::Decided { commit: true, .. })
    });
    assert!(!applied_early);
}

/// The coordinator forces its decision before sending it; when it crashes between the
/// record and the first send, the writers stay prepared (they ask, and never decide
/// alone), and the restarted coordinator finds the record on its disk and finishes.
#[test]
fn a_coordinator_crash_after_its_decision_record_is_finished_by_its_recovery() {
    let timing = Timing {
        decision_send_delay: SimDuration::from_millis(80),
        ..Timing::default()
    };
    let mut found = 0;
    for seed in 0..10 {
        let schedule = vec![
            (700, Fault::Crash { node: NodeId(0) }),
            (1100, Fault::Restart { node: NodeId(0) }),
        ];
        let run = simulate(
            seed,
            Net::Instant,
            3500,
            schedule,
            timing.clone(),
            3,
            bank_load(),
        );
        check(&run);
        // Commits n0 forced in its first incarnation but never sent.
        let sent: Vec<TxnId> = run
            .observations
            .iter()
            .filter_map(|o| match o.obs {
                Observation::DecisionSent { txn } if o.incarnation == 1 => Some(txn),
                _ => None,
            })
            .collect();
        let stranded: Vec<TxnId> = run
            .observations
            .iter()
            .filter_map(|o| match &o.obs {
                Observation::CoordinatorDecided {
                    txn,
                    commit: true,
                    writers,
                } if o.node == NodeId(0)
                    && o.incarnation == 1
                    && !writers.is_empty()
                    && !sent.contains(txn) =>
                {
                    Some(*txn)
                }
                _ => None,
            })
            .collect();
        for txn in stranded {
            found += 1;
            let restarted = run.observations.iter().find(|o| {
                o.node == NodeId(0)
                    && matches!(o.obs, Observation::Started { .. })
                    && o.incarnation == 2
            });
            let Some(restarted) = restarted else {
                panic!("seed {seed}: n0 did not restart");
            };
            let Observation::Started { decisions, .. } = &restarted.obs else {
                unreachable!()
            };
            assert!(decisions.contains(&txn), "seed {seed}: {txn} lost");
            // Every writer committed, none before the restart.
            let settled: Vec<_> = run
                .observations
                .iter()
                .filter(|o| matches!(&o.obs, Observation::Decided { txn: t, .. } if *t == txn))
                .collect();
            assert!(!settled.is_empty(), "seed {seed}: {txn} never settled");
            for o in settled {
                assert!(
                    o.time >= restarted.time,
                    "seed {seed}: {txn} settled at {}",
                    o.time
                );
                assert!(
                    matches!(
                        o.obs,
                        Observation::Decided {
                            commit: true,
                            learned: Learned::Coordinator | Learned::Query,
                            ..
                        }
                    ),
                    "{:?}",
                    o.obs
                );
            }
        }
    }
    assert!(found > 0, "no seed crashed n0 inside its decision window");
}
