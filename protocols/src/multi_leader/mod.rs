//! Multi-leader replication of CRDT-typed keys: every node accepts writes locally and
//! replicates them asynchronously, over a chosen topology, to every other node.
//!
//! **Writes.** A client may write at any node. The node reads its hybrid logical clock
//! ([`hlc`]), computes the operation's *delta* ([`crdt`]), joins it into the key's value,
//! and writes the new value, its outgoing replication-log entry, the clock, its sequence
//! number and its applied set in one batch of its `KvEngine`, synced, before it answers
//! the client. A change is named by `(origin, seq)`.
//!
//! **Replication.** Every `replicate_interval` a node sends each neighbour (per the
//! topology: all-to-all, ring, star or an explicit edge list) the log entries that
//! neighbour has not acknowledged, retransmitting those unacknowledged for
//! `retransmit_after`. A receiver joins each change it has not applied yet, records it as
//! applied, and — store and forward — logs it for its other neighbours, all in one synced
//! batch, and only then acknowledges. An entry is deleted once every neighbour it was due
//! to has acknowledged it. The applied set is a causal context over `(origin, seq)`, so a
//! change is applied at most once per node, also across restarts; since merges are joins,
//! delivery order does not matter and no type needs causal delivery (the dotted types
//! carry their causal context with them).
//!
//! **Conflicts.** The key space (the key's prefix) fixes the key's type and so its
//! conflict strategy: `g.` grow-only counters, `pn.` PN-counters, `lww.` last-writer-wins
//! registers ordered by (hybrid clock, node id), `mv.` multi-value registers and `set.`
//! add-wins OR-sets. An operation that does not fit the key space is refused with a
//! typed reason.
//!
//! **Shipping.** `Delta` ships each operation's delta; `Full` ships the key's whole value
//! after the operation. Both converge; every local write reports the size of both so a
//! run measures what delta shipping saves.
//!
//! **Quiescence.** A node whose state has not changed for `settle` emits a
//! [`Observation::Snapshot`] of every key: the checkers compare the last snapshots of all
//! nodes after the quiet phase (strong eventual consistency) and check each converged
//! value against its type's specification over the clients' history.

pub mod checker;
pub mod crdt;
pub mod hlc;
mod store;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sim_core::{Ctx, NodeId, OpId, Process, SimDuration, SimTime, TimerId};
use storage::kv::EngineOpener;

use self::crdt::{CausalContext, Dot, KeySpaces, Kind, LwwRegister, MergeFlaws, Stamp, Value};
use self::hlc::Hlc;
use self::store::{Commit, Store};
use crate::common::{BugFlag, BugFlagError, unknown};

/// Where a node keeps its durable state on its disk.
const DIR: &str = "multi_leader";

/// Who replicates to whom. Links are bidirectional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Topology {
    AllToAll,
    /// Node `i` with `i - 1` and `i + 1` (mod n).
    Ring,
    /// Node 0 is the hub.
    Star,
    /// An explicit list of undirected edges.
    Custom(Vec<(u32, u32)>),
}

impl Topology {
    /// The neighbours of `me` in a cluster of `n`, in id order.
    pub fn neighbours(&self, me: u32, n: u32) -> Vec<NodeId> {
        let set: BTreeSet<u32> = match self {
            Topology::AllToAll => (0..n).filter(|&p| p != me).collect(),
            Topology::Ring if n <= 1 => BTreeSet::new(),
            Topology::Ring => [(me + 1) % n, (me + n - 1) % n]
                .into_iter()
                .filter(|&p| p != me)
                .collect(),
            Topology::Star if me == 0 => (1..n).collect(),
            Topology::Star => [0].into_iter().filter(|_| n > 1).collect(),
            Topology::Custom(edges) => edges
                .iter()
                .filter_map(|&(a, b)| match (a == me, b == me) {
                    (true, false) => Some(b),
                    (false, true) => Some(a),
                    _ => None,
                })
                .collect(),
        };
        set.into_iter().map(NodeId).collect()
    }

    /// Checks that every edge names two distinct nodes of the cluster and that the graph
    /// connects every node (otherwise some replicas can never converge).
    pub fn validate(&self, n: u32) -> Result<(), String> {
        if let Topology::Custom(edges) = self {
            for &(a, b) in edges {
                if a >= n || b >= n {
                    return Err(format!("edge [{a}, {b}] names a node outside 0..{n}"));
                }
                if a == b {
                    return Err(format!("edge [{a}, {b}] is a self-loop"));
                }
            }
        }
        let mut seen = BTreeSet::from([0u32]);
        let mut frontier = vec![0u32];
        while let Some(x) = frontier.pop() {
            for p in self.neighbours(x, n) {
                if seen.insert(p.0) {
                    frontier.push(p.0);
                }
            }
        }
        if n > 0 && seen.len() as u32 != n {
            let missing: Vec<String> = (0..n)
                .filter(|x| !seen.contains(x))
                .map(|x| x.to_string())
                .collect();
            return Err(format!(
                "the topology does not connect node 0 to nodes {}",
                missing.join(", ")
            ));
        }
        Ok(())
    }
}

