//! The CRDT client workload: counter increments and decrements, register writes, set
//! adds and removes, over a few keys of each chosen key space.
//!
//! Register values are unique in the run (`"<client>.<n>"`), so a converged value names
//! the one write it came from.

use rand::RngExt;
use sim_core::ClientId;
use sim_core::rng::SimRng;

use super::Op;
use super::crdt::{Kind, ValueType};

/// Generates CRDT requests.
#[derive(Debug, Clone)]
pub struct CrdtWorkload {
    /// Each key space's prefix and kind.
    kinds: Vec<(String, Kind)>,
    keys: u32,
    elements: u32,
    written: Vec<u64>,
}

impl CrdtWorkload {
    /// `keys` keys per kind (`g.k0`, `pn.k0`, ...), `elements` set elements (`e0`, ...).
    pub fn new(kinds: Vec<Kind>, keys: u32, elements: u32) -> Self {
        CrdtWorkload {
            kinds: if kinds.is_empty() {
                Kind::ALL.to_vec()
            } else {
                kinds
            }
            .into_iter()
            .map(|k| (k.prefix().to_string(), k))
            .collect(),
            keys: keys.max(1),
            elements: elements.max(1),
            written: Vec::new(),
        }
    }

    /// Also writes the custom-merge key space `name` of `kind` (values of its type).
    pub fn with_space(mut self, name: &str, kind: Kind) -> Self {
        self.kinds.push((name.to_string(), kind));
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
    pub fn next(&mut self, client: ClientId, rng: &mut SimRng) -> Op {
        let (prefix, kind) = &self.kinds[rng.random_range(0..self.kinds.len())];
        let kind = *kind;
        let key = format!("{prefix}.k{}", rng.random_range(0..self.keys));
        match kind {
            Kind::GCounter => Op::Increment {
                key,
                by: rng.random_range(1..=5),
            },
            Kind::PnCounter if rng.random_bool(0.4) => Op::Decrement {
                key,
                by: rng.random_range(1..=3),
            },
            Kind::PnCounter => Op::Increment {
                key,
                by: rng.random_range(1..=5),
            },
            Kind::Lww | Kind::MvRegister => Op::Assign {
                key,
                value: self.unique_value(client),
            },
            Kind::Custom(m) => {
                let value = match m.value_type() {
                    ValueType::Int => rng.random_range(-1000i64..1000).to_string(),
                    ValueType::Text => self.unique_value(client),
                    ValueType::Set => {
                        let n = rng.random_range(0..=2);
                        let picked: std::collections::BTreeSet<String> = (0..n)
                            .map(|_| format!("e{}", rng.random_range(0..self.elements)))
                            .collect();
                        picked.into_iter().collect::<Vec<_>>().join(",")
                    }
                };
                Op::Assign { key, value }
            }
            Kind::OrSet => {
                let element = format!("e{}", rng.random_range(0..self.elements));
                if rng.random_bool(0.4) {
                    Op::Remove { key, element }
                } else {
                    Op::Add { key, element }
                }
            }
        }
    }
}
