//! `faultline`: run, check and list deterministic simulations.
//!
//! Exit status everywhere: 0 no violation, 1 a violation was found, 2 bad input (a bad
//! scenario file or bad arguments).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use scenarios::registry::PROTOCOLS;
use scenarios::{RunOptions, RunReport, Scenario, ScenarioError};
use sim_core::fault::FaultKind;
use sim_core::trace::format_hash;

/// A deterministic simulator of distributed systems: one seed decides every message
/// delay, drop, partition, crash and torn write.
#[derive(Debug, Parser)]
#[command(name = "faultline", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario for one seed, print a summary, and check it.
    Run {
        /// The scenario file (TOML).
        file: PathBuf,
        /// The seed (default: the scenario's `seed`, or 1).
        #[arg(long)]
        seed: Option<u64>,
        /// Switch a bug flag on (repeatable).
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<String>,
        /// Write the full trace as JSON Lines to this file.
        #[arg(long, value_name = "OUT.jsonl")]
        trace: Option<PathBuf>,
        /// Print the trace as text (one line per event).
        #[arg(long)]
        print_trace: bool,
    },
    /// Validate a scenario file.
    Check {
        /// The scenario file (TOML).
        file: PathBuf,
    },
    /// List protocols, checkers, bug flags and fault kinds.
    List {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Prints a line to stdout. Unlike `println!`, a closed pipe (`faultline run … | head`)
/// is not a panic: output stops and the exit status still reports the outcome.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// How many violations `run` lists before summarising the rest by kind.
const VIOLATIONS_LISTED: usize = 10;

/// A violation found (exit 1) versus bad input (exit 2).
enum Outcome {
    Clean,
    Violation,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout with exit 0, and usage errors with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match execute(cli.command) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Violation) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn execute(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Run {
            file,
            seed,
            bugs,
            trace,
            print_trace,
        } => run(&file, seed, bugs, trace, print_trace),
        Command::Check { file } => {
            let scenario = load(&file)?;
            say!(
                "{}: ok ({} protocol, {} nodes, {}, checkers: {})",
                file.display(),
                scenario.protocol.name,
                scenario.sim.node_count,
                scenario.sim.duration,
                scenario.checkers.join(", ")
            );
            Ok(Outcome::Clean)
        }
        Command::List { json } => {
            list(json);
            Ok(Outcome::Clean)
        }
    }
}

fn load(file: &Path) -> anyhow::Result<Scenario> {
    Scenario::load(file).map_err(anyhow::Error::from)
}

fn run(
    file: &Path,
    seed: Option<u64>,
    bugs: Vec<String>,
    trace: Option<PathBuf>,
    print_trace: bool,
) -> anyhow::Result<Outcome> {
    let scenario = load(file)?;
    for name in &bugs {
        scenarios::registry::check_bug_flag(scenario.protocol, name).map_err(anyhow::Error::msg)?;
    }
    let seed = seed.unwrap_or(scenario.default_seed);
    say!("seed: {seed}");
    let jsonl: Option<Box<dyn std::io::Write>> = match &trace {
        Some(path) => Some(Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ))),
        None => None,
    };
    let options = RunOptions {
        seed,
        bugs: bugs.clone(),
        keep_trace_lines: print_trace,
        jsonl,
    };
    let report = scenarios::run(&scenario, options).map_err(|e| match e {
        ScenarioError::Options(message) => anyhow::anyhow!(message),
        other => anyhow::Error::from(other),
    })?;
    if print_trace {
        for line in &report.trace_lines {
            say!("{line}");
        }
    }
    print_summary(&scenario, &report);
    if let Some(e) = &report.trace_error {
        anyhow::bail!("writing the trace failed: {e}");
    }
    if let Some(path) = &trace {
        say!("trace: {}", path.display());
    }
    let outcome = if report.passed() {
        say!("result: ok (checked: {})", scenario.checkers.join(", "));
        Outcome::Clean
    } else {
        say!("result: {} violation(s)", report.violations.len());
        for v in report.violations.iter().take(VIOLATIONS_LISTED) {
            say!("  {v}");
        }
        if report.violations.len() > VIOLATIONS_LISTED {
            let mut by_kind: std::collections::BTreeMap<&str, usize> = Default::default();
            for v in &report.violations[VIOLATIONS_LISTED..] {
                *by_kind.entry(v.kind.as_str()).or_default() += 1;
            }
            let rest: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
            say!(
                "  ... and {} more: {}",
                report.violations.len() - VIOLATIONS_LISTED,
                rest.join(", ")
            );
        }
        let bug_args: String = bugs.iter().map(|b| format!(" --bug {b}")).collect();
        say!(
            "replay: faultline run {} --seed {seed}{bug_args} --print-trace",
            file.display()
        );
        Outcome::Violation
    };
    say!("seed: {seed}");
    say!("trace-hash: {}", format_hash(report.trace_hash));
    Ok(outcome)
}

