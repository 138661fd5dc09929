//! `faultline explore`: a parallel sweep over seeds.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use scenarios::explore::{ExploreOptions, SeedOutcome, SeedRange, Shard, SweepReport};
use scenarios::regressions::{self, Regression};
use sim_core::trace::format_hash;

use super::{bug_args, check_bugs, input_error, load};
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (TOML).
    file: PathBuf,
    /// Seeds to run: `A..B` (B excluded), `A..=B`, or one seed.
    #[arg(long, value_name = "A..B", value_parser = SeedRange::parse)]
    seeds: SeedRange,
    /// Worker threads, each running one seed at a time (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only shard K of N (1-based) of the seeds, to spread a sweep over machines.
    #[arg(long, value_name = "K/N", value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// Switch a bug flag on (repeatable).
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Stop after the first failure.
    #[arg(long)]
    stop_on_first: bool,
    /// End with one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Do not append failing seeds to the scenario's regression file.
    #[arg(long)]
    no_record: bool,
    /// Also write the JSON result (as `--json` prints it) to this file: one shard's
    /// result for `faultline merge`.
    #[arg(long, value_name = "RESULT.json")]
    out: Option<PathBuf>,
}

pub fn explore(args: Args) -> anyhow::Result<Outcome> {
    let scenario = load(&args.file)?;
    check_bugs(&scenario, &args.bugs)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        anyhow::bail!("--jobs must be at least 1");
    }
    let options = ExploreOptions {
        seeds: args.seeds,
        shard: args.shard,
        jobs,
        bugs: args.bugs.clone(),
        stop_on_first: args.stop_on_first,
    };
    let total = scenarios::explore::seeds(&options).len() as u64;
    tracing::debug!(total, jobs, shard = ?args.shard, bugs = ?args.bugs, "starting sweep");
    let file = args.file.display().to_string();
    let bugs = bug_args(&args.bugs);
    say!(
        "exploring {file}: {total} seeds ({}..{}{}) on {jobs} worker(s){}",
        args.seeds.start,
        args.seeds.end,
        args.shard.map_or(String::new(), |s| format!(
            ", shard {}/{}",
            s.index, s.count
        )),
        if args.bugs.is_empty() {
            String::new()
        } else {
            format!(", bugs:{bugs}")
        }
    );
    let interactive = std::io::stdout().is_terminal() && !args.json;
    let bar = if interactive {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} seeds  {per_sec}  eta {eta}  {msg}")
                .expect("valid template"),
        );
        bar.set_message("failures: 0");
        Some(bar)
    } else {
        None
    };
    let progress = Mutex::new((0u64, 0u64)); // (done, failed)
    let started = Instant::now();
    let report_failure = |o: &SeedOutcome| {
        let first = &o.violations[0];
        format!(
            "FAIL seed {}: {first}\n  replay: faultline replay {file} --seed {}{bugs}",
            o.seed, o.seed
        )
    };
    let outcomes = scenarios::explore::explore(&scenario, &options, |o| {
        let Ok(mut p) = progress.lock() else { return };
        p.0 += 1;
        if !o.passed() {
            p.1 += 1;
        }
        match &bar {
            Some(bar) => {
                if !o.passed() {
                    bar.println(report_failure(o));
                }
                bar.set_message(format!("failures: {}", p.1));
                bar.inc(1);
            }
            None => {
                if !o.passed() {
                    say!("{}", report_failure(o));
                }
                let step = (total / 10).max(1);
                if p.0 % step == 0 || p.0 == total {
                    say!(
                        "progress: {}/{total} seeds, {} failed, {:.1} seeds/s",
                        p.0,
                        p.1,
                        p.0 as f64 / started.elapsed().as_secs_f64().max(1e-9)
                    );
                }
            }
        }
    })
    .map_err(input_error)?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    tracing::debug!(
        elapsed_secs = elapsed,
        seeds = outcomes.len(),
        "sweep finished"
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let failures: Vec<&SeedOutcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    let events: u64 = outcomes.iter().map(|o| o.events).sum();
    let seeds_per_sec = outcomes.len() as f64 / elapsed;
    let events_per_sec = events as f64 / elapsed;
    say!(
        "seeds: {} run, {} failed in {elapsed:.2}s ({seeds_per_sec:.1} seeds/s, {:.2}M events/s)",
        outcomes.len(),
        failures.len(),
        events_per_sec / 1e6
    );
    if !failures.is_empty() {
        let mut by_kind: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
        for f in &failures {
            by_kind
                .entry(f.kind().unwrap_or("?"))
                .or_default()
                .push(f.seed);
        }
        for (kind, seeds) in &by_kind {
            let shown: Vec<String> = seeds.iter().take(20).map(u64::to_string).collect();
            say!(
                "  {kind}: {} seed(s): {}{}",
                seeds.len(),
                shown.join(", "),
                if seeds.len() > 20 { ", ..." } else { "" }
            );
        }
        if !args.no_record {
            let recorded: Vec<Regression> = failures
                .iter()
                .map(|f| Regression {
                    seed: f.seed,
                    bugs: args.bugs.clone(),
                    kind: f.kind().unwrap_or("?").to_string(),
                    trace_hash: format_hash(f.trace_hash),
                })
                .collect();
            let added = regressions::append(&args.file, &recorded).map_err(input_error)?;
            say!(
                "regressions: {added} new seed(s) recorded in {}",
                regressions::path_for(&args.file).display()
            );
        }
    }
    let report = SweepReport::new(&scenario, &options, &outcomes);
    print_metrics(&report);
    print_coverage(&report);
    let mut value = result_json(&report);
    value["seeds_per_sec"] = seeds_per_sec.into();
    value["events_per_sec"] = events_per_sec.into();
    emit_result(&value, args.out.as_deref(), args.json)?;
    Ok(if report.failed() {
        Outcome::Violation
    } else {
        Outcome::Clean
    })
}

