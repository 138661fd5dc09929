//! Checkers of multi-leader replication, from observations and client histories only.
//!
//! - [`ConvergenceChecker`] — *strong eventual consistency*: after the quiet phase every
//!   live replica reports the same value for every key; and *at-most-once application*:
//!   no node applies a change `(origin, seq)` twice, across its restarts too.
//! - [`SpecificationChecker`] — each converged value matches its type's specification
//!   over the acknowledged (`ok`) and unknown (`info`, open) operations of the history:
//!   a counter lies within the range its acknowledged and unknown increments and
//!   decrements allow; an LWW register holds the write with the maximal (clock, node)
//!   stamp; a multi-value register holds exactly the maximal antichain of writes; an
//!   OR-set is add-wins (an add survives every remove that did not observe it, and no
//!   observed-and-removed add survives); a custom-merge register holds the maximal
//!   antichain like a multi-value register and reads as the key space's function over
//!   it; and no dot is ever used twice.
//! - [`ConflictChecker`] — conflict records: each resolves as its strategy says (LWW
//!   keeps the greater stamp, a custom merge reads as its function over the concurrent
//!   values); every replicated LWW write applied at a replica that already held a
//!   write of the key has a conflict record there; and every replica whose converged
//!   custom-merge value holds concurrent writes recorded the conflict that produced
//!   exactly that set.

use std::collections::{BTreeMap, BTreeSet};

use sim_core::history::Operation;
use sim_core::{Checker, Completion, NodeId, RunOutput, SimTime, Violation};

use super::crdt::{CustomMerge, Dot, KeySpaces, MergeFn, Value, ValueType};
use super::{Node, Observation, Op, Reply, Resolution};

pub const CONVERGENCE: &str = "multi_leader_convergence";
pub const SPECIFICATION: &str = "multi_leader_specification";
pub const CONFLICTS: &str = "multi_leader_conflict_records";

const SEC: &str = "strong eventual consistency";
const ONCE: &str = "each change applied at most once per replica";

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
        kind: kind.into(),
        property,
        message,
        time,
        nodes,
        cites: Vec::new(),
    }
}

/// Each settled live node's final values.
pub type FinalStates<'a> = BTreeMap<NodeId, &'a BTreeMap<String, Value>>;

/// Each live node's last snapshot of its final incarnation, if it reported one after its
/// last change; the nodes that did not settle are the `Err` list.
pub fn final_states(run: &RunOutput<Node>) -> (FinalStates<'_>, Vec<(NodeId, &'static str)>) {
    let mut states = BTreeMap::new();
    let mut unsettled = Vec::new();
    for node in run.live_nodes() {
        let incarnation = run.final_incarnation[node.index()];
        let mut last_snapshot = None;
        let mut changed_after = false;
        for o in run
            .observations
            .iter()
            .filter(|o| o.node == node && o.incarnation == incarnation)
        {
            match &o.obs {
                Observation::Snapshot { values } => {
                    last_snapshot = Some(values);
                    changed_after = false;
                }
                Observation::LocalWrite { .. } | Observation::Applied { .. } => {
                    changed_after = true;
                }
                _ => {}
            }
        }
        match last_snapshot {
            Some(values) if !changed_after => {
                states.insert(node, values);
            }
            Some(_) => unsettled.push((node, "changed after its last snapshot")),
            None => unsettled.push((node, "reported no snapshot")),
        }
    }
    (states, unsettled)
}

/// The time of the last change applied anywhere (the moment the replicas converged).
pub fn last_change(run: &RunOutput<Node>) -> Option<SimTime> {
    run.observations
        .iter()
        .filter(|o| {
            matches!(
                o.obs,
                Observation::Applied { .. } | Observation::LocalWrite { .. }
            )
        })
        .map(|o| o.time)
        .max()
}

fn value_or_bottom<'a>(
    values: &'a BTreeMap<String, Value>,
    key: &str,
    bottom: &'a Value,
) -> &'a Value {
    values.get(key).unwrap_or(bottom)
}

