//! Dynamo-style replication, bound to scenario files.

use std::sync::Arc;

use protocols::dynamo::workload::{DynamoWorkload, WorkloadShape};
use protocols::dynamo::{
    BUG_FLAGS, Bugs, Membership, Node, Observation, Quorum, Settings, Timing, checker, ring,
};
use protocols::gossip;
use serde::Deserialize;
use sim_core::fault::{Fault, FaultKind};
use sim_core::{Checker, NodeId, RunOutput, SimDuration, SimTime};
use storage::kv::EngineSyncPolicy;
use toml::Spanned;

use crate::duration::Duration;
use crate::engines;
use crate::error::ScenarioError;
use crate::registry::{CheckerInfo, ProtocolEntry, WorkloadKind};
use crate::runner::{Metric, RunOptions, RunReport, run_protocol_measured};
use crate::scenario::Scenario;

pub static ENTRY: ProtocolEntry = ProtocolEntry {
    name: "dynamo",
    description: "Dynamo-style replication: consistent-hash ring, N/R/W quorums (sloppy or strict), hinted handoff, dotted-version-vector siblings with contexts, read repair, Merkle anti-entropy, tombstones with grace",
    checkers: &[
        CheckerInfo {
            name: checker::CONVERGENCE,
            properties: "convergence: every replica of a key holds the same versions and every replica of a range the same Merkle root after the quiet phase",
        },
        CheckerInfo {
            name: checker::CAUSAL_SIBLINGS,
            properties: "causal sibling correctness: final siblings are exactly the maximal writes of the causal history (no lost update, no false concurrency)",
        },
        CheckerInfo {
            name: checker::NO_LOST_WRITE,
            properties: "no lost acknowledged write: every acknowledged set element is in the final converged read",
        },
        CheckerInfo {
            name: checker::DELETES,
            properties: "deletes stay deleted: no value an acknowledged delete superseded is among the final versions",
        },
        CheckerInfo {
            name: checker::HINTS,
            properties: "hinted handoff: every hint delivered then removed, or expired after its TTL",
        },
        CheckerInfo {
            name: checker::STRICT_READS,
            properties: "strict quorum with R + W > N: a read that starts after a write completed sees it or a causal successor",
        },
        CheckerInfo {
            name: checker::MEMBERSHIP,
            properties: "membership (SWIM mode): after the quiet phase every live node sees every other live node alive at an incarnation of its current process",
        },
    ],
    bug_flags: BUG_FLAGS,
    workload: WorkloadKind::Versioned,
    uses_engines: true,
    check_node_count: |n| {
        if n >= 1 {
            Ok(())
        } else {
            Err("dynamo needs at least 1 node".into())
        }
    },
    check_settings: |file, text| settings(file, text).map(|_| ()),
    run,
};

/// `[settings]` for `protocol = "dynamo"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    n: Option<Spanned<u32>>,
    r: Option<Spanned<u32>>,
    w: Option<Spanned<u32>>,
    sloppy: Option<bool>,
    allow_weak_quorum: Option<bool>,
    vnodes: Option<Spanned<u32>>,
    weights: Option<Spanned<Vec<f64>>>,
    register_keys: Option<Spanned<u32>>,
    set_keys: Option<Spanned<u32>>,
    delete_fraction: Option<Spanned<f64>>,
    blind_fraction: Option<Spanned<f64>>,
    tick: Option<Duration>,
    request_timeout: Option<Duration>,
    hint_after: Option<Duration>,
    hint_interval: Option<Duration>,
    hint_ttl: Option<Duration>,
    ae_interval: Option<Duration>,
    tombstone_grace: Option<Duration>,
    repair_wait: Option<Duration>,
    settle: Option<Duration>,
    membership: Option<Spanned<String>>,
    swim_probe_interval: Option<Duration>,
}

#[derive(Deserialize)]
struct WithNodes {
    nodes: u32,
    #[serde(default)]
    settings: Option<Spanned<SettingsFile>>,
}

#[derive(Debug, Clone)]
struct DynamoSettings {
    quorum: Quorum,
    timing: Timing,
    membership: Membership,
    shape: WorkloadShape,
}