/// What a replication message carries for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shipping {
    /// The operation's delta.
    Delta,
    /// The key's whole value after the operation.
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub replicate_interval: SimDuration,
    pub retransmit_after: SimDuration,
    /// How long a node's state must stay unchanged before it reports a snapshot.
    pub settle: SimDuration,
    /// The most changes in one replication message.
    pub batch_max: usize,
    /// How long a conflict record is kept once the change that caused it is causally
    /// stable (applied at every node), measured on the node's hybrid clock.
    pub conflict_retention: SimDuration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            replicate_interval: SimDuration::from_millis(20),
            retransmit_after: SimDuration::from_millis(150),
            settle: SimDuration::from_millis(200),
            batch_max: 64,
            conflict_retention: SimDuration::from_millis(500),
        }
    }
}

impl Timing {
    pub fn validate(&self) -> Result<(), String> {
        if self.replicate_interval == SimDuration::ZERO {
            return Err("replicate_interval must be positive".into());
        }
        if self.retransmit_after < self.replicate_interval {
            return Err("retransmit_after must be at least replicate_interval".into());
        }
        if self.settle < self.replicate_interval {
            return Err("settle must be at least replicate_interval".into());
        }
        if self.batch_max == 0 {
            return Err("batch_max must be positive".into());
        }
        Ok(())
    }
}

/// A node's configuration.
#[derive(Clone)]
pub struct Settings {
    pub topology: Topology,
    pub shipping: Shipping,
    pub timing: Timing,
    /// The key spaces: the built-in ones and the scenario's custom-merge ones.
    pub spaces: KeySpaces,
    /// The node's storage engine.
    pub engine: Arc<dyn EngineOpener>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("topology", &self.topology)
            .field("shipping", &self.shipping)
            .field("timing", &self.timing)
            .field("spaces", &self.spaces)
            .field("engine", &self.engine.name())
            .finish()
    }
}

/// A replicated change: `(origin, seq)` names it; `delta` is joined into `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub origin: u32,
    pub seq: u64,
    pub key: String,
    /// The origin's clock when it made the change (receivers advance their clocks).
    pub hlc: Hlc,
    pub delta: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Changes the receiver has not acknowledged.
    Replicate { updates: Vec<Update> },
    /// The changes `(origin, seq)` are durable at the sender; with the sender's view of
    /// what every node has applied (for causal stability).
    Ack { ids: Vec<(u32, u64)>, seen: Matrix },
}

/// Per node, the changes it has applied as a version vector over origins (`node ->
/// origin -> seq`): what each node has told, directly or through others. Joined by
/// pointwise maximum. A change `(origin, seq)` is *causally stable* once every node's
/// row reaches it.
pub type Matrix = BTreeMap<u32, BTreeMap<u32, u64>>;

fn join_matrix(a: &mut Matrix, b: &Matrix) -> bool {
    let mut grew = false;
    for (node, row) in b {
        let mine = a.entry(*node).or_default();
        for (origin, seq) in row {
            let e = mine.entry(*origin).or_insert(0);
            if *seq > *e {
                *e = *seq;
                grew = true;
            }
        }
    }
    grew
}

/// How a conflict was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// LWW: the write with the greater (clock, node) stamp was kept.
    Kept {
        kept: (Stamp, String),
        discarded: (Stamp, String),
    },
    /// Custom merge: the values held, the values the change brought, the concurrent
    /// values now held, and what they read as through the key space's function.
    Merged {
        held: Vec<(Dot, String)>,
        incoming: Vec<(Dot, String)>,
        result: Vec<(Dot, String)>,
        resolved: String,
    },
}

/// A durable conflict record: a replicated write met a different write of the key at
/// this node (from another origin or from the same one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The record's number at this node.
    pub id: u64,
    pub key: String,
    /// The change `(origin, seq)` whose application met the held value.
    pub change: (u32, u64),
    /// The node's clock when it recorded the conflict.
    pub at: Hlc,
    pub resolution: Resolution,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    Replicate,
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A counter (`g.` or `pn.`) grows by `by`.
    Increment { key: String, by: u64 },
    /// A PN-counter (`pn.`) shrinks by `by`.
    Decrement { key: String, by: u64 },
    /// A register (`lww.` or `mv.`) takes `value`.
    Assign { key: String, value: String },
    /// An OR-set (`set.`) gains `element`.
    Add { key: String, element: String },
    /// An OR-set loses `element` as observed here.
    Remove { key: String, element: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Increment { key, .. }
            | Op::Decrement { key, .. }
            | Op::Assign { key, .. }
            | Op::Add { key, .. }
            | Op::Remove { key, .. } => key,
        }
    }

    fn applies_to(&self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Op::Increment { .. }, Kind::GCounter | Kind::PnCounter)
                | (Op::Decrement { .. }, Kind::PnCounter)
                | (
                    Op::Assign { .. },
                    Kind::Lww | Kind::MvRegister | Kind::Custom(_)
                )
                | (Op::Add { .. } | Op::Remove { .. }, Kind::OrSet)
        )
    }
}