/// Strong eventual consistency and at-most-once application.
#[derive(Debug, Clone, Default)]
pub struct ConvergenceChecker {
    /// The run's key spaces (custom-merge ones included).
    pub spaces: KeySpaces,
}

impl Checker<Node> for ConvergenceChecker {
    fn name(&self) -> &'static str {
        CONVERGENCE
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = Vec::new();
        // At most once: (node, origin, seq) over every incarnation.
        let mut seen: BTreeSet<(NodeId, u32, u64)> = BTreeSet::new();
        for o in &run.observations {
            let id = match &o.obs {
                Observation::Applied { origin, seq, .. } => (o.node, *origin, *seq),
                Observation::LocalWrite { seq, .. } => (o.node, o.node.0, *seq),
                _ => continue,
            };
            if !seen.insert(id) {
                out.push(violation(
                    CONVERGENCE,
                    "applied_twice",
                    ONCE,
                    format!("{} applied change ({}, {}) a second time", id.0, id.1, id.2),
                    Some(o.time),
                    vec![o.node],
                ));
            }
        }
        let (states, unsettled) = final_states(run);
        for (node, why) in unsettled {
            out.push(violation(
                CONVERGENCE,
                "not_settled",
                SEC,
                format!("{node} {why} by the end of the quiet phase"),
                None,
                vec![node],
            ));
        }
        let keys: BTreeSet<&String> = states.values().flat_map(|s| s.keys()).collect();
        for key in keys {
            let Some(kind) = self.spaces.kind_of(key) else {
                continue;
            };
            let bottom = kind.bottom();
            let mut distinct: Vec<(&Value, Vec<NodeId>)> = Vec::new();
            for (&node, values) in &states {
                let v = value_or_bottom(values, key, &bottom);
                match distinct.iter_mut().find(|(d, _)| *d == v) {
                    Some((_, nodes)) => nodes.push(node),
                    None => distinct.push((v, vec![node])),
                }
            }
            if distinct.len() > 1 {
                // Values that read alike differ in their metadata: show it all then.
                let renders: BTreeSet<String> = distinct.iter().map(|(v, _)| v.render()).collect();
                let detail: Vec<String> = distinct
                    .iter()
                    .map(|(v, nodes)| {
                        let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
                        let shown = if renders.len() == distinct.len() {
                            v.render()
                        } else {
                            format!("{v:?}")
                        };
                        format!("{shown} on {}", names.join(","))
                    })
                    .collect();
                out.push(violation(
                    CONVERGENCE,
                    "diverged",
                    SEC,
                    format!(
                        "after the quiet phase replicas of {key} differ: {}",
                        detail.join("; ")
                    ),
                    None,
                    distinct.iter().flat_map(|(_, n)| n.clone()).collect(),
                ));
            }
        }
        out
    }
}

/// Each converged value against its type's specification.
#[derive(Debug, Clone, Default)]
pub struct SpecificationChecker {
    /// The run's key spaces (custom-merge ones included).
    pub spaces: KeySpaces,
}

/// The operations on one key, split by outcome.
struct KeyHistory<'a> {
    ok: Vec<(&'a Operation<Node>, &'a Reply)>,
    unknown: Vec<&'a Operation<Node>>,
}

fn by_key(run: &RunOutput<Node>) -> BTreeMap<&str, KeyHistory<'_>> {
    let mut out: BTreeMap<&str, KeyHistory<'_>> = BTreeMap::new();
    for op in &run.history.operations {
        let entry = out.entry(op.request.key()).or_insert_with(|| KeyHistory {
            ok: Vec::new(),
            unknown: Vec::new(),
        });
        match &op.completion {
            Some((_, Completion::Ok(reply))) => entry.ok.push((op, reply)),
            Some((_, Completion::Fail(_))) => {}
            _ => entry.unknown.push(op),
        }
    }
    out
}

