//! The atomic commitment properties (Bernstein, Hadzilacos & Goodman, *Concurrency
//! Control and Recovery in Database Systems*, §7.2) and the bank's invariants, judged from
//! the nodes' observations and the clients' history (never from a node's private state):
//!
//! - **AC1 agreement**: all processes that reach a decision reach the same one (the
//!   coordinator's decision, participants' settled outcomes, and a writer's abort of a
//!   transaction it never voted for).
//! - **AC2 irrevocability**: a process cannot reverse its decision, across restarts too: a
//!   participant that settled a transaction never settles it otherwise nor holds it in
//!   doubt again; a coordinator's commit survives its restarts until its END record
//!   (it never presumes abort for it, nor restarts without it).
//! - **AC3**: the commit decision is reached only if every participant voted yes
//!   (a read-only vote is a yes with nothing to write), and a participant commits only
//!   what it voted yes for.
//! - **AC4**: if there are no failures and every participant voted yes, the decision is
//!   commit. Only assertable in a failure-free run: the checker asserts it when the kernel
//!   applied no fault, dropped no message and injected no disk fault, and skips it
//!   otherwise (the `failure_free` metric says which it was).
//! - **AC5** (bounded, in the quiet phase): every participant that voted yes (or
//!   recovered in doubt) decides by the end of the run, and every coordinator's commit
//!   record reaches its END, once failures are repaired. The quiet period is the bound.
//! - **Strict two-phase locking** (bounded, in the quiet phase): every lock a live node
//!   took before the middle of the quiet phase is released by the end of the run.
//! - **Bank**: no committed write overdraws an account; every committed read-all sees the
//!   opening total; no committed read sees a
//!   transaction's writes in part (it saw a transfer on one account but not on the
//!   other); no two transactions install the same version of an account (a lost update).

use std::collections::{BTreeMap, BTreeSet};

use sim_core::{Checker, Completion, NodeId, RunOutput, SimTime, Violation};

use super::{Account, Bank, Node, Observation, Outcome, Request, TxnId, VoteKind};

pub const ATOMIC_COMMITMENT: &str = "atomic_commitment";
pub const BANK: &str = "bank";

fn violation(
    checker: &'static str,
    kind: &str,
    property: &'static str,
    message: String,
    time: Option<SimTime>,
    nodes: Vec<NodeId>,
) -> Violation {
    Violation {
        checker,
        kind: kind.to_string(),
        property,
        message,
        time,
        nodes,
        cites: Vec::new(),
    }
}

/// Whether the kernel injected no failure into the run: no fault applied (the quiet
/// phase's heal of nothing does not count), no message dropped or duplicated, no disk
/// fault.
pub fn failure_free(run: &RunOutput<Node>) -> bool {
    run.stats.faults.values().all(|n| *n == 0)
        && run.stats.messages_duplicated == 0
        && run.stats.messages_dropped.values().all(|n| *n == 0)
        && run.stats.disk_events.values().all(|n| *n == 0)
}

/// AC1–AC5.
#[derive(Debug, Clone, Copy, Default)]
pub struct AtomicCommitmentChecker;

