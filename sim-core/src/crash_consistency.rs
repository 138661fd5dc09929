//! The storage crash-consistency checker, for any protocol whose nodes keep their
//! durable state in storage engines or WALs on their simulated disks.
//!
//! **Property** (crash consistency): a disk that only crashes — unsynced sectors kept,
//! torn or lost, unsynced directory operations lost, fsyncs that fail — never damages
//! what was written and synced, so recovery must never *detect* damage. If, in a run
//! whose disks suffered no fault that damages synced data (no bit flip, latent sector
//! error or misdirected write), a node stops because its storage reported corruption,
//! the storage was not crash-safe: a correct engine's checks only ever fire on real
//! damage. (A protocol that fail-stops on corruption masks this from its own safety
//! checkers: the cluster just loses a node.)
//!
//! The checker is generic: the protocol's binding supplies a function that picks a
//! storage failure's message out of an observation (for example Raft's
//! `Stopped { error, .. }`). A message is a report of damage if it contains one of
//! [`DAMAGE_MARKERS`] (the engines' `Corruption` errors read "corruption in …", the
//! WAL's "WAL corruption in …" and "WAL sequence gap …").

use crate::checker::{Checker, Violation};
use crate::process::Process;
use crate::run::RunOutput;

pub const NAME: &str = "storage_crash_consistency";

/// Disk events (`RunStats::disk_events` names) that can damage written and synced
/// data: after any of them a corruption report is expected, not a violation.
pub const DAMAGING_DISK_EVENTS: &[&str] = &[
    "bit_flip",
    "latent_sector_error",
    "latent_sector_read",
    "misdirected_write",
];

/// Words (lower case) in a storage error that mark it as a report of damaged data.
pub const DAMAGE_MARKERS: &[&str] = &["corruption", "sequence gap"];

/// Whether a storage error message reports damaged data.
pub fn reports_damage(message: &str) -> bool {
    let lower = message.to_lowercase();
    DAMAGE_MARKERS.iter().any(|m| lower.contains(m))
}

/// See the module docs.
pub struct CrashConsistencyChecker<P: Process> {
    storage_failure: fn(&P::Obs) -> Option<&str>,
}

impl<P: Process> CrashConsistencyChecker<P> {
    /// `storage_failure` returns the message of an observation that reports a storage
    /// failure which stopped the node, and `None` for every other observation.
    pub fn new(storage_failure: fn(&P::Obs) -> Option<&str>) -> Self {
        CrashConsistencyChecker { storage_failure }
    }
}

impl<P: Process> Checker<P> for CrashConsistencyChecker<P> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(&self, run: &RunOutput<P>) -> Vec<Violation> {
        let damaged = DAMAGING_DISK_EVENTS
            .iter()
            .any(|e| run.stats.disk_events.get(*e).is_some_and(|&n| n > 0));
        if damaged {
            return Vec::new();
        }
        // One violation per node (its first report): later ones are the same failure.
        let mut seen = std::collections::BTreeSet::new();
        let mut violations = Vec::new();
        for o in &run.observations {
            let Some(message) = (self.storage_failure)(&o.obs) else {
                continue;
            };
            if !reports_damage(message) || !seen.insert(o.node) {
                continue;
            }
            violations.push(Violation {
                checker: NAME,
                kind: "corruption_after_crashes".to_string(),
                property: "crash consistency (storage recovers from crashes without damage)",
                message: format!(
                    "{} (incarnation {}) stopped on storage corruption although its disk \
                     only crashed (no bit flip, latent sector error or misdirected write): {message}",
                    o.node, o.incarnation
                ),
                time: Some(o.time),
                nodes: vec![o.node],
                cites: Vec::new(),
            });
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_markers() {
        assert!(reports_damage(
            "corruption in raft/state/btree.db at offset 4096: bad leaf sibling link"
        ));
        assert!(reports_damage(
            "WAL corruption in segment 3 at offset 40: checksum mismatch"
        ));
        assert!(reports_damage(
            "WAL sequence gap in segment 1 at offset 0: expected 4, found 9"
        ));
        assert!(!reports_damage("sync failed: injected fsync failure"));
    }
}
