//! The bug zoo: every bug flag of every protocol and engine, swept on the canonical
//! scenarios, and the clean sweep with no flag on.
//!
//! For each flag the zoo picks the scenarios to try: those whose regression file
//! records a detection of the flag first (in name order), then the other canonical
//! scenarios of its protocol (for an engine flag: of every protocol that keeps its
//! state in the engines). On a scenario it sweeps `offsets` disjoint windows of
//! `seeds` seeds (window k starts at seed `k * seeds`), each until its first failing
//! seed, and reports the seeds to the first failure per window and their median. A
//! window with no failure counts as "more than `seeds`" (so the median is "more than"
//! when at least half the windows find nothing). The first scenario whose windows find
//! the flag is the one reported.
//!
//! Seeds run in chunks of `jobs` at a time and a window stops after the first chunk
//! with a failure, so the first failing seed is exact and the result does not depend on
//! the number of workers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ScenarioError;
use crate::explore::{ExploreOptions, SeedRange, explore};
use crate::registry::PROTOCOLS;
use crate::scenario::Scenario;

/// How to run the zoo.
#[derive(Debug, Clone)]
pub struct ZooOptions {
    /// The directory of canonical scenarios.
    pub library: PathBuf,
    /// Seeds per window.
    pub seeds: u64,
    /// Windows per flag (the median is over them).
    pub offsets: u64,
    /// Seeds of the clean sweep per scenario (0: no clean sweep).
    pub clean_seeds: u64,
    pub jobs: usize,
    /// Only flags whose name contains one of these (all if empty).
    pub only: Vec<String>,
    /// At most this many scenarios tried per flag (0: all candidates).
    pub max_scenarios: usize,
}

/// One window of a flag on a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: u64,
    /// The first failing seed, if any.
    pub first_failure: Option<u64>,
    /// Seeds run in the window.
    pub seeds_run: u64,
}

impl Window {
    /// Seeds to the first failure (1 when the window's first seed fails).
    pub fn seeds_to_failure(&self) -> Option<u64> {
        self.first_failure.map(|f| f - self.start + 1)
    }
}

/// What the zoo found for one flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagResult {
    pub flag: String,
    /// The protocol (or `engine` for an engine flag).
    pub owner: String,
    pub defect: String,
    pub found: bool,
    /// The scenario that found it (or the last one tried).
    pub scenario: Option<String>,
    /// The violation kind and the property it breaks, from the first failure.
    pub kind: Option<String>,
    pub property: Option<String>,
    pub windows: Vec<Window>,
    /// The median seeds to the first failure; `None` when at least half the windows
    /// found nothing (then it is more than the window size).
    pub median_seeds_to_failure: Option<u64>,
    /// The scenarios tried, in order.
    pub tried: Vec<String>,
}

/// The clean sweep of one scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanResult {
    pub scenario: String,
    pub protocol: String,
    pub seeds_run: u64,
    pub failing_seeds: Vec<u64>,
    /// Flags the scenario file itself switches on (such a scenario is not clean by
    /// design and is not swept).
    pub file_bugs: Vec<String>,
}

/// The whole zoo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZooReport {
    pub seeds: u64,
    pub offsets: u64,
    pub clean_seeds: u64,
    pub flags: Vec<FlagResult>,
    pub clean: Vec<CleanResult>,
}

impl ZooReport {
    /// Flags not found, by name.
    pub fn not_found(&self) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|f| !f.found)
            .map(|f| f.flag.as_str())
            .collect()
    }

    /// Scenarios whose clean sweep failed.
    pub fn unclean(&self) -> Vec<&str> {
        self.clean
            .iter()
            .filter(|c| !c.failing_seeds.is_empty())
            .map(|c| c.scenario.as_str())
            .collect()
    }
}

/// A canonical scenario with its path and recorded detections.
struct Entry {
    scenario: Scenario,
    /// Flags its regression file records as detected.
    detects: Vec<String>,
}

