//! Raft (Ongaro & Ousterhout, 2014; Ongaro's thesis, 2014) on the simulator: leader
//! election with randomised timeouts, log replication with fast conflict backtracking,
//! commitment only by counting replicas of current-term entries (§5.4.2), and a
//! key-value state machine on a `KvEngine`.
//!
//! **Durability.** Term, vote and log live in a WAL on the node's disk ([`log`]); every
//! handler that changes them syncs the WAL before it sends a message that depends on the
//! change (a vote, an append acknowledgement, a leader's own match index). The state
//! machine lives in a `KvEngine` ([`state_machine`]) with its applied index written in
//! the same batch as the data, so after a crash it is consistent and catches up by
//! re-applying committed entries from the log.
//!
//! **Clients.** Any node accepts a request: a leader proposes it, a follower forwards it
//! to the leader it knows (or fails it if it knows none). The node that received the
//! request answers it when it applies the entry, so the answer is always the state
//! machine's result at the entry's position in the log. Reads go through the log too.

pub mod checker;
pub mod log;
mod reads;
pub mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use sim_core::linearizability::model::{KvOp, KvResult};
use sim_core::{Ctx, NodeId, OpId, Process, SimDuration, SimTime, TimerId};
use storage::kv::EngineOpener;

use self::log::{Command, DurableLog, Entry, Index, Term};
use self::state_machine::{Snapshot, StateMachine};
use crate::common::{BugFlag, BugFlagError, unknown};

/// Where a node keeps its log and its state machine on its disk.
const LOG_DIR: &str = "raft/log";
const STATE_DIR: &str = "raft/state";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// A pre-vote (§9.6): would the receiver vote for the sender in `term` (one above the
    /// sender's current term)? Nothing is persisted and no term changes.
    PreVote {
        term: Term,
        last_index: Index,
        last_term: Term,
    },
    PreVoteReply {
        /// The term the pre-vote was for, and the receiver's current term.
        proposed: Term,
        term: Term,
        granted: bool,
    },
    RequestVote {
        term: Term,
        last_index: Index,
        last_term: Term,
        /// Sent on a leadership transfer (`TimeoutNow`): voters do not ignore it for
        /// having heard from the leader recently.
        transfer: bool,
    },
    Vote {
        term: Term,
        granted: bool,
    },
    AppendEntries {
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        /// The leader's heartbeat round, echoed in the reply (ReadIndex, leases).
        round: u64,
    },
    AppendReply {
        term: Term,
        /// On success, the index up to which the follower's log matches the leader's.
        success: bool,
        match_index: Index,
        /// On failure: the follower's term at `prev_index` (if it has an entry there) and
        /// the first index of that term's run, or its log length + 1 (fast backtracking).
        conflict_term: Option<Term>,
        conflict_index: Index,
        round: u64,
    },
    /// The leader's state machine, for a follower that needs entries the leader has
    /// compacted away (§7). Answered with an `AppendReply`.
    InstallSnapshot {
        term: Term,
        snapshot: Snapshot,
        round: u64,
    },
    /// A client request received by a follower, for the leader to propose.
    Forward {
        op: OpId,
        request: KvOp,
    },
    /// The node forwarded to could not take the request (it is not the leader). The
    /// origin answers a write `info`, not `fail`: a duplicate of the forward may still
    /// arrive at a node that has since become leader. A read is answered `fail`.
    Refused {
        op: OpId,
        reason: String,
    },
    /// A follower asks the leader for a read index for its client's read (§6.4).
    ReadIndex {
        op: OpId,
    },
    /// The leader confirmed its leadership after the request: the follower may answer
    /// the read once it has applied `index`.
    ReadIndexOk {
        op: OpId,
        index: Index,
    },
    /// Leadership transfer (§3.10): the receiver, now as up to date as the leader,
    /// starts an election at once.
    TimeoutNow {
        term: Term,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// Start an election (or a pre-vote) unless this generation was superseded.
    Election { generation: u64 },
    /// Leader: send heartbeats (and any entries a follower lacks), check the quorum.
    /// Candidate: ask the nodes that have not answered for their (pre-)votes again.
    Heartbeat { generation: u64 },
    /// With `raft.ack_before_fsync`: the deferred WAL sync.
    Flush,
    /// Leader: hand leadership to the most up-to-date follower (`transfer_interval`).
    Transfer { generation: u64 },
}

/// What the checkers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// This node became leader of `term`, with this log: everything up to `base` (index,
    /// term) compacted into its state machine, then runs of equal terms
    /// `(term, first index, last index)`.
    BecameLeader {
        term: Term,
        base: (Index, Term),
        log: Vec<(Term, Index, Index)>,
    },
    /// This node applied the entry at `index` (of `term`, whose command hashes to
    /// `digest`) to its state machine.
    Applied {
        index: Index,
        term: Term,
        digest: u64,
    },
    /// This node's state machine was replaced by the leader's snapshot, which ends at
    /// `index` (an entry of `term`).
    SnapshotInstalled { index: Index, term: Term },
    /// This node compacted its log up to `index` (an entry of `term`).
    Compacted { index: Index, term: Term },
    /// This leader gave up leadership of `term` without seeing a higher term.
    SteppedDown { term: Term, reason: String },
    /// A storage failure stopped this incarnation (it takes no further part).
    Stopped { what: String, error: String },
}

/// Raft's timing and batching parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// A follower or candidate starts an election after a random timeout in
    /// `[election_timeout_min, election_timeout_max]` without hearing from a leader.
    pub election_timeout_min: SimDuration,
    pub election_timeout_max: SimDuration,
    pub heartbeat_interval: SimDuration,
    /// At most this many entries per AppendEntries message.
    pub max_entries_per_message: usize,
}

