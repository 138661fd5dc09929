//! The reliable broadcast, bound to scenario files.

use protocols::broadcast::{self, BUG_FLAGS, Bugs, Node, Request, Settings, checker};
use rand::RngExt;
use serde::Deserialize;
use sim_core::rng::SimRng;
use sim_core::{Checker, ClientId};

use crate::duration::Duration;
use crate::error::ScenarioError;
use crate::registry::{CheckerInfo, ProtocolEntry, WorkloadKind};
use crate::runner::{RunOptions, RunReport, run_protocol};
use crate::scenario::Scenario;

pub static ENTRY: ProtocolEntry = ProtocolEntry {
    name: "broadcast",
    description: "reliable broadcast: retransmit until acknowledged, de-duplicate, relay, resync after restart",
    checkers: &[CheckerInfo {
        name: checker::NAME,
        properties: "no duplication, no creation, agreement, validity",
    }],
    bug_flags: BUG_FLAGS,
    workload: WorkloadKind::Broadcast,
    uses_engines: false,
    check_node_count: |n| {
        if n >= 2 {
            Ok(())
        } else {
            Err("broadcast needs at least 2 nodes".into())
        }
    },
    check_settings: |file, text| settings(file, text).map(|_| ()),
    run,
};

/// `[settings]` for `protocol = "broadcast"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    retransmit_interval: Option<Duration>,
    max_resends_per_tick: Option<usize>,
}

fn settings(file: &str, text: &str) -> Result<Settings, ScenarioError> {
    let raw: SettingsFile = super::read_settings(file, text)?;
    let mut settings = Settings::default();
    if let Some(d) = raw.retransmit_interval {
        settings.retransmit_interval = d.0;
    }
    if let Some(m) = raw.max_resends_per_tick {
        settings.max_resends_per_tick = m;
    }
    settings
        .validate()
        .map_err(|message| ScenarioError::at(file, text, None, format!("[settings]: {message}")))?;
    Ok(settings)
}

fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    let settings = settings(&scenario.file, &scenario.text)?;
    let bugs = Bugs::from_names(options.bug_names(scenario))
        .map_err(|e| ScenarioError::Options(e.to_string()))?;
    let factory = move |_node| Node::new(settings.clone(), bugs);
    let workload = |_client: ClientId, rng: &mut SimRng| Request::Broadcast {
        value: rng.random_range(0..1_000_000),
    };
    let checkers: Vec<Box<dyn Checker<broadcast::Node>>> = vec![Box::new(checker::DeliveryChecker)];
    run_protocol(
        scenario,
        options,
        factory,
        Box::new(workload),
        checkers,
        None,
    )
}
