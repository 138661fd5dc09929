//! `faultline diff`: where two runs part.

use std::path::PathBuf;

use scenarios::diff::{self, Side};

use super::{check_bugs, input_error, load};
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (TOML).
    file: PathBuf,
    /// Run A's seed.
    #[arg(long)]
    seed: u64,
    /// Run A's bug flags (repeatable).
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Run B's seed (default: A's).
    #[arg(long, conflicts_with = "trace_b")]
    seed_b: Option<u64>,
    /// Run B's bug flags (repeatable; B has none unless given, or A's flags when only
    /// --seed-b is given).
    #[arg(long = "bug-b", value_name = "NAME", conflicts_with = "trace_b")]
    bugs_b: Vec<String>,
    /// Compare run A with a recorded trace (`run --trace`, `replay --trace`) instead of a
    /// second run.
    #[arg(long, value_name = "TRACE.jsonl")]
    trace_b: Option<PathBuf>,
    /// Shared events shown before the divergence.
    #[arg(long, default_value_t = 8)]
    context: usize,
    /// End with one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when the traces are equal, 1 when they part, 2 on bad input.
pub fn diff(args: Args) -> anyhow::Result<Outcome> {
    let scenario = load(&args.file)?;
    check_bugs(&scenario, &args.bugs)?;
    check_bugs(&scenario, &args.bugs_b)?;
    let (a, _) = diff::fresh(&scenario, args.seed, &args.bugs).map_err(input_error)?;
    let b: Side = match &args.trace_b {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            diff::recorded(&path.display().to_string(), &text).map_err(anyhow::Error::msg)?
        }
        None => {
            let seed_b = args.seed_b.unwrap_or(args.seed);
            let bugs_b = if args.bugs_b.is_empty() && args.seed_b.is_some() {
                args.bugs.clone()
            } else {
                args.bugs_b.clone()
            };
            diff::fresh(&scenario, seed_b, &bugs_b)
                .map_err(input_error)?
                .0
        }
    };
    let divergence = diff::first_divergence(&a, &b, args.context);
    say!("{}", diff::render(&a, &b, divergence.as_ref()).trim_end());
    if args.json {
        let value = serde_json::json!({
            "a": a.label,
            "b": b.label,
            "events_a": a.events.len(),
            "events_b": b.events.len(),
            "divergence": divergence,
        });
        say!("{value}");
    }
    Ok(if divergence.is_some() {
        Outcome::Violation
    } else {
        Outcome::Clean
    })
}
