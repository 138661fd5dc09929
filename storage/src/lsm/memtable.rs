//! The memtable: the newest version of each recently written key, in key order, and the
//! internal entry type shared by the memtable, SSTables and the merging iterator.

use std::collections::BTreeMap;
use std::ops::Bound;

/// What a key maps to at one sequence number: a value (possibly empty) or an explicit
/// tombstone. Never an in-band sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Put(Vec<u8>),
    Tombstone,
}

impl Value {
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Value::Tombstone)
    }

    /// The value a read returns (`None` for a tombstone).
    pub fn into_option(self) -> Option<Vec<u8>> {
        match self {
            Value::Put(v) => Some(v),
            Value::Tombstone => None,
        }
    }
}

/// A versioned entry: a key, the sequence number of the write, and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalEntry {
    pub key: Vec<u8>,
    pub seq: u64,
    pub value: Value,
}

/// Per-entry bookkeeping counted against the memtable budget besides key and value.
const ENTRY_OVERHEAD_BYTES: usize = 32;

/// The newest version of each key written since the last flush.
#[derive(Debug, Default)]
pub struct Memtable {
    map: BTreeMap<Vec<u8>, (u64, Value)>,
    approx_bytes: usize,
    max_seq: u64,
}

impl Memtable {
    pub fn new() -> Memtable {
        Memtable::default()
    }

    /// Records a write; `seq` must exceed every sequence number already in the table.
    pub fn insert(&mut self, key: &[u8], seq: u64, value: Value) {
        debug_assert!(seq > self.max_seq, "sequence numbers must increase");
        self.max_seq = self.max_seq.max(seq);
        let add = key.len() + ENTRY_OVERHEAD_BYTES + value_len(&value);
        match self.map.get_mut(key) {
            Some(slot) => {
                self.approx_bytes = self.approx_bytes - value_len(&slot.1) + value_len(&value);
                *slot = (seq, value);
            }
            None => {
                self.approx_bytes += add;
                self.map.insert(key.to_vec(), (seq, value));
            }
        }
    }

    /// The newest version of `key`, if this table has one.
    pub fn get(&self, key: &[u8]) -> Option<(u64, &Value)> {
        self.map.get(key).map(|(seq, v)| (*seq, v))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// An estimate of the memory held (keys, values, per-entry overhead).
    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    /// The entries with keys in `(start, end)`, in key order, lazily (the bounds must
    /// not cross: see `kv::range_is_empty`).
    pub fn range<'a>(
        &'a self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> impl Iterator<Item = InternalEntry> + 'a {
        self.map
            .range::<[u8], _>((start, end))
            .map(|(k, (seq, v))| InternalEntry {
                key: k.clone(),
                seq: *seq,
                value: v.clone(),
            })
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = InternalEntry> + '_ {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::Put(v) => v.len(),
        Value::Tombstone => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_wins_and_empty_value_is_not_a_tombstone() {
        let mut m = Memtable::new();
        m.insert(b"a", 1, Value::Put(b"x".to_vec()));
        m.insert(b"a", 2, Value::Put(Vec::new()));
        m.insert(b"b", 3, Value::Tombstone);
        assert_eq!(m.get(b"a"), Some((2, &Value::Put(Vec::new()))));
        assert_eq!(m.get(b"b"), Some((3, &Value::Tombstone)));
        assert_eq!(m.len(), 2);
        let keys: Vec<Vec<u8>> = m.iter().map(|e| e.key).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
    }
}