/// When an operation stopped being able to take effect (its completion, or never).
fn settled_at(op: &Operation<Node>) -> SimTime {
    match &op.completion {
        Some((t, _)) => *t,
        None => SimTime(u64::MAX),
    }
}

impl Checker<Node> for SpecificationChecker {
    fn name(&self) -> &'static str {
        SPECIFICATION
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let (states, _) = final_states(run);
        let histories = by_key(run);
        let mut out: Vec<Violation> = Vec::new();
        // Every LWW conflict was resolved for the greater (clock, node) stamp.
        if let Some((o, key, kept, discarded)) =
            run.observations.iter().find_map(|o| match &o.obs {
                Observation::Conflict(record) => match &record.resolution {
                    Resolution::Kept {
                        kept: (kept, _),
                        discarded: (discarded, _),
                    } if kept < discarded => Some((o, &record.key, kept, discarded)),
                    _ => None,
                },
                _ => None,
            })
        {
            out.push(violation(
                SPECIFICATION,
                "lww_conflict_misresolved",
                "LWW register holds the write with the maximal (clock, node)",
                format!("{}: {key} kept {kept} over the greater {discarded}", o.node),
                Some(o.time),
                vec![o.node],
            ));
        }
        let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
        let empty = KeyHistory {
            ok: Vec::new(),
            unknown: Vec::new(),
        };
        let keys: BTreeSet<&str> = histories
            .keys()
            .copied()
            .chain(states.values().flat_map(|s| s.keys().map(String::as_str)))
            .collect();
        for key in keys {
            let Some(kind) = self.spaces.kind_of(key) else {
                continue;
            };
            let bottom = kind.bottom();
            let h = histories.get(key).unwrap_or(&empty);
            let mut problems: Vec<(String, String, Vec<NodeId>)> = Vec::new();
            dot_uniqueness(key, h, &mut problems);
            for (&node, values) in &states {
                let v = value_or_bottom(values, key, &bottom);
                for (kind, message) in check_value(key, v, h) {
                    problems.push((kind, format!("{node}: {message}"), vec![node]));
                }
            }
            for (kind, message, nodes) in problems {
                if reported.insert((key.to_string(), kind.clone())) {
                    let property = match kind.as_str() {
                        "counter_out_of_range" => {
                            "counter value within the acknowledged and unknown increments"
                        }
                        "lww_not_maximal" | "lww_invented" | "stamp_reused" => {
                            "LWW register holds the write with the maximal (clock, node)"
                        }
                        "mv_not_antichain" | "mv_lost_write" | "mv_invented" => {
                            "multi-value register holds the maximal antichain of writes"
                        }
                        "merge_misresolved" => {
                            "custom merge reads as its function over the maximal antichain of writes"
                        }
                        "dot_reused" => "every dot is unique",
                        _ => "OR-set add-wins semantics",
                    };
                    out.push(violation(
                        SPECIFICATION,
                        &kind,
                        property,
                        message,
                        None,
                        nodes,
                    ));
                }
            }
        }
        out
    }
}

fn dot_uniqueness(
    key: &str,
    h: &KeyHistory<'_>,
    problems: &mut Vec<(String, String, Vec<NodeId>)>,
) {
    let mut dots: BTreeMap<Dot, &Operation<Node>> = BTreeMap::new();
    let mut stamps = BTreeMap::new();
    for (op, reply) in &h.ok {
        let dot = match reply {
            Reply::Written { dot, .. } | Reply::Added { dot, .. } => *dot,
            Reply::Assigned { stamp } => {
                if let Some(other) = stamps.insert(*stamp, op.id) {
                    problems.push((
                        "stamp_reused".into(),
                        format!(
                            "{key}: writes {} and {} both got stamp {stamp}",
                            other.0, op.id.0
                        ),
                        vec![op.node],
                    ));
                }
                continue;
            }
            _ => continue,
        };
        if let Some(other) = dots.insert(dot, op) {
            problems.push((
                "dot_reused".into(),
                format!(
                    "{key}: operations {} ({:?}) and {} ({:?}) were both given dot {dot}",
                    other.id.0, other.request, op.id.0, op.request
                ),
                vec![other.node, op.node],
            ));
        }
    }
}

