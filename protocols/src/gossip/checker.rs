//! The membership properties, judged from the nodes' observations and the kernel's
//! record of faults (never from a node's private state):
//!
//! `failure_detector` (Das, Gupta and Motivala's terms):
//! - **Completeness**: every member that crashes and stays down for the detection bound
//!   (computed from the configuration, [`Config::detection_bound`]) is marked dead (or
//!   removed) by every member that stayed up throughout, unless a partition, pause or
//!   clog fell in that window.
//! - **Accuracy**: in a loss-only run (no partition, pause or clog), no member declares
//!   dead an incarnation of a member whose process is still up and has not left. In other
//!   runs such declarations are counted (the `false_positives` metric), not failed.
//! - **Convergence**: at the end of the quiet phase every live member sees every other
//!   live member alive at its current incarnation, and every departed one as not alive.
//!
//! `incarnations`:
//! - **Incarnation precedence** (SWIM §4.2): every accepted change of view obeys the
//!   rules (ALIVE{i} over SUSPECT/ALIVE{j} iff i > j; SUSPECT{i} over ALIVE{j} iff i ≥ j,
//!   over SUSPECT{j} iff i > j; DEAD/LEFT{i} over a live state of j ≤ i).
//! - **No resurrection**: no member is seen alive or suspect again at an incarnation at or
//!   below one it was declared dead or departed at.
//! - **Durable incarnations**: no node announces an incarnation number it announced
//!   before, across restarts.

use std::collections::BTreeMap;

use sim_core::fault::Fault;
use sim_core::{Checker, NodeId, NodeStatus, RunOutput, SimDuration, SimTime, Violation};

use super::{Config, Detector, Incarnation, Node, Observation, Source, State};

pub const DETECTOR: &str = "failure_detector";
pub const INCARNATIONS: &str = "incarnations";

fn violation(
    checker: &'static str,
    kind: &str,
    property: &'static str,
    message: String,
    time: Option<SimTime>,
    nodes: Vec<NodeId>,
) -> Violation {
    Violation {
        checker,
        kind: kind.to_string(),
        property,
        message,
        time,
        nodes,
        cites: Vec::new(),
    }
}

/// What the kernel and the observations say about the nodes' lives.
struct Lives {
    /// When the k-th process (1-based) of each node ended (its k-th crash).
    crashes: Vec<Vec<SimTime>>,
    /// Pause intervals per node.
    pauses: Vec<Vec<(SimTime, SimTime)>>,
    /// Partition, clog or pause fault times.
    disturbances: Vec<SimTime>,
    /// Incarnations each node announced: (time, process, incarnation).
    announced: Vec<Vec<(SimTime, u32, Incarnation)>>,
    /// When a process left: (node, process) → time.
    left: BTreeMap<(NodeId, u32), SimTime>,
    /// A process that stopped on a storage failure.
    stopped: BTreeMap<(NodeId, u32), SimTime>,
    end: SimTime,
}

impl Lives {
    fn new(run: &RunOutput<Node>) -> Lives {
        let n = run.node_count;
        let mut lives = Lives {
            crashes: vec![Vec::new(); n],
            pauses: vec![Vec::new(); n],
            disturbances: Vec::new(),
            announced: vec![Vec::new(); n],
            left: BTreeMap::new(),
            stopped: BTreeMap::new(),
            end: run.end_time,
        };
        for s in &run.realised_schedule {
            match &s.fault {
                Fault::Crash { node } => lives.crashes[node.index()].push(s.at),
                // The crash strikes at a later disk write, or at the restart: no
                // detection deadline can be set from the arming time.
                Fault::CrashInside { .. } => lives.disturbances.push(s.at),
                Fault::Pause { node } => {
                    lives.pauses[node.index()].push((s.at, run.end_time));
                    lives.disturbances.push(s.at);
                }
                Fault::Resume { node } => {
                    if let Some(last) = lives.pauses[node.index()].last_mut() {
                        last.1 = s.at;
                    }
                }
                Fault::Partition { .. } | Fault::Clog { .. } => lives.disturbances.push(s.at),
                Fault::Heal | Fault::Unclog => {}
                Fault::Restart { .. } => {}
            }
        }
        for o in &run.observations {
            match &o.obs {
                Observation::Incarnation { incarnation, .. } => {
                    lives.announced[o.node.index()].push((o.time, o.incarnation, *incarnation))
                }
                Observation::Left { .. } => {
                    lives.left.insert((o.node, o.incarnation), o.time);
                }
                Observation::Stopped { .. } => {
                    lives.stopped.insert((o.node, o.incarnation), o.time);
                }
                Observation::View { .. } => {}
            }
        }
        lives
    }