fn settings(file: &str, text: &str) -> Result<DynamoSettings, ScenarioError> {
    let parsed: WithNodes =
        toml::from_str(text).map_err(|e| ScenarioError::from_toml(file, text, &e))?;
    let nodes = parsed.nodes as usize;
    let (span, raw) = match parsed.settings {
        Some(s) => (Some(s.span()), s.into_inner()),
        None => (None, SettingsFile::default()),
    };
    let error = |span, message: String| ScenarioError::at(file, text, span, message);
    let int = |v: &Option<Spanned<u32>>, default: u32| v.as_ref().map_or(default, |x| *x.get_ref());
    let n_default = 3.min(parsed.nodes.max(1));
    let quorum = Quorum {
        n: int(&raw.n, n_default) as usize,
        r: int(&raw.r, n_default / 2 + 1) as usize,
        w: int(&raw.w, n_default / 2 + 1) as usize,
        sloppy: raw.sloppy.unwrap_or(true),
    };
    let quorum_span = raw
        .r
        .as_ref()
        .or(raw.w.as_ref())
        .or(raw.n.as_ref())
        .map(|s| s.span())
        .or(span.clone());
    quorum
        .validate(nodes, raw.allow_weak_quorum.unwrap_or(false))
        .map_err(|m| error(quorum_span, format!("[settings]: {m}")))?;
    let vnodes = int(&raw.vnodes, ring::DEFAULT_VNODES);
    let weights = match &raw.weights {
        Some(w) if w.get_ref().len() != nodes => {
            return Err(error(
                Some(w.span()),
                format!(
                    "weights lists {} nodes; expected one weight per node ({nodes})",
                    w.get_ref().len()
                ),
            ));
        }
        Some(w) => w.get_ref().clone(),
        None => vec![1.0; nodes],
    };
    let swim = match raw
        .membership
        .as_ref()
        .map(|m| (m.get_ref().as_str(), m.span()))
    {
        Some(("static", _)) => None,
        None | Some(("swim", _)) => {
            let probe = raw
                .swim_probe_interval
                .map_or(SimDuration::from_millis(100), |d| d.0);
            let config = gossip::Config {
                probe_interval: probe,
                ack_timeout: SimDuration(probe.0 / 4),
                // Push-pull often, so that a live member declared dead near the end
                // of the faults learns it and refutes within the quiet phase.
                push_pull_interval: SimDuration(probe.0 * 5),
                // Every node is a seed: a restarted node joins by push-pull with all of
                // them at once, so their hints for it are handed off without waiting
                // for its first probes to spread its new incarnation.
                seeds: (0..nodes as u32).map(NodeId).collect(),
                ..gossip::Config::default()
            };
            config
                .validate(nodes)
                .map_err(|m| error(span.clone(), format!("[settings]: swim: {m}")))?;
            Some(Arc::new(config))
        }
        Some((other, at)) => {
            return Err(error(
                Some(at),
                format!("[settings]: membership = \"{other}\"; expected \"static\" or \"swim\""),
            ));
        }
    };
    let membership = Membership {
        weights,
        vnodes,
        swim,
    };
    if let Err(e) = membership.ring() {
        let at = raw
            .weights
            .as_ref()
            .map(|w| w.span())
            .or(raw.vnodes.as_ref().map(|v| v.span()));
        return Err(error(at, format!("[settings]: {e}")));
    }
    let mut timing = Timing::default();
    for (field, value) in [
        (&mut timing.tick, raw.tick),
        (&mut timing.request_timeout, raw.request_timeout),
        (&mut timing.hint_after, raw.hint_after),
        (&mut timing.hint_interval, raw.hint_interval),
        (&mut timing.hint_ttl, raw.hint_ttl),
        (&mut timing.ae_interval, raw.ae_interval),
        (&mut timing.tombstone_grace, raw.tombstone_grace),
        (&mut timing.repair_wait, raw.repair_wait),
        (&mut timing.settle, raw.settle),
    ] {
        if let Some(d) = value {
            *field = d.0;
        }
    }
    timing
        .validate()
        .map_err(|m| error(span.clone(), format!("[settings]: {m}")))?;
    let count = |v: &Option<Spanned<u32>>, name: &str, default: u32| match v {
        Some(k) if *k.get_ref() > 1000 => Err(error(
            Some(k.span()),
            format!("{name} {} is out of range; expected 0 to 1000", k.get_ref()),
        )),
        Some(k) => Ok(*k.get_ref()),
        None => Ok(default),
    };
    let fraction = |v: &Option<Spanned<f64>>, name: &str, default: f64| match v {
        Some(p) if !(0.0..=1.0).contains(p.get_ref()) => Err(error(
            Some(p.span()),
            format!(
                "{name} {} is out of range; expected a probability from 0.0 to 1.0",
                p.get_ref()
            ),
        )),
        Some(p) => Ok(*p.get_ref()),
        None => Ok(default),
    };
    let defaults = WorkloadShape::default();
    let shape = WorkloadShape {
        register_keys: count(&raw.register_keys, "register_keys", defaults.register_keys)?,
        set_keys: count(&raw.set_keys, "set_keys", defaults.set_keys)?,
        delete_fraction: fraction(
            &raw.delete_fraction,
            "delete_fraction",
            defaults.delete_fraction,
        )?,
        blind_fraction: fraction(
            &raw.blind_fraction,
            "blind_fraction",
            defaults.blind_fraction,
        )?,
    };
    if shape.register_keys + shape.set_keys == 0 {
        return Err(error(
            span,
            "[settings]: register_keys + set_keys must be at least 1".into(),
        ));
    }
    Ok(DynamoSettings {
        quorum,
        timing,
        membership,
        shape,
    })
}

