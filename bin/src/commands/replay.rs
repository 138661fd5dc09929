//! `faultline replay`: the same seed again, with the events that led to the violation.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Context;
use scenarios::{RunOptions, TraceFilter};
use scenarios::{diff, regressions};
use sim_core::trace::format_hash;
use sim_core::{NodeId, SimTime};

use super::{check_bugs, input_error, load, parse_time};
use crate::Outcome;

/// Events shown before a violation when no window is given.
const DEFAULT_WINDOW: usize = 60;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (TOML).
    file: PathBuf,
    /// The seed to replay.
    #[arg(long)]
    seed: u64,
    /// Switch a bug flag on (repeatable).
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Also write the full trace as JSON Lines to this file.
    #[arg(long, value_name = "OUT.jsonl")]
    trace: Option<PathBuf>,
    /// Show events from this time on (e.g. `1.5s`).
    #[arg(long, value_parser = parse_time)]
    from: Option<SimTime>,
    /// Show events up to this time.
    #[arg(long, value_parser = parse_time)]
    to: Option<SimTime>,
    /// Show only events concerning this node (repeatable).
    #[arg(long = "node")]
    nodes: Vec<u32>,
    /// A trace recorded earlier for this seed (`run --trace`, `replay --trace`): if this
    /// run differs from it, show the first event where they part (and exit 1).
    #[arg(long, value_name = "TRACE.jsonl")]
    against: Option<PathBuf>,
}

pub fn replay(args: Args) -> anyhow::Result<Outcome> {
    let scenario = load(&args.file)?;
    check_bugs(&scenario, &args.bugs)?;
    for &n in &args.nodes {
        if n as usize >= scenario.sim.node_count {
            anyhow::bail!("--node {n} is outside 0..{}", scenario.sim.node_count);
        }
    }
    say!("seed: {}", args.seed);
    let jsonl: Option<Box<dyn std::io::Write>> = match &args.trace {
        Some(path) => Some(Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ))),
        None => None,
    };
    let options = RunOptions {
        seed: args.seed,
        bugs: args.bugs.clone(),
        keep_trace_lines: true,
        jsonl,
        keep_history: args.trace.is_some(),
    };
    let report = scenarios::run(&scenario, options).map_err(input_error)?;
    let filter = TraceFilter {
        nodes: args.nodes.iter().map(|&n| NodeId(n)).collect(),
        kinds: Vec::new(),
        from: args.from,
        to: args.to,
    };
    let chosen_window = args.from.is_some() || args.to.is_some() || !args.nodes.is_empty();
    let violation_time = report.violations.iter().filter_map(|v| v.time).min();
    let mut focus: Vec<NodeId> = report
        .violations
        .iter()
        .flat_map(|v| v.nodes.clone())
        .collect();
    focus.sort();
    focus.dedup();
    let lines: Vec<_> = report
        .trace_lines
        .iter()
        .filter(|l| filter.matches(l))
        .filter(|l| {
            if chosen_window {
                return true;
            }
            match violation_time {
                // Everything up to the first breaking event.
                Some(t) => l.time <= t,
                // A property judged at the end: what happened to the nodes it names,
                // without the timer ticks.
                None => {
                    l.kind != "timer"
                        && (focus.is_empty() || l.nodes.iter().flatten().any(|n| focus.contains(n)))
                }
            }
        })
        .collect();
    let shown = if chosen_window {
        &lines[..]
    } else {
        &lines[lines.len().saturating_sub(DEFAULT_WINDOW)..]
    };
    let names: Vec<String> = focus.iter().map(ToString::to_string).collect();
    let heading = match (chosen_window, violation_time, report.violations.is_empty()) {
        (true, _, _) => format!("events in the chosen window ({} shown):", shown.len()),
        (false, Some(t), _) => format!(
            "the last {} events up to the first violation at {t} ({} in the trace; choose a window with --from/--to/--node):",
            shown.len(),
            report.trace_lines.len()
        ),
        (false, None, false) => format!(
            "the last {} events concerning {} (timers omitted; the violation was judged at the end of the run; choose a window with --from/--to/--node):",
            shown.len(),
            if names.is_empty() {
                "any node".to_string()
            } else {
                names.join(", ")
            }
        ),
        (false, None, true) => format!("the last {} events of the run:", shown.len()),
    };
    say!("{heading}");
    for line in shown {
        say!("{line}");
    }
    if report.violations.is_empty() {
        say!(
            "result: ok, no violation (checked: {})",
            scenario.checkers.join(", ")
        );
    } else {
        say!("violations:");
        for v in report.violations.iter().take(10) {
            say!(
                "  {} — checker {}, property \"{}\"",
                v.kind,
                v.checker,
                v.property
            );
            say!("    {}", v.message);
            if let Some(t) = v.time {
                say!("    at {t}");
            }
        }
        if report.violations.len() > 10 {
            say!("  ... and {} more", report.violations.len() - 10);
        }
    }
    if let Some(e) = &report.trace_error {
        anyhow::bail!("writing the trace failed: {e}");
    }
    if let Some(path) = &args.trace {
        super::run::write_history(path, &report)?;
    }
    let hash = format_hash(report.trace_hash);
    let recorded = regressions::load(&args.file).map_err(input_error)?;
    let mut bugs = args.bugs.clone();
    bugs.sort();
    if let Some(r) = recorded.iter().find(|r| {
        let mut theirs = r.bugs.clone();
        theirs.sort();
        r.seed == args.seed && theirs == bugs
    }) {
        if r.trace_hash == hash {
            say!("determinism: the trace hash matches the one recorded for this seed");
        } else {
            say!(
                "determinism: this seed was recorded with trace-hash {}, now {hash}",
                r.trace_hash
            );
            explain_hash_mismatch(&scenario, &args)?;
        }
    }
    let mut parted = false;
    if let Some(path) = &args.against {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let recorded =
            diff::recorded(&path.display().to_string(), &text).map_err(anyhow::Error::msg)?;
        let (fresh, _) = diff::fresh(&scenario, args.seed, &args.bugs).map_err(input_error)?;
        let divergence = diff::first_divergence(&fresh, &recorded, 8);
        parted = divergence.is_some();
        say!(
            "against the recorded trace:\n{}",
            diff::render(&fresh, &recorded, divergence.as_ref()).trim_end()
        );
    }
    say!("seed: {}", args.seed);
    say!("trace-hash: {hash}");
    Ok(if report.passed() && !parted {
        Outcome::Clean
    } else {
        Outcome::Violation
    })
}

/// A recorded hash no longer matches: run the seed twice more and compare. If the two
/// runs part, the simulation is not deterministic, and the first differing event says
/// where; if they agree, the code changed since the seed was recorded.
fn explain_hash_mismatch(scenario: &scenarios::Scenario, args: &Args) -> anyhow::Result<()> {
    let (first, _) = diff::fresh(scenario, args.seed, &args.bugs).map_err(input_error)?;
    let (second, _) = diff::fresh(scenario, args.seed, &args.bugs).map_err(input_error)?;
    match diff::first_divergence(&first, &second, 8) {
        Some(d) => say!(
            "determinism broke: two runs of this seed in one process part:\n{}",
            diff::render(&first, &second, Some(&d)).trim_end()
        ),
        None => say!(
            "determinism holds (two runs of this seed agree event by event): the code or \
             the scenario changed since the seed was recorded; to see where, diff against \
             a trace recorded then: `faultline replay {} --seed {}{} --against OLD.jsonl`",
            args.file.display(),
            args.seed,
            super::bug_args(&args.bugs)
        ),
    }
    Ok(())
}
