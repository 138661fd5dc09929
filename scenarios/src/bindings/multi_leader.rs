//! Multi-leader replication of CRDT-typed keys, bound to scenario files.

use std::collections::BTreeMap;

use protocols::multi_leader::crdt::{CustomMerge, KeySpaces, Kind, MergeFn, ValueType};
use protocols::multi_leader::workload::CrdtWorkload;
use protocols::multi_leader::{
    BUG_FLAGS, Bugs, Node, Observation, Settings, Shipping, Timing, Topology, checker,
};
use serde::Deserialize;
use sim_core::rng::SimRng;
use sim_core::{Checker, ClientId, NodeId, RunOutput};
use storage::kv::EngineSyncPolicy;
use toml::Spanned;

use crate::duration::Duration;
use crate::engines;
use crate::error::ScenarioError;
use crate::registry::{CheckerInfo, ProtocolEntry, WorkloadKind};
use crate::runner::{Metric, RunOptions, RunReport, run_protocol_measured};
use crate::scenario::Scenario;

pub static ENTRY: ProtocolEntry = ProtocolEntry {
    name: "multi_leader",
    description: "multi-leader asynchronous replication of CRDT-typed keys (counters, LWW and multi-value registers, OR-sets) over all-to-all, ring, star or custom topologies",
    checkers: &[
        CheckerInfo {
            name: checker::CONVERGENCE,
            properties: "strong eventual consistency (all replicas equal after the quiet phase), each change applied at most once per replica",
        },
        CheckerInfo {
            name: checker::SPECIFICATION,
            properties: "counters within acknowledged and unknown updates, LWW holds the maximal (clock, node), MV the maximal antichain, OR-set add-wins, custom merge reads as its function over the maximal antichain, unique dots",
        },
        CheckerInfo {
            name: checker::CONFLICTS,
            properties: "conflict records resolve by their strategy; a converged custom-merge value holding concurrent writes was recorded as a conflict at that replica",
        },
    ],
    bug_flags: BUG_FLAGS,
    workload: WorkloadKind::Crdt,
    uses_engines: true,
    check_node_count: |n| {
        if n >= 1 {
            Ok(())
        } else {
            Err("multi_leader needs at least 1 node".into())
        }
    },
    check_settings: |file, text| settings(file, text).map(|_| ()),
    run,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TopologyName {
    AllToAll,
    Ring,
    Star,
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ShippingName {
    Delta,
    Full,
}

/// `[settings]` for `protocol = "multi_leader"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    topology: Option<TopologyName>,
    edges: Option<Spanned<Vec<(u32, u32)>>>,
    shipping: Option<ShippingName>,
    replicate_interval: Option<Duration>,
    retransmit_after: Option<Duration>,
    settle: Option<Duration>,
    batch_max: Option<Spanned<u32>>,
    types: Option<Spanned<Vec<String>>>,
    keys: Option<Spanned<u32>>,
    elements: Option<Spanned<u32>>,
    conflict_retention: Option<Duration>,
    custom: Option<BTreeMap<String, Spanned<CustomFile>>>,
}

/// A custom-merge key space: `name = { type = "int", merge = "max" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomFile {
    #[serde(rename = "type")]
    ty: String,
    merge: String,
}

#[derive(Deserialize)]
struct WithNodes {
    nodes: u32,
    #[serde(default)]
    settings: Option<Spanned<SettingsFile>>,
}

#[derive(Debug, Clone)]
struct MlSettings {
    topology: Topology,
    shipping: Shipping,
    timing: Timing,
    kinds: Vec<Kind>,
    spaces: KeySpaces,
    keys: u32,
    elements: u32,
}

