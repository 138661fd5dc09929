//! The reliable-broadcast checker.
//!
//! Properties (Hadzilacos & Toueg's reliable broadcast, adapted to crash-recovery with
//! volatile state, where each incarnation of a node is a separate process):
//! - **No duplication**: an incarnation delivers each value at most once.
//! - **No creation**: every delivered value was broadcast by a client, with that value.
//! - **Agreement**: at the end of the quiet period, every incarnation alive at the end has
//!   delivered every value that any incarnation alive at the end delivered.
//! - **Validity**: every broadcast acknowledged `ok` by an incarnation still alive at the
//!   end was delivered by every incarnation alive at the end.
//!
//! (A value acknowledged by an incarnation that later crashed may be lost if nobody else
//! received it: with volatile state nothing else is possible, and the rule says so.)

use std::collections::{BTreeMap, BTreeSet};

use sim_core::fault::Fault;
use sim_core::{Checker, Completion, NodeId, RunOutput, SimTime, Violation};

use super::{Node, Observation, Request, ValueId};

pub const NAME: &str = "broadcast_delivery";

/// Checks no duplication, no creation, agreement and validity.
#[derive(Debug, Default)]
pub struct DeliveryChecker;

impl Checker<Node> for DeliveryChecker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut violations = Vec::new();
        let violation =
            |kind: &str, property: &'static str, message: String, time, node| Violation {
                checker: NAME,
                kind: kind.to_string(),
                property,
                message,
                time,
                nodes: vec![node],
                cites: Vec::new(),
            };

        let broadcasts: BTreeMap<ValueId, u64> = run
            .history
            .operations
            .iter()
            .map(|op| match op.request {
                Request::Broadcast { value } => (op.id.0, value),
            })
            .collect();

        // Per (node, incarnation): what it delivered.
        let mut delivered: BTreeMap<(NodeId, u32), BTreeSet<ValueId>> = BTreeMap::new();
        for o in &run.observations {
            let Observation::Delivered { id, value } = o.obs;
            match broadcasts.get(&id) {
                Some(&expected) if expected == value => {}
                Some(&expected) => violations.push(violation(
                    "created_value",
                    "no creation",
                    format!(
                        "{} delivered value {value} for broadcast {id}, which broadcast {expected}",
                        o.node
                    ),
                    Some(o.time),
                    o.node,
                )),
                None => violations.push(violation(
                    "created_value",
                    "no creation",
                    format!("{} delivered broadcast {id}, which no client sent", o.node),
                    Some(o.time),
                    o.node,
                )),
            }
            if !delivered
                .entry((o.node, o.incarnation))
                .or_default()
                .insert(id)
            {
                violations.push(violation(
                    "duplicate_delivery",
                    "no duplication",
                    format!(
                        "{} (incarnation {}) delivered broadcast {id} a second time",
                        o.node, o.incarnation
                    ),
                    Some(o.time),
                    o.node,
                ));
            }
        }

        let finals: Vec<(NodeId, u32)> = run
            .live_nodes()
            .map(|n| (n, run.final_incarnation[n.index()]))
            .collect();
        let empty = BTreeSet::new();
        let known_by_finals: BTreeSet<ValueId> = finals
            .iter()
            .flat_map(|key| delivered.get(key).unwrap_or(&empty).iter().copied())
            .collect();
        // Validity: acknowledged by an incarnation that is still alive at the end.
        let acked_by_survivor: BTreeSet<ValueId> = run
            .history
            .operations
            .iter()
            .filter_map(|op| match &op.completion {
                Some((acked_at, Completion::Ok(()))) => Some((op, *acked_at)),
                _ => None,
            })
            .filter(|(op, acked_at)| {
                finals.iter().any(|&(n, _)| n == op.node)
                    && !restarted_since(run, op.node, *acked_at)
            })
            .map(|(op, _)| op.id.0)
            .collect();

        for &(node, incarnation) in &finals {
            let mine = delivered.get(&(node, incarnation)).unwrap_or(&empty);
            if let Some(&missing) = known_by_finals.difference(mine).next() {
                let count = known_by_finals.difference(mine).count();
                violations.push(violation(
                    "missing_delivery",
                    "agreement",
                    format!(
                        "{node} (incarnation {incarnation}) never delivered broadcast {missing} \
                         ({count} missing in all) that other live nodes delivered"
                    ),
                    None,
                    node,
                ));
            }
            if let Some(&missing) = acked_by_survivor.difference(mine).next() {
                if known_by_finals.contains(&missing) {
                    continue; // already reported as an agreement violation
                }
                violations.push(violation(
                    "lost_broadcast",
                    "validity",
                    format!(
                        "broadcast {missing} was acknowledged by a node that stayed up, \
                         but {node} (incarnation {incarnation}) never delivered it"
                    ),
                    None,
                    node,
                ));
            }
        }
        violations
    }
}

