//! The bully election, bound to scenario files.

use protocols::bully::{self, BUG_FLAGS, Bugs, Mode, Node, Settings, Timing, checker};
use serde::Deserialize;
use sim_core::rng::SimRng;
use sim_core::{Checker, ClientId, NodeId, RunOutput, SimDuration};
use toml::Spanned;

use crate::duration::Duration;
use crate::engines;
use crate::error::ScenarioError;
use crate::registry::{CheckerInfo, ProtocolEntry, WorkloadKind};
use crate::runner::{Metric, RunOptions, RunReport, run_protocol_measured};
use crate::scenario::Scenario;

pub static ENTRY: ProtocolEntry = ProtocolEntry {
    name: "bully",
    description: "bully leader election with durable terms, heartbeats, step-down, fencing tokens and an optional majority mode",
    checkers: &[
        CheckerInfo {
            name: checker::ELECTION,
            properties: "eventual agreement on the highest live member, monotonic terms; majority mode: election safety, no split brain",
        },
        CheckerInfo {
            name: checker::FENCING,
            properties: "fencing-token safety: no write with a stale token is accepted",
        },
    ],
    bug_flags: BUG_FLAGS,
    workload: WorkloadKind::None,
    uses_engines: true,
    check_node_count: |n| {
        if n >= 1 {
            Ok(())
        } else {
            Err("bully needs at least 1 node".into())
        }
    },
    check_settings: |file, text| settings(file, text).map(|_| ()),
    run,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ModeName {
    Classic,
    Majority,
}

/// `[settings]` for `protocol = "bully"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    mode: Option<ModeName>,
    resource: Option<Spanned<u32>>,
    coordinator_timeout: Option<Duration>,
    answer_timeout: Option<Duration>,
    heartbeat_interval: Option<Duration>,
    max_split_brain: Option<Spanned<Duration>>,
}

/// The settings with the cluster size they are checked against.
#[derive(Deserialize)]
struct WithNodes {
    nodes: u32,
    #[serde(default)]
    settings: Option<Spanned<SettingsFile>>,
}

/// The bully settings of a scenario, minus the engine (chosen per node).
#[derive(Debug, Clone)]
struct BullySettings {
    timing: Timing,
    mode: Mode,
    resource: Option<NodeId>,
    max_split_brain: Option<SimDuration>,
}

fn settings(file: &str, text: &str) -> Result<BullySettings, ScenarioError> {
    let parsed: WithNodes =
        toml::from_str(text).map_err(|e| ScenarioError::from_toml(file, text, &e))?;
    let (span, raw) = match parsed.settings {
        Some(s) => (Some(s.span()), s.into_inner()),
        None => (None, SettingsFile::default()),
    };
    let error = |span, message: String| ScenarioError::at(file, text, span, message);
    let mut timing = match raw.coordinator_timeout {
        Some(d) => Timing::from_coordinator_timeout(d.0),
        None => Timing::default(),
    };
    if let Some(d) = raw.answer_timeout {
        timing.answer_timeout = d.0;
    }
    if let Some(d) = raw.heartbeat_interval {
        timing.heartbeat_interval = d.0;
    }
    timing
        .validate()
        .map_err(|message| error(span.clone(), format!("[settings]: {message}")))?;
    let mode = match raw.mode {
        None | Some(ModeName::Classic) => Mode::Classic,
        Some(ModeName::Majority) => Mode::Majority,
    };
    let resource = match raw.resource {
        Some(r) if *r.get_ref() >= parsed.nodes => {
            return Err(error(
                Some(r.span()),
                format!(
                    "resource {} is outside the nodes 0..{}",
                    r.get_ref(),
                    parsed.nodes
                ),
            ));
        }
        Some(r) if parsed.nodes < 2 => {
            return Err(error(
                Some(r.span()),
                "a resource needs at least one other node to be a member".into(),
            ));
        }
        Some(r) => Some(NodeId(*r.get_ref())),
        None => None,
    };
    let max_split_brain = match raw.max_split_brain {
        Some(d) if mode == Mode::Majority => {
            return Err(error(
                Some(d.span()),
                "max_split_brain applies to classic mode; majority mode allows none".into(),
            ));
        }
        Some(d) => Some(d.get_ref().0),
        None => None,
    };
    Ok(BullySettings {
        timing,
        mode,
        resource,
        max_split_brain,
    })
}