/// A successful write's receipt: what the checkers need to place it causally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Counted,
    /// An LWW write and its timestamp.
    Assigned {
        stamp: Stamp,
    },
    /// A multi-value write, its dot and the dots (values) it replaced.
    Written {
        dot: Dot,
        supersedes: Vec<Dot>,
    },
    /// An OR-set add, its dot and the element's dots it observed and replaced.
    Added {
        dot: Dot,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replaces: Vec<Dot>,
    },
    /// The add dots the remove observed and deleted.
    Removed {
        dots: Vec<Dot>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// A local write is durable; the sizes of its delta and of the key's whole value.
    LocalWrite {
        key: String,
        seq: u64,
        delta_bytes: u64,
        state_bytes: u64,
    },
    /// A remote change `(origin, seq)` was applied (durably) here.
    Applied {
        origin: u32,
        seq: u64,
        key: String,
        from: u32,
    },
    /// A remote change could not be applied (its value does not fit the key space).
    Rejected {
        origin: u32,
        seq: u64,
        key: String,
        error: String,
    },
    /// A conflict record, durable (in the batch that applied the change) before this.
    Conflict(ConflictRecord),
    /// The conflict records a restarted node read back from its disk.
    RecoveredConflicts { records: Vec<ConflictRecord> },
    /// Metadata collected once causally stable: conflict records past their retention and
    /// log entries every node has applied.
    Collected { records: Vec<u64>, log_entries: u64 },
    /// The node's metadata, reported with each snapshot and after each collection:
    /// conflict records kept, outgoing
    /// log entries, and the dots and version-vector entries in its values' causal
    /// contexts and its applied set.
    Metadata {
        records: u64,
        log_entries: u64,
        context_entries: u64,
    },
    /// Every key's value, emitted once the state has been unchanged for `settle`.
    Snapshot { values: BTreeMap<String, Value> },
    /// The storage engine failed; the node stops serving until it restarts.
    StorageFailed { error: String },
}

pub const BUG_FLAGS: &[BugFlag] = &[
    BugFlag {
        name: "multi_leader.gcounter_merge_sums",
        description: "counter merges add the replicas' entries instead of taking their maximum, so a change received twice (or a full state) is counted twice",
    },
    BugFlag {
        name: "multi_leader.replica_slot_collision",
        description: "counter entries are keyed by the node's incarnation rather than its stable id, so replicas overwrite each other's slot",
    },
    BugFlag {
        name: "multi_leader.lww_no_tiebreak",
        description: "LWW writes with equal hybrid clocks are resolved by arrival order instead of node id",
    },
    BugFlag {
        name: "multi_leader.orset_remove_unobserved",
        description: "an OR-set remove also deletes concurrent adds of the element it never observed",
    },
    BugFlag {
        name: "multi_leader.dot_counter_not_persisted",
        description: "a node's dot counters live in memory only, so after a crash it reuses dots",
    },
    BugFlag {
        name: "multi_leader.mvreg_collapse",
        description: "multi-value register merges keep only the greatest dot, collapsing concurrent writes to one value",
    },
    BugFlag {
        name: "multi_leader.same_origin_conflicts_ignored",
        description: "a conflict is recorded only when the held write's origin differs from the node that delivered the change (the reference's local_origin != remote_node test), so forwarded and same-origin conflicts leave no record",
    },
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub gcounter_merge_sums: bool,
    pub replica_slot_collision: bool,
    pub lww_no_tiebreak: bool,
    pub orset_remove_unobserved: bool,
    pub dot_counter_not_persisted: bool,
    pub mvreg_collapse: bool,
    pub same_origin_conflicts_ignored: bool,
}

impl Bugs {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, BugFlagError> {
        let mut bugs = Bugs::default();
        for name in names {
            match name {
                "multi_leader.gcounter_merge_sums" => bugs.gcounter_merge_sums = true,
                "multi_leader.replica_slot_collision" => bugs.replica_slot_collision = true,
                "multi_leader.lww_no_tiebreak" => bugs.lww_no_tiebreak = true,
                "multi_leader.orset_remove_unobserved" => bugs.orset_remove_unobserved = true,
                "multi_leader.dot_counter_not_persisted" => bugs.dot_counter_not_persisted = true,
                "multi_leader.mvreg_collapse" => bugs.mvreg_collapse = true,
                "multi_leader.same_origin_conflicts_ignored" => {
                    bugs.same_origin_conflicts_ignored = true
                }
                _ => return Err(unknown(name, BUG_FLAGS)),
            }
        }
        Ok(bugs)
    }

