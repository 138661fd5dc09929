//! The network model: per-link latency, loss and duplication, partitions and clogs.
//!
//! A message is judged twice: when it is sent (is the link cut? is it dropped? how long
//! does it take? is it duplicated?) and when it arrives (is the link cut *now*? is the
//! receiver up?). Reordering is not a separate fault: it follows from independent
//! latencies. All draws come from the network's own RNG stream, in a fixed order.

use std::collections::BTreeMap;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::rng::SimRng;
use crate::time::{SimDuration, SimTime};

/// How long a message takes on a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Latency {
    /// Always exactly this long.
    Constant { delay: SimDuration },
    /// Uniform in `[min, max]`.
    Uniform { min: SimDuration, max: SimDuration },
    /// Uniform in `[min, max]`, except that with `tail_probability` the delay is
    /// `max + (tail_max - max)·u⁴` for `u` uniform in `[0, 1)` (a heavy tail: most slow
    /// messages are a little slow, a few very slow).
    LongTail {
        min: SimDuration,
        max: SimDuration,
        tail_probability: f64,
        tail_max: SimDuration,
    },
}

impl Latency {
    /// The smallest and largest delay this distribution can produce.
    pub fn bounds(&self) -> (SimDuration, SimDuration) {
        match *self {
            Latency::Constant { delay } => (delay, delay),
            Latency::Uniform { min, max } => (min, max),
            Latency::LongTail {
                min, max, tail_max, ..
            } => (min, max.max(tail_max)),
        }
    }

    fn sample(&self, rng: &mut SimRng) -> SimDuration {
        match *self {
            Latency::Constant { delay } => delay,
            Latency::Uniform { min, max } => SimDuration(rng.random_range(min.0..=max.0)),
            Latency::LongTail {
                min,
                max,
                tail_probability,
                tail_max,
            } => {
                if tail_probability > 0.0 && rng.random_bool(tail_probability) {
                    // max + (tail_max - max)·u⁴: most slow messages are a little slow,
                    // a few very slow. Only IEEE basic operations (exactly rounded on
                    // every platform), never libm's `ln`/`exp`, so the same seed gives
                    // the same delay on every machine.
                    let span = tail_max.0.saturating_sub(max.0) as f64;
                    let u: f64 = rng.random_range(0.0..1.0);
                    let extra = (span * (u * u) * (u * u)) as u64;
                    SimDuration(max.0 + extra.min(tail_max.0.saturating_sub(max.0)))
                } else {
                    SimDuration(rng.random_range(min.0..=max.0))
                }
            }
        }
    }

    /// Checks the parameters; returns a description of the first problem.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Latency::Constant { .. } => Ok(()),
            Latency::Uniform { min, max } => {
                if min > max {
                    Err(format!("latency min {min} is greater than max {max}"))
                } else {
                    Ok(())
                }
            }
            Latency::LongTail {
                min,
                max,
                tail_probability,
                tail_max,
            } => {
                if min > max {
                    Err(format!("latency min {min} is greater than max {max}"))
                } else if !(0.0..=1.0).contains(&tail_probability) {
                    Err(format!(
                        "tail_probability {tail_probability} is not in [0, 1]"
                    ))
                } else if tail_max < max {
                    Err(format!("tail_max {tail_max} is less than max {max}"))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The behaviour of one directed link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkConfig {
    pub latency: Latency,
    /// Probability that a message is lost.
    pub drop_probability: f64,
    /// Probability that a (not dropped) message is delivered twice, with independent delays.
    pub duplicate_probability: f64,
}

impl LinkConfig {
    /// Zero latency, no loss, no duplication: the reference implementation's delivery.
    pub fn instant() -> Self {
        LinkConfig {
            latency: Latency::Constant {
                delay: SimDuration::ZERO,
            },
            drop_probability: 0.0,
            duplicate_probability: 0.0,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.latency.validate()?;
        for (name, p) in [
            ("drop_probability", self.drop_probability),
            ("duplicate_probability", self.duplicate_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} {p} is not in [0, 1]"));
            }
        }
        Ok(())
    }
}

impl Default for LinkConfig {
    /// A LAN-like link: 1–5 ms, reliable.
    fn default() -> Self {
        LinkConfig {
            latency: Latency::Uniform {
                min: SimDuration::from_millis(1),
                max: SimDuration::from_millis(5),
            },
            drop_probability: 0.0,
            duplicate_probability: 0.0,
        }
    }
}

/// The static configuration of the whole network.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Applies to every directed link without an override.
    pub default_link: LinkConfig,
    /// Per directed link `(from, to)` overrides.
    pub links: BTreeMap<(NodeId, NodeId), LinkConfig>,
}

impl NetworkConfig {
    pub fn instant() -> Self {
        NetworkConfig {
            default_link: LinkConfig::instant(),
            links: BTreeMap::new(),
        }
    }

    pub fn validate(&self, node_count: usize) -> Result<(), String> {
        self.default_link.validate()?;
        for ((from, to), link) in &self.links {
            if from.index() >= node_count || to.index() >= node_count {
                return Err(format!(
                    "link {from}->{to} names a node outside 0..{node_count}"
                ));
            }
            link.validate()
                .map_err(|e| format!("link {from}->{to}: {e}"))?;
        }
        Ok(())
    }
}

/// Why a message did not arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Lost by the link's drop probability.
    Loss,
    /// The directed link was cut by a partition when sent or when it would have arrived.
    Partitioned,
    /// The receiver was crashed when the message arrived.
    ReceiverCrashed,
    /// The receiver was paused when the message arrived.
    ReceiverPaused,
    /// The sender addressed a node that does not exist.
    NoSuchNode,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Loss => "loss",
            DropReason::Partitioned => "partitioned",
            DropReason::ReceiverCrashed => "receiver-crashed",
            DropReason::ReceiverPaused => "receiver-paused",
            DropReason::NoSuchNode => "no-such-node",
        }
    }
}