impl Default for Timing {
    /// The reference's 150–300 ms election timeout, 50 ms heartbeats.
    fn default() -> Self {
        Timing {
            election_timeout_min: SimDuration::from_millis(150),
            election_timeout_max: SimDuration::from_millis(300),
            heartbeat_interval: SimDuration::from_millis(50),
            max_entries_per_message: 64,
        }
    }
}

impl Timing {
    pub fn validate(&self) -> Result<(), String> {
        if self.election_timeout_min > self.election_timeout_max {
            return Err("election_timeout min is greater than max".into());
        }
        if self.heartbeat_interval == SimDuration::ZERO {
            return Err("heartbeat_interval must be positive".into());
        }
        if self.heartbeat_interval >= self.election_timeout_min {
            return Err(
                "heartbeat_interval must be shorter than the minimum election timeout".into(),
            );
        }
        if self.max_entries_per_message == 0 {
            return Err("max_entries_per_message must be at least 1".into());
        }
        Ok(())
    }
}

/// How a leader answers read-only requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Through the log, like writes.
    Log,
    /// ReadIndex (§6.4): the commit index, confirmed by a round of heartbeats acknowledged
    /// by a majority after the read arrived; then answered from the state machine.
    #[default]
    ReadIndex,
    /// A leader lease (§6.4.1): within a lease, answered without a round. The lease is
    /// the minimum election timeout shrunk by the clock-drift bound, counted from the
    /// sending of a round a majority acknowledged; voters ignore vote requests while they
    /// have heard from a leader within the minimum election timeout.
    Lease,
}

impl std::str::FromStr for ReadMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "log" => Ok(ReadMode::Log),
            "read_index" => Ok(ReadMode::ReadIndex),
            "lease" => Ok(ReadMode::Lease),
            other => Err(format!(
                "unknown read mode `{other}`; expected one of: log, read_index, lease"
            )),
        }
    }
}

/// Raft's optional mechanisms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// Pre-vote (§9.6): a node asks whether it could win before it raises its term.
    pub pre_vote: bool,
    /// CheckQuorum (§6.2): a leader that has not heard from a majority within an election
    /// timeout steps down; voters ignore vote requests while they hear from a leader.
    pub check_quorum: bool,
    pub reads: ReadMode,
    /// Compact the log once this many applied entries follow its base (0: never).
    pub snapshot_threshold: u64,
    /// A leader hands leadership to its most up-to-date follower this often.
    pub transfer_interval: Option<SimDuration>,
    /// The scenario's bound on clock drift, in parts per million (for the lease).
    pub max_drift_ppm: u32,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            pre_vote: true,
            check_quorum: true,
            reads: ReadMode::ReadIndex,
            snapshot_threshold: 100,
            transfer_interval: None,
            max_drift_ppm: 0,
        }
    }
}

/// Protocol settings.
#[derive(Clone)]
pub struct Settings {
    pub timing: Timing,
    pub features: Features,
    /// The engine that holds the state machine.
    pub engine: Arc<dyn EngineOpener>,
    /// Engine defects switched on for the node's own log (`wal.*` flags).
    pub engine_bugs: storage::bugs::EngineBugs,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("timing", &self.timing)
            .field("features", &self.features)
            .field("engine", &self.engine.name())
            .finish()
    }
}

impl Settings {
    /// How long a lease lasts on the leader's clock: the minimum election timeout times
    /// (1 − ρ)/(1 + ρ) for the drift bound ρ. A voter ignores vote requests for the
    /// minimum election timeout on its own clock after hearing from the leader: at least
    /// `min/(1 + ρ)` in true time. A lease of `D` on the leader's clock lasts at most
    /// `D/(1 − ρ)` in true time; `D = min·(1 − ρ)/(1 + ρ)` keeps it inside.
    pub fn lease_duration(&self) -> SimDuration {
        let ppm = u64::from(self.features.max_drift_ppm.min(999_999));
        let min = self.timing.election_timeout_min.as_micros();
        SimDuration::from_micros(min * (1_000_000 - ppm) / (1_000_000 + ppm))
    }
}

pub const BUG_FLAGS: &[BugFlag] = &[
    BugFlag {
        name: "raft.commit_prior_term_by_count",
        description: "a leader commits an entry of an earlier term by counting replicas (the Figure 8 error)",
    },
    BugFlag {
        name: "raft.vote_not_persisted",
        description: "grant a vote without making it durable, so a restarted node can vote twice in a term",
    },
    BugFlag {
        name: "raft.ack_before_fsync",
        description: "acknowledge appended entries before they are durable (the sync is deferred to a timer)",
    },
    BugFlag {
        name: "raft.local_read_without_quorum",
        description: "a leader serves reads from its local state without confirming it is still leader",
    },
    BugFlag {
        name: "raft.truncate_without_term_check",
        description: "a follower appends after prev_index without checking the term there matches",
    },
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub commit_prior_term_by_count: bool,
    pub vote_not_persisted: bool,
    pub ack_before_fsync: bool,
    pub local_read_without_quorum: bool,
    pub truncate_without_term_check: bool,
}

impl Bugs {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, BugFlagError> {
        let mut bugs = Bugs::default();
        for name in names {
            match name {
                "raft.commit_prior_term_by_count" => bugs.commit_prior_term_by_count = true,
                "raft.vote_not_persisted" => bugs.vote_not_persisted = true,
                "raft.ack_before_fsync" => bugs.ack_before_fsync = true,
                "raft.local_read_without_quorum" => bugs.local_read_without_quorum = true,
                "raft.truncate_without_term_check" => bugs.truncate_without_term_check = true,
                _ => return Err(unknown(name, BUG_FLAGS)),
            }
        }
        Ok(bugs)
    }
}

#[derive(Debug)]
enum Role {
    Follower,
    PreCandidate { votes: BTreeSet<NodeId> },
    Candidate { votes: BTreeSet<NodeId> },
    Leader(Box<Leadership>),
}

