//! The merging iterator: a streaming k-way merge of sorted sources of internal entries
//! (memtables, tables, levels) that yields, for each key, only its newest version (the
//! highest sequence number; on a tie, the source listed first). Sources are pulled one
//! entry at a time: nothing is materialised beyond one pending entry per source.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::kv::EngineError;
use crate::lsm::memtable::InternalEntry;

/// A sorted source of entries (strictly increasing keys).
pub type Source<'a> = Box<dyn Iterator<Item = Result<InternalEntry, EngineError>> + 'a>;

struct Head {
    entry: InternalEntry,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    /// The heap is a max-heap: the greatest head is the smallest key, then the highest
    /// sequence number, then the lowest source index.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .entry
            .key
            .cmp(&self.entry.key)
            .then(self.entry.seq.cmp(&other.entry.seq))
            .then(other.source.cmp(&self.source))
    }
}

/// Merges sources newest-version-wins. Tombstones are yielded (callers decide).
pub struct MergeIter<'a> {
    sources: Vec<Source<'a>>,
    heap: BinaryHeap<Head>,
    /// An error met while advancing past the last entry returned: returned next.
    pending_error: Option<EngineError>,
    started: bool,
    done: bool,
}

impl<'a> MergeIter<'a> {
    pub fn new(sources: Vec<Source<'a>>) -> MergeIter<'a> {
        MergeIter {
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            pending_error: None,
            started: false,
            done: false,
        }
    }

    /// Pulls the next entry of `source` into the heap.
    fn advance(&mut self, source: usize) -> Result<(), EngineError> {
        if let Some(item) = self.sources[source].next() {
            let entry = item?;
            self.heap.push(Head { entry, source });
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<InternalEntry>, EngineError> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.advance(i)?;
            }
        }
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let Some(top) = self.heap.pop() else {
            return Ok(None);
        };
        // Every source's next key is above `top`'s, so `top` is right even if advancing
        // fails: the error is returned by the next call.
        if let Err(e) = self.advance(top.source) {
            self.pending_error = Some(e);
            return Ok(Some(top.entry));
        }
        // Older versions of the same key, in other sources.
        while self
            .heap
            .peek()
            .is_some_and(|h| h.entry.key == top.entry.key)
        {
            if let Some(older) = self.heap.pop() {
                debug_assert!(older.entry.seq <= top.entry.seq);
                if let Err(e) = self.advance(older.source) {
                    self.pending_error = Some(e);
                    break;
                }
            }
        }
        Ok(Some(top.entry))
    }
}

impl Iterator for MergeIter<'_> {
    type Item = Result<InternalEntry, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::lsm::memtable::Value;

    /// Sources of (key, value-or-tombstone); source `i` is newer than source `i + 1`
    /// (higher sequence numbers), as in a read path.
    fn sources_strategy() -> impl Strategy<Value = Vec<BTreeMap<u8, Option<u8>>>> {
        proptest::collection::vec(
            proptest::collection::btree_map(any::<u8>(), proptest::option::of(any::<u8>()), 0..40),
            0..6,
        )
    }

    proptest! {
        /// The merge equals applying the sources oldest first to a `BTreeMap`.
        #[test]
        fn merge_matches_a_btreemap(sources in sources_strategy()) {
            let n = sources.len() as u64;
            let mut model: BTreeMap<u8, Option<u8>> = BTreeMap::new();
            for s in sources.iter().rev() {
                for (k, v) in s {
                    model.insert(*k, *v);
                }
            }
            let boxed: Vec<Source<'_>> = sources
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let seq_base = (n - i as u64) * 1000;
                    let items: Vec<_> = s
                        .iter()
                        .map(|(k, v)| {
                            Ok(InternalEntry {
                                key: vec![*k],
                                seq: seq_base + u64::from(*k),
                                value: match v {
                                    Some(v) => Value::Put(vec![*v]),
                                    None => Value::Tombstone,
                                },
                            })
                        })
                        .collect();
                    Box::new(items.into_iter()) as Source<'_>
                })
                .collect();
            let merged: Vec<InternalEntry> = MergeIter::new(boxed).collect::<Result<_, _>>().unwrap();
            let got: Vec<(u8, Option<u8>)> = merged
                .into_iter()
                .map(|e| (e.key[0], e.value.into_option().map(|v| v[0])))
                .collect();
            let want: Vec<(u8, Option<u8>)> = model.into_iter().collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn an_error_ends_the_merge() {
        let ok = |k: u8| {
            Ok(InternalEntry {
                key: vec![k],
                seq: 1,
                value: Value::Put(vec![]),
            })
        };
        let a: Source<'_> = Box::new(vec![ok(1), Err(EngineError::Other("x".into()))].into_iter());
        let b: Source<'_> = Box::new(vec![ok(2)].into_iter());
        let got: Vec<_> = MergeIter::new(vec![a, b]).collect();
        assert_eq!(got.len(), 2);
        assert!(got[1].is_err());
    }
}
