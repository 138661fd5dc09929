//! The Wing–Gong–Lowe search on one key's sub-history.
//!
//! This is the algorithm of Lowe's "Testing for linearizability" (2017) as Porcupine
//! implements it: the calls and returns of the completed operations form a doubly linked
//! list sorted by time; an operation whose call comes before the first return still in
//! the list may be linearised next (no pending operation finished before it began). The
//! search tries each such candidate against the model; on success it *lifts* the
//! operation's call and return out of the list, pushes an undo record, and starts over
//! from the head; when no candidate fits it pops the last record, restores the model
//! state, *unlifts* the operation and tries the next candidate after it. The explicit
//! undo stack replaces recursion. A memo of every (set of linearised operations, model
//! state) already reached prunes the search: reaching one again can only repeat a failure.
//!
//! Operations have one of three [`Role`]s. *Completed* ones must take effect within their
//! interval with their result. *Optional* ones (the explainer's relaxation of a completed
//! write) sit in the same list and are tried applied, then left out. *Unknown* ones (`info`)
//! have no return: they never block anything, may be linearised at any point after their
//! call, and never need to be (an `info` write can always be placed after every completed
//! operation, where nobody observes it), so the search succeeds as soon as the main list
//! is empty. They live in a second list and are tried only after every candidate of the
//! main list. Their result is unconstrained: a `put` or `append` applies, a `cas` swaps iff
//! the value matches; a step that would not change the state is skipped.
//!
//! Beyond the memo, four sound prunings keep realistic histories near-linear:
//!
//! - *Dominance.* Unknown operations being optional, a configuration with fewer of them
//!   linearised can do everything one with more can (same main set, same state), so the
//!   memo keeps, per (main set, state), the sets of unknown operations seen, and prunes
//!   any superset of one of them.
//! - *Lazy unknowns* ([`Needs`]). An unknown operation is only placed where the operation
//!   right after it may need its effect (an exchange argument shows this loses nothing).
//!   This stops the search from trying every pending `info` at every backtrack.
//! - *Dead configurations* (`Search::dead`). If an operation that may go next needs a value
//!   that no sequence of the operations that may precede it can build from the current
//!   state, the configuration is abandoned at once rather than after exploring every
//!   order of the operations in between; and ([`Supply`]) if any pending operation needs a
//!   value that no pending write can supply any more and the state cannot become, however
//!   far ahead it lies. A history whose reads need values never written (or written only
//!   later) is rejected before the search starts (`Search::impossible`).
//! - The tests compare every verdict with brute force on random small histories.
//!
//! Model states (the key's value, or absent) are interned to `u32`, so a step is a
//! comparison of integers except for `append`, whose results are memoised too. The
//! explainer may start the search from an unknown value ([`Start::Any`]), which the first
//! operation needing a value resolves.
//!
//! Every loop is bounded: the search counts its steps (one candidate considered, or one
//! backtrack) and stops with [`SearchOutcome::Exhausted`] at the budget; the memo stops
//! growing at a fixed size (forgetting a memo entry costs time, never correctness).
//! Nothing here depends on addresses or hash order, so the same input takes the same
//! steps on every run.

use std::collections::{BTreeMap, BTreeSet};

use super::HistoryOp;
use super::model::{KvOp, KvResult};

/// One operation as the search sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item<'a> {
    pub op: &'a HistoryOp,
    pub role: Role<'a>,
}

/// What the search may assume of an operation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role<'a> {
    /// It took effect once, within its interval, returning this.
    Completed(&'a KvResult),
    /// It took effect once within its interval, or not at all; its result is
    /// unconstrained. (The explainer's relaxation of a completed write.)
    Optional,
    /// It took effect once at any time after its call, or not at all; its result is
    /// unconstrained (`info`).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchOutcome {
    Linearizable,
    NotLinearizable,
    /// The step budget ran out first.
    Exhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SearchResult {
    pub outcome: SearchOutcome,
    /// Steps used (at most the budget).
    pub steps: u64,
}

/// How many `u64` words the memo may hold (bitsets, states and unknown-operation sets
/// together): 128 MiB. Past it, new configurations are explored without being recorded.
const MEMO_WORD_LIMIT: usize = 16 << 20;

/// How many sets of unknown operations the memo keeps per (completed set, state).
const MEMO_INFO_SETS_PER_KEY: usize = 32;

/// The most operations one search takes (its list nodes are numbered in `u32`).
pub(crate) const MAX_OPS: usize = 1 << 26;

/// Checks one key's operations (all on the same key; the caller has dropped `fail`s and
/// unknown `get`s, which constrain nothing). More than [`MAX_OPS`] is `Exhausted` at once.
pub(crate) fn search(items: &[Item<'_>], budget: u64, start: &Start<'_>) -> SearchResult {
    if items.len() > MAX_OPS {
        return SearchResult {
            outcome: SearchOutcome::Exhausted,
            steps: 0,
        };
    }
    Search::new(items).run(budget, start)
}

/// What the key holds before the first operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start<'a> {
    /// Nothing: the key is absent.
    Absent,
    /// Whatever some of the given writes could have made of it, from absent: nothing, or
    /// one of the `sets` values (or nothing) followed by `appends` or the search's own
    /// appends, in any order, repeated at will (the explainer's stand-in for the completed
    /// operations it forgets). The first operation that needs a value finds it, if it is
    /// one of those; appending keeps it one of those.
    Any {
        sets: Vec<&'a str>,
        appends: Vec<&'a str>,
    },
}

/// The state id of [`Start::Any`] (one of its values); not an interned value.
const ANY_OF: u32 = u32::MAX - 1;

/// Whether `state` is the stand-in for an unknown value.
fn unknown_value(state: u32) -> bool {
    state == ANY_OF
}

/// The effect of one operation on the interned model state.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Requires the state to be this one (a `get`).
    Require(u32),
    /// Requires the state not to be this one (a `cas` that did not swap).
    Forbid(u32),
    /// Sets the state (a `put`).
    Set(u32),
    /// Requires `expected`, then sets `new` (a `cas` that swapped).
    Swap { expected: u32, new: u32 },
    /// Sets `new` if the state is `expected`, else nothing (a `cas` of unknown outcome).
    MaybeSwap { expected: u32, new: u32 },
    /// Appends the text of the operation with this index.
    Append(u32),
}

