//! PBFT, bound to scenario files.

use std::collections::{BTreeMap, BTreeSet};

use protocols::pbft::{
    self, BUG_FLAGS, Behaviour, Bugs, Config, Node, Observation, Settings, checker,
};
use serde::Deserialize;
use sim_core::kv_workload::KvWorkload;
use sim_core::linearizability::{HistoryOp, LinearizabilityChecker};
use sim_core::rng::SimRng;
use sim_core::{Checker, ClientId, NodeId, RunOutput};
use storage::kv::EngineSyncPolicy;

use crate::duration::Duration;
use crate::engines;
use crate::error::ScenarioError;
use crate::registry::{CheckerInfo, ProtocolEntry, WorkloadKind};
use crate::runner::{Metric, RunOptions, RunReport, run_protocol_measured};
use crate::scenario::Scenario;

pub static ENTRY: ProtocolEntry = ProtocolEntry {
    name: "pbft",
    description: "PBFT with checkpoints, watermarks, view changes with certificates, state transfer and Byzantine replicas; a linearizable key-value service on a storage engine",
    checkers: &[
        CheckerInfo {
            name: checker::NAME,
            properties: "agreement across views, commit certificate before execution, exactly-once execution, checkpoint agreement, total order, no equivocation by honest replicas",
        },
        CheckerInfo {
            name: checker::LIVENESS,
            properties: "bounded liveness: in the quiet phase every honest replica up catches up with the others",
        },
        CheckerInfo {
            name: checker::OP_LIVENESS,
            properties: "bounded liveness per operation: every operation pending when the quiet phase begins is accepted within a bound derived from the timeouts",
        },
        CheckerInfo {
            name: LinearizabilityChecker::NAME,
            properties: "linearizability of client operations (key-value model; a client accepts f+1 matching replies)",
        },
    ],
    bug_flags: BUG_FLAGS,
    workload: WorkloadKind::KeyValue,
    uses_engines: true,
    check_node_count: |n| pbft::check_node_count(n as usize),
    check_settings: |file, text| settings(file, text).map(|_| ()),
    run,
};

/// `[settings]` for `protocol = "pbft"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    checkpoint_interval: Option<u64>,
    window: Option<u64>,
    request_timeout: Option<Duration>,
    view_change_timeout: Option<Duration>,
    tick: Option<Duration>,
    client_retry: Option<Duration>,
    /// `false` disables view changes (a deliberately broken setting, for tests).
    view_changes: Option<bool>,
    /// Byzantine replicas: `{ 3 = "equivocate" }` (node id → behaviour).
    byzantine: Option<toml::Spanned<BTreeMap<String, toml::Spanned<String>>>>,
}

#[derive(Deserialize)]
struct NodesOnly {
    nodes: Option<u32>,
}

fn settings(file: &str, text: &str) -> Result<Config, ScenarioError> {
    let raw: SettingsFile = super::read_settings(file, text)?;
    let nodes = toml::from_str::<NodesOnly>(text)
        .map_err(|e| ScenarioError::from_toml(file, text, &e))?
        .nodes
        .unwrap_or(4) as usize;
    let mut config = Config::default();
    if let Some(k) = raw.checkpoint_interval {
        config.checkpoint_interval = k;
    }
    if let Some(w) = raw.window {
        config.window = w;
    }
    if let Some(d) = raw.request_timeout {
        config.request_timeout = d.0;
    }
    if let Some(d) = raw.view_change_timeout {
        config.view_change_timeout = d.0;
    }
    if let Some(d) = raw.tick {
        config.tick = d.0;
    }
    if let Some(d) = raw.client_retry {
        config.client_retry = d.0;
    }
    if let Some(v) = raw.view_changes {
        config.view_changes = v;
    }
    if let Some(table) = &raw.byzantine {
        for (node, behaviour) in table.get_ref() {
            let id: u32 = node.parse().map_err(|_| {
                ScenarioError::at(
                    file,
                    text,
                    Some(table.span()),
                    format!("[settings] byzantine: expected a node id as the key, got `{node}`"),
                )
            })?;
            let b = behaviour
                .get_ref()
                .parse::<Behaviour>()
                .map_err(|message| {
                    ScenarioError::at(
                        file,
                        text,
                        Some(behaviour.span()),
                        format!("[settings] byzantine: {message}"),
                    )
                })?;
            config.byzantine.insert(id, b);
        }
    }
    config
        .validate(nodes)
        .map_err(|message| ScenarioError::at(file, text, None, format!("[settings]: {message}")))?;
    Ok(config)
}

