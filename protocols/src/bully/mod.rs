//! The bully leader election (Garcia-Molina, 1982) over an asynchronous network, with
//! durable terms, leader heartbeats, step-down, fencing tokens and an optional majority
//! mode.
//!
//! **Election.** A member that starts an election sends ELECTION (with its current term)
//! to every member with a higher id. A higher member answers ALIVE and
//! holds its own election (a leader re-announces itself instead). A candidate that hears
//! no ALIVE within the *answer timeout* declares victory and sends COORDINATOR to every
//! member; one that hears ALIVE waits a *coordinator timeout* for the announcement and
//! otherwise starts again. A member never follows a lower leader: a lower COORDINATOR (or
//! heartbeat) makes it hold an election. A member that (re)starts holds an election at
//! once, so a recovered higher member pre-empts the leader.
//!
//! **Terms.** A term is a leadership epoch: a winner opens term *t + 1* over the highest
//! term *t* it knows, and persists it before it announces itself (so elections by lower
//! members, which end in no victory, do not disturb a leader). Every message carries a
//! term. A newer term is adopted (persisted and synced
//! before anything that depends on it is sent) and makes a leader step down; a message
//! of an older term is ignored, and its sender is told the newer term. Terms never
//! decrease, across restarts too.
//!
//! **Leadership.** A leader sends heartbeats every `heartbeat_interval`; members answer
//! with acknowledgements. A follower that hears nothing from its leader for the
//! coordinator timeout holds an election. In *classic* mode a leader acts from its
//! victory, and steps down when no member has answered for the coordinator timeout. In
//! *majority* mode it acts only while it holds a lease: a majority of members (itself
//! included) acknowledged a heartbeat sent less than `LEASE_FRACTION` of the coordinator
//! timeout ago. A member that acknowledges promises not to acknowledge another leader for
//! the coordinator timeout (and one that restarts waits that long before acknowledging
//! anyone); it acknowledges one leader per term, recorded durably like a vote. So leases
//! never overlap, given clock drift below ~10%.
//!
//! **Fencing.** While it acts, a leader writes to the fenced resource every heartbeat
//! with its fencing token `(term, leader id)`. The resource (a node of its own, see
//! [`Resource`]) accepts a write only if its token is at least the highest it has
//! accepted, which it keeps durably.

pub mod checker;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sim_core::{Ctx, NodeId, OpId, Process, SimDuration, SimTime, TimerId};
use storage::kv::EngineOpener;

use self::store::{HIGHEST_KEY, LAST_WRITE_KEY, Store, TERM_KEY, VOTE_KEY, encode_token};
use crate::common::{BugFlag, BugFlagError, unknown};

/// Where members and the resource keep their durable state on their disks.
const MEMBER_DIR: &str = "bully/member";
const RESOURCE_DIR: &str = "bully/resource";

/// A majority-mode leader's lease lasts this fraction (numerator, denominator) of the
/// coordinator timeout from the heartbeat a majority acknowledged. The margin covers
/// clock drift between leader and members (up to about 10% each way).
pub const LEASE_FRACTION: (u64, u64) = (3, 4);

pub type Term = u64;

/// A fencing token: the leader's term, with its id to break ties between two
/// classic-mode leaders of one term. Ordered by term, then id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Token {
    pub term: Term,
    pub leader: NodeId,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.term, self.leader)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// A candidate to a higher member: are you there?
    Election { term: Term },
    /// A higher member to a candidate: yes, and I take over.
    Alive { term: Term },
    /// The winner's announcement (heartbeat round `round`).
    Coordinator { term: Term, round: u64 },
    /// The leader's periodic heartbeat.
    Heartbeat { term: Term, round: u64 },
    /// A member's answer to a coordinator or heartbeat. `granted = false`: it already
    /// acknowledged another leader in this term (majority mode).
    Ack {
        term: Term,
        round: u64,
        granted: bool,
    },
    /// The answer to a message of an older term.
    NewerTerm { term: Term },
    /// A leader's write to the fenced resource.
    Write { token: Token, seq: u64 },
    /// The resource's answer, with the highest token it has accepted.
    WriteResult {
        token: Token,
        seq: u64,
        accepted: bool,
        highest: Token,
    },
}

