//! The Dynamo client workload: reads that return siblings and a context, writes that
//! carry the context of the client's last read of the key.
//!
//! Two key spaces:
//! - `r<i>` — registers: a write replaces what the client read with its unique id;
//!   some writes are blind (no context, concurrent with everything) and some are deletes.
//! - `s<i>` — sets (the shopping cart): a write is the union of every sibling the client
//!   read plus one new unique element, so an acknowledged element must survive into the
//!   final converged read (the no-lost-write checker). Sets are never deleted.
//!
//! A client writes a key only after reading it (the read's context, and the versions it
//! returned, travel with the write); after the write completes the client reads again
//! before its next write of that key.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngExt;
use sim_core::rng::SimRng;
use sim_core::workload::Workload;
use sim_core::{ClientId, Completion};

use super::version::{Dot, Vv};
use super::{Node, Op, Reply};

/// A set stops growing at this many elements, so one version stays well inside an
/// engine entry (the B+tree takes about a third of a 4 KiB page).
pub const MAX_SET_ELEMENTS: usize = 100;

/// What a client remembers of its last read of a key.
#[derive(Debug, Clone)]
struct LastRead {
    context: Vv,
    read: Vec<Dot>,
    elements: BTreeSet<String>,
}

/// The workload's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkloadShape {
    pub register_keys: u32,
    pub set_keys: u32,
    /// Share of register writes that are deletes.
    pub delete_fraction: f64,
    /// Share of register writes that are blind (no context).
    pub blind_fraction: f64,
}

impl Default for WorkloadShape {
    fn default() -> Self {
        WorkloadShape {
            register_keys: 2,
            set_keys: 2,
            delete_fraction: 0.2,
            blind_fraction: 0.1,
        }
    }
}

/// Generates requests and learns contexts from completions.
#[derive(Debug, Clone)]
pub struct DynamoWorkload {
    shape: WorkloadShape,
    written: BTreeMap<u32, u64>,
    last_read: BTreeMap<(u32, String), LastRead>,
}

impl DynamoWorkload {
    pub fn new(shape: WorkloadShape) -> Self {
        DynamoWorkload {
            shape,
            written: BTreeMap::new(),
            last_read: BTreeMap::new(),
        }
    }

    fn unique(&mut self, client: ClientId) -> String {
        let n = self.written.entry(client.0).or_insert(0);
        *n += 1;
        format!("{}.{}", client.0, n)
    }
}

impl Workload<Node> for DynamoWorkload {
    fn next_request(&mut self, client: ClientId, rng: &mut SimRng) -> Op {
        let total = self.shape.register_keys + self.shape.set_keys;
        let pick = rng.random_range(0..total.max(1));
        let key = if pick < self.shape.register_keys {
            format!("r{pick}")
        } else {
            format!("s{}", pick - self.shape.register_keys)
        };
        let is_set = key.starts_with('s');
        let Some(last) = self.last_read.get(&(client.0, key.clone())).cloned() else {
            // Registers may also be written blind.
            if !is_set && rng.random_bool(self.shape.blind_fraction) {
                let id = self.unique(client);
                return Op::Put {
                    key,
                    value: vec![id.clone()],
                    id,
                    context: Vv::default(),
                    read: Vec::new(),
                };
            }
            return Op::Get { key };
        };
        if is_set && last.elements.len() >= MAX_SET_ELEMENTS {
            // The cart is full: keep reading it (bounds a version's size on disk).
            return Op::Get { key };
        }
        let id = self.unique(client);
        if is_set {
            let mut elements = last.elements;
            elements.insert(id.clone());
            Op::Put {
                key,
                id,
                value: elements.into_iter().collect(),
                context: last.context,
                read: last.read,
            }
        } else if rng.random_bool(self.shape.delete_fraction) {
            Op::Delete {
                key,
                id,
                context: last.context,
                read: last.read,
            }
        } else {
            Op::Put {
                key,
                value: vec![id.clone()],
                id,
                context: last.context,
                read: last.read,
            }
        }
    }

    fn on_completion(&mut self, client: ClientId, request: &Op, completion: &Completion<Reply>) {
        let slot = (client.0, request.key().to_string());
        match (request, completion) {
            (Op::Get { .. }, Completion::Ok(Reply::Read { siblings, context })) => {
                let elements = siblings
                    .iter()
                    .filter_map(|s| s.value.as_ref())
                    .flatten()
                    .cloned()
                    .collect();
                self.last_read.insert(
                    slot,
                    LastRead {
                        context: context.clone(),
                        read: siblings.iter().map(|s| s.dot).collect(),
                        elements,
                    },
                );
            }
            // A write (whatever its outcome) spends the context: read again first.
            (Op::Put { .. } | Op::Delete { .. }, _) => {
                self.last_read.remove(&slot);
            }
            _ => {}
        }
    }
}
