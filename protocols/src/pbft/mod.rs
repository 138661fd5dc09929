//! Practical Byzantine Fault Tolerance (Castro & Liskov, OSDI 1999; TOCS 2002), with
//! checkpoints, watermarks, view changes with certificates, state transfer, and
//! Byzantine replicas that actively lie.
//!
//! **Model.** `n = 3f + 1` replicas; the primary of view `v` is replica `v mod n`. A
//! request goes through PRE-PREPARE (the primary assigns a sequence number between the
//! watermarks), PREPARE (a backup that accepted the pre-prepare tells everyone; a replica
//! is *prepared* with the pre-prepare and 2f matching prepares from distinct backups) and
//! COMMIT (a prepared replica tells everyone; it is *committed-local* with 2f+1 matching
//! commits), and is executed in sequence order on the key-value state machine
//! (Raft's `StateMachine` over the node's `KvEngine`). Every message carries its
//! sender's authenticator ([`wire`]); a message that fails verification is dropped and
//! counted.
//!
//! **Checkpoints.** Every `checkpoint_interval` executions a replica broadcasts the digest
//! of its state; 2f+1 matching ones make a *stable* checkpoint (with that proof), which
//! moves the low watermark: the log below it is garbage-collected, and the primary
//! assigns only sequence numbers up to `low + window`. A replica behind a stable
//! checkpoint fetches the state (state transfer), which it checks against the
//! certified digest.
//!
//! **View change.** A backup that waits too long for a request to execute sends
//! VIEW-CHANGE for the next view, with its stable checkpoint and proof and a prepared
//! certificate for every prepared sequence number above it. The new primary, with 2f+1
//! of them, sends NEW-VIEW with that set and the pre-prepares it re-issues for the new
//! view: for each sequence number between the highest stable checkpoint and the
//! highest prepared one, the certificate of the highest view, or a null request. A
//! backup recomputes those pre-prepares from the set and accepts the view only if they
//! match. The view-change timer doubles with every view that fails to start.
//!
//! **Clients.** The client is a proxy on the node the kernel's client invoked: it signs
//! the request (the operation id is its timestamp), sends it to the primary it believes
//! in, retransmits it to every replica when no result comes, and completes the operation
//! only with f+1 matching replies from distinct replicas. Replicas keep every executed
//! request's result (the state machine's reply cache), so a retransmitted request is
//! executed at most once and answered again with the recorded result.

pub mod checker;
pub mod store;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sim_core::linearizability::model::{KvOp, KvResult};
use sim_core::process::{Effect, Lift};
use sim_core::{Ctx, NodeId, OpId, Process, SimDuration, SimTime, TimerId};
use storage::kv::EngineOpener;

use self::store::{Stable, Store};
use self::wire::{
    Body, CommitCert, Operation, Outcome, PreparedCert, Proof, Request, Seq, Signed, Value, View,
    digest, secret, sign_request, state_digest, value_authentic,
};
use crate::common::{BugFlag, BugFlagError, unknown};
use crate::raft::state_machine::{Snapshot, StateMachine};

pub use self::wire::Msg;

const LOG_DIR: &str = "pbft/log";
const STATE_DIR: &str = "pbft/state";

/// How a Byzantine replica misbehaves (its client proxy stays honest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Behaviour {
    /// Sends nothing as a replica.
    Silent,
    /// As primary, sends different pre-prepares for one sequence number to different
    /// backups (the request to all but one, a null request to that one), and the null
    /// request's to every backup at its next tick.
    Equivocate,
    /// Every pre-prepare, prepare and commit it sends carries a wrong digest.
    WrongDigest,
    /// Re-sends old messages it received from others.
    Replay,
    /// Its VIEW-CHANGE claims a prepared certificate it does not have (prepares forged
    /// under other replicas' identities).
    LieViewChange,
    /// Answers every request at once with a made-up result, also under other replicas'
    /// identities.
    ForgeReplies,
    /// Two copies of one replica run with the same identity ([`Node`] holds both and
    /// drives them through [`Ctx::nested`]), each an honest replica with its own disk
    /// directory (`twin0/`, `twin1/`). Every incoming replica message reaches one copy or
    /// both, as the node's seeded random stream decides (half the time both), so the
    /// copies see different inputs and diverge: as primary they assign different
    /// requests to one sequence number, as backups they prepare and commit different
    /// values, and both sign as the same replica.
    Twin,
}

impl std::str::FromStr for Behaviour {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "silent" => Behaviour::Silent,
            "equivocate" => Behaviour::Equivocate,
            "wrong_digest" => Behaviour::WrongDigest,
            "replay" => Behaviour::Replay,
            "lie_view_change" => Behaviour::LieViewChange,
            "forge_replies" => Behaviour::ForgeReplies,
            "twin" => Behaviour::Twin,
            other => {
                return Err(format!(
                    "unknown Byzantine behaviour `{other}`; expected one of: silent, equivocate, \
                     wrong_digest, replay, lie_view_change, forge_replies, twin"
                ));
            }
        })
    }
}

/// Timing and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A checkpoint every this many sequence numbers.
    pub checkpoint_interval: u64,
    /// The high watermark is the low one plus this (a multiple of the interval).
    pub window: u64,
    /// A backup waiting this long for a request to execute starts a view change.
    pub request_timeout: SimDuration,
    /// The first view-change timer (doubled per failed view, up to 8 times this).
    pub view_change_timeout: SimDuration,
    /// Retransmission and progress check period.
    pub tick: SimDuration,
    /// A client proxy retransmits to every replica after this long without a result.
    pub client_retry: SimDuration,
    /// The run's key, from which every node's secret is derived.
    pub key: u64,
    /// Byzantine replicas and their behaviours.
    pub byzantine: BTreeMap<u32, Behaviour>,
    /// Whether backups start view changes at all (`false` is a deliberately broken
    /// setting, to show the per-operation liveness checker failing: a faulty primary is
    /// then never replaced).
    pub view_changes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            checkpoint_interval: 16,
            window: 64,
            request_timeout: SimDuration::from_millis(250),
            view_change_timeout: SimDuration::from_millis(250),
            tick: SimDuration::from_millis(40),
            client_retry: SimDuration::from_millis(120),
            key: 0,
            byzantine: BTreeMap::new(),
            view_changes: true,
        }
    }
}

