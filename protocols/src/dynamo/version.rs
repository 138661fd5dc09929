//! Versions as dotted version vectors (Preguiça et al.), one per sibling.
//!
//! A write is named by a *dot* `(coordinator, counter)`, fresh from the coordinator's
//! durable counter, and carries the *context* the client read: a version vector over the
//! key's dots. A sibling is dominated — superseded — exactly when another sibling's
//! context covers its dot, so a write supersedes exactly what its context covers and
//! everything else it meets stays as a concurrent sibling. Merging two replicas' objects
//! (replication, read repair, hinted handoff, anti-entropy) is the union of siblings by
//! dot minus the dominated ones: commutative, associative, idempotent.
//!
//! Vector-clock ranges are sound because a coordinator is always a replica of the key
//! and stores each write it coordinates (synced) before it ships the *whole* resulting
//! object: any object holding a dot `(n, c)` also holds every earlier dot of `n` for
//! that key, or a sibling that dominates it. No pruning: a context has at most one entry
//! per node that coordinated a write of the key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A write's name: the coordinating node and its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub node: u32,
    pub counter: u64,
}

impl std::fmt::Display for Dot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.node, self.counter)
    }
}

/// A version vector: the highest counter covered per node.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Vv(pub BTreeMap<u32, u64>);

impl Vv {
    pub fn covers(&self, dot: Dot) -> bool {
        self.0.get(&dot.node).is_some_and(|&c| c >= dot.counter)
    }

    pub fn add(&mut self, dot: Dot) {
        let e = self.0.entry(dot.node).or_insert(0);
        *e = (*e).max(dot.counter);
    }

    pub fn join(&mut self, other: &Vv) {
        for (&n, &c) in &other.0 {
            let e = self.0.entry(n).or_insert(0);
            *e = (*e).max(c);
        }
    }
}

/// One version of a key: a value (or a tombstone) with its dot and context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    pub dot: Dot,
    /// What the writer had read: every dot it covers is superseded by this write.
    pub context: Vv,
    /// The client's name for the write (unique per client request).
    pub id: String,
    /// The value's elements; `None` is a tombstone (a delete carrying its version).
    pub value: Option<Vec<String>>,
    /// The coordinator's own clock at the write, in µs. Only the `lww_wallclock` bug
    /// reads it.
    pub stamp_us: u64,
}

/// A key's versions at one replica: the siblings no other sibling dominates, in dot order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub siblings: Vec<Sibling>,
}

/// How a merge deviates from the dotted-version-vector rules (bug flags).
#[derive(Debug, Clone, Copy, Default)]
pub struct MergeFlaws {
    /// An incoming sibling concurrent with a local one replaces it.
    pub concurrent_as_newer: bool,
    /// Concurrent siblings are resolved to the one with the highest coordinator clock.
    pub lww_wallclock: bool,
}

impl Object {
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// Every sibling is a tombstone (and there is at least one).
    pub fn is_tombstone(&self) -> bool {
        !self.siblings.is_empty() && self.siblings.iter().all(|s| s.value.is_none())
    }

    /// The context a reader gets: every dot and context of every sibling, joined.
    pub fn context(&self) -> Vv {
        let mut vv = Vv::default();
        for s in &self.siblings {
            vv.join(&s.context);
            vv.add(s.dot);
        }
        vv
    }

    pub fn dots(&self) -> Vec<Dot> {
        self.siblings.iter().map(|s| s.dot).collect()
    }

