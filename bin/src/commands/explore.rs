//! `faultline explore`: a parallel sweep over seeds.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use scenarios::explore::{ExploreOptions, SeedOutcome, SeedRange, Shard};
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
    let metrics = summarise_metrics(&outcomes);
    if !metrics.is_empty() {
        for (name, summary) in &metrics {
            say!(
                "  {name}: median {}, max {}, total {} over {} seeds",
                summary["median"],
                summary["max"],
                summary["total"],
                outcomes.len()
            );
        }
    }
    if args.json {
        let mut value = serde_json::json!({
            "scenario": scenario.name,
            "seeds_run": outcomes.len(),
            "failures": failures.iter().map(|f| serde_json::json!({
                "seed": f.seed,
                "kind": f.kind(),
                "trace_hash": format_hash(f.trace_hash),
            })).collect::<Vec<_>>(),
            "seeds_per_sec": seeds_per_sec,
            "events_per_sec": events_per_sec,
        });
        if !metrics.is_empty() {
            value["metrics"] = serde_json::Value::Object(metrics.into_iter().collect());
        }
        say!("{value}");
    }
    Ok(if failures.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Violation
    })
}

/// Per metric a protocol reports: its median, maximum and total over the sweep's seeds
/// (none for protocols that measure nothing).
fn summarise_metrics(outcomes: &[SeedOutcome]) -> Vec<(String, serde_json::Value)> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for o in outcomes {
        for m in &o.metrics {
            by_name.entry(m.name).or_default().push(m.value);
        }
    }
    by_name
        .into_iter()
        .map(|(name, mut values)| {
            values.sort_unstable();
            let median = values[values.len() / 2];
            let max = values.last().copied().unwrap_or(0);
            let total: u64 = values.iter().sum();
            (
                name.to_string(),
                serde_json::json!({ "median": median, "max": max, "total": total }),
            )
        })
        .collect()
}
