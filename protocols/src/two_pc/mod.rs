//! Two-phase commit (Gray, 1978; Bernstein, Hadzilacos & Goodman, ch. 7) across shards,
//! with presumed abort, timeouts in simulated time, cooperative termination and the
//! read-only optimisation, over a lossy network with crashes at every step.
//!
//! **Roles.** Every node is both a *coordinator* (for the transactions its clients submit
//! to it) and a *participant* (the shard owning the accounts that hash to it, see
//! [`shard_of`]). A transaction is identified by `(coordinator, epoch, seq)`; the epoch is
//! raised durably at every start, so ids are never reused.
//!
//! **Execution.** The coordinator sends EXECUTE with each shard's operations. A
//! participant takes its per-account locks (shared for reads, exclusive for writes;
//! a conflict refuses at once — no waiting), reads, computes the new balances (refusing
//! an overdraft) and answers EXECUTED with what it read. Until it votes it may abort
//! unilaterally after `active_timeout`.
//!
//! EXECUTED carries the participant's epoch (its incarnation); the coordinator keeps the
//! first EXECUTED of each shard and the epoch it came from.
//!
//! **Voting.** Once every shard executed, the coordinator sends PREPARE with the list of
//! *writers*. The locks are *not* necessarily still held then: a participant that crashed
//! has lost them, and one that hit `active_timeout` released them. Safety rests on the
//! vote, not on the locks: a shard that no longer knows the transaction (it aborted it,
//! or lost it in a crash) votes NO, and every vote carries the epoch of the incarnation
//! that executed the transaction, so a participant that restarted and executed it again
//! from a late or duplicated EXECUTE votes from an epoch that does not match the reads
//! the coordinator holds — which the coordinator counts as NO. A shard with writes forces
//! a PREPARED record holding the writes (and its epoch), then votes YES; a shard with
//! reads only votes READ-ONLY, releases its locks (it takes no part in phase two) and
//! remembers the vote for the rest of its incarnation, so a re-sent PREPARE gets
//! READ-ONLY again. A participant ignores an EXECUTE for a transaction it already voted
//! for or heard ABORT for, so a late copy never re-takes a dead transaction's locks. The
//! coordinator re-sends EXECUTE/PREPARE to the silent every `resend_interval`, and
//! aborts at `vote_timeout`.
//!
//! **Decision.** All YES/READ-ONLY: the coordinator forces its commit record (writers
//! listed), replies `committed` to the client, and sends COMMIT to the writers (after
//! `decision_send_delay`, the window between the force and the first send), re-sending
//! with exponential backoff until each acknowledged — across its own restarts, since the
//! record is on disk. After the last ACK it deletes the record (the END record). Any NO
//! or a timeout: abort, not logged (presumed abort): a coordinator asked about a
//! transaction it has no record of and is not deciding answers ABORT.
//!
//! **Termination.** A participant that voted YES never decides alone. After
//! `decision_timeout` it asks the coordinator and the other writers, with backoff, until
//! it learns the outcome. A writer that knows the outcome answers it; one that never
//! voted aborts the transaction (durably, so a late PREPARE is refused) and answers
//! ABORT; one in doubt itself answers UNCERTAIN.

pub mod checker;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sim_core::{Ctx, NodeId, OpId, Process, SimDuration, TimerId};
use storage::kv::{EngineError, EngineOpener};

use self::store::{PreparedRecord, Store};
use crate::common::{BugFlag, BugFlagError, unknown};

/// Where a node keeps its durable state on its disk.
const DIR: &str = "two_pc";

pub type Account = u32;
pub type Balance = i64;

/// A transaction: its coordinator, the coordinator's epoch, and a sequence number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId {
    pub coord: NodeId,
    pub epoch: u32,
    pub seq: u32,
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}.{}.{}", self.coord.0, self.epoch, self.seq)
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The shard (node) that owns `account`: a stable hash of the account number.
pub fn shard_of(account: Account, nodes: usize) -> NodeId {
    let hash = xxhash_rust::xxh3::xxh3_64(&account.to_le_bytes());
    NodeId((hash % nodes.max(1) as u64) as u32)
}

/// A client's transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Move `amount` from one account to another (refused if it would overdraw).
    Transfer {
        from: Account,
        to: Account,
        amount: Balance,
    },
    /// Read every account.
    ReadAll,
}

/// An account as a transaction read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    pub account: Account,
    pub balance: Balance,
    /// How many committed transactions have written the account.
    pub version: u64,
}

/// A write a participant will apply at commit: the new balance and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub account: Account,
    pub balance: Balance,
    pub version: u64,
}

/// The client-visible outcome, in the reference's shape
/// (`{"outcome": "committed" | "aborted", ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Committed; what the transaction read (ordered by account).
    Committed { reads: Vec<Read> },
    /// Aborted, with the reason; nothing changed.
    Aborted { reason: String },
}

/// One shard's part of a transaction: read an account, or add `delta` to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOp {
    pub account: Account,
    /// `None`: read only.
    pub delta: Option<Balance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Vote {
    Yes,
    ReadOnly,
    No(String),
}

