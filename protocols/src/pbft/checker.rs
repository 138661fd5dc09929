//! PBFT's properties, judged from the replicas' observations over the whole run (across
//! crashes and views). Only honest replicas' executions are judged; the Byzantine
//! replicas named by the scenario may observe anything.
//! - **Agreement** (across views): no two honest replicas execute different requests at
//!   one sequence number.
//! - **Commit certificate**: an honest replica executes a request at a sequence number
//!   only after 2f+1 distinct replicas sent COMMIT for it in one view, as the trace shows
//!   (the `CommitSent` observations before the execution).
//! - **Exactly-once**: no client request takes effect at two sequence numbers.
//! - **Checkpoint agreement**: equal state digests at equal checkpoint sequence numbers
//!   (taken or installed by state transfer).
//! - **Total order**: every incarnation of an honest replica executes sequence numbers in
//!   order without gaps (a state transfer moves it forward).
//! - **No equivocation by honest replicas**: no honest replica receives from another
//!   honest replica two pre-prepares (prepares, commits) for one view and sequence
//!   number with different digests (the `Conflict` observations) — not even across its
//!   crashes, since every such message leaves only after what it depends on is synced.
//!
//! Client-visible behaviour is judged by the linearizability checker; bounded liveness
//! by [`LivenessChecker`].

use std::collections::{BTreeMap, BTreeSet};

use sim_core::{Checker, NodeId, OpId, RunOutput, SimDuration, SimTime, Violation};

use super::wire::{Seq, View};
use super::{Node, Observation};

pub const NAME: &str = "pbft_invariants";
pub const LIVENESS: &str = "pbft_liveness";
pub const OP_LIVENESS: &str = "pbft_op_liveness";

#[derive(Debug, Default)]
pub struct InvariantChecker {
    pub f: usize,
    pub byzantine: BTreeSet<NodeId>,
}

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
        // (view, seq, digest) -> replicas that sent COMMIT so far.
        let mut commits: BTreeMap<(Seq, u64), BTreeMap<View, BTreeSet<NodeId>>> = BTreeMap::new();
        let mut executed: BTreeMap<Seq, (u64, NodeId, SimTime)> = BTreeMap::new();
        let mut effect: BTreeMap<OpId, (Seq, NodeId)> = BTreeMap::new();
        let mut checkpoints: BTreeMap<Seq, (u64, NodeId)> = BTreeMap::new();
        let mut progress: BTreeMap<(NodeId, u32), Seq> = BTreeMap::new();
        let quorum = 2 * self.f + 1;
        for o in &run.observations {
            let honest = !self.byzantine.contains(&o.node);
            match &o.obs {
                Observation::CommitSent { view, seq, digest } => {
                    commits
                        .entry((*seq, *digest))
                        .or_default()
                        .entry(*view)
                        .or_default()
                        .insert(o.node);
                }
                Observation::Executed {
                    seq,
                    view,
                    digest,
                    op,
                    effective,
                } if honest => {
                    let key = (o.node, o.incarnation);
                    if let Some(&last) = progress.get(&key)
                        && *seq != last + 1
                    {
                        violations.push(violation(
                            "total_order",
                            "total order",
                            format!(
                                "{} (incarnation {}) executed #{seq} after #{last}",
                                o.node, o.incarnation
                            ),
                            o.time,
                            vec![o.node],
                        ));
                    }
                    progress.insert(key, *seq);
                    let certified = commits
                        .get(&(*seq, *digest))
                        .is_some_and(|by_view| by_view.values().any(|s| s.len() >= quorum));
                    if !certified {
                        let best = commits
                            .get(&(*seq, *digest))
                            .and_then(|by_view| by_view.iter().max_by_key(|(_, s)| s.len()))
                            .map_or("none".to_string(), |(v, s)| {
                                format!("{} in view {v}: {:?}", s.len(), s)
                            });
                        violations.push(violation(
                            "no_commit_certificate",
                            "commit certificate before execution",
                            format!(
                                "{} executed #{seq} (digest {digest:016x}, view {view}) before 2f+1 = {quorum} \
                                 replicas had sent COMMIT for it in one view (most: {best})",
                                o.node
                            ),
                            o.time,
                            vec![o.node],
                        ));
                    }
                    match executed.get(seq) {
                        None => {
                            executed.insert(*seq, (*digest, o.node, o.time));
                        }
                        Some(&(d, node, at)) if d != *digest => violations.push(violation(
                            "agreement",
                            "agreement",
                            format!(
                                "{node} (at {at}) and {} executed different requests at #{seq} \
                                 (digests {d:016x} and {digest:016x})",
                                o.node
                            ),
                            o.time,
                            vec![node, o.node],
                        )),
                        Some(_) => {}
                    }
                    if *effective && let Some(op) = op {
                        match effect.get(op) {
                            Some(&(s, node)) if s != *seq => violations.push(violation(
                                "executed_twice",
                                "exactly-once execution",
                                format!(
                                    "{op} took effect at #{s} (on {node}) and again at #{seq} (on {})",
                                    o.node
                                ),
                                o.time,
                                vec![node, o.node],
                            )),
                            Some(_) => {}
                            None => {
                                effect.insert(*op, (*seq, o.node));
                            }
                        }
                    }
                }
                Observation::StateInstalled { seq, state }
                | Observation::CheckpointTaken { seq, state }
                    if honest =>
                {
                    if matches!(o.obs, Observation::StateInstalled { .. }) {
                        progress.insert((o.node, o.incarnation), *seq);
                    }
                    match checkpoints.get(seq) {
                        None => {
                            checkpoints.insert(*seq, (*state, o.node));
                        }
                        Some(&(s, node)) if s != *state => violations.push(violation(
                            "checkpoint_mismatch",
                            "checkpoint agreement",
                            format!(
                                "{node} and {} hold different states at checkpoint #{seq} \
                                 ({s:016x} and {state:016x})",
                                o.node
                            ),
                            o.time,
                            vec![node, o.node],
                        )),
                        Some(_) => {}
                    }
                }
                Observation::Conflict {
                    from,
                    kind,
                    view,
                    seq,
                } if honest && !self.byzantine.contains(&NodeId(*from)) => {
                    violations.push(violation(
                        "honest_equivocation",
                        "no equivocation by honest replicas",
                        format!(
                            "{} received two different {kind:?} messages for view {view}, #{seq} \
                             from honest n{from}",
                            o.node
                        ),
                        o.time,
                        vec![NodeId(*from), o.node],
                    ));
                }
                _ => {}
            }
        }
        violations
    }
}

