//! Seeded random streams, forked by label from the run's seed.
//!
//! Every consumer of randomness (the network, each node's disk, the nemesis, the
//! workload, each node's own `ctx.rng()`) gets its own ChaCha8 stream derived from
//! `(seed, label, index)`. Adding a draw to one stream never shifts another, so a change
//! to, say, the workload does not change which messages the network drops.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use xxhash_rust::xxh3::xxh3_128_with_seed;

/// The random generator used everywhere in a run.
pub type SimRng = ChaCha8Rng;

/// Derives the stream named `label` (with a sub-index, e.g. a node number) from `seed`.
///
/// The derivation is a pure function of its arguments: XXH3-128 of the label and index,
/// keyed by the seed, stretched to the 32-byte ChaCha key.
pub fn fork(seed: u64, label: &str, index: u64) -> SimRng {
    let mut input = Vec::with_capacity(label.len() + 9);
    input.extend_from_slice(label.as_bytes());
    input.push(0);
    input.extend_from_slice(&index.to_le_bytes());
    let low = xxh3_128_with_seed(&input, seed);
    let high = xxh3_128_with_seed(&input, seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(&low.to_le_bytes());
    key[16..].copy_from_slice(&high.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a1 = fork(7, "network", 0).next_u64();
        let a2 = fork(7, "network", 0).next_u64();
        assert_eq!(a1, a2);
        assert_ne!(a1, fork(8, "network", 0).next_u64());
        assert_ne!(a1, fork(7, "nemesis", 0).next_u64());
        assert_ne!(a1, fork(7, "network", 1).next_u64());
    }

    #[test]
    fn derivation_is_stable_across_builds() {
        // Pinned: if this changes, every recorded trace hash changes with it.
        assert_eq!(fork(1, "network", 0).next_u64(), PINNED_FIRST_DRAW);
    }

    const PINNED_FIRST_DRAW: u64 = 14_213_457_342_069_213_743;
}
