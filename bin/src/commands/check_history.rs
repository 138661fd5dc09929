//! `faultline check-history FILE [--budget N]`: is a recorded client history (JSON Lines,
//! see `docs/history.md`) linearizable for the key-value model?
//!
//! Exit status: 0 linearizable, or undecided within the budget (then the verdict line says
//! `verdict: unknown` and a warning goes to stderr: nothing was proven either way); 1 a
//! proven violation, explained; 2 a file that cannot be read or parsed.

use std::path::PathBuf;

use anyhow::Context;
use sim_core::linearizability::{self, CheckOptions, KeyReport, Verdict};

use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The history: one JSON event per line (invoke, then ok, fail or info).
    file: PathBuf,
    /// The most search steps to spend on one key before calling it "unknown"
    /// (default: 2,000,000, a second or two).
    #[arg(long)]
    budget: Option<u64>,
}

pub fn check_history(args: Args) -> anyhow::Result<Outcome> {
    let file = args.file.display();
    let text =
        std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {file}"))?;
    let history = linearizability::parse_history(&text)
        .with_context(|| format!("{file} is not a history"))?;
    let options = args
        .budget
        .map_or_else(CheckOptions::default, CheckOptions::with_budget);
    let report = linearizability::check(&history, &options)
        .with_context(|| format!("{file} cannot be checked"))?;

    say!(
        "{file}: {} operations on {} key{}",
        history.len(),
        report.keys.len(),
        if report.keys.len() == 1 { "" } else { "s" }
    );
    let width = report
        .keys
        .iter()
        .map(|k| k.key.chars().count())
        .max()
        .unwrap_or(0);
    for key in &report.keys {
        say!("  {}", summary(key, width));
    }
    for key in &report.keys {
        if let Verdict::NotLinearizable { explanation, .. } = &key.verdict {
            say!("");
            for line in explanation.lines() {
                say!("{line}");
            }
        }
    }
    match &report.verdict {
        Verdict::Linearizable => {
            say!("verdict: linearizable");
            Ok(Outcome::Clean)
        }
        Verdict::NotLinearizable { key, .. } => {
            let bad = report
                .keys
                .iter()
                .filter(|k| matches!(k.verdict, Verdict::NotLinearizable { .. }))
                .count();
            say!(
                "verdict: not linearizable (key {key:?}{})",
                if bad > 1 {
                    format!(" and {} more", bad - 1)
                } else {
                    String::new()
                }
            );
            Ok(Outcome::Violation)
        }
        Verdict::Unknown { key, reason } => {
            say!("verdict: unknown (key {key:?}: {reason}; nothing was proven either way)");
            eprintln!(
                "warning: the history was not fully checked: key {key:?}: {reason}; try a larger --budget"
            );
            Ok(Outcome::Clean)
        }
    }
}

/// `x   linearizable      12 ok, 1 fail, 2 info (340 steps)`.
fn summary(key: &KeyReport, width: usize) -> String {
    let verdict = match &key.verdict {
        Verdict::Unknown { reason, .. } => format!("unknown ({reason})"),
        other => other.label().to_string(),
    };
    format!(
        "{:<width$}  {:<16}  {} ok, {} fail, {} info ({} steps)",
        key.key, verdict, key.ok, key.fail, key.info, key.steps
    )
}
