//! Which coverage points a scenario can reach, and checking `expect_reached`.
//!
//! The points are the kernel's faults ([`sim_core::coverage::KERNEL_POINTS`]), the
//! protocol's own sometimes-marks, and, for protocols that keep their state in the
//! storage engines, the engines' marks ([`storage::coverage::POINTS`]).

use sim_core::coverage::{KERNEL_POINTS, Point};

use crate::registry::ProtocolEntry;

/// A protocol's own coverage points, by protocol name.
pub fn protocol_points(protocol: &str) -> &'static [Point] {
    match protocol {
        "raft" => protocols::raft::COVERAGE,
        "paxos" => protocols::paxos::COVERAGE,
        "two_pc" => protocols::two_pc::COVERAGE,
        "gossip" => protocols::gossip::COVERAGE,
        "bully" => protocols::bully::COVERAGE,
        "pbft" => protocols::pbft::COVERAGE,
        "multi_leader" => protocols::multi_leader::COVERAGE,
        // Dynamo embeds SWIM for its membership.
        "dynamo" => protocols::gossip::COVERAGE,
        _ => &[],
    }
}

/// Every point a run of `protocol` can reach, in a stable order: kernel, protocol,
/// engines.
pub fn points(protocol: &ProtocolEntry) -> Vec<&'static Point> {
    let mut all: Vec<&'static Point> = KERNEL_POINTS.iter().collect();
    all.extend(protocol_points(protocol.name));
    if protocol.uses_engines {
        all.extend(storage::coverage::POINTS);
    }
    all
}

/// Checks that `name` is a point `protocol` can reach (for `expect_reached`).
pub fn check_point(protocol: &ProtocolEntry, name: &str) -> Result<(), String> {
    let all = points(protocol);
    if all.iter().any(|p| p.name == name) {
        return Ok(());
    }
    let names: Vec<&str> = all.iter().map(|p| p.name).collect();
    Err(format!(
        "unknown coverage point `{name}` for protocol {}; expected one of: {}",
        protocol.name,
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `sometimes("...")` mark in the protocols' and engines' source names a
    /// declared point, and every declared point is marked somewhere: a typo would
    /// otherwise be a point that can never be reached (or one never reported).
    #[test]
    fn every_mark_is_declared_and_every_declared_point_is_marked() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut marks = std::collections::BTreeSet::new();
        let mut stack = vec![
            root.join("protocols/src"),
            root.join("storage/src"),
            root.join("sim-core/src"),
        ];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("source dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).expect("source");
                    for pattern in ["sometimes(\"", "sometimes!(\"", "coverage::hit(\""] {
                        for (at, _) in text.match_indices(pattern) {
                            let rest = &text[at + pattern.len()..];
                            let name = &rest[..rest.find('"').expect("closing quote")];
                            marks.insert(name.to_string());
                        }
                    }
                }
            }
        }
        let mut declared: Vec<&Point> = KERNEL_POINTS
            .iter()
            .chain(storage::coverage::POINTS)
            .collect();
        for p in crate::registry::PROTOCOLS {
            declared.extend(protocol_points(p.name));
        }
        for mark in &marks {
            assert!(
                declared.iter().any(|p| p.name == mark),
                "`{mark}` is marked in the source but not declared"
            );
        }
        for p in &declared {
            let counted_from_stats = sim_core::coverage::kernel_counts_names().contains(&p.name);
            assert!(
                marks.contains(p.name) || counted_from_stats,
                "`{}` is declared but never marked",
                p.name
            );
        }
    }
}
