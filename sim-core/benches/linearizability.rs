//! The linearizability checker on generated histories: how long a check takes.
//!
//! Run: `cargo bench -p sim-core --bench linearizability` (optionally `-- RUNS`).
//!
//! Histories come from a sequential key-value store under closed-loop clients with
//! overlapping operations: each operation takes effect at a random point inside its
//! interval, in the order of those points; an `info` took effect half the time and never
//! completes. The generator is seeded, so every run checks the same histories.

use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim_core::linearizability::{
    CheckOptions, HistoryOp, KvOp, KvResult, KvStore, Outcome, Report, Verdict, check,
};

#[derive(Debug, Clone, Copy)]
struct Shape {
    ops: usize,
    keys: usize,
    clients: usize,
    info_percent: u32,
    /// Whether appends are among the operations (else get, put and cas only).
    appends: bool,
    /// Time from invocation to the linearisation point, and from there to completion,
    /// uniform in `[0, max_latency]` (microseconds).
    max_latency: u64,
    max_think: u64,
}

fn generate(seed: u64, shape: Shape) -> Vec<HistoryOp> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut clock: Vec<u64> = (0..shape.clients)
        .map(|_| rng.random_range(0..=shape.max_think))
        .collect();
    let mut process: Vec<u64> = (0..shape.clients as u64).collect();
    let mut written: Vec<Vec<String>> = vec![Vec::new(); shape.keys];
    let kinds = if shape.appends { 4 } else { 3 };
    let mut drafts: Vec<(u64, HistoryOp, bool)> = Vec::with_capacity(shape.ops);
    for id in 0..shape.ops as u64 {
        let c = (0..shape.clients)
            .min_by_key(|&c| (clock[c], c))
            .unwrap_or(0);
        let k = rng.random_range(0..shape.keys);
        let key = format!("k{k}");
        let op = match rng.random_range(0..kinds) {
            0 => KvOp::get(&key),
            1 => {
                let value = format!("v{id}");
                written[k].push(value.clone());
                KvOp::put(&key, value)
            }
            2 => {
                let recent = &written[k][written[k].len().saturating_sub(3)..];
                let expected = if recent.is_empty() || rng.random_bool(0.2) {
                    None
                } else {
                    Some(recent[rng.random_range(0..recent.len())].clone())
                };
                let new = format!("c{id}");
                written[k].push(new.clone());
                KvOp::cas(&key, expected.as_deref(), new)
            }
            _ => KvOp::append(&key, format!("a{id}")),
        };
        let invoked = clock[c];
        let point = invoked + rng.random_range(0..=shape.max_latency);
        let completed = point + rng.random_range(0..=shape.max_latency);
        let (history_op, applied) = if rng.random_range(0..100u32) < shape.info_percent {
            process[c] += shape.clients as u64;
            (
                HistoryOp::info(id, process[c], invoked, op),
                rng.random_bool(0.5),
            )
        } else {
            (
                HistoryOp::ok(id, process[c], invoked, completed, op, KvResult::Put),
                true,
            )
        };
        drafts.push((point, history_op, applied));
        clock[c] = completed + rng.random_range(0..=shape.max_think);
    }
    drafts.sort_by_key(|(point, op, _)| (*point, op.id));
    let mut store = KvStore::new();
    for (_, op, applied) in &mut drafts {
        if *applied {
            let result = store.apply(&op.op);
            if let Outcome::Ok(r) = &mut op.outcome {
                *r = result;
            }
        }
    }
    let mut ops: Vec<HistoryOp> = drafts.into_iter().map(|(_, op, _)| op).collect();
    ops.sort_by_key(|op| op.id);
    ops
}

/// Checks `history` `runs` times; the report and the fastest and median times.
fn time(history: &[HistoryOp], runs: usize) -> (Report, Duration, Duration) {
    let mut times = Vec::with_capacity(runs);
    let mut report = None;
    for _ in 0..runs {
        let start = Instant::now();
        let r = check(history, &CheckOptions::default()).expect("a well-formed history");
        times.push(start.elapsed());
        report = Some(r);
    }
    times.sort();
    let report = report.expect("at least one run");
    (report, times[0], times[times.len() / 2])
}

