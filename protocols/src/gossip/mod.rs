//! SWIM membership (Das, Gupta and Motivala, 2002) with the Lifeguard extensions
//! (Dadgar, Phillips and Currey, 2018, as in HashiCorp memberlist), and the reference's
//! heartbeat-counter detector as a selectable baseline ([`baseline`]).
//!
//! **Failure detection.** Every protocol period a member probes one other member, in
//! round-robin order over a list it shuffles at the end of every round (so a member is
//! probed by each other member at least once every `2n - 1` periods). It sends PING and
//! waits the *ack timeout*; on a miss it sends PING-REQ to `k` random members, which
//! ping the target on its behalf and forward the ACK. A member that has not answered by
//! the end of the period is *suspected*.
//!
//! **Suspicion and incarnations.** A suspicion lasts the *suspicion timeout*; if it is
//! not refuted by then the member is declared dead (CONFIRM). A suspected member refutes
//! by raising its incarnation number and announcing ALIVE. Updates obey the paper's
//! precedence: ALIVE{i} overrides SUSPECT{j} and ALIVE{j} iff i > j; SUSPECT{i} overrides
//! ALIVE{j} iff i ≥ j and SUSPECT{j} iff i > j; DEAD{i} (and LEFT{i}) override any state
//! of an incarnation ≤ i (memberlist's rule: a stale DEAD never kills a refuted member).
//! Nothing revives a dead member except an ALIVE of a higher incarnation (a rejoin). A
//! dead or departed member is removed from the list after the *cleanup* period, but a
//! tombstone of its incarnation stays, so a delayed ALIVE cannot bring it back. The
//! incarnation number is durable (see `store.rs`): a restarted member rejoins with a
//! number it has never announced.
//!
//! **Dissemination.** Updates ride on PING, ACK and PING-REQ, at most `max_piggyback` per
//! message, fewest-sent first; each is sent `retransmit_mult · ⌈log₁₀(n + 1)⌉` times
//! (λ·log n). Periodically a member runs a push-pull exchange with one random member:
//! both send a bounded slice of their tables (`push_pull_entries` members from a cursor
//! the initiator moves round), never the whole table; a slice whose reply does not
//! arrive is retried at the next exchange before the cursor moves on. A (re)starting member joins by
//! push-pull through the seed members, once per period until it has swept the id space.
//!
//! **Lifeguard.** A local health multiplier (0 to `max_health − 1`) rises when this
//! member's probes fail and when it has to refute a suspicion of itself, and falls when a
//! probe succeeds; it stretches the period and the ack timeout by `1 + health`. A
//! suspicion starts at the maximum timeout and shrinks towards the minimum as independent
//! members confirm it (every member whose own probe of the suspect fails is one, and
//! gossips the suspicion under its name): `max − (max − min)·log(c + 1)/log(k + 1)` after `c` of the `k`
//! expected confirmations.
//!
//! **Leave.** A member that leaves sends LEFT{i} about itself to every member it knows
//! (the reference's behaviour) and goes silent.

pub mod baseline;
pub mod checker;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sim_core::{Ctx, NodeId, OpId, Process, SimDuration, SimTime, TimerId};
use storage::kv::EngineOpener;

use self::store::Store;
use crate::common::{BugFlag, BugFlagError, unknown};

/// Where a member keeps its durable state on its disk.
const DIR: &str = "gossip";

pub type Incarnation = u64;

/// A member's state as one node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Alive,
    Suspect,
    Dead,
    /// Left gracefully.
    Left,
    /// Dead or left, and removed from the list after the cleanup period (a tombstone).
    Removed,
}

impl State {
    /// Dead, left or removed: out of the group until it rejoins with a higher incarnation.
    pub fn is_down(self) -> bool {
        matches!(self, State::Dead | State::Left | State::Removed)
    }
}

/// A membership update, as gossiped: `node` is in `state` at `incarnation`, according to
/// `by` (the suspecting member for SUSPECT, the sender otherwise).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub node: NodeId,
    pub state: State,
    pub incarnation: Incarnation,
    pub by: NodeId,
}

impl fmt::Debug for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.state {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Dead => "dead",
            State::Left => "left",
            State::Removed => "removed",
        };
        write!(f, "{}:{s}@{}", self.node, self.incarnation)?;
        if self.state == State::Suspect {
            write!(f, "/{}", self.by)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Ping {
        seq: u64,
        updates: Vec<Update>,
    },
    Ack {
        seq: u64,
        updates: Vec<Update>,
    },
    /// Please ping `target` for me and forward its ACK with my `seq`.
    PingReq {
        seq: u64,
        target: NodeId,
        updates: Vec<Update>,
    },
    /// A bounded slice of the sender's table (members `from..` in id order, at most
    /// `push_pull_entries`); `reply` asks for the receiver's slice of the same range.
    PushPull {
        from: u32,
        entries: Vec<Update>,
        reply: bool,
    },
    /// One update sent on its own: a leaving member's LEFT, a refutation to its accuser.
    Notify {
        update: Update,
    },
    /// The baseline detector's heartbeat table exchange.
    Heartbeats {
        entries: Vec<baseline::Entry>,
        reply: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// A protocol period ends: judge the probe, start the next.
    Probe,
    /// The direct ping of probe `seq` went unanswered: ping-req.
    AckTimeout {
        seq: u64,
    },
    /// A relayed ping (for a PING-REQ) expires.
    Relay {
        seq: u64,
    },
    /// The suspicion of `node` at `incarnation` may have run out.
    Suspicion {
        node: NodeId,
        incarnation: Incarnation,
    },
    /// A dead or departed member is removed.
    Cleanup {
        node: NodeId,
        incarnation: Incarnation,
    },
    PushPull,
    Leave,
    /// The baseline detector's gossip round.
    Round,
}

/// Where a change of view came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// This node's own judgement (a failed probe, a suspicion timeout, a threshold, the
    /// cleanup period).
    Local,
    /// A gossiped update from `by`.
    Gossip,
    /// A push-pull exchange.
    PushPull,
}

/// What the checkers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// This node announces itself at `incarnation` (at start, after the sync, and at every
    /// refutation).
    Incarnation {
        incarnation: Incarnation,
        refuted: bool,
    },
    /// This node's view of `member` changed.
    View {
        member: NodeId,
        state: State,
        incarnation: Incarnation,
        source: Source,
    },
    /// This node left the group and went silent.
    Left { incarnation: Incarnation },
    /// A storage failure stopped this incarnation (it takes no further part).
    Stopped { what: String, error: String },
}