/// A leader's volatile state.
#[derive(Debug)]
struct Leadership {
    /// Per node: the next index to send, and the highest index known to match.
    next: Vec<Index>,
    matched: Vec<Index>,
    /// The heartbeat round, raised by every broadcast; replies echo it.
    round: u64,
    /// Per node: the highest round it acknowledged in this term.
    acked: Vec<u64>,
    /// Local send time of recent rounds (for the lease).
    round_sent: BTreeMap<u64, SimTime>,
    /// Per node: local time of its latest reply in this term (CheckQuorum).
    last_heard: Vec<Option<SimTime>>,
    /// Local time this node became leader.
    since: SimTime,
    /// Reads waiting for a confirmation or for the state machine.
    reads: Vec<PendingRead>,
    /// Reads may be answered without a round until this local time.
    lease_until: Option<SimTime>,
    /// A `TimeoutNow` was sent in this term: voters may ignore their stickiness for the
    /// transfer's election, so no lease for the rest of the term.
    lease_revoked: bool,
    transfer: Option<Transfer>,
    /// Per node: when a snapshot was last sent to it.
    snapshot_sent: Vec<Option<SimTime>>,
}

#[derive(Debug)]
struct PendingRead {
    /// The node whose client asked (this leader, or a follower that sent `ReadIndex`).
    origin: NodeId,
    op: OpId,
    /// For this leader's own clients: the request, answered here.
    request: Option<KvOp>,
    /// The read index: the commit index once it holds an entry of this term.
    index: Option<Index>,
    /// The round whose acknowledgement by a majority confirms the read (0: confirmed
    /// by the lease).
    round: u64,
}

#[derive(Debug)]
struct Transfer {
    target: NodeId,
    deadline: SimTime,
    sent: bool,
}

/// A client operation this incarnation received and has not answered.
#[derive(Debug)]
enum Awaiting {
    /// Proposed here or forwarded to the leader: answered when the entry is applied.
    Proposed,
    /// A read waiting for the leader's `ReadIndexOk`.
    ReadIndex { request: KvOp },
    /// A read to answer once the state machine has applied `index`.
    Ready { request: KvOp, index: Index },
}

/// One Raft node.
pub struct Node {
    settings: Settings,
    bugs: Bugs,
    /// `None` until `on_start` has opened the disk, and after a fatal storage error.
    durable: Option<Durable>,
    role: Role,
    leader: Option<NodeId>,
    commit: Index,
    election_generation: u64,
    heartbeat_generation: u64,
    awaiting: BTreeMap<OpId, Awaiting>,
    /// With `raft.vote_not_persisted`: a vote granted in memory only, for `term`.
    volatile_vote: Option<(Term, NodeId)>,
    /// Local time this node last heard from a leader (stickiness, leases).
    leader_contact: Option<SimTime>,
}

