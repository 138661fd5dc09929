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
pub mod state_machine;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use sim_core::linearizability::model::{KvOp, KvResult};
use sim_core::{Ctx, NodeId, OpId, Process, SimDuration, TimerId};
use storage::kv::EngineOpener;

use self::log::{Command, DurableLog, Entry, Index, Term};
use self::state_machine::StateMachine;
use crate::common::{BugFlag, BugFlagError, unknown};

/// Where a node keeps its log and its state machine on its disk.
const LOG_DIR: &str = "raft/log";
const STATE_DIR: &str = "raft/state";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    RequestVote {
        term: Term,
        last_index: Index,
        last_term: Term,
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
    },
    /// A client request received by a follower, for the leader to propose.
    Forward {
        op: OpId,
        request: KvOp,
    },
    /// The node forwarded to could not take the request (it is not the leader). The
    /// origin answers `info`, not `fail`: a duplicate of the forward may still arrive at
    /// a node that has since become leader.
    Refused {
        op: OpId,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// Start an election unless this generation was superseded.
    Election { generation: u64 },
    /// Leader: send heartbeats (and any entries a follower lacks). Candidate: ask the
    /// nodes that have not answered for their votes again.
    Heartbeat { generation: u64 },
    /// With `raft.ack_before_fsync`: the deferred WAL sync.
    Flush,
}

/// What the checkers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// This node became leader of `term`, with this log (runs of equal terms:
    /// `(term, first index, last index)`).
    BecameLeader {
        term: Term,
        log: Vec<(Term, Index, Index)>,
    },
    /// This node applied the entry at `index` (of `term`, whose command hashes to
    /// `digest`) to its state machine.
    Applied {
        index: Index,
        term: Term,
        digest: u64,
    },
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

