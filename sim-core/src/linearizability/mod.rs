//! Linearizability of key-value client histories.
//!
//! A history is a list of [`HistoryOp`]s in the Jepsen vocabulary: each operation was
//! invoked at some time and then completed `ok` (it took effect once, at some instant
//! between invocation and completion, with the recorded result), `fail` (it certainly did
//! not take effect) or `info` (unknown: it may have taken effect at any instant after its
//! invocation, or never; its result is unknown). [`check`] decides whether some order of
//! the operations agrees with their real-time order and with the sequential key-value
//! model of [`model`].
//!
//! Linearizability is *local* (Herlihy and Wing): a history is linearizable iff each
//! key's sub-history is, so [`check`] checks every key on its own, with the
//! Wing–Gong–Lowe search memoised as in Lowe's "Testing for linearizability" and
//! Porcupine (see `search.rs`). Each key's search has a step budget: a history too hard
//! to decide within it is [`Verdict::Unknown`], never a hang. On a violation, the key's
//! history is shrunk to a small set of operations that still cannot be ordered (see
//! `explain.rs`) and explained.
//!
//! Real time: operation `a` precedes `b` iff `a` completed strictly before `b` was
//! invoked. Operations whose intervals merely touch (`a.completed_at == b.invoked_at`)
//! are concurrent.
//!
//! Histories are read from and written to JSON Lines by [`history_file`]; the format is
//! described in `docs/history.md`.

mod explain;
pub mod history_file;
pub mod model;
mod search;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use history_file::{HistoryError, parse_history, write_history};
pub use model::{KvOp, KvResult, KvStore};

use crate::checker::{Checker, Violation};
use crate::history::History;
use crate::ids::NodeId;
use crate::process::{Completion, Process};
use crate::run::RunOutput;
use crate::time::SimTime;
use model::Text;
use search::{Item, Role, SearchOutcome};

/// The default step budget per key: a second or two of search in a release build (a
/// step costs well under a microsecond), a few times that in the dev profile. A
/// well-behaved history needs a few steps per operation.
pub const DEFAULT_BUDGET: u64 = 2_000_000;

/// One client operation of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOp {
    /// Unique within the history.
    pub id: u64,
    /// The client (Jepsen's process) that invoked it.
    pub client: u64,
    pub invoked_at: u64,
    /// When it completed; `None` if it never did (then the outcome is `Info`).
    pub completed_at: Option<u64>,
    pub op: KvOp,
    pub outcome: Outcome,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect, once, with this result.
    Ok(KvResult),
    /// It certainly did not take effect.
    Fail,
    /// Unknown: it may have taken effect at any time after its invocation, or never.
    Info,
}

impl HistoryOp {
    /// An operation that completed `ok` with `result`.
    pub fn ok(
        id: u64,
        client: u64,
        invoked_at: u64,
        completed_at: u64,
        op: KvOp,
        result: KvResult,
    ) -> Self {
        HistoryOp {
            id,
            client,
            invoked_at,
            completed_at: Some(completed_at),
            op,
            outcome: Outcome::Ok(result),
        }
    }

    /// An operation that never completed (an `info` with no completion time).
    pub fn info(id: u64, client: u64, invoked_at: u64, op: KvOp) -> Self {
        HistoryOp {
            id,
            client,
            invoked_at,
            completed_at: None,
            op,
            outcome: Outcome::Info,
        }
    }

    /// An operation that certainly did not take effect.
    pub fn fail(id: u64, client: u64, invoked_at: u64, completed_at: u64, op: KvOp) -> Self {
        HistoryOp {
            id,
            client,
            invoked_at,
            completed_at: Some(completed_at),
            op,
            outcome: Outcome::Fail,
        }
    }

    pub fn key(&self) -> &str {
        self.op.key()
    }

    /// The result, if it completed `ok`.
    pub fn result(&self) -> Option<&KvResult> {
        match &self.outcome {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }

    /// The history of a simulation run whose protocol speaks [`KvOp`]/[`KvResult`]:
    /// operation ids, client numbers and microsecond times carry over; an operation still
    /// open when the run ended is `info` with no completion time.
    pub fn from_history<P>(history: &History<P>) -> Vec<HistoryOp>
    where
        P: Process<Op = KvOp, Reply = KvResult>,
    {
        history
            .operations
            .iter()
            .map(|op| {
                let (completed_at, outcome) = match &op.completion {
                    None => (None, Outcome::Info),
                    Some((t, Completion::Ok(r))) => (Some(t.0), Outcome::Ok(r.clone())),
                    Some((t, Completion::Fail(_))) => (Some(t.0), Outcome::Fail),
                    Some((t, Completion::Info(_))) => (Some(t.0), Outcome::Info),
                };
                HistoryOp {
                    id: op.id.0,
                    client: u64::from(op.client.0),
                    invoked_at: op.invoked_at.0,
                    completed_at,
                    op: op.request.clone(),
                    outcome,
                }
            })
            .collect()
    }
}

/// `op 7  client 3  [1200, 1350]  put(x, 5) → ok`, on one line.
impl fmt::Display for HistoryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op {}  client {}  {}  {}",
            self.id,
            self.client,
            interval(self),
            described(self)
        )
    }
}

