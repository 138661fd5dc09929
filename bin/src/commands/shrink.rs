//! `faultline shrink`: a smaller scenario that fails the same way.

use std::path::PathBuf;

use scenarios::shrink::ShrinkError;
use scenarios::{RunOptions, Scenario};

use super::{bug_args, check_bugs, input_error, load};
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (TOML).
    file: PathBuf,
    /// The failing seed.
    #[arg(long)]
    seed: u64,
    /// Switch a bug flag on (repeatable).
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Where to write the smaller scenario (default: `<name>-seed-<N>-shrunk.toml` in the
    /// current directory).
    #[arg(short = 'o', long = "output", value_name = "OUT.toml")]
    output: Option<PathBuf>,
    /// The most runs to spend.
    #[arg(long, default_value_t = 300)]
    budget: usize,
}

pub fn shrink(args: Args) -> anyhow::Result<Outcome> {
    let scenario = load(&args.file)?;
    check_bugs(&scenario, &args.bugs)?;
    say!("seed: {}", args.seed);
    let shrunk = match scenarios::shrink::shrink(&scenario, args.seed, &args.bugs, args.budget) {
        Ok(s) => s,
        Err(ShrinkError::Scenario(e)) => return Err(input_error(e)),
        Err(e @ ShrinkError::DoesNotFail { .. }) => anyhow::bail!("{e}"),
    };
    let output = args.output.unwrap_or_else(|| {
        PathBuf::from(format!("{}-seed-{}-shrunk.toml", scenario.name, args.seed))
    });
    std::fs::write(&output, &shrunk.toml)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
    tracing::debug!(
        runs = shrunk.runs,
        explicit = shrunk.explicit_schedule,
        "shrink finished"
    );
    say!("violation kind: {}", shrunk.kind);
    say!("before: {}", shrunk.before);
    say!("after:  {}", shrunk.after);
    if !shrunk.explicit_schedule {
        say!("note: the nemesis could not be replaced by an explicit schedule; kept as is");
    }
    say!("runs: {}", shrunk.runs);
    // Check what was written: it loads, and its own seed fails with the same kind.
    let written = Scenario::load(&output).map_err(input_error)?;
    let report =
        scenarios::run(&written, RunOptions::seed(written.default_seed)).map_err(input_error)?;
    let verified = report.violations.iter().any(|v| v.kind == shrunk.kind);
    say!(
        "wrote {} ({}): faultline run {}{}",
        output.display(),
        if verified {
            format!("verified: fails with {}", shrunk.kind)
        } else {
            "NOT verified: it does not fail the same way".to_string()
        },
        output.display(),
        bug_args(&[])
    );
    if !verified {
        anyhow::bail!("the shrunk scenario does not reproduce the failure");
    }
    Ok(Outcome::Violation)
}
