//! The key-value client workload: which keys, and which mix of get, put, compare-and-set
//! and append.
//!
//! Every value written is unique in the run (`"<client>.<n>"`), which makes a history's
//! reads unambiguous and the linearizability search much faster: a read names the one
//! write it saw.

use rand::RngExt;

use crate::ids::ClientId;
use crate::linearizability::model::KvOp;
use crate::rng::SimRng;

/// Relative weights of the operation kinds (they need not sum to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvMix {
    pub get: f64,
    pub put: f64,
    pub cas: f64,
    pub append: f64,
}

impl Default for KvMix {
    fn default() -> Self {
        KvMix {
            get: 0.4,
            put: 0.3,
            cas: 0.2,
            append: 0.1,
        }
    }
}

impl KvMix {
    pub fn validate(&self) -> Result<(), String> {
        let weights = [self.get, self.put, self.cas, self.append];
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err("operation weights must be non-negative numbers".into());
        }
        if weights.iter().sum::<f64>() <= 0.0 {
            return Err("at least one operation weight must be positive".into());
        }
        Ok(())
    }
}

/// Generates key-value requests.
#[derive(Debug, Clone)]
pub struct KvWorkload {
    keys: u32,
    mix: KvMix,
    /// Per client, how many values it has written (for unique values).
    written: Vec<u64>,
    /// Literal values a put may write instead of a unique one (see
    /// [`KvWorkload::with_literal_values`]), and the chance that it does.
    literals: Vec<String>,
    literal_rate: f64,
}

impl KvWorkload {
    /// `keys` keys named `k0 .. k{keys-1}`.
    pub fn new(keys: u32, mix: KvMix) -> Self {
        KvWorkload {
            keys: keys.max(1),
            mix,
            written: Vec::new(),
            literals: Vec::new(),
            literal_rate: 0.0,
        }
    }

    /// Values users really write besides the generated ones — an empty string, a word
    /// that some layer might treat specially: each put writes, with probability `rate`,
    /// one of `values` (picked uniformly) instead of a unique value. Such values are not
    /// unique, so reads of them are ambiguous and the linearizability search is slower:
    /// keep `rate` small. With no values (the default) nothing is drawn, so the
    /// requests are exactly those of a workload without literals.
    #[must_use]
    pub fn with_literal_values(mut self, values: Vec<String>, rate: f64) -> Self {
        self.literals = values;
        self.literal_rate = if rate.is_finite() {
            rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    fn unique_value(&mut self, client: ClientId) -> String {
        let index = client.0 as usize;
        if self.written.len() <= index {
            self.written.resize(index + 1, 0);
        }
        self.written[index] += 1;
        format!("{}.{}", client.0, self.written[index])
    }

    /// The next request of `client`.
    pub fn next(&mut self, client: ClientId, rng: &mut SimRng) -> KvOp {
        let key = format!("k{}", rng.random_range(0..self.keys));
        let m = self.mix;
        let total = m.get + m.put + m.cas + m.append;
        let pick = rng.random_range(0.0..total);
        if pick < m.get {
            KvOp::get(key)
        } else if pick < m.get + m.put {
            let value = if !self.literals.is_empty() && rng.random_bool(self.literal_rate) {
                self.literals[rng.random_range(0..self.literals.len())].clone()
            } else {
                self.unique_value(client)
            };
            KvOp::put(key, value)
        } else if pick < m.get + m.put + m.cas {
            // Expect one of this client's recent values, or absence: some succeed,
            // some fail, both are informative.
            let index = client.0 as usize;
            let mine = self.written.get(index).copied().unwrap_or(0);
            let expected = if mine > 0 && rng.random_bool(0.7) {
                let back = rng.random_range(0..mine.min(3));
                Some(format!("{}.{}", client.0, mine - back))
            } else {
                None
            };
            let new = self.unique_value(client);
            KvOp::cas(key, expected.as_deref(), new)
        } else {
            let value = self.unique_value(client);
            KvOp::append(key, format!("[{value}]"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::fork;

    #[test]
    fn follows_the_mix_and_writes_unique_values() {
        let mut w = KvWorkload::new(3, KvMix::default());
        let mut rng = fork(1, "clients", 0);
        let mut counts = [0usize; 4];
        let mut values = std::collections::BTreeSet::new();
        for i in 0..4_000u32 {
            let op = w.next(ClientId(i % 4), &mut rng);
            assert!(["k0", "k1", "k2"].contains(&op.key()));
            let slot = match &op {
                KvOp::Get { .. } => 0,
                KvOp::Put { value, .. } => {
                    assert!(values.insert(value.clone()), "unique {value}");
                    1
                }
                KvOp::Cas { new, .. } => {
                    assert!(values.insert(new.clone()), "unique {new}");
                    2
                }
                KvOp::Append { value, .. } => {
                    assert!(values.insert(value.clone()), "unique {value}");
                    3
                }
            };
            counts[slot] += 1;
        }
        for (count, expected) in counts.iter().zip([1_600, 1_200, 800, 400]) {
            assert!(
                (expected * 8 / 10..expected * 12 / 10).contains(count),
                "{counts:?}"
            );
        }
    }

    #[test]
    fn literal_values_replace_some_puts_and_nothing_else() {
        let literals = vec![String::new(), "tombstone".to_string()];
        let mut plain = KvWorkload::new(3, KvMix::default());
        let mut with =
            KvWorkload::new(3, KvMix::default()).with_literal_values(literals.clone(), 0.25);
        let mut none = KvWorkload::new(3, KvMix::default()).with_literal_values(Vec::new(), 0.25);
        let (mut r1, mut r2) = (fork(7, "clients", 0), fork(7, "clients", 0));
        let mut r3 = fork(7, "clients", 0);
        let mut seen = std::collections::BTreeMap::new();
        let mut puts = 0;
        for i in 0..4_000u32 {
            let client = ClientId(i % 4);
            // Without literals the requests are exactly the plain workload's.
            assert_eq!(none.next(client, &mut r3), plain.next(client, &mut r1));
            if let KvOp::Put { value, .. } = with.next(client, &mut r2) {
                puts += 1;
                if literals.contains(&value) {
                    *seen.entry(value).or_insert(0usize) += 1;
                }
            }
        }
        let total: usize = seen.values().sum();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            (puts * 20 / 100..puts * 30 / 100).contains(&total),
            "{total} of {puts}"
        );
    }

    #[test]
    fn mix_validation() {
        assert!(KvMix::default().validate().is_ok());
        let none = KvMix {
            get: 0.0,
            put: 0.0,
            cas: 0.0,
            append: 0.0,
        };
        assert!(none.validate().is_err());
        assert!(KvMix { get: -1.0, ..none }.validate().is_err());
    }
}