    fn flaws(self) -> MergeFlaws {
        MergeFlaws {
            counters_sum: self.gcounter_merge_sums,
            lww_no_tiebreak: self.lww_no_tiebreak,
            mv_collapse: self.mvreg_collapse,
            orset_remove_unobserved: self.orset_remove_unobserved,
        }
    }
}

/// A log entry still owed to some neighbours, with when each was last sent it.
#[derive(Debug)]
struct Pending {
    update: Update,
    waiting: BTreeMap<NodeId, Option<SimTime>>,
}

/// A multi-leader node.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    settings: Settings,
    bugs: Bugs,
    neighbours: Vec<NodeId>,
    store: Option<Store>,
    hlc: Hlc,
    seq: u64,
    applied: CausalContext,
    values: BTreeMap<String, Value>,
    outbox: BTreeMap<(u32, u64), Pending>,
    /// Volatile dot counters, used only with the `dot_counter_not_persisted` defect.
    dot_cache: BTreeMap<String, u64>,
    /// Whether the state changed since the last snapshot, and when (local clock).
    dirty: Option<SimTime>,
    /// The conflict records kept on disk, by number.
    conflicts: BTreeMap<u64, ConflictRecord>,
    /// The last conflict record number used (durable).
    conflict_seq: u64,
    /// What every node has applied, as far as this node knows (volatile: rebuilt from
    /// the applied set and the neighbours after a restart).
    seen: Matrix,
    /// Each neighbour's matrix as it last sent it, and when this node last sent its own.
    neighbour_seen: BTreeMap<NodeId, (Matrix, Option<SimTime>)>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Store")
    }
}

fn encoded_len<T: Serialize>(value: &T) -> u64 {
    postcard::to_stdvec(value).map_or(0, |v| v.len() as u64)
}

fn millis(t: SimTime) -> u64 {
    t.as_micros() / 1000
}

impl Node {
    pub fn new(id: NodeId, settings: Settings, bugs: Bugs) -> Self {
        Node {
            id,
            settings,
            bugs,
            neighbours: Vec::new(),
            store: None,
            hlc: Hlc::default(),
            seq: 0,
            applied: CausalContext::new(),
            values: BTreeMap::new(),
            outbox: BTreeMap::new(),
            dot_cache: BTreeMap::new(),
            dirty: None,
            conflicts: BTreeMap::new(),
            conflict_seq: 0,
            seen: Matrix::new(),
            neighbour_seen: BTreeMap::new(),
        }
    }

    fn kind_of(&self, key: &str) -> Option<Kind> {
        self.settings.spaces.kind_of(key)
    }

    /// Refreshes this node's own row of the matrix from its applied set.
    fn refresh_own_row(&mut self, n: u32) {
        let row: BTreeMap<u32, u64> = (0..n)
            .map(|o| (o, self.applied.max_contiguous(o)))
            .filter(|&(_, s)| s > 0)
            .collect();
        self.seen.insert(self.id.0, row);
    }

    /// The highest seq of each origin that every node has applied.
    fn stable(&self, n: u32) -> BTreeMap<u32, u64> {
        (0..n)
            .map(|o| {
                let least = (0..n)
                    .map(|j| {
                        self.seen
                            .get(&j)
                            .and_then(|row| row.get(&o))
                            .copied()
                            .unwrap_or(0)
                    })
                    .min()
                    .unwrap_or(0);
                (o, least)
            })
            .collect()
    }