impl Msg {
    /// Whether this message belongs to the election itself (ELECTION, ALIVE, COORDINATOR),
    /// as counted against the bully algorithm's O(n²) bound.
    pub fn is_election_message(&self) -> bool {
        matches!(
            self,
            Msg::Election { .. } | Msg::Alive { .. } | Msg::Coordinator { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// A candidate heard no ALIVE: it wins.
    Answer { generation: u64 },
    /// A follower heard nothing from its leader, or a candidate that heard ALIVE heard
    /// no COORDINATOR: hold an election.
    Coordinator { generation: u64 },
    /// A leader: heartbeat, write, check contact.
    Heartbeat { generation: u64 },
    /// A majority-mode leader's lease may have run out.
    LeaseExpiry { generation: u64 },
}

/// Why a leader stopped acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepDown {
    /// It learned of a newer term.
    NewerTerm,
    /// A higher member announced itself in its term.
    HigherLeader,
    /// Classic mode: no member answered for the coordinator timeout.
    LostContact,
    /// Majority mode: its lease ran out.
    LeaseExpired,
    /// The resource has accepted a higher token.
    Fenced,
    /// Majority mode: another leader holds this term's acknowledgements, so it holds a
    /// new election.
    Contested,
    /// A storage failure stopped the node.
    Stopped,
}

/// What the checkers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// A member (re)started with this durable term.
    Recovered { term: Term },
    /// A member's durable term changed (emitted after the sync).
    Term { term: Term },
    /// A member started an election in `term`.
    ElectionStarted { term: Term },
    /// A member's view of the leader changed (itself when it leads; `None` when it knows
    /// no leader).
    Leader { term: Term, leader: Option<NodeId> },
    /// A member started acting as leader (classic: at its victory; majority: once a
    /// majority acknowledged it).
    Leading { token: Token },
    /// A member stopped acting as leader.
    SteppedDown { token: Token, reason: StepDown },
    /// The resource (re)started with this highest accepted token.
    ResourceRecovered { highest: Option<Token> },
    /// The resource accepted a write (emitted after the sync).
    WriteAccepted { token: Token, seq: u64 },
    /// The resource rejected a write with a stale token.
    WriteRejected {
        token: Token,
        seq: u64,
        highest: Token,
    },
    /// A storage failure stopped this incarnation (it takes no further part).
    Stopped { what: String, error: String },
}

/// Whether a leader needs a majority before it acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The textbook algorithm: a leader acts from its victory. Split brain is possible
    /// under partitions; fencing keeps the resource safe.
    #[default]
    Classic,
    /// A leader acts only while a majority's acknowledgements give it a lease.
    Majority,
}

/// The bully algorithm's timing parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How long a candidate waits for ALIVE before it declares victory.
    pub answer_timeout: SimDuration,
    /// How long a follower waits without hearing its leader (and a candidate that heard
    /// ALIVE waits for COORDINATOR) before it holds an election.
    pub coordinator_timeout: SimDuration,
    /// A leader's heartbeat (and write) period.
    pub heartbeat_interval: SimDuration,
}

impl Default for Timing {
    /// A 200 ms coordinator timeout; the answer timeout is half of it (the reference's
    /// `election_timeout // 2`); heartbeats every 50 ms.
    fn default() -> Self {
        Timing {
            answer_timeout: SimDuration::from_millis(100),
            coordinator_timeout: SimDuration::from_millis(200),
            heartbeat_interval: SimDuration::from_millis(50),
        }
    }
}

impl Timing {
    /// Timing with `coordinator_timeout` and the reference's ratios (answer = half,
    /// heartbeat = a quarter).
    pub fn from_coordinator_timeout(coordinator_timeout: SimDuration) -> Self {
        Timing {
            answer_timeout: SimDuration(coordinator_timeout.0 / 2),
            coordinator_timeout,
            heartbeat_interval: SimDuration(coordinator_timeout.0 / 4),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.answer_timeout == SimDuration::ZERO {
            return Err("answer_timeout must be positive".into());
        }
        if self.heartbeat_interval == SimDuration::ZERO {
            return Err("heartbeat_interval must be positive".into());
        }
        if self.heartbeat_interval >= self.coordinator_timeout {
            return Err("heartbeat_interval must be shorter than coordinator_timeout".into());
        }
        Ok(())
    }

    fn lease(&self) -> SimDuration {
        SimDuration(self.coordinator_timeout.0 * LEASE_FRACTION.0 / LEASE_FRACTION.1)
    }
}

/// Protocol settings.
#[derive(Clone)]
pub struct Settings {
    pub timing: Timing,
    pub mode: Mode,
    /// The node that plays the fenced resource (not a member), if any.
    pub resource: Option<NodeId>,
    /// The engine that holds the node's durable state.
    pub engine: Arc<dyn EngineOpener>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("timing", &self.timing)
            .field("mode", &self.mode)
            .field("resource", &self.resource)
            .field("engine", &self.engine.name())
            .finish()
    }
}

