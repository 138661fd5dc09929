//! Shrinking a non-linearizable key history to a small set of operations that cannot be
//! ordered, and saying why.
//!
//! Removing operations from a key-value history is not sound in general (drop a write and
//! a read of its value becomes unexplainable). *Relaxing* is: leaving a read out, or
//! making a completed write *optional* (it took effect within its interval, or not at all,
//! with whatever result), only admits more orders; so does forgetting a stretch of history
//! that precedes everything else kept, provided the key may then hold *any* value. If the
//! relaxed history still cannot be ordered, neither can the original. The explainer
//! looks for a small set of completed operations to keep, relaxing all the others:
//!
//! 1. Sort the completed operations by completion time and binary-search the shortest
//!    prefix that, kept with everything after it relaxed, still cannot be ordered. Its
//!    last operation is the first that cannot be placed.
//! 2. Binary-search the latest start of a window ending there that still cannot be
//!    ordered when everything before the window is relaxed, and what completed before
//!    the window's operations began is forgotten (the key may hold any value then).
//!    This keeps the searches below small, whatever the history's length.
//! 3. Shrink the window by delta debugging: try relaxing halves, then quarters, and so on
//!    down to single operations, keeping every relaxation under which the history still
//!    cannot be ordered. Reads are tried first, so where a read and the write it saw would
//!    both do, the write is kept.
//! 4. Check that relaxing any one remaining operation makes the history linearizable (the
//!    set is 1-minimal), relaxing any for which it does not.
//!
//! Every search here has a budget and all of them share a total; a search that runs out is
//! taken as "not shown to fail", so the result is always a proven violation, only perhaps
//! not minimal (the explanation says so).

use super::model::{KvOp, KvResult, MaybeText, Text};
use super::search::{self, Item, Role, SearchOutcome, Start};
use super::{CheckOptions, Explanation, HistoryOp, Outcome};

/// How many real-time orderings the explanation lists at most.
const MAX_ORDER_LINES: usize = 12;

/// Explains why `ops` (all on `key`, the whole key history, known not to be linearizable)
/// cannot be ordered.
pub(crate) fn explain(key: &str, ops: &[&HistoryOp], options: &CheckOptions) -> Explanation {
    let mut completed: Vec<&HistoryOp> = ops
        .iter()
        .copied()
        .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
        .collect();
    completed.sort_by_key(|o| (o.completed_at, o.invoked_at, o.id));
    let unknown: Vec<&HistoryOp> = ops
        .iter()
        .copied()
        .filter(|o| matches!(o.outcome, Outcome::Info) && !o.op.is_read_only())
        .collect();
    let mut shrinker = Shrinker {
        completed: &completed,
        unknown: &unknown,
        remaining: options.explain_budget,
        per_search: options.budget,
    };
    let m = completed.len();
    let prefix = |n: usize| -> Vec<bool> { (0..m).map(|i| i < n).collect() };

    // 1. The shortest failing prefix. The empty one is linearizable (every write optional,
    // nothing read); the whole history is not.
    let (mut lo, mut hi) = (0, m);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if shrinker.fails(0, &prefix(mid)) == Some(true) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let mut keep = prefix(hi);

    // 2. The latest failing window start (0 is known to fail).
    let mut start = 0;
    if hi > 0 {
        if shrinker.fails(hi - 1, &keep) == Some(true) {
            start = hi - 1;
        } else {
            let (mut lo, mut up) = (0, hi - 1);
            while up - lo > 1 {
                let mid = lo + (up - lo) / 2;
                if shrinker.fails(mid, &keep) == Some(true) {
                    lo = mid;
                } else {
                    up = mid;
                }
            }
            start = lo;
        }
    }
    for k in keep.iter_mut().take(start) {
        *k = false;
    }

    // 3. Delta debugging over the window but its last operation.
    if hi > start + 1 {
        let mut candidates: Vec<usize> = (start..hi - 1).collect();
        candidates.sort_by_key(|&i| is_relaxable_write(completed[i]));
        let mut chunk = candidates.len().div_ceil(2);
        loop {
            let current: Vec<usize> = candidates.iter().copied().filter(|&i| keep[i]).collect();
            if current.is_empty() {
                break;
            }
            for group in current.chunks(chunk.min(current.len())) {
                let mut trial = keep.clone();
                for &i in group {
                    trial[i] = false;
                }
                if shrinker.fails(start, &trial) == Some(true) {
                    keep = trial;
                }
            }
            if chunk <= 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }

    // 4. 1-minimality, the last operation included.
    let mut minimal = true;
    for i in start..hi {
        if !keep[i] {
            continue;
        }
        let mut trial = keep.clone();
        trial[i] = false;
        match shrinker.fails(start, &trial) {
            Some(true) => keep = trial,
            Some(false) => {}
            None => minimal = false,
        }
    }

    let trial = shrinker.trial(start, &keep);
    let mut core: Vec<&HistoryOp> = completed
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(o, _)| *o)
        .collect();
    core.sort_by_key(|o| (o.invoked_at, o.id));
    Explanation {
        key: key.to_string(),
        why: reasons(key, &core, ops),
        operations: core.into_iter().cloned().collect(),
        relaxed_writes: trial.optional,
        dropped_reads: trial.dropped_reads,
        unknown: unknown.len(),
        forgotten: trial.forgotten,
        any_value_at: (trial.forgotten > 0).then_some(trial.cut).flatten(),
        minimal,
    }
}