/// Which failure detector the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    #[default]
    Swim,
    /// The reference's heartbeat counters with fixed thresholds.
    Baseline,
}

/// The protocol's parameters (the same for every node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub detector: Detector,
    pub lifeguard: bool,
    /// The protocol period T (the baseline's gossip round).
    pub probe_interval: SimDuration,
    pub ack_timeout: SimDuration,
    /// k: members asked to ping on our behalf.
    pub indirect_checks: usize,
    /// The minimum suspicion timeout is `suspicion_mult · max(1, log₁₀ n) · T`.
    pub suspicion_mult: u64,
    /// Lifeguard: a suspicion starts at this multiple of the minimum.
    pub suspicion_max_mult: u64,
    /// λ: each update is sent `λ · ⌈log₁₀(n + 1)⌉` times.
    pub retransmit_mult: u64,
    pub max_piggyback: usize,
    pub push_pull_interval: SimDuration,
    pub push_pull_entries: usize,
    /// A dead or departed member is removed from the list this long after.
    pub cleanup: SimDuration,
    /// Lifeguard's maximum health multiplier.
    pub max_health: u32,
    pub seeds: Vec<NodeId>,
    /// Baseline: suspect / dead / forget after this many rounds without a newer heartbeat.
    pub baseline_rounds: (u64, u64, u64),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            detector: Detector::Swim,
            lifeguard: true,
            probe_interval: SimDuration::from_millis(200),
            ack_timeout: SimDuration::from_millis(40),
            indirect_checks: 3,
            suspicion_mult: 6,
            suspicion_max_mult: 6,
            retransmit_mult: 4,
            max_piggyback: 8,
            push_pull_interval: SimDuration::from_secs(2),
            push_pull_entries: 64,
            cleanup: SimDuration::from_secs(5),
            max_health: 8,
            seeds: vec![NodeId(0)],
            baseline_rounds: (5, 10, 20),
        }
    }
}

impl Config {
    pub fn validate(&self, nodes: usize) -> Result<(), String> {
        if self.probe_interval == SimDuration::ZERO {
            return Err("probe_interval must be positive".into());
        }
        if self.ack_timeout == SimDuration::ZERO || self.ack_timeout >= self.probe_interval {
            return Err("ack_timeout must be positive and shorter than probe_interval".into());
        }
        if self.suspicion_mult == 0 || self.retransmit_mult == 0 {
            return Err("suspicion_mult and retransmit_mult must be positive".into());
        }
        if self.suspicion_max_mult == 0 {
            return Err("suspicion_max_mult must be at least 1".into());
        }
        if self.max_piggyback == 0 || self.push_pull_entries == 0 {
            return Err("max_piggyback and push_pull_entries must be positive".into());
        }
        if self.max_health == 0 {
            return Err("max_health must be at least 1".into());
        }
        if self.seeds.is_empty() {
            return Err("seeds must name at least one node".into());
        }
        if let Some(s) = self.seeds.iter().find(|s| s.index() >= nodes) {
            return Err(format!("seed {} is outside the nodes 0..{nodes}", s.0));
        }
        let (s, d, c) = self.baseline_rounds;
        if !(0 < s && s < d && d < c) {
            return Err("baseline rounds must satisfy 0 < suspect < dead < cleanup".into());
        }
        Ok(())
    }

    /// How many times each update is gossiped.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        (self.retransmit_mult * ceil_log10(n as u64 + 1)) as u32
    }

    /// The minimum suspicion timeout for a group of `n`.
    pub fn suspicion_min(&self, n: usize) -> SimDuration {
        // suspicion_mult · max(1, log10 n) · T, with log10 in thousandths.
        let log = log10_milli(n as u64).max(1000);
        SimDuration(self.probe_interval.0 * self.suspicion_mult * log / 1000)
    }

    /// The longest a suspicion can last (Lifeguard starts every suspicion there).
    pub fn suspicion_max(&self, n: usize) -> SimDuration {
        if self.lifeguard {
            SimDuration(self.suspicion_min(n).0 * self.suspicion_max_mult)
        } else {
            self.suspicion_min(n)
        }
    }

    /// Lifeguard's independent confirmations expected (memberlist: `suspicion_mult − 2`).
    fn expected_confirmations(&self, n: usize) -> u64 {
        let k = self.suspicion_mult.saturating_sub(2);
        if (n as u64).saturating_sub(2) < k {
            0
        } else {
            k
        }
    }

    /// The suspicion timeout after `confirmations` independent confirmations.
    pub fn suspicion_timeout(&self, n: usize, confirmations: u64) -> SimDuration {
        let min = self.suspicion_min(n);
        let max = self.suspicion_max(n);
        let k = self.expected_confirmations(n);
        if !self.lifeguard || k == 0 || max <= min {
            return min;
        }
        let c = confirmations.min(k);
        // max − (max − min)·log(c+1)/log(k+1), in integer arithmetic.
        let frac_num = log2_micro(c + 1);
        let frac_den = log2_micro(k + 1).max(1);
        let shrink = u128::from(max.0 - min.0) * u128::from(frac_num) / u128::from(frac_den);
        SimDuration((max.0 - shrink as u64).max(min.0))
    }

    /// Protocol periods within which at least `c ≥ 1` distinct live members have each
    /// *started* a probe of a given crashed member, with probability about 1 − 10⁻⁶ per
    /// crash. Every live member probes it once per round of `L` of its periods, at a
    /// place its own shuffle chose, independently of the others; so the number of
    /// members that probe it in `m` periods is close to Poisson(m) (one a period on
    /// average, whatever the group size): P(none in 16) = e⁻¹⁶ ≈ 1.1·10⁻⁷, and
    /// P(fewer than c in 16 + 2(c − 1)) is below 10⁻⁶ for c ≤ 5 (for c = 5, Poisson(24) ≤ 4:
    /// 6·10⁻⁷). It is not a worst case: that is `2L − 1` periods, when every member's
    /// shuffle puts the crashed member last.
    pub fn probe_periods(c: u64) -> u64 {
        16 + 2 * c.saturating_sub(1)
    }

    /// Protocol periods an urgent update (SUSPECT, a confirmation, DEAD) takes to reach
    /// every live member: the λ·⌈log₁₀(n + 1)⌉ periods SWIM's infection-style
    /// dissemination is dimensioned for (every holder sends it on its next that many
    /// messages, and sends at least one message a period). Probabilistic too.
    pub fn dissemination_periods(&self, n: usize) -> u64 {
        u64::from(self.retransmit_limit(n)).max(1)
    }

    /// The delay from a crash to every live member's DEAD verdict on the crashed member,
    /// when both stay in the group and nothing but loss disturbs the network. Not a
    /// worst case (that is `(2n − 1)` periods stretched `max_health` times, plus the
    /// longest suspicion: minutes at hundreds of members, never reached), but a bound
    /// exceeded with probability of the order of 10⁻⁶ per crash, built from
    /// [`Config::probe_periods`] (P), [`Config::dissemination_periods`] (D) and the
    /// suspicion timeouts, with periods at their nominal length (health 0):
    ///
    /// - SWIM: the first failed probe is judged within P(1) + 1 periods; every observer
    ///   either hears the SUSPECT within D periods and declares DEAD the minimum timeout
    ///   later, or hears the first accuser's DEAD within D periods of it:
    ///   `T·(P(1) + 1 + D) + suspicion_min`.
    /// - Lifeguard: a suspicion starts at the maximum and falls to the minimum once `k`
    ///   independent confirmations are in. `k + 1` members have failed a probe within
    ///   P(k + 1) + 1 periods (a failed probe of a suspect is a confirmation), their
    ///   names reach the observer within D, or, because a member relays only the latest
    ///   confirmation it heard, the DEAD of a member that did collect them reaches it
    ///   within another D: `T·(P(k + 1) + 1 + 2D) + suspicion_min`. A detector that
    ///   leaves suspicions at the maximum timeout (one accuser) fails this.
    /// - Baseline: the crashed member's last heartbeat reaches every member within
    ///   ⌈log₂ n⌉ + 2 rounds (full-table push-pull with one random peer a round spreads
    ///   in log₃ n + O(log log n) rounds), after which `dead` rounds without a newer one
    ///   make the verdict, judged at the next round: `T·(⌈log₂ n⌉ + 2 + dead + 1)`.
    pub fn detection_bound(&self, n: usize) -> SimDuration {
        let t = self.probe_interval.0;
        match self.detector {
            Detector::Swim => {
                let d = self.dissemination_periods(n);
                let periods = if self.lifeguard && self.expected_confirmations(n) > 0 {
                    Self::probe_periods(self.expected_confirmations(n) + 1) + 1 + 2 * d
                } else {
                    Self::probe_periods(1) + 1 + d
                };
                SimDuration(t * periods + self.suspicion_min(n).0)
            }
            Detector::Baseline => {
                let spread = 64 - (n.max(1) as u64 - 1).leading_zeros() as u64 + 2;
                SimDuration(t * (spread + self.baseline_rounds.1 + 1))
            }
        }
    }
}