pub const BUG_FLAGS: &[BugFlag] = &[
    BugFlag {
        name: "bully.no_election_on_recovery",
        description: "a restarted member holds no election and follows the first leader it hears, even a lower one",
    },
    BugFlag {
        name: "bully.accept_lower_coordinator",
        description: "a higher member accepts a lower member's coordinator announcement without an election",
    },
    BugFlag {
        name: "bully.ignore_term",
        description: "messages are taken at their word whatever their term: a stale term is adopted, so terms go backwards",
    },
    BugFlag {
        name: "bully.leader_never_steps_down",
        description: "a leader that lost contact (classic) or its lease (majority) keeps acting",
    },
    BugFlag {
        name: "bully.premature_victory",
        description: "a candidate declares victory as soon as it has sent ELECTION, before the answer timeout",
    },
    BugFlag {
        name: "bully.no_fencing",
        description: "the resource accepts writes whatever their fencing token, so a deposed leader's writes land",
    },
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub no_election_on_recovery: bool,
    pub accept_lower_coordinator: bool,
    pub ignore_term: bool,
    pub leader_never_steps_down: bool,
    pub premature_victory: bool,
    pub no_fencing: bool,
}

impl Bugs {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, BugFlagError> {
        let mut bugs = Bugs::default();
        for name in names {
            match name {
                "bully.no_election_on_recovery" => bugs.no_election_on_recovery = true,
                "bully.accept_lower_coordinator" => bugs.accept_lower_coordinator = true,
                "bully.ignore_term" => bugs.ignore_term = true,
                "bully.leader_never_steps_down" => bugs.leader_never_steps_down = true,
                "bully.premature_victory" => bugs.premature_victory = true,
                "bully.no_fencing" => bugs.no_fencing = true,
                _ => return Err(unknown(name, BUG_FLAGS)),
            }
        }
        Ok(bugs)
    }
}

/// A node of a bully cluster: an election member, or the fenced resource.
#[derive(Debug)]
pub enum Node {
    Member(Member),
    Resource(Resource),
}

impl Node {
    /// Builds node `id`: the resource if the settings name it, a member otherwise.
    pub fn new(id: NodeId, settings: Settings, bugs: Bugs) -> Self {
        if settings.resource == Some(id) {
            Node::Resource(Resource::new(settings, bugs))
        } else {
            Node::Member(Member::new(settings, bugs))
        }
    }
}

impl Process for Node {
    type Msg = Msg;
    type Timer = Timer;
    /// Bully takes no client requests: its leader's writes to the resource are the load.
    type Op = ();
    type Reply = ();
    type Obs = Observation;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        match self {
            Node::Member(m) => m.on_start(ctx),
            Node::Resource(r) => r.on_start(ctx),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        match self {
            Node::Member(m) => m.on_message(ctx, from, msg),
            Node::Resource(r) => r.on_message(ctx, from, msg),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _id: TimerId, timer: Timer) {
        if let Node::Member(m) = self {
            m.on_timer(ctx, timer);
        }
    }

    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, _request: ()) {
        ctx.reply_fail(op, "bully takes no client requests");
    }

    fn is_leader(&self) -> bool {
        matches!(self, Node::Member(m) if m.role == Role::Leader)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Follower,
    /// Sent ELECTION, waiting for ALIVE until the answer timeout.
    Candidate,
    /// Heard ALIVE, waiting for COORDINATOR until the coordinator timeout.
    Awaiting,
    Leader,
}

/// A heartbeat round of a leader: when it was sent (local clock) and who acknowledged.
#[derive(Debug)]
struct Round {
    sent_at: SimTime,
    acks: BTreeSet<NodeId>,
}

/// Whether a message's term is current (after adopting a newer one) or stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TermCheck {
    Current,
    Stale,
}

/// An election member.
pub struct Member {
    settings: Settings,
    bugs: Bugs,
    /// `None` until `on_start` has opened the disk, and after a fatal storage error.
    store: Option<Store>,
    term: Term,
    /// Majority mode: the leader acknowledged in a term (durable).
    vote: Option<(Term, NodeId)>,
    role: Role,
    leader: Option<NodeId>,
    /// Bumped on every role change: older answer and coordinator timers are void.
    generation: u64,
    /// Bumped when leadership starts or ends: older heartbeat and lease timers are void.
    leader_generation: u64,
    /// The pending answer or coordinator timer, if any.
    election_timer: Option<TimerId>,
    /// With `bully.no_election_on_recovery`: restarted, following the first leader heard.
    joining: bool,
    /// Majority mode: the leader this member promised its acknowledgements to, until.
    promise: Option<(NodeId, SimTime)>,
    /// Majority mode: after a restart, no acknowledgement (nor self-count) until then.
    grace_until: SimTime,
    /// The token it acts as leader with, if it does (see `Observation::Leading`).
    acting: Option<Token>,
    round: u64,
    rounds: BTreeMap<u64, Round>,
    lease_until: SimTime,
    /// Classic mode: when a member last answered this leader.
    last_contact: SimTime,
    write_seq: u64,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("bully::Member")
            .field("term", &self.term)
            .field("role", &self.role)
            .field("leader", &self.leader)
            .field("acting", &self.acting)
            .finish()
    }
}