impl Step {
    /// The state the operation needs to find, if it needs a particular one.
    fn target(self) -> Option<u32> {
        match self {
            Step::Require(s) | Step::Swap { expected: s, .. } => Some(s),
            _ => None,
        }
    }

    /// The state the operation may set outright (not an append).
    fn sets(self) -> Option<u32> {
        match self {
            Step::Set(s) | Step::Swap { new: s, .. } | Step::MaybeSwap { new: s, .. } => Some(s),
            _ => None,
        }
    }
}

/// Interned model states of one key.
struct States {
    values: Vec<Option<String>>,
    index: BTreeMap<Option<String>, u32>,
    /// (state, operation) → state after the append.
    appends: BTreeMap<(u32, u32), u32>,
}

impl States {
    fn new() -> Self {
        let mut states = States {
            values: Vec::new(),
            index: BTreeMap::new(),
            appends: BTreeMap::new(),
        };
        states.intern(None); // 0: absent, the initial state
        states
    }

    fn intern(&mut self, value: Option<String>) -> u32 {
        if let Some(&id) = self.index.get(&value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.clone());
        self.index.insert(value, id);
        id
    }

    fn intern_str(&mut self, value: Option<&str>) -> u32 {
        self.intern(value.map(str::to_string))
    }
}

#[derive(Debug, Clone, Copy)]
enum Undo {
    /// An operation of the main list, by its call entry (and whether it was an optional
    /// one left out).
    Completed { node: u32, skipped: bool },
    /// An unknown operation, by its node in the second list; `frontier` is the time of
    /// the first return in the main list when it was linearised.
    Unknown { node: u32, frontier: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    undo: Undo,
    state_before: u32,
}

#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// Scanning the main list at this entry (for an optional operation: trying it
    /// applied, or, with `skip`, left out).
    Completed { node: u32, skip: bool },
    /// Trying the unknown operations worth placing here (`Needs::candidates`) from this
    /// index; none may be called after `frontier`.
    Unknown { index: usize, frontier: u64 },
}

struct Search<'a> {
    states: States,
    /// The main list's operations' steps, by index (sorted by call time).
    completed_steps: Vec<Step>,
    /// Which of them are optional: each is tried applied, then skipped.
    optional: Vec<bool>,
    unknown_steps: Vec<Step>,
    /// Texts of the appends, by the index in `Step::Append`.
    append_texts: Vec<&'a str>,

    // The main list: node 0 is the head, 1..=2n the calls and returns, 2n+1 the tail.
    next: Vec<u32>,
    prev: Vec<u32>,
    /// For each node: the completed operation's index.
    entry_op: Vec<u32>,
    /// For call nodes: the matching return node; for returns, `NONE`.
    entry_return: Vec<u32>,
    entry_time: Vec<u64>,
    tail: u32,

    // The second list: node 0 is the head, 1..=m the unknown operations by call time,
    // m+1 the tail.
    unext: Vec<u32>,
    uprev: Vec<u32>,
    utime: Vec<u64>,
    utail: u32,

    /// What the operations that may go next need, while unknown operations are tried.
    needs: Needs,
    /// For each unknown operation: whether its effect could show through appends.
    observable: Vec<bool>,
    /// Scratch space of `dead`.
    scratch_targets: Vec<(u32, u64)>,
    scratch_writers: Vec<(u64, Step)>,
    /// Which needed values pending writes can still supply.
    supply: Supply,
    /// The values of [`Start::Any`].
    start_sets: Vec<String>,
    start_appends: Vec<String>,
}

const NONE: u32 = u32::MAX;