/// A completed operation that may have changed the store (a `cas` that did not swap, and
/// a `get`, only read it).
fn is_relaxable_write(op: &HistoryOp) -> bool {
    !matches!(
        op.outcome,
        Outcome::Ok(KvResult::Get(_)) | Outcome::Ok(KvResult::Cas(false))
    )
}

struct Shrinker<'h, 'a> {
    /// The completed operations by completion time.
    completed: &'h [&'a HistoryOp],
    unknown: &'h [&'a HistoryOp],
    remaining: u64,
    per_search: u64,
}

/// One relaxed history to search.
struct Trial<'a> {
    items: Vec<Item<'a>>,
    start: Start<'a>,
    /// Completed writes made optional, completed reads left out, operations forgotten.
    optional: usize,
    dropped_reads: usize,
    forgotten: usize,
    /// The earliest call of a completed operation in the window.
    cut: Option<u64>,
}

impl<'a> Shrinker<'_, 'a> {
    /// The history with the completed operations from `window` on kept if `keep` says so
    /// and relaxed otherwise, and those before relaxed, or forgotten if they completed
    /// before any of the others began (then the key may hold any value).
    fn trial(&self, window: usize, keep: &[bool]) -> Trial<'a> {
        let mut trial = Trial {
            items: Vec::with_capacity(self.completed.len() + self.unknown.len()),
            start: Start::Any {
                sets: Vec::new(),
                appends: Vec::new(),
            },
            optional: 0,
            dropped_reads: 0,
            forgotten: 0,
            cut: None,
        };
        let relax = |trial: &mut Trial<'a>, op: &'a HistoryOp| {
            if is_relaxable_write(op) {
                trial.optional += 1;
                trial.items.push(Item {
                    op,
                    role: Role::Optional,
                });
            } else {
                trial.dropped_reads += 1;
            }
        };
        for (&op, &k) in self.completed.iter().zip(keep).skip(window) {
            match op.result() {
                Some(result) if k => trial.items.push(Item {
                    op,
                    role: Role::Completed(result),
                }),
                _ => relax(&mut trial, op),
            }
        }
        // The window's operations' earliest call, whether they are kept or not (so that the
        // cut, and what is forgotten, depend on the window only).
        trial.cut = self
            .completed
            .iter()
            .skip(window)
            .map(|op| op.invoked_at)
            .min();
        for &op in self.completed.iter().take(window) {
            let before_all = match (op.completed_at, trial.cut) {
                (Some(done), Some(cut)) => done < cut,
                _ => false,
            };
            if before_all {
                trial.forgotten += 1;
                if let Start::Any { sets, .. } = &mut trial.start {
                    match (&op.op, op.result()) {
                        (KvOp::Put { value, .. }, _) => sets.push(value),
                        (KvOp::Cas { new, .. }, Some(KvResult::Cas(true))) => sets.push(new),
                        _ => {}
                    }
                }
            } else {
                relax(&mut trial, op);
            }
        }
        trial.items.extend(self.unknown.iter().map(|&op| Item {
            op,
            role: Role::Unknown,
        }));
        match &mut trial.start {
            _ if trial.forgotten == 0 => trial.start = Start::Absent,
            // Every append forgotten or not (for the stand-in to stay closed under them).
            Start::Any { appends, .. } => {
                let all = self.completed.iter().chain(self.unknown);
                appends.extend(all.filter_map(|op| match &op.op {
                    KvOp::Append { value, .. } => Some(value.as_str()),
                    _ => None,
                }));
            }
            Start::Absent => {}
        }
        trial
    }

    /// Whether that history cannot be ordered (`None`: the budget ran out first).
    fn fails(&mut self, window: usize, keep: &[bool]) -> Option<bool> {
        let budget = self.per_search.min(self.remaining);
        if budget == 0 {
            return None;
        }
        let trial = self.trial(window, keep);
        let result = search::search(&trial.items, budget, &trial.start);
        self.remaining = self.remaining.saturating_sub(result.steps);
        match result.outcome {
            SearchOutcome::NotLinearizable => Some(true),
            SearchOutcome::Linearizable => Some(false),
            SearchOutcome::Exhausted => None,
        }
    }
}