/// What the network decided for one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    Dropped(DropReason),
    /// Delivered after `delay`, and a second time after `duplicate_delay` if duplicated.
    Deliver {
        delay: SimDuration,
        duplicate_delay: Option<SimDuration>,
    },
}

/// The network's state during a run: which links are cut or clogged.
#[derive(Debug, Clone)]
pub struct Network {
    node_count: usize,
    config: NetworkConfig,
    /// Resolved per-link configuration, indexed `from * node_count + to`.
    link_table: Vec<LinkConfig>,
    /// Cut directed links, indexed `from * node_count + to`.
    blocked: Vec<bool>,
    blocked_count: usize,
    /// Extra delay on a clogged link, and until when.
    clogs: Vec<Option<(SimDuration, SimTime)>>,
}

impl Network {
    pub fn new(node_count: usize, config: NetworkConfig) -> Self {
        let mut link_table = vec![config.default_link.clone(); node_count * node_count];
        for ((from, to), link) in &config.links {
            if from.index() < node_count && to.index() < node_count {
                link_table[from.index() * node_count + to.index()] = link.clone();
            }
        }
        Network {
            node_count,
            config,
            link_table,
            blocked: vec![false; node_count * node_count],
            blocked_count: 0,
            clogs: vec![None; node_count * node_count],
        }
    }

    pub fn node_count(&self) -> usize {
        self.node_count
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    fn slot(&self, from: NodeId, to: NodeId) -> usize {
        from.index() * self.node_count + to.index()
    }

    pub fn link(&self, from: NodeId, to: NodeId) -> &LinkConfig {
        &self.link_table[self.slot(from, to)]
    }

    /// Whether messages from `from` to `to` are currently cut.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked_count > 0 && self.blocked[self.slot(from, to)]
    }

    /// Cuts the given directed links (in addition to any already cut).
    pub fn block(&mut self, links: &[(NodeId, NodeId)]) {
        for &(from, to) in links {
            if from.index() < self.node_count && to.index() < self.node_count && from != to {
                let slot = self.slot(from, to);
                if !self.blocked[slot] {
                    self.blocked[slot] = true;
                    self.blocked_count += 1;
                }
            }
        }
    }

    /// Restores every cut link.
    pub fn heal(&mut self) {
        self.blocked.fill(false);
        self.blocked_count = 0;
    }

    /// The currently cut directed links, in order.
    pub fn blocked_links(&self) -> Vec<(NodeId, NodeId)> {
        let n = self.node_count;
        (0..n * n)
            .filter(|&slot| self.blocked[slot])
            .map(|slot| (NodeId((slot / n) as u32), NodeId((slot % n) as u32)))
            .collect()
    }

    /// Adds `extra` delay to messages sent on `from → to` until `until`.
    pub fn clog(&mut self, from: NodeId, to: NodeId, extra: SimDuration, until: SimTime) {
        if from.index() < self.node_count && to.index() < self.node_count {
            let slot = self.slot(from, to);
            self.clogs[slot] = Some((extra, until));
        }
    }

    /// Removes every clog.
    pub fn unclog_all(&mut self) {
        self.clogs.fill(None);
    }