impl<'a> Search<'a> {
    fn new(items: &[Item<'a>]) -> Self {
        let mut states = States::new();
        let mut append_texts = Vec::new();

        // The completed and optional operations (`None`: optional) go in the main list.
        let mut completed: Vec<(&HistoryOp, Option<&KvResult>)> = items
            .iter()
            .filter_map(|item| match item.role {
                Role::Completed(r) => Some((item.op, Some(r))),
                Role::Optional => Some((item.op, None)),
                Role::Unknown => None,
            })
            .collect();
        completed.sort_by_key(|(op, _)| (op.invoked_at, op.id));
        // An unknown operation called after every completed one returned can only be
        // linearised after all of them, where it explains nothing: leave it out.
        let last_return = completed
            .iter()
            .map(|(op, _)| op.completed_at.unwrap_or(op.invoked_at))
            .max();
        let mut unknown: Vec<&HistoryOp> = items
            .iter()
            .filter(|item| matches!(item.role, Role::Unknown))
            .filter(|item| !item.op.op.is_read_only())
            .filter(|item| last_return.is_some_and(|t| item.op.invoked_at <= t))
            .map(|item| item.op)
            .collect();
        unknown.sort_by_key(|op| (op.invoked_at, op.id));

        let mut compile = |op: &'a KvOp, result: Option<&KvResult>| -> Step {
            match (op, result) {
                (KvOp::Get { .. }, Some(KvResult::Get(v))) => {
                    Step::Require(states.intern_str(v.as_deref()))
                }
                // A mismatched result is rejected before the search; an unknown get is
                // left out. Either way it constrains nothing.
                (KvOp::Get { .. }, _) => Step::Forbid(NONE),
                (KvOp::Put { value, .. }, _) => Step::Set(states.intern_str(Some(value))),
                (KvOp::Cas { expected, new, .. }, result) => {
                    let expected = states.intern_str(expected.as_deref());
                    let new = states.intern_str(Some(new));
                    match result {
                        Some(KvResult::Cas(true)) => Step::Swap { expected, new },
                        Some(_) => Step::Forbid(expected),
                        None => Step::MaybeSwap { expected, new },
                    }
                }
                (KvOp::Append { value, .. }, _) => {
                    append_texts.push(value.as_str());
                    Step::Append(append_texts.len() as u32 - 1)
                }
            }
        };
        let completed_steps: Vec<Step> = completed
            .iter()
            .map(|(op, r)| compile(&op.op, *r))
            .collect();
        let optional: Vec<bool> = completed.iter().map(|(_, r)| r.is_none()).collect();
        let unknown_steps: Vec<Step> = unknown.iter().map(|op| compile(&op.op, None)).collect();

        // Whether each unknown operation's effect could show through appends (see `Needs`).
        let observable: Vec<bool> = {
            let value = |s: u32| states.values[s as usize].as_deref();
            let mut needed: Vec<&str> = Vec::new();
            let mut forbidden: Vec<&str> = Vec::new();
            for step in completed_steps.iter().chain(&unknown_steps) {
                match *step {
                    Step::Require(t)
                    | Step::Swap { expected: t, .. }
                    | Step::MaybeSwap { expected: t, .. } => needed.extend(value(t)),
                    Step::Forbid(e) => forbidden.extend(value(e)),
                    Step::Set(_) | Step::Append(_) => {}
                }
            }
            let appended_forbidden = forbidden
                .iter()
                .any(|e| append_texts.iter().any(|t| e.ends_with(t)));
            unknown_steps
                .iter()
                .map(|step| {
                    appended_forbidden
                        || match *step {
                            Step::Append(t) => {
                                let text = append_texts[t as usize];
                                needed.iter().any(|n| n.contains(text))
                            }
                            other => other
                                .sets()
                                .and_then(value)
                                .is_none_or(|v| needed.iter().any(|n| n.starts_with(v))),
                        }
                })
                .collect()
        };

        let supply = Supply::new(
            &states,
            &completed_steps,
            &optional,
            &unknown_steps,
            !append_texts.is_empty(),
        );

        // The main list, sorted by time; at equal times calls come first, so operations
        // that merely touch count as concurrent.
        let n = completed.len();
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * n);
        for (i, (op, _)) in completed.iter().enumerate() {
            events.push((op.invoked_at, false, i as u32));
            let returned = op.completed_at.unwrap_or(op.invoked_at).max(op.invoked_at);
            events.push((returned, true, i as u32));
        }
        events.sort_unstable();
        let nodes = 2 * n + 2;
        let tail = (nodes - 1) as u32;
        let mut entry_op = vec![NONE; nodes];
        let mut entry_return = vec![NONE; nodes];
        let mut entry_time = vec![0; nodes];
        let mut return_node = vec![NONE; n];
        for (k, &(time, is_return, op)) in events.iter().enumerate() {
            let node = k + 1;
            entry_op[node] = op;
            entry_time[node] = time;
            if is_return {
                return_node[op as usize] = node as u32;
            }
        }
        for node in 1..=2 * n {
            let op = entry_op[node] as usize;
            if return_node[op] != node as u32 {
                entry_return[node] = return_node[op];
            }
        }
        let next: Vec<u32> = (0..nodes as u32).map(|i| i + 1).collect();
        let prev: Vec<u32> = (0..nodes as u32).map(|i| i.wrapping_sub(1)).collect();

        let m = unknown.len();
        let unodes = m + 2;
        let mut utime = vec![0; unodes];
        for (i, op) in unknown.iter().enumerate() {
            utime[i + 1] = op.invoked_at;
        }
        let unext: Vec<u32> = (0..unodes as u32).map(|i| i + 1).collect();
        let uprev: Vec<u32> = (0..unodes as u32).map(|i| i.wrapping_sub(1)).collect();