impl Member {
    pub fn new(settings: Settings, bugs: Bugs) -> Self {
        Member {
            settings,
            bugs,
            store: None,
            term: 0,
            vote: None,
            role: Role::Follower,
            leader: None,
            generation: 0,
            leader_generation: 0,
            election_timer: None,
            joining: false,
            promise: None,
            grace_until: SimTime::ZERO,
            acting: None,
            round: 0,
            rounds: BTreeMap::new(),
            lease_until: SimTime::ZERO,
            last_contact: SimTime::ZERO,
            write_seq: 0,
        }
    }

    fn majority(&self) -> bool {
        self.settings.mode == Mode::Majority
    }

    fn is_member(&self, node: NodeId) -> bool {
        self.settings.resource != Some(node)
    }

    fn members(&self, ctx: &Ctx<'_, Node>) -> Vec<NodeId> {
        (0..ctx.node_count() as u32)
            .map(NodeId)
            .filter(|&n| self.is_member(n))
            .collect()
    }

    fn quorum(&self, ctx: &Ctx<'_, Node>) -> usize {
        self.members(ctx).len() / 2 + 1
    }

    fn token(&self, ctx: &Ctx<'_, Node>) -> Token {
        Token {
            term: self.term,
            leader: ctx.id(),
        }
    }

    fn fail_stop(&mut self, ctx: &mut Ctx<'_, Node>, what: &str, error: impl fmt::Display) {
        ctx.sometimes("bully.fail_stop");
        self.stop_acting(ctx, StepDown::Stopped);
        ctx.observe(Observation::Stopped {
            what: what.to_string(),
            error: error.to_string(),
        });
        self.store = None;
        self.role = Role::Follower;
        self.leader = None;
        self.generation += 1;
        self.leader_generation += 1;
    }

    /// Persists and syncs a new term; false if the node stopped.
    fn set_term(&mut self, ctx: &mut Ctx<'_, Node>, term: Term) -> bool {
        if term == self.term {
            return true;
        }
        debug_assert!(
            term > self.term || self.bugs.ignore_term,
            "terms only grow: {} -> {term}",
            self.term
        );
        let Some(store) = self.store.as_mut() else {
            return false;
        };
        if let Err(e) = store.put_synced(&[(TERM_KEY, term.to_le_bytes().to_vec())]) {
            self.fail_stop(ctx, "persist term", e);
            return false;
        }
        self.term = term;
        ctx.observe(Observation::Term { term });
        true
    }

    fn set_leader(&mut self, ctx: &mut Ctx<'_, Node>, leader: Option<NodeId>) {
        if self.leader != leader {
            self.leader = leader;
            ctx.observe(Observation::Leader {
                term: self.term,
                leader,
            });
        }
    }

    /// Sets a timer; an answer or coordinator timer replaces (cancels) the previous one,
    /// so at most one of them is pending.
    fn set_timer(&mut self, ctx: &mut Ctx<'_, Node>, after: SimDuration, timer: Timer) {
        let election = matches!(timer, Timer::Answer { .. } | Timer::Coordinator { .. });
        if election {
            self.cancel_election_timer(ctx);
        }
        let id = ctx.set_timer(after, timer);
        if election {
            self.election_timer = Some(id);
        }
    }

    fn cancel_election_timer(&mut self, ctx: &mut Ctx<'_, Node>) {
        if let Some(id) = self.election_timer.take() {
            ctx.cancel_timer(id);
        }
    }

    /// Becomes a follower that knows no leader (it holds an election if it hears none
    /// within the coordinator timeout).
    fn become_leaderless(&mut self, ctx: &mut Ctx<'_, Node>, reason: StepDown) {
        if self.role == Role::Leader {
            self.stop_acting(ctx, reason);
            self.leader_generation += 1;
        }
        self.role = Role::Follower;
        self.set_leader(ctx, None);
        self.generation += 1;
        let generation = self.generation;
        let timeout = self.settings.timing.coordinator_timeout;
        self.set_timer(ctx, timeout, Timer::Coordinator { generation });
    }

