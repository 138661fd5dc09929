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
        let violation = |kind: &str, property: &'static str, message: String, time| Violation {
            checker: NAME,
            kind: kind.to_string(),
            property,
            message,
            time,
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
                )),
                None => violations.push(violation(
                    "created_value",
                    "no creation",
                    format!("{} delivered broadcast {id}, which no client sent", o.node),
                    Some(o.time),
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