        Search {
            states,
            completed_steps,
            optional,
            unknown_steps,
            append_texts,
            next,
            prev,
            entry_op,
            entry_return,
            entry_time,
            tail,
            unext,
            uprev,
            utime,
            utail: (unodes - 1) as u32,
            needs: Needs::default(),
            observable,
            scratch_targets: Vec::new(),
            scratch_writers: Vec::new(),
            supply,
            start_sets: Vec::new(),
            start_appends: Vec::new(),
        }
    }

    /// The state after `step` from `state`, or `None` if the step is impossible there (or,
    /// for an unknown operation, would change nothing).
    fn apply(&mut self, state: u32, step: Step, unknown: bool) -> Option<u32> {
        let after = match step {
            _ if state == ANY_OF => match step {
                Step::Require(s) => self.start_allows(s).then_some(s),
                Step::Swap { expected, new } | Step::MaybeSwap { expected, new } => {
                    self.start_allows(expected).then_some(new)
                }
                Step::Set(s) => Some(s),
                Step::Forbid(_) | Step::Append(_) => Some(ANY_OF),
            },
            Step::Require(s) => (state == s).then_some(state),
            Step::Forbid(s) => (state != s).then_some(state),
            Step::Set(s) => Some(s),
            Step::Swap { expected, new } => (state == expected).then_some(new),
            Step::MaybeSwap { expected, new } => (state == expected).then_some(new),
            Step::Append(text) => Some(self.append(state, text)),
        };
        match after {
            Some(s) if unknown && s == state => None,
            other => other,
        }
    }

    /// Whether the key may hold `state` at the start ([`Start::Any`]).
    fn start_allows(&self, state: u32) -> bool {
        let Some(goal) = self.states.values.get(state as usize) else {
            return false;
        };
        let Some(goal) = goal.as_deref() else {
            return true; // absent: none of the writes took effect
        };
        let mut texts = Texts::default();
        for text in &self.start_appends {
            texts.insert(text.as_bytes());
        }
        can_build(
            goal.as_bytes(),
            None,
            |prefix| self.start_sets.iter().any(|s| s.as_bytes() == prefix),
            &texts,
        )
    }

    fn append(&mut self, state: u32, text: u32) -> u32 {
        if unknown_value(state) {
            return ANY_OF;
        }
        if let Some(&s) = self.states.appends.get(&(state, text)) {
            return s;
        }
        let mut value = self.states.values[state as usize]
            .clone()
            .unwrap_or_default();
        value.push_str(self.append_texts[text as usize]);
        let s = self.states.intern(Some(value));
        self.states.appends.insert((state, text), s);
        s
    }

    /// Whether the configuration certainly cannot be completed: some operation that may
    /// be linearised next (its call comes before the first return) needs a value (a `get`
    /// its result, a swapping `cas` its expected value) that no sequence of the operations
    /// that may go before it can produce from `state`. The test is a necessary condition
    /// (it lets appends repeat and reorder), so `true` is always right. It cuts the search
    /// short where a wrong order of appends, or an unknown write placed where it was not,
    /// has made a coming read impossible, instead of exploring every order of the
    /// operations in between.
    fn dead(&mut self, state: u32) -> bool {
        if unknown_value(state) {
            return false;
        }
        if self.supply.starves(state, &self.states) {
            return true;
        }
        let mut targets = std::mem::take(&mut self.scratch_targets);
        let mut writers = std::mem::take(&mut self.scratch_writers);
        targets.clear();
        writers.clear();
        // The operations that may go next, and the latest return among those with a need.
        let mut node = self.next[0];
        let mut horizon = 0;
        while node != self.tail && self.entry_return[node as usize] != NONE {
            if let Some(target) =
                self.completed_steps[self.entry_op[node as usize] as usize].target()
                && target != state
            {
                let returns = self.entry_time[self.entry_return[node as usize] as usize];
                targets.push((target, returns));
                horizon = horizon.max(returns);
            }
            node = self.next[node as usize];
        }
        let mut dead = false;
        if !targets.is_empty() {
            // Everything called by then may go before them.
            let mut node = self.next[0];
            while node != self.tail && self.entry_time[node as usize] <= horizon {
                if self.entry_return[node as usize] != NONE {
                    let op = self.entry_op[node as usize] as usize;
                    writers.push((self.entry_time[node as usize], self.completed_steps[op]));
                }
                node = self.next[node as usize];
            }
            let mut unode = self.unext[0];
            while unode != self.utail && self.utime[unode as usize] <= horizon {
                writers.push((
                    self.utime[unode as usize],
                    self.unknown_steps[unode as usize - 1],
                ));
                unode = self.unext[unode as usize];
            }
            dead = targets.iter().any(|&(target, returns)| {
                // Fast paths: a write of exactly the target; or no appends, so only such
                // a write could do.
                let mut appends = false;
                for (called, step) in &writers {
                    if *called <= returns {
                        if step.sets() == Some(target) {
                            return false;
                        }
                        appends |= matches!(step, Step::Append(_));
                    }
                }
                if !appends {
                    return true;
                }
                let before = writers
                    .iter()
                    .filter(|(called, _)| *called <= returns)
                    .map(|(_, step)| *step);
                !self.reachable(target, Some(state), before)
            });
        }
        self.scratch_targets = targets;
        self.scratch_writers = writers;
        dead
    }

    /// Records what the operations that may be linearised next (calls before the first
    /// return, unknown operations called by `frontier`) need from `state`.
    fn compute_needs(&mut self, state: u32, frontier: u64) {
        let mut needs = std::mem::take(&mut self.needs);
        needs.targets.clear();
        needs.candidates.clear();
        needs.blocked_forbid = false;
        needs.appends = 0;
        let mut note = |step: Step| match step {
            Step::Require(t)
            | Step::Swap { expected: t, .. }
            | Step::MaybeSwap { expected: t, .. } => {
                if t != state {
                    needs.targets.push(t);
                }
            }
            Step::Forbid(e) => needs.blocked_forbid |= e == state,
            Step::Append(_) => needs.appends += 1,
            Step::Set(_) => {}
        };
        let mut node = self.next[0];
        while node != self.tail && self.entry_return[node as usize] != NONE {
            note(self.completed_steps[self.entry_op[node as usize] as usize]);
            node = self.next[node as usize];
        }
        let mut unode = self.unext[0];
        while unode != self.utail && self.utime[unode as usize] <= frontier {
            note(self.unknown_steps[unode as usize - 1]);
            unode = self.unext[unode as usize];
        }
        // The unknown operations worth placing here, in call order.
        let mut unode = self.unext[0];
        while unode != self.utail && self.utime[unode as usize] <= frontier {
            let op = unode as usize - 1;
            let step = self.unknown_steps[op];
            let own = usize::from(matches!(step, Step::Append(_)));
            // The argument for skipping the others needs a known state.
            let worth = unknown_value(state)
                || needs.blocked_forbid
                || (self.observable[op] && needs.appends > own)
                || (!needs.targets.is_empty()
                    && (self.observable[op] || !matches!(step, Step::Append(_)))
                    && self
                        .apply(state, step, true)
                        .is_some_and(|after| needs.targets.contains(&after)));
            if worth {
                needs.candidates.push(unode);
            }
            unode = self.unext[unode as usize];
        }
        self.needs = needs;
    }

    /// Whether the history certainly cannot be linearised: some completed operation needs
    /// a value that no sequence of the writes called before it returned can produce from
    /// the initial state (a read of a value never written, or written only later).
    fn impossible(&self) -> bool {
        // Completed operations with a need, by return; all writes, by call.
        let mut needs: Vec<(u64, u32)> = Vec::new();
        let mut writes: Vec<(u64, Step)> = Vec::new();
        for node in 1..self.tail {
            let op = self.entry_op[node as usize] as usize;
            let step = self.completed_steps[op];
            if self.entry_return[node as usize] == NONE {
                if let Some(target) = step.target() {
                    needs.push((self.entry_time[node as usize], target));
                }
            } else {
                writes.push((self.entry_time[node as usize], step));
            }
        }
        for (i, step) in self.unknown_steps.iter().enumerate() {
            writes.push((self.utime[i + 1], *step));
        }
        writes.sort_by_key(|(t, _)| *t);
        let mut seen = 0;
        let mut bases: BTreeSet<&[u8]> = BTreeSet::new();
        let mut texts = Texts::default();
        for (returns, target) in needs {
            while seen < writes.len() && writes[seen].0 <= returns {
                match writes[seen].1 {
                    Step::Append(text) => texts.insert(self.append_texts[text as usize].as_bytes()),
                    step => {
                        if let Some(s) = step.sets()
                            && let Some(v) = self.states.values[s as usize].as_deref()
                        {
                            bases.insert(v.as_bytes());
                        }
                    }
                }
                seen += 1;
            }
            let Some(goal) = self.states.values[target as usize].as_deref() else {
                continue; // absent: possible, if it goes before every write
            };
            if !can_build(
                goal.as_bytes(),
                None,
                |prefix| bases.contains(prefix),
                &texts,
            ) {
                return true;
            }
        }
        false
    }

    /// Whether `target` may be reached from `state` by some of the `writers` (a
    /// necessary condition only).
    fn reachable(
        &self,
        target: u32,
        state: Option<u32>,
        writers: impl Iterator<Item = Step>,
    ) -> bool {
        let values = &self.states.values;
        let current = state
            .and_then(|s| values[s as usize].as_deref())
            .map(str::as_bytes);
        let Some(goal) = values[target as usize].as_deref() else {
            // There is no delete: once present, a key never becomes absent again.
            return current.is_none();
        };
        let mut bases: Vec<&[u8]> = Vec::new();
        let mut texts = Texts::default();
        for step in writers {
            match step {
                Step::Append(text) => texts.insert(self.append_texts[text as usize].as_bytes()),
                step => {
                    if let Some(s) = step.sets()
                        && let Some(v) = values[s as usize].as_deref()
                    {
                        bases.push(v.as_bytes());
                    }
                }
            }
        }
        can_build(
            goal.as_bytes(),
            current,
            |prefix| bases.contains(&prefix),
            &texts,
        )
    }

    fn lift(&mut self, call: u32) {
        self.supply
            .decide_main(self.entry_op[call as usize] as usize, true);
        let ret = self.entry_return[call as usize];
        for node in [call, ret] {
            let (p, n) = (self.prev[node as usize], self.next[node as usize]);
            self.next[p as usize] = n;
            self.prev[n as usize] = p;
        }
    }

    fn unlift(&mut self, call: u32) {
        self.supply
            .decide_main(self.entry_op[call as usize] as usize, false);
        let ret = self.entry_return[call as usize];
        for node in [ret, call] {
            let (p, n) = (self.prev[node as usize], self.next[node as usize]);
            self.next[p as usize] = node;
            self.prev[n as usize] = node;
        }
    }

    fn ulift(&mut self, node: u32) {
        self.supply.decide_unknown(node as usize - 1, true);
        let (p, n) = (self.uprev[node as usize], self.unext[node as usize]);
        self.unext[p as usize] = n;
        self.uprev[n as usize] = p;
    }

    fn uunlift(&mut self, node: u32) {
        self.supply.decide_unknown(node as usize - 1, false);
        let (p, n) = (self.uprev[node as usize], self.unext[node as usize]);
        self.unext[p as usize] = node;
        self.uprev[n as usize] = node;
    }

    fn run(mut self, budget: u64, start: &Start<'_>) -> SearchResult {
        let n = self.completed_steps.len();
        if n == 0 {
            return SearchResult {
                outcome: SearchOutcome::Linearizable,
                steps: 0,
            };
        }
        let words = n.div_ceil(64);
        // The completed set's words, then the state.
        let mut key = vec![0u64; words + 1];
        let mut unknown_set = vec![0u64; self.unknown_steps.len().div_ceil(64)];
        let mut memo = Memo::new(words + 1);
        let mut stack: Vec<Frame> = Vec::with_capacity(n + self.unknown_steps.len());
        let mut state = match start {
            Start::Absent => 0,
            Start::Any { sets, appends } => {
                self.start_sets = sets.iter().map(|s| s.to_string()).collect();
                self.start_appends = appends
                    .iter()
                    .chain(&self.append_texts)
                    .map(|s| s.to_string())
                    .collect();
                ANY_OF
            }
        };
        let mut linearized = 0usize;
        let mut cursor = Cursor::Completed {
            node: self.next[0],
            skip: false,
        };
        let mut steps = 0u64;
        if budget == 0 {
            return SearchResult {
                outcome: SearchOutcome::Exhausted,
                steps,
            };
        }
        if (*start == Start::Absent && self.impossible()) || self.dead(state) {
            return SearchResult {
                outcome: SearchOutcome::NotLinearizable,
                steps: 1,
            };
        }

        while steps < budget {
            steps += 1;
            let mut backtrack = false;
            match cursor {
                Cursor::Completed { node, skip } => {
                    let ret = if node == self.tail {
                        None
                    } else {
                        Some(self.entry_return[node as usize])
                    };
                    match ret {
                        Some(NONE) | None => {
                            // A return (or the end): no later call may go first.
                            let frontier = if node == self.tail {
                                u64::MAX
                            } else {
                                self.entry_time[node as usize]
                            };
                            self.compute_needs(state, frontier);
                            cursor = Cursor::Unknown { index: 0, frontier };
                        }
                        Some(_) => {
                            let op = self.entry_op[node as usize] as usize;
                            let step = self.completed_steps[op];
                            let optional = self.optional[op];
                            let after = match (optional, skip) {
                                (false, _) => self.apply(state, step, false),
                                (true, false) => self.apply(state, step, true),
                                (true, true) => Some(state),
                            };
                            cursor = if optional && !skip {
                                Cursor::Completed { node, skip: true }
                            } else {
                                Cursor::Completed {
                                    node: self.next[node as usize],
                                    skip: false,
                                }
                            };
                            if let Some(after) = after {
                                key[op / 64] |= 1 << (op % 64);
                                key[words] = u64::from(after);
                                if memo.insert(&key, &unknown_set) {
                                    stack.push(Frame {
                                        undo: Undo::Completed {
                                            node,
                                            skipped: skip,
                                        },
                                        state_before: state,
                                    });
                                    self.lift(node);
                                    state = after;
                                    linearized += 1;
                                    if linearized == n {
                                        return SearchResult {
                                            outcome: SearchOutcome::Linearizable,
                                            steps,
                                        };
                                    }
                                    cursor = Cursor::Completed {
                                        node: self.next[0],
                                        skip: false,
                                    };
                                    backtrack = self.dead(state);
                                } else {
                                    key[op / 64] &= !(1 << (op % 64));
                                }
                            }
                        }
                    }
                }
                Cursor::Unknown { index, frontier } => {
                    if let Some(&node) = self.needs.candidates.get(index) {
                        let op = node as usize - 1;
                        let step = self.unknown_steps[op];
                        cursor = Cursor::Unknown {
                            index: index + 1,
                            frontier,
                        };
                        if let Some(after) = self.apply(state, step, true) {
                            unknown_set[op / 64] |= 1 << (op % 64);
                            key[words] = u64::from(after);
                            if memo.insert(&key, &unknown_set) {
                                stack.push(Frame {
                                    undo: Undo::Unknown { node, frontier },
                                    state_before: state,
                                });
                                self.ulift(node);
                                state = after;
                                cursor = Cursor::Completed {
                                    node: self.next[0],
                                    skip: false,
                                };
                                backtrack = self.dead(state);
                            } else {
                                unknown_set[op / 64] &= !(1 << (op % 64));
                            }
                        }
                    } else {
                        backtrack = true;
                    }
                }
            }
            if backtrack {
                let Some(frame) = stack.pop() else {
                    return SearchResult {
                        outcome: SearchOutcome::NotLinearizable,
                        steps,
                    };
                };
                state = frame.state_before;
                match frame.undo {
                    Undo::Completed { node, skipped } => {
                        let op = self.entry_op[node as usize] as usize;
                        key[op / 64] &= !(1 << (op % 64));
                        self.unlift(node);
                        linearized -= 1;
                        cursor = if self.optional[op] && !skipped {
                            Cursor::Completed { node, skip: true }
                        } else {
                            Cursor::Completed {
                                node: self.next[node as usize],
                                skip: false,
                            }
                        };
                    }
                    Undo::Unknown { node, frontier } => {
                        let op = node as usize - 1;
                        unknown_set[op / 64] &= !(1 << (op % 64));
                        self.uunlift(node);
                        self.compute_needs(state, frontier);
                        let index = self.needs.candidates.partition_point(|&c| c <= node);
                        cursor = Cursor::Unknown { index, frontier };
                    }
                }
            }
        }
        SearchResult {
            outcome: SearchOutcome::Exhausted,
            steps,
        }
    }
}