    fn process_end(&self, node: NodeId, process: u32) -> SimTime {
        self.crashes[node.index()]
            .get(process as usize - 1)
            .copied()
            .unwrap_or(self.end)
    }

    fn process_start(&self, node: NodeId, process: u32) -> Option<SimTime> {
        // Process 1 boots at 0; process k starts after crash k-1 (at its announcement).
        if process == 1 {
            return Some(SimTime::ZERO);
        }
        self.announced[node.index()]
            .iter()
            .find(|(_, p, _)| *p == process)
            .map(|(t, _, _)| *t)
    }

    fn paused_at(&self, node: NodeId, t: SimTime) -> bool {
        self.pauses[node.index()]
            .iter()
            .any(|&(a, b)| a <= t && t < b)
    }

    fn disturbed(&self, from: SimTime, to: SimTime) -> bool {
        self.disturbances.iter().any(|&t| from <= t && t <= to)
    }

    fn loss_only(&self) -> bool {
        self.disturbances.is_empty()
    }

    /// Whether the process of `member` that announced `incarnation` was up, not paused
    /// and had not left at `t`.
    fn owner_up(&self, member: NodeId, incarnation: Incarnation, t: SimTime) -> bool {
        let Some(&(announced_at, process, _)) = self.announced[member.index()]
            .iter()
            .find(|(_, _, i)| *i == incarnation)
        else {
            return false;
        };
        announced_at <= t
            && t < self.process_end(member, process)
            && !self.paused_at(member, t)
            && self.left.get(&(member, process)).is_none_or(|&l| t < l)
            && self.stopped.get(&(member, process)).is_none_or(|&s| t < s)
    }
}

/// A view change as observed: (time, observer process, state, incarnation, source).
type ViewLog = Vec<(SimTime, u32, State, Incarnation, Source)>;

/// Every observer's view changes about every member, in order.
fn views(run: &RunOutput<Node>) -> BTreeMap<(NodeId, NodeId), ViewLog> {
    let mut out: BTreeMap<(NodeId, NodeId), ViewLog> = BTreeMap::new();
    for o in &run.observations {
        if let Observation::View {
            member,
            state,
            incarnation,
            source,
        } = &o.obs
        {
            out.entry((o.node, *member)).or_default().push((
                o.time,
                o.incarnation,
                *state,
                *incarnation,
                *source,
            ));
        }
    }
    out
}

/// Measurements of a run: detection times and false positives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measurements {
    /// Crash-to-DEAD delay for every (crash, observer up throughout) pair detected before
    /// the crashed member came back.
    pub detections: Vec<SimDuration>,
    /// Such pairs not detected before the member came back.
    pub undetected: u64,
    /// Local DEAD verdicts on a member whose process was up and had not left.
    pub false_positives: u64,
    /// Local DEAD verdicts in all.
    pub dead_verdicts: u64,
    /// Local suspicions in all.
    pub suspicions: u64,
}

/// Measures detection times and false positives.
pub fn measure(run: &RunOutput<Node>) -> Measurements {
    let lives = Lives::new(run);
    let views = views(run);
    let mut m = Measurements::default();
    for ((_, member), log) in &views {
        for &(t, _, state, inc, source) in log {
            if source != Source::Local {
                continue;
            }
            match state {
                State::Suspect => m.suspicions += 1,
                State::Dead => {
                    m.dead_verdicts += 1;
                    if lives.owner_up(*member, inc, t) {
                        m.false_positives += 1;
                    }
                }
                _ => {}
            }
        }
    }
    for member in (0..run.node_count as u32).map(NodeId) {
        for (k, &crash) in lives.crashes[member.index()].iter().enumerate() {
            let process = k as u32 + 1;
            let Some(inc) = last_announced(&lives, member, process) else {
                continue;
            };
            let back = lives
                .process_start(member, process + 1)
                .unwrap_or(lives.end);
            for observer in (0..run.node_count as u32).map(NodeId) {
                if observer == member {
                    continue;
                }
                let Some(log) = views.get(&(observer, member)) else {
                    continue;
                };
                let Some(q) = process_throughout(&lives, run, observer, crash, back) else {
                    continue;
                };
                let knew = log
                    .iter()
                    .any(|&(t, p, s, _, _)| p == q && t <= crash && !s.is_down());
                if !knew {
                    continue;
                }
                let detected = log.iter().find(|&&(t, p, s, i, _)| {
                    p == q && t >= crash && t < back && s.is_down() && i >= inc
                });
                match detected {
                    Some(&(t, ..)) => m.detections.push(t - crash),
                    None => m.undetected += 1,
                }
            }
        }
    }
    m
}

