//! Running a scenario for one seed, independent of the protocol's types.

use std::io::Write;

use serde::Serialize;
use sim_core::fault::ScheduledFault;
use sim_core::trace::{TraceLine, TraceOptions};
use sim_core::workload::Workload;
use sim_core::{Checker, NodeId, Process, RunStats, SimTime, Simulation, Violation};

use crate::error::ScenarioError;
use crate::scenario::Scenario;

/// A JSON Lines trace kept in memory: give `RunOptions::jsonl` a clone and read the
/// bytes back with [`SharedBuffer::take`] once the run is over.
#[derive(Clone, Default)]
pub struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// The bytes written so far (the buffer is left empty).
    pub fn take(&self) -> Result<Vec<u8>, ScenarioError> {
        self.0
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .map_err(|_| ScenarioError::Options("trace buffer poisoned".into()))
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("trace buffer poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How to run one seed.
#[derive(Default)]
pub struct RunOptions {
    pub seed: u64,
    /// Bug flags to switch on, in addition to the scenario's own.
    pub bugs: Vec<String>,
    /// Keep the trace as text lines in the report.
    pub keep_trace_lines: bool,
    /// Write the trace as JSON Lines here.
    pub jsonl: Option<Box<dyn Write>>,
    /// Keep the client history as JSON Lines (`docs/history.md`) in the report, for
    /// protocols whose clients speak the key-value model.
    pub keep_history: bool,
}

impl RunOptions {
    pub fn seed(seed: u64) -> Self {
        RunOptions {
            seed,
            ..RunOptions::default()
        }
    }

    /// The scenario's protocol bug flags followed by the options', de-duplicated (engine
    /// flags are in [`RunOptions::engine_bugs`]).
    pub fn bug_names<'a>(&'a self, scenario: &'a Scenario) -> Vec<&'a str> {
        let mut names: Vec<&str> = Vec::new();
        for name in scenario.bugs.iter().chain(&self.bugs) {
            if !storage::bugs::is_engine_flag_name(name) && !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }

    /// The engine bug flags (`wal.*`, `bitcask.*`, `btree.*`, `lsm.*`) of the scenario and
    /// the options. Names were checked when the scenario was loaded and when the run
    /// started ([`crate::registry::check_bug_flag`]); an unknown one is ignored here.
    pub fn engine_bugs(&self, scenario: &Scenario) -> storage::bugs::EngineBugs {
        scenario
            .bugs
            .iter()
            .chain(&self.bugs)
            .filter_map(|name| storage::bugs::EngineBug::from_name(name))
            .fold(storage::bugs::EngineBugs::NONE, |set, bug| set.with(bug))
    }
}

/// A quantity a protocol measures in a run (for example the bully algorithm's
/// split-brain time), reported by `run`, `replay` and `explore --json`. Protocols that
/// measure nothing report none, and their output is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metric {
    /// snake_case, with the unit in the name where it has one (`split_brain_us`).
    pub name: &'static str,
    pub value: u64,
}

/// Measures a finished run.
pub(crate) type Measure<P> = Box<dyn Fn(&sim_core::RunOutput<P>) -> Vec<Metric>>;

/// What one run produced, without the protocol's types.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub protocol: &'static str,
    pub seed: u64,
    pub trace_hash: u64,
    pub violations: Vec<Violation>,
    pub stats: RunStats,
    pub quiet_from: SimTime,
    pub end_time: SimTime,
    pub realised_schedule: Vec<ScheduledFault>,
    #[serde(skip)]
    pub trace_lines: Vec<TraceLine>,
    pub hit_event_limit: bool,
    pub trace_error: Option<String>,
    /// The client history as JSON Lines, if asked for and the protocol has one.
    #[serde(skip)]
    pub history_jsonl: Option<String>,
    /// What the protocol measured (empty for protocols that measure nothing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    /// How often each coverage point was reached (faults injected, rare paths marked);
    /// points never reached are absent.
    pub coverage: std::collections::BTreeMap<&'static str, u64>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs `scenario` for one seed with a protocol's factory, workload and checkers.
pub(crate) fn run_protocol<P: Process>(
    scenario: &Scenario,
    options: RunOptions,
    factory: impl FnMut(NodeId) -> P + 'static,
    workload: Box<dyn Workload<P>>,
    checkers: Vec<Box<dyn Checker<P>>>,
    render_history: Option<fn(&sim_core::RunOutput<P>) -> String>,
) -> Result<RunReport, ScenarioError> {
    run_protocol_measured(
        scenario,
        options,
        factory,
        workload,
        checkers,
        render_history,
        None,
    )
}

/// [`run_protocol`], with a protocol's own measurements of the run.
pub(crate) fn run_protocol_measured<P: Process>(
    scenario: &Scenario,
    options: RunOptions,
    factory: impl FnMut(NodeId) -> P + 'static,
    workload: Box<dyn Workload<P>>,
    checkers: Vec<Box<dyn Checker<P>>>,
    render_history: Option<fn(&sim_core::RunOutput<P>) -> String>,
    measure: Option<Measure<P>>,
) -> Result<RunReport, ScenarioError> {
    let keep_history = options.keep_history;
    let config = scenario.sim_config(options.seed);
    let trace = TraceOptions {
        keep_lines: options.keep_trace_lines,
        jsonl: options.jsonl,
    };
    let simulation = Simulation::new(config, factory, Some(workload), trace)
        .map_err(|e| ScenarioError::Options(format!("{}: {e}", scenario.file)))?;
    let output = simulation.run();
    let mut violations: Vec<Violation> = checkers
        .iter()
        .filter(|c| scenario.checkers.iter().any(|name| name == c.name()))
        .flat_map(|c| c.check(&output))
        .collect();
    if output.hit_event_limit {
        violations.push(Violation {
            checker: "kernel",
            kind: "event_limit".into(),
            property: "the run finishes within max_events",
            message: format!(
                "stopped at {} after {} events (max_events); a livelock or an event storm?",
                output.end_time, output.stats.queue_events
            ),
            time: Some(output.end_time),
            nodes: Vec::new(),
            cites: Vec::new(),
        });
    }
    let history_jsonl = render_history
        .filter(|_| keep_history)
        .map(|render| render(&output));
    let metrics = measure.map(|m| m(&output)).unwrap_or_default();
    Ok(RunReport {
        scenario: scenario.name.clone(),
        protocol: scenario.protocol.name,
        seed: options.seed,
        trace_hash: output.trace_hash,
        violations,
        stats: output.stats,
        quiet_from: output.quiet_from,
        end_time: output.end_time,
        realised_schedule: output.realised_schedule,
        history_jsonl,
        metrics,
        trace_lines: output.trace_lines,
        hit_event_limit: output.hit_event_limit,
        trace_error: output.trace_error,
        coverage: output.coverage,
    })
}

/// Runs one seed of a scenario.
pub fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    for name in &options.bugs {
        crate::registry::check_bug_flag(scenario.protocol, name).map_err(ScenarioError::Options)?;
    }
    (scenario.protocol.run)(scenario, options)
}

/// Which events a transcript shows.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    /// Only events that concern one of these nodes (all if empty).
    pub nodes: Vec<NodeId>,
    /// Only these event kinds, by name (`send`, `deliver`, `crash`, ...; all if empty).
    pub kinds: Vec<String>,
    /// Only events in `[from, to]`.
    pub from: Option<SimTime>,
    pub to: Option<SimTime>,
}