/// What the operations that may be linearised next need from the current state.
///
/// An unknown operation is only worth placing where the operation right after it needs
/// its effect, or is an append: in any linearisation, an unknown operation followed by
/// one that does not need it can trade places with it (a `get`, or a `cas` that did not
/// swap, satisfied either way) or be dropped (followed by a `put`, or by nothing), until
/// it is followed by one that needs it or by an append. So the search places one only if
/// one of the operations that may go next reads a state other than the current one that
/// the unknown operation produces, is a `cas` that did not swap blocked by the current
/// state, or is an append and the unknown operation's effect could show through appends:
/// some value needed anywhere in the key's history starts with the value it sets, or
/// contains the text it appends, or some `cas` that did not swap expected a value that
/// ends in an appended text (followed by appends, the effect is seen only by an
/// operation that needs the value they build, or a `cas` that did not swap because,
/// without it, they would build its expected value).
#[derive(Default)]
struct Needs {
    /// States some of them need that the current state is not.
    targets: Vec<u32>,
    /// Whether one is a `cas` that did not swap and cannot go now (the state is its
    /// expected value).
    blocked_forbid: bool,
    /// How many are appends (completed or unknown).
    appends: usize,
    /// The unknown operations worth placing now, by node (in call order).
    candidates: Vec<u32>,
}

