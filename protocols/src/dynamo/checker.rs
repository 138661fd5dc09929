//! Checkers of Dynamo-style replication, from observations and client histories only.
//!
//! The ground truth of causality comes from the clients, not from the protocol's
//! version vectors: every write names the versions its client had read (`read` in the
//! request), and a coordinator reports which version (dot) it created for which write.
//! A write's *causal past* is what it read, and their pasts, transitively.
//!
//! - [`ConvergenceChecker`] — *convergence*: after the quiet phase (hint delivery,
//!   anti-entropy) every replica of every key holds the same versions, and every replica
//!   of a range reports the same Merkle root.
//! - [`CausalSiblingsChecker`] — *causal sibling correctness*: the final siblings of a
//!   key are exactly the maximal writes of its causal history. An acknowledged write
//!   that is neither final nor in the past of a final version (or of a collected
//!   tombstone) is a *lost update*; a final version in the past of another effective
//!   write is *false concurrency*.
//! - [`NoLostWriteChecker`] — *no lost acknowledged write* (set union): every element an
//!   acknowledged set write added is in the final converged read.
//! - [`DeletesChecker`] — *deletes stay deleted*: no value in the causal past of an
//!   acknowledged delete is among the final versions.
//! - [`HintsChecker`] — *every hint delivered then removed*: each stored hint is
//!   delivered to its owner and then removed, or expires after its TTL; none is removed
//!   undelivered and none is simply forgotten.
//! - [`StrictReadsChecker`] — in strict-quorum mode with R + W > N, *read-your-writes
//!   across clients*: a read that starts after a write completed returns that write or
//!   a causal successor.
//! - [`MembershipChecker`] — with SWIM membership, *the views agree with reality*: at
//!   the end every live node's member sees every other live node alive at an
//!   incarnation of its current process (a suspicion raised in the last ten protocol
//!   periods, whose refutation may be in flight, is let pass).

use std::collections::{BTreeMap, BTreeSet};

use sim_core::{Checker, Completion, NodeId, RunOutput, SimTime, Violation};

use super::version::Dot;
use super::{Node, Observation, Op, Reply, VersionSummary};

pub const CONVERGENCE: &str = "dynamo_convergence";
pub const CAUSAL_SIBLINGS: &str = "dynamo_causal_siblings";
pub const NO_LOST_WRITE: &str = "dynamo_no_lost_write";
pub const DELETES: &str = "dynamo_deletes_stay_deleted";
pub const HINTS: &str = "dynamo_hints";
pub const STRICT_READS: &str = "dynamo_strict_quorum_reads";
pub const MEMBERSHIP: &str = "dynamo_membership";

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
        kind: kind.into(),
        property,
        message,
        time,
        nodes,
        cites: Vec::new(),
    }
}

/// A node's last snapshot: key → (range, versions); range → (replicas, root).
pub type Snapshot<'a> = (
    &'a BTreeMap<String, (u32, Vec<VersionSummary>)>,
    &'a BTreeMap<u32, (Vec<u32>, u64)>,
);

/// Each live node's last snapshot of its final incarnation, if it reported one after its
/// last change; the nodes that did not settle are the second list.
pub fn final_states(
    run: &RunOutput<Node>,
) -> (BTreeMap<NodeId, Snapshot<'_>>, Vec<(NodeId, &'static str)>) {
    let mut states = BTreeMap::new();
    let mut unsettled = Vec::new();
    for node in run.live_nodes() {
        let incarnation = run.final_incarnation[node.index()];
        let mut last = None;
        let mut changed_after = false;
        for o in run
            .observations
            .iter()
            .filter(|o| o.node == node && o.incarnation == incarnation)
        {
            match &o.obs {
                Observation::Snapshot { keys, roots, .. } => {
                    last = Some((keys, roots));
                    changed_after = false;
                }
                Observation::Stored { .. } => changed_after = true,
                _ => {}
            }
        }
        match last {
            Some(s) if !changed_after => {
                states.insert(node, s);
            }
            Some(_) => unsettled.push((node, "changed after its last snapshot")),
            None => unsettled.push((node, "reported no snapshot")),
        }
    }
    (states, unsettled)
}