fn last_announced(lives: &Lives, member: NodeId, process: u32) -> Option<Incarnation> {
    lives.announced[member.index()]
        .iter()
        .filter(|(_, p, _)| *p == process)
        .map(|(_, _, i)| *i)
        .max()
}

/// The observer's process that was up (not paused, not left, not stopped) throughout
/// `[from, to]`, if one was.
fn process_throughout(
    lives: &Lives,
    run: &RunOutput<Node>,
    observer: NodeId,
    from: SimTime,
    to: SimTime,
) -> Option<u32> {
    let processes = run.final_incarnation.get(observer.index()).copied()?;
    (1..=processes).find(|&q| {
        lives.process_start(observer, q).is_some_and(|s| s <= from)
            && lives.process_end(observer, q) > to
            && !lives.pauses[observer.index()]
                .iter()
                .any(|&(a, b)| a <= to && b >= from)
            && lives.left.get(&(observer, q)).is_none_or(|&l| l > to)
            && lives.stopped.get(&(observer, q)).is_none_or(|&s| s > to)
    })
}

/// `p`-th percentile (nearest rank) of sorted durations.
pub fn percentile(sorted: &[SimDuration], p: u64) -> SimDuration {
    if sorted.is_empty() {
        return SimDuration::ZERO;
    }
    let rank = (p * sorted.len() as u64).div_ceil(100).max(1) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Completeness, accuracy and convergence.
#[derive(Debug, Clone)]
pub struct DetectorChecker {
    pub config: Config,
}

impl DetectorChecker {
    fn completeness(
        &self,
        run: &RunOutput<Node>,
        lives: &Lives,
        views: &BTreeMap<(NodeId, NodeId), ViewLog>,
        out: &mut Vec<Violation>,
    ) {
        let bound = self.config.detection_bound(run.node_count);
        for member in (0..run.node_count as u32).map(NodeId) {
            for (k, &crash) in lives.crashes[member.index()].iter().enumerate() {
                let process = k as u32 + 1;
                let deadline = crash + bound;
                let back = lives
                    .process_start(member, process + 1)
                    .unwrap_or(lives.end);
                if back <= deadline || deadline > run.quiet_from {
                    continue;
                }
                if lives.disturbed(SimTime(crash.0.saturating_sub(bound.0)), deadline) {
                    continue;
                }
                if lives.left.contains_key(&(member, process)) {
                    continue;
                }
                let Some(inc) = last_announced(lives, member, process) else {
                    continue;
                };
                let mut missing = Vec::new();
                for observer in (0..run.node_count as u32).map(NodeId) {
                    if observer == member {
                        continue;
                    }
                    let Some(q) = process_throughout(lives, run, observer, crash, deadline) else {
                        continue;
                    };
                    let Some(log) = views.get(&(observer, member)) else {
                        continue;
                    };
                    let last = log.iter().rfind(|&&(t, p, ..)| p == q && t <= deadline);
                    // An observer that never heard of the crashed life (it still holds
                    // the member down from a previous life: the rejoin missed it) has it
                    // out of its group already; one that saw it live must declare this
                    // life dead.
                    let knew_life = log.iter().any(|&(t, p, s, i, _)| {
                        p == q && t <= deadline && !s.is_down() && i >= inc
                    });
                    match last {
                        Some(&(_, _, s, i, _)) if s.is_down() && (i >= inc || !knew_life) => {}
                        Some(&(_, _, s, i, _)) => {
                            missing.push(format!("{observer} sees {s:?}@{i}"))
                        }
                        None => {}
                    }
                }
                if !missing.is_empty() {
                    out.push(violation(
                        DETECTOR,
                        "completeness",
                        "strong completeness: every crashed member is declared dead by every live member within the detection bound",
                        format!(
                            "{member} (incarnation {inc}) crashed at {crash} and stayed down until {back}, \
                             but at {deadline} (bound {bound}) {}",
                            missing.join(", ")
                        ),
                        Some(deadline),
                        vec![member],
                    ));
                }
            }
        }
    }

    fn accuracy(
        &self,
        lives: &Lives,
        views: &BTreeMap<(NodeId, NodeId), ViewLog>,
        out: &mut Vec<Violation>,
    ) {
        if !lives.loss_only() {
            return;
        }
        let mut wrong = Vec::new();
        for ((observer, member), log) in views {
            for &(t, _, state, inc, source) in log {
                if source == Source::Local
                    && state == State::Dead
                    && lives.owner_up(*member, inc, t)
                {
                    wrong.push((t, *observer, *member, inc));
                }
            }
        }
        wrong.sort();
        if let Some(&(t, observer, member, inc)) = wrong.first() {
            out.push(violation(
                DETECTOR,
                "accuracy",
                "accuracy: no live, reachable member is declared dead (loss-only run)",
                format!(
                    "{observer} declared {member} dead at incarnation {inc} at {t}, but {member}'s \
                     process of that incarnation was up{}",
                    if wrong.len() > 1 {
                        format!(" ({} false verdicts in all)", wrong.len())
                    } else {
                        String::new()
                    }
                ),
                Some(t),
                vec![observer, member],
            ));
        }
    }

    fn convergence(
        &self,
        run: &RunOutput<Node>,
        lives: &Lives,
        views: &BTreeMap<(NodeId, NodeId), ViewLog>,
        out: &mut Vec<Violation>,
    ) {
        if run.quiet_from >= run.end_time {
            return;
        }
        // The live members' current processes and what they announced last.
        let mut current: BTreeMap<NodeId, (u32, Option<Incarnation>, bool)> = BTreeMap::new();
        for node in run.live_nodes() {
            let q = run.final_incarnation[node.index()];
            if lives.stopped.contains_key(&(node, q)) {
                continue;
            }
            let left = lives.left.contains_key(&(node, q));
            current.insert(node, (q, last_announced(lives, node, q), left));
        }
        let settle = SimDuration(self.config.suspicion_max(run.node_count).0 * 2);
        let settle_from = SimTime(run.end_time.0.saturating_sub(settle.0));
        let mut wrong = Vec::new();
        for (&observer, &(q, _, observer_left)) in &current {
            if observer_left {
                continue;
            }
            for (&member, &(_, inc, member_left)) in &current {
                if member == observer {
                    continue;
                }
                let view = views.get(&(observer, member)).and_then(|log| {
                    log.iter()
                        .filter(|&&(_, p, ..)| p == q)
                        .map(|&(_, _, s, i, _)| (s, i))
                        .next_back()
                });
                // A refutation still in flight at the very end is no divergence: the
                // view must be live at the incarnation announced a settling time ago.
                let settled =
                    settled_incarnation(lives, member, q_of(&current, member), settle_from);
                let ok = if member_left {
                    !matches!(view, Some((State::Alive | State::Suspect, _)))
                } else {
                    match view {
                        Some((State::Alive, i)) => {
                            Some(i) == inc || settled.is_some_and(|s| i >= s)
                        }
                        Some((State::Suspect, i)) => settled.is_some_and(|s| i >= s),
                        _ => false,
                    }
                };
                if !ok {
                    wrong.push(match view {
                        Some((s, i)) => format!(
                            "{observer} sees {member} {s:?}@{i} (expected {})",
                            expected(member_left, inc)
                        ),
                        None => format!(
                            "{observer} does not know {member} (expected {})",
                            expected(member_left, inc)
                        ),
                    });
                }
            }
        }
        if !wrong.is_empty() {
            let count = wrong.len();
            wrong.truncate(6);
            out.push(violation(
                DETECTOR,
                "convergence",
                "eventual convergence: after the quiet phase every live member sees every live member alive at its current incarnation",
                format!(
                    "at the end: {}{}",
                    wrong.join(", "),
                    if count > 6 {
                        format!(" ({count} wrong views in all)")
                    } else {
                        String::new()
                    }
                ),
                Some(run.end_time),
                Vec::new(),
            ));
        }
    }
}

fn q_of(current: &BTreeMap<NodeId, (u32, Option<Incarnation>, bool)>, node: NodeId) -> u32 {
    current.get(&node).map_or(0, |c| c.0)
}

/// The highest incarnation `member`'s process `q` announced before `by` (its first one if
/// it started later).
fn settled_incarnation(lives: &Lives, member: NodeId, q: u32, by: SimTime) -> Option<Incarnation> {
    let mine = || {
        lives.announced[member.index()]
            .iter()
            .filter(|&&(_, p, _)| p == q)
    };
    mine()
        .filter(|&&(t, _, _)| t <= by)
        .map(|&(_, _, i)| i)
        .max()
        .or_else(|| mine().map(|&(_, _, i)| i).next())
}

fn expected(left: bool, inc: Option<Incarnation>) -> String {
    match (left, inc) {
        (true, _) => "not alive: it left".into(),
        (false, Some(i)) => format!("Alive@{i}"),
        (false, None) => "alive".into(),
    }
}

impl Checker<Node> for DetectorChecker {
    fn name(&self) -> &'static str {
        DETECTOR
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let lives = Lives::new(run);
        let views = views(run);
        let mut out = Vec::new();
        self.completeness(run, &lives, &views, &mut out);
        self.accuracy(&lives, &views, &mut out);
        self.convergence(run, &lives, &views, &mut out);
        out
    }
}

