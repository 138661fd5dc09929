//! The consistent-hash ring, kept from the reference: positions are MD5 truncated to 32
//! bits on a ring of 2³², each physical node owns `vnodes · weight` virtual nodes, a
//! lookup is one binary search, and a preference list walks clockwise skipping physical
//! nodes already chosen.

use std::collections::BTreeSet;

/// The reference's default number of virtual nodes per unit of weight.
pub const DEFAULT_VNODES: u32 = 150;

/// Errors building a ring or asking it for a preference list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("vnodes must be positive")]
    NoVnodes,
    #[error("node {node} has weight {weight}; expected a positive weight")]
    BadWeight { node: u32, weight: String },
    #[error("asked for {wanted} distinct nodes from a ring of {have}")]
    TooFewNodes { wanted: usize, have: usize },
}

/// A consistent-hash ring over physical nodes `0..n` with weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// `(position, node)`, sorted by position then node (a collision keeps both).
    points: Vec<(u32, u32)>,
    nodes: usize,
}

/// The ring position of `data`: the reference's `int(md5(data).hexdigest(), 16) &
/// 0xFFFFFFFF`, that is the digest's last four bytes read big-endian.
pub fn position(data: &[u8]) -> u32 {
    let digest = md5(data);
    u32::from_be_bytes([digest[12], digest[13], digest[14], digest[15]])
}

impl Ring {
    /// A ring of `weights.len()` nodes, node `i` with `⌊vnodes · weights[i]⌋` (at least
    /// one) virtual nodes named `"<i>#<v>"`.
    pub fn new(vnodes: u32, weights: &[f64]) -> Result<Ring, RingError> {
        if vnodes == 0 {
            return Err(RingError::NoVnodes);
        }
        let mut points = Vec::new();
        for (node, &weight) in weights.iter().enumerate() {
            if !(weight.is_finite() && weight > 0.0) {
                return Err(RingError::BadWeight {
                    node: node as u32,
                    weight: weight.to_string(),
                });
            }
            let count = ((f64::from(vnodes) * weight) as u64).max(1);
            for v in 0..count {
                points.push((position(format!("{node}#{v}").as_bytes()), node as u32));
            }
        }
        points.sort_unstable();
        Ok(Ring {
            points,
            nodes: weights.len(),
        })
    }

    /// A ring of `n` nodes of weight 1.
    pub fn uniform(n: usize, vnodes: u32) -> Result<Ring, RingError> {
        Ring::new(vnodes, &vec![1.0; n])
    }

    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// The index of the first point at or clockwise after `pos` (one binary search).
    fn start(&self, pos: u32) -> usize {
        let i = self.points.partition_point(|&(p, _)| p < pos);
        if i == self.points.len() { 0 } else { i }
    }

    /// The node owning `key` (the first of its preference list).
    pub fn owner(&self, key: &[u8]) -> Option<u32> {
        if self.points.is_empty() {
            return None;
        }
        Some(self.points[self.start(position(key))].1)
    }

    /// The first `count` distinct physical nodes clockwise from `key`'s position.
    pub fn walk(&self, key: &[u8], count: usize) -> Result<Vec<u32>, RingError> {
        if count > self.nodes {
            return Err(RingError::TooFewNodes {
                wanted: count,
                have: self.nodes,
            });
        }
        if count == 0 || self.points.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.walk_from(self.start(position(key)), count))
    }

    fn walk_from(&self, start: usize, count: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(count);
        let mut seen = BTreeSet::new();
        for k in 0..self.points.len() {
            let node = self.points[(start + k) % self.points.len()].1;
            if seen.insert(node) {
                out.push(node);
                if out.len() == count {
                    break;
                }
            }
        }
        out
    }

    /// Every distinct replica set (sorted) of `count` nodes some arc of the ring has, in
    /// order: the key ranges of anti-entropy.
    pub fn replica_sets(&self, count: usize) -> Vec<Vec<u32>> {
        let mut sets = BTreeSet::new();
        for i in 0..self.points.len() {
            let mut set = self.walk_from(i, count.min(self.nodes));
            set.sort_unstable();
            sets.insert(set);
        }
        sets.into_iter().collect()
    }

    /// Each node's share of the 2³² ring (the arcs ending at its points), as fractions.
    pub fn loads(&self) -> Vec<f64> {
        let mut owned = vec![0u64; self.nodes];
        let n = self.points.len();
        for i in 0..n {
            let (pos, node) = self.points[i];
            let prev = self.points[(i + n - 1) % n].0;
            let arc = if n == 1 {
                1u64 << 32
            } else {
                u64::from(pos.wrapping_sub(prev))
            };
            owned[node as usize] += arc;
        }
        owned
            .iter()
            .map(|&a| a as f64 / (1u64 << 32) as f64)
            .collect()
    }

    /// The reference's `load_imbalance`: the largest load over the mean load.
    pub fn load_imbalance(&self) -> f64 {
        let loads = self.loads();
        let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
        let max = loads.iter().copied().fold(0.0, f64::max);
        if mean > 0.0 { max / mean } else { 0.0 }
    }
}

/// MD5 (RFC 1321), for ring positions only (not for security).
pub fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) = (
        0x6745_2301u32,
        0xefcd_ab89u32,
        0x98ba_dcfeu32,
        0x1032_5476u32,
    );
    for chunk in msg.chunks_exact(64) {
        let m: Vec<u32> = chunk
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a0.to_le_bytes());
    out[4..8].copy_from_slice(&b0.to_le_bytes());
    out[8..12].copy_from_slice(&c0.to_le_bytes());
    out[12..].copy_from_slice(&d0.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 16]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_matches_rfc_1321_vectors() {
        assert_eq!(hex(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(md5(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            )),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn position_is_the_low_32_bits_of_the_hex_digest() {
        // int("900150983cd24fb0d6963f7d28e17f72", 16) & 0xFFFFFFFF == 0x28e17f72
        assert_eq!(position(b"abc"), 0x28e1_7f72);
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert_eq!(Ring::new(0, &[1.0]), Err(RingError::NoVnodes));
        assert!(matches!(
            Ring::new(10, &[1.0, 0.0]),
            Err(RingError::BadWeight { node: 1, .. })
        ));
        let ring = Ring::uniform(3, 10).unwrap();
        assert_eq!(
            ring.walk(b"k", 4),
            Err(RingError::TooFewNodes { wanted: 4, have: 3 })
        );
    }
}