    /// Drops what causal stability makes unneeded: log entries every node has applied
    /// (whoever delivered them), and conflict records past their retention whose change
    /// every node has applied. Deletes are not synced: one lost in a crash is redone.
    fn collect_garbage(&mut self, ctx: &mut Ctx<'_, Self>) {
        let n = ctx.node_count() as u32;
        self.refresh_own_row(n);
        let stable = self.stable(n);
        let is_stable = |(o, s): (u32, u64)| stable.get(&o).is_some_and(|&st| s <= st);
        let log: Vec<(u32, u64)> = self
            .outbox
            .keys()
            .copied()
            .filter(|&id| is_stable(id))
            .collect();
        let now = self.hlc.physical.max(millis(ctx.now()));
        let retention = self.settings.timing.conflict_retention.as_micros() / 1000;
        let records: Vec<u64> = self
            .conflicts
            .values()
            .filter(|r| is_stable(r.change) && now.saturating_sub(r.at.physical) >= retention)
            .map(|r| r.id)
            .collect();
        if log.is_empty() && records.is_empty() {
            return;
        }
        let Some(store) = self.store.as_mut() else {
            return;
        };
        for &(o, s) in &log {
            self.outbox.remove(&(o, s));
            if let Err(e) = store.forget(o, s) {
                self.fail(ctx, e);
                return;
            }
        }
        for &id in &records {
            self.conflicts.remove(&id);
            if let Err(e) = store.forget_conflict(id) {
                self.fail(ctx, e);
                return;
            }
        }
        if !records.is_empty() {
            ctx.sometimes("multi_leader.conflict_records_collected");
        }
        if !log.is_empty() {
            // Still in the outbox, so not acknowledged by the neighbour it was due to.
            ctx.sometimes("multi_leader.stable_log_entries_collected");
        }
        ctx.observe(Observation::Collected {
            records,
            log_entries: log.len() as u64,
        });
        // The metadata report after a collection (a node may collect after its last
        // snapshot, once the final changes become stable).
        ctx.observe(self.metadata());
    }

    /// Sends the matrix to neighbours whose last one differs, at most once per
    /// `retransmit_after` each (so a lost one is sent again).
    fn gossip_stability(&mut self, ctx: &mut Ctx<'_, Self>) {
        let now = ctx.now();
        let resend = self.settings.timing.retransmit_after;
        for &nb in &self.neighbours {
            let entry = self
                .neighbour_seen
                .entry(nb)
                .or_insert_with(|| (Matrix::new(), None));
            if entry.0 == self.seen {
                continue;
            }
            if entry.1.is_some_and(|t| now.saturating_since(t) < resend) {
                continue;
            }
            entry.1 = Some(now);
            ctx.send(
                nb,
                Msg::Ack {
                    ids: Vec::new(),
                    seen: self.seen.clone(),
                },
            );
        }
    }

    fn metadata(&self) -> Observation {
        let mut context_entries = self.applied.size() as u64;
        for v in self.values.values() {
            context_entries += v.metadata_size() as u64;
        }
        Observation::Metadata {
            records: self.conflicts.len() as u64,
            log_entries: self.outbox.len() as u64,
            context_entries,
        }
    }

    fn fail(&mut self, ctx: &mut Ctx<'_, Self>, error: impl fmt::Display) {
        ctx.sometimes("multi_leader.fail_stop");
        self.store = None;
        ctx.observe(Observation::StorageFailed {
            error: error.to_string(),
        });
    }

    /// The next dot of this node for `key`: one above the highest it has used, which is
    /// in the key's durable causal context.
    fn next_dot(&self, key: &str, context: &CausalContext) -> Dot {
        let used = if self.bugs.dot_counter_not_persisted {
            self.dot_cache.get(key).copied().unwrap_or(0)
        } else {
            context.max_seen(self.id.0)
        };
        Dot::new(self.id.0, used + 1)
    }

    /// The delta of `op` on `current`, and the reply it earns; `Err` if it cannot apply.
    fn delta(
        &self,
        ctx: &Ctx<'_, Self>,
        op: &Op,
        current: &Value,
        hlc: Hlc,
    ) -> Result<(Value, Reply), String> {
        let slot = if self.bugs.replica_slot_collision {
            ctx.incarnation()
        } else {
            self.id.0
        };
        Ok(match (op, current) {
            (Op::Increment { by, .. }, Value::GCounter(c)) => (
                Value::GCounter(c.increment_delta(slot, *by)),
                Reply::Counted,
            ),
            (Op::Increment { by, .. }, Value::PnCounter(c)) => (
                Value::PnCounter(c.increment_delta(slot, *by)),
                Reply::Counted,
            ),
            (Op::Decrement { by, .. }, Value::PnCounter(c)) => (
                Value::PnCounter(c.decrement_delta(slot, *by)),
                Reply::Counted,
            ),
            (Op::Assign { value, .. }, Value::Lww(_)) => {
                let stamp = Stamp {
                    hlc,
                    replica: self.id.0,
                };
                (
                    Value::Lww(LwwRegister::assign_delta(stamp, value.clone())),
                    Reply::Assigned { stamp },
                )
            }
            (Op::Assign { key, value }, Value::MvRegister(r)) => {
                let dot = self.next_dot(key, r.context());
                (
                    Value::MvRegister(r.assign_delta(dot, value.clone())),
                    Reply::Written {
                        dot,
                        supersedes: r.current_dots(),
                    },
                )
            }
            (Op::Assign { key, value }, Value::Custom(r)) => {
                r.strategy()
                    .value_type()
                    .admits(value)
                    .map_err(|e| format!("{key}: {e}"))?;
                let dot = self.next_dot(key, r.register().context());
                (
                    Value::Custom(r.assign_delta(dot, value.clone())),
                    Reply::Written {
                        dot,
                        supersedes: r.register().current_dots(),
                    },
                )
            }
            (Op::Add { key, element }, Value::OrSet(s)) => {
                let dot = self.next_dot(key, s.context());
                (
                    Value::OrSet(s.add_delta(dot, element.clone())),
                    Reply::Added {
                        dot,
                        replaces: s.dots_of(element),
                    },
                )
            }
            (Op::Remove { element, .. }, Value::OrSet(s)) => {
                let dots = s.dots_of(element);
                if dots.is_empty() {
                    return Err(format!("{element} is not in the set here"));
                }
                (
                    Value::OrSet(s.remove_delta(element)),
                    Reply::Removed { dots },
                )
            }
            (op, value) => {
                return Err(format!(
                    "{op:?} does not apply to a {}",
                    value.kind().name()
                ));
            }
        })
    }