/// ⌈log₁₀ x⌉ for x ≥ 1 (0 for x ≤ 1).
fn ceil_log10(x: u64) -> u64 {
    let mut p = 1u64;
    let mut k = 0;
    while p < x {
        p = p.saturating_mul(10);
        k += 1;
    }
    k
}

/// log₂ x in millionths, integer-only (deterministic everywhere).
fn log2_micro(x: u64) -> u64 {
    if x <= 1 {
        return 0;
    }
    let int = 63 - u64::from(x.leading_zeros());
    // Fraction by repeated squaring of the mantissa in Q32.
    let mut m: u128 = (u128::from(x) << 32) >> int; // in [1, 2) · 2^32
    let mut frac: u64 = 0;
    let mut bit: u64 = 500_000;
    for _ in 0..20 {
        m = (m * m) >> 32;
        if m >= (2u128 << 32) {
            m >>= 1;
            frac += bit;
        }
        bit /= 2;
    }
    int * 1_000_000 + frac
}

/// log₁₀ x in thousandths.
fn log10_milli(x: u64) -> u64 {
    // log10 x = log2 x · log10 2 (0.30103).
    log2_micro(x) * 301_030 / 1_000_000_000
}

/// Protocol settings of one node.
#[derive(Clone)]
pub struct Settings {
    pub config: Arc<Config>,
    /// When this node leaves gracefully (its local clock), if it does.
    pub leave_at: Option<SimTime>,
    /// The engine that holds the node's durable incarnation.
    pub engine: Arc<dyn EngineOpener>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("leave_at", &self.leave_at)
            .field("engine", &self.engine.name())
            .finish()
    }
}

pub const BUG_FLAGS: &[BugFlag] = &[
    BugFlag {
        name: "gossip.no_suspicion",
        description: "a missed probe marks the member dead at once, without a suspicion it could refute",
    },
    BugFlag {
        name: "gossip.no_indirect_probe",
        description: "a missed ping is not retried through k other members (no PING-REQ)",
    },
    BugFlag {
        name: "gossip.no_refute",
        description: "a suspected member does not raise its incarnation to refute the suspicion",
    },
    BugFlag {
        name: "gossip.wrong_precedence",
        description: "an ALIVE with an equal incarnation overrides a suspicion",
    },
    BugFlag {
        name: "gossip.stale_alive_resurrects",
        description: "a delayed ALIVE of the incarnation a member was declared dead at revives it",
    },
    BugFlag {
        name: "gossip.incarnation_reset_on_restart",
        description: "a restarted member starts again from incarnation 1 instead of its durable number",
    },
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub no_suspicion: bool,
    pub no_indirect_probe: bool,
    pub no_refute: bool,
    pub wrong_precedence: bool,
    pub stale_alive_resurrects: bool,
    pub incarnation_reset_on_restart: bool,
}

impl Bugs {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, BugFlagError> {
        let mut bugs = Bugs::default();
        for name in names {
            match name {
                "gossip.no_suspicion" => bugs.no_suspicion = true,
                "gossip.no_indirect_probe" => bugs.no_indirect_probe = true,
                "gossip.no_refute" => bugs.no_refute = true,
                "gossip.wrong_precedence" => bugs.wrong_precedence = true,
                "gossip.stale_alive_resurrects" => bugs.stale_alive_resurrects = true,
                "gossip.incarnation_reset_on_restart" => bugs.incarnation_reset_on_restart = true,
                _ => return Err(unknown(name, BUG_FLAGS)),
            }
        }
        Ok(bugs)
    }
}

/// A node of the group: a SWIM member, or a baseline heartbeat member.
#[derive(Debug)]
pub enum Node {
    Swim(Box<Member>),
    Baseline(Box<baseline::Member>),
}

impl Node {
    pub fn new(settings: Settings, bugs: Bugs) -> Self {
        match settings.config.detector {
            Detector::Swim => Node::Swim(Box::new(Member::new(settings, bugs))),
            Detector::Baseline => Node::Baseline(Box::new(baseline::Member::new(settings, bugs))),
        }
    }
}

