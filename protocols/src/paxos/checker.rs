//! Multi-Paxos's safety properties, judged from the nodes' observations over the whole
//! run, across crashes:
//! - **Agreement** (per slot): no two nodes learn different values for one slot.
//! - **Validity**: every learned value was proposed in that slot (a leader's no-op
//!   included).
//! - **Total order**: every incarnation applies slots in order without gaps (a snapshot
//!   moves it forward, never back), so with agreement every node's applied sequence is
//!   a prefix of one sequence; and no client operation takes effect in two slots.
//! - **Acceptor monotonicity**: a node's highest ballot — promised, or accepted at,
//!   since accepting at a ballot promises it (`maxBal` in Lamport's specification) —
//!   never goes down, across restarts: it promises and accepts at no lower ballot.
//! - **Ballot uniqueness**: no node starts phase 1 twice with the same ballot, across
//!   restarts; and a ballot's leader proposes one value per slot (Phase 2a), which the
//!   followers' learning rule relies on.
//!
//! Client-visible behaviour is judged separately by the linearizability checker.

use std::collections::BTreeMap;

use sim_core::{Checker, NodeId, OpId, RunOutput, SimTime, Violation};

use super::{Ballot, Node, Observation, Slot};

pub const NAME: &str = "paxos_invariants";

#[derive(Debug, Default)]
pub struct InvariantChecker;

fn violation(
    kind: &str,
    property: &'static str,
    message: String,
    time: SimTime,
    nodes: Vec<NodeId>,
) -> Violation {
    Violation {
        checker: NAME,
        kind: kind.to_string(),
        property,
        message,
        time: Some(time),
        nodes,
        cites: Vec::new(),
    }
}

impl Checker<Node> for InvariantChecker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut violations = Vec::new();
        // slot -> every digest proposed there.
        let mut proposed: BTreeMap<Slot, Vec<u64>> = BTreeMap::new();
        // slot -> (digest, node, time) of the first application seen.
        let mut learned: BTreeMap<Slot, (u64, NodeId, SimTime)> = BTreeMap::new();
        // (node, incarnation) -> last slot applied.
        let mut progress: BTreeMap<(NodeId, u32), Slot> = BTreeMap::new();
        // operation -> (slot, node) where it took effect.
        let mut effect: BTreeMap<OpId, (Slot, NodeId)> = BTreeMap::new();
        // node -> (highest ballot promised, incarnation, time).
        let mut promised: BTreeMap<NodeId, (Ballot, u32, SimTime)> = BTreeMap::new();
        // (slot, ballot) -> (digest, time) of the value proposed there.
        let mut proposals: BTreeMap<(Slot, Ballot), (u64, SimTime)> = BTreeMap::new();
        // (node, ballot) -> (incarnation, time) of the phase 1 that used it.
        let mut ballots: BTreeMap<(NodeId, Ballot), (u32, SimTime)> = BTreeMap::new();
        for o in &run.observations {
            match &o.obs {
                Observation::Proposed {
                    slot,
                    ballot,
                    digest,
                } => {
                    proposed.entry(*slot).or_default().push(*digest);
                    match proposals.get(&(*slot, *ballot)) {
                        Some(&(d, at)) if d != *digest => violations.push(violation(
                            "two_proposals_in_a_ballot",
                            "ballot uniqueness",
                            format!(
                                "{} proposed in slot {slot} at ballot {ballot} a value (digest {digest:016x}) \
                                 other than the one proposed there at {at} (digest {d:016x})",
                                o.node
                            ),
                            o.time,
                            vec![o.node],
                        )),
                        Some(_) => {}
                        None => {
                            proposals.insert((*slot, *ballot), (*digest, o.time));
                        }
                    }
                }
                Observation::Applied {
                    slot,
                    digest,
                    effective,
                } => {
                    let key = (o.node, o.incarnation);
                    if let Some(&last) = progress.get(&key)
                        && *slot != last + 1
                    {
                        violations.push(violation(
                            "total_order",
                            "total order",
                            format!(
                                "{} (incarnation {}) applied slot {slot} after slot {last}",
                                o.node, o.incarnation
                            ),
                            o.time,
                            vec![o.node],
                        ));
                    }
                    progress.insert(key, *slot);
                    if !proposed.get(slot).is_some_and(|d| d.contains(digest)) {
                        violations.push(violation(
                            "validity",
                            "validity",
                            format!(
                                "{} applied in slot {slot} a value (digest {digest:016x}) no leader proposed there",
                                o.node
                            ),
                            o.time,
                            vec![o.node],
                        ));
                    }
                    match learned.get(slot) {
                        None => {
                            learned.insert(*slot, (*digest, o.node, o.time));
                        }
                        Some(&(d, node, at)) if d != *digest => {
                            violations.push(violation(
                                "agreement",
                                "agreement",
                                format!(
                                    "{node} (at {at}) and {} learned different values for slot {slot} \
                                     (digests {d:016x} and {digest:016x})",
                                    o.node
                                ),
                                o.time,
                                vec![node, o.node],
                            ));
                        }
                        Some(_) => {}
                    }
                    for op in effective {
                        match effect.get(op) {
                            None => {
                                effect.insert(*op, (*slot, o.node));
                            }
                            Some(&(s, node)) if s != *slot => {
                                violations.push(violation(
                                    "duplicate_execution",
                                    "total order",
                                    format!(
                                        "{op} took effect in slot {s} (at {node}) and again in slot {slot} (at {})",
                                        o.node
                                    ),
                                    o.time,
                                    vec![node, o.node],
                                ));
                            }
                            Some(_) => {}
                        }
                    }
                }
                Observation::SnapshotInstalled { slot } => {
                    let key = (o.node, o.incarnation);
                    if let Some(&last) = progress.get(&key)
                        && *slot <= last
                    {
                        violations.push(violation(
                            "total_order",
                            "total order",
                            format!(
                                "{} (incarnation {}) installed a snapshot at slot {slot} after applying {last}",
                                o.node, o.incarnation
                            ),
                            o.time,
                            vec![o.node],
                        ));
                    }
                    progress.insert(key, *slot);
                }
                Observation::Promised { ballot } | Observation::Accepted { ballot, .. } => {
                    let act = match &o.obs {
                        Observation::Promised { .. } => "promised".to_string(),
                        Observation::Accepted { slot, .. } => format!("accepted slot {slot} at"),
                        _ => String::new(),
                    };
                    if let Some(&(high, inc, at)) = promised.get(&o.node)
                        && *ballot < high
                    {
                        violations.push(violation(
                            "acceptor_monotonicity",
                            "acceptor monotonicity",
                            format!(
                                "{} (incarnation {}) {act} ballot {ballot} after reaching ballot {high} \
                                 (incarnation {inc}, at {at})",
                                o.node, o.incarnation
                            ),
                            o.time,
                            vec![o.node],
                        ));
                    }
                    let entry = promised
                        .entry(o.node)
                        .or_insert((*ballot, o.incarnation, o.time));
                    if *ballot > entry.0 {
                        *entry = (*ballot, o.incarnation, o.time);
                    }
                }
                Observation::Phase1Started { ballot } => {
                    if let Some(&(inc, at)) = ballots.get(&(o.node, *ballot)) {
                        violations.push(violation(
                            "ballot_reuse",
                            "ballot uniqueness",
                            format!(
                                "{} (incarnation {}) started phase 1 with ballot {ballot}, \
                                 which it already used (incarnation {inc}, at {at})",
                                o.node, o.incarnation
                            ),
                            o.time,
                            vec![o.node],
                        ));
                    }
                    ballots.insert((o.node, *ballot), (o.incarnation, o.time));
                }
                Observation::BecameLeader { .. }
                | Observation::Compacted { .. }
                | Observation::SteppedDown { .. }
                | Observation::Stopped { .. }
                | Observation::Recovered { .. } => {}
            }
        }
        violations
    }
}

