//! Shrinking a failing seed to a smaller scenario that fails the same way.
//!
//! 1. The faults that actually happened (the realised schedule, random choices
//!    resolved) replace the nemesis as an explicit `[[schedule]]`, if that still fails.
//! 2. Delta debugging (Zeller's ddmin) removes faults while the failure persists.
//! 3. The fault phase is shortened (the quiet period is kept: shortening it would turn
//!    "not converged yet" into a spurious failure).
//! 4. Clients, then the total number of operations, are reduced.
//!
//! A candidate is kept only if it fails with a violation of the same kind as the
//! original. Every step is bounded by a budget of runs.

use sim_core::fault::{Fault, ScheduledFault};
use sim_core::network::PartitionShape;
use sim_core::{SimDuration, SimTime};

use crate::error::ScenarioError;
use crate::runner::{RunOptions, run};
use crate::scenario::Scenario;

/// How big a failing case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseSize {
    /// Faults in the schedule (explicit, or realised by the nemesis).
    pub faults: usize,
    pub duration: SimDuration,
    pub clients: u32,
    /// Operations the clients invoked in the failing run.
    pub operations: u64,
}

impl std::fmt::Display for CaseSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} faults, {} duration, {} clients, {} operations",
            self.faults, self.duration, self.clients, self.operations
        )
    }
}

/// The result of a shrink.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The violation kind preserved throughout.
    pub kind: String,
    pub before: CaseSize,
    pub after: CaseSize,
    /// Whether the nemesis could be replaced by an explicit schedule.
    pub explicit_schedule: bool,
    /// Runs spent.
    pub runs: usize,
    /// The smaller scenario as a standalone TOML file (seed, schedule and bug flags in it).
    pub toml: String,
}

/// Errors of shrinking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShrinkError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("seed {seed} does not fail, so there is nothing to shrink")]
    DoesNotFail { seed: u64 },
}

struct Shrinker {
    seed: u64,
    bugs: Vec<String>,
    kind: String,
    runs: usize,
    budget: usize,
    /// Operations invoked by the last failing candidate.
    last_operations: u64,
}

impl Shrinker {
    /// Whether `candidate` fails with the target kind (false once the budget is spent).
    fn fails(&mut self, candidate: &Scenario) -> Result<bool, ScenarioError> {
        if self.runs >= self.budget {
            return Ok(false);
        }
        self.runs += 1;
        let options = RunOptions {
            bugs: self.bugs.clone(),
            ..RunOptions::seed(self.seed)
        };
        let report = run(candidate, options)?;
        let fails = report.violations.iter().any(|v| v.kind == self.kind);
        if fails {
            self.last_operations = report.stats.operations_invoked;
        }
        Ok(fails)
    }

    fn with_schedule(&self, base: &Scenario, schedule: &[ScheduledFault]) -> Scenario {
        let mut s = base.clone();
        s.sim.schedule = schedule.to_vec();
        s
    }

    /// ddmin over the schedule.
    fn minimise_faults(&mut self, base: &Scenario) -> Result<Vec<ScheduledFault>, ScenarioError> {
        let mut faults = base.sim.schedule.clone();
        let mut granularity = 2usize;
        while faults.len() >= 2 && self.runs < self.budget {
            let chunk = faults.len().div_ceil(granularity);
            let mut reduced = false;
            // Try each complement (the schedule without one chunk).
            for start in (0..faults.len()).step_by(chunk) {
                let end = (start + chunk).min(faults.len());
                let complement: Vec<ScheduledFault> = faults[..start]
                    .iter()
                    .chain(&faults[end..])
                    .cloned()
                    .collect();
                if self.fails(&self.with_schedule(base, &complement))? {
                    faults = complement;
                    granularity = (granularity - 1).max(2);
                    reduced = true;
                    break;
                }
            }
            if !reduced {
                if granularity >= faults.len() {
                    break;
                }
                granularity = (granularity * 2).min(faults.len());
            }
        }
        if faults.len() == 1 && self.fails(&self.with_schedule(base, &[]))? {
            faults.clear();
        }
        Ok(faults)
    }