/// Checks one replica's converged value of `key` against the key's history.
fn check_value(key: &str, value: &Value, h: &KeyHistory<'_>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match value {
        Value::GCounter(c) => counter(key, c.value() as i64, h, &mut out),
        Value::PnCounter(c) => counter(key, c.value(), h, &mut out),
        Value::Lww(r) => lww(key, r.stamp(), r.value(), h, &mut out),
        Value::MvRegister(r) => mv(key, r.entries(), h, &mut out),
        Value::OrSet(s) => orset(key, s.entries(), h, &mut out),
        Value::Custom(r) => {
            mv(key, r.register().entries(), h, &mut out);
            custom(key, r.strategy(), r.resolved(), h, &mut out);
        }
    }
    out
}

/// The specification of a merge function, written apart from the protocol's: the
/// function over a set of values of its type (`None` for no value).
pub fn specified_merge(merge: CustomMerge, values: &[&str]) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let ints = || values.iter().filter_map(|v| v.parse::<i64>().ok());
    let sets = || {
        values.iter().map(|v| {
            v.split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect::<BTreeSet<String>>()
        })
    };
    let join = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>().join(",");
    Some(match (merge.value_type(), merge.function()) {
        (ValueType::Int, MergeFn::Max) => ints().max()?.to_string(),
        (ValueType::Int, MergeFn::Min) => ints().min()?.to_string(),
        (_, MergeFn::Max) => values.iter().max()?.to_string(),
        (_, MergeFn::Min) => values.iter().min()?.to_string(),
        (_, MergeFn::Longest) => values.iter().max_by_key(|v| (v.len(), **v))?.to_string(),
        (_, MergeFn::Union) => join(sets().flatten().collect()),
        (_, MergeFn::Intersection) => {
            let mut all = sets();
            let first = all.next()?;
            join(all.fold(first, |acc, s| acc.intersection(&s).cloned().collect()))
        }
    })
}

/// A custom-merge register against the history: with no write of unknown outcome, its
/// reading is the function over the acknowledged writes no acknowledged write replaced.
fn custom(
    key: &str,
    merge: CustomMerge,
    resolved: Option<String>,
    h: &KeyHistory<'_>,
    out: &mut Vec<(String, String)>,
) {
    if h.unknown
        .iter()
        .any(|op| matches!(op.request, Op::Assign { .. }))
    {
        return;
    }
    let mut writes: Vec<(Dot, &Vec<Dot>, &str)> = Vec::new();
    for (op, reply) in &h.ok {
        if let (Reply::Written { dot, supersedes }, Op::Assign { value, .. }) = (reply, &op.request)
        {
            writes.push((*dot, supersedes, value.as_str()));
        }
    }
    let maximal: Vec<&str> = writes
        .iter()
        .filter(|(d, _, _)| !writes.iter().any(|(_, sup, _)| sup.contains(d)))
        .map(|(_, _, v)| *v)
        .collect();
    let expected = specified_merge(merge, &maximal);
    if expected != resolved {
        out.push((
            "merge_misresolved".into(),
            format!(
                "{key} reads {:?}, but {} over the unreplaced writes {maximal:?} is {:?}",
                resolved,
                merge.function().name(),
                expected
            ),
        ));
    }
}

/// Conflict records: correctly resolved; complete for every LWW write that met another
/// at a replica, and for converged custom-merge values.
#[derive(Debug, Clone, Default)]
pub struct ConflictChecker {
    /// The run's key spaces (custom-merge ones included).
    pub spaces: KeySpaces,
}

const RECORDED: &str = "every conflict is recorded durably, with its resolution";