struct Durable {
    log: DurableLog,
    sm: StateMachine,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("raft::Node")
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
            commit: 0,
            election_generation: 0,
            heartbeat_generation: 0,
            awaiting: BTreeMap::new(),
            volatile_vote: None,
            leader_contact: None,
        }
    }

    fn quorum(ctx: &Ctx<'_, Self>) -> usize {
        ctx.node_count() / 2 + 1
    }

    fn term(&self) -> Term {
        self.durable.as_ref().map_or(0, |d| d.log.term())
    }

    fn leadership(&mut self) -> Option<&mut Leadership> {
        match &mut self.role {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// A storage failure the node cannot mask (a failed sync, corrupt log): it stops
    /// taking part, as a real server would crash; a restart recovers from disk.
    fn fail_stop(&mut self, ctx: &mut Ctx<'_, Self>, what: &'static str, error: impl fmt::Display) {
        ctx.sometimes("raft.fail_stop");
        ctx.observe(Observation::Stopped {
            what: what.to_string(),
            error: error.to_string(),
        });
        self.abandon_reads(ctx, "the node stopped");
        self.durable = None;
        self.role = Role::Follower;
        self.leader = None;
    }

    fn reset_election_timer(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.election_generation += 1;
        let (min, max) = (
            self.settings.timing.election_timeout_min.as_micros(),
            self.settings.timing.election_timeout_max.as_micros(),
        );
        let timeout = SimDuration::from_micros(ctx.rng().random_range(min..=max));
        ctx.set_timer(
            timeout,
            Timer::Election {
                generation: self.election_generation,
            },
        );
    }

    fn set_heartbeat_timer(&mut self, ctx: &mut Ctx<'_, Self>) {
        ctx.set_timer(
            self.settings.timing.heartbeat_interval,
            Timer::Heartbeat {
                generation: self.heartbeat_generation,
            },
        );
    }

    /// Whether this node has heard from a leader within the minimum election timeout
    /// (a leader always has): it then ignores pre-votes, and vote requests too when
    /// CheckQuorum or leases are on, unless they come from a leadership transfer.
    fn in_leader_lease(&self, now: SimTime) -> bool {
        matches!(self.role, Role::Leader(_))
            || self
                .leader_contact
                .is_some_and(|t| now < t + self.settings.timing.election_timeout_min)
    }

    fn sticky_votes(&self) -> bool {
        self.settings.features.check_quorum || self.settings.features.reads == ReadMode::Lease
    }

    /// Leaves the leader role (or a candidacy) for follower, answering the reads a
    /// leader still held.
    fn become_follower(&mut self, ctx: &mut Ctx<'_, Self>) {
        if matches!(self.role, Role::Leader(_)) {
            ctx.sometimes("raft.leader_stepped_down");
            self.abandon_reads(ctx, "leadership lost");
            self.heartbeat_generation += 1;
        }
        if !matches!(self.role, Role::Follower) {
            self.role = Role::Follower;
            self.reset_election_timer(ctx);
        }
    }

    /// Adopts a newer term as a follower (persisted; synced by the caller's handler).
    fn step_down(&mut self, ctx: &mut Ctx<'_, Self>, term: Term) {
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        if term > d.log.term() {
            if let Err(e) = d.log.set_hard_state(term, None) {
                return self.fail_stop(ctx, "persist term", e);
            }
            self.volatile_vote = None;
            self.leader = None;
        }
        self.become_follower(ctx);
    }

    /// Syncs the log; false (and fail-stop) if the sync failed.
    fn sync(&mut self, ctx: &mut Ctx<'_, Self>) -> bool {
        let Some(d) = self.durable.as_mut() else {
            return false;
        };
        match d.log.sync() {
            Ok(()) => true,
            Err(e) => {
                self.fail_stop(ctx, "sync", e);
                false
            }
        }
    }

    // ---- Elections ----

    fn on_election_timeout(&mut self, ctx: &mut Ctx<'_, Self>) {
        if self.settings.features.pre_vote && Self::quorum(ctx) > 1 {
            self.start_pre_vote(ctx);
        } else {
            self.start_election(ctx, false);
        }
    }

    fn start_pre_vote(&mut self, ctx: &mut Ctx<'_, Self>) {
        let me = ctx.id();
        let Some(d) = self.durable.as_ref() else {
            return;
        };
        let request = Msg::PreVote {
            term: d.log.term() + 1,
            last_index: d.log.last_index(),
            last_term: d.log.last_term(),
        };
        self.role = Role::PreCandidate {
            votes: BTreeSet::from([me]),
        };
        self.leader = None;
        self.reset_election_timer(ctx);
        ctx.broadcast(request);
        self.heartbeat_generation += 1;
        self.set_heartbeat_timer(ctx);
    }

    fn start_election(&mut self, ctx: &mut Ctx<'_, Self>, transfer: bool) {
        let me = ctx.id();
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let term = d.log.term() + 1;
        if let Err(e) = d.log.set_hard_state(term, Some(me)) {
            return self.fail_stop(ctx, "persist vote", e);
        }
        let (last_index, last_term) = (d.log.last_index(), d.log.last_term());
        self.role = Role::Candidate {
            votes: BTreeSet::from([me]),
        };
        self.leader = None;
        self.reset_election_timer(ctx);
        if !self.sync(ctx) {
            return;
        }
        if Self::quorum(ctx) == 1 {
            return self.become_leader(ctx);
        }
        ctx.broadcast(Msg::RequestVote {
            term,
            last_index,
            last_term,
            transfer,
        });
        // Ask again, every heartbeat interval, whoever has not answered: under loss a
        // single request per election loses elections needlessly.
        self.heartbeat_generation += 1;
        self.set_heartbeat_timer(ctx);
    }

    /// A candidate or pre-candidate asks the nodes that have not answered again.
    fn resend_vote_requests(&mut self, ctx: &mut Ctx<'_, Self>) {
        let Some(d) = self.durable.as_ref() else {
            return;
        };
        let (request, votes) = match &self.role {
            Role::Candidate { votes } => (
                Msg::RequestVote {
                    term: d.log.term(),
                    last_index: d.log.last_index(),
                    last_term: d.log.last_term(),
                    transfer: false,
                },
                votes,
            ),
            Role::PreCandidate { votes } => (
                Msg::PreVote {
                    term: d.log.term() + 1,
                    last_index: d.log.last_index(),
                    last_term: d.log.last_term(),
                },
                votes,
            ),
            _ => return,
        };
        let silent: Vec<NodeId> = ctx.peers().filter(|p| !votes.contains(p)).collect();
        for peer in silent {
            ctx.send(peer, request.clone());
        }
        self.set_heartbeat_timer(ctx);
    }

    fn become_leader(&mut self, ctx: &mut Ctx<'_, Self>) {
        let me = ctx.id();
        let now = ctx.now();
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let term = d.log.term();
        let last = d.log.last_index();
        let n = ctx.node_count();
        let mut matched = vec![0; n];
        matched[me.index()] = last;
        self.role = Role::Leader(Box::new(Leadership {
            next: vec![last + 1; n],
            matched,
            round: 0,
            acked: vec![0; n],
            round_sent: BTreeMap::new(),
            last_heard: vec![None; n],
            since: now,
            reads: Vec::new(),
            lease_until: None,
            lease_revoked: false,
            transfer: None,
            snapshot_sent: vec![None; n],
        }));
        self.leader = Some(me);
        ctx.observe(Observation::BecameLeader {
            term,
            base: d.log.base(),
            log: d.log.term_runs(),
        });
        self.heartbeat_generation += 1;
        if let Some(interval) = self.settings.features.transfer_interval {
            ctx.set_timer(
                interval,
                Timer::Transfer {
                    generation: self.heartbeat_generation,
                },
            );
        }
        // Commit everything of earlier terms by committing an entry of this one. Its
        // replication is the first round of heartbeats.
        self.propose(ctx, Command::Noop);
        self.set_heartbeat_timer(ctx);
    }

    fn on_pre_vote(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
    ) {
        let now = ctx.now();
        let Some(d) = self.durable.as_ref() else {
            return;
        };
        let current = d.log.term();
        let up_to_date = (last_term, last_index) >= (d.log.last_term(), d.log.last_index());
        let granted = term > current && up_to_date && !self.in_leader_lease(now);
        ctx.send(
            from,
            Msg::PreVoteReply {
                proposed: term,
                term: current,
                granted,
            },
        );
    }

    fn on_pre_vote_reply(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        proposed: Term,
        term: Term,
        granted: bool,
    ) {
        if term > self.term() {
            self.step_down(ctx, term);
            self.sync(ctx);
            return;
        }
        let quorum = Self::quorum(ctx);
        let current = self.term();
        if let Role::PreCandidate { votes } = &mut self.role
            && proposed == current + 1
            && granted
        {
            votes.insert(from);
            if votes.len() >= quorum {
                self.start_election(ctx, false);
            }
        }
    }

    fn on_request_vote(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
        transfer: bool,
    ) {
        if term > self.term() && !transfer && self.sticky_votes() && self.in_leader_lease(ctx.now())
        {
            // §4.2.3: a node that hears from a leader ignores vote requests, so that a
            // node that lost contact (and a lease's voters) cannot disrupt it.
            return;
        }
        if term > self.term() {
            self.step_down(ctx, term);
        }
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let current = d.log.term();
        let vote = match self.volatile_vote {
            Some((t, v)) if t == current => Some(v),
            _ => d.log.vote(),
        };
        let up_to_date = (last_term, last_index) >= (d.log.last_term(), d.log.last_index());
        let granted = term == current && up_to_date && (vote.is_none() || vote == Some(from));
        if granted {
            if self.bugs.vote_not_persisted {
                self.volatile_vote = Some((current, from));
            } else if let Err(e) = d.log.set_hard_state(current, Some(from)) {
                return self.fail_stop(ctx, "persist vote", e);
            }
            self.reset_election_timer(ctx);
        }
        if !self.sync(ctx) {
            return;
        }
        ctx.send(
            from,
            Msg::Vote {
                term: current,
                granted,
            },
        );
    }

    fn on_vote(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, term: Term, granted: bool) {
        if term > self.term() {
            self.step_down(ctx, term);
            self.sync(ctx);
            return;
        }
        let quorum = Self::quorum(ctx);
        let current = self.term();
        if let Role::Candidate { votes } = &mut self.role
            && term == current
            && granted
        {
            votes.insert(from);
            if votes.len() >= quorum {
                self.become_leader(ctx);
            }
        }
    }

    // ---- Replication ----

    /// Appends a command to the leader's log and replicates it.
    fn propose(&mut self, ctx: &mut Ctx<'_, Self>, command: Command) {
        let me = ctx.id();
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let entry = Entry {
            term: d.log.term(),
            index: d.log.last_index() + 1,
            command,
        };
        let index = entry.index;
        if let Err(e) = d.log.put(entry) {
            return self.fail_stop(ctx, "append", e);
        }
        if self.bugs.ack_before_fsync {
            ctx.set_timer(self.settings.timing.election_timeout_max, Timer::Flush);
        } else if !self.sync(ctx) {
            return;
        }
        if let Some(l) = self.leadership() {
            l.matched[me.index()] = index;
        }
        self.replicate_all(ctx);
        self.advance_commit(ctx);
    }

    fn send_heartbeats(&mut self, ctx: &mut Ctx<'_, Self>) {
        if self.check_quorum_lost(ctx) {
            return;
        }
        let now = ctx.now();
        if let Some(l) = self.leadership()
            && l.transfer.as_ref().is_some_and(|t| now >= t.deadline)
        {
            // The transfer did not happen in time: take requests again (§3.10).
            l.transfer = None;
        }
        self.replicate_all(ctx);
        self.set_heartbeat_timer(ctx);
    }

    /// CheckQuorum (§6.2): a leader that has not heard from a majority within the
    /// maximum election timeout steps down. True if it did.
    fn check_quorum_lost(&mut self, ctx: &mut Ctx<'_, Self>) -> bool {
        if !self.settings.features.check_quorum {
            return false;
        }
        let quorum = Self::quorum(ctx);
        let now = ctx.now();
        let window = self.settings.timing.election_timeout_max;
        let term = self.term();
        let Some(l) = self.leadership() else {
            return false;
        };
        if now < l.since + window {
            return false;
        }
        let heard = 1 + l
            .last_heard
            .iter()
            .filter(|t| t.is_some_and(|t| now < t + window))
            .count();
        if heard >= quorum {
            return false;
        }
        ctx.observe(Observation::SteppedDown {
            term,
            reason: format!("heard from {heard} of {quorum} nodes needed within {window}"),
        });
        self.leader = None;
        self.become_follower(ctx);
        true
    }

    /// Sends every follower what it lacks (or a heartbeat), as a new round.
    fn replicate_all(&mut self, ctx: &mut Ctx<'_, Self>) {
        let now = ctx.now();
        let Some(l) = self.leadership() else {
            return;
        };
        l.round += 1;
        l.round_sent.insert(l.round, now);
        while l.round_sent.len() > 1024 {
            l.round_sent.pop_first();
        }
        let peers: Vec<NodeId> = ctx.peers().collect();
        for peer in peers {
            self.replicate_to(ctx, peer);
        }
    }

    fn replicate_to(&mut self, ctx: &mut Ctx<'_, Self>, peer: NodeId) {
        let now = ctx.now();
        let (Some(d), Role::Leader(l)) = (self.durable.as_ref(), &mut self.role) else {
            return;
        };
        let next_index = l.next[peer.index()].max(1);
        let prev_index = next_index - 1;
        let Some(prev_term) = d.log.term_at(prev_index) else {
            // Compacted away: the follower needs the state machine (§7). Not more often
            // than once per minimum election timeout (the reply moves `next` on).
            let resend_after = self.settings.timing.election_timeout_min;
            if l.snapshot_sent[peer.index()].is_some_and(|t| now < t + resend_after) {
                return;
            }
            let snapshot = match d.sm.snapshot() {
                Ok(snapshot) => snapshot,
                Err(e) => return self.fail_stop(ctx, "snapshot", e),
            };
            l.snapshot_sent[peer.index()] = Some(now);
            ctx.send(
                peer,
                Msg::InstallSnapshot {
                    term: d.log.term(),
                    snapshot,
                    round: l.round,
                },
            );
            return;
        };
        let entries = d
            .log
            .entries_from(next_index, self.settings.timing.max_entries_per_message);
        ctx.send(
            peer,
            Msg::AppendEntries {
                term: d.log.term(),
                prev_index,
                prev_term,
                entries,
                commit: self.commit,
                round: l.round,
            },
        );
    }

    fn advance_commit(&mut self, ctx: &mut Ctx<'_, Self>) {
        let quorum = Self::quorum(ctx);
        let (Some(d), Role::Leader(l)) = (self.durable.as_ref(), &self.role) else {
            return;
        };
        let term = d.log.term();
        let mut index = d.log.last_index();
        while index > self.commit {
            let replicas = l.matched.iter().filter(|&&m| m >= index).count();
            // §5.4.2: only an entry of the current term is committed by counting
            // replicas; earlier entries are committed with it.
            let counts = self.bugs.commit_prior_term_by_count || d.log.term_at(index) == Some(term);
            if replicas >= quorum && counts {
                self.commit = index;
                break;
            }
            index -= 1;
        }
        self.apply_committed(ctx);
    }

    fn apply_committed(&mut self, ctx: &mut Ctx<'_, Self>) {
        let me = ctx.id();
        loop {
            let Some(d) = self.durable.as_mut() else {
                return;
            };
            let next = d.sm.applied() + 1;
            if next > self.commit {
                break;
            }
            let Some(entry) = d.log.entry(next).cloned() else {
                break;
            };
            let result = match d.sm.apply(&entry) {
                Ok(result) => result,
                Err(e) => return self.fail_stop(ctx, "apply", e),
            };
            ctx.observe(Observation::Applied {
                index: entry.index,
                term: entry.term,
                digest: state_machine::digest(&entry.command),
            });
            if let (Command::Client { origin, op, .. }, Some(result)) = (&entry.command, result)
                && *origin == me
                && matches!(self.awaiting.get(op), Some(Awaiting::Proposed))
            {
                self.awaiting.remove(op);
                ctx.reply_ok(*op, result);
            }
        }
        self.maybe_compact(ctx);
        self.serve_reads(ctx);
    }

    /// Log compaction (§7): once enough applied entries follow the base, the state
    /// machine is synced and the log's base moves up to the applied index.
    fn maybe_compact(&mut self, ctx: &mut Ctx<'_, Self>) {
        let threshold = self.settings.features.snapshot_threshold;
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let applied = d.sm.applied();
        let (base, _) = d.log.base();
        if threshold == 0 || applied < base + threshold {
            return;
        }
        let Some(term) = d.log.term_at(applied) else {
            return;
        };
        if let Err(e) = d.sm.sync() {
            return self.fail_stop(ctx, "sync state machine", e);
        }
        if let Err(e) = d.log.set_base(applied, term) {
            return self.fail_stop(ctx, "compact log", e);
        }
        ctx.observe(Observation::Compacted {
            index: applied,
            term,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append_entries(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        term: Term,
        mut prev_index: Index,
        mut prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: Index,
        round: u64,
    ) {
        if !self.accept_leader(ctx, from, term, round) {
            return;
        }
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let (base, base_term) = d.log.base();
        if prev_index < base {
            // Entries up to the base are committed and in the state machine: the same
            // as the leader's. Skip them.
            entries.retain(|e| e.index > base);
            prev_index = base;
            prev_term = base_term;
        }
        let matches = if self.bugs.truncate_without_term_check {
            prev_index <= d.log.last_index()
        } else {
            d.log.term_at(prev_index) == Some(prev_term)
        };
        if !matches {
            let (conflict_term, conflict_index) = match d.log.term_at(prev_index) {
                Some(t) => (Some(t), d.log.first_index_of_term_run(prev_index)),
                None => (None, d.log.last_index() + 1),
            };
            if !self.sync(ctx) {
                return;
            }
            ctx.send(
                from,
                Msg::AppendReply {
                    term,
                    success: false,
                    match_index: 0,
                    conflict_term,
                    conflict_index,
                    round,
                },
            );
            return;
        }
        let match_index = prev_index + entries.len() as u64;
        for entry in entries {
            if d.log.term_at(entry.index) == Some(entry.term)
                && !self.bugs.truncate_without_term_check
            {
                continue; // already have it (a duplicate or reordered message)
            }
            if d.log.term_at(entry.index).is_some_and(|t| t != entry.term) {
                ctx.sometimes("raft.conflicting_suffix_replaced");
            }
            if let Err(e) = d.log.put(entry) {
                return self.fail_stop(ctx, "append", e);
            }
        }
        if self.bugs.ack_before_fsync {
            // A "group commit" that acknowledges first and syncs an election timeout later.
            if d.log.is_dirty() {
                ctx.set_timer(self.settings.timing.election_timeout_max, Timer::Flush);
            }
        } else if !self.sync(ctx) {
            return;
        }
        let new_commit = leader_commit.min(match_index);
        if new_commit > self.commit {
            self.commit = new_commit;
        }
        ctx.send(
            from,
            Msg::AppendReply {
                term,
                success: true,
                match_index,
                conflict_term: None,
                conflict_index: 0,
                round,
            },
        );
        self.apply_committed(ctx);
    }

    /// The common part of `AppendEntries` and `InstallSnapshot`: a stale leader is told
    /// the current term (false); a current one is followed.
    fn accept_leader(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        term: Term,
        round: u64,
    ) -> bool {
        let current = self.term();
        if term < current {
            ctx.send(
                from,
                Msg::AppendReply {
                    term: current,
                    success: false,
                    match_index: 0,
                    conflict_term: None,
                    conflict_index: 0,
                    round,
                },
            );
            return false;
        }
        if term > current || !matches!(self.role, Role::Follower) {
            self.step_down(ctx, term);
        }
        self.leader = Some(from);
        self.leader_contact = Some(ctx.now());
        self.reset_election_timer(ctx);
        self.durable.is_some()
    }

    fn on_install_snapshot(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        term: Term,
        snapshot: Snapshot,
        round: u64,
    ) {
        if !self.accept_leader(ctx, from, term, round) {
            return;
        }
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        if snapshot.index > d.sm.applied() {
            if let Err(e) = d.sm.install(&snapshot) {
                return self.fail_stop(ctx, "install snapshot", e);
            }
            ctx.sometimes("raft.snapshot_installed");
            ctx.observe(Observation::SnapshotInstalled {
                index: snapshot.index,
                term: snapshot.term,
            });
            if snapshot.index > d.log.base().0
                && let Err(e) = d.log.set_base(snapshot.index, snapshot.term)
            {
                return self.fail_stop(ctx, "install snapshot in the log", e);
            }
            self.commit = self.commit.max(snapshot.index);
        }
        if !self.sync(ctx) {
            return;
        }
        // Everything up to the snapshot's index is committed, hence the leader's too.
        ctx.send(
            from,
            Msg::AppendReply {
                term,
                success: true,
                match_index: snapshot.index,
                conflict_term: None,
                conflict_index: 0,
                round,
            },
        );
        self.apply_committed(ctx);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append_reply(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        term: Term,
        success: bool,
        match_index: Index,
        conflict_term: Option<Term>,
        conflict_index: Index,
        round: u64,
    ) {
        if term > self.term() {
            self.step_down(ctx, term);
            self.sync(ctx);
            return;
        }
        if term < self.term() {
            return;
        }
        let now = ctx.now();
        let Some(d) = self.durable.as_ref() else {
            return;
        };
        let last = d.log.last_index();
        let target_term = conflict_term.and_then(|t| d.log.last_index_of_term(t));
        let Some(l) = self.leadership() else {
            return;
        };
        let peer = from.index();
        // Any reply in this term acknowledges this leader as of the round it echoes.
        l.acked[peer] = l.acked[peer].max(round);
        l.last_heard[peer] = Some(now);
        let send_more;
        let mut timeout_now = false;
        if success {
            if match_index > l.matched[peer] {
                l.matched[peer] = match_index.min(last);
            }
            l.next[peer] = l.next[peer].max(l.matched[peer] + 1);
            send_more = l.next[peer] <= last;
            if let Some(t) = &mut l.transfer
                && t.target == from
                && !t.sent
                && l.matched[peer] == last
            {
                t.sent = true;
                timeout_now = true;
            }
        } else {
            // Fast backtracking: skip the follower's whole conflicting term at once.
            let target = match (conflict_term, target_term) {
                (Some(_), Some(i)) => {
                    ctx.sometimes("raft.fast_backtrack_by_term");
                    i + 1
                }
                _ => conflict_index,
            };
            l.next[peer] = target.clamp(l.matched[peer] + 1, last + 1);
            l.snapshot_sent[peer] = None;
            send_more = true;
        }
        self.update_lease(ctx);
        if success {
            self.advance_commit(ctx);
        } else {
            self.serve_reads(ctx);
        }
        if timeout_now {
            let term = self.term();
            ctx.send(from, Msg::TimeoutNow { term });
        }
        if send_more {
            self.replicate_to(ctx, from);
        }
    }

    fn on_forward(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, op: OpId, request: KvOp) {
        match &self.role {
            Role::Leader(l) if l.transfer.is_none() => self.propose(
                ctx,
                Command::Client {
                    origin: from,
                    op,
                    request,
                },
            ),
            _ => ctx.send(
                from,
                Msg::Refused {
                    op,
                    reason: self.refusal().into(),
                },
            ),
        }
    }

    fn refusal(&self) -> &'static str {
        match &self.role {
            Role::Leader(_) => "leadership transfer in progress",
            _ => "not the leader",
        }
    }

    // ---- Leadership transfer (§3.10) ----

    /// Picks the follower with the longest log among those heard from recently, brings
    /// it up to date and sends it `TimeoutNow`; meanwhile takes no client requests.
    fn start_transfer(&mut self, ctx: &mut Ctx<'_, Self>) {
        let now = ctx.now();
        let me = ctx.id();
        let window = self.settings.timing.election_timeout_max;
        let deadline = now + self.settings.timing.election_timeout_min;
        let term = self.term();
        let Some(last) = self.durable.as_ref().map(|d| d.log.last_index()) else {
            return;
        };
        let Some(l) = self.leadership() else {
            return;
        };
        if l.transfer.is_some() {
            return;
        }
        let target = (0..l.matched.len())
            .filter(|&i| i != me.index() && l.last_heard[i].is_some_and(|t| now < t + window))
            .max_by_key(|&i| (l.matched[i], std::cmp::Reverse(i)));
        let Some(target) = target.map(|i| NodeId(i as u32)) else {
            return;
        };
        let ready = l.matched[target.index()] == last;
        l.transfer = Some(Transfer {
            target,
            deadline,
            sent: ready,
        });
        // The target's election may take votes from nodes that heard from this leader
        // just now: no lease for the rest of the term.
        l.lease_until = None;
        l.lease_revoked = true;
        if ready {
            ctx.send(target, Msg::TimeoutNow { term });
        } else {
            self.replicate_to(ctx, target);
        }
    }

    fn on_timeout_now(&mut self, ctx: &mut Ctx<'_, Self>, term: Term) {
        if term == self.term() && matches!(self.role, Role::Follower) {
            self.start_election(ctx, true);
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
        let mut log =
            match DurableLog::open(disk.clone(), LOG_DIR, nonce, self.settings.engine_bugs) {
                Ok(log) => log,
                Err(e) => return self.fail_stop(ctx, "recover log", e),
            };
        let sm = match StateMachine::open(self.settings.engine.as_ref(), disk, STATE_DIR) {
            Ok(sm) => sm,
            Err(e) => return self.fail_stop(ctx, "recover state machine", e),
        };
        let (applied, applied_term) = (sm.applied(), sm.applied_term());
        let (base, _) = log.base();
        if applied < base {
            return self.fail_stop(
                ctx,
                "recover",
                format!("the state machine is at {applied}, behind the log's base {base}"),
            );
        }
        // A snapshot installed in the state machine but not yet in the log (a crash in
        // between), or a state machine ahead of an unsynced log: the log starts after it.
        if applied > base
            && log.term_at(applied) != Some(applied_term)
            && let Err(e) = log.set_base(applied, applied_term)
        {
            return self.fail_stop(ctx, "recover log base", e);
        }
        // Entries the state machine applied were committed.
        self.commit = applied;
        self.durable = Some(Durable { log, sm });
        if self.settings.features.reads == ReadMode::Lease {
            // A restarted node may have acknowledged a leader's round just before it
            // crashed: it honours that leader's lease as if it had just heard from it.
            self.leader_contact = Some(ctx.now());
        }
        self.reset_election_timer(ctx);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        if self.durable.is_none() {
            return;
        }
        match msg {
            Msg::PreVote {
                term,
                last_index,
                last_term,
            } => self.on_pre_vote(ctx, from, term, last_index, last_term),
            Msg::PreVoteReply {
                proposed,
                term,
                granted,
            } => self.on_pre_vote_reply(ctx, from, proposed, term, granted),
            Msg::RequestVote {
                term,
                last_index,
                last_term,
                transfer,
            } => self.on_request_vote(ctx, from, term, last_index, last_term, transfer),
            Msg::Vote { term, granted } => self.on_vote(ctx, from, term, granted),
            Msg::AppendEntries {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
                round,
            } => self.on_append_entries(
                ctx, from, term, prev_index, prev_term, entries, commit, round,
            ),
            Msg::AppendReply {
                term,
                success,
                match_index,
                conflict_term,
                conflict_index,
                round,
            } => self.on_append_reply(
                ctx,
                from,
                term,
                success,
                match_index,
                conflict_term,
                conflict_index,
                round,
            ),
            Msg::InstallSnapshot {
                term,
                snapshot,
                round,
            } => self.on_install_snapshot(ctx, from, term, snapshot, round),
            Msg::Forward { op, request } => self.on_forward(ctx, from, op, request),
            Msg::Refused { op, reason } => self.on_refused(ctx, op, reason),
            Msg::ReadIndex { op } => self.on_read_index(ctx, from, op),
            Msg::ReadIndexOk { op, index } => self.on_read_index_ok(ctx, op, index),
            Msg::TimeoutNow { term } => self.on_timeout_now(ctx, term),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _id: TimerId, timer: Timer) {
        if self.durable.is_none() {
            return;
        }
        match timer {
            Timer::Election { generation } => {
                if generation == self.election_generation && !matches!(self.role, Role::Leader(_)) {
                    self.on_election_timeout(ctx);
                }
            }
            Timer::Heartbeat { generation } if generation == self.heartbeat_generation => {
                match self.role {
                    Role::Leader(_) => self.send_heartbeats(ctx),
                    Role::Candidate { .. } | Role::PreCandidate { .. } => {
                        self.resend_vote_requests(ctx)
                    }
                    Role::Follower => {}
                }
            }
            Timer::Heartbeat { .. } => {}
            Timer::Flush => {
                self.sync(ctx);
            }
            Timer::Transfer { generation } => {
                if generation == self.heartbeat_generation && matches!(self.role, Role::Leader(_)) {
                    self.start_transfer(ctx);
                    if let Some(interval) = self.settings.features.transfer_interval {
                        ctx.set_timer(interval, Timer::Transfer { generation });
                    }
                }
            }
        }
    }

    fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, request: KvOp) {
        let me = ctx.id();
        let Some(d) = self.durable.as_ref() else {
            return ctx.reply_fail(op, "node unavailable");
        };
        let read_only = request.is_read_only();
        let reads = self.settings.features.reads;
        match (&self.role, self.leader) {
            (Role::Leader(l), _) => {
                if l.transfer.is_some() {
                    return ctx.reply_fail(op, "leadership transfer in progress");
                }
                if self.bugs.local_read_without_quorum && read_only {
                    match d.sm.read(&request) {
                        Ok(result) => ctx.reply_ok(op, result),
                        Err(e) => ctx.reply_info(op, e.to_string()),
                    }
                    return;
                }
                if read_only && reads != ReadMode::Log {
                    return self.register_read(ctx, me, op, Some(request));
                }
                self.awaiting.insert(op, Awaiting::Proposed);
                self.propose(
                    ctx,
                    Command::Client {
                        origin: me,
                        op,
                        request,
                    },
                );
            }
            (_, Some(leader)) if leader != me => {
                if read_only && reads != ReadMode::Log {
                    self.awaiting.insert(op, Awaiting::ReadIndex { request });
                    ctx.send(leader, Msg::ReadIndex { op });
                } else {
                    self.awaiting.insert(op, Awaiting::Proposed);
                    ctx.send(leader, Msg::Forward { op, request });
                }
            }
            _ => ctx.reply_fail(op, "no leader known"),
        }
    }
}

/// Raft's coverage points (sometimes-assertions), for `faultline explore`.
pub const COVERAGE: &[sim_core::coverage::Point] = &[
    sim_core::coverage::Point {
        name: "raft.leader_stepped_down",
        description: "a leader learned of a newer term or lost its lease and became a follower",
    },
    sim_core::coverage::Point {
        name: "raft.conflicting_suffix_replaced",
        description: "a follower replaced log entries that conflicted with the leader's",
    },
    sim_core::coverage::Point {
        name: "raft.snapshot_installed",
        description: "a follower installed a snapshot sent by the leader",
    },
    sim_core::coverage::Point {
        name: "raft.fast_backtrack_by_term",
        description: "the leader skipped a follower's whole conflicting term at once",
    },
    sim_core::coverage::Point {
        name: "raft.fail_stop",
        description: "a node stopped on a storage error (detected corruption, failed sync)",
    },
];
