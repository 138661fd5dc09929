//! Faults: the actions a schedule or the nemesis can take, and the random nemesis.

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::network::PartitionShape;
use crate::rng::SimRng;
use crate::time::{SimDuration, SimTime};

/// One fault action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Drop the node's process and subject its unsynced disk writes to loss and tearing.
    Crash {
        node: NodeId,
    },
    /// A crash *inside* an operation: the node keeps running until its disk has taken
    /// `after_mutations` more mutations (writes, truncations, syncs, directory
    /// operations); the next one fails, and the node crashes at the end of that handler
    /// with the handler's effects (messages, replies, timers, observations) discarded,
    /// as if the process died at that instant. A node that has not reached the point by
    /// its restart crashes just before restarting. (In a realised schedule this is when
    /// the crash point was armed; the trace's `crash` event is when it struck.)
    CrashInside {
        node: NodeId,
        after_mutations: u32,
    },
    /// Build a fresh process for a crashed node and run `on_start`.
    Restart {
        node: NodeId,
    },
    /// Freeze the node: messages to it are dropped, its timers wait until it resumes.
    Pause {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
    /// Cut the links of a partition shape (in addition to any already cut).
    Partition {
        #[serde(flatten)]
        shape: PartitionShape,
    },
    /// Restore every cut link.
    Heal,
    /// Add `extra` delay to messages on `from → to` for `duration`.
    Clog {
        from: NodeId,
        to: NodeId,
        extra: SimDuration,
        duration: SimDuration,
    },
    /// Remove every clog.
    Unclog,
}

impl Fault {
    /// The fault kind's name, as in scenario files and coverage counters.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Crash { .. } | Fault::CrashInside { .. } | Fault::Restart { .. } => {
                FaultKind::Crash
            }
            Fault::Pause { .. } | Fault::Resume { .. } => FaultKind::Pause,
            Fault::Partition { .. } | Fault::Heal => FaultKind::Partition,
            Fault::Clog { .. } | Fault::Unclog => FaultKind::Clog,
        }
    }

    /// Checks node ids against the cluster size.
    pub fn validate(&self, node_count: usize) -> Result<(), String> {
        let check = |n: &NodeId| {
            if n.index() < node_count {
                Ok(())
            } else {
                Err(format!("node {} is outside 0..{node_count}", n.0))
            }
        };
        match self {
            Fault::Crash { node }
            | Fault::CrashInside { node, .. }
            | Fault::Restart { node }
            | Fault::Pause { node }
            | Fault::Resume { node } => check(node),
            Fault::Partition { shape } => match shape {
                PartitionShape::Isolate { node } => check(node),
                PartitionShape::OneWay { from, to } => from.iter().chain(to).try_for_each(check),
                PartitionShape::Links { links } => {
                    links.iter().try_for_each(|(a, b)| check(a).and(check(b)))
                }
                PartitionShape::RandomHalves
                | PartitionShape::IsolateLeader
                | PartitionShape::MajoritiesRing
                | PartitionShape::Bridge => Ok(()),
            },
            Fault::Clog { from, to, .. } => check(from).and(check(to)),
            Fault::Heal | Fault::Unclog => Ok(()),
        }
    }
}

/// A fault at a fixed time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledFault {
    pub at: SimTime,
    pub fault: Fault,
}

/// The families of faults the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Crash,
    Pause,
    Partition,
    Clog,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Crash,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Clog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Clog => "clog",
        }
    }
}

/// The random fault injector: every `interval` (uniform in `[min, max]`) it starts one
/// fault of an enabled kind, which it reverts after `fault_duration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NemesisConfig {
    pub interval_min: SimDuration,
    pub interval_max: SimDuration,
    pub fault_duration_min: SimDuration,
    pub fault_duration_max: SimDuration,
    /// The kinds it may inject.
    pub kinds: Vec<FaultKind>,
    /// Swarm testing: the seed also picks a non-empty subset of `kinds` for this run.
    pub swarm: bool,
    /// At most this many nodes crashed or paused at once (by default a minority).
    pub max_down: Option<usize>,
    /// Extra delay of a clog.
    pub clog_delay: SimDuration,
    /// Partition shapes to choose from.
    pub partition_shapes: Vec<PartitionShapeKind>,
    /// Crashes and pauses hit the node that believes it leads (through
    /// `Process::is_leader`), or a random node when none does.
    pub aim_at_leader: bool,
    /// The probability that a nemesis crash strikes inside an operation (a crash point
    /// after up to [`MAX_CRASH_POINT_MUTATIONS`] more disk mutations) rather than between
    /// handlers.
    #[serde(default)]
    pub crash_inside_operation: f64,
}

