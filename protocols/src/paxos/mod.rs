//! Multi-Paxos (Lamport, "Paxos Made Simple", 2001, §3; van Renesse & Altinbuken,
//! "Paxos Made Moderately Complex", 2015) as total order broadcast, with a linearizable
//! key-value service on the decided sequence.
//!
//! **Roles.** Every node is proposer, acceptor and learner. A distinguished proposer —
//! the leader — runs phase 1 once, with one ballot, for every slot above its applied
//! point; it then fills the slots the promises reported with their highest-ballot
//! accepted values (a no-op where a gap has none) and proposes client commands in fresh
//! slots with phase 2 only. A follower that hears nothing from a leader for a randomised
//! timeout runs phase 1 with a higher ballot. Ballots are `(round, node)`: unique across
//! nodes by the node id, and across restarts because a node promises its own ballot
//! durably before it sends a `Prepare`, and recovers its round from that promise.
//!
//! **Durability.** The acceptor's promise and accepted values live in a WAL
//! ([`acceptor`]) that is synced before any `Promise` or `Accepted` is sent. The state
//! machine is a `KvEngine` with the applied slot written in the same batch as the slot's
//! effect. Decided slots not yet applied are kept in memory only: after a crash a node
//! learns them again from the leader (its own accepted values at the leader's ballot,
//! or a catch-up of decided values or a snapshot from a peer).
//!
//! **Learning.** A leader decides a slot when a majority accepted it at its ballot, and
//! announces its applied point (`commit`) with every `Accept` and heartbeat. A follower
//! that accepted a slot at the same ballot knows the decided value; any other gap it
//! fetches with `CatchUp`. Slots are applied strictly in order.
//!
//! **Clients.** Any node takes a request; a follower forwards it to the leader. The
//! leader batches the requests it holds into one slot while earlier slots are in flight.
//! Each request carries its operation id, and the state machine keeps every applied
//! operation's result (the reply cache), so a request proposed twice takes effect once.
//! Reads go through the log, or with `reads = "lease"` a leader with a valid lease
//! answers them from its state machine.

pub mod acceptor;
pub mod checker;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use sim_core::linearizability::model::{KvOp, KvResult};
use sim_core::{Ctx, NodeId, OpId, Process, SimDuration, SimTime, TimerId};
use storage::kv::EngineOpener;

use self::acceptor::{AcceptorLog, digest};
use crate::common::{BugFlag, BugFlagError, unknown};
use crate::raft::state_machine::{Snapshot, StateMachine};

/// Where a node keeps its acceptor log and its state machine on its disk.
const ACCEPTOR_DIR: &str = "paxos/acceptor";
const STATE_DIR: &str = "paxos/state";

/// A position in the decided sequence (the first is 1; 0 means "before the first").
pub type Slot = u64;

/// A ballot: ordered by round, then node id, so two nodes never share one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub node: u32,
}

impl Ballot {
    pub const ZERO: Ballot = Ballot { round: 0, node: 0 };

    pub fn leader(self) -> NodeId {
        NodeId(self.node)
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
    }
}

impl fmt::Debug for Ballot {
    /// `round.node`, as in traces and transcripts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A client request in a slot, received by `origin` as operation `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub origin: NodeId,
    pub op: OpId,
    pub request: KvOp,
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Fills a gap a new leader found in phase 1.
    Noop,
    /// Client requests, applied in order.
    Batch(Vec<Request>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Phase 1a: promise `ballot` for every slot from `from` on.
    Prepare { ballot: Ballot, from: Slot },
    /// Phase 1b: the acceptor promised `ballot`; everything up to `base` is decided and
    /// compacted; `accepted` holds its accepted values from the requested slot on.
    Promise {
        ballot: Ballot,
        base: Slot,
        accepted: Vec<(Slot, Ballot, Value)>,
    },
    /// The acceptor has promised a higher ballot than `ballot`.
    Nack { ballot: Ballot, promised: Ballot },
    /// Phase 2a, with the leader's applied point.
    Accept {
        ballot: Ballot,
        slot: Slot,
        value: Value,
        commit: Slot,
    },
    /// Phase 2b.
    Accepted { ballot: Ballot, slot: Slot },
    /// The leader is alive; every slot up to `commit` is decided. `round` is echoed.
    Heartbeat {
        ballot: Ballot,
        commit: Slot,
        round: u64,
    },
    HeartbeatOk {
        ballot: Ballot,
        round: u64,
        applied: Slot,
    },
    /// Send me the decided values from slot `from` on.
    CatchUp { from: Slot },
    /// Decided values, in slot order.
    Decided { entries: Vec<(Slot, Value)> },
    /// The sender's state machine, for a node behind the sender's retained values.
    Snapshot { snapshot: Snapshot },
    /// A client request received by a follower, for the leader to propose.
    Forward { op: OpId, request: KvOp },
    /// The node forwarded to is not the leader.
    Refused { op: OpId, reason: String },
    /// The leader answered a forwarded read within its lease.
    ReadOk { op: OpId, result: KvResult },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// Follower or would-be leader: run phase 1 unless this generation was superseded.
    LeaderTimeout { generation: u64 },
    /// Leader: heartbeat, retransmit, check the quorum. Preparing: resend `Prepare`.
    Tick { generation: u64 },
}

/// What the checkers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// This node started phase 1 with `ballot`.
    Phase1Started { ballot: Ballot },
    /// This node's acceptor promised `ballot`.
    Promised { ballot: Ballot },
    /// This node's acceptor accepted a value in `slot` at `ballot` (durably).
    Accepted { slot: Slot, ballot: Ballot },
    /// Phase 1 succeeded: this node leads with `ballot`, having recovered every slot up
    /// to `recovered` from the promises.
    BecameLeader { ballot: Ballot, recovered: Slot },
    /// This leader proposed the value hashing to `digest` in `slot`.
    Proposed {
        slot: Slot,
        ballot: Ballot,
        digest: u64,
    },
    /// This node applied `slot`, whose value hashes to `digest`; `effective` lists the
    /// client operations that took effect in it (a duplicate does not).
    Applied {
        slot: Slot,
        digest: u64,
        effective: Vec<OpId>,
    },
    /// This node's state machine was replaced by a peer's snapshot up to `slot`.
    SnapshotInstalled { slot: Slot },
    /// This node compacted its acceptor log up to `slot`.
    Compacted { slot: Slot },
    /// This leader gave up `ballot`.
    SteppedDown { ballot: Ballot, reason: String },
    /// A storage failure stopped this incarnation.
    Stopped { what: String, error: String },
    /// This node restarted with its state machine recovered from disk up to `applied`.
    /// (A crash inside an operation can make a slot durable and kill the node before
    /// its `Applied` was observed; this says the node has it.)
    Recovered { applied: Slot },
}

