//! SWIM gossip membership (and the baseline heartbeat detector), bound to scenario files.

use std::sync::Arc;

use protocols::gossip::{BUG_FLAGS, Bugs, Config, Detector, Node, Settings, checker};
use serde::Deserialize;
use sim_core::rng::SimRng;
use sim_core::{Checker, ClientId, NodeId, RunOutput, SimTime};
use toml::Spanned;

use crate::duration::Duration;
use crate::engines;
use crate::error::ScenarioError;
use crate::registry::{CheckerInfo, ProtocolEntry, WorkloadKind};
use crate::runner::{Metric, RunOptions, RunReport, run_protocol_measured};
use crate::scenario::Scenario;

pub static ENTRY: ProtocolEntry = ProtocolEntry {
    name: "gossip",
    description: "SWIM membership: round-robin probes, ping-req, suspicion and incarnations, piggybacked dissemination, push-pull, Lifeguard; or the reference's heartbeat baseline",
    checkers: &[
        CheckerInfo {
            name: checker::DETECTOR,
            properties: "strong completeness within a bound from the configuration, accuracy in loss-only runs (false positives measured otherwise), convergence after the quiet phase",
        },
        CheckerInfo {
            name: checker::INCARNATIONS,
            properties: "incarnation precedence, no resurrection, durable incarnations",
        },
    ],
    bug_flags: BUG_FLAGS,
    workload: WorkloadKind::None,
    uses_engines: true,
    check_node_count: |n| {
        if n >= 2 {
            Ok(())
        } else {
            Err("gossip needs at least 2 nodes".into())
        }
    },
    check_settings: |file, text| settings(file, text).map(|_| ()),
    run,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DetectorName {
    Swim,
    Baseline,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaveFile {
    node: Spanned<u32>,
    at: Duration,
}

/// `[settings]` for `protocol = "gossip"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    detector: Option<DetectorName>,
    lifeguard: Option<bool>,
    probe_interval: Option<Duration>,
    ack_timeout: Option<Duration>,
    indirect_checks: Option<u32>,
    suspicion_mult: Option<u64>,
    suspicion_max_mult: Option<u64>,
    retransmit_mult: Option<u64>,
    max_piggyback: Option<u32>,
    push_pull_interval: Option<Duration>,
    push_pull_entries: Option<u32>,
    cleanup: Option<Duration>,
    max_health: Option<u32>,
    seeds: Option<Vec<u32>>,
    baseline_rounds: Option<[u64; 3]>,
    #[serde(default)]
    leave: Vec<LeaveFile>,
}

#[derive(Deserialize)]
struct WithNodes {
    nodes: u32,
    #[serde(default)]
    settings: Option<Spanned<SettingsFile>>,
}

struct GossipSettings {
    config: Config,
    leave: Vec<Option<SimTime>>,
}

fn settings(file: &str, text: &str) -> Result<GossipSettings, ScenarioError> {
    let parsed: WithNodes =
        toml::from_str(text).map_err(|e| ScenarioError::from_toml(file, text, &e))?;
    let (span, raw) = match parsed.settings {
        Some(s) => (Some(s.span()), s.into_inner()),
        None => (None, SettingsFile::default()),
    };
    let d = Config::default();
    let config = Config {
        detector: match raw.detector {
            None | Some(DetectorName::Swim) => Detector::Swim,
            Some(DetectorName::Baseline) => Detector::Baseline,
        },
        lifeguard: raw.lifeguard.unwrap_or(d.lifeguard),
        probe_interval: raw.probe_interval.map_or(d.probe_interval, |x| x.0),
        ack_timeout: raw.ack_timeout.map_or(d.ack_timeout, |x| x.0),
        indirect_checks: raw
            .indirect_checks
            .map_or(d.indirect_checks, |x| x as usize),
        suspicion_mult: raw.suspicion_mult.unwrap_or(d.suspicion_mult),
        suspicion_max_mult: raw.suspicion_max_mult.unwrap_or(d.suspicion_max_mult),
        retransmit_mult: raw.retransmit_mult.unwrap_or(d.retransmit_mult),
        max_piggyback: raw.max_piggyback.map_or(d.max_piggyback, |x| x as usize),
        push_pull_interval: raw.push_pull_interval.map_or(d.push_pull_interval, |x| x.0),
        push_pull_entries: raw
            .push_pull_entries
            .map_or(d.push_pull_entries, |x| x as usize),
        cleanup: raw.cleanup.map_or(d.cleanup, |x| x.0),
        max_health: raw.max_health.unwrap_or(d.max_health),
        seeds: raw
            .seeds
            .map_or(d.seeds, |s| s.into_iter().map(NodeId).collect()),
        baseline_rounds: raw
            .baseline_rounds
            .map_or(d.baseline_rounds, |[a, b, c]| (a, b, c)),
    };
    config.validate(parsed.nodes as usize).map_err(|message| {
        ScenarioError::at(file, text, span.clone(), format!("[settings]: {message}"))
    })?;
    let mut leave = vec![None; parsed.nodes as usize];
    for l in raw.leave {
        let node = *l.node.get_ref();
        if node >= parsed.nodes {
            return Err(ScenarioError::at(
                file,
                text,
                Some(l.node.span()),
                format!(
                    "leave: node {node} is outside the nodes 0..{}",
                    parsed.nodes
                ),
            ));
        }
        leave[node as usize] = Some(SimTime::ZERO + l.at.0);
    }
    Ok(GossipSettings { config, leave })
}

/// Detection times (median and p99 over every crash × observer pair), false positives,
/// verdicts and suspicions.
fn measure(run: &RunOutput<Node>) -> Vec<Metric> {
    let mut m = checker::measure(run);
    m.detections.sort();
    vec![
        Metric {
            name: "detection_p50_us",
            value: checker::percentile(&m.detections, 50).as_micros(),
        },
        Metric {
            name: "detection_p99_us",
            value: checker::percentile(&m.detections, 99).as_micros(),
        },
        Metric {
            name: "detections",
            value: m.detections.len() as u64,
        },
        Metric {
            name: "undetected",
            value: m.undetected,
        },
        Metric {
            name: "false_positives",
            value: m.false_positives,
        },
        Metric {
            name: "dead_verdicts",
            value: m.dead_verdicts,
        },
        Metric {
            name: "suspicions",
            value: m.suspicions,
        },
    ]
}

fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    let s = settings(&scenario.file, &scenario.text)?;
    let bugs = Bugs::from_names(options.bug_names(scenario))
        .map_err(|e| ScenarioError::Options(e.to_string()))?;
    let config = Arc::new(s.config.clone());
    let per_node: Vec<Settings> = engines::openers(scenario, options.engine_bugs(scenario))?
        .into_iter()
        .enumerate()
        .map(|(i, engine)| Settings {
            config: config.clone(),
            leave_at: s.leave.get(i).copied().flatten(),
            engine,
        })
        .collect();
    let factory = move |node: NodeId| Node::new(per_node[node.index()].clone(), bugs);
    let workload = |_client: ClientId, _rng: &mut SimRng| {};
    let checkers: Vec<Box<dyn Checker<Node>>> = vec![
        Box::new(checker::DetectorChecker {
            config: s.config.clone(),
        }),
        Box::new(checker::IncarnationChecker {
            detector: s.config.detector,
        }),
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
            "protocol = \"gossip\"\nnodes = 4\nduration = \"2s\"\n\n[settings]\n{settings}\n"
        );
        Scenario::parse("g.toml", &text, "g").map_err(|e| e.to_string())
    }

    #[test]
    fn good_settings_load() {
        parse("detector = \"baseline\"\nprobe_interval = \"100ms\"\nack_timeout = \"20ms\"")
            .unwrap();
        parse("lifeguard = false\nseeds = [0, 1]\nleave = [{ node = 2, at = \"1s\" }]").unwrap();
    }

    #[test]
    fn bad_settings_are_errors_with_a_location() {
        let e = parse("seeds = [7]").unwrap_err();
        assert!(
            e.starts_with("g.toml:5:1: [settings]: seed 7 is outside"),
            "{e}"
        );
        let e = parse("ack_timeout = \"300ms\"").unwrap_err();
        assert!(
            e.contains("ack_timeout must be positive and shorter"),
            "{e}"
        );
        let e = parse("leave = [{ node = 9, at = \"1s\" }]").unwrap_err();
        assert!(
            e.starts_with("g.toml:6:19: leave: node 9 is outside"),
            "{e}"
        );
        let e = parse("detector = \"phi\"").unwrap_err();
        assert!(e.starts_with("g.toml:6:12:"), "{e}");
        let e = parse("fanout = 3").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }
}
