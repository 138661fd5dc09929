//! The checker framework: properties judged from a finished run's observations and
//! client history, never from a protocol's private state.

use std::fmt;

use serde::Serialize;

use crate::ids::{NodeId, OpId};
use crate::process::Process;
use crate::run::RunOutput;
use crate::time::SimTime;

/// A property that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The checker that found it.
    pub checker: &'static str,
    /// A stable, snake_case name for the kind of violation (used by `shrink` and sweeps).
    pub kind: String,
    /// The property in the words of the literature.
    pub property: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// When the breaking event happened, if one event is to blame.
    pub time: Option<SimTime>,
    /// The nodes it concerns (for `replay`'s default window), if any.
    pub nodes: Vec<NodeId>,
    /// The events the checker cites as evidence (what a node did at a time, typically
    /// an observation), beyond the breaking event at `time`; `faultline viz` highlights
    /// them. Empty when the checker cites nothing more.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cites: Vec<Citation>,
}

/// An event a violation cites: what `node` did at `time` — with `op`, the invocation or
/// completion of that client operation there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Citation {
    pub time: SimTime,
    pub node: NodeId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<OpId>,
}

impl Violation {
    /// The same violation, also citing what `node` did at `time`.
    #[must_use]
    pub fn citing(self, time: SimTime, node: NodeId) -> Self {
        self.cite(Citation {
            time,
            node,
            op: None,
        })
    }

    /// The same violation, also citing client operation `op`'s invocation or completion
    /// at `time` on `node`.
    #[must_use]
    pub fn citing_op(self, time: SimTime, node: NodeId, op: OpId) -> Self {
        self.cite(Citation {
            time,
            node,
            op: Some(op),
        })
    }

    fn cite(mut self, citation: Citation) -> Self {
        if !self.cites.contains(&citation) {
            self.cites.push(citation);
        }
        self
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} violated: {}",
            self.kind, self.property, self.message
        )?;
        if let Some(t) = self.time {
            write!(f, " (at {t})")?;
        }
        Ok(())
    }
}

/// A checker of one property (or a family of related ones).
pub trait Checker<P: Process> {
    /// The checker's name, as listed by `faultline list` and named in scenario files.
    fn name(&self) -> &'static str;
    /// Every violation found in the run (empty when the property holds).
    fn check(&self, run: &RunOutput<P>) -> Vec<Violation>;
}