    /// Decides the fate of a message sent now from `from` to `to`.
    ///
    /// Draw order (fixed, for determinism): loss, then latency, then duplication, then
    /// the duplicate's latency. A cut link consumes no draws.
    pub fn route(&mut self, from: NodeId, to: NodeId, now: SimTime, rng: &mut SimRng) -> Routing {
        if from.index() >= self.node_count || to.index() >= self.node_count {
            return Routing::Dropped(DropReason::NoSuchNode);
        }
        if self.is_blocked(from, to) {
            return Routing::Dropped(DropReason::Partitioned);
        }
        let slot = self.slot(from, to);
        let link = &self.link_table[slot];
        if link.drop_probability > 0.0 && rng.random_bool(link.drop_probability) {
            return Routing::Dropped(DropReason::Loss);
        }
        let clog_extra = match self.clogs[slot] {
            Some((extra, until)) if now < until => extra,
            Some(_) => {
                self.clogs[slot] = None;
                SimDuration::ZERO
            }
            None => SimDuration::ZERO,
        };
        let delay = link.latency.sample(rng) + clog_extra;
        let duplicate_delay =
            if link.duplicate_probability > 0.0 && rng.random_bool(link.duplicate_probability) {
                Some(link.latency.sample(rng) + clog_extra)
            } else {
                None
            };
        Routing::Deliver {
            delay,
            duplicate_delay,
        }
    }
}

/// A named partition shape, resolved to a set of cut directed links when applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case")]
pub enum PartitionShape {
    /// Cut every link to and from one node.
    Isolate { node: NodeId },
    /// Cut every link to and from the node that believes it leads when the fault fires
    /// (the lowest-numbered one if several do; a random node if none does).
    IsolateLeader,
    /// Split the nodes into two random halves (sizes ⌊n/2⌋ and ⌈n/2⌉) that cannot talk.
    RandomHalves,
    /// Each node can reach only the ⌊n/2⌋ nodes on either side of it on a ring, so each
    /// node sees a majority, but no two nodes see the same one (Jepsen's "majorities ring").
    MajoritiesRing,
    /// Two halves connected only through one bridge node that sees both.
    Bridge,
    /// `from` nodes can no longer send to `to` nodes; the reverse direction still works.
    OneWay { from: Vec<NodeId>, to: Vec<NodeId> },
    /// Explicit directed links.
    Links { links: Vec<(NodeId, NodeId)> },
}

impl PartitionShape {
    /// The directed links this shape cuts in a cluster of `n` nodes; random shapes draw
    /// from `rng` (a shuffled node order).
    pub fn resolve(&self, n: usize, rng: &mut SimRng) -> Vec<(NodeId, NodeId)> {
        let all: Vec<NodeId> = (0..n as u32).map(NodeId).collect();
        let mut cut = Vec::new();
        let cut_between = |cut: &mut Vec<(NodeId, NodeId)>, a: &[NodeId], b: &[NodeId]| {
            for &x in a {
                for &y in b {
                    cut.push((x, y));
                    cut.push((y, x));
                }
            }
        };
        match self {
            PartitionShape::Isolate { node } => {
                let others: Vec<NodeId> = all.iter().copied().filter(|m| m != node).collect();
                cut_between(&mut cut, &[*node], &others);
            }
            // The kernel resolves the leader first (see `Simulation`); without one, a
            // random node stands in.
            PartitionShape::IsolateLeader => {
                let node = NodeId(rng.random_range(0..n as u32));
                let others: Vec<NodeId> = all.iter().copied().filter(|m| *m != node).collect();
                cut_between(&mut cut, &[node], &others);
            }
            PartitionShape::RandomHalves => {
                let order = shuffled(&all, rng);
                let (a, b) = order.split_at(n / 2);
                cut_between(&mut cut, a, b);
            }
            PartitionShape::MajoritiesRing => {
                let order = shuffled(&all, rng);
                let reach = n / 2;
                for (i, &x) in order.iter().enumerate() {
                    for (j, &y) in order.iter().enumerate() {
                        let distance = i.abs_diff(j).min(n - i.abs_diff(j));
                        if i != j && distance > reach / 2 + reach % 2 {
                            cut.push((x, y));
                        }
                    }
                }
            }
            PartitionShape::Bridge => {
                let order = shuffled(&all, rng);
                if n >= 3 {
                    let bridge = n / 2;
                    let (a, rest) = order.split_at(bridge);
                    cut_between(&mut cut, a, &rest[1..]);
                }
            }
            PartitionShape::OneWay { from, to } => {
                for &x in from {
                    for &y in to {
                        cut.push((x, y));
                    }
                }
            }
            PartitionShape::Links { links } => cut.extend(links.iter().copied()),
        }
        cut.retain(|(x, y)| x != y && x.index() < n && y.index() < n);
        cut.sort_unstable();
        cut.dedup();
        cut
    }

