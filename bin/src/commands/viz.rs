//! `faultline viz`: a space-time diagram of one run (or of a saved trace) as one
//! self-contained HTML page. The page itself is built by `crate::viz`.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Context;
use scenarios::RunOptions;
use sim_core::SimTime;
use sim_core::trace::format_hash;

use super::{bug_args, check_bugs, input_error, load, parse_time};
use crate::Outcome;
use crate::viz::{self, MAX_DRAWN_PER_LAYER, MAX_EMBEDDED_EVENTS, RunInfo, Window};

#[derive(Debug, clap::Args)]
#[command(after_help = limits_help())]
pub struct Args {
    /// The scenario file (TOML); or give --trace instead.
    #[arg(required_unless_present = "trace")]
    file: Option<PathBuf>,
    /// The seed to draw.
    #[arg(long, required_unless_present = "trace")]
    seed: Option<u64>,
    /// Switch a bug flag on (repeatable).
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Draw a saved trace (JSON Lines from `run --trace` or `replay --trace`) instead of
    /// running a scenario. A saved trace carries no checker verdicts.
    #[arg(long, value_name = "TRACE.jsonl", conflicts_with_all = ["file", "seed", "bugs"])]
    trace: Option<PathBuf>,
    /// The page to write (default: `<scenario>-seed<N>.html`, or the trace's name with
    /// `.html`, in the current directory).
    #[arg(short = 'o', long = "out", value_name = "OUT.html")]
    out: Option<PathBuf>,
    /// Keep events from this time on (e.g. `1.5s`).
    #[arg(long, value_parser = parse_time)]
    from: Option<SimTime>,
    /// Keep events up to this time.
    #[arg(long, value_parser = parse_time)]
    to: Option<SimTime>,
    /// Keep only events concerning this node (repeatable; partitions, heals and the
    /// quiet phase are always kept).
    #[arg(long = "node")]
    nodes: Vec<u32>,
}

/// The limits, for `--help`: the numbers are `MAX_EMBEDDED_EVENTS` and
/// `MAX_DRAWN_PER_LAYER`, written out (clap wants a constant string) and kept in step by
/// the unit test below.
const fn limits_help() -> &'static str {
    "Limits: a page holds at most 250000 events of the chosen window (a longer window is cut \
     there, and the page says so; choose one with --from/--to/--node). The page draws at \
     most 3000 elements of one kind (message arrows, client operations, observations, lane \
     marks, timers) in the current view; a kind with more is drawn as per-lane density until \
     the view is zoomed in, so a large trace never freezes the browser."
}

pub fn viz(args: Args) -> anyhow::Result<Outcome> {
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from > to
    {
        anyhow::bail!("--from {from} is after --to {to}");
    }
    let window = Window {
        from: args.from.map(|t| t.0),
        to: args.to.map(|t| t.0),
        nodes: args.nodes.clone(),
    };
    let mut window_args = String::new();
    if let Some(t) = args.from {
        window_args.push_str(&format!(" --from {}", sim_core::SimDuration(t.0)));
    }
    if let Some(t) = args.to {
        window_args.push_str(&format!(" --to {}", sim_core::SimDuration(t.0)));
    }
    for n in &args.nodes {
        window_args.push_str(&format!(" --node {n}"));
    }
    let (page, stats, out, outcome) = if let Some(trace) = &args.trace {
        let file = File::open(trace).with_context(|| format!("cannot open {}", trace.display()))?;
        let name = stem(trace);
        let run = RunInfo {
            title: name.clone(),
            command: format!("faultline viz --trace {}{window_args}", trace.display()),
            note: Some(
                "A saved trace carries no checker verdicts: draw the scenario's seed with \
                 `faultline viz FILE --seed N` to see its violations."
                    .into(),
            ),
            ..RunInfo::default()
        };
        let (page, stats) = viz::render(BufReader::new(file), &run, &window)
            .with_context(|| format!("reading {}", trace.display()))?;
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{name}.html")));
        (page, stats, out, Outcome::Clean)
    } else {
        // clap guarantees both without --trace.
        let (Some(file), Some(seed)) = (&args.file, args.seed) else {
            anyhow::bail!("give a scenario FILE and --seed N, or --trace TRACE.jsonl");
        };
        let scenario = load(file)?;
        check_bugs(&scenario, &args.bugs)?;
        for &n in &args.nodes {
            if n as usize >= scenario.sim.node_count {
                anyhow::bail!("--node {n} is outside 0..{}", scenario.sim.node_count);
            }
        }
        say!("seed: {seed}");
        let buffer = scenarios::runner::SharedBuffer::default();
        let options = RunOptions {
            seed,
            bugs: args.bugs.clone(),
            jsonl: Some(Box::new(buffer.clone())),
            ..RunOptions::seed(seed)
        };
        let report = scenarios::run(&scenario, options).map_err(input_error)?;
        if let Some(e) = &report.trace_error {
            anyhow::bail!("recording the trace failed: {e}");
        }
        let bytes = buffer.take().map_err(input_error)?;
        let mut bugs: Vec<String> = scenario.bugs.clone();
        for b in &args.bugs {
            if !bugs.contains(b) {
                bugs.push(b.clone());
            }
        }
        let run = RunInfo {
            title: scenario.name.clone(),
            protocol: Some(scenario.protocol.name.to_string()),
            seed: Some(seed),
            bugs,
            node_count: Some(scenario.sim.node_count),
            command: format!(
                "faultline viz {} --seed {seed}{}{window_args}",
                file.display(),
                bug_args(&args.bugs)
            ),
            violations: report.violations.clone(),
            note: None,
        };
        let (page, stats) = viz::render(bytes.as_slice(), &run, &window)?;
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}-seed{seed}.html", stem(file))));
        if report.passed() {
            say!("result: ok (checked: {})", scenario.checkers.join(", "));
        } else {
            super::run::print_violations(&report);
        }
        say!("trace-hash: {}", format_hash(report.trace_hash));
        let outcome = if report.passed() {
            Outcome::Clean
        } else {
            Outcome::Violation
        };
        (page, stats, out, outcome)
    };
    std::fs::write(&out, &page).with_context(|| format!("cannot write {}", out.display()))?;
    say!(
        "page: {} ({} bytes; {} of {} trace events{})",
        out.display(),
        stats.bytes,
        stats.embedded_events,
        stats.trace_events,
        if stats.cut {
            format!(", cut at the page limit of {MAX_EMBEDDED_EVENTS}")
        } else {
            String::new()
        }
    );
    say!(
        "open it in a browser (file://{}); at most {MAX_DRAWN_PER_LAYER} elements of one kind are drawn at once",
        std::fs::canonicalize(&out).unwrap_or(out.clone()).display()
    );
    Ok(outcome)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "trace".into(), |s| s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_states_the_limits_the_code_uses() {
        let help = limits_help().replace(' ', "");
        assert!(help.contains(&format!("atmost{MAX_EMBEDDED_EVENTS}events")));
        assert!(help.contains(&format!("atmost{MAX_DRAWN_PER_LAYER}elements")));
    }
}
