//! `faultline`: run, explore, replay, shrink, check and list deterministic simulations.
//!
//! Exit status everywhere: 0 no violation, 1 a violation was found, 2 bad input (a bad
//! scenario file or bad arguments).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Prints a line to stdout. Unlike `println!`, a closed pipe (`faultline run … | head`)
/// is not a panic: output stops and the exit status still reports the outcome.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod commands;
mod viz;

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
    /// Run a scenario for one seed, print a summary, and check it. Without --seed, also
    /// re-check the seeds recorded in the scenario's regression file.
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
    /// Sweep a range of seeds in parallel and report every failure.
    Explore(commands::explore::Args),
    /// Compare two runs event by event (two seeds, two bug-flag sets, or a run against
    /// a recorded trace) and show the first event where they part.
    Diff(commands::diff::Args),
    /// Combine the results of the shards of one sweep (`explore --shard K/N --out F`)
    /// into the result of the whole sweep.
    Merge(commands::merge::Args),
    /// Re-run one seed, show the events leading to the violation, and explain it.
    Replay(commands::replay::Args),
    /// Shrink a failing seed to a smaller scenario that fails the same way.
    Shrink(commands::shrink::Args),
    /// Draw one run (or a saved trace) as a space-time diagram: one self-contained,
    /// offline HTML page.
    Viz(commands::viz::Args),
    /// Sweep every bug flag of every protocol and engine on the canonical scenarios,
    /// and every scenario with no flag; write docs/bug-zoo.md.
    Zoo(commands::zoo::Args),
    /// Check a saved client history (JSON Lines, docs/history.md) for linearizability.
    CheckHistory(commands::check_history::Args),
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

/// A violation found (exit 1) versus a clean result (exit 0); bad input is an `Err` (exit 2).
pub enum Outcome {
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
    let result = match cli.command {
        Command::Run {
            file,
            seed,
            bugs,
            trace,
            print_trace,
        } => commands::run::run(&file, seed, bugs, trace, print_trace),
        Command::Explore(args) => commands::explore::explore(args),
        Command::Diff(args) => commands::diff::diff(args),
        Command::Merge(args) => commands::merge::merge(args),
        Command::Replay(args) => commands::replay::replay(args),
        Command::Shrink(args) => commands::shrink::shrink(args),
        Command::Viz(args) => commands::viz::viz(args),
        Command::Zoo(args) => commands::zoo::zoo(args),
        Command::CheckHistory(args) => commands::check_history::check_history(args),
        Command::Check { file } => commands::check(&file),
        Command::List { json } => {
            commands::list(json);
            Ok(Outcome::Clean)
        }
    };
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Violation) => ExitCode::from(1),
        Err(e) => {
            tracing::debug!("error: {e:?}");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
