//! The bully election's properties, judged from the nodes' observations and the kernel's
//! record of crashes and pauses (never from a node's private state):
//!
//! - **Eventual leader agreement** (Garcia-Molina's Assertion 2, the bully algorithm's
//!   termination): at the end of the quiet phase every live member names the same
//!   leader, and it is the highest live member.
//! - **Term monotonicity**: a member's term never decreases, across restarts too.
//! - **Election safety** (majority mode): at most one leader acts in a term.
//! - **No split brain** (majority mode): at no time do two members act as leader.
//!   In classic mode the *split-brain time* is measured and reported; a scenario that is
//!   synchronous may bound it (Garcia-Molina's Assertion 1: one coordinator at a time).
//! - **Fencing-token safety** (Kleppmann's fencing tokens): the resource never accepts a
//!   write whose token is lower than one it accepted before.
//!
//! A member *acts as leader* from its `Leading` observation until its `SteppedDown`, its
//! crash or the end of the run; time it spends paused does not count (it cannot act).

use std::collections::BTreeMap;

use sim_core::fault::Fault;
use sim_core::{Checker, NodeId, RunOutput, SimDuration, SimTime, Violation};

use super::{Mode, Node, Observation, Term, Token};

pub const ELECTION: &str = "bully_election";
pub const FENCING: &str = "fencing";

/// An interval during which one member acted as leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub node: NodeId,
    pub token: Token,
    pub from: SimTime,
    pub until: SimTime,
}

/// Leaderships and how long two or more of them overlapped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitBrain {
    /// Every stretch of acting as leader, pauses cut out.
    pub leaderships: Vec<Leadership>,
    /// Total time with two or more members acting as leader.
    pub total: SimDuration,
    /// The first two leaderships that overlapped, and when the overlap began.
    pub first: Option<(Leadership, Leadership, SimTime)>,
}

/// Computes the leaderships of a run and their overlap.
pub fn split_brain(run: &RunOutput<Node>) -> SplitBrain {
    // When each incarnation ended (the k-th crash of a node ends its incarnation k), and
    // when each node was paused.
    let mut crashes: BTreeMap<NodeId, Vec<SimTime>> = BTreeMap::new();
    let mut pauses: BTreeMap<NodeId, Vec<(SimTime, SimTime)>> = BTreeMap::new();
    for s in &run.realised_schedule {
        match &s.fault {
            Fault::Crash { node } => crashes.entry(*node).or_default().push(s.at),
            Fault::Pause { node } => pauses.entry(*node).or_default().push((s.at, run.end_time)),
            Fault::Resume { node } => {
                if let Some(last) = pauses.get_mut(node).and_then(|p| p.last_mut()) {
                    last.1 = s.at;
                }
            }
            _ => {}
        }
    }
    let incarnation_end = |node: NodeId, incarnation: u32| -> SimTime {
        crashes
            .get(&node)
            .and_then(|c| c.get(incarnation as usize - 1))
            .copied()
            .unwrap_or(run.end_time)
    };
    let mut raw = Vec::new();
    let mut open: BTreeMap<(NodeId, u32), (Token, SimTime)> = BTreeMap::new();
    for o in &run.observations {
        let key = (o.node, o.incarnation);
        match &o.obs {
            Observation::Leading { token } => {
                open.entry(key).or_insert((*token, o.time));
            }
            Observation::SteppedDown { .. } => {
                if let Some((token, from)) = open.remove(&key) {
                    raw.push((o.node, token, from, o.time));
                }
            }
            _ => {}
        }
    }
    for ((node, incarnation), (token, from)) in open {
        raw.push((node, token, from, incarnation_end(node, incarnation)));
    }
    // Cut out the pauses.
    let mut leaderships = Vec::new();
    for (node, token, from, until) in raw {
        let mut pieces = vec![(from, until)];
        for &(p0, p1) in pauses.get(&node).map(Vec::as_slice).unwrap_or(&[]) {
            pieces = pieces
                .into_iter()
                .flat_map(|(a, b)| {
                    let mut out = Vec::new();
                    if p1 <= a || p0 >= b {
                        out.push((a, b));
                    } else {
                        if a < p0 {
                            out.push((a, p0));
                        }
                        if p1 < b {
                            out.push((p1, b));
                        }
                    }
                    out
                })
                .collect();
        }
        for (a, b) in pieces {
            if a < b {
                leaderships.push(Leadership {
                    node,
                    token,
                    from: a,
                    until: b,
                });
            }
        }
    }
    leaderships.sort_by_key(|l| (l.from, l.node, l.until));
    // Sweep: ends before starts at one instant, so touching stretches do not overlap.
    let mut edges: Vec<(SimTime, i32)> = Vec::new();
    for l in &leaderships {
        edges.push((l.from, 1));
        edges.push((l.until, -1));
    }
    edges.sort();
    let (mut active, mut total, mut last) = (0i32, 0u64, SimTime::ZERO);
    for (time, delta) in edges {
        if active >= 2 {
            total += time.0 - last.0;
        }
        active += delta;
        last = time;
    }
    let mut first: Option<(Leadership, Leadership, SimTime)> = None;
    for (i, a) in leaderships.iter().enumerate() {
        for b in &leaderships[i + 1..] {
            if b.from >= a.until {
                continue;
            }
            let since = a.from.max(b.from);
            if a.node != b.node && first.is_none_or(|(_, _, t)| since < t) {
                first = Some((*a, *b, since));
            }
        }
    }
    SplitBrain {
        leaderships,
        total: SimDuration(total),
        first,
    }
}

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