/// Whether `node` restarted at or after `time` (so the incarnation running at `time` is
/// not the one alive at the end).
fn restarted_since(run: &RunOutput<Node>, node: NodeId, time: SimTime) -> bool {
    run.realised_schedule
        .iter()
        .any(|f| f.at >= time && f.fault == Fault::Restart { node })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::fault::ScheduledFault;
    use sim_core::history::{History, Operation};
    use sim_core::{ClientId, NodeStatus, Observed, OpId, RunStats};

    /// A run of `nodes` nodes, all up in incarnation 1 at the end, in which client
    /// broadcasts `(op id, value, acknowledging node)` happened.
    fn run(nodes: usize, broadcasts: &[(u64, u64, u32)]) -> RunOutput<Node> {
        let operations = broadcasts
            .iter()
            .map(|&(id, value, node)| Operation {
                id: OpId(id),
                client: ClientId(0),
                node: NodeId(node),
                request: Request::Broadcast { value },
                invoked_at: SimTime(id * 10),
                completion: Some((SimTime(id * 10 + 1), Completion::Ok(()))),
            })
            .collect();
        RunOutput {
            seed: 0,
            trace_hash: 0,
            quiet_from: SimTime(1_000),
            end_time: SimTime(2_000),
            node_count: nodes,
            final_status: vec![NodeStatus::Up; nodes],
            final_incarnation: vec![1; nodes],
            observations: Vec::new(),
            history: History { operations },
            stats: RunStats::default(),
            realised_schedule: Vec::new(),
            trace_lines: Vec::new(),
            hit_event_limit: false,
            trace_error: None,
            coverage: Default::default(),
        }
    }

    fn deliver(run: &mut RunOutput<Node>, node: u32, incarnation: u32, id: u64, value: u64) {
        run.observations.push(Observed {
            time: SimTime(500 + run.observations.len() as u64),
            node: NodeId(node),
            incarnation,
            obs: Observation::Delivered { id, value },
        });
    }

    fn kinds(run: &RunOutput<Node>) -> Vec<String> {
        DeliveryChecker
            .check(run)
            .into_iter()
            .map(|v| v.kind)
            .collect()
    }

    #[test]
    fn a_complete_run_passes() {
        let mut r = run(3, &[(1, 10, 0), (2, 20, 1)]);
        for node in 0..3 {
            deliver(&mut r, node, 1, 1, 10);
            deliver(&mut r, node, 1, 2, 20);
        }
        assert_eq!(kinds(&r), Vec::<String>::new());
    }

    #[test]
    fn a_second_delivery_in_one_incarnation_is_a_duplicate_but_not_across_restarts() {
        let mut r = run(2, &[(1, 10, 0)]);
        deliver(&mut r, 0, 1, 1, 10);
        deliver(&mut r, 1, 1, 1, 10);
        deliver(&mut r, 1, 1, 1, 10);
        assert_eq!(kinds(&r), vec!["duplicate_delivery"]);

        let mut r = run(2, &[(1, 10, 0)]);
        r.final_incarnation = vec![1, 2];
        deliver(&mut r, 0, 1, 1, 10);
        deliver(&mut r, 1, 1, 1, 10);
        deliver(&mut r, 1, 2, 1, 10);
        assert_eq!(kinds(&r), Vec::<String>::new());
    }

    #[test]
    fn an_invented_or_altered_value_is_a_creation() {
        let mut r = run(2, &[(1, 10, 0)]);
        deliver(&mut r, 0, 1, 1, 10);
        deliver(&mut r, 1, 1, 1, 11);
        deliver(&mut r, 0, 1, 99, 5);
        let k = kinds(&r);
        assert_eq!(
            k.iter().filter(|k| *k == "created_value").count(),
            2,
            "{k:?}"
        );
    }

    #[test]
    fn a_value_some_live_node_lacks_breaks_agreement() {
        let mut r = run(3, &[(1, 10, 0)]);
        deliver(&mut r, 0, 1, 1, 10);
        deliver(&mut r, 1, 1, 1, 10);
        assert_eq!(kinds(&r), vec!["missing_delivery"]);
        // A node that is down at the end is not judged.
        r.final_status[2] = NodeStatus::Crashed;
        assert_eq!(kinds(&r), Vec::<String>::new());
    }

    #[test]
    fn an_acknowledged_value_nobody_delivered_breaks_validity_unless_its_node_restarted() {
        let mut r = run(2, &[(1, 10, 0)]);
        assert_eq!(kinds(&r), vec!["lost_broadcast", "lost_broadcast"]);
        // The acknowledging incarnation crashed and restarted: the value may be lost.
        r.final_incarnation = vec![2, 1];
        r.realised_schedule.push(ScheduledFault {
            at: SimTime(100),
            fault: Fault::Restart { node: NodeId(0) },
        });
        assert_eq!(kinds(&r), Vec::<String>::new());
    }
}