/// How the leader answers read-only requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Through the log, like writes.
    #[default]
    Log,
    /// A leader lease: the minimum leader timeout shrunk by the clock-drift bound, from
    /// the sending of a heartbeat a majority acknowledged; acceptors refuse other
    /// proposers' `Prepare` while they hear from a leader.
    Lease,
}

impl std::str::FromStr for ReadMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "log" => Ok(ReadMode::Log),
            "lease" => Ok(ReadMode::Lease),
            other => Err(format!(
                "unknown read mode `{other}`; expected one of: log, lease"
            )),
        }
    }
}

/// Timing, batching and features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A follower runs phase 1 after a random timeout in this range without a leader.
    pub leader_timeout_min: SimDuration,
    pub leader_timeout_max: SimDuration,
    pub heartbeat_interval: SimDuration,
    /// At most this many client requests per slot.
    pub max_batch: usize,
    /// At most this many undecided slots of fresh client requests at once.
    pub max_in_flight: usize,
    /// Compact the acceptor log once this many applied slots follow its base (0: never).
    pub snapshot_threshold: u64,
    pub reads: ReadMode,
    /// The scenario's bound on clock drift, in parts per million (for the lease).
    pub max_drift_ppm: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            leader_timeout_min: SimDuration::from_millis(150),
            leader_timeout_max: SimDuration::from_millis(300),
            heartbeat_interval: SimDuration::from_millis(50),
            max_batch: 16,
            max_in_flight: 4,
            snapshot_threshold: 100,
            reads: ReadMode::Log,
            max_drift_ppm: 0,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.leader_timeout_min > self.leader_timeout_max {
            return Err("leader_timeout min is greater than max".into());
        }
        if self.heartbeat_interval == SimDuration::ZERO {
            return Err("heartbeat_interval must be positive".into());
        }
        if self.heartbeat_interval >= self.leader_timeout_min {
            return Err(
                "heartbeat_interval must be shorter than the minimum leader timeout".into(),
            );
        }
        if self.max_batch == 0 || self.max_in_flight == 0 {
            return Err("max_batch and max_in_flight must be at least 1".into());
        }
        Ok(())
    }

    /// The lease on the leader's clock: `min·(1 − ρ)/(1 + ρ)` for the drift bound ρ, so
    /// that it ends before any acceptor's `min` on its own clock has passed (see Raft's
    /// `Settings::lease_duration` for the derivation).
    pub fn lease_duration(&self) -> SimDuration {
        let ppm = u64::from(self.max_drift_ppm.min(999_999));
        let min = self.leader_timeout_min.as_micros();
        SimDuration::from_micros(min * (1_000_000 - ppm) / (1_000_000 + ppm))
    }

    /// How many applied values a node keeps to serve `CatchUp` without a snapshot.
    fn retained(&self) -> u64 {
        self.snapshot_threshold.max(64)
    }
}

/// Protocol settings.
#[derive(Clone)]
pub struct Settings {
    pub config: Config,
    /// The engine that holds the state machine.
    pub engine: Arc<dyn EngineOpener>,
    /// Engine defects switched on for the acceptor's own log (`wal.*` flags).
    pub engine_bugs: storage::bugs::EngineBugs,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("engine", &self.engine.name())
            .finish()
    }
}

pub const BUG_FLAGS: &[BugFlag] = &[
    BugFlag {
        name: "paxos.promise_not_persisted",
        description: "an acceptor keeps its promise in memory only, so a restarted acceptor forgets it",
    },
    BugFlag {
        name: "paxos.ignore_accepted_value",
        description: "a new leader proposes its own value instead of the highest-ballot accepted one",
    },
    BugFlag {
        name: "paxos.accept_without_raising_promise",
        description: "an acceptor accepts at a ballot without recording that ballot as promised",
    },
    BugFlag {
        name: "paxos.stale_promise_counted",
        description: "promises for an older ballot are counted toward the quorum of a newer one",
    },
    BugFlag {
        name: "paxos.ballot_reuse_after_restart",
        description: "a proposer's round restarts at zero after a crash instead of above its durable promise",
    },
    BugFlag {
        name: "paxos.leader_local_read_no_lease",
        description: "a leader answers reads from its state machine with neither a lease nor a round through the log",
    },
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub promise_not_persisted: bool,
    pub ignore_accepted_value: bool,
    pub accept_without_raising_promise: bool,
    pub stale_promise_counted: bool,
    pub ballot_reuse_after_restart: bool,
    pub leader_local_read_no_lease: bool,
}

impl Bugs {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, BugFlagError> {
        let mut bugs = Bugs::default();
        for name in names {
            match name {
                "paxos.promise_not_persisted" => bugs.promise_not_persisted = true,
                "paxos.ignore_accepted_value" => bugs.ignore_accepted_value = true,
                "paxos.accept_without_raising_promise" => {
                    bugs.accept_without_raising_promise = true
                }
                "paxos.stale_promise_counted" => bugs.stale_promise_counted = true,
                "paxos.ballot_reuse_after_restart" => bugs.ballot_reuse_after_restart = true,
                "paxos.leader_local_read_no_lease" => bugs.leader_local_read_no_lease = true,
                _ => return Err(unknown(name, BUG_FLAGS)),
            }
        }
        Ok(bugs)
    }
}