/// Agreement, term monotonicity, election safety and split brain.
#[derive(Debug, Clone)]
pub struct ElectionChecker {
    pub mode: Mode,
    /// The election members (every node but the resource).
    pub members: Vec<NodeId>,
    /// Classic mode: the split-brain time this scenario tolerates (`None`: measured only).
    pub max_split_brain: Option<SimDuration>,
}

impl ElectionChecker {
    fn agreement(&self, run: &RunOutput<Node>, out: &mut Vec<Violation>) {
        let live: Vec<NodeId> = run
            .live_nodes()
            .filter(|n| self.members.contains(n))
            .collect();
        let Some(&highest) = live.iter().max() else {
            return;
        };
        let mut views: BTreeMap<NodeId, (Option<NodeId>, Term)> =
            live.iter().map(|&n| (n, (None, 0))).collect();
        for o in &run.observations {
            if let Observation::Leader { term, leader } = &o.obs
                && run.final_incarnation.get(o.node.index()) == Some(&o.incarnation)
                && let Some(view) = views.get_mut(&o.node)
            {
                *view = (*leader, *term);
            }
        }
        let wrong: Vec<String> = views
            .iter()
            .filter(|(_, (leader, _))| *leader != Some(highest))
            .map(|(node, (leader, term))| match leader {
                Some(l) => format!("{node} names {l} (term {term})"),
                None => format!("{node} names no leader"),
            })
            .collect();
        if !wrong.is_empty() {
            out.push(violation(
                ELECTION,
                "leader_agreement",
                "eventual agreement on the highest live member (bully termination, Garcia-Molina's Assertion 2)",
                format!(
                    "at the end of the quiet phase the highest live member is {highest}, but {}",
                    wrong.join(", ")
                ),
                Some(run.end_time),
                views
                    .iter()
                    .filter(|(_, (l, _))| *l != Some(highest))
                    .map(|(n, _)| *n)
                    .collect(),
            ));
        }
    }

    fn monotonic_terms(&self, run: &RunOutput<Node>, out: &mut Vec<Violation>) {
        let mut last: BTreeMap<NodeId, (Term, SimTime, u32)> = BTreeMap::new();
        let mut reported: Vec<NodeId> = Vec::new();
        for o in &run.observations {
            let term = match &o.obs {
                Observation::Recovered { term } | Observation::Term { term } => *term,
                _ => continue,
            };
            if let Some(&(before, at, incarnation)) = last.get(&o.node)
                && term < before
                && !reported.contains(&o.node)
            {
                reported.push(o.node);
                out.push(violation(
                    ELECTION,
                    "term_regression",
                    "terms never decrease (durable, monotonic terms)",
                    format!(
                        "{} had term {before} at {at} (incarnation {incarnation}) and term {term} \
                         at {} (incarnation {})",
                        o.node, o.time, o.incarnation
                    ),
                    Some(o.time),
                    vec![o.node],
                ));
            }
            let entry = last.entry(o.node).or_insert((term, o.time, o.incarnation));
            if term >= entry.0 {
                *entry = (term, o.time, o.incarnation);
            }
        }
    }