impl Config {
    /// Checks the settings against the cluster size `n` (which must be `3f + 1`).
    pub fn validate(&self, n: usize) -> Result<(), String> {
        check_node_count(n)?;
        let f = (n - 1) / 3;
        if self.checkpoint_interval == 0 {
            return Err("checkpoint_interval must be at least 1".into());
        }
        if self.window < 2 * self.checkpoint_interval
            || !self.window.is_multiple_of(self.checkpoint_interval)
        {
            return Err(format!(
                "window must be a multiple of checkpoint_interval ({}) and at least twice it; got {}",
                self.checkpoint_interval, self.window
            ));
        }
        for (d, name) in [
            (self.request_timeout, "request_timeout"),
            (self.view_change_timeout, "view_change_timeout"),
            (self.tick, "tick"),
            (self.client_retry, "client_retry"),
        ] {
            if d == SimDuration::ZERO {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.byzantine.len() > f {
            return Err(format!(
                "at most f = {f} Byzantine replicas with n = {n}; got {}",
                self.byzantine.len()
            ));
        }
        if let Some(node) = self.byzantine.keys().find(|&&id| id as usize >= n) {
            return Err(format!("Byzantine replica {node} is not a node (n = {n})"));
        }
        Ok(())
    }
}

/// PBFT runs with `n = 3f + 1` replicas, `f ≥ 1`.
pub fn check_node_count(n: usize) -> Result<(), String> {
    if n < 4 || !(n - 1).is_multiple_of(3) {
        return Err(format!(
            "PBFT needs n = 3f + 1 replicas with f >= 1 (4, 7, 10, ...); got {n}"
        ));
    }
    Ok(())
}

#[derive(Clone)]
pub struct Settings {
    pub config: Config,
    /// The engine of the log and of the state machine.
    pub engine: Arc<dyn EngineOpener>,
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
        name: "pbft.execute_on_prepared",
        description: "a replica executes a request once prepared, without the commit phase",
    },
    BugFlag {
        name: "pbft.weak_quorum",
        description: "a replica is committed with 2f matching commits instead of 2f+1",
    },
    BugFlag {
        name: "pbft.accept_conflicting_preprepare",
        description: "a backup accepts a second pre-prepare for the same view and sequence number",
    },
    BugFlag {
        name: "pbft.view_change_drops_prepared",
        description: "NEW-VIEW ignores the prepared certificates of the view-change set",
    },
    BugFlag {
        name: "pbft.client_trusts_first_reply",
        description: "the client takes the first reply instead of f+1 matching ones",
    },
    BugFlag {
        name: "pbft.no_request_dedup",
        description: "a retransmitted request is assigned and executed again",
    },
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub execute_on_prepared: bool,
    pub weak_quorum: bool,
    pub accept_conflicting_preprepare: bool,
    pub view_change_drops_prepared: bool,
    pub client_trusts_first_reply: bool,
    pub no_request_dedup: bool,
}

impl Bugs {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, BugFlagError> {
        let mut bugs = Bugs::default();
        for name in names {
            match name {
                "pbft.execute_on_prepared" => bugs.execute_on_prepared = true,
                "pbft.weak_quorum" => bugs.weak_quorum = true,
                "pbft.accept_conflicting_preprepare" => bugs.accept_conflicting_preprepare = true,
                "pbft.view_change_drops_prepared" => bugs.view_change_drops_prepared = true,
                "pbft.client_trusts_first_reply" => bugs.client_trusts_first_reply = true,
                "pbft.no_request_dedup" => bugs.no_request_dedup = true,
                _ => return Err(unknown(name, BUG_FLAGS)),
            }
        }
        Ok(bugs)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// Retransmission, progress check, state fetch.
    Tick,
    /// The view change to `view` did not complete in time.
    ViewChange { view: View },
    /// A client proxy's request got no result in time.
    ClientRetry { op: OpId, attempt: u32 },
    /// A timer one copy of a twin replica set ([`Behaviour::Twin`]).
    Twin { twin: u8, timer: Box<Timer> },
}

/// Which kind of message a sender equivocated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConflictKind {
    PrePrepare,
    Prepare,
    Commit,
}

/// What the checkers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// This replica sent COMMIT for `digest` at `seq` in `view`.
    CommitSent { view: View, seq: Seq, digest: u64 },
    /// This replica executed `seq`, holding the value of `digest`; `op` is the client
    /// request in it, and `effective` whether it took effect now (not a duplicate).
    Executed {
        seq: Seq,
        view: View,
        digest: u64,
        op: Option<OpId>,
        effective: bool,
    },
    /// This replica's state after `seq` has digest `state`.
    CheckpointTaken { seq: Seq, state: u64 },
    /// This replica holds a stable checkpoint at `seq` (2f+1 matching).
    CheckpointStable { seq: Seq },
    /// This replica installed a transferred state at `seq`.
    StateInstalled { seq: Seq, state: u64 },
    /// This replica sent VIEW-CHANGE for `view`.
    ViewChangeStarted { view: View },
    /// This replica entered `view` (a NEW-VIEW it sent or validated).
    NewViewEntered { view: View, reissued: u64 },
    /// A message failed verification (forged or unauthenticated) and was dropped.
    Rejected { claimed: u32, reason: String },
    /// Replica `from` sent this replica two authentic messages of one kind for one view
    /// and sequence number with different digests (an equivocation; the first one
    /// counts). Reported once per sender, kind, view and sequence number.
    Conflict {
        from: u32,
        kind: ConflictKind,
        view: View,
        seq: Seq,
    },
    /// A storage failure stopped this incarnation.
    Stopped { what: String, error: String },
    /// This node's client proxy took operation `op` from the kernel's client.
    ProxyInvoked { op: OpId },
    /// This node's client proxy accepted a result for `op` (f+1 matching replies).
    ProxyAccepted { op: OpId },
}

/// A sequence number's state at this replica.
#[derive(Debug, Default)]
struct Entry {
    /// The accepted pre-prepare: view, digest, value, the signed message.
    pp: Option<(View, u64, Value, Signed)>,
    prepares: BTreeMap<(View, u64), BTreeMap<u32, Signed>>,
    commits: BTreeMap<(View, u64), BTreeMap<u32, Signed>>,
    /// The view and digest for which this replica became prepared (and sent COMMIT).
    commit_sent: Option<(View, u64)>,
    /// The highest-view prepared certificate.
    cert: Option<PreparedCert>,
    /// Committed: the certificate (the value is in its pre-prepare).
    committed: Option<CommitCert>,
}

/// A client proxy's outstanding request.
#[derive(Debug)]
struct Pending {
    value: Value,
    replies: BTreeMap<u32, Outcome>,
}

struct Durable {
    store: Store,
    sm: StateMachine,
}

pub struct Node {
    settings: Settings,
    bugs: Bugs,
    durable: Option<Durable>,
    n: usize,
    f: usize,
    me: u32,
    secret: u64,
    view: View,
    active: bool,
    /// The last view this replica was active in (the view-change backoff's base).
    last_active: View,
    log: BTreeMap<Seq, Entry>,
    last_exec: Seq,
    stable: Stable,
    /// The state at the stable checkpoint (for state transfer), if this replica has it.
    stable_snapshot: Option<Snapshot>,
    /// Own checkpoints not yet stable: digest and state.
    own_checkpoints: BTreeMap<Seq, (u64, Snapshot)>,
    /// Checkpoint messages by sequence number and digest.
    checkpoints: BTreeMap<Seq, BTreeMap<u64, BTreeMap<u32, Signed>>>,
    /// Primary: the next sequence number to assign.
    next_seq: Seq,
    /// Requests assigned in this view and not yet executed (primary), by operation.
    assigned: BTreeSet<OpId>,
    /// Requests received and not yet executed.
    waiting: BTreeMap<OpId, Value>,
    /// Results of requests this incarnation executed, to answer retransmissions.
    answered: BTreeMap<OpId, (u32, Outcome)>,
    /// When a backup waiting for requests gives up on the primary (local time).
    request_deadline: Option<SimTime>,
    view_changes: BTreeMap<View, BTreeMap<u32, Signed>>,
    /// The NEW-VIEW of the current view (sent or accepted).
    new_view: Option<Signed>,
    /// Client proxy: outstanding requests.
    pending: BTreeMap<OpId, Pending>,
    /// `last_exec` at the previous tick, and ticks since progress.
    progress_mark: Seq,
    idle_ticks: u32,
    /// A stable checkpoint above `last_exec`, adopted if execution stalls.
    pending_stable: Option<Stable>,
    /// The view whose view-change timer runs.
    vc_timer_armed: Option<View>,
    /// The highest view it asked a NEW-VIEW for.
    asked_view: View,
    /// Byzantine: messages to replay (an equivocating primary's second pre-prepares).
    replay: Vec<Signed>,
    /// Equivocations already reported.
    conflicts: BTreeSet<(ConflictKind, u32, View, Seq)>,
    /// This instance is copy `i` of a twin replica (its disk directories under `twin<i>/`).
    twin: Option<u8>,
    /// A twin replica's node: the two copies it drives (empty otherwise).
    twins: Vec<Node>,
    /// Messages this handler sends once its writes are synced.
    outbox: Vec<(Option<NodeId>, Signed)>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("pbft::Node")
            .field("view", &self.view)
            .field("active", &self.active)
            .field("last_exec", &self.last_exec)
            .field("stable", &self.stable.seq)
            .finish()
    }
}