    /// Adopts a newer term (stepping down from any role); tells whether the message's
    /// term is current or stale. `None` if the node stopped.
    fn check_term(&mut self, ctx: &mut Ctx<'_, Node>, term: Term) -> Option<TermCheck> {
        let adopt = if self.bugs.ignore_term {
            term != self.term
        } else {
            term > self.term
        };
        if adopt {
            if !self.set_term(ctx, term) {
                return None;
            }
            self.become_leaderless(ctx, StepDown::NewerTerm);
            Some(TermCheck::Current)
        } else if term < self.term {
            Some(TermCheck::Stale)
        } else {
            Some(TermCheck::Current)
        }
    }

    fn start_acting(&mut self, ctx: &mut Ctx<'_, Node>) {
        if self.acting.is_none() {
            let token = self.token(ctx);
            self.acting = Some(token);
            ctx.observe(Observation::Leading { token });
        }
    }

    fn stop_acting(&mut self, ctx: &mut Ctx<'_, Node>, reason: StepDown) {
        if let Some(token) = self.acting.take() {
            ctx.sometimes("bully.leader_stepped_down");
            ctx.observe(Observation::SteppedDown { token, reason });
        }
    }

    /// Majority mode: stop acting once the lease has run out.
    fn check_lease(&mut self, ctx: &mut Ctx<'_, Node>) {
        if self.majority()
            && self.acting.is_some()
            && ctx.now() >= self.lease_until
            && !self.bugs.leader_never_steps_down
        {
            self.stop_acting(ctx, StepDown::LeaseExpired);
        }
    }

    /// Majority mode: whether this member may acknowledge (or count itself for) `leader`
    /// now: not within its restart grace, nor promised to another leader.
    fn may_acknowledge(&self, leader: NodeId, now: SimTime) -> bool {
        now >= self.grace_until
            && self
                .promise
                .is_none_or(|(promised, until)| promised == leader || now >= until)
    }

    fn start_election(&mut self, ctx: &mut Ctx<'_, Node>) {
        let me = ctx.id();
        if self.role == Role::Leader {
            // Callers that depose a leader say why first; this covers the rest.
            self.stop_acting(ctx, StepDown::Contested);
            self.leader_generation += 1;
        }
        self.joining = false;
        let term = self.term;
        self.role = Role::Candidate;
        self.set_leader(ctx, None);
        self.generation += 1;
        ctx.observe(Observation::ElectionStarted { term });
        let higher: Vec<NodeId> = self.members(ctx).into_iter().filter(|&m| m > me).collect();
        if higher.is_empty() {
            return self.declare_victory(ctx);
        }
        for node in higher {
            ctx.send(node, Msg::Election { term });
        }
        if self.bugs.premature_victory {
            return self.declare_victory(ctx);
        }
        let generation = self.generation;
        let timeout = self.settings.timing.answer_timeout;
        self.set_timer(ctx, timeout, Timer::Answer { generation });
    }

    fn new_round(&mut self, ctx: &mut Ctx<'_, Node>) -> u64 {
        let me = ctx.id();
        let now = ctx.now();
        self.round += 1;
        let mut acks = BTreeSet::new();
        if !self.majority() || self.may_acknowledge(me, now) {
            acks.insert(me);
        }
        self.rounds.insert(self.round, Round { sent_at: now, acks });
        // Rounds older than the coordinator timeout can no longer give a lease.
        let horizon = self.settings.timing.coordinator_timeout;
        self.rounds
            .retain(|_, r| now.saturating_since(r.sent_at) <= horizon);
        self.round
    }

    fn declare_victory(&mut self, ctx: &mut Ctx<'_, Node>) {
        let me = ctx.id();
        // A victory opens a new term, persisted before it is announced. In majority mode
        // the winner's own acknowledgement is a vote like any other: recorded in the same
        // batch, so that it cannot also acknowledge another leader of this term.
        let term = self.term + 1;
        if self.majority() {
            let mut vote = term.to_le_bytes().to_vec();
            vote.extend_from_slice(&me.0.to_le_bytes());
            let Some(store) = self.store.as_mut() else {
                return;
            };
            if let Err(e) =
                store.put_synced(&[(TERM_KEY, term.to_le_bytes().to_vec()), (VOTE_KEY, vote)])
            {
                return self.fail_stop(ctx, "persist term and vote", e);
            }
            self.term = term;
            self.vote = Some((term, me));
            ctx.observe(Observation::Term { term });
        } else if !self.set_term(ctx, term) {
            return;
        }
        self.role = Role::Leader;
        self.generation += 1;
        self.cancel_election_timer(ctx);
        self.leader_generation += 1;
        self.set_leader(ctx, Some(me));
        self.rounds.clear();
        self.lease_until = SimTime::ZERO;
        self.last_contact = ctx.now();
        let round = self.new_round(ctx);
        for member in self.members(ctx) {
            if member != me {
                ctx.send(member, Msg::Coordinator { term, round });
            }
        }
        if self.majority() {
            self.check_quorum(ctx, round);
        } else {
            self.start_acting(ctx);
        }
        let generation = self.leader_generation;
        let interval = self.settings.timing.heartbeat_interval;
        self.set_timer(ctx, interval, Timer::Heartbeat { generation });
    }