impl Process for Node {
    type Msg = Msg;
    type Timer = Timer;
    type Op = ();
    type Reply = ();
    type Obs = Observation;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        match self {
            Node::Swim(m) => m.on_start(ctx),
            Node::Baseline(m) => m.on_start(ctx),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        match self {
            Node::Swim(m) => m.on_message(ctx, from, msg),
            Node::Baseline(m) => m.on_message(ctx, from, msg),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _id: TimerId, timer: Timer) {
        match self {
            Node::Swim(m) => m.on_timer(ctx, timer),
            Node::Baseline(m) => m.on_timer(ctx, timer),
        }
    }

    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, _request: ()) {
        ctx.reply_fail(op, "gossip takes no client requests");
    }
}

/// Opens the store and announces the next incarnation; `None` if the node stopped.
pub(crate) fn start_incarnation(
    settings: &Settings,
    bugs: Bugs,
    ctx: &mut Ctx<'_, Node>,
) -> Option<(Store, Incarnation)> {
    let stop = |ctx: &mut Ctx<'_, Node>, what: &str, e: storage::kv::EngineError| {
        ctx.observe(Observation::Stopped {
            what: what.into(),
            error: e.to_string(),
        });
        None
    };
    let mut store = match Store::open(settings.engine.as_ref(), ctx.disk(), DIR) {
        Ok(s) => s,
        Err(e) => return stop(ctx, "open state", e),
    };
    let stored = match store.incarnation() {
        Ok(i) => i,
        Err(e) => return stop(ctx, "recover incarnation", e),
    };
    let incarnation = if bugs.incarnation_reset_on_restart {
        1
    } else {
        stored + 1
    };
    if let Err(e) = store.set_incarnation(incarnation) {
        return stop(ctx, "persist incarnation", e);
    }
    ctx.observe(Observation::Incarnation {
        incarnation,
        refuted: false,
    });
    Some((store, incarnation))
}

/// One member's entry in a SWIM table.
#[derive(Debug, Clone)]
struct Entry {
    state: State,
    incarnation: Incarnation,
    /// For SUSPECT and DEAD: the member whose own probe failed (the accuser), which is
    /// what a push-pull slice reports, so that relaying a suspicion never counts as an
    /// independent confirmation of it (Lifeguard).
    by: NodeId,
    suspicion: Option<Suspicion>,
}

#[derive(Debug, Clone)]
struct Suspicion {
    start: SimTime,
    confirmations: BTreeSet<NodeId>,
    timer: TimerId,
}

/// The outstanding probe of this period.
#[derive(Debug, Clone, Copy)]
struct Probe {
    seq: u64,
    target: NodeId,
    /// The target's incarnation when the probe began: a failed probe suspects only that.
    incarnation: Incarnation,
    acked: bool,
}

/// Updates waiting to be piggybacked, at most one per member (the newest), sent
/// fewest-times-first, newest first among equals (memberlist's transmit-limited queue),
/// with one addition: *urgent* updates — SUSPECT, DEAD, LEFT and an ALIVE that supersedes
/// a known state (a refutation or a rejoin) — go before *news* (the ALIVE of a member the
/// node had not heard of). A refutation races the suspicion timeouts of the whole group,
/// a join has no deadline; when hundreds of members join at once the news would
/// otherwise hold a fresh refutation back for seconds.
#[derive(Debug, Default)]
struct Broadcasts {
    /// (class: 0 urgent, 1 news; times sent; newest first; member).
    order: BTreeSet<(u8, u32, u64, NodeId)>,
    by_node: BTreeMap<NodeId, (u8, u32, u64, Update)>,
    next: u64,
}

impl Broadcasts {
    fn push(&mut self, update: Update, urgent: bool) {
        if let Some((c, t, id, _)) = self.by_node.remove(&update.node) {
            self.order.remove(&(c, t, id, update.node));
        }
        self.next += 1;
        let id = u64::MAX - self.next;
        let class = u8::from(!urgent);
        self.order.insert((class, 0, id, update.node));
        self.by_node.insert(update.node, (class, 0, id, update));
    }

    /// Takes up to `max` updates for one message; each one taken `limit` times is dropped.
    fn take(&mut self, max: usize, limit: u32) -> Vec<Update> {
        let chosen: Vec<(u8, u32, u64, NodeId)> = self.order.iter().take(max).copied().collect();
        let mut out = Vec::with_capacity(chosen.len());
        for key in chosen {
            self.order.remove(&key);
            let (c, t, id, node) = key;
            let Some(entry) = self.by_node.get_mut(&node) else {
                continue;
            };
            out.push(entry.3);
            if t + 1 >= limit {
                self.by_node.remove(&node);
            } else {
                entry.1 = t + 1;
                self.order.insert((c, t + 1, id, node));
            }
        }
        out
    }

    fn contains(&self, node: NodeId) -> bool {
        self.by_node.contains_key(&node)
    }
}

/// A SWIM member.
pub struct Member {
    settings: Settings,
    config: Arc<Config>,
    bugs: Bugs,
    me: NodeId,
    n: usize,
    store: Option<Store>,
    incarnation: Incarnation,
    left: bool,
    members: Vec<Option<Entry>>,
    /// Members in the group (alive or suspect), self excluded.
    live: usize,
    probe_list: Vec<NodeId>,
    probe_pos: usize,
    probe: Option<Probe>,
    seq: u64,
    /// Pings sent on another's behalf: our seq → (origin, its seq).
    relays: BTreeMap<u64, (NodeId, u64)>,
    queue: Broadcasts,
    health: u32,
    cursor: u32,
    /// Slices (by first member) sent in a push-pull whose reply has not arrived, and
    /// when they were last sent: the next push-pull retries the oldest before the cursor
    /// moves on, so a lost request or reply never leaves a slice out of a sweep.
    unanswered: BTreeMap<u32, SimTime>,
    /// The cursor has gone round the id space once.
    swept: bool,
    /// Until the join sweep is done (every slice answered once), push-pull every period.
    joining: bool,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("gossip::Member")
            .field("incarnation", &self.incarnation)
            .field("live", &self.live)
            .field("health", &self.health)
            .finish()
    }
}

impl Member {
    pub fn new(settings: Settings, bugs: Bugs) -> Self {
        let config = settings.config.clone();
        Member {
            settings,
            config,
            bugs,
            me: NodeId(0),
            n: 0,
            store: None,
            incarnation: 0,
            left: false,
            members: Vec::new(),
            live: 0,
            probe_list: Vec::new(),
            probe_pos: 0,
            probe: None,
            seq: 0,
            relays: BTreeMap::new(),
            queue: Broadcasts::default(),
            health: 0,
            cursor: 0,
            unanswered: BTreeMap::new(),
            swept: false,
            joining: true,
        }
    }