impl Checker<Node> for ConflictChecker {
    fn name(&self) -> &'static str {
        CONFLICTS
    }

    fn check(&self, run: &RunOutput<Node>) -> Vec<Violation> {
        let mut out = Vec::new();
        // Each record's resolution follows its key space's strategy.
        let mut records: BTreeMap<NodeId, Vec<&super::ConflictRecord>> = BTreeMap::new();
        for o in &run.observations {
            let Observation::Conflict(record) = &o.obs else {
                continue;
            };
            records.entry(o.node).or_default().push(record);
            if let Resolution::Merged {
                result, resolved, ..
            } = &record.resolution
                && let Some(super::crdt::Kind::Custom(merge)) = self.spaces.kind_of(&record.key)
            {
                let values: Vec<&str> = result.iter().map(|(_, v)| v.as_str()).collect();
                let expected = specified_merge(merge, &values);
                if expected.as_deref() != Some(resolved.as_str()) && out.is_empty() {
                    out.push(violation(
                        CONFLICTS,
                        "conflict_misresolved",
                        RECORDED,
                        format!(
                            "{}: conflict record {} on {} resolved {values:?} as {resolved:?}, not {expected:?}",
                            o.node, record.id, record.key
                        ),
                        Some(o.time),
                        vec![o.node],
                    ));
                }
            }
        }
        // Completeness for LWW: a replicated write applied at a replica that already
        // held a write of the key met a different one (each change is applied once, and
        // each write has its own stamp), so the replica recorded a conflict for that
        // change, durably, in the batch that applied it.
        let recorded_changes: BTreeSet<(NodeId, &str, (u32, u64))> = records
            .iter()
            .flat_map(|(&n, rs)| rs.iter().map(move |r| (n, r.key.as_str(), r.change)))
            .collect();
        let mut held: BTreeSet<(NodeId, &str)> = BTreeSet::new();
        let mut lww_reported = BTreeSet::new();
        for o in &run.observations {
            let (key, change) = match &o.obs {
                Observation::LocalWrite { key, .. } => (key, None),
                Observation::Applied {
                    origin, seq, key, ..
                } => (key, Some((*origin, *seq))),
                _ => continue,
            };
            if self.spaces.kind_of(key) != Some(super::crdt::Kind::Lww) {
                continue;
            }
            let had = !held.insert((o.node, key.as_str()));
            let Some(change) = change else { continue };
            if had
                && !recorded_changes.contains(&(o.node, key.as_str(), change))
                && lww_reported.insert(key.clone())
            {
                out.push(violation(
                    CONFLICTS,
                    "conflict_unrecorded",
                    RECORDED,
                    format!(
                        "{}: the replicated write {}.{} of {key} met the write held there, but no conflict was recorded for it",
                        o.node, change.0, change.1
                    ),
                    Some(o.time),
                    vec![o.node],
                ));
            }
        }
        // Completeness: a converged custom value holding concurrent writes was produced
        // by a recorded conflict at that replica.
        let (states, _) = final_states(run);
        let mut reported = BTreeSet::new();
        for (&node, values) in &states {
            for (key, value) in values.iter() {
                let Value::Custom(r) = value else { continue };
                let held: Vec<(Dot, String)> = r
                    .register()
                    .entries()
                    .iter()
                    .map(|(d, v)| (*d, v.clone()))
                    .collect();
                if held.len() < 2 {
                    continue;
                }
                let recorded = records.get(&node).is_some_and(|rs| {
                    rs.iter().any(|rec| {
                        rec.key == *key
                            && matches!(&rec.resolution, Resolution::Merged { result, .. } if *result == held)
                    })
                });
                if !recorded && reported.insert(key.clone()) {
                    let dots: Vec<String> = held.iter().map(|(d, v)| format!("{v}@{d}")).collect();
                    out.push(violation(
                        CONFLICTS,
                        "conflict_unrecorded",
                        RECORDED,
                        format!(
                            "{node} holds the concurrent writes {} of {key} but recorded no conflict that merged them",
                            dots.join(", ")
                        ),
                        None,
                        vec![node],
                    ));
                }
            }
        }
        out
    }
}