    /// A stable digest of the versions (dots and contexts), for Merkle leaves.
    pub fn digest(&self) -> u64 {
        let bytes = postcard::to_stdvec(&self.siblings).unwrap_or_default();
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// Joins `incoming` into `self`; returns whether `self` changed.
    pub fn merge(&mut self, incoming: &Object, flaws: MergeFlaws) -> bool {
        let before = self.dots();
        let mut all: BTreeMap<Dot, Sibling> = BTreeMap::new();
        let local_dots: Vec<Dot> = self.dots();
        for s in self
            .siblings
            .drain(..)
            .chain(incoming.siblings.iter().cloned())
        {
            all.entry(s.dot).or_insert(s);
        }
        let candidates: Vec<Sibling> = all.into_values().collect();
        let mut kept: Vec<Sibling> = candidates
            .iter()
            .filter(|s| {
                !candidates
                    .iter()
                    .any(|t| t.dot != s.dot && t.context.covers(s.dot))
            })
            .cloned()
            .collect();
        if flaws.concurrent_as_newer {
            // Any incoming sibling the local one does not dominate "wins" over it.
            let incoming_dots: Vec<Dot> = incoming.dots();
            let fresh: Vec<Dot> = kept
                .iter()
                .filter(|s| incoming_dots.contains(&s.dot) && !local_dots.contains(&s.dot))
                .map(|s| s.dot)
                .collect();
            if !fresh.is_empty() {
                kept.retain(|s| !local_dots.contains(&s.dot) || incoming_dots.contains(&s.dot));
            }
        }
        if flaws.lww_wallclock && kept.len() > 1 {
            let winner = kept
                .iter()
                .max_by_key(|s| (s.stamp_us, s.dot))
                .cloned()
                .into_iter()
                .collect();
            kept = winner;
        }
        self.siblings = kept;
        self.dots() != before
    }

    /// Applies a new write (its dot fresh): supersedes what its context covers.
    pub fn write(&mut self, sibling: Sibling, flaws: MergeFlaws) {
        let incoming = Object {
            siblings: vec![sibling],
        };
        self.merge(&incoming, flaws);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sib(node: u32, counter: u64, ctx: &[(u32, u64)], id: &str) -> Sibling {
        Sibling {
            dot: Dot { node, counter },
            context: Vv(ctx.iter().copied().collect()),
            id: id.into(),
            value: Some(vec![id.into()]),
            stamp_us: counter,
        }
    }

    #[test]
    fn concurrent_writes_become_siblings_and_a_context_supersedes_what_it_covers() {
        let mut o = Object::default();
        o.write(sib(0, 1, &[], "a"), MergeFlaws::default());
        o.write(sib(1, 1, &[], "b"), MergeFlaws::default());
        assert_eq!(o.siblings.len(), 2, "blind writes are concurrent");
        // A write that read only `a` supersedes `a`, not `b`.
        o.write(sib(2, 1, &[(0, 1)], "c"), MergeFlaws::default());
        let ids: Vec<&str> = o.siblings.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        // A write with the whole context supersedes both.
        let ctx = o.context();
        let mut s = sib(0, 2, &[], "d");
        s.context = ctx;
        o.write(s, MergeFlaws::default());
        assert_eq!(o.siblings.len(), 1);
        assert_eq!(o.siblings[0].id, "d");
    }

    #[test]
    fn merge_is_commutative_and_idempotent() {
        let mut x = Object::default();
        x.write(sib(0, 1, &[], "a"), MergeFlaws::default());
        x.write(sib(0, 2, &[(0, 1)], "b"), MergeFlaws::default());
        let mut y = Object::default();
        y.write(sib(1, 5, &[], "c"), MergeFlaws::default());
        let (mut xy, mut yx) = (x.clone(), y.clone());
        xy.merge(&y, MergeFlaws::default());
        yx.merge(&x, MergeFlaws::default());
        assert_eq!(xy, yx);
        let again = xy.clone();
        assert!(!xy.merge(&again, MergeFlaws::default()));
        assert_eq!(xy.siblings.len(), 2);
    }

    #[test]
    fn the_concurrency_bugs_lose_a_sibling() {
        let mut x = Object::default();
        x.write(sib(0, 1, &[], "a"), MergeFlaws::default());
        let y = Object {
            siblings: vec![sib(1, 1, &[], "b")],
        };
        let mut z = x.clone();
        z.merge(
            &y,
            MergeFlaws {
                concurrent_as_newer: true,
                ..MergeFlaws::default()
            },
        );
        assert_eq!(z.siblings.len(), 1);
        assert_eq!(z.siblings[0].id, "b");
        x.merge(
            &y,
            MergeFlaws {
                lww_wallclock: true,
                ..MergeFlaws::default()
            },
        );
        assert_eq!(x.siblings.len(), 1);
    }
}