#[derive(Debug)]
enum Role {
    Follower,
    Preparing(Box<Preparing>),
    Leading(Box<Leading>),
}

/// An acceptor's promise: its base and its accepted values from the requested slot on.
type PromiseInfo = (Slot, Vec<(Slot, Ballot, Value)>);

/// Phase 1 in progress.
#[derive(Debug)]
struct Preparing {
    ballot: Ballot,
    from: Slot,
    /// Per acceptor that promised: its base and accepted values.
    promises: BTreeMap<NodeId, PromiseInfo>,
}

/// A leader's volatile state.
#[derive(Debug)]
struct Leading {
    ballot: Ballot,
    /// The next fresh slot.
    next_slot: Slot,
    /// Every slot up to this one was recovered in phase 1 (decided, or re-proposed).
    recovered: Slot,
    /// Undecided proposals of this ballot.
    proposals: BTreeMap<Slot, Proposal>,
    /// Client requests waiting for a slot.
    pending: Vec<Request>,
    /// Heartbeat rounds, for the lease and the quorum check.
    round: u64,
    acked: Vec<u64>,
    round_sent: BTreeMap<u64, SimTime>,
    last_heard: Vec<Option<SimTime>>,
    since: SimTime,
    lease_until: Option<SimTime>,
    /// The promiser with the highest base, which holds the decided slots this leader
    /// lacks (if it lacks any).
    catch_up_from: NodeId,
    /// Per node: the applied slot its latest heartbeat reply reported.
    peer_applied: Vec<Slot>,
}

#[derive(Debug)]
struct Proposal {
    value: Value,
    accepts: BTreeSet<NodeId>,
    /// Local time it was last sent (retransmitted a heartbeat interval later).
    sent: SimTime,
}

struct Durable {
    acceptor: AcceptorLog,
    sm: StateMachine,
}

/// One Multi-Paxos node.
pub struct Node {
    settings: Settings,
    bugs: Bugs,
    /// `None` until `on_start` has opened the disk, and after a fatal storage error.
    durable: Option<Durable>,
    role: Role,
    /// The ballot of the leader this node follows.
    leader: Option<Ballot>,
    /// The highest round seen in any ballot (the next ballot goes above it).
    max_round: u64,
    /// The highest slot known decided, from the leader.
    commit: Slot,
    /// Decided values not yet applied, and recently applied ones (to serve `CatchUp`).
    decided: BTreeMap<Slot, Value>,
    leader_generation: u64,
    tick_generation: u64,
    /// Client operations this incarnation received and has not answered.
    awaiting: BTreeMap<OpId, bool>,
    /// Local time this node last heard from the leader it follows.
    leader_contact: Option<SimTime>,
    /// Local time of the last `CatchUp` sent.
    catch_up_sent: Option<SimTime>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("paxos::Node")
            .field("role", &self.role)
            .field("leader", &self.leader)
            .field("commit", &self.commit)
            .finish()
    }
}

impl Node {
    pub fn new(settings: Settings, bugs: Bugs) -> Self {
        Node {
            settings,
            bugs,
            durable: None,
            role: Role::Follower,
            leader: None,
            max_round: 0,
            commit: 0,
            decided: BTreeMap::new(),
            leader_generation: 0,
            tick_generation: 0,
            awaiting: BTreeMap::new(),
            leader_contact: None,
            catch_up_sent: None,
        }
    }

    fn quorum(ctx: &Ctx<'_, Self>) -> usize {
        ctx.node_count() / 2 + 1
    }

    fn config(&self) -> &Config {
        &self.settings.config
    }

    fn applied(&self) -> Slot {
        self.durable.as_ref().map_or(0, |d| d.sm.applied())
    }

    fn promised(&self) -> Ballot {
        self.durable
            .as_ref()
            .map_or(Ballot::ZERO, |d| d.acceptor.promised())
    }

    fn own_ballot(&self) -> Option<Ballot> {
        match &self.role {
            Role::Follower => None,
            Role::Preparing(p) => Some(p.ballot),
            Role::Leading(l) => Some(l.ballot),
        }
    }

    fn fail_stop(&mut self, ctx: &mut Ctx<'_, Self>, what: &'static str, error: impl fmt::Display) {
        ctx.sometimes("paxos.fail_stop");
        ctx.observe(Observation::Stopped {
            what: what.to_string(),
            error: error.to_string(),
        });
        self.durable = None;
        self.role = Role::Follower;
        self.leader = None;
        self.tick_generation += 1;
        self.leader_generation += 1;
    }

    fn sync(&mut self, ctx: &mut Ctx<'_, Self>) -> bool {
        let Some(d) = self.durable.as_mut() else {
            return false;
        };
        match d.acceptor.sync() {
            Ok(()) => true,
            Err(e) => {
                self.fail_stop(ctx, "sync", e);
                false
            }
        }
    }

    fn reset_leader_timer(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.leader_generation += 1;
        let (min, max) = (
            self.config().leader_timeout_min.as_micros(),
            self.config().leader_timeout_max.as_micros(),
        );
        let timeout = SimDuration::from_micros(ctx.rng().random_range(min..=max));
        ctx.set_timer(
            timeout,
            Timer::LeaderTimeout {
                generation: self.leader_generation,
            },
        );
    }

    fn set_tick(&mut self, ctx: &mut Ctx<'_, Self>) {
        let interval = self.config().heartbeat_interval;
        ctx.set_timer(
            interval,
            Timer::Tick {
                generation: self.tick_generation,
            },
        );
    }

    /// Notes a ballot seen in any message, so the next own ballot goes above it.
    fn saw(&mut self, ballot: Ballot) {
        self.max_round = self.max_round.max(ballot.round);
    }

    /// Whether this node refuses every `Prepare` because it heard from a leader within
    /// the minimum leader timeout (lease mode only; a leader always has). No proposer is
    /// exempt, not even the one followed: the lease a heartbeat acknowledgement helped
    /// give may belong to another leader than the one followed now.
    fn sticky(&self, now: SimTime) -> bool {
        if self.config().reads != ReadMode::Lease {
            return false;
        }
        matches!(self.role, Role::Leading(_))
            || self
                .leader_contact
                .is_some_and(|t| now < t + self.config().leader_timeout_min)
    }