/// An answer to a termination query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Commit,
    Abort,
    Uncertain,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Execute {
        txn: TxnId,
        ops: Vec<ShardOp>,
    },
    /// A participant executed its part: what it read, and the epoch (incarnation) of the
    /// participant that read it and holds the locks.
    Executed {
        txn: TxnId,
        reads: Vec<Read>,
        epoch: u32,
    },
    Refused {
        txn: TxnId,
        reason: String,
    },
    Prepare {
        txn: TxnId,
        writers: Vec<NodeId>,
    },
    /// A vote, with the epoch of the incarnation that executed the transaction (a YES
    /// re-sent after a restart carries the epoch kept in the PREPARED record).
    Vote {
        txn: TxnId,
        vote: Vote,
        epoch: u32,
    },
    Decision {
        txn: TxnId,
        commit: bool,
    },
    Ack {
        txn: TxnId,
    },
    /// A participant in doubt asks the coordinator.
    QueryCoordinator {
        txn: TxnId,
    },
    /// A participant in doubt asks another writer (cooperative termination).
    QueryPeer {
        txn: TxnId,
    },
    Answer {
        txn: TxnId,
        answer: Answer,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// Coordinator: give up waiting for execution and votes.
    Votes { txn: TxnId },
    /// Coordinator: re-send EXECUTE/PREPARE to the silent.
    Retry { txn: TxnId },
    /// Coordinator: the first send of a forced decision.
    SendDecision { txn: TxnId },
    /// Coordinator: re-send the decision to writers that have not acknowledged.
    Resend { txn: TxnId, attempt: u32 },
    /// Participant: executed but never asked to prepare.
    Active { txn: TxnId },
    /// Participant: voted yes and heard no decision.
    InDoubt { txn: TxnId, attempt: u32 },
}

/// How a participant learned the outcome of a transaction it prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Learned {
    /// From the coordinator's decision.
    Coordinator,
    /// From an answer to its query (coordinator or peer).
    Query,
    /// On its own, after a timeout (only with `two_pc.heuristic_abort_after_yes`).
    Heuristic,
    /// Announced again at a restart, from the shard's last-settled record: a crash inside
    /// the settle can make it durable after the process died, unannounced. (It may also
    /// repeat a `Decided` this node already reported, with the same outcome and writes.)
    Recovered,
}

/// A participant's vote, as observed (the reason of a NO is in the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoteKind {
    Yes,
    ReadOnly,
    No,
}

/// What the checkers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// A node (re)started: its new epoch, the commit decisions it resumes sending, and
    /// the transactions it holds prepared (in doubt).
    Started {
        epoch: u32,
        decisions: Vec<TxnId>,
        in_doubt: Vec<TxnId>,
    },
    /// A coordinator began a transaction.
    Begun {
        txn: TxnId,
        participants: Vec<NodeId>,
        writers: Vec<NodeId>,
        accounts_written: Vec<Account>,
    },
    /// A coordinator decided (a commit after its record is forced).
    CoordinatorDecided {
        txn: TxnId,
        commit: bool,
        writers: Vec<NodeId>,
    },
    /// A coordinator sent its commit decision for the first time in this incarnation.
    DecisionSent { txn: TxnId },
    /// Every writer acknowledged; the decision record is deleted.
    Ended { txn: TxnId },
    /// A coordinator answered ABORT for a transaction it has no record of.
    PresumedAbort { txn: TxnId },
    /// A participant took locks for a transaction.
    Locked { txn: TxnId, accounts: Vec<Account> },
    /// A participant refused a transaction whose locks conflict.
    Conflict { txn: TxnId, account: Account },
    /// A participant voted (YES after its PREPARED record is forced).
    Voted { txn: TxnId, vote: VoteKind },
    /// A participant settled a transaction it prepared (after the sync).
    Decided {
        txn: TxnId,
        commit: bool,
        writes: Vec<Write>,
        learned: Learned,
    },
    /// A participant aborted a transaction it had not voted for.
    LocalAbort {
        txn: TxnId,
        writer: bool,
        reason: String,
        /// Whether an abort tombstone was synced (a unilateral abort); an ABORT heard
        /// from the coordinator before voting is not recorded (presumed abort).
        durable: bool,
    },
    /// A participant released a transaction's locks.
    Unlocked { txn: TxnId },
    /// A participant in doubt asked for the outcome (the first time per incarnation).
    InDoubt { txn: TxnId },
    /// A storage failure stopped this incarnation.
    Stopped { what: String, error: String },
}

/// Timing parameters, all enforced in simulated time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// The coordinator aborts a transaction not executed and voted on within this long.
    pub vote_timeout: SimDuration,
    /// A participant aborts unilaterally a transaction it executed but was not asked to
    /// prepare within this long.
    pub active_timeout: SimDuration,
    /// A prepared participant asks for the outcome after this long.
    pub decision_timeout: SimDuration,
    /// The first re-send interval (EXECUTE/PREPARE, decisions); decisions back off,
    /// doubling up to `resend_max`.
    pub resend_interval: SimDuration,
    pub resend_max: SimDuration,
    /// The gap between forcing a commit record and the first send of the decision.
    pub decision_send_delay: SimDuration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            vote_timeout: SimDuration::from_millis(200),
            active_timeout: SimDuration::from_millis(120),
            // Shorter than `vote_timeout` on purpose: raising it to 200 ms raised the
            // abort rate on every canonical scenario with faults (100 seeds each:
            // coordinator-crash 819 -> 824 per mille, crash-restart 586 -> 589,
            // partitions 665 -> 671, duplicates 786 -> 814) and kept locks longer.
            decision_timeout: SimDuration::from_millis(100),
            resend_interval: SimDuration::from_millis(40),
            resend_max: SimDuration::from_millis(400),
            decision_send_delay: SimDuration::ZERO,
        }
    }
}

