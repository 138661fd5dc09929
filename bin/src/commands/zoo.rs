//! `faultline zoo`: every bug flag swept on the canonical scenarios; writes
//! `docs/bug-zoo.md`.

use std::path::PathBuf;

use scenarios::zoo::{ZooOptions, render_markdown, run_zoo};

use super::input_error;
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seeds per window (the budget to find a flag in one window).
    #[arg(long, default_value_t = 2000)]
    seeds: u64,
    /// Disjoint windows per flag; the median seeds to the first failure is over them.
    #[arg(long, default_value_t = 3)]
    offsets: u64,
    /// Seeds of the clean sweep (no flag) per canonical scenario; 0 skips it.
    #[arg(long, default_value_t = 200)]
    clean_seeds: u64,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Only flags whose name contains this (repeatable); skips the clean sweep.
    #[arg(long, value_name = "TEXT")]
    only: Vec<String>,
    /// Try at most this many scenarios per flag (0: every candidate).
    #[arg(long, default_value_t = 0)]
    max_scenarios: usize,
    /// The directory of canonical scenarios.
    #[arg(long, default_value = "scenarios/library")]
    library: PathBuf,
    /// Where to write the Markdown page (`-` for none).
    #[arg(long, short = 'o', default_value = "docs/bug-zoo.md")]
    out: PathBuf,
    /// End with one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when every flag is found and every clean sweep is clean, else 1.
pub fn zoo(args: Args) -> anyhow::Result<Outcome> {
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        anyhow::bail!("--jobs must be at least 1");
    }
    if args.seeds == 0 {
        anyhow::bail!("--seeds must be at least 1");
    }
    let options = ZooOptions {
        library: args.library.clone(),
        seeds: args.seeds,
        offsets: args.offsets.max(1),
        clean_seeds: args.clean_seeds,
        jobs,
        only: args.only.clone(),
        max_scenarios: args.max_scenarios,
    };
    let report = run_zoo(&options, &mut |line| say!("{line}")).map_err(input_error)?;
    let mut command = format!(
        "faultline zoo --seeds {} --offsets {} --clean-seeds {}",
        args.seeds, options.offsets, args.clean_seeds
    );
    for o in &args.only {
        command.push_str(&format!(" --only {o}"));
    }
    if args.max_scenarios > 0 {
        command.push_str(&format!(" --max-scenarios {}", args.max_scenarios));
    }
    if args.out.as_os_str() != "-" {
        std::fs::write(&args.out, render_markdown(&report, &command))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.out.display()))?;
        say!("wrote {}", args.out.display());
    }
    let missing = report.not_found();
    let unclean = report.unclean();
    say!(
        "zoo: {} of {} flags found{}; clean sweep: {} of {} scenarios clean",
        report.flags.len() - missing.len(),
        report.flags.len(),
        if missing.is_empty() {
            String::new()
        } else {
            format!(" (not found: {})", missing.join(", "))
        },
        report.clean.len() - unclean.len(),
        report.clean.len()
    );
    if args.json {
        say!("{}", serde_json::to_string(&report)?);
    }
    Ok(if missing.is_empty() && unclean.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Violation
    })
}