    /// The shortest fault phase (found by bisection) that still fails.
    fn shorten(&mut self, base: &Scenario) -> Result<Scenario, ScenarioError> {
        let quiet = base.sim.quiet_period;
        let fault_phase = base.sim.duration.0 - quiet.0;
        let last_fault = base.sim.schedule.iter().map(|s| s.at.0).max().unwrap_or(0);
        let mut low = last_fault + 1_000; // keep every remaining fault inside the phase
        let mut high = fault_phase;
        let mut best = base.clone();
        while low < high && self.runs < self.budget {
            let mid = low + (high - low) / 2;
            let mut candidate = base.clone();
            candidate.sim.duration = SimDuration(mid + quiet.0);
            if self.fails(&candidate)? {
                best = candidate;
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        Ok(best)
    }

    fn reduce_clients(&mut self, base: &Scenario) -> Result<Scenario, ScenarioError> {
        let Some(clients) = base.sim.clients.clone() else {
            return Ok(base.clone());
        };
        for count in 1..clients.clients {
            let mut candidate = base.clone();
            if let Some(c) = candidate.sim.clients.as_mut() {
                c.clients = count;
            }
            if self.fails(&candidate)? {
                return Ok(candidate);
            }
        }
        Ok(base.clone())
    }

    fn reduce_operations(&mut self, base: &Scenario) -> Result<Scenario, ScenarioError> {
        // Establish the failing run's operation count, then bisect below it.
        if !self.fails(base)? {
            return Ok(base.clone());
        }
        let mut best = base.clone();
        let (mut low, mut high) = (0u64, self.last_operations);
        while low < high && self.runs < self.budget {
            let mid = low + (high - low) / 2;
            let mut candidate = base.clone();
            if let Some(c) = candidate.sim.clients.as_mut() {
                c.max_operations = Some(mid);
            }
            if self.fails(&candidate)? {
                best = candidate;
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        Ok(best)
    }
}

/// Shrinks `seed` of `scenario` (with `bugs` on) within `budget` runs.
pub fn shrink(
    scenario: &Scenario,
    seed: u64,
    bugs: &[String],
    budget: usize,
) -> Result<Shrunk, ShrinkError> {
    for name in bugs {
        crate::registry::check_bug_flag(scenario.protocol, name).map_err(ScenarioError::Options)?;
    }
    let original = run(
        scenario,
        RunOptions {
            bugs: bugs.to_vec(),
            ..RunOptions::seed(seed)
        },
    )?;
    let Some(first) = original.violations.first() else {
        return Err(ShrinkError::DoesNotFail { seed });
    };
    let realised: Vec<ScheduledFault> = original
        .realised_schedule
        .iter()
        .filter(|f| f.at < original.quiet_from)
        .cloned()
        .collect();
    let before = CaseSize {
        faults: realised.len(),
        duration: scenario.sim.duration,
        clients: scenario.sim.clients.as_ref().map_or(0, |c| c.clients),
        operations: original.stats.operations_invoked,
    };
    let mut shrinker = Shrinker {
        seed,
        bugs: bugs.to_vec(),
        kind: first.kind.clone(),
        runs: 1,
        budget: budget.max(2),
        last_operations: original.stats.operations_invoked,
    };

    // 1. Make the schedule explicit.
    let mut explicit = scenario.clone();
    explicit.sim.nemesis = None;
    explicit.sim.schedule = realised;
    let explicit_schedule = shrinker.fails(&explicit)?;
    let mut current = if explicit_schedule {
        // 2. Remove faults.
        let faults = shrinker.minimise_faults(&explicit)?;
        shrinker.with_schedule(&explicit, &faults)
    } else {
        scenario.clone()
    };
    // 3–4. Shorten, then fewer clients and operations.
    current = shrinker.shorten(&current)?;
    current = shrinker.reduce_clients(&current)?;
    current = shrinker.reduce_operations(&current)?;

    // The final case, measured.
    let last = run(
        &current,
        RunOptions {
            bugs: bugs.to_vec(),
            ..RunOptions::seed(seed)
        },
    )?;
    shrinker.runs += 1;
    debug_assert!(last.violations.iter().any(|v| v.kind == shrinker.kind));
    let after = CaseSize {
        faults: if explicit_schedule {
            current.sim.schedule.len()
        } else {
            last.realised_schedule
                .iter()
                .filter(|f| f.at < last.quiet_from)
                .count()
        },
        duration: current.sim.duration,
        clients: current.sim.clients.as_ref().map_or(0, |c| c.clients),
        operations: last.stats.operations_invoked,
    };
    let toml = emit(
        scenario,
        &current,
        seed,
        bugs,
        explicit_schedule,
        &shrinker.kind,
    )?;
    Ok(Shrunk {
        kind: shrinker.kind,
        before,
        after,
        explicit_schedule,
        runs: shrinker.runs,
        toml,
    })
}

/// Writes `shrunk` as a standalone scenario, starting from the original file's text so
/// that every setting not touched by shrinking is kept as written.
fn emit(
    original: &Scenario,
    shrunk: &Scenario,
    seed: u64,
    bugs: &[String],
    explicit_schedule: bool,
    kind: &str,
) -> Result<String, ScenarioError> {
    let mut doc: toml::Table = toml::from_str(&original.text)
        .map_err(|e| ScenarioError::from_toml(&original.file, &original.text, &e))?;
    let text = |d: SimDuration| toml::Value::String(d.to_string());
    doc.insert(
        "name".into(),
        format!("{}-seed-{seed}-shrunk", original.name).into(),
    );
    doc.insert(
        "description".into(),
        format!(
            "shrunk by `faultline shrink` from {} seed {seed}; fails with {kind}",
            original.file
        )
        .into(),
    );
    doc.insert("seed".into(), toml::Value::Integer(seed as i64));
    doc.insert("duration".into(), text(shrunk.sim.duration));
    doc.insert("quiet_period".into(), text(shrunk.sim.quiet_period));
    let mut all_bugs = original.bugs.clone();
    for b in bugs {
        if !all_bugs.contains(b) {
            all_bugs.push(b.clone());
        }
    }
    if !all_bugs.is_empty() {
        doc.insert(
            "bugs".into(),
            toml::Value::Array(all_bugs.into_iter().map(toml::Value::String).collect()),
        );
    }
    if let Some(clients) = &shrunk.sim.clients {
        let workload = doc
            .entry("workload")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(w) = workload {
            w.insert(
                "clients".into(),
                toml::Value::Integer(i64::from(clients.clients)),
            );
            if let Some(max) = clients.max_operations {
                w.insert("max_operations".into(), toml::Value::Integer(max as i64));
            }
        }
    }
    if explicit_schedule {
        doc.remove("nemesis");
        let entries: Vec<toml::Value> = shrunk
            .sim
            .schedule
            .iter()
            .map(|s| toml::Value::Table(schedule_entry(s)))
            .collect();
        doc.insert("schedule".into(), toml::Value::Array(entries));
    }
    let body = toml::to_string(&doc).map_err(|e| ScenarioError::Options(e.to_string()))?;
    Ok(format!(
        "# Shrunk by `faultline shrink` from {} --seed {seed}.\n{body}",
        original.file
    ))
}

fn schedule_entry(s: &ScheduledFault) -> toml::Table {
    let mut t = toml::Table::new();
    let since_start = |at: SimTime| toml::Value::String(SimDuration(at.0).to_string());
    let node = |n: sim_core::NodeId| toml::Value::Integer(i64::from(n.0));
    let nodes = |v: &[sim_core::NodeId]| toml::Value::Array(v.iter().map(|&n| node(n)).collect());
    t.insert("at".into(), since_start(s.at));
    let (name, extra): (&str, Vec<(&str, toml::Value)>) = match &s.fault {
        Fault::Crash { node: n } => ("crash", vec![("node", node(*n))]),
        Fault::CrashInside {
            node: n,
            after_mutations,
        } => (
            "crash",
            vec![
                ("node", node(*n)),
                (
                    "after_mutations",
                    toml::Value::Integer(i64::from(*after_mutations)),
                ),
            ],
        ),
        Fault::Restart { node: n } => ("restart", vec![("node", node(*n))]),
        Fault::Pause { node: n } => ("pause", vec![("node", node(*n))]),
        Fault::Resume { node: n } => ("resume", vec![("node", node(*n))]),
        Fault::Heal => ("heal", vec![]),
        Fault::Unclog => ("unclog", vec![]),
        Fault::Clog {
            from,
            to,
            extra,
            duration,
        } => (
            "clog",
            vec![
                ("from", node(*from)),
                ("to", node(*to)),
                ("extra", toml::Value::String(extra.to_string())),
                ("duration", toml::Value::String(duration.to_string())),
            ],
        ),
        Fault::Partition { shape } => {
            let fields = match shape {
                PartitionShape::Isolate { node: n } => {
                    vec![("shape", "isolate".into()), ("node", node(*n))]
                }
                PartitionShape::IsolateLeader => vec![("shape", "isolate_leader".into())],
                PartitionShape::RandomHalves => vec![("shape", "random_halves".into())],
                PartitionShape::MajoritiesRing => vec![("shape", "majorities_ring".into())],
                PartitionShape::Bridge => vec![("shape", "bridge".into())],
                PartitionShape::OneWay { from, to } => vec![
                    ("shape", "one_way".into()),
                    ("from", nodes(from)),
                    ("to", nodes(to)),
                ],
                PartitionShape::Links { links } => vec![
                    ("shape", "links".into()),
                    (
                        "links",
                        toml::Value::Array(
                            links
                                .iter()
                                .map(|&(a, b)| toml::Value::Array(vec![node(a), node(b)]))
                                .collect(),
                        ),
                    ),
                ],
            };
            ("partition", fields)
        }
    };
    t.insert("fault".into(), name.into());
    for (k, v) in extra {
        t.insert(k.into(), v);
    }
    t
}