/// Precedence, no resurrection and durable incarnations.
#[derive(Debug, Clone)]
pub struct IncarnationChecker {
    pub detector: Detector,
}

impl IncarnationChecker {
    fn durable(&self, run: &RunOutput<Node>, out: &mut Vec<Violation>) {
        let mut highest: BTreeMap<NodeId, (Incarnation, SimTime, u32)> = BTreeMap::new();
        let mut reported = Vec::new();
        for o in &run.observations {
            let Observation::Incarnation { incarnation, .. } = &o.obs else {
                continue;
            };
            if let Some(&(before, at, p)) = highest.get(&o.node)
                && *incarnation <= before
                && !reported.contains(&o.node)
            {
                reported.push(o.node);
                out.push(violation(
                    INCARNATIONS,
                    "incarnation_reused",
                    "durable incarnations: a member never announces an incarnation number twice",
                    format!(
                        "{} announced incarnation {before} at {at} (process {p}) and {incarnation} at {} (process {})",
                        o.node, o.time, o.incarnation
                    ),
                    Some(o.time),
                    vec![o.node],
                ));
            }
            let e = highest
                .entry(o.node)
                .or_insert((*incarnation, o.time, o.incarnation));
            if *incarnation > e.0 {
                *e = (*incarnation, o.time, o.incarnation);
            }
        }
    }