/// The time of the last change of any replica's data.
pub fn last_change(run: &RunOutput<Node>) -> Option<SimTime> {
    run.observations
        .iter()
        .filter(|o| matches!(o.obs, Observation::Stored { .. }))
        .map(|o| o.time)
        .max()
}

/// A write as the checkers know it.
#[derive(Debug, Clone)]
pub struct WriteInfo {
    pub key: String,
    pub id: String,
    pub read: Vec<Dot>,
    /// `None`: a delete.
    pub value: Option<Vec<String>>,
}

/// The run's writes, acknowledgements and causal order, rebuilt from the history and the
/// coordinators' reports.
pub struct Causality {
    pub writes: BTreeMap<Dot, WriteInfo>,
    /// Acknowledged writes: dot → completion time.
    pub acked: BTreeMap<Dot, SimTime>,
    past: BTreeMap<Dot, BTreeSet<Dot>>,
}

impl Causality {
    pub fn new(run: &RunOutput<Node>) -> Causality {
        let mut requests: BTreeMap<&str, &Op> = BTreeMap::new();
        let mut acked = BTreeMap::new();
        for op in &run.history.operations {
            match &op.request {
                Op::Put { id, .. } | Op::Delete { id, .. } => {
                    requests.insert(id.as_str(), &op.request);
                    if let Some((at, Completion::Ok(Reply::Written { dot }))) = &op.completion {
                        acked.insert(*dot, *at);
                    }
                }
                Op::Get { .. } => {}
            }
        }
        let mut writes = BTreeMap::new();
        for o in &run.observations {
            if let Observation::Coordinated { key, id, dot } = &o.obs {
                let (read, value) = match requests.get(id.as_str()) {
                    Some(Op::Put { read, value, .. }) => (read.clone(), Some(value.clone())),
                    Some(Op::Delete { read, .. }) => (read.clone(), None),
                    _ => (Vec::new(), Some(Vec::new())),
                };
                writes.insert(
                    *dot,
                    WriteInfo {
                        key: key.clone(),
                        id: id.clone(),
                        read,
                        value,
                    },
                );
            }
        }
        let mut c = Causality {
            writes,
            acked,
            past: BTreeMap::new(),
        };
        let dots: Vec<Dot> = c.writes.keys().copied().collect();
        for d in dots {
            c.compute_past(d);
        }
        c
    }

    fn compute_past(&mut self, dot: Dot) {
        if self.past.contains_key(&dot) {
            return;
        }
        // Iterative depth-first closure (no recursion: histories can be long).
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Dot> = self
            .writes
            .get(&dot)
            .map(|w| w.read.clone())
            .unwrap_or_default();
        while let Some(d) = stack.pop() {
            if !seen.insert(d) {
                continue;
            }
            if let Some(p) = self.past.get(&d) {
                seen.extend(p.iter().copied());
                continue;
            }
            if let Some(w) = self.writes.get(&d) {
                stack.extend(w.read.iter().copied());
            }
        }
        self.past.insert(dot, seen);
    }

    /// The strict causal past of `dot`.
    pub fn past(&self, dot: Dot) -> &BTreeSet<Dot> {
        static EMPTY: BTreeSet<Dot> = BTreeSet::new();
        self.past.get(&dot).unwrap_or(&EMPTY)
    }

    /// `later` is `earlier` or a causal successor of it.
    pub fn covers(&self, later: Dot, earlier: Dot) -> bool {
        later == earlier || self.past(later).contains(&earlier)
    }
}

/// Each key's final versions, as the union over the replicas' final snapshots.
fn final_versions(states: &BTreeMap<NodeId, Snapshot<'_>>) -> BTreeMap<String, BTreeSet<Dot>> {
    let mut out: BTreeMap<String, BTreeSet<Dot>> = BTreeMap::new();
    for (keys, _) in states.values() {
        for (key, (_, versions)) in keys.iter() {
            out.entry(key.clone())
                .or_default()
                .extend(versions.iter().map(|v| v.0));
        }
    }
    out
}