    fn election_safety(&self, run: &RunOutput<Node>, out: &mut Vec<Violation>) {
        let mut leaders: BTreeMap<Term, (NodeId, SimTime)> = BTreeMap::new();
        for o in &run.observations {
            let Observation::Leading { token } = &o.obs else {
                continue;
            };
            match leaders.get(&token.term) {
                Some(&(other, at)) if other != o.node => out.push(violation(
                    ELECTION,
                    "election_safety",
                    "election safety: at most one leader per term",
                    format!(
                        "{other} (from {at}) and {} (from {}) both acted as leader of term {}",
                        o.node, o.time, token.term
                    ),
                    Some(o.time),
                    vec![other, o.node],
                )),
                Some(_) => {}
                None => {
                    leaders.insert(token.term, (o.node, o.time));
                }
            }
        }
    }

    fn split_brain(&self, run: &RunOutput<Node>, out: &mut Vec<Violation>) {
        let (bound, property) = match (self.mode, self.max_split_brain) {
            (Mode::Majority, _) => (
                SimDuration::ZERO,
                "no split brain: at most one member acts as leader at any time",
            ),
            (Mode::Classic, Some(bound)) => (
                bound,
                "one coordinator at a time under synchrony (Garcia-Molina's Assertion 1)",
            ),
            (Mode::Classic, None) => return,
        };
        let measured = split_brain(run);
        if measured.total <= bound {
            return;
        }
        let Some((a, b, since)) = measured.first else {
            return;
        };
        out.push(violation(
            ELECTION,
            "split_brain",
            property,
            format!(
                "two members acted as leader for {} in all (allowed: {bound}); first {} (token {}, \
                 {}..{}) and {} (token {}, {}..{}) from {since}",
                measured.total, a.node, a.token, a.from, a.until, b.node, b.token, b.from, b.until
            ),
            Some(since),
            vec![a.node, b.node],
        ));
    }
}

impl Checker<Node> for ElectionChecker {
    fn name(&self) -> &'static str {
        ELECTION
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = Vec::new();
        self.monotonic_terms(run, &mut out);
        if self.mode == Mode::Majority {
            self.election_safety(run, &mut out);
        }
        self.split_brain(run, &mut out);
        self.agreement(run, &mut out);
        out
    }
}

/// Fencing-token safety at the resource.
#[derive(Debug, Clone, Copy, Default)]
pub struct FencingChecker;