/// Which needed values could still be produced.
///
/// A value is *needed* by a pending completed operation (a `get`'s result, the expected
/// value of a `cas` that swapped) and *supplied* by a pending write that sets it, or, when
/// the key has appends, sets a prefix of it. There is no delete and appends only extend,
/// so a needed value with no supplier left can only be had if the state already is it
/// (or, with appends, a prefix of it): otherwise the configuration is dead, however far
/// in the future the operation that needs it lies. Kept up to date as operations are
/// decided and undone, so checking is cheap while nothing is starved.
struct Supply {
    /// Per needed value: the state.
    value: Vec<u32>,
    /// Per needed value: pending operations that need it, and pending writes that could
    /// supply it.
    needing: Vec<u32>,
    supplying: Vec<u32>,
    /// How many needed values have someone needing them and no supplier.
    starved: usize,
    /// Per main-list operation: the needed value it needs (`NONE` if none), and those it
    /// could supply.
    main_needs: Vec<u32>,
    main_supplies: Vec<Vec<u32>>,
    /// Per unknown operation: the needed values it could supply.
    unknown_supplies: Vec<Vec<u32>>,
    appends: bool,
}

impl Supply {
    fn new(
        states: &States,
        main: &[Step],
        optional: &[bool],
        unknown: &[Step],
        appends: bool,
    ) -> Self {
        let mut index: BTreeMap<u32, u32> = BTreeMap::new();
        let mut value = Vec::new();
        let main_needs: Vec<u32> = main
            .iter()
            .zip(optional)
            .map(|(step, optional)| match step.target() {
                Some(t) if !optional => *index.entry(t).or_insert_with(|| {
                    value.push(t);
                    value.len() as u32 - 1
                }),
                _ => NONE,
            })
            .collect();
        let mut needing = vec![0u32; value.len()];
        for &v in &main_needs {
            if v != NONE {
                needing[v as usize] += 1;
            }
        }
        // Needed values by text, to find those a write's value is a prefix of.
        let by_text: BTreeMap<&str, u32> = value
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| states.values[s as usize].as_deref().map(|t| (t, i as u32)))
            .collect();
        let supplies = |step: &Step| -> Vec<u32> {
            let Some(set) = step.sets() else {
                return Vec::new();
            };
            if !appends {
                return index.get(&set).copied().into_iter().collect();
            }
            let Some(text) = states.values[set as usize].as_deref() else {
                return Vec::new();
            };
            by_text
                .range(text..)
                .take_while(|(t, _)| t.starts_with(text))
                .map(|(_, &i)| i)
                .collect()
        };
        let main_supplies: Vec<Vec<u32>> = main.iter().map(supplies).collect();
        let unknown_supplies: Vec<Vec<u32>> = unknown.iter().map(supplies).collect();
        let mut supplying = vec![0u32; value.len()];
        for list in main_supplies.iter().chain(&unknown_supplies) {
            for &v in list {
                supplying[v as usize] += 1;
            }
        }
        let starved = (0..value.len())
            .filter(|&v| needing[v] > 0 && supplying[v] == 0)
            .count();
        Supply {
            value,
            needing,
            supplying,
            starved,
            main_needs,
            main_supplies,
            unknown_supplies,
            appends,
        }
    }

    fn is_starved(&self, v: usize) -> bool {
        self.needing[v] > 0 && self.supplying[v] == 0
    }

    /// Adds `delta` (±1) to a needed value's counts.
    fn adjust(&mut self, v: usize, needing: bool, delta: bool) {
        let before = self.is_starved(v);
        let count = if needing {
            &mut self.needing[v]
        } else {
            &mut self.supplying[v]
        };
        *count = if delta {
            count.saturating_add(1)
        } else {
            count.saturating_sub(1)
        };
        match (before, self.is_starved(v)) {
            (false, true) => self.starved += 1,
            (true, false) => self.starved = self.starved.saturating_sub(1),
            _ => {}
        }
    }

    /// A main-list operation was linearised or left out (`decided`), or that was undone.
    fn decide_main(&mut self, op: usize, decided: bool) {
        let need = self.main_needs[op];
        if need != NONE {
            self.adjust(need as usize, true, !decided);
        }
        for i in 0..self.main_supplies[op].len() {
            let v = self.main_supplies[op][i] as usize;
            self.adjust(v, false, !decided);
        }
    }

    /// An unknown operation was linearised, or that was undone.
    fn decide_unknown(&mut self, op: usize, decided: bool) {
        for i in 0..self.unknown_supplies[op].len() {
            let v = self.unknown_supplies[op][i] as usize;
            self.adjust(v, false, !decided);
        }
    }

    /// Whether some needed value can no longer be had from `state`.
    fn starves(&self, state: u32, states: &States) -> bool {
        if self.starved == 0 || unknown_value(state) {
            return false;
        }
        let current = states.values[state as usize].as_deref();
        (0..self.value.len()).any(|v| {
            let target = self.value[v];
            if !self.is_starved(v) || target == state {
                return false;
            }
            match (states.values[target as usize].as_deref(), current) {
                // Absent again, once present: never.
                (None, _) => true,
                (Some(_), None) => !self.appends,
                (Some(goal), Some(now)) => !(self.appends && goal.starts_with(now)),
            }
        })
    }
}