impl Timing {
    pub fn validate(&self) -> Result<(), String> {
        for (name, d) in [
            ("vote_timeout", self.vote_timeout),
            ("active_timeout", self.active_timeout),
            ("decision_timeout", self.decision_timeout),
            ("resend_interval", self.resend_interval),
        ] {
            if d == SimDuration::ZERO {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.resend_max < self.resend_interval {
            return Err("resend_max must be at least resend_interval".into());
        }
        if self.resend_interval >= self.vote_timeout {
            return Err("resend_interval must be shorter than vote_timeout".into());
        }
        Ok(())
    }

    fn backoff(&self, base: SimDuration, attempt: u32) -> SimDuration {
        let factor = 1u64 << attempt.min(16);
        SimDuration(
            base.0
                .saturating_mul(factor)
                .min(self.resend_max.0.max(base.0)),
        )
    }
}

/// The bank: how many accounts, and each one's opening balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bank {
    pub accounts: u32,
    pub initial_balance: Balance,
}

impl Default for Bank {
    fn default() -> Self {
        Bank {
            accounts: 8,
            initial_balance: 100,
        }
    }
}

/// Protocol settings.
#[derive(Clone)]
pub struct Settings {
    pub timing: Timing,
    pub bank: Bank,
    /// The engine that holds the node's durable state.
    pub engine: Arc<dyn EngineOpener>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("timing", &self.timing)
            .field("bank", &self.bank)
            .field("engine", &self.engine.name())
            .finish()
    }
}

pub static BUG_FLAGS: &[BugFlag] = &[
    BugFlag {
        name: "two_pc.prepare_not_durable",
        description: "a participant votes yes without forcing its PREPARED record (the vote is kept only in memory)",
    },
    BugFlag {
        name: "two_pc.decision_not_forced",
        description: "the coordinator sends commit before its decision record is durable",
    },
    BugFlag {
        name: "two_pc.heuristic_abort_after_yes",
        description: "a prepared participant aborts on its own after a timeout",
    },
    BugFlag {
        name: "two_pc.commit_on_missing_vote",
        description: "the coordinator takes a missing vote as yes when its vote timeout fires",
    },
    BugFlag {
        name: "two_pc.vote_yes_after_local_abort",
        description: "a participant that already aborted a transaction votes yes on a late prepare",
    },
    BugFlag {
        name: "two_pc.forget_decision_early",
        description: "the coordinator forgets a commit decision at the first acknowledgement, not the last",
    },
];

/// Which bug flags are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub prepare_not_durable: bool,
    pub decision_not_forced: bool,
    pub heuristic_abort_after_yes: bool,
    pub commit_on_missing_vote: bool,
    pub vote_yes_after_local_abort: bool,
    pub forget_decision_early: bool,
}

impl Bugs {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Bugs, BugFlagError> {
        let mut bugs = Bugs::default();
        for name in names {
            match name {
                "two_pc.prepare_not_durable" => bugs.prepare_not_durable = true,
                "two_pc.decision_not_forced" => bugs.decision_not_forced = true,
                "two_pc.heuristic_abort_after_yes" => bugs.heuristic_abort_after_yes = true,
                "two_pc.commit_on_missing_vote" => bugs.commit_on_missing_vote = true,
                "two_pc.vote_yes_after_local_abort" => bugs.vote_yes_after_local_abort = true,
                "two_pc.forget_decision_early" => bugs.forget_decision_early = true,
                other => return Err(unknown(other, BUG_FLAGS)),
            }
        }
        Ok(bugs)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Executing,
    Preparing,
}

/// A transaction its coordinator is still deciding (volatile: lost in a crash, and then
/// presumed aborted).
#[derive(Debug)]
struct Deciding {
    op: OpId,
    participants: BTreeMap<NodeId, Vec<ShardOp>>,
    writers: Vec<NodeId>,
    phase: Phase,
    /// Who executed, and in which of its epochs: the vote must come from that epoch.
    executed: BTreeMap<NodeId, u32>,
    reads: Vec<Read>,
    votes: BTreeMap<NodeId, Vote>,
    timers: Vec<TimerId>,
}

/// A forced commit decision being delivered.
#[derive(Debug)]
struct Delivering {
    writers: Vec<NodeId>,
    acked: BTreeSet<NodeId>,
}

/// A participant's transaction that executed but has not voted.
#[derive(Debug)]
struct Active {
    coordinator: NodeId,
    reads: Vec<Read>,
    writes: Vec<Write>,
    timer: TimerId,
}

/// A participant's transaction that voted yes (in doubt until it learns the outcome).
#[derive(Debug)]
struct Prepared {
    writers: Vec<NodeId>,
    writes: Vec<Write>,
    /// The epoch that executed it (kept in the PREPARED record): every YES carries it.
    epoch: u32,
}

#[derive(Debug, Default)]
struct Lock {
    exclusive: Option<TxnId>,
    shared: BTreeSet<TxnId>,
}

/// A 2PC node: coordinator and participant shard.
pub struct Node {
    id: NodeId,
    settings: Settings,
    bugs: Bugs,
    store: Option<Store>,
    stopped: bool,
    nodes: usize,
    epoch: u32,
    next_seq: u32,
    deciding: BTreeMap<TxnId, Deciding>,
    delivering: BTreeMap<TxnId, Delivering>,
    active: BTreeMap<TxnId, Active>,
    prepared: BTreeMap<TxnId, Prepared>,
    locks: BTreeMap<Account, Lock>,
    /// Transactions this incarnation has already reported asking about.
    asked: BTreeSet<TxnId>,
    /// Transactions this incarnation voted READ-ONLY for (volatile: a re-sent PREPARE
    /// gets READ-ONLY again; a duplicate EXECUTE is ignored).
    read_only: BTreeSet<TxnId>,
    /// Transactions this incarnation heard ABORT for before it voted (volatile: a late
    /// EXECUTE must not take their locks again).
    finished: BTreeSet<TxnId>,
    /// Transactions this incarnation reported voting YES for. A PREPARED record recovered
    /// from disk may never have been voted on: a crash inside `force_prepared` can keep
    /// the unsynced record while the process died before its vote. The first YES this
    /// incarnation sends from such a record is reported as the vote it is.
    voted_yes: BTreeSet<TxnId>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("deciding", &self.deciding.len())
            .field("prepared", &self.prepared.len())
            .finish()
    }
}