impl Checker<Node> for FencingChecker {
    fn name(&self) -> &'static str {
        FENCING
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut highest: Option<(Token, SimTime)> = None;
        let mut stale: Vec<(NodeId, Token, SimTime, Token, SimTime)> = Vec::new();
        for o in &run.observations {
            let Observation::WriteAccepted { token, .. } = &o.obs else {
                continue;
            };
            match highest {
                Some((h, at)) if *token < h => stale.push((o.node, *token, o.time, h, at)),
                Some((h, _)) if *token == h => {}
                _ => highest = Some((*token, o.time)),
            }
        }
        let Some(&(resource, token, time, before, at)) = stale.first() else {
            return Vec::new();
        };
        vec![violation(
            FENCING,
            "stale_write_accepted",
            "fencing-token safety: no write with a stale token is accepted",
            format!(
                "{resource} accepted a write of {} with token {token} at {time} after accepting \
                 token {before} at {at}{}",
                token.leader,
                if stale.len() > 1 {
                    format!(" ({} stale writes accepted in all)", stale.len())
                } else {
                    String::new()
                }
            ),
            Some(time),
            vec![resource, token.leader],
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::fault::ScheduledFault;
    use sim_core::history::History;
    use sim_core::{NodeStatus, Observed, RunStats};

    const N: usize = 4;

    fn run(observations: Vec<(u64, u32, u32, Observation)>) -> RunOutput<Node> {
        run_with(observations, Vec::new())
    }

    fn run_with(
        observations: Vec<(u64, u32, u32, Observation)>,
        schedule: Vec<(u64, Fault)>,
    ) -> RunOutput<Node> {
        let mut final_incarnation = vec![1; N];
        for (_, node, incarnation, _) in &observations {
            let slot = &mut final_incarnation[*node as usize];
            *slot = (*slot).max(*incarnation);
        }
        RunOutput {
            seed: 0,
            trace_hash: 0,
            quiet_from: SimTime(1_000),
            end_time: SimTime(2_000),
            node_count: N,
            final_status: vec![NodeStatus::Up; N],
            final_incarnation,
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
            realised_schedule: schedule
                .into_iter()
                .map(|(at, fault)| ScheduledFault {
                    at: SimTime(at),
                    fault,
                })
                .collect(),
            trace_lines: Vec::new(),
            hit_event_limit: false,
            trace_error: None,
            coverage: Default::default(),
        }
    }

    fn token(term: Term, leader: u32) -> Token {
        Token {
            term,
            leader: NodeId(leader),
        }
    }

    fn leading(term: Term, leader: u32) -> Observation {
        Observation::Leading {
            token: token(term, leader),
        }
    }

    fn stepped_down(term: Term, leader: u32) -> Observation {
        Observation::SteppedDown {
            token: token(term, leader),
            reason: super::super::StepDown::NewerTerm,
        }
    }

    fn view(term: Term, leader: u32) -> Observation {
        Observation::Leader {
            term,
            leader: Some(NodeId(leader)),
        }
    }

    /// Node 0 is the resource; members 1..=3, and everyone names 3 at the end.
    fn agreed() -> Vec<(u64, u32, u32, Observation)> {
        vec![
            (10, 1, 1, view(1, 3)),
            (10, 2, 1, view(1, 3)),
            (10, 3, 1, view(1, 3)),
        ]
    }

    fn checker(mode: Mode, max_split_brain: Option<SimDuration>) -> ElectionChecker {
        ElectionChecker {
            mode,
            members: vec![NodeId(1), NodeId(2), NodeId(3)],
            max_split_brain,
        }
    }

    fn kinds(c: &dyn Checker<Node>, r: &RunOutput<Node>) -> Vec<String> {
        c.check(r).into_iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_healthy_run_passes() {
        let mut obs = agreed();
        obs.push((5, 3, 1, leading(1, 3)));
        let r = run(obs);
        assert!(kinds(&checker(Mode::Majority, None), &r).is_empty());
        assert!(kinds(&checker(Mode::Classic, Some(SimDuration::ZERO)), &r).is_empty());
    }

    #[test]
    fn a_member_naming_a_lower_leader_breaks_agreement() {
        let mut obs = agreed();
        obs.push((20, 3, 1, view(2, 2)));
        let violations = checker(Mode::Classic, None).check(&run(obs));
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].kind, "leader_agreement");
        assert!(
            violations[0].message.contains("n3 names n2"),
            "{}",
            violations[0].message
        );
        // A view from an earlier incarnation does not count: the restarted node knows none.
        let mut obs = agreed();
        obs.push((30, 2, 2, Observation::Recovered { term: 1 }));
        let violations = checker(Mode::Classic, None).check(&run(obs));
        assert!(violations[0].message.contains("n2 names no leader"));
    }

    #[test]
    fn a_term_going_back_breaks_monotonicity_even_across_restarts() {
        let mut obs = agreed();
        obs.extend([
            (1, 1, 1, Observation::Term { term: 4 }),
            (2, 1, 2, Observation::Recovered { term: 3 }),
            (3, 1, 2, view(4, 3)),
        ]);
        assert_eq!(
            kinds(&checker(Mode::Classic, None), &run(obs)),
            vec!["term_regression"]
        );
        let mut obs = agreed();
        obs.extend([
            (1, 1, 1, Observation::Term { term: 4 }),
            (2, 1, 2, Observation::Recovered { term: 4 }),
            (3, 1, 2, Observation::Term { term: 5 }),
            (4, 1, 2, view(5, 3)),
        ]);
        assert!(kinds(&checker(Mode::Classic, None), &run(obs)).is_empty());
    }

    #[test]
    fn two_leaders_of_one_term_break_election_safety_in_majority_mode() {
        let mut obs = agreed();
        obs.extend([
            (1, 2, 1, leading(5, 2)),
            (2, 2, 1, stepped_down(5, 2)),
            (3, 3, 1, leading(5, 3)),
        ]);
        assert_eq!(
            kinds(&checker(Mode::Majority, None), &run(obs.clone())),
            vec!["election_safety"]
        );
        // Classic mode does not promise it (fencing tokens tell the two apart).
        assert!(kinds(&checker(Mode::Classic, None), &run(obs)).is_empty());
    }

    #[test]
    fn overlapping_leaders_are_split_brain() {
        let mut obs = agreed();
        obs.extend([
            (100, 2, 1, leading(1, 2)),
            (300, 3, 1, leading(2, 3)),
            (350, 2, 1, stepped_down(1, 2)),
        ]);
        let r = run(obs);
        let measured = split_brain(&r);
        assert_eq!(measured.total, SimDuration(50));
        let violations = checker(Mode::Majority, None).check(&r);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].kind, "split_brain");
        assert_eq!(violations[0].time, Some(SimTime(300)));
        assert_eq!(violations[0].nodes, vec![NodeId(2), NodeId(3)]);
        // Classic mode only measures, unless the scenario bounds it.
        assert!(kinds(&checker(Mode::Classic, None), &r).is_empty());
        assert!(kinds(&checker(Mode::Classic, Some(SimDuration(50))), &r).is_empty());
        assert_eq!(
            kinds(&checker(Mode::Classic, Some(SimDuration(49))), &r),
            vec!["split_brain"]
        );
    }

    #[test]
    fn a_crash_ends_leadership_and_a_pause_suspends_it() {
        let mut obs = agreed();
        obs.extend([(100, 2, 1, leading(1, 2)), (300, 3, 1, leading(2, 3))]);
        // n2 crashes at 200: no overlap with n3 from 300.
        let r = run_with(obs.clone(), vec![(200, Fault::Crash { node: NodeId(2) })]);
        assert_eq!(split_brain(&r).total, SimDuration::ZERO);
        // n2 is paused 250..400 and acts again from 400 until the end (2000).
        let r = run_with(
            obs,
            vec![
                (250, Fault::Pause { node: NodeId(2) }),
                (400, Fault::Resume { node: NodeId(2) }),
            ],
        );
        assert_eq!(split_brain(&r).total, SimDuration(1_600));
    }

    #[test]
    fn a_stale_token_accepted_breaks_fencing() {
        let accepted = |t, term, leader| {
            (
                t,
                0,
                1,
                Observation::WriteAccepted {
                    token: token(term, leader),
                    seq: t,
                },
            )
        };
        let ok = run(vec![
            accepted(1, 1, 2),
            accepted(2, 1, 2),
            accepted(3, 2, 3),
        ]);
        assert!(kinds(&FencingChecker, &ok).is_empty());
        let bad = run(vec![
            accepted(1, 2, 3),
            accepted(2, 1, 2),
            accepted(3, 2, 1),
        ]);
        let violations = FencingChecker.check(&bad);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].kind, "stale_write_accepted");
        assert!(violations[0].message.contains("2 stale writes"));
        // Across a restart of the resource, too (its incarnation does not matter).
        let bad = run(vec![
            accepted(1, 2, 3),
            (2, 0, 2, Observation::ResourceRecovered { highest: None }),
            (
                3,
                0,
                2,
                Observation::WriteAccepted {
                    token: token(1, 2),
                    seq: 3,
                },
            ),
        ]);
        assert_eq!(kinds(&FencingChecker, &bad), vec!["stale_write_accepted"]);
    }
}