fn library(dir: &Path) -> Result<Vec<Entry>, ScenarioError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ScenarioError::Io {
            file: dir.display().to_string(),
            message: e.to_string(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut entries = Vec::new();
    for path in paths {
        let scenario = Scenario::load(&path)?;
        let detects = crate::regressions::load(&path)?
            .into_iter()
            .flat_map(|r| r.bugs)
            .collect();
        entries.push(Entry { scenario, detects });
    }
    Ok(entries)
}

/// Every flag: (name, owner, defect, protocols it applies to).
fn flags() -> Vec<(String, String, String, Vec<&'static str>)> {
    let mut all = Vec::new();
    for p in PROTOCOLS {
        for f in p.bug_flags {
            all.push((
                f.name.to_string(),
                p.name.to_string(),
                f.description.to_string(),
                vec![p.name],
            ));
        }
    }
    let engine_protocols: Vec<&'static str> = PROTOCOLS
        .iter()
        .filter(|p| p.uses_engines)
        .map(|p| p.name)
        .collect();
    for f in storage::bugs::ENGINE_BUGS {
        all.push((
            f.name.to_string(),
            "engine".to_string(),
            f.description.to_string(),
            engine_protocols.clone(),
        ));
    }
    all
}

/// Sweeps one window of `flag` on `scenario` until its first failure; returns the
/// window and the first failure's (kind, property).
fn window(
    scenario: &Scenario,
    flag: &str,
    start: u64,
    options: &ZooOptions,
) -> Result<(Window, Option<(String, String)>), ScenarioError> {
    let chunk = (options.jobs.max(1) as u64) * 2;
    let end = start + options.seeds;
    let mut at = start;
    let mut run = 0;
    while at < end {
        let upto = (at + chunk).min(end);
        let outcomes = explore(
            scenario,
            &ExploreOptions {
                seeds: SeedRange {
                    start: at,
                    end: upto,
                },
                shard: None,
                jobs: options.jobs,
                bugs: vec![flag.to_string()],
                stop_on_first: false,
            },
            |_| {},
        )?;
        run += outcomes.len() as u64;
        if let Some(first) = outcomes.iter().find(|o| !o.passed()) {
            let v = &first.violations[0];
            let run = run - (upto - first.seed - 1);
            return Ok((
                Window {
                    start,
                    first_failure: Some(first.seed),
                    seeds_run: run,
                },
                Some((v.kind.clone(), v.property.to_string())),
            ));
        }
        at = upto;
    }
    Ok((
        Window {
            start,
            first_failure: None,
            seeds_run: run,
        },
        None,
    ))
}

/// The median of the windows' seeds to failure (`None` = more than the window size).
fn median(windows: &[Window]) -> Option<u64> {
    let mut values: Vec<Option<u64>> = windows.iter().map(Window::seeds_to_failure).collect();
    // `None` (not found) sorts last: it is more than any number of seeds in the window.
    values.sort_by_key(|v| v.unwrap_or(u64::MAX));
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .flatten()
}

/// Runs the zoo; `progress` is told each flag's and scenario's result as it finishes.
pub fn run_zoo(
    options: &ZooOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<ZooReport, ScenarioError> {
    let entries = library(&options.library)?;
    let mut flag_results = Vec::new();
    for (flag, owner, defect, protocols) in flags() {
        if !options.only.is_empty() && !options.only.iter().any(|o| flag.contains(o.as_str())) {
            continue;
        }
        let applies = |e: &&Entry| {
            protocols.contains(&e.scenario.protocol.name) && e.scenario.bugs.is_empty()
        };
        let mut candidates: Vec<&Entry> = entries
            .iter()
            .filter(applies)
            .filter(|e| e.detects.contains(&flag))
            .collect();
        candidates.extend(
            entries
                .iter()
                .filter(applies)
                .filter(|e| !e.detects.contains(&flag)),
        );
        if options.max_scenarios > 0 {
            candidates.truncate(options.max_scenarios);
        }
        let mut result = FlagResult {
            flag: flag.clone(),
            owner,
            defect,
            found: false,
            scenario: None,
            kind: None,
            property: None,
            windows: Vec::new(),
            median_seeds_to_failure: None,
            tried: Vec::new(),
        };
        for entry in candidates {
            result.tried.push(entry.scenario.name.clone());
            let mut windows = Vec::new();
            let mut first_kind = None;
            for k in 0..options.offsets.max(1) {
                let (w, kind) = window(&entry.scenario, &flag, k * options.seeds, options)?;
                if first_kind.is_none() {
                    first_kind = kind;
                }
                windows.push(w);
            }
            result.scenario = Some(entry.scenario.name.clone());
            result.windows = windows;
            if let Some((kind, property)) = first_kind {
                result.found = true;
                result.kind = Some(kind);
                result.property = Some(property);
                result.median_seeds_to_failure = median(&result.windows);
                break;
            }
        }
        progress(&format!(
            "{}: {}",
            result.flag,
            match (&result.scenario, result.found) {
                (Some(s), true) => format!(
                    "found on {s} ({}), median seeds to first failure {}",
                    result.kind.as_deref().unwrap_or("?"),
                    result
                        .median_seeds_to_failure
                        .map_or(format!("> {}", options.seeds), |m| m.to_string())
                ),
                _ => format!("NOT FOUND (tried {})", result.tried.join(", ")),
            }
        ));
        flag_results.push(result);
    }
    let mut clean = Vec::new();
    if options.clean_seeds > 0 && options.only.is_empty() {
        for entry in &entries {
            let mut result = CleanResult {
                scenario: entry.scenario.name.clone(),
                protocol: entry.scenario.protocol.name.to_string(),
                seeds_run: 0,
                failing_seeds: Vec::new(),
                file_bugs: entry.scenario.bugs.clone(),
            };
            if entry.scenario.bugs.is_empty() {
                let outcomes = explore(
                    &entry.scenario,
                    &ExploreOptions {
                        seeds: SeedRange {
                            start: 0,
                            end: options.clean_seeds,
                        },
                        shard: None,
                        jobs: options.jobs,
                        bugs: Vec::new(),
                        stop_on_first: false,
                    },
                    |_| {},
                )?;
                result.seeds_run = outcomes.len() as u64;
                result.failing_seeds = outcomes
                    .iter()
                    .filter(|o| !o.passed())
                    .map(|o| o.seed)
                    .collect();
            }
            progress(&format!(
                "clean {}: {} of {} seeds failed",
                result.scenario,
                result.failing_seeds.len(),
                result.seeds_run
            ));
            clean.push(result);
        }
    }
    Ok(ZooReport {
        seeds: options.seeds,
        offsets: options.offsets.max(1),
        clean_seeds: if options.only.is_empty() {
            options.clean_seeds
        } else {
            0
        },
        flags: flag_results,
        clean,
    })
}

/// The zoo as Markdown (`docs/bug-zoo.md`); `command` is the command line that made it.
pub fn render_markdown(report: &ZooReport, command: &str) -> String {
    let mut out = String::new();
    out.push_str("# The bug zoo\n\n");
    out.push_str(
        "Every opt-in bug flag re-introduces one classic defect; the simulator must find it on a\n\
         canonical scenario, and must find nothing with every flag off. This page is generated\n\
         by `faultline zoo`; do not edit it by hand (how each defect is reached, and what the\n\
         reference implementation got wrong, is in [bug-zoo-notes.md](bug-zoo-notes.md)).\n\n",
    );
    out.push_str(&format!("Generated with:\n\n```sh\n{command}\n```\n\n"));
    out.push_str(&format!(
        "Per flag: the scenario that finds it (scenarios whose regression file records a \
         detection are tried first), the kind of the first violation and the property it \
         breaks, and the seeds to the first failure in each of {} windows of {} seeds \
         (window k starts at seed k × {}), with their median. \"—\" means the window found \
         nothing.\n\n",
        report.offsets, report.seeds, report.seeds
    ));
    let found = report.flags.iter().filter(|f| f.found).count();
    out.push_str(&format!(
        "**{found} of {} flags found.**",
        report.flags.len()
    ));
    let missing = report.not_found();
    if !missing.is_empty() {
        out.push_str(&format!(
            " Not found: {}.",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str("\n\n");
    let mut by_owner: BTreeMap<&str, Vec<&FlagResult>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for f in &report.flags {
        if !order.contains(&f.owner.as_str()) {
            order.push(&f.owner);
        }
        by_owner.entry(&f.owner).or_default().push(f);
    }
    for owner in order {
        out.push_str(&format!(
            "## {}\n\n",
            if owner == "engine" {
                "Storage engines"
            } else {
                owner
            }
        ));
        out.push_str("| flag | defect | found | scenario | violation (property) | seeds to first failure | median |\n|---|---|---|---|---|---|---|\n");
        for f in &by_owner[owner] {
            let windows: Vec<String> = f
                .windows
                .iter()
                .map(|w| {
                    w.seeds_to_failure()
                        .map_or("—".to_string(), |n| n.to_string())
                })
                .collect();
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} | {} |\n",
                f.flag,
                f.defect.replace('|', "\\|"),
                if f.found { "yes" } else { "**no**" },
                f.scenario.as_deref().unwrap_or("—"),
                match (&f.kind, &f.property) {
                    (Some(k), Some(p)) => format!("`{k}` ({p})"),
                    _ => format!("— (tried: {})", f.tried.join(", ")),
                },
                windows.join(", "),
                match (f.found, f.median_seeds_to_failure) {
                    (true, Some(m)) => m.to_string(),
                    (true, None) => format!("> {}", report.seeds),
                    (false, _) => "—".to_string(),
                }
            ));
        }
        out.push('\n');
    }
    if !report.clean.is_empty() {
        out.push_str(&format!(
            "## The clean sweep\n\nEvery canonical scenario with no flag on, seeds 0..{}.\n\n| scenario | protocol | seeds | failing |\n|---|---|---|---|\n",
            report.clean_seeds
        ));
        for c in &report.clean {
            let failing = if !c.file_bugs.is_empty() {
                format!("not swept: the file switches on {}", c.file_bugs.join(", "))
            } else if c.failing_seeds.is_empty() {
                "0".to_string()
            } else {
                format!(
                    "**{}** (seeds {})",
                    c.failing_seeds.len(),
                    c.failing_seeds
                        .iter()
                        .take(10)
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                c.scenario, c.protocol, c.seeds_run, failing
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: u64, first: Option<u64>) -> Window {
        Window {
            start,
            first_failure: first,
            seeds_run: 0,
        }
    }

    #[test]
    fn median_counts_windows_without_a_failure_as_more_than_any() {
        assert_eq!(
            median(&[w(0, Some(4)), w(10, Some(10)), w(20, Some(21))]),
            Some(2)
        );
        assert_eq!(median(&[w(0, Some(0)), w(10, None), w(20, None)]), None);
        assert_eq!(
            median(&[w(0, Some(2)), w(10, Some(12)), w(20, None)]),
            Some(3)
        );
        assert_eq!(median(&[w(0, Some(0))]), Some(1));
    }
}