/// The largest number of disk mutations a nemesis crash point lets through first.
pub const MAX_CRASH_POINT_MUTATIONS: u32 = 24;

/// Partition shapes the nemesis picks among (node-specific ones pick their node at random).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionShapeKind {
    Isolate,
    IsolateLeader,
    RandomHalves,
    MajoritiesRing,
    Bridge,
    OneWay,
}

impl PartitionShapeKind {
    pub const ALL: [PartitionShapeKind; 5] = [
        PartitionShapeKind::Isolate,
        PartitionShapeKind::RandomHalves,
        PartitionShapeKind::MajoritiesRing,
        PartitionShapeKind::Bridge,
        PartitionShapeKind::OneWay,
    ];
}

impl Default for NemesisConfig {
    fn default() -> Self {
        NemesisConfig {
            interval_min: SimDuration::from_millis(500),
            interval_max: SimDuration::from_secs(2),
            fault_duration_min: SimDuration::from_millis(200),
            fault_duration_max: SimDuration::from_secs(2),
            kinds: FaultKind::ALL.to_vec(),
            swarm: false,
            max_down: None,
            clog_delay: SimDuration::from_millis(200),
            partition_shapes: PartitionShapeKind::ALL.to_vec(),
            aim_at_leader: false,
            crash_inside_operation: 0.0,
        }
    }
}

impl NemesisConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_min > self.interval_max {
            return Err("nemesis interval_min is greater than interval_max".into());
        }
        if self.interval_max == SimDuration::ZERO {
            return Err("nemesis interval must be positive".into());
        }
        if self.fault_duration_min > self.fault_duration_max {
            return Err("nemesis fault_duration_min is greater than fault_duration_max".into());
        }
        if self.kinds.is_empty() {
            return Err("nemesis has no fault kinds enabled".into());
        }
        if !(0.0..=1.0).contains(&self.crash_inside_operation) {
            return Err(format!(
                "nemesis crash_inside_operation is {}; expected a probability from 0 to 1",
                self.crash_inside_operation
            ));
        }
        if self.kinds.contains(&FaultKind::Partition) && self.partition_shapes.is_empty() {
            return Err("nemesis partitions are enabled but no shapes are listed".into());
        }
        Ok(())
    }

    /// The kinds active in this run: all of `kinds`, or in swarm mode a seeded non-empty
    /// subset of them.
    pub fn active_kinds(&self, rng: &mut SimRng) -> Vec<FaultKind> {
        let mut kinds = self.kinds.clone();
        kinds.sort();
        kinds.dedup();
        if !self.swarm {
            return kinds;
        }
        loop {
            let chosen: Vec<FaultKind> = kinds
                .iter()
                .copied()
                .filter(|_| rng.random_bool(0.5))
                .collect();
            if !chosen.is_empty() {
                return chosen;
            }
        }
    }

    pub(crate) fn next_interval(&self, rng: &mut SimRng) -> SimDuration {
        SimDuration(
            rng.random_range(self.interval_min.0..=self.interval_max.0)
                .max(1),
        )
    }

    pub(crate) fn fault_duration(&self, rng: &mut SimRng) -> SimDuration {
        SimDuration(rng.random_range(self.fault_duration_min.0..=self.fault_duration_max.0))
    }
}

/// Picks a concrete partition for a shape kind.
pub(crate) fn pick_partition(
    kind: PartitionShapeKind,
    node_count: usize,
    rng: &mut SimRng,
) -> PartitionShape {
    let random_node = |rng: &mut SimRng| NodeId(rng.random_range(0..node_count as u32));
    match kind {
        PartitionShapeKind::Isolate => PartitionShape::Isolate {
            node: random_node(rng),
        },
        PartitionShapeKind::IsolateLeader => PartitionShape::IsolateLeader,
        PartitionShapeKind::RandomHalves => PartitionShape::RandomHalves,
        PartitionShapeKind::MajoritiesRing => PartitionShape::MajoritiesRing,
        PartitionShapeKind::Bridge => PartitionShape::Bridge,
        PartitionShapeKind::OneWay => {
            let from = random_node(rng);
            let to: Vec<NodeId> = (0..node_count as u32)
                .map(NodeId)
                .filter(|&n| n != from)
                .collect();
            PartitionShape::OneWay {
                from: vec![from],
                to,
            }
        }
    }
}

/// The schedule realised in one run: every fault that actually happened, in order. A
/// `shrink` starts from this list.
pub type RealisedSchedule = Vec<ScheduledFault>;