type NodeCtx<'a, 'b> = &'a mut Ctx<'b, Node>;

impl Node {
    pub fn new(id: NodeId, settings: Settings, bugs: Bugs) -> Node {
        Node {
            id,
            settings,
            bugs,
            store: None,
            stopped: false,
            nodes: 1,
            epoch: 0,
            next_seq: 0,
            deciding: BTreeMap::new(),
            delivering: BTreeMap::new(),
            active: BTreeMap::new(),
            prepared: BTreeMap::new(),
            locks: BTreeMap::new(),
            asked: BTreeSet::new(),
            read_only: BTreeSet::new(),
            finished: BTreeSet::new(),
            voted_yes: BTreeSet::new(),
        }
    }

    fn stop(&mut self, ctx: NodeCtx<'_, '_>, what: &str, error: EngineError) {
        ctx.sometimes("two_pc.fail_stop");
        self.stopped = true;
        ctx.observe(Observation::Stopped {
            what: what.to_string(),
            error: error.to_string(),
        });
    }

    fn store(&mut self) -> &mut Store {
        self.store
            .as_mut()
            .expect("store is open while not stopped")
    }

    fn recover(&mut self, ctx: NodeCtx<'_, '_>) -> Result<(), EngineError> {
        let mut store = Store::open(self.settings.engine.as_ref(), ctx.disk(), DIR)?;
        self.epoch = store.next_epoch()?;
        let decisions = store.decisions()?;
        let prepared = store.prepared()?;
        let last_settled = store.last_settled()?;
        self.store = Some(store);
        let mut decided_ids = Vec::new();
        for (txn, writers) in decisions {
            decided_ids.push(txn);
            self.delivering.insert(
                txn,
                Delivering {
                    writers: writers.into_iter().map(NodeId).collect(),
                    acked: BTreeSet::new(),
                },
            );
        }
        let mut in_doubt = Vec::new();
        for (txn, record) in prepared {
            in_doubt.push(txn);
            for w in &record.writes {
                self.locks.entry(w.account).or_default().exclusive = Some(txn);
            }
            self.prepared.insert(
                txn,
                Prepared {
                    writers: record.writers.into_iter().map(NodeId).collect(),
                    writes: record.writes,
                    epoch: record.epoch,
                },
            );
        }
        ctx.observe(Observation::Started {
            epoch: self.epoch,
            decisions: decided_ids.clone(),
            in_doubt: in_doubt.clone(),
        });
        if let Some(last) = last_settled
            && !self.prepared.contains_key(&last.txn)
        {
            // The settle is durable (the same batch deleted the PREPARED record), but a
            // crash inside it may have killed the process before it said so.
            ctx.observe(Observation::Decided {
                txn: last.txn,
                commit: last.commit,
                writes: last.writes,
                learned: Learned::Recovered,
            });
        }
        for txn in in_doubt {
            let accounts = self.prepared[&txn]
                .writes
                .iter()
                .map(|w| w.account)
                .collect();
            ctx.observe(Observation::Locked { txn, accounts });
            ctx.set_timer(
                self.settings.timing.decision_timeout,
                Timer::InDoubt { txn, attempt: 0 },
            );
        }
        for txn in decided_ids {
            self.send_decision(ctx, txn);
            ctx.set_timer(
                self.settings.timing.resend_interval,
                Timer::Resend { txn, attempt: 1 },
            );
        }
        Ok(())
    }

    // ----- coordinator -----------------------------------------------------------------

    fn begin(&mut self, ctx: NodeCtx<'_, '_>, op: OpId, request: Request) {
        let bank = self.settings.bank;
        let mut ops: Vec<ShardOp> = Vec::new();
        match request {
            Request::Transfer { from, to, amount } => {
                let reason = if from >= bank.accounts || to >= bank.accounts {
                    Some(format!(
                        "no such account (the bank has accounts 0..{})",
                        bank.accounts
                    ))
                } else if from == to {
                    Some("a transfer needs two different accounts".to_string())
                } else if amount <= 0 {
                    Some("a transfer amount must be positive".to_string())
                } else {
                    None
                };
                if let Some(reason) = reason {
                    ctx.reply_ok(op, Outcome::Aborted { reason });
                    return;
                }
                ops.push(ShardOp {
                    account: from,
                    delta: Some(-amount),
                });
                ops.push(ShardOp {
                    account: to,
                    delta: Some(amount),
                });
            }
            Request::ReadAll => {
                for account in 0..bank.accounts {
                    ops.push(ShardOp {
                        account,
                        delta: None,
                    });
                }
            }
        }
        self.next_seq += 1;
        let txn = TxnId {
            coord: self.id,
            epoch: self.epoch,
            seq: self.next_seq,
        };
        let mut participants: BTreeMap<NodeId, Vec<ShardOp>> = BTreeMap::new();
        for o in &ops {
            participants
                .entry(shard_of(o.account, self.nodes))
                .or_default()
                .push(*o);
        }
        let writers: Vec<NodeId> = participants
            .iter()
            .filter(|(_, ops)| ops.iter().any(|o| o.delta.is_some()))
            .map(|(n, _)| *n)
            .collect();
        ctx.observe(Observation::Begun {
            txn,
            participants: participants.keys().copied().collect(),
            writers: writers.clone(),
            accounts_written: ops
                .iter()
                .filter(|o| o.delta.is_some())
                .map(|o| o.account)
                .collect(),
        });
        for (node, ops) in &participants {
            ctx.send(
                *node,
                Msg::Execute {
                    txn,
                    ops: ops.clone(),
                },
            );
        }
        let t = &self.settings.timing;
        let timers = vec![
            ctx.set_timer(t.vote_timeout, Timer::Votes { txn }),
            ctx.set_timer(t.resend_interval, Timer::Retry { txn }),
        ];
        self.deciding.insert(
            txn,
            Deciding {
                op,
                participants,
                writers,
                phase: Phase::Executing,
                executed: BTreeMap::new(),
                reads: Vec::new(),
                votes: BTreeMap::new(),
                timers,
            },
        );
    }