/// Committed requests, view changes, rejected messages, equivocations honest replicas
/// saw, and messages per committed request.
fn measure(run: &RunOutput<Node>, byzantine: &BTreeSet<NodeId>) -> Vec<Metric> {
    let mut committed = BTreeSet::new();
    let mut views = BTreeSet::new();
    let mut rejected = 0u64;
    let mut conflicts = 0u64;
    for o in &run.observations {
        match &o.obs {
            Observation::Conflict { .. } if !byzantine.contains(&o.node) => conflicts += 1,
            Observation::Executed {
                op: Some(op),
                effective: true,
                ..
            } => {
                committed.insert(*op);
            }
            Observation::NewViewEntered { view, .. } => {
                views.insert(*view);
            }
            Observation::Rejected { .. } => rejected += 1,
            _ => {}
        }
    }
    let commands = committed.len() as u64;
    vec![
        Metric {
            name: "committed_commands",
            value: commands,
        },
        Metric {
            name: "view_changes",
            value: views.len() as u64,
        },
        Metric {
            name: "rejected_messages",
            value: rejected,
        },
        Metric {
            name: "equivocations_seen",
            value: conflicts,
        },
        Metric {
            name: "messages_per_committed_request",
            value: run.stats.messages_sent.checked_div(commands).unwrap_or(0),
        },
    ]
}

fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    let mut config = settings(&scenario.file, &scenario.text)?;
    // Every node's secret derives from the run's seed.
    config.key = options.seed ^ 0x7062_6674_6b65_7931;
    let bugs = Bugs::from_names(options.bug_names(scenario))
        .map_err(|e| ScenarioError::Options(e.to_string()))?;
    let n = scenario.sim.node_count;
    let f = (n - 1) / 3;
    let byzantine: BTreeSet<NodeId> = config.byzantine.keys().map(|&id| NodeId(id)).collect();
    // The protocol syncs explicitly before it reveals anything (one sync per handler,
    // before its messages leave), so its engines do not sync every write: an unsynced
    // write can be lost or torn in a crash.
    let mut per_node: Vec<Settings> = Vec::new();
    for name in &scenario.engines {
        let engine = engines::opener_tuned(
            name,
            EngineSyncPolicy::Explicit,
            options.engine_bugs(scenario),
            &scenario.engine_tuning,
        )
        .ok_or_else(|| ScenarioError::Options(format!("unknown storage engine {name}")))?;
        per_node.push(Settings {
            config: config.clone(),
            engine,
        });
    }
    let factory = move |node: NodeId| Node::new(per_node[node.index()].clone(), bugs);
    let (keys, mix) = scenario.kv_workload.unwrap_or((5, Default::default()));
    let (literals, rate) = scenario.kv_literal_values.clone();
    let mut generator = KvWorkload::new(keys, mix).with_literal_values(literals, rate);
    let workload = move |client: ClientId, rng: &mut SimRng| generator.next(client, rng);
    // Time for the quiet phase to settle: a view change with its timer backed off to the
    // cap, then catching up through a few ticks.
    let settle = sim_core::SimDuration::from_micros(
        3 * 8 * config.view_change_timeout.as_micros() / 2
            + 2 * config.request_timeout.as_micros()
            + 20 * config.tick.as_micros(),
    );
    // An operation pending when the quiet phase begins: the view-change timer at its cap,
    // a request timeout to notice a faulty primary and one for the new view to execute
    // it, the client's capped retransmission period, and ten ticks of catching up.
    let op_bound = sim_core::SimDuration::from_micros(
        8 * config.view_change_timeout.as_micros()
            + 2 * config.request_timeout.as_micros()
            + 4 * config.client_retry.as_micros()
            + 10 * config.tick.as_micros(),
    );
    let checkers: Vec<Box<dyn Checker<pbft::Node>>> = vec![
        Box::new(checker::InvariantChecker {
            f,
            byzantine: byzantine.clone(),
        }),
        Box::new(checker::LivenessChecker {
            settle,
            byzantine: byzantine.clone(),
        }),
        Box::new(checker::OpLivenessChecker { bound: op_bound }),
        Box::new(LinearizabilityChecker::default()),
    ];
    run_protocol_measured(
        scenario,
        options,
        factory,
        Box::new(workload),
        checkers,
        Some(|out: &RunOutput<pbft::Node>| {
            sim_core::linearizability::write_history(&HistoryOp::from_history(&out.history))
        }),
        Some(Box::new(move |out: &RunOutput<Node>| {
            measure(out, &byzantine)
        })),
    )
}