/// The longest a node can be down (crashed or paused) in the scenario: a nemesis fault's
/// longest duration, or a scheduled crash or pause until its restart or resume (or the
/// quiet phase, which restarts everything).
pub fn max_downtime(scenario: &Scenario) -> SimDuration {
    let sim = &scenario.sim;
    let quiet_from = SimTime::ZERO
        + SimDuration::from_micros(
            sim.duration
                .as_micros()
                .saturating_sub(sim.quiet_period.as_micros()),
        );
    let mut longest = SimDuration::ZERO;
    if let Some(nemesis) = &sim.nemesis
        && nemesis
            .kinds
            .iter()
            .any(|k| matches!(k, FaultKind::Crash | FaultKind::Pause))
    {
        longest = longest.max(nemesis.fault_duration_max);
    }
    for (i, f) in sim.schedule.iter().enumerate() {
        let (node, is_up): (NodeId, fn(&Fault, NodeId) -> bool) = match f.fault {
            Fault::Crash { node } => (
                node,
                |g, n| matches!(g, Fault::Restart { node } if *node == n),
            ),
            Fault::Pause { node } => (
                node,
                |g, n| matches!(g, Fault::Resume { node } if *node == n),
            ),
            _ => continue,
        };
        let back = sim.schedule[i + 1..]
            .iter()
            .filter(|g| g.at >= f.at && is_up(&g.fault, node))
            .map(|g| g.at)
            .min()
            .unwrap_or(quiet_from)
            .min(quiet_from);
        longest = longest.max(back.saturating_since(f.at));
    }
    longest
}

/// Sibling counts of reads and of the final versions, hint traffic, and the time to
/// converge after the faults heal.
fn measure(run: &RunOutput<Node>) -> Vec<Metric> {
    let mut read_siblings = [0u64; 4];
    let (mut stored, mut delivered, mut expired, mut collected) = (0u64, 0u64, 0u64, 0u64);
    let mut holders = std::collections::BTreeSet::new();
    let (mut down_views, mut back_up, mut forgotten) = (0u64, 0u64, 0u64);
    for o in &run.observations {
        match &o.obs {
            Observation::ReadSiblings { count, .. } => {
                read_siblings[(*count as usize).min(3)] += 1;
            }
            Observation::HintStored { .. } => {
                stored += 1;
                holders.insert(o.node);
            }
            Observation::HintDelivered { .. } => delivered += 1,
            Observation::HintExpired { .. } => expired += 1,
            Observation::Collected { .. } => collected += 1,
            Observation::Forgot { .. } => forgotten += 1,
            Observation::Membership(gossip::Observation::View { state, .. }) => {
                if *state == gossip::State::Alive {
                    back_up += 1;
                } else if !matches!(state, gossip::State::Removed) {
                    down_views += 1;
                }
            }
            _ => {}
        }
    }
    let (states, _) = checker::final_states(run);
    let mut final_counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (keys, _) in states.values() {
        for (key, (_, versions)) in keys.iter() {
            let live = versions.iter().filter(|v| !v.2).count();
            let e = final_counts.entry(key).or_insert(0);
            *e = (*e).max(live);
        }
    }
    let remembered: u64 = run
        .live_nodes()
        .filter_map(|node| {
            let q = run.final_incarnation[node.index()];
            run.observations
                .iter()
                .filter(|o| o.node == node && o.incarnation == q)
                .filter_map(|o| match &o.obs {
                    Observation::Snapshot { remembered, .. } => Some(u64::from(*remembered)),
                    _ => None,
                })
                .next_back()
        })
        .sum();
    let final_max = final_counts.values().copied().max().unwrap_or(0) as u64;
    let final_multi = final_counts.values().filter(|&&c| c > 1).count() as u64;
    let converged =
        checker::last_change(run).map_or(0, |t| t.saturating_since(run.quiet_from).as_micros());
    let metric = |name, value| Metric { name, value };
    vec![
        metric("read_siblings_0", read_siblings[0]),
        metric("read_siblings_1", read_siblings[1]),
        metric("read_siblings_2", read_siblings[2]),
        metric("read_siblings_3plus", read_siblings[3]),
        metric("final_siblings_max", final_max),
        metric("final_keys_with_siblings", final_multi),
        metric("hints_stored", stored),
        metric("hint_holders", holders.len() as u64),
        metric("hints_delivered", delivered),
        metric("hints_expired", expired),
        metric("tombstones_collected", collected),
        metric("convergence_after_heal_us", converged),
        metric("membership_down_views", down_views),
        metric("collected_records_forgotten", forgotten),
        metric("final_collected_records", remembered),
        metric("membership_alive_views", back_up),
    ]
}

fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    let s = settings(&scenario.file, &scenario.text)?;
    let downtime = max_downtime(scenario);
    if s.timing.tombstone_grace <= downtime {
        return Err(ScenarioError::Options(format!(
            "{}: tombstone_grace {} must exceed the scenario's longest node downtime {}",
            scenario.file, s.timing.tombstone_grace, downtime
        )));
    }
    let bugs = Bugs::from_names(options.bug_names(scenario))
        .map_err(|e| ScenarioError::Options(e.to_string()))?;
    let mut per_node = Vec::new();
    for name in &scenario.engines {
        // Every change is synced explicitly before it is revealed.
        let engine = engines::opener_tuned(
            name,
            EngineSyncPolicy::Explicit,
            options.engine_bugs(scenario),
            &scenario.engine_tuning,
        )
        .ok_or_else(|| ScenarioError::Options(format!("unknown storage engine {name}")))?;
        per_node.push(Settings {
            quorum: s.quorum,
            timing: s.timing.clone(),
            membership: s.membership.clone(),
            engine,
        });
    }
    let factory = move |node: NodeId| Node::new(node, per_node[node.index()].clone(), bugs);
    let workload = DynamoWorkload::new(s.shape);
    let checkers: Vec<Box<dyn Checker<Node>>> = vec![
        Box::new(checker::ConvergenceChecker),
        Box::new(checker::CausalSiblingsChecker),
        Box::new(checker::NoLostWriteChecker),
        Box::new(checker::DeletesChecker),
        Box::new(checker::HintsChecker),
        Box::new(checker::StrictReadsChecker {
            enabled: s.quorum.strict_overlap(),
        }),
        Box::new(checker::MembershipChecker {
            swim: s.membership.swim.clone(),
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
            "protocol = \"dynamo\"\nnodes = 5\nduration = \"2s\"\n\n[settings]\n{settings}\n"
        );
        Scenario::parse("d.toml", &text, "d").map_err(|e| e.to_string())
    }

    #[test]
    fn good_settings_load() {
        parse("n = 3\nr = 2\nw = 2").unwrap();
        parse("n = 3\nr = 1\nw = 1\nallow_weak_quorum = true").unwrap();
        parse("weights = [1.0, 2.0, 1.0, 1.0, 0.5]\nvnodes = 64").unwrap();
        parse("").unwrap();
    }

    #[test]
    fn bad_settings_are_errors_with_a_location() {
        let e = parse("n = 3\nr = 1\nw = 1").unwrap_err();
        assert!(
            e.starts_with("d.toml:")
                && e.contains("does not exceed n = 3")
                && e.contains("allow_weak_quorum"),
            "{e}"
        );
        let e = parse("n = 6").unwrap_err();
        assert!(e.contains("n = 6 is out of range"), "{e}");
        let e = parse("r = 4").unwrap_err();
        assert!(e.contains("r = 4 is out of range"), "{e}");
        let e = parse("weights = [1.0, 1.0]").unwrap_err();
        assert!(
            e.starts_with("d.toml:6:11:") && e.contains("one weight per node"),
            "{e}"
        );
        let e = parse("weights = [1.0, 1.0, 0.0, 1.0, 1.0]").unwrap_err();
        assert!(e.contains("positive weight"), "{e}");
        let e = parse("vnodes = 0").unwrap_err();
        assert!(e.contains("vnodes must be positive"), "{e}");
        let e = parse("hint_ttl = \"30s\"").unwrap_err();
        assert!(
            e.contains("hint_ttl must be shorter than tombstone_grace"),
            "{e}"
        );
        let e = parse("delete_fraction = 1.5").unwrap_err();
        assert!(e.contains("expected a probability"), "{e}");
        let e = parse("leader = 1").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }
}
