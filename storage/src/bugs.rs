//! Engine bug flags: each re-introduces, on purpose, one storage defect of the reference
//! repository, so that the crash suite and the protocol sweeps can prove they catch it.
//!
//! Every flag is off by default. An engine reads its flags from its options
//! (`WalOptions::bugs`, `BitcaskOptions::bugs`, `BTreeOptions::bugs`, `LsmOptions::bugs`);
//! an engine that keeps its own WAL (the LSM memtable log, the B+tree's redo log) hands
//! its flags on to it, so a `wal.*` flag reaches every WAL in a node. Flags are named
//! `<engine>.<defect>`, as `faultline list` shows them.

use std::fmt;

/// One engine defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EngineBug {
    /// Replay yields a batch whose commit record is missing.
    WalApplyUncommittedBatch,
    /// The record header's checksum is not checked: only the payload's checksum is, so a
    /// damaged kind, flags or sequence field, or a record of another segment
    /// incarnation, reads as valid.
    WalCrcExcludesHeader,
    /// Recovery silently drops every record after the first bad one.
    WalTruncateAtCorruption,
    /// A new segment's directory entry is never synced.
    WalNoDirSync,
    /// Merge deletes the old files before the merged file is durable under its name.
    BitcaskDeleteBeforeRename,
    /// A hint file is used without checking its checksum.
    BitcaskTrustHint,
    /// A delete is a sentinel value that a put can also write.
    BitcaskInBandTombstone,
    /// Root and free-list metadata are written in place, without the log.
    BtreeMetaUnlogged,
    /// A page's checksum does not cover its page number.
    BtreeCrcExcludesPageNumber,
    /// The live tables are whatever the directory holds.
    LsmNoManifest,
    /// A compaction drops a tombstone although an older table outside it may hold the key.
    LsmTombstoneDroppedEarly,
    /// The memtable's log is truncated before the flushed table is durable.
    LsmWalTruncatedBeforeSstableSynced,
}

/// A flag as listed by `faultline list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineBugInfo {
    pub bug: EngineBug,
    /// `<engine>.<defect>`.
    pub name: &'static str,
    pub description: &'static str,
}

/// Every engine bug flag, in a stable order.
pub static ENGINE_BUGS: &[EngineBugInfo] = &[
    EngineBugInfo {
        bug: EngineBug::WalApplyUncommittedBatch,
        name: "wal.apply_uncommitted_batch",
        description: "replay yields a batch whose commit record is missing (the reference's replay)",
    },
    EngineBugInfo {
        bug: EngineBug::WalCrcExcludesHeader,
        name: "wal.crc_excludes_header",
        description: "the checksum covers the payload only: a damaged kind or sequence number, or a stale record of an earlier segment file, reads as valid",
    },
    EngineBugInfo {
        bug: EngineBug::WalTruncateAtCorruption,
        name: "wal.truncate_at_corruption",
        description: "recovery silently drops every record after the first bad one, acknowledged records included",
    },
    EngineBugInfo {
        bug: EngineBug::WalNoDirSync,
        name: "wal.no_dir_sync",
        description: "a new segment's directory entry is never synced, so a crash can take the whole segment",
    },
    EngineBugInfo {
        bug: EngineBug::BitcaskDeleteBeforeRename,
        name: "bitcask.delete_before_rename",
        description: "merge deletes the old files before the merged file is durable under its final name",
    },
    EngineBugInfo {
        bug: EngineBug::BitcaskTrustHint,
        name: "bitcask.trust_hint",
        description: "a hint file is used without checking its checksum",
    },
    EngineBugInfo {
        bug: EngineBug::BitcaskInBandTombstone,
        name: "bitcask.in_band_tombstone",
        description: "a delete is a sentinel value that a put can also write",
    },
    EngineBugInfo {
        bug: EngineBug::BtreeMetaUnlogged,
        name: "btree.meta_unlogged",
        description: "root and free-list metadata are written in place without the log",
    },
    EngineBugInfo {
        bug: EngineBug::BtreeCrcExcludesPageNumber,
        name: "btree.crc_excludes_page_number",
        description: "a page's checksum does not cover its page number, so a misdirected page write reads as valid",
    },
    EngineBugInfo {
        bug: EngineBug::LsmNoManifest,
        name: "lsm.no_manifest",
        description: "the live tables are whatever the directory holds, not what the MANIFEST says",
    },
    EngineBugInfo {
        bug: EngineBug::LsmTombstoneDroppedEarly,
        name: "lsm.tombstone_dropped_early",
        description: "a compaction drops a tombstone although an older table outside it may still hold the key",
    },
    EngineBugInfo {
        bug: EngineBug::LsmWalTruncatedBeforeSstableSynced,
        name: "lsm.wal_truncated_before_sstable_synced",
        description: "the memtable's log is truncated before the flushed table is durable",
    },
];

