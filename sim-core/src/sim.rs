//! The simulation kernel: an event loop over simulated time that owns every node, the
//! network, the disks, the fault schedule, the nemesis and the clients.
//!
//! One seed decides everything. The event queue is a binary heap ordered by
//! `(time, sequence)`, where the sequence number is the order of insertion, so events at
//! the same instant run in the order they were scheduled. Randomness comes from streams
//! forked by label (`network`, `nemesis`, `clients`, `clock`, `disk/n`, `node/n`).

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;

use rand::RngExt;
use storage::vfs::VfsHandle;

use crate::checker::Violation;
use crate::clock::{MAX_DRIFT_PPM, NodeClock};
use crate::disk::{DiskConfig, DiskEvent, SimDisk};
use crate::fault::{
    Fault, FaultKind, MAX_CRASH_POINT_MUTATIONS, NemesisConfig, ScheduledFault, pick_partition,
};
use crate::history::{History, Operation};
use crate::ids::{ClientId, MsgId, NodeId, OpId, TimerId};
use crate::network::{DropReason, Network, NetworkConfig, PartitionShape, Routing};
use crate::process::{Completion, Ctx, Effect, Process};
use crate::rng::{SimRng, fork};
use crate::run::{NodeStatus, Observed, RunOutput, RunStats};
use crate::time::{SimDuration, SimTime};
use crate::trace::{Trace, TraceEvent, TraceOptions};
use crate::workload::{ClientConfig, Workload};

/// Bounds on the clocks of the nodes; each node's offset (ahead of true time, in
/// `[0, max_offset]`) and drift (in `[-max_drift_ppm, +max_drift_ppm]`) are drawn
/// uniformly from the `clock` stream. Offsets are never negative, so no clock ever reads
/// below zero; what matters to protocols is the skew between nodes, up to `max_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClockConfig {
    pub max_offset: SimDuration,
    pub max_drift_ppm: u32,
}

/// The configuration of one run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub node_count: usize,
    pub network: NetworkConfig,
    pub clock: ClockConfig,
    pub disk: DiskConfig,
    /// The total simulated time.
    pub duration: SimDuration,
    /// The final stretch of `duration` with no faults: at its start every fault is
    /// healed, crashed nodes restart, paused ones resume, and clients stop invoking.
    /// Zero means no quiet phase: the run ends in whatever state the faults left.
    pub quiet_period: SimDuration,
    pub schedule: Vec<ScheduledFault>,
    pub nemesis: Option<NemesisConfig>,
    pub clients: Option<ClientConfig>,
    /// A safety bound on queue events; the run stops (and says so) when it is reached.
    pub max_events: u64,
}

impl SimConfig {
    pub fn new(seed: u64, node_count: usize) -> Self {
        SimConfig {
            seed,
            node_count,
            network: NetworkConfig::default(),
            clock: ClockConfig::default(),
            disk: DiskConfig::default(),
            duration: SimDuration::from_secs(10),
            quiet_period: SimDuration::from_secs(2),
            schedule: Vec::new(),
            nemesis: None,
            clients: None,
            max_events: 50_000_000,
        }
    }

    /// Checks the configuration; returns a description of the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_count == 0 {
            return Err("a cluster needs at least one node".into());
        }
        if self.node_count > 4096 {
            return Err(format!(
                "{} nodes is more than the 4096 supported",
                self.node_count
            ));
        }
        if self.quiet_period > self.duration {
            return Err(format!(
                "quiet period {} is longer than the duration {}",
                self.quiet_period, self.duration
            ));
        }
        if i64::from(self.clock.max_drift_ppm) > MAX_DRIFT_PPM {
            return Err(format!(
                "clock drift {} ppm is beyond the supported {MAX_DRIFT_PPM} ppm",
                self.clock.max_drift_ppm
            ));
        }
        self.network.validate(self.node_count)?;
        for scheduled in &self.schedule {
            scheduled
                .fault
                .validate(self.node_count)
                .map_err(|e| format!("fault at {}: {e}", scheduled.at))?;
        }
        if let Some(nemesis) = &self.nemesis {
            nemesis.validate()?;
        }
        if let Some(clients) = &self.clients {
            clients.validate()?;
        }
        Ok(())
    }
}

