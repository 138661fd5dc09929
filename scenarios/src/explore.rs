//! Sweeping seeds: ranges, shards, and a parallel run of one seed per worker.
//!
//! Each seed's run is single-threaded and deterministic; only whole seeds run in
//! parallel, so the set of results does not depend on `jobs` (only the order in which
//! they are reported does; summaries are sorted by seed).

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::ScenarioError;
use crate::runner::{RunOptions, run};
use crate::scenario::Scenario;
use sim_core::Violation;

/// A half-open range of seeds, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    pub start: u64,
    pub end: u64,
}

impl SeedRange {
    /// Parses `A..B` (B excluded), `A..=B` (B included) or a single seed `N`.
    pub fn parse(text: &str) -> Result<SeedRange, String> {
        let bad = || format!("`{text}` is not a seed range; expected A..B, A..=B or N");
        let number = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
        let range = if let Some((a, b)) = text.split_once("..=") {
            let end = number(b)?.checked_add(1).ok_or_else(bad)?;
            SeedRange {
                start: number(a)?,
                end,
            }
        } else if let Some((a, b)) = text.split_once("..") {
            SeedRange {
                start: number(a)?,
                end: number(b)?,
            }
        } else {
            let n = number(text)?;
            SeedRange {
                start: n,
                end: n.checked_add(1).ok_or_else(bad)?,
            }
        };
        if range.start >= range.end {
            return Err(format!("seed range `{text}` is empty"));
        }
        Ok(range)
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// Shard `index` of `count` (1-based): every `count`-th seed of the range, starting at
/// offset `index - 1`. Shards `1/N .. N/N` together cover the range exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Parses `K/N` with `1 <= K <= N`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("`{text}` is not a shard; expected K/N with 1 <= K <= N, e.g. 2/4");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = k.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    pub fn contains(&self, range: &SeedRange, seed: u64) -> bool {
        (seed - range.start) % self.count == self.index - 1
    }
}

/// How to sweep.
#[derive(Debug, Clone)]
pub struct ExploreOptions {
    pub seeds: SeedRange,
    pub shard: Option<Shard>,
    /// Worker threads (each runs one seed at a time).
    pub jobs: usize,
    pub bugs: Vec<String>,
    /// Stop starting new seeds after the first failure.
    pub stop_on_first: bool,
}

/// What one seed produced.
#[derive(Debug, Clone, Serialize)]
pub struct SeedOutcome {
    pub seed: u64,
    pub trace_hash: u64,
    /// Kernel events processed (for events/s).
    pub events: u64,
    pub violations: Vec<Violation>,
    /// What the protocol measured (see [`crate::runner::Metric`]).
    pub metrics: Vec<crate::runner::Metric>,
}

impl SeedOutcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The kind of the first violation.
    pub fn kind(&self) -> Option<&str> {
        self.violations.first().map(|v| v.kind.as_str())
    }
}

/// The seeds of `options` in this shard, in order.
pub fn seeds(options: &ExploreOptions) -> Vec<u64> {
    (options.seeds.start..options.seeds.end)
        .filter(|&s| {
            options
                .shard
                .is_none_or(|sh| sh.contains(&options.seeds, s))
        })
        .collect()
}

/// Runs every seed of the sweep on `options.jobs` workers, calling `on_outcome` as each
/// finishes (from the worker's thread). Returns the outcomes sorted by seed.
pub fn explore(
    scenario: &Scenario,
    options: &ExploreOptions,
    on_outcome: impl Fn(&SeedOutcome) + Sync,
) -> Result<Vec<SeedOutcome>, ScenarioError> {
    for name in &options.bugs {
        crate::registry::check_bug_flag(scenario.protocol, name).map_err(ScenarioError::Options)?;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.jobs.max(1))
        .build()
        .map_err(|e| ScenarioError::Options(format!("cannot start worker threads: {e}")))?;
    let stop = AtomicBool::new(false);
    let seeds = seeds(options);
    let results: Vec<Result<Option<SeedOutcome>, ScenarioError>> = pool.install(|| {
        seeds
            .par_iter()
            .with_max_len(1)
            .map(|&seed| {
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                let run_options = RunOptions {
                    bugs: options.bugs.clone(),
                    ..RunOptions::seed(seed)
                };
                let report = run(scenario, run_options)?;
                let outcome = SeedOutcome {
                    seed,
                    trace_hash: report.trace_hash,
                    events: report.stats.queue_events,
                    violations: report.violations,
                    metrics: report.metrics,
                };
                if !outcome.passed() && options.stop_on_first {
                    stop.store(true, Ordering::Relaxed);
                }
                on_outcome(&outcome);
                Ok(Some(outcome))
            })
            .collect()
    });
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        if let Some(outcome) = result? {
            outcomes.push(outcome);
        }
    }
    outcomes.sort_by_key(|o| o.seed);
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges() {
        assert_eq!(
            SeedRange::parse("0..10"),
            Ok(SeedRange { start: 0, end: 10 })
        );
        assert_eq!(
            SeedRange::parse("5..=7"),
            Ok(SeedRange { start: 5, end: 8 })
        );
        assert_eq!(SeedRange::parse("42"), Ok(SeedRange { start: 42, end: 43 }));
        for bad in ["", "a..b", "10..5", "3..3", "1...4", "-1..4"] {
            assert!(SeedRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_partition_the_range() {
        let range = SeedRange { start: 3, end: 40 };
        let mut seen = Vec::new();
        for k in 1..=4 {
            let shard = Shard::parse(&format!("{k}/4")).unwrap();
            let options = ExploreOptions {
                seeds: range,
                shard: Some(shard),
                jobs: 1,
                bugs: vec![],
                stop_on_first: false,
            };
            seen.extend(seeds(&options));
        }
        seen.sort();
        assert_eq!(seen, (3..40).collect::<Vec<_>>());
        for bad in ["0/4", "5/4", "1/0", "x/2", "3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }
}