/// The configurations reached: (completed set + state) → the sets of unknown operations
/// linearised with it.
///
/// An open-addressing hash table over an arena of fixed-width keys: a pure lookup table
/// (nothing iterates it, so its order cannot reach any output) with a fixed hash
/// function, so even its timing is the same on every run. A `BTreeMap` of these long
/// keys spent most of the search comparing them; one allocation per key is avoided too.
struct Memo {
    /// Words per key.
    width: usize,
    /// Entry `i`'s key is `keys[i * width..(i + 1) * width]`.
    keys: Vec<u64>,
    hashes: Vec<u64>,
    /// Per entry, the unknown-operation sets seen with it (empty when the search has no
    /// unknown operations).
    unknown_sets: Vec<Vec<Box<[u64]>>>,
    /// 0: empty; otherwise an entry's index + 1. The length is a power of two, at least
    /// twice the number of entries.
    slots: Vec<u32>,
    /// Words stored, against `MEMO_WORD_LIMIT`.
    words: usize,
}

impl Memo {
    fn new(width: usize) -> Self {
        Memo {
            width,
            keys: Vec::new(),
            hashes: Vec::new(),
            unknown_sets: Vec::new(),
            slots: vec![0; 1024],
            words: 0,
        }
    }

    fn hash(key: &[u64]) -> u64 {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for &word in key {
            h = (h ^ word).wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^= h >> 32;
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    /// The entry with this key, or the empty slot where it would go.
    fn find(&self, key: &[u64], hash: u64) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut slot = (hash as usize) & mask;
        // At most half the slots are full, so an empty one comes within `len` probes.
        for _ in 0..self.slots.len() {
            let entry = self.slots[slot] as usize;
            if entry == 0 {
                return Err(slot);
            }
            let entry = entry - 1;
            if self.hashes[entry] == hash
                && self.keys[entry * self.width..(entry + 1) * self.width] == *key
            {
                return Ok(entry);
            }
            slot = (slot + 1) & mask;
        }
        Err(usize::MAX)
    }

    fn grow(&mut self) {
        let mut slots = vec![0u32; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for (entry, &hash) in self.hashes.iter().enumerate() {
            let mut slot = (hash as usize) & mask;
            for _ in 0..slots.len() {
                if slots[slot] == 0 {
                    slots[slot] = entry as u32 + 1;
                    break;
                }
                slot = (slot + 1) & mask;
            }
        }
        self.slots = slots;
    }

    /// Records a configuration; `false` if it (or one that dominates it) was seen.
    fn insert(&mut self, key: &[u64], unknown: &[u64]) -> bool {
        let full = self.words >= MEMO_WORD_LIMIT;
        let hash = Self::hash(key);
        match self.find(key, hash) {
            // No unknown operations in this search: presence is all.
            Ok(_) if unknown.is_empty() => false,
            Ok(entry) => {
                let sets = &mut self.unknown_sets[entry];
                if sets.iter().any(|seen| is_subset(seen, unknown)) {
                    return false;
                }
                if !full {
                    // Sets that this one dominates are no longer needed.
                    sets.retain(|seen| !is_subset(unknown, seen));
                    if sets.len() >= MEMO_INFO_SETS_PER_KEY {
                        sets.remove(0);
                    }
                    sets.push(unknown.into());
                    self.words += unknown.len();
                }
                true
            }
            Err(slot) => {
                if !full && slot != usize::MAX {
                    let entry = self.hashes.len();
                    self.keys.extend_from_slice(key);
                    self.hashes.push(hash);
                    self.unknown_sets.push(if unknown.is_empty() {
                        Vec::new()
                    } else {
                        vec![unknown.into()]
                    });
                    self.slots[slot] = entry as u32 + 1;
                    self.words += key.len() + unknown.len() + 2;
                    if (entry + 1) * 2 >= self.slots.len() {
                        self.grow();
                    }
                }
                true
            }
        }
    }
}

/// The texts appends may add, for [`can_build`].
#[derive(Default)]
struct Texts<'t> {
    set: BTreeSet<&'t [u8]>,
    longest: usize,
    has_empty: bool,
}

impl<'t> Texts<'t> {
    fn insert(&mut self, text: &'t [u8]) {
        if text.is_empty() {
            self.has_empty = true;
        } else {
            self.longest = self.longest.max(text.len());
            self.set.insert(text);
        }
    }
}

/// Values longer than this are assumed buildable (the test is quadratic-ish in length).
const MAX_BUILD_LEN: usize = 8192;

/// Whether `goal` can be built from `current` (`None`: absent) by first, optionally,
/// setting some value `is_base` accepts and then appending `texts` (each any number of
/// times, in any order). A necessary condition for reaching `goal`.
fn can_build<'g>(
    goal: &'g [u8],
    current: Option<&[u8]>,
    is_base: impl Fn(&'g [u8]) -> bool,
    texts: &Texts<'_>,
) -> bool {
    if current == Some(goal) {
        return true;
    }
    if goal.len() > MAX_BUILD_LEN {
        return true;
    }
    // tails[i]: goal[i..] is a concatenation of texts.
    let n = goal.len();
    let mut tails = vec![false; n + 1];
    tails[n] = true;
    for i in (0..n).rev() {
        let most = texts.longest.min(n - i);
        tails[i] = (1..=most).any(|len| tails[i + len] && texts.set.contains(&goal[i..i + len]));
    }
    let appended = !texts.set.is_empty() || texts.has_empty;
    (0..=n).any(|i| {
        if !tails[i] {
            return false;
        }
        let prefix = &goal[..i];
        let from_absent = i == 0 && current.is_none() && appended && (n > 0 || texts.has_empty);
        from_absent || current == Some(prefix) || is_base(prefix)
    })
}

/// Whether every bit of `a` is set in `b` (same lengths).
fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

#[cfg(test)]
mod tests {
    use super::super::Outcome;
    use super::*;