fn counter(key: &str, value: i64, h: &KeyHistory<'_>, out: &mut Vec<(String, String)>) {
    let (mut ok_inc, mut ok_dec, mut unk_inc, mut unk_dec) = (0i64, 0i64, 0i64, 0i64);
    for (op, _) in &h.ok {
        match &op.request {
            Op::Increment { by, .. } => ok_inc += *by as i64,
            Op::Decrement { by, .. } => ok_dec += *by as i64,
            _ => {}
        }
    }
    for op in &h.unknown {
        match &op.request {
            Op::Increment { by, .. } => unk_inc += *by as i64,
            Op::Decrement { by, .. } => unk_dec += *by as i64,
            _ => {}
        }
    }
    let low = ok_inc - ok_dec - unk_dec;
    let high = ok_inc + unk_inc - ok_dec;
    if !(low..=high).contains(&value) {
        out.push((
            "counter_out_of_range".into(),
            format!(
                "{key} converged to {value}, outside [{low}, {high}] (acknowledged +{ok_inc} -{ok_dec}, unknown +{unk_inc} -{unk_dec})"
            ),
        ));
    }
}

fn lww(
    key: &str,
    stamp: Option<super::crdt::Stamp>,
    value: Option<&str>,
    h: &KeyHistory<'_>,
    out: &mut Vec<(String, String)>,
) {
    let best =
        h.ok.iter()
            .filter_map(|(op, reply)| match (reply, &op.request) {
                (Reply::Assigned { stamp }, Op::Assign { value, .. }) => Some((*stamp, value)),
                _ => None,
            })
            .max();
    let unknown_value = |v: &str| {
        h.unknown
            .iter()
            .any(|op| matches!(&op.request, Op::Assign { value, .. } if value == v))
    };
    match (best, stamp, value) {
        (None, None, _) => {}
        (Some((s, v)), None, _) => out.push((
            "lww_not_maximal".into(),
            format!("{key} is empty, but write {v} was acknowledged with stamp {s}"),
        )),
        (best, Some(stamp), Some(value)) => {
            if let Some((s, v)) = best {
                if stamp < s {
                    out.push((
                        "lww_not_maximal".into(),
                        format!(
                            "{key} holds {value} (stamp {stamp}), but {v} was acknowledged with the greater stamp {s}"
                        ),
                    ));
                    return;
                }
                if stamp == s {
                    if value != v.as_str() {
                        out.push((
                            "lww_invented".into(),
                            format!("{key} holds {value} with the stamp {s} of write {v}"),
                        ));
                    }
                    return;
                }
            }
            if !unknown_value(value) {
                out.push((
                    "lww_invented".into(),
                    format!(
                        "{key} holds {value} (stamp {stamp}), which no acknowledged write with that stamp and no unknown write wrote"
                    ),
                ));
            }
        }
        (_, Some(stamp), None) => out.push((
            "lww_invented".into(),
            format!("{key} has stamp {stamp} but no value"),
        )),
    }
}

