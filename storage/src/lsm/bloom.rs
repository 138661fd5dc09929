//! A standard Bloom filter, built once per SSTable in its write pass (tables are never
//! modified, so no counting filter is needed).
//!
//! Sizing: `m = max(64, n × bits_per_key)` bits rounded up to whole bytes, and
//! `k = round(bits_per_key × ln 2)` hash functions (clamped to `1..=30`). Positions come
//! from Kirsch–Mitzenmacher double hashing, `(h1 + i·h2) mod m`, over two 64-bit hashes
//! derived from MurmurHash64A of the key (deterministic, unseeded by any RNG). An empty
//! key set still gets a valid (all-zero) filter, so `m` is never 0.
//!
//! Encoding: `k u8, m u64 (bits), the bit array (m / 8 bytes)`; the SSTable wraps it in a
//! checksummed block.

use crate::codec::u64_at;

/// The smallest filter, in bits.
const MIN_BITS: u64 = 64;
/// The most hash functions used.
pub const MAX_HASHES: u32 = 30;
const SEED: u64 = 0x5EED_B10F_F11E_0001;

/// MurmurHash64A (Austin Appleby), the 64-bit hash of `data` with `seed`.
pub fn murmur64a(data: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xC6A4_A793_5BD1_E995;
    const R: u32 = 47;
    let mut h = seed ^ (data.len() as u64).wrapping_mul(M);
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut k = u64_at(chunk, 0);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut t = 0u64;
        for (i, &b) in tail.iter().enumerate() {
            t |= u64::from(b) << (8 * i);
        }
        h ^= t;
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The key's filter hash (what a table writer collects per key).
pub fn key_hash(key: &[u8]) -> u64 {
    murmur64a(key, SEED)
}

/// The second hash of double hashing, derived from the first (odd, so it is never 0).
fn second_hash(h1: u64) -> u64 {
    let mut z = h1 ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

/// The number of hash functions for `bits_per_key`: `round(bits_per_key × ln 2)`.
pub fn hash_count(bits_per_key: u32) -> u32 {
    ((f64::from(bits_per_key) * std::f64::consts::LN_2).round() as u32).clamp(1, MAX_HASHES)
}

/// The expected false-positive rate of a filter of `bits` bits and `k` hashes holding
/// `n` keys: `(1 − e^(−kn/m))^k`.
pub fn expected_fp_rate(bits: u64, k: u32, n: u64) -> f64 {
    if bits == 0 {
        return 1.0;
    }
    let fill = 1.0 - (-(f64::from(k) * n as f64) / bits as f64).exp();
    fill.powi(k as i32)
}

/// A Bloom filter: no false negatives, false positives at about the configured rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BloomFilter {
    k: u32,
    bits: Vec<u8>,
}

impl BloomFilter {
    /// A filter over the keys with the given [`key_hash`] values.
    pub fn from_hashes(hashes: &[u64], bits_per_key: u32) -> BloomFilter {
        let want = (hashes.len() as u64)
            .saturating_mul(u64::from(bits_per_key))
            .max(MIN_BITS);
        let bytes = want.div_ceil(8) as usize;
        let mut filter = BloomFilter {
            k: hash_count(bits_per_key),
            bits: vec![0; bytes],
        };
        for &h in hashes {
            filter.insert_hash(h);
        }
        filter
    }

    /// A filter over `keys`.
    pub fn build<K: AsRef<[u8]>>(keys: &[K], bits_per_key: u32) -> BloomFilter {
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k.as_ref())).collect();
        BloomFilter::from_hashes(&hashes, bits_per_key)
    }

    /// The number of bits.
    pub fn bit_len(&self) -> u64 {
        self.bits.len() as u64 * 8
    }

    /// The number of hash functions.
    pub fn hash_count(&self) -> u32 {
        self.k
    }

    fn positions(&self, h1: u64) -> impl Iterator<Item = u64> + '_ {
        let m = self.bit_len();
        let h2 = second_hash(h1);
        (0..u64::from(self.k)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
    }

    fn insert_hash(&mut self, h1: u64) {
        let positions: Vec<u64> = self.positions(h1).collect();
        for p in positions {
            self.bits[(p / 8) as usize] |= 1 << (p % 8);
        }
    }

    /// Whether `key` may be in the set (`false`: it certainly is not).
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(key_hash(key))
    }

    /// [`BloomFilter::may_contain`] for a precomputed [`key_hash`].
    pub fn may_contain_hash(&self, h1: u64) -> bool {
        self.positions(h1)
            .all(|p| self.bits[(p / 8) as usize] & (1 << (p % 8)) != 0)
    }

    /// `k u8, m u64, bits`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.bits.len());
        out.push(self.k as u8);
        out.extend_from_slice(&self.bit_len().to_le_bytes());
        out.extend_from_slice(&self.bits);
        out
    }

    /// Decodes [`BloomFilter::encode`]'s output, checking every field.
    pub fn decode(bytes: &[u8]) -> Result<BloomFilter, String> {
        if bytes.len() < 9 {
            return Err(format!(
                "bloom filter of {} bytes is too short",
                bytes.len()
            ));
        }
        let k = u32::from(bytes[0]);
        if k == 0 || k > MAX_HASHES {
            return Err(format!("bloom filter with {k} hash functions"));
        }
        let m = u64_at(bytes, 1);
        let body = &bytes[9..];
        if m < MIN_BITS || !m.is_multiple_of(8) || m / 8 != body.len() as u64 {
            return Err(format!(
                "bloom filter of {m} bits does not match its {} bytes",
                body.len()
            ));
        }
        Ok(BloomFilter {
            k,
            bits: body.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_round_trip() {
        let keys: Vec<Vec<u8>> = (0..2000u32).map(|i| format!("k{i}").into_bytes()).collect();
        let f = BloomFilter::build(&keys, 10);
        assert_eq!(f.hash_count(), 7);
        assert!(keys.iter().all(|k| f.may_contain(k)));
        let back = BloomFilter::decode(&f.encode()).unwrap();
        assert_eq!(back, f);
    }

    /// Reference defect: m = 0 raised `ZeroDivisionError`. An empty set gets a valid
    /// minimum-size filter that contains nothing.
    #[test]
    fn empty_filter_is_valid() {
        let f = BloomFilter::build::<&[u8]>(&[], 10);
        assert_eq!(f.bit_len(), MIN_BITS);
        assert!(!f.may_contain(b"anything"));
        assert!(BloomFilter::decode(&f.encode()).is_ok());
    }

    #[test]
    fn decode_rejects_bad_fields() {
        let f = BloomFilter::build(&[b"a"], 10);
        let mut e = f.encode();
        e[0] = 0;
        assert!(BloomFilter::decode(&e).is_err());
        let mut e = f.encode();
        e[1] ^= 8;
        assert!(BloomFilter::decode(&e).is_err());
        assert!(BloomFilter::decode(&f.encode()[..8]).is_err());
    }

    #[test]
    fn murmur_is_stable() {
        // Pinned: the filter is part of the on-disk format.
        assert_eq!(murmur64a(b"", 0), 0);
        assert_ne!(murmur64a(b"a", 0), murmur64a(b"b", 0));
        assert_eq!(key_hash(b"key"), key_hash(b"key"));
    }
}
