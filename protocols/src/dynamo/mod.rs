//! Dynamo-style replication: a consistent-hash ring, sloppy quorums with hinted handoff,
//! siblings named by dotted version vectors, read repair, Merkle anti-entropy and
//! tombstones that are collected only when it is safe.
//!
//! **Placement.** Keys live on a consistent-hash ring ([`ring`]) with virtual nodes; a
//! key's *preference list* is the first `n` distinct nodes clockwise from it, and the
//! nodes after those are its *fallbacks*. Membership is static ([`Membership`]): every
//! node of the scenario, weight 1 unless configured.
//!
//! **Writes.** Any node accepts a client request. A write (put or delete) is coordinated
//! by a replica of its key: a node outside the preference list forwards it to the first
//! replica. The coordinator takes a fresh dot from its durable counter, applies the write
//! to its own copy (the new sibling supersedes exactly what the client's context covers;
//! [`version`]), syncs it, and ships the whole object to the other replicas. Replicas
//! merge, sync and acknowledge. A replica that has not answered within `hint_after` is
//! replaced by a *fallback* holding a durable hint for it (fallbacks are chosen per key
//! and owner, so hints spread over them). The write succeeds at `w` acknowledgements;
//! with `sloppy = true` a hint acknowledgement counts, otherwise (strict quorum) only the
//! preference list's own replicas do. A write that misses its quorum is reported as
//! unknown, never as failed: its coordinator's copy exists and will spread.
//!
//! **Reads.** Any node coordinates a read: it asks the preference list, answers with the
//! merged siblings and their context after `r` replies, and repairs the stale replicas
//! among those `r` before answering (bounded by `repair_wait`), the later ones as their
//! replies come in.
//!
//! **Hinted handoff.** A fallback keeps each hint in its engine (synced before it
//! acknowledges) and offers it to the owner every `hint_interval`; the owner merges and
//! acknowledges, and only then is the hint deleted. A hint older than `hint_ttl` is
//! dropped.
//!
//! **Anti-entropy.** Keys are grouped into ranges by replica set; each range has a
//! Merkle tree of `LEAVES` leaves whose hashes (XOR of their keys' contributions) are
//! updated in the same batch as the record that changes them. Every `ae_interval` a node
//! sends, for each of its ranges, the range's leaves to one of its other replicas (in
//! turn); differing leaves are exchanged key by key, both ways.
//!
//! **Deletes.** A delete is a write of a tombstone carrying its version. A replica
//! collects a tombstone only after `tombstone_grace` (longer than the scenario's longest
//! node downtime and than `hint_ttl`) and only once every other replica of the key
//! answers that it holds the same tombstone (or has collected it).

pub mod checker;
pub mod ring;
mod store;
pub mod version;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sim_core::process::{Effect, Lift};
use sim_core::{Completion, Ctx, NodeId, OpId, Process, SimDuration, TimerId};
use storage::kv::EngineOpener;

use self::ring::Ring;
use self::store::{Change, Hint, Record, Store};
use self::version::{Dot, MergeFlaws, Object, Sibling, Vv};
use crate::common::{BugFlag, BugFlagError, unknown};
use crate::gossip;

/// Where a node keeps its durable state on its disk.
const DIR: &str = "dynamo";
/// Merkle leaves per key range.
pub const LEAVES: u32 = 16;
/// Dot counters are reserved on disk this many at a time.
const COUNTER_BLOCK: u64 = 64;
/// At most this many hints offered per tick.
const HANDOFF_PER_TICK: usize = 32;
/// Hints for owners the membership takes to be down are offered every this many rounds.
const DOWN_OFFER_EVERY: u64 = 4;

/// The quorum parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    pub n: usize,
    pub r: usize,
    pub w: usize,
    /// Hint acknowledgements count toward `w`.
    pub sloppy: bool,
}

impl Quorum {
    /// Checks `1 ≤ r, w ≤ n ≤ nodes`, and `r + w > n` unless `allow_weak` says the
    /// scenario wants reads that may miss acknowledged writes.
    pub fn validate(&self, nodes: usize, allow_weak: bool) -> Result<(), String> {
        if self.n == 0 || self.n > nodes {
            return Err(format!(
                "n = {} is out of range; expected 1 to the node count {nodes}",
                self.n
            ));
        }
        for (name, v) in [("r", self.r), ("w", self.w)] {
            if v == 0 || v > self.n {
                return Err(format!(
                    "{name} = {v} is out of range; expected 1 to n = {}",
                    self.n
                ));
            }
        }
        if self.r + self.w <= self.n && !allow_weak {
            return Err(format!(
                "r + w = {} does not exceed n = {}, so a read may miss an acknowledged write; set allow_weak_quorum = true to run it anyway",
                self.r + self.w,
                self.n
            ));
        }
        Ok(())
    }

    /// Whether a read that starts after a write completed must see it.
    pub fn strict_overlap(&self) -> bool {
        !self.sloppy && self.r + self.w > self.n
    }
}

/// Timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Background work (hints, anti-entropy, collection, snapshots) runs this often.
    pub tick: SimDuration,
    /// A coordinator gives up on a quorum after this.
    pub request_timeout: SimDuration,
    /// A replica that has not acknowledged within this is replaced by a fallback.
    pub hint_after: SimDuration,
    pub hint_interval: SimDuration,
    pub hint_ttl: SimDuration,
    pub ae_interval: SimDuration,
    pub tombstone_grace: SimDuration,
    /// Read repair of the read quorum waits at most this before answering.
    pub repair_wait: SimDuration,
    /// A node reports a snapshot once its data has been unchanged this long.
    pub settle: SimDuration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick: SimDuration::from_millis(20),
            request_timeout: SimDuration::from_millis(300),
            hint_after: SimDuration::from_millis(40),
            hint_interval: SimDuration::from_millis(100),
            hint_ttl: SimDuration::from_secs(10),
            ae_interval: SimDuration::from_millis(100),
            tombstone_grace: SimDuration::from_secs(20),
            repair_wait: SimDuration::from_millis(30),
            settle: SimDuration::from_millis(300),
        }
    }
}

impl Timing {
    pub fn validate(&self) -> Result<(), String> {
        if self.tick == SimDuration::ZERO {
            return Err("tick must be positive".into());
        }
        if self.hint_after >= self.request_timeout {
            return Err("hint_after must be shorter than request_timeout".into());
        }
        if self.hint_ttl >= self.tombstone_grace {
            return Err("hint_ttl must be shorter than tombstone_grace (a hint older than a collected tombstone could bring its value back)".into());
        }
        Ok(())
    }
}

/// Which nodes own the ring, with their weights (every node of the scenario), and how a
/// node learns which of them are up: `swim = None` is the static mode (every node is
/// taken to be up), `Some(config)` embeds a SWIM member ([`gossip`]) whose verdicts
/// decide it (a member it holds suspect, dead, departed or removed is not contacted).
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub weights: Vec<f64>,
    pub vnodes: u32,
    pub swim: Option<Arc<gossip::Config>>,
}