    /// The lowest ballot whose leader this node answers: its promise, and the ballot of
    /// the leader it follows (a delayed heartbeat or accept of an older leader is refused
    /// rather than followed).
    fn floor(&self) -> Ballot {
        self.promised().max(self.leader.unwrap_or(Ballot::ZERO))
    }

    /// Gives up leading or preparing. A leader's unproposed requests are answered: its
    /// own clients' fail (they are in no slot), forwarded ones are refused.
    fn become_follower(&mut self, ctx: &mut Ctx<'_, Self>, reason: &str) {
        let me = ctx.id();
        match std::mem::replace(&mut self.role, Role::Follower) {
            Role::Leading(l) => {
                ctx.sometimes("paxos.leader_stepped_down");
                ctx.observe(Observation::SteppedDown {
                    ballot: l.ballot,
                    reason: reason.to_string(),
                });
                for r in l.pending {
                    if r.origin == me {
                        if self.awaiting.remove(&r.op).is_some() {
                            ctx.reply_fail(r.op, format!("leader stepped down: {reason}"));
                        }
                    } else {
                        ctx.send(
                            r.origin,
                            Msg::Refused {
                                op: r.op,
                                reason: format!("leader stepped down: {reason}"),
                            },
                        );
                    }
                }
                if self.leader.is_some_and(|b| b.leader() == me) {
                    self.leader = None;
                }
            }
            Role::Preparing(_) | Role::Follower => {}
        }
        self.tick_generation += 1;
        self.reset_leader_timer(ctx);
    }

    /// Follows the leader of `ballot` (a `Heartbeat` or `Accept` at or above the promise).
    fn follow(&mut self, ctx: &mut Ctx<'_, Self>, ballot: Ballot) {
        if self.own_ballot().is_some_and(|own| own < ballot) {
            self.become_follower(ctx, "a higher ballot leads");
        }
        if self.own_ballot() == Some(ballot) {
            return;
        }
        self.leader = Some(ballot);
        self.leader_contact = Some(ctx.now());
        self.reset_leader_timer(ctx);
    }

    // ---- Phase 1 ----

    fn start_phase1(&mut self, ctx: &mut Ctx<'_, Self>) {
        let me = ctx.id();
        if matches!(self.role, Role::Leading(_)) {
            return;
        }
        let ballot = Ballot {
            round: self.max_round + 1,
            node: me.0,
        };
        self.max_round = ballot.round;
        let from = self.applied() + 1;
        let durable_promise = !self.bugs.promise_not_persisted;
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let granted = ballot >= d.acceptor.promised();
        if granted && let Err(e) = d.acceptor.promise(ballot, durable_promise) {
            return self.fail_stop(ctx, "persist own promise", e);
        }
        let own = granted.then(|| {
            (
                d.acceptor.base(),
                d.acceptor
                    .accepted_from(from)
                    .map(|(s, (b, v))| (s, *b, v.clone()))
                    .collect::<Vec<_>>(),
            )
        });
        if !self.sync(ctx) {
            return;
        }
        ctx.observe(Observation::Phase1Started { ballot });
        if granted {
            ctx.observe(Observation::Promised { ballot });
        }
        let mut promises = BTreeMap::new();
        if self.bugs.stale_promise_counted
            && let Role::Preparing(old) = &mut self.role
        {
            // The defect: the promises gathered for the older ballot still count.
            promises.append(&mut old.promises);
        }
        if let Some(own) = own {
            promises.insert(me, own);
        }
        self.role = Role::Preparing(Box::new(Preparing {
            ballot,
            from,
            promises,
        }));
        self.leader = None;
        self.reset_leader_timer(ctx);
        self.tick_generation += 1;
        self.set_tick(ctx);
        ctx.broadcast(Msg::Prepare { ballot, from });
        self.maybe_lead(ctx);
    }

    fn on_prepare(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from_node: NodeId,
        ballot: Ballot,
        from: Slot,
    ) {
        self.saw(ballot);
        if self.sticky(ctx.now()) && self.own_ballot() != Some(ballot) {
            return;
        }
        let promised = self.promised();
        if ballot < promised {
            ctx.send(from_node, Msg::Nack { ballot, promised });
            return;
        }
        if self.own_ballot().is_some_and(|own| own < ballot) {
            self.become_follower(ctx, "promised a higher ballot");
        }
        let durable_promise = !self.bugs.promise_not_persisted;
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        if let Err(e) = d.acceptor.promise(ballot, durable_promise) {
            return self.fail_stop(ctx, "persist promise", e);
        }
        let base = d.acceptor.base();
        let accepted: Vec<(Slot, Ballot, Value)> = d
            .acceptor
            .accepted_from(from.max(base + 1))
            .map(|(s, (b, v))| (s, *b, v.clone()))
            .collect();
        if !self.sync(ctx) {
            return;
        }
        ctx.observe(Observation::Promised { ballot });
        ctx.send(
            from_node,
            Msg::Promise {
                ballot,
                base,
                accepted,
            },
        );
    }

    fn on_promise(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        ballot: Ballot,
        base: Slot,
        accepted: Vec<(Slot, Ballot, Value)>,
    ) {
        let stale_counts = self.bugs.stale_promise_counted;
        if let Role::Preparing(p) = &mut self.role
            && (ballot == p.ballot || (stale_counts && ballot < p.ballot))
        {
            p.promises.insert(from, (base, accepted));
            self.maybe_lead(ctx);
        }
    }

    fn on_nack(&mut self, ctx: &mut Ctx<'_, Self>, ballot: Ballot, promised: Ballot) {
        self.saw(promised);
        if self.own_ballot() == Some(ballot) && promised > ballot {
            self.become_follower(ctx, "an acceptor promised a higher ballot");
        }
    }