    fn on_executed(
        &mut self,
        ctx: NodeCtx<'_, '_>,
        from: NodeId,
        txn: TxnId,
        reads: Vec<Read>,
        epoch: u32,
    ) {
        let Some(d) = self.deciding.get_mut(&txn) else {
            return;
        };
        if d.phase != Phase::Executing
            || !d.participants.contains_key(&from)
            || d.executed.contains_key(&from)
        {
            // The first EXECUTED counts; a later one (a duplicate, or a re-execution by a
            // restarted participant) is ignored, and its vote will not match.
            return;
        }
        d.executed.insert(from, epoch);
        d.reads.extend(reads);
        if d.executed.len() == d.participants.len() {
            d.phase = Phase::Preparing;
            let writers = d.writers.clone();
            for node in d.participants.keys() {
                ctx.send(
                    *node,
                    Msg::Prepare {
                        txn,
                        writers: writers.clone(),
                    },
                );
            }
        }
    }

    fn on_vote(&mut self, ctx: NodeCtx<'_, '_>, from: NodeId, txn: TxnId, vote: Vote, epoch: u32) {
        let Some(d) = self.deciding.get_mut(&txn) else {
            return;
        };
        if d.phase != Phase::Preparing || !d.participants.contains_key(&from) {
            return;
        }
        if let Vote::No(reason) = &vote {
            let reason = format!("{from} voted no: {reason}");
            self.abort(ctx, txn, reason);
            return;
        }
        let executed_in = d.executed.get(&from).copied();
        if executed_in != Some(epoch) {
            // The reads the coordinator holds came from another incarnation of this
            // participant, whose locks died with it: the vote cannot vouch for them.
            let reason = format!(
                "{from} voted from epoch {epoch}, not the epoch that executed ({})",
                executed_in.map_or_else(|| "none".to_string(), |e| e.to_string())
            );
            self.abort(ctx, txn, reason);
            return;
        }
        d.votes.insert(from, vote);
        if d.votes.len() == d.participants.len() {
            self.commit(ctx, txn);
        }
    }

    fn abort(&mut self, ctx: NodeCtx<'_, '_>, txn: TxnId, reason: String) {
        let Some(d) = self.deciding.remove(&txn) else {
            return;
        };
        for timer in &d.timers {
            ctx.cancel_timer(*timer);
        }
        ctx.observe(Observation::CoordinatorDecided {
            txn,
            commit: false,
            writers: Vec::new(),
        });
        // Presumed abort: nothing is logged, nobody must acknowledge. Participants that
        // miss this will ask, and hear ABORT.
        for node in d.participants.keys() {
            ctx.send(*node, Msg::Decision { txn, commit: false });
        }
        ctx.reply_ok(d.op, Outcome::Aborted { reason });
    }

    fn commit(&mut self, ctx: NodeCtx<'_, '_>, txn: TxnId) {
        let Some(mut d) = self.deciding.remove(&txn) else {
            return;
        };
        for timer in &d.timers {
            ctx.cancel_timer(*timer);
        }
        // Phase two goes to the writers (read-only voters have left).
        let writers = d.writers.clone();
        if !writers.is_empty() {
            let raw: Vec<u32> = writers.iter().map(|n| n.0).collect();
            let forced = !self.bugs.decision_not_forced;
            if let Err(e) = self.store().force_decision(txn, &raw, forced) {
                self.stop(ctx, "forcing a commit record", e);
                return;
            }
        }
        ctx.observe(Observation::CoordinatorDecided {
            txn,
            commit: true,
            writers: writers.clone(),
        });
        d.reads.sort_by_key(|r| r.account);
        ctx.reply_ok(d.op, Outcome::Committed { reads: d.reads });
        if writers.is_empty() {
            return;
        }
        self.delivering.insert(
            txn,
            Delivering {
                writers,
                acked: BTreeSet::new(),
            },
        );
        let t = self.settings.timing.clone();
        if t.decision_send_delay == SimDuration::ZERO {
            ctx.observe(Observation::DecisionSent { txn });
            self.send_decision(ctx, txn);
            ctx.set_timer(t.resend_interval, Timer::Resend { txn, attempt: 1 });
        } else {
            ctx.set_timer(t.decision_send_delay, Timer::SendDecision { txn });
        }
    }

    fn send_decision(&mut self, ctx: NodeCtx<'_, '_>, txn: TxnId) {
        let Some(d) = self.delivering.get(&txn) else {
            return;
        };
        for node in &d.writers {
            if !d.acked.contains(node) {
                ctx.send(*node, Msg::Decision { txn, commit: true });
            }
        }
    }

    fn on_ack(&mut self, ctx: NodeCtx<'_, '_>, from: NodeId, txn: TxnId) {
        let Some(d) = self.delivering.get_mut(&txn) else {
            return;
        };
        if !d.writers.contains(&from) {
            return;
        }
        d.acked.insert(from);
        let all = d.writers.iter().all(|n| d.acked.contains(n));
        if all || self.bugs.forget_decision_early {
            self.delivering.remove(&txn);
            if let Err(e) = self.store().end(txn) {
                self.stop(ctx, "writing an END record", e);
                return;
            }
            ctx.observe(Observation::Ended { txn });
        }
    }

    fn on_query_coordinator(&mut self, ctx: NodeCtx<'_, '_>, from: NodeId, txn: TxnId) {
        if txn.coord != self.id || self.deciding.contains_key(&txn) {
            // Still deciding: the decision (or the vote timeout) will come.
            return;
        }
        ctx.sometimes("two_pc.coordinator_queried");
        let answer = if self.delivering.contains_key(&txn) {
            Answer::Commit
        } else {
            ctx.observe(Observation::PresumedAbort { txn });
            Answer::Abort
        };
        ctx.send(from, Msg::Answer { txn, answer });
    }