/// `[1200, 1350]`, or `[1200, ?)` for an operation that never completed.
fn interval(op: &HistoryOp) -> String {
    match op.completed_at {
        Some(t) => format!("[{}, {}]", op.invoked_at, t),
        None => format!("[{}, ?)", op.invoked_at),
    }
}

/// `put(x, 5) → ok`, `get(x) → nil`, `put(x, 5) → fail`, `put(x, 5) → info (unknown)`.
fn described(op: &HistoryOp) -> String {
    match &op.outcome {
        Outcome::Ok(r) => format!("{} → {}", op.op, r),
        Outcome::Fail => format!("{} → fail", op.op),
        Outcome::Info => format!("{} → info (unknown)", op.op),
    }
}

/// Knobs of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// The most search steps spent on one key before its verdict is `Unknown`.
    pub budget: u64,
    /// The most search steps spent shrinking a violation to its explanation (in total per
    /// violating key); when it runs out, the explanation is correct but maybe not minimal.
    pub explain_budget: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            budget: DEFAULT_BUDGET,
            explain_budget: DEFAULT_BUDGET,
        }
    }
}

impl CheckOptions {
    /// The default options with this per-key budget (also used to explain).
    pub fn with_budget(budget: u64) -> Self {
        CheckOptions {
            budget,
            explain_budget: budget,
        }
    }
}

/// A history the checker cannot judge (bad input, not a violation).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckError {
    #[error("operation {id} appears more than once")]
    DuplicateId { id: u64 },
    #[error("operation {id} ({op}) completed ok but has no completion time")]
    MissingCompletion { id: u64, op: String },
    #[error("operation {id} completed at {completed_at}, before it was invoked at {invoked_at}")]
    CompletedBeforeInvoked {
        id: u64,
        invoked_at: u64,
        completed_at: u64,
    },
    #[error("operation {id}: {op} cannot return {result:?}")]
    ResultMismatch { id: u64, op: String, result: String },
}

/// A verdict, for one key or for a whole history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    NotLinearizable {
        key: String,
        explanation: Explanation,
    },
    /// The search ran out of budget: neither proven nor refuted.
    Unknown {
        key: String,
        reason: String,
    },
}

impl Verdict {
    /// `linearizable`, `not linearizable` or `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable { .. } => "not linearizable",
            Verdict::Unknown { .. } => "unknown",
        }
    }
}

/// One key's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    pub key: String,
    /// Operations by outcome (`info` counts those that never completed too).
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
    /// Search steps spent deciding (not counting the explanation).
    pub steps: u64,
    pub verdict: Verdict,
}

/// The result of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Every key of the history, in key order.
    pub keys: Vec<KeyReport>,
    /// The first violating key's verdict if any key is violated; else the first unknown
    /// key's; else `Linearizable`.
    pub verdict: Verdict,
}

impl Report {
    pub fn is_linearizable(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }
}

/// Why a key's history is not linearizable: a small set of its operations that cannot
/// be ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub key: String,
    /// The operations that cannot be ordered, by invocation time. Every other completed
    /// write on the key is made optional (it may or may not have taken effect, within its
    /// interval), every other read is left out, and what completed before these began may
    /// be forgotten (the key may then hold any value); even so, these cannot be ordered.
    pub operations: Vec<HistoryOp>,
    /// Why, in words.
    pub why: Vec<String>,
    /// Other completed writes on the key, made optional: each may or may not have taken
    /// effect (within its interval).
    pub relaxed_writes: usize,
    /// Other completed reads on the key (including `cas` that did not swap), left out.
    pub dropped_reads: usize,
    /// Operations on the key whose outcome was unknown to begin with (apart from reads).
    pub unknown: usize,
    /// Completed operations forgotten because they completed before every operation kept
    /// or made optional began; at `any_value_at`, the key may have held whatever they
    /// could have left there (absent, or one of the values they set, extended by any of
    /// the key's appends).
    pub forgotten: usize,
    pub any_value_at: Option<u64>,
    /// Whether removing any one of `operations` makes the rest explainable (false when
    /// the explanation budget ran out first; then the set is correct but maybe larger).
    pub minimal: bool,
}