/// Tombstone versions collected anywhere, per key.
fn collected(run: &RunOutput<Node>) -> BTreeMap<String, BTreeSet<Dot>> {
    let mut out: BTreeMap<String, BTreeSet<Dot>> = BTreeMap::new();
    for o in &run.observations {
        if let Observation::Collected { key, dots } = &o.obs {
            out.entry(key.clone())
                .or_default()
                .extend(dots.iter().copied());
        }
    }
    out
}

fn unsettled_violations(
    checker: &'static str,
    property: &'static str,
    run: &RunOutput<Node>,
) -> Vec<Violation> {
    final_states(run)
        .1
        .into_iter()
        .map(|(node, why)| {
            violation(
                checker,
                "not_settled",
                property,
                format!("{node} {why} by the end of the quiet phase"),
                None,
                vec![node],
            )
        })
        .collect()
}

/// Convergence of replicas and Merkle roots.
pub struct ConvergenceChecker;

const CONVERGED: &str = "convergence (after the quiet phase every replica of a key holds the same versions and every replica of a range the same Merkle root)";

impl Checker<Node> for ConvergenceChecker {
    fn name(&self) -> &'static str {
        CONVERGENCE
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = unsettled_violations(CONVERGENCE, CONVERGED, run);
        let (states, _) = final_states(run);
        // Range → replica set, from any report.
        let mut ranges: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (_, roots) in states.values() {
            for (range, (set, _)) in roots.iter() {
                ranges.insert(*range, set.clone());
            }
        }
        let mut key_range: BTreeMap<&str, u32> = BTreeMap::new();
        for (keys, _) in states.values() {
            for (key, (range, _)) in keys.iter() {
                key_range.insert(key, *range);
            }
        }
        for (key, range) in key_range {
            let Some(set) = ranges.get(&range) else {
                continue;
            };
            let mut seen: BTreeMap<Vec<Dot>, Vec<u32>> = BTreeMap::new();
            for &r in set {
                let Some((keys, _)) = states.get(&NodeId(r)) else {
                    continue;
                };
                let dots: Vec<Dot> = keys
                    .get(key)
                    .map(|(_, v)| v.iter().map(|x| x.0).collect())
                    .unwrap_or_default();
                seen.entry(dots).or_default().push(r);
            }
            if seen.len() > 1 {
                let detail: Vec<String> = seen
                    .iter()
                    .map(|(dots, nodes)| {
                        let d: Vec<String> = dots.iter().map(|d| d.to_string()).collect();
                        format!("nodes {nodes:?} hold [{}]", d.join(", "))
                    })
                    .collect();
                out.push(violation(
                    CONVERGENCE,
                    "replicas_differ",
                    CONVERGED,
                    format!("key {key}: {}", detail.join("; ")),
                    None,
                    set.iter().map(|&n| NodeId(n)).collect(),
                ));
            }
        }
        for (range, set) in &ranges {
            let roots: BTreeSet<u64> = set
                .iter()
                .filter_map(|r| states.get(&NodeId(*r)))
                .filter_map(|(_, roots)| roots.get(range).map(|x| x.1))
                .collect();
            if roots.len() > 1 {
                out.push(violation(
                    CONVERGENCE,
                    "merkle_roots_differ",
                    CONVERGED,
                    format!(
                        "range {range} (replicas {set:?}) has {} different Merkle roots",
                        roots.len()
                    ),
                    None,
                    set.iter().map(|&n| NodeId(n)).collect(),
                ));
            }
        }
        out
    }
}

/// The final siblings are exactly the maximal writes of the causal history.
pub struct CausalSiblingsChecker;

const SIBLINGS: &str = "causal sibling correctness (the final siblings are exactly the maximal writes of the causal history)";