/// Bounded liveness once the network is quiet and at most f replicas are faulty: every
/// honest replica up at the end has executed (or installed by state transfer) every
/// sequence number an honest replica had executed `settle` before the end.
#[derive(Debug)]
pub struct LivenessChecker {
    pub settle: SimDuration,
    pub byzantine: BTreeSet<NodeId>,
}

impl Checker<Node> for LivenessChecker {
    fn name(&self) -> &'static str {
        LIVENESS
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        if run.quiet_from >= run.end_time || run.quiet_from + self.settle >= run.end_time {
            return Vec::new();
        }
        let Some(cutoff) = run.end_time.0.checked_sub(self.settle.as_micros()) else {
            return Vec::new();
        };
        let mut target: Option<(Seq, NodeId)> = None;
        let mut reached: BTreeMap<NodeId, Seq> = BTreeMap::new();
        for o in &run.observations {
            if self.byzantine.contains(&o.node) {
                continue;
            }
            let seq = match &o.obs {
                Observation::Executed { seq, .. } | Observation::StateInstalled { seq, .. } => *seq,
                _ => continue,
            };
            if o.time.0 <= cutoff && target.is_none_or(|(t, _)| seq > t) {
                target = Some((seq, o.node));
            }
            let r = reached.entry(o.node).or_insert(0);
            *r = (*r).max(seq);
        }
        let Some((target, by)) = target else {
            return Vec::new();
        };
        let mut violations = Vec::new();
        for node in run.live_nodes() {
            if self.byzantine.contains(&node) {
                continue;
            }
            let at = reached.get(&node).copied().unwrap_or(0);
            if at < target {
                violations.push(Violation {
                    checker: LIVENESS,
                    kind: "replicas_diverge".to_string(),
                    property: "bounded liveness",
                    message: format!(
                        "{node} is up at the end but executed only up to #{at}; {by} had executed \
                         #{target} {} before the end",
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

/// Per-operation bounded liveness once the network is quiet and at most f replicas are
/// faulty: every operation a client proxy took before the quiet phase and still held
/// when it began is accepted (f+1 matching replies) within `bound` of the quiet phase's
/// start — unless the proxy's incarnation ended (a crash loses its pending requests).
/// The bound derives from the configuration (the binding: the capped view-change timer,
/// two request timeouts, the capped client retry and ten ticks). When the quiet phase is
/// shorter than the bound the property cannot be judged and nothing is reported.
#[derive(Debug)]
pub struct OpLivenessChecker {
    pub bound: SimDuration,
}

impl Checker<Node> for OpLivenessChecker {
    fn name(&self) -> &'static str {
        OP_LIVENESS
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let deadline = run.quiet_from + self.bound;
        if run.quiet_from >= run.end_time || deadline > run.end_time {
            return Vec::new();
        }
        // (node, incarnation, op) -> invoked at, accepted at.
        let mut ops: BTreeMap<(NodeId, u32, OpId), (SimTime, Option<SimTime>)> = BTreeMap::new();
        for o in &run.observations {
            match &o.obs {
                Observation::ProxyInvoked { op } if o.time < run.quiet_from => {
                    ops.entry((o.node, o.incarnation, *op))
                        .or_insert((o.time, None));
                }
                Observation::ProxyAccepted { op } => {
                    if let Some((_, done)) = ops.get_mut(&(o.node, o.incarnation, *op))
                        && done.is_none()
                    {
                        *done = Some(o.time);
                    }
                }
                _ => {}
            }
        }
        let mut violations = Vec::new();
        for ((node, incarnation, op), (invoked, done)) in ops {
            if done.is_some_and(|t| t < run.quiet_from) {
                continue;
            }
            // A proxy that crashed lost the operation with its process.
            if run.final_incarnation.get(node.index()) != Some(&incarnation) {
                continue;
            }
            if done.is_some_and(|t| t <= deadline) {
                continue;
            }
            let late = match done {
                Some(t) => format!("accepted only at {t}"),
                None => "never accepted".to_string(),
            };
            violations.push(Violation {
                checker: OP_LIVENESS,
                kind: "operation_not_completed".to_string(),
                property: "bounded liveness per operation",
                message: format!(
                    "{op} invoked on {node} at {invoked} was pending when the quiet phase \
                     began at {} and not accepted within {} ({late})",
                    run.quiet_from, self.bound
                ),
                time: Some(deadline),
                nodes: vec![node],
                cites: Vec::new(),
            });
        }
        violations
    }
}