impl Membership {
    pub fn ring(&self) -> Result<Ring, ring::RingError> {
        Ring::new(self.vnodes, &self.weights)
    }
}

/// One node's configuration.
#[derive(Clone)]
pub struct Settings {
    pub quorum: Quorum,
    pub timing: Timing,
    pub membership: Membership,
    pub engine: Arc<dyn EngineOpener>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("quorum", &self.quorum)
            .field("timing", &self.timing)
            .field("engine", &self.engine.name())
            .finish()
    }
}

/// The bug flags.
pub static BUG_FLAGS: &[BugFlag] = &[
    BugFlag {
        name: "dynamo.lww_wallclock",
        description: "concurrent siblings are resolved to the one with the highest coordinator clock (each node's own, skewed, clock)",
    },
    BugFlag {
        name: "dynamo.vclock_concurrent_as_newer",
        description: "an incoming version concurrent with a stored one replaces it as if it were newer",
    },
    BugFlag {
        name: "dynamo.hints_not_durable",
        description: "a fallback keeps hints only in memory: a crash loses them",
    },
    BugFlag {
        name: "dynamo.tombstone_gc_no_grace",
        description: "tombstones are collected at once, without the grace period or asking the other replicas",
    },
    BugFlag {
        name: "dynamo.missing_key_is_older",
        description: "a delete removes the key, and repair treats the absent key as older (the reference's delete resurrection)",
    },
    BugFlag {
        name: "dynamo.merkle_skips_deletes",
        description: "a tombstone does not update its Merkle leaf, so anti-entropy cannot see a missed delete",
    },
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub lww_wallclock: bool,
    pub vclock_concurrent_as_newer: bool,
    pub hints_not_durable: bool,
    pub tombstone_gc_no_grace: bool,
    pub missing_key_is_older: bool,
    pub merkle_skips_deletes: bool,
}

impl Bugs {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, BugFlagError> {
        let mut bugs = Bugs::default();
        for name in names {
            match name {
                "dynamo.lww_wallclock" => bugs.lww_wallclock = true,
                "dynamo.vclock_concurrent_as_newer" => bugs.vclock_concurrent_as_newer = true,
                "dynamo.hints_not_durable" => bugs.hints_not_durable = true,
                "dynamo.tombstone_gc_no_grace" => bugs.tombstone_gc_no_grace = true,
                "dynamo.missing_key_is_older" => bugs.missing_key_is_older = true,
                "dynamo.merkle_skips_deletes" => bugs.merkle_skips_deletes = true,
                other => return Err(unknown(other, BUG_FLAGS)),
            }
        }
        Ok(bugs)
    }