impl Checker<Node> for AtomicCommitmentChecker {
    fn name(&self) -> &'static str {
        ATOMIC_COMMITMENT
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = Vec::new();
        let c = ATOMIC_COMMITMENT;
        // Every decision per transaction: (time, node, commit, what).
        let mut decisions: BTreeMap<TxnId, Vec<(SimTime, NodeId, bool, &'static str)>> =
            BTreeMap::new();
        let mut begun: BTreeMap<TxnId, &Vec<NodeId>> = BTreeMap::new();
        let mut votes: BTreeMap<(TxnId, NodeId), Vec<(SimTime, VoteKind)>> = BTreeMap::new();
        for o in &run.observations {
            match &o.obs {
                Observation::Begun {
                    txn, participants, ..
                } => {
                    begun.insert(*txn, participants);
                }
                Observation::CoordinatorDecided { txn, commit, .. } => decisions
                    .entry(*txn)
                    .or_default()
                    .push((o.time, o.node, *commit, "coordinator")),
                Observation::Decided { txn, commit, .. } => decisions
                    .entry(*txn)
                    .or_default()
                    .push((o.time, o.node, *commit, "participant")),
                Observation::LocalAbort {
                    txn, writer: true, ..
                } => decisions.entry(*txn).or_default().push((
                    o.time,
                    o.node,
                    false,
                    "writer (before voting)",
                )),
                Observation::Voted { txn, vote } => votes
                    .entry((*txn, o.node))
                    .or_default()
                    .push((o.time, *vote)),
                _ => {}
            }
        }

        // AC1 agreement.
        for (txn, ds) in &decisions {
            let commits: Vec<_> = ds.iter().filter(|d| d.2).collect();
            let aborts: Vec<_> = ds.iter().filter(|d| !d.2).collect();
            if let (Some(a), Some(b)) = (commits.first(), aborts.first()) {
                let later = a.0.max(b.0);
                out.push(violation(
                    c,
                    "ac1_agreement",
                    "AC1 agreement: all processes that decide reach the same decision",
                    format!(
                        "{txn}: {} {} committed at {}, {} {} aborted at {}",
                        a.3, a.1, a.0, b.3, b.1, b.0
                    ),
                    Some(later),
                    vec![a.1, b.1],
                ));
            }
        }

        // AC3: commit only if all voted yes.
        let voted_yes = |txn: TxnId, node: NodeId, by: SimTime, allow_read_only: bool| {
            votes.get(&(txn, node)).is_some_and(|vs| {
                vs.iter().any(|(t, v)| {
                    *t <= by
                        && (*v == VoteKind::Yes || (allow_read_only && *v == VoteKind::ReadOnly))
                })
            })
        };
        for o in &run.observations {
            match &o.obs {
                Observation::CoordinatorDecided {
                    txn, commit: true, ..
                } => {
                    let Some(participants) = begun.get(txn) else {
                        continue;
                    };
                    let missing: Vec<NodeId> = participants
                        .iter()
                        .copied()
                        .filter(|p| !voted_yes(*txn, *p, o.time, true))
                        .collect();
                    if !missing.is_empty() {
                        out.push(violation(
                            c,
                            "ac3_commit_without_votes",
                            "AC3: commit only if all processes voted yes",
                            format!(
                                "{txn}: coordinator {} committed without a yes vote from {}",
                                o.node,
                                missing
                                    .iter()
                                    .map(|n| n.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                            Some(o.time),
                            std::iter::once(o.node).chain(missing).collect(),
                        ));
                    }
                }
                Observation::Decided {
                    txn, commit: true, ..
                } if !voted_yes(*txn, o.node, o.time, false) => {
                    out.push(violation(
                        c,
                        "ac3_commit_without_votes",
                        "AC3: commit only if all processes voted yes",
                        format!("{txn}: {} committed without having voted yes", o.node),
                        Some(o.time),
                        vec![o.node],
                    ));
                }
                _ => {}
            }
        }

        // AC4, failure-free runs only.
        if failure_free(run) {
            for o in &run.observations {
                if let Observation::CoordinatorDecided {
                    txn, commit: false, ..
                } = &o.obs
                {
                    let Some(participants) = begun.get(txn) else {
                        continue;
                    };
                    if participants
                        .iter()
                        .all(|p| voted_yes(*txn, *p, o.time, true))
                    {
                        out.push(violation(
                            c,
                            "ac4_abort_without_failure",
                            "AC4: with no failures and all votes yes, the decision is commit",
                            format!(
                                "{txn}: coordinator {} aborted in a failure-free run although every participant voted yes",
                                o.node
                            ),
                            Some(o.time),
                            vec![o.node],
                        ));
                    }
                }
            }
        }

        // AC2 irrevocability, per node and transaction.
        let mut settled: BTreeMap<(NodeId, TxnId), (bool, SimTime)> = BTreeMap::new();
        let mut committed_open: BTreeMap<(NodeId, TxnId), SimTime> = BTreeMap::new();
        for o in &run.observations {
            let key_of = |txn: &TxnId| (o.node, *txn);
            match &o.obs {
                Observation::Decided { txn, commit, .. } => {
                    if let Some((before, at)) = settled.get(&key_of(txn))
                        && before != commit
                    {
                        out.push(violation(
                            c,
                            "ac2_irrevocability",
                            "AC2 irrevocability: a process cannot reverse its decision",
                            format!(
                                "{txn}: {} settled {} at {at}, then {} at {}",
                                o.node,
                                word(*before),
                                word(*commit),
                                o.time
                            ),
                            Some(o.time),
                            vec![o.node],
                        ));
                    }
                    settled.insert(key_of(txn), (*commit, o.time));
                }
                Observation::LocalAbort { txn, durable, .. } => {
                    if let Some((true, at)) = settled.get(&key_of(txn)) {
                        out.push(violation(
                            c,
                            "ac2_irrevocability",
                            "AC2 irrevocability: a process cannot reverse its decision",
                            format!(
                                "{txn}: {} committed at {at}, then aborted at {}",
                                o.node, o.time
                            ),
                            Some(o.time),
                            vec![o.node],
                        ));
                    }
                    // An ABORT heard before voting is not recorded (presumed abort): a
                    // later incarnation may execute and prepare the transaction again
                    // from a late message, and recover it in doubt, without reversing
                    // anything (it can only learn abort). Only a durable abort is a
                    // decision a restart must keep.
                    if *durable {
                        settled.entry(key_of(txn)).or_insert((false, o.time));
                    }
                }
                Observation::CoordinatorDecided {
                    txn,
                    commit: true,
                    writers,
                } if !writers.is_empty() => {
                    committed_open.insert(key_of(txn), o.time);
                }
                Observation::Ended { txn } => {
                    committed_open.remove(&key_of(txn));
                }
                Observation::PresumedAbort { txn } => {
                    if let Some(at) = committed_open.get(&key_of(txn)) {
                        out.push(violation(
                            c,
                            "ac2_irrevocability",
                            "AC2 irrevocability: a process cannot reverse its decision",
                            format!(
                                "{txn}: coordinator {} committed at {at}, then presumed it aborted at {}",
                                o.node, o.time
                            ),
                            Some(o.time),
                            vec![o.node],
                        ));
                    }
                }
                Observation::Started {
                    decisions: kept,
                    in_doubt,
                    ..
                } => {
                    for ((node, txn), at) in &committed_open {
                        if *node == o.node && !kept.contains(txn) {
                            out.push(violation(
                                c,
                                "ac2_irrevocability",
                                "AC2 irrevocability: a process cannot reverse its decision",
                                format!(
                                    "{txn}: coordinator {node} committed at {at} but restarted at {} without the decision",
                                    o.time
                                ),
                                Some(o.time),
                                vec![*node],
                            ));
                        }
                    }
                    committed_open.retain(|(node, txn), _| *node != o.node || kept.contains(txn));
                    for txn in in_doubt {
                        if let Some((commit, at)) = settled.get(&key_of(txn)) {
                            out.push(violation(
                                c,
                                "ac2_irrevocability",
                                "AC2 irrevocability: a process cannot reverse its decision",
                                format!(
                                    "{txn}: {} {} it at {at} but restarted at {} holding it in doubt",
                                    o.node,
                                    word(*commit),
                                    o.time
                                ),
                                Some(o.time),
                                vec![o.node],
                            ));
                        }
                    }
                }
                _ => {}
            }
        }

        // AC5: every participant that voted yes (or recovered in doubt) decides by the
        // end of the quiet phase; every commit record reaches its END.
        let mut waiting: BTreeMap<(NodeId, TxnId), SimTime> = BTreeMap::new();
        for o in &run.observations {
            match &o.obs {
                Observation::Voted {
                    txn,
                    vote: VoteKind::Yes,
                } => {
                    waiting.entry((o.node, *txn)).or_insert(o.time);
                }
                Observation::Started { in_doubt, .. } => {
                    for txn in in_doubt {
                        waiting.entry((o.node, *txn)).or_insert(o.time);
                    }
                }
                Observation::Decided { txn, .. } | Observation::LocalAbort { txn, .. } => {
                    waiting.remove(&(o.node, *txn));
                }
                _ => {}
            }
        }
        let up: BTreeSet<NodeId> = run.live_nodes().collect();
        for ((node, txn), since) in &waiting {
            if up.contains(node) {
                out.push(violation(
                    c,
                    "ac5_undecided",
                    "AC5: every participant decides once failures are repaired (bounded by the quiet period)",
                    format!(
                        "{txn}: {node} voted yes (or recovered in doubt) at {since} and had not decided when the run ended at {} (quiet from {})",
                        run.end_time, run.quiet_from
                    ),
                    Some(*since),
                    vec![*node],
                ));
            }
        }
        for ((node, txn), since) in &committed_open {
            if up.contains(node) {
                out.push(violation(
                    c,
                    "ac5_undecided",
                    "AC5: every participant decides once failures are repaired (bounded by the quiet period)",
                    format!(
                        "{txn}: coordinator {node} committed at {since} and still lacked acknowledgements when the run ended at {}",
                        run.end_time
                    ),
                    Some(*since),
                    vec![*node],
                ));
            }
        }

        out.extend(locks_released(run));
        out
    }
}

/// Strict two-phase locking: a transaction's locks are released when it ends. Bounded by
/// the quiet phase: every lock a live node's final incarnation took before the middle of
/// the quiet phase is released by the end of the run (a lock taken later may belong to a
/// late message's transaction still inside its `active_timeout`).
fn locks_released(run: &RunOutput<Node>) -> Vec<Violation> {
    let deadline = SimTime(run.quiet_from.0 + run.end_time.0.saturating_sub(run.quiet_from.0) / 2);
    let mut held: BTreeMap<(NodeId, TxnId), (SimTime, &Vec<Account>)> = BTreeMap::new();
    let mut stopped: BTreeSet<NodeId> = BTreeSet::new();
    for o in &run.observations {
        if run.final_incarnation[o.node.index()] != o.incarnation {
            continue;
        }
        match &o.obs {
            Observation::Locked { txn, accounts } => {
                held.entry((o.node, *txn)).or_insert((o.time, accounts));
            }
            Observation::Unlocked { txn } => {
                held.remove(&(o.node, *txn));
            }
            Observation::Stopped { .. } => {
                stopped.insert(o.node);
            }
            _ => {}
        }
    }
    let up: BTreeSet<NodeId> = run.live_nodes().collect();
    held.iter()
        .filter(|((node, _), (at, _))| up.contains(node) && !stopped.contains(node) && *at < deadline)
        .map(|((node, txn), (at, accounts))| {
            violation(
                ATOMIC_COMMITMENT,
                "locks_held",
                "strict two-phase locking: a transaction's locks are released when it ends (bounded by the quiet period)",
                format!(
                    "{txn}: {node} locked accounts {accounts:?} at {at} and still held them when the run ended at {} (quiet from {})",
                    run.end_time, run.quiet_from
                ),
                Some(*at),
                vec![*node],
            )
        })
        .collect()
}

fn word(commit: bool) -> &'static str {
    if commit { "committed" } else { "aborted" }
}

/// The bank's invariants, from client histories and the participants' applied writes.
#[derive(Debug, Clone, Copy)]
pub struct BankChecker {
    pub bank: Bank,
}

impl Checker<Node> for BankChecker {
    fn name(&self) -> &'static str {
        BANK
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = Vec::new();
        let b = BANK;
        let total = self.bank.initial_balance * i64::from(self.bank.accounts);
        // Which transaction installed each version of each account, and each
        // transaction's versions and written accounts.
        let mut installed: BTreeMap<(Account, u64), TxnId> = BTreeMap::new();
        let mut version_of: BTreeMap<(TxnId, Account), u64> = BTreeMap::new();
        let mut written: BTreeMap<TxnId, Vec<Account>> = BTreeMap::new();
        for o in &run.observations {
            match &o.obs {
                Observation::Begun {
                    txn,
                    accounts_written,
                    ..
                } => {
                    written.insert(*txn, accounts_written.clone());
                }
                Observation::Decided {
                    txn,
                    commit: true,
                    writes,
                    ..
                } => {
                    for w in writes {
                        if w.balance < 0 {
                            out.push(violation(
                                b,
                                "overdrawn",
                                "bank invariant: no account is overdrawn (consistency: a committed transaction preserves the invariants)",
                                format!(
                                    "{txn} committed account {} at balance {} (version {}) on {}",
                                    w.account, w.balance, w.version, o.node
                                ),
                                Some(o.time),
                                vec![o.node],
                            ));
                        }
                        if let Some(other) = installed.insert((w.account, w.version), *txn)
                            && other != *txn
                        {
                            out.push(violation(
                                b,
                                "lost_update",
                                "no lost update: each version of an account is installed by one transaction",
                                format!(
                                    "account {} version {} installed by both {other} and {txn}",
                                    w.account, w.version
                                ),
                                Some(o.time),
                                vec![o.node],
                            ));
                        }
                        version_of.insert((*txn, w.account), w.version);
                    }
                }
                _ => {}
            }
        }
        for op in &run.history.operations {
            let Some((at, Completion::Ok(Outcome::Committed { reads }))) = &op.completion else {
                continue;
            };
            if op.request == Request::ReadAll {
                let sum: i64 = reads.iter().map(|r| r.balance).sum();
                if sum != total || reads.len() != self.bank.accounts as usize {
                    out.push(violation(
                        b,
                        "bank_total",
                        "bank invariant: every read-all sees the same total",
                        format!(
                            "{} (client {}, via {}) read {} accounts totalling {sum}, not {total}: {}",
                            op.id,
                            op.client,
                            op.node,
                            reads.len(),
                            reads
                                .iter()
                                .map(|r| format!("a{}={}@v{}", r.account, r.balance, r.version))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                        Some(*at),
                        vec![op.node],
                    ));
                }
            }
            // Fractured reads: a transaction seen on one account must be seen on every
            // other account it wrote that this read covers.
            let seen: BTreeMap<Account, u64> =
                reads.iter().map(|r| (r.account, r.version)).collect();
            'accounts: for (&account, &version) in &seen {
                for v in 1..=version {
                    let Some(txn) = installed.get(&(account, v)) else {
                        continue;
                    };
                    for other in written.get(txn).into_iter().flatten() {
                        let Some(&other_seen) = seen.get(other) else {
                            continue;
                        };
                        if *other == account {
                            continue;
                        }
                        let visible = version_of
                            .get(&(*txn, *other))
                            .is_some_and(|u| *u <= other_seen);
                        if !visible {
                            out.push(violation(
                                b,
                                "fractured_read",
                                "atomicity: no transaction's writes are visible in part",
                                format!(
                                    "{} (client {}) saw {txn} on account {account} (version {v}) but not on account {other} (read version {other_seen})",
                                    op.id, op.client
                                ),
                                Some(*at),
                                vec![op.node],
                            ));
                            break 'accounts;
                        }
                    }
                }
            }
        }
        out
    }
}
