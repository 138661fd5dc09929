//! Dynamo's pieces on their own: the consistent-hash ring keeps the reference's hashing
//! and balance (property tests), and versions follow the dotted-version-vector rules.

use std::collections::BTreeSet;

use proptest::prelude::*;
use protocols::dynamo::Quorum;
use protocols::dynamo::ring::{DEFAULT_VNODES, Ring, position};
use protocols::dynamo::version::{Dot, MergeFlaws, Object, Sibling, Vv};

#[test]
fn three_nodes_with_150_vnodes_are_balanced_within_1_5() {
    let ring = Ring::uniform(3, DEFAULT_VNODES).unwrap();
    let imbalance = ring.load_imbalance();
    assert!(imbalance < 1.5, "load imbalance {imbalance}");
    let total: f64 = ring.loads().iter().sum();
    assert!((total - 1.0).abs() < 1e-9, "loads cover the ring: {total}");
}

#[test]
fn a_heavier_node_owns_more_of_the_ring() {
    let ring = Ring::new(DEFAULT_VNODES, &[1.0, 1.0, 3.0]).unwrap();
    let loads = ring.loads();
    assert!(
        loads[2] > 2.0 * loads[0] && loads[2] > 2.0 * loads[1],
        "{loads:?}"
    );
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key-{i}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn balance_holds_for_small_clusters(nodes in 2usize..8) {
        let ring = Ring::uniform(nodes, DEFAULT_VNODES).unwrap();
        prop_assert!(ring.load_imbalance() < 1.5, "{} nodes: {}", nodes, ring.load_imbalance());
    }

    #[test]
    fn preference_lists_are_distinct_and_start_at_the_owner(
        nodes in 1usize..9,
        vnodes in 1u32..200,
        key in "[a-z0-9]{0,12}",
        count in 0usize..9,
    ) {
        let ring = Ring::uniform(nodes, vnodes).unwrap();
        match ring.walk(key.as_bytes(), count) {
            Ok(list) => {
                prop_assert!(count <= nodes);
                prop_assert_eq!(list.len(), count);
                let distinct: BTreeSet<u32> = list.iter().copied().collect();
                prop_assert_eq!(distinct.len(), count);
                prop_assert!(list.iter().all(|&n| (n as usize) < nodes));
                if count > 0 {
                    prop_assert_eq!(Some(list[0]), ring.owner(key.as_bytes()));
                }
            }
            Err(_) => prop_assert!(count > nodes),
        }
    }

    #[test]
    fn adding_a_node_moves_about_one_nth_of_the_keys(nodes in 2usize..7) {
        let before = Ring::uniform(nodes, DEFAULT_VNODES).unwrap();
        let after = Ring::uniform(nodes + 1, DEFAULT_VNODES).unwrap();
        let keys = keys(4000);
        let moved = keys
            .iter()
            .filter(|k| before.owner(k.as_bytes()) != after.owner(k.as_bytes()))
            .count();
        // Every moved key moves to the new node, and about 1/(n+1) of them move.
        for k in &keys {
            let (b, a) = (before.owner(k.as_bytes()), after.owner(k.as_bytes()));
            prop_assert!(b == a || a == Some(nodes as u32));
        }
        let share = moved as f64 / keys.len() as f64;
        let expected = 1.0 / (nodes + 1) as f64;
        prop_assert!((share - expected).abs() < expected * 0.5, "moved {} expected {}", share, expected);
    }

    #[test]
    fn merge_is_a_join(
        pool in proptest::collection::vec((0u32..3, 1u64..6, proptest::collection::vec((0u32..3, 0u64..6), 0..3)), 0..8),
        pick_a in proptest::collection::vec(any::<bool>(), 8),
        pick_b in proptest::collection::vec(any::<bool>(), 8),
    ) {
        // A dot names one write, with one context: the first spec of a dot wins.
        let mut writes: Vec<Sibling> = Vec::new();
        for (node, counter, ctx) in &pool {
            let dot = Dot { node: *node, counter: *counter };
            if writes.iter().any(|w| w.dot == dot) {
                continue;
            }
            let context = Vv(ctx.iter().copied().filter(|(n, c)| Dot { node: *n, counter: *c } != dot).collect());
            writes.push(Sibling { dot, context, id: format!("{dot}"), value: Some(vec![]), stamp_us: 0 });
        }
        let object = |pick: &[bool]| {
            let mut o = Object::default();
            for (w, _) in writes.iter().zip(pick).filter(|(_, p)| **p) {
                o.merge(&Object { siblings: vec![w.clone()] }, MergeFlaws::default());
            }
            o
        };
        let (x, y) = (object(&pick_a), object(&pick_b));
        let (mut xy, mut yx) = (x.clone(), y.clone());
        xy.merge(&y, MergeFlaws::default());
        yx.merge(&x, MergeFlaws::default());
        prop_assert_eq!(xy.dots(), yx.dots(), "commutative");
        let again = xy.clone();
        prop_assert!(!xy.merge(&again, MergeFlaws::default()), "idempotent");
        // No survivor is dominated by another.
        for s in &xy.siblings {
            prop_assert!(!xy.siblings.iter().any(|t| t.dot != s.dot && t.context.covers(s.dot)));
        }
    }
}

#[test]
fn positions_are_the_reference_md5_positions() {
    // Python: int(hashlib.md5(b"").hexdigest(), 16) & 0xFFFFFFFF == 0xecf8427e
    // (md5("") = d41d8cd98f00b204e9800998ecf8427e).
    assert_eq!(position(b""), 0xecf8_427e);
}

#[test]
fn quorum_settings_are_validated() {
    let q = |n, r, w| Quorum {
        n,
        r,
        w,
        sloppy: true,
    };
    assert!(q(3, 2, 2).validate(5, false).is_ok());
    assert!(
        q(3, 1, 1)
            .validate(5, false)
            .unwrap_err()
            .contains("allow_weak_quorum")
    );
    assert!(q(3, 1, 1).validate(5, true).is_ok());
    assert!(q(6, 3, 4).validate(5, false).unwrap_err().contains("n = 6"));
    assert!(q(3, 0, 3).validate(5, false).unwrap_err().contains("r = 0"));
    assert!(q(3, 2, 4).validate(5, false).unwrap_err().contains("w = 4"));
    assert!(
        !Quorum {
            n: 3,
            r: 2,
            w: 2,
            sloppy: true
        }
        .strict_overlap()
    );
    assert!(
        Quorum {
            n: 3,
            r: 2,
            w: 2,
            sloppy: false
        }
        .strict_overlap()
    );
}