/// The run's measurements: split-brain time, leaderships and elections.
fn measure(run: &RunOutput<Node>) -> Vec<Metric> {
    let split = checker::split_brain(run);
    let elections = run
        .observations
        .iter()
        .filter(|o| matches!(o.obs, bully::Observation::ElectionStarted { .. }))
        .count();
    vec![
        Metric {
            name: "split_brain_us",
            value: split.total.as_micros(),
        },
        Metric {
            name: "leaderships",
            value: split.leaderships.len() as u64,
        },
        Metric {
            name: "elections_started",
            value: elections as u64,
        },
    ]
}

fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    let s = settings(&scenario.file, &scenario.text)?;
    let bugs = Bugs::from_names(options.bug_names(scenario))
        .map_err(|e| ScenarioError::Options(e.to_string()))?;
    let per_node: Vec<Settings> = engines::openers(scenario, options.engine_bugs(scenario))?
        .into_iter()
        .map(|engine| Settings {
            timing: s.timing.clone(),
            mode: s.mode,
            resource: s.resource,
            engine,
        })
        .collect();
    let factory = move |node: NodeId| Node::new(node, per_node[node.index()].clone(), bugs);
    let workload = |_client: ClientId, _rng: &mut SimRng| {};
    let members: Vec<NodeId> = (0..scenario.sim.node_count as u32)
        .map(NodeId)
        .filter(|&n| Some(n) != s.resource)
        .collect();
    let checkers: Vec<Box<dyn Checker<Node>>> = vec![
        Box::new(checker::ElectionChecker {
            mode: s.mode,
            members,
            max_split_brain: s.max_split_brain,
        }),
        Box::new(checker::FencingChecker),
    ];
    run_protocol_measured(
        scenario,
        options,
        factory,
        Box::new(workload),
        checkers,
        None,
        Some(Box::new(measure)),
    )
}

#[cfg(test)]
mod tests {
    use crate::Scenario;

    fn parse(settings: &str) -> Result<Scenario, String> {
        let text = format!(
            "protocol = \"bully\"\nnodes = 4\nduration = \"2s\"\n\n[settings]\n{settings}\n"
        );
        Scenario::parse("b.toml", &text, "b").map_err(|e| e.to_string())
    }

    #[test]
    fn good_settings_load() {
        parse("mode = \"majority\"\nresource = 0\ncoordinator_timeout = \"300ms\"").unwrap();
        parse("resource = 3\nmax_split_brain = \"0s\"").unwrap();
    }

    #[test]
    fn bad_settings_are_errors_with_a_location() {
        assert_eq!(
            parse("resource = 4").unwrap_err(),
            "b.toml:6:12: resource 4 is outside the nodes 0..4"
        );
        assert_eq!(
            parse("mode = \"majority\"\nmax_split_brain = \"0s\"").unwrap_err(),
            "b.toml:7:19: max_split_brain applies to classic mode; majority mode allows none"
        );
        let e = parse("heartbeat_interval = \"300ms\"").unwrap_err();
        assert!(
            e.starts_with("b.toml:5:1: [settings]: heartbeat_interval must be shorter"),
            "{e}"
        );
        let e = parse("mode = \"quorum\"").unwrap_err();
        assert!(e.starts_with("b.toml:6:8:"), "{e}");
        let e = parse("leader = 3").unwrap_err();
        assert!(
            e.starts_with("b.toml:6:1:") && e.contains("unknown field"),
            "{e}"
        );
    }

    #[test]
    fn a_workload_table_is_an_error() {
        let text = "protocol = \"bully\"\nnodes = 3\nduration = \"1s\"\n[workload]\nclients = 2\n";
        let e = Scenario::parse("w.toml", text, "w")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("w.toml:4:1:") && e.contains("takes no client requests"),
            "{e}"
        );
    }
}