    fn flaws(&self) -> MergeFlaws {
        MergeFlaws {
            concurrent_as_newer: self.vclock_concurrent_as_newer,
            lww_wallclock: self.lww_wallclock,
        }
    }
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get {
        key: String,
    },
    /// Write `value` with the context of an earlier read (empty: a blind write,
    /// concurrent with everything). `read` names the versions that read returned (for
    /// the checkers; the protocol uses only `context`).
    Put {
        key: String,
        id: String,
        value: Vec<String>,
        context: Vv,
        read: Vec<Dot>,
    },
    Delete {
        key: String,
        id: String,
        context: Vv,
        read: Vec<Dot>,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// One sibling as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingView {
    pub dot: Dot,
    pub id: String,
    /// `None`: a tombstone (the key reads as deleted unless another sibling has a value).
    pub value: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Read {
        siblings: Vec<SiblingView>,
        context: Vv,
    },
    Written {
        dot: Dot,
    },
}

/// Messages between nodes.
#[derive(Debug, Clone, Serialize)]
pub enum Msg {
    Forward {
        token: u64,
        op: Op,
    },
    ForwardReply {
        token: u64,
        completion: Completion<Reply>,
    },
    Replicate {
        key: String,
        object: Object,
        token: u64,
    },
    ReplicateAck {
        key: String,
        token: u64,
    },
    /// Remove the key outright (only the `missing_key_is_older` bug's naive delete).
    Remove {
        key: String,
        token: u64,
    },
    Hint {
        key: String,
        object: Object,
        owner: u32,
        token: u64,
    },
    HintAck {
        owner: u32,
        token: u64,
    },
    Read {
        key: String,
        token: u64,
    },
    ReadReply {
        key: String,
        token: u64,
        object: Object,
    },
    HandOff {
        hint: u64,
        key: String,
        object: Object,
    },
    HandOffAck {
        hint: u64,
    },
    AeLeaves {
        range: u32,
        leaves: Vec<u64>,
    },
    AeObjects {
        range: u32,
        objects: Vec<(String, Object)>,
        want: Vec<u32>,
    },
    GcQuery {
        key: String,
        digest: u64,
    },
    GcReply {
        key: String,
        digest: u64,
        ok: bool,
    },
    /// Do you hold any version of `key`? (To forget a collected tombstone's record.)
    ForgetQuery {
        key: String,
    },
    ForgetReply {
        key: String,
        absent: bool,
    },
    /// The embedded SWIM member's message.
    Gossip(gossip::Msg),
}

#[derive(Debug, Clone, Serialize)]
pub enum Timer {
    Tick,
    HintAfter {
        token: u64,
    },
    Expire {
        token: u64,
    },
    RepairDone {
        token: u64,
    },
    /// The embedded SWIM member's timer (the same timer id as the inner one).
    Gossip(gossip::Timer),
}

/// A version as a snapshot reports it: its dot, its write's id, whether it is a tombstone.
pub type VersionSummary = (Dot, String, bool);

/// Observations for the checkers.
#[derive(Debug, Clone, Serialize)]
pub enum Observation {
    /// This node created version `dot` of `key` for the client write `id`.
    Coordinated {
        key: String,
        id: String,
        dot: Dot,
    },
    /// This replica's versions of `key` changed.
    Stored {
        key: String,
    },
    HintStored {
        hint: (u32, u64),
        owner: u32,
        key: String,
        /// When the hint's TTL runs out (simulated µs).
        expires_us: u64,
    },
    /// The embedded SWIM member's observation (its incarnations and its view changes).
    Membership(gossip::Observation),
    /// The node recovered from its disk, holding these hints (a hint its previous
    /// incarnation held and this list lacks was removed, or lost, by the crash).
    Recovered {
        hints: Vec<u64>,
    },
    HintDelivered {
        hint: (u32, u64),
    },
    HintRemoved {
        hint: (u32, u64),
    },
    HintExpired {
        hint: (u32, u64),
    },
    /// This replica collected `key`'s tombstone (these versions).
    Collected {
        key: String,
        dots: Vec<Dot>,
    },
    /// The node's storage failed; it stops serving.
    StorageFailed {
        what: String,
        error: String,
    },
    /// A read's answer had this many siblings with values.
    ReadSiblings {
        key: String,
        count: u32,
    },
    /// Data unchanged for `settle`: every key this node replicates, and its ranges' roots.
    Snapshot {
        /// key → (range, versions as (dot, write id, is tombstone)).
        keys: BTreeMap<String, (u32, Vec<VersionSummary>)>,
        roots: BTreeMap<u32, (Vec<u32>, u64)>,
        /// Records of collected tombstones this node still keeps (`g/<key>`).
        remembered: u32,
    },
    /// This node dropped its record of `key`'s collected tombstone: no replica of the
    /// key holds any version of it any more.
    Forgot {
        key: String,
    },
}

/// Who is waiting for a coordinated request's answer.
#[derive(Debug, Clone, Copy)]
enum Origin {
    Client(OpId),
    Forwarded { from: NodeId, token: u64 },
}

#[derive(Debug)]
enum Pending {
    Write {
        origin: Origin,
        key: String,
        dot: Dot,
        object: Object,
        replicas: Vec<u32>,
        acked: BTreeSet<u32>,
        hinted: BTreeSet<u32>,
        /// Replicas a hint has been sent for (at most one hint each).
        hints_sent: BTreeSet<u32>,
        answered: bool,
        naive_delete: bool,
    },
    Read {
        origin: Origin,
        key: String,
        replies: BTreeMap<u32, Object>,
        merged: Option<Object>,
        repairing: BTreeSet<u32>,
        answered: bool,
    },
    /// A request forwarded to a replica, answered when it answers.
    Forwarded { op: OpId },
}

/// A Dynamo node.
pub struct Node {
    id: NodeId,
    settings: Settings,
    bugs: Bugs,
    ring: Option<Ring>,
    /// Sorted replica set → range id.
    ranges: BTreeMap<Vec<u32>, u32>,
    store: Option<Store>,
    counter: u64,
    counter_reserved: u64,
    records: BTreeMap<String, Record>,
    hints: BTreeMap<u64, Hint>,
    leaves: BTreeMap<(u32, u32), u64>,
    collected: BTreeMap<String, u64>,
    pending: BTreeMap<u64, Pending>,
    next_token: u64,
    /// Tombstone collection in progress: key → (digest, replicas that said yes).
    gc: BTreeMap<String, (u64, BTreeSet<u32>)>,
    /// Forgetting a collected tombstone's record in progress: key → replicas that hold
    /// no version of it.
    forget: BTreeMap<String, BTreeSet<u32>>,
    /// When this incarnation collected (or recovered the record of) each collected
    /// tombstone: it answers a `ForgetQuery` "absent" only `request_timeout` after, so
    /// that a copy it shipped just before collecting has arrived by then.
    collected_at: BTreeMap<String, u64>,
    last_hint_round_us: u64,
    hint_rounds: u64,
    last_ae_round_us: u64,
    ae_rounds: u64,
    last_change_us: u64,
    snapshot_due: bool,
    failed: bool,
    /// The embedded SWIM member (membership `swim`), and its view: member → state.
    swim: Option<gossip::Node>,
    view: BTreeMap<u32, gossip::State>,
}

impl Node {
    pub fn new(id: NodeId, settings: Settings, bugs: Bugs) -> Self {
        Node {
            id,
            settings,
            bugs,
            ring: None,
            ranges: BTreeMap::new(),
            store: None,
            counter: 0,
            counter_reserved: 0,
            records: BTreeMap::new(),
            hints: BTreeMap::new(),
            leaves: BTreeMap::new(),
            collected: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_token: 0,
            gc: BTreeMap::new(),
            forget: BTreeMap::new(),
            collected_at: BTreeMap::new(),
            last_hint_round_us: 0,
            hint_rounds: 0,
            last_ae_round_us: 0,
            ae_rounds: 0,
            last_change_us: 0,
            snapshot_due: true,
            failed: false,
            swim: None,
            view: BTreeMap::new(),
        }
    }

    /// Whether this node takes `node` to be up: itself always; another unless the SWIM
    /// member holds it suspect, dead, departed or removed (static mode: always).
    fn is_up(&self, node: u32) -> bool {
        node == self.me()
            || !matches!(
                self.view.get(&node),
                Some(
                    gossip::State::Suspect
                        | gossip::State::Dead
                        | gossip::State::Left
                        | gossip::State::Removed
                )
            )
    }