pub const LIVENESS: &str = "paxos_liveness";

/// Bounded liveness in the quiet phase: once faults are healed and every node restarted,
/// and `settle` has passed (time for a leader to be chosen and known), every client
/// operation completes `ok` — none fails or times out — and replicas converge: every
/// node up at the end has applied every slot any node had applied `settle` before the
/// end.
#[derive(Debug)]
pub struct LivenessChecker {
    pub settle: sim_core::SimDuration,
}

impl Checker<Node> for LivenessChecker {
    fn name(&self) -> &'static str {
        LIVENESS
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let from = run.quiet_from + self.settle;
        if run.quiet_from >= run.end_time || from >= run.end_time {
            return Vec::new();
        }
        let mut violations = self.convergence(run);
        let mut late = run
            .history
            .operations
            .iter()
            .filter(|op| op.invoked_at >= from)
            .filter_map(|op| match &op.completion {
                Some((at, sim_core::Completion::Fail(why) | sim_core::Completion::Info(why))) => {
                    Some((op, *at, why))
                }
                _ => None,
            });
        if let Some((op, at, why)) = late.next() {
            violations.push(Violation {
                checker: LIVENESS,
                kind: "no_progress".to_string(),
                property: "bounded liveness",
                message: format!(
                    "{} ({:?}) invoked at {} on {}, {} after the quiet phase began, ended without \
                     a result at {at}: {why} ({} more such operations)",
                    op.id,
                    op.request,
                    op.invoked_at,
                    op.node,
                    self.settle,
                    late.count()
                ),
                time: Some(at),
                nodes: vec![op.node],
                cites: Vec::new(),
            });
        }
        violations
    }
}

impl LivenessChecker {
    fn convergence(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let Some(cutoff) = run.end_time.0.checked_sub(self.settle.as_micros()) else {
            return Vec::new();
        };
        let mut target: Option<(Slot, NodeId)> = None;
        let mut reached: BTreeMap<NodeId, Slot> = BTreeMap::new();
        for o in &run.observations {
            let slot = match &o.obs {
                Observation::Applied { slot, .. } | Observation::SnapshotInstalled { slot } => {
                    *slot
                }
                // What a restarted node recovered it has reached, but it sets no target:
                // it was observed applied (or installed) before, somewhere.
                Observation::Recovered { applied } => {
                    let r = reached.entry(o.node).or_insert(0);
                    *r = (*r).max(*applied);
                    continue;
                }
                _ => continue,
            };
            if o.time.0 <= cutoff && target.is_none_or(|(t, _)| slot > t) {
                target = Some((slot, o.node));
            }
            let r = reached.entry(o.node).or_insert(0);
            *r = (*r).max(slot);
        }
        let Some((target, by)) = target else {
            return Vec::new();
        };
        let mut violations = Vec::new();
        for (i, status) in run.final_status.iter().enumerate() {
            let node = NodeId(i as u32);
            let at = reached.get(&node).copied().unwrap_or(0);
            if *status == sim_core::NodeStatus::Up && at < target {
                violations.push(Violation {
                    checker: LIVENESS,
                    kind: "replicas_diverge".to_string(),
                    property: "bounded liveness",
                    message: format!(
                        "{node} is up at the end but applied only up to slot {at}; {by} had applied \
                         slot {target} {} before the end",
                        self.settle
                    ),
                    time: Some(run.end_time),
                    nodes: vec![node, by],
                    cites: Vec::new(),
                });
            }
        }
        violations
    }
}
