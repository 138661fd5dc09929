//! Raft, bound to scenario files.

use protocols::raft::{self, BUG_FLAGS, Bugs, Features, Node, ReadMode, Settings, Timing, checker};
use serde::Deserialize;
use sim_core::kv_workload::KvWorkload;
use sim_core::linearizability::{HistoryOp, LinearizabilityChecker};
use sim_core::rng::SimRng;
use sim_core::{Checker, ClientId, NodeId};

use crate::duration::Duration;
use crate::engines;
use crate::error::ScenarioError;
use crate::registry::{CheckerInfo, ProtocolEntry, WorkloadKind};
use crate::runner::{RunOptions, RunReport, run_protocol};
use crate::scenario::Scenario;
use crate::schema::DurationRange;

pub static ENTRY: ProtocolEntry = ProtocolEntry {
    name: "raft",
    description: "Raft consensus with a linearizable key-value state machine on a storage engine",
    checkers: &[
        CheckerInfo {
            name: checker::NAME,
            properties: "election safety, log matching, leader completeness, state machine safety",
        },
        CheckerInfo {
            name: LinearizabilityChecker::NAME,
            properties: "linearizability of client operations (key-value model)",
        },
        CheckerInfo {
            name: sim_core::crash_consistency::NAME,
            properties: "crash consistency: no storage corruption reported after crashes alone",
        },
    ],
    bug_flags: BUG_FLAGS,
    workload: WorkloadKind::KeyValue,
    uses_engines: true,
    check_node_count: |_| Ok(()),
    check_settings: |file, text| settings(file, text).map(|_| ()),
    run,
};

/// `[settings]` for `protocol = "raft"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    election_timeout: Option<DurationRange>,
    heartbeat_interval: Option<Duration>,
    max_entries_per_message: Option<usize>,
    pre_vote: Option<bool>,
    check_quorum: Option<bool>,
    reads: Option<toml::Spanned<String>>,
    snapshot_threshold: Option<u64>,
    transfer_interval: Option<Duration>,
}

fn settings(file: &str, text: &str) -> Result<(Timing, Features), ScenarioError> {
    let raw: SettingsFile = super::read_settings(file, text)?;
    let mut features = Features::default();
    if let Some(on) = raw.pre_vote {
        features.pre_vote = on;
    }
    if let Some(on) = raw.check_quorum {
        features.check_quorum = on;
    }
    if let Some(mode) = &raw.reads {
        features.reads = mode.get_ref().parse::<ReadMode>().map_err(|message| {
            ScenarioError::at(
                file,
                text,
                Some(mode.span()),
                format!("[settings] reads: {message}"),
            )
        })?;
    }
    if let Some(n) = raw.snapshot_threshold {
        features.snapshot_threshold = n;
    }
    if let Some(d) = raw.transfer_interval {
        if d.0 == sim_core::SimDuration::ZERO {
            return Err(ScenarioError::at(
                file,
                text,
                None,
                "[settings]: transfer_interval must be positive",
            ));
        }
        features.transfer_interval = Some(d.0);
    }
    let mut timing = Timing::default();
    if let Some(range) = raw.election_timeout {
        timing.election_timeout_min = range.min.0;
        timing.election_timeout_max = range.max.0;
    }
    if let Some(d) = raw.heartbeat_interval {
        timing.heartbeat_interval = d.0;
    }
    if let Some(m) = raw.max_entries_per_message {
        timing.max_entries_per_message = m;
    }
    timing
        .validate()
        .map_err(|message| ScenarioError::at(file, text, None, format!("[settings]: {message}")))?;
    Ok((timing, features))
}

fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    let (timing, mut features) = settings(&scenario.file, &scenario.text)?;
    // The lease honours the scenario's bound on clock drift.
    features.max_drift_ppm = scenario.sim.clock.max_drift_ppm;
    let bugs = Bugs::from_names(options.bug_names(scenario))
        .map_err(|e| ScenarioError::Options(e.to_string()))?;
    let per_node: Vec<Settings> = engines::openers(scenario, options.engine_bugs(scenario))?
        .into_iter()
        .map(|engine| Settings {
            timing: timing.clone(),
            features: features.clone(),
            engine,
            engine_bugs: options.engine_bugs(scenario),
        })
        .collect();
    let factory = move |node: NodeId| Node::new(per_node[node.index()].clone(), bugs);
    let (keys, mix) = scenario.kv_workload.unwrap_or((5, Default::default()));
    let (literals, rate) = scenario.kv_literal_values.clone();
    let mut generator = KvWorkload::new(keys, mix).with_literal_values(literals, rate);
    let workload = move |client: ClientId, rng: &mut SimRng| generator.next(client, rng);
    let checkers: Vec<Box<dyn Checker<raft::Node>>> = vec![
        Box::new(checker::InvariantChecker),
        Box::new(LinearizabilityChecker::default()),
        Box::new(sim_core::crash_consistency::CrashConsistencyChecker::new(
            |o: &raft::Observation| match o {
                raft::Observation::Stopped { error, .. } => Some(error.as_str()),
                _ => None,
            },
        )),
    ];
    run_protocol(
        scenario,
        options,
        factory,
        Box::new(workload),
        checkers,
        Some(|out: &sim_core::RunOutput<raft::Node>| {
            sim_core::linearizability::write_history(&HistoryOp::from_history(&out.history))
        }),
    )
}