    fn send_pending(&mut self, ctx: &mut Ctx<'_, Self>) {
        let now = ctx.now();
        let resend = self.settings.timing.retransmit_after;
        for &nb in &self.neighbours {
            let mut updates = Vec::new();
            for pending in self.outbox.values_mut() {
                if updates.len() >= self.settings.timing.batch_max {
                    break;
                }
                let Some(last) = pending.waiting.get_mut(&nb) else {
                    continue;
                };
                let due = match last {
                    None => true,
                    Some(t) => now.saturating_since(*t) >= resend,
                };
                if due {
                    *last = Some(now);
                    updates.push(pending.update.clone());
                }
            }
            if !updates.is_empty() {
                ctx.send(nb, Msg::Replicate { updates });
            }
        }
    }

    /// Queues `update` for every neighbour except `except` and the origin.
    fn enqueue(&mut self, update: Update, except: Option<NodeId>) {
        let waiting: BTreeMap<NodeId, Option<SimTime>> = self
            .forward_targets(update.origin, except)
            .into_iter()
            .map(|n| (n, None))
            .collect();
        if !waiting.is_empty() {
            self.outbox
                .insert((update.origin, update.seq), Pending { update, waiting });
        }
    }

    fn forward_targets(&self, origin: u32, except: Option<NodeId>) -> Vec<NodeId> {
        self.neighbours
            .iter()
            .copied()
            .filter(|&n| n.0 != origin && Some(n) != except)
            .collect()
    }

    fn on_replicate(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, updates: Vec<Update>) {
        let flaws = self.bugs.flaws();
        let mut acks = Vec::new();
        let mut applied = self.applied.clone();
        let mut hlc = self.hlc;
        let mut changed: BTreeMap<String, Value> = BTreeMap::new();
        let mut fresh: Vec<Update> = Vec::new();
        let mut rejected = Vec::new();
        let mut conflicts = Vec::new();
        for u in updates {
            acks.push((u.origin, u.seq));
            let id = Dot::new(u.origin, u.seq);
            if applied.contains(id) {
                continue;
            }
            let merged = match self.kind_of(&u.key) {
                Some(kind) if kind == u.delta.kind() => {
                    let current = changed
                        .get(&u.key)
                        .or_else(|| self.values.get(&u.key))
                        .cloned()
                        .unwrap_or_else(|| kind.bottom());
                    let merged = current
                        .merge_with(&u.delta, flaws)
                        .map_err(|e| e.to_string());
                    if let Ok(result) = &merged
                        && let Some(resolution) = conflict(&current, &u.delta, result)
                    {
                        let same_origin = held_origins(&current).contains(&from.0);
                        if same_origin {
                            ctx.sometimes("multi_leader.same_origin_conflict");
                        }
                        if !(self.bugs.same_origin_conflicts_ignored && same_origin) {
                            conflicts.push((u.key.clone(), (u.origin, u.seq), resolution));
                        }
                    }
                    merged
                }
                Some(kind) => Err(format!(
                    "a {} in the {} key space",
                    u.delta.kind().name(),
                    kind.name()
                )),
                None => Err("no such key space".to_string()),
            };
            match merged {
                Ok(value) => {
                    changed.insert(u.key.clone(), value);
                    hlc = hlc.receive(u.hlc, millis(ctx.now()));
                    applied = applied.with(id);
                    fresh.push(u);
                }
                Err(error) => rejected.push((u, error)),
            }
        }
        for (u, error) in rejected {
            ctx.observe(Observation::Rejected {
                origin: u.origin,
                seq: u.seq,
                key: u.key,
                error,
            });
        }
        if !fresh.is_empty() {
            let forwards: Vec<&Update> = fresh
                .iter()
                .filter(|u| !self.forward_targets(u.origin, Some(from)).is_empty())
                .collect();
            let mut conflict_seq = self.conflict_seq;
            let records: Vec<ConflictRecord> = conflicts
                .into_iter()
                .map(|(key, change, resolution)| {
                    conflict_seq += 1;
                    ConflictRecord {
                        id: conflict_seq,
                        key,
                        change,
                        at: hlc,
                        resolution,
                    }
                })
                .collect();
            let commit = Commit {
                hlc: Some(hlc),
                seq: None,
                applied: Some(&applied),
                values: changed.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                log: forwards,
                conflicts: records.iter().collect(),
                conflict_seq: (!records.is_empty()).then_some(conflict_seq),
            };
            let Some(store) = self.store.as_mut() else {
                return;
            };
            if let Err(e) = store.commit(&commit) {
                self.fail(ctx, e);
                return;
            }
            self.hlc = hlc;
            self.applied = applied;
            self.values.extend(changed);
            self.dirty = Some(ctx.now());
            self.conflict_seq = conflict_seq;
            for record in records {
                self.conflicts.insert(record.id, record.clone());
                ctx.observe(Observation::Conflict(record));
            }
            for u in fresh {
                ctx.observe(Observation::Applied {
                    origin: u.origin,
                    seq: u.seq,
                    key: u.key.clone(),
                    from: from.0,
                });
                self.enqueue(u, Some(from));
            }
        }
        self.refresh_own_row(ctx.node_count() as u32);
        ctx.send(
            from,
            Msg::Ack {
                ids: acks,
                seen: self.seen.clone(),
            },
        );
    }