impl EngineBug {
    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// The flag's `<engine>.<defect>` name.
    pub fn name(self) -> &'static str {
        ENGINE_BUGS
            .iter()
            .find(|i| i.bug == self)
            .map_or("?", |i| i.name)
    }

    /// The flag called `name`, if any.
    pub fn from_name(name: &str) -> Option<EngineBug> {
        ENGINE_BUGS.iter().find(|i| i.name == name).map(|i| i.bug)
    }
}

impl fmt::Display for EngineBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `name` has the form of an engine flag (`wal.`, `bitcask.`, `btree.`, `lsm.`),
/// known or not: such names are engine flags, never a protocol's.
pub fn is_engine_flag_name(name: &str) -> bool {
    ["wal.", "bitcask.", "btree.", "lsm."]
        .iter()
        .any(|p| name.starts_with(p))
}

/// A set of engine bug flags (empty by default: no defect).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EngineBugs(u32);

/// An engine flag name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine bug flag `{name}` (known: {known})")]
pub struct UnknownEngineBug {
    pub name: String,
    pub known: String,
}

impl EngineBugs {
    /// No flag.
    pub const NONE: EngineBugs = EngineBugs(0);

    pub fn contains(self, bug: EngineBug) -> bool {
        self.0 & bug.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// This set with `bug` added.
    #[must_use]
    pub fn with(self, bug: EngineBug) -> EngineBugs {
        EngineBugs(self.0 | bug.bit())
    }

    /// The set of the named flags; names of another kind are an error.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<EngineBugs, UnknownEngineBug> {
        names.into_iter().try_fold(EngineBugs::NONE, |set, name| {
            EngineBug::from_name(name)
                .map(|bug| set.with(bug))
                .ok_or_else(|| UnknownEngineBug {
                    name: name.to_string(),
                    known: ENGINE_BUGS
                        .iter()
                        .map(|i| i.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        })
    }

    /// The flags in the set, in [`ENGINE_BUGS`] order.
    pub fn iter(self) -> impl Iterator<Item = EngineBug> {
        ENGINE_BUGS
            .iter()
            .map(|i| i.bug)
            .filter(move |b| self.contains(*b))
    }
}

impl From<EngineBug> for EngineBugs {
    fn from(bug: EngineBug) -> EngineBugs {
        EngineBugs::NONE.with(bug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_engine_flags() {
        assert_eq!(ENGINE_BUGS.len(), 12);
        for info in ENGINE_BUGS {
            assert_eq!(EngineBug::from_name(info.name), Some(info.bug));
            assert_eq!(info.bug.name(), info.name);
            assert!(is_engine_flag_name(info.name));
        }
        assert!(!is_engine_flag_name("raft.no_fsync"));
        let set = EngineBugs::from_names(["wal.no_dir_sync", "lsm.no_manifest"]).unwrap();
        assert!(set.contains(EngineBug::WalNoDirSync));
        assert!(set.contains(EngineBug::LsmNoManifest));
        assert!(!set.contains(EngineBug::WalApplyUncommittedBatch));
        assert_eq!(set.iter().count(), 2);
        let err = EngineBugs::from_names(["wal.nope"]).unwrap_err();
        assert_eq!(err.name, "wal.nope");
        assert!(err.known.contains("wal.no_dir_sync"));
        assert!(EngineBugs::default().is_empty());
    }
}