impl Checker<Node> for CausalSiblingsChecker {
    fn name(&self) -> &'static str {
        CAUSAL_SIBLINGS
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = unsettled_violations(CAUSAL_SIBLINGS, SIBLINGS, run);
        let (states, _) = final_states(run);
        let finals = final_versions(&states);
        let collected = collected(run);
        let causality = Causality::new(run);
        let mut keys: BTreeSet<&str> = causality.writes.values().map(|w| w.key.as_str()).collect();
        keys.extend(finals.keys().map(|k| k.as_str()));
        for key in keys {
            let empty = BTreeSet::new();
            let f = finals.get(key).unwrap_or(&empty);
            let gone = collected.get(key).unwrap_or(&empty);
            let acked: Vec<Dot> = causality
                .acked
                .keys()
                .copied()
                .filter(|d| causality.writes.get(d).is_some_and(|w| w.key == key))
                .collect();
            // Effective writes: acknowledged, final, or collected tombstones.
            let effective: BTreeSet<Dot> = acked
                .iter()
                .chain(f.iter())
                .chain(gone.iter())
                .copied()
                .collect();
            for &v in f {
                if let Some(&by) = effective.iter().find(|&&e| causality.past(e).contains(&v)) {
                    out.push(violation(
                        CAUSAL_SIBLINGS,
                        "false_concurrency",
                        SIBLINGS,
                        format!(
                            "key {key}: final version {v} ({}) is in the causal past of write {by} ({})",
                            causality.writes.get(&v).map_or("?", |w| w.id.as_str()),
                            causality.writes.get(&by).map_or("?", |w| w.id.as_str()),
                        ),
                        None,
                        Vec::new(),
                    ));
                }
            }
            // Lost: acknowledged, and neither final nor in the past of a final or
            // collected version. Only the latest lost writes are reported (a lost write's
            // own past is covered by it in the history, not by the replicas).
            let lost: Vec<Dot> = acked
                .iter()
                .copied()
                .filter(|&a| !f.iter().chain(gone.iter()).any(|&x| causality.covers(x, a)))
                .collect();
            for &a in &lost {
                if lost
                    .iter()
                    .any(|&b| b != a && causality.past(b).contains(&a))
                {
                    continue;
                }
                out.push(violation(
                    CAUSAL_SIBLINGS,
                    "lost_update",
                    SIBLINGS,
                    format!(
                        "key {key}: acknowledged write {a} ({}) is neither a final version nor in the past of one",
                        causality.writes.get(&a).map_or("?", |w| w.id.as_str())
                    ),
                    causality.acked.get(&a).copied(),
                    Vec::new(),
                ));
            }
        }
        out
    }
}

/// Every acknowledged set element is in the final converged read.
pub struct NoLostWriteChecker;

const NO_LOST: &str =
    "no lost acknowledged write (every acknowledged set element is in the final converged read)";

impl Checker<Node> for NoLostWriteChecker {
    fn name(&self) -> &'static str {
        NO_LOST_WRITE
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = unsettled_violations(NO_LOST_WRITE, NO_LOST, run);
        let (states, _) = final_states(run);
        let finals = final_versions(&states);
        let causality = Causality::new(run);
        for (&dot, &at) in &causality.acked {
            let Some(w) = causality.writes.get(&dot) else {
                continue;
            };
            if !w.key.starts_with('s') {
                continue;
            }
            let read: BTreeSet<&String> = finals
                .get(&w.key)
                .into_iter()
                .flatten()
                .filter_map(|d| causality.writes.get(d))
                .filter_map(|x| x.value.as_ref())
                .flatten()
                .collect();
            if !read.contains(&w.id) {
                out.push(violation(
                    NO_LOST_WRITE,
                    "lost_element",
                    NO_LOST,
                    format!(
                        "set {}: acknowledged element {} is missing from the final read",
                        w.key, w.id
                    ),
                    Some(at),
                    Vec::new(),
                ));
            }
        }
        out
    }
}

/// No dominated value returns after an acknowledged delete.
pub struct DeletesChecker;

const DELETED: &str = "deletes stay deleted (no value an acknowledged delete superseded returns)";

impl Checker<Node> for DeletesChecker {
    fn name(&self) -> &'static str {
        DELETES
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = unsettled_violations(DELETES, DELETED, run);
        let (states, _) = final_states(run);
        let finals = final_versions(&states);
        let causality = Causality::new(run);
        for (&d, &at) in &causality.acked {
            let Some(w) = causality.writes.get(&d) else {
                continue;
            };
            if w.value.is_some() {
                continue;
            }
            for &f in finals.get(&w.key).into_iter().flatten() {
                let live = causality.writes.get(&f).is_some_and(|x| x.value.is_some());
                if live && causality.past(d).contains(&f) {
                    out.push(violation(
                        DELETES,
                        "resurrected",
                        DELETED,
                        format!(
                            "key {}: value {f} ({}) deleted by {d} ({}, acknowledged) is back in the final versions",
                            w.key,
                            causality.writes.get(&f).map_or("?", |x| x.id.as_str()),
                            w.id
                        ),
                        Some(at),
                        Vec::new(),
                    ));
                }
            }
        }
        out
    }
}