    /// Majority mode: a round acknowledged by a majority extends the lease.
    fn check_quorum(&mut self, ctx: &mut Ctx<'_, Node>, round: u64) {
        let quorum = self.quorum(ctx);
        let Some(r) = self.rounds.get(&round) else {
            return;
        };
        debug_assert!(r.acks.len() <= self.members(ctx).len());
        if r.acks.len() < quorum {
            return;
        }
        let until = r.sent_at + self.settings.timing.lease();
        let now = ctx.now();
        if until <= now {
            return;
        }
        if until > self.lease_until {
            self.lease_until = until;
            let generation = self.leader_generation;
            self.set_timer(
                ctx,
                until.saturating_since(now),
                Timer::LeaseExpiry { generation },
            );
        }
        self.start_acting(ctx);
    }

    fn on_heartbeat_timer(&mut self, ctx: &mut Ctx<'_, Node>) {
        let me = ctx.id();
        let now = ctx.now();
        let members = self.members(ctx);
        if !self.majority()
            && members.len() > 1
            && now.saturating_since(self.last_contact) > self.settings.timing.coordinator_timeout
            && !self.bugs.leader_never_steps_down
        {
            // Lost contact: step down and find out who leads (possibly itself again).
            self.stop_acting(ctx, StepDown::LostContact);
            return self.start_election(ctx);
        }
        if let (Some(token), Some(resource)) = (self.acting, self.settings.resource) {
            self.write_seq += 1;
            ctx.send(
                resource,
                Msg::Write {
                    token,
                    seq: self.write_seq,
                },
            );
        }
        let round = self.new_round(ctx);
        let term = self.term;
        for member in members {
            if member != me {
                ctx.send(member, Msg::Heartbeat { term, round });
            }
        }
        if self.majority() {
            self.check_quorum(ctx, round);
        }
        let generation = self.leader_generation;
        let interval = self.settings.timing.heartbeat_interval;
        self.set_timer(ctx, interval, Timer::Heartbeat { generation });
    }

    /// COORDINATOR or a heartbeat from `from`.
    fn on_leader_message(&mut self, ctx: &mut Ctx<'_, Node>, from: NodeId, term: Term, round: u64) {
        let me = ctx.id();
        if from == me {
            return;
        }
        match self.check_term(ctx, term) {
            None => return,
            Some(TermCheck::Stale) => {
                ctx.send(from, Msg::NewerTerm { term: self.term });
                return;
            }
            Some(TermCheck::Current) => {}
        }
        // A member follows a higher member, unless it already follows an even higher
        // one in this term (which the other will hear from).
        let following = self.role == Role::Follower && self.leader == Some(from);
        let outranks = from > me && self.leader.is_none_or(|l| from > l);
        let accept = following || outranks || self.bugs.accept_lower_coordinator || self.joining;
        if !accept {
            match self.role {
                // Tell the lower leader who leads.
                Role::Leader => {
                    let round = self.round;
                    ctx.send(from, Msg::Coordinator { term, round });
                }
                Role::Candidate | Role::Awaiting => {}
                Role::Follower => match self.leader {
                    // It will hear from my (higher) leader.
                    Some(leader) if leader > from => {}
                    _ => self.start_election(ctx),
                },
            }
            return;
        }
        self.joining = false;
        if self.role == Role::Leader {
            self.stop_acting(ctx, StepDown::HigherLeader);
            self.leader_generation += 1;
        }
        self.role = Role::Follower;
        self.set_leader(ctx, Some(from));
        self.generation += 1;
        let generation = self.generation;
        let timeout = self.settings.timing.coordinator_timeout;
        self.set_timer(ctx, timeout, Timer::Coordinator { generation });
        self.acknowledge(ctx, from, term, round);
    }

