//! `faultline merge`: combine the results of the shards of one sweep.

use std::path::PathBuf;

use scenarios::explore::{self, SweepReport};

use super::explore::{emit_result, print_coverage, print_metrics, result_json};
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shards' results: files written by `explore --shard K/N --out FILE` (or the
    /// last line of `explore --json`), one per shard, in any order.
    #[arg(required = true, value_name = "RESULT.json")]
    results: Vec<PathBuf>,
    /// End with one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Also write the merged result to this file.
    #[arg(long, value_name = "MERGED.json")]
    out: Option<PathBuf>,
}

/// Reads one shard's result: the `report` of an `explore` JSON object, or a bare report.
fn read(path: &PathBuf) -> anyhow::Result<SweepReport> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!("{}: empty; expected an explore JSON result", path.display())
        })?;
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        anyhow::anyhow!(
            "{}: not JSON ({e}); expected an explore JSON result",
            path.display()
        )
    })?;
    let report = value.get("report").cloned().unwrap_or(value);
    serde_json::from_value(report).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a sweep report ({e}); expected the output of `explore --json` or `--out`",
            path.display()
        )
    })
}

pub fn merge(args: Args) -> anyhow::Result<Outcome> {
    let reports = args
        .results
        .iter()
        .map(read)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let merged = explore::merge(&reports).map_err(|e| anyhow::anyhow!("cannot merge: {e}"))?;
    say!(
        "merged {} shard(s) of {} (seeds {}..{}{}): {} seeds run, {} failed",
        reports.len(),
        merged.scenario,
        merged.seeds.start,
        merged.seeds.end,
        super::bug_args(&merged.bugs),
        merged.seeds_run,
        merged.failures.len()
    );
    for f in &merged.failures {
        say!("FAIL seed {}: {}", f.seed, f.message);
    }
    print_metrics(&merged);
    print_coverage(&merged);
    emit_result(&result_json(&merged), args.out.as_deref(), args.json)?;
    Ok(if merged.failed() {
        Outcome::Violation
    } else {
        Outcome::Clean
    })
}