/// The value an operation saw, if it read one: a `get`'s result, or the expected value
/// of a `cas` that swapped.
fn observed(op: &HistoryOp) -> Option<Option<&str>> {
    match (&op.op, &op.outcome) {
        (KvOp::Get { .. }, Outcome::Ok(KvResult::Get(v))) => Some(v.as_deref()),
        (KvOp::Cas { expected, .. }, Outcome::Ok(KvResult::Cas(true))) => Some(expected.as_deref()),
        _ => None,
    }
}

/// Whether the operation (if it takes effect) sets the key to exactly `value`.
fn writes(op: &HistoryOp, value: &str) -> bool {
    match &op.op {
        KvOp::Put { value: v, .. } => v == value,
        KvOp::Cas { new, .. } => new == value,
        KvOp::Get { .. } | KvOp::Append { .. } => false,
    }
}

/// Whether the operation certainly changed the key (completed ok, not a read).
fn certainly_wrote(op: &HistoryOp) -> bool {
    matches!(
        op.outcome,
        Outcome::Ok(KvResult::Put | KvResult::Append | KvResult::Cas(true))
    )
}

/// Whether `goal` is one of `sets` (or nothing) followed by `texts`, each any number of
/// times (a necessary condition for a key to come to hold it).
fn buildable(goal: &str, sets: &[&str], texts: &[&str]) -> bool {
    let goal = goal.as_bytes();
    // tails[i]: goal[i..] is a concatenation of texts.
    let mut tails = vec![false; goal.len() + 1];
    tails[goal.len()] = true;
    for i in (0..goal.len()).rev() {
        tails[i] = texts
            .iter()
            .any(|t| !t.is_empty() && goal[i..].starts_with(t.as_bytes()) && tails[i + t.len()]);
    }
    let from_absent = !texts.is_empty() && (!goal.is_empty() || texts.iter().any(|t| t.is_empty()));
    (from_absent && tails[0])
        || sets
            .iter()
            .any(|b| goal.starts_with(b.as_bytes()) && tails[b.len()])
}

fn at(op: &HistoryOp) -> String {
    match op.completed_at {
        Some(t) => format!("[{}, {}]", op.invoked_at, t),
        None => format!("[{}, ?)", op.invoked_at),
    }
}