    /// Phase 1 done once a majority promised: recover every slot the promises report,
    /// then lead.
    fn maybe_lead(&mut self, ctx: &mut Ctx<'_, Self>) {
        let me = ctx.id();
        let quorum = Self::quorum(ctx);
        let now = ctx.now();
        let n = ctx.node_count();
        let ignore_accepted = self.bugs.ignore_accepted_value;
        if !matches!(&self.role, Role::Preparing(p) if p.promises.len() >= quorum) {
            return;
        }
        let Role::Preparing(p) = std::mem::replace(&mut self.role, Role::Follower) else {
            return;
        };
        let ballot = p.ballot;
        let applied = self.applied();
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        // The highest base any promise reports: everything up to it is decided.
        let (base_holder, max_base) = p
            .promises
            .iter()
            .map(|(node, (base, _))| (*node, *base))
            .max_by_key(|&(node, base)| (base, std::cmp::Reverse(node)))
            .unwrap_or((me, 0));
        // Per slot, the value accepted at the highest ballot.
        let mut recovered: BTreeMap<Slot, (Ballot, Value)> = BTreeMap::new();
        for (_, accepted) in p.promises.values() {
            for (slot, b, value) in accepted {
                if *slot <= max_base {
                    continue;
                }
                if recovered.get(slot).is_none_or(|(best, _)| b > best) {
                    recovered.insert(*slot, (*b, value.clone()));
                }
            }
        }
        if !recovered.is_empty() {
            ctx.sometimes("paxos.accepted_value_recovered");
        }
        let last = recovered
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(max_base)
            .max(applied);
        let first = applied.max(max_base) + 1;
        let mut proposals = BTreeMap::new();
        for slot in first..=last {
            let value = if let Some(v) = self.decided.get(&slot) {
                v.clone()
            } else if ignore_accepted {
                // The defect: the new leader's own accepted value (or a no-op) wins over
                // the highest-ballot one the promises reported.
                d.acceptor
                    .accepted(slot)
                    .map_or(Value::Noop, |(_, v)| v.clone())
            } else {
                recovered.remove(&slot).map_or(Value::Noop, |(_, v)| v)
            };
            if let Err(e) = d.acceptor.accept(slot, ballot, &value, true) {
                return self.fail_stop(ctx, "accept own proposal", e);
            }
            proposals.insert(
                slot,
                Proposal {
                    value,
                    accepts: BTreeSet::from([me]),
                    sent: now,
                },
            );
        }
        self.role = Role::Leading(Box::new(Leading {
            ballot,
            next_slot: last + 1,
            recovered: last,
            proposals,
            pending: Vec::new(),
            round: 0,
            acked: vec![0; n],
            round_sent: BTreeMap::new(),
            last_heard: vec![None; n],
            since: now,
            lease_until: None,
            catch_up_from: base_holder,
            peer_applied: vec![0; n],
        }));
        self.leader = Some(ballot);
        if !self.sync(ctx) {
            return;
        }
        ctx.observe(Observation::BecameLeader {
            ballot,
            recovered: last,
        });
        for slot in first..=last {
            ctx.observe(Observation::Accepted { slot, ballot });
        }
        if max_base > applied && base_holder != me {
            ctx.send(base_holder, Msg::CatchUp { from: applied + 1 });
            self.catch_up_sent = Some(now);
        }
        let commit = self.applied();
        if let Role::Leading(l) = &self.role {
            for (&slot, p) in &l.proposals {
                ctx.observe(Observation::Proposed {
                    slot,
                    ballot,
                    digest: digest(&p.value),
                });
                ctx.broadcast(Msg::Accept {
                    ballot,
                    slot,
                    value: p.value.clone(),
                    commit,
                });
            }
        }
        self.tick_generation += 1;
        self.send_heartbeats(ctx);
        if quorum == 1 {
            let slots: Vec<Slot> = match &self.role {
                Role::Leading(l) => l.proposals.keys().copied().collect(),
                _ => Vec::new(),
            };
            for slot in slots {
                self.on_accepted(ctx, me, ballot, slot);
            }
        }
    }

    // ---- Phase 2 ----