    // ----- participant -----------------------------------------------------------------

    fn release(&mut self, ctx: NodeCtx<'_, '_>, txn: TxnId) {
        let mut any = false;
        for lock in self.locks.values_mut() {
            if lock.exclusive == Some(txn) {
                lock.exclusive = None;
                any = true;
            }
            any |= lock.shared.remove(&txn);
        }
        self.locks
            .retain(|_, l| l.exclusive.is_some() || !l.shared.is_empty());
        if any {
            ctx.observe(Observation::Unlocked { txn });
        }
    }

    fn conflict(&self, txn: TxnId, op: &ShardOp) -> bool {
        let Some(lock) = self.locks.get(&op.account) else {
            return false;
        };
        let other_exclusive = lock.exclusive.is_some_and(|t| t != txn);
        if op.delta.is_none() {
            other_exclusive
        } else {
            other_exclusive || lock.shared.iter().any(|t| *t != txn)
        }
    }

    fn on_execute(&mut self, ctx: NodeCtx<'_, '_>, from: NodeId, txn: TxnId, ops: Vec<ShardOp>) {
        if let Some(a) = self.active.get(&txn) {
            let reads = a.reads.clone();
            let epoch = self.epoch;
            ctx.send(from, Msg::Executed { txn, reads, epoch });
            return;
        }
        if self.prepared.contains_key(&txn)
            || self.read_only.contains(&txn)
            || self.finished.contains(&txn)
        {
            // Voted, or aborted by the coordinator: a late or duplicate EXECUTE must not
            // take the transaction's locks again.
            return;
        }
        match self.store().outcome(txn) {
            Err(e) => return self.stop(ctx, "reading an outcome", e),
            Ok(Some(_)) => {
                let reason = "already settled here".to_string();
                ctx.send(from, Msg::Refused { txn, reason });
                return;
            }
            Ok(None) => {}
        }
        if let Some(op) = ops.iter().find(|o| self.conflict(txn, o)) {
            ctx.observe(Observation::Conflict {
                txn,
                account: op.account,
            });
            let reason = format!("lock conflict on account {}", op.account);
            ctx.send(from, Msg::Refused { txn, reason });
            return;
        }
        let initial = self.settings.bank.initial_balance;
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        for op in &ops {
            let (balance, version) = match self.store().account(op.account, initial) {
                Ok(v) => v,
                Err(e) => return self.stop(ctx, "reading an account", e),
            };
            reads.push(Read {
                account: op.account,
                balance,
                version,
            });
            if let Some(delta) = op.delta {
                let new = balance.saturating_add(delta);
                if new < 0 {
                    let reason = format!(
                        "insufficient funds in account {} ({balance} < {})",
                        op.account, -delta
                    );
                    ctx.send(from, Msg::Refused { txn, reason });
                    return;
                }
                writes.push(Write {
                    account: op.account,
                    balance: new,
                    version: version + 1,
                });
            }
        }
        for op in &ops {
            let lock = self.locks.entry(op.account).or_default();
            if op.delta.is_some() {
                lock.exclusive = Some(txn);
            } else {
                lock.shared.insert(txn);
            }
        }
        ctx.observe(Observation::Locked {
            txn,
            accounts: ops.iter().map(|o| o.account).collect(),
        });
        let timer = ctx.set_timer(self.settings.timing.active_timeout, Timer::Active { txn });
        self.active.insert(
            txn,
            Active {
                coordinator: from,
                reads: reads.clone(),
                writes,
                timer,
            },
        );
        let epoch = self.epoch;
        ctx.send(from, Msg::Executed { txn, reads, epoch });
    }

    fn on_prepare(&mut self, ctx: NodeCtx<'_, '_>, from: NodeId, txn: TxnId, writers: Vec<NodeId>) {
        if let Some(a) = self.active.remove(&txn) {
            ctx.cancel_timer(a.timer);
            let epoch = self.epoch;
            if a.writes.is_empty() {
                self.release(ctx, txn);
                self.read_only.insert(txn);
                ctx.observe(Observation::Voted {
                    txn,
                    vote: VoteKind::ReadOnly,
                });
                ctx.send(
                    from,
                    Msg::Vote {
                        txn,
                        vote: Vote::ReadOnly,
                        epoch,
                    },
                );
                return;
            }
            if !self.bugs.prepare_not_durable {
                let record = PreparedRecord {
                    coordinator: a.coordinator.0,
                    writers: writers.iter().map(|n| n.0).collect(),
                    writes: a.writes.clone(),
                    epoch,
                };
                if let Err(e) = self.store().force_prepared(txn, &record) {
                    return self.stop(ctx, "forcing a PREPARED record", e);
                }
            }
            self.prepared.insert(
                txn,
                Prepared {
                    writers,
                    writes: a.writes,
                    epoch,
                },
            );
            self.voted_yes.insert(txn);
            ctx.observe(Observation::Voted {
                txn,
                vote: VoteKind::Yes,
            });
            ctx.send(
                from,
                Msg::Vote {
                    txn,
                    vote: Vote::Yes,
                    epoch,
                },
            );
            ctx.set_timer(
                self.settings.timing.decision_timeout,
                Timer::InDoubt { txn, attempt: 0 },
            );
            return;
        }
        if let Some(p) = self.prepared.get(&txn) {
            let epoch = p.epoch;
            if self.voted_yes.insert(txn) {
                // Recovered from disk: this may be the first YES ever sent for it.
                ctx.observe(Observation::Voted {
                    txn,
                    vote: VoteKind::Yes,
                });
            }
            ctx.send(
                from,
                Msg::Vote {
                    txn,
                    vote: Vote::Yes,
                    epoch,
                },
            );
            return;
        }
        let epoch = self.epoch;
        if self.read_only.contains(&txn) {
            // The READ-ONLY vote was lost: say it again (this incarnation read, under
            // its own shared locks, what the coordinator holds).
            let vote = Vote::ReadOnly;
            ctx.send(from, Msg::Vote { txn, vote, epoch });
            return;
        }
        let vote = match self.store().outcome(txn) {
            Err(e) => return self.stop(ctx, "reading an outcome", e),
            Ok(Some(true)) => Vote::Yes,
            Ok(Some(false)) if self.bugs.vote_yes_after_local_abort => {
                ctx.observe(Observation::Voted {
                    txn,
                    vote: VoteKind::Yes,
                });
                Vote::Yes
            }
            Ok(Some(false)) => Vote::No("already aborted here".into()),
            Ok(None) => Vote::No("unknown here (never executed, or lost in a crash)".into()),
        };
        if matches!(vote, Vote::No(_)) {
            ctx.observe(Observation::Voted {
                txn,
                vote: VoteKind::No,
            });
        }
        ctx.send(from, Msg::Vote { txn, vote, epoch });
    }

