//! Raft's invariants (Figure 3 of the paper), judged from the nodes' observations over the
//! whole run, across crashes:
//! - **Election safety**: at most one leader is elected in a term.
//! - **Log matching**: entries applied with the same index and term are the same entry.
//! - **Leader completeness**: an entry applied by any node before a leader of a later
//!   term was elected is in that leader's log, with its term. Entries the leader had
//!   compacted into its state machine count as present (the leader applied them, and
//!   state machine safety checks what it applied); at the base index the term must match.
//! - **State machine safety**: no two nodes apply different entries at the same index,
//!   and each incarnation applies indexes in order without gaps; an installed snapshot
//!   moves a node forward (never back) to an index whose term matches what others
//!   applied there.
//!
//! Client-visible behaviour is judged separately by the linearizability checker.

use std::collections::BTreeMap;

use sim_core::{Checker, NodeId, RunOutput, SimTime, Violation};

use super::log::{Index, Term};
use super::{Node, Observation};

pub const NAME: &str = "raft_invariants";

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
        let mut leaders: BTreeMap<Term, (NodeId, SimTime)> = BTreeMap::new();
        // index -> (term, digest, node, time) of the first application seen.
        let mut applied: BTreeMap<Index, (Term, u64, NodeId, SimTime)> = BTreeMap::new();
        // (node, incarnation) -> last index applied.
        let mut progress: BTreeMap<(NodeId, u32), Index> = BTreeMap::new();
        for o in &run.observations {
            match &o.obs {
                Observation::BecameLeader { term, base, log } => {
                    if let Some(&(other, at)) = leaders.get(term)
                        && other != o.node
                    {
                        violations.push(violation(
                            "election_safety",
                            "election safety",
                            format!(
                                "{other} (at {at}) and {} were both elected leader of term {term}",
                                o.node
                            ),
                            o.time,
                            vec![other, o.node],
                        )
                        .citing(at, other));
                    }
                    leaders.entry(*term).or_insert((o.node, o.time));
                    // Leader completeness: everything applied so far from earlier terms.
                    for (&index, &(entry_term, _, node, at)) in &applied {
                        if entry_term >= *term {
                            continue;
                        }
                        let has = index < base.0
                            || (index == base.0 && base.1 == entry_term)
                            || log.iter().any(|&(t, first, last)| {
                                t == entry_term && (first..=last).contains(&index)
                            });
                        if !has {
                            violations.push(violation(
                                "leader_completeness",
                                "leader completeness",
                                format!(
                                    "{} became leader of term {term} without entry {index} of term {entry_term}, \
                                     which {node} had applied at {at}",
                                    o.node
                                ),
                                o.time,
                                vec![o.node, node],
                            )
                            .citing(at, node));
                            break;
                        }
                    }
                }
                Observation::Applied {
                    index,
                    term,
                    digest,
                } => {
                    let key = (o.node, o.incarnation);
                    let expected = progress.get(&key).map(|i| i + 1);
                    if let Some(expected) = expected
                        && *index != expected
                    {
                        violations.push(violation(
                            "state_machine_safety",
                            "state machine safety",
                            format!(
                                "{} (incarnation {}) applied index {index} after {}",
                                o.node,
                                o.incarnation,
                                expected - 1
                            ),
                            o.time,
                            vec![o.node],
                        ));
                    }
                    progress.insert(key, *index);
                    match applied.get(index) {
                        None => {
                            applied.insert(*index, (*term, *digest, o.node, o.time));
                        }
                        Some(&(t, d, node, at)) if t == *term && d != *digest => {
                            violations.push(violation(
                                "log_matching",
                                "log matching",
                                format!(
                                    "{node} (at {at}) and {} applied different entries with index {index} and term {term}",
                                    o.node
                                ),
                                o.time,
                                vec![node, o.node],
                            )
                            .citing(at, node));
                        }
                        Some(&(t, _, node, at)) if t != *term => {
                            violations.push(violation(
                                "state_machine_safety",
                                "state machine safety",
                                format!(
                                    "{node} applied an entry of term {t} at index {index} (at {at}), \
                                     {} one of term {term}",
                                    o.node
                                ),
                                o.time,
                                vec![node, o.node],
                            )
                            .citing(at, node));
                        }
                        Some(_) => {}
                    }
                }
                Observation::SnapshotInstalled { index, term } => {
                    let key = (o.node, o.incarnation);
                    if let Some(&at) = progress.get(&key)
                        && *index <= at
                    {
                        violations.push(violation(
                            "state_machine_safety",
                            "state machine safety",
                            format!(
                                "{} (incarnation {}) installed a snapshot at {index} after applying {at}",
                                o.node, o.incarnation
                            ),
                            o.time,
                            vec![o.node],
                        ));
                    }
                    progress.insert(key, *index);
                    if let Some(&(t, _, node, at)) = applied.get(index)
                        && t != *term
                    {
                        violations.push(
                            violation(
                                "state_machine_safety",
                                "state machine safety",
                                format!(
                                    "{} installed a snapshot ending at {index} of term {term}; \
                                 {node} applied an entry of term {t} there (at {at})",
                                    o.node
                                ),
                                o.time,
                                vec![node, o.node],
                            )
                            .citing(at, node),
                        );
                    }
                }
                Observation::Compacted { .. }
                | Observation::SteppedDown { .. }
                | Observation::Stopped { .. } => {}
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::history::History;
    use sim_core::{NodeStatus, Observed, RunStats};

    fn run(observations: Vec<(u64, u32, u32, Observation)>) -> RunOutput<Node> {
        RunOutput {
            seed: 0,
            trace_hash: 0,
            quiet_from: SimTime(1_000),
            end_time: SimTime(2_000),
            node_count: 3,
            final_status: vec![NodeStatus::Up; 3],
            final_incarnation: vec![1; 3],
            observations: observations
                .into_iter()
                .map(|(time, node, incarnation, obs)| Observed {
                    time: SimTime(time),
                    node: NodeId(node),
                    incarnation,
                    obs,
                })
                .collect(),
            history: History::default(),
            stats: RunStats::default(),
            realised_schedule: Vec::new(),
            trace_lines: Vec::new(),
            hit_event_limit: false,
            trace_error: None,
            coverage: Default::default(),
        }
    }

    fn leader(term: Term, log: &[(Term, Index, Index)]) -> Observation {
        Observation::BecameLeader {
            term,
            base: (0, 0),
            log: log.to_vec(),
        }
    }

    fn compacted_leader(
        term: Term,
        base: (Index, Term),
        log: &[(Term, Index, Index)],
    ) -> Observation {
        Observation::BecameLeader {
            term,
            base,
            log: log.to_vec(),
        }
    }

    fn applied(index: Index, term: Term, digest: u64) -> Observation {
        Observation::Applied {
            index,
            term,
            digest,
        }
    }

    fn kinds(r: &RunOutput<Node>) -> Vec<String> {
        InvariantChecker
            .check(r)
            .into_iter()
            .map(|v| v.kind)
            .collect()
    }

    #[test]
    fn a_healthy_run_passes() {
        let r = run(vec![
            (1, 0, 1, leader(1, &[])),
            (2, 0, 1, applied(1, 1, 10)),
            (3, 1, 1, applied(1, 1, 10)),
            (4, 1, 1, leader(2, &[(1, 1, 1)])),
            (5, 1, 1, applied(2, 2, 20)),
            (6, 0, 1, applied(2, 2, 20)),
            // A restarted node re-applies from its recovered point.
            (7, 2, 2, applied(1, 1, 10)),
            (8, 2, 2, applied(2, 2, 20)),
        ]);
        assert_eq!(kinds(&r), Vec::<String>::new());
    }

    #[test]
    fn two_leaders_in_a_term_break_election_safety() {
        let r = run(vec![(1, 0, 1, leader(3, &[])), (2, 1, 1, leader(3, &[]))]);
        assert_eq!(kinds(&r), vec!["election_safety"]);
        // The same node announcing twice (say, after a restart) is not two leaders.
        let r = run(vec![(1, 0, 1, leader(3, &[])), (2, 0, 2, leader(3, &[]))]);
        assert_eq!(kinds(&r), Vec::<String>::new());
    }

    #[test]
    fn a_leader_missing_an_applied_entry_breaks_leader_completeness() {
        let r = run(vec![
            (1, 0, 1, applied(1, 1, 10)),
            (2, 1, 1, leader(2, &[])),
        ]);
        assert_eq!(kinds(&r), vec!["leader_completeness"]);
        // Having the index with another term is just as wrong.
        let r = run(vec![
            (1, 0, 1, applied(1, 1, 10)),
            (2, 1, 1, leader(3, &[(2, 1, 1)])),
        ]);
        assert_eq!(kinds(&r), vec!["leader_completeness"]);
    }

    #[test]
    fn different_entries_at_one_index_break_log_matching_or_state_machine_safety() {
        let r = run(vec![
            (1, 0, 1, applied(1, 1, 10)),
            (2, 1, 1, applied(1, 1, 11)),
        ]);
        assert_eq!(kinds(&r), vec!["log_matching"]);
        let r = run(vec![
            (1, 0, 1, applied(1, 1, 10)),
            (2, 1, 1, applied(1, 2, 10)),
        ]);
        assert_eq!(kinds(&r), vec!["state_machine_safety"]);
    }

    #[test]
    fn compacted_entries_count_for_leader_completeness_if_the_base_matches() {
        let r = run(vec![
            (1, 0, 1, applied(1, 1, 10)),
            (2, 0, 1, applied(2, 1, 20)),
            (3, 1, 1, compacted_leader(2, (2, 1), &[])),
        ]);
        assert_eq!(kinds(&r), Vec::<String>::new());
        // A base at the applied entry's index with another term: that entry is missing.
        let r = run(vec![
            (1, 0, 1, applied(1, 1, 10)),
            (2, 0, 1, applied(2, 1, 20)),
            (3, 1, 1, compacted_leader(3, (2, 2), &[])),
        ]);
        assert_eq!(kinds(&r), vec!["leader_completeness"]);
    }

    #[test]
    fn snapshots_skip_ahead_but_never_back_or_to_another_term() {
        let snap = |index, term| Observation::SnapshotInstalled { index, term };
        let r = run(vec![
            (1, 0, 1, applied(1, 1, 10)),
            (2, 0, 1, applied(2, 1, 20)),
            (3, 0, 1, applied(3, 1, 30)),
            (4, 1, 1, applied(1, 1, 10)),
            (5, 1, 1, snap(3, 1)),
            (6, 1, 1, applied(4, 1, 40)),
        ]);
        assert_eq!(kinds(&r), Vec::<String>::new());
        let r = run(vec![
            (1, 0, 1, applied(1, 1, 10)),
            (2, 0, 1, applied(2, 1, 20)),
            (3, 0, 1, snap(1, 1)),
        ]);
        assert_eq!(kinds(&r), vec!["state_machine_safety"], "backwards");
        let r = run(vec![(1, 0, 1, applied(2, 1, 20)), (2, 1, 1, snap(2, 2))]);
        assert_eq!(kinds(&r), vec!["state_machine_safety"], "another term");
    }

    #[test]
    fn skipping_an_index_breaks_state_machine_safety() {
        let r = run(vec![
            (1, 0, 1, applied(1, 1, 10)),
            (2, 0, 1, applied(3, 1, 30)),
        ]);
        assert_eq!(kinds(&r), vec!["state_machine_safety"]);
    }
}