    fn acknowledge(&mut self, ctx: &mut Ctx<'_, Node>, leader: NodeId, term: Term, round: u64) {
        if !self.majority() {
            ctx.send(
                leader,
                Msg::Ack {
                    term,
                    round,
                    granted: true,
                },
            );
            return;
        }
        match self.vote {
            Some((t, voted)) if t == term && voted != leader => {
                ctx.send(
                    leader,
                    Msg::Ack {
                        term,
                        round,
                        granted: false,
                    },
                );
                return;
            }
            _ => {}
        }
        let now = ctx.now();
        if !self.may_acknowledge(leader, now) {
            return; // silent until the promise to the other leader (or the grace) ends
        }
        if self.vote != Some((term, leader)) {
            let mut value = term.to_le_bytes().to_vec();
            value.extend_from_slice(&leader.0.to_le_bytes());
            let Some(store) = self.store.as_mut() else {
                return;
            };
            if let Err(e) = store.put_synced(&[(VOTE_KEY, value)]) {
                return self.fail_stop(ctx, "persist vote", e);
            }
            self.vote = Some((term, leader));
        }
        self.promise = Some((leader, now + self.settings.timing.coordinator_timeout));
        ctx.send(
            leader,
            Msg::Ack {
                term,
                round,
                granted: true,
            },
        );
    }

    fn on_election(&mut self, ctx: &mut Ctx<'_, Node>, from: NodeId, term: Term) {
        let me = ctx.id();
        if from >= me {
            return; // ELECTION goes only to higher ids
        }
        match self.check_term(ctx, term) {
            None => return,
            Some(TermCheck::Stale) => {
                // Ignored, but the sender learns the current term.
                ctx.send(from, Msg::Alive { term: self.term });
                return;
            }
            Some(TermCheck::Current) => {}
        }
        ctx.send(from, Msg::Alive { term });
        match self.role {
            Role::Leader => {
                let round = self.round;
                ctx.send(from, Msg::Coordinator { term, round });
            }
            Role::Candidate | Role::Awaiting => {}
            Role::Follower => self.start_election(ctx),
        }
    }

    fn on_alive(&mut self, ctx: &mut Ctx<'_, Node>, from: NodeId, term: Term) {
        if from <= ctx.id() {
            return;
        }
        match self.check_term(ctx, term) {
            Some(TermCheck::Current) => {}
            _ => return,
        }
        if self.role == Role::Candidate {
            self.role = Role::Awaiting;
            self.generation += 1;
            let generation = self.generation;
            let timeout = self.settings.timing.coordinator_timeout;
            self.set_timer(ctx, timeout, Timer::Coordinator { generation });
        }
    }

    fn on_ack(
        &mut self,
        ctx: &mut Ctx<'_, Node>,
        from: NodeId,
        term: Term,
        round: u64,
        granted: bool,
    ) {
        match self.check_term(ctx, term) {
            Some(TermCheck::Current) => {}
            _ => return,
        }
        if self.role != Role::Leader {
            return;
        }
        if !granted {
            // Another leader holds this term's acknowledgements: try a newer term.
            return self.start_election(ctx);
        }
        self.last_contact = ctx.now();
        if let Some(r) = self.rounds.get_mut(&round) {
            r.acks.insert(from);
        }
        if self.majority() {
            self.check_quorum(ctx, round);
        }
    }

