//! Sometimes-assertions: cheap marks on rare paths, counted per run.
//!
//! A sweep that finds nothing only reassures if the rare paths actually ran: a torn tail
//! truncated on recovery, a merge interrupted by a crash, a leader stepping down. Code
//! marks such a path with [`sometimes!`](crate::sometimes) (engines) or
//! `Ctx::sometimes` (protocols); the simulation kernel collects the counts of one run
//! and reports them with the faults it injected, and `faultline explore` aggregates
//! them over a sweep and names the paths that were never reached.
//!
//! The counts live in a thread-local collector that the kernel opens when a run boots
//! and takes when it finishes. A run is single-threaded, so a collector sees exactly one
//! run's marks, even when a sweep runs seeds on several threads at once. Outside a run
//! (an engine's unit test) a mark costs one thread-local check and is dropped. Counting
//! never feeds back into behaviour: it cannot change a trace.
//!
//! Every point is declared once, with what it means, in a list such as [`POINTS`]; a
//! test checks that every mark in the source names a declared point, so `explore` can
//! tell "never reached" from "does not exist".

use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static COLLECTOR: RefCell<Option<BTreeMap<&'static str, u64>>> = const { RefCell::new(None) };
}

/// A declared coverage point: its name (`<component>.<path>`) and what reaching it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub name: &'static str,
    pub description: &'static str,
}

/// Counts one visit of the point `name` in the current run (nothing outside a run).
pub fn hit(name: &'static str) {
    COLLECTOR.with(|c| {
        if let Some(counts) = c.borrow_mut().as_mut() {
            *counts.entry(name).or_default() += 1;
        }
    });
}

/// Opens a fresh collector on this thread (the kernel calls this when a run boots).
pub fn begin() {
    COLLECTOR.with(|c| *c.borrow_mut() = Some(BTreeMap::new()));
}

/// Closes this thread's collector and returns its counts (empty if none was open).
pub fn take() -> BTreeMap<&'static str, u64> {
    COLLECTOR.with(|c| c.borrow_mut().take().unwrap_or_default())
}

/// Marks a rare path in an engine: `sometimes!("wal.torn_tail_truncated")`. The name
/// must be declared in [`POINTS`].
#[macro_export]
macro_rules! sometimes {
    ($name:literal) => {
        $crate::coverage::hit($name)
    };
}

/// The storage engines' coverage points.
pub const POINTS: &[Point] = &[
    Point {
        name: "wal.torn_tail_truncated",
        description: "WAL recovery found an incomplete record at the end of the last segment and cut it off",
    },
    Point {
        name: "wal.uncommitted_batch_discarded",
        description: "WAL recovery dropped a batch whose commit record never reached the disk",
    },
    Point {
        name: "wal.corruption_detected",
        description: "WAL recovery met a damaged record before the tail and stopped with a corruption error",
    },
    Point {
        name: "wal.segment_rotated",
        description: "the WAL started a new segment",
    },
    Point {
        name: "bitcask.merge_completed",
        description: "a Bitcask merge rewrote the live keys and retired old files",
    },
    Point {
        name: "bitcask.hint_file_used",
        description: "Bitcask rebuilt its key directory from a verified hint file",
    },
    Point {
        name: "bitcask.hint_file_rejected",
        description: "Bitcask ignored a hint file that failed its checksum and scanned the data file",
    },
    Point {
        name: "bitcask.torn_tail_truncated",
        description: "Bitcask recovery cut an incomplete record off the active file",
    },
    Point {
        name: "btree.page_split",
        description: "a B+tree page split",
    },
    Point {
        name: "btree.redo_replayed",
        description: "B+tree recovery replayed page images from its redo log",
    },
    Point {
        name: "btree.checkpoint_write_rewritten",
        description: "a B+tree checkpoint read a page back unlike its image (a misdirected or lost write) and wrote it again",
    },
    Point {
        name: "lsm.memtable_flushed",
        description: "the LSM tree flushed its memtable to a new SSTable",
    },
    Point {
        name: "lsm.compaction",
        description: "the LSM tree merged SSTables",
    },
    Point {
        name: "lsm.tombstone_dropped",
        description: "an LSM compaction that covered every older table dropped a tombstone",
    },
    Point {
        name: "lsm.memtable_replayed",
        description: "LSM recovery rebuilt the memtable from its log",
    },
    Point {
        name: "lsm.orphan_table_removed",
        description: "LSM recovery removed a table file the manifest does not list",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_count_only_inside_a_run() {
        hit("wal.segment_rotated");
        begin();
        hit("wal.segment_rotated");
        crate::sometimes!("wal.segment_rotated");
        hit("lsm.compaction");
        let counts = take();
        assert_eq!(counts.get("wal.segment_rotated"), Some(&2));
        assert_eq!(counts.get("lsm.compaction"), Some(&1));
        hit("lsm.compaction");
        assert!(take().is_empty(), "a closed collector counts nothing");
    }
}