    pub fn name(&self) -> &'static str {
        match self {
            PartitionShape::Isolate { .. } => "isolate",
            PartitionShape::IsolateLeader => "isolate_leader",
            PartitionShape::RandomHalves => "random_halves",
            PartitionShape::MajoritiesRing => "majorities_ring",
            PartitionShape::Bridge => "bridge",
            PartitionShape::OneWay { .. } => "one_way",
            PartitionShape::Links { .. } => "links",
        }
    }
}

fn shuffled(nodes: &[NodeId], rng: &mut SimRng) -> Vec<NodeId> {
    let mut order = nodes.to_vec();
    // Fisher–Yates with our own draws, so the result depends only on the stream.
    for i in (1..order.len()).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::fork;

    #[test]
    fn isolate_cuts_both_directions_of_one_node_only() {
        let mut rng = fork(1, "t", 0);
        let cut = PartitionShape::Isolate { node: NodeId(1) }.resolve(3, &mut rng);
        assert_eq!(
            cut,
            vec![
                (NodeId(0), NodeId(1)),
                (NodeId(1), NodeId(0)),
                (NodeId(1), NodeId(2)),
                (NodeId(2), NodeId(1))
            ]
        );
    }

    #[test]
    fn majorities_ring_gives_every_node_a_majority_but_no_common_one() {
        for n in [5usize, 7] {
            let mut rng = fork(3, "t", n as u64);
            let cut = PartitionShape::MajoritiesRing.resolve(n, &mut rng);
            let mut views = Vec::new();
            for x in 0..n as u32 {
                let view: Vec<u32> = (0..n as u32)
                    .filter(|&y| y == x || !cut.contains(&(NodeId(x), NodeId(y))))
                    .collect();
                assert!(view.len() > n / 2, "node {x} sees {view:?} of {n}");
                views.push(view);
            }
            views.sort();
            views.dedup();
            assert_eq!(views.len(), n, "every node has its own majority");
        }
    }

    #[test]
    fn bridge_node_reaches_everyone_and_halves_do_not() {
        let mut rng = fork(4, "t", 0);
        let n = 5;
        let cut = PartitionShape::Bridge.resolve(n, &mut rng);
        let sees_all: Vec<u32> = (0..n as u32)
            .filter(|&x| (0..n as u32).all(|y| !cut.contains(&(NodeId(x), NodeId(y)))))
            .collect();
        assert_eq!(sees_all.len(), 1, "exactly one bridge: {cut:?}");
        assert!(!cut.is_empty());
    }

    #[test]
    fn one_way_cuts_only_one_direction() {
        let mut rng = fork(1, "t", 0);
        let shape = PartitionShape::OneWay {
            from: vec![NodeId(0)],
            to: vec![NodeId(1)],
        };
        assert_eq!(shape.resolve(2, &mut rng), vec![(NodeId(0), NodeId(1))]);
    }

    #[test]
    fn long_tail_stays_in_bounds_and_has_a_tail() {
        let latency = Latency::LongTail {
            min: SimDuration::from_millis(1),
            max: SimDuration::from_millis(10),
            tail_probability: 0.1,
            tail_max: SimDuration::from_secs(1),
        };
        let mut rng = fork(9, "t", 0);
        let samples: Vec<u64> = (0..20_000).map(|_| latency.sample(&mut rng).0).collect();
        assert!(samples.iter().all(|&d| (1_000..=1_000_000).contains(&d)));
        let slow = samples.iter().filter(|&&d| d > 10_000).count();
        let very_slow = samples.iter().filter(|&&d| d > 500_000).count();
        assert!(
            (1_600..2_400).contains(&slow),
            "about 10% in the tail: {slow}"
        );
        assert!(
            very_slow > 0 && very_slow < slow / 4,
            "a few very slow: {very_slow}"
        );
    }

    #[test]
    fn validation_rejects_bad_parameters() {
        let mut link = LinkConfig::default();
        assert!(link.validate().is_ok());
        link.drop_probability = 1.5;
        assert!(link.validate().is_err());
        let bad = Latency::Uniform {
            min: SimDuration(10),
            max: SimDuration(5),
        };
        assert!(bad.validate().is_err());
    }
}
