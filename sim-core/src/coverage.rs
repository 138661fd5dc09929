//! Coverage of a run: the faults the kernel injected and the rare paths the protocol and
//! its engines reached.
//!
//! Two sources feed one map of counts per point name:
//! - **sometimes-marks** (`Ctx::sometimes` in protocols, `storage::sometimes!` in
//!   engines), collected per run by the thread-local collector of [`storage::coverage`];
//! - **injected faults**, counted by the kernel: `fault.<kind>` (crash, pause,
//!   partition, clog, crash inside an operation, its crash point reached), `net.<...>`
//!   (messages lost, cut by a partition, dropped at a crashed or paused receiver,
//!   duplicated) and `disk.<...>` (every injected disk fault, and torn or lost sectors
//!   and lost directory operations at a crash).
//!
//! A point is declared once ([`KERNEL_POINTS`], [`storage::coverage::POINTS`], and each
//! protocol's list); `faultline explore` reports the declared points a sweep never
//! reached, and fails with the kind `coverage` when a scenario's `expect_reached` names
//! one of them.

use std::collections::BTreeMap;

pub use storage::coverage::{Point, hit};

use crate::run::RunStats;

const fn point(name: &'static str, description: &'static str) -> Point {
    Point { name, description }
}

/// The faults the kernel can inject, as coverage points.
pub const KERNEL_POINTS: &[Point] = &[
    point(
        "fault.crash",
        "a node crashed (scheduled or by the nemesis)",
    ),
    point("fault.pause", "a node was paused"),
    point("fault.partition", "the network was partitioned"),
    point("fault.clog", "a link was clogged (delayed, not cut)"),
    point(
        "fault.crash_inside_operation",
        "a crash was armed to strike inside a handler, after some disk mutations",
    ),
    point(
        "fault.crash_point_reached",
        "an armed crash struck in the middle of a handler",
    ),
    point("net.loss", "a message was lost by a lossy link"),
    point("net.partitioned", "a message was cut by a partition"),
    point("net.receiver_crashed", "a message reached a crashed node"),
    point("net.receiver_paused", "a message reached a paused node"),
    point("net.duplicate", "the network duplicated a message"),
    point(
        "disk.fsync_failed",
        "a sync failed and dropped dirty sectors",
    ),
    point("disk.bit_flip", "a read returned a flipped bit"),
    point("disk.latent_sector_error", "a sector became unreadable"),
    point(
        "disk.latent_sector_read",
        "a read touched an unreadable sector",
    ),
    point(
        "disk.misdirected_write",
        "a write landed at the wrong offset",
    ),
    point("disk.no_space", "a write failed for lack of space"),
    point("disk.sectors_torn", "a crash tore an unsynced sector"),
    point("disk.sectors_lost", "a crash lost an unsynced sector"),
    point(
        "disk.crash_dir_op_lost",
        "a crash lost an unsynced directory operation (create, rename, remove)",
    ),
];

/// The kernel's counts of a run, from its statistics, by point name (zero counts left
/// out). Crash outcomes on the disk (`disk.sectors_torn`, ...) and the crash points
/// are counted as marks while the run goes.
pub fn kernel_counts(stats: &RunStats) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    let mut add = |name: &'static str, n: u64| {
        if n > 0 {
            *counts.entry(name).or_default() += n;
        }
    };
    for (kind, n) in &stats.faults {
        add(
            match kind {
                crate::fault::FaultKind::Crash => "fault.crash",
                crate::fault::FaultKind::Pause => "fault.pause",
                crate::fault::FaultKind::Partition => "fault.partition",
                crate::fault::FaultKind::Clog => "fault.clog",
            },
            *n,
        );
    }
    for (reason, n) in &stats.messages_dropped {
        use crate::network::DropReason;
        add(
            match reason {
                DropReason::Loss => "net.loss",
                DropReason::Partitioned => "net.partitioned",
                DropReason::ReceiverCrashed => "net.receiver_crashed",
                DropReason::ReceiverPaused => "net.receiver_paused",
                // A protocol addressing a node that does not exist is a protocol
                // defect, not a fault; it is in the statistics.
                DropReason::NoSuchNode => continue,
            },
            *n,
        );
    }
    add("net.duplicate", stats.messages_duplicated);
    for (name, n) in &stats.disk_events {
        let point = match name.as_str() {
            "fsync_failed" => "disk.fsync_failed",
            "bit_flip" => "disk.bit_flip",
            "latent_sector_error" => "disk.latent_sector_error",
            "latent_sector_read" => "disk.latent_sector_read",
            "misdirected_write" => "disk.misdirected_write",
            "no_space" => "disk.no_space",
            // Crash outcomes are counted per sector and directory operation as marks.
            _ => continue,
        };
        add(point, *n);
    }
    counts
}

/// Opens this thread's collector for a run that is booting.
pub(crate) fn begin_run() {
    storage::coverage::begin();
}

/// Closes the run's collector: its marks together with the kernel's counts.
pub(crate) fn end_run(stats: &RunStats) -> BTreeMap<&'static str, u64> {
    let mut counts = storage::coverage::take();
    for (name, n) in kernel_counts(stats) {
        *counts.entry(name).or_default() += n;
    }
    counts
}

/// The points [`kernel_counts`] derives from the run's statistics (not marked in the
/// source).
pub fn kernel_counts_names() -> &'static [&'static str] {
    &[
        "fault.crash",
        "fault.pause",
        "fault.partition",
        "fault.clog",
        "net.loss",
        "net.partitioned",
        "net.receiver_crashed",
        "net.receiver_paused",
        "net.duplicate",
        "disk.fsync_failed",
        "disk.bit_flip",
        "disk.latent_sector_error",
        "disk.latent_sector_read",
        "disk.misdirected_write",
        "disk.no_space",
    ]
}

/// The declared point named `name`, among `lists`.
pub fn find<'p>(lists: &[&'p [Point]], name: &str) -> Option<&'p Point> {
    lists.iter().flat_map(|l| l.iter()).find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_names_are_unique_and_well_formed() {
        let mut names: Vec<&str> = KERNEL_POINTS
            .iter()
            .chain(storage::coverage::POINTS)
            .map(|p| p.name)
            .collect();
        for name in &names {
            assert!(
                name.split_once('.').is_some_and(|(a, b)| !a.is_empty()
                    && !b.is_empty()
                    && name.chars().all(|c| c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || c == '_'
                        || c == '.')),
                "{name}"
            );
        }
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "duplicate point names");
    }
}