impl TraceFilter {
    pub fn matches(&self, line: &TraceLine) -> bool {
        let node_ok = self.nodes.is_empty()
            || line.nodes.iter().flatten().any(|n| self.nodes.contains(n))
            || line.nodes.iter().all(Option::is_none);
        let kind_ok = self.kinds.is_empty() || self.kinds.iter().any(|k| k == line.kind);
        let time_ok =
            self.from.is_none_or(|t| line.time >= t) && self.to.is_none_or(|t| line.time <= t);
        node_ok && kind_ok && time_ok
    }
}

/// Runs one seed and renders its trace as a stable, human-readable transcript: one line
/// per event (`<time> <event>`), then the verdict and the trace hash. This is what trace
/// snapshot tests compare.
pub fn transcript(
    scenario: &Scenario,
    seed: u64,
    bugs: &[&str],
    filter: &TraceFilter,
) -> Result<String, ScenarioError> {
    let options = RunOptions {
        seed,
        bugs: bugs.iter().map(|b| b.to_string()).collect(),
        keep_trace_lines: true,
        jsonl: None,
        keep_history: false,
    };
    let report = run(scenario, options)?;
    let mut out = String::new();
    for line in report.trace_lines.iter().filter(|l| filter.matches(l)) {
        out.push_str(&line.to_string());
        out.push('\n');
    }
    if report.violations.is_empty() {
        out.push_str("verdict: ok\n");
    }
    for v in &report.violations {
        out.push_str(&format!("violation: {v}\n"));
    }
    out.push_str(&format!(
        "trace-hash: {}\n",
        sim_core::trace::format_hash(report.trace_hash)
    ));
    Ok(out)
}