fn run(name: &str, shape: Shape, seeds: std::ops::Range<u64>, runs: usize) {
    println!("{name}");
    for seed in seeds {
        let history = generate(seed, shape);
        let (report, best, median) = time(&history, runs);
        let steps: u64 = report.keys.iter().map(|k| k.steps).sum();
        let max_steps = report.keys.iter().map(|k| k.steps).max().unwrap_or(0);
        println!(
            "  seed {seed}: {} ({} ops, {} keys): best {:.1} ms, median {:.1} ms; {steps} steps (most on one key: {max_steps})",
            report.verdict.label(),
            history.len(),
            report.keys.len(),
            best.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
        );
    }
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    let a = Shape {
        ops: 10_000,
        keys: 10,
        clients: 5,
        info_percent: 0,
        appends: true,
        max_latency: 50,
        max_think: 10,
    };
    run(
        "(a) 5 clients, 10,000 operations over 10 keys (get, put, cas, append)",
        a,
        0..3,
        runs,
    );
    run(
        "(a') the same with 5% info",
        Shape {
            info_percent: 5,
            ..a
        },
        0..3,
        runs,
    );
    let b = Shape {
        ops: 1_000,
        keys: 1,
        clients: 10,
        info_percent: 10,
        appends: true,
        max_latency: 50,
        max_think: 10,
    };
    run(
        "(b) 1 key, 1,000 operations, 10 clients, 10% info (get, put, cas, append)",
        b,
        0..3,
        runs,
    );
    run(
        "(b') the same without appends (get, put, cas)",
        Shape {
            appends: false,
            ..b
        },
        0..3,
        runs,
    );

    // A violation: one read in (a) changed to a value nobody wrote; detection and
    // explanation together.
    let mut history = generate(0, a);
    if let Some(read) = history
        .iter_mut()
        .rev()
        .find(|o| matches!(o.outcome, Outcome::Ok(KvResult::Get(_))))
    {
        read.outcome = Outcome::Ok(KvResult::Get(Some("never".into())));
    }
    let (report, best, median) = time(&history, runs);
    println!(
        "(c) (a) with its last read changed to a value never written: {}; best {:.1} ms, median {:.1} ms",
        report.verdict.label(),
        best.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
    );
    // A stale read: the last read of a key sees the value before the last completed write.
    let mut history = generate(1, a);
    let mut explained = String::new();
    if let Some(i) = history
        .iter()
        .rposition(|o| matches!(o.outcome, Outcome::Ok(KvResult::Get(Some(_)))))
    {
        let key = history[i].key().to_string();
        let invoked = history[i].invoked_at;
        let earlier: Vec<String> = history
            .iter()
            .filter(|o| {
                o.key() == key
                    && matches!(o.op, KvOp::Put { .. })
                    && o.completed_at.is_some_and(|t| t < invoked)
                    && matches!(o.outcome, Outcome::Ok(_))
            })
            .filter_map(|o| match &o.op {
                KvOp::Put { value, .. } => Some(value.clone()),
                _ => None,
            })
            .collect();
        if let [.., stale, _] = earlier.as_slice() {
            history[i].outcome = Outcome::Ok(KvResult::Get(Some(stale.clone())));
        }
    }
    let (report, best, median) = time(&history, runs);
    if let Verdict::NotLinearizable { explanation, .. } = &report.verdict {
        explained = format!(
            "; explained by {} operations{}",
            explanation.operations.len(),
            if explanation.minimal {
                ""
            } else {
                " (not minimal)"
            }
        );
    }
    println!(
        "(d) (a) with a stale read: {}{explained}; best {:.1} ms, median {:.1} ms",
        report.verdict.label(),
        best.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
    );
}