/// Why `core` cannot be ordered: a specific reason when one of the classic anomalies
/// fits, then the real-time orders among the operations.
fn reasons(key: &str, core: &[&HistoryOp], all: &[&HistoryOp]) -> Vec<String> {
    let mut lines = Vec::new();
    let key_text = Text(key);
    // Appends make a value the product of several writes; the specific reasons below
    // reason about single writers only.
    let appends = all
        .iter()
        .any(|o| matches!(o.op, KvOp::Append { .. }) && !matches!(o.outcome, Outcome::Fail));
    let possible_writers = |value: &str| -> Vec<&HistoryOp> {
        all.iter()
            .copied()
            .filter(|o| !matches!(o.outcome, Outcome::Fail) && writes(o, value))
            .collect()
    };

    // One read alone: of a value nobody wrote, or written only later.
    if !appends
        && let [read] = core
        && let Some(Some(value)) = observed(read)
    {
        let writers = possible_writers(value);
        let returned = read.completed_at.unwrap_or(read.invoked_at);
        if writers.is_empty() {
            let failed: Vec<String> = all
                .iter()
                .filter(|o| matches!(o.outcome, Outcome::Fail) && writes(o, value))
                .map(|o| format!("op {}", o.id))
                .collect();
            lines.push(format!(
                "op {} read {}, but no operation writes {} to {}{}",
                read.id,
                Text(value),
                Text(value),
                key_text,
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed, so did not take effect)", failed.join(", "))
                }
            ));
        } else if writers.iter().all(|w| w.invoked_at > returned) {
            let first = writers
                .iter()
                .min_by_key(|w| (w.invoked_at, w.id))
                .copied()
                .unwrap_or(read);
            lines.push(format!(
                "{} → {} (op {}) at {} must follow {} (op {}), invoked at {} > {}{}",
                read.op,
                Text(value),
                read.id,
                at(read),
                first.op,
                first.id,
                first.invoked_at,
                returned,
                if writers.len() > 1 {
                    format!(
                        "; all {} writes of {} were invoked after the read returned",
                        writers.len(),
                        Text(value)
                    )
                } else {
                    String::new()
                }
            ));
        }
    }

    // One read alone, with appends about: of a value no writes could build in time.
    if appends
        && let [read] = core
        && let Some(Some(value)) = observed(read)
    {
        let returned = read.completed_at.unwrap_or(read.invoked_at);
        let in_time: Vec<&HistoryOp> = all
            .iter()
            .copied()
            .filter(|o| !matches!(o.outcome, Outcome::Fail) && o.invoked_at <= returned)
            .collect();
        let sets: Vec<&str> = in_time
            .iter()
            .filter_map(|o| match &o.op {
                KvOp::Put { value, .. } => Some(value.as_str()),
                KvOp::Cas { new, .. } => Some(new.as_str()),
                _ => None,
            })
            .collect();
        let texts: Vec<&str> = in_time
            .iter()
            .filter_map(|o| match &o.op {
                KvOp::Append { value, .. } => Some(value.as_str()),
                _ => None,
            })
            .collect();
        if !buildable(value, &sets, &texts) {
            lines.push(format!(
                "op {} read {}, which no writes and appends to {key_text} invoked before it returned (at {returned}) can build",
                read.id,
                Text(value),
            ));
        }
    }

    // Two compare-and-sets that both swapped from a value the key holds only once.
    if lines.is_empty() && !appends {
        let swaps: Vec<&HistoryOp> = core
            .iter()
            .copied()
            .filter(|o| matches!(o.outcome, Outcome::Ok(KvResult::Cas(true))))
            .collect();
        'pairs: for (i, a) in swaps.iter().enumerate() {
            for b in &swaps[i + 1..] {
                let (Some(ea), Some(eb)) = (observed(a), observed(b)) else {
                    continue;
                };
                if ea != eb {
                    continue;
                }
                let once = match ea {
                    None => Some(format!("{key_text} is absent only until its first write")),
                    Some(v) => {
                        let writers = possible_writers(v);
                        match writers.as_slice() {
                            [] => Some(format!("nothing writes {} to {key_text}", Text(v))),
                            [w] => {
                                Some(format!("only op {} writes {} to {key_text}", w.id, Text(v)))
                            }
                            _ => None,
                        }
                    }
                };
                if let Some(once) = once {
                    lines.push(format!(
                        "op {} ({}) and op {} ({}) both swapped from {}, but {} holds {} at most once: {}",
                        a.id,
                        a.op,
                        b.id,
                        b.op,
                        MaybeText(ea),
                        key_text,
                        MaybeText(ea),
                        once
                    ));
                    break 'pairs;
                }
            }
        }
    }

    // A stale read: the value was there, was overwritten, and only then was it read.
    if lines.is_empty() && !appends {
        'reads: for read in core {
            let Some(Some(value)) = observed(read) else {
                continue;
            };
            if !matches!(read.op, KvOp::Get { .. }) {
                continue;
            }
            let writers = possible_writers(value);
            let [writer] = writers.as_slice() else {
                continue;
            };
            // Evidence that the key held the value by some time: its only write completed,
            // or an operation kept read it.
            let evidence = std::iter::once(*writer)
                .chain(
                    core.iter()
                        .copied()
                        .filter(|seen| seen.id != read.id && observed(seen) == Some(Some(value))),
                )
                .filter(|seen| seen.id == writer.id || matches!(seen.outcome, Outcome::Ok(_)));
            for seen in evidence {
                let Some(by) = seen
                    .completed_at
                    .filter(|_| matches!(seen.outcome, Outcome::Ok(_)))
                else {
                    continue;
                };
                for over in core {
                    if [writer.id, read.id, seen.id].contains(&over.id) || !certainly_wrote(over) {
                        continue;
                    }
                    let Some(overwritten) = over.completed_at else {
                        continue;
                    };
                    if by < over.invoked_at && overwritten < read.invoked_at {
                        let evidence = if seen.id == writer.id {
                            format!(
                                "the only write of {v}, op {} ({}), completed at {by}",
                                seen.id,
                                seen.op,
                                v = Text(value)
                            )
                        } else {
                            format!(
                                "op {} read {v} by {by} (only op {} writes {v})",
                                seen.id,
                                writer.id,
                                v = Text(value)
                            )
                        };
                        lines.push(format!(
                            "stale read: {evidence}; op {} ({}) overwrote it between {} and {}; yet op {} ({}), invoked at {}, read {}",
                            over.id,
                            over.op,
                            over.invoked_at,
                            overwritten,
                            read.id,
                            read.op,
                            read.invoked_at,
                            Text(value),
                        ));
                        break 'reads;
                    }
                }
            }
        }
    }

    // Appends only: a value only ever grows.
    let only_appends = all.iter().all(|o| {
        matches!(o.outcome, Outcome::Fail) || matches!(o.op, KvOp::Get { .. } | KvOp::Append { .. })
    });
    if lines.is_empty() && only_appends {
        let precedes =
            |a: &HistoryOp, b: &HistoryOp| a.completed_at.is_some_and(|t| t < b.invoked_at);
        'appends: for read in core {
            let Some(value) = observed(read) else {
                continue;
            };
            let seen = value.unwrap_or("");
            for earlier in core {
                if !precedes(earlier, read) {
                    continue;
                }
                match (&earlier.op, observed(earlier)) {
                    (KvOp::Append { value: text, .. }, _)
                        if certainly_wrote(earlier) && !seen.contains(text.as_str()) =>
                    {
                        lines.push(format!(
                            "op {} read {}, which does not contain {}, appended by op {} before op {} began; {key_text} only grows by appending",
                            read.id,
                            MaybeText(value),
                            Text(text),
                            earlier.id,
                            read.id
                        ));
                        break 'appends;
                    }
                    (KvOp::Get { .. }, Some(before)) if !seen.starts_with(before.unwrap_or("")) => {
                        lines.push(format!(
                            "op {} read {}, then op {} read {}, which does not extend it; {key_text} only grows by appending",
                            earlier.id,
                            MaybeText(before),
                            read.id,
                            MaybeText(value)
                        ));
                        break 'appends;
                    }
                    _ => {}
                }
            }
        }
    }

    if lines.is_empty() {
        if core.len() == 1 {
            lines.push(format!(
                "no placement of this operation among the other writes to {key_text} explains its result"
            ));
        } else {
            lines.push(format!(
                "no order of these {} operations agrees with a single copy of {key_text} and with real time (each takes effect at one instant within its interval)",
                core.len()
            ));
        }
    }

    // Real-time orders among the operations (only the direct ones).
    let precedes = |a: &HistoryOp, b: &HistoryOp| a.completed_at.is_some_and(|t| t < b.invoked_at);
    let mut orders = Vec::new();
    for a in core {
        for b in core {
            if precedes(a, b) && !core.iter().any(|c| precedes(a, c) && precedes(c, b)) {
                orders.push(format!(
                    "real time: op {} completed at {}, before op {} was invoked at {}",
                    a.id,
                    a.completed_at.unwrap_or(a.invoked_at),
                    b.id,
                    b.invoked_at
                ));
            }
        }
    }
    let more = orders.len().saturating_sub(MAX_ORDER_LINES);
    orders.truncate(MAX_ORDER_LINES);
    lines.extend(orders);
    if more > 0 {
        lines.push(format!("(and {more} more real-time orders)"));
    }
    lines
}
