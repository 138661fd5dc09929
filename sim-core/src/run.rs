//! What a finished run hands to checkers and to the command line.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::fault::{FaultKind, RealisedSchedule};
use crate::history::History;
use crate::ids::NodeId;
use crate::network::DropReason;
use crate::process::Process;
use crate::time::SimTime;
use crate::trace::TraceLine;

/// A node's state when the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Up,
    Paused,
    Crashed,
}

/// An observation a node emitted.
#[derive(Debug, Clone, Serialize)]
#[serde(bound = "")]
pub struct Observed<P: Process> {
    pub time: SimTime,
    pub node: NodeId,
    /// Which start of the node emitted it (1 at boot, +1 per restart).
    pub incarnation: u32,
    pub obs: P::Obs,
}

/// Counters of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    /// Events taken from the event queue (deliveries, timers, faults, client steps).
    pub queue_events: u64,
    /// Events written to the trace.
    pub trace_events: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_duplicated: u64,
    pub messages_dropped: BTreeMap<DropReason, u64>,
    pub timers_fired: u64,
    /// Faults injected, by kind (a crash and its restart count once).
    pub faults: BTreeMap<FaultKind, u64>,
    /// Disk events (injected faults and crash outcomes), by name.
    pub disk_events: BTreeMap<String, u64>,
    pub operations_invoked: u64,
    pub operations_ok: u64,
    pub operations_failed: u64,
    pub operations_indeterminate: u64,
}

/// Everything a run produced.
pub struct RunOutput<P: Process> {
    pub seed: u64,
    pub trace_hash: u64,
    /// When the fault phase ended and the quiet phase began.
    pub quiet_from: SimTime,
    pub end_time: SimTime,
    pub node_count: usize,
    pub final_status: Vec<NodeStatus>,
    /// The incarnation each node was in when the run ended.
    pub final_incarnation: Vec<u32>,
    pub observations: Vec<Observed<P>>,
    pub history: History<P>,
    pub stats: RunStats,
    /// Every fault that was applied, with its time (from the schedule, the nemesis and the
    /// quiet phase), with random choices resolved: a partition is recorded as its links.
    pub realised_schedule: RealisedSchedule,
    /// The trace as text, if it was kept.
    pub trace_lines: Vec<TraceLine>,
    /// Set if the run stopped early at the configured event limit.
    pub hit_event_limit: bool,
    /// Set if writing the JSON Lines trace failed.
    pub trace_error: Option<String>,
    /// How often each coverage point was reached: the faults injected and the rare paths
    /// marked by the protocol and the engines (see [`crate::coverage`]).
    pub coverage: BTreeMap<&'static str, u64>,
}

impl<P: Process> RunOutput<P> {
    /// Nodes that were up (not crashed, not paused) when the run ended.
    pub fn live_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.final_status
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == NodeStatus::Up)
            .map(|(i, _)| NodeId(i as u32))
    }
}