/// A sweep's result as `--json` prints it: a summary (scenario, seeds run, failures,
/// metrics, the coverage failure if any) and the whole deterministic `report`.
pub fn result_json(report: &SweepReport) -> serde_json::Value {
    let mut value = serde_json::json!({
        "scenario": report.scenario,
        "seeds_run": report.seeds_run,
        "failures": report.failures.iter().map(|f| serde_json::json!({
            "seed": f.seed,
            "kind": f.kind,
            "trace_hash": f.trace_hash,
        })).collect::<Vec<_>>(),
        "coverage_failure": coverage_failure(report),
        "report": report,
    });
    let metrics = summarise_metrics(report);
    if !metrics.is_empty() {
        // Protocols that measure nothing have no `metrics` key.
        value["metrics"] = serde_json::Value::Object(metrics.into_iter().collect());
    }
    value
}

/// Writes a result to `out` (if given) and prints it as the last line (if `json`).
pub fn emit_result(
    value: &serde_json::Value,
    out: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(out) = out {
        std::fs::write(out, format!("{value}\n"))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    if json {
        say!("{value}");
    }
    Ok(())
}

/// `{"kind": "coverage", "expected_not_reached": [...]}` when the sweep missed an
/// expected point, else null.
pub fn coverage_failure(report: &SweepReport) -> serde_json::Value {
    if report.expected_not_reached.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!({
            "kind": "coverage",
            "expected_not_reached": report.expected_not_reached,
        })
    }
}

/// Prints each metric's median, maximum and total.
pub fn print_metrics(report: &SweepReport) {
    for (name, summary) in summarise_metrics(report) {
        say!(
            "  {name}: median {}, max {}, total {} over {} seeds",
            summary["median"],
            summary["max"],
            summary["total"],
            report.seeds_run
        );
    }
}

/// Prints what the sweep reached: faults injected and rare paths, then what it never
/// reached, then (a failure of the kind `coverage`) the expected points it missed.
pub fn print_coverage(report: &SweepReport) {
    let line = |prefix: &str| {
        let reached: Vec<String> = report
            .coverage
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, r)| format!("{name} {}/{}", r.seeds, report.seeds_run))
            .collect();
        reached.join(", ")
    };
    let faults: Vec<String> = ["fault.", "net.", "disk."]
        .iter()
        .map(|p| line(p))
        .filter(|l| !l.is_empty())
        .collect();
    say!(
        "coverage: faults injected (seeds): {}",
        if faults.is_empty() {
            "none".to_string()
        } else {
            faults.join(", ")
        }
    );
    let paths: Vec<String> = report
        .coverage
        .iter()
        .filter(|(name, _)| {
            !["fault.", "net.", "disk."]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .map(|(name, r)| format!("{name} {}/{}", r.seeds, report.seeds_run))
        .collect();
    if !paths.is_empty() {
        say!("coverage: paths reached (seeds): {}", paths.join(", "));
    }
    if !report.never_reached.is_empty() {
        say!(
            "coverage: never reached: {}",
            report.never_reached.join(", ")
        );
    }
    if !report.expected_not_reached.is_empty() {
        say!(
            "FAIL coverage: expected but never reached in {} seeds: {} (expect_reached)",
            report.seeds_run,
            report.expected_not_reached.join(", ")
        );
    }
}

/// Per metric a protocol reports: its median, maximum and total over the sweep's seeds
/// (none for protocols that measure nothing).
pub fn summarise_metrics(report: &SweepReport) -> Vec<(String, serde_json::Value)> {
    report
        .metrics
        .iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(name, values)| {
            let median = values[values.len() / 2];
            let max = values.last().copied().unwrap_or(0);
            let total: u64 = values.iter().sum();
            (
                name.clone(),
                serde_json::json!({ "median": median, "max": max, "total": total }),
            )
        })
        .collect()
}