    fn on_ack(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: NodeId,
        ids: Vec<(u32, u64)>,
        seen: Matrix,
    ) {
        join_matrix(&mut self.seen, &seen);
        self.neighbour_seen
            .entry(from)
            .or_insert_with(|| (Matrix::new(), None))
            .0 = seen;
        for id in ids {
            let Some(pending) = self.outbox.get_mut(&id) else {
                continue;
            };
            pending.waiting.remove(&from);
            if pending.waiting.is_empty() {
                self.outbox.remove(&id);
                if let Some(store) = self.store.as_mut()
                    && let Err(e) = store.forget(id.0, id.1)
                {
                    self.fail(ctx, e);
                    return;
                }
            }
        }
    }
}

impl Process for Node {
    type Msg = Msg;
    type Timer = Timer;
    type Op = Op;
    type Reply = Reply;
    type Obs = Observation;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.neighbours = self
            .settings
            .topology
            .neighbours(self.id.0, ctx.node_count() as u32);
        let recovered = Store::open(self.settings.engine.as_ref(), ctx.disk(), DIR)
            .and_then(|store| store.recover().map(|r| (store, r)));
        match recovered {
            Ok((store, r)) => {
                self.store = Some(store);
                self.hlc = r.hlc;
                self.seq = r.seq;
                self.applied = r.applied;
                self.values = r.values;
                self.conflict_seq = r.conflict_seq;
                for update in r.log {
                    self.enqueue(update, None);
                }
                if !r.conflicts.is_empty() {
                    ctx.observe(Observation::RecoveredConflicts {
                        records: r.conflicts.clone(),
                    });
                }
                self.conflicts = r.conflicts.into_iter().map(|c| (c.id, c)).collect();
                self.refresh_own_row(ctx.node_count() as u32);
            }
            Err(e) => self.fail(ctx, e),
        }
        self.dirty = Some(ctx.now());
        ctx.set_timer(self.settings.timing.replicate_interval, Timer::Replicate);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        if self.store.is_none() {
            return;
        }
        match msg {
            Msg::Replicate { updates } => self.on_replicate(ctx, from, updates),
            Msg::Ack { ids, seen } => self.on_ack(ctx, from, ids, seen),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _id: TimerId, timer: Timer) {
        match timer {
            Timer::Replicate => {
                if self.store.is_some() {
                    self.send_pending(ctx);
                    self.collect_garbage(ctx);
                    self.gossip_stability(ctx);
                }
                if let Some(since) = self.dirty
                    && ctx.now().saturating_since(since) >= self.settings.timing.settle
                {
                    self.dirty = None;
                    ctx.observe(Observation::Snapshot {
                        values: self.values.clone(),
                    });
                    ctx.observe(self.metadata());
                }
                ctx.set_timer(self.settings.timing.replicate_interval, Timer::Replicate);
            }
        }
    }

    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, request: Op) {
        if self.store.is_none() {
            ctx.reply_fail(
                op,
                "the node's storage failed; it serves nothing until it restarts",
            );
            return;
        }
        let key = request.key().to_string();
        let Some(kind) = self.kind_of(&key) else {
            ctx.reply_fail(
                op,
                format!(
                    "{key} is in no key space ({})",
                    self.settings.spaces.names().join(", ")
                ),
            );
            return;
        };
        if !request.applies_to(kind) {
            ctx.reply_fail(
                op,
                format!("{key} holds a {}; {request:?} does not apply", kind.name()),
            );
            return;
        }
        let current = self
            .values
            .get(&key)
            .cloned()
            .unwrap_or_else(|| kind.bottom());
        let hlc = self.hlc.tick(millis(ctx.now()));
        let (delta, reply) = match self.delta(ctx, &request, &current, hlc) {
            Ok(d) => d,
            Err(reason) => {
                ctx.reply_fail(op, reason);
                return;
            }
        };
        let value = match current.merge_with(&delta, self.bugs.flaws()) {
            Ok(v) => v,
            Err(e) => {
                ctx.reply_fail(op, e.to_string());
                return;
            }
        };
        let seq = self.seq + 1;
        let update = Update {
            origin: self.id.0,
            seq,
            key: key.clone(),
            hlc,
            delta: match self.settings.shipping {
                Shipping::Delta => delta.clone(),
                Shipping::Full => value.clone(),
            },
        };
        let applied = self.applied.with(Dot::new(self.id.0, seq));
        let commit = Commit {
            hlc: Some(hlc),
            seq: Some(seq),
            applied: Some(&applied),
            values: vec![(key.as_str(), &value)],
            log: if self.neighbours.is_empty() {
                Vec::new()
            } else {
                vec![&update]
            },
            ..Commit::default()
        };
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if let Err(e) = store.commit(&commit) {
            self.fail(ctx, e);
            ctx.reply_info(op, "storage failed during the write");
            return;
        }
        self.hlc = hlc;
        self.seq = seq;
        self.applied = applied;
        if let Reply::Written { dot, .. } | Reply::Added { dot, .. } = &reply {
            self.dot_cache.insert(key.clone(), dot.counter);
        }
        ctx.observe(Observation::LocalWrite {
            key: key.clone(),
            seq,
            delta_bytes: encoded_len(&delta),
            state_bytes: encoded_len(&value),
        });
        self.values.insert(key, value);
        self.dirty = Some(ctx.now());
        self.enqueue(update, None);
        ctx.reply_ok(op, reply);
    }
}