fn mv(
    key: &str,
    entries: &BTreeMap<Dot, String>,
    h: &KeyHistory<'_>,
    out: &mut Vec<(String, String)>,
) {
    let mut writes: Vec<(&Operation<Node>, Dot, &Vec<Dot>, &String)> = Vec::new();
    for (op, reply) in &h.ok {
        if let (Reply::Written { dot, supersedes }, Op::Assign { value, .. }) = (reply, &op.request)
        {
            writes.push((op, *dot, supersedes, value));
        }
    }
    let superseded_by = |d: Dot| {
        writes
            .iter()
            .find(|(_, _, sup, _)| sup.contains(&d))
            .map(|(op, _, _, v)| (op.id.0, v.as_str()))
    };
    for (d, v) in entries {
        let acked = writes.iter().any(|(_, wd, _, wv)| *wd == *d && *wv == v);
        let unknown = h
            .unknown
            .iter()
            .any(|op| matches!(&op.request, Op::Assign { value, .. } if value == v));
        if !acked && !unknown {
            out.push((
                "mv_invented".into(),
                format!("{key} holds {v} at dot {d}, which no write produced"),
            ));
        }
        if let Some((id, by)) = superseded_by(*d) {
            out.push((
                "mv_not_antichain".into(),
                format!("{key} still holds {v} (dot {d}), which write {id} ({by}) replaced"),
            ));
        }
    }
    for (op, d, _, v) in &writes {
        if entries.get(d) == Some(*v) || superseded_by(*d).is_some() {
            continue;
        }
        // An unknown write invoked after this one may have replaced it unseen.
        let excused = h
            .unknown
            .iter()
            .any(|u| matches!(u.request, Op::Assign { .. }) && u.invoked_at > op.invoked_at);
        if !excused {
            let held: Vec<&str> = entries.values().map(String::as_str).collect();
            out.push((
                "mv_lost_write".into(),
                format!(
                    "{key} holds {{{}}}, without {v} (dot {d}), which no write replaced",
                    held.join(",")
                ),
            ));
        }
    }
}

fn orset(
    key: &str,
    entries: &BTreeMap<Dot, String>,
    h: &KeyHistory<'_>,
    out: &mut Vec<(String, String)>,
) {
    let mut adds: Vec<(&Operation<Node>, Dot, &String)> = Vec::new();
    // Dots an acknowledged operation observed and deleted: a remove's, or a re-add's
    // (an add replaces the element's dots it observed).
    let mut deletions: Vec<(&String, &Vec<Dot>, &'static str)> = Vec::new();
    for (op, reply) in &h.ok {
        match (reply, &op.request) {
            (Reply::Added { dot, replaces }, Op::Add { element, .. }) => {
                adds.push((op, *dot, element));
                deletions.push((element, replaces, "re-add replaced"));
            }
            (Reply::Removed { dots }, Op::Remove { element, .. }) => {
                deletions.push((element, dots, "remove observed"))
            }
            _ => {}
        }
    }
    let deleted_by = |d: Dot, e: &str| {
        deletions
            .iter()
            .find(|(de, dots, _)| *de == e && dots.contains(&d))
            .map(|(_, _, how)| *how)
    };
    for (d, e) in entries {
        if let Some(how) = deleted_by(*d, e) {
            out.push((
                "orset_removed_survives".into(),
                format!("{key} still holds {e} (dot {d}) after an acknowledged {how} it"),
            ));
        }
        let acked = adds.iter().any(|(_, ad, ae)| ad == d && *ae == e);
        let unknown = h
            .unknown
            .iter()
            .any(|op| matches!(&op.request, Op::Add { element, .. } if element == e));
        if !acked && !unknown {
            out.push((
                "orset_invented".into(),
                format!("{key} holds {e} at dot {d}, which no add produced"),
            ));
        }
    }
    for (op, d, e) in &adds {
        if entries.get(d) == Some(*e) || deleted_by(*d, e).is_some() {
            continue;
        }
        // A remove of unknown outcome may have observed this add; so may a re-add of
        // unknown outcome have replaced it (and its own dot may since have been removed
        // by a remove that observed only that one).
        let excused = h.unknown.iter().any(|u| {
            settled_at(u) >= op.invoked_at
                && matches!(&u.request,
                    Op::Remove { element, .. } | Op::Add { element, .. } if element == *e)
        });
        if !excused {
            out.push((
                "orset_add_lost".into(),
                format!(
                    "{key} lacks {e} (dot {d}, operation {}): no remove observed that add, so it must win",
                    op.id.0
                ),
            ));
        }
    }
}
