//! Sweeping seeds: ranges, shards, and a parallel run of one seed per worker.
//!
//! Each seed's run is single-threaded and deterministic; only whole seeds run in
//! parallel, so the set of results does not depend on `jobs` (only the order in which
//! they are reported does; summaries are sorted by seed).

use std::sync::atomic::{AtomicBool, Ordering};

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::ScenarioError;
use crate::runner::{RunOptions, run};
use crate::scenario::Scenario;
use sim_core::Violation;

/// A half-open range of seeds, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The coverage points this seed reached, with counts.
    pub coverage: BTreeMap<&'static str, u64>,
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
                    coverage: report.coverage,
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

/// A failing seed, as a sweep reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub seed: u64,
    /// The kind of the first violation.
    pub kind: String,
    /// The first violation, as printed.
    pub message: String,
    pub trace_hash: String,
}

/// How often a sweep reached one coverage point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reach {
    /// Total visits over every seed.
    pub hits: u64,
    /// Seeds that reached it at least once.
    pub seeds: u64,
}

/// The outcome of a sweep, or of one shard of it: everything but timing, so that
/// merging the shards of a sweep ([`merge`]) gives exactly the report of the whole
/// sweep run at once. This is the `report` object of `faultline explore --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub scenario: String,
    pub protocol: String,
    pub seeds: SeedRange,
    /// The shard this report covers; `None` for a whole sweep (or a complete merge).
    pub shard: Option<Shard>,
    pub bugs: Vec<String>,
    /// Whether the sweep stopped after its first failure (such reports do not merge).
    pub stop_on_first: bool,
    pub seeds_run: u64,
    /// Kernel events over every seed.
    pub events: u64,
    /// Failing seeds, by seed.
    pub failures: Vec<Failure>,
    /// Every point reached, by name.
    pub coverage: BTreeMap<String, Reach>,
    /// The points the scenario can reach (kernel faults, the protocol's and the engines'
    /// marks) that no seed reached, in declaration order.
    pub never_reached: Vec<String>,
    /// The scenario's `expect_reached`.
    pub expect_reached: Vec<String>,
    /// The expected points no seed reached: non-empty makes the sweep fail with the
    /// kind `coverage`.
    pub expected_not_reached: Vec<String>,
    /// Each metric's values over the seeds, sorted.
    pub metrics: BTreeMap<String, Vec<u64>>,
}

impl SweepReport {
    /// Summarises a sweep's outcomes (in any order).
    pub fn new(scenario: &Scenario, options: &ExploreOptions, outcomes: &[SeedOutcome]) -> Self {
        let mut sorted: Vec<&SeedOutcome> = outcomes.iter().collect();
        sorted.sort_by_key(|o| o.seed);
        let mut coverage: BTreeMap<String, Reach> = BTreeMap::new();
        let mut metrics: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for o in &sorted {
            for (name, hits) in &o.coverage {
                let reach = coverage.entry(name.to_string()).or_default();
                reach.hits += hits;
                reach.seeds += 1;
            }
            for m in &o.metrics {
                metrics.entry(m.name.to_string()).or_default().push(m.value);
            }
        }
        for values in metrics.values_mut() {
            values.sort_unstable();
        }
        let mut report = SweepReport {
            scenario: scenario.name.clone(),
            protocol: scenario.protocol.name.to_string(),
            seeds: options.seeds,
            shard: options.shard,
            bugs: options.bugs.clone(),
            stop_on_first: options.stop_on_first,
            seeds_run: sorted.len() as u64,
            events: sorted.iter().map(|o| o.events).sum(),
            failures: sorted
                .iter()
                .filter(|o| !o.passed())
                .map(|o| Failure {
                    seed: o.seed,
                    kind: o.kind().unwrap_or("?").to_string(),
                    message: o.violations[0].to_string(),
                    trace_hash: sim_core::trace::format_hash(o.trace_hash),
                })
                .collect(),
            coverage,
            never_reached: crate::coverage::points(scenario.protocol)
                .iter()
                .map(|p| p.name.to_string())
                .collect(),
            expect_reached: scenario.expect_reached.clone(),
            expected_not_reached: Vec::new(),
            metrics,
        };
        report.settle_reach();
        report
    }