/// The origins of the writes `value` holds (LWW: its writer; custom merge: every
/// concurrent value's).
fn held_origins(value: &Value) -> BTreeSet<u32> {
    match value {
        Value::Lww(r) => r.stamp().map(|s| s.replica).into_iter().collect(),
        Value::Custom(r) => r.register().entries().keys().map(|d| d.replica).collect(),
        _ => BTreeSet::new(),
    }
}

/// The conflict, if joining `incoming` into `held` (giving `result`) is one: for LWW, two
/// different writes met (whichever origin each came from); for a custom merge, the
/// result holds two or more concurrent values and is not what was held (a write arrived
/// that the held values had not seen, and the values were merged).
fn conflict(held: &Value, incoming: &Value, result: &Value) -> Option<Resolution> {
    match (held, incoming, result) {
        (Value::Lww(h), Value::Lww(i), Value::Lww(r)) => {
            let (a, b, kept) = (h.stamp()?, i.stamp()?, r.stamp()?);
            if a == b {
                return None;
            }
            let (av, bv) = (h.value()?.to_string(), i.value()?.to_string());
            let (kept, discarded) = if kept == a {
                ((a, av), (b, bv))
            } else {
                ((b, bv), (a, av))
            };
            Some(Resolution::Kept { kept, discarded })
        }
        (Value::Custom(h), Value::Custom(i), Value::Custom(r)) => {
            let entries = |m: &crdt::MergedRegister| -> Vec<(Dot, String)> {
                m.register()
                    .entries()
                    .iter()
                    .map(|(d, v)| (*d, v.clone()))
                    .collect()
            };
            let result = entries(r);
            if result.len() < 2 || result == entries(h) {
                return None;
            }
            Some(Resolution::Merged {
                held: entries(h),
                incoming: entries(i),
                result,
                resolved: r.resolved()?,
            })
        }
        _ => None,
    }
}

/// Multi-leader replication's coverage points (`docs/coverage.md`).
pub const COVERAGE: &[sim_core::coverage::Point] = &[
    sim_core::coverage::Point {
        name: "multi_leader.same_origin_conflict",
        description: "a replicated write met a held write that originated at the node delivering it (the conflict the reference never recorded)",
    },
    sim_core::coverage::Point {
        name: "multi_leader.conflict_records_collected",
        description: "conflict records were collected once causally stable and past their retention",
    },
    sim_core::coverage::Point {
        name: "multi_leader.stable_log_entries_collected",
        description: "outgoing log entries were dropped unacknowledged because every node had applied them (through another path, or with the acknowledgement lost)",
    },
    sim_core::coverage::Point {
        name: "multi_leader.fail_stop",
        description: "a node stopped serving on a storage error",
    },
];