    /// Puts waiting client requests into fresh slots while few enough are in flight.
    fn flush_pending(&mut self, ctx: &mut Ctx<'_, Self>) {
        let me = ctx.id();
        let quorum = Self::quorum(ctx);
        let (max_batch, max_in_flight) = (self.config().max_batch, self.config().max_in_flight);
        let now = ctx.now();
        let commit = self.applied();
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        let mut fresh = Vec::new();
        while !l.pending.is_empty() && l.proposals.len() < max_in_flight {
            let take = l.pending.len().min(max_batch);
            let value = Value::Batch(l.pending.drain(..take).collect());
            let slot = l.next_slot;
            l.next_slot += 1;
            if let Err(e) = d.acceptor.accept(slot, l.ballot, &value, true) {
                return self.fail_stop(ctx, "accept own proposal", e);
            }
            fresh.push((slot, value.clone()));
            l.proposals.insert(
                slot,
                Proposal {
                    value,
                    accepts: BTreeSet::from([me]),
                    sent: now,
                },
            );
        }
        if fresh.is_empty() {
            return;
        }
        let ballot = l.ballot;
        if !self.sync(ctx) {
            return;
        }
        for (slot, value) in fresh {
            ctx.observe(Observation::Accepted { slot, ballot });
            ctx.observe(Observation::Proposed {
                slot,
                ballot,
                digest: digest(&value),
            });
            if quorum == 1 {
                self.on_accepted(ctx, me, ballot, slot);
            } else {
                ctx.broadcast(Msg::Accept {
                    ballot,
                    slot,
                    value,
                    commit,
                });
            }
        }
    }

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        ballot: Ballot,
        slot: Slot,
        value: Value,
        commit: Slot,
    ) {
        self.saw(ballot);
        let floor = self.floor();
        if ballot < floor {
            ctx.send(
                from,
                Msg::Nack {
                    ballot,
                    promised: floor,
                },
            );
            return;
        }
        self.follow(ctx, ballot);
        let raise = !self.bugs.accept_without_raising_promise;
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        if slot <= d.acceptor.base() {
            // Decided, applied and compacted here: whatever this leader proposes in it is
            // the decided value (it ran phase 1 over the slot), so it may count this
            // acceptor; the acceptor has nothing left to record.
            ctx.send(from, Msg::Accepted { ballot, slot });
            return self.learn(ctx, ballot, commit);
        }
        if d.acceptor.accepted(slot).is_some_and(|(b, _)| *b == ballot) {
            // A retransmission: already durable.
            ctx.send(from, Msg::Accepted { ballot, slot });
            return self.learn(ctx, ballot, commit);
        }
        if let Err(e) = d.acceptor.accept(slot, ballot, &value, raise) {
            return self.fail_stop(ctx, "persist accepted value", e);
        }
        if !self.sync(ctx) {
            return;
        }
        ctx.observe(Observation::Accepted { slot, ballot });
        ctx.send(from, Msg::Accepted { ballot, slot });
        self.learn(ctx, ballot, commit);
    }

    fn on_accepted(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, ballot: Ballot, slot: Slot) {
        let quorum = Self::quorum(ctx);
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        let Some(p) = l.proposals.get_mut(&slot) else {
            return;
        };
        p.accepts.insert(from);
        if p.accepts.len() < quorum {
            return;
        }
        if let Some(p) = l.proposals.remove(&slot) {
            self.decided.insert(slot, p.value);
        }
        self.apply_decided(ctx);
        self.flush_pending(ctx);
    }

    // ---- Learning ----

    /// A follower learns every slot up to the leader's `commit` that it accepted at the
    /// leader's ballot (the leader proposes one value per slot per ballot); it fetches
    /// the rest.
    fn learn(&mut self, ctx: &mut Ctx<'_, Self>, ballot: Ballot, commit: Slot) {
        self.commit = self.commit.max(commit);
        let applied = self.applied();
        let Some(d) = self.durable.as_ref() else {
            return;
        };
        for slot in applied + 1..=commit {
            if self.decided.contains_key(&slot) {
                continue;
            }
            if let Some((b, v)) = d.acceptor.accepted(slot)
                && *b == ballot
            {
                self.decided.insert(slot, v.clone());
            }
        }
        self.apply_decided(ctx);
        if self.applied() < commit {
            self.request_catch_up(ctx, ballot.leader());
        }
    }

    fn request_catch_up(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId) {
        let now = ctx.now();
        if from == ctx.id()
            || self
                .catch_up_sent
                .is_some_and(|t| now < t + self.config().heartbeat_interval)
        {
            return;
        }
        self.catch_up_sent = Some(now);
        ctx.send(
            from,
            Msg::CatchUp {
                from: self.applied() + 1,
            },
        );
    }

    fn on_catch_up(&mut self, ctx: &mut Ctx<'_, Self>, to: NodeId, from: Slot) {
        let applied = self.applied();
        if from > applied {
            return;
        }
        let last = applied.min(from + 63);
        if (from..=last).all(|s| self.decided.contains_key(&s)) {
            let entries = (from..=last)
                .filter_map(|s| self.decided.get(&s).map(|v| (s, v.clone())))
                .collect();
            ctx.send(to, Msg::Decided { entries });
            return;
        }
        let Some(d) = self.durable.as_ref() else {
            return;
        };
        match d.sm.snapshot() {
            Ok(snapshot) => ctx.send(to, Msg::Snapshot { snapshot }),
            Err(e) => self.fail_stop(ctx, "read snapshot", e),
        }
    }

    fn on_decided(&mut self, ctx: &mut Ctx<'_, Self>, entries: Vec<(Slot, Value)>) {
        let applied = self.applied();
        for (slot, value) in entries {
            if slot > applied {
                self.decided.entry(slot).or_insert(value);
            }
        }
        self.commit = self
            .commit
            .max(self.decided.keys().next_back().copied().unwrap_or(0));
        self.apply_decided(ctx);
    }

    fn on_snapshot(&mut self, ctx: &mut Ctx<'_, Self>, snapshot: Snapshot) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        if snapshot.index <= d.sm.applied() {
            return;
        }
        ctx.sometimes("paxos.snapshot_installed");
        if let Err(e) = d.sm.install(&snapshot) {
            return self.fail_stop(ctx, "install snapshot", e);
        }
        if let Err(e) = d.acceptor.set_base(snapshot.index) {
            return self.fail_stop(ctx, "compact after snapshot", e);
        }
        ctx.observe(Observation::SnapshotInstalled {
            slot: snapshot.index,
        });
        self.decided = self.decided.split_off(&(snapshot.index + 1));
        self.commit = self.commit.max(snapshot.index);
        self.apply_decided(ctx);
    }

    /// Applies decided slots in order, answers this node's clients, retains recent
    /// values, and compacts.
    fn apply_decided(&mut self, ctx: &mut Ctx<'_, Self>) {
        let me = ctx.id();
        let retained = self.config().retained();
        let threshold = self.config().snapshot_threshold;
        loop {
            let Some(d) = self.durable.as_mut() else {
                return;
            };
            let slot = d.sm.applied() + 1;
            let Some(value) = self.decided.get(&slot) else {
                break;
            };
            let requests: Vec<(OpId, &KvOp)> = match value {
                Value::Noop => Vec::new(),
                Value::Batch(rs) => rs.iter().map(|r| (r.op, &r.request)).collect(),
            };
            let results = match d.sm.apply_batch(slot, 0, &requests) {
                Ok(results) => results,
                Err(e) => return self.fail_stop(ctx, "apply", e),
            };
            let mut effective = Vec::new();
            if let Value::Batch(rs) = value {
                for (r, (result, fresh)) in rs.iter().zip(results) {
                    if fresh {
                        effective.push(r.op);
                    }
                    if r.origin == me && self.awaiting.remove(&r.op).is_some() {
                        ctx.reply_ok(r.op, result);
                    }
                }
            }
            ctx.observe(Observation::Applied {
                slot,
                digest: digest(value),
                effective,
            });
        }
        let applied = self.applied();
        self.commit = self.commit.max(applied);
        if applied > retained {
            self.decided = self.decided.split_off(&(applied - retained + 1));
        }
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        if threshold > 0 && applied >= d.acceptor.base() + threshold {
            if let Err(e) = d.sm.sync() {
                return self.fail_stop(ctx, "sync state machine", e);
            }
            if let Err(e) = d.acceptor.set_base(applied) {
                return self.fail_stop(ctx, "compact", e);
            }
            ctx.observe(Observation::Compacted { slot: applied });
        }
    }

    // ---- Leader upkeep ----

    fn send_heartbeats(&mut self, ctx: &mut Ctx<'_, Self>) {
        let now = ctx.now();
        let me = ctx.id();
        let quorum = Self::quorum(ctx);
        let window = self.config().leader_timeout_max;
        let commit = self.applied();
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        // Step down without a majority's replies for a whole leader timeout, so that
        // clients go elsewhere and a cut-off leader stops proposing.
        if now >= l.since + window {
            let heard = 1 + l
                .last_heard
                .iter()
                .enumerate()
                .filter(|&(i, t)| i != me.index() && t.is_some_and(|t| now < t + window))
                .count();
            if heard < quorum {
                return self.become_follower(ctx, "no majority heard within the leader timeout");
            }
        }
        // Fetch missing slots from the peer furthest ahead (its heartbeat replies say), or
        // else from the promiser with the highest base.
        let ahead = (0..l.peer_applied.len())
            .filter(|&i| i != me.index() && l.peer_applied[i] > commit)
            .max_by_key(|&i| (l.peer_applied[i], std::cmp::Reverse(i)))
            .map(|i| NodeId(i as u32));
        let behind = ahead.or((l.catch_up_from != me).then_some(l.catch_up_from));
        l.round += 1;
        l.acked[me.index()] = l.round;
        l.round_sent.insert(l.round, now);
        let ballot = l.ballot;
        ctx.broadcast(Msg::Heartbeat {
            ballot,
            commit,
            round: l.round,
        });
        // Retransmit undecided proposals to the acceptors that have not accepted them.
        let peers: Vec<NodeId> = ctx.peers().collect();
        let interval = self.settings.config.heartbeat_interval;
        for (&slot, p) in &mut l.proposals {
            if now < p.sent + interval {
                continue;
            }
            p.sent = now;
            for &peer in &peers {
                if !p.accepts.contains(&peer) {
                    ctx.send(
                        peer,
                        Msg::Accept {
                            ballot,
                            slot,
                            value: p.value.clone(),
                            commit,
                        },
                    );
                }
            }
        }
        // A leader that recovered slots decided at a base above its own state fetches
        // them until it has them.
        let gap = l.recovered > commit && !self.decided.contains_key(&(commit + 1));
        if let Some(holder) = behind
            && gap
        {
            self.request_catch_up(ctx, holder);
        }
        self.set_tick(ctx);
    }

    fn on_heartbeat(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        ballot: Ballot,
        commit: Slot,
        round: u64,
    ) {
        self.saw(ballot);
        let floor = self.floor();
        if ballot < floor {
            ctx.send(
                from,
                Msg::Nack {
                    ballot,
                    promised: floor,
                },
            );
            return;
        }
        self.follow(ctx, ballot);
        ctx.send(
            from,
            Msg::HeartbeatOk {
                ballot,
                round,
                applied: self.applied(),
            },
        );
        self.learn(ctx, ballot, commit);
    }

    fn on_heartbeat_ok(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        ballot: Ballot,
        round: u64,
        applied: Slot,
    ) {
        let now = ctx.now();
        let quorum = Self::quorum(ctx);
        let duration = self.config().lease_duration();
        let lease = self.config().reads == ReadMode::Lease;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        l.acked[from.index()] = l.acked[from.index()].max(round);
        l.last_heard[from.index()] = Some(now);
        l.peer_applied[from.index()] = applied;
        if !lease {
            return;
        }
        // The highest round a majority acknowledged.
        let mut acked = l.acked.clone();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acked[quorum - 1];
        if let Some(&sent) = l.round_sent.get(&confirmed) {
            let until = sent + duration;
            if l.lease_until.is_none_or(|u| u < until) {
                l.lease_until = Some(until);
            }
        }
        while l
            .round_sent
            .first_key_value()
            .is_some_and(|(&r, _)| r < confirmed)
        {
            l.round_sent.pop_first();
        }
    }

    // ---- Clients ----

    fn on_forward(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, op: OpId, request: KvOp) {
        if request.is_read_only() && self.lease_read(ctx.now()) {
            let Some(d) = self.durable.as_ref() else {
                return;
            };
            match d.sm.read(&request) {
                Ok(result) => ctx.send(from, Msg::ReadOk { op, result }),
                Err(e) => self.fail_stop(ctx, "read", e),
            }
            return;
        }
        match &mut self.role {
            Role::Leading(l) => {
                if !l.pending.iter().any(|r| r.op == op) {
                    l.pending.push(Request {
                        origin: from,
                        op,
                        request,
                    });
                }
                self.flush_pending(ctx);
            }
            _ => ctx.send(
                from,
                Msg::Refused {
                    op,
                    reason: "not the leader".into(),
                },
            ),
        }
    }

    fn on_refused(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, reason: String) {
        if let Some(read_only) = self.awaiting.remove(&op) {
            if read_only {
                ctx.reply_fail(op, reason);
            } else {
                // A duplicate of the forward may still reach a leader and be proposed.
                ctx.reply_info(op, reason);
            }
        }
    }

    /// A leader may answer a read from its state machine: with a valid lease, once it
    /// has applied every slot it recovered in phase 1 (so every write any client saw
    /// completed is in its state).
    fn lease_read(&self, now: SimTime) -> bool {
        match &self.role {
            Role::Leading(l) => {
                self.config().reads == ReadMode::Lease
                    && l.lease_until.is_some_and(|u| now < u)
                    && self.applied() >= l.recovered
            }
            _ => false,
        }
    }
}