    fn transitions(&self, run: &RunOutput<Node>, out: &mut Vec<Violation>) {
        // Per (observer process, member): the current view and the highest incarnation
        // it was declared down at.
        type Key = (NodeId, u32, NodeId);
        let mut state: BTreeMap<Key, ((State, Incarnation), Option<Incarnation>)> = BTreeMap::new();
        let mut precedence: Option<Violation> = None;
        let mut resurrection: Option<Violation> = None;
        for o in &run.observations {
            let Observation::View {
                member,
                state: to,
                incarnation: i,
                ..
            } = &o.obs
            else {
                continue;
            };
            let key = (o.node, o.incarnation, *member);
            let (to, i) = (*to, *i);
            if let Some(&((from, j), down)) = state.get(&key) {
                if let Some(d) = down
                    && matches!(to, State::Alive | State::Suspect)
                    && i <= d
                    && resurrection.is_none()
                {
                    resurrection = Some(violation(
                        INCARNATIONS,
                        "resurrection",
                        "no resurrection: a member declared dead is revived only by a higher incarnation",
                        format!(
                            "{} saw {member} {to:?}@{i} at {} after declaring it down at incarnation {d}",
                            o.node, o.time
                        ),
                        Some(o.time),
                        vec![o.node, *member],
                    ));
                }
                let ok = match (from, to) {
                    (_, State::Removed) => from.is_down() && i == j,
                    (f, _) if f.is_down() => i > j || !matches!(to, State::Alive | State::Suspect),
                    (_, State::Dead | State::Left) => i >= j,
                    (_, _) if self.detector == Detector::Baseline => true,
                    (State::Alive, State::Alive) | (State::Suspect, State::Alive) => i > j,
                    (State::Alive, State::Suspect) => i >= j,
                    (State::Suspect, State::Suspect) => i > j,
                    _ => true,
                };
                if !ok && precedence.is_none() && !(from.is_down() && i <= j) {
                    precedence = Some(violation(
                        INCARNATIONS,
                        "precedence",
                        "incarnation precedence (SWIM §4.2): an update overrides a view only as the rules allow",
                        format!(
                            "{} changed its view of {member} from {from:?}@{j} to {to:?}@{i} at {}",
                            o.node, o.time
                        ),
                        Some(o.time),
                        vec![o.node, *member],
                    ));
                }
            }
            let entry = state.entry(key).or_insert(((to, i), None));
            entry.0 = (to, i);
            if to.is_down() {
                entry.1 = Some(entry.1.map_or(i, |d| d.max(i)));
            }
        }
        out.extend(resurrection);
        out.extend(precedence);
    }
}

impl Checker<Node> for IncarnationChecker {
    fn name(&self) -> &'static str {
        INCARNATIONS
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = Vec::new();
        self.durable(run, &mut out);
        self.transitions(run, &mut out);
        out
    }
}

/// Whether every live node was up at the end (used by tests).
pub fn all_up(run: &RunOutput<Node>) -> bool {
    run.final_status.iter().all(|s| *s == NodeStatus::Up)
}