    fn on_write_result(&mut self, ctx: &mut Ctx<'_, Node>, accepted: bool, highest: Token) {
        match self.check_term(ctx, highest.term) {
            Some(TermCheck::Current) => {}
            _ => return,
        }
        if !accepted && self.role == Role::Leader && highest > self.token(ctx) {
            self.become_leaderless(ctx, StepDown::Fenced);
        }
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_, Node>) {
        let store = match Store::open(self.settings.engine.as_ref(), ctx.disk(), MEMBER_DIR) {
            Ok(store) => store,
            Err(e) => return self.fail_stop(ctx, "open state", e),
        };
        let recovered = store.term().and_then(|term| {
            store
                .token(VOTE_KEY)
                .map(|vote| (term, vote.map(|v| (v.term, v.leader))))
        });
        let (term, vote) = match recovered {
            Ok(state) => state,
            Err(e) => return self.fail_stop(ctx, "recover state", e),
        };
        self.store = Some(store);
        self.term = term;
        self.vote = vote;
        ctx.observe(Observation::Recovered { term });
        if self.majority() {
            // It may have promised its acknowledgements to a leader before it crashed.
            self.grace_until = ctx.now() + self.settings.timing.coordinator_timeout;
        }
        if self.bugs.no_election_on_recovery && ctx.incarnation() > 1 {
            self.joining = true;
            self.become_leaderless(ctx, StepDown::NewerTerm);
        } else {
            self.start_election(ctx);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Node>, from: NodeId, msg: Msg) {
        if self.store.is_none() {
            return;
        }
        self.check_lease(ctx);
        match msg {
            Msg::Election { term } => self.on_election(ctx, from, term),
            Msg::Alive { term } => self.on_alive(ctx, from, term),
            Msg::Coordinator { term, round } => self.on_leader_message(ctx, from, term, round),
            Msg::Heartbeat { term, round } => self.on_leader_message(ctx, from, term, round),
            Msg::Ack {
                term,
                round,
                granted,
            } => self.on_ack(ctx, from, term, round, granted),
            Msg::NewerTerm { term } => {
                let _ = self.check_term(ctx, term);
            }
            Msg::WriteResult {
                accepted, highest, ..
            } => self.on_write_result(ctx, accepted, highest),
            Msg::Write { .. } => {} // for the resource
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Node>, timer: Timer) {
        if self.store.is_none() {
            return;
        }
        self.check_lease(ctx);
        match timer {
            Timer::Answer { generation } => {
                if generation == self.generation && self.role == Role::Candidate {
                    self.declare_victory(ctx);
                }
            }
            Timer::Coordinator { generation } => {
                if generation == self.generation
                    && matches!(self.role, Role::Follower | Role::Awaiting)
                {
                    self.start_election(ctx);
                }
            }
            Timer::Heartbeat { generation } => {
                if generation == self.leader_generation && self.role == Role::Leader {
                    self.on_heartbeat_timer(ctx);
                }
            }
            Timer::LeaseExpiry { .. } => {} // `check_lease` above did the work
        }
    }
}

/// The fenced resource: a storage service that accepts a write only if its fencing token
/// is at least the highest it has accepted, and keeps that token durably.
pub struct Resource {
    engine: Arc<dyn EngineOpener>,
    bugs: Bugs,
    store: Option<Store>,
    highest: Option<Token>,
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("bully::Resource")
            .field("highest", &self.highest)
            .finish()
    }
}

impl Resource {
    pub fn new(settings: Settings, bugs: Bugs) -> Self {
        Resource {
            engine: settings.engine,
            bugs,
            store: None,
            highest: None,
        }
    }

    fn fail_stop(&mut self, ctx: &mut Ctx<'_, Node>, what: &str, error: impl fmt::Display) {
        ctx.observe(Observation::Stopped {
            what: what.to_string(),
            error: error.to_string(),
        });
        self.store = None;
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_, Node>) {
        let store = match Store::open(self.engine.as_ref(), ctx.disk(), RESOURCE_DIR) {
            Ok(store) => store,
            Err(e) => return self.fail_stop(ctx, "open state", e),
        };
        let highest = match store.token(HIGHEST_KEY) {
            Ok(highest) => highest,
            Err(e) => return self.fail_stop(ctx, "recover state", e),
        };
        self.store = Some(store);
        self.highest = highest;
        ctx.observe(Observation::ResourceRecovered { highest });
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Node>, from: NodeId, msg: Msg) {
        let Msg::Write { token, seq } = msg else {
            return;
        };
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let fresh = self.highest.is_none_or(|h| token >= h);
        if !(fresh || self.bugs.no_fencing) {
            let highest = self.highest.unwrap_or(token);
            ctx.observe(Observation::WriteRejected {
                token,
                seq,
                highest,
            });
            ctx.send(
                from,
                Msg::WriteResult {
                    token,
                    seq,
                    accepted: false,
                    highest,
                },
            );
            return;
        }
        debug_assert!(fresh || self.bugs.no_fencing);
        let highest = self.highest.map_or(token, |h| h.max(token));
        let mut last = encode_token(token);
        last.extend_from_slice(&seq.to_le_bytes());
        let mut puts = vec![(LAST_WRITE_KEY, last)];
        if Some(highest) != self.highest {
            puts.push((HIGHEST_KEY, encode_token(highest)));
        }
        if let Err(e) = store.put_synced(&puts) {
            return self.fail_stop(ctx, "persist write", e);
        }
        self.highest = Some(highest);
        ctx.observe(Observation::WriteAccepted { token, seq });
        ctx.send(
            from,
            Msg::WriteResult {
                token,
                seq,
                accepted: true,
                highest,
            },
        );
    }
}

/// The bully algorithm's coverage points (sometimes-assertions), for `faultline explore`.
pub const COVERAGE: &[sim_core::coverage::Point] = &[
    sim_core::coverage::Point {
        name: "bully.leader_stepped_down",
        description: "an acting leader stepped down (lease lost, higher term seen, or a higher node alive)",
    },
    sim_core::coverage::Point {
        name: "bully.fail_stop",
        description: "a node stopped on a storage error",
    },
];