impl Process for Node {
    type Msg = Msg;
    type Timer = Timer;
    type Op = KvOp;
    type Reply = KvResult;
    type Obs = Observation;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        let disk = ctx.disk();
        let nonce = ctx.rng().next_u64();
        let acceptor =
            match AcceptorLog::open(disk.clone(), ACCEPTOR_DIR, nonce, self.settings.engine_bugs) {
                Ok(a) => a,
                Err(e) => return self.fail_stop(ctx, "recover acceptor", e),
            };
        let sm = match StateMachine::open(self.settings.engine.as_ref(), disk, STATE_DIR) {
            Ok(sm) => sm,
            Err(e) => return self.fail_stop(ctx, "recover state machine", e),
        };
        if sm.applied() < acceptor.base() {
            return self.fail_stop(
                ctx,
                "recover",
                format!(
                    "the state machine is at slot {}, behind the acceptor's base {}",
                    sm.applied(),
                    acceptor.base()
                ),
            );
        }
        // Every ballot this node ever used it promised durably first: the next one goes
        // above that promise.
        self.max_round = if self.bugs.ballot_reuse_after_restart {
            0
        } else {
            acceptor.promised().round
        };
        self.commit = sm.applied();
        if sm.applied() > 0 {
            ctx.observe(Observation::Recovered {
                applied: sm.applied(),
            });
        }
        self.durable = Some(Durable { acceptor, sm });
        if self.config().reads == ReadMode::Lease {
            // It may have acknowledged a leader's heartbeat just before it crashed: it
            // honours that leader's lease as if it had just heard from it.
            self.leader_contact = Some(ctx.now());
        }
        self.reset_leader_timer(ctx);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        if self.durable.is_none() {
            return;
        }
        match msg {
            Msg::Prepare { ballot, from: slot } => self.on_prepare(ctx, from, ballot, slot),
            Msg::Promise {
                ballot,
                base,
                accepted,
            } => self.on_promise(ctx, from, ballot, base, accepted),
            Msg::Nack { ballot, promised } => self.on_nack(ctx, ballot, promised),
            Msg::Accept {
                ballot,
                slot,
                value,
                commit,
            } => self.on_accept(ctx, from, ballot, slot, value, commit),
            Msg::Accepted { ballot, slot } => self.on_accepted(ctx, from, ballot, slot),
            Msg::Heartbeat {
                ballot,
                commit,
                round,
            } => self.on_heartbeat(ctx, from, ballot, commit, round),
            Msg::HeartbeatOk {
                ballot,
                round,
                applied,
            } => self.on_heartbeat_ok(ctx, from, ballot, round, applied),
            Msg::CatchUp { from: slot } => self.on_catch_up(ctx, from, slot),
            Msg::Decided { entries } => self.on_decided(ctx, entries),
            Msg::Snapshot { snapshot } => self.on_snapshot(ctx, snapshot),
            Msg::Forward { op, request } => self.on_forward(ctx, from, op, request),
            Msg::Refused { op, reason } => self.on_refused(ctx, op, reason),
            Msg::ReadOk { op, result } => {
                if self.awaiting.remove(&op).is_some() {
                    ctx.reply_ok(op, result);
                }
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _id: TimerId, timer: Timer) {
        if self.durable.is_none() {
            return;
        }
        match timer {
            Timer::LeaderTimeout { generation } => {
                if generation == self.leader_generation && !matches!(self.role, Role::Leading(_)) {
                    self.start_phase1(ctx);
                }
            }
            Timer::Tick { generation } if generation == self.tick_generation => match &self.role {
                Role::Leading(_) => self.send_heartbeats(ctx),
                Role::Preparing(p) => {
                    let (ballot, from) = (p.ballot, p.from);
                    let silent: Vec<NodeId> = ctx
                        .peers()
                        .filter(|n| !p.promises.contains_key(n))
                        .collect();
                    for peer in silent {
                        ctx.send(peer, Msg::Prepare { ballot, from });
                    }
                    self.set_tick(ctx);
                }
                Role::Follower => {}
            },
            Timer::Tick { .. } => {}
        }
    }

    fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leading(_))
    }

    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, request: KvOp) {
        let me = ctx.id();
        let now = ctx.now();
        let Some(d) = self.durable.as_ref() else {
            return ctx.reply_fail(op, "node unavailable");
        };
        let read_only = request.is_read_only();
        if read_only
            && matches!(self.role, Role::Leading(_))
            && (self.bugs.leader_local_read_no_lease || self.lease_read(now))
        {
            match d.sm.read(&request) {
                Ok(result) => ctx.reply_ok(op, result),
                Err(e) => ctx.reply_info(op, e.to_string()),
            }
            return;
        }
        match &mut self.role {
            Role::Leading(l) => {
                self.awaiting.insert(op, read_only);
                l.pending.push(Request {
                    origin: me,
                    op,
                    request,
                });
                self.flush_pending(ctx);
            }
            _ => match self.leader {
                Some(b) if b.leader() != me => {
                    self.awaiting.insert(op, read_only);
                    ctx.send(b.leader(), Msg::Forward { op, request });
                }
                _ => ctx.reply_fail(op, "no leader known"),
            },
        }
    }
}

/// Multi-Paxos's coverage points (sometimes-assertions), for `faultline explore`.
pub const COVERAGE: &[sim_core::coverage::Point] = &[
    sim_core::coverage::Point {
        name: "paxos.leader_stepped_down",
        description: "a leader saw a higher ballot and stopped leading",
    },
    sim_core::coverage::Point {
        name: "paxos.accepted_value_recovered",
        description: "a new leader's phase 1 found values accepted under an earlier ballot and re-proposed them",
    },
    sim_core::coverage::Point {
        name: "paxos.snapshot_installed",
        description: "a lagging replica installed a snapshot from a peer",
    },
    sim_core::coverage::Point {
        name: "paxos.fail_stop",
        description: "a node stopped on a storage error",
    },
];