fn print_summary(scenario: &Scenario, report: &RunReport) {
    let s = &report.stats;
    say!(
        "scenario: {} ({}, {} nodes, {} of which {} quiet)",
        scenario.name,
        scenario.protocol.name,
        scenario.sim.node_count,
        scenario.sim.duration,
        scenario.sim.quiet_period
    );
    let dropped: u64 = s.messages_dropped.values().sum();
    let reasons: Vec<String> = s
        .messages_dropped
        .iter()
        .map(|(reason, count)| format!("{} {count}", reason.as_str()))
        .collect();
    say!(
        "messages: {} sent, {} delivered, {} duplicated, {} dropped{}",
        s.messages_sent,
        s.messages_delivered,
        s.messages_duplicated,
        dropped,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        }
    );
    let faults: Vec<String> = s
        .faults
        .iter()
        .map(|(kind, count)| format!("{} {count}", kind.as_str()))
        .chain(
            s.disk_faults
                .iter()
                .map(|(name, count)| format!("disk {name} {count}")),
        )
        .collect();
    say!(
        "faults: {}",
        if faults.is_empty() {
            "none".to_string()
        } else {
            faults.join(", ")
        }
    );
    say!(
        "operations: {} invoked, {} ok, {} fail, {} unknown",
        s.operations_invoked,
        s.operations_ok,
        s.operations_failed,
        s.operations_indeterminate
    );
    say!(
        "events: {} kernel, {} traced; timers fired {}",
        s.queue_events,
        s.trace_events,
        s.timers_fired
    );
}

fn list(json: bool) {
    if json {
        let protocols: Vec<serde_json::Value> = PROTOCOLS
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "description": p.description,
                    "checkers": p.checkers.iter().map(|c| serde_json::json!({
                        "name": c.name, "properties": c.properties,
                    })).collect::<Vec<_>>(),
                    "bug_flags": p.bug_flags.iter().map(|b| serde_json::json!({
                        "name": b.name, "description": b.description,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let value = serde_json::json!({
            "protocols": protocols,
            "fault_kinds": FaultKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "partition_shapes": ["isolate", "random_halves", "majorities_ring", "bridge", "one_way", "links"],
            "network_profiles": ["lan", "instant", "wan"],
        });
        say!("{value}");
        return;
    }
    say!("protocols:");
    for p in PROTOCOLS {
        say!("  {:<12} {}", p.name, p.description);
        for c in p.checkers {
            say!("    checker  {:<24} {}", c.name, c.properties);
        }
        for b in p.bug_flags {
            say!("    bug      {:<24} {}", b.name, b.description);
        }
    }
    say!(
        "fault kinds (nemesis): {}",
        FaultKind::ALL.map(|k| k.as_str()).join(", ")
    );
    say!("partition shapes: isolate, random_halves, majorities_ring, bridge, one_way, links");
    say!("network profiles: lan, instant, wan");
}