enum Event<P: Process> {
    Deliver {
        from: NodeId,
        to: NodeId,
        id: MsgId,
        msg: P::Msg,
    },
    Timer {
        node: NodeId,
        incarnation: u32,
        id: TimerId,
        timer: P::Timer,
    },
    Fault(Fault),
    NemesisTick,
    ClientInvoke {
        client: ClientId,
    },
    ClientTimeout {
        op: OpId,
    },
    QuietPhase,
}

struct Queued<P: Process> {
    time: SimTime,
    seq: u64,
    event: Event<P>,
}

impl<P: Process> PartialEq for Queued<P> {
    fn eq(&self, other: &Self) -> bool {
        self.time == other.time && self.seq == other.seq
    }
}
impl<P: Process> Eq for Queued<P> {}
impl<P: Process> PartialOrd for Queued<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<P: Process> Ord for Queued<P> {
    /// Reversed, so the max-heap pops the earliest `(time, seq)`.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

struct NodeSlot<P: Process> {
    process: Option<P>,
    status: NodeStatus,
    incarnation: u32,
    clock: NodeClock,
    rng: SimRng,
    disk: SimDisk,
    disk_handle: VfsHandle,
    /// Timers that came due while the node was paused; they fire when it resumes.
    deferred_timers: Vec<(TimerId, P::Timer)>,
    /// A crash inside an operation is armed on the node's disk (`Fault::Crash` with
    /// `after_mutations`): the node counts as down for the nemesis.
    crash_armed: bool,
}

struct ClientState<P: Process> {
    /// The operation in flight, if any.
    current: Option<OpId>,
    /// A request to retry on another node after a `fail` or `info`: the request, the
    /// node it last went to, and how many times it has been retried.
    retry: Option<(P::Op, NodeId, u32)>,
}

type Factory<P> = Box<dyn FnMut(NodeId) -> P>;

/// A simulation of a cluster of `P` nodes.
pub struct Simulation<P: Process> {
    config: SimConfig,
    now: SimTime,
    seq: u64,
    queue: BinaryHeap<Queued<P>>,
    nodes: Vec<NodeSlot<P>>,
    factory: Factory<P>,
    network: Network,
    network_rng: SimRng,
    nemesis_rng: SimRng,
    client_rng: SimRng,
    nemesis_kinds: Vec<FaultKind>,
    workload: Option<Box<dyn Workload<P>>>,
    clients: Vec<ClientState<P>>,
    history: History<P>,
    observations: Vec<Observed<P>>,
    effects: Vec<Effect<P>>,
    next_timer_id: u64,
    next_msg_id: u64,
    pending_timers: BTreeSet<TimerId>,
    trace: Trace,
    stats: RunStats,
    realised: Vec<ScheduledFault>,
    quiet: bool,
    quiet_from: SimTime,
    end: SimTime,
}

/// Errors building a simulation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulation configuration: {0}")]
    InvalidConfig(String),
}