    fn active(&self) -> bool {
        self.store.is_some() && !self.left
    }

    fn scale(&self, d: SimDuration) -> SimDuration {
        if self.config.lifeguard {
            SimDuration(d.0 * u64::from(self.health + 1))
        } else {
            d
        }
    }

    fn health_up(&mut self) {
        if self.config.lifeguard && self.health + 1 < self.config.max_health {
            self.health += 1;
        }
    }

    fn health_down(&mut self) {
        self.health = self.health.saturating_sub(1);
    }

    fn group_size(&self) -> usize {
        self.live + 1
    }

    fn own(&self, state: State) -> Update {
        Update {
            node: self.me,
            state,
            incarnation: self.incarnation,
            by: self.me,
        }
    }

    fn piggyback(&mut self) -> Vec<Update> {
        let limit = self.config.retransmit_limit(self.group_size());
        self.queue.take(self.config.max_piggyback, limit.max(1))
    }

    fn send_ping(&mut self, ctx: &mut Ctx<'_, Node>, to: NodeId, seq: u64) {
        let mut updates = self.piggyback();
        // Lifeguard's buddy system: a ping to a member we suspect tells it so, so it
        // can refute at once.
        if let Some(e) = &self.members[to.index()]
            && e.state == State::Suspect
            && !updates.iter().any(|u| u.node == to)
        {
            let by = e.by;
            updates.push(Update {
                node: to,
                state: State::Suspect,
                incarnation: e.incarnation,
                by,
            });
        }
        ctx.send(to, Msg::Ping { seq, updates });
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_, Node>) {
        self.me = ctx.id();
        self.n = ctx.node_count();
        self.members = vec![None; self.n];
        let Some((store, incarnation)) = start_incarnation(&self.settings, self.bugs, ctx) else {
            return;
        };
        self.store = Some(store);
        self.incarnation = incarnation;
        self.members[self.me.index()] = Some(Entry {
            state: State::Alive,
            incarnation,
            by: self.me,
            suspicion: None,
        });
        // A first start is news; a restart must override the DEAD verdicts on the
        // previous life, so it is urgent.
        self.queue.push(self.own(State::Alive), incarnation > 1);
        for seed in self.config.seeds.clone() {
            if seed != self.me {
                self.send_push_pull(ctx, seed, true);
            }
        }
        let first = SimDuration(ctx.rng().random_range(0..self.config.probe_interval.0) + 1);
        ctx.set_timer(first, Timer::Probe);
        ctx.set_timer(self.config.push_pull_interval, Timer::PushPull);
        if ctx.incarnation() == 1
            && let Some(at) = self.settings.leave_at
        {
            ctx.set_timer(at.saturating_since(ctx.now()), Timer::Leave);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Node>, from: NodeId, msg: Msg) {
        if !self.active() {
            return;
        }
        match msg {
            Msg::Ping { seq, updates } => {
                self.apply_all(ctx, &updates, Source::Gossip);
                if !self.active() {
                    return;
                }
                // The ACK always carries our own ALIVE, so a prober that missed our
                // refutation or rejoin learns it from the member itself.
                let mut updates = self.piggyback();
                if !updates.iter().any(|u| u.node == self.me) {
                    updates.push(self.own(State::Alive));
                }
                ctx.send(from, Msg::Ack { seq, updates });
                if self.members[from.index()].is_none() {
                    // Someone we do not know probes us: join through it.
                    self.send_push_pull(ctx, from, false);
                }
            }
            Msg::Ack { seq, updates } => {
                self.apply_all(ctx, &updates, Source::Gossip);
                if let Some(p) = self.probe.as_mut()
                    && p.seq == seq
                {
                    p.acked = true;
                } else if let Some((origin, origin_seq)) = self.relays.remove(&seq) {
                    let updates = self.piggyback();
                    ctx.send(
                        origin,
                        Msg::Ack {
                            seq: origin_seq,
                            updates,
                        },
                    );
                }
            }
            Msg::PingReq {
                seq,
                target,
                updates,
            } => {
                self.apply_all(ctx, &updates, Source::Gossip);
                self.seq += 1;
                let mine = self.seq;
                self.relays.insert(mine, (from, seq));
                self.send_ping(ctx, target, mine);
                ctx.set_timer(self.config.probe_interval, Timer::Relay { seq: mine });
            }
            Msg::PushPull {
                from: start,
                entries,
                reply,
            } => {
                if !reply && self.unanswered.remove(&start).is_some() {
                    self.joining = !(self.swept && self.unanswered.is_empty());
                }
                self.apply_all(ctx, &entries, Source::PushPull);
                if reply {
                    let entries = self.slice(start);
                    ctx.send(
                        from,
                        Msg::PushPull {
                            from: start,
                            entries,
                            reply: false,
                        },
                    );
                }
            }
            Msg::Notify { update } => self.apply_all(ctx, &[update], Source::Gossip),
            Msg::Heartbeats { .. } => {}
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Node>, timer: Timer) {
        if !self.active() {
            return;
        }
        match timer {
            Timer::Probe => self.on_probe_timer(ctx),
            Timer::AckTimeout { seq } => self.on_ack_timeout(ctx, seq),
            Timer::Relay { seq } => {
                self.relays.remove(&seq);
            }
            Timer::Suspicion { node, incarnation } => {
                let expired = matches!(
                    &self.members[node.index()],
                    Some(e) if e.state == State::Suspect && e.incarnation == incarnation
                );
                if expired {
                    ctx.sometimes("gossip.suspicion_expired");
                    self.declare(ctx, node, State::Dead, incarnation);
                }
            }
            Timer::Cleanup { node, incarnation } => {
                if let Some(e) = self.members[node.index()].as_mut()
                    && matches!(e.state, State::Dead | State::Left)
                    && e.incarnation == incarnation
                {
                    e.state = State::Removed;
                    ctx.observe(Observation::View {
                        member: node,
                        state: State::Removed,
                        incarnation,
                        source: Source::Local,
                    });
                }
            }
            Timer::PushPull => {
                ctx.set_timer(self.config.push_pull_interval, Timer::PushPull);
                if !self.joining {
                    self.push_pull_random(ctx);
                }
                self.reconnect(ctx);
            }
            Timer::Leave => self.leave(ctx),
            Timer::Round => {}
        }
    }

    /// A bounded slice of the table: members `start..` in id order, at most
    /// `push_pull_entries`, removed ones left out (their tombstones stay local).
    fn slice(&self, start: u32) -> Vec<Update> {
        let start = (start as usize).min(self.n);
        let end = (start + self.config.push_pull_entries).min(self.n);
        (start..end)
            .filter_map(|i| {
                let e = self.members[i].as_ref()?;
                (e.state != State::Removed).then_some(Update {
                    node: NodeId(i as u32),
                    state: e.state,
                    incarnation: e.incarnation,
                    by: match e.state {
                        State::Suspect | State::Dead => e.by,
                        _ => self.me,
                    },
                })
            })
            .collect()
    }

    /// Sends a push-pull to `to`. With `advance` (the periodic exchange and the join
    /// sweep) the slice is the oldest one still unanswered from an earlier exchange, or
    /// else the one at the cursor, which then moves on: the cursor covers every slice,
    /// and a slice leaves the sweep only when its reply has arrived (memberlist's
    /// push-pull is a TCP exchange; over a lossy datagram network the retry is ours).
    fn send_push_pull(&mut self, ctx: &mut Ctx<'_, Node>, to: NodeId, advance: bool) {
        let now = ctx.now();
        let retry = if advance {
            self.unanswered
                .iter()
                .filter(|&(_, &sent)| sent < now)
                .min_by_key(|&(&start, &sent)| (sent, start))
                .map(|(&start, _)| start)
        } else {
            None
        };
        let start = retry.unwrap_or(self.cursor);
        let entries = self.slice(start);
        ctx.send(
            to,
            Msg::PushPull {
                from: start,
                entries,
                reply: true,
            },
        );
        if !advance {
            return;
        }
        self.unanswered.insert(start, now);
        if retry.is_none() {
            let next = start as usize + self.config.push_pull_entries;
            if next >= self.n {
                self.cursor = 0;
                self.swept = true;
            } else {
                self.cursor = next as u32;
            }
        }
    }

    /// A random live member other than `except` (and self), in O(1) expected draws.
    fn random_member(&mut self, ctx: &mut Ctx<'_, Node>, except: &[NodeId]) -> Option<NodeId> {
        if self.probe_list.is_empty() {
            return None;
        }
        for _ in 0..8 {
            let i = ctx.rng().random_range(0..self.probe_list.len());
            let node = self.probe_list[i];
            let ok = matches!(&self.members[node.index()], Some(e) if e.state == State::Alive);
            if ok && !except.contains(&node) {
                return Some(node);
            }
        }
        None
    }

    fn push_pull_random(&mut self, ctx: &mut Ctx<'_, Node>) {
        let target = match self.random_member(ctx, &[]) {
            Some(t) => Some(t),
            None => {
                let seeds: Vec<NodeId> = self
                    .config
                    .seeds
                    .iter()
                    .copied()
                    .filter(|&s| s != self.me)
                    .collect();
                (!seeds.is_empty()).then(|| seeds[ctx.rng().random_range(0..seeds.len())])
            }
        };
        if let Some(t) = target {
            self.send_push_pull(ctx, t, true);
        }
    }

    /// Push-pull with one random member we hold dead or departed (Serf's reconnect): if
    /// it is in fact up (a healed partition), it learns the verdict and refutes it, and
    /// the two halves of the group merge again.
    fn reconnect(&mut self, ctx: &mut Ctx<'_, Node>) {
        if self.n < 2 {
            return;
        }
        for _ in 0..4 {
            let i = ctx.rng().random_range(0..self.n);
            if matches!(&self.members[i], Some(e) if e.state.is_down()) {
                self.send_push_pull(ctx, NodeId(i as u32), false);
                return;
            }
        }
    }

    fn on_probe_timer(&mut self, ctx: &mut Ctx<'_, Node>) {
        // Judge the probe of the period that ends.
        if let Some(p) = self.probe.take() {
            if p.acked {
                self.health_down();
            } else {
                self.health_up();
                let e = self.members[p.target.index()].as_ref();
                if let Some(e) = e
                    && matches!(e.state, State::Alive | State::Suspect)
                    && e.incarnation == p.incarnation
                {
                    let inc = e.incarnation;
                    if self.bugs.no_suspicion {
                        self.declare(ctx, p.target, State::Dead, inc);
                    } else if e.state == State::Alive {
                        self.suspect(ctx, p.target, inc, self.me, Source::Local);
                    } else {
                        // Already suspected (by someone else's probe): our own failed
                        // probe is an independent confirmation, counted here and
                        // gossiped under our name (memberlist's `suspectNode` →
                        // `Confirm`). Without it only the first accuser ever confirms,
                        // so every suspicion of a crashed member runs the maximum
                        // timeout at every observer.
                        let u = Update {
                            node: p.target,
                            state: State::Suspect,
                            incarnation: inc,
                            by: self.me,
                        };
                        self.confirm(ctx, u);
                    }
                }
            }
        }
        if self.joining {
            self.push_pull_random(ctx);
        }
        ctx.set_timer(self.scale(self.config.probe_interval), Timer::Probe);
        let Some(target) = self.next_target(ctx) else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        let incarnation = self.members[target.index()]
            .as_ref()
            .map_or(0, |e| e.incarnation);
        self.probe = Some(Probe {
            seq,
            target,
            incarnation,
            acked: false,
        });
        self.send_ping(ctx, target, seq);
        ctx.set_timer(
            self.scale(self.config.ack_timeout),
            Timer::AckTimeout { seq },
        );
    }

    /// The next member in round-robin order; the list is rebuilt and shuffled after
    /// each full round (amortised O(1) per probe).
    fn next_target(&mut self, ctx: &mut Ctx<'_, Node>) -> Option<NodeId> {
        for _ in 0..2 {
            while self.probe_pos < self.probe_list.len() {
                let node = self.probe_list[self.probe_pos];
                self.probe_pos += 1;
                if matches!(&self.members[node.index()], Some(e) if !e.state.is_down()) {
                    return Some(node);
                }
            }
            self.rebuild_probe_list(ctx);
        }
        None
    }

    fn rebuild_probe_list(&mut self, ctx: &mut Ctx<'_, Node>) {
        self.probe_list.clear();
        for (i, e) in self.members.iter().enumerate() {
            if i != self.me.index() && matches!(e, Some(e) if !e.state.is_down()) {
                self.probe_list.push(NodeId(i as u32));
            }
        }
        // Fisher–Yates with the node's own stream.
        for i in (1..self.probe_list.len()).rev() {
            let j = ctx.rng().random_range(0..=i);
            self.probe_list.swap(i, j);
        }
        self.probe_pos = 0;
    }

    fn on_ack_timeout(&mut self, ctx: &mut Ctx<'_, Node>, seq: u64) {
        let Some(p) = self.probe else {
            return;
        };
        if p.seq != seq || p.acked || self.bugs.no_indirect_probe {
            return;
        }
        let mut chosen: Vec<NodeId> = Vec::new();
        for _ in 0..self.config.indirect_checks {
            let mut except = chosen.clone();
            except.push(p.target);
            match self.random_member(ctx, &except) {
                Some(m) => chosen.push(m),
                None => break,
            }
        }
        for via in chosen {
            ctx.sometimes("gossip.indirect_probe");
            let updates = self.piggyback();
            ctx.send(
                via,
                Msg::PingReq {
                    seq,
                    target: p.target,
                    updates,
                },
            );
        }
    }

    fn apply_all(&mut self, ctx: &mut Ctx<'_, Node>, updates: &[Update], source: Source) {
        for u in updates {
            let mut u = *u;
            if source == Source::PushPull && u.state == State::Dead {
                // memberlist: a remote DEAD in a state exchange is only a suspicion here.
                u.state = State::Suspect;
            }
            self.apply(ctx, u, source);
            if !self.active() {
                return;
            }
        }
    }

    /// Applies one update under the precedence rules.
    fn apply(&mut self, ctx: &mut Ctx<'_, Node>, u: Update, source: Source) {
        if u.node.index() >= self.n || u.state == State::Removed {
            return;
        }
        if u.node == self.me {
            let accused = !matches!(u.state, State::Alive) && u.incarnation >= self.incarnation;
            let newer = u.incarnation > self.incarnation;
            if accused || newer {
                self.refute(ctx, u.incarnation);
                if u.by != self.me && self.active() && !self.bugs.no_refute {
                    // Tell the accuser directly, besides gossiping it.
                    let update = self.own(State::Alive);
                    ctx.send(u.by, Msg::Notify { update });
                }
            } else if u.state != State::Alive && !self.queue.contains(self.me) {
                // A stale accusation: the accuser missed our refutation; say it again.
                self.queue.push(self.own(State::Alive), true);
            }
            return;
        }
        let current = self.members[u.node.index()]
            .as_ref()
            .map(|e| (e.state, e.incarnation));
        match u.state {
            State::Alive => {
                let accept = match current {
                    None => true,
                    Some((state, inc)) => {
                        u.incarnation > inc
                            || (self.bugs.wrong_precedence
                                && state == State::Suspect
                                && u.incarnation == inc)
                            || (self.bugs.stale_alive_resurrects
                                && state.is_down()
                                && u.incarnation == inc)
                    }
                };
                if accept {
                    self.set(ctx, u.node, State::Alive, u.incarnation, u.by, source);
                    // State exchanges are anti-entropy, not news: only gossiped changes
                    // are passed on (so a join does not flood the queue ahead of itself).
                    // An ALIVE that supersedes a known state (a refutation, a rejoin)
                    // races suspicion timeouts and goes before join news.
                    if source != Source::PushPull {
                        self.queue.push(u, current.is_some());
                    }
                }
            }
            State::Suspect => match current {
                Some((State::Alive, inc)) if u.incarnation >= inc => {
                    self.suspect(ctx, u.node, u.incarnation, u.by, source);
                }
                Some((State::Suspect, inc)) if u.incarnation > inc => {
                    self.suspect(ctx, u.node, u.incarnation, u.by, source);
                }
                Some((State::Suspect, inc)) if u.incarnation == inc => {
                    self.confirm(ctx, u);
                }
                _ => {}
            },
            State::Dead | State::Left => match current {
                Some((state, inc)) if !state.is_down() && u.incarnation >= inc => {
                    self.set(ctx, u.node, u.state, u.incarnation, u.by, source);
                    self.queue.push(u, true);
                }
                _ => {}
            },
            State::Removed => {}
        }
    }

    /// Changes this node's view of `node` and says so.
    fn set(
        &mut self,
        ctx: &mut Ctx<'_, Node>,
        node: NodeId,
        state: State,
        incarnation: Incarnation,
        by: NodeId,
        source: Source,
    ) {
        let slot = &mut self.members[node.index()];
        let was_live = matches!(slot, Some(e) if !e.state.is_down());
        if let Some(s) = slot.as_mut().and_then(|e| e.suspicion.take()) {
            ctx.cancel_timer(s.timer);
        }
        *slot = Some(Entry {
            state,
            incarnation,
            by,
            suspicion: None,
        });
        let is_live = !state.is_down();
        match (was_live, is_live) {
            (false, true) => {
                self.live += 1;
                // memberlist inserts a new member at a random place in the probe list.
                let pos = ctx
                    .rng()
                    .random_range(self.probe_pos..=self.probe_list.len());
                self.probe_list.insert(pos, node);
            }
            (true, false) => {
                self.live -= 1;
                ctx.set_timer(self.config.cleanup, Timer::Cleanup { node, incarnation });
            }
            _ => {}
        }
        ctx.observe(Observation::View {
            member: node,
            state,
            incarnation,
            source,
        });
    }

    fn suspect(
        &mut self,
        ctx: &mut Ctx<'_, Node>,
        node: NodeId,
        incarnation: Incarnation,
        by: NodeId,
        source: Source,
    ) {
        ctx.sometimes("gossip.member_suspected");
        self.set(ctx, node, State::Suspect, incarnation, by, source);
        let timeout = self.config.suspicion_timeout(self.group_size(), 0);
        let timer = ctx.set_timer(timeout, Timer::Suspicion { node, incarnation });
        let mut confirmations = BTreeSet::new();
        confirmations.insert(by);
        if let Some(e) = self.members[node.index()].as_mut() {
            e.suspicion = Some(Suspicion {
                start: ctx.now(),
                confirmations,
                timer,
            });
        }
        self.queue.push(
            Update {
                node,
                state: State::Suspect,
                incarnation,
                by,
            },
            true,
        );
    }

    /// Lifeguard: an independent confirmation of a suspicion shortens it.
    fn confirm(&mut self, ctx: &mut Ctx<'_, Node>, u: Update) {
        if !self.config.lifeguard {
            return;
        }
        let n = self.group_size();
        let now = ctx.now();
        let Some(e) = self.members[u.node.index()].as_mut() else {
            return;
        };
        let Some(s) = e.suspicion.as_mut() else {
            return;
        };
        if !s.confirmations.insert(u.by) {
            return;
        }
        let c = s.confirmations.len() as u64 - 1;
        let timeout = self.config.suspicion_timeout(n, c);
        let deadline = s.start + timeout;
        ctx.cancel_timer(s.timer);
        s.timer = ctx.set_timer(
            deadline.saturating_since(now),
            Timer::Suspicion {
                node: u.node,
                incarnation: u.incarnation,
            },
        );
        self.queue.push(u, true);
    }

    fn declare(
        &mut self,
        ctx: &mut Ctx<'_, Node>,
        node: NodeId,
        state: State,
        incarnation: Incarnation,
    ) {
        // The verdict names the accuser of the suspicion it ends (this node's own failed
        // probe without one): a DEAD that a push-pull turns back into a suspicion must
        // not count as an independent confirmation by whoever relayed it.
        let by = self.members[node.index()]
            .as_ref()
            .filter(|e| e.state == State::Suspect)
            .map_or(self.me, |e| e.by);
        self.set(ctx, node, state, incarnation, by, Source::Local);
        self.queue.push(
            Update {
                node,
                state,
                incarnation,
                by,
            },
            true,
        );
    }

    /// Raises this node's incarnation above `accused` (synced before it is announced).
    fn refute(&mut self, ctx: &mut Ctx<'_, Node>, accused: Incarnation) {
        if self.bugs.no_refute || self.left {
            return;
        }
        ctx.sometimes("gossip.suspicion_refuted");
        let incarnation = accused.max(self.incarnation) + 1;
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if let Err(e) = store.set_incarnation(incarnation) {
            ctx.observe(Observation::Stopped {
                what: "persist incarnation".into(),
                error: e.to_string(),
            });
            self.store = None;
            return;
        }
        self.incarnation = incarnation;
        if let Some(e) = self.members[self.me.index()].as_mut() {
            e.incarnation = incarnation;
        }
        self.health_up();
        ctx.observe(Observation::Incarnation {
            incarnation,
            refuted: true,
        });
        self.queue.push(self.own(State::Alive), true);
    }

    fn leave(&mut self, ctx: &mut Ctx<'_, Node>) {
        ctx.sometimes("gossip.member_left");
        let update = self.own(State::Left);
        for (i, e) in self.members.iter().enumerate() {
            if i != self.me.index() && matches!(e, Some(e) if !e.state.is_down()) {
                ctx.send(NodeId(i as u32), Msg::Notify { update });
            }
        }
        ctx.observe(Observation::Left {
            incarnation: self.incarnation,
        });
        self.left = true;
    }
}

/// SWIM's coverage points (sometimes-assertions), for `faultline explore`.
pub const COVERAGE: &[sim_core::coverage::Point] = &[
    sim_core::coverage::Point {
        name: "gossip.indirect_probe",
        description: "a direct probe went unanswered and the prober asked k members to ping the target (ping-req)",
    },
    sim_core::coverage::Point {
        name: "gossip.member_suspected",
        description: "a member was marked suspect",
    },
    sim_core::coverage::Point {
        name: "gossip.suspicion_expired",
        description: "a suspicion ran out unrefuted and the member was declared dead",
    },
    sim_core::coverage::Point {
        name: "gossip.suspicion_refuted",
        description: "a suspected member refuted the suspicion with a higher incarnation",
    },
    sim_core::coverage::Point {
        name: "gossip.member_left",
        description: "a member left the group gracefully",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_logs_match_the_real_ones() {
        assert_eq!(log2_micro(1), 0);
        assert_eq!(log2_micro(2), 1_000_000);
        assert!(
            (log2_micro(3) as i64 - 1_584_962).abs() < 5,
            "{}",
            log2_micro(3)
        );
        assert!((log10_milli(10) as i64 - 1000).abs() <= 1);
        assert!((log10_milli(500) as i64 - 2699).abs() <= 1);
        assert_eq!(ceil_log10(11), 2);
        assert_eq!(ceil_log10(10), 1);
        assert_eq!(ceil_log10(501), 3);
    }

    #[test]
    fn lifeguard_suspicion_shrinks_with_confirmations() {
        let c = Config::default();
        let n = 10;
        let min = c.suspicion_min(n);
        assert_eq!(c.suspicion_timeout(n, 0), c.suspicion_max(n));
        assert!(c.suspicion_timeout(n, 1) < c.suspicion_max(n));
        assert!(c.suspicion_timeout(n, 1) > c.suspicion_timeout(n, 2));
        assert!(c.suspicion_timeout(n, 3) > min);
        // k = suspicion_mult − 2 = 4 expected confirmations bring it down to the minimum.
        assert_eq!(c.suspicion_timeout(n, 4), min);
        assert_eq!(c.suspicion_timeout(n, 9), min);
        let plain = Config {
            lifeguard: false,
            ..Config::default()
        };
        assert_eq!(plain.suspicion_timeout(n, 0), plain.suspicion_min(n));
    }

    #[test]
    fn broadcasts_send_fewest_first_and_retire_at_the_limit() {
        let mut b = Broadcasts::default();
        let u = |n: u32, i| Update {
            node: NodeId(n),
            state: State::Alive,
            incarnation: i,
            by: NodeId(0),
        };
        b.push(u(1, 1), false);
        b.push(u(2, 1), false);
        assert_eq!(b.take(1, 2), vec![u(2, 1)]);
        assert_eq!(b.take(1, 2), vec![u(1, 1)]);
        b.push(u(1, 2), false); // replaces node 1's update, fresh count
        assert_eq!(b.take(8, 2), vec![u(1, 2), u(2, 1)]);
        assert_eq!(b.take(8, 2), vec![u(1, 2)]);
        assert!(b.take(8, 2).is_empty());
    }

    #[test]
    fn urgent_updates_go_before_any_news() {
        let mut b = Broadcasts::default();
        let u = |n: u32, i| Update {
            node: NodeId(n),
            state: State::Alive,
            incarnation: i,
            by: NodeId(0),
        };
        for n in 10..20 {
            b.push(u(n, 1), false);
        }
        b.push(u(3, 2), true);
        // Sent once, the refutation still goes before the nine news never sent.
        assert_eq!(b.take(2, 4), vec![u(3, 2), u(19, 1)]);
        assert_eq!(b.take(2, 4), vec![u(3, 2), u(18, 1)]);
        assert_eq!(b.take(1, 4), vec![u(3, 2)]);
        assert_eq!(b.take(1, 4), vec![u(3, 2)]);
        // Retired after `limit` sends; the news follows, fewest-sent first.
        assert_eq!(b.take(2, 4), vec![u(17, 1), u(16, 1)]);
    }
}