    fn op(id: u64, invoked: u64, completed: u64, op: KvOp, result: KvResult) -> HistoryOp {
        HistoryOp {
            id,
            client: id,
            invoked_at: invoked,
            completed_at: Some(completed),
            op,
            outcome: Outcome::Ok(result),
        }
    }

    fn items(ops: &[HistoryOp]) -> Vec<Item<'_>> {
        ops.iter()
            .map(|op| Item {
                op,
                role: match &op.outcome {
                    Outcome::Ok(r) => Role::Completed(r),
                    _ => Role::Unknown,
                },
            })
            .collect()
    }

    #[test]
    fn sequential_and_stale() {
        let ops = vec![
            op(1, 0, 10, KvOp::put("x", "1"), KvResult::Put),
            op(2, 20, 30, KvOp::put("x", "2"), KvResult::Put),
            op(3, 40, 50, KvOp::get("x"), KvResult::Get(Some("2".into()))),
        ];
        assert_eq!(
            search(&items(&ops), 1000, &Start::Absent).outcome,
            SearchOutcome::Linearizable
        );
        let mut stale = ops.clone();
        stale[2].outcome = Outcome::Ok(KvResult::Get(Some("1".into())));
        assert_eq!(
            search(&items(&stale), 1000, &Start::Absent).outcome,
            SearchOutcome::NotLinearizable
        );
        assert_eq!(
            search(&items(&stale), 2, &Start::Absent).outcome,
            SearchOutcome::Exhausted
        );
    }

    #[test]
    fn touching_intervals_are_concurrent() {
        // The read returns at 10 and the write is called at 10: either order is allowed.
        let ops = vec![
            op(1, 0, 10, KvOp::get("x"), KvResult::Get(Some("1".into()))),
            op(2, 10, 20, KvOp::put("x", "1"), KvResult::Put),
        ];
        assert_eq!(
            search(&items(&ops), 1000, &Start::Absent).outcome,
            SearchOutcome::Linearizable
        );
    }

    #[test]
    fn subset() {
        assert!(is_subset(&[0b0101], &[0b0111]));
        assert!(!is_subset(&[0b1000], &[0b0111]));
        assert!(is_subset(&[], &[]));
    }
}