impl<P: Process> Simulation<P> {
    /// Builds a simulation. `factory` builds a node's process at boot and at every
    /// restart; `workload` generates client requests (none if `None` or if the config
    /// has no clients).
    pub fn new(
        config: SimConfig,
        factory: impl FnMut(NodeId) -> P + 'static,
        workload: Option<Box<dyn Workload<P>>>,
        trace: TraceOptions,
    ) -> Result<Self, SimError> {
        config.validate().map_err(SimError::InvalidConfig)?;
        let seed = config.seed;
        let n = config.node_count;
        let mut clock_rng = fork(seed, "clock", 0);
        let nodes = (0..n)
            .map(|i| {
                let clock = draw_clock(&config.clock, &mut clock_rng);
                let disk = SimDisk::new(config.disk.clone(), fork(seed, "disk", i as u64));
                let disk_handle: VfsHandle = Arc::new(disk.clone());
                NodeSlot {
                    process: None,
                    status: NodeStatus::Crashed,
                    incarnation: 0,
                    clock,
                    rng: fork(seed, "node", i as u64),
                    disk,
                    disk_handle,
                    deferred_timers: Vec::new(),
                    crash_armed: false,
                }
            })
            .collect();
        let mut nemesis_rng = fork(seed, "nemesis", 0);
        let nemesis_kinds = config
            .nemesis
            .as_ref()
            .map(|nemesis| nemesis.active_kinds(&mut nemesis_rng))
            .unwrap_or_default();
        let end = SimTime::ZERO + config.duration;
        let quiet_from = SimTime(end.0 - config.quiet_period.0);
        let clients = match (&config.clients, &workload) {
            (Some(c), Some(_)) => (0..c.clients)
                .map(|_| ClientState {
                    current: None,
                    retry: None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Simulation {
            network: Network::new(n, config.network.clone()),
            network_rng: fork(seed, "network", 0),
            nemesis_rng,
            client_rng: fork(seed, "clients", 0),
            nemesis_kinds,
            config,
            now: SimTime::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            factory: Box::new(factory),
            workload,
            clients,
            history: History::default(),
            observations: Vec::new(),
            effects: Vec::new(),
            next_timer_id: 0,
            next_msg_id: 0,
            pending_timers: BTreeSet::new(),
            trace: Trace::new(trace),
            stats: RunStats::default(),
            realised: Vec::new(),
            quiet: false,
            quiet_from,
            end,
        })
    }

    /// The current simulated time.
    pub fn now(&self) -> SimTime {
        self.now
    }

    fn push(&mut self, time: SimTime, event: Event<P>) {
        self.seq += 1;
        self.queue.push(Queued {
            time,
            seq: self.seq,
            event,
        });
    }

    /// Runs the whole simulation and returns what it produced.
    pub fn run(mut self) -> RunOutput<P> {
        self.boot();
        let hit_limit = self.run_until(self.end);
        self.finish(hit_limit)
    }

    /// Boots every node and schedules the faults, the nemesis and the clients.
    pub fn boot(&mut self) {
        crate::coverage::begin_run();
        for i in 0..self.nodes.len() {
            self.start_node(NodeId(i as u32));
        }
        let schedule = std::mem::take(&mut self.config.schedule);
        for scheduled in &schedule {
            if scheduled.at < self.quiet_from {
                self.push(scheduled.at, Event::Fault(scheduled.fault.clone()));
            }
        }
        self.config.schedule = schedule;
        if let Some(nemesis) = &self.config.nemesis {
            let first = nemesis.next_interval(&mut self.nemesis_rng);
            self.push(SimTime::ZERO + first, Event::NemesisTick);
        }
        for c in 0..self.clients.len() {
            let think = self.think_time();
            self.push(
                SimTime::ZERO + think,
                Event::ClientInvoke {
                    client: ClientId(c as u32),
                },
            );
        }
        if self.config.quiet_period > SimDuration::ZERO {
            self.push(self.quiet_from, Event::QuietPhase);
        }
    }

    /// Processes events up to and including time `until`; returns whether the event
    /// limit stopped it.
    pub fn run_until(&mut self, until: SimTime) -> bool {
        while let Some(top) = self.queue.peek() {
            if top.time > until {
                break;
            }
            if self.stats.queue_events >= self.config.max_events {
                return true;
            }
            let Some(Queued { time, event, .. }) = self.queue.pop() else {
                break;
            };
            self.now = time;
            self.stats.queue_events += 1;
            self.handle(event);
        }
        self.now = self.now.max(until.min(self.end));
        false
    }

    fn handle(&mut self, event: Event<P>) {
        match event {
            Event::Deliver { from, to, id, msg } => self.deliver(from, to, id, msg),
            Event::Timer {
                node,
                incarnation,
                id,
                timer,
            } => self.fire_timer(node, incarnation, id, timer),
            Event::Fault(fault) => self.apply_fault(fault),
            Event::NemesisTick => self.nemesis_tick(),
            Event::ClientInvoke { client } => self.client_invoke(client),
            Event::ClientTimeout { op } => {
                self.complete(op, Completion::Info("timeout".into()));
            }
            Event::QuietPhase => self.begin_quiet_phase(),
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, id: MsgId, msg: P::Msg) {
        let reason = match self.nodes[to.index()].status {
            NodeStatus::Crashed => Some(DropReason::ReceiverCrashed),
            NodeStatus::Paused => Some(DropReason::ReceiverPaused),
            NodeStatus::Up if self.network.is_blocked(from, to) => Some(DropReason::Partitioned),
            NodeStatus::Up => None,
        };
        if let Some(reason) = reason {
            self.drop_message(from, to, id, reason);
            return;
        }
        self.stats.messages_delivered += 1;
        self.trace.record::<P>(
            self.now,
            TraceEvent::Deliver {
                from,
                to,
                id,
                msg: &msg,
            },
        );
        self.dispatch(to, |process, ctx| process.on_message(ctx, from, msg));
    }

    fn drop_message(&mut self, from: NodeId, to: NodeId, id: MsgId, reason: DropReason) {
        *self.stats.messages_dropped.entry(reason).or_default() += 1;
        self.trace.record::<P>(
            self.now,
            TraceEvent::Drop {
                from,
                to,
                id,
                reason,
            },
        );
    }

    fn fire_timer(&mut self, node: NodeId, incarnation: u32, id: TimerId, timer: P::Timer) {
        let slot = &mut self.nodes[node.index()];
        if slot.incarnation != incarnation || slot.status == NodeStatus::Crashed {
            self.pending_timers.remove(&id);
            return;
        }
        if slot.status == NodeStatus::Paused {
            slot.deferred_timers.push((id, timer));
            return;
        }
        if !self.pending_timers.remove(&id) {
            return; // cancelled
        }
        self.stats.timers_fired += 1;
        self.trace.record::<P>(
            self.now,
            TraceEvent::Timer {
                node,
                id,
                timer: &timer,
            },
        );
        self.dispatch(node, |process, ctx| process.on_timer(ctx, id, timer));
    }

    /// Runs one handler of `node` and applies the effects it described.
    fn dispatch(&mut self, node: NodeId, handler: impl FnOnce(&mut P, &mut Ctx<'_, P>)) {
        let slot = &mut self.nodes[node.index()];
        let Some(process) = slot.process.as_mut() else {
            return;
        };
        let mut ctx = Ctx {
            node,
            node_count: self.config.node_count,
            incarnation: slot.incarnation,
            local_now: slot.clock.local(self.now),
            rng: &mut slot.rng,
            effects: &mut self.effects,
            next_timer_id: &mut self.next_timer_id,
            disk: &slot.disk_handle,
            crash_point: slot.crash_armed.then_some(&slot.disk),
        };
        handler(process, &mut ctx);
        self.drain_disk_events(node);
        let slot = &self.nodes[node.index()];
        let died = slot.crash_armed && slot.disk.crash_point_reached();
        // (When the process died inside this handler, `Ctx` kept only the effects from
        // before the crash point: they happen, then the crash.)
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            self.apply_effect(node, effect);
        }
        self.effects = effects;
        if died {
            crate::coverage::hit("fault.crash_point_reached");
            self.crash_node(node);
        }
    }

    fn drain_disk_events(&mut self, node: NodeId) {
        let events = self.nodes[node.index()].disk.take_events();
        for event in &events {
            match event {
                DiskEvent::CrashFile {
                    sectors_torn,
                    sectors_lost,
                    ..
                } => {
                    if *sectors_torn > 0 {
                        crate::coverage::hit("disk.sectors_torn");
                    }
                    if *sectors_lost > 0 {
                        crate::coverage::hit("disk.sectors_lost");
                    }
                }
                DiskEvent::CrashDirOpLost { .. } => crate::coverage::hit("disk.crash_dir_op_lost"),
                _ => {}
            }
            *self
                .stats
                .disk_events
                .entry(event.name().to_string())
                .or_default() += 1;
            self.trace.record::<P>(
                self.now,
                TraceEvent::Disk {
                    node,
                    detail: event,
                },
            );
        }
    }

    fn apply_effect(&mut self, node: NodeId, effect: Effect<P>) {
        match effect {
            Effect::Send { to, msg } => self.send(node, to, msg),
            Effect::SetTimer {
                id,
                after_local,
                timer,
            } => {
                let slot = &self.nodes[node.index()];
                let at = self.now + slot.clock.true_duration(after_local);
                let incarnation = slot.incarnation;
                self.pending_timers.insert(id);
                self.push(
                    at,
                    Event::Timer {
                        node,
                        incarnation,
                        id,
                        timer,
                    },
                );
            }
            Effect::CancelTimer { id } => {
                self.pending_timers.remove(&id);
            }
            Effect::Reply { op, completion } => {
                let invoked_here = self.history.get(op).is_some_and(|o| o.node == node);
                if invoked_here {
                    self.complete(op, completion);
                }
            }
            Effect::Observe { obs } => {
                self.trace
                    .record::<P>(self.now, TraceEvent::Observe { node, obs: &obs });
                self.observations.push(Observed {
                    time: self.now,
                    node,
                    incarnation: self.nodes[node.index()].incarnation,
                    obs,
                });
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: P::Msg) {
        self.next_msg_id += 1;
        let id = MsgId(self.next_msg_id);
        self.stats.messages_sent += 1;
        self.trace.record::<P>(
            self.now,
            TraceEvent::Send {
                from,
                to,
                id,
                msg: &msg,
            },
        );
        match self
            .network
            .route(from, to, self.now, &mut self.network_rng)
        {
            Routing::Dropped(reason) => self.drop_message(from, to, id, reason),
            Routing::Deliver {
                delay,
                duplicate_delay,
            } => {
                if let Some(second) = duplicate_delay {
                    self.stats.messages_duplicated += 1;
                    self.trace
                        .record::<P>(self.now, TraceEvent::Duplicate { from, to, id });
                    let copy = msg.clone();
                    self.push(
                        self.now + second,
                        Event::Deliver {
                            from,
                            to,
                            id,
                            msg: copy,
                        },
                    );
                }
                self.push(self.now + delay, Event::Deliver { from, to, id, msg });
            }
        }
    }

    // ----- node lifecycle -------------------------------------------------------------

    fn start_node(&mut self, node: NodeId) {
        let process = (self.factory)(node);
        let slot = &mut self.nodes[node.index()];
        slot.incarnation += 1;
        slot.status = NodeStatus::Up;
        slot.process = Some(process);
        slot.deferred_timers.clear();
        let incarnation = slot.incarnation;
        let event = if incarnation == 1 {
            TraceEvent::Start { node, incarnation }
        } else {
            TraceEvent::Restart { node, incarnation }
        };
        self.trace.record::<P>(self.now, event);
        self.dispatch(node, |process, ctx| process.on_start(ctx));
    }

    fn crash_node(&mut self, node: NodeId) {
        let slot = &mut self.nodes[node.index()];
        if slot.status == NodeStatus::Crashed {
            return;
        }
        slot.process = None;
        slot.status = NodeStatus::Crashed;
        slot.crash_armed = false;
        slot.deferred_timers.clear();
        slot.disk.crash();
        self.trace.record::<P>(self.now, TraceEvent::Crash { node });
        self.drain_disk_events(node);
        // A client connected to the crashed node sees its connection break: the outcome
        // of its operation is unknown.
        let open: Vec<OpId> = self
            .clients
            .iter()
            .filter_map(|c| c.current)
            .filter(|&op| self.history.get(op).is_some_and(|o| o.node == node))
            .collect();
        for op in open {
            self.complete(op, Completion::Info("node crashed".into()));
        }
    }

    fn apply_fault(&mut self, fault: Fault) {
        let now = self.now;
        // What is recorded in the realised schedule: the fault as applied, with random
        // choices resolved, so that replaying the schedule alone reproduces it.
        let mut realised = fault.clone();
        let applied = match &fault {
            Fault::Crash { node } => {
                let slot = &self.nodes[node.index()];
                let up = slot.status != NodeStatus::Crashed && !slot.crash_armed;
                if up {
                    self.crash_node(*node);
                }
                up
            }
            Fault::CrashInside {
                node,
                after_mutations,
            } => {
                let slot = &mut self.nodes[node.index()];
                let up = slot.status != NodeStatus::Crashed && !slot.crash_armed;
                if up {
                    slot.disk.arm_crash_point(*after_mutations);
                    slot.crash_armed = true;
                    crate::coverage::hit("fault.crash_inside_operation");
                }
                up
            }
            Fault::Restart { node } => {
                if self.nodes[node.index()].crash_armed {
                    // The crash point was never reached: the crash happens now.
                    self.crash_node(*node);
                }
                let down = self.nodes[node.index()].status == NodeStatus::Crashed;
                if down {
                    self.start_node(*node);
                }
                down
            }
            Fault::Pause { node } => {
                let slot = &mut self.nodes[node.index()];
                let up = slot.status == NodeStatus::Up;
                if up {
                    slot.status = NodeStatus::Paused;
                    self.trace
                        .record::<P>(now, TraceEvent::Pause { node: *node });
                }
                up
            }
            Fault::Resume { node } => {
                let paused = self.nodes[node.index()].status == NodeStatus::Paused;
                if paused {
                    self.resume_node(*node);
                }
                paused
            }
            Fault::Partition { shape } => {
                let shape = match shape {
                    PartitionShape::IsolateLeader => match self.leader() {
                        Some(node) => PartitionShape::Isolate { node },
                        None => PartitionShape::IsolateLeader,
                    },
                    other => other.clone(),
                };
                let links = shape.resolve(self.config.node_count, &mut self.nemesis_rng);
                self.network.block(&links);
                realised = Fault::Partition {
                    shape: PartitionShape::Links {
                        links: links.clone(),
                    },
                };
                self.trace.record::<P>(
                    now,
                    TraceEvent::Partition {
                        shape: shape.name(),
                        links: &links,
                    },
                );
                true
            }
            Fault::Heal => {
                self.network.heal();
                self.trace.record::<P>(now, TraceEvent::Heal);
                true
            }
            Fault::Clog {
                from,
                to,
                extra,
                duration,
            } => {
                let until = now + *duration;
                self.network.clog(*from, *to, *extra, until);
                self.trace.record::<P>(
                    now,
                    TraceEvent::Clog {
                        from: *from,
                        to: *to,
                        extra: *extra,
                        until,
                    },
                );
                true
            }
            Fault::Unclog => {
                self.network.unclog_all();
                self.trace.record::<P>(now, TraceEvent::Unclog);
                true
            }
        };
        if applied {
            if matches!(
                fault,
                Fault::Crash { .. }
                    | Fault::CrashInside { .. }
                    | Fault::Pause { .. }
                    | Fault::Partition { .. }
                    | Fault::Clog { .. }
            ) {
                *self.stats.faults.entry(fault.kind()).or_default() += 1;
            }
            self.realised.push(ScheduledFault {
                at: now,
                fault: realised,
            });
        }
    }

    /// The lowest-numbered up node that believes it leads.
    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(_, slot)| {
                slot.status == NodeStatus::Up && slot.process.as_ref().is_some_and(P::is_leader)
            })
            .map(|(i, _)| NodeId(i as u32))
    }

    fn resume_node(&mut self, node: NodeId) {
        let slot = &mut self.nodes[node.index()];
        slot.status = NodeStatus::Up;
        let deferred = std::mem::take(&mut slot.deferred_timers);
        self.trace
            .record::<P>(self.now, TraceEvent::Resume { node });
        let incarnation = slot.incarnation;
        for (id, timer) in deferred {
            self.push(
                self.now,
                Event::Timer {
                    node,
                    incarnation,
                    id,
                    timer,
                },
            );
        }
    }

    fn nodes_down(&self) -> usize {
        self.nodes
            .iter()
            .filter(|s| s.status != NodeStatus::Up || s.crash_armed)
            .count()
    }

    fn nemesis_tick(&mut self) {
        if self.quiet {
            return;
        }
        let Some(nemesis) = self.config.nemesis.clone() else {
            return;
        };
        let next = nemesis.next_interval(&mut self.nemesis_rng);
        self.push(self.now + next, Event::NemesisTick);
        if self.nemesis_kinds.is_empty() {
            return;
        }
        let kind = self.nemesis_kinds[self.nemesis_rng.random_range(0..self.nemesis_kinds.len())];
        let n = self.config.node_count;
        let duration = nemesis.fault_duration(&mut self.nemesis_rng);
        let revert_at = self.now + duration;
        let max_down = nemesis.max_down.unwrap_or((n - 1) / 2);
        match kind {
            FaultKind::Crash | FaultKind::Pause => {
                let candidates: Vec<NodeId> = (0..n as u32)
                    .map(NodeId)
                    .filter(|m| {
                        let slot = &self.nodes[m.index()];
                        slot.status == NodeStatus::Up && !slot.crash_armed
                    })
                    .collect();
                if candidates.is_empty() || self.nodes_down() >= max_down {
                    return;
                }
                let node = match self.leader() {
                    Some(leader) if nemesis.aim_at_leader => leader,
                    _ => candidates[self.nemesis_rng.random_range(0..candidates.len())],
                };
                let (start, revert) = if kind == FaultKind::Crash {
                    // Drawn only when enabled, so other scenarios' draws are unchanged.
                    let p = nemesis.crash_inside_operation;
                    let crash = if p > 0.0 && self.nemesis_rng.random_bool(p) {
                        Fault::CrashInside {
                            node,
                            after_mutations: self
                                .nemesis_rng
                                .random_range(0..=MAX_CRASH_POINT_MUTATIONS),
                        }
                    } else {
                        Fault::Crash { node }
                    };
                    (crash, Fault::Restart { node })
                } else {
                    (Fault::Pause { node }, Fault::Resume { node })
                };
                self.apply_fault(start);
                self.push(revert_at, Event::Fault(revert));
            }
            FaultKind::Partition => {
                if !self.network.blocked_links().is_empty() {
                    return; // one nemesis partition at a time
                }
                let shapes = &nemesis.partition_shapes;
                let shape_kind = shapes[self.nemesis_rng.random_range(0..shapes.len())];
                let shape = pick_partition(shape_kind, n, &mut self.nemesis_rng);
                self.apply_fault(Fault::Partition { shape });
                self.push(revert_at, Event::Fault(Fault::Heal));
            }
            FaultKind::Clog => {
                if n < 2 {
                    return;
                }
                let from = NodeId(self.nemesis_rng.random_range(0..n as u32));
                let mut to = NodeId(self.nemesis_rng.random_range(0..n as u32 - 1));
                if to >= from {
                    to = NodeId(to.0 + 1);
                }
                self.apply_fault(Fault::Clog {
                    from,
                    to,
                    extra: nemesis.clog_delay,
                    duration,
                });
            }
        }
    }

    fn begin_quiet_phase(&mut self) {
        self.quiet = true;
        self.trace.record::<P>(self.now, TraceEvent::QuietPhase);
        self.apply_fault(Fault::Heal);
        self.apply_fault(Fault::Unclog);
        for i in 0..self.nodes.len() {
            let node = NodeId(i as u32);
            match self.nodes[i].status {
                NodeStatus::Crashed => self.apply_fault(Fault::Restart { node }),
                NodeStatus::Paused => self.apply_fault(Fault::Resume { node }),
                NodeStatus::Up => {}
            }
        }
    }

    // ----- clients ---------------------------------------------------------------------

    fn think_time(&mut self) -> SimDuration {
        match &self.config.clients {
            Some(c) => SimDuration(self.client_rng.random_range(c.think_min.0..=c.think_max.0)),
            None => SimDuration::ZERO,
        }
    }

    fn client_invoke(&mut self, client: ClientId) {
        if self.quiet {
            return;
        }
        let Some(config) = self.config.clients.clone() else {
            return;
        };
        if config
            .max_operations
            .is_some_and(|max| self.stats.operations_invoked >= max)
        {
            return;
        }
        let Some(workload) = self.workload.as_mut() else {
            return;
        };
        let n = self.config.node_count as u32;
        let (request, node) = match self.clients[client.0 as usize].retry.clone() {
            // A retry goes to another node, as a new operation.
            Some((request, last, _)) if n > 1 => {
                let mut node = NodeId(self.client_rng.random_range(0..n - 1));
                if node >= last {
                    node = NodeId(node.0 + 1);
                }
                (request, node)
            }
            Some((request, last, _)) => (request, last),
            None => {
                let request = workload.next_request(client, &mut self.client_rng);
                (request, NodeId(self.client_rng.random_range(0..n)))
            }
        };
        let op = OpId(self.history.len() as u64 + 1);
        self.stats.operations_invoked += 1;
        self.trace.record::<P>(
            self.now,
            TraceEvent::Invoke {
                client,
                op,
                node,
                request: &request,
            },
        );
        self.history.operations.push(Operation {
            id: op,
            client,
            node,
            request: request.clone(),
            invoked_at: self.now,
            completion: None,
        });
        self.clients[client.0 as usize].current = Some(op);
        self.push(self.now + config.timeout, Event::ClientTimeout { op });
        match self.nodes[node.index()].status {
            NodeStatus::Up => {
                self.dispatch(node, |process, ctx| process.on_client(ctx, op, request));
            }
            // A client cannot reach a paused node either; it will time out.
            NodeStatus::Paused => {}
            NodeStatus::Crashed => {
                self.complete(op, Completion::Fail("connection refused".into()));
            }
        }
    }

    /// Completes an open operation; a second completion is ignored.
    fn complete(&mut self, op: OpId, completion: Completion<P::Reply>) {
        let now = self.now;
        let Some(operation) = self.history.get_mut(op) else {
            return;
        };
        if operation.completion.is_some() {
            return;
        }
        let (client, node) = (operation.client, operation.node);
        match &completion {
            Completion::Ok(_) => self.stats.operations_ok += 1,
            Completion::Fail(_) => self.stats.operations_failed += 1,
            Completion::Info(_) => self.stats.operations_indeterminate += 1,
        }
        self.trace.record::<P>(
            now,
            TraceEvent::Complete {
                client,
                op,
                node,
                completion: &completion,
            },
        );
        let succeeded = matches!(completion, Completion::Ok(_));
        let request = operation.request.clone();
        if let Some(workload) = self.workload.as_mut() {
            workload.on_completion(client, &request, &completion);
        }
        operation.completion = Some((now, completion));
        let max_retries = self.config.clients.as_ref().map_or(0, |c| c.max_retries);
        let state = &mut self.clients[client.0 as usize];
        if state.current == Some(op) {
            state.current = None;
            let attempts = match &state.retry {
                Some((_, _, attempts)) => attempts + 1,
                None => 1,
            };
            state.retry =
                (!succeeded && attempts <= max_retries).then_some((request, node, attempts));
            let think = self.think_time();
            self.push(now + think, Event::ClientInvoke { client });
        }
    }

    // ----- the end ---------------------------------------------------------------------

    fn finish(mut self, hit_event_limit: bool) -> RunOutput<P> {
        let trace_error = self.trace.finish().err();
        self.stats.trace_events = self.trace.event_count();
        self.stats.operations_indeterminate += self
            .history
            .operations
            .iter()
            .filter(|o| o.completion.is_none())
            .count() as u64;
        let coverage = crate::coverage::end_run(&self.stats);
        RunOutput {
            seed: self.config.seed,
            trace_hash: self.trace.hash(),
            quiet_from: self.quiet_from,
            end_time: self.now,
            node_count: self.config.node_count,
            final_status: self.nodes.iter().map(|s| s.status).collect(),
            final_incarnation: self.nodes.iter().map(|s| s.incarnation).collect(),
            observations: self.observations,
            history: self.history,
            stats: self.stats,
            realised_schedule: self.realised,
            trace_lines: self.trace.take_lines(),
            hit_event_limit,
            trace_error,
            coverage,
        }
    }
}

fn draw_clock(config: &ClockConfig, rng: &mut SimRng) -> NodeClock {
    let offset = config.max_offset.0 as i64;
    let drift = i64::from(config.max_drift_ppm);
    NodeClock::new(
        if offset > 0 {
            rng.random_range(0..=offset)
        } else {
            0
        },
        if drift > 0 {
            rng.random_range(-drift..=drift)
        } else {
            0
        },
    )
}

/// Runs `checkers` over a finished run and collects every violation, in checker order.
pub fn check_all<P: Process>(
    run: &RunOutput<P>,
    checkers: &[Box<dyn crate::checker::Checker<P>>],
) -> Vec<Violation> {
    checkers.iter().flat_map(|c| c.check(run)).collect()
}