/// Protocol settings.
#[derive(Clone)]
pub struct Settings {
    pub timing: Timing,
    /// The engine that holds the state machine.
    pub engine: Arc<dyn EngineOpener>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("timing", &self.timing)
            .field("engine", &self.engine.name())
            .finish()
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
    Candidate {
        votes: BTreeSet<NodeId>,
    },
    Leader {
        /// Per node: the next index to send, and the highest index known to match.
        next: Vec<Index>,
        matched: Vec<Index>,
    },
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
    /// Client operations this incarnation received and has not answered.
    awaiting: BTreeSet<OpId>,
    /// With `raft.vote_not_persisted`: a vote granted in memory only, for `term`.
    volatile_vote: Option<(Term, NodeId)>,
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
            awaiting: BTreeSet::new(),
            volatile_vote: None,
        }
    }

    fn quorum(ctx: &Ctx<'_, Self>) -> usize {
        ctx.node_count() / 2 + 1
    }

    fn term(&self) -> Term {
        self.durable.as_ref().map_or(0, |d| d.log.term())
    }

    /// A storage failure the node cannot mask (a failed sync, corrupt log): it stops
    /// taking part, as a real server would crash; a restart recovers from disk.
    fn fail_stop(&mut self, ctx: &mut Ctx<'_, Self>, what: &'static str, error: impl fmt::Display) {
        ctx.observe(Observation::Stopped {
            what: what.to_string(),
            error: error.to_string(),
        });
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
        }
        if matches!(self.role, Role::Leader { .. }) {
            self.heartbeat_generation += 1;
        }
        if !matches!(self.role, Role::Follower) {
            self.role = Role::Follower;
            self.reset_election_timer(ctx);
        }
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

    fn start_election(&mut self, ctx: &mut Ctx<'_, Self>) {
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
        });
        // Ask again, every heartbeat interval, whoever has not answered: under loss a
        // single request per election loses elections needlessly.
        self.heartbeat_generation += 1;
        ctx.set_timer(
            self.settings.timing.heartbeat_interval,
            Timer::Heartbeat {
                generation: self.heartbeat_generation,
            },
        );
    }

    fn resend_vote_requests(&mut self, ctx: &mut Ctx<'_, Self>) {
        let (Some(d), Role::Candidate { votes }) = (self.durable.as_ref(), &self.role) else {
            return;
        };
        let request = Msg::RequestVote {
            term: d.log.term(),
            last_index: d.log.last_index(),
            last_term: d.log.last_term(),
        };
        let silent: Vec<NodeId> = ctx.peers().filter(|p| !votes.contains(p)).collect();
        for peer in silent {
            ctx.send(peer, request.clone());
        }
        ctx.set_timer(
            self.settings.timing.heartbeat_interval,
            Timer::Heartbeat {
                generation: self.heartbeat_generation,
            },
        );
    }

    fn become_leader(&mut self, ctx: &mut Ctx<'_, Self>) {
        let me = ctx.id();
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let term = d.log.term();
        let last = d.log.last_index();
        let n = ctx.node_count();
        let mut matched = vec![0; n];
        matched[me.index()] = last;
        self.role = Role::Leader {
            next: vec![last + 1; n],
            matched,
        };
        self.leader = Some(me);
        ctx.observe(Observation::BecameLeader {
            term,
            log: d.log.term_runs(),
        });
        // Commit everything of earlier terms by committing an entry of this one.
        self.propose(ctx, Command::Noop);
        self.heartbeat_generation += 1;
        self.send_heartbeats(ctx);
    }

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
        if let Role::Leader { matched, .. } = &mut self.role {
            matched[me.index()] = index;
        }
        self.replicate_all(ctx);
        self.advance_commit(ctx);
    }

    fn send_heartbeats(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.replicate_all(ctx);
        ctx.set_timer(
            self.settings.timing.heartbeat_interval,
            Timer::Heartbeat {
                generation: self.heartbeat_generation,
            },
        );
    }

    fn replicate_all(&mut self, ctx: &mut Ctx<'_, Self>) {
        let peers: Vec<NodeId> = ctx.peers().collect();
        for peer in peers {
            self.replicate_to(ctx, peer);
        }
    }

    fn replicate_to(&mut self, ctx: &mut Ctx<'_, Self>, peer: NodeId) {
        let (Some(d), Role::Leader { next, .. }) = (self.durable.as_ref(), &self.role) else {
            return;
        };
        let next_index = next[peer.index()].max(1);
        let prev_index = next_index - 1;
        let Some(prev_term) = d.log.term_at(prev_index) else {
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
            },
        );
    }

    fn advance_commit(&mut self, ctx: &mut Ctx<'_, Self>) {
        let quorum = Self::quorum(ctx);
        let (Some(d), Role::Leader { matched, .. }) = (self.durable.as_ref(), &self.role) else {
            return;
        };
        let term = d.log.term();
        let mut index = d.log.last_index();
        while index > self.commit {
            let replicas = matched.iter().filter(|&&m| m >= index).count();
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
                return;
            }
            let Some(entry) = d.log.entry(next).cloned() else {
                return;
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
                && self.awaiting.remove(op)
            {
                ctx.reply_ok(*op, result);
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
    ) {
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

    #[allow(clippy::too_many_arguments)]
    fn on_append_entries(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
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
                },
            );
            return;
        }
        if term > current || !matches!(self.role, Role::Follower) {
            self.step_down(ctx, term);
        }
        self.leader = Some(from);
        self.reset_election_timer(ctx);
        let Some(d) = self.durable.as_mut() else {
            return;
        };
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
    ) {
        if term > self.term() {
            self.step_down(ctx, term);
            self.sync(ctx);
            return;
        }
        if term < self.term() {
            return;
        }
        let Some(d) = self.durable.as_ref() else {
            return;
        };
        let last = d.log.last_index();
        let Role::Leader { next, matched } = &mut self.role else {
            return;
        };
        let peer = from.index();
        if success {
            if match_index > matched[peer] {
                matched[peer] = match_index.min(last);
            }
            next[peer] = next[peer].max(matched[peer] + 1);
            let more = next[peer] <= last;
            self.advance_commit(ctx);
            if more {
                self.replicate_to(ctx, from);
            }
        } else {
            // Fast backtracking: skip the follower's whole conflicting term at once.
            let target = match conflict_term {
                Some(t) => match d.log.last_index_of_term(t) {
                    Some(i) => i + 1,
                    None => conflict_index,
                },
                None => conflict_index,
            };
            next[peer] = target.clamp(matched[peer] + 1, last + 1);
            self.replicate_to(ctx, from);
        }
    }

    fn on_forward(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, op: OpId, request: KvOp) {
        if matches!(self.role, Role::Leader { .. }) {
            self.propose(
                ctx,
                Command::Client {
                    origin: from,
                    op,
                    request,
                },
            );
        } else {
            ctx.send(
                from,
                Msg::Refused {
                    op,
                    reason: "not the leader".into(),
                },
            );
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
        let log = match DurableLog::open(disk.clone(), LOG_DIR, nonce) {
            Ok(log) => log,
            Err(e) => return self.fail_stop(ctx, "recover log", e),
        };
        let sm = match StateMachine::open(self.settings.engine.as_ref(), disk, STATE_DIR) {
            Ok(sm) => sm,
            Err(e) => return self.fail_stop(ctx, "recover state machine", e),
        };
        // Entries the state machine applied were committed; the log holds them.
        self.commit = sm.applied().min(log.last_index());
        self.durable = Some(Durable { log, sm });
        self.reset_election_timer(ctx);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        if self.durable.is_none() {
            return;
        }
        match msg {
            Msg::RequestVote {
                term,
                last_index,
                last_term,
            } => self.on_request_vote(ctx, from, term, last_index, last_term),
            Msg::Vote { term, granted } => self.on_vote(ctx, from, term, granted),
            Msg::AppendEntries {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
            } => self.on_append_entries(ctx, from, term, prev_index, prev_term, entries, commit),
            Msg::AppendReply {
                term,
                success,
                match_index,
                conflict_term,
                conflict_index,
            } => self.on_append_reply(
                ctx,
                from,
                term,
                success,
                match_index,
                conflict_term,
                conflict_index,
            ),
            Msg::Forward { op, request } => self.on_forward(ctx, from, op, request),
            Msg::Refused { op, reason } => {
                // Not `fail`: the network may still hold a duplicate of the forwarded
                // request, which a node that becomes leader later would propose. Only a
                // request that never left this node certainly did not take effect.
                if self.awaiting.remove(&op) {
                    ctx.reply_info(
                        op,
                        format!("{reason}; a delayed copy may still be proposed"),
                    );
                }
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _id: TimerId, timer: Timer) {
        if self.durable.is_none() {
            return;
        }
        match timer {
            Timer::Election { generation } => {
                if generation == self.election_generation
                    && !matches!(self.role, Role::Leader { .. })
                {
                    self.start_election(ctx);
                }
            }
            Timer::Heartbeat { generation } if generation == self.heartbeat_generation => {
                match self.role {
                    Role::Leader { .. } => self.send_heartbeats(ctx),
                    Role::Candidate { .. } => self.resend_vote_requests(ctx),
                    Role::Follower => {}
                }
            }
            Timer::Heartbeat { .. } => {}
            Timer::Flush => {
                self.sync(ctx);
            }
        }
    }

    fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, request: KvOp) {
        let me = ctx.id();
        let Some(d) = self.durable.as_ref() else {
            return ctx.reply_fail(op, "node unavailable");
        };
        match (&self.role, self.leader) {
            (Role::Leader { .. }, _) => {
                if self.bugs.local_read_without_quorum && request.is_read_only() {
                    match d.sm.read(&request) {
                        Ok(result) => ctx.reply_ok(op, result),
                        Err(e) => ctx.reply_info(op, e.to_string()),
                    }
                    return;
                }
                self.awaiting.insert(op);
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
                self.awaiting.insert(op);
                ctx.send(leader, Msg::Forward { op, request });
            }
            _ => ctx.reply_fail(op, "no leader known"),
        }
    }
}