/// Every hint is delivered then removed (or expires).
pub struct HintsChecker;

const HINTED: &str =
    "hinted handoff (every hint delivered to its owner, then removed, or expired after its TTL)";

impl Checker<Node> for HintsChecker {
    fn name(&self) -> &'static str {
        HINTS
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = Vec::new();
        #[derive(Default)]
        struct State {
            stored: Option<SimTime>,
            expires_us: u64,
            delivered: bool,
            removed: bool,
            expired: bool,
        }
        let mut hints: BTreeMap<(u32, u64), State> = BTreeMap::new();
        for o in &run.observations {
            match &o.obs {
                Observation::HintStored {
                    hint, expires_us, ..
                } => {
                    let s = hints.entry(*hint).or_default();
                    s.stored = Some(o.time);
                    s.expires_us = *expires_us;
                }
                Observation::Recovered { hints: kept } => {
                    // A crash can cut a handler between a hint's removal reaching the
                    // disk and its report: a delivered hint missing after the restart
                    // was removed, and one past its TTL may have expired. One neither
                    // delivered nor due is lost, reported at once.
                    let holder = o.node.0;
                    for (hint, s) in hints.range_mut((holder, 0)..=(holder, u64::MAX)) {
                        if s.stored.is_none() || s.removed || s.expired || kept.contains(&hint.1) {
                            continue;
                        }
                        if s.delivered {
                            s.removed = true;
                        } else if o.time.as_micros() >= s.expires_us {
                            s.expired = true;
                        } else {
                            out.push(violation(
                                HINTS,
                                "hint_lost",
                                HINTED,
                                format!(
                                    "hint {hint:?} stored at {} is not on its holder's disk when it restarts, undelivered",
                                    s.stored.map_or_else(String::new, |t| t.to_string())
                                ),
                                Some(o.time),
                                vec![NodeId(hint.0)],
                            ));
                            // Reported once.
                            s.expired = true;
                        }
                    }
                }
                Observation::HintDelivered { hint } => {
                    hints.entry(*hint).or_default().delivered = true
                }
                Observation::HintRemoved { hint } => {
                    let s = hints.entry(*hint).or_default();
                    if !s.delivered {
                        out.push(violation(
                            HINTS,
                            "removed_undelivered",
                            HINTED,
                            format!("hint {hint:?} was removed before its owner acknowledged it"),
                            Some(o.time),
                            vec![NodeId(hint.0)],
                        ));
                    }
                    s.removed = true;
                }
                Observation::HintExpired { hint } => hints.entry(*hint).or_default().expired = true,
                _ => {}
            }
        }
        for (hint, s) in hints {
            if s.stored.is_some() && !s.expired && !(s.delivered && s.removed) {
                out.push(violation(
                    HINTS,
                    "hint_lost",
                    HINTED,
                    format!(
                        "hint {hint:?} stored at {} was never delivered and removed, nor expired",
                        s.stored.map_or_else(String::new, |t| t.to_string())
                    ),
                    s.stored,
                    vec![NodeId(hint.0)],
                ));
            }
        }
        out
    }
}

/// With a strict quorum and R + W > N, reads see every write completed before they began.
pub struct StrictReadsChecker {
    pub enabled: bool,
}

const STRICT: &str = "strict-quorum read-your-writes (with R + W > N a read that starts after a write completes sees it or a causal successor)";