    /// Settles a prepared transaction (durably) and releases its locks.
    fn settle(&mut self, ctx: NodeCtx<'_, '_>, txn: TxnId, commit: bool, learned: Learned) {
        let Some(p) = self.prepared.remove(&txn) else {
            return;
        };
        if let Err(e) = self.store().settle(txn, commit, &p.writes, true) {
            return self.stop(ctx, "settling a transaction", e);
        }
        ctx.observe(Observation::Decided {
            txn,
            commit,
            writes: if commit { p.writes } else { Vec::new() },
            learned,
        });
        self.release(ctx, txn);
        if commit {
            ctx.send(txn.coord, Msg::Ack { txn });
        }
    }

    /// Aborts a transaction this participant has not voted for, durably (a tombstone, so
    /// a late PREPARE is refused), and releases its locks.
    fn local_abort(&mut self, ctx: NodeCtx<'_, '_>, txn: TxnId, writer: bool, reason: &str) {
        if let Some(a) = self.active.remove(&txn) {
            ctx.cancel_timer(a.timer);
        }
        if let Err(e) = self.store().settle(txn, false, &[], false) {
            return self.stop(ctx, "recording an abort", e);
        }
        ctx.observe(Observation::LocalAbort {
            txn,
            writer,
            reason: reason.to_string(),
            durable: true,
        });
        self.release(ctx, txn);
    }

    fn on_decision(&mut self, ctx: NodeCtx<'_, '_>, from: NodeId, txn: TxnId, commit: bool) {
        if self.prepared.contains_key(&txn) {
            self.settle(ctx, txn, commit, Learned::Coordinator);
            return;
        }
        if !commit {
            if !self.read_only.contains(&txn) {
                self.finished.insert(txn);
            }
            if let Some(a) = self.active.remove(&txn) {
                // The coordinator aborted before this shard voted: no record is needed
                // (a late PREPARE finds nothing and is refused).
                ctx.cancel_timer(a.timer);
                ctx.observe(Observation::LocalAbort {
                    txn,
                    writer: !a.writes.is_empty(),
                    reason: "the coordinator aborted".into(),
                    durable: false,
                });
                self.release(ctx, txn);
            }
            return;
        }
        // A commit already applied here (a re-send): acknowledge again.
        match self.store().outcome(txn) {
            Err(e) => self.stop(ctx, "reading an outcome", e),
            Ok(Some(true)) => ctx.send(from, Msg::Ack { txn }),
            Ok(_) => {}
        }
    }

    fn on_query_peer(&mut self, ctx: NodeCtx<'_, '_>, from: NodeId, txn: TxnId) {
        if self.prepared.contains_key(&txn) {
            let answer = Answer::Uncertain;
            ctx.send(from, Msg::Answer { txn, answer });
            return;
        }
        let answer = match self.store().outcome(txn) {
            Err(e) => return self.stop(ctx, "reading an outcome", e),
            Ok(Some(true)) => Answer::Commit,
            Ok(Some(false)) => Answer::Abort,
            Ok(None) => {
                // This writer never voted yes: it settles the transaction as aborted.
                self.local_abort(
                    ctx,
                    txn,
                    true,
                    "a prepared peer asked before this shard voted",
                );
                if self.stopped {
                    return;
                }
                Answer::Abort
            }
        };
        ctx.send(from, Msg::Answer { txn, answer });
    }

    fn on_answer(&mut self, ctx: NodeCtx<'_, '_>, txn: TxnId, answer: Answer) {
        match answer {
            Answer::Commit | Answer::Abort => ctx.sometimes("two_pc.decision_learned_from_peer"),
            Answer::Uncertain => {}
        }
        match answer {
            Answer::Commit => self.settle(ctx, txn, true, Learned::Query),
            Answer::Abort => self.settle(ctx, txn, false, Learned::Query),
            Answer::Uncertain => {}
        }
    }

    fn on_in_doubt(&mut self, ctx: NodeCtx<'_, '_>, txn: TxnId, attempt: u32) {
        let Some(p) = self.prepared.get(&txn) else {
            return;
        };
        ctx.sometimes("two_pc.participant_in_doubt");
        if self.bugs.heuristic_abort_after_yes {
            self.settle(ctx, txn, false, Learned::Heuristic);
            return;
        }
        let peers: Vec<NodeId> = p
            .writers
            .iter()
            .copied()
            .filter(|n| *n != self.id)
            .collect();
        if self.asked.insert(txn) {
            ctx.observe(Observation::InDoubt { txn });
        }
        ctx.send(txn.coord, Msg::QueryCoordinator { txn });
        for peer in peers {
            ctx.send(peer, Msg::QueryPeer { txn });
        }
        let t = &self.settings.timing;
        let next = t.backoff(t.decision_timeout, attempt + 1);
        ctx.set_timer(
            next,
            Timer::InDoubt {
                txn,
                attempt: attempt + 1,
            },
        );
    }
}