impl Explanation {
    /// The explanation as text lines.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let n = self.operations.len();
        let head = if n == 1 {
            "this operation cannot be explained".to_string()
        } else {
            format!("these {n} operations cannot be ordered")
        };
        let note = if self.minimal {
            ""
        } else {
            " (not minimised: the explanation budget ran out)"
        };
        lines.push(format!("key {}: {head}{note}:", Text(&self.key)));
        let id_width = self
            .operations
            .iter()
            .map(|o| o.id.to_string().len())
            .max()
            .unwrap_or(1);
        let client_width = self
            .operations
            .iter()
            .map(|o| o.client.to_string().len())
            .max()
            .unwrap_or(1);
        let interval_width = self
            .operations
            .iter()
            .map(|o| interval(o).len())
            .max()
            .unwrap_or(1);
        for o in &self.operations {
            lines.push(format!(
                "  op {:<id_width$}  client {:<client_width$}  {:<interval_width$}  {}",
                o.id,
                o.client,
                interval(o),
                described(o),
            ));
        }
        let mut why = self.why.iter();
        if let Some(first) = why.next() {
            lines.push(format!("  why: {first}"));
        }
        for line in why {
            lines.push(format!("       {line}"));
        }
        let mut others = Vec::new();
        if self.relaxed_writes > 0 {
            others.push(format!(
                "{} other completed write{} made optional (each may or may not have taken effect, within its interval)",
                self.relaxed_writes,
                plural(self.relaxed_writes)
            ));
        }
        if self.dropped_reads > 0 {
            others.push(format!(
                "{} other read{} left out",
                self.dropped_reads,
                plural(self.dropped_reads)
            ));
        }
        if self.unknown > 0 {
            others.push(format!(
                "{} write{} of unknown outcome",
                self.unknown,
                plural(self.unknown)
            ));
        }
        if let Some(at) = self.any_value_at {
            others.push(format!(
                "{} operation{} that completed before {at} forgotten ({} may have held whatever {} could have left there)",
                self.forgotten,
                plural(self.forgotten),
                Text(&self.key),
                if self.forgotten == 1 { "it" } else { "they" }
            ));
        }
        if !others.is_empty() {
            lines.push(format!(
                "  other operations on {}: {}",
                Text(&self.key),
                others.join("; ")
            ));
        }
        lines
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines().iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(line)?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Rejects histories that cannot be judged: duplicate ids, an `ok` without a completion
/// time, a completion before the invocation, a result of the wrong kind.
pub fn validate(history: &[HistoryOp]) -> Result<(), CheckError> {
    let mut ids = std::collections::BTreeSet::new();
    for op in history {
        if !ids.insert(op.id) {
            return Err(CheckError::DuplicateId { id: op.id });
        }
        if let Some(completed_at) = op.completed_at
            && completed_at < op.invoked_at
        {
            return Err(CheckError::CompletedBeforeInvoked {
                id: op.id,
                invoked_at: op.invoked_at,
                completed_at,
            });
        }
        if let Outcome::Ok(result) = &op.outcome {
            if op.completed_at.is_none() {
                return Err(CheckError::MissingCompletion {
                    id: op.id,
                    op: op.op.to_string(),
                });
            }
            if !op.op.accepts(result) {
                return Err(CheckError::ResultMismatch {
                    id: op.id,
                    op: op.op.to_string(),
                    result: result.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Checks a history for linearizability, key by key.
pub fn check(history: &[HistoryOp], options: &CheckOptions) -> Result<Report, CheckError> {
    validate(history)?;
    let mut by_key: BTreeMap<&str, Vec<&HistoryOp>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key()).or_default().push(op);
    }
    let mut keys = Vec::with_capacity(by_key.len());
    for (key, ops) in &by_key {
        keys.push(check_key(key, ops, options));
    }
    let verdict = keys
        .iter()
        .find(|k| matches!(k.verdict, Verdict::NotLinearizable { .. }))
        .or_else(|| {
            keys.iter()
                .find(|k| matches!(k.verdict, Verdict::Unknown { .. }))
        })
        .map(|k| k.verdict.clone())
        .unwrap_or(Verdict::Linearizable);
    Ok(Report { keys, verdict })
}

/// The search's view of a key's operations: `fail`s and unknown reads constrain nothing.
pub(crate) fn items<'a>(ops: &[&'a HistoryOp]) -> Vec<Item<'a>> {
    ops.iter()
        .filter_map(|&op| match &op.outcome {
            Outcome::Ok(r) => Some(Item {
                op,
                role: Role::Completed(r),
            }),
            Outcome::Info if !op.op.is_read_only() => Some(Item {
                op,
                role: Role::Unknown,
            }),
            _ => None,
        })
        .collect()
}

fn check_key(key: &str, ops: &[&HistoryOp], options: &CheckOptions) -> KeyReport {
    let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|o| f(&o.outcome)).count();
    let items = items(ops);
    let result = search::search(&items, options.budget, &search::Start::Absent);
    let verdict = match result.outcome {
        SearchOutcome::Exhausted if items.len() > search::MAX_OPS => Verdict::Unknown {
            key: key.to_string(),
            reason: format!(
                "too many operations on one key ({} > {})",
                items.len(),
                search::MAX_OPS
            ),
        },
        SearchOutcome::Linearizable => Verdict::Linearizable,
        SearchOutcome::NotLinearizable => Verdict::NotLinearizable {
            key: key.to_string(),
            explanation: explain::explain(key, ops, options),
        },
        SearchOutcome::Exhausted => Verdict::Unknown {
            key: key.to_string(),
            reason: format!("budget exhausted after {} steps", result.steps),
        },
    };
    KeyReport {
        key: key.to_string(),
        ok: count(|o| matches!(o, Outcome::Ok(_))),
        fail: count(|o| matches!(o, Outcome::Fail)),
        info: count(|o| matches!(o, Outcome::Info)),
        steps: result.steps,
        verdict,
    }
}

/// The `linearizability` checker for protocols that speak [`KvOp`]/[`KvResult`]: one
/// violation per non-linearizable key. A key whose search runs out of budget is reported
/// as a violation of kind `linearizability_unknown` only if `unknown_is_violation` is set
/// (by default it is not: it is not a proven violation).
#[derive(Debug, Clone, Default)]
pub struct LinearizabilityChecker {
    pub options: CheckOptions,
    pub unknown_is_violation: bool,
}

impl LinearizabilityChecker {
    pub const NAME: &'static str = "linearizability";
}

impl<P> Checker<P> for LinearizabilityChecker
where
    P: Process<Op = KvOp, Reply = KvResult>,
{
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn check(&self, run: &RunOutput<P>) -> Vec<Violation> {
        let history = HistoryOp::from_history(&run.history);
        let report = match check(&history, &self.options) {
            Ok(report) => report,
            // The kernel records well-formed histories; if one is not, say so.
            Err(e) => {
                return vec![Violation {
                    checker: Self::NAME,
                    kind: "malformed_history".to_string(),
                    property: "linearizability",
                    message: e.to_string(),
                    time: None,
                    nodes: Vec::new(),
                    cites: Vec::new(),
                }];
            }
        };
        let node_of: BTreeMap<u64, NodeId> = run
            .history
            .operations
            .iter()
            .map(|op| (op.id.0, op.node))
            .collect();
        let mut violations = Vec::new();
        for key in report.keys {
            match key.verdict {
                Verdict::Linearizable => {}
                Verdict::NotLinearizable { explanation, .. } => {
                    let nodes: std::collections::BTreeSet<NodeId> = explanation
                        .operations
                        .iter()
                        .filter_map(|o| node_of.get(&o.id).copied())
                        .collect();
                    let time = explanation
                        .operations
                        .iter()
                        .filter_map(|o| o.completed_at)
                        .max()
                        .map(SimTime);
                    let mut violation = Violation {
                        checker: Self::NAME,
                        kind: "not_linearizable".to_string(),
                        property: "linearizability",
                        message: explanation.to_string(),
                        time,
                        nodes: nodes.into_iter().collect(),
                        cites: Vec::new(),
                    };
                    // The operations that cannot be ordered: their invocations and
                    // completions.
                    for o in &explanation.operations {
                        if let Some(&node) = node_of.get(&o.id) {
                            let id = crate::ids::OpId(o.id);
                            violation = violation.citing_op(SimTime(o.invoked_at), node, id);
                            if let Some(done) = o.completed_at {
                                violation = violation.citing_op(SimTime(done), node, id);
                            }
                        }
                    }
                    violations.push(violation);
                }
                Verdict::Unknown { key, reason } => {
                    if self.unknown_is_violation {
                        violations.push(Violation {
                            checker: Self::NAME,
                            kind: "linearizability_unknown".to_string(),
                            property: "linearizability",
                            message: format!("key {}: unknown ({reason})", Text(&key)),
                            time: None,
                            nodes: Vec::new(),
                            cites: Vec::new(),
                        });
                    }
                }
            }
        }
        violations
    }
}
