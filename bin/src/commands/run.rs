//! `faultline run`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::Context;
use scenarios::regressions::{self, Regression};
use scenarios::{RunOptions, RunReport, Scenario};
use sim_core::trace::format_hash;

use super::{bug_args, check_bugs, input_error, list_or_none, load};
use crate::Outcome;

/// How many violations are listed before the rest are summarised by kind.
const VIOLATIONS_LISTED: usize = 10;

pub fn run(
    file: &Path,
    seed: Option<u64>,
    bugs: Vec<String>,
    trace: Option<PathBuf>,
    print_trace: bool,
) -> anyhow::Result<Outcome> {
    let scenario = load(file)?;
    check_bugs(&scenario, &bugs)?;
    let recheck = seed.is_none();
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
        keep_history: trace.is_some(),
    };
    let report = scenarios::run(&scenario, options).map_err(input_error)?;
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
        write_history(path, &report)?;
    }
    let mut outcome = if report.passed() {
        say!("result: ok (checked: {})", scenario.checkers.join(", "));
        Outcome::Clean
    } else {
        print_violations(&report);
        say!(
            "replay: faultline replay {} --seed {seed}{}",
            file.display(),
            bug_args(&bugs)
        );
        Outcome::Violation
    };
    if recheck && !recheck_regressions(file, &scenario)? {
        outcome = Outcome::Violation;
    }
    say!("seed: {seed}");
    say!("trace-hash: {}", format_hash(report.trace_hash));
    Ok(outcome)
}

pub fn print_violations(report: &RunReport) {
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
}

/// Re-runs every recorded regression: a seed recorded without bug flags must now pass;
/// one recorded with bug flags must still fail with the same kind. Returns whether all
/// were as expected.
fn recheck_regressions(file: &Path, scenario: &Scenario) -> anyhow::Result<bool> {
    let recorded = regressions::load(file).map_err(input_error)?;
    if recorded.is_empty() {
        return Ok(true);
    }
    let mut all_as_expected = true;
    let mut lines = Vec::new();
    for r in &recorded {
        let (as_expected, now) = recheck(scenario, r)?;
        all_as_expected &= as_expected;
        lines.push(format!(
            "  seed {}{}: {} ({})",
            r.seed,
            bug_args(&r.bugs),
            if as_expected {
                "as expected"
            } else {
                "CHANGED"
            },
            now
        ));
    }
    say!(
        "regressions: {} recorded seed(s) in {} re-checked",
        recorded.len(),
        regressions::path_for(file).display()
    );
    for line in lines {
        say!("{line}");
    }
    Ok(all_as_expected)
}

/// Re-runs one regression; returns whether it behaved as recorded, and what it did now.
pub fn recheck(scenario: &Scenario, r: &Regression) -> anyhow::Result<(bool, String)> {
    let options = RunOptions {
        bugs: r.bugs.clone(),
        ..RunOptions::seed(r.seed)
    };
    let report = scenarios::run(scenario, options).map_err(input_error)?;
    let kinds: Vec<String> = report.violations.iter().map(|v| v.kind.clone()).collect();
    let now = if kinds.is_empty() {
        "passes".to_string()
    } else {
        format!("fails with {}", kinds[0])
    };
    let as_expected = if r.bugs.is_empty() {
        report.passed()
    } else {
        kinds.contains(&r.kind)
    };
    Ok((as_expected, now))
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
        .collect();
    say!("faults: {}", list_or_none(&faults));
    let disk: Vec<String> = s
        .disk_events
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    say!("disk: {}", list_or_none(&disk));
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
    if !report.metrics.is_empty() {
        let metrics: Vec<String> = report
            .metrics
            .iter()
            .map(|m| format!("{} {}", m.name, m.value))
            .collect();
        say!("metrics: {}", metrics.join(", "));
    }
    let reached: Vec<String> = report
        .coverage
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    say!("coverage: {}", list_or_none(&reached));
}

/// Writes the client history beside the trace: `OUT.jsonl` → `OUT.history.jsonl`.
pub fn write_history(trace: &Path, report: &RunReport) -> anyhow::Result<()> {
    let Some(history) = &report.history_jsonl else {
        return Ok(());
    };
    let stem = trace
        .file_stem()
        .map_or_else(|| "trace".into(), |s| s.to_string_lossy().into_owned());
    let path = trace.with_file_name(format!("{stem}.history.jsonl"));
    std::fs::write(&path, history).with_context(|| format!("cannot write {}", path.display()))?;
    say!(
        "history: {} (check it with: faultline check-history {})",
        path.display(),
        path.display()
    );
    Ok(())
}
