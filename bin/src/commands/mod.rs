//! One module per command, and what they share.

pub mod check_history;
pub mod diff;
pub mod explore;
pub mod merge;
pub mod replay;
pub mod run;
pub mod shrink;
pub mod viz;
pub mod zoo;

use std::path::Path;

use scenarios::registry::PROTOCOLS;
use scenarios::{Scenario, ScenarioError};
use sim_core::fault::FaultKind;

use crate::Outcome;

/// Loads a scenario; its errors name file, line and column.
pub fn load(file: &Path) -> anyhow::Result<Scenario> {
    let scenario = Scenario::load(file).map_err(anyhow::Error::from)?;
    tracing::debug!(
        file = %file.display(),
        protocol = scenario.protocol.name,
        nodes = scenario.sim.node_count,
        duration = %scenario.sim.duration,
        checkers = ?scenario.checkers,
        "loaded scenario"
    );
    Ok(scenario)
}

/// Checks `--bug` names against the scenario's protocol before anything runs.
pub fn check_bugs(scenario: &Scenario, bugs: &[String]) -> anyhow::Result<()> {
    for name in bugs {
        scenarios::registry::check_bug_flag(scenario.protocol, name).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Turns a library error into a CLI error (bad input, exit 2).
pub fn input_error(e: ScenarioError) -> anyhow::Error {
    match e {
        ScenarioError::Options(message) => anyhow::anyhow!(message),
        other => anyhow::Error::from(other),
    }
}

/// ` --bug a --bug b`, for printed commands.
pub fn bug_args(bugs: &[String]) -> String {
    bugs.iter().map(|b| format!(" --bug {b}")).collect()
}

/// Parses `"1.5s"`-style durations for `--from` and `--to`.
pub fn parse_time(text: &str) -> Result<sim_core::SimTime, String> {
    scenarios::duration::parse_duration(text).map(|d| sim_core::SimTime(d.0))
}

pub fn check(file: &Path) -> anyhow::Result<Outcome> {
    let scenario = load(file)?;
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

pub fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

pub fn list(json: bool) {
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
            "engines": scenarios::engines::ENGINES.iter().map(|e| serde_json::json!({
                "name": e.name, "description": e.description,
            })).collect::<Vec<_>>(),
            "engine_bug_flags": storage::bugs::ENGINE_BUGS.iter().map(|b| serde_json::json!({
                "name": b.name, "description": b.description,
            })).collect::<Vec<_>>(),
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
    say!("storage engines ([storage] engines = [...]):");
    for e in scenarios::engines::ENGINES {
        say!("  {:<12} {}", e.name, e.description);
    }
    say!("engine bug flags (--bug, for protocols that keep state in the engines):");
    for b in storage::bugs::ENGINE_BUGS {
        say!("    bug      {:<40} {}", b.name, b.description);
    }
}