    /// Runs a handler of the embedded SWIM member and emits its effects, following its
    /// view; a member that comes back up is offered its hints at once.
    fn with_swim(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        run: impl FnOnce(&mut gossip::Node, &mut Ctx<'_, gossip::Node>),
    ) {
        let Some(mut swim) = self.swim.take() else {
            return;
        };
        let ((), effects) = ctx.nested(|inner| run(&mut swim, inner));
        self.swim = Some(swim);
        let lift = Lift::<gossip::Node, Node> {
            msg: &Msg::Gossip,
            timer: &Timer::Gossip,
            obs: &|o| Some(Observation::Membership(o)),
            reply: &|()| None,
        };
        let mut back = Vec::new();
        for effect in effects {
            if let Effect::Observe {
                obs: gossip::Observation::View { member, state, .. },
            } = &effect
                && member.0 != self.me()
            {
                let was_up = self.is_up(member.0);
                self.view.insert(member.0, *state);
                if !was_up && self.is_up(member.0) {
                    back.push(member.0);
                }
            }
            if let Some(e) = effect.lift(&lift) {
                ctx.forward(e);
            }
        }
        for owner in back {
            self.offer_hints(ctx, Some(owner), false);
        }
    }

    fn me(&self) -> u32 {
        self.id.0
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The preference list of `key`, then its fallbacks.
    fn placement(&self, key: &str) -> (Vec<u32>, Vec<u32>) {
        let Some(ring) = &self.ring else {
            return (Vec::new(), Vec::new());
        };
        let all = ring
            .walk(key.as_bytes(), ring.node_count())
            .unwrap_or_default();
        let n = self.settings.quorum.n.min(all.len());
        (all[..n].to_vec(), all[n..].to_vec())
    }

    fn range_of(&self, key: &str) -> (u32, Vec<u32>) {
        let (mut pref, _) = self.placement(key);
        pref.sort_unstable();
        let range = self.ranges.get(&pref).copied().unwrap_or(u32::MAX);
        (range, pref)
    }

    fn leaf_of(key: &str) -> u32 {
        (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % u64::from(LEAVES)) as u32
    }

    fn contribution(key: &str, object: &Object) -> u64 {
        if object.is_empty() {
            return 0;
        }
        let mut bytes = key.as_bytes().to_vec();
        bytes.extend_from_slice(&object.digest().to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    fn root(&self, range: u32) -> u64 {
        let leaves: Vec<u64> = (0..LEAVES)
            .map(|l| self.leaves.get(&(range, l)).copied().unwrap_or(0))
            .collect();
        xxhash_rust::xxh3::xxh3_64(&postcard::to_stdvec(&leaves).unwrap_or_default())
    }

    fn fail(&mut self, ctx: &mut Ctx<'_, Self>, what: &str, e: impl std::fmt::Display) {
        // A node whose disk fails stops serving rather than reveal state it could not
        // persist; the checkers see it as unavailable.
        ctx.observe(Observation::StorageFailed {
            what: what.to_string(),
            error: e.to_string(),
        });
        self.failed = true;
    }

    /// Reserves dots on disk as needed and returns a fresh one.
    fn fresh_dot(&mut self, ctx: &mut Ctx<'_, Self>) -> Option<Dot> {
        if self.counter >= self.counter_reserved {
            let reserved = self.counter_reserved + COUNTER_BLOCK;
            let change = Change {
                counter_reserved: Some(reserved),
                ..Change::default()
            };
            if let Err(e) = self.store.as_mut()?.commit(&change, true) {
                self.fail(ctx, "reserve dots", e);
                return None;
            }
            self.counter_reserved = reserved;
        }
        self.counter += 1;
        Some(Dot {
            node: self.me(),
            counter: self.counter,
        })
    }

    /// Stores `object` as `key`'s versions (or removes the key if `None`), updating the
    /// Merkle leaf in the same synced batch. Returns false if the disk failed.
    fn put_record(&mut self, ctx: &mut Ctx<'_, Self>, key: &str, object: Option<Object>) -> bool {
        self.store_record(ctx, key, object, None)
    }

    /// [`Self::put_record`], and with `collected = Some(digest)` (only with `object =
    /// None`) the record of the collected tombstone in the same batch, so that a crash
    /// cannot separate the removal from the record that recognises a copy shipped back.
    fn store_record(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        key: &str,
        object: Option<Object>,
        collected: Option<u64>,
    ) -> bool {
        let now_us = ctx.now().as_micros();
        let old = self.records.get(key).cloned();
        let old_contribution = old.as_ref().map_or(0, |r| r.merkle_contribution);
        let (range, _) = self.range_of(key);
        let leaf = Self::leaf_of(key);
        let record = object.map(|object| {
            let tombstone_since_us = if object.is_tombstone() {
                old.as_ref()
                    .and_then(|r| r.tombstone_since_us)
                    .filter(|_| old.as_ref().is_some_and(|r| r.object.is_tombstone()))
                    .or(Some(now_us))
            } else {
                None
            };
            let merkle_contribution = if self.bugs.merkle_skips_deletes && object.is_tombstone() {
                old_contribution
            } else {
                Self::contribution(key, &object)
            };
            Record {
                object,
                tombstone_since_us,
                merkle_contribution,
            }
        });
        let new_contribution = record.as_ref().map_or(0, |r| r.merkle_contribution);
        let leaf_hash = self.leaves.get(&(range, leaf)).copied().unwrap_or(0)
            ^ old_contribution
            ^ new_contribution;
        let collected_cleared = record.is_some() && self.collected.contains_key(key);
        let change = Change {
            records: vec![(
                key,
                record.as_ref(),
                old.as_ref().map(|r| r.object.dots()).unwrap_or_default(),
            )],
            leaves: vec![((range, leaf), leaf_hash)],
            collected: if collected_cleared {
                vec![(key, None)]
            } else if let Some(digest) = collected {
                vec![(key, Some(digest))]
            } else {
                Vec::new()
            },
            ..Change::default()
        };
        let Some(store) = self.store.as_mut() else {
            return false;
        };
        if let Err(e) = store.commit(&change, true) {
            self.fail(ctx, "store a record", e);
            return false;
        }
        self.leaves.insert((range, leaf), leaf_hash);
        if collected_cleared {
            self.collected.remove(key);
            self.collected_at.remove(key);
        } else if let Some(digest) = collected {
            self.collected.insert(key.to_string(), digest);
            self.collected_at.insert(key.to_string(), now_us);
        }
        match record {
            Some(r) => self.records.insert(key.to_string(), r),
            None => self.records.remove(key),
        };
        self.last_change_us = now_us;
        self.snapshot_due = true;
        ctx.observe(Observation::Stored {
            key: key.to_string(),
        });
        true
    }

    /// Merges `incoming` into the local copy of `key`; returns false on a disk failure.
    fn merge_in(&mut self, ctx: &mut Ctx<'_, Self>, key: &str, incoming: &Object) -> bool {
        if incoming.is_empty() {
            return true;
        }
        let current = self.records.get(key).map(|r| r.object.clone());
        if current.is_none() && self.collected.get(key) == Some(&incoming.digest()) {
            // A tombstone this replica already collected, shipped back by a slower one.
            return true;
        }
        let mut object = current.clone().unwrap_or_default();
        let changed = object.merge(incoming, self.bugs.flaws());
        if !changed && current.is_some() {
            return true;
        }
        self.put_record(ctx, key, Some(object))
    }

    fn local_object(&self, key: &str) -> Object {
        self.records
            .get(key)
            .map(|r| r.object.clone())
            .unwrap_or_default()
    }

    fn answer(&mut self, ctx: &mut Ctx<'_, Self>, origin: Origin, completion: Completion<Reply>) {
        match origin {
            Origin::Client(op) => match completion {
                Completion::Ok(reply) => ctx.reply_ok(op, reply),
                Completion::Fail(why) => ctx.reply_fail(op, why),
                Completion::Info(why) => ctx.reply_info(op, why),
            },
            Origin::Forwarded { from, token } => {
                ctx.send(from, Msg::ForwardReply { token, completion });
            }
        }
    }

    // ----- requests ---------------------------------------------------------------------

    fn request(&mut self, ctx: &mut Ctx<'_, Self>, origin: Origin, op: Op) {
        if self.failed {
            self.answer(ctx, origin, Completion::Fail("node storage failed".into()));
            return;
        }
        let key = op.key().to_string();
        let (pref, _) = self.placement(&key);
        match op {
            Op::Get { .. } => self.start_read(ctx, origin, key, pref),
            Op::Put { .. } | Op::Delete { .. } if !pref.contains(&self.me()) => {
                match origin {
                    Origin::Client(op_id) => {
                        let token = self.token();
                        let to = NodeId(
                            pref.iter()
                                .copied()
                                .find(|&r| self.is_up(r))
                                .unwrap_or(pref[0]),
                        );
                        self.pending.insert(token, Pending::Forwarded { op: op_id });
                        ctx.send(to, Msg::Forward { token, op });
                        ctx.set_timer(
                            self.settings.timing.request_timeout,
                            Timer::Expire { token },
                        );
                    }
                    // Forwarded twice would loop; a replica must coordinate.
                    Origin::Forwarded { .. } => {
                        self.answer(
                            ctx,
                            origin,
                            Completion::Fail("not a replica of the key".into()),
                        );
                    }
                }
            }
            Op::Put {
                id, value, context, ..
            } => self.coordinate_write(ctx, origin, key, id, Some(value), context, pref),
            Op::Delete { id, context, .. } => {
                self.coordinate_write(ctx, origin, key, id, None, context, pref)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn coordinate_write(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        origin: Origin,
        key: String,
        id: String,
        value: Option<Vec<String>>,
        context: Vv,
        replicas: Vec<u32>,
    ) {
        let Some(dot) = self.fresh_dot(ctx) else {
            self.answer(
                ctx,
                origin,
                Completion::Fail("could not reserve a version".into()),
            );
            return;
        };
        let naive_delete = value.is_none() && self.bugs.missing_key_is_older;
        let mut object = self.local_object(&key);
        object.write(
            Sibling {
                dot,
                context,
                id: id.clone(),
                value,
                stamp_us: ctx.now().as_micros(),
            },
            self.bugs.flaws(),
        );
        // Reported before the version is stored: a crash inside the store may still
        // leave the version on disk (its batch written, the handler cut short), and the
        // checkers must know which write a surviving dot stands for. A dot whose version
        // never reached the disk is simply never acknowledged nor final.
        ctx.observe(Observation::Coordinated {
            key: key.clone(),
            id,
            dot,
        });
        let stored = if naive_delete {
            self.put_record(ctx, &key, None)
        } else {
            self.put_record(ctx, &key, Some(object.clone()))
        };
        if !stored {
            self.answer(
                ctx,
                origin,
                Completion::Fail("could not store the write".into()),
            );
            return;
        }
        let token = self.token();
        let mut skipped = false;
        for &r in replicas.iter().filter(|&&r| r != self.me()) {
            if !self.is_up(r) {
                // Not contacted: its fallback gets a hint right away.
                skipped = true;
                continue;
            }
            let msg = if naive_delete {
                Msg::Remove {
                    key: key.clone(),
                    token,
                }
            } else {
                Msg::Replicate {
                    key: key.clone(),
                    object: object.clone(),
                    token,
                }
            };
            ctx.send(NodeId(r), msg);
        }
        let pending = Pending::Write {
            origin,
            key,
            dot,
            object,
            replicas,
            acked: BTreeSet::from([self.me()]),
            hinted: BTreeSet::new(),
            hints_sent: BTreeSet::new(),
            answered: false,
            naive_delete,
        };
        self.pending.insert(token, pending);
        self.check_write(ctx, token);
        if skipped {
            self.send_hints(ctx, token, true);
        }
        if self.pending.contains_key(&token) {
            ctx.set_timer(self.settings.timing.hint_after, Timer::HintAfter { token });
            ctx.set_timer(
                self.settings.timing.request_timeout,
                Timer::Expire { token },
            );
        }
    }

    fn check_write(&mut self, ctx: &mut Ctx<'_, Self>, token: u64) {
        let quorum = self.settings.quorum;
        let Some(Pending::Write {
            origin,
            dot,
            acked,
            hinted,
            answered,
            ..
        }) = self.pending.get_mut(&token)
        else {
            return;
        };
        let count = acked.len()
            + if quorum.sloppy {
                hinted.difference(acked).count()
            } else {
                0
            };
        if !*answered && count >= quorum.w {
            *answered = true;
            let (origin, dot) = (*origin, *dot);
            self.answer(ctx, origin, Completion::Ok(Reply::Written { dot }));
        }
    }

    /// Sends a hint for each replica that has not acknowledged (`only_down`: each one
    /// this node takes to be down), to a fallback chosen per key and owner so that hints
    /// spread over the fallbacks, skipping fallbacks taken to be down.
    fn send_hints(&mut self, ctx: &mut Ctx<'_, Self>, token: u64, only_down: bool) {
        let Some(Pending::Write {
            key,
            object,
            replicas,
            acked,
            hints_sent,
            naive_delete: false,
            ..
        }) = self.pending.get(&token)
        else {
            return;
        };
        let (_, fallbacks) = self.placement(key);
        if fallbacks.is_empty() {
            return;
        }
        let spread = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize;
        let mut sends = Vec::new();
        for (i, &owner) in replicas.iter().enumerate() {
            if acked.contains(&owner)
                || hints_sent.contains(&owner)
                || (only_down && self.is_up(owner))
            {
                continue;
            }
            let first = (spread + i) % fallbacks.len();
            let fallback = (0..fallbacks.len())
                .map(|j| fallbacks[(first + j) % fallbacks.len()])
                .find(|&f| self.is_up(f))
                .unwrap_or(fallbacks[first]);
            sends.push((owner, fallback));
        }
        let (key, object) = (key.clone(), object.clone());
        if let Some(Pending::Write { hints_sent, .. }) = self.pending.get_mut(&token) {
            hints_sent.extend(sends.iter().map(|&(owner, _)| owner));
        }
        for (owner, fallback) in sends {
            ctx.send(
                NodeId(fallback),
                Msg::Hint {
                    key: key.clone(),
                    object: object.clone(),
                    owner,
                    token,
                },
            );
        }
    }

    fn start_read(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        origin: Origin,
        key: String,
        replicas: Vec<u32>,
    ) {
        let token = self.token();
        for &r in replicas.iter().filter(|&&r| r != self.me()) {
            ctx.send(
                NodeId(r),
                Msg::Read {
                    key: key.clone(),
                    token,
                },
            );
        }
        let mine = replicas
            .contains(&self.me())
            .then(|| self.local_object(&key));
        self.pending.insert(
            token,
            Pending::Read {
                origin,
                key,
                replies: BTreeMap::new(),
                merged: None,
                repairing: BTreeSet::new(),
                answered: false,
            },
        );
        ctx.set_timer(
            self.settings.timing.request_timeout,
            Timer::Expire { token },
        );
        if let Some(object) = mine {
            let me = self.me();
            self.read_reply(ctx, token, me, object);
        }
    }

    fn read_reply(&mut self, ctx: &mut Ctx<'_, Self>, token: u64, from: u32, object: Object) {
        let r = self.settings.quorum.r;
        let me = self.me();
        let flaws = self.bugs.flaws();
        let Some(Pending::Read {
            key,
            replies,
            merged,
            repairing,
            ..
        }) = self.pending.get_mut(&token)
        else {
            return;
        };
        if replies.contains_key(&from) {
            return;
        }
        replies.insert(from, object.clone());
        let key = key.clone();
        if let Some(m) = merged.clone() {
            // Asynchronous repair of a replica that answered after the quorum.
            let mut combined = m.clone();
            combined.merge(&object, flaws);
            if object.dots() != combined.dots() {
                self.repair(ctx, &key, from, &combined, None);
            }
            return;
        }
        if replies.len() < r {
            return;
        }
        let mut all = Object::default();
        for o in replies.values() {
            all.merge(o, flaws);
        }
        *merged = Some(all.clone());
        let stale: Vec<u32> = replies
            .iter()
            .filter(|(_, o)| o.dots() != all.dots())
            .map(|(&n, _)| n)
            .collect();
        for &n in &stale {
            if n != me {
                repairing.insert(n);
            }
        }
        let remote_repairs = !repairing.is_empty();
        for n in stale {
            self.repair(ctx, &key, n, &all, Some(token));
        }
        if remote_repairs {
            ctx.set_timer(
                self.settings.timing.repair_wait,
                Timer::RepairDone { token },
            );
        } else {
            self.finish_read(ctx, token);
        }
    }

    fn repair(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        key: &str,
        replica: u32,
        object: &Object,
        token: Option<u64>,
    ) {
        if replica == self.me() {
            self.merge_in(ctx, key, object);
        } else {
            ctx.send(
                NodeId(replica),
                Msg::Replicate {
                    key: key.to_string(),
                    object: object.clone(),
                    token: token.unwrap_or(0),
                },
            );
        }
    }

    fn finish_read(&mut self, ctx: &mut Ctx<'_, Self>, token: u64) {
        let Some(Pending::Read {
            origin,
            key,
            merged: Some(merged),
            answered,
            ..
        }) = self.pending.get_mut(&token)
        else {
            return;
        };
        if *answered {
            return;
        }
        *answered = true;
        let siblings: Vec<SiblingView> = merged
            .siblings
            .iter()
            .map(|s| SiblingView {
                dot: s.dot,
                id: s.id.clone(),
                value: s.value.clone(),
            })
            .collect();
        let count = siblings.iter().filter(|s| s.value.is_some()).count() as u32;
        let context = merged.context();
        let (origin, key) = (*origin, key.clone());
        ctx.observe(Observation::ReadSiblings { key, count });
        self.answer(
            ctx,
            origin,
            Completion::Ok(Reply::Read { siblings, context }),
        );
    }

    // ----- background work --------------------------------------------------------------

    fn tick(&mut self, ctx: &mut Ctx<'_, Self>) {
        ctx.set_timer(self.settings.timing.tick, Timer::Tick);
        if self.failed {
            return;
        }
        let now_us = ctx.now().as_micros();
        let timing = self.settings.timing.clone();
        if now_us.saturating_sub(self.last_hint_round_us) >= timing.hint_interval.as_micros() {
            self.last_hint_round_us = now_us;
            self.hint_round(ctx, now_us);
        }
        if now_us.saturating_sub(self.last_ae_round_us) >= timing.ae_interval.as_micros() {
            self.last_ae_round_us = now_us;
            self.anti_entropy_round(ctx);
            self.gc_round(ctx, now_us);
        }
        if self.snapshot_due
            && now_us.saturating_sub(self.last_change_us) >= timing.settle.as_micros()
        {
            self.snapshot_due = false;
            self.snapshot(ctx);
        }
    }

    fn hint_round(&mut self, ctx: &mut Ctx<'_, Self>, now_us: u64) {
        let ttl_us = self.settings.timing.hint_ttl.as_micros();
        let expired: Vec<u64> = self
            .hints
            .values()
            .filter(|h| now_us.saturating_sub(h.created_us) >= ttl_us)
            .map(|h| h.id)
            .collect();
        for id in expired {
            if self.remove_hint(ctx, id) {
                ctx.observe(Observation::HintExpired {
                    hint: (self.me(), id),
                });
            }
        }
        self.hint_rounds += 1;
        // Owners taken to be down are offered their hints only every
        // `DOWN_OFFER_EVERY` rounds: a membership view can be wrong (a live node
        // declared dead until its refutation spreads), and a hint must not wait on it.
        let all = self.hint_rounds.is_multiple_of(DOWN_OFFER_EVERY);
        self.offer_hints(ctx, None, all);
    }

    /// Offers held hints to their owners (only `owner`'s if given; owners taken to be
    /// down only with `down_too`), at most `HANDOFF_PER_TICK`.
    fn offer_hints(&mut self, ctx: &mut Ctx<'_, Self>, owner: Option<u32>, down_too: bool) {
        let offers: Vec<(u64, u32, String, Object)> = self
            .hints
            .values()
            .filter(|h| owner.is_none_or(|o| h.owner == o) && (down_too || self.is_up(h.owner)))
            .take(HANDOFF_PER_TICK)
            .map(|h| (h.id, h.owner, h.key.clone(), h.object.clone()))
            .collect();
        for (hint, owner, key, object) in offers {
            ctx.send(NodeId(owner), Msg::HandOff { hint, key, object });
        }
    }

    fn remove_hint(&mut self, ctx: &mut Ctx<'_, Self>, id: u64) -> bool {
        let Some(versions) = self.hints.get(&id).map(|h| h.object.siblings.len()) else {
            return false;
        };
        if !self.bugs.hints_not_durable {
            let change = Change {
                hints_removed: vec![(id, versions)],
                ..Change::default()
            };
            if let Some(store) = self.store.as_mut()
                && let Err(e) = store.commit(&change, true)
            {
                self.fail(ctx, "remove a hint", e);
                return false;
            }
        }
        self.hints.remove(&id);
        true
    }

    fn my_ranges(&self) -> Vec<(u32, Vec<u32>)> {
        self.ranges
            .iter()
            .filter(|(set, _)| set.contains(&self.me()))
            .map(|(set, &r)| (r, set.clone()))
            .collect()
    }

    /// Offers every range's leaves to one of its other replicas, taken in turn.
    fn anti_entropy_round(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.ae_rounds += 1;
        for (range, set) in self.my_ranges() {
            let peers: Vec<u32> = set
                .into_iter()
                .filter(|&p| p != self.me() && self.is_up(p))
                .collect();
            if peers.is_empty() {
                continue;
            }
            let peer = peers[(self.ae_rounds as usize + range as usize) % peers.len()];
            let leaves = self.range_leaves(range);
            ctx.send(NodeId(peer), Msg::AeLeaves { range, leaves });
        }
    }

    fn range_leaves(&self, range: u32) -> Vec<u64> {
        (0..LEAVES)
            .map(|l| self.leaves.get(&(range, l)).copied().unwrap_or(0))
            .collect()
    }

    fn objects_in(&self, range: u32, leaves: &[u32]) -> Vec<(String, Object)> {
        self.records
            .iter()
            .filter(|(k, _)| leaves.contains(&Self::leaf_of(k)) && self.range_of(k).0 == range)
            .map(|(k, r)| (k.clone(), r.object.clone()))
            .collect()
    }

    fn gc_round(&mut self, ctx: &mut Ctx<'_, Self>, now_us: u64) {
        let grace_us = self.settings.timing.tombstone_grace.as_micros();
        let due: Vec<(String, u64)> = self
            .records
            .iter()
            .filter(|(_, r)| {
                r.object.is_tombstone()
                    && (self.bugs.tombstone_gc_no_grace
                        || r.tombstone_since_us
                            .is_some_and(|t| now_us.saturating_sub(t) >= grace_us))
            })
            .map(|(k, r)| (k.clone(), r.object.digest()))
            .collect();
        // A collected tombstone's record is kept while a copy could still be shipped
        // back: it is dropped once every other replica answers that it holds no version
        // of the key (each collected it too, or never had it), since hints of it expired
        // before the collection (`hint_ttl < tombstone_grace`).
        let remembered: Vec<String> = self
            .collected
            .keys()
            .filter(|k| !self.records.contains_key(*k))
            .cloned()
            .collect();
        for key in remembered {
            let (_, replicas) = self.range_of(&key);
            self.forget.insert(key.clone(), BTreeSet::new());
            for r in replicas.into_iter().filter(|&r| r != self.me()) {
                ctx.send(NodeId(r), Msg::ForgetQuery { key: key.clone() });
            }
            self.maybe_forget(ctx, &key);
        }
        for (key, digest) in due {
            if self.bugs.tombstone_gc_no_grace {
                self.collect(ctx, &key, digest);
                continue;
            }
            let (_, replicas) = self.range_of(&key);
            self.gc.insert(key.clone(), (digest, BTreeSet::new()));
            for r in replicas.into_iter().filter(|&r| r != self.me()) {
                ctx.send(
                    NodeId(r),
                    Msg::GcQuery {
                        key: key.clone(),
                        digest,
                    },
                );
            }
            self.maybe_collect(ctx, &key);
        }
    }

    fn maybe_collect(&mut self, ctx: &mut Ctx<'_, Self>, key: &str) {
        let (_, replicas) = self.range_of(key);
        let Some((digest, yes)) = self.gc.get(key) else {
            return;
        };
        let digest = *digest;
        if replicas.iter().all(|r| *r == self.me() || yes.contains(r)) {
            self.gc.remove(key);
            let still = self
                .records
                .get(key)
                .is_some_and(|r| r.object.is_tombstone() && r.object.digest() == digest);
            if still {
                self.collect(ctx, key, digest);
            }
        }
    }

    fn maybe_forget(&mut self, ctx: &mut Ctx<'_, Self>, key: &str) {
        let (_, replicas) = self.range_of(key);
        let Some(absent) = self.forget.get(key) else {
            return;
        };
        if !replicas
            .iter()
            .all(|r| *r == self.me() || absent.contains(r))
        {
            return;
        }
        self.forget.remove(key);
        if self.records.contains_key(key) || !self.collected.contains_key(key) {
            return;
        }
        let change = Change {
            collected: vec![(key, None)],
            ..Change::default()
        };
        if let Some(store) = self.store.as_mut()
            && let Err(e) = store.commit(&change, true)
        {
            self.fail(ctx, "forget a collected tombstone", e);
            return;
        }
        self.collected.remove(key);
        self.collected_at.remove(key);
        self.snapshot_due = true;
        ctx.observe(Observation::Forgot {
            key: key.to_string(),
        });
    }

    fn collect(&mut self, ctx: &mut Ctx<'_, Self>, key: &str, digest: u64) {
        let dots = self.local_object(key).dots();
        // Reported before the removal: a crash inside it may still let the removal
        // reach the disk, and a version that stays is still final, so the report is
        // harmless if it does not.
        ctx.observe(Observation::Collected {
            key: key.to_string(),
            dots,
        });
        self.store_record(ctx, key, None, Some(digest));
    }

    fn snapshot(&mut self, ctx: &mut Ctx<'_, Self>) {
        let keys = self
            .records
            .iter()
            .map(|(k, r)| {
                let versions = r
                    .object
                    .siblings
                    .iter()
                    .map(|s| (s.dot, s.id.clone(), s.value.is_none()))
                    .collect();
                (k.clone(), (self.range_of(k).0, versions))
            })
            .collect();
        let roots = self
            .my_ranges()
            .into_iter()
            .map(|(range, set)| (range, (set, self.root(range))))
            .collect();
        ctx.observe(Observation::Snapshot {
            keys,
            roots,
            remembered: self.collected.len() as u32,
        });
    }

    // ----- messages -----------------------------------------------------------------------

    fn handle(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        match msg {
            Msg::Forward { token, op } => {
                self.request(ctx, Origin::Forwarded { from, token }, op);
            }
            Msg::ForwardReply { token, completion } => {
                if let Some(Pending::Forwarded { op }) = self.pending.remove(&token) {
                    self.answer(ctx, Origin::Client(op), completion);
                }
            }
            Msg::Replicate { key, object, token } => {
                if self.merge_in(ctx, &key, &object) {
                    ctx.send(from, Msg::ReplicateAck { key, token });
                }
            }
            Msg::Remove { key, token } => {
                if !self.records.contains_key(&key) || self.put_record(ctx, &key, None) {
                    ctx.send(from, Msg::ReplicateAck { key, token });
                }
            }
            Msg::ReplicateAck { token, .. } => match self.pending.get_mut(&token) {
                Some(Pending::Write { acked, .. }) => {
                    acked.insert(from.0);
                    self.check_write(ctx, token);
                }
                Some(Pending::Read { repairing, .. }) => {
                    repairing.remove(&from.0);
                    if repairing.is_empty() {
                        self.finish_read(ctx, token);
                    }
                }
                _ => {}
            },
            Msg::Hint {
                key,
                object,
                owner,
                token,
            } => self.take_hint(ctx, from, key, object, owner, token),
            Msg::HintAck { owner, token } => {
                if let Some(Pending::Write { hinted, .. }) = self.pending.get_mut(&token) {
                    hinted.insert(owner);
                    self.check_write(ctx, token);
                }
            }
            Msg::Read { key, token } => {
                let object = self.local_object(&key);
                ctx.send(from, Msg::ReadReply { key, token, object });
            }
            Msg::ReadReply { token, object, .. } => self.read_reply(ctx, token, from.0, object),
            Msg::HandOff { hint, key, object } => {
                if self.merge_in(ctx, &key, &object) {
                    ctx.send(from, Msg::HandOffAck { hint });
                }
            }
            Msg::HandOffAck { hint } => {
                let me = self.me();
                if self.hints.contains_key(&hint) {
                    ctx.observe(Observation::HintDelivered { hint: (me, hint) });
                    if self.remove_hint(ctx, hint) {
                        ctx.observe(Observation::HintRemoved { hint: (me, hint) });
                    }
                }
            }
            Msg::AeLeaves { range, leaves } => {
                let mine = self.range_leaves(range);
                let differing: Vec<u32> = (0..LEAVES)
                    .filter(|&l| mine.get(l as usize) != leaves.get(l as usize))
                    .collect();
                if !differing.is_empty() {
                    let objects = self.objects_in(range, &differing);
                    ctx.send(
                        from,
                        Msg::AeObjects {
                            range,
                            objects,
                            want: differing,
                        },
                    );
                }
            }
            Msg::AeObjects {
                range,
                objects,
                want,
            } => {
                for (key, object) in &objects {
                    if !self.merge_in(ctx, key, object) {
                        return;
                    }
                }
                if !want.is_empty() {
                    let objects = self.objects_in(range, &want);
                    ctx.send(
                        from,
                        Msg::AeObjects {
                            range,
                            objects,
                            want: Vec::new(),
                        },
                    );
                }
            }
            Msg::GcQuery { key, digest } => {
                let holds = self
                    .records
                    .get(&key)
                    .is_some_and(|r| r.object.digest() == digest);
                let ok = holds
                    || (!self.records.contains_key(&key)
                        && self.collected.get(&key) == Some(&digest));
                ctx.send(from, Msg::GcReply { key, digest, ok });
            }
            Msg::Gossip(m) => self.with_swim(ctx, |g, c| g.on_message(c, from, m)),
            Msg::ForgetQuery { key } => {
                let settle_us = self.settings.timing.request_timeout.as_micros();
                let now_us = ctx.now().as_micros();
                let absent = !self.records.contains_key(&key)
                    && self
                        .collected_at
                        .get(&key)
                        .is_none_or(|&t| now_us.saturating_sub(t) >= settle_us);
                ctx.send(from, Msg::ForgetReply { key, absent });
            }
            Msg::ForgetReply { key, absent } => {
                if let Some(yes) = self.forget.get_mut(&key) {
                    if absent {
                        yes.insert(from.0);
                        self.maybe_forget(ctx, &key);
                    } else {
                        self.forget.remove(&key);
                    }
                }
            }
            Msg::GcReply { key, digest, ok } => {
                if let Some((d, yes)) = self.gc.get_mut(&key)
                    && *d == digest
                {
                    if ok {
                        yes.insert(from.0);
                        self.maybe_collect(ctx, &key);
                    } else {
                        self.gc.remove(&key);
                    }
                }
            }
        }
    }

    fn take_hint(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        key: String,
        object: Object,
        owner: u32,
        token: u64,
    ) {
        let Some(dot) = self.fresh_dot(ctx) else {
            return;
        };
        let hint = Hint {
            id: dot.counter,
            owner,
            key: key.clone(),
            object,
            created_us: ctx.now().as_micros(),
        };
        if !self.bugs.hints_not_durable {
            let change = Change {
                hints_put: vec![&hint],
                ..Change::default()
            };
            if let Some(store) = self.store.as_mut()
                && let Err(e) = store.commit(&change, true)
            {
                self.fail(ctx, "store a hint", e);
                return;
            }
        }
        ctx.observe(Observation::HintStored {
            hint: (self.me(), hint.id),
            owner,
            key,
            expires_us: hint.created_us + self.settings.timing.hint_ttl.as_micros(),
        });
        self.hints.insert(hint.id, hint);
        ctx.send(from, Msg::HintAck { owner, token });
    }
}

impl Process for Node {
    type Msg = Msg;
    type Timer = Timer;
    type Op = Op;
    type Reply = Reply;
    type Obs = Observation;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        match self.settings.membership.ring() {
            Ok(ring) => {
                self.ranges = ring
                    .replica_sets(self.settings.quorum.n)
                    .into_iter()
                    .enumerate()
                    .map(|(i, set)| (set, i as u32))
                    .collect();
                self.ring = Some(ring);
            }
            Err(e) => {
                self.fail(ctx, "build the ring", e);
                return;
            }
        }
        let opener = self.settings.engine.clone();
        let recovered = Store::open(opener.as_ref(), ctx.disk(), DIR)
            .and_then(|store| store.recover().map(|r| (store, r)));
        match recovered {
            Ok((store, r)) => {
                self.store = Some(store);
                self.counter = r.counter_reserved;
                self.counter_reserved = r.counter_reserved;
                self.records = r.records;
                self.hints = r.hints;
                self.leaves = r.leaves;
                self.collected = r.collected;
                let now_us = ctx.now().as_micros();
                self.collected_at = self.collected.keys().map(|k| (k.clone(), now_us)).collect();
                ctx.observe(Observation::Recovered {
                    hints: self.hints.keys().copied().collect(),
                });
            }
            Err(e) => {
                self.fail(ctx, "recover", e);
                return;
            }
        }
        if let Some(config) = self.settings.membership.swim.clone() {
            // The SWIM member keeps its incarnation in its own directory of this disk,
            // in the same engine as the data.
            self.swim = Some(gossip::Node::new(
                gossip::Settings {
                    config,
                    leave_at: None,
                    engine: self.settings.engine.clone(),
                },
                gossip::Bugs::default(),
            ));
            self.with_swim(ctx, |m, c| m.on_start(c));
        }
        self.last_change_us = ctx.now().as_micros();
        let jitter = ctx
            .rng()
            .random_range(0..self.settings.timing.tick.as_micros().max(1));
        ctx.set_timer(SimDuration::from_micros(jitter), Timer::Tick);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        if self.failed {
            return;
        }
        self.handle(ctx, from, msg);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, id: TimerId, timer: Timer) {
        match timer {
            Timer::Tick => self.tick(ctx),
            Timer::HintAfter { token } => self.send_hints(ctx, token, false),
            Timer::Gossip(t) => {
                if !self.failed {
                    self.with_swim(ctx, |m, c| m.on_timer(c, id, t));
                }
            }
            Timer::RepairDone { token } => self.finish_read(ctx, token),
            Timer::Expire { token } => match self.pending.remove(&token) {
                Some(Pending::Write {
                    origin,
                    answered: false,
                    ..
                }) => self.answer(
                    ctx,
                    origin,
                    Completion::Info("write quorum not reached; the write may still spread".into()),
                ),
                Some(Pending::Read {
                    origin,
                    answered: false,
                    merged: None,
                    ..
                }) => self.answer(
                    ctx,
                    origin,
                    Completion::Fail("read quorum not reached".into()),
                ),
                Some(Pending::Forwarded { op }) => {
                    self.answer(
                        ctx,
                        Origin::Client(op),
                        Completion::Info("coordinator did not answer".into()),
                    );
                }
                _ => {}
            },
        }
    }

    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, request: Op) {
        self.request(ctx, Origin::Client(op), request);
    }
}