    /// Recomputes `never_reached` and `expected_not_reached` from `coverage` (the
    /// declared points are the ones `never_reached` held plus those reached).
    fn settle_reach(&mut self) {
        let coverage = &self.coverage;
        self.never_reached
            .retain(|name| !coverage.contains_key(name));
        self.expected_not_reached = self
            .expect_reached
            .iter()
            .filter(|name| !coverage.contains_key(*name))
            .cloned()
            .collect();
    }

    /// Whether the sweep failed: a failing seed, or an expected point never reached.
    pub fn failed(&self) -> bool {
        !self.failures.is_empty() || !self.expected_not_reached.is_empty()
    }
}

/// Why shard reports cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge")]
    Empty,
    #[error("report {index} is of a different sweep: its {what} differs from the first report's")]
    DifferentSweep { index: usize, what: &'static str },
    #[error("report {index} is a whole sweep, not a shard; only shards of one sweep merge")]
    NotAShard { index: usize },
    #[error("shard {shard} appears twice")]
    DuplicateShard { shard: String },
    #[error("shards missing: {missing}; every shard K/N of the sweep is needed")]
    MissingShards { missing: String },
    #[error(
        "report {index} stopped at its first failure (--stop-on-first); such sweeps do not merge"
    )]
    StoppedEarly { index: usize },
}

/// Merges the reports of every shard `1/N .. N/N` of one sweep into the report of the
/// whole sweep: the same failures, coverage, metrics and counts, in the same order, as
/// running it unsharded.
pub fn merge(reports: &[SweepReport]) -> Result<SweepReport, MergeError> {
    let first = reports.first().ok_or(MergeError::Empty)?;
    let Some(first_shard) = first.shard else {
        return Err(MergeError::NotAShard { index: 1 });
    };
    let count = first_shard.count;
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        let index = i + 1;
        let differs = |what| Err(MergeError::DifferentSweep { index, what });
        if r.scenario != first.scenario {
            return differs("scenario");
        }
        if r.protocol != first.protocol {
            return differs("protocol");
        }
        if r.seeds != first.seeds {
            return differs("seed range");
        }
        if r.bugs != first.bugs {
            return differs("bug flags");
        }
        if r.expect_reached != first.expect_reached {
            return differs("expect_reached");
        }
        if r.stop_on_first {
            return Err(MergeError::StoppedEarly { index });
        }
        let Some(shard) = r.shard else {
            return Err(MergeError::NotAShard { index });
        };
        if shard.count != count {
            return differs("shard count");
        }
        if seen.insert(shard.index, index).is_some() {
            return Err(MergeError::DuplicateShard {
                shard: format!("{}/{}", shard.index, shard.count),
            });
        }
    }
    let missing: Vec<String> = (1..=count)
        .filter(|k| !seen.contains_key(k))
        .map(|k| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::MissingShards {
            missing: missing.join(", "),
        });
    }
    let mut merged = SweepReport {
        shard: None,
        seeds_run: 0,
        events: 0,
        failures: Vec::new(),
        coverage: BTreeMap::new(),
        never_reached: Vec::new(),
        expected_not_reached: Vec::new(),
        metrics: BTreeMap::new(),
        ..first.clone()
    };
    for r in reports {
        merged.seeds_run += r.seeds_run;
        merged.events += r.events;
        merged.failures.extend(r.failures.iter().cloned());
        for (name, reach) in &r.coverage {
            let total = merged.coverage.entry(name.clone()).or_default();
            total.hits += reach.hits;
            total.seeds += reach.seeds;
        }
        for (name, values) in &r.metrics {
            merged
                .metrics
                .entry(name.clone())
                .or_default()
                .extend(values);
        }
    }
    // A declared point is unreached by the whole sweep exactly when every shard left
    // it unreached.
    merged.never_reached = first
        .never_reached
        .iter()
        .filter(|name| reports.iter().all(|r| r.never_reached.contains(name)))
        .cloned()
        .collect();
    merged.failures.sort_by_key(|f| f.seed);
    for values in merged.metrics.values_mut() {
        values.sort_unstable();
    }
    merged.settle_reach();
    Ok(merged)
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