impl Node {
    pub fn new(settings: Settings, bugs: Bugs) -> Self {
        Node {
            settings,
            bugs,
            durable: None,
            n: 0,
            f: 0,
            me: 0,
            secret: 0,
            view: 0,
            active: true,
            last_active: 0,
            log: BTreeMap::new(),
            last_exec: 0,
            stable: Stable::default(),
            stable_snapshot: None,
            own_checkpoints: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            next_seq: 1,
            assigned: BTreeSet::new(),
            waiting: BTreeMap::new(),
            answered: BTreeMap::new(),
            request_deadline: None,
            view_changes: BTreeMap::new(),
            new_view: None,
            pending: BTreeMap::new(),
            progress_mark: 0,
            idle_ticks: 0,
            vc_timer_armed: None,
            pending_stable: None,
            asked_view: 0,
            replay: Vec::new(),
            conflicts: BTreeSet::new(),
            twin: None,
            twins: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// A directory of this replica's durable state (under `twin<i>/` for a twin copy).
    fn dir(&self, base: &str) -> String {
        match self.twin {
            Some(i) => format!("twin{i}/{base}"),
            None => base.to_string(),
        }
    }

    /// Reports an equivocation by `from` once.
    fn conflict(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: u32,
        kind: ConflictKind,
        view: View,
        seq: Seq,
    ) {
        if self.conflicts.insert((kind, from, view, seq)) {
            ctx.observe(Observation::Conflict {
                from,
                kind,
                view,
                seq,
            });
        }
    }

    fn config(&self) -> &Config {
        &self.settings.config
    }

    fn key(&self) -> u64 {
        self.settings.config.key
    }

    fn behaviour(&self) -> Option<Behaviour> {
        if self.twin.is_some() {
            // Each copy of a twin is an honest replica; the lie is that there are two.
            return None;
        }
        self.config().byzantine.get(&self.me).copied()
    }

    fn primary(&self, view: View) -> u32 {
        (view % self.n as u64) as u32
    }

    fn is_primary(&self) -> bool {
        self.primary(self.view) == self.me
    }

    fn commit_quorum(&self) -> usize {
        if self.bugs.weak_quorum {
            2 * self.f
        } else {
            2 * self.f + 1
        }
    }

    fn high(&self) -> Seq {
        self.stable.seq + self.config().window
    }

    fn sign(&self, body: Body) -> Signed {
        Signed::new(self.secret, self.me, body)
    }

    /// A Byzantine `WrongDigest` replica corrupts the digests it sends.
    fn out_digest(&self, d: u64) -> u64 {
        if self.behaviour() == Some(Behaviour::WrongDigest) {
            d ^ 0x5a5a
        } else {
            d
        }
    }

    fn send(&mut self, _ctx: &mut Ctx<'_, Self>, to: u32, body: Body) {
        let msg = self.sign(body);
        self.outbox.push((Some(NodeId(to)), msg));
    }

    fn broadcast(&mut self, _ctx: &mut Ctx<'_, Self>, body: Body) {
        let msg = self.sign(body);
        self.outbox.push((None, msg));
    }

    /// Queues `msg` for `to` (every other replica if `None`): it leaves at the end of
    /// the handler, after the handler's writes are synced ([`Node::flush`]).
    fn out(&mut self, to: Option<NodeId>, msg: Signed) {
        self.outbox.push((to, msg));
    }

    /// Persist before you reveal: syncs this handler's log writes (one sync per handler),
    /// then sends what the handler queued. If the incarnation stopped (a storage failure),
    /// nothing leaves.
    fn flush(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.sync(ctx);
        let out = std::mem::take(&mut self.outbox);
        if self.durable.is_none() {
            return;
        }
        for (to, msg) in out {
            match to {
                Some(to) => ctx.send(to, msg),
                None => ctx.broadcast(msg),
            }
        }
    }

    fn fail_stop(&mut self, ctx: &mut Ctx<'_, Self>, what: &str, error: impl fmt::Display) {
        ctx.sometimes("pbft.fail_stop");
        ctx.observe(Observation::Stopped {
            what: what.to_string(),
            error: error.to_string(),
        });
        self.durable = None;
    }

    /// Runs a storage write; on failure the incarnation stops.
    fn persist(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        what: &str,
        f: impl FnOnce(&mut Store) -> Result<(), storage::kv::EngineError>,
    ) -> bool {
        let Some(d) = self.durable.as_mut() else {
            return false;
        };
        match f(&mut d.store) {
            Ok(()) => true,
            Err(e) => {
                self.fail_stop(ctx, what, e);
                false
            }
        }
    }

    /// Makes this handler's writes durable before its messages leave.
    fn sync(&mut self, ctx: &mut Ctx<'_, Self>) {
        if let Some(d) = self.durable.as_mut()
            && let Err(e) = d.store.sync()
        {
            self.fail_stop(ctx, "sync", e);
        }
    }

    // ---- Requests ----

    fn on_request(&mut self, ctx: &mut Ctx<'_, Self>, value: Value) {
        let Value::Request { request, .. } = &value else {
            return;
        };
        let op = OpId(request.op);
        if self.behaviour() == Some(Behaviour::ForgeReplies) {
            self.forge_reply(request);
        }
        if let Some((proxy, outcome)) = self.answered.get(&op).cloned()
            && !self.bugs.no_request_dedup
        {
            let view = self.view;
            self.send(
                ctx,
                proxy,
                Body::Reply {
                    view,
                    op: op.0,
                    outcome,
                },
            );
            return;
        }
        if self.answered.contains_key(&op) {
            // The defect: an executed request counts as new.
            self.waiting.insert(op, value.clone());
        } else {
            self.waiting.entry(op).or_insert_with(|| value.clone());
        }
        if !self.active {
            return;
        }
        if self.is_primary() {
            self.assign(ctx, value);
        } else {
            let primary = self.primary(self.view);
            self.send(ctx, primary, Body::Request { value });
            self.arm_request_timer(ctx);
        }
    }

    fn forge_reply(&mut self, request: &Request) {
        let outcome = match &request.operation {
            Operation::Get { .. } => Outcome::Get(Some("forged".to_string())),
            Operation::Put { .. } => Outcome::Put,
            Operation::Cas { .. } => Outcome::Cas(true),
            Operation::Append { .. } => Outcome::Append,
        };
        let body = Body::Reply {
            view: self.view,
            op: request.op,
            outcome,
        };
        // Under its own identity, and forged under every other replica's.
        for claimed in 0..self.n as u32 {
            let msg = Signed::new(self.secret, claimed, body.clone());
            self.out(Some(NodeId(request.proxy)), msg);
        }
    }

    /// Primary: assigns the next sequence number to a request (if not already assigned
    /// and within the high watermark).
    fn assign(&mut self, ctx: &mut Ctx<'_, Self>, value: Value) {
        let Value::Request { request, .. } = &value else {
            return;
        };
        let op = OpId(request.op);
        if self.assigned.contains(&op) && !self.bugs.no_request_dedup {
            return;
        }
        if self.next_seq > self.high() || self.next_seq <= self.stable.seq {
            return; // Stays in `waiting`; assigned when the window moves.
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.assigned.insert(op);
        self.issue_pre_prepare(ctx, seq, value);
    }

    /// Primary: records and sends a pre-prepare for `seq` in the current view.
    fn issue_pre_prepare(&mut self, ctx: &mut Ctx<'_, Self>, seq: Seq, value: Value) {
        let view = self.view;
        let d = digest(&value);
        let pp = self.sign(Body::PrePrepare {
            view,
            seq,
            digest: d,
            value: value.clone(),
        });
        if !self.persist(ctx, "persist pre-prepare", |s| s.put_pre_prepare(seq, &pp)) {
            return;
        }
        self.log.entry(seq).or_default().pp = Some((view, d, value.clone(), pp.clone()));
        match self.behaviour() {
            Some(Behaviour::Silent) => {}
            Some(Behaviour::Equivocate) => {
                // The request to every backup but one, a null request to that one;
                // at the next tick, the null request to every backup as well.
                let other = self.sign(Body::PrePrepare {
                    view,
                    seq,
                    digest: digest(&Value::Null),
                    value: Value::Null,
                });
                let backups: Vec<NodeId> = ctx.peers().collect();
                let victim = backups[(seq % backups.len() as u64) as usize];
                for to in backups {
                    if to == victim {
                        self.out(Some(to), other.clone());
                    } else {
                        self.out(Some(to), pp.clone());
                    }
                }
                self.replay.push(other);
            }
            Some(Behaviour::WrongDigest) => {
                let bad = self.sign(Body::PrePrepare {
                    view,
                    seq,
                    digest: self.out_digest(d),
                    value,
                });
                self.out(None, bad);
            }
            _ => self.out(None, pp),
        }
        self.check_prepared(ctx, seq);
    }

    /// A backup waiting for requests runs a timer (a deadline checked every tick): if
    /// nothing executes before it, it starts a view change.
    fn arm_request_timer(&mut self, ctx: &mut Ctx<'_, Self>) {
        if self.request_deadline.is_some() || self.waiting.is_empty() || !self.active {
            return;
        }
        self.request_deadline = Some(ctx.now() + self.config().request_timeout);
    }

    fn restart_request_timer(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.request_deadline = None;
        if !self.is_primary() {
            self.arm_request_timer(ctx);
        }
    }

    // ---- Normal case ----

    fn in_window(&self, seq: Seq) -> bool {
        seq > self.stable.seq && seq <= self.high()
    }

    fn on_pre_prepare(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        msg: Signed,
        view: View,
        seq: Seq,
        d: u64,
        value: Value,
    ) {
        if msg.from != self.primary(view) || view != self.view || !self.active {
            return;
        }
        if !self.in_window(seq) || d != digest(&value) || !value_authentic(self.key(), &value) {
            return;
        }
        let clash = self
            .log
            .get(&seq)
            .and_then(|e| e.pp.as_ref())
            .is_some_and(|(v, old, _, _)| *v == view && *old != d);
        if clash {
            self.conflict(ctx, msg.from, ConflictKind::PrePrepare, view, seq);
        }
        let entry = self.log.entry(seq).or_default();
        if let Some((v, old, _, _)) = &entry.pp
            && *v == view
            && (*old == d || !self.bugs.accept_conflicting_preprepare)
        {
            return;
        }
        if !self.persist(ctx, "persist pre-prepare", |s| s.put_pre_prepare(seq, &msg)) {
            return;
        }
        if let Value::Request { request, .. } = &value {
            self.waiting
                .entry(OpId(request.op))
                .or_insert(value.clone());
            if self.behaviour() == Some(Behaviour::ForgeReplies) {
                self.forge_reply(request);
            }
        }
        self.log.entry(seq).or_default().pp = Some((view, d, value, msg));
        let me = self.me;
        let out = self.out_digest(d);
        let prepare = self.sign(Body::Prepare {
            view,
            seq,
            digest: out,
        });
        self.log
            .entry(seq)
            .or_default()
            .prepares
            .entry((view, d))
            .or_default()
            .insert(me, prepare.clone());
        if self.behaviour() != Some(Behaviour::Silent) {
            self.out(None, prepare);
        }
        self.arm_request_timer(ctx);
        self.check_prepared(ctx, seq);
    }

    fn on_prepare(&mut self, ctx: &mut Ctx<'_, Self>, msg: Signed, view: View, seq: Seq, d: u64) {
        if view != self.view || msg.from == self.primary(view) || !self.in_window(seq) {
            return;
        }
        let from = msg.from;
        if self.clashes(seq, view, d, from, false) {
            self.conflict(ctx, from, ConflictKind::Prepare, view, seq);
        }
        self.log
            .entry(seq)
            .or_default()
            .prepares
            .entry((view, d))
            .or_default()
            .insert(from, msg);
        self.check_prepared(ctx, seq);
    }

    /// Whether `from` already sent a prepare (or commit) for `(view, seq)` with another
    /// digest than `d`.
    fn clashes(&self, seq: Seq, view: View, d: u64, from: u32, commits: bool) -> bool {
        if from == self.me {
            return false;
        }
        self.log.get(&seq).is_some_and(|e| {
            let by = if commits { &e.commits } else { &e.prepares };
            by.iter()
                .any(|((v, other), m)| *v == view && *other != d && m.contains_key(&from))
        })
    }

    /// If prepared at `seq` in the current view and COMMIT not yet sent: persist the
    /// certificate, send COMMIT.
    fn check_prepared(&mut self, ctx: &mut Ctx<'_, Self>, seq: Seq) {
        let view = self.view;
        let need = 2 * self.f;
        let Some(entry) = self.log.get(&seq) else {
            return;
        };
        let Some((v, d, _, pp)) = &entry.pp else {
            return;
        };
        let d = *d;
        if *v != view || entry.commit_sent == Some((view, d)) {
            return;
        }
        let primary = self.primary(view);
        let prepares: Vec<Signed> = entry
            .prepares
            .get(&(view, d))
            .map(|m| {
                m.iter()
                    .filter(|(from, _)| **from != primary)
                    .map(|(_, s)| s.clone())
                    .collect()
            })
            .unwrap_or_default();
        if prepares.len() < need {
            return;
        }
        let cert = PreparedCert {
            pre_prepare: pp.clone(),
            prepares: prepares.into_iter().take(need).collect(),
        };
        if !self.persist(ctx, "persist prepared certificate", |s| {
            s.put_prepared(seq, &cert)
        }) {
            return;
        }
        let me = self.me;
        let out = self.out_digest(d);
        let commit = self.sign(Body::Commit {
            view,
            seq,
            digest: out,
        });
        let entry = self.log.entry(seq).or_default();
        entry.cert = Some(cert);
        entry.commit_sent = Some((view, d));
        entry
            .commits
            .entry((view, d))
            .or_default()
            .insert(me, commit.clone());
        if self.behaviour() != Some(Behaviour::Silent) {
            ctx.observe(Observation::CommitSent {
                view,
                seq,
                digest: out,
            });
            self.out(None, commit);
        }
        if self.bugs.execute_on_prepared {
            self.mark_committed(ctx, seq, view, d);
        } else {
            self.check_committed(ctx, seq);
        }
    }

    fn on_commit(&mut self, ctx: &mut Ctx<'_, Self>, msg: Signed, view: View, seq: Seq, d: u64) {
        if view != self.view || !self.in_window(seq) {
            return;
        }
        let from = msg.from;
        if self.clashes(seq, view, d, from, true) {
            self.conflict(ctx, from, ConflictKind::Commit, view, seq);
        }
        self.log
            .entry(seq)
            .or_default()
            .commits
            .entry((view, d))
            .or_default()
            .insert(from, msg);
        self.check_committed(ctx, seq);
    }

    fn check_committed(&mut self, ctx: &mut Ctx<'_, Self>, seq: Seq) {
        let view = self.view;
        let Some(entry) = self.log.get(&seq) else {
            return;
        };
        let Some((_, d, _, _)) = &entry.pp else {
            return;
        };
        let d = *d;
        if entry.committed.is_some() || entry.commit_sent != Some((view, d)) {
            return;
        }
        let count = entry.commits.get(&(view, d)).map_or(0, |m| m.len());
        if count >= self.commit_quorum() {
            self.mark_committed(ctx, seq, view, d);
        }
    }

    /// Records `seq` as committed (its certificate persisted) and executes what it can.
    fn mark_committed(&mut self, ctx: &mut Ctx<'_, Self>, seq: Seq, view: View, d: u64) {
        let Some(entry) = self.log.get(&seq) else {
            return;
        };
        if entry.committed.is_some() {
            return;
        }
        let Some((_, _, _, pp)) = &entry.pp else {
            return;
        };
        let commits: Vec<Signed> = entry
            .commits
            .get(&(view, d))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let cert = CommitCert {
            pre_prepare: pp.clone(),
            commits,
        };
        if !self.persist(ctx, "persist commit certificate", |s| {
            s.put_committed(seq, &cert)
        }) {
            return;
        }
        self.log.entry(seq).or_default().committed = Some(cert);
        self.execute(ctx);
    }

    /// Executes committed sequence numbers in order.
    fn execute(&mut self, ctx: &mut Ctx<'_, Self>) {
        let mut progressed = false;
        loop {
            let seq = self.last_exec + 1;
            let Some(cert) = self.log.get(&seq).and_then(|e| e.committed.clone()) else {
                break;
            };
            let Body::PrePrepare { view, value, .. } = &cert.pre_prepare.body else {
                break;
            };
            let (view, value) = (*view, value.clone());
            let d = digest(&value);
            let Some(durable) = self.durable.as_mut() else {
                return;
            };
            if durable.sm.applied() != self.last_exec {
                return self.fail_stop(ctx, "execute", "state machine out of step with the log");
            }
            let (op, request) = match &value {
                Value::Null => (None, None),
                Value::Request { request, .. } => (Some(OpId(request.op)), Some(request.clone())),
            };
            let result = match &request {
                None => durable.sm.apply_batch(seq, 0, &[]).map(|_| None),
                Some(r) => {
                    let kv = KvOp::from(&r.operation);
                    // With the defect, the replica does not recognise the request: it
                    // executes under an identity of its own.
                    let id = if self.bugs.no_request_dedup {
                        OpId(u64::MAX - seq)
                    } else {
                        OpId(r.op)
                    };
                    durable
                        .sm
                        .apply_batch(seq, 0, &[(id, &kv)])
                        .map(|mut v| v.pop())
                }
            };
            let result = match result {
                Ok(r) => r,
                Err(e) => return self.fail_stop(ctx, "execute", e),
            };
            self.last_exec = seq;
            progressed = true;
            ctx.observe(Observation::Executed {
                seq,
                view,
                digest: d,
                op,
                effective: result.as_ref().is_some_and(|(_, eff)| *eff),
            });
            if let (Some(r), Some((outcome, _))) = (request, result) {
                let op = OpId(r.op);
                let outcome = Outcome::from(&outcome);
                self.waiting.remove(&op);
                self.assigned.remove(&op);
                self.answered.insert(op, (r.proxy, outcome.clone()));
                if self.behaviour() != Some(Behaviour::Silent)
                    && self.behaviour() != Some(Behaviour::ForgeReplies)
                {
                    let v = self.view;
                    self.send(
                        ctx,
                        r.proxy,
                        Body::Reply {
                            view: v,
                            op: r.op,
                            outcome,
                        },
                    );
                }
            }
            if seq.is_multiple_of(self.config().checkpoint_interval) {
                self.take_checkpoint(ctx, seq);
            }
        }
        if progressed {
            self.restart_request_timer(ctx);
            if let Some(p) = self.pending_stable.take() {
                if p.seq <= self.last_exec {
                    self.make_stable(ctx, p);
                } else {
                    self.pending_stable = Some(p);
                }
            }
        }
    }

    // ---- Checkpoints ----

    fn take_checkpoint(&mut self, ctx: &mut Ctx<'_, Self>, seq: Seq) {
        let Some(durable) = self.durable.as_ref() else {
            return;
        };
        let snapshot = match durable.sm.snapshot() {
            Ok(s) => s,
            Err(e) => return self.fail_stop(ctx, "checkpoint", e),
        };
        let state = state_digest(&snapshot);
        ctx.observe(Observation::CheckpointTaken { seq, state });
        if seq == self.stable.seq && state == self.stable.state {
            // It adopted this checkpoint before reaching it: now it can serve the state.
            self.stable_snapshot = Some(snapshot.clone());
        }
        self.own_checkpoints.insert(seq, (state, snapshot));
        let msg = self.sign(Body::Checkpoint { seq, state });
        self.checkpoints
            .entry(seq)
            .or_default()
            .entry(state)
            .or_default()
            .insert(self.me, msg.clone());
        if self.behaviour() != Some(Behaviour::Silent) {
            self.out(None, msg);
        }
        self.check_stable(ctx, seq);
    }

    fn on_checkpoint(&mut self, ctx: &mut Ctx<'_, Self>, msg: Signed, seq: Seq, state: u64) {
        if seq <= self.stable.seq {
            return;
        }
        let from = msg.from;
        self.checkpoints
            .entry(seq)
            .or_default()
            .entry(state)
            .or_default()
            .insert(from, msg);
        self.check_stable(ctx, seq);
    }

    fn check_stable(&mut self, ctx: &mut Ctx<'_, Self>, seq: Seq) {
        if seq <= self.stable.seq {
            return;
        }
        let quorum = 2 * self.f + 1;
        let Some((state, proof)) = self.checkpoints.get(&seq).and_then(|by| {
            by.iter()
                .find(|(_, m)| m.len() >= quorum)
                .map(|(s, m)| (*s, m.values().take(quorum).cloned().collect::<Vec<_>>()))
        }) else {
            return;
        };
        let stable = Stable {
            seq,
            state,
            proof: Proof(proof),
        };
        if self.last_exec >= seq {
            self.make_stable(ctx, stable);
        } else if self.pending_stable.as_ref().is_none_or(|p| p.seq < seq) {
            // Behind it: keep executing what is in the log; adopt it (and fall back on
            // state transfer) only if execution stalls.
            self.pending_stable = Some(stable);
        }
    }

    /// Adopts a stable checkpoint (proven by 2f+1 matching checkpoint messages): syncs the
    /// state machine if it is past it, persists it, garbage-collects the log below it.
    fn make_stable(&mut self, ctx: &mut Ctx<'_, Self>, stable: Stable) {
        if stable.seq <= self.stable.seq {
            return;
        }
        if self.last_exec >= stable.seq
            && let Some(d) = self.durable.as_mut()
            && let Err(e) = d.sm.sync()
        {
            return self.fail_stop(ctx, "sync state machine", e);
        }
        if !self.persist(ctx, "persist stable checkpoint", |s| s.set_stable(&stable)) {
            return;
        }
        let seq = stable.seq;
        ctx.observe(Observation::CheckpointStable { seq });
        if let Some((state, snapshot)) = self.own_checkpoints.remove(&seq)
            && state == stable.state
        {
            self.stable_snapshot = Some(snapshot);
        } else {
            self.stable_snapshot = None;
        }
        self.own_checkpoints = self.own_checkpoints.split_off(&(seq + 1));
        self.checkpoints = self.checkpoints.split_off(&(seq + 1));
        self.log = self.log.split_off(&(seq + 1));
        self.stable = stable;
        if self.next_seq <= seq {
            self.next_seq = seq + 1;
        }
        // The window moved: the primary assigns what waited.
        if self.active && self.is_primary() {
            let waiting: Vec<Value> = self.waiting.values().cloned().collect();
            for value in waiting {
                self.assign(ctx, value);
            }
        }
    }

    // ---- Catching up ----

    fn on_fetch(&mut self, ctx: &mut Ctx<'_, Self>, asker: u32, from: Seq) {
        if from <= self.stable.seq
            && self.stable.seq > 0
            && let Some(snapshot) = &self.stable_snapshot
        {
            let body = Body::State {
                seq: self.stable.seq,
                state: self.stable.state,
                proof: self.stable.proof.clone(),
                snapshot: snapshot.clone(),
            };
            self.send(ctx, asker, body);
        }
        let certs: Vec<CommitCert> = self
            .log
            .range(from.max(self.stable.seq + 1)..)
            .filter_map(|(_, e)| e.committed.clone())
            .filter(|c| c.commits.len() > 2 * self.f)
            .take(16)
            .collect();
        if !certs.is_empty() {
            self.send(ctx, asker, Body::Certs { certs });
        }
    }

    /// Checks a commit certificate: the primary's pre-prepare and 2f+1 matching commits
    /// from distinct replicas, all authentic.
    fn valid_commit_cert(&self, cert: &CommitCert) -> Option<(View, Seq, Value)> {
        let key = self.key();
        let pp = &cert.pre_prepare;
        let Body::PrePrepare {
            view,
            seq,
            digest: d,
            value,
        } = &pp.body
        else {
            return None;
        };
        if !pp.verify(key)
            || pp.from != self.primary(*view)
            || *d != digest(value)
            || !value_authentic(key, value)
        {
            return None;
        }
        let mut senders = BTreeSet::new();
        for c in &cert.commits {
            if let Body::Commit {
                view: v,
                seq: s,
                digest: cd,
            } = &c.body
                && v == view
                && s == seq
                && cd == d
                && c.verify(key)
            {
                senders.insert(c.from);
            }
        }
        (senders.len() > 2 * self.f).then(|| (*view, *seq, value.clone()))
    }

    fn on_certs(&mut self, ctx: &mut Ctx<'_, Self>, certs: Vec<CommitCert>) {
        for cert in certs {
            let Some((view, seq, value)) = self.valid_commit_cert(&cert) else {
                continue;
            };
            // Also below the stable checkpoint, if this replica adopted one it had not
            // reached: executing is as good as a state transfer.
            if seq <= self.last_exec || seq > self.high() {
                continue;
            }
            if self.log.get(&seq).is_some_and(|e| e.committed.is_some()) {
                continue;
            }
            if !self.persist(ctx, "persist commit certificate", |s| {
                s.put_committed(seq, &cert)
            }) {
                return;
            }
            let d = digest(&value);
            let entry = self.log.entry(seq).or_default();
            if entry.pp.as_ref().is_none_or(|(v, _, _, _)| *v <= view) {
                entry.pp = Some((view, d, value, cert.pre_prepare.clone()));
            }
            entry.committed = Some(cert);
        }
        self.execute(ctx);
    }

    /// Checks a checkpoint proof: 2f+1 authentic checkpoint messages from distinct
    /// replicas for `seq` and `state`.
    fn valid_checkpoint_proof(&self, seq: Seq, state: u64, proof: &Proof) -> bool {
        if seq == 0 {
            return true;
        }
        let key = self.key();
        let senders: BTreeSet<u32> = proof
            .0
            .iter()
            .filter(|m| {
                matches!(m.body, Body::Checkpoint { seq: s, state: d } if s == seq && d == state)
                    && m.verify(key)
            })
            .map(|m| m.from)
            .collect();
        senders.len() > 2 * self.f
    }

    fn on_state(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        seq: Seq,
        state: u64,
        proof: Proof,
        snapshot: Snapshot,
    ) {
        if seq <= self.last_exec
            || snapshot.index != seq
            || state_digest(&snapshot) != state
            || !self.valid_checkpoint_proof(seq, state, &proof)
        {
            return;
        }
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        if let Err(e) = d.sm.install(&snapshot) {
            return self.fail_stop(ctx, "install state", e);
        }
        self.last_exec = seq;
        ctx.sometimes("pbft.state_transferred");
        ctx.observe(Observation::StateInstalled { seq, state });
        // Requests the state already executed wait no more.
        for item in &snapshot.items {
            if let crate::raft::state_machine::SnapshotItem::Session { op, .. } = item {
                self.waiting.remove(op);
                self.assigned.remove(op);
            }
        }
        self.own_checkpoints.insert(seq, (state, snapshot));
        if seq > self.stable.seq {
            self.make_stable(ctx, Stable { seq, state, proof });
        } else if seq == self.stable.seq {
            self.stable_snapshot = self.own_checkpoints.remove(&seq).map(|(_, s)| s);
        }
        self.execute(ctx);
    }

    // ---- View change ----

    fn vc_timeout(&self, view: View) -> SimDuration {
        let failed = view.saturating_sub(self.last_active + 1).min(3);
        SimDuration::from_micros(self.config().view_change_timeout.as_micros() << failed)
    }

    fn start_view_change(&mut self, ctx: &mut Ctx<'_, Self>, view: View) {
        if view <= self.view {
            return;
        }
        if self.active {
            self.last_active = self.view;
        }
        if !self.persist(ctx, "persist view", |s| s.set_view(view, false)) {
            return;
        }
        self.view = view;
        self.active = false;
        self.new_view = None;
        self.request_deadline = None;
        ctx.observe(Observation::ViewChangeStarted { view });
        let vc = self.make_view_change(view);
        self.view_changes
            .entry(view)
            .or_default()
            .insert(self.me, vc.clone());
        if self.behaviour() != Some(Behaviour::Silent) {
            self.out(None, vc);
        }
        self.vc_timer_armed = None;
        self.arm_vc_timer(ctx);
        self.try_new_view(ctx, view);
    }

    /// The view-change timer starts only once 2f+1 replicas sent VIEW-CHANGE for the
    /// view (PBFT §4.5.2): a replica alone in a higher view waits there instead of
    /// running ahead, and joins when the others move.
    fn arm_vc_timer(&mut self, ctx: &mut Ctx<'_, Self>) {
        let view = self.view;
        if self.active || self.vc_timer_armed == Some(view) {
            return;
        }
        let count = self.view_changes.get(&view).map_or(0, |m| m.len());
        if count > 2 * self.f {
            self.vc_timer_armed = Some(view);
            let after = self.vc_timeout(view);
            ctx.set_timer(after, Timer::ViewChange { view });
        }
    }

    fn make_view_change(&self, view: View) -> Signed {
        let mut prepared: Vec<PreparedCert> = self
            .log
            .range(self.stable.seq + 1..)
            .filter_map(|(_, e)| e.cert.clone())
            .collect();
        if self.behaviour() == Some(Behaviour::LieViewChange) {
            // Claims a certificate for the next sequence number with prepares forged
            // under other replicas' identities.
            let seq = self.stable.seq + 1;
            let value = Value::Null;
            let d = digest(&value);
            let pp_view = view.saturating_sub(1);
            let pp = Signed::new(
                self.secret,
                self.primary(pp_view),
                Body::PrePrepare {
                    view: pp_view,
                    seq,
                    digest: d,
                    value,
                },
            );
            let prepares = (0..self.n as u32)
                .filter(|r| *r != self.primary(pp_view))
                .take(2 * self.f)
                .map(|r| {
                    Signed::new(
                        self.secret,
                        r,
                        Body::Prepare {
                            view: pp_view,
                            seq,
                            digest: d,
                        },
                    )
                })
                .collect();
            prepared.retain(|c| cert_seq(c) != Some(seq));
            prepared.push(PreparedCert {
                pre_prepare: pp,
                prepares,
            });
        }
        self.sign(Body::ViewChange {
            view,
            stable: self.stable.seq,
            state: self.stable.state,
            proof: self.stable.proof.clone(),
            prepared,
        })
    }

    /// Checks a prepared certificate: the primary's authentic pre-prepare and 2f
    /// authentic matching prepares from distinct backups.
    fn valid_prepared_cert(&self, cert: &PreparedCert) -> Option<(View, Seq, u64)> {
        let key = self.key();
        let pp = &cert.pre_prepare;
        let Body::PrePrepare {
            view,
            seq,
            digest: d,
            value,
        } = &pp.body
        else {
            return None;
        };
        if !pp.verify(key)
            || pp.from != self.primary(*view)
            || *d != digest(value)
            || !value_authentic(key, value)
        {
            return None;
        }
        let mut senders = BTreeSet::new();
        for p in &cert.prepares {
            if let Body::Prepare {
                view: v,
                seq: s,
                digest: pd,
            } = &p.body
                && v == view
                && s == seq
                && pd == d
                && p.from != pp.from
                && p.verify(key)
            {
                senders.insert(p.from);
            }
        }
        (senders.len() >= 2 * self.f).then_some((*view, *seq, *d))
    }

    /// Checks a VIEW-CHANGE message's content for `view`.
    fn valid_view_change(&self, msg: &Signed, view: View) -> bool {
        let Body::ViewChange {
            view: v,
            stable,
            state,
            proof,
            prepared,
        } = &msg.body
        else {
            return false;
        };
        if *v != view || !self.valid_checkpoint_proof(*stable, *state, proof) {
            return false;
        }
        prepared.iter().all(|c| {
            self.valid_prepared_cert(c).is_some_and(|(pv, seq, _)| {
                pv < view && seq > *stable && seq <= stable + self.config().window
            })
        })
    }

    fn on_view_change(&mut self, ctx: &mut Ctx<'_, Self>, msg: Signed, view: View) {
        if view < self.view {
            return;
        }
        if !self.valid_view_change(&msg, view) {
            ctx.observe(Observation::Rejected {
                claimed: msg.from,
                reason: "view change with an invalid certificate".into(),
            });
            return;
        }
        let from = msg.from;
        if view == self.view && self.active {
            // A replica behind: the primary shows it the NEW-VIEW.
            if self.is_primary()
                && let Some(nv) = self.new_view.clone()
            {
                self.out(Some(NodeId(from)), nv);
            }
            return;
        }
        self.view_changes.entry(view).or_default().insert(from, msg);
        self.arm_vc_timer(ctx);
        // f+1 replicas want a higher view: join the smallest of them.
        let mut senders: BTreeMap<u32, View> = BTreeMap::new();
        for (v, by) in self.view_changes.range(self.view + 1..) {
            for r in by.keys() {
                senders.entry(*r).or_insert(*v);
            }
        }
        if senders.len() > self.f
            && let Some(&smallest) = senders.values().min()
            && (smallest > self.view)
        {
            self.start_view_change(ctx, smallest);
        }
        self.try_new_view(ctx, view);
    }

    /// The pre-prepares a NEW-VIEW for `view` re-issues, computed from its view-change
    /// set: `(min_s, stable proof of min_s, [(seq, value)])`.
    fn compute_reissue(&self, set: &[Signed]) -> (Stable, Vec<(Seq, Value)>) {
        let mut stable = Stable::default();
        let mut best: BTreeMap<Seq, (View, Value)> = BTreeMap::new();
        for vc in set {
            if let Body::ViewChange {
                stable: s,
                state,
                proof,
                prepared,
                ..
            } = &vc.body
            {
                if *s > stable.seq {
                    stable = Stable {
                        seq: *s,
                        state: *state,
                        proof: proof.clone(),
                    };
                }
                for c in prepared {
                    if let Body::PrePrepare {
                        view, seq, value, ..
                    } = &c.pre_prepare.body
                        && best.get(seq).is_none_or(|(bv, _)| view > bv)
                    {
                        best.insert(*seq, (*view, value.clone()));
                    }
                }
            }
        }
        let min_s = stable.seq;
        let max_s = if self.bugs.view_change_drops_prepared {
            min_s
        } else {
            best.keys().next_back().copied().unwrap_or(min_s).max(min_s)
        };
        let values = (min_s + 1..=max_s)
            .map(|seq| {
                (
                    seq,
                    best.get(&seq)
                        .map_or(Value::Null, |(_, value)| value.clone()),
                )
            })
            .collect();
        (stable, values)
    }

    fn try_new_view(&mut self, ctx: &mut Ctx<'_, Self>, view: View) {
        if view != self.view || self.active || self.primary(view) != self.me {
            return;
        }
        let quorum = 2 * self.f + 1;
        let Some(set) = self.view_changes.get(&view) else {
            return;
        };
        if set.len() < quorum || !set.contains_key(&self.me) {
            return;
        }
        // Own message first, then the others in id order.
        let mut chosen: Vec<Signed> = vec![set[&self.me].clone()];
        chosen.extend(
            set.iter()
                .filter(|(r, _)| **r != self.me)
                .map(|(_, m)| m.clone())
                .take(quorum - 1),
        );
        let (stable, values) = self.compute_reissue(&chosen);
        let pre_prepares: Vec<Signed> = values
            .iter()
            .map(|(seq, value)| {
                self.sign(Body::PrePrepare {
                    view,
                    seq: *seq,
                    digest: digest(value),
                    value: value.clone(),
                })
            })
            .collect();
        let nv = self.sign(Body::NewView {
            view,
            view_changes: Proof(chosen),
            pre_prepares: Proof(pre_prepares.clone()),
        });
        if self.behaviour() != Some(Behaviour::Silent) {
            self.out(None, nv.clone());
        }
        self.enter_view(ctx, view, nv, stable, pre_prepares);
    }

    fn on_new_view(&mut self, ctx: &mut Ctx<'_, Self>, msg: Signed) {
        let Body::NewView {
            view,
            view_changes,
            pre_prepares,
        } = &msg.body
        else {
            return;
        };
        let view = *view;
        if msg.from != self.primary(view) || view < self.view || (view == self.view && self.active)
        {
            return;
        }
        let quorum = 2 * self.f + 1;
        let senders: BTreeSet<u32> = view_changes
            .0
            .iter()
            .filter(|vc| vc.verify(self.key()) && self.valid_view_change(vc, view))
            .map(|vc| vc.from)
            .collect();
        let valid_set = senders.len() >= quorum && view_changes.0.len() == senders.len();
        let (stable, values) = self.compute_reissue(&view_changes.0);
        let matches = valid_set
            && values.len() == pre_prepares.0.len()
            && values
                .iter()
                .zip(&pre_prepares.0)
                .all(|((seq, value), pp)| {
                    pp.from == msg.from
                        && pp.verify(self.key())
                        && pp.body
                            == Body::PrePrepare {
                                view,
                                seq: *seq,
                                digest: digest(value),
                                value: value.clone(),
                            }
                });
        if !matches {
            ctx.observe(Observation::Rejected {
                claimed: msg.from,
                reason: "new view whose pre-prepares do not follow from its view-change set".into(),
            });
            if view >= self.view {
                self.start_view_change(ctx, view + 1);
            }
            return;
        }
        let pps = pre_prepares.0.clone();
        self.enter_view(ctx, view, msg, stable, pps);
    }

    /// Enters `view`: adopts its stable checkpoint, accepts its re-issued pre-prepares
    /// (a backup sends its prepares for them), and resumes normal operation.
    fn enter_view(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        view: View,
        nv: Signed,
        stable: Stable,
        pre_prepares: Vec<Signed>,
    ) {
        if !self.persist(ctx, "persist view", |s| s.set_view(view, true)) {
            return;
        }
        self.view = view;
        // Not active until the re-issued pre-prepares are in: a stable checkpoint from
        // the view-change set moves the window, and a primary must not assign waiting
        // requests at sequence numbers the NEW-VIEW re-issues.
        self.active = false;
        self.last_active = view;
        self.new_view = Some(nv);
        self.view_changes = self.view_changes.split_off(&(view + 1));
        self.assigned.clear();
        let reissued = pre_prepares.len() as u64;
        if stable.seq > self.stable.seq {
            self.make_stable(ctx, stable);
        }
        self.active = true;
        let mut max_s = self.stable.seq;
        let primary = self.is_primary();
        let mut reissued_requests = false;
        for pp in pre_prepares {
            let Body::PrePrepare {
                seq,
                digest: d,
                value,
                ..
            } = pp.body.clone()
            else {
                continue;
            };
            max_s = max_s.max(seq);
            if seq <= self.stable.seq {
                continue;
            }
            if !self.persist(ctx, "persist pre-prepare", |s| s.put_pre_prepare(seq, &pp)) {
                return;
            }
            if let Value::Request { request, .. } = &value {
                self.assigned.insert(OpId(request.op));
                reissued_requests = true;
            }
            let entry = self.log.entry(seq).or_default();
            entry.pp = Some((view, d, value, pp));
            if !primary {
                let prepare = self.sign(Body::Prepare {
                    view,
                    seq,
                    digest: self.out_digest(d),
                });
                self.log
                    .entry(seq)
                    .or_default()
                    .prepares
                    .entry((view, d))
                    .or_default()
                    .insert(self.me, prepare.clone());
                if self.behaviour() != Some(Behaviour::Silent) {
                    self.out(None, prepare);
                }
            }
        }
        self.next_seq = max_s.max(self.last_exec).max(self.stable.seq) + 1;
        ctx.sometimes("pbft.view_changed");
        if reissued_requests {
            ctx.sometimes("pbft.prepared_request_reissued");
        }
        ctx.observe(Observation::NewViewEntered { view, reissued });
        let seqs: Vec<Seq> = self.log.keys().copied().collect();
        for seq in seqs {
            self.check_prepared(ctx, seq);
        }
        if primary {
            let waiting: Vec<Value> = self.waiting.values().cloned().collect();
            for value in waiting {
                self.assign(ctx, value);
            }
        } else {
            self.request_deadline = None;
            self.arm_request_timer(ctx);
        }
    }

    // ---- Client proxy ----

    fn on_reply(&mut self, ctx: &mut Ctx<'_, Self>, from: u32, op: u64, outcome: Outcome) {
        let op = OpId(op);
        let Some(p) = self.pending.get_mut(&op) else {
            return;
        };
        p.replies.insert(from, outcome.clone());
        let matching = p.replies.values().filter(|o| **o == outcome).count();
        if matching > self.f || self.bugs.client_trusts_first_reply {
            self.pending.remove(&op);
            ctx.observe(Observation::ProxyAccepted { op });
            ctx.reply_ok(op, KvResult::from(&outcome));
        }
    }

    fn proxy_send(&mut self, op: OpId, to_all: bool) {
        let Some(p) = self.pending.get(&op) else {
            return;
        };
        let body = Body::Request {
            value: p.value.clone(),
        };
        // The proxy speaks for the client: its messages carry the replica identity of
        // the node, but the request inside carries the client's authenticator.
        let msg = self.sign(body);
        if to_all {
            for r in 0..self.n as u32 {
                self.out(Some(NodeId(r)), msg.clone());
            }
        } else {
            let primary = self.primary(self.view);
            self.out(Some(NodeId(primary)), msg);
        }
    }

    // ---- Ticks ----

    fn on_tick(&mut self, ctx: &mut Ctx<'_, Self>) {
        let tick = self.config().tick;
        ctx.set_timer(tick, Timer::Tick);
        if self.behaviour() == Some(Behaviour::Silent) {
            return;
        }
        match self.behaviour() {
            Some(Behaviour::Replay) => {
                let again: Vec<Signed> = self.replay.iter().take(8).cloned().collect();
                for m in again {
                    self.out(None, m);
                }
            }
            Some(Behaviour::Equivocate) => {
                for m in std::mem::take(&mut self.replay) {
                    self.out(None, m);
                }
            }
            _ => {}
        }
        if self.active
            && self.config().view_changes
            && !self.waiting.is_empty()
            && self.request_deadline.is_some_and(|d| ctx.now() >= d)
        {
            let next = self.view + 1;
            return self.start_view_change(ctx, next);
        }
        if self.last_exec != self.progress_mark {
            self.progress_mark = self.last_exec;
            self.idle_ticks = 0;
            return;
        }
        self.idle_ticks += 1;
        if let Some(p) = self.pending_stable.take()
            && p.seq > self.stable.seq
        {
            // Execution stalled below a stable checkpoint: adopt it, fetch the state.
            self.make_stable(ctx, p);
        }
        if !self.active {
            // Retransmit the view change; meanwhile catch up with commit certificates.
            if let Some(vc) = self
                .view_changes
                .get(&self.view)
                .and_then(|m| m.get(&self.me))
            {
                self.out(None, vc.clone());
            }
            let from = self.last_exec + 1;
            self.broadcast(ctx, Body::Fetch { from });
            return;
        }
        let stuck: Vec<Seq> = self
            .log
            .range(self.last_exec + 1..)
            .filter(|(_, e)| e.committed.is_none())
            .map(|(s, _)| *s)
            .collect();
        let behind = !stuck.is_empty()
            || self.stable.seq > self.last_exec
            || self.log.range(self.last_exec + 1..).next().is_some()
            || self
                .checkpoints
                .keys()
                .next_back()
                .is_some_and(|s| *s > self.last_exec)
            || !self.waiting.is_empty();
        if behind || self.idle_ticks.is_multiple_of(8) {
            let from = self.last_exec + 1;
            self.broadcast(ctx, Body::Fetch { from });
        }
        // Resend own messages for what is not committed.
        for seq in stuck {
            let Some(e) = self.log.get(&seq) else {
                continue;
            };
            let Some((v, d, _, pp)) = &e.pp else { continue };
            if *v != self.view {
                continue;
            }
            let mut again = Vec::new();
            if self.is_primary() {
                again.push(pp.clone());
            } else if let Some(p) = e.prepares.get(&(*v, *d)).and_then(|m| m.get(&self.me)) {
                again.push(p.clone());
            }
            if let Some(c) = e.commits.get(&(*v, *d)).and_then(|m| m.get(&self.me)) {
                again.push(c.clone());
            }
            for m in again {
                self.out(None, m);
            }
        }
        if self.is_primary() {
            let waiting: Vec<Value> = self.waiting.values().cloned().collect();
            for value in waiting {
                self.assign(ctx, value);
            }
        }
    }
}

impl Node {
    /// Runs a handler of twin copy `i` through [`Ctx::nested`] and emits what it did as
    /// this node: its messages as they are (both copies sign as this replica), its timers
    /// tagged with `i`, its observations unchanged. Only copy 0 answers the kernel's
    /// clients (both proxies track every operation; one completion per operation).
    fn run_twin(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        i: usize,
        run: impl FnOnce(&mut Node, &mut Ctx<'_, Node>),
    ) {
        let Some(copy) = self.twins.get_mut(i) else {
            return;
        };
        let ((), effects) = ctx.nested(|inner| run(copy, inner));
        let tag = i as u8;
        let tag_timer = move |timer: Timer| Timer::Twin {
            twin: tag,
            timer: Box::new(timer),
        };
        let lift = Lift::<Node, Node> {
            msg: &|m| m,
            timer: &tag_timer,
            obs: &Some,
            reply: &Some,
        };
        for effect in effects {
            if i != 0 && matches!(effect, Effect::Reply { .. }) {
                continue;
            }
            if let Some(e) = effect.lift(&lift) {
                ctx.forward(e);
            }
        }
    }
}

fn cert_seq(cert: &PreparedCert) -> Option<Seq> {
    match &cert.pre_prepare.body {
        Body::PrePrepare { seq, .. } => Some(*seq),
        _ => None,
    }
}

/// The view a message belongs to, for noticing that the others moved on.
fn message_view(body: &Body) -> Option<View> {
    match body {
        Body::PrePrepare { view, .. } | Body::Prepare { view, .. } | Body::Commit { view, .. } => {
            Some(*view)
        }
        _ => None,
    }
}

impl Node {
    fn start(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.n = ctx.node_count();
        self.f = (self.n.saturating_sub(1)) / 3;
        self.me = ctx.id().0;
        self.secret = secret(self.key(), self.me, false);
        if self.twin.is_none() && self.behaviour() == Some(Behaviour::Twin) {
            // Two honest copies under one identity, each recovering from its own
            // directories; this process only routes.
            self.twins = (0..2u8)
                .map(|i| {
                    let mut copy = Node::new(self.settings.clone(), self.bugs);
                    copy.twin = Some(i);
                    copy
                })
                .collect();
            for i in 0..2 {
                self.run_twin(ctx, i, |t, inner| t.on_start(inner));
            }
            return;
        }
        let disk = ctx.disk();
        let (state_dir, log_dir) = (self.dir(STATE_DIR), self.dir(LOG_DIR));
        let sm = match StateMachine::open(self.settings.engine.as_ref(), disk.clone(), &state_dir) {
            Ok(sm) => sm,
            Err(e) => return self.fail_stop(ctx, "recover state machine", e),
        };
        let (store, recovered) = match Store::open(self.settings.engine.as_ref(), disk, &log_dir) {
            Ok(s) => s,
            Err(e) => return self.fail_stop(ctx, "recover log", e),
        };
        // A state machine behind the stable checkpoint (this replica adopted a checkpoint
        // it had not reached) catches up by state transfer.
        self.last_exec = sm.applied();
        self.progress_mark = self.last_exec;
        if sm.applied() == recovered.stable.seq && recovered.stable.seq > 0 {
            self.stable_snapshot = sm.snapshot().ok();
        }
        self.view = recovered.view;
        self.active = recovered.active;
        self.last_active = recovered.view;
        self.stable = recovered.stable;
        self.next_seq = self.stable.seq + 1;
        for (seq, pp) in recovered.pre_prepares {
            if let Body::PrePrepare {
                view,
                digest: d,
                value,
                ..
            } = pp.body.clone()
                && seq > self.stable.seq
            {
                if view == self.view && self.primary(view) == self.me {
                    self.next_seq = self.next_seq.max(seq + 1);
                }
                self.log.entry(seq).or_default().pp = Some((view, d, value, pp));
            }
        }
        for (seq, cert) in recovered.prepared {
            if seq > self.stable.seq {
                self.log.entry(seq).or_default().cert = Some(cert);
            }
        }
        for (seq, cert) in recovered.committed {
            if seq > self.stable.seq {
                let entry = self.log.entry(seq).or_default();
                if let Body::PrePrepare {
                    view,
                    digest: d,
                    value,
                    ..
                } = cert.pre_prepare.body.clone()
                {
                    entry.pp = Some((view, d, value, cert.pre_prepare.clone()));
                }
                entry.committed = Some(cert);
            }
        }
        self.durable = Some(Durable { store, sm });
        self.next_seq = self.next_seq.max(self.last_exec + 1);
        // Re-execute what was committed after the state machine's recovered point.
        self.execute(ctx);
        let tick = self.config().tick;
        ctx.set_timer(tick, Timer::Tick);
        if !self.active {
            let view = self.view;
            let vc = self.make_view_change(view);
            self.view_changes
                .entry(view)
                .or_default()
                .insert(self.me, vc.clone());
            if self.behaviour() != Some(Behaviour::Silent) {
                self.out(None, vc);
            }
        }
    }

    fn message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        if !self.twins.is_empty() {
            // Replies are the (honest) client proxies' business: both copies get them.
            // Everything else reaches one copy or both.
            let to: &[usize] = if matches!(msg.body, Body::Reply { .. }) {
                &[0, 1]
            } else {
                match ctx.rng().random_range(0..4u32) {
                    0 => &[0, 1],
                    1 => &[1, 0],
                    2 => &[0],
                    _ => &[1],
                }
            };
            for &i in to {
                let msg = msg.clone();
                self.run_twin(ctx, i, |t, inner| t.on_message(inner, from, msg));
            }
            return;
        }
        if self.durable.is_none() {
            return;
        }
        if msg.from as usize >= self.n || !msg.verify(self.key()) {
            ctx.observe(Observation::Rejected {
                claimed: msg.from,
                reason: "authenticator does not verify".into(),
            });
            return;
        }
        // The client proxy's business: replies.
        if let Body::Reply { op, outcome, .. } = &msg.body {
            let (op, outcome) = (*op, outcome.clone());
            return self.on_reply(ctx, msg.from, op, outcome);
        }
        match self.behaviour() {
            Some(Behaviour::Silent) => return,
            Some(Behaviour::Replay) if self.replay.len() < 64 && msg.from != self.me => {
                self.replay.push(msg.clone());
            }
            _ => {}
        }
        if let Some(v) = message_view(&msg.body)
            && v > self.view
            && v > self.asked_view
        {
            self.asked_view = v;
            let primary = self.primary(v);
            self.send(ctx, primary, Body::FetchNewView { view: v });
        }
        match msg.body.clone() {
            Body::Request { value } => {
                if value_authentic(self.key(), &value) && matches!(value, Value::Request { .. }) {
                    self.on_request(ctx, value);
                } else {
                    ctx.observe(Observation::Rejected {
                        claimed: msg.from,
                        reason: "request without its client's authenticator".into(),
                    });
                }
            }
            Body::PrePrepare {
                view,
                seq,
                digest: d,
                value,
            } => self.on_pre_prepare(ctx, msg, view, seq, d, value),
            Body::Prepare {
                view,
                seq,
                digest: d,
            } => self.on_prepare(ctx, msg, view, seq, d),
            Body::Commit {
                view,
                seq,
                digest: d,
            } => self.on_commit(ctx, msg, view, seq, d),
            Body::Checkpoint { seq, state } => self.on_checkpoint(ctx, msg, seq, state),
            Body::ViewChange { view, .. } => self.on_view_change(ctx, msg, view),
            Body::NewView { .. } => self.on_new_view(ctx, msg),
            Body::Fetch { from } => self.on_fetch(ctx, msg.from, from),
            Body::FetchNewView { view } => {
                if view == self.view
                    && self.active
                    && let Some(nv) = self.new_view.clone()
                {
                    self.out(Some(NodeId(msg.from)), nv);
                }
            }
            Body::Certs { certs } => self.on_certs(ctx, certs),
            Body::State {
                seq,
                state,
                proof,
                snapshot,
            } => self.on_state(ctx, seq, state, proof, snapshot),
            Body::Reply { .. } => {}
        }
    }

    fn timer(&mut self, ctx: &mut Ctx<'_, Self>, id: TimerId, timer: Timer) {
        if !self.twins.is_empty() {
            if let Timer::Twin { twin, timer } = timer
                && (twin as usize) < self.twins.len()
            {
                self.run_twin(ctx, twin as usize, |t, inner| t.on_timer(inner, id, *timer));
            }
            return;
        }
        if self.durable.is_none() {
            return;
        }
        match timer {
            Timer::Tick => self.on_tick(ctx),
            Timer::ViewChange { view } => {
                if view == self.view && !self.active && self.behaviour() != Some(Behaviour::Silent)
                {
                    self.start_view_change(ctx, view + 1);
                }
            }
            Timer::Twin { .. } => {}
            Timer::ClientRetry { op, attempt } => {
                if self.pending.contains_key(&op) {
                    // It never gives up (the kernel's client may have timed out): an
                    // operation invoked completes once the cluster can make progress.
                    self.proxy_send(op, true);
                    let after = SimDuration::from_micros(
                        self.config().client_retry.as_micros() << attempt.min(2),
                    );
                    ctx.set_timer(
                        after,
                        Timer::ClientRetry {
                            op,
                            attempt: attempt.saturating_add(1),
                        },
                    );
                }
            }
        }
    }

    fn client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, request: KvOp) {
        if !self.twins.is_empty() {
            // Both copies' proxies send the request; the client hears from the first.
            for i in 0..2 {
                let request = request.clone();
                self.run_twin(ctx, i, |t, inner| t.on_client(inner, op, request));
            }
            return;
        }
        if self.durable.is_none() {
            return ctx.reply_fail(op, "node unavailable");
        }
        let value = sign_request(
            self.key(),
            Request {
                proxy: self.me,
                op: op.0,
                operation: Operation::from(&request),
            },
        );
        self.pending.insert(
            op,
            Pending {
                value,
                replies: BTreeMap::new(),
            },
        );
        ctx.observe(Observation::ProxyInvoked { op });
        self.proxy_send(op, false);
        let after = self.config().client_retry;
        ctx.set_timer(after, Timer::ClientRetry { op, attempt: 0 });
    }
}

/// Every handler ends with [`Node::flush`]: one sync of what it wrote, then its messages.
impl Process for Node {
    type Msg = Msg;
    type Timer = Timer;
    type Op = KvOp;
    type Reply = KvResult;
    type Obs = Observation;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.start(ctx);
        self.flush(ctx);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        self.message(ctx, from, msg);
        self.flush(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, id: TimerId, timer: Timer) {
        self.timer(ctx, id, timer);
        self.flush(ctx);
    }

    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, request: KvOp) {
        self.client(ctx, op, request);
        self.flush(ctx);
    }

    fn is_leader(&self) -> bool {
        if let Some(first) = self.twins.first() {
            return first.is_leader();
        }
        self.active && self.durable.is_some() && self.is_primary()
    }
}

/// PBFT's coverage points (`docs/coverage.md`): rare paths a sweep should reach.
pub const COVERAGE: &[sim_core::coverage::Point] = &[
    sim_core::coverage::Point {
        name: "pbft.view_changed",
        description: "a replica entered a new view (a NEW-VIEW it sent or validated)",
    },
    sim_core::coverage::Point {
        name: "pbft.prepared_request_reissued",
        description: "a new view re-proposed a client request prepared in an earlier view (not a null fill, above the stable checkpoint)",
    },
    sim_core::coverage::Point {
        name: "pbft.state_transferred",
        description: "a lagging replica installed a transferred state at a stable checkpoint",
    },
    sim_core::coverage::Point {
        name: "pbft.fail_stop",
        description: "a replica stopped on a storage error",
    },
];
