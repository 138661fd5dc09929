//! Multi-Paxos, bound to scenario files.

use protocols::paxos::{
    self, BUG_FLAGS, Bugs, Config, Node, Observation, ReadMode, Settings, checker,
};
use serde::Deserialize;
use sim_core::kv_workload::KvWorkload;
use sim_core::linearizability::{HistoryOp, LinearizabilityChecker};
use sim_core::rng::SimRng;
use sim_core::{Checker, ClientId, NodeId, RunOutput};

use crate::duration::Duration;
use crate::engines;
use crate::error::ScenarioError;
use crate::registry::{CheckerInfo, ProtocolEntry, WorkloadKind};
use crate::runner::{Metric, RunOptions, RunReport, run_protocol_measured};
use crate::scenario::Scenario;
use crate::schema::DurationRange;

pub static ENTRY: ProtocolEntry = ProtocolEntry {
    name: "paxos",
    description: "Multi-Paxos total order broadcast with a linearizable key-value service on a storage engine",
    checkers: &[
        CheckerInfo {
            name: checker::NAME,
            properties: "agreement, validity, total order (no gaps, no duplicate execution), acceptor monotonicity, ballot uniqueness",
        },
        CheckerInfo {
            name: checker::LIVENESS,
            properties: "bounded liveness: in the quiet phase, after a leader can be chosen, every operation completes ok",
        },
        CheckerInfo {
            name: LinearizabilityChecker::NAME,
            properties: "linearizability of client operations (key-value model)",
        },
    ],
    bug_flags: BUG_FLAGS,
    workload: WorkloadKind::KeyValue,
    uses_engines: true,
    check_node_count: |_| Ok(()),
    check_settings: |file, text| settings(file, text).map(|_| ()),
    run,
};

/// `[settings]` for `protocol = "paxos"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    leader_timeout: Option<DurationRange>,
    heartbeat_interval: Option<Duration>,
    max_batch: Option<usize>,
    max_in_flight: Option<usize>,
    snapshot_threshold: Option<u64>,
    reads: Option<toml::Spanned<String>>,
}

fn settings(file: &str, text: &str) -> Result<Config, ScenarioError> {
    let raw: SettingsFile = super::read_settings(file, text)?;
    let mut config = Config::default();
    if let Some(range) = raw.leader_timeout {
        config.leader_timeout_min = range.min.0;
        config.leader_timeout_max = range.max.0;
    }
    if let Some(d) = raw.heartbeat_interval {
        config.heartbeat_interval = d.0;
    }
    if let Some(n) = raw.max_batch {
        config.max_batch = n;
    }
    if let Some(n) = raw.max_in_flight {
        config.max_in_flight = n;
    }
    if let Some(n) = raw.snapshot_threshold {
        config.snapshot_threshold = n;
    }
    if let Some(mode) = &raw.reads {
        config.reads = mode.get_ref().parse::<ReadMode>().map_err(|message| {
            ScenarioError::at(
                file,
                text,
                Some(mode.span()),
                format!("[settings] reads: {message}"),
            )
        })?;
    }
    config
        .validate()
        .map_err(|message| ScenarioError::at(file, text, None, format!("[settings]: {message}")))?;
    Ok(config)
}

/// The run's measurements: phase-1 rounds against committed client commands.
fn measure(run: &RunOutput<Node>) -> Vec<Metric> {
    let phase1 = run
        .observations
        .iter()
        .filter(|o| matches!(o.obs, Observation::Phase1Started { .. }))
        .count() as u64;
    // Commands that took effect, counted once (every node applies each one).
    let mut committed = std::collections::BTreeSet::new();
    let mut slots = std::collections::BTreeSet::new();
    for o in &run.observations {
        if let Observation::Applied {
            slot, effective, ..
        } = &o.obs
        {
            committed.extend(effective.iter().copied());
            slots.insert(*slot);
        }
    }
    let commands = committed.len() as u64;
    vec![
        Metric {
            name: "phase1_rounds",
            value: phase1,
        },
        Metric {
            name: "committed_commands",
            value: commands,
        },
        Metric {
            name: "decided_slots",
            value: slots.len() as u64,
        },
        Metric {
            name: "phase1_per_1000_commands",
            value: (phase1 * 1000).checked_div(commands).unwrap_or(0),
        },
    ]
}

fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    let mut config = settings(&scenario.file, &scenario.text)?;
    // The lease honours the scenario's bound on clock drift.
    config.max_drift_ppm = scenario.sim.clock.max_drift_ppm;
    let bugs = Bugs::from_names(options.bug_names(scenario))
        .map_err(|e| ScenarioError::Options(e.to_string()))?;
    let per_node: Vec<Settings> = engines::openers(scenario, options.engine_bugs(scenario))?
        .into_iter()
        .map(|engine| Settings {
            config: config.clone(),
            engine,
            engine_bugs: options.engine_bugs(scenario),
        })
        .collect();
    let factory = move |node: NodeId| Node::new(per_node[node.index()].clone(), bugs);
    let (keys, mix) = scenario.kv_workload.unwrap_or((5, Default::default()));
    let (literals, rate) = scenario.kv_literal_values.clone();
    let mut generator = KvWorkload::new(keys, mix).with_literal_values(literals, rate);
    let workload = move |client: ClientId, rng: &mut SimRng| generator.next(client, rng);
    // Time for the quiet phase to settle: a leader chosen (two leader timeouts, for a
    // duel) and known to every node (heartbeats).
    let settle = sim_core::SimDuration::from_micros(
        2 * config.leader_timeout_max.as_micros() + 10 * config.heartbeat_interval.as_micros(),
    );
    let checkers: Vec<Box<dyn Checker<paxos::Node>>> = vec![
        Box::new(checker::InvariantChecker),
        Box::new(checker::LivenessChecker { settle }),
        Box::new(LinearizabilityChecker::default()),
    ];
    run_protocol_measured(
        scenario,
        options,
        factory,
        Box::new(workload),
        checkers,
        Some(|out: &RunOutput<paxos::Node>| {
            sim_core::linearizability::write_history(&HistoryOp::from_history(&out.history))
        }),
        Some(Box::new(measure)),
    )
}