impl Checker<Node> for StrictReadsChecker {
    fn name(&self) -> &'static str {
        STRICT_READS
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = Vec::new();
        if !self.enabled {
            return out;
        }
        let causality = Causality::new(run);
        for op in &run.history.operations {
            let (Op::Get { key }, Some((_, Completion::Ok(Reply::Read { siblings, .. })))) =
                (&op.request, &op.completion)
            else {
                continue;
            };
            for (&a, &done) in &causality.acked {
                if done >= op.invoked_at {
                    continue;
                }
                if causality.writes.get(&a).is_none_or(|w| &w.key != key) {
                    continue;
                }
                if !siblings.iter().any(|s| causality.covers(s.dot, a)) {
                    out.push(violation(
                        STRICT_READS,
                        "stale_read",
                        STRICT,
                        format!(
                            "read {} of {key} (invoked at {}) misses write {a} ({}) acknowledged at {done}",
                            op.id.0,
                            op.invoked_at,
                            causality.writes.get(&a).map_or("?", |w| w.id.as_str())
                        ),
                        Some(op.invoked_at),
                        vec![op.node],
                    ));
                    break;
                }
            }
        }
        out
    }
}

/// With SWIM membership, the views agree with reality after the quiet phase.
pub struct MembershipChecker {
    /// `None`: static membership, nothing to check.
    pub swim: Option<std::sync::Arc<crate::gossip::Config>>,
}

const MEMBERSHIP_AGREES: &str = "membership agrees with reality (after the quiet phase every live node's SWIM member sees every other live node alive at an incarnation of its current process)";

impl Checker<Node> for MembershipChecker {
    fn name(&self) -> &'static str {
        MEMBERSHIP
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        use crate::gossip::{Observation as G, State};
        let Some(config) = &self.swim else {
            return Vec::new();
        };
        if run.quiet_from >= run.end_time {
            return Vec::new();
        }
        // A suspicion raised this close to the end may have its refutation in flight.
        let recent = SimTime(run.end_time.0.saturating_sub(config.probe_interval.0 * 10));
        let mut first_announced: BTreeMap<(NodeId, u32), u64> = BTreeMap::new();
        let mut failed: BTreeSet<(NodeId, u32)> = BTreeSet::new();
        // (observer, its process, member) → last (state, incarnation, time).
        let mut views: BTreeMap<(NodeId, u32, NodeId), (State, u64, SimTime)> = BTreeMap::new();
        for o in &run.observations {
            match &o.obs {
                Observation::Membership(G::Incarnation { incarnation, .. }) => {
                    first_announced
                        .entry((o.node, o.incarnation))
                        .or_insert(*incarnation);
                }
                Observation::Membership(G::View {
                    member,
                    state,
                    incarnation,
                    ..
                }) => {
                    views.insert(
                        (o.node, o.incarnation, *member),
                        (*state, *incarnation, o.time),
                    );
                }
                Observation::Membership(G::Stopped { .. }) | Observation::StorageFailed { .. } => {
                    failed.insert((o.node, o.incarnation));
                }
                _ => {}
            }
        }
        let current: Vec<(NodeId, u32)> = run
            .live_nodes()
            .map(|n| (n, run.final_incarnation[n.index()]))
            .filter(|c| !failed.contains(c))
            .collect();
        let mut wrong = Vec::new();
        for &(observer, q) in &current {
            for &(member, p) in &current {
                if member == observer {
                    continue;
                }
                let Some(&since) = first_announced.get(&(member, p)) else {
                    continue;
                };
                let ok = match views.get(&(observer, q, member)) {
                    Some(&(State::Alive, i, _)) => i >= since,
                    Some(&(State::Suspect, i, at)) => i >= since && at >= recent,
                    _ => false,
                };
                if !ok {
                    wrong.push(match views.get(&(observer, q, member)) {
                        Some((s, i, at)) => format!(
                            "{observer} sees {member} {s:?}@{i} since {at} (expected alive at {since} or later)"
                        ),
                        None => format!("{observer} does not know {member}"),
                    });
                }
            }
        }
        if wrong.is_empty() {
            return Vec::new();
        }
        let count = wrong.len();
        wrong.truncate(6);
        vec![violation(
            MEMBERSHIP,
            "membership_diverged",
            MEMBERSHIP_AGREES,
            format!(
                "at the end: {}{}",
                wrong.join(", "),
                if count > 6 {
                    format!(" ({count} wrong views in all)")
                } else {
                    String::new()
                }
            ),
            Some(run.end_time),
            Vec::new(),
        )]
    }
}