impl Process for Node {
    type Msg = Msg;
    type Timer = Timer;
    type Op = Request;
    type Reply = Outcome;
    type Obs = Observation;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.nodes = ctx.node_count();
        if let Err(e) = self.recover(ctx) {
            self.stop(ctx, "recovering", e);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        if self.stopped {
            return;
        }
        match msg {
            Msg::Execute { txn, ops } => self.on_execute(ctx, from, txn, ops),
            Msg::Executed { txn, reads, epoch } => self.on_executed(ctx, from, txn, reads, epoch),
            Msg::Refused { txn, reason } => {
                let reason = format!("{from} refused: {reason}");
                self.abort(ctx, txn, reason);
            }
            Msg::Prepare { txn, writers } => self.on_prepare(ctx, from, txn, writers),
            Msg::Vote { txn, vote, epoch } => self.on_vote(ctx, from, txn, vote, epoch),
            Msg::Decision { txn, commit } => self.on_decision(ctx, from, txn, commit),
            Msg::Ack { txn } => self.on_ack(ctx, from, txn),
            Msg::QueryCoordinator { txn } => self.on_query_coordinator(ctx, from, txn),
            Msg::QueryPeer { txn } => self.on_query_peer(ctx, from, txn),
            Msg::Answer { txn, answer } => self.on_answer(ctx, txn, answer),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _id: TimerId, timer: Timer) {
        if self.stopped {
            return;
        }
        match timer {
            Timer::Votes { txn } => {
                let Some(d) = self.deciding.get(&txn) else {
                    return;
                };
                if d.phase == Phase::Preparing && self.bugs.commit_on_missing_vote {
                    self.commit(ctx, txn);
                    return;
                }
                let silent: Vec<String> = d
                    .participants
                    .keys()
                    .filter(|n| match d.phase {
                        Phase::Executing => !d.executed.contains_key(n),
                        Phase::Preparing => !d.votes.contains_key(n),
                    })
                    .map(|n| n.to_string())
                    .collect();
                let reason = format!(
                    "timeout: no {} from {} within {}",
                    if d.phase == Phase::Executing {
                        "execution"
                    } else {
                        "vote"
                    },
                    silent.join(", "),
                    self.settings.timing.vote_timeout
                );
                self.abort(ctx, txn, reason);
            }
            Timer::Retry { txn } => {
                let Some(d) = self.deciding.get_mut(&txn) else {
                    return;
                };
                for (node, ops) in &d.participants {
                    match d.phase {
                        Phase::Executing if !d.executed.contains_key(node) => {
                            let ops = ops.clone();
                            ctx.send(*node, Msg::Execute { txn, ops });
                        }
                        Phase::Preparing if !d.votes.contains_key(node) => {
                            let writers = d.writers.clone();
                            ctx.send(*node, Msg::Prepare { txn, writers });
                        }
                        _ => {}
                    }
                }
                let id = ctx.set_timer(self.settings.timing.resend_interval, Timer::Retry { txn });
                d.timers.push(id);
            }
            Timer::SendDecision { txn } => {
                if self.delivering.contains_key(&txn) {
                    ctx.observe(Observation::DecisionSent { txn });
                    self.send_decision(ctx, txn);
                    ctx.set_timer(
                        self.settings.timing.resend_interval,
                        Timer::Resend { txn, attempt: 1 },
                    );
                }
            }
            Timer::Resend { txn, attempt } => {
                if self.delivering.contains_key(&txn) {
                    self.send_decision(ctx, txn);
                    let t = &self.settings.timing;
                    let next = t.backoff(t.resend_interval, attempt);
                    ctx.set_timer(
                        next,
                        Timer::Resend {
                            txn,
                            attempt: attempt + 1,
                        },
                    );
                }
            }
            Timer::Active { txn } => {
                if let Some(a) = self.active.get(&txn) {
                    let writer = !a.writes.is_empty();
                    self.local_abort(
                        ctx,
                        txn,
                        writer,
                        "not asked to prepare within active_timeout",
                    );
                }
            }
            Timer::InDoubt { txn, attempt } => self.on_in_doubt(ctx, txn, attempt),
        }
    }

    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, request: Request) {
        if self.stopped {
            ctx.reply_fail(op, "node stopped after a storage failure");
            return;
        }
        self.begin(ctx, op, request);
    }

    /// A node "leads" while it coordinates a transaction (deciding or delivering), so
    /// `isolate_leader` partitions aim at a coordinator in the middle of its work.
    fn is_leader(&self) -> bool {
        !self.deciding.is_empty() || !self.delivering.is_empty()
    }
}

/// Two-phase commit's coverage points (sometimes-assertions), for `faultline explore`.
pub const COVERAGE: &[sim_core::coverage::Point] = &[
    sim_core::coverage::Point {
        name: "two_pc.participant_in_doubt",
        description: "a prepared participant waited past its timeout without a decision (the blocking window)",
    },
    sim_core::coverage::Point {
        name: "two_pc.coordinator_queried",
        description: "a coordinator answered a participant's query about a decided transaction",
    },
    sim_core::coverage::Point {
        name: "two_pc.decision_learned_from_peer",
        description: "a participant in doubt learned the outcome from another participant (cooperative termination)",
    },
    sim_core::coverage::Point {
        name: "two_pc.fail_stop",
        description: "a node stopped on a storage error",
    },
];
