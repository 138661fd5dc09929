//! Client histories in the Jepsen style: each operation has an invocation and, at most
//! once, a completion (`ok`, `fail` or `info`). An operation still open at the end of the
//! run, or completed with `info`, may have taken effect at any point after its
//! invocation, or never.

use serde::Serialize;

use crate::ids::{ClientId, NodeId, OpId};
use crate::process::{Completion, Process};
use crate::time::SimTime;

/// One client operation.
#[derive(Debug, Clone, Serialize)]
#[serde(bound = "")]
pub struct Operation<P: Process> {
    pub id: OpId,
    pub client: ClientId,
    /// The node the client sent it to.
    pub node: NodeId,
    pub request: P::Op,
    pub invoked_at: SimTime,
    /// When and how it completed; `None` if it was still open when the run ended.
    pub completion: Option<(SimTime, Completion<P::Reply>)>,
}

impl<P: Process> Operation<P> {
    /// Whether it certainly took effect.
    pub fn is_ok(&self) -> bool {
        matches!(self.completion, Some((_, Completion::Ok(_))))
    }

    /// Whether it certainly did not take effect.
    pub fn is_fail(&self) -> bool {
        matches!(self.completion, Some((_, Completion::Fail(_))))
    }

    /// Whether its outcome is unknown (`info`, or never completed).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self.completion, None | Some((_, Completion::Info(_))))
    }
}

/// Every client operation of a run, in invocation order.
#[derive(Debug, Clone, Serialize)]
#[serde(bound = "")]
pub struct History<P: Process> {
    pub operations: Vec<Operation<P>>,
}

impl<P: Process> Default for History<P> {
    fn default() -> Self {
        History {
            operations: Vec::new(),
        }
    }
}

impl<P: Process> History<P> {
    /// The operation with this id (ids are assigned densely from 1).
    pub fn get(&self, id: OpId) -> Option<&Operation<P>> {
        let index = (id.0 as usize).checked_sub(1)?;
        self.operations.get(index).filter(|op| op.id == id)
    }

    pub(crate) fn get_mut(&mut self, id: OpId) -> Option<&mut Operation<P>> {
        let index = (id.0 as usize).checked_sub(1)?;
        self.operations.get_mut(index).filter(|op| op.id == id)
    }

    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}
