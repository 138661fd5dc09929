//! The CRDT client workload: counter increments and decrements, register writes, set
//! adds and removes, over a few keys of each chosen key space.
//!
//! Register values are unique in the run (`"<client>.<n>"`), so a converged value names
//! the one write it came from.

use rand::RngExt;
use sim_core::ClientId;
use sim_core::rng::SimRng;

use super::Op;
use super::crdt::Kind;

/// Generates CRDT requests.
#[derive(Debug, Clone)]
pub struct CrdtWorkload {
    kinds: Vec<Kind>,
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
            },
            keys: keys.max(1),
            elements: elements.max(1),
            written: Vec::new(),
        }
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
        let kind = self.kinds[rng.random_range(0..self.kinds.len())];
        let key = format!("{}.k{}", kind.prefix(), rng.random_range(0..self.keys));
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