fn settings(file: &str, text: &str) -> Result<MlSettings, ScenarioError> {
    let parsed: WithNodes =
        toml::from_str(text).map_err(|e| ScenarioError::from_toml(file, text, &e))?;
    let (span, raw) = match parsed.settings {
        Some(s) => (Some(s.span()), s.into_inner()),
        None => (None, SettingsFile::default()),
    };
    let error = |span, message: String| ScenarioError::at(file, text, span, message);
    let topology = match (raw.topology, raw.edges) {
        (Some(TopologyName::Custom), Some(edges)) => {
            let t = Topology::Custom(edges.get_ref().clone());
            t.validate(parsed.nodes)
                .map_err(|m| error(Some(edges.span()), m))?;
            t
        }
        (Some(TopologyName::Custom), None) => {
            return Err(error(
                span,
                "topology = \"custom\" needs `edges = [[a, b], ...]`".into(),
            ));
        }
        (_, Some(edges)) => {
            return Err(error(
                Some(edges.span()),
                "`edges` applies only to topology = \"custom\"".into(),
            ));
        }
        (None | Some(TopologyName::AllToAll), None) => Topology::AllToAll,
        (Some(TopologyName::Ring), None) => Topology::Ring,
        (Some(TopologyName::Star), None) => Topology::Star,
    };
    let shipping = match raw.shipping {
        None | Some(ShippingName::Delta) => Shipping::Delta,
        Some(ShippingName::Full) => Shipping::Full,
    };
    let mut timing = Timing::default();
    for (field, value) in [
        (&mut timing.replicate_interval, raw.replicate_interval),
        (&mut timing.retransmit_after, raw.retransmit_after),
        (&mut timing.settle, raw.settle),
        (&mut timing.conflict_retention, raw.conflict_retention),
    ] {
        if let Some(d) = value {
            *field = d.0;
        }
    }
    if let Some(b) = raw.batch_max {
        if !(1..=10_000).contains(b.get_ref()) {
            return Err(error(
                Some(b.span()),
                format!(
                    "batch_max {} is out of range; expected 1 to 10000",
                    b.get_ref()
                ),
            ));
        }
        timing.batch_max = *b.get_ref() as usize;
    }
    timing
        .validate()
        .map_err(|message| error(span.clone(), format!("[settings]: {message}")))?;
    let kinds = match raw.types {
        None => Kind::ALL.to_vec(),
        Some(types) => {
            let mut kinds = Vec::new();
            for name in types.get_ref() {
                let kind = Kind::from_name(name).ok_or_else(|| {
                    let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                    error(
                        Some(types.span()),
                        format!(
                            "unknown type {name}; expected some of: {}",
                            known.join(", ")
                        ),
                    )
                })?;
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            if kinds.is_empty() {
                return Err(error(Some(types.span()), "`types` names no type".into()));
            }
            kinds
        }
    };
    let mut spaces = KeySpaces::builtin();
    for (name, space) in raw.custom.into_iter().flatten() {
        let at = Some(space.span());
        let space = space.into_inner();
        let ty = ValueType::from_name(&space.ty).ok_or_else(|| {
            let known: Vec<&str> = ValueType::ALL.iter().map(|t| t.name()).collect();
            error(
                at.clone(),
                format!(
                    "custom key space {name}: unknown value type {}; expected one of: {}",
                    space.ty,
                    known.join(", ")
                ),
            )
        })?;
        let function = MergeFn::from_name(&space.merge).ok_or_else(|| {
            let known: Vec<&str> = MergeFn::for_type(ty).iter().map(|f| f.name()).collect();
            error(
                at.clone(),
                format!(
                    "custom key space {name}: unknown merge function {}; expected one of: {}",
                    space.merge,
                    known.join(", ")
                ),
            )
        })?;
        let merge = CustomMerge::new(ty, function)
            .map_err(|e| error(at.clone(), format!("custom key space {name}: {e}")))?;
        spaces = spaces
            .with_custom(&name, merge)
            .map_err(|m| error(at.clone(), m))?;
    }
    let count = |v: Option<Spanned<u32>>, name: &str, default: u32| match v {
        Some(k) if !(1..=1000).contains(k.get_ref()) => Err(error(
            Some(k.span()),
            format!("{name} {} is out of range; expected 1 to 1000", k.get_ref()),
        )),
        Some(k) => Ok(*k.get_ref()),
        None => Ok(default),
    };
    Ok(MlSettings {
        topology,
        shipping,
        timing,
        kinds,
        spaces,
        keys: count(raw.keys, "keys", 2)?,
        elements: count(raw.elements, "elements", 3)?,
    })
}

/// The run's measurements: replication cost per update (delta against full state) and
/// the time to converge after the faults heal.
fn measure(run: &RunOutput<Node>) -> Vec<Metric> {
    let (mut writes, mut delta, mut state) = (0u64, 0u64, 0u64);
    let mut applied = 0u64;
    let (mut conflicts, mut collected) = (0u64, 0u64);
    // Each node's last reported metadata; the run's peak over all reports.
    let mut last: BTreeMap<NodeId, (u64, u64, u64)> = BTreeMap::new();
    let mut peak = (0u64, 0u64, 0u64);
    for o in &run.observations {
        match &o.obs {
            Observation::LocalWrite {
                delta_bytes,
                state_bytes,
                ..
            } => {
                writes += 1;
                delta += delta_bytes;
                state += state_bytes;
            }
            Observation::Applied { .. } => applied += 1,
            Observation::Conflict(_) => conflicts += 1,
            Observation::Collected { records, .. } => collected += records.len() as u64,
            Observation::Metadata {
                records,
                log_entries,
                context_entries,
            } => {
                last.insert(o.node, (*records, *log_entries, *context_entries));
                peak = (
                    peak.0.max(*records),
                    peak.1.max(*log_entries),
                    peak.2.max(*context_entries),
                );
            }
            _ => {}
        }
    }
    let converged =
        checker::last_change(run).map_or(0, |t| t.saturating_since(run.quiet_from).as_micros());
    vec![
        Metric {
            name: "local_writes",
            value: writes,
        },
        Metric {
            name: "remote_applies",
            value: applied,
        },
        Metric {
            name: "delta_bytes_per_update",
            value: delta.checked_div(writes).unwrap_or(0),
        },
        Metric {
            name: "state_bytes_per_update",
            value: state.checked_div(writes).unwrap_or(0),
        },
        Metric {
            name: "messages_per_update",
            value: run.stats.messages_sent.checked_div(writes).unwrap_or(0),
        },
        Metric {
            name: "convergence_after_heal_us",
            value: converged,
        },
        Metric {
            name: "conflict_records",
            value: conflicts,
        },
        Metric {
            name: "conflict_records_collected",
            value: collected,
        },
        Metric {
            name: "final_records_max",
            value: last.values().map(|m| m.0).max().unwrap_or(0),
        },
        Metric {
            name: "final_log_entries_max",
            value: last.values().map(|m| m.1).max().unwrap_or(0),
        },
        Metric {
            name: "final_context_entries_max",
            value: last.values().map(|m| m.2).max().unwrap_or(0),
        },
        Metric {
            name: "peak_records",
            value: peak.0,
        },
        Metric {
            name: "peak_context_entries",
            value: peak.2,
        },
    ]
}

fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    let s = settings(&scenario.file, &scenario.text)?;
    let bugs = Bugs::from_names(options.bug_names(scenario))
        .map_err(|e| ScenarioError::Options(e.to_string()))?;
    let mut per_node = Vec::new();
    for name in &scenario.engines {
        // The protocol syncs each change before revealing it, so its engines need not
        // sync every write: an unsynced write can be lost in a crash.
        let engine = engines::opener_tuned(
            name,
            EngineSyncPolicy::Explicit,
            options.engine_bugs(scenario),
            &scenario.engine_tuning,
        )
        .ok_or_else(|| ScenarioError::Options(format!("unknown storage engine {name}")))?;
        per_node.push(Settings {
            topology: s.topology.clone(),
            shipping: s.shipping,
            timing: s.timing.clone(),
            spaces: s.spaces.clone(),
            engine,
        });
    }
    let factory = move |node: NodeId| Node::new(node, per_node[node.index()].clone(), bugs);
    let mut generator = CrdtWorkload::new(s.kinds.clone(), s.keys, s.elements);
    for (name, &merge) in s.spaces.custom() {
        generator = generator.with_space(name, Kind::Custom(merge));
    }
    let workload = move |client: ClientId, rng: &mut SimRng| generator.next(client, rng);
    let checkers: Vec<Box<dyn Checker<Node>>> = vec![
        Box::new(checker::ConvergenceChecker {
            spaces: s.spaces.clone(),
        }),
        Box::new(checker::SpecificationChecker {
            spaces: s.spaces.clone(),
        }),
        Box::new(checker::ConflictChecker {
            spaces: s.spaces.clone(),
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
            "protocol = \"multi_leader\"\nnodes = 4\nduration = \"2s\"\n\n[settings]\n{settings}\n"
        );
        Scenario::parse("m.toml", &text, "m").map_err(|e| e.to_string())
    }

    #[test]
    fn good_settings_load() {
        parse("topology = \"ring\"\nshipping = \"full\"\ntypes = [\"orset\", \"lww\"]").unwrap();
        parse("topology = \"custom\"\nedges = [[0, 1], [1, 2], [2, 3]]").unwrap();
        parse("").unwrap();
        parse("[settings.custom]\nhi = { type = \"int\", merge = \"max\" }\ntags = { type = \"set\", merge = \"union\" }\nname = { type = \"text\", merge = \"longest\" }").unwrap();
    }

    #[test]
    fn bad_settings_are_errors_with_a_location() {
        let e = parse("topology = \"custom\"\nedges = [[0, 1], [2, 3]]").unwrap_err();
        assert!(
            e.starts_with("m.toml:7:9:") && e.contains("does not connect node 0 to nodes 2, 3"),
            "{e}"
        );
        let e = parse("topology = \"custom\"\nedges = [[0, 4]]").unwrap_err();
        assert!(e.contains("outside 0..4"), "{e}");
        let e = parse("topology = \"ring\"\nedges = [[0, 1]]").unwrap_err();
        assert!(e.contains("only to topology = \"custom\""), "{e}");
        let e = parse("topology = \"custom\"").unwrap_err();
        assert!(e.contains("needs `edges"), "{e}");
        let e = parse("types = [\"gset\"]").unwrap_err();
        assert!(
            e.starts_with("m.toml:6:9:") && e.contains("unknown type gset"),
            "{e}"
        );
        let e = parse("retransmit_after = \"5ms\"").unwrap_err();
        assert!(e.contains("retransmit_after must be at least"), "{e}");
        let e = parse("[settings.custom]\nhi = { type = \"int\", merge = \"union\" }").unwrap_err();
        assert!(
            e.contains(
                "merge function union does not apply to int values; expected one of: max, min"
            ),
            "{e}"
        );
        let e = parse("[settings.custom]\nhi = { type = \"int\", merge = \"sum\" }").unwrap_err();
        assert!(
            e.contains("unknown merge function sum; expected one of: max, min"),
            "{e}"
        );
        let e = parse("[settings.custom]\nhi = { type = \"float\", merge = \"max\" }").unwrap_err();
        assert!(
            e.contains("unknown value type float; expected one of: int, text, set"),
            "{e}"
        );
        let e = parse("[settings.custom]\nlww = { type = \"text\", merge = \"max\" }").unwrap_err();
        assert!(e.contains("already a key space"), "{e}");
        let e = parse("[settings.custom]\nhi = { type = \"int\" }").unwrap_err();
        assert!(e.contains("missing field `merge`"), "{e}");
        let e = parse("leader = 1").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn key_value_workload_fields_are_errors() {
        let text =
            "protocol = \"multi_leader\"\nnodes = 3\nduration = \"1s\"\n[workload]\nkeys = 4\n";
        let e = Scenario::parse("w.toml", text, "w")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("w.toml:5:"), "{e}");
    }
}
